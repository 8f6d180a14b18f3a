//! Accessors: how a thread reads and writes guest memory fast.
//!
//! An [`Accessor`] belongs to one thread and caches translations (virtual
//! page -> frame, writable or not) in a direct-mapped software TLB. A hit
//! takes no lock and no atomic read-modify-write: it publishes its slot as
//! active, checks the address space's flush generation (see `tlb.rs`), and
//! copies. A miss, a write through a read-only entry, or a stale generation
//! takes the slow path: the page-table walk and, if needed, the fault.
//!
//! A cached entry is writable only when the PTE is writable *and* dirty, so
//! the first write through a clean entry reaches the fault path and sets the
//! dirty bit, as a CPU does.
//!
//! A [`Batch`] ([`Accessor::batch`]) publishes the slot once for several
//! word operations: between its opening and its end each hit is a tag
//! compare and the atomic instruction, as close to host memory as a
//! software TLB gets. [`GuestWords`] is what both offer, so code such as
//! [`crate::futex::mutex::GuestMutex`] runs on either.
//!
//! [`SharedAccessor`] puts an accessor behind `&self`, for the
//! [`vm_memory::Bytes`] interface of rust-vmm (which [`crate::Mm`] offers
//! too, without a TLB).

mod batch;
mod vm;
mod words;

pub use batch::Batch;
pub use vm::{BytesError, SharedAccessor};
pub use words::{GuestWords, Word};

use crate::error::{Error, Result, SegvKind};
use crate::mm::{Access, MmInner};
use crate::phys::{FrameArena, PAGE_SIZE};
use crate::tlb::Slot;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

const TLB_ENTRIES: usize = 256;
/// What an access needs of an entry (`0`: reading): writing.
const WRITABLE: usize = 1;
/// An instruction fetch: the entry was filled by one, from a `PROT_EXEC`
/// VMA.
const EXECUTABLE: usize = 2;
/// A tag no address (page-aligned, or masked as in
/// [`Accessor::load_hit`]) equals.
const NO_PAGE: u64 = u64::MAX;

/// A cached translation: one tag per kind of access, each the page's
/// virtual address if the entry allows that access ([`NO_PAGE`] if not),
/// and the host address of a byte minus its virtual address. A hit is
/// then one compare (which also rejects a misaligned word, see
/// [`Accessor::load_hit`]) and the host address one add.
#[derive(Clone, Copy)]
struct TlbEntry {
    read: u64,
    write: u64,
    exec: u64,
    /// The frame's pointer moved back by the page's virtual address
    /// (wrapping): adding a virtual address of the page gives a pointer
    /// into the frame with the arena's provenance, no integer-to-pointer
    /// cast.
    addend: *mut u8,
}

impl TlbEntry {
    const EMPTY: TlbEntry = TlbEntry { read: NO_PAGE, write: NO_PAGE, exec: NO_PAGE, addend: std::ptr::null_mut() };

    /// The entry of the page of `va`, in the frame at `frame`.
    #[inline]
    fn new(va: u64, frame: *mut u8, writable: bool, exec: bool) -> TlbEntry {
        let page = va & !(PAGE_SIZE as u64 - 1);
        TlbEntry {
            read: page,
            write: if writable { page } else { NO_PAGE },
            exec: if exec { page } else { NO_PAGE },
            addend: frame.wrapping_sub(page as usize),
        }
    }

    /// Whether the entry translates `va` for an access that needs `need`.
    #[inline(always)]
    fn hits(&self, va: u64, need: usize) -> bool {
        let tag = if need & WRITABLE != 0 {
            self.write
        } else if need & EXECUTABLE != 0 {
            self.exec
        } else {
            self.read
        };
        tag == va & !(PAGE_SIZE as u64 - 1)
    }

    /// The host address of the frame of `va` (for an entry that hits).
    #[inline(always)]
    fn frame(&self, va: u64) -> *mut u8 {
        self.addend.wrapping_add((va & !(PAGE_SIZE as u64 - 1)) as usize)
    }
}

/// A thread's handle for accessing one address space. Not `Sync`: create one
/// per thread with [`crate::Mm::accessor`].
pub struct Accessor {
    mm: Arc<MmInner>,
    slot: Arc<Slot>,
    gen: u64,
    /// Inline (not boxed): a hit is then one load less.
    tlb: [TlbEntry; TLB_ENTRIES],
    /// Hits and misses, for statistics.
    misses: u64,
    /// The hot-side barrier mode, read once (it never changes back).
    light: bool,
    /// The slot stays published between accesses ([`Accessor::hold`]).
    held: bool,
}

