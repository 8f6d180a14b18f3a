//! A shared object as a file: read and write through its page cache,
//! truncation, and write-back of dirty pages to a host file.
//!
//! `read`/`write` go through the same frames every mapping of the object
//! maps (Linux's page cache), so both see each other's bytes at once. A
//! host file's page is read in on a miss with no lock held (`read_in`); a
//! truncation meanwhile bumps `Index::truncations` and the page read is
//! thrown away, so no stale bytes enter the cache.

use super::{resize_index, ShmObject, ShmPage};
use crate::error::{Error, Result};
use crate::phys::{flags, FrameId, PAGE_SIZE};

/// Linux's `MAX_LFS_FILESIZE` on 64-bit: no file grows past it (`EFBIG`).
pub(crate) const MAX_FILE_SIZE: u64 = i64::MAX as u64;

impl ShmObject {
    /// Read up to `buf.len()` bytes at `off`; fewer at the end of the
    /// file, none past it (`pread`). Holes of an in-memory file read as
    /// zeros without taking memory.
    pub(crate) fn pread(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        let size = self.size();
        let n = size.saturating_sub(off).min(buf.len() as u64) as usize;
        let mut done = 0;
        while done < n {
            let pos = off + done as u64;
            let (pgoff, in_page) = (pos >> 12, (pos & 0xfff) as usize);
            let chunk = (PAGE_SIZE - in_page).min(n - done);
            let out = &mut buf[done..done + chunk];
            match self.page_for_io(pgoff, false)? {
                Some(f) => {
                    self.arena.read(f, in_page, out);
                    self.arena.put(f);
                }
                None => out.fill(0),
            }
            done += chunk;
        }
        Ok(n)
    }

    /// Write `data` at `off`, growing the file when it ends past the end
    /// (`pwrite`). The pages written are dirty until written back.
    pub(crate) fn pwrite(&self, off: u64, data: &[u8]) -> Result<usize> {
        let end = off.checked_add(data.len() as u64).filter(|&e| e <= MAX_FILE_SIZE).ok_or(Error::FileTooBig)?;
        if end > self.size() {
            self.grow_to(end)?;
        }
        let mut done = 0;
        while done < data.len() {
            let pos = off + done as u64;
            let (pgoff, in_page) = (pos >> 12, (pos & 0xfff) as usize);
            let chunk = (PAGE_SIZE - in_page).min(data.len() - done);
            // A truncation racing with the write may have taken the page
            // away: Linux's write stops short there too.
            let Some(f) = self.page_for_io(pgoff, true)? else { break };
            self.arena.write(f, in_page, &data[done..done + chunk]);
            self.arena.meta(f).set_flags(flags::DIRTY);
            self.arena.put(f);
            done += chunk;
        }
        Ok(done)
    }

    /// Zero the page holding byte `end` from there on, if it is in memory:
    /// what a mapping stored past the end of the file never becomes file
    /// content (the caller brought a swapped page in beforehand).
    fn zero_past(&self, index: &super::Index, end: u64) {
        let tail = (end & 0xfff) as usize;
        if let (true, Some(&ShmPage::Frame(f))) = (tail != 0, index.pages.get((end >> 12) as usize)) {
            self.arena.fill(f, tail, PAGE_SIZE - tail, 0);
            // The file system zeroes the block through the page cache
            // (ext4's ext4_block_truncate_page), which dirties the page
            // unless the block is a hole on disk (then nothing is written).
            if self.store.is_host() && self.store.has_data(end >> 12) {
                self.arena.meta(f).set_flags(flags::DIRTY);
            }
        }
    }

