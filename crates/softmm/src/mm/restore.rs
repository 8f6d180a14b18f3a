//! A restore's entries (`snapshot.rs`): the logged ranges, one 2 MiB span
//! (one PTE table) at a time, paying for the entries that differ.
//!
//! - A span the log covers whole, where the snapshot's table maps only
//!   private anonymous memory of the space's own history, is *re-shared*:
//!   the space's entries and table go, and the space maps the snapshot's
//!   table read-only, as a fork shares it (O(1) for the 512 entries).
//! - Otherwise each logged page whose entry differs from the snapshot's is
//!   zapped and re-pointed at the snapshot's page (shared copy-on-write
//!   again), both tables locked once per span; in a table that borrows
//!   from the snapshot's (`borrows_from_snapshot`) the page comes back as
//!   a borrowed entry (no reference, no mapping). A logged page whose
//!   entry is the snapshot's already (same frame, same protection, or the
//!   same swap entry, or none on both sides) is left alone.
//! - A span where the space has no VMA left loses its (empty) tables, as
//!   after a munmap.
//!
//! Other live snapshots of the space log exactly the pages changed here.

use super::change::Change;
use super::fork::has_anon_pages;
use super::{MmInner, MmState};
use crate::error::Result;
use crate::pgtable::{share, PageTable, PTE_TABLE_SPAN};
use crate::phys::flags;
use crate::pte::Pte;
use crate::sync::Ordering;
use crate::vma::{Backing, Vma};

/// The space and its snapshot, both locked (the space's `mmap_lock` for
/// writing, the snapshot's for reading).
pub(super) struct Restore<'a> {
    pub(super) mm: &'a MmInner,
    pub(super) st: &'a MmState,
    pub(super) pt: &'a PageTable,
    pub(super) sst: &'a MmState,
    pub(super) spt: &'a PageTable,
    /// Spans where the snapshot holds pages of its own (fork's copies of
    /// pages pinned at the snapshot): never re-shared.
    pub(super) own_spans: &'a [u64],
}

/// `ranges` (sorted, disjoint) cut at 2 MiB boundaries, grouped by span.
pub(super) fn spans(ranges: &[(u64, u64)]) -> Spans {
    let mut out = Spans { pieces: Vec::with_capacity(ranges.len()), ends: Vec::new() };
    for &(lo, hi) in ranges {
        let mut a = lo;
        while a < hi {
            let base = a & !(PTE_TABLE_SPAN - 1);
            let b = hi.min(base + PTE_TABLE_SPAN);
            out.pieces.push((a, b));
            match out.ends.last_mut() {
                Some((last, end)) if *last == base => *end = out.pieces.len(),
                _ => out.ends.push((base, out.pieces.len())),
            }
            a = b;
        }
    }
    out
}

/// Logged ranges grouped by 2 MiB span (one flat list of pieces).
pub(super) struct Spans {
    pieces: Vec<(u64, u64)>,
    /// Each span's base and the end of its pieces in `pieces`.
    ends: Vec<(u64, usize)>,
}

impl Spans {
    /// `(base, pieces)` of each span, in address order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &[(u64, u64)])> + '_ {
        let mut from = 0;
        self.ends.iter().map(move |&(base, end)| {
            let p = &self.pieces[from..end];
            from = end;
            (base, p)
        })
    }
}

fn whole(pieces: &[(u64, u64)]) -> bool {
    pieces.iter().map(|&(a, b)| b - a).sum::<u64>() == PTE_TABLE_SPAN
}

/// Before anything changes (the only step that may fail with nothing
/// changed but the sharing): the space's shared tables of spans the log
/// covers in part become its own. A span covered whole is dropped or
/// re-shared whole instead.
pub(super) fn unshare_partial(mm: &MmInner, st: &MmState, pt: &PageTable, spans: &Spans) -> Result<()> {
    let arena = mm.arena();
    let mut change: Option<Change<'_>> = None;
    for (base, pieces) in spans.iter() {
        if whole(pieces) || !pt.pte_table_shared(arena, base) {
            continue;
        }
        // The same entries in a table of this space's own: no
        // translation changes, so the change is opened with no event.
        let c = change.get_or_insert_with(|| Change::open(mm, Some(st), base, base + PTE_TABLE_SPAN, None));
        c.unshare(pt, base)?;
    }
    Ok(())
}

