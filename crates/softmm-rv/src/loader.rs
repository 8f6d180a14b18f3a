//! Loading a static executable into an address space: PT_LOAD segments
//! with their protections, the program break after the highest one, and
//! the initial stack as Linux's `create_elf_tables` lays it out for
//! riscv64 (no randomisation: the stack top and the static-PIE base are
//! fixed, only the AT_RANDOM bytes are random).

use crate::elf::{Elf, ElfError, Phdr, ET_DYN, PF_R, PF_W, PF_X, PHENT, PT_PHDR};
use softmm::{MapKind, Mm, Placement, Prot, PAGE_SIZE};
use thiserror::Error;

/// Why an executable could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{0}")]
    Elf(#[from] ElfError),
    #[error("mapping the program failed: {0}")]
    Memory(#[from] softmm::Error),
    #[error("arguments and environment do not fit in the stack")]
    ArgsTooLong,
}

/// Top of the initial stack (one page below the end of the user address
/// space, as Linux keeps a guard there).
pub const STACK_TOP: u64 = softmm::TASK_SIZE;
/// Size of the stack mapping (Linux's default RLIMIT_STACK).
pub const STACK_SIZE: u64 = 8 << 20;
/// Where a static-PIE is placed: riscv64's ELF_ET_DYN_BASE for a 39-bit
/// address space (2/3 of it).
pub const ET_DYN_BASE: u64 = 0x2a_aaaa_a000;

/// `AT_HWCAP`: one bit per single-letter extension (bit 0 is A), here
/// I, M, A, F, D, C.
pub const HWCAP_IMAFDC: u64 = (1 << (b'I' - b'A'))
    | (1 << (b'M' - b'A'))
    | 1
    | (1 << (b'F' - b'A'))
    | (1 << (b'D' - b'A'))
    | (1 << (b'C' - b'A'));

pub const AT_NULL: u64 = 0;
pub const AT_PHDR: u64 = 3;
pub const AT_PHENT: u64 = 4;
pub const AT_PHNUM: u64 = 5;
pub const AT_PAGESZ: u64 = 6;
pub const AT_BASE: u64 = 7;
pub const AT_FLAGS: u64 = 8;
pub const AT_ENTRY: u64 = 9;
pub const AT_UID: u64 = 11;
pub const AT_EUID: u64 = 12;
pub const AT_GID: u64 = 13;
pub const AT_EGID: u64 = 14;
pub const AT_HWCAP: u64 = 16;
pub const AT_CLKTCK: u64 = 17;
pub const AT_SECURE: u64 = 23;
pub const AT_RANDOM: u64 = 25;
pub const AT_EXECFN: u64 = 31;

/// What the process starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Initial pc.
    pub entry: u64,
    /// Initial sp (16-byte aligned, pointing at argc).
    pub sp: u64,
    /// Start of the program break (page-aligned end of the highest segment).
    pub brk: u64,
    /// Where the program headers are mapped (AT_PHDR).
    pub phdr: u64,
    /// Load bias (0 for ET_EXEC).
    pub bias: u64,
}

/// Identity and randomness the stack carries.
#[derive(Clone, Debug)]
pub struct StartInfo<'a> {
    pub argv: &'a [Vec<u8>],
    pub envp: &'a [Vec<u8>],
    /// The path the program was executed as (AT_EXECFN).
    pub execfn: &'a [u8],
    /// AT_RANDOM's 16 bytes.
    pub random: [u8; 16],
    /// uid, euid, gid, egid.
    pub ids: [u64; 4],
}

fn page_down(x: u64) -> u64 {
    x & !(PAGE_SIZE as u64 - 1)
}
fn page_up(x: u64) -> Option<u64> {
    Some(page_down(x.checked_add(PAGE_SIZE as u64 - 1)?))
}

fn prot_of(p: &Phdr) -> Prot {
    // Execute-only becomes readable too, as PROT_EXEC alone does in mmap.
    let mut prot = Prot::NONE;
    if p.flags & (PF_R | PF_X) != 0 {
        prot = prot.union(Prot::READ);
    }
    if p.flags & PF_W != 0 {
        prot = prot.union(Prot::RW);
    }
    if p.flags & PF_X != 0 {
        prot = prot.union(Prot::EXEC);
    }
    prot
}

/// The load bias: 0 for ET_EXEC; for ET_DYN, ET_DYN_BASE aligned to the
/// largest sane segment alignment, minus the lowest segment address.
fn load_bias(elf: &Elf) -> u64 {
    if elf.header.e_type != ET_DYN {
        return 0;
    }
    let align = elf
        .loads()
        .map(|p| p.align)
        .filter(|a| a.is_power_of_two() && *a <= 1 << 30)
        .max()
        .unwrap_or(PAGE_SIZE as u64)
        .max(PAGE_SIZE as u64);
    let lowest = elf.loads().map(|p| page_down(p.vaddr)).min().unwrap_or(0);
    (ET_DYN_BASE & !(align - 1)).wrapping_sub(lowest)
}

