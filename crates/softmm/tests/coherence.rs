//! The coherence checker for secondary MMUs: each of the three example
//! secondaries — a shadow TLB (`examples/shadow_tlb.rs`), a device mirror
//! (`examples/device_mirror.rs`) and an XPMEM-like importer
//! (`examples/xpmem_exporter.rs`) — reads through its cached translations
//! on real threads while the primary unmaps, remaps, write-protects,
//! forks (sharing PTE tables) and copies on write, unshares tables, lets a
//! child write and exit, swaps out, migrates, drops pages and finally
//! exits. Each page holds a stamp (its address and a generation). A read
//! through the secondary returns either a miss or the page's own stamp with
//! a generation at least the one the primary had finished publishing (its
//! `invalidate_range_end` returned) before the read began: never another
//! page's frame, never a frame the primary let go. Once the secondary heard
//! `release`, every read misses.
//!
//! Every subscription is observed: each `invalidate_range_start` that the
//! subscriber accepted must get exactly one `invalidate_range_end` with the
//! same range and event, and no `end` may come without its `start` (brackets
//! of different ranges may interleave, so they are matched as a multiset).

// Callbacks are what these tests check; a build without notifiers has none.
#![cfg(not(softmm_no_notifiers))]

#[path = "../examples/shadow_tlb.rs"]
mod shadow_tlb;

#[path = "../examples/device_mirror.rs"]
mod device_mirror;

#[path = "../examples/xpmem_exporter.rs"]
mod xpmem_exporter;

use device_mirror::DeviceMirror;
use shadow_tlb::{ShadowRead, ShadowTlb};
use softmm::notifier::{Again, Event, MmuNotifier, Range};
use softmm::reclaim::device::MemSwap;
use softmm::{Config, ForkPolicy, Machine, MapKind, Mm, Placement, Prot, SwapConfig};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use xpmem_exporter::{Attachment, Export};

const BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
const PAGES: u64 = 32;
const TABLE_SPAN: u64 = 2 << 20;
/// Where the XPMEM importer attaches the exported range.
const WINDOW: u64 = 0x7000_0000;
const ROUNDS: u32 = 4000;

/// The stamp of page `p` at generation `g`: page number in the high half.
fn stamp(p: u64, g: u32) -> u32 {
    ((p as u32) << 20) | (g & 0xfffff)
}

/// What a child writes: the stamp of a page half the range away, which a
/// parent's secondary must never read at `p`.
fn foreign(p: u64) -> u32 {
    stamp((p + PAGES / 2) % PAGES, 0xfffff)
}

fn read_u32(mm: &Mm, va: u64) -> u32 {
    let mut b = [0u8; 4];
    mm.read(va, &mut b).expect("read");
    u32::from_ne_bytes(b)
}

/// A secondary MMU as the checker drives it.
trait Secondary: Send + Sync {
    /// A read through a cached translation of the primary's `va`; `None`
    /// is a miss.
    fn read(&self, machine: &Machine, va: u64) -> Option<u32>;
    /// The secondary's own fault path after a miss.
    fn fill(&self, mm: &Mm, va: u64);
}

impl Secondary for ShadowTlb {
    fn read(&self, machine: &Machine, va: u64) -> Option<u32> {
        match self.read_u32(machine, va) {
            ShadowRead::Hit(v) => Some(v),
            ShadowRead::Miss => None,
        }
    }
    fn fill(&self, mm: &Mm, va: u64) {
        ShadowTlb::fill(self, mm, va);
    }
}

impl Secondary for DeviceMirror {
    fn read(&self, machine: &Machine, va: u64) -> Option<u32> {
        self.read_u32(machine, va)
    }
    fn fill(&self, mm: &Mm, va: u64) {
        self.fault(mm, va);
    }
}

/// An importer's attachment of the exported `[BASE, BASE + PAGES)` at
/// `WINDOW`: the primary's `va` is seen at `WINDOW + (va - BASE)`.
impl Secondary for Attachment {
    fn read(&self, machine: &Machine, va: u64) -> Option<u32> {
        self.read_u32(machine, WINDOW + (va - BASE))
    }
    fn fill(&self, mm: &Mm, va: u64) {
        self.fault(mm, WINDOW + (va - BASE));
    }
}

