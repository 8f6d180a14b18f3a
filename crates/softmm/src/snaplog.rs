//! Snapshot logs: the address ranges of one space whose entries or
//! mappings changed since a snapshot of it was taken or last restored
//! (`mm/snapshot.rs`). Plain ranges, no memory: a leaf lock per log, and
//! one per space for the list of its logs.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What changed since one snapshot, as page-aligned `[lo, hi)` ranges.
#[derive(Default)]
pub(crate) struct Log {
    ranges: Mutex<Ranges>,
}

/// The two kinds of change: entries (a restore puts the snapshot's back)
/// and mappings (a restore puts the snapshot's VMAs back, then entries).
#[derive(Default, Clone, Debug)]
pub(crate) struct Ranges {
    pub(crate) pages: Vec<(u64, u64)>,
    pub(crate) vmas: Vec<(u64, u64)>,
}

/// Append `[lo, hi)`, extending the last range when they touch (a run of
/// faults in address order), and merging everything once the list doubled
/// since its last merge, so a log stays as long as its distinct ranges.
fn push(v: &mut Vec<(u64, u64)>, lo: u64, hi: u64) {
    if lo >= hi {
        return;
    }
    if let Some(last) = v.last_mut() {
        if last.0 <= lo && hi <= last.1 {
            return;
        }
        if last.1 == lo {
            last.1 = hi;
            return;
        }
    }
    v.push((lo, hi));
    if v.len() >= 64 && v.len().is_power_of_two() {
        merge(v);
    }
}

/// Sort and merge overlapping or touching ranges (in place).
pub(crate) fn merge(v: &mut Vec<(u64, u64)>) {
    v.sort_unstable();
    let mut n = 0;
    for i in 0..v.len() {
        let (lo, hi) = v[i];
        if n > 0 && lo <= v[n - 1].1 {
            v[n - 1].1 = v[n - 1].1.max(hi);
        } else {
            v[n] = (lo, hi);
            n += 1;
        }
    }
    v.truncate(n);
}

impl Log {
    /// The ranges logged, each list sorted and merged (what `SnapLogs`
    /// still holds for it must have been handed over: `SnapLogs::ranges`).
    fn ranges(&self) -> Ranges {
        let mut r = self.ranges.lock().clone();
        merge(&mut r.pages);
        merge(&mut r.vmas);
        r
    }

    /// Forget everything logged (the space equals the snapshot again).
    fn clear(&self) {
        let mut r = self.ranges.lock();
        r.pages.clear();
        r.vmas.clear();
    }

    /// Log pages `[lo, hi)` as changed, before the log is listed (a pinned
    /// page at the snapshot, which its pinner may write without a fault).
    pub(crate) fn pages_changed(&self, lo: u64, hi: u64) {
        push(&mut self.ranges.lock().pages, lo, hi);
    }

    /// Forget what was logged in `[lo, hi)` (`Mm::clear_dirty`).
    fn forget(&self, lo: u64, hi: u64) {
        let mut r = self.ranges.lock();
        cut(&mut r.pages, lo, hi);
        cut(&mut r.vmas, lo, hi);
    }

    /// Take in what every listed log heard since the last hand-over.
    fn append(&self, from: &Ranges) {
        let mut r = self.ranges.lock();
        append(&mut r.pages, &from.pages);
        append(&mut r.vmas, &from.vmas);
    }
}

/// `v` extended by the (merged) ranges of `from`, merged when it grew
/// past twice its merged length, so a log stays as long as its distinct
/// ranges.
fn append(v: &mut Vec<(u64, u64)>, from: &[(u64, u64)]) {
    if from.is_empty() {
        return;
    }
    let before = v.len();
    v.extend_from_slice(from);
    if v.len() >= 64 && v.len().next_power_of_two() > before.next_power_of_two() {
        merge(v);
    }
}

/// Remove `[lo, hi)` from the ranges of `v` (merged first).
fn cut(v: &mut Vec<(u64, u64)>, lo: u64, hi: u64) {
    merge(v);
    let mut out = Vec::with_capacity(v.len() + 1);
    for &(a, b) in v.iter() {
        if a < lo {
            out.push((a, b.min(lo)));
        }
        if b > hi {
            out.push((a.max(hi), b));
        }
    }
    *v = out;
}

