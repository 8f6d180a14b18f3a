//! Physical memory: the frame arena.
//!
//! One host region holds every frame (4 KiB each); a parallel region holds
//! one [`FrameMeta`] per frame. Page-table pages are frames too, so "the
//! refcount of a page-table page" is the refcount of its frame.
//!
//! Frame 0 is the shared zero frame: always allocated, never written, never
//! refcounted by mappings (as Linux's zero page is not a "normal" page).
//!
//! Guest memory is shared memory: several threads may read and write the same
//! bytes at once, as threads of a process do. The arena therefore never hands
//! out Rust references to frame bytes; it copies with raw byte copies and
//! exposes words as std atomics. A racing guest sees torn or stale bytes,
//! exactly as on hardware, and never undefined behaviour in the host.
//!
//! Locks: the allocator's cache and pool mutexes are leaves; `FrameMeta::ptl`
//! (the split page-table lock) is described in `mm/mod.rs`.

mod alloc;
mod host;
pub(crate) mod links;
pub(crate) mod meta;
pub(crate) mod pin;
pub(crate) mod pressure;

pub use meta::{flags, FrameMeta};

use crate::error::{Error, Result};
use crate::sync::Ordering;
use host::HostRegion;
use std::sync::atomic::AtomicU64 as StdAtomicU64;

/// Bytes in a page and in a frame.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// The number of a physical frame in the arena.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct FrameId(pub u32);

/// The shared zero frame.
pub const ZERO_FRAME: FrameId = FrameId(0);

/// A pool of physical frames with their metadata.
pub struct FrameArena {
    data: HostRegion,
    meta: HostRegion,
    nframes: u32,
    alloc: alloc::FrameAllocator,
    /// Most frames in use at once (`Config::mem_limit`).
    limit: std::sync::atomic::AtomicU64,
    /// Wakes the background reclaimer as the limit nears (shared with it:
    /// it waits there while the arena may be gone).
    pub(crate) pressure: std::sync::Arc<pressure::Pressure>,
    /// Which PTE tables borrow from which: links stored for
    /// `pgtable/borrow.rs`, which gives them their meaning (the arena
    /// never reads them).
    pub(crate) borrows: links::FrameLinks,
    /// Set by the swap space while it has no free slot (shared with it).
    /// Then the last frame below the limit is kept for swap-in
    /// (`alloc_swap_in`): reclaim can always free a page read back (its
    /// slot is still its own) but no page that needs a new slot, so a page
    /// on swap stays readable however full the device is.
    pub(crate) swap_full: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FrameArena {
    /// Reserve an arena of `bytes` (rounded down to whole frames; at least
    /// 2), with `caches` per-CPU frame caches (0: one per CPU).
    pub fn new(bytes: u64, caches: usize) -> Result<FrameArena> {
        let nframes = bytes / PAGE_SIZE as u64;
        if nframes < 2 {
            return Err(Error::Invalid("arena must hold at least two frames"));
        }
        if nframes > u32::MAX as u64 {
            return Err(Error::Invalid("arena larger than 2^32 frames (16 TiB)"));
        }
        let nframes = nframes as u32;
        let data = HostRegion::reserve(nframes as usize * PAGE_SIZE, true)?;
        let meta_len = (nframes as usize * std::mem::size_of::<FrameMeta>()).next_multiple_of(PAGE_SIZE);
        let meta = HostRegion::reserve(meta_len, false)?;
        let arena = FrameArena {
            data,
            meta,
            nframes,
            alloc: alloc::FrameAllocator::new(1, nframes, caches),
            limit: std::sync::atomic::AtomicU64::new(u64::MAX),
            pressure: Default::default(),
            borrows: Default::default(),
            swap_full: Default::default(),
        };
        arena.meta(ZERO_FRAME).set_flags(flags::ALLOCATED | flags::ZERO);
        arena.meta(ZERO_FRAME).set_counts(1, 0);
        Ok(arena)
    }

    /// Cap the frames in use (allocations past it fail with ENOMEM).
    pub(crate) fn set_limit(&self, frames: u64) {
        self.limit.store(frames, Ordering::Relaxed);
    }

    /// The cap on frames in use.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed).min(self.nframes as u64 - 1)
    }

