//! The clock scan and batched swap-out of anonymous frames.
//!
//! The hand sweeps the arena's frames in order. A private anonymous frame
//! whose mappings were accessed since the last sweep gets a second chance
//! (its accessed bits are cleared, as Linux's `folio_referenced` does);
//! the others are swapped out: put in the swap cache, unmapped everywhere
//! (entries become swap entries naming the slot), their translations shot
//! down, written to the device, and freed. Software TLB hits do not set
//! accessed bits (a hit takes no atomic operation), so "accessed" means
//! "faulted or filled into a TLB since the last sweep": a clock over TLB
//! fills rather than over every access, which is what softmm can see.
//!
//! A frame already in the swap cache (read back from swap, or written
//! before) has a slot, so one reverse-map walk both ages and unmaps it
//! (`SwapBatch::age_or_unmap`): entries accessed since the last look only
//! lose their accessed bit, the others become swap entries at once. A page
//! read back and not written since is clean: once unmapped it is dropped
//! without I/O. Other frames take a walk to age them and, when cold, a
//! second one to unmap them once the batch has given them their slots.
//!
//! An aging walk that finds an entry accessed looks around it (`visit.rs`,
//! MGLRU's look-around): it ages the accessed entries of the 64-entry group
//! around it in the same table and marks their frames `REFERENCED`. The
//! clock's next look at a marked frame spends the mark as its second
//! chance, without a walk; pages used together (a sequential reader's) are
//! then aged about one walk per 64 pages instead of one walk each.
//!
//! Anonymous victims are swapped out in batches (`SwapBatch`, each frame
//! locked meanwhile): up to `WRITE_BATCH` frames to write, sorted by owner
//! and page index, get consecutive slots in that order (`SlotMap` is
//! next-fit), and each run of consecutive slots is written with one
//! vectored write. Neighbouring pages thus sit side by side on the device,
//! where swap readahead (`swapin.rs`) reads them back with one read. The
//! batch's translations are shot down once per address space, not once per
//! page (Linux's `try_to_unmap_flush`), for up to `HOLD_MAX` frames.
//!
//! Failures lose nothing: a full device leaves the page mapped; a failed
//! write leaves every page of its run in the swap cache, resident and
//! intact, where a fault finds it and a later sweep writes it again.

use super::swap::{with_scratch, SwapSpace};
use super::{age, visit_mappings, How, Visit};
use crate::error::{Error, Result};
use crate::machine::MachineInner;
use crate::mm::ChangeBatch;
use crate::notifier::Event;
use crate::phys::{flags, FrameId};
use crate::pte::Pte;
use crate::stats::Counters;
use std::sync::atomic::Ordering;

/// Frames one direct reclaim tries to free.
const BATCH: usize = 32;

/// Anonymous frames swapped out together at most (see the module doc).
const WRITE_BATCH: usize = 32;

/// Frames one batch holds at most (locked; at most `WRITE_BATCH` of them
/// still to be written): one TLB shootdown covers them all. A shootdown
/// that must reach another thread costs a `membarrier`, which interrupts
/// every other CPU running this process (tens of microseconds measured on
/// a loaded 2-CPU VM): pages dropped without I/O share one among up to
/// this many.
pub(crate) const HOLD_MAX: usize = 256;

/// Free frames for an allocation that hit the frame limit. Returns whether
/// anything was freed (the caller retries its allocation then).
pub(crate) fn direct_reclaim(m: &MachineInner) -> bool {
    if !can_reclaim(m) {
        return false;
    }
    Counters::bump(&m.counters.direct_reclaims);
    let before = m.arena.in_use();
    let _one = m.reclaim.scanning.lock();
    if m.arena.in_use() < before {
        return true; // another thread freed frames while we waited
    }
    // First skip busy address spaces; if that frees nothing, wait for them
    // (the caller holds at most `mmap_lock`s for reading, and writers never
    // wait for what a reclaimer holds, so the wait ends).
    shrink_with(m, BATCH, true) > 0 || shrink_with(m, BATCH, false) > 0
}

