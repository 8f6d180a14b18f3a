//! MMU notifiers: which operation sends which event, over which range,
//! once per operation; registration and the interval sequence count.

// Callbacks are what these tests check; a build without notifiers has none.
#![cfg(not(softmm_no_notifiers))]

mod common;

use softmm::notifier::{Again, Event, IntervalHandle, IntervalOps, MmuNotifier, Range};
use softmm::{Advice, MapKind, Placement, Prot};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;

#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<(char, u64, u64, Event)>>,
    releases: AtomicU64,
}

impl Recorder {
    fn take(&self) -> Vec<(char, u64, u64, Event)> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

impl MmuNotifier for Recorder {
    fn invalidate_range_start(&self, r: &Range) -> Result<(), Again> {
        self.log.lock().expect("log").push(('s', r.start, r.end, r.event));
        Ok(())
    }
    fn invalidate_range_end(&self, r: &Range) {
        self.log.lock().expect("log").push(('e', r.start, r.end, r.event));
    }
    fn release(&self) {
        self.releases.fetch_add(1, Ordering::Relaxed);
    }
}

fn pair(start: u64, end: u64, ev: Event) -> Vec<(char, u64, u64, Event)> {
    vec![('s', start, end, ev), ('e', start, end, ev)]
}

#[test]
fn each_operation_sends_one_pair_with_its_event_and_range() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    let rec = Arc::new(Recorder::default());
    let _sub = mm.register_notifier(rec.clone());
    let gib = 1u64 << 30;
    mm.mmap(BASE, gib, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    assert_eq!(rec.take(), vec![], "mapping new memory strands nothing");
    for i in 0..64 {
        mm.write(BASE + i * (16 << 20), &[1]).expect("write");
    }
    assert_eq!(rec.take(), vec![], "demand faults strand nothing");
    mm.mprotect(BASE, 16 * PAGE, Prot::READ).expect("mprotect");
    assert_eq!(rec.take(), pair(BASE, BASE + 16 * PAGE, Event::Protection));
    mm.madvise(BASE + gib / 2, 8 * PAGE, Advice::DontNeed).expect("madvise");
    assert_eq!(rec.take(), pair(BASE + gib / 2, BASE + gib / 2 + 8 * PAGE, Event::Clear));
    // Fork write-protects the parent's private memory: one pair per VMA.
    let child = mm.fork().expect("fork");
    let log = rec.take();
    assert!(log.iter().all(|l| l.3 == Event::Protection), "{log:?}");
    assert_eq!(log.len(), 2 * mm.mappings().len());
    // A COW write: one page.
    mm.write(BASE + (16 << 20), &[2]).expect("cow");
    let log = rec.take();
    assert!(log.contains(&('s', BASE + (16 << 20), BASE + (16 << 20) + PAGE, Event::Cow)), "{log:?}");
    assert_eq!(log.iter().filter(|l| l.0 == 's').count(), log.iter().filter(|l| l.0 == 'e').count());
    drop(child);
    // munmap of the whole GiB: exactly one pair.
    mm.munmap(BASE, gib).expect("munmap");
    assert_eq!(rec.take(), pair(BASE, BASE + gib, Event::Unmap));
    assert_eq!(rec.releases.load(Ordering::Relaxed), 0);
    drop(mm);
    let log = rec.take();
    assert_eq!(log, pair(0, softmm::pgtable::TASK_SIZE, Event::Release));
    assert_eq!(rec.releases.load(Ordering::Relaxed), 1, "release once at teardown");
}

#[test]
fn unregistered_subscribers_hear_nothing_more() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    let rec = Arc::new(Recorder::default());
    let sub = mm.register_notifier(rec.clone());
    mm.mmap(BASE, 4 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    mm.munmap(BASE, PAGE).expect("munmap");
    assert_eq!(rec.take().len(), 2);
    drop(sub);
    mm.munmap(BASE, 4 * PAGE).expect("munmap");
    drop(mm);
    assert_eq!(rec.take(), vec![]);
    assert_eq!(rec.releases.load(Ordering::Relaxed), 0);
}

/// Registration racing invalidations on real threads: every start a
/// subscriber sees has its end, with the same range.
#[test]
fn registration_never_splits_a_pair() {
    let m = common::machine();
    let mm = Arc::new(m.new_mm().expect("mm"));
    mm.mmap(BASE, 64 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (mm, stop) = (mm.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = BASE + (i % 64) * PAGE;
                mm.write(p, &[1]).expect("write");
                mm.madvise(p, PAGE, Advice::DontNeed).expect("madvise");
                i += 1;
            }
        })
    };
    for _ in 0..200 {
        let rec = Arc::new(Recorder::default());
        let sub = mm.register_notifier(rec.clone());
        std::thread::yield_now();
        drop(sub);
        let log = rec.take();
        for pair in log.chunks(2) {
            assert!(pair.len() == 2 && pair[0].0 == 's' && pair[1].0 == 'e', "{log:?}");
            assert_eq!((pair[0].1, pair[0].2, pair[0].3), (pair[1].1, pair[1].2, pair[1].3));
        }
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("worker");
}

struct Seq {
    lock: Mutex<()>,
    hits: AtomicU64,
}

impl IntervalOps for Seq {
    fn invalidate(&self, h: &IntervalHandle<'_>, _r: &Range, cur: u64) -> bool {
        let _g = self.lock.lock().expect("lock");
        h.set_seq(cur);
        self.hits.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[test]
fn interval_sequence_makes_a_racing_install_retry() {
    let m = common::machine();
    let mm = m.new_mm().expect("mm");
    mm.mmap(BASE, 16 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).expect("mmap");
    let ops = Arc::new(Seq { lock: Mutex::new(()), hits: AtomicU64::new(0) });
    let iv = mm.insert_interval_notifier(BASE + 4 * PAGE, 4 * PAGE, ops.clone()).expect("interval");
    // No overlap: no callback, no sequence change.
    let seq = iv.read_begin();
    mm.madvise(BASE, 4 * PAGE, Advice::DontNeed).expect("madvise");
    assert!(!iv.read_retry(seq));
    assert_eq!(ops.hits.load(Ordering::Relaxed), 0);
    // Overlap: the callback runs and a lookup begun before must retry.
    let seq = iv.read_begin();
    mm.madvise(BASE + 6 * PAGE, PAGE, Advice::DontNeed).expect("madvise");
    assert!(iv.read_retry(seq));
    assert_eq!(ops.hits.load(Ordering::Relaxed), 1);
    assert_eq!(iv.seen_seq() % 2, 1, "callbacks see an odd (invalidating) sequence");
    let seq2 = iv.read_begin();
    assert!(!iv.read_retry(seq2));
    drop(iv);
    mm.madvise(BASE + 6 * PAGE, PAGE, Advice::DontNeed).expect("madvise");
    assert_eq!(ops.hits.load(Ordering::Relaxed), 1, "removed intervals hear nothing");
    assert!(mm.insert_interval_notifier(BASE, 0, ops).is_err(), "empty interval");
}
