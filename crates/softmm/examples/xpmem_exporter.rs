//! An XPMEM-like exporter: one address space (the exporter) exports a range
//! as a segment; importers attach the segment at a window of their own and
//! reach the exporter's frames through translations their own fault path
//! resolves. The secondary MMU here is the importers' set of translations.
//!
//! What sets it apart from the shadow TLB and the device mirror (seed 002):
//! an importer's fault does not run under any lock of the primary's, so it
//! cannot lean on the page-table lock to serialize against the exporter's
//! changes. It uses the segment's own *sleeping* lock instead, and sleeps
//! while an invalidation covering the page is open:
//! - `invalidate_range_start` (blockable) takes the segment lock, waiting if
//!   need be, records the range as open (a multiset: reclaim keeps several
//!   one-page brackets open at once, and brackets of other ranges
//!   interleave), and zaps every attachment's translations in it. A
//!   non-blockable caller (reclaim that only tries locks) gets `Again` when
//!   the lock is not free right now: waiting is exactly what it cannot do.
//! - `invalidate_range_end` removes that same range (this is why `end`
//!   carries the range, as Andrea asks in the seed), bumps the sequence and
//!   wakes the faults sleeping on it.
//! - An importer's fault sleeps on the condition variable while an open
//!   range covers the page, takes the sequence, looks the page up in the
//!   exporter with the lock dropped (faulting it in may take the exporter's
//!   `mmap_lock`, which an invalidating thread may hold while it waits for
//!   our lock), and installs the frame only if no invalidation opened or
//!   closed meanwhile; otherwise it starts over.
//! - An importer's access reads through its translation under the segment
//!   lock, so once `start` returned no access uses an old translation.
//! - `release` (the exporter exits) zaps everything for good: later
//!   accesses miss and faults fail.
//!
//! Ordering relied on: the primary calls `start` before it changes any
//! entry of the range and outside its page-table locks (so sleeping here is
//! allowed when `blockable`), `end` with the same range after the entries
//! changed and the primary's TLBs were shot down, and frees a frame only
//! after the `start` of the invalidation that unmapped it returned (munmap,
//! DONTNEED and COW free it before `end`, once the primary's own TLBs are
//! shot down): the importers must have dropped their translations of the
//! range by the time `start` returns, which is what `start` here does.
//!
//! Imports are read-only: a writable import would have to fault the page in
//! for writing (breaking copy-on-write first) before mapping it.
//!
//! Run: `cargo run --release -p softmm --example xpmem_exporter`.

use parking_lot::{Condvar, Mutex};
use softmm::notifier::{Again, MmuNotifier, Range};
use softmm::{FrameId, Machine, Mm, Subscription};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PAGE: u64 = 4096;

/// A fault gives up sleeping on an open invalidation after this long and
/// reports a miss: every `start` has its `end`, so only a primary bug (or a
/// very slow swap device) makes it run out.
const MAX_SLEEP: Duration = Duration::from_secs(2);

/// Lookups a fault tries before it reports a miss (invalidations kept
/// overlapping its lookups).
const MAX_TRIES: u32 = 1000;

#[derive(Default)]
struct SegState {
    /// Invalidations between their start and end, clipped to the segment.
    open: Vec<(u64, u64)>,
    /// Bumped by the end of every invalidation that overlapped the segment.
    seq: u64,
    /// Each attachment's translations: segment page index -> frame.
    attachments: HashMap<u64, HashMap<u64, FrameId>>,
    next_attachment: u64,
    /// The exporter exited.
    released: bool,
}

impl SegState {
    fn covered(&self, va: u64) -> bool {
        self.open.iter().any(|&(lo, hi)| lo <= va && va < hi)
    }
}

/// Counters of the segment, for reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SegStats {
    /// Translations installed.
    pub installed: u64,
    /// Faults that slept on an open invalidation.
    pub slept: u64,
    /// Lookups thrown away because an invalidation overlapped them.
    pub retried: u64,
    /// Non-blockable invalidations refused with `Again`.
    pub refused: u64,
}