// The raw host pointers in the TLB are only dereferenced under the
// shootdown protocol, which is per accessor, not per thread; moving an
// accessor to another thread is fine.
// SAFETY: see above; the accessor owns all its state.
unsafe impl Send for Accessor {}

/// Cache, read-only, the translations next to `va` that are already
/// mapped and accessed (what a read fault's fault-around just mapped,
/// or what an earlier pass touched): a sequential reader then takes one
/// miss per 64 KiB, not one per page, as a CPU's page-walk caches and
/// hardware prefetch spare it. Entries are cached at this generation,
/// so a shootdown of any of them is seen as for the fill's own.
fn prefill_neighbours(tlb: &mut [TlbEntry; TLB_ENTRIES], arena: &FrameArena, st: &crate::mm::MmState, va: u64) {
    crate::mm::readable_neighbours(st, arena, va, |a, pte| {
        let e = &mut tlb[(a >> 12) as usize % TLB_ENTRIES];
        if !e.hits(a, 0) {
            *e = TlbEntry::new(a, arena.frame_ptr(pte.frame()), false, false);
        }
    });
}

impl Accessor {
    pub(crate) fn new(mm: Arc<MmInner>) -> Accessor {
        let slot = mm.tlb.register();
        let gen = mm.tlb.generation();
        let light = crate::sync::light_barrier_is_compiler_only();
        Accessor { mm, slot, gen, tlb: [TlbEntry::EMPTY; TLB_ENTRIES], misses: 0, light, held: false }
    }

    /// The identity of the address space this accessor reads ([`crate::Mm::id`]).
    #[inline]
    pub fn mm_id(&self) -> u64 {
        self.mm.id
    }

    /// TLB misses so far.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Drop every cached translation.
    pub fn flush(&mut self) {
        self.tlb.fill(TlbEntry::EMPTY);
    }

    #[inline(always)]
    fn entry(&self, va: u64) -> &TlbEntry {
        &self.tlb[(va >> 12) as usize % TLB_ENTRIES]
    }

    /// Run `f(host_ptr_of_page)` for the page of `va` with the translation
    /// held valid (slot active); fill the TLB first if needed.
    #[inline(always)]
    fn with_page<R>(&mut self, va: u64, write: bool, f: impl FnOnce(*mut u8) -> R) -> Result<R> {
        self.with_page_for(va, if write { WRITABLE } else { 0 }, f)
    }

    /// `with_page` for an access that needs the entry flags `need`.
    #[inline(always)]
    fn with_page_for<R>(&mut self, va: u64, need: usize, f: impl FnOnce(*mut u8) -> R) -> Result<R> {
        if self.held {
            let e = *self.entry(va);
            if e.hits(va, need) {
                // The hold keeps every entry cached at `self.gen` valid
                // (see `hold`).
                return Ok(f(e.frame(va)));
            }
            return self.with_page_held_miss(va, need, f);
        }
        loop {
            let e = *self.entry(va);
            if e.hits(va, need) {
                self.slot.enter_as(self.gen, self.light);
                if self.mm.tlb.generation_relaxed() == self.gen {
                    let r = f(e.frame(va));
                    self.slot.exit();
                    return Ok(r);
                }
                self.slot.exit();
            }
            self.fill_for(va, need)?;
        }
    }

    /// Keep the slot published ("active at this accessor's generation")
    /// from now until [`release`](Self::release), so each access through a
    /// cached translation is the tag compare and the host access, with no
    /// publication of its own. The protocol is [`Batch`]'s, held by the
    /// accessor instead of a borrow: a shootdown of this address space in
    /// another thread waits until the hold ends, so every translation cached
    /// at the generation stays valid meanwhile. A miss releases the slot for
    /// the fill (which may fault and shoot down) and publishes it again, and
    /// the futex calls release it around themselves.
    ///
    /// While holding, the thread must not block and must not call a
    /// [`crate::Mm`] method or create an accessor of the same address space:
    /// either can wait for this very slot, forever. Release before anything
    /// of the kind. Opening a [`Batch`] ends the hold.
    #[inline]
    pub fn hold(&mut self) {
        if self.held {
            return;
        }
        self.publish();
        self.held = true;
    }

