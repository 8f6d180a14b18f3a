//! Bad input to every public operation: the errno Linux gives for the same
//! mistake (mm/mmap.c, mm/mprotect.c, mm/madvise.c, x86-64 with 4-level
//! paging, an unprivileged process), no panic, and no change of state when
//! the call fails (machine audit, mappings, frames and contents unchanged).
//!
//! Where Linux changes part of the state before it fails (mprotect and
//! madvise over a hole), the test checks exactly that part.

mod common;
use common::*;
use softmm::errno::{EINVAL, ENOMEM, EPERM};
use softmm::GuestWords;
use softmm::TASK_SIZE;
use softmm::{Advice, Config, Error, Machine, MapKind, Mapping, Mm, Placement, Prot, SegvKind, ZERO_FRAME};

const A: u64 = 0x1000_0000;
const PAGE: u64 = 4096;
const EEXIST: i32 = 17;
/// The last page of the 64-bit address space.
const TOP_PAGE: u64 = u64::MAX - (PAGE - 1);

/// An address space with every kind of mapping, all written:
/// - `A .. A+4p`        private rw
/// - `A+4p .. A+8p`     hole
/// - `A+8p .. A+12p`    shared rw
/// - `A+16p .. A+18p`   private r (written before the mprotect)
/// - `A+20p`            private none
/// - `A+21p`            private w (readable too, as on x86)
fn setup() -> (Machine, Mm) {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, A, 4 * PAGE, Prot::RW, MapKind::Private);
    map(&p, A + 8 * PAGE, 4 * PAGE, Prot::RW, MapKind::Shared);
    map(&p, A + 16 * PAGE, 2 * PAGE, Prot::RW, MapKind::Private);
    map(&p, A + 20 * PAGE, PAGE, Prot::RW, MapKind::Private);
    map(&p, A + 21 * PAGE, PAGE, Prot::RW, MapKind::Private);
    for (i, m) in p.mappings().iter().enumerate() {
        let start = m.range.start;
        let data: Vec<u8> = (0..m.range.end - start).map(|j| (i as u64 * 31 + j % 251 + 1) as u8).collect();
        p.write(start, &data).unwrap();
    }
    p.mprotect(A + 16 * PAGE, 2 * PAGE, Prot::READ).unwrap();
    p.mprotect(A + 20 * PAGE, PAGE, Prot::NONE).unwrap();
    p.mprotect(A + 21 * PAGE, PAGE, Prot::WRITE).unwrap();
    check(&p);
    (m, p)
}

fn segv(addr: u64, kind: SegvKind) -> softmm::Result<()> {
    Err(Error::Segv { addr, kind })
}

