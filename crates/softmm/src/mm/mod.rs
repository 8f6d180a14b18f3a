//! Address spaces: [`Mm`] and the operations Linux gives a process
//! (mmap, munmap, mprotect, madvise, mlock, brk, fork, exit, faults).
//!
//! # Lock order (outer to inner)
//!
//! 1. `MmInner::state` — the `mmap_lock` (Linux's `mmap_sem`), a reader-writer
//!    lock guarding the VMA tree and the page-table root. Faults, madvise and
//!    remote accesses take it for reading; mmap, munmap, mprotect, mlock,
//!    brk, fork and exit for writing (mlock then populates under it held
//!    for reading; a CPU access that grows a stack drops its read lock,
//!    takes it for writing, and faults again after, never holding both). Page-table pages are freed only under the write lock,
//!    so lock-free walks under either mode never see a freed table. Fork holds
//!    the parent's write lock, then takes the (new) child's: parent before child.
//! 2. The split lock of a PMD-table page (`FrameMeta::ptl`) — serializes the
//!    unshares of its entries (`pgtable/share.rs`); PMD tables are never shared.
//! 3. The split page-table lock (`FrameMeta::ptl` of a PTE-table page) — guards
//!    the 512 entries of that table, shared or not. Fork holds the parent table's
//!    lock, then the child table's; unshare holds the PMD lock, then the shared
//!    table's. Upper levels otherwise need no lock: they only grow by CAS while
//!    the `mmap_lock` is held for reading, and shrink under the write lock. A
//!    shared PTE table is freed only by its last sharer, under that sharer's
//!    write lock (or after its TLB shootdown, when no space maps it any
//!    more). A table that others borrow from (`pgtable/borrow.rs`) is
//!    locked before its borrowers' (owning their entries out, or one entry
//!    of each for reclaim), never after: chains go from backing to
//!    borrower. The borrow registry's shard mutexes are leaves.
//! 4. The member-list lock of an anon_vma or shared object (`rmap.rs`;
//!    nothing is taken while it is held), then a vcache bucket
//!    (`vcache.rs`; two only in index order), then a futex bucket
//!    (`futex/table.rs`; two only in index order), then a futex waiter's own
//!    mutex. Changers of translations call the vcache only after releasing
//!    the page-table lock, and waiters re-check translations by lock-free
//!    walks, so no vcache or futex lock is ever held while a page-table lock
//!    is taken (the cycle in seed 003's `queue_me` cannot form).
//! 5. Leaf locks: a shared object's page index (`ShmObject::pages`), the
//!    frame allocator's mutexes, the registry mutexes of `Machine`, the
//!    TLB shootdown slot list (`Shootdown::slots`), a space's exit hooks
//!    (`MmInner::exit_hooks`) and the futexes' robust-list registry.
//! 6. Frame metadata bits are atomics, taken under any of the above.
//!
//! The frame lock (`flags::LOCKED`, Linux's page lock; `reclaim/`) sits
//! outside all of these: reclaim and migration hold it while they take
//! `mmap_lock`s (for reading), PMD and page-table locks. A fault may wait
//! for it while holding its `mmap_lock` for reading, never while holding a
//! page-table lock (it only *tries* it there); writers of an `mmap_lock`
//! never wait for it; and reverse-map walks take `mmap_lock`s with
//! `read_recursive`, which does not queue behind a waiting writer. So a
//! wait for a frame lock always ends. A zap that finds a swap-cache frame
//! locked leaves taking it out of the cache to the holder, who looks again
//! after unlocking (`SwapSpace::unlock_frame`).
//!
//! Reclaim's own locks (`reclaim/mod.rs`): `Reclaim::scanning` is taken by
//! a fault that reached the frame limit (holding its `mmap_lock` for
//! reading) and by the background reclaimer, before any frame lock;
//! `Reclaim::round`, inside it, by the background reclaimer for each round
//! (which only *tries* `mmap_lock`s) and by the audit after it holds every
//! `mmap_lock` for writing, which is safe because a round never waits for
//! one. The background reclaimer's wake-up mutex (`phys/pressure.rs`) is a
//! leaf.
//!
//! Nothing takes an outer lock while holding an inner one. A TLB shootdown
//! (`Shootdown::flush`) may wait for other accessors' in-flight accesses while
//! holding 1 (and never 2 or 3): accessors hold no lock while active, so that wait
//! always ends.
//!
//! # Who references a frame
//! A private anonymous or shared frame's `refcount` is its number of PTE
//! mappings (a migration entry counts as one; a *borrowed* entry does not,
//! `pgtable/borrow.rs`), plus one for a shared object's page index, plus
//! one while it is in the swap cache, plus one per pin (`pin.rs`, which
//! also counts them in `FrameMeta::pins`), plus transient references of
//! remote accesses. `mapcount` is its number of PTE mappings, borrowed ones
//! excepted. The zero frame is mapped without references. A page-table page
//! has one reference per parent entry pointing at it (several for a shared
//! PTE table) or from its `Mm` (the root), plus one per table borrowing
//! from it, which its `mapcount` counts, plus transient holds.
//! `Mm::check_invariants` recounts all of this.

mod args;
mod brk;
mod change;
mod fault;
mod fork;
mod gather;
pub(crate) mod invariants;
mod madvise;
mod mlock;
mod mmap;
mod mremap;
mod msync;
pub(crate) mod pin;
mod restore;
mod smaps;
mod snapshot;
mod softdirty;
mod stack;
pub(crate) mod translation;

