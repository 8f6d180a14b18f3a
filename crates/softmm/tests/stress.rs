//! Real-thread stress: accessors (every other round of word accesses in one
//! accessor batch) and remote accesses racing with fork, COW, munmap, mmap,
//! mprotect and madvise. Bounded by iteration counts (a few
//! seconds in release builds), checked exactly:
//! - a thread's own words always read back what it last wrote;
//! - atomic counters shared by all threads end at exactly the number of
//!   increments (no update lost to a COW racing with a fetch_add);
//! - a child sees a snapshot of the parent that is consistent with what
//!   every thread had written before and after the fork;
//! - bytes of the region that is unmapped and remapped under the threads'
//!   feet are always 0 or a value some thread wrote there;
//! - the machine audit holds at the end, and every frame comes back.

mod common;
use common::*;
use softmm::{errno, Advice, Error, GuestWords, MapKind, Mm, Prot, SegvKind};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const PAGE: u64 = 4096;
/// Never unmapped: each writer's own pages, then the shared counter pages.
const STABLE: u64 = 0x1000_0000;
/// Unmapped, remapped, write-protected and zapped by the forker.
const VOLATILE: u64 = 0x2000_0000;
const VOLATILE_PAGES: u64 = 8;

const WRITERS: u64 = 3;
const OWN_PAGES: u64 = 4;
/// Words written per own page, spread over the page.
const WORDS: u64 = 8;
const COUNTER_PAGES: u64 = 2;
const COUNTERS_PER_PAGE: u64 = 4;
const FORKS: u64 = 10_000;
/// Writers keep going until the forker is done, but at least this long.
const MIN_ITERS: u64 = 2_000;
const MAX_ITERS: u64 = 2_000_000;

fn own_word(w: u64, page: u64, j: u64) -> u64 {
    STABLE + (w * OWN_PAGES + page) * PAGE + j * (PAGE / WORDS)
}

fn counter(c: u64) -> u64 {
    let page = c / COUNTERS_PER_PAGE;
    STABLE + (WRITERS * OWN_PAGES + page) * PAGE + (c % COUNTERS_PER_PAGE) * 64
}

const COUNTERS: u64 = COUNTER_PAGES * COUNTERS_PER_PAGE;
const STABLE_PAGES: u64 = WRITERS * OWN_PAGES + COUNTER_PAGES;

/// The value writer `w` stores at word `j` of its page `page` in iteration
/// `it` (1-based): everything needed to tell where it belongs.
fn tag(w: u64, page: u64, j: u64, it: u64) -> u64 {
    0x5a << 56 | w << 48 | page << 40 | j << 32 | it
}

/// The iteration of a tag, if the tag belongs at (w, page, j).
fn tag_iter(v: u64, w: u64, page: u64, j: u64) -> Option<u64> {
    (v >> 32 == tag(w, page, j, 0) >> 32).then_some(v & 0xffff_ffff)
}

/// Words written to the volatile region: the high half is the complement of
/// the low half, so a value that is neither 0 nor of this form was never
/// written by anyone.
fn vword(x: u32) -> u64 {
    u64::from(x) << 32 | u64::from(!x)
}

fn vword_ok(v: u64) -> bool {
    v == 0 || (v >> 32) as u32 == !(v as u32)
}

/// Bytes written to the volatile region (second half of each page).
fn vbyte(w: u64) -> u8 {
    0xa0 + w as u8
}

fn vbyte_ok(b: u8) -> bool {
    b == 0 || (0xa0..0xa0 + WRITERS as u8).contains(&b)
}

fn volatile_fault_ok(e: &Error, write: bool) -> bool {
    match e {
        Error::Segv { kind: SegvKind::MapErr, addr } => (VOLATILE..VOLATILE + VOLATILE_PAGES * PAGE).contains(addr),
        Error::Segv { kind: SegvKind::AccErr, .. } => write,
        _ => false,
    }
}

struct Progress {
    /// The iteration each writer is in (set before its first write).
    started: Vec<AtomicU64>,
    /// The last iteration each writer completed.
    done: Vec<AtomicU64>,
    forker_done: AtomicBool,
}

