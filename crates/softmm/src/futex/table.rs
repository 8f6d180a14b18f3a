//! The futex hash: buckets of queued waiters, keyed by [`FutexKey`].
//!
//! This file knows nothing about page tables: callers derive keys (see
//! `key.rs`) and pass a `check` closure that re-validates the translation
//! and reads the futex word under the bucket lock. It is written against
//! `crate::sync` so that the loom model in `loom_tests.rs` runs this very
//! code.
//!
//! Locks: a bucket's mutex, then a waiter's `inner` mutex (leaf). Two
//! buckets are taken together only in index order.
//!
//! Frame references: a waiter keyed by `Frame` holds one reference on that
//! frame (the seed's `pin_page`), so the key cannot name a freed and reused
//! frame. Whoever changes a queued waiter's key (rekey, requeue) moves that
//! reference; the waiter drops it when it leaves (`waiter::leave`), or the
//! wake that takes it off the queue does (`release`). Each such reference
//! is also counted per frame (`FrameRefs::key_on`/`key_off`: counted after
//! it is taken, uncounted before it is dropped), for COW's reuse test.

use super::key::FutexKey;
use crate::few::Few;
use crate::phys::FrameId;
use crate::sync::{fence, Arc, AtomicBool, AtomicU32, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::vcache::Translation;
use std::collections::VecDeque;

const BUCKETS: usize = if cfg!(loom) { 2 } else { 512 };

/// Reference counting of frames, as the table needs it (the arena in
/// softmm, a small model under loom).
pub(crate) trait FrameRefs: Send + Sync {
    /// Take a reference on a frame the caller already holds one on.
    fn get(&self, f: FrameId);
    /// Drop a reference.
    fn put(&self, f: FrameId);
    /// A waiter's key now names `f`, holding one of its references (taken before).
    fn key_on(&self, f: FrameId);
    /// A waiter's key no longer names `f` (its reference is dropped or moved after).
    fn key_off(&self, f: FrameId);
}

/// Where a waiter is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WaitState {
    /// Not queued yet (being set up) or being set up again.
    Idle = 0,
    /// Queued, asleep or about to be.
    Waiting = 1,
    /// Taken off the queue by a wake.
    Woken = 2,
    /// Taken off the queue by its deadline.
    TimedOut = 3,
    /// Taken off the queue by a cancellation.
    Cancelled = 4,
    /// Taken off the queue because the address space that started the
    /// wait exited (Linux ends the threads that wait); its frame reference
    /// and vcache entries are released then.
    Exited = 5,
}

impl WaitState {
    fn from_u8(v: u8) -> WaitState {
        match v {
            1 => WaitState::Waiting,
            2 => WaitState::Woken,
            3 => WaitState::TimedOut,
            4 => WaitState::Cancelled,
            5 => WaitState::Exited,
            _ => WaitState::Idle,
        }
    }
}

/// How to tell a sleeping waiter that its state changed.
#[derive(Default)]
pub(crate) enum Notify {
    #[default]
    None,
    /// Loom and Miri: the thread's parker (there is no futex(2) there).
    #[cfg(any(loom, miri))]
    Thread(std::thread::Thread),
    Task(std::task::Waker),
    /// The waiter sleeps in futex(2) on its node's `state` word
    /// (`waiter::park`): a wake changes the state, then wakes that word.
    /// No thread handle is cloned per wait or dropped per wake, and no
    /// parker state is changed on either side.
    #[cfg(not(any(loom, miri)))]
    Futex,
}

impl Notify {
    pub(crate) fn notify(self, node: &Node) {
        #[cfg(any(loom, miri))]
        let _ = node; // no futex(2) there: the parker or the waker says it
        match self {
            Notify::None => {}
            #[cfg(any(loom, miri))]
            Notify::Thread(t) => t.unpark(),
            Notify::Task(w) => w.wake(),
            #[cfg(not(any(loom, miri)))]
            Notify::Futex => node.wake_sleeper(),
        }
    }
}

/// What a waiter's mutex guards.
pub(crate) struct NodeInner {
    pub(crate) key: FutexKey,
    pub(crate) bitset: u32,
    pub(crate) notify: Notify,
    /// The `(mm, page)` whose translation the key follows (physical keys);
    /// a vcache callback for any other entry of this waiter is ignored.
    pub(crate) tracked: Option<(u64, u64)>,
    /// The page this waiter stopped following because it was unmapped
    /// (`follow` on `Translation::None`): the audit checks that page no
    /// longer maps the key's frame.
    pub(crate) left: Option<(u64, u64)>,
    /// Every vcache entry attached for this waiter (usually one, kept
    /// inline: no allocation per wait).
    pub(crate) entries: crate::few::Few<Tracking>,
    /// A `FUTEX_LOCK_PI` waiter's TID (0 for other waiters). Such a waiter
    /// has bitset 0, so no plain wake takes it: only an unlock that hands
    /// it the lock (`FutexTable::unlock_pi`).
    pub(crate) pi_tid: u32,
    /// A `FUTEX_WAIT_REQUEUE_PI` waiter still on its first futex: the PI
    /// futex it agreed to be requeued to (`FUTEX_CMP_REQUEUE_PI` checks
    /// it). `None` once requeued: it is then a PI waiter like any other.
    pub(crate) pi_target: Option<PiTarget>,
    /// Set with `Woken` by a `FUTEX_CMP_REQUEUE_PI` that found this waiter's
    /// TID owning the PI futex it was to be requeued to (`EDEADLK`).
    pub(crate) pi_deadlock: bool,
}

