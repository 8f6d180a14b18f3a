//! The oracle of snapshots (TRACE.md): a space restored to S answers every
//! later operation as a fork of it taken at the snapshot would. No Linux
//! is needed: a trace runs twice on softmm, once as written (the *restored*
//! run) and once with each `snapshot A as S` replaced by a fork of A into a
//! hidden space, and each `restore A S` by A's exit and a fork of that
//! hidden space under A's name (the *fork* run). The hidden fork maps the
//! frames the snapshot holds, so sharing and smaps counts match.
//!
//! Compared: every output line (`phys` by sharing, as `softmm diff` does;
//! `dirty` is not, a fork keeps no log); after each restore and at the end,
//! for every live space, `maps`, `smaps` of each VMA, and
//! which pages of its named ranges share a frame with which; at the end
//! only (a read faults pages in, which would change what later restores
//! see), the bytes of every page of its named ranges.
//!
//! Residency may differ, one way: a restore leaves the entries of pages
//! unchanged since the snapshot in place, where a fork maps shared memory
//! and never-written private memory (the zero frame) only on fault. So a
//! page the restored run maps to the zero frame or to shared memory may be
//! `none` in the fork run, and `smaps` of a shared mapping compares only
//! `anon` and `swap` (its resident counters follow residency).
//!
//! VMA boundaries may differ too: a restored space is still the space the
//! snapshot was taken of, whose VMAs link their own anon_vmas and merge
//! with new neighbours, where a fork's VMAs also link their parent's and
//! do not (Linux's rule, `merge_fork_child_no`). So `maps` lines are
//! compared with adjacent entries of equal permissions and kind joined,
//! `smaps` only where the VMA holding the address has the same bounds, and
//! when the bounds differ, two failed `mremap`s agree whatever their errnos.

use super::exec_softmm::{SoftmmOptions, SoftmmRunner};
use super::parse::Op;
use std::collections::HashMap;

/// Where the restored run and the fork run first disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The 1-based index of the operation after which they disagree.
    pub line: usize,
    pub op: String,
    pub restored: String,
    pub fork: String,
    pub why: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}\n  restored: {}\n  fork:     {}", self.line, self.op, self.restored, self.fork)?;
        if !self.why.is_empty() {
            write!(f, "\n  ({})", self.why)?;
        }
        Ok(())
    }
}

/// A disagreement: (restored run's line, fork run's line, why).
type Differs = (String, String, String);

/// Run `ops` both ways; `Ok(None)` when they agree throughout. A trace
/// error (a malformed trace, a runner that could not start) is `Err`.
pub fn check(ops: &[Op], opts: &SoftmmOptions) -> Result<Option<Mismatch>, String> {
    let mut runs = Runs::new(opts)?;
    for (i, op) in ops.iter().enumerate() {
        let mismatch =
            |(restored, fork, why): Differs| Mismatch { line: i + 1, op: op.to_string(), restored, fork, why };
        if let Some(d) = runs.step(op).map_err(|e| format!("line {}: {e}", i + 1))? {
            return Ok(Some(mismatch(d)));
        }
        if matches!(op, Op::Restore { .. }) {
            if let Some(d) = runs.probe(false)? {
                return Ok(Some(mismatch(d)));
            }
        }
    }
    let end =
        |(restored, fork, why): Differs| Mismatch { line: ops.len(), op: "(end of trace)".into(), restored, fork, why };
    Ok(runs.probe(true)?.map(end))
}

/// A space's identity: its name and how many times the name was created.
type Owner = (String, u64);

struct Runs {
    restored: SoftmmRunner,
    fork: SoftmmRunner,
    /// Snapshot name -> the fork run's hidden space and whose snapshot it is.
    hidden: HashMap<String, (String, Owner)>,
    made: usize,
    epoch: HashMap<String, u64>,
    live: Vec<String>,
    /// (space, page) pairs `phys` asked about, for sharing checks.
    queried: Vec<(String, u64)>,
}

impl Runs {
    fn new(opts: &SoftmmOptions) -> Result<Runs, String> {
        Ok(Runs {
            restored: SoftmmRunner::new(opts.clone())?,
            fork: SoftmmRunner::new(opts.clone())?,
            hidden: HashMap::new(),
            made: 0,
            epoch: HashMap::new(),
            live: Vec::new(),
            queried: Vec::new(),
        })
    }

    fn owner(&self, a: &str) -> Owner {
        (a.to_string(), self.epoch.get(a).copied().unwrap_or(0))
    }

    fn born(&mut self, a: &str) {
        *self.epoch.entry(a.to_string()).or_default() += 1;
        self.live.push(a.to_string());
    }

