//! `futex_waitv`: one wake among several futexes ends the wait with its
//! index; a differing word, the deadline, a cancellation or bad arguments
//! answer as Linux does, and nothing stays queued after the call.

use softmm::futex::{FutexWaitv, FutexWaitvCanceller, FUTEX2_NUMA, FUTEX2_PRIVATE, FUTEX2_SIZE_U32, FUTEX_WAITV_MAX};
use softmm::{errno, Config, FutexKeys, Machine, MapKind, Mm, Placement, Prot};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE: u64 = 0x1000_0000;

fn space(keys: FutexKeys, kind: MapKind) -> (Machine, Arc<Mm>) {
    let m = Machine::new(Config { arena_bytes: 32 << 20, futex_keys: keys, ..Config::default() }).unwrap();
    let mm = m.new_mm().unwrap();
    mm.mmap(BASE, 64 << 10, Prot::RW, kind, Placement::Fixed).unwrap();
    (m, Arc::new(mm))
}

fn w(uaddr: u64, val: u32) -> FutexWaitv {
    FutexWaitv { val: u64::from(val), uaddr, flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE, reserved: 0 }
}

/// Wake one waiter of `addr` as soon as one is queued there.
fn wake_when_queued(mm: &Mm, addr: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    while mm.futex_wake(addr, 1).unwrap() == 0 {
        assert!(Instant::now() < until, "nobody ever queued on {addr:#x}");
        std::thread::yield_now();
    }
}

#[test]
fn a_wake_of_any_one_ends_the_wait_with_its_index() {
    for keys in [FutexKeys::Physical, FutexKeys::Linux] {
        for target in 0..3u64 {
            let (_m, mm) = space(keys, MapKind::Private);
            let addrs = [BASE, BASE + 0x1000, BASE + 0x2004];
            let list: Vec<_> = addrs.iter().map(|&a| w(a, 0)).collect();
            let waiter = {
                let mm = mm.clone();
                std::thread::spawn(move || mm.futex_waitv(&list, 0, None))
            };
            wake_when_queued(&mm, addrs[target as usize]);
            assert_eq!(waiter.join().unwrap().unwrap(), target as usize, "{keys:?}");
            // Nothing stays queued.
            for a in addrs {
                assert_eq!(mm.futex_wake(a, 10).unwrap(), 0);
            }
            mm.check_invariants().unwrap();
        }
    }
}

#[test]
fn a_wake_from_another_space_through_shared_memory() {
    let (_m, parent) = space(FutexKeys::Physical, MapKind::Shared);
    let child = Arc::new(parent.fork().unwrap());
    let list = [w(BASE, 0), w(BASE + 8, 0)];
    let waiter = {
        let child = child.clone();
        std::thread::spawn(move || child.futex_waitv(&list, 0, None))
    };
    wake_when_queued(&parent, BASE + 8);
    assert_eq!(waiter.join().unwrap().unwrap(), 1);
}

#[test]
fn a_differing_word_answers_eagain_and_leaves_none_queued() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    mm.write(BASE + 0x1000, &5u32.to_ne_bytes()).unwrap();
    let e = mm.futex_waitv(&[w(BASE, 0), w(BASE + 0x1000, 4), w(BASE + 0x2000, 0)], 0, None).unwrap_err();
    assert_eq!(e.errno(), errno::EAGAIN);
    assert_eq!(mm.futex_wake(BASE, 10).unwrap(), 0, "the first futex was taken off again");
}

#[test]
fn the_deadline_answers_etimedout() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    let t0 = Instant::now();
    let e = mm.futex_waitv(&[w(BASE, 0), w(BASE + 4, 0)], 0, Some(t0 + Duration::from_millis(20))).unwrap_err();
    assert_eq!(e.errno(), errno::ETIMEDOUT);
    assert!(t0.elapsed() >= Duration::from_millis(20));
    // A deadline already past: the words are still checked first.
    mm.write(BASE, &1u32.to_ne_bytes()).unwrap();
    let e = mm.futex_waitv(&[w(BASE, 0)], 0, Some(Instant::now())).unwrap_err();
    assert_eq!(e.errno(), errno::EAGAIN);
    let e = mm.futex_waitv(&[w(BASE, 1)], 0, Some(Instant::now())).unwrap_err();
    assert_eq!(e.errno(), errno::ETIMEDOUT);
    assert_eq!(mm.futex_wake(BASE, 10).unwrap(), 0);
}

#[test]
fn a_cancellation_answers_eintr() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    let cancel = FutexWaitvCanceller::default();
    let waiter = {
        let (mm, cancel) = (mm.clone(), cancel.clone());
        std::thread::spawn(move || mm.futex_waitv_cancellable(&[w(BASE, 0)], 0, None, &cancel))
    };
    std::thread::sleep(Duration::from_millis(20));
    cancel.cancel();
    assert_eq!(waiter.join().unwrap().unwrap_err().errno(), errno::EINTR);
    assert_eq!(mm.futex_wake(BASE, 10).unwrap(), 0);
}

#[test]
fn bad_arguments_answer_as_linux() {
    let (_m, mm) = space(FutexKeys::Physical, MapKind::Private);
    let einval = |list: &[FutexWaitv], flags: u32| {
        let e = mm.futex_waitv(list, flags, Some(Instant::now())).unwrap_err();
        assert_eq!(e.errno(), errno::EINVAL, "{list:?} flags {flags}");
    };
    einval(&[], 0);
    einval(&vec![w(BASE, 0); FUTEX_WAITV_MAX + 1], 0);
    einval(&[w(BASE, 0)], 1);
    einval(&[FutexWaitv { flags: 0x03, ..w(BASE, 0) }], 0); // 64-bit size
    einval(&[FutexWaitv { flags: 0, ..w(BASE, 0) }], 0); // 8-bit size
    einval(&[FutexWaitv { flags: FUTEX2_SIZE_U32 | 0x100, ..w(BASE, 0) }], 0);
    einval(&[FutexWaitv { flags: FUTEX2_SIZE_U32 | FUTEX2_NUMA, ..w(BASE, 0) }], 0);
    einval(&[FutexWaitv { reserved: 1, ..w(BASE, 0) }], 0);
    einval(&[FutexWaitv { val: 1 << 32, ..w(BASE, 0) }], 0);
    einval(&[w(BASE, 0), w(BASE + 2, 0)], 0); // unaligned
    let e = mm.futex_waitv(&[w(BASE, 0), w(0x7000_0000, 0)], 0, None).unwrap_err();
    assert_eq!(e.errno(), errno::EFAULT);
    assert_eq!(mm.futex_wake(BASE, 10).unwrap(), 0);
    // 128 futexes are fine.
    let many: Vec<_> = (0..FUTEX_WAITV_MAX as u64).map(|i| w(BASE + 4 * i, 0)).collect();
    let e = mm.futex_waitv(&many, 0, Some(Instant::now())).unwrap_err();
    assert_eq!(e.errno(), errno::ETIMEDOUT);
}
