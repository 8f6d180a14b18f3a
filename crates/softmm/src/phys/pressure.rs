//! Memory pressure: how allocations wake a background reclaimer.
//!
//! Under a frame limit, an allocation that leaves fewer than `low` frames
//! free below the limit *pokes* the signal; the background reclaimer
//! (`reclaim/kswapd.rs`) waits on it and frees frames up to its high
//! watermark, so that faults rarely reach the limit and reclaim themselves
//! (Linux's `wakeup_kswapd` from the page allocator's slow path).
//!
//! The protocol (modelled under loom below): a poke sets `poked` with a
//! read-modify-write and, if it was clear, notifies under the lock; the
//! reclaimer looks at `poked` under the lock before it waits. A poke
//! either comes before that look (no wait) or finds the reclaimer asleep
//! on the condition variable (it must take the lock to notify, which the
//! wait released). The reclaimer clears `poked` with a read-modify-write
//! before it looks at the frames in use: a poke it clears happened after
//! the allocation that made it, so the reclaimer sees that allocation's
//! count; a later poke finds the flag clear and notifies again.
//!
//! Locks: the signal's mutex is a leaf, never held while taking another.

use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, Ordering};
use std::time::Duration;

/// The signal from allocations to the background reclaimer.
#[derive(Default)]
pub(crate) struct Pressure {
    /// Free frames below the limit under which an allocation pokes (0:
    /// nobody listens, the default).
    low: AtomicU64,
    /// Poked since the reclaimer last cleared it.
    poked: AtomicBool,
    /// Whether the reclaimer must exit (the machine is going away); its
    /// waits hold this lock.
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Pressure {
    /// Start listening: allocations leaving fewer than `frames` free poke.
    pub(crate) fn listen(&self, frames: u64) {
        self.low.store(frames, Ordering::Relaxed);
    }

    /// After an allocation: poke when fewer than the low watermark of
    /// frames are free below `limit` (one load when nobody listens).
    #[inline]
    pub(crate) fn note(&self, in_use: u64, limit: u64) {
        let low = self.low.load(Ordering::Relaxed);
        if low != 0 && limit.saturating_sub(in_use) < low {
            self.poke();
        }
    }

    /// Wake the reclaimer (if it was not poked already).
    #[cold]
    pub(crate) fn poke(&self) {
        if !self.poked.swap(true, Ordering::AcqRel) {
            let _stop = self.stop.lock();
            self.wake.notify_one();
        }
    }

    /// The reclaimer: whether it was poked since the last call, clearing it.
    pub(crate) fn take_poke(&self) -> bool {
        self.poked.swap(false, Ordering::AcqRel)
    }

    /// The reclaimer: wait until poked, stopped, or `timeout` passes.
    /// Returns false once stopped.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let mut stop = self.stop.lock();
        if !*stop && !self.poked.load(Ordering::Acquire) {
            stop = self.wake.wait_for(stop, timeout);
        }
        !*stop
    }

    /// The reclaimer: wait until stopped or `timeout` passes, pokes or
    /// not (after a round that freed nothing). Returns false once stopped.
    pub(crate) fn pause(&self, timeout: Duration) -> bool {
        let mut stop = self.stop.lock();
        if !*stop {
            stop = self.wake.wait_for(stop, timeout);
        }
        !*stop
    }

    /// Tell the reclaimer to exit, waking it.
    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The real `Pressure` under loom, whose condition-variable waits never
    //! time out: a lost wake-up or a stop that does not end the wait is a
    //! deadlock the model reports.
    use super::Pressure;
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::sync::Arc;
    use std::time::Duration;

    const FOREVER: Duration = Duration::from_secs(3600);

    #[test]
    fn loom_pressure_poke_is_never_lost() {
        loom::model(|| {
            let p = Arc::new(Pressure::default());
            p.listen(1);
            // Frames in use, as the allocator counts them.
            let in_use = Arc::new(AtomicU64::new(0));
            let reclaimer = {
                let (p, in_use) = (p.clone(), in_use.clone());
                loom::thread::spawn(move || loop {
                    assert!(p.wait(FOREVER));
                    // Cleared before looking, as kswapd does.
                    if p.take_poke() && in_use.load(Ordering::Relaxed) == 1 {
                        return;
                    }
                })
            };
            in_use.store(1, Ordering::Relaxed);
            p.note(1, 1);
            reclaimer.join().unwrap();
        });
    }

    #[test]
    fn loom_pressure_stop_ends_every_wait() {
        loom::model(|| {
            let p = Arc::new(Pressure::default());
            p.listen(1);
            let reclaimer = {
                let p = p.clone();
                loom::thread::spawn(move || {
                    let mut rounds = 0;
                    while p.wait(FOREVER) {
                        p.take_poke();
                        rounds += 1;
                        if !p.pause(FOREVER) {
                            break;
                        }
                    }
                    rounds
                })
            };
            p.poke();
            p.stop();
            assert!(reclaimer.join().unwrap() <= 1);
        });
    }
}