pub use args::{Advice, MapFlags, Placement, RemapFlags};
pub(crate) use change::{Change, ChangeBatch};
pub(crate) use fault::Access;
pub use mlock::{MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT};
pub(crate) use mmap::unshare_range;
pub use msync::{MS_ASYNC, MS_INVALIDATE, MS_SYNC};
pub use pin::PinnedPages;
pub use snapshot::Snapshot;
pub(crate) use stack::expand_stack;

/// The fault path on behalf of an accessor (whose TLB slot need not be waited for).
pub(crate) fn fault_in_for(
    mm: &MmInner,
    st: &MmState,
    va: u64,
    access: Access,
    slot: &crate::tlb::Slot,
) -> Result<crate::pte::Pte> {
    fault::fault_in(mm, st, va, access, Some(slot))
}

/// The readable translations next to `va` that a TLB fill may cache along
/// with `va`'s own: the present, user-accessible entries already marked
/// accessed in the 64 KiB around `va` (the window fault-around maps), as
/// `(address, entry)`. Called with the `mmap_lock` held for reading, as the
/// walk of `fault_in_for`; a translation cached so is kept right by the
/// same shootdowns as the fill's own.
pub(crate) fn readable_neighbours(st: &MmState, arena: &FrameArena, va: u64, mut f: impl FnMut(u64, crate::pte::Pte)) {
    const WINDOW: u64 = 64 << 10;
    let Some(pt) = st.pt.as_ref() else { return };
    let lo = va & !(WINDOW - 1);
    pt.peek_ptes(arena, lo, lo + WINDOW, |a, pte| {
        let want = crate::pte::Pte::PRESENT | crate::pte::Pte::USER | crate::pte::Pte::ACCESSED;
        if a != va & !0xfff && pte.raw() & want == want {
            f(a, pte);
        }
    });
}

use crate::access::Accessor;
use crate::error::{Error, Result};
use crate::machine::{Machine, MachineInner};
use crate::pgtable::PageTable;
use crate::phys::{FrameArena, FrameId, PAGE_SIZE};
use crate::stats::Smaps;
use crate::tlb::Shootdown;
use crate::vma::{MapKind, Prot, VmaTree};
use parking_lot::RwLock;
use std::sync::Arc;

/// What the `mmap_lock` guards.
pub(crate) struct MmState {
    pub(crate) vmas: VmaTree,
    /// `None` once the address space has exited.
    pub(crate) pt: Option<PageTable>,
    /// Flags every new mapping gets (Linux's `mm->def_flags`: `VM_LOCKED`
    /// after `mlockall(MCL_FUTURE)`); a fork's child starts without them.
    pub(crate) def_flags: crate::vma::VmFlags,
    /// The heap (`start_brk` and the break), once set or first asked for.
    pub(crate) heap: Option<brk::Heap>,
}

pub(crate) struct MmInner {
    /// This space as the reverse map names it (members of anon_vmas).
    me: std::sync::Weak<MmInner>,
    pub(crate) id: u64,
    /// The page-table root, readable without the `mmap_lock` (0 once
    /// exited): other address spaces read it to count sharers for smaps.
    pub(crate) root: crate::sync::AtomicU32,
    pub(crate) machine: Arc<MachineInner>,
    pub(crate) state: RwLock<MmState>,
    pub(crate) tlb: Shootdown,
    /// vcache entries attached for pages of this space (read lock-free by
    /// every changer of a translation; see `vcache.rs`).
    pub(crate) vcache_users: crate::sync::Arc<crate::sync::AtomicUsize>,
    /// MMU notifier subscribers (`notifier.rs`).
    pub(crate) notifiers: crate::notifier::Notifiers,
    /// Set at the first `pin_pages` and never cleared (Linux's
    /// `MMF_HAS_PINNED`): fork looks for pinned pages only when set. Written
    /// under the `mmap_lock` held for reading, read by fork under it held
    /// for writing.
    pub(crate) has_pinned: std::sync::atomic::AtomicBool,
    /// Work clients asked to run when the space exits, before its memory
    /// goes (`Mm::on_exit`).
    exit_hooks: parking_lot::Mutex<Vec<ExitHook>>,
    /// The logs of this space's live snapshots (`snapshot.rs`).
    pub(crate) snaps: Arc<crate::snaplog::SnapLogs>,
}

/// Work to run when a space exits while its memory is still whole (Linux's
/// `mm_release` work): futexes walk the robust lists registered for the
/// space's threads. A client registers it; `mm` knows nothing of what it does.
pub(crate) type ExitHook = Box<dyn FnOnce(&Mm) + Send>;

impl MmInner {
    pub(crate) fn mm_ref(&self) -> crate::rmap::MmRef {
        crate::rmap::MmRef { id: self.id, mm: self.me.clone() }
    }

    #[inline]
    pub(crate) fn arena(&self) -> &FrameArena {
        &self.machine.arena
    }
}

/// Subscriptions reach the space's notifier list through this when dropped.
impl crate::notifier::NotifierOwner for MmInner {
    fn notifiers(&self) -> &crate::notifier::Notifiers {
        &self.notifiers
    }
}

