//! A hart: the RV64GC register state and the interpreter loop. With a
//! decoded-instruction cache ([`crate::icache`]) the loop runs a page's
//! cached ops ([`crate::threaded`]) one indirect call each, and leaves the
//! rest (fills, system calls, CSRs, `fence.i`, traps) to the exact path:
//! fetch through [`Memory::fetch`], decode into an [`Inst`], execute.

use crate::decode::{decode, inst_len, AluOp, AmoOp, BranchOp, CsrOp, FmaOp, FpOp, Inst, LoadOp, StoreOp, Width};
use crate::fpu;
use crate::icache::{CodeWatch, ICache};
use crate::mem::{GuestFault, MemResult, Memory};
use crate::threaded::{Op, OpRef};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Why the interpreter loop stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// An `ecall`; the pc is already past it.
    Ecall,
    /// A guest memory fault (pc at the faulting instruction).
    Fault(GuestFault),
    /// An illegal instruction at `pc` (SIGILL).
    Illegal { pc: u64, raw: u32 },
    /// `ebreak` at `pc` (SIGTRAP).
    Breakpoint { pc: u64 },
    /// The hart's attention flag was raised (another thread ended the
    /// process, or a signal is pending); the pc is at the next instruction.
    Attention,
}

impl From<GuestFault> for Stop {
    fn from(f: GuestFault) -> Stop {
        Stop::Fault(f)
    }
}

/// CSR numbers of the user-level CSRs this machine has.
const CSR_FFLAGS: u16 = 0x001;
const CSR_FRM: u16 = 0x002;
const CSR_FCSR: u16 = 0x003;
const CSR_CYCLE: u16 = 0xc00;
const CSR_TIME: u16 = 0xc01;
const CSR_INSTRET: u16 = 0xc02;

/// `time` ticks per second (the timebase QEMU's virt machine uses).
pub const TIMEBASE_HZ: u64 = 10_000_000;

/// One hardware thread.
pub struct Hart {
    /// Integer registers; `x[0]` is kept zero.
    pub x: [u64; 32],
    /// Floating-point registers (singles NaN-boxed).
    pub f: [u64; 32],
    pub pc: u64,
    /// `fcsr`: `frm` in bits 7..5, `fflags` in bits 4..0.
    pub fcsr: u32,
    /// Instructions retired.
    pub instret: u64,
    /// LR's reservation: address, size and the value loaded. SC succeeds
    /// if the word still holds that value (compared and swapped
    /// atomically), which is what every software RISC-V machine that runs
    /// guest threads on host threads does; an ABA change in between is not
    /// detected.
    reservation: Option<(u64, u64, u64)>,
    pub mem: Memory,
    /// Decoded instructions by page, when the address space has a
    /// [`crate::icache::CodeWatch`].
    icache: Option<ICache>,
    boot: Instant,
    /// Raised from other threads to stop [`run`](Self::run) between
    /// instructions.
    attention: Arc<AtomicBool>,
    /// Why a handler of the page loop left it, if it stops the run.
    pub(crate) pending: Option<Stop>,
    /// The page loop left at an op not filled yet: fill it first.
    pub(crate) fill_next: bool,
    /// The ops of the page the page loop runs, and that page's address
    /// (0 outside the loop).
    pub(crate) page: PagePtr,
    pub(crate) page_base: u64,
    /// The cache's watch (one nobody bumps without a cache) and, while the
    /// page loop runs, the generation its pages were filled under: what
    /// [`code_stale`](Self::code_stale) compares, without going through
    /// the cache.
    code_watch: Arc<CodeWatch>,
    code_seen: u64,
}

/// The ops of the page the page loop runs ([`crate::icache::ICache::page`]).
#[derive(Clone, Copy)]
pub(crate) struct PagePtr(pub(crate) *const Op);

// SAFETY: the pointer is dereferenced only by the page loop of the hart
// that holds it, while its cache keeps the page (see `Hart::run`); a hart
// moved to another thread takes its cache along.
unsafe impl Send for PagePtr {}

