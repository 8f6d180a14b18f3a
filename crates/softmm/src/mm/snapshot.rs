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
use super::{Mm, MmInner, MmState};
use crate::error::{Error, Result};
use crate::notifier::Event;
use crate::pgtable::PTE_TABLE_SPAN;
use crate::snaplog::Log;
use crate::vma::Vma;
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
    /// The 2 MiB spans (sorted bases) where it holds pages of its own:
    /// fork's copies of pages pinned in the space (`mm/restore.rs`).
    own_spans: Vec<u64>,
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
        pages_in(&self.logs, &self.log, lo, hi)
    }
}

/// The logged pages of `log` (one of `logs`) in `[lo, hi)`, in address order.
pub(crate) fn pages_in(logs: &crate::snaplog::SnapLogs, log: &Log, lo: u64, hi: u64) -> Vec<u64> {
    let r = logs.ranges(log);
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
    // What the log holds now are the pinned pages fork copied (and maybe
    // a racing fault of another thread: a span too many is harmless).
    let mut own_spans: Vec<u64> = mm
        .snaps
        .ranges(&log)
        .pages
        .iter()
        .flat_map(|&(a, b)| (a & !(PTE_TABLE_SPAN - 1)..b).step_by(PTE_TABLE_SPAN as usize))
        .collect();
    own_spans.dedup();
    Ok(Snapshot { mm: hidden, of: mm.id, log, logs: mm.snaps.clone(), own_spans })
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
    let logged = mm.snaps.ranges(&snap.log);
    let mut all: Vec<(u64, u64)> = logged.pages.iter().chain(logged.vmas.iter()).copied().collect();
    crate::snaplog::merge(&mut all);
    if all.is_empty() {
        st.heap = sst.heap;
        st.def_flags = sst.def_flags;
        mm.snaps.restored();
        return Ok(());
    }
    check_pins(mm, &st, &all)?;
    let spans = super::restore::spans(&all);
    if let Some(pt) = st.pt.as_ref() {
        super::restore::unshare_partial(mm, &st, pt, &spans)?;
    }
    let removed = restore_vmas(mm, &mut st, &sst, &logged.vmas);
    st.heap = sst.heap;
    st.def_flags = sst.def_flags;
    let st: &MmState = &st;
    let pt = st.pt.as_ref().ok_or(Error::Exited)?;
    let (lo, hi) = (all[0].0, all[all.len() - 1].1);
    let r = super::restore::Restore { mm, st, pt, sst: &sst, spt, own_spans: &snap.own_spans };
    let mut changed = Vec::with_capacity(all.len());
    let mut change = Change::open(mm, Some(st), lo, hi, Some(Event::Restore)).write_locked().unlogged();
    let result = r.entries(&mut change, &spans, &mut changed);
    change.need_flush();
    drop(change);
    drop(removed);
    // Other snapshots of the space hear of the pages changed, exactly:
    // not this one's log, nor, on success, the dirty log, both cleared
    // next. On failure (no memory for a table or a copy) the log stays
    // (it holds every page changed here): the space is partly restored,
    // and a later restore finishes the work.
    let dirty = mm.snaps.dirty();
    let skip_dirty = dirty.as_deref().filter(|_| result.is_ok());
    let except: Vec<&Log> = std::iter::once(&*snap.log).chain(skip_dirty).collect();
    mm.snaps.pages_changed_each(&changed, &except);
    result?;
    mm.snaps.clear(&snap.log);
    mm.snaps.restored();
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
}
