//! PROT_EXEC: kept in VMAs (splitting and merging them), checked by an
//! accessor's instruction fetch as x86-64 with NX checks it, never a reason
//! to break copy-on-write, and shown by `maps`.

mod common;
use common::*;
use softmm::{Error, ForkPolicy, GuestWords, MapKind, Prot, SegvKind};

const A: u64 = 0x1000_0000;
const PAGE: u64 = 4096;

fn accerr(addr: u64) -> Error {
    Error::Segv { addr, kind: SegvKind::AccErr }
}

#[test]
fn a_fetch_needs_prot_exec() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    map(&mm, A, 4 * PAGE, Prot::RW, MapKind::Private);
    mm.write(A, &0x1122_3344u32.to_ne_bytes()).unwrap();
    let mut acc = mm.accessor();
    assert_eq!(acc.fetch_u32(A), Err(accerr(A)), "rw-: no fetch");
    mm.mprotect(A, PAGE, Prot::RX).unwrap();
    assert_eq!(acc.fetch_u32(A), Ok(0x1122_3344));
    // A fetch across into a page without PROT_EXEC faults on that page.
    let mut buf = [0u8; 8];
    assert_eq!(acc.fetch(A + PAGE - 4, &mut buf), Err(accerr(A + PAGE)));
    // Execute-only and write+execute memory may be fetched from.
    mm.mprotect(A + PAGE, PAGE, Prot::EXEC).unwrap();
    assert_eq!(acc.fetch_u16(A + PAGE), Ok(0));
    mm.mprotect(A + 2 * PAGE, PAGE, Prot::WRITE.union(Prot::EXEC)).unwrap();
    acc.write(A + 2 * PAGE, &[0x90, 0xc3]).unwrap();
    assert_eq!(acc.fetch_u16(A + 2 * PAGE), Ok(u16::from_ne_bytes([0x90, 0xc3])));
    // Nothing mapped: a map error, as for any access.
    assert_eq!(acc.fetch_u32(A + 8 * PAGE), Err(Error::Segv { addr: A + 8 * PAGE, kind: SegvKind::MapErr }));
    drop(acc);
    check(&mm);
}

#[test]
fn taking_exec_away_stops_a_cached_fetch() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    map(&mm, A, PAGE, Prot::RX, MapKind::Shared);
    let mut acc = mm.accessor();
    assert_eq!(acc.fetch_u32(A), Ok(0)); // now cached as executable
    mm.mprotect(A, PAGE, Prot::READ).unwrap();
    assert_eq!(acc.fetch_u32(A), Err(accerr(A)));
    assert_eq!(acc.load_u32(A), Ok(0), "still readable");
    mm.mprotect(A, PAGE, Prot::RX).unwrap();
    assert_eq!(acc.fetch_u32(A), Ok(0));
}

#[test]
fn a_fetch_does_not_break_cow() {
    for policy in [ForkPolicy::SharedTables, ForkPolicy::CopyTables] {
        let m = machine();
        let p = m.new_mm().unwrap();
        map(&p, A, 2 * PAGE, Prot::RWX, MapKind::Private);
        p.write(A, b"code").unwrap();
        let c = p.fork_with(policy).unwrap();
        let frame = p.phys(A).unwrap();
        let mut acc = c.accessor();
        assert_eq!(acc.fetch_u32(A), Ok(u32::from_ne_bytes(*b"code")));
        assert_eq!(c.phys(A), Some(frame), "{policy:?}: the child still shares the page");
        assert_eq!(p.phys(A), Some(frame));
        // An untouched page fetched is the zero frame, not a new one.
        assert_eq!(acc.fetch_u32(A + PAGE), Ok(0));
        assert_eq!(c.phys(A + PAGE), Some(softmm::ZERO_FRAME));
        // A write after the fetch still copies.
        acc.write(A, b"j").unwrap();
        assert_ne!(c.phys(A), Some(frame));
        assert_eq!(read(&p, A, 4), b"code");
        drop(acc);
        check(&p);
    }
}

#[test]
fn exec_splits_and_merges_vmas() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    map(&mm, A, 3 * PAGE, Prot::RW, MapKind::Private);
    mm.mprotect(A + PAGE, PAGE, Prot::RWX).unwrap();
    let perms = |mm: &softmm::Mm| mm.maps().iter().map(|m| m.to_string()).collect::<Vec<_>>();
    assert_eq!(
        perms(&mm),
        ["0x10000000-0x10001000 rw-p anon", "0x10001000-0x10002000 rwxp anon", "0x10002000-0x10003000 rw-p anon"]
    );
    mm.mprotect(A + PAGE, PAGE, Prot::RW).unwrap();
    assert_eq!(perms(&mm), ["0x10000000-0x10003000 rw-p anon"]);
    // mmap merges with an exec neighbour only when it is exec too.
    map(&mm, A + 3 * PAGE, PAGE, Prot::RX, MapKind::Private);
    map(&mm, A + 4 * PAGE, PAGE, Prot::RX, MapKind::Private);
    map(&mm, A + 5 * PAGE, PAGE, Prot::EXEC, MapKind::Shared);
    assert_eq!(
        perms(&mm),
        ["0x10000000-0x10003000 rw-p anon", "0x10003000-0x10005000 r-xp anon", "0x10005000-0x10006000 --xs anon"]
    );
    assert_eq!(mm.maps()[2].perms(), "--xs");
    check(&mm);
}
