//! A snapshot server for fuzzing hosts: run a program once up to a
//! marker, take a softmm snapshot of its address space there ([`Mm::snapshot`])
//! with its registers and process state, then run each input from that
//! point: restore the space ([`Mm::restore`], which costs what the last
//! run changed), restore the registers, give the input as the standard
//! input, run to the end and report how it ended. It does what an AFL
//! fork server does with `fork`, without a fork per input.
//!
//! The marker ([`Marker`]) is either a call the program makes, an `ecall`
//! with `a7` = [`SNAPSHOT_CALL`] (it returns 0, in the first run and in
//! every run after; outside a server the call does nothing and returns 0),
//! or the program's first `read`/`readv` of descriptor 0, which each run
//! then makes again on its own input.
//!
//! Every run starts from the marker's state: memory (private memory and
//! mappings, the break), the registers (integer, floating point, `fcsr`),
//! the descriptor table, the working directory, signal actions, mask and
//! alternate stack, pending signals, the clear-tid word and robust list of
//! the thread. What a snapshot does not hold is shared between runs as a
//! fork server's children share it with their parent: shared memory
//! (`MAP_SHARED`, System V segments, and the host files behind shared
//! mappings), and open host files other than the standard streams, with
//! their offsets. Descriptors on the standard streams the program started
//! with (0, 1, 2 and their dups) are on the run's streams: the input's
//! bytes, then end of file, and captured output.
//!
//! At the marker the program must be one thread of one process; a run may
//! start threads and processes (the run ends when all have ended, as
//! `exec` does). Each run's process has the marker's pid, and the harts'
//! decoded-instruction caches are kept from run to run: a restore is an
//! `Event::Restore` over the pages it puts back, which drops what a hart
//! decoded there (see [`crate::icache`]).

use crate::files::OpenFile;
use crate::hart::Hart;
use crate::icache::{CodeWatch, ICache};
use crate::io::{Input, Output};
use crate::mem::Memory;
use crate::process::{start, ExecError, ExecOptions, Started};
use crate::signal::SIGKILL;
use crate::syscall::Kernel;
use crate::task::{lock, Ending, ProcessState, System, ThreadCtl};
use crate::thread::drive;
use softmm::{Machine, Mm, Snapshot, Subscription};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// The marker call's number (`a7`): "snap" in ASCII, far above Linux's
/// system call numbers.
pub const SNAPSHOT_CALL: u64 = 0x736e_6170;

const READ: u64 = 63;
const READV: u64 = 65;

/// Where the snapshot is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// An `ecall` with `a7` = [`SNAPSHOT_CALL`]; each run resumes after
    /// it with `a0` = 0.
    Call,
    /// The first `read` or `readv` of descriptor 0; each run resumes at
    /// that call, which then reads the run's input.
    StdinRead,
}

impl Marker {
    /// Whether system call `n` with first argument `a0` is this marker.
    pub(crate) fn is_at(self, n: u64, a0: u64) -> bool {
        match self {
            Marker::Call => n == SNAPSHOT_CALL,
            Marker::StdinRead => (n == READ || n == READV) && a0 == 0,
        }
    }

    /// Set the registers where runs resume (the hart stopped past the
    /// marker's `ecall`).
    pub(crate) fn resume_point(self, hart: &mut Hart) {
        match self {
            Marker::Call => hart.x[10] = 0,
            // Back to the ecall (4 bytes: it has no compressed form).
            Marker::StdinRead => hart.pc = hart.pc.wrapping_sub(4),
        }
    }
}

/// Why a server could not start or a run could not be made.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("the program ended before its snapshot marker (status {status}){}", message.as_deref().map(|m| format!(": {}", m.trim_end())).unwrap_or_default())]
    NoMarker { status: i32, signal: Option<i32>, message: Option<String> },
    #[error(
        "the snapshot server takes single-threaded programs: at the marker the program had {threads} threads and {processes} other processes"
    )]
    NotSingleThreaded { threads: usize, processes: usize },
    #[error("cannot take the snapshot: {0}")]
    Snapshot(softmm::Error),
    #[error("cannot restore the snapshot: {0}")]
    Restore(softmm::Error),
}

/// How one run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutput {
    /// The status a shell would see: the exit code, or 128 + signal.
    pub status: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// The run's standard output and error (the latter with the message a
    /// shell prints for a killed process).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Instructions retired by the run.
    pub instret: u64,
    /// The run was killed for passing the server's time limit.
    pub timed_out: bool,
}

