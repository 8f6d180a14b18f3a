//! Shared PTE tables (seed 001): share at fork, unshare on change, drop.
//!
//! Fork with `ForkPolicy::SharedTables` does not copy a PTE table that maps
//! only private anonymous memory: the child's PMD entry points at the
//! parent's table, the table frame's refcount counts its sharers, and both
//! PMD entries are write-protected, so every write through the table faults.
//! Entries inside a shared table are never changed (only their accessed
//! bits, by compare-and-swap, as an MMU would); any change first makes the
//! table exclusive:
//!
//! - [`unshare`] (a write fault, a COW, a partial munmap/mprotect/madvise):
//!   if this address space is the only *mapper* left it *reuses* the table:
//!   tables that borrow from it own their entries first (`borrow.rs`),
//!   entries whose frames are still mapped elsewhere are write-protected
//!   and the PMD entry becomes writable. Otherwise it copies the 512
//!   entries with write cleared into a new table whose present entries
//!   *borrow* their frames (no frame reference, no mapping: `borrow.rs`),
//!   *while still holding its reference* on the old table (so it cannot be
//!   freed under the copy), and only then turns that reference into a
//!   borrower's. Ownership is learned by decrement-and-test, as the seed
//!   says: a compare-and-swap that refuses to take the mappers from 1 to 0.
//!   If the others let go while it copied, it finds itself the last
//!   mapper, throws the copy away and reuses the original. So unshare
//!   never frees a table, and can run under the `mmap_lock` held for
//!   reading while other threads of the same address space walk it.
//!   Unshares of one address space are serialized by the split lock of its
//!   own (never shared) PMD table.
//! - [`drop_shared`] (a munmap of the table's whole span, exit; under the
//!   write lock): clears the PMD entry and drops the reference (after the
//!   space's TLB shootdown, [`put_late`]); only the last mapper owns out
//!   the tables borrowing from it, zaps the entries and frees the table.
//!
//! Frame counts stay physical: a frame mapped through a table shared by k
//! address spaces has one reference and one mapping from that table, and
//! none from a table that borrows it. What users see (smaps' mapcount and
//! PSS) is the logical count: for every table that maps the frame, one
//! per address space mapping the table; see `mm::vma_smaps`.

use super::{borrow, index, slot, PageTable, PteTableGuard, PTE_TABLE_SPAN, PTRS_PER_TABLE};
use crate::error::Result;
use crate::phys::{flags, FrameArena, FrameId};
use crate::pte::Pte;
use crate::reclaim::swap::SwapSpace;
use crate::stats::Counters;
use std::sync::atomic::{AtomicU64, Ordering};

/// What [`unshare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unshare {
    /// Nothing to do: no table, or not write-protected.
    Exclusive,
    /// This address space was the last sharer and kept the table.
    Reused,
    /// The entries were copied into a new table.
    Copied,
}

/// Share the parent's PTE table covering `base` with the child (fork).
/// Requires the parent's `mmap_lock` held for writing. Returns whether a
/// table was shared and whether the parent's PMD entry was writable before
/// (its accessors then hold stale writable translations).
pub(crate) fn share_table(
    arena: &FrameArena,
    parent: &PageTable,
    child: &PageTable,
    base: u64,
    c: &Counters,
) -> Result<(bool, bool)> {
    let Some((ps, _)) = parent.pmd_slot(arena, base) else { return Ok((false, false)) };
    let e = Pte::from_raw(ps.load(Ordering::Acquire));
    if !e.is_present() {
        return Ok((false, false));
    }
    let mut added = 0;
    let r = child.pmd_slot_alloc(arena, base, &mut added);
    c.page_tables.fetch_add(added as u64, Ordering::Relaxed);
    let (cs, _) = r?;
    let t = e.frame();
    if arena.meta(t).add_counts(1, 0) == 1 {
        c.shared_tables.fetch_add(1, Ordering::Relaxed);
    }
    let ro = e.without(Pte::WRITE);
    ps.store(ro.raw(), Ordering::Release);
    cs.store(ro.raw(), Ordering::Release);
    Counters::bump(&c.table_shares);
    Ok((true, e.is_writable()))
}

/// The reference-count operations the sharing protocol needs: frame
/// metadata's std atomics, and under loom loom's, so the loom model below
/// runs this very code. The word is a table frame's packed counts:
/// refcount (mappers and borrowers) in the low half, borrowers in the high
/// half (see `borrow.rs`).
pub(crate) trait RefCount {
    fn load_acquire(&self) -> u64;
    fn cas(&self, cur: u64, new: u64) -> std::result::Result<u64, u64>;
}

