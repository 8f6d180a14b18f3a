//! Loom models of wait vs COW vs wake (physical keys).
//!
//! The futex table, the vcache and the callback (`table::follow`) are the
//! real code; the page table is one modelled entry of address space C (a
//! frame number in an atomic, changed under a modelled page-table lock),
//! and frames are modelled reference counts and futex words. The waiter's
//! and the waker's steps are those of `Mm::futex_wait_start` and
//! `Mm::futex_wake_bitset`, in the same order.
//!
//! Checked: no lost wake-up (a waiter queued before the word changed is
//! woken by the wake that follows the change), no waiter left keyed by a
//! frame its page no longer maps, and exact frame reference counts at the
//! end (nothing freed twice, nothing leaked).

use super::key::FutexKey;
use super::table::{follow, release, settle, Check, FrameRefs, FutexTable, Node, Notify, WaitState};
use crate::phys::FrameId;
use crate::sync::{Arc, AtomicU32, AtomicUsize, Mutex, Ordering};
use crate::vcache::{Translation, Vcache};

const C: u64 = 7; // the waiter's address space
const PAGE: u64 = 0x1000;
const ADDR: u64 = 0x1008;
const NFRAMES: usize = 4;

struct World {
    table: FutexTable,
    vcache: Vcache<Node>,
    users: Arc<AtomicUsize>,
    /// C's PTE for PAGE: a frame number; `ro` says write-protected.
    pte: AtomicU32,
    ro: AtomicU32,
    ptl: Mutex<()>,
    refs: [AtomicU32; NFRAMES],
    /// Waiters keyed by each frame (`FrameMeta::futex_keys`): never more
    /// than the references they hold.
    keyed: [AtomicU32; NFRAMES],
    words: [AtomicU32; NFRAMES],
    next: AtomicU32,
}

impl FrameRefs for World {
    fn get(&self, f: FrameId) {
        let old = self.refs[f.0 as usize].fetch_add(1, Ordering::SeqCst);
        assert!(old > 0, "reference taken on free frame {}", f.0);
    }
    fn put(&self, f: FrameId) {
        let old = self.refs[f.0 as usize].fetch_sub(1, Ordering::SeqCst);
        assert!(old > 0, "frame {} freed twice", f.0);
        let keyed = self.keyed[f.0 as usize].load(Ordering::SeqCst);
        assert!(keyed < old, "frame {}: {keyed} keyed waiters but {} references left", f.0, old - 1);
    }
    fn key_on(&self, f: FrameId) {
        let old = self.keyed[f.0 as usize].fetch_add(1, Ordering::SeqCst);
        let refs = self.refs[f.0 as usize].load(Ordering::SeqCst);
        assert!(old < refs, "frame {}: {} keyed waiters but {refs} references", f.0, old + 1);
    }
    fn key_off(&self, f: FrameId) {
        let old = self.keyed[f.0 as usize].fetch_sub(1, Ordering::SeqCst);
        assert!(old > 0, "frame {}: keyed waiter count underflow", f.0);
    }
}

