//! Threaded dispatch: what the decoded-instruction cache holds per
//! instruction. An [`Op`] is a pre-resolved handler (a plain function for
//! that one operation: `add`, `ld`, `bne`, ...) and its operands, so
//! running a cached instruction is one indirect call with no decoding and
//! no `match` on the instruction's kind.
//!
//! A handler gets the hart, its op and the budget left (the instruction's
//! pc follows from the op's slot), and goes on with the next op itself
//! (`next`, `seq`) until the pc leaves the page or, at a jump or taken
//! branch, the budget is spent (a run in sequence ends at the page's end
//! anyway); or returns [`EXIT`] (odd, which no pc is) after setting the
//! hart's pc (and, for a fault, its pending stop), to leave the page loop
//! of [`Hart::run`]. Going on is a call in tail position, which the
//! optimiser makes a jump in the hot handlers; where it stays a call (the
//! out-of-line slow paths, the generic executor, any unoptimised build)
//! the chain nests, one frame per op, at most the budget (1024) and one
//! page of slots (2048). Without a pending stop the loop then runs one instruction
//! at the hart's pc through the exact, uncached path ([`Hart::step`]):
//! how a system call, a CSR or `fence.i` gets executed, and an instruction
//! not cached yet (after filling its slot). Handlers never change the
//! cache: the page loop reads ops in place.
//!
//! `x0`: an ALU op, `lui` or `auipc` whose destination is `x0` compiles to
//! `nop` (they have no other effect), a load into `x0` (which still
//! faults) to the generic executor and a jump that links to `x0` to the
//! handler without the link; the rest write their register unguarded.
//!
//! Frequent pairs and threes of instructions in consecutive slots run as
//! one fused op ([`fused`], [`fused3`]; the cache gives the first slot
//! the group's handler when the slots after it are filled): one dispatch
//! for the group, each instruction counted and leaving as it would alone.

use crate::decode::{AluOp, BranchOp, Inst, LoadOp, StoreOp};
use crate::hart::{alu32, alu64, Hart, Stop};

/// What a handler returns to leave the page loop (see the module doc).
pub const EXIT: u64 = 1;

/// A cached instruction's handler: the hart, the op and how many more ops
/// the page loop may run after it (the op's pc follows from its place in
/// the page array, [`pc_of`], for the few handlers that need it).
pub type Handler = fn(&mut Hart, OpRef, i32) -> Flow;

/// Where a handler chain stopped: the next pc (or [`EXIT`]) and the ops
/// still allowed (for [`EXIT`]: as given to the handler that exited).
pub type Flow = (u64, i32);

/// Go on at `pc`: run its op right here (a tail call, so every handler
/// has its own indirect jump, which the host predicts far better than one
/// shared one), or return to the page loop when `pc` left the page, is
/// [`EXIT`] (not in any page the loop runs: it runs none below 4 KiB) or
/// the budget is spent.
#[inline(always)]
fn next(h: &mut Hart, pc: u64, left: i32) -> Flow {
    if pc & !0xfff != h.page_base || left <= 0 {
        return (pc, left);
    }
    // SAFETY: `h.page` points to the SLOTS (2048) ops of the page at
    // `h.page_base` while the page loop runs (`Hart::run` sets both; the
    // cache frees or writes ops only in `flush` and `fill`, which no
    // handler calls), `pc` is in that page and even, so the index is below
    // 2048.
    let op = OpRef(unsafe { h.page.0.add(((pc & 0xfff) >> 1) as usize) });
    (op.get().f)(h, op, left - 1)
}

/// The pc of `op`, an op of the page array the page loop runs (for the
/// page-end ops: the pc past the page's last slot).
#[inline(always)]
fn pc_of(h: &Hart, op: OpRef) -> u64 {
    // Slot `i` (16-byte ops) is the instruction at `page_base + 2 * i`.
    h.page_base + ((op.0 as usize).wrapping_sub(h.page.0 as usize) / (std::mem::size_of::<Op>() / 2)) as u64
}

/// Go on with the op after `op`, an instruction of `L` bytes, which lies
/// in the same page array: its successor slot, or the page-end op past
/// the last slot, which returns to the page loop. The budget is not looked
/// at here but at jumps and taken branches: a run in sequence ends at the
/// page's end anyway.
#[inline(always)]
fn seq<const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    // SAFETY: a cached op of `L` bytes (`compile` picks the handler by the
    // instruction's length) lies wholly in its page (`fill` caches no
    // other), so the slot `L / 2` after it is in the page's array or is
    // one of the page-end ops after its last slot (`ICache::page`).
    let n = OpRef(unsafe { op.0.add(L / 2) });
    (n.get().f)(h, n, left - 1)
}

