//! mlock, munlock, mlockall, MAP_LOCKED and MAP_POPULATE: VMA flags that
//! split and merge, populating as Linux does, `Locked:` in smaps, no lock
//! across fork, and reclaim that never takes a locked page.

mod common;
use common::*;
use softmm::errno::{EAGAIN, EINVAL, ENOMEM};
use softmm::reclaim::device::{FaultySwap, MemSwap};
use softmm::{
    Config, GuestWords, Machine, MapFlags, MapKind, Mm, Placement, Prot, SwapConfig, MCL_CURRENT, MCL_FUTURE,
    MCL_ONFAULT, MLOCK_ONFAULT, ZERO_FRAME,
};
use std::sync::Arc;

const A: u64 = 0x1000_0000;
const PAGE: u64 = 4096;

fn locked(mm: &Mm, addr: u64) -> u64 {
    mm.smaps(addr).expect("a VMA").locked
}

fn vmas(mm: &Mm) -> usize {
    mm.maps().len()
}

#[test]
fn mlock_populates_and_munlock_merges_back() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    map(&mm, A, 8 * PAGE, Prot::RW, MapKind::Private);
    mm.mlock(A + 2 * PAGE, 2 * PAGE).unwrap();
    assert_eq!(vmas(&mm), 3);
    assert_eq!(locked(&mm, A + 2 * PAGE), 8);
    assert_eq!(locked(&mm, A), 0);
    // Writable private memory is faulted in for writing: own frames.
    assert!(mm.phys(A + 2 * PAGE).is_some_and(|f| f != ZERO_FRAME));
    assert_eq!(mm.phys(A), None);
    mm.munlock(A, 8 * PAGE).unwrap();
    assert_eq!(vmas(&mm), 1);
    assert_eq!(locked(&mm, A + 2 * PAGE), 0);
    check(&mm);
}

#[test]
fn mlock2_onfault_locks_without_faulting() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    map(&mm, A, 4 * PAGE, Prot::RW, MapKind::Private);
    assert_eq!(mm.mlock2(A, PAGE, 2).unwrap_err().errno(), EINVAL);
    mm.mlock2(A, 4 * PAGE, MLOCK_ONFAULT).unwrap();
    assert_eq!(mm.phys(A), None, "nothing faulted in");
    assert_eq!(locked(&mm, A), 0);
    mm.write(A, b"x").unwrap();
    assert_eq!(locked(&mm, A), 4, "a faulted page counts once it is there");
    // A plain mlock over it drops lock-on-fault (a different VMA flag set,
    // so the pieces split) and faults the rest in.
    mm.mlock(A + 2 * PAGE, 2 * PAGE).unwrap();
    assert_eq!(vmas(&mm), 2);
    assert_eq!(locked(&mm, A + 2 * PAGE), 8);
    check(&mm);
}

#[test]
fn mlockall_current_future_and_munlockall() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    for bad in [0, MCL_ONFAULT, 8, MCL_CURRENT | 16] {
        assert_eq!(mm.mlockall(bad).unwrap_err().errno(), EINVAL, "flags {bad}");
    }
    map(&mm, A, 2 * PAGE, Prot::RW, MapKind::Private);
    map(&mm, A + 4 * PAGE, 2 * PAGE, Prot::READ, MapKind::Shared);
    map(&mm, A + 8 * PAGE, PAGE, Prot::NONE, MapKind::Private);
    mm.mlockall(MCL_CURRENT).unwrap();
    assert_eq!(locked(&mm, A), 8);
    assert_eq!(locked(&mm, A + 4 * PAGE), 8, "shared pages faulted in for reading");
    // Not future: a new mapping is not locked.
    map(&mm, A + 16 * PAGE, PAGE, Prot::RW, MapKind::Private);
    assert_eq!(mm.phys(A + 16 * PAGE), None);
    mm.mlockall(MCL_FUTURE).unwrap();
    map(&mm, A + 20 * PAGE, PAGE, Prot::RW, MapKind::Private);
    assert_eq!(locked(&mm, A + 20 * PAGE), 4, "locked and faulted in at mmap");
    // A fork's child inherits neither the locks nor MCL_FUTURE.
    let c = mm.fork().unwrap();
    assert_eq!(locked(&c, A), 0);
    map(&c, A + 24 * PAGE, PAGE, Prot::RW, MapKind::Private);
    assert_eq!(c.phys(A + 24 * PAGE), None);
    mm.mlockall(MCL_FUTURE | MCL_ONFAULT).unwrap();
    map(&mm, A + 28 * PAGE, PAGE, Prot::RW, MapKind::Private);
    assert_eq!(mm.phys(A + 28 * PAGE), None, "lock on fault: not faulted in");
    mm.munlockall().unwrap();
    assert!(mm.smaps_all().iter().all(|s| s.locked == 0));
    map(&mm, A + 32 * PAGE, PAGE, Prot::RW, MapKind::Private);
    assert_eq!(mm.phys(A + 32 * PAGE), None);
    check(&mm);
}

