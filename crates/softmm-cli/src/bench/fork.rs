//! `softmm bench fork`: fork latency against resident size, softmm with
//! shared PTE tables, softmm with copied tables (as Linux) and a real Linux
//! `fork()`, plus what sharing costs later (at one "detail" size):
//!
//! - (d) the child's first write into a shared table (unshare + COW), per
//!   table, against a COW fault under CopyTables and a warm Linux COW fault;
//! - (e) fork followed by a write to every page, total, shared vs copied;
//! - (f) fork + a child that writes 1 % of its pages (one in every 100, so
//!   every table is unshared) and exits, total, softmm vs Linux.
//!
//! All figures are warm (see `docs/BENCHMARKS.md`): the populated process
//! forks once untimed first, and every detail measurement follows one
//! discarded run. All Linux measurements come first, before any softmm
//! machine exists (fork copies this whole process); then one machine serves
//! every softmm measurement, so later sizes get recycled frames.

use super::{linux, median, say, softmm_side, status, BenchOpts, Report};
use crate::error::{CliError, CliResult};
use crate::units::{bytes, count, ns, PAGE};
use indicatif::ProgressBar;
use serde::Serialize;
use softmm::ForkPolicy;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Sizes of `softmm bench fork` without --size/--sizes.
pub const DEFAULT_SIZES: [u64; 3] = [64 << 20, 256 << 20, 1 << 30];
/// Size of the fork bench within `bench all` without --size.
pub const ALL_SIZE: u64 = 256 << 20;
/// The preferred detail size (the one docs/BENCHMARKS.md reports).
const DETAIL_SIZE: u64 = 1 << 30;
/// (f): the child writes one page in every `EXIT_STRIDE`.
const EXIT_STRIDE: u64 = 100;
/// (d): size of the dense Linux COW reference (the cow bench's default).
const LINUX_COW_SIZE: u64 = 64 << 20;

/// Memory one size's fork measurements need at most: the region plus the
/// parent's and the child's page tables, and some slack.
fn need_fork(s: u64) -> u64 {
    s.saturating_add(s / 128).saturating_add(128 << 20)
}

/// Memory of the detail measurements: the parent plus the child's copy of
/// every page in (e), page tables, the 64 MiB Linux COW reference (x3).
fn need_detail(s: u64) -> u64 {
    s.saturating_mul(2).saturating_add(s / 64).saturating_add(256 << 20)
}

#[derive(Serialize, Default)]
struct Samples {
    shared: Vec<f64>,
    copy: Vec<f64>,
    linux: Option<Vec<f64>>,
}

/// One resident size: fork latency of the three.
#[derive(Serialize, Default)]
struct SizeRow {
    size_bytes: u64,
    pages: u64,
    tables: u64,
    /// Why the size was not measured (not enough memory).
    skipped: Option<String>,
    shared_ns: Option<f64>,
    copy_ns: Option<f64>,
    linux_ns: Option<f64>,
    shared_ns_per_table: Option<f64>,
    copy_ns_per_table: Option<f64>,
    linux_ns_per_table: Option<f64>,
    /// linux_ns / shared_ns.
    ratio_vs_linux: Option<f64>,
    /// linux_ns / copy_ns.
    ratio_copy_vs_linux: Option<f64>,
    /// The first fork after populating (one sample each; it also
    /// write-protects the parent's PMD entries or PTEs).
    first_shared_ns: Option<f64>,
    first_copy_ns: Option<f64>,
    first_linux_ns: Option<f64>,
    samples: Samples,
}

/// Samples of one detail figure, per softmm fork policy.
#[derive(Serialize)]
struct PolicySamples {
    shared: Vec<f64>,
    copy: Vec<f64>,
}

#[derive(Serialize)]
struct FirstWriteLinuxSamples {
    cow: Option<Vec<f64>>,
    first_write: Option<Vec<f64>>,
}

