//! Deferred frame release after a TLB shootdown (Linux's `mmu_gather`).
//!
//! An operation that removes or replaces PTEs records the frames it unmapped
//! here instead of dropping their references at once: another thread's
//! accessor may still be reading one through its software TLB. `finish` first
//! shoots down every stale translation, then drops the references.

use super::MmInner;
use crate::phys::FrameId;
use crate::stats::Counters;
use crate::tlb::Slot;

#[derive(Default)]
pub(crate) struct Gather {
    /// No accessor can hold a stale translation: references go at once.
    immediate: bool,
    /// The common case (one COW copy) allocates nothing.
    first: Option<FrameId>,
    rest: Vec<FrameId>,
    /// A translation may have become stale (even with no frame to free).
    flush: bool,
}

impl Gather {
    /// Record that cached translations must be flushed.
    #[inline]
    pub(crate) fn need_flush(&mut self) {
        self.flush = true;
    }

    /// For an operation under the `mmap_lock` held for writing. With no
    /// accessor registered, nothing can hold a stale translation (fills
    /// need the lock, and an accessor registered later starts empty), so
    /// references are dropped at once instead of in a second pass.
    pub(crate) fn for_write_locked(mm: &MmInner) -> Gather {
        Gather { immediate: mm.tlb.accessors() == 0, ..Gather::default() }
    }

    /// Drop a mapping of `f` now and its reference once stale translations
    /// are gone (both in one locked instruction when no accessor exists).
    #[inline]
    pub(crate) fn unmap_and_put(&mut self, arena: &crate::phys::FrameArena, f: FrameId) {
        if self.immediate {
            arena.unmap_put(f);
            return;
        }
        arena.meta(f).sub_counts(0, 1);
        self.defer_put(arena, f);
    }

    /// Drop a reference on `f` once stale translations are gone.
    #[inline]
    pub(crate) fn defer_put(&mut self, arena: &crate::phys::FrameArena, f: FrameId) {
        if self.immediate {
            arena.put(f);
            return;
        }
        self.flush = true;
        if self.first.is_none() {
            self.first = Some(f);
        } else {
            self.rest.push(f);
        }
    }

    /// Shoot down stale translations, then release the frames. `except` is
    /// the calling accessor's slot, if the operation runs on behalf of one.
    pub(crate) fn finish(self, mm: &MmInner, except: Option<&Slot>) {
        if !self.flush {
            return;
        }
        if mm.tlb.flush(except) {
            Counters::bump(&mm.machine.counters.tlb_flushes);
        }
        let arena = mm.arena();
        for f in self.first.into_iter().chain(self.rest) {
            arena.put(f);
        }
    }
}