#[test]
fn mmap_bad_input() {
    use Placement::{Fixed, FixedNoReplace, Hint};
    let (_m, p) = setup();
    let before = Snapshot::take(&p);
    let free = A + 64 * PAGE;
    #[rustfmt::skip]
    let cases: &[(u64, u64, Placement, i32, &str)] = &[
        (free, 0, Fixed, EINVAL, "zero length"),
        (0, 0, Hint, EINVAL, "zero length, any address"),
        (free, 0, FixedNoReplace, EINVAL, "zero length, no replace"),
        (free, u64::MAX, Fixed, ENOMEM, "length wraps when page-aligned"),
        (free, u64::MAX - PAGE + 2, Fixed, ENOMEM, "length wraps to zero when page-aligned"),
        (0, u64::MAX, Hint, ENOMEM, "length wraps, any address"),
        (0, TASK_SIZE + 1, Hint, ENOMEM, "longer than the address space"),
        (free, TASK_SIZE + PAGE, Fixed, ENOMEM, "longer than the address space, fixed"),
        (free + 1, PAGE, Fixed, EINVAL, "misaligned fixed address"),
        (free + 0x800, PAGE, FixedNoReplace, EINVAL, "misaligned, no replace"),
        (A + 1, PAGE, FixedNoReplace, EINVAL, "misaligned over a mapping: alignment before EEXIST"),
        (TASK_SIZE, PAGE, Fixed, ENOMEM, "at TASK_SIZE"),
        (TASK_SIZE - PAGE, 2 * PAGE, Fixed, ENOMEM, "runs past TASK_SIZE"),
        (TASK_SIZE - PAGE, PAGE + 1, Fixed, ENOMEM, "runs past TASK_SIZE after rounding"),
        (1 << 47, PAGE, Fixed, ENOMEM, "non-canonical"),
        (1 << 48, PAGE, Fixed, ENOMEM, "beyond 48 bits"),
        (TOP_PAGE, PAGE, Fixed, ENOMEM, "top page of u64"),
        (TASK_SIZE + 1, PAGE, Fixed, ENOMEM, "misaligned and too high: the range check comes first"),
        (0, PAGE, Fixed, EPERM, "page zero"),
        (0x1000, PAGE, Fixed, EPERM, "below mmap_min_addr"),
        (0xf000, 2 * PAGE, Fixed, EPERM, "starts below mmap_min_addr"),
        (0x1000, PAGE, FixedNoReplace, EPERM, "below mmap_min_addr, no replace"),
        (0x1001, PAGE, Fixed, EINVAL, "misaligned and below mmap_min_addr: alignment first"),
        (A, PAGE, FixedNoReplace, EEXIST, "exactly over a mapping"),
        (A + 3 * PAGE, 2 * PAGE, FixedNoReplace, EEXIST, "over the end of a mapping"),
        (A - PAGE, 2 * PAGE, FixedNoReplace, EEXIST, "over the start of a mapping"),
        (A + 5 * PAGE, 10 * PAGE, FixedNoReplace, EEXIST, "over a whole mapping"),
        (A + 7 * PAGE, PAGE + 1, FixedNoReplace, EEXIST, "over a mapping after rounding"),
        (A + 20 * PAGE, PAGE, FixedNoReplace, EEXIST, "over a PROT_NONE mapping"),
    ];
    for &(addr, len, place, want, what) in cases {
        for kind in [MapKind::Private, MapKind::Shared] {
            let what = format!("mmap({addr:#x}, {len:#x}, {place:?}, {kind:?}): {what}");
            let r = p.mmap(addr, len, Prot::RW, kind, place);
            assert_eq!(r.as_ref().map_err(Error::errno), Err(want), "{what}: {r:?}");
            assert_unchanged(&p, &before, &what);
        }
    }

    // The edges that are fine.
    assert_eq!(p.mmap(A + 4 * PAGE, 4 * PAGE, Prot::RW, MapKind::Private, FixedNoReplace), Ok(A + 4 * PAGE));
    assert_eq!(p.mmap(0x10000, PAGE, Prot::RW, MapKind::Private, Fixed), Ok(0x10000), "at mmap_min_addr");
    let top = TASK_SIZE - PAGE;
    assert_eq!(p.mmap(top, PAGE, Prot::RW, MapKind::Private, Fixed), Ok(top), "the last page");
    p.write(top + PAGE - 3, b"end").unwrap();
    assert_eq!(read(&p, top + PAGE - 3, 3), b"end");
    assert_eq!(p.write(top + PAGE - 3, b"over"), segv(TASK_SIZE, SegvKind::MapErr));
    check(&p);
}

#[test]
fn munmap_bad_input() {
    let (_m, p) = setup();
    let before = Snapshot::take(&p);
    #[rustfmt::skip]
    let cases: &[(u64, u64, &str)] = &[
        (A + 1, PAGE, "misaligned"),
        (A + 0x800, 4 * PAGE, "misaligned by half a page"),
        (A + 1, 0, "misaligned and empty"),
        (A, 0, "zero length"),
        (A + 4 * PAGE, 0, "zero length in a hole"),
        (A, u64::MAX, "length wraps"),
        (A, u64::MAX - A + 1, "addr + len wraps to zero"),
        (A, TASK_SIZE, "runs past TASK_SIZE"),
        (TASK_SIZE - PAGE, 2 * PAGE, "runs past TASK_SIZE from the last page"),
        (TASK_SIZE - PAGE, PAGE + 1, "runs past TASK_SIZE before rounding: checked before PAGE_ALIGN"),
        (TASK_SIZE, PAGE, "at TASK_SIZE"),
        (TASK_SIZE + PAGE, PAGE, "above TASK_SIZE"),
        (1 << 48, PAGE, "beyond 48 bits"),
        (TOP_PAGE, PAGE, "top page of u64"),
    ];
    for &(addr, len, what) in cases {
        let what = format!("munmap({addr:#x}, {len:#x}): {what}");
        assert_eq!(errno_of(p.munmap(addr, len)), EINVAL, "{what}");
        assert_unchanged(&p, &before, &what);
    }

    // Holes are fine and change nothing.
    for (addr, len) in [(A + 4 * PAGE, 4 * PAGE), (A + 64 * PAGE, 1 << 30), (0, PAGE), (TASK_SIZE - PAGE, PAGE)] {
        assert_eq!(p.munmap(addr, len), Ok(()), "munmap({addr:#x}, {len:#x}) of a hole");
        assert_unchanged(&p, &before, "munmap of a hole");
    }

    // A length that is not a page multiple rounds up; a range over holes
    // and mappings unmaps the mapped parts.
    p.munmap(A, 1).unwrap();
    assert_eq!(p.read(A, &mut [0]), segv(A, SegvKind::MapErr));
    assert_eq!(read(&p, A + PAGE, 1), [before.bytes[0].1[PAGE as usize]]);
    p.munmap(A + 3 * PAGE, 6 * PAGE).unwrap();
    let now: Vec<_> = p.mappings().iter().map(|m| (m.range.start, m.range.end)).collect();
    assert_eq!(now[..2], [(A + PAGE, A + 3 * PAGE), (A + 9 * PAGE, A + 12 * PAGE)]);
    assert_eq!(read(&p, A + 9 * PAGE, 4), before.bytes[1].1[PAGE as usize..][..4]);
    check(&p);
}

