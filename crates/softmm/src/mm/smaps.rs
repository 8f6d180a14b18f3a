//! smaps: per-VMA counters with `/proc/PID/smaps` meanings.
//!
//! Frame counts are physical (one per table entry); when PTE tables are
//! shared anywhere, a frame's *logical* mapcount and refcount add, for
//! every table mapping it, that table's sharers beyond the first, which is
//! what the same history under `CopyTables` (and on Linux) would have
//! counted. A frame may be mapped through a shared table at another
//! address than here (a region moved by `mremap`, then forked), so those
//! tables are found by walking every live space's tables once per call
//! ([`Sharers`]), not by looking at the same address elsewhere.

use super::{MmInner, MmState};
use crate::phys::{FrameArena, FrameId, PAGE_SIZE};
use crate::stats::{Smaps, SmapsAcc};
use std::collections::HashMap;

/// The mappings the physical counts miss, for one smaps call or for many
/// (`Mm::smaps_many`).
pub(crate) struct Sharers {
    /// Whether any PTE table is shared: if not, physical counts are the
    /// logical ones.
    sharing: bool,
    /// Page-table roots of every live space.
    roots: Vec<FrameId>,
    /// Per frame, the mappings the physical counts miss, over every table
    /// of every live space: gathered once, when a first frame needs it.
    extras: Option<HashMap<FrameId, u32>>,
    /// Tables whose entries were read into `extras` (tests).
    pub(crate) tables_scanned: u64,
}

impl Sharers {
    /// The sharers as the machine of `mm` has them now.
    pub(crate) fn new(mm: &MmInner) -> Sharers {
        let sharing = mm.machine.counters.shared_tables.load(crate::sync::Ordering::Relaxed) > 0;
        let roots = if sharing {
            let mms = mm.machine.live_mms();
            mms.iter().map(|m| FrameId(m.root.load(crate::sync::Ordering::Acquire))).filter(|r| r.0 != 0).collect()
        } else {
            Vec::new()
        };
        Sharers { sharing, roots, extras: None, tables_scanned: 0 }
    }

    /// smaps of `[start, end)` of `mm`.
    pub(crate) fn vma_smaps(&mut self, mm: &MmInner, st: &MmState, start: u64, end: u64) -> Smaps {
        let mut acc = SmapsAcc::default();
        let arena = mm.arena();
        let Some(pt) = &st.pt else { return acc.finish(start, end) };
        // A shared object's swapped pages are named by its index, not by
        // PTEs: Linux's smaps counts them in every VMA mapping them
        // (shmem_swapped).
        if let Some(v) = st.vmas.find(start) {
            if let crate::vma::Backing::Shm(obj) = &v.backing {
                let (lo, hi) = (v.pgoff, v.pgoff + ((end - start) >> 12));
                for _ in obj.swapped_pages().into_iter().filter(|&(p, _)| p >= lo && p < hi) {
                    acc.swapped();
                }
            }
        }
        let sharing = self.sharing;
        pt.for_each_pte_table(arena, start, end, |table, lo, hi| {
            let base = lo & !(crate::pgtable::PTE_TABLE_SPAN - 1);
            let g = pt.lock_read(arena, table, base);
            let mut va = lo;
            while va < hi {
                let pte = g.get(va);
                if pte.is_swap() {
                    acc.swapped();
                } else if let Some(f) = pte.page_frame() {
                    // A migration entry counts as the page it stands for, as
                    // Linux's smaps_pte_entry counts it.
                    let m = arena.meta(f);
                    let extra = self.extra(arena, f);
                    debug_assert!(!pte.is_borrowed() || sharing, "a borrowed entry while no table is shared");
                    let dirty = pte.is_dirty() || m.has(crate::phys::flags::DIRTY);
                    let anon = m.has(crate::phys::flags::ANON);
                    acc.page(m.refcount() + extra, m.mapcount() + extra, anon, dirty);
                    let referenced = pte.is_accessed() || m.has(crate::phys::flags::REFERENCED);
                    acc.page_marks(referenced, anon && !dirty && m.has(crate::phys::flags::LAZYFREE));
                }
                va += PAGE_SIZE as u64;
            }
        });
        let mut s = acc.finish(start, end);
        // Linux adds each page's PSS to `pss_locked` in a VM_LOCKED VMA.
        if st.vmas.find(start).is_some_and(|v| v.flags.contains(crate::vma::VmFlags::LOCKED)) {
            s.locked = s.pss;
        }
        s
    }

