//! MMU notifiers: which operation sends which event, over which range,
//! once per operation; registration and the interval sequence count.

// Callbacks are what these tests check; a build without notifiers has none.
#![cfg(not(softmm_no_notifiers))]

mod common;

use softmm::notifier::{Again, Event, IntervalHandle, IntervalOps, MmuNotifier, Range};
use softmm::{Advice, ForkPolicy, MapKind, Placement, Prot};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
/// What one PTE table maps.
const TABLE: u64 = 2 << 20;

#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<(char, u64, u64, Event)>>,
    /// Starts that came with `blockable == false`.
    nonblocking: AtomicU64,
    releases: AtomicU64,
    /// Answer `Again` to every start (logged as 'r'), blockable or not, or
    /// only to non-blockable ones.
    refuse: Refuse,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Refuse {
    #[default]
    Never,
    NonBlockable,
    /// A subscriber breaking the contract (`Again` only when !blockable).
    Always,
}

impl Recorder {
    fn take(&self) -> Vec<(char, u64, u64, Event)> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }

    fn refusing(refuse: Refuse) -> Arc<Recorder> {
        Arc::new(Recorder { refuse, ..Recorder::default() })
    }
}

impl MmuNotifier for Recorder {
    fn invalidate_range_start(&self, r: &Range) -> Result<(), Again> {
        if !r.blockable {
            self.nonblocking.fetch_add(1, Ordering::Relaxed);
        }
        let refuse = match self.refuse {
            Refuse::Never => false,
            Refuse::NonBlockable => !r.blockable,
            Refuse::Always => true,
        };
        self.log.lock().expect("log").push((if refuse { 'r' } else { 's' }, r.start, r.end, r.event));
        if refuse {
            return Err(Again);
        }
        Ok(())
    }
    fn invalidate_range_end(&self, r: &Range) {
        self.log.lock().expect("log").push(('e', r.start, r.end, r.event));
    }
    fn release(&self) {
        self.releases.fetch_add(1, Ordering::Relaxed);
    }
}

fn pair(start: u64, end: u64, ev: Event) -> Vec<(char, u64, u64, Event)> {
    vec![('s', start, end, ev), ('e', start, end, ev)]
}

#[test]
fn each_operation_sends_one_pair_with_its_event_and_range() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    let rec = Arc::new(Recorder::default());
    let _sub = mm.register_notifier(rec.clone());
    let gib = 1u64 << 30;
    mm.mmap(BASE, gib, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    assert_eq!(rec.take(), vec![], "mapping new memory strands nothing");
    for i in 0..64 {
        mm.write(BASE + i * (16 << 20), &[1]).expect("write");
    }
    assert_eq!(rec.take(), vec![], "demand faults strand nothing");
    mm.mprotect(BASE, 16 * PAGE, Prot::READ).expect("mprotect");
    assert_eq!(rec.take(), pair(BASE, BASE + 16 * PAGE, Event::Protection));
    mm.madvise(BASE + gib / 2, 8 * PAGE, Advice::DontNeed).expect("madvise");
    assert_eq!(rec.take(), pair(BASE + gib / 2, BASE + gib / 2 + 8 * PAGE, Event::Clear));
    // Fork write-protects the parent's private memory: one pair per VMA
    // (mprotect split the GiB in two).
    assert_eq!(mm.mappings().len(), 2);
    let child = mm.fork().expect("fork");
    let mid = BASE + 16 * PAGE;
    assert_eq!(rec.take(), [pair(BASE, mid, Event::Protection), pair(mid, BASE + gib, Event::Protection)].concat());
    // A write through the table fork shared: unshare (its 2 MiB), then
    // copy on write (the page).
    let va = BASE + (16 << 20);
    mm.write(va, &[2]).expect("cow");
    assert_eq!(rec.take(), [pair(va, va + TABLE, Event::Cow), pair(va, va + PAGE, Event::Cow)].concat());
    // The child exits: the parent's subscriber hears nothing.
    drop(child);
    assert_eq!(rec.take(), vec![]);
    // munmap of the whole GiB: exactly one pair.
    mm.munmap(BASE, gib).expect("munmap");
    assert_eq!(rec.take(), pair(BASE, BASE + gib, Event::Unmap));
    assert_eq!(rec.releases.load(Ordering::Relaxed), 0);
    drop(mm);
    let log = rec.take();
    assert_eq!(log, pair(0, softmm::TASK_SIZE, Event::Release));
    assert_eq!(rec.releases.load(Ordering::Relaxed), 1, "release once at teardown");
}

