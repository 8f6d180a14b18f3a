//! Four-level radix page tables over arena frames.
//!
//! Levels are numbered as the span of one entry: level 0 entries map 4 KiB
//! pages (PTE tables), level 1 entries map 2 MiB (PMD), level 2 map 1 GiB
//! (PUD), level 3 map 512 GiB (PGD). 48-bit addresses, 512 entries a table.
//!
//! Concurrency (see also `mm/mod.rs`):
//! - Walks (`PageTable::follow_pte`, `PageTable::pte_table`) are lock-free
//!   loads. They run under the `mmap_lock` (read or write), which is what keeps
//!   tables from being freed under them: tables are only freed with the
//!   `mmap_lock` held for writing.
//! - A missing upper-level table is installed by compare-and-swap, so
//!   concurrent faults (under the read lock) need no lock to grow the tree.
//! - PTE entries change only through a [`PteTableGuard`], which holds the split
//!   page-table lock of that one PTE-table page.

pub(crate) mod borrow;
mod cursor;
mod remap;
pub(crate) mod share;
mod zap;

pub use cursor::PteTableGuard;
pub(crate) use cursor::{Edit, PteTableRead};
pub(crate) use remap::Moved;
pub(crate) use zap::ZapSink;

use crate::error::Result;
use crate::phys::{flags, FrameArena, FrameId, PAGE_SHIFT};
use crate::pte::Pte;
use crate::stats::Counters;
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries per table.
pub const PTRS_PER_TABLE: usize = 512;
/// Number of levels.
pub const LEVELS: u32 = 4;
/// One past the highest user address (x86-64, 4-level paging, minus the guard page).
pub const TASK_SIZE: u64 = (1 << 47) - 4096;

/// Bytes mapped by one entry of a table at `level`.
#[inline]
pub const fn entry_span(level: u32) -> u64 {
    1 << (PAGE_SHIFT + 9 * level)
}

/// Index of `va` in a table at `level`.
#[inline]
pub const fn index(va: u64, level: u32) -> usize {
    ((va >> (PAGE_SHIFT + 9 * level)) & (PTRS_PER_TABLE as u64 - 1)) as usize
}

/// Bytes covered by one PTE table (2 MiB).
pub const PTE_TABLE_SPAN: u64 = entry_span(1);

/// The entry `idx` of table frame `table`.
#[inline]
pub(crate) fn slot(arena: &FrameArena, table: FrameId, idx: usize) -> &AtomicU64 {
    arena.word64(table, idx * 8)
}

/// The page tables of one address space.
pub(crate) struct PageTable {
    root: FrameId,
}

impl PageTable {
    /// A new, empty tree (one root table).
    pub(crate) fn new(arena: &FrameArena) -> Result<PageTable> {
        Ok(PageTable { root: arena.alloc(true, flags::PAGETABLE)? })
    }

    pub(crate) fn root(&self) -> FrameId {
        self.root
    }

    /// The PTE mapping `va`, without faulting anything in (`follow_page`
    /// without the page). `Pte::NONE` when any level is missing. The write
    /// bit is the *effective* one: clear when the PMD entry is
    /// write-protected (a shared PTE table), as an MMU combines levels.
    pub(crate) fn follow_pte(&self, arena: &FrameArena, va: u64) -> Pte {
        let Some((s, _)) = self.pmd_slot(arena, va) else { return Pte::NONE };
        let pmd = Pte::from_raw(s.load(Ordering::Acquire));
        if !pmd.is_present() {
            return Pte::NONE;
        }
        let pte = Pte::from_raw(slot(arena, pmd.frame(), index(va, 0)).load(Ordering::Acquire));
        if pmd.is_writable() {
            pte
        } else {
            pte.without(Pte::WRITE)
        }
    }

