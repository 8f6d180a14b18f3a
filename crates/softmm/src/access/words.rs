//! [`GuestWords`]: aligned atomic words and futex calls on guest memory, the
//! small interface that guest synchronisation (`futex::mutex`) is written
//! against. [`Accessor`] offers it one access at a time, [`Batch`] with the
//! slot published once for a run of accesses.
//!
//! There is one path for every typed word operation: each implementor gives
//! a single primitive (run a closure on the aligned std atomic at an
//! address, with the translation held valid), and the operations are
//! generic over [`Word`] (`u8`, `u16`, `u32`, `u64`) on top of it. The
//! `_u32`/`_u64` names are spellings of the generic calls.

use super::{Accessor, Batch};
use crate::error::Result;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

pub(crate) mod sealed {
    use super::Result;
    use std::sync::atomic::Ordering;

    /// What a [`super::Word`] is made of: its std atomic and the
    /// operations on it. Private, so the set of word types stays closed.
    pub trait WordOps: Copy {
        /// The std atomic of the same size (and alignment).
        type Atomic;
        fn load(a: &Self::Atomic, o: Ordering) -> Self;
        fn store(a: &Self::Atomic, v: Self, o: Ordering);
        fn cmpxchg(a: &Self::Atomic, old: Self, new: Self) -> std::result::Result<Self, Self>;
        fn fetch_add(a: &Self::Atomic, v: Self) -> Self;
    }

    /// The primitive of a [`super::GuestWords`] implementor: `f` on the
    /// aligned atomic of type `T` at `addr`, with the page's translation
    /// held valid for the call (and writable, if `write`). Private: `f`
    /// runs with the accessor's slot published, so only the crate's short,
    /// non-blocking closures may be given.
    pub trait WordAccess {
        fn word<T: WordOps, R>(&mut self, addr: u64, write: bool, f: impl FnOnce(&T::Atomic) -> R) -> Result<R>;
    }
}

use sealed::{WordAccess, WordOps};

/// An integer that guest memory holds as an aligned atomic word: `u8`,
/// `u16`, `u32` or `u64` (sealed). An access at an address that is not a
/// multiple of the word's size fails with `Misaligned` (`EINVAL`); an
/// aligned word never crosses a page.
pub trait Word: WordOps + Eq + std::fmt::Debug + Send + Sync + 'static {}

macro_rules! word_type {
    ($t:ty, $a:ty) => {
        impl WordOps for $t {
            type Atomic = $a;
            #[inline(always)]
            fn load(a: &$a, o: Ordering) -> $t {
                a.load(o)
            }
            #[inline(always)]
            fn store(a: &$a, v: $t, o: Ordering) {
                a.store(v, o)
            }
            #[inline(always)]
            fn cmpxchg(a: &$a, old: $t, new: $t) -> std::result::Result<$t, $t> {
                a.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            }
            #[inline(always)]
            fn fetch_add(a: &$a, v: $t) -> $t {
                a.fetch_add(v, Ordering::AcqRel)
            }
        }
        impl Word for $t {}
    };
}

word_type!(u8, AtomicU8);
word_type!(u16, AtomicU16);
word_type!(u32, AtomicU32);
word_type!(u64, AtomicU64);

