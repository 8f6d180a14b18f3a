//! `softmm gen`: random traces for differential testing.
//!
//! The generator is seeded SplitMix64, written out here rather than taken
//! from a crate so that a seed names the same trace forever (crates' RNGs
//! do not promise value stability across versions). Traces stay inside a
//! 4 MiB window at 0x1000_0000 (well away from the Linux runner's own
//! memory), use at most four address spaces, and only name spaces that exist.

use super::parse::{Op, TKind, TProt};
use softmm::Advice;

/// SplitMix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const BASE: u64 = 0x1000_0000;
const WINDOW_PAGES: u64 = 1024;
const NAMES: [&str; 6] = ["A", "B", "C", "D", "E", "F"];

/// Which kind of traces to generate. A profile and a seed name one trace
/// forever: profiles are added, never changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Profile {
    /// A 4 MiB window, short ranges, a few hot pages (the original mix).
    #[default]
    Small,
    /// A 32 MiB window (16 PTE tables) where ranges often start at, end at
    /// or cover whole 2 MiB tables: exercises sharing, unsharing and
    /// dropping whole page tables across forks.
    Wide,
    /// The small mix plus futex waits and wakes on a few hot words (waiter
    /// names reused, so a wait may replace an earlier waiter), with writes
    /// that set those words: futex keys across fork, COW, munmap and exit.
    Futex,
    /// The small mix with version 2's operations: every madvise advice but
    /// PAGEOUT (whose outcome depends on swap), protections with exec,
    /// `maps`, `mlock`, `munlock` and `locked`.
    Api,
    /// The small mix, private memory only, with mremap: shrinking, growing,
    /// moving (to a chosen address or one in the window) and DONTUNMAP.
    /// (Shared memory grown past its object faults with SIGBUS, which the
    /// trace format's runners do not compare.)
    Remap,
    /// The small mix with scratch files: two files (one of a size that
    /// ends inside a page) mapped shared into the window, pwrite, pread,
    /// truncate (also below mapped pages: SIGBUS), msync and `maps`,
    /// among fork, COW, mprotect, DONTNEED, mremap and futex waits and
    /// wakes (also on file pages); a third of the file mappings private.
    Files,
    /// softmm only: the api mix (without the advice and locks whose effect a
    /// fork drops: DONTFORK, WIPEONFORK, mlock) with mremap of the remap mix,
    /// snapshots, restores and `dirty`; no futex waits (the oracle, a fork
    /// taken at the snapshot, has no threads), a third of the ranges in a
    /// second window across a page-table boundary. `softmm fuzz` checks each
    /// restored space against a fork taken at its snapshot.
    Snapshot,
    /// The files mix whose madvise ranges take any advice, PAGEOUT (a
    /// quarter of them) and COLD included: file and shared-memory pages
    /// mapped once are unmapped and dropped or kept as Linux does without
    /// swap. `softmm fuzz` runs it only on a host without active swap (where
    /// Linux's PAGEOUT of anonymous memory does nothing, as softmm's
    /// replay, which has no swap device).
    FileAdvice,
}

/// `Files`: the scratch files' names and first sizes.
const FILES: [(&str, u64); 2] = [("X", 24 * 4096), ("Y", 9 * 4096 + 0x321)];

