//! Background reclaim: one thread per machine with a frame limit and a
//! swap device (Linux's kswapd).
//!
//! When an allocation leaves fewer than the *low* watermark of frames free
//! below the limit, it pokes the arena's `Pressure` signal; this thread
//! wakes and runs the clock until the *high* watermark of frames is free
//! again, so faults mostly find free frames and rarely reclaim themselves
//! (direct reclaim stays the fallback when it falls behind).
//!
//! It scans in rounds of up to `scan::HOLD_MAX` frames, one TLB shootdown
//! each (its shootdowns interrupt the CPUs of the faulting threads, so it
//! makes few), under the machine's `scanning` lock, which it hands over
//! fairly between rounds: a fault that reaches the limit meanwhile waits
//! for one round and then finds its frames. It only tries `mmap_lock`s,
//! never waits for a busy address space; an audit (which holds every
//! `mmap_lock`) waits for the round in progress through the `round` lock.
//!
//! Lifetime: the thread holds the machine weakly while it waits and
//! strongly only during a balancing pass. The last `Machine` or `Mm` value
//! to go stops it and joins it (`MachineInner::release`), waiting for a
//! pass in progress, so the machine and its swap file go with the user's
//! last handle, not with the end of that pass.

use super::scan::{shrink, HOLD_MAX};
use crate::error::{Error, Result};
use crate::machine::MachineInner;
use crate::phys::pressure::Pressure;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread sleeps without a poke before it looks anyway.
const IDLE: Duration = Duration::from_millis(100);

/// How long it leaves reclaim to faulting threads after a pass that freed
/// nothing (every page busy, pinned or referenced): pokes during that
/// time would only make it spin.
const BACKOFF: Duration = Duration::from_millis(5);

/// The background reclaimer's (low, high) watermarks for a limit of
/// `limit` frames, in frames free below the limit: it wakes when fewer
/// than `low` are free and reclaims until `high` are. A 32nd of the limit
/// and twice that (Linux keeps a fraction of memory free the same way),
/// but `low` at least one full round (`HOLD_MAX` frames, one TLB
/// shootdown), so that faults do not reach the limit while a round runs;
/// at most a quarter and a half of the limit.
pub fn watermarks(limit: u64) -> (u64, u64) {
    let low = (limit / 32).max(HOLD_MAX as u64).min(limit / 4);
    (low, (2 * low).min(limit / 2))
}

/// Start the background reclaimer of `m`.
pub(crate) fn start(m: &Arc<MachineInner>) -> Result<JoinHandle<()>> {
    let (low, high) = watermarks(m.arena.limit());
    let pressure = m.arena.pressure.clone();
    pressure.listen(low);
    let weak = Arc::downgrade(m);
    std::thread::Builder::new()
        .name("softmm-kswapd".into())
        .spawn(move || run(&weak, &pressure, low, high))
        .map_err(|_| Error::Host { what: "spawning the background reclaim thread", errno: crate::error::errno::EAGAIN })
}

/// The thread: wait for a poke (or the idle timeout), then balance.
fn run(weak: &Weak<MachineInner>, pressure: &Pressure, low: u64, high: u64) {
    while pressure.wait(IDLE) {
        let Some(m) = weak.upgrade() else { return };
        // Cleared before looking at the frames in use (see `Pressure`).
        let wanted = pressure.take_poke() || free(&m) < low;
        let progress = !wanted || balance(&m, high);
        drop(m);
        if !progress && !pressure.pause(BACKOFF) {
            return;
        }
    }
}

/// Frames free below the limit.
fn free(m: &MachineInner) -> u64 {
    m.arena.limit().saturating_sub(m.arena.in_use())
}

/// Reclaim until `high` frames are free below the limit. Returns false if
/// a round freed nothing.
fn balance(m: &MachineInner, high: u64) -> bool {
    loop {
        let free = free(m);
        if free >= high {
            return true;
        }
        let want = usize::try_from(high - free).unwrap_or(HOLD_MAX).min(HOLD_MAX);
        let one = m.reclaim.scanning.lock();
        let freed = {
            let _round = m.reclaim.round.lock();
            shrink(m, want)
        };
        // A fault waiting to reclaim goes next, and finds these frames.
        parking_lot::MutexGuard::unlock_fair(one);
        if freed == 0 {
            return false;
        }
        m.counters.background_reclaimed.fetch_add(freed as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_scale_with_the_limit_and_stay_inside_it() {
        assert_eq!(watermarks(1 << 20), (32768, 65536));
        assert_eq!(watermarks(4096), (256, 512), "at least one round");
        assert_eq!(watermarks(512), (128, 256), "at most a quarter and a half");
        assert_eq!(watermarks(16), (4, 8));
    }
}
