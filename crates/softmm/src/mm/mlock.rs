//! mlock, munlock, mlockall, munlockall, and populating a range (Linux's
//! `mm/mlock.c` and `__mm_populate`).
//!
//! Locking sets `VM_LOCKED` (and `VM_LOCKONFAULT` for `MLOCK_ONFAULT`) on
//! the VMAs of the range, splitting them at its edges and merging the
//! pieces with equal neighbours (`mlock_fixup`), under the `mmap_lock` held
//! for writing; then, with it held for reading, faults every page in
//! (`populate`): writable private pages with a write fault, so copy on
//! write is broken now, others with a read fault, as Linux's
//! `populate_vma_page_range`. Reclaim leaves a page alone while a VMA that
//! maps it is `VM_LOCKED` (`reclaim/visit.rs`, `reclaim/shm.rs`), as
//! Linux's `try_to_unmap` fails there. `RLIMIT_MEMLOCK` is not modelled:
//! every space may lock as much as it maps (a privileged process in Linux).

use super::fault::{self, Access};
use super::{MmInner, MmState};
use crate::error::{Error, Result};
use crate::vma::{Backing, VmFlags};

/// `mlock2`'s flag: lock pages as they fault in, not now.
pub const MLOCK_ONFAULT: u32 = 1;
/// `mlockall`: lock every current mapping.
pub const MCL_CURRENT: u32 = 1;
/// `mlockall`: lock every future mapping.
pub const MCL_FUTURE: u32 = 2;
/// `mlockall`: with the others, lock pages as they fault in.
pub const MCL_ONFAULT: u32 = 4;

const LOCKED_MASK: VmFlags = VmFlags::LOCKED.with(VmFlags::LOCKONFAULT);
const PAGE: u64 = 4096;

/// `mlock2(addr, len, flags)`.
pub(crate) fn do_mlock(mm: &MmInner, addr: u64, len: u64, flags: u32) -> Result<()> {
    if flags & !MLOCK_ONFAULT != 0 {
        return Err(Error::Invalid("unknown mlock2 flags"));
    }
    let add = if flags & MLOCK_ONFAULT != 0 { LOCKED_MASK } else { VmFlags::LOCKED };
    let Some((start, end)) = lock_range(addr, len)? else { return Ok(()) };
    mm.machine.mlock_used.store(true, crate::sync::Ordering::Relaxed);
    {
        let mut st = mm.state.write();
        if st.exited() {
            return Err(Error::Exited);
        }
        apply_lock_flags(&mut st, start, end, |f| f.without(LOCKED_MASK).with(add))?;
    }
    populate(mm, start, end, false).map_err(posix_error)
}

/// `munlock(addr, len)`.
pub(crate) fn do_munlock(mm: &MmInner, addr: u64, len: u64) -> Result<()> {
    let Some((start, end)) = lock_range(addr, len)? else { return Ok(()) };
    let mut st = mm.state.write();
    if st.exited() {
        return Err(Error::Exited);
    }
    apply_lock_flags(&mut st, start, end, |f| f.without(LOCKED_MASK))
}

/// `mlockall(flags)` (`munlockall` is `flags == 0`, which `mlockall`
/// itself refuses).
pub(crate) fn do_mlockall(mm: &MmInner, flags: u32, unlock: bool) -> Result<()> {
    let known = MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT;
    if !unlock && (flags == 0 || flags & !known != 0 || flags == MCL_ONFAULT) {
        return Err(Error::Invalid("mlockall flags must name MCL_CURRENT or MCL_FUTURE, and nothing unknown"));
    }
    let onfault = if flags & MCL_ONFAULT != 0 { VmFlags::LOCKONFAULT } else { VmFlags::NONE };
    if !unlock {
        mm.machine.mlock_used.store(true, crate::sync::Ordering::Relaxed);
    }
    {
        let mut st = mm.state.write();
        if st.exited() {
            return Err(Error::Exited);
        }
        st.def_flags = if flags & MCL_FUTURE != 0 { VmFlags::LOCKED.with(onfault) } else { VmFlags::NONE };
        if flags & MCL_FUTURE != 0 && flags & MCL_CURRENT == 0 {
            return Ok(());
        }
        let add = if flags & MCL_CURRENT != 0 { VmFlags::LOCKED.with(onfault) } else { VmFlags::NONE };
        // Holes are fine here: each VMA is changed on its own.
        let ranges: Vec<(u64, u64)> = st.vmas.iter().map(|v| (v.start, v.end)).collect();
        for (lo, hi) in ranges {
            // A VMA merged into its predecessor meanwhile is done already.
            let _ = apply_lock_flags(&mut st, lo, hi, |f| f.without(LOCKED_MASK).with(add));
        }
    }
    if flags & MCL_CURRENT != 0 {
        // Errors ignored, as Linux's mm_populate.
        let _ = populate(mm, 0, crate::pgtable::TASK_SIZE, true);
    }
    Ok(())
}

/// mlock's range: the address rounded down to its page, the length
/// rounded up with the part of the page before it, in the wrapping
/// arithmetic Linux uses; `None` for an empty range, `EINVAL` for one that
/// wraps.
fn lock_range(addr: u64, len: u64) -> Result<Option<(u64, u64)>> {
    let len = len.wrapping_add(addr % PAGE).wrapping_add(PAGE - 1) & !(PAGE - 1);
    let start = addr & !(PAGE - 1);
    let end = start.wrapping_add(len);
    if end < start {
        return Err(Error::OutOfRange { addr, len, errno: crate::errno::EINVAL });
    }
    Ok((end != start).then_some((start, end)))
}

