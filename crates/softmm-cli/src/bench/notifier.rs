//! `softmm bench notifier`: what MMU notifiers cost (the brackets of
//! `softmm::notifier`), with no subscriber and with one.
//!
//! - (a) No subscriber: every bracket is then one load. The paths that
//!   carry one are timed: munmap of small written ranges (ns per munmap),
//!   demand-zero first-touch faults (ns per fault, as `bench fault` warm,
//!   4 MiB per run) and COW faults (ns per fault, as `bench cow` warm, 4 MiB
//!   per run; the COW path brackets every copy). Each run's figure is the
//!   fastest of 8 short runs (about a millisecond each): on a shared
//!   machine noise only ever adds time, and a preemption costs a whole
//!   time slice, which one long run would catch now and then. The
//!   comparison with a build with `RUSTFLAGS="--cfg softmm_no_notifiers"`
//!   (no brackets at all) is `scripts/bench-notifier.sh`'s: it runs both
//!   builds and compares them; one process cannot.
//! - (b) One subscriber (a counting one): munmap of a `--size` mapping
//!   (default 1 GiB) with one page written per 2 MiB, so every PTE table
//!   exists and the zap walks them all. It must make exactly one start/end
//!   pair, over the whole mapping, event `Unmap`.
//! - (c) Per-invalidation overhead with one subscriber: the same operation
//!   timed in blocks without and with the subscriber, alternating which
//!   comes first (each run's figure per side is the fastest of 16 short
//!   blocks, as in (a)), and the median of the per-run differences: madvise
//!   (DONTNEED) of one empty page (the cheapest operation with a bracket,
//!   so the difference is least buried in the operation's own noise; the
//!   headline figure), mprotect of one written page (alternately read-only
//!   and read-write: a split and a merge each time), and the munmap runs of
//!   (a). madvise and mprotect are timed in (a)
//!   too, with no subscriber (the cheapest bracketed operations: the most
//!   sensitive comparison of the two builds). (a) runs before any
//!   subscription exists in the process, as in the build without.
//!
//! Every timed block is checked: with the subscriber, exactly one pair per
//! operation; after each munmap run, the frames and page tables it used are
//! free again. In a build without notifiers (b) and (c) are skipped and say
//! so (`notifiers_compiled` is false in the JSON).

use super::{median, say, softmm_side, status, BenchOpts, Report};
use crate::error::{check, CliResult, Context};
use crate::units::{bytes, count, ns, PAGE};
use indicatif::ProgressBar;
use serde::Serialize;
use softmm::notifier::{Again, Event, MmuNotifier, Range, NOTIFIERS_COMPILED};
use softmm::{Advice, Config, Machine, MapKind, Mm, Placement, Prot, Subscription};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The mapping munmapped whole in (b), without --size.
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// Bytes one PTE table maps: (b) writes one page per table.
const TABLE_SPAN: u64 = 2 << 20;
/// Pages of one small range of the munmap runs, all written.
const RANGE_PAGES: u64 = 4;
const RANGE_BYTES: u64 = RANGE_PAGES * PAGE;
/// A hole as large as the range between two ranges, so they stay separate
/// VMAs and each munmap removes one whole VMA.
const RANGE_STRIDE: u64 = 2 * RANGE_BYTES;
/// munmaps per timed block (an 8 MiB span: 4 PTE tables, each freed by the
/// munmap of its last range).
const RANGES: u64 = 256;
/// Where the munmap runs map their ranges (2 MiB aligned, in an address
/// space of their own).
const RANGES_BASE: u64 = 1 << 36;
/// Memory of the fault and COW figures per block (the COW run touches
/// three times its size).
const FAULT_SIZE: u64 = 4 << 20;
const COW_SIZE: u64 = 4 << 20;
/// Blocks per run in (a) (and per side in its munmap runs), the fastest of
/// which is the run's figure.
const BLOCKS_A: usize = 8;
/// Operations per timed block in (c) (about half a millisecond each), and
/// blocks per side and run, the fastest of which is the run's figure.
const MADVISE_OPS: u64 = 2_000;
const MPROTECT_OPS: u64 = 1_000;
const BLOCKS_C: usize = 16;

/// A trivial subscriber: counts the calls and keeps the last range.
#[derive(Default)]
struct Counter {
    starts: AtomicU64,
    ends: AtomicU64,
    lo: AtomicU64,
    hi: AtomicU64,
    unmap: AtomicBool,
}

