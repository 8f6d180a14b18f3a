//! Running a trace on real Linux processes: the controller side.
//!
//! The controller listens on a Unix socket in a private temporary
//! directory; each worker (see `linux_worker.rs`) connects and introduces
//! itself by name. `new A` starts a worker by re-executing this binary;
//! `fork A B` asks worker A to fork, and waits for B to introduce itself.

use super::linux_worker::FORGET_WAITER;
use super::parse::Op;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
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
    dir: PathBuf,
    socket: PathBuf,
    listener: UnixListener,
    procs: HashMap<String, Proc>,
    /// Which worker runs each queued (or finished) waiter thread.
    waiters: HashMap<String, String>,
    spawned: Vec<Child>,
}

pub type Fatal = String;

const ACCEPT_TIMEOUT: Duration = Duration::from_secs(20);

impl LinuxRunner {
    pub fn new() -> Result<LinuxRunner, Fatal> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("softmm-linux-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let socket = dir.join("ctl.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|e| format!("binding {}: {e}", socket.display()))?;
        listener.set_nonblocking(true).map_err(|e| format!("socket setup: {e}"))?;
        // Workers forked by workers are adopted by this process when their
        // parent exits (instead of by PID 1, which may never reap them), and
        // reaped in `reap_orphans`.
        crate::sys::become_subreaper();
        Ok(LinuxRunner { dir, socket, listener, procs: HashMap::new(), waiters: HashMap::new(), spawned: Vec::new() })
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
