//! madvise(2): one function per advice, named as Linux's `mm/madvise.c`
//! names them, and the walk over the range's VMAs that applies them.
//!
//! Errors come as Linux gives them: the argument checks first (`args.rs`);
//! then the walk applies the advice VMA by VMA in address order, stops at
//! the first VMA the advice cannot apply to (EINVAL, the earlier VMAs keep
//! the advice), and answers ENOMEM at the end when part of the range was
//! not mapped (the mapped parts took the advice).

use super::args::{self, Advice};
use super::change::Change;
use super::fault::{self, Access};
use super::mmap::unshare_range;
use super::{MmInner, MmState};
use crate::error::{Error, Result};
use crate::notifier::Event;
use crate::pgtable::{PageTable, PTE_TABLE_SPAN};
use crate::phys::flags;
use crate::pte::Pte;
use crate::vma::{Backing, MapKind, Prot, VmFlags, Vma};
use std::sync::Arc;

pub(crate) fn do_madvise(mm: &MmInner, addr: u64, len: u64, advice: Advice) -> Result<()> {
    let Some(end) = args::madvise_range(addr, len)? else { return Ok(()) };
    let hole = Error::NotMapped { addr, len };
    match advice {
        Advice::PopulateRead => madvise_populate(mm, addr, end, Access::Read, hole),
        Advice::PopulateWrite => madvise_populate(mm, addr, end, Access::Write, hole),
        Advice::DontFork | Advice::DoFork | Advice::WipeOnFork | Advice::KeepOnFork => {
            madvise_update_vma(mm, addr, end, advice, hole)
        }
        Advice::Remove => madvise_remove(mm, addr, end, hole),
        Advice::DontNeed | Advice::Free | Advice::WillNeed | Advice::Cold | Advice::PageOut => {
            let st = mm.state.read();
            let Some(pt) = st.pt.as_ref() else { return Err(Error::Exited) };
            let (pieces, holes) = walk_vmas(&st, addr, end);
            let (pieces, refused) = applicable(pieces, |v| valid_vma(advice, v));
            if advice != Advice::WillNeed && !pieces.is_empty() {
                // Under the read lock no table may be dropped: entries
                // change only in tables of this space's own.
                unshare_range(mm, &st, pt, addr, end, false)?;
            }
            match advice {
                Advice::DontNeed => madvise_dontneed_single_vma(mm, &st, pt, &pieces, addr, end),
                Advice::Free => madvise_free_single_vma(mm, &st, pt, &pieces),
                Advice::Cold => madvise_cold_or_pageout_pte_range(mm, &st, pt, &pieces, false),
                Advice::PageOut => madvise_cold_or_pageout_pte_range(mm, &st, pt, &pieces, true),
                _ => madvise_willneed(mm, &st, &pieces),
            }
            drop(st);
            finish(refused, holes, hole)
        }
    }
}

/// A part `[lo, hi)` of the range and the VMA that maps it.
type Piece<'v> = (u64, u64, &'v Vma);