#[test]
fn map_locked_and_map_populate() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    mm.mmap_with(A, 2 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed, MapFlags::POPULATE).unwrap();
    assert!(mm.phys(A + PAGE).is_some_and(|f| f != ZERO_FRAME));
    assert_eq!(locked(&mm, A), 0);
    mm.mmap_with(A + 2 * PAGE, 2 * PAGE, Prot::READ, MapKind::Private, Placement::Fixed, MapFlags::LOCKED).unwrap();
    assert_eq!(mm.phys(A + 2 * PAGE), Some(ZERO_FRAME), "read-only: the zero frame");
    assert_eq!(vmas(&mm), 2);
    let both = MapFlags::LOCKED.union(MapFlags::POPULATE);
    mm.mmap_with(A + 4 * PAGE, PAGE, Prot::NONE, MapKind::Private, Placement::Fixed, both).unwrap();
    assert_eq!(mm.phys(A + 4 * PAGE), None, "PROT_NONE: populating fails, mmap does not");
    check(&mm);
}

#[test]
fn mlock_errors_change_what_linux_changes() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    map(&mm, A, 2 * PAGE, Prot::RW, MapKind::Private);
    map(&mm, A + 3 * PAGE, PAGE, Prot::RW, MapKind::Private);
    assert_eq!(mm.mlock(A - PAGE, 2 * PAGE).unwrap_err().errno(), ENOMEM);
    assert_eq!(vmas(&mm), 2, "a hole at the start changes nothing");
    assert_eq!(mm.mlock(A + PAGE, 4 * PAGE).unwrap_err().errno(), ENOMEM);
    assert_eq!(vmas(&mm), 3, "locked up to the hole");
    assert_eq!(locked(&mm, A + PAGE), 0, "but not faulted in");
    assert_eq!(mm.mlock(A + 0x2000, u64::MAX - 0xfff).unwrap_err().errno(), EINVAL);
    assert_eq!(mm.munlock(A + 0x2000, u64::MAX - 0xfff).unwrap_err().errno(), EINVAL);
    mm.mlock(A, 0).unwrap();
    mm.mlock(A, u64::MAX).unwrap(); // PAGE_ALIGN wraps to an empty range
                                    // PROT_NONE: locked, not faulted in, ENOMEM.
    map(&mm, A + 8 * PAGE, PAGE, Prot::NONE, MapKind::Private);
    assert_eq!(mm.mlock(A + 8 * PAGE, PAGE).unwrap_err().errno(), ENOMEM);
    check(&mm);
}

fn limited(limit_pages: u64) -> Machine {
    let dev = Arc::new(FaultySwap::new(MemSwap::new(16 << 20).expect("mem swap")));
    Machine::new(Config {
        arena_bytes: 64 << 20,
        mem_limit: Some(limit_pages * PAGE),
        swap: SwapConfig::Device(dev),
        cpu_caches: 1,
        prezero: false,
        background_reclaim: false,
        ..Config::default()
    })
    .expect("machine")
}

#[test]
fn reclaim_never_takes_a_locked_page() {
    for kind in [MapKind::Private, MapKind::Shared] {
        let m = limited(64);
        let mm = m.new_mm().unwrap();
        map(&mm, A, 16 * PAGE, Prot::RW, kind);
        for i in 0..16 {
            mm.write(A + i * PAGE, &[i as u8 + 1]).unwrap();
        }
        mm.mlock(A, 16 * PAGE).unwrap();
        let frames: Vec<_> = (0..16).map(|i| mm.phys(A + i * PAGE)).collect();
        // Four times the limit elsewhere: reclaim swaps those out.
        let other = A + (1 << 20);
        map(&mm, other, 256 * PAGE, Prot::RW, MapKind::Private);
        for i in 0..256 {
            mm.write(other + i * PAGE, &[7]).unwrap();
        }
        assert!(mm.smaps(other).unwrap().swap > 0, "{kind:?}: the unlocked pages were swapped");
        let now: Vec<_> = (0..16).map(|i| mm.phys(A + i * PAGE)).collect();
        assert_eq!(now, frames, "{kind:?}: locked pages stay in their frames");
        assert_eq!(mm.smaps(A).unwrap().swap, 0);
        assert_eq!(locked(&mm, A), 64);
        // Unlocked, they may go.
        mm.munlock(A, 16 * PAGE).unwrap();
        for i in 0..256 {
            mm.write(other + i * PAGE, &[8]).unwrap();
        }
        assert!(mm.smaps(A).unwrap().swap > 0, "{kind:?}: unlocked pages are reclaimable again");
        assert_eq!(read(&mm, A + 5 * PAGE, 1), [6]);
        check(&mm);
    }
}

#[test]
fn locking_more_than_memory_fails_with_eagain() {
    let m = limited(32);
    let mm = m.new_mm().unwrap();
    map(&mm, A, 64 * PAGE, Prot::RW, MapKind::Private);
    assert_eq!(mm.mlock(A, 64 * PAGE).unwrap_err().errno(), EAGAIN);
    mm.munlock(A, 64 * PAGE).unwrap();
    check(&mm);
}

