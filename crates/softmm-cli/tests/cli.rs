//! End-to-end tests of the `softmm` binary (kept to a few seconds).

use std::process::{Command, Output};

fn softmm(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_softmm")).args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("could not start softmm: {e}"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last line of stdout, parsed as a JSON object.
fn last_json(o: &Output) -> serde_json::Value {
    let out = text(&o.stdout);
    let line = out.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("last line {line:?}: {e}"));
    assert!(v.is_object(), "{line}");
    v
}

fn positive(v: &serde_json::Value, key: &str) -> f64 {
    let x = v.get(key).and_then(|x| x.as_f64()).unwrap_or_else(|| panic!("no number {key} in {v}"));
    assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    x
}

#[test]
fn run_small_workload_reports_and_verifies() {
    let o = softmm(&["run", "--size", "64M", "--children", "2"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{}", text(&o.stderr));
    for want in ["Phases", "COW copies", "frames in use", "page tables", "Pss", "child 1", "Verification: ok"] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // 2 children x 2% of 16384 pages = 2 x 328 copies.
    assert!(out.lines().any(|l| l.contains("COW copies") && l.trim_end().ends_with("656")), "{out}");
}

#[test]
fn run_with_no_writes_and_one_thread() {
    let o = softmm(&["run", "--size", "4M", "--children", "3", "--write-percent", "0", "--threads", "1"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
}

#[test]
fn bench_fault_json_has_required_keys() {
    let o = softmm(&["bench", "fault", "--vs-linux", "--json", "--size", "8M", "--reps", "2"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let v = last_json(&o);
    assert_eq!(v["bench"], "fault");
    let s = positive(&v, "softmm_ns");
    let l = positive(&v, "linux_ns");
    let r = positive(&v, "ratio_vs_linux");
    assert!((r - l / s).abs() < 1e-6 * r, "ratio {r} != {l} / {s}");
    positive(&v, "softmm_cold_ns");
    positive(&v, "linux_cold_ns");
}

#[test]
fn bench_free_json() {
    let o = softmm(&["bench", "free", "--vs-linux", "--json", "--size", "4M", "--reps", "2"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let v = last_json(&o);
    assert_eq!(v["bench"], "free");
    positive(&v, "softmm_ns");
    positive(&v, "linux_ns");
    positive(&v, "ratio_vs_linux");
}

#[test]
fn bench_snapshot_json_has_the_targets_and_the_copy_floor() {
    let o = softmm(&["bench", "snapshot", "--vs-linux", "--json", "--size", "4M", "--reps", "1"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let v = last_json(&o);
    assert_eq!(v["bench"], "snapshot");
    for k in [
        "restore_1_ratio_vs_linux",
        "restore_1pct_ratio_vs_linux",
        "restore_1pct_ratio_vs_fork",
        "reset_only_1pct_ratio_vs_linux",
        "restore_ns_per_written_page",
        "run_copies_1pct_ns",
        "copies_only_1pct_ratio_vs_linux",
    ] {
        positive(&v, k);
    }
}

#[test]
fn bench_file_json_has_both_linux_caches() {
    let o = softmm(&["bench", "file", "--vs-linux", "--json", "--size", "4M", "--reps", "2"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let v = last_json(&o);
    assert_eq!(v["bench"], "file");
    for k in ["softmm_ns", "linux_ns", "ratio_vs_linux", "linux_large_folio_ns", "large_folio_ratio_vs_linux"] {
        positive(&v, k);
    }
    // softmm maps 16 pages a fault (fault-around); Linux's count is the host's.
    assert!(v["softmm_faults"].as_u64().is_some_and(|s| (64..=66).contains(&s)), "{v}");
    assert!(v["linux_faults"].as_u64().is_some_and(|l| l > 0), "{v}");
}

#[test]
fn bench_cow_and_fork_json() {
    for which in ["cow", "fork"] {
        let o = softmm(&["bench", which, "--vs-linux", "--json", "--size", "4M", "--reps", "1"]);
        assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
        let v = last_json(&o);
        assert_eq!(v["bench"], which);
        positive(&v, "softmm_ns");
        positive(&v, "linux_ns");
        positive(&v, "ratio_vs_linux");
    }
}

#[test]
fn bench_fork_sizes_json_and_plot() {
    let plot = std::env::temp_dir().join(format!("softmm-fork-test-{}.svg", std::process::id()));
    let plot_arg = plot.to_string_lossy().into_owned();
    let o = softmm(&["bench", "fork", "--sizes", "8M,16M", "--vs-linux", "--json", "--reps", "1", "--plot", &plot_arg]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let v = last_json(&o);
    assert_eq!(v["bench"], "fork");
    // The top-level figures are those of the largest size (no 1G given).
    assert_eq!(v["size"].as_u64(), Some(16 << 20), "{v}");
    let s = positive(&v, "shared_ns");
    positive(&v, "copy_ns");
    let l = positive(&v, "linux_ns");
    let r = positive(&v, "ratio_vs_linux");
    assert!((r - l / s).abs() < 1e-6 * r, "ratio {r} != {l} / {s}");
    let sizes = v["sizes"].as_array().unwrap_or_else(|| panic!("no sizes array in {v}"));
    assert_eq!(sizes.len(), 2, "{v}");
    for (row, bytes) in sizes.iter().zip([8u64 << 20, 16 << 20]) {
        assert_eq!(row["size_bytes"].as_u64(), Some(bytes), "{row}");
        assert_eq!(row["tables"].as_u64(), Some(bytes >> 21), "{row}");
        for key in ["shared_ns", "copy_ns", "linux_ns", "shared_ns_per_table", "ratio_vs_linux"] {
            positive(row, key);
        }
    }
    for key in ["shared_ns", "copy_ns", "linux_cow_ns", "ratio_shared_to_linux_cow"] {
        positive(&v["first_write"], key);
    }
    for key in ["shared_ns", "copy_ns", "ratio_shared_to_copy"] {
        positive(&v["write_all"], key);
    }
    for key in ["shared_ns", "copy_ns", "linux_ns", "ratio_vs_linux"] {
        positive(&v["fork_exit"], key);
    }
    assert_eq!(v["fork_exit"]["tables_unshared"].as_u64(), Some(8), "{v}");
    let svg = std::fs::read_to_string(&plot).unwrap_or_else(|e| panic!("no plot {}: {e}", plot.display()));
    let _ = std::fs::remove_file(&plot);
    assert!(svg.starts_with("<svg") && svg.contains("Linux fork()"), "{svg}");

    let o = softmm(&["bench", "cow", "--sizes", "8M"]);
    assert!(!o.status.success() && text(&o.stderr).contains("--sizes"), "{}", text(&o.stderr));
}

#[test]
fn bench_without_linux_has_null_ratio() {
    let o = softmm(&["bench", "fault", "--json", "--size", "4M", "--reps", "1"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let v = last_json(&o);
    positive(&v, "softmm_ns");
    assert!(v["linux_ns"].is_null() && v["ratio_vs_linux"].is_null(), "{v}");
}

#[test]
fn bench_read_json() {
    let o = softmm(&["bench", "read", "--json", "--size", "4M", "--reps", "1"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let v = last_json(&o);
    assert_eq!(v["bench"], "read");
    positive(&v, "softmm_gbps");
    positive(&v, "memcpy_gbps");
    positive(&v, "ratio_vs_memcpy");
}

#[test]
fn bench_futex_json() {
    let o = softmm(&["bench", "futex", "--vs-linux", "--json", "--size", "4M", "--reps", "1"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let v = last_json(&o);
    assert_eq!(v["bench"], "futex");
    for key in [
        "wake_ratio_vs_linux",
        "pingpong_ratio_vs_linux",
        "eagain_ratio_vs_linux",
        "mutex_ratio_vs_linux",
        "wake_softmm_ns",
        "wake_linux_ns",
        "eagain_softmm_ns",
        "pingpong_softmm_ns",
        "cow_fault_ns",
        "vcache_check_percent_of_cow",
    ] {
        positive(&v, key);
    }
    let mutex = v["mutex"].as_array().map(Vec::len);
    assert_eq!(mutex, Some(3), "{v}");
}

/// The first figure on the report line that starts with `name`.
fn figure(out: &str, name: &str) -> u64 {
    let line = out.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("no {name} in:\n{out}"));
    let rest = line.trim_start().trim_start_matches(name);
    let word = rest.split_whitespace().next().unwrap_or_default();
    word.replace(',', "").parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn run_under_a_memory_limit_swaps_and_verifies() {
    let o = softmm(&["run", "--mem-limit", "32M", "--size", "64M", "--children", "2"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{}", text(&o.stderr));
    for want in ["Swap (memory limit 32.0 MiB", "swap_ins (pages)", "swap_used (slots)", "Verification: ok"] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // 64 MiB of data cannot stay under a 32 MiB limit.
    assert!(figure(&out, "swap_outs (pages)") > 0, "{out}");
    assert!(figure(&out, "swap_ins (pages)") > 0, "{out}");
    assert!(figure(&out, "frames in use") <= 32 << 8, "{out}");
}

#[test]
fn run_within_its_memory_limit_swaps_nothing() {
    let o = softmm(&["run", "--mem-limit", "64M", "--size", "4M", "--children", "2"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{}", text(&o.stderr));
    assert_eq!(figure(&out, "swap_outs (pages)"), 0, "{out}");
    assert!(out.contains("counters match the workload"), "{out}");
}

#[test]
fn run_with_an_explicit_swap_file() {
    let path = std::env::temp_dir().join(format!("softmm-cli-test-swap-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let arg = path.to_string_lossy().into_owned();
    let o = softmm(&["run", "--mem-limit", "4M", "--size", "8M", "--children", "1", "--swap-file", &arg]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{}", text(&o.stderr));
    assert!(out.contains(&format!("swap on file {arg}")), "{out}");
    assert!(figure(&out, "swap_outs (pages)") > 0, "{out}");
    assert!(!path.exists(), "the swap file outlived the run");
}

#[test]
fn replay_under_a_memory_limit_reads_swapped_pages_back() {
    use std::io::Write;
    let trace = "new P\nmmap P 0x10000000 256K rw private\nfill P 0x10000000 256K 5a\nread P 0x10000000 2\n\
                 read P 0x1003f000 1\nsmaps P 0x10000000\n";
    let mut child = Command::new(env!("CARGO_BIN_EXE_softmm"))
        .args(["replay", "--mem-limit", "64K", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start softmm: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(trace.as_bytes()).unwrap_or_else(|e| panic!("writing the trace: {e}"));
    }
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for softmm: {e}"));
    let out = text(&o.stdout);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{}", text(&o.stderr));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.get(3..5), Some(&["data 5a5a", "data 5a"][..]), "{out}");
    // 64 pages, at most 16 frames: most of them are on swap, none is lost.
    let smaps = lines.get(5).copied().unwrap_or_default();
    let field = |k: &str| -> u64 {
        let f = smaps.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or_else(|| panic!("{k} in {smaps}"));
        f.parse().unwrap_or_else(|e| panic!("{smaps}: {e}"))
    };
    assert_eq!(field("rss=") + field("swap="), 256, "{smaps}");
    assert!(field("swap=") >= 256 - 64, "{smaps}");

    let o = softmm(&["replay", "--on", "linux", "--mem-limit", "1M", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--mem-limit"), "{}", text(&o.stderr));
}

#[test]
fn bench_reclaim_json() {
    let o = softmm(&["bench", "reclaim", "--size", "16M", "--json", "--reps", "1", "--vs-linux"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains("Linux's own swap needs root"), "{out}");
    let v = last_json(&o);
    assert_eq!(v["bench"], "reclaim");
    let so = positive(&v, "swap_out_bytes_per_s");
    let si = positive(&v, "swap_in_bytes_per_s");
    let dw = positive(&v, "dev_write_bytes_per_s");
    let dr = positive(&v, "dev_read_bytes_per_s");
    let ro = positive(&v, "out_ratio");
    let ri = positive(&v, "in_ratio");
    assert!((ro - so / dw).abs() < 1e-9 * ro && (ri - si / dr).abs() < 1e-9 * ri, "{v}");
    // Every page was read back; most were swapped out on the way.
    assert_eq!(v["swap_ins"].as_u64(), Some(4096), "{v}");
    assert!(v["swap_outs"].as_u64().is_some_and(|n| n >= 4096 / 2), "{v}");
}

#[test]
fn bench_rmap_json() {
    let o = softmm(&["bench", "rmap", "--json", "--iterations", "4", "--reps", "1", "--size", "8M"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let v = last_json(&o);
    assert_eq!(v["bench"], "rmap");
    assert!(v["lock"] == "spin" || v["lock"] == "rwsem", "{v}");
    for key in ["fork_exit_per_s", "fork_exit_per_s_copy", "fork_write_exit_per_s", "fork_write_exit_per_s_copy"] {
        positive(&v, key);
    }
    assert_eq!(v["threads"].as_u64(), Some(2), "{v}");
    assert_eq!(v["iterations"].as_u64(), Some(4), "{v}");
    assert_eq!(v["writes_per_child"].as_u64(), Some(21), "{v}");
}

#[test]
fn bench_notifier_json() {
    let o = softmm(&["bench", "notifier", "--json", "--size", "8M", "--reps", "1"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    let v = last_json(&o);
    assert_eq!(v["bench"], "notifier");
    assert_eq!(v["notifiers_compiled"], true, "{v}");
    assert_eq!(v["size_bytes"].as_u64(), Some(8 << 20), "{v}");
    // One start/end pair for the whole munmap, whatever its size.
    assert_eq!(v["pairs_1g_munmap"].as_u64(), Some(1), "{v}");
    // 4 PTE tables plus the upper levels above them.
    assert!(v["big_munmap_tables"].as_u64().is_some_and(|n| n >= 4), "{v}");
    for key in ["munmap_ns", "fault_ns", "cow_fault_ns", "madvise_ns", "madvise_1sub_ns", "mprotect_ns"] {
        positive(&v, key);
    }
    // A difference of two timings: any finite number (no timing asserts).
    for key in ["per_invalidation_ns", "per_invalidation_mprotect_ns", "per_invalidation_munmap_ns"] {
        assert!(v[key].as_f64().is_some_and(f64::is_finite), "{key}: {v}");
    }
}

/// Words the product's output must not use: it reports figures, not the
/// project's targets or verdicts on them (those live in docs/BENCHMARKS.md).
fn verdict_words(out: &str) -> Vec<String> {
    let lower = out.to_lowercase();
    let mut found: Vec<String> =
        ["target", "missed", "issue", "session"].iter().filter(|w| lower.contains(*w)).map(|w| w.to_string()).collect();
    // "met" as a word ("metric" or "parameter" would be fine).
    let words = lower.split(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    found.extend(words.filter(|w| *w == "met" || w.starts_with("met_") || w.ends_with("_met")).map(String::from));
    found
}

#[test]
fn verdict_words_are_found() {
    assert_eq!(verdict_words("fault: 6.03x, target 4x -> met"), ["target", "met"]);
    assert_eq!(verdict_words(r#"{"target_met":true}"#), ["target", "target_met"]);
    assert_eq!(verdict_words("MISSED (see issue 4)"), ["missed", "issue"]);
    assert!(verdict_words("metric parameter metres").is_empty());
}

#[test]
fn bench_output_names_no_targets() {
    // Every bench at its smallest size and fewest reps, with the Linux
    // side, text and JSON; `all` would run the large defaults of tlb,
    // futex, rmap and notifier.
    let runs: [&[&str]; 10] = [
        &["fault", "--size", "4K"],
        &["cow", "--size", "4K"],
        &["fork", "--size", "4K"],
        &["tlb", "--size", "4K"],
        &["read", "--size", "4K"],
        &["futex", "--size", "4K"],
        &["rmap", "--size", "4K", "--iterations", "1"],
        &["reclaim", "--size", "4M"],
        &["notifier", "--size", "4K"],
        &["free", "--size", "4K"],
    ];
    for args in runs {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--vs-linux", "--json", "--reps", "1"]);
        let o = softmm(&all);
        let out = text(&o.stdout);
        assert!(o.status.success(), "{all:?}: {out}{}", text(&o.stderr));
        last_json(&o);
        let bad = verdict_words(&out);
        assert!(bad.is_empty(), "{all:?} prints {bad:?}:\n{out}");
    }
}

#[test]
fn bad_arguments_fail_clearly() {
    let cases: [(&[&str], &str); 10] = [
        (&["run", "--size", "12X"], "size suffix"),
        (&["run", "--size", "0"], "at least one byte"),
        (&["run", "--write-percent", "150"], "percentage"),
        (&["run", "--children", "lots"], "--children"),
        (&["bench", "nope"], "invalid value"),
        (&["bench", "fault", "--reps", "0"], "--reps"),
        (&["bench", "fault", "--iterations", "3"], "--iterations"),
        (&["bench", "reclaim", "--size", "1M"], "too small"),
        (&["run", "--size", "1M", "--swap-file", "/nonexistent/swap"], "--mem-limit"),
        (&["run", "--size", "1M", "--mem-limit", "32K"], "64 KiB"),
    ];
    for (args, want) in cases {
        let o = softmm(args);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: stderr lacks {want:?}:\n{err}");
        assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    }
}

#[test]
fn too_large_a_run_is_an_error_not_a_crash() {
    let o = softmm(&["run", "--size", "1T"]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.starts_with("softmm: error:") && err.contains("smaller --size"), "{err}");
}

/// `softmm ARGS` with its address space limited to `gib` GiB, so that a
/// regression that allocates without bound fails fast instead of taking
/// the machine's memory.
fn softmm_limited(args: &[&str], gib: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_softmm"));
    cmd.args(args);
    let bytes = gib << 30;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap_or_else(|e| panic!("could not start softmm: {e}"))
}

#[test]
fn every_bench_refuses_a_size_beyond_memory_up_front() {
    // (notifier keeps one page and one table per 2 MiB: 1T needs about 4 GiB.)
    for which in ["fault", "cow", "fork", "tlb", "read", "futex", "rmap", "reclaim"] {
        let o = softmm_limited(&["bench", which, "--size", "1T", "--reps", "1"], 2);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{which}: {err}");
        assert!(err.starts_with(&format!("softmm: error: bench {which}: ")), "{which}: {err}");
        // reclaim's memory is its limit, bounded whatever the size: the
        // refusal is for the swap file's disk space.
        let room = if which == "reclaim" { "is free" } else { "available" };
        assert!(err.contains("needs") && err.contains(room), "{which}: {err}");
        assert!(text(&o.stdout).is_empty(), "{which}: {}", text(&o.stdout));
    }
}

/// A trace file in the temp directory, removed on drop.
struct TempTrace(std::path::PathBuf);

impl TempTrace {
    fn new(name: &str, content: impl AsRef<[u8]>) -> TempTrace {
        let p = std::env::temp_dir().join(format!("softmm-cli-{}-{name}.trace", std::process::id()));
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        TempTrace(p)
    }

    fn arg(&self) -> String {
        self.path().to_owned()
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap_or_else(|| panic!("non-UTF-8 temp path {}", self.0.display()))
    }
}

impl Drop for TempTrace {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn non_ascii_hex_is_a_malformed_line_everywhere() {
    let t = TempTrace::new(
        "nonascii",
        "new P\nmmap P 0x10000000 4K rw private\nwrite P 0x10000000 hex:a\u{e9}1\n".as_bytes(),
    );
    for args in [&["replay", t.path()][..], &["replay", "--on", "linux", t.path()], &["diff", t.path()]] {
        let o = softmm(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(&format!("{}:3: ", t.path())), "{args:?}: {err}");
    }
}

#[test]
fn parser_rejects_signs_in_numbers_end_to_end() {
    for bad in ["munmap P 0x+10000000 4K", "write P 0x10000000 hex:+1+2", "fill P 0x10000000 1 +f"] {
        let t = TempTrace::new("sign", format!("new P\nmmap P 0x10000000 4K rw private\n{bad}\n").as_bytes());
        let o = softmm(&["replay", t.path()]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o.stderr));
        assert_eq!(text(&o.stdout), "ok\nok\n", "{bad}");
    }
}

#[test]
fn an_endless_line_is_an_error_naming_it() {
    for args in [&["replay", "/dev/zero"][..], &["diff", "/dev/zero"]] {
        let o = softmm_limited(args, 4);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("/dev/zero:1: ") && err.contains("64 KiB"), "{args:?}: {err}");
        assert!(err.len() < 300, "{args:?}: {} bytes of error", err.len());
    }
}

#[test]
fn errors_echo_input_bounded_and_escaped() {
    let long = "y".repeat(60_000);
    let t = TempTrace::new("long", format!("new P\n{long}\n").as_bytes());
    let o = softmm(&["replay", t.path()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", err.len());
    assert!(err.len() < 300 && err.contains("..."), "{} bytes: {}", err.len(), &err[..300.min(err.len())]);

    let t = TempTrace::new("nul", b"new P\nfr\0ob\x1b[2J P\n");
    let o = softmm(&["replay", t.path()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!o.stderr.iter().any(|&b| b < 0x20 && b != b'\n'), "{:?}", text(&o.stderr));
    assert!(text(&o.stderr).contains("fr\\0ob"), "{}", text(&o.stderr));
}

#[test]
fn swap_file_errors_say_what_went_wrong_and_where() {
    let t = TempTrace::new("exists", b"new P\n");
    let o = softmm(&["run", "--size", "1M", "--mem-limit", "64K", "--swap-file", t.path()]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("exists") && err.contains(t.path()) && !err.contains("errno 17"), "{err}");
    let o = softmm(&["replay", "--mem-limit", "64K", "--swap-file", t.path(), t.path()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("exists") && err.contains(t.path()) && !err.contains("errno 17"), "{err}");
    assert_eq!(std::fs::read(&t.0).unwrap_or_default(), b"new P\n", "the existing file was changed");
}

#[test]
fn fuzz_refuses_a_seed_range_past_the_last_seed() {
    let o = softmm(&["fuzz", "--first-seed", "18446744073709551615", "--traces", "3", "--ops", "10"]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("--first-seed") && err.contains("--traces"), "{err}");
    assert!(!out.contains("traces,"), "{out}");
    // The last seed itself runs, and the summary counts it.
    let o = softmm(&["fuzz", "--first-seed", "18446744073709551615", "--traces", "1", "--ops", "10"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.ends_with("1 traces, 1 same, 0 differ\n"), "{out}");
}

/// `softmm ARGS` writing to a pipe whose reader has already gone.
fn softmm_into_closed_pipe(args: &[&str]) -> Output {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        panic!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_softmm"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start softmm: {e}"));
    child.wait_with_output().unwrap_or_else(|e| panic!("waiting for softmm: {e}"))
}

#[test]
fn a_closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let t = TempTrace::new("pipe", b"new P\nmmap P 0x10000000 4K rw private\nread P 0x10000000 1\n");
    let f = TempTrace::new("pipe-swap", b"");
    let _ = std::fs::remove_file(&f.0);
    let cases: [&[&str]; 6] = [
        &["replay", t.path()],
        &["replay", "--mem-limit", "64K", "--swap-file", f.path(), t.path()],
        &["diff", t.path()],
        &["gen", "--ops", "1000"],
        &["fuzz", "--traces", "1", "--ops", "10"],
        &["bench", "tlb", "--reps", "1"],
    ];
    for args in cases {
        let o = softmm_into_closed_pipe(args);
        assert_eq!(text(&o.stderr), "", "{args:?}");
        assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{args:?}: {:?}", o.status);
    }
    assert!(!f.0.exists(), "the swap file outlived the replay");
}

#[test]
fn accesses_at_the_top_of_the_address_space_are_segv_on_both_sides() {
    // The Linux side rounded the access's end up to a page without a check
    // (an overflow panic in debug builds) and called an access whose last
    // byte is u64::MAX one that wraps around.
    let t = TempTrace::new(
        "top",
        b"new P\nread P 0xfffffffffffffff0 8\nread P 0xfffffffffffffff8 8\nwrite P 0xfffffffffffffffe hex:0011\n\
          fill P 0xffffffffffffff00 0x100 ab\n",
    );
    for on in ["softmm", "linux"] {
        let o = softmm(&["replay", "--on", on, t.path()]);
        assert!(o.status.success(), "{on}: {}", text(&o.stderr));
        assert_eq!(text(&o.stdout), "ok\nsegv maperr\nsegv maperr\nsegv maperr\nsegv maperr\n", "{on}");
    }
    let o = softmm(&["diff", t.path()]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
}

/// A swap file path of this test process's own, not yet existing.
fn fresh_swap_path(tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("softmm-cli-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Whether process `pid` has `path` open (also once it is unlinked, which
/// `/proc` shows as "PATH (deleted)").
fn has_open(pid: u32, path: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    let want = path.to_string_lossy().into_owned();
    fds.flatten().filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|target| {
        let t = target.to_string_lossy();
        t == want || t.strip_suffix(" (deleted)") == Some(want.as_str())
    })
}

/// SIGINT or SIGTERM in the middle of a run under a limit leaves no swap
/// file behind, and the same `--swap-file` works for the next run.
#[test]
fn a_signalled_run_leaves_no_swap_file() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let path = fresh_swap_path(&format!("signal-{signal}"));
        let arg = path.to_string_lossy().into_owned();
        let mut child = Command::new(env!("CARGO_BIN_EXE_softmm"))
            .args(["run", "--mem-limit", "8M", "--size", "4G", "--children", "2", "--swap-file", &arg])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start softmm: {e}"));
        // Wait (a minute at most: a hang detector) until the run has its
        // swap file open, so the signal comes mid-run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !has_open(child.id(), &path) {
            let done = child.try_wait().unwrap_or_else(|e| panic!("waiting for softmm: {e}"));
            assert!(done.is_none(), "the run ended before it opened its swap file: {done:?}");
            assert!(std::time::Instant::now() < deadline, "no swap file open after 60 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // SAFETY: kill(2) on our own child, which has not been reaped.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let status = child.wait().unwrap_or_else(|e| panic!("waiting for softmm: {e}"));
        assert!(!status.success(), "signal {signal}: {status:?}");
        assert!(!path.exists(), "signal {signal}: the swap file {arg} outlived the run");
        let o = softmm(&["run", "--mem-limit", "4M", "--size", "8M", "--children", "1", "--swap-file", &arg]);
        assert!(o.status.success(), "signal {signal}: the next run: {}", text(&o.stderr));
        assert!(!path.exists());
    }
}

/// An explicit `--swap-file` that exists is refused with a message naming
/// it, and left as it was.
#[test]
fn an_existing_swap_file_is_refused_by_name() {
    let path = fresh_swap_path("exists");
    std::fs::write(&path, b"someone's data").unwrap_or_else(|e| panic!("{e}"));
    let arg = path.to_string_lossy().into_owned();
    for cmd in ["run", "replay"] {
        let o = if cmd == "run" {
            softmm(&["run", "--mem-limit", "4M", "--size", "8M", "--children", "1", "--swap-file", &arg])
        } else {
            softmm(&["replay", "--mem-limit", "64K", "--swap-file", &arg, "/dev/null"])
        };
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{cmd}: {err}");
        assert!(err.contains(&format!("{arg} exists; remove it or choose another")), "{cmd}: {err}");
        assert_eq!(std::fs::read(&path).ok().as_deref(), Some(&b"someone's data"[..]), "{cmd}: the file changed");
    }
    let _ = std::fs::remove_file(&path);
}

/// `softmm ARGS` with `input` on stdin, killed (and the test failed) if it
/// has not ended after a minute: a hang detector, not a timing assertion.
fn softmm_finishing(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_softmm"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start softmm: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).unwrap_or_else(|e| panic!("writing stdin: {e}"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap_or_else(|e| panic!("waiting for softmm: {e}")).is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("softmm {args:?} did not end within 60 s (livelock?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("waiting for softmm: {e}"))
}

/// A child's writes through page tables shared with its parent under a
/// limit the tables nearly fill once spun forever; now every line answers,
/// `ok`/the right data or ENOMEM.
#[test]
fn shared_table_writes_under_a_tight_limit_answer() {
    let pages = ["0x10000000", "0x10200000", "0x10400000", "0x10600000", "0x10800000"];
    let mut trace = String::from("new P\nmmap P 0x10000000 10M rw private\n");
    for a in pages {
        trace += &format!("write P {a} \"x\"\n");
    }
    trace += "fork P C\n";
    for a in pages {
        trace += &format!("write C {a} \"y\"\n");
    }
    trace += "read P 0x10000000 1\n";
    let o = softmm_finishing(&["replay", "--mem-limit", "64K", "-"], &trace);
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 14, "stdout:\n{out}\nstderr:\n{}", text(&o.stderr));
    assert!(lines[..8].iter().all(|l| *l == "ok"), "{out}");
    assert!(lines[8..13].iter().all(|l| *l == "ok" || *l == "err ENOMEM"), "{out}");
    assert!(["data 78", "err ENOMEM"].contains(&lines[13]), "{out}");

    let o = softmm_finishing(&["run", "--mem-limit", "1M", "--size", "64M"], "");
    let err = text(&o.stderr);
    assert!(o.status.success() || err.contains("out of memory"), "stdout:\n{}\nstderr:\n{err}", text(&o.stdout));
}

/// 2,000 live spaces: 1,800 children of one parent and a fork chain of
/// 200, each writing its own copy of a page.
fn many_spaces_trace() -> String {
    let mut t = String::from("new P0\nmmap P0 0x10000000 64K rw private\nwrite P0 0x10000000 \"parent\"\n");
    for i in 1..1800 {
        t += &format!("fork P0 P{i}\nwrite P{i} 0x10000000 \"c{i}\"\n");
    }
    t += "fork P0 L0\n";
    for i in 1..=200 {
        t += &format!("fork L{} L{i}\nwrite L{i} 0x10001000 \"l{i}\"\n", i - 1);
    }
    t += "read P1799 0x10000000 6\nread L200 0x10001000 4\nread L200 0x10000000 6\nsmaps L100 0x10000000\n";
    t
}

#[test]
fn replay_audit_end_runs_a_trace_of_2000_spaces() {
    let trace = TempTrace::new("many", many_spaces_trace());
    let o = softmm(&["replay", "--audit", "end", &trace.arg()]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "stderr:\n{}", text(&o.stderr));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3 + 2 * 1799 + 1 + 2 * 200 + 4, "{}", text(&o.stderr));
    assert!(lines[..lines.len() - 4].iter().all(|l| *l == "ok"));
    // "c1799" over "parent"; the chain's last write; the parent's page.
    assert_eq!(lines[lines.len() - 4..lines.len() - 1], ["data 633137393974", "data 6c323030", "data 706172656e74"]);
    // L100's own copy of the second page, and the parent's first page,
    // which P0 and the 201 spaces of the chain share.
    let smaps = "rss=8 pss=4 anon=8 shared_clean=0 shared_dirty=4 private_clean=0 private_dirty=4 swap=0";
    assert_eq!(lines[lines.len() - 1], smaps);
    // Never auditing answers the same.
    let never = softmm(&["replay", "--audit", "never", &trace.arg()]);
    assert!(never.status.success(), "stderr:\n{}", text(&never.stderr));
    assert_eq!(text(&never.stdout), out);
}

#[test]
fn replay_audit_modes_print_the_same_lines() {
    let trace = TempTrace::new(
        "audit",
        "new P\nmmap P 0x10000000 64K rw private\nwrite P 0x10000000 \"hi\"\nfork P C\nwrite C 0x10000000 \"j\"\n\
         phys P 0x10000000\nphys C 0x10000000\nexit C\nsmaps P 0x10000000\n",
    );
    let outs: Vec<String> = ["every", "end", "never"]
        .iter()
        .map(|mode| {
            let o = softmm(&["replay", "--audit", mode, &trace.arg()]);
            assert!(o.status.success(), "--audit {mode}: {}", text(&o.stderr));
            text(&o.stdout)
        })
        .collect();
    assert_eq!(outs[0].lines().count(), 9, "{}", outs[0]);
    assert_eq!((&outs[1], &outs[2]), (&outs[0], &outs[0]));
    let o = softmm(&["replay", "--audit", "sometimes", &trace.arg()]);
    assert!(!o.status.success() && text(&o.stderr).contains("--audit"), "{}", text(&o.stderr));
}

#[test]
fn low_and_non_canonical_addresses_answer_as_linux_does() {
    // softmm alone: the library's floor (Linux's default, 64 KiB), and
    // SI_KERNEL for a non-canonical address, page faults either side.
    let trace = TempTrace::new(
        "canon",
        "new P\nmmap P 0x1000 4K rw private\nread P 0x800000000000 1\nwrite P 0xffff7ffffffff000 \"a\"\n\
         read P 0x7ffffffff000 1\nread P 0xffff800000000000 1\nread P 0x7fffffffffff 2\n",
    );
    let o = softmm(&["replay", &trace.arg()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let want = ["ok", "err EPERM", "segv code128", "segv code128", "segv maperr", "segv maperr", "segv maperr"];
    assert_eq!(text(&o.stdout).lines().collect::<Vec<_>>(), want);
    // Against this host's Linux, whatever its vm.mmap_min_addr and this
    // process's CAP_SYS_RAWIO: `diff` gives softmm the same floor.
    let low = TempTrace::new(
        "low",
        "new P\nmmap P 0x0 4K rw private\nmmap P 0x1000 4K rw private\nwrite P 0x1000 \"a\"\n\
         mmap P 0xf000 8K r private\nread P 0x1000 1\nread P 0x800000000000 1\nfill P 0x7ffffffffff0 32 aa\n",
    );
    let o = softmm(&["diff", &low.arg(), &trace.arg()]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{}", text(&o.stderr));
    assert_eq!(out.lines().filter(|l| l.ends_with(": same")).count(), 2, "{out}");
}

#[test]
fn run_with_many_small_children_verifies() {
    // Every child's smaps counts the parent's pages shared with all the
    // others (through borrowed entries): the snapshot's figures are exact.
    let o = softmm(&["run", "--size", "256K", "--children", "1024", "--threads", "1"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{}", text(&o.stderr));
    assert!(out.contains("Verification: ok"), "{out}");
}
