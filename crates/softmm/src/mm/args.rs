//! Argument checks of the mapping calls, in the order Linux makes them, so
//! the same mistake gets the same errno.

use crate::error::{errno, Error, Result};
use crate::pgtable::TASK_SIZE;

const PAGE: u64 = 4096;

/// Where `mmap` may place a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Exactly at the address, replacing existing mappings (`MAP_FIXED`).
    Fixed,
    /// Exactly at the address, failing with `EEXIST` over a mapping
    /// (`MAP_FIXED_NOREPLACE`).
    FixedNoReplace,
    /// The address is a hint; 0 lets softmm choose (top-down, as Linux).
    Hint,
}

/// Flags of [`crate::Mm::mmap_with`] beyond the placement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MapFlags(u8);

impl MapFlags {
    /// None.
    pub const NONE: MapFlags = MapFlags(0);
    /// `MAP_LOCKED`: the mapping is locked (`VM_LOCKED`) and faulted in.
    pub const LOCKED: MapFlags = MapFlags(1);
    /// `MAP_POPULATE`: the mapping is faulted in now.
    pub const POPULATE: MapFlags = MapFlags(2);
    /// `MAP_GROWSDOWN`: a stack (`VM_GROWSDOWN`, private memory only)
    /// that grows down when a CPU access faults below it, keeping a guard
    /// gap of 256 pages above any other mapping.
    pub const GROWSDOWN: MapFlags = MapFlags(4);

    /// Whether every flag of `f` is set.
    pub const fn contains(self, f: MapFlags) -> bool {
        self.0 & f.0 == f.0
    }
    /// Both sets of flags.
    pub const fn union(self, f: MapFlags) -> MapFlags {
        MapFlags(self.0 | f.0)
    }
    /// The VMA flags these ask for.
    pub(crate) const fn vm_flags(self) -> crate::vma::VmFlags {
        use crate::vma::VmFlags;
        let locked = if self.contains(MapFlags::LOCKED) { VmFlags::LOCKED } else { VmFlags::NONE };
        let stack = if self.contains(MapFlags::GROWSDOWN) { VmFlags::GROWSDOWN } else { VmFlags::NONE };
        locked.with(stack)
    }
}

/// Flags of [`crate::Mm::mremap`] (`MREMAP_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RemapFlags(u8);

impl RemapFlags {
    /// None: resize in place or fail.
    pub const NONE: RemapFlags = RemapFlags(0);
    /// `MREMAP_MAYMOVE`: move the mapping when it cannot grow in place.
    pub const MAYMOVE: RemapFlags = RemapFlags(1);
    /// `MREMAP_FIXED`: move it to exactly the new address, unmapping what
    /// was there (needs `MAYMOVE`).
    pub const FIXED: RemapFlags = RemapFlags(2);
    /// `MREMAP_DONTUNMAP`: move the pages but leave the old range mapped,
    /// and empty (needs `MAYMOVE` and equal lengths).
    pub const DONTUNMAP: RemapFlags = RemapFlags(4);

    /// Whether every flag of `f` is set.
    pub const fn contains(self, f: RemapFlags) -> bool {
        self.0 & f.0 == f.0
    }
    /// Both sets of flags.
    pub const fn union(self, f: RemapFlags) -> RemapFlags {
        RemapFlags(self.0 | f.0)
    }
}

