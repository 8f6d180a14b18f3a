//! `softmm bench reclaim`: swap-out and swap-in throughput under a memory
//! limit, against the sequential bandwidth of the swap file itself.
//!
//! Each run first measures a fresh swap file in the temp directory with
//! `sequential_bandwidth`: the best the file does, the same total size
//! written then read back in order in 1 MiB `pwrite`s and `pread`s, no
//! fsync (softmm's swap-out does not fsync either, so both sides go to the
//! page cache, each on a fresh file), over as many pages as the run swaps;
//! then it removes the file. Then a machine whose frames are limited to a
//! small amount (16 MiB, or a quarter of `--size` when that is smaller) and
//! whose swap is another fresh file of the same kind writes `--size` of
//! private memory page by page: nearly all of it is swapped out on the way.
//! Swap-out throughput is pages swapped out x 4 KiB / time of that loop, so
//! it includes the demand-zero faults and the page writes themselves, not
//! only reclaim. Then every page is read back in order (swap-in throughput:
//! pages swapped in x 4 KiB / time of the reads); each page carries its
//! index at both ends and is compared whole against what was written,
//! between timed batches as `sequential_bandwidth` verifies its reads.
//! The faulting thread reclaims for itself (direct reclaim); with
//! `--background-reclaim` the machine also has its kswapd-like background
//! reclaimer (`Config::background_reclaim`), and the report says how many
//! frames it freed while reading and how often the faulting thread had to
//! reclaim for itself all the same.
//!
//! The ratios to the file's bandwidth are the figures of merit. There is no Linux swap this tool can drive
//! without root, so `--vs-linux` takes the file's bandwidth, measured in the
//! same run, as the reference and says so.

use super::{median, say, status, BenchOpts, Report};
use crate::error::{check, CliError, CliResult, Context};
use crate::units::{bytes, count, free_space, PAGE};
use serde::Serialize;
use softmm::reclaim::device::{sequential_bandwidth, FileSwap, SwapDevice};
use softmm::{Config, Machine, MapKind, Placement, Prot, SwapConfig};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes swapped out and in without --size.
pub const DEFAULT_SIZE: u64 = 256 << 20;
/// The machine's memory limit, at most.
const MAX_LIMIT: u64 = 16 << 20;
/// The smallest limit the bench uses (a quarter of the smallest --size).
const MIN_LIMIT: u64 = 1 << 20;
/// Pages read per timed batch in the swap-in phase.
const BATCH: usize = 64;
/// Slots beyond the data, so page tables and the rounding of the last
/// batch can never fill the device.
const SWAP_SLACK: u64 = 16 << 20;

/// The contents of page `i`: a fixed non-zero body, the index at both ends.
fn fill(i: u64, page: &mut [u8]) {
    for (j, b) in page.iter_mut().enumerate() {
        *b = (j % 251) as u8 + 1;
    }
    stamp(i, page);
}

fn stamp(i: u64, page: &mut [u8]) {
    let n = page.len();
    let tag = i.to_le_bytes();
    if n >= 16 {
        page[..8].copy_from_slice(&tag);
        page[n - 8..].copy_from_slice(&tag);
    }
}

/// One run's figures, bytes per second.
struct Run {
    dev_write: f64,
    dev_read: f64,
    swap_out: f64,
    swap_in: f64,
    /// Pages swapped out while writing, swapped in while reading.
    outs: u64,
    ins: u64,
    /// Swap-outs during the read phase, to make room: the resident tail
    /// (written out) and pages read back (clean, dropped).
    outs_reading: u64,
    cache_hits: u64,
    /// While reading: rounds of reclaim the faulting thread ran itself, and
    /// frames the background reclaimer freed.
    direct_reclaims: u64,
    background_reclaimed: u64,
    /// While reading: pages a look-around aged (a reverse-map walk saved each).
    look_around_aged: u64,
    device: String,
}

/// `one_run` on a thread of its own pinned to `cpu` (when known): the
/// faulting thread and the reference's reads then stay on one CPU. Unpinned
/// on the 2-vCPU VM these figures come from, about one run in three landed
/// in a slow state (swap-in ~1.5 GB/s instead of ~2.4, the file's reads
/// unchanged), which pinning removed; the machine's own threads (the
/// zeroer, a background reclaimer) still run where the kernel puts them.
fn pinned_run(cpu: Option<usize>, size: u64, limit: u64, background: bool) -> CliResult<Run> {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(c) = cpu {
                super::cpu::pin(c)?;
            }
            one_run(size, limit, background)
        })
        .join()
        .unwrap_or_else(|_| Err(CliError("bench reclaim: a run panicked".into())))
    })
}

