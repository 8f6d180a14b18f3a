//! madvise beyond what the trace corpus shows: MADV_FREE against reclaim,
//! PAGEOUT and WILLNEED with a swap device, REMOVE across spaces, the fork
//! flags through the API, and bad input (never a panic, always Linux's
//! errno). The invariant audit runs after every step.

mod common;

use common::{check, map, read};
use proptest::prelude::*;
use softmm::reclaim::device::MemSwap;
use softmm::{errno, Advice, Config, Machine, MapKind, Mm, Prot, SwapConfig};
use std::sync::Arc;

const BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;

/// A machine with a swap device and no frame limit: reclaim runs when a
/// test asks.
fn swapping() -> Machine {
    let swap = Arc::new(MemSwap::new(16 << 20).expect("swap"));
    Machine::new(Config { arena_bytes: 32 << 20, swap: SwapConfig::Device(swap), ..Config::default() })
        .expect("machine")
}

fn fill_pages(mm: &Mm, n: u64, byte: u8) {
    mm.fill(BASE, (n * PAGE) as usize, byte).expect("fill");
}

/// Reclaim until nothing more goes.
fn reclaim_all(m: &Machine) {
    while m.reclaim(1024) > 0 {}
}

#[test]
fn free_pages_still_clean_are_dropped_by_reclaim_written_ones_stay() {
    let m = swapping();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 8 * PAGE, Prot::RW, MapKind::Private);
    fill_pages(&mm, 8, 0x5a);
    mm.madvise(BASE, 8 * PAGE, Advice::Free).unwrap();
    check(&mm);
    // No pressure yet: the data stays.
    assert_eq!(read(&mm, BASE, 2), [0x5a, 0x5a]);
    // A write after FREE keeps that page.
    mm.write(BASE + 3 * PAGE, b"kept").unwrap();
    let used = m.stats().frames_in_use;
    reclaim_all(&m);
    check(&mm);
    assert!(m.stats().frames_in_use < used, "reclaim freed nothing");
    assert_eq!(m.stats().lazyfree_dropped, 7);
    assert_eq!(read(&mm, BASE + 3 * PAGE, 5), b"kept\x5a");
    for p in [0, 1, 2, 4, 5, 6, 7] {
        // Dropped, not swapped: reads fault a zero page.
        assert_eq!(read(&mm, BASE + p * PAGE, 4), [0; 4], "page {p}");
    }
    check(&mm);
}

#[test]
fn free_of_a_page_shared_after_fork_keeps_the_writers_data() {
    let m = swapping();
    let p = m.new_mm().unwrap();
    map(&p, BASE, 4 * PAGE, Prot::RW, MapKind::Private);
    fill_pages(&p, 4, 0x11);
    let c = p.fork().unwrap();
    c.madvise(BASE, 4 * PAGE, Advice::Free).unwrap();
    check(&p);
    check(&c);
    reclaim_all(&m);
    check(&p);
    check(&c);
    // The parent wrote the pages (its entries are dirty): its data stays.
    assert_eq!(read(&p, BASE, 4 * PAGE as usize), vec![0x11; 4 * PAGE as usize]);
    // The child gave them up: each reads its old data or zeros.
    for i in 0..4 {
        let b = read(&c, BASE + i * PAGE, 1)[0];
        assert!(b == 0x11 || b == 0, "child page {i} reads {b:#x}");
    }
}

#[test]
fn free_then_write_without_pressure_keeps_every_byte() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Private);
    fill_pages(&mm, 4, 0x22);
    mm.madvise(BASE, 4 * PAGE, Advice::Free).unwrap();
    mm.write(BASE + 1, b"x").unwrap();
    assert_eq!(read(&mm, BASE, 3), [0x22, b'x', 0x22]);
    let s = mm.smaps(BASE).unwrap();
    assert_eq!((s.private_clean, s.private_dirty), (12, 4));
    check(&mm);
}

