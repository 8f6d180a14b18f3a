//! Shared anonymous memory objects (what `MAP_SHARED|MAP_ANONYMOUS` creates).
//!
//! An object has its own page index: page offset -> frame, or -> swap slot
//! once reclaim pushed the page out (as Linux's shmem keeps swap entries in
//! its page cache). The index holds one reference on each frame (Linux's
//! page-cache reference) and one on each slot; each PTE mapping a frame
//! holds another. The object lives as long as a VMA refers to it, across
//! fork. Its VMAs are linked into `members` (`ShmLink`), the reverse map
//! reclaim uses to unmap a page before it goes to swap.
//!
//! Lock: `pages` is a leaf taken under the page-table lock by the fault path;
//! device I/O never happens under it.

use crate::error::{Error, Result};
use crate::phys::{flags, FrameArena, FrameId, PAGE_SIZE};
use crate::reclaim::swap::SwapSpace;
use crate::rmap::{Members, MmRef};
use crate::sync::Ordering;
use parking_lot::Mutex;
use std::sync::Arc;

mod file;
mod store;
pub(crate) use file::MAX_FILE_SIZE;
pub(crate) use store::Store;

/// One page of the index.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ShmPage {
    /// Never touched: reads as zeros.
    Absent,
    Frame(FrameId),
    /// On the swap device, in this slot.
    Swapped(u32),
}

/// The page index and the size it covers, changed together.
pub(crate) struct Index {
    pub(crate) pages: Vec<ShmPage>,
    /// In bytes; `pages` covers it, rounded up to whole pages.
    pub(crate) size: u64,
    /// Bumped by every truncation: a page read from the host file while it
    /// ran may hold stale bytes and must not enter the cache.
    pub(crate) truncations: u64,
}

/// A shared memory object: shared anonymous memory, or a file (an
/// in-memory file or a host file's page cache, `shm/file.rs`).
pub struct ShmObject {
    id: u64,
    pub(crate) arena: Arc<FrameArena>,
    swap: Option<Arc<SwapSpace>>,
    pub(crate) index: Mutex<Index>,
    /// Where the pages come from and go back to.
    pub(crate) store: Store,
    /// Address spaces with VMAs mapping the object.
    pub(crate) members: Members,
}

impl ShmObject {
    pub(crate) fn new(
        id: u64,
        arena: Arc<FrameArena>,
        swap: Option<Arc<SwapSpace>>,
        npages: u64,
    ) -> Result<Arc<ShmObject>> {
        let size = npages.checked_mul(PAGE_SIZE as u64).ok_or(Error::NoMemory("shared object too large"))?;
        ShmObject::with_store(id, arena, swap, size, Store::Memory { name: String::new() })
    }

    /// An object of `size` bytes whose pages come from `store`.
    pub(crate) fn with_store(
        id: u64,
        arena: Arc<FrameArena>,
        swap: Option<Arc<SwapSpace>>,
        size: u64,
        store: Store,
    ) -> Result<Arc<ShmObject>> {
        let mut pages = Vec::new();
        resize_index(&mut pages, size)?;
        let index = Mutex::new(Index { pages, size, truncations: 0 });
        Ok(Arc::new(ShmObject { id, arena, swap, index, store, members: Members::default() }))
    }

    /// The object's identity (stable for its lifetime).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The size in bytes (a file's length; a shared mapping's object size).
    pub(crate) fn size(&self) -> u64 {
        self.index.lock().size
    }

    /// The frame at `pgoff`, allocated zeroed when absent. Takes one extra
    /// reference for the caller (the mapping it is about to install).
    /// `Error::Again` when the page is on swap or a host file's page is not
    /// cached: the caller brings it in with [`ShmObject::prepare_fault`]
    /// (outside its page-table lock) and retries. `Error::Bus` at `addr`
    /// when the page is wholly past the end.
    ///
    /// First, with the same look at the index, the resident pages of
    /// `[first, first + n)` that `want(pgoff)` accepts, as
    /// `find_pages_locked` hands them (also when the page itself then
    /// fails): a read fault and its fault-around under one lock.
    pub(crate) fn get_page_around(
        &self,
        pgoff: u64,
        addr: u64,
        (first, n): (u64, u64),
        want: impl FnMut(u64) -> bool,
        found: impl FnMut(u64, FrameId),
    ) -> Result<FrameId> {
        let mut index = self.index.lock();
        self.find_pages_locked(&index, first, n, want, found);
        self.get_page_locked(&mut index, pgoff, addr)
    }

