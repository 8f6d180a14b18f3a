//! Files: in-memory (memfd) and host files with a page cache of arena
//! frames: pread/pwrite, ftruncate both ways, write-back, typed errors.

mod common;

use common::{errno_of, machine, read};
use softmm::reclaim::device::MemSwap;
use softmm::{
    errno, Advice, Config, Error, Machine, MapKind, Placement, Prot, SwapConfig, MS_ASYNC, MS_INVALIDATE, MS_SYNC,
};
use std::path::PathBuf;
use std::sync::Arc;

const PAGE: u64 = 4096;

/// A scratch host file holding `content`, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, content: &[u8]) -> Scratch {
        let p = std::env::temp_dir().join(format!("softmm-files-{}-{name}", std::process::id()));
        std::fs::write(&p, content).unwrap();
        Scratch(p)
    }
    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
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

#[test]
fn memfd_reads_zeros_and_holes_take_no_memory() {
    let m = machine();
    let f = m.memfd("zeros", 3 * PAGE).unwrap();
    assert_eq!(f.len(), 3 * PAGE);
    assert_eq!(pread(&f, 100, 5000), vec![0; 5000]);
    assert_eq!(f.cached_pages(), 0);
    m.check_invariants().unwrap();
}

#[test]
fn memfd_write_then_read_across_pages() {
    let m = machine();
    let f = m.memfd("rw", 3 * PAGE).unwrap();
    let data: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(f.pwrite(PAGE - 1000, &data).unwrap(), data.len());
    assert_eq!(pread(&f, PAGE - 1000, data.len()), data);
    assert_eq!(pread(&f, 0, 4), vec![0; 4]);
    assert_eq!(f.cached_pages(), 3, "pages 0..=2 were written");
    assert_eq!(f.len(), 3 * PAGE, "a write inside the file keeps its length");
    m.check_invariants().unwrap();
}

#[test]
fn reads_stop_at_the_end_of_the_file() {
    let m = machine();
    let f = m.memfd("short", 100).unwrap();
    f.pwrite(90, b"0123456789").unwrap();
    assert_eq!(pread(&f, 95, 50), b"56789");
    assert!(pread(&f, 100, 10).is_empty());
    assert!(pread(&f, 1 << 40, 10).is_empty());
}

#[test]
fn a_write_past_the_end_grows_the_file() {
    let m = machine();
    let f = m.memfd("grow", 0).unwrap();
    assert!(f.is_empty());
    f.pwrite(2 * PAGE + 10, b"xyz").unwrap();
    assert_eq!(f.len(), 2 * PAGE + 13);
    assert_eq!(pread(&f, 2 * PAGE + 8, 10), b"\0\0xyz");
    assert_eq!(f.cached_pages(), 1, "the hole before stays a hole");
    m.check_invariants().unwrap();
}

#[test]
fn truncate_down_drops_pages_and_zeroes_the_tail() {
    let m = machine();
    let f = m.memfd("trunc", 4 * PAGE).unwrap();
    f.pwrite(0, &vec![7u8; 4 * PAGE as usize]).unwrap();
    let before = m.stats().frames_in_use;
    assert_eq!(f.cached_pages(), 4);
    f.truncate(PAGE + 100).unwrap();
    assert_eq!(f.len(), PAGE + 100);
    assert_eq!(f.cached_pages(), 2);
    assert_eq!(m.stats().frames_in_use, before - 2, "the two pages past the end are freed");
    assert_eq!(pread(&f, PAGE + 90, 100), vec![7; 10]);
    // Growing again: what was cut off reads as zeros, the tail of the old
    // last page too.
    f.truncate(3 * PAGE).unwrap();
    assert_eq!(pread(&f, PAGE + 98, 4), [7, 7, 0, 0]);
    assert_eq!(pread(&f, 2 * PAGE, 10), vec![0; 10]);
    f.truncate(0).unwrap();
    assert_eq!(f.cached_pages(), 0);
    m.check_invariants().unwrap();
}

#[test]
fn handles_share_one_cache() {
    let m = machine();
    let a = m.memfd("shared", PAGE).unwrap();
    let b = a.clone();
    a.pwrite(10, b"seen").unwrap();
    assert_eq!(pread(&b, 10, 4), b"seen");
    drop(a);
    assert_eq!(pread(&b, 10, 4), b"seen");
}