impl Restore<'_> {
    /// Put the snapshot's entries back over `spans` under `change`; the
    /// ranges whose entries changed go to `changed`.
    pub(super) fn entries(&self, change: &mut Change<'_>, spans: &Spans, changed: &mut Vec<(u64, u64)>) -> Result<()> {
        let arena = self.mm.arena();
        let mut next = spans.iter().map(|(base, _)| base).skip(1);
        for (base, pieces) in spans.iter() {
            // The next span's tables' locks (a cache miss each) load
            // meanwhile.
            if let Some(n) = next.next() {
                for t in [self.pt.pte_table(arena, n), self.spt.pte_table(arena, n)].into_iter().flatten() {
                    arena.prefetch_meta(t);
                }
            }
            if whole(pieces) && self.may_reshare(base) {
                self.reshare(change, base)?;
                changed.push((base, base + PTE_TABLE_SPAN));
            } else {
                self.repoint(change, base, pieces, changed)?;
            }
            self.free_if_unmapped(base);
        }
        Ok(())
    }

    /// Whether the span at `base` may map the snapshot's table: a fork
    /// would share it (every VMA over it private with anonymous pages), and
    /// it holds no page of the snapshot's own.
    fn may_reshare(&self, base: u64) -> bool {
        let end = base + PTE_TABLE_SPAN;
        let mut covered = 0;
        for v in self.sst.vmas.overlapping(base, end) {
            if !has_anon_pages(v) {
                return false;
            }
            covered += v.end.min(end) - v.start.max(base);
        }
        covered == PTE_TABLE_SPAN && self.own_spans.binary_search(&base).is_err()
    }

    /// Drop the space's entries and table of the span at `base`, then map
    /// the snapshot's table there (shared, read-only at the PMD level).
    fn reshare(&self, change: &mut Change<'_>, base: u64) -> Result<()> {
        let (arena, c) = (self.mm.arena(), &self.mm.machine.counters);
        let end = base + PTE_TABLE_SPAN;
        change.zap(self.pt, base, end, true);
        let freed = self.pt.free_tables(arena, c, base, end, base, end);
        c.page_tables.fetch_sub(freed as u64, Ordering::Relaxed);
        if self.spt.pte_table(arena, base).is_some() {
            share::share_table(arena, self.spt, self.pt, base, c)?;
        }
        Ok(())
    }

    /// The span at `base` where the space has no VMA any more loses its
    /// tables (`free_pgtables` after a munmap).
    fn free_if_unmapped(&self, base: u64) {
        let end = base + PTE_TABLE_SPAN;
        if self.st.vmas.overlapping(base, end).next().is_some() || self.pt.pte_table(self.mm.arena(), base).is_none() {
            return;
        }
        let (floor, ceiling) = (self.st.vmas.floor(base), self.st.vmas.ceiling(end, 1 << 48));
        let c = &self.mm.machine.counters;
        let freed = self.pt.free_tables(self.mm.arena(), c, base, end, floor, ceiling);
        c.page_tables.fetch_sub(freed as u64, Ordering::Relaxed);
    }

    /// The logged pages of one span whose entries differ from the
    /// snapshot's: zapped, then given the snapshot's entries.
    fn repoint(
        &self,
        change: &mut Change<'_>,
        base: u64,
        pieces: &[(u64, u64)],
        changed: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        let from = changed.len();
        // A span covered whole whose table is still shared (it may not be
        // re-shared): drop the space's reference, then fill a table anew.
        if self.pt.pte_table_shared(self.mm.arena(), base) {
            change.zap(self.pt, base, base + PTE_TABLE_SPAN, true);
            changed.push((base, base + PTE_TABLE_SPAN));
        }
        let zapped = changed.len();
        self.differing(base, pieces, changed);
        if changed.len() == from {
            return Ok(());
        }
        let runs = &changed[zapped..];
        let arena = self.mm.arena();
        if let Some(t) = self.pt.pte_table(arena, base) {
            if plain(arena, t) {
                return self.swap(change, base, t, runs, false);
            }
            if self.borrows_from_snapshot(t, base) {
                return self.swap(change, base, t, runs, true);
            }
        }
        for &(a, b) in runs {
            change.zap(self.pt, a, b, true);
        }
        self.copy(change, base, runs)
    }

    /// Whether the space's `table` (covering `base`) borrows its entries
    /// from the snapshot's table there and backs no other table (one
    /// reference: its one mapper), in a span where the snapshot holds no
    /// page of its own. Its entries may then be put back as borrowed ones
    /// (`swap`), as the unshare that made it copied them.
    fn borrows_from_snapshot(&self, table: crate::phys::FrameId, base: u64) -> bool {
        let arena = self.mm.arena();
        crate::pgtable::borrow::backing(arena, table).is_some()
            && crate::pgtable::borrow::backing(arena, table) == self.spt.pte_table(arena, base)
            && arena.meta(table).refcount() == 1
            && self.own_spans.binary_search(&base).is_err()
    }

    /// `repoint`'s zap and copy in one pass over `runs`, both tables locked
    /// once, for a space's `table` that backs no other's and either
    /// borrows nothing (`plain`) or borrows from the snapshot's table
    /// (`borrowing`, `borrows_from_snapshot`): each old entry is taken as
    /// `zap_entries` takes it and released as `Change::zap` releases it (a
    /// borrowed one holds nothing). A borrowing table gets the snapshot's
    /// present pages back as borrowed entries, as `share::unshare` copies
    /// them (B1: the entry names the frame its backing's entry names, both
    /// tables locked, backing first), without a reference or a mapping per
    /// page; the table keeps its reference on its backing throughout, so no
    /// hold is needed for the entries taken.
    fn swap(
        &self,
        change: &mut Change<'_>,
        base: u64,
        table: crate::phys::FrameId,
        runs: &[(u64, u64)],
        borrowing: bool,
    ) -> Result<()> {
        let arena = self.mm.arena();
        let stable = self.spt.pte_table(arena, base);
        let edit = change.edit();
        // The snapshot's table first, as in `copy`.
        let sg = stable.map(|t| self.spt.lock(arena, t, base, edit));
        let mut g = self.pt.lock(arena, table, base, edit);
        let mut result = Ok(());
        // The snapshot's VMA of the previous run: usually this one's too.
        let mut last: Option<&Vma> = None;
        for &(a, b) in runs {
            let mut va = a;
            while va < b {
                let old = take(&mut g, va);
                if old.is_borrowed() {
                    change.need_flush();
                } else if !old.is_none() {
                    super::mmap::zap_pte(&self.mm.machine, old, change.gather());
                }
                va += 4096;
            }
            change.translations_changed(a, b);
            let Some(sg) = sg.as_ref() else { continue };
            let cached = last.filter(|v| v.start <= a && b <= v.end);
            let looked = cached.is_none().then(|| self.sst.vmas.overlapping(a, b)).into_iter().flatten();
            for sv in cached.into_iter().chain(looked) {
                last = Some(sv);
                if !has_anon_pages(sv) {
                    continue;
                }
                let snap_own = own_anon(sv);
                let mut va = sv.start.max(a);
                while va < sv.end.min(b) && result.is_ok() {
                    let pte = sg.get(va);
                    if borrowing && pte.is_present() && !pte.is_zero_frame() {
                        g.set(va, pte.with(Pte::BORROWED).without(Pte::ACCESSED | Pte::WRITE));
                        va += 4096;
                        continue;
                    }
                    match self.copy_one(pte, snap_own, va) {
                        Ok(Some(new)) => g.set(va, new),
                        Ok(None) => {}
                        Err(e) => result = Err(e),
                    }
                    va += 4096;
                }
            }
        }
        result
    }

    /// The entry the snapshot gives page `va` (in its VMA `sv`, if any):
    /// a private page's, or none (shared memory refaults from its object).
    fn wanted(&self, sv: Option<&Vma>, stable: Option<crate::phys::FrameId>, va: u64) -> Pte {
        match (sv, stable) {
            (Some(v), Some(t)) if has_anon_pages(v) => Pte::from_raw(
                crate::pgtable::slot(self.mm.arena(), t, crate::pgtable::index(va, 0)).load(Ordering::Acquire),
            ),
            _ => Pte::NONE,
        }
    }

    /// Append to `out` the runs of pages of `pieces` whose entry is not the
    /// snapshot's (read lock-free: the space's `mmap_lock` is held for
    /// writing, and lock-free setters only add accessed and dirty bits,
    /// which `same` ignores). A run never extends one `out` held before
    /// (the previous span's last run may end where this span starts: the
    /// caller counts this span's runs by what was appended).
    fn differing(&self, base: u64, pieces: &[(u64, u64)], out: &mut Vec<(u64, u64)>) {
        let first = out.len();
        let arena = self.mm.arena();
        let stable = self.spt.pte_table(arena, base);
        let table = self.pt.pte_table(arena, base);
        // The snapshot's VMA of the previous piece: usually this one's too.
        let mut last: Option<&Vma> = None;
        for &(lo, hi) in pieces {
            let mut va = lo;
            while va < hi {
                let sv = match last {
                    Some(v) if v.start <= va && va < v.end => Some(v),
                    _ => self.sst.vmas.find(va),
                };
                last = sv;
                // The pages up to the next VMA boundary share `sv`.
                let stop = match sv {
                    Some(v) => v.end.min(hi),
                    None => self.sst.vmas.overlapping(va, hi).next().map_or(hi, |v| v.start.max(va)),
                };
                while va < stop {
                    let have = table.map_or(Pte::NONE, |t| {
                        Pte::from_raw(
                            crate::pgtable::slot(arena, t, crate::pgtable::index(va, 0)).load(Ordering::Acquire),
                        )
                    });
                    if !same(have, self.wanted(sv, stable, va)) {
                        match out[first..].last_mut() {
                            Some(last) if last.1 == va => last.1 = va + 4096,
                            _ => out.push((va, va + 4096)),
                        }
                    }
                    va += 4096;
                }
            }
        }
    }

    /// Give the (zapped) pages of `runs`, in the span at `base`, the
    /// snapshot's entries, both tables locked once.
    fn copy(&self, change: &Change<'_>, base: u64, runs: &[(u64, u64)]) -> Result<()> {
        let arena = self.mm.arena();
        let Some(stable) = self.spt.pte_table(arena, base) else { return Ok(()) };
        let mut anon = Vec::new();
        for &(a, b) in runs {
            for sv in self.sst.vmas.overlapping(a, b).filter(|v| has_anon_pages(v)) {
                anon.push((sv.start.max(a), sv.end.min(b), own_anon(sv)));
            }
        }
        if anon.is_empty() {
            return Ok(());
        }
        let mut added = 0;
        let table = self.pt.pte_table_alloc(arena, base, &mut added);
        self.mm.machine.counters.page_tables.fetch_add(added as u64, Ordering::Relaxed);
        let table = table?;
        // The snapshot's table first: it is the backing when the space's
        // borrows from it (backing before borrower).
        let sg = self.spt.lock(arena, stable, base, change.edit());
        let mut g = self.pt.lock(arena, table, base, change.edit());
        for (a, b, snap_own) in anon {
            let mut va = a;
            while va < b {
                let pte = sg.get(va);
                if let Some(new) = self.copy_one(pte, snap_own, va)? {
                    g.set(va, new);
                }
                va += 4096;
            }
        }
        Ok(())
    }

    /// The space's entry for the snapshot's `pte` at `va`, as fork copies
    /// a parent's: present pages shared and read-only, swap entries with a
    /// slot reference each, zero-frame entries as they are. A page the
    /// snapshot holds alone (fork's copy of a page pinned in the space) is
    /// copied into a new frame of the space's own.
    fn copy_one(&self, pte: Pte, snap_own: u64, va: u64) -> Result<Option<Pte>> {
        let arena = self.mm.arena();
        if pte.is_swap() {
            if let Some(swap) = self.mm.machine.reclaim.swap.as_ref() {
                if snap_own != 0 {
                    if let Some(nf) = self.own_copy_of_slot(swap, pte.swap_slot(), snap_own, va)? {
                        return Ok(Some(Pte::new(nf, Pte::DIRTY | Pte::USER)));
                    }
                }
                swap.dup(pte.swap_slot());
            }
            return Ok(Some(pte));
        }
        if pte.is_present() && pte.is_zero_frame() {
            return Ok(Some(pte.without(Pte::ACCESSED | Pte::WRITE | Pte::BORROWED)));
        }
        let Some(f) = (if pte.is_borrowed() { Some(pte.frame()) } else { pte.counted_frame() }) else {
            return Ok(None);
        };
        let m = arena.meta(f);
        if snap_own != 0 && m.owner.load(Ordering::Relaxed) == snap_own {
            let own = live_anon(self.st, va);
            let nf = arena.alloc(false, flags::DIRTY)?;
            arena.copy_frame(nf, f);
            let nm = arena.meta(nf);
            nm.owner.store(own, Ordering::Relaxed);
            nm.index.store(m.index.load(Ordering::Relaxed), Ordering::Relaxed);
            nm.add_counts(0, 1);
            nm.set_flags(flags::ANON);
            return Ok(Some(Pte::new(nf, Pte::DIRTY | (pte.raw() & Pte::USER))));
        }
        m.add_counts(1, 1);
        Ok(Some(pte.without(Pte::ACCESSED | Pte::WRITE | Pte::BORROWED)))
    }
}

