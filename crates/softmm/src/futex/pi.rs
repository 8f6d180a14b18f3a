//! Priority-inheritance futexes: `FUTEX_LOCK_PI`, `FUTEX_LOCK_PI2`,
//! `FUTEX_TRYLOCK_PI`, `FUTEX_UNLOCK_PI`.
//!
//! The word is the lock: 0 when free, else the owner's TID, with
//! `FUTEX_WAITERS` when someone waits in the kernel and `FUTEX_OWNER_DIED`
//! after its owner died holding it. User space takes a free lock and
//! releases an uncontended one by compare-and-swap alone; the calls here are
//! its slow paths, and every change of the word they make happens under the
//! futex's bucket lock, as Linux's does under `hb->lock`:
//!
//! - **lock**: a free word (TID 0) is taken at once (`FUTEX_OWNER_DIED`
//!   kept: the new owner must learn of it); an owned one gets
//!   `FUTEX_WAITERS` and the caller queues behind the other waiters. Its own
//!   TID is `EDEADLK`.
//! - **unlock**: only the owner may (`EPERM`). With a waiter queued, the
//!   lock is handed over: the word becomes `FUTEX_WAITERS | its TID` and it
//!   wakes owning the lock, as Linux's `wake_futex_pi` does; with none, the
//!   word becomes 0.
//!
//! A PI waiter is queued with bitset 0, which no plain wake matches: only an
//! unlock hands it the lock. The word's page is written, so each call
//! resolves it for writing (breaking COW as Linux's `fault_in_user_writeable`
//! does); with physical keys the waiters follow their page as every waiter
//! does.
//!
//! What is not modelled: priorities (softmm cannot change host threads'
//! priorities, so waiters are served first come, first served, as Linux
//! serves waiters of equal priority), and whether an owner TID belongs to a
//! live thread (softmm does not know the host's threads: a lock owned by a
//! TID that no thread has waits, where Linux answers `ESRCH`). An owner's
//! death is seen through its robust list (`robust.rs`), which hands a PI
//! lock it held to its first waiter with `FUTEX_OWNER_DIED`.

use super::robust::{FUTEX_OWNER_DIED, FUTEX_TID_MASK, FUTEX_WAITERS};
use super::table::Check;
use super::{check_addr, enqueue, physical, read_state, resolve, resolve::Intent, settled, waiter, Resolved};
use crate::error::{Error, Result};
use crate::mm::{MmInner, MmState};
use crate::sync::Ordering;
use std::time::Instant;

impl crate::Mm {
    /// `FUTEX_LOCK_PI` (and `FUTEX_LOCK_PI2`) by thread `tid`: take the
    /// lock at `addr`, waiting behind the other waiters until an unlock
    /// hands it over or `deadline` passes (`ETIMEDOUT`). `Ok` means the
    /// word now holds `tid`; check it for `FUTEX_OWNER_DIED`.
    pub fn futex_lock_pi(&self, addr: u64, tid: u32, deadline: Option<Instant>) -> Result<()> {
        lock_pi(&self.inner, addr, tid, deadline, false)
    }

    /// `FUTEX_TRYLOCK_PI` by thread `tid`: take the lock if it is free,
    /// else `EAGAIN` (`EWOULDBLOCK`); never waits.
    pub fn futex_trylock_pi(&self, addr: u64, tid: u32) -> Result<()> {
        lock_pi(&self.inner, addr, tid, None, true)
    }

    /// `FUTEX_UNLOCK_PI` by thread `tid`, which must own the lock
    /// (`EPERM`): hand it to the first waiter, or free it.
    pub fn futex_unlock_pi(&self, addr: u64, tid: u32) -> Result<()> {
        unlock_pi(&self.inner, addr, tid).map(|_| ())
    }
}

pub(super) fn check_tid(tid: u32) -> Result<()> {
    if tid == 0 || tid > FUTEX_TID_MASK {
        return Err(Error::Invalid("thread id is 0 or wider than FUTEX_TID_MASK"));
    }
    Ok(())
}

/// The word at `addr` in `frame` (resolved writable).
fn word(mm: &MmInner, frame: crate::phys::FrameId, addr: u64) -> &std::sync::atomic::AtomicU32 {
    mm.arena().word32(frame, (addr & 0xfff) as usize)
}

/// What the lock's check under the bucket lock decided, besides queueing.
enum Taken {
    /// The word was free and now holds the caller's TID.
    Acquired,
    /// The caller owns it already (`EDEADLK`) or, trying, it is owned.
    Refused(Error),
}