fn one_run(size: u64, limit: u64, background: bool) -> CliResult<Run> {
    let pages = size / PAGE;
    let swap_bytes = size + SWAP_SLACK;

    // The reference: a fresh file of the same kind, removed before the
    // machine's is made so the two never compete for the page cache.
    let (dev_write, dev_read) = {
        let dev = FileSwap::create(None, swap_bytes).context(|| "creating the reference swap file".into())?;
        sequential_bandwidth(&dev, pages).context(|| format!("measuring the bandwidth of {}", dev.describe()))?
    };

    let dev: Arc<dyn SwapDevice> =
        Arc::new(FileSwap::create(None, swap_bytes).context(|| "creating the machine's swap file".into())?);
    let device = dev.describe();
    let arena_bytes = limit.saturating_mul(4).saturating_add(64 << 20);
    let m = Machine::new(Config {
        arena_bytes,
        mem_limit: Some(limit),
        swap: SwapConfig::Device(dev.clone()),
        background_reclaim: background,
        ..Config::default()
    })
    .context(|| format!("creating a machine with a {} limit swapping to {device}", bytes(limit)))?;
    let mm = m.new_mm().context(|| "creating an address space".into())?;
    let base =
        mm.mmap(0, size, Prot::RW, MapKind::Private, Placement::Hint).context(|| format!("mmap of {}", bytes(size)))?;
    let mut acc = mm.accessor();

    // Swap-out: write every page; all but the last `limit` worth leave.
    let mut page = vec![0u8; PAGE as usize];
    fill(0, &mut page);
    m.wait_for_prezeroing(Duration::from_secs(30));
    let b = m.stats();
    let t = Instant::now();
    for i in 0..pages {
        stamp(i, &mut page);
        let va = base + i * PAGE;
        acc.write(va, &page).context(|| format!("write of page {i} (swap-out phase)"))?;
    }
    let out_secs = t.elapsed().as_secs_f64();
    let a = m.stats();
    let outs = a.swap_outs - b.swap_outs;
    check(a.swap_failures == b.swap_failures, || {
        format!("bench reclaim: {} swap-outs failed while writing", a.swap_failures - b.swap_failures)
    })?;
    check(outs > 0, || {
        format!("bench reclaim: nothing was swapped out writing {} under a {} limit", bytes(size), bytes(limit))
    })?;

    // Swap-in: read every page back in order, verifying each.
    let mut batch = vec![0u8; PAGE as usize * BATCH];
    let mut expected = vec![0u8; PAGE as usize];
    fill(0, &mut expected);
    let b = m.stats();
    let mut in_time = Duration::ZERO;
    let mut first = 0;
    while first < pages {
        let n = (pages - first).min(BATCH as u64);
        let t = Instant::now();
        for (k, buf) in batch.chunks_exact_mut(PAGE as usize).take(n as usize).enumerate() {
            let i = first + k as u64;
            acc.read(base + i * PAGE, buf).context(|| format!("read of page {i} (swap-in phase)"))?;
        }
        in_time += t.elapsed();
        for (k, buf) in batch.chunks_exact(PAGE as usize).take(n as usize).enumerate() {
            let i = first + k as u64;
            stamp(i, &mut expected);
            if buf != expected.as_slice() {
                let at = buf.iter().zip(&expected).position(|(x, y)| x != y).unwrap_or(0);
                return Err(CliError(format!(
                    "verification failed: bench reclaim: page {i} read back {:#04x} at byte {at}, wrote {:#04x} \
                     (swap on {device})",
                    buf.get(at).copied().unwrap_or(0),
                    expected.get(at).copied().unwrap_or(0)
                )));
            }
        }
        first += n;
    }
    let a = m.stats();
    let ins = a.swap_ins - b.swap_ins;
    check(ins > 0, || "bench reclaim: reading every page back swapped nothing in".into())?;
    check(a.swap_failures == b.swap_failures, || {
        format!("bench reclaim: {} swap-outs failed while reading", a.swap_failures - b.swap_failures)
    })?;
    check(a.frames_in_use <= limit / PAGE, || {
        format!("bench reclaim: {} frames in use, over the limit of {}", a.frames_in_use, limit / PAGE)
    })?;
    drop(acc);
    drop(mm);
    m.check_invariants().context(|| "bench reclaim: invariant audit after exit".into())?;
    let end = m.stats();
    check(end.swap_used == 0 && end.frames_in_use == 0, || {
        format!("bench reclaim: {} swap slots and {} frames in use after exit", end.swap_used, end.frames_in_use)
    })?;

    let per_s = |pages: u64, secs: f64| (pages * PAGE) as f64 / secs.max(1e-9);
    Ok(Run {
        dev_write,
        dev_read,
        swap_out: per_s(outs, out_secs),
        swap_in: per_s(ins, in_time.as_secs_f64()),
        outs,
        ins,
        outs_reading: a.swap_outs - b.swap_outs,
        cache_hits: a.swap_cache_hits - b.swap_cache_hits,
        direct_reclaims: a.direct_reclaims - b.direct_reclaims,
        background_reclaimed: a.background_reclaimed - b.background_reclaimed,
        look_around_aged: a.look_around_aged - b.look_around_aged,
        device,
    })
}

