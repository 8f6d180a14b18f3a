//! `softmm bench futex`: softmm's futexes against the futex(2) of the kernel
//! this runs on, in one run (see `docs/BENCHMARKS.md`, "Futexes").
//!
//! - (a) FUTEX_WAKE with nobody waiting, ns per call;
//! - (b) FUTEX_WAIT whose word differs (`EAGAIN`), ns per call;
//! - (c) two threads passing a token back and forth through one futex word
//!   (each waits for its turn, flips the word, wakes the other), ns per
//!   round trip, with both threads pinned to one CPU (every hand-over a
//!   context switch: the futex paths themselves) and pinned to two CPUs
//!   (every sleep ends in a cross-CPU wake-up, which on a VM is mostly the
//!   hypervisor's); the target is judged on the worse of the two;
//! - (d) a contended mutex (Drepper's mutex 3: `softmm::futex::mutex::GuestMutex`
//!   on softmm, the same algorithm over an `AtomicU32` and futex(2) on Linux)
//!   with 2, 4 and 8 threads (pinned round-robin over the allowed CPUs, so
//!   they really contend) each doing lock / counter += 1 / unlock, total
//!   lock-unlock pairs per second. Both sides run on the same host bytes: a
//!   fresh guest page per run, pinned, the Linux side on the pin's atomics
//!   (where the lock word's cache line lands moves either side's rate by
//!   tens of percent); the softmm side runs each iteration in one accessor
//!   `Batch`;
//! - (e) what the vcache costs a COW fault when the address space has no
//!   waiter: the check is one SeqCst fence and one load, which cannot be
//!   compiled out, so it is timed on its own (back to back, and right after a
//!   4 KiB copy as in a COW fault, as the difference with the same loop
//!   without the fence) and compared with the COW fault time measured here;
//!   a COW fault with a waiter attached elsewhere in the address space (the
//!   vcache then takes a bucket lock) is shown for context.
//!
//! Linux side: real memory of this process (`MAP_PRIVATE | MAP_ANONYMOUS`;
//! for (d), the pinned guest page),
//! real `syscall(SYS_futex, ...)`. The ops are **non-private** (no
//! `FUTEX_PRIVATE_FLAG`), the variant whose semantics softmm's futexes have:
//! a softmm futex call always resolves the page (physical keys meet across
//! address spaces), as a non-private futex call does (`get_futex_key` with
//! GUP). The private variants of (a) and (b), Linux's cheapest path, are
//! printed too. softmm side: a `Machine` with physical keys (the default),
//! words in private anonymous memory, plain loads and stores through one
//! `Accessor` per thread; the futex calls of (a), (b) and (d) go through
//! the accessor (`Accessor::futex_wake`/`futex_wait`: a no-waiter wake and
//! an `EAGAIN` are answered from its TLB), the others through `Mm`.
//!
//! Also timed (softmm side only, not targets): the same (a) and (b)
//! through `Mm` (a page walk under the `mmap_lock`), an `EAGAIN` through a
//! plain accessor load (the floor), and ping-pong on a machine whose
//! blocking waits sleep in the kernel at once (`Config::futex_spin` zero,
//! Linux's policy; the default yields for 5 µs first).
//!
//! Ratios are Linux ns / softmm ns (for (d) softmm rate / Linux rate, the
//! same thing): above 1, softmm is faster. Each figure is the median of
//! `--reps` runs; the two sides alternate run by run.

use super::cpu::{allowed_cpus, pin};
use super::linux::Region;
use super::{median, say, status, BenchOpts, Report};
use crate::error::{check, CliError, CliResult, Context};
use crate::sys::{errno, futex as sys_futex, mono_ns};
use crate::units::{bytes, ns, PAGE};
use indicatif::ProgressBar;
use serde::Serialize;
use softmm::futex::mutex::GuestMutex;
use softmm::futex::BITSET_MATCH_ANY;
use softmm::GuestWords;
use softmm::{Accessor, Config, Error, Machine, MapKind, Mm, PinnedPages, Placement, Prot};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Calls per run of (a) and (b).
const CALLS: u64 = 200_000;
/// Round trips per run of (c), on one CPU and on two (where each takes
/// tens of µs on an idle VM: a halted vCPU is woken by the hypervisor).
const ROUND_TRIPS: u64 = 10_000;
const ROUND_TRIPS_TWO_CPUS: u64 = 2_000;
/// Lock-unlock pairs per run of (d), over all threads.
const MUTEX_OPS: u64 = 400_000;
const MUTEX_THREADS: [u64; 3] = [2, 4, 8];
/// Default size of the COW region of (e).
const COW_SIZE: u64 = 16 << 20;
/// Fence-and-load checks per run of (e).
const CHECKS: u64 = 1_000_000;
/// Copies per run of the in-situ variant of (e), and the pages they rotate over.
const COPIES: u64 = 100_000;
const COPY_PAGES: usize = 64;

/// Where the softmm side maps its words: one private page, the mutex
/// word, its counter and the ping-pong word on separate cache lines.
const WORDS: u64 = 0x1000_0000;
const MUTEX_OFF: u64 = 0;
const COUNTER_OFF: u64 = 64;
const PINGPONG_OFF: u64 = 128;
const WAKE_OFF: u64 = 192;
/// The pages of (d), one per run (`MutexPage`).
const MUTEX_PAGES: u64 = 0x1100_0000;
/// The COW region of (e), 2 MiB aligned.
const COW_BASE: u64 = 1 << 36;

const FUTEX_WAIT: i32 = libc::FUTEX_WAIT;
const FUTEX_WAKE: i32 = libc::FUTEX_WAKE;
const PRIVATE: i32 = libc::FUTEX_PRIVATE_FLAG;

// ------------------------------------------------------------------ threads

/// Pin thread `i` of a group to `cpus[i % cpus.len()]` (no pinning if the
/// list is empty).
fn pin_round_robin(cpus: &[usize], i: usize) -> CliResult<()> {
    match cpus.get(i % cpus.len().max(1)) {
        Some(&c) => pin(c),
        None => Ok(()),
    }
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, CliResult<T>>) -> CliResult<T> {
    h.join().map_err(|_| CliError("a benchmark thread panicked".into()))?
}

/// Join threads that report when they started and ended their timed loop;
/// the time from the first start to the last end (timed by the workers, so
/// that a descheduled main thread cannot shorten it).
fn span(hs: Vec<std::thread::ScopedJoinHandle<'_, CliResult<(u64, u64)>>>) -> CliResult<u64> {
    let (mut first, mut last) = (u64::MAX, 0);
    for h in hs {
        let (t0, t1) = join(h)?;
        first = first.min(t0);
        last = last.max(t1);
    }
    Ok(last.saturating_sub(first).max(1))
}

