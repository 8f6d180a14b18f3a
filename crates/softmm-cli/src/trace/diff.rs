//! `softmm diff`: run a trace on softmm and on Linux, line by line.
//!
//! Output lines must be equal, except `frame` lines: frame numbers are
//! meaningless across systems (and are reused after a frame is freed), so a
//! `phys A X` line is compared by *who shares the frame right now*: both
//! sides are asked again, at that moment, for the frames of every (space,
//! address) queried before, and the sets of pairs that share A X's frame
//! must be equal. Linux without CAP_SYS_ADMIN hides frame numbers
//! (`frame unknown`); those lines are only compared for present/`none`.

use super::exec_softmm::{SoftmmOptions, SoftmmRunner};
use super::linux::LinuxRunner;
use super::parse::{Line, Op};

/// The result of diffing one trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffResult {
    Same,
    /// The trace uses softmm-only operations (pins); not comparable.
    SoftmmOnly,
    Differs(Difference),
}

/// The first line where softmm and Linux disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub line: usize,
    pub op: String,
    pub softmm: String,
    pub linux: String,
    pub why: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}\n  softmm: {}\n  linux:  {}", self.line, self.op, self.softmm, self.linux)?;
        if !self.why.is_empty() {
            write!(f, "\n  ({})", self.why)?;
        }
        Ok(())
    }
}

/// Diff a parsed trace. Fatal errors (a runner failed) are `Err`.
pub fn diff(lines: &[Line], opts: &SoftmmOptions) -> Result<DiffResult, String> {
    diff_with_stats(lines, opts).map(|(r, _)| r)
}

/// `diff`, also returning softmm's machine counters at the end (or at the
/// first difference), to show what a trace exercised.
pub fn diff_with_stats(lines: &[Line], opts: &SoftmmOptions) -> Result<(DiffResult, softmm::MachineStats), String> {
    let mut stats = softmm::MachineStats::default();
    let r = diff_inner(lines, opts, &mut stats)?;
    Ok((r, stats))
}

fn diff_inner(lines: &[Line], opts: &SoftmmOptions, stats: &mut softmm::MachineStats) -> Result<DiffResult, String> {
    if lines.iter().any(|l| !l.op.linux_can_run()) {
        return Ok(DiffResult::SoftmmOnly);
    }
    let mut s = SoftmmRunner::new(opts.clone())?;
    let mut l = LinuxRunner::new()?;
    let mut queried: Vec<(String, u64)> = Vec::new();
    for line in lines {
        let so = s.run(&line.op).map_err(|e| format!("softmm, line {}: {e}", line.number))?;
        let lo = l.run(&line.op).map_err(|e| format!("linux, line {}: {e}", line.number))?;
        *stats = s.stats();
        let differ = |why: String| {
            Ok(DiffResult::Differs(Difference {
                line: line.number,
                op: line.op.to_string(),
                softmm: so.clone(),
                linux: lo.clone(),
                why,
            }))
        };
        match &line.op {
            Op::Phys { a, addr } => {
                let page = addr & !0xfff;
                if so.starts_with("frame") != lo.starts_with("frame") {
                    return differ(String::new());
                }
                if so.starts_with("frame") && lo != "frame unknown" {
                    for (b, y) in queried.clone() {
                        if (b.as_str(), y) == (a.as_str(), page) {
                            continue;
                        }
                        let q = Op::Phys { a: b.clone(), addr: y };
                        let s_same = s.run(&q)? == so;
                        let l_same = l.run(&q)? == lo;
                        if s_same != l_same {
                            let (yes, no) = if s_same { ("softmm", "Linux") } else { ("Linux", "softmm") };
                            return differ(format!(
                                "{a} {addr:#x} shares a frame with {b} {y:#x} on {yes}, not on {no}"
                            ));
                        }
                    }
                }
                if !queried.iter().any(|(b, y)| b == a && *y == page) {
                    queried.push((a.clone(), page));
                }
            }
            Op::Exit { a } => {
                queried.retain(|(b, _)| b != a);
                if so != lo {
                    return differ(String::new());
                }
            }
            _ => {
                if so != lo {
                    return differ(String::new());
                }
            }
        }
    }
    Ok(DiffResult::Same)
}