/// A pointer to an op in a page array of the cache (with the array's
/// provenance, so a handler can step to the next slot).
#[derive(Clone, Copy)]
pub struct OpRef(*const Op);

impl OpRef {
    /// A reference to the op at `index` of a page array of
    /// [`crate::icache::ICache::page`].
    ///
    /// # Safety
    ///
    /// `page` must come from `ICache::page`, `index` be below its length,
    /// and the cache must not `fill` or `flush` while the op is used.
    #[inline(always)]
    pub(crate) unsafe fn at(page: *const Op, index: usize) -> OpRef {
        // SAFETY: as the caller promises.
        OpRef(unsafe { page.add(index) })
    }

    #[inline(always)]
    pub(crate) fn get(&self) -> &Op {
        // SAFETY: an `OpRef` is made only by `at`, `next` and `seq`, each
        // to an op of a live page array that no handler changes (see
        // `at`).
        unsafe { &*self.0 }
    }
}

/// The op past a page's last slot: back to the page loop, at the next
/// page (not an instruction: it gives back the budget it took).
fn page_end(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    (pc_of(h, op), left + 1)
}

/// One decoded instruction, ready to run: 16 bytes, so the ops of the
/// hot code of a page (one per 2-byte slot) stay within the host's L1
/// data cache next to the guest's data.
#[derive(Clone, Copy)]
pub struct Op {
    pub(crate) f: Handler,
    /// The immediate; for [`generic`] ops the index of the instruction in
    /// the cache's table of generic instructions
    /// ([`crate::icache::ICache::generic`]).
    imm: i32,
    /// Register numbers, each below 32 (only `compile` and the constants
    /// below make ops, so the handlers index the registers unchecked).
    rd: u8,
    rs1: u8,
    rs2: u8,
    /// Length in bytes (2 or 4).
    len: u8,
}

// Kept at 16 bytes: a slot index is then a shift, and a page's ops 32 KiB.
const _: () = assert!(std::mem::size_of::<Op>() == 16);

impl Op {
    /// The op of a slot not filled yet: decode, fill, run.
    pub const FILL: Op = Op { f: fill, imm: 0, rd: 0, rs1: 0, rs2: 0, len: 0 };
    /// The ops after a page's last slot.
    pub const PAGE_END: Op = Op { f: page_end, imm: 0, rd: 0, rs1: 0, rs2: 0, len: 0 };
}

fn fill(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    // Filled by the run loop once the page loop has left (no handler
    // changes the cache under it).
    h.fill_next = true;
    h.pc = pc_of(h, op);
    (EXIT, left)
}

/// Leave the loop and run this instruction on the exact path.
fn slow(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    h.pc = pc_of(h, op);
    (EXIT, left)
}

fn nop<const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    seq::<L>(h, op, left)
}

/// Any other instruction (atomics, floating point): the generic executor,
/// on the decoded instruction the cache keeps for the op.
fn generic(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let pc = pc_of(h, op);
    h.pc = pc;
    let Some((inst, raw)) = h.generic_inst(o.imm as u32) else {
        // (Not reached: a generic op and its table entry are made and
        // dropped together.) The exact path runs it.
        return (EXIT, left);
    };
    let npc = pc + u64::from(o.len);
    match h.execute(inst, raw, npc) {
        // (Every instruction given to it goes on in sequence; were one to
        // jump, the page check would take it.)
        Ok(()) if h.pc != npc => next(h, h.pc, left),
        Ok(()) if o.len == 2 => after_load::<2>(h, op, left),
        Ok(()) => after_load::<4>(h, op, left),
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
fn after_load<const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    if h.code_stale() {
        h.instret += 1;
        h.pc = pc_of(h, op) + L as u64;
        return (EXIT, left);
    }
    seq::<L>(h, op, left)
}

/// Write register `rd` of an op (below 32, see [`Op`]).
#[inline(always)]
fn wr(h: &mut Hart, rd: u8, v: u64) {
    debug_assert!(rd < 32);
    // SAFETY: every op's register numbers are below 32 (`compile` masks
    // them to 5 bits, the constant ops hold 0), the length of `x`.
    unsafe { *h.x.get_unchecked_mut(rd as usize) = v }
}

/// Read register `r` of an op (below 32, see [`Op`]).
#[inline(always)]
fn rd(h: &Hart, r: u8) -> u64 {
    debug_assert!(r < 32);
    // SAFETY: as in `wr`.
    unsafe { *h.x.get_unchecked(r as usize) }
}

fn lui<const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    wr(h, o.rd, o.imm as i64 as u64);
    seq::<L>(h, op, left)
}

