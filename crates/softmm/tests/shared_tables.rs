//! Shared page tables under real threads: many address spaces share the
//! same PTE tables and unshare, COW, partially unmap, fork again and exit
//! at the same time, while their common parent keeps writing its own side.
//! Every byte is checked; the machine audit runs at the end.

mod common;
use common::*;
use softmm::{Advice, ForkPolicy, Machine, MapKind, Mm, Prot};

const BASE: u64 = 0x1000_0000;
const PAGES: u64 = 4 * 512; // 8 MiB: four PTE tables
const PAGE: u64 = 4096;

fn pattern(page: u64, gen: u8) -> [u8; 8] {
    let mut b = (page as u32).to_le_bytes().repeat(2);
    b[7] = gen;
    b.try_into().unwrap_or([0; 8])
}

#[test]
fn children_unshare_and_exit_concurrently_over_shared_tables() {
    let m = machine();
    let parent = m.new_mm().unwrap();
    map(&parent, BASE, PAGES * PAGE, Prot::RW, MapKind::Private);
    for p in 0..PAGES {
        parent.write(BASE + p * PAGE, &pattern(p, 0)).unwrap();
    }
    for round in 0..160u8 {
        let children: Vec<_> = (0..4).map(|_| parent.fork_with(ForkPolicy::SharedTables).unwrap()).collect();
        assert!(m.stats().shared_tables >= 4, "fork shared the tables");
        std::thread::scope(|s| {
            for (i, child) in children.into_iter().enumerate() {
                s.spawn(move || child_work(child, i as u64, round));
            }
            // The parent writes its own side meanwhile (unshare + COW).
            let mut acc = parent.accessor();
            for p in (round as u64..PAGES).step_by(97) {
                acc.write(BASE + p * PAGE, &pattern(p, round + 1)).unwrap();
            }
        });
        // Children are gone; the parent sees only its own writes.
        for p in 0..PAGES {
            let got = read(&parent, BASE + p * PAGE, 8);
            let mut last = 0;
            for r in 0..=round {
                if p >= r as u64 && (p - r as u64) % 97 == 0 {
                    last = r + 1;
                }
            }
            assert_eq!(got, pattern(p, last), "parent page {p} after round {round}");
        }
        check(&parent);
    }
    drop(parent);
    assert_eq!((m.stats().frames_in_use, m.stats().page_tables), (0, 0));
}

/// What one child does, in its own thread, while its siblings do the same.
fn child_work(child: softmm::Mm, i: u64, round: u8) {
    let mut acc = child.accessor();
    // Before any write of ours, everything reads as the parent wrote it at fork
    // time (its concurrent writes must not show through).
    for p in (i..PAGES).step_by(11) {
        let mut b = [0u8; 8];
        acc.read(BASE + p * PAGE, &mut b).unwrap();
        assert_eq!(b[..4], (p as u32).to_le_bytes(), "child {i} page {p}");
    }
    // Write (unshare + COW) into every table, then partially unmap one.
    for p in (i..PAGES).step_by(37) {
        acc.write(BASE + p * PAGE, &[0xc0 + i as u8; 8]).unwrap();
    }
    let hole = (i * 512 + 100)..(i * 512 + 150);
    child.munmap(BASE + hole.start * PAGE, (hole.end - hole.start) * PAGE).unwrap();
    // A grandchild shares the child's (now partly unshared) tables.
    let grand = child.fork().unwrap();
    let gpage = i * 512 + 7;
    grand.write(BASE + gpage * PAGE, &[0xee; 8]).unwrap();
    for p in (i..PAGES).step_by(37).filter(|p| !hole.contains(p) && *p != gpage) {
        assert_eq!(read(&grand, BASE + p * PAGE, 8), [0xc0 + i as u8; 8], "grandchild of {i}, round {round}");
    }
    drop(grand);
    for p in (i..PAGES).step_by(37).filter(|p| !hole.contains(p)) {
        let mut b = [0u8; 8];
        acc.read(BASE + p * PAGE, &mut b).unwrap();
        assert_eq!(b, [0xc0 + i as u8; 8], "child {i} page {p}");
    }
    drop(acc);
    drop(child);
}

/// Two sharers leave their shared tables at the same time (whole-table
/// munmaps) while threads of theirs still read through cached
/// translations, and a third space recycles freed frames with a pattern
/// nobody else writes. A reader sees its page's data or a fault, never the
/// pattern: a sharer keeps its table reference until its own shootdown, so
/// the other cannot free the frames under its translations (the bug Linux
/// had as CVE-2021-4002). The window is narrow, so this mostly runs the
/// late drop (`Left::Later`, `put_late`, both orders) under the audit; the
/// loom model `share::loom_leave_tests` proves the order.
/// A parent with `n` pages at `BASE`, each written with `pattern(p, 1)`,
/// and its child forked with shared page tables.
fn written_and_forked(m: &Machine, n: u64) -> (Mm, Mm) {
    let parent = m.new_mm().unwrap();
    map(&parent, BASE, n * PAGE, Prot::RW, MapKind::Private);
    for p in 0..n {
        parent.write(BASE + p * PAGE, &pattern(p, 1)).unwrap();
    }
    let child = parent.fork_with(ForkPolicy::SharedTables).unwrap();
    (parent, child)
}

