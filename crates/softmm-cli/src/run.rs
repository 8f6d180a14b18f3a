//! `softmm run`: the built-in workload.
//!
//! One process (an [`Mm`] with one private anonymous mapping) writes every
//! page of its memory; it then forks `children` children, which run on a few
//! threads: each writes `write_percent` % of the pages (spread evenly, at an
//! offset of its own so different children break COW on different pages) and
//! reads all the others. At that moment — children written, nobody exited —
//! the report takes its snapshot (machine counters, smaps of every process).
//! Then the children exit, the parent checks that none of their writes
//! reached it, and everything exits.
//!
//! Everything checkable is checked: each child reads back the parent's data
//! on the pages it only reads, and its own data (over the parent's) on the
//! pages it wrote; the fault counters, frame counts and RSS/PSS sums must be
//! exactly what the workload implies; the library's invariant audit runs
//! before and after the parent exits; after exit no frame or page table may
//! remain in use. Any mismatch is an error (non-zero exit).
//!
//! With `--mem-limit`, pages beyond the limit are swapped out and back in.
//! The data checks stay the same; the counters that swapping makes depend on
//! timing (which pages are resident at the snapshot, which COW faults met a
//! swap entry) are checked as bounds instead (`rss + swap` per process is
//! still exact), and no swap slot may remain in use after exit.

use crate::error::{check, CliError, CliResult, Context};
use crate::memlimit::MemLimit;
use crate::report::{self, Phase, ProcSmaps, RunReport, SwapReport};
use crate::units::PAGE;
use indicatif::{ProgressBar, ProgressStyle};
use softmm::GuestWords;
use softmm::{Accessor, Config, Machine, MapKind, Mm, Placement, Prot};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// Options of `softmm run`.
pub struct RunOpts {
    pub size: u64,
    pub children: u32,
    pub write_percent: f64,
    pub threads: Option<u32>,
    pub mem: MemLimit,
}

/// The 8-byte tag the parent stores at the start of page `i`.
fn parent_tag(i: u64) -> u64 {
    0x5041_5245_4e54_0000 ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The tag child `c` stores at the start of page `i`.
fn child_tag(c: u32, i: u64) -> u64 {
    0xc41d_0000_0000_0000 ^ (u64::from(c) << 40) ^ i
}

/// The byte the parent fills page `i` with (never zero, so a page that
/// reads back as zeros is caught).
fn fill_byte(i: u64) -> u8 {
    (i % 251) as u8 | 1
}

/// The last 8 bytes of page `i` as the parent left them.
fn fill_word(i: u64) -> u64 {
    u64::from_ne_bytes([fill_byte(i); 8])
}

/// Which pages child `c` writes: `k` pages spread evenly over `npages`,
/// shifted by a per-child offset inside one stride.
#[derive(Clone, Copy)]
struct WriteSet {
    npages: u64,
    k: u64,
    off: u64,
}

impl WriteSet {
    fn new(npages: u64, k: u64, c: u32, children: u32) -> WriteSet {
        let stride = npages.checked_div(k).unwrap_or(npages);
        WriteSet { npages, k, off: u64::from(c) * stride / u64::from(children.max(1)) }
    }

    /// The `j`-th written page (`j < k`); strictly increasing in `j` and
    /// below `npages` (the offset is less than one stride).
    fn page(&self, j: u64) -> u64 {
        j * self.npages / self.k + self.off
    }
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{wide_bar}] {human_pos}/{human_len} pages, eta {eta}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(what.to_string());
    pb
}

/// Progress is reported every this many pages.
const TICK: u64 = 4096;

