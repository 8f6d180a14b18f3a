//! `softmm bench`: time the same work on softmm and on Linux in one run.
//!
//! (futex, in `futex.rs`, times futex calls, ping-pong, a contended mutex
//! and the vcache's cost to a COW fault; rmap, in `rmap.rs`, fork + exit
//! churn on two threads; reclaim, in `reclaim.rs`, swap throughput against
//! the swap file's bandwidth; notifier, in `notifier.rs`, what MMU notifier
//! brackets cost with no subscriber and with one. Those three have no Linux
//! side.)
//!
//! fault and cow report WARM and COLD figures (see `docs/BENCHMARKS.md`;
//! fork, in `fork.rs`, reports warm figures over several sizes):
//! on a VM the first touch of never-used memory costs the host a fault of
//! its own, for Linux and for softmm's arena alike, so comparing a warm side
//! with a cold one would measure the hypervisor, not the memory manager.
//!
//! - cold: fresh memory on both sides (a new softmm machine per run; a new
//!   Linux mapping never touched before), every run's memory kept until all
//!   cold runs are done so no run recycles another's frames. Cold runs come
//!   first, before this benchmark frees anything.
//! - warm: the same amount of memory was used and freed just before (softmm:
//!   mapped, touched, unmapped in the same machine; Linux: in the same
//!   process), so frames are recycled ones on both sides.
//!
//! `ratio_vs_linux` = linux time / softmm time (higher: softmm faster); the
//! JSON `ratio_vs_linux` is the warm one. Each figure is the median of
//! `--reps` runs. The two sides never run at the same time, and no softmm
//! machine is alive while Linux forks (fork copies this whole process).

pub(crate) mod cpu;
pub mod exec;
pub mod file;
pub mod fork;
pub mod free;
pub mod futex;
pub mod linux;
pub mod notifier;
pub mod reclaim;
pub mod remap;
pub mod rmap;
pub mod snapshot;
pub mod softmm_side;

use crate::error::{CliError, CliResult};
use crate::report::emit;
use crate::units::{bytes, count, mem_available, ns, PAGE};
use crate::BenchKind;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::any::Any;
use std::fmt::Write as _;

/// Options of `softmm bench`.
pub struct BenchOpts {
    pub vs_linux: bool,
    /// exec only: also run the programs under qemu-riscv64.
    pub vs_qemu: bool,
    pub json: bool,
    pub size: Option<u64>,
    /// fork only: the resident sizes (empty: --size, or the default).
    pub sizes: Vec<u64>,
    /// fork only: where to write an SVG plot of fork latency against size.
    pub plot: Option<std::path::PathBuf>,
    pub reps: usize,
    pub no_thp: bool,
    /// rmap only: forks per thread per timed run.
    pub iterations: Option<u64>,
    /// reclaim only: run the machine's background reclaimer.
    pub background_reclaim: bool,
}

/// Memory of cold runs, kept alive until all cold runs are done so that no
/// run gets frames another one freed. Disabled (things are dropped at once)
/// when that much memory is not available.
pub struct Keep {
    items: Vec<Box<dyn Any>>,
    enabled: bool,
}

impl Keep {
    fn new(enabled: bool) -> Keep {
        Keep { items: Vec::new(), enabled }
    }

