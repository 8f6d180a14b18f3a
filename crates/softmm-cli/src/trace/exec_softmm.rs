//! Running a trace on softmm.
//!
//! Each named address space is an [`Mm`]; operations map one to one onto the
//! library's calls, and results are printed in the trace format. A
//! `futex_wait` queues a [`FutexWaiter`] without blocking (the trace runs
//! on one thread), kept under its name until the name is reused or its
//! address space exits. A pin (`pin ... as P`) is kept under its name
//! until `unpin P` or the name's reuse; it outlives its address space, as
//! a pin outlives munmap and exit. A snapshot (`snapshot A as S`) is kept
//! under its name until the name's reuse; it outlives its address space.
//!
//! A scratch file (`file F`) is a host file in a private directory, read
//! and written through softmm's page cache ([`softmm::File`]); the
//! directory goes when the runner does.

use super::maps::{maps_line, remap_line, MapsEntry, NamedRanges};
use super::parse::{hex, Op, TKind, TProt};
use super::scratch::{self, ScratchDir};
use softmm::futex::{WaitState, BITSET_MATCH_ANY};
use softmm::{
    Config, Error, ForkPolicy, FutexKeys, FutexWaiter, Machine, MapKind, Mm, PinnedPages, Placement, Prot, SegvKind,
    Snapshot,
};
use std::collections::HashMap;

/// Options of a softmm replay.
#[derive(Clone, Debug, Default)]
pub struct SoftmmOptions {
    pub fork_policy: ForkPolicy,
    /// Arena size; default 1 GiB (traces are small).
    pub arena_bytes: Option<u64>,
    /// When to audit the whole machine (`check_invariants`); a broken
    /// invariant stops the replay.
    pub audit: Audit,
    /// How the machine keys futexes (`replay --futex-keys`; `diff` uses
    /// Linux keys, as real Linux does).
    pub futex_keys: FutexKeys,
    /// A frame limit and its swap (`replay --mem-limit`, `--swap-file`).
    pub mem: crate::memlimit::MemLimit,
    /// The lowest address a fixed mapping may use; default the library's
    /// (Linux's default `mmap_min_addr`). `diff` sets the host's.
    pub mmap_min_addr: Option<u64>,
}

/// When a replay audits the machine (`replay --audit`). An audit recounts
/// every reference of every live space, so auditing after each operation
/// costs time proportional to the machine's size per operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Audit {
    /// After every operation: a broken invariant names the operation that
    /// broke it.
    Every,
    /// Once, after the last operation.
    End,
    /// Never.
    #[default]
    Never,
}

/// A queued futex waiter and the address space that started it.
struct NamedWaiter {
    space: String,
    waiter: FutexWaiter,
}

/// A snapshot and the ranges its space's `mmap`s had named when it was
/// taken (a restore gives those back to `maps`, as a fork inherits them).
struct NamedSnapshot {
    snap: Snapshot,
    named: NamedRanges,
}

/// A trace's state on softmm: the machine and the named address spaces.
pub struct SoftmmRunner {
    machine: Machine,
    spaces: HashMap<String, Mm>,
    waiters: HashMap<String, NamedWaiter>,
    pins: HashMap<String, PinnedPages>,
    snapshots: HashMap<String, NamedSnapshot>,
    /// The ranges each space's `mmap`s named, for `maps`.
    named: HashMap<String, NamedRanges>,
    opts: SoftmmOptions,
    /// Audits run so far.
    audits: u64,
    /// The trace's scratch files, by name.
    files: HashMap<String, softmm::File>,
    /// Where their host files live (made at the first `file`); declared
    /// after `files` and `machine`, so their pages are written back before
    /// it goes.
    scratch: Option<ScratchDir>,
}

/// A trace error that stops the replay (exit status 2), as opposed to an
/// operation's own result (which is an output line).
pub type Fatal = String;

