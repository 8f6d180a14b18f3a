//! Robust futex lists: a thread's exit (or its space's) marks the futex
//! words it still owns `FUTEX_OWNER_DIED` and wakes one waiter of each, as
//! Linux's `exit_robust_list`; lists in both key modes, across fork and
//! shared memory, and bad lists that must end the walk, not the host.

use softmm::futex::{
    RobustExit, WaitState, BITSET_MATCH_ANY, FUTEX_OWNER_DIED, FUTEX_WAITERS, ROBUST_LIST_HEAD_LEN, ROBUST_LIST_LIMIT,
};
use softmm::{errno, Config, FutexKeys, Machine, MapKind, Mm, Placement, Prot};

const BASE: u64 = 0x1000_0000;
/// Where each entry's futex word sits (glibc's pthread_mutex has it at a
/// negative offset from the list node; any signed offset works).
const OFFSET: i64 = 16;
const MODES: [FutexKeys; 2] = [FutexKeys::Physical, FutexKeys::Linux];

fn machine(keys: FutexKeys) -> Machine {
    Machine::new(Config { arena_bytes: 32 << 20, futex_keys: keys, ..Config::default() }).unwrap()
}

fn space(m: &Machine, kind: MapKind) -> Mm {
    let mm = m.new_mm().unwrap();
    mm.mmap(BASE, 64 << 10, Prot::RW, kind, Placement::Fixed).unwrap();
    mm
}

fn put_u64(mm: &Mm, addr: u64, v: u64) {
    mm.write(addr, &v.to_ne_bytes()).unwrap();
}

fn put_u32(mm: &Mm, addr: u64, v: u32) {
    mm.write(addr, &v.to_ne_bytes()).unwrap();
}

fn get_u32(mm: &Mm, addr: u64) -> u32 {
    let mut b = [0; 4];
    mm.read(addr, &mut b).unwrap();
    u32::from_ne_bytes(b)
}

/// A list at `head` through `entries` (each `(entry, pi)`), futex words at
/// `entry + OFFSET`, with `pending` as `list_op_pending`.
fn build(mm: &Mm, head: u64, entries: &[(u64, bool)], pending: u64) {
    let mut prev = head;
    for &(e, pi) in entries {
        put_u64(mm, prev, e | u64::from(pi));
        prev = e;
    }
    put_u64(mm, prev, head);
    put_u64(mm, head + 8, OFFSET as u64);
    put_u64(mm, head + 16, pending);
}

fn word(entry: u64) -> u64 {
    entry + OFFSET as u64
}

#[test]
fn exit_marks_owned_words_and_wakes_one_waiter_each() {
    for keys in MODES {
        let m = machine(keys);
        let mm = space(&m, MapKind::Private);
        let (head, e1, e2, e3) = (BASE, BASE + 0x100, BASE + 0x200, BASE + 0x300);
        build(&mm, head, &[(e1, false), (e2, false), (e3, false)], 0);
        put_u32(&mm, word(e1), 7 | FUTEX_WAITERS);
        put_u32(&mm, word(e2), 8); // another thread's
        put_u32(&mm, word(e3), 7);
        let w1 = mm.futex_wait_start(word(e1), 7 | FUTEX_WAITERS, BITSET_MATCH_ANY).unwrap();
        let w1b = mm.futex_wait_start(word(e1), 7 | FUTEX_WAITERS, BITSET_MATCH_ANY).unwrap();
        mm.set_robust_list(7, head, ROBUST_LIST_HEAD_LEN).unwrap();
        assert_eq!(mm.robust_list(7), Some(head));

        let out = mm.exit_robust_list(7);
        assert_eq!(out, RobustExit { marked: 2, woken: 1, complete: true }, "{keys:?}");
        assert_eq!(get_u32(&mm, word(e1)), FUTEX_WAITERS | FUTEX_OWNER_DIED);
        assert_eq!(get_u32(&mm, word(e2)), 8);
        assert_eq!(get_u32(&mm, word(e3)), FUTEX_OWNER_DIED);
        // One waiter woken: it takes the lock and sees EOWNERDEAD.
        let states = [w1.state(), w1b.state()];
        assert_eq!(states.iter().filter(|&&s| s == WaitState::Woken).count(), 1, "{states:?}");
        // The list is forgotten: a second exit finds nothing.
        assert_eq!(mm.robust_list(7), None);
        assert_eq!(mm.exit_robust_list(7), RobustExit { marked: 0, woken: 0, complete: true });
        mm.check_invariants().unwrap();
    }
}

