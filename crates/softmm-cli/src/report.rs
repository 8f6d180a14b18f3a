//! Text reports: the `run` report and the tables of the benchmarks.

use crate::error::{CliError, CliResult};
use crate::units::{bytes, count, ns, PAGE};
use softmm::{MachineStats, Mm, Smaps};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// One timed phase of `run`.
pub struct Phase {
    pub name: String,
    pub ns: f64,
    /// Pages the phase went over, for a per-page figure.
    pub pages: Option<u64>,
}

impl Phase {
    pub fn new(name: &str, since: Instant, pages: Option<u64>) -> Phase {
        Phase { name: name.to_string(), ns: since.elapsed().as_nanos() as f64, pages }
    }
}

/// smaps of one process's mapping.
pub struct ProcSmaps {
    pub name: String,
    pub smaps: Smaps,
}

impl ProcSmaps {
    /// smaps of the mapping at `addr` of each named process, taken together
    /// (`Mm::smaps_many`: linear in the number of processes).
    pub fn of_each(procs: &[(String, &Mm)], addr: u64) -> CliResult<Vec<ProcSmaps>> {
        let at: Vec<(&Mm, u64)> = procs.iter().map(|&(_, mm)| (mm, addr)).collect();
        let all = Mm::smaps_many(&at);
        procs
            .iter()
            .zip(all)
            .map(|((name, _), smaps)| {
                let smaps = smaps.ok_or_else(|| CliError(format!("{name}: no mapping at {addr:#x} for smaps")))?;
                Ok(ProcSmaps { name: name.clone(), smaps })
            })
            .collect()
    }
}

/// The memory limit of `run` and what it swapped to.
pub struct SwapReport {
    /// `--mem-limit`, bytes.
    pub limit: u64,
    /// The swap device, in words.
    pub device: String,
}

/// Everything `run` measured.
pub struct RunReport {
    pub size: u64,
    pub npages: u64,
    pub children: u32,
    pub write_percent: f64,
    pub writes_per_child: u64,
    pub threads: u32,
    pub phases: Vec<Phase>,
    pub total_ns: f64,
    /// Machine counters at the snapshot (children written, nobody exited).
    pub stats: MachineStats,
    /// Machine counters after everything exited.
    pub end: MachineStats,
    pub procs: Vec<ProcSmaps>,
    pub child_reads: u64,
    pub child_writes: u64,
    pub child_misses: u64,
    /// Set with `--mem-limit`.
    pub swap: Option<SwapReport>,
}