#[inline]
fn mv<const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    wr(h, o.rd, rd(h, o.rs1));
    seq::<L>(h, op, left)
}

fn auipc<const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let pc = pc_of(h, op);
    wr(h, o.rd, pc.wrapping_add(o.imm as i64 as u64));
    seq::<L>(h, op, left)
}

fn jal(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let pc = pc_of(h, op);
    wr(h, o.rd, pc + u64::from(o.len));
    next(h, pc.wrapping_add(o.imm as i64 as u64), left)
}

fn j(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let pc = pc_of(h, op);
    next(h, pc.wrapping_add(o.imm as i64 as u64), left)
}

/// `jal` / `j` / a taken branch whose target `compile` found in the
/// instruction's own page: the op `imm` bytes away in the same array.
#[inline(always)]
fn near(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let imm = op.get().imm;
    if left <= 0 {
        return (pc_of(h, op).wrapping_add(imm as i64 as u64), left);
    }
    // SAFETY: `compile` gives a near handler only to an op whose target
    // (`pc + imm`, even) is in the op's page, so its slot, `imm / 2` slots
    // away, is in the same array: `imm * 8` bytes away (ops are 16 bytes;
    // one multiply, where `imm >> 1` would not tell the compiler that
    // `imm` is even).
    let n = OpRef(unsafe { op.0.byte_offset(imm as isize * (std::mem::size_of::<Op>() / 2) as isize) });
    (n.get().f)(h, n, left - 1)
}

fn jal_near(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let pc = pc_of(h, op);
    wr(h, o.rd, pc + u64::from(o.len));
    near(h, op, left)
}

fn j_near(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    near(h, op, left)
}

fn jalr(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let pc = pc_of(h, op);
    let t = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64) & !1;
    wr(h, o.rd, pc + u64::from(o.len));
    next(h, t, left)
}

fn jr(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let t = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64) & !1;
    next(h, t, left)
}

const BRANCHES: [BranchOp; 6] = [BranchOp::Eq, BranchOp::Ne, BranchOp::Lt, BranchOp::Ge, BranchOp::Ltu, BranchOp::Geu];

#[inline(always)]
fn taken<const K: usize>(h: &Hart, o: &Op) -> bool {
    let (a, b) = (rd(h, o.rs1), rd(h, o.rs2));
    match BRANCHES[K] {
        BranchOp::Eq => a == b,
        BranchOp::Ne => a != b,
        BranchOp::Lt => (a as i64) < (b as i64),
        BranchOp::Ge => (a as i64) >= (b as i64),
        BranchOp::Ltu => a < b,
        BranchOp::Geu => a >= b,
    }
}

fn branch<const K: usize, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    if taken::<K>(h, o) {
        next(h, pc_of(h, op).wrapping_add(o.imm as i64 as u64), left)
    } else {
        seq::<L>(h, op, left)
    }
}

#[inline]
fn branch_near<const K: usize, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    if taken::<K>(h, op.get()) {
        near(h, op, left)
    } else {
        seq::<L>(h, op, left)
    }
}

const LOADS: [LoadOp; 7] = [LoadOp::B, LoadOp::H, LoadOp::W, LoadOp::D, LoadOp::Bu, LoadOp::Hu, LoadOp::Wu];

const LOAD_SIZES: [u64; 7] = [1, 2, 4, 8, 1, 2, 4];

#[inline]
fn load<const K: usize, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let addr = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64);
    // SAFETY: the page loop runs under the accessor's hold (`Hart::run`),
    // and nothing a handler runs ends it (a miss or a futex call publishes
    // the slot again before returning; no handler opens a batch).
    let Some(v) = (unsafe { h.mem.load_held(addr, LOAD_SIZES[K]) }) else { return load_slow::<K, L>(h, op, left) };
    let v = match LOADS[K] {
        LoadOp::B => v as u8 as i8 as i64 as u64,
        LoadOp::H => v as u16 as i16 as i64 as u64,
        LoadOp::W => v as u32 as i32 as i64 as u64,
        _ => v,
    };
    wr(h, o.rd, v);
    after_load::<L>(h, op, left)
}

/// A load that is not a TLB hit: the accessor's full path (fill, fault,
/// misaligned).
#[cold]
#[inline(never)]
fn load_slow<const K: usize, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let addr = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64);
    match h.load(LOADS[K], addr) {
        Ok(v) => {
            wr(h, o.rd, v);
            after_load::<L>(h, op, left)
        }
        Err(f) => {
            h.pending = Some(Stop::Fault(f));
            h.pc = pc_of(h, op);
            (EXIT, left)
        }
    }
}