/// Advice for `madvise`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Advice {
    /// `MADV_DONTNEED`: drop the pages. Private memory reads back as zeros
    /// afterwards; shared memory keeps its contents in the object.
    DontNeed,
    /// `MADV_FREE`: private anonymous pages become lazily freeable: under
    /// memory pressure a page not written since is dropped (it reads back
    /// as zeros) instead of swapped; a write keeps it. EINVAL on shared
    /// memory.
    Free,
    /// `MADV_WILLNEED`: swapped-out pages of the range are read back.
    WillNeed,
    /// `MADV_COLD`: the range's private pages mapped only here are
    /// deactivated (reclaim takes them first).
    Cold,
    /// `MADV_PAGEOUT`: the range's private pages mapped only here are
    /// reclaimed now, as far as swap allows.
    PageOut,
    /// `MADV_POPULATE_READ`: fault the pages in as reads would.
    PopulateRead,
    /// `MADV_POPULATE_WRITE`: fault the pages in as writes would (breaking
    /// copy-on-write), without changing their contents.
    PopulateWrite,
    /// `MADV_REMOVE`: punch the pages out of the shared memory behind the
    /// range (every mapping reads zeros afterwards). EINVAL on private memory.
    Remove,
    /// `MADV_DONTFORK`: a fork does not copy the range (`VM_DONTCOPY`).
    DontFork,
    /// `MADV_DOFORK`: undo `DontFork`.
    DoFork,
    /// `MADV_WIPEONFORK`: a fork gives the child the range zero-filled
    /// (`VM_WIPEONFORK`). EINVAL on shared memory.
    WipeOnFork,
    /// `MADV_KEEPONFORK`: undo `WipeOnFork`.
    KeepOnFork,
}

impl Advice {
    /// Every advice, in the order of the trace format's words.
    pub const ALL: [Advice; 12] = [
        Advice::DontNeed,
        Advice::Free,
        Advice::WillNeed,
        Advice::Cold,
        Advice::PageOut,
        Advice::PopulateRead,
        Advice::PopulateWrite,
        Advice::Remove,
        Advice::DontFork,
        Advice::DoFork,
        Advice::WipeOnFork,
        Advice::KeepOnFork,
    ];

    /// The trace format's word for the advice (`dontneed`, `populate_read`).
    pub const fn word(self) -> &'static str {
        match self {
            Advice::DontNeed => "dontneed",
            Advice::Free => "free",
            Advice::WillNeed => "willneed",
            Advice::Cold => "cold",
            Advice::PageOut => "pageout",
            Advice::PopulateRead => "populate_read",
            Advice::PopulateWrite => "populate_write",
            Advice::Remove => "remove",
            Advice::DontFork => "dontfork",
            Advice::DoFork => "dofork",
            Advice::WipeOnFork => "wipeonfork",
            Advice::KeepOnFork => "keeponfork",
        }
    }

    /// The advice a trace word names.
    pub fn from_word(w: &str) -> Option<Advice> {
        Advice::ALL.into_iter().find(|a| a.word() == w)
    }

    /// Linux's `MADV_*` number for the advice (the same on every
    /// architecture but parisc and alpha).
    pub const fn linux_value(self) -> u32 {
        match self {
            Advice::WillNeed => 3,
            Advice::DontNeed => 4,
            Advice::Free => 8,
            Advice::Remove => 9,
            Advice::DontFork => 10,
            Advice::DoFork => 11,
            Advice::WipeOnFork => 18,
            Advice::KeepOnFork => 19,
            Advice::Cold => 20,
            Advice::PageOut => 21,
            Advice::PopulateRead => 22,
            Advice::PopulateWrite => 23,
        }
    }

    /// The advice Linux's `MADV_*` number `n` names, for hosts that
    /// emulate `madvise` (`None` for the hints softmm has no use for, such
    /// as `MADV_NORMAL` or `MADV_HUGEPAGE`, and for unknown numbers).
    pub fn from_linux(n: u32) -> Option<Advice> {
        Advice::ALL.into_iter().find(|a| a.linux_value() == n)
    }
}

#[inline]
pub(crate) fn page_aligned(x: u64) -> bool {
    x % PAGE == 0
}

/// `PAGE_ALIGN(len)`, or `None` when it overflows.
#[inline]
pub(crate) fn page_align(len: u64) -> Option<u64> {
    len.checked_add(PAGE - 1).map(|l| l & !(PAGE - 1))
}

/// do_mmap's checks. Returns the aligned length.
pub(crate) fn mmap_len(len: u64) -> Result<u64> {
    if len == 0 {
        return Err(Error::ZeroLength);
    }
    let l = page_align(len).ok_or(Error::OutOfRange { addr: 0, len, errno: errno::ENOMEM })?;
    if l > TASK_SIZE {
        return Err(Error::OutOfRange { addr: 0, len, errno: errno::ENOMEM });
    }
    Ok(l)
}

