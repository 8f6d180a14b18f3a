//! The clock scan and swap-out of one frame.
//!
//! The hand sweeps the arena's frames in order. A private anonymous frame
//! whose mappings were accessed since the last sweep gets a second chance
//! (its accessed bits are cleared, as Linux's `folio_referenced` does);
//! the others are swapped out: put in the swap cache, unmapped everywhere
//! (entries become swap entries naming the slot), their translations shot
//! down, written to the device, and freed. Software TLB hits do not set
//! accessed bits (a hit takes no atomic operation), so "accessed" means
//! "faulted or filled into a TLB since the last sweep": a clock over TLB
//! fills rather than over every access, which is what softmm can see.
//!
//! Failures lose nothing: a full device leaves the page mapped; a failed
//! write leaves it in the swap cache, resident and intact, where a fault
//! finds it and a later sweep writes it again.

use super::swap::SwapSpace;
use super::visit_mappings;
use crate::error::{Error, Result};
use crate::machine::MachineInner;
use crate::phys::{flags, FrameId, PAGE_SIZE};
use crate::pte::Pte;
use crate::stats::Counters;
use std::sync::atomic::Ordering;

/// Frames one direct reclaim tries to free.
const BATCH: usize = 32;

/// Free frames for an allocation that hit the frame limit. Returns whether
/// anything was freed (the caller retries its allocation then).
pub(crate) fn direct_reclaim(m: &MachineInner) -> bool {
    if m.reclaim.swap.is_none() {
        return false;
    }
    let before = m.arena.in_use();
    let _one = m.reclaim.scanning.lock();
    if m.arena.in_use() < before {
        return true; // another thread freed frames while we waited
    }
    // First skip busy address spaces; if that frees nothing, wait for them
    // (the caller holds at most `mmap_lock`s for reading, and writers never
    // wait for what a reclaimer holds, so the wait ends).
    shrink_with(m, BATCH, true) > 0 || shrink_with(m, BATCH, false) > 0
}

/// Run the clock until `want` frames are freed or two sweeps found nothing
/// more. Returns the frames freed. Busy address spaces are skipped.
pub(crate) fn shrink(m: &MachineInner, want: usize) -> usize {
    shrink_with(m, want, true)
}

fn shrink_with(m: &MachineInner, want: usize, try_only: bool) -> usize {
    let Some(swap) = m.reclaim.swap.as_ref() else { return 0 };
    let arena = &m.arena;
    let touched = arena.touched().max(2);
    let mut freed = 0;
    let mut looked = 0u64;
    while freed < want && looked < 2 * touched as u64 {
        looked += 1;
        let i = m.reclaim.hand.fetch_add(1, Ordering::Relaxed);
        let f = FrameId(1 + i % (touched - 1));
        let meta = arena.meta(f);
        let fl = meta.flags();
        if fl & flags::ANON == 0 || fl & (flags::PAGETABLE | flags::ZERO | flags::LOCKED) != 0 {
            continue;
        }
        if !arena.try_get(f) {
            continue;
        }
        if meta.has(flags::ANON) && !referenced(m, f, try_only) {
            match swap_out(m, swap, f, try_only) {
                Ok(true) => freed += 1,
                Ok(false) => {}
                Err(_) => Counters::bump(&m.counters.swap_failures),
            }
        }
        arena.put(f);
    }
    freed
}

/// Whether any mapping of `f` was accessed since the last look; clears the
/// accessed bits it finds (Linux's `folio_referenced` + `ptep_clear_young`).
fn referenced(m: &MachineInner, f: FrameId, try_only: bool) -> bool {
    let mut young = false;
    visit_mappings(
        m,
        f,
        try_only,
        |pte| (pte.is_present() && pte.is_accessed()).then(|| pte.without(Pte::ACCESSED)),
        |_| young = true,
    );
    young
}

/// Swap out `f` (the caller holds a reference). Returns whether the frame
/// left memory.
pub(crate) fn swap_out(m: &MachineInner, swap: &SwapSpace, f: FrameId, try_only: bool) -> Result<bool> {
    let meta = m.arena.meta(f);
    if !meta.try_lock() {
        return Ok(false);
    }
    let r = swap_out_locked(m, swap, f, try_only);
    meta.unlock();
    r
}

fn swap_out_locked(m: &MachineInner, swap: &SwapSpace, f: FrameId, try_only: bool) -> Result<bool> {
    let arena = &m.arena;
    let meta = arena.meta(f);
    if !meta.has(flags::ANON) || meta.pins.load(Ordering::Acquire) > 0 {
        return Ok(false);
    }
    let slot = match meta.swap.load(Ordering::Acquire) {
        0 => {
            let Some(slot) = swap.alloc() else {
                return Err(Error::SwapFull(format!("no free slot on {}", swap.dev.describe())));
            };
            let cached = swap.insert(arena, slot, f);
            swap.put(slot); // the allocation's reference: the cache holds one now
            if !cached {
                return Ok(false);
            }
            slot
        }
        s => s - 1,
    };
    // Unmap everywhere: each entry becomes a swap entry holding the slot.
    let mut dirty = false;
    let visit = visit_mappings(
        m,
        f,
        try_only,
        // Not a migration entry: a frame being migrated is locked anyway.
        |pte| pte.is_present().then_some(Pte::swap(slot)),
        |old| {
            dirty |= old.is_dirty();
            swap.dup(slot);
        },
    );
    visit.flush();
    if visit.changed > 0 {
        meta.sub_counts(visit.changed, visit.changed);
    }
    if dirty {
        meta.set_flags(flags::DIRTY);
        meta.clear_flags(flags::SWAP_VALID);
    }
    // A skipped (busy) space may share a PTE table whose entry was just
    // replaced through another space, and so still hold the frame in its
    // accessors' TLBs, unflushed: the frame must not change hands. Still
    // mapped, or held (a remote access, a futex waiter): likewise. It
    // stays in the swap cache for a later sweep.
    if visit.skipped || meta.mapcount() != 0 || meta.refcount() != 2 {
        return Ok(false);
    }
    if swap.count(slot) == 1 {
        // No entry names the slot (its mappings went away meanwhile): the
        // page is garbage, nothing to write.
        return Ok(swap.remove_if(arena, f, 2, true));
    }
    if !meta.has(flags::SWAP_VALID) {
        write_out(m, swap, slot, f)?;
        meta.set_flags(flags::SWAP_VALID);
    }
    if swap.remove_if(arena, f, 2, false) {
        Counters::bump(&m.counters.swap_outs);
        return Ok(true);
    }
    Ok(false)
}

fn write_out(m: &MachineInner, swap: &SwapSpace, slot: u32, f: FrameId) -> Result<()> {
    let mut page = [0u8; PAGE_SIZE];
    m.arena.read(f, 0, &mut page);
    swap.dev
        .write_page(slot as u64, &page)
        .map_err(|e| Error::SwapFull(format!("writing slot {slot} of {}: {e}", swap.dev.describe())))
}
