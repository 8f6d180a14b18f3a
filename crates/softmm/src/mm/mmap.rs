//! mmap, munmap, mprotect and madvise: VMA changes and the page-table work
//! they imply (`zap_pte_range`, `change_protection`, `free_pgtables`).

use super::args::{self, Advice, Placement};
use super::gather::Gather;
use super::{MmInner, MmState};
use crate::error::{Error, Result};
use crate::pgtable::{share, PageTable, PTE_TABLE_SPAN, TASK_SIZE};
use crate::phys::{FrameArena, FrameId};
use crate::pte::Pte;
use crate::sync::Ordering;
use crate::vma::{AnonLink, Backing, MapKind, Prot, Vma};

pub(crate) fn do_mmap(mm: &MmInner, addr: u64, len: u64, prot: Prot, kind: MapKind, place: Placement) -> Result<u64> {
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
        Placement::Hint => {
            let hint = args::page_align(addr).unwrap_or(0).max(min);
            let free = hint.checked_add(len).is_some_and(|e| e <= TASK_SIZE)
                && st.vmas.overlapping(hint, hint + len).next().is_none();
            if addr != 0 && free {
                hint
            } else {
                st.vmas.find_free(len, min, TASK_SIZE).ok_or(Error::NoMemory("no free address range"))?
            }
        }
    };
    let end = start + len;
    let backing = match kind {
        MapKind::Private => Backing::Anon(AnonLink::new(mm.mm_ref())),
        MapKind::Shared => Backing::Shm(crate::shm::ShmLink::new(mm.machine.new_shm(len >> 12)?, mm.mm_ref())),
    };
    // MAP_FIXED over existing mappings unmaps them first.
    unmap_locked(mm, &mut st, start, end)?;
    let pgoff = match kind {
        MapKind::Private => start >> 12,
        MapKind::Shared => 0,
    };
    let account = kind == MapKind::Private && prot.writable();
    st.vmas.insert(Vma { start, end, prot, account, pgoff, backing });
    // Linux's vma_merge: merge with the previous VMA first; the next one
    // joins only if it is compatible with the result (prev's anon_vma).
    st.vmas.try_merge_at(start);
    st.vmas.try_merge_at(end);
    Ok(start)
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
fn unmap_locked(mm: &MmInner, st: &mut MmState, start: u64, end: u64) -> Result<()> {
    if st.vmas.overlapping(start, end).next().is_none() {
        return Ok(());
    }
    let Some(pt) = st.pt.as_ref() else { return Ok(()) };
    unshare_range(mm, pt, start, end, true)?;
    let removed = st.vmas.remove_range(start, end);
    // Borrowed again after the VMA change; checked before the bracket
    // opens, so that no return can skip its end.
    let Some(pt) = st.pt.as_ref() else { return Ok(()) };
    let inv = mm.notifiers.start_blocking(start, end, crate::notifier::Event::Unmap);
    let arena = mm.arena();
    let mut gather = Gather::for_write_locked(mm);
    zap_range(mm, pt, start, end, true, &mut gather);
    crate::futex::invalidate(mm, Some(st), start, end);
    let floor = st.vmas.floor(start);
    let ceiling = st.vmas.ceiling(end, 1 << 48);
    let freed = pt.free_tables(arena, &mm.machine.counters, start, end, floor, ceiling);
    mm.machine.counters.page_tables.fetch_sub(freed as u64, Ordering::Relaxed);
    gather.finish(mm, None);
    mm.notifiers.end(inv);
    // Shared objects of removed VMAs go when their last VMA does.
    drop(removed);
    Ok(())
}

/// Make every shared PTE table overlapping `[start, end)` this space's own
/// (`partial_only`: only those the range does not cover whole, which a zap
/// may simply drop).
pub(crate) fn unshare_range(mm: &MmInner, pt: &PageTable, start: u64, end: u64, partial_only: bool) -> Result<()> {
    let arena = mm.arena();
    let mut ro: Vec<u64> = Vec::new();
    pt.for_each_pmd(arena, start, end, |_, e, lo, hi| {
        let whole = hi - lo == PTE_TABLE_SPAN;
        let skip = e.is_writable() || (partial_only && whole);
        if !skip {
            ro.push(lo);
        }
    });
    for va in ro {
        share::unshare(arena, pt, va, &mm.machine.counters, mm.machine.reclaim.swap.as_deref())?;
    }
    Ok(())
}

