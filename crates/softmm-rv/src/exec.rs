//! execve: the program named by a host path replaces the calling
//! process's program. The new image is loaded into a fresh softmm address
//! space first, so every failure before that point is an error the old
//! program sees; then the other threads leave, the calling thread's
//! `mm_release` runs on the old space, the process switches spaces, the
//! signal handlers go back to their defaults (ignored signals stay
//! ignored), and the hart starts over at the new entry point. A vfork
//! parent resumes here.

use crate::elf::Elf;
use crate::errno::{E2BIG, EACCES, EFAULT, EIO, ENOENT, ENOEXEC};
use crate::hart::Hart;
use crate::loader::{load, LoadError, StartInfo};
use crate::mem::Memory;
use crate::signal::{SigAction, SIG_IGN};
use crate::syscall::Kernel;
use crate::task::lock;
use crate::thread::prepare;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Linux's bound on one argument or environment string (32 pages).
const MAX_ARG_STRLEN: usize = 32 * 4096;
/// Linux's bound on the number of strings.
const MAX_ARG_STRINGS: usize = 0x7fff_ffff;
const PATH_MAX: usize = 4096;

/// The user and group ids the auxiliary vector reports (the host's).
pub fn host_ids() -> [u64; 4] {
    [
        u64::from(rustix::process::getuid().as_raw()),
        u64::from(rustix::process::geteuid().as_raw()),
        u64::from(rustix::process::getgid().as_raw()),
        u64::from(rustix::process::getegid().as_raw()),
    ]
}

/// A NULL-terminated guest array of string pointers (NULL itself: none).
fn read_strings(hart: &mut Hart, mut at: u64) -> Result<Vec<Vec<u8>>, i32> {
    let mut out = Vec::new();
    if at == 0 {
        return Ok(out);
    }
    loop {
        let p = hart.mem.load(at, 8).map_err(|_| EFAULT)?;
        if p == 0 {
            return Ok(out);
        }
        if out.len() >= MAX_ARG_STRINGS {
            return Err(E2BIG);
        }
        let s = hart.mem.read_cstr(p, MAX_ARG_STRLEN + 1).map_err(|_| EFAULT)?;
        if s.len() > MAX_ARG_STRLEN {
            return Err(E2BIG);
        }
        out.push(s);
        at = at.wrapping_add(8);
    }
}

/// The file's bytes, if it is a regular file the host lets us execute.
fn read_executable(path: &Path) -> Result<Vec<u8>, i32> {
    let os = |e: std::io::Error| e.raw_os_error().unwrap_or(EIO);
    let meta = std::fs::metadata(path).map_err(os)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(EACCES);
    }
    std::fs::read(path).map_err(os)
}

impl Kernel {
    /// execve(path, argv, envp). On success the hart holds the new
    /// program and nothing is returned to the old one.
    pub(crate) fn execve(&mut self, hart: &mut Hart, path: u64, argv: u64, envp: u64) -> Result<(), i32> {
        let name = hart.mem.read_cstr(path, PATH_MAX).map_err(|_| EFAULT)?;
        if name.is_empty() {
            return Err(ENOENT);
        }
        let argv = read_strings(hart, argv)?;
        let envp = read_strings(hart, envp)?;
        let host = self.host_path(&name);
        let file = read_executable(&host)?;
        // Scripts (#!) are not run: only riscv64 ELF executables.
        let elf = Elf::parse(&file).map_err(|_| ENOEXEC)?;
        let mm = self.mm.machine().new_mm().map_err(|e| e.errno())?;
        let mut random = [0u8; 16];
        crate::io::random_bytes(&mut random).map_err(|_| EIO)?;
        let info = StartInfo { argv: &argv, envp: &envp, execfn: &name, random, ids: host_ids() };
        let image = load(&mm, &file, &elf, &info).map_err(|e| match e {
            LoadError::ArgsTooLong => E2BIG,
            LoadError::Elf(_) => ENOEXEC,
            LoadError::Memory(e) => e.errno(),
        })?;
        let tramp = crate::sigframe::map_trampoline(&mm).map_err(|e| e.errno())?;
        // The point of no return.
        for t in self.p.threads() {
            if t.tid != self.tid {
                t.kill();
            }
        }
        self.p.wait_alone(self.tid);
        self.mm_release(hart);
        let exe = std::fs::canonicalize(&host).unwrap_or(host);
        let mm = Arc::new(mm);
        self.p.replace_mm(mm.clone(), image.brk, exe.as_os_str().as_bytes().to_vec(), tramp);
        self.mm = mm;
        self.altstack = (0, 0, true);
        lock(&self.p.files).close_on_exec();
        for a in lock(&self.p.actions).iter_mut() {
            let ignored = a.handler == SIG_IGN;
            *a = SigAction::default();
            if ignored {
                a.handler = SIG_IGN;
            }
        }
        self.p.instret.fetch_add(hart.instret, Ordering::SeqCst);
        let mut h = Hart::new(Memory::new(self.mm.accessor()), image.entry, image.sp);
        prepare(&mut h, &self.p, &self.ctl);
        *hart = h;
        self.p.release();
        Ok(())
    }
}
