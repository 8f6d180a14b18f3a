//! Signal delivery. A signal sent to a process waits on the process's
//! queue, one sent to a thread (tgkill) on the thread's; the sender
//! raises the attention flag of a thread that does not block it, which
//! stops its hart between instructions and interrupts a futex wait or
//! sleep (EINTR, or a restart when the handler has SA_RESTART). The
//! thread then takes the lowest pending unblocked signal: ignored, the
//! default action (the process ends with it), or a handler, entered with
//! Linux's riscv64 signal frame ([`crate::sigframe`]) and left through
//! `rt_sigreturn`. Guest faults (SIGSEGV with SEGV_MAPERR/SEGV_ACCERR,
//! SIGBUS, SIGILL, SIGTRAP) are forced on the faulting thread as Linux's
//! `force_sig_fault` does: a handler that is blocked or ignored is reset,
//! and the process ends.

use crate::errno::{EFAULT, EINTR, EINVAL, ENOMEM, EPERM};
use crate::hart::Hart;
use crate::mem::{FaultKind, GuestFault};
use crate::sigframe::{self, StackInfo, FRAME_SIZE, SS_DISABLE, SS_ONSTACK, UC};
use crate::signal::{
    bit, default_action, describe, DefaultAction, Payload, SigAction, SigInfo, BUS_ADRALN, BUS_ADRERR, NSIG,
    SA_NODEFER, SA_ONSTACK, SA_RESETHAND, SA_RESTART, SEGV_ACCERR, SEGV_MAPERR, SIGKILL, SIGSEGV, SIG_DFL, SIG_IGN,
    UNBLOCKABLE,
};
use crate::syscall::{Flow, Kernel, Restart, SysResult};
use crate::task::{lock, Ending, Process, ThreadCtl};
use softmm::SegvKind;
use std::sync::atomic::Ordering;

/// The smallest alternate stack Linux accepts (riscv64 MINSIGSTKSZ).
const MINSIGSTKSZ: u64 = 2048;

/// The action of `sig` in `p`.
fn action(p: &Process, sig: i32) -> SigAction {
    lock(&p.actions).get(sig as usize - 1).copied().unwrap_or_default()
}

/// Whether `sig` would be thrown away on arrival (Linux's `sig_ignored`).
fn ignored(p: &Process, sig: i32) -> bool {
    let h = action(p, sig).handler;
    h == SIG_IGN || (h == SIG_DFL && matches!(default_action(sig), DefaultAction::Ignore | DefaultAction::Stop))
}

/// Most queued signals per queue (Linux bounds them by RLIMIT_SIGPENDING).
const MAX_QUEUED: usize = 4096;

/// Queue `info` (a standard signal only once; real-time ones up to a
/// bound, past which they are dropped).
fn enqueue(q: &mut Vec<SigInfo>, info: SigInfo) {
    if (info.signo < 32 && q.iter().any(|i| i.signo == info.signo)) || q.len() >= MAX_QUEUED {
        return;
    }
    q.push(info);
}

/// Send `info` to process `p` (kill).
pub fn send_to_process(p: &Process, info: SigInfo) {
    let sig = info.signo;
    if sig == 0 || p.is_done() {
        return;
    }
    if sig == SIGKILL {
        p.exit_group(killed_by(sig));
        return;
    }
    if ignored(p, sig) {
        return;
    }
    enqueue(&mut lock(&p.pending), info);
    // The leader first, as Linux's complete_signal prefers the main thread.
    let threads = p.threads();
    if let Some(t) = threads.iter().find(|t| t.blocked.load(Ordering::SeqCst) & bit(sig) == 0) {
        t.interrupt();
    }
}

/// Send `info` to thread `t` of process `p` (tgkill).
pub fn send_to_thread(p: &Process, t: &ThreadCtl, info: SigInfo) {
    let sig = info.signo;
    if sig == 0 {
        return;
    }
    if sig == SIGKILL {
        p.exit_group(killed_by(sig));
        return;
    }
    if ignored(p, sig) {
        return;
    }
    enqueue(&mut lock(&t.pending), info);
    if t.blocked.load(Ordering::SeqCst) & bit(sig) == 0 {
        t.interrupt();
    }
}

/// How a process a signal killed ends.
pub fn killed_by(sig: i32) -> Ending {
    Ending::killed(sig, format!("softmm: {}\n", describe(sig)))
}