/// An address space.
///
/// Dropping an `Mm` (or calling [`Mm::exit`]) tears it down: every frame and
/// page-table page it alone referenced goes back to the arena. Accessors
/// created from it keep working after that, but see an empty address space.
pub struct Mm {
    pub(crate) inner: Arc<MmInner>,
}

impl Mm {
    pub(crate) fn new(machine: Arc<MachineInner>) -> Result<Mm> {
        let pt = PageTable::new(&machine.arena)?;
        crate::stats::Counters::bump(&machine.counters.page_tables);
        let inner = Arc::new_cyclic(|me| MmInner {
            me: me.clone(),
            id: machine.new_id(),
            root: crate::sync::AtomicU32::new(pt.root().0),
            machine,
            state: RwLock::new(MmState {
                vmas: VmaTree::default(),
                pt: Some(pt),
                def_flags: crate::vma::VmFlags::NONE,
                heap: None,
            }),
            tlb: Shootdown::default(),
            vcache_users: crate::vcache::new_users(),
            notifiers: crate::notifier::Notifiers::default(),
            has_pinned: std::sync::atomic::AtomicBool::new(false),
            exit_hooks: parking_lot::Mutex::new(Vec::new()),
            snaps: Arc::default(),
        });
        inner.machine.register_mm(&inner);
        inner.machine.hold();
        Ok(Mm { inner })
    }

    /// A stable identity of this address space.
    #[inline]
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The machine this address space lives on.
    pub fn machine(&self) -> Machine {
        Machine::from_inner(self.inner.machine.clone())
    }

    /// A per-thread handle for fast access through a software TLB.
    pub fn accessor(&self) -> Accessor {
        Accessor::new(self.inner.clone())
    }

    /// Map `len` bytes of anonymous memory (rounded up to pages).
    ///
    /// With [`Placement::Fixed`] the mapping lands exactly at `addr`, replacing
    /// what was there (`MAP_FIXED`); [`Placement::FixedNoReplace`] fails with
    /// `EEXIST` instead; [`Placement::Hint`] treats `addr` as a hint (0: any).
    /// Returns the start address.
    pub fn mmap(&self, addr: u64, len: u64, prot: Prot, kind: MapKind, place: Placement) -> Result<u64> {
        self.mmap_with(addr, len, prot, kind, place, MapFlags::NONE)
    }

    /// [`Mm::mmap`] with flags: [`MapFlags::LOCKED`] (`MAP_LOCKED`: the
    /// mapping is `VM_LOCKED`, as after `mlock`) and [`MapFlags::POPULATE`]
    /// (`MAP_POPULATE`). A locked or populated mapping is faulted in before
    /// this returns, writable private memory with write faults; a failure
    /// to fault it in is ignored, as Linux's `mm_populate` ignores it.
    /// After [`Mm::mlockall`] with `MCL_FUTURE` every new mapping is locked.
    pub fn mmap_with(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        kind: MapKind,
        place: Placement,
        flags: MapFlags,
    ) -> Result<u64> {
        if flags.contains(MapFlags::GROWSDOWN) && kind == MapKind::Shared {
            return Err(Error::Invalid("MAP_GROWSDOWN with shared memory"));
        }
        self.mmap_source(addr, len, prot, kind, place, flags, None)
    }