#[test]
fn extreme_arguments_never_panic() {
    let m = machine();
    let mm = m.new_mm().unwrap();
    map(&mm, A, PAGE, Prot::RW, MapKind::Private);
    let top = softmm::TASK_SIZE;
    for addr in [0, 1, A, top - PAGE, top, top + 1, u64::MAX - PAGE, u64::MAX] {
        for len in [0, 1, PAGE, top, u64::MAX - PAGE, u64::MAX] {
            let _ = mm.mlock(addr, len);
            let _ = mm.mlock2(addr, len, MLOCK_ONFAULT);
            let _ = mm.munlock(addr, len);
            let flags = [MapFlags::LOCKED, MapFlags::POPULATE, MapFlags::GROWSDOWN];
            for f in flags {
                let _ = mm.mmap_with(addr, len, Prot::RW, MapKind::Private, Placement::Hint, f);
            }
        }
        let _ = mm.brk(addr);
        let _ = mm.set_start_brk(addr);
        let mut acc = mm.accessor();
        let _ = acc.fetch_u32(addr);
        let _ = acc.fetch(addr, &mut [0u8; 16]);
        let _ = mm.write(addr, b"x");
    }
    for flags in [0, u32::MAX, MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT] {
        let _ = mm.mlockall(flags);
    }
    mm.munlockall().unwrap();
    check(&mm);
}

#[test]
fn locking_races_with_accesses_and_reclaim() {
    let m = limited(48);
    let mm = Arc::new(m.new_mm().unwrap());
    map(&mm, A, 32 * PAGE, Prot::RW, MapKind::Private);
    map(&mm, A + (1 << 20), 64 * PAGE, Prot::RW, MapKind::Private);
    let writer = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            let mut acc = mm.accessor();
            for round in 0..20u64 {
                for i in 0..64 {
                    acc.store_u64(A + (1 << 20) + i * PAGE, round).unwrap();
                }
                for i in 0..32 {
                    acc.store_u64(A + i * PAGE, round).unwrap();
                }
            }
        })
    };
    for _ in 0..20 {
        // EAGAIN is fine when the writer holds most frames at that moment.
        let r = mm.mlock(A, 16 * PAGE);
        assert!(r.is_ok() || r.unwrap_err().errno() == EAGAIN);
        mm.munlock(A, 32 * PAGE).unwrap();
    }
    writer.join().unwrap();
    for i in 0..32 {
        assert_eq!(mm.read_u64_at(A + i * PAGE), 19);
    }
    check(&mm);
}

trait ReadU64 {
    fn read_u64_at(&self, addr: u64) -> u64;
}

impl ReadU64 for Mm {
    fn read_u64_at(&self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).unwrap();
        u64::from_ne_bytes(b)
    }
}

/// A page locked in one space is kept mapped in every space (Linux keeps
/// an mlocked page off the evictable lists): reclaim does not unmap it from
/// a forked child, whose VMA is not locked, or from another sharer.
#[test]
fn reclaim_leaves_a_locked_page_mapped_where_it_is_not_locked() {
    for kind in [MapKind::Private, MapKind::Shared] {
        let m = limited(64);
        let mm = m.new_mm().unwrap();
        map(&mm, A, 16 * PAGE, Prot::RW, kind);
        mm.mlock(A, 16 * PAGE).unwrap();
        let child = mm.fork().unwrap();
        // Fork copies no entry of shared memory: the child faults them in.
        for i in 0..16 {
            read(&child, A + i * PAGE, 1);
        }
        let frames: Vec<_> = (0..16).map(|i| child.phys(A + i * PAGE)).collect();
        assert!(frames.iter().all(Option::is_some), "{kind:?}: the child maps the locked pages");
        let other = A + (1 << 20);
        map(&mm, other, 256 * PAGE, Prot::RW, MapKind::Private);
        for i in 0..256 {
            mm.write(other + i * PAGE, &[7]).unwrap();
        }
        assert!(mm.smaps(other).unwrap().swap > 0, "{kind:?}: the unlocked pages were swapped");
        let now: Vec<_> = (0..16).map(|i| child.phys(A + i * PAGE)).collect();
        assert_eq!(now, frames, "{kind:?}: the child keeps its mappings of the locked pages");
        check(&mm);
        check(&child);
    }
}

/// A fork child's VMAs lose VM_LOCKED, a WIPEONFORK one's too (Linux's
/// dup_mmap clears it for every VMA it copies): DONTNEED works there.
#[test]
fn a_wipeonfork_vma_is_not_locked_in_the_child() {
    let m = Machine::new(Config { arena_bytes: 16 << 20, ..Config::default() }).unwrap();
    let a = m.new_mm().unwrap();
    a.mmap(0x1000_0000, 4 * 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
    a.madvise(0x1000_0000, 4 * 4096, softmm::Advice::WipeOnFork).unwrap();
    a.mlock(0x1000_0000, 4 * 4096).unwrap();
    let b = a.fork().unwrap();
    assert_eq!(a.madvise(0x1000_0000, 4096, softmm::Advice::DontNeed).unwrap_err().errno(), EINVAL);
    b.madvise(0x1000_0000, 4096, softmm::Advice::DontNeed).unwrap();
    b.check_invariants().unwrap();
}