    /// Bring the page holding the end of the file into memory if the
    /// file is about to grow past it (so `zero_past` finds it).
    pub(crate) fn load_last_page(&self, new_size: u64) -> Result<()> {
        let old = self.size();
        if new_size > old && old & 0xfff != 0 {
            // A host file's hole needs no zeroing, and ext4 reads nothing
            // in for it: the page stays out of the cache.
            let cached = matches!(self.index.lock().pages.get((old >> 12) as usize), Some(ShmPage::Frame(_)));
            if self.store.is_host() && !cached && !self.store.has_data(old >> 12) {
                return Ok(());
            }
            if let Some(f) = self.page_for_io(old >> 12, false)? {
                self.arena.put(f);
            }
        }
        Ok(())
    }

    /// Make the file at least `end` bytes long (a write past its end): the
    /// file grows by zeros, as with `set_size`.
    fn grow_to(&self, end: u64) -> Result<()> {
        let mut index = self.index.lock();
        if end <= index.size {
            return Ok(());
        }
        self.zero_past(&index, index.size);
        self.store.set_len(end)?;
        resize_index(&mut index.pages, end)?;
        index.size = end;
        Ok(())
    }

    /// Set the size (`ftruncate`): growing adds holes and zeroes what a
    /// mapping stored past the old end in its last page (as POSIX wants and
    /// XFS's `xfs_zero_range` does: the file grows by zeros); shrinking
    /// drops the pages wholly past the end from the cache and zeroes the
    /// tail of the last page (Linux's `truncate_inode_pages` and
    /// partial-page zeroing).
    /// Returns the pages dropped from the index (the caller unmaps them
    /// from every mapping, then drops the index's references).
    pub(crate) fn set_size(&self, size: u64) -> Result<Vec<(u64, ShmPage)>> {
        if size > MAX_FILE_SIZE {
            return Err(Error::FileTooBig);
        }
        // The host file changes length under the index lock, so the cache
        // and the file never disagree on the size (Linux holds i_rwsem).
        let mut index = self.index.lock();
        self.store.set_len(size)?;
        let first = size.div_ceil(PAGE_SIZE as u64);
        let old = index.size;
        let removed = resize_index(&mut index.pages, size)?;
        if size < old {
            index.truncations += 1;
        }
        self.zero_past(&index, size.min(old));
        index.size = size;
        drop(index);
        Ok((first..).zip(removed).filter(|(_, p)| *p != ShmPage::Absent).collect())
    }

    /// Write every dirty page back to the host file when no address space
    /// maps it any more (the object's last reference going): the pages'
    /// own dirty flags say all. Live mappings' entries are harvested first
    /// by `reclaim::write_back_range`. A failed write leaves the page dirty
    /// and is `Error::FileIo`.
    pub(crate) fn write_back(&self) -> Result<()> {
        if !self.store.is_host() {
            return Ok(());
        }
        for (pgoff, _) in self.resident() {
            // Referenced anew: a truncation may drop the page meanwhile.
            let Some(f) = self.find_page(pgoff) else { continue };
            let r = self.write_back_page(pgoff, f);
            self.arena.put(f);
            r?;
        }
        Ok(())
    }

    /// Write page `pgoff` (frame `f`, referenced by the caller) back if it
    /// is dirty; only the bytes before the end of the file.
    pub(crate) fn write_back_page(&self, pgoff: u64, f: FrameId) -> Result<()> {
        let meta = self.arena.meta(f);
        if !meta.test_and_clear_flags(flags::DIRTY) {
            return Ok(());
        }
        let off = pgoff << 12;
        // Under the index lock, and only while the page is still the file's:
        // a truncation or a hole punch that took it meanwhile must not see
        // its old bytes written back after it (Linux's truncate waits for
        // writeback under the folio lock).
        let index = self.index.lock();
        if !matches!(index.pages.get(pgoff as usize), Some(&ShmPage::Frame(g)) if g == f) {
            return Ok(());
        }
        let len = index.size.saturating_sub(off).min(PAGE_SIZE as u64) as usize;
        let mut page = [0u8; PAGE_SIZE];
        self.arena.read(f, 0, &mut page[..len]);
        self.store.write_at(off, &page[..len]).inspect_err(|_| meta.set_flags(flags::DIRTY))
    }

