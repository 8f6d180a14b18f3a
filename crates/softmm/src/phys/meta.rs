//! Per-frame metadata, one cache line per frame, in a parallel array.
//!
//! An all-zero `FrameMeta` is a valid free frame, so the array can live in a
//! lazily zero-filled host mapping: only frames ever used cost memory.

use lock_api::RawMutex as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The refcount half of `FrameMeta::counts`, as `pgtable::share` needs it.
pub(crate) struct Refcount<'a>(pub(crate) &'a AtomicU64);

/// Frame flag bits (in `FrameMeta::flags`).
pub mod flags {
    /// The frame is handed out by the allocator.
    pub const ALLOCATED: u32 = 1 << 0;
    /// Private anonymous memory.
    pub const ANON: u32 = 1 << 1;
    /// Page of a shared memory object.
    pub const SHM: u32 = 1 << 2;
    /// Page-table page.
    pub const PAGETABLE: u32 = 1 << 3;
    /// The page itself is dirty (Linux's PG_dirty): set when a page is
    /// created by a write, by a write *fault* on shared memory, and when a
    /// dirty PTE is zapped. A CPU write through a writable entry dirties only
    /// that entry. smaps counts a page dirty if either is.
    pub const DIRTY: u32 = 1 << 4;
    /// The shared zero frame.
    pub const ZERO: u32 = 1 << 5;
    /// Locked against swap-in, reclaim and migration of the same frame
    /// (Linux's PG_locked); see `FrameMeta::try_lock`.
    pub const LOCKED: u32 = 1 << 6;
    /// In the swap cache: `FrameMeta::swap` names its slot, and the cache
    /// holds one reference.
    pub const SWAPCACHE: u32 = 1 << 7;
    /// In the swap cache with a copy on the device that matches the frame
    /// (written out, or read in and never mapped writable since): the
    /// frame may be dropped without I/O.
    pub const SWAP_VALID: u32 = 1 << 8;
    /// A look-around found a mapping of this private anonymous frame
    /// accessed, and cleared that entry's accessed bit, since the clock's
    /// last look at it (`reclaim/visit.rs`): the clock's next look gives it
    /// its second chance without a reverse-map walk (Linux's PG_referenced
    /// as MGLRU's look-around uses it).
    pub const REFERENCED: u32 = 1 << 9;
}

/// Metadata of one frame.
///
/// `refcount` counts every reference that keeps the frame alive: each PTE
/// mapping it, a shared object's page index, a page-table parent entry (for
/// page-table pages), and transient references taken by remote accesses.
/// `mapcount` counts PTE mappings only (what smaps divides PSS by).
#[repr(C, align(64))]
pub struct FrameMeta {
    /// `refcount` in the low 32 bits, `mapcount` in the high 32: one
    /// locked instruction takes (or drops) a reference and a mapping
    /// together, which the 512-entry table loops (fork, unshare, zap) do
    /// for every frame. Always accessed as one 64-bit atomic.
    pub(crate) counts: AtomicU64,
    pub(crate) flags: AtomicU32,
    /// Pins held by secondary users (`Mm::pin_pages`); each is counted in
    /// `refcount` too.
    pub(crate) pins: AtomicU32,
    /// Split page-table lock, used when the frame is a PTE table.
    pub(crate) ptl: parking_lot::RawMutex,
    /// Swap slot + 1 while in the swap cache (0: none).
    pub(crate) swap: AtomicU32,
    /// Owner of the frame for reverse mapping (anon_vma or shared object id).
    pub(crate) owner: AtomicU64,
    /// Page offset of the frame within its owner.
    pub(crate) index: AtomicU64,
    /// Futex waiters whose key names this frame (physical keys); each holds
    /// one of `refcount`, taken before it is counted here and dropped after
    /// it is uncounted, so this never exceeds the references it stands for.
    /// COW's reuse test leaves them out (see `mm::fault::anon_exclusive`).
    pub(crate) futex_keys: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<FrameMeta>() <= 64);