/// Map the segments of `elf` (parsed from `file`) into `mm` and build the
/// initial stack.
pub fn load(mm: &Mm, file: &[u8], elf: &Elf, info: &StartInfo<'_>) -> Result<Image, LoadError> {
    let bias = load_bias(elf);
    let bad = |what| LoadError::Elf(ElfError::BadSegment(what));
    let mut spans = Vec::new();
    for p in elf.loads() {
        // The bias of a static-PIE is an offset modulo 2^64 (it may move
        // segments down); the end check catches a wrap.
        let va = p.vaddr.wrapping_add(bias);
        let start = page_down(va);
        let end = va.checked_add(p.memsz).and_then(page_up).ok_or(bad("segment end overflows"))?;
        if end > softmm::TASK_SIZE {
            return Err(bad("segment outside the user address space"));
        }
        spans.push((start, end, p));
    }
    // Map everything writable first, so that segments sharing a page do
    // not wipe each other's bytes, then copy, then set the protections.
    for &(start, end, _) in &spans {
        if end > start {
            mm.mmap(start, end - start, Prot::RW, MapKind::Private, Placement::Fixed)?;
        }
    }
    for &(start, _, p) in &spans {
        // The file bytes from the segment's page start, as a file mapping
        // would show them; the rest of memsz stays zero (bss).
        let from = page_down(p.offset) as usize;
        let to = (p.offset + p.filesz) as usize;
        if p.filesz > 0 {
            mm.write(start, &file[from..to])?;
        }
    }
    for &(start, end, p) in &spans {
        if end > start {
            mm.mprotect(start, end - start, prot_of(p))?;
        }
    }
    let brk = spans.iter().map(|s| s.1).max().unwrap_or(0);
    let phdr = phdr_addr(elf, bias).ok_or(bad("program headers are not in a loaded segment"))?;
    let entry = elf.header.entry.wrapping_add(bias);
    let sp = build_stack(mm, elf, info, phdr, entry)?;
    Ok(Image { entry, sp, brk, phdr, bias })
}

fn phdr_addr(elf: &Elf, bias: u64) -> Option<u64> {
    if let Some(p) = elf.phdrs.iter().find(|p| p.p_type == PT_PHDR) {
        return Some(p.vaddr.wrapping_add(bias));
    }
    let off = elf.header.phoff;
    let p = elf.loads().find(|p| p.offset <= off && off < p.offset + p.filesz)?;
    Some((p.vaddr + (off - p.offset)).wrapping_add(bias))
}