    /// `mmap_with` of anonymous memory or of a file (`file.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mmap_source(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        kind: MapKind,
        place: Placement,
        flags: MapFlags,
        file: mmap::Source<'_>,
    ) -> Result<u64> {
        if flags.contains(MapFlags::LOCKED) {
            self.inner.machine.mlock_used.store(true, crate::sync::Ordering::Relaxed);
        }
        let (start, locked) = mmap::do_mmap(&self.inner, addr, len, prot, kind, place, flags.vm_flags(), file)?;
        if flags.contains(MapFlags::POPULATE) || locked {
            let end = args::page_align(len).map_or(start, |l| start.saturating_add(l));
            let _ = mlock::populate(&self.inner, start, end, true);
        }
        Ok(start)
    }

    /// `msync`: with [`MS_SYNC`], write the dirty pages of the shared file
    /// mappings in `[addr, addr + len)` back to their host files and wait
    /// (dirty entries of every mapping of those pages are harvested first).
    /// Errors as Linux's: `EINVAL` for unknown flags, a misaligned `addr`,
    /// or both `MS_ASYNC` and `MS_SYNC`; `ENOMEM` when part of the range is
    /// not mapped (the mapped parts are still written back); `EBUSY` for
    /// `MS_INVALIDATE` over locked memory; a failed write is
    /// [`Error::FileIo`] with the host's errno.
    pub fn msync(&self, addr: u64, len: u64, flags: u32) -> Result<()> {
        msync::do_msync(&self.inner, addr, len, flags)
    }

    /// Lock `[addr, addr + len)` in memory (`mlock`): the VMAs become
    /// `VM_LOCKED` (split at the range's edges, merged with equal
    /// neighbours) and every page is faulted in, writable private pages
    /// with a write fault (copy on write broken now); reclaim never takes a
    /// page a locked VMA maps. `addr` is rounded down to its page and the
    /// length up, as Linux does. Errors as Linux's: `ENOMEM` when part of
    /// the range is not mapped (the VMAs before the hole are locked) or
    /// when the range holds `PROT_NONE` memory (locked, not faulted in),
    /// `EINVAL` for a range that wraps, `EAGAIN` when no memory could be
    /// had for the pages. `RLIMIT_MEMLOCK` is not modelled.
    pub fn mlock(&self, addr: u64, len: u64) -> Result<()> {
        mlock::do_mlock(&self.inner, addr, len, 0)
    }

    /// `mlock2`: as [`Mm::mlock`]; with [`MLOCK_ONFAULT`] the VMAs become
    /// `VM_LOCKED | VM_LOCKONFAULT` and pages are locked as they fault in
    /// instead of now. Other flags: `EINVAL`.
    pub fn mlock2(&self, addr: u64, len: u64, flags: u32) -> Result<()> {
        mlock::do_mlock(&self.inner, addr, len, flags)
    }

    /// Move the program break to `addr` (Linux's `brk` system call) and
    /// return the break now in force: `addr` if the move was made, the
    /// old break if it was refused (below the heap's start, into a page
    /// below the next mapping or its stack guard gap, beyond the address
    /// space), so `brk(0)` reads the break. The heap is private read-write
    /// memory from its start to the break rounded up to a page; it starts
    /// where [`Mm::set_start_brk`] put it or, by default, at the end of the
    /// highest mapping when `brk` is first called. Shrinking unmaps.
    pub fn brk(&self, addr: u64) -> Result<u64> {
        brk::do_brk(&self.inner, addr)
    }

    /// Set where the heap starts (`start_brk`, which exec sets after the
    /// program's data), rounded up to a page; the break moves there too.
    /// `EINVAL` once the heap has grown, `EPERM` below `mmap_min_addr`.
    pub fn set_start_brk(&self, addr: u64) -> Result<()> {
        brk::set_start(&self.inner, addr)
    }

    /// Unlock `[addr, addr + len)` (`munlock`): the VMAs lose `VM_LOCKED`
    /// and `VM_LOCKONFAULT`; `ENOMEM` at a hole, as [`Mm::mlock`].
    pub fn munlock(&self, addr: u64, len: u64) -> Result<()> {
        mlock::do_munlock(&self.inner, addr, len)
    }

    /// `mlockall(flags)`: [`MCL_CURRENT`] locks (and faults in) every
    /// mapping now, [`MCL_FUTURE`] every later one, [`MCL_ONFAULT`] with
    /// either locks pages as they fault in. `EINVAL` for no flag, an
    /// unknown one, or `MCL_ONFAULT` alone. Not inherited by a fork.
    pub fn mlockall(&self, flags: u32) -> Result<()> {
        mlock::do_mlockall(&self.inner, flags, false)
    }

    /// `munlockall`: unlock every mapping and stop locking new ones.
    pub fn munlockall(&self) -> Result<()> {
        mlock::do_mlockall(&self.inner, 0, true)
    }

    /// Unmap `[addr, addr + len)`; unmapped parts of the range are fine.
    pub fn munmap(&self, addr: u64, len: u64) -> Result<()> {
        mmap::do_munmap(&self.inner, addr, len)
    }

    /// Change the protection of `[addr, addr + len)`. Fails with `ENOMEM` at
    /// the first hole, having changed the VMAs before it, as Linux does.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> Result<()> {
        mmap::do_mprotect(&self.inner, addr, len, prot)
    }

    /// Give advice about `[addr, addr + len)`; see [`Advice`]. Errors as
    /// Linux's: `EINVAL` for a misaligned address, a length that wraps, or
    /// a VMA the advice does not apply to (the VMAs before it took the
    /// advice); `ENOMEM` when part of the range is not mapped (the mapped
    /// parts took it; `PopulateRead`/`PopulateWrite` stop at the hole);
    /// `EFAULT` when a populate fault would raise a signal.
    pub fn madvise(&self, addr: u64, len: u64, advice: Advice) -> Result<()> {
        madvise::do_madvise(&self.inner, addr, len, advice)
    }

    /// Resize or move the mapping at `old` (Linux's mremap(2)): shrink in
    /// place, grow in place when the range after it is free, or, with
    /// [`RemapFlags::MAYMOVE`], move it to a free range (or to `new` with
    /// [`RemapFlags::FIXED`]), moving its page-table entries rather than
    /// copying pages. Returns the mapping's address. Errors as Linux's:
    /// `EINVAL` for bad flags, a misaligned address, a zero new length,
    /// overlapping fixed ranges or a private mapping duplicated
    /// (`old_len` 0); `EFAULT` when `old` is not mapped or the old range
    /// leaves its mapping; `ENOMEM` when it cannot grow in place and may
    /// not move, or no range is free.
    pub fn mremap(&self, old: u64, old_len: u64, new_len: u64, flags: RemapFlags, new: u64) -> Result<u64> {
        mremap::do_mremap(&self.inner, old, old_len, new_len, flags, new)
    }

    /// A copy-on-write child of this address space.
    pub fn fork(&self) -> Result<Mm> {
        self.fork_with(ForkPolicy::default())
    }

    /// Fork with an explicit page-table strategy.
    pub fn fork_with(&self, policy: ForkPolicy) -> Result<Mm> {
        let mut reclaims = 0;
        loop {
            match fork::do_fork(&self.inner, policy, None) {
                // A failed fork changed nothing and released this space,
                // whose pages reclaim may now swap out too.
                Err(Error::NoMemory(_)) if reclaims < 16 && crate::reclaim::direct_reclaim(&self.inner.machine) => {
                    reclaims += 1
                }
                r => return r,
            }
        }
    }

    /// Tear the address space down now (what dropping it does too).
    pub fn exit(self) {
        drop(self)
    }

    /// Read guest memory at `addr`, faulting pages in as a CPU access would.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        self.remote(addr, out.len(), Access::Read, |arena, f, off, lo, hi| arena.read(f, off, &mut out[lo..hi]))
    }

    /// Write guest memory at `addr`, faulting (and breaking COW) as a CPU would.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        self.remote(addr, data.len(), Access::Write, |arena, f, off, lo, hi| arena.write(f, off, &data[lo..hi]))
    }

    /// Store `len` copies of `byte` at `addr`.
    pub fn fill(&self, addr: u64, len: usize, byte: u8) -> Result<()> {
        self.remote(addr, len, Access::Write, |arena, f, off, lo, hi| arena.fill(f, off, hi - lo, byte))
    }

    /// The access path without a TLB (Linux's `access_process_vm`): fault each
    /// page in, take a reference on its frame so it cannot be freed while we
    /// copy, copy, drop the reference. Stops at the first faulting page, as a
    /// CPU does; bytes before it have been transferred.
    fn remote(
        &self,
        addr: u64,
        len: usize,
        access: Access,
        mut copy: impl FnMut(&FrameArena, FrameId, usize, usize, usize),
    ) -> Result<()> {
        let end = addr.checked_add(len as u64).ok_or(Error::Segv { addr, kind: crate::SegvKind::MapErr })?;
        let arena = self.inner.arena();
        for p in page_pieces(addr, end) {
            // The read lock is held across the copy, as Linux's
            // access_remote_vm does: no fork can write-protect the page (and
            // let another thread's COW move it away) while we write into it.
            let mut st = self.inner.state.read();
            let frame = match grab_page(&self.inner, &st, p.va, access) {
                // A CPU access below a stack grows it (`mm/stack.rs`).
                Err(e @ Error::Segv { kind: crate::SegvKind::MapErr, .. }) => {
                    drop(st);
                    if !stack::expand_stack(&self.inner, p.va) {
                        return Err(e);
                    }
                    st = self.inner.state.read();
                    grab_page(&self.inner, &st, p.va, access)?
                }
                r => r?,
            };
            copy(arena, frame, p.off, p.lo, p.hi);
            // Dropped before the lock: an audit (every `mmap_lock` for
            // writing) must not find a reference nobody accounts for.
            arena.put(frame);
            drop(st);
        }
        Ok(())
    }

    /// Pin the pages of `[addr, addr + len)` for a secondary user that holds
    /// the frames directly (Linux's `pin_user_pages`; see `mm/pin.rs`).
    /// Faults each page in, breaking COW first: for a write pin as a write
    /// does, for a read-only pin by an unshare that leaves the page
    /// read-only. While the returned guard lives, the frames are neither
    /// swapped out nor migrated, a fork copies them for the child instead of
    /// sharing them, and what this space writes at those addresses is what
    /// the pinner reads ([`PinnedPages::read`]), until the range is unmapped.
    ///
    /// Errors: `Segv` as the access would fault (no mapping, or a write pin
    /// of memory without write permission); `ZeroLength`; `OutOfRange`
    /// (EFAULT) for a range beyond the user address space; `NoMemory`.
    /// On error no pin is left behind.
    pub fn pin_pages(&self, addr: u64, len: u64, write: bool) -> Result<PinnedPages> {
        pin::pin_pages(&self.inner, addr, len, write)
    }

    /// Subscribe a secondary MMU to this address space's invalidations
    /// (see [`crate::notifier`]). Dropping the subscription unregisters it;
    /// once that returns, no callback into it runs any more. In a build
    /// without notifiers (`--cfg softmm_no_notifiers`, see
    /// [`crate::notifier::NOTIFIERS_COMPILED`]) the subscriber is never called.
    ///
    /// Takes the `mmap_lock` for writing, as Linux's `mmu_notifier_register`
    /// does, so it waits for faults in flight: do not call it from a
    /// callback.
    pub fn register_notifier(&self, sub: Arc<dyn crate::notifier::MmuNotifier>) -> crate::notifier::Subscription {
        // A fault decides once, under the `mmap_lock`, whether anyone
        // listens (`fault.rs`): a subscriber must not appear in the middle
        // of one, between its look at a page and its change of it.
        let _mmap = self.inner.state.write();
        crate::notifier::Subscription::new(&self.inner, sub)
    }

    /// Subscribe to invalidations of `[start, start + len)` with a
    /// sequence count (Linux's `mmu_interval_notifier_insert`).
    /// `Unsupported` in a build without notifiers.
    pub fn insert_interval_notifier(
        &self,
        start: u64,
        len: u64,
        ops: Arc<dyn crate::notifier::IntervalOps>,
    ) -> Result<crate::notifier::IntervalNotifier> {
        let end = crate::notifier::IntervalNotifier::check(start, len)?;
        // As `register_notifier`: not in the middle of a fault.
        let _mmap = self.inner.state.write();
        Ok(crate::notifier::IntervalNotifier::new(&self.inner, start, end, ops))
    }

    /// Move the page at `addr` (private anonymous memory) to a new frame
    /// and repoint every address space that maps it, under the reverse map
    /// (Linux's `move_pages` for one page). Returns the new frame. Errors:
    /// `Segv`/`Fault` when nothing is mapped there, `EINVAL` for shared
    /// memory or the zero page, `EBUSY` when the frame is in use in a way
    /// that forbids moving it now (locked, pinned, in the swap cache, held
    /// by a futex waiter or an access in flight).
    pub fn migrate(&self, addr: u64) -> Result<FrameId> {
        let arena = self.inner.arena();
        let f = {
            let st = self.inner.state.read();
            let pt = st.pt.as_ref().ok_or(Error::Exited)?;
            let va = addr & !(PAGE_SIZE as u64 - 1);
            if addr >= crate::pgtable::TASK_SIZE {
                return Err(Error::Fault { addr });
            }
            let pte = pt.follow_pte(arena, va);
            if !pte.is_present() {
                return Err(Error::Fault { addr });
            }
            if pte.is_zero_frame() || !arena.try_get(pte.frame()) {
                return Err(Error::Invalid("no private anonymous page to migrate there"));
            }
            pte.frame()
        };
        let r = crate::reclaim::migrate_frame(&self.inner.machine, f, |_| false);
        arena.put(f);
        r
    }

    /// Which frame backs `addr`, without faulting anything in (`none` in the
    /// trace format when nothing is mapped there). The zero frame counts.
    pub fn phys(&self, addr: u64) -> Option<FrameId> {
        if addr >= crate::pgtable::TASK_SIZE {
            return None;
        }
        let st = self.inner.state.read();
        let pte = st.pt.as_ref()?.follow_pte(self.inner.arena(), addr & !(PAGE_SIZE as u64 - 1));
        pte.is_present().then(|| pte.frame())
    }

    /// smaps counters of the VMA containing `addr`.
    pub fn smaps(&self, addr: u64) -> Option<Smaps> {
        let st = self.inner.state.read();
        let vma = st.vmas.find(addr)?;
        Some(smaps::Sharers::new(&self.inner).vma_smaps(&self.inner, &st, vma.start, vma.end))
    }

    /// smaps counters of every VMA, in address order.
    pub fn smaps_all(&self) -> Vec<Smaps> {
        let st = self.inner.state.read();
        let mut sharers = smaps::Sharers::new(&self.inner);
        st.vmas.iter().map(|v| sharers.vma_smaps(&self.inner, &st, v.start, v.end)).collect()
    }

    /// `smaps(addr)` of each `(space, addr)`, spaces of one machine: the
    /// same figures as one call each, for a snapshot of many spaces (a
    /// process tree). When page tables are shared, the tables that share or
    /// borrow are read once for all the spaces instead of once per space,
    /// so N forked spaces cost time linear in N, not quadratic. Each
    /// space is read under its own `mmap_lock` in turn; the sharers are
    /// read as the first space that needed them found them, so the figures
    /// are those of one moment when nothing changes meanwhile (otherwise
    /// they are as approximate as concurrent `smaps` calls').
    pub fn smaps_many(at: &[(&Mm, u64)]) -> Vec<Option<Smaps>> {
        let Some((first, _)) = at.first() else { return Vec::new() };
        let mut sharers = smaps::Sharers::new(&first.inner);
        at.iter()
            .map(|(mm, addr)| {
                let st = mm.inner.state.read();
                let vma = st.vmas.find(*addr)?;
                Some(sharers.vma_smaps(&mm.inner, &st, vma.start, vma.end))
            })
            .collect()
    }

    /// The mappings (VMAs), in address order, as `/proc/PID/maps` lists
    /// them: one entry per VMA (neighbours with the same protection, kind
    /// and flags are one VMA, as in Linux). [`Mapping::perms`] spells the
    /// permissions as that file does. The same list as [`Mm::mappings`].
    ///
    /// ```
    /// use softmm::{Config, Machine, MapKind, Placement, Prot};
    ///
    /// let machine = Machine::new(Config { arena_bytes: 16 << 20, ..Config::default() })?;
    /// let mm = machine.new_mm()?;
    /// mm.mmap(0x10000, 2 * 4096, Prot::RX, MapKind::Private, Placement::Fixed)?;
    /// mm.mmap(0x12000, 4096, Prot::RW, MapKind::Shared, Placement::Fixed)?;
    /// let maps: Vec<String> = mm.maps().iter().map(|m| m.to_string()).collect();
    /// assert_eq!(maps, ["0x10000-0x12000 r-xp anon", "0x12000-0x13000 rw-s anon"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn maps(&self) -> Vec<Mapping> {
        self.mappings()
    }

    /// The mappings (VMAs), in address order, as `/proc/PID/maps` lists
    /// them: neighbours with the same protection and kind are one mapping.
    ///
    /// ```
    /// use softmm::{Config, Machine, MapKind, Placement, Prot};
    ///
    /// let machine = Machine::new(Config { arena_bytes: 16 << 20, ..Config::default() })?;
    /// let mm = machine.new_mm()?;
    /// mm.mmap(0x10000, 3 * 4096, Prot::RW, MapKind::Private, Placement::Fixed)?;
    /// mm.mprotect(0x11000, 4096, Prot::READ)?;
    /// let maps = mm.mappings();
    /// assert_eq!(maps.len(), 3);
    /// assert_eq!(maps[1].range, 0x11000..0x12000);
    /// assert_eq!(maps[1].prot, Prot::READ);
    /// assert_eq!(maps[1].kind, MapKind::Private);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mappings(&self) -> Vec<Mapping> {
        let st = self.inner.state.read();
        st.vmas.iter().map(|v| Mapping { range: v.start..v.end, prot: v.prot, kind: v.kind() }).collect()
    }

    /// Every VMA with what `/proc/PID/smaps` shows of it beyond
    /// [`Mm::maps`]: its flags, its offset in the object it maps and that
    /// object's identity ([`File::id`](crate::File::id)). In address order,
    /// one entry per VMA, as [`Mm::maps`] lists them.
    ///
    /// ```
    /// use softmm::{Config, Machine, MapKind, Placement, Prot};
    ///
    /// let machine = Machine::new(Config { arena_bytes: 16 << 20, ..Config::default() })?;
    /// let mm = machine.new_mm()?;
    /// mm.mmap(0x10000, 3 * 4096, Prot::RW, MapKind::Private, Placement::Fixed)?;
    /// mm.mlock(0x11000, 4096)?;
    /// let v = mm.vma_info();
    /// assert_eq!(v.len(), 3);
    /// assert!(!v[0].locked && v[1].locked && v[1].account && !v[2].locked);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn vma_info(&self) -> Vec<VmaInfo> {
        use crate::vma::VmFlags;
        let st = self.inner.state.read();
        st.vmas
            .iter()
            .map(|v| {
                let object = v.mapped_object().map(|o| o.id());
                VmaInfo {
                    range: v.start..v.end,
                    prot: v.prot,
                    kind: v.kind(),
                    locked: v.flags.contains(VmFlags::LOCKED),
                    lock_on_fault: v.flags.contains(VmFlags::LOCKONFAULT),
                    dont_fork: v.flags.contains(VmFlags::DONTCOPY),
                    wipe_on_fork: v.flags.contains(VmFlags::WIPEONFORK),
                    grows_down: v.flags.contains(VmFlags::GROWSDOWN),
                    account: v.account,
                    offset: if object.is_some() { v.pgoff << 12 } else { 0 },
                    object,
                }
            })
            .collect()
    }

    /// What the page table holds for the page at `addr` (Linux's
    /// `/proc/PID/pagemap` entry): a present page and its frame (the zero
    /// frame included), a swapped-out page, or nothing.
    pub fn page_state(&self, addr: u64) -> PageState {
        if addr >= crate::pgtable::TASK_SIZE {
            return PageState::None;
        }
        let st = self.inner.state.read();
        let Some(pt) = st.pt.as_ref() else { return PageState::None };
        let arena = self.inner.arena();
        let pte = pt.follow_pte(arena, addr & !(PAGE_SIZE as u64 - 1));
        if pte.is_swap() || pte.is_migration() {
            return PageState::Swapped;
        }
        if !pte.is_present() {
            return PageState::None;
        }
        let frame = pte.frame();
        if pte.is_zero_frame() {
            return PageState::Present { frame, exclusive: false, anon: false };
        }
        let m = arena.meta(frame);
        let exclusive = !pte.is_borrowed() && m.mapcount() == 1;
        PageState::Present { frame, exclusive, anon: m.has(crate::phys::flags::ANON) }
    }

    /// Audit the whole machine this address space lives on: recount every
    /// frame's references and mappings from all page tables and shared
    /// objects, and compare them with the stored counts; check page-table
    /// pages, free lists and VMA trees. Returns the first mismatch found.
    /// Meant for tests and debugging: it takes every address space's
    /// `mmap_lock` for writing, so run it while nothing else is in flight.
    pub fn check_invariants(&self) -> std::result::Result<(), crate::InvariantError> {
        invariants::check_machine(&self.inner.machine)
    }
}