impl SoftmmRunner {
    pub fn new(opts: SoftmmOptions) -> Result<SoftmmRunner, Fatal> {
        // One frame cache and no background reclaim: a trace allocates the
        // same frames (and swaps the same pages) on every run, so `frame`
        // numbers in expected outputs are reproducible.
        let (swap, _) = opts.mem.swap(0).map_err(|e| format!("cannot set up swap: {e}"))?;
        let config = Config {
            arena_bytes: opts.arena_bytes.unwrap_or(1 << 30),
            cpu_caches: 1,
            prezero: false,
            futex_keys: opts.futex_keys,
            mem_limit: opts.mem.mem_limit,
            swap,
            background_reclaim: false,
            ..Config::default()
        };
        let config = Config { mmap_min_addr: opts.mmap_min_addr.unwrap_or(config.mmap_min_addr), ..config };
        let swap_file =
            opts.mem.swap_file.as_ref().map_or(String::new(), |p| format!(" with swap file {}", p.display()));
        let machine = Machine::new(config).map_err(|e| format!("cannot set up softmm{swap_file}: {e}"))?;
        Ok(SoftmmRunner {
            machine,
            spaces: HashMap::new(),
            waiters: HashMap::new(),
            pins: HashMap::new(),
            snapshots: HashMap::new(),
            named: HashMap::new(),
            opts,
            audits: 0,
            files: HashMap::new(),
            scratch: None,
        })
    }

    /// The machine's counters so far.
    pub fn stats(&self) -> softmm::MachineStats {
        self.machine.stats()
    }

    fn mm(&self, a: &str) -> Result<&Mm, Fatal> {
        self.spaces.get(a).ok_or_else(|| no_space(a))
    }

    fn file(&self, f: &str) -> Result<&softmm::File, Fatal> {
        self.files.get(f).ok_or_else(|| no_file(f))
    }

    /// Run one operation; returns its output line.
    pub fn run(&mut self, op: &Op) -> Result<String, Fatal> {
        let out = self.run_op(op)?;
        if self.opts.audit == Audit::Every {
            self.audit().map_err(|e| format!("after `{op}`: {e}"))?;
        }
        Ok(out)
    }

    /// The end of the trace: the audit of `Audit::End` (`Every` audited
    /// after the last operation already).
    pub fn finish(&mut self) -> Result<(), Fatal> {
        if self.opts.audit == Audit::End {
            self.audit().map_err(|e| format!("after the last operation: {e}"))?;
        }
        Ok(())
    }

    fn audit(&mut self) -> Result<(), softmm::InvariantError> {
        self.audits += 1;
        self.machine.check_invariants()
    }

