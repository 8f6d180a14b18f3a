//! Guest threads: `clone`/`clone3` with `CLONE_THREAD` start a new hart
//! on its own host thread, with its own softmm accessor (software TLB)
//! and decoded-instruction cache, over the process's one address space.
//! A thread runs until it calls `exit`, the process ends (`exit_group`, a
//! fatal fault in any thread), or its host thread fails; at exit it walks
//! its robust-futex list and clears and wakes its `clear_child_tid` word,
//! as Linux's `mm_release` does.

use crate::deliver::{fault_info, send_to_process};
use crate::errno::{EAGAIN, EFAULT, EINVAL};
use crate::hart::{Hart, Stop};
use crate::icache::ICache;
use crate::mem::FaultKind;
use crate::mem::Memory;
use crate::signal::{
    default_action, describe, DefaultAction, Payload, SigInfo, CLD_DUMPED, CLD_EXITED, CLD_KILLED, ILL_ILLOPC, SIGCHLD,
    SIGILL, SIGKILL, SIGTRAP, TRAP_BRKPT,
};
use crate::syscall::{Flow, Kernel, SysResult};
use crate::task::{Ending, Process, ThreadCtl};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

pub const CLONE_VM: u64 = 0x100;
pub const CLONE_SIGHAND: u64 = 0x800;
pub const CLONE_VFORK: u64 = 0x4000;
pub const CLONE_THREAD: u64 = 0x10000;
pub const CLONE_SETTLS: u64 = 0x80000;
pub const CLONE_PARENT_SETTID: u64 = 0x10_0000;
pub const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
pub const CLONE_CHILD_SETTID: u64 = 0x100_0000;

/// `struct clone_args` of clone3, version 0 (64 bytes).
const CLONE_ARGS_SIZE_VER0: u64 = 64;

/// What a clone asks for, from either system call.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub exit_signal: u64,
    /// The child's stack pointer (0: the parent's).
    pub stack: u64,
    pub parent_tid: u64,
    pub child_tid: u64,
    pub tls: u64,
}

impl Kernel {
    /// clone(flags, stack, parent_tid, tls, child_tid): riscv64 has
    /// Linux's `CLONE_BACKWARDS` argument order.
    pub(crate) fn clone(
        &mut self,
        hart: &mut Hart,
        flags: u64,
        stack: u64,
        ptid: u64,
        tls: u64,
        ctid: u64,
    ) -> SysResult {
        let c = CloneArgs {
            flags: flags & !0xff,
            exit_signal: flags & 0xff,
            stack,
            parent_tid: ptid,
            child_tid: ctid,
            tls,
        };
        self.do_clone(hart, c)
    }

    /// clone3(args, size).
    pub(crate) fn clone3(&mut self, hart: &mut Hart, uargs: u64, size: u64) -> SysResult {
        if !(CLONE_ARGS_SIZE_VER0..=4096).contains(&size) {
            return Err(EINVAL);
        }
        let mut w = [0u64; 11];
        let n = (size / 8).min(11) as usize;
        for (i, slot) in w.iter_mut().enumerate().take(n) {
            *slot = hart.mem.load(uargs.wrapping_add(8 * i as u64), 8).map_err(|_| EFAULT)?;
        }
        let [flags, _pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup] =
            w;
        if (stack == 0) != (stack_size == 0) || exit_signal > 64 || flags & 0xff != 0 {
            return Err(EINVAL);
        }
        if set_tid != 0 || set_tid_size != 0 || cgroup != 0 {
            // Choosing pids and cgroups: not in this machine.
            return Err(EINVAL);
        }
        let top = stack.wrapping_add(stack_size);
        self.do_clone(hart, CloneArgs { flags, exit_signal, stack: top, parent_tid, child_tid, tls })
    }

    fn do_clone(&mut self, hart: &mut Hart, c: CloneArgs) -> SysResult {
        if c.flags & CLONE_THREAD != 0 {
            // As Linux: a thread shares the signal handlers, which needs
            // the address space shared.
            if c.flags & CLONE_SIGHAND == 0 || c.flags & CLONE_VM == 0 {
                return Err(EINVAL);
            }
            return self.spawn_thread(hart, c);
        }
        self.fork(hart, c)
    }