/// One VMA as [`Mm::vma_info`] describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmaInfo {
    /// The addresses it covers (page-aligned).
    pub range: std::ops::Range<u64>,
    /// What it lets an access do.
    pub prot: Prot,
    /// Private or shared memory.
    pub kind: MapKind,
    /// `VM_LOCKED` (`mlock`, `mlockall`).
    pub locked: bool,
    /// `VM_LOCKONFAULT` (`MLOCK_ONFAULT`, `MCL_ONFAULT`).
    pub lock_on_fault: bool,
    /// `VM_DONTCOPY` (`MADV_DONTFORK`).
    pub dont_fork: bool,
    /// `VM_WIPEONFORK` (`MADV_WIPEONFORK`).
    pub wipe_on_fork: bool,
    /// `VM_GROWSDOWN` (a stack).
    pub grows_down: bool,
    /// `VM_ACCOUNT`: private memory that has been writable.
    pub account: bool,
    /// Byte offset of `range.start` in the object it maps (0 for private
    /// anonymous memory).
    pub offset: u64,
    /// The shared object or file it maps ([`File::id`](crate::File::id)),
    /// `None` for private anonymous memory.
    pub object: Option<u64>,
}

/// A page table's entry for one page, as [`Mm::page_state`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// No entry: never touched, or dropped.
    None,
    /// A present page.
    Present {
        /// Its frame ([`crate::ZERO_FRAME`] for the shared zero page).
        frame: FrameId,
        /// This is the frame's only mapping (never the zero page).
        exclusive: bool,
        /// An anonymous page: not a shared object's or a file's, nor the
        /// zero page.
        anon: bool,
    },
    /// Out on the swap device (or being migrated).
    Swapped,
}

