//! Model-based test: random histories of mmap, munmap, mprotect (PROT_EXEC
//! included), madvise, mremap, mlock and munlock, fork, exit, reclaim,
//! migration, pins, snapshots and restores, and accesses (instruction
//! fetches too) over up to four address spaces, each step checked against a deliberately simple
//! reference model. Locked pages: mlock populates the range, reclaim never
//! takes a resident locked page, and the advices Linux refuses on mlocked
//! memory answer EINVAL. (Files have their own model, `files_model.rs`.)
//!
//! The model keeps, per address space, a map from virtual page number to
//! (protection, contents). Private contents are plain byte vectors, copied by
//! value on fork; shared contents are `Rc<RefCell<..>>` pages, so a fork
//! shares them. Every step compares results (same `Ok`/`Err`, same fault kind
//! and address, same bytes), then audits the whole machine with
//! `check_invariants` and compares the mapped pages and their protection.
//!
//! A snapshot keeps a copy of its space's model; a restore must give back
//! exactly that copy (private bytes as they were, shared pages as their
//! object holds them now), and answers EINVAL once the snapshot's space is
//! gone. Restores of a space holding pins are left out, and EBUSY (a
//! changed page pinned through another space) is accepted while any pin is
//! held, with nothing changed (the pin rule: `tests/snapshot.rs`).
//!
//! `PROPTEST_CASES` overrides the number of cases (2,000 in release builds).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use softmm::GuestWords;
use softmm::{
    errno, Accessor, Advice, Config, Error, ForkPolicy, Machine, MapKind, Mm, Placement, Prot, SegvKind, SwapConfig,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

const PAGE: u64 = 4096;
/// The window operations start in: 32 pages, so they overlap a lot.
const BASE: u64 = 0x1000_0000;
const WINDOW_PAGES: u64 = 32;
/// Longest range operation, in pages (ranges may run past the window).
const MAX_RANGE_PAGES: u64 = 8;
const SLOTS: usize = 4;
/// Pins held at once.
const MAX_PINS: usize = 4;
/// Snapshots kept at once (the oldest goes first).
const MAX_SNAPS: usize = 3;

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// Which access path an access goes through.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `Mm::read` / `Mm::write` / `Mm::fill` (no TLB).
    Mm,
    /// The slot's long-lived `Accessor` (software TLB).
    Acc,
}

/// A range argument: `page` is an index into the window, `len` in bytes
/// (0 and lengths that are not a page multiple included), `misalign` adds
/// half a page to the address.
#[derive(Clone, Copy)]
struct Range {
    page: u64,
    len: u64,
    misalign: bool,
}

impl Range {
    fn addr(self) -> u64 {
        BASE + self.page * PAGE + if self.misalign { PAGE / 2 } else { 0 }
    }
}

impl std::fmt::Debug for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}+{:#x}", self.addr(), self.len)
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// `Mm::snapshot` of the slot's space.
    Snapshot {
        s: usize,
    },
    /// `Mm::restore` of the slot's space to the `k`-th (modulo) snapshot kept.
    Restore {
        s: usize,
        k: usize,
    },
    /// A fresh, empty address space in an empty slot.
    New {
        s: usize,
    },
    Mmap {
        s: usize,
        r: Range,
        prot: Prot,
        kind: MapKind,
        noreplace: bool,
    },
    Munmap {
        s: usize,
        r: Range,
    },
    Mprotect {
        s: usize,
        r: Range,
        prot: Prot,
    },
    DontNeed {
        s: usize,
        r: Range,
    },
    /// Any other advice (FREE: the page may read back as zeros once
    /// reclaim ran, until it is written; see `World::settle_lazy`).
    Madvise {
        s: usize,
        r: Range,
        advice: Advice,
    },
    /// mremap of `r` to `new_len` bytes (`to`: MREMAP_FIXED to that
    /// window page; without resizing it moves every mapping of the range,
    /// as Linux 6.17 does). The model knows pages, not VMAs: where only VMA
    /// boundaries decide (EFAULT for an old range crossing VMAs, ENOMEM
    /// for growth that is not at a VMA's end) it accepts softmm's answer
    /// and checks that nothing changed; the trace corpus diffs those
    /// decisions against Linux.
    Mremap {
        s: usize,
        r: Range,
        new_len: u64,
        maymove: bool,
        to: Option<u64>,
        dontunmap: bool,
    },
    /// Fork slot `s` into slot `into` (whatever lived there exits first).
    Fork {
        s: usize,
        into: usize,
        /// Share PTE tables (`SharedTables`) or copy them (`CopyTables`).
        shared_tables: bool,
    },
    /// Drop the `Mm`; its accessor stays, seeing an empty address space.
    Exit {
        s: usize,
    },
    /// Replace the slot's accessor with a fresh one.
    NewAccessor {
        s: usize,
    },
    Read {
        s: usize,
        addr: Addr,
        len: usize,
        via: Via,
    },
    Write {
        s: usize,
        addr: Addr,
        len: usize,
        seed: u8,
        via: Via,
    },
    Fill {
        s: usize,
        addr: Addr,
        len: usize,
        byte: u8,
        via: Via,
    },
    FetchAdd {
        s: usize,
        addr: Addr,
        v: u64,
    },
    Load32 {
        s: usize,
        addr: Addr,
    },
    /// An instruction fetch through the slot's accessor (needs PROT_EXEC).
    Fetch {
        s: usize,
        addr: Addr,
        len: usize,
    },
    /// Several `FetchAdd`s in one accessor `Batch` (one slot publication;
    /// a miss, a COW or an error in the middle leaves and reopens it).
    BatchAdds {
        s: usize,
        adds: Vec<(Addr, u64)>,
    },
    /// Swap out up to `n` private pages of the machine (nothing the model
    /// can see may change).
    Reclaim {
        n: usize,
    },
    /// Move the frame at `addr` (nothing the model can see may change).
    Migrate {
        s: usize,
        addr: Addr,
    },
    /// Pin the pages of a range (`Mm::pin_pages`).
    Pin {
        s: usize,
        r: Range,
        write: bool,
    },
    /// Read through the `p`-th (modulo) pin, `off` bytes into its range.
    PinRead {
        p: usize,
        off: u64,
        len: usize,
    },
    /// Write through the `p`-th (modulo) pin (a device's DMA write).
    PinWrite {
        p: usize,
        off: u64,
        len: usize,
        seed: u8,
    },
    Unpin {
        p: usize,
    },
    /// mlock (`lock`) or munlock of a range.
    Mlock {
        s: usize,
        r: Range,
        lock: bool,
    },
}

#[derive(Clone, Copy)]
struct Addr(u64);

impl std::fmt::Debug for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

fn slot() -> impl Strategy<Value = usize> {
    0..SLOTS
}

fn prot() -> impl Strategy<Value = Prot> {
    prop_oneof![
        4 => Just(Prot::RW),
        2 => Just(Prot::READ),
        1 => Just(Prot::WRITE),
        1 => Just(Prot::NONE),
        1 => Just(Prot::RX),
        1 => Just(Prot::RWX)
    ]
}

fn kind() -> impl Strategy<Value = MapKind> {
    prop_oneof![3 => Just(MapKind::Private), 1 => Just(MapKind::Shared)]
}

fn advice() -> impl Strategy<Value = Advice> {
    prop::sample::select(vec![
        Advice::Free,
        Advice::WillNeed,
        Advice::Cold,
        Advice::PageOut,
        Advice::PopulateRead,
        Advice::PopulateWrite,
        Advice::Remove,
        Advice::DontFork,
        Advice::DoFork,
        Advice::WipeOnFork,
        Advice::KeepOnFork,
    ])
}

fn range() -> impl Strategy<Value = Range> {
    let pages = 0..WINDOW_PAGES;
    let npages = prop_oneof![1 => Just(0u64), 12 => 1u64..=MAX_RANGE_PAGES];
    // Mostly whole pages; sometimes a length that rounds up.
    let shave = prop_oneof![4 => Just(0u64), 1 => 1u64..PAGE];
    let misalign = prop_oneof![15 => Just(false), 1 => Just(true)];
    (pages, npages, shave, misalign).prop_map(|(page, n, shave, misalign)| Range {
        page,
        len: (n * PAGE).saturating_sub(if n > 0 { shave } else { 0 }),
        misalign,
    })
}

