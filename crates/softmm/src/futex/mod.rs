//! Futexes on aligned `u32` words of softmm memory (seeds 000 and 003).
//!
//! A waiter is keyed either by the frame and offset of its word
//! ([`FutexKeys::Physical`], the default: two address spaces that map the
//! same frame meet in one queue, across fork, until either side breaks COW
//! of that page) or as today's Linux keys it ([`FutexKeys::Linux`]:
//! `(mm, address)` for private memory, `(object, offset)` for shared).
//!
//! ```
//! use softmm::futex::{WaitState, BITSET_MATCH_ANY};
//! use softmm::{Config, Machine, MapKind, Placement, Prot};
//!
//! let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() })?;
//! let parent = machine.new_mm()?;
//! let word = parent.mmap(0x1000_0000, 4096, Prot::RW, MapKind::Private, Placement::Fixed)?;
//! parent.write(word, &0u32.to_ne_bytes())?;
//! let child = parent.fork()?;
//!
//! // The child waits; the page is still shared copy-on-write, so the
//! // parent's wake reaches it (physical keys).
//! let waiter = child.futex_wait_start(word, 0, BITSET_MATCH_ANY)?;
//! assert_eq!(parent.futex_wake(word, 1)?, 1);
//! assert_eq!(waiter.state(), WaitState::Woken);
//! waiter.wait(None)?;
//!
//! // Once the child breaks COW, its waiter follows its own copy.
//! let waiter = child.futex_wait_start(word, 0, BITSET_MATCH_ANY)?;
//! child.write(word + 8, b"x")?;
//! assert_eq!(parent.futex_wake(word, 1)?, 0);
//! assert_eq!(child.futex_wake(word, 1)?, 1);
//! # drop(waiter);
//! # Ok::<(), softmm::Error>(())
//! ```
//!
//! In physical mode each waiter attaches a vcache entry for its
//! `(mm, page)` before it re-checks the translation; every change of that
//! translation calls back and the waiter is moved to the key of the new
//! frame (`follow`), so it is never stranded on a frame its page left.
//!
//! # Protocol (physical mode), and the lock order
//! `mmap_lock` (read) -> vcache bucket -> futex bucket -> waiter (leaf).
//! - wait: resolve the key (may fault, no futex lock held); lock the vcache
//!   bucket of `(mm, page)`; attach (count + entry + full fence); lock the
//!   futex bucket and raise its waiter count; re-check that the page still
//!   maps the same frame (lock-free walk) and compare the word; queue.
//! - COW (and every other change): change the PTE under the page-table
//!   lock, release it, full fence, read the mm's vcache count; if not zero,
//!   lock the vcache bucket and call back; the callback takes futex buckets.
//! - wake: resolve without faulting; if the mm has vcache entries, hold the
//!   vcache bucket of the page while re-resolving and waking, so that a
//!   callback moving one of this mm's waiters cannot run between our look at
//!   the page and our look at the queue. A woken waiter whose only entry is
//!   that page's is detached there, and its key's frame reference dropped
//!   (`table::release`): it leaves without taking a lock.
//!
//! The seed patch took vcache -> futex -> page-table locks in `queue_me`
//! while COW held the page-table lock and called into the vcache: a cycle.
//! Here the re-check is a lock-free walk (tables cannot be freed under the
//! `mmap_lock`), and COW calls the vcache only after it released the
//! page-table lock, so no path takes the page-table lock inside a vcache or
//! futex lock. `docs/ARCHITECTURE.md` argues the fence pairing.

mod key;
#[cfg(all(test, loom))]
mod loom_pi;
#[cfg(all(test, loom))]
mod loom_tests;
pub mod mutex;
mod op;
mod pi;
mod requeue_pi;
mod resolve;
mod robust;
mod table;
#[cfg(all(test, not(loom)))]
mod tests;
mod waiter;
mod waitv;