impl RefCount for crate::phys::meta::Refcount<'_> {
    fn load_acquire(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
    fn cas(&self, cur: u64, new: u64) -> std::result::Result<u64, u64> {
        self.0.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
    }
}

#[cfg(loom)]
impl RefCount for loom::sync::atomic::AtomicU64 {
    fn load_acquire(&self) -> u64 {
        self.load(Ordering::Acquire)
    }
    fn cas(&self, cur: u64, new: u64) -> std::result::Result<u64, u64> {
        self.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
    }
}

/// Drop one mapper's reference unless it is the last *mapper* (borrowers
/// do not count): the seed's decrement-and-test, without ever showing no
/// mapper. Returns the refcount before the drop, or `None` when the caller
/// is the last mapper (and so decides, under the table's lock, what
/// happens to it: see [`put_late`]).
pub(crate) fn put_unless_last(rc: &impl RefCount) -> Option<u32> {
    let mut cur = rc.load_acquire();
    loop {
        if borrow::mappers(cur) <= 1 {
            return None;
        }
        match rc.cas(cur, cur - 1) {
            Ok(_) => return Some(cur as u32),
            Err(now) => cur = now,
        }
    }
}

/// `put_unless_last` on a table frame, keeping the shared-table count.
fn put_table_unless_last(arena: &FrameArena, t: FrameId, c: &Counters) -> bool {
    match put_unless_last(&crate::phys::meta::Refcount(&arena.meta(t).counts)) {
        Some(old) => {
            if old == 2 {
                c.shared_tables.fetch_sub(1, Ordering::Relaxed);
            }
            true
        }
        None => false,
    }
}

/// Make the PTE table covering `va` exclusive to `pt`'s address space.
/// Requires the `mmap_lock` (either mode). Never frees a table. `swap`
/// counts the copies of swap entries.
pub(crate) fn unshare(
    arena: &FrameArena,
    pt: &PageTable,
    va: u64,
    c: &Counters,
    swap: Option<&SwapSpace>,
) -> Result<Unshare> {
    let Some((s, pmd_table)) = pt.pmd_slot(arena, va) else { return Ok(Unshare::Exclusive) };
    let _pmd_lock = PmdLock::lock(arena, pmd_table);
    let e = Pte::from_raw(s.load(Ordering::Acquire));
    if !e.is_present() || e.is_writable() {
        return Ok(Unshare::Exclusive);
    }
    let t = e.frame();
    let base = va & !(PTE_TABLE_SPAN - 1);
    loop {
        // Allocate before taking the table's lock (an allocation may wait
        // for reclaim, which takes page-table locks).
        let n = if borrow::mappers_of(arena, t) >= 2 { Some(arena.alloc(true, flags::PAGETABLE)?) } else { None };
        let mut g = PteTableGuard::lock(arena, t, base);
        if let Some(n) = n {
            borrow::init_table(arena, n);
            copy_borrowing(arena, &g, n, swap);
            if borrow::become_borrower(arena, t) {
                borrow::register(arena, t, n);
                drop(g);
                s.store(Pte::table(n).raw(), Ordering::Release);
                c.page_tables.fetch_add(1, Ordering::Relaxed);
                Counters::bump(&c.table_copies);
                return Ok(Unshare::Copied);
            }
            // Everyone else let go while we copied: keep the original.
            release_copy(arena, n, swap);
        }
        // The last mapper: its borrowers own their entries first (B2, B3),
        // and holds taken meanwhile (a borrower's zap in flight) make it
        // copy after all.
        borrow::own_all(arena, t, base, c);
        if borrow::mappers_of(arena, t) == 1 {
            reuse(arena, &mut g, s, e, base);
            Counters::bump(&c.table_reuses);
            return Ok(Unshare::Reused);
        }
    }
}