    /// End a [`hold`](Self::hold) (nothing if none is open).
    #[inline]
    pub fn release(&mut self) {
        if self.held {
            self.slot.exit();
            self.held = false;
        }
    }

    /// Whether a [`hold`](Self::hold) is open.
    #[inline]
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// The aligned word at `addr` (an acquire load), if a
    /// [`hold`](Self::hold) is open and the TLB translates the page; `None`
    /// otherwise (no fill, no fault: the caller takes the full path, which
    /// reports misalignment and faults).
    #[inline(always)]
    pub fn load_held<T: Word>(&self, addr: u64) -> Option<T> {
        if !self.held {
            return None;
        }
        // SAFETY: a hold is open (checked).
        unsafe { self.load_hit(addr) }
    }

    /// [`load_held`](Self::load_held) for a caller that knows a hold is
    /// open, without looking.
    ///
    /// # Safety
    ///
    /// A [`hold`](Self::hold) must be open ([`is_held`](Self::is_held)).
    #[inline(always)]
    pub unsafe fn load_hit<T: Word>(&self, addr: u64) -> Option<T> {
        debug_assert!(self.held);
        let e = self.entry(addr);
        if e.read != addr & word_tag_mask::<T>() {
            return None;
        }
        let p = e.addend.wrapping_add(addr as usize) as *const T::Atomic;
        // SAFETY: the entry hits (its tag is the page of `addr`, and the
        // word is aligned: the tag compare would fail on a set low bit) and
        // was cached at `self.gen`, which the open hold (the caller's
        // promise) keeps valid: `p` is in a live frame of the arena. The
        // aligned word lies in that page-aligned frame and is aligned for
        // `T::Atomic`. Guest memory is only accessed through atomics or raw
        // copies.
        Some(T::load(unsafe { &*p }, Ordering::Acquire))
    }

    /// Store `v` (release) at the aligned word at `addr`, if a
    /// [`hold`](Self::hold) is open and the TLB has the page writable;
    /// `false` (nothing stored) otherwise, as [`load_held`](Self::load_held).
    #[inline(always)]
    pub fn store_held<T: Word>(&mut self, addr: u64, v: T) -> bool {
        if !self.held {
            return false;
        }
        // SAFETY: a hold is open (checked).
        unsafe { self.store_hit(addr, v) }
    }

    /// [`store_held`](Self::store_held) for a caller that knows a hold is
    /// open, without looking.
    ///
    /// # Safety
    ///
    /// A [`hold`](Self::hold) must be open ([`is_held`](Self::is_held)).
    #[inline(always)]
    pub unsafe fn store_hit<T: Word>(&mut self, addr: u64, v: T) -> bool {
        debug_assert!(self.held);
        let e = self.entry(addr);
        if e.write != addr & word_tag_mask::<T>() {
            return false;
        }
        let p = e.addend.wrapping_add(addr as usize) as *const T::Atomic;
        // SAFETY: as in `load_hit`; the entry is writable.
        T::store(unsafe { &*p }, v, Ordering::Release);
        true
    }

    /// Publish the slot at the accessor's generation, catching up (and
    /// dropping cached translations) until the generation holds still.
    #[inline(always)]
    fn publish(&mut self) {
        loop {
            self.slot.enter_as(self.gen, self.light);
            if self.mm.tlb.generation_relaxed() == self.gen {
                return;
            }
            self.slot.exit();
            self.resync();
        }
    }

    /// The miss path of a held access: fill with the slot released, publish
    /// it again, retry.
    #[cold]
    #[inline(never)]
    fn with_page_held_miss<R>(&mut self, va: u64, need: usize, f: impl FnOnce(*mut u8) -> R) -> Result<R> {
        loop {
            self.slot.exit();
            let filled = self.fill_for(va, need);
            self.publish();
            filled?;
            let e = *self.entry(va);
            if e.hits(va, need) {
                return Ok(f(e.frame(va)));
            }
        }
    }

    /// The slow path: revalidate the generation, walk or fault, cache.
    #[cold]
    fn fill(&mut self, va: u64, write: bool) -> Result<()> {
        self.fill_for(va, if write { WRITABLE } else { 0 })
    }

