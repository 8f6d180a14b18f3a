//! softmm memory through rust-vmm's `vm_memory::Bytes`: objects across page
//! boundaries, atomics on the frames' bytes, and errors that keep softmm's
//! reason and say how far a transfer got, for `Mm` (no TLB) and for
//! `SharedAccessor` (the TLB path).

use softmm::{
    errno, BytesError, Config, Error, GuestWords, Machine, MapKind, Mm, Placement, Prot, SegvKind, SharedAccessor,
};
use std::sync::atomic::Ordering;
use vm_memory::{ByteValued, Bytes, GuestAddress};

const PAGE: u64 = 4096;
const BASE: u64 = 0x40_0000;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Header {
    magic: u32,
    flags: u16,
    kind: u8,
    pad: u8,
    len: u64,
    tail: [u8; 16],
}

// SAFETY: a `repr(C)` struct of integers with no padding (4 + 2 + 1 + 1 + 8
// + 16 bytes, every field at its natural alignment): every byte pattern is a
// valid value.
unsafe impl ByteValued for Header {}

fn header() -> Header {
    Header { magic: 0xfeed_f00d, flags: 0x1234, kind: 7, pad: 0, len: u64::MAX - 5, tail: *b"softmm-vm-memory" }
}

/// A space with two RW pages at `BASE`, a read-only page after them and a
/// hole after that.
fn space(m: &Machine) -> Mm {
    let mm = m.new_mm().unwrap();
    mm.mmap(BASE, 2 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
    mm.mmap(BASE + 2 * PAGE, PAGE, Prot::READ, MapKind::Private, Placement::Fixed).unwrap();
    mm
}

fn machine() -> Machine {
    Machine::new(Config { arena_bytes: 256 * PAGE, ..Config::default() }).unwrap()
}

fn segv(e: &BytesError) -> Option<(u64, SegvKind)> {
    match e.mm_error() {
        Some(&Error::Segv { addr, kind }) => Some((addr, kind)),
        _ => None,
    }
}

/// `write_obj` and `read_obj` of a struct that straddles a page boundary,
/// through `b`; the bytes are where `Mm::read` finds them.
fn round_trip(mm: &Mm, b: &impl Bytes<GuestAddress, E = BytesError>) {
    let at = BASE + PAGE - 10;
    b.write_obj(header(), GuestAddress(at)).unwrap();
    assert_eq!(b.read_obj::<Header>(GuestAddress(at)).unwrap(), header());
    let mut raw = [0u8; std::mem::size_of::<Header>()];
    mm.read(at, &mut raw).unwrap();
    assert_eq!(raw, *header().as_slice(), "the object's bytes are in guest memory");
    b.write_obj(0u8, GuestAddress(at)).unwrap();
    assert_eq!(b.read_obj::<u32>(GuestAddress(at)).unwrap(), 0xfeed_f000);
}

#[test]
fn objects_round_trip_across_a_page_boundary() {
    let m = machine();
    let mm = space(&m);
    round_trip(&mm, &mm);
    let mem = SharedAccessor::new(mm.accessor());
    mm.fill(BASE, 2 * PAGE as usize, 0).unwrap();
    round_trip(&mm, &mem);
    drop(mem);
    mm.check_invariants().unwrap();
}

/// Atomic `store`/`load` act on the frame's bytes: what one path stores,
/// the accessor's atomic words, `Mm::read` and another space sharing the
/// memory see; a store into a COW page breaks COW like any write.
fn atomics(mm: &Mm, b: &impl Bytes<GuestAddress, E = BytesError>) {
    b.store(0x0102_0304_0506_0708u64, GuestAddress(BASE + 8), Ordering::SeqCst).unwrap();
    assert_eq!(b.load::<u64>(GuestAddress(BASE + 8), Ordering::SeqCst).unwrap(), 0x0102_0304_0506_0708);
    b.store(-2i32, GuestAddress(BASE + 16), Ordering::Release).unwrap();
    assert_eq!(b.load::<i32>(GuestAddress(BASE + 16), Ordering::Acquire).unwrap(), -2);
    b.store(9u16, GuestAddress(BASE + PAGE + 2), Ordering::Relaxed).unwrap();
    assert_eq!(b.load::<u8>(GuestAddress(BASE + PAGE + 2), Ordering::Relaxed).unwrap(), 9);
    let mut acc = mm.accessor();
    assert_eq!(acc.load_u64(BASE + 8).unwrap(), 0x0102_0304_0506_0708);
    assert_eq!(acc.load_word::<u32>(BASE + 16).unwrap(), u32::MAX - 1);
    assert_eq!(acc.load_word::<u16>(BASE + PAGE + 2).unwrap(), 9);
    acc.store_word(BASE + 24, 77u8).unwrap();
    assert_eq!(b.load::<u8>(GuestAddress(BASE + 24), Ordering::Acquire).unwrap(), 77);

    // Alignment as vm-memory's `AtomicAccess` has it: a multiple of the size.
    let mis = b.load::<u32>(GuestAddress(BASE + 2), Ordering::SeqCst).unwrap_err();
    assert!(matches!(mis.mm_error(), Some(Error::Misaligned { .. })), "{mis}");
    assert_eq!(mis.errno(), errno::EINVAL);
    assert!(b.store(1u64, GuestAddress(BASE + 4), Ordering::SeqCst).is_err());
    // Orderings std atomics refuse are an error, not a panic.
    let bad = b.load::<u32>(GuestAddress(BASE), Ordering::Release).unwrap_err();
    assert_eq!(bad.mm_error(), Some(&Error::Invalid("an atomic load cannot have Release ordering")));
    assert!(b.store(1u32, GuestAddress(BASE), Ordering::AcqRel).is_err());
    assert!(b.store(1u32, GuestAddress(BASE), Ordering::Acquire).is_err());

    // Read-only and unmapped words.
    assert_eq!(b.load::<u32>(GuestAddress(BASE + 2 * PAGE), Ordering::SeqCst).unwrap(), 0);
    let ro = b.store(1u32, GuestAddress(BASE + 2 * PAGE), Ordering::SeqCst).unwrap_err();
    assert_eq!(segv(&ro), Some((BASE + 2 * PAGE, SegvKind::AccErr)));
    let un = b.load::<u64>(GuestAddress(BASE + 3 * PAGE), Ordering::SeqCst).unwrap_err();
    assert_eq!(segv(&un), Some((BASE + 3 * PAGE, SegvKind::MapErr)));
    assert_eq!(un.errno(), errno::EFAULT);
}

#[test]
fn atomic_load_and_store_act_on_the_frames() {
    let m = machine();
    let mm = space(&m);
    atomics(&mm, &mm);
    let other = space(&m);
    let mem = SharedAccessor::new(other.accessor());
    atomics(&other, &mem);

    // COW: a store in the child after fork leaves the parent's word alone.
    let child = other.fork().unwrap();
    let cmem = SharedAccessor::new(child.accessor());
    cmem.store(5u64, GuestAddress(BASE + 8), Ordering::SeqCst).unwrap();
    assert_eq!(mem.load::<u64>(GuestAddress(BASE + 8), Ordering::SeqCst).unwrap(), 0x0102_0304_0506_0708);
    assert_ne!(child.phys(BASE), other.phys(BASE));

    // Shared memory: a store in one space is a load in the other.
    let s = m.new_mm().unwrap();
    s.mmap(BASE, PAGE, Prot::RW, MapKind::Shared, Placement::Fixed).unwrap();
    let sc = s.fork().unwrap();
    s.store(0xabcdu32, GuestAddress(BASE + 4), Ordering::Release).unwrap();
    assert_eq!(sc.load::<u32>(GuestAddress(BASE + 4), Ordering::Acquire).unwrap(), 0xabcd);
    drop((mem, cmem));
    mm.check_invariants().unwrap();
}

/// Errors keep softmm's reason and say how many bytes were transferred;
/// `read`/`write` return a short count instead, as `Bytes` documents.
fn errors(mm: &Mm, b: &impl Bytes<GuestAddress, E = BytesError>) {
    // An object straddling the end of the writable pages: 6 bytes fit.
    let at = BASE + 2 * PAGE - 6;
    let e = b.write_obj(header(), GuestAddress(at)).unwrap_err();
    assert_eq!(segv(&e), Some((BASE + 2 * PAGE, SegvKind::AccErr)));
    assert_eq!(e.completed(), 6);
    assert_eq!(e.errno(), errno::EFAULT);
    let mut six = [0u8; 6];
    mm.read(at, &mut six).unwrap();
    assert_eq!(six, header().as_slice()[..6], "the bytes before the fault were written");
    assert_eq!(b.write(&[1; 100], GuestAddress(at)).unwrap(), 6, "a short write");
    assert!(b.write(&[1; 100], GuestAddress(BASE + 2 * PAGE)).is_err(), "nothing written is an error");
    assert_eq!(b.write(&[], GuestAddress(BASE + 9 * PAGE)).unwrap(), 0);

    // Reading: the read-only page reads (zero), the hole after it faults.
    let at = BASE + 3 * PAGE - 3;
    let e = b.read_obj::<u64>(GuestAddress(at)).unwrap_err();
    assert_eq!(segv(&e), Some((BASE + 3 * PAGE, SegvKind::MapErr)));
    assert_eq!(e.completed(), 3);
    let mut buf = [9u8; 64];
    assert_eq!(b.read(&mut buf, GuestAddress(at)).unwrap(), 3);
    assert_eq!(buf[..3], [0, 0, 0]);
    let e = b.read_slice(&mut buf, GuestAddress(BASE + 5 * PAGE)).unwrap_err();
    assert_eq!((segv(&e), e.completed()), (Some((BASE + 5 * PAGE, SegvKind::MapErr)), 0));
    assert!(b.read(&mut buf, GuestAddress(u64::MAX - 10)).is_err(), "the top of the address space");
}

#[test]
fn errors_keep_the_softmm_reason_and_the_progress() {
    let m = machine();
    let mm = space(&m);
    errors(&mm, &mm);
    let mem = SharedAccessor::new(mm.accessor());
    errors(&mm, &mem);
    let acc = mem.into_inner();
    drop(acc);
    mm.check_invariants().unwrap();
}

/// Volatile I/O: from a host reader into guest memory and back out, across
/// pages; a refused destination takes nothing from the reader.
fn volatile_io(b: &impl Bytes<GuestAddress, E = BytesError>) {
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut src: &[u8] = &data;
    assert_eq!(b.read_volatile_from(GuestAddress(BASE + 100), &mut src, 5000).unwrap(), 5000);
    let mut out = Vec::new();
    b.write_all_volatile_to(GuestAddress(BASE + 100), &mut out, 5000).unwrap();
    assert_eq!(out, data);

    // Into the read-only page: nothing copied, nothing consumed.
    let mut src: &[u8] = &data;
    let e = b.read_volatile_from(GuestAddress(BASE + 2 * PAGE), &mut src, 10).unwrap_err();
    assert_eq!(segv(&e), Some((BASE + 2 * PAGE, SegvKind::AccErr)));
    assert_eq!(src.len(), data.len(), "the reader's bytes stay with the reader");
    // Up to it: the bytes that fit, and the reader keeps the rest.
    let mut src: &[u8] = &data;
    assert_eq!(b.read_volatile_from(GuestAddress(BASE + 2 * PAGE - 8), &mut src, 100).unwrap(), 8);
    assert_eq!(src.len(), data.len() - 8);
    // A reader that ends early: `_exact` says so.
    let mut short: &[u8] = &data[..10];
    let e = b.read_exact_volatile_from(GuestAddress(BASE), &mut short, 20).unwrap_err();
    assert!(matches!(e, BytesError::Short { completed: 10, expected: 20 }), "{e}");
    // Out of a range that runs into the hole.
    let mut out = Vec::new();
    let e = b.write_all_volatile_to(GuestAddress(BASE + 3 * PAGE - 4), &mut out, 10).unwrap_err();
    assert_eq!((segv(&e), e.completed()), (Some((BASE + 3 * PAGE, SegvKind::MapErr)), 4));
    assert_eq!(out.len(), 4);
}

#[test]
fn volatile_io_through_a_bounce_buffer() {
    let m = machine();
    let mm = space(&m);
    volatile_io(&mm);
    let other = space(&m);
    volatile_io(&SharedAccessor::new(other.accessor()));
    mm.check_invariants().unwrap();
}

/// Code written for rust-vmm guests, generic over `Bytes`, runs on softmm.
fn checksum<M: Bytes<GuestAddress>>(mem: &M, at: GuestAddress, len: usize) -> Result<u32, M::E> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, at)?;
    Ok(buf.iter().map(|&b| u32::from(b)).sum())
}

#[test]
fn generic_vm_memory_code_runs_unchanged() {
    let m = machine();
    let mm = space(&m);
    mm.write(BASE + PAGE - 2, &[1, 2, 3, 4]).unwrap();
    assert_eq!(checksum(&mm, GuestAddress(BASE + PAGE - 2), 4).unwrap(), 10);
    let mem = SharedAccessor::new(mm.accessor());
    assert_eq!(checksum(&mem, GuestAddress(BASE + PAGE - 2), 4).unwrap(), 10);
    assert_eq!(checksum(&mem, GuestAddress(BASE + 3 * PAGE - 2), 4).unwrap_err().completed(), 2);
}