impl MmuNotifier for Counter {
    fn invalidate_range_start(&self, r: &Range) -> Result<(), Again> {
        self.starts.fetch_add(1, Ordering::Relaxed);
        self.lo.store(r.start, Ordering::Relaxed);
        self.hi.store(r.end, Ordering::Relaxed);
        self.unmap.store(r.event == Event::Unmap, Ordering::Relaxed);
        Ok(())
    }

    fn invalidate_range_end(&self, _r: &Range) {
        self.ends.fetch_add(1, Ordering::Relaxed);
    }
}

impl Counter {
    fn pairs(&self) -> (u64, u64) {
        (self.starts.load(Ordering::Relaxed), self.ends.load(Ordering::Relaxed))
    }
}

fn subscribe(mm: &Mm, c: &Arc<Counter>) -> Subscription {
    let sub: Arc<dyn MmuNotifier> = c.clone();
    mm.register_notifier(sub)
}

/// The fastest of each `k` consecutive figures.
fn fastest_of(v: &[f64], k: usize) -> Vec<f64> {
    v.chunks(k.max(1)).map(|c| c.iter().copied().fold(f64::INFINITY, f64::min)).collect()
}

/// Time `ops` calls of `op`, in ns per call.
fn block(ops: u64, mut op: impl FnMut(u64) -> CliResult<()>) -> CliResult<f64> {
    let t = Instant::now();
    for i in 0..ops {
        op(i)?;
    }
    Ok(t.elapsed().as_nanos() as f64 / ops as f64)
}

/// One munmap run: map and write `RANGES` small ranges (untimed), let the
/// background zeroer finish, then munmap them one by one; ns per munmap.
/// Checks that the frames and page tables the run used are free again.
fn munmap_run(m: &Machine, mm: &Mm) -> CliResult<f64> {
    let before = m.stats();
    let mut acc = mm.accessor();
    for i in 0..RANGES {
        let va = RANGES_BASE + i * RANGE_STRIDE;
        mm.mmap(va, RANGE_BYTES, Prot::RW, MapKind::Private, Placement::FixedNoReplace)
            .context(|| format!("mmap of {} at {va:#x}", bytes(RANGE_BYTES)))?;
        for p in 0..RANGE_PAGES {
            acc.write(va + p * PAGE, &[1]).context(|| format!("write at {:#x}", va + p * PAGE))?;
        }
    }
    // With an accessor alive every munmap would shoot its TLB down, with a
    // membarrier (an IPI to the other CPUs): on a VM its cost swings by
    // microseconds with what the other vCPU is doing, which would bury a 1 %
    // difference. The brackets are the same either way.
    drop(acc);
    m.wait_for_prezeroing(Duration::from_secs(30));
    let ns = block(RANGES, |i| {
        let va = RANGES_BASE + i * RANGE_STRIDE;
        mm.munmap(va, RANGE_BYTES).context(|| format!("munmap at {va:#x}"))
    })?;
    let after = m.stats();
    check(after.frames_in_use == before.frames_in_use && after.page_tables == before.page_tables, || {
        format!(
            "bench notifier: after the munmap run {} frames and {} page tables in use, before it {} and {}",
            after.frames_in_use, after.page_tables, before.frames_in_use, before.page_tables
        )
    })?;
    Ok(ns)
}

/// Figures of one operation timed without and with one subscriber.
#[derive(Default, serde::Serialize)]
struct Paired {
    without: Vec<f64>,
    with: Vec<f64>,
    /// with - without, per run.
    diff: Vec<f64>,
}

impl Paired {
    fn medians(&self) -> (f64, f64, f64) {
        (median(&self.without), median(&self.with), median(&self.diff))
    }
}

/// `reps` runs of `run` with no subscriber (after an untimed one), each
/// the fastest of `blocks` calls (see `paired`).
fn solo(reps: usize, blocks: usize, mut run: impl FnMut() -> CliResult<f64>) -> CliResult<Vec<f64>> {
    run()?;
    (0..reps)
        .map(|_| {
            let mut best = f64::INFINITY;
            for _ in 0..blocks {
                best = best.min(run()?);
            }
            Ok(best)
        })
        .collect()
}

