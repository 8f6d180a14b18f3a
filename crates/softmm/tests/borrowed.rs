//! Borrowed entries (`pgtable/borrow.rs`) at every place that must know
//! them. After a fork with shared tables, a space that writes into a
//! shared table copies it, and the copy *borrows* its frames from the
//! shared table instead of referencing each one. Each test runs one
//! history twice, with `SharedTables` and with `CopyTables` forks, and
//! requires the same contents, the same sharing of frames between spaces
//! and the same smaps figures, with the machine audit (which checks every
//! borrowed entry against its backing) after every step.

mod common;

use common::check;
use softmm::reclaim::device::MemSwap;
use softmm::{Advice, Config, ForkPolicy, Machine, MapKind, Mm, Placement, Prot, Smaps, SwapConfig};
use std::sync::Arc;

const BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
/// Two PTE tables of private memory.
const PAGES: u64 = 1024;

fn machine() -> Machine {
    let swap = Arc::new(MemSwap::new(64 << 20).expect("mem swap"));
    Machine::new(Config {
        arena_bytes: 128 << 20,
        swap: SwapConfig::Device(swap),
        cpu_caches: 1,
        prezero: false,
        ..Config::default()
    })
    .expect("machine")
}

fn pattern(tag: u8, page: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&(page as u32).to_le_bytes());
    b[4] = tag;
    b
}

/// A parent with every page written (tag 1).
fn parent(m: &Machine) -> Mm {
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, PAGES * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    for p in 0..PAGES {
        mm.write(BASE + p * PAGE, &pattern(1, p)).expect("write");
    }
    mm
}

/// What users can see of a set of spaces: every page's bytes, which pages
/// share a frame with which (as classes: the first space and page that
/// showed the frame), and smaps.
#[derive(Debug, PartialEq, Eq)]
struct View {
    bytes: Vec<Vec<[u8; 8]>>,
    classes: Vec<Vec<Option<(usize, u64)>>>,
    smaps: Vec<Vec<Smaps>>,
}

fn view(spaces: &[&Mm]) -> View {
    let mut first = std::collections::HashMap::new();
    let mut v = View { bytes: Vec::new(), classes: Vec::new(), smaps: Vec::new() };
    for (i, mm) in spaces.iter().enumerate() {
        check(mm);
        let (mut bytes, mut classes) = (Vec::new(), Vec::new());
        for p in 0..PAGES {
            let va = BASE + p * PAGE;
            classes.push(mm.phys(va).map(|f| *first.entry(f).or_insert((i, p))));
            let mut b = [0u8; 8];
            if mm.read(va, &mut b).is_ok() {
                bytes.push(b);
            }
        }
        v.bytes.push(bytes);
        v.classes.push(classes);
        v.smaps.push(mm.smaps_all());
    }
    v
}

/// Run `history` under both fork policies; every view it takes must agree.
fn both(history: impl Fn(&Machine, ForkPolicy, &mut Vec<View>)) {
    let mut views = Vec::new();
    for policy in [ForkPolicy::SharedTables, ForkPolicy::CopyTables] {
        let m = machine();
        let mut got = Vec::new();
        history(&m, policy, &mut got);
        views.push((policy, got, m.stats().table_copies));
    }
    let (_, shared, copies) = &views[0];
    let (_, copied, _) = &views[1];
    assert!(*copies > 0, "the shared run copied no table: nothing was borrowed");
    assert_eq!(shared.len(), copied.len());
    for (k, (a, b)) in shared.iter().zip(copied).enumerate() {
        if a != b {
            panic!("view {k}: SharedTables differs from CopyTables: {}", first_difference(a, b));
        }
    }
}

/// The first place two views differ, briefly (a whole view is huge).
fn first_difference(a: &View, b: &View) -> String {
    for (i, (x, y)) in a.bytes.iter().zip(&b.bytes).enumerate() {
        if let Some(p) = (0..x.len().min(y.len())).find(|&p| x[p] != y[p]) {
            return format!("space {i} page {p}: bytes {:?} vs {:?}", x[p], y[p]);
        }
    }
    for (i, (x, y)) in a.classes.iter().zip(&b.classes).enumerate() {
        if let Some(p) = (0..x.len()).find(|&p| x[p] != y[p]) {
            return format!("space {i} page {p}: frame class {:?} vs {:?}", x[p], y[p]);
        }
    }
    format!("smaps {:?} vs {:?}", a.smaps, b.smaps)
}