// ---------------------------------------------------------------- Linux side

/// FUTEX_WAIT while `word` holds `val`; EAGAIN and EINTR are ordinary
/// returns. Returns whether the call slept (was queued and woken).
fn linux_wait(word: &AtomicU32, val: u32, flags: i32) -> CliResult<bool> {
    if sys_futex(word, FUTEX_WAIT | flags, val) == 0 {
        return Ok(true);
    }
    match errno() {
        libc::EAGAIN | libc::EINTR => Ok(false),
        e => Err(CliError(format!("futex(FUTEX_WAIT): errno {e}"))),
    }
}

fn linux_wake(word: &AtomicU32, n: u32, flags: i32) -> CliResult<i64> {
    let r = sys_futex(word, FUTEX_WAKE | flags, n);
    if r < 0 {
        return Err(CliError(format!("futex(FUTEX_WAKE): errno {}", errno())));
    }
    Ok(r)
}

/// A page of this process's memory holding the Linux side's words.
struct LinuxWords {
    page: Region,
}

impl LinuxWords {
    fn new() -> CliResult<LinuxWords> {
        let mut page = super::linux::region(PAGE, false)?;
        page.touch(0);
        Ok(LinuxWords { page })
    }

    fn u32_at(&self, off: u64) -> CliResult<&AtomicU32> {
        self.page.atomic_u32(off as usize).ok_or_else(|| CliError(format!("no word at offset {off}")))
    }
}

/// (a) FUTEX_WAKE with no waiter, ns per call.
fn linux_wake_idle(w: &LinuxWords, flags: i32) -> CliResult<f64> {
    let word = w.u32_at(WAKE_OFF)?;
    let t = mono_ns();
    for _ in 0..CALLS {
        let n = linux_wake(word, 1, flags)?;
        if n != 0 {
            return Err(CliError(format!("futex(FUTEX_WAKE) woke {n} waiters; there are none")));
        }
    }
    Ok((mono_ns() - t) as f64 / CALLS as f64)
}

/// (b) FUTEX_WAIT on a word that differs, ns per call (each must be EAGAIN).
fn linux_eagain(w: &LinuxWords, flags: i32) -> CliResult<f64> {
    let word = w.u32_at(WAKE_OFF)?;
    word.store(0, Ordering::Relaxed);
    let t = mono_ns();
    for _ in 0..CALLS {
        if sys_futex(word, FUTEX_WAIT | flags, 1) != -1 || errno() != libc::EAGAIN {
            return Err(CliError("futex(FUTEX_WAIT) on a differing word did not fail with EAGAIN".into()));
        }
    }
    Ok((mono_ns() - t) as f64 / CALLS as f64)
}

/// Wait until `word` holds `want`, sleeping on whatever else it holds.
/// Returns how many futex waits slept.
fn linux_await(word: &AtomicU32, want: u32) -> CliResult<u64> {
    let mut slept = 0;
    loop {
        let v = word.load(Ordering::Acquire);
        if v == want {
            return Ok(slept);
        }
        if v == ABORT {
            return Err(aborted());
        }
        slept += u64::from(linux_wait(word, v, 0)?);
    }
}

/// Atomically replace the word with `new` by compare-exchange (as the
/// softmm side must: the accessor has no exchange).
fn linux_swap(word: &AtomicU32, new: u32) -> u32 {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        match word.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(old) => return old,
            Err(actual) => cur = actual,
        }
    }
}

/// Drepper's mutex 3 on a real futex, exactly as `GuestMutex` does it
/// (with the same read-only spin before announcing a waiter).
fn linux_lock(word: &AtomicU32) -> CliResult<()> {
    let seen = match word.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => return Ok(()),
        Err(seen) => seen,
    };
    if seen != 2 {
        for _ in 0..softmm::futex::mutex::SPIN {
            if word.load(Ordering::Relaxed) == 0
                && word.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                return Ok(());
            }
            std::hint::spin_loop();
        }
    }
    let mut old = if seen == 2 { seen } else { linux_swap(word, 2) };
    while old != 0 {
        let _slept = linux_wait(word, 2, 0)?;
        old = linux_swap(word, 2);
    }
    Ok(())
}

fn linux_unlock(word: &AtomicU32) -> CliResult<()> {
    if word.fetch_sub(1, Ordering::AcqRel) != 1 {
        word.store(0, Ordering::Release);
        linux_wake(word, 1, 0)?;
    }
    Ok(())
}

/// (d) `threads` threads share `MUTEX_OPS` lock / counter += 1 / unlock;
/// lock-unlock pairs per second. The counter must come out exact. The
/// words are `page`'s own host bytes, through its pin (see `MutexPage`).
fn linux_mutex(page: &MutexPage, threads: u64, cpus: &[usize]) -> CliResult<f64> {
    let word = lib(page.pin.atomic_u32(page.addr + MUTEX_OFF), "the pinned mutex word")?;
    let counter = lib(page.pin.atomic_u64(page.addr + COUNTER_OFF), "the pinned counter")?;
    word.store(0, Ordering::Relaxed);
    counter.store(0, Ordering::Relaxed);
    let per = MUTEX_OPS / threads;
    let start = Barrier::new(threads as usize);
    let elapsed = std::thread::scope(|s| -> CliResult<u64> {
        let hs: Vec<_> = (0..threads as usize)
            .map(|i| {
                let start = &start;
                s.spawn(move || -> CliResult<(u64, u64)> {
                    let pinned = pin_round_robin(cpus, i);
                    start.wait();
                    pinned?;
                    let t0 = mono_ns();
                    for _ in 0..per {
                        linux_lock(word)?;
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                        linux_unlock(word)?;
                    }
                    Ok((t0, mono_ns()))
                })
            })
            .collect();
        span(hs)
    })?;
    let got = counter.load(Ordering::Relaxed);
    check(got == per * threads, || format!("futex bench (Linux mutex): counter {got}, expected {}", per * threads))?;
    Ok((per * threads) as f64 / elapsed as f64 * 1e9)
}

// --------------------------------------------------------------- softmm side

fn machine(arena_bytes: u64) -> CliResult<Machine> {
    Machine::new(Config { arena_bytes, prezero: false, ..Config::default() })
        .context(|| format!("creating a machine with a {} arena", bytes(arena_bytes)))
}

/// A small machine whose blocking futex waits sleep at once
/// (`Config::futex_spin` zero), for the context rows of (c).
fn machine_sleeping_at_once() -> CliResult<Machine> {
    Machine::new(Config { arena_bytes: 16 << 20, prezero: false, futex_spin: Duration::ZERO, ..Config::default() })
        .context(|| "creating a machine whose futex waits sleep at once".into())
}

