//! MMU notifiers (seeds 002, 004): how secondary MMUs — a shadow TLB, a
//! device's mirror of the page tables, an exporter mapping this space into
//! another — learn that translations they copied are about to change.
//!
//! A subscriber implements [`MmuNotifier`] and registers with
//! [`crate::Mm::register_notifier`]. Every operation that can strand a
//! secondary translation brackets its page-table changes with
//! `invalidate_range_start(range)` / `invalidate_range_end(range)`, once per
//! operation and range (never once per page): between the two the
//! subscriber must not create new translations for the range, and after
//! `start` returns it must no longer use old ones. `release` comes once, at
//! teardown.
//!
//! # Registration without a global stop
//! The subscriber list is an immutable snapshot (`Arc<[..]>`) replaced on
//! every (un)registration, read-copy-update style. An operation takes the
//! snapshot at `start` and uses the same one for `end`, so a subscriber
//! gets either both calls or neither (registration racing an operation
//! cannot split a pair). Unregistration publishes a snapshot without the
//! subscriber and then waits for the grace period: until every operation
//! holding an older snapshot has dropped it (the snapshot's reference count
//! says so). That is SRCU's guarantee — after `unregister` returns, no
//! callback into the subscriber is running or will run — with the reference
//! count of the snapshot as the per-epoch reader count. With no subscriber
//! the whole cost on every path is one load (`active`).
//!
//! Registration (and inserting an interval notifier) also takes the
//! space's `mmap_lock` for writing, as Linux's `mmu_notifier_register`
//! does; unregistration does not. That is one space's faults waiting for a
//! moment, not a global stop, and it is what lets a fault look at `active`
//! once, when it begins, and run without a single bracket when nobody
//! listens: a subscriber cannot appear between a fault's look at a page and
//! its change of the page, which would leave the subscriber holding a
//! translation of the page's old frame.
//!
//! # Interval notifiers
//! [`IntervalNotifier`] (Linux's `mmu_interval_notifier`) covers one range
//! and carries a sequence count for the collision-retry pattern: a
//! secondary fault handler takes `seq = read_begin()`, looks the page up in
//! the primary, and installs its translation under its own lock only if
//! `!read_retry(seq)`; the invalidate callback takes the same lock and
//! calls `set_seq(cur_seq)`, so an invalidation of this interval makes the
//! install retry. As in Linux, the address space keeps one sequence, odd
//! while invalidations overlapping any interval are in flight; each
//! interval keeps the value its callback last recorded (`set_seq`), always
//! odd. `read_begin` returns the interval's value (waiting while it equals
//! the space's, i.e. while this interval is being invalidated) and
//! `read_retry` compares the interval's value with it: an invalidation of
//! another interval, or one whose callback did not call `set_seq`, makes no
//! retry.
//!
//! # A build without notifiers
//! `RUSTFLAGS="--cfg softmm_no_notifiers"` compiles the brackets out (see
//! [`NOTIFIERS_COMPILED`]). It exists only so `softmm bench notifier` can
//! compare the paths that carry brackets with and without them
//! (`scripts/bench-notifier.sh`); nothing else should use it.

use crate::error::{Error, Result};
// Protocol state (the sequence, the intervals' values, the lists and the
// snapshot's reader count) is `crate::sync`'s, so the loom models below
// run this code; subscribers and the owner are plain `std` `Arc`s.
use crate::sync::{Arc as SyncArc, AtomicU64, AtomicUsize, Mutex, Ordering};
use std::sync::{Arc, Weak};

/// Whether MMU notifiers are compiled in: `false` in a build with
/// `--cfg softmm_no_notifiers`. There every gate (`Notifiers::any` and
/// `Notifiers::end`) is a constant `false`, so the compiler drops the bracket code and
/// each path is what it would be without notifiers. Such a build still
/// accepts [`crate::Mm::register_notifier`] (a no-op in effect: the
/// subscriber is never called, not even `release`), while
/// [`crate::Mm::insert_interval_notifier`] fails with
/// [`Error::Unsupported`]; callers that need callbacks check this constant.
pub const NOTIFIERS_COMPILED: bool = !cfg!(softmm_no_notifiers);