#[test]
fn bad_offsets_and_sizes_are_linux_errnos_and_change_nothing() {
    let m = machine();
    let f = m.memfd("big", PAGE).unwrap();
    f.pwrite(0, b"keep").unwrap();
    // Offsets are signed (`off_t`): negative, or a range ending past the
    // largest offset, is EINVAL (rw_verify_area), as is a negative length.
    assert_eq!(errno_of(f.pwrite(u64::MAX - 1, b"abc")), errno::EINVAL);
    assert_eq!(errno_of(f.pwrite(i64::MAX as u64, b"a")), errno::EINVAL);
    assert_eq!(errno_of(f.pread(i64::MAX as u64 - 1, &mut [0; 2])), errno::EINVAL);
    assert_eq!(f.pread(i64::MAX as u64, &mut []).unwrap(), 0);
    assert_eq!(errno_of(f.truncate(u64::MAX)), errno::EINVAL);
    assert_eq!(errno_of(m.memfd("huge", u64::MAX)), errno::EFBIG);
    assert_eq!(f.len(), PAGE);
    assert_eq!(pread(&f, 0, 4), b"keep");
}

#[test]
fn host_file_reads_its_content_through_the_cache() {
    let content: Vec<u8> = (0..10000u32).map(|i| (i % 253) as u8).collect();
    let s = Scratch::new("read", &content);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    assert_eq!(f.len(), 10000);
    assert_eq!(pread(&f, 0, 20000), content);
    assert_eq!(f.cached_pages(), 3);
    m.check_invariants().unwrap();
}

#[test]
fn host_file_sees_writes_after_sync() {
    let s = Scratch::new("sync", &[1u8; 5000]);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    f.pwrite(4095, b"ab").unwrap();
    assert_eq!(pread(&f, 4094, 4), [1, b'a', b'b', 1]);
    assert_eq!(s.bytes()[4095], 1, "a dirty page reaches the host file on write-back");
    f.sync().unwrap();
    let mut want = vec![1u8; 5000];
    want[4095] = b'a';
    want[4096] = b'b';
    assert_eq!(s.bytes(), want, "write-back writes no byte past the end of the file");
}

#[test]
fn host_file_grows_and_shrinks() {
    let s = Scratch::new("size", b"hello world");
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    f.pwrite(PAGE + 1, b"!").unwrap();
    assert_eq!(std::fs::metadata(&s.0).unwrap().len(), PAGE + 2);
    f.sync().unwrap();
    let b = s.bytes();
    assert_eq!((&b[..11], b[PAGE as usize + 1]), (&b"hello world"[..], b'!'));
    f.truncate(5).unwrap();
    assert_eq!(f.len(), 5);
    assert_eq!(s.bytes(), b"hello");
    f.truncate(8).unwrap();
    assert_eq!(pread(&f, 0, 100), b"hello\0\0\0");
    f.sync().unwrap();
    assert_eq!(s.bytes(), b"hello\0\0\0");
    m.check_invariants().unwrap();
}

#[test]
fn the_last_handle_writes_dirty_pages_back() {
    let s = Scratch::new("drop", b"0000");
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    f.pwrite(1, b"xy").unwrap();
    drop(f);
    assert_eq!(s.bytes(), b"0xy0");
}

#[test]
fn opening_a_missing_file_says_so() {
    let m = machine();
    let missing = std::env::temp_dir().join(format!("softmm-files-{}-missing", std::process::id()));
    let e = m.open_file(&missing).unwrap_err();
    assert_eq!(e.errno(), libc_enoent());
    assert!(matches!(&e, Error::FileIo { what, .. } if what.contains("softmm-files")), "{e}");
}

fn libc_enoent() -> i32 {
    std::io::Error::from(std::io::ErrorKind::NotFound).raw_os_error().unwrap_or(2)
}

#[test]
fn memfd_pages_go_to_swap_and_come_back() {
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
    let f = m.memfd("swapped", 8 * PAGE).unwrap();
    for i in 0..8u64 {
        f.pwrite(i * PAGE, &[i as u8 + 1; 16]).unwrap();
    }
    m.reclaim(64);
    assert!(f.cached_pages() < 8, "reclaim took some of the file's pages");
    for i in 0..8u64 {
        assert_eq!(pread(&f, i * PAGE, 16), vec![i as u8 + 1; 16]);
    }
    assert_eq!(f.cached_pages(), 8);
    m.check_invariants().unwrap();
}