    /// A new thread of this process, running from the clone's return.
    fn spawn_thread(&mut self, hart: &mut Hart, c: CloneArgs) -> SysResult {
        let tid = self.p.sys.new_id();
        let ctl = ThreadCtl::new(tid);
        let mut child = hart.spawn(Memory::new(self.mm.accessor()));
        prepare(&mut child, &self.p, &ctl);
        child.x[10] = 0;
        if c.stack != 0 {
            child.x[2] = c.stack;
        }
        if c.flags & CLONE_SETTLS != 0 {
            child.x[4] = c.tls;
        }
        let mut k = Kernel::new(self.p.clone(), ctl.clone());
        k.ctl.blocked.store(self.ctl.blocked.load(Ordering::SeqCst), Ordering::SeqCst);
        if c.flags & CLONE_CHILD_CLEARTID != 0 {
            k.clear_child_tid = c.child_tid;
        }
        // Linux ignores a bad pointer here as well.
        if c.flags & CLONE_PARENT_SETTID != 0 {
            let _ = hart.mem.store(c.parent_tid, 4, tid);
        }
        if c.flags & CLONE_CHILD_SETTID != 0 {
            let _ = hart.mem.store(c.child_tid, 4, tid);
        }
        if !self.p.add_thread(ctl) {
            return Err(EAGAIN);
        }
        launch(child, k).map(|_| tid)
    }

    /// Run this thread's hart until the thread leaves; its exit code.
    pub fn run(&mut self, hart: &mut Hart) -> i32 {
        match self.run_to(hart) {
            Left::Exit(code) => code,
            // Only a snapshot server's first run pauses.
            Left::Paused => 0,
        }
    }

    /// Run this thread's hart until the thread leaves or pauses at the
    /// snapshot server's marker.
    pub(crate) fn run_to(&mut self, hart: &mut Hart) -> Left {
        loop {
            let flow = match hart.run() {
                Stop::Ecall => self.syscall(hart),
                Stop::Attention => Flow::Continue,
                Stop::Fault(f) if f.kind == FaultKind::OutOfMemory => fatal(f.signal(), &format!("{f}"), hart.pc),
                Stop::Fault(f) => {
                    let msg = fatal_message(f.signal(), &format!("{f}"), hart.pc);
                    self.force(hart, fault_info(&f), msg)
                }
                Stop::Illegal { raw, pc } => {
                    let msg = fatal_message(SIGILL, &format!("illegal instruction {raw:#010x}"), pc);
                    let info = SigInfo { signo: SIGILL, code: ILL_ILLOPC, payload: Payload::Fault { addr: pc } };
                    self.force(hart, info, msg)
                }
                Stop::Breakpoint { pc } => {
                    let msg = fatal_message(SIGTRAP, "ebreak", pc);
                    let info = SigInfo { signo: SIGTRAP, code: TRAP_BRKPT, payload: Payload::Fault { addr: pc } };
                    self.force(hart, info, msg)
                }
            };
            if let Some(left) = self.after(flow) {
                return left;
            }
            if self.ctl.attention() {
                // Cleared before looking, so a sender's later raise stays.
                self.ctl.attention.store(false, Ordering::SeqCst);
                if self.p.ending() || self.ctl.killed() {
                    return Left::Exit(0);
                }
                let flow = self.deliver_pending(hart);
                if let Some(left) = self.after(flow) {
                    return left;
                }
            } else {
                self.restart = None;
            }
        }
    }

    /// Act on a flow: `Some` when the thread is to leave or pause.
    fn after(&mut self, flow: Flow) -> Option<Left> {
        match flow {
            Flow::Continue => None,
            Flow::ExitThread(code) => Some(Left::Exit(code)),
            Flow::ExitGroup(e) => {
                self.p.exit_group(e);
                Some(Left::Exit(0))
            }
            Flow::Pause => Some(Left::Paused),
        }
    }

    /// Leave: robust futexes, the clear-tid word, then the thread table.
    pub fn exit_thread(&mut self, hart: &mut Hart, code: i32) {
        self.mm_release(hart);
        if self.p.remove_thread(self.tid, code, hart.instret) {
            notify_parent(&self.p);
        }
    }

