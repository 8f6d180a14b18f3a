//! The Linux system-call layer for riscv64 (asm-generic numbers): `a7`
//! holds the number, `a0..a5` the arguments, `a0` the result (a negative
//! errno on failure). Memory calls go to the process's softmm [`Mm`];
//! buffers are copied through the hart's accessor, and a bad guest pointer
//! is `EFAULT`, never a host fault. A number this layer does not know
//! answers `ENOSYS` and is counted for the exit report.

use crate::deliver::{send_to_process, send_to_thread};
use crate::hart::Hart;
use crate::signal::{Payload, SigInfo, NSIG, SI_TKILL, SI_USER};
use crate::task::{lock, Ending, Process, ThreadCtl};
use softmm::{Advice, MapKind, Mm, Placement, Prot, RemapFlags};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod nr {
    pub const IOCTL: u64 = 29;
    pub const GETCWD: u64 = 17;
    pub const CHDIR: u64 = 49;
    pub const DUP: u64 = 23;
    pub const DUP3: u64 = 24;
    pub const FCNTL: u64 = 25;
    pub const MKDIRAT: u64 = 34;
    pub const UNLINKAT: u64 = 35;
    pub const FTRUNCATE: u64 = 46;
    pub const OPENAT: u64 = 56;
    pub const CLOSE: u64 = 57;
    pub const PIPE2: u64 = 59;
    pub const LSEEK: u64 = 62;
    pub const PREAD64: u64 = 67;
    pub const PWRITE64: u64 = 68;
    pub const STATX: u64 = 291;
    pub const MEMFD_CREATE: u64 = 279;
    pub const READLINKAT: u64 = 78;
    pub const NEWFSTATAT: u64 = 79;
    pub const FSTAT: u64 = 80;
    pub const READ: u64 = 63;
    pub const WRITE: u64 = 64;
    pub const READV: u64 = 65;
    pub const WRITEV: u64 = 66;
    pub const EXIT: u64 = 93;
    pub const EXIT_GROUP: u64 = 94;
    pub const CLONE: u64 = 220;
    pub const EXECVE: u64 = 221;
    pub const WAIT4: u64 = 260;
    pub const WAITID: u64 = 95;
    pub const CLONE3: u64 = 435;
    pub const SET_TID_ADDRESS: u64 = 96;
    pub const FUTEX: u64 = 98;
    pub const FUTEX_WAITV: u64 = 449;
    pub const SET_ROBUST_LIST: u64 = 99;
    pub const GET_ROBUST_LIST: u64 = 100;
    pub const NANOSLEEP: u64 = 101;
    pub const CLOCK_GETTIME: u64 = 113;
    pub const CLOCK_GETRES: u64 = 114;
    pub const CLOCK_NANOSLEEP: u64 = 115;
    pub const SCHED_YIELD: u64 = 124;
    pub const SCHED_SETPARAM: u64 = 118;
    pub const SCHED_SETSCHEDULER: u64 = 119;
    pub const SCHED_GET_PRIORITY_MAX: u64 = 125;
    pub const SCHED_GET_PRIORITY_MIN: u64 = 126;
    pub const KILL: u64 = 129;
    pub const TKILL: u64 = 130;
    pub const TGKILL: u64 = 131;
    pub const RT_SIGACTION: u64 = 134;
    pub const RT_SIGPROCMASK: u64 = 135;
    pub const RT_SIGPENDING: u64 = 136;
    pub const RT_SIGRETURN: u64 = 139;
    pub const RT_SIGSUSPEND: u64 = 133;
    pub const SIGALTSTACK: u64 = 132;
    pub const PPOLL: u64 = 73;
    pub const UNAME: u64 = 160;
    pub const GETRLIMIT: u64 = 163;
    pub const GETTIMEOFDAY: u64 = 169;
    pub const GETPID: u64 = 172;
    pub const GETPPID: u64 = 173;
    pub const GETUID: u64 = 174;
    pub const GETEUID: u64 = 175;
    pub const GETGID: u64 = 176;
    pub const GETEGID: u64 = 177;
    pub const GETTID: u64 = 178;
    pub const BRK: u64 = 214;
    pub const MUNMAP: u64 = 215;
    pub const MREMAP: u64 = 216;
    pub const MMAP: u64 = 222;
    pub const MPROTECT: u64 = 226;
    pub const MSYNC: u64 = 227;
    pub const FSYNC: u64 = 82;
    pub const FDATASYNC: u64 = 83;
    pub const MADVISE: u64 = 233;
    pub const MLOCK: u64 = 228;
    pub const MUNLOCK: u64 = 229;
    pub const MLOCKALL: u64 = 230;
    pub const MUNLOCKALL: u64 = 231;
    pub const MLOCK2: u64 = 284;
    pub const SHMGET: u64 = 194;
    pub const SHMCTL: u64 = 195;
    pub const SHMAT: u64 = 196;
    pub const SHMDT: u64 = 197;
    pub const PRLIMIT64: u64 = 261;
    pub const GETRANDOM: u64 = 278;
    pub const RISCV_FLUSH_ICACHE: u64 = 259;
}