const BASE: u64 = 0x1000_0000;

fn map_file(mm: &softmm::Mm, f: &softmm::File, len: u64, offset: u64) -> u64 {
    mm.mmap_file(BASE, len, Prot::RW, MapKind::Shared, Placement::Fixed, f, offset).unwrap()
}

#[test]
fn a_shared_mapping_and_the_file_see_the_same_pages() {
    let m = machine();
    let f = m.memfd("map", 2 * PAGE).unwrap();
    let a = m.new_mm().unwrap();
    let b = m.new_mm().unwrap();
    map_file(&a, &f, 2 * PAGE, 0);
    map_file(&b, &f, 2 * PAGE, 0);
    a.write(BASE + 10, b"via a").unwrap();
    assert_eq!(pread(&f, 10, 5), b"via a");
    assert_eq!(read(&b, BASE + 10, 5), b"via a");
    f.pwrite(PAGE + 7, b"via file").unwrap();
    assert_eq!(read(&a, BASE + PAGE + 7, 8), b"via file");
    assert_eq!(a.phys(BASE), b.phys(BASE), "one cache page, two mappings");
    a.check_invariants().unwrap();
    m.check_invariants().unwrap();
}

#[test]
fn a_mapping_from_an_offset_maps_the_pages_from_there() {
    let content: Vec<u8> = (0..3 * PAGE).map(|i| (i / PAGE) as u8 + 1).collect();
    let s = Scratch::new("offset", &content);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, 2 * PAGE, PAGE);
    assert_eq!(read(&mm, BASE, 1), [2]);
    assert_eq!(read(&mm, BASE + PAGE, 1), [3]);
    m.check_invariants().unwrap();
}

#[test]
fn writes_through_a_host_file_mapping_reach_the_file_after_unmap_and_sync() {
    let s = Scratch::new("mapwrite", &[5u8; 100]);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, PAGE, 0);
    assert_eq!(read(&mm, BASE + 98, 4), [5, 5, 0, 0], "the tail of the last page reads as zeros");
    mm.write(BASE + 1, b"ok").unwrap();
    mm.write(BASE + 200, b"tail").unwrap(); // within the last page, past the end
    mm.munmap(BASE, PAGE).unwrap();
    f.sync().unwrap();
    let mut want = vec![5u8; 100];
    want[1..3].copy_from_slice(b"ok");
    assert_eq!(s.bytes(), want, "only bytes before the end of the file are written back");
    m.check_invariants().unwrap();
}

#[test]
fn a_page_wholly_past_the_end_is_sigbus() {
    let m = machine();
    let f = m.memfd("bus", PAGE + 10).unwrap();
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, 3 * PAGE, 0);
    assert_eq!(read(&mm, BASE + PAGE + 100, 2), [0, 0], "the last page is mapped whole");
    let mut b = [0u8; 1];
    assert_eq!(mm.read(BASE + 2 * PAGE, &mut b), Err(Error::Bus { addr: BASE + 2 * PAGE }));
    assert_eq!(errno_of(mm.write(BASE + 2 * PAGE + 5, b"x")), errno::EFAULT);
    mm.check_invariants().unwrap();
}

#[test]
fn truncation_unmaps_pages_past_the_end_from_every_mapping() {
    let m = machine();
    let f = m.memfd("shrink", 3 * PAGE).unwrap();
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, 3 * PAGE, 0);
    mm.write(BASE, &vec![9u8; 3 * PAGE as usize]).unwrap();
    let before = m.stats().frames_in_use;
    f.truncate(PAGE / 2).unwrap();
    assert_eq!(mm.phys(BASE + PAGE), None, "unmapped");
    assert_eq!(m.stats().frames_in_use, before - 2, "and freed");
    assert_eq!(read(&mm, BASE + PAGE / 2 - 1, 2), [9, 0], "the tail of the last page is zeroed");
    let mut b = [0u8; 1];
    assert_eq!(mm.read(BASE + PAGE, &mut b), Err(Error::Bus { addr: BASE + PAGE }));
    mm.check_invariants().unwrap();
    f.truncate(3 * PAGE).unwrap();
    assert_eq!(read(&mm, BASE + 2 * PAGE, 4), [0; 4], "grown again: zeros");
    mm.check_invariants().unwrap();
    m.check_invariants().unwrap();
}

