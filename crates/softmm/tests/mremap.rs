//! mremap through the API: Linux's argument checks and errnos, shrinking
//! and growing in place, moves (MAYMOVE, FIXED, DONTUNMAP) that move
//! page-table entries rather than pages, and what must follow a moved
//! page: reclaim, swap-in, migration and the reverse map across a fork.
//! The invariant audit runs after every step.

mod common;

use common::{check, map, read};
use softmm::reclaim::device::MemSwap;
use softmm::{errno, Config, ForkPolicy, Machine, MapKind, Mm, Prot, RemapFlags, SwapConfig};
use std::sync::Arc;

const BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
const MAYMOVE: RemapFlags = RemapFlags::MAYMOVE;

fn swapping() -> Machine {
    let swap = Arc::new(MemSwap::new(16 << 20).expect("swap"));
    Machine::new(Config { arena_bytes: 32 << 20, swap: SwapConfig::Device(swap), ..Config::default() })
        .expect("machine")
}

/// Move `[at, at + len)` to a far, free address (equal lengths without
/// `FIXED` leave a mapping where it is, as in Linux).
fn move_away(mm: &Mm, at: u64, len: u64) -> u64 {
    let to = at + (1 << 32);
    assert_eq!(mm.mremap(at, len, len, MAYMOVE.union(RemapFlags::FIXED), to).unwrap(), to);
    to
}

fn errno_of(r: softmm::Result<u64>) -> i32 {
    r.expect_err("mremap should fail").errno()
}

/// `n` pages at `at`, page `i` filled with byte `i + 1` (mod 256).
fn filled(mm: &Mm, at: u64, n: u64) {
    for i in 0..n {
        mm.fill(at + i * PAGE, PAGE as usize, (i as u8).wrapping_add(1)).unwrap();
    }
}

fn assert_filled(mm: &Mm, at: u64, n: u64) {
    for i in 0..n {
        assert_eq!(read(mm, at + i * PAGE, 2), [(i as u8).wrapping_add(1); 2], "page {i} at {:#x}", at + i * PAGE);
    }
}

#[test]
fn bad_arguments_get_linux_errnos_and_change_nothing() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Private);
    map(&mm, BASE + 4 * PAGE, PAGE, Prot::READ, MapKind::Private);
    filled(&mm, BASE, 4);
    let before = common::Snapshot::take(&mm);
    let e = |r| errno_of(r);
    assert_eq!(e(mm.mremap(BASE, PAGE, PAGE, RemapFlags::FIXED, 0x1000_0000)), errno::EINVAL);
    assert_eq!(e(mm.mremap(BASE, PAGE, 2 * PAGE, MAYMOVE.union(RemapFlags::DONTUNMAP), 0)), errno::EINVAL);
    assert_eq!(e(mm.mremap(BASE, PAGE, PAGE, RemapFlags::DONTUNMAP, 0)), errno::EINVAL);
    assert_eq!(e(mm.mremap(BASE + 1, PAGE, PAGE, RemapFlags::NONE, 0)), errno::EINVAL);
    assert_eq!(e(mm.mremap(BASE, PAGE, 0, RemapFlags::NONE, 0)), errno::EINVAL);
    assert_eq!(e(mm.mremap(BASE, PAGE, u64::MAX, MAYMOVE, 0)), errno::EINVAL);
    assert_eq!(e(mm.mremap(BASE - PAGE, PAGE, 2 * PAGE, MAYMOVE, 0)), errno::EFAULT);
    // The old range leaves its VMA.
    assert_eq!(e(mm.mremap(BASE, 5 * PAGE, 6 * PAGE, MAYMOVE, 0)), errno::EFAULT);
    // A private mapping cannot be duplicated.
    assert_eq!(e(mm.mremap(BASE, 0, PAGE, MAYMOVE, 0)), errno::EINVAL);
    // Cannot grow into the next mapping and may not move.
    assert_eq!(e(mm.mremap(BASE, 4 * PAGE, 5 * PAGE, RemapFlags::NONE, 0)), errno::ENOMEM);
    // Fixed ranges that overlap, or leave the address space, or misaligned.
    let fixed = MAYMOVE.union(RemapFlags::FIXED);
    assert_eq!(e(mm.mremap(BASE, 2 * PAGE, 2 * PAGE, fixed, BASE + PAGE)), errno::EINVAL);
    assert_eq!(e(mm.mremap(BASE, PAGE, PAGE, fixed, BASE + 17)), errno::EINVAL);
    assert_eq!(e(mm.mremap(BASE, PAGE, 2 * PAGE, fixed, softmm::TASK_SIZE - PAGE)), errno::EINVAL);
    common::assert_unchanged(&mm, &before, "failed mremap");
}

