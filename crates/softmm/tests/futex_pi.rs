//! PI futexes (`FUTEX_LOCK_PI`, `TRYLOCK_PI`, `UNLOCK_PI`): the word holds
//! the owner's TID, an unlock hands the lock to the first waiter, and the
//! errors are Linux's. Both key modes; a user-space fast path over the
//! same word, as glibc's PI mutex has, keeps mutual exclusion.

use softmm::futex::{FUTEX_TID_MASK, FUTEX_WAITERS};
use softmm::{errno, Config, FutexKeys, GuestWords, Machine, MapKind, Mm, Placement, Prot};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE: u64 = 0x1000_0000;
const MODES: [FutexKeys; 2] = [FutexKeys::Physical, FutexKeys::Linux];

fn space(keys: FutexKeys, kind: MapKind) -> (Machine, Arc<Mm>) {
    let m = Machine::new(Config { arena_bytes: 32 << 20, futex_keys: keys, ..Config::default() }).unwrap();
    let mm = m.new_mm().unwrap();
    mm.mmap(BASE, 64 << 10, Prot::RW, kind, Placement::Fixed).unwrap();
    (m, Arc::new(mm))
}

fn get(mm: &Mm, addr: u64) -> u32 {
    let mut b = [0; 4];
    mm.read(addr, &mut b).unwrap();
    u32::from_ne_bytes(b)
}

/// Wait until somebody set the waiters bit of the lock at `addr` (it is
/// queued once the bucket lock it set it under is released).
fn until_contended(mm: &Mm, addr: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    while get(mm, addr) & FUTEX_WAITERS == 0 {
        assert!(Instant::now() < until, "nobody ever waited");
        std::thread::yield_now();
    }
}

#[test]
fn trylock_lock_and_unlock_answer_as_linux() {
    for keys in MODES {
        let (_m, mm) = space(keys, MapKind::Private);
        mm.futex_trylock_pi(BASE, 5).unwrap();
        assert_eq!(get(&mm, BASE), 5);
        assert_eq!(mm.futex_trylock_pi(BASE, 5).unwrap_err().errno(), errno::EDEADLK);
        assert_eq!(mm.futex_lock_pi(BASE, 5, None).unwrap_err().errno(), errno::EDEADLK);
        assert_eq!(mm.futex_trylock_pi(BASE, 6).unwrap_err().errno(), errno::EAGAIN);
        assert_eq!(mm.futex_unlock_pi(BASE, 6).unwrap_err().errno(), errno::EPERM);
        mm.futex_unlock_pi(BASE, 5).unwrap();
        assert_eq!(get(&mm, BASE), 0);
        assert_eq!(mm.futex_unlock_pi(BASE, 5).unwrap_err().errno(), errno::EPERM);
        mm.futex_lock_pi(BASE, 6, None).unwrap();
        assert_eq!(get(&mm, BASE), 6);
        mm.check_invariants().unwrap();
    }
}

#[test]
fn unlock_hands_the_lock_to_waiters_in_order() {
    for keys in MODES {
        let (_m, mm) = space(keys, MapKind::Private);
        mm.futex_lock_pi(BASE, 1, None).unwrap();
        let spawn = |tid: u32| {
            let mm = mm.clone();
            std::thread::spawn(move || {
                mm.futex_lock_pi(BASE, tid, None).unwrap();
                assert_eq!(get(&mm, BASE) & FUTEX_TID_MASK, tid);
                mm.futex_unlock_pi(BASE, tid).unwrap();
            })
        };
        let two = spawn(2);
        until_contended(&mm, BASE);
        std::thread::sleep(Duration::from_millis(20)); // 2 is queued first
        let three = spawn(3);
        std::thread::sleep(Duration::from_millis(20));
        // A plain wake never takes a PI waiter.
        assert_eq!(mm.futex_wake(BASE, 10).unwrap(), 0);
        mm.futex_unlock_pi(BASE, 1).unwrap();
        two.join().unwrap();
        three.join().unwrap();
        assert_eq!(get(&mm, BASE), 0, "{keys:?}");
        mm.check_invariants().unwrap();
    }
}