/// "512 MB/s" (decimal, as bandwidths usually are).
fn rate(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2} GB/s", bps / 1e9)
    } else {
        format!("{:.0} MB/s", bps / 1e6)
    }
}

pub fn reclaim(o: &BenchOpts, size: Option<u64>) -> CliResult<ReclaimResult> {
    let size = size.unwrap_or(DEFAULT_SIZE);
    let limit = (size / 4).min(MAX_LIMIT) / PAGE * PAGE;
    if limit < MIN_LIMIT {
        return Err(CliError(format!(
            "bench reclaim: --size {} is too small to swap (at least {} is needed: the limit is a quarter of it)",
            bytes(size),
            bytes(MIN_LIMIT * 4)
        )));
    }
    // Only the limit's frames are the bench's own memory; the swap file
    // lives in the page cache while there is room (without room both the
    // bench and its reference measure the disk instead, still comparably).
    super::ensure_memory("reclaim", size, limit.saturating_add(64 << 20))?;
    let dir = std::env::temp_dir();
    if let Some(free) = free_space(&dir) {
        let want = size + SWAP_SLACK;
        if want > free {
            return Err(CliError(format!(
                "bench reclaim: the swap file needs {} in {} but only {} is free; use a smaller --size or set TMPDIR",
                bytes(want),
                dir.display(),
                bytes(free)
            )));
        }
    }

    let pb = status();
    let mut runs = Vec::with_capacity(o.reps);
    let cpu = super::cpu::allowed_cpus().first().copied();
    for r in 0..o.reps {
        say(&pb, format!("reclaim: {} under a {} limit, run {}/{}", bytes(size), bytes(limit), r + 1, o.reps));
        runs.push(pinned_run(cpu, size, limit, o.background_reclaim)?);
    }
    pb.finish_and_clear();

    let med = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let (dw, dr, so, si) = (med(|r| r.dev_write), med(|r| r.dev_read), med(|r| r.swap_out), med(|r| r.swap_in));
    let last = runs.last();
    let samples = ReclaimSamples {
        swap_out: runs.iter().map(|r| r.swap_out).collect(),
        swap_in: runs.iter().map(|r| r.swap_in).collect(),
        dev_write: runs.iter().map(|r| r.dev_write).collect(),
        dev_read: runs.iter().map(|r| r.dev_read).collect(),
    };
    Ok(ReclaimResult {
        bench: "reclaim",
        what: "swap-out (write every page) and swap-in (read every page back) under a memory limit, vs the swap \
               file's sequential bandwidth",
        unit: "bytes/s",
        size_bytes: size,
        pages: size / PAGE,
        mem_limit_bytes: limit,
        reps: o.reps,
        background_reclaim: o.background_reclaim,
        device: last.map_or_else(String::new, |r| r.device.clone()),
        swap_out_bytes_per_s: so,
        swap_in_bytes_per_s: si,
        dev_write_bytes_per_s: dw,
        dev_read_bytes_per_s: dr,
        out_ratio: so / dw,
        in_ratio: si / dr,
        reference: "sequential bandwidth of a swap file of the same kind, measured in this run (1 MiB pwrite then \
                    pread, no fsync: page cache); Linux's own swap needs root, so it is not measured",
        swap_outs: last.map(|r| r.outs),
        swap_ins: last.map(|r| r.ins),
        swap_outs_while_reading: last.map(|r| r.outs_reading),
        swap_cache_hits: last.map(|r| r.cache_hits),
        look_around_aged_while_reading: last.map(|r| r.look_around_aged),
        background_reclaimed_while_reading: last.map(|r| r.background_reclaimed),
        direct_reclaims_while_reading: last.map(|r| r.direct_reclaims),
        samples,
        vs_linux: o.vs_linux,
    })
}

