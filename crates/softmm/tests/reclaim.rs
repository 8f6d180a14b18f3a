//! Reclaim, swap and migration: contents survive every move, counts stay
//! exact (`check_invariants` after each phase), failures lose nothing.

mod common;

use common::check;
use softmm::reclaim::device::{Fault, FaultySwap, MemSwap};
use softmm::GuestWords;
use softmm::{Config, Error, ForkPolicy, Machine, MapKind, Mm, Placement, Prot, SwapConfig};
use std::collections::HashMap;
use std::sync::Arc;

const BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;

/// A machine whose faults reclaim for themselves: which pages go out, and
/// which device access a scripted fault hits, depends on nothing else.
fn limited(limit_pages: u64, dev: Arc<FaultySwap<MemSwap>>) -> Machine {
    limited_with(limit_pages, dev, false)
}

/// `limited`, with the background reclaimer or not.
fn limited_with(limit_pages: u64, dev: Arc<FaultySwap<MemSwap>>, background: bool) -> Machine {
    Machine::new(Config {
        arena_bytes: 64 << 20,
        mem_limit: Some(limit_pages * PAGE),
        swap: SwapConfig::Device(dev),
        cpu_caches: 1,
        prezero: false,
        background_reclaim: background,
        ..Config::default()
    })
    .expect("machine")
}

fn device(mib: u64) -> Arc<FaultySwap<MemSwap>> {
    Arc::new(FaultySwap::new(MemSwap::new(mib << 20).expect("mem swap")))
}

/// A page's contents: its address and a generation, so stale data shows.
fn pattern(mm_tag: u8, va: u64, generation: u8) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&va.to_le_bytes());
    p[8] = mm_tag;
    p[9] = generation;
    p
}

fn write_page(mm: &Mm, va: u64, data: &[u8; 16]) {
    mm.write(va, data).expect("write");
}

fn read_page(mm: &Mm, va: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    mm.read(va, &mut b).expect("read");
    b
}