    /// Frames in the arena, the zero frame included.
    pub fn capacity(&self) -> u32 {
        self.nframes
    }

    /// Frames currently allocated (the zero frame excluded).
    pub fn in_use(&self) -> u64 {
        self.alloc.in_use()
    }

    /// Frames that have ever been handed out (they cost host memory).
    pub fn touched(&self) -> u32 {
        self.alloc.touched()
    }

    #[inline]
    fn check(&self, f: FrameId) -> usize {
        // An out-of-range frame id can only come from a corrupted entry; fail
        // loudly rather than touch memory outside the arena.
        assert!(f.0 < self.nframes, "frame {} outside the arena of {} frames", f.0, self.nframes);
        f.0 as usize
    }

    /// The metadata of frame `f`.
    #[inline]
    pub fn meta(&self, f: FrameId) -> &FrameMeta {
        let i = self.check(f);
        // SAFETY: `i < nframes` and the meta region holds `nframes` entries of
        // `FrameMeta`, suitably aligned (the region is page-aligned and the
        // entry size divides 4096). All-zero bytes are a valid `FrameMeta`
        // (atomics and parking_lot's RawMutex, checked by a unit test), and
        // the region is zero-filled by the host. It lives as long as `self`.
        unsafe { &*(self.meta.as_ptr() as *const FrameMeta).add(i) }
    }

    /// Base address of frame `f` in host memory.
    #[inline]
    pub(crate) fn frame_ptr(&self, f: FrameId) -> *mut u8 {
        let i = self.check(f);
        // SAFETY: `i < nframes`, so the offset stays inside the data region.
        unsafe { self.data.as_ptr().add(i * PAGE_SIZE) }
    }

    /// Allocate one frame, zero-filled when `zero` is set. The frame comes
    /// back with refcount 1 and the given flags.
    pub(crate) fn alloc(&self, zero: bool, fl: u32) -> Result<FrameId> {
        self.alloc_below(zero, fl, false)
    }

    /// `alloc` for the page a fault reads back from swap: it may take the
    /// last frame below the limit, kept for it while swap is full.
    pub(crate) fn alloc_swap_in(&self, zero: bool, fl: u32) -> Result<FrameId> {
        self.alloc_below(zero, fl, true)
    }

    fn alloc_below(&self, zero: bool, fl: u32, swap_in: bool) -> Result<FrameId> {
        let limit = self.limit.load(Ordering::Relaxed);
        let in_use = self.alloc.in_use();
        let kept = !swap_in && in_use + 1 == limit && self.swap_full.load(Ordering::Relaxed);
        if in_use >= limit || kept {
            self.pressure.note(in_use, limit);
            return Err(Error::NoMemory("frame limit reached"));
        }
        let got = self.alloc.alloc(zero).ok_or(Error::NoMemory("no free frame in the arena"))?;
        self.pressure.note(in_use + 1, limit);
        if zero && !got.known_zero {
            self.zero_frame(got.frame);
        }
        let m = self.meta(got.frame);

        m.owner.store(0, Ordering::Relaxed);
        m.index.store(0, Ordering::Relaxed);
        m.flags.store(flags::ALLOCATED | fl, Ordering::Relaxed);
        m.set_counts(1, 0);
        Ok(got.frame)
    }