/// Linux's `apply_vma_lock_flags`: give each VMA of `[start, end)` the
/// flags `new(old)`, splitting at the range's edges where they change and
/// merging equal neighbours after. `ENOMEM` when the range does not start
/// in a VMA, or at the first hole (the VMAs before it changed).
fn apply_lock_flags(st: &mut MmState, start: u64, end: u64, new: impl Fn(VmFlags) -> VmFlags) -> Result<()> {
    let nomem = Error::NotMapped { addr: start, len: end - start };
    if st.vmas.find(start).is_none() {
        return Err(nomem);
    }
    let mut at = start;
    let mut result = Ok(());
    while at < end {
        let Some(v) = st.vmas.find(at) else {
            result = Err(nomem);
            break;
        };
        let (hi, flags) = (v.end.min(end), new(v.flags));
        if flags != v.flags {
            st.vmas.split_at(at);
            st.vmas.split_at(hi);
            if let Some(piece) = st.vmas.get_mut(at) {
                piece.flags = flags;
            }
        }
        at = hi;
    }
    merge_range(st, start, at.min(end));
    result
}

/// Merge the VMAs of `[start, stop)` with each other and their neighbours.
fn merge_range(st: &mut MmState, start: u64, stop: u64) {
    let mut b = start;
    loop {
        st.vmas.try_merge_at(b);
        match st.vmas.find(b).map(|v| v.end) {
            Some(e) if e < stop => b = e,
            _ => break,
        }
    }
    st.vmas.try_merge_at(stop);
}

/// Why a populate stopped (Linux's `__mm_populate` errors, before
/// `__mlock_posix_error_return` turns them into mlock's errnos).
#[derive(Debug)]
pub(crate) enum PopulateError {
    /// A VMA that cannot be faulted in (`PROT_NONE`): gup's `EFAULT`.
    Inaccessible { addr: u64 },
    /// No frame could be had: gup's `ENOMEM`.
    NoMemory,
    /// Any other failure, as it came.
    Other(Error),
}

/// mlock's errno of a failed populate: `EFAULT` becomes `ENOMEM`, `ENOMEM`
/// becomes `EAGAIN` (`__mlock_posix_error_return`).
fn posix_error(e: PopulateError) -> Error {
    match e {
        PopulateError::Inaccessible { addr } => Error::NotMapped { addr, len: PAGE },
        PopulateError::NoMemory => Error::LockFailed("no memory to fault the range in"),
        PopulateError::Other(e) => e,
    }
}

/// Fault in every page of the VMAs in `[start, end)` (holes skipped),
/// under the `mmap_lock` held for reading: private writable memory with a
/// write fault (breaking copy on write), the rest with a read fault;
/// `VM_LOCKONFAULT` VMAs are left to fault on use. With `ignore_errors`
/// a VMA that fails is skipped (`mm_populate` after mmap, mlockall).
pub(crate) fn populate(mm: &MmInner, start: u64, end: u64, ignore_errors: bool) -> Result<(), PopulateError> {
    let st = mm.state.read();
    let pieces: Vec<(u64, u64, Option<Access>)> = st
        .vmas
        .overlapping(start, end)
        .filter(|v| !v.flags.contains(VmFlags::LOCKONFAULT))
        .map(|v| {
            let access = match &v.backing {
                _ if v.prot == crate::vma::Prot::NONE => None,
                Backing::Anon(_) if v.prot.writable() => Some(Access::Write),
                _ => Some(Access::Read),
            };
            (v.start.max(start), v.end.min(end), access)
        })
        .collect();
    for (lo, hi, access) in pieces {
        let r = match access {
            None => Err(PopulateError::Inaccessible { addr: lo }),
            Some(access) => fault_range(mm, &st, lo, hi, access),
        };
        match r {
            Err(_) if ignore_errors => continue,
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    Ok(())
}

fn fault_range(mm: &MmInner, st: &MmState, lo: u64, hi: u64, access: Access) -> Result<(), PopulateError> {
    for va in (lo..hi).step_by(PAGE as usize) {
        match fault::fault_in(mm, st, va, access, None) {
            Ok(_) => {}
            Err(Error::NoMemory(_) | Error::SwapExhausted { .. }) => return Err(PopulateError::NoMemory),
            Err(e) => return Err(PopulateError::Other(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::lock_range;
    use crate::errno::EINVAL;

    #[test]
    fn ranges_round_as_linux() {
        assert_eq!(lock_range(0x1234, 0), Ok(Some((0x1000, 0x2000))));
        assert_eq!(lock_range(0x1000, 0), Ok(None));
        assert_eq!(lock_range(0x1fff, 2), Ok(Some((0x1000, 0x3000))));
        assert_eq!(lock_range(0x2000, u64::MAX - 0xfff).map(|_| ()).unwrap_err().errno(), EINVAL);
        // PAGE_ALIGN wraps to 0: an empty range, success.
        assert_eq!(lock_range(0x1000, u64::MAX), Ok(None));
        assert_eq!(lock_range(0x1000, u64::MAX - 0xffe), Ok(None));
    }
}
