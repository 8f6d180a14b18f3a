//! `bench snapshot`: resetting a 1 GiB process between runs of a fuzzer
//! or a record/replay host. One "run" writes one byte to N pages spread
//! evenly over the written 1 GiB (N = 1, 100 and 1 % of the pages) and maps
//! a small region, writes it and unmaps it; then the space is reset:
//!
//! - restore: `Mm::restore` to a snapshot taken once, before the runs;
//! - softmm fork+exit: a fork server, each run in a fork of the populated
//!   space (shared page tables), dropped after it;
//! - Linux fork+exit (`--vs-linux`): the same fork server on this process's
//!   own 1 GiB, `fork` to `waitpid`.
//!
//! Each figure is one whole iteration, run + reset (what a fork server
//! pays per input), the median of `--reps` (restore: ten times as many,
//! it is short). The restore call alone is reported too, per written page
//! against one 4 KiB `memcpy` into the same number of distinct pages, and
//! against Linux's reset alone: its iteration less the run, which the
//! child times itself and sends back through a pipe. With `--vs-linux` it
//! also times the run's page copies alone (`copy_floor`): every reset that
//! shares pages copy-on-write pays them in the next run, Linux's too, so
//! Linux's iteration over them is the most any such reset could reach.
//! Linux runs first, before any softmm machine exists (fork copies this
//! whole process).

use super::{ensure_memory, linux, median, say, softmm_side, status, BenchOpts, Report};
use crate::error::{check, io_error, CliError, CliResult, Context};
use crate::sys;
use crate::units::{bytes, ns, PAGE};
use serde::Serialize;
use softmm::{Accessor, Machine, MapKind, Mm, Placement, Prot};
use std::fmt::Write as _;
use std::time::Instant;

const DEFAULT_SIZE: u64 = 1 << 30;
/// Where softmm's space maps its region (2 MiB-aligned).
const BASE: u64 = 1 << 36;
/// The small region each run maps, writes and unmaps.
const SMALL: u64 = 64 << 10;

/// Pages written per run: 1, 100 and 1 % of the region's.
fn writes(pages: u64) -> [u64; 3] {
    [1, 100.min(pages), (pages / 100).max(1)]
}

/// One N: the three resets, ns per iteration (run + reset).
#[derive(Serialize)]
pub struct Row {
    pages_written: u64,
    restore_ns: f64,
    /// The restore call alone.
    restore_call_ns: f64,
    fork_ns: f64,
    linux_ns: Option<f64>,
    /// Linux's iteration less its child's run: fork, exit and wait.
    linux_reset_ns: Option<f64>,
    restore_resets_per_s: f64,
    fork_resets_per_s: f64,
    linux_resets_per_s: Option<f64>,
    /// Linux time / restore time.
    restore_ratio_vs_linux: Option<f64>,
    /// softmm fork+exit time / restore time.
    restore_ratio_vs_fork: f64,
    /// Linux's reset alone / the restore call alone.
    reset_only_ratio_vs_linux: Option<f64>,
    samples: RowSamples,
}

#[derive(Serialize)]
struct RowSamples {
    restore: Vec<f64>,
    restore_call: Vec<f64>,
    fork: Vec<f64>,
    linux: Option<Vec<f64>>,
    linux_reset: Option<Vec<f64>>,
}

/// The result of `bench snapshot`.
#[derive(Serialize)]
pub struct SnapshotResult {
    bench: &'static str,
    what: &'static str,
    unit: &'static str,
    size_bytes: u64,
    pages: u64,
    reps: usize,
    rows: Vec<Row>,
    restore_1_ratio_vs_linux: Option<f64>,
    restore_1pct_ratio_vs_linux: Option<f64>,
    restore_1pct_ratio_vs_fork: f64,
    /// After a 1 % run: Linux's reset alone (fork, exit, wait) / the
    /// restore call alone, the run left out on both sides.
    reset_only_1pct_ratio_vs_linux: Option<f64>,
    /// The restore call after a 1 % run, per page written.
    restore_ns_per_written_page: f64,
    /// One 4 KiB memcpy into each of as many distinct pages, per copy.
    memcpy_4k_ns: f64,
    /// restore_ns_per_written_page / memcpy_4k_ns.
    restore_page_vs_memcpy: f64,
    /// The 1 % run's page copies alone (`--vs-linux`), ns per run.
    run_copies_1pct_ns: Option<f64>,
    /// Linux's 1 % iteration / the run's copies alone: the ratio a reset
    /// costing nothing, in a run whose faults cost only their copies,
    /// would reach.
    copies_only_1pct_ratio_vs_linux: Option<f64>,
}

