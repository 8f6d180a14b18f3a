//! Snapshots and restore: a restored space answers as a fork taken at the
//! snapshot would (mappings and bytes), whatever happened in between; the
//! audit (`check_invariants`) runs after every step.

mod common;

use common::check;
use proptest::prelude::*;
use softmm::futex::{WaitState, BITSET_MATCH_ANY};
use softmm::reclaim::device::MemSwap;
use softmm::{Config, Error, ForkPolicy, Machine, MapKind, Mapping, Mm, Placement, Prot, RemapFlags, SwapConfig};
use std::sync::Arc;

const BASE: u64 = 0x1000_0000;
const PAGE: u64 = 4096;

fn machine() -> Machine {
    Machine::new(Config { arena_bytes: 64 << 20, cpu_caches: 1, prezero: false, ..Config::default() }).expect("machine")
}

fn swapping(limit_pages: u64) -> Machine {
    Machine::new(Config {
        arena_bytes: 64 << 20,
        mem_limit: Some(limit_pages * PAGE),
        swap: SwapConfig::Device(Arc::new(MemSwap::new(16 << 20).expect("mem swap"))),
        cpu_caches: 1,
        prezero: false,
        background_reclaim: false,
        ..Config::default()
    })
    .expect("machine")
}

/// Mappings and the bytes of every readable page: what a restore must
/// give back.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    maps: Vec<Mapping>,
    bytes: Vec<(u64, Vec<u8>)>,
}

fn seen(mm: &Mm) -> Seen {
    let maps = mm.maps();
    let mut bytes = Vec::new();
    for m in maps.iter().filter(|m| m.prot.readable()) {
        for va in m.range.clone().step_by(PAGE as usize) {
            let mut b = vec![0; PAGE as usize];
            mm.read(va, &mut b).expect("read");
            bytes.push((va, b));
        }
    }
    Seen { maps, bytes }
}

fn fill(mm: &Mm, va: u64, pages: u64, byte: u8) {
    mm.fill(va, (pages * PAGE) as usize, byte).expect("fill");
}