/// A new length for mremap: as often the old one's page count as not.
fn remap_len() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(u64::MAX), 8 => 1u64..=MAX_RANGE_PAGES * PAGE]
}

fn addr(align: u64) -> impl Strategy<Value = Addr> {
    // A little past the window too (mappings may extend past it).
    (0..(WINDOW_PAGES + MAX_RANGE_PAGES / 2) * PAGE / align).prop_map(move |x| Addr(BASE + x * align))
}

fn access_len() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 6 => 1usize..=16, 3 => 1usize..=2 * PAGE as usize]
}

fn via() -> impl Strategy<Value = Via> {
    prop_oneof![Just(Via::Mm), Just(Via::Acc)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => slot().prop_map(|s| Op::New { s }),
        12 => (slot(), range(), prot(), kind(), prop_oneof![5 => Just(false), 1 => Just(true)])
            .prop_map(|(s, r, prot, kind, noreplace)| Op::Mmap { s, r, prot, kind, noreplace }),
        4 => (slot(), range()).prop_map(|(s, r)| Op::Munmap { s, r }),
        6 => (slot(), range(), prot()).prop_map(|(s, r, prot)| Op::Mprotect { s, r, prot }),
        4 => (slot(), range()).prop_map(|(s, r)| Op::DontNeed { s, r }),
        5 => (slot(), range(), advice()).prop_map(|(s, r, advice)| Op::Madvise { s, r, advice }),
        4 => (slot(), slot(), any::<bool>()).prop_map(|(s, into, shared_tables)| Op::Fork { s, into, shared_tables }),
        4 => (slot(), range(), remap_len(), prop_oneof![1 => Just(false), 3 => Just(true)],
              prop_oneof![2 => Just(None), 1 => (0..WINDOW_PAGES).prop_map(Some)],
              prop_oneof![4 => Just(false), 1 => Just(true)])
            .prop_map(|(s, r, new_len, maymove, to, dontunmap)| Op::Mremap { s, r, new_len, maymove, to, dontunmap }),
        2 => slot().prop_map(|s| Op::Exit { s }),
        1 => slot().prop_map(|s| Op::NewAccessor { s }),
        10 => (slot(), addr(1), access_len(), via()).prop_map(|(s, addr, len, via)| Op::Read { s, addr, len, via }),
        3 => (slot(), addr(1), access_len()).prop_map(|(s, addr, len)| Op::Fetch { s, addr, len }),
        12 => (slot(), addr(1), access_len(), any::<u8>(), via())
            .prop_map(|(s, addr, len, seed, via)| Op::Write { s, addr, len, seed, via }),
        4 => (slot(), addr(1), access_len(), 1u8..=255, via())
            .prop_map(|(s, addr, len, byte, via)| Op::Fill { s, addr, len, byte, via }),
        4 => (slot(), addr(4), 1u64..1000).prop_map(|(s, addr, v)| Op::FetchAdd { s, addr, v }),
        2 => (slot(), addr(2)).prop_map(|(s, addr)| Op::Load32 { s, addr }),
        3 => (slot(), prop::collection::vec((addr(4), 1u64..1000), 1..=6))
            .prop_map(|(s, adds)| Op::BatchAdds { s, adds }),
        2 => (1usize..64).prop_map(|n| Op::Reclaim { n }),
        2 => (slot(), addr(PAGE)).prop_map(|(s, addr)| Op::Migrate { s, addr }),
        3 => (slot(), range(), any::<bool>()).prop_map(|(s, r, write)| Op::Pin { s, r, write }),
        2 => (0..MAX_PINS, 0..MAX_RANGE_PAGES * PAGE, access_len()).prop_map(|(p, off, len)| Op::PinRead { p, off, len }),
        2 => (0..MAX_PINS, 0..MAX_RANGE_PAGES * PAGE, access_len(), any::<u8>())
            .prop_map(|(p, off, len, seed)| Op::PinWrite { p, off, len, seed }),
        1 => (0..MAX_PINS).prop_map(|p| Op::Unpin { p }),
        3 => (slot(), range(), prop_oneof![2 => Just(true), 1 => Just(false)])
            .prop_map(|(s, r, lock)| Op::Mlock { s, r, lock }),
        2 => slot().prop_map(|s| Op::Snapshot { s }),
        3 => (slot(), 0..MAX_SNAPS).prop_map(|(s, k)| Op::Restore { s, k }),
    ]
}

/// A few mappings first, so that the random operations find memory to act on.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let mmap = (range(), prot(), kind()).prop_map(|(r, prot, kind)| Op::Mmap { s: 0, r, prot, kind, noreplace: false });
    (prop::collection::vec(mmap, 3..=6), prop::collection::vec(op(), 30..=56)).prop_map(|(mut a, b)| {
        a.extend(b);
        a
    })
}

/// The bytes a `Write` op stores: never zero, so they differ from fresh memory.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i as u8).wrapping_mul(13)) | 1).collect()
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

/// The bytes of one page of a shared object, as every mapping sees them.
type SharedPage = Rc<RefCell<Vec<u8>>>;

#[derive(Clone)]
enum Mem {
    /// Private memory: a value, copied on fork.
    Private(Vec<u8>),
    /// A page of a shared object: every mapping of it sees the same bytes.
    Shared(Rc<RefCell<Vec<u8>>>),
}

#[derive(Clone)]
struct Page {
    prot: Prot,
    mem: Mem,
    /// MADV_DONTFORK: a fork's child does not get the page.
    dontfork: bool,
    /// MADV_WIPEONFORK: a fork's child gets it zero-filled.
    wipe: bool,
    /// MADV_FREE and not written since: reclaim may have dropped it.
    lazy: bool,
    /// In a `VM_LOCKED` VMA (mlock): reclaim never takes it once resident;
    /// DONTNEED, FREE, COLD, PAGEOUT and REMOVE refuse it (EINVAL).
    locked: bool,
}

impl Page {
    fn new(prot: Prot, kind: MapKind) -> Page {
        let zeros = vec![0u8; PAGE as usize];
        let mem = match kind {
            MapKind::Private => Mem::Private(zeros),
            MapKind::Shared => Mem::Shared(Rc::new(RefCell::new(zeros))),
        };
        Page { prot, mem, dontfork: false, wipe: false, lazy: false, locked: false }
    }

    fn kind(&self) -> MapKind {
        match self.mem {
            Mem::Private(_) => MapKind::Private,
            Mem::Shared(_) => MapKind::Shared,
        }
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        match &mut self.mem {
            Mem::Private(v) => f(v),
            Mem::Shared(p) => f(&mut p.borrow_mut()),
        }
    }
}

/// One address space of the model: virtual page number -> page.
#[derive(Clone, Default)]
struct Space {
    pages: BTreeMap<u64, Page>,
}

fn npages(len: u64) -> u64 {
    len.div_ceil(PAGE)
}

impl Space {
    fn vpns(addr: u64, len: u64) -> std::ops::Range<u64> {
        addr / PAGE..addr / PAGE + npages(len)
    }

    fn mmap(&mut self, addr: u64, len: u64, prot: Prot, kind: MapKind, noreplace: bool) -> Result<u64, i32> {
        if len == 0 || addr % PAGE != 0 {
            return Err(errno::EINVAL);
        }
        if noreplace && Self::vpns(addr, len).any(|v| self.pages.contains_key(&v)) {
            return Err(17); // EEXIST
        }
        for v in Self::vpns(addr, len) {
            self.pages.insert(v, Page::new(prot, kind));
        }
        Ok(addr)
    }

    fn munmap(&mut self, addr: u64, len: u64) -> Result<(), i32> {
        if len == 0 || addr % PAGE != 0 {
            return Err(errno::EINVAL);
        }
        for v in Self::vpns(addr, len) {
            self.pages.remove(&v);
        }
        Ok(())
    }

