//! Snapshot logs: the address ranges of one space whose entries or
//! mappings changed since a snapshot of it was taken or last restored
//! (`mm/snapshot.rs`). Plain ranges, no memory: a leaf lock per log, and
//! one per space for the list of its logs.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

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

/// Sort and merge overlapping or touching ranges.
pub(crate) fn merge(v: &mut Vec<(u64, u64)>) {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for &(lo, hi) in v.iter() {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    *v = out;
}

impl Log {
    /// The ranges logged, each list sorted and merged.
    pub(crate) fn ranges(&self) -> Ranges {
        let mut r = self.ranges.lock().clone();
        merge(&mut r.pages);
        merge(&mut r.vmas);
        r
    }

    /// Forget everything logged (the space equals the snapshot again).
    pub(crate) fn clear(&self) {
        let mut r = self.ranges.lock();
        r.pages.clear();
        r.vmas.clear();
    }

    /// Log pages `[lo, hi)` as changed (a pinned page at the snapshot,
    /// which its pinner may write without a fault).
    pub(crate) fn pages_changed(&self, lo: u64, hi: u64) {
        push(&mut self.ranges.lock().pages, lo, hi);
    }
}

/// The logs of one address space's live snapshots.
#[derive(Default)]
pub(crate) struct SnapLogs {
    /// Live logs: 0 lets every changer skip the list's lock. Read relaxed:
    /// logs are added and removed under the space's `mmap_lock` held for
    /// writing, and every change is made under it held.
    active: AtomicUsize,
    logs: Mutex<Vec<Weak<Log>>>,
    /// The log of the latest snapshot taken or restored (`Mm::dirty_pages`).
    latest: Mutex<Weak<Log>>,
}

impl SnapLogs {
    /// Start logging into `log` (under the space's `mmap_lock` for writing).
    pub(crate) fn add(&self, log: &Arc<Log>) {
        let mut logs = self.logs.lock();
        logs.retain(|w| w.strong_count() > 0);
        logs.push(Arc::downgrade(log));
        self.active.store(logs.len(), Ordering::Relaxed);
        drop(logs);
        self.set_latest(log);
    }

    /// Stop logging into `log` (a snapshot dropped).
    pub(crate) fn remove(&self, log: &Arc<Log>) {
        let mut logs = self.logs.lock();
        logs.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(log)));
        self.active.store(logs.len(), Ordering::Relaxed);
    }

    /// `log` is the one `Mm::dirty_pages` reads.
    pub(crate) fn set_latest(&self, log: &Arc<Log>) {
        *self.latest.lock() = Arc::downgrade(log);
    }

    /// The latest snapshot's log, if that snapshot is alive.
    pub(crate) fn latest(&self) -> Option<Arc<Log>> {
        self.latest.lock().upgrade()
    }

    fn each(&self, f: impl Fn(&mut Ranges)) {
        if self.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        for log in self.logs.lock().iter().filter_map(Weak::upgrade) {
            f(&mut log.ranges.lock());
        }
    }

    /// Entries of `[lo, hi)` changed.
    pub(crate) fn pages_changed(&self, lo: u64, hi: u64) {
        self.each(|r| push(&mut r.pages, lo, hi));
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
        assert_eq!(a.ranges().pages, [(0x1000, 0x2000)]);
        assert_eq!(a.ranges().vmas, [(0x4000, 0x5000)]);
        assert_eq!(b.ranges().pages, [(0x6000, 0x7000)]);
        assert!(Arc::ptr_eq(&logs.latest().unwrap(), &b));
    }
}
