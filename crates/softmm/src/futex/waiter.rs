//! A queued futex waiter: block on it, await it, poll it, or cancel it.

use super::table::{FrameRefs, Node, Notify, WaitState};
use super::Timeout;
use crate::error::{Error, Result};
use crate::mm::MmInner;
use crate::sync::Arc;
use crate::vcache::Bucket;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[cfg(not(loom))]
thread_local! {
    /// The node of this thread's last finished waiter, if nothing else
    /// held it: the next wait reuses it instead of allocating.
    static SPARE: std::cell::Cell<Option<Arc<Node>>> = const { std::cell::Cell::new(None) };
}

/// A fresh node for a waiter: this thread's spare if nobody else holds it
/// (no queue, vcache entry or canceller: `Arc::get_mut` says so), else a new one.
pub(super) fn new_node(key: super::FutexKey, bitset: u32) -> Arc<Node> {
    #[cfg(not(loom))]
    if let Some(mut spare) = SPARE.try_with(|s| s.take()).ok().flatten() {
        if let Some(node) = Arc::get_mut(&mut spare) {
            *node = Node::new(key, bitset);
            return spare;
        }
    }
    Arc::new(Node::new(key, bitset))
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
    /// Take the waiter off its queue; returns the state it ends in.
    pub fn cancel(&self) -> WaitState {
        self.mm.machine.futexes.table.unqueue(&self.node, WaitState::Cancelled)
    }
}

impl FutexWaiter {
    pub(super) fn new(mm: std::sync::Arc<MmInner>, node: Arc<Node>) -> FutexWaiter {
        FutexWaiter { mm, node, finished: false }
    }

    /// Publish the vcache entry for `(mm, page)` the first time; on a
    /// retry the entry is there already and only the fence is repeated.
    pub(super) fn attach_once(&self, vb: &mut Bucket<'_, Node>, mm: &MmInner, page: u64) {
        let mut inner = self.node.inner.lock();
        if !inner.entries.is_empty() {
            drop(inner);
            crate::sync::fence(crate::sync::Ordering::SeqCst);
            return;
        }
        inner.entries.push((mm.id, page, mm.vcache_users.clone()));
        inner.tracked = Some((mm.id, page));
        drop(inner);
        vb.attach(&mm.vcache_users, mm.id, page, self.node.clone());
    }

    /// Where the waiter is now.
    pub fn state(&self) -> WaitState {
        self.node.state()
    }

    /// The key it is queued under now (it changes when COW moves its page).
    pub fn key(&self) -> super::FutexKey {
        self.node.inner.lock().key
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
                inner.notify = Notify::Thread(std::thread::current());
            }
        }
        let table = &self.mm.machine.futexes.table;
        while self.node.state() == WaitState::Waiting {
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        table.unqueue(&self.node, WaitState::TimedOut);
                        break;
                    }
                    std::thread::park_timeout(d - now);
                }
            }
        }
        self.finish()
    }

    /// Leave: off the queue, vcache entries detached, frame reference
    /// dropped. Returns the outcome.
    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Err(Error::Invalid("futex waiter already finished"));
        }
        self.finished = true;
        let fx = &self.mm.machine.futexes;
        let end = fx.table.unqueue(&self.node, WaitState::Cancelled);
        let (entries, frame) = {
            let mut inner = self.node.inner.lock();
            (std::mem::take(&mut inner.entries), inner.key.frame())
        };
        for (mm, page, users) in entries.iter() {
            fx.vcache.detach(users, *mm, *page, &self.node);
        }
        if let Some(f) = frame {
            self.mm.arena().key_off(f);
            self.mm.arena().put(f);
        }
        match end {
            WaitState::Woken => Ok(()),
            WaitState::TimedOut => Err(Error::TimedOut),
            _ => Err(Error::Interrupted),
        }
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
