//! Futex waiters across reclaim and migration: a waiter keyed by its page
//! keeps following that page while the page is swapped out, swapped back
//! in, migrated or refused migration, and a wake through a swap or
//! migration entry reaches it. Each sequence runs in both key modes; the
//! audit (`check_invariants`) runs after every step and must see every
//! waiter.

mod common;

use softmm::futex::{WaitState, BITSET_MATCH_ANY};
use softmm::reclaim::device::MemSwap;
use softmm::{Config, FutexKeys, FutexWaiter, Machine, MapKind, Mm, Placement, Prot, SwapConfig};
use std::sync::Arc;
use std::time::Duration;

const BASE: u64 = 0x1000_0000;
const PAGE: u64 = 4096;
const MODES: [FutexKeys; 2] = [FutexKeys::Physical, FutexKeys::Linux];

/// A machine with a swap device and, if `limit_pages`, a frame limit; no
/// background reclaimer, so only the test moves pages.
fn machine(keys: FutexKeys, limit_pages: Option<u64>) -> Machine {
    Machine::new(Config {
        arena_bytes: 64 << 20,
        mem_limit: limit_pages.map(|p| p * PAGE),
        swap: SwapConfig::Device(Arc::new(MemSwap::new(16 << 20).expect("mem swap"))),
        futex_keys: keys,
        cpu_caches: 1,
        prezero: false,
        background_reclaim: false,
        ..Config::default()
    })
    .expect("machine")
}

/// A space with `pages` private (or shared) pages at `BASE`, word 0 of
/// each page holding 0.
fn space(m: &Machine, pages: u64, kind: MapKind) -> Mm {
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, pages * PAGE, Prot::RW, kind, Placement::Fixed).expect("mmap");
    for i in 0..pages {
        mm.write(BASE + i * PAGE, &0u32.to_ne_bytes()).expect("write");
    }
    mm
}

fn audit(m: &Machine) {
    m.check_invariants().expect("audit");
}

/// Reclaim until `mm`'s page at `va` has left memory (its entry is a swap
/// entry, or empty for shared memory).
fn swap_out(m: &Machine, mm: &Mm, va: u64) {
    for _ in 0..8 {
        if mm.phys(va).is_none() {
            return;
        }
        m.reclaim(1000);
    }
    assert_eq!(mm.phys(va), None, "the page at {va:#x} never left memory");
}

fn wait(mm: &Mm, va: u64) -> FutexWaiter {
    mm.futex_wait_start(va, 0, BITSET_MATCH_ANY).expect("wait")
}

fn set(mm: &Mm, va: u64, v: u32) {
    mm.write(va, &v.to_ne_bytes()).expect("write");
}

/// `waker`'s wake at `va` reaches `w`, which ends woken.
fn wakes(waker: &Mm, va: u64, w: FutexWaiter, keys: FutexKeys) {
    assert_eq!(waker.futex_wake(va, 1).expect("wake"), 1, "{keys:?}");
    assert_eq!(w.state(), WaitState::Woken, "{keys:?}");
}

#[test]
fn swap_out_then_write_then_wake() {
    for keys in MODES {
        let m = machine(keys, None);
        let mm = space(&m, 1, MapKind::Private);
        let w = wait(&mm, BASE);
        swap_out(&m, &mm, BASE);
        audit(&m);
        let copies = m.stats().fault_cow_copy;
        set(&mm, BASE, 1);
        audit(&m);
        if keys == FutexKeys::Physical {
            assert_eq!(m.stats().fault_cow_copy, copies, "a waited-on page is reused, not copied, after swap-in");
        }
        wakes(&mm, BASE, w, keys);
        audit(&m);
    }
}

#[test]
fn swap_out_then_wake_with_no_write() {
    for keys in MODES {
        let m = machine(keys, None);
        let mm = space(&m, 1, MapKind::Private);
        let w = wait(&mm, BASE);
        swap_out(&m, &mm, BASE);
        audit(&m);
        wakes(&mm, BASE, w, keys);
        audit(&m);
        // The page is still there, with its contents.
        let mut b = [9u8; 4];
        mm.read(BASE, &mut b).expect("read");
        assert_eq!(b, [0; 4]);
    }
}

