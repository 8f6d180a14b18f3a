//! Real-thread stress of futexes through the guest mutex
//! (`softmm::futex::mutex::GuestMutex`), in both key modes:
//!
//! - `shared_mutex_two_spaces_under_cow_churn`: 8 threads in two forked
//!   address spaces (4 each) share a MAP_SHARED page holding the mutex word
//!   and a counter, and lock / increment / unlock 100,000 times in total,
//!   while another thread keeps forking both spaces and writing private
//!   pages next to the shared page (COW in the same PTE table) and in the
//!   next 2 MiB (a PTE table shared at fork, so the writes unshare it), in
//!   the forked copies and in the two spaces themselves, then letting the
//!   copies exit.
//! - `private_mutex_waiters_follow_cow`: 4 threads of one address space use
//!   a mutex word in *private* memory while a forker thread forks the space,
//!   keeps the copy alive for a moment (so the next write of the word in the
//!   space is a COW that gives the page a new frame while waiters sleep on
//!   the old one; in physical key mode the vcache must move them), writes
//!   the copy's pages, wakes the word from the copy (a wake that may reach
//!   the space's sleepers through the shared frame: a spurious wake the
//!   mutex must absorb), and lets the copy exit.
//!
//! The increment is a plain load and store through the accessor (in half
//! the threads, each iteration in one accessor batch), so a broken mutex
//! shows as a lost update; the count must be exact. No thread
//! may hang: every run has a deadline, and missing it fails the test with
//! the state of the words instead of hanging. `check_invariants` runs
//! between the phases.

mod common;
use common::check;
use softmm::futex::mutex::GuestMutex;
use softmm::{Config, FutexKeys, GuestWords, Machine, MapKind, Mm, Placement, Prot};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE: u64 = 4096;
/// 2 MiB aligned: the shared page is the first page of a PTE table.
const BASE: u64 = 0x4000_0000;
/// Private pages in the same PTE table as the shared page (that table is
/// never shared at fork: it maps shared memory).
const NEAR: u64 = BASE + PAGE;
/// Private pages in the next PTE table (shared at fork, unshared on write).
const NEXT: u64 = BASE + (2 << 20);
const PRIVATE_PAGES: u64 = 16;
/// The mutex word and the counter it protects.
const WORD_OFF: u64 = 0;
const COUNTER_OFF: u64 = 64;
/// Forks the churn thread makes at least, even if the lockers finish first.
const MIN_FORKS: u64 = 20;
/// A run that takes longer than this is a hang.
const DEADLINE: Duration = Duration::from_secs(120);

fn machine(keys: FutexKeys) -> Machine {
    Machine::new(Config { arena_bytes: 256 << 20, futex_keys: keys, ..Config::default() }).expect("machine")
}

fn map(mm: &Mm, addr: u64, len: u64, kind: MapKind) {
    mm.mmap(addr, len, Prot::RW, kind, Placement::Fixed).expect("mmap");
}

/// Lock, add one to the u64 at `counter` with a plain load and store, unlock;
/// at least `min` times, then until `stop` is set (if given). Every 32nd
/// time the thread yields while holding the mutex, so that the others find
/// it locked and go to sleep on the futex. Odd-numbered threads (`t`) run
/// each iteration in one accessor batch, so batches meet the forks, COW
/// faults and unshares of the churn (which wait for them) and the sleeps
/// of the mutex (which leave them). Returns how many increments it made.
fn lock_loop(
    mm: &Mm,
    t: u64,
    mutex: GuestMutex,
    counter: u64,
    min: u64,
    stop: Option<&AtomicBool>,
) -> softmm::Result<u64> {
    let mut acc = mm.accessor();
    let mut n = 0;
    while n < min || stop.is_some_and(|s| !s.load(Ordering::Acquire)) {
        if t % 2 == 1 {
            increment(mm, &mut acc.batch(), mutex, counter, n)?;
        } else {
            increment(mm, &mut acc, mutex, counter, n)?;
        }
        n += 1;
    }
    Ok(n)
}

/// One locked increment of `lock_loop` (the `n`th).
fn increment(mm: &Mm, w: &mut impl GuestWords, mutex: GuestMutex, counter: u64, n: u64) -> softmm::Result<()> {
    mutex.lock(mm, w)?;
    let v = w.load_u64(counter)?;
    if n % 32 == 0 {
        std::thread::yield_now();
    }
    w.store_u64(counter, v + 1)?;
    mutex.unlock(mm, w)
}

