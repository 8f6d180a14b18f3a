//! Guest processes and threads: what the threads of one process share (a
//! softmm address space, the break, the standard streams, signal actions)
//! and the control block each thread exposes to the others (its attention
//! flag, the futex wait to cancel, the host thread to wake), with how a
//! process ends (`exit_group`, a fatal signal, its last thread leaving).

use crate::icache::CodeWatch;
use crate::io::{Input, Output};
use crate::signal::{SigAction, NSIG};
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
}

/// What the threads of one process share.
pub struct Process {
    pub pid: u64,
    pub mm: Mm,
    pub exe: Vec<u8>,
    pub brk: Mutex<Brk>,
    pub stdin: Mutex<Input>,
    pub stdout: Mutex<Output>,
    pub stderr: Mutex<Output>,
    pub actions: Mutex<[SigAction; NSIG]>,
    /// Unknown system calls by number, for the report.
    pub unknown: Mutex<BTreeMap<u64, u64>>,
    /// Instructions retired by threads that have ended.
    pub instret: AtomicU64,
    /// The code watch every hart's decoded-instruction cache follows.
    pub code_watch: Option<Arc<CodeWatch>>,
    _code_sub: Option<Subscription>,
    group: Mutex<Group>,
    ended: Condvar,
    hosts: Mutex<Vec<JoinHandle<()>>>,
    next_tid: AtomicU64,
}

/// The standard streams a process starts with.
pub struct Stdio {
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
}

impl Process {
    pub fn new(pid: u64, mm: Mm, brk: u64, exe: Vec<u8>, io: Stdio) -> Arc<Process> {
        let (code_watch, code_sub) = match CodeWatch::register(&mm) {
            Some((w, s)) => (Some(w), Some(s)),
            None => (None, None),
        };
        Arc::new(Process {
            pid,
            mm,
            exe,
            brk: Mutex::new(Brk { start: brk, cur: brk }),
            stdin: Mutex::new(io.stdin),
            stdout: Mutex::new(io.stdout),
            stderr: Mutex::new(io.stderr),
            actions: Mutex::new([SigAction::default(); NSIG]),
            unknown: Mutex::new(BTreeMap::new()),
            instret: AtomicU64::new(0),
            code_watch,
            _code_sub: code_sub,
            group: Mutex::new(Group::default()),
            ended: Condvar::new(),
            hosts: Mutex::new(Vec::new()),
            next_tid: AtomicU64::new(pid + 1),
        })
    }

    /// A fresh thread id (thread ids follow the process id, as a fresh
    /// Linux pid namespace would hand them out).
    pub fn new_tid(&self) -> u64 {
        self.next_tid.fetch_add(1, Ordering::SeqCst)
    }

    /// Count an unknown system call.
    pub fn unknown_call(&self, n: u64) {
        *lock(&self.unknown).entry(n).or_insert(0) += 1;
    }

    /// Add a live thread; `false` if the process is already ending.
    pub fn add_thread(&self, ctl: Arc<ThreadCtl>) -> bool {
        let mut g = lock(&self.group);
        if g.ending.is_some() {
            return false;
        }
        g.threads.insert(ctl.tid, ctl);
        true
    }

    /// Keep a host thread to join when the process has ended.
    pub fn keep_host(&self, h: JoinHandle<()>) {
        lock(&self.hosts).push(h);
    }

    /// A live thread of this process.
    pub fn thread(&self, tid: u64) -> Option<Arc<ThreadCtl>> {
        lock(&self.group).threads.get(&tid).cloned()
    }

    /// Whether the process is ending (every thread is to leave).
    pub fn ending(&self) -> bool {
        lock(&self.group).ending.is_some()
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

    /// A thread has left (its robust list and clear-tid word done).
    pub fn remove_thread(&self, tid: u64, code: i32, instret: u64) {
        self.instret.fetch_add(instret, Ordering::SeqCst);
        let mut g = lock(&self.group);
        g.threads.remove(&tid);
        if tid == self.pid {
            g.leader_code = code & 0xff;
        }
        if g.threads.is_empty() {
            self.ended.notify_all();
        }
    }

    /// Wait until every thread has left, join their host threads, and
    /// say how the process ended.
    pub fn wait_ended(&self) -> Ending {
        let ending = {
            let mut g = lock(&self.group);
            while !g.threads.is_empty() {
                g = self.ended.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            g.ending.clone().unwrap_or_else(|| Ending::code(g.leader_code))
        };
        let hosts = std::mem::take(&mut *lock(&self.hosts));
        for h in hosts {
            // A host thread that panicked has already left the group (its
            // guard removed it); nothing more to do with it here.
            let _ = h.join();
        }
        ending
    }
}