#[test]
fn a_user_space_fast_path_and_the_slow_path_exclude_each_other() {
    for keys in MODES {
        let (_m, mm) = space(keys, MapKind::Private);
        let counter = BASE + 0x1000;
        let threads: Vec<_> = (1..=4u32)
            .map(|tid| {
                let mm = mm.clone();
                std::thread::spawn(move || {
                    let mut acc = mm.accessor();
                    for _ in 0..500 {
                        // glibc's pthread_mutex_lock for PTHREAD_PRIO_INHERIT.
                        if acc.cmpxchg_u32(BASE, 0, tid).unwrap().is_err() {
                            mm.futex_lock_pi(BASE, tid, None).unwrap();
                        }
                        let v = acc.load_u32(counter).unwrap();
                        acc.store_u32(counter, v + 1).unwrap();
                        if acc.cmpxchg_u32(BASE, tid, 0).unwrap().is_err() {
                            mm.futex_unlock_pi(BASE, tid).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(get(&mm, counter), 2000, "{keys:?}");
        assert_eq!(get(&mm, BASE), 0);
        mm.check_invariants().unwrap();
    }
}

#[test]
fn a_waiter_past_its_deadline_leaves_the_waiters_bit() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    mm.futex_lock_pi(BASE, 1, None).unwrap();
    let e = mm.futex_lock_pi(BASE, 2, Some(Instant::now() + Duration::from_millis(20))).unwrap_err();
    assert_eq!(e.errno(), errno::ETIMEDOUT);
    // As Linux: the bit stays, and the owner's unlock, finding nobody, frees.
    assert_eq!(get(&mm, BASE), 1 | FUTEX_WAITERS);
    mm.futex_unlock_pi(BASE, 1).unwrap();
    assert_eq!(get(&mm, BASE), 0);
}

#[test]
fn a_lock_in_shared_memory_is_handed_across_spaces() {
    for keys in MODES {
        let (_m, parent) = space(keys, MapKind::Shared);
        let child = Arc::new(parent.fork().unwrap());
        parent.futex_lock_pi(BASE, 10, None).unwrap();
        let waiter = {
            let child = child.clone();
            std::thread::spawn(move || child.futex_lock_pi(BASE, 20, None))
        };
        until_contended(&parent, BASE);
        std::thread::sleep(Duration::from_millis(10));
        parent.futex_unlock_pi(BASE, 10).unwrap();
        waiter.join().unwrap().unwrap();
        assert_eq!(get(&parent, BASE), FUTEX_WAITERS | 20, "{keys:?}");
        child.futex_unlock_pi(BASE, 20).unwrap();
        assert_eq!(get(&parent, BASE), 0);
    }
}

#[test]
fn bad_arguments_answer_as_linux() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    assert_eq!(mm.futex_lock_pi(BASE, 0, None).unwrap_err().errno(), errno::EINVAL);
    assert_eq!(mm.futex_lock_pi(BASE, 1 << 30, None).unwrap_err().errno(), errno::EINVAL);
    assert_eq!(mm.futex_lock_pi(BASE + 2, 1, None).unwrap_err().errno(), errno::EINVAL);
    assert_eq!(mm.futex_lock_pi(0x7000_0000, 1, None).unwrap_err().errno(), errno::EFAULT);
    assert_eq!(mm.futex_unlock_pi(0x7000_0000, 1).unwrap_err().errno(), errno::EFAULT);
    mm.mmap(0x2000_0000, 4096, Prot::READ, MapKind::Private, Placement::Fixed).unwrap();
    assert_eq!(mm.futex_trylock_pi(0x2000_0000, 1).unwrap_err().errno(), errno::EFAULT);
    mm.check_invariants().unwrap();
}

// Requeue to a PI futex (`FUTEX_WAIT_REQUEUE_PI`, `FUTEX_CMP_REQUEUE_PI`):
// a condition variable at COND over the PI mutex at BASE.

const COND: u64 = BASE + 0x100;

/// Wait until `n` waiters of `mm` are queued (physical keys: each has one
/// vcache entry).
fn until_queued(mm: &Mm, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while mm.vcache_entries() < n {
        assert!(Instant::now() < until, "the waiters never queued");
        std::thread::yield_now();
    }
}

/// A thread that waits on COND for the mutex, then holds it (checking it
/// is the owner), counts, and unlocks as glibc does.
fn cond_waiter(mm: &Arc<Mm>, tid: u32) -> std::thread::JoinHandle<()> {
    let mm = mm.clone();
    std::thread::spawn(move || {
        mm.futex_wait_requeue_pi(COND, 0, BASE, None, tid).unwrap();
        assert_eq!(get(&mm, BASE) & FUTEX_TID_MASK, tid, "woken without the mutex");
        let mut acc = mm.accessor();
        let v = acc.load_u32(BASE + 0x200).unwrap();
        acc.store_u32(BASE + 0x200, v + 1).unwrap();
        if acc.cmpxchg_u32(BASE, tid, 0).unwrap().is_err() {
            mm.futex_unlock_pi(BASE, tid).unwrap();
        }
    })
}

/// Broadcast until `n` waiters were woken or requeued in all.
fn broadcast(mm: &Mm, n: u32) {
    let until = Instant::now() + Duration::from_secs(10);
    let mut done = 0;
    while done < n {
        assert!(Instant::now() < until, "only {done} of {n} waiters ever requeued");
        done += mm.futex_cmp_requeue_pi(COND, 1, i32::MAX as u32, BASE, 0).unwrap();
        std::thread::yield_now();
    }
    assert_eq!(done, n);
}

#[test]
fn a_broadcast_requeues_every_waiter_and_each_owns_the_mutex_in_turn() {
    for keys in MODES {
        for held in [true, false] {
            let (_m, mm) = space(keys, MapKind::Private);
            if held {
                mm.futex_lock_pi(BASE, 1, None).unwrap();
            }
            let threads: Vec<_> = (2..=5).map(|tid| cond_waiter(&mm, tid)).collect();
            broadcast(&mm, 4);
            if held {
                // Every waiter waits on the mutex now, none on COND.
                assert_eq!(get(&mm, BASE), 1 | FUTEX_WAITERS);
                assert_eq!(mm.futex_cmp_requeue_pi(COND, 1, 10, BASE, 0).unwrap(), 0);
                mm.futex_unlock_pi(BASE, 1).unwrap();
            }
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(get(&mm, BASE + 0x200), 4, "{keys:?} held {held}");
            assert_eq!(get(&mm, BASE), 0, "{keys:?} held {held}");
            assert_eq!(mm.vcache_entries(), 0);
            mm.check_invariants().unwrap();
        }
    }
}

#[test]
fn a_free_mutex_goes_to_the_first_waiter_at_once() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    let first = {
        let mm = mm.clone();
        std::thread::spawn(move || mm.futex_wait_requeue_pi(COND, 0, BASE, None, 9))
    };
    until_queued(&mm, 1);
    assert_eq!(mm.futex_cmp_requeue_pi(COND, 1, 0, BASE, 0).unwrap(), 1);
    first.join().unwrap().unwrap();
    // Linux's futex_lock_pi_atomic with set_waiters: the bit is set.
    assert_eq!(get(&mm, BASE), 9 | FUTEX_WAITERS);
    mm.futex_unlock_pi(BASE, 9).unwrap();
    assert_eq!(get(&mm, BASE), 0);
}

#[test]
fn requeue_pi_arguments_answer_as_linux() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    let cmp = |n_wake, addr2, val| mm.futex_cmp_requeue_pi(COND, n_wake, 1, addr2, val).unwrap_err().errno();
    assert_eq!(cmp(0, BASE, 0), errno::EINVAL);
    assert_eq!(cmp(2, BASE, 0), errno::EINVAL);
    assert_eq!(cmp(1, COND, 0), errno::EINVAL);
    assert_eq!(cmp(1, BASE + 2, 0), errno::EINVAL);
    assert_eq!(cmp(1, BASE, 5), errno::EAGAIN);
    let wait = |addr2, val, tid| mm.futex_wait_requeue_pi(COND, val, addr2, None, tid).unwrap_err().errno();
    assert_eq!(wait(COND, 0, 2), errno::EINVAL);
    assert_eq!(wait(BASE + 1, 0, 2), errno::EINVAL);
    assert_eq!(wait(BASE, 0, 0), errno::EINVAL);
    assert_eq!(wait(BASE, 5, 2), errno::EAGAIN);
    assert_eq!(wait(0x7000_0000, 0, 2), errno::EFAULT);
    mm.mmap(0x2000_0000, 4096, Prot::READ, MapKind::Private, Placement::Fixed).unwrap();
    assert_eq!(wait(0x2000_0000, 0, 2), errno::EFAULT);
    assert_eq!(cmp(1, 0x2000_0000, 0), errno::EFAULT);
    let e = mm.futex_wait_requeue_pi(COND, 0, BASE, Some(Instant::now() + Duration::from_millis(10)), 2);
    assert_eq!(e.unwrap_err().errno(), errno::ETIMEDOUT);
    // The system call: CMP_REQUEUE_PI is decoded, WAIT_REQUEUE_PI needs a TID.
    assert_eq!(mm.futex_syscall(COND, 12, 1, None, BASE, 1, 0).unwrap(), 0);
    assert_eq!(mm.futex_syscall(COND, 12 | 128, 2, None, BASE, 1, 0).unwrap_err().errno(), errno::EINVAL);
    assert_eq!(mm.futex_syscall(COND, 11, 0, None, BASE, 0, 0).unwrap_err().errno(), errno::ENOSYS);
    assert_eq!(mm.vcache_entries(), 0);
    mm.check_invariants().unwrap();
}

#[test]
fn a_requeue_that_would_take_a_foreign_waiter_changes_nothing() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    let other = BASE + 0x40;
    let pi = {
        let mm = mm.clone();
        std::thread::spawn(move || mm.futex_wait_requeue_pi(COND, 0, other, None, 3))
    };
    until_queued(&mm, 1);
    // It named another PI futex.
    assert_eq!(mm.futex_cmp_requeue_pi(COND, 1, 5, BASE, 0).unwrap_err().errno(), errno::EINVAL);
    // A plain wake or requeue never takes it (bitset 0).
    assert_eq!(mm.futex_wake(COND, 10).unwrap(), 0);
    assert_eq!(mm.futex_requeue(COND, 0, 10, BASE + 0x80).unwrap(), 0);
    // A plain waiter behind it: a requeue-PI that reaches it is refused
    // before anything moves.
    let plain = {
        let mm = mm.clone();
        std::thread::spawn(move || mm.futex_wait(COND, 0, None))
    };
    until_queued(&mm, 2);
    assert_eq!(mm.futex_cmp_requeue_pi(COND, 1, 5, other, 0).unwrap_err().errno(), errno::EINVAL);
    assert_eq!(get(&mm, other), 0, "the refused requeue took the lock");
    // Requeue to the PI futex it named, alone: it takes the free lock.
    assert_eq!(mm.futex_cmp_requeue_pi(COND, 1, 0, other, 0).unwrap(), 1);
    pi.join().unwrap().unwrap();
    assert_eq!(get(&mm, other), 3 | FUTEX_WAITERS);
    assert_eq!(mm.futex_wake(COND, 1).unwrap(), 1);
    plain.join().unwrap().unwrap();
    mm.check_invariants().unwrap();
}

#[test]
fn a_waiter_that_owns_the_mutex_gets_edeadlk() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    mm.futex_lock_pi(BASE, 7, None).unwrap();
    let spawn = |tid: u32| {
        let mm = mm.clone();
        std::thread::spawn(move || mm.futex_wait_requeue_pi(COND, 0, BASE, None, tid))
    };
    // Behind another waiter: that one is requeued, the owner woken with EDEADLK.
    let two = spawn(2);
    until_queued(&mm, 1);
    let seven = spawn(7);
    until_queued(&mm, 2);
    assert_eq!(mm.futex_cmp_requeue_pi(COND, 1, 5, BASE, 0).unwrap(), 2);
    assert_eq!(seven.join().unwrap().unwrap_err().errno(), errno::EDEADLK);
    // The first waiter owns it: the requeue answers EDEADLK, nothing moves.
    // (The requeued waiter has two vcache entries: COND's page and BASE's.)
    let seven = spawn(7);
    until_queued(&mm, 3);
    assert_eq!(mm.futex_cmp_requeue_pi(COND, 1, 5, BASE, 0).unwrap_err().errno(), errno::EDEADLK);
    mm.futex_unlock_pi(BASE, 7).unwrap();
    two.join().unwrap().unwrap();
    assert_eq!(get(&mm, BASE), FUTEX_WAITERS | 2);
    mm.futex_unlock_pi(BASE, 2).unwrap();
    assert_eq!(mm.futex_cmp_requeue_pi(COND, 1, 5, BASE, 0).unwrap(), 1);
    seven.join().unwrap().unwrap();
    assert_eq!(get(&mm, BASE), FUTEX_WAITERS | 7);
    mm.check_invariants().unwrap();
}

