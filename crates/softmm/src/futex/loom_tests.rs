//! Loom models of wait vs COW vs wake, swap and migration (physical keys).
//!
//! The futex table, the vcache and the callback (`table::follow`) are the
//! real code; the page table is one modelled entry of address space C (a
//! present, swap or migration entry in one atomic, changed under a
//! modelled page-table lock), the swap cache is one modelled slot, and
//! frames are modelled reference counts and futex words. The waiter's and
//! the waker's steps are those of `Mm::futex_wait_start` and
//! `Mm::futex_wake_bitset`, in the same order; `lookup` applies the rule
//! of `resolve::translation` to every kind of entry.
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
const NFRAMES: usize = 6;

/// Kinds of C's entry (`World::pte`: frame | kind << 8).
const PRESENT: u32 = 0;
const SWAP: u32 = 1 << 8;
const MIGRATION: u32 = 2 << 8;

fn frame_of(e: u32) -> u32 {
    e & 0xff
}

fn kind_of(e: u32) -> u32 {
    e & !0xff
}

/// How the vcache callback reads an entry that is not present.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// `resolve::translation`: a swap entry is its swap-cache frame, a
    /// migration entry the frame being moved.
    Now,
    /// The rule before: anything not present is "no translation", and the
    /// waiter stops following its page.
    NotPresentIsNone,
}