#[test]
fn pages_beyond_the_limit_go_to_swap_and_come_back() {
    let dev = device(64);
    let m = limited(64, dev.clone());
    let mm = m.new_mm().expect("mm");
    let pages = 256;
    mm.mmap(BASE, pages * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    for i in 0..pages {
        write_page(&mm, BASE + i * PAGE, &pattern(1, BASE + i * PAGE, 0));
    }
    check(&mm);
    let s = m.stats();
    assert!(s.frames_in_use <= 64, "limit exceeded: {}", s.frames_in_use);
    assert!(s.swap_outs >= pages - 64, "swap-outs {}", s.swap_outs);
    let swapped: u64 = mm.smaps_all().iter().map(|v| v.swap).sum();
    assert!(swapped > 0);
    assert_eq!(swapped, s.swap_used * 4, "smaps swap= counts every swapped page (kB)");
    for i in 0..pages {
        assert_eq!(read_page(&mm, BASE + i * PAGE), pattern(1, BASE + i * PAGE, 0), "page {i}");
    }
    check(&mm);
    assert!(m.stats().swap_ins > 0);
    drop(mm);
    let s = m.stats();
    assert_eq!(s.swap_used, 0, "exit frees every slot");
    assert_eq!(s.frames_in_use, 0, "exit frees every frame");
}

#[test]
fn swapped_pages_stay_shared_across_fork_and_cow_breaks_after_swap_in() {
    for policy in [ForkPolicy::SharedTables, ForkPolicy::CopyTables] {
        let dev = device(64);
        let m = limited(48, dev.clone());
        let parent = m.new_mm().expect("mm");
        let pages = 128;
        parent.mmap(BASE, pages * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        for i in 0..pages {
            write_page(&parent, BASE + i * PAGE, &pattern(1, BASE + i * PAGE, 0));
        }
        let child = parent.fork_with(policy).expect("fork");
        check(&parent);
        // Writes in the child break COW page by page, under pressure.
        for i in (0..pages).step_by(3) {
            write_page(&child, BASE + i * PAGE, &pattern(2, BASE + i * PAGE, 1));
            check(&child);
        }
        m.reclaim(1000);
        check(&parent);
        for i in 0..pages {
            let va = BASE + i * PAGE;
            assert_eq!(read_page(&parent, va), pattern(1, va, 0), "{policy:?} parent page {i}");
            let want = if i % 3 == 0 { pattern(2, va, 1) } else { pattern(1, va, 0) };
            assert_eq!(read_page(&child, va), want, "{policy:?} child page {i}");
        }
        check(&parent);
        drop(child);
        check(&parent);
        drop(parent);
        assert_eq!(m.stats().swap_used, 0);
        assert_eq!(m.stats().frames_in_use, 0);
    }
}

/// A random workload over a fork tree with a limit of 25% of its working
/// set: every byte read back equals the model; audits after each phase.
/// Seeds 5 to 8 run with the background reclaimer swapping alongside.
#[test]
fn memory_pressure_random_workload_over_forked_spaces() {
    for seed in 1..=8u64 {
        let dev = device(64);
        let pages = 192u64;
        let m = limited_with(pages / 4 + 16, dev.clone(), seed > 4);
        let root = m.new_mm().expect("mm");
        root.mmap(BASE, pages * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        let mut spaces: Vec<(Mm, HashMap<u64, [u8; 16]>)> = vec![(root, HashMap::new())];
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for phase in 0..6u8 {
            for _ in 0..300 {
                let k = (next() % spaces.len() as u64) as usize;
                let va = BASE + (next() % pages) * PAGE;
                match next() % 4 {
                    0 | 1 => {
                        let data = pattern(k as u8, va, phase);
                        write_page(&spaces[k].0, va, &data);
                        spaces[k].1.insert(va, data);
                    }
                    _ => {
                        let want = spaces[k].1.get(&va).copied().unwrap_or([0; 16]);
                        assert_eq!(read_page(&spaces[k].0, va), want, "seed {seed} phase {phase} space {k} {va:#x}");
                    }
                }
            }
            check(&spaces[0].0);
            assert!(m.stats().frames_in_use <= pages / 4 + 16);
            match phase % 3 {
                0 if spaces.len() < 4 => {
                    let k = (next() % spaces.len() as u64) as usize;
                    let policy = if next() % 2 == 0 { ForkPolicy::SharedTables } else { ForkPolicy::CopyTables };
                    let child = spaces[k].0.fork_with(policy).expect("fork");
                    let model = spaces[k].1.clone();
                    spaces.push((child, model));
                }
                1 if spaces.len() > 1 => {
                    let k = 1 + (next() % (spaces.len() as u64 - 1)) as usize;
                    spaces.swap_remove(k);
                }
                _ => {
                    let k = (next() % spaces.len() as u64) as usize;
                    let lo = BASE + (next() % pages) * PAGE;
                    let len = (1 + next() % 8) * PAGE;
                    let len = len.min(BASE + pages * PAGE - lo);
                    spaces[k].0.madvise(lo, len, softmm::Advice::DontNeed).expect("madvise");
                    spaces[k].1.retain(|&va, _| va < lo || va >= lo + len);
                }
            }
            check(&spaces[0].0);
        }
        for (k, (mm, model)) in spaces.iter().enumerate() {
            for (&va, want) in model {
                assert_eq!(&read_page(mm, va), want, "seed {seed} final space {k} {va:#x}");
            }
        }
        assert!(m.stats().swap_outs > 0 && m.stats().swap_ins > 0, "seed {seed}: no swapping happened");
        check(&spaces[0].0);
        drop(spaces);
        // Also waits for a background round that held the last pages.
        m.check_invariants().expect("audit after exit");
        assert_eq!(m.stats().swap_used, 0);
        assert_eq!(m.stats().frames_in_use, 0);
    }
}

#[test]
fn failed_swap_out_leaves_the_page_resident_and_intact() {
    for fault in [Fault::NoSpace, Fault::Io, Fault::ShortWrite] {
        let dev = device(64);
        let m = limited(1024, dev.clone());
        let mm = m.new_mm().expect("mm");
        mm.mmap(BASE, 32 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        for i in 0..32 {
            write_page(&mm, BASE + i * PAGE, &pattern(1, BASE + i * PAGE, 7));
        }
        dev.fail_writes(1000, fault);
        assert_eq!(m.reclaim(100), 0, "{fault:?}: nothing may leave memory");
        assert!(m.stats().swap_failures > 0);
        check(&mm);
        for i in 0..32 {
            assert_eq!(read_page(&mm, BASE + i * PAGE), pattern(1, BASE + i * PAGE, 7), "{fault:?} page {i}");
        }
        // Once the device works again the same pages go out and come back.
        dev.clear();
        assert!(m.reclaim(100) > 0);
        check(&mm);
        for i in 0..32 {
            assert_eq!(read_page(&mm, BASE + i * PAGE), pattern(1, BASE + i * PAGE, 7), "{fault:?} page {i}");
        }
        check(&mm);
    }
}

#[test]
fn failed_swap_in_is_an_io_error_never_wrong_data() {
    let dev = device(64);
    let m = limited(1024, dev.clone());
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 16 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    for i in 0..16 {
        write_page(&mm, BASE + i * PAGE, &pattern(1, BASE + i * PAGE, 3));
    }
    assert_eq!(m.reclaim(100), 16);
    // Every read fails (a swap-in retries a failed run once, alone, so a
    // single failed device call would not reach the access).
    dev.fail_reads(u32::MAX, Fault::Io);
    let mut b = [0u8; 16];
    let err = mm.read(BASE, &mut b).expect_err("the read must fail");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(err.errno(), softmm::errno::EIO);
    check(&mm);
    // The page is still on the device: once it reads again, the next
    // access gets it.
    dev.clear();
    assert_eq!(read_page(&mm, BASE), pattern(1, BASE, 3));
    let mut acc = mm.accessor();
    dev.fail_reads(u32::MAX, Fault::Io);
    assert!(matches!(acc.load_u32(BASE + PAGE), Err(Error::Io { .. })));
    dev.clear();
    assert_eq!(acc.load_u32(BASE + PAGE).expect("load") as u64, (BASE + PAGE) & 0xffff_ffff);
    check(&mm);
}

#[test]
fn migration_moves_the_frame_for_every_sharer() {
    for policy in [ForkPolicy::SharedTables, ForkPolicy::CopyTables] {
        let m = common::machine();
        let parent = m.new_mm().expect("mm");
        parent.mmap(BASE, 8 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        for i in 0..8 {
            write_page(&parent, BASE + i * PAGE, &pattern(1, BASE + i * PAGE, 0));
        }
        let child = parent.fork_with(policy).expect("fork");
        let old = parent.phys(BASE).expect("mapped");
        let new = parent.migrate(BASE).expect("migrate");
        assert_ne!(old, new);
        assert_eq!(parent.phys(BASE), Some(new));
        assert_eq!(child.phys(BASE), Some(new), "{policy:?}: the child follows");
        check(&parent);
        assert_eq!(read_page(&child, BASE), pattern(1, BASE, 0));
        write_page(&child, BASE, &pattern(2, BASE, 1));
        assert_eq!(read_page(&parent, BASE), pattern(1, BASE, 0));
        check(&parent);
        // Errors: nothing mapped, the zero page, shared memory.
        assert!(matches!(parent.migrate(BASE + 64 * PAGE), Err(Error::Fault { .. })));
        parent.mmap(BASE + 16 * PAGE, PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        read_page(&parent, BASE + 16 * PAGE);
        assert!(matches!(parent.migrate(BASE + 16 * PAGE), Err(Error::Invalid(_))));
        parent.mmap(BASE + 32 * PAGE, PAGE, Prot::RW, MapKind::Shared, Placement::Fixed).expect("mmap");
        write_page(&parent, BASE + 32 * PAGE, &[1; 16]);
        assert!(matches!(parent.migrate(BASE + 32 * PAGE), Err(Error::Invalid(_))));
        check(&parent);
    }
}

#[test]
fn evacuate_empties_a_frame_range() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 64 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    for i in 0..64 {
        write_page(&mm, BASE + i * PAGE, &pattern(1, BASE + i * PAGE, 0));
    }
    let frames: Vec<u32> = (0..64).map(|i| mm.phys(BASE + i * PAGE).expect("mapped").0).collect();
    let (lo, hi) = (*frames.iter().min().expect("frames"), *frames.iter().max().expect("frames") + 1);
    let (moved, stayed) = m.evacuate(lo..hi);
    assert_eq!((moved, stayed), (64, 0));
    for i in 0..64 {
        let f = mm.phys(BASE + i * PAGE).expect("mapped").0;
        assert!(!(lo..hi).contains(&f), "page {i} still in the range at frame {f}");
        assert_eq!(read_page(&mm, BASE + i * PAGE), pattern(1, BASE + i * PAGE, 0));
    }
    check(&mm);
}

/// Migration under concurrent readers and writers on real threads: no
/// write is lost, no reader sees anything but a value some writer stored.
#[test]
fn migration_under_concurrent_writers_loses_nothing() {
    let m = common::machine();
    let mm = Arc::new(m.new_mm().expect("mm"));
    let pages = 4u64;
    mm.mmap(BASE, pages * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    mm.write(BASE, &[0; 16]).expect("touch");
    let child = mm.fork().expect("fork"); // the frames are COW-shared too
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    // Writers go on until the migrator has moved pages under them a few
    // times (bounded, so a broken migration fails rather than hangs).
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let (mm, moved) = (mm.clone(), moved.clone());
            std::thread::spawn(move || {
                let mut acc = mm.accessor();
                let va = BASE + t * PAGE;
                let mut i = 0u32;
                while i < 20_000 || (moved.load(Ordering::Relaxed) < 20 && i < 5_000_000) {
                    i += 1;
                    acc.store_u32(va, i).expect("store");
                    let back = acc.load_u32(va).expect("load");
                    assert_eq!(back, i, "thread {t}: wrote {i}, read {back}");
                }
                (i, acc.load_u32(va).expect("load"))
            })
        })
        .collect();
    let migrator = {
        let (mm, stop, moved) = (mm.clone(), stop.clone(), moved.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for p in 0..pages {
                    match mm.migrate(BASE + p * PAGE) {
                        Ok(_) => {
                            moved.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::Busy(_)) | Err(Error::Fault { .. }) | Err(Error::Invalid(_)) => {}
                        Err(e) => panic!("migrate: {e}"),
                    }
                }
            }
        })
    };
    let last: Vec<u32> = writers
        .into_iter()
        .enumerate()
        .map(|(t, w)| {
            let (i, v) = w.join().expect("writer");
            assert_eq!(v, i, "thread {t}");
            i
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    migrator.join().expect("migrator");
    assert!(moved.load(Ordering::Relaxed) > 0, "no migration succeeded");
    let mut acc = mm.accessor();
    assert_eq!(acc.load_u32(BASE).expect("load"), last[0]);
    assert_eq!(acc.load_u32(BASE + PAGE).expect("load"), last[1]);
    let mut b = [0u8; 4];
    child.read(BASE, &mut b).expect("child read");
    assert_eq!(b, [0; 4], "the child's copy is untouched");
    drop(acc);
    check(&mm);
}

/// anon_vmas live exactly as long as some VMA is chained to them: fork
/// chains add one per generation, munmap and exit collect them.
#[test]
fn anon_vmas_are_collected_when_their_lists_empty() {
    let m = common::machine();
    let root = m.new_mm().expect("mm");
    root.mmap(BASE, 4 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    assert_eq!(m.stats().anon_vmas, 0, "no anon_vma before the first write");
    root.write(BASE, &[1]).expect("write");
    assert_eq!(m.stats().anon_vmas, 1);
    // A split (mprotect) links the same anon_vma twice; no new one.
    root.mprotect(BASE, PAGE, Prot::READ).expect("mprotect");
    assert_eq!(m.stats().anon_vmas, 1);
    check(&root);
    let mut chain = vec![root];
    for _ in 0..5 {
        let child = chain.last().expect("chain").fork().expect("fork");
        chain.push(child);
        check(&chain[0]);
    }
    // As Linux's anon_vma_fork: each child VMA (two per space after the
    // split) gets an anon_vma of its own.
    assert_eq!(m.stats().anon_vmas, 1 + 2 * 5, "two per generation");
    let last = chain.pop().expect("last");
    drop(last);
    assert_eq!(m.stats().anon_vmas, 1 + 2 * 4, "a leaf's own anon_vmas go with it");
    check(&chain[0]);
    let mid = chain.remove(2);
    drop(mid);
    assert_eq!(m.stats().anon_vmas, 1 + 2 * 4, "descendants of an exited space still chain to its anon_vmas");
    chain[0].munmap(BASE, 4 * PAGE).expect("munmap");
    assert_eq!(m.stats().anon_vmas, 1 + 2 * 4, "descendants still chain to the root's");
    check(&chain[0]);
    drop(chain);
    assert_eq!(m.stats().anon_vmas, 0);
}

/// Shared-object pages go to swap too: every mapping (parent and child)
/// loses its entry, the object's index names the slot, and the first fault
/// from either side brings the page back for both.
#[test]
fn shared_memory_pages_are_swapped_and_shared_again() {
    let dev = device(64);
    let m = limited(1024, dev.clone());
    let parent = m.new_mm().expect("mm");
    parent.mmap(BASE, 32 * PAGE, Prot::RW, MapKind::Shared, Placement::Fixed).expect("mmap");
    for i in 0..32 {
        write_page(&parent, BASE + i * PAGE, &pattern(1, BASE + i * PAGE, 5));
    }
    let child = parent.fork().expect("fork");
    for i in 0..32 {
        assert_eq!(read_page(&child, BASE + i * PAGE), pattern(1, BASE + i * PAGE, 5));
    }
    let freed = m.reclaim(1000);
    assert_eq!(freed, 32, "every shared page leaves memory");
    check(&parent);
    assert_eq!(parent.phys(BASE), None);
    assert_eq!(child.phys(BASE), None);
    assert_eq!(parent.smaps(BASE).expect("vma").swap, 32 * 4);
    assert_eq!(child.smaps(BASE).expect("vma").swap, 32 * 4);
    // The child writes one page back in; the parent sees the write.
    write_page(&child, BASE + 3 * PAGE, &pattern(2, BASE + 3 * PAGE, 6));
    assert_eq!(read_page(&parent, BASE + 3 * PAGE), pattern(2, BASE + 3 * PAGE, 6));
    assert_eq!(parent.phys(BASE + 3 * PAGE), child.phys(BASE + 3 * PAGE));
    for i in 0..32 {
        let want = if i == 3 { pattern(2, BASE + i * PAGE, 6) } else { pattern(1, BASE + i * PAGE, 5) };
        assert_eq!(read_page(&parent, BASE + i * PAGE), want, "page {i}");
    }
    check(&parent);
    // A failed read is an I/O error and loses nothing.
    assert!(m.reclaim(1000) > 0);
    dev.fail_reads(u32::MAX, Fault::Io);
    let mut b = [0u8; 16];
    assert!(matches!(child.read(BASE + 7 * PAGE, &mut b), Err(Error::Io { .. })));
    dev.clear();
    assert_eq!(read_page(&child, BASE + 7 * PAGE), pattern(1, BASE + 7 * PAGE, 5));
    check(&parent);
    drop(child);
    drop(parent);
    assert_eq!(m.stats().swap_used, 0);
    assert_eq!(m.stats().frames_in_use, 0);
}

/// Run `f` on a thread of its own and fail if it has not returned after a
/// minute: a hang detector (a livelocked fault spins forever), not a timing
/// assertion.
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(v) => {
            worker.join().expect("worker");
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().expect_err("worker ended without an answer"))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no answer within 60 s (livelock?)"),
    }
}

/// An access under a frame limit answers with the right bytes, or with
/// ENOMEM where `may_fail`; never anything else.
fn right_bytes_or_enomem(got: softmm::Result<()>, got_bytes: &[u8], want: &[u8], may_fail: bool, what: &str) {
    match got {
        Ok(()) => assert_eq!(got_bytes, want, "{what}: wrong bytes"),
        Err(e) => assert!(may_fail && e.errno_name() == "ENOMEM", "{what}: {e}"),
    }
}

/// A child's writes through PTE tables shared with its parent, under a
/// limit that the page tables nearly fill: each write needs a table (to
/// unshare) and a page (to copy) at once, and reclaim can free only data
/// pages, which the same fault then swaps back in. Every access must
/// answer (the fault once spun forever between reclaim and swap-in), with
/// the right bytes or ENOMEM, and the machine stays consistent. With room
/// for the 16 page tables, a page and its copy, every access succeeds.
#[test]
fn faults_needing_table_and_page_under_a_tight_limit_answer() {
    for limit in [16u64, 17, 18, 20, 24] {
        finishes(&format!("limit {limit} pages"), move || {
            let may_fail = limit < 18;
            let m = limited(limit, device(16));
            let parent = m.new_mm().expect("mm");
            let base = 0x1000_0000u64;
            let at = |i: u64| base + i * (2 << 20);
            parent.mmap(base, 10 << 20, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
            for i in 0..5 {
                parent.write(at(i), b"x").expect("parent write");
            }
            let child = parent.fork_with(ForkPolicy::SharedTables).expect("fork");
            let mut written = [false; 5];
            for (i, w) in written.iter_mut().enumerate() {
                let got = child.write(at(i as u64), b"y");
                *w = got.is_ok();
                right_bytes_or_enomem(got, b"", b"", may_fail, &format!("limit {limit}: child write {i}"));
                m.check_invariants().expect("audit after a child write");
            }
            for i in 0..5u64 {
                let mut b = [0u8; 1];
                let got = parent.read(at(i), &mut b);
                right_bytes_or_enomem(got, &b, b"x", may_fail, &format!("limit {limit}: parent page {i}"));
                let got = child.read(at(i), &mut b);
                let want: &[u8] = if written[i as usize] { b"y" } else { b"x" };
                right_bytes_or_enomem(got, &b, want, may_fail, &format!("limit {limit}: child page {i}"));
                m.check_invariants().expect("audit after reads");
            }
        });
    }
}

/// A swap file path that exists is never reused: the machine is refused
/// with EEXIST and a message naming the path, and the file is left alone.
/// One that does not exist is unlinked at once (nothing to leave behind).
#[test]
fn an_existing_swap_file_is_refused_by_name() {
    let path = std::env::temp_dir().join(format!("softmm-reclaim-test-{}-exists", std::process::id()));
    std::fs::write(&path, b"someone's").expect("write");
    let config = || Config {
        arena_bytes: 16 << 20,
        mem_limit: Some(64 * PAGE),
        swap: SwapConfig::File { path: path.clone(), bytes: 1 << 20 },
        ..Config::default()
    };
    let Err(e) = Machine::new(config()) else { panic!("an existing swap file is refused") };
    assert_eq!(e.errno_name(), "EEXIST", "{e}");
    assert_eq!(e.to_string(), format!("swap file {} exists; remove it or choose another", path.display()));
    assert_eq!(std::fs::read(&path).expect("read"), b"someone's");
    std::fs::remove_file(&path).expect("remove");
    let m = Machine::new(config()).expect("machine");
    assert!(!path.exists(), "the swap file is unlinked as soon as it is open");
    drop(m);
}

/// A full swap device: the allocation that finds no frame and no slot
/// fails with ENOMEM and a message naming the full device; every page on
/// swap stays readable (a page-in may take the last frame, and reclaim
/// frees it again by dropping a page read back, which needs no new slot),
/// and writes to written pages go on (each frees its slot).
#[test]
fn a_full_swap_device_is_named_and_loses_no_data() {
    finishes("full swap", || {
        let m = limited(16, Arc::new(FaultySwap::new(MemSwap::new(16 * PAGE).expect("mem swap"))));
        let mm = m.new_mm().expect("mm");
        mm.mmap(BASE, 64 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
        let mut n = 0;
        let full = loop {
            match mm.write(BASE + n * PAGE, &pattern(1, BASE + n * PAGE, 0)) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
            assert!(n < 64, "16 frames and 16 slots hold all 64 pages");
        };
        assert_eq!(full.errno_name(), "ENOMEM", "{full}");
        assert_eq!(
            full.to_string(),
            "out of memory: frame limit reached and no space left on swap device faulty memory (64 KiB)"
        );
        assert!(m.stats().swap_used == 16 && n > 16, "{n} pages written, {} slots used", m.stats().swap_used);
        check(&mm);
        for round in 0..2 {
            for i in 0..n {
                let va = BASE + i * PAGE;
                let mut b = [0u8; 16];
                mm.read(va, &mut b).unwrap_or_else(|e| panic!("round {round}: read of page {i}: {e}"));
                assert_eq!(b, pattern(1, va, 0), "round {round}: page {i}");
            }
            check(&mm);
        }
        for i in 0..n {
            let va = BASE + i * PAGE;
            mm.write(va, &pattern(1, va, 1)).unwrap_or_else(|e| panic!("rewrite of page {i}: {e}"));
        }
        check(&mm);
        for i in 0..n {
            assert_eq!(read_page(&mm, BASE + i * PAGE), pattern(1, BASE + i * PAGE, 1), "page {i}");
        }
        check(&mm);
    });
}