    /// `fill` for an access that needs the entry flags `need`. An entry is
    /// marked executable only by a fetch, which the fault path allowed
    /// because the VMA has `PROT_EXEC`; mprotect taking `PROT_EXEC` away
    /// shoots the translations down, so no stale mark outlives it.
    #[cold]
    fn fill_for(&mut self, va: u64, need: usize) -> Result<()> {
        self.misses += 1;
        self.resync();
        let access = if need & WRITABLE != 0 {
            Access::Write
        } else if need & EXECUTABLE != 0 {
            Access::Fetch
        } else {
            Access::Read
        };
        let pte = {
            let st = self.mm.state.read();
            if st.exited() {
                return Err(Error::Segv { addr: va, kind: SegvKind::MapErr });
            }
            let pte = match crate::mm::fault_in_for(&self.mm, &st, va, access, &self.slot) {
                // A CPU access below a stack grows it (`mm/stack.rs`), then
                // faults again.
                Err(e @ Error::Segv { kind: SegvKind::MapErr, .. }) => {
                    drop(st);
                    if !crate::mm::expand_stack(&self.mm, va) {
                        return Err(e);
                    }
                    return self.fill_for(va, need);
                }
                r => r?,
            };
            if access == Access::Read {
                prefill_neighbours(&mut self.tlb, self.mm.arena(), &st, va);
            }
            pte
        };
        let ptr = self.mm.arena().frame_ptr(pte.frame());
        let writable = pte.is_writable() && pte.is_dirty();
        self.tlb[(va >> 12) as usize % TLB_ENTRIES] = TlbEntry::new(va, ptr, writable, access == Access::Fetch);
        Ok(())
    }

    /// Catch up with the address space's flush generation: a newer one
    /// means translations were shot down, so drop every cached one.
    fn resync(&mut self) {
        let g = self.mm.tlb.generation();
        if g != self.gen {
            self.flush();
            self.gen = g;
        }
    }

    fn arena(&self) -> &FrameArena {
        self.mm.arena()
    }

    /// Copy `out.len()` bytes from guest address `addr`.
    pub fn read(&mut self, addr: u64, out: &mut [u8]) -> Result<()> {
        self.chunks(addr, out.len(), false, |p, lo, hi| {
            // SAFETY: `p` points at `hi - lo` bytes inside one frame of the
            // arena (chunks never cross a page), valid while the slot is
            // active; `out[lo..hi]` is a distinct host buffer.
            unsafe { std::ptr::copy_nonoverlapping(p, out[lo..hi].as_mut_ptr(), hi - lo) }
        })
    }