fn lock_pi(mm: &MmInner, addr: u64, tid: u32, deadline: Option<Instant>, try_only: bool) -> Result<()> {
    check_addr(addr)?;
    check_tid(tid)?;
    let st = read_state(mm, addr)?;
    let first = resolve(mm, &st, addr, Intent::Modify)?;
    let notify = waiter::blocking_notify();
    let track = physical(mm).then_some((mm.id, addr & !0xfff, None));
    let node = waiter::new_node(first.key, 0, notify, track, mm.id);
    node.inner.lock().pi_tid = tid;
    let mut taken = None;
    let check = |r: &Resolved| lock_check(mm, &st, addr, r, tid, try_only, &mut taken);
    let queued = enqueue(mm, &st, &node, first, addr, Intent::Modify, check);
    drop(st);
    let end = match (queued, taken) {
        (Ok(()), _) => {
            waiter::park(mm, &node, deadline);
            // Woken means handed the lock: the unlocker wrote our TID.
            waiter::leave(mm, &node)
        }
        (Err(_), Some(Taken::Acquired)) => {
            let _ = waiter::leave(mm, &node);
            Ok(())
        }
        (Err(_), Some(Taken::Refused(e))) | (Err(e), None) => {
            let _ = waiter::leave(mm, &node);
            Err(e)
        }
    };
    waiter::recycle(node);
    end
}

/// Linux's `futex_lock_pi_atomic`, under the bucket lock: take a free word,
/// or mark an owned one `FUTEX_WAITERS` and queue.
fn lock_check(
    mm: &MmInner,
    st: &MmState,
    addr: u64,
    r: &Resolved,
    tid: u32,
    try_only: bool,
    taken: &mut Option<Taken>,
) -> Check {
    if !resolve::still_maps(mm, st, addr, r.frame, true) {
        return Check::Retry;
    }
    let w = word(mm, r.frame, addr);
    let mut uval = w.load(Ordering::SeqCst);
    loop {
        let owner = uval & FUTEX_TID_MASK;
        let (new, outcome) = if owner == tid {
            *taken = Some(Taken::Refused(Error::Deadlock));
            return Check::Again;
        } else if owner == 0 {
            ((uval & (FUTEX_OWNER_DIED | FUTEX_WAITERS)) | tid, Some(Taken::Acquired))
        } else if try_only {
            *taken = Some(Taken::Refused(Error::Again));
            return Check::Again;
        } else {
            (uval | FUTEX_WAITERS, None)
        };
        match w.compare_exchange(uval, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) if outcome.is_some() => {
                *taken = outcome;
                return Check::Again;
            }
            Ok(_) => return Check::Queue,
            Err(now) => uval = now,
        }
    }
}

/// Linux's `futex_unlock_pi`: hand the lock at `addr`, owned by `tid`, to
/// its first waiter (`FUTEX_WAITERS | waiter`, the owner-died bit dropped)
/// or free it. Returns whether a waiter took the lock.
pub(super) fn unlock_pi(mm: &MmInner, addr: u64, tid: u32) -> Result<bool> {
    hand_over(mm, addr, tid, false)
}

/// The robust-list walk's handing over of a PI lock whose owner `tid`
/// died: the next owner gets `FUTEX_OWNER_DIED` too; with no waiter the
/// word loses the TID and keeps its other bits plus `FUTEX_OWNER_DIED`.
pub(super) fn owner_died(mm: &MmInner, addr: u64, tid: u32) -> Result<bool> {
    hand_over(mm, addr, tid, true)
}

fn hand_over(mm: &MmInner, addr: u64, tid: u32, died: bool) -> Result<bool> {
    check_addr(addr)?;
    check_tid(tid)?;
    let st = read_state(mm, addr)?;
    let fx = &mm.machine.futexes;
    let page = addr & !0xfff;
    loop {
        // Writable first (an unlock writes the word; this may break COW).
        let mut r = resolve(mm, &st, addr, Intent::Modify)?;
        // Physical keys: a COW by another thread may not have moved its
        // waiters yet. Look with the page's vcache bucket held, settling
        // pending moves, as a wake does.
        let vb = (physical(mm) && mm.vcache_users.load(Ordering::SeqCst) != 0).then(|| fx.vcache.lock(mm.id, page));
        if let Some(vb) = &vb {
            r.release_frame(mm);
            r = settled(mm, &st, vb, addr)?;
        }
        let result = fx.table.unlock_pi(&r.key, |top| {
            if !resolve::still_maps(mm, &st, addr, r.frame, true) {
                return Err(None);
            }
            let w = word(mm, r.frame, addr);
            let mut uval = w.load(Ordering::SeqCst);
            loop {
                if uval & FUTEX_TID_MASK != tid {
                    return Err(Some(Error::NotOwner));
                }
                let new = match (top, died) {
                    (Some(next), false) => FUTEX_WAITERS | next,
                    (Some(next), true) => FUTEX_WAITERS | next | FUTEX_OWNER_DIED,
                    (None, false) => 0,
                    // Linux's `handle_futex_death`: the TID goes, the rest stays.
                    (None, true) => (uval & FUTEX_WAITERS) | FUTEX_OWNER_DIED,
                };
                match w.compare_exchange(uval, new, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => return Ok(()),
                    Err(now) => uval = now,
                }
            }
        });
        drop(vb);
        r.release_frame(mm);
        match result {
            Ok(woken) => return Ok(woken.notify() > 0),
            Err(None) => continue, // the page moved: resolve it again
            Err(Some(e)) => return Err(e),
        }
    }
}
