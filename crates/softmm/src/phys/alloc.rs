//! Frame allocator: per-CPU LIFO caches in front of a global pool, and a
//! background zeroing thread.
//!
//! Recycled frames are handed out last-in-first-out so a fault gets a frame
//! that is still hot in the CPU cache. A cache is picked by the CPU the
//! thread runs on (`sched_getcpu` via the vDSO, re-read every few hundred
//! allocations), so threads on different cores rarely meet on a lock.
//!
//! Free frames are of two kinds: *dirty* (old contents) and *zeroed*.
//! Zeroing a cache-cold 4 KiB frame costs a few hundred nanoseconds, most of
//! a demand-zero fault, so it is kept out of the fault path where it can be:
//! - frames never used before come from a bump pointer and are zero already;
//! - with pre-zeroing on (`Config::prezero`), a low-priority thread zeroes
//!   dirty frames from the global pool in the background (what an idle core
//!   can do for free; Windows' zero-page thread does the same) and hands
//!   them back as zeroed frames;
//! - a demand-zero fault takes a zeroed frame first; a COW copy, which
//!   overwrites the whole frame anyway, takes a dirty one first;
//! - the zeroer leaves the pool as many of its hottest dirty frames as COW
//!   copies took from it lately (`Global::dirty_demand`, halved every
//!   100 ms without work): a run of copy-on-write faults that frees and
//!   takes back its frames in turn (a snapshot's restores, a fork server)
//!   keeps getting frames its own core wrote last, not frames the zeroer
//!   just wrote on another core, and no zeroing is wasted on them.
//!
//! Locks: a CPU cache, then the global pool (never the other way). The
//! zeroer takes only the global pool, and never while zeroing.

use super::FrameId;
use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};

const BATCH: usize = 64;
const CACHE_MAX: usize = 2 * BATCH;

#[derive(Default)]
struct Lists {
    dirty: Vec<FrameId>,
    zeroed: Vec<FrameId>,
}

#[derive(Default)]
struct Global {
    lists: Lists,
    /// Frames the zeroer is working on (free, on no list for a moment).
    in_flight: Vec<FrameId>,
    /// Dirty frames that allocations preferring them (COW copies) took
    /// from the pool lately, up to `DEMAND_MAX`: the zeroer leaves as many.
    dirty_demand: usize,
}

/// Most dirty frames the zeroer leaves for COW copies (64 MiB).
const DEMAND_MAX: usize = 16384;

pub(crate) struct FrameAllocator {
    caches: Box<[CachePadded<Mutex<Lists>>]>,
    global: Mutex<Global>,
    /// Wakes the zeroer when dirty frames reach the global pool.
    work: Condvar,
    zeroer_on: AtomicBool,
    stop: AtomicBool,
    /// Next never-used frame.
    next_fresh: AtomicU32,
    limit: u32,
    in_use: AtomicU64,
    /// Times a spill woke the zeroer (for tests: a spill within the COW
    /// demand must not).
    wakeups: AtomicU64,
}

/// A frame from the allocator, and whether its contents are known zero.
pub(crate) struct Allocated {
    pub frame: FrameId,
    pub known_zero: bool,
}

