//! Guest processes and threads: what the threads of one process share (a
//! softmm address space, the break, the standard streams, signal actions)
//! and the control block each thread exposes to the others (its attention
//! flag, the futex wait to cancel, the host thread to wake), with how a
//! process ends (`exit_group`, a fatal signal, its last thread leaving).

use crate::files::FdTable;
use crate::icache::CodeWatch;
use crate::io::{Input, Output};
use crate::signal::{SigAction, SigInfo, NSIG};
use softmm::{Mm, Subscription};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lock a mutex, taking the data of a poisoned one too: a guest thread
/// whose host thread panicked must not take the others down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    /// The status a shell would see: the exit code, or 128 + signal.
    pub status: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// What a shell prints for a killed process, with the guest's details.
    pub message: Option<String>,
}

impl Ending {
    pub fn code(code: i32) -> Ending {
        Ending { status: code & 0xff, signal: None, message: None }
    }

    pub fn killed(sig: i32, message: String) -> Ending {
        Ending { status: 128 + sig, signal: Some(sig), message: Some(message) }
    }
}

/// Cancels one futex wait.
pub type Canceller = Box<dyn Fn() + Send>;

/// The program break.
#[derive(Clone, Copy, Debug)]
pub struct Brk {
    pub start: u64,
    pub cur: u64,
}

/// One thread as the others see it.
pub struct ThreadCtl {
    pub tid: u64,
    /// Raised to stop the thread's hart between instructions.
    pub attention: Arc<AtomicBool>,
    /// Told to leave on its own (another thread's execve).
    killed: AtomicBool,
    /// The blocked-signal mask (senders look at it to pick a thread).
    pub blocked: AtomicU64,
    /// Signals sent to this thread (tgkill), not yet delivered.
    pub pending: Mutex<Vec<SigInfo>>,
    /// Cancels the futex wait the thread is in (softmm does not export
    /// the canceller's type, so it is held as a closure).
    wait: Mutex<Option<Canceller>>,
    /// The host thread, to wake from a sleep.
    host: Mutex<Option<std::thread::Thread>>,
}

impl ThreadCtl {
    pub fn new(tid: u64) -> Arc<ThreadCtl> {
        Arc::new(ThreadCtl {
            tid,
            attention: Arc::new(AtomicBool::new(false)),
            killed: AtomicBool::new(false),
            blocked: AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
            wait: Mutex::new(None),
            host: Mutex::new(None),
        })
    }

    /// Called on the host thread that runs this guest thread.
    pub fn bind_host(&self) {
        *lock(&self.host) = Some(std::thread::current());
    }

    pub fn attention(&self) -> bool {
        self.attention.load(Ordering::SeqCst)
    }

    /// Make this thread leave (without ending its process).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.interrupt();
    }

    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Raise the flag and interrupt a futex wait or sleep.
    pub fn interrupt(&self) {
        self.attention.store(true, Ordering::SeqCst);
        if let Some(c) = lock(&self.wait).as_ref() {
            c();
        }
        if let Some(t) = lock(&self.host).as_ref() {
            t.unpark();
        }
    }

    /// Register the wait `c` cancels; `false` if the flag is already up
    /// (the caller cancels and answers EINTR).
    pub fn begin_wait(&self, c: Canceller) -> bool {
        *lock(&self.wait) = Some(c);
        !self.attention()
    }

    pub fn end_wait(&self) {
        *lock(&self.wait) = None;
    }

    /// Sleep for `d`, or until interrupted: `false` if interrupted.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now().checked_add(d);
        loop {
            if self.attention() {
                return false;
            }
            let now = Instant::now();
            match until {
                Some(u) if u <= now => return true,
                Some(u) => std::thread::park_timeout(u - now),
                None => std::thread::park(),
            }
        }
    }
}