/// The registers a run starts with.
#[derive(Clone, Copy)]
struct Regs {
    x: [u64; 32],
    f: [u64; 32],
    pc: u64,
    fcsr: u32,
}

/// The thread's kernel-side state at the marker.
#[derive(Clone)]
struct ThreadState {
    blocked: u64,
    /// Signals sent to the thread and not yet delivered.
    pending: Vec<crate::signal::SigInfo>,
    clear_child_tid: u64,
    altstack: (u64, u64, bool),
    robust_list: Option<u64>,
}

/// A program stopped at its marker, and the runs made from there.
///
/// ```no_run
/// use softmm_rv::server::{Marker, SnapshotServer};
/// use softmm_rv::ExecOptions;
/// use std::path::Path;
///
/// let program = Path::new("target.riscv");
/// let mut server = SnapshotServer::start(program, ExecOptions::new(program), Marker::Call)?;
/// for input in [&b"one"[..], b"two"] {
///     let out = server.run(input)?;
///     println!("{} -> {}", String::from_utf8_lossy(input), out.status);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SnapshotServer {
    /// The space every run uses; dropped before the snapshot and machine.
    mm: Arc<Mm>,
    snap: Snapshot,
    sys: Arc<System>,
    pid: u64,
    regs: Regs,
    thread: ThreadState,
    process: ProcessState,
    /// The startup's standard streams, each run's replacing them.
    streams: [Option<Arc<OpenFile>>; 3],
    unknown: Arc<Mutex<BTreeMap<u64, u64>>>,
    /// The space's code watch, kept subscribed for every run's process.
    watch: Option<Arc<CodeWatch>>,
    _sub: Option<Subscription>,
    /// The main hart's decoded instructions, kept between runs.
    icache: Option<ICache>,
    timeout: Option<Duration>,
    _machine: Machine,
}

impl SnapshotServer {
    /// Load `program` as [`crate::exec`] would (`opts`: arguments,
    /// environment, where output before the marker goes; the standard
    /// input is empty) and run it to `marker`. Errors: the program cannot
    /// be loaded, ends before the marker, is not one thread of one
    /// process at the marker, or the snapshot fails.
    pub fn start(program: &Path, mut opts: ExecOptions, marker: Marker) -> Result<SnapshotServer, ServerError> {
        opts.stdin = Input::Bytes(Arc::new(Vec::new()), 0);
        let Started { machine, sys, p, mut hart, mut kernel, mut stderr } = start(program, opts)?;
        let streams = {
            let files = lock(&p.files);
            [files.get(0).ok(), files.get(1).ok(), files.get(2).ok()]
        };
        kernel.pause_at = Some(marker);
        if !drive(&mut hart, &mut kernel) {
            let ending = sys.wait_all(&p);
            if let Some(m) = &ending.message {
                let _ = stderr.write_all(m.as_bytes());
            }
            return Err(ServerError::NoMarker {
                status: ending.status,
                signal: ending.signal,
                message: ending.message,
            });
        }
        kernel.pause_at = None;
        let threads = p.threads().len();
        let processes = sys.all().iter().filter(|q| q.pid != p.pid).count();
        if threads != 1 || processes != 0 {
            // End everything the program started, then its paused thread.
            let end = || Ending::killed(SIGKILL, String::new());
            for q in sys.all() {
                q.exit_group(end());
            }
            kernel.exit_thread(&mut hart, 0);
            sys.wait_all(&p);
            return Err(ServerError::NotSingleThreaded { threads, processes });
        }
        let mm = p.mm();
        let tid = u32::try_from(p.pid).ok();
        let thread = ThreadState {
            blocked: kernel.ctl.blocked.load(Ordering::SeqCst),
            pending: lock(&kernel.ctl.pending).clone(),
            clear_child_tid: kernel.clear_child_tid,
            altstack: kernel.altstack,
            robust_list: tid.and_then(|t| mm.robust_list(t)),
        };
        let regs = Regs { x: hart.x, f: hart.f, pc: hart.pc, fcsr: hart.fcsr };
        let process = p.save();
        let snap = mm.snapshot().map_err(ServerError::Snapshot)?;
        let watch = p.code_watch();
        let sub = p.take_code_subscription();
        let icache = hart.take_icache();
        let unknown = p.unknown.clone();
        let pid = p.pid;
        sys.clear();
        Ok(SnapshotServer {
            mm,
            snap,
            sys,
            pid,
            regs,
            thread,
            process,
            streams,
            unknown,
            watch,
            _sub: sub,
            icache,
            timeout: None,
            _machine: machine,
        })
    }