/// Write a tag to the first word of every private page of `mm`.
fn scribble(mm: &Mm, tag: u64) -> softmm::Result<()> {
    let mut acc = mm.accessor();
    for i in 0..PRIVATE_PAGES {
        acc.store_u64(NEAR + i * PAGE, tag)?;
        acc.store_u64(NEXT + i * PAGE, tag)?;
    }
    Ok(())
}

/// What a thread reports when it is done: who, and a count or an error.
type Done = (String, Result<u64, String>);

/// Wait for `n` reports on `rx`; panic (with `state()`) if any failed or if
/// the deadline passes. Returns the sum of the counts.
fn collect(rx: &mpsc::Receiver<Done>, n: usize, state: impl Fn() -> String) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    let mut sum = 0;
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Ok(k))) => sum += k,
            Ok((who, Err(e))) => panic!("{who} failed: {e}; {}", state()),
            Err(_) => panic!("a thread is stuck after {DEADLINE:?} (lost wake-up?); {}", state()),
        }
    }
    sum
}

fn spawn(tx: &mpsc::Sender<Done>, who: String, f: impl FnOnce() -> Result<u64, String> + Send + 'static) {
    let tx = tx.clone();
    std::thread::spawn(move || {
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err("panicked".to_string()));
        let _ = tx.send((who, r));
    });
}

fn shared_mutex_two_spaces(keys: FutexKeys) {
    const TOTAL: u64 = 100_000;
    const PER_SPACE: u64 = 4;
    let m = machine(keys);
    let parent = Arc::new(m.new_mm().expect("mm"));
    map(&parent, BASE, PAGE, MapKind::Shared);
    map(&parent, NEAR, PRIVATE_PAGES * PAGE, MapKind::Private);
    map(&parent, NEXT, PRIVATE_PAGES * PAGE, MapKind::Private);
    scribble(&parent, 1).expect("populate");
    let child = Arc::new(parent.fork().expect("fork"));
    check(&parent);

    let mutex = GuestMutex::new(BASE + WORD_OFF).expect("mutex");
    let counter = BASE + COUNTER_OFF;
    let lockers_done = Arc::new(AtomicBool::new(false));
    let before = m.stats();
    let (tx, rx) = mpsc::channel();
    let threads = 2 * PER_SPACE;
    let per_thread = TOTAL / threads;
    let (ltx, lrx) = mpsc::channel();
    for (name, mm) in [("parent", &parent), ("child", &child)] {
        for t in 0..PER_SPACE {
            let mm = mm.clone();
            spawn(&ltx, format!("{name} locker {t}"), move || {
                lock_loop(&mm, t, mutex, counter, per_thread, None).map_err(|e| e.to_string())
            });
        }
    }
    // The churn: fork one of the two spaces, write private pages in the copy
    // (COW, unshare) and in the forked space (COW: fork write-protected
    // them), wake the mutex word from the copy now and then, exit the copy.
    {
        let (parent, child, done) = (parent.clone(), child.clone(), lockers_done.clone());
        spawn(&tx, "forker".into(), move || {
            let mut n = 0u64;
            while n < MIN_FORKS || !done.load(Ordering::Acquire) {
                let from = if n % 2 == 0 { &parent } else { &child };
                let copy = from.fork().map_err(|e| format!("fork: {e}"))?;
                scribble(&copy, n + 2).map_err(|e| format!("writing the copy: {e}"))?;
                scribble(from, n + 2).map_err(|e| format!("writing the forked space: {e}"))?;
                if n % 4 == 1 {
                    copy.futex_wake(mutex.addr(), 1).map_err(|e| format!("wake from the copy: {e}"))?;
                }
                drop(copy);
                n += 1;
            }
            Ok(n)
        });
    }
    let state = || {
        let mut acc = parent.accessor();
        format!(
            "{keys:?}: word {:?}, counter {:?} of {TOTAL}, vcache entries parent {} child {}",
            acc.load_u32(mutex.addr()),
            acc.load_u64(counter),
            parent.vcache_entries(),
            child.vcache_entries()
        )
    };
    let made = collect(&lrx, threads as usize, state);
    assert_eq!(made, TOTAL);
    lockers_done.store(true, Ordering::Release);
    let forks = collect(&rx, 1, state);

    let mut acc = parent.accessor();
    assert_eq!(acc.load_u64(counter).unwrap(), per_thread * threads, "{}", state());
    assert_eq!(acc.load_u32(mutex.addr()).unwrap(), 0, "the mutex is left unlocked");
    assert_eq!((parent.vcache_entries(), child.vcache_entries()), (0, 0), "no waiter left behind");
    assert!(forks >= MIN_FORKS);
    let after = m.stats();
    let (cows, unshares) = (after.fault_cow_copy - before.fault_cow_copy, after.table_copies - before.table_copies);
    assert!(cows > 0 && unshares > 0, "the churn made {cows} COW copies and {unshares} table copies");
    drop(acc);
    check(&parent);
    drop(child);
    check(&parent);
}