#[test]
fn mprotect_bad_input() {
    let (_m, p) = setup();
    let before = Snapshot::take(&p);
    #[rustfmt::skip]
    let cases: &[(u64, u64, i32, &str)] = &[
        (A + 1, PAGE, EINVAL, "misaligned"),
        (A + 1, 0, EINVAL, "misaligned and empty: alignment first"),
        (A, u64::MAX, ENOMEM, "length wraps when page-aligned"),
        (A, u64::MAX - PAGE + 2, ENOMEM, "length wraps to zero when page-aligned"),
        (A, u64::MAX - A + 1, ENOMEM, "addr + len wraps to zero"),
        (TOP_PAGE, PAGE, ENOMEM, "top page of u64: end wraps"),
        (A + 4 * PAGE, 4 * PAGE, ENOMEM, "a hole"),
        (A + 4 * PAGE, 8 * PAGE, ENOMEM, "a hole at the start, then a mapping"),
        (A + 64 * PAGE, PAGE, ENOMEM, "nothing mapped at or after"),
        (TASK_SIZE, PAGE, ENOMEM, "at TASK_SIZE"),
        (1 << 48, PAGE, ENOMEM, "beyond 48 bits"),
        (A - PAGE, 2 * PAGE, ENOMEM, "a hole just before a mapping"),
    ];
    for &(addr, len, want, what) in cases {
        let what = format!("mprotect({addr:#x}, {len:#x}): {what}");
        assert_eq!(errno_of(p.mprotect(addr, len, Prot::READ)), want, "{what}");
        assert_unchanged(&p, &before, &what);
    }
    for addr in [A, A + 4 * PAGE, A + PAGE, TASK_SIZE + PAGE, TOP_PAGE] {
        assert_eq!(p.mprotect(addr, 0, Prot::NONE), Ok(()), "mprotect({addr:#x}, 0)");
        assert_unchanged(&p, &before, "mprotect of length 0");
    }
}

/// Linux's mprotect changes the VMAs before the first hole, then fails.
#[test]
fn mprotect_over_a_hole_changes_what_comes_before_it() {
    let (_m, p) = setup();
    let before = Snapshot::take(&p);
    // A+2p .. A+4p is mapped, then the hole at A+4p.
    assert_eq!(errno_of(p.mprotect(A + 2 * PAGE, 6 * PAGE + 1, Prot::READ)), ENOMEM);
    check(&p);
    let maps = p.mappings();
    assert_eq!(maps[0], Mapping { range: A..A + 2 * PAGE, prot: Prot::RW, kind: MapKind::Private });
    assert_eq!(
        maps[1],
        Mapping { range: A + 2 * PAGE..A + 4 * PAGE, prot: Prot::READ, kind: MapKind::Private },
        "changed up to the hole"
    );
    assert_eq!(
        maps[2],
        Mapping { range: A + 8 * PAGE..A + 12 * PAGE, prot: Prot::RW, kind: MapKind::Shared },
        "after the hole: unchanged"
    );
    assert_eq!(maps[3..], before.mappings[2..]);
    assert_eq!(p.write(A + 2 * PAGE, b"x"), segv(A + 2 * PAGE, SegvKind::AccErr));
    assert_eq!(p.write(A + PAGE, b"y"), Ok(()));
    assert_eq!(p.write(A + 8 * PAGE, b"z"), Ok(()));
    assert_eq!(read(&p, A + 2 * PAGE, 2 * PAGE as usize), before.bytes[0].1[2 * PAGE as usize..]);

    // Several VMAs before the hole: all of them change (and merge).
    let (_m, p) = setup();
    p.mprotect(A + 8 * PAGE, 2 * PAGE, Prot::READ).unwrap();
    assert_eq!(errno_of(p.mprotect(A + 8 * PAGE, 12 * PAGE, Prot::NONE)), ENOMEM);
    check(&p);
    let maps = p.mappings();
    assert_eq!(maps[1], Mapping { range: A + 8 * PAGE..A + 12 * PAGE, prot: Prot::NONE, kind: MapKind::Shared });
    assert_eq!(
        maps[2],
        Mapping { range: A + 16 * PAGE..A + 18 * PAGE, prot: Prot::READ, kind: MapKind::Private },
        "after the hole"
    );
    assert_eq!(p.read(A + 11 * PAGE, &mut [0]), segv(A + 11 * PAGE, SegvKind::AccErr));
}

