//! The Linux side of a trace: one real process per named address space.
//!
//! A worker is this binary re-executed (`softmm __linux-worker SOCKET NAME`),
//! so it starts from a small, clean address space. It connects to the
//! controller's Unix socket, says its name, then runs operations sent as
//! trace lines, one reply line each, with real system calls and real loads
//! and stores (see `guarded.rs`). `fork A B` is a real `fork()`: the child
//! connects anew and introduces itself as B.
//!
//! The worker never maps over its own memory: `sys::trace_mem` remembers
//! which pages the trace mapped and refuses any operation that would touch
//! a mapping outside them.
//!
//! A `futex_wait` starts a thread that does FUTEX_WAIT. Besides trace
//! lines, the controller sends [`FORGET_WAITER`] when a waiter's name is
//! reused: a thread still waiting is interrupted by a signal (its
//! FUTEX_WAIT ends with EINTR, off the queue) and the name forgotten.
//!
//! `mmap ... file F OFF` opens scratch file F (in the directory of the
//! controller's socket) read-write, maps it, and advises `MADV_RANDOM` on
//! the mapping, so that a fault reads in only its own page (fault-around
//! still maps cached neighbours, as TRACE.md says).

use super::guarded::{self, Outcome};
use super::maps::{maps_line, remap_line, MapsEntry, NamedRanges};
use super::parse::{hex, parse_line, Op, TKind, TProt};
use super::scratch;
use crate::sys;
use crate::sys::trace_mem::{Answer, Sharing, TraceMem};
use rustix::mm::ProtFlags;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

const PAGE: u64 = 4096;

/// `__forget_waiter W`: end waiter W's wait, if it still waits, and forget it.
pub const FORGET_WAITER: &str = "__forget_waiter";

/// The signal that interrupts a waiter thread's FUTEX_WAIT.
const INTERRUPT: libc::c_int = libc::SIGUSR1;