/// Atomic access to aligned words of one address space, and the futex
/// calls on them; implemented by [`Accessor`] and [`Batch`] (sealed).
/// Errors are the accessor's: `Misaligned` for an unaligned word, `Segv`
/// for an access the mapping refuses; the futex calls fail as
/// [`Accessor::futex_wait`] and [`Accessor::futex_wake`] do.
///
/// Loads are acquire, stores release, read-modify-writes acquire-release.
/// For other orderings, and for objects and byte ranges, use the
/// [`vm_memory::Bytes`] implementation of [`crate::Mm`] and
/// [`crate::SharedAccessor`].
///
/// ```
/// use softmm::{Config, GuestWords, Machine, MapKind, Placement, Prot};
///
/// let machine = Machine::new(Config { arena_bytes: 16 << 20, ..Config::default() })?;
/// let mm = machine.new_mm()?;
/// let base = mm.mmap(0x1000_0000, 4096, Prot::RW, MapKind::Private, Placement::Fixed)?;
/// let mut acc = mm.accessor();
/// acc.store_word(base, 7u16)?;
/// assert_eq!(acc.fetch_add_word(base, 1u16)?, 7);
/// assert_eq!(acc.load_u32(base)?, 8); // the same bytes, read as a u32 (little-endian host)
/// {
///     let mut batch = acc.batch(); // one slot publication for both operations
///     assert_eq!(batch.cmpxchg_u64(base + 8, 0, 5)?, Ok(0));
///     assert_eq!(batch.cmpxchg_u64(base + 8, 0, 6)?, Err(5));
/// }
/// assert!(acc.load_u32(base + 2).is_err()); // misaligned
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait GuestWords: WordAccess {
    /// The identity of the address space ([`crate::Mm::id`]).
    fn mm_id(&self) -> u64;

    /// Atomic load (acquire) of the word at `addr`.
    #[inline(always)]
    fn load_word<T: Word>(&mut self, addr: u64) -> Result<T> {
        self.word::<T, _>(addr, false, |a| T::load(a, Ordering::Acquire))
    }
    /// Atomic store (release) of `v` at `addr`.
    #[inline(always)]
    fn store_word<T: Word>(&mut self, addr: u64, v: T) -> Result<()> {
        self.word::<T, _>(addr, true, |a| T::store(a, v, Ordering::Release))
    }
    /// Compare-exchange: `Ok(Ok(old))` if the word held `old` and now holds
    /// `new`, `Ok(Err(actual))` if it held something else.
    #[inline(always)]
    fn cmpxchg_word<T: Word>(&mut self, addr: u64, old: T, new: T) -> Result<std::result::Result<T, T>> {
        self.word::<T, _>(addr, true, |a| T::cmpxchg(a, old, new))
    }
    /// Fetch-add (wrapping); returns the previous value.
    #[inline(always)]
    fn fetch_add_word<T: Word>(&mut self, addr: u64, v: T) -> Result<T> {
        self.word::<T, _>(addr, true, |a| T::fetch_add(a, v))
    }

    /// [`load_word`](Self::load_word) of a `u32`.
    #[inline(always)]
    fn load_u32(&mut self, addr: u64) -> Result<u32> {
        self.load_word(addr)
    }
    /// [`store_word`](Self::store_word) of a `u32`.
    #[inline(always)]
    fn store_u32(&mut self, addr: u64, v: u32) -> Result<()> {
        self.store_word(addr, v)
    }
    /// [`cmpxchg_word`](Self::cmpxchg_word) of a `u32`.
    #[inline(always)]
    fn cmpxchg_u32(&mut self, addr: u64, old: u32, new: u32) -> Result<std::result::Result<u32, u32>> {
        self.cmpxchg_word(addr, old, new)
    }
    /// [`fetch_add_word`](Self::fetch_add_word) of a `u32`.
    #[inline(always)]
    fn fetch_add_u32(&mut self, addr: u64, v: u32) -> Result<u32> {
        self.fetch_add_word(addr, v)
    }
    /// [`load_word`](Self::load_word) of a `u64`.
    #[inline(always)]
    fn load_u64(&mut self, addr: u64) -> Result<u64> {
        self.load_word(addr)
    }
    /// [`store_word`](Self::store_word) of a `u64`.
    #[inline(always)]
    fn store_u64(&mut self, addr: u64, v: u64) -> Result<()> {
        self.store_word(addr, v)
    }
    /// [`cmpxchg_word`](Self::cmpxchg_word) of a `u64`.
    #[inline(always)]
    fn cmpxchg_u64(&mut self, addr: u64, old: u64, new: u64) -> Result<std::result::Result<u64, u64>> {
        self.cmpxchg_word(addr, old, new)
    }
    /// [`fetch_add_word`](Self::fetch_add_word) of a `u64`.
    #[inline(always)]
    fn fetch_add_u64(&mut self, addr: u64, v: u64) -> Result<u64> {
        self.fetch_add_word(addr, v)
    }

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

impl WordAccess for Accessor {
    #[inline(always)]
    fn word<T: WordOps, R>(&mut self, addr: u64, write: bool, f: impl FnOnce(&T::Atomic) -> R) -> Result<R> {
        Accessor::word::<T::Atomic, R>(self, addr, write, f)
    }
}

impl GuestWords for Accessor {
    fn mm_id(&self) -> u64 {
        Accessor::mm_id(self)
    }
    fn futex_wait(&mut self, addr: u64, val: u32, timeout: Option<Duration>) -> Result<()> {
        Accessor::futex_wait(self, addr, val, timeout)
    }
    fn futex_wake(&mut self, addr: u64, n: u32) -> Result<u32> {
        Accessor::futex_wake(self, addr, n)
    }
    fn outside<R>(&mut self, f: impl FnOnce(&mut Accessor) -> R) -> R {
        f(self)
    }
}

impl WordAccess for Batch<'_> {
    #[inline(always)]
    fn word<T: WordOps, R>(&mut self, addr: u64, write: bool, f: impl FnOnce(&T::Atomic) -> R) -> Result<R> {
        Batch::word::<T::Atomic, R>(self, addr, write, f)
    }
}

impl GuestWords for Batch<'_> {
    fn mm_id(&self) -> u64 {
        Batch::mm_id(self)
    }
    fn futex_wait(&mut self, addr: u64, val: u32, timeout: Option<Duration>) -> Result<()> {
        Batch::futex_wait(self, addr, val, timeout)
    }
    fn futex_wake(&mut self, addr: u64, n: u32) -> Result<u32> {
        Batch::futex_wake(self, addr, n)
    }
    #[inline]
    fn relax(&mut self) {
        Batch::relax(self);
    }
    fn outside<R>(&mut self, f: impl FnOnce(&mut Accessor) -> R) -> R {
        Batch::outside(self, f)
    }
}