#[derive(Serialize)]
struct ReclaimSamples {
    swap_out: Vec<f64>,
    swap_in: Vec<f64>,
    dev_write: Vec<f64>,
    dev_read: Vec<f64>,
}

/// The result of `bench reclaim`; the counts are the last run's.
#[derive(Serialize)]
pub struct ReclaimResult {
    bench: &'static str,
    what: &'static str,
    unit: &'static str,
    size_bytes: u64,
    pages: u64,
    mem_limit_bytes: u64,
    reps: usize,
    background_reclaim: bool,
    device: String,
    swap_out_bytes_per_s: f64,
    swap_in_bytes_per_s: f64,
    dev_write_bytes_per_s: f64,
    dev_read_bytes_per_s: f64,
    out_ratio: f64,
    in_ratio: f64,
    reference: &'static str,
    swap_outs: Option<u64>,
    swap_ins: Option<u64>,
    swap_outs_while_reading: Option<u64>,
    swap_cache_hits: Option<u64>,
    look_around_aged_while_reading: Option<u64>,
    background_reclaimed_while_reading: Option<u64>,
    direct_reclaims_while_reading: Option<u64>,
    samples: ReclaimSamples,
    /// Whether --vs-linux asked what the reference is (text only).
    #[serde(skip)]
    vs_linux: bool,
}

impl ReclaimResult {
    /// What the last run counted.
    fn text_last_run(&self, t: &mut String) {
        let (Some(outs), Some(ins), Some(outs_reading), Some(hits), Some(aged), Some(bg), Some(direct)) = (
            self.swap_outs,
            self.swap_ins,
            self.swap_outs_while_reading,
            self.swap_cache_hits,
            self.look_around_aged_while_reading,
            self.background_reclaimed_while_reading,
            self.direct_reclaims_while_reading,
        ) else {
            return;
        };
        let _ = writeln!(
            t,
            "  last run: {} pages swapped out while writing; {} swapped in while reading, with {} swap-outs to make \
             room (clean pages are dropped, not rewritten), {} swap-cache hits, and {} pages aged by a \
             look-around (each a reverse-map walk saved)",
            count(outs),
            count(ins),
            count(outs_reading),
            count(hits),
            count(aged)
        );
        let _ = if self.background_reclaim {
            writeln!(
                t,
                "  while reading, the background reclaimer freed {} frames and the faulting thread reclaimed for \
                 itself {} times",
                count(bg),
                count(direct)
            )
        } else {
            writeln!(t, "  while reading, the faulting thread reclaimed for itself {} times", count(direct))
        };
    }
}

impl Report for ReclaimResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "bench reclaim: swap-out and swap-in through a swap file under a memory limit");
        let _ = writeln!(
            t,
            "  {} ({} pages) written then read back in order, memory limit {}, median of {} runs",
            bytes(self.size_bytes),
            count(self.pages),
            bytes(self.mem_limit_bytes),
            self.reps
        );
        let _ = writeln!(t, "  swap device: {} (a fresh file per run)", self.device);
        let _ = writeln!(
            t,
            "  reclaim: {}",
            if self.background_reclaim {
                "background reclaimer + direct reclaim"
            } else {
                "direct reclaim (by the faulting thread)"
            }
        );
        let (so, si, dw, dr) = (
            self.swap_out_bytes_per_s,
            self.swap_in_bytes_per_s,
            self.dev_write_bytes_per_s,
            self.dev_read_bytes_per_s,
        );
        let _ = writeln!(t, "  {:<12}{:>14}{:>14}{:>10}", "", "softmm", "file", "ratio");
        let _ = writeln!(t, "  {:<12}{:>14}{:>14}{:>9.0}%", "swap-out", rate(so), rate(dw), self.out_ratio * 100.0);
        let _ = writeln!(t, "  {:<12}{:>14}{:>14}{:>9.0}%", "swap-in", rate(si), rate(dr), self.in_ratio * 100.0);
        self.text_last_run(&mut t);
        let _ = writeln!(
            t,
            "  (swap-out time includes the demand-zero faults and the page writes; file = the same total size written \
             then read in order in 1 MiB pwrite/pread calls, on a fresh file)"
        );
        if self.vs_linux {
            let _ = writeln!(t, "  --vs-linux: the reference is the {}", self.reference);
        }
        t
    }
}