    /// Pages in address order up to the first hole change; the hole is ENOMEM.
    fn mprotect(&mut self, addr: u64, len: u64, prot: Prot) -> Result<(), i32> {
        if addr % PAGE != 0 {
            return Err(errno::EINVAL);
        }
        for v in Self::vpns(addr, len) {
            match self.pages.get_mut(&v) {
                Some(p) => p.prot = prot,
                None => return Err(errno::ENOMEM),
            }
        }
        Ok(())
    }

    /// Every mapped page is dropped (private: back to zeros; shared: kept);
    /// any hole makes it ENOMEM.
    fn dontneed(&mut self, addr: u64, len: u64) -> Result<(), i32> {
        if addr % PAGE != 0 {
            return Err(errno::EINVAL);
        }
        let mut hole = false;
        for v in Self::vpns(addr, len) {
            if self.pages.get(&v).is_some_and(|p| p.locked) {
                // madvise_dontneed_free_valid_vma: at once, earlier pages done.
                return Err(errno::EINVAL);
            }
            match self.pages.get_mut(&v) {
                Some(Page { mem: Mem::Private(bytes), lazy, .. }) => {
                    bytes.fill(0);
                    *lazy = false;
                }
                Some(_) => {}
                None => hole = true,
            }
        }
        if hole {
            Err(errno::ENOMEM)
        } else {
            Ok(())
        }
    }

    /// madvise with any advice but DONTNEED and FREE, page by page in
    /// address order as Linux walks VMAs: populate stops at a hole
    /// (ENOMEM) or a page without the access (EINVAL); the others stop at
    /// a page the advice does not apply to (EINVAL) and answer ENOMEM at
    /// the end for holes. Also returns the shared pages REMOVE punched.
    fn madvise(&mut self, addr: u64, len: u64, advice: Advice) -> (Result<(), i32>, Vec<SharedPage>) {
        let mut punched = Vec::new();
        if addr % PAGE != 0 {
            return (Err(errno::EINVAL), punched);
        }
        let populate = matches!(advice, Advice::PopulateRead | Advice::PopulateWrite);
        let mut hole = false;
        for v in Self::vpns(addr, len) {
            let Some(p) = self.pages.get_mut(&v) else {
                if populate {
                    return (Err(errno::ENOMEM), punched);
                }
                hole = true;
                continue;
            };
            let shared = p.kind() == MapKind::Shared;
            let refused = match advice {
                // VM_READ itself, not x86's readable write-only pages.
                Advice::PopulateRead => ![Prot::READ, Prot::RW, Prot::RX, Prot::RWX].contains(&p.prot),
                Advice::PopulateWrite => !p.prot.writable(),
                Advice::Free | Advice::Cold | Advice::PageOut | Advice::Remove if p.locked => true,
                Advice::Remove => !shared,
                Advice::WipeOnFork | Advice::Free => shared,
                _ => false,
            };
            if refused {
                return (Err(errno::EINVAL), punched);
            }
            match advice {
                Advice::Remove => {
                    if let Mem::Shared(rc) = &p.mem {
                        punched.push(rc.clone());
                    }
                }
                Advice::Free => p.lazy = true,
                // A write fault dirties the entry: the page is kept.
                Advice::PopulateWrite => p.lazy = false,
                Advice::DontFork => p.dontfork = true,
                Advice::DoFork => p.dontfork = false,
                Advice::WipeOnFork => p.wipe = true,
                Advice::KeepOnFork => p.wipe = false,
                _ => {}
            }
        }
        (if hole { Err(errno::ENOMEM) } else { Ok(()) }, punched)
    }

    /// The space a fork's child gets: no DONTFORK page, WIPEONFORK pages
    /// zero-filled (and still marked so).
    fn forked(&self) -> Space {
        let mut child = self.clone();
        child.pages.retain(|_, p| !p.dontfork);
        // A child's VMAs lose VM_LOCKED (dup_mmap).
        for p in child.pages.values_mut() {
            p.locked = false;
        }
        for p in child.pages.values_mut().filter(|p| p.wipe) {
            p.mem = Mem::Private(vec![0u8; PAGE as usize]);
        }
        child
    }

    /// A CPU-like access of `[addr, addr+len)`, page by page: the first page
    /// that faults stops it (earlier pages have been transferred). `f` gets
    /// each page's bytes, the offset in the page and the offset in the buffer.
    fn access(
        &mut self,
        addr: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&mut [u8], usize, usize, usize),
    ) -> Result<(), Error> {
        let end = addr + len as u64;
        let mut va = addr;
        while va < end {
            let hi = ((va / PAGE + 1) * PAGE).min(end);
            let Some(page) = self.pages.get_mut(&(va / PAGE)) else {
                return Err(Error::Segv { addr: va, kind: SegvKind::MapErr });
            };
            // x86: any protection but none is readable; write needs write.
            let ok = if write { page.prot.writable() } else { page.prot != Prot::NONE };
            if !ok {
                return Err(Error::Segv { addr: va, kind: SegvKind::AccErr });
            }
            let off = (va % PAGE) as usize;
            let lo = (va - addr) as usize;
            // A store dirties the entry: a lazily freed page is kept.
            page.lazy &= !write;
            page.with(|bytes| f(bytes, off, lo, lo + (hi - va) as usize));
            va = hi;
        }
        Ok(())
    }

    /// An instruction fetch: every page needs PROT_EXEC (x86-64 with NX),
    /// the first that lacks it faults; then it reads.
    fn fetch(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, Error> {
        let end = addr + len as u64;
        let mut va = addr;
        while va < end {
            match self.pages.get(&(va / PAGE)) {
                None => return Err(Error::Segv { addr: va, kind: SegvKind::MapErr }),
                Some(p) if !p.prot.executable() => return Err(Error::Segv { addr: va, kind: SegvKind::AccErr }),
                Some(_) => va = ((va / PAGE + 1) * PAGE).min(end),
            }
        }
        self.read(addr, len)
    }

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, Error> {
        let mut out = vec![0u8; len];
        self.access(addr, len, false, |b, off, lo, hi| out[lo..hi].copy_from_slice(&b[off..off + hi - lo]))?;
        Ok(out)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Error> {
        self.access(addr, data.len(), true, |b, off, lo, hi| b[off..off + hi - lo].copy_from_slice(&data[lo..hi]))
    }

    /// mlock (`lock`) or munlock of the pages `addr..addr + len` touches:
    /// page by page in address order up to the first hole (ENOMEM; nothing
    /// when the first page is a hole). Population is checked by the caller.
    fn set_locked(&mut self, addr: u64, len: u64, lock: bool) -> Result<(), i32> {
        let (start, end) = (addr & !(PAGE - 1), (addr + len).next_multiple_of(PAGE));
        for v in start / PAGE..end / PAGE {
            match self.pages.get_mut(&v) {
                Some(p) => p.locked = lock,
                None => return Err(errno::ENOMEM),
            }
        }
        Ok(())
    }

    /// What `mappings()` should show, page by page.
    fn layout(&self) -> BTreeMap<u64, (Prot, MapKind)> {
        self.pages.iter().map(|(&v, p)| (v, (p.prot, p.kind()))).collect()
    }
}

/// What one pinned page shows the pinner.
#[derive(Clone)]
enum PinPage {
    /// The private page of the pin's address space at its address: the
    /// pinner sees every write the space makes there (pin rules, `mm/pin.rs`).
    /// (`Attached(vpn)`: the page now at `vpn`, where mremap may have moved it.)
    Attached(u64),
    /// The space let go of the page (munmap, DONTNEED, mmap over it, exit):
    /// the pinner keeps the frame, with the bytes it had then.
    /// Shared by every pin that was attached to the page: one frame.
    Frozen(Rc<RefCell<Vec<u8>>>),
    /// A page of a shared object: the object's one frame.
    Shared(Rc<RefCell<Vec<u8>>>),
}

/// A pin in the model.
struct ModelPin {
    s: usize,
    addr: u64,
    len: u64,
    write: bool,
    pages: Vec<PinPage>,
}

impl ModelPin {
    fn first_vpn(&self) -> u64 {
        self.addr / PAGE
    }
}

/// How a pin's failure compares: the fault kind and page, or the errno.
fn pin_err(e: &Error) -> String {
    match e {
        Error::Segv { addr, kind } => format!("segv {kind} at page {:#x}", addr / PAGE),
        e => format!("errno {}", e.errno()),
    }
}

impl Space {
    /// What `pin_pages` gives: the pages, or the first page's fault.
    fn pin(&self, addr: u64, len: u64, write: bool) -> Result<Vec<PinPage>, String> {
        if len == 0 {
            return Err(format!("errno {}", errno::EINVAL));
        }
        let mut pages = Vec::new();
        // Every page the range touches (it need not be page-aligned).
        for v in addr / PAGE..=(addr + len - 1) / PAGE {
            let Some(p) = self.pages.get(&v) else { return Err(format!("segv maperr at page {v:#x}")) };
            let ok = if write { p.prot.writable() } else { p.prot != Prot::NONE };
            if !ok {
                return Err(format!("segv accerr at page {v:#x}"));
            }
            pages.push(match &p.mem {
                Mem::Private(_) => PinPage::Attached(v),
                Mem::Shared(rc) => PinPage::Shared(rc.clone()),
            });
        }
        Ok(pages)
    }
}

// ---------------------------------------------------------------------------
// The system under test, side by side with the model
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Slot {
    mm: Option<Mm>,
    /// Outlives `mm` after `Exit`, until the slot is reused.
    acc: Option<Accessor>,
    /// `Some` exactly when `mm` is.
    model: Option<Space>,
}

struct World {
    machine: Machine,
    slots: Vec<Slot>,
    pins: Vec<(softmm::PinnedPages, ModelPin)>,
    /// Snapshots and the model of their space when taken.
    snaps: Vec<(softmm::Snapshot, Space)>,
}

type Res = Result<(), String>;

macro_rules! ensure_eq {
    ($a:expr, $b:expr, $($ctx:tt)*) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!("{}: softmm gave {:?}, the model {:?}", format!($($ctx)*), a, b));
        }
    }};
}