fn writer(p: &Mm, w: u64, prog: &Progress) -> u64 {
    let mut acc = p.accessor();
    let mut it = 0;
    while it < MAX_ITERS && (it < MIN_ITERS || !prog.forker_done.load(Ordering::Acquire)) {
        it += 1;
        // Every other iteration runs its word accesses in one accessor
        // batch, which the forker's forks, COW faults and munmaps wait for.
        if it % 2 == 1 {
            word_round(&mut acc.batch(), w, it, prog);
        } else {
            word_round(&mut acc, w, it, prog);
        }
        if it % 4 == 0 {
            let vp = VOLATILE + (it * 3 + w) % VOLATILE_PAGES * PAGE;
            if let Err(e) = acc.fill_bytes(vp + PAGE / 2, 256, vbyte(w)) {
                assert!(volatile_fault_ok(&e, true), "{e:?}");
            }
            let mut buf = [0u8; 256];
            match acc.read(vp + PAGE / 2 + 128, &mut buf) {
                Ok(()) => assert!(buf.iter().all(|&b| vbyte_ok(b)), "read {buf:x?} from the volatile region"),
                Err(e) => assert!(volatile_fault_ok(&e, false), "{e:?}"),
            }
        }
    }
    it
}

/// Iteration `it` of writer `w`'s word accesses: its own words written and
/// read back, the shared counters bumped, a word of the volatile region
/// written and one read (faults are fine there, wrong data is not).
fn word_round(acc: &mut impl GuestWords, w: u64, it: u64, prog: &Progress) {
    prog.started[w as usize].store(it, Ordering::SeqCst);
    for page in 0..OWN_PAGES {
        for j in 0..WORDS {
            acc.store_u64(own_word(w, page, j), tag(w, page, j, it)).unwrap();
        }
    }
    for page in 0..OWN_PAGES {
        for j in 0..WORDS {
            let got = acc.load_u64(own_word(w, page, j)).unwrap();
            assert_eq!(got, tag(w, page, j, it), "writer {w} lost its write to page {page} word {j}");
        }
    }
    prog.done[w as usize].store(it, Ordering::SeqCst);
    for c in 0..COUNTERS {
        acc.fetch_add_u64(counter(c), 1).unwrap();
    }
    let vp = VOLATILE + (it * 3 + w) % VOLATILE_PAGES * PAGE;
    let x = (w << 24 | it) as u32;
    if let Err(e) = acc.store_u64(vp + 8 * (it % 64), vword(x)) {
        assert!(volatile_fault_ok(&e, true), "{e:?}");
    }
    match acc.load_u64(vp + 8 * ((it + 1) % 64)) {
        Ok(v) => assert!(vword_ok(v), "read {v:#x} from the volatile region"),
        Err(e) => assert!(volatile_fault_ok(&e, false), "{e:?}"),
    }
}

/// What a child must see of writer `w`'s words, given the writer's progress
/// read before the fork (`done`) and after it (`started`).
fn check_child_snapshot(child: &Mm, done: &[u64], started: &[u64]) {
    let mut acc = child.accessor();
    for w in 0..WRITERS {
        let (lo, hi) = (done[w as usize], started[w as usize]);
        for page in 0..OWN_PAGES {
            for j in 0..WORDS {
                let v = acc.load_u64(own_word(w, page, j)).unwrap();
                let ok = match tag_iter(v, w, page, j) {
                    Some(it) => lo <= it && it <= hi,
                    None => v == 0 && lo == 0,
                };
                assert!(ok, "child sees {v:#x} at writer {w} page {page} word {j}; writer was at {lo}..={hi}");
            }
        }
    }
    for c in 0..COUNTERS {
        let v = acc.load_u64(counter(c)).unwrap();
        assert!(v <= WRITERS * MAX_ITERS, "child sees counter {c} = {v}");
    }
    for i in 0..VOLATILE_PAGES * PAGE / 8 {
        match acc.load_u64(VOLATILE + i * 8) {
            // First half of each page: words; second half: bytes.
            Ok(v) => assert!(
                if i % 512 < 256 { vword_ok(v) } else { v.to_ne_bytes().iter().all(|&b| vbyte_ok(b)) },
                "child sees {v:#x} in the volatile region"
            ),
            Err(e) => assert!(volatile_fault_ok(&e, false), "{e:?}"),
        }
    }
    // The child's own writes break COW and stay in the child.
    for w in 0..WRITERS {
        for page in 0..OWN_PAGES {
            let a = own_word(w, page, 1);
            acc.store_u64(a, 0xc41d).unwrap();
            assert_eq!(acc.load_u64(a).unwrap(), 0xc41d);
        }
    }
    for c in 0..COUNTERS {
        acc.fetch_add_u64(counter(c), 1 << 40).unwrap();
    }
    let mut buf = [0u8; 8];
    child.read(own_word(0, 0, 1), &mut buf).unwrap();
    assert_eq!(u64::from_ne_bytes(buf), 0xc41d);
}