/// The `siginfo` of a guest fault.
pub fn fault_info(f: &GuestFault) -> SigInfo {
    let code = match f.kind {
        FaultKind::Segv(SegvKind::AccErr) => SEGV_ACCERR,
        FaultKind::Segv(_) => SEGV_MAPERR,
        FaultKind::Misaligned => BUS_ADRALN,
        FaultKind::Bus => BUS_ADRERR,
        FaultKind::OutOfMemory => 0,
    };
    SigInfo { signo: f.signal(), code, payload: Payload::Fault { addr: f.addr } }
}

impl Kernel {
    pub fn blocked(&self) -> u64 {
        self.ctl.blocked.load(Ordering::SeqCst)
    }

    pub fn set_blocked(&mut self, mask: u64) {
        self.ctl.blocked.store(mask & !UNBLOCKABLE, Ordering::SeqCst);
        // Newly unblocked pending signals are looked at on the way out.
        self.ctl.attention.store(true, Ordering::SeqCst);
    }

    /// A synchronous signal from the guest's own instruction (fault,
    /// illegal instruction, breakpoint): delivered now to an unblocked
    /// handler, otherwise the process ends with `message`.
    pub fn force(&mut self, hart: &mut Hart, info: SigInfo, message: String) -> Flow {
        let sig = info.signo;
        let act = action(&self.p, sig);
        let catchable = sig != SIGKILL && act.handler != SIG_DFL && act.handler != SIG_IGN;
        if catchable && self.blocked() & bit(sig) == 0 {
            return self.enter_handler(hart, info, act);
        }
        Flow::ExitGroup(Ending::killed(sig, message))
    }

    /// Take the lowest pending signal this thread does not block.
    fn dequeue(&mut self) -> Option<SigInfo> {
        let blocked = self.blocked();
        let take = |q: &mut Vec<SigInfo>| {
            let i = (0..q.len()).filter(|&i| blocked & bit(q[i].signo) == 0).min_by_key(|&i| q[i].signo)?;
            Some(q.remove(i))
        };
        take(&mut lock(&self.ctl.pending)).or_else(|| take(&mut lock(&self.p.pending)))
    }

    /// Whether a signal this thread would take is pending.
    pub fn has_deliverable(&self) -> bool {
        let blocked = self.blocked();
        let any = |q: &Vec<SigInfo>| q.iter().any(|i| blocked & bit(i.signo) == 0);
        any(&lock(&self.ctl.pending)) || any(&lock(&self.p.pending))
    }

    /// Deliver what is pending (one handler at a time: the next is taken
    /// when the hart stops again, so handlers nest as on Linux).
    pub fn deliver_pending(&mut self, hart: &mut Hart) -> Flow {
        let mut restart = self.restart.take();
        while let Some(info) = self.dequeue() {
            let sig = info.signo;
            let act = action(&self.p, sig);
            if act.handler == SIG_IGN {
                continue;
            }
            if act.handler == SIG_DFL {
                match default_action(sig) {
                    DefaultAction::Ignore | DefaultAction::Stop => continue,
                    DefaultAction::Terminate | DefaultAction::Core => return Flow::ExitGroup(killed_by(sig)),
                }
            }
            if let Some((orig_a0, how)) = restart.take() {
                if how == Restart::NoIntr || (how == Restart::Sys && act.flags & SA_RESTART != 0) {
                    self.restart_call(hart, orig_a0);
                }
            }
            // Another may be pending: look again before the next instruction.
            self.ctl.attention.store(true, Ordering::SeqCst);
            return self.enter_handler(hart, info, act);
        }
        // No handler ran: an interrupted call starts over.
        if let Some((orig_a0, _)) = restart {
            self.restart_call(hart, orig_a0);
        }
        if let Some(mask) = self.saved_mask.take() {
            self.set_blocked(mask);
        }
        Flow::Continue
    }

    /// Back to the ecall with its first argument, as Linux restarts.
    fn restart_call(&mut self, hart: &mut Hart, orig_a0: u64) {
        hart.pc = hart.pc.wrapping_sub(4);
        hart.x[10] = orig_a0;
    }