/// Run the clock until `want` frames are freed or two sweeps found nothing
/// more. Returns the frames freed. Busy address spaces are skipped.
pub(crate) fn shrink(m: &MachineInner, want: usize) -> usize {
    shrink_with(m, want, true)
}

/// Whether any page could leave memory: with swap, any; without, only
/// host files' pages (dropped, or written back first).
pub(crate) fn can_reclaim(m: &MachineInner) -> bool {
    m.reclaim.swap.is_some() || m.live_shms().iter().any(|o| o.store.is_host())
}

fn shrink_with(m: &MachineInner, want: usize, try_only: bool) -> usize {
    let swap = m.reclaim.swap.as_deref();
    if !can_reclaim(m) {
        return 0;
    }
    let arena = &m.arena;
    let touched = arena.touched().max(2);
    let mut freed = 0;
    let mut looked = 0u64;
    let mut batch = SwapBatch::with_capacity(want.min(HOLD_MAX));
    while freed < want && looked < 2 * touched as u64 {
        looked += 1;
        let i = m.reclaim.hand.fetch_add(1, Ordering::Relaxed);
        let f = FrameId(1 + i % (touched - 1));
        let meta = arena.meta(f);
        let fl = meta.flags();
        if fl & (flags::ANON | flags::SHM) == 0 || fl & (flags::PAGETABLE | flags::ZERO | flags::LOCKED) != 0 {
            continue;
        }
        // A look-around's mark is the page's second chance (`consider`),
        // spent without taking a reference: clearing it on a frame freed
        // meanwhile is harmless (the allocator overwrites the flags).
        if fl & flags::REFERENCED != 0 && meta.test_and_clear_flags(flags::REFERENCED) {
            continue;
        }
        if !arena.try_get(f) {
            continue;
        }
        if meta.has(flags::SHM) {
            match super::shm::swap_out_shm(m, swap, f, try_only) {
                Ok(true) => freed += 1,
                Ok(false) => {}
                Err(_) => Counters::bump(&m.counters.swap_failures),
            }
        } else if let (true, Some(swap)) = (meta.has(flags::ANON), swap) {
            batch.consider(m, swap, f, try_only);
        }
        arena.put(f);
        // Victims go out together once they make a batch or would make up
        // what is still wanted (after the put above: a frame leaves only
        // when the cache and the batch are all that hold it).
        let full = batch.queued.len() >= WRITE_BATCH || batch.len() >= HOLD_MAX.min(want.saturating_sub(freed));
        if let (false, true, Some(swap)) = (batch.is_empty(), full, swap) {
            freed += batch.flush(m, swap, try_only);
        }
    }
    freed + swap.map_or(0, |swap| batch.flush(m, swap, try_only))
}

/// Whether any mapping of `f` was accessed since the last look, by the
/// entry or by a secondary MMU; clears the accessed bits it finds (Linux's
/// `folio_referenced` + `ptep_clear_young` and MMU notifier `clear_young`).
fn referenced(m: &MachineInner, f: FrameId, try_only: bool) -> bool {
    visit_mappings(m, f, How { try_only, age: true, ..How::default() }, age, |_| {}).young
}

/// The unmap edit: a present entry of the frame `meta` describes becomes
/// a swap entry for `slot`, unless the frame is pinned. Pins are taken
/// under the page-table lock the edit runs under, so a pin taken since the
/// caller's own check keeps the page mapped (unswapped).
fn to_swap_entry(meta: &crate::phys::FrameMeta, slot: u32, pte: Pte) -> Option<Pte> {
    (pte.is_present() && meta.pins() == 0).then_some(Pte::swap(slot))
}

