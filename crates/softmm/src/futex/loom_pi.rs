//! Loom models of a robust owner's death and of requeue to a PI futex.
//!
//! The futex table (queue, wake, unqueue, `requeue_pi`, `unlock_pi`) and
//! the robust walk's change of a word (`robust::mark_death`) are the real
//! code; keys are Linux's private keys (no frames to model), the futex
//! words plain atomics, and the user-space halves (glibc's lock loop, its
//! unlock) and the kernel-side word updates of `requeue_pi.rs` and
//! `pi.rs` are written here in the same steps. A waiter does not block:
//! it queues, and once every other thread is done the model checks it was
//! taken off its queue (else the wake-up was lost).

use super::key::FutexKey;
use super::robust::{mark_death, DeathStep, FUTEX_OWNER_DIED, FUTEX_TID_MASK, FUTEX_WAITERS};
use super::table::{Check, FrameRefs, FutexTable, Node, NodeInner, Notify, PiTarget, RequeuePiOps, WaitState};
use crate::phys::FrameId;
use crate::sync::{Arc, AtomicU32, Ordering};

const MM: u64 = 3;
const K1: FutexKey = FutexKey::Private { mm: MM, addr: 0x1000 };
const K2: FutexKey = FutexKey::Private { mm: MM, addr: 0x2000 };

/// Private keys hold no frame.
struct NoFrames;

impl FrameRefs for NoFrames {
    fn get(&self, _: FrameId) {}
    fn put(&self, _: FrameId) {}
    fn key_on(&self, _: FrameId) {}
    fn key_off(&self, _: FrameId) {}
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// A robust mutex at K1 whose owner (TID 1) dies, and a waiter (TID 2).
struct Robust {
    table: FutexTable,
    word: AtomicU32,
}

const OWNER: u32 = 1;
const WAITER: u32 = 2;

impl Robust {
    /// glibc's robust lock by WAITER: take a word without owner (reporting
    /// what it held: `FUTEX_OWNER_DIED` means `EOWNERDEAD`), else set
    /// `FUTEX_WAITERS` and wait for the value it set (queued: `Err`).
    fn lock(&self) -> Result<u32, Arc<Node>> {
        loop {
            let v = self.word.load(Ordering::SeqCst);
            if v & FUTEX_TID_MASK == 0 {
                let new = WAITER | (v & FUTEX_OWNER_DIED);
                if self.word.compare_exchange(v, new, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    return Ok(v);
                }
                continue;
            }
            let want = v | FUTEX_WAITERS;
            if want != v && self.word.compare_exchange(v, want, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                continue;
            }
            let node = Arc::new(Node::with(K1, u32::MAX, Notify::None, None, MM));
            let check = || if self.word.load(Ordering::SeqCst) == want { Check::Queue } else { Check::Again };
            if let Check::Queue = self.table.queue(&node, K1, &NoFrames, check) {
                return Err(node);
            }
        }
    }

    /// The owner's exit walks its list: `mark_death` on the word, then the
    /// wake it asks for (`wake_first`: the wake before the mark, broken).
    fn death(&self, pending: bool, wake_first: bool) -> u32 {
        let mut woken = 0;
        if wake_first {
            woken += self.table.wake(&K1, 1, u32::MAX);
        }
        let uval = self.word.load(Ordering::SeqCst);
        let cas = |old, new| Ok::<_, ()>(self.word.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst));
        match mark_death(OWNER, false, pending, uval, cas) {
            Ok(DeathStep::Unlocked) | Ok(DeathStep::Marked { waiters: true }) if !wake_first => {
                woken += self.table.wake(&K1, 1, u32::MAX);
            }
            _ => {}
        }
        woken
    }
}

/// The owner dies holding the lock while a thread locks it: the word gets
/// `FUTEX_OWNER_DIED`, the waiter is woken exactly once if it queued, and
/// it then takes the lock learning of the death.
fn robust_death(wake_first: bool) {
    model(move || {
        let r = Arc::new(Robust { table: FutexTable::default(), word: AtomicU32::new(OWNER) });
        let r2 = r.clone();
        let walker = loom::thread::spawn(move || r2.death(false, wake_first));
        let locked = r.lock();
        let woken = walker.join().unwrap();
        let seen = match locked {
            Ok(v) => {
                assert_eq!(woken, 0, "a wake with nobody queued");
                v
            }
            Err(node) => {
                assert_eq!(node.state(), WaitState::Woken, "lost wake-up");
                assert_eq!(woken, 1);
                r.lock().ok().expect("woken, the lock is free")
            }
        };
        assert_ne!(seen & FUTEX_OWNER_DIED, 0, "the owner's death went unseen");
        assert_eq!(r.word.load(Ordering::SeqCst), WAITER | FUTEX_OWNER_DIED);
    });
}

#[test]
fn robust_death_marks_and_wakes_the_waiter() {
    robust_death(false);
}

/// Waking before the mark loses a waiter that queues in between.
#[test]
#[should_panic(expected = "lost wake-up")]
fn robust_death_waking_before_the_mark_loses_the_waiter() {
    robust_death(true);
}

/// The owner unlocks in user space (the word becomes 0) and dies before
/// its wake: the walk's pending entry wakes one waiter, and no waiter is
/// left queued on a free lock.
#[test]
fn robust_death_after_a_user_space_unlock_wakes_the_waiter() {
    model(|| {
        let r = Arc::new(Robust { table: FutexTable::default(), word: AtomicU32::new(OWNER) });
        let r2 = r.clone();
        let owner = loom::thread::spawn(move || {
            r2.word.swap(0, Ordering::SeqCst); // glibc's unlock; the wake never comes
            r2.death(true, false)
        });
        let locked = r.lock();
        let woken = owner.join().unwrap();
        if let Err(node) = locked {
            assert_eq!(node.state(), WaitState::Woken, "lost wake-up");
            assert_eq!(woken, 1);
            assert_eq!(r.lock().ok().expect("woken, the lock is free") & FUTEX_OWNER_DIED, 0);
        }
        assert_eq!(r.word.load(Ordering::SeqCst), WAITER);
    });
}

