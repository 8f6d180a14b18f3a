//! mremap: resize a mapping in place or move it (Linux's `mm/mremap.c`).
//!
//! A move inserts the new VMA (same backing, same page offset: an
//! anonymous page keeps its `index`, and the reverse map finds it through
//! the VMA's `pgoff`, as Linux's does), moves the page-table entries
//! (`PageTable::move_ptes`: frames, swap and migration entries move, no
//! page is copied), then unmaps the old range, unless `MREMAP_DONTUNMAP`
//! leaves it mapped and empty.

use super::args::RemapFlags;
use super::change::Change;
use super::mmap::{unmap_locked, unshare_range};
use super::{MmInner, MmState};
use crate::error::{Error, Result};
use crate::notifier::Event;
use crate::pgtable::TASK_SIZE;
use crate::vma::{AnonLink, Backing, MapKind, VmFlags};

const PAGE: u64 = 4096;

/// Linux's `PAGE_ALIGN`, which wraps a length near 2^64 to 0.
fn page_align(len: u64) -> u64 {
    len.wrapping_add(PAGE - 1) & !(PAGE - 1)
}

pub(crate) fn do_mremap(
    mm: &MmInner,
    addr: u64,
    old_len: u64,
    new_len: u64,
    flags: RemapFlags,
    new_addr: u64,
) -> Result<u64> {
    let maymove = flags.contains(RemapFlags::MAYMOVE);
    let fixed = flags.contains(RemapFlags::FIXED);
    let dontunmap = flags.contains(RemapFlags::DONTUNMAP);
    // Linux's `check_mremap_params`, in its order (every failure EINVAL).
    if addr % PAGE != 0 {
        return Err(Error::Misaligned { what: "old_address", value: addr });
    }
    let (old_len, new_len) = (page_align(old_len), page_align(new_len));
    if new_len == 0 {
        return Err(Error::ZeroLength);
    }
    if new_len > TASK_SIZE {
        return Err(Error::Invalid("the new size exceeds the user address space"));
    }
    if fixed || dontunmap {
        check_new_addr(new_addr, new_len)?;
        if !maymove {
            return Err(Error::Invalid("MREMAP_FIXED and MREMAP_DONTUNMAP need MREMAP_MAYMOVE"));
        }
        if dontunmap && old_len != new_len {
            return Err(Error::Invalid("MREMAP_DONTUNMAP cannot resize"));
        }
        if addr.saturating_add(old_len) > new_addr && new_addr + new_len > addr {
            return Err(Error::Invalid("the old and new ranges overlap"));
        }
    }
    let mut st = mm.state.write();
    if st.exited() {
        return Err(Error::Exited);
    }
    if st.vmas.find(addr).is_none() {
        return Err(Error::Fault { addr });
    }
    if fixed && old_len == new_len {
        return remap_move(mm, &mut st, addr, old_len, new_addr, dontunmap);
    }
    if fixed || dontunmap {
        let to = Target { addr: new_addr, fixed };
        let (new, locked) = mremap_to(mm, &mut st, addr, old_len, new_len, to, dontunmap)?;
        drop(st);
        populate_if_locked(mm, locked, new + old_len.min(new_len), new + new_len);
        return Ok(new);
    }
    if old_len >= new_len {
        shrink(mm, &mut st, addr, old_len, new_len)?;
        return Ok(addr);
    }
    let v = vma_to_resize(&st, addr, old_len, new_len, false)?;
    // The old range reaches the VMA's end: it may grow into a free range.
    if old_len == v.end - addr && expandable(&st, v.end, new_len - old_len) {
        grow_in_place(&mut st, v.start, addr + new_len);
        drop(st);
        populate_if_locked(mm, v.locked, addr + old_len, addr + new_len);
        return Ok(addr);
    }
    if !maymove {
        return Err(Error::NoMemory("the mapping cannot grow in place and may not move"));
    }
    let new = unmapped_area(&st, mm, 0, new_len)?;
    move_vma(mm, &mut st, addr, old_len, new, new_len, false)?;
    drop(st);
    populate_if_locked(mm, v.locked, new + old_len, new + new_len);
    Ok(new)
}

