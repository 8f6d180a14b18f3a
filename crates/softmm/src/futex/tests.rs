//! Unit tests: every operation and every error, in both key modes.

use super::*;
use crate::GuestWords;
use crate::{errno, Config, Machine, MapKind, Mm, Placement, Prot};

const A: u64 = 0x1000_0000;

fn machine(keys: FutexKeys) -> Machine {
    let arena_bytes = if cfg!(miri) { 256 * 4096 } else { 64 << 20 };
    Machine::new(Config { arena_bytes, prezero: false, cpu_caches: 1, futex_keys: keys, ..Config::default() })
        .expect("machine")
}

fn space(m: &Machine, kind: MapKind) -> Mm {
    let mm = m.new_mm().expect("mm");
    mm.mmap(A, 4 * 4096, Prot::RW, kind, Placement::Fixed).expect("mmap");
    mm
}

fn both() -> [FutexKeys; 2] {
    [FutexKeys::Physical, FutexKeys::Linux]
}

fn audit(mm: &Mm) {
    mm.check_invariants().expect("invariants");
}

#[test]
fn errors_as_linux() {
    for keys in both() {
        let m = machine(keys);
        let mm = space(&m, MapKind::Private);
        let e = |r: Result<u32>| r.unwrap_err().errno();
        assert_eq!(mm.futex_wait_start(A + 2, 0, BITSET_MATCH_ANY).unwrap_err().errno(), errno::EINVAL);
        assert_eq!(mm.futex_wait_start(A, 0, 0).unwrap_err().errno(), errno::EINVAL);
        assert_eq!(e(mm.futex_wake_bitset(A, 1, 0)), errno::EINVAL);
        assert_eq!(e(mm.futex_wake(A + 1, 1)), errno::EINVAL);
        assert_eq!(mm.futex_wait_start(0x2000_0000, 0, BITSET_MATCH_ANY).unwrap_err().errno(), errno::EFAULT);
        assert_eq!(e(mm.futex_wake(0x2000_0000, 1)), errno::EFAULT);
        mm.write(A, &5u32.to_ne_bytes()).unwrap();
        assert_eq!(mm.futex_wait_start(A, 4, BITSET_MATCH_ANY).unwrap_err().errno(), errno::EAGAIN);
        assert_eq!(mm.futex_wait(A, 5, Some(Duration::from_millis(5))).unwrap_err().errno(), errno::ETIMEDOUT);
        assert_eq!(e(mm.futex_cmp_requeue(A, 1, 1, A + 8, 4)), errno::EAGAIN);
        assert_eq!(e(mm.futex_syscall(A, 2, 0, None, 0, 0, 0)), errno::ENOSYS);
        assert_eq!(e(mm.futex_syscall(A, 3, u32::MAX, None, A + 8, 0, 0)), errno::EINVAL);
        assert_eq!(e(mm.futex_syscall(A, 5, 1, None, A + 8, 1, 7 << 28)), errno::ENOSYS);
        mm.mprotect(A + 4096, 4096, Prot::NONE).unwrap();
        assert_eq!(e(mm.futex_wake(A + 4096, 1)), errno::EFAULT);
        let w = mm.futex_wait_start(A, 5, BITSET_MATCH_ANY).unwrap();
        assert_eq!(w.cancel(), WaitState::Cancelled);
        assert_eq!(w.wait(None).unwrap_err().errno(), errno::EINTR);
        audit(&mm);
    }
}

