//! The futex system call and the sleeps: waits go through softmm's
//! futexes with a canceller the thread's control block holds, so a
//! process that ends, or a signal, interrupts them (PI locks wait in
//! slices instead: see `futex_lock_pi`).

use crate::errno::{EFAULT, EINTR, EINVAL, ESRCH};
use crate::hart::Hart;
use crate::syscall::{absolute_deadline, host_clock, read_timespec, Kernel, SysResult};
use softmm::futex::{FutexWaitv, FutexWaitvCanceller, Timeout};
use std::time::{Duration, Instant};

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_LOCK_PI: u64 = 6;
const FUTEX_UNLOCK_PI: u64 = 7;
const FUTEX_TRYLOCK_PI: u64 = 8;
const FUTEX_LOCK_PI2: u64 = 13;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_WAIT_REQUEUE_PI: u64 = 11;
const FUTEX_CMP_REQUEUE_PI: u64 = 12;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;

/// How long a PI lock waits before it looks whether its thread must leave.
const PI_SLICE: Duration = Duration::from_millis(20);

impl Kernel {
    /// futex(uaddr, op, val, timeout or val2, uaddr2, val3).
    pub(crate) fn futex(&mut self, hart: &mut Hart, a: [u64; 6]) -> SysResult {
        let [addr, op, val, timeout, addr2, val3] = a;
        let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
        match cmd {
            FUTEX_WAIT | FUTEX_WAIT_BITSET => {
                let bitset = if cmd == FUTEX_WAIT { u32::MAX } else { val3 as u32 };
                if bitset == 0 {
                    return Err(EINVAL);
                }
                let deadline = if timeout == 0 {
                    None
                } else {
                    let ts = read_timespec(hart, timeout)?;
                    // A deadline past what an Instant holds is no deadline.
                    if cmd == FUTEX_WAIT {
                        Instant::now().checked_add(ts)
                    } else {
                        absolute_deadline(ts, op & FUTEX_CLOCK_REALTIME != 0)
                    }
                };
                self.futex_wait(addr, val as u32, bitset, deadline)
            }
            FUTEX_WAKE | FUTEX_WAKE_BITSET | FUTEX_REQUEUE | FUTEX_CMP_REQUEUE | FUTEX_WAKE_OP => {
                // For these the timeout argument is the second count.
                let op = (op & !FUTEX_CLOCK_REALTIME) as u32;
                let r = self.mm.futex_syscall(addr, op, val as u32, None, addr2, timeout as u32, val3 as u32);
                r.map(u64::from).map_err(|e| e.errno())
            }
            FUTEX_LOCK_PI | FUTEX_LOCK_PI2 => {
                // LOCK_PI's deadline is on CLOCK_REALTIME and takes no
                // clock flag (ENOSYS, as Linux); LOCK_PI2's is monotonic
                // unless the flag says real time.
                let realtime = op & FUTEX_CLOCK_REALTIME != 0;
                if cmd == FUTEX_LOCK_PI && realtime {
                    return Err(crate::errno::ENOSYS);
                }
                let deadline = if timeout == 0 {
                    None
                } else {
                    absolute_deadline(read_timespec(hart, timeout)?, realtime || cmd == FUTEX_LOCK_PI)
                };
                self.check_owner(addr)?;
                self.futex_lock_pi(addr, deadline)
            }
            FUTEX_TRYLOCK_PI | FUTEX_UNLOCK_PI if op & FUTEX_CLOCK_REALTIME != 0 => Err(crate::errno::ENOSYS),
            FUTEX_TRYLOCK_PI => {
                self.check_owner(addr)?;
                self.mm.futex_trylock_pi(addr, self.pi_tid()?).map(|()| 0).map_err(|e| e.errno())
            }
            FUTEX_UNLOCK_PI => self.mm.futex_unlock_pi(addr, self.pi_tid()?).map(|()| 0).map_err(|e| e.errno()),
            FUTEX_WAIT_REQUEUE_PI => {
                // An absolute deadline, monotonic unless the flag says
                // real time (as FUTEX_WAIT_BITSET's).
                let deadline = if timeout == 0 {
                    None
                } else {
                    absolute_deadline(read_timespec(hart, timeout)?, op & FUTEX_CLOCK_REALTIME != 0)
                };
                self.futex_wait_requeue_pi(addr, val as u32, addr2, deadline)
            }
            FUTEX_CMP_REQUEUE_PI => {
                // The timeout argument is the requeue count; softmm's
                // decoder answers ENOSYS to the clock flag, as Linux.
                let r = self.mm.futex_syscall(addr, op as u32, val as u32, None, addr2, timeout as u32, val3 as u32);
                r.map(u64::from).map_err(|e| e.errno())
            }
            _ => {
                self.p.unknown_call(crate::syscall::nr::FUTEX);
                Err(crate::errno::ENOSYS)
            }
        }
    }

