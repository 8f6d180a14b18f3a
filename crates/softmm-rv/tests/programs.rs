//! Real programs: each C file in `tests/programs/` is compiled natively
//! (the reference: real Linux runs it) and with the riscv64 cross compiler
//! (`-static -O2`; `pie.c` as a static-PIE), run under softmm-rv, and its
//! stdout and exit status must equal the native run's. Without the cross
//! compiler the test installs it with `scripts/rv-toolchain.sh`, and fails
//! saying why if that does not work (it never skips silently). qemu-riscv64
//! (installed by the same script) gives a second opinion on every program.
//! Most of the corpus is also built against musl (the riscv64 musl that
//! `scripts/rv-musl.sh` builds from Debian's musl source, and the host's
//! musl-gcc as the reference); where musl cannot be had the musl test says
//! why and runs nothing.

use softmm_rv::io::{Input, Output};
use softmm_rv::{exec, ExecOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Once, OnceLock};

const CROSS: &str = "riscv64-linux-gnu-gcc";
const QEMU: &str = "qemu-riscv64";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Make sure the cross compiler and qemu exist, installing them once if
/// needed.
fn toolchain() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if have(CROSS) && have(QEMU) {
            return;
        }
        let script = manifest_dir().join("../../scripts/rv-toolchain.sh");
        let out = Command::new("bash").arg(&script).output();
        match out {
            Ok(o) if o.status.success() && have(CROSS) && have(QEMU) => {}
            Ok(o) => panic!(
                "{CROSS} or {QEMU} is missing and {} failed ({}):\n{}\n{}",
                script.display(),
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("{CROSS} or {QEMU} is missing and {} could not run: {e}", script.display()),
        }
    });
    assert!(have(CROSS) && have(QEMU), "{CROSS} or {QEMU} is still missing after scripts/rv-toolchain.sh");
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

