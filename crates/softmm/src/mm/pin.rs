//! Page pins (Linux's `pin_user_pages`, seed 002's "page pin").
//!
//! A secondary user (a device doing DMA, an I/O engine, an exporter) holds
//! the frames of a range directly for a while. While pinned, a frame stays
//! put, and the pinner keeps seeing exactly what the owning address space
//! writes at that address. The rules that make this hold:
//!
//! 1. **A pin is taken only on a page exclusive to its space**, under the
//!    page-table lock that maps it: a write pin after a write fault (COW
//!    broken), a read-only pin after an unshare fault (`Access::Unshare`:
//!    COW broken but the entry stays read-only; untouched memory gets a
//!    frame of its own instead of the zero frame). Shared memory needs
//!    neither: every space maps the object's one frame.
//! 2. **COW's reuse test does not count pins** (`fault::anon_exclusive`): a
//!    write to a pinned exclusive page reuses it in place, so the pinner
//!    sees the write.
//! 3. **Fork copies a maybe-pinned private page for the child at once**
//!    (Linux's `page_needs_cow_for_dma`) and leaves the parent's entry
//!    writable; a PTE table holding one is copied, never shared. Pins are
//!    taken under the `mmap_lock` held for reading and fork holds it for
//!    writing, so fork sees every pin that exists. An address space that
//!    never pinned (`MmInner::has_pinned`) skips the check, as Linux's
//!    `MMF_HAS_PINNED` does.
//! 4. **Reclaim and migration leave pinned frames alone**: they check the
//!    pin count under the frame lock, and again under the page-table lock
//!    (reclaim) or by the reference count after unmapping (migration).
//! 5. **munmap drops the mapping, not the pin**: the frame lives until the
//!    last pin goes (`PinnedPages` dropped).
//!
//! Pins are counted in `FrameMeta::pins` and in the refcount (the order of
//! the two is `phys/pin.rs`'s); the machine's [`PinRegistry`] counts them
//! independently so `check_invariants` can recount them.

use super::fault::{anon_exclusive, fault_in, Access};
use super::{MmInner, MmState};
use crate::error::{Error, Result};
use crate::machine::MachineInner;
use crate::phys::{flags, FrameId, PAGE_SIZE};
use crate::vma::Backing;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

const PAGE: u64 = PAGE_SIZE as u64;

/// The pinned frames of a range, from [`crate::Mm::pin_pages`]. Dropping
/// it unpins them (Linux's `unpin_user_pages`). It keeps the frames alive
/// even after the owner unmaps the range or exits.
pub struct PinnedPages {
    machine: Arc<MachineInner>,
    /// The address the pin asked for, and its length in bytes.
    addr: u64,
    len: u64,
    /// One frame per page of `[addr & !0xfff, addr + len)`.
    frames: Vec<FrameId>,
    write: bool,
}

impl PinnedPages {
    /// The first address of the pinned range (as asked for, not rounded).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The length in bytes of the pinned range (as asked for).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the range is empty (never: `pin_pages` refuses length 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pinned frames, one per page, in address order.
    pub fn frames(&self) -> &[FrameId] {
        &self.frames
    }

    /// Whether this is a write pin (the pinner may write through it).
    pub fn is_write(&self) -> bool {
        self.write
    }

