//! The RV64GC decoder: one instruction word (32-bit, or 16-bit compressed in
//! the low half) into an [`Inst`]. Compressed instructions expand to the
//! same variants as their 32-bit equivalents, so the executor knows one
//! instruction set; [`inst_len`] says how far the pc moves.
//!
//! Decoding is pure and separate from execution so that a later
//! decoded-instruction cache can store `Inst` values per page.

/// Integer register number (0..32); `x0` reads as zero and ignores writes.
pub type Reg = u8;

/// Register-register and register-immediate integer operations. The `*W`
/// instructions use the same operations in [`Inst::Op32`] / [`Inst::OpImm32`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
}

/// Conditional branches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BranchOp {
    Eq,
    Ne,
    Lt,
    Ge,
    Ltu,
    Geu,
}

/// Integer loads: width and extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadOp {
    B,
    H,
    W,
    D,
    Bu,
    Hu,
    Wu,
}

/// Integer stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    B,
    H,
    W,
    D,
}

/// Operand width of an atomic (A extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    W,
    D,
}

/// Atomic memory operations (A extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmoOp {
    Swap,
    Add,
    Xor,
    And,
    Or,
    Min,
    Max,
    Minu,
    Maxu,
}

/// CSR access kind; `imm` variants take a 5-bit zero-extended immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrOp {
    Rw,
    Rs,
    Rc,
}

/// Floating-point operations whose result is a floating-point register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpOp {
    Add,
    Sub,
    Mul,
    Div,
    Sqrt,
    Sgnj,
    Sgnjn,
    Sgnjx,
    Min,
    Max,
}

/// Floating-point comparisons (result in an integer register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpCmp {
    Eq,
    Lt,
    Le,
}

/// Fused multiply-add forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FmaOp {
    /// `rs1*rs2 + rs3`
    Madd,
    /// `rs1*rs2 - rs3`
    Msub,
    /// `-(rs1*rs2) + rs3`
    Nmsub,
    /// `-(rs1*rs2) - rs3`
    Nmadd,
}

/// Integer type of a float/integer conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntKind {
    W,
    Wu,
    L,
    Lu,
}