/// An address space with the word page mapped and written.
fn words_mm(m: &Machine) -> CliResult<Mm> {
    let mm = m.new_mm().context(|| "creating an address space".into())?;
    mm.mmap(WORDS, PAGE, Prot::RW, MapKind::Private, Placement::Fixed).context(|| "mmap of the word page".into())?;
    mm.write(WORDS, &[0; PAGE as usize]).context(|| "writing the word page".into())?;
    Ok(mm)
}

fn lib<T>(r: softmm::Result<T>, what: &str) -> CliResult<T> {
    r.map_err(|e| CliError(format!("{what}: {e}")))
}

/// (a) `Accessor::futex_wake` with no waiter, ns per call.
fn softmm_wake_idle(mm: &Mm) -> CliResult<f64> {
    let addr = WORDS + WAKE_OFF;
    let mut acc = mm.accessor();
    lib(acc.futex_wake(addr, 1), "futex_wake")?;
    let t = Instant::now();
    for _ in 0..CALLS {
        let n = lib(acc.futex_wake(addr, 1), "futex_wake")?;
        if n != 0 {
            return Err(CliError(format!("futex_wake woke {n} waiters; there are none")));
        }
    }
    Ok(t.elapsed().as_nanos() as f64 / CALLS as f64)
}

/// (b) `Accessor::futex_wait` on a word that differs, ns per call (each `EAGAIN`).
fn softmm_eagain(mm: &Mm) -> CliResult<f64> {
    let addr = WORDS + WAKE_OFF;
    lib(mm.write(addr, &0u32.to_ne_bytes()), "write")?;
    let mut acc = mm.accessor();
    let t = Instant::now();
    for _ in 0..CALLS {
        match acc.futex_wait(addr, 1, None) {
            Err(Error::Again) => {}
            other => return Err(CliError(format!("futex_wait on a differing word returned {other:?}"))),
        }
    }
    Ok(t.elapsed().as_nanos() as f64 / CALLS as f64)
}

/// `EAGAIN` and `EINTR` are ordinary ends of a wait; returns whether it
/// was queued and woken.
fn softmm_wait(mm: &Mm, addr: u64, val: u32) -> CliResult<bool> {
    match mm.futex_wait(addr, val, None) {
        Ok(()) => Ok(true),
        Err(Error::Again) | Err(Error::Interrupted) => Ok(false),
        Err(e) => Err(CliError(format!("futex_wait: {e}"))),
    }
}

/// The page of (d)'s run `rep`: a fresh frame per run, so that the runs
/// sample where the lock word's cache line lands (which alone moves the
/// rate of either side by tens of percent, see `docs/BENCHMARKS.md`),
/// pinned so that the Linux side runs on the very same host bytes.
struct MutexPage {
    addr: u64,
    pin: PinnedPages,
}

impl MutexPage {
    fn new(mm: &Mm, rep: usize) -> CliResult<MutexPage> {
        let addr = MUTEX_PAGES + rep as u64 * PAGE;
        lib(mm.write(addr, &[0; 128]), "writing a mutex page")?;
        let pin = lib(mm.pin_pages(addr, PAGE, true), "pinning a mutex page")?;
        Ok(MutexPage { addr, pin })
    }
}

/// (d) As `linux_mutex`, with `GuestMutex` and the counter in guest memory:
/// each iteration in one accessor [`Batch`](softmm::Batch) (one slot
/// publication for the lock, the counter and the unlock; a sleep leaves it).
fn softmm_mutex(mm: &Mm, page: &MutexPage, threads: u64, cpus: &[usize]) -> CliResult<f64> {
    let mutex = lib(GuestMutex::new(page.addr + MUTEX_OFF), "mutex")?;
    let counter = page.addr + COUNTER_OFF;
    lib(mm.write(page.addr, &[0; 128]), "write")?;
    let per = MUTEX_OPS / threads;
    let start = Barrier::new(threads as usize);
    let elapsed = std::thread::scope(|s| -> CliResult<u64> {
        let hs: Vec<_> = (0..threads as usize)
            .map(|i| {
                let start = &start;
                s.spawn(move || -> CliResult<(u64, u64)> {
                    let pinned = pin_round_robin(cpus, i);
                    let mut acc = mm.accessor();
                    // Fill the TLB before the clock starts.
                    lib(acc.load_u64(counter), "load")?;
                    start.wait();
                    pinned?;
                    let t0 = mono_ns();
                    for _ in 0..per {
                        let mut b = acc.batch();
                        lib(mutex.lock(mm, &mut b), "lock")?;
                        let v = lib(b.load_u64(counter), "load")?;
                        lib(b.store_u64(counter, v + 1), "store")?;
                        lib(mutex.unlock(mm, &mut b), "unlock")?;
                    }
                    Ok((t0, mono_ns()))
                })
            })
            .collect();
        span(hs)
    })?;
    let mut buf = [0u8; 8];
    lib(mm.read(counter, &mut buf), "read")?;
    let got = u64::from_ne_bytes(buf);
    check(got == per * threads, || format!("futex bench (softmm mutex): counter {got}, expected {}", per * threads))?;
    Ok((per * threads) as f64 / elapsed as f64 * 1e9)
}

/// (d) with `threads` threads: a warm-up pair, then `reps` pairs of runs,
/// run `rep` on page `rep` for both sides, the side that goes first
/// alternating.
fn mutex_row(mm: &Mm, threads: u64, cpus: &[usize], reps: usize, vs: bool) -> CliResult<MutexRow> {
    let (mut s, mut l) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for rep in 0..=reps {
        let page = MutexPage::new(mm, rep)?;
        let linux_first = rep % 2 == 1;
        if vs && linux_first {
            l.push(linux_mutex(&page, threads, cpus)?);
        }
        s.push(softmm_mutex(mm, &page, threads, cpus)?);
        if vs && !linux_first {
            l.push(linux_mutex(&page, threads, cpus)?);
        }
        if rep == 0 {
            s.clear();
            l.clear();
        }
    }
    let l = vs.then_some(l);
    let sm = median(&s) / 1e6;
    let lm = l.as_deref().map(|l| median(l) / 1e6);
    Ok(MutexRow {
        threads,
        softmm_mops: sm,
        linux_mops: lm,
        ratio_vs_linux: lm.map(|l| sm / l),
        softmm_samples: s,
        linux_samples: l,
    })
}