#[test]
fn bad_file_mappings_are_refused() {
    let m = machine();
    let f = m.memfd("bad", PAGE).unwrap();
    let mm = m.new_mm().unwrap();
    let map = |kind, offset| mm.mmap_file(BASE, PAGE, Prot::RW, kind, Placement::Fixed, &f, offset);
    assert_eq!(errno_of(map(MapKind::Shared, 100)), errno::EINVAL);
    assert_eq!(errno_of(map(MapKind::Shared, !0xfff)), errno::EOVERFLOW);
    assert_eq!(errno_of(map(MapKind::Private, 100)), errno::EINVAL);
    assert!(mm.mappings().is_empty(), "nothing was mapped");
}

#[test]
fn the_file_outlives_its_handles_while_mapped() {
    let m = machine();
    let f = m.memfd("kept", PAGE).unwrap();
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, PAGE, 0);
    f.pwrite(0, b"still").unwrap();
    drop(f);
    assert_eq!(read(&mm, BASE, 5), b"still");
    mm.check_invariants().unwrap();
}

#[test]
fn msync_writes_a_live_mapping_back_and_keeps_tracking_it() {
    let s = Scratch::new("msync", &[0u8; 2 * PAGE as usize]);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, 2 * PAGE, 0);
    let mut acc = mm.accessor();
    acc.write(BASE + 5, b"one").unwrap();
    mm.msync(BASE, 2 * PAGE, MS_SYNC).unwrap();
    assert_eq!(&s.bytes()[5..8], b"one");
    // The accessor's cached translation must not let a write go unseen.
    acc.write(BASE + 5, b"two").unwrap();
    mm.msync(BASE, PAGE, MS_SYNC).unwrap();
    assert_eq!(&s.bytes()[5..8], b"two");
    acc.write(BASE + PAGE, b"three").unwrap();
    f.sync().unwrap();
    assert_eq!(&s.bytes()[PAGE as usize..PAGE as usize + 5], b"three", "fsync harvests mappings too");
    mm.check_invariants().unwrap();
    m.check_invariants().unwrap();
}

#[test]
fn msync_of_part_of_a_file_writes_only_that_part() {
    let s = Scratch::new("msync-part", &[0u8; 2 * PAGE as usize]);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, 2 * PAGE, 0);
    mm.write(BASE, b"a").unwrap();
    mm.write(BASE + PAGE, b"b").unwrap();
    mm.msync(BASE + PAGE, 1, MS_SYNC).unwrap();
    let b = s.bytes();
    assert_eq!((b[0], b[PAGE as usize]), (0, b'b'));
}

