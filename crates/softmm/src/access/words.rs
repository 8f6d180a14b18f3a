//! [`GuestWords`]: aligned atomic words and futex calls on guest memory, the
//! small interface that guest synchronisation (`futex::mutex`) is written
//! against. [`Accessor`] offers it one access at a time, [`Batch`] with the
//! slot published once for a run of accesses.

use super::{Accessor, Batch};
use crate::error::Result;
use std::time::Duration;

/// Atomic access to aligned `u32` and `u64` words of one address space, and
/// the futex calls on them. Errors are the accessor's: `Misaligned` for an
/// unaligned word, `Segv` for an access the mapping refuses; the futex calls
/// fail as [`Accessor::futex_wait`] and [`Accessor::futex_wake`] do.
pub trait GuestWords {
    /// The identity of the address space ([`crate::Mm::id`]).
    fn mm_id(&self) -> u64;
    /// Atomic load (acquire).
    fn load_u32(&mut self, addr: u64) -> Result<u32>;
    /// Atomic store (release).
    fn store_u32(&mut self, addr: u64, v: u32) -> Result<()>;
    /// Compare-exchange: `Ok(Ok(old))` if the word held `old` and now holds
    /// `new`, `Ok(Err(actual))` if it held something else.
    fn cmpxchg_u32(&mut self, addr: u64, old: u32, new: u32) -> Result<std::result::Result<u32, u32>>;
    /// Fetch-add (wrapping); returns the previous value.
    fn fetch_add_u32(&mut self, addr: u64, v: u32) -> Result<u32>;
    /// Atomic load (acquire).
    fn load_u64(&mut self, addr: u64) -> Result<u64>;
    /// Atomic store (release).
    fn store_u64(&mut self, addr: u64, v: u64) -> Result<()>;
    /// Compare-exchange, as [`cmpxchg_u32`](Self::cmpxchg_u32).
    fn cmpxchg_u64(&mut self, addr: u64, old: u64, new: u64) -> Result<std::result::Result<u64, u64>>;
    /// Fetch-add (wrapping); returns the previous value.
    fn fetch_add_u64(&mut self, addr: u64, v: u64) -> Result<u64>;
    /// FUTEX_WAIT on the word at `addr`.
    fn futex_wait(&mut self, addr: u64, val: u32, timeout: Option<Duration>) -> Result<()>;
    /// FUTEX_WAKE of at most `n` waiters on the word at `addr`.
    fn futex_wake(&mut self, addr: u64, n: u32) -> Result<u32>;
    /// A point in a spin where a waiting TLB shootdown may pass (a batch
    /// ends and opens again; an accessor holds nothing between accesses).
    fn relax(&mut self) {}
    /// Run `f` on the accessor with nothing published: for [`crate::Mm`]
    /// calls, which a batch must not make.
    fn outside<R>(&mut self, f: impl FnOnce(&mut Accessor) -> R) -> R;
}

/// Forward every method of [`GuestWords`] to the type's inherent one.
macro_rules! forward_words {
    () => {
        fn mm_id(&self) -> u64 {
            Self::mm_id(self)
        }
        #[inline]
        fn load_u32(&mut self, addr: u64) -> Result<u32> {
            Self::load_u32(self, addr)
        }
        #[inline]
        fn store_u32(&mut self, addr: u64, v: u32) -> Result<()> {
            Self::store_u32(self, addr, v)
        }
        #[inline]
        fn cmpxchg_u32(&mut self, addr: u64, old: u32, new: u32) -> Result<std::result::Result<u32, u32>> {
            Self::cmpxchg_u32(self, addr, old, new)
        }
        #[inline]
        fn fetch_add_u32(&mut self, addr: u64, v: u32) -> Result<u32> {
            Self::fetch_add_u32(self, addr, v)
        }
        #[inline]
        fn load_u64(&mut self, addr: u64) -> Result<u64> {
            Self::load_u64(self, addr)
        }
        #[inline]
        fn store_u64(&mut self, addr: u64, v: u64) -> Result<()> {
            Self::store_u64(self, addr, v)
        }
        #[inline]
        fn cmpxchg_u64(&mut self, addr: u64, old: u64, new: u64) -> Result<std::result::Result<u64, u64>> {
            Self::cmpxchg_u64(self, addr, old, new)
        }
        #[inline]
        fn fetch_add_u64(&mut self, addr: u64, v: u64) -> Result<u64> {
            Self::fetch_add_u64(self, addr, v)
        }
        fn futex_wait(&mut self, addr: u64, val: u32, timeout: Option<Duration>) -> Result<()> {
            Self::futex_wait(self, addr, val, timeout)
        }
        fn futex_wake(&mut self, addr: u64, n: u32) -> Result<u32> {
            Self::futex_wake(self, addr, n)
        }
    };
}

impl GuestWords for Accessor {
    forward_words!();

    fn outside<R>(&mut self, f: impl FnOnce(&mut Accessor) -> R) -> R {
        f(self)
    }
}

impl GuestWords for Batch<'_> {
    forward_words!();

    #[inline]
    fn relax(&mut self) {
        Batch::relax(self);
    }

    fn outside<R>(&mut self, f: impl FnOnce(&mut Accessor) -> R) -> R {
        Batch::outside(self, f)
    }
}