#[test]
fn swap_out_by_other_pages_pressure_under_a_frame_limit() {
    for keys in MODES {
        // 32 frames for 64 pages: writing the others pushes the waited-on
        // page out through direct reclaim.
        let m = machine(keys, Some(32));
        let mm = space(&m, 1, MapKind::Private);
        let w = wait(&mm, BASE);
        mm.mmap(BASE + PAGE, 64 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        for round in 0..4u32 {
            for i in 1..=64 {
                set(&mm, BASE + i * PAGE, round);
            }
            if mm.phys(BASE).is_none() {
                break;
            }
        }
        assert_eq!(mm.phys(BASE), None, "pressure swapped the waited-on page out");
        audit(&m);
        set(&mm, BASE, 1);
        audit(&m);
        wakes(&mm, BASE, w, keys);
        audit(&m);
    }
}

#[test]
fn failed_migration_then_fork_then_parent_write() {
    for keys in MODES {
        let m = machine(keys, None);
        let parent = space(&m, 1, MapKind::Private);
        let w = wait(&parent, BASE);
        if keys == FutexKeys::Physical {
            // The waiter's reference on the frame makes the move abort.
            assert!(parent.migrate(BASE).is_err(), "a waited-on frame is busy");
        } else {
            parent.migrate(BASE).expect("Linux keys hold no frame: the move succeeds");
        }
        audit(&m);
        let child = parent.fork().expect("fork");
        audit(&m);
        set(&parent, BASE, 1);
        audit(&m);
        assert_eq!(child.futex_wake(BASE, 1).expect("wake"), 0, "the child's copy has no waiter ({keys:?})");
        wakes(&parent, BASE, w, keys);
        audit(&m);
    }
}

#[test]
fn child_waiter_while_both_sides_are_swapped() {
    for keys in MODES {
        let m = machine(keys, None);
        let parent = space(&m, 1, MapKind::Private);
        let child = parent.fork().expect("fork");
        let w = wait(&child, BASE);
        swap_out(&m, &parent, BASE);
        swap_out(&m, &child, BASE);
        audit(&m);
        // Physical keys: both sides still share the page, so the parent's
        // wake reaches the child's waiter; Linux keys: it does not.
        let reach = u32::from(keys == FutexKeys::Physical);
        assert_eq!(parent.futex_wake(BASE, 1).expect("wake"), reach, "{keys:?}");
        if reach == 0 {
            // The parent breaks COW; the child's waiter stays with the
            // child's page, reached through the child.
            set(&parent, BASE, 1);
            audit(&m);
            assert_eq!(parent.futex_wake(BASE, 1).expect("wake"), 0);
            assert_eq!(child.futex_wake(BASE, 1).expect("wake"), 1);
        }
        assert_eq!(w.state(), WaitState::Woken);
        drop(w);

        // Again, the parent writing while swapped out: the child's waiter
        // stays on the child's page.
        let w = wait(&child, BASE + 4);
        swap_out(&m, &child, BASE);
        set(&parent, BASE + 4, 2);
        swap_out(&m, &parent, BASE);
        audit(&m);
        assert_eq!(parent.futex_wake(BASE + 4, 1).expect("wake"), 0, "{keys:?}");
        wakes(&child, BASE + 4, w, keys);
        audit(&m);
    }
}

#[test]
fn a_blocked_thread_with_a_timeout_is_woken_through_swap() {
    for keys in MODES {
        let m = machine(keys, None);
        let mm = space(&m, 1, MapKind::Private);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| mm.futex_wait(BASE, 0, Some(Duration::from_secs(120))));
            let woken = wake_when_queued(&m, &mm);
            assert_eq!(woken, 1, "{keys:?}");
            waiter.join().expect("thread").expect("woken, not timed out");
        });
        audit(&m);
    }
}

/// Swap the page out, write another word of it and wake `BASE`, until
/// the wake finds the thread's wait (queued by then): returns the count.
/// The futex word itself never changes, so the thread cannot miss its
/// wait with EAGAIN.
fn wake_when_queued(m: &Machine, mm: &Mm) -> u32 {
    for _ in 0..2_000 {
        swap_out(m, mm, BASE);
        audit(m);
        set(mm, BASE + 8, 1);
        audit(m);
        match mm.futex_wake(BASE, 1).expect("wake") {
            0 => std::thread::sleep(Duration::from_millis(1)),
            n => return n,
        }
    }
    0
}

