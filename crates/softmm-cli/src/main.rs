//! `softmm`: run a workload on the softmm memory manager, or benchmark it
//! against the Linux kernel of the machine it runs on.
//!
//! - `softmm run` forks a populated process into children that read and
//!   write it, verifies every byte it checks, and prints a report (phase
//!   times, fault counts, frames, page tables, RSS/PSS).
//! - `softmm bench fault|cow|fork|tlb|read|futex|rmap|reclaim|notifier|all
//!   [--vs-linux] [--json]` times the same work on softmm and on Linux in
//!   the same run (see `docs/BENCHMARKS.md` for the method); rmap, reclaim
//!   and notifier have no Linux side (reclaim compares with its swap file's
//!   own bandwidth, notifier with a build without notifiers).
//!   `softmm bench exec [--vs-qemu] [--json]` runs riscv64 programs under
//!   `softmm exec` and under qemu-riscv64.
//! - `softmm run` and `softmm replay` take `--mem-limit SIZE` (and
//!   `--swap-file PATH`): beyond the limit, pages are swapped out.
//!
//! - `softmm replay [--on softmm|linux] [--futex-keys physical|linux]
//!   [--audit every|end|never] FILE` runs a trace (the format of
//!   `TRACE.md`), auditing the machine after every operation by default;
//!   `softmm diff FILE...` runs
//!   traces on softmm (with Linux's futex keys) and on Linux and compares;
//!   `softmm gen` writes random traces and `softmm fuzz` diffs many of them.
//!
//! - `softmm exec [--syscall-report] PROGRAM [ARGS...]` runs a static
//!   riscv64 Linux program on softmm (`softmm-rv`); the status is the
//!   program's.
//!
//! Errors (bad arguments, library errors, failed verification) end the
//! process with a message on stderr and a non-zero status; nothing that user
//! input can reach panics. A closed stdout (`softmm diff ... | head -1`)
//! ends the process quietly, killed by SIGPIPE as Unix tools are.

mod bench;
mod error;
mod exec_cmd;
mod memlimit;
mod report;
mod run;
mod sys;
mod trace;
mod trace_cmd;
mod units;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// A Linux-style memory manager in user space.
#[derive(Parser, Debug)]
#[command(name = "softmm", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the built-in workload: populate a process, fork children that
    /// write a few pages each and read the rest, verify, report.
    Run(RunArgs),
    /// Benchmark softmm, optionally against Linux in the same run.
    Bench(BenchArgs),
    /// Run a trace (one output line per operation); `-` reads standard input.
    /// A malformed line (or one longer than 64 KiB) stops the replay with
    /// status 2.
    Replay(ReplayArgs),
    /// Run traces on softmm and on real Linux processes and compare them line
    /// by line (frames compared by who shares them, not by number). softmm
    /// keys futexes as Linux does here.
    Diff(DiffArgs),
    /// Print a random trace.
    Gen(GenArgs),
    /// Diff many random traces against Linux (`--profile snapshot`: check each
    /// restored space against a fork taken at its snapshot, on softmm alone);
    /// print a minimized trace for each difference.
    Fuzz(FuzzArgs),
    /// Run a static riscv64 Linux program (ELF executable or static-PIE) on
    /// softmm; the status is the program's (128 + signal if a fault ended it).
    Exec(ExecArgs),
    /// Internal: a Linux-side trace worker process.
    #[command(name = "__linux-worker", hide = true)]
    LinuxWorker { socket: String, name: String },
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// The trace file, or `-` for standard input.
    file: String,
    /// Run on softmm (default) or on real Linux processes.
    #[arg(long, value_enum, default_value = "softmm")]
    on: trace_cmd::On,
    /// How softmm keys futexes: by frame (default) or as Linux does.
    /// Ignored with `--on linux`.
    #[arg(long, value_enum, default_value = "physical")]
    futex_keys: trace_cmd::FutexKeys,
    /// Fork's page-table strategy: share PTE tables (default) or copy them.
    #[arg(long, value_enum, default_value = "shared")]
    page_tables: trace_cmd::PageTables,
    /// When softmm audits the whole machine (every reference recounted):
    /// after every operation (default), once after the last one, or never.
    /// An audit's cost grows with the machine, so `end` or `never` suit
    /// traces of thousands of address spaces. The output lines are the
    /// same; a broken invariant stops the replay with status 2.
    /// Ignored with `--on linux`.
    #[arg(long, value_enum, default_value = "every")]
    audit: trace::exec_softmm::Audit,
    #[command(flatten)]
    mem: MemArgs,
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// At exit, print the system calls answered ENOSYS and their counts to
    /// stderr (also with SOFTMM_SYSCALL_REPORT=1 in the environment).
    #[arg(long)]
    syscall_report: bool,
    /// The program.
    program: std::path::PathBuf,
    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<std::ffi::OsString>,
}

