//! The riscv64 signal frame, byte for byte as Linux builds it
//! (arch/riscv/kernel/signal.c, `struct rt_sigframe`): a 128-byte
//! `siginfo_t`, then the `ucontext`: flags, link, `uc_stack`, the 8-byte
//! kernel `uc_sigmask` padded to 128 bytes, and at offset 176 (16-byte
//! aligned, as the Q-extension state in the union makes it) the
//! `sigcontext`: the 32 general registers with the pc in place of x0, then
//! the FP state (`__riscv_d_ext_state`: f0..f31 and fcsr) inside the
//! 528-byte union, whose last 8 bytes are the END header of the extension
//! area (zero). 1088 bytes in all, at a 16-byte aligned stack address.
//! Linux sets `ra` to the vDSO's `__vdso_rt_sigreturn`; this machine has
//! no vDSO, so every process gets a read-only page holding the same two
//! instructions (`li a7, 139; ecall`), and handlers return there.

use crate::hart::Hart;
use softmm::{MapKind, Mm, Placement, Prot};

/// `sizeof(struct rt_sigframe)` without vector state.
pub const FRAME_SIZE: u64 = 1088;
/// Offset of the ucontext in the frame.
pub const UC: usize = 128;
const UC_STACK: usize = UC + 16;
const UC_SIGMASK: usize = UC + 40;
const UC_MCONTEXT: usize = UC + 176;
const SC_FPREGS: usize = UC_MCONTEXT + 256;
const SC_FCSR: usize = SC_FPREGS + 256;

pub const SS_ONSTACK: u32 = 1;
pub const SS_DISABLE: u32 = 2;

/// `li a7, 139` (rt_sigreturn); `ecall`.
const TRAMPOLINE: [u32; 2] = [0x08b0_0893, 0x0000_0073];

/// Map the signal-return trampoline into `mm`; its address.
pub fn map_trampoline(mm: &Mm) -> softmm::Result<u64> {
    let at = mm.mmap(0, 4096, Prot::RW, MapKind::Private, Placement::Hint)?;
    let code: Vec<u8> = TRAMPOLINE.iter().flat_map(|w| w.to_le_bytes()).collect();
    mm.write(at, &code)?;
    mm.mprotect(at, 4096, Prot::RX)?;
    Ok(at)
}

/// What goes in `uc_stack`: the alternate stack and whether `sp` is on it.
#[derive(Clone, Copy, Debug)]
pub struct StackInfo {
    pub sp: u64,
    pub flags: u32,
    pub size: u64,
}

/// The frame's bytes for the interrupted state of `hart`.
pub fn build(hart: &Hart, info: &[u8; 128], mask: u64, stack: StackInfo) -> Vec<u8> {
    let mut b = vec![0u8; FRAME_SIZE as usize];
    b[..128].copy_from_slice(info);
    b[UC_STACK..UC_STACK + 8].copy_from_slice(&stack.sp.to_le_bytes());
    b[UC_STACK + 8..UC_STACK + 12].copy_from_slice(&stack.flags.to_le_bytes());
    b[UC_STACK + 16..UC_STACK + 24].copy_from_slice(&stack.size.to_le_bytes());
    b[UC_SIGMASK..UC_SIGMASK + 8].copy_from_slice(&mask.to_le_bytes());
    for i in 0..32 {
        let v = if i == 0 { hart.pc } else { hart.x[i] };
        b[UC_MCONTEXT + 8 * i..UC_MCONTEXT + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
        b[SC_FPREGS + 8 * i..SC_FPREGS + 8 * i + 8].copy_from_slice(&hart.f[i].to_le_bytes());
    }
    b[SC_FCSR..SC_FCSR + 4].copy_from_slice(&hart.fcsr.to_le_bytes());
    b
}

/// The state `rt_sigreturn` restores from a frame's bytes: the mask, and
/// the registers put back into `hart`.
pub fn restore(hart: &mut Hart, b: &[u8]) -> Option<u64> {
    let word = |at: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)) };
    let mask = word(UC_SIGMASK)?;
    let mut x = [0u64; 32];
    let mut f = [0u64; 32];
    for i in 0..32 {
        x[i] = word(UC_MCONTEXT + 8 * i)?;
        f[i] = word(SC_FPREGS + 8 * i)?;
    }
    let fcsr = u32::from_le_bytes(b.get(SC_FCSR..SC_FCSR + 4)?.try_into().ok()?);
    hart.pc = x[0];
    x[0] = 0;
    hart.x = x;
    hart.f = f;
    // Only frm and fflags exist.
    hart.fcsr = fcsr & 0xff;
    Some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::Memory;
    use softmm::{Config, Machine};

    fn hart() -> Hart {
        let machine = Machine::new(Config { arena_bytes: 16 << 20, ..Config::default() }).unwrap();
        let mm = machine.new_mm().unwrap();
        let mut h = Hart::new(Memory::new(mm.accessor()), 0x1234, 0x8000);
        for i in 1..32 {
            h.x[i] = 0x100 + i as u64;
            h.f[i] = 0x2000 + i as u64;
        }
        h.fcsr = 0xe5;
        h
    }

    /// Offsets as in Linux's struct rt_sigframe for riscv64 (and glibc's
    /// ucontext_t: uc_mcontext at 176, __fpregs at 176 + 256).
    #[test]
    fn frame_layout_is_linuxs() {
        let h = hart();
        let mut info = [0u8; 128];
        info[0] = 11;
        let stack = StackInfo { sp: 0x7000, flags: SS_DISABLE, size: 0x800 };
        let b = build(&h, &info, 0xdead_beef, stack);
        assert_eq!(b.len() as u64, FRAME_SIZE);
        assert_eq!(FRAME_SIZE % 16, 0);
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        assert_eq!(b[0], 11, "siginfo first");
        assert_eq!(word(UC), 0, "uc_flags");
        assert_eq!(word(UC + 8), 0, "uc_link");
        assert_eq!(word(UC + 16), 0x7000, "uc_stack.ss_sp");
        assert_eq!(u32::from_le_bytes(b[UC + 24..UC + 28].try_into().unwrap()), SS_DISABLE);
        assert_eq!(word(UC + 32), 0x800, "uc_stack.ss_size");
        assert_eq!(word(UC + 40), 0xdead_beef, "uc_sigmask");
        assert_eq!(word(UC + 176), 0x1234, "sc_regs.pc");
        assert_eq!(word(UC + 176 + 8), 0x101, "sc_regs.ra");
        assert_eq!(word(UC + 176 + 31 * 8), 0x11f, "sc_regs.t6");
        assert_eq!(word(UC + 176 + 256 + 8), 0x2001, "f1");
        assert_eq!(u32::from_le_bytes(b[UC + 176 + 512..UC + 176 + 516].try_into().unwrap()), 0xe5, "fcsr");
        assert!(b[UC + 176 + 516..].iter().all(|&x| x == 0), "reserved and END header are zero");
    }

    #[test]
    fn restore_undoes_build() {
        let h = hart();
        let b = build(&h, &[0u8; 128], 0x55, StackInfo { sp: 0, flags: SS_DISABLE, size: 0 });
        let mut g = hart();
        g.x = [7; 32];
        g.f = [9; 32];
        g.pc = 0;
        g.fcsr = 0;
        assert_eq!(restore(&mut g, &b), Some(0x55));
        assert_eq!((g.pc, g.x, g.f, g.fcsr), (h.pc, h.x, h.f, h.fcsr));
        assert_eq!(restore(&mut g, &b[..100]), None, "a short frame is refused");
    }
}
