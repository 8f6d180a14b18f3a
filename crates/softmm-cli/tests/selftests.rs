//! The Linux kernel's own selftests (Debian's linux-source-6.1: the futex
//! functional tests and the memory tests that need no module or debugfs),
//! built by `scripts/selftests.sh` natively and for riscv64, run natively
//! (the reference: this machine's Linux) and under `softmm exec`: each
//! test case's verdict (TAP `ok` / `not ok`, with `# SKIP`, `# XFAIL` and
//! `# error`) and each program's exit class must be the same, except the
//! cases listed in [`DIFFERS`] with the reason softmm's answer differs.
//! Without the package or a compiler (no apt, no network to the mirror)
//! the test says so and passes without running anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A program and its arguments, as `run.sh` / `run_vmtests.sh` call it.
/// mremap_test runs with `-t 1`: it checks the first MiB of each moved
/// region (default 4) and so skips its 1 GiB timing cases, which are there
/// to measure the host kernel's page-table moves, not to check anything.
const RUNS: &[&[&str]] = &[
    &["futex_requeue_pi"],
    &["futex_requeue_pi", "-b"],
    &["futex_requeue_pi", "-b", "-l"],
    &["futex_requeue_pi", "-b", "-o"],
    &["futex_requeue_pi", "-l"],
    &["futex_requeue_pi", "-o"],
    &["futex_requeue_pi", "-b", "-l", "-t", "5000"],
    &["futex_requeue_pi", "-l", "-t", "5000"],
    &["futex_requeue_pi", "-b", "-l", "-t", "500000"],
    &["futex_requeue_pi", "-l", "-t", "500000"],
    &["futex_requeue_pi", "-b", "-t", "5000"],
    &["futex_requeue_pi", "-t", "5000"],
    &["futex_requeue_pi", "-b", "-t", "500000"],
    &["futex_requeue_pi", "-t", "500000"],
    &["futex_requeue_pi", "-b", "-o", "-t", "5000"],
    &["futex_requeue_pi", "-b", "-o", "-t", "500000"],
    &["futex_requeue_pi", "-b", "-l", "-t", "2000000000"],
    &["futex_requeue_pi", "-l", "-t", "2000000000"],
    &["futex_requeue_pi_mismatched_ops"],
    &["futex_requeue_pi_signal_restart"],
    &["futex_wait_timeout"],
    &["futex_wait_wouldblock"],
    &["futex_wait_uninitialized_heap"],
    &["futex_wait_private_mapped_file"],
    &["futex_wait"],
    &["futex_requeue"],
    &["futex_waitv"],
    &["mremap_test", "-t", "1", "-p", "1"],
    &["map_fixed_noreplace"],
    &["mlock2-tests"],
    &["madv_populate"],
    &["mremap_dontunmap"],
];

/// Where softmm's verdict is known to differ from Linux's: the program, the
/// TAP case number (0: the program's exit class; [`ANY`]: every case), and
/// why. Only these cases may differ; any other difference fails the test.
const DIFFERS: &[(&str, u32, &str)] = &[(
    "mremap_test",
    14,
    "mremap expand merge looks for a maps line with exactly the expanded mapping's bounds; natively its three \
     pages may be placed next to another anonymous mapping of the run and merge with it, so the host's verdict \
     changes from run to run (softmm's, reading the machine's own /proc/self/maps, passes)",
)];

/// Every case of a program.
const ANY: u32 = u32::MAX;

/// Programs not run under softmm (natively they still run), and why.
const NOT_UNDER_SOFTMM: &[(&str, &str)] = &[];

/// One program's longest run, natively or under softmm.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    Pass,
    Fail,
    Skip,
    XFail,
    XPass,
    Error,
}

/// A run's verdicts: the exit class (case 0) and each TAP case by number.
#[derive(Debug)]
struct Outcome {
    cases: Vec<(u32, Verdict)>,
    text: String,
}

fn tap_verdict(line: &str) -> Option<(u32, Verdict)> {
    let (ok, rest) =
        if let Some(r) = line.strip_prefix("not ok ") { (false, r) } else { (true, line.strip_prefix("ok ")?) };
    let num: u32 = rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    let directive = rest.find('#').map(|i| rest[i + 1..].trim_start().to_ascii_lowercase()).unwrap_or_default();
    let v = if directive.starts_with("skip") {
        Verdict::Skip
    } else if directive.starts_with("xfail") {
        Verdict::XFail
    } else if directive.starts_with("xpass") {
        Verdict::XPass
    } else if directive.starts_with("error") {
        Verdict::Error
    } else if ok {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    Some((num, v))
}

/// kselftest's exit codes: 0 pass, 4 skip, anything else (a signal too) a
/// failure.
fn exit_verdict(code: Option<i32>) -> Verdict {
    match code {
        Some(0) => Verdict::Pass,
        Some(4) => Verdict::Skip,
        _ => Verdict::Fail,
    }
}

/// Run `cmd` in `dir` to its end or [`RUN_LIMIT`] (then killed: a failure).
fn run(mut cmd: Command, dir: &Path) -> Outcome {
    let out_path = dir.join(".out");
    let file = std::fs::File::create(&out_path).unwrap();
    let err = file.try_clone().unwrap();
    let mut child =
        cmd.current_dir(dir).stdin(Stdio::null()).stdout(file).stderr(err).spawn().expect("could not start a selftest");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()).into_owned();
    let mut cases = vec![(0, exit_verdict(status.and_then(|s| s.code())))];
    cases.extend(text.lines().filter_map(tap_verdict));
    let text = match status {
        Some(_) => text,
        None => format!("{text}\n(killed after {RUN_LIMIT:?})"),
    };
    Outcome { cases, text }
}