    pub fn hold<T: 'static>(&mut self, x: T) {
        if self.enabled {
            self.items.push(Box::new(x));
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// A spinner on stderr for "what is running now" (hidden when stderr is not
/// a terminal; never ticks on its own, so it starts no thread before forks).
fn status() -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if let Ok(s) = ProgressStyle::with_template("{spinner} {msg}") {
        pb.set_style(s);
    }
    pb
}

fn say(pb: &ProgressBar, msg: String) {
    pb.set_message(msg);
    pb.tick();
}

/// What a bench measured: one value that is both its JSON object and
/// the source of its text table, so the two never disagree.
pub trait Report: Serialize {
    /// The human-readable table of these figures.
    fn text(&self) -> String;
}

/// The text and JSON of one bench's result.
fn output<R: Report>(r: &R) -> CliResult<(String, serde_json::Value)> {
    let v = serde_json::to_value(r).map_err(|e| CliError(format!("JSON output: {e}")))?;
    Ok((r.text(), v))
}

/// The benches of `bench all`, in the order they run.
const ALL: [BenchKind; 13] = [
    BenchKind::Fault,
    BenchKind::Cow,
    BenchKind::Fork,
    BenchKind::Tlb,
    BenchKind::Read,
    BenchKind::Futex,
    BenchKind::Rmap,
    BenchKind::Reclaim,
    BenchKind::Notifier,
    BenchKind::Free,
    BenchKind::Mremap,
    BenchKind::File,
    BenchKind::Snapshot,
];

/// Refuse options given to a bench that does not take them.
fn check_options(which: BenchKind, o: &BenchOpts) -> CliResult<()> {
    if !o.sizes.is_empty() && which != BenchKind::Fork {
        return Err(CliError("--sizes is for `bench fork` only (use --size)".into()));
    }
    if o.plot.is_some() && !matches!(which, BenchKind::Fork | BenchKind::All) {
        return Err(CliError("--plot is for `bench fork` only".into()));
    }
    if o.iterations.is_some() && !matches!(which, BenchKind::Rmap | BenchKind::All) {
        return Err(CliError("--iterations is for `bench rmap` only".into()));
    }
    if o.background_reclaim && !matches!(which, BenchKind::Reclaim | BenchKind::All) {
        return Err(CliError("--background-reclaim is for `bench reclaim` only".into()));
    }
    if o.vs_qemu && which != BenchKind::Exec {
        return Err(CliError("--vs-qemu is for `bench exec` only".into()));
    }
    Ok(())
}

/// Run one bench: its text and its JSON object.
fn run_one(k: BenchKind, o: &BenchOpts, all: bool) -> CliResult<(String, serde_json::Value)> {
    // With `all`, --size applies to every bench but tlb, whose working
    // set must fit its TLB, futex, whose COW region keeps its default,
    // rmap, whose 64 MiB process is the load it models (a large one
    // would make its copied-tables forks take minutes), and notifier,
    // whose 1 GiB munmap is the case it measures (and costs little), and
    // mremap, whose 1 GiB move is its case too, and snapshot, whose
    // 1 GiB process is the fork server's it compares with.
    let size = if all
        && matches!(
            k,
            BenchKind::Tlb
                | BenchKind::Futex
                | BenchKind::Rmap
                | BenchKind::Notifier
                | BenchKind::Mremap
                | BenchKind::Snapshot
        ) {
        None
    } else {
        o.size
    };
    match k {
        BenchKind::Fault | BenchKind::Cow => output(&pair(k, o, size)?),
        BenchKind::Fork => {
            let sizes = match (all, &o.sizes[..], size) {
                (true, _, s) => vec![s.unwrap_or(fork::ALL_SIZE)],
                (false, [], Some(s)) => vec![s],
                (false, [], None) => fork::DEFAULT_SIZES.to_vec(),
                (false, list, _) => list.to_vec(),
            };
            output(&fork::fork(o, &sizes)?)
        }
        BenchKind::Tlb => output(&tlb(o, size)?),
        BenchKind::Read => output(&read(o, size)?),
        BenchKind::Futex => output(&futex::futex(o, size)?),
        BenchKind::Rmap => output(&rmap::rmap(o, size)?),
        BenchKind::Reclaim => output(&reclaim::reclaim(o, size)?),
        BenchKind::Notifier => output(&notifier::notifier(o, size)?),
        BenchKind::Free => output(&free::free(o, size)?),
        BenchKind::Mremap => output(&remap::remap(o, size)?),
        BenchKind::File => output(&file::file(o, size)?),
        BenchKind::Snapshot => output(&snapshot::snapshot(o, size)?),
        BenchKind::Exec => output(&exec::exec(o, size)?),
        BenchKind::All => Err(CliError("internal: 'all' is expanded before dispatch".into())),
    }
}

pub fn bench(which: BenchKind, o: &BenchOpts) -> CliResult<()> {
    check_options(which, o)?;
    let all = which == BenchKind::All;
    let list = if all { ALL.to_vec() } else { vec![which] };
    let mut results = Vec::new();
    for (n, k) in list.into_iter().enumerate() {
        let (text, json) = run_one(k, o, all)?;
        if n > 0 {
            emit("\n")?;
        }
        emit(&text)?;
        results.push(json);
    }
    if o.json {
        let last = if all {
            serde_json::json!({ "bench": "all", "results": results })
        } else {
            results.pop().unwrap_or(serde_json::Value::Null)
        };
        let line = serde_json::to_string(&last).map_err(|e| CliError(format!("JSON output: {e}")))?;
        emit(&format!("{line}\n"))?;
    }
    Ok(())
}

/// What the host has available (`MemAvailable`; unlimited when it cannot
/// tell), and the 90 % of it a bench may use.
pub fn memory_budget() -> (u64, u64) {
    let avail = mem_available().unwrap_or(u64::MAX);
    (avail, avail / 10 * 9)
}

/// Refuse up front a bench of `size` that needs about `need` bytes of
/// memory beyond its budget ([`memory_budget`]), rather than take the
/// machine's memory until the kernel kills it. Every bench that takes a
/// size calls this before allocating.
pub fn ensure_memory(bench: &str, size: u64, need: u64) -> CliResult<()> {
    let (avail, budget) = memory_budget();
    if need > budget {
        return Err(CliError(format!(
            "bench {bench}: {} needs about {} of memory but only {} is available; use a smaller --size",
            bytes(size),
            bytes(need),
            bytes(avail)
        )));
    }
    Ok(())
}

/// The per-benchmark facts of fault and cow.
struct Spec {
    name: &'static str,
    what: &'static str,
    default_size: u64,
    /// How many times `size` the cold phase keeps alive per run.
    keep_factor: u64,
    /// Peak memory of one run, in multiples of `size`.
    peak_factor: u64,
}

impl Spec {
    fn of(kind: BenchKind) -> Spec {
        match kind {
            BenchKind::Fault => Spec {
                name: "fault",
                what: "demand-zero write fault (mmap, write one byte per page)",
                default_size: 64 << 20,
                keep_factor: 2,
                peak_factor: 2,
            },
            _ => Spec {
                name: "cow",
                what: "copy-on-write fault (parent wrote every page, fork, child writes one byte per page)",
                default_size: 64 << 20,
                keep_factor: 2,
                peak_factor: 3,
            },
        }
    }
}

#[derive(Serialize)]
struct Samples {
    softmm_warm: Vec<f64>,
    linux_warm: Option<Vec<f64>>,
    softmm_cold: Vec<f64>,
    linux_cold: Option<Vec<f64>>,
}

/// The result of `bench fault` or `bench cow`.
#[derive(Serialize)]
pub struct PairResult {
    bench: &'static str,
    what: &'static str,
    unit: &'static str,
    size_bytes: u64,
    pages: u64,
    reps: usize,
    /// Warm, median.
    softmm_ns: f64,
    /// Fault bench only: warm, but starting right after the unmap, before
    /// the background zeroer has caught up.
    softmm_warm_now_ns: Option<f64>,
    ratio_vs_linux_warm_now: Option<f64>,
    linux_ns: Option<f64>,
    ratio_vs_linux: Option<f64>,
    softmm_cold_ns: f64,
    linux_cold_ns: Option<f64>,
    ratio_vs_linux_cold: Option<f64>,
    /// Whether cold runs kept their memory until all were done.
    cold_runs_isolated: Option<bool>,
    /// Whether transparent huge pages were allowed (softmm's arena asks for them).
    host_thp: bool,
    samples: Samples,
}

/// The cold runs of fault or cow, Linux (with --vs-linux) then softmm,
/// each run's memory kept in `keep`.
fn pair_cold(
    kind: BenchKind,
    o: &BenchOpts,
    size: u64,
    keep: &mut Keep,
    pb: &ProgressBar,
) -> CliResult<(Vec<f64>, Option<Vec<f64>>)> {
    let name = Spec::of(kind).name;
    say(pb, format!("{name}: Linux, cold"));
    let linux = if o.vs_linux {
        Some(match kind {
            BenchKind::Fault => linux::fault_cold(size, o.reps, keep)?,
            _ => linux::cow_cold(size, o.reps, keep)?,
        })
    } else {
        None
    };
    say(pb, format!("{name}: softmm, cold"));
    let softmm = match kind {
        BenchKind::Fault => softmm_side::fault_cold(size, o.reps, keep)?,
        _ => softmm_side::cow_cold(size, o.reps, keep)?,
    };
    Ok((softmm, linux))
}

/// The warm runs of fault or cow: Linux (with --vs-linux), softmm, and for
/// fault softmm again starting right after the unmap.
#[allow(clippy::type_complexity)]
fn pair_warm(
    kind: BenchKind,
    o: &BenchOpts,
    size: u64,
    pb: &ProgressBar,
) -> CliResult<(Vec<f64>, Option<Vec<f64>>, Option<Vec<f64>>)> {
    let name = Spec::of(kind).name;
    say(pb, format!("{name}: Linux, warm"));
    let linux = if o.vs_linux {
        Some(match kind {
            BenchKind::Fault => linux::fault_warm(size, o.reps)?,
            _ => linux::cow_warm(size, o.reps)?,
        })
    } else {
        None
    };
    say(pb, format!("{name}: softmm, warm"));
    let softmm = match kind {
        BenchKind::Fault => softmm_side::fault_warm(size, o.reps, true)?,
        _ => softmm_side::cow_warm(size, o.reps)?,
    };
    let now = if kind == BenchKind::Fault {
        say(pb, format!("{name}: softmm, warm, right after unmap"));
        Some(softmm_side::fault_warm(size, o.reps, false)?)
    } else {
        None
    };
    Ok((softmm, now, linux))
}

fn pair(kind: BenchKind, o: &BenchOpts, size: Option<u64>) -> CliResult<PairResult> {
    let spec = Spec::of(kind);
    let size = size.unwrap_or(spec.default_size);
    let pages = size / PAGE;
    let reps = o.reps;
    let peak = size.saturating_mul(spec.peak_factor);
    ensure_memory(spec.name, size, peak)?;
    let (avail, _) = memory_budget();
    let kept = size.saturating_mul(spec.keep_factor).saturating_mul(reps as u64);
    let isolate = spec.keep_factor > 0 && kept.saturating_add(peak) <= avail / 2;

    let pb = status();
    // Cold first: nothing of this benchmark has been freed yet.
    let mut keep = Keep::new(isolate);
    let (softmm_cold, linux_cold) = pair_cold(kind, o, size, &mut keep, &pb)?;
    drop(keep);
    let (softmm_warm, softmm_warm_now, linux_warm) = pair_warm(kind, o, size, &pb)?;
    pb.finish_and_clear();

    let sw = median(&softmm_warm);
    let swn = softmm_warm_now.as_deref().map(median);
    let sc = median(&softmm_cold);
    let lw = linux_warm.as_deref().map(median);
    let lc = linux_cold.as_deref().map(median);
    Ok(PairResult {
        bench: spec.name,
        what: spec.what,
        unit: "ns/page",
        size_bytes: size,
        pages,
        reps,
        softmm_ns: sw,
        softmm_warm_now_ns: swn,
        ratio_vs_linux_warm_now: lw.zip(swn).map(|(l, s)| l / s),
        linux_ns: lw,
        ratio_vs_linux: lw.map(|l| l / sw),
        softmm_cold_ns: sc,
        linux_cold_ns: lc,
        ratio_vs_linux_cold: lc.map(|l| l / sc),
        cold_runs_isolated: (spec.keep_factor > 0).then_some(isolate),
        host_thp: !o.no_thp,
        samples: Samples { softmm_warm, linux_warm, softmm_cold, linux_cold },
    })
}

impl Report for PairResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "bench {}: {}", self.bench, self.what);
        let _ = writeln!(
            t,
            "  {} ({} pages) per run, median of {} runs{}{}",
            bytes(self.size_bytes),
            count(self.pages),
            self.reps,
            if self.host_thp { "" } else { ", THP disabled (4 KiB host pages)" },
            if self.cold_runs_isolated == Some(false) {
                " (cold runs not isolated: not enough free memory)"
            } else {
                ""
            }
        );
        let _ = writeln!(t, "  {:<8}{:>14}{:>14}{:>16}", "", "softmm", "linux", "linux/softmm");
        let row = |name: &str, s: f64, l: Option<f64>, r: Option<f64>| {
            format!(
                "  {:<8}{:>14}{:>14}{:>16}\n",
                name,
                ns(s),
                l.map(ns).unwrap_or_else(|| "-".into()),
                r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
            )
        };
        t.push_str(&row("warm", self.softmm_ns, self.linux_ns, self.ratio_vs_linux));
        if let Some(swn) = self.softmm_warm_now_ns {
            t.push_str(&row("warm-now", swn, self.linux_ns, self.ratio_vs_linux_warm_now));
            let _ = writeln!(
                t,
                "  (warm: freed frames were zeroed by softmm's background thread before the run;\n   \
                 warm-now: the run starts right after the unmap and mostly zeroes frames itself)"
            );
        }
        t.push_str(&row("cold", self.softmm_cold_ns, self.linux_cold_ns, self.ratio_vs_linux_cold));
        t
    }
}