    /// The PMD entry slot covering `va` and the PMD table holding it, if the
    /// upper levels exist. Lock-free.
    pub(crate) fn pmd_slot<'a>(&self, arena: &'a FrameArena, va: u64) -> Option<(&'a AtomicU64, FrameId)> {
        let mut table = self.root;
        for level in (2..LEVELS).rev() {
            let e = Pte::from_raw(slot(arena, table, index(va, level)).load(Ordering::Acquire));
            if !e.is_present() {
                return None;
            }
            table = e.frame();
        }
        Some((slot(arena, table, index(va, 1)), table))
    }

    /// The PMD entry slot covering `va`, allocating missing upper levels
    /// (not the PTE table). `added` counts tables installed.
    pub(crate) fn pmd_slot_alloc<'a>(
        &self,
        arena: &'a FrameArena,
        va: u64,
        added: &mut u32,
    ) -> Result<(&'a AtomicU64, FrameId)> {
        let mut table = self.root;
        for level in (2..LEVELS).rev() {
            let s = slot(arena, table, index(va, level));
            let e = Pte::from_raw(s.load(Ordering::Acquire));
            table = if e.is_present() {
                e.frame()
            } else {
                let (t, new) = install_table(arena, s)?;
                *added += new as u32;
                t
            };
        }
        Ok((slot(arena, table, index(va, 1)), table))
    }

    /// Whether the PTE table covering `va` is mapped write-protected at the
    /// PMD level (shared with other address spaces, or last of a sharing).
    pub(crate) fn pte_table_shared(&self, arena: &FrameArena, va: u64) -> bool {
        self.pmd_slot(arena, va).is_some_and(|(s, _)| {
            let e = Pte::from_raw(s.load(Ordering::Acquire));
            e.is_present() && !e.is_writable()
        })
    }

    /// The PTE table covering `va`, if it exists. Lock-free.
    pub(crate) fn pte_table(&self, arena: &FrameArena, va: u64) -> Option<FrameId> {
        let mut table = self.root;
        for level in (1..LEVELS).rev() {
            let e = Pte::from_raw(slot(arena, table, index(va, level)).load(Ordering::Acquire));
            if !e.is_present() {
                return None;
            }
            table = e.frame();
        }
        Some(table)
    }

    /// The PTE table covering `va`, allocating missing levels. `added` is
    /// increased by the table pages this call installed, also when it fails
    /// half-way (the tables installed before the failure stay).
    pub(crate) fn pte_table_alloc(&self, arena: &FrameArena, va: u64, added: &mut u32) -> Result<FrameId> {
        let (s, _) = self.pmd_slot_alloc(arena, va, added)?;
        let e = Pte::from_raw(s.load(Ordering::Acquire));
        if e.is_present() {
            return Ok(e.frame());
        }
        let (t, new) = install_table(arena, s)?;
        *added += new as u32;
        Ok(t)
    }

    /// Each entry of `[lo, hi)`, a range inside one PTE table, lock-free
    /// (as `follow_pte`, but the write bit is the table's own: callers
    /// look at present and accessed entries for reading only).
    pub(crate) fn peek_ptes(&self, arena: &FrameArena, lo: u64, hi: u64, mut f: impl FnMut(u64, Pte)) {
        debug_assert!(hi <= (lo | (PTE_TABLE_SPAN - 1)) + 1, "{lo:#x}..{hi:#x} crosses a PTE table");
        let Some(t) = self.pte_table(arena, lo) else { return };
        let mut va = lo;
        while va < hi {
            f(va, Pte::from_raw(slot(arena, t, index(va, 0)).load(Ordering::Acquire)));
            va += 4096;
        }
    }

    /// Set the accessed and dirty bits `bits` in the present PTE of `va`
    /// without the page-table lock, as an MMU does (Linux's
    /// `ptep_set_access_flags`): only if the entry is still `expected` (a
    /// compare-and-swap). Returns whether it succeeded. No translation
    /// changes, so no `mm::Change` is needed; other bits are refused.
    ///
    /// `expected` may be the effective entry of `follow_pte`; the swap is
    /// made on the stored entry, which must still map the same frame.
    pub(crate) fn set_access_flags(&self, arena: &FrameArena, va: u64, expected: Pte, bits: u64) -> bool {
        debug_assert_eq!(bits & !(Pte::ACCESSED | Pte::DIRTY), 0, "only accessed and dirty bits are set lock-free");
        let bits = bits & (Pte::ACCESSED | Pte::DIRTY);
        let Some(t) = self.pte_table(arena, va) else { return false };
        let s = slot(arena, t, index(va, 0));
        let raw = Pte::from_raw(s.load(Ordering::Acquire));
        if !raw.is_present()
            || raw.frame() != expected.frame()
            || raw.without(Pte::WRITE) != expected.without(Pte::WRITE)
        {
            return false;
        }
        s.compare_exchange(raw.raw(), raw.with(bits).raw(), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Lock the PTE table `table` that covers the 2 MiB-aligned `base`, to
    /// change its entries under an open `mm::Change` (`edit`).
    pub(crate) fn lock<'a>(&self, arena: &'a FrameArena, table: FrameId, base: u64, _edit: Edit) -> PteTableGuard<'a> {
        PteTableGuard::lock(arena, table, base)
    }

    /// Lock the PTE table `table` that covers the 2 MiB-aligned `base`, to
    /// read its entries.
    pub(crate) fn lock_read<'a>(&self, arena: &'a FrameArena, table: FrameId, base: u64) -> PteTableRead<'a> {
        PteTableRead::new(PteTableGuard::lock(arena, table, base))
    }

    /// Calls `f(table, lo, hi)` for every existing PTE table overlapping
    /// `[start, end)`, with `lo..hi` the part of the range it covers.
    /// Missing upper levels are skipped whole, so a sparse walk of a huge
    /// range costs only what is mapped.
    pub(crate) fn for_each_pte_table(
        &self,
        arena: &FrameArena,
        start: u64,
        end: u64,
        mut f: impl FnMut(FrameId, u64, u64),
    ) {
        self.for_each_pmd(arena, start, end, |_, pmd, lo, hi| f(pmd.frame(), lo, hi));
    }

    /// Calls `f(slot, entry, lo, hi)` for every present PMD entry (a PTE
    /// table) overlapping `[start, end)`, skipping missing upper levels.
    pub(crate) fn for_each_pmd(
        &self,
        arena: &FrameArena,
        start: u64,
        end: u64,
        mut f: impl FnMut(&AtomicU64, Pte, u64, u64),
    ) {
        walk_pmds(arena, self.root, LEVELS - 1, 0, start, end, &mut f);
    }

    /// Free every table whose whole span lies inside `[floor, ceiling)` and
    /// overlaps `[start, end)`: Linux's `free_pgtables` for the hole left by an
    /// unmap, where `floor`/`ceiling` are the ends of the neighbouring VMAs.
    /// Entries of freed PTE tables must already be zapped. Requires the
    /// `mmap_lock` held for writing. Returns the number of tables freed.
    pub(crate) fn free_tables(
        &self,
        arena: &FrameArena,
        c: &Counters,
        start: u64,
        end: u64,
        floor: u64,
        ceiling: u64,
    ) -> u32 {
        let r = FreeRange { arena, c, start, end, floor, ceiling };
        r.free(self.root, LEVELS - 1, 0)
    }

    /// Free the whole tree, root included. Every PTE must already be zapped.
    /// Returns the number of table pages freed.
    pub(crate) fn destroy(self, arena: &FrameArena, c: &Counters) -> u32 {
        let all = FreeRange { arena, c, start: 0, end: 1 << 48, floor: 0, ceiling: 1 << 48 };
        let n = all.free(self.root, LEVELS - 1, 0);
        arena.put(self.root);
        n + 1
    }

    /// Visit every table page of the tree: `f(frame, level)` (for audits).
    pub(crate) fn for_each_table(&self, arena: &FrameArena, mut f: impl FnMut(FrameId, u32)) {
        fn rec(arena: &FrameArena, t: FrameId, level: u32, f: &mut impl FnMut(FrameId, u32)) {
            f(t, level);
            if level == 0 {
                return;
            }
            for i in 0..PTRS_PER_TABLE {
                let e = Pte::from_raw(slot(arena, t, i).load(Ordering::Acquire));
                if e.is_present() {
                    rec(arena, e.frame(), level - 1, f);
                }
            }
        }
        rec(arena, self.root, LEVELS - 1, &mut f);
    }
}