/// The riscv64 musl-gcc wrapper, built once per machine by
/// `scripts/rv-musl.sh` (see [`cache_dir`]), or why there is none.
fn musl() -> Result<PathBuf, String> {
    static MUSL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    MUSL.get_or_init(|| {
        toolchain();
        let prefix = cache_dir("rv-musl");
        let script = manifest_dir().join("../../scripts/rv-musl.sh");
        let o = Command::new("bash")
            .arg(&script)
            .arg(&prefix)
            .output()
            .map_err(|e| format!("{} could not run: {e}", script.display()))?;
        let cc = prefix.join("bin/musl-gcc");
        if o.status.success() && cc.exists() && have("musl-gcc") {
            Ok(cc)
        } else {
            Err(format!(
                "{} failed ({}):\n{}\n{}",
                script.display(),
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    })
    .clone()
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Build {
    Native,
    Riscv,
    /// Static, against musl: the host's (the reference) and riscv64's.
    NativeMusl,
    RiscvMusl,
    /// Static-PIE, freestanding (the cross glibc has no rcrt1.o).
    NativePie,
    RiscvPie,
}

/// Compile once per test process: tests run in parallel and some share a
/// program, so each (program, build) is built by the first asker while the
/// others wait.
fn compile(name: &str, build: Build) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let key = format!("{name}/{build:?}");
    if let Some(p) = built.get(&key) {
        return p.clone();
    }
    let p = compile_now(name, build);
    built.insert(key, p.clone());
    p
}

fn compile_now(name: &str, build: Build) -> PathBuf {
    let src = manifest_dir().join("tests/programs").join(format!("{name}.c"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rv-programs");
    std::fs::create_dir_all(&dir).unwrap();
    let (cc, suffix) = match build {
        Build::Native | Build::NativePie => (PathBuf::from("gcc"), "native"),
        Build::Riscv | Build::RiscvPie => (PathBuf::from(CROSS), "rv"),
        Build::NativeMusl => (PathBuf::from("musl-gcc"), "native-musl"),
        Build::RiscvMusl => (musl().expect("musl is checked before its builds"), "rv-musl"),
    };
    let cc = cc.display().to_string();
    let out = dir.join(format!("{name}.{suffix}"));
    let mut cmd = Command::new(&cc);
    // A missing prototype is an error: an int-returning guess truncates
    // pointers differently on the two machines.
    cmd.args(["-O2", "-Werror=implicit-function-declaration", "-o"]).arg(&out).arg(&src);
    match build {
        Build::Native => cmd.arg("-lm"),
        Build::Riscv | Build::NativeMusl | Build::RiscvMusl => cmd.args(["-static", "-lm"]),
        Build::NativePie | Build::RiscvPie => {
            cmd.args(["-nostdlib", "-ffreestanding", "-fno-builtin", "-fPIE", "-static-pie", "-Wl,--no-dynamic-linker"])
        }
    };
    let o = cmd.output().unwrap_or_else(|e| panic!("{cc} could not run: {e}"));
    assert!(o.status.success(), "{cc} failed on {}:\n{}", src.display(), String::from_utf8_lossy(&o.stderr));
    out
}

const ENV: [&str; 3] = ["HOME=/nonexistent", "LANG=C", "SOFTMM_TEST=1"];

/// (stdout, status as a shell sees it: code, or 128 + signal).
fn run_native(bin: &Path, args: &[&str], stdin: &[u8]) -> (Vec<u8>, i32) {
    run_host(Command::new(bin), args, stdin)
}

/// The same under qemu-riscv64 (its guest sees the same argv and
/// environment).
fn run_qemu(bin: &Path, args: &[&str], stdin: &[u8]) -> (Vec<u8>, i32) {
    let mut cmd = Command::new(QEMU);
    cmd.arg(bin);
    run_host(cmd, args, stdin)
}

fn run_host(mut cmd: Command, args: &[&str], stdin: &[u8]) -> (Vec<u8>, i32) {
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    cmd.args(args).env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for kv in ENV {
        let (k, v) = kv.split_once('=').unwrap();
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let o = child.wait_with_output().unwrap();
    let status = o.status.code().unwrap_or_else(|| 128 + o.status.signal().unwrap());
    (o.stdout, status)
}

/// (stdout, status, stderr) under softmm-rv.
fn run_rv(bin: &Path, args: &[&str], stdin: &[u8]) -> (Vec<u8>, i32, String) {
    let mut opts = ExecOptions::new(bin);
    opts.argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
    opts.envp = ENV.iter().map(|s| s.as_bytes().to_vec()).collect();
    let (out, out_buf) = Output::capture();
    let (err, err_buf) = Output::capture();
    opts.stdout = out;
    opts.stderr = err;
    opts.stdin = Input::Bytes(Arc::new(stdin.to_vec()), 0);
    opts.report_syscalls = true;
    opts.arena_bytes = 1 << 30;
    let exit = exec(bin, opts).unwrap_or_else(|e| panic!("exec {}: {e}", bin.display()));
    let stdout = out_buf.lock().unwrap().clone();
    let stderr = String::from_utf8_lossy(&err_buf.lock().unwrap()).into_owned();
    (stdout, exit.status, stderr)
}

/// Compile `name` both ways, run both, compare; returns softmm-rv's stderr.
fn same_as_native(name: &str, args: &[&str]) -> String {
    same_as_native_with_input(name, args, b"")
}

fn same_as_native_with_input(name: &str, args: &[&str], stdin: &[u8]) -> String {
    toolchain();
    let native = compile(name, Build::Native);
    let rv = compile(name, Build::Riscv);
    compare(name, &native, &rv, args, stdin)
}

fn compare(name: &str, native: &Path, rv: &Path, args: &[&str], stdin: &[u8]) -> String {
    let (want_out, want_status) = run_native(native, args, stdin);
    let (out, status, stderr) = run_rv(rv, args, stdin);
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want_out),
        "{name}: stdout differs from the native run (stderr under softmm-rv:\n{stderr})"
    );
    assert_eq!(status, want_status, "{name}: exit status differs (stderr under softmm-rv:\n{stderr})");
    stderr
}

#[test]
fn hello() {
    same_as_native("hello", &["one", "two words", "-x"]);
}

#[test]
fn malloc_and_big_allocations() {
    same_as_native("malloc", &[]);
}

#[test]
fn integer_and_float_arithmetic() {
    same_as_native("arith", &[]);
}

#[test]
fn string_functions() {
    same_as_native("strings", &[]);
}

#[test]
fn deep_recursion() {
    same_as_native("recursion", &[]);
}

#[test]
fn atomic_operations() {
    same_as_native("atomics", &[]);
}

#[test]
fn exit_status_is_the_programs() {
    same_as_native("exitcode", &["a", "b"]);
}

#[test]
fn initial_stack_and_auxv() {
    same_as_native("auxv", &["first", "", "third"]);
}

#[test]
fn null_store_is_sigsegv() {
    let stderr = same_as_native("segv", &[]);
    assert!(stderr.contains("Segmentation fault"), "no SIGSEGV message on stderr: {stderr}");
    assert!(stderr.contains("0x0"), "the message does not name the address: {stderr}");
}

#[test]
fn rounding_modes_and_exception_flags() {
    same_as_native("fenv", &[]);
}

/// Errors and semantics of the system calls, as Linux answers them.
#[test]
fn system_call_answers() {
    same_as_native("syscalls", &[]);
}

/// Random integer operations of every width (mulh*, *w, div/rem, shifts).
#[test]
fn random_integer_operations() {
    same_as_native("intrand", &[]);
}

/// Thousands of random operations in every rounding mode, bits and flags.
#[test]
fn random_float_operations_bit_exact() {
    same_as_native("fprand", &[]);
}

#[test]
fn reads_standard_input_to_the_end() {
    same_as_native_with_input("stdin", &[], b"first line\nsecond, longer line\n\nno newline at the end");
}

#[test]
fn abort_is_sigabrt() {
    let stderr = same_as_native("abort", &[]);
    assert!(stderr.contains("Aborted"), "{stderr}");
}

#[test]
fn illegal_instruction_is_sigill_and_ebreak_sigtrap() {
    let stderr = same_as_native("sigill", &[]);
    assert!(stderr.contains("Illegal instruction"), "{stderr}");
    let stderr = same_as_native("sigill", &["trap"]);
    assert!(stderr.contains("Trace/breakpoint trap"), "{stderr}");
}

/// The decoded-instruction cache sees rewritten code after the flush
/// system call, and remapped or unmapped code through softmm's notifiers.
#[test]
fn code_written_at_run_time() {
    let stderr = same_as_native("jit", &[]);
    assert!(stderr.contains("Segmentation fault"), "{stderr}");
}

/// The decoded-instruction cache, one invalidation rule per part (each
/// part's comment in `coherence.c` says which event it relies on and what
/// would print were it skipped): fence.i alone, PROT_EXEC taken from code
/// that ran and given back (SEGV_ACCERR between), a replacement mapping
/// with no flush call, a private copy dropped by MADV_DONTNEED, and a
/// fork's child and parent each running their own version of a page.
/// Not compared with qemu-riscv64, whose MADV_DONTNEED leaves a private
/// file mapping's copy in place.
#[test]
fn decoded_instruction_cache_coherence() {
    same_as_native("coherence", &[]);
}

#[test]
fn static_pie() {
    toolchain();
    let native = compile("pie", Build::NativePie);
    let rv = compile("pie", Build::RiscvPie);
    compare("pie", &native, &rv, &[], b"");
}

#[test]
fn unknown_system_calls_are_reported() {
    toolchain();
    let stderr = same_as_native("unknown", &[]);
    assert!(stderr.contains("system calls answered ENOSYS"), "no report: {stderr}");
    assert!(stderr.contains("1000 ?"), "syscall 1000 not counted: {stderr}");
    // A program whose every call is known says so.
    let rv = compile("malloc", Build::Riscv);
    let (_, status, stderr) = run_rv(&rv, &[], b"");
    assert_eq!(status, 0);
    assert!(stderr.contains("every system call was known"), "{stderr}");
}

/// glibc's realloc of mmap'd blocks: mremap with MREMAP_MAYMOVE, growing
/// (in place and moved) and shrinking, contents kept.
#[test]
fn realloc_of_big_blocks_uses_mremap() {
    let stderr = same_as_native("realloc", &[]);
    assert!(!stderr.contains("216"), "mremap answered ENOSYS: {stderr}");
}

/// mremap with each flag (none, MAYMOVE, FIXED, DONTUNMAP), its errors,
/// SIGBUS past a grown shared mapping's object, and code moved away: the
/// old address faults rather than running decoded instructions a hart
/// kept. Not compared with qemu-riscv64, which answers a new length of 0
/// with ENOMEM (Linux: EINVAL).
#[test]
fn mremap_flags_and_errors() {
    same_as_native("mremap", &[]);
}

/// /proc/self/maps, smaps and pagemap: lines, figures and VmFlags of a
/// region through mlock, munlock and madvise, named heap, stack and
/// shared memory, pagemap's present bits, /proc/PID of the caller.
#[test]
fn proc_maps_smaps_pagemap() {
    same_as_native("procmaps", &[]);
}

/// System V shared memory: shmget, shmat, shmdt, shmctl, across fork, with
/// a shared futex on a segment.
#[test]
fn sysv_shared_memory() {
    same_as_native("sysvshm", &[]);
}

/// Threads on host threads: mutex, condvar and barrier counters, joins,
/// thread-local storage, pthread_exit.
#[test]
fn threads_mutex_condvar_barrier() {
    same_as_native("threads", &[]);
}

/// exit() in main ends threads blocked in a futex and threads spinning.
#[test]
fn exit_in_main_ends_every_thread() {
    same_as_native("threads", &["exit-main"]);
}

/// exit() in another thread ends the process while main waits in join.
#[test]
fn exit_in_a_thread_ends_the_process() {
    same_as_native("threads", &["exit-thread"]);
}

/// A fault in one thread kills the whole process.
#[test]
fn fault_in_a_thread_kills_the_process() {
    let stderr = same_as_native("threads", &["fault-thread"]);
    assert!(stderr.contains("Segmentation fault"), "{stderr}");
}

/// The robust-list walk at thread exit: EOWNERDEAD, consistent,
/// ENOTRECOVERABLE, and a waiter woken when the owner dies.
#[test]
fn robust_mutex_owner_dies() {
    same_as_native("robust", &[]);
}

/// Priority-inheritance mutexes (FUTEX_LOCK_PI, TRYLOCK_PI, UNLOCK_PI)
/// contended by threads, trylock, a timed lock, errors, and a robust PI
/// mutex handed on when its owner exits. Not compared with
/// qemu-riscv64, under which this program prints nothing (its user mode
/// does not carry PI futexes through).
#[test]
fn priority_inheritance_mutexes() {
    let stderr = same_as_native("pi", &[]);
    assert!(stderr.contains("every system call was known"), "{stderr}");
}

/// FUTEX_WAIT_REQUEUE_PI and FUTEX_CMP_REQUEUE_PI used directly as a
/// condition variable over a PI mutex (held by the broadcaster, and
/// free): each waiter returns owning the mutex and unlocks it; a
/// signalled waiter runs its handler and goes on waiting, one signalled
/// once requeued answers EAGAIN after it; the calls' errors and deadlines; ESRCH for a lock owned by a thread id no thread
/// has. Not compared with qemu-riscv64 (no PI futexes in its user mode).
#[test]
fn requeue_pi_condition_variable() {
    let stderr = same_as_native("requeuepi", &[]);
    assert!(stderr.contains("every system call was known"), "{stderr}");
}

/// fork trees with copy-on-write checks, wait statuses of exits and
/// signals, waitid, WNOHANG, ECHILD, kill, a process-shared mutex in
/// MAP_SHARED memory.
#[test]
fn fork_wait_and_shared_memory() {
    same_as_native("fork", &[]);
}

/// execve chains (arguments and environment), vfork + exec, exec errors.
/// Not compared with qemu-riscv64: qemu-user hands execve to the host
/// kernel, which cannot run a riscv64 program without binfmt_misc.
#[test]
fn execve_vfork_and_chains() {
    same_as_native("exec", &[]);
}

/// Signal delivery with Linux's riscv64 frame: guard-page SIGSEGV with
/// si_addr/si_code and siglongjmp, raise with SA_SIGINFO, blocking,
/// SA_RESETHAND, SA_NODEFER, SA_ONSTACK, FP state across a handler,
/// pthread_kill, SIGCHLD with SA_RESTART around waitpid, sigsuspend,
/// default actions seen by wait. Not compared with qemu-riscv64, whose
/// handlers run without the action's sa_mask blocked (Linux blocks it).
#[test]
fn signal_handlers_and_frames() {
    same_as_native("signals", &[]);
}

/// A scratch directory for the file-call program (its own per caller:
/// tests run in parallel).
fn scratch(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_str().unwrap().to_string()
}

/// File calls over host files: open/read/write/pread/pwrite/lseek,
/// stat/fstat/statx, dup/dup3/fcntl, chdir/getcwd, mkdir/unlinkat,
/// ftruncate, pipes between processes, memfd, stdio on files.
#[test]
fn file_calls() {
    let dir = scratch("rv-files");
    same_as_native("files", &[&dir]);
}

/// mmap of a file descriptor: MAP_SHARED stores seen by read(2) and
/// pread (with and without msync), write and pwrite seen through the
/// mapping, a second mapping and a forked child sharing the pages,
/// MAP_PRIVATE (later pwrite/write seen on pages it has not written, its
/// stores never reaching the file), SIGBUS past the end of shared and
/// private mappings, ftruncate growth, and mmap's descriptor errors; the
/// file's final bytes.
#[test]
fn mmap_of_files() {
    let dir = scratch("rv-mmapfile");
    let stderr = same_as_native("mmapfile", &[&dir]);
    assert!(stderr.contains("every system call was known"), "{stderr}");
}

/// A program whose PT_GNU_STACK asks for an executable stack (a GCC
/// nested function called through a trampoline on the stack) runs.
#[test]
fn executable_stack_when_the_program_asks() {
    same_as_native("execstack", &[]);
}

/// Robust and PI mutexes in MAP_SHARED memory between processes: the
/// owner process exits or is killed holding the lock (also while the
/// other waits in it), EOWNERDEAD, consistent, ENOTRECOVERABLE, a PI
/// counter across processes. Not compared with qemu-riscv64, which keeps
/// no robust lists (its locks time out).
#[test]
fn process_shared_robust_and_pi_mutexes() {
    let stderr = same_as_native("pshared", &[]);
    assert!(stderr.contains("every system call was known"), "{stderr}");
}

/// ftruncate down under live file mappings: SIGBUS with BUS_ADRERR and
/// si_addr past the new end (shared pages, a forked child's, a private
/// mapping's pages and its own copies of them), zeros past the end of the partial page,
/// growth back to zeros; msync; a memfd shared by a parent and its forked
/// children, truncated too; msync's errors.
#[test]
fn truncation_under_mappings_and_memfd() {
    let dir = scratch("rv-truncate");
    let stderr = same_as_native("truncate", &[&dir]);
    assert!(stderr.contains("every system call was known"), "{stderr}");
}

/// The corpus built against musl, the reference being the same program
/// built with the host's musl-gcc (glibc and musl print some things
/// differently, `%a` of a subnormal for one; `fprand` is the exception,
/// see below). Left out, because musl 1.2.3
/// (Debian 12's) gets them wrong on riscv64 itself, on Linux too:
/// `signals` (its rt_sigaction passes an `sa_restorer` field riscv64 Linux
/// does not have, so the kernel takes the restorer's address as
/// `sa_mask`), `jit` (its `__riscv_flush_icache` returns without flushing
/// when there is no vDSO); and, because they do not build against musl
/// 1.2.3: `files` (no `struct statx`), `syscalls` and `stdin`
/// (`strerrorname_np`), `requeuepi` (`linux/futex.h`).
const MUSL_CASES: [(&str, &[&str]); 27] = [
    ("hello", &["one", "two words", "-x"]),
    ("malloc", &[]),
    ("arith", &[]),
    ("strings", &[]),
    ("recursion", &[]),
    ("atomics", &[]),
    ("exitcode", &["a", "b"]),
    ("auxv", &["first", "", "third"]),
    ("segv", &[]),
    ("fenv", &[]),
    ("intrand", &[]),
    ("fprand", &[]),
    ("abort", &[]),
    ("sigill", &[]),
    ("sigill", &["trap"]),
    ("unknown", &[]),
    ("realloc", &[]),
    ("mremap", &[]),
    ("threads", &[]),
    ("threads", &["exit-main"]),
    ("threads", &["exit-thread"]),
    ("threads", &["fault-thread"]),
    ("robust", &[]),
    ("pi", &[]),
    ("pshared", &[]),
    ("fork", &[]),
    ("exec", &[]),
];

/// musl's riscv64 build under softmm-rv against the host's musl build on
/// Linux, program by program (plus the two that take a scratch directory);
/// every system call musl makes is known. Without musl (no network for
/// Debian's source, no apt) it says why and runs nothing.
#[test]
fn musl_programs_same_as_native() {
    if let Err(why) = musl() {
        eprintln!("musl programs not run: {why}");
        return;
    }
    let mmapfile = scratch("rv-musl-mmapfile");
    let truncate = scratch("rv-musl-truncate");
    let with_dirs: [(&str, &[&str]); 2] = [("mmapfile", &[&mmapfile]), ("truncate", &[&truncate])];
    for (name, args) in MUSL_CASES.iter().chain(with_dirs.iter()) {
        // x86-64 musl's fma is software that raises no FE_INVALID for
        // inf * 0 + c (riscv64's fmadd and x86-64 glibc's fma do): the
        // reference for the random float program is the glibc build.
        let reference = if *name == "fprand" { Build::Native } else { Build::NativeMusl };
        let native = compile(name, reference);
        let rv = compile(name, Build::RiscvMusl);
        let stderr = compare(&format!("{name} (musl)"), &native, &rv, args, b"");
        if *name != "unknown" {
            assert!(
                !stderr.contains("answered ENOSYS"),
                "{name} (musl): a system call musl makes is unknown: {stderr}"
            );
        }
    }
}

/// The same riscv64 musl builds under qemu-riscv64. Not compared there:
/// `robust`, `pshared` (qemu keeps no robust lists), `pi` (no PI futexes
/// in its user mode), `exec` (qemu hands execve to the host kernel),
/// `mremap` (qemu answers a new length of 0 with ENOMEM; Linux: EINVAL).
#[test]
fn musl_programs_same_as_qemu() {
    if let Err(why) = musl() {
        eprintln!("musl programs not run: {why}");
        return;
    }
    let truncate = scratch("rv-musl-truncate-qemu");
    let with_dirs: [(&str, &[&str]); 1] = [("truncate", &[&truncate])];
    let skip = ["robust", "pshared", "pi", "exec", "mremap"];
    for (name, args) in MUSL_CASES.iter().chain(with_dirs.iter()).filter(|(n, _)| !skip.contains(n)) {
        let rv = compile(name, Build::RiscvMusl);
        let (want_out, want_status) = run_qemu(&rv, args, b"");
        let (out, status, stderr) = run_rv(&rv, args, b"");
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want_out),
            "{name} (musl): stdout differs from qemu's (stderr under softmm-rv:\n{stderr})"
        );
        assert_eq!(status, want_status, "{name} (musl): status differs from qemu's (stderr:\n{stderr})");
    }
}

/// Every program, the riscv64 build, under softmm-rv and under
/// qemu-riscv64: the same stdout and status.
#[test]
fn same_as_qemu() {
    toolchain();
    let cases: [(&str, &[&str], &[u8]); 22] = [
        ("hello", &["one", "two words"], b""),
        ("malloc", &[], b""),
        ("arith", &[], b""),
        ("strings", &[], b""),
        ("recursion", &[], b""),
        ("atomics", &[], b""),
        ("exitcode", &["a"], b""),
        ("auxv", &["x", ""], b""),
        ("segv", &[], b""),
        ("abort", &[], b""),
        ("sigill", &["trap"], b""),
        ("stdin", &[], b"some\ninput\n"),
        ("fenv", &[], b""),
        ("fprand", &[], b""),
        ("intrand", &[], b""),
        ("jit", &[], b""),
        ("threads", &[], b""),
        ("threads", &["exit-main"], b""),
        ("threads", &["fault-thread"], b""),
        ("robust", &[], b""),
        ("fork", &[], b""),
        ("realloc", &[], b""),
    ];
    for (name, args, stdin) in cases {
        let rv = compile(name, Build::Riscv);
        let (want_out, want_status) = run_qemu(&rv, args, stdin);
        let (out, status, stderr) = run_rv(&rv, args, stdin);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want_out),
            "{name}: stdout differs from qemu's (stderr under softmm-rv:\n{stderr})"
        );
        assert_eq!(status, want_status, "{name}: status differs from qemu's (stderr:\n{stderr})");
    }
    let dir = scratch("rv-mmapfile-qemu");
    let rv = compile("mmapfile", Build::Riscv);
    let (want, want_status) = run_qemu(&rv, &[&dir], b"");
    let (out, status, stderr) = run_rv(&rv, &[&dir], b"");
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want), "mmapfile: differs from qemu ({stderr})");
    assert_eq!(status, want_status, "mmapfile: status differs from qemu ({stderr})");
    let dir = scratch("rv-truncate-qemu");
    let rv = compile("truncate", Build::Riscv);
    let (want, want_status) = run_qemu(&rv, &[&dir], b"");
    let (out, status, stderr) = run_rv(&rv, &[&dir], b"");
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want), "truncate: differs from qemu ({stderr})");
    assert_eq!(status, want_status, "truncate: status differs from qemu ({stderr})");
    let dir = scratch("rv-files-qemu");
    let rv = compile("files", Build::Riscv);
    let (want, want_status) = run_qemu(&rv, &[&dir], b"");
    let (out, status, stderr) = run_rv(&rv, &[&dir], b"");
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want), "files: differs from qemu ({stderr})");
    assert_eq!(status, want_status, "files: status differs from qemu ({stderr})");
    let pie = compile("pie", Build::RiscvPie);
    assert_eq!(run_qemu(&pie, &[], b""), {
        let (o, s, _) = run_rv(&pie, &[], b"");
        (o, s)
    });
}