/// One decoded instruction. Immediates are sign-extended as the
/// instruction defines them; `double` selects D over F; `rm` is the
/// instruction's rounding-mode field (7 = dynamic, from `frm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inst {
    Lui {
        rd: Reg,
        imm: i32,
    },
    Auipc {
        rd: Reg,
        imm: i32,
    },
    Jal {
        rd: Reg,
        imm: i32,
    },
    Jalr {
        rd: Reg,
        rs1: Reg,
        imm: i32,
    },
    Branch {
        op: BranchOp,
        rs1: Reg,
        rs2: Reg,
        imm: i32,
    },
    Load {
        op: LoadOp,
        rd: Reg,
        rs1: Reg,
        imm: i32,
    },
    Store {
        op: StoreOp,
        rs1: Reg,
        rs2: Reg,
        imm: i32,
    },
    OpImm {
        op: AluOp,
        rd: Reg,
        rs1: Reg,
        imm: i32,
    },
    OpImm32 {
        op: AluOp,
        rd: Reg,
        rs1: Reg,
        imm: i32,
    },
    Op {
        op: AluOp,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    Op32 {
        op: AluOp,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    Fence,
    FenceI,
    Ecall,
    Ebreak,
    Csr {
        op: CsrOp,
        rd: Reg,
        rs1: Reg,
        csr: u16,
        imm: bool,
    },
    Lr {
        width: Width,
        rd: Reg,
        rs1: Reg,
    },
    Sc {
        width: Width,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    Amo {
        op: AmoOp,
        width: Width,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    FLoad {
        double: bool,
        rd: Reg,
        rs1: Reg,
        imm: i32,
    },
    FStore {
        double: bool,
        rs1: Reg,
        rs2: Reg,
        imm: i32,
    },
    Fma {
        op: FmaOp,
        double: bool,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
        rs3: Reg,
        rm: u8,
    },
    FOp {
        op: FpOp,
        double: bool,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
        rm: u8,
    },
    FCmp {
        op: FpCmp,
        double: bool,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
    },
    /// `fcvt.{w,wu,l,lu}.{s,d}`: float register to integer register.
    FCvtToInt {
        to: IntKind,
        double: bool,
        rd: Reg,
        rs1: Reg,
        rm: u8,
    },
    /// `fcvt.{s,d}.{w,wu,l,lu}`: integer register to float register.
    FCvtFromInt {
        from: IntKind,
        double: bool,
        rd: Reg,
        rs1: Reg,
        rm: u8,
    },
    /// `fcvt.s.d` (`to_double` false) or `fcvt.d.s`.
    FCvtFloat {
        to_double: bool,
        rd: Reg,
        rs1: Reg,
        rm: u8,
    },
    /// `fmv.x.w` / `fmv.x.d`.
    FMvToInt {
        double: bool,
        rd: Reg,
        rs1: Reg,
    },
    /// `fmv.w.x` / `fmv.d.x`.
    FMvFromInt {
        double: bool,
        rd: Reg,
        rs1: Reg,
    },
    FClass {
        double: bool,
        rd: Reg,
        rs1: Reg,
    },
    /// Not an instruction of RV64GC (the raw bits, as `stval` would hold).
    Illegal(u32),
}

/// Length in bytes of the instruction whose first half-word is `low16`:
/// 2 for compressed, 4 otherwise (longer encodings are not in RV64GC and
/// decode as illegal).
#[inline]
pub fn inst_len(low16: u32) -> u64 {
    if low16 & 3 == 3 {
        4
    } else {
        2
    }
}

/// Decode one instruction. `raw` holds the 32-bit word; for a compressed
/// instruction only its low 16 bits are looked at.
pub fn decode(raw: u32) -> Inst {
    if raw & 3 != 3 {
        return decode_compressed(raw & 0xffff);
    }
    decode32(raw)
}

fn bits(raw: u32, hi: u32, lo: u32) -> u32 {
    (raw >> lo) & ((1 << (hi - lo + 1)) - 1)
}

fn rd(raw: u32) -> Reg {
    bits(raw, 11, 7) as Reg
}
fn rs1(raw: u32) -> Reg {
    bits(raw, 19, 15) as Reg
}
fn rs2(raw: u32) -> Reg {
    bits(raw, 24, 20) as Reg
}
fn funct3(raw: u32) -> u32 {
    bits(raw, 14, 12)
}
fn funct7(raw: u32) -> u32 {
    bits(raw, 31, 25)
}
fn imm_i(raw: u32) -> i32 {
    (raw as i32) >> 20
}
fn imm_s(raw: u32) -> i32 {
    (((raw as i32) >> 25) << 5) | bits(raw, 11, 7) as i32
}
fn imm_b(raw: u32) -> i32 {
    let v = (bits(raw, 31, 31) << 12) | (bits(raw, 7, 7) << 11) | (bits(raw, 30, 25) << 5) | (bits(raw, 11, 8) << 1);
    sext(v, 13)
}
fn imm_u(raw: u32) -> i32 {
    (raw & 0xffff_f000) as i32
}
fn imm_j(raw: u32) -> i32 {
    let v =
        (bits(raw, 31, 31) << 20) | (bits(raw, 19, 12) << 12) | (bits(raw, 20, 20) << 11) | (bits(raw, 30, 21) << 1);
    sext(v, 21)
}

/// Sign-extend the low `n` bits of `v`.
fn sext(v: u32, n: u32) -> i32 {
    let s = 32 - n;
    ((v << s) as i32) >> s
}

fn decode32(raw: u32) -> Inst {
    let ill = Inst::Illegal(raw);
    match raw & 0x7f {
        0x37 => Inst::Lui { rd: rd(raw), imm: imm_u(raw) },
        0x17 => Inst::Auipc { rd: rd(raw), imm: imm_u(raw) },
        0x6f => Inst::Jal { rd: rd(raw), imm: imm_j(raw) },
        0x67 if funct3(raw) == 0 => Inst::Jalr { rd: rd(raw), rs1: rs1(raw), imm: imm_i(raw) },
        0x63 => decode_branch(raw).unwrap_or(ill),
        0x03 => decode_load(raw).unwrap_or(ill),
        0x23 => decode_store(raw).unwrap_or(ill),
        0x13 => decode_op_imm(raw).unwrap_or(ill),
        0x1b => decode_op_imm32(raw).unwrap_or(ill),
        0x33 => decode_op(raw).map(|op| Inst::Op { op, rd: rd(raw), rs1: rs1(raw), rs2: rs2(raw) }).unwrap_or(ill),
        0x3b => decode_op32(raw).map(|op| Inst::Op32 { op, rd: rd(raw), rs1: rs1(raw), rs2: rs2(raw) }).unwrap_or(ill),
        0x0f => match funct3(raw) {
            0 => Inst::Fence,
            1 => Inst::FenceI,
            _ => ill,
        },
        0x73 => decode_system(raw).unwrap_or(ill),
        0x2f => decode_amo(raw).unwrap_or(ill),
        0x07 => match funct3(raw) {
            2 | 3 => Inst::FLoad { double: funct3(raw) == 3, rd: rd(raw), rs1: rs1(raw), imm: imm_i(raw) },
            _ => ill,
        },
        0x27 => match funct3(raw) {
            2 | 3 => Inst::FStore { double: funct3(raw) == 3, rs1: rs1(raw), rs2: rs2(raw), imm: imm_s(raw) },
            _ => ill,
        },
        0x43 | 0x47 | 0x4b | 0x4f => decode_fma(raw).unwrap_or(ill),
        0x53 => decode_op_fp(raw).unwrap_or(ill),
        _ => ill,
    }
}

fn decode_branch(raw: u32) -> Option<Inst> {
    let op = match funct3(raw) {
        0 => BranchOp::Eq,
        1 => BranchOp::Ne,
        4 => BranchOp::Lt,
        5 => BranchOp::Ge,
        6 => BranchOp::Ltu,
        7 => BranchOp::Geu,
        _ => return None,
    };
    Some(Inst::Branch { op, rs1: rs1(raw), rs2: rs2(raw), imm: imm_b(raw) })
}

fn decode_load(raw: u32) -> Option<Inst> {
    let op = match funct3(raw) {
        0 => LoadOp::B,
        1 => LoadOp::H,
        2 => LoadOp::W,
        3 => LoadOp::D,
        4 => LoadOp::Bu,
        5 => LoadOp::Hu,
        6 => LoadOp::Wu,
        _ => return None,
    };
    Some(Inst::Load { op, rd: rd(raw), rs1: rs1(raw), imm: imm_i(raw) })
}

fn decode_store(raw: u32) -> Option<Inst> {
    let op = match funct3(raw) {
        0 => StoreOp::B,
        1 => StoreOp::H,
        2 => StoreOp::W,
        3 => StoreOp::D,
        _ => return None,
    };
    Some(Inst::Store { op, rs1: rs1(raw), rs2: rs2(raw), imm: imm_s(raw) })
}

fn decode_op_imm(raw: u32) -> Option<Inst> {
    let imm = imm_i(raw);
    let shamt = bits(raw, 25, 20) as i32;
    let (op, imm) = match (funct3(raw), bits(raw, 31, 26)) {
        (0, _) => (AluOp::Add, imm),
        (2, _) => (AluOp::Slt, imm),
        (3, _) => (AluOp::Sltu, imm),
        (4, _) => (AluOp::Xor, imm),
        (6, _) => (AluOp::Or, imm),
        (7, _) => (AluOp::And, imm),
        (1, 0) => (AluOp::Sll, shamt),
        (5, 0) => (AluOp::Srl, shamt),
        (5, 0x10) => (AluOp::Sra, shamt),
        _ => return None,
    };
    Some(Inst::OpImm { op, rd: rd(raw), rs1: rs1(raw), imm })
}

fn decode_op_imm32(raw: u32) -> Option<Inst> {
    let shamt = bits(raw, 24, 20) as i32;
    let (op, imm) = match (funct3(raw), funct7(raw)) {
        (0, _) => (AluOp::Add, imm_i(raw)),
        (1, 0) => (AluOp::Sll, shamt),
        (5, 0) => (AluOp::Srl, shamt),
        (5, 0x20) => (AluOp::Sra, shamt),
        _ => return None,
    };
    Some(Inst::OpImm32 { op, rd: rd(raw), rs1: rs1(raw), imm })
}

fn decode_op(raw: u32) -> Option<AluOp> {
    Some(match (funct7(raw), funct3(raw)) {
        (0, 0) => AluOp::Add,
        (0, 1) => AluOp::Sll,
        (0, 2) => AluOp::Slt,
        (0, 3) => AluOp::Sltu,
        (0, 4) => AluOp::Xor,
        (0, 5) => AluOp::Srl,
        (0, 6) => AluOp::Or,
        (0, 7) => AluOp::And,
        (0x20, 0) => AluOp::Sub,
        (0x20, 5) => AluOp::Sra,
        (1, 0) => AluOp::Mul,
        (1, 1) => AluOp::Mulh,
        (1, 2) => AluOp::Mulhsu,
        (1, 3) => AluOp::Mulhu,
        (1, 4) => AluOp::Div,
        (1, 5) => AluOp::Divu,
        (1, 6) => AluOp::Rem,
        (1, 7) => AluOp::Remu,
        _ => return None,
    })
}

fn decode_op32(raw: u32) -> Option<AluOp> {
    Some(match (funct7(raw), funct3(raw)) {
        (0, 0) => AluOp::Add,
        (0, 1) => AluOp::Sll,
        (0, 5) => AluOp::Srl,
        (0x20, 0) => AluOp::Sub,
        (0x20, 5) => AluOp::Sra,
        (1, 0) => AluOp::Mul,
        (1, 4) => AluOp::Div,
        (1, 5) => AluOp::Divu,
        (1, 6) => AluOp::Rem,
        (1, 7) => AluOp::Remu,
        _ => return None,
    })
}

fn decode_system(raw: u32) -> Option<Inst> {
    let op = match funct3(raw) {
        0 => {
            return match raw {
                0x0000_0073 => Some(Inst::Ecall),
                0x0010_0073 => Some(Inst::Ebreak),
                _ => None,
            }
        }
        1 | 5 => CsrOp::Rw,
        2 | 6 => CsrOp::Rs,
        3 | 7 => CsrOp::Rc,
        _ => return None,
    };
    Some(Inst::Csr { op, rd: rd(raw), rs1: rs1(raw), csr: bits(raw, 31, 20) as u16, imm: funct3(raw) >= 5 })
}

fn decode_amo(raw: u32) -> Option<Inst> {
    let width = match funct3(raw) {
        2 => Width::W,
        3 => Width::D,
        _ => return None,
    };
    let (rd, rs1, rs2) = (rd(raw), rs1(raw), rs2(raw));
    let op = match bits(raw, 31, 27) {
        0x02 if rs2 == 0 => return Some(Inst::Lr { width, rd, rs1 }),
        0x03 => return Some(Inst::Sc { width, rd, rs1, rs2 }),
        0x01 => AmoOp::Swap,
        0x00 => AmoOp::Add,
        0x04 => AmoOp::Xor,
        0x0c => AmoOp::And,
        0x08 => AmoOp::Or,
        0x10 => AmoOp::Min,
        0x14 => AmoOp::Max,
        0x18 => AmoOp::Minu,
        0x1c => AmoOp::Maxu,
        _ => return None,
    };
    Some(Inst::Amo { op, width, rd, rs1, rs2 })
}

/// The format field of F/D instructions: 0 single, 1 double (others,
/// H and Q, are not in RV64GC).
fn fmt_double(raw: u32) -> Option<bool> {
    match bits(raw, 26, 25) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// A static rounding-mode field is valid if it is one of the five modes
/// or dynamic (7); 5 and 6 are reserved.
fn rm_ok(rm: u8) -> bool {
    rm != 5 && rm != 6
}

fn decode_fma(raw: u32) -> Option<Inst> {
    let double = fmt_double(raw)?;
    let op = match raw & 0x7f {
        0x43 => FmaOp::Madd,
        0x47 => FmaOp::Msub,
        0x4b => FmaOp::Nmsub,
        _ => FmaOp::Nmadd,
    };
    let rm = funct3(raw) as u8;
    rm_ok(rm).then_some(Inst::Fma {
        op,
        double,
        rd: rd(raw),
        rs1: rs1(raw),
        rs2: rs2(raw),
        rs3: bits(raw, 31, 27) as Reg,
        rm,
    })
}

fn decode_op_fp(raw: u32) -> Option<Inst> {
    let double = fmt_double(raw)?;
    let (rd, rs1, rs2) = (rd(raw), rs1(raw), rs2(raw));
    let rm = funct3(raw) as u8;
    let arith = |op| rm_ok(rm).then_some(Inst::FOp { op, double, rd, rs1, rs2, rm });
    let int_kind = |r| match r {
        0 => Some(IntKind::W),
        1 => Some(IntKind::Wu),
        2 => Some(IntKind::L),
        3 => Some(IntKind::Lu),
        _ => None,
    };
    match funct7(raw) >> 2 {
        0x00 => arith(FpOp::Add),
        0x01 => arith(FpOp::Sub),
        0x02 => arith(FpOp::Mul),
        0x03 => arith(FpOp::Div),
        0x0b if rs2 == 0 => arith(FpOp::Sqrt),
        0x04 => {
            let op = [FpOp::Sgnj, FpOp::Sgnjn, FpOp::Sgnjx].get(rm as usize).copied()?;
            Some(Inst::FOp { op, double, rd, rs1, rs2, rm })
        }
        0x05 => {
            let op = [FpOp::Min, FpOp::Max].get(rm as usize).copied()?;
            Some(Inst::FOp { op, double, rd, rs1, rs2, rm })
        }
        // fcvt.s.d has fmt S and rs2 = 1; fcvt.d.s fmt D and rs2 = 0.
        0x08 if rs2 == u8::from(!double) && rm_ok(rm) => Some(Inst::FCvtFloat { to_double: double, rd, rs1, rm }),
        0x14 => {
            let op = [FpCmp::Le, FpCmp::Lt, FpCmp::Eq].get(rm as usize).copied()?;
            Some(Inst::FCmp { op, double, rd, rs1, rs2 })
        }
        0x18 if rm_ok(rm) => Some(Inst::FCvtToInt { to: int_kind(rs2)?, double, rd, rs1, rm }),
        0x1a if rm_ok(rm) => Some(Inst::FCvtFromInt { from: int_kind(rs2)?, double, rd, rs1, rm }),
        0x1c if rs2 == 0 && rm == 0 => Some(Inst::FMvToInt { double, rd, rs1 }),
        0x1c if rs2 == 0 && rm == 1 => Some(Inst::FClass { double, rd, rs1 }),
        0x1e if rs2 == 0 && rm == 0 => Some(Inst::FMvFromInt { double, rd, rs1 }),
        _ => None,
    }
}

/// `rd'`/`rs1'`/`rs2'` of the compressed formats: x8..x15.
fn creg(v: u32) -> Reg {
    (v + 8) as Reg
}

fn decode_compressed(raw: u32) -> Inst {
    let ill = Inst::Illegal(raw);
    let r = match (raw & 3, bits(raw, 15, 13)) {
        (0, f) => decode_c0(raw, f),
        (1, f) => decode_c1(raw, f),
        (2, f) => decode_c2(raw, f),
        _ => None,
    };
    r.unwrap_or(ill)
}

fn decode_c0(raw: u32, f: u32) -> Option<Inst> {
    let rdp = creg(bits(raw, 4, 2));
    let rs1p = creg(bits(raw, 9, 7));
    // uimm[5:3] = [12:10], [7:6] = [6:5]: the doubleword offset.
    let off_d = ((bits(raw, 12, 10) << 3) | (bits(raw, 6, 5) << 6)) as i32;
    // uimm[5:3] = [12:10], [2] = [6], [6] = [5]: the word offset.
    let off_w = ((bits(raw, 12, 10) << 3) | (bits(raw, 6, 6) << 2) | (bits(raw, 5, 5) << 6)) as i32;
    Some(match f {
        0 => {
            let imm =
                (bits(raw, 12, 11) << 4) | (bits(raw, 10, 7) << 6) | (bits(raw, 6, 6) << 2) | (bits(raw, 5, 5) << 3);
            if imm == 0 {
                return None; // includes the all-zero half-word, defined illegal
            }
            Inst::OpImm { op: AluOp::Add, rd: rdp, rs1: 2, imm: imm as i32 }
        }
        1 => Inst::FLoad { double: true, rd: rdp, rs1: rs1p, imm: off_d },
        2 => Inst::Load { op: LoadOp::W, rd: rdp, rs1: rs1p, imm: off_w },
        3 => Inst::Load { op: LoadOp::D, rd: rdp, rs1: rs1p, imm: off_d },
        5 => Inst::FStore { double: true, rs1: rs1p, rs2: rdp, imm: off_d },
        6 => Inst::Store { op: StoreOp::W, rs1: rs1p, rs2: rdp, imm: off_w },
        7 => Inst::Store { op: StoreOp::D, rs1: rs1p, rs2: rdp, imm: off_d },
        _ => return None,
    })
}

fn decode_c1(raw: u32, f: u32) -> Option<Inst> {
    let rd = bits(raw, 11, 7) as Reg;
    let imm6 = sext((bits(raw, 12, 12) << 5) | bits(raw, 6, 2), 6);
    let rdp = creg(bits(raw, 9, 7));
    let rs2p = creg(bits(raw, 4, 2));
    Some(match f {
        0 => Inst::OpImm { op: AluOp::Add, rd, rs1: rd, imm: imm6 },
        1 if rd != 0 => Inst::OpImm32 { op: AluOp::Add, rd, rs1: rd, imm: imm6 },
        2 => Inst::OpImm { op: AluOp::Add, rd, rs1: 0, imm: imm6 },
        3 if rd == 2 => {
            let v = (bits(raw, 12, 12) << 9)
                | (bits(raw, 6, 6) << 4)
                | (bits(raw, 5, 5) << 6)
                | (bits(raw, 4, 3) << 7)
                | (bits(raw, 2, 2) << 5);
            if v == 0 {
                return None;
            }
            Inst::OpImm { op: AluOp::Add, rd: 2, rs1: 2, imm: sext(v, 10) }
        }
        3 => {
            if imm6 == 0 {
                return None;
            }
            Inst::Lui { rd, imm: imm6 << 12 }
        }
        4 => return decode_c1_alu(raw, rdp, rs2p),
        5 => Inst::Jal { rd: 0, imm: cj_imm(raw) },
        6 | 7 => {
            let v = (bits(raw, 12, 12) << 8)
                | (bits(raw, 11, 10) << 3)
                | (bits(raw, 6, 5) << 6)
                | (bits(raw, 4, 3) << 1)
                | (bits(raw, 2, 2) << 5);
            let op = if f == 6 { BranchOp::Eq } else { BranchOp::Ne };
            Inst::Branch { op, rs1: rdp, rs2: 0, imm: sext(v, 9) }
        }
        _ => return None,
    })
}

fn cj_imm(raw: u32) -> i32 {
    let v = (bits(raw, 12, 12) << 11)
        | (bits(raw, 11, 11) << 4)
        | (bits(raw, 10, 9) << 8)
        | (bits(raw, 8, 8) << 10)
        | (bits(raw, 7, 7) << 6)
        | (bits(raw, 6, 6) << 7)
        | (bits(raw, 5, 3) << 1)
        | (bits(raw, 2, 2) << 5);
    sext(v, 12)
}

fn decode_c1_alu(raw: u32, rdp: Reg, rs2p: Reg) -> Option<Inst> {
    let shamt = ((bits(raw, 12, 12) << 5) | bits(raw, 6, 2)) as i32;
    let imm6 = sext((bits(raw, 12, 12) << 5) | bits(raw, 6, 2), 6);
    let op = |op| Some(Inst::Op { op, rd: rdp, rs1: rdp, rs2: rs2p });
    let op32 = |op| Some(Inst::Op32 { op, rd: rdp, rs1: rdp, rs2: rs2p });
    match (bits(raw, 11, 10), bits(raw, 12, 12), bits(raw, 6, 5)) {
        (0, _, _) => Some(Inst::OpImm { op: AluOp::Srl, rd: rdp, rs1: rdp, imm: shamt }),
        (1, _, _) => Some(Inst::OpImm { op: AluOp::Sra, rd: rdp, rs1: rdp, imm: shamt }),
        (2, _, _) => Some(Inst::OpImm { op: AluOp::And, rd: rdp, rs1: rdp, imm: imm6 }),
        (_, 0, 0) => op(AluOp::Sub),
        (_, 0, 1) => op(AluOp::Xor),
        (_, 0, 2) => op(AluOp::Or),
        (_, 0, _) => op(AluOp::And),
        (_, 1, 0) => op32(AluOp::Sub),
        (_, 1, 1) => op32(AluOp::Add),
        _ => None,
    }
}

fn decode_c2(raw: u32, f: u32) -> Option<Inst> {
    let rd = bits(raw, 11, 7) as Reg;
    let rs2 = bits(raw, 6, 2) as Reg;
    // Stack-pointer-relative offsets.
    let ld_d = ((bits(raw, 12, 12) << 5) | (bits(raw, 6, 5) << 3) | (bits(raw, 4, 2) << 6)) as i32;
    let ld_w = ((bits(raw, 12, 12) << 5) | (bits(raw, 6, 4) << 2) | (bits(raw, 3, 2) << 6)) as i32;
    let st_d = ((bits(raw, 12, 10) << 3) | (bits(raw, 9, 7) << 6)) as i32;
    let st_w = ((bits(raw, 12, 9) << 2) | (bits(raw, 8, 7) << 6)) as i32;
    Some(match f {
        0 => {
            let shamt = ((bits(raw, 12, 12) << 5) | bits(raw, 6, 2)) as i32;
            Inst::OpImm { op: AluOp::Sll, rd, rs1: rd, imm: shamt }
        }
        1 => Inst::FLoad { double: true, rd, rs1: 2, imm: ld_d },
        2 if rd != 0 => Inst::Load { op: LoadOp::W, rd, rs1: 2, imm: ld_w },
        3 if rd != 0 => Inst::Load { op: LoadOp::D, rd, rs1: 2, imm: ld_d },
        4 => match (bits(raw, 12, 12), rd, rs2) {
            (0, 0, 0) => return None,
            (0, _, 0) => Inst::Jalr { rd: 0, rs1: rd, imm: 0 },
            (0, _, _) => Inst::Op { op: AluOp::Add, rd, rs1: 0, rs2 },
            (_, 0, 0) => Inst::Ebreak,
            (_, _, 0) => Inst::Jalr { rd: 1, rs1: rd, imm: 0 },
            _ => Inst::Op { op: AluOp::Add, rd, rs1: rd, rs2 },
        },
        5 => Inst::FStore { double: true, rs1: 2, rs2, imm: st_d },
        6 => Inst::Store { op: StoreOp::W, rs1: 2, rs2, imm: st_w },
        7 => Inst::Store { op: StoreOp::D, rs1: 2, rs2, imm: st_d },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Encodings below were produced by riscv64-linux-gnu-as (objdump -d).
    #[test]
    fn base_integer() {
        assert_eq!(decode(0x00000513), Inst::OpImm { op: AluOp::Add, rd: 10, rs1: 0, imm: 0 }); // li a0,0
        assert_eq!(decode(0xfff00293), Inst::OpImm { op: AluOp::Add, rd: 5, rs1: 0, imm: -1 }); // li t0,-1
        assert_eq!(decode(0x123452b7), Inst::Lui { rd: 5, imm: 0x12345000 }); // lui t0,0x12345
        assert_eq!(decode(0x00000297), Inst::Auipc { rd: 5, imm: 0 }); // auipc t0,0
        assert_eq!(decode(0x008000ef), Inst::Jal { rd: 1, imm: 8 }); // jal ra,+8
        assert_eq!(decode(0xffdff06f), Inst::Jal { rd: 0, imm: -4 }); // j -4
        assert_eq!(decode(0x00008067), Inst::Jalr { rd: 0, rs1: 1, imm: 0 }); // ret
        assert_eq!(decode(0xfe0508e3), Inst::Branch { op: BranchOp::Eq, rs1: 10, rs2: 0, imm: -16 }); // beqz a0,-16
        assert_eq!(decode(0x00b54463), Inst::Branch { op: BranchOp::Lt, rs1: 10, rs2: 11, imm: 8 }); // blt a0,a1,+8
        assert_eq!(decode(0x0085b503), Inst::Load { op: LoadOp::D, rd: 10, rs1: 11, imm: 8 }); // ld a0,8(a1)
        assert_eq!(decode(0xffc5c503), Inst::Load { op: LoadOp::Bu, rd: 10, rs1: 11, imm: -4 }); // lbu a0,-4(a1)
        assert_eq!(decode(0x00a5b423), Inst::Store { op: StoreOp::D, rs1: 11, rs2: 10, imm: 8 }); // sd a0,8(a1)
        assert_eq!(decode(0xfea5ae23), Inst::Store { op: StoreOp::W, rs1: 11, rs2: 10, imm: -4 }); // sw a0,-4(a1)
        assert_eq!(decode(0x03f51513), Inst::OpImm { op: AluOp::Sll, rd: 10, rs1: 10, imm: 63 }); // slli a0,a0,63
        assert_eq!(decode(0x43f55513), Inst::OpImm { op: AluOp::Sra, rd: 10, rs1: 10, imm: 63 }); // srai a0,a0,63
        assert_eq!(decode(0x40b50533), Inst::Op { op: AluOp::Sub, rd: 10, rs1: 10, rs2: 11 }); // sub a0,a0,a1
        assert_eq!(decode(0x02b50533), Inst::Op { op: AluOp::Mul, rd: 10, rs1: 10, rs2: 11 }); // mul
        assert_eq!(decode(0x02b5453b), Inst::Op32 { op: AluOp::Div, rd: 10, rs1: 10, rs2: 11 }); // divw
        assert_eq!(decode(0x0015051b), Inst::OpImm32 { op: AluOp::Add, rd: 10, rs1: 10, imm: 1 }); // addiw
        assert_eq!(decode(0x4015d51b), Inst::OpImm32 { op: AluOp::Sra, rd: 10, rs1: 11, imm: 1 }); // sraiw
        assert_eq!(decode(0x00000073), Inst::Ecall);
        assert_eq!(decode(0x00100073), Inst::Ebreak);
        assert_eq!(decode(0x0ff0000f), Inst::Fence);
        assert_eq!(decode(0x0000100f), Inst::FenceI);
    }

    #[test]
    fn csr_atomic_float() {
        // frrm a0 = csrrs a0, frm, zero
        assert_eq!(decode(0x00202573), Inst::Csr { op: CsrOp::Rs, rd: 10, rs1: 0, csr: 2, imm: false });
        // csrwi fflags, 0
        assert_eq!(decode(0x00105073), Inst::Csr { op: CsrOp::Rw, rd: 0, rs1: 0, csr: 1, imm: true });
        // rdcycle a0
        assert_eq!(decode(0xc0002573), Inst::Csr { op: CsrOp::Rs, rd: 10, rs1: 0, csr: 0xc00, imm: false });
        // lr.w.aq a0,(a1)
        assert_eq!(decode(0x1405a52f), Inst::Lr { width: Width::W, rd: 10, rs1: 11 });
        // sc.d.rl a2,a1,(a0)
        assert_eq!(decode(0x1ab5362f), Inst::Sc { width: Width::D, rd: 12, rs1: 10, rs2: 11 });
        // amoadd.w.aqrl a0,a1,(a2)
        assert_eq!(decode(0x06b6252f), Inst::Amo { op: AmoOp::Add, width: Width::W, rd: 10, rs1: 12, rs2: 11 });
        // amomaxu.d a0,a1,(a2)
        assert_eq!(decode(0xe0b6352f), Inst::Amo { op: AmoOp::Maxu, width: Width::D, rd: 10, rs1: 12, rs2: 11 });
        // fld fa0,8(sp)
        assert_eq!(decode(0x00813507), Inst::FLoad { double: true, rd: 10, rs1: 2, imm: 8 });
        // fadd.d fa0,fa0,fa1 (rne: rm=0 here from the assembler's "rne")
        assert_eq!(decode(0x02b50553), Inst::FOp { op: FpOp::Add, double: true, rd: 10, rs1: 10, rs2: 11, rm: 0 });
        // fmadd.s fa0,fa1,fa2,fa3 (dyn)
        assert_eq!(
            decode(0x68c5f543),
            Inst::Fma { op: FmaOp::Madd, double: false, rd: 10, rs1: 11, rs2: 12, rs3: 13, rm: 7 }
        );
        // fcvt.w.d a0,fa0,rtz
        assert_eq!(decode(0xc2051553), Inst::FCvtToInt { to: IntKind::W, double: true, rd: 10, rs1: 10, rm: 1 });
        // fcvt.d.s fa0,fa0
        assert_eq!(decode(0x42050553), Inst::FCvtFloat { to_double: true, rd: 10, rs1: 10, rm: 0 });
        // fcvt.s.d fa0,fa0 (dyn)
        assert_eq!(decode(0x40157553), Inst::FCvtFloat { to_double: false, rd: 10, rs1: 10, rm: 7 });
        // fmv.x.d a0,fa0 ; fclass.d a0,fa0 ; feq.d a0,fa0,fa1
        assert_eq!(decode(0xe2050553), Inst::FMvToInt { double: true, rd: 10, rs1: 10 });
        assert_eq!(decode(0xe2051553), Inst::FClass { double: true, rd: 10, rs1: 10 });
        assert_eq!(decode(0xa2b52553), Inst::FCmp { op: FpCmp::Eq, double: true, rd: 10, rs1: 10, rs2: 11 });
    }

    #[test]
    fn compressed() {
        assert_eq!(inst_len(0x4501), 2);
        assert_eq!(inst_len(0x0513), 4);
        assert_eq!(decode(0x4501), Inst::OpImm { op: AluOp::Add, rd: 10, rs1: 0, imm: 0 }); // c.li a0,0
        assert_eq!(decode(0x557d), Inst::OpImm { op: AluOp::Add, rd: 10, rs1: 0, imm: -1 }); // c.li a0,-1
        assert_eq!(decode(0x8082), Inst::Jalr { rd: 0, rs1: 1, imm: 0 }); // ret
        assert_eq!(decode(0x1141), Inst::OpImm { op: AluOp::Add, rd: 2, rs1: 2, imm: -16 }); // addi sp,sp,-16
        assert_eq!(decode(0xe406), Inst::Store { op: StoreOp::D, rs1: 2, rs2: 1, imm: 8 }); // sd ra,8(sp)
        assert_eq!(decode(0x60a2), Inst::Load { op: LoadOp::D, rd: 1, rs1: 2, imm: 8 }); // ld ra,8(sp)
        assert_eq!(decode(0x852e), Inst::Op { op: AluOp::Add, rd: 10, rs1: 0, rs2: 11 }); // mv a0,a1
        assert_eq!(decode(0x952e), Inst::Op { op: AluOp::Add, rd: 10, rs1: 10, rs2: 11 }); // add a0,a0,a1
        assert_eq!(decode(0x0028), Inst::OpImm { op: AluOp::Add, rd: 10, rs1: 2, imm: 8 }); // addi a0,sp,8
        assert_eq!(decode(0x6398), Inst::Load { op: LoadOp::D, rd: 14, rs1: 15, imm: 0 }); // ld a4,0(a5)
        assert_eq!(decode(0x4398), Inst::Load { op: LoadOp::W, rd: 14, rs1: 15, imm: 0 }); // lw a4,0(a5)
        assert_eq!(decode(0xc398), Inst::Store { op: StoreOp::W, rs1: 15, rs2: 14, imm: 0 }); // sw a4,0(a5)
        assert_eq!(decode(0x8d0d), Inst::Op { op: AluOp::Sub, rd: 10, rs1: 10, rs2: 11 }); // sub a0,a0,a1
        assert_eq!(decode(0x9d2d), Inst::Op32 { op: AluOp::Add, rd: 10, rs1: 10, rs2: 11 }); // addw a0,a0,a1
        assert_eq!(decode(0x2505), Inst::OpImm32 { op: AluOp::Add, rd: 10, rs1: 10, imm: 1 }); // addiw a0,a0,1
        assert_eq!(decode(0x6505), Inst::Lui { rd: 10, imm: 0x1000 }); // lui a0,0x1
        assert_eq!(decode(0x0506), Inst::OpImm { op: AluOp::Sll, rd: 10, rs1: 10, imm: 1 }); // slli a0,a0,1
        assert_eq!(decode(0x8505), Inst::OpImm { op: AluOp::Sra, rd: 10, rs1: 10, imm: 1 }); // srai a0,a0,1
        assert_eq!(decode(0x893d), Inst::OpImm { op: AluOp::And, rd: 10, rs1: 10, imm: 15 }); // andi a0,a0,15
        assert_eq!(decode(0xa001), Inst::Jal { rd: 0, imm: 0 }); // j .
        assert_eq!(decode(0xbffd), Inst::Jal { rd: 0, imm: -2 }); // j .-2
        assert_eq!(decode(0xc111), Inst::Branch { op: BranchOp::Eq, rs1: 10, rs2: 0, imm: 4 }); // beqz a0,+4
        assert_eq!(decode(0x9002), Inst::Ebreak);
        assert_eq!(decode(0x9502), Inst::Jalr { rd: 1, rs1: 10, imm: 0 }); // jalr a0
        assert_eq!(decode(0x2522), Inst::FLoad { double: true, rd: 10, rs1: 2, imm: 8 }); // fld fa0,8(sp)
        assert_eq!(decode(0xa42a), Inst::FStore { double: true, rs1: 2, rs2: 10, imm: 8 }); // fsd fa0,8(sp)
        assert_eq!(decode(0x0000), Inst::Illegal(0));
    }
}
