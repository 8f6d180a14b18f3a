//! softmm: a Linux-style memory manager in user space.
//!
//! softmm gives programs that host other programs (user-space kernels,
//! sandboxes, emulators, snapshot fuzzers) real address spaces over a pool of
//! real physical frames: four-level page tables, VMAs, demand-zero and
//! copy-on-write faults, fork, shared anonymous memory, smaps accounting,
//! and fast access through per-thread software TLBs.
//!
//! # The API
//!
//! - [`Machine`], built from a [`Config`]: the frame arena, its limit and
//!   swap ([`SwapConfig`]; devices in [`reclaim::device`]), counters
//!   ([`MachineStats`]), futexes ([`FutexKeys`]).
//! - [`Mm`]: an address space. `mmap`/`munmap`/`mprotect`/`madvise`
//!   ([`MapKind`], [`Prot`], [`Placement`], [`Advice`]), `fork`
//!   ([`ForkPolicy`]), `read`/`write`, [`Mapping`] listings and [`Smaps`],
//!   pins ([`PinnedPages`]), invariant checks ([`InvariantError`]).
//! - Fast access: [`Accessor`] (one per thread, a software TLB), [`Batch`]
//!   (many accesses under one entry), [`GuestWords`] (atomic words),
//!   [`SharedAccessor`] and `vm-memory` ([`access`]).
//! - Files: [`File`] (`Machine::memfd`, `Machine::open_file`): an
//!   in-memory or host file with a page cache of arena frames.
//! - Futexes: [`FutexWaiter`], keys, wake-op and a guest mutex in
//!   [`futex`].
//! - Observers: [`MmuNotifier`] subscriptions ([`Subscription`]) and
//!   interval notifiers ([`IntervalNotifier`], [`IntervalOps`]) in
//!   [`notifier`].
//! - Errors: [`Error`] (each maps to a Linux errno, [`errno`]), [`Result`].
//!
//! # Examples
//!
//! ```
//! use softmm::{Config, GuestWords, Machine, MapKind, Placement, Prot};
//!
//! let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() })?;
//! let parent = machine.new_mm()?;
//! let base = parent.mmap(0x1000_0000, 64 << 10, Prot::RW, MapKind::Private, Placement::Fixed)?;
//! parent.write(base, b"hello")?;
//!
//! let child = parent.fork()?;                       // copy-on-write
//! assert_eq!(parent.phys(base), child.phys(base));  // one frame, two mappings
//! child.write(base, b"j")?;                         // breaks COW in the child
//! assert_ne!(parent.phys(base), child.phys(base));
//!
//! let mut buf = [0u8; 5];
//! parent.read(base, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//!
//! let mut acc = child.accessor();                   // per-thread fast path
//! assert_eq!(acc.load_u32(base)? & 0xff, u32::from(b'j'));
//! parent.check_invariants()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Through rust-vmm's `vm-memory`: [`Mm`] and [`SharedAccessor`] implement
//! [`vm_memory::Bytes`] (see [`access`] for the choices behind it).
//!
//! ```
//! use softmm::{Config, Machine, MapKind, Placement, Prot, SegvKind, SharedAccessor};
//! use std::sync::atomic::Ordering;
//! use vm_memory::{ByteValued, Bytes, GuestAddress};
//!
//! #[repr(C)]
//! #[derive(Clone, Copy, Default, Debug, PartialEq)]
//! struct Desc { addr: u64, len: u32, flags: u16, next: u16 }
//! // SAFETY: plain integers, no padding: every byte pattern is a value.
//! unsafe impl ByteValued for Desc {}
//!
//! let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() })?;
//! let mm = machine.new_mm()?;
//! let base = mm.mmap(0x1000_0000, 2 * 4096, Prot::RW, MapKind::Private, Placement::Fixed)?;
//! let mem = SharedAccessor::new(mm.accessor());          // or use `mm` itself
//! let d = Desc { addr: 0x2000, len: 512, flags: 1, next: 3 };
//! mem.write_obj(d, GuestAddress(base + 4090))?;          // across a page boundary
//! assert_eq!(mem.read_obj::<Desc>(GuestAddress(base + 4090))?, d);
//! mem.store(7u32, GuestAddress(base), Ordering::Release)?;
//! assert_eq!(mm.load::<u32>(GuestAddress(base), Ordering::Acquire)?, 7);
//!
//! let err = mem.read_obj::<Desc>(GuestAddress(base + 2 * 4096 - 4)).unwrap_err();
//! assert_eq!(err.completed(), 4);                        // the next page is not mapped
//! assert!(matches!(err.mm_error(), Some(softmm::Error::Segv { kind: SegvKind::MapErr, .. })));
//! assert_eq!(err.errno(), softmm::errno::EFAULT);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod access;
pub(crate) mod error;
mod few;
pub(crate) mod file;
pub mod futex;
pub(crate) mod machine;
pub(crate) mod mm;
pub mod notifier;
pub(crate) mod pgtable;
pub(crate) mod phys;
pub(crate) mod pte;
pub mod reclaim;
pub(crate) mod rmap;
pub(crate) mod shm;
mod snaplog;
pub(crate) mod stats;
pub(crate) mod sync;
pub(crate) mod tlb;
mod vcache;
pub(crate) mod vma;

pub use access::{Accessor, Batch, BytesError, GuestWords, SharedAccessor, Word};
pub use error::{errno, Error, Result, SegvKind};
pub use file::File;
pub use futex::{FutexKeys, FutexWaiter};
pub use machine::{Config, Machine};
pub use mm::invariants::InvariantError;
pub use mm::{
    Advice, ForkPolicy, MapFlags, Mapping, Mm, PageState, PinnedPages, Placement, RemapFlags, Snapshot, VmaInfo,
    MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, MS_ASYNC, MS_INVALIDATE, MS_SYNC,
};
pub use notifier::{IntervalNotifier, IntervalOps, MmuNotifier, Subscription};
pub use pgtable::TASK_SIZE;
pub use phys::{FrameId, PAGE_SIZE, ZERO_FRAME};
pub use reclaim::SwapConfig;
pub use stats::{MachineStats, Smaps};
pub use vma::{MapKind, Prot};

/// Internals for softmm's own tests and the `softmm` command. Unstable: no
/// part of the API, may change or go away in any release. Built only with
/// the `testing` feature.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::rmap::LOCK_KIND;
}