/// Memory running out (a small frame arena) ends the program as a kernel
/// would end it, without taking the host down.
#[test]
fn out_of_memory_is_not_a_host_failure() {
    toolchain();
    let rv = compile("malloc", Build::Riscv);
    let mut opts = ExecOptions::new(&rv);
    let (out, _) = Output::capture();
    let (err, err_buf) = Output::capture();
    opts.stdout = out;
    opts.stderr = err;
    opts.arena_bytes = 4 << 20;
    let exit = exec(&rv, opts).unwrap();
    let stderr = String::from_utf8_lossy(&err_buf.lock().unwrap()).into_owned();
    // The page fault that finds no frame: the OOM killer's SIGKILL.
    assert_eq!(exit.status, 128 + 9, "{stderr}");
    assert!(stderr.contains("Killed (out of memory at"), "{stderr}");
}

#[test]
fn bad_executables_are_errors() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rv-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("script");
    std::fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    let err = exec(&script, ExecOptions::new(&script)).unwrap_err();
    assert!(err.to_string().contains("not an ELF file"), "{err}");
    let missing = dir.join("missing");
    let err = exec(&missing, ExecOptions::new(&missing)).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
    // A host (x86-64) executable is the wrong machine.
    let host = std::env::current_exe().unwrap();
    let err = exec(&host, ExecOptions::new(&host)).unwrap_err();
    assert!(err.to_string().contains("not a RISC-V executable"), "{err}");
}

