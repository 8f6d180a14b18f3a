//! An anonymous private mapping of this process, owned: the benchmarks'
//! Linux side maps, touches and drops these, and the raw pointer behind
//! them is argued for here once.

use rustix::mm::{Advice, MapFlags, ProtFlags};
use std::io;
use std::sync::atomic::AtomicU32;

/// The page size the benchmarks assume (x86-64 base pages).
const PAGE: usize = 4096;

/// An anonymous private read-write mapping, unmapped on drop.
///
/// Invariants: `ptr..ptr + len` is one mapping this value made and nothing
/// else unmaps; `ptr` is page-aligned and `len` a non-zero multiple of
/// [`PAGE`]. Plain writes go through `&mut self`, shared views through
/// `&self`, so Rust's aliasing rules hold for the bytes as for any buffer.
pub struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    /// Map `len` bytes (rounded up to whole pages) `MAP_PRIVATE |
    /// MAP_ANONYMOUS`, read-write, nothing touched, advised
    /// `MADV_HUGEPAGE` if `huge`, else `MADV_NOHUGEPAGE` (the advice may
    /// fail without THP support; that is ignored).
    pub fn new(len: usize, huge: bool) -> io::Result<Region> {
        let len = len.checked_next_multiple_of(PAGE).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a new mapping at an address the kernel chooses (no
        // MAP_FIXED) cannot overlap any memory Rust knows about.
        let p = unsafe {
            rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE)
        }?;
        let advice = if huge { Advice::LinuxHugepage } else { Advice::LinuxNoHugepage };
        // SAFETY: the range is exactly the mapping just made; this advice
        // does not change its contents.
        let _ = unsafe { rustix::mm::madvise(p, len, advice) };
        Ok(Region { ptr: p.cast(), len })
    }

    /// `madvise(MADV_FREE)` over the whole region: its pages become lazily
    /// freeable (what a later store writes stays).
    pub fn lazy_free(&mut self) -> io::Result<()> {
        // SAFETY: the range is exactly this mapping; `&mut self` means no
        // view of it exists, and MADV_FREE keeps every page readable (its
        // bytes are the old ones or zeros).
        unsafe { rustix::mm::madvise(self.ptr.cast(), self.len, Advice::LinuxFree) }?;
        Ok(())
    }

    /// The number of pages mapped.
    pub fn pages(&self) -> u64 {
        (self.len / PAGE) as u64
    }

    /// Write `byte` to the first byte of every page (a volatile store each,
    /// so the compiler keeps every one of them).
    pub fn touch(&mut self, byte: u8) {
        self.touch_every(byte, 1);
    }

    /// Write `byte` to the first byte of every `stride`-th page, starting
    /// with page 0 (a volatile store each). Returns how many were written.
    pub fn touch_every(&mut self, byte: u8, stride: u64) -> u64 {
        let step = PAGE * usize::try_from(stride.max(1)).unwrap_or(usize::MAX / PAGE);
        let mut n = 0;
        for off in (0..self.len).step_by(step) {
            // SAFETY: `off < len`, inside the mapping, which lives as long as
            // `self`; `&mut self` guarantees no other view of it exists.
            unsafe { std::ptr::write_volatile(self.ptr.add(off), byte) }
            n += 1;
        }
        n
    }

    /// Write `byte` to the first byte of `n` pages spread evenly over the
    /// region (page `i * pages / n` for `i < n`; a volatile store each).
    pub fn touch_spread(&mut self, byte: u8, n: u64) {
        let pages = self.pages();
        for i in 0..n.min(pages) {
            let off = (i * pages / n) as usize * PAGE;
            // SAFETY: `i * pages / n < pages`, so the byte lies inside the
            // mapping, which lives as long as `self`; `&mut self` excludes
            // other views.
            unsafe { std::ptr::write_volatile(self.ptr.add(off), byte) }
        }
    }

    /// Fill page `i` with `byte` (nothing if `i >= pages()`).
    pub fn fill_page(&mut self, i: u64, byte: u8) {
        if i < self.pages() {
            let off = i as usize * PAGE;
            // SAFETY: the page lies inside the mapping (`i < pages()` and
            // `len` is a multiple of PAGE); `&mut self` excludes other views.
            unsafe { std::ptr::write_bytes(self.ptr.add(off), byte, PAGE) }
        }
    }

    /// The bytes of page `i` (empty if `i >= pages()`).
    pub fn page(&self, i: u64) -> &[u8] {
        if i >= self.pages() {
            return &[];
        }
        let off = i as usize * PAGE;
        // SAFETY: the page lies inside the mapping, which is readable,
        // initialized (zero-filled by the kernel or written since) and lives
        // as long as `&self`; every writer needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), PAGE) }
    }

    /// The aligned 32-bit word at byte `off`, as an atomic (`None` if it is
    /// out of the mapping or misaligned): a futex word.
    pub fn atomic_u32(&self, off: usize) -> Option<&AtomicU32> {
        if off % 4 != 0 || off.checked_add(4).is_none_or(|end| end > self.len) {
            return None;
        }
        // SAFETY: `off + 4 <= len`, inside the mapping, which lives as long as
        // `&self`; the mapping is page-aligned and `off` a multiple of 4, so
        // the pointer is aligned for `AtomicU32`. While `&self` lives the
        // memory is only accessed through such atomics or shared reads (the
        // plain writers take `&mut self`).
        Some(unsafe { &*self.ptr.add(off).cast::<AtomicU32>() })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new` (nothing
        // else unmaps it), and no borrow of it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_bounds() {
        let mut r = Region::new(2 * PAGE - 1, false).unwrap();
        assert_eq!(r.pages(), 2);
        assert_eq!(r.touch_every(5, 2), 1);
        r.fill_page(1, 7);
        r.fill_page(2, 9); // past the end: ignored
        assert!(r.page(0)[0] == 5 && r.page(0)[1..].iter().all(|&b| b == 0));
        assert!(r.page(1).iter().all(|&b| b == 7));
        assert!(r.page(2).is_empty());
        r.touch(1);
        assert_eq!((r.page(0)[0], r.page(1)[0]), (1, 1));
        assert!(r.atomic_u32(2).is_none());
        assert!(r.atomic_u32(2 * PAGE - 4).is_some());
        assert!(r.atomic_u32(2 * PAGE).is_none());
        assert!(Region::new(0, false).is_err());
    }
}
