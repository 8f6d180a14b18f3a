//! The program break (Linux's `brk` system call, `mm/mmap.c`).
//!
//! The heap is private anonymous read-write memory from `start_brk` up to
//! the break, page-aligned. `start_brk` is set with [`crate::Mm::set_start_brk`]
//! (what exec does) or, at the first `brk`, placed after the highest
//! mapping (at `mmap_min_addr` when nothing is mapped). Growing refuses to
//! come within a page of the next mapping (its stack guard gap included,
//! for a `VM_GROWSDOWN` one); shrinking unmaps the heap's pages above the
//! new break. Like the system call, `brk` never fails: it returns the
//! break now in force, the old one when the request was refused.

use super::{MmInner, MmState};
use crate::error::{Error, Result};
use crate::vma::{AnonLink, Backing, Prot, VmFlags, Vma};

const PAGE: u64 = 4096;

/// `mm->start_brk` and `mm->brk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Heap {
    pub(crate) start: u64,
    pub(crate) brk: u64,
}

fn page_align(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|a| a & !(PAGE - 1))
}

/// Set `start_brk` (and the break) to `addr` rounded up to a page, as exec
/// does; `EINVAL` once the heap has grown past its start, then `EPERM` below
/// `mmap_min_addr`, `ENOMEM` beyond the user address space.
pub(crate) fn set_start(mm: &MmInner, addr: u64) -> Result<()> {
    let mut st = mm.state.write();
    if st.exited() {
        return Err(Error::Exited);
    }
    let start = page_align(addr).filter(|&s| s < crate::pgtable::TASK_SIZE);
    let start = start.ok_or(Error::OutOfRange { addr, len: 0, errno: crate::errno::ENOMEM })?;
    if st.heap.is_some_and(|h| h.brk > h.start) {
        return Err(Error::Invalid("the heap has grown already"));
    }
    let min = mm.machine.config.mmap_min_addr;
    if start < min {
        return Err(Error::BelowMinAddr { addr: start, min });
    }
    st.heap = Some(Heap { start, brk: start });
    Ok(())
}

/// `brk(want)`: the break now in force.
pub(crate) fn do_brk(mm: &MmInner, want: u64) -> Result<u64> {
    let (now, populate) = {
        let mut st = mm.state.write();
        if st.exited() {
            return Err(Error::Exited);
        }
        let heap = match st.heap {
            Some(h) => h,
            None => first_heap(st.vmas.iter().last().map(|v| v.end), mm.machine.config.mmap_min_addr),
        };
        match move_break(mm, &mut st, heap, want) {
            Some(populate) => {
                st.heap = Some(Heap { brk: want, ..heap });
                (want, populate)
            }
            None => {
                st.heap = Some(heap);
                (heap.brk, None)
            }
        }
    };
    if let Some((lo, hi)) = populate {
        let _ = super::mlock::populate(mm, lo, hi, true);
    }
    Ok(now)
}

fn first_heap(highest_end: Option<u64>, min: u64) -> Heap {
    let start = highest_end.unwrap_or(0).max(min);
    Heap { start, brk: start }
}

/// Move the break of `heap` to `want` in the VMAs; `None` when refused,
/// else the range to populate (`mlockall(MCL_FUTURE)` in force), if any.
fn move_break(mm: &MmInner, st: &mut MmState, heap: Heap, want: u64) -> Option<Option<(u64, u64)>> {
    if want < heap.start {
        return None;
    }
    let (newbrk, oldbrk) = (page_align(want)?, page_align(heap.brk)?);
    if newbrk == oldbrk {
        return Some(None);
    }
    if want <= heap.brk {
        // Shrinking: the heap's VMA must be there (a munmap may have taken it).
        st.vmas.overlapping(newbrk, oldbrk).next()?;
        super::mmap::unmap_locked(mm, st, newbrk, oldbrk).ok()?;
        return Some(None);
    }
    if newbrk > crate::pgtable::TASK_SIZE {
        return None;
    }
    // A page must stay free below the next mapping (and its guard gap).
    let next = st.vmas.overlapping(oldbrk, u64::MAX).next().map(Vma::start_gap);
    if next.is_some_and(|gap| newbrk + PAGE > gap) {
        return None;
    }
    let flags = st.def_flags;
    let backing = Backing::Anon(AnonLink::new(mm.mm_ref()));
    let vma = Vma {
        start: oldbrk,
        end: newbrk,
        prot: Prot::RW,
        account: true,
        pgoff: oldbrk >> 12,
        backing,
        file: None,
        flags,
    };
    st.vmas.insert(vma);
    // Only the heap's own VMA is extended (`do_brk_flags`).
    if st.vmas.find(oldbrk - 1).is_some_and(|p| p.start >= heap.start) {
        st.vmas.try_merge_at(oldbrk);
    }
    let populate = flags.contains(VmFlags::LOCKED) && !flags.contains(VmFlags::LOCKONFAULT);
    Some(populate.then_some((oldbrk, newbrk)))
}
