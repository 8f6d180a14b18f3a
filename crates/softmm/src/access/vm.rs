//! The memory in the vocabulary of rust-vmm: [`vm_memory::Bytes`] with
//! [`GuestAddress`] for [`Mm`] and for [`SharedAccessor`], so code written
//! against `Bytes` (`read_obj`, `write_obj`, `read_slice`, atomic `load` and
//! `store` with an [`Ordering`], volatile I/O) reads and writes softmm
//! memory unchanged.
//!
//! - [`Mm`] has no TLB: each page is faulted in and copied as
//!   [`Mm::read`] and [`Mm::write`] do; atomics go through a one-off
//!   [`Accessor`].
//! - An [`Accessor`] is the fast path, but its methods take `&mut self` (a
//!   hit updates nothing, a miss fills its TLB), while `Bytes` takes
//!   `&self`. [`SharedAccessor`] owns one in a `RefCell` and borrows it for
//!   each call: the accessor is one thread's anyway (the wrapper is not
//!   `Sync`), the borrow costs a flag check, and the hot word path of the
//!   accessor itself stays as it is. A call that re-enters the same
//!   wrapper from inside its own fault (an MMU notifier callback reaching
//!   it through a thread-local) gets `Busy`, never a panic.
//!
//! Copies go page by page, so an error says exactly how far they got
//! ([`BytesError::completed`]). `read` and `write` return a short count when
//! a fault stops them after the first byte, as `Bytes` documents; the
//! `_slice`, `_obj` and `_exact`/`_all` forms fail instead. Volatile I/O
//! copies through a page-sized bounce buffer: softmm never runs a blocking
//! host call with a translation held (a TLB shootdown would wait for it).
//! Before it takes bytes from a host reader, it checks that the
//! destination page is writable, so a refused page loses no input (only a
//! concurrent munmap between the check and the copy can).

use super::Accessor;
use crate::error::{errno, Error, Result};
use crate::mm::Mm;
use crate::phys::PAGE_SIZE;
use std::cell::RefCell;
use std::sync::atomic::Ordering;
use vm_memory::{
    AtomicAccess, AtomicInteger, Bytes, GuestAddress, ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile,
};

/// The error of the [`Bytes`] implementations: what failed, and how many
/// bytes were transferred before it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BytesError {
    /// softmm refused the access: a `Segv` (no mapping, or a protection
    /// that forbids it) names the first byte not transferred; `Misaligned`
    /// is an atomic at an address that is not a multiple of its size;
    /// `Invalid` an ordering the operation cannot have (`Release` for a
    /// load, `Acquire` for a store).
    #[error("{error} ({completed} bytes transferred before it)")]
    Mm {
        /// What the address space answered.
        #[source]
        error: Error,
        /// Bytes transferred before the error.
        completed: usize,
    },
    /// The host reader or writer of a volatile transfer failed.
    #[error("host I/O failed after {completed} bytes: {error}")]
    Io {
        /// What the host reader or writer answered.
        #[source]
        error: VolatileMemoryError,
        /// Bytes transferred before the error.
        completed: usize,
    },
    /// The host reader ended, or the host writer took nothing, before an
    /// `_exact`/`_all` transfer was complete.
    #[error("the host object stopped after {completed} of {expected} bytes")]
    Short {
        /// Bytes transferred.
        completed: usize,
        /// Bytes asked for.
        expected: usize,
    },
}

impl BytesError {
    /// Bytes transferred before the error.
    pub fn completed(&self) -> usize {
        match *self {
            BytesError::Mm { completed, .. }
            | BytesError::Io { completed, .. }
            | BytesError::Short { completed, .. } => completed,
        }
    }

