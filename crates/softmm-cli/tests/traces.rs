//! The trace corpus (`tests/traces/`, format in TRACE.md) and the
//! differential oracle, end to end through the `softmm` binary:
//!
//! - every `NAME.trace` replays on softmm, with Linux's futex keys, to
//!   exactly `NAME.out`;
//! - `softmm diff` (which keys futexes as Linux does) finds every one of
//!   them the same on real Linux;
//! - `futex-physical/NAME.trace` replays with physical futex keys to
//!   `NAME.out` under both fork strategies (these differ from Linux by
//!   design, so they are not diffed);
//! - `pinned/NAME.trace` (pins, which real Linux cannot take from user
//!   space) replays to `NAME.out` under both fork strategies, and `softmm
//!   diff` skips it;
//! - `snapshot/NAME.trace` (snapshots, restores, dirty pages: softmm-only)
//!   likewise;
//! - `softmm fuzz` finds no difference in 300 random traces;
//! - `softmm replay` stops at a malformed line with status 2, and reads
//!   standard input for `-`.
//!
//! To add a trace: write `NAME.trace` (starting with a comment saying what
//! it checks), run `softmm replay --futex-keys linux NAME.trace > NAME.out`
//! (`--futex-keys physical` in `futex-physical/`), read every line of the
//! output against Linux semantics (or the physical keys' design), and check
//! `softmm diff NAME.trace`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The corpus needs at least this many traces (the issue asks for 60).
const MIN_TRACES: usize = 60;

fn softmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_softmm"))
}

fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("could not start softmm: {e}"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("traces")
}

/// Traces of softmm's physical futex keys, which differ from Linux by design.
fn physical_dir() -> PathBuf {
    corpus_dir().join("futex-physical")
}

/// Traces with pins, which real Linux cannot run from user space.
fn pinned_dir() -> PathBuf {
    corpus_dir().join("pinned")
}

/// Traces with snapshots, which real Linux has no call for.
fn snapshot_dir() -> PathBuf {
    corpus_dir().join("snapshot")
}

/// The `*.trace` files directly in `dir`, sorted.
fn traces_in(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "trace"))
        .collect();
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `dir/NAME.trace` -> `dir/NAME{suffix}`.
fn sibling(trace: &Path, suffix: &str) -> PathBuf {
    let stem = trace.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    trace.with_file_name(format!("{stem}{suffix}"))
}

fn short(path: &Path) -> String {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(base).unwrap_or(path).display().to_string()
}

/// The operation lines of a trace (1-based line number, text without its
/// comment): the n-th output line belongs to the n-th of these.
fn operation_lines(trace: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in trace.lines().enumerate() {
        // A `#` starts a comment unless it is inside a quoted string.
        let mut quoted = false;
        let mut escaped = false;
        let mut end = line.len();
        for (at, c) in line.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '#' if !quoted => {
                    end = at;
                    break;
                }
                _ => {}
            }
        }
        let op = line[..end].trim();
        if !op.is_empty() {
            out.push((i + 1, op.to_string()));
        }
    }
    out
}

/// `None` if `got` equals `expected`; else a message naming the first
/// differing output line and the trace line that produced it.
fn first_difference(name: &str, trace: &str, expected: &str, got: &str) -> Option<String> {
    if expected == got {
        return None;
    }
    let ops = operation_lines(trace);
    let (exp, gotl): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let n = exp.iter().zip(&gotl).position(|(e, g)| e != g).unwrap_or(exp.len().min(gotl.len()));
    let at = match ops.get(n) {
        Some((line, op)) => format!("trace line {line}: `{op}`"),
        None => "past the last operation".to_string(),
    };
    let show = |v: &[&str]| v.get(n).map_or("(no line)".to_string(), |l| format!("`{l}`"));
    let mut msg =
        format!("{name}: output line {} ({at})\n  expected: {}\n  got:      {}", n + 1, show(&exp), show(&gotl));
    if exp.len() == gotl.len() && n == exp.len() {
        msg.push_str("\n  (the outputs differ only in their final newline)");
    } else if renumber_frames(expected) == renumber_frames(got) {
        msg.push_str(
            "\n  (only frame numbers differ, consistently: the same addresses share frames as before, so \
             the order in which softmm allocates frames changed; if that is intended, regenerate the \
             expected output with `softmm replay`)",
        );
    }
    Some(msg)
}