/// Observes one subscription: forwards every call to the subscriber (if
/// any; without one it only listens) and checks the brackets.
#[derive(Default)]
struct Brackets {
    inner: Option<Arc<dyn MmuNotifier>>,
    /// Started and accepted, not yet ended.
    open: Mutex<Vec<Range>>,
    /// Accepted starts by (event, length).
    seen: Mutex<HashMap<(Event, u64), u64>>,
    violations: Mutex<Vec<String>>,
    starts: AtomicU64,
    ends: AtomicU64,
    refused: AtomicU64,
    releases: AtomicU64,
    /// Set once the subscriber's own `release` returned.
    released: AtomicBool,
}

impl Brackets {
    fn around(inner: Option<Arc<dyn MmuNotifier>>) -> Arc<Brackets> {
        Arc::new(Brackets { inner, ..Brackets::default() })
    }

    fn violation(&self, what: String) {
        self.violations.lock().expect("violations").push(what);
    }

    /// No violation so far and no bracket open (call when nothing runs).
    fn assert_settled(&self, when: &str) {
        let v = self.violations.lock().expect("violations");
        assert!(v.is_empty(), "{when}: {} bracket violations, first: {:?}", v.len(), &v[..v.len().min(5)]);
        let open = self.open.lock().expect("open");
        assert!(open.is_empty(), "{when}: starts without their end: {open:?}");
        assert_eq!(self.starts.load(Ordering::Acquire), self.ends.load(Ordering::Acquire), "{when}");
    }

    /// Accepted starts of `event` whose length `len` accepts.
    fn saw(&self, event: Event, len: impl Fn(u64) -> bool) -> u64 {
        self.seen.lock().expect("seen").iter().filter(|(&(e, l), _)| e == event && len(l)).map(|(_, n)| n).sum()
    }
}

impl MmuNotifier for Brackets {
    fn invalidate_range_start(&self, r: &Range) -> Result<(), Again> {
        if self.released.load(Ordering::Acquire) {
            self.violation(format!("start after release: {r:?}"));
        }
        if r.start >= r.end {
            self.violation(format!("empty range: {r:?}"));
        }
        if let Some(inner) = &self.inner {
            if let Err(again) = inner.invalidate_range_start(r) {
                if r.blockable {
                    self.violation(format!("a subscriber refused a blockable start: {r:?}"));
                }
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(again);
            }
        }
        self.starts.fetch_add(1, Ordering::AcqRel);
        *self.seen.lock().expect("seen").entry((r.event, r.end - r.start)).or_default() += 1;
        self.open.lock().expect("open").push(*r);
        Ok(())
    }

    fn invalidate_range_end(&self, r: &Range) {
        {
            let mut open = self.open.lock().expect("open");
            match open.iter().position(|o| o == r) {
                Some(i) => {
                    open.swap_remove(i);
                }
                None => self.violation(format!("end without its start: {r:?} (open: {open:?})")),
            }
        }
        self.ends.fetch_add(1, Ordering::AcqRel);
        if let Some(inner) = &self.inner {
            inner.invalidate_range_end(r);
        }
    }

    fn clear_young(&self, start: u64, end: u64) -> bool {
        self.inner.as_ref().is_some_and(|i| i.clear_young(start, end))
    }

    fn release(&self) {
        if self.releases.fetch_add(1, Ordering::AcqRel) > 0 {
            self.violation("release twice".into());
        }
        if let Some(inner) = &self.inner {
            inner.release();
        }
        // From here on, every read through the secondary must miss.
        self.released.store(true, Ordering::Release);
    }
}

/// A secondary attached to the primary, the observer of its subscription,
/// and whatever keeps it subscribed.
struct Attached {
    secondary: Arc<dyn Secondary>,
    brackets: Arc<Brackets>,
    _keep: Box<dyn std::any::Any>,
}

#[test]
fn shadow_tlb_reads_are_current_or_miss_under_every_change() {
    check_coherence(|mm| {
        let shadow = Arc::new(ShadowTlb::default());
        let brackets = Brackets::around(Some(shadow.clone()));
        let sub = mm.register_notifier(brackets.clone());
        Attached { secondary: shadow, brackets, _keep: Box::new(sub) }
    });
}

#[test]
fn device_mirror_reads_are_current_or_miss_under_every_change() {
    check_coherence(|mm| {
        let dev = Arc::new(DeviceMirror::new(mm, BASE, PAGES * PAGE).expect("interval"));
        // The interval notifier has no `end` of its own: a listener beside
        // it checks the address space's brackets.
        let brackets = Brackets::around(None);
        let sub = mm.register_notifier(brackets.clone());
        Attached { secondary: dev, brackets, _keep: Box::new(sub) }
    });
}

