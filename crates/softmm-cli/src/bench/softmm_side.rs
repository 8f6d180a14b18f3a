//! The softmm side of the benchmarks: the same work as `linux.rs`, done on
//! a softmm [`Machine`] through accessors (the fast path a host would use).
//!
//! "Warm" runs reuse one machine whose arena already served the same amount
//! of memory (mapped, touched, unmapped), so the frames handed out are
//! recycled ones, exactly as the Linux side's are. "Cold" runs use a new
//! machine per repetition: its arena has never been touched, so the host
//! pays its own first-touch fault under softmm's, as it does under Linux's.

use super::Keep;
use crate::error::{check, CliError, CliResult, Context};
use crate::units::PAGE;
use softmm::GuestWords;
use softmm::{Accessor, Config, ForkPolicy, Machine, MachineStats, MapKind, Mm, Placement, Prot};
use std::time::Instant;

/// A machine whose arena can hold several regions of `size` plus their
/// page tables (reserved, not touched: only used frames cost host memory).
fn machine(size: u64) -> CliResult<Machine> {
    let arena_bytes = size.saturating_mul(4).saturating_add(64 << 20);
    Machine::new(Config { arena_bytes, ..Config::default() })
        .context(|| format!("creating a machine with a {} arena", crate::units::bytes(arena_bytes)))
}

fn new_mm(m: &Machine) -> CliResult<Mm> {
    m.new_mm().context(|| "creating an address space".into())
}

fn map(mm: &Mm, size: u64) -> CliResult<u64> {
    mm.mmap(0, size, Prot::RW, MapKind::Private, Placement::Hint)
        .context(|| format!("mmap of {}", crate::units::bytes(size)))
}

fn unmap(mm: &Mm, va: u64, size: u64) -> CliResult<()> {
    mm.munmap(va, size).context(|| format!("munmap of {}", crate::units::bytes(size)))
}

/// Write `byte` to the first byte of every page of `[va, va + size)`.
fn touch(acc: &mut Accessor, va: u64, size: u64, byte: u8) -> CliResult<()> {
    let b = [byte];
    let mut a = va;
    let end = va + size;
    while a < end {
        acc.write(a, &b).context(|| format!("write at {a:#x}"))?;
        a += PAGE;
    }
    Ok(())
}

/// Time `touch`, in ns per page.
fn timed_touch(acc: &mut Accessor, va: u64, size: u64, byte: u8) -> CliResult<f64> {
    let t = Instant::now();
    touch(acc, va, size, byte)?;
    Ok(t.elapsed().as_nanos() as f64 / (size / PAGE) as f64)
}

/// Demand-zero faults into recycled frames.
///
/// With `let_zeroer_finish`, each timed run starts once the background
/// zeroing thread has zeroed the frames the previous unmap freed (the arena
/// is "warm": recycled and pre-zeroed); without, it starts right after the
/// unmap, racing the zeroer, so most faults zero their frame themselves.
pub fn fault_warm(size: u64, reps: usize, let_zeroer_finish: bool) -> CliResult<Vec<f64>> {
    let m = machine(size)?;
    let mm = new_mm(&m)?;
    let mut acc = mm.accessor();
    let va = map(&mm, size)?;
    touch(&mut acc, va, size, 1)?;
    unmap(&mm, va, size)?;
    let settle = |m: &softmm::Machine| {
        if let_zeroer_finish {
            m.wait_for_prezeroing(std::time::Duration::from_secs(30));
        }
    };
    settle(&m);
    let before = m.stats();
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let va = map(&mm, size)?;
        out.push(timed_touch(&mut acc, va, size, 1)?);
        unmap(&mm, va, size)?;
        settle(&m);
    }
    let after = m.stats();
    let want = reps as u64 * (size / PAGE);
    check(after.fault_anon - before.fault_anon == want, || {
        format!("fault bench: {} demand-zero faults counted, expected {want}", after.fault_anon - before.fault_anon)
    })?;
    // A few fresh frames are possible when the thread changes CPUs and its
    // per-CPU free list is empty while another CPU's still holds frames.
    let fresh = after.frames_touched - before.frames_touched;
    check(fresh <= 1024, || format!("fault bench: warm runs took {fresh} fresh frames; they should be recycled ones"))?;
    Ok(out)
}