/// Generate a trace of `ops` operations from `seed` with a profile.
pub fn generate_with(seed: u64, ops: usize, profile: Profile) -> Vec<Op> {
    let mut r = Rng::new(seed);
    let shape = profile;
    let mut live: Vec<String> = vec!["A".into()];
    let mut out = vec![Op::New { a: "A".into() }];
    let mut next_name = 1;
    // The snapshots taken so far and the space each is of.
    let mut snaps: Vec<(String, String)> = Vec::new();
    // Start with something mapped so most operations do something.
    let first_len = if shape == Profile::Wide { 8 << 20 } else { 64 * 4096 };
    out.push(Op::Mmap { a: "A".into(), addr: BASE, len: first_len, prot: TProt::Rw, kind: TKind::Private });
    if shape == Profile::Snapshot {
        // A second window across the first page-table boundary.
        let (addr, len) = (BASE + (TABLE_PAGES - 32) * 4096, 64 * 4096);
        out.push(Op::Mmap { a: "A".into(), addr, len, prot: TProt::Rw, kind: TKind::Private });
    }
    let files = matches!(shape, Profile::Files | Profile::FileAdvice);
    if files {
        for (f, len) in FILES {
            out.push(Op::File { f: f.into(), len, byte: r.below(256) as u8 });
        }
        let (addr, len) = (BASE + 8 * 4096, 16 * 4096);
        let (prot, kind, f) = (TProt::Rw, TKind::Shared, FILES[0].0.into());
        out.push(Op::MmapFile { a: "A".into(), addr, len, prot, kind, f, off: 0 });
    }
    while out.len() < ops {
        if live.is_empty() {
            let a = fresh(&mut next_name);
            live.push(a.clone());
            out.push(Op::New { a });
            continue;
        }
        let a = live[r.below(live.len() as u64) as usize].clone();
        if shape == Profile::Futex && r.chance(30) {
            out.push(futex_op(&mut r, a));
            continue;
        }
        if shape == Profile::Remap && r.chance(15) {
            out.push(remap_op(&mut r, a));
            continue;
        }
        if files {
            let op = match r.below(100) {
                0..=7 => Some(futex_op(&mut r, a.clone())),
                8..=15 => Some(remap_op(&mut r, a.clone())),
                16..=45 => Some(file_op(&mut r, a.clone())),
                _ => None,
            };
            if let Some(op) = op {
                out.push(op);
                continue;
            }
        }
        if shape == Profile::Snapshot && r.chance(15) {
            out.push(snapshot_op(&mut r, a, &mut snaps));
            continue;
        }
        if shape == Profile::Snapshot && r.chance(8) {
            out.push(remap_op(&mut r, a));
            continue;
        }
        let op = match r.below(100) {
            0..=11 => Op::Mmap {
                a,
                addr: addr(&mut r, shape),
                len: len(&mut r, shape),
                prot: prot(&mut r, shape),
                kind: if shape == Profile::Remap { TKind::Private } else { kind(&mut r) },
            },
            12..=17 => Op::Munmap { a, addr: addr(&mut r, shape), len: len(&mut r, shape) },
            18..=24 => {
                Op::Mprotect { a, addr: addr(&mut r, shape), len: len(&mut r, shape), prot: prot(&mut r, shape) }
            }
            25..=28 => {
                let (addr, len) = (addr(&mut r, shape), len(&mut r, shape));
                let advice = match shape {
                    Profile::Api => advice(&mut r),
                    Profile::Snapshot => snapshot_advice(&mut r),
                    Profile::FileAdvice if r.chance(25) => Advice::PageOut,
                    Profile::FileAdvice => advice(&mut r),
                    _ => Advice::DontNeed,
                };
                Op::Madvise { a, addr, len, advice }
            }
            29..=34 if live.len() < 4 => {
                let b = fresh(&mut next_name);
                live.push(b.clone());
                Op::Fork { a, b }
            }
            35..=37 if live.len() > 1 => {
                live.retain(|x| *x != a);
                Op::Exit { a }
            }
            38..=57 => {
                let n = 1 + r.below(16) as usize;
                let bytes = (0..n).map(|_| r.below(256) as u8).collect();
                Op::Write { a, addr: addr(&mut r, shape) + r.below(4096), bytes }
            }
            58..=64 => Op::Fill { a, addr: addr(&mut r, shape), len: 1 + r.below(3 * 4096), byte: r.below(256) as u8 },
            65..=79 => Op::Read { a, addr: addr(&mut r, shape) + r.below(4096), len: 1 + r.below(24) },
            80..=89 => Op::Phys { a, addr: addr(&mut r, shape) },
            90..=99 if shape == Profile::Api => api_op(&mut r, a),
            90..=94 if shape == Profile::Snapshot => Op::Maps { a },
            _ => Op::Smaps { a, addr: addr(&mut r, shape) },
        };
        out.push(op);
    }
    out
}

/// `Api`: smaps, maps, or a memory lock operation.
fn api_op(r: &mut Rng, a: String) -> Op {
    let shape = Profile::Api;
    match r.below(10) {
        0..=3 => Op::Smaps { a, addr: addr(r, shape) },
        4..=5 => Op::Maps { a },
        6..=7 => Op::Mlock { a, addr: addr(r, shape), len: len(r, shape) },
        8 => Op::Munlock { a, addr: addr(r, shape), len: len(r, shape) },
        _ => Op::Locked { a, addr: addr(r, shape) },
    }
}

/// `Snapshot`: take a snapshot of `a`, restore one of `a`'s, or ask
/// which pages changed since.
fn snapshot_op(r: &mut Rng, a: String, snaps: &mut Vec<(String, String)>) -> Op {
    let mine: Vec<&String> = snaps.iter().filter(|(_, of)| *of == a).map(|(s, _)| s).collect();
    match r.below(10) {
        4..=7 if !mine.is_empty() => {
            let s = mine[r.below(mine.len() as u64) as usize].clone();
            Op::Restore { a, s }
        }
        8..=9 => Op::Dirty { a, addr: addr(r, Profile::Snapshot), len: len(r, Profile::Snapshot) },
        _ => {
            let s = format!("S{}", snaps.len());
            snaps.push((s.clone(), a.clone()));
            Op::Snapshot { a, s }
        }
    }
}

