//! Borrowed entries: an unshare by copy that takes no frame references.
//!
//! When an address space writes into a PTE table `T` it shares with others,
//! it copies `T` into a table `C` of its own (`share::unshare`). Taking a
//! reference and a mapping on each of up to 512 frames would cost a locked
//! instruction per entry, and the exit of `C` as many again. Instead, `C`'s
//! present entries *borrow* their frames from `T` ([`Pte::BORROWED`]): they
//! hold neither reference nor mapping, and `C` holds one reference on `T`,
//! which keeps `T` and so every frame it maps alive. `T` is `C`'s
//! *backing*; `C` is one of `T`'s *borrowers*.
//!
//! A table frame's counts: `refcount` = mappers (PMD entries pointing at
//! it, plus *holds*, below) + borrowers; `mapcount` = borrowers. So
//! `mappers = refcount - mapcount`, read in one load.
//!
//! Invariants (`docs/ARCHITECTURE.md`, "Borrowed entries"):
//! - **B1.** A borrowed entry `C[i]` names the frame `T[i]` names, present.
//! - **B2. No orphans.** A table with borrowers has a mapper. The last
//!   mapper to leave first *owns out* every borrower ([`own_all`]).
//! - **B3.** While `T` has borrowers, `T[i]` keeps its frame and presence,
//!   unless entry `i` of every borrower is owned first ([`own_index`]).
//!   Only reclaim and migration change a shared table's entries in place.
//! - **B4.** A borrowed entry is never writable and never reused by COW:
//!   its frame is mapped through `T` as well.
//! - **B5.** A borrowed entry is owned before its frame or presence changes.
//! - **B6.** A table with borrowers is mapped only through write-protected
//!   PMD entries (it is shared, or its last mapper has not written yet).
//!
//! Translations: an accessor of `C`'s space may cache a borrowed entry's
//! translation until that space's TLB shootdown. So a zap of borrowed
//! entries with a shootdown pending first takes a *hold* on `T` ([`hold`]):
//! a mapper reference, dropped after the shootdown by `share::put_late`,
//! which keeps `T`'s frames mapped until then, exactly as a sharer that
//! leaves `T` keeps its reference until its shootdown.
//!
//! Locks: `T`'s PTE lock, then a borrower's PTE lock, then a registry
//! shard (a leaf). `C` is registered under `T`'s PTE lock (so [`own_all`],
//! which holds it, sees every borrower); it leaves under its own PTE lock,
//! by either [`own_all`] or [`detach`], whichever comes first: both test
//! `C`'s backing (`FrameMeta::owner` of the table frame, tagged) under
//! `C`'s PTE lock and clear it. [`own_all`] may so lock a table that
//! `detach` let go and its space freed meanwhile: frame metadata outlives
//! frames, and the backing test (a recycled frame never names `T`: new
//! borrowers of `T` need `T`'s lock) tells it to move on.

use super::{slot, PteTableGuard, PTRS_PER_TABLE};
use crate::phys::{FrameArena, FrameId};
use crate::pte::Pte;
use crate::stats::Counters;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Registry shards: unshares of unrelated tables rarely meet on a lock.
const SHARDS: usize = 64;

/// Each backing table's borrowers, per machine (it lives in the arena, next
/// to the frame metadata it extends).
pub(crate) struct Registry {
    shards: Box<[Shard]>,
}

/// Backing table -> its borrowers.
type Shard = parking_lot::Mutex<HashMap<FrameId, Vec<FrameId>>>;

impl Default for Registry {
    fn default() -> Self {
        Registry { shards: (0..SHARDS).map(|_| parking_lot::Mutex::new(HashMap::new())).collect() }
    }
}

impl Registry {
    fn shard(&self, t: FrameId) -> &Shard {
        &self.shards[t.0 as usize % SHARDS]
    }

    fn add(&self, t: FrameId, c: FrameId) {
        self.shard(t).lock().entry(t).or_default().push(c);
    }

    fn remove(&self, t: FrameId, c: FrameId) {
        let mut s = self.shard(t).lock();
        if let Some(list) = s.get_mut(&t) {
            list.retain(|&x| x != c);
            if list.is_empty() {
                s.remove(&t);
            }
        }
    }

    fn take(&self, t: FrameId) -> Vec<FrameId> {
        self.shard(t).lock().remove(&t).unwrap_or_default()
    }

    fn borrowers(&self, t: FrameId) -> Vec<FrameId> {
        self.shard(t).lock().get(&t).cloned().unwrap_or_default()
    }

    /// Every (backing, borrowers) pair, for audits.
    pub(crate) fn snapshot(&self) -> Vec<(FrameId, Vec<FrameId>)> {
        self.shards.iter().flat_map(|s| s.lock().iter().map(|(&t, c)| (t, c.clone())).collect::<Vec<_>>()).collect()
    }
}

/// Mappers of a table frame from its packed counts.
#[inline]
pub(crate) fn mappers(counts: u64) -> u32 {
    (counts as u32).wrapping_sub((counts >> 32) as u32)
}

/// Mappers of table `t` now.
#[inline]
pub(crate) fn mappers_of(arena: &FrameArena, t: FrameId) -> u32 {
    mappers(arena.meta(t).counts.load(Ordering::Acquire))
}

/// How a table frame's `owner` names its backing: tagged, so that no
/// anon_vma or object id (what `owner` holds for a page frame, and still
/// holds in a recycled frame a stale look may meet) can read as one.
const BACKING_TAG: u64 = 1 << 63;

