//! `bench file`: read faults on a file whose pages are all in the page
//! cache. A file (64 MiB by default, on the temporary directory's
//! filesystem) is written a page per write, so every page is cached in a
//! folio of its own; then per
//! repetition a shared read-only mapping of it is made, the first byte of
//! every page is loaded twice over, and the mapping goes. Both sides fault
//! around (64 KiB: a fault maps the cached neighbours too).
//!
//! The first pass is what a program sees: faults plus its own loads. The
//! loads cost the same on both sides (the page's bytes come from the same
//! caches or memory), so the second pass, over pages already mapped, is
//! taken away: what is left is the work of mapping the cached pages by
//! read faults. It is compared per page (`ratio_vs_linux`); with one page
//! per folio both sides map 16 pages per fault (fault-around, 64 KiB), so
//! per page and per fault compare the same work. `first_pass_ratio_vs_linux`
//! compares the first pass whole. `--vs-linux` does the same with this
//! process's own mapping, and again on a second file written 1 MiB at a
//! time and read back, which ext4 caches in large folios: Linux then maps
//! a whole folio per fault (some 200 pages), softmm still 16
//! (`large_folio_ratio_vs_linux`, per page).

use super::{ensure_memory, median, say, status, BenchOpts, Report};
use crate::error::{io_error, CliError, CliResult, Context};
use crate::units::{bytes, count, ns, PAGE};
use serde::Serialize;
use softmm::{Config, Machine, MapKind, Placement, Prot};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const DEFAULT_SIZE: u64 = 64 << 20;

/// The result of `bench file`.
#[derive(Serialize)]
pub struct FileResult {
    bench: &'static str,
    what: &'static str,
    unit: &'static str,
    size_bytes: u64,
    pages: u64,
    reps: usize,
    /// Median ns of fault work per page mapped (first pass minus second,
    /// per page).
    softmm_ns: f64,
    linux_ns: Option<f64>,
    /// Linux time / softmm time per page mapped (higher: softmm faster).
    ratio_vs_linux: Option<f64>,
    /// Median ns per fault (the same work, per fault taken).
    softmm_ns_per_fault: f64,
    linux_ns_per_fault: Option<f64>,
    /// Median ns per page of the first pass (faults and loads).
    softmm_first_pass_ns_per_page: f64,
    linux_first_pass_ns_per_page: Option<f64>,
    first_pass_ratio_vs_linux: Option<f64>,
    /// Linux on a file cached in large folios: ns of fault work per page,
    /// per fault, faults per repetition, and Linux / softmm per page.
    linux_large_folio_ns: Option<f64>,
    linux_large_folio_ns_per_fault: Option<f64>,
    linux_large_folio_faults: Option<u64>,
    large_folio_ratio_vs_linux: Option<f64>,
    /// Faults per repetition (pages / 16 with fault-around).
    softmm_faults: u64,
    linux_faults: Option<u64>,
    softmm_samples: Vec<f64>,
    linux_samples: Option<Vec<f64>>,
}

/// One side's repetitions: fault work per page and per fault, ns per page
/// of the first pass, and faults per repetition (of the last one).
struct Side {
    per_page: Vec<f64>,
    per_fault: Vec<f64>,
    first_per_page: Vec<f64>,
    faults: u64,
}

impl Side {
    fn new(reps: usize) -> Side {
        let v = || Vec::with_capacity(reps);
        Side { per_page: v(), per_fault: v(), first_per_page: v(), faults: 0 }
    }

    fn push(&mut self, first_ns: f64, second_ns: f64, faults: u64, pages: u64) {
        let work = (first_ns - second_ns).max(0.0);
        self.per_page.push(work / pages as f64);
        self.per_fault.push(work / faults.max(1) as f64);
        self.first_per_page.push(first_ns / pages as f64);
        self.faults = faults;
    }
}