pub fn run(o: &RunOpts) -> CliResult<()> {
    let t_total = Instant::now();
    let npages = o.size / PAGE;
    let k = ((npages as f64) * o.write_percent / 100.0).round() as u64;
    let k = k.min(npages);
    let children = o.children;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as u32;
    let threads = o.threads.unwrap_or(cpus).min(children.max(1)).max(1);

    // Frames: the parent's pages, the children's copies, page tables of
    // every process (one PTE table per 512 pages plus upper levels), slack.
    let data_frames = npages + u64::from(children) * k;
    let pt_frames = (u64::from(children) + 1) * (npages / 512 + 16);
    let needed = (data_frames + pt_frames) * PAGE;
    // Under a limit the frames in use never pass it (the rest is on swap).
    let resident = o.mem.mem_limit.map_or(needed, |l| needed.min(l));
    if let Some(avail) = crate::units::mem_available() {
        if resident > avail / 10 * 9 {
            return Err(CliError(format!(
                "this workload needs about {} of memory but only {} is available; use a smaller --size or \
                 fewer --children{}",
                crate::units::bytes(resident),
                crate::units::bytes(avail),
                if o.mem.mem_limit.is_some() { ", or a lower --mem-limit" } else { ", or --mem-limit" }
            )));
        }
    }
    let arena_bytes = needed + (64 << 20);
    let (swap, swap_what) = o.mem.swap(needed)?;

    let mut phases = Vec::new();
    let t = Instant::now();
    let machine =
        Machine::new(Config { arena_bytes, mem_limit: o.mem.mem_limit, swap, ..Config::default() }).context(|| {
            format!(
                "creating a machine with a {} arena{}",
                crate::units::bytes(arena_bytes),
                o.mem
                    .mem_limit
                    .map_or(String::new(), |l| format!(", a {} limit and swap on {swap_what}", crate::units::bytes(l)))
            )
        })?;
    let parent = machine.new_mm().context(|| "creating the parent address space".into())?;
    let base = parent
        .mmap(0, o.size, Prot::RW, MapKind::Private, Placement::Hint)
        .context(|| format!("mmap of {} in the parent", crate::units::bytes(o.size)))?;
    phases.push(Phase::new("setup (machine, mmap)", t, None));

    // Phase 1: the parent writes every page.
    let mut pacc = parent.accessor();
    let t = Instant::now();
    parent_write(&mut pacc, base, npages)?;
    phases.push(Phase::new("parent write", t, Some(npages)));

    // Phase 2: fork the children.
    let t = Instant::now();
    let mut kids = Vec::with_capacity(children as usize);
    for c in 0..children {
        kids.push(parent.fork().context(|| format!("fork of child {c}"))?);
    }
    phases.push(Phase::new(&format!("fork x{children}"), t, None));

    // Phase 3: the children write their pages and read the others.
    let t = Instant::now();
    let outcomes = run_children(&kids, base, npages, k, threads)?;
    phases.push(Phase::new("children write + read", t, Some(u64::from(children) * npages)));

    // The snapshot: everything written, nobody exited.
    let t = Instant::now();
    let mut named = Vec::with_capacity(kids.len() + 1);
    named.push(("parent".to_string(), &parent));
    named.extend(kids.iter().enumerate().map(|(c, kid)| (format!("child {c}"), kid)));
    let procs = ProcSmaps::of_each(&named, base)?;
    // After the smaps: under a limit the background reclaimer may swap
    // pages out meanwhile, and then `swap_outs` says so (the checks are
    // bounds rather than exact figures).
    let stats = machine.stats();
    phases.push(Phase::new("snapshot (stats, smaps)", t, None));
    let limit_frames = o.mem.mem_limit.map(|l| l / PAGE);
    verify_snapshot(&stats, &procs, npages, k, children, limit_frames)?;

    // Phase 4: the children exit; the parent must be unaffected.
    let t = Instant::now();
    drop(kids);
    phases.push(Phase::new("children exit", t, None));
    let t = Instant::now();
    parent_verify(&mut pacc, base, npages)?;
    phases.push(Phase::new("parent verify", t, Some(npages)));
    let t = Instant::now();
    machine.check_invariants().context(|| "invariant audit with the parent alive".into())?;
    phases.push(Phase::new("check_invariants", t, None));

    // Phase 5: the parent exits; nothing may be left.
    let t = Instant::now();
    drop(pacc);
    drop(parent);
    phases.push(Phase::new("parent exit", t, None));
    let t = Instant::now();
    machine.check_invariants().context(|| "invariant audit after every process exited".into())?;
    let end = machine.stats();
    check(end.frames_in_use == 0, || format!("{} frames still in use after every process exited", end.frames_in_use))?;
    check(end.page_tables == 0, || format!("{} page-table pages left after every process exited", end.page_tables))?;
    check(end.swap_used == 0, || format!("{} swap slots still in use after every process exited", end.swap_used))?;
    check(end.anon_vmas == 0, || format!("{} anon_vmas left after every process exited", end.anon_vmas))?;
    phases.push(Phase::new("final audit", t, None));

    let rep = RunReport {
        size: o.size,
        npages,
        children,
        write_percent: o.write_percent,
        writes_per_child: k,
        threads,
        phases,
        total_ns: t_total.elapsed().as_nanos() as f64,
        stats,
        end,
        procs,
        child_reads: outcomes.iter().map(|x| x.reads).sum(),
        child_writes: outcomes.iter().map(|x| x.writes).sum(),
        child_misses: outcomes.iter().map(|x| x.misses).sum(),
        swap: o.mem.mem_limit.map(|limit| SwapReport { limit, device: swap_what }),
    };
    report::emit(&report::run_report(&rep))
}

fn parent_write(acc: &mut Accessor, base: u64, npages: u64) -> CliResult<()> {
    let pb = progress(npages, "parent writes");
    for i in 0..npages {
        let va = base + i * PAGE;
        acc.fill_bytes(va, PAGE as usize, fill_byte(i)).context(|| format!("parent write of page {i}"))?;
        acc.store_u64(va, parent_tag(i)).context(|| format!("parent write of page {i}"))?;
        if i % TICK == TICK - 1 {
            pb.inc(TICK);
        }
    }
    pb.finish_and_clear();
    Ok(())
}