/// The live threads of a process and how it ends.
#[derive(Default)]
struct Group {
    threads: BTreeMap<u64, Arc<ThreadCtl>>,
    /// Set by the first `exit_group` or fatal signal.
    ending: Option<Ending>,
    /// The leader's own `exit` code (the status when no group exit came).
    leader_code: i32,
    /// Every thread has left: the process is a zombie until reaped.
    done: bool,
}

/// Every guest process of one run: the process table (pids and thread
/// ids come from one counter, as in one pid namespace), the condition
/// `wait4` and `vfork` sleep on, and the host threads to join.
pub struct System {
    procs: Mutex<BTreeMap<u64, Arc<Process>>>,
    changed: Condvar,
    next_id: AtomicU64,
    hosts: Mutex<Vec<JoinHandle<()>>>,
    /// Files mapped shared, one page cache per host file for the run.
    pub page_cache: crate::mapped::PageCache,
    /// What `/proc/PID/maps` names mapped files and segments by.
    pub object_names: crate::proc::ObjectNames,
    /// System V shared memory segments.
    pub shm: crate::sysv::ShmRegistry,
}

/// How often a wait on the process table looks at its thread's
/// attention flag.
const WAIT_SLICE: Duration = Duration::from_millis(20);

impl System {
    /// A system whose ids start after `first_pid` (the first process's).
    pub fn new(first_pid: u64) -> Arc<System> {
        Arc::new(System {
            procs: Mutex::new(BTreeMap::new()),
            changed: Condvar::new(),
            next_id: AtomicU64::new(first_pid + 1),
            hosts: Mutex::new(Vec::new()),
            page_cache: crate::mapped::PageCache::default(),
            object_names: crate::proc::ObjectNames::default(),
            shm: crate::sysv::ShmRegistry::default(),
        })
    }

    /// A fresh process or thread id.
    pub fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    pub fn add(&self, p: Arc<Process>) {
        lock(&self.procs).insert(p.pid, p);
        self.changed.notify_all();
    }

    pub fn get(&self, pid: u64) -> Option<Arc<Process>> {
        lock(&self.procs).get(&pid).cloned()
    }

    /// Every process not yet reaped.
    pub fn all(&self) -> Vec<Arc<Process>> {
        lock(&self.procs).values().cloned().collect()
    }

    /// Forget every process (a snapshot server's next run starts from an
    /// empty table: no zombie or child of an earlier run is seen).
    pub fn clear(&self) {
        lock(&self.procs).clear();
        self.changed.notify_all();
    }

    /// Keep a host thread to join at the end of the run.
    pub fn keep_host(&self, h: JoinHandle<()>) {
        lock(&self.hosts).push(h);
    }

    /// Tell the sleepers that a process ended, exec'd or appeared.
    pub fn notify(&self) {
        let _g = lock(&self.procs);
        self.changed.notify_all();
    }

