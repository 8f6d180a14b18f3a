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
    assert!(v["targets"].as_array().is_some_and(|t| t.len() == 4), "{v}");
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
    assert!(v["target_met"].is_boolean(), "{v}");
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
    assert!(v["target_met"].is_boolean(), "{v}");
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
    assert!(v["target_met"].is_boolean(), "{v}");
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

/// A trace file in the temp directory, removed when dropped.
struct TempTrace(std::path::PathBuf);

impl TempTrace {
    fn new(name: &str, text: &str) -> TempTrace {
        let path = std::env::temp_dir().join(format!("softmm-cli-{}-{name}.trace", std::process::id()));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        TempTrace(path)
    }

    fn arg(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempTrace {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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
    let trace = TempTrace::new("many", &many_spaces_trace());
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