pub use key::FutexKey;
pub use op::{WakeOp, WakeOpCmp, WakeOpKind};
pub use robust::{
    RobustExit, FUTEX_OWNER_DIED, FUTEX_TID_MASK, FUTEX_WAITERS, ROBUST_LIST_HEAD_LEN, ROBUST_LIST_LIMIT,
};
pub use table::WaitState;
pub use waiter::FutexWaiter;
pub use waitv::{
    FutexWaitv, FutexWaitvCanceller, FUTEX2_MPOL, FUTEX2_NUMA, FUTEX2_PRIVATE, FUTEX2_SIZE_MASK, FUTEX2_SIZE_U32,
    FUTEX_WAITV_MAX,
};

use crate::error::{Error, Result};
use crate::mm::{MmInner, MmState};
use crate::phys::{FrameArena, FrameId, ZERO_FRAME};
use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::vcache::{Translation, Vcache};
use resolve::{Intent, Resolved};
use std::time::{Duration, Instant};
use table::{Check, FrameRefs, FutexTable, Node, Notify};

/// How futexes are keyed; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FutexKeys {
    /// By frame and offset, kept right across COW by the vcache.
    #[default]
    Physical,
    /// As Linux does: `(mm, address)` for private memory, `(object, offset)`
    /// for shared memory.
    Linux,
}

impl std::str::FromStr for FutexKeys {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "physical" => Ok(FutexKeys::Physical),
            "linux" => Ok(FutexKeys::Linux),
            other => Err(format!("unknown futex key mode `{other}` (physical or linux)")),
        }
    }
}

/// The bitset that matches every waiter (Linux's `FUTEX_BITSET_MATCH_ANY`).
pub const BITSET_MATCH_ANY: u32 = u32::MAX;

/// Futex state of a machine: the hash of waiters and the vcache.
///
/// There is no machine-wide list of waiters: a waiter holding a frame
/// reference through its key (physical keys only) has a vcache entry from
/// before it is queued until it has dropped that reference, so audits find
/// every such waiter through the vcache; the reuse test of COW reads the
/// per-frame count of keyed waiters (`FrameMeta::futex_keys`).
#[derive(Default)]
pub(crate) struct Futexes {
    pub(crate) table: FutexTable,
    pub(crate) vcache: Vcache<Node>,
    /// Robust-list heads per space and thread (`robust.rs`).
    pub(crate) robust: robust::RobustHeads,
}