#[test]
fn shrink_unmaps_the_tail_and_keeps_the_rest() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 8 * PAGE, Prot::RW, MapKind::Private);
    filled(&mm, BASE, 8);
    assert_eq!(mm.mremap(BASE, 8 * PAGE, 3 * PAGE + 1, RemapFlags::NONE, 0).unwrap(), BASE);
    check(&mm);
    assert_filled(&mm, BASE, 4);
    assert!(mm.read(BASE + 4 * PAGE, &mut [0]).is_err(), "the tail is still mapped");
    assert_eq!(mm.mappings().len(), 1);
}

#[test]
fn grow_in_place_when_the_next_range_is_free_merging_with_a_compatible_next() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 2 * PAGE, Prot::RW, MapKind::Private);
    filled(&mm, BASE, 2);
    map(&mm, BASE + 4 * PAGE, 2 * PAGE, Prot::RW, MapKind::Private);
    assert_eq!(mm.mremap(BASE, 2 * PAGE, 4 * PAGE, RemapFlags::NONE, 0).unwrap(), BASE);
    check(&mm);
    assert_filled(&mm, BASE, 2);
    assert_eq!(read(&mm, BASE + 3 * PAGE, 1), [0]);
    let maps = mm.mappings();
    assert_eq!(maps.len(), 1, "{maps:?}");
    assert_eq!(maps[0].range, BASE..BASE + 6 * PAGE);
}

#[test]
fn maymove_moves_entries_not_pages() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Private);
    map(&mm, BASE + 4 * PAGE, PAGE, Prot::READ, MapKind::Private);
    filled(&mm, BASE, 4);
    let frames: Vec<_> = (0..4).map(|i| mm.phys(BASE + i * PAGE)).collect();
    let pages = |m: &Machine| m.stats().frames_in_use - m.stats().page_tables;
    let used = pages(&m);
    let new = mm.mremap(BASE, 4 * PAGE, 8 * PAGE, MAYMOVE, 0).unwrap();
    assert_ne!(new, BASE);
    check(&mm);
    let moved: Vec<_> = (0..4).map(|i| mm.phys(new + i * PAGE)).collect();
    assert_eq!(frames, moved, "pages were copied, not moved");
    assert_eq!(pages(&m), used);
    assert_filled(&mm, new, 4);
    assert_eq!(read(&mm, new + 7 * PAGE, 1), [0]);
    assert!(mm.read(BASE, &mut [0]).is_err(), "the old range is still mapped");
    // Writes at the new place stay there (the entries are its own).
    mm.write(new, b"new").unwrap();
    assert_eq!(read(&mm, new, 3), b"new");
    check(&mm);
}