/// Copy the entries of shared table `t` (locked: `g`) into the new table
/// `n`, write cleared. A present entry *borrows* its frame (no reference,
/// no mapping: `borrow.rs`), whether `t`'s own entry owns or borrows it; a
/// migration entry holds its frame as an owned present one does, and a
/// swap entry takes a reference on its slot.
fn copy_borrowing(arena: &FrameArena, g: &PteTableGuard<'_>, n: FrameId, swap: Option<&SwapSpace>) {
    let t = g.table();
    for i in 0..PTRS_PER_TABLE {
        // The guard's table, read by slot: this loop is the whole cost of
        // an unshare, and the guard's per-address checks a good part.
        let p = Pte::from_raw(slot(arena, t, i).load(Ordering::Acquire));
        if p.is_none() {
            continue;
        }
        let copy = if p.is_present() && !p.is_zero_frame() {
            p.with(Pte::BORROWED)
        } else {
            if p.is_migration() {
                arena.meta(p.frame()).add_counts(1, 1);
            } else if p.is_swap() {
                if let Some(sw) = swap {
                    sw.dup(p.swap_slot());
                }
            }
            p
        };
        slot(arena, n, i).store(copy.without(Pte::WRITE).raw(), Ordering::Release);
    }
}

/// How far ahead table loops prefetch frame metadata.
pub(crate) const PREFETCH_AHEAD: usize = 16;

/// Prefetch the metadata of the frames `entries` map.
#[inline(always)]
pub(crate) fn prefetch_frames(arena: &FrameArena, entries: &[Pte]) {
    for p in entries {
        if p.is_present() && !p.is_zero_frame() && !p.is_borrowed() {
            arena.prefetch_meta(p.frame());
        }
    }
}

/// Undo `copy_borrowing` and free the copy (never seen by anyone).
fn release_copy(arena: &FrameArena, n: FrameId, swap: Option<&SwapSpace>) {
    for i in 0..PTRS_PER_TABLE {
        let p = Pte::from_raw(slot(arena, n, i).swap(0, Ordering::AcqRel));
        if let Some(f) = p.counted_frame() {
            // The original table still maps the frame: this cannot free it.
            arena.meta(f).sub_counts(1, 1);
        } else if p.is_swap() {
            // Nor can this free the slot: the original entry names it too.
            if let Some(sw) = swap {
                sw.put(p.swap_slot());
            }
        }
    }
    arena.put(n);
}

/// The last sharer keeps the table (locked: `g`, no borrowers left):
/// write-protect entries whose frames are mapped elsewhere too (another
/// sharer's copy took references on them), then make the PMD entry
/// writable.
fn reuse(arena: &FrameArena, g: &mut PteTableGuard<'_>, s: &AtomicU64, e: Pte, base: u64) {
    for i in 0..PTRS_PER_TABLE {
        let va = base + (i as u64) * 4096;
        let p = g.get(va);
        let shared = p.counted_frame().is_some_and(|f| arena.meta(f).refcount() > 1);
        if p.is_writable() && shared {
            g.set(va, p.without(Pte::WRITE));
        }
    }
    s.store(e.with(Pte::WRITE).raw(), Ordering::Release);
}

/// What [`drop_shared`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Left {
    /// This space was the last sharer: it zapped the entries and freed the table.
    Freed,
    /// Others still share the table: this space's reference is dropped.
    Dropped,
    /// Others may still share the table, and this space's accessors may
    /// still cache translations through it: drop the reference with
    /// [`put_late`], after the TLB shootdown.
    Later(FrameId),
}

/// Drop this address space's use of the PTE table in PMD slot `s` (entry
/// `e`, write-protected): a munmap of the table's whole span, or exit.
/// Requires the `mmap_lock` held for writing. The last sharer calls
/// `zap(va, pte)` for every non-empty entry and frees the table; the others
/// drop their reference — at once if `shootdown_pending` is false, else
/// only after their TLB shootdown ([`Left::Later`]).
///
/// Why later: a sharer that is not last leaves the frames mapped by the
/// table, so it defers no frame reference to its shootdown. If it dropped
/// its table reference at once, the last sharer could zap the table and
/// free those frames (after *its own* shootdown) while this space's
/// accessors still read them through cached translations — a freed, maybe
/// reused, frame (Linux's shared hugetlb PMDs had the like: CVE-2021-4002,
/// a missing flush after `huge_pmd_unshare`). Holding the reference until this
/// space's shootdown is done keeps the frames alive until then.
pub(crate) fn drop_shared(
    arena: &FrameArena,
    s: &AtomicU64,
    e: Pte,
    base: u64,
    c: &Counters,
    shootdown_pending: bool,
    zap: impl FnMut(u64, Pte),
) -> Left {
    s.store(0, Ordering::Release);
    let t = e.frame();
    // Even the last mapper waits: the zap then releases frames at once,
    // and the table's own borrowed entries need their backing no longer.
    if shootdown_pending {
        return Left::Later(t);
    }
    if put_late(arena, t, base, c, zap) {
        Left::Freed
    } else {
        Left::Dropped
    }
}

