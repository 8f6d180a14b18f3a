//! The futex system call and the sleeps: waits go through softmm's
//! futexes with a canceller the thread's control block holds, so a
//! process that ends (or, later, a signal) interrupts them.

use crate::errno::{EINTR, EINVAL};
use crate::hart::Hart;
use crate::syscall::{absolute_deadline, host_clock, read_timespec, Kernel, SysResult};
use softmm::futex::Timeout;
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
                self.futex_lock_pi(addr, deadline)
            }
            FUTEX_TRYLOCK_PI | FUTEX_UNLOCK_PI if op & FUTEX_CLOCK_REALTIME != 0 => Err(crate::errno::ENOSYS),
            FUTEX_TRYLOCK_PI => self.mm.futex_trylock_pi(addr, self.pi_tid()?).map(|()| 0).map_err(|e| e.errno()),
            FUTEX_UNLOCK_PI => self.mm.futex_unlock_pi(addr, self.pi_tid()?).map(|()| 0).map_err(|e| e.errno()),
            _ => {
                // FUTEX_WAIT_REQUEUE_PI and FUTEX_CMP_REQUEUE_PI among them.
                self.p.unknown_call(crate::syscall::nr::FUTEX);
                Err(crate::errno::ENOSYS)
            }
        }
    }

    /// The TID a PI futex word holds for this thread.
    fn pi_tid(&self) -> Result<u32, i32> {
        u32::try_from(self.tid).map_err(|_| EINVAL)
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
