//! Robust futex lists (Linux's `set_robust_list(2)` and `exit_robust_list`).
//!
//! A thread that holds a robust mutex keeps it on a list in its own memory,
//! whose head it registers with the kernel. When the thread dies holding
//! some, the kernel walks the list and marks each futex word it still owns
//! `FUTEX_OWNER_DIED`, waking one waiter, so that the next locker gets
//! `EOWNERDEAD` instead of waiting forever.
//!
//! softmm has no threads of its own: the host names a thread by the TID its
//! mutexes store in their words. [`Mm::set_robust_list`] registers a head
//! for one; [`Mm::exit_robust_list`] is that thread's exit; and when the
//! space itself exits, the lists still registered are walked first, in TID
//! order, while its memory is whole (an exit hook of `mm`). A fork's child
//! starts with none, as in Linux.
//!
//! The list lives in guest memory, laid out as on a 64-bit Linux:
//!
//! ```text
//! head: { next: u64, futex_offset: i64, list_op_pending: u64 }   (24 bytes)
//! entry: { next: u64, ... }   the futex word is at entry + futex_offset
//! ```
//!
//! Bit 0 of an entry pointer marks a PI futex. The walk follows Linux's:
//! each entry's `next` is read before the entry is handled, at most
//! [`ROBUST_LIST_LIMIT`] entries are visited (a corrupt or cyclic list
//! ends), a word that is unaligned or cannot be read or written ends the
//! walk, and the pending entry (a lock or unlock in progress) is handled
//! last.

use crate::error::{Error, Result};
use crate::{GuestWords, Mm};
use std::collections::{BTreeMap, HashMap};

/// `sizeof(struct robust_list_head)` on a 64-bit guest: the only length
/// [`Mm::set_robust_list`] accepts, as Linux's.
pub const ROBUST_LIST_HEAD_LEN: usize = 24;
/// Entries a walk visits at most (Linux's `ROBUST_LIST_LIMIT`).
pub const ROBUST_LIST_LIMIT: usize = 2048;
/// The futex word's bit "some thread waits" (`FUTEX_WAITERS`).
pub const FUTEX_WAITERS: u32 = 0x8000_0000;
/// The futex word's bit "the owner died" (`FUTEX_OWNER_DIED`).
pub const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
/// The owner TID's bits of a futex word (`FUTEX_TID_MASK`).
pub const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// What one walk of a robust list did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RobustExit {
    /// Futex words the thread still owned, now marked `FUTEX_OWNER_DIED`.
    pub marked: u32,
    /// Waiters woken: one per marked word that had waiters (a PI lock's
    /// first waiter wakes owning it), and one for a pending unlock that
    /// had finished.
    pub woken: u32,
    /// The walk reached the list's end: false when it stopped at a word it
    /// could not read or write, an unaligned futex, or the entry limit.
    pub complete: bool,
}

/// The heads registered per space and thread: `space id -> tid -> head`.
#[derive(Default)]
pub(crate) struct RobustHeads {
    heads: parking_lot::Mutex<HashMap<u64, BTreeMap<u32, u64>>>,
}

impl Mm {
    /// `set_robust_list(2)` for thread `tid` of this space: `head` is the
    /// guest address of its `robust_list_head`, `len` must be
    /// [`ROBUST_LIST_HEAD_LEN`] (`EINVAL` otherwise, as in Linux). A head
    /// of 0 forgets the thread's list. `tid` is what the thread's mutexes
    /// store as owner: 1 to [`FUTEX_TID_MASK`].
    pub fn set_robust_list(&self, tid: u32, head: u64, len: usize) -> Result<()> {
        if len != ROBUST_LIST_HEAD_LEN {
            return Err(Error::Invalid("robust list head length is not 24"));
        }
        if tid == 0 || tid > FUTEX_TID_MASK {
            return Err(Error::Invalid("thread id is 0 or wider than FUTEX_TID_MASK"));
        }
        let registry = &self.inner.machine.futexes.robust;
        let mut heads = registry.heads.lock();
        let first = !heads.contains_key(&self.id());
        let space = heads.entry(self.id()).or_default();
        if head == 0 {
            space.remove(&tid);
        } else {
            space.insert(tid, head);
        }
        drop(heads);
        if first {
            self.on_exit(Box::new(|mm: &Mm| exit_all(mm)));
        }
        Ok(())
    }

    /// The robust-list head registered for thread `tid`, if any
    /// (`get_robust_list(2)`).
    pub fn robust_list(&self, tid: u32) -> Option<u64> {
        let heads = self.inner.machine.futexes.robust.heads.lock();
        heads.get(&self.id()).and_then(|s| s.get(&tid)).copied()
    }

    /// Thread `tid` exits: walk its robust list (if it registered one) and
    /// forget it. Every futex word on the list that `tid` still owns gets
    /// `FUTEX_OWNER_DIED` (keeping `FUTEX_WAITERS`), and one waiter of each
    /// such non-PI word is woken, as Linux's `exit_robust_list` does; a PI
    /// lock goes to its first waiter with `FUTEX_OWNER_DIED`, as Linux's
    /// `exit_pi_state_list` hands it on.
    pub fn exit_robust_list(&self, tid: u32) -> RobustExit {
        let head = {
            let mut heads = self.inner.machine.futexes.robust.heads.lock();
            heads.get_mut(&self.id()).and_then(|s| s.remove(&tid))
        };
        match head {
            Some(head) => Walk { mm: self, acc: self.accessor(), tid, out: RobustExit::default() }.run(head),
            None => RobustExit { complete: true, ..RobustExit::default() },
        }
    }
}

