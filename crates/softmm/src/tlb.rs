//! TLB shootdown for software TLBs: a flush generation plus per-accessor slots.
//!
//! Each accessor (a thread's handle with a software TLB, see `access/`)
//! owns a [`Slot`]. Around every access through a cached translation it
//! publishes "active at generation g" and checks that the address space's
//! generation is still g; afterwards it publishes "idle". A change that can
//! strand a cached translation (unmap, write-protect, COW, fork) calls
//! [`Shootdown::flush`], which bumps the generation and then waits until no
//! slot is still active at an older generation. After `flush` returns, no
//! access through a translation cached before it is in flight, and every later
//! access re-walks the page tables: frames can be freed, and permission
//! changes hold, exactly as after a hardware TLB shootdown.
//!
//! Ordering: the accessor does `store(slot, active g); light_barrier();
//! load(gen)`; the flusher does `store(gen, g+1); heavy_barrier(); load(slot)`.
//! This is Dekker's pattern: with the barrier pair (a full fence on both sides,
//! or `membarrier` + compiler fence) at least one side sees the other's store,
//! so either the accessor sees the new generation and retries, or the flusher
//! sees the active slot and waits. The slot's idle store is a release, so the
//! flusher's acquire load that sees it also sees the access completed.
//!
//! Lock: `slots` is a leaf mutex, taken to register, unregister and flush.

use crate::sync::{heavy_barrier, spin_hint, AtomicU64, AtomicUsize, Ordering};
use parking_lot::Mutex;
use std::sync::Arc;

const ACTIVE: u64 = 1;

/// One accessor's published state. On a cache line of its own: every access
/// stores to it twice, and a neighbour's line would bounce.
#[derive(Default)]
#[repr(align(128))]
pub struct Slot {
    state: AtomicU64,
}

impl Slot {
    /// Publish "active at generation `gen`"; the caller must then check the
    /// generation with [`Shootdown::generation_relaxed`].
    #[cfg(test)]
    #[inline(always)]
    pub fn enter(&self, gen: u64) {
        self.state.store(gen << 1 | ACTIVE, Ordering::Relaxed);
        crate::sync::light_barrier();
    }

    /// `enter` with the barrier mode cached by the caller (see
    /// `sync::light_barrier_as`).
    #[inline(always)]
    pub fn enter_as(&self, gen: u64, compiler_only_barrier: bool) {
        self.state.store(gen << 1 | ACTIVE, Ordering::Relaxed);
        crate::sync::light_barrier_as(compiler_only_barrier);
    }

    /// Publish "idle": every access since `enter` is complete.
    #[inline(always)]
    pub fn exit(&self) {
        self.state.store(0, Ordering::Release);
    }
}

/// The shootdown domain of one address space. Every access reads `gen`:
/// aligned so that no neighbour written often (the `mmap_lock` word, next to
/// it in `MmInner`) shares its cache line.
#[derive(Default)]
#[repr(align(128))]
pub struct Shootdown {
    gen: AtomicU64,
    nslots: AtomicUsize,
    slots: Mutex<Vec<Arc<Slot>>>,
}

impl Shootdown {
    /// The current generation, for the hot path right after `Slot::enter`.
    #[inline(always)]
    pub fn generation_relaxed(&self) -> u64 {
        self.gen.load(Ordering::Relaxed)
    }