#[test]
fn leaving_sharers_never_read_a_recycled_frame() {
    const N: u64 = 8 * 512;
    let m = machine();
    let recycler = m.new_mm().unwrap();
    let spare = 0x4000_0000;
    for round in 0..40u8 {
        let (parent, child) = written_and_forked(&m, N);
        let leaving = std::sync::Barrier::new(5);
        std::thread::scope(|s| {
            for mm in [&parent, &child] {
                let leaving = &leaving;
                s.spawn(move || {
                    let mut acc = mm.accessor();
                    let mut b = [0u8; 8];
                    for p in 0..N {
                        acc.read(BASE + p * PAGE, &mut b).unwrap(); // fill the TLB
                    }
                    leaving.wait();
                    'reading: for _ in 0..20 {
                        for p in (0..N).step_by(7) {
                            if acc.read(BASE + p * PAGE, &mut b).is_err() {
                                break 'reading; // unmapped: a fault from now on
                            }
                            assert_eq!(b, pattern(p, 1), "page {p}, round {round}: a recycled frame");
                        }
                    }
                });
                s.spawn(move || {
                    leaving.wait();
                    mm.munmap(BASE, N * PAGE).unwrap();
                });
            }
            s.spawn(|| {
                leaving.wait();
                recycle(&recycler, spare, N);
            });
        });
        check(&parent);
        drop((parent, child));
    }
    check(&recycler);
    drop(recycler);
    assert_eq!((m.stats().frames_in_use, m.stats().page_tables), (0, 0));
}

/// Borrowed entries under real threads (`pgtable/borrow.rs`): the parent
/// writes one page in every table after fork, so its tables become copies
/// that borrow their frames from the tables the child still maps. Then, at
/// once: the child exits (the last mapper: it owns the parent's borrowed
/// entries out before it zaps), the parent zaps some of its borrowed
/// entries with DONTNEED while its own reader caches them (the zap holds
/// the child's tables until the parent's shootdown), its reader checks
/// every byte, and a recycler writes garbage into whatever frames come
/// free. The reader must never see the garbage; the audit runs after each
/// round. (The windows are narrow; the loom models in `borrow.rs` prove the
/// orders, this checks the whole under the real code.)
#[test]
fn borrowers_never_read_a_recycled_frame() {
    const N: u64 = 8 * 512;
    const HOLE: std::ops::Range<u64> = 1000..3000;
    let m = machine();
    let recycler = m.new_mm().unwrap();
    let spare = 0x4000_0000;
    for round in 0..40u8 {
        let (parent, child) = written_and_forked(&m, N);
        let copies = m.stats().table_copies;
        for t in 0..N / 512 {
            parent.write(BASE + t * 512 * PAGE, &pattern(t * 512, 2)).unwrap();
        }
        assert_eq!(m.stats().table_copies - copies, N / 512, "the parent copied (borrowing) every table");
        let go = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            let (go, parent) = (&go, &parent);
            s.spawn(move || {
                let mut acc = parent.accessor();
                let mut b = [0u8; 8];
                for p in 0..N {
                    acc.read(BASE + p * PAGE, &mut b).unwrap(); // fill the TLB
                }
                go.wait();
                for _ in 0..20 {
                    for p in (0..N).step_by(5) {
                        acc.read(BASE + p * PAGE, &mut b).unwrap();
                        let want = pattern(p, if p % 512 == 0 { 2 } else { 1 });
                        let zapped = HOLE.contains(&p) && b == [0; 8];
                        assert!(b == want || zapped, "page {p}, round {round}: read {b:?}, a recycled frame?");
                    }
                }
            });
            s.spawn(move || {
                go.wait();
                parent.madvise(BASE + HOLE.start * PAGE, (HOLE.end - HOLE.start) * PAGE, Advice::DontNeed).unwrap();
            });
            let child = &child;
            s.spawn(move || {
                go.wait();
                child.munmap(BASE, N * PAGE).unwrap(); // the last mapper leaves
            });
            s.spawn(|| {
                go.wait();
                recycle(&recycler, spare, N);
            });
        });
        check(&parent);
        drop((parent, child));
    }
    check(&recycler);
    drop(recycler);
    assert_eq!((m.stats().frames_in_use, m.stats().page_tables), (0, 0));
}

/// Write garbage into whatever frames come free: map `pages` pages at
/// `spare` in `recycler`, fill them with 0xde, unmap, twice. A reader that
/// sees 0xde read a frame freed under its translation.
fn recycle(recycler: &softmm::Mm, spare: u64, pages: u64) {
    for _ in 0..2 {
        map(recycler, spare, pages * PAGE, Prot::RW, MapKind::Private);
        let mut acc = recycler.accessor();
        for p in 0..pages {
            acc.write(spare + p * PAGE, &[0xde; 8]).unwrap();
        }
        drop(acc);
        recycler.munmap(spare, pages * PAGE).unwrap();
    }
}

/// A PTE table shared at the top of the address space, whose 2 MiB span
/// ends a page past `TASK_SIZE`: each space's exit drops it whole (a zap
/// may drop a shared table only when it covers the table's span).
#[test]
fn exit_drops_a_shared_table_at_the_top_of_the_space() {
    let m = Machine::new(softmm::Config { arena_bytes: 16 << 20, ..softmm::Config::default() }).unwrap();
    let parent = m.new_mm().unwrap();
    let top = softmm::TASK_SIZE - 16 * PAGE;
    parent.mmap(top, 16 * PAGE, Prot::RW, MapKind::Private, softmm::Placement::Fixed).unwrap();
    parent.fill(top, 16 * PAGE as usize, 1).unwrap();
    let child = parent.fork_with(ForkPolicy::SharedTables).unwrap();
    assert_eq!(read(&child, top, 1), [1]);
    drop(parent);
    drop(child);
    assert_eq!((m.stats().frames_in_use, m.stats().page_tables), (0, 0));
}