impl World {
    /// Frame 1 maps C's page, shared with a parent (refcount 2, read-only).
    fn new(word: u32) -> World {
        World {
            table: FutexTable::default(),
            vcache: Vcache::default(),
            users: Arc::new(AtomicUsize::new(0)),
            pte: AtomicU32::new(1),
            ro: AtomicU32::new(1),
            ptl: Mutex::new(()),
            refs: [AtomicU32::new(1), AtomicU32::new(2), AtomicU32::new(0), AtomicU32::new(0)],
            keyed: [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)],
            words: [AtomicU32::new(0), AtomicU32::new(word), AtomicU32::new(0), AtomicU32::new(0)],
            next: AtomicU32::new(2),
        }
    }

    /// `translation`: the frame C's page maps, referenced (try_get + recheck).
    fn lookup(&self) -> Translation {
        loop {
            let f = self.pte.load(Ordering::SeqCst);
            let r = &self.refs[f as usize];
            let cur = r.load(Ordering::SeqCst);
            if cur > 0 && r.compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                if self.pte.load(Ordering::SeqCst) == f {
                    return Translation::Frame(FrameId(f));
                }
                self.put(FrameId(f));
            }
            crate::sync::spin_hint();
        }
    }

    /// A store of `v` to the word by a thread of C: COW first if the page
    /// is write-protected (copy, new PTE, drop C's reference on the old
    /// frame), then — after the page-table lock — fire the vcache.
    fn store(&self, v: u32) {
        let cowed = {
            let _ptl = self.ptl.lock();
            let old = self.pte.load(Ordering::SeqCst);
            let cow = self.ro.load(Ordering::SeqCst) == 1;
            if cow {
                let g = self.next.fetch_add(1, Ordering::SeqCst);
                self.words[g as usize].store(self.words[old as usize].load(Ordering::SeqCst), Ordering::SeqCst);
                self.refs[g as usize].store(1, Ordering::SeqCst);
                self.pte.store(g, Ordering::SeqCst);
                self.ro.store(0, Ordering::SeqCst);
                self.put(FrameId(old));
            }
            self.words[self.pte.load(Ordering::SeqCst) as usize].store(v, Ordering::SeqCst);
            cow
        };
        if cowed {
            self.invalidate();
        }
    }

    /// A write elsewhere in the page (COW without changing the word).
    fn touch(&self) {
        let v = {
            let _ptl = self.ptl.lock();
            self.words[self.pte.load(Ordering::SeqCst) as usize].load(Ordering::SeqCst)
        };
        // Racy by design only in the model's eyes: the word is not changed
        // by anyone else in the scenarios that use this.
        self.store(v);
    }

    fn invalidate(&self) {
        self.vcache.invalidate(&self.users, C, PAGE, PAGE + 4096, |node, page| {
            follow(&self.table, self, node, C, page, &|_| self.lookup())
        });
    }

    /// `futex_wait_start` in C, expecting `val`. Returns the queued node.
    fn wait(&self, val: u32) -> Option<Arc<Node>> {
        let key_of = |f: FrameId| FutexKey::Frame { frame: f, offset: (ADDR & 0xfff) as u32 };
        let Translation::Frame(first) = self.lookup() else { unreachable!() };
        let track = Some((C, PAGE, None));
        let node = Arc::new(Node::with(key_of(first), u32::MAX, Notify::None, track));
        let mut first = Some(first);
        let mut attached = false;
        loop {
            let f = match first.take() {
                Some(f) => f,
                None => {
                    let Translation::Frame(f) = self.lookup() else { unreachable!() };
                    node.set_key(&mut node.inner.lock(), key_of(f));
                    f
                }
            };
            let mut vb = self.vcache.lock(C, PAGE);
            if !attached {
                vb.attach(&self.users, C, PAGE, node.clone());
                attached = true;
            } else {
                crate::sync::fence(Ordering::SeqCst);
            }
            let key = key_of(f);
            let verdict = self.table.queue(&node, key, self, || {
                if self.pte.load(Ordering::SeqCst) != f.0 {
                    return Check::Retry;
                }
                if self.words[f.0 as usize].load(Ordering::SeqCst) == val {
                    Check::Queue
                } else {
                    Check::Again
                }
            });
            drop(vb);
            match verdict {
                Check::Queue => return Some(node),
                Check::Retry => self.put(f),
                Check::Again => {
                    self.put(f);
                    self.finish(&node);
                    return None;
                }
            }
        }
    }

    /// `futex_wake_bitset` in C (no faulting; with C's entries present, the
    /// vcache bucket held and pending moves settled, as `settled` does).
    fn wake(&self) -> u32 {
        if self.users.load(Ordering::SeqCst) == 0 {
            // `resolve::peek`: nobody waiting is answered from the entry,
            // without a reference.
            let peeked =
                FutexKey::Frame { frame: FrameId(self.pte.load(Ordering::SeqCst)), offset: (ADDR & 0xfff) as u32 };
            if !self.table.maybe_waiters(&peeked) {
                return 0;
            }
            let Translation::Frame(f) = self.lookup() else { unreachable!() };
            let key = FutexKey::Frame { frame: f, offset: (ADDR & 0xfff) as u32 };
            let n = if self.table.maybe_waiters(&key) { self.table.wake(&key, 1, u32::MAX) } else { 0 };
            self.put(f);
            return n;
        }
        let mut vb = self.vcache.lock(C, PAGE);
        let now = self.lookup();
        settle(&self.table, self, &vb, C, PAGE, now);
        let Translation::Frame(f) = now else { unreachable!() };
        let key = FutexKey::Frame { frame: f, offset: (ADDR & 0xfff) as u32 };
        let woken = self
            .table
            .wake_expected(&key, 1, u32::MAX, |node, inner| release(&mut vb, self, &self.users, C, PAGE, node, inner));
        drop(vb);
        self.put(f);
        woken.notify()
    }

    /// `waiter::leave`, the library's own code: off the queue, detached,
    /// key reference dropped.
    fn finish(&self, node: &Arc<Node>) -> WaitState {
        super::waiter::leave_from(&self.table, &self.vcache, &self.users, self, node)
    }

    /// Every frame's count equals its mappings (C's PTE, the parent's
    /// mapping of frame 1, frame 0 reserved).
    fn check_refs(&self) {
        let cur = self.pte.load(Ordering::SeqCst) as usize;
        for (i, r) in self.refs.iter().enumerate() {
            let want = u32::from(i == 0) + u32::from(i == 1) + u32::from(i == cur);
            assert_eq!(r.load(Ordering::SeqCst), want, "frame {i}");
            assert_eq!(self.keyed[i].load(Ordering::SeqCst), 0, "frame {i} keyed");
        }
        assert_eq!(self.users.load(Ordering::SeqCst), 0);
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(f);
}