/// `FUTEX_CLOCK_REALTIME` goes with `FUTEX_WAIT_BITSET` only, as in Linux
/// since 5.13: 4.5 had accepted it with `FUTEX_WAIT` too (commit 337f13046ff0),
/// and 4fbf5d6837bf reverted that (backported to the stable kernels): a
/// relative timeout does not depend on the clock, and the kernel had armed a
/// monotonic deadline on the realtime clock. `FUTEX_WAIT_BITSET` with
/// `BITSET_MATCH_ANY` is the way to wait on the realtime clock.
#[test]
fn clock_realtime_only_with_wait_bitset() {
    const PRIVATE: u32 = 128;
    const CLOCK_REALTIME: u32 = 256;
    for keys in both() {
        let m = machine(keys);
        let mm = space(&m, MapKind::Private);
        mm.write(A, &5u32.to_ne_bytes()).unwrap();
        let e = |r: Result<u32>| r.unwrap_err().errno();
        let soon = Some(Timeout::After(Duration::from_millis(1)));
        for op in [CLOCK_REALTIME, CLOCK_REALTIME | PRIVATE] {
            assert_eq!(e(mm.futex_syscall(A, op, 5, soon, 0, 0, 0)), errno::ENOSYS, "FUTEX_WAIT | {op:#x}");
            assert_eq!(e(mm.futex_syscall(A, op, 4, None, 0, 0, 0)), errno::ENOSYS, "checked before the value");
        }
        assert_eq!(e(mm.futex_syscall(A, 1 | CLOCK_REALTIME, 1, None, 0, 0, 0)), errno::ENOSYS, "FUTEX_WAKE");
        assert_eq!(e(mm.futex_syscall(A, 10 | CLOCK_REALTIME, 1, None, 0, 0, 1)), errno::ENOSYS);
        // WAIT_BITSET takes it: the value is compared, the deadline kept.
        let op = 9 | CLOCK_REALTIME | PRIVATE;
        assert_eq!(e(mm.futex_syscall(A, op, 4, None, 0, 0, BITSET_MATCH_ANY)), errno::EAGAIN);
        let past = Some(Timeout::At(Instant::now()));
        assert_eq!(e(mm.futex_syscall(A, op, 5, past, 0, 0, BITSET_MATCH_ANY)), errno::ETIMEDOUT);
        // Without the flag, FUTEX_WAIT waits (until its relative timeout).
        assert_eq!(e(mm.futex_syscall(A, PRIVATE, 5, soon, 0, 0, 0)), errno::ETIMEDOUT);
        audit(&mm);
    }
}