    /// The current generation, before walking page tables: a translation
    /// read after this load is valid at least for this generation.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    pub fn register(&self) -> Arc<Slot> {
        crate::sync::prepare_asymmetric_fences();
        #[cfg(not(any(loom, miri)))]
        crate::sync::enable_light_barrier();
        let s = Arc::new(Slot::default());
        let mut slots = self.slots.lock();
        slots.push(s.clone());
        self.nslots.store(slots.len(), Ordering::SeqCst);
        s
    }

    pub fn unregister(&self, s: &Arc<Slot>) {
        let mut slots = self.slots.lock();
        slots.retain(|x| !Arc::ptr_eq(x, s));
        self.nslots.store(slots.len(), Ordering::SeqCst);
    }

    /// Number of registered accessors.
    pub fn accessors(&self) -> usize {
        self.nslots.load(Ordering::SeqCst)
    }

    /// Invalidate every cached translation and wait for in-flight accesses
    /// through old ones. `except` is the caller's own slot (idle by
    /// construction while it runs this), which need not be waited for; when
    /// it is the only accessor, nothing else can hold a stale translation
    /// and the caller refills its own entry, so no flush is needed at all.
    ///
    /// Returns whether other accessors had to be reached.
    pub fn flush(&self, except: Option<&Slot>) -> bool {
        let n = self.accessors();
        // `except` is a registered slot (its accessor is alive and running
        // this), so one registered slot in all means it is the only one.
        if n == 0 || (n == 1 && except.is_some()) {
            return false;
        }
        let new = self.gen.fetch_add(1, Ordering::SeqCst) + 1;
        heavy_barrier();
        let slots = self.slots.lock();
        for s in slots.iter() {
            if except.is_some_and(|e| std::ptr::eq(Arc::as_ptr(s), e)) {
                continue;
            }
            loop {
                let st = s.state.load(Ordering::Acquire);
                if st & ACTIVE == 0 || st >> 1 >= new {
                    break;
                }
                spin_hint();
            }
        }
        true
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU64 as LAtomic;

    /// The accessor side `access(shootdown, slot, generation, frame)` runs
    /// while a flusher invalidates the translation and then "frees" the
    /// frame (writes a poison value); `access` reads the frame only through
    /// the translation cached at the generation it is given.
    fn against_flush(access: impl Fn(&Shootdown, &Slot, u64, &LAtomic) + Sync + Send + 'static) {
        loom::model(move || {
            let sd = Arc::new(Shootdown::default());
            let frame = Arc::new(LAtomic::new(1));
            let slot = sd.register();
            let g0 = sd.generation();
            let (sd2, frame2) = (sd.clone(), frame.clone());
            let flusher = loom::thread::spawn(move || {
                sd2.flush(None);
                frame2.store(0xdead, Ordering::Relaxed); // the frame is reused
            });
            access(&sd, &slot, g0, &frame);
            flusher.join().unwrap();
        });
    }

    /// One access must never observe the poison through the old
    /// translation: either it sees the new generation and retries, or the
    /// flusher waits for its access to end.
    #[test]
    fn access_never_sees_freed_frame() {
        against_flush(|sd, slot, g0, frame| {
            slot.enter(g0);
            if sd.generation_relaxed() == g0 {
                let v = frame.load(Ordering::Relaxed);
                assert_eq!(v, 1, "read a freed frame through a stale translation");
            }
            slot.exit();
        });
    }

    /// A batch (`access/batch.rs`): one publication, several accesses, a
    /// `relax` (end and reopen) in the middle. `recheck`: whether the reopen
    /// checks the generation again, as `Batch::enter` does.
    fn batch(recheck: bool) {
        against_flush(move |sd, slot, g0, frame| {
            slot.enter(g0);
            if sd.generation_relaxed() == g0 {
                assert_eq!(frame.load(Ordering::Relaxed), 1, "first access of the batch");
                assert_eq!(frame.load(Ordering::Relaxed), 1, "second access of the batch");
                slot.exit(); // relax
                slot.enter(g0);
                if !recheck || sd.generation_relaxed() == g0 {
                    assert_eq!(frame.load(Ordering::Relaxed), 1, "read a freed frame after a relax");
                }
            }
            slot.exit();
        });
    }

    #[test]
    fn batch_never_sees_freed_frame() {
        batch(true);
    }

    /// The model catches a reopen that trusts the old generation.
    #[test]
    #[should_panic(expected = "read a freed frame after a relax")]
    fn reopen_without_recheck_is_caught() {
        batch(false);
    }

    /// A hold (`Accessor::hold`, `access/mod.rs`): `publish` enters at the
    /// accessor's generation and, while the domain's generation differs,
    /// exits, drops every cached translation (`resync`: the generation is
    /// read again) and enters again. Held accesses then use a cached
    /// translation with no check of their own; a miss exits, fills and
    /// publishes again. `recheck`: whether `publish` compares generations.
    fn hold(recheck: bool) {
        against_flush(move |sd, slot, g0, frame| {
            // The translation to `frame` was cached at `g0`.
            let (mut gen, mut cached) = (g0, true);
            let publish = |gen: &mut u64, cached: &mut bool| loop {
                slot.enter(*gen);
                if !recheck || sd.generation_relaxed() == *gen {
                    return;
                }
                slot.exit();
                *gen = sd.generation();
                *cached = false;
            };
            publish(&mut gen, &mut cached);
            if cached {
                assert_eq!(frame.load(Ordering::Relaxed), 1, "a held access through a stale translation");
            }
            slot.exit(); // a miss: the fill runs with the slot released
            publish(&mut gen, &mut cached);
            if cached {
                assert_eq!(frame.load(Ordering::Relaxed), 1, "a held access after a miss through a stale translation");
            }
            slot.exit();
        });
    }

    #[test]
    fn hold_never_sees_freed_frame() {
        hold(true);
    }

    /// The model catches a publish that trusts the accessor's generation.
    #[test]
    #[should_panic(expected = "through a stale translation")]
    fn publish_without_recheck_is_caught() {
        hold(false);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn flush_without_accessors_is_free() {
        let sd = Shootdown::default();
        sd.flush(None);
        assert_eq!(sd.generation(), 0);
    }

    #[test]
    fn only_self_skips_flush() {
        let sd = Shootdown::default();
        let s = sd.register();
        sd.flush(Some(&s));
        assert_eq!(sd.generation(), 0);
        sd.flush(None);
        assert_eq!(sd.generation(), 1);
    }

    #[test]
    fn flush_waits_for_active_slot() {
        let sd = Arc::new(Shootdown::default());
        let s = sd.register();
        s.enter(0);
        let sd2 = sd.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done2 = done.clone();
        let t = std::thread::spawn(move || {
            sd2.flush(None);
            done2.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!done.load(std::sync::atomic::Ordering::SeqCst), "flush returned during an access");
        s.exit();
        t.join().unwrap();
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }
}
