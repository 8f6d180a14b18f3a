//! Running a program: read and load the executable into a fresh softmm
//! address space, start one hart, and serve its system calls until it
//! exits or a fault ends it.

use crate::elf::Elf;
use crate::hart::Hart;
use crate::io::{Input, Output};
use crate::loader::{load, LoadError, StartInfo};
use crate::mem::Memory;
use crate::syscall::Kernel;
use crate::task::{lock, Process, Stdio, System, ThreadCtl};
use crate::thread::{prepare, run_thread};
use softmm::{Config, Machine};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// How to run a program.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// The argument vector, `argv[0]` included.
    pub argv: Vec<Vec<u8>>,
    /// The environment, `NAME=value` strings.
    pub envp: Vec<Vec<u8>>,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    /// At exit, print the unknown system calls and their counts to the
    /// guest's stderr stream.
    pub report_syscalls: bool,
    /// Bytes of host address space the machine reserves for frames.
    pub arena_bytes: u64,
}

impl ExecOptions {
    /// The host's streams, no environment, `argv = [program]`.
    pub fn new(program: &Path) -> ExecOptions {
        ExecOptions {
            argv: vec![program.as_os_str().as_encoded_bytes().to_vec()],
            envp: Vec::new(),
            stdin: Input::Host,
            stdout: Output::HostStdout,
            stderr: Output::HostStderr,
            report_syscalls: false,
            arena_bytes: 4 << 30,
        }
    }
}

/// How the program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// The status a shell would see: the exit code, or 128 + signal.
    pub status: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Instructions retired.
    pub instret: u64,
    /// System calls answered ENOSYS, by number.
    pub unknown_syscalls: BTreeMap<u64, u64>,
}

/// Why a program could not be started.
#[derive(Debug, Error)]
pub enum ExecError {
    #[error("cannot read {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("cannot load {path}: {err}")]
    Load { path: PathBuf, err: LoadError },
    #[error("cannot create the machine: {0}")]
    Machine(#[from] softmm::Error),
}

/// Run `program` to completion.
pub fn exec(program: &Path, opts: ExecOptions) -> Result<ExitInfo, ExecError> {
    let report_syscalls = opts.report_syscalls;
    let Started { machine: _machine, sys, p, hart, kernel, mut stderr } = start(program, opts)?;
    run_thread(hart, kernel);
    let ending = sys.wait_all(&p);
    // Mapped files' dirty pages reach their host files.
    sys.page_cache.sync_all();
    if let Some(m) = &ending.message {
        // What a shell prints for a killed child, with the guest's details.
        let _ = stderr.write_all(m.as_bytes());
    }
    let unknown = lock(&p.unknown).clone();
    if report_syscalls {
        let _ = stderr.write_all(report(&unknown).as_bytes());
    }
    let instret = p.instret.load(std::sync::atomic::Ordering::SeqCst);
    Ok(ExitInfo { status: ending.status, signal: ending.signal, instret, unknown_syscalls: unknown })
}

/// A program loaded into a fresh machine, its first thread ready to run.
pub(crate) struct Started {
    /// The machine whose frames the space uses.
    pub machine: Machine,
    pub sys: Arc<System>,
    pub p: Arc<Process>,
    pub hart: Hart,
    pub kernel: Kernel,
    /// Where the run's own messages go.
    pub stderr: Output,
}

/// Load `program` as `opts` says: a machine, a space, the first process
/// and its thread's hart and kernel side.
pub(crate) fn start(program: &Path, opts: ExecOptions) -> Result<Started, ExecError> {
    let file = std::fs::read(program).map_err(|err| ExecError::Read { path: program.into(), err })?;
    let load_err = |err: LoadError| ExecError::Load { path: program.into(), err };
    let elf = Elf::parse(&file).map_err(|e| load_err(e.into()))?;
    let machine = Machine::new(Config { arena_bytes: opts.arena_bytes, ..Config::default() })?;
    let mm = machine.new_mm()?;
    let mut random = [0u8; 16];
    crate::io::random_bytes(&mut random).map_err(|err| ExecError::Read { path: "getrandom".into(), err })?;
    let ids = crate::exec::host_ids();
    let execfn = program.as_os_str().as_encoded_bytes().to_vec();
    let info = StartInfo { argv: &opts.argv, envp: &opts.envp, execfn: &execfn, random, ids };
    let image = load(&mm, &file, &elf, &info).map_err(load_err)?;
    let exe = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    let pid = u64::from(rustix::process::getpid().as_raw_nonzero().get() as u32);
    let stderr = opts.stderr.clone();
    let io = Stdio { stdin: opts.stdin, stdout: opts.stdout, stderr: opts.stderr };
    let sys = System::new(pid);
    let tramp = crate::sigframe::map_trampoline(&mm).map_err(|e| load_err(e.into()))?;
    let p = Process::new(sys.clone(), pid, mm, image.brk, exe.as_os_str().as_encoded_bytes().to_vec(), io);
    p.sigreturn.store(tramp, std::sync::atomic::Ordering::SeqCst);
    let ctl = ThreadCtl::new(pid);
    p.add_thread(ctl.clone());
    let mut hart = Hart::new(Memory::new(p.mm().accessor()), image.entry, image.sp);
    prepare(&mut hart, &p, &ctl);
    let kernel = Kernel::new(p.clone(), ctl);
    Ok(Started { machine, sys, p, hart, kernel, stderr })
}

/// The unknown-system-call report.
pub fn report(unknown: &BTreeMap<u64, u64>) -> String {
    if unknown.is_empty() {
        return "softmm: every system call was known\n".to_string();
    }
    let mut s = String::from("softmm: system calls answered ENOSYS:\n");
    for (n, c) in unknown {
        s.push_str(&format!("  {:>4} {:<16} {c}\n", n, crate::syscall::name(*n)));
    }
    s
}
