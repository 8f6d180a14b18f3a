//! Page pins across fork and COW: the anonymous-memory scenarios of Linux's
//! `tools/testing/selftests/mm/cow.c` (pin then fork, fork then pin, writes
//! after fork seen through the pin, the child's writes never seen through
//! the parent's pin, read-only pins of shared, previously shared and
//! exclusive pages), run under both fork strategies with an audit after
//! each step; then what pins promise against munmap, reclaim and migration,
//! and the errors.

use softmm::reclaim::device::MemSwap;
use softmm::GuestWords;
use softmm::{Config, Error, ForkPolicy, Machine, MapKind, Mm, PinnedPages, Placement, Prot, SegvKind, SwapConfig};
use std::sync::Arc;

const BASE: u64 = 0x2000_0000;
const PAGE: u64 = 4096;
/// Two PTE tables' worth, so that shared-table forks have tables to share.
const LEN: u64 = 4 << 20;

const POLICIES: [ForkPolicy; 2] = [ForkPolicy::SharedTables, ForkPolicy::CopyTables];

fn machine() -> Machine {
    let swap = Arc::new(MemSwap::new(16 << 20).expect("swap device"));
    Machine::new(Config { arena_bytes: 64 << 20, swap: SwapConfig::Device(swap), ..Config::default() })
        .expect("machine")
}

/// A space with `LEN` bytes of private memory at `BASE`, every page written
/// (so fork has everything to share or copy).
fn populated(m: &Machine) -> Mm {
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, LEN, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    for p in 0..LEN / PAGE {
        mm.write(BASE + p * PAGE, &[0x11]).expect("populate");
    }
    mm
}

fn through(pin: &PinnedPages, addr: u64) -> u8 {
    let mut b = [0u8];
    pin.read(addr, &mut b).expect("read through the pin");
    b[0]
}

fn read(mm: &Mm, addr: u64) -> u8 {
    let mut b = [0u8];
    mm.read(addr, &mut b).expect("read");
    b[0]
}

fn audit(mm: &Mm) {
    mm.check_invariants().expect("invariants");
}

/// cow.c "fork() with an iouring fixed buffer": a write pin, then fork;
/// the parent's later writes reach the pinner, the child's never do.
#[test]
fn pin_then_fork_parent_writes_reach_the_pin() {
    for policy in POLICIES {
        let m = machine();
        let parent = populated(&m);
        let va = BASE + 3 * PAGE;
        let pin = parent.pin_pages(va, PAGE, true).expect("pin");
        let child = parent.fork_with(policy).expect("fork");
        audit(&parent);
        assert_ne!(parent.phys(va), child.phys(va), "{policy:?}: fork must give the child a copy of a pinned page");
        assert_eq!(parent.phys(va), Some(pin.frames()[0]), "{policy:?}: the parent keeps the pinned frame");
        parent.write(va, &[0x22]).expect("parent write");
        assert_eq!(through(&pin, va), 0x22, "{policy:?}: the parent's write after fork is lost to the pinner");
        child.write(va, &[0x33]).expect("child write");
        assert_eq!(through(&pin, va), 0x22, "{policy:?}: the child's write is visible through the parent's pin");
        assert_eq!(read(&child, va), 0x33);
        assert_eq!(read(&parent, va), 0x22);
        audit(&parent);
        // Other pages of the table behave as after any fork.
        assert_eq!(read(&child, BASE), 0x11);
        drop(child);
        drop(pin);
        audit(&parent);
    }
}

/// The pinned table is copied, never shared; tables without pins are still
/// shared.
#[test]
fn a_table_holding_a_pin_is_not_shared() {
    let m = machine();
    let parent = populated(&m);
    let pin = parent.pin_pages(BASE + PAGE, 2 * PAGE, true).expect("pin");
    let before = m.stats();
    let child = parent.fork_with(ForkPolicy::SharedTables).expect("fork");
    let after = m.stats();
    assert_eq!(after.fork_pinned_copies - before.fork_pinned_copies, 2, "two pinned pages copied for the child");
    assert_eq!(after.table_shares - before.table_shares, 1, "the table without pins is still shared");
    assert_eq!(after.pins, 2);
    drop(child);
    drop(pin);
    assert_eq!(m.stats().pins, 0);
    audit(&parent);
}

