//! A queued futex waiter: block on it, await it, poll it, or cancel it.

use super::table::{FrameRefs, FutexTable, Node, Notify, Tracking, WaitState};
use super::Timeout;
use crate::error::{Error, Result};
use crate::mm::MmInner;
use crate::sync::{Arc, AtomicUsize};
use crate::vcache::Vcache;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[cfg(not(loom))]
thread_local! {
    /// The node of this thread's last finished waiter, if nothing else
    /// held it: the next wait reuses it instead of allocating.
    static SPARE: std::cell::Cell<Option<Arc<Node>>> = const { std::cell::Cell::new(None) };
}

/// A fresh node for a waiter (`Node::with`): this thread's spare if nobody
/// else holds it (no queue, vcache entry or canceller: `Arc::get_mut` says
/// so), else a new one.
pub(super) fn new_node(
    key: super::FutexKey,
    bitset: u32,
    notify: Notify,
    track: Option<Tracking>,
    owner: u64,
) -> Arc<Node> {
    #[cfg(not(loom))]
    if let Some(mut spare) = SPARE.try_with(|s| s.take()).ok().flatten() {
        if let Some(node) = Arc::get_mut(&mut spare) {
            *node = Node::with(key, bitset, notify, track, owner);
            return spare;
        }
    }
    Arc::new(Node::with(key, bitset, notify, track, owner))
}

/// Keep `node` as this thread's spare. A waker may still hold it for a
/// moment (it drops its reference right after telling us): `new_node`
/// takes the spare only if nobody else holds it by then.
pub(super) fn recycle(node: Arc<Node>) {
    #[cfg(not(loom))]
    if Arc::strong_count(&node) <= 2 {
        let _ = SPARE.try_with(|s| s.set(Some(node)));
    }
    #[cfg(loom)]
    drop(node);
}

/// How a blocking wait is told (the node's `Notify`): it sleeps in futex(2)
/// on the node's state word; under loom and Miri, which have no futex(2),
/// through the thread's parker.
pub(super) fn blocking_notify() -> Notify {
    #[cfg(not(any(loom, miri)))]
    return Notify::Futex;
    #[cfg(any(loom, miri))]
    return Notify::Thread(std::thread::current());
}

/// Park the calling thread (which `node` notifies) until `node` is no
/// longer `Waiting`; at `deadline`, take it off its queue as timed out.
pub(super) fn park(mm: &MmInner, node: &Arc<Node>, deadline: Option<std::time::Instant>) {
    #[cfg(not(any(loom, miri)))]
    yield_while_waiting(node, mm.machine.config.futex_spin, deadline);
    while node.state() == WaitState::Waiting {
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let now = std::time::Instant::now();
                if now >= d {
                    mm.machine.futexes.table.unqueue(node, WaitState::TimedOut);
                    break;
                }
                Some(d - now)
            }
        };
        sleep(node, timeout);
    }
}

/// Before sleeping in the kernel: yield the CPU while the node is still
/// `Waiting`, for at most `spin` (and never past `deadline`). A wake that
/// comes meanwhile needs no system call on either side (`Config::futex_spin`).
#[cfg(not(any(loom, miri)))]
fn yield_while_waiting(node: &Node, spin: std::time::Duration, deadline: Option<std::time::Instant>) {
    if spin.is_zero() || node.state() != WaitState::Waiting {
        return;
    }
    // A window too long to add to the clock (`Duration::MAX`) is "until
    // woken", bounded by the deadline like any other.
    let window_end = std::time::Instant::now().checked_add(spin).unwrap_or_else(super::far_future);
    let end = deadline.map_or(window_end, |d| window_end.min(d));
    while node.state() == WaitState::Waiting && std::time::Instant::now() < end {
        std::thread::yield_now();
    }
}