/// Loads per timed run of the TLB bench.
const TLB_LOADS: u64 = 50_000_000;
/// Entries of an accessor's TLB (4 KiB each).
const TLB_PAGES: u64 = 256;

#[derive(Serialize)]
struct TlbSamples {
    softmm: Vec<f64>,
    native: Vec<f64>,
}

/// The result of `bench tlb`.
#[derive(Serialize)]
pub struct TlbResult {
    bench: &'static str,
    size_bytes: u64,
    pages: u64,
    loads_per_run: u64,
    reps: usize,
    softmm_mloads_per_s: f64,
    native_mloads_per_s: f64,
    ratio_vs_native: f64,
    softmm_ns_per_load: f64,
    tlb_misses_while_timing: u64,
    samples: TlbSamples,
}

fn tlb(o: &BenchOpts, size: Option<u64>) -> CliResult<TlbResult> {
    let size = size.unwrap_or(TLB_PAGES * PAGE);
    // softmm's working set, the host array of the same size, page tables.
    ensure_memory("tlb", size, size.saturating_mul(2).saturating_add(64 << 20))?;
    let pb = status();
    say(&pb, "tlb: random loads".into());
    let f = softmm_side::tlb(size, TLB_LOADS, o.reps)?;
    pb.finish_and_clear();
    let s = median(&f.softmm);
    let n = median(&f.native);
    Ok(TlbResult {
        bench: "tlb",
        size_bytes: size,
        pages: size / PAGE,
        loads_per_run: TLB_LOADS,
        reps: o.reps,
        softmm_mloads_per_s: s,
        native_mloads_per_s: n,
        ratio_vs_native: s / n,
        softmm_ns_per_load: 1e3 / s,
        tlb_misses_while_timing: f.misses,
        samples: TlbSamples { softmm: f.softmm, native: f.native },
    })
}

