//! `softmm bench rmap`: fork + exit churn of a populated process on two
//! threads (an AIM-like load), the load that contends on the reverse map.
//!
//! A parent with `--size` (default 64 MiB) of private memory, every page
//! written, is forked over and over by two threads at once; each child
//! exits at once (or after writing 1 % of its pages: one in every 100, so
//! every PTE table is touched). Every fork links the child's VMA into the
//! parent's anon_vma chain and every exit unlinks it, under the anon_vma
//! lock, while the other thread forks or exits too; the figure is fork +
//! exit pairs per second over both threads, for softmm's default fork
//! policy (shared PTE tables) and for copied tables. The lock compiled in
//! (`softmm::testing::LOCK_KIND`, spin or rwsem by the `rmap-rwsem` feature)
//! is printed with the figures; `scripts/bench-rmap.sh` builds both and
//! compares them.
//!
//! Each run is checked: as many forks as asked, one COW copy per child
//! write, and after the run no frame, page table, shared table or anon_vma
//! more than before; at the end the parent's data is intact and the
//! machine passes its audit.

use super::{median, say, status, BenchOpts, Report};
use crate::error::{check, CliError, CliResult, Context};
use crate::units::{bytes, count, PAGE};
use serde::Serialize;
use softmm::GuestWords;
use softmm::{Config, ForkPolicy, Machine, MachineStats, MapKind, Mm, Placement, Prot};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::Instant;

/// Resident size of the forked process without --size.
pub const DEFAULT_SIZE: u64 = 64 << 20;
/// Forks per thread per timed run without --iterations.
pub const DEFAULT_ITERATIONS: u64 = 400;
/// Plain fork + exit with shared tables is about 50 times cheaper than the
/// other variants (no PTE is copied); it runs this many times more forks so
/// its figure is timed over a comparable span.
const CHEAP_FACTOR: u64 = 50;
/// Threads forking the parent at once.
const THREADS: u64 = 2;
/// The writing children write one page in every `WRITE_STRIDE` (1 %).
const WRITE_STRIDE: u64 = 100;

/// The tag the parent leaves at the start of page `i`.
fn tag(i: u64) -> u64 {
    0x524d_4150_0000_0000 ^ i
}

/// One variant of the churn.
#[derive(Clone, Copy)]
struct Variant {
    policy: ForkPolicy,
    /// Whether each child writes 1 % of its pages before exiting.
    writes: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant { policy: ForkPolicy::SharedTables, writes: false },
    Variant { policy: ForkPolicy::CopyTables, writes: false },
    Variant { policy: ForkPolicy::SharedTables, writes: true },
    Variant { policy: ForkPolicy::CopyTables, writes: true },
];

impl Variant {
    /// Forks per thread per run, for `--iterations` `iters`.
    fn iterations(&self, iters: u64) -> u64 {
        if self.policy == ForkPolicy::SharedTables && !self.writes {
            iters.saturating_mul(CHEAP_FACTOR)
        } else {
            iters
        }
    }

    fn name(&self) -> String {
        format!(
            "{}{}",
            if self.policy == ForkPolicy::CopyTables { "copied tables" } else { "shared tables" },
            if self.writes { ", child writes 1 %" } else { "" }
        )
    }
}

/// What a child does between its fork and its exit.
fn child_life(child: &Mm, base: u64, pages: u64, writes: bool) -> CliResult<()> {
    if !writes {
        return Ok(());
    }
    let mut acc = child.accessor();
    let mut i = 0;
    while i < pages {
        let va = base + i * PAGE;
        acc.store_u64(va, !tag(i)).context(|| format!("child write at {va:#x}"))?;
        i += WRITE_STRIDE;
    }
    Ok(())
}