pub fn snapshot(o: &BenchOpts, size: Option<u64>) -> CliResult<SnapshotResult> {
    let size = size.unwrap_or(DEFAULT_SIZE).next_multiple_of(softmm_side::TABLE_SPAN).max(softmm_side::TABLE_SPAN);
    let pages = size / PAGE;
    // The region, the 1 % a fork child copies, page tables, the small
    // region, the memcpy buffer.
    ensure_memory("snapshot", size, size.saturating_add(size / 50).saturating_add(128 << 20))?;
    let reps = o.reps.max(1);
    let ns_list = writes(pages);
    let pb = status();
    let linux = if o.vs_linux {
        let mut r = linux::region(size, false)?;
        r.touch(1);
        let mut all = Vec::new();
        for &n in &ns_list {
            say(&pb, format!("snapshot: Linux fork+exit, {n} pages written"));
            linux_fork_exit(&mut r, n)?;
            let runs = (0..reps).map(|_| linux_fork_exit(&mut r, n)).collect::<CliResult<Vec<_>>>()?;
            let total: Vec<f64> = runs.iter().map(|&(t, _)| t as f64).collect();
            let reset: Vec<f64> = runs.iter().map(|&(t, run)| t.saturating_sub(run) as f64).collect();
            all.push((total, reset));
        }
        say(&pb, "snapshot: the 1 % run's page copies alone".into());
        Some((all, copy_floor(&r, ns_list[2], reps)))
    } else {
        None
    };
    let (linux, copies) = match linux {
        Some((all, copies)) => (Some(all), Some(median(&copies))),
        None => (None, None),
    };
    say(&pb, "snapshot: 4 KiB memcpy".into());
    let memcpy = memcpy_4k(ns_list[2], reps)?;
    let m = softmm_side::fork_machine(size.saturating_add(size / 50))?;
    let mm = populate(&m, size)?;
    let mut forks = Vec::new();
    for &n in &ns_list {
        say(&pb, format!("snapshot: softmm fork+exit, {n} pages written"));
        forks.push(fork_cycles(&mm, size, n, reps)?);
    }
    let mut restores = Vec::new();
    for &n in &ns_list {
        say(&pb, format!("snapshot: softmm restore, {n} pages written"));
        restores.push(restore_cycles(&m, &mm, size, n, reps * 10)?);
    }
    pb.finish_and_clear();
    drop(mm);

    let rows: Vec<Row> = ns_list
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let (rs, rc) = restores[i].clone();
            let lin = linux.as_ref().map(|l| l[i].0.clone());
            let lin_reset = linux.as_ref().map(|l| l[i].1.clone());
            let (r, f, l) = (median(&rs), median(&forks[i]), lin.as_deref().map(median));
            let l_reset = lin_reset.as_deref().map(median);
            let call = median(&rc);
            Row {
                pages_written: n,
                restore_ns: r,
                restore_call_ns: call,
                fork_ns: f,
                linux_ns: l,
                linux_reset_ns: l_reset,
                restore_resets_per_s: 1e9 / r,
                fork_resets_per_s: 1e9 / f,
                linux_resets_per_s: l.map(|l| 1e9 / l),
                restore_ratio_vs_linux: l.map(|l| l / r),
                restore_ratio_vs_fork: f / r,
                reset_only_ratio_vs_linux: l_reset.map(|l| l / call),
                samples: RowSamples {
                    restore: rs,
                    restore_call: rc,
                    fork: forks[i].clone(),
                    linux: lin,
                    linux_reset: lin_reset,
                },
            }
        })
        .collect();
    let per_page = rows[2].restore_call_ns / ns_list[2] as f64;
    let memcpy_4k_ns = median(&memcpy);
    Ok(SnapshotResult {
        bench: "snapshot",
        what: "reset of a written 1 GiB space after a run (N pages written, a small region mapped and unmapped)",
        unit: "ns/iteration (run + reset)",
        size_bytes: size,
        pages,
        reps,
        restore_1_ratio_vs_linux: rows[0].restore_ratio_vs_linux,
        restore_1pct_ratio_vs_linux: rows[2].restore_ratio_vs_linux,
        restore_1pct_ratio_vs_fork: rows[2].restore_ratio_vs_fork,
        reset_only_1pct_ratio_vs_linux: rows[2].reset_only_ratio_vs_linux,
        restore_ns_per_written_page: per_page,
        memcpy_4k_ns,
        restore_page_vs_memcpy: per_page / memcpy_4k_ns,
        run_copies_1pct_ns: copies,
        copies_only_1pct_ratio_vs_linux: copies.zip(rows[2].linux_ns).map(|(c, l)| l / c),
        rows,
    })
}

