//! Stacks that grow: a `VM_GROWSDOWN` VMA extends down to a faulting
//! address below it (Linux's `expand_downwards`), keeping the guard gap.
//!
//! A CPU access (an accessor, `Mm::read`/`write`) that finds no VMA runs
//! `expand_stack` with the `mmap_lock` held for writing, then faults
//! again. The next VMA above the address must be `VM_GROWSDOWN`; the
//! address must be at or above `mmap_min_addr`, at least
//! `stack_guard_gap` (256 pages) above the end of an accessible,
//! non-stack VMA below, and the stack must stay within 8 MiB (Linux's
//! default `RLIMIT_STACK`, not configurable here). Pinning and futexes,
//! which go through GUP in Linux, do not grow a stack.

use super::MmInner;
use crate::vma::{Prot, VmFlags, STACK_GUARD_GAP};

/// Linux's default `RLIMIT_STACK`.
pub(crate) const STACK_LIMIT: u64 = 8 << 20;

/// Grow the stack above `va` down to cover it. Returns whether a VMA
/// covers `va` now.
pub(crate) fn expand_stack(mm: &MmInner, va: u64) -> bool {
    let mut st = mm.state.write();
    if st.exited() || va >= crate::pgtable::TASK_SIZE {
        return false;
    }
    if st.vmas.find(va).is_some() {
        return true; // grown meanwhile
    }
    let addr = va & !0xfff;
    let (prev, next) = st.vmas.neighbours(addr);
    let Some(next) = next.filter(|n| n.flags.contains(VmFlags::GROWSDOWN)) else { return false };
    if addr < mm.machine.config.mmap_min_addr {
        return false;
    }
    let too_close = |p: &crate::vma::Vma| {
        !p.flags.contains(VmFlags::GROWSDOWN) && p.prot != Prot::NONE && addr - p.end < STACK_GUARD_GAP
    };
    if prev.is_some_and(too_close) {
        return false;
    }
    let grow = (next.start - addr) >> 12;
    if grow > next.pgoff || next.end - addr > STACK_LIMIT {
        return false;
    }
    let start = next.start;
    st.vmas.extend_down(start, addr);
    true
}