#[test]
fn a_requeued_waiter_past_its_deadline_leaves_the_mutex_to_the_others() {
    for keys in MODES {
        let (_m, mm) = space(keys, MapKind::Private);
        mm.futex_lock_pi(BASE, 1, None).unwrap();
        let late = {
            let mm = mm.clone();
            std::thread::spawn(move || {
                mm.futex_wait_requeue_pi(COND, 0, BASE, Some(Instant::now() + Duration::from_millis(50)), 2)
            })
        };
        let other = cond_waiter(&mm, 3);
        // Requeued or not, the late waiter times out (no timing asserted:
        // both paths end the same).
        let mut done = 0;
        while done < 2 && !(done == 1 && late.is_finished()) {
            done += mm.futex_cmp_requeue_pi(COND, 1, 5, BASE, 0).unwrap();
            std::thread::yield_now();
        }
        assert_eq!(late.join().unwrap().unwrap_err().errno(), errno::ETIMEDOUT);
        assert_eq!(get(&mm, BASE), 1 | FUTEX_WAITERS);
        mm.futex_unlock_pi(BASE, 1).unwrap();
        other.join().unwrap();
        assert_eq!(get(&mm, BASE), 0, "{keys:?}");
        mm.check_invariants().unwrap();
    }
}

/// A cancelled requeue-PI waiter answers as Linux's interrupted one: on
/// the condition's queue with EINTR (the caller restarts the wait, Linux's
/// ERESTARTNOINTR); requeued onto the mutex's with EAGAIN (Linux's
/// EWOULDBLOCK: a restart would wait on the condition again, which nothing
/// may ever wake). Either way it leaves the mutex to the others.
#[test]
fn a_cancelled_requeue_pi_waiter_ends_with_eintr_before_its_requeue_and_eagain_after() {
    for requeued in [false, true] {
        let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
        mm.futex_lock_pi(BASE, 1, None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let mm = mm.clone();
            std::thread::spawn(move || {
                mm.futex_wait_requeue_pi_cancellable(COND, 0, BASE, None, 2, move |c| tx.send(c).unwrap())
            })
        };
        let canceller = rx.recv().unwrap();
        until_queued(&mm, 1);
        if requeued {
            assert_eq!(mm.futex_cmp_requeue_pi(COND, 1, 5, BASE, 0).unwrap(), 1);
            assert_eq!(get(&mm, BASE), 1 | FUTEX_WAITERS);
        }
        canceller.cancel();
        let want = if requeued { errno::EAGAIN } else { errno::EINTR };
        assert_eq!(waiter.join().unwrap().unwrap_err().errno(), want, "requeued {requeued}");
        // Nobody waits any more: nothing to requeue, the unlock frees it.
        assert_eq!(mm.futex_cmp_requeue_pi(COND, 1, 5, BASE, 0).unwrap(), 0);
        mm.futex_unlock_pi(BASE, 1).unwrap();
        assert_eq!(get(&mm, BASE), 0, "requeued {requeued}");
        assert_eq!(mm.vcache_entries(), 0);
        mm.check_invariants().unwrap();
    }
}