/// The PI futex a `FUTEX_WAIT_REQUEUE_PI` waiter named: its key when the
/// wait started, and the address in the space that started it. A requeue
/// to either matches (a physical key changes when the page is copied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PiTarget {
    pub(crate) key: FutexKey,
    pub(crate) mm: u64,
    pub(crate) addr: u64,
}

/// A vcache entry of a waiter: `(mm, page, mm's count of entries)`, the
/// count `None` for the mm that started the wait (its own page: every
/// place that detaches it has that mm at hand, so no `Arc` is cloned per
/// wait).
pub(crate) type Tracking = (u64, u64, Option<Arc<AtomicUsize>>);

/// No frame in `Node::frame`.
const NO_FRAME: u32 = u32::MAX;

/// A waiter: queued in at most one bucket at a time.
pub(crate) struct Node {
    /// A `WaitState`; a 32-bit word so that a blocked waiter can sleep on
    /// it in futex(2) (`Notify::Futex`).
    pub(crate) state: AtomicU32,
    /// `inner.key.frame()`, written with it under `inner`: lets a wake's
    /// `settle` see that a waiter is keyed where it should be without
    /// taking the waiter's lock.
    frame: AtomicU32,
    /// Set, under `inner`, by whoever detached the waiter's vcache entries
    /// and dropped its key's frame reference: a wake that found the
    /// waiter's only entry (before the state becomes `Woken`), the exit of
    /// the waiter's address space, or the waiter's own `leave`. Whoever
    /// finds it set has nothing left to release.
    pub(crate) released: AtomicBool,
    /// The id of the address space that started the wait (its exit ends
    /// the wait: `FutexTable::end_owned`).
    owner: u64,
    /// Set by a blocking waiter (`Notify::Futex`) before it sleeps in
    /// futex(2) on `state`; a waker whose waiter never got that far skips
    /// the system call (see `wake_sleeper`). Unread under loom and Miri,
    /// whose waiters use the thread parker.
    #[cfg_attr(any(loom, miri), allow(dead_code))]
    pub(crate) sleeping: AtomicBool,
    pub(crate) inner: Mutex<NodeInner>,
}

impl Node {
    /// A node already keyed by `key` (not counted: `queue` does that),
    /// told through `notify`, and (physical keys) tracking `(mm, page)`:
    /// all set before anyone else can see the node, so without a lock.
    pub(crate) fn with(key: FutexKey, bitset: u32, notify: Notify, track: Option<Tracking>, owner: u64) -> Node {
        let mut entries = crate::few::Few::default();
        let tracked = track.as_ref().map(|(mm, page, _)| (*mm, *page));
        if let Some(t) = track {
            entries.push(t);
        }
        Node {
            state: AtomicU32::new(WaitState::Idle as u32),
            frame: AtomicU32::new(key.frame().map_or(NO_FRAME, |f| f.0)),
            released: AtomicBool::new(false),
            owner,
            sleeping: AtomicBool::new(false),
            inner: Mutex::new(NodeInner {
                key,
                bitset,
                notify,
                tracked,
                left: None,
                entries,
                pi_tid: 0,
                pi_target: None,
                pi_deadlock: false,
            }),
        }
    }

    pub(crate) fn state(&self) -> WaitState {
        WaitState::from_u8(self.state.load(Ordering::Acquire) as u8)
    }

    /// Wake the thread sleeping on `state` (`Notify::Futex`), after the
    /// state left `Waiting`, if it sleeps. A private futex: the word is in
    /// this process.
    ///
    /// Dekker's pattern with `waiter::sleep`: we store the state, fence,
    /// read `sleeping`; the waiter stores `sleeping`, fences, and the kernel
    /// reads the state under its own lock. At least one side sees the
    /// other's store: either we see `sleeping` and wake it (at worst a wake
    /// the kernel finds nobody for, while the waiter's sleep then returns at
    /// once on the changed state), or the waiter's kernel sees the state
    /// changed and does not sleep.
    #[cfg(not(any(loom, miri)))]
    fn wake_sleeper(&self) {
        use rustix::thread::futex;
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            let _ = futex::wake(&self.state, futex::Flags::PRIVATE, 1);
        }
    }

    /// Change the key (`inner` is this node's, locked by the caller).
    pub(crate) fn set_key(&self, inner: &mut NodeInner, key: FutexKey) {
        inner.key = key;
        self.frame.store(key.frame().map_or(NO_FRAME, |f| f.0), Ordering::Relaxed);
    }

    /// The frame of the key, as last set (a snapshot: exact only under a
    /// lock that keeps the key from changing).
    fn key_frame(&self) -> Option<FrameId> {
        match self.frame.load(Ordering::Relaxed) {
            NO_FRAME => None,
            f => Some(FrameId(f)),
        }
    }

    /// Whether a wake released this waiter (see `released`); read after
    /// seeing the state `Woken`.
    pub(crate) fn released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }

    fn set_state(&self, s: WaitState) {
        self.state.store(s as u32, Ordering::Release);
    }
}