/// One mapping of an address space, as [`Mm::maps`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The addresses it covers (page-aligned).
    pub range: std::ops::Range<u64>,
    /// What it lets an access do.
    pub prot: Prot,
    /// Private or shared memory (and which shared object).
    pub kind: MapKind,
}

impl Mapping {
    /// The permissions as `/proc/PID/maps` writes them: `rw-p`, `r-xs`,
    /// `---p` (`s` for shared memory, `p` for private).
    pub fn perms(&self) -> String {
        let ps = match self.kind {
            MapKind::Private => 'p',
            MapKind::Shared => 's',
        };
        format!("{}{ps}", self.prot)
    }
}

/// `0xSTART-0xEND PERMS anon`: the line of the trace format's `maps`
/// (anonymous memory, shared or private, is `anon` there; Linux's
/// `/proc/PID/maps` names shared anonymous memory `/dev/zero (deleted)`).
impl std::fmt::Display for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}-{:#x} {} anon", self.range.start, self.range.end, self.perms())
    }
}

impl Mm {
    /// Run `hook` when this space exits, before its memory is torn down.
    pub(crate) fn on_exit(&self, hook: ExitHook) {
        self.inner.exit_hooks.lock().push(hook);
    }
}

impl Drop for Mm {
    fn drop(&mut self) {
        // The hooks may read and write the space's memory and wake waiters
        // of other spaces; none is taken under another lock.
        let hooks = std::mem::take(&mut *self.inner.exit_hooks.lock());
        for hook in hooks {
            hook(self);
        }
        fork::do_exit(&self.inner);
        self.inner.machine.release();
    }
}

