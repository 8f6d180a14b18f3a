//! Helpers shared by the integration tests.
#![allow(dead_code)]

use softmm::{Config, Machine, MapKind, Mm, Placement, Prot};

pub fn machine() -> Machine {
    Machine::new(Config { arena_bytes: 256 << 20, ..Config::default() }).expect("arena")
}

pub fn map(mm: &Mm, addr: u64, len: u64, prot: Prot, kind: MapKind) {
    mm.mmap(addr, len, prot, kind, Placement::Fixed).expect("mmap");
}

pub fn read(mm: &Mm, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    mm.read(addr, &mut v).expect("read");
    v
}

pub fn check(mm: &Mm) {
    if let Err(e) = mm.check_invariants() {
        panic!("{e}");
    }
}
