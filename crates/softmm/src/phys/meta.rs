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
    /// `madvise(MADV_FREE)` made this private anonymous page lazily
    /// freeable (Linux's lazyfree folio, `!PG_swapbacked`): while it stays
    /// clean (no `DIRTY`, no dirty entry), reclaim drops it instead of
    /// swapping it out.
    pub const LAZYFREE: u32 = 1 << 10;
}

/// Metadata of one frame.
///
/// A frame is of one kind at a time, told by its flags: free (no
/// `ALLOCATED`), the zero frame (`ZERO`), a page of private anonymous memory
/// (`ANON`, set once the frame is mapped or filled), a page of a shared
/// object (`SHM`), or a page-table page (`PAGETABLE`). Several fields mean
/// something else per kind; "—" is "unused, 0" (an unused lock is free).
///
/// | field | anonymous page | shared-object page | page-table page | zero frame |
/// |---|---|---|---|---|
/// | `counts` refcount | PTEs mapping it + swap cache + pins + futex keys + transient holds | 1 for the object's page index + the same | parent entries (the `Mm` for a root) + holds + 1 per borrowing table | 1, forever |
/// | `counts` mapcount | PTEs mapping it | PTEs mapping it | tables borrowing its entries (`pgtable/borrow.rs`) | 0 |
/// | `flags` | kind, `DIRTY`, `LOCKED`, `SWAPCACHE`, `SWAP_VALID`, `REFERENCED` | kind, `DIRTY`, `LOCKED` | kind | kind |
/// | `pins` | pins (`mm/pin.rs`) | pins | — | — |
/// | `ptl` | — | — | the split page-table lock (PTE tables) | — |
/// | `swap` | swap slot + 1 while in the swap cache | — | — | — |
/// | `owner` | anon_vma id (reverse map) | object id | the table it borrows from, tagged (`table_backing`), or 0 | — |
/// | `index` | page offset in the anon_vma | page offset in the object | — | — |
/// | `futex_keys` | futex waiters keyed by it | futex waiters keyed by it | — | — |
///
/// Who writes what, in gVisor's "X is protected by Y" style, is said on
/// each field. Two rules cover most of it: a frame the allocator just
/// handed out is its caller's alone until published (a PTE install under a
/// page-table lock, a shared object's page index, the swap cache), so
/// plain stores may set it up; and the counts are only ever changed by
/// atomic read-modify-writes of holders (never set on a visible frame),
/// because a scanner that looked at a frame's previous life may still drop
/// a reference it took with `FrameArena::try_get`. The metadata of a freed
/// frame stays readable: lock-free lookers recheck what they found.
#[repr(C, align(64))]
pub struct FrameMeta {
    /// `refcount` in the low 32 bits, `mapcount` in the high 32: one
    /// locked instruction takes (or drops) a reference and a mapping
    /// together, which the 512-entry table loops (fork, unshare, zap) do
    /// for every frame. Always accessed as one 64-bit atomic.
    ///
    /// Changed by whoever holds (or takes) the reference or mapping it
    /// counts, with atomic adds and subtracts; `set_counts` only on a frame
    /// nobody else can see yet. For a page-table page, `refcount -
    /// mapcount` is its mappers, read in one load (`borrow::mappers`).
    pub(crate) counts: AtomicU64,
    /// `flags::*` bits. `ALLOCATED` and the kind bits (`ANON`, `SHM`,
    /// `PAGETABLE`, `ZERO`) are set when the frame is set up, before or as
    /// it is published, and cleared all at once by the free; `LOCKED` is
    /// the frame lock itself (`try_lock`); `SWAPCACHE` and `SWAP_VALID`
    /// change under the swap slot's shard lock (and the frame lock when
    /// leaving the cache, `reclaim/swap.rs`); `DIRTY` and `REFERENCED` are
    /// hints set and cleared by atomic or/and at any time.
    pub(crate) flags: AtomicU32,
    /// Pins held by secondary users (`Mm::pin_pages`); each is counted in
    /// `refcount` too. Taken under the page-table lock mapping the frame,
    /// dropped with no lock, in the order `phys/pin.rs` gives. Page frames
    /// only.
    pub(crate) pins: AtomicU32,
    /// Split page-table lock, used when the frame is a PTE table (its
    /// order among the other locks is at the top of `mm/mod.rs`). Unused,
    /// and so free, on every other kind.
    pub(crate) ptl: parking_lot::RawMutex,
    /// Swap slot + 1 while in the swap cache (0: none). Written under the
    /// slot's shard lock of the swap space (cleared also under the frame
    /// lock); read without a lock by a fault that then rechecks it.
    pub(crate) swap: AtomicU32,
    /// Page frames: the owner for reverse mapping (anon_vma id for `ANON`,
    /// shared object id for `SHM`), written while the frame is its
    /// writer's alone (new, being read in, a migration's copy) and then
    /// constant until freed. Page-table frames: the backing table tagged
    /// with [`BACKING_TAG`] while the table borrows, else 0 (see
    /// [`table_backing`](Self::table_backing)); set before the table is
    /// installed, cleared under the table's own PTE lock.
    pub(crate) owner: AtomicU64,
    /// Page frames: the page offset within the owner, written and kept as
    /// `owner` is. Unused (0) on page-table frames.
    pub(crate) index: AtomicU64,
    /// Futex waiters whose key names this frame (physical keys); each holds
    /// one of `refcount`, taken before it is counted here and dropped after
    /// it is uncounted, so this never exceeds the references it stands for.
    /// COW's reuse test leaves them out (see `mm::fault::anon_exclusive`).
    /// Changed by the futex code (sequentially consistent adds), page
    /// frames only.
    pub(crate) futex_keys: AtomicU32,
}

/// How a page-table frame's `owner` names its backing table: tagged, so
/// that no anon_vma or object id (what `owner` holds for a page frame, and
/// still holds in a recycled frame a stale look may meet) reads as one.
pub(crate) const BACKING_TAG: u64 = 1 << 63;

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

    /// A page-table frame's backing table (the table whose entries it
    /// borrows, `pgtable/borrow.rs`), if it has one. Read without a lock;
    /// only a `None` is final there.
    #[inline]
    pub(crate) fn table_backing(&self) -> Option<super::FrameId> {
        let o = self.owner.load(Ordering::Acquire);
        (o & BACKING_TAG != 0).then_some(super::FrameId(o as u32))
    }

    /// Set (or clear, with `None`) a page-table frame's backing table.
    #[inline]
    pub(crate) fn set_table_backing(&self, t: Option<super::FrameId>) {
        self.owner.store(t.map_or(0, |t| BACKING_TAG | t.0 as u64), Ordering::Release);
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