/// Drop a mapper reference on table `t` (covering `base`): a sharer after
/// its TLB shootdown ([`Left::Later`]), a hold (`borrow::hold`), or a
/// sharer with nothing to shoot down. The last mapper decides under the
/// table's lock: its borrowers own their entries first (B2), and if
/// holds came meanwhile the last of them decides instead; else it zaps
/// `t` (calling `zap` for every non-empty entry) and frees it. Returns
/// whether the table was freed.
pub(crate) fn put_late(arena: &FrameArena, t: FrameId, base: u64, c: &Counters, zap: impl FnMut(u64, Pte)) -> bool {
    if put_table_unless_last(arena, t, c) {
        return false;
    }
    {
        let _g = PteTableGuard::lock(arena, t, base);
        if put_table_unless_last(arena, t, c) {
            return false;
        }
        borrow::own_all(arena, t, base, c);
        if put_table_unless_last(arena, t, c) {
            return false;
        }
        debug_assert_eq!(arena.meta(t).refcount(), 1, "last mapper of table {} with borrowers", t.0);
    }
    zap_table(arena, t, base, c, zap);
    true
}

/// Zap every entry of table `t`, now this space's alone, and free it.
/// Nobody can cache a translation through it any more, so its own
/// borrowed entries (if it borrows too) go without a hold.
fn zap_table(arena: &FrameArena, t: FrameId, base: u64, c: &Counters, mut zap: impl FnMut(u64, Pte)) {
    // Its borrowed entries need no shootdown: nobody maps the table now.
    let _ = super::zap_entries(arena, t, base, base, base + PTE_TABLE_SPAN, &mut zap);
    borrow::detach(arena, t, base, c);
    arena.put(t);
    c.page_tables.fetch_sub(1, Ordering::Relaxed);
}

/// Lock the PTE table that maps `va` in `pt` with no unshare of it in
/// flight: under the PMD table's lock (which every unshare holds from its
/// copy to its PMD store), read the PMD entry, then lock the PTE table.
/// Reverse-map walks use this, under the `mmap_lock` held for reading, so
/// that an entry they change cannot have been copied into a new table
/// they do not see. `None` when no PTE table maps `va`.
pub(crate) fn lock_pte_table<'a>(arena: &'a FrameArena, pt: &PageTable, va: u64) -> Option<PteTableGuard<'a>> {
    let (s, pmd_table) = pt.pmd_slot(arena, va)?;
    let _pmd = PmdLock::lock(arena, pmd_table);
    let e = Pte::from_raw(s.load(Ordering::Acquire));
    if !e.is_present() {
        return None;
    }
    Some(PteTableGuard::lock(arena, e.frame(), va & !(PTE_TABLE_SPAN - 1)))
}

/// The split lock of a PMD table page (serializes unshares of its entries).
struct PmdLock<'a> {
    arena: &'a FrameArena,
    table: FrameId,
}

impl<'a> PmdLock<'a> {
    fn lock(arena: &'a FrameArena, table: FrameId) -> Self {
        arena.meta(table).lock_ptl();
        PmdLock { arena, table }
    }
}

impl Drop for PmdLock<'_> {
    fn drop(&mut self) {
        // SAFETY: `lock` took this table's lock; the guard is its only owner.
        unsafe { self.arena.meta(self.table).unlock_ptl() }
    }
}