#[test]
fn mremap_unmaps_the_old_range_for_secondary_mmus_as_linux() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 8 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    mm.write(BASE, &[1]).expect("write");
    let rec = Arc::new(Recorder::default());
    let _sub = mm.register_notifier(rec.clone());
    let to = BASE + (1 << 30);
    let fixed = softmm::RemapFlags::MAYMOVE.union(softmm::RemapFlags::FIXED);
    assert_eq!(mm.mremap(BASE, 8 * PAGE, 8 * PAGE, fixed, to), Ok(to));
    // move_page_tables' MMU_NOTIFY_UNMAP, then the old range's munmap.
    let old = pair(BASE, BASE + 8 * PAGE, Event::Unmap);
    assert_eq!(rec.take(), [old.clone(), old].concat());
    // Growing in place changes no entry: nothing to hear.
    assert_eq!(mm.mremap(to, 8 * PAGE, 16 * PAGE, softmm::RemapFlags::NONE, 0), Ok(to));
    assert_eq!(rec.take(), vec![]);
}

#[test]
fn unregistered_subscribers_hear_nothing_more() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    let rec = Arc::new(Recorder::default());
    let sub = mm.register_notifier(rec.clone());
    mm.mmap(BASE, 4 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    mm.munmap(BASE, PAGE).expect("munmap");
    assert_eq!(rec.take().len(), 2);
    drop(sub);
    mm.munmap(BASE, 4 * PAGE).expect("munmap");
    drop(mm);
    assert_eq!(rec.take(), vec![]);
    assert_eq!(rec.releases.load(Ordering::Relaxed), 0);
}

/// Registration racing invalidations on real threads: every start a
/// subscriber sees has its end, with the same range.
#[test]
fn registration_never_splits_a_pair() {
    let m = common::machine();
    let mm = Arc::new(m.new_mm().expect("mm"));
    mm.mmap(BASE, 64 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (mm, stop) = (mm.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = BASE + (i % 64) * PAGE;
                mm.write(p, &[1]).expect("write");
                mm.madvise(p, PAGE, Advice::DontNeed).expect("madvise");
                i += 1;
            }
        })
    };
    for _ in 0..200 {
        let rec = Arc::new(Recorder::default());
        let sub = mm.register_notifier(rec.clone());
        std::thread::yield_now();
        drop(sub);
        let log = rec.take();
        for pair in log.chunks(2) {
            assert!(pair.len() == 2 && pair[0].0 == 's' && pair[1].0 == 'e', "{log:?}");
            assert_eq!((pair[0].1, pair[0].2, pair[0].3), (pair[1].1, pair[1].2, pair[1].3));
        }
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("worker");
}

struct Seq {
    lock: Mutex<()>,
    hits: AtomicU64,
}

