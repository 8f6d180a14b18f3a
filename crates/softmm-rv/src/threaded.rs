//! Threaded dispatch: what the decoded-instruction cache holds per
//! instruction. An [`Op`] is a pre-resolved handler (a plain function for
//! that one operation: `add`, `ld`, `bne`, ...) and its operands, so
//! running a cached instruction is one indirect call with no decoding and
//! no `match` on the instruction's kind.
//!
//! A handler gets the hart, its op and the instruction's pc, and goes on
//! with the next op itself ([`next`]) until the pc leaves the page or the
//! budget is spent; or returns [`EXIT`] (odd, which no pc is) after setting the hart's
//! pc (and, for a fault, its pending stop), to leave the page loop of
//! [`Hart::run`]. Without a pending stop the loop then runs one instruction
//! at the hart's pc through the exact, uncached path ([`Hart::step`]):
//! how a system call, a CSR or `fence.i` gets executed, and an instruction
//! not cached yet (after filling its slot). Handlers never change the
//! cache: the page loop reads ops in place.
//!
//! `x0`: an ALU op, `lui` or `auipc` whose destination is `x0` compiles to
//! [`nop`] (they have no other effect), a load into `x0` (which still
//! faults) to the generic executor and a jump that links to `x0` to the
//! handler without the link; the rest write their register unguarded.

use crate::decode::{AluOp, BranchOp, Inst, LoadOp, StoreOp};
use crate::hart::{alu32, alu64, Hart, Stop};

/// What a handler returns to leave the page loop (see the module doc).
pub const EXIT: u64 = 1;

/// A cached instruction's handler: the hart, the op, its pc and how many
/// more ops the page loop may run after it.
pub type Handler = fn(&mut Hart, &Op, u64, u32) -> Flow;

/// Where a handler chain stopped: the next pc (or [`EXIT`]) and the ops
/// still allowed (for [`EXIT`]: as given to the handler that exited).
pub type Flow = (u64, u32);

/// Go on at `pc`: run its op right here (a tail call, so every handler
/// has its own indirect jump, which the host predicts far better than one
/// shared one), or return to the page loop when `pc` left the page, is
/// [`EXIT`] (not in any page the loop runs: it runs none below 4 KiB) or
/// the budget is spent.
#[inline(always)]
fn next(h: &mut Hart, pc: u64, left: u32) -> Flow {
    if pc & !0xfff != h.page_base || left == 0 {
        return (pc, left);
    }
    // SAFETY: `h.page` points to the SLOTS (2048) ops of the page at
    // `h.page_base` while the page loop runs (`Hart::run` sets both; the
    // cache frees or writes ops only in `flush` and `fill`, which no
    // handler calls), `pc` is in that page and even, so the index is below
    // 2048.
    let op = unsafe { &*h.page.0.add(((pc & 0xfff) >> 1) as usize) };
    (op.f)(h, op, pc, left - 1)
}

/// One decoded instruction, ready to run.
#[derive(Clone, Copy)]
pub struct Op {
    pub(crate) f: Handler,
    /// The immediate; for [`generic`] ops the raw instruction bits.
    pub(crate) imm: i32,
    pub(crate) rd: u8,
    pub(crate) rs1: u8,
    pub(crate) rs2: u8,
    /// Length in bytes (2 or 4).
    pub(crate) len: u8,
    /// The decoded instruction, for [`generic`] ops.
    pub(crate) inst: Inst,
}

impl Op {
    /// The op of a slot not filled yet: decode, fill, run.
    pub const FILL: Op = Op { f: fill, imm: 0, rd: 0, rs1: 0, rs2: 0, len: 0, inst: Inst::Fence };
}

fn fill(h: &mut Hart, _o: &Op, pc: u64, left: u32) -> Flow {
    // Filled by the run loop once the page loop has left (no handler
    // changes the cache under it).
    h.fill_next = true;
    h.pc = pc;
    (EXIT, left)
}

/// Leave the loop and run this instruction on the exact path.
fn slow(h: &mut Hart, _o: &Op, pc: u64, left: u32) -> Flow {
    h.pc = pc;
    (EXIT, left)
}

fn nop(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    next(h, pc + u64::from(o.len), left)
}

/// Any other instruction (atomics, floating point): the generic executor.
fn generic(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    h.pc = pc;
    match h.execute(o.inst, o.imm as u32, pc + u64::from(o.len)) {
        Ok(()) => after_load(h, h.pc, left),
        Err(s) => {
            h.pending = Some(s);
            (EXIT, left)
        }
    }
}

