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
pub mod fork;
pub mod futex;
pub mod linux;
pub mod notifier;
pub mod reclaim;
pub mod rmap;
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

pub fn bench(which: BenchKind, o: &BenchOpts) -> CliResult<()> {
    let list = match which {
        BenchKind::All => {
            vec![
                BenchKind::Fault,
                BenchKind::Cow,
                BenchKind::Fork,
                BenchKind::Tlb,
                BenchKind::Read,
                BenchKind::Futex,
                BenchKind::Rmap,
                BenchKind::Reclaim,
                BenchKind::Notifier,
            ]
        }
        k => vec![k],
    };
    let all = which == BenchKind::All;
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
    let mut results = Vec::new();
    let mut missed = Vec::new();
    for (n, k) in list.into_iter().enumerate() {
        // With `all`, --size applies to every bench but tlb, whose working
        // set must fit its TLB, futex, whose COW region keeps its default,
        // rmap, whose 64 MiB process is the load it models (a large one
        // would make its copied-tables forks take minutes), and notifier,
        // whose 1 GiB munmap is the one the issue names (and costs little).
        let size = if all && matches!(k, BenchKind::Tlb | BenchKind::Futex | BenchKind::Rmap | BenchKind::Notifier) {
            None
        } else {
            o.size
        };
        let (text, json, met) = match k {
            BenchKind::Fault | BenchKind::Cow => pair(k, o, size)?,
            BenchKind::Fork => {
                let sizes = match (all, &o.sizes[..], size) {
                    (true, _, s) => vec![s.unwrap_or(fork::ALL_SIZE)],
                    (false, [], Some(s)) => vec![s],
                    (false, [], None) => fork::DEFAULT_SIZES.to_vec(),
                    (false, list, _) => list.to_vec(),
                };
                fork::fork(o, &sizes)?
            }
            BenchKind::Tlb => tlb(o, size)?,
            BenchKind::Read => read(o, size)?,
            BenchKind::Futex => futex::futex(o, size)?,
            BenchKind::Rmap => rmap::rmap(o, size)?,
            BenchKind::Reclaim => reclaim::reclaim(o, size)?,
            BenchKind::Notifier => notifier::notifier(o, size)?,
            BenchKind::All => unreachable_all()?,
        };
        if met == Some(false) {
            if let Some(b) = json.get("bench").and_then(|b| b.as_str()) {
                missed.push(b.to_string());
            }
        }
        if n > 0 {
            emit("\n")?;
        }
        emit(&text)?;
        results.push(json);
    }
    if all {
        emit(&format!(
            "\ntargets: {}\n",
            if missed.is_empty() { "all met".to_string() } else { format!("missed by {}", missed.join(", ")) }
        ))?;
    }
    if o.json {
        let last = if all {
            serde_json::json!({ "bench": "all", "targets_missed": missed, "results": results })
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

fn unreachable_all() -> CliResult<(String, serde_json::Value, Option<bool>)> {
    Err(CliError("internal: 'all' is expanded before dispatch".into()))
}

/// The per-benchmark facts of fault and cow.
struct Spec {
    name: &'static str,
    what: &'static str,
    default_size: u64,
    /// Minimum ratio vs Linux's warm figure asked for by the issue.
    target: Option<f64>,
    /// How many times `size` the cold phase keeps alive per run.
    keep_factor: u64,
    /// Peak memory of one run, in multiples of `size`.
    peak_factor: u64,
}

#[derive(Serialize)]
struct Samples {
    softmm_warm: Vec<f64>,
    linux_warm: Option<Vec<f64>>,
    softmm_cold: Vec<f64>,
    linux_cold: Option<Vec<f64>>,
}

#[derive(Serialize)]
struct PairJson {
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
    target_ratio_vs_linux: Option<f64>,
    target_met: Option<bool>,
    /// Whether cold runs kept their memory until all were done.
    cold_runs_isolated: Option<bool>,
    /// Whether transparent huge pages were allowed (softmm's arena asks for them).
    host_thp: bool,
    samples: Samples,
}

fn pair(kind: BenchKind, o: &BenchOpts, size: Option<u64>) -> CliResult<(String, serde_json::Value, Option<bool>)> {
    let spec = match kind {
        BenchKind::Fault => Spec {
            name: "fault",
            what: "demand-zero write fault (mmap, write one byte per page)",
            default_size: 64 << 20,
            target: Some(4.0),
            keep_factor: 2,
            peak_factor: 2,
        },
        _ => Spec {
            name: "cow",
            what: "copy-on-write fault (parent wrote every page, fork, child writes one byte per page)",
            default_size: 64 << 20,
            target: Some(3.0),
            keep_factor: 2,
            peak_factor: 3,
        },
    };
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
    say(&pb, format!("{}: Linux, cold", spec.name));
    let linux_cold = if o.vs_linux {
        Some(match kind {
            BenchKind::Fault => linux::fault_cold(size, reps, &mut keep)?,
            _ => linux::cow_cold(size, reps, &mut keep)?,
        })
    } else {
        None
    };
    say(&pb, format!("{}: softmm, cold", spec.name));
    let softmm_cold = match kind {
        BenchKind::Fault => softmm_side::fault_cold(size, reps, &mut keep)?,
        _ => softmm_side::cow_cold(size, reps, &mut keep)?,
    };
    drop(keep);
    say(&pb, format!("{}: Linux, warm", spec.name));
    let linux_warm = if o.vs_linux {
        Some(match kind {
            BenchKind::Fault => linux::fault_warm(size, reps)?,
            _ => linux::cow_warm(size, reps)?,
        })
    } else {
        None
    };
    say(&pb, format!("{}: softmm, warm", spec.name));
    let softmm_warm = match kind {
        BenchKind::Fault => softmm_side::fault_warm(size, reps, true)?,
        _ => softmm_side::cow_warm(size, reps)?,
    };
    let softmm_warm_now = if kind == BenchKind::Fault {
        say(&pb, format!("{}: softmm, warm, right after unmap", spec.name));
        Some(softmm_side::fault_warm(size, reps, false)?)
    } else {
        None
    };
    pb.finish_and_clear();

    let sw = median(&softmm_warm);
    let swn = softmm_warm_now.as_deref().map(median);
    let sc = median(&softmm_cold);
    let lw = linux_warm.as_deref().map(median);
    let lc = linux_cold.as_deref().map(median);
    let rw = lw.map(|l| l / sw);
    let rc = lc.map(|l| l / sc);
    let met = match (spec.target, rw) {
        (Some(t), Some(r)) => Some(r >= t),
        _ => None,
    };

    let mut t = String::new();
    let unit = "ns/page";
    let _ = writeln!(t, "bench {}: {}", spec.name, spec.what);
    let _ = writeln!(
        t,
        "  {} ({} pages) per run, median of {} runs{}{}",
        bytes(size),
        count(pages),
        reps,
        if o.no_thp { ", THP disabled (4 KiB host pages)" } else { "" },
        if isolate || spec.keep_factor == 0 { "" } else { " (cold runs not isolated: not enough free memory)" }
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
    t.push_str(&row("warm", sw, lw, rw));
    if let Some(swn) = swn {
        t.push_str(&row("warm-now", swn, lw, lw.map(|l| l / swn)));
        let _ = writeln!(
            t,
            "  (warm: freed frames were zeroed by softmm's background thread before the run;\n   \
             warm-now: the run starts right after the unmap and mostly zeroes frames itself)"
        );
    }
    t.push_str(&row("cold", sc, lc, rc));
    match (spec.target, rw) {
        (Some(target), Some(r)) => {
            let _ = writeln!(
                t,
                "  target: softmm >= {target}x Linux's warm rate -> {} ({r:.2}x)",
                if r >= target { "met" } else { "MISSED" }
            );
        }
        (Some(target), None) => {
            let _ = writeln!(t, "  target: softmm >= {target}x Linux's warm rate (run with --vs-linux to check)");
        }
        (None, _) => {
            let _ = writeln!(t, "  (no target in the issue; for context)");
        }
    }

    let json = PairJson {
        bench: spec.name,
        what: spec.what,
        unit,
        size_bytes: size,
        pages,
        reps,
        softmm_ns: sw,
        softmm_warm_now_ns: swn,
        ratio_vs_linux_warm_now: lw.zip(swn).map(|(l, s)| l / s),
        linux_ns: lw,
        ratio_vs_linux: rw,
        softmm_cold_ns: sc,
        linux_cold_ns: lc,
        ratio_vs_linux_cold: rc,
        target_ratio_vs_linux: spec.target,
        target_met: met,
        cold_runs_isolated: (spec.keep_factor > 0).then_some(isolate),
        host_thp: !o.no_thp,
        samples: Samples { softmm_warm, linux_warm, softmm_cold, linux_cold },
    };
    let v = serde_json::to_value(&json).map_err(|e| CliError(format!("JSON output: {e}")))?;
    Ok((t, v, met))
}

/// Loads per timed run of the TLB bench.
const TLB_LOADS: u64 = 50_000_000;
/// Entries of an accessor's TLB (4 KiB each).
const TLB_PAGES: u64 = 256;
const TLB_TARGET: f64 = 150.0;

fn tlb(o: &BenchOpts, size: Option<u64>) -> CliResult<(String, serde_json::Value, Option<bool>)> {
    let size = size.unwrap_or(TLB_PAGES * PAGE);
    // softmm's working set, the host array of the same size, page tables.
    ensure_memory("tlb", size, size.saturating_mul(2).saturating_add(64 << 20))?;
    let pages = size / PAGE;
    let pb = status();
    say(&pb, "tlb: random loads".into());
    let f = softmm_side::tlb(size, TLB_LOADS, o.reps)?;
    pb.finish_and_clear();
    let s = median(&f.softmm);
    let n = median(&f.native);
    // The target is for a working set that fits the TLB.
    let fits = pages <= TLB_PAGES;
    let met = s >= TLB_TARGET;
    let mut t = String::new();
    let _ = writeln!(t, "bench tlb: random aligned 8-byte loads through one accessor, one core");
    let _ = writeln!(
        t,
        "  working set {} ({} pages, TLB {} entries), {}M loads per run, median of {} runs",
        bytes(size),
        pages,
        TLB_PAGES,
        TLB_LOADS / 1_000_000,
        o.reps
    );
    let _ = writeln!(t, "  softmm accessor  {s:>8.1} M loads/s  ({:.2} ns/load)", 1e3 / s);
    let _ = writeln!(t, "  host array       {n:>8.1} M loads/s  ({:.2} ns/load; same loop, plain loads)", 1e3 / n);
    let _ = writeln!(t, "  TLB misses while timing: {}", count(f.misses));
    if pages > TLB_PAGES {
        let _ = writeln!(t, "  note: the working set exceeds the TLB; figures include misses");
    }
    if fits {
        let _ = writeln!(t, "  target: >= {TLB_TARGET} M loads/s -> {} ({s:.1})", if met { "met" } else { "MISSED" });
    }
    let json = serde_json::json!({
        "bench": "tlb",
        "size_bytes": size,
        "pages": pages,
        "loads_per_run": TLB_LOADS,
        "reps": o.reps,
        "softmm_mloads_per_s": s,
        "native_mloads_per_s": n,
        "ratio_vs_native": s / n,
        "softmm_ns_per_load": 1e3 / s,
        "tlb_misses_while_timing": f.misses,
        "target_mloads_per_s": TLB_TARGET,
        "target_met": fits.then_some(met),
        "samples": { "softmm": f.softmm, "native": f.native },
    });
    Ok((t, json, fits.then_some(met)))
}

const READ_TARGET: f64 = 0.5;

fn read(o: &BenchOpts, size: Option<u64>) -> CliResult<(String, serde_json::Value, Option<bool>)> {
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
    let ratio = s / m;
    let met = ratio >= READ_TARGET;
    let mut t = String::new();
    let _ = writeln!(t, "bench read: sequential 4 KiB page reads through an accessor into one buffer, vs memcpy");
    let _ = writeln!(t, "  {:<26}{:>12}{:>12}{:>10}", "", "softmm", "memcpy", "ratio");
    let _ = writeln!(
        t,
        "  {:<26}{:>7.2} GB/s{:>7.2} GB/s{:>9.0}%",
        format!("{} x{passes} (TLB misses)", bytes(size)),
        s,
        m,
        ratio * 100.0
    );
    let _ = writeln!(
        t,
        "  {:<26}{:>7.2} GB/s{:>7.2} GB/s{:>9.0}%",
        format!("{} (in the TLB)", bytes(small)),
        ss,
        sm,
        ss / sm * 100.0
    );
    let _ = writeln!(
        t,
        "  target: >= {:.0}% of memcpy -> {} ({:.0}%, {} set)",
        READ_TARGET * 100.0,
        if met { "met" } else { "MISSED" },
        ratio * 100.0,
        bytes(size)
    );
    let json = serde_json::json!({
        "bench": "read",
        "size_bytes": size,
        "passes": passes,
        "reps": o.reps,
        "softmm_gbps": s,
        "memcpy_gbps": m,
        "ratio_vs_memcpy": ratio,
        "in_tlb_size_bytes": small,
        "in_tlb_softmm_gbps": ss,
        "in_tlb_memcpy_gbps": sm,
        "in_tlb_ratio_vs_memcpy": ss / sm,
        "target_ratio_vs_memcpy": READ_TARGET,
        "target_met": met,
        "samples": { "softmm": big.softmm, "memcpy": big.memcpy },
    });
    Ok((t, json, Some(met)))
}