#[test]
fn wake_counts_and_bitsets() {
    for keys in both() {
        let m = machine(keys);
        let mm = space(&m, MapKind::Private);
        let ws: Vec<_> = (0..4).map(|i| mm.futex_wait_start(A, 0, 1 << i).unwrap()).collect();
        audit(&mm);
        assert_eq!(mm.futex_wake_bitset(A, 10, 0b0110).unwrap(), 2);
        assert_eq!(ws[1].state(), WaitState::Woken);
        assert_eq!(ws[0].state(), WaitState::Waiting);
        assert_eq!(mm.futex_wake(A + 4, 10).unwrap(), 0, "another word");
        assert_eq!(mm.futex_wake(A, 0).unwrap(), 1, "0 wakes one, as in Linux");
        assert_eq!(mm.futex_wake(A, 5).unwrap(), 1);
        assert_eq!(mm.futex_wake(A, 5).unwrap(), 0);
        for w in ws {
            assert_eq!(w.wait(None), Ok(()));
        }
        audit(&mm);
    }
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri; no unsafe code of its own")]
fn requeue_and_cmp_requeue() {
    for keys in both() {
        let m = machine(keys);
        let mm = space(&m, MapKind::Private);
        let ws: Vec<_> = (0..5).map(|_| mm.futex_wait_start(A, 0, BITSET_MATCH_ANY).unwrap()).collect();
        assert_eq!(mm.futex_cmp_requeue(A, 1, 2, A + 64, 0).unwrap(), 3);
        // No wake at all with n_wake 0 (unlike FUTEX_WAKE's 0): both move.
        assert_eq!(mm.futex_requeue(A, 0, 10, A + 128).unwrap(), 2);
        audit(&mm);
        assert_eq!(mm.futex_wake(A + 64, 10).unwrap(), 2);
        assert_eq!(mm.futex_wake(A + 128, 10).unwrap(), 2);
        assert_eq!(mm.futex_wake(A, 10).unwrap(), 0);
        for w in ws {
            assert_eq!(w.wait(None), Ok(()));
        }
        audit(&mm);
    }
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri; no unsafe code of its own")]
fn wake_op_every_op_and_cmp() {
    let cases = [
        (WakeOpKind::Set, 7u32, 3u32, 7u32),
        (WakeOpKind::Add, 2, 3, 5),
        (WakeOpKind::Or, 4, 3, 7),
        (WakeOpKind::AndNot, 1, 3, 2),
        (WakeOpKind::Xor, 6, 3, 5),
    ];
    for keys in both() {
        let m = machine(keys);
        let mm = space(&m, MapKind::Shared);
        for (kind, arg, old, new) in cases {
            for (cmp, holds) in [
                (WakeOpCmp::Eq, true),
                (WakeOpCmp::Ne, false),
                (WakeOpCmp::Lt, false),
                (WakeOpCmp::Le, true),
                (WakeOpCmp::Gt, false),
                (WakeOpCmp::Ge, true),
            ] {
                mm.write(A + 8, &old.to_ne_bytes()).unwrap();
                let w1 = mm.futex_wait_start(A, 0, BITSET_MATCH_ANY).unwrap();
                let w2 = mm.futex_wait_start(A + 8, old, BITSET_MATCH_ANY).unwrap();
                let n = mm.futex_wake_op(A, 1, A + 8, 1, WakeOp::new(kind, arg, cmp, old as i32)).unwrap();
                let mut word = [0u8; 4];
                mm.read(A + 8, &mut word).unwrap();
                assert_eq!(u32::from_ne_bytes(word), new, "{kind:?}");
                assert_eq!(n, 1 + u32::from(holds), "{kind:?} {cmp:?}");
                assert_eq!(w2.state() == WaitState::Woken, holds);
                drop((w1, w2));
            }
        }
        // The raw encoding: FUTEX_OP(ADD, 1 << 3 via OPARG_SHIFT, CMP_GT, -1).
        mm.write(A + 8, &0u32.to_ne_bytes()).unwrap();
        let op = WakeOp::from_raw((8 | 1) << 28 | 4 << 24 | 3 << 12 | 0xfff).unwrap();
        assert_eq!((op.kind, op.arg, op.cmp, op.cmp_arg), (WakeOpKind::Add, 8, WakeOpCmp::Gt, -1));
        audit(&mm);
    }
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri; no unsafe code of its own")]
fn timeout_cancel_and_async() {
    for keys in both() {
        let m = machine(keys);
        let mm = std::sync::Arc::new(space(&m, MapKind::Private));
        let w = mm.futex_wait_start(A, 0, BITSET_MATCH_ANY).unwrap();
        let c = w.canceller();
        let t = std::thread::spawn(move || w.wait(None));
        std::thread::sleep(Duration::from_millis(10));
        c.cancel();
        assert_eq!(t.join().unwrap(), Err(Error::Interrupted));
        let start = Instant::now();
        assert_eq!(mm.futex_wait_bitset(A, 0, 1, Some(start + Duration::from_millis(20))), Err(Error::TimedOut));
        assert!(start.elapsed() >= Duration::from_millis(20));
        // Async: a future that a wake on another thread completes.
        let w = mm.futex_wait_start(A, 0, BITSET_MATCH_ANY).unwrap();
        let mm2 = mm.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            mm2.futex_wake(A, 1).unwrap()
        });
        assert_eq!(block_on(w), Ok(()));
        assert_eq!(waker.join().unwrap(), 1);
        audit(&mm);
    }
}

/// A minimal executor: poll on this thread, park between polls.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn physical_keys_cross_fork_until_cow() {
    let m = machine(FutexKeys::Physical);
    let p = space(&m, MapKind::Private);
    p.write(A, &1u32.to_ne_bytes()).unwrap();
    let c = p.fork().unwrap();
    let w = c.futex_wait_start(A, 1, BITSET_MATCH_ANY).unwrap();
    assert_eq!(p.phys(A), c.phys(A), "the wait did not break COW");
    audit(&p);
    assert_eq!(p.futex_wake(A, 1).unwrap(), 1, "the parent's wake reaches the child's waiter");
    drop(w);
    // COW in the child moves its waiter with it: the parent no longer reaches it.
    let w = c.futex_wait_start(A, 1, BITSET_MATCH_ANY).unwrap();
    c.write(A + 8, b"x").unwrap();
    assert_ne!(p.phys(A), c.phys(A));
    audit(&p);
    assert_eq!(p.futex_wake(A, 1).unwrap(), 0);
    assert_eq!(c.futex_wake(A, 1).unwrap(), 1);
    drop(w);
    audit(&p);
}

