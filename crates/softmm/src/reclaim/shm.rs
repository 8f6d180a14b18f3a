//! Swap-out of shared-memory pages.
//!
//! A page of a shared object is unmapped from every address space that
//! maps it (the object's member list is its reverse map; the address in
//! each is found from that space's VMAs of the object), its translations
//! are shot down, and it is written to a fresh slot; the object's index
//! then names the slot instead of the frame (as Linux's shmem keeps swap
//! entries in its page cache), and the frame is freed. Page-table entries
//! become empty, not swap entries: a later fault goes through the object,
//! which reads the page back (`ShmObject::swap_in`). Every failure leaves
//! the page resident and its index entry unchanged.

use super::swap::SwapSpace;
use super::visit::{edit_entry, Edited};
use crate::error::{Error, Result};
use crate::machine::MachineInner;
use crate::mm::{Change, ChangeBatch};
use crate::notifier::Event;
use crate::phys::{flags, FrameId, PAGE_SIZE};
use crate::pte::Pte;
use crate::shm::ShmObject;
use crate::stats::Counters;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Swap out page `f` of a shared object (the caller holds a reference);
/// a host file's page is written back if dirty and dropped instead (no
/// swap needed). Returns whether the frame left memory.
pub(crate) fn swap_out_shm(m: &MachineInner, swap: Option<&SwapSpace>, f: FrameId, try_only: bool) -> Result<bool> {
    out_locked(m, swap, f, try_only, true)
}

/// `MADV_PAGEOUT`'s take on page `f` of a shared object (the caller holds
/// a reference): unmapped everywhere, then swapped out or, a host file's,
/// dropped if clean; a dirty host-file page stays in the cache, dirty, as
/// Linux's `shrink_folio_list` leaves file write-back to its flushers
/// outside kswapd.
pub(crate) fn page_out_shm(m: &MachineInner, swap: Option<&SwapSpace>, f: FrameId) -> Result<bool> {
    out_locked(m, swap, f, false, false)
}

fn out_locked(
    m: &MachineInner,
    swap: Option<&SwapSpace>,
    f: FrameId,
    try_only: bool,
    write_back: bool,
) -> Result<bool> {
    let meta = m.arena.meta(f);
    if !meta.try_lock() {
        return Ok(false);
    }
    let r = swap_out_locked(m, swap, f, try_only, write_back);
    meta.unlock();
    r
}

fn swap_out_locked(
    m: &MachineInner,
    swap: Option<&SwapSpace>,
    f: FrameId,
    try_only: bool,
    write_back: bool,
) -> Result<bool> {
    let arena = &m.arena;
    let meta = arena.meta(f);
    if !meta.has(flags::SHM) || meta.pins.load(Ordering::Acquire) > 0 {
        return Ok(false);
    }
    let Some(obj) = m.shm_by_id(meta.owner.load(Ordering::Acquire)) else { return Ok(false) };
    let pgoff = meta.index.load(Ordering::Acquire);
    if m.mlock_used.load(Ordering::Relaxed) && mapped_locked(&obj, f, pgoff, try_only) {
        return Ok(false); // kept mapped everywhere, as the anonymous visit does
    }
    let (unmapped, skipped, dirty) = unmap_everywhere(m, &obj, f, pgoff, try_only, Event::SwapOut);
    if unmapped > 0 {
        meta.sub_counts(unmapped, unmapped);
    }
    if dirty {
        meta.set_flags(flags::DIRTY);
    }
    // The index's reference and ours, nothing else (no mapping left, no
    // access in flight), and no busy space that might still cache it.
    if skipped || meta.mapcount() != 0 || meta.refcount() != 2 {
        return Ok(false);
    }
    if obj.store.is_host() {
        if !write_back && meta.has(flags::DIRTY) {
            return Ok(false);
        }
        // Linux's pageout then __remove_mapping: a failed write keeps it.
        obj.write_back_page(pgoff, f)?;
        let dropped = obj.evict(pgoff, f, 2);
        if dropped {
            Counters::bump(&m.counters.file_pages_dropped);
        }
        return Ok(dropped);
    }
    let Some(swap) = swap else { return Ok(false) };
    let Some(slot) = swap.alloc() else {
        return Err(Error::SwapFull(format!("no free slot on {}", swap.dev.describe())));
    };
    let mut page = [0u8; PAGE_SIZE];
    arena.read(f, 0, &mut page);
    if let Err(e) = swap.dev.write_page(slot as u64, &page) {
        swap.put(slot);
        return Err(Error::SwapFull(format!("writing slot {slot} of {}: {e}", swap.dev.describe())));
    }
    if obj.replace_with_slot(pgoff, f, 2, slot) {
        Counters::bump(&m.counters.swap_outs);
        Ok(true)
    } else {
        swap.put(slot); // mapped again meanwhile: it stays
        Ok(false)
    }
}

/// Clear every PTE that maps page `pgoff` (frame `f`) of `obj`; shoot the
/// translations down, each space's change bracketed for `event`. Returns
/// (entries cleared, some space skipped, some entry was dirty).
pub(super) fn unmap_everywhere(
    m: &MachineInner,
    obj: &Arc<ShmObject>,
    f: FrameId,
    pgoff: u64,
    try_only: bool,
    event: Event,
) -> (u32, bool, bool) {
    edit_everywhere(m, obj, f, pgoff, try_only, event, |_| Pte::NONE)
}

