//! Stacks that grow down (`MAP_GROWSDOWN`, Linux's `expand_downwards`)
//! and the guard gap other mappings and the heap keep below them.

mod common;
use common::*;
use softmm::errno::EINVAL;
use softmm::{Error, GuestWords, MapFlags, MapKind, Mm, Placement, Prot, SegvKind};

const PAGE: u64 = 4096;
const TOP: u64 = 0x7000_0000;
const GAP: u64 = 256 * PAGE;

fn stack(mm: &Mm, top: u64, pages: u64) -> u64 {
    let start = top - pages * PAGE;
    mm.mmap_with(start, pages * PAGE, Prot::RW, MapKind::Private, Placement::Fixed, MapFlags::GROWSDOWN).unwrap()
}

fn maperr(addr: u64) -> Error {
    Error::Segv { addr, kind: SegvKind::MapErr }
}

#[test]
fn a_cpu_access_below_a_stack_grows_it() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    let start = stack(&mm, TOP, 2);
    mm.write(start, b"top").unwrap();
    // An accessor store 10 pages below the stack grows it to there.
    let mut acc = mm.accessor();
    acc.store_u32(start - 10 * PAGE + 8, 7).unwrap();
    assert_eq!(mm.maps().len(), 1);
    assert_eq!(mm.maps()[0].range, start - 10 * PAGE..TOP);
    assert_eq!(acc.load_u32(start - 10 * PAGE + 8).unwrap(), 7);
    // So does a remote access (`Mm::write`, as a CPU would).
    mm.write(start - 20 * PAGE, b"low").unwrap();
    assert_eq!(mm.maps()[0].range, start - 20 * PAGE..TOP);
    assert_eq!(read(&mm, start, 3), b"top");
    // Within 8 MiB only.
    let limit = TOP - (8 << 20);
    assert_eq!(acc.load_u32(limit - PAGE), Err(maperr(limit - PAGE)));
    acc.store_u32(limit, 1).unwrap();
    drop(acc);
    let c = mm.fork().unwrap();
    assert_eq!(read(&c, start - 20 * PAGE, 3), b"low");
    check(&mm);
}

#[test]
fn a_stack_keeps_its_guard_gap() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    let start = stack(&mm, TOP, 1);
    let below = start - GAP - 4 * PAGE;
    map(&mm, below, PAGE, Prot::READ, MapKind::Private);
    // The stack grows no closer than the gap to an accessible mapping.
    let lowest = below + PAGE + GAP;
    assert_eq!(mm.write(lowest - PAGE, b"x"), Err(maperr(lowest - PAGE)));
    mm.write(lowest, b"x").unwrap();
    // A PROT_NONE mapping below does not count.
    mm.mprotect(below, PAGE, Prot::NONE).unwrap();
    mm.write(below + PAGE, b"y").unwrap();
    assert_eq!(mm.maps()[1].range.start, below + PAGE);
    // No stack above: an access in a hole is a plain map error.
    assert_eq!(mm.write(0x100_0000, b"z"), Err(maperr(0x100_0000)));
    // Shared memory cannot grow.
    let shared = mm.mmap_with(0x200_0000, PAGE, Prot::RW, MapKind::Shared, Placement::Fixed, MapFlags::GROWSDOWN);
    assert_eq!(shared.unwrap_err().errno(), EINVAL);
    check(&mm);
}

#[test]
fn the_heap_stays_clear_of_a_stack_gap() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    let heap = 0x100_0000;
    mm.set_start_brk(heap).unwrap();
    let start = stack(&mm, heap + GAP + 8 * PAGE, 4);
    // brk may come to a page below the gap under the stack, not into it.
    let limit = start - GAP - PAGE;
    assert_eq!(mm.brk(limit).unwrap(), limit);
    assert_eq!(mm.brk(limit + PAGE).unwrap(), limit);
    check(&mm);
}

#[test]
fn placed_mappings_keep_out_of_the_guard_gap() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    let start = stack(&mm, TOP, 1);
    // A hint inside the gap is not taken; one below it is.
    let hint = start - 2 * PAGE;
    let got = mm.mmap(hint, PAGE, Prot::RW, MapKind::Private, Placement::Hint).unwrap();
    assert_ne!(got, hint);
    let below = start - GAP - PAGE;
    assert_eq!(mm.mmap(below, PAGE, Prot::RW, MapKind::Private, Placement::Hint).unwrap(), below);
    // MAP_FIXED may map into the gap, as in Linux.
    assert_eq!(mm.mmap(hint, PAGE, Prot::RW, MapKind::Private, Placement::Fixed).unwrap(), hint);
    check(&mm);
}

#[test]
fn top_down_placement_skips_a_stack_gap() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    let top = softmm::TASK_SIZE;
    let start = stack(&mm, top, 1);
    let got = mm.mmap(0, PAGE, Prot::RW, MapKind::Private, Placement::Hint).unwrap();
    assert_eq!(got, start - GAP - PAGE);
}