/// The present entries of `table` (at `level`, mapping from `base`) whose
/// span starts before `end` and ends after `start`: (slot, entry, start of
/// the entry's span).
fn present_entries(
    arena: &FrameArena,
    table: FrameId,
    level: u32,
    base: u64,
    start: u64,
    end: u64,
) -> impl Iterator<Item = (&AtomicU64, Pte, u64)> {
    let span = entry_span(level);
    let first = if start > base { ((start - base) / span) as usize } else { 0 };
    (first..PTRS_PER_TABLE).map(move |i| (i, base + i as u64 * span)).take_while(move |&(_, lo)| lo < end).filter_map(
        move |(i, lo)| {
            let s = slot(arena, table, i);
            let e = Pte::from_raw(s.load(Ordering::Acquire));
            e.is_present().then_some((s, e, lo))
        },
    )
}

/// Recursive worker of `for_each_pmd`: `table` at `level` maps from `base`.
fn walk_pmds(
    arena: &FrameArena,
    table: FrameId,
    level: u32,
    base: u64,
    start: u64,
    end: u64,
    f: &mut impl FnMut(&AtomicU64, Pte, u64, u64),
) {
    let span = entry_span(level);
    for (s, e, lo) in present_entries(arena, table, level, base, start, end) {
        if level == 1 {
            f(s, e, lo.max(start), (lo + span).min(end));
        } else {
            walk_pmds(arena, e.frame(), level - 1, lo, start, end, f);
        }
    }
}

