//! `/proc/PID/maps`, `/proc/PID/smaps` and `/proc/PID/pagemap` of the
//! machine's processes, generated from softmm's own view of the address
//! space ([`Mm::vma_info`], [`Mm::smaps_all`], [`Mm::page_state`]) in the
//! text and binary formats Linux 6.1 gives them on riscv64.
//!
//! `/proc/self/NAME` and `/proc/PID/NAME` (any process of the machine)
//! open such a file; every other path under `/proc` is the host's. The
//! text files are generated when read at offset 0 (a first read, or a read
//! after seeking back to the start), as one snapshot, and later reads go on
//! in it; pagemap reads each entry when it is read. The file holds its
//! address space weakly, as Linux's holds the `mm_struct` and not its
//! memory: once the process has exited (or exec'd) a read gives 0 bytes.
//!
//! What the machine cannot tell is written as Linux writes it for a
//! mapping without that property: the loaded program's segments are
//! private anonymous memory here (no file name, device or inode), the
//! madvise hints softmm does not keep (`hg`, `nh`, `mg`, `dd`, `sr`, `rr`)
//! never appear in `VmFlags`, and riscv64 Linux 6.1 has no soft-dirty
//! tracking, so there is no `sd` flag and pagemap's bit 55 is 0.

use crate::errno::EINVAL;
use crate::task::{lock, Process};
use softmm::{Mm, PageState, Smaps, VmaInfo};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// The files this module serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcKind {
    Maps,
    Smaps,
    Pagemap,
}

/// Which process a `/proc` path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// `/proc/self`.
    Caller,
    Pid(u64),
}

/// `/proc/self/maps`, `/proc/42/smaps`, ... as (process, file); `None` for
/// every other path (the host's).
pub fn parse_path(path: &[u8]) -> Option<(Who, ProcKind)> {
    let rest = path.strip_prefix(b"/proc/")?;
    let slash = rest.iter().position(|&c| c == b'/')?;
    let (dir, name) = (&rest[..slash], &rest[slash + 1..]);
    let who = if dir == b"self" {
        Who::Caller
    } else {
        let s = std::str::from_utf8(dir).ok()?;
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Who::Pid(s.parse().ok()?)
    };
    let kind = match name {
        b"maps" => ProcKind::Maps,
        b"smaps" => ProcKind::Smaps,
        b"pagemap" => ProcKind::Pagemap,
        _ => return None,
    };
    Some((who, kind))
}

/// What a maps line names a shared object or file by: the path Linux
/// prints (`/dev/zero (deleted)`, `/SYSV0000abcd (deleted)`, a host path)
/// and the device and inode numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjName {
    pub path: String,
    pub dev: (u32, u32),
    pub ino: u64,
}

/// The names of the run's mapped objects, by [`softmm::File::id`]
/// (objects never named here are shared anonymous memory).
#[derive(Default)]
pub struct ObjectNames {
    names: Mutex<HashMap<u64, ObjName>>,
}

impl ObjectNames {
    pub fn set(&self, id: u64, name: ObjName) {
        lock(&self.names).insert(id, name);
    }

    pub fn forget(&self, id: u64) {
        lock(&self.names).remove(&id);
    }

    fn get(&self, id: u64) -> Option<ObjName> {
        lock(&self.names).get(&id).cloned()
    }
}

/// Linux's shmem device (`00:01`) for memory shared without a file.
const SHMEM_DEV: (u32, u32) = (0, 1);

/// What a maps line needs besides the VMA: where the heap and the stack
/// are, and the object names.
pub struct Layout<'a> {
    /// `[start_brk, brk]`.
    pub heap: Option<(u64, u64)>,
    /// An address in the initial stack (Linux's `mm->start_stack`).
    pub start_stack: u64,
    pub names: &'a dyn Fn(u64) -> Option<ObjName>,
}