fn errno_of<T>(r: &softmm::Result<T>) -> Result<(), i32> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(e.errno()),
    }
}

fn unit<T, E: Clone>(r: &Result<T, E>) -> Result<(), E> {
    r.as_ref().map(|_| ()).map_err(E::clone)
}

/// The accessor-path result of an access by an accessor whose address space
/// has exited: it sees nothing mapped.
fn exited<T>(addr: u64, len: usize, ok: T) -> Result<T, Error> {
    if len == 0 {
        Ok(ok)
    } else {
        Err(Error::Segv { addr, kind: SegvKind::MapErr })
    }
}

/// Check an accessor's (or a batch's) `fetch_add_u64(addr, v)` result
/// `got` against the model, applying it there.
fn check_fetch_add(model: &mut Option<Space>, addr: u64, v: u64, got: softmm::Result<u64>, what: &str) -> Res {
    if addr % 8 != 0 {
        if !matches!(got, Err(Error::Misaligned { .. })) {
            return Err(format!("{what} at {addr:#x}: {got:?}, want Misaligned"));
        }
        return Ok(());
    }
    let want = match model {
        None => exited(addr, 8, 0),
        Some(model) => {
            // One write access to one word (aligned words never cross a page).
            let mut old = 0;
            model
                .access(addr, 8, true, |b, off, _, _| {
                    let w: &mut [u8; 8] = (&mut b[off..off + 8]).try_into().unwrap();
                    old = u64::from_ne_bytes(*w);
                    *w = old.wrapping_add(v).to_ne_bytes();
                })
                .map(|()| old)
        }
    };
    ensure_eq!(got, want, "{what}");
    Ok(())
}

impl World {
    fn new() -> World {
        // A swap device, so that `Reclaim` steps swap pages out (no frame
        // limit: the steps decide when).
        let swap = std::sync::Arc::new(softmm::reclaim::device::MemSwap::new(16 << 20).expect("swap"));
        let machine =
            Machine::new(Config { arena_bytes: 32 << 20, swap: SwapConfig::Device(swap), ..Config::default() })
                .expect("arena");
        let mut slots: Vec<Slot> = (0..SLOTS).map(|_| Slot::default()).collect();
        let mm = machine.new_mm().expect("new_mm");
        slots[0] = Slot { acc: Some(mm.accessor()), mm: Some(mm), model: Some(Space::default()) };
        World { machine, slots, pins: Vec::new(), snaps: Vec::new() }
    }

    /// Lazily freed pages (MADV_FREE, not written since) that reclaim may
    /// have dropped: read each readable one through its space and take
    /// what it holds: its bytes, or zeros once dropped (it is then an
    /// ordinary zero page). Anything else is a lost or corrupted page.
    fn settle_lazy(&mut self) -> Res {
        for slot in &mut self.slots {
            let (Some(mm), Some(model)) = (&slot.mm, &mut slot.model) else { continue };
            for (&v, p) in model.pages.iter_mut().filter(|(_, p)| p.lazy && p.prot != Prot::NONE) {
                let mut buf = vec![0u8; PAGE as usize];
                if mm.read(v * PAGE, &mut buf).is_err() {
                    continue;
                }
                let Mem::Private(bytes) = &mut p.mem else { continue };
                if buf == *bytes {
                    continue;
                }
                if buf.iter().any(|&b| b != 0) {
                    return Err(format!("lazily freed page {:#x} holds neither its bytes nor zeros", v * PAGE));
                }
                *bytes = buf;
                p.lazy = false;
            }
        }
        Ok(())
    }

    /// Shared pages punched out of their object: every space that maps
    /// one sees a fresh zero page from now on (a pin keeps the old one).
    fn punch(&mut self, punched: &[SharedPage]) {
        for old in punched {
            let fresh = Rc::new(RefCell::new(vec![0u8; PAGE as usize]));
            let kept = self.snaps.iter_mut().map(|(_, m)| m);
            for model in self.slots.iter_mut().filter_map(|s| s.model.as_mut()).chain(kept) {
                for p in model.pages.values_mut() {
                    if let Mem::Shared(rc) = &mut p.mem {
                        if Rc::ptr_eq(rc, old) {
                            *rc = fresh.clone();
                        }
                    }
                }
            }
        }
    }

    fn install(&mut self, s: usize, mm: Mm, model: Space) {
        let slot = &mut self.slots[s];
        // A zombie accessor left in the slot goes now.
        slot.acc = Some(mm.accessor());
        slot.mm = Some(mm);
        slot.model = Some(model);
    }

    /// The `s`-th (modulo) slot with a live address space, or with an
    /// accessor, so that most operations hit something.
    fn pick(&self, s: usize, accessor: bool) -> Option<usize> {
        let cands: Vec<usize> = (0..SLOTS)
            .filter(|&i| if accessor { self.slots[i].acc.is_some() } else { self.slots[i].mm.is_some() })
            .collect();
        (!cands.is_empty()).then(|| cands[s % cands.len()])
    }

    /// The operation with its slot index resolved by `pick` (`New` and the
    /// target of `Fork` name a slot directly). `None`: nothing to act on.
    fn resolve(&self, op: &Op) -> Option<Op> {
        let mut op = op.clone();
        let (s, accessor) = match &mut op {
            Op::New { .. } | Op::Reclaim { .. } => return Some(op),
            Op::Restore { s, k } => {
                if self.snaps.is_empty() {
                    return None;
                }
                *k %= self.snaps.len();
                (s, false)
            }
            Op::PinRead { p, .. } | Op::PinWrite { p, .. } | Op::Unpin { p } => {
                if self.pins.is_empty() {
                    return None;
                }
                *p %= self.pins.len();
                return Some(op);
            }
            Op::Read { s, via, .. } | Op::Write { s, via, .. } | Op::Fill { s, via, .. } => {
                (s, matches!(via, Via::Acc))
            }
            Op::FetchAdd { s, .. } | Op::Load32 { s, .. } | Op::BatchAdds { s, .. } | Op::Fetch { s, .. } => (s, true),
            Op::Migrate { s, .. } | Op::Pin { s, .. } => (s, false),
            Op::Mmap { s, .. }
            | Op::Munmap { s, .. }
            | Op::Mprotect { s, .. }
            | Op::DontNeed { s, .. }
            | Op::Madvise { s, .. }
            | Op::Mremap { s, .. }
            | Op::Mlock { s, .. }
            | Op::Fork { s, .. }
            | Op::Exit { s }
            | Op::Snapshot { s }
            | Op::NewAccessor { s } => (s, false),
        };
        *s = self.pick(*s, accessor)?;
        Some(op)
    }

