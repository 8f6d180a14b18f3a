//! The decoded-instruction cache against softmm's snapshots: a hart that
//! keeps its cache across `Mm::restore` runs the snapshot's code again.

use softmm::{Config, Machine, MapKind, Mm, Placement, Prot, Subscription};
use softmm_rv::hart::{Hart, Stop};
use softmm_rv::icache::{CodeWatch, ICache};
use softmm_rv::mem::Memory;
use std::sync::Arc;

const CODE: u64 = 0x10000;

/// `addi a0, zero, value ; ecall`.
fn returns(value: u32) -> Vec<u8> {
    [0x0000_0513 | (value << 20), 0x0000_0073].iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Run from `CODE` to the ecall; a0.
fn run(h: &mut Hart) -> u64 {
    h.pc = CODE;
    assert_eq!(h.run(), Stop::Ecall);
    h.x[10]
}

/// A space with `returns(1)` at `CODE` (read, write, execute), its
/// `CodeWatch`, and a hart that caches decoded instructions over it. Bind
/// every field: the subscription must live as long as the test.
struct Cached {
    mm: Mm,
    watch: Arc<CodeWatch>,
    h: Hart,
    _sub: Subscription,
    _machine: Machine,
}

fn cached_hart() -> Cached {
    let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() }).unwrap();
    let mm = machine.new_mm().unwrap();
    mm.mmap(CODE, 4096, Prot::RWX, MapKind::Private, Placement::Fixed).unwrap();
    mm.write(CODE, &returns(1)).unwrap();
    let (watch, sub) = CodeWatch::register(&mm).expect("softmm is built with MMU notifiers");
    let mut h = Hart::new(Memory::new(mm.accessor()), CODE, 0);
    h.set_icache(ICache::new(watch.clone()));
    Cached { mm, watch, h, _sub: sub, _machine: machine }
}

/// Run code, snapshot, overwrite the code page (as a debugger's poke would:
/// through the space, not through the hart), flush the hart's cache as
/// `riscv_flush_icache` does, run the new code; restore; run again: the
/// old code runs.
///
/// The restore is the only thing between the last two runs: it puts the
/// snapshot's frame back under `CODE` in one `Event::Restore` bracket, and
/// `CodeWatch` bumps its generation for it, so the hart drops its decoded
/// `li a0, 2` and fetches `li a0, 1` again. With that invalidation skipped
/// (`Event::Restore` taken out of `CodeWatch`'s list, tried locally), the
/// hart would answer 2 from its cache. The snapshot server keeps each
/// hart's cache across runs on this rule.
#[test]
fn restore_invalidates_decoded_code() {
    let Cached { mm, watch, mut h, _sub, _machine } = cached_hart();
    assert_eq!(run(&mut h), 1);
    let snap = mm.snapshot().unwrap();
    assert_eq!(run(&mut h), 1, "a snapshot changes no code");
    mm.write(CODE, &returns(2)).unwrap();
    watch.flush_all();
    assert_eq!(run(&mut h), 2, "the rewritten code runs after a flush");
    assert_eq!(run(&mut h), 2, "and again from the cache");
    mm.restore(&snap).unwrap();
    assert_eq!(run(&mut h), 1, "the restored code runs, not the cached decoding");
    // A second round: the snapshot survives a restore.
    mm.write(CODE, &returns(3)).unwrap();
    watch.flush_all();
    assert_eq!(run(&mut h), 3);
    mm.restore(&snap).unwrap();
    assert_eq!(run(&mut h), 1);
}

/// Without the flush, a write through the space (a copy-on-write break of
/// the snapshot's shared frame: `Event::Cow`, which keeps the bytes) is
/// not seen by a hart that cached the page: the RISC-V rule that stores to
/// code need `fence.i`. This is what makes the test above depend on the
/// restore's invalidation and not on the write's.
#[test]
fn a_store_to_code_needs_a_flush() {
    let Cached { mm, watch, mut h, _sub, _machine } = cached_hart();
    assert_eq!(run(&mut h), 1);
    let _snap = mm.snapshot().unwrap();
    // The snapshot write-protects the page (Event::Protection drops the
    // cache); this run decodes it again.
    assert_eq!(run(&mut h), 1);
    mm.write(CODE, &returns(2)).unwrap();
    assert_eq!(run(&mut h), 1, "the cached decoding runs until a flush");
    watch.flush_all();
    assert_eq!(run(&mut h), 2);
}