/// The space exits: walk every list still registered, in TID order.
fn exit_all(mm: &Mm) {
    let space = mm.inner.machine.futexes.robust.heads.lock().remove(&mm.id());
    for (tid, head) in space.into_iter().flatten() {
        Walk { mm, acc: mm.accessor(), tid, out: RobustExit::default() }.run(head);
    }
}

/// What Linux's `handle_futex_death` did to one word (`mark_death`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeathStep {
    /// A pending unlock had finished (the word is 0): wake one waiter, who
    /// takes the lock.
    Unlocked,
    /// The thread does not own the word: nothing to do.
    NotOwned,
    /// A PI word the thread owns: hand it on (`pi::owner_died`).
    Pi,
    /// The word lost its owner and got `FUTEX_OWNER_DIED`, keeping
    /// `FUTEX_WAITERS`; `waiters`: it had that bit, so wake one waiter.
    Marked { waiters: bool },
}

/// `handle_futex_death`'s change of the word, first read as `uval`, for
/// thread `tid` (`pi`: a PI entry; `pending`: the list's pending entry);
/// `cmpxchg(old, new)` answers the value found (`Ok(old)` if stored). The
/// caller wakes as the result says, after the word changed.
pub(crate) fn mark_death<E>(
    tid: u32,
    pi: bool,
    pending: bool,
    mut uval: u32,
    mut cmpxchg: impl FnMut(u32, u32) -> std::result::Result<std::result::Result<u32, u32>, E>,
) -> std::result::Result<DeathStep, E> {
    loop {
        if pending && !pi && uval == 0 {
            return Ok(DeathStep::Unlocked);
        }
        if uval & FUTEX_TID_MASK != tid {
            return Ok(DeathStep::NotOwned);
        }
        if pi {
            return Ok(DeathStep::Pi);
        }
        let died = (uval & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
        match cmpxchg(uval, died)? {
            Ok(_) => return Ok(DeathStep::Marked { waiters: uval & FUTEX_WAITERS != 0 }),
            Err(now) => uval = now,
        }
    }
}

/// One walk of thread `tid`'s list.
struct Walk<'a> {
    mm: &'a Mm,
    acc: crate::Accessor,
    tid: u32,
    out: RobustExit,
}

/// Whether a futex death was handled (`Ok`) or the walk must stop.
type Death = std::result::Result<(), ()>;

impl Walk<'_> {
    fn run(mut self, head: u64) -> RobustExit {
        self.out.complete = self.walk(head).is_ok();
        self.out
    }

    fn walk(&mut self, head: u64) -> Death {
        let (mut entry, mut pi) = self.fetch_entry(head)?;
        let offset = self.read_u64(head.wrapping_add(8))? as i64;
        let (pending, pending_pi) = self.fetch_entry(head.wrapping_add(16))?;
        let mut limit = ROBUST_LIST_LIMIT;
        let mut ended = true;
        while entry != head {
            // The next entry is read first: handling this one may let
            // another thread free it.
            let next = self.fetch_entry(entry);
            if entry != pending {
                self.futex_death(entry.wrapping_add_signed(offset), pi, false)?;
            }
            (entry, pi) = next?;
            limit -= 1;
            if limit == 0 {
                ended = false;
                break;
            }
        }
        if pending != 0 {
            self.futex_death(pending.wrapping_add_signed(offset), pending_pi, true)?;
        }
        if ended {
            Ok(())
        } else {
            Err(())
        }
    }

    /// An entry pointer at `addr`: the address and the PI bit.
    fn fetch_entry(&mut self, addr: u64) -> std::result::Result<(u64, bool), ()> {
        let raw = self.read_u64(addr)?;
        Ok((raw & !1, raw & 1 != 0))
    }

    fn read_u64(&mut self, addr: u64) -> std::result::Result<u64, ()> {
        let mut b = [0u8; 8];
        self.mm.read(addr, &mut b).map_err(|_| ())?;
        Ok(u64::from_ne_bytes(b))
    }

    /// Linux's `handle_futex_death` for the word at `uaddr`.
    fn futex_death(&mut self, uaddr: u64, pi: bool, pending: bool) -> Death {
        if uaddr % 4 != 0 {
            return Err(());
        }
        let uval = self.acc.load_u32(uaddr).map_err(|_| ())?;
        let acc = &mut self.acc;
        match mark_death(self.tid, pi, pending, uval, |old, new| acc.cmpxchg_u32(uaddr, old, new).map_err(|_| ()))? {
            DeathStep::Unlocked => self.wake(uaddr),
            DeathStep::NotOwned => {}
            DeathStep::Pi => return self.pi_owner_died(uaddr),
            DeathStep::Marked { waiters } => {
                self.out.marked += 1;
                // After the mark, never before: a waiter that queues
                // between a wake and the mark would sleep on a word that
                // nobody wakes again (the loom model `robust_death_*`).
                if waiters {
                    self.wake(uaddr);
                }
            }
        }
        Ok(())
    }

    /// A PI lock the thread still owns goes to its first waiter with
    /// `FUTEX_OWNER_DIED` (Linux: `handle_futex_death`, then
    /// `exit_pi_state_list` unlocking the rt_mutex); with none, the word
    /// keeps only `FUTEX_OWNER_DIED`.
    fn pi_owner_died(&mut self, uaddr: u64) -> Death {
        match super::pi::owner_died(&self.mm.inner, uaddr, self.tid) {
            Ok(handed) => {
                self.out.marked += 1;
                self.out.woken += u32::from(handed);
                Ok(())
            }
            Err(crate::Error::NotOwner) => Ok(()), // unlocked meanwhile
            Err(_) => Err(()),
        }
    }

    fn wake(&mut self, uaddr: u64) {
        if let Ok(n) = self.mm.futex_wake(uaddr, 1) {
            self.out.woken += n;
        }
    }
}
