//! Swap-in: the frame for a swap entry, from the swap cache or the device,
//! and swap readahead (see `swap.rs`).
//!
//! A fault that reads its page from the device also reads the slots after
//! it, as far as the readahead window goes, in the same vectored read
//! straight into new frames it puts in the swap cache, unmapped; a later
//! fault on one of them finds it there. The faulting page's outcome never
//! depends on its neighbours': when that read fails, the page is read again
//! alone and only that read decides, while a failed readahead only leaves
//! those pages on the device.
//!
//! Counting: `swap_ins` counts pages read back from the device *that a
//! fault used*: a demand read at once, a page read ahead at the first fault
//! that finds it (which is a `swap_cache_hits` too). Pages read ahead and
//! dropped unused count nowhere, so readahead cannot inflate the figure.

use super::swap::SwapSpace;
use crate::error::{Error, Result};
use crate::machine::MachineInner;
use crate::mm::MmInner;
use crate::phys::{flags, FrameId, PAGE_SIZE};
use crate::stats::Counters;
use crate::vma::{Backing, Vma};
use std::sync::atomic::Ordering;

/// The frame holding the contents of swap `slot`, in the swap cache, with
/// a reference for the caller (who maps it or drops it). Reads the device
/// when the cache has no frame for the slot; a failed read gives
/// `Error::Io` and leaves the entry as it was (the data stays on the
/// device). Called under the `mmap_lock` held for reading, no page-table
/// lock held: it may wait for a frame another thread is reading in.
pub(crate) fn swap_in(mm: &MmInner, vma: &Vma, va: u64, slot: u32) -> Result<FrameId> {
    let m = &mm.machine;
    let Some(swap) = m.reclaim.swap.as_ref() else {
        return Err(Error::Io { addr: va, what: "swap entry without a swap device".into() });
    };
    let arena = &m.arena;
    loop {
        if let Some(f) = swap.lookup(arena, slot) {
            let meta = arena.meta(f);
            meta.wait_unlocked();
            if meta.swap.load(Ordering::Acquire) == slot + 1 {
                Counters::bump(&m.counters.swap_cache_hits);
                if swap.take_ra_mark(slot) {
                    swap.readahead_hit();
                    Counters::bump(&m.counters.swap_ins);
                }
                return Ok(f);
            }
            arena.put(f); // a read-in that failed, or reclaim finished: look again
            continue;
        }
        if swap.count(slot) == 0 {
            // The entry was zapped meanwhile; the caller's recheck sees it.
            return Err(Error::Again);
        }
        // Marked ANON only once filled: the clock skips it until then.
        let n = arena.alloc_swap_in(false, 0)?;
        let meta = arena.meta(n);
        // The page may be mapped by every relative of this VMA (it was
        // swapped out of a fork tree): rmap it through the oldest anon_vma.
        if let Backing::Anon(link) = &vma.backing {
            let av = link.root_id();
            meta.owner.store(av, Ordering::Relaxed);
        }
        meta.index.store(vma.pgoff_of(va), Ordering::Relaxed);
        // A fresh frame nobody else can see: the lock is free.
        let _ = meta.try_lock();
        if !swap.insert(arena, slot, n) {
            meta.unlock();
            arena.put(n);
            continue;
        }
        let ahead = prepare_read_ahead(m, swap, slot, swap.readahead_window(slot));
        if let Err(e) = read_with_ahead(m, swap, slot, n, &ahead) {
            swap.remove(arena, slot, n);
            meta.unlock();
            arena.put(n);
            return Err(Error::Io { addr: va, what: format!("reading slot {slot} of {}: {e}", swap.dev.describe()) });
        }
        meta.set_flags(flags::SWAP_VALID | flags::ANON);
        swap.unlock_frame(arena, n);
        Counters::bump(&m.counters.swap_ins);
        return Ok(n);
    }
}

