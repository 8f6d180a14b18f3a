//! Frame allocator: per-CPU LIFO caches in front of a global pool.
//!
//! Recycled frames are handed out last-in-first-out so a fault gets a frame
//! that is still hot in the CPU cache. Frames never used before come from a
//! bump pointer; they are known to be zero, so the fault path skips zeroing
//! them. A cache is picked by the CPU the thread runs on (`sched_getcpu` via
//! the vDSO, cached per thread for a few hundred allocations), so threads on
//! different cores rarely meet on a lock.

use super::FrameId;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

const BATCH: usize = 64;
const CACHE_MAX: usize = 2 * BATCH;

pub(crate) struct FrameAllocator {
    caches: Box<[CachePadded<Mutex<Vec<FrameId>>>]>,
    global: Mutex<Vec<FrameId>>,
    /// Next never-used frame.
    next_fresh: AtomicU32,
    limit: u32,
    in_use: AtomicU64,
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
            caches: (0..n).map(|_| CachePadded::new(Mutex::new(Vec::with_capacity(CACHE_MAX)))).collect(),
            global: Mutex::new(Vec::new()),
            next_fresh: AtomicU32::new(first),
            limit,
            in_use: AtomicU64::new(0),
        }
    }

    fn cache(&self) -> &Mutex<Vec<FrameId>> {
        &self.caches[current_cpu() % self.caches.len()]
    }

    pub(crate) fn alloc(&self) -> Option<Allocated> {
        let got = self.alloc_recycled().map(|frame| Allocated { frame, known_zero: false });
        let got = got.or_else(|| self.alloc_fresh().map(|frame| Allocated { frame, known_zero: true }));
        let got = got.or_else(|| self.steal().map(|frame| Allocated { frame, known_zero: false }));
        if got.is_some() {
            self.in_use.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    fn alloc_recycled(&self) -> Option<FrameId> {
        let mut cache = self.cache().lock();
        if let Some(f) = cache.pop() {
            return Some(f);
        }
        let mut global = self.global.lock();
        let take = global.len().min(BATCH);
        let at = global.len() - take;
        cache.extend(global.drain(at..));
        drop(global);
        cache.pop()
    }

    fn alloc_fresh(&self) -> Option<FrameId> {
        let mut cur = self.next_fresh.load(Ordering::Relaxed);
        loop {
            if cur >= self.limit {
                // Another thread may have freed frames to the global pool
                // after our recycled attempt; look once more.
                return self.global.lock().pop();
            }
            match self.next_fresh.compare_exchange_weak(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(FrameId(cur)),
                Err(now) => cur = now,
            }
        }
    }

    /// Last resort before ENOMEM: a frame left in another CPU's cache.
    #[cold]
    fn steal(&self) -> Option<FrameId> {
        self.caches.iter().find_map(|c| c.lock().pop())
    }

    pub(crate) fn free(&self, frame: FrameId) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
        let mut cache = self.cache().lock();
        cache.push(frame);
        if cache.len() >= CACHE_MAX {
            // Spill the coldest frames (the bottom of the LIFO) to the pool.
            let cold: Vec<FrameId> = cache.drain(..BATCH).collect();
            drop(cache);
            self.global.lock().extend(cold);
        }
    }

    pub(crate) fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Frames ever handed out (high-water mark of the bump pointer).
    pub(crate) fn touched(&self) -> u32 {
        self.next_fresh.load(Ordering::Relaxed)
    }

    /// Every frame currently on a free list (for audits).
    pub(crate) fn free_frames(&self) -> Vec<FrameId> {
        let mut all: Vec<FrameId> = self.global.lock().clone();
        for c in self.caches.iter() {
            all.extend(c.lock().iter().copied());
        }
        all
    }
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
        let x = a.alloc().unwrap();
        assert!(x.known_zero);
        assert_eq!(x.frame, FrameId(1));
        let y = a.alloc().unwrap();
        a.free(x.frame);
        a.free(y.frame);
        let z = a.alloc().unwrap();
        assert_eq!(z.frame, y.frame, "LIFO: the last freed frame comes back first");
        assert!(!z.known_zero);
        assert_eq!(a.in_use(), 1);
    }

    #[test]
    fn exhaustion_is_none_not_panic() {
        let a = FrameAllocator::new(1, 4, 0);
        let got: Vec<_> = std::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(got.len(), 3);
        assert!(a.alloc().is_none());
        a.free(got[0].frame);
        assert_eq!(a.alloc().map(|x| x.frame), Some(got[0].frame));
    }

    #[test]
    fn frames_cached_by_another_cpu_are_not_lost() {
        let a = FrameAllocator::new(1, 3, 0);
        let x = a.alloc().unwrap().frame;
        let _y = a.alloc().unwrap().frame;
        a.free(x);
        // Move the freed frame to a cache this thread does not use.
        let mine = current_cpu() % a.caches.len();
        if a.caches.len() > 1 {
            let f = a.caches[mine].lock().pop().unwrap();
            a.caches[(mine + 1) % a.caches.len()].lock().push(f);
        }
        assert_eq!(a.alloc().map(|g| g.frame), Some(x));
    }

    #[test]
    fn spill_keeps_every_frame() {
        let a = FrameAllocator::new(1, 1000, 0);
        let got: Vec<_> = (0..500).map(|_| a.alloc().unwrap().frame).collect();
        for f in &got {
            a.free(*f);
        }
        let mut free = a.free_frames();
        free.sort();
        let mut want = got.clone();
        want.sort();
        assert_eq!(free, want);
    }
}
