//! The trace subcommands: `replay`, `diff`, `gen`, `fuzz`, and the hidden
//! `__linux-worker` that `replay --on linux` and `diff` start.

use crate::error::{io_error, CliError, CliResult};
use crate::report::{emit, stdout_error};
use crate::trace::diff::{diff, diff_with_stats, DiffResult};
use crate::trace::exec_softmm::{Audit, SoftmmOptions, SoftmmRunner};
use crate::trace::gen::{generate_with, minimize, Profile};
use crate::trace::linux::LinuxRunner;
use crate::trace::parse::{parse_line, Line, Op, TraceLines};
use crate::trace::snapcheck;
use std::io::{BufRead, Write};

/// Where a replay runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum On {
    Softmm,
    Linux,
}

/// How futexes are keyed (TRACE.md "Modes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FutexKeys {
    /// By frame and offset: a wait does not break COW, and a wake reaches a
    /// forked child's waiter until either side breaks COW of the page.
    Physical,
    /// As Linux keys them: (mm, address) for private memory, (object,
    /// offset) for shared memory; a wait breaks COW.
    Linux,
}

impl From<FutexKeys> for softmm::FutexKeys {
    fn from(k: FutexKeys) -> softmm::FutexKeys {
        match k {
            FutexKeys::Physical => softmm::FutexKeys::Physical,
            FutexKeys::Linux => softmm::FutexKeys::Linux,
        }
    }
}

/// Fork's page-table strategy (TRACE.md "Modes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PageTables {
    /// Share PTE tables between parent and child, copy on first change.
    Shared,
    Copy,
}

/// The replay's exit status for a malformed trace or a runner failure.
pub const EXIT_BAD_TRACE: u8 = 2;

/// A failure that ends `replay` with status 2 after the lines before it ran.
pub struct BadTrace(pub String);

fn softmm_options(page_tables: PageTables, keys: FutexKeys) -> SoftmmOptions {
    let fork_policy = match page_tables {
        PageTables::Shared => softmm::ForkPolicy::SharedTables,
        PageTables::Copy => softmm::ForkPolicy::CopyTables,
    };
    // Traces are usually small: audit the machine after every operation
    // unless told otherwise (`replay --audit`).
    SoftmmOptions { fork_policy, audit: Audit::Every, futex_keys: keys.into(), ..SoftmmOptions::default() }
}

/// The options of softmm's side of a comparison with Linux: Linux's futex
/// keys, since physical keys differ from Linux by design, and the lowest
/// fixed mapping address the Linux side has on this host.
fn diff_options(page_tables: PageTables) -> SoftmmOptions {
    let mmap_min_addr = crate::trace::linux::mmap_floor();
    SoftmmOptions { mmap_min_addr, ..softmm_options(page_tables, FutexKeys::Linux) }
}

enum Runner {
    Softmm(Box<SoftmmRunner>),
    Linux(Box<LinuxRunner>),
}