/// Why a range is being invalidated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// munmap, or a `MAP_FIXED` mapping replacing what was there.
    Unmap,
    /// Pages dropped while the mapping stays (`madvise(DONTNEED)`).
    Clear,
    /// Permissions reduced (mprotect; fork write-protecting for COW).
    Protection,
    /// A page gets a new frame (copy-on-write) or a shared page table is
    /// copied for this space (unshare).
    Cow,
    /// Pages leave memory for the swap device.
    SwapOut,
    /// Frames move (migration, compaction).
    Migrate,
    /// The address space is being torn down.
    Release,
    /// The space is put back to a snapshot (`Mm::restore`): every page and
    /// mapping changed since may change again, in one bracket.
    Restore,
}

/// One invalidation: `[start, end)`, why, and whether the caller may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First address of the range.
    pub start: u64,
    /// The address after its last byte.
    pub end: u64,
    /// Why the range is invalidated.
    pub event: Event,
    /// `false` when the caller cannot sleep (reclaim under a busy address
    /// space): a subscriber that would have to wait answers `Err(Again)`.
    pub blockable: bool,
}

/// A subscriber's refusal to invalidate now without blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Again;

/// A secondary MMU's view of an address space's changes.
pub trait MmuNotifier: Send + Sync {
    /// Translations of `range` are about to change: stop using them. May
    /// return `Err(Again)` only when `!range.blockable` (a blockable
    /// caller makes the change anyway and still calls `end`).
    fn invalidate_range_start(&self, range: &Range) -> std::result::Result<(), Again>;
    /// The change is done; translations may be created again.
    fn invalidate_range_end(&self, range: &Range);
    /// Clear the secondary's accessed bits in `[start, end)`; whether any
    /// was set. Reclaim asks it when aging a page. (Linux's `test_young`,
    /// the same question without clearing, has no caller here: every look
    /// at whether a page was accessed is reclaim's, which ages.)
    fn clear_young(&self, _start: u64, _end: u64) -> bool {
        false
    }
    /// The address space is gone; called once, after the `Release`
    /// bracket over the whole user range. No `start` follows; the `end` of
    /// a bracket reclaim or migration opened before the exit may.
    fn release(&self) {}
}

/// The subscriber list as operations see it; its reader count is the
/// grace period's (see the module comment).
type Snapshot = SyncArc<[Arc<dyn MmuNotifier>]>;

fn snapshot(v: Vec<Arc<dyn MmuNotifier>>) -> Snapshot {
    #[cfg(loom)]
    return SyncArc::from_std(Arc::from(v));
    #[cfg(not(loom))]
    SyncArc::from(v)
}

/// The subscribers of one address space.
pub(crate) struct Notifiers {
    /// Number of subscribers: the one load every path pays.
    active: AtomicUsize,
    list: Mutex<Snapshot>,
    /// Interval notifiers' shared sequence (Linux's `invalidate_seq`):
    /// odd while an invalidation that overlaps an interval is between its
    /// start and its end. Changed only under `itree`.
    seq: SyncArc<AtomicU64>,
    itree: Mutex<Itree>,
}

/// The interval notifiers and the invalidations that may concern them
/// (Linux's `subscriptions->lock` protects the same).
#[derive(Default)]
struct Itree {
    intervals: Vec<SyncArc<IntervalInner>>,
    /// Invalidations in flight that started while an interval existed
    /// (Linux's `active_invalidate_ranges`); the sequence turns even at 0.
    in_flight: usize,
}

/// The sequence of an idle address space: even, and its predecessor (the
/// value of a new interval) odd without wrapping.
const SEQ_IDLE_START: u64 = 2;