    /// The softmm error, if softmm refused the access.
    pub fn mm_error(&self) -> Option<&Error> {
        match self {
            BytesError::Mm { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The errno Linux would return: the softmm error's (`EFAULT` for a
    /// segv), the host's for I/O, `EIO` for a short transfer.
    pub fn errno(&self) -> i32 {
        match self {
            BytesError::Mm { error, .. } => error.errno(),
            BytesError::Io { error: VolatileMemoryError::IOError(e), .. } => e.raw_os_error().unwrap_or(errno::EIO),
            BytesError::Io { .. } | BytesError::Short { .. } => errno::EIO,
        }
    }
}

fn mm_err(error: Error, completed: usize) -> BytesError {
    BytesError::Mm { error, completed }
}

/// An [`Accessor`] usable through `&self`, for [`Bytes`]; see the module
/// documentation for why it is a wrapper. One thread's, like the accessor.
///
/// ```
/// use softmm::{Config, Machine, MapKind, Placement, Prot, SharedAccessor};
/// use std::sync::atomic::Ordering;
/// use vm_memory::{Bytes, GuestAddress};
///
/// let machine = Machine::new(Config { arena_bytes: 16 << 20, ..Config::default() })?;
/// let mm = machine.new_mm()?;
/// let base = mm.mmap(0x1000_0000, 2 * 4096, Prot::RW, MapKind::Private, Placement::Fixed)?;
/// let mem = SharedAccessor::new(mm.accessor());
/// mem.write_obj(0x1122_3344_5566_7788u64, GuestAddress(base + 4092))?; // across a page boundary
/// assert_eq!(mem.read_obj::<u64>(GuestAddress(base + 4092))?, 0x1122_3344_5566_7788);
/// mem.store(5u32, GuestAddress(base), Ordering::SeqCst)?;
/// assert_eq!(mem.load::<u32>(GuestAddress(base), Ordering::Acquire)?, 5);
/// let err = mem.read_obj::<u32>(GuestAddress(base + 2 * 4096 - 2)).unwrap_err();
/// assert_eq!(err.completed(), 2); // the first page's two bytes; the next page is unmapped
/// assert_eq!(err.errno(), softmm::errno::EFAULT);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedAccessor {
    acc: RefCell<Accessor>,
}

impl SharedAccessor {
    /// Wrap `acc`.
    pub fn new(acc: Accessor) -> SharedAccessor {
        SharedAccessor { acc: RefCell::new(acc) }
    }

    /// The accessor back.
    pub fn into_inner(self) -> Accessor {
        self.acc.into_inner()
    }

    /// `f` on the accessor; `Busy` if a call of this wrapper is already
    /// running on this thread (re-entered from a callback of its fault).
    fn with<R>(&self, f: impl FnOnce(&mut Accessor) -> Result<R>) -> Result<R> {
        let mut acc =
            self.acc.try_borrow_mut().map_err(|_| Error::Busy("shared accessor re-entered from its own fault"))?;
        f(&mut acc)
    }
}

impl From<Accessor> for SharedAccessor {
    fn from(acc: Accessor) -> SharedAccessor {
        SharedAccessor::new(acc)
    }
}

impl std::fmt::Debug for SharedAccessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.acc.try_borrow() {
            Ok(acc) => write!(f, "SharedAccessor({acc:?})"),
            Err(_) => f.write_str("SharedAccessor(in use)"),
        }
    }
}

/// What the [`Bytes`] implementations are built on: copies within one
/// page, and an atomic on an aligned word.
trait Pages {
    fn read_page(&self, va: u64, out: &mut [u8]) -> Result<()>;
    fn write_page(&self, va: u64, data: &[u8]) -> Result<()>;
    fn atomic<A: AtomicInteger, R>(&self, va: u64, write: bool, f: impl FnOnce(&A) -> R) -> Result<R>;

    /// Whether a write to the page of `va` would succeed (faulting it in
    /// and breaking COW): an atomic add of zero to its byte, which needs
    /// write access and changes nothing.
    fn probe_write(&self, va: u64) -> Result<()> {
        self.atomic(va, true, |b: &std::sync::atomic::AtomicU8| b.fetch_add(0, Ordering::Relaxed)).map(drop)
    }
}

impl Pages for Mm {
    fn read_page(&self, va: u64, out: &mut [u8]) -> Result<()> {
        self.read(va, out)
    }
    fn write_page(&self, va: u64, data: &[u8]) -> Result<()> {
        self.write(va, data)
    }
    fn atomic<A: AtomicInteger, R>(&self, va: u64, write: bool, f: impl FnOnce(&A) -> R) -> Result<R> {
        // `AtomicInteger` is an unsafe trait whose implementors are std
        // atomics, which is what `word` casts guest memory to.
        self.accessor().word::<A, R>(va, write, f)
    }
}

impl Pages for SharedAccessor {
    fn read_page(&self, va: u64, out: &mut [u8]) -> Result<()> {
        self.with(|a| a.read(va, out))
    }
    fn write_page(&self, va: u64, data: &[u8]) -> Result<()> {
        self.with(|a| a.write(va, data))
    }
    fn atomic<A: AtomicInteger, R>(&self, va: u64, write: bool, f: impl FnOnce(&A) -> R) -> Result<R> {
        // As for `Mm`: `A` is a std atomic.
        self.with(|a| a.word::<A, R>(va, write, f))
    }
}

