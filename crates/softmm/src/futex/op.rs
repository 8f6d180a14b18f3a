//! FUTEX_WAKE_OP's operation: an atomic read-modify-write of the second
//! word and a comparison of its old value, in Linux's encoding.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU32, Ordering};

/// The read-modify-write (`FUTEX_OP_SET` ... `FUTEX_OP_XOR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeOpKind {
    /// `*word = arg`
    Set,
    /// `*word += arg`
    Add,
    /// `*word |= arg`
    Or,
    /// `*word &= !arg`
    AndNot,
    /// `*word ^= arg`
    Xor,
}

/// The comparison of the old value with `cmp_arg` (signed, as in Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeOpCmp {
    /// `old == cmp_arg`
    Eq,
    /// `old != cmp_arg`
    Ne,
    /// `old < cmp_arg`
    Lt,
    /// `old <= cmp_arg`
    Le,
    /// `old > cmp_arg`
    Gt,
    /// `old >= cmp_arg`
    Ge,
}

/// A decoded FUTEX_WAKE_OP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeOp {
    /// What to do to the second word.
    pub kind: WakeOpKind,
    /// The operand (Linux: 12 bits, sign-extended; with `FUTEX_OP_OPARG_SHIFT`
    /// it is `1 << arg`).
    pub arg: u32,
    /// How to compare the second word's old value with `cmp_arg`.
    pub cmp: WakeOpCmp,
    /// The comparison operand (12 bits, sign-extended).
    pub cmp_arg: i32,
    /// Linux applies the operation before it rejects an unknown comparison;
    /// the raw decoder keeps that (`ENOSYS` after the write).
    bad_cmp: bool,
}

impl WakeOp {
    /// An operation from its parts.
    pub fn new(kind: WakeOpKind, arg: u32, cmp: WakeOpCmp, cmp_arg: i32) -> WakeOp {
        WakeOp { kind, arg, cmp, cmp_arg, bad_cmp: false }
    }

    /// Decode Linux's `FUTEX_OP(op, oparg, cmp, cmparg)` encoding. An unknown
    /// operation is `ENOSYS`, as Linux answers.
    pub fn from_raw(encoded: u32) -> Result<WakeOp> {
        let op = (encoded >> 28) & 7;
        let shift = encoded & (8 << 28) != 0;
        let cmp = (encoded >> 24) & 15;
        let sext12 = |v: u32| ((v << 20) as i32) >> 20;
        let mut arg = sext12((encoded >> 12) & 0xfff);
        if shift {
            arg = 1i32.wrapping_shl((arg & 31) as u32);
        }
        let kind = match op {
            0 => WakeOpKind::Set,
            1 => WakeOpKind::Add,
            2 => WakeOpKind::Or,
            3 => WakeOpKind::AndNot,
            4 => WakeOpKind::Xor,
            _ => return Err(Error::Unsupported("FUTEX_WAKE_OP operation")),
        };
        let (cmp, bad_cmp) = match cmp {
            0 => (WakeOpCmp::Eq, false),
            1 => (WakeOpCmp::Ne, false),
            2 => (WakeOpCmp::Lt, false),
            3 => (WakeOpCmp::Le, false),
            4 => (WakeOpCmp::Gt, false),
            5 => (WakeOpCmp::Ge, false),
            _ => (WakeOpCmp::Eq, true),
        };
        Ok(WakeOp { kind, arg: arg as u32, cmp, cmp_arg: sext12(encoded & 0xfff), bad_cmp })
    }

    /// Apply the operation to `word`; returns whether the comparison of the
    /// old value holds.
    pub(crate) fn apply(&self, word: &AtomicU32) -> Result<bool> {
        let a = self.arg;
        let old = match self.kind {
            WakeOpKind::Set => word.swap(a, Ordering::SeqCst),
            WakeOpKind::Add => word.fetch_add(a, Ordering::SeqCst),
            WakeOpKind::Or => word.fetch_or(a, Ordering::SeqCst),
            WakeOpKind::AndNot => word.fetch_and(!a, Ordering::SeqCst),
            WakeOpKind::Xor => word.fetch_xor(a, Ordering::SeqCst),
        };
        if self.bad_cmp {
            return Err(Error::Unsupported("FUTEX_WAKE_OP comparison"));
        }
        let (old, c) = (old as i32, self.cmp_arg);
        Ok(match self.cmp {
            WakeOpCmp::Eq => old == c,
            WakeOpCmp::Ne => old != c,
            WakeOpCmp::Lt => old < c,
            WakeOpCmp::Le => old <= c,
            WakeOpCmp::Gt => old > c,
            WakeOpCmp::Ge => old >= c,
        })
    }
}
