//! The Linux side of a trace: one real process per named address space.
//!
//! A worker is this binary re-executed (`softmm __linux-worker SOCKET NAME`),
//! so it starts from a small, clean address space. It connects to the
//! controller's Unix socket, says its name, then runs operations sent as
//! trace lines, one reply line each, with real system calls and real loads
//! and stores (see `guarded.rs`). `fork A B` is a real `fork()`: the child
//! connects anew and introduces itself as B.
//!
//! The worker never maps over its own memory: it remembers which pages the
//! trace mapped (that set is inherited across fork, being plain memory) and
//! refuses any operation that would touch a mapping outside it.
//!
//! A `futex_wait` starts a thread that does FUTEX_WAIT. Besides trace
//! lines, the controller sends [`FORGET_WAITER`] when a waiter's name is
//! reused: a thread still waiting is interrupted by a signal (its
//! FUTEX_WAIT ends with EINTR, off the queue) and the name forgotten.

use super::guarded::{self, Outcome};
use super::parse::{hex, parse_line, Op, TKind, TProt};
use crate::sys;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
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

/// Pages mapped by the trace: start -> end, merged.
#[derive(Default)]
struct Owned {
    ranges: BTreeMap<u64, u64>,
}

impl Owned {
    fn add(&mut self, start: u64, end: u64) {
        self.remove(start, end);
        self.ranges.insert(start, end);
    }
    fn remove(&mut self, start: u64, end: u64) {
        let keys: Vec<(u64, u64)> =
            self.ranges.range(..end).filter(|(_, &e)| e > start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in keys {
            self.ranges.remove(&s);
            if s < start {
                self.ranges.insert(s, start);
            }
            if e > end {
                self.ranges.insert(end, e);
            }
        }
    }
    fn covers(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        for (&s, &e) in self.ranges.range(..end) {
            if e <= at {
                continue;
            }
            if s > at {
                return false;
            }
            at = e;
            if at >= end {
                return true;
            }
        }
        at >= end
    }
}

/// One mapping of /proc/self/maps.
struct MapsEntry {
    start: u64,
    end: u64,
}

fn read_maps() -> Result<Vec<MapsEntry>, String> {
    let text = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let range = line.split_whitespace().next().unwrap_or("");
        let (s, e) = range.split_once('-').ok_or("malformed /proc/self/maps")?;
        let s = u64::from_str_radix(s, 16).map_err(|_| "malformed /proc/self/maps")?;
        let e = u64::from_str_radix(e, 16).map_err(|_| "malformed /proc/self/maps")?;
        out.push(MapsEntry { start: s, end: e });
    }
    Ok(out)
}

struct Waiter {
    tid: Arc<Mutex<Option<i32>>>,
    result: Arc<Mutex<Option<i32>>>,
}

struct Worker {
    owned: Owned,
    waiters: BTreeMap<String, Waiter>,
}

/// The range `[addr, addr + PAGE_ALIGN(len))`, if it does not wrap.
fn span(addr: u64, len: u64) -> Option<(u64, u64)> {
    let l = len.checked_add(PAGE - 1)? & !(PAGE - 1);
    Some((addr & !(PAGE - 1), addr.checked_add(l)?))
}

impl Worker {
    /// Refuse `[start, end)` if it overlaps memory the trace did not map.
    fn guard(&self, start: u64, end: u64) -> Result<(), String> {
        for m in read_maps()? {
            if m.start < end && start < m.end {
                let (s, e) = (m.start.max(start), m.end.min(end));
                if !self.owned.covers(s, e) {
                    return Err(format!(
                        "the trace touches {s:#x}-{e:#x}, which is the Linux runner's own memory ({:#x}-{:#x}); \
                         choose other addresses",
                        m.start, m.end
                    ));
                }
            }
        }
        Ok(())
    }

