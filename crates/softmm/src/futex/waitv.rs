//! `futex_waitv(2)`: wait on up to 128 futexes at once; any one's wake
//! ends the wait.
//!
//! As Linux's `futex_wait_multiple`: the futexes are queued one by one, each
//! after its word is checked. If a word differs, the ones queued so far are
//! taken off again and the call answers `EAGAIN`, unless one of them was
//! woken meanwhile, whose index it answers instead. Once all are queued the
//! caller sleeps until a wake, its deadline, or a cancellation. Leaving, it
//! takes every waiter off and answers the *highest* index that was woken,
//! as Linux's `futex_unqueue_multiple` does.

use super::{FutexWaiter, WaitState, BITSET_MATCH_ANY};
use crate::error::{Error, Result};
use crate::Mm;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

/// One futex of a [`Mm::futex_waitv`] call (Linux's `struct futex_waitv`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FutexWaitv {
    /// The value the word must hold for the wait to begin.
    pub val: u64,
    /// The word's address (aligned to its size).
    pub uaddr: u64,
    /// `FUTEX2_SIZE_U32`, optionally with `FUTEX2_PRIVATE`.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// A 32-bit futex word (the only size Linux implements).
pub const FUTEX2_SIZE_U32: u32 = 0x02;
/// The size bits of `FutexWaitv::flags`.
pub const FUTEX2_SIZE_MASK: u32 = 0x03;
/// NUMA-aware futex (not modelled: `EINVAL`).
pub const FUTEX2_NUMA: u32 = 0x04;
/// Memory-policy node (not modelled: `EINVAL`).
pub const FUTEX2_MPOL: u32 = 0x08;
/// Private to the process (the key mode is the machine's either way).
pub const FUTEX2_PRIVATE: u32 = 128;
/// Futexes one call takes at most (`FUTEX_WAITV_MAX`).
pub const FUTEX_WAITV_MAX: usize = 128;

impl Mm {
    /// `futex_waitv(2)`: sleep until one of `waiters` is woken, and answer
    /// its index. `flags` must be 0; `deadline` is absolute, as Linux's
    /// timeout (`None`: no limit).
    ///
    /// Errors as Linux's: `EINVAL` for no futexes or more than
    /// [`FUTEX_WAITV_MAX`], nonzero `flags`, a waiter's unknown flags,
    /// nonzero `reserved`, a size other than 32 bits, a value wider than
    /// the word, or an unaligned address; `EFAULT` for a word that is not
    /// mapped readable; `EAGAIN` if a word does not hold its value;
    /// `ETIMEDOUT` at the deadline; `EINTR` if cancelled through
    /// [`FutexWaitvCanceller`]. NUMA placement (`FUTEX2_NUMA`,
    /// `FUTEX2_MPOL`) is not modelled and answers `EINVAL`.
    pub fn futex_waitv(&self, waiters: &[FutexWaitv], flags: u32, deadline: Option<Instant>) -> Result<usize> {
        self.futex_waitv_cancellable(waiters, flags, deadline, &FutexWaitvCanceller::default())
    }

    /// [`futex_waitv`](Self::futex_waitv) that `cancel` can end from
    /// another thread (`EINTR`, as a signal ends Linux's).
    pub fn futex_waitv_cancellable(
        &self,
        waiters: &[FutexWaitv],
        flags: u32,
        deadline: Option<Instant>,
        cancel: &FutexWaitvCanceller,
    ) -> Result<usize> {
        validate(waiters, flags)?;
        let mut queued: Vec<FutexWaiter> = Vec::with_capacity(waiters.len());
        for w in waiters {
            match self.futex_wait_start(w.uaddr, w.val as u32, BITSET_MATCH_ANY) {
                Ok(q) => queued.push(q),
                Err(e) => return unqueue_all(&queued, &[]).ok_or(e),
            }
        }
        let finished = sleep(&mut queued, deadline, cancel);
        let exited = finished.iter().flatten().any(|&s| s == WaitState::Exited)
            || queued.iter().any(|q| q.state() == WaitState::Exited);
        unqueue_all(&queued, &finished).ok_or_else(|| {
            if exited {
                Error::Exited
            } else if cancel.cancelled() {
                Error::Interrupted
            } else {
                Error::TimedOut
            }
        })
    }
}

