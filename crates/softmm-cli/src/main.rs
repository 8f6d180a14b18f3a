//! `softmm`: run a workload on the softmm memory manager, or benchmark it
//! against the Linux kernel of the machine it runs on.
//!
//! - `softmm run` forks a populated process into children that read and
//!   write it, verifies every byte it checks, and prints a report (phase
//!   times, fault counts, frames, page tables, RSS/PSS).
//! - `softmm bench fault|cow|fork|tlb|read|all [--vs-linux] [--json]` times
//!   the same work on softmm and on Linux in the same run (see
//!   `docs/BENCHMARKS.md` for the method).
//!
//! Errors (bad arguments, library errors, failed verification) end the
//! process with a message on stderr and a non-zero status; nothing that user
//! input can reach panics.

mod bench;
mod error;
mod report;
mod run;
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
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Which benchmark.
    #[arg(value_enum)]
    which: BenchKind,
    /// Also time the same work on the Linux kernel and print ratios.
    #[arg(long)]
    vs_linux: bool,
    /// End the output with one JSON object on its own line.
    #[arg(long)]
    json: bool,
    /// Memory size per benchmark (default: fault 64M, cow 64M, fork 256M,
    /// read 64M, tlb 1M). With `all`, applies to every benchmark but tlb.
    #[arg(long, value_parser = units::parse_size)]
    size: Option<u64>,
    /// Disable transparent huge pages for this process (prctl
    /// PR_SET_THP_DISABLE), so softmm's arena is backed by 4 KiB host pages
    /// like the Linux side's memory (the arena asks for huge pages otherwise).
    #[arg(long)]
    no_thp: bool,
    /// Timed repetitions per figure; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reps: u32,
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
    /// All of the above.
    All,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let no_thp = match &cli.command {
        Command::Run(a) => a.no_thp,
        Command::Bench(a) => a.no_thp,
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
        }),
        Command::Bench(a) => bench::bench(
            a.which,
            &bench::BenchOpts {
                vs_linux: a.vs_linux,
                json: a.json,
                size: a.size,
                reps: a.reps as usize,
                no_thp: a.no_thp,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("softmm: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Turn transparent huge pages off for this process (`--no-thp`).
fn disable_thp() -> error::CliResult<()> {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and only
    // changes how later faults of this process are backed.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        return Err(error::os_error("prctl(PR_SET_THP_DISABLE)"));
    }
    Ok(())
}