#[test]
fn free_errors_as_linux() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Private);
    map(&mm, BASE + 8 * PAGE, 4 * PAGE, Prot::RW, MapKind::Shared);
    let e = |r: softmm::Result<()>| r.unwrap_err().errno();
    assert_eq!(e(mm.madvise(BASE + 8 * PAGE, PAGE, Advice::Free)), errno::EINVAL);
    assert_eq!(e(mm.madvise(BASE, 16 * PAGE, Advice::Free)), errno::EINVAL); // shared after the hole
    assert_eq!(e(mm.madvise(BASE, 6 * PAGE, Advice::Free)), errno::ENOMEM);
    assert_eq!(e(mm.madvise(BASE + 1, PAGE, Advice::Free)), errno::EINVAL);
    assert_eq!(e(mm.madvise(BASE, u64::MAX - 100, Advice::Free)), errno::EINVAL);
    assert_eq!(mm.madvise(BASE + 5 * PAGE, 0, Advice::Free), Ok(()));
    check(&mm);
}

#[test]
fn pageout_swaps_private_pages_now_and_leaves_shared_ones() {
    let m = swapping();
    let p = m.new_mm().unwrap();
    map(&p, BASE, 8 * PAGE, Prot::RW, MapKind::Private);
    fill_pages(&p, 8, 0x33);
    let c = p.fork().unwrap();
    // The child's own copies of pages 0..4; pages 4..8 stay shared.
    c.fill(BASE, 4 * PAGE as usize, 0x44).unwrap();
    let before = m.stats().swap_outs;
    c.madvise(BASE, 8 * PAGE, Advice::PageOut).unwrap();
    check(&p);
    check(&c);
    assert!(m.stats().swap_outs >= before + 4, "PAGEOUT swapped out {} pages", m.stats().swap_outs - before);
    for i in 0..4 {
        assert_eq!(c.phys(BASE + i * PAGE), None, "child page {i} still resident");
    }
    for i in 4..8 {
        assert!(c.phys(BASE + i * PAGE).is_some(), "shared page {i} was paged out");
    }
    assert_eq!(read(&c, BASE, 2), [0x44, 0x44]);
    assert_eq!(read(&c, BASE + 5 * PAGE, 1), [0x33]);
    assert_eq!(read(&p, BASE, 1), [0x33]);
    check(&c);
}

#[test]
fn willneed_reads_swapped_pages_back_ahead_of_the_fault() {
    let m = swapping();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Private);
    map(&mm, BASE + 8 * PAGE, 4 * PAGE, Prot::RW, MapKind::Shared);
    fill_pages(&mm, 4, 0x55);
    mm.fill(BASE + 8 * PAGE, 4 * PAGE as usize, 0x66).unwrap();
    mm.madvise(BASE, 4 * PAGE, Advice::PageOut).unwrap();
    reclaim_all(&m); // the shared pages too
    assert_eq!(mm.phys(BASE), None);
    mm.madvise(BASE, 12 * PAGE, Advice::WillNeed).unwrap_err(); // ENOMEM: the hole
    check(&mm);
    let hits = m.stats().swap_cache_hits;
    assert_eq!(read(&mm, BASE, 1), [0x55]);
    assert!(m.stats().swap_cache_hits > hits, "the fault read the device again");
    assert_eq!(read(&mm, BASE + 9 * PAGE, 1), [0x66]);
    check(&mm);
}

#[test]
fn remove_punches_shared_memory_for_every_mapper() {
    let m = common::machine();
    let p = m.new_mm().unwrap();
    map(&p, BASE, 4 * PAGE, Prot::RW, MapKind::Shared);
    map(&p, BASE + 8 * PAGE, PAGE, Prot::RW, MapKind::Private);
    p.fill(BASE, 4 * PAGE as usize, 0x77).unwrap();
    let c = p.fork().unwrap();
    assert_eq!(read(&c, BASE, 1), [0x77]);
    let used = m.stats().frames_in_use;
    p.madvise(BASE, 2 * PAGE, Advice::Remove).unwrap();
    check(&p);
    check(&c);
    assert_eq!(m.stats().frames_in_use, used - 2);
    assert_eq!(read(&c, BASE, 1), [0]);
    assert_eq!(read(&c, BASE + 2 * PAGE, 1), [0x77]);
    assert_eq!(read(&p, BASE + PAGE, 1), [0]);
    let e = p.madvise(BASE + 8 * PAGE, PAGE, Advice::Remove).unwrap_err();
    assert_eq!(e.errno(), errno::EINVAL);
    check(&p);
}