    /// `MADV_REMOVE`'s hole punch of pages `[first, first + n)`: they leave
    /// the index (returned, for the caller to unmap and drop) and, for a
    /// host file, the file itself, which keeps its size. Both under the
    /// index lock, as a truncation: a read-in of those pages racing it is
    /// discarded (`truncations`), and no write-back of them follows.
    pub(crate) fn punch(&self, first: u64, n: u64) -> Result<Vec<(u64, ShmPage)>> {
        let mut index = self.index.lock();
        let end = first.saturating_add(n).min(index.pages.len() as u64);
        if first >= end {
            return Ok(Vec::new());
        }
        let (lo, hi) = (first << 12, (end << 12).min(index.size));
        if hi > lo {
            self.store.punch_hole(lo, hi - lo)?;
        }
        index.truncations += 1;
        let pages = &mut index.pages[first as usize..end as usize];
        Ok((first..)
            .zip(pages.iter_mut().map(|p| std::mem::replace(p, ShmPage::Absent)))
            .filter(|(_, p)| *p != ShmPage::Absent)
            .collect())
    }

    /// The frame of page `pgoff` with a reference for the caller, read in
    /// or brought back from swap as needed; a hole of an in-memory file is
    /// allocated only when `create`. None past the end of the file, or for
    /// a hole not created.
    pub(crate) fn page_for_io(&self, pgoff: u64, create: bool) -> Result<Option<FrameId>> {
        loop {
            let truncations = {
                let mut index = self.index.lock();
                let truncations = index.truncations;
                let Some(slot) = index.pages.get_mut(pgoff as usize) else { return Ok(None) };
                match *slot {
                    ShmPage::Frame(f) => {
                        self.arena.get(f);
                        return Ok(Some(f));
                    }
                    ShmPage::Swapped(s) => {
                        drop(index);
                        self.swap_in(pgoff, s, pgoff << 12)?;
                        continue;
                    }
                    ShmPage::Absent if self.store.is_host() => truncations,
                    ShmPage::Absent if !create => return Ok(None),
                    ShmPage::Absent => {
                        let f = self.arena.alloc(true, 0)?;
                        self.adopt(f, pgoff);
                        *slot = ShmPage::Frame(f);
                        self.arena.get(f);
                        return Ok(Some(f));
                    }
                }
            };
            self.read_in(pgoff, truncations)?;
        }
    }