impl IntervalOps for Seq {
    fn invalidate(&self, h: &IntervalHandle<'_>, _r: &Range, cur: u64) -> bool {
        let _g = self.lock.lock().expect("lock");
        h.set_seq(cur);
        self.hits.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[test]
fn interval_sequence_makes_a_racing_install_retry() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 16 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    let ops = Arc::new(Seq { lock: Mutex::new(()), hits: AtomicU64::new(0) });
    let iv = mm.insert_interval_notifier(BASE + 4 * PAGE, 4 * PAGE, ops.clone()).expect("interval");
    // No overlap: no callback, no sequence change.
    let seq = iv.read_begin();
    mm.madvise(BASE, 4 * PAGE, Advice::DontNeed).expect("madvise");
    assert!(!iv.read_retry(seq));
    assert_eq!(ops.hits.load(Ordering::Relaxed), 0);
    // Overlap: the callback runs and a lookup begun before must retry.
    let seq = iv.read_begin();
    mm.madvise(BASE + 6 * PAGE, PAGE, Advice::DontNeed).expect("madvise");
    assert!(iv.read_retry(seq));
    assert_eq!(ops.hits.load(Ordering::Relaxed), 1);
    assert_eq!(iv.seen_seq() % 2, 1, "callbacks see an odd (invalidating) sequence");
    let seq2 = iv.read_begin();
    assert!(!iv.read_retry(seq2));
    drop(iv);
    mm.madvise(BASE + 6 * PAGE, PAGE, Advice::DontNeed).expect("madvise");
    assert_eq!(ops.hits.load(Ordering::Relaxed), 1, "removed intervals hear nothing");
    assert!(mm.insert_interval_notifier(BASE, 0, ops).is_err(), "empty interval");
}

/// An interval callback that drops nothing and may forget `set_seq`, and
/// may look at another interval (`read_begin`) while it runs.
#[derive(Default)]
struct Forgetful {
    record: bool,
    hits: AtomicU64,
    other: std::sync::OnceLock<softmm::IntervalNotifier>,
    other_seq: Mutex<Option<u64>>,
}

impl IntervalOps for Forgetful {
    fn invalidate(&self, h: &IntervalHandle<'_>, _r: &Range, cur: u64) -> bool {
        if self.record {
            h.set_seq(cur);
        }
        if let Some(o) = self.other.get() {
            // Only this interval is being invalidated: no wait.
            *self.other_seq.lock().expect("other") = Some(o.read_begin());
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// `read_retry` answers for the interval's own invalidations, those whose
/// callback recorded them with `set_seq` (Linux's `mmu_interval_set_seq`
/// and `mmu_interval_read_retry`), not for any invalidation of the space.
#[test]
fn read_retry_follows_this_intervals_set_seq() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 16 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    let ops_x = Arc::new(Seq { lock: Mutex::new(()), hits: AtomicU64::new(0) });
    let x = mm.insert_interval_notifier(BASE, 4 * PAGE, ops_x.clone()).expect("x");
    let ops_y = Arc::new(Forgetful { record: true, ..Forgetful::default() });
    let y = mm.insert_interval_notifier(BASE + 4 * PAGE, 4 * PAGE, ops_y.clone()).expect("y");
    assert_eq!(x.seen_seq() % 2, 1, "an interval's value is odd from the start");
    let (sx, sy) = (x.read_begin(), y.read_begin());
    // An invalidation of y only: x's lookup stays valid.
    mm.madvise(BASE + 5 * PAGE, PAGE, Advice::DontNeed).expect("madvise");
    assert_eq!((ops_x.hits.load(Ordering::Relaxed), ops_y.hits.load(Ordering::Relaxed)), (0, 1));
    assert!(!x.read_retry(sx), "another interval's invalidation made x retry");
    assert!(y.read_retry(sy), "y's own invalidation did not make it retry");
    // Both: both retry.
    let (sx, sy) = (x.read_begin(), y.read_begin());
    mm.madvise(BASE, 8 * PAGE, Advice::DontNeed).expect("madvise");
    assert!(x.read_retry(sx) && y.read_retry(sy));
    assert_eq!(x.seen_seq(), y.seen_seq(), "one invalidation, one sequence value");

    // A callback that does not call set_seq: the invalidation goes
    // unrecorded, so read_retry cannot see it.
    let ops_z = Arc::new(Forgetful { record: false, ..Forgetful::default() });
    let z = mm.insert_interval_notifier(BASE + 8 * PAGE, 4 * PAGE, ops_z.clone()).expect("z");
    let sz = z.read_begin();
    mm.madvise(BASE + 8 * PAGE, PAGE, Advice::DontNeed).expect("madvise");
    assert_eq!(ops_z.hits.load(Ordering::Relaxed), 1);
    assert!(!z.read_retry(sz), "read_retry saw an invalidation no set_seq recorded");
}

/// `read_begin` waits only while its own interval is being invalidated:
/// called on `x` from inside the callback of an invalidation of `y` only,
/// it returns (it used to wait for the space's sequence to turn even,
/// which that invalidation's own callback would wait for for ever).
#[test]
fn read_begin_does_not_wait_for_another_intervals_invalidation() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 16 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    let ops_x = Arc::new(Forgetful { record: true, ..Forgetful::default() });
    let x = mm.insert_interval_notifier(BASE, 4 * PAGE, ops_x.clone()).expect("x");
    let ops_y = Arc::new(Forgetful { record: true, ..Forgetful::default() });
    let _y = mm.insert_interval_notifier(BASE + 4 * PAGE, 4 * PAGE, ops_y.clone()).expect("y");
    let before = x.seen_seq();
    assert!(ops_y.other.set(x).is_ok());
    mm.madvise(BASE + 4 * PAGE, PAGE, Advice::DontNeed).expect("madvise");
    assert_eq!(*ops_y.other_seq.lock().expect("other"), Some(before));
    assert_eq!(ops_x.hits.load(Ordering::Relaxed), 0);
}

fn swap_machine() -> softmm::Machine {
    let swap = Arc::new(softmm::reclaim::device::MemSwap::new(16 << 20).expect("swap"));
    softmm::Machine::new(softmm::Config {
        arena_bytes: 64 << 20,
        swap: softmm::SwapConfig::Device(swap),
        ..softmm::Config::default()
    })
    .expect("machine")
}

/// Fork write-protects exactly the private VMAs it copies (those with
/// pages, Linux's `vma_needs_copy`): one pair each, in address order;
/// private memory never written and shared memory are left alone.
#[test]
fn fork_brackets_each_private_vma_it_write_protects() {
    for policy in [ForkPolicy::SharedTables, ForkPolicy::CopyTables] {
        let m = common::machine();
        let mm = m.new_mm().expect("mm");
        let a = (BASE, BASE + 8 * PAGE); // private, written
        let b = (BASE + 16 * PAGE, BASE + 24 * PAGE); // private, never written
        let c = (BASE + 32 * PAGE, BASE + 40 * PAGE); // shared, written
        let d = (BASE + TABLE + 8 * PAGE, BASE + TABLE + 9 * PAGE); // private, written, another table
        for (r, kind) in [(a, MapKind::Private), (b, MapKind::Private), (c, MapKind::Shared), (d, MapKind::Private)] {
            mm.mmap(r.0, r.1 - r.0, Prot::RW, kind, Placement::Fixed).expect("mmap");
        }
        for va in [a.0, c.0, d.0] {
            mm.write(va, &[1]).expect("write");
        }
        let rec = Arc::new(Recorder::default());
        let _sub = mm.register_notifier(rec.clone());
        let child = mm.fork_with(policy).expect("fork");
        assert_eq!(rec.take(), [pair(a.0, a.1, Event::Protection), pair(d.0, d.1, Event::Protection)].concat());
        assert_eq!(rec.nonblocking.load(Ordering::Relaxed), 0);
        drop(child);
        assert_eq!(rec.take(), vec![], "a child's exit is not the parent's business");
    }
}

/// A write to a write-protected page brackets that one page: a copy after
/// fork, and the first write after a read mapped the zero page. A first
/// write to an empty entry and a write to a writable page strand nothing.
#[test]
fn cow_faults_bracket_the_page() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 16 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    let rec = Arc::new(Recorder::default());
    let _sub = mm.register_notifier(rec.clone());
    mm.write(BASE, &[1]).expect("write");
    mm.write(BASE, &[2]).expect("write");
    assert_eq!(rec.take(), vec![]);
    let child = mm.fork_with(ForkPolicy::CopyTables).expect("fork");
    rec.take();
    mm.write(BASE, &[3]).expect("cow");
    assert_eq!(rec.take(), pair(BASE, BASE + PAGE, Event::Cow));
    assert_ne!(mm.phys(BASE), child.phys(BASE), "copied");
    // The zero page: read first (no bracket), then written.
    let z = BASE + 5 * PAGE;
    common::read(&mm, z, 1);
    assert_eq!(mm.phys(z), Some(softmm::ZERO_FRAME));
    assert_eq!(rec.take(), vec![]);
    mm.write(z, &[1]).expect("write");
    assert_eq!(rec.take(), pair(z, z + PAGE, Event::Cow));
    // The child's copy-on-write is the child's business.
    child.write(BASE + PAGE, &[1]).expect("child write");
    assert_eq!(rec.take(), vec![]);
}

/// Shared PTE tables: the first change through a table fork shared makes it
/// the space's own, bracketed over the table's 2 MiB (`Cow`), on a write
/// fault and on a read fault that installs an entry; then the page's own
/// bracket if it copies on write. Each space hears only its own.
/// munmap, mprotect and madvise over part of a shared table unshare too,
/// inside their own single bracket (the frames outside their range stay).
#[test]
fn faults_on_a_shared_table_bracket_the_unshare() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 2 * TABLE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    for t in 0..2 {
        mm.write(BASE + t * TABLE, &[1]).expect("write");
        mm.write(BASE + t * TABLE + PAGE, &[1]).expect("write");
    }
    let rec = Arc::new(Recorder::default());
    let _sub = mm.register_notifier(rec.clone());
    let child = mm.fork_with(ForkPolicy::SharedTables).expect("fork");
    let crec = Arc::new(Recorder::default());
    let _csub = child.register_notifier(crec.clone());
    rec.take();
    // The child writes first: it unshares (copies) its side of table 0.
    child.write(BASE, &[2]).expect("child write");
    assert_eq!(crec.take(), [pair(BASE, BASE + TABLE, Event::Cow), pair(BASE, BASE + PAGE, Event::Cow)].concat());
    assert_eq!(rec.take(), vec![]);
    // The parent, last sharer of table 0, keeps it: still its unshare, then
    // the copy of the page the child also maps.
    let va = BASE + PAGE;
    mm.write(va, &[3]).expect("cow");
    assert_eq!(rec.take(), [pair(BASE, BASE + TABLE, Event::Cow), pair(va, va + PAGE, Event::Cow)].concat());
    assert_eq!(crec.take(), vec![]);
    // A read fault installing an entry in table 1 (still shared) unshares
    // it; mapping the zero page strands nothing more.
    let t1 = BASE + TABLE;
    common::read(&mm, t1 + 7 * PAGE, 1);
    assert_eq!(rec.take(), pair(t1, t1 + TABLE, Event::Cow));
    // The child's munmap, mprotect and madvise of part of its still shared
    // table 1: one bracket each, over what was asked.
    child.mprotect(t1, PAGE, Prot::READ).expect("mprotect");
    assert_eq!(crec.take(), pair(t1, t1 + PAGE, Event::Protection));
    child.madvise(t1 + PAGE, PAGE, Advice::DontNeed).expect("madvise");
    assert_eq!(crec.take(), pair(t1 + PAGE, t1 + 2 * PAGE, Event::Clear));
    child.munmap(t1 + 2 * PAGE, PAGE).expect("munmap");
    assert_eq!(crec.take(), pair(t1 + 2 * PAGE, t1 + 3 * PAGE, Event::Unmap));
    assert_eq!(rec.take(), vec![]);
    assert_eq!(common::read(&mm, va, 1), [3]);
    assert_eq!(common::read(&child, va, 1), [1]);
    common::check(&mm);
}