#[test]
fn xpmem_importer_reads_are_current_or_miss_under_every_change() {
    check_coherence(|mm| {
        let mut brackets = None;
        let export = Export::observed(mm, BASE, PAGES * PAGE, |segment| {
            let b = Brackets::around(Some(segment));
            brackets = Some(b.clone());
            b
        })
        .expect("export");
        let attachment = Arc::new(export.attach(WINDOW).expect("attach"));
        let brackets = brackets.expect("the segment is subscribed");
        Attached { secondary: attachment, brackets, _keep: Box::new(export) }
    });
}

/// The checker's view of the primary's pages, shared with the readers.
struct Pages {
    /// done[p]: generation whose write and invalidations have completed.
    done: Vec<AtomicU32>,
    /// zeroing[p]: the page is between a change that makes it read as
    /// zeros (munmap and mmap again, DONTNEED) and the write of its next
    /// stamp.
    zeroing: Vec<AtomicBool>,
    /// zeroings[p]: how many such changes began (a read that a whole
    /// zeroing interval fell inside may see zeros too).
    zeroings: Vec<AtomicU32>,
    /// The primary's round, for messages.
    at: AtomicU32,
}

impl Pages {
    /// Read page `p` through `sec` and check what came back: a miss, or the
    /// page's own stamp at a generation no older than the one completed
    /// before the read began (or zeros if the read overlapped a zeroing:
    /// the page was being zeroed when it began, or a zeroing began while
    /// it ran — a reader that waits on the importer's sleeping lock may
    /// wait through a whole DONTNEED and another thread's fill of the zero
    /// frame).
    fn read(&self, sec: &dyn Secondary, machine: &Machine, p: u64) -> Option<u32> {
        let zeroing = self.zeroing[p as usize].load(Ordering::Acquire);
        let zeroings = self.zeroings[p as usize].load(Ordering::Acquire);
        let floor = self.done[p as usize].load(Ordering::Acquire);
        let v = sec.read(machine, BASE + p * PAGE)?;
        if v == 0 && (zeroing || self.zeroings[p as usize].load(Ordering::Acquire) != zeroings) {
            return Some(v);
        }
        let at = self.at.load(Ordering::Relaxed);
        assert_eq!(v >> 20, p as u32, "page {p}: read another page's frame ({v:#x}); primary at round {at}");
        assert!(v & 0xfffff >= floor, "page {p}: stale generation {} < {floor}; primary at round {at}", v & 0xfffff);
        Some(v)
    }
}

#[derive(Default)]
struct Tally {
    hits: u64,
    /// Hits after the observer heard `release` (each one a failure).
    after_release: Vec<(u64, u32)>,
}