/// One `/proc/PID/maps` line, as Linux's `show_map_vma` writes it.
pub fn maps_line(v: &VmaInfo, layout: &Layout<'_>) -> String {
    let (dev, ino, name) = match v.object {
        Some(id) => {
            let n =
                (layout.names)(id).unwrap_or(ObjName { path: "/dev/zero (deleted)".into(), dev: SHMEM_DEV, ino: id });
            (n.dev, n.ino, Some(n.path))
        }
        None => {
            let (s, e) = (v.range.start, v.range.end);
            let name = if layout.heap.is_some_and(|(lo, hi)| s <= hi && e >= lo) {
                Some("[heap]".to_string())
            } else if s <= layout.start_stack && e >= layout.start_stack {
                Some("[stack]".to_string())
            } else {
                None
            };
            ((0, 0), 0, name)
        }
    };
    let p = v.prot;
    let mut line = format!(
        "{:08x}-{:08x} {}{}{}{} {:08x} {:02x}:{:02x} {} ",
        v.range.start,
        v.range.end,
        if has_read(p) { 'r' } else { '-' },
        if p.writable() { 'w' } else { '-' },
        if p.executable() { 'x' } else { '-' },
        if v.kind == softmm::MapKind::Shared { 's' } else { 'p' },
        v.offset,
        dev.0,
        dev.1,
        ino
    );
    if let Some(name) = name {
        // seq_pad: the name starts after column 73 (25 + 6 * sizeof(void *)
        // - 1 characters, then one space).
        while line.len() < 72 {
            line.push(' ');
        }
        line.push(' ');
        line.push_str(&name);
    }
    line.push('\n');
    line
}

/// VM_READ: the READ bit itself (softmm lets a write-only page load too,
/// as the hardware does, but its VMA has no VM_READ).
fn has_read(p: softmm::Prot) -> bool {
    p.union(softmm::Prot::READ) == p
}

/// The `VmFlags:` mnemonics of a VMA, in Linux's bit order.
pub fn vm_flags(v: &VmaInfo) -> String {
    let shared = v.kind == softmm::MapKind::Shared;
    let p = v.prot;
    let flags: [(bool, &str); 13] = [
        (has_read(p), "rd"),
        (p.writable(), "wr"),
        (p.executable(), "ex"),
        (shared, "sh"),
        (true, "mr"),
        (true, "mw"),
        (true, "me"),
        (shared, "ms"),
        (v.grows_down, "gd"),
        (v.locked, "lo"),
        (v.dont_fork, "dc"),
        (v.account, "ac"),
        (v.wipe_on_fork, "wf"),
    ];
    let mut s = String::from("VmFlags: ");
    for (on, m) in flags {
        if on {
            s.push_str(m);
            s.push(' ');
        }
    }
    s
}

/// One `/proc/PID/smaps` entry, as Linux's `show_smap` writes it.
pub fn smaps_entry(v: &VmaInfo, s: &Smaps, layout: &Layout<'_>) -> String {
    let mut out = maps_line(v, layout);
    let size = (v.range.end - v.range.start) >> 10;
    let mut kb = |label: &str, value: u64| out.push_str(&format!("{label:<16}{value:>8} kB\n"));
    kb("Size:", size);
    kb("KernelPageSize:", 4);
    kb("MMUPageSize:", 4);
    kb("Rss:", s.rss);
    kb("Pss:", s.pss);
    kb("Pss_Dirty:", s.pss_dirty);
    kb("Shared_Clean:", s.shared_clean);
    kb("Shared_Dirty:", s.shared_dirty);
    kb("Private_Clean:", s.private_clean);
    kb("Private_Dirty:", s.private_dirty);
    kb("Referenced:", s.referenced);
    kb("Anonymous:", s.anonymous);
    kb("LazyFree:", s.lazyfree);
    kb("AnonHugePages:", 0);
    kb("ShmemPmdMapped:", 0);
    kb("FilePmdMapped:", 0);
    kb("Shared_Hugetlb:", 0);
    // Linux's one line with a 17-character label and a 7-wide number.
    out.push_str(&format!("{:<17}{:>7} kB\n", "Private_Hugetlb:", 0));
    let mut kb = |label: &str, value: u64| out.push_str(&format!("{label:<16}{value:>8} kB\n"));
    kb("Swap:", s.swap);
    // The swapped pages' proportional share: softmm counts a swapped page
    // wholly in each space that maps it.
    kb("SwapPss:", s.swap);
    kb("Locked:", s.locked);
    out.push_str("THPeligible:    0\n");
    out.push_str(&vm_flags(v));
    out.push('\n');
    out
}