impl Restore<'_> {
    /// A page the snapshot holds alone that went to swap (its copy of a
    /// page pinned in the space, found by the slot's recorded owner or its
    /// cached frame's): a new frame of the space's own with its bytes, from
    /// the swap cache or else read from the device, so that no frame of the
    /// snapshot's own anon_vma is ever mapped in the space (its rmap would
    /// not reach it). `None`: a page the space may share by the swap entry.
    fn own_copy_of_slot(
        &self,
        swap: &crate::reclaim::swap::SwapSpace,
        slot: u32,
        snap_own: u64,
        va: u64,
    ) -> Result<Option<crate::phys::FrameId>> {
        let arena = self.mm.arena();
        let cached = swap.lookup(arena, slot);
        let (owner, index) = match cached {
            Some(f) => (arena.meta(f).owner.load(Ordering::Relaxed), arena.meta(f).index.load(Ordering::Relaxed)),
            None => swap.rmap_of(slot),
        };
        let release = |f: Option<crate::phys::FrameId>| {
            if let Some(f) = f {
                arena.put(f);
            }
        };
        if owner != snap_own {
            release(cached);
            return Ok(None);
        }
        let nf = match arena.alloc(false, flags::DIRTY) {
            Ok(f) => f,
            Err(e) => {
                release(cached);
                return Err(e);
            }
        };
        if let Some(f) = cached {
            arena.copy_frame(nf, f);
            release(cached);
        } else {
            let mut page = [0u8; crate::phys::PAGE_SIZE];
            if let Err(e) = swap.dev.read_page(u64::from(slot), &mut page) {
                arena.put(nf);
                let what = format!("reading slot {slot} of {}: {e}", swap.dev.describe());
                return Err(crate::error::Error::Io { addr: va, what });
            }
            arena.write(nf, 0, &page);
        }
        let nm = arena.meta(nf);
        nm.owner.store(live_anon(self.st, va), Ordering::Relaxed);
        nm.index.store(index, Ordering::Relaxed);
        nm.add_counts(0, 1);
        nm.set_flags(flags::ANON);
        Ok(Some(nf))
    }
}