/// What one child did.
struct ChildOutcome {
    writes: u64,
    reads: u64,
    misses: u64,
}

fn run_children(kids: &[Mm], base: u64, npages: u64, k: u64, threads: u32) -> CliResult<Vec<ChildOutcome>> {
    let n = kids.len() as u32;
    let pb = progress(u64::from(n) * npages, "children write + read");
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<CliResult<Vec<ChildOutcome>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let c = next.fetch_add(1, Ordering::Relaxed);
                        if c >= kids.len() || stop.load(Ordering::Relaxed) {
                            return Ok(done);
                        }
                        let ws = WriteSet::new(npages, k, c as u32, n);
                        match child_work(&kids[c], c as u32, base, ws, &pb, &stop) {
                            Ok(x) => done.push(x),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(CliError("a child thread panicked".into()))))
            .collect()
    });
    pb.finish_and_clear();
    // The error that stopped the others, not one of theirs.
    if let Some(Err(e)) = results.iter().find(|r| matches!(r, Err(e) if e.0 != STOPPED)) {
        return Err(CliError(e.0.clone()));
    }
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

/// What a child says when it stops because another one failed.
const STOPPED: &str = "stopped: another child failed";

/// Child `c`: write the pages of `ws`, read every other page; check both.
fn child_work(
    kid: &Mm,
    c: u32,
    base: u64,
    ws: WriteSet,
    pb: &ProgressBar,
    stop: &AtomicBool,
) -> CliResult<ChildOutcome> {
    let mut acc = kid.accessor();
    let mut buf = vec![0u8; PAGE as usize];
    let (mut j, mut writes, mut reads) = (0u64, 0u64, 0u64);
    let mut next_write = if ws.k > 0 { ws.page(0) } else { u64::MAX };
    for i in 0..ws.npages {
        let va = base + i * PAGE;
        if i == next_write {
            acc.store_u64(va, child_tag(c, i)).context(|| format!("child {c}: write of page {i}"))?;
            let tag = acc.load_u64(va).context(|| format!("child {c}: read of page {i}"))?;
            let tail = acc.load_u64(va + PAGE - 8).context(|| format!("child {c}: read of page {i}"))?;
            check(tag == child_tag(c, i) && tail == fill_word(i), || {
                format!("child {c}, page {i} after its write: read {tag:#x}/{tail:#x}, expected its own tag over the parent's data")
            })?;
            writes += 1;
            j += 1;
            next_write = if j < ws.k { ws.page(j) } else { u64::MAX };
        } else {
            acc.read(va, &mut buf).context(|| format!("child {c}: read of page {i}"))?;
            let head = u64::from_ne_bytes(word(&buf, 0));
            let tail = u64::from_ne_bytes(word(&buf, PAGE as usize - 8));
            let mid = buf[PAGE as usize / 2];
            check(head == parent_tag(i) && tail == fill_word(i) && mid == fill_byte(i), || {
                format!(
                    "child {c}, page {i}: read {head:#x}/{mid:#x}/{tail:#x}, expected the parent's {:#x}/{:#x}/{:#x}",
                    parent_tag(i),
                    fill_byte(i),
                    fill_word(i)
                )
            })?;
            reads += 1;
        }
        if i % TICK == TICK - 1 {
            pb.inc(TICK);
            if stop.load(Ordering::Relaxed) {
                return Err(CliError(STOPPED.into()));
            }
        }
    }
    pb.inc(ws.npages % TICK);
    check(writes == ws.k, || format!("child {c} wrote {writes} pages, expected {}", ws.k))?;
    Ok(ChildOutcome { writes, reads, misses: acc.misses() })
}

fn word(buf: &[u8], at: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    if let Some(s) = buf.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    w
}

fn parent_verify(acc: &mut Accessor, base: u64, npages: u64) -> CliResult<()> {
    let pb = progress(npages, "parent verifies");
    for i in 0..npages {
        let va = base + i * PAGE;
        let head = acc.load_u64(va).context(|| format!("parent read of page {i}"))?;
        let tail = acc.load_u64(va + PAGE - 8).context(|| format!("parent read of page {i}"))?;
        check(head == parent_tag(i) && tail == fill_word(i), || {
            format!(
                "parent page {i} changed after the children ran: read {head:#x}/{tail:#x}, expected {:#x}/{:#x}",
                parent_tag(i),
                fill_word(i)
            )
        })?;
        if i % TICK == TICK - 1 {
            pb.inc(TICK);
        }
    }
    pb.finish_and_clear();
    Ok(())
}