const STORE_SIZES: [u64; 4] = [1, 2, 4, 8];

#[inline]
fn store<const K: usize, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let addr = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64);
    let v = rd(h, o.rs2);
    // SAFETY: as in `load`: the page loop runs under the accessor's hold.
    if unsafe { h.mem.store_held(addr, STORE_SIZES[K], v) } {
        return seq::<L>(h, op, left);
    }
    store_slow::<K, L>(h, op, left)
}

/// A store that is not a writable TLB hit: the accessor's full path.
#[cold]
#[inline(never)]
fn store_slow<const K: usize, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let addr = rd(h, o.rs1).wrapping_add(o.imm as i64 as u64);
    match h.mem.store(addr, STORE_SIZES[K], rd(h, o.rs2)) {
        Ok(()) => seq::<L>(h, op, left),
        Err(f) => {
            h.pending = Some(Stop::Fault(f));
            h.pc = pc_of(h, op);
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

#[inline]
fn op_rr<const K: usize, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let v = alu64(ALU[K], rd(h, o.rs1), rd(h, o.rs2));
    wr(h, o.rd, v);
    seq::<L>(h, op, left)
}

#[inline]
fn op_ri<const K: usize, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let v = alu64(ALU[K], rd(h, o.rs1), o.imm as i64 as u64);
    wr(h, o.rd, v);
    seq::<L>(h, op, left)
}

#[inline]
fn op_rr32<const K: usize, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let v = alu32(ALU[K], rd(h, o.rs1), rd(h, o.rs2));
    wr(h, o.rd, v);
    seq::<L>(h, op, left)
}

#[inline]
fn op_ri32<const K: usize, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    let o = op.get();
    let v = alu32(ALU[K], rd(h, o.rs1), o.imm as i64 as u64);
    wr(h, o.rd, v);
    seq::<L>(h, op, left)
}

/// Handlers by length (`[0]`: 2 bytes, `[1]`: 4) and operation.
macro_rules! table {
    ($f:ident; $($k:literal)*) => { [[$($f::<$k, 2> as Handler),*], [$($f::<$k, 4> as Handler),*]] };
}

const RR: [[Handler; 18]; 2] = table!(op_rr; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17);
const RI: [[Handler; 18]; 2] = table!(op_ri; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17);
const RR32: [[Handler; 18]; 2] = table!(op_rr32; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17);
const RI32: [[Handler; 18]; 2] = table!(op_ri32; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17);
const BR: [[Handler; 6]; 2] = table!(branch; 0 1 2 3 4 5);
const BR_NEAR: [[Handler; 6]; 2] = table!(branch_near; 0 1 2 3 4 5);
const LD: [[Handler; 7]; 2] = table!(load; 0 1 2 3 4 5 6);
const ST: [[Handler; 4]; 2] = table!(store; 0 1 2 3);

fn alu_index(op: AluOp) -> usize {
    ALU.iter().position(|&a| a == op).unwrap_or(0)
}