/// Read slot `slot` into `n` and the slots after it into the readahead
/// frames `ahead` with one vectored read (one system call where there were
/// two: a page read alone costs several times a page of a run). The page's
/// outcome never depends on its neighbours': if the run fails, it is read
/// again alone, and only that read's error is the fault's. The readahead
/// frames are settled either way (`finish_read_ahead`).
fn read_with_ahead(
    m: &MachineInner,
    swap: &SwapSpace,
    slot: u32,
    n: FrameId,
    ahead: &[FrameId],
) -> std::io::Result<()> {
    let arena = &m.arena;
    if ahead.is_empty() {
        // SAFETY: as in `swap_in`: `n` is fresh, locked and not `ANON`.
        return swap.dev.read_page(slot as u64, unsafe { arena.page_mut(n) });
    }
    // SAFETY: every frame is fresh from the allocator, locked and not
    // `ANON`, and appears once (`n` is not among the readahead frames): a
    // fault that finds one in the cache waits for its lock before it looks
    // at the bytes, and nothing else reaches them (see `page_mut`).
    let mut pages: Vec<&mut [u8; PAGE_SIZE]> =
        std::iter::once(n).chain(ahead.iter().copied()).map(|f| unsafe { arena.page_mut(f) }).collect();
    let run = swap.dev.read_pages_into(slot as u64, &mut pages);
    drop(pages);
    finish_read_ahead(m, swap, slot, ahead, run.is_ok());
    match run {
        Ok(()) => Ok(()),
        // SAFETY: as above; the readahead frames are settled and no
        // reference into `n` is left.
        Err(_) => swap.dev.read_page(slot as u64, unsafe { arena.page_mut(n) }),
    }
}

/// Frames for the slots after `slot`, up to `window` slots in all (`slot`
/// included), put in the swap cache locked and not yet filled: as many
/// consecutive ones as can be read ahead (in use by an anonymous page, not
/// cached) and as free frames allow (readahead never reclaims: it is a
/// guess). `read_with_ahead` fills them.
fn prepare_read_ahead(m: &MachineInner, swap: &SwapSpace, slot: u32, window: u32) -> Vec<FrameId> {
    let arena = &m.arena;
    let mut frames = Vec::new();
    for t in (1..window).map_while(|d| slot.checked_add(d)) {
        // The cheap check first: most refusals then cost no frame.
        if !swap.may_read_ahead(t) {
            break;
        }
        let Ok(f) = arena.alloc(false, 0) else { break };
        let meta = arena.meta(f);
        // A fresh frame nobody else can see: the lock is free. Marked ANON
        // only once filled: the clock skips it until then.
        let _ = meta.try_lock();
        if !swap.insert_readahead(arena, t, f) {
            meta.unlock();
            arena.put(f);
            break;
        }
        frames.push(f);
    }
    frames
}

/// Settle the readahead frames of slots `slot + 1..`: filled (`read`), they
/// become readable pages of the cache; otherwise they leave it, and those
/// pages stay on the device, where their own faults find them.
fn finish_read_ahead(m: &MachineInner, swap: &SwapSpace, slot: u32, frames: &[FrameId], read: bool) {
    let arena = &m.arena;
    // (Frames exist only for slots that exist: `slot + 1` does not wrap then.)
    for (&f, t) in frames.iter().zip(slot.saturating_add(1)..) {
        let meta = arena.meta(f);
        if read {
            meta.set_flags(flags::SWAP_VALID | flags::ANON);
        } else {
            // A fault waiting for it sees it gone and reads the slot itself.
            swap.remove(arena, t, f);
        }
        // (An exit meanwhile may have left it an orphan: see `unlock_frame`.)
        swap.unlock_frame(arena, f);
        arena.put(f); // the cache holds the page now (or nobody does)
    }
}

#[cfg(test)]
mod tests {
    use crate::reclaim::device::{Fault, FaultySwap, MemSwap, SwapDevice};
    use crate::{Config, Error, Machine, MapKind, Mm, Placement, Prot, SwapConfig};
    use std::sync::Arc;

    const BASE: u64 = 0x4000_0000;
    const PAGE: u64 = 4096;

    fn machine(limit_pages: u64) -> (Machine, Arc<FaultySwap<MemSwap>>) {
        let dev = Arc::new(FaultySwap::new(MemSwap::new(4 << 20).unwrap()));
        let m = Machine::new(Config {
            arena_bytes: 16 << 20,
            mem_limit: Some(limit_pages * PAGE),
            swap: SwapConfig::Device(dev.clone()),
            cpu_caches: 1,
            prezero: false,
            // Exact read counts and scripted device faults: only the
            // test's own faults and reclaims may touch the device.
            background_reclaim: false,
            ..Config::default()
        })
        .unwrap();
        (m, dev)
    }