#[test]
fn fixed_unmaps_the_target_and_part_of_a_mapping_moves() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Private);
    filled(&mm, BASE, 4);
    let to = BASE + (64 << 20);
    map(&mm, to, 8 * PAGE, Prot::READ, MapKind::Shared);
    let fixed = MAYMOVE.union(RemapFlags::FIXED);
    // The middle two pages move; the mapping splits around the hole.
    assert_eq!(mm.mremap(BASE + PAGE, 2 * PAGE, 2 * PAGE, fixed, to + PAGE).unwrap(), to + PAGE);
    check(&mm);
    assert_eq!(read(&mm, to + PAGE, 1), [2]);
    assert_eq!(read(&mm, to + 2 * PAGE, 1), [3]);
    assert_eq!(read(&mm, BASE, 1), [1]);
    assert_eq!(read(&mm, BASE + 3 * PAGE, 1), [4]);
    assert!(mm.read(BASE + PAGE, &mut [0]).is_err());
    // The rest of the shared target is still there, read-only.
    assert_eq!(read(&mm, to, 1), [0]);
    assert!(mm.write(to + PAGE, b"x").is_ok(), "the moved private range is writable");
    check(&mm);
}

#[test]
fn dontunmap_leaves_the_old_range_mapped_and_empty() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Private);
    filled(&mm, BASE, 4);
    let new = mm.mremap(BASE, 4 * PAGE, 4 * PAGE, MAYMOVE.union(RemapFlags::DONTUNMAP), 0).unwrap();
    check(&mm);
    assert_filled(&mm, new, 4);
    assert_eq!(read(&mm, BASE, 4), [0; 4], "the old range keeps its pages");
    mm.write(BASE, b"old").unwrap();
    assert_eq!(read(&mm, new, 1), [1]);
    check(&mm);
}

#[test]
fn shared_memory_moves_and_stays_shared() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Shared);
    filled(&mm, BASE, 4);
    let child = mm.fork().unwrap();
    let new = move_away(&mm, BASE, 4 * PAGE);
    check(&mm);
    check(&child);
    mm.write(new, b"seen").unwrap();
    assert_eq!(read(&child, BASE, 4), b"seen");
    for i in 1..4 {
        assert_eq!(read(&mm, new + i * PAGE, 1), [i as u8 + 1]);
    }
}

#[test]
fn moved_pages_are_found_by_reclaim_swap_in_and_migration() {
    let m = swapping();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 8 * PAGE, Prot::RW, MapKind::Private);
    filled(&mm, BASE, 8);
    let new = move_away(&mm, BASE, 8 * PAGE);
    // A new mapping at the old address, whose offsets are the moved ones'.
    map(&mm, BASE, 8 * PAGE, Prot::RW, MapKind::Private);
    mm.fill(BASE, PAGE as usize, 0xee).unwrap();
    check(&mm);
    let before = mm.phys(new + PAGE).unwrap();
    let after = mm.migrate(new + PAGE).unwrap();
    assert_ne!(before, after);
    assert_eq!(mm.phys(new + PAGE), Some(after));
    assert_filled(&mm, new, 8);
    check(&mm);
    let used = m.stats().frames_in_use;
    while m.reclaim(1024) > 0 {}
    check(&mm);
    assert!(m.stats().frames_in_use < used, "reclaim freed nothing");
    assert_eq!(mm.phys(new), None, "the moved page was not reclaimed");
    assert_filled(&mm, new, 8);
    assert_eq!(read(&mm, BASE, 1), [0xee]);
    check(&mm);
}

#[test]
fn a_move_in_a_fork_child_keeps_both_spaces_reclaimable() {
    let m = swapping();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 4 * PAGE, Prot::RW, MapKind::Private);
    filled(&mm, BASE, 4);
    let child = mm.fork().unwrap();
    let new = move_away(&child, BASE, 4 * PAGE);
    check(&mm);
    check(&child);
    // Parent and child share each frame, at different addresses.
    assert_eq!(mm.phys(BASE), child.phys(new));
    while m.reclaim(1024) > 0 {}
    check(&mm);
    check(&child);
    assert_eq!(child.phys(new), None, "the child's moved mapping was missed by reclaim");
    assert_filled(&mm, BASE, 4);
    assert_filled(&child, new, 4);
    // A grandchild of the moved space still finds the pages.
    let grand = child.fork().unwrap();
    let again = grand.mremap(new, 4 * PAGE, 4 * PAGE, MAYMOVE.union(RemapFlags::FIXED), BASE + (1 << 30)).unwrap();
    assert_eq!(again, BASE + (1 << 30));
    while m.reclaim(1024) > 0 {}
    check(&grand);
    assert_filled(&grand, again, 4);
    assert_filled(&child, new, 4);
}