/// One run: `THREADS` threads each fork the parent `iters` times; returns
/// the wall time in seconds from the first thread's start to the last one's
/// end. The threads time themselves: on two cores the spawning thread may
/// not run again until a worker is done.
fn churn(parent: &Mm, base: u64, pages: u64, v: Variant, iters: u64) -> CliResult<f64> {
    let start = Barrier::new(THREADS as usize);
    let stop = AtomicBool::new(false);
    let results: Vec<CliResult<(Instant, Instant)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| -> CliResult<(Instant, Instant)> {
                    start.wait();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        if stop.load(Ordering::Relaxed) {
                            return Err(CliError("stopped: the other thread failed".into()));
                        }
                        let r = parent
                            .fork_with(v.policy)
                            .context(|| format!("fork ({:?})", v.policy))
                            .and_then(|child| child_life(&child, base, pages, v.writes));
                        if let Err(e) = r {
                            stop.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok((t0, Instant::now()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(CliError("a fork thread panicked".into()))))
            .collect()
    });
    let mut span: Option<(Instant, Instant)> = None;
    for r in results {
        let (a, b) = r?;
        span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
    }
    Ok(span.map_or(0.0, |(a, b)| (b - a).as_secs_f64()))
}

/// The counters after a run must be the run's and nothing may be left over.
fn check_run(v: Variant, iters: u64, writes: u64, b: &MachineStats, a: &MachineStats) -> CliResult<()> {
    let forks = a.forks - b.forks;
    let cows = a.fault_cow_copy - b.fault_cow_copy;
    let want_forks = THREADS * iters;
    let want_cows = if v.writes { want_forks * writes } else { 0 };
    check(forks == want_forks && cows == want_cows, || {
        format!(
            "bench rmap ({}): {forks} forks and {cows} COW copies counted, expected {want_forks} and {want_cows}",
            v.name()
        )
    })?;
    check(
        a.frames_in_use == b.frames_in_use
            && a.page_tables == b.page_tables
            && a.shared_tables == b.shared_tables
            && a.anon_vmas == b.anon_vmas,
        || {
            format!(
                "bench rmap ({}): after the children exited: {} frames, {} page tables, {} shared tables, {} anon_vmas; \
                 before: {}, {}, {}, {}",
                v.name(),
                a.frames_in_use,
                a.page_tables,
                a.shared_tables,
                a.anon_vmas,
                b.frames_in_use,
                b.page_tables,
                b.shared_tables,
                b.anon_vmas
            )
        },
    )
}

pub fn rmap(o: &BenchOpts, size: Option<u64>) -> CliResult<RmapResult> {
    let size = size.unwrap_or(DEFAULT_SIZE);
    let iters = o.iterations.unwrap_or(DEFAULT_ITERATIONS);
    let pages = size / PAGE;
    let writes = pages.div_ceil(WRITE_STRIDE);
    // The parent, two children's page tables and COW copies, slack.
    let need = size.saturating_add(size / 64).saturating_add(64 << 20);
    super::ensure_memory("rmap", size, need)?;
    let pb = status();
    say(&pb, format!("rmap: populating {}", bytes(size)));
    let arena_bytes = need.saturating_add(size);
    let m = Machine::new(Config { arena_bytes, ..Config::default() })
        .context(|| format!("creating a machine with a {} arena", bytes(arena_bytes)))?;
    let parent = m.new_mm().context(|| "creating the parent address space".into())?;
    let base = parent
        .mmap(0, size, Prot::RW, MapKind::Private, Placement::Hint)
        .context(|| format!("mmap of {}", bytes(size)))?;
    // A running process has an accessor (a CPU) on its memory: forks must
    // write-protect through it, as Linux's do through the parent's TLB.
    let mut pacc = parent.accessor();
    for i in 0..pages {
        let va = base + i * PAGE;
        pacc.fill_bytes(va, PAGE as usize, (i % 251) as u8 | 1).context(|| format!("parent write at {va:#x}"))?;
        pacc.store_u64(va, tag(i)).context(|| format!("parent write at {va:#x}"))?;
    }

    let mut samples: [Vec<f64>; 4] = Default::default();
    for (v, rates) in VARIANTS.into_iter().zip(samples.iter_mut()) {
        say(&pb, format!("rmap: {} ({} lock), warm-up", v.name(), softmm::testing::LOCK_KIND));
        let n = v.iterations(iters);
        churn(&parent, base, pages, v, n.div_ceil(10))?;
        for r in 0..o.reps {
            say(&pb, format!("rmap: {} ({} lock), run {}/{}", v.name(), softmm::testing::LOCK_KIND, r + 1, o.reps));
            m.wait_for_prezeroing(std::time::Duration::from_secs(30));
            let b = m.stats();
            let secs = churn(&parent, base, pages, v, n)?;
            let a = m.stats();
            check_run(v, n, writes, &b, &a)?;
            rates.push((THREADS * n) as f64 / secs.max(1e-9));
        }
    }
    say(&pb, "rmap: verifying the parent".into());
    for i in 0..pages {
        let va = base + i * PAGE;
        let got = pacc.load_u64(va).context(|| format!("parent read at {va:#x}"))?;
        check(got == tag(i), || {
            format!("bench rmap: parent page {i} reads {got:#x} after the churn, wrote {:#x}", tag(i))
        })?;
    }
    m.check_invariants().context(|| "bench rmap: invariant audit after the churn".into())?;
    pb.finish_and_clear();

    let med = samples.each_ref().map(|s| median(s));
    let [shared, copy, shared_write, copy_write] = samples;
    Ok(RmapResult {
        bench: "rmap",
        lock: softmm::testing::LOCK_KIND,
        what: "fork + exit churn of a process with every page written, 2 threads forking it at once",
        unit: "fork+exit per s",
        size_bytes: size,
        pages,
        threads: THREADS,
        iterations: iters,
        iterations_fork_exit_shared: VARIANTS[0].iterations(iters),
        reps: o.reps,
        fork_exit_per_s: med[0],
        fork_exit_per_s_copy: med[1],
        fork_write_exit_per_s: med[2],
        fork_write_exit_per_s_copy: med[3],
        write_stride_pages: WRITE_STRIDE,
        writes_per_child: writes,
        samples: RmapSamples { shared, copy, shared_write, copy_write },
    })
}

