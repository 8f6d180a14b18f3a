//! Moving entries from one range of a tree to another (Linux's
//! `move_page_tables` / `move_ptes`, for mremap): the entries themselves
//! move, with their frames' references and mappings, so no page is copied
//! and a pinned page stays pinned where it now is.

use super::{borrow, Edit, PageTable, PTE_TABLE_SPAN};
use crate::error::Result;
use crate::phys::FrameArena;
use crate::pte::Pte;
use std::sync::atomic::Ordering;

/// What a move did.
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct Moved {
    /// Entries moved (present, swap, migration or zero-frame entries).
    pub(crate) entries: u64,
    /// Present entries among them: their old translations must be shot down.
    pub(crate) present: u64,
    /// PTE tables (and upper tables) the destination needed.
    pub(crate) tables_added: u32,
    /// Whole PTE tables moved by their PMD entry.
    pub(crate) tables_moved: u32,
}

impl PageTable {
    /// Move every entry of `[old, old + len)` to the same offset from
    /// `new`. The caller holds the `mmap_lock` for writing, has made every
    /// table of both ranges this space's own (no shared table: its entries
    /// would move for other spaces too), and the destination holds no
    /// entry. A borrowed entry is owned first (it takes its own reference
    /// and mapping): it leaves the table whose backing vouched for it.
    /// Fails (ENOMEM) only when a destination table cannot be allocated;
    /// the entries moved until then stay moved, as in Linux, where the
    /// caller moves them back.
    pub(crate) fn move_ptes(
        &self,
        arena: &FrameArena,
        old: u64,
        new: u64,
        len: u64,
        edit: Edit,
        moved: &mut Moved,
    ) -> Result<()> {
        let end = old + len;
        let mut va = old;
        while va < end {
            // One step stays inside one source and one destination table.
            let to = new + (va - old);
            let step = (PTE_TABLE_SPAN - (va & (PTE_TABLE_SPAN - 1)))
                .min(PTE_TABLE_SPAN - (to & (PTE_TABLE_SPAN - 1)))
                .min(end - va);
            if step == PTE_TABLE_SPAN && self.move_pte_table(arena, va, to, edit, moved)? {
                va += step;
                continue;
            }
            if let Some(src) = self.pte_table(arena, va) {
                let dst = self.pte_table_alloc(arena, to, &mut moved.tables_added)?;
                let src_base = va & !(PTE_TABLE_SPAN - 1);
                let dst_base = to & !(PTE_TABLE_SPAN - 1);
                let mut gs = self.lock(arena, src, src_base, edit);
                if src == dst {
                    move_entries(arena, &mut gs, None, va, to, step, moved);
                } else {
                    // Source then destination, as Linux's move_ptes nests
                    // them: no other path holds two of one space's PTE
                    // locks, and neither table has borrowers of its own.
                    let mut gd = self.lock(arena, dst, dst_base, edit);
                    move_entries(arena, &mut gs, Some(&mut gd), va, to, step, moved);
                }
            }
            va += step;
        }
        Ok(())
    }
}

impl PageTable {
    /// Move the whole PTE table covering the 2 MiB at `va` to the 2 MiB at
    /// `to` by its PMD entry, as Linux's `move_normal_pmd`: 512 entries
    /// change place with two stores, and the frames' references and
    /// mappings stay as they are (they belong to the entries, which are
    /// unchanged). Only a table this space alone maps, writable at the PMD
    /// level, that neither borrows nor lends entries, and only to a slot
    /// with no table: anything else moves entry by entry. Returns whether
    /// it moved the table.
    fn move_pte_table(&self, arena: &FrameArena, va: u64, to: u64, edit: Edit, moved: &mut Moved) -> Result<bool> {
        let Some((src_slot, _)) = self.pmd_slot(arena, va) else { return Ok(true) };
        let e = Pte::from_raw(src_slot.load(Ordering::Acquire));
        if !e.is_present() {
            return Ok(true); // nothing mapped in these 2 MiB: nothing to move
        }
        let t = e.frame();
        let counts = arena.meta(t).counts.load(Ordering::Acquire);
        // One mapper (this PMD entry, no hold), no borrowers, no backing:
        // nobody else reaches the table's entries, and none of them is
        // borrowed. A writable PMD entry means no other space shares it.
        if !e.is_writable()
            || borrow::mappers(counts) != 1
            || (counts >> 32) != 0
            || borrow::backing(arena, t).is_some()
        {
            return Ok(false);
        }
        let (dst_slot, _) = self.pmd_slot_alloc(arena, to, &mut moved.tables_added)?;
        if Pte::from_raw(dst_slot.load(Ordering::Acquire)).is_present() {
            return Ok(false); // a table left there (empty): move entries into it
        }
        // The table's lock excludes lock-free access-bit setters' effects
        // only in that they see one slot or the other; the `mmap_lock`,
        // held for writing, keeps every walker of this space out.
        let _g = self.lock(arena, t, va, edit);
        dst_slot.store(e.raw(), Ordering::Release);
        src_slot.store(Pte::NONE.raw(), Ordering::Release);
        moved.tables_moved += 1;
        // Whatever the table maps may be cached as translations of `va`.
        moved.present += 1;
        Ok(true)
    }
}

/// Move `step` bytes of entries from `va` in `gs` to `to` in `gd` (or in
/// `gs` itself when both ranges lie in one table).
fn move_entries(
    arena: &FrameArena,
    gs: &mut super::PteTableGuard<'_>,
    mut gd: Option<&mut super::PteTableGuard<'_>>,
    va: u64,
    to: u64,
    step: u64,
    moved: &mut Moved,
) {
    let mut off = 0;
    while off < step {
        let from = va + off;
        if !gs.get(from).is_none() {
            borrow::own_entry(arena, gs, from);
            let pte = take(gs, from);
            // (`map_or_else`: the source table is read only when it is
            // also the destination.)
            debug_assert!(gd.as_deref().map_or_else(|| gs.get(to + off), |g| g.get(to + off)).is_none());
            match gd.as_deref_mut() {
                Some(g) => g.set(to + off, pte),
                None => gs.set(to + off, pte),
            }
            moved.entries += 1;
            moved.present += pte.is_present() as u64;
        }
        off += 4096;
    }
}

/// Clear the entry at `va`, keeping the accessed and dirty bits an
/// MMU-style setter may add meanwhile: they move with it.
fn take(g: &mut super::PteTableGuard<'_>, va: u64) -> Pte {
    let mut p = g.get(va);
    loop {
        match g.cas(va, p, Pte::NONE) {
            Ok(old) => return old,
            Err(now) => p = now,
        }
    }
}
