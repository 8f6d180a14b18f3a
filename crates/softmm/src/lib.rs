//! softmm: a Linux-style memory manager in user space.
//!
//! softmm gives programs that host other programs (user-space kernels,
//! sandboxes, emulators, snapshot fuzzers) real address spaces over a pool of
//! real physical frames: four-level page tables, VMAs, demand-zero and
//! copy-on-write faults, fork, shared anonymous memory, smaps accounting,
//! and fast access through per-thread software TLBs.
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

pub mod access;
pub mod error;
mod few;
pub mod futex;
pub mod machine;
pub mod mm;
pub mod notifier;
pub mod pgtable;
pub mod phys;
pub mod pte;
pub mod reclaim;
pub mod rmap;
pub mod shm;
pub mod stats;
pub mod sync;
pub mod tlb;
mod vcache;
pub mod vma;

pub use access::{Accessor, Batch, BytesError, GuestWords, SharedAccessor, Word};
pub use error::{errno, Error, Result, SegvKind};
pub use futex::{FutexKeys, FutexWaiter};
pub use machine::{Config, Machine};
pub use mm::invariants::InvariantError;
pub use mm::{Advice, ForkPolicy, Mapping, Mm, PinnedPages, Placement};
pub use notifier::{IntervalNotifier, IntervalOps, MmuNotifier, Subscription};
pub use phys::{FrameId, PAGE_SIZE, ZERO_FRAME};
pub use reclaim::SwapConfig;
pub use stats::{MachineStats, Smaps};
pub use vma::{MapKind, Prot};
