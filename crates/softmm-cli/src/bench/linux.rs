//! The Linux side of the benchmarks: the same work done by this process on
//! the kernel it runs on, with `mmap`, volatile stores, `fork` and `waitpid`.
//!
//! Every region is mapped `MAP_PRIVATE | MAP_ANONYMOUS` and advised
//! `MADV_NOHUGEPAGE`, so each fault is a 4 KiB fault as in softmm, whatever
//! the host's transparent-huge-page setting (the memcpy baseline of the read
//! bench asks for huge pages instead, like softmm's arena, see `read`).
//!
//! `fork` is only called while this process has a single thread (the
//! benchmarks start none), so the child may run any code; it runs only
//! volatile stores, `clock_gettime`, `write` and `_exit` all the same.

use super::Keep;
use crate::error::{io_error, CliError, CliResult};
use crate::sys;

pub use crate::sys::mem::Region;

/// A [`Region`] of `len` bytes (a multiple of the page size), nothing
/// touched, advised for huge pages if `huge`, else against them.
pub fn region(len: u64, huge: bool) -> CliResult<Region> {
    let n = usize::try_from(len).map_err(|_| CliError(format!("size {len} does not fit the host")))?;
    Region::new(n, huge).map_err(|e| io_error(&format!("mmap of {}", crate::units::bytes(len)), e))
}

pub use crate::sys::mono_ns;

/// Demand-zero faults on recycled memory: touch and unmap `size` once, then
/// per repetition map `size`, time the touch of every page, unmap.
pub fn fault_warm(size: u64, reps: usize) -> CliResult<Vec<f64>> {
    region(size, false)?.touch(1);
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut r = region(size, false)?;
        let t0 = mono_ns();
        r.touch(1);
        let t1 = mono_ns();
        out.push((t1 - t0) as f64 / r.pages() as f64);
    }
    Ok(out)
}

/// Demand-zero faults on fresh memory: per repetition a new mapping, never
/// touched before; it is kept mapped (in `keep`) so that the next repetition
/// cannot get its frames back.
pub fn fault_cold(size: u64, reps: usize, keep: &mut Keep) -> CliResult<Vec<f64>> {
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut r = region(size, false)?;
        let t0 = mono_ns();
        r.touch(1);
        let t1 = mono_ns();
        out.push((t1 - t0) as f64 / r.pages() as f64);
        keep.hold(r);
    }
    Ok(out)
}

/// One COW measurement: write every page of a fresh region, optionally warm
/// (map, touch and unmap another region of the same size, so that the
/// kernel's free lists hold that many recently used frames), fork; the child
/// times its own write to every page and reports the nanoseconds per page.
fn cow_once(size: u64, warm: bool) -> CliResult<(f64, Region)> {
    let mut a = region(size, false)?;
    a.touch(1);
    if warm {
        region(size, false)?.touch(1);
    }
    let ns = fork_timing_child_writes(&mut a, 1)?;
    Ok((ns as f64 / a.pages() as f64, a))
}

/// COW faults into recycled frames: one discarded run, then `reps` runs.
pub fn cow_warm(size: u64, reps: usize) -> CliResult<Vec<f64>> {
    cow_once(size, true)?;
    (0..reps).map(|_| cow_once(size, true).map(|(ns, _)| ns)).collect()
}

/// COW faults into fresh frames; each run's parent region is kept mapped.
pub fn cow_cold(size: u64, reps: usize, keep: &mut Keep) -> CliResult<Vec<f64>> {
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (ns, a) = cow_once(size, false)?;
        out.push(ns);
        keep.hold(a);
    }
    Ok(out)
}

/// What the fork bench measures on Linux at one resident size.
pub struct ForkFigures {
    /// The first fork after the region was written (one sample; it also
    /// write-protects every PTE of the parent).
    pub first: f64,
    /// Later forks of the same process, ns per fork call.
    pub warm: Vec<f64>,
    /// With `detail`: ns per first write of the child into each 2 MiB of the
    /// region (one page per 2 MiB, each a COW fault).
    pub first_write: Option<Vec<f64>>,
    /// With `detail`: ns from just before `fork()` to `waitpid` returning,
    /// the child writing one page in every `EXIT_STRIDE` and exiting.
    pub fork_exit: Option<Vec<f64>>,
}

/// Pages per 2 MiB (one PTE table).
const PAGES_PER_TABLE: u64 = 512;