struct Bucket {
    /// Waiters queued or about to check the word (Linux's `hb->waiters`):
    /// lets a wake with nobody waiting skip the lock.
    waiters: AtomicUsize,
    queue: Mutex<VecDeque<Arc<Node>>>,
}

/// The futex hash of a machine.
pub(crate) struct FutexTable {
    buckets: Box<[Bucket]>,
    /// Moves of queued waiters from one bucket to another (rekey,
    /// requeue), counted under the locks of both: a scan of every bucket
    /// that saw no move meanwhile saw every waiter (`end_owned`).
    moves: AtomicUsize,
}

impl Default for FutexTable {
    fn default() -> Self {
        FutexTable {
            buckets: (0..BUCKETS)
                .map(|_| Bucket { waiters: AtomicUsize::new(0), queue: Mutex::new(VecDeque::new()) })
                .collect(),
            moves: AtomicUsize::new(0),
        }
    }
}

/// Two locked buckets (or one, when both keys hash to it).
struct Pair<'a> {
    lo: (usize, MutexGuard<'a, VecDeque<Arc<Node>>>),
    hi: Option<(usize, MutexGuard<'a, VecDeque<Arc<Node>>>)>,
}

impl<'a> Pair<'a> {
    fn get(&mut self, index: usize) -> &mut VecDeque<Arc<Node>> {
        match &mut self.hi {
            Some((i, g)) if *i == index => g,
            _ => &mut self.lo.1,
        }
    }
}

/// The caller's half of [`FutexTable::requeue_pi`], run under both
/// bucket locks.
pub(crate) trait RequeuePiOps {
    type Err;
    /// The translations still hold and the first word holds the expected
    /// value (else `Err`: retry or `EAGAIN`).
    fn check(&mut self) -> Result<(), Self::Err>;
    /// Whether a waiter that named `t` may be requeued to this PI futex.
    fn targets(&self, t: &PiTarget) -> bool;
    /// The error for a waiter that may not (`EINVAL`).
    fn invalid(&self) -> Self::Err;
    /// Take the PI lock for `tid` if it is free (`None`), else mark it
    /// `FUTEX_WAITERS` and answer its owner's TID; `EDEADLK` if `tid` owns it.
    fn acquire(&mut self, tid: u32) -> Result<Option<u32>, Self::Err>;
    /// `node` now waits on the PI futex (physical keys retarget its tracking).
    fn moved(&mut self, node: &Arc<Node>, inner: &mut NodeInner);
}

/// What `queue` decided after its check.
pub(crate) enum Check {
    /// The word holds the expected value: queue.
    Queue,
    /// It does not (`EAGAIN`).
    Again,
    /// The translation moved since the key was derived: derive it again.
    Retry,
}

impl FutexTable {
    fn index(key: &FutexKey) -> usize {
        (key.hash() >> 40) as usize % BUCKETS
    }

    fn lock_pair(&self, a: usize, b: usize) -> Pair<'_> {
        let (lo, hi) = (a.min(b), a.max(b));
        let lo_g = self.buckets[lo].queue.lock();
        let hi_g = (hi != lo).then(|| (hi, self.buckets[hi].queue.lock()));
        Pair { lo: (lo, lo_g), hi: hi_g }
    }

    /// Queue `node`, already keyed by `key` (`Node::with`, `set_key`), if
    /// `check` (run with the bucket locked and the bucket's waiter count
    /// raised, so a concurrent wake cannot miss us) says so. On `Queue` the
    /// node's state is `Waiting` and its key holds the caller's reference
    /// on `key`'s frame, if any.
    pub(crate) fn queue(
        &self,
        node: &Arc<Node>,
        key: FutexKey,
        refs: &dyn FrameRefs,
        check: impl FnOnce() -> Check,
    ) -> Check {
        let b = &self.buckets[Self::index(&key)];
        let mut q = b.queue.lock();
        b.waiters.fetch_add(1, Ordering::SeqCst);
        // Loom models SeqCst accesses as AcqRel (tokio-rs/loom#180), so it needs the
        // fence the C++ SC order (and the locked instruction) gives here.
        // Without it, a wake that changed the word and then found no waiter
        // counted (`maybe_waiters`) passes loom's wait check too: a lost
        // wake-up that only the model has (`loom_pi::robust_death_*`).
        #[cfg(loom)]
        fence(Ordering::SeqCst);
        let verdict = check();
        if let Check::Queue = verdict {
            debug_assert_eq!(node.key_frame(), key.frame(), "queue: the node is keyed elsewhere");
            if let Some(f) = key.frame() {
                refs.key_on(f);
            }
            node.set_state(WaitState::Waiting);
            q.push_back(node.clone());
        } else {
            b.waiters.fetch_sub(1, Ordering::SeqCst);
        }
        verdict
    }

    /// Whether anybody may be waiting in `key`'s bucket. The waker stored
    /// the new value before; the fence pairs with the waiter's count
    /// increment in `queue` (Linux's `futex_hb_waiters_pending`).
    pub(crate) fn maybe_waiters(&self, key: &FutexKey) -> bool {
        fence(Ordering::SeqCst);
        self.buckets[Self::index(key)].waiters.load(Ordering::SeqCst) > 0
    }

    /// Wake at most `limit` waiters of `key` whose bitset meets `bitset`.
    pub(crate) fn wake(&self, key: &FutexKey, limit: u32, bitset: u32) -> u32 {
        self.wake_later(key, limit, bitset).notify()
    }

    /// `wake`, but the woken threads are told only when the returned
    /// [`Woken`] is notified or dropped: a caller holding an outer lock
    /// (a vcache bucket) tells them after releasing it, so that they do not
    /// wake up only to block on it.
    pub(crate) fn wake_later(&self, key: &FutexKey, limit: u32, bitset: u32) -> Woken {
        let mut woken = Few::default();
        if self.maybe_waiters(key) {
            self.take_locked(key, limit, bitset, &mut woken, |_, _| false);
        }
        Woken(woken)
    }

    /// `wake_later` for a caller that expects a waiter: without the look at
    /// the bucket's waiter count first (a fence and a load; the bucket lock
    /// orders us with the waiter's check as well). `release` is called for
    /// each waiter taken (its `inner` locked, under the bucket lock): if it
    /// returns true, it has detached the waiter's vcache entries and dropped
    /// its key's frame reference (uncounted first), and the waiter's
    /// `leave` skips both.
    pub(crate) fn wake_expected(
        &self,
        key: &FutexKey,
        limit: u32,
        bitset: u32,
        release: impl FnMut(&Arc<Node>, &mut NodeInner) -> bool,
    ) -> Woken {
        let mut woken = Few::default();
        self.take_locked(key, limit, bitset, &mut woken, release);
        Woken(woken)
    }

    fn take_locked(
        &self,
        key: &FutexKey,
        limit: u32,
        bitset: u32,
        woken: &mut Few<(Notify, Arc<Node>)>,
        release: impl FnMut(&Arc<Node>, &mut NodeInner) -> bool,
    ) {
        let b = &self.buckets[Self::index(key)];
        let mut q = b.queue.lock();
        take_matching(&mut q, key, bitset, limit, woken, release);
        b.waiters.fetch_sub(woken.len(), Ordering::SeqCst);
    }

    /// FUTEX_UNLOCK_PI: with `key`'s bucket locked, `hand` is given the TID
    /// of the first PI waiter queued under `key` (FIFO), if any, and
    /// updates the word (the unlocker's checks). If it succeeds and there
    /// is such a waiter, the waiter is taken off as the new owner
    /// (`Woken`); the returned [`Woken`] tells it.
    pub(crate) fn unlock_pi<E>(
        &self,
        key: &FutexKey,
        hand: impl FnOnce(Option<u32>) -> Result<(), E>,
    ) -> Result<Woken, E> {
        let b = &self.buckets[Self::index(key)];
        let mut q = b.queue.lock();
        let top = q.iter().position(|n| {
            let inner = n.inner.lock();
            inner.key == *key && inner.pi_tid != 0 && inner.pi_target.is_none()
        });
        let tid = top.map(|i| q[i].inner.lock().pi_tid);
        hand(tid)?;
        let mut woken = Few::default();
        if let Some(node) = top.and_then(|i| q.remove(i)) {
            let notify = {
                let mut inner = node.inner.lock();
                node.set_state(WaitState::Woken);
                std::mem::take(&mut inner.notify)
            };
            b.waiters.fetch_sub(1, Ordering::SeqCst);
            woken.push((notify, node));
        }
        Ok(Woken(woken))
    }

    /// Lock `k1`'s and `k2`'s buckets, run `op` (which may veto with an
    /// error), then wake up to `n1` waiters of `k1` and, if `op` said so,
    /// up to `n2` of `k2` (FUTEX_WAKE_OP).
    pub(crate) fn wake_op<E>(
        &self,
        k1: &FutexKey,
        n1: u32,
        k2: &FutexKey,
        n2: u32,
        op: impl FnOnce() -> Result<bool, E>,
    ) -> Result<u32, E> {
        let (i1, i2) = (Self::index(k1), Self::index(k2));
        let mut woken = Few::default();
        {
            let mut pair = self.lock_pair(i1, i2);
            let wake2 = op()?;
            take_matching(pair.get(i1), k1, u32::MAX, n1, &mut woken, |_, _| false);
            let first = woken.len();
            self.buckets[i1].waiters.fetch_sub(first, Ordering::SeqCst);
            if wake2 {
                take_matching(pair.get(i2), k2, u32::MAX, n2, &mut woken, |_, _| false);
                self.buckets[i2].waiters.fetch_sub(woken.len() - first, Ordering::SeqCst);
            }
        }
        Ok(finish_wakes(woken))
    }

    /// FUTEX_(CMP_)REQUEUE: with both buckets locked and `check` passed,
    /// wake up to `n_wake` waiters of `k1`, then move up to `n_requeue` of
    /// the rest to `k2`, calling `moved` for each (under the locks) so the
    /// caller can retarget its vcache tracking. Frame references move with
    /// the key. Returns woken + requeued.
    #[allow(clippy::too_many_arguments)] // the futex call's own arguments, plus two hooks
    pub(crate) fn requeue<E>(
        &self,
        k1: &FutexKey,
        k2: &FutexKey,
        n_wake: u32,
        n_requeue: u32,
        refs: &dyn FrameRefs,
        check: impl FnOnce() -> Result<(), E>,
        mut moved: impl FnMut(&Arc<Node>, &mut NodeInner),
    ) -> Result<u32, E> {
        let (i1, i2) = (Self::index(k1), Self::index(k2));
        let mut woken = Few::default();
        let mut requeued = 0u32;
        {
            let mut pair = self.lock_pair(i1, i2);
            check()?;
            // Unlike FUTEX_WAKE's count, which wakes one even when 0,
            // Linux's futex_requeue wakes exactly `n_wake` (`++task_count
            // <= nr_wake`): a requeue without a wake only moves waiters.
            if n_wake > 0 {
                take_matching(pair.get(i1), k1, u32::MAX, n_wake, &mut woken, |_, _| false);
                self.buckets[i1].waiters.fetch_sub(woken.len(), Ordering::SeqCst);
            }
            if n_requeue > 0 && k1 != k2 {
                let src = pair.get(i1);
                let mut take = Vec::new();
                let mut i = 0;
                while i < src.len() && (take.len() as u32) < n_requeue {
                    let movable = {
                        let inner = src[i].inner.lock();
                        inner.key == *k1 && inner.pi_tid == 0
                    };
                    if movable {
                        if let Some(n) = src.remove(i) {
                            take.push(n);
                        }
                    } else {
                        i += 1;
                    }
                }
                for n in take {
                    self.move_to(&mut pair, i1, i2, n, k2, refs, &mut moved);
                    requeued += 1;
                }
            } else if n_requeue > 0 {
                // Requeue onto the same key: the waiters stay where they are,
                // but Linux counts them as requeued.
                let rest = pair.get(i1).iter().filter(|n| n.inner.lock().key == *k1).count() as u32;
                requeued = rest.min(n_requeue);
            }
        }
        Ok(finish_wakes(woken) + requeued)
    }

    /// Move `n`, already off bucket `i1`'s queue, to key `k2` (bucket
    /// `i2`), both locked in `pair`: the frame reference moves with the key.
    #[allow(clippy::too_many_arguments)]
    fn move_to(
        &self,
        pair: &mut Pair<'_>,
        i1: usize,
        i2: usize,
        n: Arc<Node>,
        k2: &FutexKey,
        refs: &dyn FrameRefs,
        moved: &mut impl FnMut(&Arc<Node>, &mut NodeInner),
    ) {
        {
            let mut inner = n.inner.lock();
            if let Some(f) = k2.frame() {
                refs.get(f);
                refs.key_on(f);
            }
            if let Some(f) = inner.key.frame() {
                refs.key_off(f);
                refs.put(f);
            }
            n.set_key(&mut inner, *k2);
            moved(&n, &mut inner);
        }
        self.buckets[i1].waiters.fetch_sub(1, Ordering::SeqCst);
        self.buckets[i2].waiters.fetch_add(1, Ordering::SeqCst);
        self.moves.fetch_add(1, Ordering::SeqCst);
        pair.get(i2).push_back(n);
    }

    /// FUTEX_CMP_REQUEUE_PI (Linux's `futex_requeue` with `requeue_pi`),
    /// with both buckets locked and `ops.check` passed: the first
    /// `1 + n_requeue` waiters of `k1` must all be `FUTEX_WAIT_REQUEUE_PI`
    /// waiters that named `k2` (`ops.invalid` otherwise, nothing changed).
    /// The first one gets the PI lock at once if it is free
    /// (`ops.acquire`, Linux's `futex_proxy_trylock_atomic`) and is woken
    /// owning it; the others (the first too, if the lock is owned) move to
    /// `k2` as PI waiters, which an unlock hands the lock to in turn. A
    /// waiter whose TID owns the lock is woken with `pi_deadlock` set.
    /// Returns how many waiters were woken or moved.
    pub(crate) fn requeue_pi<O: RequeuePiOps>(
        &self,
        k1: &FutexKey,
        k2: &FutexKey,
        n_requeue: u32,
        refs: &dyn FrameRefs,
        ops: &mut O,
    ) -> Result<u32, O::Err> {
        let (i1, i2) = (Self::index(k1), Self::index(k2));
        let mut woken = Few::default();
        let mut count = 0u32;
        {
            let mut pair = self.lock_pair(i1, i2);
            ops.check()?;
            let limit = (n_requeue as usize).saturating_add(1);
            let mut picked = Vec::new();
            for n in pair.get(i1).iter() {
                if picked.len() == limit {
                    break;
                }
                let inner = n.inner.lock();
                if inner.key != *k1 {
                    continue;
                }
                match &inner.pi_target {
                    Some(t) if ops.targets(t) => picked.push((n.clone(), inner.pi_tid)),
                    _ => return Err(ops.invalid()),
                }
            }
            let Some(&(_, top_tid)) = picked.first() else { return Ok(0) };
            let owner = match ops.acquire(top_tid)? {
                Some(owner) => owner,
                None => {
                    let (top, _) = picked.remove(0);
                    self.take_woken(&mut pair, i1, &top, false, &mut woken);
                    count += 1;
                    top_tid
                }
            };
            for (n, tid) in picked {
                if tid == owner {
                    self.take_woken(&mut pair, i1, &n, true, &mut woken);
                    count += 1;
                    continue;
                }
                let q = pair.get(i1);
                if let Some(n) = q.iter().position(|m| Arc::ptr_eq(m, &n)).and_then(|i| q.remove(i)) {
                    n.inner.lock().pi_target = None;
                    self.move_to(&mut pair, i1, i2, n, k2, refs, &mut |n, inner| ops.moved(n, inner));
                    count += 1;
                }
            }
        }
        finish_wakes(woken);
        Ok(count)
    }

    /// Take queued `n` off bucket `i`'s queue as `Woken` (`deadlock`: with
    /// `EDEADLK` for it), its notification into `out`.
    fn take_woken(
        &self,
        pair: &mut Pair<'_>,
        i: usize,
        n: &Arc<Node>,
        deadlock: bool,
        out: &mut Few<(Notify, Arc<Node>)>,
    ) {
        let q = pair.get(i);
        let Some(n) = q.iter().position(|m| Arc::ptr_eq(m, n)).and_then(|p| q.remove(p)) else { return };
        let notify = {
            let mut inner = n.inner.lock();
            inner.pi_deadlock = deadlock;
            n.set_state(WaitState::Woken);
            std::mem::take(&mut inner.notify)
        };
        self.buckets[i].waiters.fetch_sub(1, Ordering::SeqCst);
        out.push((notify, n));
    }

    /// Move a queued `node` from key `from` to key `to` (a vcache callback:
    /// the page it waits on has a new frame). `to`'s frame reference is
    /// handed over by the caller; `from`'s is dropped. If the node is no
    /// longer queued under `from`, nothing changes and `to`'s reference is
    /// dropped instead.
    pub(crate) fn rekey(&self, node: &Arc<Node>, from: &FutexKey, to: FutexKey, refs: &dyn FrameRefs) {
        let (i1, i2) = (Self::index(from), Self::index(&to));
        let mut pair = self.lock_pair(i1, i2);
        let mut inner = node.inner.lock();
        let queued = node.state() == WaitState::Waiting && inner.key == *from;
        let src = pair.get(i1);
        let pos = if queued { src.iter().position(|n| Arc::ptr_eq(n, node)) } else { None };
        let Some(pos) = pos else {
            drop(inner);
            if let Some(f) = to.frame() {
                refs.put(f);
            }
            return;
        };
        let n = src.remove(pos);
        if let Some(f) = to.frame() {
            refs.key_on(f);
        }
        node.set_key(&mut inner, to);
        drop(inner);
        if let Some(f) = from.frame() {
            refs.key_off(f);
            refs.put(f);
        }
        self.buckets[i1].waiters.fetch_sub(1, Ordering::SeqCst);
        self.buckets[i2].waiters.fetch_add(1, Ordering::SeqCst);
        self.moves.fetch_add(1, Ordering::SeqCst);
        if let Some(n) = n {
            pair.get(i2).push_back(n);
        }
    }

    /// Take every queued waiter that address space `owner` started off its
    /// queue, as `Exited` (the space is gone: nothing can wake them through
    /// it any more, and Linux's exit ends the threads that wait). Returns
    /// them, still to be released and told (`vcache::Client::release` for `Futexes`). Bucket by
    /// bucket, again whenever a waiter moved between buckets meanwhile (it
    /// may have moved behind the scan).
    pub(crate) fn end_owned(&self, owner: u64) -> Vec<(Notify, Arc<Node>)> {
        let mut ended = Vec::new();
        loop {
            let moves = self.moves.load(Ordering::SeqCst);
            for b in self.buckets.iter() {
                let mut q = b.queue.lock();
                let before = ended.len();
                q.retain(|node| {
                    if node.owner != owner || node.state() != WaitState::Waiting {
                        return true;
                    }
                    node.set_state(WaitState::Exited);
                    ended.push((std::mem::take(&mut node.inner.lock().notify), node.clone()));
                    false
                });
                b.waiters.fetch_sub(ended.len() - before, Ordering::SeqCst);
            }
            if self.moves.load(Ordering::SeqCst) == moves {
                return ended;
            }
        }
    }

    /// Take `node` off its queue, if it is still on one, giving it state
    /// `why`. Returns the state it ends in (`Woken` if a wake got there first).
    pub(crate) fn unqueue(&self, node: &Arc<Node>, why: WaitState) -> WaitState {
        // Woken, timed out, cancelled and exited are final (they are set under the
        // bucket lock and never left): no lock needed to see them.
        if let s @ (WaitState::Woken | WaitState::TimedOut | WaitState::Cancelled | WaitState::Exited) = node.state() {
            return s;
        }
        loop {
            let key = node.inner.lock().key;
            let b = &self.buckets[Self::index(&key)];
            let mut q = b.queue.lock();
            if node.inner.lock().key != key {
                continue; // requeued or rekeyed meanwhile: find it again
            }
            if node.state() != WaitState::Waiting {
                return node.state();
            }
            if let Some(pos) = q.iter().position(|n| Arc::ptr_eq(n, node)) {
                q.remove(pos);
                b.waiters.fetch_sub(1, Ordering::SeqCst);
            }
            node.set_state(why);
            let notify = std::mem::take(&mut node.inner.lock().notify);
            drop(q);
            notify.notify(node);
            return why;
        }
    }
}