/// Instructions between two looks at the attention flag.
const ATTENTION_EVERY: u32 = 1024;

impl Hart {
    pub fn new(mem: Memory, pc: u64, sp: u64) -> Hart {
        let mut x = [0u64; 32];
        x[2] = sp;
        Hart {
            x,
            f: [0; 32],
            pc,
            fcsr: 0,
            instret: 0,
            reservation: None,
            mem,
            icache: None,
            boot: Instant::now(),
            attention: Arc::new(AtomicBool::new(false)),
            pending: None,
            fill_next: false,
            page: PagePtr(std::ptr::null()),
            page_base: 0,
            code_watch: CodeWatch::unwatched(),
            code_seen: 0,
        }
    }

    /// A hart for a new thread of the same program: this hart's registers
    /// (a clone's child starts as a copy of its parent) over `mem`.
    pub fn spawn(&self, mem: Memory) -> Hart {
        let mut h = Hart::new(mem, self.pc, self.x[2]);
        h.x = self.x;
        h.f = self.f;
        h.fcsr = self.fcsr;
        h.boot = self.boot;
        h
    }

    /// The flag that stops [`run`](Self::run) when raised.
    pub fn set_attention(&mut self, flag: Arc<AtomicBool>) {
        self.attention = flag;
    }

    /// Cache decoded instructions (see [`crate::icache`]).
    pub fn set_icache(&mut self, cache: ICache) {
        self.code_watch = cache.watch().clone();
        self.icache = Some(cache);
    }

    /// The decoded-instruction cache, if this hart has one.
    pub fn icache(&self) -> Option<&ICache> {
        self.icache.as_ref()
    }

    /// Take the decoded-instruction cache away (to give it to another
    /// hart over the same space).
    pub fn take_icache(&mut self) -> Option<ICache> {
        self.icache.take()
    }

    /// Run until an ecall, a fault, an illegal instruction or a breakpoint.
    pub fn run(&mut self) -> Stop {
        if self.icache.is_none() {
            return self.run_uncached();
        }
        loop {
            if self.attention.load(Ordering::Acquire) {
                return Stop::Attention;
            }
            let mut left = ATTENTION_EVERY;
            while left > 0 {
                let pc = self.pc;
                let page = match self.icache.as_mut() {
                    // Page 0 is left to the exact path: the page loop
                    // tells EXIT (1) from a pc by its page.
                    Some(c) if pc & 1 == 0 && pc >= 0x1000 => {
                        let page = c.page(pc);
                        self.code_seen = c.seen();
                        page
                    }
                    _ => std::ptr::null(),
                };
                if !page.is_null() {
                    // The page loop's loads and stores run with the
                    // accessor's slot published once (a hold): its handlers
                    // never block and never call into the address space.
                    self.mem.accessor().hold();
                    let (n, exited) = self.run_page(page, left);
                    self.mem.accessor().release();
                    self.instret += u64::from(n);
                    left = left.saturating_sub(n);
                    if !exited {
                        continue;
                    }
                    if let Some(stop) = self.pending.take() {
                        return stop;
                    }
                }
                if std::mem::take(&mut self.fill_next) {
                    self.fill_at(self.pc);
                }
                // The exact path, for what the page loop leaves to it.
                if let Err(stop) = self.step() {
                    return stop;
                }
                left = left.saturating_sub(1);
            }
        }
    }