/// `output` with frame IDs renamed 1, 2, ... in order of first appearance:
/// equal for two outputs that differ only in which numbers name the frames.
fn renumber_frames(output: &str) -> String {
    let mut names: Vec<&str> = Vec::new();
    let mut out = String::new();
    for line in output.lines() {
        match line.strip_prefix("frame ") {
            Some(id) => {
                let n = names.iter().position(|x| *x == id).unwrap_or_else(|| {
                    names.push(id);
                    names.len() - 1
                });
                out.push_str(&format!("frame #{}\n", n + 1));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn fail_if_any(what: &str, failures: &[String]) {
    if !failures.is_empty() {
        panic!("{} of the {what} failed:\n\n{}\n", failures.len(), failures.join("\n\n"));
    }
}

#[test]
fn corpus_is_complete_and_documented() {
    let traces = traces_in(&corpus_dir());
    assert!(traces.len() >= MIN_TRACES, "only {} traces in {}", traces.len(), short(&corpus_dir()));
    let mut failures = Vec::new();
    let softmm_only = [physical_dir(), pinned_dir(), snapshot_dir()].map(|d| traces_in(&d)).concat();
    for t in traces.iter().chain(&softmm_only) {
        let first = read(t).lines().next().unwrap_or_default().to_string();
        if !first.starts_with("# ") {
            failures.push(format!("{}: does not start with a comment saying what it checks", short(t)));
        }
        if !sibling(t, ".out").is_file() {
            failures.push(format!("{}: no expected output {}", short(t), short(&sibling(t, ".out"))));
        }
    }
    fail_if_any("corpus checks", &failures);
}

/// How a replay's output must match the expected output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Frames {
    /// Line for line, frame numbers included.
    Exact,
    /// Line for line, frame numbers up to a consistent renaming (another
    /// fork strategy allocates page tables, and so frames, differently).
    Renamed,
}

/// Replay every trace of `dir` (with extra arguments) and compare its
/// output with `NAME.out`.
fn replay_all(dir: &Path, args: &[&str], frames: Frames) {
    let traces = traces_in(dir);
    assert!(!traces.is_empty(), "no traces in {}", short(dir));
    let mut failures = Vec::new();
    for t in &traces {
        let name = short(t);
        let o = run(softmm().arg("replay").args(args).arg(t));
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        if !o.status.success() {
            failures.push(format!("{name}: replay failed ({}):\n{err}", o.status));
            continue;
        }
        let expected_path = sibling(t, ".out");
        let expected = match std::fs::read_to_string(&expected_path) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{name}: cannot read {}: {e}", short(&expected_path)));
                continue;
            }
        };
        if frames == Frames::Renamed && renumber_frames(&expected) == renumber_frames(&out) {
            continue;
        }
        let name = format!("{name} (replay {})", args.join(" "));
        if let Some(d) = first_difference(&name, &read(t), &expected, &out) {
            failures.push(d);
        }
    }
    fail_if_any(&format!("{} replays", traces.len()), &failures);
}

#[test]
fn corpus_replays_to_expected_outputs() {
    replay_all(&corpus_dir(), &["--futex-keys", "linux"], Frames::Exact);
}

#[test]
fn physical_futex_traces_replay_to_expected_outputs() {
    // Every output line but frame numbers is the same under both fork
    // strategies (TRACE.md, "Modes").
    replay_all(&physical_dir(), &["--futex-keys", "physical"], Frames::Exact);
    replay_all(&physical_dir(), &["--futex-keys", "physical", "--page-tables", "copy"], Frames::Renamed);
}

#[test]
fn pinned_traces_replay_to_expected_outputs() {
    replay_all(&pinned_dir(), &[], Frames::Exact);
    replay_all(&pinned_dir(), &["--page-tables", "copy"], Frames::Renamed);
}

#[test]
fn snapshot_traces_replay_to_expected_outputs() {
    replay_all(&snapshot_dir(), &[], Frames::Exact);
    replay_all(&snapshot_dir(), &["--page-tables", "copy"], Frames::Renamed);
}

#[test]
fn diff_skips_pinned_traces() {
    let t = pinned_dir().join("pin_then_fork.trace");
    let o = run(softmm().arg("diff").arg(&t));
    let out = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(out.contains("skipped (softmm-only operations)"), "softmm diff did not skip a trace with pins: {out}");
}

/// Whether /proc/self/pagemap shows frame numbers (it does for root only).
fn pagemap_shows_frames() -> bool {
    use std::os::unix::fs::FileExt;
    let page = vec![1u8; 4096 * 2];
    let addr = std::hint::black_box(page.as_ptr()) as u64;
    let Ok(f) = std::fs::File::open("/proc/self/pagemap") else { return false };
    let mut b = [0u8; 8];
    if f.read_exact_at(&mut b, (addr / 4096) * 8).is_err() {
        return false;
    }
    let v = u64::from_ne_bytes(b);
    std::hint::black_box(&page);
    v & (1 << 63) != 0 && v & ((1 << 55) - 1) != 0
}

#[test]
fn corpus_is_the_same_on_linux() {
    if !pagemap_shows_frames() {
        println!(
            "note: /proc/self/pagemap shows no frame numbers here (not root): `softmm diff` compares \
             `phys` lines only as present or `none`, so frame sharing is not checked against Linux"
        );
    }
    // One `softmm diff` per trace, so that a trace that cannot run (status
    // 2) does not hide the verdicts of the others.
    let traces = traces_in(&corpus_dir());
    let mut failures = Vec::new();
    // Both fork strategies must look exactly like Linux.
    for mode in ["shared", "copy"] {
        for t in &traces {
            let o = run(softmm().args(["diff", "--page-tables", mode]).arg(t));
            let (out, err) = (text(&o.stdout), text(&o.stderr));
            let same = format!("{}: same\n", t.display());
            if !(o.status.success() && out == same) {
                failures.push(format!(
                    "{}: `softmm diff --page-tables {mode}` exited with {}:\n{out}{err}",
                    short(t),
                    o.status
                ));
            }
        }
    }
    fail_if_any(&format!("{} traces compared with Linux", traces.len()), &failures);
}

#[test]
fn fuzz_finds_no_difference() {
    // The small profile (4 MiB, short ranges) and the wide one (32 MiB,
    // ranges on and across 2 MiB page-table boundaries: sharing, unsharing,
    // dropping whole tables), the futex one (waits and wakes across
    // fork, COW, munmap and exit) and the remap one (mremap of private
    // memory) and the files one (scratch files, shared file mappings), each
    // under both fork strategies.
    for (profile, n) in [("small", "300"), ("wide", "150"), ("futex", "150"), ("remap", "150"), ("files", "100")] {
        for mode in ["shared", "copy"] {
            let args = [
                "fuzz",
                "--traces",
                n,
                "--ops",
                "80",
                "--first-seed",
                "1",
                "--page-tables",
                mode,
                "--profile",
                profile,
            ];
            let o = run(softmm().args(args));
            let out = text(&o.stdout);
            let cmd = args.join(" ");
            assert!(
                o.status.success(),
                "`softmm {cmd}` exited with {}:\n{out}\nstderr:\n{}",
                o.status,
                text(&o.stderr)
            );
            assert!(out.ends_with(&format!("{n} traces, {n} same, 0 differ\n")), "`softmm {cmd}` said:\n{out}");
        }
    }
}

/// A trace file in a private temporary directory, removed on drop.
struct TempTrace {
    path: PathBuf,
}

impl TempTrace {
    fn new(name: &str, body: &str) -> TempTrace {
        let dir = std::env::temp_dir().join(format!("softmm-traces-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        TempTrace { path }
    }
}

impl Drop for TempTrace {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

const GOOD_PREFIX: &str = "# a good start\nnew P\nmmap P 0x10000000 16K rw private\n\nwrite P 0x10000000 \"hi\"\n";

#[test]
fn malformed_line_stops_replay_with_status_2() {
    let cases = [
        ("frob P", "unknown operation"),
        ("mmap P 0x10000000 4K xr private", "protection"),
        ("write P 0x10000000 \"open", "unterminated"),
        ("read Q 0x10000000 2", "`Q`"), // no such address space
        ("waiter W", "no waiter named `W`"),
    ];
    for on in ["softmm", "linux"] {
        for (bad, why) in cases {
            let trace = TempTrace::new("bad.trace", &format!("{GOOD_PREFIX}{bad}\nread P 0x10000000 2\n"));
            let o = run(softmm().args(["replay", "--on", on]).arg(&trace.path));
            let (out, err) = (text(&o.stdout), text(&o.stderr));
            let ctx = format!("replay --on {on} of a trace whose line 6 is `{bad}`");
            assert_eq!(o.status.code(), Some(2), "{ctx}: status {}\nstdout:\n{out}stderr:\n{err}", o.status);
            assert_eq!(out, "ok\nok\nok\n", "{ctx}: the lines before it must have run");
            let want = format!("softmm replay: {}:6: ", trace.path.display());
            assert!(err.starts_with(&want), "{ctx}: stderr should start with {want:?}:\n{err}");
            assert!(err.contains(why), "{ctx}: stderr should say {why:?}:\n{err}");
            assert!(!err.contains("panicked"), "{ctx}: panicked:\n{err}");
        }
    }
}

#[test]
fn restore_of_an_unknown_snapshot_stops_replay_with_status_2() {
    let trace = TempTrace::new("bad_restore.trace", &format!("{GOOD_PREFIX}restore P S\nread P 0x10000000 2\n"));
    let o = run(softmm().arg("replay").arg(&trace.path));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(2), "status {}\nstdout:\n{out}stderr:\n{err}", o.status);
    assert_eq!(out, "ok\nok\nok\n", "the lines before it must have run");
    assert!(err.contains(":6: no snapshot named `S`"), "stderr should name the line and the snapshot:\n{err}");
}

fn replay_stdin(input: &str) -> Output {
    let mut child = match softmm()
        .args(["replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("could not start softmm: {e}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).unwrap_or_else(|e| panic!("writing the trace to softmm: {e}"));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("waiting for softmm: {e}"))
}

#[test]
fn replay_reads_standard_input_for_dash() {
    let o = replay_stdin(&format!("{GOOD_PREFIX}read P 0x10000000 2\nread P 0x10004000 1\n"));
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(text(&o.stdout), "ok\nok\nok\ndata 6869\nsegv maperr\n");

    // The same trace from a file and from standard input: the same output.
    let t = &traces_in(&corpus_dir())[0];
    let from_file = run(softmm().arg("replay").arg(t));
    let from_stdin = replay_stdin(&read(t));
    assert!(from_stdin.status.success(), "{}", text(&from_stdin.stderr));
    assert_eq!(text(&from_stdin.stdout), text(&from_file.stdout), "{}", short(t));

    // A malformed line on standard input is named as `-:N`.
    let o = replay_stdin(&format!("{GOOD_PREFIX}bogus\n"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "ok\nok\nok\n");
    assert!(text(&o.stderr).starts_with("softmm replay: -:6: "), "{}", text(&o.stderr));
}

#[test]
fn difference_messages_name_the_line() {
    let trace = "# c\nnew P\n\nmmap P 0x10000000 4K rw private  # x\nwrite P 0x10000000 \"#\" # y\n";
    assert_eq!(first_difference("t", trace, "ok\nok\nok\n", "ok\nok\nok\n"), None);
    let d = first_difference("t", trace, "ok\nok\nok\n", "ok\nerr EINVAL\nok\n").unwrap_or_default();
    assert!(d.contains("output line 2 (trace line 4: `mmap P 0x10000000 4K rw private`)"), "{d}");
    assert!(d.contains("expected: `ok`") && d.contains("got:      `err EINVAL`"), "{d}");
    let d = first_difference("t", trace, "ok\nframe 3\nframe 3\n", "ok\nframe 8\nframe 8\n").unwrap_or_default();
    assert!(d.contains("only frame numbers differ"), "{d}");
    let d = first_difference("t", trace, "ok\nframe 3\nframe 3\n", "ok\nframe 8\nframe 9\n").unwrap_or_default();
    assert!(!d.contains("only frame numbers differ"), "{d}");
    let d = first_difference("t", trace, "ok\nok\nok\n", "ok\nok\n").unwrap_or_default();
    assert!(d.contains("trace line 5: `write P 0x10000000 \"#\"`") && d.contains("(no line)"), "{d}");
}

#[test]
fn linux_runner_refuses_calls_over_its_own_memory() {
    // Each range covers the whole user address space, so the runner's own
    // mappings (its binary, heap, stack) lie inside it.
    for op in [
        "mmap P 0x1000 0x7ffffffff000 rw private",
        "munmap P 0x1000 0x7ffffffff000",
        "mprotect P 0x1000 0x7ffffffff000 r",
        "madvise P 0x1000 0x7ffffffff000 dontneed",
    ] {
        let trace = TempTrace::new("own.trace", &format!("{GOOD_PREFIX}{op}\nread P 0x10000000 2\n"));
        let o = run(softmm().args(["replay", "--on", "linux"]).arg(&trace.path));
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        let ctx = format!("replay --on linux of `{op}`");
        assert_eq!(o.status.code(), Some(2), "{ctx}: status {}\nstdout:\n{out}stderr:\n{err}", o.status);
        assert_eq!(out, "ok\nok\nok\n", "{ctx}: only the lines before it must have run");
        assert!(err.contains("the Linux runner's own memory"), "{ctx}: stderr:\n{err}");
    }
}

#[test]
fn scratch_files_are_removed_at_the_end() {
    // The runners keep their scratch files under the temporary directory
    // (TMPDIR, a disk file system here); nothing of them may stay there,
    // after a whole run or one that a malformed line stopped.
    let tmp = std::env::temp_dir().join(format!("softmm-scratch-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let trace = TempTrace::new(
        "files.trace",
        "# files\nfile F 8K 61\nnew P\nmmap P 0x10000000 8K rw shared file F 0\nwrite P 0x10000000 \"x\"\n\
         pread F 0 2\n",
    );
    let stopped = TempTrace::new("stopped.trace", "# stops\nfile F 4K 00\nfile F 4K 00\n");
    let ran = "ok\nok\nok\nok\ndata 7861\n";
    for (args, t, status, out) in [
        (&["replay"][..], &trace, 0, ran),
        (&["replay", "--on", "linux"][..], &trace, 0, ran),
        (&["replay"][..], &stopped, 2, "ok\n"),
        (&["replay", "--on", "linux"][..], &stopped, 2, "ok\n"),
    ] {
        let o = run(softmm().env("TMPDIR", &tmp).args(args).arg(&t.path));
        assert_eq!(o.status.code(), Some(status), "{args:?}: {}{}", text(&o.stdout), text(&o.stderr));
        assert_eq!(text(&o.stdout), out, "{args:?}");
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{args:?} left {left:?} in {}", tmp.display());
    }
    std::fs::remove_dir(&tmp).unwrap();
}

#[test]
fn an_unknown_or_reused_file_name_stops_the_replay() {
    for (body, says) in [
        ("pread G 0 1\n", "no file named `G`"),
        ("new P\nmmap P 0x10000000 4K rw shared file G 0\n", "no file named `G`"),
        ("file G 4K 00\nfile G 4K 00\n", "file `G` already exists"),
    ] {
        let trace = TempTrace::new("names.trace", &format!("# file names\n{body}"));
        for on in ["softmm", "linux"] {
            let o = run(softmm().args(["replay", "--on", on]).arg(&trace.path));
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{on}: {body:?}: {}{err}", text(&o.stdout));
            assert!(err.contains(says), "{on}: {body:?}: stderr {err}");
        }
    }
}