/// Lay out strings, AT_RANDOM, auxv, envp, argv and argc from the top of
/// a fresh stack mapping down; returns sp.
fn build_stack(mm: &Mm, elf: &Elf, info: &StartInfo<'_>, phdr: u64, entry: u64) -> Result<u64, LoadError> {
    let prot = if elf.executable_stack() { Prot::RWX } else { Prot::RW };
    mm.mmap(STACK_TOP - STACK_SIZE, STACK_SIZE, prot, MapKind::Private, Placement::Fixed)?;
    // Strings, ascending: argv, envp, execfn; then the 8-byte NUL word at
    // the very top (Linux's `bprm->p = vm_end - sizeof(void *)`).
    let strings: Vec<&[u8]> =
        info.argv.iter().chain(info.envp.iter()).map(|s| s.as_slice()).chain([info.execfn]).collect();
    let total: u64 = strings.iter().map(|s| s.len() as u64 + 1).sum();
    // Room for the strings and the tables, with a page for the program.
    let tables = 8 * (info.argv.len() + info.envp.len() + 40) as u64;
    if total + tables + 16 + 64 > STACK_SIZE - PAGE_SIZE as u64 {
        return Err(LoadError::ArgsTooLong);
    }
    let mut p = STACK_TOP - 8 - total;
    let mut addrs = Vec::with_capacity(strings.len());
    for s in &strings {
        addrs.push(p);
        let mut z = s.to_vec();
        z.push(0);
        mm.write(p, &z)?;
        p += z.len() as u64;
    }
    let execfn_addr = addrs[addrs.len() - 1];
    let mut p = (STACK_TOP - 8 - total) & !15;
    p -= 16;
    let random_addr = p;
    mm.write(random_addr, &info.random)?;

    let [uid, euid, gid, egid] = info.ids;
    let auxv: [(u64, u64); 17] = [
        (AT_HWCAP, HWCAP_IMAFDC),
        (AT_PAGESZ, PAGE_SIZE as u64),
        (AT_CLKTCK, 100),
        (AT_PHDR, phdr),
        (AT_PHENT, u64::from(PHENT)),
        (AT_PHNUM, elf.header.phnum),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, entry),
        (AT_UID, uid),
        (AT_EUID, euid),
        (AT_GID, gid),
        (AT_EGID, egid),
        (AT_SECURE, 0),
        (AT_RANDOM, random_addr),
        (AT_EXECFN, execfn_addr),
        (AT_NULL, 0),
    ];
    let argc = info.argv.len();
    let mut words: Vec<u64> = Vec::with_capacity(argc + info.envp.len() + 3 + 2 * auxv.len());
    words.push(argc as u64);
    words.extend_from_slice(&addrs[..argc]);
    words.push(0);
    words.extend_from_slice(&addrs[argc..addrs.len() - 1]);
    words.push(0);
    for (k, v) in auxv {
        words.extend([k, v]);
    }
    let sp = (p - 8 * words.len() as u64) & !15;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    mm.write(sp, &bytes)?;
    Ok(sp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use softmm::{Config, Machine};

    fn read_u64(mm: &Mm, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        mm.read(addr, &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    fn read_str(mm: &Mm, addr: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        for a in addr.. {
            mm.read(a, &mut b).unwrap();
            if b[0] == 0 {
                break;
            }
            out.push(b[0]);
        }
        out
    }

    fn load_tiny(argv: &[Vec<u8>], envp: &[Vec<u8>]) -> Result<(Machine, Mm, Image), LoadError> {
        let file = crate::elf::tests::tiny();
        let elf = Elf::parse(&file).unwrap();
        let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() }).unwrap();
        let mm = machine.new_mm().unwrap();
        let info = StartInfo { argv, envp, execfn: b"/bin/prog", random: [7; 16], ids: [1, 2, 3, 4] };
        let image = load(&mm, &file, &elf, &info)?;
        Ok((machine, mm, image))
    }

    /// The stack as Linux's create_elf_tables builds it, word by word.
    #[test]
    fn initial_stack_layout() {
        let argv = [b"prog".to_vec(), b"-x".to_vec()];
        let envp = [b"A=1".to_vec()];
        let (_m, mm, image) = load_tiny(&argv, &envp).unwrap();
        assert_eq!(image.entry, 0x10078);
        assert_eq!(image.brk, 0x11000);
        assert_eq!(image.phdr, 0x10040);
        assert_eq!(image.sp % 16, 0);
        let sp = image.sp;
        assert_eq!(read_u64(&mm, sp), 2);
        let (a0, a1) = (read_u64(&mm, sp + 8), read_u64(&mm, sp + 16));
        assert_eq!(read_u64(&mm, sp + 24), 0);
        let e0 = read_u64(&mm, sp + 32);
        assert_eq!(read_u64(&mm, sp + 40), 0);
        assert_eq!(
            (read_str(&mm, a0), read_str(&mm, a1), read_str(&mm, e0)),
            (argv[0].clone(), argv[1].clone(), envp[0].clone())
        );
        // Strings ascend: argv, envp, then the file name; an 8-byte zero
        // word ends the stack.
        assert!(a0 < a1 && a1 < e0);
        let total = (5 + 3 + 4 + 10) as u64;
        assert_eq!(a0, STACK_TOP - 8 - total);
        assert_eq!(read_u64(&mm, STACK_TOP - 8), 0);
        let mut auxv = Vec::new();
        let mut p = sp + 48;
        loop {
            let (k, v) = (read_u64(&mm, p), read_u64(&mm, p + 8));
            auxv.push((k, v));
            p += 16;
            if k == AT_NULL {
                break;
            }
        }
        let get = |k| auxv.iter().find(|e| e.0 == k).map(|e| e.1);
        assert_eq!(get(AT_HWCAP), Some(0x112d));
        assert_eq!(get(AT_PAGESZ), Some(4096));
        assert_eq!(get(AT_PHDR), Some(0x10040));
        assert_eq!(get(AT_PHENT), Some(56));
        assert_eq!(get(AT_PHNUM), Some(1));
        assert_eq!(get(AT_BASE), Some(0));
        assert_eq!(get(AT_ENTRY), Some(0x10078));
        assert_eq!((get(AT_UID), get(AT_EUID), get(AT_GID), get(AT_EGID)), (Some(1), Some(2), Some(3), Some(4)));
        assert_eq!(get(AT_SECURE), Some(0));
        assert_eq!(get(AT_CLKTCK), Some(100));
        let execfn = get(AT_EXECFN).unwrap();
        assert_eq!((read_str(&mm, execfn), execfn), (b"/bin/prog".to_vec(), e0 + 4));
        // AT_RANDOM: 16 bytes right below the strings, aligned down to 16.
        let random = get(AT_RANDOM).unwrap();
        assert_eq!(random, (a0 & !15) - 16);
        let mut r = [0u8; 16];
        mm.read(random, &mut r).unwrap();
        assert_eq!(r, [7; 16]);
        // The tables end right below AT_RANDOM, rounded down to 16.
        assert_eq!(p, sp + 8 * (1 + 3 + 2 + 2 * auxv.len() as u64));
        assert!(p <= random && random - p < 16);
        // The segment: its bytes, read-only.
        let mut b = [0u8; 4];
        mm.read(0x10000, &mut b).unwrap();
        assert_eq!(&b, b"\x7fELF");
        assert!(mm.write(0x10000, b"x").is_err());
    }

    #[test]
    fn arguments_too_long_is_an_error() {
        let huge = vec![vec![b'a'; 1 << 20]; 9];
        assert!(matches!(load_tiny(&huge, &[]), Err(LoadError::ArgsTooLong)));
    }
}