/// Linux's pagemap bits.
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;
const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
const PM_PFRAME_MASK: u64 = (1 << 55) - 1;

/// One pagemap entry (`show_pfn`: the reader may see frame numbers, as
/// Linux shows them to CAP_SYS_ADMIN only).
pub fn pagemap_entry(state: PageState, show_pfn: bool) -> u64 {
    match state {
        PageState::None => 0,
        PageState::Swapped => PM_SWAP,
        PageState::Present { frame, exclusive, anon } => {
            let zero = frame == softmm::ZERO_FRAME;
            let mut e = PM_PRESENT;
            if show_pfn {
                e |= u64::from(frame.0) & PM_PFRAME_MASK;
            }
            if !zero && !anon {
                e |= PM_FILE;
            }
            if exclusive {
                e |= PM_MMAP_EXCLUSIVE;
            }
            e
        }
    }
}

/// An open `/proc` file.
pub struct ProcFile {
    kind: ProcKind,
    mm: Weak<Mm>,
    proc: Weak<Process>,
    state: Mutex<ReadState>,
}

#[derive(Default)]
struct ReadState {
    pos: u64,
    text: Vec<u8>,
}

impl ProcFile {
    pub fn new(kind: ProcKind, p: &Arc<Process>) -> ProcFile {
        ProcFile { kind, mm: Arc::downgrade(&p.mm()), proc: Arc::downgrade(p), state: Mutex::default() }
    }

    /// `read`: from the file position, which moves on.
    pub fn read(&self, out: &mut [u8]) -> Result<usize, i32> {
        let mut st = lock(&self.state);
        let pos = st.pos;
        let n = self.read_locked(&mut st, pos, out)?;
        st.pos += n as u64;
        Ok(n)
    }

    /// `pread`: at `off`, the position unchanged.
    pub fn read_at(&self, off: u64, out: &mut [u8]) -> Result<usize, i32> {
        let mut st = lock(&self.state);
        self.read_locked(&mut st, off, out)
    }

    /// `lseek` with SEEK_SET (0) or SEEK_CUR (1), as seq_file allows.
    pub fn seek(&self, off: i64, whence: u64) -> Result<u64, i32> {
        let mut st = lock(&self.state);
        let base = match whence {
            0 => 0,
            1 => st.pos as i64,
            _ => return Err(EINVAL),
        };
        let to = base.checked_add(off).filter(|&p| p >= 0).ok_or(EINVAL)?;
        st.pos = to as u64;
        Ok(st.pos)
    }

    fn read_locked(&self, st: &mut ReadState, off: u64, out: &mut [u8]) -> Result<usize, i32> {
        let Some(mm) = self.mm.upgrade() else { return Ok(0) };
        if self.kind == ProcKind::Pagemap {
            return pagemap_read(&mm, off, out);
        }
        if off == 0 {
            st.text = self.generate(&mm).into_bytes();
        }
        let rest = usize::try_from(off).ok().and_then(|o| st.text.get(o..)).unwrap_or(&[]);
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }

    fn generate(&self, mm: &Mm) -> String {
        let proc = self.proc.upgrade();
        let heap = proc.as_ref().map(|p| {
            let b = lock(&p.brk);
            (b.start, b.cur)
        });
        let sys = proc.as_ref().map(|p| p.sys.clone());
        let names = |id: u64| sys.as_ref().and_then(|s| s.object_names.get(id));
        let layout = Layout { heap, start_stack: crate::loader::STACK_TOP - 8, names: &names };
        let vmas = mm.vma_info();
        let mut text = String::new();
        match self.kind {
            ProcKind::Maps => vmas.iter().for_each(|v| text.push_str(&maps_line(v, &layout))),
            _ => {
                let smaps = mm.smaps_all();
                for (v, s) in vmas.iter().zip(&smaps) {
                    text.push_str(&smaps_entry(v, s, &layout));
                }
            }
        }
        text
    }
}