/// The vcache callback for a waiter: `(mm, page)`'s translation changed;
/// move the waiter to the key of what the page maps now. Runs under the
/// vcache bucket lock, with `mm`'s `mmap_lock` held by the caller; `lookup`
/// returns frames referenced.
pub(crate) fn follow(
    table: &FutexTable,
    refs: &dyn FrameRefs,
    node: &Arc<Node>,
    mm: u64,
    page: u64,
    lookup: &dyn Fn(u64) -> Translation,
) {
    let (key, tracked) = {
        let inner = node.inner.lock();
        (inner.key, inner.tracked)
    };
    if node.state() != WaitState::Waiting || tracked != Some((mm, page)) {
        return;
    }
    let offset = match key {
        FutexKey::Frame { offset, .. } => offset,
        FutexKey::Private { addr, .. } => (addr & 0xfff) as u32,
        FutexKey::Shared { offset, .. } => (offset & 0xfff) as u32,
    };
    let addr = page + u64::from(offset);
    let new = match lookup(addr) {
        Translation::Frame(frame) => FutexKey::Frame { frame, offset },
        Translation::Zero => FutexKey::Private { mm, addr },
        // Only on the swap device: a waiter's reference keeps its frame in
        // the swap cache, so this waiter's frame is not this page's (the
        // audit says so); nothing to follow to.
        Translation::Swapped => return,
        // Unmapped or gone: stay on the frame waited on (still referenced),
        // reachable through its other mappings, and stop following the page
        // (a page mapped there later is a different page).
        Translation::None => {
            let mut inner = node.inner.lock();
            inner.left = inner.tracked.take();
            return;
        }
    };
    if new == key {
        if let Some(f) = new.frame() {
            refs.put(f);
        }
        return;
    }
    table.rekey(node, &key, new, refs);
}