/// Linux 6.17's `remap_move`: `MREMAP_FIXED` without resizing moves every
/// VMA of `[addr, addr + len)` (split at the ends), each at its offset
/// from the previous one's end kept, so gaps between them stay gaps (a
/// gap at the start is EFAULT). A failure stops the walk; the VMAs moved
/// before it stay moved. Returns the first VMA's new address.
fn remap_move(mm: &MmInner, st: &mut MmState, addr: u64, len: u64, new: u64, dontunmap: bool) -> Result<u64> {
    let end = addr + len;
    let (mut at, mut target) = (addr, new);
    let mut last_end: Option<u64> = None;
    while at < end {
        let next = st.vmas.overlapping(at, end).next().map(|v| (v.start, v.end));
        let Some((vs, ve)) = next else { break };
        let (lo, hi) = (vs.max(at), ve.min(end));
        if last_end.is_none() && addr < vs {
            return Err(Error::Fault { addr });
        }
        let to = target + last_end.map_or(0, |e| vs - e);
        let t = Target { addr: to, fixed: true };
        let (moved, _) = mremap_to(mm, st, lo, hi - lo, hi - lo, t, dontunmap)?;
        last_end = Some(ve);
        target = moved + (hi - lo);
        at = hi;
    }
    if last_end.is_none() {
        return Err(Error::Fault { addr });
    }
    Ok(new)
}

/// Where a move goes: exactly `addr` (`fixed`) or a hint.
struct Target {
    addr: u64,
    fixed: bool,
}

/// Linux's `mremap_to`: `MREMAP_FIXED` and/or `MREMAP_DONTUNMAP`.
/// Returns the new address and whether the mapping is locked (the
/// caller populates what grew, once the lock is dropped).
fn mremap_to(
    mm: &MmInner,
    st: &mut MmState,
    addr: u64,
    mut old_len: u64,
    new_len: u64,
    to: Target,
    dontunmap: bool,
) -> Result<(u64, bool)> {
    let new = to.addr;
    // Checked before anything is unmapped (Linux's `check_prep_vma`).
    let v = vma_to_resize(st, addr, old_len, new_len, dontunmap)?;
    if to.fixed {
        unmap_locked(mm, st, new, new + new_len)?;
    }
    if old_len > new_len {
        shrink(mm, st, addr, old_len, new_len)?;
        old_len = new_len;
    }
    let new = if to.fixed { new } else { unmapped_area(st, mm, new, new_len)? };
    move_vma(mm, st, addr, old_len, new, new_len, dontunmap)?;
    Ok((new, v.locked))
}

/// The new address (a fixed target, or `MREMAP_DONTUNMAP`'s hint) must
/// leave room below the top and be page-aligned, in that order.
fn check_new_addr(new: u64, new_len: u64) -> Result<()> {
    if new > TASK_SIZE - new_len {
        return Err(Error::Invalid("the new range leaves the user address space"));
    }
    if new % PAGE != 0 {
        return Err(Error::Misaligned { what: "new_address", value: new });
    }
    Ok(())
}

/// Unmap the tail `[addr + new_len, addr + old_len)`, whatever VMAs it
/// covers (`do_vmi_munmap`'s checks: EINVAL past the address space).
fn shrink(mm: &MmInner, st: &mut MmState, addr: u64, old_len: u64, new_len: u64) -> Result<()> {
    if old_len == new_len {
        return Ok(());
    }
    let end = addr.checked_add(old_len).filter(|&e| e <= TASK_SIZE);
    let Some(end) = end else {
        return Err(Error::OutOfRange { addr, len: old_len, errno: crate::errno::EINVAL });
    };
    unmap_locked(mm, st, addr + new_len, end)
}

/// What a resize needs of the VMA at the old address.
#[derive(Clone, Copy)]
struct Resized {
    start: u64,
    end: u64,
    locked: bool,
}