/// cow.c: fork first, then pin in the parent: the pin breaks COW (the
/// parent gets its own copy) and the child keeps the old page.
#[test]
fn fork_then_pin_breaks_cow_in_the_pinner() {
    for policy in POLICIES {
        for write in [true, false] {
            let m = machine();
            let parent = populated(&m);
            let va = BASE + 5 * PAGE;
            let child = parent.fork_with(policy).expect("fork");
            let pin = parent.pin_pages(va, PAGE, write).expect("pin");
            assert_ne!(parent.phys(va), child.phys(va), "{policy:?} write={write}: the pin did not break COW");
            assert_eq!(parent.phys(va), Some(pin.frames()[0]));
            audit(&parent);
            // A read-only pin leaves the page read-only: the write faults,
            // reuses the pinned frame, and the pinner sees it.
            parent.write(va, &[0x44]).expect("parent write");
            assert_eq!(parent.phys(va), Some(pin.frames()[0]), "{policy:?} write={write}: the write moved the page");
            assert_eq!(through(&pin, va), 0x44);
            child.write(va, &[0x55]).expect("child write");
            assert_eq!(through(&pin, va), 0x44);
            assert_eq!(read(&child, va), 0x55);
            audit(&parent);
        }
    }
}

/// cow.c "R/O GUP pin on R/O-mapped shared page": the page is shared with a
/// child and mapped read-only; a read-only pin, then mprotect(RW) and a
/// write in the parent: the pinner sees the write.
#[test]
fn read_only_pin_of_a_read_only_shared_page_sees_later_writes() {
    for policy in POLICIES {
        let m = machine();
        let parent = populated(&m);
        let va = BASE + 7 * PAGE;
        let child = parent.fork_with(policy).expect("fork");
        parent.mprotect(BASE, LEN, Prot::READ).expect("mprotect");
        let pin = parent.pin_pages(va, PAGE, false).expect("read-only pin");
        assert!(parent.write(va, &[1]).is_err(), "{policy:?}: an unshare must not make a read-only mapping writable");
        parent.mprotect(BASE, LEN, Prot::RW).expect("mprotect");
        parent.write(va, &[0x66]).expect("write");
        assert_eq!(through(&pin, va), 0x66, "{policy:?}: the read-only pin lost the parent's write");
        assert_eq!(read(&child, va), 0x11, "{policy:?}: the child saw the parent's write");
        audit(&parent);
    }
}

/// cow.c "R/O GUP pin on R/O-mapped previously-shared page": shared with a
/// child that exited; the read-only pin needs no copy, and the pinner sees
/// the parent's later write.
#[test]
fn read_only_pin_of_a_previously_shared_page() {
    for policy in POLICIES {
        let m = machine();
        let parent = populated(&m);
        let va = BASE + 9 * PAGE;
        let frame = parent.phys(va);
        drop(parent.fork_with(policy).expect("fork"));
        let pin = parent.pin_pages(va, PAGE, false).expect("pin");
        // With copied tables the frame was shared and is now exclusive: it is
        // reused. With shared tables the parent's table is reused as well.
        assert_eq!(Some(pin.frames()[0]), frame, "{policy:?}: an exclusive page was copied");
        parent.write(va, &[0x77]).expect("write");
        assert_eq!(through(&pin, va), 0x77);
        audit(&parent);
    }
}

/// cow.c "R/O GUP pin on R/O-mapped exclusive page".
#[test]
fn read_only_pin_of_an_exclusive_read_only_page() {
    let m = machine();
    let mm = populated(&m);
    let va = BASE + 11 * PAGE;
    mm.mprotect(va, PAGE, Prot::READ).expect("mprotect");
    let frame = mm.phys(va);
    let pin = mm.pin_pages(va, PAGE, false).expect("pin");
    assert_eq!(Some(pin.frames()[0]), frame);
    mm.mprotect(va, PAGE, Prot::RW).expect("mprotect");
    mm.write(va, &[0x88]).expect("write");
    assert_eq!(through(&pin, va), 0x88);
    audit(&mm);
}