/// Install a fresh table in the empty slot `s`, or use the one a racing
/// fault installed first. Returns the table and whether this call added it.
fn install_table(arena: &FrameArena, s: &AtomicU64) -> Result<(FrameId, bool)> {
    let new = arena.alloc(true, flags::PAGETABLE)?;
    borrow::init_table(arena, new);
    match s.compare_exchange(0, Pte::table(new).raw(), Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok((new, true)),
        Err(cur) => {
            arena.put(new);
            Ok((Pte::from_raw(cur).frame(), false))
        }
    }
}

/// What `free_tables` frees (Linux's `free_pgtables` arguments): tables
/// overlapping `[start, end)` whose whole span lies in `[floor, ceiling)`.
struct FreeRange<'a> {
    arena: &'a FrameArena,
    c: &'a Counters,
    start: u64,
    end: u64,
    floor: u64,
    ceiling: u64,
}

impl FreeRange<'_> {
    /// Free what the range covers under `table` at `level`, which maps from
    /// `base` (recursively). Returns the number of tables freed.
    fn free(&self, table: FrameId, level: u32, base: u64) -> u32 {
        let FreeRange { arena, c, start, end, floor, ceiling } = *self;
        let span = entry_span(level);
        let mut freed = 0;
        if level == 0 {
            return 0;
        }
        for (s, e, lo) in present_entries(arena, table, level, base, start, end) {
            let child = e.frame();
            debug_assert!(level > 1 || arena.meta(child).refcount() == 1, "freeing a shared PTE table");
            freed += self.free(child, level - 1, lo);
            if lo >= floor && lo + span <= ceiling {
                debug_assert!(table_is_empty(arena, child), "freeing a non-empty page table");
                s.store(0, Ordering::Release);
                if level == 1 {
                    borrow::detach(arena, child, lo, c);
                }
                arena.put(child);
                freed += 1;
            }
        }
        freed
    }
}

fn table_is_empty(arena: &FrameArena, t: FrameId) -> bool {
    (0..PTRS_PER_TABLE).all(|i| slot(arena, t, i).load(Ordering::Acquire) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::PAGE_SIZE;

    fn arena() -> FrameArena {
        FrameArena::new(256 * PAGE_SIZE as u64, 0).unwrap()
    }

    #[test]
    fn walk_alloc_then_follow() {
        let a = arena();
        let pt = PageTable::new(&a).unwrap();
        let va = 0x7f12_3456_7000;
        assert!(pt.follow_pte(&a, va).is_none());
        let mut added = 0;
        let t = pt.pte_table_alloc(&a, va, &mut added).unwrap();
        assert_eq!(added, 3);
        let mut added2 = 0;
        let t2 = pt.pte_table_alloc(&a, va + 4096, &mut added2).unwrap();
        assert_eq!((t2, added2), (t, 0));
        let f = a.alloc(true, 0).unwrap();
        {
            let mut g = PteTableGuard::lock(&a, t, va & !(PTE_TABLE_SPAN - 1));
            g.set(va, Pte::new(f, Pte::USER));
        }
        assert_eq!(pt.follow_pte(&a, va).frame(), f);
        assert!(pt.follow_pte(&a, va + 4096).is_none());
    }

    #[test]
    fn free_tables_respects_floor_and_ceiling() {
        let a = arena();
        let pt = PageTable::new(&a).unwrap();
        let x = 0x4000_0000u64; // 1 GiB
        let mut n = 0;
        pt.pte_table_alloc(&a, x, &mut n).unwrap();
        pt.pte_table_alloc(&a, x + PTE_TABLE_SPAN, &mut n).unwrap();
        let before = a.in_use();
        // A neighbour still maps the first 2 MiB: only the second table goes.
        let c = Counters::default();
        let n = pt.free_tables(&a, &c, x + PTE_TABLE_SPAN, x + 2 * PTE_TABLE_SPAN, x + PTE_TABLE_SPAN, TASK_SIZE);
        assert_eq!(n, 1);
        assert!(pt.pte_table(&a, x).is_some());
        assert!(pt.pte_table(&a, x + PTE_TABLE_SPAN).is_none());
        assert_eq!(a.in_use(), before - 1);
        // No neighbours: everything but the root goes.
        let n = pt.free_tables(&a, &c, x, x + 4096, 0, TASK_SIZE);
        assert_eq!(n, 3);
        assert_eq!(pt.destroy(&a, &c), 1);
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn index_and_span() {
        assert_eq!(entry_span(0), 4096);
        assert_eq!(entry_span(1), 2 << 20);
        assert_eq!(index(0x20_1000, 0), 1);
        assert_eq!(index(0x20_1000, 1), 1);
    }
}