    /// Read `out.len()` bytes at `addr` through the pinned frames, not
    /// through any page table (what a device doing DMA sees). `Fault`
    /// (EFAULT) when the range leaves the pinned one.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        let arena = &self.machine.arena;
        self.each_piece(addr, out.len(), |f, off, lo, hi| arena.read(f, off, &mut out[lo..hi]))
    }

    /// Write `data` at `addr` through the pinned frames (a device's DMA
    /// write): the owner sees it at once, as its page is this very frame.
    /// `Invalid` (EINVAL) for a read-only pin, `Fault` outside the range.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        if !self.write {
            return Err(Error::Invalid("a read-only pin cannot be written through"));
        }
        let arena = &self.machine.arena;
        self.each_piece(addr, data.len(), |f, off, lo, hi| {
            // Linux's unpin_user_pages_dirty_lock: the page is dirty now.
            arena.meta(f).set_flags(flags::DIRTY);
            arena.write(f, off, &data[lo..hi]);
        })
    }

    /// Atomic load of the aligned 64-bit word at `addr` through the pin
    /// (a device reading a descriptor). `Misaligned` unless 8-byte aligned,
    /// `Fault` outside the range.
    pub fn load_u64(&self, addr: u64) -> Result<u64> {
        let (f, off) = self.word_at(addr)?;
        Ok(self.machine.arena.word64(f, off).load(std::sync::atomic::Ordering::Acquire))
    }

    /// Atomic store of the aligned 64-bit word at `addr` through a write pin.
    pub fn store_u64(&self, addr: u64, v: u64) -> Result<()> {
        if !self.write {
            return Err(Error::Invalid("a read-only pin cannot be written through"));
        }
        let (f, off) = self.word_at(addr)?;
        self.machine.arena.meta(f).set_flags(flags::DIRTY);
        self.machine.arena.word64(f, off).store(v, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The aligned 32-bit word at `addr` as a host atomic, for a device model
    /// (or a host fast path) that works on the pinned memory directly, as a
    /// kernel driver does on pinned user pages. Needs a write pin (the
    /// atomic can store): `Invalid` for a read-only pin, `Misaligned` unless
    /// 4-byte aligned, `Fault` outside the range. The page is marked dirty,
    /// as the word may be written. The reference lives as long as the pin,
    /// and with it the frame.
    pub fn atomic_u32(&self, addr: u64) -> Result<&AtomicU32> {
        let (f, off) = self.writable_word(addr, 4)?;
        Ok(self.machine.arena.word32(f, off))
    }

    /// As [`atomic_u32`](Self::atomic_u32), for the aligned 64-bit word at `addr`.
    pub fn atomic_u64(&self, addr: u64) -> Result<&AtomicU64> {
        let (f, off) = self.writable_word(addr, 8)?;
        Ok(self.machine.arena.word64(f, off))
    }

    /// The frame and offset of the aligned `size`-byte word at `addr` of a
    /// write pin, its page marked dirty.
    fn writable_word(&self, addr: u64, size: u64) -> Result<(FrameId, usize)> {
        if !self.write {
            return Err(Error::Invalid("a read-only pin cannot be written through"));
        }
        if addr % size != 0 {
            return Err(Error::Misaligned { what: "address", value: addr });
        }
        let mut at = None;
        self.each_piece(addr, size as usize, |f, off, _, _| at = Some((f, off)))?;
        let (f, off) = at.ok_or(Error::Fault { addr })?;
        self.machine.arena.meta(f).set_flags(flags::DIRTY);
        Ok((f, off))
    }

    /// The frame and offset of the aligned word at `addr`.
    fn word_at(&self, addr: u64) -> Result<(FrameId, usize)> {
        if addr % 8 != 0 {
            return Err(Error::Misaligned { what: "address", value: addr });
        }
        let mut at = None;
        self.each_piece(addr, 8, |f, off, _, _| at = Some((f, off)))?;
        at.ok_or(Error::Fault { addr })
    }

    /// Call `copy(frame, offset in frame, lo, hi)` for each page-sized piece
    /// of `[addr, addr + len)`, after checking the whole range is pinned.
    fn each_piece(&self, addr: u64, len: usize, mut copy: impl FnMut(FrameId, usize, usize, usize)) -> Result<()> {
        let end = addr.checked_add(len as u64).ok_or(Error::Fault { addr })?;
        if addr < self.addr || end > self.addr + self.len {
            let bad = if addr < self.addr { addr } else { (self.addr + self.len).max(addr) };
            return Err(Error::Fault { addr: bad });
        }
        let first = self.addr & !(PAGE - 1);
        for p in super::page_pieces(addr, end) {
            copy(self.frames[((p.va - first) / PAGE) as usize], p.off, p.lo, p.hi);
        }
        Ok(())
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        self.machine.pins.forget(&self.frames);
        for &f in &self.frames {
            self.machine.arena.unpin(f);
        }
    }
}

impl std::fmt::Debug for PinnedPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedPages({:#x}+{:#x}, {} frames, write: {})", self.addr, self.len, self.frames.len(), self.write)
    }
}

/// Every pin of the machine by frame, kept apart from the frames' own
/// counts so that audits can recount them. Touched once per `pin_pages`
/// and once per unpin, never per access.
#[derive(Default)]
pub(crate) struct PinRegistry {
    pins: parking_lot::Mutex<HashMap<FrameId, u32>>,
}

impl PinRegistry {
    fn record(&self, frames: &[FrameId]) {
        let mut pins = self.pins.lock();
        for &f in frames {
            *pins.entry(f).or_default() += 1;
        }
    }

    fn forget(&self, frames: &[FrameId]) {
        let mut pins = self.pins.lock();
        for f in frames {
            if let Some(n) = pins.get_mut(f) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(f);
                }
            }
        }
    }

    /// Pins held now.
    pub(crate) fn total(&self) -> u64 {
        self.pins.lock().values().map(|&n| u64::from(n)).sum()
    }

    /// Pins per frame (audits).
    pub(crate) fn snapshot(&self) -> HashMap<FrameId, u32> {
        self.pins.lock().clone()
    }
}

