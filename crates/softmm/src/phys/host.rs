//! Host memory for the arena: the only place that maps memory from the host.
//!
//! A region is reserved with `MAP_NORESERVE` (only touched pages cost host
//! memory) and advised `MADV_HUGEPAGE`. Under Miri, which cannot run `mmap`,
//! a zeroed heap allocation stands in for it.

use crate::error::{Error, Result};

/// A zero-filled, page-aligned host region, unmapped on drop.
pub(crate) struct HostRegion {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the region is plain memory owned by this value; all shared access to
// its contents goes through atomics or byte copies whose races are the guest's
// (see `phys::FrameArena`), so moving or sharing the handle across threads is sound.
unsafe impl Send for HostRegion {}
// SAFETY: as above.
unsafe impl Sync for HostRegion {}

impl HostRegion {
    /// Reserve `len` bytes (a multiple of 4096) of zeroed memory.
    pub(crate) fn reserve(len: usize, huge: bool) -> Result<HostRegion> {
        if len == 0 || len % 4096 != 0 {
            return Err(Error::Invalid("host region length must be a non-zero multiple of 4096"));
        }
        Self::map(len, huge)
    }

    #[cfg(not(miri))]
    fn map(len: usize, huge: bool) -> Result<HostRegion> {
        use rustix::mm::{madvise, mmap_anonymous, Advice, MapFlags, ProtFlags};
        // SAFETY: an anonymous mapping at a kernel-chosen address cannot alias
        // any existing Rust object.
        let ptr = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| Error::Host { what: "mmap of the frame arena", errno: e.raw_os_error() })?;
        if huge {
            // SAFETY: the range is the mapping just created; advice does not
            // change its contents. Failure (THP disabled) is harmless.
            let _ = unsafe { madvise(ptr, len, Advice::LinuxHugepage) };
        }
        Ok(HostRegion { ptr: ptr.cast(), len })
    }

    #[cfg(miri)]
    fn map(len: usize, _huge: bool) -> Result<HostRegion> {
        let layout =
            std::alloc::Layout::from_size_align(len, 4096).map_err(|_| Error::Invalid("host region layout"))?;
        // SAFETY: the layout has non-zero size (checked by `reserve`).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::NoMemory("heap-backed arena under Miri"));
        }
        Ok(HostRegion { ptr, len })
    }

    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for HostRegion {
    fn drop(&mut self) {
        #[cfg(not(miri))]
        // SAFETY: `ptr`/`len` are exactly the mapping created in `map`, and no
        // reference into it outlives `self` (borrows are tied to the arena).
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.cast(), self.len);
        }
        #[cfg(miri)]
        // SAFETY: allocated in `map` with this layout.
        unsafe {
            std::alloc::dealloc(self.ptr, std::alloc::Layout::from_size_align_unchecked(self.len, 4096));
        }
    }
}
