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
//! Pins are counted in `FrameMeta::pins` and in the refcount; the machine's
//! [`PinRegistry`] counts them independently so `check_invariants` can
//! recount them.

use super::fault::{anon_exclusive, fault_in, Access};
use super::{MmInner, MmState};
use crate::error::{Error, Result};
use crate::machine::MachineInner;
use crate::phys::{flags, FrameId, PAGE_SIZE};
use crate::vma::Backing;
use std::collections::HashMap;
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
        let mut va = addr;
        while va < end {
            let hi = super::page_end(va).min(end);
            let f = self.frames[((va - first) / PAGE) as usize];
            let lo = (va - addr) as usize;
            copy(f, (va & (PAGE - 1)) as usize, lo, lo + (hi - va) as usize);
            va = hi;
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
        let Some(g) = crate::pgtable::share::lock_pte_table(arena, pt, va) else { continue };
        // An entry in a shared table is never exclusive: fault again (the
        // unshare fault makes the table this space's own).
        if pt.pte_table_shared(arena, va) {
            continue;
        }
        let pte = g.get(va);
        let ok = pte.is_present()
            && !pte.is_zero_frame()
            && (!write || pte.is_writable())
            && (!private || anon_exclusive(mm, pte.frame()));
        if ok {
            arena.pin(pte.frame());
            return Ok(pte.frame());
        }
    }
}