/// Where what the scripts build from Debian's sources is kept across
/// builds and clones of the repository: `$XDG_CACHE_HOME/softmm/NAME` or
/// `~/.cache/softmm/NAME`, else the target directory's. The scripts are
/// idempotent there (they build only what is missing).
fn cache_dir(name: &str) -> PathBuf {
    let home = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match home {
        Some(c) => c.join("softmm").join(name),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name),
    }
}

fn build_dir() -> PathBuf {
    cache_dir("selftests")
}

/// Build the programs; `None` (with the reason printed) when this machine
/// cannot have them.
fn build() -> Option<PathBuf> {
    let dir = build_dir();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/selftests.sh");
    let o = Command::new("bash").arg(&script).arg(&dir).output().expect("could not run bash");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    match o.status.code() {
        Some(0) => Some(dir),
        Some(77) => {
            eprintln!("kernel selftests SKIPPED, nothing was run: {}", text.trim());
            None
        }
        _ => panic!("{} failed ({}):\n{text}", script.display(), o.status),
    }
}

fn differs(prog: &str, case: u32) -> Option<&'static str> {
    DIFFERS.iter().find(|(p, c, _)| *p == prog && (*c == case || *c == ANY)).map(|(_, _, why)| *why)
}

#[test]
fn kernel_selftests_match_native_linux() {
    let Some(dir) = build() else { return };
    let softmm = env!("CARGO_BIN_EXE_softmm");
    let mut mismatches = Vec::new();
    let mut known = Vec::new();
    let started = Instant::now();
    for argv in RUNS {
        let (prog, args) = (argv[0], &argv[1..]);
        let mut native = Command::new(dir.join("native").join(prog));
        native.args(args);
        let n = run(native, &dir.join("native"));
        if let Some((_, why)) = NOT_UNDER_SOFTMM.iter().find(|(p, _)| *p == prog) {
            eprintln!("{}: native {:?}; not run under softmm: {why}", argv.join(" "), n.cases[0].1);
            known.push(format!("{}: not run under softmm ({why})", argv.join(" ")));
            continue;
        }
        let mut rv = Command::new(softmm);
        rv.arg("exec").arg(dir.join("riscv64").join(prog)).args(args);
        let s = run(rv, &dir.join("riscv64"));
        let line = argv.join(" ");
        let count = |v: Verdict, o: &Outcome| o.cases.iter().skip(1).filter(|c| c.1 == v).count();
        eprintln!(
            "{line}: native {:?} ({} pass, {} skip, {} xfail), softmm {:?} ({} pass, {} skip, {} xfail)",
            n.cases[0].1,
            count(Verdict::Pass, &n),
            count(Verdict::Skip, &n),
            count(Verdict::XFail, &n),
            s.cases[0].1,
            count(Verdict::Pass, &s),
            count(Verdict::Skip, &s),
            count(Verdict::XFail, &s),
        );
        let numbers: std::collections::BTreeSet<u32> = n.cases.iter().chain(&s.cases).map(|c| c.0).collect();
        for num in numbers {
            let find = |o: &Outcome| o.cases.iter().find(|c| c.0 == num).map(|c| c.1);
            let (a, b) = (find(&n), find(&s));
            if a == b {
                continue;
            }
            let what = format!("{line}, case {num}: native {a:?}, softmm {b:?}");
            match differs(prog, num) {
                Some(why) => known.push(format!("{what} (known: {why})")),
                None => mismatches.push(format!("{what}\n--- native:\n{}\n--- softmm:\n{}", n.text, s.text)),
            }
        }
    }
    eprintln!("kernel selftests: {} runs in {:?}", RUNS.len(), started.elapsed());
    for k in &known {
        eprintln!("skipped: {k}");
    }
    assert!(mismatches.is_empty(), "softmm's verdicts differ from Linux's:\n{}", mismatches.join("\n\n"));
}

#[test]
fn tap_lines_give_verdicts() {
    assert_eq!(tap_verdict("ok 3 futex_wait"), Some((3, Verdict::Pass)));
    assert_eq!(tap_verdict("not ok 14 mremap expand merge"), Some((14, Verdict::Fail)));
    assert_eq!(tap_verdict("ok 1 # XFAIL mremap - overlapping"), Some((1, Verdict::XFail)));
    assert_eq!(tap_verdict("ok 2 # SKIP no VmFlags"), Some((2, Verdict::Skip)));
    assert_eq!(tap_verdict("not ok 1 # error futex-requeue-pi"), Some((1, Verdict::Error)));
    assert_eq!(tap_verdict("# ok 1 comment"), None);
    assert_eq!(exit_verdict(Some(4)), Verdict::Skip);
    assert_eq!(exit_verdict(None), Verdict::Fail);
}
