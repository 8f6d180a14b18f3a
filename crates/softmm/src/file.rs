//! Files: an in-memory file (`memfd_create`) or a host file, each a shared
//! object with a page cache of arena frames (`shm/file.rs`).
//!
//! [`File`] is the handle a host holds, as a file descriptor: `pread`,
//! `pwrite`, `truncate` (`ftruncate`) and `sync` (`fsync`). Every read and
//! write goes through the cache, so all handles on one file see each
//! other's bytes at once; a host file sees them when dirty pages are
//! written back (`sync`, or when the last handle goes).

use crate::error::{Error, Result};
use crate::machine::MachineInner;
use crate::shm::{ShmObject, Store};
use std::path::Path;
use std::sync::Arc;

/// Direct reclaims one page of a read or write runs before it gives up
/// with ENOMEM (as a fault's `MAX_RECLAIMS`).
const MAX_RECLAIMS: u32 = 1024;

/// A file: in memory or a host file, with its page cache.
#[derive(Clone)]
pub struct File {
    pub(crate) obj: Arc<ShmObject>,
    machine: Arc<MachineInner>,
}

impl File {
    /// An in-memory file of `len` bytes of zeros (`memfd_create` and
    /// `ftruncate`); `name` is only for display.
    pub(crate) fn memfd(m: &Arc<MachineInner>, name: &str, len: u64) -> Result<File> {
        let store = Store::Memory { name: name.to_owned() };
        Self::create(m, store, len)
    }

    /// The host file at `path`, opened for reading and writing; its pages
    /// are read in on first use.
    pub(crate) fn open(m: &Arc<MachineInner>, path: &Path) -> Result<File> {
        let host = |e: std::io::Error| Error::FileIo {
            what: format!("opening {}: {e}", path.display()),
            errno: e.raw_os_error().unwrap_or(crate::error::errno::EIO),
        };
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(host)?;
        let len = file.metadata().map_err(host)?.len();
        Self::create(m, Store::Host { file, path: path.to_owned() }, len)
    }

    fn create(m: &Arc<MachineInner>, store: Store, len: u64) -> Result<File> {
        if len > crate::shm::MAX_FILE_SIZE {
            return Err(Error::FileTooBig);
        }
        Ok(File { obj: m.new_shm_with(store, len)?, machine: m.clone() })
    }

    /// The file's identity, as [`crate::VmaInfo::object`] names the file a
    /// mapping maps (stable while the file lives).
    pub fn id(&self) -> u64 {
        self.obj.id()
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.obj.size()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read up to `buf.len()` bytes at `offset`; returns how many were read
    /// (fewer at the end of the file, 0 past it), as `pread`.
    /// A range that ends past `i64::MAX` (negative as `off_t`) is `EINVAL`.
    pub fn pread(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        check_offset(offset, buf.len())?;
        self.by_page(offset, buf.len(), |pos, r| self.obj.pread(pos, &mut buf[r]))
    }

    /// Write `data` at `offset`, growing the file when the write ends past
    /// its end; returns the bytes written, as `pwrite`. `Error::FileTooBig`
    /// (`EFBIG`) past the largest file size.
    /// A range that ends past `i64::MAX` (negative as `off_t`) is `EINVAL`.
    pub fn pwrite(&self, offset: u64, data: &[u8]) -> Result<usize> {
        check_offset(offset, data.len())?;
        // The whole size check first: EFBIG writes nothing.
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= crate::shm::MAX_FILE_SIZE)
            .ok_or(Error::FileTooBig)?;
        if !data.is_empty() {
            self.obj.load_last_page(end)?; // as for `truncate`
        }
        self.by_page(offset, data.len(), |pos, r| self.obj.pwrite(pos, &data[r]))
    }

    /// Run `op` on each page's part of `len` bytes at `offset` (the file
    /// offset and the range of the caller's buffer), with direct reclaim
    /// and a retry of that page when it finds no frame, so a file larger
    /// than the memory limit is read or written whole. Stops at a short
    /// part (the end of the file); an error after some bytes is a short
    /// count, as Linux's read and write answer.
    fn by_page(
        &self,
        offset: u64,
        len: usize,
        mut op: impl FnMut(u64, std::ops::Range<usize>) -> Result<usize>,
    ) -> Result<usize> {
        let mut done = 0;
        while done < len {
            let pos = offset + done as u64;
            let chunk = (crate::PAGE_SIZE - (pos & 0xfff) as usize).min(len - done);
            let mut reclaims = 0;
            let n = loop {
                match op(pos, done..done + chunk) {
                    // Bounded as a fault's reclaim is: others may keep
                    // taking what is freed.
                    Err(Error::NoMemory(_))
                        if reclaims < MAX_RECLAIMS && crate::reclaim::direct_reclaim(&self.machine) =>
                    {
                        reclaims += 1;
                    }
                    Err(_) if done > 0 => return Ok(done),
                    r => break r?,
                }
            };
            done += n;
            if n < chunk {
                break;
            }
        }
        Ok(done)
    }