#[test]
fn a_pinned_page_moves_with_its_entry_and_stays_pinned() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 2 * PAGE, Prot::RW, MapKind::Private);
    filled(&mm, BASE, 2);
    let f = mm.phys(BASE);
    let pins = mm.pin_pages(BASE, PAGE, true).unwrap();
    let new = move_away(&mm, BASE, 2 * PAGE);
    check(&mm);
    assert_eq!(mm.phys(new), f);
    drop(pins);
    check(&mm);
    assert_filled(&mm, new, 2);
}

#[test]
fn a_locked_mapping_that_grows_is_populated() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 2 * PAGE, Prot::RW, MapKind::Private);
    mm.mlock(BASE, 2 * PAGE).unwrap();
    mm.mremap(BASE, 2 * PAGE, 4 * PAGE, RemapFlags::NONE, 0).unwrap();
    check(&mm);
    assert!(mm.phys(BASE + 3 * PAGE).is_some(), "the grown part of a locked mapping is not populated");
}

#[test]
fn a_move_across_page_tables_and_within_one() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    // 3 MiB from an odd place, to an odd place: every step crosses a table.
    let n = 768;
    map(&mm, BASE + 5 * PAGE, n * PAGE, Prot::RW, MapKind::Private);
    filled(&mm, BASE + 5 * PAGE, n);
    let to = BASE + (256 << 20) + 77 * PAGE;
    let fixed = MAYMOVE.union(RemapFlags::FIXED);
    assert_eq!(mm.mremap(BASE + 5 * PAGE, n * PAGE, n * PAGE, fixed, to).unwrap(), to);
    check(&mm);
    assert_filled(&mm, to, n);
    // Within one table: 4 pages 16 pages further.
    let small = BASE + (512 << 20);
    map(&mm, small, 4 * PAGE, Prot::RW, MapKind::Private);
    filled(&mm, small, 4);
    assert_eq!(mm.mremap(small, 4 * PAGE, 4 * PAGE, fixed, small + 16 * PAGE).unwrap(), small + 16 * PAGE);
    check(&mm);
    assert_filled(&mm, small + 16 * PAGE, 4);
}

#[test]
fn a_move_out_of_tables_shared_by_fork_leaves_the_other_space_alone() {
    let m = swapping();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 16 * PAGE, Prot::RW, MapKind::Private);
    filled(&mm, BASE, 16);
    let child = mm.fork_with(ForkPolicy::SharedTables).unwrap();
    let grand = child.fork_with(ForkPolicy::SharedTables).unwrap();
    // The middle of the child's range moves: its tables are unshared first.
    let fixed = MAYMOVE.union(RemapFlags::FIXED);
    let to = BASE + (3 << 30) + 3 * PAGE;
    assert_eq!(child.mremap(BASE + 4 * PAGE, 8 * PAGE, 8 * PAGE, fixed, to).unwrap(), to);
    for s in [&mm, &child, &grand] {
        check(s);
    }
    assert_filled(&mm, BASE, 16);
    assert_filled(&grand, BASE, 16);
    for i in 0..8 {
        assert_eq!(read(&child, to + i * PAGE, 1), [i as u8 + 5]);
    }
    assert!(child.read(BASE + 4 * PAGE, &mut [0]).is_err());
    // Writes after the move are each space's own.
    child.write(to, b"c").unwrap();
    assert_eq!(read(&mm, BASE + 4 * PAGE, 1), [5]);
    assert_eq!(read(&grand, BASE + 4 * PAGE, 1), [5]);
    while m.reclaim(1024) > 0 {}
    for s in [&mm, &child, &grand] {
        check(s);
    }
    assert_eq!(read(&child, to, 1), b"c");
    assert_eq!(read(&child, to + PAGE, 1), [6]);
    assert_filled(&mm, BASE, 16);
    assert_filled(&grand, BASE, 16);
}

