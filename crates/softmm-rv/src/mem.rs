//! Guest memory as one hart sees it: loads, stores, instruction fetch and
//! atomics through the hart's softmm [`Accessor`] (its software TLB), and
//! the guest-fault value softmm errors become.

use softmm::{Accessor, Error, GuestWords, SegvKind};

/// Why a guest access failed, as the signal a kernel would send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGSEGV: no mapping (`SEGV_MAPERR`) or not permitted (`SEGV_ACCERR`).
    Segv(SegvKind),
    /// SIGBUS `BUS_ADRERR`: a page wholly past the end of its file (or
    /// memfd), or one that could not be read back (swap I/O error).
    Bus,
    /// SIGBUS `BUS_ADRALN`: a misaligned atomic (LR/SC or AMO).
    Misaligned,
    /// No frame left for the page: Linux's OOM killer would end the
    /// process (SIGKILL).
    OutOfMemory,
}

/// A guest access that faulted: the address and the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFault {
    pub addr: u64,
    pub kind: FaultKind,
}

impl GuestFault {
    /// The signal number Linux would deliver.
    pub fn signal(&self) -> i32 {
        match self.kind {
            FaultKind::Segv(_) => crate::signal::SIGSEGV,
            FaultKind::Bus | FaultKind::Misaligned => crate::signal::SIGBUS,
            FaultKind::OutOfMemory => crate::signal::SIGKILL,
        }
    }
}

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FaultKind::Segv(k) => write!(f, "segmentation fault at {:#x} ({k})", self.addr),
            FaultKind::Bus => write!(f, "bus error at {:#x}", self.addr),
            FaultKind::Misaligned => write!(f, "misaligned atomic at {:#x}", self.addr),
            FaultKind::OutOfMemory => write!(f, "out of memory at {:#x}", self.addr),
        }
    }
}

fn fault(addr: u64, e: Error) -> GuestFault {
    let kind = match e {
        Error::Segv { kind, .. } => FaultKind::Segv(kind),
        Error::Fault { .. } | Error::Exited => FaultKind::Segv(SegvKind::MapErr),
        Error::NoMemory(_) | Error::SwapFull(_) | Error::SwapExhausted { .. } => FaultKind::OutOfMemory,
        _ => FaultKind::Bus,
    };
    let addr = match e {
        Error::Segv { addr, .. } => addr,
        _ => addr,
    };
    GuestFault { addr, kind }
}

/// Result of a guest access.
pub type MemResult<T> = std::result::Result<T, GuestFault>;

/// A hart's view of guest memory.
pub struct Memory {
    acc: Accessor,
}

impl Memory {
    pub fn new(acc: Accessor) -> Memory {
        Memory { acc }
    }

    /// The accessor, for system calls that copy buffers.
    pub fn accessor(&mut self) -> &mut Accessor {
        &mut self.acc
    }

    /// Instruction fetch (an execute access: a page without PROT_EXEC
    /// faults with SEGV_ACCERR): the 32-bit word at `pc`, or only its low
    /// 16 bits when they are a compressed instruction (so a 2-byte
    /// instruction at the end of the last executable page does not fault).
    #[inline]
    pub fn fetch(&mut self, pc: u64) -> MemResult<u32> {
        if pc % 4 == 0 {
            // An aligned word never crosses a page: one access.
            let w = self.acc.fetch_u32(pc).map_err(|e| fault(pc, e))?;
            return Ok(if w & 3 == 3 { w } else { w & 0xffff });
        }
        let lo = u32::from(self.acc.fetch_u16(pc).map_err(|e| fault(pc, e))?);
        if lo & 3 != 3 {
            return Ok(lo);
        }
        let pc2 = pc.wrapping_add(2);
        let hi = u32::from(self.acc.fetch_u16(pc2).map_err(|e| fault(pc2, e))?);
        Ok(lo | (hi << 16))
    }

    /// Load `size` (1, 2, 4 or 8) bytes, zero-extended. Misaligned loads
    /// are allowed, as Linux emulates them for user space.
    #[inline(always)]
    pub fn load(&mut self, addr: u64, size: u64) -> MemResult<u64> {
        let r = if addr % size == 0 {
            match size {
                1 => self.acc.load_word::<u8>(addr).map(u64::from),
                2 => self.acc.load_word::<u16>(addr).map(u64::from),
                4 => self.acc.load_word::<u32>(addr).map(u64::from),
                _ => self.acc.load_word::<u64>(addr),
            }
        } else {
            let mut b = [0u8; 8];
            self.acc.read(addr, &mut b[..size as usize]).map(|()| u64::from_le_bytes(b))
        };
        r.map_err(|e| fault(addr, e))
    }

