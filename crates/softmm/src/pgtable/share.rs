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

use super::{borrow, slot, Edit, PageTable, PteTableGuard, PteTableRead, PTE_TABLE_SPAN, PTRS_PER_TABLE};
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

/// Become a borrower of the table whose packed counts are `rc`, if it
/// has another mapper: this mapper's reference turns into a borrower's
/// (`borrow.rs`). Fails when the caller is the last mapper.
pub(crate) fn try_borrow(rc: &impl RefCount) -> bool {
    let mut cur = rc.load_acquire();
    while borrow::mappers(cur) >= 2 {
        match rc.cas(cur, cur + (1 << 32)) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
    false
}

/// A shared PTE table as the sharing protocol sees it: its packed counts,
/// its lock, and the owning-out of its borrowers. The protocol's steps
/// ([`unshare_core`], [`last_put`]) are written against this, so the loom
/// model (`loom_tests`) runs them over a modelled table.
pub(crate) trait SharedTable: RefCount {
    type Guard<'g>
    where
        Self: 'g;
    /// The table's (PTE) lock.
    fn lock(&self) -> Self::Guard<'_>;
    /// `borrow::own_all` (the caller holds the table's lock).
    fn own_all(&self);
    /// A mapper reference was dropped, the refcount `old` before.
    fn dropped(&self, _old: u32) {}
}

/// What an unshare does besides the protocol: allocate, fill, install
/// and throw away the copy, and reuse the original.
pub(crate) trait Unsharer {
    type Table: SharedTable;
    type Copy;
    fn table(&self) -> &Self::Table;
    /// Allocate the copy (before the table's lock: may wait for reclaim).
    fn alloc_copy(&self) -> Result<Self::Copy>;
    /// Fill the copy from the locked table.
    fn fill(&self, g: &<Self::Table as SharedTable>::Guard<'_>, n: &Self::Copy);
    /// Register the copy as a borrower (under the lock `g`), then drop
    /// the lock and install the copy.
    fn install(&self, g: <Self::Table as SharedTable>::Guard<'_>, n: Self::Copy);
    /// Throw away a copy nobody saw.
    fn discard(&self, n: Self::Copy);
    /// Keep the original (locked: `g`; the caller is its last mapper).
    fn reuse(&self, g: &mut <Self::Table as SharedTable>::Guard<'_>);
}

/// `put_unless_last`, telling the table.
fn put_table(t: &impl SharedTable) -> bool {
    match put_unless_last(t) {
        Some(old) => {
            t.dropped(old);
            true
        }
        None => false,
    }
}

/// The protocol of [`unshare`]: copy while holding this mapper's
/// reference, then turn it into a borrower's by decrement-and-test; the
/// last mapper (from the start, or because the others let go while it
/// copied) reuses the original once its borrowers own their entries.
pub(crate) fn unshare_core<U: Unsharer>(u: &U) -> Result<Unshare> {
    let t = u.table();
    loop {
        let n = if borrow::mappers(t.load_acquire()) >= 2 { Some(u.alloc_copy()?) } else { None };
        let mut g = t.lock();
        if let Some(n) = n {
            u.fill(&g, &n);
            if try_borrow(t) {
                u.install(g, n);
                return Ok(Unshare::Copied);
            }
            // Everyone else let go while we copied: keep the original.
            u.discard(n);
        }
        // The last mapper: its borrowers own their entries first (B2, B3),
        // and holds taken meanwhile (a borrower's zap in flight) make it
        // copy after all.
        t.own_all();
        if borrow::mappers(t.load_acquire()) == 1 {
            u.reuse(&mut g);
            return Ok(Unshare::Reused);
        }
    }
}

/// The protocol of [`put_late`]: drop a mapper reference; the last mapper
/// decides under the table's lock, after its borrowers own their entries,
/// unless holds came meanwhile (then the last of them decides). Returns
/// whether the caller was the last and must zap and free the table.
pub(crate) fn last_put(t: &impl SharedTable) -> bool {
    if put_table(t) {
        return false;
    }
    let _g = t.lock();
    if put_table(t) {
        return false;
    }
    t.own_all();
    !put_table(t)
}

/// A table frame of the arena, for the protocol functions.
struct ArenaTable<'a> {
    arena: &'a FrameArena,
    t: FrameId,
    base: u64,
    c: &'a Counters,
}

impl RefCount for ArenaTable<'_> {
    fn load_acquire(&self) -> u64 {
        self.arena.meta(self.t).counts.load(Ordering::Acquire)
    }
    fn cas(&self, cur: u64, new: u64) -> std::result::Result<u64, u64> {
        crate::phys::meta::Refcount(&self.arena.meta(self.t).counts).cas(cur, new)
    }
}

impl<'a> SharedTable for ArenaTable<'a> {
    type Guard<'g>
        = PteTableGuard<'a>
    where
        Self: 'g;
    fn lock(&self) -> PteTableGuard<'a> {
        PteTableGuard::lock(self.arena, self.t, self.base)
    }
    fn own_all(&self) {
        borrow::own_all(self.arena, self.t, self.base, self.c);
    }
    fn dropped(&self, old: u32) {
        if old == 2 {
            self.c.shared_tables.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An unshare of the table in PMD slot `s` (entry `e`).
struct ArenaUnshare<'a> {
    table: ArenaTable<'a>,
    s: &'a AtomicU64,
    e: Pte,
    swap: Option<&'a SwapSpace>,
}

impl<'a> Unsharer for ArenaUnshare<'a> {
    type Table = ArenaTable<'a>;
    type Copy = FrameId;
    fn table(&self) -> &ArenaTable<'a> {
        &self.table
    }
    fn alloc_copy(&self) -> Result<FrameId> {
        self.table.arena.alloc(true, flags::PAGETABLE)
    }
    fn fill(&self, g: &PteTableGuard<'a>, n: &FrameId) {
        borrow::init_table(self.table.arena, *n);
        copy_borrowing(self.table.arena, g, *n, self.swap);
    }
    fn install(&self, g: PteTableGuard<'a>, n: FrameId) {
        let ArenaTable { arena, t, c, .. } = self.table;
        borrow::register(arena, t, n);
        drop(g);
        self.s.store(Pte::table(n).raw(), Ordering::Release);
        c.page_tables.fetch_add(1, Ordering::Relaxed);
        Counters::bump(&c.table_copies);
    }
    fn discard(&self, n: FrameId) {
        release_copy(self.table.arena, n, self.swap);
    }
    fn reuse(&self, g: &mut PteTableGuard<'a>) {
        reuse(self.table.arena, g, self.s, self.e, self.table.base);
        Counters::bump(&self.table.c.table_reuses);
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
    let base = va & !(PTE_TABLE_SPAN - 1);
    let table = ArenaTable { arena, t: e.frame(), base, c };
    unshare_core(&ArenaUnshare { table, s, e, swap })
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
pub(super) enum Left {
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
pub(super) fn drop_shared(
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
    if !last_put(&ArenaTable { arena, t, base, c }) {
        return false;
    }
    debug_assert_eq!(arena.meta(t).refcount(), 1, "last mapper of table {} with borrowers", t.0);
    zap_table(arena, t, base, c, zap);
    true
}

/// Zap every entry of table `t`, now this space's alone, and free it.
/// Nobody can cache a translation through it any more, so its own
/// borrowed entries (if it borrows too) go without a hold.
fn zap_table(arena: &FrameArena, t: FrameId, base: u64, c: &Counters, mut zap: impl FnMut(u64, Pte)) {
    // Its borrowed entries need no shootdown: nobody maps the table now.
    let _ = super::zap::zap_entries(arena, t, base, base, base + PTE_TABLE_SPAN, &mut zap);
    borrow::detach(arena, t, base, c);
    arena.put(t);
    c.page_tables.fetch_sub(1, Ordering::Relaxed);
}

/// Lock the PTE table that maps `va` in `pt` with no unshare of it in
/// flight: under the PMD table's lock (which every unshare holds from its
/// copy to its PMD store), read the PMD entry, then lock the PTE table.
/// Reverse-map walks use this, under the `mmap_lock` held for reading, so
/// that an entry they change cannot have been copied into a new table
/// they do not see. `None` when no PTE table maps `va`. To change entries
/// under an open `mm::Change` (`edit`).
pub(crate) fn lock_pte_table<'a>(
    arena: &'a FrameArena,
    pt: &PageTable,
    va: u64,
    _edit: Edit,
) -> Option<PteTableGuard<'a>> {
    locked_pte_table(arena, pt, va)
}

/// [`lock_pte_table`], to read the entries only.
pub(crate) fn lock_pte_table_read<'a>(arena: &'a FrameArena, pt: &PageTable, va: u64) -> Option<PteTableRead<'a>> {
    locked_pte_table(arena, pt, va).map(PteTableRead::new)
}

fn locked_pte_table<'a>(arena: &'a FrameArena, pt: &PageTable, va: u64) -> Option<PteTableGuard<'a>> {
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