/// Chains: a copy that borrows is shared by a later fork and copied again
/// (the new copy borrows from the first copy, which keeps the original
/// alive); the original's last mapper leaves while both borrow.
#[test]
fn chains_of_borrowers_look_like_copied_tables() {
    both(|m, policy, views| {
        let parent = parent(m);
        let child = parent.fork_with(policy).expect("fork");
        parent.write(BASE, &pattern(2, 0)).expect("write"); // parent's copy borrows
        views.push(view(&[&parent, &child]));
        let grand = parent.fork_with(policy).expect("fork"); // shares the borrowing copy
        grand.write(BASE + 3 * PAGE, &pattern(3, 3)).expect("write"); // borrows from the copy
        child.write(BASE + 600 * PAGE, &pattern(4, 600)).expect("write");
        views.push(view(&[&parent, &child, &grand]));
        drop(child); // the original table's last mapper owns its borrowers out
        views.push(view(&[&parent, &grand]));
        drop(parent);
        views.push(view(&[&grand]));
        drop(grand);
        assert_eq!((m.stats().frames_in_use, m.stats().page_tables), (0, 0));
    });
}

/// Reclaim swaps out frames mapped through a shared table and borrowed by
/// copies; each borrowed entry is owned before it becomes a swap entry.
#[test]
fn reclaim_owns_borrowed_entries_before_swapping_them_out() {
    both(|m, policy, views| {
        let parent = parent(m);
        let child = parent.fork_with(policy).expect("fork");
        parent.write(BASE + 5 * PAGE, &pattern(2, 5)).expect("write");
        // Which pages one round takes depends on accessed bits, which the
        // two policies leave differently (as fork and a copy may on
        // Linux); rounds until nothing is left must take every page.
        let resident = |mm: &Mm| (0..PAGES).filter(|p| mm.phys(BASE + p * PAGE).is_some()).count();
        for _ in 0..8 {
            m.reclaim(PAGES as usize * 4);
            check(&parent);
        }
        assert_eq!((resident(&parent), resident(&child)), (0, 0), "pages left after reclaim");
        // Contents come back, and writes after swap-in still copy.
        child.write(BASE + 7 * PAGE, &pattern(3, 7)).expect("write");
        views.push(view(&[&parent, &child]));
    });
}

/// Migration of a frame that copies borrow moves every mapping of it.
#[test]
fn migration_repoints_borrowers_and_backing_alike() {
    both(|m, policy, views| {
        let parent = parent(m);
        let child = parent.fork_with(policy).expect("fork");
        parent.write(BASE, &pattern(2, 0)).expect("write");
        let va = BASE + 9 * PAGE;
        let old = parent.phys(va);
        let new = parent.migrate(va).expect("migrate");
        assert_ne!(Some(new), old);
        assert_eq!((parent.phys(va), child.phys(va)), (Some(new), Some(new)));
        views.push(view(&[&parent, &child]));
    });
}

/// A pin through a borrowed entry gets the space its own copy first; a
/// fork with copied tables of a space whose copy borrows owns what it
/// copies; mprotect never makes a borrowed entry writable.
#[test]
fn pins_copied_forks_and_mprotect_over_borrowed_entries() {
    both(|m, policy, views| {
        let parent = parent(m);
        let child = parent.fork_with(policy).expect("fork");
        parent.write(BASE, &pattern(2, 0)).expect("write");
        let pin = parent.pin_pages(BASE + 4 * PAGE, 2 * PAGE, false).expect("pin");
        child.write(BASE + 4 * PAGE, &pattern(3, 4)).expect("write");
        let mut b = [0u8; 8];
        pin.read(BASE + 4 * PAGE, &mut b).expect("pin read");
        assert_eq!(b, pattern(1, 4), "the pin sees the parent's page, not the child's write");
        let copied = parent.fork_with(ForkPolicy::CopyTables).expect("fork");
        parent.mprotect(BASE, PAGES * PAGE, Prot::READ).expect("mprotect");
        parent.mprotect(BASE, PAGES * PAGE, Prot::RW).expect("mprotect");
        parent.write(BASE + 8 * PAGE, &pattern(4, 8)).expect("write");
        views.push(view(&[&parent, &child, &copied]));
        drop(pin);
        views.push(view(&[&parent, &child, &copied]));
    });
}

/// Zaps of borrowed entries while an accessor may cache them (DONTNEED,
/// partial and whole munmap, exit) hold the backing until the shootdown.
#[test]
fn zaps_with_live_accessors_release_everything() {
    both(|m, policy, views| {
        let parent = parent(m);
        let child = parent.fork_with(policy).expect("fork");
        let mut acc = parent.accessor();
        acc.write(BASE, &pattern(2, 0)).expect("write");
        let mut b = [0u8; 8];
        acc.read(BASE + 100 * PAGE, &mut b).expect("read"); // cached, borrowed
        parent.madvise(BASE + 90 * PAGE, 20 * PAGE, Advice::DontNeed).expect("dontneed");
        parent.munmap(BASE + 200 * PAGE, 10 * PAGE).expect("munmap");
        views.push(view(&[&parent, &child]));
        parent.munmap(BASE + 512 * PAGE, 512 * PAGE).expect("munmap"); // a whole table
        views.push(view(&[&parent, &child]));
        drop(child);
        views.push(view(&[&parent]));
        drop(parent);
        drop(acc);
        assert_eq!((m.stats().frames_in_use, m.stats().page_tables), (0, 0));
    });
}