    /// The page loop: run cached ops from `self.pc` while the pc stays in
    /// the page of `page` (see [`crate::icache::ICache::page`]), about
    /// `budget` (at least 1) of them (checked at jumps and taken branches,
    /// so a run in sequence may go past it up to the page's end), each
    /// handler going on with the next ([`crate::threaded`]). The
    /// instructions it completed, and whether a
    /// handler asked to leave ([`crate::threaded::EXIT`]; the hart's pc and
    /// pending stop say why).
    #[inline(always)]
    fn run_page(&mut self, page: *const Op, budget: u32) -> (u32, bool) {
        let pc = self.pc;
        self.page = PagePtr(page);
        self.page_base = pc & !0xfff;
        // SAFETY: `page` points to the SLOTS (2048) ops of the page of
        // `pc`, which is even, so the index is below 2048. The cache frees
        // or writes ops only in `fill` and `flush`, which no handler calls
        // (a fill is left to `run`, `fence.i` to the exact path), so the op
        // stays valid and unchanged while its handler runs.
        let op = unsafe { OpRef::at(page, ((pc & 0xfff) >> 1) as usize) };
        let budget = budget as i32;
        let (next, left) = (op.get().f)(self, op, budget - 1);
        self.page_base = 0;
        if next & 1 != 0 {
            return ((budget - left - 1) as u32, true);
        }
        self.pc = next;
        ((budget - left) as u32, false)
    }

    /// [`run`](Self::run) for a hart without a cache: every instruction
    /// fetched and decoded.
    fn run_uncached(&mut self) -> Stop {
        loop {
            if self.attention.load(Ordering::Acquire) {
                return Stop::Attention;
            }
            for _ in 0..ATTENTION_EVERY {
                if let Err(stop) = self.step() {
                    return stop;
                }
            }
        }
    }

    /// Fetch, decode and execute one instruction (never through the cache).
    pub fn step(&mut self) -> Result<(), Stop> {
        let raw = self.mem.fetch(self.pc)?;
        let inst = decode(raw);
        let next = self.pc.wrapping_add(inst_len(raw));
        let r = self.execute(inst, raw, next);
        if r.is_ok() || r == Err(Stop::Ecall) {
            self.instret += 1;
        }
        r
    }

    /// Decode the instruction at `pc` into the cache, if it can be cached
    /// (a fetch that faults is left for the exact path to report).
    pub(crate) fn fill_at(&mut self, pc: u64) {
        let Some(ticket) = self.icache.as_ref().map(|c| c.begin_fill(pc)) else { return };
        let Ok(raw) = self.mem.fetch(pc) else { return };
        if let Some(c) = self.icache.as_mut() {
            c.fill(ticket, pc, decode(raw), raw);
        }
    }

    /// The instruction of a generic op of the cache (see
    /// [`ICache::generic`]).
    #[inline]
    pub(crate) fn generic_inst(&self, index: u32) -> Option<(Inst, u32)> {
        self.icache.as_ref()?.generic(index)
    }

    /// Whether code was invalidated since the page loop looked (only
    /// meaningful in the page loop: it compares with what the loop's page
    /// was filled under; `ICache::stale` compares the same values).
    #[inline(always)]
    pub(crate) fn code_stale(&self) -> bool {
        self.code_watch.generation() != self.code_seen
    }

    // Register numbers come from 5-bit fields: the mask only tells the
    // compiler so (no bounds check).
    #[inline]
    fn set(&mut self, rd: u8, v: u64) {
        if rd != 0 {
            self.x[(rd & 31) as usize] = v;
        }
    }

    #[inline]
    fn r(&self, r: u8) -> u64 {
        self.x[(r & 31) as usize]
    }