/// Reclaim swapping a page out brackets it in every space that maps it,
/// without blocking (it only tries their locks), whether the spaces map it
/// through their own tables or one shared table; shared memory too.
#[test]
fn swap_out_brackets_the_page_in_each_space_without_blocking() {
    for policy in [ForkPolicy::CopyTables, ForkPolicy::SharedTables] {
        let m = swap_machine();
        let mm = m.new_mm().expect("mm");
        mm.mmap(BASE, 4 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        mm.write(BASE + PAGE, &[7]).expect("write");
        let child = mm.fork_with(policy).expect("fork");
        let (rec, crec) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let (_sub, _csub) = (mm.register_notifier(rec.clone()), child.register_notifier(crec.clone()));
        let mut freed = 0;
        for _ in 0..4 {
            freed += m.reclaim(1);
        }
        assert_eq!(freed, 1, "the one anonymous page goes");
        assert_eq!(mm.phys(BASE + PAGE), None);
        for r in [&rec, &crec] {
            assert_eq!(r.take(), pair(BASE + PAGE, BASE + 2 * PAGE, Event::SwapOut));
            assert_eq!(r.nonblocking.load(Ordering::Relaxed), 1);
        }
        // Swapping back in strands nothing (but a read fault installing an
        // entry in a table still shared unshares it first).
        assert_eq!(common::read(&mm, BASE + PAGE, 1), [7]);
        let unshare = if policy == ForkPolicy::SharedTables { pair(BASE, BASE + TABLE, Event::Cow) } else { vec![] };
        assert_eq!(rec.take(), unshare);
        common::check(&mm);
    }
    let m = swap_machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 4 * PAGE, Prot::RW, MapKind::Shared, Placement::Fixed).expect("mmap");
    mm.write(BASE + 2 * PAGE, &[9]).expect("write");
    let rec = Arc::new(Recorder::default());
    let _sub = mm.register_notifier(rec.clone());
    let mut freed = 0;
    for _ in 0..4 {
        freed += m.reclaim(1);
    }
    assert_eq!(freed, 1);
    assert_eq!(rec.take(), pair(BASE + 2 * PAGE, BASE + 3 * PAGE, Event::SwapOut));
    assert_eq!(common::read(&mm, BASE + 2 * PAGE, 1), [9]);
}