#[test]
fn the_pending_entry_is_handled_last_and_once() {
    let m = machine(FutexKeys::Physical);
    let mm = space(&m, MapKind::Private);
    let (head, e1, e2) = (BASE, BASE + 0x100, BASE + 0x200);
    // e2 is both on the list and pending (a lock in progress): marked once.
    build(&mm, head, &[(e1, false), (e2, false)], e2);
    put_u32(&mm, word(e1), 3);
    put_u32(&mm, word(e2), 3 | FUTEX_WAITERS);
    let w = mm.futex_wait_start(word(e2), 3 | FUTEX_WAITERS, BITSET_MATCH_ANY).unwrap();
    mm.set_robust_list(3, head, ROBUST_LIST_HEAD_LEN).unwrap();
    assert_eq!(mm.exit_robust_list(3), RobustExit { marked: 2, woken: 1, complete: true });
    assert_eq!(w.state(), WaitState::Woken);
}

#[test]
fn a_pending_unlock_that_finished_wakes_a_waiter() {
    let m = machine(FutexKeys::Physical);
    let mm = space(&m, MapKind::Private);
    let (head, e1) = (BASE, BASE + 0x100);
    // The thread stored 0 (unlocked) and died before its FUTEX_WAKE.
    build(&mm, head, &[], e1);
    put_u32(&mm, word(e1), 0);
    let w = mm.futex_wait_start(word(e1), 0, BITSET_MATCH_ANY).unwrap();
    mm.set_robust_list(9, head, ROBUST_LIST_HEAD_LEN).unwrap();
    assert_eq!(mm.exit_robust_list(9), RobustExit { marked: 0, woken: 1, complete: true });
    assert_eq!(w.state(), WaitState::Woken);
    assert_eq!(get_u32(&mm, word(e1)), 0);
}

#[test]
fn a_pi_lock_goes_to_its_first_waiter_with_owner_died() {
    for keys in MODES {
        let m = machine(keys);
        let mm = std::sync::Arc::new(space(&m, MapKind::Private));
        let (head, e1, e2) = (BASE, BASE + 0x100, BASE + 0x200);
        build(&mm, head, &[(e1, true), (e2, true)], 0);
        put_u32(&mm, word(e1), 4);
        put_u32(&mm, word(e2), 4 | FUTEX_WAITERS); // waiters bit, nobody queued
                                                   // Thread 11 blocks in FUTEX_LOCK_PI behind owner 4.
        let locker = {
            let mm = mm.clone();
            std::thread::spawn(move || mm.futex_lock_pi(word(e1), 11, None))
        };
        while get_u32(&mm, word(e1)) & FUTEX_WAITERS == 0 {
            std::thread::yield_now();
        }
        mm.set_robust_list(4, head, ROBUST_LIST_HEAD_LEN).unwrap();
        // The bit is set and the waiter queued under one bucket lock, which
        // the hand-over takes too: the waiter is there to take the lock.
        let out = mm.exit_robust_list(4);
        locker.join().unwrap().unwrap();
        assert_eq!(out, RobustExit { marked: 2, woken: 1, complete: true }, "{keys:?}");
        assert_eq!(get_u32(&mm, word(e1)), FUTEX_WAITERS | 11 | FUTEX_OWNER_DIED, "{keys:?}");
        assert_eq!(get_u32(&mm, word(e2)), FUTEX_WAITERS | FUTEX_OWNER_DIED);
        mm.check_invariants().unwrap();
    }
}

#[test]
fn space_exit_walks_the_lists_left_and_wakes_other_spaces() {
    for keys in MODES {
        let m = machine(keys);
        let parent = space(&m, MapKind::Shared);
        let child = parent.fork().unwrap();
        let (head, e1) = (BASE, BASE + 0x100);
        build(&child, head, &[(e1, false)], 0);
        put_u32(&child, word(e1), 5 | FUTEX_WAITERS);
        let w = parent.futex_wait_start(word(e1), 5 | FUTEX_WAITERS, BITSET_MATCH_ANY).unwrap();
        child.set_robust_list(5, head, ROBUST_LIST_HEAD_LEN).unwrap();
        // A fork's child starts with no list; the parent has none either.
        assert_eq!(parent.robust_list(5), None);
        assert_eq!(child.fork().unwrap().robust_list(5), None);
        drop(child);
        assert_eq!(w.state(), WaitState::Woken, "{keys:?}");
        assert_eq!(get_u32(&parent, word(e1)), FUTEX_WAITERS | FUTEX_OWNER_DIED);
        parent.check_invariants().unwrap();
    }
}