/// The PTE tables that map `base`'s 2 MiB span in other address spaces,
/// read lock-free from their roots: for smaps' logical counts. Frame ids
/// are checked before use, since another space may be changing its tables.
pub(crate) fn tables_at(arena: &FrameArena, roots: &[FrameId], base: u64) -> Vec<FrameId> {
    let mut out: Vec<FrameId> = Vec::new();
    // Sharers of one table each find it: keep the first only, in O(1).
    let mut seen: std::collections::HashSet<FrameId> = std::collections::HashSet::new();
    'next: for &root in roots {
        let mut table = root;
        for level in (1..super::LEVELS).rev() {
            if table.0 >= arena.capacity() || !arena.meta(table).has(flags::PAGETABLE) {
                continue 'next;
            }
            let e = Pte::from_raw(slot(arena, table, index(base, level)).load(Ordering::Acquire));
            if !e.is_present() {
                continue 'next;
            }
            table = e.frame();
        }
        if table.0 < arena.capacity() && arena.meta(table).has(flags::PAGETABLE) && seen.insert(table) {
            out.push(table);
        }
    }
    out
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The sharing protocol under loom: two address spaces drop a shared
    //! table (munmap of its span, or exit) while a third unshares it. The
    //! decrement-and-test is the real `put_unless_last`; the copy and the
    //! zap are the steps of `unshare`/`drop_shared` on a two-entry table.
    use super::put_unless_last;
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    use loom::sync::{Arc, Mutex};
    use std::sync::atomic::Ordering;

    struct Table {
        refcount: AtomicU64,
        ptl: Mutex<()>,
        /// Set while an unsharer copies the entries.
        copying: AtomicBool,
        /// Refcounts of the two frames the table maps.
        frames: [AtomicU32; 2],
        frames_freed: AtomicU32,
        table_freed: AtomicU32,
    }

    /// `drop_shared`: only the last sharer zaps the entries and frees.
    fn drop_shared(t: &Table) {
        if put_unless_last(&t.refcount).is_some() {
            return;
        }
        let _g = t.ptl.lock().unwrap();
        assert!(!t.copying.load(Ordering::SeqCst), "zap of a table being copied");
        for f in &t.frames {
            let old = f.fetch_sub(1, Ordering::AcqRel);
            assert!(old >= 1, "frame reference dropped twice");
            if old == 1 {
                t.frames_freed.fetch_add(1, Ordering::SeqCst);
            }
        }
        assert_eq!(t.table_freed.fetch_add(1, Ordering::SeqCst), 0, "table freed twice");
    }

    /// `unshare`: copy while holding our reference, then decrement-and-test;
    /// returns whether the copy was kept (else the original was reused).
    fn unshare(t: &Table) -> bool {
        {
            let _g = t.ptl.lock().unwrap();
            t.copying.store(true, Ordering::SeqCst);
            for f in &t.frames {
                let old = f.fetch_add(1, Ordering::AcqRel);
                assert!(old >= 1, "copied a freed frame");
            }
            t.copying.store(false, Ordering::SeqCst);
        }
        if put_unless_last(&t.refcount).is_some() {
            return true;
        }
        for f in &t.frames {
            assert!(f.fetch_sub(1, Ordering::AcqRel) >= 2, "released the table's own reference");
        }
        false
    }

    #[test]
    fn two_drop_while_one_unshares() {
        loom::model(|| {
            let t = Arc::new(Table {
                refcount: AtomicU64::new(3),
                ptl: Mutex::new(()),
                copying: AtomicBool::new(false),
                frames: [AtomicU32::new(1), AtomicU32::new(1)],
                frames_freed: AtomicU32::new(0),
                table_freed: AtomicU32::new(0),
            });
            let zappers: Vec<_> = (0..2)
                .map(|_| {
                    let t = t.clone();
                    loom::thread::spawn(move || drop_shared(&t))
                })
                .collect();
            let kept_copy = unshare(&t);
            for z in zappers {
                z.join().unwrap();
            }
            // Whoever is last owns the table; every frame keeps exactly
            // one reference (the surviving table's), none is freed.
            let freed = t.table_freed.load(Ordering::SeqCst);
            if kept_copy {
                assert_eq!(freed, 1, "the last dropper frees the original");
            } else {
                assert_eq!((freed, t.refcount.load(Ordering::SeqCst)), (0, 1), "the unsharer reuses it");
            }
            for f in &t.frames {
                assert_eq!(f.load(Ordering::SeqCst), 1);
            }
            assert_eq!(t.frames_freed.load(Ordering::SeqCst), 0);
        });
    }
}

#[cfg(all(test, loom))]
mod loom_leave_tests {
    //! Leaving a shared table while an accessor of the leaving space may
    //! still cache translations through it (the software TLB, emptied by
    //! the space's shootdown). Two spaces share a table mapping one frame,
    //! each with that frame cached; both leave at once. Whoever frees the
    //! frame must find it cached nowhere. `put_unless_last` is the real one;
    //! the order of steps is `drop_shared` + `Gather::finish` + `put_late`.
    use super::put_unless_last;
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    use loom::sync::Arc;
    use std::sync::atomic::Ordering;

    struct Shared {
        table: AtomicU64,
        frame: AtomicU32,
        /// Per space: a translation of the frame is cached.
        cached: [AtomicBool; 2],
    }

    impl Shared {
        /// Drop the frame's reference (the zap of the last sharer).
        fn put_frame(&self) {
            if self.frame.fetch_sub(1, Ordering::AcqRel) == 1 {
                for c in &self.cached {
                    assert!(!c.load(Ordering::SeqCst), "frame freed while a space still caches it");
                }
            }
        }

