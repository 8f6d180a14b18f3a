//! Processes: `clone` without `CLONE_THREAD` makes a child process, over a
//! copy-on-write `Mm::fork` of the address space, or over the same space
//! with `CLONE_VM` (`vfork`, whose parent sleeps until the child execs or
//! exits); `wait4`/`waitid` reap children with Linux's status words;
//! `kill` reaches any process of the run.

use crate::errno::{ECHILD, EFAULT, EINTR, EINVAL, ESRCH};
use crate::hart::Hart;
use crate::mem::Memory;
use crate::signal::{CLD_DUMPED, CLD_EXITED, CLD_KILLED, SIGCHLD};
use crate::syscall::{Kernel, SysResult};
use crate::task::{Ending, Process, ThreadCtl};
use crate::thread::{
    launch, prepare, CloneArgs, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID, CLONE_PARENT_SETTID, CLONE_SETTLS,
    CLONE_VFORK, CLONE_VM,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;

const WNOHANG: u64 = 1;
const WUNTRACED: u64 = 2;
const WEXITED: u64 = 4;
const WCONTINUED: u64 = 8;
const WNOWAIT: u64 = 0x0100_0000;
const WNOTHREAD: u64 = 0x2000_0000;
const WALL: u64 = 0x4000_0000;
const WCLONE: u64 = 0x8000_0000;

const P_ALL: u64 = 0;
const P_PID: u64 = 1;
const P_PGID: u64 = 2;

/// Which children a wait accepts.
#[derive(Clone, Copy)]
enum Which {
    Any,
    Pid(u64),
}

impl Which {
    fn accepts(self, pid: u64) -> bool {
        match self {
            Which::Any => true,
            Which::Pid(p) => p == pid,
        }
    }
}

/// A wait status word (`WIFEXITED`/`WIFSIGNALED` encoding).
pub fn wait_status(e: &Ending) -> u32 {
    match e.signal {
        Some(sig) => sig as u32 & 0x7f,
        None => ((e.status as u32) & 0xff) << 8,
    }
}

impl Kernel {
    /// fork, vfork, or clone of a process.
    pub(crate) fn fork(&mut self, hart: &mut Hart, c: CloneArgs) -> SysResult {
        let mm =
            if c.flags & CLONE_VM != 0 { self.mm.clone() } else { Arc::new(self.mm.fork().map_err(|e| e.errno())?) };
        let pid = self.p.sys.new_id();
        let child = self.p.child(pid, mm.clone());
        let ctl = ThreadCtl::new(pid);
        child.add_thread(ctl.clone());
        let mut h = hart.spawn(Memory::new(mm.accessor()));
        prepare(&mut h, &child, &ctl);
        h.x[10] = 0;
        if c.stack != 0 {
            h.x[2] = c.stack;
        }
        if c.flags & CLONE_SETTLS != 0 {
            h.x[4] = c.tls;
        }
        // Linux ignores bad pointers here as well.
        if c.flags & CLONE_PARENT_SETTID != 0 {
            let _ = hart.mem.store(c.parent_tid, 4, pid);
        }
        if c.flags & CLONE_CHILD_SETTID != 0 {
            let _ = h.mem.store(c.child_tid, 4, pid);
        }
        let mut k = Kernel::new(child.clone(), ctl);
        k.ctl.blocked.store(self.ctl.blocked.load(Ordering::SeqCst), Ordering::SeqCst);
        if c.flags & CLONE_CHILD_CLEARTID != 0 {
            k.clear_child_tid = c.child_tid;
        }
        self.p.sys.add(child.clone());
        launch(h, k)?;
        if c.flags & CLONE_VFORK != 0 {
            // The parent sleeps until the child execs or exits; a signal
            // (here: its own process ending) ends the sleep early.
            self.p.sys.wait_for(&self.ctl, |_| child.released().then_some(()));
        }
        Ok(pid)
    }

    pub(crate) fn getppid(&self) -> u64 {
        self.p.ppid.load(Ordering::SeqCst)
    }

    /// wait4(pid, wstatus, options, rusage).
    pub(crate) fn wait4(&mut self, hart: &mut Hart, pid: u64, wstatus: u64, options: u64, rusage: u64) -> SysResult {
        if options & !(WNOHANG | WUNTRACED | WCONTINUED | WNOTHREAD | WALL | WCLONE) != 0 {
            return Err(EINVAL);
        }
        let which = match pid as i64 {
            -1 | 0 => Which::Any,
            p if p < -1 => Which::Any,
            p => Which::Pid(p as u64),
        };
        let Some((cpid, e)) = self.wait_child(which, options & WNOHANG != 0, true)? else {
            return Ok(0);
        };
        if wstatus != 0 {
            hart.mem.store(wstatus, 4, u64::from(wait_status(&e))).map_err(|_| EFAULT)?;
        }
        if rusage != 0 {
            hart.mem.write_bytes(rusage, &[0u8; 144]).map_err(|_| EFAULT)?;
        }
        Ok(cpid)
    }

    /// waitid(idtype, id, infop, options, rusage).
    pub(crate) fn waitid(&mut self, hart: &mut Hart, a: [u64; 6]) -> SysResult {
        let [idtype, id, infop, options, rusage, _] = a;
        if options & !(WNOHANG | WUNTRACED | WEXITED | WCONTINUED | WNOWAIT | WNOTHREAD | WALL | WCLONE) != 0
            || options & (WEXITED | WUNTRACED | WCONTINUED) == 0
        {
            return Err(EINVAL);
        }
        let which = match idtype {
            P_ALL | P_PGID => Which::Any,
            P_PID => Which::Pid(id),
            _ => return Err(EINVAL),
        };
        if options & WEXITED == 0 {
            // Only stops and continues asked for: none happen here.
            return if options & WNOHANG != 0 { Ok(0) } else { Err(ECHILD) };
        }
        let found = self.wait_child(which, options & WNOHANG != 0, options & WNOWAIT == 0)?;
        let mut info = [0u8; 128];
        if let Some((cpid, e)) = &found {
            let (code, status) = match e.signal {
                Some(sig) if crate::signal::default_action(sig) == crate::signal::DefaultAction::Core => {
                    (CLD_DUMPED, sig)
                }
                Some(sig) => (CLD_KILLED, sig),
                None => (CLD_EXITED, e.status),
            };
            let uid = rustix::process::getuid().as_raw();
            info[0..4].copy_from_slice(&SIGCHLD.to_le_bytes());
            info[8..12].copy_from_slice(&code.to_le_bytes());
            info[16..20].copy_from_slice(&(*cpid as u32).to_le_bytes());
            info[20..24].copy_from_slice(&uid.to_le_bytes());
            info[24..28].copy_from_slice(&status.to_le_bytes());
        }
        if infop != 0 {
            hart.mem.write_bytes(infop, &info).map_err(|_| EFAULT)?;
        }
        if rusage != 0 {
            hart.mem.write_bytes(rusage, &[0u8; 144]).map_err(|_| EFAULT)?;
        }
        Ok(0)
    }

    /// Find (and, with `reap`, remove) an ended child `which` accepts;
    /// `None` with `nohang` while children still run; ECHILD with none.
    fn wait_child(&mut self, which: Which, nohang: bool, reap: bool) -> Result<Option<(u64, Ending)>, i32> {
        let me = self.p.pid;
        let r = self.p.sys.wait_for(&self.ctl, |procs| {
            let mut any = false;
            for (&pid, q) in procs.iter() {
                if q.ppid.load(Ordering::SeqCst) != me || !which.accepts(pid) {
                    continue;
                }
                any = true;
                if let Some(e) = q.reapable_ending() {
                    if reap {
                        procs.remove(&pid);
                    }
                    return Some(Ok(Some((pid, e))));
                }
            }
            if !any {
                return Some(Err(ECHILD));
            }
            nohang.then_some(Ok(None))
        });
        r.unwrap_or(Err(EINTR))
    }

    /// The processes `kill(pid, ...)` aims at.
    pub(crate) fn kill_targets(&self, pid: u64) -> Result<Vec<Arc<Process>>, i32> {
        match pid as i64 {
            p if p > 0 => self.p.sys.get(p as u64).filter(|q| !q.is_done()).map(|q| vec![q]).ok_or(ESRCH),
            // One process group (the run's) and "every process": the same
            // set, without the caller for -1 as in Linux.
            0 => Ok(self.p.sys.all()),
            -1 => Ok(self.p.sys.all().into_iter().filter(|q| q.pid != self.p.pid).collect()),
            _ => Ok(self.p.sys.all()),
        }
    }
}