/// Anonymous frames the clock chose, each locked and held by a reference
/// of the batch's own, waiting to be swapped out together.
///
/// Holding several frame locks at once is safe: a thread waiting for one
/// (a fault on its swap entry) holds at most an `mmap_lock` for reading,
/// which the batch's visits take recursively, and nothing waits for a
/// frame lock while holding what a visit takes after it (see `mod.rs`).
struct SwapBatch {
    /// Every frame of the batch (locked, with the batch's reference).
    held: Vec<FrameId>,
    /// Frames still to unmap, at the next flush.
    queued: Vec<FrameId>,
    /// Frames unmapped, waiting for the shootdowns of `changes`.
    unmapped: Vec<Unmapped>,
    /// The visits' changes of entries: one shootdown per address space
    /// for the whole batch, then the secondary MMUs' bracket ends.
    changes: ChangeBatch,
    /// Lazily freeable frames whose clean entries were dropped, waiting
    /// for the batch's TLB shootdown (`discard_lazyfree`).
    lazy: Vec<FrameId>,
}

/// A frame of the batch whose entries became swap entries, waiting for
/// the batch's TLB shootdown.
struct Unmapped {
    f: FrameId,
    slot: u32,
    /// The visit skipped a space (`Visit::skipped`).
    skipped: bool,
}

/// What is left to do for a frame once its stale translations are gone.
enum Settled {
    /// The frame stays in memory (busy, mapped again).
    Stays,
    /// The frame left the swap cache: the batch's reference is the last.
    Freed,
    /// Its page must be written to its slot before it can go.
    Write(u32),
}

