//! fork (`dup_mmap` + `copy_page_range`) and exit (`exit_mmap`).

use super::gather::Gather;
use super::mmap::zap_range;
use super::{ForkPolicy, Mm, MmInner, MmState};
use crate::error::{Error, Result};
use crate::pgtable::{PageTable, PTE_TABLE_SPAN};
use crate::phys::FrameArena;
use crate::pte::Pte;
use crate::stats::Counters;
use crate::sync::Ordering;
use crate::vma::{Backing, Vma};
use std::sync::Arc;

pub(crate) fn do_fork(parent: &Arc<MmInner>, policy: ForkPolicy) -> Result<Mm> {
    let ForkPolicy::CopyTables = policy;
    let child = Mm::new(parent.machine.clone())?;
    let machine = &parent.machine;
    let arena = parent.arena();
    let pst = parent.state.write();
    let ppt = pst.pt.as_ref().ok_or(Error::Exited)?;
    let mut cst = child.inner.state.write();
    let mut flush = false;
    let mut result = Ok(());
    for v in pst.vmas.iter() {
        let cv = v.fork_copy(|| machine.new_id());
        // Linux's vma_needs_copy: shared memory and private memory that was
        // never written (no anon_vma) are refaulted by the child instead.
        let copy = matches!(&v.backing, Backing::Anon(l) if l.get().0 != 0);
        if copy {
            let cpt = cst.pt.as_ref().ok_or(Error::Exited)?;
            result = copy_page_range(parent, arena, ppt, cpt, v, &mut flush);
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

/// Copy the entries of private VMA `v` into the child's tables,
/// write-protecting both sides.
fn copy_page_range(
    parent: &MmInner,
    arena: &FrameArena,
    ppt: &PageTable,
    cpt: &PageTable,
    v: &Vma,
    flush: &mut bool,
) -> Result<()> {
    let mut result = Ok(());
    ppt.for_each_pte_table(arena, v.start, v.end, |ptable, lo, hi| {
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
            if pte.is_present() {
                let mut cpte = pte.without(Pte::ACCESSED);
                if !pte.is_zero_frame() {
                    if pte.is_writable() {
                        pg.set(va, pte.without(Pte::WRITE));
                        cpte = cpte.without(Pte::WRITE);
                        *flush = true;
                    }
                    let m = arena.meta(pte.frame());
                    m.refcount.fetch_add(1, Ordering::AcqRel);
                    m.mapcount.fetch_add(1, Ordering::AcqRel);
                }
                cg.set(va, cpte);
            }
            va += 4096;
        }
    });
    result
}

/// Tear down an address space: zap every VMA, free every page table.
pub(crate) fn do_exit(mm: &MmInner) {
    let mut st = mm.state.write();
    let Some(pt) = st.pt.take() else { return };
    let arena = mm.arena();
    let mut gather = Gather::default();
    for v in st.vmas.iter() {
        zap_range(arena, &pt, v.start, v.end, &mut gather);
    }
    let freed = pt.destroy(arena);
    mm.machine.counters.page_tables.fetch_sub(freed as u64, Ordering::Relaxed);
    let vmas = std::mem::take(&mut st.vmas);
    gather.need_flush();
    gather.finish(mm, None);
    drop(st);
    drop(vmas);
}

impl MmState {
    /// Whether the address space has exited.
    pub(crate) fn exited(&self) -> bool {
        self.pt.is_none()
    }
}
