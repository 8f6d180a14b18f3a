//! Running a trace on real Linux processes: the controller side.
//!
//! The controller listens on a Unix socket in a private temporary
//! directory; each worker (see `linux_worker.rs`) connects and introduces
//! itself by name. `new A` starts a worker by re-executing this binary;
//! `fork A B` asks worker A to fork, and waits for B to introduce itself.
//!
//! Scratch files (`file F`) are real files in the same directory (on a
//! disk filesystem, see `scratch.rs`), where a worker opens them to map
//! them; `pwrite`, `pread` and `truncate` run here, in the controller, with
//! `POSIX_FADV_RANDOM` so that a read caches only the pages it reads.

use super::exec_softmm::MAX_SCRATCH_FILE;
use super::linux_worker::FORGET_WAITER;
use super::parse::{hex, Op};
use super::scratch::{self, ScratchDir};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The lowest address this process's fixed mappings may use on this host,
/// as Linux checks it (`cap_mmap_addr`): `vm.mmap_min_addr`, or 0 with
/// `CAP_SYS_RAWIO`, which lifts that floor. `None` if `/proc` does not
/// say (the library's default, Linux's default value, applies then).
pub fn mmap_floor() -> Option<u64> {
    /// The capability's bit in `CapEff` (linux/capability.h).
    const CAP_SYS_RAWIO: u32 = 17;
    let min = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr").ok()?.trim().parse::<u64>().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let caps = u64::from_str_radix(caps.trim(), 16).ok()?;
    Some(if caps & (1 << CAP_SYS_RAWIO) != 0 { 0 } else { min })
}

struct Proc {
    conn: BufReader<UnixStream>,
    pid: i32,
}

/// A trace's state on Linux: one worker process per address space.
pub struct LinuxRunner {
    /// Holds the socket and the scratch files; removed on drop, after the
    /// workers are gone.
    dir: ScratchDir,
    socket: PathBuf,
    listener: UnixListener,
    procs: HashMap<String, Proc>,
    /// Which worker runs each queued (or finished) waiter thread.
    waiters: HashMap<String, String>,
    spawned: Vec<Child>,
    /// The trace's scratch files, open read-write.
    files: HashMap<String, std::fs::File>,
}

pub type Fatal = String;

const ACCEPT_TIMEOUT: Duration = Duration::from_secs(20);

impl LinuxRunner {
    pub fn new() -> Result<LinuxRunner, Fatal> {
        let dir = ScratchDir::new("linux")?;
        let socket = dir.path().join("ctl.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|e| format!("binding {}: {e}", socket.display()))?;
        listener.set_nonblocking(true).map_err(|e| format!("socket setup: {e}"))?;
        // Workers forked by workers are adopted by this process when their
        // parent exits (instead of by PID 1, which may never reap them), and
        // reaped in `reap_orphans`.
        crate::sys::become_subreaper();
        Ok(LinuxRunner {
            dir,
            socket,
            listener,
            procs: HashMap::new(),
            waiters: HashMap::new(),
            spawned: Vec::new(),
            files: HashMap::new(),
        })
    }

    /// Wait for a worker to connect and introduce itself as `name`.
    fn accept(&mut self, name: &str) -> Result<(), Fatal> {
        let deadline = Instant::now() + ACCEPT_TIMEOUT;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(format!("worker `{name}` did not connect within {ACCEPT_TIMEOUT:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(format!("accepting worker `{name}`: {e}")),
            }
        };
        stream.set_nonblocking(false).map_err(|e| format!("socket setup: {e}"))?;
        let mut conn = BufReader::new(stream);
        let mut hello = String::new();
        conn.read_line(&mut hello).map_err(|e| format!("reading hello of `{name}`: {e}"))?;
        let mut parts = hello.split_whitespace();
        let (h, got, pid) = (parts.next(), parts.next(), parts.next().and_then(|p| p.parse().ok()));
        match (h, got, pid) {
            (Some("hello"), Some(got), Some(pid)) if got == name => {
                self.procs.insert(name.to_string(), Proc { conn, pid });
                Ok(())
            }
            _ => Err(format!("expected worker `{name}` to say hello, got `{}`", hello.trim_end())),
        }
    }

    fn ask(&mut self, a: &str, line: &str) -> Result<String, Fatal> {
        let p =
            self.procs.get_mut(a).ok_or_else(|| format!("no address space named `{a}` (never created, or exited)"))?;
        p.conn.get_mut().write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("worker `{a}`: {e}"))?;
        let mut reply = String::new();
        let n = p.conn.read_line(&mut reply).map_err(|e| format!("worker `{a}`: {e}"))?;
        if n == 0 {
            return Err(format!("worker `{a}` died while running `{line}`"));
        }
        // Only the line end goes: `data ` (a zero-length read) keeps its space.
        let reply = reply.trim_end_matches('\n').to_string();
        match reply.strip_prefix("fatal ") {
            Some(msg) => Err(msg.to_string()),
            None => Ok(reply),
        }
    }

