//! Histories with known Linux outcomes, checked step by step.

mod common;
use common::*;
use softmm::GuestWords;
use softmm::{errno, Advice, Error, ForkPolicy, MapKind, Placement, Prot, SegvKind, ZERO_FRAME};

const A: u64 = 0x1000_0000;

#[test]
fn trace_md_example() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 64 << 10, Prot::RW, MapKind::Private);
    p.write(A, b"hello").unwrap();
    let c = p.fork().unwrap();
    check(&p);
    assert_eq!(p.phys(A), c.phys(A));
    c.write(A, b"j").unwrap();
    check(&p);
    assert_eq!(read(&p, A, 5), b"hello");
    assert_eq!(read(&c, A, 5), b"jello");
    assert_ne!(p.phys(A), c.phys(A));
    let s = p.smaps(A).unwrap();
    assert_eq!((s.rss, s.pss, s.private_dirty), (4, 4, 4));
    assert_eq!(m.stats().fault_cow_copy, 1);
}

#[test]
fn zero_frame_after_read_of_untouched_memory() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 8192, Prot::RW, MapKind::Private);
    assert_eq!(p.phys(A), None);
    assert_eq!(read(&p, A, 4), [0, 0, 0, 0]);
    assert_eq!(p.phys(A), Some(ZERO_FRAME));
    assert_eq!(p.smaps(A).unwrap().rss, 0, "zero frame counts in no RSS");
    p.write(A + 1, b"x").unwrap();
    assert_ne!(p.phys(A), Some(ZERO_FRAME));
    assert_eq!(read(&p, A, 3), [0, b'x', 0]);
    assert_eq!(p.smaps(A).unwrap().rss, 4);
    check(&p);
}

fn cow_after_other_side_exited(policy: ForkPolicy) {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 4096, Prot::RW, MapKind::Private);
    p.write(A, b"a").unwrap();
    let f = p.phys(A);
    let c = p.fork_with(policy).unwrap();
    drop(c);
    check(&p);
    p.write(A, b"b").unwrap();
    assert_eq!(p.phys(A), f, "exclusive frame is reused, not copied");
    let s = m.stats();
    assert_eq!(s.fault_cow_copy, 0);
    match policy {
        // The write faults on the write-protected entry and reuses the frame.
        ForkPolicy::CopyTables => assert_eq!((s.fault_cow_reuse, s.table_reuses), (1, 0)),
        // The last sharer keeps the table; the entry never lost its write
        // bit, so the write needs no COW fault at all.
        _ => assert_eq!((s.fault_cow_reuse, s.table_reuses), (0, 1)),
    }
    check(&p);
}

#[test]
fn cow_after_other_side_exited_reuses_frame() {
    cow_after_other_side_exited(ForkPolicy::CopyTables);
    cow_after_other_side_exited(ForkPolicy::SharedTables);
}

#[test]
fn pss_halves_after_fork_and_recovers_after_exit() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 16 << 10, Prot::RW, MapKind::Private);
    p.fill(A, 16 << 10, 7).unwrap();
    let c = p.fork().unwrap();
    let s = p.smaps(A).unwrap();
    assert_eq!((s.rss, s.pss, s.shared_dirty, s.private_dirty), (16, 8, 16, 0));
    c.write(A, b"z").unwrap();
    let s = p.smaps(A).unwrap();
    assert_eq!((s.rss, s.pss, s.shared_dirty, s.private_dirty), (16, 10, 12, 4));
    drop(c);
    let s = p.smaps(A).unwrap();
    assert_eq!((s.rss, s.pss, s.private_dirty), (16, 16, 16));
    check(&p);
}

#[test]
fn fork_chain_three_deep() {
    let m = machine();
    let a = m.new_mm().unwrap();
    map(&a, A, 8192, Prot::RW, MapKind::Private);
    a.write(A, b"0").unwrap();
    let b = a.fork().unwrap();
    b.write(A, b"1").unwrap();
    let c = b.fork().unwrap();
    c.write(A, b"2").unwrap();
    let d = c.fork().unwrap();
    check(&a);
    assert_eq!(read(&a, A, 1), b"0");
    assert_eq!(read(&b, A, 1), b"1");
    assert_eq!(read(&c, A, 1), b"2");
    assert_eq!(read(&d, A, 1), b"2");
    assert_eq!(c.phys(A), d.phys(A));
    d.write(A, b"3").unwrap();
    assert_eq!(read(&c, A, 1), b"2");
    drop((a, b, c, d));
    assert_eq!(m.stats().frames_in_use, 0);
    assert_eq!(m.stats().page_tables, 0);
}

#[test]
fn shared_memory_survives_fork() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 8192, Prot::RW, MapKind::Shared);
    p.write(A, b"s").unwrap();
    let c = p.fork().unwrap();
    assert_eq!(c.phys(A), None, "Linux does not copy shared PTEs at fork");
    c.write(A + 1, b"t").unwrap();
    assert_eq!(read(&p, A, 2), b"st");
    assert_eq!(p.phys(A), c.phys(A));
    let s = p.smaps(A).unwrap();
    assert_eq!((s.rss, s.pss, s.anonymous, s.shared_dirty), (4, 2, 0, 4));
    drop(p);
    assert_eq!(read(&c, A, 2), b"st");
    check(&c);
}