/// The op for `inst` (decoded from `raw`) at `pc`, and its kind for
/// fusion ([`fused`]; 0: none). For an instruction the generic executor
/// runs, `generic` stores it and gives its index.
pub fn compile(inst: Inst, raw: u32, pc: u64, generic_index: impl FnOnce(Inst, u32) -> u32) -> (Op, u8) {
    // A move (`addi rd, rs, 0`; `add rd, x0, rs` compressed): its own
    // handler, the source in `rs1`.
    let len = crate::decode::inst_len(raw) as u8;
    let src = match inst {
        Inst::OpImm { op: AluOp::Add, rd, rs1, imm: 0 } if rd != 0 => Some((rd, rs1)),
        Inst::Op { op: AluOp::Add, rd, rs1: 0, rs2 } if rd != 0 => Some((rd, rs2)),
        Inst::Op { op: AluOp::Add, rd, rs1, rs2: 0 } if rd != 0 => Some((rd, rs1)),
        _ => None,
    };
    if let Some((rd, rs)) = src {
        let f: Handler = if len == 4 { mv::<4> } else { mv::<2> };
        let op = Op { f, imm: 0, rd: rd & 31, rs1: rs & 31, rs2: 0, len };
        return (op, K_MV | if len == 4 { KIND_LEN4 } else { 0 });
    }
    let op = compile_op(inst, raw, pc, generic_index);
    let near = pc.wrapping_add(op.imm as i64 as u64) & !0xfff == pc & !0xfff;
    let k = match inst {
        // (An ALU op into x0 is a `nop`, a load into x0 generic: no kind.)
        _ if inst_rd(inst) == Some(0) => 0,
        Inst::OpImm { op: AluOp::Add, .. } => K_ADDI,
        Inst::OpImm32 { op: AluOp::Add, .. } => K_ADDIW,
        Inst::OpImm { op: AluOp::Sll, .. } => K_SLLI,
        Inst::OpImm { op: AluOp::And, .. } => K_ANDI,
        Inst::OpImm32 { op: AluOp::Srl, .. } => K_SRLIW,
        Inst::Op { op: AluOp::Add, .. } => K_ADD,
        Inst::Op32 { op: AluOp::Add, .. } => K_ADDW,
        Inst::Op32 { op: AluOp::Mul, .. } => K_MULW,
        Inst::Op { op: AluOp::Xor, .. } => K_XOR,
        Inst::Load { op: LoadOp::D, .. } => K_LD,
        Inst::Load { op: LoadOp::W, .. } => K_LW,
        Inst::Load { op: LoadOp::H, .. } => K_LH,
        Inst::Load { op: LoadOp::Bu, .. } => K_LBU,
        Inst::Store { op: StoreOp::D, .. } => K_SD,
        Inst::Store { op: StoreOp::W, .. } => K_SW,
        Inst::Branch { op: BranchOp::Ne, .. } if near => K_BNE,
        Inst::Branch { op: BranchOp::Eq, .. } if near => K_BEQ,
        Inst::Branch { op: BranchOp::Lt, .. } if near => K_BLT,
        Inst::Branch { op: BranchOp::Ge, .. } if near => K_BGE,
        Inst::Branch { op: BranchOp::Ltu, .. } if near => K_BLTU,
        Inst::Branch { op: BranchOp::Geu, .. } if near => K_BGEU,
        _ => 0,
    };
    (op, if k == 0 { 0 } else { k | if op.len == 4 { KIND_LEN4 } else { 0 } })
}

/// The destination register of `inst`, for the kinds of [`compile`].
fn inst_rd(inst: Inst) -> Option<u8> {
    match inst {
        Inst::OpImm { rd, .. } | Inst::OpImm32 { rd, .. } | Inst::Op { rd, .. } | Inst::Op32 { rd, .. } => Some(rd),
        Inst::Load { rd, .. } => Some(rd),
        _ => None,
    }
}

/// [`compile`]'s op.
fn compile_op(inst: Inst, raw: u32, pc: u64, generic_index: impl FnOnce(Inst, u32) -> u32) -> Op {
    // Whether a pc-relative target is in the instruction's page.
    let near = |imm: i32| pc.wrapping_add(imm as i64 as u64) & !0xfff == pc & !0xfff;
    let len = crate::decode::inst_len(raw) as u8;
    // (Decoded register numbers are 5-bit fields: the masks change
    // nothing but make the bound `rd` and `wr` rely on local.)
    let op =
        |f: Handler, imm: i32, rd: u8, rs1: u8, rs2: u8| Op { f, imm, rd: rd & 31, rs1: rs1 & 31, rs2: rs2 & 31, len };
    // Ops whose only effect is writing `rd`: none at all for x0.
    let w = usize::from(len == 4);
    let (nop, lui, auipc): (Handler, Handler, Handler) =
        if len == 4 { (nop::<4>, lui::<4>, auipc::<4>) } else { (nop::<2>, lui::<2>, auipc::<2>) };
    let alu = |f: Handler, imm: i32, rd: u8, rs1: u8, rs2: u8| op(if rd == 0 { nop } else { f }, imm, rd, rs1, rs2);
    match inst {
        Inst::Lui { rd, imm } => alu(lui, imm, rd, 0, 0),
        Inst::Auipc { rd, imm } => alu(auipc, imm, rd, 0, 0),
        Inst::Jal { rd, imm } => {
            let f: Handler = match (rd == 0, near(imm)) {
                (true, true) => j_near,
                (true, false) => j,
                (false, true) => jal_near,
                (false, false) => jal,
            };
            op(f, imm, rd, 0, 0)
        }
        Inst::Jalr { rd, rs1, imm } => op(if rd == 0 { jr } else { jalr }, imm, rd, rs1, 0),
        Inst::Branch { op: b, rs1, rs2, imm } => {
            let k = BRANCHES.iter().position(|&x| x == b).unwrap_or(0);
            op(if near(imm) { BR_NEAR[w][k] } else { BR[w][k] }, imm, 0, rs1, rs2)
        }
        // A load into x0 still faults: the generic executor runs it.
        Inst::Load { rd: 0, .. } => op(generic, generic_index(inst, raw) as i32, 0, 0, 0),
        Inst::Load { op: l, rd, rs1, imm } => {
            let k = LOADS.iter().position(|&x| x == l).unwrap_or(0);
            op(LD[w][k], imm, rd, rs1, 0)
        }
        Inst::Store { op: s, rs1, rs2, imm } => {
            let k = match s {
                StoreOp::B => 0,
                StoreOp::H => 1,
                StoreOp::W => 2,
                StoreOp::D => 3,
            };
            op(ST[w][k], imm, 0, rs1, rs2)
        }
        Inst::OpImm { op: a, rd, rs1, imm } => alu(RI[w][alu_index(a)], imm, rd, rs1, 0),
        Inst::OpImm32 { op: a, rd, rs1, imm } => alu(RI32[w][alu_index(a)], imm, rd, rs1, 0),
        Inst::Op { op: a, rd, rs1, rs2 } => alu(RR[w][alu_index(a)], 0, rd, rs1, rs2),
        Inst::Op32 { op: a, rd, rs1, rs2 } => alu(RR32[w][alu_index(a)], 0, rd, rs1, rs2),
        Inst::Fence => op(nop, 0, 0, 0, 0),
        // Counters, fence.i, system calls and traps run on the exact path.
        Inst::FenceI | Inst::Ecall | Inst::Ebreak | Inst::Csr { .. } | Inst::Illegal(_) => op(slow, 0, 0, 0, 0),
        _ => op(generic, generic_index(inst, raw) as i32, 0, 0, 0),
    }
}

