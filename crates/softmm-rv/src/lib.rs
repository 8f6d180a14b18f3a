//! softmm-rv: a RISC-V 64-bit Linux user-mode machine over softmm.
//!
//! A static riscv64 executable (ET_EXEC or static-PIE) is loaded into a
//! softmm address space ([`loader`], [`elf`]) with the initial stack Linux
//! builds. Each guest thread is a host thread with its own hart ([`hart`]),
//! which interprets RV64GC, fetching, loading and storing through its own
//! softmm accessor ([`mem`]), with LR/SC and AMOs as host atomics, and
//! keeps what it decoded per page as handler ops that run one after
//! another ([`icache`], [`threaded`]; invalidated through softmm's MMU
//! notifiers). `ecall`s go to a Linux system-call layer
//! ([`syscall`]): memory calls are softmm's, threads and processes
//! ([`task`], [`thread`], [`fork`], [`mod@exec`]) map onto softmm spaces
//! (threads share one `Mm`, fork is `Mm::fork`), futexes are softmm's,
//! signals are delivered with Linux's riscv64 frame ([`deliver`],
//! [`sigframe`]), and file calls reach host files ([`files`]), which can be mapped
//! ([`mapped`]), except `/proc/PID/maps`, `smaps` and `pagemap`, which
//! the machine generates from softmm's view ([`mod@proc`]). A guest
//! fault is a value ([`mem::GuestFault`]) that becomes a signal, never a
//! host panic; a host panic in a guest thread ends the guest process.
//!
//! ```no_run
//! use softmm_rv::{exec, ExecOptions};
//! use std::path::Path;
//!
//! let exit = exec(Path::new("hello.riscv"), ExecOptions::new(Path::new("hello.riscv")))?;
//! std::process::exit(exit.status);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod decode;
pub mod deliver;
pub mod elf;
pub mod errno;
pub mod exec;
pub mod files;
pub mod fork;
pub mod fpu;
mod futex;
pub mod hart;
pub mod icache;
pub mod io;
pub mod loader;
pub mod mapped;
pub mod mem;
pub mod proc;
pub mod process;
pub mod server;
pub mod sigframe;
pub mod signal;
pub mod syscall;
pub mod sysv;
pub mod task;
pub mod thread;
pub mod threaded;

pub use process::{exec, report, ExecError, ExecOptions, ExitInfo};
