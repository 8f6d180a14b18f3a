//! Mapped files: `mmap` of a descriptor, `msync`, `fsync`, and the page
//! cache that keeps a mapping and the descriptor's reads and writes in
//! agreement.
//!
//! A guest descriptor is a host descriptor. The first `MAP_SHARED` mapping
//! of a host file opens it again (through `/proc/self/fd`) as a
//! [`softmm::File`], kept for the rest of the run in the [`PageCache`] by
//! (device, inode), so every process and mapping of that file shares one
//! page cache. From then on the descriptor calls of that file keep the
//! cache and the host file alike: writes go through the cache and are
//! written back at once, reads write the cache's dirty pages (stores
//! through mappings) back before they read the host file, and
//! `ftruncate` sets both lengths. `msync(MS_SYNC)`, `fsync` and the end of
//! the run write dirty pages back too. Other host processes see a
//! mapping's stores only after one of those (Linux's page cache is the
//! file itself for them).
//!
//! `MAP_PRIVATE` of a file is, for now, an anonymous private mapping
//! filled with the file's bytes at `mmap` time: later writes to the file
//! are not seen through it (Linux shows them on pages not yet written),
//! and pages past the end of the file read as zeros (SIGBUS on Linux).
//! softmm's private file mappings will replace it.

use crate::errno::{EACCES, EBADF, EFAULT, EINVAL, ENODEV};
use crate::files::OpenFile;
use crate::syscall::{Kernel, SysResult};
use crate::task::lock;
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use softmm::{MapKind, Placement, Prot};
use std::collections::HashMap;
use std::sync::Mutex;

/// The run's page-cache files, by host (device, inode).
#[derive(Default)]
pub struct PageCache {
    files: Mutex<HashMap<(u64, u64), softmm::File>>,
}

impl PageCache {
    /// The cached file of host descriptor `h`, if one was mapped shared.
    pub fn get(&self, h: &OwnedFd) -> Option<softmm::File> {
        let key = inode(h)?;
        lock(&self.files).get(&key).cloned()
    }

    /// The cached file of `h`, opening it in `machine` if needed.
    fn get_or_open(&self, h: &OwnedFd, machine: &softmm::Machine) -> Result<softmm::File, i32> {
        let key = inode(h).ok_or(ENODEV)?;
        let mut files = lock(&self.files);
        if let Some(f) = files.get(&key) {
            return Ok(f.clone());
        }
        let f = machine.open_file(format!("/proc/self/fd/{}", h.as_raw_fd())).map_err(|e| e.errno())?;
        files.insert(key, f.clone());
        Ok(f)
    }

    /// Write every cached file's dirty pages back (the end of the run).
    pub fn sync_all(&self) {
        for f in lock(&self.files).values() {
            let _ = f.sync();
        }
    }
}

/// A regular file's (device, inode); `None` for anything else.
fn inode(h: &OwnedFd) -> Option<(u64, u64)> {
    let st = rustix::fs::fstat(h).ok()?;
    (st.st_mode & 0o170000 == 0o100000).then_some((st.st_dev, st.st_ino))
}

/// Where an mmap goes: the address (a hint or fixed, as `place` says) and
/// the length.
pub(crate) struct MapAt {
    pub addr: u64,
    pub len: u64,
    pub place: Placement,
}

impl Kernel {
    /// mmap of descriptor `fd`: its checks as Linux's (EBADF, EACCES for
    /// an access mode the mapping exceeds, ENODEV for what is not a
    /// regular file), then a shared mapping of its page-cache file or a
    /// private copy.
    pub(crate) fn mmap_fd(&mut self, at: MapAt, prot: Prot, kind: MapKind, fd: u64, off: u64) -> SysResult {
        let MapAt { addr, len, place } = at;
        let file = lock(&self.p.files).get(fd).map_err(|_| EBADF)?;
        let OpenFile::Host(h) = &*file else {
            return Err(ENODEV);
        };
        if inode(h).is_none() {
            return Err(ENODEV);
        }
        let mode = rustix::fs::fcntl_getfl(h).map_err(|e| e.raw_os_error())? & rustix::fs::OFlags::RWMODE;
        let writes = prot == Prot::RW;
        if mode == rustix::fs::OFlags::WRONLY || (kind == MapKind::Shared && writes && mode != rustix::fs::OFlags::RDWR)
        {
            return Err(EACCES);
        }
        if off & 0xfff != 0 {
            return Err(EINVAL);
        }
        match kind {
            MapKind::Shared => {
                let f = self.p.sys.page_cache.get_or_open(h, &self.mm.machine())?;
                self.mm.mmap_file(addr, len, prot, kind, place, &f, off).map_err(|e| e.errno())
            }
            _ => self.mmap_private_copy(addr, len, prot, place, h, off),
        }
    }

    /// Temporary `MAP_PRIVATE` of a file: an anonymous private mapping
    /// holding a copy of the file's bytes (see the module's note).
    fn mmap_private_copy(
        &mut self,
        addr: u64,
        len: u64,
        prot: Prot,
        place: Placement,
        h: &OwnedFd,
        off: u64,
    ) -> SysResult {
        let at = self.mm.mmap(addr, len, Prot::RW, MapKind::Private, place).map_err(|e| e.errno())?;
        if let Some(f) = self.p.sys.page_cache.get(h) {
            let _ = f.sync(); // the host file holds the mappings' stores
        }
        let mut acc = self.mm.accessor();
        let mut buf = vec![0u8; 1 << 16];
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(buf.len() as u64) as usize;
            let n = match rustix::io::pread(h, &mut buf[..want], off + done) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if acc.write(at + done, &buf[..n]).is_err() {
                let _ = self.mm.munmap(at, len);
                return Err(EFAULT);
            }
            done += n as u64;
        }
        if prot != Prot::RW {
            self.mm.mprotect(at, len, prot).map_err(|e| e.errno())?;
        }
        Ok(at)
    }

    /// msync(addr, len, flags): softmm's (MS_SYNC writes shared file
    /// mappings back).
    pub(crate) fn msync(&mut self, addr: u64, len: u64, flags: u64) -> SysResult {
        let flags = u32::try_from(flags).map_err(|_| EINVAL)?;
        self.mm.msync(addr, len, flags).map(|()| 0).map_err(|e| e.errno())
    }

    /// fsync/fdatasync: the page cache's dirty pages, then the host's.
    pub(crate) fn fsync(&mut self, fd: u64) -> SysResult {
        let file = lock(&self.p.files).get(fd)?;
        match &*file {
            OpenFile::Host(h) => {
                if let Some(f) = self.p.sys.page_cache.get(h) {
                    f.sync().map_err(|e| e.errno())?;
                }
                rustix::fs::fsync(h.as_fd()).map(|()| 0).map_err(|e| e.raw_os_error())
            }
            _ => Err(EINVAL),
        }
    }
}