/// `reps` runs of `run` without and with a subscription to `mm` (which
/// comes first alternates, so a drift during the bench does not land on one
/// side). With `blocks` > 1 a run's figure per side is the fastest of
/// `blocks` calls of `run`, alternating sides: on a shared machine noise
/// only ever adds time (a preemption inside a block), and short blocks
/// whose fastest is kept shed it where one long block would not. With the
/// subscription, each call must make exactly `pairs` start/end pairs.
fn paired(
    what: &str,
    mm: &Mm,
    reps: usize,
    blocks: usize,
    pairs: u64,
    mut run: impl FnMut() -> CliResult<f64>,
) -> CliResult<Paired> {
    let c = Arc::new(Counter::default());
    let mut p = Paired::default();
    // One untimed run each way first (warms caches, page tables, the VMA tree).
    run()?;
    let sub = subscribe(mm, &c);
    run()?;
    drop(sub);
    for r in 0..reps {
        let (mut without, mut with) = (f64::INFINITY, f64::INFINITY);
        for b in 0..blocks {
            for subscribed in [(r + b) % 2 == 1, (r + b) % 2 == 0] {
                if subscribed {
                    let sub = subscribe(mm, &c);
                    let (s0, e0) = c.pairs();
                    with = with.min(run()?);
                    let (s1, e1) = c.pairs();
                    drop(sub);
                    check(s1 - s0 == pairs && e1 - e0 == pairs, || {
                        format!(
                            "bench notifier ({what}): {} starts and {} ends, expected {pairs} pairs",
                            s1 - s0,
                            e1 - e0
                        )
                    })?;
                } else {
                    without = without.min(run()?);
                }
            }
        }
        p.without.push(without);
        p.with.push(with);
        p.diff.push(with - without);
    }
    Ok(p)
}

/// (b): munmap of `size` with one subscriber.
#[derive(Clone, Copy)]
struct Big {
    pairs: u64,
    tables: u64,
    munmap_ns: f64,
}

fn big_munmap(m: &Machine, size: u64) -> CliResult<Big> {
    let mm = m.new_mm().context(|| "creating an address space".into())?;
    let base0 = m.stats();
    let base =
        mm.mmap(0, size, Prot::RW, MapKind::Private, Placement::Hint).context(|| format!("mmap of {}", bytes(size)))?;
    let mut acc = mm.accessor();
    let mut va = base;
    while va < base + size {
        acc.write(va, &[1]).context(|| format!("write at {va:#x}"))?;
        va += TABLE_SPAN;
    }
    drop(acc); // no TLB shootdown in the timed munmap (see `munmap_run`)
    let before = m.stats();
    let tables = before.page_tables - base0.page_tables;
    let c = Arc::new(Counter::default());
    let sub = subscribe(&mm, &c);
    m.wait_for_prezeroing(Duration::from_secs(30));
    let t = Instant::now();
    mm.munmap(base, size).context(|| format!("munmap of {}", bytes(size)))?;
    let munmap_ns = t.elapsed().as_nanos() as f64;
    // Read before anything else can bracket (the subscription's drop and the
    // address space's exit would add a Release pair).
    let (starts, ends) = c.pairs();
    let (lo, hi, unmap) = (c.lo.load(Ordering::Relaxed), c.hi.load(Ordering::Relaxed), c.unmap.load(Ordering::Relaxed));
    drop(sub);
    let after = m.stats();
    check(starts == ends, || {
        format!("bench notifier: munmap of {} made {starts} starts but {ends} ends", bytes(size))
    })?;
    check(starts != 1 || (lo == base && hi == base + size && unmap), || {
        format!(
            "bench notifier: munmap of [{base:#x}, {:#x}) bracketed [{lo:#x}, {hi:#x}) (event Unmap: {unmap})",
            base + size
        )
    })?;
    check(after.frames_in_use == base0.frames_in_use && after.page_tables == base0.page_tables, || {
        format!(
            "bench notifier: after the munmap of {} {} frames and {} page tables in use, before the mmap {} and {}",
            bytes(size),
            after.frames_in_use,
            after.page_tables,
            base0.frames_in_use,
            base0.page_tables
        )
    })?;
    Ok(Big { pairs: starts, tables, munmap_ns })
}

/// madvise(DONTNEED) of the never-written page at `r + PAGE`, `MADVISE_OPS`
/// times; ns per call.
fn madvise_block(mc: &Mm, r: u64) -> CliResult<f64> {
    block(MADVISE_OPS, |_| mc.madvise(r + PAGE, PAGE, Advice::DontNeed).context(|| "madvise".into()))
}