/// (e) One COW run on `m`: a parent writes every page of `size` bytes and
/// forks; with `waiter`, a waiter is queued on a word of the child's word
/// page (so the child's vcache count is 1 and every COW fault takes a
/// vcache bucket lock); the child writes one byte per page, timed. ns per
/// page; exactly one COW copy per page is checked.
fn softmm_cow(m: &Machine, size: u64, waiter: bool) -> CliResult<f64> {
    let parent = words_mm(m)?;
    lib(parent.mmap(COW_BASE, size, Prot::RW, MapKind::Private, Placement::Fixed), "mmap")?;
    let pages = size / PAGE;
    {
        let mut acc = parent.accessor();
        for i in 0..pages {
            lib(acc.write(COW_BASE + i * PAGE, &[1]), "write")?;
        }
    }
    let child = lib(parent.fork(), "fork")?;
    let w = if waiter {
        Some(lib(child.futex_wait_start(WORDS + WAKE_OFF, 0, BITSET_MATCH_ANY), "futex_wait_start")?)
    } else {
        None
    };
    check(child.vcache_entries() == usize::from(waiter), || {
        format!("futex bench: the child has {} vcache entries, expected {}", child.vcache_entries(), u8::from(waiter))
    })?;
    let mut acc = child.accessor();
    let before = m.stats();
    let t = Instant::now();
    for i in 0..pages {
        lib(acc.write(COW_BASE + i * PAGE, &[2]), "write")?;
    }
    let ns = t.elapsed().as_nanos() as f64 / pages as f64;
    let copies = m.stats().fault_cow_copy - before.fault_cow_copy;
    check(copies == pages, || format!("futex bench: {copies} COW copies counted, expected {pages}"))?;
    drop(w);
    Ok(ns)
}

/// (e) The no-waiter vcache check as `Vcache::invalidate` does it: a
/// SeqCst fence, then a SeqCst load of the address space's entry count;
/// ns per check, back to back.
fn vcache_check_alone(users: &AtomicUsize) -> f64 {
    let t = Instant::now();
    for _ in 0..CHECKS {
        fence(Ordering::SeqCst);
        if users.load(Ordering::SeqCst) != 0 {
            black_box(());
        }
    }
    t.elapsed().as_nanos() as f64 / CHECKS as f64
}

/// (e) The check right after a 4 KiB copy (as in a COW fault, whose
/// fence waits for the copy's stores): ns per copy with and without it.
fn vcache_check_after_copy(users: &AtomicUsize, pages: &mut [[u8; PAGE as usize]], with: bool) -> f64 {
    let n = pages.len();
    let t = Instant::now();
    for i in 0..COPIES as usize {
        let (src, dst) = (i % n, (i + 1) % n);
        let (a, b) = if src < dst {
            let (lo, hi) = pages.split_at_mut(dst);
            (&lo[src], &mut hi[0])
        } else {
            let (lo, hi) = pages.split_at_mut(src);
            (&hi[0], &mut lo[dst])
        };
        b.copy_from_slice(a);
        black_box(&mut *b);
        if with {
            fence(Ordering::SeqCst);
        }
        if users.load(Ordering::SeqCst) != 0 {
            black_box(());
        }
    }
    t.elapsed().as_nanos() as f64 / COPIES as f64
}

/// (a) through `Mm::futex_wake` (read lock, page walk, frame reference), ns per call.
fn mm_wake_idle(mm: &Mm, _unused: &AtomicUsize) -> CliResult<f64> {
    let addr = WORDS + WAKE_OFF;
    let t = mono_ns();
    for _ in 0..CALLS {
        if lib(mm.futex_wake(addr, 1), "futex_wake")? != 0 {
            return Err(CliError("futex_wake found a waiter; there is none".into()));
        }
    }
    Ok((mono_ns() - t) as f64 / CALLS as f64)
}

/// (b) through `Mm::futex_wait`: the word compared after the key is
/// resolved, before anything is built; ns per call.
fn mm_eagain(mm: &Mm) -> CliResult<f64> {
    let addr = WORDS + WAKE_OFF;
    let t = mono_ns();
    for _ in 0..CALLS {
        match mm.futex_wait(addr, 1, None) {
            Err(Error::Again) => {}
            other => return Err(CliError(format!("futex_wait on a differing word returned {other:?}"))),
        }
    }
    Ok((mono_ns() - t) as f64 / CALLS as f64)
}

/// The floor of (b): one TLB-hit load and a compare; ns per call.
fn proto_eagain_via_accessor(mm: &Mm) -> CliResult<f64> {
    let mut acc = mm.accessor();
    let addr = WORDS + WAKE_OFF;
    lib(acc.load_u32(addr), "load")?;
    let t = mono_ns();
    for _ in 0..CALLS {
        if black_box(lib(acc.load_u32(addr), "load")?) == 1 {
            return Err(CliError("prototype: the word holds the value waited for".into()));
        }
    }
    Ok((mono_ns() - t) as f64 / CALLS as f64)
}

// ---------------------------------------------------------------- ping-pong

/// Where the two ping-pong threads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Both pinned to one CPU: every hand-over is a context switch, no
    /// cross-CPU wake-up (what is left is the futex paths themselves).
    OneCpu(usize),
    /// Pinned to two CPUs: every sleep ends with a cross-CPU wake-up.
    TwoCpus(usize, usize),
}

/// What a ping-pong run measured.
struct PingPong {
    /// ns per round trip.
    ns: f64,
    /// Futex waits that were woken (not `EAGAIN`), per round trip (both
    /// threads): on Linux asleep in the kernel; on softmm asleep or still
    /// yielding (`Config::futex_spin`).
    sleeps: f64,
}

/// A ping-pong word value no round trip uses: the other thread failed.
const ABORT: u32 = u32::MAX;

fn aborted() -> CliError {
    CliError("the other ping-pong thread failed".into())
}

/// One side of a ping-pong: given `i`, play its half of round trip `i`;
/// returns how many futex waits slept.
trait Side: Send {
    fn ping(&mut self, i: u32) -> CliResult<u64>;
    fn pong(&mut self, i: u32) -> CliResult<u64>;
    /// Store `ABORT` and wake the other thread, which then gives up (best
    /// effort: this runs after an error).
    fn abort(&mut self);
}

/// Run `rounds` halves with `half`; on an error, release the other thread.
fn play<S: Side>(side: &mut S, rounds: u64, half: fn(&mut S, u32) -> CliResult<u64>) -> CliResult<u64> {
    let mut slept = 0;
    for i in 0..rounds as u32 {
        match half(side, i) {
            Ok(n) => slept += n,
            Err(e) => {
                side.abort();
                return Err(e);
            }
        }
    }
    Ok(slept)
}

