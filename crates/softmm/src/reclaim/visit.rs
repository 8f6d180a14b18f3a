//! Visiting every page-table entry that maps an anonymous frame, through
//! the reverse map: how reclaim ages and unmaps a frame and migration
//! freezes and repoints one (see `mod.rs` for the locks taken).

use crate::few::Few;
use crate::machine::MachineInner;
use crate::mm::{Change, ChangeBatch, MmInner, MmState};
use crate::phys::FrameId;
use crate::pte::Pte;
use crate::sync::Ordering;
use std::sync::Arc;

/// What a visit of every mapping of a frame did.
#[derive(Default)]
pub(crate) struct Visit {
    /// PTE tables where a present entry was replaced (a shared one counts
    /// once).
    tables: Few<FrameId>,
    /// Entries replaced (not counting those only aged).
    pub(crate) changed: u32,
    /// Some mapping had been accessed since the last look (an entry's
    /// accessed bit, or a secondary MMU's with `How::age`); those bits are
    /// cleared now.
    pub(crate) young: bool,
    /// Some address space was busy and skipped (`try_only`), or one of
    /// its secondary MMUs refused a non-blocking invalidation.
    pub(crate) skipped: bool,
    /// Each space's change, its entries edited and its vcache told: the
    /// shootdowns and bracket ends run when this batch is dropped (or
    /// handed to a larger one, `ChangeBatch::absorb`).
    pub(crate) changes: ChangeBatch,
}

/// How a visit treats each address space that may map the frame.
#[derive(Clone, Copy, Default)]
pub(crate) struct How {
    /// Skip address spaces whose `mmap_lock` is not free now.
    pub(crate) try_only: bool,
    /// Bracket each space's change with MMU-notifier calls for this event
    /// (one page, `[va, va + 4096)`, per space).
    pub(crate) event: Option<crate::notifier::Event>,
    /// Ask each space's secondary MMUs first whether they accessed the
    /// page (`clear_young`); in a space where one did, the entry is only
    /// aged (its accessed bit cleared), never edited.
    pub(crate) age: bool,
    /// Leave alone every space whose VMA at the frame's address is
    /// `VM_LOCKED` (reclaim: Linux's `try_to_unmap_one` fails there and
    /// the page stays resident; migration ignores mlock, as Linux's does).
    pub(crate) mlock: bool,
}

/// Visit every page-table entry that holds anonymous frame `f` (present or
/// migration entry), through the reverse map, and let `edit` (a pure
/// function: it may run more than once for one entry) choose a
/// replacement; `changed(old)` runs once for each entry replaced, under its
/// page-table lock. A replacement that only clears the accessed bit ages
/// the entry: it sets `Visit::young` and needs no shootdown (a translation
/// cached meanwhile only hides later accesses, as an x86 TLB does).
pub(crate) fn visit_mappings(
    m: &MachineInner,
    f: FrameId,
    how: How,
    edit: impl Fn(Pte) -> Option<Pte>,
    mut changed: impl FnMut(Pte),
) -> Visit {
    let arena = &m.arena;
    let (owner, index) = rmap_index(arena.meta(f));
    let mut v = Visit::default();
    if how.mlock && m.mlock_used.load(Ordering::Relaxed) && mapped_locked(m, f, owner, index, how.try_only) {
        return v; // mapped and locked: it stays resident, every mapping kept
    }
    crate::rmap::rmap_walk(&m.anon_vmas, owner, |mm| {
        let Some(st) = lock_member(mm, how.try_only) else {
            v.skipped = true;
            return;
        };
        let Some(pt) = st.pt.as_ref() else { return };
        for va in st.vmas.anon_addresses(owner, index).drain() {
            visit_one(m, mm, &st, pt, va, f, how, &edit, &mut changed, &mut v);
        }
    });
    v
}

