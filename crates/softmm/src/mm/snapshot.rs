//! Snapshots: a hidden fork of a space that a restore brings the space
//! back to, paying for what changed since, not for the size of the space.
//!
//! A snapshot is a fork (`fork::do_fork` in snapshot mode): every private
//! page becomes copy-on-write shared with it (shared page tables by
//! default), which keeps the frames alive whatever the space does, also
//! after it exits. From then on the space logs (`snaplog.rs`) the pages
//! whose entries change (every `Change` and fault, `change.rs`,
//! `fault.rs`) and the ranges whose VMAs change (`VmaTree`'s mutators).
//! Because the snapshot's pages are write-protected in the space, a write
//! faults, so it is logged: the log is complete without soft-dirty bits.
//!
//! A restore, under the space's `mmap_lock` for writing: for each logged
//! VMA range, the snapshot's VMAs replace the space's; then, in one change
//! (`Event::Restore`, one bracket and one shootdown), every logged range is
//! zapped and the snapshot's entries are copied back as a fork copies them
//! (present pages shared copy-on-write, swap entries with their slot
//! references, zero-frame entries). Shared memory is not copied: its
//! entries are dropped and refault from the object, whose contents a
//! restore does not change. Then the snapshot's log is cleared.

use super::change::Change;
use super::fork::has_anon_pages;
use super::{Mm, MmInner, MmState};
use crate::error::{Error, Result};
use crate::notifier::Event;
use crate::pgtable::{PageTable, PTE_TABLE_SPAN};
use crate::phys::flags;
use crate::pte::Pte;
use crate::snaplog::Log;
use crate::sync::Ordering;
use crate::vma::{Backing, Vma};
use std::sync::Arc;

/// A point an address space can be put back to ([`Mm::restore`]).
///
/// It holds the space's pages as they were (copy-on-write shared with the
/// space, so its memory costs only what the space changed since), and it
/// outlives the space. Dropping it releases them.
pub struct Snapshot {
    /// The hidden fork holding the pages and mappings.
    mm: Mm,
    /// The space it was taken of.
    of: u64,
    /// What changed in that space since it was taken or last restored.
    log: Arc<Log>,
    /// The space's logs (to leave them when dropped).
    logs: Arc<crate::snaplog::SnapLogs>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Snapshot(of {}, in {:?})", self.of, self.mm)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.logs.remove(&self.log);
    }
}

impl Snapshot {
    /// The id of the address space it was taken of.
    pub fn of(&self) -> u64 {
        self.of
    }

    /// The page addresses in `[lo, hi)` whose contents or mappings may
    /// differ from this snapshot's: written, faulted in, unmapped or
    /// remapped since it was taken or last restored.
    pub fn dirty_pages(&self, lo: u64, hi: u64) -> Vec<u64> {
        pages_in(&self.log, lo, hi)
    }
}

/// The logged pages of `log` in `[lo, hi)`, in address order.
pub(crate) fn pages_in(log: &Log, lo: u64, hi: u64) -> Vec<u64> {
    let r = log.ranges();
    let mut all: Vec<(u64, u64)> = r.pages.iter().chain(r.vmas.iter()).copied().collect();
    crate::snaplog::merge(&mut all);
    let lo = lo & !0xfff;
    all.iter().flat_map(|&(a, b)| (a.max(lo)..b.min(hi)).step_by(4096)).filter(|&va| va & 0xfff == 0).collect()
}

pub(crate) fn take(mm: &Arc<MmInner>, policy: super::ForkPolicy) -> Result<Snapshot> {
    let log = Arc::new(Log::default());
    let mut reclaims = 0;
    let hidden = loop {
        match super::fork::do_fork(mm, policy, Some(&log)) {
            Err(Error::NoMemory(_)) if reclaims < 16 && crate::reclaim::direct_reclaim(&mm.machine) => reclaims += 1,
            r => break r?,
        }
    };
    Ok(Snapshot { mm: hidden, of: mm.id, log, logs: mm.snaps.clone() })
}

