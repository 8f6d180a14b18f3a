//! Running a trace on softmm.
//!
//! Each named address space is an [`Mm`]; operations map one to one onto the
//! library's calls, and results are printed in the trace format. Operations
//! of later issues (futexes, pins) answer `err ENOSYS` until they exist.

use super::parse::{hex, Op, TKind, TProt};
use softmm::{errno, Advice, Config, Error, ForkPolicy, Machine, MapKind, Mm, Placement, Prot, SegvKind};
use std::collections::HashMap;

/// Options of a softmm replay.
#[derive(Clone, Debug, Default)]
pub struct SoftmmOptions {
    pub fork_policy: ForkPolicy,
    /// Arena size; default 1 GiB (traces are small).
    pub arena_bytes: Option<u64>,
    /// Audit the whole machine (`check_invariants`) after every operation;
    /// a broken invariant stops the replay.
    pub check_invariants: bool,
}

/// A trace's state on softmm: the machine and the named address spaces.
pub struct SoftmmRunner {
    machine: Machine,
    spaces: HashMap<String, Mm>,
    opts: SoftmmOptions,
}

/// A trace error that stops the replay (exit status 2), as opposed to an
/// operation's own result (which is an output line).
pub type Fatal = String;

impl SoftmmRunner {
    pub fn new(opts: SoftmmOptions) -> Result<SoftmmRunner, Fatal> {
        // One frame cache: a trace allocates the same frames on every run,
        // so `frame` numbers in expected outputs are reproducible.
        let config = Config {
            arena_bytes: opts.arena_bytes.unwrap_or(1 << 30),
            cpu_caches: 1,
            prezero: false,
            ..Config::default()
        };
        let machine = Machine::new(config).map_err(|e| format!("cannot set up softmm: {e}"))?;
        Ok(SoftmmRunner { machine, spaces: HashMap::new(), opts })
    }

    /// The machine's counters so far.
    pub fn stats(&self) -> softmm::MachineStats {
        self.machine.stats()
    }

    fn mm(&self, a: &str) -> Result<&Mm, Fatal> {
        self.spaces.get(a).ok_or_else(|| format!("no address space named `{a}` (never created, or exited)"))
    }

    /// Run one operation; returns its output line.
    pub fn run(&mut self, op: &Op) -> Result<String, Fatal> {
        let out = self.run_op(op)?;
        if self.opts.check_invariants {
            self.machine.check_invariants().map_err(|e| format!("after `{op}`: {e}"))?;
        }
        Ok(out)
    }

    fn run_op(&mut self, op: &Op) -> Result<String, Fatal> {
        Ok(match op {
            Op::New { a } => {
                if self.spaces.contains_key(a) {
                    return Err(format!("address space `{a}` already exists"));
                }
                let mm = self.machine.new_mm().map_err(|e| format!("new {a}: {e}"))?;
                self.spaces.insert(a.clone(), mm);
                "ok".into()
            }
            Op::Mmap { a, addr, len, prot, kind } => {
                let kind = match kind {
                    TKind::Private => MapKind::Private,
                    TKind::Shared => MapKind::Shared,
                };
                unit(self.mm(a)?.mmap(*addr, *len, prot_of(*prot), kind, Placement::Fixed))
            }
            Op::Munmap { a, addr, len } => unit(self.mm(a)?.munmap(*addr, *len)),
            Op::Mprotect { a, addr, len, prot } => unit(self.mm(a)?.mprotect(*addr, *len, prot_of(*prot))),
            Op::MadviseDontneed { a, addr, len } => unit(self.mm(a)?.madvise(*addr, *len, Advice::DontNeed)),
            Op::Fork { a, b } => {
                if self.spaces.contains_key(b) {
                    return Err(format!("address space `{b}` already exists"));
                }
                let child = self.mm(a)?.fork_with(self.opts.fork_policy);
                match child {
                    Ok(c) => {
                        self.spaces.insert(b.clone(), c);
                        "ok".into()
                    }
                    Err(e) => err_line(&e),
                }
            }
            Op::Exit { a } => {
                let mm = self.spaces.remove(a).ok_or_else(|| format!("no address space named `{a}`"))?;
                mm.exit();
                "ok".into()
            }
            Op::Write { a, addr, bytes } => unit(self.mm(a)?.write(*addr, bytes)),
            Op::Fill { a, addr, len, byte } => {
                let len = usize::try_from(*len).map_err(|_| format!("fill length {len} too large"))?;
                unit(self.mm(a)?.fill(*addr, len, *byte))
            }
            Op::Read { a, addr, len } => {
                let len = usize::try_from(*len).ok().filter(|&l| l <= 1 << 30);
                let len = len.ok_or_else(|| "read length above 1 GiB".to_string())?;
                let mut buf = vec![0u8; len];
                match self.mm(a)?.read(*addr, &mut buf) {
                    Ok(()) => format!("data {}", hex(&buf)),
                    Err(e) => err_line(&e),
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
            Op::FutexWait { a, .. } | Op::FutexWake { a, .. } => {
                self.mm(a)?;
                format!("err {}", errno::name(errno::ENOSYS))
            }
            Op::Waiter { .. } | Op::Pin { .. } | Op::Pinned { .. } | Op::Unpin { .. } => {
                format!("err {}", errno::name(errno::ENOSYS))
            }
        })
    }
}

fn prot_of(p: TProt) -> Prot {
    match p {
        TProt::R => Prot::READ,
        TProt::W => Prot::WRITE,
        TProt::Rw => Prot::RW,
        TProt::None => Prot::NONE,
    }
}

fn unit<T>(r: softmm::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => err_line(&e),
    }
}

/// The output line of a failed operation.
pub fn err_line(e: &Error) -> String {
    match e {
        Error::Segv { kind: SegvKind::MapErr, .. } => "segv maperr".into(),
        Error::Segv { kind: SegvKind::AccErr, .. } => "segv accerr".into(),
        e => format!("err {}", e.errno_name()),
    }
}