/// A read-only pin of memory never touched gets a frame of its own, not
/// the shared zero frame, so the owner's first write lands in the pinned
/// frame.
#[test]
fn read_only_pin_of_untouched_memory_is_not_the_zero_frame() {
    let m = machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 4 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    assert_eq!(read(&mm, BASE), 0); // maps the zero frame
    let pin = mm.pin_pages(BASE, 2 * PAGE, false).expect("pin");
    assert!(pin.frames().iter().all(|&f| f != softmm::ZERO_FRAME));
    mm.write(BASE + PAGE + 9, &[0x99]).expect("write");
    assert_eq!(through(&pin, BASE + PAGE + 9), 0x99);
    audit(&mm);
}

/// cow.c "vmsplice() + unmap in child": the child pins read-only, unmaps,
/// the parent writes: the child's pin keeps what the child saw.
#[test]
fn child_pin_keeps_the_child_view_after_unmap() {
    for policy in POLICIES {
        let m = machine();
        let parent = populated(&m);
        let va = BASE + 13 * PAGE;
        let child = parent.fork_with(policy).expect("fork");
        let pin = child.pin_pages(va, PAGE, false).expect("pin");
        child.munmap(BASE, LEN).expect("munmap");
        parent.write(va, &[0xaa]).expect("write");
        assert_eq!(through(&pin, va), 0x11, "{policy:?}: the parent's write reached the child's pin");
        audit(&parent);
    }
}

/// Writes through a write pin (DMA into the page) reach the owner, never a
/// child forked after the pin.
#[test]
fn writes_through_the_pin_reach_the_owner_only() {
    for policy in POLICIES {
        let m = machine();
        let parent = populated(&m);
        let va = BASE + 15 * PAGE;
        let pin = parent.pin_pages(va, PAGE, true).expect("pin");
        let child = parent.fork_with(policy).expect("fork");
        pin.write(va + 8, b"dma").expect("write through");
        let mut got = [0u8; 3];
        parent.read(va + 8, &mut got).expect("read");
        assert_eq!(&got, b"dma");
        child.read(va + 8, &mut got).expect("read");
        assert_eq!(got, [0, 0, 0], "{policy:?}: the DMA write reached the child");
        audit(&parent);
    }
}

/// Pins outlive the mapping: munmap and exit leave the frame alive (and
/// its bytes intact) until the pin goes; then it is freed.
#[test]
fn a_pinned_frame_outlives_munmap_and_exit() {
    let m = machine();
    let mm = populated(&m);
    let va = BASE + 17 * PAGE;
    mm.write(va, b"kept").expect("write");
    let pin = mm.pin_pages(va, 4, true).expect("pin");
    mm.munmap(va, PAGE).expect("munmap");
    audit(&mm);
    let in_use = m.stats().frames_in_use;
    drop(mm);
    let mut got = [0u8; 4];
    pin.read(va, &mut got).expect("read after exit");
    assert_eq!(&got, b"kept");
    assert_eq!(m.stats().frames_in_use, 1, "only the pinned frame is left (had {in_use})");
    drop(pin);
    assert_eq!(m.stats().frames_in_use, 0);
}

/// Reclaim and migration leave pinned frames where they are; unpinned ones
/// go as usual.
#[test]
fn reclaim_and_migration_skip_pinned_frames() {
    let m = machine();
    let mm = populated(&m);
    let pin = mm.pin_pages(BASE, 64 * PAGE, false).expect("pin");
    let frames: Vec<_> = (0..64).map(|p| mm.phys(BASE + p * PAGE)).collect();
    m.reclaim((LEN / PAGE) as usize);
    for p in 0..64 {
        assert_eq!(mm.phys(BASE + p * PAGE), frames[p as usize], "pinned page {p} moved or went to swap");
    }
    assert!(m.stats().swap_outs > 0, "reclaim swapped nothing out (the unpinned pages should go)");
    assert!(matches!(mm.migrate(BASE), Err(Error::Busy(_))), "a pinned frame migrated");
    audit(&mm);
    drop(pin);
    mm.migrate(BASE).expect("migrate once unpinned");
    audit(&mm);
}

/// Shared memory: every mapping sees the one frame, pinned or not; a fork
/// needs no copy.
#[test]
fn pins_of_shared_memory() {
    let m = machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 2 * PAGE, Prot::RW, MapKind::Shared, Placement::Fixed).expect("mmap");
    let pin = mm.pin_pages(BASE, 2 * PAGE, true).expect("pin");
    let child = mm.fork().expect("fork");
    child.write(BASE + PAGE, b"c").expect("child write");
    assert_eq!(through(&pin, BASE + PAGE), b'c');
    pin.write(BASE, b"p").expect("write through");
    assert_eq!(read(&child, BASE), b'p');
    audit(&mm);
}