#[test]
fn madvise_bad_input() {
    let (_m, p) = setup();
    let before = Snapshot::take(&p);
    #[rustfmt::skip]
    let cases: &[(u64, u64, i32, &str)] = &[
        (A + 1, PAGE, EINVAL, "misaligned"),
        (A + 1, 0, EINVAL, "misaligned and empty: alignment first"),
        (A, u64::MAX, EINVAL, "length wraps when page-aligned"),
        (A, u64::MAX - PAGE + 2, EINVAL, "length wraps to zero when page-aligned"),
        (A, u64::MAX - A + 1, EINVAL, "addr + len wraps to zero"),
        (TOP_PAGE, PAGE, EINVAL, "top page of u64: end wraps"),
        (A + 4 * PAGE, 4 * PAGE, ENOMEM, "a hole"),
        (A + 64 * PAGE, PAGE, ENOMEM, "nothing mapped at or after"),
        (TASK_SIZE, PAGE, ENOMEM, "at TASK_SIZE"),
        (1 << 48, PAGE, ENOMEM, "beyond 48 bits"),
    ];
    for &(addr, len, want, what) in cases {
        let what = format!("madvise({addr:#x}, {len:#x}, DONTNEED): {what}");
        assert_eq!(errno_of(p.madvise(addr, len, Advice::DontNeed)), want, "{what}");
        assert_unchanged(&p, &before, &what);
    }
    for addr in [A, A + 4 * PAGE, TASK_SIZE + PAGE, TOP_PAGE] {
        assert_eq!(p.madvise(addr, 0, Advice::DontNeed), Ok(()), "madvise({addr:#x}, 0)");
        assert_unchanged(&p, &before, "madvise of length 0");
    }
}

/// Linux's madvise visits every VMA in the range and reports the hole at the
/// end: the mapped parts are zapped all the same.
#[test]
fn madvise_over_a_hole_still_zaps_the_mapped_parts() {
    let (_m, p) = setup();
    let before = Snapshot::take(&p);
    assert_eq!(errno_of(p.madvise(A + 2 * PAGE, 12 * PAGE, Advice::DontNeed)), ENOMEM);
    check(&p);
    assert_eq!(p.mappings(), before.mappings, "madvise never changes mappings");
    assert_eq!(p.phys(A + PAGE), before.frames[1].1, "before the range: untouched");
    assert_eq!(p.phys(A + 2 * PAGE), None, "private page zapped");
    assert_eq!(read(&p, A + 2 * PAGE, 2 * PAGE as usize), vec![0; 2 * PAGE as usize], "private reads zeros");
    assert_eq!(p.phys(A + 2 * PAGE), Some(ZERO_FRAME));
    assert_eq!(p.phys(A + 8 * PAGE), None, "shared page unmapped from this address space...");
    assert_eq!(read(&p, A + 8 * PAGE, 4 * PAGE as usize), before.bytes[1].1, "...but its contents are kept");
    assert_eq!(read(&p, A, 2 * PAGE as usize), before.bytes[0].1[..2 * PAGE as usize]);
    check(&p);

    // A hole at the start (nothing visited before it) still zaps what follows.
    let (_m, p) = setup();
    assert_eq!(errno_of(p.madvise(A - 4 * PAGE, 6 * PAGE, Advice::DontNeed)), ENOMEM);
    assert_eq!(p.phys(A), None);
    assert_eq!(p.phys(A + PAGE), None);
    assert_ne!(p.phys(A + 2 * PAGE), None);
    check(&p);
}

