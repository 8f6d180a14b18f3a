//! System V shared memory: `shmget`, `shmat`, `shmdt` and `shmctl`
//! (`IPC_STAT`, `SHM_STAT`, `IPC_SET`, `IPC_RMID`, `SHM_LOCK`,
//! `SHM_UNLOCK`), one registry for the whole machine.
//!
//! A segment is a softmm in-memory file of the segment's size (Linux's
//! shmem file); `shmat` maps it shared, so every attach, in this process
//! or another (a fork inherits its attaches, as in Linux), shares its
//! pages, and futexes on it are shared futexes keyed by the object.
//! `shm_nattch` is counted when asked from the address spaces of the
//! machine's processes (the VMAs mapping the segment, as Linux counts
//! each VMA's open). `IPC_RMID` destroys an unattached segment at once;
//! an attached one loses its key and goes when its last attach does (its
//! pages go with the last mapping, as softmm's object lives while mapped).
//! Permissions are the owner's bits (the machine runs every process as
//! one user); root passes them, as CAP_IPC_OWNER does. `SHM_HUGETLB` is
//! EINVAL (softmm has no huge pages).

use crate::errno::{EACCES, EEXIST, EFAULT, EIDRM, EINVAL, ENOENT, ENOSPC};
use crate::hart::Hart;
use crate::syscall::{Kernel, SysResult};
use crate::task::lock;
use softmm::{MapKind, Placement, Prot};
use std::collections::BTreeMap;
use std::sync::Mutex;

const IPC_PRIVATE: i32 = 0;
const IPC_CREAT: u64 = 0o1000;
const IPC_EXCL: u64 = 0o2000;
const IPC_RMID: u64 = 0;
const IPC_SET: u64 = 1;
const IPC_STAT: u64 = 2;
const IPC_64: u64 = 0x100;
const SHM_LOCK: u64 = 11;
const SHM_UNLOCK: u64 = 12;
const SHM_STAT: u64 = 13;
const SHM_STAT_ANY: u64 = 15;
const SHM_HUGETLB: u64 = 0o4000;
const SHM_RDONLY: u64 = 0o10000;
const SHM_RND: u64 = 0o20000;
const SHM_REMAP: u64 = 0o40000;
const SHM_EXEC: u64 = 0o100000;
/// `shm_perm.mode` bits Linux sets: destroyed when unattached, locked.
const SHM_DEST: u32 = 0o1000;
const SHM_LOCKED: u32 = 0o2000;
const SHMMNI: usize = 4096;
const SHMMAX: u64 = u64::MAX - (1 << 24);
/// asm-generic's SHMLBA: the page size.
const SHMLBA: u64 = 4096;
/// Linux's SEQ_MULTIPLIER: an id is `index + SEQ_MULTIPLIER * seq`.
const SEQ_MULTIPLIER: u64 = 32768;

/// One segment.
struct Segment {
    key: i32,
    file: softmm::File,
    size: u64,
    uid: u32,
    gid: u32,
    cuid: u32,
    cgid: u32,
    mode: u32,
    seq: u16,
    cpid: u64,
    lpid: u64,
    atime: i64,
    dtime: i64,
    ctime: i64,
}

/// The machine's segments, by id.
#[derive(Default)]
pub struct ShmRegistry {
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    segs: BTreeMap<u64, Segment>,
    seq: u64,
}

fn now() -> i64 {
    crate::syscall::host_clock(true).as_secs() as i64
}

