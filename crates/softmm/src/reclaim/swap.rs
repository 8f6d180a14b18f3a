//! Swap slots and the swap cache.
//!
//! A slot of the swap device is referenced by every swap entry naming it
//! (in any page table; a shared PTE table counts once) and by the swap
//! cache while a frame stands for it there: `count(slot)` is that sum, and
//! the slot returns to the free list when it reaches 0.
//!
//! The swap cache maps a slot to the frame holding its contents. It holds
//! one reference on that frame, and the frame carries `flags::SWAPCACHE`
//! and `FrameMeta::swap = slot + 1`. It is what makes swap-out and swap-in
//! safe against each other without a global lock: reclaim puts a frame in
//! the cache *before* it replaces the page-table entries with swap entries,
//! and removes it only once nothing maps it and its contents are on the
//! device; a fault on a swap entry looks in the cache first, so it finds the
//! frame (and never reads the device) whenever the frame is still there.
//! Several address spaces (a fork tree) share one slot through their swap
//! entries; the first to fault reads the page in and the others find it in
//! the cache.
//!
//! A frame in the swap cache is never mapped writable: making it writable
//! takes it out of the cache first (`try_remove_exclusive`), so a cached
//! frame with `SWAP_VALID` always equals its device copy.
//!
//! Slots are handed out next-fit (`SlotMap`): pages swapped out one after
//! another get consecutive slots, so a batch of them is written with one
//! vectored write and read back with one (swap readahead), as Linux's
//! cluster allocation aims for.
//!
//! # Readahead
//! Each slot in use by anonymous memory records the rmap owner and index of
//! the page it holds (written by swap-out, under the slot's cache shard
//! lock, while the page is in the cache). A fault that reads slot `s` from
//! the device also reads the slots after it (`swapin.rs`) into new frames
//! in the swap cache, unmapped, with that owner and index: Linux's
//! `swap_cluster_readahead`. A slot with no owner recorded (free, being
//! swapped out, or not anonymous) is never read ahead. The window adapts
//! as Linux's `swapin_nr_pages` does: it grows while faults hit pages read
//! ahead and falls back to no readahead at all for faults that do not.
//! Readahead pages nobody uses are clean swap-cache pages: the clock drops
//! them without I/O.
//!
//! Locks: a cache shard's mutex is a leaf, taken under page-table locks
//! (zap frees slots) but never held while taking anything else.

use super::device::SwapDevice;
use crate::phys::{flags, FrameArena, FrameId, PAGE_SIZE};
use parking_lot::Mutex;
use std::cell::RefCell;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

const SHARDS: usize = 64;

/// (every cached (slot, frame), every (slot, count) in use).
pub(crate) type SwapSnapshot = (Vec<(u32, FrameId)>, Vec<(u32, u32)>);