/// Table `c`'s backing, if it borrows: read without a lock, so only a
/// `None` is final (a backing is set before `c` is installed and only ever
/// cleared).
#[inline]
pub(crate) fn backing(arena: &FrameArena, c: FrameId) -> Option<FrameId> {
    let o = arena.meta(c).owner.load(Ordering::Acquire);
    (o & BACKING_TAG != 0).then_some(FrameId(o as u32))
}

/// A new PTE table borrows from nothing (its frame's `owner` may hold a
/// previous life's anon_vma id).
#[inline]
pub(crate) fn init_table(arena: &FrameArena, c: FrameId) {
    arena.meta(c).owner.store(0, Ordering::Release);
}

/// Turn the caller's mapper reference on `t` into a borrower reference
/// (one compare-and-swap: borrowers + 1, refcount unchanged), unless it is
/// the last mapper. Under `t`'s PTE lock.
pub(crate) fn become_borrower(arena: &FrameArena, t: FrameId) -> bool {
    let counts = &arena.meta(t).counts;
    let mut cur = counts.load(Ordering::Acquire);
    while mappers(cur) >= 2 {
        match counts.compare_exchange_weak(cur, cur + (1 << 32), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
    false
}

/// Record `c` (not yet installed) as a borrower of `t`, whose PTE lock the
/// caller holds, after `become_borrower` succeeded.
pub(crate) fn register(arena: &FrameArena, t: FrameId, c: FrameId) {
    arena.meta(c).owner.store(BACKING_TAG | t.0 as u64, Ordering::Release);
    arena.borrows.add(t, c);
}

/// Drop borrower `c`'s reference on `t` (never the last: `t` has a mapper).
fn drop_borrower_ref(arena: &FrameArena, t: FrameId, c: &Counters) {
    let old = arena.meta(t).sub_counts(1, 1);
    debug_assert!(old > 1, "a borrower held the last reference on table {}", t.0);
    if old == 2 {
        c.shared_tables.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Own the borrowed entry at `va` of the locked table: take a reference and
/// a mapping on its frame and clear the bit (the frame and the rest of the
/// entry stay). Returns whether it was borrowed.
pub(crate) fn own_entry(arena: &FrameArena, g: &mut PteTableGuard<'_>, va: u64) -> bool {
    let mut p = g.get(va);
    while p.is_borrowed() {
        // Lock-free setters may add accessed or dirty bits: never lose them.
        match g.cas(va, p, p.without(Pte::BORROWED)) {
            Ok(_) => {
                arena.meta(p.frame()).add_counts(1, 1);
                return true;
            }
            Err(now) => p = now,
        }
    }
    false
}

/// B2/B3 for a table about to change: own every borrowed entry of every
/// borrower of `t` (covering `base`) and drop their references on it. The
/// caller holds `t`'s PTE lock and a mapper reference.
pub(crate) fn own_all(arena: &FrameArena, t: FrameId, base: u64, c: &Counters) {
    if arena.meta(t).mapcount() == 0 {
        return; // no borrowers; none can come while we hold the lock
    }
    for b in arena.borrows.take(t) {
        let mut g = PteTableGuard::lock(arena, b, base);
        // Gone already (`detach` came first): its reference is dropped.
        if backing(arena, b) != Some(t) {
            continue;
        }
        for i in 0..PTRS_PER_TABLE {
            own_entry(arena, &mut g, base + i as u64 * 4096);
        }
        arena.meta(b).owner.store(0, Ordering::Release);
        drop(g);
        drop_borrower_ref(arena, t, c);
    }
}

/// B3 for one entry: own entry `va` of every borrower of `t`, whose PTE
/// lock the caller holds (reclaim or migration is about to replace `t`'s).
pub(crate) fn own_index(arena: &FrameArena, t: FrameId, base: u64, va: u64) {
    if arena.meta(t).mapcount() == 0 {
        return;
    }
    for b in arena.borrows.borrowers(t) {
        let mut g = PteTableGuard::lock(arena, b, base);
        if backing(arena, b) == Some(t) {
            own_entry(arena, &mut g, va);
        }
    }
}

/// Take a hold on `c`'s backing, if it has one: a mapper reference that
/// keeps the backing's frames mapped until the caller's TLB shootdown, when
/// `share::put_late` drops it. For a zap of borrowed entries with a
/// shootdown pending (the borrower may lose its backing meanwhile).
pub(crate) fn hold(arena: &FrameArena, c: FrameId, base: u64) -> Option<FrameId> {
    backing(arena, c)?;
    let _g = PteTableGuard::lock(arena, c, base);
    // Under `c`'s lock a backing still set is referenced by `c`: alive.
    let t = backing(arena, c)?;
    arena.meta(t).add_counts(1, 0);
    Some(t)
}

/// Table `c` (covering `base`), with no borrowed entry left, is about to be
/// freed: leave its backing, unless `own_all` did already.
pub(crate) fn detach(arena: &FrameArena, c: FrameId, base: u64, counters: &Counters) {
    if backing(arena, c).is_none() {
        return;
    }
    let g = PteTableGuard::lock(arena, c, base);
    let Some(t) = backing(arena, c) else { return };
    debug_assert!((0..PTRS_PER_TABLE).all(|i| !g.get(base + i as u64 * 4096).is_borrowed()));
    arena.borrows.remove(t, c);
    arena.meta(c).owner.store(0, Ordering::Release);
    drop(g);
    drop_borrower_ref(arena, t, counters);
}

/// The entry `i` of table `t`, for audits and smaps.
pub(crate) fn entry(arena: &FrameArena, t: FrameId, i: usize) -> Pte {
    Pte::from_raw(slot(arena, t, i).load(Ordering::Acquire))
}
