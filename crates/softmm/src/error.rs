//! The one error type of softmm, with its mapping to Linux errno values.
//!
//! Every public operation returns [`Result`]. Variants say what was wrong in
//! terms a caller can act on; [`Error::errno`] gives the value Linux returns for
//! the same mistake, so hosts that emulate system calls can pass it through.

use std::fmt;

/// Why an access faulted, as `si_code` of a SIGSEGV would say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegvKind {
    /// No mapping covers the address (`SEGV_MAPERR`).
    MapErr,
    /// A mapping covers it but its protection forbids the access (`SEGV_ACCERR`).
    AccErr,
}

impl fmt::Display for SegvKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SegvKind::MapErr => "maperr",
            SegvKind::AccErr => "accerr",
        })
    }
}

/// Errors of softmm operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address that must be page-aligned is not (`EINVAL`).
    #[error("{what} {value:#x} is not page-aligned")]
    Misaligned {
        /// The argument (`"addr"`, `"len"`, ...).
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A length of zero where the operation needs at least one byte (`EINVAL`).
    #[error("length is zero")]
    ZeroLength,
    /// A range wraps around or leaves the user address space (`EINVAL` or
    /// `ENOMEM`, as Linux answers for the operation; see `errno`).
    #[error("range {addr:#x}+{len:#x} is outside the user address space")]
    OutOfRange {
        /// Start of the range.
        addr: u64,
        /// Its length in bytes.
        len: u64,
        /// The errno Linux answers with for this operation.
        errno: i32,
    },
    /// An argument that is not one of the accepted values (`EINVAL`).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// A fixed mapping below the lowest address Linux lets a process map (`EPERM`).
    #[error("address {addr:#x} is below mmap_min_addr {min:#x}")]
    BelowMinAddr {
        /// The address asked for.
        addr: u64,
        /// The lowest address that may be mapped.
        min: u64,
    },
    /// `MAP_FIXED_NOREPLACE` over an existing mapping (`EEXIST`).
    #[error("range {addr:#x}+{len:#x} overlaps an existing mapping")]
    Exists {
        /// Start of the range.
        addr: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// Part of the range is not mapped (`ENOMEM`, as mprotect and madvise say).
    #[error("range {addr:#x}+{len:#x} is not fully mapped")]
    NotMapped {
        /// Start of the range.
        addr: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// No physical frame or no address range is left (`ENOMEM`).
    #[error("out of memory: {0}")]
    NoMemory(&'static str),
    /// An address the operation cannot touch (`EFAULT`).
    #[error("bad address {addr:#x}")]
    Fault {
        /// The address.
        addr: u64,
    },
    /// An access that a CPU would turn into SIGSEGV.
    #[error("segmentation fault at {addr:#x} ({kind})")]
    Segv {
        /// The faulting address.
        addr: u64,
        /// Unmapped or not permitted (`si_code`).
        kind: SegvKind,
    },
    /// An access that a CPU would turn into SIGBUS: the page is wholly past
    /// the end of the file the mapping maps (`EFAULT` for a system call).
    #[error("bus error at {addr:#x}: past the end of the mapped file")]
    Bus {
        /// The faulting address.
        addr: u64,
    },
    /// The address space has exited.
    #[error("the address space has exited")]
    Exited,
    /// The futex word does not hold the expected value (`EAGAIN`).
    #[error("the futex word does not hold the expected value")]
    Again,

    /// The range could not be locked now (`EAGAIN`): mlock found no
    /// memory to fault it in.
    #[error("cannot lock the range now: {0}")]
    LockFailed(&'static str),
    /// A futex wait reached its deadline (`ETIMEDOUT`).
    #[error("the futex wait timed out")]
    TimedOut,
    /// A futex wait was cancelled (`EINTR`).
    #[error("the futex wait was cancelled")]
    Interrupted,
    /// A PI futex lock by the thread that owns it already (`EDEADLK`).
    #[error("the calling thread already owns this PI futex")]
    Deadlock,
    /// A PI futex unlock by a thread that does not own it (`EPERM`).
    #[error("the calling thread does not own this PI futex")]
    NotOwner,
    /// The mapping does not allow the operation (`EACCES`): a hole punch
    /// through a private mapping of a file.
    #[error("permission denied: {0}")]
    Denied(&'static str),
    /// An operation or argument value softmm does not implement, as Linux
    /// answers for unknown ones (`ENOSYS`).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// The swap device failed to give back a page (the access that needed
    /// it gets this, like a SIGBUS; nothing wrong is ever mapped).
    #[error("I/O error on the swap device at {addr:#x}: {what}")]
    Io {
        /// The address whose page could not be read back.
        addr: u64,
        /// The device's error.
        what: String,
    },
    /// The swap device is full or refused a write.
    #[error("swap device full or failing: {0}")]
    SwapFull(String),
    /// The frame is in use in a way that forbids the operation now (it is
    /// locked by reclaim or migration, pinned, or held by a futex waiter).
    #[error("frame busy: {0}")]
    Busy(&'static str),
    /// The host refused an operation softmm needed from it (shown with the
    /// host's words for `errno`).
    #[error("host error in {what}: {}", std::io::Error::from_raw_os_error(*errno))]
    Host {
        /// The host call.
        what: &'static str,
        /// The host's errno.
        errno: i32,
    },
    /// The swap file could not be set up; `what` names it and says why.
    #[error("{what}")]
    SwapFile {
        /// The file and what went wrong.
        what: String,
        /// The host's errno.
        errno: i32,
    },
    /// A host file's read, write or truncation failed (the host's `errno`,
    /// `EIO` when it gave none); `what` names the file and the offset.
    #[error("file I/O error: {what}")]
    FileIo {
        /// The file, the operation and the host's words.
        what: String,
        /// The host's errno.
        errno: i32,
    },
    /// A file offset plus length past the largest file offset (`EOVERFLOW`).
    #[error("value too large: {0}")]
    Overflow(&'static str),
    /// A file would grow past the largest size Linux allows (`EFBIG`).
    #[error("file too large")]
    FileTooBig,
    /// No frame is left under the frame limit and none can be freed because
    /// the swap device, which `device` describes, is full: Linux would OOM
    /// (`ENOMEM`).
    #[error("out of memory: frame limit reached and no space left on swap device {device}")]
    SwapExhausted {
        /// The swap device, as it describes itself.
        device: String,
    },
}

/// Linux errno values used by softmm.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// Interrupted (a cancelled futex wait).
    pub const EINTR: i32 = 4;
    /// I/O error (the swap device failed).
    pub const EIO: i32 = 5;
    /// Permission denied.
    pub const EACCES: i32 = 13;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File too large.
    pub const EFBIG: i32 = 27;
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
    /// Try again (the futex word changed).
    pub const EAGAIN: i32 = 11;
    /// Out of memory, or a range not (fully) mapped.
    pub const ENOMEM: i32 = 12;
    /// Bad address.
    pub const EFAULT: i32 = 14;
    /// The range is already mapped.
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Resource deadlock would occur (a PI futex's owner locks it again).
    pub const EDEADLK: i32 = 35;
    /// Not implemented.
    pub const ENOSYS: i32 = 38;
    /// Value too large for the data type (a file offset).
    pub const EOVERFLOW: i32 = 75;
    /// A futex wait timed out.
    pub const ETIMEDOUT: i32 = 110;

    /// The symbolic name of an errno value, as traces print it.
    pub fn name(e: i32) -> &'static str {
        match e {
            EPERM => "EPERM",
            EINTR => "EINTR",
            EIO => "EIO",
            EACCES => "EACCES",
            EBUSY => "EBUSY",
            EFBIG => "EFBIG",
            ENOSPC => "ENOSPC",
            EAGAIN => "EAGAIN",
            ENOMEM => "ENOMEM",
            EFAULT => "EFAULT",
            EEXIST => "EEXIST",
            EINVAL => "EINVAL",
            EDEADLK => "EDEADLK",
            ENOSYS => "ENOSYS",
            EOVERFLOW => "EOVERFLOW",
            ETIMEDOUT => "ETIMEDOUT",
            _ => "EUNKNOWN",
        }
    }
}

impl Error {
    /// The errno Linux returns for the same condition. `Segv` has no errno in
    /// Linux (it is a signal); it maps to `EFAULT`, what a system call touching
    /// the same address would return.
    pub fn errno(&self) -> i32 {
        use errno::*;
        match self {
            Error::Misaligned { .. } | Error::ZeroLength | Error::Invalid(_) => EINVAL,
            Error::OutOfRange { errno, .. } => *errno,
            Error::BelowMinAddr { .. } => EPERM,
            Error::Exists { .. } => EEXIST,
            Error::NotMapped { .. } | Error::NoMemory(_) => ENOMEM,
            Error::Fault { .. } | Error::Segv { .. } | Error::Bus { .. } | Error::Exited => EFAULT,
            Error::Host { errno, .. } | Error::SwapFile { errno, .. } | Error::FileIo { errno, .. } => *errno,
            Error::FileTooBig => EFBIG,
            Error::Overflow(_) => EOVERFLOW,
            Error::SwapExhausted { .. } => ENOMEM,
            Error::Again | Error::LockFailed(_) => EAGAIN,
            Error::TimedOut => ETIMEDOUT,
            Error::Interrupted => EINTR,
            Error::Deadlock => EDEADLK,
            Error::NotOwner => EPERM,
            Error::Denied(_) => EACCES,
            Error::Unsupported(_) => ENOSYS,
            Error::Io { .. } => EIO,
            Error::SwapFull(_) => ENOSPC,
            Error::Busy(_) => EBUSY,
        }
    }

    /// The errno's symbolic name (`"EINVAL"`).
    pub fn errno_name(&self) -> &'static str {
        errno::name(self.errno())
    }
}

/// Result of softmm operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_say_the_host_words() {
        let e = Error::Host { what: "creating the swap file", errno: errno::EEXIST };
        let shown = e.to_string();
        let words = std::io::Error::from_raw_os_error(errno::EEXIST).to_string();
        assert_eq!(shown, format!("host error in creating the swap file: {words}"));
        assert!(words.contains("os error 17"), "{words}");
        assert_eq!(e.errno(), errno::EEXIST);
    }
}
