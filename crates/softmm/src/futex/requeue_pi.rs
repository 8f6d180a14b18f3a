//! Requeue to a PI futex: `FUTEX_WAIT_REQUEUE_PI` and
//! `FUTEX_CMP_REQUEUE_PI` (Linux's `kernel/futex/requeue.c`).
//!
//! A condition variable built on a PI mutex: a thread waits on the
//! condition's word (not PI) naming the mutex's word it will need; a
//! broadcast wakes one waiter, handing it the mutex at once if it is free
//! (Linux's `futex_proxy_trylock_atomic`), and moves the others onto the
//! mutex's PI queue, where each unlock hands the mutex to the next. A
//! waiter returns owning the mutex, however it got it.
//!
//! The waiter is queued with bitset 0 and its TID (as a `FUTEX_LOCK_PI`
//! waiter), plus the PI futex it named (`NodeInner::pi_target`): a plain
//! wake or requeue never takes it (Linux answers `EINVAL` to those; see
//! docs/LINUX-DIFFERENCES.md), and an unlock of its first futex does not
//! take it. The requeue checks every waiter it would take before it changes
//! anything, so a refused requeue (`EINVAL`) leaves all queued.

use super::robust::{FUTEX_OWNER_DIED, FUTEX_TID_MASK, FUTEX_WAITERS};
use super::table::{Check, Node, NodeInner, PiTarget, RequeuePiOps};
use super::waiter::FutexCanceller;
use super::{
    bucket_of, check_addr, end_try, enqueue, load_word, physical, read_state, resolve, resolve::Intent, resolve_two,
    settle_two, waiter, BucketPair, Resolved,
};
use crate::error::{Error, Result};
use crate::mm::{MmInner, MmState};
use crate::sync::{Arc, Ordering};
use std::time::Instant;

impl crate::Mm {
    /// `FUTEX_WAIT_REQUEUE_PI` by thread `tid`: if the word at `addr`
    /// holds `val`, wait on it until a
    /// [`futex_cmp_requeue_pi`](Self::futex_cmp_requeue_pi) to the PI futex at `addr2` hands this
    /// thread that lock, directly or through an unlock after a requeue.
    /// `Ok` means the word at `addr2` now holds `tid` (check it for
    /// `FUTEX_OWNER_DIED`). `EAGAIN` if the word differs, `ETIMEDOUT` at
    /// `deadline` (an absolute time, as Linux's), `EINVAL` if `addr` and
    /// `addr2` are one futex or an address is unaligned, `EFAULT` if `addr`
    /// is not readable or `addr2` not writable, `EDEADLK` if the requeue
    /// found `tid` owning the lock already.
    pub fn futex_wait_requeue_pi(
        &self,
        addr: u64,
        val: u32,
        addr2: u64,
        deadline: Option<Instant>,
        tid: u32,
    ) -> Result<()> {
        wait_requeue_pi(&self.inner, addr, val, addr2, deadline, tid, None::<fn(FutexCanceller)>)
    }

    /// [`futex_wait_requeue_pi`](Self::futex_wait_requeue_pi) that another
    /// thread can end: once the waiter is queued, `on_queued` gets its
    /// canceller. A cancelled wait ends as Linux's interrupted one, unless
    /// the lock was handed to it first: on the condition's queue with
    /// `EINTR` (Linux restarts the call: ERESTARTNOINTR); requeued onto the
    /// PI futex's, with `EAGAIN` (Linux's EWOULDBLOCK: restarting would
    /// wait on the condition again). For hosts whose threads must leave a
    /// wait on a signal or an exit.
    #[allow(clippy::too_many_arguments)]
    pub fn futex_wait_requeue_pi_cancellable(
        &self,
        addr: u64,
        val: u32,
        addr2: u64,
        deadline: Option<Instant>,
        tid: u32,
        on_queued: impl FnOnce(FutexCanceller),
    ) -> Result<()> {
        wait_requeue_pi(&self.inner, addr, val, addr2, deadline, tid, Some(on_queued))
    }