/// `Snapshot`: `advice` but DONTFORK and WIPEONFORK, whose effects a
/// snapshot keeps and a fork does not.
fn snapshot_advice(r: &mut Rng) -> Advice {
    match advice(r) {
        Advice::DontFork | Advice::WipeOnFork => Advice::DontNeed,
        a => a,
    }
}

/// A madvise advice: DONTNEED half the time, else any other whose outcome
/// does not depend on swap (not PAGEOUT; COLD changes nothing a trace sees).
fn advice(r: &mut Rng) -> Advice {
    const OTHERS: [Advice; 10] = [
        Advice::Free,
        Advice::WillNeed,
        Advice::Cold,
        Advice::PopulateRead,
        Advice::PopulateWrite,
        Advice::Remove,
        Advice::DontFork,
        Advice::DoFork,
        Advice::WipeOnFork,
        Advice::KeepOnFork,
    ];
    if r.chance(50) {
        Advice::DontNeed
    } else {
        OTHERS[r.below(OTHERS.len() as u64) as usize]
    }
}

/// `Remap`: an mremap of a window range, as often without resizing as
/// with; MAYMOVE mostly, FIXED to a window page sometimes, DONTUNMAP
/// rarely (with unequal sizes it is EINVAL).
fn remap_op(r: &mut Rng, a: String) -> Op {
    let shape = Profile::Remap;
    let (old, old_len) = (addr(r, shape), len(r, shape));
    let new_len = if r.chance(50) { old_len } else { len(r, shape) };
    let maymove = r.chance(75);
    let fixed = if r.chance(35) { Some(addr(r, shape)) } else { None };
    let dontunmap = r.chance(15);
    Op::Mremap { a, old, old_len, new_len, flags: crate::trace::parse::RemapArgs { maymove, fixed, dontunmap } }
}

/// `Files`: an operation on a scratch file or a file mapping. Offsets
/// and lengths run a little past the files' first sizes, so reads and
/// writes reach the end and past it, and truncation cuts mapped pages.
fn file_op(r: &mut Rng, a: String) -> Op {
    let shape = Profile::Files;
    let (f, size) = FILES[if r.chance(70) { 0 } else { 1 }];
    let f = f.to_string();
    let file_offset = |r: &mut Rng| r.below(size + 2 * 4096);
    match r.below(20) {
        0..=5 => {
            let (addr, len, prot) = (addr(r, shape), len(r, shape), prot(r, shape));
            let off = r.below(size / 4096 + 4) * 4096;
            // One in three private: copy on write of the file's pages.
            let kind = if r.chance(33) { TKind::Private } else { TKind::Shared };
            Op::MmapFile { a, addr, len, prot, kind, f, off }
        }
        6..=9 => {
            let off = file_offset(r);
            // Sometimes a run of one byte across a page boundary.
            let bytes = if r.chance(10) {
                vec![r.below(256) as u8; 1 + r.below(4096 + 64) as usize]
            } else {
                (0..1 + r.below(16)).map(|_| r.below(256) as u8).collect()
            };
            Op::Pwrite { f, off, bytes }
        }
        10..=12 => Op::Pread { f, off: file_offset(r), len: 1 + r.below(24) },
        13..=14 => {
            let len = if r.chance(50) { r.below(size / 4096 + 3) * 4096 } else { file_offset(r) };
            Op::Truncate { f, len }
        }
        15..=17 => Op::Msync { a, addr: addr(r, shape), len: len(r, shape) },
        _ => Op::Maps { a },
    }
}

/// `Futex`: a wait, a wake, or a store of a small value, on one of 8 words
/// of the 4 hottest pages.
fn futex_op(r: &mut Rng, a: String) -> Op {
    let addr = BASE + r.below(4) * 4096 + r.below(8) * 4;
    match r.below(10) {
        0..=3 => Op::FutexWait { a, addr, val: r.below(2) as u32, w: format!("W{}", r.below(4)) },
        4..=6 => Op::FutexWake { a, addr, n: r.below(3) as u32 },
        _ => Op::Write { a, addr, bytes: (r.below(2) as u32).to_ne_bytes().to_vec() },
    }
}

fn fresh(next: &mut usize) -> String {
    let n = *next;
    *next += 1;
    match NAMES.get(n) {
        Some(s) => s.to_string(),
        None => format!("P{n}"),
    }
}

