//! mmap, munmap and mprotect: VMA changes and the page-table work they
//! imply (`zap_pte_range`, `change_protection`, `free_pgtables`).

use super::args::{self, Placement};
use super::change::Change;
use super::gather::Gather;
use super::{MmInner, MmState};
use crate::error::{Error, Result};
use crate::few::Few;
use crate::notifier::Event;
use crate::pgtable::{PageTable, PTE_TABLE_SPAN, TASK_SIZE};
use crate::pte::Pte;
use crate::sync::Ordering;
use crate::vma::{AnonLink, Backing, MapKind, Prot, Vma};

/// What a new mapping maps: anonymous memory, or a file from a page offset.
pub(crate) type Source<'a> = Option<(&'a std::sync::Arc<crate::shm::ShmObject>, u64)>;

/// Returns the start and whether the new VMA is `VM_LOCKED` (by `flags`
/// or the space's `def_flags`), so must be populated.
#[allow(clippy::too_many_arguments)]
pub(crate) fn do_mmap(
    mm: &MmInner,
    addr: u64,
    len: u64,
    prot: Prot,
    kind: MapKind,
    place: Placement,
    flags: crate::vma::VmFlags,
    file: Source<'_>,
) -> Result<(u64, bool)> {
    let len = args::mmap_len(len)?;
    let min = mm.machine.config.mmap_min_addr;
    let mut st = mm.state.write();
    if st.pt.is_none() {
        return Err(Error::Exited);
    }
    let start = match place {
        Placement::Fixed => {
            args::mmap_fixed(addr, len, min)?;
            addr
        }
        Placement::FixedNoReplace => {
            args::mmap_fixed(addr, len, min)?;
            if st.vmas.overlapping(addr, addr + len).next().is_some() {
                return Err(Error::Exists { addr, len });
            }
            addr
        }
        Placement::Hint => hinted_area(&st, addr, len, min)?,
    };
    let end = start + len;
    let (backing, pgoff, file) = match (kind, file) {
        (MapKind::Private, None) => (Backing::Anon(AnonLink::new(mm.mm_ref())), start >> 12, None),
        // A private file mapping: anonymous copies on write over the
        // file's pages, and a member of the file's reverse map.
        (MapKind::Private, Some((obj, pgoff))) => {
            let link = crate::shm::ShmLink::new(obj.clone(), mm.mm_ref());
            (Backing::Anon(AnonLink::new(mm.mm_ref())), pgoff, Some(link))
        }
        (MapKind::Shared, None) => {
            (Backing::Shm(crate::shm::ShmLink::new(mm.machine.new_shm(len >> 12)?, mm.mm_ref())), 0, None)
        }
        (MapKind::Shared, Some((obj, pgoff))) => {
            (Backing::Shm(crate::shm::ShmLink::new(obj.clone(), mm.mm_ref())), pgoff, None)
        }
    };
    // MAP_FIXED over existing mappings unmaps them first.
    unmap_locked(mm, &mut st, start, end)?;
    let account = kind == MapKind::Private && prot.writable();
    let flags = flags.with(st.def_flags);
    st.vmas.insert(Vma { start, end, prot, account, pgoff, backing, file, flags });
    // Linux's vma_merge: merge with the previous VMA first; the next one
    // joins only if it is compatible with the result (prev's anon_vma).
    st.vmas.try_merge_at(start);
    st.vmas.try_merge_at(end);
    // Locked and not lock-on-fault: populated now (`mm_populate`).
    let populate = flags.contains(crate::vma::VmFlags::LOCKED) && !flags.contains(crate::vma::VmFlags::LOCKONFAULT);
    Ok((start, populate))
}

/// A free range of `len` bytes at the hint `addr` when it is free (clear
/// of every VMA and of the guard gap below a stack), else the top-down
/// search's (`get_unmapped_area` without `MAP_FIXED`).
pub(crate) fn hinted_area(st: &MmState, addr: u64, len: u64, min: u64) -> Result<u64> {
    let hint = args::page_align(addr).unwrap_or(0).max(min);
    let free = hint.checked_add(len).is_some_and(|e| e <= TASK_SIZE)
        && st.vmas.overlapping(hint, hint + len).next().is_none()
        && st.vmas.neighbours(hint).1.is_none_or(|n| n.start_gap() >= hint + len);
    if addr != 0 && free {
        Ok(hint)
    } else {
        st.vmas.find_free(len, min, TASK_SIZE).ok_or(Error::NoMemory("no free address range"))
    }
}

pub(crate) fn do_munmap(mm: &MmInner, addr: u64, len: u64) -> Result<()> {
    let end = args::munmap_range(addr, len)?;
    let mut st = mm.state.write();
    unmap_locked(mm, &mut st, addr, end)
}