// Fused pairs. The op of an instruction `A` whose successor `B` (the slot
// right after it, filled) is one of the pairs below runs both: `A`'s
// effect inline, then `B`'s handler called directly (no indirect jump,
// no handler load between them), which goes on after `B` as usual. Only
// `A`'s handler changes: `B`'s slot keeps its own op (a jump to `B` runs
// it alone), and `B`'s operands are read from it. Each instruction is
// counted (`left`) as when run alone, and leaves as it would: a load or
// store of `A` that is not a TLB hit has had no effect yet, so `A`'s own
// handler runs instead; a load of `A` that finds code stale leaves after
// `A`.

// The kinds of instruction a fused pair may hold (with [`KIND_LEN4`] for
// a 4-byte one); ALU ops and loads into x0 have none, branches only with
// a target in their page.
const K_ADDI: u8 = 1;
const K_ADDIW: u8 = 2;
const K_SLLI: u8 = 3;
const K_ANDI: u8 = 4;
const K_SRLIW: u8 = 5;
const K_ADD: u8 = 6;
const K_ADDW: u8 = 7;
const K_MULW: u8 = 8;
const K_XOR: u8 = 9;
const K_LD: u8 = 10;
const K_LW: u8 = 11;
const K_LH: u8 = 12;
const K_LBU: u8 = 13;
const K_SD: u8 = 14;
const K_SW: u8 = 15;
const K_BNE: u8 = 16;
const K_BEQ: u8 = 17;
const K_BLT: u8 = 18;
const K_BGE: u8 = 19;
const K_BLTU: u8 = 20;
const K_BGEU: u8 = 21;
const K_MV: u8 = 22;
/// In a kind: the instruction is 4 bytes (else 2).
pub const KIND_LEN4: u8 = 0x80;

/// The handler of an op of kind `K` and length `L`, as [`compile`] picks
/// it.
#[inline(always)]
fn base<const K: u8, const L: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    match K {
        K_ADDI => op_ri::<0, L>(h, op, left),
        K_ADDIW => op_ri32::<0, L>(h, op, left),
        K_SLLI => op_ri::<2, L>(h, op, left),
        K_ANDI => op_ri::<9, L>(h, op, left),
        K_SRLIW => op_ri32::<6, L>(h, op, left),
        K_ADD => op_rr::<0, L>(h, op, left),
        K_ADDW => op_rr32::<0, L>(h, op, left),
        K_MULW => op_rr32::<10, L>(h, op, left),
        K_XOR => op_rr::<5, L>(h, op, left),
        K_LD => load::<3, L>(h, op, left),
        K_LW => load::<2, L>(h, op, left),
        K_LH => load::<1, L>(h, op, left),
        K_LBU => load::<4, L>(h, op, left),
        K_SD => store::<3, L>(h, op, left),
        K_SW => store::<2, L>(h, op, left),
        K_BNE => branch_near::<1, L>(h, op, left),
        K_BEQ => branch_near::<0, L>(h, op, left),
        K_BLT => branch_near::<2, L>(h, op, left),
        K_BGE => branch_near::<3, L>(h, op, left),
        K_BLTU => branch_near::<4, L>(h, op, left),
        K_BGEU => branch_near::<5, L>(h, op, left),
        K_MV => mv::<L>(h, op, left),
        // (No op has another kind.)
        _ => slow(h, op, left),
    }
}