/// mprotect of the written page at `r + 2 * PAGE`, alternately read-only
/// and read-write, `MPROTECT_OPS` times; ns per call.
fn mprotect_block(mc: &Mm, r: u64) -> CliResult<f64> {
    block(MPROTECT_OPS, |i| {
        let prot = if i % 2 == 0 { Prot::READ } else { Prot::RW };
        mc.mprotect(r + 2 * PAGE, PAGE, prot).context(|| "mprotect".into())
    })
}

/// The space of the madvise and mprotect figures and its 4-page mapping:
/// page 0 written (so the PTE table exists), page 1 never written
/// (madvise), page 2 written (mprotect), page 3 written (a neighbour on
/// each side of the mprotected page).
fn one_page_ops_space(m: &Machine) -> CliResult<(Mm, u64)> {
    let mc = m.new_mm().context(|| "creating an address space".into())?;
    let r = mc.mmap(0, 4 * PAGE, Prot::RW, MapKind::Private, Placement::Hint).context(|| "mmap of 4 pages".into())?;
    let mut acc = mc.accessor();
    for p in [0, 2, 3] {
        acc.write(r + p * PAGE, &[1]).context(|| format!("write at {:#x}", r + p * PAGE))?;
    }
    // No accessor while timing (no TLB shootdowns; see `munmap_run`).
    drop(acc);
    Ok((mc, r))
}

/// (a): the figures with no subscriber, runs per operation.
struct Solo {
    munmap: Vec<f64>,
    fault: Vec<f64>,
    cow: Vec<f64>,
    madvise: Vec<f64>,
    mprotect: Vec<f64>,
}

fn no_subscriber(m: &Machine, mu: &Mm, mc: &Mm, r: u64, reps: usize, pb: &ProgressBar) -> CliResult<Solo> {
    say(pb, "notifier: munmap of small ranges".into());
    let munmap = solo(reps, BLOCKS_A, || munmap_run(m, mu))?;
    say(pb, format!("notifier: demand-zero faults ({})", bytes(FAULT_SIZE)));
    let fault = fastest_of(&softmm_side::fault_warm(FAULT_SIZE, reps * BLOCKS_A, true)?, BLOCKS_A);
    say(pb, format!("notifier: COW faults ({})", bytes(COW_SIZE)));
    let cow = fastest_of(&softmm_side::cow_warm(COW_SIZE, reps * BLOCKS_A)?, BLOCKS_A);
    // madvise and mprotect of one page: the cheapest bracketed operations,
    // so the most sensitive comparison of the two builds (and (c)'s).
    say(pb, "notifier: madvise of one page".into());
    let madvise = solo(reps, BLOCKS_C, || madvise_block(mc, r))?;
    say(pb, "notifier: mprotect of one page".into());
    let mprotect = solo(reps, BLOCKS_C, || mprotect_block(mc, r))?;
    Ok(Solo { munmap, fault, cow, madvise, mprotect })
}

/// (b) and (c): the figures with one subscriber.
struct WithSub {
    big: Big,
    munmap: Paired,
    madvise: Paired,
    mprotect: Paired,
}

fn one_subscriber(
    m: &Machine,
    mu: &Mm,
    mc: &Mm,
    r: u64,
    size: u64,
    reps: usize,
    pb: &ProgressBar,
) -> CliResult<WithSub> {
    say(pb, format!("notifier: munmap of {} with one subscriber", bytes(size)));
    let big = big_munmap(m, size)?;
    say(pb, "notifier: munmap of small ranges, without and with one subscriber".into());
    let munmap = paired("munmap", mu, reps, BLOCKS_A, RANGES, || munmap_run(m, mu))?;
    say(pb, "notifier: madvise of one page, without and with one subscriber".into());
    let madvise = paired("madvise", mc, reps, BLOCKS_C, MADVISE_OPS, || madvise_block(mc, r))?;
    say(pb, "notifier: mprotect of one page, without and with one subscriber".into());
    let mprotect = paired("mprotect", mc, reps, BLOCKS_C, MPROTECT_OPS, || mprotect_block(mc, r))?;
    Ok(WithSub { big, munmap, madvise, mprotect })
}

#[derive(Serialize)]
struct NotifierSamples {
    munmap: Vec<f64>,
    fault: Vec<f64>,
    cow_fault: Vec<f64>,
    madvise: Vec<f64>,
    mprotect: Vec<f64>,
    munmap_paired: Option<Paired>,
    madvise_paired: Option<Paired>,
    mprotect_paired: Option<Paired>,
}