/// (d): the child's first write into each table, per write.
#[derive(Serialize)]
struct FirstWrite {
    size_bytes: Option<u64>,
    writes: Option<u64>,
    shared_ns: Option<f64>,
    copy_ns: Option<f64>,
    linux_cow_ns: Option<f64>,
    linux_cow_size_bytes: u64,
    linux_first_write_ns: Option<f64>,
    ratio_shared_to_linux_cow: Option<f64>,
    ratio_shared_to_linux_first_write: Option<f64>,
    ratio_shared_to_copy: Option<f64>,
    samples: Option<PolicySamples>,
    linux_samples: FirstWriteLinuxSamples,
}

/// (e): fork + write every page, total.
#[derive(Serialize)]
struct WriteAll {
    size_bytes: Option<u64>,
    pages: Option<u64>,
    shared_ns: Option<f64>,
    copy_ns: Option<f64>,
    ratio_shared_to_copy: Option<f64>,
    samples: Option<PolicySamples>,
}

/// (f): fork + the child writes one page in `stride_pages` + exit, total.
#[derive(Serialize)]
struct ForkExit {
    size_bytes: Option<u64>,
    stride_pages: u64,
    writes: Option<u64>,
    tables_unshared: Option<u64>,
    shared_ns: Option<f64>,
    copy_ns: Option<f64>,
    linux_ns: Option<f64>,
    ratio_vs_linux: Option<f64>,
    ratio_copy_vs_linux: Option<f64>,
    samples: Option<PolicySamples>,
    linux_samples: Option<Vec<f64>>,
}

/// The result of `bench fork`. The top-level figures are those of `size`:
/// the detail size, or else the largest size measured.
#[derive(Serialize)]
pub struct ForkResult {
    bench: &'static str,
    what: &'static str,
    unit: &'static str,
    reps: usize,
    host_thp: bool,
    mem_available_bytes: u64,
    size: u64,
    size_bytes: u64,
    pages: u64,
    tables: u64,
    shared_ns: Option<f64>,
    copy_ns: Option<f64>,
    linux_ns: Option<f64>,
    softmm_ns: Option<f64>,
    ratio_vs_linux: Option<f64>,
    ratio_copy_vs_linux: Option<f64>,
    sizes: Vec<SizeRow>,
    detail_size: Option<u64>,
    first_write: FirstWrite,
    write_all: WriteAll,
    fork_exit: ForkExit,
    /// Where the plot was written (text only).
    #[serde(skip)]
    plot: Option<PathBuf>,
}

/// The softmm figures of one size.
struct Soft {
    shared: softmm_side::PolicyFigures,
    copy: softmm_side::PolicyFigures,
}

/// The Linux figures: per size (None: not measured), and the warm COW
/// fault reference of (d).
struct Lin {
    sizes: Vec<Option<linux::ForkFigures>>,
    cow: Option<Vec<f64>>,
}

/// What to measure: the sizes, which fit in memory, the detail size.
struct Plan {
    sizes: Vec<u64>,
    fits: Vec<bool>,
    detail: Option<u64>,
    largest: u64,
    /// The size whose figures are the JSON's top-level ones.
    at: u64,
    avail: u64,
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    num.zip(den).map(|(n, d)| n / d)
}

fn med(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| median(v))
}

fn opt_ns(v: Option<f64>) -> String {
    v.map(ns).unwrap_or_else(|| "-".into())
}

fn opt_x(v: Option<f64>) -> String {
    v.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
}

fn plan(o: &BenchOpts, sizes: &[u64]) -> CliResult<Plan> {
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        return Err(CliError("bench fork: no size given".into()));
    }
    if let Some(p) = &o.plot {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(CliError(format!("--plot {}: no directory {}", p.display(), dir.display())));
        }
    }
    let (avail, budget) = super::memory_budget();
    let fits: Vec<bool> = sizes.iter().map(|&s| need_fork(s) <= budget).collect();
    let detail = if sizes.contains(&DETAIL_SIZE) && need_detail(DETAIL_SIZE) <= budget {
        Some(DETAIL_SIZE)
    } else {
        sizes.iter().rev().copied().find(|&s| need_detail(s) <= budget)
    };
    let largest = sizes.iter().zip(&fits).filter(|(_, &f)| f).map(|(&s, _)| s).max();
    let Some(largest) = largest else {
        return Err(CliError(format!(
            "bench fork: no size fits in memory ({} available; {} needs about {}); use smaller --sizes",
            bytes(avail),
            bytes(sizes[0]),
            bytes(need_fork(sizes[0]))
        )));
    };
    Ok(Plan { at: detail.unwrap_or(largest), sizes, fits, detail, largest, avail })
}