    fn step(&mut self, op: &Op) -> Res {
        self.settle_lazy()?;
        match *op {
            Op::New { s } => {
                if self.slots[s].mm.is_none() {
                    let mm = self.machine.new_mm().map_err(|e| format!("new_mm: {e}"))?;
                    self.install(s, mm, Space::default());
                }
            }
            Op::Mmap { s, r, prot, kind, noreplace } => {
                let replaces = self.slots[s]
                    .model
                    .as_ref()
                    .is_some_and(|m| !(noreplace && Space::vpns(r.addr(), r.len).any(|v| m.pages.contains_key(&v))));
                if replaces {
                    self.detach_range(s, r);
                }
                let Slot { mm: Some(mm), model: Some(model), .. } = &mut self.slots[s] else { return Ok(()) };
                let place = if noreplace { Placement::FixedNoReplace } else { Placement::Fixed };
                let got = mm.mmap(r.addr(), r.len, prot, kind, place);
                let want = model.mmap(r.addr(), r.len, prot, kind, noreplace);
                ensure_eq!(got.as_ref().map_err(Error::errno).copied(), want, "mmap");
            }
            Op::Munmap { s, r } => {
                self.detach_range(s, r);
                let Slot { mm: Some(mm), model: Some(model), .. } = &mut self.slots[s] else { return Ok(()) };
                ensure_eq!(errno_of(&mm.munmap(r.addr(), r.len)), model.munmap(r.addr(), r.len), "munmap");
            }
            Op::Mprotect { s, r, prot } => {
                let Slot { mm: Some(mm), model: Some(model), .. } = &mut self.slots[s] else { return Ok(()) };
                let got = errno_of(&mm.mprotect(r.addr(), r.len, prot));
                ensure_eq!(got, model.mprotect(r.addr(), r.len, prot), "mprotect");
            }
            Op::DontNeed { s, r } => {
                // Pins stop seeing only the pages DONTNEED drops: none for a
                // misaligned start, else those before the first mlocked
                // page, where it stops (EINVAL).
                let dropped: Vec<u64> = match &self.slots[s].model {
                    Some(m) if r.addr() % PAGE == 0 => {
                        Space::vpns(r.addr(), r.len).take_while(|v| !m.pages.get(v).is_some_and(|p| p.locked)).collect()
                    }
                    _ => Vec::new(),
                };
                self.detach(s, |v| dropped.contains(&v));
                let Slot { mm: Some(mm), model: Some(model), .. } = &mut self.slots[s] else { return Ok(()) };
                let got = errno_of(&mm.madvise(r.addr(), r.len, Advice::DontNeed));
                ensure_eq!(got, model.dontneed(r.addr(), r.len), "madvise(DONTNEED)");
            }
            Op::Madvise { s, r, advice } => {
                let Slot { mm: Some(mm), model: Some(model), .. } = &mut self.slots[s] else { return Ok(()) };
                let got = errno_of(&mm.madvise(r.addr(), r.len, advice));
                let (want, punched) = model.madvise(r.addr(), r.len, advice);
                ensure_eq!(got, want, "madvise({advice:?})");
                self.punch(&punched);
            }
            Op::Mremap { s, r, new_len, maymove, to, dontunmap } => {
                // `u64::MAX` stands for the old length (a move that keeps it).
                let new_len = if new_len == u64::MAX { r.len.max(1) } else { new_len };
                self.mremap(s, r, new_len, maymove, to.map(|p| BASE + p * PAGE), dontunmap)?;
            }
            Op::Fork { s, into, shared_tables } => {
                if s == into || self.slots[s].mm.is_none() {
                    return Ok(());
                }
                // Whatever lived in the target slot exits first.
                self.detach(into, |_| true);
                self.slots[into] = Slot::default();
                let Slot { mm: Some(mm), model: Some(model), .. } = &self.slots[s] else { unreachable!() };
                let policy = if shared_tables { ForkPolicy::SharedTables } else { ForkPolicy::CopyTables };
                let child = mm.fork_with(policy).map_err(|e| format!("fork: {e}"))?;
                let child_model = model.forked();
                self.install(into, child, child_model);
            }
            Op::Snapshot { s } => {
                let Slot { mm: Some(mm), model: Some(model), .. } = &self.slots[s] else { return Ok(()) };
                let snap = mm.snapshot().map_err(|e| format!("snapshot: {e}"))?;
                let copy = model.clone();
                if self.snaps.len() == MAX_SNAPS {
                    self.snaps.remove(0);
                }
                self.snaps.push((snap, copy));
            }
            Op::Restore { s, k } => {
                if self.pins.iter().any(|(_, mp)| mp.s == s) {
                    return Ok(());
                }
                let World { slots, snaps, .. } = self;
                let Slot { mm: Some(mm), model: Some(model), .. } = &mut slots[s] else { return Ok(()) };
                let (snap, copy) = &snaps[k];
                let got = mm.restore(snap);
                if snap.of() != mm.id() {
                    ensure_eq!(errno_of(&got), Err(errno::EINVAL), "restore to another space's snapshot");
                    return Ok(());
                }
                // A changed page whose frame another space pinned (shared
                // memory, a read pin of a COW page) refuses the restore.
                if errno_of(&got) == Err(errno::EBUSY) && !self.pins.is_empty() {
                    return Ok(());
                }
                got.map_err(|e| format!("restore: {e}"))?;
                *model = copy.clone();
            }
            Op::Exit { s } => {
                self.detach(s, |_| true);
                let slot = &mut self.slots[s];
                if let Some(mm) = slot.mm.take() {
                    mm.exit();
                }
                slot.model = None;
            }
            Op::NewAccessor { s } => {
                let slot = &mut self.slots[s];
                if let Some(mm) = &slot.mm {
                    slot.acc = Some(mm.accessor());
                }
            }
            Op::Read { s, addr: Addr(addr), len, via } => {
                let slot = &mut self.slots[s];
                let mut buf = vec![0u8; len];
                let got = match via {
                    Via::Mm => match &slot.mm {
                        Some(mm) => mm.read(addr, &mut buf),
                        None => return Ok(()),
                    },
                    Via::Acc => match &mut slot.acc {
                        Some(acc) => acc.read(addr, &mut buf),
                        None => return Ok(()),
                    },
                };
                let want = match &mut slot.model {
                    Some(model) => model.read(addr, len),
                    None => exited(addr, len, vec![0; len]),
                };
                ensure_eq!(unit(&got), unit(&want), "read {via:?}");
                if let Ok(want) = want {
                    if buf != want {
                        let at = buf.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                        return Err(format!(
                            "read {via:?}: bytes differ first at {:#x}: softmm {:#04x}, model {:#04x}",
                            addr + at as u64,
                            buf[at],
                            want[at]
                        ));
                    }
                }
            }
            Op::Fetch { s, addr: Addr(addr), len } => {
                let slot = &mut self.slots[s];
                let Some(acc) = &mut slot.acc else { return Ok(()) };
                let mut buf = vec![0u8; len];
                let got = acc.fetch(addr, &mut buf);
                let want = match &mut slot.model {
                    Some(model) => model.fetch(addr, len),
                    None => exited(addr, len, vec![0; len]),
                };
                ensure_eq!(unit(&got), unit(&want), "fetch");
                if let Ok(want) = want {
                    ensure_eq!(buf, want, "fetched bytes");
                }
            }
            Op::Write { s, addr: Addr(addr), len, seed, via } => {
                let data = pattern(seed, len);
                self.write_like(s, addr, &data, via, |mm, acc| match (mm, acc) {
                    (Some(mm), _) => mm.write(addr, &data),
                    (_, Some(acc)) => acc.write(addr, &data),
                    _ => unreachable!(),
                })?;
            }
            Op::Fill { s, addr: Addr(addr), len, byte, via } => {
                let data = vec![byte; len];
                self.write_like(s, addr, &data, via, |mm, acc| match (mm, acc) {
                    (Some(mm), _) => mm.fill(addr, len, byte),
                    (_, Some(acc)) => acc.fill_bytes(addr, len, byte),
                    _ => unreachable!(),
                })?;
            }
            Op::FetchAdd { s, addr: Addr(addr), v } => {
                let slot = &mut self.slots[s];
                let Some(acc) = &mut slot.acc else { return Ok(()) };
                let got = acc.fetch_add_u64(addr, v);
                check_fetch_add(&mut slot.model, addr, v, got, "fetch_add_u64")?;
            }
            Op::BatchAdds { s, ref adds } => {
                let slot = &mut self.slots[s];
                let Some(acc) = &mut slot.acc else { return Ok(()) };
                let mut batch = acc.batch();
                for &(Addr(addr), v) in adds {
                    let got = batch.fetch_add_u64(addr, v);
                    check_fetch_add(&mut slot.model, addr, v, got, "batch fetch_add_u64")?;
                }
            }
            Op::Load32 { s, addr: Addr(addr) } => {
                let slot = &mut self.slots[s];
                let Some(acc) = &mut slot.acc else { return Ok(()) };
                let got = acc.load_u32(addr);
                if addr % 4 != 0 {
                    if !matches!(got, Err(Error::Misaligned { .. })) {
                        return Err(format!("load_u32 at {addr:#x}: {got:?}, want Misaligned"));
                    }
                    return Ok(());
                }
                let want = match &mut slot.model {
                    None => exited(addr, 4, 0),
                    Some(model) => model.read(addr, 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap())),
                };
                ensure_eq!(got, want, "load_u32");
            }
            Op::Reclaim { n } => {
                let resident = self.locked_resident();
                self.machine.reclaim(n);
                for (s, v, f) in resident {
                    let now = self.slots[s].mm.as_ref().and_then(|mm| mm.phys(v * PAGE));
                    ensure_eq!(now, Some(f), "reclaim of locked page {:#x} in slot {s}", v * PAGE);
                }
            }
            Op::Mlock { s, r, lock } => {
                let Slot { mm: Some(mm), model: Some(model), .. } = &mut self.slots[s] else { return Ok(()) };
                let got = errno_of(&if lock { mm.mlock(r.addr(), r.len) } else { mm.munlock(r.addr(), r.len) });
                let want = model.set_locked(r.addr(), r.len, lock);
                // Locking populates; a PROT_NONE page cannot be faulted in
                // (ENOMEM from mlock, the flags set all the same).
                let none = Space::vpns(r.addr() & !(PAGE - 1), r.len + r.addr() % PAGE)
                    .any(|v| model.pages.get(&v).is_some_and(|p| p.prot == Prot::NONE));
                if !(lock && want.is_ok() && none && got == Err(errno::ENOMEM)) {
                    ensure_eq!(got, want, "{}", if lock { "mlock" } else { "munlock" });
                }
                if lock && got.is_ok() {
                    for v in Space::vpns(r.addr() & !(PAGE - 1), r.len + r.addr() % PAGE) {
                        let populated = mm.phys(v * PAGE).is_some();
                        ensure_eq!(populated, true, "page {:#x} after mlock", v * PAGE);
                    }
                }
            }
            Op::Migrate { s, addr: Addr(addr) } => {
                let Some(mm) = &self.slots[s].mm else { return Ok(()) };
                match mm.migrate(addr) {
                    Ok(_) | Err(Error::Fault { .. }) | Err(Error::Invalid(_)) | Err(Error::Busy(_)) => {}
                    Err(e) => return Err(format!("migrate {addr:#x}: {e}")),
                }
            }
            Op::Pin { s, r, write } => {
                let Slot { mm: Some(mm), model: Some(model), .. } = &self.slots[s] else { return Ok(()) };
                if self.pins.len() >= MAX_PINS {
                    return Ok(());
                }
                let got = mm.pin_pages(r.addr(), r.len, write);
                let want = model.pin(r.addr(), r.len, write);
                ensure_eq!(
                    got.as_ref().map(|_| ()).map_err(pin_err),
                    want.as_ref().map(|_| ()).map_err(String::clone),
                    "pin"
                );
                if let (Ok(pinned), Ok(pages)) = (got, want) {
                    self.pins.push((pinned, ModelPin { s, addr: r.addr(), len: r.len, write, pages }));
                }
            }
            Op::PinRead { p, off, len } => {
                let (pinned, mp) = &self.pins[p];
                let addr = mp.addr + off;
                let mut buf = vec![0u8; len];
                let got = pinned.read(addr, &mut buf).map(|()| buf);
                let want = self.pin_read(mp, addr, len);
                ensure_eq!(got.map_err(|e| e.errno()), want, "read through pin {p}");
            }
            Op::PinWrite { p, off, len, seed } => {
                let data = pattern(seed, len);
                let addr = self.pins[p].1.addr + off;
                let got = self.pins[p].0.write(addr, &data).map_err(|e| e.errno());
                let want = self.pin_write(p, addr, &data);
                ensure_eq!(got, want, "write through pin {p}");
            }
            Op::Unpin { p } => {
                self.pins.remove(p);
            }
        }
        Ok(())
    }

    /// Pages of slot `s` for which `hit(vpn)` holds stop being what pins
    /// see: each such pinned private page keeps its bytes as they are now.
    fn detach(&mut self, s: usize, hit: impl Fn(u64) -> bool) {
        let model = self.slots[s].model.as_ref();
        // Pins of one page hold one frame: they freeze into one copy.
        let mut frozen: std::collections::HashMap<u64, Rc<RefCell<Vec<u8>>>> = Default::default();
        for (_, mp) in self.pins.iter_mut().filter(|(_, mp)| mp.s == s) {
            for pg in mp.pages.iter_mut() {
                let PinPage::Attached(vpn) = *pg else { continue };
                if hit(vpn) {
                    let bytes = match model.and_then(|m| m.pages.get(&vpn)).map(|p| &p.mem) {
                        Some(Mem::Private(v)) => v.clone(),
                        _ => unreachable!("an attached pin on page {vpn:#x} that is not private memory"),
                    };
                    *pg = PinPage::Frozen(frozen.entry(vpn).or_insert_with(|| Rc::new(RefCell::new(bytes))).clone());
                }
            }
        }
    }

    /// mremap on softmm and in the model (see `Op::Mremap`).
    fn mremap(&mut self, s: usize, r: Range, new_len: u64, maymove: bool, to: Option<u64>, dontunmap: bool) -> Res {
        let (old, old_len) = (r.addr(), r.len);
        let align = |l: u64| l.wrapping_add(PAGE - 1) & !(PAGE - 1);
        let (mut ol, nl) = (align(old_len), align(new_len));
        {
            // Growth of shared memory past its object (SIGBUS there) and
            // duplication are left to the corpus: skip them.
            let Some(model) = self.slots[s].model.as_ref() else { return Ok(()) };
            let shared =
                Space::vpns(old, ol.max(1)).any(|v| model.pages.get(&v).is_some_and(|p| p.kind() == MapKind::Shared));
            if old % PAGE == 0 && shared && (nl > ol || ol == 0) {
                return Ok(());
            }
        }
        if dontunmap && self.locked_run(s, old, ol) {
            // DONTUNMAP unlocks the whole old VMA, whose ends the model
            // does not know: left to the corpus and tests/mremap.rs.
            return Ok(());
        }
        let mut flags = softmm::RemapFlags::NONE;
        for (on, f) in [
            (maymove, softmm::RemapFlags::MAYMOVE),
            (to.is_some(), softmm::RemapFlags::FIXED),
            (dontunmap, softmm::RemapFlags::DONTUNMAP),
        ] {
            if on {
                flags = flags.union(f);
            }
        }
        let Some(mm) = self.slots[s].mm.as_ref() else { return Ok(()) };
        let got = mm.mremap(old, old_len, new_len, flags, to.unwrap_or(0));
        let got_errno = got.as_ref().map(|_| ()).map_err(Error::errno);
        let moving = to.is_some() || dontunmap;
        let t = to.unwrap_or(0);
        let einval = old % PAGE != 0
            || nl == 0
            || (moving && (!maymove || (dontunmap && ol != nl) || (old.saturating_add(ol) > t && t + nl > old)));
        if einval {
            ensure_eq!(got_errno, Err(errno::EINVAL), "mremap arguments");
            return Ok(());
        }
        let mapped = |w: &World, v: u64| w.slots[s].model.as_ref().is_some_and(|m| m.pages.contains_key(&v));
        if !mapped(self, old / PAGE) {
            ensure_eq!(got_errno, Err(errno::EFAULT), "mremap of an unmapped address");
            return Ok(());
        }
        let unmap = |w: &mut World, a: u64, l: u64| {
            let vpns = Space::vpns(a, l);
            w.detach(s, |v| vpns.contains(&v));
            if let Some(m) = w.slots[s].model.as_mut() {
                let _ = m.munmap(a, l);
            }
        };
        if !moving && ol >= nl {
            // A shrink: the tail goes, whatever it covers.
            unmap(self, old + nl, ol - nl);
            ensure_eq!(got.as_ref().ok(), Some(&old), "mremap shrinking");
            return Ok(());
        }
        let private = self.slots[s].model.as_ref().and_then(|m| m.pages.get(&(old / PAGE))).map(Page::kind)
            == Some(MapKind::Private);
        if ol == 0 && private {
            ensure_eq!(got_errno, Err(errno::EINVAL), "mremap duplicating private memory");
            return Ok(());
        }
        if let (Some(t), true) = (to, ol == nl) {
            // Every mapping of the range moves, each page to its offset
            // from `t` (gaps stay gaps, and the target's pages facing them
            // stay).
            ensure_eq!(got.as_ref().ok(), Some(&t), "mremap moving the mappings of a range");
            let vpns: Vec<u64> = Space::vpns(old, ol).filter(|&v| mapped(self, v)).collect();
            for v in vpns {
                unmap(self, t + (v * PAGE - old), PAGE);
            }
            self.apply_remap(s, old, ol, t, nl, dontunmap);
            return Ok(());
        }
        // Checked before anything is unmapped; a shrink's tail may cross.
        if Space::vpns(old, ol.min(nl)).any(|v| !mapped(self, v)) {
            ensure_eq!(got_errno, Err(errno::EFAULT), "mremap of a range with a hole");
            return Ok(());
        }
        let at = match got {
            // VMA boundaries the model does not know: nothing changed.
            Err(e) if e.errno() == errno::EFAULT => return Ok(()),
            Err(e) if e.errno() == errno::ENOMEM && !maymove && nl > ol => return Ok(()),
            Err(e) => return Err(format!("mremap: softmm gave {e}, the model expects success or EFAULT")),
            Ok(at) => at,
        };
        if let Some(t) = to {
            ensure_eq!(at, t, "mremap fixed address");
            unmap(self, t, nl);
        }
        if ol > nl {
            unmap(self, old + nl, ol - nl);
            ol = nl;
        }
        if at == old {
            ensure_eq!(moving, false, "mremap moved in place");
            let free = Space::vpns(old + ol, nl - ol).all(|v| !mapped(self, v));
            ensure_eq!(free, true, "mremap grew in place over mapped pages");
        } else {
            ensure_eq!(maymove, true, "mremap moved without MAYMOVE");
        }
        self.apply_remap(s, old, ol, at, nl, dontunmap);
        Ok(())
    }

    /// The model's move of `[old, old + ol)` to `at` (in place when equal),
    /// grown to `nl` with zero pages like the first one.
    fn apply_remap(&mut self, s: usize, old: u64, ol: u64, at: u64, nl: u64, dontunmap: bool) {
        let Some(model) = self.slots[s].model.as_mut() else { return };
        let Some(first) = model.pages.get(&(old / PAGE)).cloned() else { return };
        let fresh = |p: &Page| Page {
            prot: p.prot,
            mem: match &p.mem {
                Mem::Private(_) => Mem::Private(vec![0u8; PAGE as usize]),
                Mem::Shared(rc) => Mem::Shared(rc.clone()),
            },
            dontfork: p.dontfork,
            wipe: p.wipe,
            lazy: false,
            // Growth stays in the VMA (and its lock); DONTUNMAP's old
            // range is not locked (the caller skips locked ones).
            locked: p.locked && !dontunmap,
        };
        let (from, dest) = (old / PAGE, at / PAGE);
        if at != old {
            let moved: Vec<(u64, Page)> =
                Space::vpns(old, ol).filter_map(|v| model.pages.remove(&v).map(|p| (v, p))).collect();
            for (v, p) in moved {
                if dontunmap {
                    model.pages.insert(v, fresh(&p));
                }
                model.pages.insert(v - from + dest, p);
            }
            for (_, mp) in self.pins.iter_mut().filter(|(_, mp)| mp.s == s) {
                for pg in mp.pages.iter_mut() {
                    if let PinPage::Attached(v) = pg {
                        if (from..from + ol / PAGE).contains(v) {
                            *v = *v - from + dest;
                        }
                    }
                }
            }
        }
        for v in dest + ol / PAGE..dest + nl / PAGE {
            model.pages.insert(v, fresh(&first));
        }
    }

    /// Every locked page of every live space that is resident now:
    /// (slot, vpn, frame).
    fn locked_resident(&self) -> Vec<(usize, u64, softmm::FrameId)> {
        let mut out = Vec::new();
        for (s, slot) in self.slots.iter().enumerate() {
            let (Some(mm), Some(model)) = (&slot.mm, &slot.model) else { continue };
            for (&v, _) in model.pages.iter().filter(|(_, p)| p.locked) {
                if let Some(f) = mm.phys(v * PAGE) {
                    out.push((s, v, f));
                }
            }
        }
        out
    }

    /// Whether any page of the run of mapped pages around `[addr, addr +
    /// len)` in slot `s` is locked (the run holds every VMA the range
    /// touches).
    fn locked_run(&self, s: usize, addr: u64, len: u64) -> bool {
        let Some(model) = self.slots[s].model.as_ref() else { return false };
        let first = addr / PAGE;
        let mut lo = first;
        while lo > 0 && model.pages.contains_key(&(lo - 1)) {
            lo -= 1;
        }
        let mut hi = first + npages(len.max(1));
        while model.pages.contains_key(&hi) {
            hi += 1;
        }
        (lo..hi).any(|v| model.pages.get(&v).is_some_and(|p| p.locked))
    }

    /// `detach` for a range operation that changes pages (munmap, mmap,
    /// DONTNEED): only when its arguments are valid.
    fn detach_range(&mut self, s: usize, r: Range) {
        if r.len != 0 && r.addr() % PAGE == 0 {
            let vpns = Space::vpns(r.addr(), r.len);
            self.detach(s, |v| vpns.contains(&v));
        }
    }

    /// The bytes of pinned page `i` of `mp` as the model has them.
    fn pin_page(&self, mp: &ModelPin, i: usize) -> Vec<u8> {
        match &mp.pages[i] {
            PinPage::Attached(vpn) => match self.slots[mp.s].model.as_ref().and_then(|m| m.pages.get(vpn)) {
                Some(Page { mem: Mem::Private(v), .. }) => v.clone(),
                _ => unreachable!("an attached pin without its private page"),
            },
            PinPage::Frozen(v) => v.borrow().clone(),
            PinPage::Shared(rc) => rc.borrow().clone(),
        }
    }

    /// A read through a pin, as the model sees it (EFAULT outside the pin).
    fn pin_read(&self, mp: &ModelPin, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
        if addr + len as u64 > mp.addr + mp.len {
            return Err(errno::EFAULT);
        }
        let first = mp.first_vpn() * PAGE;
        let mut out = Vec::with_capacity(len);
        for va in addr..addr + len as u64 {
            let i = ((va - first) / PAGE) as usize;
            out.push(self.pin_page(mp, i)[((va - first) % PAGE) as usize]);
        }
        Ok(out)
    }

    /// A write through pin `p`, applied to the model (EINVAL for a
    /// read-only pin, EFAULT outside it).
    fn pin_write(&mut self, p: usize, addr: u64, data: &[u8]) -> Result<(), i32> {
        let (s, first, write, end) = {
            let mp = &self.pins[p].1;
            (mp.s, mp.first_vpn() * PAGE, mp.write, mp.addr + mp.len)
        };
        if !write {
            return Err(errno::EINVAL);
        }
        if addr + data.len() as u64 > end {
            return Err(errno::EFAULT);
        }
        for (k, &b) in data.iter().enumerate() {
            let va = addr + k as u64;
            let (i, off) = (((va - first) / PAGE) as usize, ((va - first) % PAGE) as usize);
            match &mut self.pins[p].1.pages[i] {
                PinPage::Frozen(v) => v.borrow_mut()[off] = b,
                PinPage::Shared(rc) => rc.borrow_mut()[off] = b,
                PinPage::Attached(vpn) => match self.slots[s].model.as_mut().and_then(|m| m.pages.get_mut(vpn)) {
                    Some(Page { mem: Mem::Private(v), .. }) => v[off] = b,
                    _ => unreachable!("an attached pin without its private page"),
                },
            }
        }
        Ok(())
    }

    /// A write-like access (`data` is what lands in memory) through `via`.
    fn write_like(
        &mut self,
        s: usize,
        addr: u64,
        data: &[u8],
        via: Via,
        run: impl FnOnce(Option<&Mm>, Option<&mut Accessor>) -> softmm::Result<()>,
    ) -> Res {
        let slot = &mut self.slots[s];
        let got = match via {
            Via::Mm if slot.mm.is_some() => run(slot.mm.as_ref(), None),
            Via::Acc if slot.acc.is_some() => run(None, slot.acc.as_mut()),
            _ => return Ok(()),
        };
        let want = match &mut slot.model {
            Some(model) => model.write(addr, data),
            None => exited(addr, data.len(), ()),
        };
        ensure_eq!(got, want, "write {via:?}");
        Ok(())
    }

    /// After every step: the machine-wide audit, the mapped pages, and
    /// every pin's whole range read through the pin.
    fn check(&self) -> Res {
        self.machine.check_invariants().map_err(|e| format!("check_invariants: {e}"))?;
        for (k, (pinned, mp)) in self.pins.iter().enumerate() {
            let mut buf = vec![0u8; mp.len as usize];
            pinned.read(mp.addr, &mut buf).map_err(|e| format!("pin {k}: read of its own range: {e}"))?;
            let want = self.pin_read(mp, mp.addr, mp.len as usize).map_err(|e| format!("pin {k}: model {e}"))?;
            if buf != want {
                let at = buf.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                return Err(format!(
                    "pin {k} (slot {}, {:#x}+{:#x}): byte at {:#x} is {:#04x} through the pin, model {:#04x}",
                    mp.s,
                    mp.addr,
                    mp.len,
                    mp.addr + at as u64,
                    buf[at],
                    want[at]
                ));
            }
        }
        for (i, slot) in self.slots.iter().enumerate() {
            let (Some(mm), Some(model)) = (&slot.mm, &slot.model) else { continue };
            let mut got = BTreeMap::new();
            for m in mm.mappings() {
                for v in m.range.start / PAGE..m.range.end / PAGE {
                    got.insert(v, (m.prot, m.kind));
                }
            }
            let want = model.layout();
            if got != want {
                let diff: Vec<_> = got
                    .keys()
                    .chain(want.keys())
                    .filter(|v| got.get(v) != want.get(v))
                    .map(|v| format!("{:#x}: softmm {:?} model {:?}", v * PAGE, got.get(v), want.get(v)))
                    .take(4)
                    .collect();
                return Err(format!("slot {i}: mapped pages differ: {diff:?}; mappings() = {:x?}", mm.mappings()));
            }
        }
        Ok(())
    }

    /// At the end: every readable page of every live address space, read
    /// through `Mm::read`, matches the model.
    fn check_contents(&mut self) -> Res {
        self.settle_lazy()?;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let (Some(mm), Some(model)) = (&slot.mm, &mut slot.model) else { continue };
            let vpns: Vec<u64> = model.pages.keys().copied().collect();
            for v in vpns {
                let want = model.read(v * PAGE, PAGE as usize);
                let mut buf = vec![0u8; PAGE as usize];
                let got = mm.read(v * PAGE, &mut buf);
                ensure_eq!(unit(&got), unit(&want), "final read of slot {i} page {:#x}", v * PAGE);
                if let Ok(want) = want {
                    if buf != want {
                        return Err(format!("final read of slot {i} page {:#x}: contents differ", v * PAGE));
                    }
                }
            }
        }
        self.machine.check_invariants().map_err(|e| format!("check_invariants: {e}"))
    }
}

