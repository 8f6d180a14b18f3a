//! Real loads and stores that survive SIGSEGV (x86-64 Linux only).
//!
//! The Linux runner must touch memory with real CPU instructions, so that the
//! kernel takes real faults, and report a SIGSEGV's `si_code` instead of
//! dying. Rust cannot use `sigsetjmp`, so this uses the kernel's own trick
//! for `copy_from_user`: the copy loop is a small piece of assembly with a
//! known fixup address; the SIGSEGV handler, when the fault happened inside
//! a guarded copy, records `si_code` and the faulting address and moves the
//! instruction pointer to the fixup, which returns "faulted".

use crate::sys::trace_mem::TraceMem;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// Set while a guarded copy runs (only the worker's main thread copies).
static IN_GUARD: AtomicBool = AtomicBool::new(false);
/// Address to resume at after a fault inside a guarded copy.
static FIXUP: AtomicUsize = AtomicUsize::new(0);
static SEGV_CODE: AtomicI32 = AtomicI32::new(0);
/// The signal that ended a guarded copy (SIGSEGV or SIGBUS).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// How a guarded access ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// SIGSEGV with `SEGV_MAPERR`.
    MapErr,
    /// SIGSEGV with `SEGV_ACCERR`.
    AccErr,
    /// SIGBUS (a page wholly past the end of a mapped file).
    Bus,
    /// SIGSEGV with another code.
    Other(i32),
}

const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;

extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: installed with SA_SIGINFO (`install_handler`), so the kernel
    // passes a valid `siginfo_t` and the interrupted thread's `ucontext_t`,
    // both live for the handler's run. `signal` is async-signal-safe (a
    // sigaction call). IN_GUARD is set only around `raw_copy`, and the
    // worker's other threads (futex waiters) touch no trace memory, so a
    // fault seen while it is set was raised by the copy loop's load or
    // store: rewriting RIP to FIXUP (label 3 of that loop, published before
    // its first access) makes the kernel resume there on sigreturn, with
    // every register the asm block declares intact.
    unsafe {
        if !IN_GUARD.load(Ordering::SeqCst) {
            // A fault outside a guarded copy is a bug in the runner: restore
            // the default action and return, so the fault repeats and kills us.
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            return;
        }
        SEGV_CODE.store((*info).si_code, Ordering::SeqCst);
        SIGNAL.store(sig, Ordering::SeqCst);
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
///
/// # Safety
/// Each of `src..src + n` and `dst..dst + n` is either a host buffer the
/// caller may read (src) or write (dst), or a range holding only unmapped
/// or trace memory, which no Rust reference points into. Run it inside
/// [`guarded`], so that a fault there ends the copy, not the process (with
/// the handler installed).
#[inline(never)]
unsafe fn raw_copy(dst: *mut u8, src: *const u8, n: usize) -> usize {
    let left: usize;
    // SAFETY: the loop reads `n` bytes at rsi and writes them at rdi, one
    // at a time, which the caller's contract allows; it touches no stack
    // (`nostack`) and clobbers only the registers declared (rsi, rdi, rcx,
    // al, tmp). A fault in it is handled by `on_segv` (caller's contract),
    // which resumes at label 3, FIXUP, stored by the first two instructions:
    // rcx then holds the bytes not copied, as the loop's own exit would.
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
    SIGNAL.store(0, Ordering::SeqCst);
    IN_GUARD.store(true, Ordering::SeqCst);
    let left = f();
    IN_GUARD.store(false, Ordering::SeqCst);
    if left == 0 {
        return Outcome::Ok;
    }
    if SIGNAL.load(Ordering::SeqCst) == libc::SIGBUS {
        return Outcome::Bus;
    }
    match SEGV_CODE.load(Ordering::SeqCst) {
        SEGV_MAPERR => Outcome::MapErr,
        SEGV_ACCERR => Outcome::AccErr,
        c => Outcome::Other(c),
    }
}

/// Read `out.len()` bytes at trace address `addr` with real loads
/// (refused if the range holds memory the trace did not map).
pub fn read(mem: &TraceMem, addr: u64, out: &mut [u8]) -> Result<Outcome, String> {
    mem.check_access(addr, out.len() as u64)?;
    // SAFETY: inside `guarded`; `out` is a host buffer of `out.len()` bytes,
    // borrowed mutably here; `addr..addr + out.len()` was just checked to
    // be unmapped or trace memory, so no Rust borrow is read under a
    // writer. A fault there is caught by the handler or, were it not
    // installed, kills the process (SIGSEGV's default action).
    Ok(guarded(|| unsafe { raw_copy(out.as_mut_ptr(), addr as *const u8, out.len()) }))
}

/// Write `data` at trace address `addr` with real stores (refused if the
/// range holds memory the trace did not map).
pub fn write(mem: &TraceMem, addr: u64, data: &[u8]) -> Result<Outcome, String> {
    mem.check_access(addr, data.len() as u64)?;
    Ok(write_checked(addr, data))
}

/// Store `len` copies of `byte` at `addr`, a page-sized chunk at a time
/// (refused if the range holds memory the trace did not map).
pub fn fill(mem: &TraceMem, addr: u64, len: u64, byte: u8) -> Result<Outcome, String> {
    mem.check_access(addr, len)?;
    let chunk = [byte; 4096];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(4096) as usize;
        let r = write_checked(addr + done, &chunk[..n]);
        if r != Outcome::Ok {
            return Ok(r);
        }
        done += n as u64;
    }
    Ok(Outcome::Ok)
}

/// `write` once `addr..addr + data.len()` has passed `check_access`.
fn write_checked(addr: u64, data: &[u8]) -> Outcome {
    // SAFETY: as in `read`, roles swapped: `data` is a host buffer of
    // `data.len()` bytes, only read; the stores go to a range the callers
    // (`write`, `fill`) checked to be unmapped or trace memory, never
    // memory Rust code uses.
    guarded(|| unsafe { raw_copy(addr as *mut u8, data.as_ptr(), data.len()) })
}