/// The Linux side, which must run before any softmm machine exists (fork
/// copies this whole process).
fn measure_linux(p: &Plan, reps: usize, pb: &ProgressBar) -> CliResult<Lin> {
    let mut sizes = Vec::new();
    for (&s, &f) in p.sizes.iter().zip(&p.fits) {
        if !f {
            sizes.push(None);
            continue;
        }
        say(pb, format!("fork: Linux, {}", bytes(s)));
        sizes.push(Some(linux::fork_size(s, reps, Some(s) == p.detail, EXIT_STRIDE)?));
    }
    let mut cow = None;
    if p.detail.is_some() {
        say(pb, format!("fork: Linux COW fault reference, {}", bytes(LINUX_COW_SIZE)));
        cow = Some(linux::cow_warm(LINUX_COW_SIZE, reps)?);
    }
    Ok(Lin { sizes, cow })
}

/// The softmm side: one machine for every size and both policies.
fn measure_softmm(p: &Plan, reps: usize, pb: &ProgressBar) -> CliResult<Vec<Option<Soft>>> {
    let peak = p.largest.max(p.detail.map_or(0, |d| d.saturating_mul(2)));
    let m = softmm_side::fork_machine(peak)?;
    let mut soft = Vec::new();
    for (&s, &f) in p.sizes.iter().zip(&p.fits) {
        if !f {
            soft.push(None);
            continue;
        }
        let det = Some(s) == p.detail;
        say(pb, format!("fork: softmm, shared tables, {}", bytes(s)));
        let shared = softmm_side::fork_policy(&m, s, ForkPolicy::SharedTables, reps, det, EXIT_STRIDE)?;
        say(pb, format!("fork: softmm, copied tables, {}", bytes(s)));
        let copy = softmm_side::fork_policy(&m, s, ForkPolicy::CopyTables, reps, det, EXIT_STRIDE)?;
        soft.push(Some(Soft { shared, copy }));
    }
    Ok(soft)
}

/// The row of size `i` of the plan.
fn size_row(p: &Plan, i: usize, soft: Option<&Soft>, lin: Option<&linux::ForkFigures>) -> SizeRow {
    let s = p.sizes[i];
    let tables = softmm_side::tables(s);
    let mut r = SizeRow { size_bytes: s, pages: s / PAGE, tables, ..SizeRow::default() };
    if !p.fits[i] {
        r.skipped =
            Some(format!("needs about {} of memory, {} available (90 % usable)", bytes(need_fork(s)), bytes(p.avail)));
        return r;
    }
    if let Some(sf) = soft {
        r.shared_ns = med(&sf.shared.forks);
        r.copy_ns = med(&sf.copy.forks);
        r.first_shared_ns = Some(sf.shared.first);
        r.first_copy_ns = Some(sf.copy.first);
        r.samples.shared = sf.shared.forks.clone();
        r.samples.copy = sf.copy.forks.clone();
    }
    if let Some(l) = lin {
        r.linux_ns = med(&l.warm);
        r.first_linux_ns = Some(l.first);
        r.samples.linux = Some(l.warm.clone());
    }
    let t = tables as f64;
    r.shared_ns_per_table = r.shared_ns.map(|v| v / t);
    r.copy_ns_per_table = r.copy_ns.map(|v| v / t);
    r.linux_ns_per_table = r.linux_ns.map(|v| v / t);
    r.ratio_vs_linux = ratio(r.linux_ns, r.shared_ns);
    r.ratio_copy_vs_linux = ratio(r.linux_ns, r.copy_ns);
    r
}