impl Report for TlbResult {
    fn text(&self) -> String {
        let (s, n) = (self.softmm_mloads_per_s, self.native_mloads_per_s);
        let mut t = String::new();
        let _ = writeln!(t, "bench tlb: random aligned 8-byte loads through one accessor, one core");
        let _ = writeln!(
            t,
            "  working set {} ({} pages, TLB {} entries), {}M loads per run, median of {} runs",
            bytes(self.size_bytes),
            self.pages,
            TLB_PAGES,
            self.loads_per_run / 1_000_000,
            self.reps
        );
        let _ = writeln!(t, "  softmm accessor  {s:>8.1} M loads/s  ({:.2} ns/load)", self.softmm_ns_per_load);
        let _ = writeln!(t, "  host array       {n:>8.1} M loads/s  ({:.2} ns/load; same loop, plain loads)", 1e3 / n);
        let _ = writeln!(t, "  TLB misses while timing: {}", count(self.tlb_misses_while_timing));
        if self.pages > TLB_PAGES {
            let _ = writeln!(t, "  note: the working set exceeds the TLB; figures include misses");
        }
        t
    }
}

#[derive(Serialize)]
struct ReadSamples {
    softmm: Vec<f64>,
    memcpy: Vec<f64>,
}

/// The result of `bench read`.
#[derive(Serialize)]
pub struct ReadResult {
    bench: &'static str,
    size_bytes: u64,
    passes: u64,
    reps: usize,
    softmm_gbps: f64,
    memcpy_gbps: f64,
    ratio_vs_memcpy: f64,
    in_tlb_size_bytes: u64,
    in_tlb_softmm_gbps: f64,
    in_tlb_memcpy_gbps: f64,
    in_tlb_ratio_vs_memcpy: f64,
    samples: ReadSamples,
}