    /// The TID a PI futex word holds for this thread.
    fn pi_tid(&self) -> Result<u32, i32> {
        u32::try_from(self.tid).map_err(|_| EINVAL)
    }

    /// Linux's `attach_to_pi_owner` for a lock call: a word owned by a
    /// thread id that no live thread of the run has answers ESRCH, with
    /// `FUTEX_WAITERS` set as Linux sets it before it looks the owner up.
    /// softmm does not know the guest's threads, so the machine looks
    /// first, outside softmm's bucket lock: an owner that exits between
    /// this look and the queueing is waited for (as an owner that exits
    /// while waiters queue). A word that cannot be read is left to softmm
    /// (EFAULT).
    fn check_owner(&self, addr: u64) -> Result<(), i32> {
        use softmm::futex::{FUTEX_TID_MASK, FUTEX_WAITERS};
        use softmm::GuestWords;
        let me = self.pi_tid()?;
        let mut acc = self.mm.accessor();
        loop {
            let Ok(w) = acc.load_u32(addr) else { return Ok(()) };
            let owner = w & FUTEX_TID_MASK;
            if owner == 0 || owner == me || self.live_thread(owner) {
                return Ok(());
            }
            match acc.cmpxchg_u32(addr, w, w | FUTEX_WAITERS) {
                Ok(Ok(_)) => return Err(ESRCH),
                Ok(Err(_)) => continue, // changed meanwhile: look again
                Err(_) => return Ok(()),
            }
        }
    }

    /// Whether `tid` is a live thread of some process of the run.
    fn live_thread(&self, tid: u32) -> bool {
        self.p.sys.all().iter().any(|p| p.thread(u64::from(tid)).is_some())
    }

    /// FUTEX_LOCK_PI(2): softmm's PI lock, waited for in slices so that
    /// the end of the thread or its process (exit_group, another thread's
    /// execve) ends the wait. A signal does not: Linux restarts an
    /// interrupted LOCK_PI after the handler (ERESTARTNOINTR), and glibc
    /// takes any answer but ESRCH and EDEADLK as the lock, so here the
    /// handler runs once the lock is taken. Each slice requeues the
    /// waiter at the back (waiters of equal priority are served in
    /// arrival order in Linux).
    fn futex_lock_pi(&mut self, addr: u64, deadline: Option<Instant>) -> SysResult {
        let tid = self.pi_tid()?;
        loop {
            let slice = Instant::now() + PI_SLICE;
            let until = deadline.map_or(slice, |d| d.min(slice));
            match self.mm.futex_lock_pi(addr, tid, Some(until)) {
                Ok(()) => return Ok(0),
                Err(softmm::Error::TimedOut) if deadline.is_none_or(|d| Instant::now() < d) => {
                    if self.ctl.killed() || self.p.ending() {
                        return Err(EINTR);
                    }
                }
                Err(e) => return Err(e.errno()),
            }
        }
    }