/// Names of system calls for the unknown-call report.
pub fn name(n: u64) -> &'static str {
    match n {
        nr::FUTEX => "futex (op)",
        258 => "riscv_hwprobe",
        293 => "rseq",
        _ => "?",
    }
}

use crate::errno::{EAGAIN, EFAULT, EINTR, EINVAL, ENOENT, ENOSYS, ESRCH};

/// What the thread does after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// This thread leaves (`exit`) with this code.
    ExitThread(i32),
    /// The whole process ends (`exit_group`, a fatal signal).
    ExitGroup(Ending),
    /// The thread stopped at the snapshot server's marker
    /// ([`crate::server`]); its registers are where each run resumes.
    Pause,
}

/// The kernel side of one guest thread: the process it belongs to and
/// its own state.
pub struct Kernel {
    pub p: Arc<Process>,
    /// The process's address space (replaced by execve).
    pub mm: Arc<Mm>,
    pub ctl: Arc<ThreadCtl>,
    pub tid: u64,
    /// `set_tid_address` / `CLONE_CHILD_CLEARTID`: zeroed and woken at exit.
    pub clear_child_tid: u64,
    /// The mask `rt_sigsuspend` replaced, restored after the handler.
    pub saved_mask: Option<u64>,
    /// The first argument of a system call a signal interrupted (Linux's
    /// `orig_a0`), and when to restart it.
    pub restart: Option<(u64, Restart)>,
    /// `sigaltstack`: base, size, and whether it is disabled.
    pub altstack: (u64, u64, bool),
    /// Stop at this marker ([`crate::server`]); `None` outside a snapshot
    /// server's first run.
    pub pause_at: Option<crate::server::Marker>,
}

pub(crate) type SysResult = Result<u64, i32>;

const PROT_MASK: u64 = 7;
const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_SHARED_VALIDATE: u64 = 0x03;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const MREMAP_DONTUNMAP: u64 = 4;
const IOV_MAX: u64 = 1024;

impl Kernel {
    /// The kernel side of thread `ctl` of `p`.
    pub fn new(p: Arc<Process>, ctl: Arc<ThreadCtl>) -> Kernel {
        Kernel {
            tid: ctl.tid,
            mm: p.mm(),
            p,
            ctl,
            clear_child_tid: 0,
            saved_mask: None,
            restart: None,
            altstack: (0, 0, true),
            pause_at: None,
        }
    }