    /// Copy `data` to guest address `addr` (breaking COW as needed).
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        self.chunks(addr, data.len(), true, |p, lo, hi| {
            // SAFETY: as in `read`, with the roles swapped; the entry is writable.
            unsafe { std::ptr::copy_nonoverlapping(data[lo..hi].as_ptr(), p, hi - lo) }
        })
    }

    /// Store `len` copies of `byte` at `addr`.
    pub fn fill_bytes(&mut self, addr: u64, len: usize, byte: u8) -> Result<()> {
        self.chunks(addr, len, true, |p, lo, hi| {
            // SAFETY: `p` points at `hi - lo` writable bytes of one frame.
            unsafe { std::ptr::write_bytes(p, byte, hi - lo) }
        })
    }

    /// Fetch `out.len()` bytes of instructions from guest address `addr`
    /// (any alignment; may cross pages). Every page needs `PROT_EXEC`: a
    /// page without it faults with `Segv { kind: AccErr }`, as an
    /// instruction fetch from a non-executable page does on x86-64 with NX.
    /// A fetch is a read: it never breaks copy-on-write. Bytes of pages
    /// before a faulting one have been copied.
    pub fn fetch(&mut self, addr: u64, out: &mut [u8]) -> Result<()> {
        let end = addr.checked_add(out.len() as u64).ok_or(Error::Segv { addr, kind: SegvKind::MapErr })?;
        for piece in crate::mm::page_pieces(addr, end) {
            let dst = &mut out[piece.lo..piece.hi];
            self.with_page_for(piece.va, EXECUTABLE, |p| {
                // SAFETY: as in `read`: the piece lies in one frame, valid
                // while the slot is active; `dst` is a distinct host buffer.
                unsafe { std::ptr::copy_nonoverlapping(p.add(piece.off), dst.as_mut_ptr(), dst.len()) }
            })?;
        }
        Ok(())
    }

    /// Fetch a 16-bit instruction parcel at `addr` (native endian, any
    /// alignment), as [`Accessor::fetch`].
    pub fn fetch_u16(&mut self, addr: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.fetch(addr, &mut b)?;
        Ok(u16::from_ne_bytes(b))
    }

    /// Fetch a 32-bit instruction word at `addr` (native endian, any
    /// alignment), as [`Accessor::fetch`].
    pub fn fetch_u32(&mut self, addr: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.fetch(addr, &mut b)?;
        Ok(u32::from_ne_bytes(b))
    }

    /// Split `[addr, addr+len)` at page boundaries; `f(ptr, lo, hi)` gets the
    /// host pointer of each piece and its offsets in the caller's buffer.
    fn chunks(&mut self, addr: u64, len: usize, write: bool, mut f: impl FnMut(*mut u8, usize, usize)) -> Result<()> {
        let end = addr.checked_add(len as u64).ok_or(Error::Segv { addr, kind: SegvKind::MapErr })?;
        for piece in crate::mm::page_pieces(addr, end) {
            // SAFETY: a piece lies in one page (`off + (hi - lo) <=
            // PAGE_SIZE`), so the pointer stays in the frame.
            self.with_page(piece.va, write, |p| f(unsafe { p.add(piece.off) }, piece.lo, piece.hi))?;
        }
        Ok(())
    }

    #[inline(always)]
    fn word<T, R>(&mut self, addr: u64, write: bool, f: impl FnOnce(&T) -> R) -> Result<R> {
        let off = word_offset::<T>(addr)?;
        self.with_page(addr, write, |p| {
            // SAFETY: `off` is a multiple of the word size and the word lies in
            // one frame (aligned words never cross a page); frames are
            // page-aligned, so the pointer is aligned for `T` (an std atomic
            // of that size). Guest memory is only accessed via atomics or raw
            // copies, and stays mapped while the slot is active.
            f(unsafe { &*(p.add(off) as *const T) })
        })
    }

    /// Whether futex calls may take the accessor's shortcuts: physical keys
    /// (Linux keys must fault as Linux's GUP does) and no waiter following a
    /// page of this address space (so no waiter is half-moved by a COW).
    #[inline]
    fn futex_shortcut(&self) -> bool {
        self.mm.machine.config.futex_keys == crate::futex::FutexKeys::Physical
            && self.mm.vcache_users.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// The frame of the word at `addr` through the TLB (a read access).
    #[inline]
    fn futex_frame(&mut self, addr: u64) -> Result<crate::phys::FrameId> {
        let p = self.with_page(addr, false, |p| p as usize).map_err(|e| match e {
            Error::Segv { .. } => Error::Fault { addr },
            e => e,
        })?;
        Ok(self.arena().frame_of_ptr(p as *const u8))
    }

    /// FUTEX_WAKE, as [`crate::Mm::futex_wake`], with a shortcut: with
    /// physical keys, a wake that finds nobody waiting costs a TLB hit, a
    /// fence and a load (no lock, no page walk).
    pub fn futex_wake(&mut self, addr: u64, n: u32) -> Result<u32> {
        if self.held {
            self.release();
            let r = self.futex_wake(addr, n);
            self.hold();
            return r;
        }
        if addr % 4 == 0 && self.futex_shortcut() {
            let frame = self.futex_frame(addr)?;
            if frame != crate::phys::ZERO_FRAME {
                let key = crate::futex::FutexKey::Frame { frame, offset: (addr & 0xfff) as u32 };
                if !self.mm.machine.futexes.table.maybe_waiters(&key) {
                    return Ok(0);
                }
            }
        }
        crate::futex::wake_bitset(&self.mm, addr, n, crate::futex::BITSET_MATCH_ANY)
    }

    /// FUTEX_WAIT, as [`crate::Mm::futex_wait`], with a shortcut: with
    /// physical keys, a word that differs is `EAGAIN` after one TLB read.
    pub fn futex_wait(&mut self, addr: u64, val: u32, timeout: Option<std::time::Duration>) -> Result<()> {
        if self.held {
            self.release();
            let r = self.futex_wait(addr, val, timeout);
            self.hold();
            return r;
        }
        if addr % 4 == 0 && self.mm.machine.config.futex_keys == crate::futex::FutexKeys::Physical {
            let now = self.word(addr, false, |w: &AtomicU32| w.load(Ordering::SeqCst)).map_err(|e| match e {
                Error::Segv { .. } => Error::Fault { addr },
                e => e,
            })?;
            if now != val {
                return Err(Error::Again);
            }
        }
        crate::futex::wait(
            &self.mm,
            addr,
            val,
            crate::futex::BITSET_MATCH_ANY,
            timeout.map(crate::futex::Timeout::After),
        )
    }

    /// The arena, for callers inside the crate.
    #[allow(dead_code)]
    pub(crate) fn arena_ref(&self) -> &FrameArena {
        self.arena()
    }
}