#[test]
fn linux_keys_private_per_mm_shared_per_object() {
    let m = machine(FutexKeys::Linux);
    let p = space(&m, MapKind::Private);
    p.mmap(A + 0x10_0000, 4096, Prot::RW, MapKind::Shared, Placement::Fixed).unwrap();
    let c = p.fork().unwrap();
    let w = c.futex_wait_start(A, 0, BITSET_MATCH_ANY).unwrap();
    assert_eq!(p.futex_wake(A, 1).unwrap(), 0);
    assert_eq!(c.futex_wake(A, 1).unwrap(), 1);
    drop(w);
    let w = c.futex_wait_start(A + 0x10_0000, 0, BITSET_MATCH_ANY).unwrap();
    assert_eq!(p.futex_wake(A + 0x10_0000, 1).unwrap(), 1);
    drop(w);
    audit(&p);
}

#[test]
fn waiter_survives_munmap_dontneed_and_ends_at_exit() {
    let m = machine(FutexKeys::Physical);
    let p = space(&m, MapKind::Shared);
    let c = p.fork().unwrap();
    let w = c.futex_wait_start(A, 0, BITSET_MATCH_ANY).unwrap();
    c.madvise(A, 4096, crate::Advice::DontNeed).unwrap();
    audit(&p);
    c.munmap(A, 4096).unwrap();
    audit(&p);
    assert_eq!(p.futex_wake(A, 1).unwrap(), 1, "the shared page is still what it waits on");
    assert_eq!(w.wait(None), Ok(()));
    // The exit of the space that started a wait ends it (Linux ends the
    // threads that wait), even though the page lives on in `p`.
    let w = c.futex_wait_start(A + 0x1000, 0, BITSET_MATCH_ANY).unwrap();
    drop(c);
    assert_eq!(w.state(), WaitState::Exited);
    assert_eq!(w.wait(None), Err(crate::Error::Exited));
    audit(&p);
}

#[test]
fn a_wait_causes_no_extra_copy() {
    // Seed 003: a waiter's frame reference must not turn a reuse into a copy.
    let m = machine(FutexKeys::Physical);
    let p = space(&m, MapKind::Private);
    p.write(A, &6u32.to_ne_bytes()).unwrap();
    let f = p.phys(A);
    let w = p.futex_wait_start(A, 6, BITSET_MATCH_ANY).unwrap();
    p.mprotect(A, 4096, Prot::READ).unwrap();
    p.mprotect(A, 4096, Prot::RW).unwrap();
    p.write(A + 4, b"x").unwrap();
    assert_eq!(p.phys(A), f, "reused in place");
    // After fork and the child's exit the parent's write reuses too.
    let c = p.fork().unwrap();
    drop(c);
    p.write(A + 4, b"y").unwrap();
    assert_eq!(p.phys(A), f);
    audit(&p);
    assert_eq!(p.futex_wake(A, 1).unwrap(), 1);
    assert_eq!(w.wait(None), Ok(()));
    audit(&p);
}

#[test]
fn linux_keys_refuse_read_only_private() {
    let m = machine(FutexKeys::Linux);
    let p = space(&m, MapKind::Private);
    p.mprotect(A, 4096, Prot::READ).unwrap();
    assert_eq!(p.futex_wait_start(A, 0, BITSET_MATCH_ANY).unwrap_err().errno(), errno::EFAULT);
    assert_eq!(p.futex_wake(A, 1).unwrap_err().errno(), errno::EFAULT);
    assert_eq!(p.phys(A), Some(crate::ZERO_FRAME), "the read-only get faulted the zero page in, as Linux");
    audit(&p);
}