impl std::fmt::Debug for Mm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mm({})", self.inner.id)
    }
}

/// How fork treats page tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForkPolicy {
    /// Share each PTE table that maps only private anonymous memory between
    /// parent and child, write-protected, and copy it at the first change
    /// (seed 001; see `pgtable/share.rs`). Fork costs O(tables), not O(pages).
    #[default]
    SharedTables,
    /// Copy every PTE of private memory into new tables, write-protecting
    /// both sides (what Linux does).
    CopyTables,
}

/// Fault `va` in and take a reference on its frame, so that a concurrent
/// DONTNEED or COW in another thread (both run under the read lock too)
/// cannot free it while we copy: get the reference unless the frame is
/// already free, then check that the entry still maps that frame (it may
/// have been freed and reused in between), as GUP-fast does.
pub(crate) fn grab_page(mm: &MmInner, st: &MmState, va: u64, access: Access) -> Result<FrameId> {
    let arena = mm.arena();
    let pt = st.pt.as_ref().ok_or(Error::Exited)?;
    loop {
        let pte = fault::fault_in(mm, st, va, access, None)?;
        let f = pte.frame();
        if arena.try_get(f) {
            let now = pt.follow_pte(arena, va & !(PAGE_SIZE as u64 - 1));
            if now.is_present() && now.frame() == f && (access == Access::Read || now.is_writable()) {
                return Ok(f);
            }
            arena.put(f);
        }
    }
}