    /// Build the frame and point the hart at the handler.
    fn enter_handler(&mut self, hart: &mut Hart, info: SigInfo, act: SigAction) -> Flow {
        let sig = info.signo;
        let old_mask = self.saved_mask.take().unwrap_or(self.blocked());
        let sp = hart.x[2];
        let (ss_sp, ss_size, ss_off) = self.altstack;
        let on_alt = !ss_off && sp.wrapping_sub(ss_sp) < ss_size;
        let top = if act.flags & SA_ONSTACK != 0 && !ss_off && !on_alt { ss_sp.wrapping_add(ss_size) } else { sp };
        let frame = top.wrapping_sub(FRAME_SIZE) & !0xf;
        let flags = if ss_off {
            SS_DISABLE
        } else if on_alt {
            SS_ONSTACK
        } else {
            0
        };
        let stack = StackInfo { sp: ss_sp, flags, size: ss_size };
        let bytes = sigframe::build(hart, &info.encode(), old_mask, stack);
        let tramp = self.p.sigreturn.load(Ordering::SeqCst);
        if hart.mem.write_bytes(frame, &bytes).is_err() || tramp == 0 {
            // Linux's force_sigsegv: no room for the frame.
            return Flow::ExitGroup(Ending::killed(
                SIGSEGV,
                format!("softmm: {} (no room for the signal {sig} frame at {frame:#x})\n", describe(SIGSEGV)),
            ));
        }
        hart.x[1] = tramp;
        hart.x[2] = frame;
        hart.x[10] = sig as u64;
        hart.x[11] = frame;
        hart.x[12] = frame + UC as u64;
        hart.pc = act.handler;
        let mut mask = old_mask | act.mask;
        if act.flags & SA_NODEFER == 0 {
            mask |= bit(sig);
        }
        self.set_blocked(mask);
        if act.flags & SA_RESETHAND != 0 {
            if let Some(a) = lock(&self.p.actions).get_mut(sig as usize - 1) {
                *a = SigAction::default();
            }
        }
        Flow::Continue
    }

    /// rt_sigreturn: registers and mask from the frame at sp.
    pub(crate) fn rt_sigreturn(&mut self, hart: &mut Hart) -> Flow {
        let frame = hart.x[2];
        let mut b = vec![0u8; FRAME_SIZE as usize];
        if hart.mem.read_bytes(frame, &mut b).is_err() {
            return self.bad_frame(frame);
        }
        let Some(mask) = sigframe::restore(hart, &b) else {
            return self.bad_frame(frame);
        };
        self.set_blocked(mask);
        Flow::Continue
    }

    fn bad_frame(&mut self, frame: u64) -> Flow {
        let msg = format!("softmm: {} (bad signal frame at {frame:#x})\n", describe(SIGSEGV));
        Flow::ExitGroup(Ending::killed(SIGSEGV, msg))
    }

    /// rt_sigsuspend(mask, size): sleep with `mask` until a signal comes.
    pub(crate) fn rt_sigsuspend(&mut self, hart: &mut Hart, set: u64, size: u64) -> SysResult {
        if size != 8 {
            return Err(EINVAL);
        }
        let mask = hart.mem.load(set, 8).map_err(|_| EFAULT)?;
        let old = self.blocked();
        self.set_blocked(mask);
        self.wait_for_signal(None);
        self.saved_mask = Some(old);
        // Deliver on the way out.
        self.ctl.attention.store(true, Ordering::SeqCst);
        Err(EINTR)
    }

    /// ppoll(fds, nfds, timeout, sigmask, size) with no descriptors: a
    /// sleep that a signal ends (what glibc's pause() is on riscv64).
    pub(crate) fn ppoll(&mut self, hart: &mut Hart, a: [u64; 6]) -> SysResult {
        let [_fds, nfds, tmo, sigmask, size, _] = a;
        if nfds != 0 {
            // Descriptors come with the file calls.
            self.p.unknown_call(crate::syscall::nr::PPOLL);
            return Err(crate::errno::ENOSYS);
        }
        let timeout = if tmo == 0 { None } else { Some(crate::syscall::read_timespec(hart, tmo)?) };
        let old = self.blocked();
        if sigmask != 0 {
            if size != 8 {
                return Err(EINVAL);
            }
            let mask = hart.mem.load(sigmask, 8).map_err(|_| EFAULT)?;
            self.set_blocked(mask);
        }
        let signalled = self.wait_for_signal(timeout);
        if sigmask != 0 {
            self.saved_mask = Some(old);
        }
        self.ctl.attention.store(true, Ordering::SeqCst);
        if signalled {
            Err(EINTR)
        } else {
            Ok(0)
        }
    }

    /// Sleep until a deliverable signal, the end of the process, or
    /// `timeout`: `true` if a signal (or the end) came.
    pub(crate) fn wait_for_signal(&mut self, timeout: Option<std::time::Duration>) -> bool {
        let until = timeout.and_then(|d| std::time::Instant::now().checked_add(d));
        loop {
            if self.has_deliverable() || self.p.ending() || self.ctl.killed() {
                return true;
            }
            self.ctl.attention.store(false, Ordering::SeqCst);
            if self.has_deliverable() {
                return true;
            }
            let left = match until {
                Some(u) => match u.checked_duration_since(std::time::Instant::now()) {
                    Some(d) if !d.is_zero() => d,
                    _ => return false,
                },
                None => std::time::Duration::from_secs(3600),
            };
            self.ctl.sleep(left);
        }
    }

