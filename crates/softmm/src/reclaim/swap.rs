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
//! Locks: a cache shard's mutex is a leaf, taken under page-table locks
//! (zap frees slots) but never held while taking anything else.

use super::device::SwapDevice;
use crate::phys::{flags, FrameArena, FrameId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

const SHARDS: usize = 64;

/// (every cached (slot, frame), every (slot, count) in use).
pub(crate) type SwapSnapshot = (Vec<(u32, FrameId)>, Vec<(u32, u32)>);

struct FreeSlots {
    list: Vec<u32>,
    /// Slots at and above `next` were never used.
    next: u32,
}

/// One swap device with its slot counts and swap cache.
pub(crate) struct SwapSpace {
    pub(crate) dev: Arc<dyn SwapDevice>,
    counts: Box<[AtomicU32]>,
    free: Mutex<FreeSlots>,
    cache: [Mutex<HashMap<u32, FrameId>>; SHARDS],
    used: AtomicU64,
}

impl SwapSpace {
    pub(crate) fn new(dev: Arc<dyn SwapDevice>) -> SwapSpace {
        let n = dev.slots().min(u32::MAX as u64) as usize;
        SwapSpace {
            dev,
            counts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            free: Mutex::new(FreeSlots { list: Vec::new(), next: 0 }),
            cache: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            used: AtomicU64::new(0),
        }
    }

    /// Slots on the device.
    pub(crate) fn slots(&self) -> u64 {
        self.counts.len() as u64
    }

    /// Slots in use.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// A free slot with count 1 (the caller's reference), or `None` when
    /// the device is full.
    pub(crate) fn alloc(&self) -> Option<u32> {
        let slot = {
            let mut f = self.free.lock();
            match f.list.pop() {
                Some(s) => s,
                None if (f.next as usize) < self.counts.len() => {
                    f.next += 1;
                    f.next - 1
                }
                None => return None,
            }
        };
        self.counts[slot as usize].store(1, Ordering::Release);
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
            self.free.lock().list.push(slot);
        }
        old - 1
    }

    /// References on `slot` now.
    pub(crate) fn count(&self, slot: u32) -> u32 {
        self.counts.get(slot as usize).map_or(0, |c| c.load(Ordering::Acquire))
    }

    fn shard(&self, slot: u32) -> &Mutex<HashMap<u32, FrameId>> {
        &self.cache[slot as usize % SHARDS]
    }

    /// The frame caching `slot`, with a reference taken for the caller.
    pub(crate) fn lookup(&self, arena: &FrameArena, slot: u32) -> Option<FrameId> {
        let shard = self.shard(slot).lock();
        let f = *shard.get(&slot)?;
        arena.get(f);
        Some(f)
    }

    /// Put `f` in the cache for `slot`, unless another frame got there
    /// first. Takes the cache's reference on the frame and on the slot.
    pub(crate) fn insert(&self, arena: &FrameArena, slot: u32, f: FrameId) -> bool {
        let mut shard = self.shard(slot).lock();
        // A slot nobody refers to any more (its last entry was zapped) is
        // on the free list: it must not come back to life.
        if shard.contains_key(&slot) || !self.dup_unless_zero(slot) {
            return false;
        }
        let m = arena.meta(f);
        m.swap.store(slot + 1, Ordering::Release);
        m.set_flags(flags::SWAPCACHE);
        arena.get(f);
        shard.insert(slot, f);
        true
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
    /// (the caller holds the frame lock: whoever holds it may rely on the
    /// frame's cache membership not changing)
    /// (the cache's included) and, with `need_exclusive`, no swap entry
    /// names the slot any more. The cache's references on the frame and
    /// the slot are dropped; the frame is not freed here unless `expected`
    /// was 1. Returns whether it was removed.
    pub(crate) fn remove_if(&self, arena: &FrameArena, f: FrameId, expected: u32, need_exclusive: bool) -> bool {
        let m = arena.meta(f);
        debug_assert!(m.has(flags::LOCKED), "swap-cache removal of frame {} without its lock", f.0);
        let slot = m.swap.load(Ordering::Acquire);
        if slot == 0 {
            return false;
        }
        let slot = slot - 1;
        {
            let mut shard = self.shard(slot).lock();
            if shard.get(&slot) != Some(&f) || m.refcount() != expected {
                return false;
            }
            if need_exclusive && self.count(slot) != 1 {
                return false;
            }
            shard.remove(&slot);
            m.swap.store(0, Ordering::Release);
            m.clear_flags(flags::SWAPCACHE | flags::SWAP_VALID);
        }
        self.put(slot);
        arena.put(f);
        true
    }

    /// Take `f` out of the cache unconditionally (a failed read-in; the
    /// caller holds the frame lock).
    pub(crate) fn remove(&self, arena: &FrameArena, slot: u32, f: FrameId) {
        let removed = {
            let mut shard = self.shard(slot).lock();
            if shard.get(&slot) == Some(&f) {
                shard.remove(&slot);
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
    /// refers to the slot and nothing else holds its frame, nobody can ever
    /// fault it in again, so drop both (Linux's `free_swap_and_cache`).
    pub(crate) fn put_entry(&self, arena: &FrameArena, slot: u32) {
        if self.put(slot) != 1 {
            return;
        }
        if let Some(f) = self.lookup(arena, slot) {
            let m = arena.meta(f);
            if m.try_lock() {
                self.remove_if(arena, f, 2, true);
                m.unlock();
            }
            arena.put(f);
        }
    }

    /// Every cached (slot, frame) and every slot's count (audits).
    pub(crate) fn snapshot(&self) -> SwapSnapshot {
        let cached = self.cache.iter().flat_map(|s| s.lock().iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>());
        let counts = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32, c.load(Ordering::Acquire)))
            .filter(|&(_, c)| c != 0)
            .collect();
        (cached.collect(), counts)
    }
}
