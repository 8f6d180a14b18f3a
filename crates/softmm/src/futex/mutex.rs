//! A mutex and a condition variable over `u32` words of guest memory, built
//! on softmm futexes: what a guest's libc does with `futex(2)`, run by the
//! host on the guest's memory through an [`Accessor`].
//!
//! # The mutex word ([`GuestMutex`])
//! Ulrich Drepper's "Futexes are tricky", mutex 3 (the one glibc's
//! `lll_lock` still follows). The word holds one of three states:
//!
//! | value | meaning |
//! |------:|---------|
//! | 0 | unlocked |
//! | 1 | locked, nobody waits |
//! | 2 | locked, somebody may wait (contended) |
//!
//! - lock: `cmpxchg(0 -> 1)`; that is the whole uncontended path. If the
//!   word was not 0, swap in 2 (announcing a waiter); while the old value
//!   was not 0, `FUTEX_WAIT(word, 2)` and swap in 2 again. A thread that
//!   leaves the slow path always holds the lock with the word at 2, because
//!   it cannot know whether others still sleep: at worst one wake too many.
//! - unlock: atomically decrement. From 1 the word is 0 and nobody can be
//!   asleep (a sleeper would have set 2): done, no system call. From 2, store
//!   0 and `FUTEX_WAKE` one waiter.
//!
//! Why it is correct: a waiter sleeps only if the word still holds 2 when
//! the futex checks it under its bucket lock; an unlocker that sees 2 wakes
//! after storing 0. Either the waiter's check sees the 0 (`EAGAIN`, it
//! retries) or it is queued before the wake looks at the queue. The uncontended
//! lock and unlock are one atomic instruction each through the accessor's TLB;
//! only contention reaches the futex code.
//!
//! # The condition variable word ([`GuestCondvar`])
//! A sequence counter. `wait` reads it, unlocks the mutex, waits on the
//! counter with the value read (so a notify that came after the read but
//! before the sleep makes the wait return at once with `EAGAIN`), then
//! locks the mutex again. `notify_one` increments the counter and wakes one
//! waiter; [`notify_all`](GuestCondvar::notify_all) increments it and wakes
//! every waiter; [`notify_all_requeue`](GuestCondvar::notify_all_requeue)
//! increments it, wakes one and requeues the rest onto the mutex word with
//! `FUTEX_CMP_REQUEUE` (as glibc's condvar did before 2.25), so they wake one
//! at a time as the mutex is released instead of all fighting for it.
//! Because a requeued waiter sleeps on the mutex word without having set it
//! to 2, every thread coming out of `wait` relocks in the contended state
//! (swap in 2), so its unlock wakes the next one.
//!
//! Waits may return spuriously (a wake from elsewhere, a counter that wrapped
//! after 2^32 notifies between the read and the sleep): callers loop on their
//! predicate, as with any condition variable.
//!
//! # What the caller provides
//! Every method takes the [`Mm`] the words live in and the [`GuestWords`] of
//! one thread in that same address space: its [`Accessor`], or a
//! [`Batch`](crate::Batch) of it, which publishes the accessor's slot once
//! for a run of accesses (a host running a lock, a short critical section
//! and the unlock in one batch pays one publication instead of one per
//! access). Sleeps and `Mm` calls leave the batch; the spin before a sleep
//! lets waiting TLB shootdowns through each round. Both words are ordinary guest
//! memory: private or shared, in one address space or, when shared (or not
//! yet COW-broken in physical key mode), in several. Errors are those of the
//! accessor (a fault on the word) and of the futex calls, as
//! [`crate::Result`]; nothing here panics.

use crate::error::{Error, Result};
#[cfg(doc)]
use crate::Accessor;
use crate::{GuestWords, Mm};

/// Reads of the word before a contended lock announces a waiter
/// (adaptive spinning, as glibc's `PTHREAD_MUTEX_ADAPTIVE_NP`).
pub const SPIN: u32 = 100;

/// The mutex word is unlocked.
pub const UNLOCKED: u32 = 0;
/// The mutex word is locked and nobody waits.
pub const LOCKED: u32 = 1;
/// The mutex word is locked and somebody may wait.
pub const CONTENDED: u32 = 2;

/// Fail unless `addr` can hold a futex word (4-byte aligned).
fn check_word(addr: u64) -> Result<()> {
    if addr % 4 != 0 {
        return Err(Error::Invalid("futex word address is not 4-byte aligned"));
    }
    Ok(())
}