impl FrameAllocator {
    /// Frames `first..limit` are allocatable; `caches` CPU caches (0: one per CPU).
    pub(crate) fn new(first: u32, limit: u32, caches: usize) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let n = if caches == 0 { cpus } else { caches }.max(1);
        FrameAllocator {
            caches: (0..n).map(|_| CachePadded::new(Mutex::new(Lists::default()))).collect(),
            global: Mutex::new(Global::default()),
            work: Condvar::new(),
            zeroer_on: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            next_fresh: AtomicU32::new(first),
            limit,
            in_use: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
        }
    }

    fn cache(&self) -> &Mutex<Lists> {
        &self.caches[current_cpu() % self.caches.len()]
    }

    /// A free frame; `want_zero` says which kind to prefer.
    pub(crate) fn alloc(&self, want_zero: bool) -> Option<Allocated> {
        let got = self.alloc_recycled(want_zero);
        let got = got.or_else(|| self.alloc_fresh().map(|frame| Allocated { frame, known_zero: true }));
        let got = got.or_else(|| self.steal());
        if got.is_some() {
            self.in_use.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    /// A recycled frame: the preferred kind from this CPU's cache, else a
    /// batch of it from the pool (the hottest end); then the other kind the
    /// same way.
    fn alloc_recycled(&self, want_zero: bool) -> Option<Allocated> {
        let mut cache = self.cache().lock();
        for zeroed in [want_zero, !want_zero] {
            if let Some(a) = take(&mut cache, zeroed) {
                return Some(a);
            }
            let mut global = self.global.lock();
            let g = &mut global.lists;
            let src = if zeroed { &mut g.zeroed } else { &mut g.dirty };
            if !src.is_empty() {
                let at = src.len().saturating_sub(BATCH);
                let dst = if zeroed { &mut cache.zeroed } else { &mut cache.dirty };
                let n = src.len() - at;
                dst.extend(src.drain(at..));
                if !zeroed && !want_zero {
                    global.dirty_demand = (global.dirty_demand + n).min(DEMAND_MAX);
                }
                drop(global);
                return take(&mut cache, zeroed);
            }
        }
        None
    }

    fn alloc_fresh(&self) -> Option<FrameId> {
        let mut cur = self.next_fresh.load(Ordering::Relaxed);
        loop {
            if cur >= self.limit {
                return None;
            }
            match self.next_fresh.compare_exchange_weak(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(FrameId(cur)),
                Err(now) => cur = now,
            }
        }
    }

    /// Last resort before ENOMEM: a frame in the pool, in another CPU's
    /// cache, or being zeroed right now (wait for it).
    #[cold]
    fn steal(&self) -> Option<Allocated> {
        loop {
            let mut global = self.global.lock();
            if let Some(a) = take(&mut global.lists, true).or_else(|| take(&mut global.lists, false)) {
                return Some(a);
            }
            let zeroing = !global.in_flight.is_empty();
            drop(global);
            for c in self.caches.iter() {
                let mut c = c.lock();
                if let Some(a) = take(&mut c, true).or_else(|| take(&mut c, false)) {
                    return Some(a);
                }
            }
            if !zeroing {
                return None;
            }
            std::thread::yield_now();
        }
    }

    pub(crate) fn free(&self, frame: FrameId) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
        let mut cache = self.cache().lock();
        cache.dirty.push(frame);
        if cache.dirty.len() >= CACHE_MAX {
            // Spill the coldest frames (the bottom of the LIFO) to the pool.
            let cold: Vec<FrameId> = cache.dirty.drain(..BATCH).collect();
            drop(cache);
            self.spill(cold);
        }
    }

    /// `free` for each of `frames`, with one visit of this CPU's cache.
    pub(crate) fn free_many(&self, frames: &[FrameId]) {
        self.in_use.fetch_sub(frames.len() as u64, Ordering::Relaxed);
        let mut cache = self.cache().lock();
        cache.dirty.extend_from_slice(frames);
        if cache.dirty.len() >= CACHE_MAX {
            // As many single frees would: the hottest frames stay, the
            // coldest (the bottom of the LIFO) go to the pool.
            let n = cache.dirty.len() - BATCH;
            let cold: Vec<FrameId> = cache.dirty.drain(..n).collect();
            drop(cache);
            self.spill(cold);
        }
    }

    /// Put a cache's coldest dirty frames in the pool, and wake the zeroer
    /// only if that gives it work: the pool now holds more dirty frames
    /// than COW copies took lately (`Global::dirty_demand`). A restore or a
    /// fork server that frees and takes back its frames in turn would
    /// otherwise wake it (a futex call, a cross-CPU wake-up) for nothing
    /// on every cycle.
    fn spill(&self, cold: Vec<FrameId>) {
        let mut global = self.global.lock();
        global.lists.dirty.extend(cold);
        let work = global.lists.dirty.len() > global.dirty_demand;
        drop(global);
        if work && self.zeroer_on.load(Ordering::Relaxed) {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            self.work.notify_one();
        }
    }

    pub(crate) fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Frames ever handed out (high-water mark of the bump pointer).
    pub(crate) fn touched(&self) -> u32 {
        self.next_fresh.load(Ordering::Relaxed)
    }

    /// Every free frame, and whether it is on a zeroed list (for audits).
    pub(crate) fn free_frames(&self) -> Vec<(FrameId, bool)> {
        let global = self.global.lock();
        let mut all: Vec<(FrameId, bool)> = Vec::new();
        let mut add = |l: &Lists| {
            all.extend(l.dirty.iter().map(|&f| (f, false)));
            all.extend(l.zeroed.iter().map(|&f| (f, true)));
        };
        add(&global.lists);
        for c in self.caches.iter() {
            add(&c.lock());
        }
        all.extend(global.in_flight.iter().map(|&f| (f, false)));
        all
    }

    // ---- the zeroer ----------------------------------------------------

    pub(crate) fn set_zeroer_on(&self) {
        self.zeroer_on.store(true, Ordering::Relaxed);
    }

    /// Ask the zeroer to exit.
    pub(crate) fn stop_zeroer(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _g = self.global.lock();
        self.work.notify_all();
    }

    /// Wait for dirty frames in the pool beyond those left for COW copies
    /// (`Global::dirty_demand`) and take a batch of the coldest (they are
    /// the least likely to be reused soon by a COW copy). `None` when asked
    /// to stop.
    pub(crate) fn zeroer_take(&self) -> Option<Vec<FrameId>> {
        let mut global = self.global.lock();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let spare = global.lists.dirty.len().saturating_sub(global.dirty_demand);
            if spare > 0 {
                let n = spare.min(BATCH);
                let batch: Vec<FrameId> = global.lists.dirty.drain(..n).collect();
                global.in_flight.extend_from_slice(&batch);
                return Some(batch);
            }
            if self.work.wait_for(&mut global, std::time::Duration::from_millis(100)).timed_out() {
                // No COW copy took frames lately: leave fewer of them.
                global.dirty_demand /= 2;
            }
        }
    }

    /// Hand back frames the zeroer has zeroed.
    pub(crate) fn zeroer_done(&self, batch: &[FrameId]) {
        let mut global = self.global.lock();
        // One zeroer, one batch at a time: the batch is all that is in
        // flight. (A quadratic `retain` here held the pool's lock for
        // microseconds, and a freeing thread then slept on it.)
        if global.in_flight == batch {
            global.in_flight.clear();
        } else {
            let done: std::collections::HashSet<FrameId> = batch.iter().copied().collect();
            global.in_flight.retain(|f| !done.contains(f));
        }
        // Below the hot end: fresh zeroed frames go on top, so the next
        // fault gets one the zeroer touched last (warm in the shared cache).
        global.lists.zeroed.extend_from_slice(batch);
    }

    /// Whether dirty frames wait in the pool for the zeroer or are being
    /// zeroed.
    pub(crate) fn zeroing_pending(&self) -> bool {
        let g = self.global.lock();
        g.lists.dirty.len() > g.dirty_demand || !g.in_flight.is_empty()
    }

    /// Have the zeroer zero every dirty frame of the pool, those left for
    /// COW copies too (before timing demand-zero faults).
    pub(crate) fn zero_all(&self) {
        self.global.lock().dirty_demand = 0;
        if self.zeroer_on.load(Ordering::Relaxed) {
            self.work.notify_one();
        }
    }
}