/// fork of a process with `size` resident (every page written): the first
/// fork (recorded apart), then `reps` timed forks of the same process. With
/// `detail`, also the child's first writes (one page per 2 MiB) and fork +
/// child writing every `exit_stride`-th page + exit + wait, each after one
/// discarded run.
pub fn fork_size(size: u64, reps: usize, detail: bool, exit_stride: u64) -> CliResult<ForkFigures> {
    let mut a = region(size, false)?;
    a.touch(1);
    let first = fork_once()? as f64;
    let warm = (0..reps).map(|_| fork_once().map(|ns| ns as f64)).collect::<CliResult<Vec<f64>>>()?;
    let (mut first_write, mut fork_exit) = (None, None);
    if detail {
        let writes = a.pages().div_ceil(PAGES_PER_TABLE) as f64;
        fork_timing_child_writes(&mut a, PAGES_PER_TABLE)?;
        let mut fw = Vec::with_capacity(reps);
        for _ in 0..reps {
            fw.push(fork_timing_child_writes(&mut a, PAGES_PER_TABLE)? as f64 / writes);
        }
        first_write = Some(fw);
        fork_write_exit(&mut a, exit_stride)?;
        fork_exit = Some(
            (0..reps).map(|_| fork_write_exit(&mut a, exit_stride).map(|ns| ns as f64)).collect::<CliResult<_>>()?,
        );
    }
    Ok(ForkFigures { first, warm, first_write, fork_exit })
}

/// Time from just before `fork()` until `waitpid` has reaped the child,
/// which writes one byte to every `stride`-th page of `a` (COW faults) and
/// `_exit`s (tearing its copy of the address space down).
fn fork_write_exit(a: &mut Region, stride: u64) -> CliResult<u64> {
    let t0 = mono_ns();
    // SAFETY: single-threaded process (module comment); the child only does
    // volatile stores into its copy of `a` and exits at once.
    let Some(pid) = (unsafe { sys::fork() }).map_err(|e| io_error("fork", e))? else {
        a.touch_every(2, stride);
        sys::exit_now(0)
    };
    reap(pid)?;
    Ok(mono_ns() - t0)
}

/// Time `fork()` in the parent, from just before the call to just after it
/// returns there; the child exits at once.
fn fork_once() -> CliResult<u64> {
    let t0 = mono_ns();
    // SAFETY: this process is single-threaded (see the module comment); the
    // child only exits.
    let pid = unsafe { sys::fork() };
    let t1 = mono_ns();
    let Some(pid) = pid.map_err(|e| io_error("fork", e))? else { sys::exit_now(0) };
    reap(pid)?;
    Ok(t1 - t0)
}

/// Fork; the child writes one byte to every `stride`-th page of `a` (each
/// a COW fault), timing that with `clock_gettime`, sends the nanoseconds
/// through a pipe and exits. Returns the child's figure.
fn fork_timing_child_writes(a: &mut Region, stride: u64) -> CliResult<u64> {
    use std::io::{Read, Write};
    let (rfd, wfd) = sys::pipe().map_err(|e| io_error("pipe2", e))?;
    let (mut rx, mut tx) = (std::fs::File::from(rfd), std::fs::File::from(wfd));
    // SAFETY: single-threaded process (module comment); the child only does
    // volatile stores into its copy of `a`, clock_gettime, write and exits.
    let Some(pid) = (unsafe { sys::fork() }).map_err(|e| io_error("fork", e))? else {
        let t0 = mono_ns();
        a.touch_every(2, stride);
        let t1 = mono_ns();
        let ok = tx.write_all(&(t1 - t0).to_ne_bytes()).is_ok();
        sys::exit_now(if ok { 0 } else { 1 })
    };
    drop(tx);
    let mut buf = [0u8; 8];
    let got = rx.read_exact(&mut buf).is_ok();
    drop(rx);
    reap(pid)?;
    if !got {
        return Err(CliError("the forked child did not report its timing".into()));
    }
    Ok(u64::from_ne_bytes(buf))
}

/// Wait for `pid`; it must have exited with status 0.
fn reap(pid: i32) -> CliResult<()> {
    let status = sys::wait_for(pid).map_err(|e| io_error("waitpid", e))?;
    if status.exit_status() == Some(0) {
        Ok(())
    } else {
        Err(CliError(format!("the forked child failed (wait status {:#x})", status.as_raw())))
    }
}