/// The pieces of a range in address order. Most ranges lie in one VMA,
/// which needs no allocation (a one-page madvise is ~90 ns; a `Vec` would
/// add a fifth to it).
#[derive(Default)]
enum Pieces<'v> {
    #[default]
    Empty,
    One([Piece<'v>; 1]),
    Many(Vec<Piece<'v>>),
}

impl<'v> Pieces<'v> {
    fn push(&mut self, p: Piece<'v>) {
        *self = match std::mem::take(self) {
            Pieces::Empty => Pieces::One([p]),
            Pieces::One([a]) => Pieces::Many(vec![a, p]),
            Pieces::Many(mut v) => {
                v.push(p);
                Pieces::Many(v)
            }
        };
    }

    fn truncate(&mut self, n: usize) {
        match self {
            Pieces::One(_) if n == 0 => *self = Pieces::Empty,
            Pieces::Many(v) => v.truncate(n),
            _ => {}
        }
    }
}

impl<'v> std::ops::Deref for Pieces<'v> {
    type Target = [Piece<'v>];
    fn deref(&self) -> &[Piece<'v>] {
        match self {
            Pieces::Empty => &[],
            Pieces::One(a) => a,
            Pieces::Many(v) => v,
        }
    }
}

/// `madvise_walk_vmas`: the mapped parts of `[start, end)` in address
/// order, and whether some part is not mapped.
fn walk_vmas(st: &MmState, start: u64, end: u64) -> (Pieces<'_>, bool) {
    let mut pieces = Pieces::default();
    let mut covered = start;
    let mut hole = false;
    for v in st.vmas.overlapping(start, end) {
        hole |= v.start > covered;
        pieces.push((v.start.max(start), v.end.min(end), v));
        covered = v.end;
    }
    (pieces, hole || covered < end)
}

/// The pieces up to the first VMA `ok` refuses, and that refusal.
fn applicable<'v>(mut pieces: Pieces<'v>, ok: impl Fn(&Vma) -> Result<()>) -> (Pieces<'v>, Option<Error>) {
    for i in 0..pieces.len() {
        if let Err(e) = ok(pieces[i].2) {
            pieces.truncate(i);
            return (pieces, Some(e));
        }
    }
    (pieces, None)
}

/// A refusal wins over holes (Linux returns at once); holes are ENOMEM.
fn finish(refused: Option<Error>, holes: bool, hole: Error) -> Result<()> {
    match refused {
        Some(e) => Err(e),
        None if holes => Err(hole),
        None => Ok(()),
    }
}

/// The per-VMA checks of the read-lock advices.
fn valid_vma(advice: Advice, v: &Vma) -> Result<()> {
    let locked = v.flags.contains(VmFlags::LOCKED);
    match advice {
        // madvise_dontneed_free_valid_vma and can_madv_lru_vma: not on
        // mlocked memory.
        Advice::DontNeed | Advice::Cold | Advice::PageOut if locked => Err(Error::Invalid("madvise of mlocked memory")),
        Advice::Free if locked => Err(Error::Invalid("madvise of mlocked memory")),
        // madvise_free_single_vma: private anonymous memory only.
        Advice::Free if v.kind() == MapKind::Shared || v.private_file().is_some() => {
            Err(Error::Invalid("MADV_FREE of shared or file memory"))
        }
        _ => Ok(()),
    }
}

/// `MADV_DONTNEED`: drop the pages. Private memory reads back as zeros
/// afterwards; shared memory keeps its contents in the object.
fn madvise_dontneed_single_vma(mm: &MmInner, st: &MmState, pt: &PageTable, pieces: &[Piece<'_>], start: u64, end: u64) {
    let mut change = Change::open(mm, Some(st), start, end, Some(Event::Clear));
    for &(lo, hi, _) in pieces {
        change.zap(pt, lo, hi, false);
    }
    // Every page of the range is looked at, as before the change type.
    change.translations_changed(start, end);
}

/// `MADV_FREE` over private anonymous pieces (`madvise_free_pte_range`).
fn madvise_free_single_vma(mm: &MmInner, st: &MmState, pt: &PageTable, pieces: &[Piece<'_>]) {
    let Some(&(start, _, _)) = pieces.first() else { return };
    let end = pieces.last().map_or(start, |p| p.1);
    let mut change = Change::open(mm, Some(st), start, end, Some(Event::Clear));
    for &(lo, hi, _) in pieces {
        let swapped = madvise_free_pte_range(mm, pt, &mut change, lo, hi);
        // A swapped-out page is dropped: its data is no longer wanted.
        for va in swapped {
            change.zap(pt, va, va + 4096, false);
        }
    }
}

/// Mark the present private pages of `[lo, hi)` lazily freeable: their
/// entries lose accessed and dirty, their frames lose `DIRTY` and gain
/// `LAZYFREE`, so that reclaim drops a page nobody wrote since instead of
/// swapping it. A page also mapped elsewhere (COW-shared after a fork)
/// stays mapped there: reclaim drops only clean entries, and a sharer that
/// wrote it holds a dirty one. Returns the swap entries met.
fn madvise_free_pte_range(mm: &MmInner, pt: &PageTable, change: &mut Change<'_>, lo: u64, hi: u64) -> Vec<u64> {
    let arena = mm.arena();
    let mut swapped = Vec::new();
    let mut flush = false;
    // The pages made lazily freeable: snapshots log them (a restore must
    // give back the snapshot's dirty entries, or reclaim could drop them).
    let mut cleaned: Option<(u64, u64)> = None;
    pt.for_each_pte_table(arena, lo, hi, |table, a, b| {
        let mut g = change.lock_table(pt, table, a & !(PTE_TABLE_SPAN - 1));
        for va in (a..b).step_by(4096) {
            let mut pte = g.get(va);
            if pte.is_swap() {
                swapped.push(va);
                continue;
            }
            // A borrowed entry (`pgtable/borrow.rs`) is cleaned like an
            // owned one: only its accessed and dirty bits change.
            if !pte.is_present() || pte.is_zero_frame() {
                continue;
            }
            let meta = arena.meta(pte.frame());
            if !meta.has(flags::ANON) {
                continue;
            }
            // A page in the swap cache is left as it is (Linux frees its
            // swap copy first, when it can).
            if meta.has(flags::SWAPCACHE) {
                continue;
            }
            // Every mapping that wrote the page holds a dirty entry (fork
            // copies the bit), so the frame's own DIRTY, which softmm sets
            // when a write creates the page, can go: Linux's anonymous
            // folio is clean there too, and a sharer's smaps and reclaim
            // go by its own entry.
            meta.clear_flags(flags::DIRTY);
            // The CPU may set accessed or dirty meanwhile (without the lock).
            while pte.is_accessed() || pte.is_dirty() {
                match g.cas(va, pte, pte.without(Pte::ACCESSED | Pte::DIRTY)) {
                    Ok(_) => {
                        flush = true;
                        break;
                    }
                    Err(now) => pte = now,
                }
            }
            meta.set_flags(flags::LAZYFREE);
            cleaned = Some(cleaned.map_or((va, va + 4096), |(l, _)| (l, va + 4096)));
        }
    });
    if let Some((l, h)) = cleaned {
        change.pages_changed(l, h);
    }
    if flush {
        // A cached translation would let a write skip setting dirty again.
        change.need_flush();
    }
    swapped
}

/// `MADV_COLD` / `MADV_PAGEOUT` (`madvise_cold_or_pageout_pte_range`):
/// the pages mapped only here (anonymous, a file's or shared memory's)
/// lose their accessed bits, so that reclaim takes them first; PAGEOUT
/// then reclaims them now: anonymous pages as far as swap allows, a file's
/// or shared memory's unmapped and then swapped out, or dropped when clean
/// ([`crate::reclaim::reclaim_pages`]). Pages mapped in several spaces, or
/// twice here, are left alone.
fn madvise_cold_or_pageout_pte_range(mm: &MmInner, st: &MmState, pt: &PageTable, pieces: &[Piece<'_>], pageout: bool) {
    let arena = mm.arena();
    let Some(&(start, _, _)) = pieces.first() else { return };
    let end = pieces.last().map_or(start, |p| p.1);
    let mut frames = Vec::new();
    {
        let mut change = Change::open(mm, Some(st), start, end, None);
        let mut flush = false;
        for &(lo, hi, _) in pieces {
            pt.for_each_pte_table(arena, lo, hi, |table, a, b| {
                let mut g = change.lock_table(pt, table, a & !(PTE_TABLE_SPAN - 1));
                for va in (a..b).step_by(4096) {
                    let mut pte = g.get(va);
                    if !pte.is_present() || pte.is_zero_frame() || pte.is_borrowed() {
                        continue;
                    }
                    let meta = arena.meta(pte.frame());
                    if meta.mapcount() != 1 || !meta.has(flags::ANON | flags::SHM) {
                        continue;
                    }
                    while pte.is_accessed() {
                        match g.cas(va, pte, pte.without(Pte::ACCESSED)) {
                            Ok(_) => {
                                flush = true;
                                break;
                            }
                            Err(now) => pte = now,
                        }
                    }
                    meta.clear_flags(flags::REFERENCED);
                    if pageout && arena.try_get(pte.frame()) {
                        frames.push(pte.frame());
                    }
                }
            });
        }
        if flush {
            change.need_flush();
        }
    }
    // The references taken above pass to reclaim.
    crate::reclaim::reclaim_pages(&mm.machine, &frames);
}

/// `MADV_WILLNEED`: swapped-out pages of the range are read back into
/// the swap cache (not mapped); shared memory's pages come back into its
/// object. Without swap there is nothing to read.
fn madvise_willneed(mm: &MmInner, st: &MmState, pieces: &[Piece<'_>]) {
    if mm.machine.reclaim.swap.is_none() {
        return;
    }
    for &(lo, hi, v) in pieces {
        crate::reclaim::swapin_range(mm, st, v, lo, hi);
    }
}

/// `MADV_POPULATE_READ` / `MADV_POPULATE_WRITE`: fault every page in, as a
/// read or a write would, without touching its bytes. A VMA the access is
/// not allowed in is EINVAL; a hole is ENOMEM at once (what is before it
/// stays populated); a fault that would raise a signal is EFAULT.
fn madvise_populate(mm: &MmInner, start: u64, end: u64, access: Access, hole: Error) -> Result<()> {
    let st = mm.state.read();
    if st.pt.is_none() {
        return Err(Error::Exited);
    }
    let mut va = start;
    while va < end {
        let Some(v) = st.vmas.find(va) else { return Err(hole) };
        // GUP's check_vma_flags: VM_READ itself, not what x86 lets
        // loads through (PROT_WRITE alone is not readable here).
        let allowed = match access {
            Access::Write => v.prot.writable(),
            _ => v.prot.union(Prot::READ) == v.prot,
        };
        if !allowed {
            return Err(Error::Invalid("populate of memory without that access"));
        }
        let stop = v.end.min(end);
        while va < stop {
            fault::fault_in(mm, &st, va, access, None).map_err(|e| match e {
                Error::Segv { addr, .. } => Error::Fault { addr },
                e => e,
            })?;
            va += 4096;
        }
    }
    Ok(())
}

/// DONTFORK / DOFORK / WIPEONFORK / KEEPONFORK: the VMA flags of the
/// range change (`madvise_update_vma`), splitting and merging VMAs.
fn madvise_update_vma(mm: &MmInner, start: u64, end: u64, advice: Advice, hole: Error) -> Result<()> {
    let mut st = mm.state.write();
    if st.pt.is_none() {
        return Err(Error::Exited);
    }
    let (pieces, holes) = walk_vmas(&st, start, end);
    // A private file mapping counts as shared here: Linux's
    // WIPEONFORK wants anonymous memory (no `vm_file`).
    let kind_of = |v: &Vma| if v.private_file().is_some() { MapKind::Shared } else { v.kind() };
    let ranges: Vec<(u64, u64, VmFlags, MapKind)> =
        pieces.iter().map(|&(lo, hi, v)| (lo, hi, v.flags, kind_of(v))).collect();
    let mut refused = None;
    let mut changed = Vec::new();
    for (lo, hi, old, kind) in ranges {
        let new = match advice {
            Advice::DontFork => old.with(VmFlags::DONTCOPY),
            Advice::DoFork => old.without(VmFlags::DONTCOPY),
            // Anonymous private memory only.
            Advice::WipeOnFork if kind == MapKind::Shared => {
                refused = Some(Error::Invalid("MADV_WIPEONFORK of shared or file memory"));
                break;
            }
            Advice::WipeOnFork => old.with(VmFlags::WIPEONFORK),
            _ => old.without(VmFlags::WIPEONFORK),
        };
        if new != old {
            st.vmas.split_at(lo);
            st.vmas.split_at(hi);
            if let Some(v) = st.vmas.get_mut(lo) {
                v.flags = new;
            }
            changed.push((lo, hi));
        }
    }
    for (lo, hi) in changed {
        st.vmas.try_merge_at(lo);
        st.vmas.try_merge_at(hi);
    }
    finish(refused, holes, hole)
}

/// `MADV_REMOVE`: punch the range's pages out of the shared objects behind
/// it (Linux's fallocate(PUNCH_HOLE) on shmem): every mapping of them goes,
/// and the pages read back as zeros. Private memory is EINVAL.
fn madvise_remove(mm: &MmInner, start: u64, end: u64, hole: Error) -> Result<()> {
    let st = mm.state.read();
    if st.pt.is_none() {
        return Err(Error::Exited);
    }
    let (pieces, holes) = walk_vmas(&st, start, end);
    let (pieces, refused) = applicable(pieces, |v| match &v.backing {
        _ if v.flags.contains(VmFlags::LOCKED) => Err(Error::Invalid("MADV_REMOVE of mlocked memory")),
        Backing::Shm(_) => Ok(()),
        // madvise_remove: a file mapping not shared and writable.
        Backing::Anon(_) if v.private_file().is_some() => Err(Error::Denied("MADV_REMOVE of a private file mapping")),
        Backing::Anon(_) => Err(Error::Invalid("MADV_REMOVE of private memory")),
    });
    for &(lo, hi, v) in pieces.iter() {
        if let Backing::Shm(link) = &v.backing {
            let obj: &Arc<crate::shm::ShmObject> = link;
            crate::reclaim::punch_shm(&mm.machine, obj, v.pgoff_of(lo), (hi - lo) >> 12)?;
        }
    }
    drop(st);
    finish(refused, holes, hole)
}
