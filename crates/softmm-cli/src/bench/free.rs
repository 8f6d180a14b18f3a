//! `bench free`: the lazy-free cycle of an allocator that gives memory
//! back with `MADV_FREE` and reuses it soon after: advise a written region
//! free, then store to every page again. With no memory pressure no page
//! is dropped, so the cost is the advice (entries cleaned, translations
//! shot down) plus re-dirtying every page, per page of the region.
//! `--vs-linux` runs the same cycle on this process's own memory first.

use super::{ensure_memory, linux, median, say, status, BenchOpts, Report};
use crate::error::{CliResult, Context};
use crate::units::{bytes, count, ns, PAGE};
use serde::Serialize;
use softmm::{Advice, Config, Machine, MapKind, Placement, Prot};
use std::fmt::Write as _;
use std::time::Instant;

const DEFAULT_SIZE: u64 = 64 << 20;

/// The result of `bench free`.
#[derive(Serialize)]
pub struct FreeResult {
    bench: &'static str,
    what: &'static str,
    unit: &'static str,
    size_bytes: u64,
    pages: u64,
    reps: usize,
    /// Median ns per page of one cycle (advice + a store to every page).
    softmm_ns: f64,
    linux_ns: Option<f64>,
    /// Linux time / softmm time (higher: softmm faster).
    ratio_vs_linux: Option<f64>,
    softmm_samples: Vec<f64>,
    linux_samples: Option<Vec<f64>>,
}

pub fn free(o: &BenchOpts, size: Option<u64>) -> CliResult<FreeResult> {
    let size = size.unwrap_or(DEFAULT_SIZE).next_multiple_of(PAGE).max(PAGE);
    ensure_memory("free", size, size.saturating_mul(2))?;
    let pb = status();
    let linux_samples = if o.vs_linux {
        say(&pb, "free: Linux".into());
        Some(linux_cycles(size, o.reps)?)
    } else {
        None
    };
    say(&pb, "free: softmm".into());
    let softmm_samples = softmm_cycles(size, o.reps)?;
    pb.finish_and_clear();
    let softmm_ns = median(&softmm_samples);
    let linux_ns = linux_samples.as_deref().map(median);
    Ok(FreeResult {
        bench: "free",
        what: "MADV_FREE of a written region, then a store to every page",
        unit: "ns/page",
        size_bytes: size,
        pages: size / PAGE,
        reps: o.reps,
        softmm_ns,
        linux_ns,
        ratio_vs_linux: linux_ns.map(|l| l / softmm_ns),
        softmm_samples,
        linux_samples,
    })
}

/// Linux: one written region, then per repetition a timed cycle.
fn linux_cycles(size: u64, reps: usize) -> CliResult<Vec<f64>> {
    let mut r = linux::region(size, false)?;
    r.touch(1);
    let mut out = Vec::with_capacity(reps);
    for i in 0..reps {
        let t = Instant::now();
        r.lazy_free().map_err(|e| crate::error::io_error("madvise(MADV_FREE)", e))?;
        r.touch((i as u8).wrapping_add(2));
        out.push(t.elapsed().as_nanos() as f64 / r.pages() as f64);
    }
    Ok(out)
}

/// softmm: the same through an accessor, on a machine without a limit.
fn softmm_cycles(size: u64, reps: usize) -> CliResult<Vec<f64>> {
    let arena_bytes = size.saturating_mul(2).saturating_add(64 << 20);
    let m = Machine::new(Config { arena_bytes, ..Config::default() })
        .context(|| format!("creating a machine with a {} arena", bytes(arena_bytes)))?;
    let mm = m.new_mm().context(|| "creating an address space".into())?;
    let va =
        mm.mmap(0, size, Prot::RW, MapKind::Private, Placement::Hint).context(|| format!("mmap of {}", bytes(size)))?;
    let mut acc = mm.accessor();
    let touch = |acc: &mut softmm::Accessor, byte: u8| -> CliResult<()> {
        for a in (va..va + size).step_by(PAGE as usize) {
            acc.write(a, &[byte]).context(|| format!("write at {a:#x}"))?;
        }
        Ok(())
    };
    touch(&mut acc, 1)?;
    let mut out = Vec::with_capacity(reps);
    for i in 0..reps {
        let t = Instant::now();
        mm.madvise(va, size, Advice::Free).context(|| "madvise(MADV_FREE)".into())?;
        touch(&mut acc, (i as u8).wrapping_add(2))?;
        out.push(t.elapsed().as_nanos() as f64 / (size / PAGE) as f64);
    }
    Ok(out)
}

impl Report for FreeResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "bench free: {}", self.what);
        let _ = writeln!(t, "  {} ({} pages), median of {} runs", bytes(self.size_bytes), count(self.pages), self.reps);
        let _ = writeln!(t, "  softmm  {}/page", ns(self.softmm_ns));
        if let (Some(l), Some(r)) = (self.linux_ns, self.ratio_vs_linux) {
            let _ = writeln!(t, "  Linux   {}/page", ns(l));
            let _ = writeln!(t, "  ratio (Linux / softmm) {r:.2}");
        }
        t
    }
}