    fn run_op(&mut self, op: &Op) -> Result<String, Fatal> {
        Ok(match op {
            Op::New { a } => {
                if self.spaces.contains_key(a) {
                    return Err(format!("address space `{a}` already exists"));
                }
                let mm = self.machine.new_mm().map_err(|e| format!("new {a}: {e}"))?;
                self.spaces.insert(a.clone(), mm);
                self.named.insert(a.clone(), NamedRanges::default());
                "ok".into()
            }
            Op::Mmap { a, addr, len, prot, kind } => {
                let kind = match kind {
                    TKind::Private => MapKind::Private,
                    TKind::Shared => MapKind::Shared,
                };
                let r = self.mm(a)?.mmap(*addr, *len, prot_of(*prot), kind, Placement::Fixed);
                if r.is_ok() {
                    self.named.entry(a.clone()).or_default().add_mmap(*addr, *len);
                }
                unit(r)
            }
            Op::Munmap { a, addr, len } => unit(self.mm(a)?.munmap(*addr, *len)),
            Op::Mprotect { a, addr, len, prot } => unit(self.mm(a)?.mprotect(*addr, *len, prot_of(*prot))),
            Op::Madvise { a, addr, len, advice } => unit(self.mm(a)?.madvise(*addr, *len, *advice)),
            Op::Mremap { a, old, old_len, new_len, flags } => {
                let mut f = softmm::RemapFlags::NONE;
                for (on, bit) in [
                    (flags.maymove, softmm::RemapFlags::MAYMOVE),
                    (flags.fixed.is_some(), softmm::RemapFlags::FIXED),
                    (flags.dontunmap, softmm::RemapFlags::DONTUNMAP),
                ] {
                    if on {
                        f = f.union(bit);
                    }
                }
                match self.mm(a)?.mremap(*old, *old_len, *new_len, f, flags.fixed.unwrap_or(0)) {
                    Ok(at) => {
                        let (line, named) = remap_line(*old, *new_len, flags.fixed.is_some(), at);
                        if let Some((s, e)) = named {
                            self.named.entry(a.clone()).or_default().add_range(s, e);
                        }
                        line
                    }
                    Err(e) => err_line(&e),
                }
            }
            Op::Fork { a, b } => {
                if self.spaces.contains_key(b) {
                    return Err(format!("address space `{b}` already exists"));
                }
                let child = self.mm(a)?.fork_with(self.opts.fork_policy);
                match child {
                    Ok(c) => {
                        self.spaces.insert(b.clone(), c);
                        let named = self.named.get(a).cloned().unwrap_or_default();
                        self.named.insert(b.clone(), named);
                        "ok".into()
                    }
                    Err(e) => err_line(&e),
                }
            }
            Op::Exit { a } => {
                let mm = self.spaces.remove(a).ok_or_else(|| format!("no address space named `{a}`"))?;
                // Its waiter threads end with it (dropping a waiter takes it
                // off its queue), as a process's threads do.
                self.waiters.retain(|_, w| w.space != *a);
                self.named.remove(a);
                mm.exit();
                "ok".into()
            }
            Op::Write { a, addr, bytes } => access(self.mm(a)?.write(*addr, bytes)),
            Op::Fill { a, addr, len, byte } => {
                let len = usize::try_from(*len).map_err(|_| format!("fill length {len} too large"))?;
                access(self.mm(a)?.fill(*addr, len, *byte))
            }
            Op::Read { a, addr, len } => {
                let len = usize::try_from(*len).ok().filter(|&l| l <= 1 << 30);
                let len = len.ok_or_else(|| "read length above 1 GiB".to_string())?;
                let mut buf = vec![0u8; len];
                match self.mm(a)?.read(*addr, &mut buf) {
                    Ok(()) => format!("data {}", hex(&buf)),
                    Err(e) => access(Err::<(), _>(e)),
                }
            }
            Op::Phys { a, addr } => match self.mm(a)?.phys(*addr) {
                Some(f) => format!("frame {}", f.0),
                None => "none".into(),
            },
            Op::Smaps { a, addr } => match self.mm(a)?.smaps(*addr) {
                Some(s) => s.to_string(),
                None => "none".into(),
            },
            Op::FutexWait { a, addr, val, w } => {
                let mm = self.spaces.get(a).ok_or_else(|| no_space(a))?;
                // A reused name replaces its waiter; one still queued is
                // cancelled first (it leaves the queue, as a thread
                // interrupted by a signal would).
                self.waiters.remove(w);
                match mm.futex_wait_start(*addr, *val, BITSET_MATCH_ANY) {
                    Ok(waiter) => {
                        let line = waiter_line(w, waiter.state())?;
                        self.waiters.insert(w.clone(), NamedWaiter { space: a.clone(), waiter });
                        line
                    }
                    Err(Error::Again) => "eagain".into(),
                    Err(e) => err_line(&e),
                }
            }
            Op::FutexWake { a, addr, n } => match self.mm(a)?.futex_wake(*addr, *n) {
                Ok(k) => format!("woken {k}"),
                Err(e) => err_line(&e),
            },
            Op::Waiter { w } => {
                let named = self.waiters.get(w).ok_or_else(|| {
                    format!(
                        "no waiter named `{w}` (never started, its futex_wait did not queue, or its address \
                         space exited)"
                    )
                })?;
                waiter_line(w, named.waiter.state())?
            }
            Op::Pin { a, addr, len, p } => {
                // A reused name drops the pin it named first.
                self.pins.remove(p);
                match self.mm(a)?.pin_pages(*addr, *len, true) {
                    Ok(pinned) => {
                        self.pins.insert(p.clone(), pinned);
                        "ok".into()
                    }
                    Err(e) => err_line(&e),
                }
            }
            Op::Pinned { p, addr, len } => {
                let pinned = self.pins.get(p).ok_or_else(|| no_pin(p))?;
                let len = usize::try_from(*len).ok().filter(|&l| l <= 1 << 30);
                let mut buf = vec![0u8; len.ok_or_else(|| "pinned read length above 1 GiB".to_string())?];
                match pinned.read(*addr, &mut buf) {
                    Ok(()) => format!("data {}", hex(&buf)),
                    Err(e) => err_line(&e),
                }
            }
            Op::Unpin { p } => {
                self.pins.remove(p).ok_or_else(|| no_pin(p))?;
                "ok".into()
            }
            Op::Snapshot { a, s } => {
                // A reused name drops the snapshot it named first.
                self.snapshots.remove(s);
                match self.mm(a)?.snapshot_with(self.opts.fork_policy) {
                    Ok(snap) => {
                        let named = self.named.get(a).cloned().unwrap_or_default();
                        self.snapshots.insert(s.clone(), NamedSnapshot { snap, named });
                        "ok".into()
                    }
                    Err(e) => err_line(&e),
                }
            }
            Op::Restore { a, s } => {
                let mm = self.spaces.get(a).ok_or_else(|| no_space(a))?;
                let named = self.snapshots.get(s).ok_or_else(|| format!("no snapshot named `{s}`"))?;
                match mm.restore(&named.snap) {
                    Ok(()) => {
                        self.named.insert(a.clone(), named.named.clone());
                        "ok".into()
                    }
                    Err(e) => err_line(&e),
                }
            }
            Op::Dirty { a, addr, len } => {
                let mm = self.mm(a)?;
                match dirty_range(*addr, *len).and_then(|(lo, hi)| mm.dirty_pages(lo, hi)) {
                    Ok(pages) => format!("dirty {}", pages.len()),
                    Err(e) => err_line(&e),
                }
            }
            Op::Maps { a } => self.maps(a)?,
            Op::Mlock { a, addr, len } => unit(self.mm(a)?.mlock(*addr, *len)),
            Op::Munlock { a, addr, len } => unit(self.mm(a)?.munlock(*addr, *len)),
            Op::Locked { a, addr } => match self.mm(a)?.smaps(*addr) {
                Some(s) => format!("locked {}", s.locked),
                None => "none".into(),
            },
            Op::File { f, len, byte } => self.new_file(f, *len, *byte)?,
            Op::Pwrite { f, off, bytes } => unit(self.file(f)?.pwrite(*off, bytes)),
            Op::Pread { f, off, len } => {
                let len = usize::try_from(*len).ok().filter(|&l| l <= 1 << 30);
                let mut buf = vec![0u8; len.ok_or_else(|| "pread length above 1 GiB".to_string())?];
                match self.file(f)?.pread(*off, &mut buf) {
                    Ok(n) => format!("data {}", hex(&buf[..n])),
                    Err(e) => err_line(&e),
                }
            }
            Op::Truncate { f, len } => unit(self.file(f)?.truncate(*len)),
            Op::MmapFile { a, addr, len, prot, kind, f, off } => {
                let kind = match kind {
                    TKind::Private => MapKind::Private,
                    TKind::Shared => MapKind::Shared,
                };
                let file = self.file(f)?;
                let r = self.mm(a)?.mmap_file(*addr, *len, prot_of(*prot), kind, Placement::Fixed, file, *off);
                if r.is_ok() {
                    self.named.entry(a.clone()).or_default().add_mmap(*addr, *len);
                }
                unit(r)
            }
            Op::Msync { a, addr, len } => unit(self.mm(a)?.msync(*addr, *len, softmm::MS_SYNC)),
        })
    }