    /// Run one operation; returns its output line.
    pub fn run(&mut self, op: &Op) -> Result<String, Fatal> {
        match op {
            Op::New { a } => {
                if self.procs.contains_key(a) {
                    return Err(format!("address space `{a}` already exists"));
                }
                let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
                let child = Command::new(exe)
                    .arg("__linux-worker")
                    .arg(&self.socket)
                    .arg(a)
                    .stdin(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("starting a Linux worker: {e}"))?;
                self.spawned.push(child);
                self.accept(a)?;
                Ok("ok".into())
            }
            Op::Fork { a, b } => {
                if self.procs.contains_key(b) {
                    return Err(format!("address space `{b}` already exists"));
                }
                let r = self.ask(a, &op.to_string())?;
                if r == "ok" {
                    self.accept(b)?;
                }
                Ok(r)
            }
            Op::Exit { a } => {
                let r = self.ask(a, &op.to_string())?;
                if let Some(p) = self.procs.remove(a) {
                    reap(p.pid);
                }
                // Its waiter threads died with it.
                self.waiters.retain(|_, b| b != a);
                Ok(r)
            }
            Op::Pin { .. }
            | Op::Pinned { .. }
            | Op::Unpin { .. }
            | Op::Snapshot { .. }
            | Op::Restore { .. }
            | Op::Dirty { .. } => Ok("unsupported-on-linux".into()),
            Op::File { f, len, byte } => self.new_file(f, *len, *byte),
            Op::MmapFile { a, f, .. } => {
                self.fd(f)?; // a file the trace made, or a malformed trace
                self.ask(a, &op.to_string())
            }
            Op::Pwrite { f, off, bytes } => {
                let fd = self.fd(f)?;
                Ok(
                    match rw_all(*off, bytes.len(), |at, done| {
                        pwrite_at(fd, &bytes[done..page_end(at, done, bytes.len())], at)
                    }) {
                        Ok(_) => "ok".into(),
                        Err(e) => errno_line(e),
                    },
                )
            }
            Op::Pread { f, off, len } => {
                let fd = self.fd(f)?;
                let len = usize::try_from(*len).ok().filter(|&l| l as u64 <= MAX_SCRATCH_FILE);
                let mut buf = vec![0u8; len.ok_or_else(|| "pread length above 1 GiB".to_string())?];
                let n = buf.len();
                Ok(match rw_all(*off, n, |at, done| pread_at(fd, &mut buf[done..], at)) {
                    Ok(got) => format!("data {}", hex(&buf[..got])),
                    Err(e) => errno_line(e),
                })
            }
            Op::Truncate { f, len } => Ok(match ftruncate(self.fd(f)?, *len) {
                Ok(()) => "ok".into(),
                Err(e) => errno_line(e),
            }),
            Op::FutexWait { a, w, .. } => {
                if !self.procs.contains_key(a) {
                    return Err(format!("no address space named `{a}` (never created, or exited)"));
                }
                // A reused name replaces its waiter; a thread still waiting
                // under it is interrupted first.
                if let Some(b) = self.waiters.remove(w) {
                    self.ask(&b, &format!("{FORGET_WAITER} {w}"))?;
                }
                let r = self.ask(a, &op.to_string())?;
                if r == "waiting" || r == "woken" {
                    self.waiters.insert(w.clone(), a.clone());
                }
                Ok(r)
            }
            Op::Waiter { w } => match self.waiters.get(w).cloned() {
                // Waiters live in the process that started them.
                Some(a) => self.ask(&a, &op.to_string()),
                None => Err(format!(
                    "no waiter named `{w}` (never started, its futex_wait did not queue, or its address space \
                     exited)"
                )),
            },
            op => match op.space() {
                Some(a) => self.ask(a, &op.to_string()),
                None => Err(format!("`{op}` names no address space")),
            },
        }
    }
}

impl LinuxRunner {
    fn fd(&self, f: &str) -> Result<i32, Fatal> {
        self.files
            .get(f)
            .map(|file| file.as_raw_fd())
            .ok_or_else(|| format!("no file named `{f}` (never made, or its `file` failed)"))
    }