impl SwapBatch {
    /// A batch that holds up to `n` frames without growing.
    fn with_capacity(n: usize) -> SwapBatch {
        SwapBatch {
            held: Vec::with_capacity(n),
            queued: Vec::with_capacity(n.min(WRITE_BATCH)),
            unmapped: Vec::with_capacity(n),
            changes: ChangeBatch::default(),
            lazy: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.held.len()
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Age private frame `f` (the caller holds a reference), or take it
    /// into the batch if it is cold.
    fn consider(&mut self, m: &MachineInner, swap: &SwapSpace, f: FrameId, try_only: bool) {
        let meta = m.arena.meta(f);
        if meta.test_and_clear_flags(flags::REFERENCED) {
            // A look-around aged it since our last look (`visit.rs`): its
            // second chance, taken without a walk.
            return;
        }
        if meta.has(flags::SWAPCACHE) {
            self.age_or_unmap(m, swap, f, try_only);
        } else if !referenced(m, f, try_only) {
            self.add(m, f);
        }
    }

    /// Lock `f` (the caller holds a reference) and keep it, with a
    /// reference of the batch's own, for the next flush; false if someone
    /// else holds its lock.
    fn hold(&mut self, m: &MachineInner, f: FrameId) -> bool {
        if !m.arena.meta(f).try_lock() {
            return false;
        }
        m.arena.get(f);
        self.held.push(f);
        true
    }

    /// Queue `f` to be unmapped at the next flush.
    fn add(&mut self, m: &MachineInner, f: FrameId) {
        if self.hold(m, f) {
            self.queued.push(f);
        }
    }

    /// One walk for a frame in the swap cache: mappings accessed since the
    /// last look are aged, the others become swap entries for its slot.
    /// The frame joins the batch if any entry was replaced (the shootdown
    /// is the batch's) or none maps it any more (it may go).
    fn age_or_unmap(&mut self, m: &MachineInner, swap: &SwapSpace, f: FrameId, try_only: bool) {
        if !self.hold(m, f) {
            return;
        }
        let meta = m.arena.meta(f);
        // Under the frame lock: every removal from the cache holds it.
        let slot = meta.swap.load(Ordering::Acquire);
        if !meta.has(flags::ANON) || slot == 0 || meta.pins.load(Ordering::Acquire) > 0 {
            return self.release_last(m, swap);
        }
        let slot = slot - 1;
        let how = How { try_only, event: Some(Event::SwapOut), age: true, mlock: true };
        let edit = |pte: Pte| age(pte).or_else(|| to_swap_entry(meta, slot, pte));
        let visit = unmap_with(m, swap, f, slot, how, edit);
        if visit.changed == 0 && meta.mapcount() != 0 {
            drop(visit); // ends its brackets: nothing to shoot down
            return self.release_last(m, swap); // still mapped
        }
        self.unmapped.push(Unmapped { f, slot, skipped: visit.skipped });
        self.changes.absorb(visit.changes);
    }

    /// Give back the frame `hold` took last.
    fn release_last(&mut self, m: &MachineInner, swap: &SwapSpace) {
        if let Some(f) = self.held.pop() {
            swap.unlock_frame(&m.arena, f);
            m.arena.put(f);
        }
    }

    /// Swap out every frame of the batch and release it. Returns the frames
    /// freed; failures are counted in `swap_failures`, one per page.
    fn flush(&mut self, m: &MachineInner, swap: &SwapSpace, try_only: bool) -> usize {
        let arena = &m.arena;
        // Neighbouring pages get consecutive slots, in address order: the
        // fault on the first reads the others ahead.
        let mut queued = std::mem::take(&mut self.queued);
        queued.sort_by_cached_key(|&f| {
            let meta = arena.meta(f);
            (meta.owner.load(Ordering::Relaxed), meta.index.load(Ordering::Relaxed))
        });
        for f in queued {
            match self.unmap(m, swap, f, try_only) {
                Ok(Some(u)) => self.unmapped.push(u),
                Ok(None) => {}
                Err(_) => Counters::bump(&m.counters.swap_failures),
            }
        }
        // One shootdown per address space for the whole batch (Linux's
        // `try_to_unmap_flush`), before any page is copied out or freed;
        // then the secondary MMUs' invalidations end.
        std::mem::take(&mut self.changes).finish();
        let mut freed = self.settle_lazyfree(m);
        let mut writes = Vec::with_capacity(self.unmapped.len());
        for u in self.unmapped.drain(..) {
            match settle(m, swap, u.f, u.slot, u.skipped) {
                Settled::Stays => {}
                Settled::Freed => freed += 1,
                Settled::Write(slot) => writes.push((slot, u.f)),
            }
        }
        writes.sort_unstable_by_key(|&(slot, _)| slot);
        for run in writes.chunk_by(|a, b| a.0.checked_add(1) == Some(b.0)) {
            freed += write_run(m, swap, run);
        }
        for f in self.held.drain(..) {
            // Exits meanwhile may have left it an orphan (`unlock_frame`).
            swap.unlock_frame(arena, f);
            arena.put(f); // frees a frame that left the swap cache
        }
        freed
    }

    /// Put locked frame `f` of the batch in the swap cache (unless it is
    /// there) and replace its entries everywhere with swap entries holding
    /// the slot. `None`: the frame stays as it was.
    fn unmap(&mut self, m: &MachineInner, swap: &SwapSpace, f: FrameId, try_only: bool) -> Result<Option<Unmapped>> {
        let meta = m.arena.meta(f);
        if !meta.has(flags::ANON) || meta.pins.load(Ordering::Acquire) > 0 {
            return Ok(None);
        }
        if meta.has(flags::LAZYFREE) && !meta.has(flags::DIRTY | flags::SWAPCACHE) {
            self.discard_lazyfree(m, f, try_only);
            return Ok(None);
        }
        // Written since MADV_FREE: swapped as any page (`folio_set_swapbacked`).
        if meta.has(flags::LAZYFREE) {
            meta.clear_flags(flags::LAZYFREE);
        }
        let slot = match meta.swap.load(Ordering::Acquire) {
            0 => {
                let Some(slot) = swap.alloc() else {
                    return Err(Error::SwapFull(format!("no free slot on {}", swap.dev.describe())));
                };
                let cached = swap.insert(&m.arena, slot, f);
                swap.put(slot); // the allocation's reference: the cache holds one now
                if !cached {
                    return Ok(None);
                }
                slot
            }
            s => s - 1,
        };
        // Secondary MMUs drop their translations too; their invalidations
        // end when the visit is dropped, after the batch's shootdown. (Not
        // a migration entry: a frame being migrated is locked anyway.)
        let how = How { try_only, event: Some(Event::SwapOut), mlock: true, ..How::default() };
        let edit = |pte: Pte| to_swap_entry(meta, slot, pte);
        let visit = unmap_with(m, swap, f, slot, how, edit);
        self.changes.absorb(visit.changes);
        Ok(Some(Unmapped { f, slot, skipped: visit.skipped }))
    }
}

/// Replace the entries `edit` chooses of locked frame `f`, cached for
/// `slot`, with swap entries (`edit` gives `Pte::swap(slot)` or ages):
/// counts, slot references and dirtiness follow. The visit's changes
/// are the caller's to hand to the batch.
fn unmap_with(
    m: &MachineInner,
    swap: &SwapSpace,
    f: FrameId,
    slot: u32,
    how: How,
    edit: impl Fn(Pte) -> Option<Pte>,
) -> Visit {
    let meta = m.arena.meta(f);
    let mut dirty = false;
    let visit = visit_mappings(m, f, how, edit, |old| {
        dirty |= old.is_dirty();
        swap.dup(slot);
    });
    if visit.changed > 0 {
        // The frame stays alive (the cache and the batch hold it) and is
        // neither copied nor freed before the shootdown.
        meta.sub_counts(visit.changed, visit.changed);
    }
    if dirty {
        meta.set_flags(flags::DIRTY);
        meta.clear_flags(flags::SWAP_VALID);
    }
    visit
}

/// Write the pages of a run of consecutive slots with one vectored
/// write, then take out of the swap cache those nothing else holds.
/// Returns the frames that left. A failed write leaves every page of
/// the run in the cache, resident, intact and not `SWAP_VALID`, so a
/// later sweep writes it again.
fn write_run(m: &MachineInner, swap: &SwapSpace, run: &[(u32, FrameId)]) -> usize {
    let arena = &m.arena;
    let Some(&(first, _)) = run.first() else { return 0 };
    let written = with_scratch(run.len(), |pages| {
        for (page, &(_, f)) in pages.iter_mut().zip(run) {
            arena.read(f, 0, page);
        }
        swap.dev.write_pages(first as u64, pages)
    });
    if written.is_err() {
        m.counters.swap_failures.fetch_add(run.len() as u64, Ordering::Relaxed);
        return 0;
    }
    let mut freed = 0;
    for &(slot, f) in run {
        let meta = arena.meta(f);
        meta.set_flags(flags::SWAP_VALID);
        // What the slot now holds, for readahead of it.
        swap.set_rmap(slot, meta.owner.load(Ordering::Relaxed), meta.index.load(Ordering::Relaxed));
        if swap.remove_if(arena, f, 2, false) {
            Counters::bump(&m.counters.swap_outs);
            freed += 1;
        }
    }
    freed
}

/// Decide the fate of an unmapped frame of the batch, its stale
/// translations shot down: free it if its device copy is valid (or nobody
/// needs the page any more), or have it written.
fn settle(m: &MachineInner, swap: &SwapSpace, f: FrameId, slot: u32, skipped: bool) -> Settled {
    let arena = &m.arena;
    let meta = arena.meta(f);
    // A skipped (busy) space may share a PTE table whose entry was just
    // replaced through another space, and so still hold the frame in its
    // accessors' TLBs, unflushed: the frame must not change hands. Still
    // mapped, or held (a remote access, a futex waiter): likewise. It
    // stays in the swap cache for a later sweep. (2: the cache and the
    // batch.)
    if skipped || meta.mapcount() != 0 || meta.refcount() != 2 {
        return Settled::Stays;
    }
    if swap.count(slot) == 1 {
        // No entry names the slot (its mappings went away meanwhile): the
        // page is garbage, nothing to write.
        return if swap.remove_if(arena, f, 2, true) { Settled::Freed } else { Settled::Stays };
    }
    if !meta.has(flags::SWAP_VALID) {
        return Settled::Write(slot);
    }
    // Clean (not written to since it was read or written): drop it.
    if swap.remove_if(arena, f, 2, false) {
        Counters::bump(&m.counters.swap_outs);
        return Settled::Freed;
    }
    Settled::Stays
}

// MADV_FREE and MADV_PAGEOUT (`mm/madvise.rs`).
impl SwapBatch {
    /// Drop the clean entries of lazily freeable frame `f` (locked, held
    /// by the batch) instead of swapping it: nobody wrote it since
    /// `MADV_FREE`, so its contents are not needed (the next read faults a
    /// zero page). A dirty entry keeps it mapped, and so does any holder
    /// besides its mappings and the batch (Linux's `ref_count == 1 +
    /// map_count` test); the frame is then an ordinary page again.
    fn discard_lazyfree(&mut self, m: &MachineInner, f: FrameId, try_only: bool) {
        let meta = m.arena.meta(f);
        // Clear, not SwapOut: the page's bytes go (a later read sees
        // zeros), so a secondary MMU that keeps contents must drop them.
        let how = How { try_only, event: Some(Event::Clear), ..How::default() };
        let edit = |pte: Pte| {
            let alone = meta.refcount() == meta.mapcount() + 1 && meta.pins() == 0;
            (pte.is_present() && !pte.is_dirty() && alone).then_some(Pte::NONE)
        };
        let visit = visit_mappings(m, f, how, edit, |_| {});
        if visit.changed > 0 {
            meta.sub_counts(visit.changed, visit.changed);
        }
        self.changes.absorb(visit.changes);
        self.lazy.push(f);
    }

    /// After the shootdown: a lazily freeable frame nothing maps goes with
    /// the batch's reference; one still mapped was written since and
    /// becomes an ordinary (dirty) page. Returns the frames that go.
    fn settle_lazyfree(&mut self, m: &MachineInner) -> usize {
        let arena = &m.arena;
        let mut freed = 0;
        for f in self.lazy.drain(..) {
            let meta = arena.meta(f);
            if meta.mapcount() == 0 && meta.refcount() == 1 {
                freed += 1;
                Counters::bump(&m.counters.lazyfree_dropped);
            } else if meta.mapcount() != 0 {
                meta.set_flags(flags::DIRTY);
                meta.clear_flags(flags::LAZYFREE);
            }
        }
        freed
    }
}

/// `MADV_PAGEOUT`'s `reclaim_pages`: swap out (or, lazily freeable and
/// clean, drop) the private frames `frames` now, and unmap shared objects'
/// pages and swap them out or drop them ([`super::shm::page_out_shm`]);
/// each frame is handed over with a reference this call takes. Frames that
/// cannot go (no swap, no slot, mapped again, held) stay. Returns the
/// frames freed.
pub(crate) fn reclaim_pages(m: &MachineInner, frames: &[FrameId]) -> usize {
    let arena = &m.arena;
    let swap = m.reclaim.swap.as_deref();
    let mut freed = 0;
    let mut batch = SwapBatch::with_capacity(frames.len());
    for &f in frames {
        let fl = arena.meta(f).flags();
        if fl & (flags::PAGETABLE | flags::ZERO) != 0 {
            arena.put(f);
            continue;
        }
        if fl & flags::SHM != 0 {
            match super::shm::page_out_shm(m, swap, f) {
                Ok(true) => freed += 1,
                Ok(false) => {}
                Err(_) => Counters::bump(&m.counters.swap_failures),
            }
        } else if let (true, Some(swap)) = (fl & flags::ANON != 0, swap) {
            if fl & flags::SWAPCACHE != 0 {
                batch.age_or_unmap(m, swap, f, false);
            } else {
                batch.add(m, f);
            }
        }
        // The batch holds its own reference on what it took.
        arena.put(f);
    }
    freed + swap.map_or(0, |swap| batch.flush(m, swap, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reclaim::device::MemSwap;
    use crate::{Config, Machine, MapKind, Mm, Placement, Prot, SwapConfig};
    use std::sync::Arc;

    const BASE: u64 = 0x4000_0000;
    const PAGE: u64 = 4096;

    fn machine() -> Machine {
        Machine::new(Config {
            arena_bytes: 16 << 20,
            swap: SwapConfig::Device(Arc::new(MemSwap::new(4 << 20).unwrap())),
            background_reclaim: false,
            ..Config::default()
        })
        .unwrap()
    }

    fn pte(mm: &Mm, va: u64) -> Pte {
        let st = mm.inner.state.read();
        st.pt.as_ref().unwrap().follow_pte(mm.inner.arena(), va)
    }

    /// The clock's look at `f`, as `shrink_with` takes it (with a reference).
    fn look(m: &MachineInner, batch: &mut SwapBatch, f: FrameId) {
        assert!(m.arena.try_get(f));
        batch.consider(m, m.reclaim.swap.as_ref().unwrap(), f, false);
        m.arena.put(f);
    }

    #[test]
    // A whole machine: slow under Miri, and no unsafe code of its own.
    #[cfg_attr(miri, ignore)]
    fn an_aging_walk_ages_its_neighbours_and_the_clock_skips_their_walks() {
        let machine = machine();
        let m = &*machine.inner;
        let mm = machine.new_mm().unwrap();
        // One look-around group (64 pages) and one page past it.
        mm.mmap(BASE, 65 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        for i in 0..65 {
            mm.write(BASE + i * PAGE, &(i as u32 + 7).to_ne_bytes()).unwrap();
            assert!(pte(&mm, BASE + i * PAGE).is_accessed(), "page {i}: written, so accessed");
        }
        let frame = |i: u64| mm.phys(BASE + i * PAGE).unwrap();
        let before = machine.stats().look_around_aged;

        // The walk of page 1 finds it accessed: it ages the whole group.
        assert!(referenced(m, frame(1), false));
        assert_eq!(machine.stats().look_around_aged - before, 63);
        for i in 0..64 {
            assert!(!pte(&mm, BASE + i * PAGE).is_accessed(), "page {i}: aged");
            let flagged = m.arena.meta(frame(i)).has(flags::REFERENCED);
            assert_eq!(flagged, i != 1, "page {i}: marked referenced unless it was the page walked");
        }
        assert!(pte(&mm, BASE + 64 * PAGE).is_accessed(), "outside the group: left alone");
        assert!(!m.arena.meta(frame(64)).has(flags::REFERENCED));

        // The clock's next look at page 2 is its second chance, taken from
        // the mark; the look after that finds it cold and takes it.
        let mut batch = SwapBatch::with_capacity(8);
        look(m, &mut batch, frame(2));
        assert!(batch.is_empty(), "a marked page gets its second chance");
        assert!(!m.arena.meta(frame(2)).has(flags::REFERENCED), "the mark is spent");
        look(m, &mut batch, frame(2));
        assert_eq!(batch.len(), 1, "cold now");
        assert_eq!(batch.flush(m, m.reclaim.swap.as_ref().unwrap(), false), 1);
        assert!(pte(&mm, BASE + 2 * PAGE).is_swap());
        let mut b = [0u8; 4];
        mm.read(BASE + 2 * PAGE, &mut b).unwrap();
        assert_eq!(u32::from_ne_bytes(b), 9, "the page came back intact");
        mm.check_invariants().unwrap();
    }
}
