//! Shared anonymous memory objects (what `MAP_SHARED|MAP_ANONYMOUS` creates).
//!
//! An object has its own page index: page offset -> frame. The index holds one
//! reference on each frame (Linux's page-cache reference); each PTE mapping it
//! holds another. The object lives as long as a VMA refers to it, across fork.
//!
//! Lock: `pages` is a leaf taken under the page-table lock by the fault path.

use crate::error::{Error, Result};
use crate::phys::{flags, FrameArena, FrameId};
use crate::sync::Ordering;
use parking_lot::Mutex;
use std::sync::Arc;

/// A shared memory object.
pub struct ShmObject {
    id: u64,
    arena: Arc<FrameArena>,
    /// Frame of each page; `None` until first touched.
    pages: Mutex<Vec<Option<FrameId>>>,
}

impl ShmObject {
    pub(crate) fn new(id: u64, arena: Arc<FrameArena>, npages: u64) -> Result<Arc<ShmObject>> {
        let n = usize::try_from(npages).map_err(|_| Error::NoMemory("shared object too large"))?;
        let mut pages = Vec::new();
        pages.try_reserve_exact(n).map_err(|_| Error::NoMemory("shared object page index"))?;
        pages.resize(n, None);
        Ok(Arc::new(ShmObject { id, arena, pages: Mutex::new(pages) }))
    }

    /// The object's identity (stable for its lifetime).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Pages in the object.
    pub fn npages(&self) -> u64 {
        self.pages.lock().len() as u64
    }

    /// The frame at `pgoff`, allocated zeroed when absent. Takes one extra
    /// reference for the caller (the mapping it is about to install).
    pub(crate) fn get_page(&self, pgoff: u64) -> Result<FrameId> {
        let mut pages = self.pages.lock();
        let slot = pages.get_mut(pgoff as usize).ok_or(Error::Fault { addr: pgoff << 12 })?;
        let f = match *slot {
            Some(f) => f,
            None => {
                let f = self.arena.alloc(true, flags::SHM)?;
                self.arena.meta(f).owner.store(self.id, Ordering::Relaxed);
                self.arena.meta(f).index.store(pgoff, Ordering::Relaxed);
                *slot = Some(f);
                f
            }
        };
        self.arena.get(f);
        Ok(f)
    }

    /// The frame at `pgoff` if it is resident, with an extra reference for
    /// the caller (what fault-around maps: only pages already in the cache).
    pub(crate) fn find_page(&self, pgoff: u64) -> Option<FrameId> {
        let pages = self.pages.lock();
        let f = (*pages.get(pgoff as usize)?)?;
        self.arena.get(f);
        Some(f)
    }

    /// Every resident page, as (pgoff, frame) (for audits and statistics).
    pub(crate) fn resident(&self) -> Vec<(u64, FrameId)> {
        let pages = self.pages.lock();
        pages.iter().enumerate().filter_map(|(i, f)| f.map(|f| (i as u64, f))).collect()
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        for f in self.pages.get_mut().drain(..).flatten() {
            self.arena.put(f);
        }
    }
}

impl std::fmt::Debug for ShmObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShmObject({})", self.id)
    }
}
