//! The one place that chooses synchronization primitives.
//!
//! Protocol state (generation counters, accessor slots, page-table entries
//! installed by CAS) uses the atomics re-exported here, so that `--cfg loom`
//! swaps in loom's model-checked types. Guest memory itself (bytes inside
//! frames) is *not* protocol state: it is plain shared memory, always accessed
//! with std atomics or byte copies, and never modelled by loom.
//!
//! The two barrier functions implement an asymmetric fence pair, as user-space
//! RCU does with `membarrier(2)`: the hot side (a TLB hit in an accessor) pays
//! only a compiler fence, and the rare side (a TLB shootdown) pays a
//! `membarrier` system call that forces a full fence on every running thread of
//! this process. Under loom and Miri, where there is no such call, both sides
//! use a real `SeqCst` fence, which gives the same ordering guarantee.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Spin-wait hint; under loom, yields to the model scheduler instead.
#[inline]
pub fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Let other threads run while waiting for one of them; under loom, yields
/// to the model scheduler.
#[inline]
pub fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

#[cfg(not(any(loom, miri)))]
mod membarrier_impl {
    use std::sync::OnceLock;

    /// Whether `MEMBARRIER_CMD_PRIVATE_EXPEDITED` is registered for this process.
    static REGISTERED: OnceLock<bool> = OnceLock::new();

    pub fn available() -> bool {
        *REGISTERED.get_or_init(|| {
            use rustix::thread::{membarrier, MembarrierCommand};
            membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok()
        })
    }

    pub fn heavy() -> bool {
        use rustix::thread::{membarrier, MembarrierCommand};
        available() && membarrier(MembarrierCommand::PrivateExpedited).is_ok()
    }
}

/// Make sure the heavy side of the fence pair is usable before any hot-path
/// thread relies on it. Called when the first accessor is created.
#[inline]
pub fn prepare_asymmetric_fences() {
    #[cfg(not(any(loom, miri)))]
    let _ = membarrier_impl::available();
}

/// Whether the hot side may use a compiler fence only (membarrier is
/// registered). Once true it stays true, so a hot-path user may read it
/// once (after `prepare_asymmetric_fences`) and keep it.
pub fn light_barrier_is_compiler_only() -> bool {
    #[cfg(not(any(loom, miri)))]
    return LIGHT_IS_COMPILER_ONLY.load(Ordering::SeqCst);
    #[cfg(any(loom, miri))]
    false
}

/// The hot side of the fence pair, with the mode read earlier by
/// [`light_barrier_is_compiler_only`] (saves a load per access).
#[inline(always)]
pub fn light_barrier_as(compiler_only: bool) {
    if compiler_only {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The hot side of the asymmetric fence pair (see the module comment).
#[cfg(test)]
#[inline(always)]
pub fn light_barrier() {
    #[cfg(not(any(loom, miri)))]
    {
        if LIGHT_IS_COMPILER_ONLY.load(Ordering::Relaxed) {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
    #[cfg(any(loom, miri))]
    fence(Ordering::SeqCst);
}

/// Set once `membarrier` registration succeeded; until then (or when the
/// kernel lacks it) the hot side falls back to a real fence.
#[cfg(not(any(loom, miri)))]
static LIGHT_IS_COMPILER_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Enable the cheap hot side if the kernel supports it. Must run before any
/// hot-side thread starts relying on the pairing; `prepare_asymmetric_fences`
/// does both.
#[cfg(not(any(loom, miri)))]
pub fn enable_light_barrier() {
    if membarrier_impl::available() {
        LIGHT_IS_COMPILER_ONLY.store(true, Ordering::SeqCst);
    }
}

/// The rare side of the asymmetric fence pair.
#[inline]
pub fn heavy_barrier() {
    fence(Ordering::SeqCst);
    #[cfg(not(any(loom, miri)))]
    {
        if LIGHT_IS_COMPILER_ONLY.load(Ordering::SeqCst) && !membarrier_impl::heavy() {
            // Registration succeeded earlier, so this cannot fail short of the
            // kernel withdrawing support; there is no safe fallback for threads
            // that already run with compiler-only fences.
            std::process::abort();
        }
    }
}

/// A mutex that loom can model: loom's under `--cfg loom`, parking_lot's
/// otherwise. Poisoning does not exist here (a panic while holding a
/// protocol lock is a bug that aborts the test anyway).
pub struct Mutex<T> {
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
    #[cfg(not(loom))]
    inner: parking_lot::Mutex<T>,
}

/// The guard of [`Mutex`].
#[cfg(loom)]
pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
/// The guard of [`Mutex`].
#[cfg(not(loom))]
pub type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub fn new(value: T) -> Self {
        Mutex {
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
            #[cfg(not(loom))]
            inner: parking_lot::Mutex::new(value),
        }
    }

    /// Lock, blocking.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(loom)]
        return self.inner.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(not(loom))]
        self.inner.lock()
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

#[cfg(loom)]
pub use loom::sync::Arc;
#[cfg(not(loom))]
pub use std::sync::Arc;

/// A condition variable over [`Mutex`] that loom can model (loom's waits
/// never time out, so a lost wake-up shows as a deadlock there).
#[derive(Default)]
pub struct Condvar {
    #[cfg(loom)]
    inner: loom::sync::Condvar,
    #[cfg(not(loom))]
    inner: parking_lot::Condvar,
}

impl Condvar {
    /// Wait for a notification or until `timeout` passes (spurious wake-ups
    /// possible), releasing the lock meanwhile.
    pub fn wait_for<'a, T>(&self, guard: MutexGuard<'a, T>, timeout: std::time::Duration) -> MutexGuard<'a, T> {
        #[cfg(loom)]
        return match self.inner.wait_timeout(guard, timeout) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
        #[cfg(not(loom))]
        {
            let mut guard = guard;
            self.inner.wait_for(&mut guard, timeout);
            guard
        }
    }

    /// Wake every waiter.
    pub fn notify_all(&self) {
        self.inner.notify_all();
    }

    /// Wake one waiter.
    pub fn notify_one(&self) {
        self.inner.notify_one();
    }
}