#[test]
fn read_write_fill_bad_input() {
    let (_m, p) = setup();
    let mut acc = p.accessor();
    let before = Snapshot::take(&p);
    let hole = A + 4 * PAGE;
    let ro = A + 16 * PAGE;
    let none = A + 20 * PAGE;
    let wo = A + 21 * PAGE;
    let mut buf = [0u8; 16];
    #[rustfmt::skip]
    let cases: &[(u64, bool, SegvKind, &str)] = &[
        (hole, false, SegvKind::MapErr, "read of a hole"),
        (hole, true, SegvKind::MapErr, "write of a hole"),
        (hole + 0x123, true, SegvKind::MapErr, "write inside a hole"),
        (A + 64 * PAGE, false, SegvKind::MapErr, "read past every mapping"),
        (0, false, SegvKind::MapErr, "read of page zero"),
        (A + (1 << 48), false, SegvKind::MapErr, "read beyond 48 bits (must not alias A)"),
        (A + (1 << 48), true, SegvKind::MapErr, "write beyond 48 bits (must not alias A)"),
        (TASK_SIZE, false, SegvKind::MapErr, "read at TASK_SIZE"),
        (ro, true, SegvKind::AccErr, "write of a read-only page"),
        (none, false, SegvKind::AccErr, "read of a PROT_NONE page"),
        (none, true, SegvKind::AccErr, "write of a PROT_NONE page"),
    ];
    for &(addr, write, kind, what) in cases {
        let want = segv(addr, kind);
        let what = format!("{what} at {addr:#x}");
        if write {
            assert_eq!(p.write(addr, &buf), want, "Mm::write: {what}");
            assert_eq!(p.fill(addr, 16, 7), want, "Mm::fill: {what}");
            assert_eq!(acc.write(addr, &buf), want, "Accessor::write: {what}");
            assert_eq!(acc.fill_bytes(addr, 16, 7), want, "Accessor::fill_bytes: {what}");
        } else {
            assert_eq!(p.read(addr, &mut buf), want, "Mm::read: {what}");
            assert_eq!(acc.read(addr, &mut buf), want, "Accessor::read: {what}");
        }
        assert_unchanged(&p, &before, &what);
    }

    // x86: PROT_WRITE alone is readable.
    let mut b = [0u8; 4];
    p.read(wo, &mut b).unwrap();
    assert_eq!(b[..], before.bytes.iter().find(|x| x.0 == wo).unwrap().1[..4]);
    acc.read(wo, &mut b).unwrap();
    // A read-only page reads.
    acc.read(ro, &mut b).unwrap();
    // Zero length is fine anywhere.
    assert_eq!(p.read(hole, &mut []), Ok(()));
    assert_eq!(p.write(none, &[]), Ok(()));
    assert_eq!(acc.fill_bytes(u64::MAX, 0, 1), Ok(()));
    assert_unchanged(&p, &before, "zero-length accesses");

    // Address + length wrapping around u64: an error, never a panic.
    for addr in [u64::MAX, u64::MAX - 2, u64::MAX - 14] {
        assert!(matches!(p.read(addr, &mut buf), Err(Error::Segv { .. })), "Mm::read at {addr:#x}");
        assert!(matches!(p.write(addr, &buf), Err(Error::Segv { .. })), "Mm::write at {addr:#x}");
        assert!(matches!(acc.read(addr, &mut buf), Err(Error::Segv { .. })), "Accessor::read at {addr:#x}");
        assert!(matches!(acc.write(addr, &buf), Err(Error::Segv { .. })), "Accessor::write at {addr:#x}");
    }
    assert!(matches!(p.fill(A, usize::MAX, 1), Err(Error::Segv { .. })), "Mm::fill wrapping");
    assert!(matches!(acc.fill_bytes(A, usize::MAX, 1), Err(Error::Segv { .. })), "Accessor::fill_bytes wrapping");
    assert!(matches!(p.fill(hole, usize::MAX - 5, 1), Err(Error::Segv { .. })));
    assert_unchanged(&p, &before, "wrapping accesses");

    // An access that runs into a hole or a protected page stops there, as a
    // CPU does: the bytes before it have been written.
    assert_eq!(p.write(hole - 2, b"abcd"), segv(hole, SegvKind::MapErr));
    assert_eq!(read(&p, hole - 2, 2), b"ab");
    let mut two = [0u8; 2];
    assert_eq!(acc.read(A + 12 * PAGE - 1, &mut two), segv(A + 12 * PAGE, SegvKind::MapErr));
    assert_eq!(p.fill(A + 18 * PAGE - 1, 2, 9), segv(A + 18 * PAGE - 1, SegvKind::AccErr));
    check(&p);
}

