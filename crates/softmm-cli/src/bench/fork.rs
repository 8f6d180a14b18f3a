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

use super::{linux, median, say, softmm_side, status, BenchOpts};
use crate::error::{CliError, CliResult};
use crate::units::{bytes, count, ns, PAGE};
use serde::Serialize;
use softmm::ForkPolicy;
use std::fmt::Write as _;
use std::path::Path;

/// Sizes of `softmm bench fork` without --size/--sizes.
pub const DEFAULT_SIZES: [u64; 3] = [64 << 20, 256 << 20, 1 << 30];
/// Size of the fork bench within `bench all` without --size.
pub const ALL_SIZE: u64 = 256 << 20;
/// The preferred detail size, where the issue states its targets.
const DETAIL_SIZE: u64 = 1 << 30;
/// (f): the child writes one page in every `EXIT_STRIDE`.
const EXIT_STRIDE: u64 = 100;
/// (d): size of the dense Linux COW reference (the cow bench's default).
const LINUX_COW_SIZE: u64 = 64 << 20;

const TARGET_FORK: f64 = 200.0;
const TARGET_FIRST_WRITE: f64 = 2.0;
const TARGET_WRITE_ALL: f64 = 1.1;
const TARGET_FORK_EXIT: f64 = 5.0;

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

