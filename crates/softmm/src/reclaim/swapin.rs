//! Swap-in: the frame for a swap entry, from the swap cache or the device.

use crate::error::{Error, Result};
use crate::mm::MmInner;
use crate::phys::{flags, FrameId, PAGE_SIZE};
use crate::stats::Counters;
use crate::vma::{Backing, Vma};
use std::sync::atomic::Ordering;

/// The frame holding the contents of swap `slot`, in the swap cache, with
/// a reference for the caller (who maps it or drops it). Reads the device
/// when the cache has no frame for the slot; a failed read gives
/// `Error::Io` and leaves the entry as it was (the data stays on the
/// device). Called under the `mmap_lock` held for reading, no page-table
/// lock held: it may wait for a frame another thread is reading in.
pub(crate) fn swap_in(mm: &MmInner, vma: &Vma, va: u64, slot: u32) -> Result<FrameId> {
    let m = &mm.machine;
    let Some(swap) = m.reclaim.swap.as_ref() else {
        return Err(Error::Io { addr: va, what: "swap entry without a swap device".into() });
    };
    let arena = &m.arena;
    loop {
        if let Some(f) = swap.lookup(arena, slot) {
            let meta = arena.meta(f);
            meta.wait_unlocked();
            if meta.swap.load(Ordering::Acquire) == slot + 1 {
                Counters::bump(&m.counters.swap_cache_hits);
                return Ok(f);
            }
            arena.put(f); // a read-in that failed, or reclaim finished: look again
            continue;
        }
        if swap.count(slot) == 0 {
            // The entry was zapped meanwhile; the caller's recheck sees it.
            return Err(Error::Again);
        }
        // Marked ANON only once filled: the clock skips it until then.
        let n = arena.alloc(false, 0)?;
        let meta = arena.meta(n);
        // The page may be mapped by every relative of this VMA (it was
        // swapped out of a fork tree): rmap it through the oldest anon_vma.
        if let Backing::Anon(link) = &vma.backing {
            let av = link.root().map_or(0, |a| a.id);
            meta.owner.store(av, Ordering::Relaxed);
        }
        meta.index.store(vma.pgoff_of(va), Ordering::Relaxed);
        // A fresh frame nobody else can see: the lock is free.
        let _ = meta.try_lock();
        if !swap.insert(arena, slot, n) {
            meta.unlock();
            arena.put(n);
            continue;
        }
        let mut page = [0u8; PAGE_SIZE];
        let read = swap.dev.read_page(slot as u64, &mut page);
        if let Err(e) = read {
            swap.remove(arena, slot, n);
            meta.unlock();
            arena.put(n);
            return Err(Error::Io { addr: va, what: format!("reading slot {slot} of {}: {e}", swap.dev.describe()) });
        }
        arena.write(n, 0, &page);
        meta.set_flags(flags::SWAP_VALID | flags::ANON);
        meta.unlock();
        Counters::bump(&m.counters.swap_ins);
        return Ok(n);
    }
}