    /// Handle the ecall the hart stopped at.
    pub fn syscall(&mut self, hart: &mut Hart) -> Flow {
        let n = hart.x[17];
        let a = [hart.x[10], hart.x[11], hart.x[12], hart.x[13], hart.x[14], hart.x[15]];
        if let Some(m) = self.pause_at {
            if m.is_at(n, a[0]) {
                m.resume_point(hart);
                return Flow::Pause;
            }
        }
        let r = match n {
            nr::EXIT => return Flow::ExitThread((a[0] & 0xff) as i32),
            nr::EXIT_GROUP => return Flow::ExitGroup(Ending::code(a[0] as i32)),
            nr::KILL | nr::TKILL | nr::TGKILL => self.kill(n, a),
            nr::RT_SIGRETURN => return self.rt_sigreturn(hart),
            nr::EXECVE => match self.execve(hart, a[0], a[1], a[2]) {
                // The new program starts with the registers Linux gives it.
                Ok(()) => return Flow::Continue,
                Err(e) => Err(e),
            },
            nr::CLONE => self.clone(hart, a[0], a[1], a[2], a[3], a[4]),
            nr::CLONE3 => self.clone3(hart, a[0], a[1]),
            _ => self.dispatch(hart, n, a),
        };
        if r == Err(EINTR) {
            self.restart = Restart::of(n, a[1]).map(|how| (a[0], how));
        }
        hart.x[10] = match r {
            Ok(v) => v,
            Err(e) => (-i64::from(e)) as u64,
        };
        Flow::Continue
    }