/// Release one zapped entry: the page becomes dirty if the entry was, the
/// mapping goes now, the reference after the TLB shootdown. A swap entry
/// drops its slot reference (and the swap cache's frame, if that was the
/// last); a migration entry is released as the present entry it stands for.
pub(crate) fn zap_pte(m: &crate::machine::MachineInner, pte: Pte, gather: &mut Gather) {
    let arena = &*m.arena;
    debug_assert!(!pte.is_borrowed(), "zap_entries releases borrowed entries itself");
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
    // folio_mark_dirty), so other mappings of a shared page see it dirty.
    // Test first, as Linux's `noop_dirty_folio` does: the page of a dirty
    // entry is usually dirty already, and a locked instruction per entry is
    // a large share of an exit's cost. DIRTY is never cleared on a live
    // frame (only a free resets the flags), so the test cannot go stale.
    if pte.is_dirty() && !meta.has(crate::phys::flags::DIRTY) {
        meta.set_flags(crate::phys::flags::DIRTY);
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

/// `zap_pte_range` over `[start, end)`: clear every entry, drop mappings,
/// and defer the frame references to `gather`. A shared PTE table the range
/// covers whole is dropped instead (`may_drop`, under the write lock: only
/// its last sharer zaps it); one covered in part must have been unshared.
pub(crate) fn zap_range(mm: &MmInner, pt: &PageTable, start: u64, end: u64, may_drop: bool, gather: &mut Gather) {
    let arena = mm.arena();
    let c = &mm.machine.counters;
    pt.for_each_pmd(arena, start, end, |s, e, lo, hi| {
        let base = lo & !(PTE_TABLE_SPAN - 1);
        if !e.is_writable() {
            debug_assert!(may_drop && hi - lo == PTE_TABLE_SPAN, "partial zap of a shared PTE table");
            let pending = gather.shootdown_pending();
            if let share::Left::Later(t) =
                share::drop_shared(arena, s, e, base, c, pending, |_, p| zap_pte(&mm.machine, p, gather))
            {
                gather.drop_table_later(t, base);
            }
            return;
        }
        zap_table_entries(mm, e.frame(), base, lo, hi, gather);
    });
}

/// Zap `[lo, hi)` of this space's own PTE table `t` (covering `base`). If
/// `t` borrows entries and accessors may cache them until the shootdown,
/// first take a hold on its backing (`pgtable/borrow.rs`): the backing's
/// last mapper could otherwise free their frames before that.
pub(crate) fn zap_table_entries(mm: &MmInner, t: FrameId, base: u64, lo: u64, hi: u64, gather: &mut Gather) {
    let arena = mm.arena();
    if gather.shootdown_pending() {
        if let Some(b) = crate::pgtable::borrow::hold(arena, t, base) {
            gather.drop_table_later(b, base);
        }
    }
    if crate::pgtable::zap_entries(arena, t, base, lo, hi, |_, p| zap_pte(&mm.machine, p, gather)) {
        gather.need_flush();
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
        unshare_range(mm, pt, addr, end, false)?;
    }
    let inv = mm.notifiers.start_blocking(addr, end, crate::notifier::Event::Protection);
    let mut gather = Gather::default();
    let mut tmp = addr;
    let mut result = Ok(());
    while tmp < end {
        let Some(v) = st.vmas.find(tmp) else {
            result = Err(nomem.clone());
            break;
        };
        let hi = v.end.min(end);
        let new_account = account_after_mprotect(v, prot);
        if v.prot != prot || v.account != new_account {
            st.vmas.split_at(tmp);
            st.vmas.split_at(hi);
            if let Some(piece) = st.vmas.get_mut(tmp) {
                piece.prot = prot;
                piece.account = new_account;
            }
            let shared = v_kind_at(&st, tmp) == Some(MapKind::Shared);
            if let Some(pt) = st.pt.as_ref() {
                change_protection(mm.arena(), pt, tmp, hi, prot, shared, &mut gather);
            }
        }
        tmp = hi;
        if hi < end && st.vmas.find(hi).is_none_or(|n| n.start != hi) {
            result = Err(nomem.clone());
            break;
        }
    }
    // Merge the changed pieces with each other and their neighbours.
    let mut b = addr;
    let stop = tmp.min(end);
    loop {
        st.vmas.try_merge_at(b);
        match st.vmas.find(b).map(|v| v.end) {
            Some(e) if e < stop => b = e,
            _ => break,
        }
    }
    st.vmas.try_merge_at(stop);
    crate::futex::invalidate(mm, Some(&st), addr, stop);
    gather.finish(mm, None);
    mm.notifiers.end(inv);
    result
}

/// Linux's `VM_ACCOUNT` after mprotect: a private mapping made writable is
/// charged; one made unwritable keeps its charge, except when no anonymous
/// page was ever faulted in (no anon_vma), where the charge is dropped.
/// The flag takes part in VMA merging, so this is visible in smaps.
fn account_after_mprotect(v: &Vma, prot: Prot) -> bool {
    match &v.backing {
        Backing::Shm(_) => false,
        Backing::Anon(_) if prot.writable() => true,
        Backing::Anon(link) => v.account && link.get().0 != 0,
    }
}

fn v_kind_at(st: &MmState, va: u64) -> Option<MapKind> {
    st.vmas.find(va).map(|v| v.kind())
}

/// Rewrite the permission bits of present entries in `[start, end)`.
/// Private pages never become writable here (COW decides at the next write
/// fault); shared pages become writable when the protection allows it.
fn change_protection(
    arena: &FrameArena,
    pt: &PageTable,
    start: u64,
    end: u64,
    prot: Prot,
    shared: bool,
    gather: &mut Gather,
) {
    pt.for_each_pte_table(arena, start, end, |table, lo, hi| {
        let mut g = pt.lock(arena, table, lo & !(PTE_TABLE_SPAN - 1));
        let mut va = lo;
        while va < hi {
            let pte = g.get(va);
            // A migration entry carries the flags it will be restored
            // with: they change as the present entry's would.
            if pte.is_present() || pte.is_migration() {
                let mut new = if prot.readable() { pte.with(Pte::USER) } else { pte.without(Pte::USER) };
                if !prot.writable() {
                    new = new.without(Pte::WRITE);
                } else if shared && !pte.is_borrowed() {
                    new = new.with(Pte::WRITE);
                }
                if new != pte {
                    g.set(va, new);
                    if (pte.is_writable() && !new.is_writable()) || (pte.is_user() && !new.is_user()) {
                        gather.need_flush();
                    }
                }
            }
            va += 4096;
        }
    });
}

pub(crate) fn do_madvise(mm: &MmInner, addr: u64, len: u64, advice: Advice) -> Result<()> {
    let Some(end) = args::madvise_range(addr, len)? else { return Ok(()) };
    match advice {
        Advice::DontNeed => {}
    }
    let st = mm.state.read();
    let Some(pt) = st.pt.as_ref() else { return Err(Error::Exited) };
    // Under the read lock no table may be dropped: unshare, then zap.
    unshare_range(mm, pt, addr, end, false)?;
    let inv = mm.notifiers.start_blocking(addr, end, crate::notifier::Event::Clear);
    let mut gather = Gather::default();
    let mut covered = addr;
    let mut hole = false;
    for v in st.vmas.overlapping(addr, end) {
        if v.start > covered {
            hole = true;
        }
        zap_range(mm, pt, v.start.max(addr), v.end.min(end), false, &mut gather);
        covered = v.end;
    }
    crate::futex::invalidate(mm, Some(&st), addr, end);
    drop(st);
    gather.finish(mm, None);
    mm.notifiers.end(inv);
    if hole || covered < end {
        return Err(Error::NotMapped { addr, len });
    }
    Ok(())
}