    /// For frame `f`: the mappings the physical counts miss.
    fn extra(&mut self, arena: &FrameArena, f: FrameId) -> u32 {
        if !self.sharing {
            return 0;
        }
        let extras = match &mut self.extras {
            Some(e) => e,
            none => {
                let mut extras = HashMap::new();
                for t in crate::pgtable::share::all_tables(arena, &self.roots) {
                    // Only a shared table or one that borrows entries maps a
                    // frame more often than its entries own it.
                    if crate::pgtable::borrow::mappers_of(arena, t) <= 1
                        && crate::pgtable::borrow::backing(arena, t).is_none()
                    {
                        continue;
                    }
                    self.tables_scanned += 1;
                    for i in 0..crate::pgtable::PTRS_PER_TABLE {
                        if let Some((f, n)) = table_extra(arena, t, i).filter(|e| e.1 > 0) {
                            *extras.entry(f).or_insert(0) += n;
                        }
                    }
                }
                none.insert(extras)
            }
        };
        extras.get(&f).copied().unwrap_or(0)
    }
}

/// Entry `i` of table `t`, if it maps a frame: that frame, and the mappings
/// of it the physical counts miss there. The entry stands for one mapping
/// per address space mapping the table (its mappers); the physical counts
/// have one for an entry that owns its frame and none for one that borrows
/// it (`pgtable/borrow.rs`).
fn table_extra(arena: &FrameArena, t: FrameId, i: usize) -> Option<(FrameId, u32)> {
    let e = crate::pgtable::borrow::entry(arena, t, i);
    let f = e.page_frame()?;
    // Read after the entry, as only entries that map a frame need it.
    let mappers = crate::pgtable::borrow::mappers_of(arena, t);
    Some((f, mappers.saturating_sub(u32::from(!e.is_borrowed()))))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Sharers;
    use crate::{Config, ForkPolicy, Machine, MapKind, Placement, Prot};

    /// smaps of every space of a forked tree: the tables that share or
    /// borrow are read once for all of them (each child's copy that borrows
    /// from the parent's table, not the parent's own), and the figures are
    /// those of the one-call path.
    #[test]
    // Whole machines forking many times: minutes under Miri, and no unsafe
    // code of their own (the release suite runs them).
    #[cfg_attr(miri, ignore)]
    fn many_spaces_read_each_table_once() {
        let m = Machine::new(Config { arena_bytes: 64 << 20, prezero: false, ..Config::default() }).unwrap();
        let parent = m.new_mm().unwrap();
        let base = 0x1000_0000;
        parent.mmap(base, 64 << 10, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        parent.fill(base, 64 << 10, 7).unwrap();
        let mut spaces = vec![parent];
        for c in 0..30u64 {
            let child = spaces[0].fork_with(ForkPolicy::SharedTables).unwrap();
            child.write(base + (c % 16) * 4096, b"c").unwrap();
            spaces.push(child);
        }
        let mut many = Sharers::new(&spaces[0].inner);
        for mm in &spaces {
            let st = mm.inner.state.read();
            let together = many.vma_smaps(&mm.inner, &st, base, base + (64 << 10));
            let alone = Sharers::new(&mm.inner).vma_smaps(&mm.inner, &st, base, base + (64 << 10));
            assert_eq!(together, alone);
        }
        assert_eq!(many.tables_scanned, 30);
    }
}