impl Default for Notifiers {
    fn default() -> Self {
        Notifiers {
            active: AtomicUsize::new(0),
            list: Mutex::new(snapshot(Vec::new())),
            seq: SyncArc::new(AtomicU64::new(SEQ_IDLE_START)),
            itree: Mutex::new(Itree::default()),
        }
    }
}

/// An invalidation in progress: the snapshot it started with, for `end`.
#[must_use = "an invalidation must be ended"]
pub(crate) struct Invalidation {
    range: Range,
    subs: Option<Snapshot>,
    /// Whether it counts in `Itree::in_flight`.
    intervals: bool,
}

impl Notifiers {
    /// Whether anyone listens (one load; a constant `false` when notifiers
    /// are compiled out, which removes every bracket behind it).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        NOTIFIERS_COMPILED && self.active.load(Ordering::Acquire) != 0
    }

    /// `invalidate_range_start` to every subscriber. On `Err(Again)` from
    /// one when `!range.blockable`, those already started get their `end`
    /// and the caller must back off. A blockable caller goes on whatever
    /// the answers, so a refusal is then taken as a start: the refuser gets
    /// its `end` and the subscribers after it still get their pair (ending
    /// the others early or skipping them would let the change happen
    /// outside their bracket).
    #[inline]
    pub(crate) fn start(&self, range: Range) -> Result<Invalidation> {
        // The check inline at the caller, the work out of line: as one
        // out-of-line function the compiler saved six registers and set up
        // a 216-byte frame before the check, which cost the cheapest
        // bracketed operations (madvise or mprotect of one page) several
        // per cent with nobody listening (`softmm bench notifier`).
        if !self.any() {
            return Ok(Invalidation { range, subs: None, intervals: false });
        }
        self.start_subscribed(range)
    }

    #[inline(never)]
    fn start_subscribed(&self, range: Range) -> Result<Invalidation> {
        let subs = self.list.lock().clone();
        for (i, s) in subs.iter().enumerate() {
            if s.invalidate_range_start(&range).is_err() && !range.blockable {
                for done in &subs[..i] {
                    done.invalidate_range_end(&range);
                }
                return Err(Error::Again);
            }
        }
        let mut inv = Invalidation { range, subs: Some(subs), intervals: false };
        if self.invalidate_intervals(&range, &mut inv.intervals).is_err() && !range.blockable {
            self.end(inv);
            return Err(Error::Again);
        }
        Ok(inv)
    }

    /// `start` for a caller that may block (which `start` never refuses).
    pub(crate) fn start_blocking(&self, start: u64, end: u64, event: Event) -> Invalidation {
        let range = Range { start, end, event, blockable: true };
        self.start(range).unwrap_or(Invalidation { range, subs: None, intervals: false })
    }

    /// `invalidate_range_end` to the subscribers `start` reached.
    #[inline]
    pub(crate) fn end(&self, inv: Invalidation) {
        // `start` never filled `inv` in a build without notifiers; saying so
        // as a constant lets the compiler drop the rest. An invalidation
        // that reached nobody ends inline (see `start`).
        if !NOTIFIERS_COMPILED || (inv.subs.is_none() && !inv.intervals) {
            return;
        }
        self.end_subscribed(inv);
    }

    #[inline(never)]
    fn end_subscribed(&self, inv: Invalidation) {
        if inv.intervals {
            let mut t = self.itree.lock();
            t.in_flight -= 1;
            if t.in_flight == 0 && self.seq.load(Ordering::Relaxed) % 2 == 1 {
                self.seq.fetch_add(1, Ordering::AcqRel); // even: read_begin may go on
            }
        }
        if let Some(subs) = inv.subs {
            for s in subs.iter() {
                s.invalidate_range_end(&inv.range);
            }
        }
    }

    /// Any subscriber's accessed bit over `[start, end)`, clearing them.
    pub(crate) fn clear_young(&self, start: u64, end: u64) -> bool {
        if !self.any() {
            return false;
        }
        let subs = self.list.lock().clone();
        subs.iter().fold(false, |young, s| s.clear_young(start, end) | young)
    }

    /// `release` to every subscriber (teardown), then forget them.
    pub(crate) fn release(&self) {
        if !self.any() {
            return;
        }
        let subs = std::mem::replace(&mut *self.list.lock(), snapshot(Vec::new()));
        self.active.fetch_sub(subs.len(), Ordering::AcqRel);
        for s in subs.iter() {
            s.release();
        }
    }

    pub(crate) fn register(&self, sub: Arc<dyn MmuNotifier>) {
        let mut list = self.list.lock();
        let mut v: Vec<Arc<dyn MmuNotifier>> = list.iter().cloned().collect();
        v.push(sub);
        *list = snapshot(v);
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    /// Remove `sub` and wait for the grace period (see the module comment).
    fn unregister(&self, sub: &Arc<dyn MmuNotifier>) {
        Self::wait_for_readers(self.unpublish(sub));
    }

    /// Publish a snapshot without `sub`; returns the one replaced.
    fn unpublish(&self, sub: &Arc<dyn MmuNotifier>) -> Snapshot {
        let mut list = self.list.lock();
        let v: Vec<Arc<dyn MmuNotifier>> = list.iter().filter(|s| !Arc::ptr_eq(s, sub)).cloned().collect();
        if v.len() < list.len() {
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
        std::mem::replace(&mut *list, snapshot(v))
    }

    /// The grace period: operations that started with `old` hold a clone
    /// until their end.
    fn wait_for_readers(old: Snapshot) {
        let mut spins = 0u32;
        while SyncArc::strong_count(&old) > 1 {
            spins += 1;
            if cfg!(loom) || spins < 100 {
                crate::sync::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
    }

    /// Count an invalidation in flight while intervals exist (until its
    /// `end`), make the sequence odd if it overlaps one, and call those
    /// intervals' callbacks with it (Linux's `mn_itree_invalidate`).
    fn invalidate_intervals(&self, range: &Range, counted: &mut bool) -> std::result::Result<(), Again> {
        let (hits, cur) = {
            let mut t = self.itree.lock();
            if t.intervals.is_empty() {
                return Ok(());
            }
            // Counted even without an overlap: an interval inserted before
            // its end cannot know what it changed (see `IntervalNotifier::new`).
            t.in_flight += 1;
            *counted = true;
            let hits: Vec<SyncArc<IntervalInner>> =
                t.intervals.iter().filter(|iv| iv.start < range.end && range.start < iv.end).cloned().collect();
            if hits.is_empty() {
                return Ok(());
            }
            (hits, self.make_odd())
        };
        let mut r = Ok(());
        for iv in hits {
            if !iv.ops.invalidate(&IntervalHandle { inner: &iv }, range, cur) {
                r = Err(Again);
            }
        }
        r
    }

    /// The sequence, made odd (invalidating) if it was not; under `itree`.
    fn make_odd(&self) -> u64 {
        let s = self.seq.load(Ordering::Relaxed);
        if s % 2 == 1 {
            return s;
        }
        self.seq.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// What holds a [`Notifiers`] list: the address space. A subscription
/// reaches its list through it when dropped, so this module needs no name
/// for the address space's type: `mm` calls notifiers, never the reverse.
pub(crate) trait NotifierOwner: Send + Sync {
    fn notifiers(&self) -> &Notifiers;
}

/// A registration; unregisters (waiting for the grace period) when dropped.
pub struct Subscription {
    owner: Weak<dyn NotifierOwner>,
    sub: Arc<dyn MmuNotifier>,
}

impl Subscription {
    /// Register `sub` with `owner`'s list. The caller holds the owner's
    /// `mmap_lock` for writing (see the module comment).
    pub(crate) fn new<O: NotifierOwner + 'static>(owner: &Arc<O>, sub: Arc<dyn MmuNotifier>) -> Self {
        owner.notifiers().register(sub.clone());
        let owner: Weak<dyn NotifierOwner> = Arc::downgrade(owner) as Weak<O>;
        Subscription { owner, sub }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade() {
            owner.notifiers().unregister(&self.sub);
        }
    }
}

/// Callbacks of an interval notifier.
pub trait IntervalOps: Send + Sync {
    /// `range` overlapping the interval is being invalidated, with sequence
    /// `cur_seq`: take the secondary's lock, drop its translations in the
    /// range, call `handle.set_seq(cur_seq)` (without it, `read_retry`
    /// does not see this invalidation). Return `false` to refuse a
    /// non-blockable invalidation.
    fn invalidate(&self, handle: &IntervalHandle<'_>, range: &Range, cur_seq: u64) -> bool;
}

pub(crate) struct IntervalInner {
    start: u64,
    end: u64,
    /// The sequence of the last invalidation its callback handled
    /// (`set_seq`; Linux's `interval_sub->invalidate_seq`): always odd.
    seen: AtomicU64,
    mm_seq: SyncArc<AtomicU64>,
    ops: Arc<dyn IntervalOps>,
}

/// What an interval callback gets to record the sequence.
pub struct IntervalHandle<'a> {
    inner: &'a IntervalInner,
}

impl IntervalHandle<'_> {
    /// Record that the invalidation with `seq` (the callback's `cur_seq`)
    /// was handled, under the secondary's lock, as Linux's
    /// `mmu_interval_set_seq`: from now on `read_retry` answers true for
    /// any `read_begin` value taken before.
    pub fn set_seq(&self, seq: u64) {
        self.inner.seen.store(seq, Ordering::Release);
    }
}

/// A subscription to one range with a sequence count (Linux's
/// `mmu_interval_notifier`). Removed when dropped.
pub struct IntervalNotifier {
    pub(crate) inner: SyncArc<IntervalInner>,
    owner: Weak<dyn NotifierOwner>,
}

impl IntervalNotifier {
    /// Check the interval (before the caller takes the owner's
    /// `mmap_lock`): its end.
    pub(crate) fn check(start: u64, len: u64) -> Result<u64> {
        if !NOTIFIERS_COMPILED {
            return Err(Error::Unsupported("MMU notifiers (this build has --cfg softmm_no_notifiers)"));
        }
        start.checked_add(len).filter(|_| len > 0).ok_or(Error::Invalid("empty or overflowing interval"))
    }

    /// Insert `[start, end)` (from [`check`](Self::check)) into `owner`'s
    /// list. As `Subscription::new`, the caller holds the owner's
    /// `mmap_lock` for writing: not in the middle of a fault.
    pub(crate) fn new<O: NotifierOwner + 'static>(
        owner: &Arc<O>,
        start: u64,
        end: u64,
        ops: Arc<dyn IntervalOps>,
    ) -> Self {
        let n = owner.notifiers();
        let mut t = n.itree.lock();
        // An invalidation in flight (reclaim, which does not take the
        // `mmap_lock`) may be changing this range without having called
        // us: count the interval as invalidated by it, so `read_begin`
        // waits for its end (Linux's `__mmu_interval_notifier_insert`).
        // Otherwise the interval starts odd and unequal to the sequence.
        let seen = if t.in_flight > 0 { n.make_odd() } else { n.seq.load(Ordering::Relaxed) - 1 };
        let inner = SyncArc::new(IntervalInner { start, end, seen: AtomicU64::new(seen), mm_seq: n.seq.clone(), ops });
        t.intervals.push(inner.clone());
        drop(t);
        n.active.fetch_add(1, Ordering::AcqRel);
        let owner: Weak<dyn NotifierOwner> = Arc::downgrade(owner) as Weak<O>;
        IntervalNotifier { inner, owner }
    }

    /// Start of a secondary fault: the value to check with `read_retry`
    /// (Linux's `mmu_interval_read_begin`). Waits while this interval is
    /// being invalidated (its value equals the space's odd sequence);
    /// invalidations of other ranges do not make it wait.
    pub fn read_begin(&self) -> u64 {
        let seq = self.inner.seen.load(Ordering::Acquire);
        // Values only grow: if the space's sequence has moved past `seq`,
        // any invalidation of this interval not yet handled will call
        // `set_seq` with a newer value, which `read_retry` sees.
        while self.inner.mm_seq.load(Ordering::Acquire) == seq {
            crate::sync::yield_now();
        }
        seq
    }

    /// Whether this interval was invalidated (its callback called
    /// `set_seq`) since `read_begin` returned `seq`: the translation just
    /// looked up must not be installed (Linux's `mmu_interval_read_retry`;
    /// call under the same lock the callback takes around `set_seq`).
    pub fn read_retry(&self, seq: u64) -> bool {
        self.inner.seen.load(Ordering::Acquire) != seq
    }

    /// The covered range.
    pub fn range(&self) -> (u64, u64) {
        (self.inner.start, self.inner.end)
    }

    /// The interval's value: the last recorded by `set_seq` (odd), or the
    /// odd value it started with.
    pub fn seen_seq(&self) -> u64 {
        self.inner.seen.load(Ordering::Acquire)
    }
}

impl Drop for IntervalNotifier {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade() {
            let n = owner.notifiers();
            n.itree.lock().intervals.retain(|iv| !SyncArc::ptr_eq(iv, &self.inner));
            n.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The protocols of this module under loom, running the real
    //! `Notifiers`, `IntervalNotifier` and `Subscription`: (1) a secondary
    //! fault (`read_begin`, look-up, `read_retry` under the secondary's
    //! lock) against an invalidation (`start`, the change, `end`) — the
    //! secondary never keeps a translation the primary replaced; (2) an
    //! interval registered (under the `mmap_lock` for writing) against a
    //! fault that looks once, when it begins, whether anyone listens;
    //! (3) unregistration against an invalidation — after it returns no
    //! callback runs, and no subscriber gets an `end` without its `start`.
    //! Modelled: the primary's one entry, the secondary's copy of it
    //! (under its own lock) and the `mmap_lock`.
    use super::*;
    use loom::sync::RwLock;

    struct World {
        n: Notifiers,
        mmap_lock: RwLock<()>,
        /// The primary's translation of the one page.
        pte: AtomicU64,
    }

    impl NotifierOwner for World {
        fn notifiers(&self) -> &Notifiers {
            &self.n
        }
    }

    fn world() -> Arc<World> {
        Arc::new(World { n: Notifiers::default(), mmap_lock: RwLock::new(()), pte: AtomicU64::new(1) })
    }

    /// The secondary MMU: its copy of the translation.
    #[derive(Default)]
    struct Shadow(Mutex<Option<u64>>);

    impl IntervalOps for Shadow {
        fn invalidate(&self, handle: &IntervalHandle<'_>, _range: &Range, cur_seq: u64) -> bool {
            let mut g = self.0.lock();
            *g = None;
            handle.set_seq(cur_seq);
            true
        }
    }

    /// A secondary fault. `locked`: `read_retry` and the install under the
    /// lock the callback takes (as documented); else the check comes first.
    fn secondary_fault(w: &World, iv: &IntervalNotifier, sh: &Shadow, locked: bool) {
        let seq = iv.read_begin();
        let t = {
            let _r = w.mmap_lock.read().unwrap();
            w.pte.load(Ordering::Acquire)
        };
        if locked {
            let mut g = sh.0.lock();
            if !iv.read_retry(seq) {
                *g = Some(t);
            }
        } else if !iv.read_retry(seq) {
            *sh.0.lock() = Some(t);
        }
    }

    /// A COW fault of the primary: under the `mmap_lock` (read), `start`
    /// looks once whether anyone listens; the frame changes; `end`.
    fn primary_cow(w: &World) {
        let _r = w.mmap_lock.read().unwrap();
        let inv = w.n.start_blocking(0, 0x1000, Event::Cow);
        w.pte.store(2, Ordering::Release);
        w.n.end(inv);
    }

    fn check(sh: &Shadow) {
        let kept = *sh.0.lock();
        assert!(kept.is_none() || kept == Some(2), "stale translation {kept:?} kept by the secondary");
    }

    fn fault_vs_invalidate(locked: bool) {
        loom::model(move || {
            let w = world();
            let sh = Arc::new(Shadow::default());
            let iv = IntervalNotifier::new(&w, 0, 0x1000, sh.clone());
            let p = {
                let w = w.clone();
                loom::thread::spawn(move || primary_cow(&w))
            };
            secondary_fault(&w, &iv, &sh, locked);
            p.join().unwrap();
            check(&sh);
        });
    }

    #[test]
    fn fault_vs_invalidate_with_the_sequence_count() {
        fault_vs_invalidate(true);
    }

    /// The model can fail: `read_retry` outside the secondary's lock.
    #[test]
    #[should_panic(expected = "stale translation")]
    fn read_retry_outside_the_lock_is_caught() {
        fault_vs_invalidate(false);
    }

    /// `locked`: registration under the `mmap_lock` for writing, as
    /// `Mm::insert_interval_notifier` does.
    fn registration_vs_fault(locked: bool) {
        loom::model(move || {
            let w = world();
            let sh = Arc::new(Shadow::default());
            let p = {
                let w = w.clone();
                loom::thread::spawn(move || primary_cow(&w))
            };
            let iv = {
                let _w = locked.then(|| w.mmap_lock.write().unwrap());
                IntervalNotifier::new(&w, 0, 0x1000, sh.clone())
            };
            secondary_fault(&w, &iv, &sh, true);
            p.join().unwrap();
            check(&sh);
        });
    }

    #[test]
    fn registration_vs_a_fault_that_looks_once() {
        registration_vs_fault(true);
    }

    /// The model can fail: registration without the `mmap_lock`.
    #[test]
    #[should_panic(expected = "stale translation")]
    fn registration_without_the_mmap_lock_is_caught() {
        registration_vs_fault(false);
    }

    /// Counts its callbacks; `gone` is set once unregistration returned.
    #[derive(Default)]
    struct Counting {
        started: AtomicUsize,
        ended: AtomicUsize,
        gone: crate::sync::AtomicBool,
    }

    impl MmuNotifier for Counting {
        fn invalidate_range_start(&self, _range: &Range) -> std::result::Result<(), Again> {
            assert!(!self.gone.load(Ordering::Acquire), "a callback ran after unregistration returned");
            self.started.fetch_add(1, Ordering::AcqRel);
            Ok(())
        }
        fn invalidate_range_end(&self, _range: &Range) {
            assert!(!self.gone.load(Ordering::Acquire), "a callback ran after unregistration returned");
            self.ended.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// `grace`: unregistration as `Subscription`'s drop does it; else
    /// it publishes the new list and returns without the grace period.
    fn unregistration_vs_invalidation(grace: bool) {
        loom::model(move || {
            let w = world();
            let sub = Arc::new(Counting::default());
            let subscription = Subscription::new(&w, sub.clone());
            let op = {
                let w = w.clone();
                loom::thread::spawn(move || {
                    let inv = w.n.start_blocking(0, 0x1000, Event::Unmap);
                    w.n.end(inv);
                })
            };
            if grace {
                drop(subscription);
            } else {
                drop(w.n.unpublish(&(sub.clone() as Arc<dyn MmuNotifier>)));
                std::mem::forget(subscription);
            }
            sub.gone.store(true, Ordering::Release);
            op.join().unwrap();
            let (s, e) = (sub.started.load(Ordering::Acquire), sub.ended.load(Ordering::Acquire));
            assert_eq!(s, e, "a start without its end");
        });
    }

    #[test]
    fn unregistration_waits_for_invalidations_in_flight() {
        unregistration_vs_invalidation(true);
    }

    /// The model can fail: unregistration without the grace period.
    #[test]
    #[should_panic(expected = "a callback ran after unregistration returned")]
    fn unregistration_without_the_grace_period_is_caught() {
        unregistration_vs_invalidation(false);
    }
}