/// Requeue to a PI futex: the condition at K1, the PI mutex at K2 owned
/// by TID 1, a `FUTEX_WAIT_REQUEUE_PI` waiter (TID 2).
struct Pi {
    table: FutexTable,
    cond: AtomicU32,
    mutex: AtomicU32,
}

/// `requeue_pi.rs`'s `Ops` on the modelled words (`.1`: whether an owned
/// mutex gets `FUTEX_WAITERS`, as it must).
struct ModelOps<'a>(&'a Pi, bool);

impl RequeuePiOps for ModelOps<'_> {
    type Err = u32;
    fn check(&mut self) -> Result<(), u32> {
        if self.0.cond.load(Ordering::SeqCst) != 0 {
            return Err(1);
        }
        Ok(())
    }
    fn targets(&self, t: &PiTarget) -> bool {
        t.key == K2
    }
    fn invalid(&self) -> u32 {
        2
    }
    fn acquire(&mut self, tid: u32) -> Result<Option<u32>, u32> {
        let w = &self.0.mutex;
        let mut uval = w.load(Ordering::SeqCst);
        loop {
            let owner = uval & FUTEX_TID_MASK;
            if owner == tid {
                return Err(3);
            }
            let new = match owner {
                0 => (uval & FUTEX_OWNER_DIED) | tid | FUTEX_WAITERS,
                _ if self.1 => uval | FUTEX_WAITERS,
                _ => uval,
            };
            match w.compare_exchange(uval, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok((owner != 0).then_some(owner)),
                Err(now) => uval = now,
            }
        }
    }
    fn moved(&mut self, _: &Arc<Node>, _: &mut NodeInner) {}
}

impl Pi {
    fn new() -> Pi {
        Pi { table: FutexTable::default(), cond: AtomicU32::new(0), mutex: AtomicU32::new(OWNER) }
    }

    /// `futex_wait_requeue_pi` by WAITER, queued on the condition.
    fn wait(&self) -> Arc<Node> {
        let node = Arc::new(Node::with(K1, 0, Notify::None, None, MM));
        {
            let mut inner = node.inner.lock();
            inner.pi_tid = WAITER;
            inner.pi_target = Some(PiTarget { key: K2, mm: MM, addr: 0x2000 });
        }
        let queued = self.table.queue(&node, K1, &NoFrames, || Check::Queue);
        assert!(matches!(queued, Check::Queue));
        node
    }

    /// glibc's PI unlock by OWNER: the fast path, else `FUTEX_UNLOCK_PI`
    /// (`pi::hand_over`'s word update).
    fn unlock(&self) {
        if self.mutex.compare_exchange(OWNER, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return;
        }
        let handed = self.table.unlock_pi(&K2, |top| {
            let uval = self.mutex.load(Ordering::SeqCst);
            assert_eq!(uval & FUTEX_TID_MASK, OWNER, "the owner lost its lock");
            let new = top.map_or(0, |t| FUTEX_WAITERS | t);
            // Only the bucket lock's holders change a word with waiters.
            self.mutex.compare_exchange(uval, new, Ordering::SeqCst, Ordering::SeqCst).map(|_| ())
        });
        assert!(handed.is_ok(), "the word changed under the bucket lock");
    }
}

/// A broadcast races the owner's unlock (`timeout`: and the waiter's
/// deadline). A waiter that ends woken owns the mutex; one that timed out
/// does not; one that neither ended nor timed out would be a lost wake-up.
/// `set_waiters`: the requeue marks an owned mutex `FUTEX_WAITERS`.
fn requeue_pi_vs_unlock(timeout: bool, set_waiters: bool) {
    model(move || {
        let p = Arc::new(Pi::new());
        let node = p.wait();
        let p2 = p.clone();
        let requeuer =
            loom::thread::spawn(move || p2.table.requeue_pi(&K1, &K2, 1, &NoFrames, &mut ModelOps(&p2, set_waiters)));
        let p3 = p.clone();
        let owner = loom::thread::spawn(move || p3.unlock());
        if timeout {
            p.table.unqueue(&node, WaitState::TimedOut);
        }
        let moved = requeuer.join().unwrap().expect("the requeue is refused");
        owner.join().unwrap();
        let word = p.mutex.load(Ordering::SeqCst);
        match node.state() {
            WaitState::Woken => {
                assert_eq!(moved, 1);
                assert_eq!(word, WAITER | FUTEX_WAITERS, "woken without the mutex");
            }
            WaitState::TimedOut => {
                assert!(timeout);
                assert_eq!(word & FUTEX_TID_MASK, 0, "the mutex went to a waiter that left");
            }
            s => panic!("lost wake-up: the waiter ended {s:?}, the mutex {word:#x}"),
        }
    });
}

#[test]
fn requeue_pi_vs_unlock_hands_the_mutex_over() {
    requeue_pi_vs_unlock(false, true);
}

#[test]
fn requeue_pi_vs_unlock_vs_timeout() {
    requeue_pi_vs_unlock(true, true);
}

/// Without `FUTEX_WAITERS`, the owner's user-space unlock succeeds and
/// never hands the mutex to the requeued waiter.
#[test]
#[should_panic(expected = "lost wake-up")]
fn requeue_pi_without_the_waiters_bit_loses_the_waiter() {
    requeue_pi_vs_unlock(false, false);
}
