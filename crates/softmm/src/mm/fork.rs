//! fork (`dup_mmap` + `copy_page_range`) and exit (`exit_mmap`).

use super::gather::Gather;
use super::mmap::zap_pte;
use super::{ForkPolicy, Mm, MmInner, MmState};
use crate::error::{Error, Result};
use crate::pgtable::{share, PageTable, PTE_TABLE_SPAN};
use crate::phys::FrameArena;
use crate::pte::Pte;
use crate::stats::Counters;
use crate::sync::Ordering;
use crate::vma::{Backing, Vma};
use std::sync::Arc;

pub(crate) fn do_fork(parent: &Arc<MmInner>, policy: ForkPolicy) -> Result<Mm> {
    let child = Mm::new(parent.machine.clone())?;
    let machine = &parent.machine;
    let arena = parent.arena();
    let pst = parent.state.write();
    let ppt = pst.pt.as_ref().ok_or(Error::Exited)?;
    let mut cst = child.inner.state.write();
    let mut flush = false;
    let mut result = Ok(());
    let mut shared_spans: Vec<u64> = Vec::new();
    let child_ref = child.inner.mm_ref();
    for v in pst.vmas.iter() {
        // The child's VMA is linked into the anon_vmas before any entry is
        // copied: a reverse-map walk relies on it (`rmap::rmap_walk`).
        let cv = v.fork_copy(&machine.anon_vmas, || machine.new_id(), &child_ref);
        if needs_copy(v) {
            // Linux's copy_page_range: the parent's entries lose write.
            let inv = parent.notifiers.start_blocking(v.start, v.end, crate::notifier::Event::Protection);
            let cpt = cst.pt.as_ref().ok_or(Error::Exited)?;
            result = match policy {
                ForkPolicy::CopyTables => copy_page_range(parent, arena, ppt, cpt, v.start, v.end, &mut flush),
                ForkPolicy::SharedTables => share_page_range(parent, &pst, ppt, cpt, v, &mut shared_spans, &mut flush),
            };
            parent.notifiers.end(inv);
        }
        // A VMA whose copy failed half-way still goes in, so that dropping
        // the child below releases what was copied.
        cst.vmas.insert(cv);
        if result.is_err() {
            break;
        }
    }
    drop(cst);
    if let Err(e) = result {
        drop(pst);
        parent.tlb.flush(None);
        drop(child);
        return Err(e);
    }
    if flush {
        // Write-protected parent entries: no accessor may keep writing
        // through a stale writable translation into a now shared frame.
        if parent.tlb.flush(None) {
            Counters::bump(&machine.counters.tlb_flushes);
        }
    }
    drop(pst);
    Counters::bump(&machine.counters.forks);
    Ok(child)
}

/// Linux's `vma_needs_copy`: shared memory and private memory that was
/// never written (no anon_vma) are refaulted by the child instead.
fn needs_copy(v: &Vma) -> bool {
    matches!(&v.backing, Backing::Anon(l) if l.get().0 != 0)
}

/// `SharedTables`: share every PTE table of `v` whose whole 2 MiB span maps
/// only memory fork would copy (private, with an anon_vma); copy the
/// entries of the others (a table mixed with shared or never-written
/// memory, whose PTEs the child must not see). `shared` remembers spans
/// already shared through an earlier VMA.
fn share_page_range(
    parent: &MmInner,
    pst: &MmState,
    ppt: &PageTable,
    cpt: &PageTable,
    v: &Vma,
    shared: &mut Vec<u64>,
    flush: &mut bool,
) -> Result<()> {
    let arena = parent.arena();
    let mut base = v.start & !(PTE_TABLE_SPAN - 1);
    while base < v.end {
        let span_end = base + PTE_TABLE_SPAN;
        let eligible = pst.vmas.overlapping(base, span_end).all(needs_copy);
        if eligible {
            // VMAs come in address order, so a span can only repeat as the
            // last one shared (two VMAs in one 2 MiB span).
            if shared.last() != Some(&base) {
                let (did, was_writable) = share::share_table(arena, ppt, cpt, base, &parent.machine.counters)?;
                *flush |= did && was_writable;
                shared.push(base);
            }
        } else {
            copy_page_range(parent, arena, ppt, cpt, v.start.max(base), v.end.min(span_end), flush)?;
        }
        base = span_end;
    }
    Ok(())
}