    #[inline(always)]
    pub(crate) fn execute(&mut self, inst: Inst, raw: u32, next: u64) -> Result<(), Stop> {
        let pc = self.pc;
        let mut npc = next;
        match inst {
            Inst::Lui { rd, imm } => self.set(rd, imm as i64 as u64),
            Inst::Auipc { rd, imm } => self.set(rd, pc.wrapping_add(imm as i64 as u64)),
            Inst::Jal { rd, imm } => {
                self.set(rd, next);
                npc = pc.wrapping_add(imm as i64 as u64);
            }
            Inst::Jalr { rd, rs1, imm } => {
                let t = self.r(rs1).wrapping_add(imm as i64 as u64) & !1;
                self.set(rd, next);
                npc = t;
            }
            Inst::Branch { op, rs1, rs2, imm } => {
                if branch(op, self.r(rs1), self.r(rs2)) {
                    npc = pc.wrapping_add(imm as i64 as u64);
                }
            }
            Inst::Load { op, rd, rs1, imm } => {
                let v = self.load(op, self.r(rs1).wrapping_add(imm as i64 as u64))?;
                self.set(rd, v);
            }
            Inst::Store { op, rs1, rs2, imm } => {
                let size = match op {
                    StoreOp::B => 1,
                    StoreOp::H => 2,
                    StoreOp::W => 4,
                    StoreOp::D => 8,
                };
                self.mem.store(self.r(rs1).wrapping_add(imm as i64 as u64), size, self.r(rs2))?;
            }
            Inst::OpImm { op, rd, rs1, imm } => self.set(rd, alu64(op, self.r(rs1), imm as i64 as u64)),
            Inst::OpImm32 { op, rd, rs1, imm } => self.set(rd, alu32(op, self.r(rs1), imm as i64 as u64)),
            Inst::Op { op, rd, rs1, rs2 } => self.set(rd, alu64(op, self.r(rs1), self.r(rs2))),
            Inst::Op32 { op, rd, rs1, rs2 } => self.set(rd, alu32(op, self.r(rs1), self.r(rs2))),
            // One hart per host thread and host atomics for every shared
            // access: the host's ordering already covers FENCE.
            Inst::Fence => {}
            // This hart's later fetches see its earlier stores.
            Inst::FenceI => {
                if let Some(c) = self.icache.as_mut() {
                    c.flush();
                }
            }
            Inst::Ecall => {
                self.pc = next;
                return Err(Stop::Ecall);
            }
            Inst::Ebreak => return Err(Stop::Breakpoint { pc }),
            Inst::Csr { op, rd, rs1, csr, imm } => {
                let src = if imm { u64::from(rs1) } else { self.r(rs1) };
                self.csr(op, rd, rs1, csr, src).ok_or(Stop::Illegal { pc, raw })?;
            }
            Inst::Lr { width, rd, rs1 } => {
                let addr = self.r(rs1);
                let size = width_size(width);
                let v = self.mem.load_reserved(addr, size)?;
                self.reservation = Some((addr, size, v));
                self.set(rd, sext_width(v, width));
            }
            Inst::Sc { width, rd, rs1, rs2 } => {
                let addr = self.r(rs1);
                let size = width_size(width);
                let ok = match self.reservation.take() {
                    Some((a, s, old)) if a == addr && s == size => self.mem.cmpxchg(addr, size, old, self.r(rs2))?,
                    _ => false,
                };
                self.set(rd, u64::from(!ok));
            }
            Inst::Amo { op, width, rd, rs1, rs2 } => {
                let v = self.amo(op, width, self.r(rs1), self.r(rs2))?;
                self.set(rd, v);
            }
            Inst::FLoad { double, rd, rs1, imm } => {
                let addr = self.r(rs1).wrapping_add(imm as i64 as u64);
                self.f[(rd & 31) as usize] =
                    if double { self.mem.load(addr, 8)? } else { self.mem.load(addr, 4)? | 0xffff_ffff_0000_0000 };
            }
            Inst::FStore { double, rs1, rs2, imm } => {
                let addr = self.r(rs1).wrapping_add(imm as i64 as u64);
                self.mem.store(addr, if double { 8 } else { 4 }, self.f[(rs2 & 31) as usize])?;
            }
            _ => self.execute_fp(inst).ok_or(Stop::Illegal { pc, raw })?,
        }
        self.pc = npc;
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn load(&mut self, op: LoadOp, addr: u64) -> MemResult<u64> {
        Ok(match op {
            LoadOp::B => self.mem.load(addr, 1)? as u8 as i8 as i64 as u64,
            LoadOp::H => self.mem.load(addr, 2)? as u16 as i16 as i64 as u64,
            LoadOp::W => self.mem.load(addr, 4)? as u32 as i32 as i64 as u64,
            LoadOp::D => self.mem.load(addr, 8)?,
            LoadOp::Bu => self.mem.load(addr, 1)?,
            LoadOp::Hu => self.mem.load(addr, 2)?,
            LoadOp::Wu => self.mem.load(addr, 4)?,
        })
    }

    fn amo(&mut self, op: AmoOp, width: Width, addr: u64, src: u64) -> MemResult<u64> {
        let size = width_size(width);
        let w = width == Width::W;
        // Compare in the operand width: words as i32/u32.
        let s = |v: u64| if w { v as u32 as i32 as i64 } else { v as i64 };
        let u = |v: u64| if w { u64::from(v as u32) } else { v };
        let f = move |old: u64| -> u64 {
            match op {
                AmoOp::Swap => src,
                AmoOp::Add => old.wrapping_add(src),
                AmoOp::Xor => old ^ src,
                AmoOp::And => old & src,
                AmoOp::Or => old | src,
                AmoOp::Min => {
                    if s(old) <= s(src) {
                        old
                    } else {
                        src
                    }
                }
                AmoOp::Max => {
                    if s(old) >= s(src) {
                        old
                    } else {
                        src
                    }
                }
                AmoOp::Minu => {
                    if u(old) <= u(src) {
                        old
                    } else {
                        src
                    }
                }
                AmoOp::Maxu => {
                    if u(old) >= u(src) {
                        old
                    } else {
                        src
                    }
                }
            }
        };
        let add = (op == AmoOp::Add).then_some(src);
        let old = self.mem.amo(addr, size, f, add)?;
        Ok(sext_width(old, width))
    }

    /// A CSR instruction; `None` for a CSR that does not exist or may not
    /// be written (SIGILL). CSRRS/CSRRC with `rs1` = x0 (or a zero
    /// immediate) do not write, so they may read the counters.
    fn csr(&mut self, op: CsrOp, rd: u8, rs1: u8, csr: u16, src: u64) -> Option<()> {
        let old = self.csr_read(csr)?;
        let writes = op == CsrOp::Rw || rs1 != 0;
        if writes {
            let new = match op {
                CsrOp::Rw => src,
                CsrOp::Rs => old | src,
                CsrOp::Rc => old & !src,
            };
            self.csr_write(csr, new)?;
        }
        self.set(rd, old);
        Some(())
    }

    fn csr_read(&self, csr: u16) -> Option<u64> {
        Some(match csr {
            CSR_FFLAGS => u64::from(self.fcsr & 0x1f),
            CSR_FRM => u64::from((self.fcsr >> 5) & 7),
            CSR_FCSR => u64::from(self.fcsr & 0xff),
            CSR_CYCLE | CSR_INSTRET => self.instret,
            CSR_TIME => {
                let ns = self.boot.elapsed().as_nanos() as u64;
                ns / (1_000_000_000 / TIMEBASE_HZ)
            }
            _ => return None,
        })
    }

    fn csr_write(&mut self, csr: u16, v: u64) -> Option<()> {
        let v = v as u32;
        match csr {
            CSR_FFLAGS => self.fcsr = (self.fcsr & !0x1f) | (v & 0x1f),
            CSR_FRM => self.fcsr = (self.fcsr & !0xe0) | ((v & 7) << 5),
            CSR_FCSR => self.fcsr = v & 0xff,
            _ => return None,
        }
        Some(())
    }

    /// The rounding mode an instruction uses; `None` when it is dynamic
    /// and `frm` holds a reserved value (the instruction is illegal).
    fn rounding(&self, rm: u8) -> Option<u8> {
        let rm = if rm == 7 { ((self.fcsr >> 5) & 7) as u8 } else { rm };
        (rm <= 4).then_some(rm)
    }

    fn raise(&mut self, flags: u32) {
        self.fcsr |= flags;
    }

    fn fs(&self, r: u8) -> f32 {
        fpu::unbox(self.f[(r & 31) as usize])
    }
    fn fd(&self, r: u8) -> f64 {
        f64::from_bits(self.f[(r & 31) as usize])
    }

    /// The F and D instructions other than loads and stores; `None` for an
    /// illegal one.
    fn execute_fp(&mut self, inst: Inst) -> Option<()> {
        match inst {
            Inst::FOp { op, double, rd, rs1, rs2, rm } => self.fp_op(op, double, rd, rs1, rs2, rm)?,
            Inst::Fma { op, double, rd, rs1, rs2, rs3, rm } => {
                let rm = self.rounding(rm)?;
                let (r, flags) = if double {
                    let (a, b, c) = fma_operands(op, self.fd(rs1), self.fd(rs2), self.fd(rs3));
                    let (r, fl) = fpu::fma64(a, b, c, rm);
                    (fpu::d_result(r), fl)
                } else {
                    let (a, b, c) = fma_operands(op, self.fs(rs1), self.fs(rs2), self.fs(rs3));
                    let (r, fl) = fpu::fma32(a, b, c, rm);
                    (fpu::box_result(r), fl)
                };
                self.f[(rd & 31) as usize] = r;
                self.raise(flags);
            }
            Inst::FCmp { op, double, rd, rs1, rs2 } => {
                let (a, b, snan) = self.fp_pair(double, rs1, rs2);
                let (r, flags) = fpu::compare(a, b, op, snan);
                self.set(rd, r);
                self.raise(flags);
            }
            Inst::FCvtToInt { to, double, rd, rs1, rm } => {
                let rm = self.rounding(rm)?;
                let x = if double { self.fd(rs1) } else { f64::from(self.fs(rs1)) };
                let (r, flags) = fpu::to_int(x, rm, to);
                self.set(rd, r);
                self.raise(flags);
            }
            Inst::FCvtFromInt { from, double, rd, rs1, rm } => {
                let rm = self.rounding(rm)?;
                let v = self.r(rs1);
                let (r, flags) = if double {
                    let (r, f) = fpu::int_to_f64(v, from, rm);
                    (r.to_bits(), f)
                } else {
                    let (r, f) = fpu::int_to_f32(v, from, rm);
                    (fpu::boxed(r), f)
                };
                self.f[(rd & 31) as usize] = r;
                self.raise(flags);
            }
            Inst::FCvtFloat { to_double, rd, rs1, rm } => {
                let rm = self.rounding(rm)?;
                let (r, flags) = if to_double {
                    let (r, f) = fpu::f32_to_f64(self.fs(rs1));
                    (fpu::d_result(r), f)
                } else {
                    let (r, f) = fpu::f64_to_f32(self.fd(rs1), rm);
                    (fpu::box_result(r), f)
                };
                self.f[(rd & 31) as usize] = r;
                self.raise(flags);
            }
            Inst::FMvToInt { double, rd, rs1 } => {
                let v = self.f[(rs1 & 31) as usize];
                self.set(rd, if double { v } else { v as u32 as i32 as i64 as u64 });
            }
            Inst::FMvFromInt { double, rd, rs1 } => {
                let v = self.r(rs1);
                self.f[(rd & 31) as usize] = if double { v } else { fpu::boxed(f32::from_bits(v as u32)) };
            }
            Inst::FClass { double, rd, rs1 } => {
                let c = if double {
                    let v = self.fd(rs1);
                    fpu::classify(v, fpu::is_snan64(v), v.is_subnormal())
                } else {
                    let v = self.fs(rs1);
                    fpu::classify(f64::from(v), fpu::is_snan32(v), v.is_subnormal())
                };
                self.set(rd, c);
            }
            _ => return None,
        }
        Some(())
    }

    /// Two operands as doubles (singles widen exactly) and whether either
    /// was a signalling NaN (widening would quiet it).
    fn fp_pair(&self, double: bool, rs1: u8, rs2: u8) -> (f64, f64, bool) {
        if double {
            let (a, b) = (self.fd(rs1), self.fd(rs2));
            (a, b, fpu::is_snan64(a) || fpu::is_snan64(b))
        } else {
            let (a, b) = (self.fs(rs1), self.fs(rs2));
            (f64::from(a), f64::from(b), fpu::is_snan32(a) || fpu::is_snan32(b))
        }
    }

    fn fp_op(&mut self, op: FpOp, double: bool, rd: u8, rs1: u8, rs2: u8, rm: u8) -> Option<()> {
        let arith = match op {
            FpOp::Add => Some(fpu::Arith::Add),
            FpOp::Sub => Some(fpu::Arith::Sub),
            FpOp::Mul => Some(fpu::Arith::Mul),
            FpOp::Div => Some(fpu::Arith::Div),
            FpOp::Sqrt => Some(fpu::Arith::Sqrt),
            _ => None,
        };
        let (r, flags) = if let Some(a) = arith {
            let rm = self.rounding(rm)?;
            if double {
                let (r, f) = fpu::arith64(a, self.fd(rs1), self.fd(rs2), rm);
                (fpu::d_result(r), f)
            } else {
                let (r, f) = fpu::arith32(a, self.fs(rs1), self.fs(rs2), rm);
                (fpu::box_result(r), f)
            }
        } else if matches!(op, FpOp::Min | FpOp::Max) {
            let max = op == FpOp::Max;
            if double {
                let (a, b) = (self.fd(rs1), self.fd(rs2));
                let (r, f) = fpu::minmax64(a, b, max, fpu::is_snan64(a) || fpu::is_snan64(b));
                (fpu::d_result(r), f)
            } else {
                let (r, f) = fpu::minmax32(self.fs(rs1), self.fs(rs2), max);
                (fpu::box_result(r), f)
            }
        } else {
            (self.sign_inject(op, double, rs1, rs2), 0)
        };
        self.f[(rd & 31) as usize] = r;
        self.raise(flags);
        Some(())
    }

    /// FSGNJ/FSGNJN/FSGNJX: bit operations, no NaN canonicalisation (an
    /// unboxed single operand is the canonical NaN, though).
    fn sign_inject(&self, op: FpOp, double: bool, rs1: u8, rs2: u8) -> u64 {
        let (a, b, sign) = if double {
            (self.f[(rs1 & 31) as usize], self.f[(rs2 & 31) as usize], 1u64 << 63)
        } else {
            (u64::from(self.fs(rs1).to_bits()), u64::from(self.fs(rs2).to_bits()), 1u64 << 31)
        };
        let s = match op {
            FpOp::Sgnj => b & sign,
            FpOp::Sgnjn => !b & sign,
            _ => (a ^ b) & sign,
        };
        let v = (a & !sign) | s;
        if double {
            v
        } else {
            fpu::boxed(f32::from_bits(v as u32))
        }
    }
}

fn fma_operands<T: std::ops::Neg<Output = T>>(op: FmaOp, a: T, b: T, c: T) -> (T, T, T) {
    match op {
        FmaOp::Madd => (a, b, c),
        FmaOp::Msub => (a, b, -c),
        FmaOp::Nmsub => (-a, b, c),
        FmaOp::Nmadd => (-a, b, -c),
    }
}

fn width_size(w: Width) -> u64 {
    match w {
        Width::W => 4,
        Width::D => 8,
    }
}

fn sext_width(v: u64, w: Width) -> u64 {
    match w {
        Width::W => v as u32 as i32 as i64 as u64,
        Width::D => v,
    }
}

fn branch(op: BranchOp, a: u64, b: u64) -> bool {
    match op {
        BranchOp::Eq => a == b,
        BranchOp::Ne => a != b,
        BranchOp::Lt => (a as i64) < (b as i64),
        BranchOp::Ge => (a as i64) >= (b as i64),
        BranchOp::Ltu => a < b,
        BranchOp::Geu => a >= b,
    }
}

/// 64-bit integer operations, with RISC-V's division results: x/0 = -1
/// (all ones), x%0 = x, MIN/-1 = MIN, MIN%-1 = 0 (no trap).
#[inline(always)]
pub fn alu64(op: AluOp, a: u64, b: u64) -> u64 {
    let (sa, sb) = (a as i64, b as i64);
    match op {
        AluOp::Add => a.wrapping_add(b),
        AluOp::Sub => a.wrapping_sub(b),
        AluOp::Sll => a << (b & 63),
        AluOp::Slt => u64::from(sa < sb),
        AluOp::Sltu => u64::from(a < b),
        AluOp::Xor => a ^ b,
        AluOp::Srl => a >> (b & 63),
        AluOp::Sra => (sa >> (b & 63)) as u64,
        AluOp::Or => a | b,
        AluOp::And => a & b,
        AluOp::Mul => a.wrapping_mul(b),
        AluOp::Mulh => ((i128::from(sa) * i128::from(sb)) >> 64) as u64,
        AluOp::Mulhsu => ((i128::from(sa).wrapping_mul(i128::from(b))) >> 64) as u64,
        AluOp::Mulhu => ((u128::from(a) * u128::from(b)) >> 64) as u64,
        AluOp::Div => {
            if b == 0 {
                u64::MAX
            } else {
                sa.wrapping_div(sb) as u64
            }
        }
        AluOp::Divu => a.checked_div(b).unwrap_or(u64::MAX),
        AluOp::Rem => {
            if b == 0 {
                a
            } else {
                sa.wrapping_rem(sb) as u64
            }
        }
        AluOp::Remu => a.checked_rem(b).unwrap_or(a),
    }
}

/// The `*W` operations: 32-bit operands and a sign-extended 32-bit result.
#[inline(always)]
pub fn alu32(op: AluOp, a: u64, b: u64) -> u64 {
    let (a32, b32) = (a as u32, b as u32);
    let (sa, sb) = (a32 as i32, b32 as i32);
    let r: u32 = match op {
        AluOp::Add => a32.wrapping_add(b32),
        AluOp::Sub => a32.wrapping_sub(b32),
        AluOp::Sll => a32 << (b & 31),
        AluOp::Srl => a32 >> (b & 31),
        AluOp::Sra => (sa >> (b & 31)) as u32,
        AluOp::Mul => a32.wrapping_mul(b32),
        AluOp::Div => {
            if b32 == 0 {
                u32::MAX
            } else {
                sa.wrapping_div(sb) as u32
            }
        }
        AluOp::Divu => a32.checked_div(b32).unwrap_or(u32::MAX),
        AluOp::Rem => {
            if b32 == 0 {
                a32
            } else {
                sa.wrapping_rem(sb) as u32
            }
        }
        AluOp::Remu => a32.checked_rem(b32).unwrap_or(a32),
        // Not encodable as *W: the decoder never produces these.
        _ => alu64(op, a, b) as u32,
    };
    r as i32 as i64 as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_edge_cases() {
        assert_eq!(alu64(AluOp::Div, 7, 0), u64::MAX);
        assert_eq!(alu64(AluOp::Rem, 7, 0), 7);
        assert_eq!(alu64(AluOp::Div, i64::MIN as u64, -1i64 as u64), i64::MIN as u64);
        assert_eq!(alu64(AluOp::Rem, i64::MIN as u64, -1i64 as u64), 0);
        assert_eq!(alu32(AluOp::Div, i32::MIN as u64, -1i64 as u64), i32::MIN as i64 as u64);
        assert_eq!(alu32(AluOp::Divu, 5, 0), u64::MAX);
        assert_eq!(alu64(AluOp::Mulhsu, -1i64 as u64, 2), u64::MAX);
        assert_eq!(alu64(AluOp::Mulhu, u64::MAX, u64::MAX), u64::MAX - 1);
        assert_eq!(alu32(AluOp::Add, 0x7fff_ffff, 1), 0xffff_ffff_8000_0000);
    }
}