/// The result of `bench notifier`. `*_c_ns` and `*_1sub_ns` are (c)'s two
/// sides, without and with the subscriber; `per_invalidation_*` their
/// difference; `pairs_1g_munmap` the pairs of (b)'s munmap of `size_bytes`.
#[derive(Serialize)]
pub struct NotifierResult {
    bench: &'static str,
    notifiers_compiled: bool,
    reps: usize,
    unit: &'static str,
    range_bytes: u64,
    munmaps_per_block: u64,
    blocks_per_run: usize,
    munmap_ns: f64,
    fault_size_bytes: u64,
    fault_ns: f64,
    cow_size_bytes: u64,
    cow_fault_ns: f64,
    size_bytes: u64,
    madvise_ns: f64,
    mprotect_ns: f64,
    pairs_1g_munmap: Option<u64>,
    big_munmap_ns: Option<f64>,
    big_munmap_tables: Option<u64>,
    per_invalidation_ns: Option<f64>,
    per_invalidation_madvise_ns: Option<f64>,
    per_invalidation_mprotect_ns: Option<f64>,
    per_invalidation_munmap_ns: Option<f64>,
    madvise_c_ns: Option<f64>,
    madvise_1sub_ns: Option<f64>,
    mprotect_c_ns: Option<f64>,
    mprotect_1sub_ns: Option<f64>,
    munmap_c_ns: Option<f64>,
    munmap_1sub_ns: Option<f64>,
    samples: NotifierSamples,
}

pub fn notifier(o: &BenchOpts, size: Option<u64>) -> CliResult<NotifierResult> {
    // --size comes rounded up to whole pages (`units::parse_size`).
    let size = size.unwrap_or(DEFAULT_SIZE);
    // (b) keeps one page and one PTE table per 2 MiB; the rest is the
    // fault, COW and munmap runs, one at a time.
    let big_need = size.div_ceil(TABLE_SPAN).saturating_mul(2 * PAGE);
    let need = big_need.saturating_add(3 * COW_SIZE).saturating_add(FAULT_SIZE).saturating_add(64 << 20);
    super::ensure_memory("notifier", size, need)?;
    let reps = o.reps;
    let pb = status();

    // (a) No subscriber. No subscription exists in this process until (a)
    // is done, as in a build without notifiers: runs with one before would
    // leave the branch predictors and caches in another state than that
    // build's, which is not what (a) compares.
    let arena_bytes = big_need.saturating_add(256 << 20);
    let m = Machine::new(Config { arena_bytes, ..Config::default() })
        .context(|| format!("creating a machine with a {} arena", bytes(arena_bytes)))?;
    let mu = m.new_mm().context(|| "creating an address space".into())?;
    let (mc, r) = one_page_ops_space(&m)?;
    let a = no_subscriber(&m, &mu, &mc, r, reps, &pb)?;
    let w = if NOTIFIERS_COMPILED { Some(one_subscriber(&m, &mu, &mc, r, size, reps, &pb)?) } else { None };
    drop(mu);
    drop(mc);
    m.check_invariants().context(|| "bench notifier: invariant audit".into())?;
    pb.finish_and_clear();

    // (without, with, overhead) of (c).
    let c_mu = w.as_ref().map(|w| w.munmap.medians());
    let c_mad = w.as_ref().map(|w| w.madvise.medians());
    let c_mpr = w.as_ref().map(|w| w.mprotect.medians());
    let big = w.as_ref().map(|w| w.big);
    let (munmap_paired, madvise_paired, mprotect_paired) = match w {
        Some(w) => (Some(w.munmap), Some(w.madvise), Some(w.mprotect)),
        None => (None, None, None),
    };
    Ok(NotifierResult {
        bench: "notifier",
        notifiers_compiled: NOTIFIERS_COMPILED,
        reps,
        unit: "ns",
        range_bytes: RANGE_BYTES,
        munmaps_per_block: RANGES,
        blocks_per_run: BLOCKS_A,
        munmap_ns: median(&a.munmap),
        fault_size_bytes: FAULT_SIZE,
        fault_ns: median(&a.fault),
        cow_size_bytes: COW_SIZE,
        cow_fault_ns: median(&a.cow),
        size_bytes: size,
        madvise_ns: median(&a.madvise),
        mprotect_ns: median(&a.mprotect),
        pairs_1g_munmap: big.map(|b| b.pairs),
        big_munmap_ns: big.map(|b| b.munmap_ns),
        big_munmap_tables: big.map(|b| b.tables),
        per_invalidation_ns: c_mad.map(|x| x.2),
        per_invalidation_madvise_ns: c_mad.map(|x| x.2),
        per_invalidation_mprotect_ns: c_mpr.map(|x| x.2),
        per_invalidation_munmap_ns: c_mu.map(|x| x.2),
        madvise_c_ns: c_mad.map(|x| x.0),
        madvise_1sub_ns: c_mad.map(|x| x.1),
        mprotect_c_ns: c_mpr.map(|x| x.0),
        mprotect_1sub_ns: c_mpr.map(|x| x.1),
        munmap_c_ns: c_mu.map(|x| x.0),
        munmap_1sub_ns: c_mu.map(|x| x.1),
        samples: NotifierSamples {
            munmap: a.munmap,
            fault: a.fault,
            cow_fault: a.cow,
            madvise: a.madvise,
            mprotect: a.mprotect,
            munmap_paired,
            madvise_paired,
            mprotect_paired,
        },
    })
}

