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
//! `MAP_PRIVATE` of a file maps the same page-cache file privately
//! (softmm's private file mappings): it reads the file's pages, and so
//! sees later writes to the file, until it writes a page, which it then
//! copies; a page wholly past the end of the file is SIGBUS. A file the
//! host will not open for writing (`Machine::open_file` opens read-write:
//! a read-only file system, a file of another user) cannot enter the
//! page cache; nothing in the run can write it either, so its private
//! mappings map a snapshot of the file taken at `mmap` time instead, as
//! an in-memory file of the same length (SIGBUS past the end kept).

use crate::errno::{EACCES, EBADF, EINVAL, ENODEV, EPERM, EROFS, ETXTBSY};
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

    /// The cached file of `h`, opening it in `machine` if needed
    /// (errors as the host's open answered them).
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

/// What `/proc/PID/maps` names host file `h` by: its host path (Linux's
/// `d_path`, `/memfd:NAME (deleted)` for a memfd), device and inode.
fn host_name(h: &OwnedFd) -> Option<crate::proc::ObjName> {
    let st = rustix::fs::fstat(h).ok()?;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", h.as_raw_fd())).ok()?;
    // The casts are no-ops on some hosts, not on others.
    #[allow(clippy::unnecessary_cast)]
    let (dev, ino) = (st.st_dev as u64, st.st_ino as u64);
    Some(crate::proc::ObjName {
        path: path.to_string_lossy().into_owned(),
        dev: (rustix::fs::major(dev), rustix::fs::minor(dev)),
        ino,
    })
}

/// An in-memory file as long as host file `h`, holding its bytes from
/// `off` for `len` (what a private mapping of them can read): the private
/// mapping of a file the page cache cannot hold (see the module's note).
fn snapshot(h: &OwnedFd, machine: &softmm::Machine, off: u64, len: u64) -> Result<softmm::File, i32> {
    let size = rustix::fs::fstat(h).map_err(|e| e.raw_os_error())?.st_size as u64;
    let f = machine.memfd("private snapshot", size).map_err(|e| e.errno())?;
    let end = off.saturating_add(len).min(size);
    let mut buf = vec![0u8; 1 << 16];
    let mut pos = off;
    while pos < end {
        let want = (end - pos).min(buf.len() as u64) as usize;
        let n = rustix::io::pread(h, &mut buf[..want], pos).map_err(|e| e.raw_os_error())?;
        if n == 0 {
            break; // shrunk meanwhile: the rest stays zeros
        }
        f.pwrite(pos, &buf[..n]).map_err(|e| e.errno())?;
        pos += n as u64;
    }
    Ok(f)
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
    /// regular file), then a shared or private mapping of its page-cache
    /// file.
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
        let writes = prot.writable();
        if mode == rustix::fs::OFlags::WRONLY || (kind == MapKind::Shared && writes && mode != rustix::fs::OFlags::RDWR)
        {
            return Err(EACCES);
        }
        if off & 0xfff != 0 {
            return Err(EINVAL);
        }
        let f = match kind {
            MapKind::Shared => self.p.sys.page_cache.get_or_open(h, &self.mm.machine())?,
            _ => {
                let machine = self.mm.machine();
                match self.p.sys.page_cache.get_or_open(h, &machine) {
                    Ok(f) => f,
                    Err(EACCES | EPERM | EROFS | ETXTBSY) => snapshot(h, &machine, off, len)?,
                    Err(e) => return Err(e),
                }
            }
        };
        if let Some(name) = host_name(h) {
            self.p.sys.object_names.set(f.id(), name);
        }
        self.mm.mmap_file(addr, len, prot, kind, place, &f, off).map_err(|e| e.errno())
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