/// Linux's checks of the call and of each `struct futex_waitv`.
fn validate(waiters: &[FutexWaitv], flags: u32) -> Result<()> {
    if flags != 0 {
        return Err(Error::Invalid("futex_waitv flags must be 0"));
    }
    if waiters.is_empty() || waiters.len() > FUTEX_WAITV_MAX {
        return Err(Error::Invalid("futex_waitv takes 1 to 128 futexes"));
    }
    for w in waiters {
        if w.flags & !(FUTEX2_SIZE_MASK | FUTEX2_NUMA | FUTEX2_MPOL | FUTEX2_PRIVATE) != 0 || w.reserved != 0 {
            return Err(Error::Invalid("futex_waitv: unknown waiter flags or nonzero reserved field"));
        }
        if w.flags & FUTEX2_SIZE_MASK != FUTEX2_SIZE_U32 {
            return Err(Error::Invalid("futex_waitv: only 32-bit futexes exist"));
        }
        if w.flags & (FUTEX2_NUMA | FUTEX2_MPOL) != 0 {
            return Err(Error::Invalid("futex_waitv: NUMA futexes are not modelled"));
        }
        if w.val > u64::from(u32::MAX) {
            return Err(Error::Invalid("futex_waitv: value wider than a 32-bit word"));
        }
    }
    Ok(())
}

/// Take every waiter off; the highest index that was woken, if any.
/// `finished[i]` is how a waiter that already left ended (its poll
/// completed).
fn unqueue_all(queued: &[FutexWaiter], finished: &[Option<WaitState>]) -> Option<usize> {
    let mut woken = None;
    for (i, q) in queued.iter().enumerate() {
        let was_woken = match finished.get(i).copied().flatten() {
            Some(s) => s == WaitState::Woken,
            None => q.cancel() == WaitState::Woken,
        };
        if was_woken {
            woken = Some(i);
        }
    }
    woken
}

/// Ends a [`Mm::futex_waitv_cancellable`] from another thread. One
/// canceller serves one call: once cancelled it stays so.
#[derive(Clone, Default)]
pub struct FutexWaitvCanceller {
    inner: Arc<Unparker>,
}

impl FutexWaitvCanceller {
    /// End the wait (`EINTR`, unless a wake came first).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake_by_ref();
    }

    fn cancelled(&self) -> bool {
        self.inner.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Wakes the sleeping caller: each waiter's wake, or a cancellation.
#[derive(Default)]
struct Unparker {
    thread: parking_lot::Mutex<Option<std::thread::Thread>>,
    cancelled: std::sync::atomic::AtomicBool,
}

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(t) = self.thread.lock().as_ref() {
            t.unpark();
        }
    }
}

/// Sleep until a waiter leaves its queue (woken, or ended by its space's
/// exit), the deadline, or a cancellation. Each waiter is polled as a
/// future whose waker unparks this thread; a waiter found no longer
/// waiting ends the sleep. Returns, per waiter, how one whose poll
/// completed ended (it has left the queue); the others stay queued for
/// `unqueue_all`.
fn sleep(
    queued: &mut [FutexWaiter],
    deadline: Option<Instant>,
    cancel: &FutexWaitvCanceller,
) -> Vec<Option<WaitState>> {
    let mut finished = vec![None; queued.len()];
    let unparker = &cancel.inner;
    *unparker.thread.lock() = Some(std::thread::current());
    let waker = Waker::from(unparker.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        // Register the waker with every waiter still queued (a waiter that
        // already left would finish if polled: look at its state instead).
        let mut done = cancel.cancelled();
        for (i, q) in queued.iter_mut().enumerate() {
            if q.state() != WaitState::Waiting {
                done = true;
                break;
            }
            if let Poll::Ready(r) = Pin::new(&mut *q).poll(&mut cx) {
                finished[i] = Some(match r {
                    Ok(()) => WaitState::Woken,
                    Err(Error::Exited) => WaitState::Exited,
                    Err(_) => WaitState::Cancelled,
                });
                done = true;
                break;
            }
        }
        if done {
            break;
        }
        match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    break;
                }
                std::thread::park_timeout(d - now);
            }
            None => std::thread::park(),
        }
    }
    *unparker.thread.lock() = None;
    finished
}
