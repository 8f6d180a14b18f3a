//! The background reclaimer (kswapd-like): it frees frames up to its high
//! watermark after faults push the free frames under its low one, audits
//! running meanwhile see no batch half done, and it stops with the machine,
//! even in the middle of a round.
//!
//! The tests here run one at a time (`ONE_AT_A_TIME`): they count the
//! process's reclaimer threads.

mod common;

use common::check;
use softmm::reclaim::device::{MemSwap, SwapDevice};
use softmm::reclaim::watermarks;
use softmm::GuestWords;
use softmm::{Config, Machine, MapKind, Placement, Prot, SwapConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
const LIMIT: u64 = 512;
const PAGES: u64 = 2048;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn machine(background: bool) -> Machine {
    Machine::new(Config {
        arena_bytes: 64 << 20,
        mem_limit: Some(LIMIT * PAGE),
        swap: SwapConfig::Device(Arc::new(MemSwap::new(64 << 20).expect("swap"))),
        prezero: false,
        background_reclaim: background,
        ..Config::default()
    })
    .expect("machine")
}

/// Threads of this process named as the background reclaimer.
fn reclaimer_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "softmm-kswapd")
        .count()
}

/// `reclaimer_threads()` once it reaches `n`, or after `within`: a new
/// thread names itself once it runs, and a joined one leaves `/proc` a
/// moment after its joiner wakes.
fn reclaimer_threads_reaching(n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let now = reclaimer_threads();
        if now == n || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn free(m: &Machine) -> u64 {
    LIMIT - m.stats().frames_in_use
}

/// Write every page (each stamped with its index), then check them all,
/// through an accessor: its accesses hold no frame references an audit
/// running meanwhile could see (`Mm::read` drops its reference only after
/// the `mmap_lock`).
fn write_then_verify(mm: &softmm::Mm) {
    let mut acc = mm.accessor();
    for i in 0..PAGES {
        acc.store_u64(BASE + i * PAGE, i).expect("write");
    }
    for i in 0..PAGES {
        assert_eq!(acc.load_u64(BASE + i * PAGE).expect("read"), i, "page {i}");
    }
}

#[test]
#[cfg_attr(miri, ignore)] // real threads and timing; Linux's /proc
fn background_reclaim_keeps_frames_free_and_stops_with_the_machine() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (low, high) = watermarks(LIMIT);
    assert!(0 < low && low < high && high < LIMIT);
    let before = reclaimer_threads();

    // Without it, faults reclaim for themselves and leave the limit full.
    let m = machine(false);
    assert_eq!(reclaimer_threads(), before, "no thread unless asked for");
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, PAGES * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    write_then_verify(&mm);
    let s = m.stats();
    assert!(s.direct_reclaims > 0 && s.background_reclaimed == 0, "{s:?}");
    assert!(free(&m) < low, "nobody reclaims beyond what faults need: {} free", free(&m));
    drop(mm);
    drop(m);

    // With it: whenever faults leave fewer than `low` frames free, it
    // wakes and frees up to `high`, so once they stop at least `low` are
    // free; audits run meanwhile (they wait for its rounds).
    let m = machine(true);
    assert_eq!(reclaimer_threads_reaching(before + 1, Duration::from_secs(5)), before + 1);
    let mm = Arc::new(m.new_mm().expect("mm"));
    mm.mmap(BASE, PAGES * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mm, done) = (mm.clone(), done.clone());
        std::thread::spawn(move || {
            write_then_verify(&mm);
            done.store(true, Ordering::Release);
        })
    };
    let mut audits = 0;
    while !done.load(Ordering::Acquire) {
        check(&mm);
        audits += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    writer.join().expect("writer");
    let deadline = Instant::now() + Duration::from_secs(20);
    while free(&m) < low && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = m.stats();
    assert!(free(&m) >= low, "{} frames free, low watermark {low}: {s:?}", free(&m));
    assert!(s.background_reclaimed > 0, "{s:?}");
    assert!(audits > 0);
    check(&mm);
    // Every page survived (some came back from swap).
    write_then_verify(&mm);

    // Dropping the machine's last handle stops and joins the thread.
    drop(mm);
    assert_eq!(reclaimer_threads(), before + 1, "the address spaces' handles are gone, the machine's is not");
    // Well within its idle timeout (100 ms), after which an orphaned
    // thread would notice on its own.
    drop(m);
    assert_eq!(reclaimer_threads_reaching(before, Duration::from_millis(50)), before, "joined when the machine goes");
}

/// A device whose writes wait until the test opens it.
#[derive(Debug)]
struct Gate {
    inner: MemSwap,
    open: Mutex<bool>,
    opened: Condvar,
    writing: AtomicBool,
}

impl Gate {
    fn wait(&self) {
        self.writing.store(true, Ordering::Release);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.opened.notify_all();
    }
}

impl SwapDevice for Gate {
    fn slots(&self) -> u64 {
        self.inner.slots()
    }
    fn write_page(&self, slot: u64, page: &[u8; 4096]) -> std::io::Result<()> {
        self.wait();
        self.inner.write_page(slot, page)
    }
    fn write_pages(&self, first: u64, pages: &[[u8; 4096]]) -> std::io::Result<()> {
        self.wait();
        self.inner.write_pages(first, pages)
    }
    fn read_page(&self, slot: u64, page: &mut [u8; 4096]) -> std::io::Result<()> {
        self.inner.read_page(slot, page)
    }
    fn describe(&self) -> String {
        "gate".into()
    }
}

/// Dropping the last handles while the reclaimer is in the middle of a
/// round waits for the round: the machine (and its swap device, a file
/// to remove) is gone when the drop returns, not whenever the reclaimer
/// lets go of it (after the process may have exited).
#[test]
#[cfg_attr(miri, ignore)] // real threads and timing
fn dropping_the_machine_mid_round_waits_for_the_round() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let gate = Arc::new(Gate {
        inner: MemSwap::new(64 << 20).expect("swap"),
        open: Mutex::new(false),
        opened: Condvar::new(),
        writing: AtomicBool::new(false),
    });
    let m = Machine::new(Config {
        arena_bytes: 64 << 20,
        mem_limit: Some(LIMIT * PAGE),
        swap: SwapConfig::Device(gate.clone()),
        prezero: false,
        background_reclaim: true,
        ..Config::default()
    })
    .expect("machine");
    let mm = m.new_mm().expect("mm");
    // Under the low watermark, not at the limit: the reclaimer wakes and
    // blocks writing its first batch; no fault has to reclaim.
    let (low, _) = watermarks(LIMIT);
    let pages = LIMIT - low / 2;
    mm.mmap(BASE, pages * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    for i in 0..pages {
        mm.write(BASE + i * PAGE, &i.to_le_bytes()).expect("write");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gate.writing.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(gate.writing.load(Ordering::Acquire), "the reclaimer never wrote: {:?}", m.stats());
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            gate.open();
        });
        drop(mm);
        drop(m);
        assert_eq!(Arc::strong_count(&gate), 1, "the machine still holds its device after its last handle went");
    });
}
