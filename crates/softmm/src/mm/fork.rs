//! fork (`dup_mmap` + `copy_page_range`) and exit (`exit_mmap`).

use super::change::Change;
use super::{ForkPolicy, Mm, MmInner, MmState};
use crate::error::{Error, Result};
use crate::notifier::Event;
use crate::pgtable::{share, Edit, PageTable, PteTableGuard, PTE_TABLE_SPAN};
use crate::phys::flags;
use crate::phys::{FrameArena, FrameId};
use crate::pte::Pte;
use crate::snaplog::Log;
use crate::stats::Counters;
use crate::sync::Ordering;
use crate::vma::{Backing, VmFlags, Vma};
use std::sync::Arc;

/// Fork `parent`. With `snap`, the child is a snapshot (`mm/snapshot.rs`):
/// it keeps every VMA as it is (lock, `DONTFORK` and `WIPEONFORK` flags
/// included, whose effects are a fork's, not a snapshot's), and `snap`
/// starts logging the parent's changes before its `mmap_lock` is released,
/// with the pages pinned now already in it (their pinners write them
/// without a fault).
pub(crate) fn do_fork(parent: &Arc<MmInner>, policy: ForkPolicy, snap: Option<&Arc<Log>>) -> Result<Mm> {
    let child = Mm::new(parent.machine.clone())?;
    let machine = &parent.machine;
    let snapshot = snap.is_some();
    let pins_seen = std::cell::RefCell::new(Vec::new());
    let mut pst = parent.state.write();
    let ppt = pst.pt.as_ref().ok_or(Error::Exited)?;
    let mut cst = child.inner.state.write();
    cst.heap = pst.heap; // the break is inherited (dup_mm); the locks are not
    if snapshot {
        cst.def_flags = pst.def_flags;
    }
    let mut flush = false;
    let mut result = Ok(());
    let mut last_span = None;
    let child_ref = child.inner.mm_ref();
    // Pins are taken under the mmap_lock held for reading: none appears
    // while we hold it for writing.
    let pinned = parent.has_pinned.load(std::sync::atomic::Ordering::Relaxed);
    for v in pst.vmas.iter() {
        // MADV_DONTFORK: the child does not get the VMA at all.
        if v.flags.contains(VmFlags::DONTCOPY) && !snapshot {
            continue;
        }
        // The child's VMA is linked into the anon_vmas before any entry is
        // copied: a reverse-map walk relies on it (`rmap::rmap_walk`).
        let mut cv = match v.flags.contains(VmFlags::WIPEONFORK) && !snapshot {
            // MADV_WIPEONFORK: a fresh private VMA, zero-filled on demand.
            true => v.wiped_copy(&child_ref),
            false => v.fork_copy(&machine.anon_vmas, || machine.new_id(), &child_ref),
        };
        if snapshot {
            cv.flags = v.flags;
        }
        if copies(v, snapshot) {
            // Linux's copy_page_range: the parent's entries lose write.
            // A bracket per VMA whose entries lose write, in address
            // order; the shootdown for them all comes once, below (as
            // Linux's `dup_mmap` flushes after every `copy_page_range`):
            // nothing is freed, and secondary MMUs dropped their mappings
            // at the start.
            let change = Change::open(parent, Some(&pst), v.start, v.end, Some(Event::Protection));
            let cpt = cst.pt.as_ref().ok_or(Error::Exited)?;
            let copy = CopyRange {
                parent,
                ppt,
                cpt,
                child_anon: anon_id(&cv),
                pinned,
                edit: change.edit(),
                snapshot,
                pins_seen: &pins_seen,
            };
            result = match policy {
                ForkPolicy::CopyTables => copy.copy_page_range(v, v.start, v.end, &mut flush),
                ForkPolicy::SharedTables => copy.share_page_range(&pst, v, &mut last_span, &mut flush),
            };
        }
        // A VMA whose copy failed half-way still goes in, so that dropping
        // the child below releases what was copied.
        cst.vmas.insert(cv);
        if result.is_err() {
            break;
        }
    }
    drop(cst);
    // Write-protected parent entries: no accessor may keep writing through
    // a stale writable translation into a now shared frame.
    let mut change = Change::open(parent, Some(&pst), 0, 0, None);
    if flush || result.is_err() {
        change.need_flush();
    }
    drop(change);
    if let Err(e) = result {
        drop(pst);
        drop(child);
        return Err(e);
    }
    if let Some(log) = snap {
        for va in pins_seen.into_inner() {
            log.pages_changed(va, va + 4096);
        }
        parent.snaps.add(log);
        pst.vmas.set_logs(parent.snaps.clone());
    }
    drop(pst);
    Counters::bump(&machine.counters.forks);
    Ok(child)
}

