//! The locked view of one PTE table: the only way to change a PTE.
//!
//! Holding a [`PteTableGuard`] means holding that table's split page-table
//! lock; the guard checks every address against the 2 MiB it covers, so a
//! caller cannot write an entry of a table it did not lock.
//!
//! Outside `pgtable/`, a guard that writes is had only for an [`Edit`],
//! which only `mm::Change` mints (`tests/raw_stores.rs` checks): whoever
//! changes an entry of a live space has a change open, whose drop runs the
//! side effects (secondary MMUs, the vcache, the TLB shootdown, deferred
//! frees). Readers take a [`PteTableRead`].

use super::{index, slot, PTE_TABLE_SPAN};
use crate::phys::{FrameArena, FrameId};
use crate::pte::Pte;
use std::sync::atomic::Ordering;

/// Leave to write entries: a `mm::Change` is open for them. It proves
/// nothing by itself (it is a plain value); its worth is that only the
/// change type creates one, which the source scan in `tests/raw_stores.rs`
/// holds to.
#[derive(Clone, Copy)]
pub(crate) struct Edit {
    _private: (),
}

impl Edit {
    /// For `mm::Change` alone (see the type's documentation).
    #[inline]
    pub(crate) fn for_change() -> Edit {
        Edit { _private: () }
    }
}

/// A locked PTE table covering `[base, base + 2 MiB)`, to read and write.
pub struct PteTableGuard<'a> {
    arena: &'a FrameArena,
    table: FrameId,
    base: u64,
}

impl<'a> PteTableGuard<'a> {
    pub(super) fn lock(arena: &'a FrameArena, table: FrameId, base: u64) -> Self {
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
    /// `PageTable::set_access_flags`). Returns the entry found.
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

/// A locked PTE table, to read only (a consistent view of its entries:
/// none changes while it is held).
pub(crate) struct PteTableRead<'a>(PteTableGuard<'a>);

impl<'a> PteTableRead<'a> {
    pub(super) fn new(g: PteTableGuard<'a>) -> Self {
        PteTableRead(g)
    }

    /// The entry for `va`.
    #[inline]
    pub(crate) fn get(&self, va: u64) -> Pte {
        self.0.get(va)
    }
}