    /// sigaltstack(ss, old_ss).
    pub(crate) fn sigaltstack(&mut self, hart: &mut Hart, ss: u64, old: u64) -> SysResult {
        let (sp, size, off) = self.altstack;
        let on_alt = !off && hart.x[2].wrapping_sub(sp) < size;
        if old != 0 {
            let flags = if off {
                SS_DISABLE
            } else if on_alt {
                SS_ONSTACK
            } else {
                0
            };
            let mut b = [0u8; 24];
            b[0..8].copy_from_slice(&sp.to_le_bytes());
            b[8..12].copy_from_slice(&flags.to_le_bytes());
            b[16..24].copy_from_slice(&size.to_le_bytes());
            hart.mem.write_bytes(old, &b).map_err(|_| EFAULT)?;
        }
        if ss != 0 {
            let nsp = hart.mem.load(ss, 8).map_err(|_| EFAULT)?;
            let flags = hart.mem.load(ss + 8, 4).map_err(|_| EFAULT)? as u32;
            let nsize = hart.mem.load(ss + 16, 8).map_err(|_| EFAULT)?;
            if on_alt {
                return Err(EPERM);
            }
            // SS_AUTODISARM (1 << 31) is accepted and not emulated.
            match flags & !(1 << 31) {
                SS_DISABLE => self.altstack = (0, 0, true),
                0 | SS_ONSTACK => {
                    if nsize < MINSIGSTKSZ {
                        return Err(ENOMEM);
                    }
                    self.altstack = (nsp, nsize, false);
                }
                _ => return Err(EINVAL),
            }
        }
        Ok(0)
    }

    /// rt_sigpending(set, size).
    pub(crate) fn rt_sigpending(&mut self, hart: &mut Hart, set: u64, size: u64) -> SysResult {
        if size > 8 {
            return Err(EINVAL);
        }
        let mut m = 0u64;
        for i in lock(&self.ctl.pending).iter().chain(lock(&self.p.pending).iter()) {
            m |= bit(i.signo);
        }
        hart.mem.store(set, 8, m & self.blocked()).map_err(|_| EFAULT)?;
        Ok(0)
    }

    /// rt_sigaction(sig, act, oact, size).
    pub(crate) fn sigaction(&mut self, hart: &mut Hart, sig: u64, act: u64, oact: u64, size: u64) -> SysResult {
        let sig = i32::try_from(sig).map_err(|_| EINVAL)?;
        if size != 8 || !(1..=NSIG as i32).contains(&sig) {
            return Err(EINVAL);
        }
        if act != 0 && bit(sig) & UNBLOCKABLE != 0 {
            return Err(EINVAL);
        }
        let old = action(&self.p, sig);
        let new = if act != 0 {
            let m = &mut hart.mem;
            Some(SigAction {
                handler: m.load(act, 8).map_err(|_| EFAULT)?,
                flags: m.load(act.wrapping_add(8), 8).map_err(|_| EFAULT)?,
                mask: m.load(act.wrapping_add(16), 8).map_err(|_| EFAULT)? & !UNBLOCKABLE,
            })
        } else {
            None
        };
        if oact != 0 {
            let mut b = Vec::with_capacity(24);
            for w in [old.handler, old.flags, old.mask] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            hart.mem.write_bytes(oact, &b).map_err(|_| EFAULT)?;
        }
        if let Some(new) = new {
            if let Some(slot) = lock(&self.p.actions).get_mut(sig as usize - 1) {
                *slot = new;
            }
            // Pending signals now ignored are discarded, as in Linux.
            if ignored(&self.p, sig) {
                lock(&self.p.pending).retain(|i| i.signo != sig);
                for t in self.p.threads() {
                    lock(&t.pending).retain(|i| i.signo != sig);
                }
            }
        }
        Ok(0)
    }

    /// rt_sigprocmask(how, set, oset, size).
    pub(crate) fn sigprocmask(&mut self, hart: &mut Hart, how: u64, set: u64, oset: u64, size: u64) -> SysResult {
        if size != 8 {
            return Err(EINVAL);
        }
        let old = self.blocked();
        if set != 0 {
            let s = hart.mem.load(set, 8).map_err(|_| EFAULT)?;
            let new = match how {
                0 => old | s,
                1 => old & !s,
                2 => s,
                _ => return Err(EINVAL),
            };
            self.set_blocked(new);
        }
        if oset != 0 {
            hart.mem.store(oset, 8, old).map_err(|_| EFAULT)?;
        }
        Ok(0)
    }
}