    /// Map `pages` pages at `base` in `mm`, each stamped with its address
    /// and `tag`.
    fn fill(mm: &Mm, base: u64, pages: u64, tag: u8) {
        mm.mmap(base, pages * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        for i in 0..pages {
            mm.write(base + i * PAGE, &stamp(base + i * PAGE, tag)).unwrap();
        }
    }

    fn stamp(va: u64, tag: u8) -> [u8; 9] {
        let mut s = [tag; 9];
        s[..8].copy_from_slice(&va.to_le_bytes());
        s
    }

    fn read(mm: &Mm, va: u64) -> crate::Result<[u8; 9]> {
        let mut b = [0u8; 9];
        mm.read(va, &mut b).map(|()| b)
    }

    #[test]
    // Whole machines swapping pages: minutes under Miri, and no unsafe
    // code of their own (the integration tests run them in release).
    #[cfg_attr(miri, ignore)]
    fn pages_read_ahead_are_found_in_the_swap_cache() {
        let (m, dev) = machine(256);
        let mm = m.new_mm().unwrap();
        let pages = 64;
        fill(&mm, BASE, pages, 1);
        assert_eq!(m.reclaim(1000) as u64, pages);
        let before = m.stats();
        let reads = dev.reads();
        for i in 0..pages {
            assert_eq!(read(&mm, BASE + i * PAGE).unwrap(), stamp(BASE + i * PAGE, 1), "page {i}");
        }
        let after = m.stats();
        let hits = after.swap_cache_hits - before.swap_cache_hits;
        assert!(hits >= pages / 2, "sequential faults should mostly hit pages read ahead: {hits} hits");
        assert_eq!(after.swap_ins - before.swap_ins, pages, "every page read back once, and used");
        assert_eq!(dev.reads() - reads, pages, "no page read twice");
        m.check_invariants().unwrap();

        // All clean now: reclaim drops them without writing anything.
        let writes = dev.writes();
        assert_eq!(m.reclaim(1000) as u64, pages);
        assert_eq!(dev.writes(), writes, "clean pages are dropped, not rewritten");
        m.check_invariants().unwrap();
    }

    #[test]
    // Whole machines swapping pages: minutes under Miri, and no unsafe
    // code of their own (the integration tests run them in release).
    #[cfg_attr(miri, ignore)]
    fn unused_readahead_pages_are_dropped_without_io() {
        let (m, dev) = machine(256);
        let mm = m.new_mm().unwrap();
        fill(&mm, BASE, 32, 2);
        m.reclaim(1000);
        // A few sequential faults: the window opens and pages beyond the
        // last one touched sit in the swap cache, unmapped.
        for i in 0..4 {
            read(&mm, BASE + i * PAGE).unwrap();
        }
        let s = m.stats();
        assert!(s.frames_in_use > 4 + s.page_tables, "something was read ahead: {s:?}");
        m.check_invariants().unwrap();
        let writes = dev.writes();
        m.reclaim(1000);
        let s = m.stats();
        assert_eq!(s.frames_in_use, s.page_tables, "only page tables left: {s:?}");
        assert_eq!(dev.writes(), writes, "nothing written");
        assert_eq!(s.swap_used, 32, "every page keeps its slot");
        m.check_invariants().unwrap();
        for i in 0..32 {
            assert_eq!(read(&mm, BASE + i * PAGE).unwrap(), stamp(BASE + i * PAGE, 2), "page {i}");
        }
        drop(mm);
        assert_eq!((m.stats().swap_used, m.stats().frames_in_use), (0, 0));
    }

    #[test]
    // Whole machines swapping pages: minutes under Miri, and no unsafe
    // code of their own (the integration tests run them in release).
    #[cfg_attr(miri, ignore)]
    fn a_failed_readahead_never_fails_the_fault() {
        let (m, dev) = machine(256);
        let mm = m.new_mm().unwrap();
        fill(&mm, BASE, 16, 3);
        m.reclaim(1000);
        // Page i went to slot i (a fresh device, one batch in address
        // order). Slot 5 cannot be read.
        dev.fail_read_slot(5, Fault::Io);
        for i in 0..5 {
            assert_eq!(read(&mm, BASE + i * PAGE).unwrap(), stamp(BASE + i * PAGE, 3), "page {i}");
        }
        assert!(dev.injected() > 0, "a readahead covered slot 5 and failed, silently");
        m.check_invariants().unwrap();
        // The page's own fault reports the error; nothing wrong is mapped.
        let e = read(&mm, BASE + 5 * PAGE).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        dev.clear();
        for i in 5..16 {
            assert_eq!(read(&mm, BASE + i * PAGE).unwrap(), stamp(BASE + i * PAGE, 3), "page {i}");
        }
        m.check_invariants().unwrap();
    }

    #[test]
    // Whole machines swapping pages: minutes under Miri, and no unsafe
    // code of their own (the integration tests run them in release).
    #[cfg_attr(miri, ignore)]
    fn a_failed_run_is_read_again_alone_for_the_fault() {
        let (m, dev) = machine(256);
        let mm = m.new_mm().unwrap();
        fill(&mm, BASE, 16, 6);
        m.reclaim(1000);
        // Sequential faults open the readahead window: page 1's read covers
        // slot 2, and page 3's covers slots 3 to 6 in one run.
        for i in 0..3 {
            assert_eq!(read(&mm, BASE + i * PAGE).unwrap(), stamp(BASE + i * PAGE, 6), "page {i}");
        }
        let (reads, injected) = (dev.reads(), dev.injected());
        dev.fail_reads(1, Fault::Io);
        assert_eq!(read(&mm, BASE + 3 * PAGE).unwrap(), stamp(BASE + 3 * PAGE, 6), "the fault read its page alone");
        assert_eq!(dev.injected() - injected, 1, "the run failed");
        assert_eq!(dev.reads() - reads, 4 + 1, "a run of 4 pages, then page 3 alone");
        m.check_invariants().unwrap();
        // The pages the run was to read ahead stayed on the device.
        for i in 4..16 {
            assert_eq!(read(&mm, BASE + i * PAGE).unwrap(), stamp(BASE + i * PAGE, 6), "page {i}");
        }
        m.check_invariants().unwrap();
    }

    #[test]
    // Whole machines swapping pages: minutes under Miri, and no unsafe
    // code of their own (the integration tests run them in release).
    #[cfg_attr(miri, ignore)]
    fn readahead_of_another_space_s_pages_gives_them_their_own_rmap() {
        let (m, _dev) = machine(256);
        let (a, b) = (m.new_mm().unwrap(), m.new_mm().unwrap());
        // Swapped out together, their pages lie side by side on the device:
        // reading `a` sequentially reads `b`'s first pages ahead.
        fill(&a, BASE, 16, 4);
        fill(&b, BASE + 64 * PAGE, 16, 5);
        m.reclaim(1000);
        for i in 0..16 {
            assert_eq!(read(&a, BASE + i * PAGE).unwrap(), stamp(BASE + i * PAGE, 4), "a page {i}");
        }
        m.check_invariants().unwrap();
        let hits = m.stats().swap_cache_hits;
        for i in 0..16 {
            let va = BASE + (64 + i) * PAGE;
            assert_eq!(read(&b, va).unwrap(), stamp(va, 5), "b page {i}");
        }
        assert!(m.stats().swap_cache_hits > hits, "b found pages a's faults read ahead");
        // The audit checks each mapped page's rmap owner and index.
        m.check_invariants().unwrap();
        assert_eq!(m.reclaim(1000), 32);
        m.check_invariants().unwrap();
    }

    #[test]
    // Whole machines swapping pages: minutes under Miri, and no unsafe
    // code of their own (the integration tests run them in release).
    #[cfg_attr(miri, ignore)]
    fn a_failed_batched_write_keeps_every_page_of_its_run() {
        let (m, dev) = machine(256);
        let mm = m.new_mm().unwrap();
        fill(&mm, BASE, 32, 7);
        // One bad slot in the middle of the run: the write stops there, torn.
        dev.fail_write_slot(10, Fault::ShortWrite);
        assert_eq!(m.reclaim(1000), 0, "nothing may leave memory");
        let failures = m.stats().swap_failures;
        assert!(failures >= 32 && failures % 32 == 0, "each page of the run counts its failure: {failures}");
        m.check_invariants().unwrap();
        for i in 0..32 {
            assert_eq!(read(&mm, BASE + i * PAGE).unwrap(), stamp(BASE + i * PAGE, 7), "page {i}");
        }
        dev.clear();
        assert_eq!(m.reclaim(1000), 32);
        m.check_invariants().unwrap();
        for i in 0..32 {
            assert_eq!(read(&mm, BASE + i * PAGE).unwrap(), stamp(BASE + i * PAGE, 7), "page {i}");
        }
    }

    #[test]
    // Whole machines swapping pages: minutes under Miri, and no unsafe
    // code of their own (the integration tests run them in release).
    #[cfg_attr(miri, ignore)]
    fn slots_of_a_batch_are_written_with_one_vectored_write() {
        /// Counts calls, not pages.
        #[derive(Debug)]
        struct Calls(MemSwap, std::sync::atomic::AtomicU64);
        impl SwapDevice for Calls {
            fn slots(&self) -> u64 {
                self.0.slots()
            }
            fn write_page(&self, slot: u64, page: &[u8; 4096]) -> std::io::Result<()> {
                self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.0.write_page(slot, page)
            }
            fn write_pages(&self, first: u64, pages: &[[u8; 4096]]) -> std::io::Result<()> {
                self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.0.write_pages(first, pages)
            }
            fn read_page(&self, slot: u64, page: &mut [u8; 4096]) -> std::io::Result<()> {
                self.0.read_page(slot, page)
            }
            fn describe(&self) -> String {
                "calls".into()
            }
        }
        let dev = Arc::new(Calls(MemSwap::new(1 << 20).unwrap(), 0.into()));
        let m = Machine::new(Config {
            arena_bytes: 16 << 20,
            mem_limit: Some(256 * PAGE),
            swap: SwapConfig::Device(dev.clone()),
            cpu_caches: 1,
            prezero: false,
            // Exact read counts and scripted device faults: only the
            // test's own faults and reclaims may touch the device.
            background_reclaim: false,
            ..Config::default()
        })
        .unwrap();
        let mm = m.new_mm().unwrap();
        fill(&mm, BASE, 64, 6);
        assert_eq!(m.reclaim(1000), 64);
        assert_eq!(dev.1.load(std::sync::atomic::Ordering::Relaxed), 2, "two batches of 32");
        for i in 0..64 {
            assert_eq!(read(&mm, BASE + i * PAGE).unwrap(), stamp(BASE + i * PAGE, 6), "page {i}");
        }
        m.check_invariants().unwrap();
    }

    /// The frame caching page `i` of `BASE`, locked and held as a reclaim
    /// batch holds it (another thread's reclaim, frozen mid-batch).
    fn hold_cached(m: &Machine, i: u64) -> crate::phys::FrameId {
        let arena = &m.inner.arena;
        let f = (1..arena.touched())
            .map(crate::phys::FrameId)
            .find(|&f| {
                let meta = arena.meta(f);
                meta.has(crate::phys::flags::SWAPCACHE) && meta.index.load(Ordering::Relaxed) == (BASE >> 12) + i
            })
            .expect("page in the swap cache");
        assert!(arena.meta(f).try_lock());
        arena.get(f);
        f
    }

    /// Release what `hold_cached` took, as the batch does.
    fn release(m: &Machine, f: crate::phys::FrameId) {
        let swap = m.inner.reclaim.swap.as_ref().unwrap();
        swap.unlock_frame(&m.inner.arena, f);
        m.inner.arena.put(f);
    }

    use std::sync::atomic::Ordering;

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_cached_page_whose_last_swap_entry_goes_while_locked_is_freed_by_the_holder() {
        let (m, _dev) = machine(256);
        let mm = m.new_mm().unwrap();
        fill(&mm, BASE, 16, 8);
        m.reclaim(1000);
        // Sequential faults read pages ahead: page 6 sits in the swap
        // cache, unmapped, named only by its swap entry.
        for i in 0..4 {
            read(&mm, BASE + i * PAGE).unwrap();
        }
        let f = hold_cached(&m, 6);
        // Exit zaps the swap entry while the frame is locked: the zap
        // cannot take the page out of the cache, so the holder must.
        drop(mm);
        release(&m, f);
        let s = m.stats();
        assert_eq!((s.frames_in_use, s.swap_used), (0, 0), "nothing may outlive the exit: {s:?}");
        m.check_invariants().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_cached_page_whose_last_mapping_goes_while_locked_is_freed_by_the_holder() {
        let (m, _dev) = machine(256);
        let mm = m.new_mm().unwrap();
        fill(&mm, BASE, 1, 9);
        m.reclaim(1000);
        // Read back: mapped read-only and still in the swap cache, whose
        // slot no entry names any more.
        read(&mm, BASE).unwrap();
        let f = hold_cached(&m, 0);
        drop(mm);
        release(&m, f);
        let s = m.stats();
        assert_eq!((s.frames_in_use, s.swap_used), (0, 0), "nothing may outlive the exit: {s:?}");
        m.check_invariants().unwrap();
    }
}
