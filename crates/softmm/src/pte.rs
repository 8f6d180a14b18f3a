//! Page-table entry encoding, x86-64-like.
//!
//! One `u64` per entry at every level. Bit 0 is present; for a present entry,
//! bits 12..44 hold the frame number (a [`FrameId`]) of the page or of the
//! next-level table. Software bits live where x86 leaves bits to the OS.
//! A non-present, non-zero entry is one of two kinds, told apart by a
//! software bit: a *swap entry* (the page is on the swap device; the frame
//! field holds the swap slot) or a *migration entry* (the page is being
//! moved; the frame field holds the old frame and the other bits keep the
//! entry's flags, so the move can put them back). Neither has bit 0 set, so
//! every walker that only looks for present entries skips both.

use crate::phys::FrameId;

/// One page-table entry, by value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pte(u64);

impl Pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    /// The page may be read by the user (cleared for PROT_NONE mappings,
    /// which keep their frames mapped, as Linux's `PAGE_NONE` does).
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// Software bit: the entry maps the shared zero frame.
    pub const SOFT_ZERO: u64 = 1 << 9;
    /// Software bit of a non-present entry: a swap entry.
    const SOFT_SWAP: u64 = 1 << 10;
    /// Software bit of a non-present entry: a migration entry.
    const SOFT_MIGRATION: u64 = 1 << 11;
    /// Software bit of a present entry: *borrowed* from the backing table
    /// of the PTE table it sits in (`pgtable/borrow.rs`). It holds no
    /// reference and no mapping on its frame; the backing table does.
    /// Bit 52, where x86 leaves bits to the OS, so that it survives
    /// every flag edit and never looks like a swap or migration entry.
    pub const BORROWED: u64 = 1 << 52;
    const FRAME_SHIFT: u32 = 12;
    const FRAME_MASK: u64 = 0xffff_ffff << 12;
    const FLAG_MASK: u64 = !Self::FRAME_MASK;

    /// The empty entry.
    pub const NONE: Pte = Pte(0);

    /// A present entry mapping `frame` with the given flag bits (PRESENT is added).
    #[inline]
    pub fn new(frame: FrameId, flags: u64) -> Pte {
        Pte(((frame.0 as u64) << Self::FRAME_SHIFT) | (flags & Self::FLAG_MASK) | Self::PRESENT)
    }

    /// An entry of an upper-level table pointing at the next table.
    #[inline]
    pub fn table(frame: FrameId) -> Pte {
        Pte::new(frame, Self::WRITE | Self::USER)
    }

    /// A swap entry for `slot` of the swap device.
    #[inline]
    pub const fn swap(slot: u32) -> Pte {
        Pte(((slot as u64) << Self::FRAME_SHIFT) | Self::SOFT_SWAP)
    }

    /// Whether this is a swap entry.
    #[inline]
    pub const fn is_swap(self) -> bool {
        self.0 & (Self::PRESENT | Self::SOFT_SWAP) == Self::SOFT_SWAP
    }

    /// The slot of a swap entry.
    #[inline]
    pub const fn swap_slot(self) -> u32 {
        ((self.0 & Self::FRAME_MASK) >> Self::FRAME_SHIFT) as u32
    }

    /// The migration entry standing for present entry `self` while its
    /// frame moves: same frame and flags, not present.
    #[inline]
    pub const fn to_migration(self) -> Pte {
        Pte((self.0 & !Self::PRESENT) | Self::SOFT_MIGRATION)
    }

    /// Whether this is a migration entry.
    #[inline]
    pub const fn is_migration(self) -> bool {
        self.0 & (Self::PRESENT | Self::SOFT_MIGRATION) == Self::SOFT_MIGRATION
    }

    /// The present entry a migration entry stood for, mapping `to` instead.
    // "from" reads as "the entry back from migration", not a constructor;
    // the name predates the module going crate-private (clippy's exported-API
    // exemption used to cover it).
    #[allow(clippy::wrong_self_convention)]
    #[inline]
    pub const fn from_migration(self, to: FrameId) -> Pte {
        Pte(((self.0 & !Self::SOFT_MIGRATION & Self::FLAG_MASK) | ((to.0 as u64) << Self::FRAME_SHIFT)) | Self::PRESENT)
    }

    /// The frame a present or migration entry holds a reference on (not
    /// the zero frame, which is mapped without one, nor a borrowed entry's,
    /// whose reference its backing table holds).
    #[inline]
    pub const fn counted_frame(self) -> Option<FrameId> {
        if (self.is_present() && !self.is_zero_frame() && !self.is_borrowed()) || self.is_migration() {
            Some(self.frame())
        } else {
            None
        }
    }

    /// The page frame a present or migration entry maps, whether it holds
    /// the reference or borrows it (not the zero frame): what a user of
    /// the address space sees there.
    #[inline]
    pub const fn page_frame(self) -> Option<FrameId> {
        if (self.is_present() && !self.is_zero_frame()) || self.is_migration() {
            Some(self.frame())
        } else {
            None
        }
    }

    /// Whether this present entry borrows its frame (see [`Pte::BORROWED`]).
    #[inline]
    pub const fn is_borrowed(self) -> bool {
        self.0 & (Self::PRESENT | Self::BORROWED) == Self::PRESENT | Self::BORROWED
    }

    #[inline]
    pub const fn from_raw(raw: u64) -> Pte {
        Pte(raw)
    }
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }
    #[inline]
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
    #[inline]
    pub const fn is_present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }
    #[inline]
    pub const fn is_writable(self) -> bool {
        self.0 & Self::WRITE != 0
    }
    #[inline]
    pub const fn is_user(self) -> bool {
        self.0 & Self::USER != 0
    }
    #[inline]
    pub const fn is_dirty(self) -> bool {
        self.0 & Self::DIRTY != 0
    }
    #[inline]
    pub const fn is_accessed(self) -> bool {
        self.0 & Self::ACCESSED != 0
    }
    #[inline]
    pub const fn is_zero_frame(self) -> bool {
        self.0 & Self::SOFT_ZERO != 0
    }
    /// The frame of a present entry.
    #[inline]
    pub const fn frame(self) -> FrameId {
        FrameId(((self.0 & Self::FRAME_MASK) >> Self::FRAME_SHIFT) as u32)
    }
    #[inline]
    pub const fn with(self, bits: u64) -> Pte {
        Pte(self.0 | (bits & Self::FLAG_MASK))
    }
    #[inline]
    pub const fn without(self, bits: u64) -> Pte {
        Pte(self.0 & !(bits & Self::FLAG_MASK))
    }
}