#[test]
fn errors_are_those_of_an_access() {
    let m = machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 2 * PAGE, Prot::READ, MapKind::Private, Placement::Fixed).expect("mmap");
    assert_eq!(mm.pin_pages(BASE, 2 * PAGE, true).err(), Some(Error::Segv { addr: BASE, kind: SegvKind::AccErr }));
    let e = mm.pin_pages(BASE + PAGE, 2 * PAGE, false).err();
    assert_eq!(e, Some(Error::Segv { addr: BASE + 2 * PAGE, kind: SegvKind::MapErr }));
    assert_eq!(mm.pin_pages(BASE, 0, false).err(), Some(Error::ZeroLength));
    assert_eq!(mm.pin_pages(u64::MAX - 10, 100, false).map(|_| ()).map_err(|e| e.errno()), Err(softmm::errno::EFAULT));
    // A failed pin leaves none behind.
    assert_eq!(m.stats().pins, 0);
    audit(&mm);
    let pin = mm.pin_pages(BASE + 100, 10, false).expect("pin");
    let mut b = [0u8; 8];
    assert_eq!(pin.read(BASE + 96, &mut b).err(), Some(Error::Fault { addr: BASE + 96 }));
    assert_eq!(pin.read(BASE + 105, &mut b).err(), Some(Error::Fault { addr: BASE + 110 }));
    assert!(matches!(pin.write(BASE + 100, b"x"), Err(Error::Invalid(_))));
    assert!(matches!(pin.atomic_u32(BASE + 100), Err(Error::Invalid(_))), "a read-only pin hands out no atomic");
    assert_eq!(pin.frames().len(), 1);
}

/// The host atomics of a write pin are the owner's memory: stores through
/// them are what the owner reads, the owner's writes are what they load
/// (across fork), and misuse gets the errors of an access.
#[test]
fn atomics_of_a_write_pin_are_the_owner_memory() {
    for policy in POLICIES {
        let m = machine();
        let mm = populated(&m);
        let pin = mm.pin_pages(BASE + PAGE, PAGE, true).expect("pin");
        let w = pin.atomic_u32(BASE + PAGE + 8).expect("u32");
        let d = pin.atomic_u64(BASE + PAGE + 16).expect("u64");
        w.store(0xfeed, std::sync::atomic::Ordering::SeqCst);
        d.fetch_add(5, std::sync::atomic::Ordering::SeqCst);
        let mut b = [0u8; 16];
        mm.read(BASE + PAGE + 8, &mut b).expect("read");
        assert_eq!(u32::from_ne_bytes(b[..4].try_into().unwrap()), 0xfeed, "{policy:?}");
        assert_eq!(u64::from_ne_bytes(b[8..].try_into().unwrap()), 5, "{policy:?}");
        let child = mm.fork_with(policy).expect("fork");
        mm.write(BASE + PAGE + 8, &7u32.to_ne_bytes()).expect("owner write");
        assert_eq!(w.load(std::sync::atomic::Ordering::SeqCst), 7, "the pin follows the owner after fork ({policy:?})");
        let mut c = [0u8; 4];
        child.read(BASE + PAGE + 8, &mut c).expect("child read");
        assert_eq!(u32::from_ne_bytes(c), 0xfeed, "the child keeps the fork-time value ({policy:?})");
        assert_eq!(
            pin.atomic_u32(BASE + PAGE + 2).err(),
            Some(Error::Misaligned { what: "address", value: BASE + PAGE + 2 })
        );
        assert_eq!(
            pin.atomic_u64(BASE + PAGE + 4).err(),
            Some(Error::Misaligned { what: "address", value: BASE + PAGE + 4 })
        );
        assert_eq!(pin.atomic_u32(BASE).err(), Some(Error::Fault { addr: BASE }));
        assert_eq!(pin.atomic_u64(BASE + 2 * PAGE).err(), Some(Error::Fault { addr: BASE + 2 * PAGE }));
        drop(child);
        audit(&mm);
    }
}

