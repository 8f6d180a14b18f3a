//! What madvise asks of reclaim besides `reclaim_pages` (`scan.rs`):
//! `MADV_WILLNEED`'s swap-in and `MADV_REMOVE`'s hole punch in shared
//! memory.

use crate::machine::MachineInner;
use crate::mm::{MmInner, MmState};
use crate::notifier::Event;
use crate::phys::PAGE_SIZE;
use crate::shm::{ShmObject, ShmPage};
use crate::vma::{Backing, Vma};
use std::sync::Arc;

/// `MADV_WILLNEED` over `[lo, hi)` of `v` (Linux's `swapin_walk_ops` and
/// `shmem_swapin_range`): swapped-out private pages are read into the swap
/// cache, where their next fault finds them, and swapped-out pages of a
/// shared object (or of the file a private mapping maps, where it has no
/// copy) come back into its index. Failures are ignored: it is a
/// hint, and the fault reads the page itself.
pub(crate) fn swapin_range(mm: &MmInner, st: &MmState, v: &Vma, lo: u64, hi: u64) {
    let Some(pt) = st.pt.as_ref() else { return };
    for va in (lo..hi).step_by(PAGE_SIZE) {
        match &v.backing {
            Backing::Anon(_) => {
                let pte = pt.follow_pte(mm.arena(), va);
                if pte.is_swap() {
                    if let Ok(f) = super::swapin::swap_in(mm, v, va, pte.swap_slot()) {
                        mm.arena().put(f); // the swap cache keeps it
                    }
                } else if let (true, Some(obj)) = (pte.is_none(), v.private_file()) {
                    // A private file mapping's page not copied: the file's.
                    let pgoff = v.pgoff_of(va);
                    if let Some(slot) = obj.swapped(pgoff) {
                        let _ = obj.swap_in(pgoff, slot, va);
                    }
                }
            }
            Backing::Shm(link) => {
                let obj: &Arc<ShmObject> = link;
                let pgoff = v.pgoff_of(va);
                if let Some(slot) = obj.swapped(pgoff) {
                    let _ = obj.swap_in(pgoff, slot, va);
                }
            }
        }
    }
}

/// Punch `n` pages from `pgoff` out of `obj` (`shmem_fallocate` with
/// `FALLOC_FL_PUNCH_HOLE`): each page leaves the index first, so a new
/// fault finds a zero page, then every mapping of it goes, and its frame
/// or slot is released.
pub(crate) fn punch_shm(m: &MachineInner, obj: &Arc<ShmObject>, pgoff: u64, n: u64) -> crate::error::Result<()> {
    drop_pages(m, obj, obj.punch(pgoff, n)?);
    Ok(())
}

/// Unmap pages already out of `obj`'s index from every mapping, then drop
/// the index's references (the end of a hole punch and of a truncation,
/// Linux's `truncate_inode_pages` after `unmap_mapping_range`).
pub(crate) fn drop_pages(m: &MachineInner, obj: &Arc<ShmObject>, pages: impl IntoIterator<Item = (u64, ShmPage)>) {
    for (p, page) in pages {
        match page {
            ShmPage::Absent => {}
            ShmPage::Swapped(slot) => {
                if let Some(swap) = m.reclaim.swap.as_ref() {
                    swap.put(slot);
                }
            }
            ShmPage::Frame(f) => {
                let meta = m.arena.meta(f);
                // Swap-out and migration of the page hold its lock.
                while !meta.try_lock() {
                    meta.wait_unlocked();
                }
                let (unmapped, _, _) = super::shm::unmap_everywhere(m, obj, f, p, false, Event::Clear);
                if unmapped > 0 {
                    meta.sub_counts(unmapped, unmapped);
                }
                meta.unlock();
                m.arena.put(f); // the index's reference
            }
        }
    }
}