#[test]
fn accessor_shortcuts_agree_with_the_mm_paths() {
    for keys in both() {
        let m = machine(keys);
        let mm = space(&m, MapKind::Private);
        let mut acc = mm.accessor();
        acc.store_u32(A, 3).unwrap();
        assert_eq!(acc.futex_wait(A, 4, None), Err(Error::Again));
        assert_eq!(acc.futex_wait(A + 1, 3, None).unwrap_err().errno(), errno::EINVAL);
        assert_eq!(acc.futex_wait(0x3000_0000, 3, None).unwrap_err().errno(), errno::EFAULT);
        assert_eq!(acc.futex_wake(A, 1), Ok(0));
        assert_eq!(acc.futex_wake(0x3000_0000, 1).unwrap_err().errno(), errno::EFAULT);
        let w = mm.futex_wait_start(A, 3, BITSET_MATCH_ANY).unwrap();
        assert_eq!(acc.futex_wake(A, 1), Ok(1), "{keys:?}: the shortcut must not hide a waiter");
        assert_eq!(w.wait(None), Ok(()));
        // A waiter in a forked child on the shared page: the parent's
        // accessor wake reaches it (physical) or not (Linux).
        let c = mm.fork().unwrap();
        let w = c.futex_wait_start(A, 3, BITSET_MATCH_ANY).unwrap();
        let want = u32::from(keys == FutexKeys::Physical);
        assert_eq!(acc.futex_wake(A, 1), Ok(want));
        drop(w);
        audit(&mm);
    }
}

#[test]
fn a_recycled_waiter_node_is_not_reached_through_an_old_canceller() {
    // A finished waiter's node is reused by the thread's next wait only if
    // nothing else holds it: a canceller kept from the first wait must not
    // reach the second one.
    for keys in both() {
        let m = machine(keys);
        let mm = space(&m, MapKind::Private);
        mm.write(A, &1u32.to_ne_bytes()).unwrap();
        let first = mm.futex_wait_start(A, 1, BITSET_MATCH_ANY).unwrap();
        let old = first.canceller();
        assert_eq!(mm.futex_wake(A, 1).unwrap(), 1);
        assert_eq!(first.wait(None), Ok(()));
        let second = mm.futex_wait_start(A, 1, 0b10).unwrap();
        assert_eq!(old.cancel(), WaitState::Woken, "the old canceller sees its own, finished waiter");
        assert_eq!(second.state(), WaitState::Waiting);
        assert_eq!(mm.futex_wake_bitset(A, 1, 0b01).unwrap(), 0, "the new bitset holds");
        drop(old);
        drop(second);
        // Now the node may be recycled: waits and wakes still count right.
        for round in 0..3 {
            let w = mm.futex_wait_start(A, 1, BITSET_MATCH_ANY).unwrap();
            assert_eq!(w.state(), WaitState::Waiting, "round {round}");
            audit(&mm);
            assert_eq!(mm.futex_wake(A, 2).unwrap(), 1, "round {round}");
            assert_eq!(w.wait(None), Ok(()));
        }
        assert_eq!(mm.vcache_entries(), 0);
        audit(&mm);
    }
}

#[test]
fn a_wake_detaches_its_woken_waiter() {
    // Physical keys: the wake detaches the woken waiter's vcache entry and
    // drops its frame reference itself, so the audits hold between the
    // wake and the waiter's return, and a COW meanwhile moves nothing.
    let m = machine(FutexKeys::Physical);
    let p = space(&m, MapKind::Private);
    p.write(A, &1u32.to_ne_bytes()).unwrap();
    let w = p.futex_wait_start(A, 1, BITSET_MATCH_ANY).unwrap();
    let frame = p.phys(A);
    assert_eq!(p.vcache_entries(), 1);
    assert_eq!(p.futex_wake(A, 1).unwrap(), 1);
    assert_eq!(p.vcache_entries(), 0, "detached by the wake");
    audit(&p);
    let c = p.fork().unwrap();
    p.write(A + 8, b"x").unwrap();
    assert_ne!(p.phys(A), frame, "COW moved the page");
    audit(&p);
    assert_eq!(w.wait(None), Ok(()));
    audit(&p);
    audit(&c);
    // A waiter tracking another page too (requeued) is left to detach itself.
    let w1 = p.futex_wait_start(A, 1, BITSET_MATCH_ANY).unwrap();
    let w2 = p.futex_wait_start(A, 1, BITSET_MATCH_ANY).unwrap();
    assert_eq!(p.futex_requeue(A, 1, 1, A + 4096).unwrap(), 2, "one woken, one requeued");
    assert_eq!(p.vcache_entries(), 3);
    assert_eq!(p.futex_wake(A + 4096, 1).unwrap(), 1);
    assert_eq!(p.vcache_entries(), 3, "two pages tracked: the waiter detaches its entries");
    audit(&p);
    assert_eq!(w1.wait(None), Ok(()));
    assert_eq!(w2.wait(None), Ok(()));
    assert_eq!(p.vcache_entries(), 0);
    audit(&p);
}