/// `EINVAL` unless `acc` is an accessor of `mm` (the futex calls go
/// through the accessor, the rarer ones through `mm`: both must be the same
/// address space).
#[inline]
fn check_pair(mm: &Mm, acc: &impl GuestWords) -> Result<()> {
    if acc.mm_id() != mm.id() {
        return Err(Error::Invalid("the accessor belongs to another address space"));
    }
    Ok(())
}

/// Atomically replace the word at `addr` with `new`; returns the old value
/// (the accessor has no exchange, so a compare-exchange loop).
fn swap(acc: &mut impl GuestWords, addr: u64, new: u32) -> Result<u32> {
    let mut cur = acc.load_u32(addr)?;
    loop {
        match acc.cmpxchg_u32(addr, cur, new)? {
            Ok(old) => return Ok(old),
            Err(actual) => cur = actual,
        }
    }
}

/// Sleep while the word at `addr` holds `val`. A changed word (`EAGAIN`) and
/// a cancelled wait (`EINTR`, which nothing here causes) are ordinary
/// returns; other errors are the caller's.
fn wait_while(acc: &mut impl GuestWords, addr: u64, val: u32) -> Result<()> {
    match acc.futex_wait(addr, val, None) {
        Ok(()) | Err(Error::Again) | Err(Error::Interrupted) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A mutex whose state is the `u32` word at `addr` of guest memory (see the
/// module documentation for its three states). The value is just the
/// address: any number of `GuestMutex`es, in any threads or address spaces
/// that see the same word, are the same mutex. A zeroed word is unlocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMutex {
    addr: u64,
}

impl GuestMutex {
    /// The mutex at `addr`; `EINVAL` unless it is 4-byte aligned.
    pub fn new(addr: u64) -> Result<GuestMutex> {
        check_word(addr)?;
        Ok(GuestMutex { addr })
    }

    /// The guest address of the mutex word.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Acquire the mutex, sleeping on its futex while another holder has it.
    /// `acc` must be an accessor of `mm`. On an error (a fault on the word)
    /// the mutex is not held.
    #[inline]
    pub fn lock(&self, mm: &Mm, acc: &mut impl GuestWords) -> Result<()> {
        check_pair(mm, acc)?;
        match acc.cmpxchg_u32(self.addr, UNLOCKED, LOCKED)? {
            Ok(_) => Ok(()),
            Err(seen) => self.lock_spin(acc, seen),
        }
    }

    /// `lock` when the word was not 0 (`seen`): spin a little, reading only,
    /// before announcing a waiter. A short critical section usually ends
    /// meanwhile, and a failed swap or a futex call would only bounce the
    /// word's cache line. (Not in `lock_contended`: a thread that may have
    /// been requeued must take the lock in state 2.)
    #[cold]
    fn lock_spin(&self, acc: &mut impl GuestWords, seen: u32) -> Result<()> {
        if seen != CONTENDED {
            for _ in 0..SPIN {
                if acc.load_u32(self.addr)? == UNLOCKED && acc.cmpxchg_u32(self.addr, UNLOCKED, LOCKED)?.is_ok() {
                    return Ok(());
                }
                std::hint::spin_loop();
                acc.relax();
            }
        }
        self.lock_slow(acc, seen)
    }

    /// The contended path: announce a waiter (2) and sleep until the swap
    /// finds the word unlocked. `seen` is the value the fast path found.
    fn lock_slow(&self, acc: &mut impl GuestWords, seen: u32) -> Result<()> {
        let mut old = if seen == CONTENDED { seen } else { swap(acc, self.addr, CONTENDED)? };
        while old != UNLOCKED {
            wait_while(acc, self.addr, CONTENDED)?;
            old = swap(acc, self.addr, CONTENDED)?;
        }
        Ok(())
    }

    /// Acquire the mutex in the contended state (the word becomes 2), as a
    /// thread must that may have been requeued onto it (see
    /// [`GuestCondvar::notify_all_requeue`]).
    fn lock_contended(&self, mm: &Mm, acc: &mut impl GuestWords) -> Result<()> {
        check_pair(mm, acc)?;
        self.lock_slow(acc, LOCKED)
    }

    /// Acquire the mutex if it is free; `Ok(false)` if somebody holds it.
    pub fn try_lock(&self, acc: &mut impl GuestWords) -> Result<bool> {
        Ok(acc.cmpxchg_u32(self.addr, UNLOCKED, LOCKED)?.is_ok())
    }

    /// Release the mutex (held by the caller) and wake one waiter if the
    /// word says somebody may wait. `acc` must be an accessor of `mm`.
    ///
    /// `EINVAL` if the mutex was not locked (the word is left unlocked and a
    /// waiter, if any, woken, so a confused caller cannot strand others);
    /// other errors are faults on the word.
    #[inline]
    pub fn unlock(&self, mm: &Mm, acc: &mut impl GuestWords) -> Result<()> {
        check_pair(mm, acc)?;
        let old = acc.fetch_add_u32(self.addr, u32::MAX)?; // decrement
        if old == LOCKED {
            return Ok(());
        }
        self.unlock_slow(acc, old)
    }

    /// `unlock` when the word was not 1: unlock and wake one waiter.
    #[cold]
    fn unlock_slow(&self, acc: &mut impl GuestWords, old: u32) -> Result<()> {
        acc.store_u32(self.addr, UNLOCKED)?;
        acc.futex_wake(self.addr, 1)?;
        if old == UNLOCKED {
            return Err(Error::Invalid("unlock of a guest mutex that is not locked"));
        }
        Ok(())
    }

    /// Whether the word says the mutex is held (a snapshot).
    pub fn is_locked(&self, acc: &mut impl GuestWords) -> Result<bool> {
        Ok(acc.load_u32(self.addr)? != UNLOCKED)
    }
}

/// A condition variable whose state is the `u32` sequence counter at `addr`
/// of guest memory (see the module documentation). A zeroed word is a new
/// condition variable. Used with one [`GuestMutex`] in the same address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCondvar {
    addr: u64,
}

impl GuestCondvar {
    /// The condition variable at `addr`; `EINVAL` unless it is 4-byte aligned.
    pub fn new(addr: u64) -> Result<GuestCondvar> {
        check_word(addr)?;
        Ok(GuestCondvar { addr })
    }

    /// The guest address of the counter.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Atomically release `mutex` (held by the caller) and sleep until
    /// notified, then reacquire `mutex`. May return spuriously: loop on the
    /// condition. `acc` must be an accessor of `mm`.
    ///
    /// If the wait itself fails (a fault on the counter), the mutex is
    /// reacquired before the error is returned, so the caller holds it
    /// whenever the mutex word itself is usable.
    pub fn wait(&self, mm: &Mm, acc: &mut impl GuestWords, mutex: &GuestMutex) -> Result<()> {
        let seq = acc.load_u32(self.addr)?;
        mutex.unlock(mm, acc)?;
        let waited = wait_while(acc, self.addr, seq);
        mutex.lock_contended(mm, acc)?;
        waited
    }

    /// Wake one waiter (if any). The caller may or may not hold the mutex.
    pub fn notify_one(&self, mm: &Mm, acc: &mut impl GuestWords) -> Result<()> {
        check_pair(mm, acc)?;
        acc.fetch_add_u32(self.addr, 1)?;
        acc.futex_wake(self.addr, 1)?;
        Ok(())
    }

    /// Wake every waiter; they then contend for the mutex.
    pub fn notify_all(&self, mm: &Mm, acc: &mut impl GuestWords) -> Result<()> {
        check_pair(mm, acc)?;
        acc.fetch_add_u32(self.addr, 1)?;
        acc.futex_wake(self.addr, i32::MAX as u32)?;
        Ok(())
    }

    /// Wake one waiter and move the others onto `mutex`'s word
    /// (`FUTEX_CMP_REQUEUE`), so that each is woken by the unlock of the one
    /// before it. If another notify changed the counter in between
    /// (`EAGAIN`), falls back to waking every waiter.
    pub fn notify_all_requeue(&self, mm: &Mm, acc: &mut impl GuestWords, mutex: &GuestMutex) -> Result<()> {
        check_pair(mm, acc)?;
        let seq = acc.fetch_add_u32(self.addr, 1)?.wrapping_add(1);
        acc.outside(|_| match mm.futex_cmp_requeue(self.addr, 1, i32::MAX as u32, mutex.addr, seq) {
            Ok(_) => Ok(()),
            Err(Error::Again) => {
                mm.futex_wake(self.addr, i32::MAX as u32)?;
                Ok(())
            }
            Err(e) => Err(e),
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::futex::FutexKeys;
    use crate::{errno, Config, Machine, MapKind, Placement, Prot};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const A: u64 = 0x1000_0000;
    const M: u64 = A;
    const C: u64 = A + 64;
    const DATA: u64 = A + 128;

    fn machine(keys: FutexKeys) -> Machine {
        let arena_bytes = if cfg!(miri) { 256 * 4096 } else { 64 << 20 };
        Machine::new(Config { arena_bytes, prezero: false, futex_keys: keys, ..Config::default() }).expect("machine")
    }

    /// Iterations of the threaded tests: few under Miri, which still checks
    /// the accessor's unsafe code for data races while threads contend.
    const fn iters(n: u64) -> u64 {
        if cfg!(miri) {
            20
        } else {
            n
        }
    }

    fn space(m: &Machine, kind: MapKind) -> Arc<Mm> {
        let mm = m.new_mm().expect("mm");
        mm.mmap(A, 4 * 4096, Prot::RW, kind, Placement::Fixed).expect("mmap");
        Arc::new(mm)
    }

    fn both() -> [FutexKeys; 2] {
        [FutexKeys::Physical, FutexKeys::Linux]
    }

    /// Run `f` on a thread; fail instead of hanging if it takes over a minute.
    fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(v) => v,
            Err(e) => panic!("{what}: no result within 60 s ({e}): a lost wake-up?"),
        }
    }

    #[test]
    fn states_and_errors() {
        for keys in both() {
            let m = machine(keys);
            let mm = space(&m, MapKind::Private);
            let mut acc = mm.accessor();
            let mx = GuestMutex::new(M).unwrap();
            assert_eq!(GuestMutex::new(M + 2).unwrap_err().errno(), errno::EINVAL);
            assert_eq!(GuestCondvar::new(C + 1).unwrap_err().errno(), errno::EINVAL);
            assert!(!mx.is_locked(&mut acc).unwrap());
            mx.lock(&mm, &mut acc).unwrap();
            assert_eq!(acc.load_u32(M).unwrap(), LOCKED);
            assert!(!mx.try_lock(&mut acc).unwrap());
            mx.unlock(&mm, &mut acc).unwrap();
            assert_eq!(acc.load_u32(M).unwrap(), UNLOCKED);
            assert!(mx.try_lock(&mut acc).unwrap());
            mx.unlock(&mm, &mut acc).unwrap();
            // Unlocking an unlocked mutex is refused and leaves it unlocked.
            assert_eq!(mx.unlock(&mm, &mut acc).unwrap_err().errno(), errno::EINVAL);
            assert_eq!(acc.load_u32(M).unwrap(), UNLOCKED);
            // A contended word is unlocked with a wake (nobody is there).
            acc.store_u32(M, CONTENDED).unwrap();
            mx.unlock(&mm, &mut acc).unwrap();
            assert_eq!(acc.load_u32(M).unwrap(), UNLOCKED);
            // Faults are errors, not panics.
            let far = GuestMutex::new(0x3000_0000).unwrap();
            assert!(far.lock(&mm, &mut acc).is_err());
            assert!(far.unlock(&mm, &mut acc).is_err());
            assert!(far.try_lock(&mut acc).is_err());
            mm.mprotect(A + 4096, 4096, Prot::READ).unwrap();
            let ro = GuestMutex::new(A + 4096).unwrap();
            assert!(ro.lock(&mm, &mut acc).is_err());
            let cv = GuestCondvar::new(A + 4096).unwrap();
            mx.lock(&mm, &mut acc).unwrap();
            assert!(cv.notify_one(&mm, &mut acc).is_err());
            assert!(cv.notify_all_requeue(&mm, &mut acc, &mx).is_err());
            mx.unlock(&mm, &mut acc).unwrap();
            // Words of one space with an accessor (or batch) of another.
            let other = space(&m, MapKind::Private);
            let mut oacc = other.accessor();
            let ok_cv = GuestCondvar::new(C).unwrap();
            assert_eq!(mx.lock(&mm, &mut oacc).unwrap_err().errno(), errno::EINVAL);
            assert_eq!(mx.lock(&mm, &mut oacc.batch()).unwrap_err().errno(), errno::EINVAL);
            assert_eq!(ok_cv.notify_all_requeue(&mm, &mut oacc, &mx).unwrap_err().errno(), errno::EINVAL);
            assert_eq!(oacc.load_u32(C).unwrap(), 0, "a refused requeue changed nothing");
            mm.check_invariants().unwrap();
        }
    }

    #[test]
    fn contended_counter_is_exact() {
        for keys in both() {
            let m = machine(keys);
            let mm = space(&m, MapKind::Private);
            const THREADS: u64 = 4;
            const ITERS: u64 = iters(5_000);
            let mx = GuestMutex::new(M).unwrap();
            let mm2 = mm.clone();
            within("contended counter", move || {
                let ts: Vec<_> = (0..THREADS)
                    .map(|_| {
                        let mm = mm2.clone();
                        std::thread::spawn(move || -> Result<()> {
                            let mut acc = mm.accessor();
                            for _ in 0..ITERS {
                                mx.lock(&mm, &mut acc)?;
                                let v = acc.load_u64(DATA)?;
                                acc.store_u64(DATA, v + 1)?;
                                mx.unlock(&mm, &mut acc)?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for t in ts {
                    t.join().expect("thread").expect("lock/unlock");
                }
            });
            let mut acc = mm.accessor();
            assert_eq!(acc.load_u64(DATA).unwrap(), THREADS * ITERS);
            assert_eq!(acc.load_u32(M).unwrap(), UNLOCKED);
            assert_eq!(mm.vcache_entries(), 0);
            mm.check_invariants().unwrap();
        }
    }

    /// A waiter sleeping on the word is woken by the unlock (not by luck):
    /// the holder sleeps long enough for the waiter to be queued.
    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri; no unsafe code of its own")]
    fn unlock_wakes_a_sleeper() {
        for keys in both() {
            let m = machine(keys);
            let mm = space(&m, MapKind::Shared);
            let mx = GuestMutex::new(M).unwrap();
            let mut acc = mm.accessor();
            mx.lock(&mm, &mut acc).unwrap();
            let mm2 = mm.clone();
            let t = std::thread::spawn(move || -> Result<()> {
                let mut acc = mm2.accessor();
                mx.lock(&mm2, &mut acc)?;
                mx.unlock(&mm2, &mut acc)
            });
            let start = Instant::now();
            while acc.load_u32(M).unwrap() != CONTENDED {
                assert!(start.elapsed() < Duration::from_secs(30), "the other thread never contended");
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(20));
            mx.unlock(&mm, &mut acc).unwrap();
            t.join().unwrap().unwrap();
            assert_eq!(acc.load_u32(M).unwrap(), UNLOCKED);
            mm.check_invariants().unwrap();
        }
    }

    /// A bounded queue of one slot: producer and consumer wait on two
    /// condition variables; every item arrives once, in order.
    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri; no unsafe code of its own")]
    fn condvar_handoff() {
        for keys in both() {
            let m = machine(keys);
            let mm = space(&m, MapKind::Private);
            let mx = GuestMutex::new(M).unwrap();
            let not_empty = GuestCondvar::new(C).unwrap();
            let not_full = GuestCondvar::new(C + 4).unwrap();
            const ITEMS: u64 = iters(2_000);
            let (p, c) = (mm.clone(), mm.clone());
            let got = within("condvar handoff", move || {
                // The producer runs each item in one accessor batch (its
                // waits and wakes leave it), the consumer access by access.
                let producer = std::thread::spawn(move || -> Result<()> {
                    let mut acc = p.accessor();
                    for i in 1..=ITEMS {
                        let mut b = acc.batch();
                        mx.lock(&p, &mut b)?;
                        while b.load_u64(DATA)? != 0 {
                            not_full.wait(&p, &mut b, &mx)?;
                        }
                        b.store_u64(DATA, i)?;
                        not_empty.notify_one(&p, &mut b)?;
                        mx.unlock(&p, &mut b)?;
                    }
                    Ok(())
                });
                let consumer = std::thread::spawn(move || -> Result<Vec<u64>> {
                    let mut acc = c.accessor();
                    let mut got = Vec::new();
                    while got.len() < ITEMS as usize {
                        mx.lock(&c, &mut acc)?;
                        let mut v = acc.load_u64(DATA)?;
                        while v == 0 {
                            not_empty.wait(&c, &mut acc, &mx)?;
                            v = acc.load_u64(DATA)?;
                        }
                        acc.store_u64(DATA, 0)?;
                        not_full.notify_one(&c, &mut acc)?;
                        mx.unlock(&c, &mut acc)?;
                        got.push(v);
                    }
                    Ok(got)
                });
                producer.join().expect("producer").expect("producer ops");
                consumer.join().expect("consumer").expect("consumer ops")
            });
            assert_eq!(got, (1..=ITEMS).collect::<Vec<_>>());
            mm.check_invariants().unwrap();
        }
    }

    /// notify_all and notify_all_requeue release every waiter; requeued
    /// waiters pass the mutex on to each other (none is stranded on it).
    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri; no unsafe code of its own")]
    fn broadcast_with_and_without_requeue() {
        for keys in both() {
            for requeue in [false, true] {
                let m = machine(keys);
                let mm = space(&m, MapKind::Private);
                let mx = GuestMutex::new(M).unwrap();
                let cv = GuestCondvar::new(C).unwrap();
                const WAITERS: u64 = 6;
                let mm2 = mm.clone();
                within("broadcast", move || {
                    let ts: Vec<_> = (0..WAITERS)
                        .map(|_| {
                            let mm = mm2.clone();
                            std::thread::spawn(move || -> Result<()> {
                                let mut acc = mm.accessor();
                                mx.lock(&mm, &mut acc)?;
                                let n = acc.load_u64(DATA + 8)?;
                                acc.store_u64(DATA + 8, n + 1)?; // arrived
                                while acc.load_u64(DATA)? == 0 {
                                    cv.wait(&mm, &mut acc, &mx)?;
                                }
                                let n = acc.load_u64(DATA + 16)?;
                                acc.store_u64(DATA + 16, n + 1)?; // released
                                mx.unlock(&mm, &mut acc)
                            })
                        })
                        .collect();
                    let mut acc = mm2.accessor();
                    loop {
                        mx.lock(&mm2, &mut acc).expect("lock");
                        let arrived = acc.load_u64(DATA + 8).expect("load");
                        if arrived == WAITERS {
                            break; // still holding the mutex: all are in wait
                        }
                        mx.unlock(&mm2, &mut acc).expect("unlock");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    // The broadcast in one accessor batch (the requeue's `Mm`
                    // call leaves it).
                    let mut b = acc.batch();
                    b.store_u64(DATA, 1).expect("store");
                    if requeue {
                        cv.notify_all_requeue(&mm2, &mut b, &mx).expect("notify");
                    } else {
                        cv.notify_all(&mm2, &mut b).expect("notify");
                    }
                    mx.unlock(&mm2, &mut b).expect("unlock");
                    drop(b);
                    for t in ts {
                        t.join().expect("thread").expect("waiter ops");
                    }
                    assert_eq!(acc.load_u64(DATA + 16).expect("load"), WAITERS);
                    assert_eq!(acc.load_u32(M).expect("load"), UNLOCKED);
                });
                mm.check_invariants().unwrap();
            }
        }
    }

    /// A mutex in shared memory is one mutex for a parent and its forked
    /// child, in both key modes (same frame; same shared object and offset).
    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri; no unsafe code of its own")]
    fn across_fork_in_shared_memory() {
        for keys in both() {
            let m = machine(keys);
            let p = space(&m, MapKind::Shared);
            let c = Arc::new(p.fork().unwrap());
            let mx = GuestMutex::new(M).unwrap();
            let (p2, c2) = (p.clone(), c.clone());
            within("across fork", move || {
                let ts: Vec<_> = [p2, c2]
                    .into_iter()
                    .map(|mm| {
                        std::thread::spawn(move || -> Result<()> {
                            let mut acc = mm.accessor();
                            for _ in 0..iters(3_000) {
                                mx.lock(&mm, &mut acc)?;
                                let v = acc.load_u64(DATA)?;
                                acc.store_u64(DATA, v + 1)?;
                                mx.unlock(&mm, &mut acc)?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for t in ts {
                    t.join().expect("thread").expect("ops");
                }
            });
            assert_eq!(p.accessor().load_u64(DATA).unwrap(), 2 * iters(3_000));
            p.check_invariants().unwrap();
        }
    }
}