fn run(ops: &[Op]) -> Res {
    let mut w = World::new();
    w.check()?;
    for (i, op) in ops.iter().enumerate() {
        let Some(op) = w.resolve(op) else { continue };
        w.step(&op).map_err(|e| format!("step {i} {op:?} (slot resolved): {e}"))?;
        w.check().map_err(|e| format!("after step {i} {op:?}: {e}"))?;
    }
    w.check_contents()?;
    // Everything goes back to the arena once every address space and
    // accessor is gone.
    let machine = w.machine.clone();
    drop(w);
    machine.check_invariants().map_err(|e| format!("after teardown: {e}"))?;
    let st = machine.stats();
    if st.frames_in_use != 0 || st.page_tables != 0 {
        return Err(format!("after teardown: {} frames, {} page tables in use", st.frames_in_use, st.page_tables));
    }
    Ok(())
}

fn config() -> ProptestConfig {
    let default = if cfg!(debug_assertions) { 200 } else { 2000 };
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, max_shrink_iters: 20_000, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn model_based(ops in ops()) {
        run(&ops).map_err(TestCaseError::fail)?;
    }
}

/// A fixed history through the same harness, so a broken harness shows up
/// even with `PROPTEST_CASES=0`.
#[test]
fn model_harness_smoke() {
    let r = |page, n| Range { page, len: n * PAGE, misalign: false };
    let ops = [
        Op::Mmap { s: 0, r: r(0, 8), prot: Prot::RW, kind: MapKind::Private, noreplace: false },
        Op::Mmap { s: 0, r: r(8, 4), prot: Prot::RW, kind: MapKind::Shared, noreplace: false },
        Op::Write { s: 0, addr: Addr(BASE + 100), len: 5000, seed: 3, via: Via::Acc },
        Op::Write { s: 0, addr: Addr(BASE + 8 * PAGE), len: 10, seed: 9, via: Via::Mm },
        Op::Fork { s: 0, into: 1, shared_tables: true },
        Op::Write { s: 1, addr: Addr(BASE + 8 * PAGE + 5), len: 10, seed: 1, via: Via::Acc },
        Op::Write { s: 1, addr: Addr(BASE + 200), len: 10, seed: 2, via: Via::Acc },
        Op::Read { s: 0, addr: Addr(BASE + 8 * PAGE), len: 20, via: Via::Acc },
        Op::Read { s: 0, addr: Addr(BASE), len: 300, via: Via::Mm },
        Op::Mprotect { s: 0, r: r(2, 10), prot: Prot::READ },
        Op::Write { s: 0, addr: Addr(BASE + PAGE), len: 2 * PAGE as usize, seed: 4, via: Via::Acc },
        Op::DontNeed { s: 1, r: r(0, 12) },
        Op::FetchAdd { s: 1, addr: Addr(BASE + 8 * PAGE), v: 5 },
        Op::Exit { s: 0 },
        Op::Read { s: 0, addr: Addr(BASE), len: 1, via: Via::Acc },
        Op::Munmap { s: 1, r: r(4, 2) },
        Op::Read { s: 1, addr: Addr(BASE + 3 * PAGE), len: 2 * PAGE as usize, via: Via::Mm },
    ];
    if let Err(e) = run(&ops) {
        panic!("{e}");
    }
}