/// The vcache's `moved` for one entry of `node`, `(mm, old)` now
/// `(mm, new)` (mremap; both vcache buckets held): the waiter's own record
/// of its entries, and of the page it follows or left, says the new page,
/// so that its `leave` detaches the entry where it now is and later
/// callbacks (a COW of the moved page) move it. A key that names the
/// address (the zero frame's `(mm, address)`) moves with it. Returns
/// `false`, changing nothing, once the waiter is released: whoever
/// released it detaches the entry where its record said.
pub(crate) fn moved(table: &FutexTable, refs: &dyn FrameRefs, node: &Arc<Node>, mm: u64, old: u64, new: u64) -> bool {
    let key = {
        let mut inner = node.inner.lock();
        if node.released() {
            return false;
        }
        if let Some(e) = inner.entries.iter_mut().find(|e| (e.0, e.1) == (mm, old)) {
            e.1 = new;
        }
        let on = |t: &mut Option<(u64, u64)>| {
            if *t == Some((mm, old)) {
                *t = Some((mm, new));
            }
        };
        on(&mut inner.tracked);
        on(&mut inner.left);
        (inner.tracked == Some((mm, new))).then_some(inner.key)
    };
    if let Some(key @ FutexKey::Private { mm: kmm, addr }) = key {
        if kmm == mm && addr & !0xfff == old && node.state() == WaitState::Waiting {
            table.rekey(node, &key, FutexKey::Private { mm, addr: new + (addr & 0xfff) }, refs);
        }
    }
    true
}