impl Runner {
    fn run(&mut self, op: &Op) -> Result<String, String> {
        match self {
            Runner::Softmm(r) => r.run(op),
            Runner::Linux(r) => r.run(op),
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        match self {
            Runner::Softmm(r) => r.finish(),
            Runner::Linux(_) => Ok(()),
        }
    }
}

/// How `softmm replay` runs a trace, besides where.
pub struct ReplayOptions {
    pub on: On,
    pub page_tables: PageTables,
    pub keys: FutexKeys,
    pub audit: Audit,
    pub mem: crate::memlimit::MemLimit,
}

/// `softmm replay`: run `file` (`-` for standard input) line by line,
/// printing one output line per operation. A malformed line stops the
/// replay with a message naming it; what ran before it stays done.
/// `keys`, `audit` and `mem` apply to softmm only (Linux keys futexes its
/// own way; a memory limit with `--on linux` is refused).
pub fn replay(file: &str, o: &ReplayOptions) -> Result<(), BadTrace> {
    if o.on == On::Linux && o.mem.mem_limit.is_some() {
        // Silently replaying without the limit would pass off unlimited
        // results as limited ones.
        return Err(BadTrace("--mem-limit applies to softmm only (Linux's memory cannot be limited here)".into()));
    }
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(file).map_err(|e| BadTrace(format!("{file}: {e}")))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut runner = match o.on {
        On::Softmm => {
            let opts = SoftmmOptions { mem: o.mem.clone(), audit: o.audit, ..softmm_options(o.page_tables, o.keys) };
            Runner::Softmm(Box::new(SoftmmRunner::new(opts).map_err(BadTrace)?))
        }
        On::Linux => Runner::Linux(Box::new(LinuxRunner::new().map_err(BadTrace)?)),
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    for line in TraceLines::new(reader) {
        let (n, line) = line.map_err(|e| BadTrace(format!("{file}:{}: {}", e.line, e.message)))?;
        let op = match parse_line(&line) {
            Ok(Some(op)) => op,
            Ok(None) => continue,
            Err(e) => return Err(BadTrace(format!("{file}:{n}: {e}"))),
        };
        let result = runner.run(&op).map_err(|e| BadTrace(format!("{file}:{n}: {e}")))?;
        writeln!(out, "{result}").map_err(|e| BadTrace(stdout_error(&e, "writing output")))?;
    }
    runner.finish().map_err(|e| BadTrace(format!("{file}: {e}")))
}

fn read_trace(file: &str) -> CliResult<Vec<Line>> {
    let f = std::fs::File::open(file).map_err(|e| CliError(format!("{file}: {e}")))?;
    crate::trace::parse::read_trace(std::io::BufReader::new(f))
        .map_err(|e| CliError(format!("{file}:{}: {}", e.line, e.message)))
}

/// `softmm diff`: each trace on softmm (with Linux's futex keys) and on
/// Linux. Returns whether all were the same (or softmm-only).
pub fn diff_files(files: &[String], page_tables: PageTables) -> CliResult<bool> {
    let mut all_same = true;
    for f in files {
        let lines = read_trace(f)?;
        match diff(&lines, &diff_options(page_tables)).map_err(|e| CliError(format!("{f}: {e}")))? {
            DiffResult::Same => emit(&format!("{f}: same\n"))?,
            DiffResult::SoftmmOnly => emit(&format!("{f}: skipped (softmm-only operations)\n"))?,
            DiffResult::Differs(d) => {
                all_same = false;
                emit(&format!("{f}: differs at {d}\n"))?;
            }
        }
    }
    Ok(all_same)
}

/// `softmm gen`: print a random trace.
pub fn gen(seed: u64, ops: usize, profile: Profile) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    let p = format!("{profile:?}").to_lowercase();
    let closed = |e: std::io::Error| CliError(stdout_error(&e, "writing the trace"));
    writeln!(out, "# softmm gen --seed {seed} --ops {ops} --profile {p}").map_err(closed)?;
    for op in generate_with(seed, ops, profile) {
        writeln!(out, "{op}").map_err(closed)?;
    }
    out.flush().map_err(closed)
}

/// Refuse when the host has swap on: Linux's PAGEOUT would then swap
/// anonymous pages out, which softmm's replay (no swap device) never does.
fn no_active_swap() -> CliResult<()> {
    let swaps = std::fs::read_to_string("/proc/swaps").map_err(|e| io_error("reading /proc/swaps", e))?;
    let active: Vec<&str> = swaps.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    if active.is_empty() {
        return Ok(());
    }
    Err(CliError(format!(
        "fuzz --profile file-advice: this host has swap on ({}); Linux's MADV_PAGEOUT would swap anonymous \
         pages out and softmm's replay has no swap device: run it where `swapoff -a` holds",
        active.join(", ")
    )))
}

fn numbered(ops: &[Op]) -> Vec<Line> {
    ops.iter().enumerate().map(|(i, op)| Line { number: i + 1, op: op.clone() }).collect()
}

/// `softmm fuzz`: diff `traces` generated traces from `first_seed` on; for
/// each that differs, print the seed and a minimized trace. Returns whether
/// all were the same. Seeds do not wrap: a range past `u64::MAX` is refused.
pub fn fuzz(traces: u64, ops: usize, first_seed: u64, page_tables: PageTables, profile: Profile) -> CliResult<bool> {
    let seeds = seed_range(first_seed, traces)?;
    if profile == Profile::Snapshot {
        return fuzz_snapshots(seeds, ops, page_tables);
    }
    if profile == Profile::FileAdvice {
        no_active_swap()?;
    }
    let opts = diff_options(page_tables);
    let (mut ran, mut failures) = (0u64, 0u64);
    let (mut shares, mut copies, mut reuses) = (0, 0, 0);
    for seed in seeds {
        ran += 1;
        let trace = generate_with(seed, ops, profile);
        let (result, st) =
            diff_with_stats(&numbered(&trace), &opts).map_err(|e| CliError(format!("seed {seed}: {e}")))?;
        (shares, copies, reuses) = (shares + st.table_shares, copies + st.table_copies, reuses + st.table_reuses);
        if let DiffResult::Differs(d) = result {
            failures += 1;
            emit(&format!("seed {seed}: differs at {d}\n"))?;
            let fails = |t: &[Op]| matches!(diff(&numbered(t), &opts), Ok(DiffResult::Differs(_)));
            let small = minimize(&trace, fails);
            let p = clap::ValueEnum::to_possible_value(&profile).map_or_else(String::new, |v| v.get_name().to_string());
            let mut text = format!("minimized trace (softmm gen --seed {seed} --ops {ops} --profile {p}, shrunk):\n");
            for op in &small {
                text.push_str(&format!("    {op}\n"));
            }
            if let Ok(DiffResult::Differs(d)) = diff(&numbered(&small), &opts) {
                text.push_str(&format!("  {d}\n"));
            }
            emit(&text)?;
        }
    }
    emit(&format!(
        "softmm page tables over these traces: {shares} shared at fork, {copies} unshared by copy, {reuses} by reuse\n\
         {ran} traces, {} same, {failures} differ\n",
        ran - failures
    ))?;
    Ok(failures == 0)
}

/// `softmm fuzz --profile snapshot`: run each trace restored and as forks
/// (`snapcheck`, no Linux); for each that disagrees, print the seed and a
/// minimized trace.
fn fuzz_snapshots(seeds: impl Iterator<Item = u64>, ops: usize, page_tables: PageTables) -> CliResult<bool> {
    let opts = softmm_options(page_tables, FutexKeys::Physical);
    let (mut ran, mut failures) = (0u64, 0u64);
    for seed in seeds {
        ran += 1;
        let trace = generate_with(seed, ops, Profile::Snapshot);
        let found = snapcheck::check(&trace, &opts).map_err(|e| CliError(format!("seed {seed}: {e}")))?;
        if let Some(m) = found {
            failures += 1;
            emit(&format!("seed {seed}: differs at {m}\n"))?;
            let small = minimize(&trace, |t| matches!(snapcheck::check(t, &opts), Ok(Some(_))));
            let mut text =
                format!("minimized trace (softmm gen --seed {seed} --ops {ops} --profile snapshot, shrunk):\n");
            for op in &small {
                text.push_str(&format!("    {op}\n"));
            }
            if let Ok(Some(m)) = snapcheck::check(&small, &opts) {
                text.push_str(&format!("  {m}\n"));
            }
            emit(&text)?;
        }
    }
    emit(&format!(
        "each restored space checked against a fork taken at its snapshot\n{ran} traces, {} same, {failures} differ\n",
        ran - failures
    ))?;
    Ok(failures == 0)
}

/// The seeds of `traces` traces from `first`, if the last fits in 64 bits.
fn seed_range(first: u64, traces: u64) -> CliResult<impl Iterator<Item = u64>> {
    if traces > 0 && first.checked_add(traces - 1).is_none() {
        return Err(CliError(format!(
            "--first-seed {first} with --traces {traces} runs past the last seed ({}); at most {} traces from that seed",
            u64::MAX,
            (u64::MAX - first).saturating_add(1)
        )));
    }
    // first + i <= first + traces - 1, checked above.
    Ok((0..traces).map(move |i| first + i))
}

/// `softmm __linux-worker SOCKET NAME`.
pub fn worker(socket: &str, name: &str) -> CliResult<()> {
    crate::trace::linux_worker::main(socket, name).map_err(CliError)
}