/// A subscriber that cannot invalidate without sleeping refuses reclaim's
/// non-blockable start: the page stays, the refuser gets no `end`, and a
/// subscriber that had already started gets its `end` at once.
#[test]
fn a_refused_swap_out_leaves_the_page_and_ends_what_started() {
    let m = swap_machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 4 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    mm.write(BASE, &[7]).expect("write");
    let before = mm.phys(BASE);
    let first = Arc::new(Recorder::default());
    let refuser = Recorder::refusing(Refuse::NonBlockable);
    let (_s1, _s2) = (mm.register_notifier(first.clone()), mm.register_notifier(refuser.clone()));
    let mut freed = 0;
    for _ in 0..4 {
        freed += m.reclaim(1);
    }
    assert_eq!(freed, 0);
    assert_eq!(mm.phys(BASE), before, "the page stays");
    let (log, rlog) = (first.take(), refuser.take());
    assert!(!rlog.is_empty() && rlog.iter().all(|l| *l == ('r', BASE, BASE + PAGE, Event::SwapOut)), "{rlog:?}");
    assert_eq!(log, rlog.iter().flat_map(|_| pair(BASE, BASE + PAGE, Event::SwapOut)).collect::<Vec<_>>());
    // Blocking callers are not refused.
    mm.mprotect(BASE, PAGE, Prot::READ).expect("mprotect");
    assert_eq!(refuser.take(), pair(BASE, BASE + PAGE, Event::Protection));
    common::check(&mm);
}

