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
    /// Shared PTE tables this space left while others still shared them:
    /// (table, base). The reference goes after the shootdown (see
    /// `share::drop_shared`).
    tables: Vec<(FrameId, u64)>,
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

    /// Whether leaving a shared table must wait for the shootdown (see
    /// `share::drop_shared`): not when no accessor can cache anything.
    pub(crate) fn shootdown_pending(&self) -> bool {
        !self.immediate
    }

    /// Drop this space's reference on shared table `t` (covering `base`)
    /// once stale translations are gone.
    pub(crate) fn drop_table_later(&mut self, t: FrameId, base: u64) {
        self.flush = true;
        self.tables.push((t, base));
    }

    /// Nothing to shoot down and nothing to free.
    pub(crate) fn is_empty(&self) -> bool {
        !self.flush && self.first.is_none() && self.tables.is_empty()
    }

    /// Take over `other`'s flush and deferred references, so one shootdown
    /// covers both (a `ChangeBatch`'s, for one space).
    pub(crate) fn absorb(&mut self, other: Gather) {
        self.flush |= other.flush;
        let Gather { first, rest, tables, .. } = other;
        for f in first.into_iter().chain(rest) {
            if self.first.is_none() {
                self.first = Some(f);
            } else {
                self.rest.push(f);
            }
        }
        self.tables.extend(tables);
    }

    /// Shoot down stale translations, then release the frames. `except` is
    /// the calling accessor's slot, if the operation runs on behalf of one.
    #[inline]
    pub(crate) fn finish(self, mm: &MmInner, except: Option<&Slot>) {
        if !self.flush {
            return;
        }
        self.shootdown(mm, except).release(mm);
    }

    /// Shoot down stale translations; the references to drop come back as
    /// a [`Deferred`], the only way to reach them, so they can be released
    /// only after the shootdown.
    pub(crate) fn shootdown(self, mm: &MmInner, except: Option<&Slot>) -> Deferred {
        if self.flush && mm.tlb.flush(except) {
            Counters::bump(&mm.machine.counters.tlb_flushes);
        }
        Deferred { first: self.first, rest: self.rest, tables: self.tables }
    }
}

/// References a change dropped, whose translations are shot down now
/// (`Gather::shootdown` makes the only ones): frames, and shared tables
/// this space left.
#[must_use = "deferred references must be released"]
pub(crate) struct Deferred {
    first: Option<FrameId>,
    rest: Vec<FrameId>,
    tables: Vec<(FrameId, u64)>,
}

impl Deferred {
    /// Drop the references.
    pub(crate) fn release(self, mm: &MmInner) {
        let arena = mm.arena();
        match (self.first, self.rest.is_empty()) {
            (Some(f), true) => {
                arena.put(f);
            }
            (first, _) => arena.put_many(first.into_iter().chain(self.rest)),
        }
        // After the shootdown, so the frames such a table maps outlive every
        // translation of this space. A table found last here is zapped with
        // its frames released at once: every other sharer dropped its
        // reference only after its own shootdown, and this space's is done.
        let c = &mm.machine.counters;
        for (t, base) in self.tables {
            let mut now = Gather { immediate: true, ..Gather::default() };
            crate::pgtable::share::put_late(arena, t, base, c, |_, p| super::mmap::zap_pte(&mm.machine, p, &mut now));
        }
    }
}