/// A waker's half of the vcache protocol. With `(mm, page)`'s vcache
/// bucket locked, bring every waiter following that page to the key of
/// `now` (the translation the waker is about to use, its frame referenced
/// by the waker). A COW may have changed the page table and still be
/// waiting for this bucket to move the waiters: without this, a wake
/// through the new frame would miss them (found by the loom model).
pub(crate) fn settle(
    table: &FutexTable,
    refs: &dyn FrameRefs,
    bucket: &crate::vcache::Bucket<'_, Node>,
    mm: u64,
    page: u64,
    now: Translation,
) {
    bucket.each(mm, page, |node| {
        if let Translation::Frame(f) = now {
            // Already there (the common case): nothing to move, no reference
            // to take. The key cannot change meanwhile: a move of this
            // waiter needs this vcache bucket (`follow`) or takes it off
            // the page (`requeue` retargets `tracked` under the bucket of
            // the target page, and `follow` then ignores this entry).
            if node.key_frame() == Some(f) {
                return;
            }
        }
        follow(table, refs, node, mm, page, &|_| {
            if let Translation::Frame(f) = now {
                refs.get(f);
            }
            now
        })
    });
}

/// A wake's `release` (`FutexTable::wake_expected`) with
/// `(mm, page)`'s vcache bucket held (`users`: `mm`'s count of entries,
/// for an entry that names none): if the waiter's only vcache entry is
/// for that page, detach it and drop the key's frame reference. The waiter
/// is being taken off its queue (its state is not `Waiting` once the
/// bucket lock is dropped), so no callback will move it again; whatever
/// `follow` runs for this entry runs under this vcache bucket, before or
/// not at all.
pub(crate) fn release(
    vb: &mut crate::vcache::Bucket<'_, Node>,
    refs: &dyn FrameRefs,
    users: &AtomicUsize,
    mm: u64,
    page: u64,
    node: &Arc<Node>,
    inner: &mut NodeInner,
) -> bool {
    let detached = {
        let mut entries = inner.entries.iter();
        match (entries.next(), entries.next()) {
            (Some((emm, epage, own)), None) if (*emm, *epage) == (mm, page) => {
                vb.detach(own.as_deref().unwrap_or(users), mm, page, node)
            }
            _ => false,
        }
    };
    if !detached {
        return false;
    }
    inner.entries = Default::default();
    inner.tracked = None;
    if let Some(f) = inner.key.frame() {
        refs.key_off(f);
        refs.put(f);
    }
    true
}

