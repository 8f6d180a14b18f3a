//! `bench exec`: three riscv64 programs (C sources in `bench/exec/`,
//! compiled at bench time with `riscv64-linux-gnu-gcc -static -O2`) run
//! under `softmm exec` (in this process, through the softmm-rv library)
//! and, with `--vs-qemu`, under `qemu-riscv64`:
//!
//! - forkserver: a 256 MiB heap written once, then one forked child per
//!   input that writes 1 % of the heap's pages and exits, the parent
//!   waiting for each; executions per second.
//! - mmap: 1 GiB (`--size`) mapped, touched (one store per page) and
//!   unmapped in 64 KiB pieces.
//! - compute: a CoreMark-like loop of our own (linked lists, a matrix
//!   multiply, CRC-32, a state machine); softmm's MIPS from the machine's
//!   count of retired instructions.
//!
//! Each program times its own loop (`clock_gettime(CLOCK_MONOTONIC)`, the
//! start-up and the heap's first touch left out) and prints a checksum
//! that both machines must agree on. Figures are medians of `--reps` runs;
//! `*_ratio_vs_qemu` = qemu time / softmm time (higher: softmm faster).

use super::{ensure_memory, median, say, status, BenchOpts, Report};
use crate::error::{io_error, CliError, CliResult};
use crate::units::bytes;
use serde::Serialize;
use softmm_rv::io::{Input, Output};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

const CROSS: &str = "riscv64-linux-gnu-gcc";
const QEMU: &str = "qemu-riscv64";
/// Children of the fork server per run.
const INPUTS: u64 = 200;
/// The fork server's heap (fixed in its source).
const HEAP: u64 = 256 << 20;
const DEFAULT_MMAP: u64 = 1 << 30;
/// Iterations of the compute loop per run.
const COMPUTE_ITERATIONS: u64 = 500;

const SOURCES: [(&str, &str); 3] = [
    ("forkserver", include_str!("exec/forkserver.c")),
    ("mmap", include_str!("exec/mmap.c")),
    ("compute", include_str!("exec/compute.c")),
];

/// One workload's figures.
#[derive(Serialize)]
pub struct Workload {
    name: &'static str,
    what: String,
    /// The program's arguments.
    args: Vec<String>,
    /// Median ms of the program's timed loop.
    softmm_ms: f64,
    qemu_ms: Option<f64>,
    ratio_vs_qemu: Option<f64>,
    softmm_samples: Vec<f64>,
    qemu_samples: Option<Vec<f64>>,
    checksum: String,
}

/// The result of `bench exec`.
#[derive(Serialize)]
pub struct ExecResult {
    bench: &'static str,
    forkserver_ratio_vs_qemu: Option<f64>,
    mmap_ratio_vs_qemu: Option<f64>,
    compute_ratio_vs_qemu: Option<f64>,
    /// Millions of riscv64 instructions retired per second by softmm-rv on
    /// the compute program (its whole run, median).
    mips: f64,
    /// The same instructions over qemu's time of the whole run.
    qemu_mips: Option<f64>,
    /// Instructions the compute program retires (per run, under softmm).
    compute_instructions: u64,
    /// Fork server executions per second.
    forkserver_execs_per_s: f64,
    forkserver_qemu_execs_per_s: Option<f64>,
    reps: usize,
    workloads: Vec<Workload>,
}

/// What one run printed and took.
struct Run {
    checksum: String,
    /// The program's own time of its loop, ms.
    loop_ms: f64,
    /// The whole run, ms.
    wall_ms: f64,
    instret: u64,
}