/// Every PTE table the page tables at `roots` map, each once, read
/// lock-free: for smaps' logical counts. Frame ids are checked before use,
/// since another space may be changing its tables.
pub(crate) fn all_tables(arena: &FrameArena, roots: &[FrameId]) -> Vec<FrameId> {
    fn walk(arena: &FrameArena, table: FrameId, level: u32, out: &mut Vec<FrameId>, seen: &mut HashSet<FrameId>) {
        if table.0 >= arena.capacity() || !arena.meta(table).has(flags::PAGETABLE) {
            return;
        }
        if level == 0 {
            // Sharers of one table each reach it: keep the first only.
            if seen.insert(table) {
                out.push(table);
            }
            return;
        }
        for i in 0..PTRS_PER_TABLE {
            let e = Pte::from_raw(slot(arena, table, i).load(Ordering::Acquire));
            if e.is_present() {
                walk(arena, e.frame(), level - 1, out, seen);
            }
        }
    }
    use std::collections::HashSet;
    let (mut out, mut seen) = (Vec::new(), HashSet::new());
    for &root in roots {
        walk(arena, root, super::LEVELS - 1, &mut out, &mut seen);
    }
    out
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The sharing protocol under loom, running the real steps: the
    //! unsharer runs [`unshare_core`], the spaces that leave run
    //! [`last_put`] (what `drop_shared`/`put_late` decide with) and, when
    //! last, the zap. Modelled: table `T` with two entries (packed counts
    //! as in the arena, a PTE lock), its two frames' refcounts, and the
    //! unsharer's copy `C` (two entries, each borrowed or owned, under C's
    //! own lock) with the registry entry that makes `C` a borrower of `T`.
    //!
    //! Checked: nobody copies a freed table or frame, the table is freed
    //! at most once and only by its last mapper with no borrower left, no
    //! frame is freed while `C` still borrows it (B2), and at the end every
    //! frame has exactly one reference.
    use super::{last_put, unshare_core, RefCount, SharedTable, Unshare, Unsharer};
    use crate::error::Result;
    use crate::sync::{Arc, AtomicBool, AtomicU32, AtomicU64, Mutex, MutexGuard, Ordering};

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Entry {
        None,
        Borrowed,
        Owned,
    }

    struct World {
        /// `T`'s packed counts: refcount low, borrowers high.
        counts: AtomicU64,
        /// `T`'s PTE lock; `locked: false` removes it (the twin).
        ptl: Mutex<()>,
        locked: bool,
        frames: [AtomicU32; 2],
        table_freed: AtomicBool,
        /// `C`'s entries, under `C`'s lock.
        copy: Mutex<[Entry; 2]>,
        /// `C` listed as `T`'s borrower (`arena.borrows`).
        registered: AtomicBool,
    }

    impl World {
        fn new(mappers: u64, locked: bool) -> World {
            World {
                counts: AtomicU64::new(mappers),
                ptl: Mutex::new(()),
                locked,
                frames: [AtomicU32::new(1), AtomicU32::new(1)],
                table_freed: AtomicBool::new(false),
                copy: Mutex::new([Entry::None; 2]),
                registered: AtomicBool::new(false),
            }
        }

        fn get_frame(&self, f: usize) {
            assert!(self.frames[f].fetch_add(1, Ordering::AcqRel) >= 1, "took a reference on freed frame {f}");
        }

        /// The last mapper's zap: drop the table's frame references, free it.
        fn zap(&self) {
            let copy = *self.copy.lock();
            for (f, frame) in self.frames.iter().enumerate() {
                let old = frame.fetch_sub(1, Ordering::AcqRel);
                assert!(old >= 1, "frame {f} reference dropped twice");
                if old == 1 {
                    assert_ne!(copy[f], Entry::Borrowed, "frame {f} freed while a copy borrows it");
                }
            }
            assert_eq!(self.counts.load(Ordering::Acquire), 1, "zap of a table with other references");
            assert!(!self.table_freed.swap(true, Ordering::AcqRel), "table freed twice");
        }

        fn leave(&self) {
            if last_put(self) {
                self.zap();
            }
        }
    }

    impl RefCount for World {
        fn load_acquire(&self) -> u64 {
            self.counts.load_acquire()
        }
        fn cas(&self, cur: u64, new: u64) -> std::result::Result<u64, u64> {
            self.counts.cas(cur, new)
        }
    }

    impl SharedTable for World {
        type Guard<'g> = Option<MutexGuard<'g, ()>>;
        fn lock(&self) -> Option<MutexGuard<'_, ()>> {
            self.locked.then(|| self.ptl.lock())
        }
        /// `borrow::own_all`: `C` takes a reference on each frame it
        /// borrows, stops borrowing, and drops its borrower reference.
        fn own_all(&self) {
            if self.counts.load(Ordering::Acquire) >> 32 == 0 || !self.registered.swap(false, Ordering::AcqRel) {
                return;
            }
            let mut c = self.copy.lock();
            for (f, e) in c.iter_mut().enumerate() {
                if *e == Entry::Borrowed {
                    self.get_frame(f);
                    *e = Entry::Owned;
                }
            }
            drop(c);
            self.counts.fetch_sub(1 | 1 << 32, Ordering::AcqRel);
        }
    }

    impl Unsharer for World {
        type Table = World;
        type Copy = ();
        fn table(&self) -> &World {
            self
        }
        fn alloc_copy(&self) -> Result<()> {
            Ok(())
        }
        fn fill(&self, _g: &Option<MutexGuard<'_, ()>>, _n: &()) {
            assert!(!self.table_freed.load(Ordering::Acquire), "copied a freed table");
            let mut c = self.copy.lock();
            for (f, e) in c.iter_mut().enumerate() {
                assert!(self.frames[f].load(Ordering::Acquire) >= 1, "copied freed frame {f}");
                *e = Entry::Borrowed;
            }
        }
        fn install(&self, g: Option<MutexGuard<'_, ()>>, _n: ()) {
            self.registered.store(true, Ordering::Release);
            drop(g);
        }
        fn discard(&self, _n: ()) {
            *self.copy.lock() = [Entry::None; 2];
        }
        fn reuse(&self, _g: &mut Option<MutexGuard<'_, ()>>) {
            assert!(!self.table_freed.load(Ordering::Acquire), "reused a freed table");
        }
    }

    /// `leavers` spaces leave `T` while one more unshares it.
    fn run(leavers: usize, locked: bool) {
        loom::model(move || {
            let w = Arc::new(World::new(1 + leavers as u64, locked));
            let threads: Vec<_> = (0..leavers)
                .map(|_| {
                    let w = w.clone();
                    loom::thread::spawn(move || w.leave())
                })
                .collect();
            let did = unshare_core(&*w).unwrap();
            for t in threads {
                t.join().unwrap();
            }
            match did {
                Unshare::Copied => {
                    // The copy's space leaves last; then the copy owns all.
                    assert!(w.table_freed.load(Ordering::Acquire), "the last leaver frees the original");
                    assert_eq!(*w.copy.lock(), [Entry::Owned; 2], "the copy still borrows from a freed table");
                }
                _ => {
                    assert!(!w.table_freed.load(Ordering::Acquire), "a reused table was freed");
                    assert_eq!(w.counts.load(Ordering::Acquire), 1, "the unsharer is the last mapper");
                }
            }
            for f in &w.frames {
                assert_eq!(f.load(Ordering::Acquire), 1, "every frame has one reference at the end");
            }
        });
    }

    #[test]
    fn one_leaves_while_one_unshares() {
        run(1, true);
    }

    #[test]
    fn two_leave_while_one_unshares() {
        run(2, true);
    }

    /// The model can fail: without the table's lock the last mapper may
    /// own out the borrowers before the copy is registered, and free the
    /// frames under the copy's borrowed entries.
    #[test]
    #[should_panic(expected = "while a copy borrows it")]
    fn unshare_without_the_table_lock_is_caught() {
        run(1, false);
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
            let mut g = PteTableGuard::lock(&arena, t, BASE);
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
        let borrowed = super::super::zap::zap_entries(&x.arena, mine, BASE, BASE, BASE + PTE_TABLE_SPAN, |_, p| {
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
