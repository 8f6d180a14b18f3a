//! A real third-party program: the Lua 5.4 interpreter, built at test time
//! from the C sources the `lua-src` crate ships (a dev-dependency; they are
//! read where cargo unpacked them, never copied here) with a front end of
//! our own (`tests/lua/driver.c`: the crate has no `lua.c`). It is built
//! natively with gcc (the reference: real Linux runs it) and with
//! `riscv64-linux-gnu-gcc -static -O2 -DLUA_USE_LINUX`, and each script of
//! `tests/lua/` runs natively, under softmm-rv (what `softmm exec` runs)
//! and under qemu-riscv64: the same stdout and exit status from all three.
//!
//! The scripts are a workload, not unit tests of Lua: string formatting and
//! patterns, tables and metatables, closures and errors, coroutines, a
//! garbage-collector stress whose big arrays and strings glibc's malloc
//! serves with mmap, grows with mremap and returns with munmap, and three
//! small benchmarks with fixed sizes (n-body, fannkuch-redux,
//! binary-trees). Every system call the interpreter makes must be known.
//!
//! Without the cross compiler (not installed, and `scripts/rv-toolchain.sh`
//! cannot install it) or without Lua's sources the tests say why on stderr
//! and run nothing; without qemu-riscv64 they say so and compare with
//! Linux alone.

use softmm_rv::io::{Input, Output};
use softmm_rv::{exec, ExecOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

const CROSS: &str = "riscv64-linux-gnu-gcc";
const QEMU: &str = "qemu-riscv64";
const ENV: [&str; 3] = ["HOME=/nonexistent", "LANG=C", "SOFTMM_TEST=1"];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The cross compiler (installed by `scripts/rv-toolchain.sh` if missing),
/// or why it cannot be had.
fn cross_compiler() -> Result<(), String> {
    if have(CROSS) && have(QEMU) {
        return Ok(());
    }
    let script = manifest_dir().join("../../scripts/rv-toolchain.sh");
    let o =
        Command::new("bash").arg(&script).output().map_err(|e| format!("{} could not run: {e}", script.display()))?;
    if have(CROSS) {
        return Ok(());
    }
    Err(format!(
        "{CROSS} is missing and {} did not install it ({}): {}",
        script.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr).trim()
    ))
}

/// The `lua-src` version Cargo.lock resolved.
fn lua_src_version() -> Result<String, String> {
    let lock = manifest_dir().join("../../Cargo.lock");
    let text = std::fs::read_to_string(&lock).map_err(|e| format!("cannot read {}: {e}", lock.display()))?;
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"lua-src\"" {
            if let Some(v) = lines.next().and_then(|v| v.trim().strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_string());
            }
        }
    }
    Err(format!("no lua-src package in {}", lock.display()))
}

/// The directory of Lua 5.4's C sources inside the unpacked `lua-src`
/// crate (`$CARGO_HOME/registry/src/*/lua-src-VERSION/lua-5.4.*`).
fn lua_sources() -> Result<PathBuf, String> {
    let version = lua_src_version()?;
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let registry = home.join("registry/src");
    let crate_dir = format!("lua-src-{version}");
    let indexes = std::fs::read_dir(&registry).map_err(|e| format!("cannot list {}: {e}", registry.display()))?;
    for index in indexes.flatten() {
        let Ok(dirs) = std::fs::read_dir(index.path().join(&crate_dir)) else { continue };
        for d in dirs.flatten() {
            let name = d.file_name();
            if name.to_string_lossy().starts_with("lua-5.4") && d.path().join("lua.h").exists() {
                return Ok(d.path());
            }
        }
    }
    Err(format!("no {crate_dir}/lua-5.4.*/lua.h under {} (cargo fetches the crate for the tests)", registry.display()))
}

/// The two interpreters.
struct Builds {
    native: PathBuf,
    rv: PathBuf,
}