/// get_unmapped_area's checks of a fixed address.
pub(crate) fn mmap_fixed(addr: u64, len: u64, min_addr: u64) -> Result<()> {
    if addr > TASK_SIZE - len {
        return Err(Error::OutOfRange { addr, len, errno: errno::ENOMEM });
    }
    if !page_aligned(addr) {
        return Err(Error::Misaligned { what: "mapping address", value: addr });
    }
    if addr < min_addr {
        return Err(Error::BelowMinAddr { addr, min: min_addr });
    }
    Ok(())
}

/// munmap's checks. Returns the end of the range.
pub(crate) fn munmap_range(addr: u64, len: u64) -> Result<u64> {
    if !page_aligned(addr) {
        return Err(Error::Misaligned { what: "munmap address", value: addr });
    }
    let inval = Error::OutOfRange { addr, len, errno: errno::EINVAL };
    if addr > TASK_SIZE || len > TASK_SIZE - addr {
        return Err(inval);
    }
    let l = page_align(len).ok_or(inval)?;
    if l == 0 {
        return Err(Error::ZeroLength);
    }
    Ok(addr + l)
}

/// mprotect's checks. `None` for a zero length (success with no effect).
pub(crate) fn mprotect_range(addr: u64, len: u64) -> Result<Option<u64>> {
    if !page_aligned(addr) {
        return Err(Error::Misaligned { what: "mprotect address", value: addr });
    }
    if len == 0 {
        return Ok(None);
    }
    let nomem = || Error::OutOfRange { addr, len, errno: errno::ENOMEM };
    let l = page_align(len).ok_or_else(nomem)?;
    let end = addr.checked_add(l).filter(|&e| e > addr).ok_or_else(nomem)?;
    Ok(Some(end))
}

/// madvise's checks. `None` for a zero length (success with no effect).
pub(crate) fn madvise_range(addr: u64, len: u64) -> Result<Option<u64>> {
    if !page_aligned(addr) {
        return Err(Error::Misaligned { what: "madvise address", value: addr });
    }
    if len == 0 {
        return Ok(None);
    }
    let inval = || Error::OutOfRange { addr, len, errno: errno::EINVAL };
    let l = page_align(len).ok_or_else(inval)?;
    let end = addr.checked_add(l).ok_or_else(inval)?;
    Ok(Some(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn munmap_errors() {
        assert_eq!(munmap_range(0x1001, 4096).unwrap_err().errno(), errno::EINVAL);
        assert_eq!(munmap_range(0x1000, 0).unwrap_err().errno(), errno::EINVAL);
        assert_eq!(munmap_range(0x1000, u64::MAX).unwrap_err().errno(), errno::EINVAL);
        assert_eq!(munmap_range(0x1000, 1).unwrap(), 0x2000);
    }

    #[test]
    fn mmap_errors() {
        assert_eq!(mmap_len(0).unwrap_err().errno(), errno::EINVAL);
        assert_eq!(mmap_len(u64::MAX).unwrap_err().errno(), errno::ENOMEM);
        assert_eq!(mmap_len(1).unwrap(), 4096);
        assert_eq!(mmap_fixed(0x0100_1000, 4096, 0x10000), Ok(()));
        assert_eq!(mmap_fixed(0x10001, 4096, 0x10000).unwrap_err().errno(), errno::EINVAL);
        assert_eq!(mmap_fixed(0x1000, 4096, 0x10000).unwrap_err().errno(), errno::EPERM);
        assert_eq!(mmap_fixed(TASK_SIZE, 4096, 0x10000).unwrap_err().errno(), errno::ENOMEM);
    }

    #[test]
    fn mprotect_and_madvise_errors() {
        assert_eq!(mprotect_range(0x1000, 0), Ok(None));
        assert_eq!(mprotect_range(0x1001, 0).unwrap_err().errno(), errno::EINVAL);
        assert_eq!(mprotect_range(0x1000, u64::MAX - 0x100).unwrap_err().errno(), errno::ENOMEM);
        assert_eq!(madvise_range(0x1000, 0), Ok(None));
        assert_eq!(madvise_range(0x1000, u64::MAX - 0x100).unwrap_err().errno(), errno::EINVAL);
    }
}