/// The waker's own store breaks COW and moves the waiter; its wake must
/// still find it.
#[test]
fn wait_vs_cow_by_the_wakers_store() {
    model(|| {
        let w = Arc::new(World::new(0));
        let w2 = w.clone();
        let waker = loom::thread::spawn(move || {
            w2.store(1);
            w2.wake()
        });
        let node = w.wait(0);
        let woken = waker.join().unwrap_or(0);
        if let Some(node) = node {
            assert_eq!(node.state(), WaitState::Woken, "lost wake-up");
            assert_eq!(woken, 1);
            assert_eq!(w.finish(&node), WaitState::Woken);
        }
        w.check_refs();
    });
}

/// A COW by another thread races the wait: a waiter that stays queued is
/// keyed by the frame its page maps at the end, never by the old one.
#[test]
fn wait_vs_cow_no_stale_key() {
    model(|| {
        let w = Arc::new(World::new(0));
        let w2 = w.clone();
        let cow = loom::thread::spawn(move || w2.touch());
        let node = w.wait(0);
        let _ = cow.join();
        let node = node.expect("the word stays 0: the wait must queue");
        let key = node.inner.lock().key;
        let now = FrameId(w.pte.load(Ordering::SeqCst));
        assert_eq!(key, FutexKey::Frame { frame: now, offset: (ADDR & 0xfff) as u32 }, "stale key");
        assert_eq!(w.wake(), 1);
        assert_eq!(w.finish(&node), WaitState::Woken);
        w.check_refs();
    });
}

