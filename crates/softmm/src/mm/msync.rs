//! msync: write the dirty pages of shared file mappings back (`MS_SYNC`),
//! with Linux's checks and errors (`mm/msync.c`).
//!
//! The VMAs are looked at under the `mmap_lock`, which is dropped before
//! any page is written (write-back takes each mapper's `mmap_lock` to
//! harvest dirty entries, this space's among them), as Linux drops it
//! around `vfs_fsync_range`.

use super::MmInner;
use crate::error::{errno, Error, Result};
use crate::shm::ShmObject;
use crate::vma::{Backing, VmFlags};
use std::sync::Arc;

/// `MS_ASYNC`: nothing to start (Linux tracks dirty pages without it).
pub const MS_ASYNC: u32 = 1;
/// `MS_INVALIDATE`: refused (`EBUSY`) over locked memory, else nothing.
pub const MS_INVALIDATE: u32 = 2;
/// `MS_SYNC`: write the range's dirty file pages back and wait.
pub const MS_SYNC: u32 = 4;

/// A file range to write back: the object and page offsets `[first, end)`.
type Sync = (Arc<ShmObject>, u64, u64);

pub(crate) fn do_msync(mm: &MmInner, start: u64, len: u64, flags: u32) -> Result<()> {
    if flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0 {
        return Err(Error::Invalid("msync flags"));
    }
    if start & 0xfff != 0 {
        return Err(Error::Misaligned { what: "addr", value: start });
    }
    if flags & MS_ASYNC != 0 && flags & MS_SYNC != 0 {
        return Err(Error::Invalid("msync with both MS_ASYNC and MS_SYNC"));
    }
    let end = len
        .checked_add(0xfff)
        .map(|l| l & !0xfff)
        .and_then(|l| start.checked_add(l))
        .ok_or(Error::OutOfRange { addr: start, len, errno: errno::ENOMEM })?;
    if end == start {
        return Ok(());
    }
    let (syncs, outcome) = plan(mm, start, end, flags);
    for (obj, first, last) in syncs {
        crate::reclaim::write_back_range(&mm.machine, &obj, first, last)?;
    }
    outcome
}

/// Linux's walk over the VMAs of `[start, end)`: the file ranges to write
/// back, in order, and what msync answers once they are written (the
/// first error stops the walk; a hole is `ENOMEM` at the end, or at once
/// for a plain `MS_ASYNC`).
fn plan(mm: &MmInner, start: u64, end: u64, flags: u32) -> (Vec<Sync>, Result<()>) {
    let st = mm.state.read();
    let hole = Error::NotMapped { addr: start, len: end - start };
    let mut syncs = Vec::new();
    let mut unmapped = false;
    let mut cur = start;
    for v in st.vmas.overlapping(start, end) {
        if cur < v.start {
            if flags == MS_ASYNC {
                return (syncs, Err(hole));
            }
            cur = v.start;
            unmapped = true;
        }
        if flags & MS_INVALIDATE != 0 && v.flags.contains(VmFlags::LOCKED) {
            return (syncs, Err(Error::Busy("msync(MS_INVALIDATE) of locked memory")));
        }
        let stop = end.min(v.end);
        if let (true, Backing::Shm(obj)) = (flags & MS_SYNC != 0, &v.backing) {
            syncs.push(((**obj).clone(), v.pgoff_of(cur), v.pgoff_of(stop - 1) + 1));
        }
        cur = v.end;
        if cur >= end {
            return (syncs, if unmapped { Err(hole) } else { Ok(()) });
        }
    }
    (syncs, Err(hole))
}