/// Linux, one iteration: fork; the child writes `n` pages spread over `r`,
/// maps, writes and unmaps a small region, and exits; `waitpid`. Returns
/// the iteration's ns and the child's run, which it times itself and
/// writes to a pipe as 8 bytes.
fn linux_fork_exit(r: &mut linux::Region, n: u64) -> CliResult<(u64, u64)> {
    let (rx, tx) = sys::pipe().map_err(|e| io_error("pipe", e))?;
    let t0 = sys::mono_ns();
    // SAFETY: this process is single-threaded while benchmarking (no softmm
    // machine exists yet, the spinner starts no thread); the child only
    // stores into its copy of `r`, maps and unmaps a region, writes to the
    // pipe and exits.
    let Some(pid) = (unsafe { sys::fork() }).map_err(|e| io_error("fork", e))? else {
        let t = sys::mono_ns();
        r.touch_spread(2, n);
        let ok = match linux::Region::new(SMALL as usize, false) {
            Ok(mut small) => {
                small.touch_every(2, SMALL);
                true
            }
            Err(_) => false,
        };
        let run = sys::mono_ns() - t;
        let sent = rustix::io::write(&tx, &run.to_ne_bytes()).is_ok_and(|k| k == 8);
        sys::exit_now(if ok && sent { 0 } else { 1 })
    };
    drop(tx);
    let status = sys::wait_for(pid).map_err(|e| io_error("waitpid", e))?;
    let t1 = sys::mono_ns();
    if status.exit_status() != Some(0) {
        return Err(CliError(format!("the forked child failed (wait status {:#x})", status.as_raw())));
    }
    let mut buf = [0u8; 8];
    let got = rustix::io::read(&rx, &mut buf).map_err(|e| io_error("reading the child's run time", e.into()))?;
    check(got == 8, || format!("the forked child sent {got} bytes of its run time, not 8"))?;
    Ok((t1 - t0, u64::from_ne_bytes(buf)))
}

/// One 4 KiB memcpy into each of `n` distinct pages, ns per copy, `reps`
/// times (after one untimed pass, so the pages are mapped).
fn memcpy_4k(n: u64, reps: usize) -> CliResult<Vec<f64>> {
    let len = usize::try_from(n * PAGE).map_err(|_| CliError("memcpy buffer too large".into()))?;
    let src = vec![7u8; PAGE as usize];
    let mut dst = vec![0u8; len];
    let mut out = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let t = Instant::now();
        for page in dst.chunks_exact_mut(PAGE as usize) {
            page.copy_from_slice(std::hint::black_box(&src));
        }
        std::hint::black_box(&mut dst);
        if rep > 0 {
            out.push(t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    Ok(out)
}

/// The 1 % run's copies alone: `n` 4 KiB copies from pages spread evenly
/// over `r` (as a run's COW faults copy the snapshot's or the parent's
/// frames) into `n` distinct pages reused each time (as recycled frames
/// are), ns per run, `reps` times after one untimed pass.
fn copy_floor(r: &linux::Region, n: u64, reps: usize) -> Vec<f64> {
    let pages = r.pages();
    let mut dst = vec![0u8; (n * PAGE) as usize];
    let mut out = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let t = Instant::now();
        for (i, page) in (0..n).zip(dst.chunks_exact_mut(PAGE as usize)) {
            page.copy_from_slice(std::hint::black_box(r.page(i * pages / n)));
        }
        std::hint::black_box(&mut dst);
        if rep > 0 {
            out.push(t.elapsed().as_nanos() as f64);
        }
    }
    out
}

/// A space with every page of `[BASE, BASE + size)` written.
fn populate(m: &Machine, size: u64) -> CliResult<Mm> {
    let mm = m.new_mm().context(|| "creating an address space".into())?;
    mm.mmap(BASE, size, Prot::RW, MapKind::Private, Placement::FixedNoReplace)
        .context(|| format!("mmap of {} at {BASE:#x}", bytes(size)))?;
    let mut acc = mm.accessor();
    for va in (BASE..BASE + size).step_by(PAGE as usize) {
        acc.write(va, &[1]).context(|| format!("write at {va:#x}"))?;
    }
    Ok(mm)
}

/// One run in `mm`: write `n` pages spread evenly over the region, map a
/// small region, write its first page, unmap it.
fn run(mm: &Mm, acc: &mut Accessor, size: u64, n: u64, byte: u8) -> CliResult<()> {
    let pages = size / PAGE;
    for i in 0..n {
        let va = BASE + i * pages / n * PAGE;
        acc.write(va, &[byte]).context(|| format!("write at {va:#x}"))?;
    }
    let small = mm.mmap(0, SMALL, Prot::RW, MapKind::Private, Placement::Hint).context(|| "mmap of 64 KiB".into())?;
    acc.write(small, &[byte]).context(|| format!("write at {small:#x}"))?;
    mm.munmap(small, SMALL).context(|| "munmap of 64 KiB".into())
}

/// softmm fork server: fork `parent`, run in the child, drop it; total ns,
/// `reps` times after one untimed iteration.
fn fork_cycles(parent: &Mm, size: u64, n: u64, reps: usize) -> CliResult<Vec<f64>> {
    let mut out = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let t = Instant::now();
        let child = parent.fork().context(|| "fork".into())?;
        let mut acc = child.accessor();
        run(&child, &mut acc, size, n, 2)?;
        drop(acc);
        drop(child);
        if rep > 0 {
            out.push(t.elapsed().as_nanos() as f64);
        }
    }
    Ok(out)
}

