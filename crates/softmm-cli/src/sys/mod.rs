//! The CLI's system calls: through `rustix` where it has them, else through
//! `libc` here, each `unsafe` block with its reason. Memory mappings are in
//! [`mem`] (the benchmarks' own regions) and [`trace_mem`] (the trace
//! worker's calls on trace addresses).
//!
//! The futex calls the bench times stay raw on purpose: they go through
//! libc's `syscall()`, the call every Linux program makes, so the Linux
//! figures time futex(2) as it is usually called.

pub mod filemap;
pub mod mem;
pub mod remap;
pub mod trace_mem;

use rustix::process::{Pid, WaitOptions, WaitStatus};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU32;

/// CLOCK_MONOTONIC in nanoseconds.
pub fn mono_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// The CPUs this thread may run on (empty if the kernel will not say).
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Pin the calling thread to `cpu`.
pub fn pin(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(io::Error::from)
}

/// The errno of the last failed libc call of this thread.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// futex(2) on `word` with no timeout: the raw return value (-1 and errno
/// on failure).
pub fn futex(word: &AtomicU32, op: i32, val: u32) -> i64 {
    futex_at(word.as_ptr() as u64, op, val)
}

/// futex(2) (FUTEX_WAIT or FUTEX_WAKE, no timeout) on the word at `addr`,
/// any address: the raw return value (-1 and errno on failure).
pub fn futex_at(addr: u64, op: i32, val: u32) -> i64 {
    // SAFETY: FUTEX_WAIT and FUTEX_WAKE only read the word at `addr`, in the
    // kernel, which answers a bad address with EFAULT; with no timeout and
    // no second word the remaining arguments are ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr as *const u32,
            op,
            val,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    }
}

/// This thread's id.
pub fn gettid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Send `sig` to thread `tid` of this process.
pub fn tgkill(tid: i32, sig: i32) {
    // SAFETY: tgkill takes plain integers; it signals a thread of this
    // process only (the thread group is our own pid).
    unsafe { libc::syscall(libc::SYS_tgkill, std::process::id() as libc::pid_t, tid, sig) };
}

/// SIGKILL process `pid` (ignored if it is gone).
pub fn kill(pid: i32) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// Reap `pid` if it has exited, without waiting.
pub fn reap_nohang(pid: i32) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(p), WaitOptions::NOHANG);
    }
}

/// Reap one exited child, without waiting; whether there was one.
pub fn reap_any_nohang() -> bool {
    matches!(rustix::process::wait(WaitOptions::NOHANG), Ok(Some(_)))
}

/// Wait for child `pid` to end: its wait status.
pub fn wait_for(pid: i32) -> io::Result<WaitStatus> {
    let p = Pid::from_raw(pid).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        match rustix::process::waitpid(Some(p), WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(status),
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Adopt the orphaned descendants of this process (PR_SET_CHILD_SUBREAPER).
pub fn become_subreaper() {
    let _ = rustix::process::set_child_subreaper(Pid::from_raw(std::process::id() as i32));
}

/// `POSIX_FADV_RANDOM` on a whole file: reads through this open file
/// bring in only the pages they read (no readahead).
pub fn fadvise_random(fd: &impl std::os::fd::AsFd) -> io::Result<()> {
    rustix::fs::fadvise(fd, 0, None, rustix::fs::Advice::Random).map_err(io::Error::from)
}

/// No transparent huge pages for this process from now on.
pub fn disable_thp() -> io::Result<()> {
    rustix::thread::disable_transparent_huge_pages(true).map_err(io::Error::from)
}

/// Let the kernel reap this process's exited children (SIGCHLD ignored).
pub fn ignore_sigchld() {
    // SAFETY: SIG_IGN is a valid disposition for SIGCHLD; no handler runs.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
}

/// End this process as SIGPIPE's default action does.
pub fn die_of_sigpipe() {
    // SAFETY: restoring the default disposition and raising the signal
    // touch no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
}

/// A signal handler as sigaction(2) takes it.
pub type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Install `handler` for `sig` with `flags` (SA_SIGINFO for a three-argument
/// handler).
pub fn set_handler(sig: i32, handler: Handler, flags: i32) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid one (empty mask, no restorer);
    // `handler` is an `extern "C"` function that lives as long as the
    // program, and sigaction copies the struct before it returns.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// End this process at once: no destructors, no atexit handlers, no stdio
/// flush (a forked child must not flush its parent's buffers).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// fork(2): `Some(pid)` in the parent, `None` in the child.
///
/// # Safety
/// The child of a multi-threaded process may only call async-signal-safe
/// functions (another thread may have held a lock, e.g. malloc's, at the
/// fork): callers are single-threaded or keep the child to such calls.
pub unsafe fn fork() -> io::Result<Option<i32>> {
    // SAFETY: the caller's contract above.
    match unsafe { libc::fork() } {
        pid if pid < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
}