    fn dispatch(&mut self, hart: &mut Hart, n: u64, a: [u64; 6]) -> SysResult {
        match n {
            nr::READ => self.read(hart, a[0], a[1], a[2]),
            nr::WRITE => self.write(hart, a[0], a[1], a[2]),
            nr::READV | nr::WRITEV => self.rwv(hart, n == nr::WRITEV, a[0], a[1], a[2]),
            nr::BRK => Ok(self.sys_brk(a[0])),
            nr::MMAP => self.mmap(a[0], a[1], a[2], a[3], a[4], a[5]),
            nr::MSYNC => self.msync(a[0], a[1], a[2]),
            nr::FSYNC | nr::FDATASYNC => self.fsync(a[0]),
            nr::MUNMAP => self.mm.munmap(a[0], a[1]).map(|()| 0).map_err(|e| e.errno()),
            nr::MREMAP => self.mremap(a[0], a[1], a[2], a[3], a[4]),
            nr::MPROTECT => self.mm.mprotect(a[0], a[1], prot(a[2])?).map(|()| 0).map_err(|e| e.errno()),
            nr::MADVISE => self.madvise(a[0], a[1], a[2]),
            nr::MLOCK => self.mm.mlock(a[0], a[1]).map(|()| 0).map_err(|e| e.errno()),
            nr::MLOCK2 => {
                let flags = u32::try_from(a[2]).map_err(|_| EINVAL)?;
                self.mm.mlock2(a[0], a[1], flags).map(|()| 0).map_err(|e| e.errno())
            }
            nr::MUNLOCK => self.mm.munlock(a[0], a[1]).map(|()| 0).map_err(|e| e.errno()),
            nr::MLOCKALL => {
                let flags = u32::try_from(a[0]).map_err(|_| EINVAL)?;
                self.mm.mlockall(flags).map(|()| 0).map_err(|e| e.errno())
            }
            nr::SHMGET => self.shmget(a[0], a[1], a[2]),
            nr::SHMAT => self.shmat(a[0], a[1], a[2]),
            nr::SHMDT => self.shmdt(a[0]),
            nr::SHMCTL => self.shmctl(hart, a[0], a[1], a[2]),
            nr::MUNLOCKALL => self.mm.munlockall().map(|()| 0).map_err(|e| e.errno()),
            nr::SET_TID_ADDRESS => {
                self.clear_child_tid = a[0];
                Ok(self.tid)
            }
            nr::SET_ROBUST_LIST => {
                // softmm keeps the head per thread and walks it at exit.
                let len = usize::try_from(a[1]).map_err(|_| EINVAL)?;
                let tid = u32::try_from(self.tid).map_err(|_| EINVAL)?;
                self.mm.set_robust_list(tid, a[0], len).map(|()| 0).map_err(|e| e.errno())
            }
            nr::GET_ROBUST_LIST => self.get_robust_list(hart, a[0], a[1], a[2]),
            nr::RT_SIGACTION => self.sigaction(hart, a[0], a[1], a[2], a[3]),
            nr::RT_SIGPROCMASK => self.sigprocmask(hart, a[0], a[1], a[2], a[3]),
            nr::RT_SIGPENDING => self.rt_sigpending(hart, a[0], a[1]),
            nr::RT_SIGSUSPEND => self.rt_sigsuspend(hart, a[0], a[1]),
            nr::SIGALTSTACK => self.sigaltstack(hart, a[0], a[1]),
            nr::PPOLL => self.ppoll(hart, a),
            nr::UNAME => uname(hart, a[0]),
            nr::GETRANDOM => getrandom(hart, a[0], a[1]),
            nr::CLOCK_GETTIME => clock_gettime(hart, a[0], a[1], false),
            nr::CLOCK_GETRES => clock_gettime(hart, a[0], a[1], true),
            nr::GETTIMEOFDAY => gettimeofday(hart, a[0]),
            nr::NANOSLEEP => self.nanosleep(hart, a[0]),
            nr::CLOCK_NANOSLEEP => self.clock_nanosleep(hart, a[0], a[1], a[2]),
            nr::SCHED_YIELD => {
                std::thread::yield_now();
                Ok(0)
            }
            nr::SCHED_GET_PRIORITY_MAX | nr::SCHED_GET_PRIORITY_MIN => {
                sched_priority_range(a[0]).map(|(lo, hi)| if n == nr::SCHED_GET_PRIORITY_MAX { hi } else { lo })
            }
            nr::SCHED_SETSCHEDULER => self.sched_set(hart, a[0], Some(a[1]), a[2]),
            nr::SCHED_SETPARAM => self.sched_set(hart, a[0], None, a[1]),
            nr::PRLIMIT64 => self.prlimit(hart, a[0], a[1], a[2], a[3]),
            nr::GETRLIMIT => self.prlimit(hart, 0, a[0], 0, a[1]),
            nr::READLINKAT => self.readlinkat(hart, a[1], a[2], a[3]),
            nr::OPENAT => self.openat(hart, a[0], a[1], a[2], a[3]),
            nr::CLOSE => self.close(a[0]),
            nr::PREAD64 => self.pread(hart, a[0], a[1], a[2], a[3]),
            nr::PWRITE64 => self.pwrite(hart, a[0], a[1], a[2], a[3]),
            nr::LSEEK => self.lseek(a[0], a[1], a[2]),
            nr::STATX => self.statx(hart, a),
            nr::DUP => self.dup(a[0]),
            nr::DUP3 => self.dup3(a[0], a[1], a[2]),
            nr::FCNTL => self.fcntl(a[0], a[1], a[2]),
            nr::PIPE2 => self.pipe2(hart, a[0], a[1]),
            nr::GETCWD => self.getcwd(hart, a[0], a[1]),
            nr::CHDIR => self.chdir(hart, a[0]),
            nr::UNLINKAT => self.unlinkat(hart, a[0], a[1], a[2]),
            nr::MKDIRAT => self.mkdirat(hart, a[0], a[1], a[2]),
            nr::FTRUNCATE => self.ftruncate(a[0], a[1]),
            nr::MEMFD_CREATE => self.memfd_create(hart, a[0], a[1]),
            nr::IOCTL => self.ioctl(hart, a[0], a[1], a[2]),
            nr::FSTAT => self.fstat(hart, a[0], a[1]),
            nr::NEWFSTATAT => self.newfstatat(hart, a[0], a[1], a[2], a[3]),
            nr::GETPID => Ok(self.p.pid),
            nr::GETTID => Ok(self.tid),
            nr::GETPPID => Ok(self.getppid()),
            nr::WAIT4 => self.wait4(hart, a[0], a[1], a[2], a[3]),
            nr::WAITID => self.waitid(hart, a),
            nr::GETUID => Ok(u64::from(rustix::process::getuid().as_raw())),
            nr::GETEUID => Ok(u64::from(rustix::process::geteuid().as_raw())),
            nr::GETGID => Ok(u64::from(rustix::process::getgid().as_raw())),
            nr::GETEGID => Ok(u64::from(rustix::process::getegid().as_raw())),
            nr::FUTEX => self.futex(hart, a),
            nr::FUTEX_WAITV => self.futex_waitv(hart, a),
            // The snapshot server's marker, outside the server's first run:
            // nothing to do.
            crate::server::SNAPSHOT_CALL => Ok(0),
            nr::RISCV_FLUSH_ICACHE => {
                // flags: 0 (all harts) or SYS_RISCV_FLUSH_ICACHE_LOCAL (1);
                // both drop every hart's decoded instructions.
                if a[2] > 1 {
                    return Err(EINVAL);
                }
                if let Some(c) = hart.icache() {
                    c.watch().flush_all();
                }
                Ok(0)
            }
            _ => {
                self.p.unknown_call(n);
                Err(ENOSYS)
            }
        }
    }