/// The figures (d), (e), (f) at the detail size (all None without one).
fn detail_figures(
    p: &Plan,
    soft: Option<&Soft>,
    lin: Option<&linux::ForkFigures>,
    cow: Option<Vec<f64>>,
) -> (FirstWrite, WriteAll, ForkExit) {
    let detail = p.detail;
    let policy = |f: fn(&softmm_side::PolicyFigures) -> &Vec<f64>| {
        soft.map(|s| PolicySamples { shared: f(&s.shared).clone(), copy: f(&s.copy).clone() })
    };
    let both = |f: fn(&softmm_side::PolicyFigures) -> &Vec<f64>| {
        (soft.and_then(|s| med(f(&s.shared))), soft.and_then(|s| med(f(&s.copy))))
    };
    let (fw_shared, fw_copy) = both(|p| &p.first_write);
    let fw_linux_cow = cow.as_deref().and_then(med);
    let fw_linux_strided = lin.and_then(|l| l.first_write.as_deref()).and_then(med);
    let first_write = FirstWrite {
        size_bytes: detail,
        writes: detail.map(softmm_side::tables),
        shared_ns: fw_shared,
        copy_ns: fw_copy,
        linux_cow_ns: fw_linux_cow,
        linux_cow_size_bytes: LINUX_COW_SIZE,
        linux_first_write_ns: fw_linux_strided,
        ratio_shared_to_linux_cow: ratio(fw_shared, fw_linux_cow),
        ratio_shared_to_linux_first_write: ratio(fw_shared, fw_linux_strided),
        ratio_shared_to_copy: ratio(fw_shared, fw_copy),
        samples: policy(|p| &p.first_write),
        linux_samples: FirstWriteLinuxSamples { cow, first_write: lin.and_then(|l| l.first_write.clone()) },
    };
    let (wa_shared, wa_copy) = both(|p| &p.write_all);
    let write_all = WriteAll {
        size_bytes: detail,
        pages: detail.map(|d| d / PAGE),
        shared_ns: wa_shared,
        copy_ns: wa_copy,
        ratio_shared_to_copy: ratio(wa_shared, wa_copy),
        samples: policy(|p| &p.write_all),
    };
    let (fe_shared, fe_copy) = both(|p| &p.fork_exit);
    let fe_linux = lin.and_then(|l| l.fork_exit.as_deref()).and_then(med);
    let (fe_writes, fe_tables) = softmm_side::strided(detail.unwrap_or(0), EXIT_STRIDE);
    let fork_exit = ForkExit {
        size_bytes: detail,
        stride_pages: EXIT_STRIDE,
        writes: detail.map(|_| fe_writes),
        tables_unshared: detail.map(|_| fe_tables),
        shared_ns: fe_shared,
        copy_ns: fe_copy,
        linux_ns: fe_linux,
        ratio_vs_linux: ratio(fe_linux, fe_shared),
        ratio_copy_vs_linux: ratio(fe_linux, fe_copy),
        samples: policy(|p| &p.fork_exit),
        linux_samples: lin.and_then(|l| l.fork_exit.clone()),
    };
    (first_write, write_all, fork_exit)
}

pub fn fork(o: &BenchOpts, sizes: &[u64]) -> CliResult<ForkResult> {
    let p = plan(o, sizes)?;
    let reps = o.reps;
    let pb = status();
    // Linux first: no softmm machine may exist while this process forks.
    let lin = if o.vs_linux { measure_linux(&p, reps, &pb)? } else { Lin { sizes: Vec::new(), cow: None } };
    let soft = measure_softmm(&p, reps, &pb)?;
    pb.finish_and_clear();

    let rows: Vec<SizeRow> = (0..p.sizes.len())
        .map(|i| size_row(&p, i, soft.get(i).and_then(Option::as_ref), lin.sizes.get(i).and_then(Option::as_ref)))
        .collect();
    let d_i = p.detail.and_then(|d| p.sizes.iter().position(|&s| s == d));
    let d_soft = d_i.and_then(|i| soft.get(i)).and_then(Option::as_ref);
    let d_lin = d_i.and_then(|i| lin.sizes.get(i)).and_then(Option::as_ref);
    let (first_write, write_all, fork_exit) = detail_figures(&p, d_soft, d_lin, lin.cow);
    if let Some(path) = &o.plot {
        plot(path, &rows)?;
    }
    let at = p.at;
    let at_row = rows.get(p.sizes.iter().position(|&s| s == at).unwrap_or(0));
    Ok(ForkResult {
        bench: "fork",
        what: "fork of a process with every page of its memory written (time of the fork call), warm",
        unit: "ns/fork",
        reps,
        host_thp: !o.no_thp,
        mem_available_bytes: p.avail,
        size: at,
        size_bytes: at,
        pages: at / PAGE,
        tables: softmm_side::tables(at),
        shared_ns: at_row.and_then(|r| r.shared_ns),
        copy_ns: at_row.and_then(|r| r.copy_ns),
        linux_ns: at_row.and_then(|r| r.linux_ns),
        softmm_ns: at_row.and_then(|r| r.shared_ns),
        ratio_vs_linux: at_row.and_then(|r| r.ratio_vs_linux),
        ratio_copy_vs_linux: at_row.and_then(|r| r.ratio_copy_vs_linux),
        detail_size: p.detail,
        sizes: rows,
        first_write,
        write_all,
        fork_exit,
        plot: o.plot.clone(),
    })
}