#[test]
fn a_futex_waiter_on_a_moved_page_is_woken_through_the_new_address() {
    use softmm::futex::{WaitState, BITSET_MATCH_ANY};
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 2 * PAGE, Prot::RW, MapKind::Private);
    mm.write(BASE + 8, &0u32.to_ne_bytes()).unwrap();
    let waiter = mm.futex_wait_start(BASE + 8, 0, BITSET_MATCH_ANY).unwrap();
    let new = move_away(&mm, BASE, 2 * PAGE);
    check(&mm);
    assert_eq!(mm.futex_wake(new + 8, 1).unwrap(), 1);
    assert_eq!(waiter.state(), WaitState::Woken);
    waiter.wait(None).unwrap();
    check(&mm);
}

/// A physical-key waiter keeps following its page after the page moves:
/// a fork, then a write of the moved page by the waiter's space (which
/// copies it), must take the waiter to the copy, as for a page never
/// moved. A wake through the new address then reaches it, one through
/// the child's (the old frame) does not. Entry by entry, and with the
/// whole PTE table moved by its PMD entry (2 MiB, aligned).
#[test]
fn a_futex_waiter_follows_its_moved_page_through_a_later_cow() {
    for len in [2 * PAGE, TABLE] {
        waiter_follows_moved_page(len);
    }
}

fn waiter_follows_moved_page(len: u64) {
    use softmm::futex::{WaitState, BITSET_MATCH_ANY};
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, len, Prot::RW, MapKind::Private);
    mm.write(BASE + 8, &0u32.to_ne_bytes()).unwrap();
    let waiter = mm.futex_wait_start(BASE + 8, 0, BITSET_MATCH_ANY).unwrap();
    let new = move_away(&mm, BASE, len);
    assert_eq!(m.stats().tables_moved, u64::from(len == TABLE));
    check(&mm);
    let child = mm.fork().unwrap();
    mm.write(new + 16, b"x").unwrap(); // COW: the parent's page gets a copy
    check(&mm);
    check(&child);
    assert_eq!(child.futex_wake(new + 8, 1).unwrap(), 0, "the waiter stayed on the child's frame");
    assert_eq!(mm.futex_wake(new + 8, 1).unwrap(), 1);
    assert_eq!(waiter.state(), WaitState::Woken);
    waiter.wait(None).unwrap();
    check(&mm);
    check(&child);
}

/// A waiter on an untouched read-only page (the zero frame, keyed by
/// space and address in physical mode) follows the page's address.
#[test]
fn a_futex_waiter_on_a_moved_zero_page_is_woken_through_the_new_address() {
    use softmm::futex::{WaitState, BITSET_MATCH_ANY};
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 2 * PAGE, Prot::READ, MapKind::Private);
    let waiter = mm.futex_wait_start(BASE + 8, 0, BITSET_MATCH_ANY).unwrap();
    let new = move_away(&mm, BASE, 2 * PAGE);
    check(&mm);
    assert_eq!(mm.futex_wake(new + 8, 1).unwrap(), 1);
    assert_eq!(waiter.state(), WaitState::Woken);
    waiter.wait(None).unwrap();
    check(&mm);
}

