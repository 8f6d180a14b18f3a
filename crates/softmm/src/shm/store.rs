//! Where a shared object's pages live when they are not in the cache: in
//! memory only (shared anonymous memory, memfd: Linux's shmem, whose pages
//! go to swap), or in a host file (read in on a miss, written back when
//! dirty: Linux's page cache over a file system).

use crate::error::{Error, Result};
use crate::phys::PAGE_SIZE;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// The backing store of a shared object.
pub(crate) enum Store {
    /// No store: an absent page reads as zeros, reclaim swaps pages out.
    Memory { name: String },
    /// A host file.
    Host { file: std::fs::File, path: PathBuf },
}

impl Store {
    /// Whether pages come from a host file (absent is not zeros).
    pub(crate) fn is_host(&self) -> bool {
        matches!(self, Store::Host { .. })
    }

    /// What the store is, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Store::Memory { name } if name.is_empty() => "anonymous".into(),
            Store::Memory { name } => format!("memfd:{name}"),
            Store::Host { path, .. } => path.display().to_string(),
        }
    }

    /// Page `pgoff` from the store; bytes past the host file's end are zeros.
    pub(crate) fn read_page(&self, pgoff: u64, page: &mut [u8; PAGE_SIZE]) -> Result<()> {
        page.fill(0);
        let Store::Host { file, .. } = self else { return Ok(()) };
        let off = pgoff << 12;
        let mut done = 0;
        while done < PAGE_SIZE {
            match file.read_at(&mut page[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error("reading", off, &e)),
            }
        }
        Ok(())
    }

    /// Write `data` at byte `off` of the host file (nothing for memory).
    pub(crate) fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        let Store::Host { file, .. } = self else { return Ok(()) };
        file.write_all_at(data, off).map_err(|e| self.io_error("writing", off, &e))
    }

    /// Whether the host file holds data in page `pgoff`, not a hole
    /// (`SEEK_DATA`; a file system that cannot tell counts as data).
    pub(crate) fn has_data(&self, pgoff: u64) -> bool {
        let Store::Host { file, .. } = self else { return false };
        let off = pgoff << 12;
        match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(off)) {
            Ok(next) => next < off + PAGE_SIZE as u64,
            Err(e) => e != rustix::io::Errno::NXIO,
        }
    }

    /// Set the host file's length (nothing for memory).
    pub(crate) fn set_len(&self, size: u64) -> Result<()> {
        let Store::Host { file, .. } = self else { return Ok(()) };
        file.set_len(size).map_err(|e| self.io_error("truncating", size, &e))
    }

    /// Punch `[off, off + len)` out of the host file, keeping its size
    /// (fallocate `PUNCH_HOLE | KEEP_SIZE`; zeros written where the file
    /// system cannot punch). Nothing for memory.
    pub(crate) fn punch_hole(&self, off: u64, len: u64) -> Result<()> {
        let Store::Host { file, .. } = self else { return Ok(()) };
        if len == 0 {
            return Ok(());
        }
        let mode = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(file, mode, off, len) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) => {
                let zeros = vec![0u8; len.min(1 << 20) as usize];
                let mut at = off;
                while at < off + len {
                    let n = (off + len - at).min(zeros.len() as u64) as usize;
                    self.write_at(at, &zeros[..n])?;
                    at += n as u64;
                }
                Ok(())
            }
            Err(e) => Err(self.io_error("punching a hole in", off, &e.into())),
        }
    }

    fn io_error(&self, doing: &str, off: u64, e: &std::io::Error) -> Error {
        Error::FileIo {
            what: format!("{doing} {} at {off:#x}: {e}", self.describe()),
            errno: e.raw_os_error().unwrap_or(crate::error::errno::EIO),
        }
    }
}