/// The scratch file, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Write `size` bytes to a new file in the temporary directory, `write`
/// bytes per write, so the host's page cache holds every page: a page per
/// write gives a folio per page; with larger writes the file is also read
/// back (large folios where the file system makes them).
fn scratch_file(size: u64, write: usize, name: &str) -> CliResult<Scratch> {
    let path = std::env::temp_dir().join(format!("softmm-bench-file-{}-{name}", std::process::id()));
    let s = Scratch(path);
    let what = |op: &str| format!("{op} {}", s.0.display());
    let mut f = std::fs::File::create(&s.0).map_err(|e| io_error(&what("creating"), e))?;
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i / PAGE as u32) as u8).collect();
    let mut left = size;
    let mut at = 0usize;
    while left > 0 {
        let n = left.min(write as u64) as usize;
        let from = at % chunk.len();
        f.write_all(&chunk[from..from + n]).map_err(|e| io_error(&what("writing"), e))?;
        left -= n as u64;
        at += n;
    }
    f.sync_all().map_err(|e| io_error(&what("syncing"), e))?;
    if write > PAGE as usize {
        read_through(&s.0).map_err(|e| io_error(&what("reading"), e))?;
    }
    Ok(s)
}

fn read_through(p: &Path) -> std::io::Result<()> {
    let mut f = std::fs::File::open(p)?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

pub fn file(o: &BenchOpts, size: Option<u64>) -> CliResult<FileResult> {
    let size = size.unwrap_or(DEFAULT_SIZE).next_multiple_of(PAGE).max(PAGE);
    ensure_memory("file", size, size.saturating_mul(2))?;
    let pb = status();
    say(&pb, "file: writing the file".into());
    let scratch = scratch_file(size, PAGE as usize, "pages")?;
    let (linux, large) = if o.vs_linux {
        say(&pb, "file: Linux".into());
        let l = linux_faults(&scratch.0, size, o.reps)?;
        say(&pb, "file: Linux, large folios".into());
        let big = scratch_file(size, 1 << 20, "folios")?;
        (Some(l), Some(linux_faults(&big.0, size, o.reps)?))
    } else {
        (None, None)
    };
    say(&pb, "file: softmm".into());
    let softmm = softmm_faults(&scratch.0, size, o.reps)?;
    pb.finish_and_clear();
    let softmm_ns = median(&softmm.per_page);
    let linux_ns = linux.as_ref().map(|l| median(&l.per_page));
    let softmm_first = median(&softmm.first_per_page);
    let linux_first = linux.as_ref().map(|l| median(&l.first_per_page));
    let large_ns = large.as_ref().map(|l| median(&l.per_page));
    Ok(FileResult {
        bench: "file",
        what: "read faults on a shared mapping of a cached file, a folio per page (fault-around on both sides)",
        unit: "ns/page",
        size_bytes: size,
        pages: size / PAGE,
        reps: o.reps,
        softmm_ns,
        linux_ns,
        ratio_vs_linux: linux_ns.map(|l| l / softmm_ns),
        softmm_ns_per_fault: median(&softmm.per_fault),
        linux_ns_per_fault: linux.as_ref().map(|l| median(&l.per_fault)),
        softmm_first_pass_ns_per_page: softmm_first,
        linux_first_pass_ns_per_page: linux_first,
        first_pass_ratio_vs_linux: linux_first.map(|l| l / softmm_first),
        linux_large_folio_ns: large_ns,
        linux_large_folio_ns_per_fault: large.as_ref().map(|l| median(&l.per_fault)),
        linux_large_folio_faults: large.as_ref().map(|l| l.faults),
        large_folio_ratio_vs_linux: large_ns.map(|l| l / softmm_ns),
        softmm_faults: softmm.faults,
        linux_faults: linux.as_ref().map(|l| l.faults),
        softmm_samples: softmm.per_page,
        linux_samples: linux.map(|l| l.per_page),
    })
}

fn linux_faults(path: &Path, size: u64, reps: usize) -> CliResult<Side> {
    let n = usize::try_from(size).map_err(|_| CliError(format!("size {size} does not fit the host")))?;
    let f = std::fs::File::open(path).map_err(|e| io_error(&format!("opening {}", path.display()), e))?;
    let mut side = Side::new(reps);
    for _ in 0..reps {
        let p = crate::sys::filemap::touch_mapped(&f, n).map_err(|e| io_error("mapping the file", e))?;
        side.push(p.first_ns as f64, p.second_ns as f64, p.faults, size / PAGE);
    }
    Ok(side)
}

fn softmm_faults(path: &Path, size: u64, reps: usize) -> CliResult<Side> {
    let arena_bytes = size.saturating_add(size / 256).saturating_add(64 << 20);
    let m = Machine::new(Config { arena_bytes, ..Config::default() })
        .context(|| format!("creating a machine with a {} arena", bytes(arena_bytes)))?;
    let file = m.open_file(path).context(|| format!("opening {}", path.display()))?;
    // Read it once: every page comes into softmm's page cache.
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        off += file.pread(off, &mut buf).context(|| format!("pread at {off}"))? as u64;
    }
    let mm = m.new_mm().context(|| "creating an address space".into())?;
    let mut side = Side::new(reps);
    let mut b = [0u8];
    for _ in 0..reps {
        let va = mm
            .mmap_file(0, size, Prot::READ, MapKind::Shared, Placement::Hint, &file, 0)
            .context(|| format!("mapping {} of the file", bytes(size)))?;
        let mut acc = mm.accessor();
        let mut pass = || -> CliResult<f64> {
            let t = Instant::now();
            for a in (va..va + size).step_by(PAGE as usize) {
                acc.read(a, &mut b).context(|| format!("read at {a:#x}"))?;
            }
            Ok(t.elapsed().as_nanos() as f64)
        };
        let before = m.stats().fault_shared;
        let first = pass()?;
        let faults = m.stats().fault_shared - before;
        let second = pass()?;
        side.push(first, second, faults, size / PAGE);
        drop(acc);
        mm.munmap(va, size).context(|| "munmap".into())?;
    }
    Ok(side)
}