/// Reader threads: read every page through the secondary, check what
/// they read, fill after a miss (while the primary still lives).
fn readers(
    n: usize,
    machine: &Machine,
    mm: Weak<Mm>,
    a: &Attached,
    pages: &Arc<Pages>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Tally>> {
    (0..n)
        .map(|t| {
            let (machine, mm, sec, brackets, pages, stop) =
                (machine.clone(), mm.clone(), a.secondary.clone(), a.brackets.clone(), pages.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut tally, mut i) = (Tally::default(), t as u64);
                while !stop.load(Ordering::Relaxed) {
                    let p = i % PAGES;
                    i += 7;
                    let va = BASE + p * PAGE;
                    let released = brackets.released.load(Ordering::Acquire);
                    match pages.read(&*sec, &machine, p) {
                        Some(v) if released => tally.after_release.push((p, v)),
                        Some(_) => tally.hits += 1,
                        None => {
                            if let Some(mm) = mm.upgrade() {
                                sec.fill(&mm, va);
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect()
}

/// A forked child writes its own stamp over page `q`: the child's copy,
/// which the parent's secondary must never see.
fn child_write(child: &Mm, q: u64) {
    let va = BASE + q * PAGE;
    child.write(va, &foreign(q).to_ne_bytes()).expect("child write");
    assert_eq!(read_u32(child, va), foreign(q));
}

/// Ends the test process when a check runs far longer than it should:
/// an `invalidate_range_start` whose end never comes makes a secondary's
/// fault wait for good (the device mirror's `read_begin`, the importer's
/// sleep), and a failure names the open brackets where a hang would not.
/// Dropping the returned sender calls the watchdog off.
fn watchdog(b: Arc<Brackets>, limit: Duration) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            let open = b.open.lock().map(|o| format!("{o:?}")).unwrap_or_default();
            // Straight to stderr: the test harness would swallow `eprintln!`.
            let _ = writeln!(std::io::stderr(), "coherence check still running after {limit:?}; brackets open: {open}");
            std::process::exit(101);
        }
    });
    tx
}

/// Drive a secondary made by `attach` with reader threads while the
/// primary changes pages, then exits.
fn check_coherence(attach: impl FnOnce(&Mm) -> Attached) {
    let began = Instant::now();
    let swap = Arc::new(MemSwap::new(16 << 20).expect("swap"));
    let machine = Machine::new(Config { arena_bytes: 64 << 20, swap: SwapConfig::Device(swap), ..Config::default() })
        .expect("machine");
    let mm = Arc::new(machine.new_mm().expect("mm"));
    mm.mmap(BASE, PAGES * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    let pages = Arc::new(Pages {
        done: (0..PAGES).map(|_| AtomicU32::new(0)).collect(),
        zeroing: (0..PAGES).map(|_| AtomicBool::new(false)).collect(),
        zeroings: (0..PAGES).map(|_| AtomicU32::new(0)).collect(),
        at: AtomicU32::new(0),
    });
    for p in 0..PAGES {
        mm.write(BASE + p * PAGE, &stamp(p, 1).to_ne_bytes()).expect("write");
        pages.done[p as usize].store(1, Ordering::Release);
    }
    let attached = attach(&mm);
    let _watchdog = watchdog(attached.brackets.clone(), Duration::from_secs(60));
    let stop = Arc::new(AtomicBool::new(false));
    let running = readers(2, &machine, Arc::downgrade(&mm), &attached, &pages, &stop);
    let mut generation = 1u32;
    for round in 0..ROUNDS {
        // Every page goes through every kind of round.
        let p = u64::from(round + round / 8) % PAGES;
        pages.at.store(round, Ordering::Relaxed);
        let va = BASE + p * PAGE;
        generation += 1;
        // The secondary maps the page when the change comes (the readers
        // may not have got to it yet): a missed invalidation leaves it
        // reading the old frame.
        let cache = || attached.secondary.fill(&mm, va);
        let cache_all = || (0..PAGES).for_each(|q| attached.secondary.fill(&mm, BASE + q * PAGE));
        // Every page read through the secondary now, from this thread.
        let check_all = || {
            for q in 0..PAGES {
                pages.read(&*attached.secondary, &machine, q);
            }
        };
        cache();
        let zeroes = matches!(round % 8, 0 | 5);
        if zeroes {
            pages.zeroings[p as usize].fetch_add(1, Ordering::AcqRel);
            pages.zeroing[p as usize].store(true, Ordering::Release);
        }
        match round % 8 {
            0 => {
                // munmap and map again: the old frame goes back to the arena
                // (and, the free list being last in, first out, most likely
                // back to this page: hence the check in between).
                mm.munmap(va, PAGE).expect("munmap");
                pages.done[p as usize].store(generation, Ordering::Release);
                assert_eq!(attached.secondary.read(&machine, va), None, "page {p}: a hit after munmap");
                mm.mmap(va, PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
            }
            1 => {
                mm.mprotect(va, PAGE, Prot::READ).expect("mprotect");
                cache();
                mm.mprotect(va, PAGE, Prot::RW).expect("mprotect");
            }
            2 => {
                // Fork sharing PTE tables; the parent writes first: it
                // unshares its table, then copies the page. The child writes
                // its own copies, then exits.
                let child = mm.fork_with(ForkPolicy::SharedTables).expect("fork");
                cache_all();
                mm.write(va, &stamp(p, generation).to_ne_bytes()).expect("cow");
                child_write(&child, p);
                child_write(&child, (p + 1) % PAGES);
                check_all();
                drop(child);
            }
            3 => {
                cache_all();
                machine.reclaim(8);
            }
            4 => {
                // Written first, the page is present and out of the swap
                // cache, so that it can move (a reader's fill holding it
                // still makes the migration give up, which is fine).
                mm.write(va, &stamp(p, generation).to_ne_bytes()).expect("write");
                // The stamp the old frame keeps must read as stale.
                generation += 1;
                cache();
                let _ = mm.migrate(va);
            }
            5 => {
                mm.madvise(va, PAGE, softmm::Advice::DontNeed).expect("madvise");
                // The page reads as zeros now: its old stamp is stale.
                pages.done[p as usize].store(generation, Ordering::Release);
                check_all();
            }
            6 => {
                // Fork sharing PTE tables; the child writes first, to the
                // next page (it unshares the table on its side), while the
                // parent's secondary reads the frames the two still share.
                // Then the parent copies page `p` on write, and the child
                // writes its own, the old frame, in place.
                let child = mm.fork_with(ForkPolicy::SharedTables).expect("fork");
                cache_all();
                child_write(&child, (p + 1) % PAGES);
                check_all();
                let before = stamp(p, pages.done[p as usize].load(Ordering::Acquire));
                assert_eq!(read_u32(&mm, va), before, "the child's write reached the parent");
                cache();
                mm.write(va, &stamp(p, generation).to_ne_bytes()).expect("cow");
                child_write(&child, p);
                check_all();
                assert_eq!(read_u32(&mm, va), stamp(p, generation), "the child's write reached the parent");
                child.exit();
            }
            _ => {
                // Migration and swap-out of pages that parent and child map
                // through one shared table; then the child exits.
                mm.write(va, &stamp(p, generation).to_ne_bytes()).expect("write");
                generation += 1;
                let child = mm.fork_with(ForkPolicy::SharedTables).expect("fork");
                cache();
                let _ = mm.migrate(va);
                check_all();
                cache_all();
                machine.reclaim(8);
                drop(child);
            }
        }
        mm.write(va, &stamp(p, generation).to_ne_bytes()).expect("write");
        pages.done[p as usize].store(generation, Ordering::Release);
        pages.zeroing[p as usize].store(false, Ordering::Release);
        // The round is over: a translation it should have invalidated is
        // still there now, whether or not a reader thread ran meanwhile.
        check_all();
    }
    // A quiet moment, so that the readers also hit on stable pages.
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let hits: u64 = running.into_iter().map(|r| r.join().expect("reader").hits).sum();
    assert!(hits > 0, "the secondary never hit");
    let b = &attached.brackets;
    b.assert_settled("after the changes");
    // Every kind of change reached the secondary (the importer refuses
    // some swap-outs, never all).
    for (event, len) in [
        (Event::Unmap, PAGE),
        (Event::Protection, PAGE),
        (Event::Cow, PAGE),
        (Event::Cow, TABLE_SPAN),
        (Event::Clear, PAGE),
        (Event::SwapOut, PAGE),
        (Event::Migrate, PAGE),
    ] {
        assert!(b.saw(event, |l| l == len) > 0, "never saw {event:?} over {len:#x}");
    }
    assert!(b.saw(Event::Protection, |l| l > PAGE) > 0, "fork never write-protected a VMA");
    mm.check_invariants().expect("audit");

    // The primary exits (its last handle goes) while readers read: the
    // secondary hears `release`, and from then on every read misses.
    stop.store(false, Ordering::Relaxed);
    let running = readers(2, &machine, Arc::downgrade(&mm), &attached, &pages, &stop);
    std::thread::sleep(Duration::from_millis(10));
    drop(mm);
    let waited = Instant::now();
    while !b.released.load(Ordering::Acquire) {
        assert!(waited.elapsed() < Duration::from_secs(10), "the secondary never heard release");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(10));
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = running.into_iter().map(|r| r.join().expect("reader")).collect();
    let late: Vec<(u64, u32)> = tallies.iter().flat_map(|t| t.after_release.iter().copied()).collect();
    assert!(late.is_empty(), "reads hit after release: {:?}", &late[..late.len().min(5)]);
    b.assert_settled("after exit");
    assert_eq!(b.saw(Event::Release, |_| true), 1, "exit sends one Release bracket");
    assert_eq!(b.saw(Event::Release, |l| l == softmm::TASK_SIZE), 1, "over the whole user range");
    machine.check_invariants().expect("audit after exit");
    eprintln!(
        "{} brackets ({} swap-outs, {} refused), {hits} hits, {:.2?}",
        b.starts.load(Ordering::Relaxed),
        b.saw(Event::SwapOut, |_| true),
        b.refused.load(Ordering::Relaxed),
        began.elapsed()
    );
}