#[test]
fn shared_anonymous_pages() {
    for keys in MODES {
        let m = machine(keys, None);
        let a = space(&m, 1, MapKind::Shared);
        let b = a.fork().expect("fork");
        let w = wait(&b, BASE);
        // Reclaim tries the page: the waiter keeps it resident, but its
        // mappings go; the waiter must keep following it.
        m.reclaim(1000);
        audit(&m);
        set(&a, BASE, 1);
        audit(&m);
        wakes(&a, BASE, w, keys);
        // Without a waiter it does leave memory, and comes back.
        set(&a, BASE, 0);
        swap_out(&m, &a, BASE);
        swap_out(&m, &b, BASE);
        let w = wait(&b, BASE);
        wakes(&a, BASE, w, keys);
        audit(&m);
    }
}

#[test]
fn a_swapped_in_page_is_followed_across_cow() {
    // Swap-out, swap-in by a read (mapped read-only, still in the swap
    // cache), fork, then the parent writes: the waiter moves with the
    // parent's page.
    for keys in MODES {
        let m = machine(keys, None);
        let parent = space(&m, 1, MapKind::Private);
        let w = wait(&parent, BASE);
        swap_out(&m, &parent, BASE);
        let mut b = [0u8; 4];
        parent.read(BASE, &mut b).expect("read");
        audit(&m);
        let child = parent.fork().expect("fork");
        set(&parent, BASE, 1);
        audit(&m);
        assert_eq!(child.futex_wake(BASE, 1).expect("wake"), 0, "{keys:?}");
        wakes(&parent, BASE, w, keys);
        audit(&m);
    }
}

/// The exit of the space that started a wait ends the wait (as Linux's
/// exit ends its threads) and releases its frame at once, whether or not
/// the host still holds the waiter.
#[test]
fn exit_ends_the_waits_of_the_space_and_releases_their_frames() {
    for keys in MODES {
        let m = machine(keys, None);
        let mm = space(&m, 2, MapKind::Private);
        let held = wait(&mm, BASE);
        let blocked = wait(&mm, BASE + PAGE);
        let thread = std::thread::spawn(move || blocked.wait(None));
        // A waiter of another space on a page the exiting space shares
        // with it is not the exiting space's: it stays.
        let child = mm.fork().expect("fork");
        let other = wait(&child, BASE + 8);
        mm.exit();
        assert_eq!(held.state(), WaitState::Exited, "{keys:?}");
        assert!(matches!(thread.join().expect("thread"), Err(softmm::Error::Exited)), "{keys:?}");
        assert_eq!(other.state(), WaitState::Waiting, "{keys:?}");
        audit(&m);
        child.exit();
        assert_eq!(other.state(), WaitState::Exited);
        assert_eq!(m.stats().frames_in_use, 0, "no waiter keeps a frame of an exited space ({keys:?})");
        assert!(matches!(held.wait(None), Err(softmm::Error::Exited)));
        drop(other);
        audit(&m);
    }
}

/// A wait on a hole of a read-only mapping is keyed by its address (no
/// frame); once the page is mapped afresh, written and swapped out, a wake
/// through it must not reach that waiter: the page has contents, it is not
/// the hole (found by the chaos model).
#[test]
fn a_swapped_page_is_not_the_hole_it_once_was() {
    let m = machine(FutexKeys::Physical, None);
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, PAGE, Prot::READ, MapKind::Private, Placement::Fixed).expect("mmap");
    let w = wait(&mm, BASE);
    mm.munmap(BASE, PAGE).expect("munmap");
    mm.mmap(BASE, PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    set(&mm, BASE + 8, 7);
    assert_eq!(mm.futex_wake(BASE, 1).expect("wake"), 0, "resident: a frame of its own");
    swap_out(&m, &mm, BASE);
    audit(&m);
    assert_eq!(mm.futex_wake(BASE, 1).expect("wake"), 0, "swapped out: still not the hole");
    assert_eq!(w.state(), WaitState::Waiting);
    drop(w);
    audit(&m);
}