    fn step(&mut self, op: &Op) -> Result<Option<Differs>, String> {
        let same_vmas = op.space().is_none_or(|a| self.restored.vmas(a) == self.fork.vmas(a));
        let ro = self.restored.run(op)?;
        let fo = match op {
            Op::Snapshot { a, s } => self.fork_snapshot(a, s)?,
            Op::Restore { a, s } => self.fork_restore(a, s)?,
            Op::Dirty { .. } => ro.clone(),
            _ => self.fork.run(op)?,
        };
        match op {
            Op::New { a } | Op::Fork { b: a, .. } if ro == "ok" => self.born(a),
            Op::Exit { a } => {
                self.live.retain(|x| x != a);
                self.queried.retain(|(b, _)| b != a);
            }
            _ => {}
        }
        match op {
            Op::Phys { a, addr } => self.phys(a, addr & !0xfff, ro, fo),
            Op::Smaps { a, addr } => Ok(self.smaps_differ(a, *addr, ro, fo)),
            Op::Maps { .. } => Ok((joined(&ro) != joined(&fo)).then(|| (ro, fo, String::new()))),
            // mremap's errno depends on VMA boundaries (several VMAs: EFAULT).
            Op::Mremap { .. } if !same_vmas && ro.starts_with("err") && fo.starts_with("err") => Ok(None),
            _ => Ok((ro != fo).then(|| (ro, fo, String::new()))),
        }
    }

    /// Whether `phys` lines differ beyond what residency explains: the
    /// restored run maps the zero frame or shared memory, the fork run
    /// nothing.
    fn residency_differs(&self, a: &str, page: u64, ro: &str, fo: &str) -> bool {
        if ro.starts_with("frame") == fo.starts_with("frame") {
            return false;
        }
        !(fo == "none" && (ro == "frame 0" || self.restored.in_shared_vma(a, page)))
    }

    /// `smaps` lines that differ beyond residency (module docs).
    fn smaps_differ(&self, a: &str, addr: u64, ro: String, fo: String) -> Option<Differs> {
        let view = |line: &str| -> String {
            line.split(' ').filter(|f| f.starts_with("anon=") || f.starts_with("swap=")).collect::<Vec<_>>().join(" ")
        };
        let holding = |vmas: Vec<(u64, u64)>| vmas.into_iter().find(|&(s, e)| (s..e).contains(&addr));
        if holding(self.restored.vmas(a)) != holding(self.fork.vmas(a)) {
            return None;
        }
        let differ = if self.restored.in_shared_vma(a, addr) { view(&ro) != view(&fo) } else { ro != fo };
        differ.then(|| (ro, fo, String::new()))
    }

    /// The fork run's `snapshot A as S`: a fork of A into a hidden space.
    fn fork_snapshot(&mut self, a: &str, s: &str) -> Result<String, String> {
        if let Some((old, _)) = self.hidden.remove(s) {
            self.fork.run(&Op::Exit { a: old })?;
        }
        let name = format!("Zsnap{}", self.made);
        self.made += 1;
        let line = self.fork.run(&Op::Fork { a: a.into(), b: name.clone() })?;
        if line == "ok" {
            self.hidden.insert(s.into(), (name, self.owner(a)));
        }
        Ok(line)
    }

    /// The fork run's `restore A S`: A exits, and a fork of S's hidden space
    /// takes its name.
    fn fork_restore(&mut self, a: &str, s: &str) -> Result<String, String> {
        let (name, owner) = self.hidden.get(s).cloned().ok_or_else(|| format!("no snapshot named `{s}`"))?;
        if owner != self.owner(a) {
            return Ok("err EINVAL".into());
        }
        self.fork.run(&Op::Exit { a: a.into() })?;
        self.fork.run(&Op::Fork { a: name, b: a.into() })
    }

    /// `phys A X` in both runs: present in both or neither, and sharing a
    /// frame with the same pages asked about before.
    fn phys(&mut self, a: &str, page: u64, ro: String, fo: String) -> Result<Option<Differs>, String> {
        if self.residency_differs(a, page, &ro, &fo) {
            return Ok(Some((ro, fo, String::new())));
        }
        if ro.starts_with("frame") && fo.starts_with("frame") {
            for (b, y) in self.queried.clone() {
                if (b.as_str(), y) == (a, page) {
                    continue;
                }
                let q = Op::Phys { a: b.clone(), addr: y };
                let (rq, fq) = (self.restored.run(&q)?, self.fork.run(&q)?);
                if !rq.starts_with("frame") || !fq.starts_with("frame") {
                    continue;
                }
                let (r_same, f_same) = (rq == ro, fq == fo);
                if r_same != f_same {
                    let (yes, no) = if r_same { ("restored", "fork") } else { ("fork", "restored") };
                    let why =
                        format!("{a} {page:#x} shares a frame with {b} {y:#x} in the {yes} run, not in the {no} run");
                    return Ok(Some((ro, fo, why)));
                }
            }
        }
        if !self.queried.iter().any(|(b, y)| b == a && *y == page) {
            self.queried.push((a.to_string(), page));
        }
        Ok(None)
    }