/// Linux's `check_prep_vma` (`vma_to_resize` before 6.16): the old range
/// must lie in one VMA (for a shrink, the part that stays), and a private
/// mapping cannot be duplicated (`old_len` 0).
fn vma_to_resize(st: &MmState, addr: u64, old_len: u64, new_len: u64, _dontunmap: bool) -> Result<Resized> {
    let Some(v) = st.vmas.find(addr) else { return Err(Error::Fault { addr }) };
    if old_len == 0 && v.kind() == MapKind::Private {
        return Err(Error::Invalid("a private mapping cannot be duplicated (old_size 0)"));
    }
    // A shrink may unmap across VMA boundaries.
    let old_len = old_len.min(new_len);
    if old_len > v.end - addr {
        return Err(Error::Fault { addr: v.end });
    }
    let r = Resized { start: v.start, end: v.end, locked: v.flags.contains(VmFlags::LOCKED) };
    if new_len == old_len {
        return Ok(r);
    }
    let pgoff = v.pgoff_of(addr);
    if pgoff.checked_add(new_len >> 12).is_none() {
        return Err(Error::Invalid("the new size overflows the page offset"));
    }
    Ok(r)
}

/// Linux's `vma_expandable`: `[end, end + delta)` is free and inside the
/// address space.
fn expandable(st: &MmState, end: u64, delta: u64) -> bool {
    end.checked_add(delta).is_some_and(|e| e <= TASK_SIZE && st.vmas.overlapping(end, e).next().is_none())
}

/// Grow the VMA at `start` to `new_end`, merging with the next VMA when
/// they are compatible (Linux's `vma_merge_extend`).
fn grow_in_place(st: &mut MmState, start: u64, new_end: u64) {
    if let Some(v) = st.vmas.get_mut(start) {
        let old_end = v.end;
        v.end = new_end;
        st.vmas.changed(old_end, new_end);
    }
    st.vmas.try_merge_at(new_end);
}

/// A free range of `len` bytes for a move (`get_unmapped_area`): at the
/// hint when it is free, else top-down, as mmap chooses.
fn unmapped_area(st: &MmState, mm: &MmInner, hint: u64, len: u64) -> Result<u64> {
    let min = mm.machine.config.mmap_min_addr;
    super::mmap::hinted_area(st, hint, len, min)
}

/// Linux's `move_vma`: a copy of the VMA at `new` with the old range's
/// page offset, the entries moved there, the old range unmapped (or, with
/// `dontunmap`, left mapped, unlocked and empty).
fn move_vma(
    mm: &MmInner,
    st: &mut MmState,
    addr: u64,
    old_len: u64,
    new: u64,
    new_len: u64,
    dontunmap: bool,
) -> Result<()> {
    let Some(pt) = st.pt.as_ref() else { return Err(Error::Exited) };
    // Entries are about to move: no table either range touches may be
    // shared with another space (the only step that can fail, ENOMEM).
    unshare_range(mm, st, pt, addr, addr + old_len, false)?;
    unshare_range(mm, st, pt, new, new + new_len, false)?;
    let Some(copy) = st.vmas.find(addr).map(|v| v.moved_copy(addr, new, new_len)) else {
        return Err(Error::Fault { addr });
    };
    st.vmas.insert(copy);
    st.vmas.try_merge_at(new);
    st.vmas.try_merge_at(new + new_len);
    if let Err(e) = move_entries(mm, st, addr, new, old_len) {
        // Back where they were (their tables are still there), and the
        // new VMA goes: the call fails having changed nothing visible.
        let _ = move_entries(mm, st, new, addr, old_len);
        unmap_locked(mm, st, new, new + new_len)?;
        return Err(e);
    }
    if dontunmap {
        keep_old_range(mm, st, addr, old_len);
        Ok(())
    } else {
        unmap_locked(mm, st, addr, addr + old_len)
    }
}

/// Move the entries of `[from, from + len)` to `to` in one change of the
/// space: secondary MMUs hear of the old range as unmapped (Linux's
/// `MMU_NOTIFY_UNMAP` in `move_page_tables`).
fn move_entries(mm: &MmInner, st: &MmState, from: u64, to: u64, len: u64) -> Result<()> {
    let Some(pt) = st.pt.as_ref() else { return Err(Error::Exited) };
    if len == 0 {
        return Ok(());
    }
    let mut change = Change::open(mm, Some(st), from, from + len, Some(Event::Unmap)).write_locked();
    change.move_ptes(pt, from, to, len).map(|_| ())
}