fn take(l: &mut Lists, zeroed: bool) -> Option<Allocated> {
    let list = if zeroed { &mut l.zeroed } else { &mut l.dirty };
    list.pop().map(|frame| Allocated { frame, known_zero: zeroed })
}

/// The CPU this thread runs on, re-read every few hundred calls so a thread
/// that migrates follows its core without a system call per allocation.
fn current_cpu() -> usize {
    use std::cell::Cell;
    thread_local! {
        static CPU: Cell<(usize, u32)> = const { Cell::new((0, 0)) };
    }
    CPU.with(|c| {
        let (cpu, left) = c.get();
        if left > 0 {
            c.set((cpu, left - 1));
            return cpu;
        }
        #[cfg(not(miri))]
        let cpu = rustix::thread::sched_getcpu();
        #[cfg(miri)]
        let cpu = 0;
        c.set((cpu, 256));
        cpu
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_then_lifo_recycling() {
        let a = FrameAllocator::new(1, 10, 0);
        let x = a.alloc(true).unwrap();
        assert!(x.known_zero);
        assert_eq!(x.frame, FrameId(1));
        let y = a.alloc(true).unwrap();
        a.free(x.frame);
        a.free(y.frame);
        let z = a.alloc(true).unwrap();
        assert_eq!(z.frame, y.frame, "LIFO: the last freed frame comes back first");
        assert!(!z.known_zero);
        assert_eq!(a.in_use(), 1);
    }

    #[test]
    fn exhaustion_is_none_not_panic() {
        let a = FrameAllocator::new(1, 4, 0);
        let got: Vec<_> = std::iter::from_fn(|| a.alloc(true)).collect();
        assert_eq!(got.len(), 3);
        assert!(a.alloc(true).is_none());
        a.free(got[0].frame);
        assert_eq!(a.alloc(true).map(|x| x.frame), Some(got[0].frame));
    }

    #[test]
    fn frames_cached_by_another_cpu_are_not_lost() {
        let a = FrameAllocator::new(1, 3, 0);
        let x = a.alloc(true).unwrap().frame;
        let _y = a.alloc(true).unwrap().frame;
        a.free(x);
        // Move the freed frame to a cache this thread does not use.
        let mine = current_cpu() % a.caches.len();
        if a.caches.len() > 1 {
            let f = a.caches[mine].lock().dirty.pop().unwrap();
            a.caches[(mine + 1) % a.caches.len()].lock().dirty.push(f);
        }
        assert_eq!(a.alloc(true).map(|g| g.frame), Some(x));
    }

    #[test]
    fn spill_keeps_every_frame() {
        let a = FrameAllocator::new(1, 1000, 0);
        let got: Vec<_> = (0..500).map(|_| a.alloc(true).unwrap().frame).collect();
        for f in &got {
            a.free(*f);
        }
        let mut free: Vec<FrameId> = a.free_frames().into_iter().map(|(f, _)| f).collect();
        free.sort();
        let mut want = got.clone();
        want.sort();
        assert_eq!(free, want);
    }

    #[test]
    fn the_zeroer_leaves_what_cow_copies_took() {
        let a = FrameAllocator::new(1, 1000, 1);
        let got: Vec<_> = (0..300).map(|_| a.alloc(true).unwrap().frame).collect();
        a.free_many(&got);
        // COW copies take 100 dirty frames: the cache's 64, then a batch
        // from the pool.
        let cow: Vec<_> = (0..100).map(|_| a.alloc(false).unwrap().frame).collect();
        a.free_many(&cow);
        let demand = a.global.lock().dirty_demand;
        assert_eq!(demand, BATCH);
        let dirty = a.global.lock().lists.dirty.len();
        let mut zeroed = 0;
        while a.zeroing_pending() {
            let batch = a.zeroer_take().unwrap();
            zeroed += batch.len();
            a.zeroer_done(&batch);
        }
        assert_eq!(zeroed, dirty - demand, "the hottest dirty frames stay for COW copies");
        a.zero_all();
        assert!(a.zeroing_pending(), "settling zeroes them too");
    }

    #[test]
    fn a_spill_within_the_cow_demand_does_not_wake_the_zeroer() {
        let a = FrameAllocator::new(1, 2000, 1);
        a.set_zeroer_on();
        let got: Vec<_> = (0..600).map(|_| a.alloc(false).unwrap().frame).collect();
        // First cycle: nothing was taken by COW copies yet, so the spill
        // leaves the zeroer work.
        a.free_many(&got);
        assert_eq!(a.wakeups.load(Ordering::Relaxed), 1);
        // A restore-like cycle: COW copies take the frames back, then the
        // restore frees them again. The pool now holds no more dirty frames
        // than the copies took lately: no work, no wake-up.
        let again: Vec<_> = (0..600).map(|_| a.alloc(false).unwrap().frame).collect();
        a.free_many(&again);
        assert_eq!(a.wakeups.load(Ordering::Relaxed), 1, "woke the zeroer with nothing to zero");
        assert!(!a.zeroing_pending());
        // Beyond the demand the zeroer has work again.
        let more: Vec<_> = (0..900).map(|_| a.alloc(true).unwrap().frame).collect();
        a.free_many(&more);
        assert_eq!(a.wakeups.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn free_many_keeps_every_frame_hottest_first() {
        let a = FrameAllocator::new(1, 1000, 1);
        let got: Vec<_> = (0..500).map(|_| a.alloc(true).unwrap().frame).collect();
        a.free_many(&got[..3]);
        a.free_many(&got[3..]);
        assert_eq!(a.in_use(), 0);
        let mut free: Vec<FrameId> = a.free_frames().into_iter().map(|(f, _)| f).collect();
        free.sort();
        assert_eq!(free, got);
        // The last freed comes back first, from the cache, then the pool's
        // hottest end.
        let back: Vec<_> = (0..100).map(|_| a.alloc(false).unwrap().frame).collect();
        let want: Vec<_> = got.iter().rev().take(100).copied().collect();
        assert_eq!(back, want);
    }

    #[test]
    fn zeroed_frames_preferred_for_zero_and_dirty_for_copies() {
        let a = FrameAllocator::new(1, 1000, 1);
        let got: Vec<_> = (0..300).map(|_| a.alloc(true).unwrap().frame).collect();
        for f in &got {
            a.free(*f);
        }
        // Play the zeroer by hand: take a batch, "zero" it, give it back.
        let batch = a.zeroer_take().unwrap();
        assert!(a.free_frames().iter().any(|(f, _)| *f == batch[0]), "in-flight frames stay visible");
        a.zeroer_done(&batch);
        let z = a.alloc(true).unwrap();
        assert!(z.known_zero && batch.contains(&z.frame));
        let d = a.alloc(false).unwrap();
        assert!(!d.known_zero);
    }
}