/// Run `ROUND_TRIPS` (`ROUND_TRIPS_TWO_CPUS`) round trips between two
/// threads pinned as `place` says: ping stores 2i+1 and wakes, pong waits
/// for it, stores 2i+2 and wakes, ping waits for that. Timed in the ping
/// thread. A failing thread stores `ABORT` so that the other one cannot
/// wait for it forever.
fn pingpong<S: Side>(place: Place, make: impl Fn() -> S + Sync) -> CliResult<PingPong> {
    let (cpu_ping, cpu_pong, rounds) = match place {
        Place::OneCpu(c) => (c, c, ROUND_TRIPS),
        Place::TwoCpus(a, b) => (a, b, ROUND_TRIPS_TWO_CPUS),
    };
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        let pong = s.spawn(|| -> CliResult<u64> {
            let pinned = pin(cpu_pong);
            let mut side = make();
            start.wait();
            if let Err(e) = pinned {
                side.abort();
                return Err(e);
            }
            play(&mut side, rounds, S::pong)
        });
        let ping = s.spawn(|| -> CliResult<(u64, u64)> {
            let pinned = pin(cpu_ping);
            let mut side = make();
            start.wait();
            if let Err(e) = pinned {
                side.abort();
                return Err(e);
            }
            let t = mono_ns();
            let slept = play(&mut side, rounds, S::ping)?;
            Ok((mono_ns() - t, slept))
        });
        let (elapsed, a) = join(ping)?;
        let b = join(pong)?;
        Ok(PingPong { ns: elapsed as f64 / rounds as f64, sleeps: (a + b) as f64 / rounds as f64 })
    })
}

/// The Linux side of a ping-pong: an `AtomicU32` and futex(2).
struct LinuxSide<'a> {
    word: &'a AtomicU32,
}

impl Side for LinuxSide<'_> {
    fn ping(&mut self, i: u32) -> CliResult<u64> {
        self.word.store(2 * i + 1, Ordering::Release);
        linux_wake(self.word, 1, 0)?;
        linux_await(self.word, 2 * i + 2)
    }

    fn pong(&mut self, i: u32) -> CliResult<u64> {
        let slept = linux_await(self.word, 2 * i + 1)?;
        self.word.store(2 * i + 2, Ordering::Release);
        linux_wake(self.word, 1, 0)?;
        Ok(slept)
    }

    fn abort(&mut self) {
        self.word.store(ABORT, Ordering::Release);
        let _ = linux_wake(self.word, i32::MAX as u32, 0);
    }
}

/// (c) Linux ping-pong.
fn linux_pingpong(w: &LinuxWords, place: Place) -> CliResult<PingPong> {
    let word = w.u32_at(PINGPONG_OFF)?;
    word.store(0, Ordering::Relaxed);
    pingpong(place, || LinuxSide { word })
}

/// The softmm side: an accessor per thread and `Mm::futex_*` (blocking
/// waits yield for the machine's `Config::futex_spin` before they sleep).
struct SoftmmSide<'a> {
    mm: &'a Mm,
    acc: Accessor,
}

impl SoftmmSide<'_> {
    const ADDR: u64 = WORDS + PINGPONG_OFF;

    fn wake(&mut self, v: u32) -> CliResult<()> {
        lib(self.acc.store_u32(Self::ADDR, v), "store")?;
        lib(self.mm.futex_wake(Self::ADDR, 1), "futex_wake")?;
        Ok(())
    }

    fn await_(&mut self, want: u32) -> CliResult<u64> {
        let mut slept = 0;
        loop {
            let v = lib(self.acc.load_u32(Self::ADDR), "load")?;
            if v == want {
                return Ok(slept);
            }
            if v == ABORT {
                return Err(aborted());
            }
            slept += u64::from(softmm_wait(self.mm, Self::ADDR, v)?);
        }
    }
}

impl Side for SoftmmSide<'_> {
    fn ping(&mut self, i: u32) -> CliResult<u64> {
        self.wake(2 * i + 1)?;
        self.await_(2 * i + 2)
    }

    fn pong(&mut self, i: u32) -> CliResult<u64> {
        let slept = self.await_(2 * i + 1)?;
        self.wake(2 * i + 2)?;
        Ok(slept)
    }

    fn abort(&mut self) {
        let _ = self.acc.store_u32(Self::ADDR, ABORT);
        let _ = self.mm.futex_wake(Self::ADDR, i32::MAX as u32);
    }
}

/// (c) softmm ping-pong.
fn softmm_pingpong(mm: &Mm, place: Place) -> CliResult<PingPong> {
    lib(mm.write(SoftmmSide::ADDR, &0u32.to_ne_bytes()), "write")?;
    pingpong(place, || SoftmmSide { mm, acc: mm.accessor() })
}

// ------------------------------------------------------------ orchestration

#[derive(Serialize)]
struct MutexRow {
    threads: u64,
    /// Lock-unlock pairs per second, millions.
    softmm_mops: f64,
    linux_mops: Option<f64>,
    /// softmm rate / Linux rate.
    ratio_vs_linux: Option<f64>,
    softmm_samples: Vec<f64>,
    linux_samples: Option<Vec<f64>>,
}

/// Ping-pong at one placement.
#[derive(Serialize)]
struct PingPongRow {
    /// "one CPU" or "two CPUs".
    place: String,
    cpus: Vec<usize>,
    softmm_ns: f64,
    linux_ns: Option<f64>,
    ratio_vs_linux: Option<f64>,
    /// Futex waits that were woken per round trip (both threads), median
    /// (Linux: asleep in the kernel; softmm: queued, asleep or still
    /// yielding); the others found the word changed (EAGAIN).
    softmm_sleeps_per_round_trip: f64,
    linux_sleeps_per_round_trip: Option<f64>,
    /// softmm with `Config::futex_spin` zero: waits sleep in the kernel at
    /// once, as Linux's do (for context).
    softmm_sleep_at_once_ns: f64,
    softmm_sleep_at_once_ratio_vs_linux: Option<f64>,
    softmm_sleep_at_once_sleeps_per_round_trip: f64,
    softmm_samples: Vec<f64>,
    linux_samples: Option<Vec<f64>>,
}

#[derive(Serialize)]
struct Samples {
    wake_softmm: Vec<f64>,
    wake_linux: Option<Vec<f64>>,
    eagain_softmm: Vec<f64>,
    eagain_linux: Option<Vec<f64>>,
    cow_ns: Vec<f64>,
    cow_with_waiter_ns: Vec<f64>,
}