/// Restore: snapshot `mm` once, then per iteration run and restore; total
/// ns and the restore call's ns, `reps` times after one untimed iteration.
/// Checks after the runs that the space is the snapshot's again and that
/// restores left no page tables behind.
fn restore_cycles(m: &Machine, mm: &Mm, size: u64, n: u64, reps: usize) -> CliResult<(Vec<f64>, Vec<f64>)> {
    let snap = mm.snapshot().context(|| "snapshot".into())?;
    let mut acc = mm.accessor();
    let (mut total, mut call) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    let mut tables = 0;
    for rep in 0..=reps {
        let t = Instant::now();
        run(mm, &mut acc, size, n, 2)?;
        let t1 = Instant::now();
        mm.restore(&snap).context(|| "restore".into())?;
        let end = Instant::now();
        if rep == 0 {
            tables = m.stats().page_tables;
        } else {
            total.push((end - t).as_nanos() as f64);
            call.push((end - t1).as_nanos() as f64);
        }
    }
    let mut b = [0u8];
    acc.read(BASE, &mut b).context(|| "read back".into())?;
    let dirty = mm.dirty_pages(BASE, BASE + size).context(|| "dirty pages".into())?;
    let now = m.stats().page_tables;
    check(b[0] == 1 && dirty.is_empty() && now <= tables, || {
        format!(
            "snapshot bench: after restore the first page holds {} (expected 1), {} pages dirty (expected 0), \
             {now} page tables (expected at most {tables})",
            b[0],
            dirty.len()
        )
    })?;
    Ok((total, call))
}

impl Report for SnapshotResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "bench snapshot: {}", self.what);
        let _ = writeln!(
            t,
            "  {} ({} pages) written; per iteration (run + reset), median of {} (restore: {})",
            bytes(self.size_bytes),
            self.pages,
            self.reps,
            self.reps * 10
        );
        let _ = writeln!(
            t,
            "  {:>8}{:>12}{:>12}{:>14}{:>14}{:>12}{:>14}",
            "written", "restore", "(call)", "softmm fork", "Linux fork", "fork/rest", "Linux/rest"
        );
        for r in &self.rows {
            let _ = writeln!(
                t,
                "  {:>8}{:>12}{:>12}{:>14}{:>14}{:>11.1}x{:>13}",
                r.pages_written,
                ns(r.restore_ns),
                ns(r.restore_call_ns),
                ns(r.fork_ns),
                r.linux_ns.map(ns).unwrap_or_else(|| "-".into()),
                r.restore_ratio_vs_fork,
                r.restore_ratio_vs_linux.map(|x| format!("{x:.0}x")).unwrap_or_else(|| "-".into())
            );
        }
        let _ = writeln!(t, "  resets per second:");
        for r in &self.rows {
            let _ = writeln!(
                t,
                "  {:>8}{:>12.0}{:>12}{:>14.0}{:>14}",
                r.pages_written,
                r.restore_resets_per_s,
                "",
                r.fork_resets_per_s,
                r.linux_resets_per_s.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into())
            );
        }
        let _ = writeln!(
            t,
            "  restore call per written page (1 %): {}, one 4 KiB memcpy: {} ({:.2}x)",
            ns(self.restore_ns_per_written_page),
            ns(self.memcpy_4k_ns),
            self.restore_page_vs_memcpy
        );
        if let (Some(c), Some(x)) = (self.run_copies_1pct_ns, self.copies_only_1pct_ratio_vs_linux) {
            let _ = writeln!(
                t,
                "  the 1 % run's {} page copies alone: {} (every copy-on-write reset pays them in the next run; \
                 Linux / that: {x:.0}x)",
                self.rows[2].pages_written,
                ns(c)
            );
        }
        if self.rows.iter().any(|r| r.linux_reset_ns.is_some()) {
            let _ = writeln!(t, "  reset alone (the run left out): restore call, Linux fork + exit + wait");
            for r in &self.rows {
                let (Some(l), Some(x)) = (r.linux_reset_ns, r.reset_only_ratio_vs_linux) else { continue };
                let _ = writeln!(t, "  {:>8}{:>12}{:>14}{:>11.0}x", r.pages_written, ns(r.restore_call_ns), ns(l), x);
            }
        }
        t
    }
}