/// Whether some space maps `f` in a `VM_LOCKED` VMA: Linux keeps such a
/// page off the evictable lists (`PG_mlocked`), so reclaim unmaps it from
/// none of its mappings, unlocked ones (a forked child's) included. A
/// space busy under `try_only` is not looked at (the visit skips it too).
fn mapped_locked(m: &MachineInner, f: FrameId, owner: u64, index: u64, try_only: bool) -> bool {
    let mut locked = false;
    crate::rmap::rmap_walk(&m.anon_vmas, owner, |mm| {
        if locked {
            return;
        }
        let Some(st) = lock_member(mm, try_only) else { return };
        let Some(pt) = st.pt.as_ref() else { return };
        for va in st.vmas.anon_addresses(owner, index).drain() {
            let in_locked = st.vmas.find(va).is_some_and(|v| v.flags.contains(crate::vma::VmFlags::LOCKED));
            if !in_locked {
                continue;
            }
            // Lock-free, as `follow_pte`: a present entry of `f`.
            pt.peek_ptes(&m.arena, va, va + 4096, |_, pte| {
                locked |= pte.is_present() && !pte.is_zero_frame() && pte.frame() == f;
            });
            if locked {
                return;
            }
        }
    });
    locked
}

/// One address of a member space where frame `f` may be mapped.
#[allow(clippy::too_many_arguments)]
fn visit_one(
    m: &MachineInner,
    mm: &Arc<MmInner>,
    st: &MmState,
    pt: &crate::pgtable::PageTable,
    va: u64,
    f: FrameId,
    how: How,
    edit: &impl Fn(Pte) -> Option<Pte>,
    changed: &mut impl FnMut(Pte),
    v: &mut Visit,
) {
    let arena = &m.arena;
    {
        if how.mlock && st.vmas.find(va).is_some_and(|v| v.flags.contains(crate::vma::VmFlags::LOCKED)) {
            return; // the frame stays mapped there, so it stays resident
        }
        // Secondary MMUs first, outside the page-table lock (they may sleep).
        let young_here = how.age && mm.notifiers.clear_young(va, va + 4096);
        v.young |= young_here;
        let event = if young_here { None } else { how.event };
        let Some(mut change) = Change::try_open(mm, Some(st), va, va + 4096, event, !how.try_only) else {
            v.skipped = true;
            return;
        };
        if let Some(mut g) = crate::pgtable::share::lock_pte_table(arena, pt, va, change.edit()) {
            let edit_here = |pte: Pte| if young_here { age(pte) } else { edit(pte) };
            match edit_entry(arena, &mut g, va, f, edit_here, &mut *changed) {
                Edited::Replaced(old) => {
                    // A translation is cached only of a present entry.
                    if old.is_present() {
                        v.tables.push(g.table());
                        change.need_flush();
                    }
                    v.changed += 1;
                    // Swap-out and migration keep the page's contents:
                    // snapshots log only a page dropped (a lazily freed one).
                    let dropped = g.get(va).is_none();
                    drop(g);
                    if dropped {
                        change.translations_changed(va, va + 4096);
                    } else {
                        change.translations_moved(va, va + 4096);
                    }
                }
                Edited::Aged => {
                    v.young = true;
                    if how.age {
                        let aged = look_around(arena, &mut g, va);
                        m.counters.look_around_aged.fetch_add(aged, Ordering::Relaxed);
                    }
                }
                Edited::Kept => {}
                // A table shared with a space visited before, whose present
                // entry was replaced through it: this space may cache the
                // old translation too. (Looked at only when the entry no
                // longer holds the frame: a table freed and reallocated
                // during the walk may reuse the id.)
                Edited::Gone if v.tables.iter().any(|&t| t == g.table()) => change.need_flush(),
                Edited::Gone => {}
            }
        }
        // The vcache hears now, the shootdown and bracket end are batched.
        change.defer_to(&mut v.changes, mm);
    }
}

/// Entries a look-around covers: the aligned group around the accessed
/// one (Linux's MGLRU looks at up to 64 too, `MIN_LRU_BATCH`).
const LOOK_AROUND: u64 = 64;

