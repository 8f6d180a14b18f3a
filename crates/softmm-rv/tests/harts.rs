//! Harts on host threads sharing one softmm address space: LR/SC and AMOs
//! are atomic across them, and bad accesses are guest faults (values), not
//! host faults.

use softmm::{Config, Machine, MapKind, Mm, Placement, Prot, SegvKind};
use softmm_rv::hart::{Hart, Stop};
use softmm_rv::mem::{FaultKind, GuestFault, Memory};

const CODE: u64 = 0x10000;
const DATA: u64 = 0x20000;

/// ```text
/// loop: lr.w.aqrl t0,(a0); addi t0,t0,1; sc.w.aqrl t1,t0,(a0); bnez t1,loop
///       amoadd.d zero,a2,(a3); amomax.w zero,a1,(a4)
///       addi a1,a1,-1; bnez a1,loop; ecall
/// ```
const COUNT_LOOP: [u32; 9] =
    [0x160522af, 0x00128293, 0x1e55232f, 0xfe031ae3, 0x00c6b02f, 0xa0b7202f, 0xfff58593, 0xfe0592e3, 0x00000073];

fn space(code: &[u32]) -> (Machine, Mm) {
    let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() }).unwrap();
    let mm = machine.new_mm().unwrap();
    mm.mmap(CODE, 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
    let bytes: Vec<u8> = code.iter().flat_map(|w| w.to_le_bytes()).collect();
    mm.write(CODE, &bytes).unwrap();
    mm.mprotect(CODE, 4096, Prot::RX).unwrap();
    mm.mmap(DATA, 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
    (machine, mm)
}

fn hart(mm: &Mm, regs: &[(usize, u64)]) -> Hart {
    let mut h = Hart::new(Memory::new(mm.accessor()), CODE, 0);
    for &(r, v) in regs {
        h.x[r] = v;
    }
    h
}

#[test]
fn lr_sc_and_amos_are_atomic_across_harts() {
    const N: u64 = 200_000;
    let (_machine, mm) = space(&COUNT_LOOP);
    let regs = [(10, DATA), (11, N), (12, 1), (13, DATA + 8), (14, DATA + 16)];
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut h = hart(&mm, &regs);
                start.wait();
                assert_eq!(h.run(), Stop::Ecall);
            });
        }
    });
    let mut acc = mm.accessor();
    use softmm::GuestWords;
    assert_eq!(acc.load_u32(DATA).unwrap(), 2 * N as u32, "lr/sc increments lost");
    assert_eq!(acc.load_u64(DATA + 8).unwrap(), 2 * N, "amoadd increments lost");
    assert_eq!(acc.load_u32(DATA + 16).unwrap(), N as u32, "amomax");
}

#[test]
fn misaligned_lr_is_sigbus() {
    let (_machine, mm) = space(&COUNT_LOOP);
    let mut h = hart(&mm, &[(10, DATA + 2), (11, 1)]);
    assert_eq!(h.run(), Stop::Fault(GuestFault { addr: DATA + 2, kind: FaultKind::Misaligned }));
    assert_eq!(h.pc, CODE, "pc stays at the faulting instruction");
}

#[test]
fn unmapped_read_only_and_non_executable_accesses_are_sigsegv() {
    let (_machine, mm) = space(&COUNT_LOOP);
    let mut h = hart(&mm, &[(10, 0x5000_0000), (11, 1)]);
    assert_eq!(h.run(), Stop::Fault(GuestFault { addr: 0x5000_0000, kind: FaultKind::Segv(SegvKind::MapErr) }));
    // The AMO after a successful LR/SC targets the read-only code page.
    let mut h = hart(&mm, &[(10, DATA), (11, 1), (13, CODE)]);
    assert_eq!(h.run(), Stop::Fault(GuestFault { addr: CODE, kind: FaultKind::Segv(SegvKind::AccErr) }));
    assert_eq!(h.pc, CODE + 16);
    // Jumping to unmapped memory faults on the fetch.
    let mut h = hart(&mm, &[]);
    h.pc = 0x7000_0000;
    assert_eq!(h.run(), Stop::Fault(GuestFault { addr: 0x7000_0000, kind: FaultKind::Segv(SegvKind::MapErr) }));
    // Jumping to the data page (mapped without PROT_EXEC) faults on the
    // fetch as an access error.
    let mut h = hart(&mm, &[]);
    h.pc = DATA;
    assert_eq!(h.run(), Stop::Fault(GuestFault { addr: DATA, kind: FaultKind::Segv(SegvKind::AccErr) }));
}

/// Random instruction words (and random registers) never take the host
/// down: every run ends in an ecall, a fault, an illegal instruction or a
/// breakpoint, or is still running after its step budget. Run in a debug
/// build too, where arithmetic overflow would panic.
#[test]
fn random_code_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut retired = 0;
    for _ in 0..200 {
        let code: Vec<u32> = (0..1024).map(|_| next() as u32).collect();
        let (_machine, mm) = space(&code);
        let mut h = hart(&mm, &[]);
        for r in 1..32 {
            // Half the registers point into the data page, so loads and
            // stores hit mapped memory too.
            h.x[r] = if r % 2 == 0 { DATA + (next() & 0xff8) } else { next() };
        }
        for r in 0..32 {
            h.f[r] = next();
        }
        for _ in 0..2_000 {
            match h.step() {
                Ok(()) | Err(Stop::Ecall) => {}
                Err(_) => break,
            }
        }
        retired += h.instret;
    }
    // The runs executed code rather than stopping at once.
    assert!(retired > 2_000, "only {retired} instructions retired");
}

/// ```text
/// loop: lw t0,0(a0); addi a1,zero,42; beqz t0,loop; addi a0,a1,0; ecall
/// ```
const SPIN: [u32; 5] = [0x00052283, 0x00000593 | (42 << 20), 0xfe028ce3, 0x00058513, 0x00000073];

/// A code change flushed (`riscv_flush_icache`) before a flag that a hart
/// spinning in the same page reads is what that hart runs right after the
/// load that saw the flag, though it never left the page: the page loop
/// looks at the cache's generation after every load, not only when it
/// enters a page. Each round is a race the stale code would win most of the
/// time (the flag follows the flush by nanoseconds, the page loop runs up
/// to a thousand instructions between other looks).
#[test]
fn code_flushed_before_a_flag_is_seen_right_after_the_flag() {
    use softmm::GuestWords;
    use softmm_rv::icache::{CodeWatch, ICache};
    let (_machine, mm) = space(&SPIN);
    mm.mprotect(CODE, 4096, Prot::RWX).unwrap();
    let Some((watch, _sub)) = CodeWatch::register(&mm) else { return };
    let mut h = hart(&mm, &[]);
    h.set_icache(ICache::new(watch.clone()));
    let li = |v: u32| (0x00000593u32 | (v << 20)).to_le_bytes();
    for round in 0..20u32 {
        mm.write(CODE + 4, &li(100 + round)).unwrap();
        watch.flush_all();
        let mut acc = mm.accessor();
        acc.store_u32(DATA, 0).unwrap();
        h.pc = CODE;
        h.x[10] = DATA;
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                mm.write(CODE + 4, &li(200 + round)).unwrap();
                watch.flush_all();
                acc.store_u32(DATA, 1).unwrap();
            });
            assert_eq!(h.run(), Stop::Ecall);
        });
        assert_eq!(h.x[10], u64::from(200 + round), "round {round} ran stale code");
    }
}