impl NotifierResult {
    /// (b) and (c), when this build has notifiers.
    fn text_subscribed(&self, t: &mut String) {
        let sides = |c: Option<f64>, s: Option<f64>, d: Option<f64>| c.zip(s).zip(d).map(|((c, s), d)| (c, s, d));
        let mad = sides(self.madvise_c_ns, self.madvise_1sub_ns, self.per_invalidation_madvise_ns);
        let mpr = sides(self.mprotect_c_ns, self.mprotect_1sub_ns, self.per_invalidation_mprotect_ns);
        let mu = sides(self.munmap_c_ns, self.munmap_1sub_ns, self.per_invalidation_munmap_ns);
        let (Some(pairs), Some(tables), Some(big_ns), Some(mad), Some(mpr), Some(mu)) =
            (self.pairs_1g_munmap, self.big_munmap_tables, self.big_munmap_ns, mad, mpr, mu)
        else {
            let _ = writeln!(
                t,
                "  (b), (c): skipped: this build has no notifiers (--cfg softmm_no_notifiers); subscribers are never \
                 called"
            );
            return;
        };
        let _ = writeln!(
            t,
            "  (b) one subscriber: munmap of {} (one page written per 2 MiB; {} page tables, all levels)",
            bytes(self.size_bytes),
            count(tables)
        );
        let _ = writeln!(t, "    start/end pairs: {pairs} (took {})", ns(big_ns));
        let _ = writeln!(t, "  (c) per-invalidation overhead of one subscriber (median of with - without per run)");
        let _ = writeln!(t, "    {:<44}{:>10}{:>10}{:>10}", "", "without", "with", "overhead");
        let row = |name: String, (a, b, d): (f64, f64, f64)| {
            format!("    {name:<44}{:>10}{:>10}{:>10}\n", ns(a), ns(b), ns(d))
        };
        t.push_str(&row("madvise(DONTNEED) of one empty page".into(), mad));
        t.push_str(&row("mprotect of one written page".into(), mpr));
        t.push_str(&row(format!("munmap of a {} range", bytes(self.range_bytes)), mu));
    }
}

impl Report for NotifierResult {
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "bench notifier: MMU notifier brackets with no subscriber and with one (a counting one)");
        let _ = writeln!(
            t,
            "  notifiers compiled in: {}; median of {} runs, each the fastest of {BLOCKS_A} short ones ({BLOCKS_C} in \
             (c))",
            if self.notifiers_compiled { "yes" } else { "NO (--cfg softmm_no_notifiers)" },
            self.reps
        );
        let _ = writeln!(t, "  (a) no subscriber");
        let line = |t: &mut String, what: String, v: f64| {
            let _ = writeln!(t, "    {what:<52}{:>10}", ns(v));
        };
        line(&mut t, format!("munmap of a {} range, every page written", bytes(self.range_bytes)), self.munmap_ns);
        line(&mut t, format!("demand-zero fault ({}, warm)", bytes(self.fault_size_bytes)), self.fault_ns);
        line(&mut t, format!("COW fault ({}, warm)", bytes(self.cow_size_bytes)), self.cow_fault_ns);
        line(&mut t, "madvise(DONTNEED) of one empty page".into(), self.madvise_ns);
        line(&mut t, "mprotect of one written page (RW <-> R)".into(), self.mprotect_ns);
        let _ = writeln!(t, "    (scripts/bench-notifier.sh compares these with a build without notifiers)");
        self.text_subscribed(&mut t);
        t
    }
}