/// Options for a snapshot server over `rv` (the corpus's argv and
/// environment, output before the marker captured).
fn server_opts(rv: &Path, args: &[&str]) -> ExecOptions {
    let mut opts = ExecOptions::new(rv);
    opts.argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
    opts.envp = ENV.iter().map(|s| s.as_bytes().to_vec()).collect();
    opts.stdout = Output::capture().0;
    opts.stderr = Output::capture().0;
    opts.arena_bytes = 1 << 30;
    opts
}

/// The snapshot server: each input's run, from a snapshot taken at the
/// marker (the marker call, or the first read of standard input), prints
/// and ends as a fresh `softmm exec` run of the program with that input;
/// inputs repeat and alternate, so a run that saw an earlier run's writes
/// (heap, table, break, mappings) would print other numbers.
#[test]
fn snapshot_server_runs_equal_fresh_runs() {
    use softmm_rv::server::{Marker, SnapshotServer};
    toolchain();
    let rv = compile("snapserver", Build::Riscv);
    let long: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let inputs: [&[u8]; 9] = [
        b"hello",
        b"",
        &long,
        b"x\x05 exit five",
        b"!fault",
        b"t: a thread and a child",
        b"hello",
        b"another input",
        &long,
    ];
    // Fresh runs, one per distinct input (the "stdin" argument changes
    // nothing but the marker call).
    let mut fresh = BTreeMap::new();
    let t = std::time::Instant::now();
    for input in inputs {
        fresh.entry(input).or_insert_with(|| run_rv(&rv, &[], input));
    }
    let fresh_each = t.elapsed() / fresh.len() as u32;
    for (marker, args) in [(Marker::Call, &[][..]), (Marker::StdinRead, &["stdin"][..])] {
        let t = std::time::Instant::now();
        let mut server = SnapshotServer::start(&rv, server_opts(&rv, args), marker)
            .unwrap_or_else(|e| panic!("{marker:?}: the server did not start: {e}"));
        let started = t.elapsed();
        let t = std::time::Instant::now();
        for round in 0..2 {
            for input in inputs {
                let run = server.run(input).unwrap_or_else(|e| panic!("{marker:?}: run failed: {e}"));
                let (out, status, stderr) = fresh[input].clone();
                let what = format!("{marker:?}, round {round}, input of {} bytes", input.len());
                assert_eq!(
                    String::from_utf8_lossy(&run.stdout),
                    String::from_utf8_lossy(&out),
                    "{what}: the server's run printed otherwise than a fresh run (fresh stderr:\n{stderr})"
                );
                assert_eq!(run.status, status, "{what}: status");
                assert!(!run.timed_out);
                if input.first() == Some(&b'!') {
                    assert_eq!(run.signal, Some(11), "{what}");
                    assert!(String::from_utf8_lossy(&run.stderr).contains("Segmentation fault"), "{what}");
                }
                assert!(run.instret > 0);
            }
        }
        let each = t.elapsed() / (2 * inputs.len() as u32);
        eprintln!("{marker:?}: start {started:?}, a run from the snapshot {each:?}, a fresh run {fresh_each:?}");
        assert!(server.unknown_syscalls().is_empty(), "{:?}", server.unknown_syscalls());
    }
}