    /// Sleep until `f` answers `Some`, looking again at each change;
    /// `None` when `ctl`'s attention flag goes up first.
    pub fn wait_for<T>(
        &self,
        ctl: &ThreadCtl,
        mut f: impl FnMut(&mut BTreeMap<u64, Arc<Process>>) -> Option<T>,
    ) -> Option<T> {
        let mut procs = lock(&self.procs);
        loop {
            if let Some(v) = f(&mut procs) {
                return Some(v);
            }
            if ctl.attention() {
                return None;
            }
            procs = self.changed.wait_timeout(procs, WAIT_SLICE).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Wait until every process has ended (as a shell reading a pipe
    /// waits for every writer), join the host threads, and say how
    /// `first` ended.
    pub fn wait_all(&self, first: &Process) -> Ending {
        {
            let mut procs = lock(&self.procs);
            while procs.values().any(|p| !p.is_done()) || !first.is_done() {
                procs = self.changed.wait_timeout(procs, WAIT_SLICE).unwrap_or_else(|p| p.into_inner()).0;
            }
        }
        loop {
            let hosts = std::mem::take(&mut *lock(&self.hosts));
            if hosts.is_empty() {
                break;
            }
            for h in hosts {
                // A host thread that panicked has already left its
                // process (run_thread's handler did it).
                let _ = h.join();
            }
        }
        first.ending_now().unwrap_or_else(|| Ending::code(0))
    }
}

/// The code watch of an address space and its subscription.
struct Code {
    watch: Option<Arc<CodeWatch>>,
    _sub: Option<Subscription>,
}

impl Code {
    fn watch(mm: &Mm) -> Code {
        match CodeWatch::register(mm) {
            Some((w, s)) => Code { watch: Some(w), _sub: Some(s) },
            None => Code { watch: None, _sub: None },
        }
    }
}

/// What a snapshot server keeps of a process at its marker, besides the
/// address space and the registers: what every run's process starts with.
#[derive(Clone)]
pub struct ProcessState {
    ppid: u64,
    exe: Vec<u8>,
    brk: Brk,
    pub(crate) files: FdTable,
    cwd: Cwd,
    actions: [SigAction; NSIG],
    pending: Vec<SigInfo>,
    sigreturn: u64,
}

impl ProcessState {
    /// No signal was pending for the process at the marker.
    pub fn has_no_pending(&self) -> bool {
        self.pending.is_empty()
    }
}

/// What the threads of one process share.
pub struct Process {
    pub pid: u64,
    pub sys: Arc<System>,
    pub ppid: AtomicU64,
    mm: Mutex<Arc<Mm>>,
    pub exe: Mutex<Vec<u8>>,
    pub brk: Mutex<Brk>,
    /// The descriptor table (threads share it; a fork copies it).
    pub files: Mutex<FdTable>,
    /// The working directory: a host directory descriptor and its path.
    pub cwd: Mutex<Cwd>,
    pub actions: Mutex<[SigAction; NSIG]>,
    /// Signals sent to the process, not yet delivered to a thread.
    pub pending: Mutex<Vec<SigInfo>>,
    /// The signal-return trampoline (what the vDSO's `__vdso_rt_sigreturn`
    /// is on Linux): handlers return to it.
    pub sigreturn: AtomicU64,
    /// Unknown system calls by number, for the report (one table for
    /// every process of the run).
    pub unknown: Arc<Mutex<BTreeMap<u64, u64>>>,
    /// Instructions retired by threads that have ended.
    pub instret: AtomicU64,
    code: Mutex<Code>,
    group: Mutex<Group>,
    /// Signalled when a thread leaves (exec waits for the others).
    left: Condvar,
    /// Set once the process has exec'd or ended: a vfork parent resumes.
    released: AtomicBool,
    /// Every thread has left and the parent has been sent SIGCHLD: `wait4`
    /// may reap it now. (Linux's `exit_notify` signals the parent as the
    /// task becomes a zombie, so a parent's `waitpid` never returns before
    /// its SIGCHLD is pending.)
    reapable: AtomicBool,
}

/// A working directory: a host descriptor (paths resolve against it, so
/// each guest process has its own while the host's stays put) and the
/// path getcwd reports.
#[derive(Clone)]
pub struct Cwd {
    /// `None`: the host's own working directory.
    pub dir: Option<Arc<rustix::fd::OwnedFd>>,
    pub path: std::path::PathBuf,
}

impl Cwd {
    fn host() -> Cwd {
        Cwd { dir: None, path: std::env::current_dir().unwrap_or_else(|_| "/".into()) }
    }
}

/// The standard streams a process starts with.
pub struct Stdio {
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
}

impl Process {
    /// The first process of a run.
    pub fn new(sys: Arc<System>, pid: u64, mm: Mm, brk: u64, exe: Vec<u8>, io: Stdio) -> Arc<Process> {
        let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u64);
        let p = Arc::new(Process {
            pid,
            sys,
            ppid: AtomicU64::new(ppid),
            code: Mutex::new(Code::watch(&mm)),
            mm: Mutex::new(Arc::new(mm)),
            exe: Mutex::new(exe),
            brk: Mutex::new(Brk { start: brk, cur: brk }),
            files: Mutex::new(FdTable::standard(io.stdin, io.stdout, io.stderr)),
            cwd: Mutex::new(Cwd::host()),
            actions: Mutex::new([SigAction::default(); NSIG]),
            pending: Mutex::new(Vec::new()),
            sigreturn: AtomicU64::new(0),
            unknown: Arc::new(Mutex::new(BTreeMap::new())),
            instret: AtomicU64::new(0),
            group: Mutex::new(Group::default()),
            left: Condvar::new(),
            released: AtomicBool::new(false),
            reapable: AtomicBool::new(false),
        });
        p.sys.add(p.clone());
        p
    }

    /// The state a snapshot server's runs start from (see
    /// [`ProcessState`]).
    pub fn save(&self) -> ProcessState {
        ProcessState {
            ppid: self.ppid.load(Ordering::SeqCst),
            exe: lock(&self.exe).clone(),
            brk: *lock(&self.brk),
            files: lock(&self.files).clone(),
            cwd: lock(&self.cwd).clone(),
            actions: *lock(&self.actions),
            pending: lock(&self.pending).clone(),
            sigreturn: self.sigreturn.load(Ordering::SeqCst),
        }
    }

    /// A process as `state` was saved, over `mm` (a snapshot server's
    /// run), its harts following `watch` (whose subscription the caller
    /// keeps), with `files` for its descriptor table; in `sys`'s table.
    pub fn resumed(
        sys: Arc<System>,
        pid: u64,
        mm: Arc<Mm>,
        watch: Option<Arc<CodeWatch>>,
        state: &ProcessState,
        files: FdTable,
        unknown: Arc<Mutex<BTreeMap<u64, u64>>>,
    ) -> Arc<Process> {
        let p = Arc::new(Process {
            pid,
            sys,
            ppid: AtomicU64::new(state.ppid),
            code: Mutex::new(Code { watch, _sub: None }),
            mm: Mutex::new(mm),
            exe: Mutex::new(state.exe.clone()),
            brk: Mutex::new(state.brk),
            files: Mutex::new(files),
            cwd: Mutex::new(state.cwd.clone()),
            actions: Mutex::new(state.actions),
            pending: Mutex::new(state.pending.clone()),
            sigreturn: AtomicU64::new(state.sigreturn),
            unknown,
            instret: AtomicU64::new(0),
            group: Mutex::new(Group::default()),
            left: Condvar::new(),
            released: AtomicBool::new(false),
            reapable: AtomicBool::new(false),
        });
        p.sys.add(p.clone());
        p
    }

    /// Take the subscription of this process's code watch, leaving the
    /// watch: the caller keeps it subscribed past this process (a
    /// snapshot server hands the watch to each run's process).
    pub fn take_code_subscription(&self) -> Option<Subscription> {
        lock(&self.code)._sub.take()
    }

    /// A child of this process (fork, vfork) over `mm`: the break, the
    /// executable, a copy of the descriptor table and the signal actions
    /// are inherited.
    pub fn child(&self, pid: u64, mm: Arc<Mm>) -> Arc<Process> {
        Arc::new(Process {
            pid,
            sys: self.sys.clone(),
            ppid: AtomicU64::new(self.pid),
            code: Mutex::new(Code::watch(&mm)),
            mm: Mutex::new(mm),
            exe: Mutex::new(lock(&self.exe).clone()),
            brk: Mutex::new(*lock(&self.brk)),
            files: Mutex::new(lock(&self.files).clone()),
            cwd: Mutex::new(lock(&self.cwd).clone()),
            actions: Mutex::new(*lock(&self.actions)),
            pending: Mutex::new(Vec::new()),
            sigreturn: AtomicU64::new(self.sigreturn.load(Ordering::SeqCst)),
            unknown: self.unknown.clone(),
            instret: AtomicU64::new(0),
            group: Mutex::new(Group::default()),
            left: Condvar::new(),
            released: AtomicBool::new(false),
            reapable: AtomicBool::new(false),
        })
    }

    /// The address space.
    pub fn mm(&self) -> Arc<Mm> {
        lock(&self.mm).clone()
    }

    /// The code watch harts of this process follow.
    pub fn code_watch(&self) -> Option<Arc<CodeWatch>> {
        lock(&self.code).watch.clone()
    }

    /// Replace the address space (execve), with a new code watch, break
    /// and signal-return trampoline.
    pub fn replace_mm(&self, mm: Arc<Mm>, brk: u64, exe: Vec<u8>, sigreturn: u64) {
        self.sigreturn.store(sigreturn, Ordering::SeqCst);
        *lock(&self.code) = Code::watch(&mm);
        *lock(&self.mm) = mm;
        *lock(&self.brk) = Brk { start: brk, cur: brk };
        *lock(&self.exe) = exe;
    }

    /// Count an unknown system call.
    pub fn unknown_call(&self, n: u64) {
        *lock(&self.unknown).entry(n).or_insert(0) += 1;
    }

    /// Add a live thread; `false` if the process is already ending.
    pub fn add_thread(&self, ctl: Arc<ThreadCtl>) -> bool {
        let mut g = lock(&self.group);
        if g.ending.is_some() || g.done {
            return false;
        }
        g.threads.insert(ctl.tid, ctl);
        true
    }

    /// A live thread of this process.
    pub fn thread(&self, tid: u64) -> Option<Arc<ThreadCtl>> {
        lock(&self.group).threads.get(&tid).cloned()
    }

    /// The live threads.
    pub fn threads(&self) -> Vec<Arc<ThreadCtl>> {
        lock(&self.group).threads.values().cloned().collect()
    }

    /// Whether the process is ending (every thread is to leave).
    pub fn ending(&self) -> bool {
        lock(&self.group).ending.is_some()
    }

    /// Every thread has left.
    pub fn is_done(&self) -> bool {
        lock(&self.group).done
    }

    /// How the process ended, once every thread has left.
    pub fn ending_now(&self) -> Option<Ending> {
        let g = lock(&self.group);
        g.done.then(|| g.ending.clone().unwrap_or_else(|| Ending::code(g.leader_code)))
    }

    /// End the process: the first ending wins; every thread is told.
    pub fn exit_group(&self, e: Ending) {
        let mut g = lock(&self.group);
        if g.ending.is_none() {
            g.ending = Some(e);
        }
        for t in g.threads.values() {
            t.interrupt();
        }
    }

    /// A thread has left (its robust list and clear-tid word done). The
    /// last one makes the process a zombie for its parent to reap
    /// (`true`).
    pub fn remove_thread(&self, tid: u64, code: i32, instret: u64) -> bool {
        self.instret.fetch_add(instret, Ordering::SeqCst);
        let done = {
            let mut g = lock(&self.group);
            g.threads.remove(&tid);
            if tid == self.pid {
                g.leader_code = code & 0xff;
            }
            self.left.notify_all();
            g.done = g.threads.is_empty();
            g.done
        };
        if done {
            // Linux's exit_files: the pipes this process held may close.
            lock(&self.files).clear();
            self.released.store(true, Ordering::SeqCst);
            self.sys.notify();
        }
        done
    }

    /// Wait until `tid` is the only thread left (execve's de-thread: the
    /// others have been told to leave).
    pub fn wait_alone(&self, tid: u64) {
        let mut g = lock(&self.group);
        while g.threads.keys().any(|&t| t != tid) {
            g = self.left.wait_timeout(g, WAIT_SLICE).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// The process has exec'd: a vfork parent may go on.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.sys.notify();
    }

    pub fn released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    /// The parent has been told (SIGCHLD): `wait4` may reap it.
    pub fn set_reapable(&self) {
        self.reapable.store(true, Ordering::SeqCst);
        self.sys.notify();
    }

    /// How the process ended, once `wait4` may reap it.
    pub fn reapable_ending(&self) -> Option<Ending> {
        if !self.reapable.load(Ordering::SeqCst) {
            return None;
        }
        self.ending_now()
    }
}