    /// Compare every live space: maps, VMA starts, smaps, frame sharing
    /// over the named ranges, and with `bytes` their contents.
    fn probe(&mut self, bytes: bool) -> Result<Option<Differs>, String> {
        let mut live = self.live.clone();
        live.sort();
        for a in &live {
            let both = |runs: &mut Runs, op: &Op| -> Result<(String, String), String> {
                Ok((runs.restored.run(op)?, runs.fork.run(op)?))
            };
            let (r, f) = both(self, &Op::Maps { a: a.clone() })?;
            if joined(&r) != joined(&f) {
                return Ok(Some((r, f, format!("maps {a}"))));
            }
            for (at, _) in self.restored.vmas(a) {
                let (r, f) = both(self, &Op::Smaps { a: a.clone(), addr: at })?;
                if let Some((r, f, _)) = self.smaps_differ(a, at, r, f) {
                    return Ok(Some((r, f, format!("smaps {a} {at:#x}"))));
                }
            }
        }
        if let Some(d) = self.sharing(&live)? {
            return Ok(Some(d));
        }
        if bytes {
            for a in &live {
                for page in self.named_pages(a) {
                    let op = Op::Read { a: a.clone(), addr: page, len: 4096 };
                    let (r, f) = (self.restored.run(&op)?, self.fork.run(&op)?);
                    if r != f {
                        return Ok(Some((r, f, format!("read {a} {page:#x} 4096"))));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The pages of `a`'s named ranges, in address order.
    fn named_pages(&self, a: &str) -> Vec<u64> {
        let mut pages: Vec<u64> =
            self.restored.named_ranges(a).into_iter().flat_map(|(s, e)| (s..e).step_by(4096)).collect();
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// Whether the pages of the live spaces' named ranges share frames the
    /// same way in both runs (frame numbers differ between runs; which
    /// pages share one must not).
    fn sharing(&mut self, live: &[String]) -> Result<Option<Differs>, String> {
        let mut r_to_f: HashMap<String, (String, String)> = HashMap::new();
        let mut f_to_r: HashMap<String, (String, String)> = HashMap::new();
        for a in live {
            for page in self.named_pages(a) {
                let op = Op::Phys { a: a.clone(), addr: page };
                let (r, f) = (self.restored.run(&op)?, self.fork.run(&op)?);
                let at = format!("{a} {page:#x}");
                if self.residency_differs(a, page, &r, &f) {
                    return Ok(Some((r, f, format!("phys {at}"))));
                }
                if !r.starts_with("frame") || !f.starts_with("frame") {
                    continue;
                }
                let seen_r = r_to_f.entry(r.clone()).or_insert_with(|| (f.clone(), at.clone())).clone();
                let seen_f = f_to_r.entry(f.clone()).or_insert_with(|| (r.clone(), at.clone())).clone();
                if seen_r.0 != f {
                    let why = format!("{at} shares a frame with {} in the restored run, not in the fork run", seen_r.1);
                    return Ok(Some((r, f, why)));
                }
                if seen_f.0 != r {
                    let why = format!("{at} shares a frame with {} in the fork run, not in the restored run", seen_f.1);
                    return Ok(Some((r, f, why)));
                }
            }
        }
        Ok(None)
    }
}

/// A `maps` line with adjacent entries of equal permissions and kind
/// joined: what it says of each page, whatever the VMA boundaries.
fn joined(line: &str) -> Vec<(u64, u64, String)> {
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    for entry in line.strip_prefix("maps ").unwrap_or("").split(';').filter(|e| !e.is_empty()) {
        let (range, rest) = entry.split_once(' ').unwrap_or((entry, ""));
        let (s, e) = range.split_once('-').unwrap_or((range, range));
        let num = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).unwrap_or(u64::MAX);
        let (s, e) = (num(s), num(e));
        match out.last_mut() {
            Some(last) if last.1 == s && last.2 == rest => last.1 = e,
            _ => out.push((s, e, rest.to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_maps_ignore_vma_boundaries_only() {
        let one = "maps 0x1000-0x3000 rw-p anon;0x3000-0x4000 r--p anon";
        let split = "maps 0x1000-0x2000 rw-p anon;0x2000-0x3000 rw-p anon;0x3000-0x4000 r--p anon";
        assert_eq!(joined(one), joined(split));
        assert_ne!(joined(one), joined("maps 0x1000-0x3000 rw-p anon;0x3000-0x4000 rw-p anon"));
        assert_ne!(joined(one), joined("maps 0x1000-0x2000 rw-p anon;0x3000-0x4000 r--p anon"));
        assert!(joined("maps").is_empty());
    }

    #[test]
    fn a_restore_answers_as_a_fork() {
        let trace = "new A\nmmap A 0x10000000 64K rw private\nwrite A 0x10000000 \"hi\"\nsnapshot A as S\n\
                     write A 0x10001000 \"x\"\nmunmap A 0x10008000 8K\nrestore A S\nread A 0x10000000 2\n\
                     phys A 0x10000000\nwrite A 0x10000000 \"j\"\nsmaps A 0x10000000";
        let ops: Vec<Op> = trace.lines().map(|l| super::super::parse::parse_line(l).unwrap().unwrap()).collect();
        assert_eq!(check(&ops, &SoftmmOptions::default()).unwrap(), None);
    }
}