/// Linux's `vma_needs_copy`: shared memory and private memory that was
/// never written (no anon_vma) are refaulted by the child instead; a VMA
/// the child does not get, or gets wiped, is not copied either.
fn needs_copy(v: &Vma) -> bool {
    let skipped = v.flags.contains(VmFlags::DONTCOPY) || v.flags.contains(VmFlags::WIPEONFORK);
    !skipped && has_anon_pages(v)
}

/// `needs_copy`, or for a snapshot (which ignores the fork-only flags)
/// whether `v` may map anonymous pages.
fn copies(v: &Vma, snapshot: bool) -> bool {
    if snapshot {
        has_anon_pages(v)
    } else {
        needs_copy(v)
    }
}

/// A private VMA with an anon_vma: the only kind whose entries a fork
/// (or a restore, `mm/snapshot.rs`) passes on.
pub(crate) fn has_anon_pages(v: &Vma) -> bool {
    matches!(&v.backing, Backing::Anon(l) if l.get().0 != 0)
}

/// The child's own anon_vma id for `v` (0 when it has none).
fn anon_id(v: &Vma) -> u64 {
    match &v.backing {
        Backing::Anon(l) => l.get().0,
        Backing::Shm(_) => 0,
    }
}

/// What copying one VMA's entries into the child needs.
struct CopyRange<'a> {
    parent: &'a MmInner,
    ppt: &'a PageTable,
    cpt: &'a PageTable,
    /// The child VMA's own anon_vma: the rmap owner of pages copied for it.
    child_anon: u64,
    /// The parent ever pinned a page (`MmInner::has_pinned`).
    pinned: bool,
    /// The parent's change the entries are written under (the child is
    /// not live yet: nothing caches its translations).
    edit: Edit,
    /// The child is a snapshot (`copies`).
    snapshot: bool,
    /// Addresses of the pinned pages copied for the child.
    pins_seen: &'a std::cell::RefCell<Vec<u64>>,
}