/// `Mm::pin_pages`: fault in and pin every page of `[addr, addr + len)`.
pub(crate) fn pin_pages(mm: &MmInner, addr: u64, len: u64, write: bool) -> Result<PinnedPages> {
    if len == 0 {
        return Err(Error::ZeroLength);
    }
    let end = addr.checked_add(len).filter(|&e| e <= crate::pgtable::TASK_SIZE);
    let end = end.ok_or(Error::OutOfRange { addr, len, errno: crate::error::errno::EFAULT })?;
    let mut pinned =
        PinnedPages { machine: mm.machine.clone(), addr, len, frames: Vec::with_capacity(pages(addr, end)), write };
    let st = mm.state.read();
    // Before the first pin, and under the mmap_lock fork takes for
    // writing: a fork after this sees the flag and looks for pins.
    mm.has_pinned.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut va = addr & !(PAGE - 1);
    while va < end {
        // On error the pins taken so far go with `pinned`.
        let f = pin_one(mm, &st, va, write)?;
        pinned.frames.push(f);
        mm.machine.pins.record(std::slice::from_ref(&f));
        va += PAGE;
    }
    Ok(pinned)
}

fn pages(addr: u64, end: u64) -> usize {
    (end.div_ceil(PAGE) - addr / PAGE) as usize
}