    /// `file F LEN BYTE`: a host file of LEN bytes of BYTE, all of it in the
    /// page cache and clean (written, then synced). The size is set first,
    /// so a size no file may have is that error and makes no file.
    fn new_file(&mut self, f: &str, len: u64, byte: u8) -> Result<String, Fatal> {
        if self.files.contains_key(f) {
            return Err(format!("file `{f}` already exists (a file name is used once)"));
        }
        if self.scratch.is_none() {
            self.scratch = Some(ScratchDir::new("files")?);
        }
        let dir = self.scratch.as_ref().map(|d| d.path().to_owned()).unwrap_or_default();
        let path = scratch::file_path(&dir, f);
        std::fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let file = self.machine.open_file(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        if let Err(e) = file.truncate(len) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Ok(err_line(&e));
        }
        if len > MAX_SCRATCH_FILE {
            return Err(format!("file `{f}`: scratch files are at most 1 GiB"));
        }
        let chunk = vec![byte; 64 << 10];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(chunk.len() as u64) as usize;
            file.pwrite(at, &chunk[..n]).map_err(|e| format!("filling file `{f}`: {e}"))?;
            at += n as u64;
        }
        file.sync().map_err(|e| format!("syncing file `{f}`: {e}"))?;
        self.files.insert(f.to_string(), file);
        Ok("ok".into())
    }

    /// The ranges the trace named in space `a` (none for an unknown name).
    pub fn named_ranges(&self, a: &str) -> Vec<(u64, u64)> {
        self.named.get(a).map(|n| n.ranges().to_vec()).unwrap_or_default()
    }

    /// Space `a`'s VMAs as `(start, end)` (none for an unknown name).
    pub fn vmas(&self, a: &str) -> Vec<(u64, u64)> {
        self.spaces
            .get(a)
            .map(|mm| mm.maps().iter().map(|m| (m.range.start, m.range.end)).collect())
            .unwrap_or_default()
    }

    /// Whether `addr` of space `a` is in a shared mapping.
    pub fn in_shared_vma(&self, a: &str, addr: u64) -> bool {
        let maps = self.spaces.get(a).map(|mm| mm.maps()).unwrap_or_default();
        maps.iter().any(|m| m.range.contains(&addr) && m.perms().ends_with('s'))
    }

    /// `maps A`: A's VMAs over the ranges the trace named in A.
    fn maps(&self, a: &str) -> Result<String, Fatal> {
        let mm = self.mm(a)?;
        let entries = mm.maps().into_iter().map(|m| MapsEntry {
            start: m.range.start,
            end: m.range.end,
            perms: m.perms(),
            kind: self
                .files
                .iter()
                .find_map(|(f, file)| Some(format!("file {f}+{:#x}", mm.file_offset(m.range.start, file)?)))
                .unwrap_or_else(|| "anon".into()),
        });
        Ok(maps_line(entries, self.named.get(a).unwrap_or(&NamedRanges::default())))
    }
}