pub(crate) fn restore(mm: &MmInner, snap: &Snapshot) -> Result<()> {
    if snap.of != mm.id {
        return Err(Error::Invalid("snapshot of another address space"));
    }
    let mut st = mm.state.write();
    if st.pt.is_none() {
        return Err(Error::Exited);
    }
    // Parent before child, as fork: the snapshot is the space's fork.
    let sst = snap.mm.inner.state.read();
    let spt = sst.pt.as_ref().ok_or(Error::Exited)?;
    let logged = snap.log.ranges();
    let mut all: Vec<(u64, u64)> = logged.pages.iter().chain(logged.vmas.iter()).copied().collect();
    crate::snaplog::merge(&mut all);
    if all.is_empty() {
        st.heap = sst.heap;
        st.def_flags = sst.def_flags;
        mm.snaps.set_latest(&snap.log);
        return Ok(());
    }
    check_pins(mm, &st, &all)?;
    // Tables the ranges cover in part become the space's own (the only
    // step that may fail, with nothing changed but the sharing).
    if let Some(pt) = st.pt.as_ref() {
        for &(lo, hi) in &all {
            super::mmap::unshare_range(mm, &st, pt, lo, hi, true)?;
        }
    }
    let removed = restore_vmas(mm, &mut st, &sst, &logged.vmas);
    st.heap = sst.heap;
    st.def_flags = sst.def_flags;
    let st: &MmState = &st;
    let pt = st.pt.as_ref().ok_or(Error::Exited)?;
    let (lo, hi) = (all[0].0, all[all.len() - 1].1);
    let mut change = Change::open(mm, Some(st), lo, hi, Some(Event::Restore)).write_locked();
    for &(lo, hi) in &all {
        change.zap(pt, lo, hi, true);
    }
    let mut result = Ok(());
    for &(lo, hi) in &all {
        result = result.and_then(|()| copy_range(mm, st, pt, &sst, spt, &change, lo, hi));
    }
    change.need_flush();
    drop(change);
    drop(removed);
    // On failure (no memory for a table or a copy) the log stays: the
    // space is partly restored, and a later restore finishes the work.
    result?;
    snap.log.clear();
    mm.snaps.set_latest(&snap.log);
    Ok(())
}

/// A pinned page is never replaced under its pinner: `EBUSY` if a logged
/// range maps one (pins are taken under the read lock, so none appears
/// while the caller holds it for writing).
fn check_pins(mm: &MmInner, st: &MmState, ranges: &[(u64, u64)]) -> Result<()> {
    let Some(pt) = st.pt.as_ref() else { return Ok(()) };
    if !mm.has_pinned.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let arena = mm.arena();
    let mut pinned = false;
    for &(lo, hi) in ranges {
        pt.for_each_pte_table(arena, lo, hi, |_, a, b| {
            pt.peek_ptes(arena, a, b, |_, pte| {
                pinned |= pte.is_present() && !pte.is_zero_frame() && arena.meta(pte.frame()).pins() > 0;
            });
        });
    }
    if pinned {
        return Err(Error::Busy("a page changed since the snapshot is pinned"));
    }
    Ok(())
}

/// Put the snapshot's VMAs back over each of `ranges`; returns the
/// space's VMAs taken out, to be dropped once their entries are gone.
fn restore_vmas(mm: &MmInner, st: &mut MmState, sst: &MmState, ranges: &[(u64, u64)]) -> Vec<Vma> {
    let me = mm.mm_ref();
    let mut removed = Vec::new();
    for &(lo, hi) in ranges {
        removed.extend(st.vmas.remove_range(lo, hi));
        let mut starts = vec![lo, hi];
        for sv in sst.vmas.overlapping(lo, hi) {
            let (a, b) = (sv.start.max(lo), sv.end.min(hi));
            st.vmas.insert(sv.restored_copy(a, b, &me));
            starts.push(a);
        }
        // The snapshot's VMAs were merged as far as they could be: merging
        // here gives its boundaries back.
        starts.sort_unstable();
        for at in starts {
            st.vmas.try_merge_at(at);
        }
    }
    removed
}

/// Copy the snapshot's entries of `[lo, hi)` into the space's (zapped)
/// tables, as fork copies a parent's: present pages shared and read-only,
/// swap entries with a slot reference each, zero-frame entries as they
/// are. A page the snapshot holds alone (a copy fork made of a page pinned
/// in the space) is copied into a new frame of the space's own.
#[allow(clippy::too_many_arguments)]
fn copy_range(
    mm: &MmInner,
    st: &MmState,
    pt: &PageTable,
    sst: &MmState,
    spt: &PageTable,
    change: &Change<'_>,
    lo: u64,
    hi: u64,
) -> Result<()> {
    let arena = mm.arena();
    let mut result = Ok(());
    for sv in sst.vmas.overlapping(lo, hi).filter(|v| has_anon_pages(v)) {
        let own = match &sv.backing {
            Backing::Anon(l) => l.get().0,
            Backing::Shm(_) => 0,
        };
        spt.for_each_pte_table(arena, sv.start.max(lo), sv.end.min(hi), |stable, a, b| {
            if result.is_err() {
                return;
            }
            result = copy_table(mm, st, pt, spt, change, stable, own, a, b);
        });
    }
    result
}