/// Demand-zero faults into never-touched frames: a new machine per run,
/// kept (in `keep`) until the cold measurements are over.
pub fn fault_cold(size: u64, reps: usize, keep: &mut Keep) -> CliResult<Vec<f64>> {
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let m = machine(size)?;
        let mm = new_mm(&m)?;
        let mut acc = mm.accessor();
        let va = map(&mm, size)?;
        out.push(timed_touch(&mut acc, va, size, 1)?);
        keep.hold((acc, mm, m));
    }
    Ok(out)
}

/// One COW run on `m`: a parent writes every page of a region, optionally
/// warms (maps, touches and unmaps another region of the same size, as the
/// Linux side does), forks; the child writes one byte per page, timed.
/// Returns ns per page and the parent (the child is gone).
fn cow_once(m: &Machine, size: u64, warm: bool) -> CliResult<(f64, Mm)> {
    let parent = new_mm(m)?;
    let mut pacc = parent.accessor();
    let va = map(&parent, size)?;
    touch(&mut pacc, va, size, 1)?;
    if warm {
        let w = map(&parent, size)?;
        touch(&mut pacc, w, size, 1)?;
        unmap(&parent, w, size)?;
    }
    drop(pacc);
    let child = parent.fork().context(|| "fork".into())?;
    let mut cacc = child.accessor();
    let before = m.stats();
    let ns = timed_touch(&mut cacc, va, size, 2)?;
    let copies = m.stats().fault_cow_copy - before.fault_cow_copy;
    check(copies == size / PAGE, || format!("cow bench: {copies} COW copies counted, expected {}", size / PAGE))?;
    Ok((ns, parent))
}

/// COW faults into recycled frames: one discarded run, then `reps` runs.
pub fn cow_warm(size: u64, reps: usize) -> CliResult<Vec<f64>> {
    let m = machine(size)?;
    cow_once(&m, size, true)?;
    (0..reps).map(|_| cow_once(&m, size, true).map(|(ns, _)| ns)).collect()
}

/// COW faults into fresh frames: a new machine per run, kept with its parent.
pub fn cow_cold(size: u64, reps: usize, keep: &mut Keep) -> CliResult<Vec<f64>> {
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let m = machine(size)?;
        let (ns, parent) = cow_once(&m, size, false)?;
        out.push(ns);
        keep.hold((parent, m));
    }
    Ok(out)
}

/// Bytes mapped by one PTE table.
pub const TABLE_SPAN: u64 = 2 << 20;
/// Where the fork bench maps its region: 2 MiB aligned, so a region of
/// `size` bytes spans exactly `size / 2 MiB` (rounded up) PTE tables.
const FORK_BASE: u64 = 1 << 36;

/// PTE tables a region of `size` bytes at `FORK_BASE` spans.
pub fn tables(size: u64) -> u64 {
    size.div_ceil(TABLE_SPAN)
}

/// A machine for the fork bench: its arena holds `peak` bytes of data plus
/// page tables (reserved, not touched: only used frames cost host memory).
pub fn fork_machine(peak: u64) -> CliResult<Machine> {
    let arena_bytes = peak.saturating_add(peak / 128).saturating_add(256 << 20);
    Machine::new(Config { arena_bytes, ..Config::default() })
        .context(|| format!("creating a machine with a {} arena", crate::units::bytes(arena_bytes)))
}

/// Figures of one fork policy at one size, in ns.
#[derive(Default)]
pub struct PolicyFigures {
    /// The first fork after populating (one sample).
    pub first: f64,
    /// Later forks of the same parent, per fork call.
    pub forks: Vec<f64>,
    /// Detail only: per first write of the child into a distinct PTE table.
    pub first_write: Vec<f64>,
    /// Detail only: fork plus the child's write to every page, total.
    pub write_all: Vec<f64>,
    /// Detail only: fork, the child writes every `exit_stride`-th page and
    /// exits, total.
    pub fork_exit: Vec<f64>,
}

/// The populated parent of the fork bench: every page of `[FORK_BASE,
/// FORK_BASE + size)` written, with a live accessor, as a running process has.
struct Parent {
    _acc: Accessor,
    mm: Mm,
}

fn populate(m: &Machine, size: u64) -> CliResult<Parent> {
    let mm = new_mm(m)?;
    let va = mm
        .mmap(FORK_BASE, size, Prot::RW, MapKind::Private, Placement::FixedNoReplace)
        .context(|| format!("mmap of {} at {FORK_BASE:#x}", crate::units::bytes(size)))?;
    check(va == FORK_BASE, || format!("fork bench: region mapped at {va:#x}, asked for {FORK_BASE:#x}"))?;
    let mut acc = mm.accessor();
    touch(&mut acc, va, size, 1)?;
    Ok(Parent { _acc: acc, mm })
}

