//! Real threads over a fork tree under a frame limit: writers and readers
//! fault pages in and out of swap while other threads fork, exit, migrate
//! and run the reclaim clock, with and without the background reclaimer.
//! Every value read is the last one its thread wrote; the audit holds at
//! the end.

mod common;

use common::check;
use softmm::reclaim::device::MemSwap;
use softmm::GuestWords;
use softmm::{Config, Error, ForkPolicy, Machine, MapKind, Mm, Placement, Prot, SwapConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
const PAGES: u64 = 256;
const ROUNDS: u32 = 100;
const CHURN: u64 = 1000;

fn machine(limit_pages: u64, background: bool) -> Machine {
    let swap = Arc::new(MemSwap::new(64 << 20).expect("swap"));
    Machine::new(Config {
        arena_bytes: 64 << 20,
        mem_limit: Some(limit_pages * PAGE),
        swap: SwapConfig::Device(swap),
        background_reclaim: background,
        ..Config::default()
    })
    .expect("machine")
}

/// A worker owns one forked space and one word per page: it stores a
/// counter there and checks it reads back its own last store.
/// Runs at least `ROUNDS` rounds and until the churn thread has done
/// `CHURN` rounds; returns the rounds done.
fn worker(mm: Arc<Mm>, id: u64, churned: Arc<AtomicU64>) -> Result<u32, String> {
    let mut acc = mm.accessor();
    let mut last = vec![0u32; PAGES as usize];
    let mut round = 0u32;
    while round < ROUNDS || (churned.load(Ordering::Relaxed) < CHURN && churned.load(Ordering::Relaxed) != u64::MAX) {
        round += 1;
        for p in (id % 3..PAGES).step_by(3) {
            let va = BASE + p * PAGE + 8 * id;
            let got = acc.load_u32(va).expect("load");
            if got != last[p as usize] {
                churned.store(u64::MAX, Ordering::Relaxed);
                let stats = mm.machine().stats();
                return Err(format!(
                    "worker {id} page {p} round {round}: read {got}, wrote {}; phys {:?} misses {} stats {stats:?}",
                    last[p as usize],
                    mm.phys(va),
                    acc.misses()
                ));
            }
            let v = round.wrapping_mul(1000).wrapping_add(p as u32);
            acc.store_u32(va, v).expect("store");
            last[p as usize] = v;
        }
    }
    Ok(round)
}

#[test]
fn writers_readers_fork_exit_migrate_and_reclaim_under_a_limit() {
    // Without the background reclaimer every fault at the limit reclaims
    // for itself; with it, it runs the clock alongside them too.
    let runs = [(ForkPolicy::SharedTables, false), (ForkPolicy::CopyTables, false)];
    let runs = runs.into_iter().chain([(ForkPolicy::SharedTables, true), (ForkPolicy::CopyTables, true)]);
    for (policy, background) in runs {
        let m = machine(PAGES / 2, background);
        let root = m.new_mm().expect("mm");
        root.mmap(BASE, PAGES * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        for p in 0..PAGES {
            root.write(BASE + p * PAGE, &[0u8; 64]).expect("touch");
        }
        let spaces: Vec<Arc<Mm>> = (0..3).map(|_| Arc::new(root.fork_with(policy).expect("fork"))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let churned = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = spaces
            .iter()
            .enumerate()
            .map(|(i, mm)| {
                let mm = mm.clone();
                let churned = churned.clone();
                std::thread::spawn(move || worker(mm, i as u64, churned))
            })
            .collect();
        // Churn: fork and exit children of the root and of the workers'
        // spaces (they share the workers' frames and swap slots), migrate
        // pages, and run the clock.
        let churn = {
            let spaces = spaces.clone();
            let stop = stop.clone();
            let churned = churned.clone();
            let m = m.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = (n % spaces.len() as u64) as usize;
                    match spaces[k].fork_with(policy) {
                        Ok(child) => {
                            let mut b = [0u8; 4];
                            let _ = child.read(BASE + (n % PAGES) * PAGE, &mut b);
                            drop(child);
                        }
                        Err(Error::NoMemory(_)) => {}
                        Err(e) => panic!("fork: {e}"),
                    }
                    let at = BASE + ((n * 7) % PAGES) * PAGE;
                    match spaces[k].migrate(at) {
                        Ok(_)
                        | Err(Error::Busy(_))
                        | Err(Error::Fault { .. })
                        | Err(Error::Invalid(_))
                        | Err(Error::NoMemory(_)) => {}
                        Err(e) => panic!("migrate: {e}"),
                    }
                    m.reclaim(8);
                    n += 1;
                    if churned.load(Ordering::Relaxed) == u64::MAX {
                        break;
                    }
                    churned.store(n, Ordering::Relaxed);
                }
                n
            })
        };
        let results: Vec<Result<u32, String>> = workers.into_iter().map(|w| w.join().expect("worker")).collect();
        stop.store(true, Ordering::Relaxed);
        let rounds = churn.join().expect("churn");
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            let pages: Vec<_> = (0..PAGES).map(|p| root.phys(BASE + p * PAGE)).collect();
            panic!(
                "{policy:?} background {background}: {e}; audit: {:?}; root phys {pages:?}",
                root.check_invariants()
            );
        }
        let rounds_done: Vec<u32> = results.into_iter().map(|r| r.unwrap_or(0)).collect();
        assert!(rounds >= CHURN || rounds == u64::MAX);
        let s = m.stats();
        assert!(s.swap_outs > 0 && s.swap_ins > 0, "{policy:?}: no swapping: {s:?}");
        if background {
            assert!(s.background_reclaimed > 0, "{policy:?}: the background reclaimer never ran: {s:?}");
        } else {
            assert!(s.direct_reclaims > 0 && s.background_reclaimed == 0, "{policy:?}: no direct reclaim: {s:?}");
        }
        check(&root);
        // Every worker's final values are still there, through a fresh path.
        for (i, mm) in spaces.iter().enumerate() {
            for p in (i as u64 % 3..PAGES).step_by(3) {
                let mut b = [0u8; 4];
                mm.read(BASE + p * PAGE + 8 * i as u64, &mut b).expect("read");
                assert_eq!(u32::from_ne_bytes(b), rounds_done[i].wrapping_mul(1000).wrapping_add(p as u32));
            }
        }
        drop(spaces);
        drop(root);
        // A background round may hold the last pages (and address space)
        // for a moment: the audit waits for it.
        m.check_invariants().expect("audit after exit");
        assert_eq!(m.stats().frames_in_use, 0);
        assert_eq!(m.stats().swap_used, 0);
    }
}