    fn get_page_locked(&self, index: &mut Index, pgoff: u64, addr: u64) -> Result<FrameId> {
        let slot = index.pages.get_mut(pgoff as usize).ok_or(Error::Bus { addr })?;
        let f = match *slot {
            ShmPage::Frame(f) => f,
            ShmPage::Swapped(_) => return Err(Error::Again),
            // A host file's page is read in first (`read_in`), outside the lock.
            ShmPage::Absent if self.store.is_host() => return Err(Error::Again),
            ShmPage::Absent => {
                let f = self.arena.alloc(true, 0)?;
                self.adopt(f, pgoff);
                *slot = ShmPage::Frame(f);
                f
            }
        };
        self.arena.get(f);
        Ok(f)
    }

    /// Before a fault takes its page-table lock: `Error::Bus` at `addr` for
    /// a page wholly past the end; bring page `pgoff` back from swap, or
    /// read a host file's page in (I/O outside every lock). Returns whether
    /// the page came back from swap.
    pub(crate) fn prepare_fault(&self, pgoff: u64, addr: u64) -> Result<bool> {
        let index = self.index.lock();
        let truncations = index.truncations;
        match index.pages.get(pgoff as usize) {
            None => Err(Error::Bus { addr }),
            Some(&ShmPage::Swapped(slot)) => {
                drop(index);
                self.swap_in(pgoff, slot, addr)?;
                Ok(true)
            }
            Some(&ShmPage::Absent) if self.store.is_host() => {
                drop(index);
                self.read_in(pgoff, truncations)?;
                Ok(false)
            }
            Some(_) => Ok(false),
        }
    }

    /// Make `f` the object's page `pgoff` (rmap owner and index), and only
    /// then visible to the reclaim clock (which looks at `SHM` frames).
    pub(crate) fn adopt(&self, f: FrameId, pgoff: u64) {
        let m = self.arena.meta(f);
        m.owner.store(self.id, Ordering::Relaxed);
        m.index.store(pgoff, Ordering::Relaxed);
        m.set_flags(flags::SHM);
    }

    /// The swap slot page `pgoff` is in, if it is swapped out.
    pub(crate) fn swapped(&self, pgoff: u64) -> Option<u32> {
        match self.index.lock().pages.get(pgoff as usize) {
            Some(&ShmPage::Swapped(s)) => Some(s),
            _ => None,
        }
    }

    /// Bring page `pgoff` back from swap slot `slot` (no lock held while
    /// reading). A failed read is `Error::Io` and leaves the page on swap.
    pub(crate) fn swap_in(&self, pgoff: u64, slot: u32, addr: u64) -> Result<()> {
        let Some(swap) = self.swap.as_ref() else {
            return Err(Error::Io { addr, what: "shared page on swap without a swap device".into() });
        };
        let n = self.arena.alloc(false, 0)?;
        let mut page = [0u8; PAGE_SIZE];
        if let Err(e) = swap.dev.read_page(slot as u64, &mut page) {
            self.arena.put(n);
            return Err(Error::Io { addr, what: format!("reading slot {slot} of {}: {e}", swap.dev.describe()) });
        }
        self.arena.write(n, 0, &page);
        let mut index = self.index.lock();
        match index.pages.get_mut(pgoff as usize) {
            Some(p) if *p == ShmPage::Swapped(slot) => {
                // The slot was the only copy: the page is dirty again.
                self.arena.meta(n).set_flags(flags::DIRTY);
                self.adopt(n, pgoff);
                *p = ShmPage::Frame(n);
                drop(index);
                swap.put(slot);
            }
            _ => {
                drop(index);
                self.arena.put(n); // another fault brought it back first
            }
        }
        Ok(())
    }

    /// Replace resident page `pgoff` (frame `f`, which nobody but the index
    /// and the caller holds: `expected` references) by swap `slot`, whose
    /// reference the index takes over. Fails (and changes nothing) when
    /// the page changed or someone took a reference meanwhile.
    pub(crate) fn replace_with_slot(&self, pgoff: u64, f: FrameId, expected: u32, slot: u32) -> bool {
        self.replace_page(pgoff, f, expected, ShmPage::Swapped(slot))
    }

    /// Drop a host file's clean page `pgoff` (frame `f`) from the cache, as
    /// `replace_with_slot` does: a later access reads it in again.
    pub(crate) fn evict(&self, pgoff: u64, f: FrameId, expected: u32) -> bool {
        self.replace_page(pgoff, f, expected, ShmPage::Absent)
    }

    fn replace_page(&self, pgoff: u64, f: FrameId, expected: u32, new: ShmPage) -> bool {
        let mut index = self.index.lock();
        match index.pages.get_mut(pgoff as usize) {
            Some(p) if *p == ShmPage::Frame(f) && self.arena.meta(f).refcount() == expected => {
                *p = new;
                drop(index);
                self.arena.put(f); // the index's reference
                true
            }
            _ => false,
        }
    }

