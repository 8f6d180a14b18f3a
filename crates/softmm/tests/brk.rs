//! The program break: Linux's brk system call on a heap VMA.

mod common;
use common::*;
use softmm::errno::{EINVAL, EPERM};
use softmm::{MapKind, Prot};

const PAGE: u64 = 4096;
const HEAP: u64 = 0x0060_0000;

#[test]
fn brk_grows_shrinks_and_reads() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    mm.set_start_brk(HEAP + 1).unwrap(); // rounded up to a page
    assert_eq!(mm.brk(0).unwrap(), HEAP + PAGE, "brk(0) reads the break");
    let start = HEAP + PAGE;
    assert_eq!(mm.brk(start + 10).unwrap(), start + 10);
    let maps = mm.maps();
    assert_eq!(maps.len(), 1);
    assert_eq!((maps[0].range.clone(), maps[0].perms()), (start..start + PAGE, "rw-p".to_string()));
    mm.write(start, b"heap").unwrap();
    // Growing within the same page changes no VMA; growing further extends it.
    assert_eq!(mm.brk(start + PAGE).unwrap(), start + PAGE);
    assert_eq!(mm.brk(start + 3 * PAGE).unwrap(), start + 3 * PAGE);
    assert_eq!(mm.maps().len(), 1);
    assert_eq!(mm.maps()[0].range, start..start + 3 * PAGE);
    // Below the heap's start: refused, the break stays.
    assert_eq!(mm.brk(start - 1).unwrap(), start + 3 * PAGE);
    // Shrinking unmaps; growing again gives zeros.
    mm.write(start + 2 * PAGE, b"x").unwrap();
    assert_eq!(mm.brk(start + PAGE + 1).unwrap(), start + PAGE + 1);
    assert_eq!(mm.maps()[0].range, start..start + 2 * PAGE);
    assert_eq!(mm.brk(start + 3 * PAGE).unwrap(), start + 3 * PAGE);
    assert_eq!(read(&mm, start + 2 * PAGE, 1), [0]);
    assert_eq!(read(&mm, start, 4), b"heap");
    // A fork inherits the break.
    let c = mm.fork().unwrap();
    assert_eq!(c.brk(0).unwrap(), start + 3 * PAGE);
    assert_eq!(mm.set_start_brk(HEAP).unwrap_err().errno(), EINVAL, "the heap has grown");
    check(&mm);
}

#[test]
fn brk_refuses_to_run_into_a_mapping() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    mm.set_start_brk(HEAP).unwrap();
    map(&mm, HEAP + 8 * PAGE, PAGE, Prot::READ, MapKind::Private);
    // A page must stay free below the next mapping.
    assert_eq!(mm.brk(HEAP + 7 * PAGE).unwrap(), HEAP + 7 * PAGE);
    assert_eq!(mm.brk(HEAP + 7 * PAGE + 1).unwrap(), HEAP + 7 * PAGE);
    assert_eq!(mm.brk(u64::MAX).unwrap(), HEAP + 7 * PAGE);
    // The heap does not merge with a mapping below its start.
    let m2 = machine();
    let mm2 = m2.new_mm().unwrap();
    map(&mm2, HEAP - PAGE, PAGE, Prot::RW, MapKind::Private);
    mm2.set_start_brk(HEAP).unwrap();
    assert_eq!(mm2.brk(HEAP + PAGE).unwrap(), HEAP + PAGE);
    assert_eq!(mm2.maps().len(), 2);
    // A heap munmapped away: shrinking is refused.
    mm2.munmap(HEAP, PAGE).unwrap();
    assert_eq!(mm2.brk(HEAP).unwrap(), HEAP + PAGE);
    assert_eq!(mm2.set_start_brk(0x1000).unwrap_err().errno(), EINVAL);
    check(&mm2);
}

#[test]
fn the_default_heap_starts_after_the_highest_mapping() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    let empty = m.new_mm().unwrap();
    assert_eq!(empty.brk(0).unwrap(), 0x10000, "mmap_min_addr when nothing is mapped");
    assert_eq!(empty.set_start_brk(0x1000).unwrap_err().errno(), EPERM);
    map(&mm, HEAP, 2 * PAGE, Prot::RW, MapKind::Private);
    assert_eq!(mm.brk(0).unwrap(), HEAP + 2 * PAGE);
    // Adjacent and alike, but the heap's VMA starts at its own start.
    assert_eq!(mm.brk(HEAP + 3 * PAGE).unwrap(), HEAP + 3 * PAGE);
    assert_eq!(mm.maps().len(), 2);
    check(&mm);
}