/// Sleep until the node's state may have left `Waiting`, `timeout` passes,
/// or for no reason (callers loop).
#[cfg(not(any(loom, miri)))]
fn sleep(node: &Node, timeout: Option<std::time::Duration>) {
    use rustix::thread::futex;
    // Tell wakers to make the system call (`Node::wake_sleeper`), then
    // fence: the kernel's look at the state below comes after it.
    node.sleeping.store(true, std::sync::atomic::Ordering::Relaxed);
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    let ts = timeout.map(|t| futex::Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    // Returns at once (EAGAIN) if the state is no longer `Waiting`: the
    // kernel compares it under its own lock, so a wake between our look
    // and the sleep is not lost.
    let _ = futex::wait(&node.state, futex::Flags::PRIVATE, WaitState::Waiting as u32, ts.as_ref());
}

#[cfg(any(loom, miri))]
fn sleep(_node: &Node, timeout: Option<std::time::Duration>) {
    match timeout {
        None => std::thread::park(),
        Some(t) => std::thread::park_timeout(t),
    }
}

/// Leave, for a waiter started in `mm`: off the queue, vcache entries
/// detached, frame reference dropped. Returns the outcome.
pub(super) fn leave(mm: &MmInner, node: &Arc<Node>) -> Result<()> {
    let fx = &mm.machine.futexes;
    match leave_from(&fx.table, &fx.vcache, &mm.vcache_users, mm.arena(), node) {
        WaitState::Woken => Ok(()),
        WaitState::TimedOut => Err(Error::TimedOut),
        WaitState::Exited => Err(Error::Exited),
        _ => Err(Error::Interrupted),
    }
}

/// `leave` on just the state it touches (the futex table, the vcache, the
/// waiting space's vcache entry count and the frames' counts), so that the
/// loom models run this very code. Returns how the wait ended.
pub(super) fn leave_from(
    table: &FutexTable,
    vcache: &Vcache<Node>,
    users: &AtomicUsize,
    frames: &impl FrameRefs,
    node: &Arc<Node>,
) -> WaitState {
    let end = table.unqueue(node, WaitState::Cancelled);
    if end == WaitState::Woken && node.released() {
        return end; // the wake detached us and dropped the key's reference
    }
    release_from(vcache, users, frames, node, end != WaitState::Idle);
    end
}

/// Detach `node`'s vcache entries and drop its key's frame reference
/// (`keyed`: the key holds one; a node never queued holds none), unless
/// that was done already (`Node::released`). The node is off its queue.
/// `users`: the count of the space that started the wait (its entries
/// name no count of their own).
pub(super) fn release_from(
    vcache: &Vcache<Node>,
    users: &AtomicUsize,
    frames: &impl FrameRefs,
    node: &Arc<Node>,
    keyed: bool,
) {
    let (entries, frame) = {
        let mut inner = node.inner.lock();
        if node.released() {
            return;
        }
        node.released.store(true, crate::sync::Ordering::Relaxed);
        let frame = if keyed { inner.key.frame() } else { None };
        (std::mem::take(&mut inner.entries), frame)
    };
    for (emm, page, own) in entries.iter() {
        vcache.detach(own.as_deref().unwrap_or(users), *emm, *page, node);
    }
    if let Some(f) = frame {
        frames.key_off(f);
        frames.put(f);
    }
}

/// A waiter queued by [`Mm::futex_wait_start`](crate::Mm::futex_wait_start).
///
/// It stays queued until woken, cancelled, timed out, or dropped (dropping
/// a waiter that is still queued takes it off the queue). Use
/// [`wait`](Self::wait) to block the thread, `.await` it in an async task,
/// or [`state`](Self::state) to look without blocking.
pub struct FutexWaiter {
    mm: std::sync::Arc<MmInner>,
    node: Arc<Node>,
    finished: bool,
}

/// Cancels a waiter from another thread; its wait ends with `EINTR`
/// (unless a wake got there first).
#[derive(Clone)]
pub struct FutexCanceller {
    mm: std::sync::Arc<MmInner>,
    node: Arc<Node>,
}

impl FutexCanceller {
    pub(super) fn new(mm: std::sync::Arc<MmInner>, node: Arc<Node>) -> FutexCanceller {
        FutexCanceller { mm, node }
    }

    /// Take the waiter off its queue; returns the state it ends in.
    pub fn cancel(&self) -> WaitState {
        self.mm.machine.futexes.table.unqueue(&self.node, WaitState::Cancelled)
    }
}

impl FutexWaiter {
    pub(super) fn new(mm: std::sync::Arc<MmInner>, node: Arc<Node>) -> FutexWaiter {
        FutexWaiter { mm, node, finished: false }
    }

    /// Where the waiter is now.
    pub fn state(&self) -> WaitState {
        self.node.state()
    }

    /// The key it is queued under now (it changes when COW moves its page).
    /// Once the wait has ended (woken, timed out, cancelled) it is the key
    /// the waiter was last queued under: the waiter no longer holds that
    /// frame, which may since have been freed and reused, so the key then
    /// names the wait, not memory.
    pub fn key(&self) -> super::FutexKey {
        self.node.inner.lock().key
    }

    /// The queued node (tests that corrupt it on purpose).
    #[cfg(all(test, not(loom)))]
    pub(super) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// A handle that cancels this waiter from elsewhere.
    pub fn canceller(&self) -> FutexCanceller {
        FutexCanceller { mm: self.mm.clone(), node: self.node.clone() }
    }

    /// Cancel now (the wait, if any, ends with `EINTR`).
    pub fn cancel(&self) -> WaitState {
        self.canceller().cancel()
    }

    /// Block the calling thread until woken (`Ok`), the timeout passes
    /// (`ETIMEDOUT`), or the waiter is cancelled (`EINTR`).
    pub fn wait(mut self, timeout: Option<Timeout>) -> Result<()> {
        let deadline = timeout.map(Timeout::deadline);
        {
            let mut inner = self.node.inner.lock();
            if self.node.state() == WaitState::Waiting {
                inner.notify = blocking_notify();
            }
        }
        park(&self.mm, &self.node, deadline);
        self.finish()
    }

    /// Leave: off the queue, vcache entries detached, frame reference
    /// dropped. Returns the outcome.
    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Err(Error::Invalid("futex waiter already finished"));
        }
        self.finished = true;
        leave(&self.mm, &self.node)
    }
}

impl Future for FutexWaiter {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Err(Error::Invalid("futex waiter polled after completion")));
        }
        {
            let mut inner = this.node.inner.lock();
            if this.node.state() == WaitState::Waiting {
                inner.notify = Notify::Task(cx.waker().clone());
                return Poll::Pending;
            }
        }
        Poll::Ready(this.finish())
    }
}

impl Drop for FutexWaiter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.finish();
        }
        // Keep the node for this thread's next wait if this is its last
        // holder (a clone stays in the spare slot; ours is dropped next).
        #[cfg(not(loom))]
        if Arc::strong_count(&self.node) == 1 {
            let _ = SPARE.try_with(|s| s.set(Some(self.node.clone())));
        }
    }
}

impl std::fmt::Debug for FutexWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FutexWaiter").field("state", &self.state()).field("key", &self.key()).finish()
    }
}