/// A space with 16 written private pages at BASE, 4 shared pages after
/// them and 8 never-touched private pages after those.
fn space(m: &Machine) -> Mm {
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 16 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    mm.mmap(BASE + 16 * PAGE, 4 * PAGE, Prot::RW, MapKind::Shared, Placement::Fixed).expect("mmap");
    mm.mmap(BASE + 20 * PAGE, 8 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    for i in 0..16 {
        fill(&mm, BASE + i * PAGE, 1, i as u8 + 1);
    }
    mm
}

/// Take a snapshot and a reference fork of the same moment.
fn snap(mm: &Mm) -> (softmm::Snapshot, Mm) {
    let s = mm.snapshot().expect("snapshot");
    let reference = mm.fork().expect("fork");
    check(mm);
    (s, reference)
}

fn restored_equals(mm: &Mm, s: &softmm::Snapshot, reference: &Mm) {
    mm.restore(s).expect("restore");
    check(mm);
    assert_eq!(seen(mm), seen(reference));
    check(mm);
}

#[test]
fn restore_after_writes_and_new_faults() {
    for policy in [ForkPolicy::SharedTables, ForkPolicy::CopyTables] {
        let m = machine();
        let mm = space(&m);
        let s = mm.snapshot_with(policy).expect("snapshot");
        let reference = mm.fork().expect("fork");
        fill(&mm, BASE + 3 * PAGE, 2, 0xaa);
        fill(&mm, BASE + 21 * PAGE, 1, 0xbb); // a new page
        let mut b = [0u8; 1];
        mm.read(BASE + 25 * PAGE, &mut b).expect("read"); // a zero-frame fault
        check(&mm);
        // The written and faulted pages; a VMA's first anonymous page logs
        // its whole VMA (its anon_vma decides its merges).
        let dirty = mm.dirty_pages(BASE, BASE + 32 * PAGE).expect("dirty");
        let want: Vec<u64> = [3, 4].iter().chain(&[20, 21, 22, 23, 24, 25, 26, 27]).map(|p| BASE + p * PAGE).collect();
        assert_eq!(dirty, want);
        mm.restore(&s).expect("restore");
        assert_eq!(mm.dirty_pages(BASE, BASE + 32 * PAGE).expect("dirty"), Vec::<u64>::new());
        check(&mm);
        assert_eq!(seen(&mm), seen(&reference));
        // The restored pages share the snapshot's frames again.
        assert_eq!(mm.phys(BASE + 3 * PAGE), reference.phys(BASE + 3 * PAGE));
    }
}

#[test]
fn restore_after_munmap_mmap_mprotect() {
    let m = machine();
    let mm = space(&m);
    let (s, reference) = snap(&mm);
    mm.munmap(BASE + 2 * PAGE, 3 * PAGE).expect("munmap");
    mm.mmap(BASE + 40 * PAGE, 2 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    fill(&mm, BASE + 40 * PAGE, 2, 7);
    mm.mprotect(BASE + 8 * PAGE, 2 * PAGE, Prot::READ).expect("mprotect");
    mm.mprotect(BASE + 12 * PAGE, PAGE, Prot::NONE).expect("mprotect");
    mm.munmap(BASE + 16 * PAGE, 4 * PAGE).expect("munmap shared");
    mm.mmap(BASE + 2 * PAGE, PAGE, Prot::RW, MapKind::Shared, Placement::Fixed).expect("mmap");
    check(&mm);
    restored_equals(&mm, &s, &reference);
    assert_eq!(mm.maps().len(), 3, "{:?}", mm.maps());
}

#[test]
fn restore_after_mremap() {
    let m = machine();
    let mm = space(&m);
    let (s, reference) = snap(&mm);
    mm.mremap(BASE, 4 * PAGE, 4 * PAGE, RemapFlags::MAYMOVE.union(RemapFlags::FIXED), BASE + 64 * PAGE)
        .expect("mremap");
    mm.mremap(BASE + 20 * PAGE, 8 * PAGE, 12 * PAGE, RemapFlags::MAYMOVE, 0).expect("grow");
    check(&mm);
    restored_equals(&mm, &s, &reference);
}

#[test]
fn restore_twice_and_several_snapshots() {
    let m = machine();
    let mm = space(&m);
    let (s1, r1) = snap(&mm);
    fill(&mm, BASE, 1, 0x11);
    mm.munmap(BASE + 5 * PAGE, PAGE).expect("munmap");
    let (s2, r2) = snap(&mm);
    fill(&mm, BASE + PAGE, 1, 0x22);
    mm.mmap(BASE + 5 * PAGE, PAGE, Prot::READ, MapKind::Private, Placement::Fixed).expect("mmap");
    restored_equals(&mm, &s1, &r1);
    restored_equals(&mm, &s1, &r1);
    restored_equals(&mm, &s2, &r2);
    fill(&mm, BASE + 9 * PAGE, 1, 0x33);
    restored_equals(&mm, &s1, &r1);
    drop(s1);
    restored_equals(&mm, &s2, &r2);
}

#[test]
fn restore_after_a_fork_of_the_live_space() {
    let m = machine();
    let mm = space(&m);
    let (s, reference) = snap(&mm);
    let child = mm.fork().expect("fork");
    fill(&mm, BASE + 4 * PAGE, 1, 0x44);
    fill(&child, BASE + 4 * PAGE, 1, 0x55);
    let before = seen(&child);
    restored_equals(&mm, &s, &reference);
    assert_eq!(seen(&child), before, "the child is another space");
    drop(child);
    check(&mm);
    restored_equals(&mm, &s, &reference);
}

#[test]
fn restore_after_swap_out() {
    let m = swapping(24);
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 32 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    for i in 0..8 {
        fill(&mm, BASE + i * PAGE, 1, i as u8 + 1);
    }
    let (s, reference) = snap(&mm);
    // More pages than the limit: the snapshot's pages go to swap too.
    for i in 0..32 {
        fill(&mm, BASE + i * PAGE, 1, 0x80 + i as u8);
    }
    check(&mm);
    assert!(m.stats().swap_outs > 0, "nothing was swapped out");
    restored_equals(&mm, &s, &reference);
    for i in 0..32 {
        fill(&mm, BASE + i * PAGE, 1, 0xc0 + i as u8);
    }
    restored_equals(&mm, &s, &reference);
}

#[test]
fn a_snapshot_outlives_its_space() {
    let m = machine();
    let mm = space(&m);
    let s = mm.snapshot().expect("snapshot");
    let reference = mm.fork().expect("fork");
    let want = seen(&reference);
    drop(mm);
    check(&reference);
    let other = m.new_mm().expect("mm");
    assert!(matches!(other.restore(&s), Err(Error::Invalid(_))));
    drop(reference);
    check(&other);
    drop(s);
    check(&other);
    assert_eq!(want.maps.len(), 3);
}

#[test]
fn a_pinned_changed_page_makes_restore_busy() {
    let m = machine();
    let mm = space(&m);
    let (s, reference) = snap(&mm);
    let pin = mm.pin_pages(BASE + PAGE, PAGE, true).expect("pin");
    pin.write(BASE + PAGE, &[0x99; 8]).expect("pinned write");
    check(&mm);
    let before = seen(&mm);
    assert!(matches!(mm.restore(&s), Err(Error::Busy(_))));
    check(&mm);
    assert_eq!(seen(&mm), before, "a refused restore changes nothing");
    drop(pin);
    restored_equals(&mm, &s, &reference);
}

#[test]
fn a_page_pinned_at_the_snapshot_is_restored() {
    let m = machine();
    let mm = space(&m);
    let pin = mm.pin_pages(BASE + PAGE, PAGE, true).expect("pin");
    let (s, reference) = snap(&mm);
    // The pinner writes without a fault: the snapshot logged the page.
    pin.write(BASE + PAGE, &[0x99; 8]).expect("pinned write");
    assert!(matches!(mm.restore(&s), Err(Error::Busy(_))));
    drop(pin);
    restored_equals(&mm, &s, &reference);
}

#[test]
fn a_futex_waiter_follows_its_restored_page() {
    let m = machine();
    let mm = space(&m);
    let (s, reference) = snap(&mm);
    mm.write(BASE, &0u32.to_ne_bytes()).expect("write");
    let w = mm.futex_wait_start(BASE, 0, BITSET_MATCH_ANY).expect("wait");
    check(&mm);
    restored_equals(&mm, &s, &reference);
    // The waiter follows the page to the snapshot's frame, as across a
    // COW: a wake at the address reaches it.
    assert_eq!(mm.futex_wake(BASE, 1).expect("wake"), 1);
    assert_eq!(w.state(), WaitState::Woken);
    check(&mm);
}

#[test]
fn shared_memory_keeps_its_contents() {
    let m = machine();
    let mm = space(&m);
    let sv = BASE + 16 * PAGE;
    fill(&mm, sv, 1, 1);
    let (s, _reference) = snap(&mm);
    fill(&mm, sv, 1, 2);
    mm.restore(&s).expect("restore");
    check(&mm);
    let mut b = [0u8; 1];
    mm.read(sv, &mut b).expect("read");
    assert_eq!(b, [2], "a restore does not change shared memory");
}

#[test]
fn restore_cost_follows_the_log() {
    let m = machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 4096 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    fill(&mm, BASE, 4096, 1);
    let (s, reference) = snap(&mm);
    fill(&mm, BASE + 1000 * PAGE, 1, 2);
    assert_eq!(mm.dirty_pages(0, u64::MAX).expect("dirty"), vec![BASE + 1000 * PAGE]);
    assert_eq!(s.dirty_pages(0, u64::MAX), vec![BASE + 1000 * PAGE]);
    restored_equals(&mm, &s, &reference);
}

// ---- model: random operations with snapshots and restores ----

#[derive(Clone, Debug)]
enum Op {
    Write { page: u64, pages: u64, byte: u8 },
    Read { page: u64 },
    Munmap { page: u64, pages: u64 },
    Mmap { page: u64, pages: u64, shared: bool },
    Mprotect { page: u64, pages: u64, ro: bool },
    Remap { page: u64, to: u64 },
    Dontneed { page: u64, pages: u64 },
    Fork,
    Snapshot,
    Restore { which: usize },
}

const SPAN: u64 = 64;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SPAN, 1..4u64, any::<u8>()).prop_map(|(page, pages, byte)| Op::Write { page, pages, byte }),
        1 => (0..SPAN).prop_map(|page| Op::Read { page }),
        1 => (0..SPAN, 1..8u64).prop_map(|(page, pages)| Op::Munmap { page, pages }),
        1 => (0..SPAN, 1..8u64, any::<bool>()).prop_map(|(page, pages, shared)| Op::Mmap { page, pages, shared }),
        1 => (0..SPAN, 1..8u64, any::<bool>()).prop_map(|(page, pages, ro)| Op::Mprotect { page, pages, ro }),
        1 => (0..SPAN, 0..SPAN).prop_map(|(page, to)| Op::Remap { page, to }),
        1 => (0..SPAN, 1..8u64).prop_map(|(page, pages)| Op::Dontneed { page, pages }),
        1 => Just(Op::Fork),
        2 => Just(Op::Snapshot),
        3 => (0..4usize).prop_map(|which| Op::Restore { which }),
    ]
}