/// An exported range `[start, end)` of the exporter's address space: the
/// subscriber the exporter's MMU notifiers call.
pub struct Segment {
    exporter: u64,
    start: u64,
    end: u64,
    /// The segment's sleeping lock (XPMEM's external lock).
    state: Mutex<SegState>,
    /// Signalled whenever an invalidation ends or the exporter exits.
    settled: Condvar,
    installed: AtomicU64,
    slept: AtomicU64,
    retried: AtomicU64,
    refused: AtomicU64,
}

impl Segment {
    /// The part of `r` inside the segment, if any.
    fn clip(&self, r: &Range) -> Option<(u64, u64)> {
        let (lo, hi) = (r.start.max(self.start), r.end.min(self.end));
        (lo < hi).then_some((lo, hi))
    }

    fn zap(&self, s: &mut SegState, lo: u64, hi: u64) {
        let (first, last) = ((lo - self.start) / PAGE, (hi - self.start).div_ceil(PAGE));
        for table in s.attachments.values_mut() {
            if (last - first) as usize >= table.len() {
                table.retain(|&i, _| i < first || i >= last);
            } else {
                for i in first..last {
                    table.remove(&i);
                }
            }
        }
    }

    /// The segment's counters.
    pub fn stats(&self) -> SegStats {
        SegStats {
            installed: self.installed.load(Ordering::Relaxed),
            slept: self.slept.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

impl MmuNotifier for Segment {
    fn invalidate_range_start(&self, r: &Range) -> Result<(), Again> {
        let Some((lo, hi)) = self.clip(r) else { return Ok(()) };
        let mut s = if r.blockable {
            self.state.lock()
        } else {
            match self.state.try_lock() {
                Some(s) => s,
                None => {
                    // No `end` follows a refusal: nothing to undo.
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Again);
                }
            }
        };
        s.open.push((lo, hi));
        self.zap(&mut s, lo, hi);
        Ok(())
    }

    fn invalidate_range_end(&self, r: &Range) {
        let Some((lo, hi)) = self.clip(r) else { return };
        let mut s = self.state.lock();
        // Any copy of the range will do: equal ranges are interchangeable.
        if let Some(i) = s.open.iter().position(|&o| o == (lo, hi)) {
            s.open.swap_remove(i);
        }
        s.seq += 1;
        drop(s);
        self.settled.notify_all();
    }

    fn release(&self) {
        let mut s = self.state.lock();
        s.released = true;
        for table in s.attachments.values_mut() {
            table.clear();
        }
        drop(s);
        self.settled.notify_all();
    }
}

/// The exporter's handle on a segment: keeps it subscribed.
pub struct Export {
    segment: Arc<Segment>,
    _subscription: Subscription,
}

impl Export {
    /// Export `[start, start + len)` of `exporter` (page-aligned, non-empty).
    pub fn new(exporter: &Mm, start: u64, len: u64) -> softmm::Result<Export> {
        Export::observed(exporter, start, len, |segment| segment)
    }

    /// `new`, subscribing what `observe` makes of the segment: a wrapper
    /// that forwards every call (the coherence checker checks the brackets
    /// that way).
    pub fn observed(
        exporter: &Mm,
        start: u64,
        len: u64,
        observe: impl FnOnce(Arc<dyn MmuNotifier>) -> Arc<dyn MmuNotifier>,
    ) -> softmm::Result<Export> {
        if start % PAGE != 0 || len % PAGE != 0 {
            return Err(softmm::Error::Invalid("segment not page-aligned"));
        }
        let end = start.checked_add(len).filter(|_| len > 0).ok_or(softmm::Error::Invalid("empty segment"))?;
        let segment = Arc::new(Segment {
            exporter: exporter.id(),
            start,
            end,
            state: Mutex::new(SegState::default()),
            settled: Condvar::new(),
            installed: AtomicU64::new(0),
            slept: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let subscription = exporter.register_notifier(observe(segment.clone()));
        Ok(Export { segment, _subscription: subscription })
    }

    /// An importer attaches the segment at `window` (page-aligned).
    pub fn attach(&self, window: u64) -> softmm::Result<Attachment> {
        if window % PAGE != 0 {
            return Err(softmm::Error::Invalid("window not page-aligned"));
        }
        window
            .checked_add(self.segment.end - self.segment.start)
            .ok_or(softmm::Error::Invalid("window wraps around"))?;
        let mut s = self.segment.state.lock();
        let id = s.next_attachment;
        s.next_attachment += 1;
        s.attachments.insert(id, HashMap::new());
        Ok(Attachment { segment: self.segment.clone(), id, window })
    }

    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }
}

/// An importer's view of a segment at `[window, window + len)`. Dropping it
/// detaches.
pub struct Attachment {
    segment: Arc<Segment>,
    id: u64,
    window: u64,
}

impl Attachment {
    /// The exporter's address behind window address `va`.
    fn exported(&self, va: u64) -> Option<u64> {
        let seg = &self.segment;
        let off = va.checked_sub(self.window)?;
        (off < seg.end - seg.start).then(|| seg.start + off)
    }

    /// The importer's fault path: make window page `va` readable through a
    /// translation to the exporter's frame. Returns false (a miss stays)
    /// when `va` is outside the window, the exporter has nothing readable
    /// there or has exited, or invalidations kept overlapping.
    pub fn fault(&self, exporter: &Mm, va: u64) -> bool {
        let seg = &self.segment;
        let Some(xva) = self.exported(va).map(|x| x & !(PAGE - 1)) else { return false };
        if exporter.id() != seg.exporter {
            return false;
        }
        let index = (xva - seg.start) / PAGE;
        for _ in 0..MAX_TRIES {
            let seq = {
                let mut s = seg.state.lock();
                if s.covered(xva) {
                    seg.slept.fetch_add(1, Ordering::Relaxed);
                    while s.covered(xva) && !s.released {
                        if seg.settled.wait_for(&mut s, MAX_SLEEP).timed_out() {
                            return false;
                        }
                    }
                }
                if s.released {
                    return false;
                }
                s.seq
            };
            // Fault the page in on the exporter and read its frame, with the
            // segment lock dropped (see the module comment).
            let mut b = [0u8; 1];
            if exporter.read(xva, &mut b).is_err() {
                return false;
            }
            let Some(frame) = exporter.phys(xva) else {
                seg.retried.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut s = seg.state.lock();
            if s.released {
                return false;
            }
            if s.seq != seq || s.covered(xva) {
                seg.retried.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(table) = s.attachments.get_mut(&self.id) else { return false };
            table.insert(index, frame);
            seg.installed.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// An importer's read of the `u32` at window address `va` (not crossing
    /// a page): `None` is a miss, for `fault` to resolve.
    pub fn read_u32(&self, machine: &Machine, va: u64) -> Option<u32> {
        let xva = self.exported(va)?;
        let index = (xva - self.segment.start) / PAGE;
        let s = self.segment.state.lock();
        let frame = *s.attachments.get(&self.id)?.get(&index)?;
        let mut b = [0u8; 4];
        // The lock is held: no invalidation of this page can complete its
        // `start` while we read, so `frame` is still the page's.
        machine.read_frame(frame, (xva % PAGE) as usize, &mut b).ok()?;
        Some(u32::from_ne_bytes(b))
    }

    /// Translations this attachment holds.
    pub fn mapped(&self) -> usize {
        self.segment.state.lock().attachments.get(&self.id).map_or(0, HashMap::len)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.segment.state.lock().attachments.remove(&self.id);
    }
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use softmm::{Config, MapKind, Placement, Prot};
    use std::sync::atomic::AtomicBool;
    let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() })?;
    let exporter = Arc::new(machine.new_mm()?);
    let base = exporter.mmap(0x1000_0000, 16 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed)?;
    for p in 0..16 {
        exporter.write(base + p * PAGE, &(p as u32).to_ne_bytes())?;
    }
    let export = Export::new(&exporter, base, 16 * PAGE)?;
    // Two importers, each with its own window onto the same pages.
    let (wa, wb) = (0x7000_0000, 0x7800_0000);
    let (a, b) = (export.attach(wa)?, export.attach(wb)?);
    assert_eq!(a.read_u32(&machine, wa + 3 * PAGE), None);
    assert!(a.fault(&exporter, wa + 3 * PAGE) && b.fault(&exporter, wb + 3 * PAGE));
    assert_eq!(a.read_u32(&machine, wa + 3 * PAGE), Some(3));
    assert_eq!(b.read_u32(&machine, wb + 3 * PAGE), Some(3));

    // The exporter forks (write-protecting: both importers lose the page),
    // then writes (a new frame): importers refault and see the new value.
    let child = exporter.fork()?;
    assert_eq!(a.read_u32(&machine, wa + 3 * PAGE), None);
    assert!(a.fault(&exporter, wa + 3 * PAGE));
    exporter.write(base + 3 * PAGE, &33u32.to_ne_bytes())?;
    assert_eq!(a.read_u32(&machine, wa + 3 * PAGE), None);
    assert!(a.fault(&exporter, wa + 3 * PAGE));
    assert_eq!(a.read_u32(&machine, wa + 3 * PAGE), Some(33));
    drop(child);

    // An importer faulting on one thread while the exporter keeps changing
    // the page on another: faults sleep on open invalidations and retry
    // lookups that an invalidation overlapped; reads see the page's values
    // in order (0 between a DONTNEED and the next write), never an old one.
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicU64::new(0));
    let importer = {
        let (exporter, machine, stop, hits) = (exporter.clone(), machine.clone(), stop.clone(), hits.clone());
        std::thread::spawn(move || {
            let mut last = 5u32;
            while !stop.load(Ordering::Relaxed) {
                match b.read_u32(&machine, wb + 5 * PAGE) {
                    Some(0) => {}
                    Some(v) => {
                        assert!(v >= last, "read a stale page: {v} after {last}");
                        last = v;
                    }
                    None => {
                        b.fault(&exporter, wb + 5 * PAGE);
                        continue;
                    }
                }
                hits.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let began = std::time::Instant::now();
    let mut i = 0u32;
    // For a while, so that the importer gets its share of the CPU too.
    while i < 3000 || began.elapsed() < Duration::from_millis(200) {
        i += 1;
        match i % 3 {
            0 => exporter.mprotect(base + 5 * PAGE, PAGE, Prot::READ)?,
            1 => exporter.mprotect(base + 5 * PAGE, PAGE, Prot::RW)?,
            _ => {
                exporter.madvise(base + 5 * PAGE, PAGE, softmm::Advice::DontNeed)?;
                exporter.write(base + 5 * PAGE, &(1000 + i).to_ne_bytes())?;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    importer.join().map_err(|_| "importer thread panicked")?;
    let hits = hits.load(Ordering::Relaxed);

    // The exporter exits with the segment exported: the segment hears
    // `release`, importers miss for good and their faults fail.
    assert!(a.fault(&exporter, wa + 7 * PAGE));
    let Ok(exporter) = Arc::try_unwrap(exporter) else { return Err("the exporter is still shared".into()) };
    let id = exporter.id();
    exporter.exit();
    assert_eq!(a.read_u32(&machine, wa + 7 * PAGE), None);
    assert_eq!(a.mapped(), 0);
    let other = machine.new_mm()?;
    assert_ne!(other.id(), id);
    assert!(!a.fault(&other, wa + 7 * PAGE), "a fault resolves only through the exporter");
    let segment = export.segment().clone();
    println!("xpmem exporter stayed coherent through fork, COW, mprotect and DONTNEED; {hits} importer hits");
    println!("segment: {:?}", segment.stats());
    Ok(())
}
