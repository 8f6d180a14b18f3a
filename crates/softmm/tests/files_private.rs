//! Private file mappings (`MAP_PRIVATE` of a file), as Linux has them: the
//! file's page-cache pages mapped read-only until this space writes them,
//! then an anonymous copy of its own. Every step is audited.

mod common;

use common::{check, errno_of, machine, read};
use softmm::reclaim::device::MemSwap;
use softmm::{
    errno, Advice, Config, Error, ForkPolicy, FutexKeys, Machine, MapKind, Mm, Placement, Prot, RemapFlags, SwapConfig,
};
use std::path::PathBuf;
use std::sync::Arc;

const PAGE: u64 = 4096;
const BASE: u64 = 0x1000_0000;
const OTHER: u64 = 0x2000_0000;

/// A scratch host file holding `content`, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, content: &[u8]) -> Scratch {
        let p = std::env::temp_dir().join(format!("softmm-files-private-{}-{name}", std::process::id()));
        std::fs::write(&p, content).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn pread(f: &softmm::File, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xeeu8; len];
    let n = f.pread(off, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn map_private(mm: &Mm, at: u64, f: &softmm::File, len: u64, prot: Prot) {
    mm.mmap_file(at, len, prot, MapKind::Private, Placement::Fixed, f, 0).unwrap();
}

fn map_shared(mm: &Mm, at: u64, f: &softmm::File, len: u64) {
    mm.mmap_file(at, len, Prot::RW, MapKind::Shared, Placement::Fixed, f, 0).unwrap();
}

/// A memfd of `pages` pages, page `i` filled with `i + 1` (all cached).
fn filled(m: &Machine, pages: u64) -> softmm::File {
    let f = m.memfd("private", pages * PAGE).unwrap();
    for i in 0..pages {
        f.pwrite(i * PAGE, &vec![i as u8 + 1; PAGE as usize]).unwrap();
    }
    f
}

#[test]
fn a_read_maps_the_cache_page_read_only_and_sees_later_file_writes() {
    let m = machine();
    let f = filled(&m, 32);
    let mm = m.new_mm().unwrap();
    let sh = m.new_mm().unwrap();
    map_private(&mm, BASE, &f, 32 * PAGE, Prot::RW);
    map_shared(&sh, BASE, &f, 32 * PAGE);
    let data_frames = || m.stats().frames_in_use - m.stats().page_tables;
    let before = data_frames();
    assert_eq!(read(&mm, BASE + 5 * PAGE, 2), [6, 6]);
    assert_eq!(data_frames(), before, "no copy: the cache page is mapped");
    assert_eq!(read(&sh, BASE + 5 * PAGE, 1), [6]);
    assert_eq!(mm.phys(BASE + 5 * PAGE), sh.phys(BASE + 5 * PAGE), "one page, two mappings");
    for p in 0..16 {
        assert!(mm.phys(BASE + p * PAGE).is_some(), "fault-around maps cached page {p}");
    }
    assert_eq!(mm.phys(BASE + 16 * PAGE), None, "past the 64 KiB window");
    check(&mm);
    f.pwrite(5 * PAGE + 1, b"file").unwrap();
    assert_eq!(read(&mm, BASE + 5 * PAGE + 1, 4), b"file", "pwrite shows through");
    sh.write(BASE + 6 * PAGE, b"store").unwrap();
    assert_eq!(read(&mm, BASE + 6 * PAGE, 5), b"store", "a shared mapping's store shows through");
    check(&mm);
}

#[test]
fn a_write_copies_the_page_and_leaves_the_file_alone() {
    let m = machine();
    let f = filled(&m, 4);
    let mm = m.new_mm().unwrap();
    let sh = m.new_mm().unwrap();
    map_private(&mm, BASE, &f, 4 * PAGE, Prot::RW);
    map_shared(&sh, BASE, &f, 4 * PAGE);
    // A write to a page read before (wp_page_copy) ...
    assert_eq!(read(&mm, BASE, 1), [1]);
    mm.write(BASE + 10, b"mine").unwrap();
    check(&mm);
    // ... and to one never touched (do_cow_fault): the rest is the file's.
    mm.write(BASE + 2 * PAGE + 10, b"also").unwrap();
    check(&mm);
    assert_eq!(read(&mm, BASE + 2 * PAGE + 8, 8), [3, 3, b'a', b'l', b's', b'o', 3, 3]);
    assert_eq!(pread(&f, 10, 4), [1; 4], "the file is unchanged");
    assert_eq!(pread(&f, 2 * PAGE + 10, 4), [3; 4]);
    assert_ne!(mm.phys(BASE), sh.phys(BASE), "the private page is a copy");
    // Writes to the file no longer reach a copied page, but still reach
    // the others.
    f.pwrite(12, b"XX").unwrap();
    f.pwrite(PAGE, b"YY").unwrap();
    assert_eq!(read(&mm, BASE + 10, 4), b"mine");
    assert_eq!(read(&mm, BASE + PAGE, 2), b"YY");
    let s = mm.smaps(BASE).unwrap();
    assert_eq!(s.anonymous, 8, "the two copies are anonymous");
    check(&mm);
}

#[test]
fn a_read_only_private_mapping_made_writable_still_copies() {
    let m = machine();
    let f = filled(&m, 2);
    let mm = m.new_mm().unwrap();
    map_private(&mm, BASE, &f, 2 * PAGE, Prot::READ);
    assert_eq!(read(&mm, BASE, 1), [1]);
    let cache = mm.phys(BASE);
    assert_eq!(errno_of(mm.write(BASE, b"x")), errno::EFAULT);
    mm.mprotect(BASE, 2 * PAGE, Prot::RW).unwrap();
    check(&mm); // the audit refuses a writable page-cache entry
    assert_eq!(mm.phys(BASE), cache, "still the cache page, read-only");
    mm.write(BASE, b"x").unwrap();
    assert_ne!(mm.phys(BASE), cache, "the write copied it");
    assert_eq!(pread(&f, 0, 1), [1]);
    assert_eq!(mm.mappings()[0].perms(), "rw-p");
    check(&mm);
}

#[test]
fn pages_wholly_past_the_end_are_sigbus() {
    let m = machine();
    let f = m.memfd("bus", PAGE + 10).unwrap();
    f.pwrite(0, b"head").unwrap();
    let mm = m.new_mm().unwrap();
    map_private(&mm, BASE, &f, 3 * PAGE, Prot::RW);
    assert_eq!(read(&mm, BASE + PAGE + 100, 2), [0, 0], "the last page is mapped whole");
    let mut b = [0u8; 1];
    assert_eq!(mm.read(BASE + 2 * PAGE, &mut b), Err(Error::Bus { addr: BASE + 2 * PAGE }));
    assert_eq!(errno_of(mm.write(BASE + 2 * PAGE + 5, b"x")), errno::EFAULT, "a write copies nothing there");
    assert_eq!(read(&mm, BASE, 4), b"head");
    check(&mm);
}

/// Linux's `truncate_pagecache`: `unmap_mapping_range(.., even_cows = 1)`
/// from the first page wholly past the new end. Private mappings lose
/// their own copies of those pages too (copies of pages that no longer
/// exist): the next access is SIGBUS. A copy of the page holding the new
/// end stays. In a fork child, with its PTE tables shared or copied, the
/// same.
#[test]
fn truncation_unmaps_cache_pages_and_private_copies_past_the_end() {
    for policy in [ForkPolicy::CopyTables, ForkPolicy::SharedTables] {
        let m = machine();
        let f = filled(&m, 4);
        let mm = m.new_mm().unwrap();
        map_private(&mm, BASE, &f, 4 * PAGE, Prot::RW);
        assert_eq!(read(&mm, BASE + 3 * PAGE, 1), [4]);
        mm.write(BASE, b"head").unwrap();
        mm.write(BASE + 2 * PAGE, b"copy").unwrap();
        let child = mm.fork_with(policy).unwrap();
        child.write(BASE + PAGE, b"kid!").unwrap();
        f.truncate(PAGE / 2).unwrap();
        check(&mm);
        check(&child);
        let mut b = [0u8; 1];
        for (space, what) in [(&mm, "parent"), (&child, "child")] {
            for page in 1..4 {
                let at = BASE + page * PAGE;
                assert_eq!(space.phys(at), None, "{what} {policy:?}: page {page} still mapped");
                assert_eq!(space.read(at, &mut b), Err(Error::Bus { addr: at }), "{what} {policy:?}: page {page}");
            }
            assert_eq!(read(space, BASE, 4), b"head", "{what} {policy:?}: the copy of the last page stays");
        }
        check(&mm);
        check(&child);
    }
}

#[test]
fn fork_shares_cache_pages_and_cow_copies() {
    for policy in [ForkPolicy::CopyTables, ForkPolicy::SharedTables] {
        let m = machine();
        let f = filled(&m, 4);
        let parent = m.new_mm().unwrap();
        map_private(&parent, BASE, &f, 4 * PAGE, Prot::RW);
        assert_eq!(read(&parent, BASE, 1), [1]); // maps all four (fault-around)
        parent.write(BASE + PAGE, b"parent").unwrap(); // an anon_vma: fork copies
        let child = parent.fork_with(policy).unwrap();
        check(&child);
        assert_eq!(read(&child, BASE, 1), [1], "{policy:?}");
        assert_eq!(child.phys(BASE), parent.phys(BASE), "the cache page is shared ({policy:?})");
        assert_eq!(read(&child, BASE + PAGE, 6), b"parent");
        assert_eq!(child.phys(BASE + PAGE), parent.phys(BASE + PAGE), "the copy is COW-shared");
        child.write(BASE, b"child").unwrap();
        check(&child);
        assert_eq!(read(&parent, BASE, 1), [1], "the parent keeps the file's page");
        assert_eq!(pread(&f, 0, 1), [1]);
        parent.write(BASE + PAGE, b"PARENT").unwrap();
        assert_eq!(read(&child, BASE + PAGE, 6), b"parent");
        f.pwrite(2 * PAGE, b"both").unwrap();
        assert_eq!(read(&parent, BASE + 2 * PAGE, 4), b"both");
        assert_eq!(read(&child, BASE + 2 * PAGE, 4), b"both");
        // Truncation and reclaim reach the page in both spaces (a PTE
        // table shared at fork included).
        f.truncate(3 * PAGE).unwrap();
        assert_eq!(child.phys(BASE + 3 * PAGE), None);
        assert_eq!(parent.phys(BASE + 3 * PAGE), None);
        check(&parent);
        drop(child);
        check(&parent);
    }
}

fn no_swap(limit_pages: u64) -> Machine {
    Machine::new(Config {
        arena_bytes: 64 << 20,
        mem_limit: Some(limit_pages * PAGE),
        swap: SwapConfig::Off,
        cpu_caches: 1,
        prezero: false,
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn reclaim_unmaps_cache_pages_from_private_mappings() {
    let content: Vec<u8> = (0..8 * PAGE).map(|i| (i / PAGE) as u8 + 1).collect();
    let s = Scratch::new("reclaim", &content);
    let m = no_swap(64);
    let f = m.open_file(&s.0).unwrap();
    let mm = m.new_mm().unwrap();
    map_private(&mm, BASE, &f, 8 * PAGE, Prot::RW);
    assert_eq!(read(&mm, BASE, 8 * PAGE as usize), content);
    let child = mm.fork_with(ForkPolicy::SharedTables).unwrap();
    m.reclaim(64);
    assert_eq!(f.cached_pages(), 0, "every page is dropped");
    assert_eq!(mm.phys(BASE), None, "unmapped through the file's mappers");
    assert_eq!(child.phys(BASE + PAGE), None);
    check(&mm);
    assert_eq!(read(&mm, BASE, 8 * PAGE as usize), content, "read in again");
    assert_eq!(read(&child, BASE + PAGE, 1), [2]);
    check(&mm);
}

#[test]
fn reclaim_swaps_private_copies_out_as_anonymous_pages() {
    let dev = Arc::new(MemSwap::new(1 << 20).unwrap());
    let m = Machine::new(Config {
        arena_bytes: 64 << 20,
        mem_limit: Some(64 * PAGE),
        swap: SwapConfig::Device(dev),
        cpu_caches: 1,
        prezero: false,
        ..Config::default()
    })
    .unwrap();
    let f = filled(&m, 8);
    let mm = m.new_mm().unwrap();
    map_private(&mm, BASE, &f, 8 * PAGE, Prot::RW);
    for i in 0..8u64 {
        mm.write(BASE + i * PAGE, &[0xa0 + i as u8; 8]).unwrap();
    }
    m.reclaim(64);
    assert!(m.stats().swap_outs > 0, "copies went to swap");
    check(&mm);
    for i in 0..8u64 {
        assert_eq!(read(&mm, BASE + i * PAGE, 9), [[0xa0 + i as u8; 8].as_slice(), &[i as u8 + 1]].concat());
        assert_eq!(pread(&f, i * PAGE, 1), [i as u8 + 1], "the file never saw the copies");
    }
    check(&mm);
}

#[test]
fn dontneed_drops_copies_and_the_file_shows_again() {
    let m = machine();
    let f = filled(&m, 2);
    let mm = m.new_mm().unwrap();
    map_private(&mm, BASE, &f, 2 * PAGE, Prot::RW);
    mm.write(BASE, b"gone soon").unwrap();
    assert_eq!(read(&mm, BASE + PAGE, 1), [2]);
    mm.madvise(BASE, 2 * PAGE, Advice::DontNeed).unwrap();
    check(&mm);
    assert_eq!(mm.phys(BASE), None);
    assert_eq!(read(&mm, BASE, 4), [1; 4], "the file's contents, not zeros");
    assert_eq!(read(&mm, BASE + PAGE, 1), [2]);
    assert_eq!(mm.smaps(BASE).unwrap().anonymous, 0);
    // Linux refuses MADV_FREE and MADV_WIPEONFORK of file memory.
    assert_eq!(errno_of(mm.madvise(BASE, PAGE, Advice::Free)), errno::EINVAL);
    assert_eq!(errno_of(mm.madvise(BASE, PAGE, Advice::WipeOnFork)), errno::EINVAL);
    check(&mm);
}

#[test]
fn mremap_keeps_the_file_offset() {
    let m = machine();
    let f = filled(&m, 4);
    let mm = m.new_mm().unwrap();
    mm.mmap_file(BASE, 2 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed, &f, PAGE).unwrap();
    assert_eq!(read(&mm, BASE, 1), [2]);
    mm.write(BASE + PAGE, b"moved").unwrap();
    let at = mm.mremap(BASE, 2 * PAGE, 3 * PAGE, RemapFlags::MAYMOVE.union(RemapFlags::FIXED), OTHER).unwrap();
    assert_eq!(at, OTHER);
    check(&mm);
    assert_eq!(read(&mm, OTHER, 1), [2], "file page 1 stays at the start");
    assert_eq!(read(&mm, OTHER + PAGE, 5), b"moved");
    assert_eq!(read(&mm, OTHER + 2 * PAGE, 1), [4], "the grown part maps file page 3");
    f.pwrite(PAGE, b"later").unwrap();
    assert_eq!(read(&mm, OTHER, 5), b"later");
    check(&mm);
}

#[test]
fn smaps_counts_cache_pages_as_linux() {
    let s = Scratch::new("smaps", &[7u8; 4 * PAGE as usize]);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    assert_eq!(pread(&f, 0, 4 * PAGE as usize).len(), 4 * PAGE as usize); // all cached, clean
    let mm = m.new_mm().unwrap();
    map_private(&mm, BASE, &f, 4 * PAGE, Prot::RW);
    assert_eq!(read(&mm, BASE, 1), [7]); // maps all four
    mm.write(BASE + 3 * PAGE, b"dirty").unwrap();
    let s1 = mm.smaps(BASE).unwrap();
    assert_eq!((s1.rss, s1.pss, s1.anonymous), (16, 16, 4));
    assert_eq!((s1.private_clean, s1.private_dirty, s1.shared_clean, s1.shared_dirty), (12, 4, 0, 0));
    // Another space maps the file: its three cache pages become shared.
    let other = m.new_mm().unwrap();
    map_shared(&other, BASE, &f, 4 * PAGE);
    assert_eq!(read(&other, BASE, 1), [7]);
    let s2 = mm.smaps(BASE).unwrap();
    assert_eq!((s2.rss, s2.pss, s2.anonymous), (16, 10, 4));
    assert_eq!((s2.private_clean, s2.private_dirty, s2.shared_clean, s2.shared_dirty), (0, 4, 12, 0));
    check(&mm);
}

#[test]
fn futex_on_a_cache_page_keys_on_the_file_page() {
    for keys in [FutexKeys::Physical, FutexKeys::Linux] {
        let m = Machine::new(Config { arena_bytes: 64 << 20, futex_keys: keys, ..Config::default() }).unwrap();
        let f = m.memfd("futex", PAGE).unwrap();
        let mm = m.new_mm().unwrap();
        let sh = m.new_mm().unwrap();
        // Read-only: Linux keys the file page by its file and offset.
        map_private(&mm, BASE, &f, PAGE, Prot::READ);
        map_shared(&sh, BASE, &f, PAGE);
        let w = mm.futex_wait_start(BASE + 8, 0, u32::MAX).unwrap();
        check(&mm);
        assert_eq!(sh.futex_wake(BASE + 8, 1).unwrap(), 1, "{keys:?}: a wake through the file's page");
        drop(w);
        // A copy on write is the space's own: a wake through the file no
        // longer reaches a waiter on it.
        mm.mprotect(BASE, PAGE, Prot::RW).unwrap();
        mm.write(BASE, b"x").unwrap();
        let w = mm.futex_wait_start(BASE + 8, 0, u32::MAX).unwrap();
        assert_eq!(sh.futex_wake(BASE + 8, 1).unwrap(), 0, "{keys:?}");
        assert_eq!(mm.futex_wake(BASE + 8, 1).unwrap(), 1, "{keys:?}");
        drop(w);
        check(&mm);
    }
}

#[test]
fn private_file_vmas_merge_only_with_their_own_file() {
    let m = machine();
    let f = filled(&m, 4);
    let g = filled(&m, 4);
    let mm = m.new_mm().unwrap();
    mm.mmap_file(BASE, PAGE, Prot::RW, MapKind::Private, Placement::Fixed, &f, 0).unwrap();
    mm.mmap_file(BASE + PAGE, PAGE, Prot::RW, MapKind::Private, Placement::Fixed, &f, PAGE).unwrap();
    assert_eq!(mm.mappings().len(), 1, "contiguous in the file: one VMA");
    mm.mmap_file(BASE + 2 * PAGE, PAGE, Prot::RW, MapKind::Private, Placement::Fixed, &g, 2 * PAGE).unwrap();
    mm.mmap(BASE + 3 * PAGE, PAGE, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
    assert_eq!(mm.mappings().len(), 3, "another file, and anonymous memory, stay apart");
    assert_eq!(read(&mm, BASE + 2 * PAGE, 1), [3]);
    check(&mm);
}

#[test]
fn willneed_brings_the_files_swapped_pages_back() {
    let dev = Arc::new(MemSwap::new(1 << 20).unwrap());
    let m = Machine::new(Config {
        arena_bytes: 64 << 20,
        mem_limit: Some(64 * PAGE),
        swap: SwapConfig::Device(dev),
        cpu_caches: 1,
        prezero: false,
        ..Config::default()
    })
    .unwrap();
    let f = filled(&m, 8);
    let mm = m.new_mm().unwrap();
    map_private(&mm, BASE, &f, 8 * PAGE, Prot::RW);
    assert_eq!(read(&mm, BASE, 1), [1]);
    m.reclaim(64);
    assert_eq!(f.cached_pages(), 0, "the file's pages went to swap, unmapped from the private mapping");
    check(&mm);
    mm.madvise(BASE, 8 * PAGE, Advice::WillNeed).unwrap();
    assert_eq!(f.cached_pages(), 8, "back in the file's cache");
    assert_eq!(mm.phys(BASE), None, "not mapped by the advice");
    assert_eq!(read(&mm, BASE + 7 * PAGE, 1), [8]);
    check(&mm);
}
