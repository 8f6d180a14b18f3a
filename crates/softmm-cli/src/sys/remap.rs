//! A populated anonymous mapping of this process that `mremap` moves back
//! and forth between two slots of one reservation: the Linux side of
//! `bench mremap`, with its raw pointers argued for here once.
//!
//! The reservation is a `PROT_NONE` mapping of both slots and an alignment
//! margin. The data lives in one slot; a move (`MREMAP_MAYMOVE |
//! MREMAP_FIXED`) replaces the other slot's reservation and leaves a hole,
//! which is reserved again at once (outside the timed call) so that no
//! other mapping of this process (the allocator's) can land there.

use rustix::mm::{Advice, MapFlags, MremapFlags, ProtFlags};
use std::io;

const PAGE: usize = 4096;

/// Two slots of `len` bytes, each starting `align`-aligned plus `skew`
/// bytes, and the data in one of them.
///
/// Invariants: `base..base + total` is a range this value reserved and
/// nothing else maps or unmaps; the slot not holding the data is reserved
/// `PROT_NONE`; the slot `at` holds a read-write private anonymous mapping.
pub struct MoveArea {
    base: *mut u8,
    total: usize,
    slots: [usize; 2],
    len: usize,
    at: usize,
}

impl MoveArea {
    /// Reserve both slots, map the data read-write in the first (advised
    /// against huge pages) and write every page.
    pub fn new(len: usize, align: usize, skew: usize) -> io::Result<MoveArea> {
        let len = len.checked_next_multiple_of(PAGE).ok_or(io::ErrorKind::InvalidInput)?;
        let span =
            len.checked_add(skew).and_then(|s| s.checked_next_multiple_of(align)).ok_or(io::ErrorKind::InvalidInput)?;
        let total = span.checked_mul(2).and_then(|t| t.checked_add(align)).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a new mapping at an address the kernel chooses cannot
        // overlap memory Rust knows about.
        let base =
            unsafe { rustix::mm::mmap_anonymous(std::ptr::null_mut(), total, ProtFlags::empty(), MapFlags::PRIVATE) }?;
        let first = (base as usize).next_multiple_of(align) - base as usize + skew;
        let mut a = MoveArea { base: base.cast(), total, slots: [first, first + span], len, at: 0 };
        a.map_slot(0, ProtFlags::READ | ProtFlags::WRITE)?;
        let p = a.slot_ptr(0);
        // SAFETY: the range is the slot just mapped, inside the reservation.
        let _ = unsafe { rustix::mm::madvise(p.cast(), len, Advice::LinuxNoHugepage) };
        for off in (0..len).step_by(PAGE) {
            // SAFETY: `off < len`, inside the read-write slot just mapped,
            // which no Rust reference views.
            unsafe { std::ptr::write_volatile(p.add(off), 1) }
        }
        Ok(a)
    }

    fn slot_ptr(&self, i: usize) -> *mut u8 {
        // SAFETY: each slot's offset plus `len` lies inside the
        // reservation (`new` sized it so).
        unsafe { self.base.add(self.slots[i]) }
    }

    /// Map slot `i` afresh with `prot` (MAP_FIXED inside the reservation).
    fn map_slot(&mut self, i: usize, prot: ProtFlags) -> io::Result<()> {
        let p = self.slot_ptr(i);
        // SAFETY: the slot lies inside this value's reservation, which no
        // Rust reference views; replacing it (MAP_FIXED) affects nothing else.
        unsafe { rustix::mm::mmap_anonymous(p.cast(), self.len, prot, MapFlags::PRIVATE | MapFlags::FIXED) }?;
        Ok(())
    }

    /// Move the data to the other slot; returns the nanoseconds the
    /// `mremap` call alone took. The vacated slot is reserved again.
    pub fn move_once(&mut self) -> io::Result<u64> {
        let to = 1 - self.at;
        let (from_p, to_p) = (self.slot_ptr(self.at), self.slot_ptr(to));
        let t = super::mono_ns();
        // SAFETY: both ranges lie in this value's reservation: the source
        // is the data's mapping, the target the other slot's reservation,
        // which MREMAP_FIXED replaces. No Rust reference views either.
        unsafe { rustix::mm::mremap_fixed(from_p.cast(), self.len, self.len, MremapFlags::MAYMOVE, to_p.cast()) }?;
        let spent = super::mono_ns().saturating_sub(t);
        self.at = to;
        self.map_slot(1 - to, ProtFlags::empty())?;
        Ok(spent)
    }
}

impl Drop for MoveArea {
    fn drop(&mut self) {
        // SAFETY: `base`/`total` are the reservation made in `new`; every
        // mapping this value made lies inside it and no borrow outlives it.
        let _ = unsafe { rustix::mm::munmap(self.base.cast(), self.total) };
    }
}