/// The pieces of `[addr, addr + len)` that lie in one page each, as
/// `(guest address, offset in the buffer, length)`; a range that wraps the
/// address space ends in a `Segv` at the first byte past the top.
fn pieces(addr: u64, len: usize) -> impl Iterator<Item = std::result::Result<(u64, usize, usize), BytesError>> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let Some(va) = addr.checked_add(done as u64) else {
            let completed = std::mem::replace(&mut done, len);
            return Some(Err(mm_err(Error::Segv { addr: u64::MAX, kind: crate::SegvKind::MapErr }, completed)));
        };
        let room = PAGE_SIZE - (va % PAGE_SIZE as u64) as usize;
        let n = room.min(len - done);
        let piece = (va, done, n);
        done += n;
        Some(Ok(piece))
    })
}

/// Copy guest memory at `addr` into `buf` page by page; on an error, how
/// many bytes were copied.
fn copy_out(m: &impl Pages, addr: u64, buf: &mut [u8]) -> std::result::Result<(), BytesError> {
    for piece in pieces(addr, buf.len()) {
        let (va, lo, n) = piece?;
        m.read_page(va, &mut buf[lo..lo + n]).map_err(|e| mm_err(e, lo))?;
    }
    Ok(())
}

/// Copy `data` to guest memory at `addr` page by page.
fn copy_in(m: &impl Pages, addr: u64, data: &[u8]) -> std::result::Result<(), BytesError> {
    for piece in pieces(addr, data.len()) {
        let (va, lo, n) = piece?;
        m.write_page(va, &data[lo..lo + n]).map_err(|e| mm_err(e, lo))?;
    }
    Ok(())
}

/// `Ok(count)` for a copy that a fault stopped after `count > 0` bytes:
/// the partial-transfer convention of `Bytes::read` and `Bytes::write`.
fn partial(r: std::result::Result<(), BytesError>, len: usize) -> std::result::Result<usize, BytesError> {
    match r {
        Ok(()) => Ok(len),
        Err(BytesError::Mm { completed, .. }) if completed > 0 => Ok(completed),
        Err(e) => Err(e),
    }
}

fn check_load_order(order: Ordering) -> Result<()> {
    match order {
        Ordering::Release | Ordering::AcqRel => Err(Error::Invalid("an atomic load cannot have Release ordering")),
        _ => Ok(()),
    }
}

fn check_store_order(order: Ordering) -> Result<()> {
    match order {
        Ordering::Acquire | Ordering::AcqRel => Err(Error::Invalid("an atomic store cannot have Acquire ordering")),
        _ => Ok(()),
    }
}

fn load<T: AtomicAccess>(m: &impl Pages, addr: u64, order: Ordering) -> std::result::Result<T, BytesError> {
    check_load_order(order).map_err(|e| mm_err(e, 0))?;
    m.atomic(addr, false, |a: &T::A| T::from(a.load(order))).map_err(|e| mm_err(e, 0))
}

fn store<T: AtomicAccess>(m: &impl Pages, val: T, addr: u64, order: Ordering) -> std::result::Result<(), BytesError> {
    check_store_order(order).map_err(|e| mm_err(e, 0))?;
    m.atomic(addr, true, |a: &T::A| a.store(val.into(), order)).map_err(|e| mm_err(e, 0))
}