#[test]
fn a_plain_requeue_never_moves_a_lock_pi_waiter() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    mm.futex_lock_pi(BASE, 1, None).unwrap();
    let waiter = {
        let mm = mm.clone();
        std::thread::spawn(move || mm.futex_lock_pi(BASE, 2, None))
    };
    until_queued(&mm, 1);
    assert_eq!(mm.futex_requeue(BASE, 0, 10, COND).unwrap(), 0);
    mm.futex_unlock_pi(BASE, 1).unwrap();
    waiter.join().unwrap().unwrap();
    assert_eq!(get(&mm, BASE), FUTEX_WAITERS | 2);
}

#[test]
fn a_requeue_in_shared_memory_reaches_another_spaces_waiter() {
    for keys in MODES {
        let (_m, parent) = space(keys, MapKind::Shared);
        let child = Arc::new(parent.fork().unwrap());
        parent.futex_lock_pi(BASE, 10, None).unwrap();
        let waiter = {
            let child = child.clone();
            std::thread::spawn(move || child.futex_wait_requeue_pi(COND, 0, BASE, None, 20))
        };
        broadcast(&parent, 1);
        parent.futex_unlock_pi(BASE, 10).unwrap();
        waiter.join().unwrap().unwrap();
        assert_eq!(get(&parent, BASE), FUTEX_WAITERS | 20, "{keys:?}");
        child.futex_unlock_pi(BASE, 20).unwrap();
        assert_eq!(get(&parent, BASE), 0);
        parent.check_invariants().unwrap();
        child.check_invariants().unwrap();
    }
}