#[test]
fn dontfork_and_wipeonfork_shape_the_child() {
    let m = common::machine();
    let p = m.new_mm().unwrap();
    map(&p, BASE, 8 * PAGE, Prot::RW, MapKind::Private);
    fill_pages(&p, 8, 0x99);
    p.madvise(BASE, 2 * PAGE, Advice::DontFork).unwrap();
    p.madvise(BASE + 4 * PAGE, 2 * PAGE, Advice::WipeOnFork).unwrap();
    assert_eq!(p.mappings().len(), 4, "{:?}", p.mappings()); // split at every edge
    let c = p.fork().unwrap();
    check(&p);
    check(&c);
    assert!(c.read(BASE, &mut [0u8; 1]).is_err(), "a DONTFORK page reached the child");
    assert_eq!(read(&c, BASE + 2 * PAGE, 1), [0x99]);
    assert_eq!(read(&c, BASE + 4 * PAGE, 2), [0, 0]);
    assert_eq!(read(&c, BASE + 6 * PAGE, 1), [0x99]);
    assert_eq!(read(&p, BASE + 4 * PAGE, 1), [0x99]);
    // The child keeps WIPEONFORK: its own child gets zeros too.
    c.write(BASE + 4 * PAGE, b"c").unwrap();
    let g = c.fork().unwrap();
    assert_eq!(read(&g, BASE + 4 * PAGE, 1), [0]);
    // Undone, the VMAs merge back and forks copy everything.
    p.madvise(BASE, 2 * PAGE, Advice::DoFork).unwrap();
    p.madvise(BASE + 4 * PAGE, 2 * PAGE, Advice::KeepOnFork).unwrap();
    assert_eq!(p.mappings().len(), 1, "{:?}", p.mappings());
    let d = p.fork().unwrap();
    assert_eq!(read(&d, BASE, 1), [0x99]);
    assert_eq!(read(&d, BASE + 4 * PAGE, 1), [0x99]);
    for mm in [&p, &c, &g, &d] {
        check(mm);
    }
}

#[test]
fn populate_write_breaks_cow_and_keeps_the_bytes() {
    let m = common::machine();
    let p = m.new_mm().unwrap();
    map(&p, BASE, 2 * PAGE, Prot::RW, MapKind::Private);
    p.write(BASE, b"abc").unwrap();
    let c = p.fork().unwrap();
    assert_eq!(c.phys(BASE), p.phys(BASE));
    c.madvise(BASE, 2 * PAGE, Advice::PopulateWrite).unwrap();
    assert_ne!(c.phys(BASE), p.phys(BASE));
    assert!(c.phys(BASE + PAGE).is_some());
    assert_eq!(read(&c, BASE, 3), b"abc");
    check(&p);
    check(&c);
}

fn advice() -> impl Strategy<Value = Advice> {
    prop::sample::select(Advice::ALL.to_vec())
}

fn any_addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (0u64..64).prop_map(|p| BASE - 8 * PAGE + p * PAGE),
        1 => any::<u64>(),
        1 => Just(u64::MAX - PAGE + 1),
    ]
}