extern "C" fn on_interrupt(_sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {}

/// Catch [`INTERRUPT`] without SA_RESTART, so that a FUTEX_WAIT it
/// interrupts returns EINTR instead of waiting again.
fn install_interrupt_handler() -> std::io::Result<()> {
    sys::set_handler(INTERRUPT, on_interrupt, 0)
}

struct Waiter {
    tid: Arc<Mutex<Option<i32>>>,
    result: Arc<Mutex<Option<i32>>>,
}

struct Worker {
    mem: TraceMem,
    waiters: BTreeMap<String, Waiter>,
    /// The ranges this space's `mmap`s named (a forked worker inherits
    /// them with its memory), for `maps`.
    named: NamedRanges,
    /// Where the controller keeps the scratch files.
    files: std::path::PathBuf,
    /// The scratch files this process opened, each once (a forked worker
    /// inherits them): mappings of one open file at consecutive offsets
    /// merge, as in a process that maps one descriptor twice.
    open: BTreeMap<String, std::fs::File>,
}

impl Worker {
    fn run(&mut self, op: &Op) -> Result<String, String> {
        Ok(match op {
            Op::Mmap { addr, len, prot, kind, .. } => {
                let sharing = match kind {
                    TKind::Private => Sharing::Private,
                    TKind::Shared => Sharing::Shared,
                };
                let r = self.mem.mmap(*addr, *len, prot_flags(*prot), sharing)?;
                if r.is_ok() {
                    self.named.add_mmap(*addr, *len);
                }
                status(r)
            }
            Op::MmapFile { addr, len, prot, kind, f, off, .. } => self.mmap_file(*addr, *len, *prot, *kind, f, *off)?,
            Op::Msync { addr, len, .. } => status(self.mem.msync(*addr, *len)?),
            Op::Munmap { addr, len, .. } => status(self.mem.munmap(*addr, *len)?),
            Op::Mremap { old, old_len, new_len, flags, .. } => {
                let (maymove, fixed, dontunmap) = (flags.maymove, flags.fixed, flags.dontunmap);
                match self.mem.mremap(*old, *old_len, *new_len, maymove, fixed, dontunmap)? {
                    Ok(at) => {
                        let (line, named) = remap_line(*old, *new_len, fixed.is_some(), at);
                        if let Some((s, e)) = named {
                            self.named.add_range(s, e);
                        }
                        line
                    }
                    Err(e) => format!("err {}", softmm::errno::name(e.raw_os_error())),
                }
            }
            Op::Mprotect { addr, len, prot, .. } => status(self.mem.mprotect(*addr, *len, prot_flags(*prot))?),
            Op::Madvise { addr, len, advice, .. } => status(self.mem.madvise(*addr, *len, madv_of(*advice))?),
            Op::Write { addr, bytes, .. } => outcome(guarded::write(&self.mem, *addr, bytes)?),
            Op::Fill { addr, len, byte, .. } => outcome(guarded::fill(&self.mem, *addr, *len, *byte)?),
            Op::Read { addr, len, .. } => {
                self.mem.check_access(*addr, *len)?;
                let mut buf = vec![0u8; *len as usize];
                match guarded::read(&self.mem, *addr, &mut buf)? {
                    Outcome::Ok => format!("data {}", hex(&buf)),
                    o => outcome(o),
                }
            }
            Op::Phys { addr, .. } => phys(*addr)?,
            Op::Smaps { addr, .. } => smaps(*addr)?,
            Op::FutexWait { addr, val, w, .. } => self.futex_wait(*addr, *val, w)?,
            Op::FutexWake { addr, n, .. } => {
                let r = sys::futex_at(*addr, libc::FUTEX_WAKE, *n);
                if r < 0 {
                    errno_line()
                } else {
                    format!("woken {r}")
                }
            }
            Op::Waiter { w } => self.waiter(w)?,
            Op::Maps { .. } => maps_line(proc_maps(&self.files)?, &self.named),
            Op::Mlock { addr, len, .. } => status(self.mem.mlock(*addr, *len)?),
            Op::Munlock { addr, len, .. } => status(self.mem.munlock(*addr, *len)?),
            Op::Locked { addr, .. } => match smaps_fields(*addr)? {
                Some(fields) => format!("locked {}", fields.get("Locked").copied().unwrap_or(0)),
                None => "none".into(),
            },
            other => return Err(format!("the Linux worker cannot run {other:?}")),
        })
    }

    fn mmap_file(
        &mut self,
        addr: u64,
        len: u64,
        prot: TProt,
        kind: TKind,
        f: &str,
        off: u64,
    ) -> Result<String, String> {
        let path = scratch::file_path(&self.files, f);
        if !self.open.contains_key(f) {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| format!("opening {}: {e}", path.display()))?;
            sys::fadvise_random(&file).map_err(|e| format!("fadvise on {}: {e}", path.display()))?;
            self.open.insert(f.to_string(), file);
        }
        let file = self.open.get(f).ok_or("the file just opened is gone")?;
        let sharing = match kind {
            TKind::Private => Sharing::Private,
            TKind::Shared => Sharing::Shared,
        };
        let r = self.mem.mmap_file(addr, len, prot_flags(prot), sharing, file.as_fd(), off)?;
        if r.is_ok() {
            self.named.add_mmap(addr, len);
            // No readahead on faults: the mapping reads only what faults.
            if let Err(e) = self.mem.madvise(addr, len, libc::MADV_RANDOM)? {
                return Err(format!("MADV_RANDOM on the mapping of {}: {e}", path.display()));
            }
        }
        Ok(status(r))
    }

    fn futex_wait(&mut self, addr: u64, val: u32, w: &str) -> Result<String, String> {
        if self.waiters.contains_key(w) {
            return Err(format!("waiter `{w}` already exists"));
        }
        self.mem.check_access(addr, 4)?;
        let tid = Arc::new(Mutex::new(None));
        let result = Arc::new(Mutex::new(None));
        let (t2, r2) = (tid.clone(), result.clone());
        std::thread::Builder::new()
            .name(format!("waiter-{w}"))
            .spawn(move || {
                let me = sys::gettid();
                if let Ok(mut t) = t2.lock() {
                    *t = Some(me);
                }
                let r = sys::futex_at(addr, libc::FUTEX_WAIT, val);
                let code = if r == 0 { 0 } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(-1) };
                if let Ok(mut res) = r2.lock() {
                    *res = Some(code);
                }
            })
            .map_err(|e| format!("cannot start waiter thread: {e}"))?;
        let waiter = Waiter { tid, result };
        let state = settle(&waiter);
        Ok(match state {
            Settled::Blocked => {
                self.waiters.insert(w.to_string(), waiter);
                "waiting".into()
            }
            Settled::Returned(0) => {
                self.waiters.insert(w.to_string(), waiter);
                "woken".into()
            }
            Settled::Returned(e) if e == libc::EAGAIN => "eagain".into(),
            Settled::Returned(e) => format!("err {}", softmm::errno::name(e)),
        })
    }

    /// Forget waiter `w`; if its thread still waits, interrupt it first and
    /// wait until it has left FUTEX_WAIT (and so the futex queue).
    fn forget(&mut self, w: &str) -> Result<String, String> {
        let Some(waiter) = self.waiters.remove(w) else { return Ok("ok".into()) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while waiter.result.lock().ok().and_then(|g| *g).is_none() {
            if std::time::Instant::now() > deadline {
                return Err(format!("waiter `{w}` did not leave FUTEX_WAIT when interrupted"));
            }
            if let Some(tid) = waiter.tid.lock().ok().and_then(|g| *g) {
                sys::tgkill(tid, INTERRUPT);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok("ok".into())
    }

    fn waiter(&mut self, w: &str) -> Result<String, String> {
        let waiter = self.waiters.get(w).ok_or_else(|| format!("no waiter named `{w}` in this process"))?;
        Ok(match settle(waiter) {
            Settled::Blocked => "waiting".into(),
            Settled::Returned(e) if e == libc::ETIMEDOUT => "timeout".into(),
            Settled::Returned(_) => "woken".into(),
        })
    }
}

enum Settled {
    Blocked,
    Returned(i32),
}

/// Wait until a waiter thread has either returned from FUTEX_WAIT or is
/// asleep inside it (state S in the futex system call), and say which.
fn settle(w: &Waiter) -> Settled {
    loop {
        if let Some(r) = w.result.lock().ok().and_then(|g| *g) {
            return Settled::Returned(r);
        }
        if let Some(tid) = w.tid.lock().ok().and_then(|g| *g) {
            if blocked_in_futex(tid) {
                // Re-check: it may have returned between the two reads.
                if let Some(r) = w.result.lock().ok().and_then(|g| *g) {
                    return Settled::Returned(r);
                }
                return Settled::Blocked;
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

fn blocked_in_futex(tid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    let syscall = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
    let nr = syscall.split_whitespace().next().and_then(|n| n.parse::<i64>().ok());
    state == Some('S') && nr == Some(libc::SYS_futex)
}

fn prot_flags(p: TProt) -> ProtFlags {
    match p {
        TProt::R => ProtFlags::READ,
        TProt::W => ProtFlags::WRITE,
        TProt::Rw => ProtFlags::READ | ProtFlags::WRITE,
        TProt::None => ProtFlags::empty(),
        TProt::X => ProtFlags::EXEC,
        TProt::Rx => ProtFlags::READ | ProtFlags::EXEC,
        TProt::Wx => ProtFlags::WRITE | ProtFlags::EXEC,
        TProt::Rwx => ProtFlags::READ | ProtFlags::WRITE | ProtFlags::EXEC,
    }
}

/// This process's VMAs from /proc/self/maps, in address order. Anonymous
/// memory is `anon`, shared or private: Linux names shared anonymous
/// memory `/dev/zero (deleted)` (its shmem file), private none. A scratch
/// file in `files` is `file F+0xOFF`.
fn proc_maps(files: &std::path::Path) -> Result<Vec<MapsEntry>, String> {
    let text = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        // START-END PERMS OFFSET DEV INODE [PATH]
        let mut f = line.splitn(6, ' ');
        let (range, perms) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        let offset = f.next().and_then(|o| u64::from_str_radix(o, 16).ok()).unwrap_or(0);
        let path = f.nth(2).unwrap_or("").trim();
        let Some((s, e)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) else { continue };
        let kind = if path.is_empty() || path == "/dev/zero (deleted)" {
            "anon".into()
        } else if let Some(name) = scratch::file_name(files, path) {
            format!("file {name}+{offset:#x}")
        } else {
            format!("file {path}")
        };
        out.push(MapsEntry { start, end, perms: perms.into(), kind });
    }
    Ok(out)
}

fn errno_line() -> String {
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    format!("err {}", softmm::errno::name(e))
}

/// The `MADV_*` value of an advice.
fn madv_of(a: softmm::Advice) -> i32 {
    use softmm::Advice as A;
    match a {
        A::DontNeed => libc::MADV_DONTNEED,
        A::Free => libc::MADV_FREE,
        A::WillNeed => libc::MADV_WILLNEED,
        A::Cold => libc::MADV_COLD,
        A::PageOut => libc::MADV_PAGEOUT,
        A::PopulateRead => libc::MADV_POPULATE_READ,
        A::PopulateWrite => libc::MADV_POPULATE_WRITE,
        A::Remove => libc::MADV_REMOVE,
        A::DontFork => libc::MADV_DONTFORK,
        A::DoFork => libc::MADV_DOFORK,
        A::WipeOnFork => libc::MADV_WIPEONFORK,
        A::KeepOnFork => libc::MADV_KEEPONFORK,
        // An advice this runner does not know: an invalid one, as Linux
        // answers a value it does not know (EINVAL).
        _ => -1,
    }
}

fn status(r: Answer) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("err {}", softmm::errno::name(e.raw_os_error())),
    }
}

fn outcome(o: Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::MapErr => "segv maperr".into(),
        Outcome::AccErr => "segv accerr".into(),
        Outcome::Bus => "sigbus".into(),
        Outcome::Other(c) => format!("segv code{c}"),
    }
}

/// `frame PFN` from /proc/self/pagemap, `none` when not present, and
/// `frame unknown` when the kernel hides PFNs (no CAP_SYS_ADMIN).
fn phys(addr: u64) -> Result<String, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("opening /proc/self/pagemap: {e}"))?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, (addr / PAGE) * 8).map_err(|e| format!("reading /proc/self/pagemap: {e}"))?;
    let v = u64::from_ne_bytes(b);
    if v & (1 << 63) == 0 {
        return Ok("none".into());
    }
    let pfn = v & ((1 << 55) - 1);
    Ok(if pfn == 0 { "frame unknown".into() } else { format!("frame {pfn}") })
}