    /// The frame at `pgoff` if it is resident, with an extra reference for
    /// the caller (what fault-around maps: only pages already in the cache).
    pub(crate) fn find_page(&self, pgoff: u64) -> Option<FrameId> {
        let index = self.index.lock();
        let ShmPage::Frame(f) = *index.pages.get(pgoff as usize)? else { return None };
        self.arena.get(f);
        Some(f)
    }

    /// Each resident page of `[first, first + n)` that `want(pgoff)`
    /// accepts, under one lock of the index, with a reference and a mapping
    /// counted for the caller, who is about to map it: `found(pgoff,
    /// frame)`. Fault-around's lookup.
    fn find_pages_locked(
        &self,
        index: &Index,
        first: u64,
        n: u64,
        mut want: impl FnMut(u64) -> bool,
        mut found: impl FnMut(u64, FrameId),
    ) {
        let lo = (first as usize).min(index.pages.len());
        let hi = (first.saturating_add(n) as usize).min(index.pages.len());
        for (i, p) in index.pages[lo..hi].iter().enumerate() {
            let pgoff = (lo + i) as u64;
            if let ShmPage::Frame(f) = *p {
                if want(pgoff) {
                    // One atomic for both counts (`get` and a mapping).
                    self.arena.meta(f).add_counts(1, 1);
                    found(pgoff, f);
                }
            }
        }
    }

    /// Every resident page, as (pgoff, frame) (for audits and statistics).
    pub(crate) fn resident(&self) -> Vec<(u64, FrameId)> {
        self.index_where(|p| match p {
            ShmPage::Frame(f) => Some(f),
            _ => None,
        })
    }

    /// Every swapped page, as (pgoff, slot) (audits, smaps).
    pub(crate) fn swapped_pages(&self) -> Vec<(u64, u32)> {
        self.index_where(|p| match p {
            ShmPage::Swapped(s) => Some(s),
            _ => None,
        })
    }

    /// (pgoff, what `pick` takes from the entry) for the entries it takes.
    fn index_where<T>(&self, pick: impl Fn(ShmPage) -> Option<T>) -> Vec<(u64, T)> {
        let index = self.index.lock();
        index.pages.iter().enumerate().filter_map(|(i, &p)| pick(p).map(|x| (i as u64, x))).collect()
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        // The last chance to keep a host file's dirty pages; an error here
        // has no one to go to (Linux reports write-back errors only to a
        // later fsync).
        let _ = self.write_back();
        let pages = std::mem::take(&mut self.index.get_mut().pages);
        self.release(pages);
    }
}

impl ShmObject {
    /// Drop the index's references on pages taken out of it.
    pub(crate) fn release(&self, pages: impl IntoIterator<Item = ShmPage>) {
        for p in pages {
            match p {
                ShmPage::Frame(f) => {
                    self.arena.put(f);
                }
                ShmPage::Swapped(s) => {
                    if let Some(swap) = self.swap.as_ref() {
                        swap.put(s);
                    }
                }
                ShmPage::Absent => {}
            }
        }
    }
}

/// Make `pages` cover `size` bytes: new pages are absent, pages past the
/// end are returned (their references still to drop).
pub(crate) fn resize_index(pages: &mut Vec<ShmPage>, size: u64) -> Result<Vec<ShmPage>> {
    let n = usize::try_from(size.div_ceil(PAGE_SIZE as u64)).map_err(|_| Error::NoMemory("object too large"))?;
    if n <= pages.len() {
        return Ok(pages.split_off(n));
    }
    pages.try_reserve_exact(n - pages.len()).map_err(|_| Error::NoMemory("object page index"))?;
    pages.resize(n, ShmPage::Absent);
    Ok(Vec::new())
}

impl std::fmt::Debug for ShmObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShmObject({}, {})", self.id, self.store.describe())
    }
}

/// A VMA's hold on its shared object, linked into the object's members for
/// as long as the VMA exists (creation links, drop unlinks).
pub(crate) struct ShmLink {
    obj: Arc<ShmObject>,
    mm: MmRef,
}

impl ShmLink {
    pub(crate) fn new(obj: Arc<ShmObject>, mm: MmRef) -> ShmLink {
        obj.members.link(&mm);
        ShmLink { obj, mm }
    }

    /// The same object for another VMA of `mm` (a split, or a fork's child).
    pub(crate) fn link_for(&self, mm: &MmRef) -> ShmLink {
        ShmLink::new(self.obj.clone(), mm.clone())
    }

    /// The same object for another VMA of this VMA's space (a split).
    pub(crate) fn clone_link(&self) -> ShmLink {
        self.link_for(&self.mm)
    }
}

impl std::ops::Deref for ShmLink {
    type Target = Arc<ShmObject>;
    fn deref(&self) -> &Arc<ShmObject> {
        &self.obj
    }
}

impl Drop for ShmLink {
    fn drop(&mut self) {
        self.obj.members.unlink(self.mm.id);
    }
}