/// An aging walk found the entry at `va` accessed: age the accessed
/// entries of private anonymous frames around it in the same locked table
/// as well, and mark their frames `REFERENCED`, so that the clock gives
/// each its second chance without a reverse-map walk of its own (Linux's
/// `lru_gen_look_around`). Pages used together sit together: a sequential
/// reader's pages come back from swap side by side, and one walk then ages
/// up to 64 of them instead of 64 walks.
/// Returns the entries it aged.
fn look_around(arena: &crate::phys::FrameArena, g: &mut crate::pgtable::PteTableGuard<'_>, va: u64) -> u64 {
    let first = va & !(LOOK_AROUND * 4096 - 1);
    let mut aged = 0;
    for a in (first..first + LOOK_AROUND * 4096).step_by(4096) {
        let pte = g.get(a);
        if a == va || !pte.is_present() || !pte.is_accessed() {
            continue;
        }
        let Some(f) = pte.counted_frame() else { continue };
        let meta = arena.meta(f);
        if !meta.has(crate::phys::flags::ANON) {
            continue;
        }
        // Lost to a lock-free setter (dirty bit): the next walk ages it.
        if g.cas(a, pte, pte.without(Pte::ACCESSED)).is_ok() {
            meta.set_flags(crate::phys::flags::REFERENCED);
            aged += 1;
        }
    }
    aged
}

/// The aging edit: clear the accessed bit of a present entry that has it.
pub(crate) fn age(pte: Pte) -> Option<Pte> {
    (pte.is_present() && pte.is_accessed()).then(|| pte.without(Pte::ACCESSED))
}

/// What `edit_entry` did to one entry.
pub(super) enum Edited {
    /// The entry no longer holds the frame.
    Gone,
    /// `edit` left it alone.
    Kept,
    /// Only its accessed bit was cleared.
    Aged,
    /// It was replaced; the entry it held.
    Replaced(Pte),
}

/// Apply `edit` to the entry at `va` while it holds frame `f`, under its
/// page-table lock.
///
/// Borrowed entries (`pgtable/borrow.rs`): aging one needs nothing, but
/// before any other replacement a borrowed entry is owned (B5), and the
/// entry of a table others borrow from is owned in every borrower (B3).
pub(super) fn edit_entry(
    arena: &crate::phys::FrameArena,
    g: &mut crate::pgtable::PteTableGuard<'_>,
    va: u64,
    f: FrameId,
    edit: impl Fn(Pte) -> Option<Pte>,
    changed: &mut impl FnMut(Pte),
) -> Edited {
    let mut pte = g.get(va);
    let mut borrowers_owned = false;
    loop {
        if pte.page_frame() != Some(f) {
            return Edited::Gone;
        }
        let Some(new) = edit(pte) else { return Edited::Kept };
        if new != pte.without(Pte::ACCESSED) {
            if pte.is_borrowed() {
                crate::pgtable::borrow::own_entry(arena, g, va);
                pte = g.get(va);
                continue;
            }
            if !borrowers_owned {
                crate::pgtable::borrow::own_index(arena, g.table(), g.base(), va);
                borrowers_owned = true;
            }
        }
        // An MMU-style lock-free setter may add accessed or dirty bits
        // meanwhile: never lose them.
        match g.cas(va, pte, new) {
            Ok(old) if pte.is_accessed() && new == old.without(Pte::ACCESSED) => return Edited::Aged,
            Ok(old) => {
                changed(old);
                return Edited::Replaced(old);
            }
            Err(now) => pte = now,
        }
    }
}

/// An anonymous frame's anon_vma id and page offset, which say where it
/// can be mapped in each space (`VmaTree::anon_addresses`, `rmap.rs`).
fn rmap_index(meta: &crate::phys::FrameMeta) -> (u64, u64) {
    (meta.owner.load(Ordering::Acquire), meta.index.load(Ordering::Acquire))
}

/// A member address space's `mmap_lock` for a reverse-map visit: tried only
/// (`None` when busy) or waited for, without queueing behind a writer.
pub(crate) fn lock_member(
    mm: &MmInner,
    try_only: bool,
) -> Option<parking_lot::RwLockReadGuard<'_, crate::mm::MmState>> {
    if try_only {
        mm.state.try_read_recursive()
    } else {
        Some(mm.state.read_recursive())
    }
}