/// Retry `f` while it fails with `EINTR`, as `Bytes` promises.
fn retry<R>(
    mut f: impl FnMut() -> std::result::Result<R, VolatileMemoryError>,
) -> std::result::Result<R, VolatileMemoryError> {
    loop {
        match f() {
            Err(VolatileMemoryError::IOError(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Up to `count` bytes from `src` into guest memory at `addr`, a page at a
/// time; stops early when `src` gives fewer bytes than asked.
fn read_from<F: ReadVolatile>(
    m: &impl Pages,
    addr: u64,
    src: &mut F,
    count: usize,
) -> std::result::Result<usize, BytesError> {
    let mut bounce = [0u8; PAGE_SIZE];
    let mut done = 0;
    for piece in pieces(addr, count) {
        let (va, lo, n) = piece?;
        if let Err(e) = m.probe_write(va) {
            return partial(Err(mm_err(e, lo)), count);
        }
        let buf = &mut bounce[..n];
        let got = retry(|| src.read_volatile(&mut VolatileSlice::from(&mut *buf)))
            .map_err(|error| BytesError::Io { error, completed: done })?;
        m.write_page(va, &bounce[..got]).map_err(|e| mm_err(e, done))?;
        done += got;
        if got < n {
            break;
        }
    }
    Ok(done)
}

/// Up to `count` bytes of guest memory at `addr` into `dst`, a page at a
/// time; stops early when `dst` takes fewer bytes than offered.
fn write_to<F: WriteVolatile>(
    m: &impl Pages,
    addr: u64,
    dst: &mut F,
    count: usize,
) -> std::result::Result<usize, BytesError> {
    let mut bounce = [0u8; PAGE_SIZE];
    let mut done = 0;
    for piece in pieces(addr, count) {
        let (va, lo, n) = piece?;
        if let Err(e) = m.read_page(va, &mut bounce[..n]) {
            return partial(Err(mm_err(e, lo)), count);
        }
        let buf = &mut bounce[..n];
        let put = retry(|| dst.write_volatile(&VolatileSlice::from(&mut *buf)))
            .map_err(|error| BytesError::Io { error, completed: done })?;
        done += put;
        if put < n {
            break;
        }
    }
    Ok(done)
}

/// `step(done)` until `expected` bytes moved; a step that moves nothing is
/// a short transfer.
fn exact(
    expected: usize,
    mut step: impl FnMut(usize) -> std::result::Result<usize, BytesError>,
) -> std::result::Result<(), BytesError> {
    let mut done = 0;
    while done < expected {
        match step(done) {
            Ok(0) => return Err(BytesError::Short { completed: done, expected }),
            Ok(n) => done += n,
            Err(BytesError::Mm { error, completed }) => return Err(mm_err(error, done + completed)),
            Err(BytesError::Io { error, completed }) => {
                return Err(BytesError::Io { error, completed: done + completed })
            }
            Err(BytesError::Short { .. }) => return Err(BytesError::Short { completed: done, expected }),
        }
    }
    Ok(())
}

/// `Bytes<GuestAddress>` for a type that implements `Pages`.
macro_rules! bytes_via_pages {
    ($t:ty) => {
        impl Bytes<GuestAddress> for $t {
            type E = BytesError;

            fn write(&self, buf: &[u8], addr: GuestAddress) -> std::result::Result<usize, BytesError> {
                partial(copy_in(self, addr.0, buf), buf.len())
            }

            fn read(&self, buf: &mut [u8], addr: GuestAddress) -> std::result::Result<usize, BytesError> {
                let len = buf.len();
                partial(copy_out(self, addr.0, buf), len)
            }

            fn write_slice(&self, buf: &[u8], addr: GuestAddress) -> std::result::Result<(), BytesError> {
                copy_in(self, addr.0, buf)
            }

            fn read_slice(&self, buf: &mut [u8], addr: GuestAddress) -> std::result::Result<(), BytesError> {
                copy_out(self, addr.0, buf)
            }

            fn read_volatile_from<F: ReadVolatile>(
                &self,
                addr: GuestAddress,
                src: &mut F,
                count: usize,
            ) -> std::result::Result<usize, BytesError> {
                read_from(self, addr.0, src, count)
            }

            fn read_exact_volatile_from<F: ReadVolatile>(
                &self,
                addr: GuestAddress,
                src: &mut F,
                count: usize,
            ) -> std::result::Result<(), BytesError> {
                exact(count, |done| read_from(self, addr.0.wrapping_add(done as u64), src, count - done))
            }

            fn write_volatile_to<F: WriteVolatile>(
                &self,
                addr: GuestAddress,
                dst: &mut F,
                count: usize,
            ) -> std::result::Result<usize, BytesError> {
                write_to(self, addr.0, dst, count)
            }

            fn write_all_volatile_to<F: WriteVolatile>(
                &self,
                addr: GuestAddress,
                dst: &mut F,
                count: usize,
            ) -> std::result::Result<(), BytesError> {
                exact(count, |done| write_to(self, addr.0.wrapping_add(done as u64), dst, count - done))
            }

            fn store<T: AtomicAccess>(
                &self,
                val: T,
                addr: GuestAddress,
                order: Ordering,
            ) -> std::result::Result<(), BytesError> {
                store(self, val, addr.0, order)
            }

            fn load<T: AtomicAccess>(&self, addr: GuestAddress, order: Ordering) -> std::result::Result<T, BytesError> {
                load(self, addr.0, order)
            }
        }
    };
}

bytes_via_pages!(Mm);
bytes_via_pages!(SharedAccessor);