    /// Ask the CPU to start loading `f`'s metadata: loops over the 512
    /// entries of a table touch 512 unrelated metadata lines, and overlap
    /// their cache misses this way. A hint only; never faults.
    #[inline(always)]
    pub(crate) fn prefetch_meta(&self, f: FrameId) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        if f.0 < self.nframes {
            // SAFETY: a prefetch is a hint that cannot fault or change
            // memory; the address lies in the metadata region anyway.
            unsafe {
                let p = (self.meta.as_ptr() as *const FrameMeta).add(f.0 as usize);
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = f;
    }

    /// Take a reference on a frame that is already alive.
    #[inline]
    pub(crate) fn get(&self, f: FrameId) {
        self.meta(f).add_counts(1, 0);
    }

    /// Take a reference unless the frame is already free (Linux's
    /// `get_page_unless_zero`). The caller must recheck that the frame is
    /// still the one it looked up: a freed frame can be reallocated.
    #[inline]
    pub(crate) fn try_get(&self, f: FrameId) -> bool {
        let counts = &self.meta(f).counts;
        let mut cur = counts.load(Ordering::Acquire);
        while cur as u32 != 0 {
            match counts.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Pin a frame the caller holds mapped (under its page-table lock): a
    /// pin is a reference that also counts in `FrameMeta::pins`, so that
    /// "maybe pinned" can be told from a plain reference (Linux's
    /// `folio_maybe_dma_pinned`, exact here).
    #[inline]
    pub(crate) fn pin(&self, f: FrameId) {
        pin::take_pin(self.meta(f));
    }

    /// Drop a pin; frees the frame when its reference was the last (the
    /// page was unmapped while pinned). See `pin::drop_pin` for the
    /// order of the two decrements.
    #[inline]
    pub(crate) fn unpin(&self, f: FrameId) -> bool {
        let old = pin::drop_pin(self.meta(f));
        debug_assert!(old > 0, "refcount underflow on frame {}", f.0);
        old == 1 && self.free_released(f)
    }

    /// Drop a reference; frees the frame when it was the last. Returns whether
    /// the frame was freed. The zero frame is never freed.
    #[inline]
    pub(crate) fn put(&self, f: FrameId) -> bool {
        self.release(f, 0)
    }

    /// `put` for each of `frames`: the frames freed go to the allocator
    /// together, a batch at a time (one visit of its cache per batch).
    pub(crate) fn put_many(&self, frames: impl IntoIterator<Item = FrameId>) {
        const N: usize = 64;
        let mut freed = [FrameId(0); N];
        let mut n = 0;
        for f in frames {
            let old = self.meta(f).sub_counts(1, 0);
            debug_assert!(old > 0, "refcount underflow on frame {}", f.0);
            if old != 1 || f == ZERO_FRAME {
                continue;
            }
            self.meta(f).flags.store(0, Ordering::Release);
            freed[n] = f;
            n += 1;
            if n == N {
                self.alloc.free_many(&freed);
                n = 0;
            }
        }
        if n > 0 {
            self.alloc.free_many(&freed[..n]);
        }
    }

    /// Drop a mapping and a reference together (one locked instruction);
    /// frees the frame when that was the last reference.
    #[inline]
    pub(crate) fn unmap_put(&self, f: FrameId) -> bool {
        self.release(f, 1)
    }

    #[inline]
    fn release(&self, f: FrameId, maps: u32) -> bool {
        let m = self.meta(f);
        let old = m.sub_counts(1, maps);
        debug_assert!(old > 0, "refcount underflow on frame {}", f.0);
        old == 1 && self.free_released(f)
    }

    /// Free `f`, whose last reference the caller just dropped.
    #[inline]
    fn free_released(&self, f: FrameId) -> bool {
        if f == ZERO_FRAME {
            return false;
        }
        self.meta(f).flags.store(0, Ordering::Release);
        self.alloc.free(f);
        true
    }

    /// Every free frame, and whether it is on a zeroed list (for audits;
    /// not cheap).
    pub(crate) fn free_frames(&self) -> Vec<(FrameId, bool)> {
        self.alloc.free_frames()
    }

    /// Whether frame `f` holds only zero bytes (for audits).
    pub(crate) fn frame_is_zero(&self, f: FrameId) -> bool {
        let mut buf = [0u8; PAGE_SIZE];
        self.read(f, 0, &mut buf);
        buf.iter().all(|&b| b == 0)
    }

    /// Start the background zeroing thread (see `alloc.rs`). It holds the
    /// arena only weakly between batches and exits on `stop_zeroer`.
    pub(crate) fn start_zeroer(self: &std::sync::Arc<Self>) -> Result<()> {
        self.alloc.set_zeroer_on();
        let weak = std::sync::Arc::downgrade(self);
        std::thread::Builder::new()
            .name("softmm-zeroer".into())
            .spawn(move || zeroer_main(weak))
            .map(|_| ())
            .map_err(|_| Error::Host { what: "spawning the zeroing thread", errno: crate::error::errno::EAGAIN })
    }

    /// Ask the zeroing thread to exit.
    pub(crate) fn stop_zeroer(&self) {
        self.alloc.stop_zeroer();
    }

    /// Whether freed frames still wait for the zeroing thread.
    pub(crate) fn zeroing_pending(&self) -> bool {
        self.alloc.zeroing_pending()
    }

    /// Have the zeroing thread zero every free dirty frame, those it
    /// leaves for COW copies too.
    pub(crate) fn zero_all(&self) {
        self.alloc.zero_all();
    }

    // ---- frame contents -------------------------------------------------

    #[inline]
    fn span(&self, f: FrameId, off: usize, len: usize) -> *mut u8 {
        assert!(off <= PAGE_SIZE && len <= PAGE_SIZE - off, "access {off}+{len} beyond a frame");
        // SAFETY: the frame is in the arena and `off + len <= PAGE_SIZE`.
        unsafe { self.frame_ptr(f).add(off) }
    }

    /// Copy bytes out of a frame.
    #[inline]
    pub(crate) fn read(&self, f: FrameId, off: usize, out: &mut [u8]) {
        let src = self.span(f, off, out.len());
        // SAFETY: `src..src+len` lies in the arena (checked by `span`) and
        // cannot overlap `out`, a Rust buffer outside the arena. Racing guest
        // writes may tear the copy, which is the guest's shared-memory
        // semantics; every byte value is a valid `u8`.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) }
    }

    /// Copy bytes into a frame.
    #[inline]
    pub(crate) fn write(&self, f: FrameId, off: usize, data: &[u8]) {
        let dst = self.span(f, off, data.len());
        // SAFETY: as in `read`, with the roles swapped.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) }
    }

    /// Frame `f`'s bytes as a page a swap device reads into directly (one
    /// copy fewer than reading into a buffer and copying it in).
    ///
    /// # Safety
    /// Nothing else may access `f`'s bytes while the reference lives: the
    /// caller owns the frame alone (fresh from the allocator, locked, not
    /// mapped, not yet marked `ANON`, so no fault, accessor, scan or
    /// migration reaches its bytes; `Machine::read_frame` is only for
    /// frames a secondary MMU knows are mapped).
    #[allow(clippy::mut_from_ref)] // exclusivity is the caller's promise, above
    pub(crate) unsafe fn page_mut(&self, f: FrameId) -> &mut [u8; PAGE_SIZE] {
        let p = self.frame_ptr(f) as *mut [u8; PAGE_SIZE];
        // SAFETY: the frame lies in the arena (`frame_ptr` checks), is
        // page-aligned and PAGE_SIZE bytes long, lives as long as `self`,
        // and the caller guarantees no other access while this lives.
        unsafe { &mut *p }
    }

    /// Store `len` copies of `byte` into a frame.
    #[inline]
    pub(crate) fn fill(&self, f: FrameId, off: usize, len: usize, byte: u8) {
        let dst = self.span(f, off, len);
        // SAFETY: the span lies in the arena (checked by `span`).
        unsafe { std::ptr::write_bytes(dst, byte, len) }
    }

    /// Zero a whole frame.
    #[inline]
    pub(crate) fn zero_frame(&self, f: FrameId) {
        self.fill(f, 0, PAGE_SIZE, 0);
    }

    /// Copy a whole frame (the COW copy).
    #[inline]
    pub(crate) fn copy_frame(&self, dst: FrameId, src: FrameId) {
        assert_ne!(dst, src, "copy of a frame onto itself");
        let (d, s) = (self.frame_ptr(dst), self.frame_ptr(src));
        // SAFETY: two distinct frames of the arena never overlap.
        unsafe { std::ptr::copy_nonoverlapping(s, d, PAGE_SIZE) }
    }

    /// The aligned 64-bit word at `off` of frame `f`, as an atomic.
    #[inline]
    pub(crate) fn word64(&self, f: FrameId, off: usize) -> &StdAtomicU64 {
        assert!(off % 8 == 0, "misaligned word offset {off}");
        let p = self.span(f, off, 8);
        // SAFETY: `p` is 8-byte aligned (frames are page-aligned, `off % 8 == 0`),
        // lies in the arena, and lives as long as `&self`. Guest memory is only
        // ever accessed through atomics or raw byte copies, never through Rust
        // references to non-atomic data.
        unsafe { &*(p as *const StdAtomicU64) }
    }

    /// The frame whose memory `p` points into (a pointer `frame_ptr` gave).
    #[inline]
    pub(crate) fn frame_of_ptr(&self, p: *const u8) -> FrameId {
        FrameId(((p as usize - self.data.as_ptr() as usize) / PAGE_SIZE) as u32)
    }

    /// The aligned 32-bit word at `off` of frame `f`, as an atomic (futex words).
    #[inline]
    pub(crate) fn word32(&self, f: FrameId, off: usize) -> &std::sync::atomic::AtomicU32 {
        assert!(off % 4 == 0, "misaligned word offset {off}");
        let p = self.span(f, off, 4);
        // SAFETY: as in `word64`, with 4-byte alignment.
        unsafe { &*(p as *const std::sync::atomic::AtomicU32) }
    }
}

/// The zeroing thread: take dirty frames, zero them, give them back.
fn zeroer_main(weak: std::sync::Weak<FrameArena>) {
    // Lowest priority: zeroing is worth doing only with otherwise idle CPU.
    #[cfg(not(miri))]
    let _ = rustix::process::nice(19);
    loop {
        let Some(arena) = weak.upgrade() else { return };
        let Some(batch) = arena.alloc.zeroer_take() else { return };
        for &f in &batch {
            arena.zero_frame(f);
        }
        arena.alloc.zeroer_done(&batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena() -> FrameArena {
        FrameArena::new(64 * PAGE_SIZE as u64, 0).unwrap()
    }

    #[test]
    fn zero_frame_is_reserved() {
        let a = arena();
        assert!(a.meta(ZERO_FRAME).has(flags::ZERO));
        let f = a.alloc(true, flags::ANON).unwrap();
        assert_ne!(f, ZERO_FRAME);
    }

    #[test]
    fn recycled_frames_come_back_zeroed() {
        let a = arena();
        let f = a.alloc(true, flags::ANON).unwrap();
        a.fill(f, 0, PAGE_SIZE, 0xab);
        assert!(a.put(f));
        let g = a.alloc(true, flags::ANON).unwrap();
        assert_eq!(f, g);
        let mut buf = [1u8; PAGE_SIZE];
        a.read(g, 0, &mut buf);
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn copy_read_write_words() {
        let a = arena();
        let f = a.alloc(true, 0).unwrap();
        let g = a.alloc(false, 0).unwrap();
        a.write(f, 100, b"hello");
        a.copy_frame(g, f);
        let mut buf = [0u8; 5];
        a.read(g, 100, &mut buf);
        assert_eq!(&buf, b"hello");
        a.word64(g, 8).store(0x1122, std::sync::atomic::Ordering::Relaxed);
        let mut w = [0u8; 8];
        a.read(g, 8, &mut w);
        assert_eq!(u64::from_ne_bytes(w), 0x1122);
    }

    #[test]
    fn refcounting_frees_on_last_put() {
        let a = arena();
        let f = a.alloc(true, 0).unwrap();
        a.get(f);
        assert!(!a.put(f));
        assert_eq!(a.in_use(), 1);
        assert!(a.put(f));
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn exhaustion_is_enomem() {
        let a = FrameArena::new(4 * PAGE_SIZE as u64, 0).unwrap();
        for _ in 0..3 {
            a.alloc(true, 0).unwrap();
        }
        assert_eq!(a.alloc(true, 0).unwrap_err().errno(), crate::error::errno::ENOMEM);
    }

    #[test]
    fn too_small_arena_is_einval() {
        assert!(FrameArena::new(4096, 0).is_err());
    }
}
