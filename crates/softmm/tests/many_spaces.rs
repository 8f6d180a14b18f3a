//! Machines of many address spaces: a process tree's smaps taken together
//! (`Mm::smaps_many`) and a live fork chain, checked against what one
//! space at a time and the audit say.

mod common;
use common::*;
use softmm::{ForkPolicy, MapKind, Mm, Prot};

const BASE: u64 = 0x1000_0000;
const PAGE: u64 = 4096;

/// A parent whose 2 MiB + 3 pages (two PTE tables) are written, `n`
/// children forked with `policy`, child `c` writing page `c` (so shared
/// tables become borrowers), and a grandchild of the first.
fn tree(m: &softmm::Machine, n: u64, policy: ForkPolicy) -> Vec<Mm> {
    let parent = m.new_mm().unwrap();
    let pages = 512 + 3;
    map(&parent, BASE, pages * PAGE, Prot::RW, MapKind::Private);
    for p in 0..pages {
        parent.write(BASE + p * PAGE, &p.to_le_bytes()).unwrap();
    }
    let mut all = vec![];
    for c in 0..n {
        let child = parent.fork_with(policy).unwrap();
        child.write(BASE + (c % pages) * PAGE, b"child").unwrap();
        all.push(child);
    }
    let grandchild = all[0].fork_with(policy).unwrap();
    grandchild.write(BASE + 7 * PAGE, b"grand").unwrap();
    all.push(grandchild);
    all.insert(0, parent);
    all
}

#[test]
fn smaps_of_many_spaces_together_equal_one_at_a_time() {
    for policy in [ForkPolicy::SharedTables, ForkPolicy::CopyTables] {
        let m = machine();
        let spaces = tree(&m, 40, policy);
        for addr in [BASE, BASE + 512 * PAGE] {
            let at: Vec<(&Mm, u64)> = spaces.iter().map(|s| (s, addr)).collect();
            let together = Mm::smaps_many(&at);
            let alone: Vec<_> = spaces.iter().map(|s| s.smaps(addr)).collect();
            assert_eq!(together, alone, "{policy:?} at {addr:#x}");
            // The counts are the logical ones: the parent's second table is
            // shared by the whole tree (42 spaces), page 7 of the first by
            // all but the child and grandchild that wrote it.
            assert!(together.iter().all(|s| s.as_ref().is_some_and(|s| s.rss == 4 * (512 + 3))));
        }
        let pss_total: u64 = Mm::smaps_many(&spaces.iter().map(|s| (s, BASE)).collect::<Vec<_>>())
            .into_iter()
            .map(|s| s.map_or(0, |s| s.pss))
            .sum();
        // Each frame's PSS splits among its mappers: the total is about the
        // frames in use (truncation loses under 1 kB per space).
        let frames_kb = 4 * (512 + 3 + 40 + 1);
        assert!(pss_total <= frames_kb && pss_total + 42 >= frames_kb, "{policy:?}: pss {pss_total} vs {frames_kb}");
        check(&spaces[0]);
    }
    assert_eq!(Mm::smaps_many(&[]), vec![]);
    let m = machine();
    let p = m.new_mm().unwrap();
    assert_eq!(Mm::smaps_many(&[(&p, BASE)]), vec![None], "no VMA there");
}

#[test]
fn a_live_fork_chain_of_500_levels_passes_the_audit() {
    let m = machine();
    let root = m.new_mm().unwrap();
    map(&root, BASE, 16 * PAGE, Prot::RW, MapKind::Private);
    root.write(BASE, b"root").unwrap();
    let mut chain = vec![root];
    for i in 1..500u64 {
        let next = chain[chain.len() - 1].fork().unwrap();
        next.write(BASE + (1 + i % 15) * PAGE, &i.to_le_bytes()).unwrap();
        chain.push(next);
    }
    check(&chain[0]);
    assert_eq!(read(&chain[499], BASE, 4), b"root");
    // 499 = 33 * 15 + 4: the last write was to page 5; 498's to page 4.
    assert_eq!(read(&chain[499], BASE + 5 * PAGE, 8), 499u64.to_le_bytes());
    assert_eq!(read(&chain[499], BASE + 4 * PAGE, 8), 498u64.to_le_bytes());
    // Exits from the middle keep the rest whole.
    for mm in chain.drain(100..400).rev() {
        mm.exit();
    }
    check(&chain[0]);
    assert_eq!(read(&chain[199], BASE + 5 * PAGE, 8), 499u64.to_le_bytes());
    drop(chain);
    assert_eq!(m.stats().anon_vmas, 0);
    assert_eq!(m.stats().frames_in_use, 0);
}