    /// `FUTEX_CMP_REQUEUE_PI`: if the word at `addr` holds `val`, wake the
    /// first waiter of `addr` if it can take the PI lock at `addr2` now
    /// (which it then owns, with `FUTEX_WAITERS` set) and move up to
    /// `n_requeue` more waiters (the first one too, if the lock is owned)
    /// onto `addr2`'s PI queue. Returns how many were woken or moved.
    /// `n_wake` must be 1 (`EINVAL`, as Linux); `EINVAL` too if `addr` and
    /// `addr2` are one futex or a waiter it would take is not a
    /// [`futex_wait_requeue_pi`](Self::futex_wait_requeue_pi) waiter that
    /// named `addr2` (nothing is changed then); `EAGAIN` if the word
    /// differs; `EDEADLK` if the first waiter owns the lock; `EFAULT` if
    /// `addr2` is not writable.
    pub fn futex_cmp_requeue_pi(&self, addr: u64, n_wake: u32, n_requeue: u32, addr2: u64, val: u32) -> Result<u32> {
        cmp_requeue_pi(&self.inner, addr, n_wake, n_requeue, addr2, val)
    }
}

fn wait_requeue_pi(
    mm: &std::sync::Arc<MmInner>,
    addr: u64,
    val: u32,
    addr2: u64,
    deadline: Option<Instant>,
    tid: u32,
    on_queued: Option<impl FnOnce(FutexCanceller)>,
) -> Result<()> {
    check_addr(addr)?;
    check_addr(addr2)?;
    super::pi::check_tid(tid)?;
    if addr == addr2 {
        return Err(Error::Invalid("FUTEX_WAIT_REQUEUE_PI to the futex waited on"));
    }
    let st = read_state(mm, addr)?;
    // The PI futex must be writable (Linux's key for FUTEX_WRITE).
    let r2 = resolve(mm, &st, addr2, Intent::Modify)?;
    let target = PiTarget { key: r2.key, mm: mm.id, addr: addr2 };
    r2.release_frame(mm);
    let first = resolve(mm, &st, addr, Intent::Wait)?;
    if first.key == target.key {
        first.release_frame(mm);
        return Err(Error::Invalid("FUTEX_WAIT_REQUEUE_PI to the futex waited on"));
    }
    if load_word(mm, first.frame, addr) != val && resolve::still_maps(mm, &st, addr, first.frame, false) {
        first.release_frame(mm);
        return Err(Error::Again);
    }
    let track = physical(mm).then_some((mm.id, addr & !0xfff, None));
    let node = waiter::new_node(first.key, 0, waiter::blocking_notify(), track, mm.id);
    {
        let mut inner = node.inner.lock();
        inner.pi_tid = tid;
        inner.pi_target = Some(target);
    }
    let check = |r: &Resolved| {
        if !resolve::still_maps(mm, &st, addr, r.frame, false) {
            Check::Retry
        } else if load_word(mm, r.frame, addr) == val {
            Check::Queue
        } else {
            Check::Again
        }
    };
    let queued = enqueue(mm, &st, &node, first, addr, Intent::Wait, check);
    drop(st);
    if queued.is_ok() {
        if let Some(f) = on_queued {
            f(FutexCanceller::new(mm.clone(), node.clone()));
        }
        waiter::park(mm, &node, deadline);
    }
    let left = waiter::leave(mm, &node);
    // Read once it is off every queue: a requeue clears the target under
    // the bucket locks a cancel takes too, so this says where it was.
    let (deadlock, requeued) = {
        let inner = node.inner.lock();
        (inner.pi_deadlock, inner.pi_target.is_none())
    };
    waiter::recycle(node);
    queued?;
    match left {
        Ok(()) if deadlock => Err(Error::Deadlock),
        // Linux's interrupted requeued waiter: EWOULDBLOCK, as a restart
        // would answer once the condition's word changed (waiting on the
        // condition again could wait for ever).
        Err(Error::Interrupted) if requeued => Err(Error::Again),
        end => end,
    }
}