/// Write page `pgoff` (frame `f`, referenced by the caller) of a host file
/// back if it is dirty, Linux's `folio_clear_dirty_for_io` then write:
/// every entry mapping it loses its dirty and write bits (Linux's
/// `page_mkclean`; shot down, so no software TLB keeps writing unseen), so
/// the next write faults and dirties the page again; the page takes the
/// entries' dirty bits over first.
pub(crate) fn write_back_page(m: &MachineInner, obj: &Arc<ShmObject>, f: FrameId, pgoff: u64) -> Result<()> {
    let meta = m.arena.meta(f);
    // Swap-out and migration of the page hold its lock.
    while !meta.try_lock() {
        meta.wait_unlocked();
    }
    let (_, _, dirty) =
        edit_everywhere(m, obj, f, pgoff, false, Event::Protection, |p| p.without(Pte::DIRTY).without(Pte::WRITE));
    if dirty {
        meta.set_flags(flags::DIRTY);
    }
    let r = obj.write_back_page(pgoff, f);
    meta.unlock();
    r
}

/// Write back the dirty pages of `obj` in `[first, end)` (page offsets):
/// `fsync`, `msync(MS_SYNC)`. Nothing for an in-memory object.
pub(crate) fn write_back_range(m: &MachineInner, obj: &Arc<ShmObject>, first: u64, end: u64) -> Result<()> {
    if !obj.store.is_host() {
        return Ok(());
    }
    for (pgoff, _) in obj.resident().into_iter().filter(|&(p, _)| p >= first && p < end) {
        // Referenced anew: a truncation may drop the page meanwhile.
        let Some(f) = obj.find_page(pgoff) else { continue };
        let r = write_back_page(m, obj, f, pgoff);
        m.arena.put(f);
        r?;
    }
    Ok(())
}

/// Whether some space maps page `pgoff` (frame `f`) of `obj` in a
/// `VM_LOCKED` VMA: Linux keeps such a page off the evictable lists, so
/// reclaim unmaps it from none of its mappings. A space busy under
/// `try_only` is not looked at (`unmap_everywhere` skips it too).
fn mapped_locked(obj: &Arc<ShmObject>, f: FrameId, pgoff: u64, try_only: bool) -> bool {
    let mut locked = false;
    obj.members.walk(|mm| {
        if locked {
            return;
        }
        let Some(st) = super::lock_member(mm, try_only) else { return };
        let Some(pt) = st.pt.as_ref() else { return };
        let addrs = st
            .vmas
            .iter()
            .filter(|v| v.flags.contains(crate::vma::VmFlags::LOCKED) && v.maps_object(obj))
            .filter(|v| pgoff >= v.pgoff && pgoff < v.pgoff + (v.len() >> 12))
            .map(|v| v.start + ((pgoff - v.pgoff) << 12));
        for va in addrs {
            pt.peek_ptes(&mm.machine.arena, va, va + 4096, |_, pte| {
                locked |= pte.is_present() && !pte.is_zero_frame() && pte.frame() == f;
            });
        }
    });
    locked
}

/// Replace every PTE that maps page `pgoff` (frame `f`) of `obj` by what
/// `edit` makes of it; otherwise as `unmap_everywhere`. Returns (entries
/// changed, some space skipped, some entry was dirty).
fn edit_everywhere(
    m: &MachineInner,
    obj: &Arc<ShmObject>,
    f: FrameId,
    pgoff: u64,
    try_only: bool,
    event: Event,
    edit: impl Fn(Pte) -> Pte,
) -> (u32, bool, bool) {
    let arena = &m.arena;
    let (mut cleared, mut skipped, mut dirty) = (0, false, false);
    let mut tables: Vec<FrameId> = Vec::new();
    // One shootdown per space for all its mappings of the page, then the
    // secondary MMUs' bracket ends, when the batch is dropped.
    let mut batch = ChangeBatch::default();
    obj.members.walk(|mm| {
        let Some(st) = super::lock_member(mm, try_only) else {
            skipped = true;
            return;
        };
        let Some(pt) = st.pt.as_ref() else { return };
        // For reclaim, a mapping in a VM_LOCKED VMA stays (Linux's
        // try_to_unmap fails there): the page is still mapped, so it is not
        // swapped out. A hole punch or truncation reaches it too (Linux's
        // unmap_mapping_range ignores mlock).
        let reclaim = matches!(event, Event::SwapOut);
        let addrs = st
            .vmas
            .iter()
            .filter(|v| v.maps_object(obj))
            .filter(|v| pgoff >= v.pgoff && pgoff < v.pgoff + (v.len() >> 12))
            .filter(|v| !(reclaim && v.flags.contains(crate::vma::VmFlags::LOCKED)))
            .map(|v| v.start + ((pgoff - v.pgoff) << 12));
        // Every bracket opens before any entry changes.
        let mut changes = Vec::new();
        for va in addrs {
            match Change::try_open(mm, Some(&st), va, va + 4096, Some(event), !try_only) {
                Some(c) => changes.push((va, c)),
                None => skipped = true,
            }
        }
        for (va, mut change) in changes {
            if let Some(mut g) = crate::pgtable::share::lock_pte_table(arena, pt, va, change.edit()) {
                // The anonymous visit's entry edit: a private file mapping's
                // page may sit in a PTE table shared at fork, or be
                // borrowed by a table unshared from one.
                let mut was_dirty = |old: Pte| dirty |= old.is_dirty();
                match edit_entry(arena, &mut g, va, f, |p| Some(edit(p)), &mut was_dirty) {
                    Edited::Replaced(_) | Edited::Aged => {
                        tables.push(g.table());
                        cleared += 1;
                        change.need_flush();
                    }
                    // Cleared through a table shared with a space seen
                    // before: this one may cache the translation too.
                    Edited::Gone if tables.contains(&g.table()) => change.need_flush(),
                    Edited::Gone | Edited::Kept => {}
                }
                // The page stays the object's: snapshots log nothing.
                change.translations_moved(va, va + 4096);
            }
            change.defer_to(&mut batch, mm);
        }
    });
    batch.finish();
    (cleared, skipped, dirty)
}