/// Let the background zeroer finish with what was freed, so that it does
/// not compete with a timed run.
fn settle(m: &Machine) {
    m.wait_for_prezeroing(std::time::Duration::from_secs(30));
}

fn fork(parent: &Mm, policy: ForkPolicy) -> CliResult<Mm> {
    parent.fork_with(policy).context(|| format!("fork ({policy:?})"))
}

/// Counter deltas between two snapshots.
fn delta(a: &MachineStats, b: &MachineStats, f: impl Fn(&MachineStats) -> u64) -> i128 {
    i128::from(f(b)) - i128::from(f(a))
}

/// Page-table pages above the PTE level a region of `size` may need
/// (root, PUD, one PMD per GiB).
fn upper_tables(size: u64) -> i128 {
    i128::from(3 + size.div_ceil(1 << 30))
}

/// Check that one fork did what `policy` says: shared every PTE table of
/// the region (and copied none), or copied all of them (and shared none).
fn check_fork(policy: ForkPolicy, size: u64, b: &MachineStats, a: &MachineStats) -> CliResult<()> {
    let t = i128::from(tables(size));
    let shares = delta(b, a, |s| s.table_shares);
    let pts = delta(b, a, |s| s.page_tables);
    let forks = delta(b, a, |s| s.forks);
    let ok = forks == 1
        && match policy {
            ForkPolicy::CopyTables => shares == 0 && pts >= t && pts <= t + upper_tables(size),
            _ => shares == t && pts <= upper_tables(size),
        };
    check(ok, || {
        format!(
            "fork bench ({policy:?}, {}): {forks} forks, {shares} tables shared, {pts} page-table pages              allocated; expected 1 fork and {} over {t} PTE tables",
            crate::units::bytes(size),
            if policy == ForkPolicy::CopyTables { "copies" } else { "shares" }
        )
    })
}

/// One timed fork of `p` (the child is dropped untimed).
fn timed_fork(m: &Machine, p: &Parent, policy: ForkPolicy, size: u64) -> CliResult<f64> {
    settle(m);
    let b = m.stats();
    let t = Instant::now();
    let child = fork(&p.mm, policy)?;
    let ns = t.elapsed().as_nanos() as f64;
    let a = m.stats();
    check_fork(policy, size, &b, &a)?;
    drop(child);
    check(m.stats().shared_tables == b.shared_tables, || {
        "fork bench: tables still shared after the child exited".into()
    })?;
    Ok(ns)
}