    /// readv/writev: one call per iovec, stopping at a short transfer.
    fn rwv(&mut self, hart: &mut Hart, write: bool, fd: u64, iov: u64, cnt: u64) -> SysResult {
        if cnt > IOV_MAX {
            return Err(EINVAL);
        }
        let mut total = 0u64;
        for i in 0..cnt {
            let entry = iov.wrapping_add(16 * i);
            let base = hart.mem.load(entry, 8).map_err(|_| EFAULT)?;
            let len = hart.mem.load(entry.wrapping_add(8), 8).map_err(|_| EFAULT)?;
            if len == 0 {
                continue;
            }
            let r = if write { self.write(hart, fd, base, len) } else { self.read(hart, fd, base, len) };
            match r {
                Ok(n) => {
                    total += n;
                    if n < len {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    /// brk as Linux answers it: the new break on success, the old one when
    /// the request is below the start or cannot be mapped.
    fn sys_brk(&mut self, want: u64) -> u64 {
        let mut brk = lock(&self.p.brk);
        if want < brk.start {
            return brk.cur;
        }
        let page = |x: u64| x.checked_add(4095).map(|v| v & !4095);
        let (Some(old_end), Some(new_end)) = (page(brk.cur), page(want)) else {
            return brk.cur;
        };
        let mm = &self.mm;
        if new_end > old_end {
            let r = mm.mmap(old_end, new_end - old_end, Prot::RW, MapKind::Private, Placement::FixedNoReplace);
            if r.is_err() {
                return brk.cur;
            }
        } else if new_end < old_end && mm.munmap(new_end, old_end - new_end).is_err() {
            return brk.cur;
        }
        brk.cur = want;
        want
    }

    fn mmap(&mut self, addr: u64, len: u64, prot_bits: u64, flags: u64, fd: u64, off: u64) -> SysResult {
        let kind = match flags & 3 {
            MAP_SHARED | MAP_SHARED_VALIDATE => MapKind::Shared,
            MAP_PRIVATE => MapKind::Private,
            _ => return Err(EINVAL),
        };
        let place = if flags & MAP_FIXED_NOREPLACE != 0 {
            Placement::FixedNoReplace
        } else if flags & MAP_FIXED != 0 {
            Placement::Fixed
        } else {
            Placement::Hint
        };
        if flags & MAP_ANONYMOUS == 0 {
            let at = crate::mapped::MapAt { addr, len, place };
            return self.mmap_fd(at, prot(prot_bits)?, kind, fd, off);
        }
        self.mm.mmap(addr, len, prot(prot_bits)?, kind, place).map_err(|e| e.errno())
    }

    /// mremap(old, old_len, new_len, flags, new): Linux's flag bits, any
    /// other bit EINVAL. A move unmaps the old range through softmm, whose
    /// notifier drops the harts' decoded instructions there.
    fn mremap(&mut self, old: u64, old_len: u64, new_len: u64, flags: u64, new: u64) -> SysResult {
        if flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0 {
            return Err(EINVAL);
        }
        let mut f = RemapFlags::NONE;
        for (bit, flag) in [
            (MREMAP_MAYMOVE, RemapFlags::MAYMOVE),
            (MREMAP_FIXED, RemapFlags::FIXED),
            (MREMAP_DONTUNMAP, RemapFlags::DONTUNMAP),
        ] {
            if flags & bit != 0 {
                f = f.union(flag);
            }
        }
        self.mm.mremap(old, old_len, new_len, f, new).map_err(|e| e.errno())
    }

    /// madvise: every advice softmm implements goes to it (its checks are
    /// Linux's); the pure hints (`MADV_NORMAL`, `RANDOM`, `SEQUENTIAL`,
    /// `MERGEABLE`, `UNMERGEABLE`, `HUGEPAGE`, `NOHUGEPAGE`, `DONTDUMP`,
    /// `DODUMP`, `COLLAPSE`) change nothing softmm models and answer 0 for
    /// an aligned start; any other number is `EINVAL`, as an unknown one
    /// is in Linux (`MADV_DONTNEED_LOCKED` and `MADV_HWPOISON` among them).
    fn madvise(&mut self, addr: u64, len: u64, advice: u64) -> SysResult {
        const HINTS: [u64; 10] = [0, 1, 2, 12, 13, 14, 15, 16, 17, 25];
        match u32::try_from(advice).ok().and_then(Advice::from_linux) {
            Some(a) => self.mm.madvise(addr, len, a).map(|()| 0).map_err(|e| e.errno()),
            None if HINTS.contains(&advice) && addr & 0xfff == 0 => Ok(0),
            None => Err(EINVAL),
        }
    }

    /// get_robust_list(tid, head_ptr, len_ptr) of this thread (tid 0) or
    /// another thread of this process; ESRCH for any other.
    fn get_robust_list(&mut self, hart: &mut Hart, tid: u64, head_ptr: u64, len_ptr: u64) -> SysResult {
        let tid = if tid == 0 { self.tid } else { tid };
        if self.p.thread(tid).is_none() {
            return Err(ESRCH);
        }
        let tid = u32::try_from(tid).map_err(|_| ESRCH)?;
        let head = self.mm.robust_list(tid).unwrap_or(0);
        hart.mem.store(head_ptr, 8, head).map_err(|_| EFAULT)?;
        hart.mem.store(len_ptr, 8, softmm::futex::ROBUST_LIST_HEAD_LEN as u64).map_err(|_| EFAULT)?;
        Ok(0)
    }

    /// kill/tkill/tgkill: signal 0 probes; no target is ESRCH.
    fn kill(&mut self, n: u64, a: [u64; 6]) -> SysResult {
        let sig = match n {
            nr::TGKILL => a[2],
            _ => a[1],
        };
        let sig = i32::try_from(sig).map_err(|_| EINVAL)?;
        if !(0..=NSIG as i32).contains(&sig) {
            return Err(EINVAL);
        }
        let from = Payload::Kill { pid: self.p.pid as u32, uid: rustix::process::getuid().as_raw() };
        if n == nr::KILL {
            let targets = self.kill_targets(a[0])?;
            if targets.is_empty() {
                return Err(ESRCH);
            }
            for q in targets {
                send_to_process(&q, SigInfo { signo: sig, code: SI_USER, payload: from });
            }
            return Ok(0);
        }
        let (q, t) = if n == nr::TGKILL {
            let q = self.p.sys.get(a[0]).ok_or(ESRCH)?;
            let t = q.thread(a[1]).ok_or(ESRCH)?;
            (q, t)
        } else {
            self.p.sys.all().into_iter().find_map(|q| q.thread(a[0]).map(|t| (q, t))).ok_or(ESRCH)?
        };
        send_to_thread(&q, &t, SigInfo { signo: sig, code: SI_TKILL, payload: from });
        Ok(0)
    }

    fn prlimit(&mut self, hart: &mut Hart, pid: u64, res: u64, _new: u64, old: u64) -> SysResult {
        if pid != 0 && pid != self.p.pid {
            return Err(ESRCH);
        }
        const INF: u64 = u64::MAX;
        let (cur, max) = match res {
            3 => (crate::loader::STACK_SIZE, INF), // RLIMIT_STACK
            7 => (1024, 4096),                     // RLIMIT_NOFILE
            0..=15 => (INF, INF),
            _ => return Err(EINVAL),
        };
        if old != 0 {
            let mut b = cur.to_le_bytes().to_vec();
            b.extend_from_slice(&max.to_le_bytes());
            hart.mem.write_bytes(old, &b).map_err(|_| EFAULT)?;
        }
        Ok(0)
    }

    /// sched_setscheduler(tid, policy, param) / sched_setparam(tid, param):
    /// checked as Linux checks them (the policy, the priority in its
    /// range, the thread), then accepted. The machine's threads are host
    /// threads the host schedules, so a real-time policy or priority
    /// changes no order here; programs that set one (the PI futex tests
    /// make their threads SCHED_FIFO) run, without its timing guarantee.
    fn sched_set(&mut self, hart: &mut Hart, tid: u64, policy: Option<u64>, param: u64) -> SysResult {
        if tid as i64 > i64::from(i32::MAX) || (tid as i64) < 0 || param == 0 {
            return Err(EINVAL);
        }
        let prio = hart.mem.load(param, 4).map_err(|_| EFAULT)? as i32;
        if tid != 0 && !self.p.sys.all().iter().any(|q| q.thread(tid).is_some()) {
            return Err(ESRCH);
        }
        // SCHED_RESET_ON_FORK may be or-ed into the policy.
        let policy = policy.map(|p| p & !SCHED_RESET_ON_FORK).unwrap_or(SCHED_OTHER);
        let (lo, hi) = sched_priority_range(policy)?;
        if !(lo as i32..=hi as i32).contains(&prio) {
            return Err(EINVAL);
        }
        Ok(0)
    }

    fn readlinkat(&mut self, hart: &mut Hart, path: u64, buf: u64, size: u64) -> SysResult {
        if size == 0 || size > i32::MAX as u64 {
            return Err(EINVAL);
        }
        let p = hart.mem.read_cstr(path, 4096).map_err(|_| EFAULT)?;
        if p != b"/proc/self/exe" {
            return Err(ENOENT);
        }
        let exe = lock(&self.p.exe).clone();
        let n = exe.len().min(size as usize);
        hart.mem.write_bytes(buf, &exe[..n]).map_err(|_| EFAULT)?;
        Ok(n as u64)
    }
}

const SCHED_OTHER: u64 = 0;
const SCHED_RESET_ON_FORK: u64 = 0x4000_0000;

/// The priorities a scheduling policy takes (Linux's): 1..=99 for
/// SCHED_FIFO and SCHED_RR, 0 for SCHED_OTHER, SCHED_BATCH, SCHED_IDLE
/// and SCHED_DEADLINE; any other policy is EINVAL.
fn sched_priority_range(policy: u64) -> Result<(u64, u64), i32> {
    match policy {
        1 | 2 => Ok((1, 99)),
        0 | 3 | 5 | 6 => Ok((0, 0)),
        _ => Err(EINVAL),
    }
}

fn prot(bits: u64) -> Result<Prot, i32> {
    if bits & !PROT_MASK != 0 {
        return Err(EINVAL);
    }
    // As on riscv64 Linux, a write-only page is readable too (the hardware
    // has no write-only pages), yet its VMA is write-only: softmm's
    // `Prot::WRITE` loads as it stores, and `MADV_POPULATE_READ` of it is
    // EINVAL, as GUP wants VM_READ. PROT_EXEC alone is mapped readable.
    let mut prot = Prot::NONE;
    if bits & 1 != 0 || bits & 7 == 4 {
        prot = prot.union(Prot::READ);
    }
    if bits & 2 != 0 {
        prot = prot.union(Prot::WRITE);
    }
    if bits & 4 != 0 {
        prot = prot.union(Prot::EXEC);
    }
    Ok(prot)
}

pub(crate) fn read_timespec(hart: &mut Hart, addr: u64) -> Result<Duration, i32> {
    let sec = hart.mem.load(addr, 8).map_err(|_| EFAULT)? as i64;
    let nsec = hart.mem.load(addr.wrapping_add(8), 8).map_err(|_| EFAULT)? as i64;
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(EINVAL);
    }
    Ok(Duration::new(sec as u64, nsec as u32))
}

fn write_timespec(hart: &mut Hart, addr: u64, d: Duration) -> SysResult {
    let mut b = d.as_secs().to_le_bytes().to_vec();
    b.extend_from_slice(&u64::from(d.subsec_nanos()).to_le_bytes());
    hart.mem.write_bytes(addr, &b).map_err(|_| EFAULT)?;
    Ok(0)
}

pub(crate) fn host_clock(realtime: bool) -> Duration {
    use rustix::time::{clock_gettime, ClockId};
    let ts = clock_gettime(if realtime { ClockId::Realtime } else { ClockId::Monotonic });
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// An absolute time on the monotonic (or real-time) clock as an Instant
/// (`None`: too far to represent).
pub(crate) fn absolute_deadline(at: Duration, realtime: bool) -> Option<Instant> {
    let now = host_clock(realtime);
    Instant::now().checked_add(at.saturating_sub(now))
}

fn clock_gettime(hart: &mut Hart, clk: u64, tp: u64, res: bool) -> SysResult {
    use rustix::time::{clock_gettime, ClockId};
    let id = match clk {
        0 => ClockId::Realtime,
        1 | 4 => ClockId::Monotonic,
        2 => ClockId::ProcessCPUTime,
        3 => ClockId::ThreadCPUTime,
        5 => ClockId::RealtimeCoarse,
        6 => ClockId::MonotonicCoarse,
        7 => ClockId::Boottime,
        _ => return Err(EINVAL),
    };
    if tp == 0 {
        return Ok(0);
    }
    if res {
        return write_timespec(hart, tp, Duration::from_nanos(1));
    }
    let ts = clock_gettime(id);
    write_timespec(hart, tp, Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32))
}

fn gettimeofday(hart: &mut Hart, tv: u64) -> SysResult {
    if tv == 0 {
        return Ok(0);
    }
    let d = host_clock(true);
    let mut b = d.as_secs().to_le_bytes().to_vec();
    b.extend_from_slice(&u64::from(d.subsec_micros()).to_le_bytes());
    hart.mem.write_bytes(tv, &b).map_err(|_| EFAULT)?;
    Ok(0)
}

fn uname(hart: &mut Hart, buf: u64) -> SysResult {
    let fields: [&[u8]; 6] = [b"Linux", b"softmm", b"6.1.0-softmm", b"#1 SMP", b"riscv64", b"(none)"];
    let mut b = vec![0u8; 65 * 6];
    for (i, f) in fields.iter().enumerate() {
        b[65 * i..65 * i + f.len()].copy_from_slice(f);
    }
    hart.mem.write_bytes(buf, &b).map_err(|_| EFAULT)?;
    Ok(0)
}

fn getrandom(hart: &mut Hart, buf: u64, len: u64) -> SysResult {
    let mut data = vec![0u8; len.min(1 << 20) as usize];
    crate::io::random_bytes(&mut data).map_err(|_| EAGAIN)?;
    hart.mem.write_bytes(buf, &data).map_err(|_| EFAULT)?;
    Ok(data.len() as u64)
}

/// When a call a signal interrupted starts over (Linux's ERESTART* codes);
/// every kind restarts when no handler runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Restart {
    /// ERESTARTSYS: after a handler too if it has SA_RESTART (wait4,
    /// waitid, futex waits).
    Sys,
    /// ERESTARTNOHAND: only when no handler ran (sleeps, pause-likes).
    NoHand,
    /// ERESTARTNOINTR: after any handler (FUTEX_WAIT_REQUEUE_PI).
    NoIntr,
}

impl Restart {
    /// How call `n` (futex command in `op`) restarts after EINTR, if it does.
    fn of(n: u64, op: u64) -> Option<Restart> {
        match n {
            nr::FUTEX => match op & 127 {
                0 | 9 => Some(Restart::Sys),
                11 => Some(Restart::NoIntr),
                _ => None,
            },
            nr::WAIT4 | nr::WAITID | nr::FUTEX_WAITV => Some(Restart::Sys),
            nr::PPOLL | nr::RT_SIGSUSPEND | nr::NANOSLEEP | nr::CLOCK_NANOSLEEP => Some(Restart::NoHand),
            _ => None,
        }
    }
}