/// The smaps line of the VMA holding `addr`, or `none`.
fn smaps(addr: u64) -> Result<String, String> {
    let Some(fields) = smaps_fields(addr)? else { return Ok("none".into()) };
    let g = |k: &str| fields.get(k).copied().unwrap_or(0);
    Ok(format!(
        "rss={} pss={} anon={} shared_clean={} shared_dirty={} private_clean={} private_dirty={} swap={}",
        g("Rss"),
        g("Pss"),
        g("Anonymous"),
        g("Shared_Clean"),
        g("Shared_Dirty"),
        g("Private_Clean"),
        g("Private_Dirty"),
        g("Swap")
    ))
}

/// The kB fields of /proc/self/smaps for the VMA holding `addr`, or
/// `None` when no VMA holds it.
fn smaps_fields(addr: u64) -> Result<Option<BTreeMap<String, u64>>, String> {
    let text = std::fs::read_to_string("/proc/self/smaps").map_err(|e| format!("reading /proc/self/smaps: {e}"))?;
    let mut inside = false;
    let mut fields: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) {
                if inside {
                    break;
                }
                inside = s <= addr && addr < e;
                continue;
            }
        }
        if inside {
            if let Some((k, v)) = line.split_once(':') {
                let kb = v.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
                fields.insert(k.trim().to_string(), kb);
            }
        }
    }
    Ok(inside.then_some(fields))
}

