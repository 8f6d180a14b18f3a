//! ELF64 for RISC-V executables: the file header and the program headers,
//! read with the `object` crate and checked. Every malformed input is an
//! [`ElfError`]; nothing here indexes out of bounds or overflows on
//! hostile input.

use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian;
use thiserror::Error;

/// Why a file cannot be loaded.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    #[error("file is truncated: {0}")]
    Truncated(&'static str),
    #[error("not a 64-bit little-endian ELF file")]
    WrongClass,
    #[error("unknown ELF version {0} (EI_VERSION must be 1)")]
    BadVersion(u8),
    #[error("not a RISC-V executable (e_machine {0})")]
    WrongMachine(u16),
    #[error("not an executable (e_type {0}): only ET_EXEC and ET_DYN (static-PIE) load")]
    WrongType(u16),
    #[error("dynamically linked (PT_INTERP): only static executables are supported")]
    Dynamic,
    #[error("bad program header: {0}")]
    BadSegment(&'static str),
    #[error("no loadable segment")]
    NoSegments,
}

pub use object::elf::{EM_RISCV, ET_DYN, ET_EXEC, PF_R, PF_W, PF_X, PT_GNU_STACK, PT_INTERP, PT_LOAD, PT_PHDR};

/// Size of one program header entry.
pub const PHENT: u16 = 56;

/// The file header fields the loader needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub e_type: u16,
    pub entry: u64,
    pub phoff: u64,
    pub phnum: u64,
}

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phdr {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// A parsed executable: header and program headers.
#[derive(Clone, Debug)]
pub struct Elf {
    pub header: Header,
    pub phdrs: Vec<Phdr>,
}

type Ehdr = object::elf::FileHeader64<LittleEndian>;

impl Elf {
    /// Parse and check `file`: the `object` crate reads the headers (its
    /// bounds checked), this checks what the loader needs of them, in
    /// Linux's order, each with its own error.
    pub fn parse(file: &[u8]) -> Result<Elf, ElfError> {
        if file.get(..4) != Some(&object::elf::ELFMAG[..]) {
            return Err(ElfError::BadMagic);
        }
        let h = Ehdr::parse(file).map_err(|_| header_error(file))?;
        if !h.is_little_endian() {
            return Err(ElfError::WrongClass);
        }
        let le = LittleEndian;
        let (e_type, machine) = (h.e_type(le), h.e_machine(le));
        if machine != EM_RISCV {
            return Err(ElfError::WrongMachine(machine));
        }
        if e_type != ET_EXEC && e_type != ET_DYN {
            return Err(ElfError::WrongType(e_type));
        }
        if h.e_phentsize(le) != PHENT {
            return Err(ElfError::BadSegment("e_phentsize is not 56"));
        }
        let raw = h.program_headers(le, file).map_err(|_| ElfError::Truncated("program headers"))?;
        let phdrs: Vec<Phdr> = raw.iter().map(phdr).collect();
        let header = Header { e_type, entry: h.e_entry(le), phoff: h.e_phoff(le), phnum: phdrs.len() as u64 };
        if phdrs.iter().any(|p| p.p_type == PT_INTERP) {
            return Err(ElfError::Dynamic);
        }
        if !phdrs.iter().any(|p| p.p_type == PT_LOAD) {
            return Err(ElfError::NoSegments);
        }
        for p in phdrs.iter().filter(|p| p.p_type == PT_LOAD) {
            check_load(p, file.len() as u64)?;
        }
        Ok(Elf { header, phdrs })
    }

    /// The loadable segments, in file order.
    pub fn loads(&self) -> impl Iterator<Item = &Phdr> {
        self.phdrs.iter().filter(|p| p.p_type == PT_LOAD)
    }

    /// Whether PT_GNU_STACK asks for an executable stack. Without the
    /// header the stack is not executable, as riscv64 Linux decides.
    pub fn executable_stack(&self) -> bool {
        self.phdrs.iter().any(|p| p.p_type == PT_GNU_STACK && p.flags & PF_X != 0)
    }
}

/// Why `object` refused the file header of a file with ELF's magic.
fn header_error(file: &[u8]) -> ElfError {
    if file.len() < std::mem::size_of::<Ehdr>() {
        return ElfError::Truncated("file header");
    }
    // EI_CLASS = ELFCLASS64, EI_DATA = ELFDATA2LSB.
    if file[4] != object::elf::ELFCLASS64 || file[5] != object::elf::ELFDATA2LSB {
        return ElfError::WrongClass;
    }
    ElfError::BadVersion(file[6])
}

fn phdr(p: &object::elf::ProgramHeader64<LittleEndian>) -> Phdr {
    let le = LittleEndian;
    Phdr {
        p_type: p.p_type(le),
        flags: p.p_flags(le),
        offset: p.p_offset(le),
        vaddr: p.p_vaddr(le),
        filesz: p.p_filesz(le),
        memsz: p.p_memsz(le),
        align: p.p_align(le),
    }
}

fn check_load(p: &Phdr, file_len: u64) -> Result<(), ElfError> {
    if p.filesz > p.memsz {
        return Err(ElfError::BadSegment("p_filesz is larger than p_memsz"));
    }
    let end = p.offset.checked_add(p.filesz).ok_or(ElfError::BadSegment("p_offset + p_filesz overflows"))?;
    if end > file_len {
        return Err(ElfError::Truncated("segment data"));
    }
    if p.vaddr.checked_add(p.memsz).is_none_or(|e| e > softmm::TASK_SIZE) {
        return Err(ElfError::BadSegment("segment outside the user address space"));
    }
    if p.vaddr % 4096 != p.offset % 4096 {
        return Err(ElfError::BadSegment("p_vaddr and p_offset disagree modulo the page size"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid header with one PT_LOAD of 16 bytes at 0x10000.
    pub(crate) fn tiny() -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56 + 16];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&EM_RISCV.to_le_bytes());
        f[24..32].copy_from_slice(&0x10078u64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&PHENT.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let p = 64;
        f[p..p + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        f[p + 4..p + 8].copy_from_slice(&(PF_R | PF_X).to_le_bytes());
        f[p + 16..p + 24].copy_from_slice(&0x10000u64.to_le_bytes());
        f[p + 32..p + 40].copy_from_slice(&(136u64).to_le_bytes());
        f[p + 40..p + 48].copy_from_slice(&(136u64).to_le_bytes());
        f[p + 48..p + 56].copy_from_slice(&4096u64.to_le_bytes());
        f
    }

    #[test]
    fn parses_a_minimal_file() {
        let e = Elf::parse(&tiny()).unwrap();
        assert_eq!(e.header.entry, 0x10078);
        assert_eq!(e.loads().count(), 1);
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        assert_eq!(Elf::parse(b"").unwrap_err(), ElfError::BadMagic);
        assert_eq!(Elf::parse(b"#!/bin/sh\n").unwrap_err(), ElfError::BadMagic);
        assert_eq!(Elf::parse(&tiny()[..40]).unwrap_err(), ElfError::Truncated("file header"));
        let mut f = tiny();
        f[4] = 1;
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::WrongClass);
        let mut f = tiny();
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::WrongMachine(62));
        let mut f = tiny();
        f[16..18].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::WrongType(1));
        let mut f = tiny();
        f[56..58].copy_from_slice(&200u16.to_le_bytes());
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::Truncated("program headers"));
        let mut f = tiny();
        f[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::Truncated("program headers"));
        let mut f = tiny();
        f[64 + 32..64 + 40].copy_from_slice(&4096u64.to_le_bytes());
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::BadSegment("p_filesz is larger than p_memsz"));
        let mut f = tiny();
        f[64 + 40..64 + 48].copy_from_slice(&u64::MAX.to_le_bytes());
        f[64 + 32..64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        f[64 + 8..64 + 16].copy_from_slice(&16u64.to_le_bytes());
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::BadSegment("p_offset + p_filesz overflows"));
        let mut f = tiny();
        f[6] = 2;
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::BadVersion(2));
        let mut f = tiny();
        f[5] = 2;
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::WrongClass);
        let mut f = tiny();
        f[54..56].copy_from_slice(&32u16.to_le_bytes());
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::BadSegment("e_phentsize is not 56"));
        let mut f = tiny();
        f[32..40].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::NoSegments);
        let mut f = tiny();
        f[64..68].copy_from_slice(&PT_INTERP.to_le_bytes());
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::Dynamic);
        let mut f = tiny();
        f[64..68].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::NoSegments);
        let mut f = tiny();
        f[64 + 16..64 + 24].copy_from_slice(&0x10004u64.to_le_bytes());
        assert!(matches!(Elf::parse(&f).unwrap_err(), ElfError::BadSegment(_)));
    }

    /// Program headers at an offset that is not 8-aligned read as well.
    #[test]
    fn parses_unaligned_program_headers() {
        let mut f = tiny();
        f.splice(64..64, [0u8; 4]);
        f[32..40].copy_from_slice(&68u64.to_le_bytes());
        let e = Elf::parse(&f).unwrap();
        assert_eq!(e.loads().next().unwrap().vaddr, 0x10000);
    }

    #[test]
    fn never_panics_on_truncations() {
        let f = tiny();
        for n in 0..f.len() {
            let _ = Elf::parse(&f[..n]);
        }
    }
}