/// How the first instruction of a pair went.
enum Part {
    Done,
    /// A load or store that was not a TLB hit, nothing done.
    Miss,
    /// A load done, after which code was found stale.
    Stale,
}

/// The effect of an op of kind `K` (ALU ops, loads and stores).
#[inline(always)]
fn part<const K: u8>(h: &mut Hart, o: &Op) -> Part {
    let (a, b, imm) = (rd(h, o.rs1), rd(h, o.rs2), o.imm as i64 as u64);
    let v = match K {
        K_ADDI => a.wrapping_add(imm),
        K_ADDIW => alu32(AluOp::Add, a, imm),
        K_SLLI => alu64(AluOp::Sll, a, imm),
        K_ANDI => a & imm,
        K_SRLIW => alu32(AluOp::Srl, a, imm),
        K_ADD => a.wrapping_add(b),
        K_MV => a,
        K_ADDW => alu32(AluOp::Add, a, b),
        K_MULW => alu32(AluOp::Mul, a, b),
        K_XOR => a ^ b,
        K_LD | K_LW | K_LH | K_LBU => {
            let (size, k) = match K {
                K_LD => (8, LoadOp::D),
                K_LW => (4, LoadOp::W),
                K_LH => (2, LoadOp::H),
                _ => (1, LoadOp::Bu),
            };
            // SAFETY: as in `load`: the page loop runs under the
            // accessor's hold.
            let Some(v) = (unsafe { h.mem.load_held(a.wrapping_add(imm), size) }) else { return Part::Miss };
            let v = match k {
                LoadOp::H => v as u16 as i16 as i64 as u64,
                LoadOp::W => v as u32 as i32 as i64 as u64,
                _ => v,
            };
            wr(h, o.rd, v);
            return if h.code_stale() { Part::Stale } else { Part::Done };
        }
        K_SD | K_SW => {
            let size = if K == K_SD { 8 } else { 4 };
            // SAFETY: as in `load`: the page loop runs under the
            // accessor's hold.
            let hit = unsafe { h.mem.store_held(a.wrapping_add(imm), size, b) };
            return if hit { Part::Done } else { Part::Miss };
        }
        // (Not fused: see `fused`.)
        _ => return Part::Miss,
    };
    wr(h, o.rd, v);
    Part::Done
}

/// The first instruction of a group (`A`, `LA` bytes at `op`): done, so
/// the group goes on; or where the run goes instead (a miss: `A`'s own
/// handler, which takes the full path and faults at its pc; stale code
/// seen by its load: leave the loop after it).
#[inline(always)]
fn lead<const A: u8, const LA: usize>(h: &mut Hart, op: OpRef, left: i32) -> Result<(), Flow> {
    match part::<A>(h, op.get()) {
        Part::Done => Ok(()),
        Part::Miss => Err(base::<A, LA>(h, op, left)),
        Part::Stale => {
            h.instret += 1;
            h.pc = pc_of(h, op) + LA as u64;
            Err((EXIT, left))
        }
    }
}

/// A pair: `A` (kind, `LA` bytes), then `B` (kind, `LB` bytes) in the
/// next slot.
#[inline]
fn pair<const A: u8, const B: u8, const LA: usize, const LB: usize>(h: &mut Hart, op: OpRef, left: i32) -> Flow {
    if let Err(flow) = lead::<A, LA>(h, op, left) {
        return flow;
    }
    // SAFETY: `fused` gives this handler only to an op of `LA` bytes whose
    // next slot (`LA / 2` ops on) holds `B`'s op in the same page array.
    let n = OpRef(unsafe { op.0.add(LA / 2) });
    base::<B, LB>(h, n, left - 1)
}

/// Three: `A` (kind, `LA` bytes), then the pair of `B` and `C` after it.
fn triple<const A: u8, const B: u8, const C: u8, const LA: usize, const LB: usize, const LC: usize>(
    h: &mut Hart,
    op: OpRef,
    left: i32,
) -> Flow {
    if let Err(flow) = lead::<A, LA>(h, op, left) {
        return flow;
    }
    // SAFETY: `fused3` gives this handler only to an op of `LA` bytes
    // whose next slot (`LA / 2` ops on) holds `B`'s op in the same page
    // array, and the slot after `B` holds `C`'s.
    let n = OpRef(unsafe { op.0.add(LA / 2) });
    pair::<B, C, LB, LC>(h, n, left - 1)
}