    /// FUTEX_WAIT_REQUEUE_PI: wait on `addr` until a FUTEX_CMP_REQUEUE_PI
    /// hands this thread the PI lock at `addr2`. The end of the thread or
    /// its process, or a signal, cancels the wait: the thread leaves, or,
    /// still on `addr`, the call ends with EINTR and restarts after the
    /// handler (Linux's ERESTARTNOINTR); once requeued to `addr2`, softmm
    /// answers EAGAIN, as Linux does (restarting would wait on `addr`
    /// again).
    fn futex_wait_requeue_pi(&mut self, addr: u64, val: u32, addr2: u64, deadline: Option<Instant>) -> SysResult {
        let tid = self.pi_tid()?;
        let ctl = self.ctl.clone();
        let r = self.mm.futex_wait_requeue_pi_cancellable(addr, val, addr2, deadline, tid, |c| {
            let c2 = c.clone();
            if !ctl.begin_wait(Box::new(move || {
                c.cancel();
            })) {
                c2.cancel();
            }
        });
        self.ctl.end_wait();
        r.map(|()| 0).map_err(|e| e.errno())
    }

    /// Sleep on the futex at `addr` while it holds `val`: woken (0),
    /// timed out, or interrupted (`EINTR`).
    pub(crate) fn futex_wait(&mut self, addr: u64, val: u32, bitset: u32, deadline: Option<Instant>) -> SysResult {
        let waiter = self.mm.futex_wait_start(addr, val, bitset).map_err(|e| e.errno())?;
        let c = waiter.canceller();
        if !self.ctl.begin_wait(Box::new(move || {
            c.cancel();
        })) {
            waiter.cancel();
        }
        let r = waiter.wait(deadline.map(Timeout::At));
        self.ctl.end_wait();
        r.map(|()| 0).map_err(|e| e.errno())
    }

    /// futex_waitv(waiters, nr, flags, timeout, clockid): wait on up to
    /// 128 futexes at once; the index of the one woken. The deadline is
    /// absolute, on CLOCK_MONOTONIC or CLOCK_REALTIME. Linux's order of
    /// checks: the call's flags and count, the clock and the timeout, then
    /// each `struct futex_waitv` (softmm checks their fields).
    pub(crate) fn futex_waitv(&mut self, hart: &mut Hart, a: [u64; 6]) -> SysResult {
        let [list, nr, flags, timeout, clockid, _] = a;
        if flags != 0 || nr == 0 || nr > 128 || list == 0 {
            return Err(EINVAL);
        }
        let deadline = if timeout == 0 {
            None
        } else {
            let realtime = match clockid {
                0 => true,
                1 => false,
                _ => return Err(EINVAL),
            };
            absolute_deadline(read_timespec(hart, timeout)?, realtime)
        };
        let mut waiters = Vec::with_capacity(nr as usize);
        for i in 0..nr {
            let at = list.wrapping_add(24 * i);
            let mut word = |off: u64, size| hart.mem.load(at.wrapping_add(off), size).map_err(|_| EFAULT);
            let (val, uaddr, fl) = (word(0, 8)?, word(8, 8)?, word(16, 8)?);
            waiters.push(FutexWaitv { val, uaddr, flags: fl as u32, reserved: (fl >> 32) as u32 });
        }
        let cancel = FutexWaitvCanceller::default();
        let c = cancel.clone();
        if !self.ctl.begin_wait(Box::new(move || c.cancel())) {
            cancel.cancel();
        }
        let r = self.mm.futex_waitv_cancellable(&waiters, 0, deadline, &cancel);
        self.ctl.end_wait();
        r.map(|i| i as u64).map_err(|e| e.errno())
    }

    pub(crate) fn nanosleep(&mut self, hart: &mut Hart, req: u64) -> SysResult {
        let d = read_timespec(hart, req)?;
        self.sleep(d)
    }

    pub(crate) fn clock_nanosleep(&mut self, hart: &mut Hart, clk: u64, flags: u64, req: u64) -> SysResult {
        let d = read_timespec(hart, req)?;
        let d = if flags & 1 != 0 { d.saturating_sub(host_clock(clk == 0)) } else { d };
        self.sleep(d)
    }

    fn sleep(&mut self, d: Duration) -> SysResult {
        if self.ctl.sleep(d) {
            Ok(0)
        } else {
            Err(EINTR)
        }
    }
}