#[test]
fn a_cyclic_list_ends_at_the_limit() {
    let m = machine(FutexKeys::Physical);
    let mm = space(&m, MapKind::Private);
    let (head, e1) = (BASE, BASE + 0x100);
    put_u64(&mm, head, e1);
    put_u64(&mm, head + 8, OFFSET as u64);
    put_u64(&mm, head + 16, 0);
    put_u64(&mm, e1, e1); // points at itself
    put_u32(&mm, word(e1), 6);
    mm.set_robust_list(6, head, ROBUST_LIST_HEAD_LEN).unwrap();
    // The word is marked at the first visit; the other 2,047 visits find
    // it no longer owned.
    assert_eq!(mm.exit_robust_list(6), RobustExit { marked: 1, woken: 0, complete: false });
    const { assert!(ROBUST_LIST_LIMIT == 2048) };
}

#[test]
fn bad_lists_end_the_walk_and_harm_nothing() {
    let m = machine(FutexKeys::Physical);
    let mm = space(&m, MapKind::Private);
    // A head in unmapped memory.
    mm.set_robust_list(1, 0x7000_0000, ROBUST_LIST_HEAD_LEN).unwrap();
    assert_eq!(mm.exit_robust_list(1), RobustExit { marked: 0, woken: 0, complete: false });
    // An entry whose next pointer is unmapped: the entry is still handled.
    let (head, e1) = (BASE, BASE + 0x100);
    put_u64(&mm, head, e1);
    put_u64(&mm, head + 8, OFFSET as u64);
    put_u64(&mm, head + 16, 0);
    put_u64(&mm, e1, 0x7000_0000);
    put_u32(&mm, word(e1), 2);
    mm.set_robust_list(2, head, ROBUST_LIST_HEAD_LEN).unwrap();
    assert_eq!(mm.exit_robust_list(2), RobustExit { marked: 1, woken: 0, complete: false });
    // An unaligned futex word stops the walk before it.
    let e2 = BASE + 0x200;
    build(&mm, head, &[(e2, false)], 0);
    put_u64(&mm, head + 8, (OFFSET + 1) as u64);
    mm.set_robust_list(2, head, ROBUST_LIST_HEAD_LEN).unwrap();
    assert_eq!(mm.exit_robust_list(2), RobustExit { marked: 0, woken: 0, complete: false });
    // A read-only futex word cannot be marked: the walk ends.
    let ro = 0x2000_0000;
    mm.mmap(ro, 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
    put_u32(&mm, ro, 2);
    mm.mprotect(ro, 4096, Prot::READ).unwrap();
    let e3 = BASE + 0x400;
    build(&mm, head, &[(e3, false)], 0);
    put_u64(&mm, head + 8, ro - e3); // the entry's word is `ro`
    mm.set_robust_list(2, head, ROBUST_LIST_HEAD_LEN).unwrap();
    assert_eq!(mm.exit_robust_list(2), RobustExit { marked: 0, woken: 0, complete: false });
    assert_eq!(get_u32(&mm, ro), 2);
    mm.check_invariants().unwrap();
}

#[test]
fn registration_errors_are_linux_s() {
    let m = machine(FutexKeys::Physical);
    let mm = space(&m, MapKind::Private);
    let e = mm.set_robust_list(1, BASE, 23).unwrap_err();
    assert_eq!(e.errno(), errno::EINVAL);
    assert_eq!(mm.set_robust_list(0, BASE, ROBUST_LIST_HEAD_LEN).unwrap_err().errno(), errno::EINVAL);
    assert_eq!(mm.set_robust_list(1 << 30, BASE, ROBUST_LIST_HEAD_LEN).unwrap_err().errno(), errno::EINVAL);
    // A head of 0 forgets the list.
    mm.set_robust_list(1, BASE, ROBUST_LIST_HEAD_LEN).unwrap();
    mm.set_robust_list(1, 0, ROBUST_LIST_HEAD_LEN).unwrap();
    assert_eq!(mm.robust_list(1), None);
}
