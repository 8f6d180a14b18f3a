//! Fused pairs of the decoded-instruction cache (`threaded::fused`): a
//! hart with a cache runs a loop made of fused pairs (loads, stores, ALU
//! ops, branches; 4-byte and compressed encodings) exactly as a hart
//! without one (every instruction fetched and decoded): the same stop, pc,
//! registers, memory and instructions retired, whether the loop ends at an
//! `ecall`, a load fault in the first instruction of a pair or a store
//! fault in the first instruction of a pair. A jump to the second
//! instruction of a pair runs it alone.

use softmm::{Config, Machine, MapKind, Mm, Placement, Prot};
use softmm_rv::hart::{Hart, Stop};
use softmm_rv::icache::{CodeWatch, ICache};
use softmm_rv::mem::Memory;

const CODE: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STACK: u64 = 0x30000;

/// The loop (`riscv64-linux-gnu-as -march=rv64imc`, `.option norvc`):
///
/// ```text
/// 0:  ld a1,0(a0)        ; with bnez: fused
/// 4:  bnez a1,c
/// 8:  ecall
/// c:  addi a0,a0,8       ; with addi: fused
/// 10: addi a2,a2,1
/// 14: lh a3,0(a0)        ; with lh: fused
/// 18: lh a4,2(a0)
/// 1c: mulw a5,a3,a4      ; with ld: fused
/// 20: ld a6,8(sp)
/// 24: addw a5,a5,a6      ; with mv: fused
/// 28: mv a6,a5
/// 2c: sd a5,8(sp)        ; with ld: fused
/// 30: ld a7,16(sp)
/// 34: bne a2,a7,3c
/// 38: j 0
/// 3c: sd a2,-8(a0)       ; with ld: fused
/// 40: ld a1,0(a0)
/// 44: j 0
/// ```
const WIDE: [u32; 18] = [
    0x00053583, 0x00059463, 0x00000073, 0x00850513, 0x00160613, 0x00051683, 0x00251703, 0x02e687bb, 0x00813803,
    0x010787bb, 0x00078813, 0x00f13423, 0x01013883, 0x01161463, 0xfc9ff06f, 0xfec53c23, 0x00053583, 0xfbdff06f,
];

/// The same loop with compressed instructions where they exist (so pairs
/// of 2-byte, 4-byte and mixed lengths), as little-endian halfwords.
const COMPRESSED: [u16; 27] = [
    0x610c, 0xe199, 0x0073, 0x0000, 0x0521, 0x0605, 0x1683, 0x0005, 0x1703, 0x0025, 0x87bb, 0x02e6, 0x6822, 0x87bb,
    0x0107, 0x883e, 0xe43e, 0x68c2, 0x1363, 0x0116, 0xbfe1, 0x3c23, 0xfec5, 0x610c, 0xbfc1, 0, 0,
];