#[test]
fn msync_errors_are_linuxs() {
    let s = Scratch::new("msync-err", &[0u8; PAGE as usize]);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, PAGE, 0);
    assert_eq!(errno_of(mm.msync(BASE, PAGE, 8)), errno::EINVAL);
    assert_eq!(errno_of(mm.msync(BASE + 1, PAGE, MS_SYNC)), errno::EINVAL);
    assert_eq!(errno_of(mm.msync(BASE, PAGE, MS_SYNC | MS_ASYNC)), errno::EINVAL);
    assert_eq!(errno_of(mm.msync(!0xfff, 2 * PAGE, MS_SYNC)), errno::ENOMEM);
    mm.msync(BASE, 0, MS_SYNC).unwrap();
    mm.msync(BASE, PAGE, MS_ASYNC).unwrap();
    mm.msync(BASE, PAGE, MS_INVALIDATE).unwrap();
    // A hole: ENOMEM, but the mapped part is written back all the same.
    mm.write(BASE, b"z").unwrap();
    assert_eq!(errno_of(mm.msync(BASE - PAGE, 2 * PAGE, MS_SYNC)), errno::ENOMEM);
    assert_eq!(s.bytes()[0], b'z');
    assert_eq!(errno_of(mm.msync(BASE - PAGE, 2 * PAGE, MS_ASYNC)), errno::ENOMEM);
    assert_eq!(errno_of(mm.msync(BASE, 2 * PAGE, MS_SYNC)), errno::ENOMEM, "a hole at the end");
    mm.mlock(BASE, PAGE).unwrap();
    assert_eq!(errno_of(mm.msync(BASE, PAGE, MS_INVALIDATE)), errno::EBUSY);
    mm.msync(BASE, PAGE, MS_SYNC).unwrap();
    // Private anonymous memory: nothing to write, no error.
    let anon = mm.mmap(0x2000_0000, PAGE, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
    mm.msync(anon, PAGE, MS_SYNC).unwrap();
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
fn reclaim_drops_clean_file_pages_without_swap() {
    let content: Vec<u8> = (0..8 * PAGE).map(|i| (i % 241) as u8).collect();
    let s = Scratch::new("reclaim-clean", &content);
    let m = no_swap(64);
    let f = m.open_file(&s.0).unwrap();
    assert_eq!(pread(&f, 0, content.len()), content);
    assert_eq!(f.cached_pages(), 8);
    m.reclaim(64);
    assert_eq!(f.cached_pages(), 0, "clean pages are dropped");
    assert_eq!(m.stats().file_pages_dropped, 8);
    assert_eq!(m.stats().swap_outs, 0);
    assert_eq!(s.bytes(), content, "nothing was written");
    assert_eq!(pread(&f, 0, content.len()), content, "and read in again");
    m.check_invariants().unwrap();
}

#[test]
fn reclaim_writes_dirty_file_pages_back_first() {
    let s = Scratch::new("reclaim-dirty", &[0u8; 3 * PAGE as usize]);
    let m = no_swap(64);
    let f = m.open_file(&s.0).unwrap();
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, 3 * PAGE, 0);
    f.pwrite(10, b"by pwrite").unwrap();
    mm.write(BASE + PAGE + 10, b"by a store").unwrap();
    m.reclaim(64);
    assert_eq!(f.cached_pages(), 0);
    assert_eq!(mm.phys(BASE + PAGE), None, "unmapped through the object's mappers");
    let b = s.bytes();
    assert_eq!(&b[10..19], b"by pwrite");
    assert_eq!(&b[PAGE as usize + 10..PAGE as usize + 20], b"by a store");
    assert_eq!(read(&mm, BASE + PAGE + 10, 10), b"by a store", "faulted in again from the file");
    mm.check_invariants().unwrap();
    m.check_invariants().unwrap();
}

#[test]
fn a_file_larger_than_the_memory_limit_reads_and_writes_whole() {
    let n = 48 * PAGE as usize;
    let s = Scratch::new("reclaim-big", &vec![3u8; n]);
    let m = no_swap(16);
    let f = m.open_file(&s.0).unwrap();
    // Made first: `Machine::new_mm` does not reclaim for its page table.
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, n as u64, 0);
    assert_eq!(pread(&f, 0, n), vec![3u8; n]);
    let data: Vec<u8> = (0..n).map(|i| (i % 239) as u8).collect();
    assert_eq!(f.pwrite(0, &data).unwrap(), n);
    assert_eq!(pread(&f, 0, n), data);
    f.sync().unwrap();
    assert_eq!(s.bytes(), data);
    assert_eq!(read(&mm, BASE, n), data, "faults reclaim file pages too");
    mm.write(BASE, &vec![1u8; n]).unwrap();
    mm.msync(BASE, n as u64, MS_SYNC).unwrap();
    assert_eq!(s.bytes(), vec![1u8; n]);
    mm.check_invariants().unwrap();
    m.check_invariants().unwrap();
}

#[test]
fn a_read_fault_maps_cached_neighbours_and_reads_only_its_own_page() {
    let s = Scratch::new("around", &[4u8; 32 * PAGE as usize]);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    let mm = m.new_mm().unwrap();
    map_file(&mm, &f, 32 * PAGE, 0);
    // Nothing cached: a fault reads its own page only (no readahead).
    assert_eq!(read(&mm, BASE + 20 * PAGE, 1), [4]);
    assert_eq!(f.cached_pages(), 1);
    assert_eq!(mm.phys(BASE + 21 * PAGE), None);
    // All cached: a read fault maps the 64 KiB window around it.
    assert_eq!(pread(&f, 0, 32 * PAGE as usize).len(), 32 * PAGE as usize);
    assert_eq!(read(&mm, BASE + 5 * PAGE, 1), [4]);
    for p in 0..16 {
        assert!(mm.phys(BASE + p * PAGE).is_some(), "page {p} of the window is mapped");
    }
    assert_eq!(mm.phys(BASE + 16 * PAGE), None, "past the window");
    mm.check_invariants().unwrap();
}