/// The `Mm` paths and context rows, softmm side only; ratios against the
/// Linux figures.
#[derive(Serialize)]
struct Prototypes {
    /// A no-waiter wake through `Mm::futex_wake`.
    wake_via_mm_ns: f64,
    wake_via_mm_ratio_vs_linux: Option<f64>,
    /// EAGAIN through `Mm::futex_wait`.
    eagain_via_mm_ns: f64,
    eagain_via_mm_ratio_vs_linux: Option<f64>,
    /// The floor: one TLB-hit load and a compare.
    eagain_via_accessor_ns: f64,
    eagain_via_accessor_ratio_vs_linux: Option<f64>,
    /// `Config::futex_spin` of the softmm side, ns.
    futex_spin_ns: u64,
}

/// The result of `bench futex`.
#[derive(Serialize)]
pub struct FutexResult {
    bench: &'static str,
    /// Which futex(2) ops the Linux figures use.
    linux_ops: &'static str,
    reps: usize,
    calls_per_run: u64,
    round_trips_per_run: u64,
    round_trips_per_run_two_cpus: u64,
    mutex_ops_per_run: u64,
    wake_softmm_ns: f64,
    wake_linux_ns: Option<f64>,
    wake_linux_private_ns: Option<f64>,
    wake_ratio_vs_linux: Option<f64>,
    wake_ratio_vs_linux_private: Option<f64>,
    eagain_softmm_ns: f64,
    eagain_linux_ns: Option<f64>,
    eagain_linux_private_ns: Option<f64>,
    eagain_ratio_vs_linux: Option<f64>,
    eagain_ratio_vs_linux_private: Option<f64>,
    /// The placement with the lower ratio (the worse of the two).
    pingpong_place: String,
    pingpong_softmm_ns: f64,
    pingpong_linux_ns: Option<f64>,
    pingpong_ratio_vs_linux: Option<f64>,
    /// Every placement measured.
    pingpong: Vec<PingPongRow>,
    /// For context: the rate follows where the lock word's cache line
    /// lands more than the futex calls (see docs/BENCHMARKS.md).
    mutex: Vec<MutexRow>,
    /// The smallest of the mutex ratios.
    mutex_ratio_vs_linux: Option<f64>,
    cow_size_bytes: u64,
    cow_fault_ns: f64,
    cow_fault_with_waiter_ns: f64,
    vcache_check_ns: f64,
    vcache_check_after_copy_ns: f64,
    /// max(vcache_check_ns, vcache_check_after_copy_ns) / cow_fault_ns, in percent.
    vcache_check_percent_of_cow: f64,
    prototypes: Prototypes,
    samples: Samples,
}

fn ratio(linux: Option<f64>, softmm: f64) -> Option<f64> {
    linux.map(|l| l / softmm)
}

fn times(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
}

/// `reps` runs of `f` after one untimed warm-up run.
fn runs(reps: usize, mut f: impl FnMut() -> CliResult<f64>) -> CliResult<Vec<f64>> {
    f()?;
    (0..reps).map(|_| f()).collect()
}

/// `reps` runs of each of the two sides (the Linux one only with
/// `linux`), alternating, after one untimed warm-up run of each.
fn pairs(
    reps: usize,
    linux: bool,
    mut soft: impl FnMut() -> CliResult<f64>,
    mut lx: impl FnMut() -> CliResult<f64>,
) -> CliResult<(Vec<f64>, Option<Vec<f64>>)> {
    soft()?;
    if linux {
        lx()?;
    }
    let (mut s, mut l) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for _ in 0..reps {
        s.push(soft()?);
        if linux {
            l.push(lx()?);
        }
    }
    Ok((s, linux.then_some(l)))
}

/// Ping-pong at `place`: softmm and Linux alternating, then softmm with
/// waits that sleep at once (`at_once`: a space of a machine whose
/// `Config::futex_spin` is zero).
fn pingpong_row(mm: &Mm, at_once: &Mm, lw: &LinuxWords, place: Place, reps: usize, vs: bool) -> CliResult<PingPongRow> {
    let (mut ss, mut sl, mut sp) = (Vec::new(), Vec::new(), Vec::new());
    let (s, l) = pairs(
        reps,
        vs,
        || {
            softmm_pingpong(mm, place).map(|p| (p.sleeps, p.ns)).map(|(z, n)| {
                ss.push(z);
                n
            })
        },
        || {
            linux_pingpong(lw, place).map(|p| (p.sleeps, p.ns)).map(|(z, n)| {
                sl.push(z);
                n
            })
        },
    )?;
    let spin = runs(reps, || {
        softmm_pingpong(at_once, place).map(|p| {
            sp.push(p.sleeps);
            p.ns
        })
    })?;
    // The first sleep count of each is the warm-up's.
    let timed = |v: &[f64]| median(v.get(1..).unwrap_or_default());
    let (sm, lm, spm) = (median(&s), l.as_deref().map(median), median(&spin));
    let (name, cpus) = match place {
        Place::OneCpu(c) => ("one CPU", vec![c]),
        Place::TwoCpus(a, b) => ("two CPUs", vec![a, b]),
    };
    Ok(PingPongRow {
        place: name.into(),
        cpus,
        softmm_ns: sm,
        linux_ns: lm,
        ratio_vs_linux: ratio(lm, sm),
        softmm_sleeps_per_round_trip: timed(&ss),
        linux_sleeps_per_round_trip: vs.then(|| timed(&sl)),
        softmm_sleep_at_once_ns: spm,
        softmm_sleep_at_once_ratio_vs_linux: ratio(lm, spm),
        softmm_sleep_at_once_sleeps_per_round_trip: timed(&sp),
        softmm_samples: s,
        linux_samples: l,
    })
}

/// (a) and (b): softmm and Linux alternating, then Linux's private ops.
struct Calls {
    wake_s: Vec<f64>,
    wake_l: Option<Vec<f64>>,
    wake_lp: Option<Vec<f64>>,
    eagain_s: Vec<f64>,
    eagain_l: Option<Vec<f64>>,
    eagain_lp: Option<Vec<f64>>,
}

fn calls(mm: &Mm, lw: &LinuxWords, reps: usize, vs: bool, pb: &ProgressBar) -> CliResult<Calls> {
    say(pb, "futex: wake with no waiters".into());
    let (wake_s, wake_l) = pairs(reps, vs, || softmm_wake_idle(mm), || linux_wake_idle(lw, 0))?;
    let wake_lp = vs.then(|| runs(reps, || linux_wake_idle(lw, PRIVATE))).transpose()?;
    say(pb, "futex: wait returning EAGAIN".into());
    let (eagain_s, eagain_l) = pairs(reps, vs, || softmm_eagain(mm), || linux_eagain(lw, 0))?;
    let eagain_lp = vs.then(|| runs(reps, || linux_eagain(lw, PRIVATE))).transpose()?;
    Ok(Calls { wake_s, wake_l, wake_lp, eagain_s, eagain_l, eagain_lp })
}