fn addr(r: &mut Rng, shape: Profile) -> u64 {
    if shape == Profile::Wide {
        return wide_addr(r);
    }
    // Snapshots: a third of the ranges in the window across the first
    // page-table boundary (a restore works one 2 MiB span at a time).
    if shape == Profile::Snapshot && r.chance(33) {
        return BASE + (TABLE_PAGES - 32 + r.below(64)) * 4096;
    }
    // Favour a few hot pages so that operations overlap.
    let page = if r.chance(50) { r.below(16) } else { r.below(WINDOW_PAGES) };
    BASE + page * 4096
}

fn len(r: &mut Rng, shape: Profile) -> u64 {
    if shape == Profile::Wide {
        return wide_len(r);
    }
    (1 + if r.chance(70) { r.below(8) } else { r.below(128) }) * 4096
}

const TABLE_PAGES: u64 = 512;
const WIDE_TABLES: u64 = 16;

/// `Wide`: on a table boundary, next to one, or anywhere in 32 MiB.
fn wide_addr(r: &mut Rng) -> u64 {
    let table = r.below(WIDE_TABLES);
    let page = match r.below(10) {
        0..=3 => table * TABLE_PAGES,
        4..=5 => table * TABLE_PAGES + TABLE_PAGES - 1 - r.below(4),
        _ => r.below(WIDE_TABLES * TABLE_PAGES),
    };
    BASE + page * 4096
}

/// `Wide`: whole tables, a table and a bit, or a few pages.
fn wide_len(r: &mut Rng) -> u64 {
    let pages = match r.below(10) {
        0..=3 => (1 + r.below(3)) * TABLE_PAGES,
        4..=5 => (1 + r.below(2)) * TABLE_PAGES + 1 + r.below(8),
        _ => 1 + r.below(16),
    };
    pages * 4096
}

fn prot(r: &mut Rng, shape: Profile) -> TProt {
    if matches!(shape, Profile::Api | Profile::Snapshot) {
        // Never `x` alone: with protection keys Linux makes such memory
        // unreadable, and traces never load from it (TRACE.md, version 2).
        return match r.below(10) {
            0..=4 => TProt::Rw,
            5 => TProt::Rwx,
            6 => TProt::R,
            7 => TProt::Rx,
            8 => TProt::W,
            _ => TProt::None,
        };
    }
    match r.below(10) {
        0..=5 => TProt::Rw,
        6..=7 => TProt::R,
        8 => TProt::W,
        _ => TProt::None,
    }
}

fn kind(r: &mut Rng) -> TKind {
    if r.chance(25) {
        TKind::Shared
    } else {
        TKind::Private
    }
}

/// Shrink a failing trace: drop operations one at a time (and then in
/// halves) while `fails` still holds, keeping the trace well formed
/// (operations on a name need its `new`/`fork` before them).
pub fn minimize(ops: &[Op], mut fails: impl FnMut(&[Op]) -> bool) -> Vec<Op> {
    let mut cur: Vec<Op> = ops.to_vec();
    let mut chunk = (cur.len() / 2).max(1);
    loop {
        let mut shrunk = false;
        let mut i = 0;
        while i < cur.len() {
            let end = (i + chunk).min(cur.len());
            let mut cand = cur.clone();
            cand.drain(i..end);
            if well_formed(&cand) && fails(&cand) {
                cur = cand;
                shrunk = true;
            } else {
                i += chunk;
            }
        }
        // Removing a later operation (an exit, say) can make an earlier one
        // removable: repeat single-operation passes until nothing goes.
        if chunk == 1 && !shrunk {
            return cur;
        }
        chunk = (chunk / 2).max(1);
    }
}

/// The scratch file an operation uses, other than `file` itself.
fn file_of(op: &Op) -> Option<&str> {
    match op {
        Op::Pwrite { f, .. } | Op::Pread { f, .. } | Op::Truncate { f, .. } | Op::MmapFile { f, .. } => Some(f),
        _ => None,
    }
}