/// After an instruction that read memory: if code was invalidated since
/// the page loop looked (something this load may have observed was
/// written after it), count the instruction and leave the loop.
#[inline(always)]
fn after_load(h: &mut Hart, npc: u64, left: u32) -> Flow {
    if h.code_stale() {
        h.instret += 1;
        h.pc = npc;
        return (EXIT, left);
    }
    next(h, npc, left)
}

#[inline(always)]
fn wr(h: &mut Hart, rd: u8, v: u64) {
    h.x[(rd & 31) as usize] = v;
}

#[inline(always)]
fn rd(h: &Hart, r: u8) -> u64 {
    h.x[(r & 31) as usize]
}

fn lui(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    wr(h, o.rd, o.imm as i64 as u64);
    next(h, pc + u64::from(o.len), left)
}

fn auipc(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    wr(h, o.rd, pc.wrapping_add(o.imm as i64 as u64));
    next(h, pc + u64::from(o.len), left)
}

fn jal(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    wr(h, o.rd, pc + u64::from(o.len));
    next(h, pc.wrapping_add(o.imm as i64 as u64), left)
}

fn j(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    next(h, pc.wrapping_add(o.imm as i64 as u64), left)
}

fn jalr(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    let t = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64) & !1;
    wr(h, o.rd, pc + u64::from(o.len));
    next(h, t, left)
}

fn jr(h: &mut Hart, o: &Op, _pc: u64, left: u32) -> Flow {
    let t = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64) & !1;
    next(h, t, left)
}

const BRANCHES: [BranchOp; 6] = [BranchOp::Eq, BranchOp::Ne, BranchOp::Lt, BranchOp::Ge, BranchOp::Ltu, BranchOp::Geu];

fn branch<const K: usize>(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    let (a, b) = (rd(h, o.rs1), rd(h, o.rs2));
    let taken = match BRANCHES[K] {
        BranchOp::Eq => a == b,
        BranchOp::Ne => a != b,
        BranchOp::Lt => (a as i64) < (b as i64),
        BranchOp::Ge => (a as i64) >= (b as i64),
        BranchOp::Ltu => a < b,
        BranchOp::Geu => a >= b,
    };
    if taken {
        next(h, pc.wrapping_add(o.imm as i64 as u64), left)
    } else {
        next(h, pc + u64::from(o.len), left)
    }
}

const LOADS: [LoadOp; 7] = [LoadOp::B, LoadOp::H, LoadOp::W, LoadOp::D, LoadOp::Bu, LoadOp::Hu, LoadOp::Wu];

const LOAD_SIZES: [u64; 7] = [1, 2, 4, 8, 1, 2, 4];

fn load<const K: usize>(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    let addr = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64);
    let Some(v) = h.mem.load_held(addr, LOAD_SIZES[K]) else { return load_slow::<K>(h, o, pc, left) };
    let v = match LOADS[K] {
        LoadOp::B => v as u8 as i8 as i64 as u64,
        LoadOp::H => v as u16 as i16 as i64 as u64,
        LoadOp::W => v as u32 as i32 as i64 as u64,
        _ => v,
    };
    wr(h, o.rd, v);
    after_load(h, pc + u64::from(o.len), left)
}

/// A load that is not a TLB hit: the accessor's full path (fill, fault,
/// misaligned).
#[cold]
#[inline(never)]
fn load_slow<const K: usize>(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    let addr = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64);
    match h.load(LOADS[K], addr) {
        Ok(v) => {
            wr(h, o.rd, v);
            after_load(h, pc + u64::from(o.len), left)
        }
        Err(f) => {
            h.pending = Some(Stop::Fault(f));
            h.pc = pc;
            (EXIT, left)
        }
    }
}

const STORE_SIZES: [u64; 4] = [1, 2, 4, 8];

fn store<const K: usize>(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    let addr = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64);
    let v = rd(h, o.rs2);
    if h.mem.store_held(addr, STORE_SIZES[K], v) {
        return next(h, pc + u64::from(o.len), left);
    }
    store_slow::<K>(h, o, pc, left)
}

/// A store that is not a writable TLB hit: the accessor's full path.
#[cold]
#[inline(never)]
fn store_slow<const K: usize>(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    let addr = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64);
    match h.mem.store(addr, STORE_SIZES[K], rd(h, o.rs2)) {
        Ok(()) => next(h, pc + u64::from(o.len), left),
        Err(f) => {
            h.pending = Some(Stop::Fault(f));
            h.pc = pc;
            (EXIT, left)
        }
    }
}

const ALU: [AluOp; 18] = [
    AluOp::Add,
    AluOp::Sub,
    AluOp::Sll,
    AluOp::Slt,
    AluOp::Sltu,
    AluOp::Xor,
    AluOp::Srl,
    AluOp::Sra,
    AluOp::Or,
    AluOp::And,
    AluOp::Mul,
    AluOp::Mulh,
    AluOp::Mulhsu,
    AluOp::Mulhu,
    AluOp::Div,
    AluOp::Divu,
    AluOp::Rem,
    AluOp::Remu,
];