/// The largest scratch file a trace may make (both runners fill it).
pub const MAX_SCRATCH_FILE: u64 = 1 << 30;

fn no_file(f: &str) -> Fatal {
    format!("no file named `{f}` (never made, or its `file` failed)")
}

/// The page range of `dirty ADDR LEN`, checked as madvise checks its
/// range: ADDR page-aligned, LEN rounded up to pages, no wrap-around.
fn dirty_range(addr: u64, len: u64) -> softmm::Result<(u64, u64)> {
    if addr & 0xfff != 0 {
        return Err(Error::Invalid("dirty: address not page-aligned"));
    }
    let end = len.checked_add(0xfff).map(|l| l & !0xfff).and_then(|l| addr.checked_add(l));
    let hi = end.ok_or(Error::Invalid("dirty: range wraps around the address space"))?;
    Ok((addr, hi))
}

fn no_pin(p: &str) -> Fatal {
    format!("no pin named `{p}` (never pinned, its pin failed, or unpinned)")
}

fn no_space(a: &str) -> Fatal {
    format!("no address space named `{a}` (never created, or exited)")
}

/// The output line of a waiter's state. The replay never cancels a waiter
/// it still holds, and a queued one is past `Idle`: either is a bug.
fn waiter_line(w: &str, state: WaitState) -> Result<String, Fatal> {
    Ok(match state {
        WaitState::Waiting => "waiting".into(),
        WaitState::Woken => "woken".into(),
        WaitState::TimedOut => "timeout".into(),
        WaitState::Exited => return Err(format!("waiter `{w}`: its address space has exited")),
        WaitState::Idle | WaitState::Cancelled => return Err(format!("waiter `{w}` is in state {state:?}")),
    })
}