        fn shootdown(&self, me: usize) {
            self.cached[me].store(false, Ordering::SeqCst);
        }
    }

    /// Space `me` leaves. `late`: the reference goes after the shootdown
    /// (the current code); otherwise at once (the code before, which let
    /// the other space free the frame under this one's cached translation).
    fn leave(s: &Shared, me: usize, late: bool) {
        let last_now = s.table.load(Ordering::Acquire) == 1;
        if !last_now && late {
            s.shootdown(me); // Gather::finish, then put_late
            if put_unless_last(&s.table).is_none() {
                s.put_frame(); // zapped with immediate puts
            }
            return;
        }
        if !last_now && put_unless_last(&s.table).is_some() {
            s.shootdown(me);
            return;
        }
        // Last: the zap defers the frame's reference to the shootdown.
        s.shootdown(me);
        s.put_frame();
    }

    fn run(late: bool) {
        loom::model(move || {
            let s = Arc::new(Shared {
                table: AtomicU64::new(2),
                frame: AtomicU32::new(1),
                cached: [AtomicBool::new(true), AtomicBool::new(true)],
            });
            let other = {
                let s = s.clone();
                loom::thread::spawn(move || leave(&s, 1, late))
            };
            leave(&s, 0, late);
            other.join().unwrap();
            assert_eq!(s.frame.load(Ordering::SeqCst), 0, "the frame is freed exactly once");
        });
    }

    #[test]
    fn leaving_after_the_shootdown_frees_no_cached_frame() {
        run(true);
    }

    /// The model can fail: the order before the fix is caught.
    #[test]
    #[should_panic(expected = "frame freed while a space still caches it")]
    fn leaving_before_the_shootdown_is_caught() {
        run(false);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::phys::PAGE_SIZE;

    const BASE: u64 = 0x4000_0000;

    struct Fixture {
        arena: FrameArena,
        c: Counters,
        parent: PageTable,
        frames: Vec<FrameId>,
    }

    /// A parent with one PTE table mapping three writable anonymous frames.
    fn fixture() -> Fixture {
        let arena = FrameArena::new(64 * PAGE_SIZE as u64, 1).unwrap();
        let c = Counters::default();
        let parent = PageTable::new(&arena).unwrap();
        let mut added = 0;
        let t = parent.pte_table_alloc(&arena, BASE, &mut added).unwrap();
        let mut frames = Vec::new();
        {
            let mut g = parent.lock(&arena, t, BASE);
            for i in 0..3u64 {
                let f = arena.alloc(true, flags::ANON).unwrap();
                arena.meta(f).set_counts(1, 1);
                g.set(BASE + i * 4096, Pte::new(f, Pte::USER | Pte::WRITE | Pte::DIRTY));
                frames.push(f);
            }
        }
        Fixture { arena, c, parent, frames }
    }

    /// `pt`'s PMD slot for `BASE` and the entry in it.
    fn pmd<'a>(pt: &PageTable, x: &'a Fixture) -> (&'a AtomicU64, Pte) {
        let (s, _) = pt.pmd_slot(&x.arena, BASE).unwrap();
        (s, Pte::from_raw(s.load(Ordering::Acquire)))
    }

    fn refcounts(x: &Fixture) -> Vec<u32> {
        x.frames.iter().map(|&f| x.arena.meta(f).refcount()).collect()
    }

    #[test]
    fn share_then_last_sharer_reuses() {
        let x = fixture();
        let child = PageTable::new(&x.arena).unwrap();
        let (did, was_writable) = share_table(&x.arena, &x.parent, &child, BASE, &x.c).unwrap();
        assert!(did && was_writable);
        assert!(x.parent.pte_table_shared(&x.arena, BASE) && child.pte_table_shared(&x.arena, BASE));
        assert_eq!(x.parent.pte_table(&x.arena, BASE), child.pte_table(&x.arena, BASE));
        assert!(!x.parent.follow_pte(&x.arena, BASE).is_writable(), "effective write is off when shared");
        assert_eq!(x.c.shared_tables.load(Ordering::Relaxed), 1);
        assert_eq!(refcounts(&x), [1, 1, 1], "sharing takes no frame references");

        // The child leaves (whole-span munmap or exit): only its reference goes.
        let (s, e) = pmd(&child, &x);
        let mut zapped = 0;
        assert_eq!(drop_shared(&x.arena, s, e, BASE, &x.c, false, |_, _| zapped += 1), Left::Dropped);
        assert_eq!((zapped, x.c.shared_tables.load(Ordering::Relaxed)), (0, 0));

        // The parent is the last sharer: it keeps the table, writable again.
        assert_eq!(unshare(&x.arena, &x.parent, BASE, &x.c, None).unwrap(), Unshare::Reused);
        assert!(!x.parent.pte_table_shared(&x.arena, BASE));
        assert!(x.parent.follow_pte(&x.arena, BASE).is_writable(), "exclusive frames stay writable");
    }