impl ForkResult {
    /// The table of fork latency per size, and the first forks.
    fn text_sizes(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "  {:>9}{:>8}{:>11}{:>11}{:>11}  {:>10}{:>10}{:>10}  {:>13}{:>11}",
            "size",
            "tables",
            "shared",
            "copy",
            "linux",
            "shared/tb",
            "copy/tb",
            "linux/tb",
            "linux/shared",
            "linux/copy"
        );
        for r in &self.sizes {
            if let Some(why) = &r.skipped {
                let _ = writeln!(t, "  {:>9}{:>8}  skipped: {why}", bytes(r.size_bytes), count(r.tables));
                continue;
            }
            let _ = writeln!(
                t,
                "  {:>9}{:>8}{:>11}{:>11}{:>11}  {:>10}{:>10}{:>10}  {:>13}{:>11}",
                bytes(r.size_bytes),
                count(r.tables),
                opt_ns(r.shared_ns),
                opt_ns(r.copy_ns),
                opt_ns(r.linux_ns),
                opt_ns(r.shared_ns_per_table),
                opt_ns(r.copy_ns_per_table),
                opt_ns(r.linux_ns_per_table),
                opt_x(r.ratio_vs_linux),
                opt_x(r.ratio_copy_vs_linux)
            );
        }
        let _ = writeln!(t, "  first fork after populating (one sample; write-protects the parent):");
        for r in self.sizes.iter().filter(|r| r.skipped.is_none()) {
            let _ = writeln!(
                t,
                "  {:>9}{:>8}{:>11}{:>11}{:>11}",
                bytes(r.size_bytes),
                "",
                opt_ns(r.first_shared_ns),
                opt_ns(r.first_copy_ns),
                opt_ns(r.first_linux_ns)
            );
        }
    }

    /// (d), (e), (f) at the detail size `d`.
    fn text_detail(&self, t: &mut String, d: u64) {
        let (fw, wa, fe) = (&self.first_write, &self.write_all, &self.fork_exit);
        let _ =
            writeln!(t, "  at {} ({} PTE tables, {} pages):", bytes(d), count(softmm_side::tables(d)), count(d / PAGE));
        let _ = writeln!(
            t,
            "  (d) first write into each table of the child, per write: shared (unshare + COW) {}, \
             copy (COW) {}; shared/copy {}",
            opt_ns(fw.shared_ns),
            opt_ns(fw.copy_ns),
            opt_x(fw.ratio_shared_to_copy)
        );
        let _ = writeln!(
            t,
            "      Linux warm COW fault: {} per page ({}, every page, as bench cow), {} (one page per 2 MiB, \
             as above)",
            opt_ns(fw.linux_cow_ns),
            bytes(fw.linux_cow_size_bytes),
            opt_ns(fw.linux_first_write_ns)
        );
        let _ = writeln!(
            t,
            "      shared / Linux COW: {} (every page), {} (one page per 2 MiB)",
            opt_x(fw.ratio_shared_to_linux_cow),
            opt_x(fw.ratio_shared_to_linux_first_write)
        );
        let pages = (d / PAGE) as f64;
        let _ = writeln!(
            t,
            "  (e) fork + write every page, total: shared {} ({:.0} ns/page), copy {} ({:.0} ns/page); \
             shared/copy {}",
            opt_ns(wa.shared_ns),
            wa.shared_ns.unwrap_or(f64::NAN) / pages,
            opt_ns(wa.copy_ns),
            wa.copy_ns.unwrap_or(f64::NAN) / pages,
            opt_x(wa.ratio_shared_to_copy)
        );
        let _ = writeln!(
            t,
            "  (f) fork + child writes 1 page in {} ({} pages, {} tables unshared) + exit, total: \
             shared {}, copy {}, linux {}; linux/shared {}, linux/copy {}",
            fe.stride_pages,
            count(fe.writes.unwrap_or(0)),
            count(fe.tables_unshared.unwrap_or(0)),
            opt_ns(fe.shared_ns),
            opt_ns(fe.copy_ns),
            opt_ns(fe.linux_ns),
            opt_x(fe.ratio_vs_linux),
            opt_x(fe.ratio_copy_vs_linux)
        );
    }
}