/// Every name is created before use and not used after its exit; every
/// file is made (once) before it is used; a restore names a snapshot taken
/// before it.
pub fn well_formed(ops: &[Op]) -> bool {
    let mut live: std::collections::HashSet<&str> = Default::default();
    let mut files: std::collections::HashSet<&str> = Default::default();
    let mut snaps: std::collections::HashSet<&str> = Default::default();
    for op in ops {
        match op {
            Op::Snapshot { a, s } => {
                if !live.contains(a.as_str()) {
                    return false;
                }
                snaps.insert(s);
            }
            Op::Restore { a, s } => {
                if !live.contains(a.as_str()) || !snaps.contains(s.as_str()) {
                    return false;
                }
            }
            Op::New { a } => {
                if !live.insert(a) {
                    return false;
                }
            }
            Op::Fork { a, b } => {
                if !live.contains(a.as_str()) || !live.insert(b) {
                    return false;
                }
            }
            Op::Exit { a } => {
                if !live.remove(a.as_str()) {
                    return false;
                }
            }
            Op::File { f, .. } => {
                if !files.insert(f) {
                    return false;
                }
            }
            op => {
                if op.space().is_some_and(|a| !live.contains(a)) {
                    return false;
                }
                if file_of(op).is_some_and(|f| !files.contains(f)) {
                    return false;
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_trace_and_well_formed() {
        let a = generate_with(7, 200, Profile::Small);
        assert_eq!(a, generate_with(7, 200, Profile::Small));
        assert_ne!(a, generate_with(8, 200, Profile::Small));
        assert!(well_formed(&a));
        assert_eq!(a.len(), 200);
        let w = generate_with(7, 200, Profile::Wide);
        assert_ne!(a, w);
        assert!(well_formed(&w));
    }

    #[test]
    fn file_advice_profile_is_the_files_mix_with_every_advice() {
        let pageouts = |t: &[Op]| t.iter().filter(|o| matches!(o, Op::Madvise { advice: Advice::PageOut, .. })).count();
        let t = generate_with(7, 2000, Profile::FileAdvice);
        assert!(well_formed(&t));
        assert!(matches!(&t[2], Op::File { f, .. } if f == "X"));
        assert!(t.iter().any(|o| matches!(o, Op::MmapFile { .. })));
        assert!(pageouts(&t) > 3, "{} PAGEOUTs", pageouts(&t));
        assert!(t.iter().any(|o| matches!(o, Op::Madvise { advice: Advice::Cold, .. })));
        assert_eq!(pageouts(&generate_with(7, 2000, Profile::Files)), 0);
    }

    #[test]
    fn files_profile_makes_files_first_and_uses_only_those() {
        let t = generate_with(5, 400, Profile::Files);
        assert!(well_formed(&t));
        assert_eq!(t.len(), 400);
        assert!(matches!(&t[2], Op::File { f, .. } if f == "X"));
        assert!(matches!(&t[3], Op::File { f, .. } if f == "Y"));
        let count = |p: fn(&Op) -> bool| t.iter().filter(|o| p(o)).count();
        for (what, n) in [
            ("shared file mappings", count(|o| matches!(o, Op::MmapFile { kind: TKind::Shared, .. }))),
            ("private file mappings", count(|o| matches!(o, Op::MmapFile { kind: TKind::Private, .. }))),
            ("pwrites", count(|o| matches!(o, Op::Pwrite { .. }))),
            ("preads", count(|o| matches!(o, Op::Pread { .. }))),
            ("truncations", count(|o| matches!(o, Op::Truncate { .. }))),
            ("msyncs", count(|o| matches!(o, Op::Msync { .. }))),
            ("mremaps", count(|o| matches!(o, Op::Mremap { .. }))),
            ("futex waits", count(|o| matches!(o, Op::FutexWait { .. }))),
            ("forks", count(|o| matches!(o, Op::Fork { .. }))),
        ] {
            assert!(n > 0, "no {what} in 400 operations");
        }
        // A file used before it is made, or made twice, is not well formed.
        let mut late = t.clone();
        late.remove(2);
        assert!(!well_formed(&late));
        let mut twice = t.clone();
        twice.insert(4, t[2].clone());
        assert!(!well_formed(&twice));
    }

    #[test]
    fn minimize_keeps_the_failure() {
        let t = generate_with(3, 100, Profile::Small);
        // An operation of the first space, which needs only its `new`
        // (one in a forked space needs its chain of forks too).
        let first_space = |o: &&Op| o.space() == Some("A") && !matches!(o, Op::New { .. } | Op::Fork { .. });
        let target = t[50..].iter().find(first_space).cloned().expect("an operation of A");
        let small = minimize(&t, |c| c.contains(&target));
        assert!(small.contains(&target));
        // What is left: the target, and the `new` and forks that made its
        // space (names are never reused, so each has one parent).
        let parent = |x: &str| {
            t.iter().find_map(|op| match op {
                Op::Fork { a, b } if b == x => Some(a.clone()),
                _ => None,
            })
        };
        let mut chain = 1;
        let mut space = target.space().map(str::to_string);
        while let Some(p) = space.as_deref().and_then(parent) {
            chain += 1;
            space = Some(p);
        }
        assert!(small.len() <= chain + 1, "{small:?}");
        assert!(well_formed(&small));
    }
}