fn cmp_requeue_pi(mm: &MmInner, addr: u64, n_wake: u32, n_requeue: u32, addr2: u64, val: u32) -> Result<u32> {
    check_addr(addr)?;
    check_addr(addr2)?;
    if n_wake != 1 {
        return Err(Error::Invalid("FUTEX_CMP_REQUEUE_PI wakes exactly one waiter"));
    }
    if addr == addr2 {
        return Err(Error::Invalid("FUTEX_CMP_REQUEUE_PI to the futex it requeues from"));
    }
    let st = read_state(mm, addr)?;
    let fx = &mm.machine.futexes;
    loop {
        let (r1, r2) = resolve_two(mm, &st, addr, addr2, Intent::Modify)?;
        if r1.key == r2.key {
            let _ = end_try(mm, (r1, r2), Ok(0));
            return Err(Error::Invalid("FUTEX_CMP_REQUEUE_PI to the futex it requeues from"));
        }
        let (page1, page2) = (addr & !0xfff, addr2 & !0xfff);
        let mut vbs = physical(mm).then(|| fx.vcache.lock_two(mm.id, page1, page2));
        if let Some(vbs) = &vbs {
            settle_two(mm, &st, vbs, addr, addr2);
        }
        let mut ops = Ops { mm, st: &st, addr, addr2, r1: &r1, r2: &r2, val, vbs: vbs.as_mut() };
        let result = fx.table.requeue_pi(&r1.key, &r2.key, n_requeue, mm.arena(), &mut ops);
        drop(vbs);
        if let Some(done) = end_try(mm, (r1, r2), result) {
            return done;
        }
    }
}

/// The requeuer's checks and the PI word's update, under both bucket locks.
struct Ops<'a, 'b> {
    mm: &'a MmInner,
    st: &'a MmState,
    addr: u64,
    addr2: u64,
    r1: &'a Resolved,
    r2: &'a Resolved,
    val: u32,
    vbs: Option<&'a mut BucketPair<'b>>,
}

impl RequeuePiOps for Ops<'_, '_> {
    /// `None`: the pages moved, try again.
    type Err = Option<Error>;

    fn check(&mut self) -> std::result::Result<(), Option<Error>> {
        let (mm, st) = (self.mm, self.st);
        if !resolve::still_maps(mm, st, self.addr, self.r1.frame, false)
            || !resolve::still_maps(mm, st, self.addr2, self.r2.frame, true)
        {
            return Err(None);
        }
        if load_word(mm, self.r1.frame, self.addr) != self.val {
            return Err(Some(Error::Again));
        }
        Ok(())
    }

    fn targets(&self, t: &PiTarget) -> bool {
        t.key == self.r2.key || (t.mm, t.addr) == (self.mm.id, self.addr2)
    }

    fn invalid(&self) -> Option<Error> {
        Some(Error::Invalid("a waiter to requeue did not wait with FUTEX_WAIT_REQUEUE_PI for this PI futex"))
    }

    /// Linux's `futex_lock_pi_atomic` with `set_waiters`: the requeuer may
    /// queue more waiters behind the new owner, so `FUTEX_WAITERS` is set.
    fn acquire(&mut self, tid: u32) -> std::result::Result<Option<u32>, Option<Error>> {
        let w = self.mm.arena().word32(self.r2.frame, (self.addr2 & 0xfff) as usize);
        let mut uval = w.load(Ordering::SeqCst);
        loop {
            let owner = uval & FUTEX_TID_MASK;
            if owner == tid {
                return Err(Some(Error::Deadlock));
            }
            let new = if owner == 0 { (uval & FUTEX_OWNER_DIED) | tid | FUTEX_WAITERS } else { uval | FUTEX_WAITERS };
            match w.compare_exchange(uval, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok((owner != 0).then_some(owner)),
                Err(now) => uval = now,
            }
        }
    }

    fn moved(&mut self, node: &Arc<Node>, inner: &mut NodeInner) {
        // Physical keys follow the PI futex's page from now on.
        let Some(vbs) = self.vbs.as_deref_mut() else { return };
        let (mm, page2) = (self.mm, self.addr2 & !0xfff);
        bucket_of(vbs, mm.id, page2).attach(&mm.vcache_users, mm.id, page2, node.clone());
        inner.entries.push((mm.id, page2, Some(mm.vcache_users.clone())));
        inner.tracked = Some((mm.id, page2));
        inner.left = None;
    }
}