    /// Set the length (`ftruncate`): growing reads as zeros, shrinking
    /// drops the cached pages past the end and zeroes the rest of the last
    /// page. A length past `i64::MAX` (negative as `off_t`) is `EINVAL`; one
    /// the host file system cannot hold is its error (`EFBIG`).
    pub fn truncate(&self, len: u64) -> Result<()> {
        check_offset(len, 0)?;
        // Growing zeroes the rest of the old last page, which must be in
        // memory for that (a swapped one could hold a mapping's stores
        // past the end; an evicted host page was written only up to it).
        self.obj.load_last_page(len)?;
        let old = self.obj.size();
        let removed = self.obj.set_size(len)?;
        crate::reclaim::drop_pages(&self.machine, &self.obj, removed);
        if len < old {
            zap_private_past(&self.obj, len.div_ceil(4096))?;
        }
        Ok(())
    }

    /// Write every dirty cached page back to the host file (`fsync`);
    /// nothing for an in-memory file.
    pub fn sync(&self) -> Result<()> {
        crate::reclaim::write_back_range(&self.machine, &self.obj, 0, u64::MAX)
    }

    /// Pages of the file in the page cache (in memory, not on swap).
    pub fn cached_pages(&self) -> u64 {
        self.obj.resident().len() as u64
    }
}

/// Linux's checks of pread and pwrite (`rw_verify_area`: `pos < 0` or
/// `pos + count` past the largest `off_t`) and of ftruncate's length
/// (`length < 0`): offsets are signed there.
fn check_offset(offset: u64, count: usize) -> Result<()> {
    if offset.checked_add(count as u64).is_none_or(|end| end > i64::MAX as u64) {
        return Err(Error::Invalid("a file offset or length past i64::MAX (negative as off_t)"));
    }
    Ok(())
}

impl crate::Mm {
    /// Map `len` bytes of `file` from byte `offset` (page-aligned, else
    /// `EINVAL`), as `mmap` of a file descriptor. [`crate::MapKind::Shared`]: the
    /// mapping maps the file's page-cache pages, so writes reach the file's
    /// pages at once and every mapping and `File::pread` sees them. A page
    /// wholly past the end of the file faults with [`Error::Bus`] (SIGBUS);
    /// the rest of the last page reads as zeros. [`crate::MapKind::Private`]:
    /// the mapping reads the file's pages (and sees later writes to them)
    /// until it writes a page, which it then copies into an anonymous page
    /// of its own (copy on write); the file never sees its stores.
    #[allow(clippy::too_many_arguments)]
    pub fn mmap_file(
        &self,
        addr: u64,
        len: u64,
        prot: crate::Prot,
        kind: crate::MapKind,
        place: crate::Placement,
        file: &File,
        offset: u64,
    ) -> Result<u64> {
        if offset & 0xfff != 0 {
            return Err(Error::Misaligned { what: "offset", value: offset });
        }
        let pages = len.div_ceil(crate::PAGE_SIZE as u64);
        if (offset >> 12).checked_add(pages).is_none_or(|e| e > crate::shm::MAX_FILE_SIZE >> 12) {
            return Err(Error::Overflow("file offset plus length"));
        }
        self.mmap_source(addr, len, prot, kind, place, crate::MapFlags::NONE, Some((&file.obj, offset >> 12)))
    }
}

impl crate::Mm {
    /// The byte offset in `file` that `addr` maps, when the VMA holding
    /// `addr` maps `file` (`None` otherwise): with a VMA's start, the
    /// offset column of `/proc/PID/maps`.
    pub fn file_offset(&self, addr: u64, file: &File) -> Option<u64> {
        let st = self.inner.state.read();
        let vma = st.vmas.find(addr)?;
        // A shared mapping's object, or a private mapping's file.
        let o = vma.mapped_object()?;
        Arc::ptr_eq(o, &file.obj).then(|| vma.pgoff_of(addr & !0xfff) << 12)
    }
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "File({:?}, {} bytes)", self.obj, self.len())
    }
}

/// The end of a truncation in every private mapping of the file (Linux's
/// `truncate_pagecache`: `unmap_mapping_range(.., even_cows = 1)`): what
/// each maps from page `first` of the file on goes, its own copies of
/// those pages included (copies of pages that no longer exist), so the
/// next access there is SIGBUS. The file's pages already left every
/// mapping (`drop_pages`); faults past the new end fail from the moment
/// the size changed, so nothing new is mapped there meanwhile.
fn zap_private_past(obj: &Arc<crate::shm::ShmObject>, first: u64) -> Result<()> {
    let mut result = Ok(());
    obj.members.walk(|mm| {
        let st = mm.state.read_recursive();
        let Some(pt) = st.pt.as_ref() else { return };
        let ranges: Vec<(u64, u64)> = st
            .vmas
            .iter()
            .filter(|v| v.private_file().is_some_and(|o| Arc::ptr_eq(o, obj)))
            .filter(|v| v.pgoff + (v.len() >> 12) > first)
            .map(|v| (v.start + (first.saturating_sub(v.pgoff) << 12), v.end))
            .collect();
        for (lo, hi) in ranges {
            // A PTE table shared at fork that the range covers in part
            // becomes this space's own first (as for MADV_DONTNEED).
            if let Err(e) = crate::mm::unshare_range(mm, &st, pt, lo, hi, false) {
                result = result.clone().and(Err(e));
                continue;
            }
            let mut change = crate::mm::Change::open(mm, Some(&st), lo, hi, Some(crate::notifier::Event::Clear));
            change.zap(pt, lo, hi, false);
        }
    });
    result
}