/// Copy the entries of `[start, end)` (private memory) into the child's
/// tables, write-protecting both sides.
fn copy_page_range(
    parent: &MmInner,
    arena: &FrameArena,
    ppt: &PageTable,
    cpt: &PageTable,
    start: u64,
    end: u64,
    flush: &mut bool,
) -> Result<()> {
    let mut result = Ok(());
    ppt.for_each_pte_table(arena, start, end, |ptable, lo, hi| {
        if result.is_err() {
            return;
        }
        let base = lo & !(PTE_TABLE_SPAN - 1);
        let mut added = 0;
        let ctable = cpt.pte_table_alloc(arena, lo, &mut added);
        parent.machine.counters.page_tables.fetch_add(added as u64, Ordering::Relaxed);
        let ctable = match ctable {
            Ok(t) => t,
            Err(e) => {
                result = Err(e);
                return;
            }
        };
        let mut pg = ppt.lock(arena, ptable, base);
        let mut cg = cpt.lock(arena, ctable, base);
        let mut va = lo;
        while va < hi {
            let pte = pg.get(va);
            if pte.is_swap() {
                // Both spaces now name the slot (Linux's swap_duplicate).
                if let Some(swap) = parent.machine.reclaim.swap.as_ref() {
                    swap.dup(pte.swap_slot());
                }
                cg.set(va, pte);
            } else if let Some(f) = pte.counted_frame() {
                // Present, or a migration entry (which stands for one).
                let mut cpte = pte.without(Pte::ACCESSED);
                if pte.is_writable() {
                    pg.set(va, pte.without(Pte::WRITE));
                    cpte = cpte.without(Pte::WRITE);
                    *flush = true;
                }
                arena.meta(f).add_counts(1, 1);
                cg.set(va, cpte);
            } else if pte.is_present() {
                cg.set(va, pte.without(Pte::ACCESSED)); // the zero frame
            }
            va += 4096;
        }
    });
    result
}

/// Tear down an address space: drop or zap every PTE table (a shared
/// one only loses this space's reference), then free the tree.
pub(crate) fn do_exit(mm: &MmInner) {
    let mut st = mm.state.write();
    let Some(pt) = st.pt.take() else { return };
    mm.root.store(0, Ordering::Release);
    let arena = mm.arena();
    let c = &mm.machine.counters;
    let mut gather = Gather::for_write_locked(mm);
    let inv = mm.notifiers.start_blocking(0, crate::pgtable::TASK_SIZE, crate::notifier::Event::Release);
    pt.for_each_pmd(arena, 0, crate::pgtable::TASK_SIZE, |s, e, lo, _| {
        let base = lo & !(PTE_TABLE_SPAN - 1);
        if !e.is_writable() {
            share::drop_shared(arena, s, e, base, c, |_, p| zap_pte(&mm.machine, p, &mut gather));
            return;
        }
        let end = base + PTE_TABLE_SPAN;
        crate::pgtable::zap_entries(arena, e.frame(), base, base, end, |_, p| zap_pte(&mm.machine, p, &mut gather));
    });
    let freed = pt.destroy(arena);
    c.page_tables.fetch_sub(freed as u64, Ordering::Relaxed);
    crate::futex::invalidate(mm, None, 0, crate::pgtable::TASK_SIZE);
    let vmas = std::mem::take(&mut st.vmas);
    gather.need_flush();
    gather.finish(mm, None);
    mm.notifiers.end(inv);
    mm.notifiers.release();
    drop(st);
    drop(vmas);
}

impl MmState {
    /// Whether the address space has exited.
    pub(crate) fn exited(&self) -> bool {
        self.pt.is_none()
    }
}