impl FrameRefs for FrameArena {
    fn get(&self, f: FrameId) {
        FrameArena::get(self, f)
    }
    fn put(&self, f: FrameId) {
        FrameArena::put(self, f);
    }
    fn key_on(&self, f: FrameId) {
        self.meta(f).futex_keys.fetch_add(1, Ordering::SeqCst);
    }
    fn key_off(&self, f: FrameId) {
        self.meta(f).futex_keys.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Futexes {
    /// The frame references futex waiters hold, per frame (audits; nothing
    /// in flight). Also checks that every frame's count of keyed waiters
    /// matches the waiters found.
    pub(crate) fn held_refs(
        &self,
        arena: &FrameArena,
    ) -> std::result::Result<std::collections::HashMap<FrameId, u64>, String> {
        let mut seen = std::collections::HashSet::new();
        let mut held = std::collections::HashMap::new();
        self.vcache.each_entry(|_, _, node| {
            if seen.insert(Arc::as_ptr(node) as usize) {
                if let Some(f) = node.inner.lock().key.frame() {
                    *held.entry(f).or_insert(0) += 1;
                }
            }
        });
        for i in 1..arena.touched() {
            let f = FrameId(i);
            let counted = u64::from(arena.meta(f).futex_keys());
            let found = held.get(&f).copied().unwrap_or(0);
            if counted != found {
                return Err(format!("frame {i} counts {counted} keyed futex waiters, {found} found"));
            }
        }
        Ok(held)
    }

    /// Check `mm`'s side of the vcache and the waiters following its pages:
    /// the entry count is exact, and no queued waiter is keyed by a frame
    /// its page no longer maps (a stale key). The caller holds `mm`'s
    /// `mmap_lock` and nothing is in flight.
    pub(crate) fn audit(&self, mm: &MmInner, st: &MmState) -> std::result::Result<(), String> {
        let attached = self.vcache.count_for(mm.id);
        let counted = mm.vcache_users.load(Ordering::SeqCst);
        if attached != counted {
            return Err(format!("{attached} vcache entries attached but the count says {counted}"));
        }
        let mut found = Ok(());
        self.vcache.each_entry(|id, page, node| {
            if id != mm.id || found.is_err() {
                return;
            }
            found = Self::audit_waiter(mm, st, node, page);
        });
        found
    }

    /// `audit` of one waiter with an entry for `page` of `mm`: a waiter
    /// that follows the page is keyed by what the page is now; one that
    /// stopped following it (the page was unmapped) is not keyed by the
    /// frame the page maps now (else it would miss that page's next COW).
    /// Every queued waiter follows a page it has an entry for, or left one.
    fn audit_waiter(mm: &MmInner, st: &MmState, node: &Arc<Node>, page: u64) -> std::result::Result<(), String> {
        let inner = node.inner.lock();
        if node.state() != WaitState::Waiting {
            return Ok(());
        }
        let (want, offset) = match inner.key {
            FutexKey::Frame { frame, offset } => (Some(frame), offset),
            FutexKey::Private { addr, .. } => (None, (addr & 0xfff) as u32),
            FutexKey::Shared { .. } => return Err("a physical-mode waiter has a shared-object key".into()),
        };
        let va = page + u64::from(offset);
        let whose = |t: Option<(u64, u64)>| t.is_some_and(|(m, p)| inner.entries.iter().any(|e| (e.0, e.1) == (m, p)));
        if !whose(inner.tracked) && !whose(inner.left) {
            return Err(format!("waiter at {va:#x} keyed {:?} follows no page it has an entry for", inner.key));
        }
        let follows = inner.tracked == Some((mm.id, page));
        let left = inner.left == Some((mm.id, page));
        if !follows && !left {
            return Ok(()); // it follows another entry's page: audited there
        }
        let now = resolve::page_now(mm, st, va);
        if let Translation::Frame(g) = now {
            mm.arena().put(g);
        }
        let stale = match (follows, now) {
            (true, Translation::Frame(g)) => want != Some(g),
            (true, Translation::Zero) => want.is_some(),
            (true, Translation::Swapped | Translation::None) => true,
            // Shared memory keeps its frame under every mapping of it (no
            // COW), so a waiter that left a page of it misses nothing.
            (false, Translation::Frame(g)) => want == Some(g) && !mm.arena().meta(g).has(crate::phys::flags::SHM),
            (false, _) => false,
        };
        if stale {
            let how = if follows { "follows" } else { "left" };
            return Err(format!("waiter at {va:#x} keyed {:?} {how} a page that is {now:?}", inner.key));
        }
        Ok(())
    }
}

/// Futexes are a vcache client: a waiter keyed by a frame follows its
/// page when the translation changes, and a space that exits ends the
/// waits it started.
impl crate::vcache::Client for Futexes {
    fn invalidate(&self, frames: &FrameArena, mm: u64, lo: u64, hi: u64, now: &dyn Fn(u64) -> Translation) {
        self.vcache.call_range(mm, lo, hi, |node, page| table::follow(&self.table, frames, node, mm, page, now));
    }

    /// mremap moved the pages: a waiter following one of them follows it
    /// to its new address (same frame, so its key stays, unless it names
    /// the address: a zero-frame page's).
    fn moved(&self, frames: &FrameArena, mm: u64, lo: u64, hi: u64, new_lo: u64) {
        self.vcache.moved(mm, lo, hi, new_lo, |node, old, new| table::moved(&self.table, frames, node, mm, old, new));
    }

    /// End every wait the space started, as Linux's exit ends the threads
    /// that wait. Each ends `Exited` (`Error::Exited` to whoever waits on
    /// it), its frame reference dropped and its vcache entries detached
    /// now, whether or not the host ever drops its `FutexWaiter`. Runs
    /// after the space's shootdown: a waiter's reference may be its
    /// frame's last.
    fn release(&self, frames: &FrameArena, users: &AtomicUsize, mm: u64) {
        for (notify, node) in self.table.end_owned(mm) {
            waiter::release_from(&self.vcache, users, frames, &node, true);
            notify.notify(&node);
        }
    }
}

/// A deadline for a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// Relative to the start of the wait (FUTEX_WAIT).
    After(Duration),
    /// An absolute instant (FUTEX_WAIT_BITSET).
    At(Instant),
}

impl Timeout {
    pub(crate) fn deadline(self) -> Instant {
        match self {
            Timeout::After(d) => Instant::now().checked_add(d).unwrap_or_else(far_future),
            Timeout::At(t) => t,
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

fn check_addr(addr: u64) -> Result<()> {
    if addr % 4 != 0 {
        return Err(Error::Invalid("futex address is not 4-byte aligned"));
    }
    Ok(())
}

fn check_bitset(bitset: u32) -> Result<()> {
    if bitset == 0 {
        return Err(Error::Invalid("futex bitset is 0"));
    }
    Ok(())
}

/// Resolve `va` in the machine's key mode.
fn resolve(mm: &MmInner, st: &MmState, va: u64, intent: Intent) -> Result<Resolved> {
    match mm.machine.config.futex_keys {
        FutexKeys::Physical => resolve::physical(mm, st, va, intent),
        FutexKeys::Linux => resolve::linux(mm, st, va, intent),
    }
}

/// With `addr`'s vcache bucket locked (physical keys): the translation now,
/// every waiter following the page brought to its key, and that key.
fn settled(mm: &MmInner, st: &MmState, vb: &crate::vcache::Bucket<'_, Node>, addr: u64) -> Result<Resolved> {
    let page = addr & !0xfff;
    let now = resolve::page_now(mm, st, addr);
    table::settle(&mm.machine.futexes.table, mm.arena(), vb, mm.id, page, now);
    match now {
        Translation::Frame(frame) => {
            Ok(Resolved { key: FutexKey::Frame { frame, offset: (addr & 0xfff) as u32 }, frame })
        }
        _ => resolve::physical(mm, st, addr, Intent::Wake),
    }
}

type BucketPair<'a> = (crate::vcache::Bucket<'a, Node>, Option<crate::vcache::Bucket<'a, Node>>);

/// The locked bucket of `(mm, page)` among two from `Vcache::lock_two`.
fn bucket_of<'p, 'a>(vbs: &'p mut BucketPair<'a>, mm: u64, page: u64) -> &'p mut crate::vcache::Bucket<'a, Node> {
    if second_holds(vbs, mm, page) {
        if let Some(b) = &mut vbs.1 {
            return b;
        }
    }
    &mut vbs.0
}

/// Whether `(mm, page)`'s bucket is the second of the pair (else the first).
fn second_holds(vbs: &BucketPair<'_>, mm: u64, page: u64) -> bool {
    vbs.1.as_ref().is_some_and(|b| b.index == Vcache::<Node>::index(mm, page & !0xfff))
}

/// `settled` for the two pages of a requeue or wake-op, keys re-derived by
/// the caller (whose re-check under the futex locks retries if they moved).
fn settle_two(mm: &MmInner, st: &MmState, vbs: &BucketPair<'_>, addr: u64, addr2: u64) {
    for a in [addr, addr2] {
        let vb = match &vbs.1 {
            Some(b) if second_holds(vbs, mm.id, a) => b,
            _ => &vbs.0,
        };
        let now = resolve::page_now(mm, st, a);
        table::settle(&mm.machine.futexes.table, mm.arena(), vb, mm.id, a & !0xfff, now);
        if let Translation::Frame(f) = now {
            mm.arena().put(f);
        }
    }
}

/// The `mmap_lock` for a futex call at `addr` (`EFAULT` once the space exited).
fn read_state(mm: &MmInner, addr: u64) -> Result<parking_lot::RwLockReadGuard<'_, MmState>> {
    let st = mm.state.read();
    if st.pt.is_none() {
        return Err(Error::Fault { addr });
    }
    Ok(st)
}

/// The keys of the two words of a requeue or wake-op (the first as a wake
/// resolves it).
fn resolve_two(mm: &MmInner, st: &MmState, addr: u64, addr2: u64, intent2: Intent) -> Result<(Resolved, Resolved)> {
    let r1 = resolve(mm, st, addr, Intent::Wake)?;
    match resolve(mm, st, addr2, intent2) {
        Ok(r2) => Ok((r1, r2)),
        Err(e) => {
            r1.release_frame(mm);
            Err(e)
        }
    }
}

/// The end of one try of a two-word call (its locks already dropped):
/// release both frames; `None` means the pages moved, try again.
fn end_try(
    mm: &MmInner,
    (r1, r2): (Resolved, Resolved),
    result: std::result::Result<u32, Option<Error>>,
) -> Option<Result<u32>> {
    r1.release_frame(mm);
    r2.release_frame(mm);
    match result {
        Ok(n) => Some(Ok(n)),
        Err(None) => None,
        Err(Some(e)) => Some(Err(e)),
    }
}

fn physical(mm: &MmInner) -> bool {
    mm.machine.config.futex_keys == FutexKeys::Physical
}

/// The word at `va`, read through `frame` (zeros for the zero frame).
fn load_word(mm: &MmInner, frame: FrameId, va: u64) -> u32 {
    if frame == ZERO_FRAME {
        return 0;
    }
    mm.arena().word32(frame, (va & 0xfff) as usize).load(Ordering::SeqCst)
}

impl crate::Mm {
    /// FUTEX_WAIT: if the word at `addr` holds `val`, sleep until woken,
    /// until `timeout` passes (`ETIMEDOUT`), or until cancelled (`EINTR`).
    /// `EAGAIN` if the word differs, `EFAULT` if it is not mapped readable,
    /// `EINVAL` if `addr` is not 4-byte aligned.
    pub fn futex_wait(&self, addr: u64, val: u32, timeout: Option<Duration>) -> Result<()> {
        wait(&self.inner, addr, val, BITSET_MATCH_ANY, timeout.map(Timeout::After))
    }

    /// FUTEX_WAIT_BITSET: as [`futex_wait`](Self::futex_wait), woken only by
    /// wakes whose bitset meets `bitset`; the deadline is absolute, as in Linux.
    pub fn futex_wait_bitset(&self, addr: u64, val: u32, bitset: u32, deadline: Option<Instant>) -> Result<()> {
        wait(&self.inner, addr, val, bitset, deadline.map(Timeout::At))
    }

    /// The first half of a wait: check the word and queue a waiter, without
    /// blocking. The returned [`FutexWaiter`] is then waited on (blocking,
    /// or as a `Future`), polled, or cancelled; dropping it leaves the queue.
    pub fn futex_wait_start(&self, addr: u64, val: u32, bitset: u32) -> Result<FutexWaiter> {
        wait_start(&self.inner, addr, val, bitset)
    }

    /// FUTEX_WAKE: wake at most `n` waiters of the futex at `addr` (as in
    /// Linux, `n == 0` wakes one). Returns how many were woken.
    pub fn futex_wake(&self, addr: u64, n: u32) -> Result<u32> {
        self.futex_wake_bitset(addr, n, BITSET_MATCH_ANY)
    }

    /// FUTEX_WAKE_BITSET: wake at most `n` waiters whose bitset meets `bitset`.
    pub fn futex_wake_bitset(&self, addr: u64, n: u32, bitset: u32) -> Result<u32> {
        wake_bitset(&self.inner, addr, n, bitset)
    }
}

pub(crate) fn wait_start(mm: &std::sync::Arc<MmInner>, addr: u64, val: u32, bitset: u32) -> Result<FutexWaiter> {
    Ok(FutexWaiter::new(mm.clone(), start(mm, addr, val, bitset, false)?))
}

/// A wait that blocks the calling thread (`wait_start` + `FutexWaiter::wait`
/// without the `FutexWaiter`: no reference on the mm, no lock to say whom
/// to unpark, the node kept for the next wait without another reference).
pub(crate) fn wait(mm: &MmInner, addr: u64, val: u32, bitset: u32, timeout: Option<Timeout>) -> Result<()> {
    let node = start(mm, addr, val, bitset, true)?;
    waiter::park(mm, &node, timeout.map(Timeout::deadline));
    let end = waiter::leave(mm, &node);
    waiter::recycle(node);
    end
}

/// Check the word and queue a waiter's node; `blocking`: the caller blocks
/// on it in this thread, so the node is built to unpark it.
fn start(mm: &MmInner, addr: u64, val: u32, bitset: u32, blocking: bool) -> Result<Arc<Node>> {
    check_addr(addr)?;
    check_bitset(bitset)?;
    let st = read_state(mm, addr)?;
    let first = resolve(mm, &st, addr, Intent::Wait)?;
    // The common EAGAIN answered before anything is built: the word read
    // through the translation in force (a read of the current value).
    if load_word(mm, first.frame, addr) != val && resolve::still_maps(mm, &st, addr, first.frame, false) {
        first.release_frame(mm);
        return Err(Error::Again);
    }
    // Everything the node needs is set before it is shared: no lock.
    let notify = if blocking { waiter::blocking_notify() } else { Notify::None };
    let track = physical(mm).then_some((mm.id, addr & !0xfff, None));
    let node = waiter::new_node(first.key, bitset, notify, track, mm.id);
    let check = |r: &Resolved| {
        if !resolve::still_maps(mm, &st, addr, r.frame, false) {
            Check::Retry
        } else if load_word(mm, r.frame, addr) == val {
            Check::Queue
        } else {
            Check::Again
        }
    };
    match enqueue(mm, &st, &node, first, addr, Intent::Wait, check) {
        Ok(()) => Ok(node),
        Err(e) => {
            let _ = waiter::leave(mm, &node);
            waiter::recycle(node);
            Err(e)
        }
    }
}

/// `start`'s queueing of `node` (keyed by `first`, resolved with `intent`),
/// if `check` says so under the bucket lock (`Check::Again` answers
/// `EAGAIN`), retried while the translation moves under it.
fn enqueue(
    mm: &MmInner,
    st: &MmState,
    node: &Arc<Node>,
    first: Resolved,
    addr: u64,
    intent: Intent,
    mut check: impl FnMut(&Resolved) -> Check,
) -> Result<()> {
    let fx = &mm.machine.futexes;
    let page = addr & !0xfff;
    let mut first = Some(first);
    let mut attached = false;
    loop {
        let r = match first.take() {
            Some(r) => r,
            None => {
                let r = resolve(mm, st, addr, intent)?;
                node.set_key(&mut node.inner.lock(), r.key);
                r
            }
        };
        // Physical keys: publish the vcache entry before the re-check (on
        // a retry it is there already: only the fence is repeated).
        let mut vb = physical(mm).then(|| fx.vcache.lock(mm.id, page));
        if let Some(vb) = vb.as_mut() {
            if attached {
                crate::sync::fence(Ordering::SeqCst);
            } else {
                vb.attach(&mm.vcache_users, mm.id, page, node.clone());
                attached = true;
            }
        }
        let verdict = fx.table.queue(node, r.key, mm.arena(), || check(&r));
        drop(vb);
        match verdict {
            Check::Queue => {
                if !physical(mm) {
                    r.release_frame(mm); // Linux keys hold no frame
                }
                return Ok(());
            }
            Check::Retry => r.release_frame(mm),
            Check::Again => {
                r.release_frame(mm);
                return Err(Error::Again);
            }
        }
    }
}

pub(crate) fn wake_bitset(mm: &MmInner, addr: u64, n: u32, bitset: u32) -> Result<u32> {
    check_addr(addr)?;
    check_bitset(bitset)?;
    let st = read_state(mm, addr)?;
    let fx = &mm.machine.futexes;
    if !physical(mm) || mm.vcache_users.load(Ordering::SeqCst) == 0 {
        // No waiter follows a page of this mm: nothing can be half-moved.
        if physical(mm) {
            // Nobody waiting is answered from the entry as it is, without a
            // frame reference: the frame only chooses the bucket to look at
            // (as the accessor's TLB answers it).
            if let Some(key) = resolve::peek(mm, &st, addr)? {
                if !fx.table.maybe_waiters(&key) {
                    return Ok(0);
                }
            }
        }
        let r = resolve(mm, &st, addr, Intent::Wake)?;
        let n = if fx.table.maybe_waiters(&r.key) { fx.table.wake(&r.key, n, bitset) } else { 0 };
        r.release_frame(mm);
        return Ok(n);
    }
    // A COW may have changed the page and not yet moved this mm's
    // waiters: look with the page's vcache bucket held, and settle
    // pending moves to what we see.
    let page = addr & !0xfff;
    let mut vb = fx.vcache.lock(mm.id, page);
    let r = settled(mm, &st, &vb, addr)?;
    // A woken waiter whose only entry is this page's would lock this bucket
    // again to detach it: detach it here, and drop its key's reference.
    let woken = fx.table.wake_expected(&r.key, n, bitset, |node, inner| {
        table::release(&mut vb, mm.arena(), &mm.vcache_users, mm.id, page, node, inner)
    });
    drop(vb);
    r.release_frame(mm);
    Ok(woken.notify())
}

impl crate::Mm {
    /// FUTEX_REQUEUE: wake at most `n_wake` waiters at `addr`, move at most
    /// `n_requeue` of the others to `addr2`. Returns woken + moved.
    pub fn futex_requeue(&self, addr: u64, n_wake: u32, n_requeue: u32, addr2: u64) -> Result<u32> {
        self.requeue(addr, n_wake, n_requeue, addr2, None)
    }

    /// FUTEX_CMP_REQUEUE: as [`futex_requeue`](Self::futex_requeue), but
    /// only if the word at `addr` still holds `val` (else `EAGAIN`).
    pub fn futex_cmp_requeue(&self, addr: u64, n_wake: u32, n_requeue: u32, addr2: u64, val: u32) -> Result<u32> {
        self.requeue(addr, n_wake, n_requeue, addr2, Some(val))
    }

    fn requeue(&self, addr: u64, n_wake: u32, n_requeue: u32, addr2: u64, cmp: Option<u32>) -> Result<u32> {
        check_addr(addr)?;
        check_addr(addr2)?;
        let mm = &self.inner;
        let st = read_state(mm, addr)?;
        let fx = &mm.machine.futexes;
        let arena = mm.arena();
        loop {
            let (r1, r2) = resolve_two(mm, &st, addr, addr2, Intent::Wait)?;
            let (page1, page2) = (addr & !0xfff, addr2 & !0xfff);
            let mut vbs = physical(mm).then(|| fx.vcache.lock_two(mm.id, page1, page2));
            if let Some(vbs) = &vbs {
                settle_two(mm, &st, vbs, addr, addr2);
            }
            let result = fx.table.requeue(
                &r1.key,
                &r2.key,
                n_wake,
                n_requeue,
                arena,
                || {
                    let stable = resolve::still_maps(mm, &st, addr, r1.frame, false)
                        && resolve::still_maps(mm, &st, addr2, r2.frame, false);
                    if !stable {
                        return Err(None);
                    }
                    match cmp {
                        Some(v) if load_word(mm, r1.frame, addr) != v => Err(Some(Error::Again)),
                        _ => Ok(()),
                    }
                },
                |node, inner| {
                    // Physical keys follow the new page from now on.
                    let Some(vbs) = vbs.as_mut() else { return };
                    bucket_of(vbs, mm.id, page2).attach(&mm.vcache_users, mm.id, page2, node.clone());
                    inner.entries.push((mm.id, page2, Some(mm.vcache_users.clone())));
                    inner.tracked = Some((mm.id, page2));
                    inner.left = None;
                },
            );
            drop(vbs);
            if let Some(done) = end_try(mm, (r1, r2), result) {
                return done;
            }
        }
    }

    /// FUTEX_WAKE_OP: apply `op` to the word at `addr2` atomically, wake at
    /// most `n` waiters at `addr` and, if `op`'s comparison of the old value
    /// holds, at most `n2` at `addr2`. Returns the total woken.
    pub fn futex_wake_op(&self, addr: u64, n: u32, addr2: u64, n2: u32, op: WakeOp) -> Result<u32> {
        check_addr(addr)?;
        check_addr(addr2)?;
        let mm = &self.inner;
        let st = read_state(mm, addr)?;
        let fx = &mm.machine.futexes;
        loop {
            let (r1, r2) = resolve_two(mm, &st, addr, addr2, Intent::Modify)?;
            let vbs = (physical(mm) && mm.vcache_users.load(Ordering::SeqCst) > 0)
                .then(|| fx.vcache.lock_two(mm.id, addr & !0xfff, addr2 & !0xfff));
            if let Some(vbs) = &vbs {
                settle_two(mm, &st, vbs, addr, addr2);
            }
            let result = fx.table.wake_op(&r1.key, n, &r2.key, n2, || {
                if !resolve::still_maps(mm, &st, addr, r1.frame, false)
                    || !resolve::still_maps(mm, &st, addr2, r2.frame, true)
                {
                    return Err(None);
                }
                let word = mm.arena().word32(r2.frame, (addr2 & 0xfff) as usize);
                op.apply(word).map_err(Some)
            });
            drop(vbs);
            if let Some(done) = end_try(mm, (r1, r2), result) {
                return done;
            }
        }
    }

    /// The futex system call as Linux decodes it, for hosts that emulate
    /// system calls: `op` is `FUTEX_*` (with `FUTEX_PRIVATE_FLAG`, and
    /// `FUTEX_CLOCK_REALTIME` with `FUTEX_WAIT_BITSET` only: Linux took it
    /// with `FUTEX_WAIT` from 4.5 to 5.12 and answers `ENOSYS` again since
    /// 5.13, in the stable kernels too), `val2` is the requeue count or the
    /// second wake count, `val3` the compare value, bitset or encoded op.
    /// Unknown commands are `ENOSYS`, as in Linux.
    #[allow(clippy::too_many_arguments)]
    pub fn futex_syscall(
        &self,
        addr: u64,
        op: u32,
        val: u32,
        timeout: Option<Timeout>,
        addr2: u64,
        val2: u32,
        val3: u32,
    ) -> Result<u32> {
        const PRIVATE: u32 = 128;
        const CLOCK_REALTIME: u32 = 256;
        let cmd = op & !(PRIVATE | CLOCK_REALTIME);
        if op & CLOCK_REALTIME != 0 && cmd != 9 {
            return Err(Error::Unsupported("FUTEX_CLOCK_REALTIME with this command"));
        }
        let count = |v: u32| -> Result<u32> {
            if (v as i32) < 0 {
                return Err(Error::Invalid("negative futex count"));
            }
            Ok(v)
        };
        match cmd {
            0 => wait(&self.inner, addr, val, BITSET_MATCH_ANY, timeout).map(|_| 0),
            1 => self.futex_wake(addr, val),
            3 => self.futex_requeue(addr, count(val)?, count(val2)?, addr2),
            4 => self.futex_cmp_requeue(addr, count(val)?, count(val2)?, addr2, val3),
            5 => self.futex_wake_op(addr, val, addr2, val2, WakeOp::from_raw(val3)?),
            9 => wait(&self.inner, addr, val, val3, timeout).map(|_| 0),
            10 => self.futex_wake_bitset(addr, val, val3),
            6..=8 | 11 | 13 => Err(Error::Unsupported(
                "PI futex commands need the caller's TID: use Mm::futex_lock_pi, futex_trylock_pi, futex_unlock_pi, \
                 futex_wait_requeue_pi",
            )),
            12 => self.futex_cmp_requeue_pi(addr, val, count(val2)?, addr2, val3),
            _ => Err(Error::Unsupported("futex command")),
        }
    }

    /// Waiters (and requeued waiters) tracking pages of this address space
    /// through the vcache.
    pub fn vcache_entries(&self) -> usize {
        self.inner.vcache_users.load(Ordering::SeqCst)
    }
}