/// Remove VMAs in `[start, end)`, zap their pages and free page tables that
/// no longer cover any VMA. Requires the write lock. Fails (ENOMEM) only
/// before changing anything: a shared PTE table the range covers in part
/// must first become this space's own, which may need a frame.
pub(crate) fn unmap_locked(mm: &MmInner, st: &mut MmState, start: u64, end: u64) -> Result<()> {
    if st.vmas.overlapping(start, end).next().is_none() {
        return Ok(());
    }
    let Some(pt) = st.pt.as_ref() else { return Ok(()) };
    unshare_range(mm, st, pt, start, end, true)?;
    let removed = st.vmas.remove_range(start, end);
    let st: &MmState = st;
    // Borrowed again after the VMA change; checked before the change
    // opens, so that no return can skip its end.
    let Some(pt) = st.pt.as_ref() else { return Ok(()) };
    let mut change = Change::open(mm, Some(st), start, end, Some(Event::Unmap)).write_locked();
    change.zap(pt, start, end, true);
    let floor = st.vmas.floor(start);
    let ceiling = st.vmas.ceiling(end, 1 << 48);
    let freed = pt.free_tables(mm.arena(), &mm.machine.counters, start, end, floor, ceiling);
    mm.machine.counters.page_tables.fetch_sub(freed as u64, Ordering::Relaxed);
    drop(change);
    // Shared objects of removed VMAs go when their last VMA does.
    drop(removed);
    Ok(())
}

/// Make every shared PTE table overlapping `[start, end)` this space's own
/// (`partial_only`: only those the range does not cover whole, which a zap
/// may simply drop).
pub(crate) fn unshare_range(
    mm: &MmInner,
    st: &MmState,
    pt: &PageTable,
    start: u64,
    end: u64,
    partial_only: bool,
) -> Result<()> {
    let arena = mm.arena();
    let mut ro: Vec<u64> = Vec::new();
    pt.for_each_pmd(arena, start, end, |_, e, lo, hi| {
        let whole = hi - lo == PTE_TABLE_SPAN;
        let skip = e.is_writable() || (partial_only && whole);
        if !skip {
            ro.push(lo);
        }
    });
    if ro.is_empty() {
        return Ok(());
    }
    // The same entries in a table of this space's own: no translation
    // changes, so the change is opened with no event.
    let mut change = Change::open(mm, Some(st), start, end, None);
    for va in ro {
        change.unshare(pt, va)?;
    }
    Ok(())
}

/// Release one zapped entry: the page becomes dirty if the entry was, the
/// mapping goes now, the reference after the TLB shootdown. A swap entry
/// drops its slot reference (and the swap cache's frame, if that was the
/// last); a migration entry is released as the present entry it stands for.
pub(crate) fn zap_pte(m: &crate::machine::MachineInner, pte: Pte, gather: &mut Gather) {
    let arena = &*m.arena;
    debug_assert!(!pte.is_borrowed(), "the zap core releases borrowed entries itself");
    if pte.is_swap() {
        if let Some(swap) = m.reclaim.swap.as_ref() {
            swap.put_entry(arena, pte.swap_slot());
        }
        return;
    }
    if pte.is_zero_frame() {
        gather.need_flush();
        return;
    }
    let f = pte.frame();
    let meta = arena.meta(f);
    // A dirty entry hands its dirtiness to the page (Linux's zap_pte_range:
    // folio_mark_dirty), so other mappings of a shared page see it dirty;
    // a private page only when it is in the swap cache (its copy there is
    // stale), as Linux marks no anonymous folio dirty at a zap: a sharer
    // that wrote holds a dirty entry of its own (fork copies the bit), and
    // one that gave MADV_FREE stays clean. Test first, as Linux's
    // `noop_dirty_folio` does: the page of a dirty entry is usually dirty
    // already, and a locked instruction per entry is a large share of an
    // exit's cost. DIRTY is cleared on a live frame only by MADV_FREE,
    // which first cleans the entry it holds.
    use crate::phys::flags::{ANON, DIRTY, SWAPCACHE};
    let fl = meta.flags();
    if pte.is_dirty() && fl & DIRTY == 0 && fl & (ANON | SWAPCACHE) != ANON {
        meta.set_flags(DIRTY);
    }
    match m.reclaim.swap.as_ref().filter(|_| meta.has(crate::phys::flags::SWAPCACHE)) {
        Some(swap) => {
            arena.get(f); // keeps it ours while we look, whatever the gather does
            gather.unmap_and_put(arena, f);
            free_swap_cache(swap, arena, f);
            arena.put(f);
        }
        None => gather.unmap_and_put(arena, f),
    }
}