#[test]
fn shared_mutex_two_spaces_under_cow_churn() {
    for keys in [FutexKeys::Physical, FutexKeys::Linux] {
        shared_mutex_two_spaces(keys);
    }
}

fn private_mutex(keys: FutexKeys) {
    const THREADS: u64 = 4;
    /// Increments per locker at least; they go on until the forker is done.
    const MIN_ITERS: u64 = 25_000;
    const FORKS: u64 = 1_500;
    let m = machine(keys);
    let mm = Arc::new(m.new_mm().expect("mm"));
    // All private: the word's page shares its PTE table with the others, so
    // forks share that table and the first write after one unshares it.
    map(&mm, BASE, PAGE + PRIVATE_PAGES * PAGE, MapKind::Private);
    map(&mm, NEXT, PRIVATE_PAGES * PAGE, MapKind::Private);
    scribble(&mm, 1).expect("populate");
    let mutex = GuestMutex::new(BASE + WORD_OFF).expect("mutex");
    let counter = BASE + COUNTER_OFF;
    mm.write(BASE, &[0; 128]).expect("zero the word and counter");
    check(&mm);

    let forker_done = Arc::new(AtomicBool::new(false));
    // Forks made while waiters were attached (asleep or about to be), and
    // how often the word's page had a new frame after a fork's copy exited
    // (a COW of the word's page in the space, under the waiters' feet).
    let stats = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let (tx, rx) = mpsc::channel();
    let (ltx, lrx) = mpsc::channel();
    for t in 0..THREADS {
        let (mm, stop) = (mm.clone(), forker_done.clone());
        spawn(&ltx, format!("locker {t}"), move || {
            lock_loop(&mm, t, mutex, counter, MIN_ITERS, Some(&stop)).map_err(|e| e.to_string())
        });
    }
    {
        let (mm, done, stats) = (mm.clone(), forker_done.clone(), stats.clone());
        spawn(&tx, "forker".into(), move || {
            let r = (|| {
                for n in 0..FORKS {
                    let before = mm.phys(mutex.addr());
                    let copy = mm.fork().map_err(|e| format!("fork: {e}"))?;
                    // Keep the copy sharing the word's frame for a moment, so
                    // the lockers' next write of the word is a COW (a new
                    // frame) while some of them sleep on the old one.
                    let until = Instant::now() + Duration::from_micros(200);
                    let mut seen = false;
                    while Instant::now() < until {
                        seen |= mm.vcache_entries() > 0;
                        std::hint::spin_loop();
                    }
                    if seen {
                        stats[0].fetch_add(1, Ordering::Relaxed);
                    }
                    if n % 2 == 0 {
                        copy.futex_wake(mutex.addr(), 1).map_err(|e| format!("wake from the copy: {e}"))?;
                    }
                    scribble(&copy, n + 2).map_err(|e| format!("writing the copy: {e}"))?;
                    let mut cacc = copy.accessor();
                    cacc.store_u64(counter + 8, n).map_err(|e| format!("writing the copy's word page: {e}"))?;
                    drop(cacc);
                    drop(copy);
                    if mm.phys(mutex.addr()) != before {
                        stats[1].fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(FORKS)
            })();
            done.store(true, Ordering::Release);
            r
        });
    }
    let state = || {
        let mut acc = mm.accessor();
        format!(
            "{keys:?}: word {:?}, counter {:?}, vcache entries {}",
            acc.load_u32(mutex.addr()),
            acc.load_u64(counter),
            mm.vcache_entries()
        )
    };
    collect(&rx, 1, state);
    let made = collect(&lrx, THREADS as usize, state);

    let mut acc = mm.accessor();
    assert_eq!(acc.load_u64(counter).unwrap(), made, "{}", state());
    assert_eq!(acc.load_u32(mutex.addr()).unwrap(), 0);
    assert_eq!(mm.vcache_entries(), 0, "no waiter left behind");
    drop(acc);
    let [with_waiters, moved] = [0, 1].map(|i| stats[i].load(Ordering::Relaxed));
    eprintln!(
        "{keys:?}: {made} increments, {FORKS} forks, {with_waiters} with waiters attached, \
         word page re-framed {moved} times"
    );
    assert!(moved > 0, "the word's page never changed frame: the test did not exercise COW");
    check(&mm);
}

#[test]
fn private_mutex_waiters_follow_cow() {
    for keys in [FutexKeys::Physical, FutexKeys::Linux] {
        private_mutex(keys);
    }
}
