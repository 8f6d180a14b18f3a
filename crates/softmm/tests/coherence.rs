//! The coherence checker for secondary MMUs: a shadow TLB (the example in
//! `examples/shadow_tlb.rs`) reads through its cached translations on real
//! threads while the primary unmaps, remaps, write-protects, forks and
//! copies on write, swaps out and migrates. Each page holds a stamp (its
//! address and a generation). A read through the shadow returns either a
//! miss or the page's own stamp with a generation at least the one the
//! primary had finished publishing (its `invalidate_range_end` returned)
//! before the read began: never another page's frame, never a frame the
//! primary let go.

// Callbacks are what these tests check; a build without notifiers has none.
#![cfg(not(softmm_no_notifiers))]

#[path = "../examples/shadow_tlb.rs"]
mod shadow_tlb;

#[path = "../examples/device_mirror.rs"]
mod device_mirror;

use device_mirror::DeviceMirror;
use shadow_tlb::{ShadowRead, ShadowTlb};
use softmm::reclaim::device::MemSwap;
use softmm::{Config, Machine, MapKind, Mm, Placement, Prot, SwapConfig};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

const BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
const PAGES: u64 = 32;

/// The stamp of page `p` at generation `g`: page number in the high half.
fn stamp(p: u64, g: u32) -> u32 {
    ((p as u32) << 20) | (g & 0xfffff)
}

/// A secondary MMU as the checker drives it.
trait Secondary: Send + Sync {
    /// A read through a cached translation; `None` is a miss.
    fn read(&self, machine: &Machine, va: u64) -> Option<u32>;
    /// The secondary's own fault path after a miss.
    fn fill(&self, mm: &Mm, va: u64);
}

impl Secondary for ShadowTlb {
    fn read(&self, machine: &Machine, va: u64) -> Option<u32> {
        match self.read_u32(machine, va) {
            ShadowRead::Hit(v) => Some(v),
            ShadowRead::Miss => None,
        }
    }
    fn fill(&self, mm: &Mm, va: u64) {
        ShadowTlb::fill(self, mm, va);
    }
}

impl Secondary for DeviceMirror {
    fn read(&self, machine: &Machine, va: u64) -> Option<u32> {
        self.read_u32(machine, va)
    }
    fn fill(&self, mm: &Mm, va: u64) {
        self.fault(mm, va);
    }
}

#[test]
fn shadow_tlb_reads_are_current_or_miss_under_every_change() {
    check_coherence(|mm| {
        let shadow = Arc::new(ShadowTlb::default());
        let sub = mm.register_notifier(shadow.clone());
        (shadow as Arc<dyn Secondary>, Box::new(sub) as Box<dyn std::any::Any>)
    });
}

#[test]
fn device_mirror_reads_are_current_or_miss_under_every_change() {
    check_coherence(|mm| {
        let dev = Arc::new(DeviceMirror::new(mm, BASE, PAGES * PAGE).expect("interval"));
        (dev as Arc<dyn Secondary>, Box::new(()) as Box<dyn std::any::Any>)
    });
}

/// Drive a secondary made by `attach` (which also returns what keeps it
/// subscribed) with two reader threads while the primary changes pages.
fn check_coherence(attach: impl FnOnce(&Mm) -> (Arc<dyn Secondary>, Box<dyn std::any::Any>)) {
    let swap = Arc::new(MemSwap::new(16 << 20).expect("swap"));
    let machine = Machine::new(Config { arena_bytes: 64 << 20, swap: SwapConfig::Device(swap), ..Config::default() })
        .expect("machine");
    let mm = Arc::new(machine.new_mm().expect("mm"));
    mm.mmap(BASE, PAGES * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    // done[p]: generation whose write and invalidations have completed.
    let done: Arc<Vec<AtomicU32>> = Arc::new((0..PAGES).map(|_| AtomicU32::new(0)).collect());
    // zeroing[p]: the page is between a change that makes it read as zeros
    // (munmap and mmap again, DONTNEED) and the write of its next stamp.
    let zeroing: Arc<Vec<AtomicBool>> = Arc::new((0..PAGES).map(|_| AtomicBool::new(false)).collect());
    for p in 0..PAGES {
        mm.write(BASE + p * PAGE, &stamp(p, 1).to_ne_bytes()).expect("write");
        done[p as usize].store(1, Ordering::Release);
    }
    let (shadow, _keep) = attach(&mm);
    let stop = Arc::new(AtomicBool::new(false));
    let at = Arc::new(AtomicU32::new(0));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (mm, shadow, done, stop, machine, zeroing, at) =
                (mm.clone(), shadow.clone(), done.clone(), stop.clone(), machine.clone(), zeroing.clone(), at.clone());
            std::thread::spawn(move || {
                let (mut hits, mut i) = (0u64, t as u64);
                while !stop.load(Ordering::Relaxed) {
                    let p = i % PAGES;
                    i += 7;
                    let va = BASE + p * PAGE;
                    let zero_ok = zeroing[p as usize].load(Ordering::Acquire);
                    let floor = done[p as usize].load(Ordering::Acquire);
                    match shadow.read(&machine, va) {
                        Some(0) if zero_ok => hits += 1,
                        Some(v) => {
                            hits += 1;
                            assert_eq!(
                                v >> 20,
                                p as u32,
                                "page {p}: read another page's frame ({v:#x}); primary at round {}",
                                at.load(Ordering::Relaxed)
                            );
                            assert!(v & 0xfffff >= floor, "page {p}: stale generation {} < {floor}", v & 0xfffff);
                        }
                        None => shadow.fill(&mm, va),
                    }
                }
                hits
            })
        })
        .collect();
    let mut generation = 1u32;
    for round in 0..3000u32 {
        let p = u64::from(round) % PAGES;
        at.store(round, Ordering::Relaxed);
        let va = BASE + p * PAGE;
        generation += 1;
        let zeroes = matches!(round % 6, 0 | 5);
        if zeroes {
            zeroing[p as usize].store(true, Ordering::Release);
        }
        match round % 6 {
            0 => {
                // munmap and map again: the old frame goes back to the arena.
                mm.munmap(va, PAGE).expect("munmap");
                mm.mmap(va, PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
            }
            1 => {
                mm.mprotect(va, PAGE, Prot::READ).expect("mprotect");
                mm.mprotect(va, PAGE, Prot::RW).expect("mprotect");
            }
            2 => {
                // fork, then the parent's write copies the page.
                let child = mm.fork().expect("fork");
                mm.write(va, &stamp(p, generation).to_ne_bytes()).expect("cow");
                drop(child);
            }
            3 => {
                machine.reclaim(8);
            }
            4 => {
                let _ = mm.migrate(va);
            }
            _ => {
                mm.madvise(va, PAGE, softmm::Advice::DontNeed).expect("madvise");
            }
        }
        mm.write(va, &stamp(p, generation).to_ne_bytes()).expect("write");
        done[p as usize].store(generation, Ordering::Release);
        zeroing[p as usize].store(false, Ordering::Release);
    }
    // A quiet moment, so that the readers also hit on stable pages.
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let hits: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(hits > 0, "the shadow never hit");
    mm.check_invariants().expect("audit");
}