/// The counters at the snapshot must be exactly what the workload implies
/// (bounds of it once pages were swapped out, as the module doc says).
fn verify_snapshot(
    s: &softmm::MachineStats,
    procs: &[ProcSmaps],
    npages: u64,
    k: u64,
    children: u32,
    limit_frames: Option<u64>,
) -> CliResult<()> {
    if let Some(limit) = limit_frames {
        check(s.frames_in_use <= limit, || format!("{} frames in use, over the limit of {limit}", s.frames_in_use))?;
    }
    if s.swap_outs > 0 {
        return verify_swapped(s, procs, npages, k, children);
    }
    let copies = u64::from(children) * k;
    check(s.fault_anon == npages, || {
        format!("{} demand-zero faults, expected {npages} (one per parent page)", s.fault_anon)
    })?;
    check(s.fault_cow_copy == copies, || {
        format!("{} COW copies, expected {copies} ({children} x {k})", s.fault_cow_copy)
    })?;
    check(s.fault_cow_reuse == 0, || format!("{} COW reuses, expected none", s.fault_cow_reuse))?;
    check(s.segv == 0, || format!("{} segmentation faults", s.segv))?;
    check(s.forks == u64::from(children), || format!("{} forks counted, expected {children}", s.forks))?;
    let data = s.frames_in_use.saturating_sub(s.page_tables);
    check(data == npages + copies, || {
        format!(
            "{} frames in use minus {} page tables = {data} data frames, expected {} ({npages} parent pages + {copies} copies)",
            s.frames_in_use,
            s.page_tables,
            npages + copies
        )
    })?;
    let size_kb = npages * PAGE / 1024;
    for p in procs {
        check(p.smaps.rss == size_kb, || format!("{}: RSS {} kB, expected {size_kb} kB", p.name, p.smaps.rss))?;
    }
    for (c, p) in procs.iter().skip(1).enumerate() {
        let own = k * PAGE / 1024;
        check(p.smaps.private_dirty == own, || {
            format!("child {c}: Private_Dirty {} kB, expected {own} kB (its COW copies)", p.smaps.private_dirty)
        })?;
    }
    // PSS sums to the memory really used, to within each process's rounding.
    let pss: u64 = procs.iter().map(|p| p.smaps.pss).sum();
    let want = data * PAGE / 1024;
    let slack = procs.len() as u64;
    check(pss <= want && pss + slack >= want, || {
        format!("the PSS of all processes sums to {pss} kB, expected {want} kB (data frames x 4 kB)")
    })?;
    Ok(())
}

/// The snapshot checks once pages went to swap: which pages are resident
/// and which COW faults met a swap entry depend on the reclaim clock, so
/// the counters are bounded rather than exact; the per-process page count
/// (resident + swapped) is still exact.
fn verify_swapped(s: &softmm::MachineStats, procs: &[ProcSmaps], npages: u64, k: u64, children: u32) -> CliResult<()> {
    let copies = u64::from(children) * k;
    check(s.fault_anon == npages, || {
        format!("{} demand-zero faults, expected {npages} (one per parent page)", s.fault_anon)
    })?;
    check(s.fault_cow_copy <= copies, || {
        format!("{} COW copies, expected at most {copies} ({children} x {k})", s.fault_cow_copy)
    })?;
    check(s.segv == 0, || format!("{} segmentation faults", s.segv))?;
    check(s.swap_failures == 0, || format!("{} swap-outs failed", s.swap_failures))?;
    check(s.forks == u64::from(children), || format!("{} forks counted, expected {children}", s.forks))?;
    check(s.swap_used <= s.swap_outs, || {
        format!("{} swap slots in use but only {} pages were ever swapped out", s.swap_used, s.swap_outs)
    })?;
    let data = s.frames_in_use.saturating_sub(s.page_tables);
    check(data <= npages + copies, || {
        format!("{data} data frames in use, more than the {} pages the workload has", npages + copies)
    })?;
    let size_kb = npages * PAGE / 1024;
    for p in procs {
        check(p.smaps.rss + p.smaps.swap == size_kb, || {
            format!("{}: Rss {} kB + Swap {} kB, expected {size_kb} kB", p.name, p.smaps.rss, p.smaps.swap)
        })?;
    }
    for (c, p) in procs.iter().skip(1).enumerate() {
        let own = k * PAGE / 1024;
        check(p.smaps.private_dirty <= own, || {
            format!("child {c}: Private_Dirty {} kB, expected at most {own} kB (its COW copies)", p.smaps.private_dirty)
        })?;
    }
    let pss: u64 = procs.iter().map(|p| p.smaps.pss).sum();
    check(pss <= data * PAGE / 1024, || {
        format!("the PSS of all processes sums to {pss} kB, more than the {} kB of data frames", data * PAGE / 1024)
    })?;
    Ok(())
}