    fn counts(x: &Fixture, t: FrameId) -> (u32, u32) {
        let m = x.arena.meta(t);
        (m.refcount(), m.mapcount())
    }

    fn borrowed(pt: &PageTable, x: &Fixture) -> Vec<bool> {
        (0..3u64).map(|i| pt.follow_pte(&x.arena, BASE + i * 4096).is_borrowed()).collect()
    }

    #[test]
    fn unshare_copies_by_borrowing_and_the_last_mapper_owns_out() {
        let x = fixture();
        let child = PageTable::new(&x.arena).unwrap();
        share_table(&x.arena, &x.parent, &child, BASE, &x.c).unwrap();
        let shared = x.parent.pte_table(&x.arena, BASE).unwrap();
        assert_eq!(unshare(&x.arena, &x.parent, BASE, &x.c, None).unwrap(), Unshare::Copied);
        let mine = x.parent.pte_table(&x.arena, BASE).unwrap();
        assert_ne!(mine, shared);
        assert_eq!(refcounts(&x), [1, 1, 1], "a borrowing copy takes no frame reference");
        assert_eq!(counts(&x, shared), (2, 1), "one mapper (the child) and one borrower (the copy)");
        assert_eq!(borrow::backing(&x.arena, mine), Some(shared));
        assert_eq!(x.arena.borrows.snapshot(), vec![(shared, vec![mine])]);
        for i in 0..3u64 {
            let p = x.parent.follow_pte(&x.arena, BASE + i * 4096);
            assert!(p.is_present() && p.is_borrowed() && !p.is_writable() && p.is_dirty());
        }
        // The child, now the last mapper, reuses the original: the copy
        // owns its entries first (B3), and the original's entries, whose
        // frames the copy now maps too, are write-protected.
        assert_eq!(unshare(&x.arena, &child, BASE, &x.c, None).unwrap(), Unshare::Reused);
        assert_eq!(borrowed(&x.parent, &x), [false, false, false]);
        assert_eq!(refcounts(&x), [2, 2, 2]);
        assert_eq!(counts(&x, shared), (1, 0));
        assert_eq!(borrow::backing(&x.arena, mine), None);
        assert!(x.arena.borrows.snapshot().is_empty());
        let raw = Pte::from_raw(slot(&x.arena, shared, 0).load(Ordering::Acquire));
        assert!(!raw.is_writable());
        assert_eq!(unshare(&x.arena, &child, BASE, &x.c, None).unwrap(), Unshare::Exclusive);
    }

    /// B2: the last mapper to leave a table with borrowers owns them out
    /// before it zaps, so no borrowed entry outlives its frame.
    #[test]
    fn the_last_mapper_leaving_owns_its_borrowers_out_first() {
        let x = fixture();
        let child = PageTable::new(&x.arena).unwrap();
        share_table(&x.arena, &x.parent, &child, BASE, &x.c).unwrap();
        let shared = x.parent.pte_table(&x.arena, BASE).unwrap();
        unshare(&x.arena, &x.parent, BASE, &x.c, None).unwrap();
        let (s, e) = pmd(&child, &x);
        let mut zapped = Vec::new();
        let left = drop_shared(&x.arena, s, e, BASE, &x.c, false, |_, p| zapped.push(p.frame()));
        assert_eq!(left, Left::Freed);
        // The zap dropped the table's references: the copy's are its own now.
        assert_eq!(zapped, x.frames);
        for &f in &x.frames {
            x.arena.meta(f).sub_counts(1, 1); // what the zap callback stands for
        }
        assert_eq!(refcounts(&x), [1, 1, 1]);
        assert_eq!(borrowed(&x.parent, &x), [false, false, false]);
        assert!(x.arena.borrows.snapshot().is_empty());
        assert_eq!(x.c.shared_tables.load(Ordering::Relaxed), 0);
        assert!(!x.arena.meta(shared).has(flags::ALLOCATED), "the shared table is freed");
    }