/// The first address of the page after `va`'s, saturating at the top of
/// the 64-bit space instead of wrapping.
#[inline]
pub(crate) fn page_end(va: u64) -> u64 {
    (va | (PAGE_SIZE as u64 - 1)).saturating_add(1)
}

/// One page's piece of a byte range `[addr, end)` (`page_pieces`): it
/// starts at guest address `va`, at offset `off` in its page, and is bytes
/// `lo..hi` of the range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Piece {
    pub(crate) va: u64,
    pub(crate) off: usize,
    pub(crate) lo: usize,
    pub(crate) hi: usize,
}

/// `[addr, end)` cut at page boundaries, in order (`end >= addr`): what
/// every byte copy to or from guest memory walks, one frame at a time.
pub(crate) fn page_pieces(addr: u64, end: u64) -> impl Iterator<Item = Piece> {
    let mut va = addr;
    std::iter::from_fn(move || {
        if va >= end {
            return None;
        }
        let hi = page_end(va).min(end);
        let lo = (va - addr) as usize;
        let piece = Piece { va, off: (va & (PAGE_SIZE as u64 - 1)) as usize, lo, hi: lo + (hi - va) as usize };
        va = hi;
        Some(piece)
    })
}

#[cfg(all(test, not(loom)))]
mod page_pieces_tests {
    use super::{page_pieces, Piece};

    fn pieces(addr: u64, end: u64) -> Vec<(u64, usize, usize, usize)> {
        page_pieces(addr, end).map(|Piece { va, off, lo, hi }| (va, off, lo, hi)).collect()
    }

    #[test]
    fn ranges_cut_at_page_boundaries() {
        assert_eq!(pieces(0x1000, 0x1000), vec![]);
        assert_eq!(pieces(0x1ffe, 0x2003), vec![(0x1ffe, 0xffe, 0, 2), (0x2000, 0, 2, 5)]);
        assert_eq!(pieces(0x1000, 0x3000), vec![(0x1000, 0, 0, 0x1000), (0x2000, 0, 0x1000, 0x2000)]);
        // The last page of the address space ends the walk (no overflow).
        let top = u64::MAX - 0xfff;
        assert_eq!(pieces(top + 8, u64::MAX), vec![(top + 8, 8, 0, 0xff7)]);
    }
}