#[test]
fn mprotect_read_only_then_write_is_accerr() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 4 * 4096, Prot::RW, MapKind::Private);
    p.write(A, b"x").unwrap();
    p.mprotect(A, 4096, Prot::READ).unwrap();
    assert_eq!(p.mappings().len(), 2);
    assert_eq!(p.write(A, b"y"), Err(Error::Segv { addr: A, kind: SegvKind::AccErr }));
    assert_eq!(read(&p, A, 1), b"x");
    p.mprotect(A, 4096, Prot::RW).unwrap();
    assert_eq!(p.mappings().len(), 1, "restored protection merges back");
    p.write(A, b"y").unwrap();
    p.mprotect(A, 4096, Prot::NONE).unwrap();
    let mut b = [0u8];
    assert_eq!(p.read(A, &mut b), Err(Error::Segv { addr: A, kind: SegvKind::AccErr }));
    assert_eq!(p.read(A + 0x10000, &mut b), Err(Error::Segv { addr: A + 0x10000, kind: SegvKind::MapErr }));
    check(&p);
}

#[test]
fn partial_munmap_splits_and_frees() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 16 * 4096, Prot::RW, MapKind::Private);
    p.fill(A, 16 * 4096, 1).unwrap();
    p.munmap(A + 4 * 4096, 4 * 4096).unwrap();
    assert_eq!(p.mappings().len(), 2);
    assert_eq!(p.smaps(A).unwrap().rss, 16);
    assert_eq!(p.smaps(A + 8 * 4096).unwrap().rss, 32);
    let mut b = [0u8];
    assert!(matches!(p.read(A + 5 * 4096, &mut b), Err(Error::Segv { kind: SegvKind::MapErr, .. })));
    check(&p);
    p.munmap(A, 16 * 4096).unwrap();
    assert_eq!(m.stats().frames_in_use, 1, "only the root table is left");
    check(&p);
}

#[test]
fn dontneed_private_zeroes_shared_keeps() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 4096, Prot::RW, MapKind::Private);
    map(&p, A + 0x10000, 4096, Prot::RW, MapKind::Shared);
    p.write(A, b"p").unwrap();
    p.write(A + 0x10000, b"s").unwrap();
    p.madvise(A, 4096, Advice::DontNeed).unwrap();
    p.madvise(A + 0x10000, 4096, Advice::DontNeed).unwrap();
    assert_eq!(read(&p, A, 1), [0]);
    assert_eq!(read(&p, A + 0x10000, 1), b"s");
    assert_eq!(p.madvise(A, 0x20000, Advice::DontNeed).unwrap_err().errno(), errno::ENOMEM);
    check(&p);
}

#[test]
fn adjacent_mmaps_merge() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 4096, Prot::RW, MapKind::Private);
    map(&p, A + 4096, 4096, Prot::RW, MapKind::Private);
    assert_eq!(p.mappings().len(), 1);
    map(&p, A + 8192, 4096, Prot::READ, MapKind::Private);
    assert_eq!(p.mappings().len(), 2);
    map(&p, A + 0x10000, 4096, Prot::RW, MapKind::Shared);
    map(&p, A + 0x11000, 4096, Prot::RW, MapKind::Shared);
    assert_eq!(p.mappings().len(), 4, "separate shared objects never merge");
}

#[test]
fn mmap_hint_and_anywhere() {
    let m = machine();
    let p = m.new_mm().unwrap();
    let a = p.mmap(0, 8192, Prot::RW, MapKind::Private, Placement::Hint).unwrap();
    let b = p.mmap(0, 8192, Prot::RW, MapKind::Private, Placement::Hint).unwrap();
    assert_ne!(a, b);
    assert_eq!(p.mmap(a, 4096, Prot::RW, MapKind::Private, Placement::FixedNoReplace).unwrap_err().errno(), 17);
    p.write(a, b"1").unwrap();
    p.write(b, b"2").unwrap();
    check(&p);
}

#[test]
fn accessor_sees_cow_and_unmap() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 8192, Prot::RW, MapKind::Private);
    let mut acc = p.accessor();
    acc.store_u64(A, 41).unwrap();
    assert_eq!(acc.fetch_add_u64(A, 1).unwrap(), 41);
    let c = p.fork().unwrap();
    acc.store_u64(A, 100).unwrap();
    assert_eq!(read(&c, A, 8), 42u64.to_ne_bytes());
    p.munmap(A, 8192).unwrap();
    assert!(matches!(acc.load_u64(A), Err(Error::Segv { kind: SegvKind::MapErr, .. })));
    assert!(matches!(acc.load_u64(A + 4), Err(Error::Misaligned { .. })));
    check(&p);
}

/// A dirty entry hands its dirtiness to the page when it is zapped (Linux's
/// `zap_pte_range`: `folio_mark_dirty`), so the page's other mappings see it
/// dirty. Here the only write is a CPU store through an entry a read fault
/// made writable: it dirties that entry, not the page, until the munmap.
#[test]
fn munmap_hands_a_dirty_entry_to_the_page() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 4096, Prot::RW, MapKind::Shared);
    let c = p.fork().unwrap();
    let mut pa = p.accessor();
    let mut ca = c.accessor();
    assert_eq!(pa.load_u32(A).unwrap(), 0);
    assert_eq!(ca.load_u32(A).unwrap(), 0);
    pa.store_u32(A, 7).unwrap();
    drop(pa);
    let s = c.smaps(A).unwrap();
    assert_eq!((s.rss, s.shared_clean, s.shared_dirty), (4, 4, 0), "only the parent's entry is dirty: {s:?}");
    p.munmap(A, 4096).unwrap();
    let s = c.smaps(A).unwrap();
    assert_eq!((s.rss, s.private_clean, s.private_dirty), (4, 0, 4), "the page is dirty now: {s:?}");
    assert_eq!(ca.load_u32(A).unwrap(), 7);
    drop(ca);
    check(&c);
}