/// Linux keys a private futex by `(mm, address)`: mremap leaves a waiter
/// on the old address's key, so a wake through the new address misses it
/// and a wake through the old address (once mapped again) reaches it.
#[test]
fn a_linux_key_waiter_stays_on_the_old_address_of_a_moved_page() {
    use softmm::futex::{FutexKeys, WaitState, BITSET_MATCH_ANY};
    let m = Machine::new(Config { arena_bytes: 64 << 20, futex_keys: FutexKeys::Linux, ..Config::default() })
        .expect("machine");
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 2 * PAGE, Prot::RW, MapKind::Private);
    mm.write(BASE + 8, &0u32.to_ne_bytes()).unwrap();
    let waiter = mm.futex_wait_start(BASE + 8, 0, BITSET_MATCH_ANY).unwrap();
    let new = move_away(&mm, BASE, 2 * PAGE);
    let child = mm.fork().unwrap();
    mm.write(new + 16, b"x").unwrap();
    check(&mm);
    assert_eq!(mm.futex_wake(new + 8, 1).unwrap(), 0);
    assert_eq!(child.futex_wake(new + 8, 1).unwrap(), 0);
    assert_eq!(waiter.state(), WaitState::Waiting);
    assert_eq!(mm.futex_wake(BASE + 8, 1).map_err(|e| e.errno()), Err(errno::EFAULT));
    map(&mm, BASE, PAGE, Prot::RW, MapKind::Private);
    assert_eq!(mm.futex_wake(BASE + 8, 1).unwrap(), 1);
    assert_eq!(waiter.state(), WaitState::Woken);
    waiter.wait(None).unwrap();
    check(&mm);
}

#[test]
fn fixed_moves_every_mapping_of_the_range_keeping_gaps() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, 2 * PAGE, Prot::RW, MapKind::Private);
    map(&mm, BASE + 3 * PAGE, PAGE, Prot::READ, MapKind::Shared);
    filled(&mm, BASE, 2);
    let to = BASE + (1 << 30);
    map(&mm, to + 2 * PAGE, PAGE, Prot::RW, MapKind::Private);
    mm.fill(to + 2 * PAGE, PAGE as usize, 0x77).unwrap();
    let fixed = MAYMOVE.union(RemapFlags::FIXED);
    assert_eq!(mm.mremap(BASE + PAGE, 3 * PAGE, 3 * PAGE, fixed, to + PAGE).unwrap(), to + PAGE);
    check(&mm);
    assert_eq!(read(&mm, to + PAGE, 1), [2]);
    assert_eq!(read(&mm, to + 2 * PAGE, 1), [0x77], "the page facing the gap was unmapped");
    assert_eq!(read(&mm, to + 3 * PAGE, 1), [0]);
    assert_eq!(read(&mm, BASE, 1), [1]);
    assert!(mm.read(BASE + PAGE, &mut [0]).is_err());
    // A gap at the start is EFAULT; with DONTUNMAP the old range stays,
    // and a range ending inside a mapping moves only its part.
    assert_eq!(errno_of(mm.mremap(BASE + PAGE, PAGE, PAGE, fixed, to + (8 << 20))), errno::EFAULT);
    let keep = fixed.union(RemapFlags::DONTUNMAP);
    assert_eq!(mm.mremap(BASE, PAGE, PAGE, keep, to + (8 << 20)).unwrap(), to + (8 << 20));
    check(&mm);
    assert_eq!(read(&mm, to + (8 << 20), 1), [1]);
    assert_eq!(read(&mm, BASE, 1), [0]);
}

/// 2 MiB in pages.
const TABLE_PAGES: u64 = 512;
const TABLE: u64 = TABLE_PAGES * PAGE;