macro_rules! triples {
    ($(($a:ident, $b:ident, $c:ident)),* $(,)?) => {
        /// The handler running the ops of kinds `a`, `b` and `c` in
        /// consecutive slots, if those three are fused.
        pub fn fused3(a: u8, b: u8, c: u8) -> Option<Handler> {
            let (ka, kb, kc) = (a & !KIND_LEN4, b & !KIND_LEN4, c & !KIND_LEN4);
            let (la, lb, lc) = (a & KIND_LEN4 != 0, b & KIND_LEN4 != 0, c & KIND_LEN4 != 0);
            $(
                if ka == $a && kb == $b && kc == $c {
                    return Some(match (la, lb, lc) {
                        (false, false, false) => triple::<$a, $b, $c, 2, 2, 2>,
                        (false, false, true) => triple::<$a, $b, $c, 2, 2, 4>,
                        (false, true, false) => triple::<$a, $b, $c, 2, 4, 2>,
                        (false, true, true) => triple::<$a, $b, $c, 2, 4, 4>,
                        (true, false, false) => triple::<$a, $b, $c, 4, 2, 2>,
                        (true, false, true) => triple::<$a, $b, $c, 4, 2, 4>,
                        (true, true, false) => triple::<$a, $b, $c, 4, 4, 2>,
                        (true, true, true) => triple::<$a, $b, $c, 4, 4, 4>,
                    });
                }
            )*
            None
        }
    };
}

// Frequent threes: a loop's last pair and its branch back.
triples!(
    (K_SD, K_LD, K_BNE),
    (K_XOR, K_ADDIW, K_BNE),
    (K_LW, K_LW, K_BGE),
    (K_ADDIW, K_LD, K_BNE),
    (K_MV, K_LD, K_BEQ),
    (K_LD, K_ADDIW, K_BNE),
);

macro_rules! pairs {
    ($(($a:ident, $b:ident)),* $(,)?) => {
        /// The handler running the op of kind `a` and the op of kind `b`
        /// right after it, if that pair is fused.
        pub fn fused(a: u8, b: u8) -> Option<Handler> {
            let (ka, kb) = (a & !KIND_LEN4, b & !KIND_LEN4);
            let (la, lb) = (a & KIND_LEN4 != 0, b & KIND_LEN4 != 0);
            $(
                if ka == $a && kb == $b {
                    return Some(match (la, lb) {
                        (false, false) => pair::<$a, $b, 2, 2>,
                        (false, true) => pair::<$a, $b, 2, 4>,
                        (true, false) => pair::<$a, $b, 4, 2>,
                        (true, true) => pair::<$a, $b, 4, 4>,
                    });
                }
            )*
            None
        }
    };
}

// Frequent pairs of compiled C (`gcc -O2`): pointer bumps, moves before a
// store, spills and reloads around arithmetic, loads feeding a compare.
pairs!(
    (K_MV, K_SD),
    (K_MV, K_MV),
    (K_MV, K_BLT),
    (K_MV, K_LD),
    (K_MV, K_ADDIW),
    (K_MV, K_ADDI),
    (K_ADDI, K_MV),
    (K_ADDW, K_MV),
    (K_ADDW, K_SRLIW),
    (K_ADDIW, K_MV),
    (K_ADDIW, K_ANDI),
    (K_SD, K_MV),
    (K_SD, K_SD),
    (K_LBU, K_BEQ),
    (K_ANDI, K_ADDI),
    (K_ADDI, K_BGEU),
    (K_ADDI, K_ADDI),
    (K_ADDI, K_SD),
    (K_ADDI, K_MULW),
    (K_ADDI, K_XOR),
    (K_ADDI, K_LD),
    (K_ADDI, K_ADDIW),
    (K_ADDI, K_BNE),
    (K_ADDI, K_BLT),
    (K_ADDW, K_ADDI),
    (K_MULW, K_LD),
    (K_SD, K_LD),
    (K_SD, K_ADDI),
    (K_LD, K_BNE),
    (K_LD, K_BEQ),
    (K_LD, K_ADDW),
    (K_LD, K_ADDIW),
    (K_LH, K_LH),
    (K_LH, K_ADDI),
    (K_LW, K_LW),
    (K_LW, K_XOR),
    (K_LW, K_BNE),
    (K_LW, K_BGE),
    (K_LBU, K_SRLIW),
    (K_ADDIW, K_BNE),
    (K_ADDIW, K_ADDI),
    (K_ADDIW, K_LD),
    (K_ADD, K_LW),
    (K_SLLI, K_ADD),
    (K_XOR, K_ADDIW),
    (K_XOR, K_ANDI),
    (K_ANDI, K_SLLI),
    (K_SRLIW, K_ADDI),
);