/// A PTE table that neither borrows entries nor is borrowed from (one
/// reference: its one mapper): its entries may be cleared one by one.
fn plain(arena: &crate::phys::FrameArena, t: crate::phys::FrameId) -> bool {
    crate::pgtable::borrow::backing(arena, t).is_none() && arena.meta(t).refcount() == 1
}

/// Clear the entry at `va` of a locked table, as `zap_entries` does:
/// lock-free setters may still add accessed and dirty bits, which must
/// reach the page.
fn take(g: &mut crate::pgtable::PteTableGuard<'_>, va: u64) -> Pte {
    let mut old = g.get(va);
    while !old.is_none() {
        match g.cas(va, old, Pte::NONE) {
            Ok(_) => break,
            Err(now) => old = now,
        }
    }
    old
}

/// Whether the space's entry `have` is already what the restore would
/// write for the snapshot's `want`: the same frame, read-only, with the
/// same protection and dirty bit (the accessed bit aside), or the same
/// non-present entry (none, or one swap slot). The dirty bit counts:
/// `MADV_FREE` cleans a snapshot's dirty entry without changing its frame,
/// and a lazily freed clean page would be dropped where the snapshot's
/// is kept (a read-only entry gains no dirty bit lock-free).
fn same(have: Pte, want: Pte) -> bool {
    if !have.is_present() || !want.is_present() {
        return have.raw() == want.raw();
    }
    let mask = !(Pte::ACCESSED | Pte::WRITE | Pte::BORROWED);
    !have.is_writable() && have.frame() == want.frame() && have.raw() & mask == want.raw() & mask
}