pub fn run_report(r: &RunReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "softmm run: {} private anonymous ({} pages), {} children each writing {}% ({} pages) and reading the rest, on {} thread{}",
        bytes(r.size),
        count(r.npages),
        r.children,
        r.write_percent,
        count(r.writes_per_child),
        r.threads,
        if r.threads == 1 { "" } else { "s" }
    );
    let _ = writeln!(o, "\nPhases");
    for p in &r.phases {
        let per = match p.pages {
            Some(n) if n > 0 => format!("  ({}/page)", ns(p.ns / n as f64)),
            _ => String::new(),
        };
        let _ = writeln!(o, "  {:<28}{:>12}{per}", p.name, ns(p.ns));
    }
    let _ = writeln!(o, "  {:<28}{:>12}", "total", ns(r.total_ns));

    let s = &r.stats;
    let _ = writeln!(o, "\nFaults (machine counters at the snapshot: children written, nobody exited)");
    let rows: [(&str, u64); 9] = [
        ("demand-zero (fault_anon)", s.fault_anon),
        ("zero-page reads", s.fault_zero_page),
        ("COW copies", s.fault_cow_copy),
        ("COW reuses", s.fault_cow_reuse),
        ("minor (bits only)", s.fault_minor),
        ("shared", s.fault_shared),
        ("segv", s.segv),
        ("forks", s.forks),
        ("TLB shootdowns", s.tlb_flushes),
    ];
    for (name, v) in rows {
        let _ = writeln!(o, "  {name:<28}{:>12}", count(v));
    }
    let _ = writeln!(
        o,
        "  {:<28}{:>12}  ({} reads, {} writes; {} accessor TLB misses)",
        "child page accesses",
        count(r.child_reads + r.child_writes),
        count(r.child_reads),
        count(r.child_writes),
        count(r.child_misses)
    );

    let _ = writeln!(o, "\nMemory at the snapshot");
    let frames = |n: u64| format!("{:>12}  ({})", count(n), bytes(n * PAGE));
    let _ = writeln!(o, "  {:<28}{}", "frames in use", frames(s.frames_in_use));
    let _ = writeln!(o, "  {:<28}{}", "  of which page tables", frames(s.page_tables));
    let _ = writeln!(o, "  {:<28}{}", "  of which data", frames(s.frames_in_use.saturating_sub(s.page_tables)));
    let _ = writeln!(o, "  {:<28}{}", "frames touched (host cost)", frames(s.frames_touched));
    let _ = writeln!(o, "  {:<28}{}", "arena capacity", frames(s.frames_capacity));
    if let Some(sw) = &r.swap {
        swap_section(&mut o, sw, s, &r.end);
    }

    let _ = writeln!(o, "\nsmaps at the snapshot (kB)");
    // The Swap column only under a limit: without one it is always zero.
    let swap_col = r.swap.is_some();
    let row = |name: &str, v: [u64; 7]| {
        let mut l = format!(
            "  {:<10}{:>12}{:>12}{:>14}{:>14}{:>14}{:>14}",
            name,
            count(v[0]),
            count(v[1]),
            count(v[2]),
            count(v[3]),
            count(v[4]),
            count(v[5])
        );
        if swap_col {
            let _ = write!(l, "{:>12}", count(v[6]));
        }
        l
    };
    let mut head = format!(
        "  {:<10}{:>12}{:>12}{:>14}{:>14}{:>14}{:>14}",
        "process", "Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty"
    );
    if swap_col {
        let _ = write!(head, "{:>12}", "Swap");
    }
    let _ = writeln!(o, "{head}");
    let mut tot = [0u64; 7];
    for p in &r.procs {
        let m = &p.smaps;
        let v = [m.rss, m.pss, m.shared_clean, m.shared_dirty, m.private_clean, m.private_dirty, m.swap];
        for (t, x) in tot.iter_mut().zip(v) {
            *t += x;
        }
        let _ = writeln!(o, "{}", row(&p.name, v));
    }
    let _ = writeln!(o, "{}", row("sum", tot));
    let data_kb = s.frames_in_use.saturating_sub(s.page_tables) * PAGE / 1024;
    let _ = writeln!(
        o,
        "  (Rss counts shared pages once per process; Pss sums to the {} kB of data frames really used)",
        count(data_kb)
    );

    let e = &r.end;
    let _ = writeln!(
        o,
        "\nAfter exit: {} frames in use, {} page tables; invariant audit ok",
        e.frames_in_use, e.page_tables
    );
    let _ = writeln!(
        o,
        "Verification: ok (children read the parent's data on {} pages and their own on {}; the parent's {} pages are unchanged; {})",
        count(r.child_reads),
        count(r.child_writes),
        count(r.npages),
        if r.stats.swap_outs > 0 {
            "counters within what the workload and swapping allow, no swap slot left"
        } else {
            "counters match the workload"
        }
    );
    o
}

/// The swap figures of a run under `--mem-limit`: at the snapshot and at
/// the end (the parent's verification swaps pages in too).
fn swap_section(o: &mut String, sw: &SwapReport, s: &MachineStats, e: &MachineStats) {
    let _ = writeln!(o, "\nSwap (memory limit {}; swap on {})", bytes(sw.limit), sw.device);
    let _ = writeln!(o, "  {:<28}{:>12}{:>12}", "", "snapshot", "end");
    let rows: [(&str, u64, u64); 5] = [
        ("swap_outs (pages)", s.swap_outs, e.swap_outs),
        ("swap_ins (pages)", s.swap_ins, e.swap_ins),
        ("swap cache hits", s.swap_cache_hits, e.swap_cache_hits),
        ("failed swap-outs", s.swap_failures, e.swap_failures),
        ("swap_used (slots)", s.swap_used, e.swap_used),
    ];
    for (name, a, b) in rows {
        let _ = writeln!(o, "  {name:<28}{:>12}{:>12}", count(a), count(b));
    }
    let _ = writeln!(
        o,
        "  ({} swapped out, {} swapped in in all{})",
        bytes(e.swap_outs * PAGE),
        bytes(e.swap_ins * PAGE),
        if e.swap_outs == 0 { "; the workload fits in the limit" } else { "" }
    );
}

/// Whether a write to stdout found its reader gone.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Write `text` to stdout. A closed stdout (`softmm ... | head`) is an
/// error, not a panic as `print!` would make it; see [`stdout_error`].
pub fn emit(text: &str) -> CliResult<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError(stdout_error(&e, "writing to stdout")))
}

/// The message of a failed write to stdout. A reader that went away is
/// also noted, so that `main`, once the error has unwound everything (swap
/// files removed, Linux workers reaped), ends quietly as Unix tools do.
pub fn stdout_error(e: &std::io::Error, what: &str) -> String {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
    format!("{what}: {e}")
}

/// Whether stdout's reader went away during the run.
pub fn stdout_was_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}