impl Report for ForkResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "bench fork: fork of a process with every page of its memory written (warm, median of {})",
            self.reps
        );
        let _ = writeln!(
            t,
            "  shared = softmm ForkPolicy::SharedTables, copy = softmm ForkPolicy::CopyTables, linux = fork() of \
             this process{}",
            if self.host_thp { "" } else { "; THP disabled (4 KiB host pages)" }
        );
        self.text_sizes(&mut t);
        match self.detail_size {
            None => {
                let _ = writeln!(
                    t,
                    "  (d)-(f) skipped: no size fits their memory need (2x the size plus slack; {} available)",
                    bytes(self.mem_available_bytes)
                );
            }
            Some(d) => self.text_detail(&mut t, d),
        }
        if let Some(p) = &self.plot {
            let _ = writeln!(t, "  plot written to {}", p.display());
        }
        t
    }
}

/// An SVG plot of fork latency against resident size, log-log.
fn plot(path: &Path, rows: &[SizeRow]) -> CliResult<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| CliError(format!("plot {}: {e}", path.display()));
    // x: log2 of the size in bytes on a linear axis, labelled at powers of
    // two ("64 MiB", "1.00 GiB"); y: µs on a log axis.
    let points = |f: fn(&SizeRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter().filter_map(|r| f(r).map(|y| ((r.size_bytes as f64).log2(), y / 1e3))).collect()
    };
    let series = [
        ("softmm, shared tables", points(|r| r.shared_ns), RGBColor(0x1f, 0x77, 0xb4)),
        ("softmm, copied tables (as Linux)", points(|r| r.copy_ns), RGBColor(0x2c, 0xa0, 0x2c)),
        ("Linux fork()", points(|r| r.linux_ns), RGBColor(0xd6, 0x27, 0x28)),
    ];
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    if all.is_empty() {
        return Err(CliError(format!("plot {}: no figures to plot", path.display())));
    }
    let (xmin, xmax) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (ymin, ymax) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("fork latency vs resident memory (warm, median)", ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d((xmin - 0.6)..(xmax + 0.6), (ymin / 3.0..ymax * 3.0).log_scale())
            .map_err(|e| err(&e))?;
        let powers = ((xmax + 0.6).floor() - (xmin - 0.6).ceil()) as usize + 1;
        chart
            .configure_mesh()
            .x_labels(powers)
            .x_desc("resident memory, every page written (log scale)")
            .y_desc("time of one fork (µs, log scale)")
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 && (20.0..63.0).contains(x) {
                    let b = 1u64 << x.round() as u32;
                    if b >= 1 << 30 {
                        format!("{} GiB", b >> 30)
                    } else {
                        format!("{} MiB", b >> 20)
                    }
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| if *y >= 10.0 { format!("{y:.0}") } else { format!("{y:.1}") })
            .draw()
            .map_err(|e| err(&e))?;
        for (name, pts, color) in &series {
            if pts.is_empty() {
                continue;
            }
            let c = *color;
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    std::fs::write(path, svg).map_err(|e| err(&e))
}