fn prot_of(p: TProt) -> Prot {
    match p {
        TProt::R => Prot::READ,
        TProt::W => Prot::WRITE,
        TProt::Rw => Prot::RW,
        TProt::None => Prot::NONE,
        TProt::X => Prot::EXEC,
        TProt::Rx => Prot::RX,
        TProt::Wx => Prot::WRITE.union(Prot::EXEC),
        TProt::Rwx => Prot::RWX,
    }
}

/// The output line of a load or store (`read`, `write`, `fill`): a page
/// past the end of a file is SIGBUS there (a system call answers EFAULT).
fn access(r: softmm::Result<()>) -> String {
    match r {
        Err(Error::Bus { .. }) => "sigbus".into(),
        r => unit(r),
    }
}

fn unit<T>(r: softmm::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => err_line(&e),
    }
}

/// The output line of a failed operation.
/// Whether `addr` is outside both halves of x86-64's 48-bit (4-level
/// paging) address space, whose page tables softmm models.
fn non_canonical(addr: u64) -> bool {
    (1 << 47..0xffff_8000_0000_0000).contains(&addr)
}

pub fn err_line(e: &Error) -> String {
    match e {
        // x86-64 raises a general protection fault, not a page fault, for
        // a non-canonical address, and Linux's SIGSEGV then says SI_KERNEL
        // (128), which the trace format writes as the Linux runner does.
        Error::Segv { addr, kind: SegvKind::MapErr } if non_canonical(*addr) => "segv code128".into(),
        Error::Segv { kind: SegvKind::MapErr, .. } => "segv maperr".into(),
        Error::Segv { kind: SegvKind::AccErr, .. } => "segv accerr".into(),
        e => format!("err {}", e.errno_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Audit, SoftmmOptions, SoftmmRunner};
    use crate::trace::parse::parse_line;

    /// Runs a small trace with `audit`; returns the output and the audits.
    fn replay(audit: Audit) -> (Vec<String>, u64) {
        let trace =
            ["new P", "mmap P 0x10000 16K rw private", "write P 0x10000 \"hi\"", "fork P C", "read C 0x10000 2"];
        let mut r = SoftmmRunner::new(SoftmmOptions { audit, ..SoftmmOptions::default() }).unwrap();
        let out = trace.iter().map(|l| r.run(&parse_line(l).unwrap().unwrap()).unwrap()).collect();
        r.finish().unwrap();
        (out, r.audits)
    }

    #[test]
    fn audits_run_when_asked_and_never_change_the_output() {
        let (every, n_every) = replay(Audit::Every);
        let (end, n_end) = replay(Audit::End);
        let (never, n_never) = replay(Audit::Never);
        assert_eq!((n_every, n_end, n_never), (5, 1, 0));
        assert_eq!(every, ["ok", "ok", "ok", "ok", "data 6869"]);
        assert_eq!((&end, &never), (&every, &every));
    }
}
