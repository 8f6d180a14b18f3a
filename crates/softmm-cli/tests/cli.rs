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

#[test]
fn bad_arguments_fail_clearly() {
    let cases: [(&[&str], &str); 6] = [
        (&["run", "--size", "12X"], "size suffix"),
        (&["run", "--size", "0"], "at least one byte"),
        (&["run", "--write-percent", "150"], "percentage"),
        (&["run", "--children", "lots"], "--children"),
        (&["bench", "nope"], "invalid value"),
        (&["bench", "fault", "--reps", "0"], "--reps"),
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