#[test]
fn stores_past_the_end_never_become_file_content() {
    for grow_by_write in [false, true] {
        let s = Scratch::new(&format!("tail-{grow_by_write}"), &[7u8; 100]);
        let m = machine();
        let f = m.open_file(&s.0).unwrap();
        let mm = m.new_mm().unwrap();
        map_file(&mm, &f, PAGE, 0);
        mm.write(BASE + 100, b"junk").unwrap(); // the tail of the last page
        assert_eq!(read(&mm, BASE + 100, 4), b"junk", "the mapping sees its own store");
        if grow_by_write {
            f.pwrite(200, b"x").unwrap();
        } else {
            f.truncate(200).unwrap();
        }
        assert_eq!(pread(&f, 98, 6), [7, 7, 0, 0, 0, 0], "the file grew by zeros");
        assert_eq!(read(&mm, BASE + 100, 4), [0; 4]);
        f.sync().unwrap();
        assert_eq!(&s.bytes()[98..104], [7, 7, 0, 0, 0, 0]);
    }
}

/// MADV_REMOVE punches a hole in the file (Linux: fallocate PUNCH_HOLE):
/// the pages read back as zeros through every mapping, through pread and
/// in the host file itself, not as the file's old bytes read in again. A
/// private mapping of the file may not punch (EACCES, as Linux).
#[test]
fn madv_remove_punches_a_hole_in_a_host_file() {
    let s = Scratch::new("punch", &[0x5a; 4 * PAGE as usize]);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    let mm = m.new_mm().unwrap();
    let a = mm.mmap_file(0x1000_0000, 4 * PAGE, Prot::RW, MapKind::Shared, Placement::Fixed, &f, 0).unwrap();
    assert_eq!(read(&mm, a + PAGE, 2), [0x5a, 0x5a]);
    mm.madvise(a + PAGE, 2 * PAGE, softmm::Advice::Remove).unwrap();
    m.check_invariants().unwrap();
    assert_eq!(read(&mm, a + PAGE, 2), [0, 0], "a punched page read back the file's old bytes");
    assert_eq!(read(&mm, a + 3 * PAGE - 1, 1), [0]);
    assert_eq!(read(&mm, a, 1), [0x5a]);
    assert_eq!(read(&mm, a + 3 * PAGE, 1), [0x5a]);
    assert_eq!(pread(&f, PAGE, 3), [0, 0, 0]);
    f.sync().unwrap();
    let host = s.bytes();
    assert_eq!(host.len(), 4 * PAGE as usize, "the punch changed the size");
    assert!(host[PAGE as usize..3 * PAGE as usize].iter().all(|&b| b == 0), "the host file keeps the punched bytes");
    assert_eq!((host[0], host[3 * PAGE as usize]), (0x5a, 0x5a));
    let p = mm.mmap_file(0x2000_0000, PAGE, Prot::RW, MapKind::Private, Placement::Fixed, &f, 0).unwrap();
    assert_eq!(errno_of(mm.madvise(p, PAGE, softmm::Advice::Remove)), errno::EACCES);
    m.check_invariants().unwrap();
}

