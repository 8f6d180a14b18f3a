//! Batches: several word accesses under one publication of the slot.
//!
//! Every access through an [`Accessor`] publishes its slot as active, checks
//! the flush generation, and publishes it idle again (`tlb.rs`). A short
//! sequence on one or two pages (lock a guest mutex, bump a counter,
//! unlock) pays that three times or more. A [`Batch`] publishes once when it
//! opens and once when it ends; in between, a hit is the TLB tag compare and
//! the atomic instruction itself.
//!
//! Why it is sound: the slot stays "active at generation g" for the whole
//! batch, and the batch opened only after it saw the generation still at g
//! with the slot published (the Dekker pairing of `tlb.rs`). A flusher that
//! bumps the generation past g therefore waits until the batch ends, so every
//! translation the TLB held at g stays valid, and every frame stays
//! allocated, until then. A miss leaves the batch for the fill (a fill may
//! fault, and a fault may itself shoot down: it must not wait for this very
//! slot) and opens it again, re-checking the generation.
//!
//! The price is on the other side: while a batch is open, a munmap, COW,
//! fork or mprotect of the same address space in another thread waits for
//! it. So a batch is short, and its thread does nothing else meanwhile:
//! - **it never blocks**: [`Batch::futex_wait`] and [`Batch::futex_wake`]
//!   leave the batch around the call, and a spinning caller calls
//!   [`Batch::relax`] each round so a waiting flusher gets through;
//! - **it calls no [`crate::Mm`] method and creates no accessor** (run such
//!   calls in [`Batch::outside`]): a change of the mappings would wait for
//!   the batch's own slot, and even a read of the `mmap_lock` can wait for a
//!   writer that waits for the slot. Both would hang the thread.

use super::{Accessor, TlbEntry, WRITABLE};
use crate::error::Result;
use std::time::Duration;

/// Word accesses with the accessor's slot published once; see the module
/// documentation for what a thread may not do while one is open. Ends
/// (publishes the slot idle) when dropped; a batch leaked with
/// `mem::forget` stays open, and every later shootdown of its address space
/// waits for it forever (a hang, never a stale access).
pub struct Batch<'a> {
    acc: &'a mut Accessor,
}

impl Accessor {
    /// Open a batch: the word operations of the returned [`Batch`] skip the
    /// per-access publication of this accessor's slot. Keep it short and
    /// never block in it (see [`Batch`]).
    #[inline]
    pub fn batch(&mut self) -> Batch<'_> {
        // The batch publishes and ends the slot itself.
        self.release();
        let mut b = Batch { acc: self };
        b.enter();
        b
    }
}

impl Batch<'_> {
    /// Publish the slot at the accessor's generation, catching up (and
    /// dropping cached translations) until the generation holds still.
    #[inline(always)]
    fn enter(&mut self) {
        let a = &mut *self.acc;
        loop {
            a.slot.enter_as(a.gen, a.light);
            if a.mm.tlb.generation_relaxed() == a.gen {
                return;
            }
            a.slot.exit();
            a.resync();
        }
    }

    #[inline(always)]
    fn leave(&mut self) {
        self.acc.slot.exit();
    }

    /// Let a waiting TLB shootdown through: end the batch and open it again
    /// (translations shot down meanwhile are dropped). Call it in every round
    /// of a spin.
    #[inline]
    pub fn relax(&mut self) {
        self.leave();
        self.enter();
    }

    /// Run `f` with the batch ended, then open it again: for [`crate::Mm`]
    /// calls and anything else that may block.
    pub fn outside<R>(&mut self, f: impl FnOnce(&mut Accessor) -> R) -> R {
        self.leave();
        let r = f(self.acc);
        self.enter();
        r
    }

    /// The identity of the address space ([`crate::Mm::id`]).
    #[inline]
    pub fn mm_id(&self) -> u64 {
        self.acc.mm_id()
    }

    /// `f` on the aligned word at `addr`; a miss fills the TLB outside the
    /// batch and retries.
    #[inline(always)]
    pub(super) fn word<T, R>(&mut self, addr: u64, write: bool, f: impl FnOnce(&T) -> R) -> Result<R> {
        let off = super::word_offset::<T>(addr)?;
        let mut e = *self.acc.entry(addr);
        if !hits(e, addr, write) {
            self.refill(addr, write)?;
            e = *self.acc.entry(addr);
        }
        let p = e.frame(addr) as *const u8;
        // SAFETY: `e` hits (`refill` returns only once it does, and nothing
        // but this accessor changes its TLB), and it was cached at the
        // accessor's generation, which the open batch holds valid (module
        // documentation): `p` is the host address of a live frame of the
        // arena, with write permission if asked. `off` is a multiple of the
        // word size, so the word lies in that page-aligned frame and is
        // aligned for `T` (an std atomic of that size). Guest memory is only
        // accessed through atomics or raw copies.
        Ok(f(unsafe { &*(p.add(off) as *const T) }))
    }

    /// The miss path of `word`: fill outside the batch until the entry of
    /// `addr` hits with the batch open again.
    #[cold]
    #[inline(never)]
    fn refill(&mut self, addr: u64, write: bool) -> Result<()> {
        loop {
            self.leave();
            let filled = self.acc.fill(addr, write);
            self.enter();
            filled?;
            if hits(*self.acc.entry(addr), addr, write) {
                return Ok(());
            }
        }
    }

    /// FUTEX_WAIT, as [`Accessor::futex_wait`], with the batch ended for the
    /// call (it may sleep).
    pub fn futex_wait(&mut self, addr: u64, val: u32, timeout: Option<Duration>) -> Result<()> {
        self.outside(|a| a.futex_wait(addr, val, timeout))
    }

    /// FUTEX_WAKE, as [`Accessor::futex_wake`], with the batch ended for the
    /// call (it may take the `mmap_lock`).
    pub fn futex_wake(&mut self, addr: u64, n: u32) -> Result<u32> {
        self.outside(|a| a.futex_wake(addr, n))
    }
}