/// A pagemap read of `out.len()` bytes at `off`: 8-byte entries, one per
/// page from virtual page `off / 8`; both must be multiples of 8 (EINVAL,
/// as Linux's `pagemap_read`), and the file ends at the top of user space.
fn pagemap_read(mm: &Mm, off: u64, out: &mut [u8]) -> Result<usize, i32> {
    if off % 8 != 0 || out.len() % 8 != 0 {
        return Err(EINVAL);
    }
    let show_pfn = rustix::process::geteuid().is_root();
    let first = off / 8;
    let last = softmm::TASK_SIZE >> 12;
    let mut n = 0;
    for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
        let page = first + i as u64;
        if page >= last {
            break;
        }
        let e = pagemap_entry(mm.page_state(page << 12), show_pfn);
        chunk.copy_from_slice(&e.to_le_bytes());
        n += 8;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use softmm::{FrameId, MapKind, Prot};

    fn vma(start: u64, end: u64, prot: Prot, kind: MapKind) -> VmaInfo {
        VmaInfo {
            range: start..end,
            prot,
            kind,
            locked: false,
            lock_on_fault: false,
            dont_fork: false,
            wipe_on_fork: false,
            grows_down: false,
            account: kind == MapKind::Private && prot.writable(),
            offset: 0,
            object: None,
        }
    }

    fn no_names(_: u64) -> Option<ObjName> {
        None
    }

    fn layout() -> Layout<'static> {
        Layout { heap: Some((0x20000, 0x21000)), start_stack: 0x3f_ffff_fff8, names: &no_names }
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path(b"/proc/self/maps"), Some((Who::Caller, ProcKind::Maps)));
        assert_eq!(parse_path(b"/proc/42/smaps"), Some((Who::Pid(42), ProcKind::Smaps)));
        assert_eq!(parse_path(b"/proc/self/pagemap"), Some((Who::Caller, ProcKind::Pagemap)));
        assert_eq!(parse_path(b"/proc/self/status"), None);
        assert_eq!(parse_path(b"/proc/sys/vm/mmap_min_addr"), None);
        assert_eq!(parse_path(b"/proc/4x/maps"), None);
        assert_eq!(parse_path(b"/proc/self/maps/x"), None);
    }

    #[test]
    fn maps_lines_are_linux_s() {
        // Lines as Linux 6.1 prints them (the name at column 73).
        let v = vma(0x3ff7ff0000, 0x3ff7ff2000, Prot::RW, MapKind::Private);
        assert_eq!(maps_line(&v, &layout()), "3ff7ff0000-3ff7ff2000 rw-p 00000000 00:00 0 \n");
        let v = vma(0x10000, 0x12000, Prot::RX, MapKind::Private);
        assert_eq!(maps_line(&v, &layout()), "00010000-00012000 r-xp 00000000 00:00 0 \n");
        let heap = vma(0x20000, 0x22000, Prot::RW, MapKind::Private);
        assert_eq!(
            maps_line(&heap, &layout()),
            "00020000-00022000 rw-p 00000000 00:00 0                                  [heap]\n"
        );
        let stack = vma(0x3f_ff80_0000, 0x40_0000_0000, Prot::RW, MapKind::Private);
        assert_eq!(
            maps_line(&stack, &layout()),
            "3fff800000-4000000000 rw-p 00000000 00:00 0                              [stack]\n"
        );
        let mut shared = vma(0x3ff0000000, 0x3ff0004000, Prot::READ, MapKind::Shared);
        shared.object = Some(7);
        shared.offset = 0x2000;
        assert_eq!(
            maps_line(&shared, &layout()),
            "3ff0000000-3ff0004000 r--s 00002000 00:01 7                              /dev/zero (deleted)\n"
        );
        let named = |_: u64| Some(ObjName { path: "/tmp/f".into(), dev: (0xfe, 0), ino: 247282 });
        let l = Layout { names: &named, ..layout() };
        assert_eq!(
            maps_line(&shared, &l),
            "3ff0000000-3ff0004000 r--s 00002000 fe:00 247282                         /tmp/f\n"
        );
    }

    #[test]
    fn vm_flags_in_bit_order() {
        let mut v = vma(0x10000, 0x12000, Prot::RW, MapKind::Private);
        assert_eq!(vm_flags(&v), "VmFlags: rd wr mr mw me ac ");
        v.locked = true;
        v.grows_down = true;
        v.dont_fork = true;
        v.wipe_on_fork = true;
        assert_eq!(vm_flags(&v), "VmFlags: rd wr mr mw me gd lo dc ac wf ");
        let s = vma(0x10000, 0x12000, Prot::RWX, MapKind::Shared);
        assert_eq!(vm_flags(&s), "VmFlags: rd wr ex sh mr mw me ms ");
        let n = vma(0x10000, 0x12000, Prot::NONE, MapKind::Private);
        assert_eq!(vm_flags(&n), "VmFlags: mr mw me ");
        let w = vma(0x10000, 0x12000, Prot::WRITE, MapKind::Private);
        assert_eq!(vm_flags(&w), "VmFlags: wr mr mw me ac ");
        assert_eq!(maps_line(&w, &layout()), "00010000-00012000 -w-p 00000000 00:00 0 \n");
    }

    #[test]
    fn smaps_entry_is_linux_s() {
        let mut v = vma(0x3ff7ff0000, 0x3ff7ff2000, Prot::RW, MapKind::Private);
        v.locked = true;
        let s = Smaps {
            start: 0x3ff7ff0000,
            end: 0x3ff7ff2000,
            rss: 8,
            pss: 8,
            pss_dirty: 8,
            anonymous: 8,
            private_dirty: 8,
            referenced: 8,
            locked: 8,
            ..Smaps::default()
        };
        let want = "3ff7ff0000-3ff7ff2000 rw-p 00000000 00:00 0 \n\
Size:                  8 kB\n\
KernelPageSize:        4 kB\n\
MMUPageSize:           4 kB\n\
Rss:                   8 kB\n\
Pss:                   8 kB\n\
Pss_Dirty:             8 kB\n\
Shared_Clean:          0 kB\n\
Shared_Dirty:          0 kB\n\
Private_Clean:         0 kB\n\
Private_Dirty:         8 kB\n\
Referenced:            8 kB\n\
Anonymous:             8 kB\n\
LazyFree:              0 kB\n\
AnonHugePages:         0 kB\n\
ShmemPmdMapped:        0 kB\n\
FilePmdMapped:         0 kB\n\
Shared_Hugetlb:        0 kB\n\
Private_Hugetlb:       0 kB\n\
Swap:                  0 kB\n\
SwapPss:               0 kB\n\
Locked:                8 kB\n\
THPeligible:    0\n\
VmFlags: rd wr mr mw me lo ac \n";
        assert_eq!(smaps_entry(&v, &s, &layout()), want);
    }

    #[test]
    fn pagemap_bits() {
        assert_eq!(pagemap_entry(PageState::None, true), 0);
        assert_eq!(pagemap_entry(PageState::Swapped, true), 1 << 62);
        let anon = PageState::Present { frame: FrameId(5), exclusive: true, anon: true };
        assert_eq!(pagemap_entry(anon, true), (1 << 63) | (1 << 56) | 5);
        assert_eq!(pagemap_entry(anon, false), (1 << 63) | (1 << 56));
        let zero = PageState::Present { frame: softmm::ZERO_FRAME, exclusive: false, anon: false };
        assert_eq!(pagemap_entry(zero, true), 1 << 63);
        let shared = PageState::Present { frame: FrameId(9), exclusive: false, anon: false };
        assert_eq!(pagemap_entry(shared, true), (1 << 63) | (1 << 61) | 9);
    }
}