/// `Config::futex_spin`: a blocking wait yields before sleeping in the
/// kernel, but never past its deadline, and is woken whether the wake
/// comes while it yields (no system call) or after it went to sleep.
#[test]
#[cfg_attr(miri, ignore = "slow under Miri, where waits do not yield (no sched_yield loop there)")]
fn blocking_waits_yield_then_sleep() {
    for spin in [Duration::ZERO, Duration::from_micros(5), Duration::from_secs(30), Duration::MAX] {
        let m = Machine::new(Config {
            arena_bytes: if cfg!(miri) { 256 * 4096 } else { 64 << 20 },
            futex_spin: spin,
            ..Config::default()
        })
        .expect("machine");
        let mm = std::sync::Arc::new(space(&m, MapKind::Private));
        mm.write(A, &0u32.to_ne_bytes()).unwrap();
        // A timeout far shorter than the spin still times out on time.
        let t = Instant::now();
        assert_eq!(mm.futex_wait(A, 0, Some(Duration::from_millis(20))), Err(Error::TimedOut), "{spin:?}");
        assert!(t.elapsed() < Duration::from_secs(10), "{spin:?}: the wait yielded past its deadline");
        // Woken by another thread, early (while yielding, for the long
        // spin) and late (asleep, for the others).
        for delay in [Duration::ZERO, Duration::from_millis(30)] {
            mm.write(A, &0u32.to_ne_bytes()).unwrap();
            let waker = {
                let mm = mm.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    mm.write(A, &1u32.to_ne_bytes()).unwrap();
                    mm.futex_wake(A, 1).unwrap()
                })
            };
            loop {
                let mut b = [0u8; 4];
                mm.read(A, &mut b).unwrap();
                if u32::from_ne_bytes(b) == 1 {
                    break;
                }
                match mm.futex_wait(A, 0, Some(Duration::from_secs(60))) {
                    Ok(()) | Err(Error::Again) => {}
                    Err(e) => panic!("{spin:?}, {delay:?}: {e}"),
                }
            }
            waker.join().unwrap();
        }
        audit(&mm);
    }
}

/// The audit sees every queued waiter: one that stopped following the page
/// its key names (the mistake reclaim and migration once made) fails it,
/// and so does one that follows no page it has an entry for.
#[test]
fn the_audit_fails_on_a_waiter_that_no_longer_follows_its_page() {
    let m = machine(FutexKeys::Physical);
    let p = space(&m, MapKind::Private);
    p.write(A, &0u32.to_ne_bytes()).unwrap();
    let w = p.futex_wait_start(A, 0, BITSET_MATCH_ANY).unwrap();
    audit(&p);
    {
        let mut inner = w.node().inner.lock();
        inner.left = inner.tracked.take();
    }
    let e = p.check_invariants().unwrap_err().to_string();
    assert!(e.contains("left a page"), "{e}");
    {
        let mut inner = w.node().inner.lock();
        inner.left = None;
    }
    let e = p.check_invariants().unwrap_err().to_string();
    assert!(e.contains("follows no page"), "{e}");
    {
        let mut inner = w.node().inner.lock();
        inner.tracked = Some((p.inner.id, A));
    }
    audit(&p);
    assert_eq!(p.futex_wake(A, 1).unwrap(), 1);
}
