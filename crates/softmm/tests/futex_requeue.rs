//! FUTEX_REQUEUE / FUTEX_CMP_REQUEUE with real threads: a waiter moved to
//! the second futex sleeps there until woken through it, as the kernel's
//! selftest `futex_requeue` checks.

use softmm::{Config, FutexKeys, Machine, MapKind, Placement, Prot};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE: u64 = 0x1000_0000;

#[test]
fn a_waiter_requeued_without_a_wake_sleeps_on_the_second_futex_until_woken_there() {
    for keys in [FutexKeys::Physical, FutexKeys::Linux] {
        let m = Machine::new(Config { arena_bytes: 32 << 20, futex_keys: keys, ..Config::default() }).unwrap();
        let mm = Arc::new(m.new_mm().unwrap());
        mm.mmap(BASE, 64 << 10, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        let (f1, f2) = (BASE + 0x100, BASE + 0x200);
        let waiter = {
            let mm = mm.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = mm.futex_wait(f1, 0, Some(Duration::from_secs(10)));
                (r, t.elapsed())
            })
        };
        let until = Instant::now() + Duration::from_secs(10);
        let mut moved = 0;
        while moved == 0 {
            assert!(Instant::now() < until, "the waiter never queued");
            moved = mm.futex_cmp_requeue(f1, 0, 1, f2, 0).unwrap();
            std::thread::yield_now();
        }
        assert_eq!(moved, 1, "{keys:?}");
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "{keys:?}: the requeued waiter woke without a wake");
        assert_eq!(mm.futex_wake(f2, 1).unwrap(), 1, "{keys:?}: no waiter on the second futex");
        let (r, _) = waiter.join().unwrap();
        assert!(r.is_ok(), "{keys:?}: {r:?}");
    }
}