/// A mapping of swap-cache frame `f` is gone (the caller holds a reference):
/// if it was the last and no swap entry names its slot, nobody can look
/// it up again, so take it out of the cache now (Linux's
/// `free_swap_cache`); the zapped entry's reference then frees it. A frame
/// locked now is left to its holder (`SwapSpace::unlock_frame`): the
/// mapping is dropped before the lock is tried, for that protocol.
fn free_swap_cache(swap: &crate::reclaim::swap::SwapSpace, arena: &crate::phys::FrameArena, f: crate::phys::FrameId) {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    if arena.meta(f).try_lock() {
        swap.remove_orphan(arena, f);
        swap.unlock_frame(arena, f);
    }
}

pub(crate) fn do_mprotect(mm: &MmInner, addr: u64, len: u64, prot: Prot) -> Result<()> {
    let Some(end) = args::mprotect_range(addr, len)? else { return Ok(()) };
    let mut st = mm.state.write();
    let nomem = Error::NotMapped { addr, len };
    // A hole at the very start fails before anything changes.
    match st.vmas.find(addr) {
        Some(_) => {}
        None => return Err(nomem),
    }
    // Entries are about to change: every shared table in the range becomes
    // this space's own first (the only step that can fail, with ENOMEM).
    if let Some(pt) = st.pt.as_ref() {
        unshare_range(mm, &st, pt, addr, end, false)?;
    }
    // The VMAs first, remembering the pieces whose entries change; then
    // the entries, in one change of the space.
    let mut pieces: Few<(u64, u64, bool, bool)> = Few::default();
    let mut tmp = addr;
    let mut result = Ok(());
    // PROT_EXEC lives in the VMA alone (entries carry no NX bit), but an
    // accessor caches a fetch's right: taking it away must shoot down.
    let mut lost_exec = false;
    // Locked private pieces made writable: COW is broken now, as mlock
    // would have (Linux's mprotect_fixup populates them).
    let mut repopulate: Vec<(u64, u64)> = Vec::new();
    while tmp < end {
        let Some(v) = st.vmas.find(tmp) else {
            result = Err(nomem.clone());
            break;
        };
        let hi = v.end.min(end);
        let new_account = account_after_mprotect(v, prot);
        if v.prot != prot || v.account != new_account {
            lost_exec |= v.prot.executable() && !prot.executable();
            if v.flags.contains(crate::vma::VmFlags::LOCKED)
                && v.kind() == MapKind::Private
                && !v.prot.writable()
                && prot.writable()
            {
                repopulate.push((tmp, hi));
            }
            st.vmas.split_at(tmp);
            st.vmas.split_at(hi);
            if let Some(piece) = st.vmas.get_mut(tmp) {
                piece.prot = prot;
                piece.account = new_account;
            }
            let notify = st.vmas.find(tmp).is_some_and(|v| v.writenotify());
            pieces.push((tmp, hi, v_kind_at(&st, tmp) == Some(MapKind::Shared), notify));
        }
        tmp = hi;
        if hi < end && st.vmas.find(hi).is_none_or(|n| n.start != hi) {
            result = Err(nomem.clone());
            break;
        }
    }
    let stop = tmp.min(end);
    {
        let mut change = Change::open(mm, Some(&st), addr, end, Some(Event::Protection));
        if lost_exec {
            change.need_flush();
        }
        if let Some(pt) = st.pt.as_ref() {
            for &(lo, hi, shared, notify) in pieces.iter() {
                change.protect(pt, lo, hi, prot, shared, notify);
            }
        }
        // As before the change type: every page of the range is looked at.
        change.translations_changed(addr, stop);
    }
    // Merge the changed pieces with each other and their neighbours.
    let mut b = addr;
    loop {
        st.vmas.try_merge_at(b);
        match st.vmas.find(b).map(|v| v.end) {
            Some(e) if e < stop => b = e,
            _ => break,
        }
    }
    st.vmas.try_merge_at(stop);
    drop(st);
    for (lo, hi) in repopulate {
        let _ = super::mlock::populate(mm, lo, hi, true);
    }
    result
}

/// Linux's `VM_ACCOUNT` after mprotect: a private mapping made writable is
/// charged; one made unwritable keeps its charge, except anonymous memory
/// in which no page was ever faulted (no anon_vma), where the charge is
/// dropped (`mprotect_fixup`'s `vma_is_anonymous` test: a private file
/// mapping keeps it). The flag takes part in VMA merging, so this is
/// visible in maps and smaps.
fn account_after_mprotect(v: &Vma, prot: Prot) -> bool {
    match &v.backing {
        Backing::Shm(_) => false,
        Backing::Anon(_) if prot.writable() => true,
        Backing::Anon(link) => v.account && (v.private_file().is_some() || link.get().0 != 0),
    }
}

fn v_kind_at(st: &MmState, va: u64) -> Option<MapKind> {
    st.vmas.find(va).map(|v| v.kind())
}