/// The softmm figures of one size.
struct Soft {
    shared: softmm_side::PolicyFigures,
    copy: softmm_side::PolicyFigures,
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

/// A target check: "met", "MISSED" or why it was not checked.
struct Target {
    key: &'static str,
    what: String,
    /// The measured value and whether it meets the target.
    value: Option<(f64, bool)>,
    /// How the value is shown.
    shown: String,
}

pub fn fork(o: &BenchOpts, sizes: &[u64]) -> CliResult<(String, serde_json::Value, Option<bool>)> {
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
    let reps = o.reps;
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
    // The size whose figures are the JSON's top-level ones.
    let at = detail.unwrap_or(largest);

    let pb = status();
    // Linux first: no softmm machine may exist while this process forks.
    let mut lin: Vec<Option<linux::ForkFigures>> = Vec::new();
    let mut linux_cow: Option<Vec<f64>> = None;
    if o.vs_linux {
        for (&s, &f) in sizes.iter().zip(&fits) {
            if !f {
                lin.push(None);
                continue;
            }
            say(&pb, format!("fork: Linux, {}", bytes(s)));
            lin.push(Some(linux::fork_size(s, reps, Some(s) == detail, EXIT_STRIDE)?));
        }
        if detail.is_some() {
            say(&pb, format!("fork: Linux COW fault reference, {}", bytes(LINUX_COW_SIZE)));
            linux_cow = Some(linux::cow_warm(LINUX_COW_SIZE, reps)?);
        }
    }
    // One machine for every softmm measurement.
    let peak = largest.max(detail.map_or(0, |d| d.saturating_mul(2)));
    let mut soft: Vec<Option<Soft>> = Vec::new();
    {
        let m = softmm_side::fork_machine(peak)?;
        for (&s, &f) in sizes.iter().zip(&fits) {
            if !f {
                soft.push(None);
                continue;
            }
            let det = Some(s) == detail;
            say(&pb, format!("fork: softmm, shared tables, {}", bytes(s)));
            let shared = softmm_side::fork_policy(&m, s, ForkPolicy::SharedTables, reps, det, EXIT_STRIDE)?;
            say(&pb, format!("fork: softmm, copied tables, {}", bytes(s)));
            let copy = softmm_side::fork_policy(&m, s, ForkPolicy::CopyTables, reps, det, EXIT_STRIDE)?;
            soft.push(Some(Soft { shared, copy }));
        }
    }
    pb.finish_and_clear();

    // Per-size rows.
    let mut rows = Vec::new();
    for (i, &s) in sizes.iter().enumerate() {
        let tables = softmm_side::tables(s);
        let mut r = SizeRow { size_bytes: s, pages: s / PAGE, tables, ..SizeRow::default() };
        if !fits[i] {
            r.skipped = Some(format!(
                "needs about {} of memory, {} available (90 % usable)",
                bytes(need_fork(s)),
                bytes(avail)
            ));
            rows.push(r);
            continue;
        }
        if let Some(Some(sf)) = soft.get(i) {
            r.shared_ns = med(&sf.shared.forks);
            r.copy_ns = med(&sf.copy.forks);
            r.first_shared_ns = Some(sf.shared.first);
            r.first_copy_ns = Some(sf.copy.first);
            r.samples.shared = sf.shared.forks.clone();
            r.samples.copy = sf.copy.forks.clone();
        }
        if let Some(Some(l)) = lin.get(i) {
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
        rows.push(r);
    }
    let at_i = sizes.iter().position(|&s| s == at).unwrap_or(0);
    let at_row = rows.get(at_i);

    // Detail figures.
    let d_i = detail.and_then(|d| sizes.iter().position(|&s| s == d));
    let d_soft = d_i.and_then(|i| soft.get(i)).and_then(|s| s.as_ref());
    let d_lin = d_i.and_then(|i| lin.get(i)).and_then(|l| l.as_ref());
    let fw_shared = d_soft.and_then(|s| med(&s.shared.first_write));
    let fw_copy = d_soft.and_then(|s| med(&s.copy.first_write));
    let fw_linux_cow = linux_cow.as_deref().and_then(med);
    let fw_linux_strided = d_lin.and_then(|l| l.first_write.as_deref()).and_then(med);
    let wa_shared = d_soft.and_then(|s| med(&s.shared.write_all));
    let wa_copy = d_soft.and_then(|s| med(&s.copy.write_all));
    let fe_shared = d_soft.and_then(|s| med(&s.shared.fork_exit));
    let fe_copy = d_soft.and_then(|s| med(&s.copy.fork_exit));
    let fe_linux = d_lin.and_then(|l| l.fork_exit.as_deref()).and_then(med);
    let (fe_writes, fe_tables) = softmm_side::strided(detail.unwrap_or(0), EXIT_STRIDE);

    // Targets.
    let at_note =
        if at == DETAIL_SIZE { String::new() } else { format!(" (measured at {}; stated for 1 GiB)", bytes(at)) };
    let fork_ratio = at_row.and_then(|r| r.ratio_vs_linux);
    let fw_ratio = ratio(fw_shared, fw_linux_cow);
    let wa_ratio = ratio(wa_shared, wa_copy);
    let fe_ratio = ratio(fe_linux, fe_shared);
    let targets = [
        Target {
            key: "fork",
            what: format!("fork of {} resident >= {TARGET_FORK}x faster than Linux's fork{at_note}", bytes(at)),
            value: fork_ratio.map(|r| (r, r >= TARGET_FORK)),
            shown: opt_x(fork_ratio),
        },
        Target {
            key: "first_write",
            what: format!("(d) first write into a shared table <= {TARGET_FIRST_WRITE}x one warm Linux COW fault"),
            value: fw_ratio.map(|r| (r, r <= TARGET_FIRST_WRITE)),
            shown: format!("{} ({} vs {})", opt_x(fw_ratio), opt_ns(fw_shared), opt_ns(fw_linux_cow)),
        },
        Target {
            key: "write_all",
            what: format!("(e) fork + write every page, shared tables <= {TARGET_WRITE_ALL}x copied tables"),
            value: wa_ratio.map(|r| (r, r <= TARGET_WRITE_ALL)),
            shown: format!("{} ({} vs {})", opt_x(wa_ratio), opt_ns(wa_shared), opt_ns(wa_copy)),
        },
        Target {
            key: "fork_exit",
            what: format!("(f) fork + child writes 1 % + exit >= {TARGET_FORK_EXIT}x faster than Linux"),
            value: fe_ratio.map(|r| (r, r >= TARGET_FORK_EXIT)),
            shown: format!("{} ({} vs {})", opt_x(fe_ratio), opt_ns(fe_shared), opt_ns(fe_linux)),
        },
    ];
    let checked: Vec<&Target> = targets.iter().filter(|t| t.value.is_some()).collect();
    let missed: Vec<&str> = checked.iter().filter(|t| t.value.is_some_and(|(_, m)| !m)).map(|t| t.key).collect();
    let met = (!checked.is_empty()).then_some(missed.is_empty());

    // Text.
    let mut t = String::new();
    let _ = writeln!(t, "bench fork: fork of a process with every page of its memory written (warm, median of {reps})");
    let _ = writeln!(
        t,
        "  shared = softmm ForkPolicy::SharedTables, copy = softmm ForkPolicy::CopyTables, linux = fork() of \
         this process{}",
        if o.no_thp { "; THP disabled (4 KiB host pages)" } else { "" }
    );
    let _ = writeln!(
        t,
        "  {:>9}{:>8}{:>11}{:>11}{:>11}  {:>10}{:>10}{:>10}  {:>13}{:>11}",
        "size", "tables", "shared", "copy", "linux", "shared/tb", "copy/tb", "linux/tb", "linux/shared", "linux/copy"
    );
    for r in &rows {
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
    for r in rows.iter().filter(|r| r.skipped.is_none()) {
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
    match detail {
        None => {
            let _ = writeln!(
                t,
                "  (d)-(f) skipped: no size fits their memory need (2x the size plus slack; {} available)",
                bytes(avail)
            );
        }
        Some(d) => {
            let _ = writeln!(
                t,
                "  at {} ({} PTE tables, {} pages):",
                bytes(d),
                count(softmm_side::tables(d)),
                count(d / PAGE)
            );
            let _ = writeln!(
                t,
                "  (d) first write into each table of the child, per write: shared (unshare + COW) {}, \
                 copy (COW) {}; shared/copy {}",
                opt_ns(fw_shared),
                opt_ns(fw_copy),
                opt_x(ratio(fw_shared, fw_copy))
            );
            let _ = writeln!(
                t,
                "      Linux warm COW fault: {} per page ({}, every page, as bench cow), {} (one page per 2 MiB, \
                 as above)",
                opt_ns(fw_linux_cow),
                bytes(LINUX_COW_SIZE),
                opt_ns(fw_linux_strided)
            );
            let _ = writeln!(
                t,
                "      shared / Linux COW: {} (every page), {} (one page per 2 MiB)",
                opt_x(fw_ratio),
                opt_x(ratio(fw_shared, fw_linux_strided))
            );
            let pages = (d / PAGE) as f64;
            let _ = writeln!(
                t,
                "  (e) fork + write every page, total: shared {} ({:.0} ns/page), copy {} ({:.0} ns/page); \
                 shared/copy {}",
                opt_ns(wa_shared),
                wa_shared.unwrap_or(f64::NAN) / pages,
                opt_ns(wa_copy),
                wa_copy.unwrap_or(f64::NAN) / pages,
                opt_x(wa_ratio)
            );
            let _ = writeln!(
                t,
                "  (f) fork + child writes 1 page in {EXIT_STRIDE} ({} pages, {} tables unshared) + exit, total: \
                 shared {}, copy {}, linux {}; linux/shared {}, linux/copy {}",
                count(fe_writes),
                count(fe_tables),
                opt_ns(fe_shared),
                opt_ns(fe_copy),
                opt_ns(fe_linux),
                opt_x(fe_ratio),
                opt_x(ratio(fe_linux, fe_copy))
            );
        }
    }
    let _ = writeln!(t, "  targets:");
    for tg in &targets {
        let verdict = match tg.value {
            Some((_, true)) => "met".to_string(),
            Some((_, false)) => "MISSED".to_string(),
            None if detail.is_none() && tg.key != "fork" => "not measured (no detail size)".to_string(),
            None => "not checked (run with --vs-linux)".to_string(),
        };
        let _ = writeln!(t, "    {}: {verdict} -> {}", tg.what, tg.shown);
    }

    if let Some(p) = &o.plot {
        plot(p, &rows)?;
        let _ = writeln!(t, "  plot written to {}", p.display());
    }

    // JSON.
    let target_json: Vec<serde_json::Value> = targets
        .iter()
        .map(|tg| {
            serde_json::json!({
                "key": tg.key,
                "what": tg.what,
                "value": tg.value.map(|v| v.0),
                "met": tg.value.map(|v| v.1),
            })
        })
        .collect();
    let soft_samples = |f: fn(&softmm_side::PolicyFigures) -> &Vec<f64>| {
        d_soft.map(|s| serde_json::json!({ "shared": f(&s.shared), "copy": f(&s.copy) }))
    };
    let json = serde_json::json!({
        "bench": "fork",
        "what": "fork of a process with every page of its memory written (time of the fork call), warm",
        "unit": "ns/fork",
        "reps": reps,
        "host_thp": !o.no_thp,
        "mem_available_bytes": avail,
        "size": at,
        "size_bytes": at,
        "pages": at / PAGE,
        "tables": softmm_side::tables(at),
        "shared_ns": at_row.and_then(|r| r.shared_ns),
        "copy_ns": at_row.and_then(|r| r.copy_ns),
        "linux_ns": at_row.and_then(|r| r.linux_ns),
        "softmm_ns": at_row.and_then(|r| r.shared_ns),
        "ratio_vs_linux": fork_ratio,
        "ratio_copy_vs_linux": at_row.and_then(|r| r.ratio_copy_vs_linux),
        "sizes": rows,
        "detail_size": detail,
        "first_write": {
            "size_bytes": detail,
            "writes": detail.map(softmm_side::tables),
            "shared_ns": fw_shared,
            "copy_ns": fw_copy,
            "linux_cow_ns": fw_linux_cow,
            "linux_cow_size_bytes": LINUX_COW_SIZE,
            "linux_first_write_ns": fw_linux_strided,
            "ratio_shared_to_linux_cow": fw_ratio,
            "ratio_shared_to_linux_first_write": ratio(fw_shared, fw_linux_strided),
            "ratio_shared_to_copy": ratio(fw_shared, fw_copy),
            "target_max_ratio_to_linux_cow": TARGET_FIRST_WRITE,
            "target_met": fw_ratio.map(|r| r <= TARGET_FIRST_WRITE),
            "samples": soft_samples(|p| &p.first_write),
            "linux_samples": { "cow": linux_cow, "first_write": d_lin.and_then(|l| l.first_write.clone()) },
        },
        "write_all": {
            "size_bytes": detail,
            "pages": detail.map(|d| d / PAGE),
            "shared_ns": wa_shared,
            "copy_ns": wa_copy,
            "ratio_shared_to_copy": wa_ratio,
            "target_max_ratio": TARGET_WRITE_ALL,
            "target_met": wa_ratio.map(|r| r <= TARGET_WRITE_ALL),
            "samples": soft_samples(|p| &p.write_all),
        },
        "fork_exit": {
            "size_bytes": detail,
            "stride_pages": EXIT_STRIDE,
            "writes": detail.map(|_| fe_writes),
            "tables_unshared": detail.map(|_| fe_tables),
            "shared_ns": fe_shared,
            "copy_ns": fe_copy,
            "linux_ns": fe_linux,
            "ratio_vs_linux": fe_ratio,
            "ratio_copy_vs_linux": ratio(fe_linux, fe_copy),
            "target_min_ratio_vs_linux": TARGET_FORK_EXIT,
            "target_met": fe_ratio.map(|r| r >= TARGET_FORK_EXIT),
            "samples": soft_samples(|p| &p.fork_exit),
            "linux_samples": d_lin.and_then(|l| l.fork_exit.clone()),
        },
        "target_ratio_vs_linux": TARGET_FORK,
        "targets": target_json,
        "targets_missed": missed,
        "target_met": met,
    });
    Ok((t, json, met))
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