/// Build `lua` both ways once per test process (reused from an earlier
/// process when newer than the front end), or why it cannot be built.
fn builds() -> Result<&'static Builds, String> {
    static BUILT: OnceLock<Result<Builds, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            cross_compiler()?;
            let src = lua_sources()?;
            // Per Lua version: a new lua-src never reuses an old build.
            let version = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lua").join(version);
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let native = dir.join("lua.native");
            let rv = dir.join("lua.rv");
            // The two builds at once: each takes seconds.
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(|| build("gcc", &[], &src, &native));
                let b = s.spawn(|| build(CROSS, &["-static"], &src, &rv));
                (a.join(), b.join())
            });
            a.map_err(|_| "the native build panicked".to_string())??;
            b.map_err(|_| "the riscv64 build panicked".to_string())??;
            Ok(Builds { native, rv })
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn build(cc: &str, extra: &[&str], src: &Path, out: &Path) -> Result<(), String> {
    let driver = manifest_dir().join("tests/lua/driver.c");
    let newer = |a: &Path, b: &Path| -> bool {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((m(a), m(b)), (Some(x), Some(y)) if x > y)
    };
    if newer(out, &driver) {
        return Ok(());
    }
    let mut sources: Vec<PathBuf> = std::fs::read_dir(src)
        .map_err(|e| format!("cannot list {}: {e}", src.display()))?
        .flatten()
        .map(|d| d.path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    let tmp = out.with_extension("tmp");
    let o = Command::new(cc)
        .args(["-O2", "-DLUA_USE_LINUX", "-I"])
        .arg(src)
        .args(extra)
        .arg("-o")
        .arg(&tmp)
        .arg(&driver)
        .args(&sources)
        .arg("-lm")
        .output()
        .map_err(|e| format!("{cc} could not run: {e}"))?;
    if !o.status.success() {
        return Err(format!("{cc} failed building lua:\n{}", String::from_utf8_lossy(&o.stderr)));
    }
    std::fs::rename(&tmp, out).map_err(|e| format!("cannot move {} to {}: {e}", tmp.display(), out.display()))
}

/// (stdout, status as a shell sees it).
fn run_host(mut cmd: Command, args: &[&str]) -> (Vec<u8>, i32, String) {
    use std::os::unix::process::ExitStatusExt;
    cmd.args(args).env_clear().current_dir(manifest_dir());
    for kv in ENV {
        let (k, v) = kv.split_once('=').unwrap();
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    let status = o.status.code().unwrap_or_else(|| 128 + o.status.signal().unwrap());
    (o.stdout, status, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// (stdout, status, stderr) under softmm-rv.
fn run_rv(bin: &Path, args: &[&str]) -> (Vec<u8>, i32, String) {
    let mut opts = ExecOptions::new(bin);
    opts.argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
    opts.envp = ENV.iter().map(|s| s.as_bytes().to_vec()).collect();
    let (out, out_buf) = Output::capture();
    let (err, err_buf) = Output::capture();
    opts.stdout = out;
    opts.stderr = err;
    opts.stdin = Input::Bytes(Arc::new(Vec::new()), 0);
    opts.report_syscalls = true;
    opts.arena_bytes = 1 << 30;
    let exit = exec(bin, opts).unwrap_or_else(|e| panic!("exec {}: {e}", bin.display()));
    let stdout = out_buf.lock().unwrap().clone();
    let stderr = String::from_utf8_lossy(&err_buf.lock().unwrap()).into_owned();
    (stdout, exit.status, stderr)
}

/// Run `tests/lua/NAME.lua` natively, under softmm-rv and under qemu;
/// all must agree.
fn script(name: &str) {
    let b = match builds() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("lua {name}: not run: {why}");
            return;
        }
    };
    let path = format!("tests/lua/{name}.lua");
    let args = [path.as_str()];
    let (want, want_status, native_err) = run_host(Command::new(&b.native), &args);
    assert_eq!(want_status, 0, "{name}: the native run failed:\n{native_err}");
    assert!(!want.is_empty(), "{name}: the native run printed nothing");
    let (out, status, stderr) = run_rv(&b.rv, &args);
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want),
        "{name}: stdout under softmm-rv differs from the native run (stderr:\n{stderr})"
    );
    assert_eq!(status, want_status, "{name}: status under softmm-rv differs (stderr:\n{stderr})");
    assert!(stderr.contains("every system call was known"), "{name}: {stderr}");
    if !have(QEMU) {
        eprintln!("lua {name}: {QEMU} is missing: compared with Linux only");
        return;
    }
    let mut q = Command::new(QEMU);
    q.arg(&b.rv);
    let (qout, qstatus, qerr) = run_host(q, &args);
    assert_eq!(
        String::from_utf8_lossy(&qout),
        String::from_utf8_lossy(&want),
        "{name}: stdout under qemu-riscv64 differs from the native run (stderr:\n{qerr})"
    );
    assert_eq!(qstatus, want_status, "{name}: status under qemu-riscv64 differs (stderr:\n{qerr})");
}

#[test]
fn lua_strings() {
    script("strings");
}

#[test]
fn lua_tables() {
    script("tables");
}

#[test]
fn lua_closures_and_errors() {
    script("closures");
}

#[test]
fn lua_coroutines() {
    script("coroutines");
}

/// Garbage churn, big arrays and strings through mmap, mremap and munmap,
/// finalizers, both collector modes.
#[test]
fn lua_gc_stress() {
    script("gc");
}

#[test]
fn lua_nbody() {
    script("nbody");
}

#[test]
fn lua_fannkuch() {
    script("fannkuch");
}

#[test]
fn lua_binary_trees() {
    script("binarytrees");
}

/// A script error: the message and traceback on stderr, status 1, on
/// every machine.
#[test]
fn lua_error_status() {
    let b = match builds() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("lua error status: not run: {why}");
            return;
        }
    };
    let args = ["tests/lua/missing-script.lua"];
    let (_, want_status, native_err) = run_host(Command::new(&b.native), &args);
    assert_eq!(want_status, 1, "{native_err}");
    let (_, status, stderr) = run_rv(&b.rv, &args);
    assert_eq!(status, want_status, "{stderr}");
    assert!(stderr.contains("cannot open tests/lua/missing-script.lua"), "{stderr}");
}