fn apply(mm: &Mm, forks: &mut Vec<Mm>, op: &Op) {
    let va = |p: u64| BASE + p * PAGE;
    // Errors (a write to read-only memory, a hole) are part of the
    // history: the space and the fork must answer them alike.
    let _ = match *op {
        Op::Write { page, pages, byte } => mm.fill(va(page), (pages * PAGE) as usize, byte),
        Op::Read { page } => mm.read(va(page), &mut [0u8; 8]),
        Op::Munmap { page, pages } => mm.munmap(va(page), pages * PAGE),
        Op::Mmap { page, pages, shared } => {
            let kind = if shared { MapKind::Shared } else { MapKind::Private };
            mm.mmap(va(page), pages * PAGE, Prot::RW, kind, Placement::Fixed).map(|_| ())
        }
        Op::Mprotect { page, pages, ro } => mm.mprotect(va(page), pages * PAGE, if ro { Prot::READ } else { Prot::RW }),
        Op::Remap { page, to } => {
            mm.mremap(va(page), PAGE, PAGE, RemapFlags::MAYMOVE.union(RemapFlags::FIXED), va(SPAN + to)).map(|_| ())
        }
        Op::Dontneed { page, pages } => mm.madvise(va(page), pages * PAGE, softmm::Advice::DontNeed),
        Op::Fork => {
            forks.push(mm.fork().expect("fork"));
            if forks.len() > 2 {
                forks.remove(0);
            }
            Ok(())
        }
        Op::Snapshot | Op::Restore { .. } => Ok(()),
    };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn restored_space_equals_the_fork_at_its_snapshot(ops in proptest::collection::vec(op(), 1..40)) {
        let m = machine();
        let mm = m.new_mm().expect("mm");
        mm.mmap(BASE, 32 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        let mut forks = Vec::new();
        // (snapshot, the fork taken with it, what it saw then)
        let mut snaps: Vec<(softmm::Snapshot, Mm)> = Vec::new();
        for op in &ops {
            match *op {
                Op::Snapshot => {
                    let s = mm.snapshot().expect("snapshot");
                    let f = mm.fork().expect("fork");
                    snaps.push((s, f));
                    if snaps.len() > 3 {
                        snaps.remove(0);
                    }
                }
                Op::Restore { which } if !snaps.is_empty() => {
                    let (s, f) = &snaps[which % snaps.len()];
                    mm.restore(s).expect("restore");
                    check(&mm);
                    prop_assert_eq!(seen(&mm), seen(f));
                }
                _ => apply(&mm, &mut forks, op),
            }
            check(&mm);
        }
        for (s, f) in &snaps {
            mm.restore(s).expect("restore");
            check(&mm);
            prop_assert_eq!(seen(&mm), seen(f));
        }
    }
}

#[test]
fn restore_puts_the_break_and_dontfork_memory_back() {
    let m = machine();
    let mm = space(&m);
    mm.set_start_brk(BASE + 128 * PAGE).expect("start_brk");
    mm.brk(BASE + 130 * PAGE).expect("brk");
    fill(&mm, BASE + 128 * PAGE, 2, 3);
    mm.madvise(BASE, 2 * PAGE, softmm::Advice::DontFork).expect("dontfork");
    let s = mm.snapshot().expect("snapshot");
    let want = seen(&mm);
    let old_brk = mm.brk(0).expect("brk");
    mm.brk(BASE + 140 * PAGE).expect("brk");
    fill(&mm, BASE + 128 * PAGE, 12, 4);
    fill(&mm, BASE, 2, 5);
    mm.restore(&s).expect("restore");
    check(&mm);
    assert_eq!(mm.brk(0).expect("brk"), old_brk);
    // A fork would not have the DONTFORK pages; a snapshot keeps them.
    assert_eq!(seen(&mm), want);
    check(&mm);
}

// ---- what a restore costs: re-shared tables, re-pointed entries ----

/// 2 MiB: one PTE table.
const TABLE: u64 = 2 << 20;

#[test]
fn a_table_unmapped_whole_is_reshared_not_copied() {
    let m = machine();
    let mm = m.new_mm().expect("mm");
    let base = 0x4000_0000;
    mm.mmap(base, 2 * TABLE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    fill(&mm, base, 2 * TABLE / PAGE, 3);
    let (s, reference) = snap(&mm);
    mm.munmap(base, 2 * TABLE).expect("munmap");
    let before = m.stats();
    restored_equals(&mm, &s, &reference);
    let after = m.stats();
    // Two tables mapped again as the snapshot's, 1,024 entries untouched.
    assert_eq!(after.table_shares - before.table_shares, 2);
    // The PMD and PUD tables the munmap freed come back; no PTE table.
    assert!(after.page_tables <= before.page_tables + 2, "the restore allocated PTE tables");
    assert_eq!(mm.phys(base), reference.phys(base));
    // Writing into a re-shared table unshares it, as after a fork.
    fill(&mm, base + PAGE, 1, 9);
    restored_equals(&mm, &s, &reference);
}

#[test]
fn a_written_page_is_repointed_alone() {
    let m = machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 512 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    fill(&mm, BASE, 512, 1);
    let (s, reference) = snap(&mm);
    // Pages 10 and 300 written, page 200 only read: a logged range from 10
    // to 300 would not be more expensive than the two pages.
    fill(&mm, BASE + 10 * PAGE, 1, 2);
    fill(&mm, BASE + 300 * PAGE, 1, 2);
    let in_use = m.stats().frames_in_use;
    restored_equals(&mm, &s, &reference);
    // The two copies are gone; nothing else was allocated.
    assert_eq!(m.stats().frames_in_use, in_use - 2);
    for p in [10, 200, 300] {
        assert_eq!(mm.phys(BASE + p * PAGE), reference.phys(BASE + p * PAGE));
    }
}

/// Two written pages on either side of a 2 MiB table boundary: one logged
/// range, cut into two spans. The second span's page must be restored
/// too (its differing run once merged into the first span's, ending where
/// it starts, and was skipped).
#[test]
fn written_pages_across_a_table_boundary_are_both_restored() {
    for policy in [ForkPolicy::SharedTables, ForkPolicy::CopyTables] {
        let m = machine();
        let mm = m.new_mm().expect("mm");
        let boundary = BASE + (2 << 20);
        mm.mmap(boundary - 4 * PAGE, 8 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        fill(&mm, boundary - 4 * PAGE, 8, 1);
        let s = mm.snapshot_with(policy).expect("snapshot");
        let reference = mm.fork().expect("fork");
        fill(&mm, boundary - PAGE, 2, 2);
        restored_equals(&mm, &s, &reference);
        // And a run of pages across the boundary after a second round.
        fill(&mm, boundary - 3 * PAGE, 6, 3);
        restored_equals(&mm, &s, &reference);
    }
}

#[test]
fn other_snapshots_log_only_the_pages_a_restore_changed() {
    let m = machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 512 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    fill(&mm, BASE, 512, 1);
    let (s1, reference) = snap(&mm);
    fill(&mm, BASE + 10 * PAGE, 1, 2);
    fill(&mm, BASE + 300 * PAGE, 1, 2);
    let s2 = mm.snapshot().expect("snapshot");
    restored_equals(&mm, &s1, &reference);
    assert_eq!(s2.dirty_pages(0, u64::MAX), [BASE + 10 * PAGE, BASE + 300 * PAGE]);
}

#[test]
fn a_restore_frees_the_tables_of_mappings_made_since() {
    let m = machine();
    let mm = space(&m);
    let (s, reference) = snap(&mm);
    let tables = m.stats().page_tables;
    let far = 0x7000_0000_0000;
    mm.mmap(far, 4 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    fill(&mm, far, 4, 7);
    assert!(m.stats().page_tables > tables);
    restored_equals(&mm, &s, &reference);
    assert_eq!(m.stats().page_tables, tables, "empty tables left after the restore");
}

#[test]
fn swap_out_does_not_dirty_the_log() {
    let m = swapping(24);
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 32 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    fill(&mm, BASE, 8, 1);
    let (s, reference) = snap(&mm);
    // More pages than the limit, written after the snapshot: the
    // snapshot's pages (0 to 7) go to swap too, unchanged.
    fill(&mm, BASE + 8 * PAGE, 24, 2);
    let swapped = (0..8).filter(|p| mm.phys(BASE + p * PAGE).is_none()).count();
    assert!(swapped > 0, "none of the snapshot's pages was swapped out");
    let written: Vec<u64> = (8..32).map(|p| BASE + p * PAGE).collect();
    assert_eq!(mm.dirty_pages(0, u64::MAX).expect("dirty"), written);
    assert_eq!(s.dirty_pages(0, u64::MAX), written);
    restored_equals(&mm, &s, &reference);
}

#[test]
fn migration_does_not_dirty_the_log() {
    let m = machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 16 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    fill(&mm, BASE, 16, 1);
    let (s, reference) = snap(&mm);
    let old = mm.phys(BASE + 2 * PAGE);
    mm.migrate(BASE + 2 * PAGE).expect("migrate");
    assert_ne!(mm.phys(BASE + 2 * PAGE), old, "the page did not move");
    assert_eq!(mm.dirty_pages(0, u64::MAX).expect("dirty"), Vec::<u64>::new());
    assert_eq!(s.dirty_pages(0, u64::MAX), Vec::<u64>::new());
    restored_equals(&mm, &s, &reference);
    assert_eq!(mm.phys(BASE + 2 * PAGE), reference.phys(BASE + 2 * PAGE));
}

// ---- dirty tracking on its own ----

#[test]
fn clear_dirty_write_protects_and_forgets() {
    let m = machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 8 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    assert_eq!(mm.dirty_pages(0, u64::MAX).unwrap_err().errno(), softmm::errno::EINVAL);
    fill(&mm, BASE, 8, 1);
    mm.clear_dirty(BASE, BASE + 8 * PAGE).expect("clear");
    assert_eq!(mm.dirty_pages(0, u64::MAX).expect("dirty"), Vec::<u64>::new());
    // Writes through an accessor that cached writable translations before.
    let mut acc = mm.accessor();
    acc.write(BASE + 2 * PAGE, &[5]).expect("write");
    acc.write(BASE + 6 * PAGE, &[5]).expect("write");
    check(&mm);
    assert_eq!(mm.dirty_pages(0, u64::MAX).expect("dirty"), [BASE + 2 * PAGE, BASE + 6 * PAGE]);
    // A part of the range.
    mm.clear_dirty(BASE + 4 * PAGE, BASE + 8 * PAGE).expect("clear");
    assert_eq!(mm.dirty_pages(0, u64::MAX).expect("dirty"), [BASE + 2 * PAGE]);
    acc.write(BASE + 7 * PAGE, &[5]).expect("write");
    assert_eq!(mm.dirty_pages(BASE + 3 * PAGE, u64::MAX).expect("dirty"), [BASE + 7 * PAGE]);
    assert_eq!(mm.clear_dirty(BASE + 1, BASE + PAGE).unwrap_err().errno(), softmm::errno::EINVAL);
    mm.clear_dirty(BASE, BASE).expect("an empty range");
    check(&mm);
}

#[test]
fn clear_dirty_leaves_the_restore_log_alone() {
    let m = machine();
    let mm = space(&m);
    let (s, reference) = snap(&mm);
    fill(&mm, BASE + 3 * PAGE, 2, 0x55);
    mm.clear_dirty(0, !0xfff).expect("clear");
    assert_eq!(mm.dirty_pages(0, u64::MAX).expect("dirty"), Vec::<u64>::new());
    assert_eq!(s.dirty_pages(0, u64::MAX), [BASE + 3 * PAGE, BASE + 4 * PAGE]);
    restored_equals(&mm, &s, &reference);
}

/// Pages read-pinned at the snapshot are the snapshot's own copies (fork
/// copies pinned pages); reclaim swaps those copies out, and a restore
/// after the unpin gives the space their swap entries. The frames they
/// come back in must reach the space through its anon_vmas (the audit's
/// rule), as a child's swap-ins reach it after a fork.
#[test]
fn restore_of_swapped_copies_of_pages_pinned_at_the_snapshot() {
    for accessors in [0, 8] {
        let m = Machine::new(Config {
            arena_bytes: 32 << 20,
            swap: SwapConfig::Device(Arc::new(MemSwap::new(16 << 20).expect("mem swap"))),
            ..Config::default()
        })
        .unwrap();
        let mm = m.new_mm().unwrap();
        mm.mmap(BASE + 4 * PAGE, 8 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        let pin = mm.pin_pages(BASE + 4 * PAGE, 3 * PAGE, false).unwrap();
        let snap = mm.snapshot().unwrap();
        m.reclaim(3);
        check(&mm);
        let accs: Vec<_> = (0..accessors).map(|_| mm.accessor()).collect();
        drop(pin);
        drop(accs);
        let _acc = mm.accessor();
        mm.restore(&snap).unwrap();
        check(&mm);
        let mut b = [1u8; 1];
        for i in 4..7 {
            mm.read(BASE + i * PAGE, &mut b).unwrap();
            assert_eq!(b[0], 0);
        }
        check(&mm);
    }
}