/// Fork chains: a pinned page stays the parent's through forks of forks,
/// and a child's own later pins follow the same rules.
#[test]
fn chains_of_forks_keep_pins_coherent() {
    for policy in POLICIES {
        let m = machine();
        let a = populated(&m);
        let va = BASE + 19 * PAGE;
        let pin_a = a.pin_pages(va, PAGE, true).expect("pin");
        let b = a.fork_with(policy).expect("fork a");
        let pin_b = b.pin_pages(va, PAGE, true).expect("pin in b");
        let c = b.fork_with(policy).expect("fork b");
        a.write(va, &[1]).expect("a");
        b.write(va, &[2]).expect("b");
        c.write(va, &[3]).expect("c");
        assert_eq!((through(&pin_a, va), through(&pin_b, va)), (1, 2), "{policy:?}");
        assert_eq!(read(&c, va), 3);
        audit(&a);
    }
}

/// Real threads: a pinner reads pinned words while the owner writes them
/// (through an accessor and through `Mm::write`), forks (both strategies;
/// the children write their copies), flips protection, and reclaim and
/// migration run. Every read through the pin lies between the owner's last
/// published write and the one in flight; after the owner unmaps, the pin
/// keeps the last value written.
#[test]
fn pinner_follows_the_owner_through_fork_cow_and_munmap() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let m = machine();
    let mm = Arc::new(populated(&m));
    // One word in each of the two PTE tables, and a neighbour page that
    // forks share or copy around them.
    let words = [BASE + 8, BASE + (2 << 20) + 8];
    let pins: Vec<PinnedPages> = words.iter().map(|&w| mm.pin_pages(w, 8, true).expect("pin")).collect();
    let pins = Arc::new(pins);
    let latest: Arc<Vec<AtomicU64>> = Arc::new(words.iter().map(|_| AtomicU64::new(0)).collect());
    let (stop, unmapped) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (pins, latest, stop) = (pins.clone(), latest.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Acquire) {
                    for (i, &w) in words.iter().enumerate() {
                        let lo = latest[i].load(Ordering::Acquire);
                        let v = pins[i].load_u64(w).expect("load through the pin");
                        let hi = latest[i].load(Ordering::Acquire);
                        // The write in flight is the word's next value: `g`
                        // counts over both words.
                        let next = hi + words.len() as u64;
                        assert!(lo <= v && v <= next, "word {i}: read {v} through the pin, owner at {lo}..={hi}");
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let mut acc = mm.accessor();
    let mut children = std::collections::VecDeque::new();
    let mut g = 0u64;
    for round in 0..3000u64 {
        for (i, &w) in words.iter().enumerate() {
            g += 1;
            if g % 2 == 0 {
                acc.store_u64(w, g).expect("store");
            } else {
                mm.write(w, &g.to_ne_bytes()).expect("write");
            }
            latest[i].store(g, Ordering::Release);
        }
        match round % 8 {
            0 | 4 => {
                // Children live on for a few rounds, so the owner's writes
                // meet pages a live child could share; some write their
                // copy of a pinned word.
                let policy = POLICIES[(round / 8 % 2) as usize];
                let child = mm.fork_with(policy).expect("fork");
                if round % 16 == 0 {
                    child.write(words[0], &u64::MAX.to_ne_bytes()).expect("child write");
                }
                child.write(words[1] + PAGE, &[1]).expect("child write next door");
                children.push_back(child);
                if children.len() > 2 {
                    children.pop_front();
                }
            }
            1 => {
                mm.mprotect(BASE, LEN, Prot::READ).expect("mprotect");
                mm.mprotect(BASE, LEN, Prot::RW).expect("mprotect");
            }
            2 => {
                m.reclaim(32);
            }
            3 => {
                let _ = mm.migrate(words[round as usize / 8 % 2]);
                let _ = mm.migrate(words[0] + PAGE);
            }
            _ => {}
        }
    }
    drop(children);
    mm.munmap(BASE, LEN).expect("munmap");
    unmapped.store(true, Ordering::Release);
    // The owner is gone from these pages: the pins keep the last values.
    for (i, &w) in words.iter().enumerate() {
        assert_eq!(pins[i].load_u64(w).expect("load"), latest[i].load(Ordering::Acquire));
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    stop.store(true, Ordering::Release);
    let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(reads > 0);
    mm.check_invariants().expect("invariants");
    drop(pins);
    mm.check_invariants().expect("invariants after unpin");
}