/// The memory limit and swap of `run` and `replay`.
#[derive(Args, Debug, Clone)]
struct MemArgs {
    /// Most memory the machine's frames may use (K, M, G suffixes; at least
    /// 64K); beyond it, reclaim swaps cold pages out. Default: no limit.
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    mem_limit: Option<u64>,
    /// The swap file to create (it must not exist; it is unlinked as soon as
    /// it is open, so it never outlives the run, even one killed by a signal).
    /// Default: a sparse file in the temp directory, made only with --mem-limit.
    #[arg(long, value_name = "PATH", requires = "mem_limit")]
    swap_file: Option<std::path::PathBuf>,
}

impl MemArgs {
    fn limits(&self) -> memlimit::MemLimit {
        memlimit::MemLimit { mem_limit: self.mem_limit, swap_file: self.swap_file.clone() }
    }
}

#[derive(Args, Debug)]
struct DiffArgs {
    /// Trace files.
    #[arg(required = true)]
    files: Vec<String>,
    /// Fork's page-table strategy on softmm's side.
    #[arg(long, value_enum, default_value = "shared")]
    page_tables: trace_cmd::PageTables,
}

#[derive(Args, Debug)]
struct GenArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Operations in the trace.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    ops: u64,
    /// The kind of trace (a profile and a seed always give the same trace).
    #[arg(long, value_enum, default_value = "small")]
    profile: trace::gen::Profile,
}

#[derive(Args, Debug)]
struct FuzzArgs {
    /// How many traces.
    #[arg(long, default_value_t = 300)]
    traces: u64,
    /// Operations per trace.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    ops: u64,
    /// Seed of the first trace (the others follow).
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    #[arg(long, value_enum, default_value = "shared")]
    page_tables: trace_cmd::PageTables,
    /// The kind of traces.
    #[arg(long, value_enum, default_value = "small")]
    profile: trace::gen::Profile,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Size of the parent's private anonymous mapping (K, M, G suffixes; binary units).
    #[arg(long, default_value = "1G", value_parser = units::parse_size)]
    size: u64,
    /// Number of forked children.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=4096))]
    children: u32,
    /// Percentage of the pages each child writes (spread evenly); it reads the rest.
    #[arg(long, default_value = "2", value_parser = units::parse_percent)]
    write_percent: f64,
    /// Threads that run the children (default: the number of CPUs, at most one per child).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Disable transparent huge pages for this process (the arena is then
    /// backed by 4 KiB host pages).
    #[arg(long)]
    no_thp: bool,
    #[command(flatten)]
    mem: MemArgs,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Which benchmark.
    #[arg(value_enum)]
    which: BenchKind,
    /// Also time the same work on the Linux kernel and print ratios.
    #[arg(long)]
    vs_linux: bool,
    /// exec only: also run the programs under qemu-riscv64 and print ratios.
    #[arg(long)]
    vs_qemu: bool,
    /// End the output with one JSON object on its own line.
    #[arg(long)]
    json: bool,
    /// Memory size per benchmark (default: fault 64M, cow 64M, read 64M,
    /// tlb 1M, futex 16M (its COW region), rmap 64M (the forked process),
    /// reclaim 256M (written and read back under a 16M limit), notifier 1G
    /// (the mapping munmapped whole with one subscriber), snapshot 1G (the
    /// written space reset); fork: the --sizes default, 256M with `all`).
    /// With `all`, applies to every benchmark but tlb, futex, rmap,
    /// notifier, mremap and snapshot.
    #[arg(long, value_parser = units::parse_size)]
    size: Option<u64>,
    /// fork only: resident sizes to fork, comma-separated (default
    /// 64M,256M,1G). The costs after fork are measured at 1G if given, else
    /// at the largest size that fits in memory.
    #[arg(long, value_delimiter = ',', value_parser = units::parse_size, conflicts_with = "size")]
    sizes: Option<Vec<u64>>,
    /// fork only: write an SVG plot of fork latency against resident size.
    #[arg(long, value_name = "FILE")]
    plot: Option<std::path::PathBuf>,
    /// Disable transparent huge pages for this process (prctl
    /// PR_SET_THP_DISABLE), so softmm's arena is backed by 4 KiB host pages
    /// like the Linux side's memory (the arena asks for huge pages otherwise).
    #[arg(long)]
    no_thp: bool,
    /// Timed repetitions per figure; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reps: u32,
    /// rmap only: forks per thread per timed run (default 400).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    iterations: Option<u64>,
    /// reclaim only: give the machine its background reclaimer
    /// (`Config::background_reclaim`, kswapd-like), off by default.
    #[arg(long)]
    background_reclaim: bool,
}

