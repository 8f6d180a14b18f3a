//! The locked view of one PTE table: the only way to change a PTE.
//!
//! Holding a [`PteTableGuard`] means holding that table's split page-table
//! lock; the guard checks every address against the 2 MiB it covers, so a
//! caller cannot write an entry of a table it did not lock.

use super::{index, slot, PTE_TABLE_SPAN};
use crate::phys::{FrameArena, FrameId};
use crate::pte::Pte;
use std::sync::atomic::Ordering;

/// A locked PTE table covering `[base, base + 2 MiB)`.
pub struct PteTableGuard<'a> {
    arena: &'a FrameArena,
    table: FrameId,
    base: u64,
}

impl<'a> PteTableGuard<'a> {
    pub(crate) fn lock(arena: &'a FrameArena, table: FrameId, base: u64) -> Self {
        debug_assert_eq!(base % PTE_TABLE_SPAN, 0);
        arena.meta(table).lock_ptl();
        PteTableGuard { arena, table, base }
    }

    #[inline]
    fn at(&self, va: u64) -> usize {
        assert!(va >= self.base && va - self.base < PTE_TABLE_SPAN, "{va:#x} outside locked table at {:#x}", self.base);
        index(va, 0)
    }

    /// The entry for `va`.
    #[inline]
    pub fn get(&self, va: u64) -> Pte {
        Pte::from_raw(slot(self.arena, self.table, self.at(va)).load(Ordering::Acquire))
    }

    /// Replace the entry for `va`.
    #[inline]
    pub fn set(&mut self, va: u64, pte: Pte) {
        slot(self.arena, self.table, self.at(va)).store(pte.raw(), Ordering::Release);
    }

    /// Replace the entry for `va` if it still is `old`: entries of a
    /// locked table may still gain accessed and dirty bits lock-free (see
    /// `PageTable::set_bits_lockless`). Returns the entry found.
    #[inline]
    pub fn cas(&mut self, va: u64, old: Pte, new: Pte) -> std::result::Result<Pte, Pte> {
        slot(self.arena, self.table, self.at(va))
            .compare_exchange(old.raw(), new.raw(), Ordering::AcqRel, Ordering::Acquire)
            .map(Pte::from_raw)
            .map_err(Pte::from_raw)
    }

    /// The table frame.
    pub fn table(&self) -> FrameId {
        self.table
    }

    /// First address the table covers.
    pub fn base(&self) -> u64 {
        self.base
    }
}

impl Drop for PteTableGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: `lock` took this table's lock and the guard is its only owner.
        unsafe { self.arena.meta(self.table).unlock_ptl() }
    }
}