    /// A borrower that goes first detaches; a hold taken for its pending
    /// shootdown keeps the backing mapped, and the last put then zaps it.
    #[test]
    fn a_borrower_detaches_and_its_hold_may_be_the_last_mapper() {
        let x = fixture();
        let child = PageTable::new(&x.arena).unwrap();
        share_table(&x.arena, &x.parent, &child, BASE, &x.c).unwrap();
        let shared = x.parent.pte_table(&x.arena, BASE).unwrap();
        unshare(&x.arena, &x.parent, BASE, &x.c, None).unwrap();
        let mine = x.parent.pte_table(&x.arena, BASE).unwrap();
        // The parent zaps its copy with a shootdown pending: a hold first.
        assert_eq!(borrow::hold(&x.arena, mine, BASE), Some(shared));
        assert_eq!(counts(&x, shared), (3, 1));
        let borrowed = super::super::zap_entries(&x.arena, mine, BASE, BASE, BASE + PTE_TABLE_SPAN, |_, p| {
            panic!("a borrowed entry has nothing to release: {p:?}")
        });
        assert!(borrowed, "the zap reports borrowed entries (their translations need a shootdown)");
        borrow::detach(&x.arena, mine, BASE, &x.c);
        assert_eq!(counts(&x, shared), (2, 0), "the child and the hold are its mappers");
        assert!(x.arena.borrows.snapshot().is_empty());
        // The child leaves before the parent's shootdown ends: not last.
        let (s, e) = pmd(&child, &x);
        assert_eq!(drop_shared(&x.arena, s, e, BASE, &x.c, false, |_, _| panic!("not last")), Left::Dropped);
        // The hold goes after the shootdown: it was the last mapper.
        let mut frames = Vec::new();
        assert!(put_late(&x.arena, shared, BASE, &x.c, |_, p| frames.push(p.frame())));
        assert_eq!(frames, x.frames);
        assert_eq!(x.c.shared_tables.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn last_sharer_drop_zaps_and_frees() {
        let x = fixture();
        let child = PageTable::new(&x.arena).unwrap();
        share_table(&x.arena, &x.parent, &child, BASE, &x.c).unwrap();
        let before = x.arena.in_use();
        let counted = x.c.page_tables.load(Ordering::Relaxed);
        for pt in [&x.parent, &child] {
            let (s, e) = pmd(pt, &x);
            let mut zapped = Vec::new();
            let left = drop_shared(&x.arena, s, e, BASE, &x.c, false, |va, p| zapped.push((va, p.frame())));
            if std::ptr::eq(pt, &child) {
                assert_eq!(left, Left::Freed, "the second drop is the last");
                assert_eq!(zapped.iter().map(|z| z.1).collect::<Vec<_>>(), x.frames);
            } else {
                assert!(left == Left::Dropped && zapped.is_empty());
            }
        }
        assert_eq!(x.arena.in_use(), before - 1, "the table frame went back");
        assert_eq!(x.c.page_tables.load(Ordering::Relaxed), counted - 1, "one table counted out");
    }

    /// With a shootdown pending, a sharer that is not last keeps its
    /// reference until `put_late`; whoever is last by then zaps and frees.
    #[test]
    fn a_sharer_with_a_pending_shootdown_drops_its_reference_late() {
        let x = fixture();
        let child = PageTable::new(&x.arena).unwrap();
        share_table(&x.arena, &x.parent, &child, BASE, &x.c).unwrap();
        let t = x.parent.pte_table(&x.arena, BASE).unwrap();
        let (s, e) = pmd(&child, &x);
        let left = drop_shared(&x.arena, s, e, BASE, &x.c, true, |_, _| panic!("not last"));
        assert_eq!(left, Left::Later(t));
        assert_eq!(x.arena.meta(t).refcount(), 2, "the child's reference is held until its shootdown");
        assert!(child.pte_table(&x.arena, BASE).is_none(), "but its PMD entry is gone already");
        // The parent leaves too, while the child's put is still pending: it
        // is not last either.
        let (s, e) = pmd(&x.parent, &x);
        assert_eq!(drop_shared(&x.arena, s, e, BASE, &x.c, true, |_, _| panic!("not last")), Left::Later(t));
        // The child's shootdown is done: not last, it only drops.
        assert!(!put_late(&x.arena, t, BASE, &x.c, |_, _| panic!("not last")));
        // The parent's: last now, it zaps every entry and frees the table.
        let mut zapped = Vec::new();
        assert!(put_late(&x.arena, t, BASE, &x.c, |_, p| zapped.push(p.frame())));
        assert_eq!(zapped, x.frames);
        assert_eq!(x.c.shared_tables.load(Ordering::Relaxed), 0);
    }
}