    fn run(&mut self, op: &Op) -> Result<String, String> {
        Ok(match op {
            Op::Mmap { addr, len, prot, kind, .. } => self.mmap(*addr, *len, *prot, *kind)?,
            Op::Munmap { addr, len, .. } => {
                if let Some((s, e)) = span(*addr, *len) {
                    self.guard(s, e)?;
                }
                // SAFETY: the range holds only trace memory (checked above) or
                // the arguments are invalid and the kernel rejects them.
                let r = unsafe { libc::munmap(*addr as *mut libc::c_void, *len as usize) };
                if r == 0 {
                    if let Some((s, e)) = span(*addr, *len) {
                        self.owned.remove(s, e);
                    }
                }
                status(r)
            }
            Op::Mprotect { addr, len, prot, .. } => {
                if let Some((s, e)) = span(*addr, *len) {
                    self.guard(s, e)?;
                }
                // SAFETY: as for munmap; only trace memory changes protection.
                status(unsafe { libc::mprotect(*addr as *mut libc::c_void, *len as usize, prot_bits(*prot)) })
            }
            Op::MadviseDontneed { addr, len, .. } => {
                if let Some((s, e)) = span(*addr, *len) {
                    self.guard(s, e)?;
                }
                // SAFETY: as for munmap.
                status(unsafe { libc::madvise(*addr as *mut libc::c_void, *len as usize, libc::MADV_DONTNEED) })
            }
            Op::Write { addr, bytes, .. } => {
                self.guard_access(*addr, bytes.len() as u64)?;
                outcome(guarded::write(*addr, bytes))
            }
            Op::Fill { addr, len, byte, .. } => {
                self.guard_access(*addr, *len)?;
                outcome(guarded::fill(*addr, *len, *byte))
            }
            Op::Read { addr, len, .. } => {
                self.guard_access(*addr, *len)?;
                let mut buf = vec![0u8; *len as usize];
                match guarded::read(*addr, &mut buf) {
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
            other => return Err(format!("the Linux worker cannot run {other:?}")),
        })
    }

    fn guard_access(&self, addr: u64, len: u64) -> Result<(), String> {
        if len > 1 << 30 {
            return Err("access longer than 1 GiB".into());
        }
        if len == 0 {
            return Ok(());
        }
        // An access may end exactly at the top of the 64-bit space (its
        // last byte is u64::MAX); only one past it wraps.
        let last = addr.checked_add(len - 1).ok_or("access range wraps around")?;
        let end = (last | (PAGE - 1)).saturating_add(1);
        self.guard(addr & !(PAGE - 1), end)
    }

    fn mmap(&mut self, addr: u64, len: u64, prot: TProt, kind: TKind) -> Result<String, String> {
        let kind_flag = match kind {
            TKind::Private => libc::MAP_PRIVATE,
            TKind::Shared => libc::MAP_SHARED,
        };
        // Over trace memory only: real MAP_FIXED semantics. Over nothing:
        // MAP_FIXED_NOREPLACE, which can never clobber the runner.
        let mut flags = kind_flag | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
        if let Some((s, e)) = span(addr, len) {
            self.guard(s, e)?;
            if read_maps()?.iter().any(|m| m.start < e && s < m.end) {
                flags = kind_flag | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
            }
        }
        // SAFETY: with MAP_FIXED the range holds only trace memory (checked
        // above); otherwise MAP_FIXED_NOREPLACE never replaces anything.
        let p = unsafe { libc::mmap(addr as *mut libc::c_void, len as usize, prot_bits(prot), flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Ok(errno_line());
        }
        if p as u64 != addr {
            // Kernels before 4.17 treat MAP_FIXED_NOREPLACE as a hint.
            // SAFETY: `p` is the mapping just created.
            unsafe { libc::munmap(p, len as usize) };
            return Err(format!("the kernel placed a fixed mapping at {:#x}, not {addr:#x}", p as u64));
        }
        if let Some((s, e)) = span(addr, len) {
            self.owned.add(s, e);
        }
        Ok("ok".into())
    }

    fn futex_wait(&mut self, addr: u64, val: u32, w: &str) -> Result<String, String> {
        if self.waiters.contains_key(w) {
            return Err(format!("waiter `{w}` already exists"));
        }
        self.guard_access(addr, 4)?;
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

fn prot_bits(p: TProt) -> i32 {
    match p {
        TProt::R => libc::PROT_READ,
        TProt::W => libc::PROT_WRITE,
        TProt::Rw => libc::PROT_READ | libc::PROT_WRITE,
        TProt::None => libc::PROT_NONE,
    }
}

fn errno_line() -> String {
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    format!("err {}", softmm::errno::name(e))
}

fn status(r: i32) -> String {
    if r == 0 {
        "ok".into()
    } else {
        errno_line()
    }
}

fn outcome(o: Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::MapErr => "segv maperr".into(),
        Outcome::AccErr => "segv accerr".into(),
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
    let text = std::fs::read_to_string("/proc/self/smaps").map_err(|e| format!("reading /proc/self/smaps: {e}"))?;
    let mut inside = false;
    let mut fields: BTreeMap<&str, u64> = BTreeMap::new();
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
                fields.insert(k.trim(), kb);
            }
        }
    }
    if !inside {
        return Ok("none".into());
    }
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
    let mut worker = Worker { owned: Owned::default(), waiters: BTreeMap::new() };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_ranges() {
        let mut o = Owned::default();
        o.add(0x1000, 0x5000);
        assert!(o.covers(0x1000, 0x5000));
        assert!(o.covers(0x2000, 0x3000));
        o.remove(0x2000, 0x3000);
        assert!(!o.covers(0x1000, 0x5000));
        assert!(o.covers(0x3000, 0x5000));
        o.add(0x2000, 0x3000);
        assert!(o.covers(0x1000, 0x5000));
        assert!(!o.covers(0x0, 0x2000));
    }
}