/// The benchmarks.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchKind {
    /// Demand-zero write fault per page.
    Fault,
    /// Copy-on-write fault per page (in a forked child).
    Cow,
    /// fork of a populated address space.
    Fork,
    /// Random 8-byte loads through an accessor, all pages in its TLB.
    Tlb,
    /// Sequential 4 KiB page reads through an accessor vs memcpy.
    Read,
    /// Futexes vs futex(2): wake and EAGAIN rates, ping-pong, a contended
    /// mutex with 2/4/8 threads, the vcache's cost to a COW fault.
    Futex,
    /// fork + exit churn of a 64 MiB process on 2 threads (AIM-like), the
    /// reverse map's lock under contention; prints which lock is built in.
    Rmap,
    /// Swap-out and swap-in throughput under a memory limit, against the
    /// swap file's sequential bandwidth (`--vs-linux`: no Linux swap without
    /// root; the file is the reference).
    Reclaim,
    /// MMU notifier brackets: munmap and fault rates with no subscriber; one
    /// subscriber's pairs for a 1 GiB munmap and its cost per invalidation
    /// (`scripts/bench-notifier.sh` compares with a build without notifiers).
    Notifier,
    /// MADV_FREE of a written region, then a store to every page again
    /// (the lazily freed pages come back dirty), per page.
    Free,
    /// mremap(MAYMOVE|FIXED) of a populated 1 GiB private mapping between
    /// two 2 MiB-aligned addresses, per move.
    Mremap,
    /// Read faults on a shared mapping of a file whose pages are all
    /// cached (fault-around on both sides), per page.
    File,
    /// Reset of a written 1 GiB space after a run that writes 1, 100 or
    /// 1 % of its pages: restore to a snapshot vs a fork server (softmm
    /// fork + exit, Linux fork + exit), per iteration.
    Snapshot,
    /// riscv64 programs under `softmm exec` (`--vs-qemu`: and under
    /// qemu-riscv64): a fork server (256 MiB heap, a child per input
    /// writing 1 % of it), 1 GiB mapped, touched and unmapped in 64 KiB
    /// pieces (--size), a CoreMark-like compute loop (MIPS). Needs
    /// riscv64-linux-gnu-gcc; not part of `all`.
    Exec,
    /// All of the above but exec.
    All,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let no_thp = match &cli.command {
        Command::Run(a) => a.no_thp,
        Command::Bench(a) => a.no_thp,
        _ => false,
    };
    if no_thp {
        if let Err(e) = disable_thp() {
            eprintln!("softmm: error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Run(a) => run::run(&run::RunOpts {
            size: a.size,
            children: a.children,
            write_percent: a.write_percent,
            threads: a.threads,
            mem: a.mem.limits(),
        }),
        Command::Bench(a) => bench::bench(
            a.which,
            &bench::BenchOpts {
                vs_linux: a.vs_linux,
                vs_qemu: a.vs_qemu,
                json: a.json,
                size: a.size,
                sizes: a.sizes.unwrap_or_default(),
                plot: a.plot,
                reps: a.reps as usize,
                no_thp: a.no_thp,
                iterations: a.iterations,
                background_reclaim: a.background_reclaim,
            },
        ),
        Command::Replay(a) => {
            let opts = trace_cmd::ReplayOptions {
                on: a.on,
                page_tables: a.page_tables,
                keys: a.futex_keys,
                audit: a.audit,
                mem: a.mem.limits(),
            };
            return match trace_cmd::replay(&a.file, &opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) if report::stdout_was_closed() => end_by_sigpipe(),
                Err(trace_cmd::BadTrace(msg)) => {
                    eprintln!("softmm replay: {msg}");
                    ExitCode::from(trace_cmd::EXIT_BAD_TRACE)
                }
            };
        }
        Command::Diff(a) => return verdict(trace_cmd::diff_files(&a.files, a.page_tables)),
        Command::Gen(a) => trace_cmd::gen(a.seed, a.ops as usize, a.profile),
        Command::Fuzz(a) => {
            return verdict(trace_cmd::fuzz(a.traces, a.ops as usize, a.first_seed, a.page_tables, a.profile));
        }
        Command::LinuxWorker { socket, name } => trace_cmd::worker(&socket, &name),
        Command::Exec(a) => {
            let opts = exec_cmd::ExecOpts { program: a.program, args: a.args, syscall_report: a.syscall_report };
            return match exec_cmd::exec(&opts) {
                Ok(status) => ExitCode::from(status),
                Err(e) => {
                    eprintln!("softmm exec: {e}");
                    ExitCode::from(EXIT_EXEC_FAILED)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if report::stdout_was_closed() => end_by_sigpipe(),
        Err(e) => {
            eprintln!("softmm: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Status of `softmm exec` when the program could not be started (the
/// shell's "command not executable").
const EXIT_EXEC_FAILED: u8 = 126;

/// Exit status of a comparison: 0 all same, 1 some differ, 2 could not run.
fn verdict(r: error::CliResult<bool>) -> ExitCode {
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(_) if report::stdout_was_closed() => end_by_sigpipe(),
        Err(e) => {
            eprintln!("softmm: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// End as a Unix tool whose reader went away: killed by SIGPIPE, saying
/// nothing. (Rust ignores SIGPIPE, so the write itself only failed with
/// EPIPE and everything has been unwound and cleaned up by now.)
fn end_by_sigpipe() -> ExitCode {
    sys::die_of_sigpipe();
    // Not reached: the default action of SIGPIPE ends the process. The
    // shell's status for it, should it ever be.
    ExitCode::from(128 + libc::SIGPIPE as u8)
}

/// Turn transparent huge pages off for this process (`--no-thp`).
fn disable_thp() -> error::CliResult<()> {
    sys::disable_thp().map_err(|e| error::io_error("prctl(PR_SET_THP_DISABLE)", e))
}