fn forker(p: &Mm, prog: &Progress) {
    let mut children: VecDeque<Mm> = VecDeque::new();
    let snapshot = |v: &[AtomicU64]| v.iter().map(|a| a.load(Ordering::SeqCst)).collect::<Vec<_>>();
    for n in 0..FORKS {
        let done = snapshot(&prog.done);
        let child = p.fork().unwrap();
        let started = snapshot(&prog.started);
        if n % 2 == 0 {
            check_child_snapshot(&child, &done, &started);
        }
        children.push_back(child);
        if children.len() > 2 {
            children.pop_front();
        }
        let vlen = VOLATILE_PAGES * PAGE;
        match n % 6 {
            0 => p.munmap(VOLATILE, vlen).unwrap(),
            1 => map(p, VOLATILE, vlen, Prot::RW, MapKind::Private),
            2 => p.mprotect(VOLATILE + PAGE, 2 * PAGE, Prot::READ).unwrap(),
            3 => p.madvise(VOLATILE, vlen, Advice::DontNeed).unwrap(),
            4 => map(p, VOLATILE + 2 * PAGE, 4 * PAGE, Prot::RW, MapKind::Shared),
            _ => p.munmap(VOLATILE + 3 * PAGE, 2 * PAGE).unwrap(),
        }
    }
    prog.forker_done.store(true, Ordering::Release);
}