fn read(o: &BenchOpts, size: Option<u64>) -> CliResult<ReadResult> {
    let size = size.unwrap_or(64 << 20);
    ensure_memory("read", size, size.saturating_mul(2))?;
    // At least 256 MiB copied per timed run.
    let passes = ((256u64 << 20) / size).max(1);
    let small = TLB_PAGES * PAGE;
    let pb = status();
    say(&pb, format!("read: {}", bytes(size)));
    let big = softmm_side::read(size, passes, o.reps)?;
    say(&pb, format!("read: {} (in the TLB)", bytes(small)));
    let little = softmm_side::read(small, (256u64 << 20) / small, o.reps)?;
    pb.finish_and_clear();
    let (s, m) = (median(&big.softmm), median(&big.memcpy));
    let (ss, sm) = (median(&little.softmm), median(&little.memcpy));
    Ok(ReadResult {
        bench: "read",
        size_bytes: size,
        passes,
        reps: o.reps,
        softmm_gbps: s,
        memcpy_gbps: m,
        ratio_vs_memcpy: s / m,
        in_tlb_size_bytes: small,
        in_tlb_softmm_gbps: ss,
        in_tlb_memcpy_gbps: sm,
        in_tlb_ratio_vs_memcpy: ss / sm,
        samples: ReadSamples { softmm: big.softmm, memcpy: big.memcpy },
    })
}

impl Report for ReadResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "bench read: sequential 4 KiB page reads through an accessor into one buffer, vs memcpy");
        let _ = writeln!(t, "  {:<26}{:>12}{:>12}{:>10}", "", "softmm", "memcpy", "ratio");
        let _ = writeln!(
            t,
            "  {:<26}{:>7.2} GB/s{:>7.2} GB/s{:>9.0}%",
            format!("{} x{} (TLB misses)", bytes(self.size_bytes), self.passes),
            self.softmm_gbps,
            self.memcpy_gbps,
            self.ratio_vs_memcpy * 100.0
        );
        let _ = writeln!(
            t,
            "  {:<26}{:>7.2} GB/s{:>7.2} GB/s{:>9.0}%",
            format!("{} (in the TLB)", bytes(self.in_tlb_size_bytes)),
            self.in_tlb_softmm_gbps,
            self.in_tlb_memcpy_gbps,
            self.in_tlb_ratio_vs_memcpy * 100.0
        );
        t
    }
}