fn op_rr<const K: usize>(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    let v = alu64(ALU[K], rd(h, o.rs1), rd(h, o.rs2));
    wr(h, o.rd, v);
    next(h, pc + u64::from(o.len), left)
}

fn op_ri<const K: usize>(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    let v = alu64(ALU[K], rd(h, o.rs1), o.imm as i64 as u64);
    wr(h, o.rd, v);
    next(h, pc + u64::from(o.len), left)
}

fn op_rr32<const K: usize>(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    let v = alu32(ALU[K], rd(h, o.rs1), rd(h, o.rs2));
    wr(h, o.rd, v);
    next(h, pc + u64::from(o.len), left)
}

fn op_ri32<const K: usize>(h: &mut Hart, o: &Op, pc: u64, left: u32) -> Flow {
    let v = alu32(ALU[K], rd(h, o.rs1), o.imm as i64 as u64);
    wr(h, o.rd, v);
    next(h, pc + u64::from(o.len), left)
}

macro_rules! table {
    ($f:ident; $($k:literal)*) => { [$($f::<$k> as Handler),*] };
}

const RR: [Handler; 18] = table!(op_rr; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17);
const RI: [Handler; 18] = table!(op_ri; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17);
const RR32: [Handler; 18] = table!(op_rr32; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17);
const RI32: [Handler; 18] = table!(op_ri32; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17);
const BR: [Handler; 6] = table!(branch; 0 1 2 3 4 5);
const LD: [Handler; 7] = table!(load; 0 1 2 3 4 5 6);
const ST: [Handler; 4] = table!(store; 0 1 2 3);

fn alu_index(op: AluOp) -> usize {
    ALU.iter().position(|&a| a == op).unwrap_or(0)
}

/// The op for `inst` (decoded from `raw`).
pub fn compile(inst: Inst, raw: u32) -> Op {
    let len = crate::decode::inst_len(raw) as u8;
    let op = |f: Handler, imm: i32, rd: u8, rs1: u8, rs2: u8| Op { f, imm, rd, rs1, rs2, len, inst };
    // Ops whose only effect is writing `rd`: none at all for x0.
    let alu = |f: Handler, imm: i32, rd: u8, rs1: u8, rs2: u8| op(if rd == 0 { nop } else { f }, imm, rd, rs1, rs2);
    match inst {
        Inst::Lui { rd, imm } => alu(lui, imm, rd, 0, 0),
        Inst::Auipc { rd, imm } => alu(auipc, imm, rd, 0, 0),
        Inst::Jal { rd, imm } => op(if rd == 0 { j } else { jal }, imm, rd, 0, 0),
        Inst::Jalr { rd, rs1, imm } => op(if rd == 0 { jr } else { jalr }, imm, rd, rs1, 0),
        Inst::Branch { op: b, rs1, rs2, imm } => {
            let k = BRANCHES.iter().position(|&x| x == b).unwrap_or(0);
            op(BR[k], imm, 0, rs1, rs2)
        }
        // A load into x0 still faults: the generic executor runs it.
        Inst::Load { rd: 0, .. } => op(generic, raw as i32, 0, 0, 0),
        Inst::Load { op: l, rd, rs1, imm } => {
            let k = LOADS.iter().position(|&x| x == l).unwrap_or(0);
            op(LD[k], imm, rd, rs1, 0)
        }
        Inst::Store { op: s, rs1, rs2, imm } => {
            let k = match s {
                StoreOp::B => 0,
                StoreOp::H => 1,
                StoreOp::W => 2,
                StoreOp::D => 3,
            };
            op(ST[k], imm, 0, rs1, rs2)
        }
        Inst::OpImm { op: a, rd, rs1, imm } => alu(RI[alu_index(a)], imm, rd, rs1, 0),
        Inst::OpImm32 { op: a, rd, rs1, imm } => alu(RI32[alu_index(a)], imm, rd, rs1, 0),
        Inst::Op { op: a, rd, rs1, rs2 } => alu(RR[alu_index(a)], 0, rd, rs1, rs2),
        Inst::Op32 { op: a, rd, rs1, rs2 } => alu(RR32[alu_index(a)], 0, rd, rs1, rs2),
        Inst::Fence => op(nop, 0, 0, 0, 0),
        // Counters, fence.i, system calls and traps run on the exact path.
        Inst::FenceI | Inst::Ecall | Inst::Ebreak | Inst::Csr { .. } | Inst::Illegal(_) => op(slow, 0, 0, 0, 0),
        _ => op(generic, raw as i32, 0, 0, 0),
    }
}