/// A run past its time limit is killed and reported; the next run starts
/// from the marker as every run does.
#[test]
fn snapshot_server_time_limit() {
    use softmm_rv::server::{Marker, SnapshotServer};
    toolchain();
    let rv = compile("snapserver", Build::Riscv);
    let mut server = SnapshotServer::start(&rv, server_opts(&rv, &[]), Marker::Call).unwrap();
    server.set_timeout(Some(std::time::Duration::from_millis(300)));
    let run = server.run(b"loop").unwrap();
    assert!(run.timed_out);
    assert_eq!((run.status, run.signal), (128 + 9, Some(9)));
    let run = server.run(b"hello").unwrap();
    let (out, status, _) = run_rv(&rv, &[], b"hello");
    assert_eq!(String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&out));
    assert_eq!((run.status, run.timed_out), (status, false));
}

/// A program with a second thread at the marker is refused with a clear
/// error, and one that ends before the marker says how it ended.
#[test]
fn snapshot_server_refuses_threads_and_a_missing_marker() {
    use softmm_rv::server::{Marker, ServerError, SnapshotServer};
    toolchain();
    let rv = compile("snapserver", Build::Riscv);
    match SnapshotServer::start(&rv, server_opts(&rv, &["thread"]), Marker::Call) {
        Err(e @ ServerError::NotSingleThreaded { threads: 2, processes: 0 }) => {
            assert!(e.to_string().contains("single-threaded"), "{e}")
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a program with two threads at the marker was taken"),
    }
    match SnapshotServer::start(&rv, server_opts(&rv, &["early"]), Marker::Call) {
        Err(ServerError::NoMarker { status: 3, signal: None, .. }) => {}
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a program that exits before the marker was taken"),
    }
}
