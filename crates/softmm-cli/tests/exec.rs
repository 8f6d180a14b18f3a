//! `softmm exec`: a riscv64 program's output, arguments and exit status
//! pass through; a fault ends it with 128 + signal and a message; a file
//! that cannot be run is status 126 with the reason. Needs the riscv64
//! cross compiler (installed by `scripts/rv-toolchain.sh` when missing; the
//! test fails saying why if that does not work).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Once;

const CROSS: &str = "riscv64-linux-gnu-gcc";

fn have_cross() -> bool {
    Command::new(CROSS).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn toolchain() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if have_cross() {
            return;
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/rv-toolchain.sh");
        match Command::new("bash").arg(&script).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                panic!("{CROSS} is missing and {} failed:\n{}", script.display(), String::from_utf8_lossy(&o.stderr))
            }
            Err(e) => panic!("{CROSS} is missing and {} could not run: {e}", script.display()),
        }
    });
    assert!(have_cross(), "{CROSS} is still missing after scripts/rv-toolchain.sh");
}

/// Cross-compile one program of softmm-rv's corpus (each test its own
/// output file: tests run in parallel).
fn program(name: &str, tag: &str) -> PathBuf {
    toolchain();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../softmm-rv/tests/programs/{name}.c"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("exec-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{name}-{tag}.rv"));
    let o = Command::new(CROSS).args(["-static", "-O2", "-o"]).arg(&out).arg(&src).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn softmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_softmm")).args(args).output().expect("could not start softmm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exec_passes_arguments_output_and_status() {
    let p = program("exitcode", "status");
    let o = softmm(&["exec", p.to_str().unwrap(), "x", "--flag", "-y"]);
    assert_eq!(text(&o.stdout), "exiting with 7\n", "stderr: {}", text(&o.stderr));
    assert_eq!(o.status.code(), Some(7));
    let p = program("hello", "args");
    let o = softmm(&["exec", p.to_str().unwrap(), "--not-a-softmm-flag"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("arg 1: --not-a-softmm-flag"), "{}", text(&o.stdout));
}

#[test]
fn exec_fault_is_128_plus_signal_with_a_message() {
    let p = program("segv", "fault");
    let o = softmm(&["exec", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(139));
    assert_eq!(text(&o.stdout), "before the fault\n");
    assert!(text(&o.stderr).contains("Segmentation fault"), "{}", text(&o.stderr));
}

#[test]
fn exec_syscall_report_on_request_only() {
    let p = program("unknown", "report");
    let quiet = softmm(&["exec", p.to_str().unwrap()]);
    assert!(quiet.status.success());
    assert!(!text(&quiet.stderr).contains("ENOSYS"), "{}", text(&quiet.stderr));
    let o = softmm(&["exec", "--syscall-report", p.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(text(&o.stderr).contains("system calls answered ENOSYS"), "{}", text(&o.stderr));
    let o = Command::new(env!("CARGO_BIN_EXE_softmm"))
        .args(["exec", p.to_str().unwrap()])
        .env("SOFTMM_SYSCALL_REPORT", "1")
        .output()
        .unwrap();
    assert!(text(&o.stderr).contains("1000 "), "{}", text(&o.stderr));
}

#[test]
fn exec_of_something_not_runnable_is_126() {
    let o = softmm(&["exec", "/nonexistent/program"]);
    assert_eq!(o.status.code(), Some(126));
    assert!(text(&o.stderr).contains("cannot read"), "{}", text(&o.stderr));
    let o = softmm(&["exec", env!("CARGO_BIN_EXE_softmm")]);
    assert_eq!(o.status.code(), Some(126));
    assert!(text(&o.stderr).contains("not a RISC-V executable"), "{}", text(&o.stderr));
}

/// Threads, processes and signals through the command: an exit in
/// another thread is the status, a fault in a thread kills the process
/// with a message, an execve chain ends with the last program's status.
#[test]
fn exec_threads_processes_and_signals() {
    let p = program("threads", "threads");
    let o = softmm(&["exec", p.to_str().unwrap(), "exit-thread"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    let o = softmm(&["exec", p.to_str().unwrap(), "fault-thread"]);
    assert_eq!(o.status.code(), Some(139));
    assert!(text(&o.stderr).contains("Segmentation fault"), "{}", text(&o.stderr));
    let p = program("exec", "chain");
    let path = p.to_str().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_softmm"))
        .args(["exec", path, "chain", "2"])
        .env_remove("DEPTH")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(17), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "chain 2 (DEPTH=unset, argc 3)\nchain 1 (DEPTH=2, argc 4)\nchain 0 (DEPTH=1, argc 4)\n"
    );
}