impl std::fmt::Debug for Pte {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_swap() {
            return write!(f, "Pte(swap slot {})", self.swap_slot());
        }
        if self.is_migration() {
            return write!(f, "Pte(migrating frame {})", self.frame().0);
        }
        if !self.is_present() {
            return write!(f, "Pte(none {:#x})", self.0);
        }
        write!(
            f,
            "Pte(frame {} {}{}{}{}{}{})",
            self.frame().0,
            if self.is_user() { "u" } else { "-" },
            if self.is_writable() { "w" } else { "-" },
            if self.is_accessed() { "a" } else { "-" },
            if self.is_dirty() { "d" } else { "-" },
            if self.is_zero_frame() { " zero" } else { "" },
            if self.is_borrowed() { " borrowed" } else { "" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_frame_and_flags() {
        let p = Pte::new(FrameId(0xdead_beef), Pte::WRITE | Pte::DIRTY);
        assert!(p.is_present() && p.is_writable() && p.is_dirty());
        assert!(!p.is_accessed() && !p.is_user());
        assert_eq!(p.frame(), FrameId(0xdead_beef));
        let q = p.without(Pte::WRITE).with(Pte::ACCESSED);
        assert!(!q.is_writable() && q.is_accessed());
        assert_eq!(q.frame(), FrameId(0xdead_beef));
        assert!(Pte::NONE.is_none() && !Pte::NONE.is_present());
    }

    #[test]
    fn swap_and_migration_entries() {
        let s = Pte::swap(77);
        assert!(s.is_swap() && !s.is_present() && !s.is_none() && !s.is_migration());
        assert_eq!(s.swap_slot(), 77);
        assert_eq!(s.counted_frame(), None);
        let p = Pte::new(FrameId(9), Pte::WRITE | Pte::USER | Pte::DIRTY);
        let m = p.to_migration();
        assert!(m.is_migration() && !m.is_present() && !m.is_swap());
        assert_eq!(m.counted_frame(), Some(FrameId(9)));
        let back = m.from_migration(FrameId(12));
        assert!(back.is_present() && back.is_writable() && back.is_dirty() && back.is_user());
        assert_eq!(back.frame(), FrameId(12));
        assert_eq!(back, Pte::new(FrameId(12), Pte::WRITE | Pte::USER | Pte::DIRTY));
        // Write-protecting a migration entry (fork, unshare) carries over.
        assert!(!m.without(Pte::WRITE).from_migration(FrameId(1)).is_writable());
    }

    #[test]
    fn borrowed_entries_map_a_frame_they_do_not_count() {
        let p = Pte::new(FrameId(7), Pte::USER | Pte::ACCESSED).with(Pte::BORROWED);
        assert!(p.is_present() && p.is_borrowed() && !p.is_swap() && !p.is_migration());
        assert_eq!(p.counted_frame(), None);
        assert_eq!(p.page_frame(), Some(FrameId(7)));
        assert_eq!(p.frame(), FrameId(7));
        assert!(!p.without(Pte::BORROWED).is_borrowed());
        assert_eq!(p.without(Pte::BORROWED).counted_frame(), Some(FrameId(7)));
        // Not present: never borrowed, whatever the bit.
        assert!(!Pte::swap(3).with(Pte::BORROWED).is_borrowed());
    }

    #[test]
    fn flags_cannot_corrupt_frame() {
        let p = Pte::new(FrameId(5), u64::MAX);
        assert_eq!(p.frame(), FrameId(5));
    }
}