impl Report for FileResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "bench file: {}", self.what);
        let _ = writeln!(t, "  {} ({} pages), median of {} runs", bytes(self.size_bytes), count(self.pages), self.reps);
        let _ = writeln!(t, "  fault work (first pass minus second; the loads of both cancel):");
        let _ = writeln!(
            t,
            "    softmm  {}/page, {}/fault ({} faults a run)",
            ns(self.softmm_ns),
            ns(self.softmm_ns_per_fault),
            count(self.softmm_faults)
        );
        if let (Some(l), Some(lf), Some(r), Some(f)) =
            (self.linux_ns, self.linux_ns_per_fault, self.ratio_vs_linux, self.linux_faults)
        {
            let _ = writeln!(t, "    Linux   {}/page, {}/fault ({} faults a run)", ns(l), ns(lf), count(f));
            let _ = writeln!(t, "    ratio per page (Linux / softmm) {r:.2}");
        }
        let _ = writeln!(t, "  first pass, faults and loads, per page:");
        let _ = writeln!(t, "    softmm  {}/page", ns(self.softmm_first_pass_ns_per_page));
        if let (Some(l), Some(r)) = (self.linux_first_pass_ns_per_page, self.first_pass_ratio_vs_linux) {
            let _ = writeln!(t, "    Linux   {}/page", ns(l));
            let _ = writeln!(t, "    ratio (Linux / softmm) {r:.2}");
        }
        if let (Some(l), Some(lf), Some(f), Some(r)) = (
            self.linux_large_folio_ns,
            self.linux_large_folio_ns_per_fault,
            self.linux_large_folio_faults,
            self.large_folio_ratio_vs_linux,
        ) {
            let _ = writeln!(t, "  Linux on a file cached in large folios (a fault maps a whole folio), fault work:");
            let _ = writeln!(t, "    Linux   {}/page, {}/fault ({} faults a run)", ns(l), ns(lf), count(f));
            let _ = writeln!(t, "    ratio per page (Linux / softmm) {r:.2}");
        }
        t
    }
}
