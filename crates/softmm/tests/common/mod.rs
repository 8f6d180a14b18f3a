//! Helpers shared by the integration tests.
#![allow(dead_code)]

use softmm::{Config, Machine, MapKind, Mapping, Mm, Placement, Prot};

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

/// Everything a failing call must leave alone: the mappings, which frame
/// backs each page, the bytes of every readable page, and the frame and
/// page-table counts. Taking it reads readable pages (faulting in the zero
/// frame), so take it twice around the call: before and after.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub mappings: Vec<Mapping>,
    pub frames: Vec<(u64, Option<softmm::FrameId>)>,
    pub bytes: Vec<(u64, Vec<u8>)>,
    pub frames_in_use: u64,
    pub page_tables: u64,
}

impl Snapshot {
    pub fn take(mm: &Mm) -> Snapshot {
        let mappings = mm.mappings();
        let mut frames = Vec::new();
        let mut bytes = Vec::new();
        for m in &mappings {
            let (start, end) = (m.range.start, m.range.end);
            if m.prot != Prot::NONE {
                bytes.push((start, read(mm, start, (end - start) as usize)));
            }
            for va in (start..end).step_by(4096) {
                frames.push((va, mm.phys(va)));
            }
        }
        let st = mm.machine().stats();
        Snapshot { mappings, frames, bytes, frames_in_use: st.frames_in_use, page_tables: st.page_tables }
    }
}

/// Run the machine audit and check that `mm` still looks as in `before`.
#[track_caller]
pub fn assert_unchanged(mm: &Mm, before: &Snapshot, what: &str) {
    if let Err(e) = mm.check_invariants() {
        panic!("{what}: {e}");
    }
    let now = Snapshot::take(mm);
    assert_eq!(now.mappings, before.mappings, "{what}: mappings changed");
    assert_eq!(now.frames, before.frames, "{what}: frames changed");
    assert!(now.bytes == before.bytes, "{what}: contents changed");
    assert_eq!(
        (now.frames_in_use, now.page_tables),
        (before.frames_in_use, before.page_tables),
        "{what}: frames or page tables in use changed"
    );
}

/// The errno of a failed call (panics on success).
#[track_caller]
pub fn errno_of<T: std::fmt::Debug>(r: softmm::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.errno(),
    }
}

extern "C" {
    fn sched_setaffinity(pid: i32, cpusetsize: usize, mask: *const u64) -> i32;
    fn sched_getaffinity(pid: i32, cpusetsize: usize, mask: *mut u64) -> i32;
}

/// The CPUs this thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    let mut mask = [0u64; 16];
    // SAFETY: glibc's sched_getaffinity writes at most `size_of_val(&mask)`
    // bytes into `mask`, which is that large and lives across the call.
    let rc = unsafe { sched_getaffinity(0, std::mem::size_of_val(&mask), mask.as_mut_ptr()) };
    if rc != 0 {
        return Vec::new();
    }
    (0..mask.len() * 64).filter(|&c| mask[c / 64] >> (c % 64) & 1 != 0).collect()
}

/// Pin the calling thread to one CPU (so that per-CPU caches are
/// deterministic). Returns whether it worked.
pub fn pin_to_cpu(cpu: usize) -> bool {
    let mut mask = [0u64; 16];
    if cpu >= mask.len() * 64 {
        return false;
    }
    mask[cpu / 64] |= 1 << (cpu % 64);
    // SAFETY: glibc's sched_setaffinity reads `size_of_val(&mask)` bytes from
    // `mask`, which is that large and lives across the call.
    unsafe { sched_setaffinity(0, std::mem::size_of_val(&mask), mask.as_ptr()) == 0 }
}