/// Migration brackets the page in every space that maps it; it may block.
#[test]
fn migration_brackets_the_page_in_each_space() {
    for policy in [ForkPolicy::CopyTables, ForkPolicy::SharedTables] {
        let m = common::machine();
        let mm = m.new_mm().expect("mm");
        mm.mmap(BASE, 4 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        mm.write(BASE + 3 * PAGE, &[5]).expect("write");
        let child = mm.fork_with(policy).expect("fork");
        let (rec, crec) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let (_sub, _csub) = (mm.register_notifier(rec.clone()), child.register_notifier(crec.clone()));
        let old = mm.phys(BASE + 3 * PAGE);
        let new = mm.migrate(BASE + 3 * PAGE).expect("migrate");
        assert_ne!(Some(new), old);
        assert_eq!(child.phys(BASE + 3 * PAGE), Some(new));
        for r in [&rec, &crec] {
            assert_eq!(r.take(), pair(BASE + 3 * PAGE, BASE + 4 * PAGE, Event::Migrate));
            assert_eq!(r.nonblocking.load(Ordering::Relaxed), 0);
        }
        common::check(&mm);
    }
}

/// `Again` is for non-blockable callers. A subscriber that refuses a
/// blockable start anyway is treated as having started: it gets its `end`,
/// and the subscribers after it still get their pair (the operation goes on
/// either way, so skipping them would leave them stale).
#[test]
fn a_refused_blockable_start_still_brackets_every_subscriber() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 4 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    mm.write(BASE, &[1]).expect("write");
    let (before, refuser, after) =
        (Arc::new(Recorder::default()), Recorder::refusing(Refuse::Always), Arc::new(Recorder::default()));
    let _subs: Vec<_> = [&before, &refuser, &after].map(|r| mm.register_notifier(r.clone())).into();
    mm.munmap(BASE, PAGE).expect("munmap");
    assert_eq!(before.take(), pair(BASE, BASE + PAGE, Event::Unmap));
    assert_eq!(refuser.take(), vec![('r', BASE, BASE + PAGE, Event::Unmap), ('e', BASE, BASE + PAGE, Event::Unmap)]);
    assert_eq!(after.take(), pair(BASE, BASE + PAGE, Event::Unmap));
}