    /// Linux's `mm_release` (thread exit and execve): the robust list
    /// (softmm's walk, which marks each futex this thread still owns
    /// `FUTEX_OWNER_DIED` and wakes a waiter, and forgets the list), then
    /// the clear-tid word zeroed and its futex woken, and forgotten.
    pub(crate) fn mm_release(&mut self, hart: &mut Hart) {
        if let Ok(tid) = u32::try_from(self.tid) {
            self.mm.exit_robust_list(tid);
        }
        let ctid = std::mem::take(&mut self.clear_child_tid);
        if ctid != 0 && hart.mem.store(ctid, 4, 0).is_ok() {
            let _ = self.mm.futex_wake(ctid, 1);
        }
    }
}

/// How a thread's run loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Left {
    /// The thread leaves with this code.
    Exit(i32),
    /// It stopped at the snapshot server's marker.
    Paused,
}

/// Give a new hart its process's decoded-instruction cache and its
/// thread's attention flag.
pub fn prepare(hart: &mut Hart, p: &Process, ctl: &ThreadCtl) {
    if let Some(w) = p.code_watch() {
        hart.set_icache(ICache::new(w));
    }
    hart.set_attention(ctl.attention.clone());
}

/// Start `k`'s thread (already in its process's table) on a host thread.
pub fn launch(hart: Hart, k: Kernel) -> SysResult {
    let (p, tid, sys) = (k.p.clone(), k.tid, k.p.sys.clone());
    match std::thread::Builder::new().name(format!("rv-{tid}")).spawn(move || run_thread(hart, k)) {
        Ok(h) => {
            sys.keep_host(h);
            Ok(0)
        }
        Err(_) => {
            if p.remove_thread(tid, 0, 0) {
                notify_parent(&p);
            }
            Err(EAGAIN)
        }
    }
}

/// What a shell prints when a fault or trap ends the process.
fn fatal_message(sig: i32, what: &str, pc: u64) -> String {
    format!("softmm: {} ({what}, pc {pc:#x})\n", describe(sig))
}

/// A fault no handler can take: the process ends.
fn fatal(sig: i32, what: &str, pc: u64) -> Flow {
    Flow::ExitGroup(Ending::killed(sig, fatal_message(sig, what, pc)))
}

/// The body of a guest thread's host thread (the main thread's too). A
/// host panic (a bug here) ends the guest process, never the host.
pub fn run_thread(mut hart: Hart, mut k: Kernel) {
    drive(&mut hart, &mut k);
}

/// Run `k`'s thread on the calling host thread until it leaves (`false`)
/// or pauses at the snapshot server's marker (`true`: it has not left).
pub(crate) fn drive(hart: &mut Hart, k: &mut Kernel) -> bool {
    k.ctl.bind_host();
    let r = catch_unwind(AssertUnwindSafe(|| match k.run_to(hart) {
        Left::Exit(code) => {
            k.exit_thread(hart, code);
            false
        }
        Left::Paused => true,
    }));
    match r {
        Ok(paused) => paused,
        Err(_) => {
            let msg = format!("softmm: internal error in guest thread {}\n", k.tid);
            k.p.exit_group(Ending::killed(SIGKILL, msg));
            if k.p.remove_thread(k.tid, 0, hart.instret) {
                notify_parent(&k.p);
            }
            false
        }
    }
}

/// SIGCHLD to the parent of a process that has ended; then (and only
/// then) the parent's `wait4` may reap it.
fn notify_parent(p: &Process) {
    send_sigchld(p);
    p.set_reapable();
}

fn send_sigchld(p: &Process) {
    let Some(e) = p.ending_now() else {
        return;
    };
    let Some(parent) = p.sys.get(p.ppid.load(Ordering::SeqCst)) else {
        return;
    };
    let (code, status) = match e.signal {
        Some(sig) if default_action(sig) == DefaultAction::Core => (CLD_DUMPED, sig),
        Some(sig) => (CLD_KILLED, sig),
        None => (CLD_EXITED, e.status),
    };
    let uid = rustix::process::getuid().as_raw();
    let payload = Payload::Child { pid: p.pid as u32, uid, status };
    send_to_process(&parent, SigInfo { signo: SIGCHLD, code, payload });
}