fn any_len() -> impl Strategy<Value = u64> {
    prop_oneof![3 => (0u64..48).prop_map(|p| p * PAGE), 1 => 0u64..3 * PAGE, 1 => any::<u64>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any advice on any range answers Ok or one of Linux's errnos, and
    /// leaves every invariant true; data outside the range never changes.
    #[test]
    fn bad_input_gets_an_errno_and_breaks_nothing(
        steps in prop::collection::vec((any_addr(), any_len(), advice()), 1..24),
    ) {
        let m = swapping();
        let mm = m.new_mm().unwrap();
        map(&mm, BASE, 8 * PAGE, Prot::RW, MapKind::Private);
        map(&mm, BASE + 12 * PAGE, 4 * PAGE, Prot::RW, MapKind::Shared);
        map(&mm, BASE + 16 * PAGE, 4 * PAGE, Prot::READ, MapKind::Private);
        map(&mm, BASE + 20 * PAGE, 4 * PAGE, Prot::NONE, MapKind::Private);
        mm.fill(BASE, 8 * PAGE as usize, 0x42).unwrap();
        let far = m.new_mm().unwrap();
        map(&far, BASE, PAGE, Prot::RW, MapKind::Private);
        far.write(BASE, b"far").unwrap();
        for (addr, len, advice) in steps {
            let r = mm.madvise(addr, len, advice);
            if let Err(e) = &r {
                let ok = [errno::EINVAL, errno::ENOMEM, errno::EFAULT].contains(&e.errno());
                prop_assert!(ok, "{advice:?} {addr:#x}+{len:#x}: {e}");
            }
            if let Err(e) = mm.check_invariants() {
                return Err(TestCaseError::fail(format!("{advice:?} {addr:#x}+{len:#x}: {e}")));
            }
            prop_assert_eq!(read(&far, BASE, 3), b"far".to_vec());
        }
    }
}

#[test]
fn free_drops_swapped_out_pages_and_their_slots() {
    let m = swapping();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Private);
    fill_pages(&mm, 4, 0x88);
    mm.madvise(BASE, 4 * PAGE, Advice::PageOut).unwrap();
    assert!(m.stats().swap_used >= 4, "PAGEOUT left {} slots used", m.stats().swap_used);
    mm.madvise(BASE, 4 * PAGE, Advice::Free).unwrap();
    check(&mm);
    assert_eq!(m.stats().swap_used, 0);
    assert_eq!(read(&mm, BASE, 4 * PAGE as usize), vec![0; 4 * PAGE as usize]);
    check(&mm);
}

#[test]
fn remove_releases_swapped_out_shared_pages() {
    let m = swapping();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Shared);
    mm.fill(BASE, 4 * PAGE as usize, 0x99).unwrap();
    reclaim_all(&m);
    assert!(m.stats().swap_used >= 4, "reclaim left {} slots used", m.stats().swap_used);
    mm.madvise(BASE, 4 * PAGE, Advice::Remove).unwrap();
    check(&mm);
    assert_eq!(m.stats().swap_used, 0);
    assert_eq!(read(&mm, BASE + PAGE, 1), [0]);
    check(&mm);
}

/// A store after MADV_FREE is never lost to a reclaim running at the same
/// time: either reclaim dropped the page first (the store faults a new
/// one) or the store's dirty entry keeps it.
#[test]
fn a_store_after_free_survives_concurrent_reclaim() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const PAGES: u64 = 16;
    let m = swapping();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, PAGES * PAGE, Prot::RW, MapKind::Private);
    fill_pages(&mm, PAGES, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let reclaimer = {
        let (m, stop) = (m.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                m.reclaim(64);
            }
        })
    };
    let mut acc = mm.accessor();
    for round in 0..300u32 {
        let v = (round as u8) | 1;
        mm.madvise(BASE, PAGES * PAGE, Advice::Free).unwrap();
        for p in 0..PAGES {
            acc.write(BASE + p * PAGE + 7, &[v]).unwrap();
            // Room for the reclaimer to look at the pages not written yet.
            std::thread::yield_now();
        }
        for p in 0..PAGES {
            let mut b = [0u8; 1];
            acc.read(BASE + p * PAGE + 7, &mut b).unwrap();
            assert_eq!(b[0], v, "round {round}, page {p}: the store was lost");
        }
    }
    stop.store(true, Ordering::Relaxed);
    reclaimer.join().unwrap();
    eprintln!("lazily freed pages dropped meanwhile: {}", m.stats().lazyfree_dropped);
    check(&mm);
}

#[test]
fn linux_advice_numbers_round_trip_and_hints_are_none() {
    for a in Advice::ALL {
        assert_eq!(Advice::from_linux(a.linux_value()), Some(a), "{a:?}");
    }
    // Linux's uapi values (include/uapi/asm-generic/mman-common.h).
    assert_eq!(Advice::from_linux(4), Some(Advice::DontNeed));
    assert_eq!(Advice::from_linux(8), Some(Advice::Free));
    assert_eq!(Advice::from_linux(23), Some(Advice::PopulateWrite));
    // MADV_NORMAL, MADV_HUGEPAGE, MADV_DONTNEED_LOCKED: not softmm advice.
    for n in [0, 14, 24, 100] {
        assert_eq!(Advice::from_linux(n), None, "{n}");
    }
}