/// Whether TLB entry `e` translates `addr` (and allows writing, if asked).
#[inline(always)]
fn hits(e: TlbEntry, addr: u64, write: bool) -> bool {
    e.hits(addr, if write { WRITABLE } else { 0 })
}

impl Drop for Batch<'_> {
    #[inline]
    fn drop(&mut self) {
        self.leave();
    }
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch({:?})", self.acc)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::{Config, Error, GuestWords, Machine, MapKind, Placement, Prot, SegvKind};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    const BASE: u64 = 0x40_0000;

    fn machine() -> Machine {
        Machine::new(Config { arena_bytes: 128 * 4096, ..Config::default() }).unwrap()
    }

    /// Small enough for Miri: every path of a batch (hits, a miss in the
    /// middle, a COW fault through it, errors) and what it leaves behind.
    #[test]
    fn batch_paths_over_fork_cow_and_errors() {
        let m = machine();
        let p = m.new_mm().unwrap();
        p.mmap(BASE, 2 * 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        p.mmap(BASE + 0x10_0000, 4096, Prot::READ, MapKind::Private, Placement::Fixed).unwrap();
        let mut a = p.accessor();
        {
            let mut b = a.batch();
            b.store_u32(BASE, 7).unwrap();
            assert_eq!(b.cmpxchg_u32(BASE, 7, 9).unwrap(), Ok(7));
            assert_eq!(b.cmpxchg_u32(BASE, 7, 1).unwrap(), Err(9));
            assert_eq!(b.fetch_add_u32(BASE, 1).unwrap(), 9);
            b.store_u64(BASE + 4096 + 8, u64::MAX).unwrap(); // a miss inside the batch
            assert_eq!(b.fetch_add_u64(BASE + 4096 + 8, 2).unwrap(), u64::MAX);
            assert_eq!(b.cmpxchg_u64(BASE + 4096 + 8, 1, 5).unwrap(), Ok(1));
            assert_eq!(b.load_u64(BASE + 4096 + 8).unwrap(), 5);
            assert_eq!(b.load_u32(BASE + 2).map_err(|e| e.errno()), Err(crate::errno::EINVAL));
            assert_eq!(b.load_u32(BASE + 2 * 4096), Err(Error::Segv { addr: BASE + 2 * 4096, kind: SegvKind::MapErr }));
            assert_eq!(b.load_u32(BASE + 0x10_0000).unwrap(), 0);
            let ro = b.store_u32(BASE + 0x10_0000, 1);
            assert_eq!(ro, Err(Error::Segv { addr: BASE + 0x10_0000, kind: SegvKind::AccErr }));
            b.relax();
            assert_eq!(b.load_u32(BASE).unwrap(), 10, "a batch still works after an error and a relax");
        }
        let c = p.fork().unwrap();
        let mut ca = c.accessor();
        {
            // The fork write-protected the page: the batch's store misses,
            // breaks COW outside the batch and carries on.
            let mut b = a.batch();
            assert_eq!(b.load_u32(BASE).unwrap(), 10);
            b.store_u32(BASE, 11).unwrap();
            assert_eq!(b.load_u32(BASE).unwrap(), 11);
        }
        assert_eq!(ca.batch().load_u32(BASE).unwrap(), 10, "the child keeps its copy");
        assert_eq!(a.load_u32(BASE).unwrap(), 11);
        drop((a, ca));
        p.check_invariants().unwrap();
        c.check_invariants().unwrap();
        drop((p, c));
        assert_eq!(m.stats().frames_in_use, 0);
    }

    /// A space with one page at `BASE`, an accessor with an open batch that
    /// wrote 3 there, and a thread munmapping the page (its flag set once
    /// the munmap returned); `check(batch, done)` runs meanwhile.
    fn munmap_under_a_batch(check: impl FnOnce(&mut super::Batch<'_>, &AtomicBool)) {
        let m = machine();
        let p = Arc::new(m.new_mm().unwrap());
        p.mmap(BASE, 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        let mut a = p.accessor();
        let done = Arc::new(AtomicBool::new(false));
        let mut b = a.batch();
        b.store_u64(BASE, 3).unwrap();
        let t = {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                p.munmap(BASE, 4096).unwrap();
                done.store(true, Ordering::SeqCst);
            })
        };
        check(&mut b, &done);
        drop(b);
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(a.batch().load_u64(BASE), Err(Error::Segv { addr: BASE, kind: SegvKind::MapErr }));
        drop(a);
        p.check_invariants().unwrap();
    }

    /// A munmap in another thread waits for an open batch (whose cached
    /// translation it would strand), and the batch's next access after it
    /// ends faults as it must.
    #[test]
    fn munmap_waits_for_an_open_batch() {
        munmap_under_a_batch(|b, done| {
            std::thread::sleep(Duration::from_millis(if cfg!(miri) { 5 } else { 50 }));
            assert!(!done.load(Ordering::SeqCst), "munmap returned while a batch used the page");
            assert_eq!(b.load_u64(BASE).unwrap(), 3, "the page stays while the batch is open");
        });
    }

    /// `relax` lets a waiting shootdown through: a batch that spins with it
    /// sees another thread's munmap finish, and then faults.
    #[test]
    fn relax_lets_a_shootdown_through() {
        munmap_under_a_batch(|b, done| {
            while !done.load(Ordering::SeqCst) {
                b.relax();
                std::thread::yield_now();
            }
            assert_eq!(b.load_u64(BASE), Err(Error::Segv { addr: BASE, kind: SegvKind::MapErr }));
        });
    }

    /// A held accessor keeps the slot published across accesses: a munmap
    /// in another thread waits for the release, a miss inside the hold
    /// fills and carries on, and after the release the page faults.
    #[test]
    fn munmap_waits_for_a_hold_and_a_batch_ends_it() {
        let m = machine();
        let p = Arc::new(m.new_mm().unwrap());
        p.mmap(BASE, 2 * 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        let mut a = p.accessor();
        a.hold();
        a.store_u64(BASE, 3).unwrap(); // a miss (write fault) inside the hold
        let done = Arc::new(AtomicBool::new(false));
        let t = {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                p.munmap(BASE, 4096).unwrap();
                done.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(if cfg!(miri) { 5 } else { 50 }));
        assert!(!done.load(Ordering::SeqCst), "munmap returned while a hold used the page");
        assert_eq!(a.load_u64(BASE).unwrap(), 3, "the page stays while the hold is open");
        a.release();
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        a.hold();
        assert_eq!(a.load_u64(BASE), Err(Error::Segv { addr: BASE, kind: SegvKind::MapErr }));
        a.store_u64(BASE + 4096, 4).unwrap();
        assert!(a.is_held());
        assert_eq!(a.batch().load_u64(BASE + 4096).unwrap(), 4);
        assert!(!a.is_held(), "a batch ends the hold");
        drop(a);
        p.check_invariants().unwrap();
    }

    /// The batch's futex calls leave it: a waiter in a batch sleeps while
    /// another thread's COW (which waits for open batches) goes through.
    #[test]
    fn futex_wait_in_a_batch_leaves_it() {
        let m = machine();
        let p = Arc::new(m.new_mm().unwrap());
        p.mmap(BASE, 2 * 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        p.write(BASE, &[0; 8]).unwrap();
        let t = {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut a = p.accessor();
                let mut b = a.batch();
                while b.load_u32(BASE).unwrap() == 0 {
                    let _ = b.futex_wait(BASE, 0, Some(Duration::from_millis(10)));
                }
                b.load_u32(BASE + 4).unwrap()
            })
        };
        // A fork and COW writes: shootdowns that must not wait for the
        // sleeping thread's batch (if they did, they would never return).
        let (tx, rx) = std::sync::mpsc::channel();
        let changer = {
            let p = p.clone();
            std::thread::spawn(move || {
                let c = p.fork().unwrap();
                // Atomic stores (the waiter loads the same words atomically:
                // byte copies racing them would be a data race, as in C).
                let mut a = p.accessor();
                a.store_u32(BASE + 4, 5).unwrap();
                a.store_u32(BASE, 1).unwrap();
                drop(a);
                p.futex_wake(BASE, 1).unwrap();
                let _ = tx.send(());
                c
            })
        };
        rx.recv_timeout(Duration::from_secs(60)).expect("a shootdown waited for a batch asleep in a futex");
        assert_eq!(t.join().unwrap(), 5);
        drop(changer.join().unwrap());
        p.check_invariants().unwrap();
    }
}