pub fn exec(o: &BenchOpts, size: Option<u64>) -> CliResult<ExecResult> {
    let mmap_bytes = size.unwrap_or(DEFAULT_MMAP).next_multiple_of(1 << 20).max(1 << 20);
    ensure_memory("exec", HEAP, HEAP * 2 + (64 << 20))?;
    if !have(CROSS) {
        return Err(CliError(format!(
            "bench exec: {CROSS} is missing (scripts/rv-toolchain.sh installs it with qemu-riscv64)"
        )));
    }
    if o.vs_qemu && !have(QEMU) {
        return Err(CliError(format!("bench exec --vs-qemu: {QEMU} is missing (scripts/rv-toolchain.sh installs it)")));
    }
    let reps = o.reps.max(1);
    let pb = status();
    say(&pb, format!("exec: compiling with {CROSS}"));
    let dir = Scratch::new()?;
    let mut bins = Vec::new();
    for (name, src) in SOURCES {
        bins.push(compile(&dir.0, name, src)?);
    }
    let args: [Vec<String>; 3] =
        [vec![INPUTS.to_string()], vec![(mmap_bytes >> 20).to_string()], vec![COMPUTE_ITERATIONS.to_string()]];
    let whats = [
        format!("fork server: {} heap written once, {INPUTS} children each writing 1 % of its pages", bytes(HEAP)),
        format!("{} mapped, touched (one store per page) and unmapped in 64 KiB pieces", bytes(mmap_bytes)),
        format!("CoreMark-like loop (lists, matrix, CRC-32, state machine), {COMPUTE_ITERATIONS} iterations"),
    ];
    let mut workloads = Vec::new();
    let mut compute_runs = (Vec::new(), Vec::new(), 0);
    for (i, (name, _)) in SOURCES.iter().enumerate() {
        let mut softmm = Vec::new();
        for r in 0..reps {
            say(&pb, format!("exec: {name} under softmm ({}/{reps})", r + 1));
            softmm.push(run_softmm(&bins[i], &args[i])?);
        }
        let qemu = if o.vs_qemu {
            let mut v = Vec::new();
            for r in 0..reps {
                say(&pb, format!("exec: {name} under qemu ({}/{reps})", r + 1));
                v.push(run_qemu(&bins[i], &args[i])?);
            }
            Some(v)
        } else {
            None
        };
        let checksum = softmm[0].checksum.clone();
        for run in softmm.iter().chain(qemu.iter().flatten()) {
            if run.checksum != checksum {
                return Err(CliError(format!(
                    "bench exec: {name} printed checksum {} in one run and {checksum} in another",
                    run.checksum
                )));
            }
        }
        if *name == "compute" {
            compute_runs = (
                softmm.iter().map(|r| r.wall_ms).collect(),
                qemu.iter().flatten().map(|r| r.wall_ms).collect(),
                softmm[0].instret,
            );
        }
        let softmm_samples: Vec<f64> = softmm.iter().map(|r| r.loop_ms).collect();
        let qemu_samples: Option<Vec<f64>> = qemu.map(|q| q.iter().map(|r| r.loop_ms).collect());
        let softmm_ms = median(&softmm_samples);
        let qemu_ms = qemu_samples.as_deref().map(median);
        workloads.push(Workload {
            name,
            what: whats[i].clone(),
            args: args[i].clone(),
            softmm_ms,
            qemu_ms,
            ratio_vs_qemu: qemu_ms.map(|q| q / softmm_ms),
            softmm_samples,
            qemu_samples,
            checksum,
        });
    }
    pb.finish_and_clear();
    let (softmm_wall, qemu_wall, instret) = compute_runs;
    let mips = instret as f64 / (median(&softmm_wall) * 1e3);
    let qemu_mips = (!qemu_wall.is_empty()).then(|| instret as f64 / (median(&qemu_wall) * 1e3));
    let per_s = |ms: f64| INPUTS as f64 / (ms / 1e3);
    Ok(ExecResult {
        bench: "exec",
        forkserver_ratio_vs_qemu: workloads[0].ratio_vs_qemu,
        mmap_ratio_vs_qemu: workloads[1].ratio_vs_qemu,
        compute_ratio_vs_qemu: workloads[2].ratio_vs_qemu,
        mips,
        qemu_mips,
        compute_instructions: instret,
        forkserver_execs_per_s: per_s(workloads[0].softmm_ms),
        forkserver_qemu_execs_per_s: workloads[0].qemu_ms.map(per_s),
        reps,
        workloads,
    })
}

fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A scratch directory for the sources and binaries, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> CliResult<Scratch> {
        let dir = std::env::temp_dir().join(format!("softmm-bench-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&format!("creating {}", dir.display()), e))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn compile(dir: &Path, name: &str, src: &str) -> CliResult<PathBuf> {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).map_err(|e| io_error(&format!("writing {}", c.display()), e))?;
    let out = dir.join(name);
    let o = Command::new(CROSS)
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&c)
        .output()
        .map_err(|e| io_error(&format!("running {CROSS}"), e))?;
    if !o.status.success() {
        return Err(CliError(format!("{CROSS} failed on {name}.c:\n{}", String::from_utf8_lossy(&o.stderr))));
    }
    Ok(out)
}

/// The checksum and loop time a program printed.
fn parse(name: &str, stdout: &[u8]) -> CliResult<(String, f64)> {
    let text = String::from_utf8_lossy(stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(str::trim).map(str::to_string))
            .ok_or_else(|| CliError(format!("bench exec: {name} printed no \"{}\" line: {text:?}", key.trim())))
    };
    let checksum = field("checksum ")?;
    let ns: f64 = field("elapsed_ns ")?
        .parse()
        .map_err(|e| CliError(format!("bench exec: {name}'s elapsed_ns is not a number: {e}")))?;
    Ok((checksum, ns / 1e6))
}

fn run_softmm(bin: &Path, args: &[String]) -> CliResult<Run> {
    let name = bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut opts = softmm_rv::ExecOptions::new(bin);
    opts.argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
    let (out, out_buf) = Output::capture();
    let (err, err_buf) = Output::capture();
    opts.stdout = out;
    opts.stderr = err;
    opts.stdin = Input::Bytes(Arc::new(Vec::new()), 0);
    opts.arena_bytes = 4 << 30;
    let t = Instant::now();
    let exit = softmm_rv::exec(bin, opts).map_err(|e| CliError(format!("softmm exec {name}: {e}")))?;
    let wall_ms = t.elapsed().as_secs_f64() * 1e3;
    let stdout = out_buf.lock().map(|b| b.clone()).unwrap_or_default();
    if exit.status != 0 {
        let stderr = err_buf.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        return Err(CliError(format!("bench exec: {name} under softmm ended with status {}: {stderr}", exit.status)));
    }
    let (checksum, loop_ms) = parse(&name, &stdout)?;
    Ok(Run { checksum, loop_ms, wall_ms, instret: exit.instret })
}

fn run_qemu(bin: &Path, args: &[String]) -> CliResult<Run> {
    let name = bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let t = Instant::now();
    let o = Command::new(QEMU).arg(bin).args(args).output().map_err(|e| io_error(&format!("running {QEMU}"), e))?;
    let wall_ms = t.elapsed().as_secs_f64() * 1e3;
    if !o.status.success() {
        return Err(CliError(format!(
            "bench exec: {name} under {QEMU} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    let (checksum, loop_ms) = parse(&name, &o.stdout)?;
    Ok(Run { checksum, loop_ms, wall_ms, instret: 0 })
}

impl Report for ExecResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "bench exec: riscv64 programs under softmm exec vs {QEMU}, median of {} runs", self.reps);
        for w in &self.workloads {
            let _ = writeln!(t, "  {}: {}", w.name, w.what);
            let _ = writeln!(t, "    softmm  {:>10.1} ms", w.softmm_ms);
            if let (Some(q), Some(r)) = (w.qemu_ms, w.ratio_vs_qemu) {
                let _ = writeln!(t, "    qemu    {q:>10.1} ms");
                let _ = writeln!(t, "    ratio (qemu / softmm) {r:.2}");
            }
        }
        let _ = write!(t, "  fork server: softmm {:.0} execs/s", self.forkserver_execs_per_s);
        if let Some(q) = self.forkserver_qemu_execs_per_s {
            let _ = write!(t, ", qemu {q:.0} execs/s");
        }
        let _ = writeln!(t);
        let _ = write!(t, "  compute: {} instructions, softmm {:.0} MIPS", self.compute_instructions, self.mips);
        if let Some(q) = self.qemu_mips {
            let _ = write!(t, ", qemu {q:.0} MIPS");
        }
        let _ = writeln!(t);
        t
    }
}