    /// `file F LEN BYTE`: as on softmm, the size first (its error makes no
    /// file), then the bytes written and synced, so every page is cached
    /// and clean.
    fn new_file(&mut self, f: &str, len: u64, byte: u8) -> Result<String, Fatal> {
        if self.files.contains_key(f) {
            return Err(format!("file `{f}` already exists (a file name is used once)"));
        }
        let path = scratch::file_path(self.dir.path(), f);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        let fd = file.as_raw_fd();
        if let Err(e) = ftruncate(fd, len) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Ok(errno_line(e));
        }
        if len > MAX_SCRATCH_FILE {
            return Err(format!("file `{f}`: scratch files are at most 1 GiB"));
        }
        crate::sys::fadvise_random(&file).map_err(|e| format!("fadvise on {}: {e}", path.display()))?;
        let page = [byte; 4096];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(4096) as usize;
            rw_all(at, n, |off, done| pwrite_at(fd, &page[done..n], off))
                .map_err(|e| format!("filling {}: errno {e}", path.display()))?;
            at += n as u64;
        }
        file.sync_all().map_err(|e| format!("syncing {}: {e}", path.display()))?;
        self.files.insert(f.to_string(), file);
        Ok("ok".into())
    }
}

fn errno_line(e: i32) -> String {
    format!("err {}", softmm::errno::name(e))
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// ftruncate(2) with `len` as the kernel's signed `off_t` (a length past
/// `i64::MAX` is negative there: EINVAL, as Linux answers).
fn ftruncate(fd: i32, len: u64) -> Result<(), i32> {
    // SAFETY: ftruncate on a descriptor this runner owns; no memory is passed.
    if unsafe { libc::ftruncate(fd, len as libc::off_t) } == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// pread(2) at `off` (as `off_t`, so an offset past `i64::MAX` is EINVAL).
fn pread_at(fd: i32, buf: &mut [u8], off: u64) -> Result<usize, i32> {
    // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
    let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
    usize::try_from(r).map_err(|_| last_errno())
}

/// Where the write of `done` of `len` bytes, now at file offset `at`,
/// stops: at the end of `at`'s page. The runner writes a page at a time, so
/// that the page cache holds single pages, as softmm's does: a write of
/// several pages at once may make a large folio (ext4, xfs), all of whose
/// pages /proc/PID/smaps counts dirty when one of them is.
fn page_end(at: u64, done: usize, len: usize) -> usize {
    let room = 4096 - (at % 4096) as usize;
    done + room.min(len - done)
}

/// pwrite(2) at `off` (as `off_t`).
fn pwrite_at(fd: i32, data: &[u8], off: u64) -> Result<usize, i32> {
    // SAFETY: `data` is a live buffer of `data.len()` bytes, only read.
    let r = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off as libc::off_t) };
    usize::try_from(r).map_err(|_| last_errno())
}

/// Repeat `op(offset, done)` until `len` bytes are done or it does none
/// (the end of the file); an error after some bytes is a short count, as
/// one read(2) or write(2) answers. Returns the bytes done.
fn rw_all(off: u64, len: usize, mut op: impl FnMut(u64, usize) -> Result<usize, i32>) -> Result<usize, i32> {
    let mut done = 0;
    loop {
        match op(off.wrapping_add(done as u64), done) {
            Ok(0) => return Ok(done),
            Ok(n) => {
                done += n;
                if done >= len {
                    return Ok(done);
                }
            }
            Err(_) if done > 0 => return Ok(done),
            Err(e) => return Err(e),
        }
    }
}

/// Wait (briefly) for a worker to be gone, threads included, so that its
/// memory is released before the next operation. It may not be our child: a forked worker is
/// its parent's child (auto-reaped there); a zombie counts as gone.
fn reap(pid: i32) {
    for _ in 0..2000 {
        crate::sys::reap_nohang(pid);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        // A zombie leader may still have threads (futex waiters) exiting,
        // and the last of them releases the memory: wait for them too.
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
        if stat.is_empty() || ((state == Some('Z') || state == Some('X')) && threads <= 1) {
            return;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Reap every exited child (adopted orphans included), without waiting.
fn reap_orphans() {
    while crate::sys::reap_any_nohang() {}
}

impl Drop for LinuxRunner {
    fn drop(&mut self) {
        for p in self.procs.values() {
            crate::sys::kill(p.pid);
        }
        for c in &mut self.spawned {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Give killed, adopted workers a moment to become zombies, then reap.
        for _ in 0..20 {
            reap_orphans();
            std::thread::sleep(Duration::from_millis(1));
        }
        // The scratch directory goes with `self.dir`, after this.
        self.files.clear();
    }
}