/// The logs of one address space's live snapshots.
///
/// A change is logged once, into `pending` under the list's lock (one
/// leaf lock per change, whatever the number of logs), and `pending` is
/// handed over to every listed log (`hand_over`) before anything reads,
/// clears or cuts a log, and before a log joins the list (what was
/// logged before it was taken is not its business). Every log so holds,
/// when read, exactly what it would hold had each change been pushed
/// into it directly.
#[derive(Default)]
pub(crate) struct SnapLogs {
    /// Live logs: 0 lets every changer skip the list's lock. Read relaxed:
    /// logs are added and removed under the space's `mmap_lock` held for
    /// writing, and every change is made under it held.
    active: AtomicUsize,
    list: Mutex<List>,
    /// The space's dirty log (`Mm::dirty_pages`): pages changed since the
    /// latest snapshot was taken or restored, or `Mm::clear_dirty` cleared
    /// them. Made by the first of those, then listed for as long as the
    /// space lives (a page it saw clean stays write-protected until a
    /// fault logs it, whether or not a snapshot still exists).
    dirty: Mutex<Option<Arc<Log>>>,
}

#[derive(Default)]
struct List {
    /// The live logs (a snapshot's leaves when it is dropped).
    logs: Vec<Arc<Log>>,
    /// Changes not yet handed over to `logs`.
    pending: Ranges,
}

impl List {
    /// Hand `pending` over to every listed log.
    fn hand_over(&mut self) {
        if self.pending.pages.is_empty() && self.pending.vmas.is_empty() {
            return;
        }
        merge(&mut self.pending.pages);
        merge(&mut self.pending.vmas);
        for log in &self.logs {
            log.append(&self.pending);
        }
        self.pending.pages.clear();
        self.pending.vmas.clear();
    }

    fn listed(&mut self, log: Arc<Log>, active: &AtomicUsize) {
        self.hand_over();
        self.logs.push(log);
        active.store(self.logs.len(), Ordering::Relaxed);
    }
}

impl SnapLogs {
    /// Start logging into `log` (under the space's `mmap_lock` for writing).
    pub(crate) fn add(&self, log: &Arc<Log>) {
        self.list.lock().listed(log.clone(), &self.active);
        self.clear(&self.dirty_log());
    }

    /// Stop logging into `log` (a snapshot dropped).
    pub(crate) fn remove(&self, log: &Arc<Log>) {
        let mut list = self.list.lock();
        // Before the list changes: the other logs' share of `pending`.
        list.hand_over();
        list.logs.retain(|l| !Arc::ptr_eq(l, log));
        self.active.store(list.logs.len(), Ordering::Relaxed);
    }

    /// The ranges `log` (one of this space's) logged, each list sorted and
    /// merged.
    pub(crate) fn ranges(&self, log: &Log) -> Ranges {
        self.list.lock().hand_over();
        log.ranges()
    }

    /// Forget everything `log` logged (the space equals its snapshot again).
    pub(crate) fn clear(&self, log: &Log) {
        self.list.lock().hand_over();
        log.clear();
    }

    /// Forget what `log` logged in `[lo, hi)` (`Mm::clear_dirty`).
    pub(crate) fn forget(&self, log: &Log, lo: u64, hi: u64) {
        self.list.lock().hand_over();
        log.forget(lo, hi);
    }

    /// The space was restored to a snapshot: nothing is dirty.
    pub(crate) fn restored(&self) {
        if let Some(d) = self.dirty() {
            self.clear(&d);
        }
    }

    /// The dirty log, if a snapshot or `Mm::clear_dirty` started it.
    pub(crate) fn dirty(&self) -> Option<Arc<Log>> {
        self.dirty.lock().clone()
    }

    /// The dirty log, started (empty) if it was not.
    pub(crate) fn dirty_log(&self) -> Arc<Log> {
        let mut d = self.dirty.lock();
        if let Some(log) = d.as_ref() {
            return log.clone();
        }
        let log = Arc::new(Log::default());
        self.list.lock().listed(log.clone(), &self.active);
        *d = Some(log.clone());
        log
    }

    #[inline]
    fn each(&self, f: impl FnOnce(&mut Ranges)) {
        if self.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        f(&mut self.list.lock().pending);
    }

    /// Entries of `[lo, hi)` changed.
    #[inline]
    pub(crate) fn pages_changed(&self, lo: u64, hi: u64) {
        self.each(|r| push(&mut r.pages, lo, hi));
    }

    /// Entries of each of `ranges` changed; the logs `except` hear nothing
    /// of it (logs the caller clears next).
    pub(crate) fn pages_changed_each(&self, ranges: &[(u64, u64)], except: &[&Log]) {
        if self.active.load(Ordering::Relaxed) == 0 || ranges.is_empty() {
            return;
        }
        let mut list = self.list.lock();
        let hears = |l: &&Arc<Log>| !except.iter().any(|e| std::ptr::eq(&***l, *e));
        if !list.logs.iter().any(|l| hears(&l)) {
            return;
        }
        list.hand_over();
        let mut r = Ranges { pages: ranges.to_vec(), vmas: Vec::new() };
        merge(&mut r.pages);
        for log in list.logs.iter().filter(hears) {
            log.append(&r);
        }
    }