/// `copy_range` within one PTE table of the snapshot: `[a, b)`.
#[allow(clippy::too_many_arguments)]
fn copy_table(
    mm: &MmInner,
    st: &MmState,
    pt: &PageTable,
    spt: &PageTable,
    change: &Change<'_>,
    stable: crate::phys::FrameId,
    snap_own: u64,
    a: u64,
    b: u64,
) -> Result<()> {
    let arena = mm.arena();
    let base = a & !(PTE_TABLE_SPAN - 1);
    let mut added = 0;
    let table = pt.pte_table_alloc(arena, a, &mut added);
    mm.machine.counters.page_tables.fetch_add(added as u64, Ordering::Relaxed);
    let table = table?;
    // The snapshot's table first: it is the backing when the space's
    // borrows from it (backing before borrower).
    let sg = spt.lock(arena, stable, base, change.edit());
    let mut g = pt.lock(arena, table, base, change.edit());
    let mut va = a;
    while va < b {
        let pte = sg.get(va);
        if pte.is_swap() {
            if let Some(swap) = mm.machine.reclaim.swap.as_ref() {
                swap.dup(pte.swap_slot());
            }
            g.set(va, pte);
        } else if pte.is_present() && pte.is_zero_frame() {
            g.set(va, pte.without(Pte::ACCESSED | Pte::WRITE | Pte::BORROWED));
        } else if let Some(f) = if pte.is_borrowed() { Some(pte.frame()) } else { pte.counted_frame() } {
            let m = arena.meta(f);
            if snap_own != 0 && m.owner.load(Ordering::Relaxed) == snap_own {
                let own = live_anon(st, va);
                let nf = arena.alloc(false, flags::DIRTY)?;
                arena.copy_frame(nf, f);
                let nm = arena.meta(nf);
                nm.owner.store(own, Ordering::Relaxed);
                nm.index.store(m.index.load(Ordering::Relaxed), Ordering::Relaxed);
                nm.add_counts(0, 1);
                g.set(va, Pte::new(nf, Pte::DIRTY | (pte.raw() & Pte::USER)));
                nm.set_flags(flags::ANON);
            } else {
                m.add_counts(1, 1);
                g.set(va, pte.without(Pte::ACCESSED | Pte::WRITE | Pte::BORROWED));
            }
        }
        va += 4096;
    }
    Ok(())
}

/// The own anon_vma id of the space's VMA at `va` (restored from the
/// snapshot's, so it has one when the snapshot's has).
fn live_anon(st: &MmState, va: u64) -> u64 {
    match st.vmas.find(va).map(|v| &v.backing) {
        Some(Backing::Anon(l)) => l.get().0,
        _ => 0,
    }
}

impl Mm {
    /// Take a snapshot of this address space: a hidden copy-on-write fork
    /// ([`Mm::fork`]'s cost: O(page tables) with shared tables) that
    /// [`Mm::restore`] brings the space back to. From now on the space logs
    /// which pages and mappings change. Several snapshots of one space may
    /// coexist; each survives the space's exit.
    pub fn snapshot(&self) -> Result<Snapshot> {
        take(&self.inner, super::ForkPolicy::default())
    }

    /// [`Mm::snapshot`] with an explicit page-table strategy for its fork.
    pub fn snapshot_with(&self, policy: super::ForkPolicy) -> Result<Snapshot> {
        take(&self.inner, policy)
    }

    /// Put this space back to `snap`: every mapping (range, protection,
    /// kind, flags), the break and every byte of private memory are as at
    /// the snapshot; pages changed since share the snapshot's frames again,
    /// copy-on-write. Costs what changed since the snapshot was taken or
    /// last restored, not the size of the space. Under the `mmap_lock` for
    /// writing: other threads' accesses wait, then see the restored space.
    /// Shared memory keeps its contents (other spaces see no change).
    ///
    /// Errors: `EINVAL` for a snapshot of another space; `EBUSY` when a
    /// page changed since is pinned (nothing is changed); `ENOMEM` (the
    /// space may be partly restored; a later restore finishes the work).
    pub fn restore(&self, snap: &Snapshot) -> Result<()> {
        restore(&self.inner, snap)
    }

    /// The pages of `[lo, hi)` changed since the latest snapshot of this
    /// space was taken or restored (written, faulted in, unmapped,
    /// remapped), in address order: `EINVAL` when that snapshot is gone.
    pub fn dirty_pages(&self, lo: u64, hi: u64) -> Result<Vec<u64>> {
        let log = self.inner.snaps.latest().ok_or(Error::Invalid("no live snapshot of this space"))?;
        Ok(pages_in(&log, lo, hi))
    }
}