    /// Kill each later run (SIGKILL, with `timed_out` set) that lasts
    /// longer than `limit`; `None`: no limit (the default).
    pub fn set_timeout(&mut self, limit: Option<Duration>) {
        self.timeout = limit;
    }

    /// Unknown system calls of every run so far, by number.
    pub fn unknown_syscalls(&self) -> BTreeMap<u64, u64> {
        lock(&self.unknown).clone()
    }

    /// Run from the marker with `input` as the standard input, to the end
    /// of every process the run starts.
    pub fn run(&mut self, input: &[u8]) -> Result<RunOutput, ServerError> {
        self.mm.restore(&self.snap).map_err(ServerError::Restore)?;
        self.sys.clear();
        let (out, out_buf) = Output::capture();
        let (err, err_buf) = Output::capture();
        let stdin = Input::Bytes(Arc::new(input.to_vec()), 0);
        let new = [
            OpenFile::Input(Mutex::new(stdin)),
            OpenFile::Output(Mutex::new(out)),
            OpenFile::Output(Mutex::new(err.clone())),
        ];
        let pairs: Vec<_> =
            self.streams.iter().zip(new).filter_map(|(old, new)| Some((old.clone()?, Arc::new(new)))).collect();
        let files = self.process.files.replace_files(&pairs);
        let p = crate::task::Process::resumed(
            self.sys.clone(),
            self.pid,
            self.mm.clone(),
            self.watch.clone(),
            &self.process,
            files,
            self.unknown.clone(),
        );
        let ctl = ThreadCtl::new(self.pid);
        ctl.blocked.store(self.thread.blocked, Ordering::SeqCst);
        lock(&ctl.pending).clone_from(&self.thread.pending);
        if !self.thread.pending.is_empty() || !self.process.has_no_pending() {
            // Delivered at the first stop, as after the marker's call.
            ctl.attention.store(true, Ordering::SeqCst);
        }
        p.add_thread(ctl.clone());
        let mut hart = Hart::new(Memory::new(self.mm.accessor()), self.regs.pc, self.regs.x[2]);
        hart.x = self.regs.x;
        hart.f = self.regs.f;
        hart.fcsr = self.regs.fcsr;
        match (self.icache.take(), &self.watch) {
            (Some(c), _) => hart.set_icache(c),
            (None, Some(w)) => hart.set_icache(ICache::new(w.clone())),
            (None, None) => {}
        }
        hart.set_attention(ctl.attention.clone());
        if let (Some(head), Ok(tid)) = (self.thread.robust_list, u32::try_from(self.pid)) {
            // A head the program registered once; the last run's exit
            // forgot it.
            let _ = self.mm.set_robust_list(tid, head, softmm::futex::ROBUST_LIST_HEAD_LEN);
        }
        let mut k = Kernel::new(p.clone(), ctl);
        k.clear_child_tid = self.thread.clear_child_tid;
        k.altstack = self.thread.altstack;
        let timed_out = AtomicBool::new(false);
        let ending = std::thread::scope(|s| {
            let (done, wait) = channel::<()>();
            if let Some(limit) = self.timeout {
                let (sys, timed_out) = (self.sys.clone(), &timed_out);
                s.spawn(move || {
                    if wait.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
                        timed_out.store(true, Ordering::SeqCst);
                        for q in sys.all().iter().filter(|q| !q.is_done()) {
                            q.exit_group(Ending::killed(SIGKILL, "softmm: run timed out\n".into()));
                        }
                    }
                });
            }
            drive(&mut hart, &mut k);
            let ending = self.sys.wait_all(&p);
            drop(done);
            ending
        });
        // Keep the decoded instructions unless the run left the space
        // (execve gives the hart another watch).
        if let (Some(c), Some(w)) = (hart.take_icache(), &self.watch) {
            if Arc::ptr_eq(c.watch(), w) {
                self.icache = Some(c);
            }
        }
        self.sys.page_cache.sync_all();
        if let Some(m) = &ending.message {
            let mut err = err;
            let _ = err.write_all(m.as_bytes());
        }
        let stdout = std::mem::take(&mut *lock(&out_buf));
        let stderr = std::mem::take(&mut *lock(&err_buf));
        let instret = p.instret.load(Ordering::SeqCst);
        Ok(RunOutput {
            status: ending.status,
            signal: ending.signal,
            stdout,
            stderr,
            instret,
            timed_out: timed_out.load(Ordering::SeqCst),
        })
    }
}