/// (d) for every thread count, on pages mapped for the purpose.
fn mutex_rows(mm: &Mm, cpus: &[usize], reps: usize, vs: bool, pb: &ProgressBar) -> CliResult<Vec<MutexRow>> {
    let mut rows = Vec::new();
    let mutex_pages = (reps as u64 + 1) * PAGE;
    lib(mm.mmap(MUTEX_PAGES, mutex_pages, Prot::RW, MapKind::Private, Placement::Fixed), "mmap of the mutex pages")?;
    for threads in MUTEX_THREADS {
        say(pb, format!("futex: mutex, {threads} threads"));
        rows.push(mutex_row(mm, threads, cpus, reps, vs)?);
    }
    lib(mm.munmap(MUTEX_PAGES, mutex_pages), "munmap of the mutex pages")?;
    Ok(rows)
}

/// (e): COW faults without and with a waiter, and the no-waiter check
/// alone and after a copy (with and without the fence).
struct Vcache {
    cow: Vec<f64>,
    cow_w: Vec<f64>,
    alone: Vec<f64>,
    with: Vec<f64>,
    without: Vec<f64>,
}

fn vcache(m: &Machine, cow_size: u64, reps: usize) -> CliResult<Vcache> {
    let (mut cow, mut cow_w) = (Vec::new(), Vec::new());
    softmm_cow(m, cow_size, false)?;
    for _ in 0..reps {
        cow.push(softmm_cow(m, cow_size, false)?);
        cow_w.push(softmm_cow(m, cow_size, true)?);
    }
    let users = AtomicUsize::new(0);
    let mut pages = vec![[0u8; PAGE as usize]; COPY_PAGES];
    let (mut alone, mut with, mut without) = (Vec::new(), Vec::new(), Vec::new());
    vcache_check_alone(&users);
    vcache_check_after_copy(&users, &mut pages, true);
    for _ in 0..reps {
        alone.push(vcache_check_alone(&users));
        with.push(vcache_check_after_copy(&users, &mut pages, true));
        without.push(vcache_check_after_copy(&users, &mut pages, false));
    }
    Ok(Vcache { cow, cow_w, alone, with, without })
}

/// The `Mm` paths and the accessor floor, softmm side only (medians).
fn prototypes(mm: &Mm, reps: usize, futex_spin_ns: u64, wl: Option<f64>, el: Option<f64>) -> CliResult<Prototypes> {
    let bucket_waiters = AtomicUsize::new(0);
    let pw = median(&runs(reps, || mm_wake_idle(mm, &bucket_waiters))?);
    let ppre = median(&runs(reps, || mm_eagain(mm))?);
    let pacc = median(&runs(reps, || proto_eagain_via_accessor(mm))?);
    Ok(Prototypes {
        wake_via_mm_ns: pw,
        wake_via_mm_ratio_vs_linux: ratio(wl, pw),
        eagain_via_mm_ns: ppre,
        eagain_via_mm_ratio_vs_linux: ratio(el, ppre),
        eagain_via_accessor_ns: pacc,
        eagain_via_accessor_ratio_vs_linux: ratio(el, pacc),
        futex_spin_ns,
    })
}

pub fn futex(o: &BenchOpts, size: Option<u64>) -> CliResult<FutexResult> {
    let cow_size = size.unwrap_or(COW_SIZE);
    // The COW run's parent and child copies, the word and mutex pages.
    super::ensure_memory("futex", cow_size, cow_size.saturating_mul(2).saturating_add(64 << 20))?;
    let reps = o.reps;
    let vs = o.vs_linux;
    let cpus = allowed_cpus();
    let Some(&first_cpu) = cpus.first() else {
        return Err(CliError("bench futex: no CPU allowed by sched_getaffinity".into()));
    };
    let mut places = vec![Place::OneCpu(first_cpu)];
    if let Some(&second) = cpus.get(1) {
        places.push(Place::TwoCpus(first_cpu, second));
    }
    let m = machine(cow_size.saturating_mul(3).saturating_add(64 << 20))?;
    let mm = words_mm(&m)?;
    let futex_spin_ns = m.config().futex_spin.as_nanos() as u64;
    let m0 = machine_sleeping_at_once()?;
    let mm0 = words_mm(&m0)?;
    let lw = LinuxWords::new()?;
    let pb = status();

    let c = calls(&mm, &lw, reps, vs, &pb)?;
    let mut pp = Vec::new();
    for &place in &places {
        say(&pb, format!("futex: ping-pong, {place:?}"));
        pp.push(pingpong_row(&mm, &mm0, &lw, place, reps, vs)?);
    }
    let rows = mutex_rows(&mm, &cpus, reps, vs, &pb)?;
    say(&pb, "futex: COW fault and the vcache check".into());
    let vc = vcache(&m, cow_size, reps)?;
    say(&pb, "futex: the Mm paths, and context".into());
    let med_opt = |v: &Option<Vec<f64>>| v.as_deref().map(median);
    let (wl, el) = (med_opt(&c.wake_l), med_opt(&c.eagain_l));
    let protos = prototypes(&mm, reps, futex_spin_ns, wl, el)?;
    pb.finish_and_clear();
    drop(mm);
    drop(m);

    let (ws, wlp) = (median(&c.wake_s), med_opt(&c.wake_lp));
    let (es, elp) = (median(&c.eagain_s), med_opt(&c.eagain_lp));
    let (cow_ns, cow_w_ns) = (median(&vc.cow), median(&vc.cow_w));
    let check_alone = median(&vc.alone);
    let check_copy = (median(&vc.with) - median(&vc.without)).max(0.0);
    // The headline ping-pong figures are those of the worse placement.
    let key = |r: &PingPongRow| r.ratio_vs_linux.unwrap_or(f64::INFINITY);
    let worst = pp.iter().min_by(|a, b| key(a).total_cmp(&key(b)));
    let (pplace, ps, pl, pr) = match worst {
        Some(r) => (r.place.clone(), r.softmm_ns, r.linux_ns, r.ratio_vs_linux),
        None => (String::new(), f64::NAN, None, None),
    };
    Ok(FutexResult {
        bench: "futex",
        linux_ops: "non-private (FUTEX_WAIT, FUTEX_WAKE); *_private_* fields: with FUTEX_PRIVATE_FLAG",
        reps,
        calls_per_run: CALLS,
        round_trips_per_run: ROUND_TRIPS,
        round_trips_per_run_two_cpus: ROUND_TRIPS_TWO_CPUS,
        mutex_ops_per_run: MUTEX_OPS,
        wake_softmm_ns: ws,
        wake_linux_ns: wl,
        wake_linux_private_ns: wlp,
        wake_ratio_vs_linux: ratio(wl, ws),
        wake_ratio_vs_linux_private: ratio(wlp, ws),
        eagain_softmm_ns: es,
        eagain_linux_ns: el,
        eagain_linux_private_ns: elp,
        eagain_ratio_vs_linux: ratio(el, es),
        eagain_ratio_vs_linux_private: ratio(elp, es),
        pingpong_place: pplace,
        pingpong_softmm_ns: ps,
        pingpong_linux_ns: pl,
        pingpong_ratio_vs_linux: pr,
        pingpong: pp,
        mutex_ratio_vs_linux: rows.iter().filter_map(|r| r.ratio_vs_linux).reduce(f64::min),
        mutex: rows,
        cow_size_bytes: cow_size,
        cow_fault_ns: cow_ns,
        cow_fault_with_waiter_ns: cow_w_ns,
        vcache_check_ns: check_alone,
        vcache_check_after_copy_ns: check_copy,
        vcache_check_percent_of_cow: check_alone.max(check_copy) / cow_ns * 100.0,
        prototypes: protos,
        samples: Samples {
            wake_softmm: c.wake_s,
            wake_linux: c.wake_l,
            eagain_softmm: c.eagain_s,
            eagain_linux: c.eagain_l,
            cow_ns: vc.cow,
            cow_with_waiter_ns: vc.cow_w,
        },
    })
}