fn code_bytes(compressed: bool) -> Vec<u8> {
    if compressed {
        COMPRESSED.iter().flat_map(|w| w.to_le_bytes()).collect()
    } else {
        WIDE.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// A space with the loop at `CODE`, one page of data words at `DATA`
/// (`zero_at`: the index of a zero word, else none) and after it nothing
/// or (`read_only_after`) a read-only page of nonzero words, and a stack
/// page.
fn space(machine: &Machine, compressed: bool, zero_at: Option<usize>, read_only_after: bool) -> Mm {
    let mm = machine.new_mm().unwrap();
    mm.mmap(CODE, 4096, Prot::RWX, MapKind::Private, Placement::Fixed).unwrap();
    mm.write(CODE, &code_bytes(compressed)).unwrap();
    mm.mmap(DATA, 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
    let words: Vec<u8> = (0..512u64)
        .map(|i| if Some(i as usize) == zero_at { 0 } else { (i + 1).wrapping_mul(0x0003_0005_0007_0009) })
        .flat_map(|w| w.to_le_bytes())
        .collect();
    mm.write(DATA, &words).unwrap();
    mm.mmap(STACK, 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
    mm.write(STACK + 16, &100u64.to_le_bytes()).unwrap();
    if read_only_after {
        mm.mmap(DATA + 4096, 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        mm.write(DATA + 4096, &[0x5a; 4096]).unwrap();
        mm.mprotect(DATA + 4096, 4096, Prot::READ).unwrap();
    }
    mm
}

/// What a run ends with: the stop, pc, registers, instructions retired
/// and the stack page's first words.
#[derive(Debug, PartialEq)]
struct End {
    stop: Stop,
    pc: u64,
    x: [u64; 32],
    instret: u64,
    stack: Vec<u8>,
}

fn run(compressed: bool, zero_at: Option<usize>, read_only_after: bool, cached: bool) -> End {
    let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() }).unwrap();
    let mm = space(&machine, compressed, zero_at, read_only_after);
    let (watch, _sub) = CodeWatch::register(&mm).expect("softmm is built with MMU notifiers");
    let mut h = Hart::new(Memory::new(mm.accessor()), CODE, 0);
    if cached {
        h.set_icache(ICache::new(watch));
    }
    h.x[2] = STACK; // sp
    h.x[10] = DATA; // a0
    let stop = h.run();
    let mut stack = vec![0; 64];
    mm.read(STACK, &mut stack).unwrap();
    End { stop, pc: h.pc, x: h.x, instret: h.instret, stack }
}

fn same_as_uncached(zero_at: Option<usize>, read_only_after: bool) -> End {
    let mut last = None;
    for compressed in [false, true] {
        let plain = run(compressed, zero_at, read_only_after, false);
        let cached = run(compressed, zero_at, read_only_after, true);
        assert_eq!(cached, plain, "compressed: {compressed}");
        last = Some(cached);
    }
    last.unwrap()
}

#[test]
fn a_loop_of_pairs_ends_at_an_ecall_as_uncached() {
    let end = same_as_uncached(Some(300), false);
    assert_eq!(end.stop, Stop::Ecall);
    assert_eq!(end.x[12], 300, "a2 counts the words before the zero");
}

#[test]
fn a_load_fault_in_a_pair_stops_there_as_uncached() {
    // The `lh` at the top of a fused pair reads past the data page.
    let end = same_as_uncached(None, false);
    assert!(matches!(end.stop, Stop::Fault(_)), "{:?}", end.stop);
    assert_eq!(end.x[12], 512);
}

#[test]
fn a_store_fault_in_a_pair_stops_there_as_uncached() {
    // `sd a2,-8(a0)` (the top of a fused pair) into the read-only page
    // after the data; the `ld` after it must not have run.
    let end = same_as_uncached(None, true);
    assert!(matches!(end.stop, Stop::Fault(_)), "{:?}", end.stop);
    assert_eq!(end.x[12], 513);
    assert_eq!(end.x[11], 0x5a5a_5a5a_5a5a_5a5a, "a1 holds the read-only page's first word");
}

/// The loop runs many times (so every pair is filled and fused), and its
/// taken branches go to the second instruction of no pair; this one does:
/// `j 4` into the `bnez` of the `ld`/`bnez` pair, with a1 set by hand.
#[test]
fn a_jump_into_a_pair_runs_its_second_instruction_alone() {
    let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() }).unwrap();
    let mm = space(&machine, false, Some(5), false);
    let (watch, _sub) = CodeWatch::register(&mm).expect("softmm is built with MMU notifiers");
    let mut h = Hart::new(Memory::new(mm.accessor()), CODE, 0);
    h.set_icache(ICache::new(watch));
    h.x[2] = STACK;
    h.x[10] = DATA;
    assert_eq!(h.run(), Stop::Ecall);
    assert_eq!(h.x[12], 5);
    // At the `bnez` with a1 = 0: the ecall, the `ld` before it not run
    // (a0 points at the zero word's successor, whose word is not 0).
    h.pc = CODE + 4;
    h.x[11] = 0;
    let before = h.instret;
    assert_eq!(h.run(), Stop::Ecall);
    assert_eq!(h.pc, CODE + 12);
    assert_eq!(h.instret - before, 2, "the bnez and the ecall");
    assert_eq!(h.x[11], 0);
}