fn own_anon(v: &Vma) -> u64 {
    match &v.backing {
        Backing::Anon(l) => l.get().0,
        Backing::Shm(_) => 0,
    }
}

/// The own anon_vma id of the space's VMA at `va` (restored from the
/// snapshot's, so it has one when the snapshot's has).
fn live_anon(st: &MmState, va: u64) -> u64 {
    st.vmas.find(va).map_or(0, own_anon)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn spans_cut_ranges_at_tables() {
        let s = PTE_TABLE_SPAN;
        let got = spans(&[(0x1000, 0x2000), (0x3000, s + 0x1000), (3 * s, 5 * s)]);
        let got: Vec<(u64, Vec<(u64, u64)>)> = got.iter().map(|(b, p)| (b, p.to_vec())).collect();
        assert_eq!(
            got,
            [
                (0, vec![(0x1000, 0x2000), (0x3000, s)]),
                (s, vec![(s, s + 0x1000)]),
                (3 * s, vec![(3 * s, 4 * s)]),
                (4 * s, vec![(4 * s, 5 * s)]),
            ]
        );
        assert!(!whole(&got[0].1) && whole(&got[2].1));
    }

    #[test]
    fn same_entries_ignore_access_bits_only() {
        let f = crate::phys::FrameId(7);
        let ro = Pte::new(f, Pte::USER);
        assert!(same(ro.with(Pte::ACCESSED), ro));
        assert!(!same(ro, ro.with(Pte::DIRTY)), "MADV_FREE cleaned the snapshot's dirty entry");
        assert!(same(Pte::NONE, Pte::NONE));
        assert!(!same(ro.with(Pte::WRITE), ro), "a writable entry may have been written");
        assert!(!same(Pte::new(crate::phys::FrameId(8), Pte::USER), ro));
        assert!(!same(Pte::new(f, 0), ro), "protection differs");
        assert!(!same(Pte::NONE, ro));
        assert!(!same(ro, Pte::NONE));
    }
}