    /// Mappings of `[lo, hi)` changed.
    pub(crate) fn vmas_changed(&self, lo: u64, hi: u64) {
        self.each(|r| push(&mut r.vmas, lo, hi));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ranges_extend_and_merge() {
        let mut v = Vec::new();
        push(&mut v, 0x1000, 0x2000);
        push(&mut v, 0x2000, 0x3000);
        push(&mut v, 0x1000, 0x2000);
        push(&mut v, 0x8000, 0x9000);
        push(&mut v, 0x0, 0x1000);
        assert_eq!(v, [(0x1000, 0x3000), (0x8000, 0x9000), (0, 0x1000)]);
        merge(&mut v);
        assert_eq!(v, [(0, 0x3000), (0x8000, 0x9000)]);
    }

    #[test]
    fn only_live_logs_hear() {
        let logs = SnapLogs::default();
        logs.pages_changed(0, 0x1000); // nobody listens
        let a = Arc::new(Log::default());
        logs.add(&a);
        logs.pages_changed(0x1000, 0x2000);
        let b = Arc::new(Log::default());
        logs.add(&b);
        logs.vmas_changed(0x4000, 0x5000);
        logs.remove(&a);
        logs.pages_changed(0x6000, 0x7000);
        assert_eq!(logs.ranges(&a).pages, [(0x1000, 0x2000)]);
        assert_eq!(logs.ranges(&a).vmas, [(0x4000, 0x5000)]);
        assert_eq!(logs.ranges(&b).pages, [(0x6000, 0x7000)]);
        // The dirty log, started by the first snapshot, heard everything
        // since the latest one.
        let dirty = logs.dirty().unwrap();
        assert_eq!(logs.ranges(&dirty).pages, [(0x6000, 0x7000)]);
        assert_eq!(logs.ranges(&dirty).vmas, [(0x4000, 0x5000)]);
        // A restore's changes skip the logs it clears.
        logs.pages_changed_each(&[(0x9000, 0xa000), (0xb000, 0xc000)], &[&b]);
        assert_eq!(logs.ranges(&b).pages, [(0x6000, 0x7000)]);
        assert_eq!(logs.ranges(&dirty).pages, [(0x6000, 0x7000), (0x9000, 0xa000), (0xb000, 0xc000)]);
    }

    #[test]
    fn forget_cuts_ranges() {
        let log = Log::default();
        log.pages_changed(0x1000, 0x5000);
        log.pages_changed(0x8000, 0x9000);
        log.forget(0x2000, 0x3000);
        log.forget(0x4000, 0x8800);
        assert_eq!(log.ranges().pages, [(0x1000, 0x2000), (0x3000, 0x4000), (0x8800, 0x9000)]);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! A restore and a snapshot racing a write fault from another thread of
    //! the space, under loom. Modelled on the real protocol: a fault reads
    //! the number of live logs (relaxed), changes the entry and logs its
    //! page into the list's `pending` (under the list's lock), all with the
    //! space's `mmap_lock` held for reading (the page is logged when its
    //! `Change` drops, before the lock is released); a snapshot
    //! (`SnapLogs::add`: hand `pending` over, list the log) and a restore
    //! (`mm/snapshot.rs`) run with it held for writing: the restore reads
    //! the log (`SnapLogs::ranges`: hand over, then read), puts the
    //! snapshot's entries back on the logged pages, then clears the log
    //! (`SnapLogs::clear`: hand over, then clear). Checked: after both, an
    //! entry that differs from the snapshot's is logged (in the log or
    //! still pending for it), so the next restore puts it back: no change
    //! is lost.
    //!
    //! The twins break one rule each and loom finds the lost change: a
    //! restore that does not exclude faults (the fault's new entry lands
    //! between the restore's copy-back and its clearing of the log), a
    //! restore that reads the log without handing `pending` over first,
    //! and a fault that reads the number of logs before taking the lock (it
    //! misses the snapshot taken meanwhile).
    use crate::sync::{AtomicU64, AtomicUsize, Ordering};
    use loom::sync::{Arc, Mutex, RwLock};

    /// The snapshot's entry for the page, and the one a write fault makes.
    const SNAP: u64 = 1;
    const WRITTEN: u64 = 2;

    /// `SnapLogs::list` with one log that may be listed.
    #[derive(Default)]
    struct List {
        listed: bool,
        /// The pages logged and not handed over.
        pending: Vec<u64>,
        /// The log's pages.
        log: Vec<u64>,
    }

    impl List {
        fn hand_over(&mut self) {
            if self.listed {
                let p = std::mem::take(&mut self.pending);
                self.log.extend(p);
            }
            self.pending.clear();
        }
    }

    #[derive(Default)]
    struct Space {
        mmap_lock: RwLock<()>,
        /// `SnapLogs::active`.
        active: AtomicUsize,
        list: Mutex<List>,
        /// The page's entry.
        pte: AtomicU64,
    }

    impl Space {
        /// Whether the page is logged, as the next reader sees it.
        fn logged(&self) -> bool {
            let mut l = self.list.lock().unwrap();
            l.hand_over();
            !l.log.is_empty()
        }
    }

    /// A write fault on a write-protected page (`active_first`: the twin
    /// that reads the number of logs before the lock).
    fn fault(s: &Space, active_first: bool) {
        let early = s.active.load(Ordering::Relaxed);
        let _g = s.mmap_lock.read().unwrap();
        let active = if active_first { early } else { s.active.load(Ordering::Relaxed) };
        s.pte.store(WRITTEN, Ordering::Relaxed);
        if active > 0 {
            s.list.lock().unwrap().pending.push(0);
        }
    }

    /// `exclusive: false` is the twin that restores without the lock,
    /// `hand_over: false` the one that reads the log without handing
    /// `pending` over.
    fn restore(s: &Space, exclusive: bool, hand_over: bool) {
        let _g = exclusive.then(|| s.mmap_lock.write().unwrap());
        let logged = {
            let mut l = s.list.lock().unwrap();
            if hand_over {
                l.hand_over();
            }
            l.log.clone()
        };
        if !logged.is_empty() {
            s.pte.store(SNAP, Ordering::Relaxed);
        }
        let mut l = s.list.lock().unwrap();
        l.hand_over();
        l.log.clear();
    }

    fn fault_vs_restore(exclusive: bool, hand_over: bool) {
        loom::model(move || {
            // A write since the snapshot, logged (not yet handed over); a
            // second thread writes the page again as the space is restored.
            let s = Arc::new(Space {
                active: AtomicUsize::new(1),
                pte: AtomicU64::new(WRITTEN),
                list: Mutex::new(List { listed: true, pending: vec![0], log: Vec::new() }),
                ..Space::default()
            });
            let t = {
                let s = s.clone();
                loom::thread::spawn(move || fault(&s, false))
            };
            restore(&s, exclusive, hand_over);
            t.join().unwrap();
            assert!(
                s.pte.load(Ordering::Relaxed) == SNAP || s.logged(),
                "the entry differs from the snapshot's and nothing logged it"
            );
        });
    }

    #[test]
    fn loom_a_fault_racing_a_restore_is_restored_or_logged() {
        fault_vs_restore(true, true);
    }

    #[test]
    #[should_panic(expected = "nothing logged it")]
    fn loom_a_restore_that_lets_faults_in_loses_a_change() {
        fault_vs_restore(false, true);
    }

    #[test]
    #[should_panic(expected = "nothing logged it")]
    fn loom_a_restore_that_reads_without_handing_over_loses_a_change() {
        fault_vs_restore(true, false);
    }

    fn fault_vs_snapshot(active_first: bool) {
        loom::model(move || {
            let s = Arc::new(Space { pte: AtomicU64::new(SNAP), ..Space::default() });
            let t = {
                let s = s.clone();
                loom::thread::spawn(move || fault(&s, active_first))
            };
            // The snapshot copies the entry (fork) and starts its log.
            let taken = {
                let _g = s.mmap_lock.write().unwrap();
                let mut l = s.list.lock().unwrap();
                l.hand_over();
                l.listed = true;
                drop(l);
                s.active.store(1, Ordering::Relaxed);
                s.pte.load(Ordering::Relaxed)
            };
            t.join().unwrap();
            assert!(s.pte.load(Ordering::Relaxed) == taken || s.logged(), "a change after the snapshot went unlogged");
        });
    }

    #[test]
    fn loom_a_fault_racing_a_snapshot_is_in_it_or_logged() {
        fault_vs_snapshot(false);
    }

    #[test]
    #[should_panic(expected = "went unlogged")]
    fn loom_a_fault_that_counts_logs_before_its_lock_misses_a_snapshot() {
        fault_vs_snapshot(true);
    }
}