/// Fault the page at `va` in until it is pinnable, then pin it under its
/// page-table lock (Linux's `follow_page_pte` with `FOLL_PIN`).
fn pin_one(mm: &MmInner, st: &MmState, va: u64, write: bool) -> Result<FrameId> {
    let access = if write { Access::Write } else { Access::Unshare };
    let pt = st.pt.as_ref().ok_or(Error::Exited)?;
    let arena = mm.arena();
    let vma = st.vmas.find(va).ok_or(Error::Segv { addr: va, kind: crate::SegvKind::MapErr })?;
    let private = matches!(vma.backing, Backing::Anon(_));
    let mut tries = 0u32;
    loop {
        if tries > 0 {
            // Not pinnable yet: a transient reference (another thread's
            // access in flight) or a reclaim holding the frame. Let it go on.
            std::thread::yield_now();
        }
        tries += 1;
        fault_in(mm, st, va, access, None)?;
        let Some(g) = crate::pgtable::share::lock_pte_table_read(arena, pt, va) else { continue };
        // An entry in a shared table is never exclusive: fault again (the
        // unshare fault makes the table this space's own).
        if pt.pte_table_shared(arena, va) {
            continue;
        }
        let pte = g.get(va);
        let ok = pte.is_present()
            && !pte.is_zero_frame()
            && !pte.is_borrowed()
            && (!write || pte.is_writable())
            && (!private || anon_exclusive(mm, pte.frame()));
        if ok {
            arena.pin(pte.frame());
            return Ok(pte.frame());
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The pin protocol under loom: a read-only pin (an unshare, then the
    //! exclusivity test and `take_pin` under the page-table lock), a fork
    //! (under the `mmap_lock` held for writing: a pinned page is copied for
    //! the child, another is shared and write-protected; the child then
    //! exits) and a write fault (COW's reuse test, `unpinned_refs`) race on
    //! one page, mapped read-only and exclusive at the start (as after an
    //! earlier fork whose child exited). The counts are the real protocol
    //! functions on loom atomics.
    use crate::phys::pin::{drop_pin, take_pin, unpinned_refs, PinCounts};
    use loom::sync::atomic::{AtomicBool, AtomicU32};
    use loom::sync::{Arc, Mutex, RwLock};
    use std::sync::atomic::Ordering;

    #[derive(Default)]
    struct Frame {
        refs: AtomicU32,
        pins: AtomicU32,
        freed: AtomicBool,
    }

    impl PinCounts for Frame {
        fn refs(&self) -> u32 {
            self.refs.load(Ordering::Acquire)
        }
        fn pins(&self) -> u32 {
            self.pins.load(Ordering::Acquire)
        }
        fn add_pin(&self) {
            self.pins.fetch_add(1, Ordering::AcqRel);
        }
        fn sub_pin(&self) {
            self.pins.fetch_sub(1, Ordering::AcqRel);
        }
        fn add_ref(&self) {
            self.refs.fetch_add(1, Ordering::AcqRel);
        }
        fn sub_ref(&self) -> u32 {
            self.refs.fetch_sub(1, Ordering::AcqRel)
        }
    }

    impl Frame {
        fn put(&self) {
            let old = self.sub_ref();
            assert!(old >= 1, "reference dropped twice");
            if old == 1 {
                assert!(!self.freed.swap(true, Ordering::SeqCst), "frame freed twice");
            }
        }
    }

    /// The parent's page: whether its entry still maps the original frame
    /// `f` and is writable; whether the child maps `f`.
    struct Page {
        mmap_lock: RwLock<()>,
        ptl: Mutex<()>,
        f: Frame,
        parent_on_f: AtomicBool,
        parent_writable: AtomicBool,
        child_on_f: AtomicBool,
    }

    fn page() -> Arc<Page> {
        let p = Page {
            mmap_lock: RwLock::new(()),
            ptl: Mutex::new(()),
            f: Frame::default(),
            parent_on_f: AtomicBool::new(true),
            parent_writable: AtomicBool::new(false),
            child_on_f: AtomicBool::new(false),
        };
        p.f.refs.store(1, Ordering::Relaxed);
        Arc::new(p)
    }

    /// `pin_one` for a read-only pin, without the retry: pin if exclusive.
    fn pin(p: &Page) -> bool {
        let _r = p.mmap_lock.read().unwrap();
        let _g = p.ptl.lock().unwrap();
        if p.parent_on_f.load(Ordering::Relaxed) && unpinned_refs(&p.f) == 1 {
            take_pin(&p.f);
            return true;
        }
        false
    }

    /// `copy_page_range` for the page, then the child's exit.
    fn fork_and_exit(p: &Page) {
        {
            let _w = p.mmap_lock.write().unwrap();
            let _g = p.ptl.lock().unwrap();
            if p.parent_on_f.load(Ordering::Relaxed) && p.f.pins() == 0 {
                p.f.add_ref();
                p.child_on_f.store(true, Ordering::SeqCst);
                p.parent_writable.store(false, Ordering::Relaxed);
            } // else: the child gets a copy of its own, the parent keeps write
        }
        // The child's exit, under its own locks only: clear its entry, then
        // drop the reference.
        if p.child_on_f.swap(false, Ordering::SeqCst) {
            p.f.put();
        }
    }

    /// `do_wp_page` for a write fault on the parent's page.
    fn write_fault(p: &Page) {
        let _r = p.mmap_lock.read().unwrap();
        let _g = p.ptl.lock().unwrap();
        if !p.parent_on_f.load(Ordering::Relaxed) || p.parent_writable.load(Ordering::Relaxed) {
            return;
        }
        if unpinned_refs(&p.f) == 1 {
            assert!(!p.child_on_f.load(Ordering::SeqCst), "COW reused a frame the child still maps");
            p.parent_writable.store(true, Ordering::Relaxed);
        } else {
            p.parent_on_f.store(false, Ordering::Relaxed); // a copy
            p.f.put();
        }
    }

    fn final_counts(p: &Page, pins: u32) {
        let maps = u32::from(p.parent_on_f.load(Ordering::SeqCst)) + u32::from(p.child_on_f.load(Ordering::SeqCst));
        assert_eq!(p.f.refs(), maps + pins, "references are not mappings plus pins");
        assert_eq!(p.f.pins(), pins);
        assert_eq!(p.f.freed.load(Ordering::SeqCst), maps + pins == 0, "frame freed while referenced, or leaked");
    }

    /// A pin held across the race: the pinner keeps seeing the parent's
    /// page (the parent never moves off the pinned frame).
    #[test]
    fn pin_held_across_fork_and_cow() {
        loom::model(|| {
            let p = page();
            let pinner = {
                let p = p.clone();
                loom::thread::spawn(move || pin(&p))
            };
            let forker = {
                let p = p.clone();
                loom::thread::spawn(move || fork_and_exit(&p))
            };
            write_fault(&p);
            let pinned = pinner.join().unwrap();
            forker.join().unwrap();
            if pinned {
                assert!(p.parent_on_f.load(Ordering::SeqCst), "the parent moved off its pinned frame");
            }
            final_counts(&p, u32::from(pinned));
            if pinned && drop_pin(&p.f) == 1 {
                p.f.freed.store(true, Ordering::SeqCst);
            }
        });
    }

    /// The pin dropped during the race: counts stay exact, the frame is
    /// freed once or not at all.
    #[test]
    fn unpin_races_fork_and_cow() {
        loom::model(|| {
            let p = page();
            let pinner = {
                let p = p.clone();
                loom::thread::spawn(move || {
                    if pin(&p) && drop_pin(&p.f) == 1 {
                        assert!(!p.f.freed.swap(true, Ordering::SeqCst), "frame freed twice");
                    }
                })
            };
            let forker = {
                let p = p.clone();
                loom::thread::spawn(move || fork_and_exit(&p))
            };
            write_fault(&p);
            pinner.join().unwrap();
            forker.join().unwrap();
            final_counts(&p, 0);
        });
    }
}
