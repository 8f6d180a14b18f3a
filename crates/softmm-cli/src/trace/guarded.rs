//! Real loads and stores that survive SIGSEGV (x86-64 Linux only).
//!
//! The Linux runner must touch memory with real CPU instructions, so that the
//! kernel takes real faults, and report a SIGSEGV's `si_code` instead of
//! dying. Rust cannot use `sigsetjmp`, so this uses the kernel's own trick
//! for `copy_from_user`: the copy loop is a small piece of assembly with a
//! known fixup address; the SIGSEGV handler, when the fault happened inside
//! a guarded copy, records `si_code` and the faulting address and moves the
//! instruction pointer to the fixup, which returns "faulted".

#![allow(clippy::missing_safety_doc)]

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// Set while a guarded copy runs (the worker is single-threaded).
static IN_GUARD: AtomicBool = AtomicBool::new(false);
/// Address to resume at after a fault inside a guarded copy.
static FIXUP: AtomicUsize = AtomicUsize::new(0);
static SEGV_CODE: AtomicI32 = AtomicI32::new(0);

/// How a guarded access ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// SIGSEGV with `SEGV_MAPERR`.
    MapErr,
    /// SIGSEGV with `SEGV_ACCERR`.
    AccErr,
    /// SIGSEGV with another code, or SIGBUS.
    Other(i32),
}

const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;

extern "C" fn on_segv(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes valid siginfo and ucontext pointers to an
    // SA_SIGINFO handler; we only read and write plain fields.
    unsafe {
        if !IN_GUARD.load(Ordering::SeqCst) {
            // A fault outside a guarded copy is a bug in the runner: restore
            // the default action and return, so the fault repeats and kills us.
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            return;
        }
        SEGV_CODE.store((*info).si_code, Ordering::SeqCst);
        let uc = ctx as *mut libc::ucontext_t;
        (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] = FIXUP.load(Ordering::SeqCst) as i64;
    }
}

/// Install the SIGSEGV/SIGBUS handler. Call once in the worker process.
pub fn install_handler() -> std::io::Result<()> {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        crate::sys::set_handler(sig, on_segv, libc::SA_SIGINFO | libc::SA_NODEFER)?;
    }
    Ok(())
}

/// Copy `n` bytes from `src` to `dst` byte by byte with real loads and stores.
/// Returns the number of bytes not copied (0 on success).
#[inline(never)]
unsafe fn raw_copy(dst: *mut u8, src: *const u8, n: usize) -> usize {
    let left: usize;
    // SAFETY: the caller guarantees that faults in this loop are handled by
    // `on_segv`, which resumes at label 3 (published in FIXUP) with rcx
    // holding the bytes left.
    unsafe {
        std::arch::asm!(
            "lea {tmp}, [rip + 3f]",
            "mov [{fixup}], {tmp}",
            "2:",
            "test rcx, rcx",
            "jz 3f",
            "mov al, byte ptr [rsi]",
            "mov byte ptr [rdi], al",
            "inc rsi",
            "inc rdi",
            "dec rcx",
            "jmp 2b",
            "3:",
            fixup = in(reg) FIXUP.as_ptr(),
            tmp = out(reg) _,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            inout("rcx") n => left,
            out("al") _,
            options(nostack),
        );
    }
    left
}

fn guarded(f: impl FnOnce() -> usize) -> Outcome {
    SEGV_CODE.store(0, Ordering::SeqCst);
    IN_GUARD.store(true, Ordering::SeqCst);
    let left = f();
    IN_GUARD.store(false, Ordering::SeqCst);
    if left == 0 {
        return Outcome::Ok;
    }
    match SEGV_CODE.load(Ordering::SeqCst) {
        SEGV_MAPERR => Outcome::MapErr,
        SEGV_ACCERR => Outcome::AccErr,
        c => Outcome::Other(c),
    }
}

/// Read `out.len()` bytes at guest address `addr` with real loads.
pub fn read(addr: u64, out: &mut [u8]) -> Outcome {
    // SAFETY: `out` is a valid host buffer; faults on `addr` are caught.
    guarded(|| unsafe { raw_copy(out.as_mut_ptr(), addr as *const u8, out.len()) })
}

/// Write `data` at guest address `addr` with real stores.
pub fn write(addr: u64, data: &[u8]) -> Outcome {
    // SAFETY: `data` is a valid host buffer; faults on `addr` are caught. The
    // runner refuses addresses inside its own memory before calling this.
    guarded(|| unsafe { raw_copy(addr as *mut u8, data.as_ptr(), data.len()) })
}

/// Store `len` copies of `byte` at `addr`, a page-sized chunk at a time.
pub fn fill(addr: u64, len: u64, byte: u8) -> Outcome {
    let chunk = [byte; 4096];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(4096) as usize;
        let r = write(addr + done, &chunk[..n]);
        if r != Outcome::Ok {
            return r;
        }
        done += n as u64;
    }
    Outcome::Ok
}