impl FrameMeta {
    #[inline]
    pub fn refcount(&self) -> u32 {
        self.counts.load(Ordering::Acquire) as u32
    }
    #[inline]
    pub fn mapcount(&self) -> u32 {
        (self.counts.load(Ordering::Acquire) >> 32) as u32
    }
    /// Set both counts (a frame nobody else can see yet).
    #[inline]
    pub(crate) fn set_counts(&self, refcount: u32, mapcount: u32) {
        self.counts.store((mapcount as u64) << 32 | refcount as u64, Ordering::Release);
    }
    /// Add to the counts; returns the refcount before.
    #[inline]
    pub(crate) fn add_counts(&self, refs: u32, maps: u32) -> u32 {
        self.counts.fetch_add((maps as u64) << 32 | refs as u64, Ordering::AcqRel) as u32
    }
    /// Subtract from the counts; returns the refcount before. The caller
    /// holds what it drops, so neither half can underflow into the other.
    #[inline]
    pub(crate) fn sub_counts(&self, refs: u32, maps: u32) -> u32 {
        self.counts.fetch_sub((maps as u64) << 32 | refs as u64, Ordering::AcqRel) as u32
    }
    /// Futex waiters keyed by the frame now.
    #[inline]
    pub fn futex_keys(&self) -> u32 {
        self.futex_keys.load(Ordering::SeqCst)
    }
    /// Pins held on the frame now.
    #[inline]
    pub fn pins(&self) -> u32 {
        self.pins.load(Ordering::Acquire)
    }
    /// References that are not pins: what COW's reuse test looks at (see
    /// `phys::pin::unpinned_refs`).
    #[inline]
    pub(crate) fn unpinned_refs(&self) -> u32 {
        super::pin::unpinned_refs(self)
    }
    #[inline]
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }
    #[inline]
    pub fn has(&self, f: u32) -> bool {
        self.flags() & f != 0
    }
    #[inline]
    pub(crate) fn set_flags(&self, f: u32) {
        self.flags.fetch_or(f, Ordering::AcqRel);
    }
    #[inline]
    pub(crate) fn clear_flags(&self, f: u32) {
        self.flags.fetch_and(!f, Ordering::AcqRel);
    }
    /// Clear `f`; whether any of it was set.
    #[inline]
    pub(crate) fn test_and_clear_flags(&self, f: u32) -> bool {
        // A plain load first: the common answer (not set) takes no locked
        // instruction and leaves the line shared.
        self.flags() & f != 0 && self.flags.fetch_and(!f, Ordering::AcqRel) & f != 0
    }

    /// Take the frame lock if it is free. Holders: reclaim and migration of
    /// this frame, and a swap-in filling it. Nobody holding a page-table
    /// lock waits for it (see `mm/mod.rs`).
    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        self.flags.fetch_or(flags::LOCKED, Ordering::Acquire) & flags::LOCKED == 0
    }

    /// Release the frame lock.
    #[inline]
    pub(crate) fn unlock(&self) {
        self.flags.fetch_and(!flags::LOCKED, Ordering::Release);
    }

    /// Wait until the frame lock is free (without taking it).
    pub(crate) fn wait_unlocked(&self) {
        let backoff = crossbeam_utils::Backoff::new();
        while self.has(flags::LOCKED) {
            backoff.snooze();
        }
    }
    /// Take the split page-table lock of this (page-table) frame.
    #[inline]
    pub(crate) fn lock_ptl(&self) {
        self.ptl.lock();
    }

    /// Release the split page-table lock.
    ///
    /// # Safety
    /// The caller must hold the lock, taken by `lock_ptl` on this frame.
    #[inline]
    pub(crate) unsafe fn unlock_ptl(&self) {
        // SAFETY: forwarded to the caller.
        unsafe { self.ptl.unlock() }
    }
}

impl super::pin::PinCounts for FrameMeta {
    #[inline]
    fn refs(&self) -> u32 {
        self.refcount()
    }
    #[inline]
    fn pins(&self) -> u32 {
        FrameMeta::pins(self)
    }
    #[inline]
    fn add_pin(&self) {
        self.pins.fetch_add(1, Ordering::AcqRel);
    }
    #[inline]
    fn sub_pin(&self) {
        let old = self.pins.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(old > 0, "pin underflow");
    }
    #[inline]
    fn add_ref(&self) {
        self.add_counts(1, 0);
    }
    #[inline]
    fn sub_ref(&self) -> u32 {
        self.sub_counts(1, 0)
    }
}

#[cfg(test)]
mod tests {
    /// The metadata array relies on all-zero bytes being a valid, unlocked
    /// `RawMutex`; check that `parking_lot` still encodes it so.
    #[test]
    fn raw_mutex_init_is_all_zero() {
        let m = <parking_lot::RawMutex as lock_api::RawMutex>::INIT;
        // SAFETY: RawMutex is a plain one-byte atomic state; reading its bytes is fine.
        let bytes: [u8; std::mem::size_of::<parking_lot::RawMutex>()] = unsafe { std::mem::transmute(m) };
        assert!(bytes.iter().all(|&b| b == 0));
    }
}