/// Entry point of `softmm __linux-worker SOCKET NAME`.
pub fn main(socket: &str, name: &str) -> Result<(), String> {
    guarded::install_handler().map_err(|e| format!("installing the SIGSEGV handler: {e}"))?;
    install_interrupt_handler().map_err(|e| format!("installing the SIGUSR1 handler: {e}"))?;
    // 4 KiB pages only, as softmm maps them: with transparent huge pages
    // set to `always`, smaps would count 2 MiB pages and differ.
    let _ = sys::disable_thp();
    // Children this worker forks (other address spaces) are reaped by the
    // kernel when they exit, so an exited one never lingers as a zombie.
    sys::ignore_sigchld();
    let mut worker = Worker {
        mem: TraceMem::default(),
        waiters: BTreeMap::new(),
        named: NamedRanges::default(),
        files: std::path::Path::new(socket).parent().map(|p| p.to_owned()).unwrap_or_default(),
        open: BTreeMap::new(),
    };
    let mut conn = BufReader::new(connect(socket, name)?);
    loop {
        let mut line = String::new();
        let n = conn.read_line(&mut line).map_err(|e| format!("reading a command: {e}"))?;
        if n == 0 {
            return Ok(()); // the controller went away
        }
        if let Some(w) = line.trim_end().strip_prefix(FORGET_WAITER).map(str::trim) {
            let reply = worker.forget(w).unwrap_or_else(|fatal| format!("fatal {fatal}"));
            conn.get_mut().write_all(format!("{reply}\n").as_bytes()).map_err(|e| format!("sending a reply: {e}"))?;
            continue;
        }
        let op = match parse_line(line.trim_end()) {
            Ok(Some(op)) => op,
            Ok(None) => continue,
            Err(e) => return Err(format!("bad command from the controller: {e}")),
        };
        let reply = match &op {
            Op::Fork { b, .. } => {
                // SAFETY: the worker's waiter threads, if any, hold no lock the
                // child needs: the child only connects and runs commands.
                match unsafe { sys::fork() } {
                    Err(_) => errno_line(),
                    Ok(None) => {
                        worker.waiters.clear();
                        conn = BufReader::new(connect(socket, b)?);
                        continue;
                    }
                    Ok(Some(_)) => "ok".into(),
                }
            }
            Op::Exit { .. } => {
                let _ = conn.get_mut().write_all(b"ok\n");
                sys::exit_now(0);
            }
            op => match worker.run(op) {
                Ok(r) => r,
                Err(fatal) => format!("fatal {fatal}"),
            },
        };
        conn.get_mut().write_all(format!("{reply}\n").as_bytes()).map_err(|e| format!("sending a reply: {e}"))?;
    }
}

fn connect(socket: &str, name: &str) -> Result<UnixStream, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connecting to {socket}: {e}"))?;
    let pid = std::process::id();
    s.write_all(format!("hello {name} {pid}\n").as_bytes()).map_err(|e| format!("introducing {name}: {e}"))?;
    Ok(s)
}