/// Move up to `limit` waiters of `key` whose bitset meets `bitset` off `q`,
/// marked woken, their notifications into `out` (see `wake_expected`
/// for `release`). Linux's quirk kept: a limit of 0 wakes one.
fn take_matching(
    q: &mut VecDeque<Arc<Node>>,
    key: &FutexKey,
    bitset: u32,
    limit: u32,
    out: &mut Few<(Notify, Arc<Node>)>,
    mut release: impl FnMut(&Arc<Node>, &mut NodeInner) -> bool,
) {
    let limit = limit.max(1) as usize;
    let start = out.len();
    let mut i = 0;
    while i < q.len() && out.len() - start < limit {
        let node = &q[i];
        let mut inner = node.inner.lock();
        if inner.key != *key || inner.bitset & bitset == 0 {
            drop(inner);
            i += 1;
            continue;
        }
        if release(node, &mut inner) {
            node.released.store(true, Ordering::Relaxed); // published by the state's Release store
        }
        node.set_state(WaitState::Woken);
        let notify = std::mem::take(&mut inner.notify);
        drop(inner);
        // The queue's reference moves to the waker, which drops it right
        // after telling the waiter (a `Notify::Futex` sleeper is woken
        // through the node). The waiter keeps its node for its next wait
        // anyway (`waiter::recycle`), and takes it if nobody holds it then.
        if let Some(node) = q.remove(i) {
            out.push((notify, node));
        }
    }
}

/// Waiters taken off a queue, still to be told.
pub(crate) struct Woken(Few<(Notify, Arc<Node>)>);

impl Woken {
    /// Tell them now; returns how many were woken.
    pub(crate) fn notify(mut self) -> u32 {
        finish_wakes(std::mem::take(&mut self.0))
    }
}

impl Drop for Woken {
    fn drop(&mut self) {
        finish_wakes(std::mem::take(&mut self.0));
    }
}

/// Tell woken waiters, with no lock held.
fn finish_wakes(mut woken: Few<(Notify, Arc<Node>)>) -> u32 {
    let n = woken.len() as u32;
    for (notify, node) in woken.drain() {
        notify.notify(&node);
    }
    n
}