thread_local! {
    /// Page buffers for vectored swap I/O, kept per thread: zero-filling
    /// a fresh buffer for every batch would cost as much memory traffic as
    /// the I/O itself.
    static SCRATCH: RefCell<Vec<[u8; PAGE_SIZE]>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` on a buffer of `n` pages (contents unspecified: the caller
/// fills every page it uses).
pub(crate) fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [[u8; PAGE_SIZE]]) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < n {
                buf.resize(n, [0; PAGE_SIZE]);
            }
            f(&mut buf[..n])
        }
        // In use further up this thread's stack (a device calling back
        // into swap I/O): a buffer of its own.
        Err(_) => f(&mut vec![[0; PAGE_SIZE]; n]),
    })
}

/// Most slots one readahead covers, the faulting one included (Linux's
/// default `page-cluster` of 3 reads 8; the swap file is page cache, where
/// larger reads pay).
pub(crate) const READAHEAD_MAX: u32 = 16;

/// Free slots below the high-water mark that make allocation go back to
/// the start of the device rather than extend into slots never used: the
/// swap file's footprint stays near the most slots ever in use, and slots
/// are still handed out in long ascending runs.
const REUSE_HOLES: u32 = 256;

/// Which slots are taken, and where the next allocation looks.
struct SlotMap {
    /// One bit per slot, set while the slot is in use.
    bits: Vec<u64>,
    /// Next-fit cursor: the next allocation looks here first, so slots
    /// handed out one after another are consecutive.
    cursor: u32,
    /// Slots at and above `high` were never used.
    high: u32,
    /// Bits set.
    used: u32,
}

impl SlotMap {
    fn new(n: usize) -> SlotMap {
        SlotMap { bits: vec![0; n.div_ceil(64)], cursor: 0, high: 0, used: 0 }
    }

    fn is_set(&self, s: u32) -> bool {
        self.bits.get(s as usize / 64).is_some_and(|w| w & 1 << (s % 64) != 0)
    }

    fn set(&mut self, s: u32, on: bool) {
        if let Some(w) = self.bits.get_mut(s as usize / 64) {
            if on {
                *w |= 1 << (s % 64);
            } else {
                *w &= !(1 << (s % 64));
            }
        }
    }

    /// The first free slot in `lo..hi`, a word at a time.
    fn find(&self, lo: u32, hi: u32) -> Option<u32> {
        let mut s = lo;
        while s < hi {
            let w = s / 64;
            let free = !self.bits.get(w as usize).copied().unwrap_or(u64::MAX) & (u64::MAX << (s % 64));
            if free != 0 {
                let found = w * 64 + free.trailing_zeros();
                return (found < hi).then_some(found);
            }
            s = (w + 1).saturating_mul(64);
        }
        None
    }

    /// Take a free slot of the `n` on the device, next-fit below the
    /// high-water mark, else a never-used one, else any.
    fn take(&mut self, n: u32) -> Option<u32> {
        let holes = self.high - self.used;
        let s = match self.find(self.cursor, self.high) {
            Some(s) => s,
            None if self.high < n && holes < REUSE_HOLES => self.high,
            None => self.find(0, self.high).or((self.high < n).then_some(self.high))?,
        };
        self.high = self.high.max(s + 1);
        self.cursor = s + 1;
        self.used += 1;
        self.set(s, true);
        Some(s)
    }

    fn release(&mut self, s: u32) {
        debug_assert!(self.is_set(s), "swap slot {s} freed twice");
        if self.is_set(s) {
            self.set(s, false);
            self.used -= 1;
        }
    }
}

/// Swap readahead's adaptive window (Linux's `swapin_nr_pages` state).
struct Readahead {
    /// Faults that found a page read ahead, since the last readahead.
    hits: AtomicU32,
    /// The slot of the last fault that read the device without hits.
    prev: AtomicU32,
    /// The last window, in slots (the faulting one included).
    window: AtomicU32,
}

/// One swap device with its slot counts and swap cache.
pub(crate) struct SwapSpace {
    pub(crate) dev: Arc<dyn SwapDevice>,
    counts: Box<[AtomicU32]>,
    /// Per slot, the rmap owner (anon_vma id; 0: none recorded) and index
    /// of the anonymous page it holds, for readahead (see the module doc).
    owners: Box<[AtomicU64]>,
    indices: Box<[AtomicU64]>,
    /// Per slot, one bit: its cached frame was read ahead and no fault has
    /// used it yet.
    ra_marks: Box<[AtomicU64]>,
    ra: Readahead,
    map: Mutex<SlotMap>,
    /// The swap cache: per slot, the frame standing for it (id + 1; 0:
    /// none), read and changed under the slot's shard lock. (An array,
    /// not a map: the cache is looked up on every swap fault and changed
    /// on every swap-out and readahead.)
    cache: Box<[AtomicU32]>,
    shards: [Mutex<()>; SHARDS],
    used: AtomicU64,
    /// Whether no slot is free, changed under `map`'s lock (the arena's
    /// `swap_full`: see `FrameArena::alloc_swap_in`).
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl SwapSpace {
    #[cfg(test)]
    pub(crate) fn new(dev: Arc<dyn SwapDevice>) -> SwapSpace {
        Self::with_full_flag(dev, Default::default())
    }

    /// A swap space that keeps `full` set while it has no free slot.
    pub(crate) fn with_full_flag(dev: Arc<dyn SwapDevice>, full: Arc<std::sync::atomic::AtomicBool>) -> SwapSpace {
        // Slot + 1 must fit `FrameMeta::swap`.
        let n = dev.slots().min(u32::MAX as u64) as usize;
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        SwapSpace {
            dev,
            counts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            owners: zeros(n),
            indices: zeros(n),
            ra_marks: zeros(n.div_ceil(64)),
            ra: Readahead { hits: AtomicU32::new(0), prev: AtomicU32::new(u32::MAX), window: AtomicU32::new(1) },
            map: Mutex::new(SlotMap::new(n)),
            cache: (0..n).map(|_| AtomicU32::new(0)).collect(),
            shards: std::array::from_fn(|_| Mutex::new(())),
            used: AtomicU64::new(0),
            full,
        }
    }

    /// Slots on the device.
    pub(crate) fn slots(&self) -> u64 {
        self.counts.len() as u64
    }

    /// Whether no slot is free.
    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Slots in use.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// A free slot with count 1 (the caller's reference), or `None` when
    /// the device is full.
    pub(crate) fn alloc(&self) -> Option<u32> {
        let slot = {
            let mut map = self.map.lock();
            let n = self.counts.len() as u32;
            let slot = map.take(n);
            self.full.store(map.used >= n, Ordering::Relaxed);
            slot?
        };
        let (Some(count), Some(owner)) = (self.counts.get(slot as usize), self.owners.get(slot as usize)) else {
            return None; // unreachable: the map covers exactly the counted slots
        };
        // No owner until swap-out records one: readahead leaves the slot
        // alone meanwhile. (A reader sees this once it sees the count.)
        owner.store(0, Ordering::Relaxed);
        self.take_ra_mark(slot);
        count.store(1, Ordering::Release);
        self.used.fetch_add(1, Ordering::Relaxed);
        Some(slot)
    }

    /// One more reference on `slot` (a copied swap entry).
    pub(crate) fn dup(&self, slot: u32) {
        if let Some(c) = self.counts.get(slot as usize) {
            c.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Drop a reference on `slot`; frees the slot at 0. Returns the count left.
    pub(crate) fn put(&self, slot: u32) -> u32 {
        let Some(c) = self.counts.get(slot as usize) else { return 0 };
        let old = c.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(old > 0, "swap slot {slot} count underflow");
        if old == 1 {
            self.used.fetch_sub(1, Ordering::Relaxed);
            let mut map = self.map.lock();
            map.release(slot);
            self.full.store(false, Ordering::Relaxed);
        }
        old - 1
    }

    /// References on `slot` now.
    pub(crate) fn count(&self, slot: u32) -> u32 {
        self.counts.get(slot as usize).map_or(0, |c| c.load(Ordering::Acquire))
    }

    fn shard(&self, slot: u32) -> &Mutex<()> {
        &self.shards[slot as usize % SHARDS]
    }

    /// The frame caching `slot` (the caller holds the slot's shard lock).
    fn cached(&self, slot: u32) -> Option<FrameId> {
        match self.cache.get(slot as usize)?.load(Ordering::Relaxed) {
            0 => None,
            f => Some(FrameId(f - 1)),
        }
    }

    /// Make `f` the frame caching `slot`, or none (the caller holds the
    /// slot's shard lock).
    fn set_cached(&self, slot: u32, f: Option<FrameId>) {
        if let Some(c) = self.cache.get(slot as usize) {
            c.store(f.map_or(0, |f| f.0 + 1), Ordering::Relaxed);
        }
    }

    /// The frame caching `slot`, with a reference taken for the caller.
    pub(crate) fn lookup(&self, arena: &FrameArena, slot: u32) -> Option<FrameId> {
        let _shard = self.shard(slot).lock();
        let f = self.cached(slot)?;
        arena.get(f);
        Some(f)
    }

    /// Put `f` in the cache for `slot`, unless another frame got there
    /// first. Takes the cache's reference on the frame and on the slot.
    pub(crate) fn insert(&self, arena: &FrameArena, slot: u32, f: FrameId) -> bool {
        let _shard = self.shard(slot).lock();
        // A slot nobody refers to any more (its last entry was zapped) is
        // free: it must not come back to life.
        if self.cached(slot).is_some() || !self.dup_unless_zero(slot) {
            return false;
        }
        // Not read ahead: a fault finding this frame is no readahead hit.
        self.take_ra_mark(slot);
        self.cache_locked(arena, slot, f);
        true
    }

    /// The caller holds the slot's shard lock and a reference on the slot
    /// for the cache.
    fn cache_locked(&self, arena: &FrameArena, slot: u32, f: FrameId) {
        let m = arena.meta(f);
        m.swap.store(slot + 1, Ordering::Release);
        m.set_flags(flags::SWAPCACHE);
        arena.get(f);
        self.set_cached(slot, Some(f));
    }

    /// Record that `slot` holds the anonymous page `(owner, index)`, for
    /// readahead. The caller has the page's frame in the cache for `slot`
    /// (so no readahead of the slot can be under way).
    pub(crate) fn set_rmap(&self, slot: u32, owner: u64, index: u64) {
        let _shard = self.shard(slot).lock();
        if let (Some(o), Some(i)) = (self.owners.get(slot as usize), self.indices.get(slot as usize)) {
            o.store(owner, Ordering::Relaxed);
            i.store(index, Ordering::Relaxed);
        }
    }

    /// The anonymous page `(owner, index)` recorded for `slot` at its
    /// swap-out (`set_rmap`; `(0, 0)` when none was).
    pub(crate) fn rmap_of(&self, slot: u32) -> (u64, u64) {
        let _shard = self.shard(slot).lock();
        match (self.owners.get(slot as usize), self.indices.get(slot as usize)) {
            (Some(o), Some(i)) => (o.load(Ordering::Relaxed), i.load(Ordering::Relaxed)),
            _ => (0, 0),
        }
    }

    /// Whether `slot` is worth reading ahead now: in use, holding an
    /// anonymous page whose owner is recorded, not cached. A hint only;
    /// `insert_readahead` decides.
    pub(crate) fn may_read_ahead(&self, slot: u32) -> bool {
        self.count(slot) != 0
            && self.owners.get(slot as usize).is_some_and(|o| o.load(Ordering::Relaxed) != 0)
            && self.cache.get(slot as usize).is_some_and(|c| c.load(Ordering::Relaxed) == 0)
    }

    /// Put the fresh frame `f` (locked, not yet filled) in the cache for
    /// `slot` as a readahead page, with the rmap owner and index recorded
    /// for the slot, unless the slot is cached, free, or has no owner
    /// recorded. Takes the cache's references as `insert` does.
    pub(crate) fn insert_readahead(&self, arena: &FrameArena, slot: u32, f: FrameId) -> bool {
        let shard = self.shard(slot).lock();
        if self.cached(slot).is_some() || !self.dup_unless_zero(slot) {
            return false;
        }
        // Read under the shard lock and the reference just taken: what
        // swap-out recorded for this very allocation of the slot, or 0.
        let owner = self.owners.get(slot as usize).map_or(0, |o| o.load(Ordering::Relaxed));
        let index = self.indices.get(slot as usize).map_or(0, |i| i.load(Ordering::Relaxed));
        if owner == 0 {
            drop(shard); // the shard lock is a leaf: `put` takes the slot map's
            self.put(slot);
            return false;
        }
        let m = arena.meta(f);
        m.owner.store(owner, Ordering::Relaxed);
        m.index.store(index, Ordering::Relaxed);
        if let Some(w) = self.ra_marks.get(slot as usize / 64) {
            w.fetch_or(1 << (slot % 64), Ordering::Relaxed);
        }
        self.cache_locked(arena, slot, f);
        true
    }

    /// Clear `slot`'s readahead mark; returns whether it was set (the
    /// first fault on a page read ahead: a readahead hit).
    pub(crate) fn take_ra_mark(&self, slot: u32) -> bool {
        let bit = 1u64 << (slot % 64);
        self.ra_marks.get(slot as usize / 64).is_some_and(|w| w.fetch_and(!bit, Ordering::Relaxed) & bit != 0)
    }

    /// A fault used a page read ahead: the next windows grow.
    pub(crate) fn readahead_hit(&self) {
        self.ra.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Slots to read for a fault that reads `slot` from the device, the
    /// faulting one included (1: no readahead). Linux's `swapin_nr_pages`:
    /// hits since the last readahead, plus two, rounded up to a power of
    /// two; without hits, 2 if the fault is next to the previous one and 1
    /// otherwise; never below half the last window (do not shrink too fast).
    pub(crate) fn readahead_window(&self, slot: u32) -> u32 {
        let ra = &self.ra;
        let hits = ra.hits.swap(0, Ordering::Relaxed);
        let prev = ra.prev.load(Ordering::Relaxed);
        let mut pages = hits.saturating_add(2);
        if pages == 2 {
            // (`prev` starts at `u32::MAX`: no slot is next to it.)
            if prev.checked_add(1) != Some(slot) && prev.checked_sub(1) != Some(slot) {
                pages = 1;
            }
        } else {
            pages = pages.checked_next_power_of_two().unwrap_or(u32::MAX).max(4);
        }
        let pages = pages.min(READAHEAD_MAX).max(ra.window.load(Ordering::Relaxed) / 2);
        if hits == 0 {
            ra.prev.store(slot, Ordering::Relaxed);
        }
        ra.window.store(pages, Ordering::Relaxed);
        pages
    }

    fn dup_unless_zero(&self, slot: u32) -> bool {
        let Some(c) = self.counts.get(slot as usize) else { return false };
        let mut cur = c.load(Ordering::Acquire);
        while cur != 0 {
            match c.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Take `f` out of the cache if its references are exactly `expected`
    /// (the cache's included) and, with `need_exclusive`, no swap entry
    /// names the slot any more. The caller holds the frame lock: whoever
    /// holds it may rely on the frame's cache membership not changing. The
    /// cache's references on the frame and the slot are dropped; the frame
    /// is not freed here unless `expected` was 1. Returns whether it was
    /// removed.
    pub(crate) fn remove_if(&self, arena: &FrameArena, f: FrameId, expected: u32, need_exclusive: bool) -> bool {
        self.remove_when(arena, f, |m, slot| m.refcount() == expected && (!need_exclusive || self.count(slot) == 1))
    }

    /// Take `f` out of the cache if it is an orphan: no swap entry names
    /// its slot and nothing maps it, so no fault can ever find it again.
    /// Others may still hold references (a zap's deferred one); the
    /// caller holds the frame lock and a reference, so the frame is not
    /// freed here.
    pub(crate) fn remove_orphan(&self, arena: &FrameArena, f: FrameId) -> bool {
        self.remove_when(arena, f, |m, slot| m.mapcount() == 0 && self.count(slot) == 1)
    }

    /// Whether `f` looks like an orphan now (a hint, read without locks).
    fn looks_orphaned(&self, arena: &FrameArena, f: FrameId) -> bool {
        let m = arena.meta(f);
        let slot = m.swap.load(Ordering::Acquire);
        m.has(flags::SWAPCACHE) && m.mapcount() == 0 && slot != 0 && self.count(slot - 1) == 1
    }

    /// Take `f` out of the cache if `cond(meta, slot)` holds under the
    /// slot's shard lock (the caller holds the frame lock).
    fn remove_when(&self, arena: &FrameArena, f: FrameId, cond: impl Fn(&crate::phys::FrameMeta, u32) -> bool) -> bool {
        let m = arena.meta(f);
        debug_assert!(m.has(flags::LOCKED), "swap-cache removal of frame {} without its lock", f.0);
        let slot = m.swap.load(Ordering::Acquire);
        if slot == 0 {
            return false;
        }
        let slot = slot - 1;
        {
            let _shard = self.shard(slot).lock();
            if self.cached(slot) != Some(f) || !cond(m, slot) {
                return false;
            }
            self.set_cached(slot, None);
            m.swap.store(0, Ordering::Release);
            m.clear_flags(flags::SWAPCACHE | flags::SWAP_VALID);
        }
        self.put(slot);
        arena.put(f);
        true
    }

    /// Unlock frame `f`, which may be in the cache (the caller holds a
    /// reference). An exit or unmap that dropped the last entry or mapping
    /// of a cached page while it was locked could not take it out of the
    /// cache (that needs the lock) and left it to the lock's holder: so
    /// every holder looks again *after* unlocking, and the other side
    /// tries the lock *after* its change (`put_entry`, `free_swap_cache`),
    /// with a full fence on both sides: one of the two sees the other.
    /// (Linux leaves such pages to a later scan; here an exit must free
    /// everything.)
    pub(crate) fn unlock_frame(&self, arena: &FrameArena, f: FrameId) {
        let m = arena.meta(f);
        loop {
            m.unlock();
            fence(Ordering::SeqCst);
            if !self.looks_orphaned(arena, f) || !m.try_lock() {
                return; // not an orphan, or the new holder looks again
            }
            if self.remove_orphan(arena, f) {
                m.unlock(); // out of the cache: nothing left to look at
                return;
            }
        }
    }

    /// Take `f` out of the cache unconditionally (a failed read-in; the
    /// caller holds the frame lock).
    pub(crate) fn remove(&self, arena: &FrameArena, slot: u32, f: FrameId) {
        let removed = {
            let _shard = self.shard(slot).lock();
            if self.cached(slot) == Some(f) {
                self.set_cached(slot, None);
                let m = arena.meta(f);
                m.swap.store(0, Ordering::Release);
                m.clear_flags(flags::SWAPCACHE | flags::SWAP_VALID);
                true
            } else {
                false
            }
        };
        if removed {
            self.put(slot);
            arena.put(f);
        }
    }

    /// After a swap entry for `slot` went away: if only the cache still
    /// refers to the slot and nothing maps its frame, nobody can ever fault
    /// it in again, so drop both (Linux's `free_swap_and_cache`). A frame
    /// locked now is left to its holder (`unlock_frame`).
    pub(crate) fn put_entry(&self, arena: &FrameArena, slot: u32) {
        if self.put(slot) != 1 {
            return;
        }
        // After the change, before the try: see `unlock_frame`.
        fence(Ordering::SeqCst);
        if let Some(f) = self.lookup(arena, slot) {
            if arena.meta(f).try_lock() {
                self.remove_orphan(arena, f);
                self.unlock_frame(arena, f);
            }
            arena.put(f);
        }
    }

    /// Every cached (slot, frame) and every slot's count (audits).
    pub(crate) fn snapshot(&self) -> SwapSnapshot {
        // Each entry is read under its shard lock, a shard at a time.
        let mut cached = Vec::new();
        for (i, lock) in self.shards.iter().enumerate() {
            let _shard = lock.lock();
            let slots = (i..self.cache.len()).step_by(SHARDS).map(|s| s as u32);
            cached.extend(slots.filter_map(|slot| self.cached(slot).map(|f| (slot, f))));
        }
        let counts = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32, c.load(Ordering::Acquire)))
            .filter(|&(_, c)| c != 0)
            .collect();
        (cached, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reclaim::device::MemSwap;

    fn space(slots: u64) -> SwapSpace {
        SwapSpace::new(Arc::new(MemSwap::new(slots * PAGE_SIZE as u64).unwrap()))
    }

    #[test]
    fn slots_are_handed_out_next_fit() {
        let sw = space(REUSE_HOLES as u64 * 4);
        let first: Vec<u32> = (0..10).map(|_| sw.alloc().unwrap()).collect();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        // Holes behind the cursor are not reused while few: the next pages
        // swapped out still get consecutive slots.
        sw.put(3);
        sw.put(4);
        assert_eq!((sw.alloc(), sw.alloc()), (Some(10), Some(11)));
        assert_eq!(sw.used(), 10);
        // Many holes below the high-water mark: allocation goes back to
        // them (in order) rather than grow the device's footprint.
        let more: Vec<u32> = (0..REUSE_HOLES).map(|_| sw.alloc().unwrap()).collect();
        for s in more {
            sw.put(s);
        }
        assert_eq!(sw.alloc(), Some(3));
        assert_eq!(sw.alloc(), Some(4));
        assert_eq!(sw.alloc(), Some(12), "then on, next-fit");
    }

    #[test]
    fn a_full_device_wraps_then_refuses() {
        let sw = space(4);
        let all: Vec<u32> = (0..4).map(|_| sw.alloc().unwrap()).collect();
        assert_eq!(all, [0, 1, 2, 3]);
        assert_eq!(sw.alloc(), None);
        sw.put(1);
        assert_eq!(sw.alloc(), Some(1), "the last free slot, behind the cursor");
        assert_eq!(sw.alloc(), None);
        for s in 0..4 {
            sw.put(s);
        }
        assert_eq!(sw.used(), 0);
        assert_eq!(sw.alloc(), Some(2), "next-fit: from where the last allocation left off");
    }

    #[test]
    fn slot_map_finds_free_bits_across_words() {
        let mut map = SlotMap::new(200);
        for s in 0..150 {
            map.set(s, true);
        }
        map.set(70, false);
        assert_eq!(map.find(0, 200), Some(70));
        assert_eq!(map.find(71, 200), Some(150));
        assert_eq!(map.find(71, 150), None);
        assert_eq!(map.find(199, 200), Some(199));
        assert_eq!(map.find(200, 200), None);
    }

    #[test]
    fn readahead_needs_a_recorded_owner_and_an_uncached_slot() {
        let arena = FrameArena::new(1 << 20, 1).unwrap();
        let sw = space(8);
        let s = sw.alloc().unwrap();
        assert!(!sw.may_read_ahead(s), "no owner recorded yet (being swapped out, or not anonymous)");
        let f = arena.alloc(false, 0).unwrap();
        assert!(!sw.insert_readahead(&arena, s, f));
        assert_eq!(sw.count(s), 1, "a refused readahead leaves the count alone");
        sw.set_rmap(s, 7, 0x1234);
        assert!(sw.may_read_ahead(s));
        assert!(sw.insert_readahead(&arena, s, f));
        let m = arena.meta(f);
        assert_eq!((m.owner.load(Ordering::Relaxed), m.index.load(Ordering::Relaxed)), (7, 0x1234));
        assert!(m.has(flags::SWAPCACHE) && !m.has(flags::ANON), "ANON only once filled");
        assert!(!sw.may_read_ahead(s), "cached now");
        let g = arena.alloc(false, 0).unwrap();
        assert!(!sw.insert_readahead(&arena, s, g), "one frame per slot");
        assert!(sw.take_ra_mark(s), "the first fault on it is a readahead hit");
        assert!(!sw.take_ra_mark(s), "only the first");
        // Freed and handed out again: the old owner is forgotten.
        sw.remove(&arena, s, f);
        assert_eq!(sw.put(s), 0);
        assert_eq!(sw.alloc(), Some(1));
        let all: Vec<u32> = (0..6).map(|_| sw.alloc().unwrap()).collect();
        assert_eq!(all, [2, 3, 4, 5, 6, 7]);
        assert_eq!(sw.alloc(), Some(s));
        assert!(!sw.may_read_ahead(s));
        arena.put(f);
        arena.put(g);
    }

    #[test]
    fn readahead_window_adapts_like_linux() {
        let sw = space(64);
        assert_eq!(sw.readahead_window(10), 1, "a first fault reads only its page");
        assert_eq!(sw.readahead_window(20), 1, "not next to the last one");
        assert_eq!(sw.readahead_window(21), 2, "sequential: start reading ahead");
        sw.readahead_hit();
        assert_eq!(sw.readahead_window(23), 4, "hits + 2, rounded up to a power of two, at least 4");
        for _ in 0..3 {
            sw.readahead_hit();
        }
        assert_eq!(sw.readahead_window(27), 8);
        for _ in 0..40 {
            sw.readahead_hit();
        }
        assert_eq!(sw.readahead_window(35), READAHEAD_MAX);
        // Without hits the window halves each time, down to no readahead.
        assert_eq!(sw.readahead_window(60), READAHEAD_MAX / 2);
        assert_eq!(sw.readahead_window(2), READAHEAD_MAX / 4);
        let mut w = READAHEAD_MAX / 4;
        while w > 1 {
            w = sw.readahead_window(40);
        }
        assert_eq!(sw.readahead_window(50), 1);
    }
}
