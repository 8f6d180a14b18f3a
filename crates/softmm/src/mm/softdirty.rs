//! Dirty tracking on its own (Linux's soft-dirty: `/proc/PID/clear_refs`
//! writing 4, then pagemap): `Mm::dirty_pages` lists the pages changed
//! since the latest snapshot was taken or restored, or since
//! `Mm::clear_dirty` cleared them (the space's dirty log, `snaplog.rs`).
//!
//! A write is seen only when it faults: a snapshot write-protects every
//! private page (fork's COW), and `clear_dirty` write-protects the present
//! writable entries of its range, as Linux's `clear_soft_dirty` does, so
//! the next write to each faults and is logged.

use super::change::Change;
use super::{Mm, MmInner};
use crate::error::{Error, Result};
use crate::notifier::Event;
use crate::pgtable::{borrow, PTE_TABLE_SPAN};
use crate::pte::Pte;

/// `Mm::clear_dirty`: under the `mmap_lock` for writing (no fault logs a
/// page between the write-protection and the log's forgetting), after the
/// shootdown (no write goes through a stale writable translation after).
fn clear_dirty(mm: &MmInner, lo: u64, hi: u64) -> Result<()> {
    if lo % 4096 != 0 {
        return Err(Error::Misaligned { what: "clear_dirty address", value: lo });
    }
    // Page-aligned, and no further than any mapping can reach.
    let hi = hi.min(crate::pgtable::TASK_SIZE).next_multiple_of(4096);
    if hi <= lo {
        return Ok(());
    }
    let st = mm.state.write();
    let pt = st.pt.as_ref().ok_or(Error::Exited)?;
    let log = mm.snaps.dirty_log();
    let arena = mm.arena();
    let mut change = Change::open(mm, Some(&st), lo, hi, Some(Event::Protection));
    pt.for_each_pmd(arena, lo, hi, |_, pmd, a, b| {
        // A shared table's entries are write-protected at the PMD level.
        if !pmd.is_writable() {
            return;
        }
        let mut g = pt.lock(arena, pmd.frame(), a & !(PTE_TABLE_SPAN - 1), change.edit());
        let mut va = a;
        while va < b {
            let mut pte = g.get(va);
            if pte.is_present() && pte.is_writable() && pte.is_borrowed() {
                borrow::own_entry(arena, &mut g, va);
                pte = g.get(va);
            }
            // Lock-free setters may add accessed and dirty bits meanwhile.
            while pte.is_present() && pte.is_writable() {
                match g.cas(va, pte, pte.without(Pte::WRITE)) {
                    Ok(_) => {
                        change.need_flush();
                        break;
                    }
                    Err(now) => pte = now,
                }
            }
            va += 4096;
        }
    });
    drop(change);
    mm.snaps.forget(&log, lo, hi);
    Ok(())
}

impl Mm {
    /// The pages of `[lo, hi)` changed (written, faulted in, unmapped,
    /// remapped) since the latest snapshot of this space was taken or
    /// restored, or since [`Mm::clear_dirty`] cleared them, in address
    /// order. `EINVAL` before the first snapshot or `clear_dirty`.
    pub fn dirty_pages(&self, lo: u64, hi: u64) -> Result<Vec<u64>> {
        let log =
            self.inner.snaps.dirty().ok_or(Error::Invalid("no dirty tracking: no snapshot or clear_dirty yet"))?;
        Ok(super::snapshot::pages_in(&self.inner.snaps, &log, lo, hi))
    }

    /// Mark the pages of `[lo, hi)` clean for [`Mm::dirty_pages`] (Linux's
    /// `clear_refs` with 4, for a range): their writable entries are
    /// write-protected, so the next write to each faults and is seen. The
    /// first call starts dirty tracking without a snapshot. `EINVAL` for
    /// a misaligned `lo`; nothing for an empty range.
    pub fn clear_dirty(&self, lo: u64, hi: u64) -> Result<()> {
        clear_dirty(&self.inner, lo, hi)
    }
}