/// `MREMAP_DONTUNMAP`: the old VMA stays, without its lock flags, and,
/// when the move took it whole, without its anon_vma (Linux's
/// `unlink_anon_vmas`: nothing of it is mapped there any more).
fn keep_old_range(mm: &MmInner, st: &mut MmState, addr: u64, len: u64) {
    let Some(v) = st.vmas.find(addr) else { return };
    let start = v.start;
    let whole = v.start == addr && v.end == addr + len;
    if let Some(v) = st.vmas.get_mut(start) {
        v.flags = v.flags.without(VmFlags::LOCKED.with(VmFlags::LOCKONFAULT));
        if whole {
            if let Backing::Anon(l) = &mut v.backing {
                *l = AnonLink::new(mm.mm_ref());
            }
        }
    }
}

/// A locked mapping that grew is populated, as Linux's mremap calls
/// `mm_populate` for the new part (failures ignored).
fn populate_if_locked(mm: &MmInner, locked: bool, lo: u64, hi: u64) {
    if locked && lo < hi {
        let _ = super::mlock::populate(mm, lo, hi, true);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! mremap's move of one entry racing, on the same page, a write by
    //! another thread of the space (through its software TLB, else a fault
    //! under the `mmap_lock` held for reading, which copies on write after
    //! a fork) and a fork. A faithful model of the order, not the real
    //! functions (`move_ptes` needs a frame arena and a page-table tree):
    //! the `mmap_lock` (mremap and fork write it, the fault reads it), the
    //! PTE locks (source, then destination), `take`'s swap that keeps what
    //! a setter added, the move's shootdown in its `Change` before mremap
    //! returns; the TLB protocol is the real `tlb::Shootdown` and `Slot`.
    //!
    //! Checked: the entry ends in one place (the new slot; neither the old
    //! slot nor a TLB maps the page at the old address once mremap has
    //! returned), every frame's references are its entries, and a write
    //! that succeeded is in the parent's page. The twin without the
    //! shootdown is caught writing through the old address after mremap
    //! returned. (A twin that skips the PTE locks is not: every other
    //! writer of this space's entries in the model, the fault and fork,
    //! is excluded by the `mmap_lock` held for writing.)
    use crate::tlb::{Shootdown, Slot};
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    use loom::sync::{Arc, Mutex, RwLock};
    use std::sync::atomic::Ordering::SeqCst;

    const PRESENT: u64 = 1;
    const WRITE: u64 = 2;
    const DIRTY: u64 = 4;
    /// What the other thread writes.
    const WRITTEN: u32 = 7;

    fn pte(frame: usize, bits: u64) -> u64 {
        (frame as u64) << 8 | bits
    }

    fn frame_of(e: u64) -> usize {
        (e >> 8) as usize
    }

    struct World {
        mmap_lock: RwLock<()>,
        /// The VMA is at the new address (changed under the write lock).
        moved: AtomicBool,
        /// The PTE locks of the old and the new address's tables.
        ptl: [Mutex<()>; 2],
        /// The parent's entry at the old and at the new address.
        slot: [AtomicU64; 2],
        /// The child's entry, once forked.
        child: AtomicU64,
        /// Frames 1 (the page) and 2 (a COW copy): contents, references.
        bytes: [AtomicU32; 3],
        refs: [AtomicU32; 3],
        tlb: Shootdown,
        /// mremap returned.
        returned: AtomicBool,
        shootdown: bool,
    }

    fn world(shootdown: bool) -> Arc<World> {
        let w = World {
            mmap_lock: RwLock::new(()),
            moved: AtomicBool::new(false),
            ptl: [Mutex::new(()), Mutex::new(())],
            slot: [AtomicU64::new(pte(1, PRESENT | WRITE | DIRTY)), AtomicU64::new(0)],
            child: AtomicU64::new(0),
            bytes: [AtomicU32::new(0), AtomicU32::new(1), AtomicU32::new(0)],
            refs: [AtomicU32::new(0), AtomicU32::new(1), AtomicU32::new(0)],
            tlb: Shootdown::default(),
            returned: AtomicBool::new(false),
            shootdown,
        };
        Arc::new(w)
    }

    /// `move_ptes` of the page, then the change's drop (the shootdown).
    fn mremap(w: &World) {
        let _w = w.mmap_lock.write().unwrap();
        {
            let _src = w.ptl[0].lock().unwrap();
            let _dst = w.ptl[1].lock().unwrap();
            let e = w.slot[0].swap(0, SeqCst);
            assert_eq!(w.slot[1].load(SeqCst), 0, "the destination held an entry");
            w.slot[1].store(e, SeqCst);
            w.moved.store(true, SeqCst);
        }
        if w.shootdown {
            w.tlb.flush(None);
        }
        w.returned.store(true, SeqCst);
    }

    /// `copy_page_range` of the page, wherever it is: both entries
    /// write-protected, the frame referenced by the child; the shootdown.
    fn fork(w: &World) {
        let _w = w.mmap_lock.write().unwrap();
        let at = usize::from(w.moved.load(SeqCst));
        {
            let _g = w.ptl[at].lock().unwrap();
            let ro = w.slot[at].load(SeqCst) & !WRITE;
            w.slot[at].store(ro, SeqCst);
            w.child.store(ro, SeqCst);
            w.refs[frame_of(ro)].fetch_add(1, SeqCst);
        }
        w.tlb.flush(None);
    }

    /// The other thread writes at the old address: through its TLB
    /// (frame 1, writable, cached at generation 0) while that holds, else
    /// by a fault. Returns whether it wrote (else `EFAULT`: moved away).
    fn write_old(w: &World, slot: &Slot) -> bool {
        slot.enter(0);
        if w.tlb.generation_relaxed() == 0 {
            assert!(!w.returned.load(SeqCst), "a write through the old address after mremap returned");
            w.bytes[1].store(WRITTEN, SeqCst);
            slot.exit();
            return true;
        }
        slot.exit();
        let _r = w.mmap_lock.read().unwrap();
        if w.moved.load(SeqCst) {
            return false;
        }
        let _g = w.ptl[0].lock().unwrap();
        let e = w.slot[0].load(SeqCst);
        assert!(e & PRESENT != 0, "the old address's VMA without its entry");
        let f = frame_of(e);
        if e & WRITE == 0 && w.refs[f].load(SeqCst) > 1 {
            // `do_wp_page`: the child maps the frame too, copy it.
            w.bytes[2].store(w.bytes[f].load(SeqCst), SeqCst);
            w.refs[2].store(1, SeqCst);
            w.slot[0].store(pte(2, PRESENT | WRITE | DIRTY), SeqCst);
            w.refs[f].fetch_sub(1, SeqCst);
            w.bytes[2].store(WRITTEN, SeqCst);
        } else {
            w.slot[0].store(e | WRITE | DIRTY, SeqCst);
            w.bytes[f].store(WRITTEN, SeqCst);
        }
        true
    }

    fn run(shootdown: bool, forks: bool) {
        loom::model(move || {
            let w = world(shootdown);
            let slot = w.tlb.register();
            let w2 = w.clone();
            let mover = loom::thread::spawn(move || mremap(&w2));
            let forker = forks.then(|| {
                let w3 = w.clone();
                loom::thread::spawn(move || fork(&w3))
            });
            let wrote = write_old(&w, &slot);
            mover.join().unwrap();
            if let Some(t) = forker {
                t.join().unwrap();
            }
            assert_eq!(w.slot[0].load(SeqCst), 0, "an entry left at the old address");
            let e = w.slot[1].load(SeqCst);
            assert!(e & PRESENT != 0, "the moved entry is gone");
            let (f, c) = (frame_of(e), frame_of(w.child.load(SeqCst)));
            for g in 1..3 {
                let mapped = u32::from(f == g) + u32::from(c == g && forks);
                assert_eq!(w.refs[g].load(SeqCst), mapped, "frame {g}'s references are not its entries");
            }
            if wrote {
                assert_eq!(w.bytes[f].load(SeqCst), WRITTEN, "a write that succeeded is not in the parent's page");
            }
        });
    }

    #[test]
    fn a_move_races_a_write_through_the_tlb_or_a_fault() {
        run(true, false);
    }

    #[test]
    fn a_move_races_a_write_and_a_fork() {
        run(true, true);
    }

    /// The model can fail: without the move's shootdown, a translation of
    /// the old address cached before the move still writes after mremap
    /// returned.
    #[test]
    #[should_panic(expected = "after mremap returned")]
    fn a_move_without_its_shootdown_is_caught() {
        run(false, false);
    }
}