    /// Read page `pgoff` of a host file into the cache (no lock held while
    /// reading). It enters the cache only if the page is still absent and
    /// no truncation ran since `truncations` was seen.
    pub(crate) fn read_in(&self, pgoff: u64, truncations: u64) -> Result<()> {
        let n = self.arena.alloc(false, 0)?;
        let mut page = [0u8; PAGE_SIZE];
        if let Err(e) = self.store.read_page(pgoff, &mut page) {
            self.arena.put(n);
            return Err(e);
        }
        self.arena.write(n, 0, &page);
        let mut index = self.index.lock();
        let fresh = index.truncations == truncations;
        match index.pages.get_mut(pgoff as usize) {
            Some(p) if fresh && *p == ShmPage::Absent => {
                self.adopt(n, pgoff);
                *p = ShmPage::Frame(n);
            }
            _ => {
                drop(index);
                self.arena.put(n); // read in by another, or truncated meanwhile
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::FrameArena;
    use crate::shm::Store;
    use std::sync::Arc;

    #[test]
    #[cfg_attr(miri, ignore = "a host file: Miri isolates the file system")]
    fn a_page_read_across_a_truncation_stays_out_of_the_cache() {
        let path = std::env::temp_dir().join(format!("softmm-shm-file-{}", std::process::id()));
        std::fs::write(&path, b"old!").unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let arena = Arc::new(FrameArena::new(16 << 20, 1).unwrap());
        let obj = ShmObject::with_store(1, arena, None, 4, Store::Host { file, path: path.clone() }).unwrap();
        // A read that began before a truncation down and up ends after it.
        let seen = obj.index.lock().truncations;
        obj.release(obj.set_size(0).unwrap().into_iter().map(|(_, p)| p));
        obj.set_size(4).unwrap();
        obj.read_in(0, seen).unwrap();
        assert!(obj.find_page(0).is_none(), "a read from before the truncation is dropped");
        let now = obj.index.lock().truncations;
        obj.read_in(0, now).unwrap();
        let f = obj.find_page(0).expect("a read after it enters the cache");
        obj.arena.put(f);
        drop(obj);
        std::fs::remove_file(&path).unwrap();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Truncation (`File::truncate`: `set_size`, then `reclaim::drop_pages`
    //! unmapping the dropped page from every mapper) racing a read fault on
    //! that page of a host file (`prepare_fault` reading it in with
    //! `read_in`, then `get_page` and the install under the PTE lock), the
    //! file then growing back. A faithful model of the order, not the real
    //! functions (they need a frame arena and a host file): the index
    //! mutex with its `truncations` count, the PTE lock, the host file's
    //! bytes.
    //!
    //! Checked: no page the truncation dropped stays mapped, no page read
    //! before the truncation enters the cache after it (stale bytes), and
    //! every frame's references are its entry and the index's. Twins: the
    //! fault's `get_page` before the PTE lock, and `read_in` without the
    //! `truncations` check.
    use loom::sync::atomic::{AtomicBool, AtomicU32};
    use loom::sync::{Arc, Mutex, RwLock};
    use std::sync::atomic::Ordering::SeqCst;

    /// The host file's bytes of the page before the truncation.
    const OLD: u32 = 7;
    /// The frame `read_in` fills.
    const READ: usize = 1;

    /// The index's slot for the page: `None` past the end of the file.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Page {
        Absent,
        Frame(usize),
    }

    struct Index {
        page: Option<Page>,
        truncations: u64,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Twin {
        None,
        GetPageOutsidePtl,
        NoTruncationsCheck,
    }

    struct World {
        mmap_lock: RwLock<()>,
        index: Mutex<Index>,
        /// The host file's bytes of the page (0 once truncated away).
        store: AtomicU32,
        ptl: Mutex<()>,
        /// The mapping's entry: a frame, or 0.
        pte: AtomicU32,
        bytes: [AtomicU32; 2],
        refs: [AtomicU32; 2],
        freed: [AtomicBool; 2],
        twin: Twin,
    }

    impl World {
        fn put(&self, f: usize) {
            let old = self.refs[f].fetch_sub(1, SeqCst);
            assert!(old >= 1, "frame {f}'s reference dropped twice");
            if old == 1 {
                assert_ne!(self.pte.load(SeqCst) as usize, f, "frame {f} freed while mapped");
                self.freed[f].store(true, SeqCst);
            }
        }

        /// `read_in`: fill a frame with no lock held, then insert it only if
        /// the page is still absent and no truncation ran since `seen`.
        fn read_in(&self, seen: u64) {
            self.refs[READ].store(1, SeqCst);
            self.bytes[READ].store(self.store.load(SeqCst), SeqCst);
            let mut i = self.index.lock().unwrap();
            let fresh = self.twin == Twin::NoTruncationsCheck || i.truncations == seen;
            if fresh && i.page == Some(Page::Absent) {
                i.page = Some(Page::Frame(READ));
            } else {
                drop(i);
                self.put(READ);
            }
        }

        /// `prepare_fault`: `Bus` past the end, else the page read in.
        fn prepare_fault(&self) -> Result<(), &'static str> {
            let (seen, page) = {
                let i = self.index.lock().unwrap();
                (i.truncations, i.page)
            };
            match page {
                None => Err("bus"),
                Some(Page::Absent) => {
                    self.read_in(seen);
                    Ok(())
                }
                Some(Page::Frame(_)) => Ok(()),
            }
        }

        /// `get_page`: the cached frame, referenced for the entry.
        fn get_page(&self) -> Result<usize, &'static str> {
            let i = self.index.lock().unwrap();
            match i.page {
                None => Err("bus"),
                Some(Page::Absent) => Err("again"), // the fault is retried
                Some(Page::Frame(f)) => {
                    self.refs[f].fetch_add(1, SeqCst);
                    Ok(f)
                }
            }
        }

        /// A read fault on the page (no entry yet), under the `mmap_lock`.
        fn fault(&self) -> Result<(), &'static str> {
            let _r = self.mmap_lock.read().unwrap();
            self.prepare_fault()?;
            let early = (self.twin == Twin::GetPageOutsidePtl).then(|| self.get_page());
            let _g = self.ptl.lock().unwrap();
            let f = match early {
                Some(r) => r?,
                None => self.get_page()?,
            };
            self.pte.store(f as u32, SeqCst);
            Ok(())
        }

        /// `File::truncate(0)`, then the file grows back to one page.
        fn truncate_and_grow(&self) {
            let removed = {
                let mut i = self.index.lock().unwrap();
                self.store.store(0, SeqCst);
                i.truncations += 1;
                i.page.take()
            };
            if let Some(Page::Frame(f)) = removed {
                // `unmap_everywhere`: each mapper's entry, under its locks.
                {
                    let _r = self.mmap_lock.read().unwrap();
                    let _g = self.ptl.lock().unwrap();
                    if self.pte.load(SeqCst) as usize == f {
                        self.pte.store(0, SeqCst);
                        self.put(f);
                    }
                }
                self.put(f); // the index's reference
            }
            self.index.lock().unwrap().page = Some(Page::Absent);
        }
    }

    fn run(twin: Twin) {
        loom::model(move || {
            let w = Arc::new(World {
                mmap_lock: RwLock::new(()),
                index: Mutex::new(Index { page: Some(Page::Absent), truncations: 0 }),
                store: AtomicU32::new(OLD),
                ptl: Mutex::new(()),
                pte: AtomicU32::new(0),
                bytes: [AtomicU32::new(0), AtomicU32::new(0)],
                refs: [AtomicU32::new(0), AtomicU32::new(0)],
                freed: [AtomicBool::new(false), AtomicBool::new(false)],
                twin,
            });
            let w2 = w.clone();
            let truncator = loom::thread::spawn(move || w2.truncate_and_grow());
            let _ = w.fault();
            truncator.join().unwrap();
            let cached = w.index.lock().unwrap().page;
            let mapped = w.pte.load(SeqCst) as usize;
            if mapped != 0 {
                assert_eq!(cached, Some(Page::Frame(mapped)), "a page the truncation dropped stays mapped");
            }
            if let Some(Page::Frame(f)) = cached {
                assert_eq!(w.bytes[f].load(SeqCst), w.store.load(SeqCst), "a stale page entered the cache");
            }
            let held = u32::from(mapped == READ) + u32::from(cached == Some(Page::Frame(READ)));
            assert_eq!(w.refs[READ].load(SeqCst), held, "the frame's references are not its entry and the index's");
        });
    }

    #[test]
    fn truncation_races_a_fault_and_its_read_in() {
        run(Twin::None);
    }

    /// The model can fail: a fault that takes its page before the PTE lock
    /// installs it after the truncation unmapped every mapper.
    #[test]
    #[should_panic(expected = "the truncation dropped stays mapped")]
    fn get_page_outside_the_pte_lock_is_caught() {
        run(Twin::GetPageOutsidePtl);
    }

    /// The model can fail: a read begun before the truncation, inserted
    /// after the file grew back, caches the old bytes.
    #[test]
    #[should_panic(expected = "a stale page entered the cache")]
    fn read_in_without_the_truncations_check_is_caught() {
        run(Twin::NoTruncationsCheck);
    }
}