#[test]
fn accessors_race_with_fork_cow_and_unmap() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, STABLE, STABLE_PAGES * PAGE, Prot::RW, MapKind::Private);
    map(&p, VOLATILE, VOLATILE_PAGES * PAGE, Prot::RW, MapKind::Private);
    let prog = Progress {
        started: (0..WRITERS).map(|_| AtomicU64::new(0)).collect(),
        done: (0..WRITERS).map(|_| AtomicU64::new(0)).collect(),
        forker_done: AtomicBool::new(false),
    };
    let iters: Vec<u64> = std::thread::scope(|s| {
        let ws: Vec<_> = (0..WRITERS)
            .map(|w| {
                s.spawn({
                    let (p, prog) = (&p, &prog);
                    move || writer(p, w, prog)
                })
            })
            .collect();
        s.spawn(|| forker(&p, &prog));
        ws.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("writer iterations: {iters:?}; {:?}", m.stats());
    check(&p);

    // Every writer's last values, through a fresh accessor and through Mm::read.
    let mut acc = p.accessor();
    for w in 0..WRITERS {
        for page in 0..OWN_PAGES {
            for j in 0..WORDS {
                let want = tag(w, page, j, iters[w as usize]);
                assert_eq!(acc.load_u64(own_word(w, page, j)).unwrap(), want);
                assert_eq!(read(&p, own_word(w, page, j), 8), want.to_ne_bytes());
            }
        }
    }
    let total: u64 = iters.iter().sum();
    for c in 0..COUNTERS {
        assert_eq!(acc.load_u64(counter(c)).unwrap(), total, "counter {c} lost increments");
    }
    drop(acc);
    check(&p);
    let machine = p.machine();
    drop(p);
    assert_eq!(machine.stats().frames_in_use, 0);
    machine.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------
// The remote path: Mm::read / Mm::write / Mm::fill, no TLB
// ---------------------------------------------------------------------------

/// Writers come in pairs; each page belongs to one pair, each writer of
/// the pair owning one half of it. More threads than CPUs on purpose: a
/// writer preempted in the middle of a copy is what this test is about.
const PAIRS: u64 = 3;
const REMOTE_WRITERS: u64 = 2 * PAIRS;
const REMOTE_PAGES: u64 = 2 * PAIRS;
const HALF: usize = PAGE as usize / 2;
const REMOTE_FORKS: u64 = 20_000;
const REMOTE_MIN_ITERS: u64 = 2_000;

/// Writer `w` owns half `w % 2` of every page of pair `w / 2`.
fn remote_ranges(w: u64) -> impl Iterator<Item = u64> {
    (0..REMOTE_PAGES).filter(move |pg| pg % PAIRS == w / 2).map(move |pg| STABLE + pg * PAGE + (w % 2) * HALF as u64)
}

/// The bytes writer `w` stores in iteration `it`: the writer in the high
/// bits, so a byte tells whose it is; never 0.
fn remote_pattern(w: u64, it: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (w as u8) << 5 | ((it as usize + i) % 31 + 1) as u8).collect()
}

/// Returns the last bytes written to each range, or the first lost write.
fn remote_writer(p: &Mm, w: u64, forker_done: &AtomicBool) -> Result<Vec<Vec<u8>>, String> {
    let ranges: Vec<u64> = remote_ranges(w).collect();
    let mut last = vec![vec![0u8; HALF]; ranges.len()];
    let mut it = 0;
    while it < REMOTE_MIN_ITERS * 50 && (it < REMOTE_MIN_ITERS || !forker_done.load(Ordering::Acquire)) {
        it += 1;
        for (k, &a) in ranges.iter().enumerate() {
            let data = if it % 8 == 0 {
                let b = remote_pattern(w, it, 1)[0];
                p.fill(a, HALF, b).unwrap();
                vec![b; HALF]
            } else {
                let d = remote_pattern(w, it, HALF);
                p.write(a, &d).unwrap();
                d
            };
            let mut back = vec![0u8; HALF];
            p.read(a, &mut back).unwrap();
            if back != data {
                let at = back.iter().zip(&data).position(|(x, y)| x != y).unwrap();
                let lost = back.iter().zip(&data).filter(|(x, y)| x != y).count();
                return Err(format!(
                    "writer {w} iteration {it}: its write of {HALF} bytes to {a:#x} was lost: {lost} bytes read \
                     back differently (first at byte {at}: reads {:#04x}, wrote {:#04x})",
                    back[at], data[at]
                ));
            }
            last[k] = data;
        }
    }
    Ok(last)
}

#[test]
fn remote_access_races_with_fork_and_child_cow() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, STABLE, REMOTE_PAGES * PAGE, Prot::RW, MapKind::Private);
    let forker_done = AtomicBool::new(false);
    let last: Vec<Result<Vec<Vec<u8>>, String>> = std::thread::scope(|s| {
        let ws: Vec<_> = (0..REMOTE_WRITERS)
            .map(|w| {
                let (p, d) = (&p, &forker_done);
                s.spawn(move || remote_writer(p, w, d))
            })
            .collect();
        s.spawn(|| {
            let mut keep: Option<Mm> = None;
            for n in 0..REMOTE_FORKS {
                let child = p.fork().unwrap();
                // Every byte of the child is 0 or written by the writer that
                // owns it (a write in flight may be torn, never misplaced).
                let mut page = vec![0u8; PAGE as usize];
                for pg in 0..REMOTE_PAGES {
                    child.read(STABLE + pg * PAGE, &mut page).unwrap();
                    for (i, &b) in page.iter().enumerate() {
                        let owner = (pg % PAIRS) * 2 + (i / HALF) as u64;
                        assert!(b == 0 || u64::from(b >> 5) == owner, "child page {pg} byte {i} is {b:#04x}");
                    }
                }
                // The child writes too (COW in the child), with a byte no
                // writer uses; the parent must never see it.
                child.fill(STABLE + (n % REMOTE_PAGES) * PAGE + (n % 2) * HALF as u64 + 100, 64, 0xff).unwrap();
                child.write(STABLE + (n % REMOTE_PAGES) * PAGE, &[0xff; 8]).unwrap();
                if n % 3 == 0 {
                    keep = Some(child); // outlives the next fork
                }
            }
            drop(keep);
            forker_done.store(true, Ordering::Release);
        });
        ws.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let last: Vec<Vec<Vec<u8>>> = last.into_iter().collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{e}"));
    check(&p);
    for w in 0..REMOTE_WRITERS {
        for (k, a) in remote_ranges(w).enumerate() {
            assert!(read(&p, a, HALF) == last[w as usize][k], "writer {w} range {a:#x}: final contents differ");
        }
    }
    drop(p);
    assert_eq!(m.stats().frames_in_use, 0);
    m.check_invariants().unwrap();
}

const REMOTE_VOLATILE_ITERS: u64 = 20_000;

/// Remote accesses racing with munmap/mmap/mprotect/madvise/fork of the
/// range they touch: faults are fine, crashes and foreign bytes are not.
#[test]
fn remote_access_races_with_unmap_and_remap() {
    let m = machine();
    let p = m.new_mm().unwrap();
    let len = VOLATILE_PAGES * PAGE;
    map(&p, VOLATILE, len, Prot::RW, MapKind::Private);
    let running = std::sync::atomic::AtomicUsize::new(2);
    let mut changes = 0u64;
    std::thread::scope(|s| {
        for w in 0..2u64 {
            let (p, running) = (&p, &running);
            s.spawn(move || {
                let mut buf = vec![0u8; 3 * PAGE as usize];
                for n in 0..REMOTE_VOLATILE_ITERS {
                    let a = VOLATILE + (n * 5 + w * 3) % (VOLATILE_PAGES - 2) * PAGE + 7;
                    if let Err(e) = p.fill(a, 2 * PAGE as usize, vbyte(w)) {
                        assert!(volatile_fault_ok(&e, true), "{e:?}");
                    }
                    match p.read(a - 7, &mut buf) {
                        Ok(()) => assert!(buf.iter().all(|&b| vbyte_ok(b)), "foreign byte read"),
                        Err(e) => assert!(volatile_fault_ok(&e, false), "{e:?}"),
                    }
                }
                running.fetch_sub(1, Ordering::Release);
            });
        }
        while running.load(Ordering::Acquire) > 0 {
            match changes % 7 {
                0 => p.munmap(VOLATILE, len).unwrap(),
                1 => map(&p, VOLATILE, len, Prot::RW, [MapKind::Private, MapKind::Shared][(changes / 7 % 2) as usize]),
                2 => p.madvise(VOLATILE, len, Advice::DontNeed).unwrap(),
                3 => p.mprotect(VOLATILE, len / 2, Prot::READ).unwrap(),
                // Advice while the remote threads fault and write: EINVAL
                // (FREE of shared memory, a populating write of the
                // read-only half) and ENOMEM (unmapped) are expected.
                4 => madvise_racing(&p, VOLATILE, len, Advice::Free),
                5 => {
                    madvise_racing(&p, VOLATILE, len, Advice::PageOut);
                    madvise_racing(&p, VOLATILE, len, Advice::PopulateWrite);
                }
                _ => drop(p.fork().unwrap()),
            }
            changes += 1;
            std::thread::yield_now();
        }
    });
    eprintln!("{changes} address-space changes; {:?}", m.stats());
    check(&p);
    drop(p);
    assert_eq!(m.stats().frames_in_use, 0);
}

/// The audit may run while remote accesses are in flight: an access holds
/// its page's reference only while it holds the `mmap_lock`, so the audit
/// (which takes every `mmap_lock` for writing) never counts a stray one.
/// (It did: `Mm::read` dropped the reference just after the lock, and an
/// audit in between reported the frame's refcount one too high.)
#[test]
fn audit_during_remote_accesses_sees_no_stray_reference() {
    let m = machine();
    let p = m.new_mm().unwrap();
    map(&p, STABLE, 4 * PAGE, Prot::RW, MapKind::Private);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..2u64 {
            let (p, stop) = (&p, &stop);
            s.spawn(move || {
                let mut b = [0u8; 8];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let a = STABLE + (n + w) % 4 * PAGE;
                    p.write(a, &n.to_ne_bytes()).unwrap();
                    p.read(a, &mut b).unwrap();
                    n += 1;
                }
            });
        }
        let mut failure = None;
        for _ in 0..AUDITS_DURING_ACCESSES {
            if let Err(e) = p.check_invariants() {
                failure = Some(e);
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(e) = failure {
            panic!("audit during remote accesses: {e}");
        }
    });
    check(&p);
}

/// Audits run against the accessing threads (each takes every lock once).
const AUDITS_DURING_ACCESSES: u32 = 20_000;

/// madvise during the race: Ok, or an errno the range's state explains.
fn madvise_racing(p: &Mm, addr: u64, len: u64, advice: Advice) {
    if let Err(e) = p.madvise(addr, len, advice) {
        assert!([errno::EINVAL, errno::ENOMEM].contains(&e.errno()), "{advice:?}: {e}");
    }
}