struct World {
    table: FutexTable,
    vcache: Vcache<Node>,
    users: Arc<AtomicUsize>,
    /// C's PTE for PAGE: a frame number and a kind; `ro` says write-protected.
    pte: AtomicU32,
    ro: AtomicU32,
    ptl: Mutex<()>,
    /// The frame the parent maps the page with (0: none), not modelled as
    /// an entry: only its reference counts.
    parent: AtomicU32,
    /// The swap cache's one slot: the frame holding the page (0: none),
    /// and the device's copy of the word.
    cache: Mutex<u32>,
    device: AtomicU32,
    rule: Rule,
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
        World::with_rule(word, Rule::Now)
    }

    fn with_rule(word: u32, rule: Rule) -> World {
        let zero = || AtomicU32::new(0);
        World {
            table: FutexTable::default(),
            vcache: Vcache::default(),
            users: Arc::new(AtomicUsize::new(0)),
            pte: AtomicU32::new(1 | PRESENT),
            ro: AtomicU32::new(1),
            ptl: Mutex::new(()),
            parent: AtomicU32::new(1),
            cache: Mutex::new(0),
            device: zero(),
            rule,
            refs: [AtomicU32::new(1), AtomicU32::new(2), zero(), zero(), zero(), zero()],
            keyed: [zero(), zero(), zero(), zero(), zero(), zero()],
            words: [zero(), AtomicU32::new(word), zero(), zero(), zero(), zero()],
            next: AtomicU32::new(2),
        }
    }

    /// Only C maps the page, writable (no parent).
    fn exclusive(word: u32, rule: Rule) -> World {
        let w = World::with_rule(word, rule);
        w.parent.store(0, Ordering::SeqCst);
        w.refs[1].store(1, Ordering::SeqCst);
        w.ro.store(0, Ordering::SeqCst);
        w
    }

    /// "fork": the parent maps C's frame again, both write-protected.
    fn fork(&self) {
        let _ptl = self.ptl.lock();
        let f = frame_of(self.pte.load(Ordering::SeqCst));
        self.refs[f as usize].fetch_add(1, Ordering::SeqCst);
        self.parent.store(f, Ordering::SeqCst);
        self.ro.store(1, Ordering::SeqCst);
    }

    fn alloc(&self, word: u32) -> u32 {
        let g = self.next.fetch_add(1, Ordering::SeqCst);
        assert!((g as usize) < NFRAMES, "the model ran out of frames");
        self.words[g as usize].store(word, Ordering::SeqCst);
        self.refs[g as usize].store(1, Ordering::SeqCst);
        g
    }

    /// The swap cache's lookup: its frame, referenced under its lock.
    fn cached(&self) -> Option<FrameId> {
        let c = self.cache.lock();
        (*c != 0).then(|| {
            self.get(FrameId(*c));
            FrameId(*c)
        })
    }

    /// `translation`: what C's page maps, referenced (try_get + recheck).
    fn lookup(&self) -> Translation {
        loop {
            let e = self.pte.load(Ordering::SeqCst);
            if kind_of(e) == SWAP {
                match self.cached() {
                    Some(f) if self.pte.load(Ordering::SeqCst) == e => return Translation::Frame(f),
                    Some(f) => self.put(f),
                    None if self.pte.load(Ordering::SeqCst) == e => return Translation::Swapped,
                    None => {}
                }
                continue;
            }
            let f = frame_of(e);
            let r = &self.refs[f as usize];
            let cur = r.load(Ordering::SeqCst);
            if cur > 0 && r.compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                if frame_of(self.pte.load(Ordering::SeqCst)) == f && kind_of(self.pte.load(Ordering::SeqCst)) != SWAP {
                    return Translation::Frame(FrameId(f));
                }
                self.put(FrameId(f));
            }
            crate::sync::spin_hint();
        }
    }

    /// The vcache callback's look at the page, by `self.rule`.
    fn follow_lookup(&self) -> Translation {
        if self.rule == Rule::NotPresentIsNone && kind_of(self.pte.load(Ordering::SeqCst)) != PRESENT {
            return Translation::None;
        }
        self.lookup()
    }

    /// `still_maps`: C's entry still stands for frame `f`.
    fn still_maps(&self, f: FrameId) -> bool {
        let e = self.pte.load(Ordering::SeqCst);
        if kind_of(e) == SWAP {
            return match self.cached() {
                Some(g) => {
                    self.put(g);
                    g == f
                }
                None => false,
            };
        }
        frame_of(e) == f.0
    }

    /// A store of `v` to the word by a thread of C: a swapped page is
    /// brought back first; then COW if the page is write-protected and not
    /// C's alone (copy, new PTE, drop C's reference on the old frame) —
    /// reused when only C, the swap cache and waiters hold it, as
    /// `anon_exclusive` decides — then, after the page-table lock, fire
    /// the vcache if the frame changed.
    fn store(&self, v: u32) {
        if kind_of(self.pte.load(Ordering::SeqCst)) == SWAP {
            self.swap_in();
        }
        let cowed = {
            let _ptl = self.ptl.lock();
            let old = frame_of(self.pte.load(Ordering::SeqCst));
            let cow = self.ro.load(Ordering::SeqCst) == 1 && !self.reuse(old);
            if cow {
                let g = self.alloc(self.words[old as usize].load(Ordering::SeqCst));
                self.pte.store(g | PRESENT, Ordering::SeqCst);
                self.put(FrameId(old));
            }
            self.ro.store(0, Ordering::SeqCst);
            self.words[frame_of(self.pte.load(Ordering::SeqCst)) as usize].store(v, Ordering::SeqCst);
            cow
        };
        if cowed {
            self.invalidate();
        }
    }

    /// COW's reuse test (under the page-table lock): only C's mapping, the
    /// swap cache (which lets go) and waiters hold `f`.
    fn reuse(&self, f: u32) -> bool {
        let waiters = self.keyed[f as usize].load(Ordering::SeqCst);
        let mut c = self.cache.lock();
        let cached = u32::from(*c == f);
        if self.refs[f as usize].load(Ordering::SeqCst) != 1 + cached + waiters {
            return false;
        }
        if cached == 1 {
            *c = 0;
            self.put(FrameId(f));
        }
        true
    }

    /// A write elsewhere in the page (COW without changing the word).
    fn touch(&self) {
        let v = {
            let _ptl = self.ptl.lock();
            self.words[frame_of(self.pte.load(Ordering::SeqCst)) as usize].load(Ordering::SeqCst)
        };
        // Racy by design only in the model's eyes: the word is not changed
        // by anyone else in the scenarios that use this.
        self.store(v);
    }

    /// Reclaim swaps C's page out: the frame goes into the swap cache (its
    /// contents to the device), C's entry becomes a swap entry, the vcache
    /// fires; the frame leaves memory if only the cache holds it.
    fn swap_out(&self) {
        let f = {
            let _ptl = self.ptl.lock();
            let e = self.pte.load(Ordering::SeqCst);
            if kind_of(e) != PRESENT {
                return;
            }
            let f = frame_of(e);
            {
                let mut c = self.cache.lock();
                self.get(FrameId(f));
                *c = f;
            }
            self.device.store(self.words[f as usize].load(Ordering::SeqCst), Ordering::SeqCst);
            self.pte.store(f | SWAP, Ordering::SeqCst);
            self.put(FrameId(f)); // C's mapping
            f
        };
        self.invalidate();
        let mut c = self.cache.lock();
        if *c == f && self.refs[f as usize].load(Ordering::SeqCst) == 1 {
            *c = 0;
            self.put(FrameId(f));
        }
    }

    /// A read fault on C's swap entry: the swap cache's frame, or a new one
    /// read from the device into the cache, mapped read-only. The frame is
    /// the one the entry stood for: no vcache call.
    fn swap_in(&self) {
        let _ptl = self.ptl.lock();
        let e = self.pte.load(Ordering::SeqCst);
        if kind_of(e) != SWAP {
            return;
        }
        let f = match self.cached() {
            Some(f) => f.0,
            None => {
                let g = self.alloc(self.device.load(Ordering::SeqCst));
                self.get(FrameId(g));
                *self.cache.lock() = g;
                g
            }
        };
        self.ro.store(1, Ordering::SeqCst);
        self.pte.store(f | PRESENT, Ordering::SeqCst);
    }

    /// `migrate_frame` of C's frame: a migration entry (vcache fired), then
    /// the copy if nothing but the entries holds the frame, and the entry
    /// repointed (vcache fired again); otherwise it goes back as it was.
    /// Returns whether the page moved.
    fn migrate(&self) -> bool {
        let f = {
            let _ptl = self.ptl.lock();
            let e = self.pte.load(Ordering::SeqCst);
            if kind_of(e) != PRESENT || self.parent.load(Ordering::SeqCst) != 0 {
                return false;
            }
            self.get(FrameId(frame_of(e))); // the caller's reference
            self.pte.store(frame_of(e) | MIGRATION, Ordering::SeqCst);
            frame_of(e)
        };
        self.invalidate();
        let moved = {
            let _ptl = self.ptl.lock();
            // C's migration entry and our reference, nothing else.
            let busy = self.refs[f as usize].load(Ordering::SeqCst) != 2;
            let to = if busy { f } else { self.alloc(self.words[f as usize].load(Ordering::SeqCst)) };
            self.pte.store(to | PRESENT, Ordering::SeqCst);
            if !busy {
                self.put(FrameId(f)); // the entry's reference moved to `to`
            }
            !busy
        };
        self.invalidate();
        self.put(FrameId(f));
        moved
    }

    fn invalidate(&self) {
        self.vcache.invalidate(&self.users, C, PAGE, PAGE + 4096, |node, page| {
            follow(&self.table, self, node, C, page, &|_| self.follow_lookup())
        });
    }

    /// A wait's resolution (`resolve::physical`): the frame, a page only on
    /// the device read back first (mapped read-only, as a read fault does).
    fn resolve_for_wait(&self) -> FrameId {
        loop {
            match self.lookup() {
                Translation::Frame(f) => return f,
                _ => self.swap_in(),
            }
        }
    }

    /// `futex_wait_start` in C, expecting `val`. Returns the queued node.
    fn wait(&self, val: u32) -> Option<Arc<Node>> {
        let key_of = |f: FrameId| FutexKey::Frame { frame: f, offset: (ADDR & 0xfff) as u32 };
        let first = self.resolve_for_wait();
        let track = Some((C, PAGE, None));
        let node = Arc::new(Node::with(key_of(first), u32::MAX, Notify::None, track, C));
        let mut first = Some(first);
        let mut attached = false;
        loop {
            let f = match first.take() {
                Some(f) => f,
                None => {
                    let f = self.resolve_for_wait();
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
                if !self.still_maps(f) {
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
            // `resolve::peek`: nobody waiting is answered from a present
            // entry, without a reference.
            let e = self.pte.load(Ordering::SeqCst);
            if kind_of(e) == PRESENT {
                let peeked = FutexKey::Frame { frame: FrameId(frame_of(e)), offset: (ADDR & 0xfff) as u32 };
                if !self.table.maybe_waiters(&peeked) {
                    return 0;
                }
            }
            // A page only on the device: nobody can wait on it.
            let Translation::Frame(f) = self.lookup() else { return 0 };
            let key = FutexKey::Frame { frame: f, offset: (ADDR & 0xfff) as u32 };
            let n = if self.table.maybe_waiters(&key) { self.table.wake(&key, 1, u32::MAX) } else { 0 };
            self.put(f);
            return n;
        }
        let mut vb = self.vcache.lock(C, PAGE);
        let now = self.lookup();
        settle(&self.table, self, &vb, C, PAGE, now);
        let Translation::Frame(f) = now else { return 0 };
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

    /// Every frame's count equals its holders (frame 0 reserved, the
    /// parent's mapping, C's entry unless it is a swap entry, the swap
    /// cache), and no waiter is left.
    fn check_refs(&self) {
        let e = self.pte.load(Ordering::SeqCst);
        let mapped = (kind_of(e) != SWAP).then_some(frame_of(e) as usize);
        let parent = self.parent.load(Ordering::SeqCst) as usize;
        let cached = *self.cache.lock() as usize;
        for (i, r) in self.refs.iter().enumerate() {
            let want = u32::from(i == 0)
                + u32::from(i != 0 && i == parent)
                + u32::from(mapped == Some(i))
                + u32::from(i != 0 && i == cached);
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
        w.parent.store(0, Ordering::SeqCst);
        w.refs[1].store(1, Ordering::SeqCst); // only C maps it
        let node = w.wait(0).expect("queued");
        w.store(1);
        w.fork();
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

/// A waiter races reclaim swapping its page out and a fault reading it
/// back; then the page is shared (fork) and C's write copies it: the
/// waiter must have followed the page throughout, so the wake through the
/// copy finds it. With the old rule (a swap entry is "no translation") it
/// stops following at the swap-out and is stranded on the old frame.
fn wait_vs_swap_out_and_in(rule: Rule) {
    model(move || {
        let w = Arc::new(World::exclusive(0, rule));
        let w2 = w.clone();
        let reclaim = loom::thread::spawn(move || {
            w2.swap_out();
            w2.swap_in();
        });
        let node = w.wait(0).expect("the word stays 0: the wait must queue");
        let _ = reclaim.join();
        w.fork();
        w.store(1);
        assert_eq!(w.wake(), 1, "lost wake-up");
        assert_eq!(w.finish(&node), WaitState::Woken);
        w.check_refs();
    });
}

#[test]
fn wait_vs_swap_out_and_in_follows_the_page() {
    wait_vs_swap_out_and_in(Rule::Now);
}

#[test]
#[should_panic(expected = "lost wake-up")]
fn a_waiter_that_stops_following_at_swap_out_is_lost() {
    wait_vs_swap_out_and_in(Rule::NotPresentIsNone);
}

/// A wake through a swap entry (the page still in the swap cache, held by
/// the waiter's reference) races the swap-out and finds the waiter.
#[test]
fn wake_through_a_swap_entry_vs_swap_out() {
    model(|| {
        let w = Arc::new(World::exclusive(0, Rule::Now));
        let node = w.wait(0).expect("queued");
        let w2 = w.clone();
        let reclaim = loom::thread::spawn(move || w2.swap_out());
        let n = w.wake();
        let _ = reclaim.join();
        assert_eq!(n, 1, "lost wake-up");
        assert_eq!(w.finish(&node), WaitState::Woken);
        // The page came back through the swap cache, unchanged.
        w.swap_in();
        w.check_refs();
    });
}

/// A waiter races a migration of its page (which moves the page when it
/// gets there first, and is refused when the waiter holds the frame);
/// then fork and C's write: the waiter must still follow the page. With
/// the old rule a refused migration leaves it stranded.
fn wait_vs_migration(rule: Rule) {
    model(move || {
        let w = Arc::new(World::exclusive(0, rule));
        let w2 = w.clone();
        let mover = loom::thread::spawn(move || w2.migrate());
        let node = w.wait(0).expect("the word stays 0: the wait must queue");
        let _ = mover.join();
        w.fork();
        w.store(1);
        assert_eq!(w.wake(), 1, "lost wake-up");
        assert_eq!(w.finish(&node), WaitState::Woken);
        w.check_refs();
    });
}

#[test]
fn wait_vs_migration_follows_the_page() {
    wait_vs_migration(Rule::Now);
}

#[test]
#[should_panic(expected = "lost wake-up")]
fn a_waiter_that_stops_following_at_a_refused_migration_is_lost() {
    wait_vs_migration(Rule::NotPresentIsNone);
}
