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