impl CopyRange<'_> {
    /// `SharedTables`: share every PTE table of `v` whose whole 2 MiB span
    /// maps only memory fork would copy (private, with an anon_vma) and no
    /// pinned page; copy the entries of the others (a table mixed with
    /// shared or never-written memory, whose PTEs the child must not see,
    /// or one whose pinned pages the child must get copies of). `last`
    /// remembers the decision for the last span: two VMAs in one span must
    /// get the same one (an unpin between them could change the answer).
    fn share_page_range(&self, pst: &MmState, v: &Vma, last: &mut Option<(u64, bool)>, flush: &mut bool) -> Result<()> {
        let arena = self.parent.arena();
        let mut base = v.start & !(PTE_TABLE_SPAN - 1);
        while base < v.end {
            let span_end = base + PTE_TABLE_SPAN;
            // VMAs come in address order, so a span can only repeat as the
            // last one decided.
            let share = match *last {
                Some((b, share)) if b == base => share,
                _ => {
                    let share = pst.vmas.overlapping(base, span_end).all(|o| copies(o, self.snapshot))
                        && !(self.pinned && table_has_pins(arena, self.ppt, base));
                    if share {
                        let (did, was_writable) =
                            share::share_table(arena, self.ppt, self.cpt, base, &self.parent.machine.counters)?;
                        *flush |= did && was_writable;
                    }
                    *last = Some((base, share));
                    share
                }
            };
            if !share {
                self.copy_page_range(v, v.start.max(base), v.end.min(span_end), flush)?;
            }
            base = span_end;
        }
        Ok(())
    }

    /// Copy the entries of `[start, end)` (private memory of `v`) into the
    /// child's tables, write-protecting both sides; a maybe-pinned page is
    /// copied for the child instead (`copy_present_page`).
    fn copy_page_range(&self, v: &Vma, start: u64, end: u64, flush: &mut bool) -> Result<()> {
        let (parent, arena) = (self.parent, self.parent.arena());
        let mut result = Ok(());
        self.ppt.for_each_pte_table(arena, start, end, |ptable, lo, hi| {
            if result.is_err() {
                return;
            }
            let base = lo & !(PTE_TABLE_SPAN - 1);
            let mut added = 0;
            let ctable = self.cpt.pte_table_alloc(arena, lo, &mut added);
            parent.machine.counters.page_tables.fetch_add(added as u64, Ordering::Relaxed);
            let ctable = match ctable {
                Ok(t) => t,
                Err(e) => {
                    result = Err(e);
                    return;
                }
            };
            let mut pg = self.ppt.lock(arena, ptable, base, self.edit);
            let mut cg = self.cpt.lock(arena, ctable, base, self.edit);
            // Two instances of the entry loop: the one for spaces that never
            // pinned has no pin test at all (fork without pins costs what it
            // did before pins existed).
            result = if self.pinned {
                self.copy_pte_range::<true>(v, &mut pg, &mut cg, lo, hi, flush)
            } else {
                self.copy_pte_range::<false>(v, &mut pg, &mut cg, lo, hi, flush)
            };
        });
        result
    }

    /// Linux's `copy_pte_range`: the entries of `[lo, hi)` of one table.
    /// `PINNED`: the parent may hold pins (look for them).
    fn copy_pte_range<const PINNED: bool>(
        &self,
        v: &Vma,
        pg: &mut PteTableGuard<'_>,
        cg: &mut PteTableGuard<'_>,
        lo: u64,
        hi: u64,
        flush: &mut bool,
    ) -> Result<()> {
        let arena = self.parent.arena();
        let mut va = lo;
        while va < hi {
            let pte = pg.get(va);
            if pte.is_swap() {
                // Both spaces now name the slot (Linux's swap_duplicate).
                if let Some(swap) = self.parent.machine.reclaim.swap.as_ref() {
                    swap.dup(pte.swap_slot());
                }
                cg.set(va, pte);
            } else if PINNED && pte.is_present() && is_pinned_anon(arena, pte.frame()) {
                let (cpte, f) = self.copy_present_page(v, va, pte)?;
                self.pins_seen.borrow_mut().push(va);
                cg.set(va, cpte);
                arena.meta(f).set_flags(flags::ANON);
            } else if pte.is_borrowed() {
                // The child's entry owns what the parent's borrows.
                arena.meta(pte.frame()).add_counts(1, 1);
                cg.set(va, pte.without(Pte::ACCESSED | Pte::BORROWED));
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
        Ok(())
    }

    /// The child's entry for a pinned page at `va`: a copy of it in a new
    /// frame of the child's own (Linux's `copy_present_page`), so that the
    /// parent's entry keeps write and the pinner keeps seeing the parent's
    /// writes. Called under both page-table locks; the caller marks the
    /// frame anonymous once it has installed the entry, as a fault does.
    fn copy_present_page(&self, v: &Vma, va: u64, pte: Pte) -> Result<(Pte, FrameId)> {
        let arena = self.parent.arena();
        let f = arena.alloc(false, flags::DIRTY)?;
        arena.copy_frame(f, pte.frame());
        let m = arena.meta(f);
        m.owner.store(self.child_anon, Ordering::Relaxed);
        m.index.store(v.pgoff_of(va), Ordering::Relaxed);
        // Add, never set (see `fault::new_anon_frame`).
        m.add_counts(0, 1);
        let mut bits = Pte::USER | Pte::DIRTY;
        if v.prot.writable() {
            bits |= Pte::WRITE;
        }
        Counters::bump(&self.parent.machine.counters.fork_pinned_copies);
        Ok((Pte::new(f, bits), f))
    }
}

/// A pinned anonymous page, which fork copies for the child (a private
/// file mapping's page-cache page is shared as it is, as Linux's
/// `copy_present_pte` shares every page that is not anonymous).
fn is_pinned_anon(arena: &FrameArena, f: FrameId) -> bool {
    let m = arena.meta(f);
    m.pins() > 0 && m.has(flags::ANON)
}

/// Whether any page the PTE table covering `base` maps is pinned. Under
/// the parent's `mmap_lock` held for writing, so no pin appears meanwhile.
fn table_has_pins(arena: &FrameArena, pt: &PageTable, base: u64) -> bool {
    let Some(t) = pt.pte_table(arena, base) else { return false };
    (0..crate::pgtable::PTRS_PER_TABLE).any(|i| {
        let p = Pte::from_raw(crate::pgtable::slot(arena, t, i).load(Ordering::Acquire));
        p.is_present() && !p.is_zero_frame() && arena.meta(p.frame()).pins() > 0
    })
}

/// Tear down an address space: drop or zap every PTE table (a shared
/// one only loses this space's reference), then free the tree.
pub(crate) fn do_exit(mm: &MmInner) {
    let mut st = mm.state.write();
    let Some(pt) = st.pt.take() else { return };
    mm.root.store(0, Ordering::Release);
    let arena = mm.arena();
    let c = &mm.machine.counters;
    let vmas = std::mem::take(&mut st.vmas);
    let mut change = Change::open(mm, None, 0, crate::pgtable::TASK_SIZE, Some(Event::Release)).write_locked();
    change.zap_all(&pt);
    let freed = pt.destroy(arena, c);
    c.page_tables.fetch_sub(freed as u64, Ordering::Relaxed);
    change.need_flush();
    drop(change);
    // After the shootdown: a waiter's reference may be its frame's last.
    let m = &mm.machine;
    crate::vcache::release(&m.vcache_clients(), &mm.vcache_users, arena, mm.id);
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