/// The child's first write into each PTE table (one byte to the first page
/// of every 2 MiB), timed; ns per write. Under SharedTables each write
/// copies the table (unshare) and then the page (COW); under CopyTables it
/// is a COW fault.
fn first_writes(m: &Machine, p: &Parent, policy: ForkPolicy, size: u64) -> CliResult<f64> {
    let n = tables(size);
    let child = fork(&p.mm, policy)?;
    let mut acc = child.accessor();
    settle(m);
    let b = m.stats();
    let t = Instant::now();
    for i in 0..n {
        let va = FORK_BASE + i * TABLE_SPAN;
        acc.write(va, &[2]).context(|| format!("write at {va:#x}"))?;
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    let a = m.stats();
    let cows = delta(&b, &a, |s| s.fault_cow_copy);
    let copies = delta(&b, &a, |s| s.table_copies);
    let reuses = delta(&b, &a, |s| s.table_reuses);
    let want_copies = if policy == ForkPolicy::CopyTables { 0 } else { i128::from(n) };
    check(cows == i128::from(n) && copies == want_copies && reuses == 0, || {
        format!(
            "fork bench, first writes ({policy:?}): {cows} COW copies, {copies} table copies, {reuses} table              reuses; expected {n}, {want_copies}, 0"
        )
    })?;
    drop(acc);
    drop(child);
    Ok(ns)
}

/// Fork and the child's write to every page, timed together (total ns);
/// the child exits untimed.
fn fork_write_all(m: &Machine, p: &Parent, policy: ForkPolicy, size: u64) -> CliResult<f64> {
    settle(m);
    let b = m.stats();
    let t = Instant::now();
    let child = fork(&p.mm, policy)?;
    let mut acc = child.accessor();
    touch(&mut acc, FORK_BASE, size, 2)?;
    let ns = t.elapsed().as_nanos() as f64;
    let a = m.stats();
    let pages = i128::from(size / PAGE);
    let cows = delta(&b, &a, |s| s.fault_cow_copy);
    let copies = delta(&b, &a, |s| s.table_copies);
    let want_copies = if policy == ForkPolicy::CopyTables { 0 } else { i128::from(tables(size)) };
    check(cows == pages && copies == want_copies, || {
        format!(
            "fork bench, fork + write all ({policy:?}): {cows} COW copies, {copies} table copies;              expected {pages}, {want_copies}"
        )
    })?;
    drop(acc);
    drop(child);
    Ok(ns)
}

/// Pages written by a child that writes every `stride`-th page of `size`
/// bytes (from page 0), and how many PTE tables those pages lie in.
pub fn strided(size: u64, stride: u64) -> (u64, u64) {
    let stride = stride.max(1);
    let pages = size / PAGE;
    let writes = pages.div_ceil(stride);
    let mut tables = 0;
    let mut last = u64::MAX;
    for i in 0..writes {
        let t = i * stride / (TABLE_SPAN / PAGE);
        if t != last {
            tables += 1;
            last = t;
        }
    }
    (writes, tables)
}

/// Fork, the child writes one byte to every `stride`-th page and exits;
/// all of it timed (total ns), as the Linux side's fork + write + _exit +
/// waitpid.
fn fork_write_exit(m: &Machine, p: &Parent, policy: ForkPolicy, size: u64, stride: u64) -> CliResult<f64> {
    settle(m);
    let b = m.stats();
    let t = Instant::now();
    let child = fork(&p.mm, policy)?;
    let mut acc = child.accessor();
    let mut va = FORK_BASE;
    let end = FORK_BASE + size;
    while va < end {
        acc.write(va, &[2]).context(|| format!("write at {va:#x}"))?;
        va += PAGE * stride.max(1);
    }
    drop(acc);
    drop(child);
    let ns = t.elapsed().as_nanos() as f64;
    let a = m.stats();
    let (writes, touched) = strided(size, stride);
    let cows = delta(&b, &a, |s| s.fault_cow_copy);
    let copies = delta(&b, &a, |s| s.table_copies);
    let want_copies = if policy == ForkPolicy::CopyTables { 0 } else { i128::from(touched) };
    let pts = delta(&b, &a, |s| s.page_tables);
    check(
        cows == i128::from(writes) && copies == want_copies && pts == 0 && a.shared_tables == b.shared_tables,
        || {
            format!(
            "fork bench, fork + write 1 in {stride} + exit ({policy:?}): {cows} COW copies, {copies} table              copies, {pts} page tables left over; expected {writes}, {want_copies}, 0"
        )
        },
    )?;
    Ok(ns)
}

/// The fork bench at one size on `m`, for one policy: a fresh parent
/// populated with every page written, its first fork (recorded apart),
/// then `reps` forks; with `detail`, also the child's first writes, fork +
/// write every page, and fork + write every `exit_stride`-th page + exit,
/// each after one discarded run. The parent is torn down at the end.
pub fn fork_policy(
    m: &Machine,
    size: u64,
    policy: ForkPolicy,
    reps: usize,
    detail: bool,
    exit_stride: u64,
) -> CliResult<PolicyFigures> {
    let p = populate(m, size)?;
    let mut f = PolicyFigures { first: timed_fork(m, &p, policy, size)?, ..PolicyFigures::default() };
    for _ in 0..reps {
        f.forks.push(timed_fork(m, &p, policy, size)?);
    }
    if detail {
        first_writes(m, &p, policy, size)?;
        for _ in 0..reps {
            f.first_write.push(first_writes(m, &p, policy, size)?);
        }
        fork_write_all(m, &p, policy, size)?;
        for _ in 0..reps {
            f.write_all.push(fork_write_all(m, &p, policy, size)?);
        }
        fork_write_exit(m, &p, policy, size, exit_stride)?;
        for _ in 0..reps {
            f.fork_exit.push(fork_write_exit(m, &p, policy, size, exit_stride)?);
        }
    }
    drop(p);
    settle(m);
    Ok(f)
}

/// Figures of the TLB bench, in millions of loads per second per run.
pub struct TlbFigures {
    pub softmm: Vec<f64>,
    pub native: Vec<f64>,
    /// TLB misses during the timed loops (0 when the set fits the TLB).
    pub misses: u64,
}

/// A xorshift step.
#[inline(always)]
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A word index in `[0, words)` from a random value (multiply-shift).
#[inline(always)]
fn index(x: u64, words: u64) -> u64 {
    ((x >> 32) * words) >> 32
}

#[inline(never)]
fn loads_softmm(acc: &mut Accessor, base: u64, words: u64, n: u64) -> CliResult<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut sum = 0u64;
    for _ in 0..n {
        let a = base + index(next(&mut x), words) * 8;
        sum = sum.wrapping_add(acc.load_u64(a).map_err(|e| CliError(format!("load at {a:#x}: {e}")))?);
    }
    Ok(sum)
}