fn ids() -> (u32, u32) {
    (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
}

/// Whether the caller may attach or read `seg` for `want` (SHM_R, SHM_W
/// bits of the owner's triplet).
fn permitted(seg: &Segment, want: u32) -> bool {
    rustix::process::geteuid().is_root() || seg.mode & want == want
}

impl Kernel {
    /// How many VMAs of the machine's processes map segment object `id`.
    fn nattch(&self, id: u64) -> u64 {
        let mut n = 0;
        for q in self.p.sys.all() {
            n += q.mm().vma_info().iter().filter(|v| v.object == Some(id)).count() as u64;
        }
        n
    }

    /// Drop the segments marked for destruction that nothing maps now.
    fn shm_collect(&self, reg: &mut Registry) {
        let gone: Vec<u64> = reg
            .segs
            .iter()
            .filter(|(_, s)| s.mode & SHM_DEST != 0 && self.nattch(s.file.id()) == 0)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(s) = reg.segs.remove(&id) {
                self.p.sys.object_names.forget(s.file.id());
            }
        }
    }

    pub(crate) fn shmget(&mut self, key: u64, size: u64, flags: u64) -> SysResult {
        let key = key as i32;
        let sys = self.p.sys.clone();
        let mut reg = lock(&sys.shm.inner);
        self.shm_collect(&mut reg);
        if key != IPC_PRIVATE {
            if let Some((&id, seg)) = reg.segs.iter().find(|(_, s)| s.key == key) {
                if flags & IPC_CREAT != 0 && flags & IPC_EXCL != 0 {
                    return Err(EEXIST);
                }
                if size > seg.size {
                    return Err(EINVAL);
                }
                if !permitted(seg, (flags as u32) & 0o600) {
                    return Err(EACCES);
                }
                return Ok(id);
            }
            if flags & IPC_CREAT == 0 {
                return Err(ENOENT);
            }
        }
        if flags & SHM_HUGETLB != 0 || !(1..=SHMMAX).contains(&size) {
            return Err(EINVAL);
        }
        if reg.segs.len() >= SHMMNI {
            return Err(ENOSPC);
        }
        let index = (0..SHMMNI as u64).find(|i| !reg.segs.keys().any(|id| id % SEQ_MULTIPLIER == *i)).ok_or(ENOSPC)?;
        let seq = reg.seq;
        reg.seq = (reg.seq + 1) % (i32::MAX as u64 / SEQ_MULTIPLIER);
        let id = index + SEQ_MULTIPLIER * seq;
        let file = self.mm.machine().memfd(&format!("SYSV{:08x}", key as u32), size).map_err(|e| e.errno())?;
        sys.object_names.set(
            file.id(),
            crate::proc::ObjName { path: format!("/SYSV{:08x} (deleted)", key as u32), dev: (0, 1), ino: id },
        );
        let (uid, gid) = ids();
        let seg = Segment {
            key,
            file,
            size,
            uid,
            gid,
            cuid: uid,
            cgid: gid,
            mode: (flags as u32) & 0o777,
            seq: seq as u16,
            cpid: self.p.pid,
            lpid: 0,
            atime: 0,
            dtime: 0,
            ctime: now(),
        };
        reg.segs.insert(id, seg);
        Ok(id)
    }

    pub(crate) fn shmat(&mut self, id: u64, addr: u64, flags: u64) -> SysResult {
        let (file, size) = {
            let reg = lock(&self.p.sys.shm.inner);
            let seg = reg.segs.get(&id).ok_or(EINVAL)?;
            let want = if flags & SHM_RDONLY != 0 { 0o400 } else { 0o600 };
            if !permitted(seg, want) {
                return Err(EACCES);
            }
            (seg.file.clone(), seg.size)
        };
        let mut prot = if flags & SHM_RDONLY != 0 { Prot::READ } else { Prot::RW };
        if flags & SHM_EXEC != 0 {
            prot = prot.union(Prot::EXEC);
        }
        let (at, place) = if addr == 0 {
            (0, Placement::Hint)
        } else {
            let at = if flags & SHM_RND != 0 { addr & !(SHMLBA - 1) } else { addr };
            if at & (SHMLBA - 1) != 0 || at == 0 {
                return Err(EINVAL);
            }
            (at, if flags & SHM_REMAP != 0 { Placement::Fixed } else { Placement::FixedNoReplace })
        };
        let len = size.div_ceil(4096) * 4096;
        let got = match self.mm.mmap_file(at, len, prot, MapKind::Shared, place, &file, 0) {
            Ok(a) => a,
            // An attach over a mapping without SHM_REMAP is EINVAL.
            Err(e) if e.errno() == EEXIST => return Err(EINVAL),
            Err(e) => return Err(e.errno()),
        };
        let mut reg = lock(&self.p.sys.shm.inner);
        if let Some(seg) = reg.segs.get_mut(&id) {
            seg.atime = now();
            seg.lpid = self.p.pid;
        }
        Ok(got)
    }

    /// shmdt(addr): the segment attached at `addr` (a VMA of a segment
    /// starting there at offset 0) is unmapped, every VMA of it up to
    /// the segment's size (Linux's `ksys_shmdt`); EINVAL if none.
    pub(crate) fn shmdt(&mut self, addr: u64) -> SysResult {
        if addr & (SHMLBA - 1) != 0 {
            return Err(EINVAL);
        }
        let vmas = self.mm.vma_info();
        let mut reg = lock(&self.p.sys.shm.inner);
        let hit = vmas.iter().find_map(|v| {
            let obj = v.object.filter(|_| v.range.start == addr && v.offset == 0)?;
            reg.segs.iter().find(|(_, s)| s.file.id() == obj).map(|(&id, _)| id)
        });
        let Some(seg) = hit.and_then(|id| reg.segs.get_mut(&id)) else { return Err(EINVAL) };
        let (obj, end) = (seg.file.id(), addr.saturating_add(seg.size));
        seg.dtime = now();
        seg.lpid = self.p.pid;
        for v in vmas.iter().filter(|v| v.object == Some(obj) && v.range.start >= addr && v.range.start < end) {
            self.mm.munmap(v.range.start, v.range.end - v.range.start).map_err(|e| e.errno())?;
        }
        self.shm_collect(&mut reg);
        Ok(0)
    }

    pub(crate) fn shmctl(&mut self, hart: &mut Hart, id: u64, cmd: u64, buf: u64) -> SysResult {
        let cmd = cmd & !IPC_64;
        let sys = self.p.sys.clone();
        let mut reg = lock(&sys.shm.inner);
        self.shm_collect(&mut reg);
        let id = match cmd {
            // SHM_STAT takes an index and answers the id.
            SHM_STAT | SHM_STAT_ANY => *reg.segs.keys().find(|k| *k % SEQ_MULTIPLIER == id).ok_or(EINVAL)?,
            _ => id,
        };
        let nattch = match reg.segs.get(&id) {
            Some(seg) => self.nattch(seg.file.id()),
            None => return Err(EINVAL),
        };
        let Some(seg) = reg.segs.get_mut(&id) else { return Err(EIDRM) };
        match cmd {
            IPC_STAT | SHM_STAT | SHM_STAT_ANY => {
                if cmd != SHM_STAT_ANY && !permitted(seg, 0o400) {
                    return Err(EACCES);
                }
                hart.mem.write_bytes(buf, &encode_shmid_ds(seg, nattch)).map_err(|_| EFAULT)?;
                Ok(if cmd == IPC_STAT { 0 } else { id })
            }
            IPC_SET => {
                let mut b = [0u8; 24];
                hart.mem.read_bytes(buf, &mut b).map_err(|_| EFAULT)?;
                let w = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                seg.uid = w(4);
                seg.gid = w(8);
                seg.mode = (seg.mode & !0o777) | (w(20) & 0o777);
                seg.ctime = now();
                Ok(0)
            }
            IPC_RMID => {
                seg.mode |= SHM_DEST;
                // Nothing new finds it by key.
                seg.key = IPC_PRIVATE;
                seg.ctime = now();
                self.shm_collect(&mut reg);
                Ok(0)
            }
            SHM_LOCK => {
                seg.mode |= SHM_LOCKED;
                Ok(0)
            }
            SHM_UNLOCK => {
                seg.mode &= !SHM_LOCKED;
                Ok(0)
            }
            _ => Err(EINVAL),
        }
    }
}

/// riscv64's `struct shmid64_ds` (asm-generic, 112 bytes).
fn encode_shmid_ds(s: &Segment, nattch: u64) -> [u8; 112] {
    let mut b = [0u8; 112];
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(0, &s.key.to_le_bytes());
    put(4, &s.uid.to_le_bytes());
    put(8, &s.gid.to_le_bytes());
    put(12, &s.cuid.to_le_bytes());
    put(16, &s.cgid.to_le_bytes());
    put(20, &s.mode.to_le_bytes());
    put(24, &s.seq.to_le_bytes());
    put(48, &s.size.to_le_bytes());
    put(56, &s.atime.to_le_bytes());
    put(64, &s.dtime.to_le_bytes());
    put(72, &s.ctime.to_le_bytes());
    put(80, &(s.cpid as i32).to_le_bytes());
    put(84, &(s.lpid as i32).to_le_bytes());
    put(88, &nattch.to_le_bytes());
    b
}