/// Accesses inside the last page of the 64-bit address space, where the
/// end of the page (2^64) does not fit in a u64 although the access's end
/// does: an error, never a panic (not even an overflow check in a debug
/// build).
#[test]
fn access_in_the_last_page_of_u64_is_an_error_not_a_panic() {
    let (_m, p) = setup();
    let mut acc = p.accessor();
    let before = Snapshot::take(&p);
    let mut buf = [0u8; 16];
    for addr in [TOP_PAGE, u64::MAX - 100] {
        let want = segv(addr, SegvKind::MapErr);
        assert_eq!(p.read(addr, &mut buf), want, "Mm::read at {addr:#x}");
        assert_eq!(p.write(addr, &buf), want, "Mm::write at {addr:#x}");
        assert_eq!(p.fill(addr, 16, 1), want, "Mm::fill at {addr:#x}");
        assert_eq!(acc.read(addr, &mut buf), want, "Accessor::read at {addr:#x}");
        assert_eq!(acc.write(addr, &buf), want, "Accessor::write at {addr:#x}");
        assert_eq!(acc.fill_bytes(addr, 16, 1), want, "Accessor::fill_bytes at {addr:#x}");
    }
    assert_unchanged(&p, &before, "accesses in the last page of u64");
}

#[test]
fn accessor_atomics_bad_input() {
    let (_m, p) = setup();
    let mut acc = p.accessor();
    let before = Snapshot::take(&p);
    let mis = |r: softmm::Result<()>, what: &str| {
        assert!(matches!(r, Err(Error::Misaligned { .. })), "{what}: {r:?}");
        assert_eq!(r.unwrap_err().errno(), EINVAL);
    };
    // Mapped, a hole, read-only, none, and where the word would straddle
    // into a hole: alignment is checked first everywhere.
    for base in [A, A + 4 * PAGE, A + 16 * PAGE, A + 20 * PAGE, A + 4 * PAGE - 8, u64::MAX - 7] {
        for off in [1u64, 2, 3, 4, 5, 6, 7] {
            let a = base + off;
            let w = format!("at {a:#x}");
            mis(acc.load_u64(a).map(drop), &format!("load_u64 {w}"));
            mis(acc.store_u64(a, 1), &format!("store_u64 {w}"));
            mis(acc.cmpxchg_u64(a, 0, 1).map(drop), &format!("cmpxchg_u64 {w}"));
            mis(acc.fetch_add_u64(a, 1).map(drop), &format!("fetch_add_u64 {w}"));
            if off % 4 != 0 {
                mis(acc.load_u32(a).map(drop), &format!("load_u32 {w}"));
                mis(acc.store_u32(a, 1), &format!("store_u32 {w}"));
                mis(acc.cmpxchg_u32(a, 0, 1).map(drop), &format!("cmpxchg_u32 {w}"));
                mis(acc.fetch_add_u32(a, 1).map(drop), &format!("fetch_add_u32 {w}"));
            }
        }
    }
    assert_unchanged(&p, &before, "misaligned atomics");

    // Aligned atomics fault like any access.
    let hole = A + 4 * PAGE;
    assert_eq!(acc.load_u64(hole).map(drop), segv(hole, SegvKind::MapErr));
    assert_eq!(acc.fetch_add_u32(hole + 4, 1).map(drop), segv(hole + 4, SegvKind::MapErr));
    assert_eq!(acc.store_u64(A + 16 * PAGE, 1), segv(A + 16 * PAGE, SegvKind::AccErr));
    assert_eq!(acc.cmpxchg_u64(A + 16 * PAGE, 0, 1).map(drop), segv(A + 16 * PAGE, SegvKind::AccErr));
    assert_eq!(acc.load_u32(A + 20 * PAGE).map(drop), segv(A + 20 * PAGE, SegvKind::AccErr));
    assert!(acc.load_u64(A + 16 * PAGE).is_ok());
    assert!(acc.load_u64(A + 21 * PAGE).is_ok(), "write-only is readable");
    assert_eq!(acc.load_u64(u64::MAX - 7).map(drop), segv(u64::MAX - 7, SegvKind::MapErr));
    assert_unchanged(&p, &before, "faulting atomics");
}

/// `phys` and `smaps` take any address; nothing is mapped outside the user
/// address space, in particular not at an address that differs from a
/// mapped one only above bit 47.
#[test]
fn phys_and_smaps_bad_input() {
    let (_m, p) = setup();
    for addr in [A + (1 << 48), A + (1 << 63), u64::MAX, TASK_SIZE, 1 << 47] {
        assert_eq!(p.phys(addr), None, "phys({addr:#x})");
        assert!(p.smaps(addr).is_none(), "smaps({addr:#x})");
    }
    assert_ne!(p.phys(A), None);
    check(&p);
}