#[test]
fn a_store_through_one_mapping_of_a_host_file_dirties_the_page_for_all() {
    // Host-file mappings are write-notified: a read fault maps the page
    // read-only, the first store faults and dirties the page itself, so a
    // space that only read it counts it dirty too; write-back cleans it
    // and write-protects it again, so the next store dirties it again.
    let s = Scratch::new("notify", &[7u8; 2 * PAGE as usize]);
    let m = machine();
    let f = m.open_file(&s.0).unwrap();
    f.sync().unwrap();
    let a = m.new_mm().unwrap();
    let b = m.new_mm().unwrap();
    map_file(&a, &f, 2 * PAGE, 0);
    map_file(&b, &f, 2 * PAGE, 0);
    assert_eq!(read(&a, BASE, 1), [7]);
    assert_eq!(read(&b, BASE, 1), [7]);
    a.write(BASE, b"x").unwrap();
    let dirty = |mm: &softmm::Mm| {
        let s = mm.smaps(BASE).unwrap();
        s.shared_dirty + s.private_dirty
    };
    assert_eq!((dirty(&a), dirty(&b)), (4, 4), "the page is dirty in both");
    a.msync(BASE, 2 * PAGE, softmm::MS_SYNC).unwrap();
    assert_eq!((dirty(&a), dirty(&b)), (0, 0));
    assert_eq!(s.bytes()[0], b'x');
    b.write(BASE + 1, b"y").unwrap();
    assert_eq!((dirty(&a), dirty(&b)), (4, 4), "a store after write-back dirties it again");
    assert_eq!(a.file_offset(BASE + PAGE + 5, &f), Some(PAGE));
    m.check_invariants().unwrap();
}

/// MADV_PAGEOUT of file pages mapped only here (Linux's
/// `madvise_cold_or_pageout_pte_range` then `reclaim_pages`, no swap
/// needed): a clean cached page is unmapped and dropped; a dirty page of a
/// shared mapping is unmapped but stays in the cache, still dirty (only
/// background write-back writes file pages); a page mapped twice stays; a
/// memfd's page is unmapped and, without swap, stays in the file.
#[test]
fn pageout_unmaps_file_pages_mapped_once() {
    let m = Machine::new(Config { arena_bytes: 32 << 20, ..Config::default() }).unwrap();
    let s = Scratch::new("pageout", &[0x62; 5 * PAGE as usize]);
    let f = m.open_file(&s.0).unwrap();
    let mm = m.new_mm().unwrap();
    let (shared, private) = (0x1000_0000, 0x2000_0000);
    mm.mmap_file(shared, 4 * PAGE, Prot::RW, MapKind::Shared, Placement::Fixed, &f, 0).unwrap();
    mm.mmap_file(private, 2 * PAGE, Prot::READ, MapKind::Private, Placement::Fixed, &f, 3 * PAGE).unwrap();
    mm.write(shared, b"ab").unwrap();
    let mut b = [0u8; 1];
    for i in 1..4 {
        mm.read(shared + i * PAGE, &mut b).unwrap(); // page 3: also mapped privately, below
    }
    mm.read(private, &mut b).unwrap(); // page 3
    mm.read(private + PAGE, &mut b).unwrap(); // page 4, through the private mapping only
    let rss = |at| mm.smaps(at).unwrap().rss;
    assert_eq!((rss(shared), rss(private)), (16, 8));
    mm.madvise(shared, 4 * PAGE, Advice::PageOut).unwrap();
    mm.madvise(private, 2 * PAGE, Advice::PageOut).unwrap();
    mm.check_invariants().unwrap();
    // Shared: pages 0-2 went; page 3 is mapped privately as well. Private:
    // page 4 went, page 3 stays.
    assert_eq!((rss(shared), rss(private)), (4, 4));
    assert_eq!(s.bytes()[..2], [0x62, 0x62], "PAGEOUT writes nothing back");
    let mut two = [0u8; 2];
    mm.read(shared, &mut two).unwrap();
    assert_eq!(&two, b"ab");
    let sm = mm.smaps(shared).unwrap();
    assert_eq!(sm.private_dirty + sm.shared_dirty, 4, "the written page came back dirty from the cache");
    mm.msync(shared, 4 * PAGE, MS_SYNC).unwrap();
    assert_eq!(&s.bytes()[..2], b"ab");

    let memfd = m.memfd("pageout", 2 * PAGE).unwrap();
    let at = 0x3000_0000;
    mm.mmap_file(at, 2 * PAGE, Prot::RW, MapKind::Shared, Placement::Fixed, &memfd, 0).unwrap();
    mm.fill(at, 2 * PAGE as usize, 0x33).unwrap();
    mm.madvise(at, 2 * PAGE, Advice::PageOut).unwrap();
    assert_eq!(rss(at), 0, "unmapped");
    mm.read(at + PAGE, &mut b).unwrap();
    assert_eq!(b[0], 0x33, "kept in the memfd without swap");
    mm.check_invariants().unwrap();
}
