//! Zapping: clearing the entries of a range (Linux's `zap_pte_range`).
//!
//! [`PageTable::zap_range`] is the one caller outside this file: the
//! `mm::Change` that runs it hands a [`ZapSink`], which takes what each
//! cleared entry held and keeps what must wait for the TLB shootdown.

use super::cursor::{Edit, PteTableGuard};
use super::{borrow, index, share, slot, PageTable, PTE_TABLE_SPAN};
use crate::phys::{FrameArena, FrameId};
use crate::pte::Pte;
use crate::stats::Counters;
use std::sync::atomic::Ordering;

/// Where a zap hands what it cleared: the change running it.
pub(crate) trait ZapSink {
    /// `pte`, cleared at `va`, held a frame, a swap slot or a migration
    /// entry's frame: release it (the frame's reference after the
    /// shootdown).
    fn zapped(&mut self, va: u64, pte: Pte);
    /// Whether accessors may still cache translations the shootdown has
    /// not yet removed (tables cleared now must outlive it).
    fn shootdown_pending(&self) -> bool;
    /// Drop a reference on table `t` (covering `base`) after the shootdown.
    fn drop_table_later(&mut self, t: FrameId, base: u64);
    /// A cleared translation may be cached: the shootdown must run.
    fn need_flush(&mut self);
}

impl PageTable {
    /// `zap_pte_range` over `[start, end)`: clear every entry and hand what
    /// each held to `sink`. A shared PTE table the range covers whole is
    /// dropped instead (`may_drop`, under the `mmap_lock` held for writing:
    /// only its last sharer zaps it); one covered in part must have been
    /// unshared.
    pub(crate) fn zap_range(
        &self,
        arena: &FrameArena,
        c: &Counters,
        (start, end): (u64, u64),
        may_drop: bool,
        _edit: Edit,
        sink: &mut impl ZapSink,
    ) {
        self.for_each_pmd(arena, start, end, |s, e, lo, hi| {
            let base = lo & !(PTE_TABLE_SPAN - 1);
            if !e.is_writable() {
                debug_assert!(may_drop && hi - lo == PTE_TABLE_SPAN, "partial zap of a shared PTE table");
                let pending = sink.shootdown_pending();
                if let share::Left::Later(t) =
                    share::drop_shared(arena, s, e, base, c, pending, |va, p| sink.zapped(va, p))
                {
                    sink.drop_table_later(t, base);
                }
                return;
            }
            zap_own_table(arena, e.frame(), base, lo, hi, sink);
        });
    }
}

/// Zap `[lo, hi)` of this space's own PTE table `t` (covering `base`). If
/// `t` borrows entries and accessors may cache them until the shootdown,
/// first take a hold on its backing (`borrow.rs`): the backing's last
/// mapper could otherwise free their frames before that.
fn zap_own_table(arena: &FrameArena, t: FrameId, base: u64, lo: u64, hi: u64, sink: &mut impl ZapSink) {
    if sink.shootdown_pending() {
        if let Some(b) = borrow::hold(arena, t, base) {
            sink.drop_table_later(b, base);
        }
    }
    if zap_entries(arena, t, base, lo, hi, |va, p| sink.zapped(va, p)) {
        sink.need_flush();
    }
}

/// Clear the non-empty entries (present, swap, migration) of PTE table `t` (which covers the 2 MiB at
/// `base`) inside `[lo, hi)`, under its lock, calling `f(va, old)` for each.
/// Frame metadata is prefetched a few entries ahead: the caller's `f`
/// touches it, and 512 unrelated metadata lines are 512 cache misses.
/// (An exit runs this over every table: the loop reads the locked table's
/// slots directly, without the guard's per-address checks.)
///
/// Borrowed entries (`borrow.rs`) hold nothing to release: they are cleared
/// without a call to `f`, and the result says whether there were any (a
/// translation of one may be cached: the caller's shootdown must run).
#[must_use]
pub(super) fn zap_entries(
    arena: &FrameArena,
    t: FrameId,
    base: u64,
    lo: u64,
    hi: u64,
    mut f: impl FnMut(u64, Pte),
) -> bool {
    debug_assert!(lo >= base && hi <= base + PTE_TABLE_SPAN && lo < hi);
    let _g = PteTableGuard::lock(arena, t, base);
    let (first, last) = (index(lo, 0), index(hi - 1, 0));
    let entry = |i: usize| Pte::from_raw(slot(arena, t, i).load(Ordering::Acquire));
    for i in first..(first + share::PREFETCH_AHEAD).min(last + 1) {
        share::prefetch_frames(arena, &[entry(i)]);
    }
    let mut borrowed = false;
    for i in first..=last {
        let mut p = entry(i);
        if p.is_none() {
            continue;
        }
        if p.is_writable() && !p.is_dirty() {
            // A thread writing through a lock-free fault (`set_access_flags`,
            // under the read lock that DONTNEED holds too) may set the dirty
            // bit of this very entry now: take the entry with an exchange,
            // so the dirtiness reaches the page (Linux's
            // `ptep_get_and_clear`). No other entry can change under us: the
            // lock-free path sets dirty only on a writable entry, and an
            // accessed bit lost here is harmless.
            p = Pte::from_raw(slot(arena, t, i).swap(0, Ordering::AcqRel));
        } else {
            slot(arena, t, i).store(0, Ordering::Release);
        }
        if p.is_borrowed() {
            borrowed = true;
            continue;
        }
        if i + share::PREFETCH_AHEAD <= last {
            share::prefetch_frames(arena, &[entry(i + share::PREFETCH_AHEAD)]);
        }
        f(base + i as u64 * 4096, p);
    }
    borrowed
}