#[test]
fn machine_new_bad_input() {
    for bytes in [0, 1, 4095, 4096, 8191] {
        let r = Machine::new(Config { arena_bytes: bytes, ..Config::default() });
        assert_eq!(r.as_ref().err().map(Error::errno), Some(EINVAL), "arena of {bytes} bytes: {r:?}");
    }
    for bytes in [u64::MAX, 1 << 60, (u32::MAX as u64 + 1) * PAGE] {
        let r = Machine::new(Config { arena_bytes: bytes, ..Config::default() });
        assert!(r.is_err(), "arena of {bytes:#x} bytes");
    }

    // The smallest arena: the zero frame and one more frame.
    let m = Machine::new(Config { arena_bytes: 2 * PAGE + 100, ..Config::default() }).unwrap();
    assert_eq!(m.stats().frames_capacity, 2);
    let p = m.new_mm().unwrap();
    assert_eq!(m.new_mm().unwrap_err().errno(), ENOMEM, "no frame for a second root table");
    map(&p, A, PAGE, Prot::RW, MapKind::Private);
    assert_eq!(p.write(A, b"x").unwrap_err().errno(), ENOMEM);
    assert_eq!(p.read(A, &mut [0]).unwrap_err().errno(), ENOMEM, "no frame for the page tables");
    assert_eq!(p.fork().unwrap_err().errno(), ENOMEM);
    check(&p);
    drop(p);
    assert_eq!(m.stats().frames_in_use, 0);
    m.check_invariants().unwrap();
}

fn page_byte(i: u64) -> u8 {
    (i % 250 + 1) as u8
}

/// Fill pages `from..` of `[base, ...)` until the arena runs out; returns how
/// many were filled and the error.
fn fill_until_full(p: &Mm, base: u64, from: u64, limit: u64) -> (u64, Error) {
    let mut i = from;
    loop {
        assert!(i < limit, "the arena never ran out");
        match p.fill(base + i * PAGE, PAGE as usize, page_byte(i)) {
            Ok(()) => i += 1,
            Err(e) => return (i - from, e),
        }
    }
}

fn assert_full(m: &Machine) {
    let s = m.stats();
    assert_eq!(s.frames_in_use + 1, s.frames_capacity, "ENOMEM with free frames left: {s:?}");
}