/// Wake vs a COW by a third thread, with the word already changed before
/// the page was shared (the waker looked at the page before the COW moved
/// the waiter): the waiter must be woken.
#[test]
fn wake_vs_cow_by_another_thread() {
    model(|| {
        let w = Arc::new(World::new(0));
        // Queue first, then change the word while the page is writable.
        w.ro.store(0, Ordering::SeqCst);
        w.refs[1].store(1, Ordering::SeqCst); // only C maps it
        let node = w.wait(0).expect("queued");
        w.store(1);
        // "fork": the parent maps frame 1 again, write-protected.
        w.refs[1].fetch_add(1, Ordering::SeqCst);
        w.ro.store(1, Ordering::SeqCst);
        let w2 = w.clone();
        let cow = loom::thread::spawn(move || w2.touch());
        let n = w.wake();
        let _ = cow.join();
        assert_eq!(n, 1, "lost wake-up");
        assert_eq!(node.state(), WaitState::Woken);
        assert_eq!(w.finish(&node), WaitState::Woken);
        w.check_refs();
    });
}

/// A wake that detaches the woken waiter's vcache entry itself (`release`)
/// races the waiter leaving on its own (a cancel or timeout: `finish`) and
/// a COW moving it: the entry is detached, and the key's reference dropped,
/// exactly once, whoever gets there first.
#[test]
fn wake_release_vs_finish_vs_cow() {
    model(|| {
        let w = Arc::new(World::new(0));
        let node = w.wait(0).expect("queued");
        let w2 = w.clone();
        let cow = loom::thread::spawn(move || w2.touch());
        let w3 = w.clone();
        let n2 = node.clone();
        let leaver = loom::thread::spawn(move || w3.finish(&n2));
        let woken = w.wake();
        let end = leaver.join().unwrap_or(WaitState::Idle);
        let _ = cow.join();
        assert_eq!(woken == 1, end == WaitState::Woken, "woken {woken} but the waiter ended {end:?}");
        assert_ne!(end, WaitState::Idle);
        w.check_refs();
    });
}

/// The system call a waker skips (`Node::wake_sleeper` against
/// `waiter::sleep`): the waker stores the state, fences and reads
/// `sleeping`; the waiter stores `sleeping`, fences, and sleeps in the
/// kernel if the state still says waiting. The kernel's futex is modelled
/// as its hash-bucket lock (a mutex) and its sleep queue (a condvar): it
/// compares the word and sleeps under the lock, and a wake takes the lock.
/// A lost wake leaves the waiter asleep forever, which loom reports.
/// `waker_fences`: whether the waker fences as `wake_sleeper` does.
fn sleeper_protocol(waker_fences: bool) {
    use loom::sync::atomic::{fence, AtomicBool};
    use loom::sync::{Condvar, Mutex};
    const WAITING: u32 = WaitState::Waiting as u32;
    loom::model(move || {
        let state = Arc::new(AtomicU32::new(WAITING));
        let sleeping = Arc::new(AtomicBool::new(false));
        let kernel = Arc::new((Mutex::new(()), Condvar::new()));
        let waker = {
            let (state, sleeping, kernel) = (state.clone(), sleeping.clone(), kernel.clone());
            loom::thread::spawn(move || {
                state.store(WaitState::Woken as u32, Ordering::Release);
                if waker_fences {
                    fence(Ordering::SeqCst);
                }
                if sleeping.load(Ordering::Relaxed) {
                    let _bucket = kernel.0.lock().unwrap();
                    kernel.1.notify_all();
                }
            })
        };
        while state.load(Ordering::Acquire) == WAITING {
            sleeping.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let bucket = kernel.0.lock().unwrap();
            if state.load(Ordering::Relaxed) == WAITING {
                drop(kernel.1.wait(bucket).unwrap());
            }
        }
        waker.join().unwrap();
    });
}

#[test]
fn a_skipped_wake_syscall_never_loses_the_waiter() {
    sleeper_protocol(true);
}

/// Without the waker's fence, both sides can miss each other's store.
#[test]
#[should_panic(expected = "deadlock")]
fn the_waker_fence_is_needed() {
    sleeper_protocol(false);
}