/// What a word access of type `T` compares with an entry's tag: the page
/// bits of its address and the bits that must be clear for alignment (a
/// tag has them clear, so a misaligned word misses).
#[inline(always)]
fn word_tag_mask<T>() -> u64 {
    !(PAGE_SIZE as u64 - 1) | (std::mem::size_of::<T>() as u64 - 1)
}

/// The offset in its page of an aligned word of type `T` at `addr`
/// (aligned words never cross a page); `Misaligned` if `addr` is not.
#[inline(always)]
fn word_offset<T>(addr: u64) -> Result<usize> {
    if addr % std::mem::size_of::<T>() as u64 != 0 {
        return Err(Error::Misaligned { what: "atomic access address", value: addr });
    }
    Ok((addr & (PAGE_SIZE as u64 - 1)) as usize)
}

impl Drop for Accessor {
    fn drop(&mut self) {
        self.release();
        self.mm.tlb.unregister(&self.slot);
    }
}

impl std::fmt::Debug for Accessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Accessor(mm {}, {} misses)", self.mm.id, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Error, GuestWords, Machine, MapKind, Placement, Prot, SegvKind};

    /// Under a hold a hit is one compare with the entry's tag for the
    /// access: an aligned word of a cached page hits, a misaligned word or
    /// a page not cached misses (nothing filled), a store misses on a page
    /// cached for reading only, and nothing hits without a hold.
    #[test]
    fn held_hits_compare_page_alignment_and_access() {
        let m = Machine::new(Config { arena_bytes: 64 * 4096, ..Config::default() }).unwrap();
        let p = m.new_mm().unwrap();
        // (Pages in distinct entries of the direct-mapped TLB.)
        let (rw, ro) = (0x40_0000, 0x50_5000);
        p.mmap(rw, 2 * 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        p.mmap(ro, 4096, Prot::READ, MapKind::Private, Placement::Fixed).unwrap();
        p.write(rw, &0x1122_3344_5566_7788u64.to_le_bytes()).unwrap();
        let mut a = p.accessor();
        assert_eq!(a.load_word::<u64>(rw).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(a.load_word::<u64>(ro).unwrap(), 0);
        assert_eq!(a.load_held::<u64>(rw), None, "no hold");
        a.hold();
        assert_eq!(a.load_held::<u64>(rw), Some(0x1122_3344_5566_7788));
        assert_eq!(a.load_held::<u32>(rw + 4), Some(0x1122_3344));
        assert_eq!(a.load_held::<u8>(rw + 1), Some(0x77));
        assert_eq!(a.load_held::<u32>(rw + 2), None, "misaligned");
        assert_eq!(a.load_held::<u16>(rw + 1), None, "misaligned");
        assert_eq!(a.load_held::<u64>(rw + 4096), None, "page not cached");
        assert!(!a.store_held(ro, 1u64), "read-only page");
        assert!(!a.store_held(rw + 4, 1u64), "misaligned store");
        assert!(a.store_held(rw + 8, 6u64));
        assert_eq!(a.load_held::<u64>(rw + 8), Some(6));
        let misses = a.misses();
        assert_eq!(a.load_held::<u64>(rw + 4096), None);
        assert_eq!(a.misses(), misses, "a held miss fills nothing");
        a.release();
        assert_eq!(a.load_held::<u64>(rw), None, "released");
        let mut b = [0; 8];
        p.read(rw + 8, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 6, "the held store reached the frame");
    }

    /// A read miss caches the mapped, accessed neighbours in its 64 KiB
    /// read-only: a sequential reader misses once per 64 KiB; writes still
    /// take the fault path (the dirty bit), and a neighbour's translation
    /// that changes afterwards (unmap, mprotect, DONTNEED, COW in a child)
    /// is never used again.
    #[test]
    fn read_misses_cache_the_neighbours_and_shootdowns_reach_them() {
        fn ld(a: &mut super::Accessor, addr: u64) -> crate::Result<u8> {
            let mut b = [0];
            a.read(addr, &mut b).map(|()| b[0])
        }
        fn st(a: &mut super::Accessor, addr: u64, v: u8) -> crate::Result<()> {
            a.write(addr, &[v])
        }
        let m = Machine::new(Config { arena_bytes: 256 * 4096, ..Config::default() }).unwrap();
        let p = m.new_mm().unwrap();
        let base = 0x40_0000;
        p.mmap(base, 32 * 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        for i in 0..32u64 {
            p.write(base + i * 4096, &[i as u8 + 1]).unwrap();
        }
        let mut a = p.accessor();
        for i in 0..32u64 {
            assert_eq!(ld(&mut a, base + i * 4096).unwrap(), i as u8 + 1);
        }
        assert_eq!(a.misses(), 2, "one miss per 64 KiB");
        // A write through a prefilled (read-only) entry faults: dirty bit.
        st(&mut a, base + 4096, 0x22).unwrap();
        assert_eq!(a.misses(), 3);
        p.munmap(base + 2 * 4096, 4096).unwrap();
        assert_eq!(ld(&mut a, base + 2 * 4096), Err(Error::Segv { addr: base + 2 * 4096, kind: SegvKind::MapErr }));
        p.mprotect(base + 3 * 4096, 4096, Prot::NONE).unwrap();
        assert_eq!(ld(&mut a, base + 3 * 4096), Err(Error::Segv { addr: base + 3 * 4096, kind: SegvKind::AccErr }));
        p.madvise(base + 4 * 4096, 4096, crate::Advice::DontNeed).unwrap();
        assert_eq!(ld(&mut a, base + 4 * 4096).unwrap(), 0, "a dropped page read through a stale entry");
        // After fork the parent's write copies: the child keeps its bytes.
        let c = p.fork().unwrap();
        let mut ca = c.accessor();
        assert_eq!(ld(&mut ca, base + 5 * 4096).unwrap(), 6);
        assert_eq!(ld(&mut ca, base + 6 * 4096).unwrap(), 7, "prefilled in the child");
        st(&mut a, base + 6 * 4096, 0x33).unwrap();
        assert_eq!(ld(&mut ca, base + 6 * 4096).unwrap(), 7);
        assert_eq!(ld(&mut a, base + 6 * 4096).unwrap(), 0x33);
        drop((a, ca));
        p.check_invariants().unwrap();
        c.check_invariants().unwrap();
    }

    /// Small enough for Miri: every unsafe path of the accessor (TLB fill,
    /// cross-page copies, atomics) over fork, COW and unmap.
    #[test]
    fn accessor_paths_over_fork_cow_unmap() {
        let m = Machine::new(Config { arena_bytes: 128 * 4096, ..Config::default() }).unwrap();
        let p = m.new_mm().unwrap();
        let base = 0x40_0000;
        p.mmap(base, 3 * 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        let mut a = p.accessor();
        let data: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
        a.write(base + 100, &data).unwrap();
        let mut back = vec![0u8; 6000];
        a.read(base + 100, &mut back).unwrap();
        assert_eq!(back, data);
        a.store_u32(base + 8192, 7).unwrap();
        assert_eq!(a.cmpxchg_u32(base + 8192, 7, 9).unwrap(), Ok(7));
        assert_eq!(a.fetch_add_u32(base + 8192, 1).unwrap(), 9);
        let c = p.fork().unwrap();
        let mut ca = c.accessor();
        a.store_u32(base + 8192, 1).unwrap();
        assert_eq!(ca.load_u32(base + 8192).unwrap(), 10);
        ca.fill_bytes(base, 4096, 0xee).unwrap();
        assert_eq!(a.load_u64(base).unwrap() & 0xff, 0);
        p.munmap(base, 4096).unwrap();
        assert_eq!(a.load_u64(base), Err(Error::Segv { addr: base, kind: SegvKind::MapErr }));
        assert_eq!(ca.load_u64(base).unwrap(), u64::from_ne_bytes([0xee; 8]));
        drop((a, ca));
        p.check_invariants().unwrap();
        drop((p, c));
        assert_eq!(m.stats().frames_in_use, 0);
    }
}