#[test]
fn aligned_moves_take_whole_tables_and_everything_follows() {
    let m = swapping();
    let mm = m.new_mm().unwrap();
    // Two whole tables and a piece of a third: the piece moves by entries.
    let len = 2 * TABLE + 8 * PAGE;
    map(&mm, BASE, len, Prot::RW, MapKind::Private);
    // Sparse writes: the arena is small; every written page is checked.
    for i in (0..len / PAGE).step_by(64) {
        mm.fill(BASE + i * PAGE, 16, i as u8 + 1).unwrap();
    }
    let frame = mm.phys(BASE + 64 * PAGE);
    let to = BASE + (1 << 32) + TABLE;
    assert_eq!(mm.mremap(BASE, len, len, MAYMOVE.union(RemapFlags::FIXED), to).unwrap(), to);
    check(&mm);
    assert_eq!(m.stats().tables_moved, 2, "the two whole 2 MiB tables should move by their PMD entry");
    assert_eq!(mm.phys(to + 64 * PAGE), frame, "a page was copied, not moved");
    assert!(mm.read(BASE, &mut [0]).is_err(), "the old range is still mapped");
    let sparse = |mm: &Mm, at: u64| {
        for i in (0..len / PAGE).step_by(64) {
            assert_eq!(read(mm, at + i * PAGE, 16), [i as u8 + 1; 16], "page {i}");
        }
    };
    sparse(&mm, to);
    // The reverse map finds the moved pages: reclaim, swap-in, fork, COW.
    while m.reclaim(1024) > 0 {}
    check(&mm);
    assert_eq!(mm.phys(to), None);
    sparse(&mm, to);
    let child = mm.fork().unwrap();
    child.write(to + PAGE, b"c").unwrap();
    check(&mm);
    check(&child);
    assert_eq!(read(&mm, to + PAGE, 1), [0]);
    // And back. The first table, which the child left when it wrote (its
    // copy is its own), is the parent's alone again and moves whole; the
    // second is still shared, so the parent's copy of it borrows and moves
    // entry by entry.
    assert_eq!(mm.mremap(to, len, len, MAYMOVE.union(RemapFlags::FIXED), BASE).unwrap(), BASE);
    check(&mm);
    check(&child);
    assert_eq!(m.stats().tables_moved, 3);
    sparse(&mm, BASE);
    sparse(&child, to);
}

#[test]
fn tables_shared_by_fork_move_entry_by_entry() {
    let m = common::machine();
    let mm = m.new_mm().unwrap();
    map(&mm, BASE, TABLE, Prot::RW, MapKind::Private);
    filled(&mm, BASE, 4);
    // Shared with a child: unshared first (the copy borrows), so the
    // table moves entry by entry and the child keeps its view.
    let child = mm.fork_with(ForkPolicy::SharedTables).unwrap();
    let to = BASE + (1 << 33);
    assert_eq!(mm.mremap(BASE, TABLE, TABLE, MAYMOVE.union(RemapFlags::FIXED), to).unwrap(), to);
    check(&mm);
    check(&child);
    assert_eq!(m.stats().tables_moved, 0);
    assert_filled(&mm, to, 4);
    assert_filled(&child, BASE, 4);
}

/// A region moved in one space and then forked with shared tables: the
/// frames are mapped at the old address in the first space and, through a
/// shared table, at the new address in two others. Every space's smaps
/// counts all three mappings (PSS a third of a page each), as with copied
/// tables and on Linux.
#[test]
fn smaps_counts_shared_table_mappers_at_another_address() {
    let pss_of = |policy: ForkPolicy| {
        let m = Machine::new(Config { arena_bytes: 32 << 20, ..Config::default() }).unwrap();
        let a = m.new_mm().unwrap();
        map(&a, BASE, 6 * PAGE, Prot::RW, MapKind::Private);
        filled(&a, BASE, 6);
        let b = a.fork_with(policy).unwrap();
        let to = move_away(&b, BASE, 6 * PAGE);
        let c = b.fork_with(policy).unwrap();
        for mm in [&a, &b, &c] {
            check(mm);
        }
        [a.smaps(BASE).unwrap(), b.smaps(to).unwrap(), c.smaps(to).unwrap()].map(|s| (s.rss, s.pss, s.shared_dirty))
    };
    let copied = pss_of(ForkPolicy::CopyTables);
    // 6 pages of 4 kB, each mapped by three spaces: a third of 24 kB,
    // which Linux's fixed-point sum rounds down to 7 kB.
    assert_eq!(copied, [(24, 7, 24); 3]);
    assert_eq!(pss_of(ForkPolicy::SharedTables), copied);
}