/// Running the arena out of frames is ENOMEM from the access that needed one
/// (or the fork), with nothing lost: every frame is used before it happens,
/// earlier data reads back, the audit holds, and freed frames are usable again.
#[test]
fn arena_exhaustion_is_enomem_and_loses_nothing() {
    // Per-CPU free lists are only deterministic on one CPU (see
    // `frames_freed_on_one_cpu_are_usable_on_another` for the other case).
    let cpus = allowed_cpus();
    if let Some(&c) = cpus.first() {
        assert!(pin_to_cpu(c));
    }
    const FRAMES: u64 = 64;
    const PAGES: u64 = 128;
    let m = Machine::new(Config { arena_bytes: FRAMES * PAGE, ..Config::default() }).unwrap();
    let p = m.new_mm().unwrap();
    map(&p, A, PAGES * PAGE, Prot::RW, MapKind::Private);
    let (n, err) = fill_until_full(&p, A, 0, PAGES);
    assert!(matches!(err, Error::NoMemory(_)), "{err:?}");
    assert_eq!(err.errno(), ENOMEM);
    assert_full(&m);
    check(&p);
    let verify = |p: &Mm, pages: std::ops::Range<u64>| {
        for i in pages {
            assert_eq!(read(p, A + i * PAGE, PAGE as usize), vec![page_byte(i); PAGE as usize], "page {i}");
        }
    };
    verify(&p, 0..n);

    // Every path that needs a frame fails the same way, and changes nothing.
    let before = Snapshot::take(&p);
    let next = A + n * PAGE;
    let mut acc = p.accessor();
    assert_eq!(errno_of(p.write(next, b"x")), ENOMEM);
    assert_eq!(errno_of(p.fill(next + 1, 10, 1)), ENOMEM);
    assert_eq!(errno_of(acc.write(next, b"x")), ENOMEM);
    assert_eq!(errno_of(acc.store_u64(next, 1)), ENOMEM);
    assert_eq!(errno_of(acc.fetch_add_u32(next + PAGE, 1)), ENOMEM);
    assert_eq!(errno_of(p.fork()), ENOMEM);
    map(&p, A + PAGES * PAGE, PAGE, Prot::RW, MapKind::Shared);
    assert_eq!(errno_of(p.read(A + PAGES * PAGE, &mut [0])), ENOMEM, "shared page-in");
    assert_eq!(errno_of(acc.load_u32(A + PAGES * PAGE)), ENOMEM, "shared page-in");
    p.munmap(A + PAGES * PAGE, PAGE).unwrap();
    assert_unchanged(&p, &before, "failed allocations");
    assert_eq!(read(&p, next, 2), [0, 0], "the page whose write failed reads as never written");

    // Free twelve frames: fork succeeds; the child breaks COW until the
    // arena is full; the failed COW leaves both sides intact.
    p.munmap(A, 12 * PAGE).unwrap();
    let c = p.fork().unwrap();
    let mut cow = 0;
    let cow_err = loop {
        let i = 12 + cow;
        assert!(i < n, "the arena never ran out during COW");
        match c.fill(A + i * PAGE, 8, 0xcc) {
            Ok(()) => cow += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(cow_err.errno(), ENOMEM, "{cow_err:?}");
    assert!(cow > 0);
    assert_full(&m);
    check(&p);
    verify(&p, 12..n);
    for i in 12..n {
        let mut want = vec![page_byte(i); PAGE as usize];
        if i < 12 + cow {
            want[..8].fill(0xcc);
        }
        assert_eq!(read(&c, A + i * PAGE, PAGE as usize), want, "child page {i}");
    }

    // The child exits: its frames come back and are used again.
    drop(c);
    check(&p);
    let (again, err) = fill_until_full(&p, A, n, PAGES);
    assert_eq!(err.errno(), ENOMEM);
    assert_full(&m);
    assert!(again >= 12, "only {again} pages after freeing at least 12 frames");
    verify(&p, 12..n + again);
    check(&p);
    drop((acc, p));
    assert_eq!(m.stats().frames_in_use, 0);
}

/// A page-table allocation that fails half-way (the upper levels were
/// installed, a lower one found no frame) keeps the page-table count right.
#[test]
fn fault_failing_half_way_keeps_page_table_count() {
    // The zero frame, the root, and one frame: the PUD table gets it, the
    // PMD table finds none.
    let m = Machine::new(Config { arena_bytes: 3 * PAGE, ..Config::default() }).unwrap();
    let p = m.new_mm().unwrap();
    map(&p, A, PAGE, Prot::RW, MapKind::Private);
    assert_eq!(errno_of(p.write(A, b"x")), ENOMEM);
    check(&p);
    drop(p);
    m.check_invariants().unwrap();
    assert_eq!(m.stats().page_tables, 0);
}

/// A fork that runs out of frames half-way through copying the page tables
/// fails with ENOMEM and leaves the parent, and the machine's counts, as
/// they were.
#[test]
fn fork_failing_half_way_changes_nothing() {
    // The zero frame, the parent's four tables and one data page, then two
    // frames: the child's root and its PUD table; its PMD table finds none.
    let m = Machine::new(Config { arena_bytes: 8 * PAGE, ..Config::default() }).unwrap();
    let p = m.new_mm().unwrap();
    map(&p, A, PAGE, Prot::RW, MapKind::Private);
    p.write(A, b"x").unwrap();
    let before = Snapshot::take(&p);
    assert_eq!(errno_of(p.fork()), ENOMEM);
    assert_unchanged(&p, &before, "fork failing half-way");
}

/// The arena is one pool: frames freed by a thread on one CPU must be
/// allocatable by a thread on another before the arena reports ENOMEM.
#[test]
fn frames_freed_on_one_cpu_are_usable_on_another() {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    const FRAMES: u64 = 64;
    let m = Machine::new(Config { arena_bytes: FRAMES * PAGE, ..Config::default() }).unwrap();
    let p = m.new_mm().unwrap();
    map(&p, A, 128 * PAGE, Prot::RW, MapKind::Private);
    let data_frames = FRAMES - 1 - 4; // the zero frame; root, PUD, PMD and PTE tables
    std::thread::scope(|s| {
        // CPU 0: write 40 pages, then unmap them (40 frames freed there).
        s.spawn(|| {
            assert!(pin_to_cpu(cpus[0]));
            for i in 0..40 {
                p.fill(A + i * PAGE, 8, 1).unwrap();
            }
            p.munmap(A, 40 * PAGE).unwrap();
        })
        .join()
        .unwrap();
        // CPU 1: every data frame of the arena is free again.
        let failed = s
            .spawn(|| {
                assert!(pin_to_cpu(cpus[1]));
                (0..data_frames).find_map(|i| p.fill(A + (40 + i) * PAGE, 8, 2).err().map(|e| (i, e)))
            })
            .join()
            .unwrap();
        if let Some((i, e)) = failed {
            panic!("page {i} of {data_frames} failed on the other CPU: {e:?}; {:?}", m.stats());
        }
    });
    check(&p);
}