    /// [`load`](Self::load) if it takes no more than a TLB hit under the
    /// accessor's hold (see [`Accessor::hold`]); `None`: take `load`.
    ///
    /// # Safety
    ///
    /// The accessor's hold must be open.
    #[inline(always)]
    pub unsafe fn load_held(&self, addr: u64, size: u64) -> Option<u64> {
        // SAFETY: the caller keeps the hold open (for all four).
        unsafe {
            match size {
                1 => self.acc.load_hit::<u8>(addr).map(u64::from),
                2 => self.acc.load_hit::<u16>(addr).map(u64::from),
                4 => self.acc.load_hit::<u32>(addr).map(u64::from),
                _ => self.acc.load_hit::<u64>(addr),
            }
        }
    }

    /// [`store`](Self::store) if it takes no more than a TLB hit under the
    /// accessor's hold; `false` (nothing stored): take `store`.
    ///
    /// # Safety
    ///
    /// The accessor's hold must be open.
    #[inline(always)]
    pub unsafe fn store_held(&mut self, addr: u64, size: u64, v: u64) -> bool {
        // SAFETY: the caller keeps the hold open (for all four).
        unsafe {
            match size {
                1 => self.acc.store_hit(addr, v as u8),
                2 => self.acc.store_hit(addr, v as u16),
                4 => self.acc.store_hit(addr, v as u32),
                _ => self.acc.store_hit(addr, v),
            }
        }
    }

    /// Store the low `size` bytes of `v`.
    #[inline(always)]
    pub fn store(&mut self, addr: u64, size: u64, v: u64) -> MemResult<()> {
        let r = if addr % size == 0 {
            match size {
                1 => self.acc.store_word(addr, v as u8),
                2 => self.acc.store_word(addr, v as u16),
                4 => self.acc.store_word(addr, v as u32),
                _ => self.acc.store_word(addr, v),
            }
        } else {
            self.acc.write(addr, &v.to_le_bytes()[..size as usize])
        };
        r.map_err(|e| fault(addr, e))
    }

    /// Check that an atomic of `size` bytes at `addr` is aligned: RISC-V
    /// Linux sends SIGBUS for a misaligned AMO or LR/SC.
    fn aligned(addr: u64, size: u64) -> MemResult<()> {
        if addr % size != 0 {
            return Err(GuestFault { addr, kind: FaultKind::Misaligned });
        }
        Ok(())
    }

    /// Atomic load for LR (an acquire load of the aligned word).
    pub fn load_reserved(&mut self, addr: u64, size: u64) -> MemResult<u64> {
        Self::aligned(addr, size)?;
        self.load(addr, size)
    }

    /// Atomic compare-exchange of an aligned word: `Ok(true)` if it held
    /// `old` and now holds `new`. A store access (faults on read-only).
    pub fn cmpxchg(&mut self, addr: u64, size: u64, old: u64, new: u64) -> MemResult<bool> {
        Self::aligned(addr, size)?;
        let r = if size == 4 {
            self.acc.cmpxchg_word(addr, old as u32, new as u32).map(|r| r.is_ok())
        } else {
            self.acc.cmpxchg_word(addr, old, new).map(|r| r.is_ok())
        };
        r.map_err(|e| fault(addr, e))
    }

    /// Atomic read-modify-write of an aligned word: `f(old)` is stored,
    /// `old` is returned. A host fetch-add for add, a compare-exchange loop
    /// for the rest; either way atomic against every other hart's access
    /// to the same frame.
    pub fn amo(&mut self, addr: u64, size: u64, f: impl Fn(u64) -> u64, is_add: Option<u64>) -> MemResult<u64> {
        Self::aligned(addr, size)?;
        if let Some(v) = is_add {
            let r = if size == 4 {
                self.acc.fetch_add_word(addr, v as u32).map(u64::from)
            } else {
                self.acc.fetch_add_word(addr, v)
            };
            return r.map_err(|e| fault(addr, e));
        }
        let mut old = self.load(addr, size)?;
        loop {
            let new = f(old);
            let r = if size == 4 {
                self.acc.cmpxchg_word(addr, old as u32, new as u32).map(|r| r.map(u64::from).map_err(u64::from))
            } else {
                self.acc.cmpxchg_word(addr, old, new)
            };
            match r.map_err(|e| fault(addr, e))? {
                Ok(_) => return Ok(old),
                Err(actual) => old = actual,
            }
        }
    }

    /// Copy guest bytes into a host buffer (for system calls).
    pub fn read_bytes(&mut self, addr: u64, out: &mut [u8]) -> MemResult<()> {
        self.acc.read(addr, out).map_err(|e| fault(addr, e))
    }

    /// Copy host bytes into guest memory (for system calls).
    pub fn write_bytes(&mut self, addr: u64, data: &[u8]) -> MemResult<()> {
        self.acc.write(addr, data).map_err(|e| fault(addr, e))
    }

    /// A NUL-terminated guest string of at most `max` bytes.
    pub fn read_cstr(&mut self, addr: u64, max: usize) -> MemResult<Vec<u8>> {
        let mut out = Vec::new();
        let mut a = addr;
        while out.len() < max {
            let b = self.load(a, 1)? as u8;
            if b == 0 {
                break;
            }
            out.push(b);
            a = a.wrapping_add(1);
        }
        Ok(out)
    }
}
