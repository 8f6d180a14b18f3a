//! `bench mremap`: move a populated private mapping (1 GiB by default)
//! with `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)` between two addresses, back
//! and forth; the time of the call, per move.
//!
//! Both addresses are 2 MiB-aligned but not 1 GiB-aligned (they are skewed
//! by 2 MiB): Linux then moves whole PMD entries (its `move_normal_pmd`,
//! one per 2 MiB) rather than single PTEs, and not one PUD entry, which a
//! realloc'd buffer rarely lines up for. softmm moves whole PTE tables the
//! same way. `--vs-linux` runs the same moves on this process's memory.

use super::{ensure_memory, median, say, status, BenchOpts, Report};
use crate::error::{io_error, CliError, CliResult, Context};
use crate::sys::remap::MoveArea;
use crate::units::{bytes, ns, PAGE};
use serde::Serialize;
use softmm::{Config, Machine, MapKind, Placement, Prot, RemapFlags};
use std::fmt::Write as _;
use std::time::Instant;

const DEFAULT_SIZE: u64 = 1 << 30;
const ALIGN: u64 = 1 << 30;
const SKEW: u64 = 2 << 20;
/// softmm's two slots (any free, 2 MiB-aligned, not 1 GiB-aligned range).
const SOFTMM_FROM: u64 = (16 << 40) + SKEW;

/// The result of `bench mremap`.
#[derive(Serialize)]
pub struct RemapResult {
    bench: &'static str,
    what: &'static str,
    unit: &'static str,
    size_bytes: u64,
    reps: usize,
    /// Median µs per move.
    softmm_us: f64,
    linux_us: Option<f64>,
    /// Linux time / softmm time (higher: softmm faster).
    ratio_vs_linux: Option<f64>,
    softmm_samples: Vec<f64>,
    linux_samples: Option<Vec<f64>>,
}

pub fn remap(o: &BenchOpts, size: Option<u64>) -> CliResult<RemapResult> {
    let size = size.unwrap_or(DEFAULT_SIZE).next_multiple_of(PAGE).max(PAGE);
    ensure_memory("mremap", size, size.saturating_mul(2))?;
    let reps = o.reps.max(1);
    let pb = status();
    let linux_samples = if o.vs_linux {
        say(&pb, "mremap: Linux".into());
        Some(linux_moves(size, reps)?)
    } else {
        None
    };
    say(&pb, "mremap: softmm".into());
    let softmm_samples = softmm_moves(size, reps)?;
    pb.finish_and_clear();
    let softmm_us = median(&softmm_samples);
    let linux_us = linux_samples.as_deref().map(median);
    Ok(RemapResult {
        bench: "mremap",
        what: "mremap(MAYMOVE|FIXED) of a populated private mapping, 2 MiB-aligned",
        unit: "us/move",
        size_bytes: size,
        reps,
        softmm_us,
        linux_us,
        ratio_vs_linux: linux_us.map(|l| l / softmm_us),
        softmm_samples,
        linux_samples,
    })
}

fn linux_moves(size: u64, reps: usize) -> CliResult<Vec<f64>> {
    let n = usize::try_from(size).map_err(|_| CliError(format!("size {size} does not fit the host")))?;
    let mut area = MoveArea::new(n, ALIGN as usize, SKEW as usize)
        .map_err(|e| io_error(&format!("mapping and writing {}", bytes(size)), e))?;
    (0..reps).map(|_| area.move_once().map(|t| t as f64 / 1e3).map_err(|e| io_error("mremap", e))).collect()
}

fn softmm_moves(size: u64, reps: usize) -> CliResult<Vec<f64>> {
    let arena_bytes = size.saturating_add(size / 256).saturating_add(64 << 20);
    let m = Machine::new(Config { arena_bytes, ..Config::default() })
        .context(|| format!("creating a machine with a {} arena", bytes(arena_bytes)))?;
    let mm = m.new_mm().context(|| "creating an address space".into())?;
    let span = (size + SKEW).next_multiple_of(ALIGN);
    let slots = [SOFTMM_FROM, SOFTMM_FROM + span];
    mm.mmap(slots[0], size, Prot::RW, MapKind::Private, Placement::Fixed)
        .context(|| format!("mmap of {}", bytes(size)))?;
    let mut acc = mm.accessor();
    for a in (slots[0]..slots[0] + size).step_by(PAGE as usize) {
        acc.write(a, &[1]).context(|| format!("write at {a:#x}"))?;
    }
    drop(acc);
    let flags = RemapFlags::MAYMOVE.union(RemapFlags::FIXED);
    let mut out = Vec::with_capacity(reps);
    for i in 0..reps {
        let (from, to) = (slots[i % 2], slots[1 - i % 2]);
        let t = Instant::now();
        mm.mremap(from, size, size, flags, to).context(|| format!("mremap {from:#x} -> {to:#x}"))?;
        out.push(t.elapsed().as_nanos() as f64 / 1e3);
    }
    Ok(out)
}

impl Report for RemapResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "bench mremap: {}", self.what);
        let _ = writeln!(t, "  {}, median of {} moves", bytes(self.size_bytes), self.reps);
        let _ = writeln!(t, "  softmm  {}/move", ns(self.softmm_us * 1e3));
        if let (Some(l), Some(r)) = (self.linux_us, self.ratio_vs_linux) {
            let _ = writeln!(t, "  Linux   {}/move", ns(l * 1e3));
            let _ = writeln!(t, "  ratio (Linux / softmm) {r:.2}");
        }
        t
    }
}