/// One row of the futex table: softmm, Linux (or "-") and their ratio.
fn row(t: &mut String, name: &str, s: String, l: Option<String>, r: Option<f64>) {
    let _ = writeln!(t, "  {:<30}{:>12}{:>12}{:>14}", name, s, l.as_deref().unwrap_or("-"), times(r));
}

impl FutexResult {
    /// (a) to (d).
    fn text_calls(&self, t: &mut String) {
        let (ws, es) = (self.wake_softmm_ns, self.eagain_softmm_ns);
        row(t, "(a) wake, no waiters", ns(ws), self.wake_linux_ns.map(ns), self.wake_ratio_vs_linux);
        row(t, "    Linux private op", ns(ws), self.wake_linux_private_ns.map(ns), self.wake_ratio_vs_linux_private);
        row(t, "(b) wait, EAGAIN", ns(es), self.eagain_linux_ns.map(ns), self.eagain_ratio_vs_linux);
        row(
            t,
            "    Linux private op",
            ns(es),
            self.eagain_linux_private_ns.map(ns),
            self.eagain_ratio_vs_linux_private,
        );
        let _ = writeln!(t, "  (c) ping-pong round trip:");
        for r in &self.pingpong {
            row(t, &format!("    {} {:?}", r.place, r.cpus), ns(r.softmm_ns), r.linux_ns.map(ns), r.ratio_vs_linux);
            let _ = writeln!(
                t,
                "      woken waits per round trip (softmm: asleep or yielding): softmm {:.2}{}",
                r.softmm_sleeps_per_round_trip,
                r.linux_sleeps_per_round_trip.map(|l| format!(", Linux {l:.2}")).unwrap_or_default()
            );
        }
        let _ = writeln!(
            t,
            "  (d) contended mutex, lock/unlock pairs per second (context: the rate follows the lock word's cache \
             line more than the futex):"
        );
        for r in &self.mutex {
            row(
                t,
                &format!("    {} threads", r.threads),
                format!("{:.2} M/s", r.softmm_mops),
                r.linux_mops.map(|l| format!("{l:.2} M/s")),
                r.ratio_vs_linux,
            );
        }
    }

    /// (e), the `Mm` paths and the other context figures.
    fn text_context(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "  (e) COW fault ({}, per page): {} with no waiter, {} with a waiter in the address space",
            bytes(self.cow_size_bytes),
            ns(self.cow_fault_ns),
            ns(self.cow_fault_with_waiter_ns)
        );
        let _ = writeln!(
            t,
            "      no-waiter vcache check (fence + load): {:.1} ns alone, {:.1} ns after a 4 KiB copy",
            self.vcache_check_ns, self.vcache_check_after_copy_ns
        );
        let _ = writeln!(t, "      = {:.2} % of a COW fault", self.vcache_check_percent_of_cow);
        let x = |r: Option<f64>| r.map(|r| format!(" ({r:.2}x Linux)")).unwrap_or_default();
        let p = &self.prototypes;
        let _ = writeln!(t, "  the same through `Mm`, and context (softmm side only):");
        let _ = writeln!(
            t,
            "    wake, no waiters, Mm::futex_wake (read lock + page walk):       {}{}",
            ns(p.wake_via_mm_ns),
            x(p.wake_via_mm_ratio_vs_linux)
        );
        let _ = writeln!(
            t,
            "    EAGAIN, Mm::futex_wait (read lock + page walk, then compare):   {}{}",
            ns(p.eagain_via_mm_ns),
            x(p.eagain_via_mm_ratio_vs_linux)
        );
        let _ = writeln!(
            t,
            "    EAGAIN floor: one accessor load and a compare:                  {}{}",
            ns(p.eagain_via_accessor_ns),
            x(p.eagain_via_accessor_ratio_vs_linux)
        );
        for r in &self.pingpong {
            let _ = writeln!(
                t,
                "    ping-pong, {}, waits that sleep at once (futex_spin 0): {}{}, {:.2} woken waits per round trip",
                r.place,
                ns(r.softmm_sleep_at_once_ns),
                x(r.softmm_sleep_at_once_ratio_vs_linux),
                r.softmm_sleep_at_once_sleeps_per_round_trip
            );
        }
    }
}

impl Report for FutexResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ =
            writeln!(t, "bench futex: softmm futexes vs Linux futex(2) (non-private ops, private anonymous memory)");
        let _ = writeln!(
            t,
            "  median of {} runs; per run {} calls, {} round trips ({} on two CPUs), {} lock/unlock pairs",
            self.reps,
            self.calls_per_run,
            self.round_trips_per_run,
            self.round_trips_per_run_two_cpus,
            self.mutex_ops_per_run
        );
        let _ = writeln!(t, "  {:<30}{:>12}{:>12}{:>14}", "", "softmm", "linux", "linux/softmm");
        self.text_calls(&mut t);
        self.text_context(&mut t);
        if self.wake_linux_ns.is_none() {
            let _ = writeln!(t, "  (run with --vs-linux for the Linux figures and ratios)");
        }
        t
    }
}