#[inline(never)]
fn loads_native(mem: &[u64], n: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut sum = 0u64;
    let words = mem.len() as u64;
    for _ in 0..n {
        let i = index(next(&mut x), words) as usize;
        sum = sum.wrapping_add(mem.get(i).copied().unwrap_or(0));
    }
    sum
}

/// Random aligned 8-byte loads over `size` bytes through one accessor (one
/// core), and the same loop over a plain host array for reference.
pub fn tlb(size: u64, loads: u64, reps: usize) -> CliResult<TlbFigures> {
    let m = machine(size)?;
    let mm = new_mm(&m)?;
    let mut acc = mm.accessor();
    let va = map(&mm, size)?;
    let words = size / 8;
    for w in 0..words {
        acc.store_u64(va + w * 8, w).context(|| "filling the working set".into())?;
    }
    let host: Vec<u64> = (0..words).collect();
    // One untimed pass of each fills the TLB and the caches.
    std::hint::black_box(loads_softmm(&mut acc, va, words, loads / 10 + 1)?);
    std::hint::black_box(loads_native(&host, loads / 10 + 1));
    let misses0 = acc.misses();
    let (mut softmm, mut native) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let s1 = std::hint::black_box(loads_softmm(&mut acc, va, words, loads)?);
        softmm.push(loads as f64 / t.elapsed().as_nanos() as f64 * 1e3);
        let t = Instant::now();
        let s2 = std::hint::black_box(loads_native(&host, loads));
        native.push(loads as f64 / t.elapsed().as_nanos() as f64 * 1e3);
        check(s1 == s2, || format!("tlb bench: softmm loads summed to {s1:#x}, the host array to {s2:#x}"))?;
    }
    Ok(TlbFigures { softmm, native, misses: acc.misses() - misses0 })
}

/// Figures of the read bench, in GB/s per run.
pub struct ReadFigures {
    pub softmm: Vec<f64>,
    pub memcpy: Vec<f64>,
}

/// Sequential 4 KiB page reads of `size` bytes through an accessor into one
/// buffer, and the same copies from a host mapping (huge-page advised, as
/// softmm's arena is) with plain memcpy, alternating, `passes` passes per run.
pub fn read(size: u64, passes: u64, reps: usize) -> CliResult<ReadFigures> {
    let m = machine(size)?;
    let mm = new_mm(&m)?;
    let mut acc = mm.accessor();
    let va = map(&mm, size)?;
    let pages = size / PAGE;
    let mut host = super::linux::region(size, true)?;
    for i in 0..pages {
        let b = (i % 251) as u8 | 1;
        acc.fill_bytes(va + i * PAGE, PAGE as usize, b).context(|| "filling the region".into())?;
        host.fill_page(i, b);
    }
    let mut buf = vec![0u8; PAGE as usize];
    let mut pass_softmm = |buf: &mut [u8]| -> CliResult<u64> {
        let mut sum = 0u64;
        for _ in 0..passes {
            for i in 0..pages {
                acc.read(va + i * PAGE, buf).context(|| "read".into())?;
                std::hint::black_box(&mut *buf);
                sum += u64::from(buf[(i % PAGE) as usize]);
            }
        }
        Ok(sum)
    };
    let pass_memcpy = |buf: &mut [u8]| -> u64 {
        let mut sum = 0u64;
        for _ in 0..passes {
            for i in 0..pages {
                buf.copy_from_slice(host.page(i));
                std::hint::black_box(&mut *buf);
                sum += u64::from(buf[(i % PAGE) as usize]);
            }
        }
        sum
    };
    pass_softmm(&mut buf)?;
    pass_memcpy(&mut buf);
    let bytes = (size * passes) as f64;
    let (mut softmm, mut memcpy) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let s1 = pass_softmm(&mut buf)?;
        softmm.push(bytes / t.elapsed().as_nanos() as f64);
        let t = Instant::now();
        let s2 = pass_memcpy(&mut buf);
        memcpy.push(bytes / t.elapsed().as_nanos() as f64);
        check(s1 == s2, || format!("read bench: softmm read back checksum {s1}, the host copy {s2}"))?;
    }
    Ok(ReadFigures { softmm, memcpy })
}