#[derive(Serialize)]
struct RmapSamples {
    shared: Vec<f64>,
    copy: Vec<f64>,
    shared_write: Vec<f64>,
    copy_write: Vec<f64>,
}

/// The result of `bench rmap`: fork + exit pairs per second, both threads
/// together, per variant.
#[derive(Serialize)]
pub struct RmapResult {
    bench: &'static str,
    lock: &'static str,
    what: &'static str,
    unit: &'static str,
    size_bytes: u64,
    pages: u64,
    threads: u64,
    iterations: u64,
    iterations_fork_exit_shared: u64,
    reps: usize,
    fork_exit_per_s: f64,
    fork_exit_per_s_copy: f64,
    fork_write_exit_per_s: f64,
    fork_write_exit_per_s_copy: f64,
    write_stride_pages: u64,
    writes_per_child: u64,
    samples: RmapSamples,
}

impl Report for RmapResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "bench rmap: fork + exit churn of a {} process (every page written) on {} threads; anon_vma lock: {}",
            bytes(self.size_bytes),
            self.threads,
            self.lock
        );
        let _ = writeln!(
            t,
            "  {} forks per thread per run ({} for plain fork + exit, shared tables), median of {} runs",
            count(self.iterations),
            count(self.iterations_fork_exit_shared),
            self.reps
        );
        let _ = writeln!(t, "  figures: fork + exit pairs per second, both threads together");
        let _ = writeln!(t, "  {:<34}{:>16}{:>16}", "", "shared tables", "copied tables");
        let rate = |x: f64| format!("{} /s", count(x.round() as u64));
        let _ = writeln!(
            t,
            "  {:<34}{:>16}{:>16}",
            "fork + exit",
            rate(self.fork_exit_per_s),
            rate(self.fork_exit_per_s_copy)
        );
        let _ = writeln!(
            t,
            "  {:<34}{:>16}{:>16}",
            format!("fork + write {} pages + exit", count(self.writes_per_child)),
            rate(self.fork_write_exit_per_s),
            rate(self.fork_write_exit_per_s_copy)
        );
        let _ = writeln!(
            t,
            "  (shared tables is softmm's default fork policy; the writing child writes 1 page in {}, touching \
             every PTE table)",
            self.write_stride_pages
        );
        t
    }
}
