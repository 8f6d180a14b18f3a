//! Borrowed entries: an unshare by copy that takes no frame references.
//!
//! When an address space writes into a PTE table `T` it shares with others,
//! it copies `T` into a table `C` of its own (`share::unshare`). Taking a
//! reference and a mapping on each of up to 512 frames would cost a locked
//! instruction per entry, and the exit of `C` as many again. Instead, `C`'s
//! present entries *borrow* their frames from `T` ([`Pte::BORROWED`]): they
//! hold neither reference nor mapping, and `C` holds one reference on `T`,
//! which keeps `T` and so every frame it maps alive. `T` is `C`'s
//! *backing*; `C` is one of `T`'s *borrowers*.
//!
//! A table frame's counts: `refcount` = mappers (PMD entries pointing at
//! it, plus *holds*, below) + borrowers; `mapcount` = borrowers. So
//! `mappers = refcount - mapcount`, read in one load.
//!
//! Invariants (`docs/ARCHITECTURE.md`, "Borrowed entries"):
//! - **B1.** A borrowed entry `C[i]` names the frame `T[i]` names, present.
//! - **B2. No orphans.** A table with borrowers has a mapper. The last
//!   mapper to leave first *owns out* every borrower ([`own_all`]).
//! - **B3.** While `T` has borrowers, `T[i]` keeps its frame and presence,
//!   unless entry `i` of every borrower is owned first ([`own_index`]).
//!   Only reclaim and migration change a shared table's entries in place.
//! - **B4.** A borrowed entry is never writable and never reused by COW:
//!   its frame is mapped through `T` as well.
//! - **B5.** A borrowed entry is owned before its frame or presence changes.
//! - **B6.** A table with borrowers is mapped only through write-protected
//!   PMD entries (it is shared, or its last mapper has not written yet).
//!
//! Translations: an accessor of `C`'s space may cache a borrowed entry's
//! translation until that space's TLB shootdown. So a zap of borrowed
//! entries with a shootdown pending first takes a *hold* on `T` ([`hold`]):
//! a mapper reference, dropped after the shootdown by `share::put_late`,
//! which keeps `T`'s frames mapped until then, exactly as a sharer that
//! leaves `T` keeps its reference until its shootdown.
//!
//! The registry of borrowers is the arena's (`FrameArena::borrows`, a
//! `phys::links::FrameLinks`: `T` -> its borrowers); this module says what
//! its links mean and when they come and go.
//!
//! Locks: `T`'s PTE lock, then a borrower's PTE lock, then a registry
//! shard (a leaf). `C` is registered under `T`'s PTE lock (so [`own_all`],
//! which holds it, sees every borrower); it leaves under its own PTE lock,
//! by either [`own_all`] or [`detach`], whichever comes first: both test
//! `C`'s backing (`FrameMeta::owner` of the table frame, tagged) under
//! `C`'s PTE lock and clear it. [`own_all`] may so lock a table that
//! `detach` let go and its space freed meanwhile: frame metadata outlives
//! frames, and the backing test (a recycled frame never names `T`: new
//! borrowers of `T` need `T`'s lock) tells it to move on.

use super::{slot, PteTableGuard, PTRS_PER_TABLE};
use crate::phys::{FrameArena, FrameId};
use crate::pte::Pte;
use crate::stats::Counters;
use std::sync::atomic::Ordering;

/// Mappers of a table frame from its packed counts.
#[inline]
pub(crate) fn mappers(counts: u64) -> u32 {
    (counts as u32).wrapping_sub((counts >> 32) as u32)
}

/// Mappers of table `t` now.
#[inline]
pub(crate) fn mappers_of(arena: &FrameArena, t: FrameId) -> u32 {
    mappers(arena.meta(t).counts.load(Ordering::Acquire))
}

/// Table `c`'s backing, if it borrows: read without a lock, so only a
/// `None` is final (a backing is set before `c` is installed and only ever
/// cleared).
#[inline]
pub(crate) fn backing(arena: &FrameArena, c: FrameId) -> Option<FrameId> {
    arena.meta(c).table_backing()
}

/// A new PTE table borrows from nothing (its frame's `owner` may hold a
/// previous life's anon_vma id).
#[inline]
pub(crate) fn init_table(arena: &FrameArena, c: FrameId) {
    arena.meta(c).set_table_backing(None);
}

/// Record `c` (not yet installed) as a borrower of `t`, whose PTE lock the
/// caller holds, after `share::try_borrow` succeeded.
pub(crate) fn register(arena: &FrameArena, t: FrameId, c: FrameId) {
    arena.meta(c).set_table_backing(Some(t));
    arena.borrows.add(t, c);
}

/// Drop borrower `c`'s reference on `t` (never the last: `t` has a mapper).
fn drop_borrower_ref(arena: &FrameArena, t: FrameId, c: &Counters) {
    let old = arena.meta(t).sub_counts(1, 1);
    debug_assert!(old > 1, "a borrower held the last reference on table {}", t.0);
    if old == 2 {
        c.shared_tables.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Own the borrowed entry at `va` of the locked table: take a reference and
/// a mapping on its frame and clear the bit (the frame and the rest of the
/// entry stay). Returns whether it was borrowed.
pub(crate) fn own_entry(arena: &FrameArena, g: &mut PteTableGuard<'_>, va: u64) -> bool {
    let mut p = g.get(va);
    while p.is_borrowed() {
        // Lock-free setters may add accessed or dirty bits: never lose them.
        match g.cas(va, p, p.without(Pte::BORROWED)) {
            Ok(_) => {
                arena.meta(p.frame()).add_counts(1, 1);
                return true;
            }
            Err(now) => p = now,
        }
    }
    false
}

/// B2/B3 for a table about to change: own every borrowed entry of every
/// borrower of `t` (covering `base`) and drop their references on it. The
/// caller holds `t`'s PTE lock and a mapper reference.
pub(crate) fn own_all(arena: &FrameArena, t: FrameId, base: u64, c: &Counters) {
    if arena.meta(t).mapcount() == 0 {
        return; // no borrowers; none can come while we hold the lock
    }
    for b in arena.borrows.take(t) {
        let mut g = PteTableGuard::lock(arena, b, base);
        // Gone already (`detach` came first): its reference is dropped.
        if backing(arena, b) != Some(t) {
            continue;
        }
        for i in 0..PTRS_PER_TABLE {
            own_entry(arena, &mut g, base + i as u64 * 4096);
        }
        arena.meta(b).set_table_backing(None);
        drop(g);
        drop_borrower_ref(arena, t, c);
    }
}

/// B3 for one entry: own entry `va` of every borrower of `t`, whose PTE
/// lock the caller holds (reclaim or migration is about to replace `t`'s).
pub(crate) fn own_index(arena: &FrameArena, t: FrameId, base: u64, va: u64) {
    if arena.meta(t).mapcount() == 0 {
        return;
    }
    for b in arena.borrows.list(t) {
        let mut g = PteTableGuard::lock(arena, b, base);
        if backing(arena, b) == Some(t) {
            own_entry(arena, &mut g, va);
        }
    }
}

/// Take a hold on `c`'s backing, if it has one: a mapper reference that
/// keeps the backing's frames mapped until the caller's TLB shootdown, when
/// `share::put_late` drops it. For a zap of borrowed entries with a
/// shootdown pending (the borrower may lose its backing meanwhile).
pub(super) fn hold(arena: &FrameArena, c: FrameId, base: u64) -> Option<FrameId> {
    backing(arena, c)?;
    let _g = PteTableGuard::lock(arena, c, base);
    // Under `c`'s lock a backing still set is referenced by `c`: alive.
    let t = backing(arena, c)?;
    arena.meta(t).add_counts(1, 0);
    Some(t)
}

/// Table `c` (covering `base`), with no borrowed entry left, is about to be
/// freed: leave its backing, unless `own_all` did already.
pub(crate) fn detach(arena: &FrameArena, c: FrameId, base: u64, counters: &Counters) {
    if backing(arena, c).is_none() {
        return;
    }
    let g = PteTableGuard::lock(arena, c, base);
    let Some(t) = backing(arena, c) else { return };
    debug_assert!((0..PTRS_PER_TABLE).all(|i| !g.get(base + i as u64 * 4096).is_borrowed()));
    // The reference goes first, still under `c`'s lock: an `own_all` that
    // finds `c` gone (from the registry, or its backing cleared) must also
    // find its reference gone, or the backing's last mapper would take
    // itself for not last, or free nothing (the loom model
    // `loom_borrow_tests` caught the reverse order).
    drop_borrower_ref(arena, t, counters);
    arena.meta(c).set_table_backing(None);
    arena.borrows.remove(t, c);
    drop(g);
}

/// The entry `i` of table `t`, for audits and smaps.
pub(crate) fn entry(arena: &FrameArena, t: FrameId, i: usize) -> Pte {
    Pte::from_raw(slot(arena, t, i).load(Ordering::Acquire))
}

#[cfg(all(test, loom))]
mod loom_borrow_tests {
    //! Borrowed entries under loom. A table `T` with two entries maps two
    //! frames and is mapped by two spaces, A and B. A has unshared by copy
    //! (`share::unshare`): its table `C` borrows both entries, A's mapper
    //! reference became `C`'s borrower reference (`share::try_borrow`), and
    //! `C` is registered with its backing set (`register`). Then B leaves
    //! `T` (`drop_shared` + `Gather::finish` + `put_late`, with `own_all`)
    //! while A exits (`zap_table_entries` with `hold`, `zap_pte`, `detach`
    //! from `free_range`, `Gather::finish`) or COWs a borrowed entry
    //! (`do_wp_page`).
    //!
    //! What is real: `share::put_unless_last` and [`mappers`] on a loom
    //! `AtomicU64` holding `T`'s packed counts (refcount low, borrowers
    //! high). What is a model: PTE locks are loom mutexes (`C`'s guards its
    //! two entries), frame refcounts are loom atomics, the registry is a
    //! flag (one borrower; its shard mutex is a read-modify-write), `C`'s
    //! `owner` tag is a flag, and a space's software TLB is a "cached" flag
    //! per frame, set while an accessor of that space may still reach the
    //! frame through an old translation and cleared by the space's
    //! shootdown. Frames are freed when their refcount reaches 0, and must
    //! then be cached nowhere.
    use super::mappers;
    use crate::pgtable::share::{put_unless_last, try_borrow};
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    use loom::sync::{Arc, Mutex};
    use std::sync::atomic::Ordering;

    const A: usize = 0;
    const B: usize = 1;
    /// The frame a COW of `C`'s entry installs (`T` maps frames 0 and 1).
    const COPY: usize = 2;
    const FRAMES: usize = 3;
    const BORROWER: u64 = 1 << 32 | 1;

    /// An entry of `C`: what it names, and whether it holds a reference.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Entry {
        None,
        Borrowed(usize),
        Owned(usize),
    }

    /// How A's space goes away (or what it does instead).
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Exit {
        /// With accessors (a shootdown pending): hold, zap, detach,
        /// shootdown, puts (`do_exit`, `unmap_locked`).
        Pending,
        /// The same without the hold: the zap of borrowed entries relies on
        /// `T`'s frames staying mapped by someone else.
        PendingNoHold,
        /// No accessor: nothing cached, references go at once, no hold.
        NoAccessors,
    }

    struct Model {
        /// `T`'s packed counts.
        counts: AtomicU64,
        t_ptl: Mutex<()>,
        t_freed: AtomicU32,
        /// `C`'s PTE lock and entries.
        c_ptl: Mutex<[Entry; 2]>,
        /// `C`'s `owner` names `T`.
        backing: AtomicBool,
        /// `C` is in `T`'s registry list.
        registered: AtomicBool,
        /// Entry `i` of `C` borrows frame `i`: a copy of `C`'s entries that
        /// the frame-free check reads without `C`'s lock.
        borrowed: [AtomicBool; 2],
        frames: [AtomicU32; FRAMES],
        frees: [AtomicU32; FRAMES],
        copied: AtomicBool,
        /// [space][frame]: an accessor of the space may reach the frame.
        cached: [[AtomicBool; FRAMES]; 2],
        /// `detach` drops `C`'s borrower reference first, under `C`'s lock
        /// and before `C` leaves the registry, as `borrow::detach` does
        /// (false: the first, wrong order; see
        /// `detach_dropping_its_reference_last_is_caught`).
        detach_ref_first: bool,
    }

    impl Model {
        /// The state after A's unshare by copy (sequential: before any
        /// thread starts, so it adds no interleavings).
        fn after_unshare(a_caches: bool, detach_ref_first: bool) -> Model {
            let m = Model {
                counts: AtomicU64::new(2),
                t_ptl: Mutex::new(()),
                t_freed: AtomicU32::new(0),
                c_ptl: Mutex::new([Entry::None; 2]),
                backing: AtomicBool::new(false),
                registered: AtomicBool::new(false),
                borrowed: [AtomicBool::new(false), AtomicBool::new(false)],
                frames: [AtomicU32::new(1), AtomicU32::new(1), AtomicU32::new(0)],
                frees: [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)],
                copied: AtomicBool::new(false),
                cached: [
                    [AtomicBool::new(a_caches), AtomicBool::new(a_caches), AtomicBool::new(false)],
                    [AtomicBool::new(true), AtomicBool::new(true), AtomicBool::new(false)],
                ],
                detach_ref_first,
            };
            {
                let _t = m.t_ptl.lock().unwrap();
                let mut c = m.c_ptl.lock().unwrap();
                for i in 0..2 {
                    m.set(&mut c, i, Entry::Borrowed(i));
                }
                drop(c);
                assert!(m.become_borrower(), "A and B both map T");
                m.backing.store(true, Ordering::Release);
                m.registered.store(true, Ordering::Release);
            }
            m
        }

        /// Set entry `i` of `C`, whose lock the caller holds.
        fn set(&self, c: &mut [Entry; 2], i: usize, e: Entry) {
            c[i] = e;
            self.borrowed[i].store(matches!(e, Entry::Borrowed(_)), Ordering::Relaxed);
        }

        /// B2, and borrowers counted within the refcount.
        fn check_counts(&self, counts: u64) {
            let (refs, borrowers) = (counts as u32, (counts >> 32) as u32);
            assert!(borrowers <= refs, "T counts more borrowers than references: {counts:#x}");
            assert!(borrowers == 0 || mappers(counts) >= 1, "T has borrowers but no mapper (B2): {counts:#x}");
        }

        /// `share::try_borrow`, the real one.
        fn become_borrower(&self) -> bool {
            let ok = try_borrow(&self.counts);
            if ok {
                self.check_counts(self.counts.load(Ordering::Acquire));
            }
            ok
        }

        /// A reference on a frame some entry names: it must still be live
        /// (B1: a borrowed entry names a frame its backing maps).
        fn get_frame(&self, f: usize) {
            let old = self.frames[f].fetch_add(1, Ordering::AcqRel);
            assert!(old >= 1, "took a reference on freed frame {f}");
        }

        fn put_frame(&self, f: usize) {
            let old = self.frames[f].fetch_sub(1, Ordering::AcqRel);
            assert!(old >= 1, "frame {f} reference dropped twice");
            if old == 1 {
                // Relaxed: the checks must not order anything themselves.
                for (s, cached) in self.cached.iter().enumerate() {
                    assert!(
                        !cached[f].load(Ordering::Relaxed),
                        "frame freed while a space still caches it (frame {f}, space {s})"
                    );
                }
                if let Some(b) = self.borrowed.get(f) {
                    assert!(!b.load(Ordering::Relaxed), "frame {f} freed while a borrowed entry names it (B1)");
                }
                self.frees[f].fetch_add(1, Ordering::Relaxed);
            }
        }

        fn shootdown(&self, space: usize, frames: &[usize]) {
            for &f in frames {
                self.cached[space][f].store(false, Ordering::SeqCst);
            }
        }

        /// `drop_borrower_ref`: never the last reference, `T` has a mapper.
        fn drop_borrower_ref(&self) {
            let old = self.counts.fetch_sub(BORROWER, Ordering::AcqRel);
            assert!(old as u32 > 1, "a borrower held the last reference on T");
            self.check_counts(old - BORROWER);
        }

        /// `borrow::own_all`, under `T`'s lock, for the one borrower.
        fn own_all(&self) {
            if self.counts.load(Ordering::Acquire) >> 32 == 0 {
                return;
            }
            if !self.registered.swap(false, Ordering::AcqRel) {
                return;
            }
            let mut c = self.c_ptl.lock().unwrap();
            if !self.backing.load(Ordering::Acquire) {
                return; // `detach` came first
            }
            for i in 0..2 {
                if let Entry::Borrowed(f) = c[i] {
                    self.get_frame(f);
                    self.set(&mut c, i, Entry::Owned(f));
                }
            }
            self.backing.store(false, Ordering::Release);
            drop(c);
            self.drop_borrower_ref();
        }

        /// `borrow::hold`: a mapper reference on `C`'s backing, if any.
        fn hold(&self) -> bool {
            if !self.backing.load(Ordering::Acquire) {
                return false;
            }
            let _c = self.c_ptl.lock().unwrap();
            if !self.backing.load(Ordering::Acquire) {
                return false;
            }
            let old = self.counts.fetch_add(1, Ordering::AcqRel);
            assert!(old as u32 >= 1, "hold on a freed table");
            self.check_counts(old + 1);
            true
        }

        /// `borrow::detach`, for `C` about to be freed.
        fn detach(&self) {
            if !self.backing.load(Ordering::Acquire) {
                return;
            }
            let c = self.c_ptl.lock().unwrap();
            if !self.backing.load(Ordering::Acquire) {
                return;
            }
            assert!(!c.iter().any(|e| matches!(e, Entry::Borrowed(_))), "detach with borrowed entries");
            if self.detach_ref_first {
                self.drop_borrower_ref();
            }
            self.backing.store(false, Ordering::Release);
            self.registered.swap(false, Ordering::AcqRel);
            drop(c);
            if !self.detach_ref_first {
                self.drop_borrower_ref();
            }
        }

        /// `share::put_late`: the last mapper owns out `C`, zaps and frees.
        fn put_late(&self) {
            if put_unless_last(&self.counts).is_some() {
                return;
            }
            {
                let _t = self.t_ptl.lock().unwrap();
                if put_unless_last(&self.counts).is_some() {
                    return;
                }
                self.own_all();
                if put_unless_last(&self.counts).is_some() {
                    return;
                }
                // The `debug_assert_eq!` of `put_late`.
                let counts = self.counts.load(Ordering::Acquire);
                assert_eq!(counts, 1, "last mapper of T with borrowers");
            }
            self.zap_t();
        }

        /// `share::zap_table` of `T`: its entries' references go at once
        /// (every space that could cache them has shot down by now).
        fn zap_t(&self) {
            {
                let _t = self.t_ptl.lock().unwrap();
                self.put_frame(0);
                self.put_frame(1);
            }
            // `arena.put(t)`: only a drop from 1 frees.
            let old = self.counts.fetch_sub(1, Ordering::AcqRel);
            if old == 1 {
                assert_eq!(self.t_freed.fetch_add(1, Ordering::Relaxed), 0, "T freed twice");
            }
        }

        /// B leaves `T` with a shootdown pending: `drop_shared` returns
        /// `Later`, and `Gather::finish` shoots down, then `put_late`.
        fn b_leaves(&self) {
            self.shootdown(B, &[0, 1]);
            self.put_late();
        }

        /// A's space exits (or unmaps `C`'s whole span): `zap_table_entries`
        /// of `C`, `detach` when `free_range` frees `C`, `Gather::finish`.
        fn a_exits(&self, how: Exit) {
            let pending = how != Exit::NoAccessors;
            let held = how == Exit::Pending && self.hold();
            let mut deferred = Vec::new();
            {
                let mut c = self.c_ptl.lock().unwrap();
                for i in 0..2 {
                    let e = c[i];
                    self.set(&mut c, i, Entry::None);
                    match e {
                        // `zap_pte`: the backing holds the frame.
                        Entry::None | Entry::Borrowed(_) => {}
                        Entry::Owned(f) if pending => deferred.push(f),
                        Entry::Owned(f) => self.put_frame(f),
                    }
                }
            }
            self.detach();
            if pending {
                self.shootdown(A, &[0, 1, COPY]);
                for f in deferred {
                    self.put_frame(f);
                }
                if held {
                    self.put_late();
                }
            }
        }

        /// `do_wp_page` on entry `i` of `C` (an accessor of A caches it):
        /// under `C`'s lock a borrowed entry takes a reference on its old
        /// frame for the shootdown (`fair`; without it, it relies on `T`);
        /// an entry owned meanwhile is an ordinary COW.
        fn a_cows(&self, i: usize, fair: bool) {
            let (old, put_after) = {
                let mut c = self.c_ptl.lock().unwrap();
                let (old, put_after) = match c[i] {
                    Entry::Borrowed(f) => {
                        if fair {
                            self.get_frame(f);
                        }
                        (f, fair)
                    }
                    // `anon_exclusive`: `T` is zapped and only the entry's
                    // own reference is left: reused in place, nothing stale.
                    Entry::Owned(f) if self.frames[f].load(Ordering::Acquire) == 1 => return,
                    Entry::Owned(f) => (f, true),
                    Entry::None => unreachable!("A's entries stay until it exits"),
                };
                assert_eq!(self.frames[COPY].fetch_add(1, Ordering::AcqRel), 0);
                self.copied.store(true, Ordering::Relaxed);
                self.set(&mut c, i, Entry::Owned(COPY));
                // The faulting accessor refills its TLB with the new entry.
                self.cached[A][COPY].store(true, Ordering::SeqCst);
                (old, put_after)
            };
            self.shootdown(A, &[old]);
            if put_after {
                self.put_frame(old);
            }
        }

        /// Every reference accounted for once everyone is gone.
        fn check_end(&self) {
            assert_eq!(self.counts.load(Ordering::Acquire), 0, "T's references all dropped");
            assert_eq!(self.t_freed.load(Ordering::Relaxed), 1, "T freed exactly once");
            assert!(!self.backing.load(Ordering::Acquire) && !self.registered.load(Ordering::Acquire));
            assert_eq!(*self.c_ptl.lock().unwrap(), [Entry::None; 2]);
            let copied = self.copied.load(Ordering::Relaxed) as u32;
            for (f, want) in [(0, 1), (1, 1), (COPY, copied)] {
                assert_eq!(self.frames[f].load(Ordering::Acquire), 0, "frame {f} leaked");
                assert_eq!(self.frees[f].load(Ordering::Relaxed), want, "frame {f} must be freed {want} time(s)");
            }
        }
    }

    /// B leaves `T` while A exits.
    fn leave_and_exit(how: Exit, detach_ref_first: bool) {
        loom::model(move || {
            let m = Arc::new(Model::after_unshare(how != Exit::NoAccessors, detach_ref_first));
            let b = {
                let m = m.clone();
                loom::thread::spawn(move || m.b_leaves())
            };
            m.a_exits(how);
            b.join().unwrap();
            m.check_end();
        });
    }

    /// B leaves `T` while A COWs a borrowed entry; A exits afterwards.
    fn leave_and_cow(fair: bool) {
        loom::model(move || {
            let m = Arc::new(Model::after_unshare(true, true));
            let b = {
                let m = m.clone();
                loom::thread::spawn(move || m.b_leaves())
            };
            m.a_cows(0, fair);
            b.join().unwrap();
            m.a_exits(Exit::Pending);
            m.check_end();
        });
    }

    /// The hold keeps `T` mapped across A's `detach` and shootdown, so
    /// whoever is last (B, or A's put of the hold) zaps `T` after both.
    #[test]
    fn the_backing_left_while_a_borrower_exits_with_a_hold() {
        leave_and_exit(Exit::Pending, true);
    }

    /// The model can fail: borrowed entries zapped with a shootdown pending
    /// but no hold let B's `put_late` free their frames under A's TLB.
    /// (`detach_ref_first`, else the `detach` race below trips first.)
    #[test]
    #[should_panic(expected = "frame freed while a space still caches it")]
    fn zapping_borrowed_entries_without_a_hold_is_caught() {
        leave_and_exit(Exit::PendingNoHold, true);
    }

    #[test]
    fn the_backing_left_while_a_borrower_cows_an_entry() {
        leave_and_cow(true);
    }

    /// The model can fail: a COW of a borrowed entry that takes no reference
    /// on the old frame for its shootdown.
    #[test]
    #[should_panic(expected = "frame freed while a space still caches it")]
    fn a_cow_without_a_reference_on_the_borrowed_frame_is_caught() {
        leave_and_cow(false);
    }

    /// The model can fail, and caught this bug of the first `borrow::detach`
    /// (fixed by dropping the reference first). With no hold
    /// (no accessor, so no shootdown pending), that `detach` cleared `C`'s
    /// backing and left the registry under `C`'s lock, but dropped the
    /// borrower reference only after unlocking. B's `put_late` meanwhile:
    /// `put_unless_last` finds one mapper, `own_all` skips `C` (gone from
    /// the registry, or its backing cleared), `put_unless_last` again finds
    /// one mapper, yet `T`'s refcount is 2 with one borrower. `put_late`'s
    /// `debug_assert_eq!` fires; in a release build `zap_table`'s
    /// `arena.put(t)` takes 2 to 1 and frees nothing, and `detach`'s
    /// `drop_borrower_ref` then takes 1 to 0 with `sub_counts`, which frees
    /// nothing either: the table frame leaks (and `drop_borrower_ref`'s
    /// `old > 1` debug assertion fires).
    #[test]
    #[should_panic(expected = "last mapper of T with borrowers")]
    fn detach_dropping_its_reference_last_is_caught() {
        leave_and_exit(Exit::NoAccessors, false);
    }

    /// `detach` as it is: the borrower reference dropped first (under
    /// `C`'s lock, before the registry), so whichever way `own_all` meets
    /// `C`, it sees the reference gone.
    #[test]
    fn the_backing_left_while_a_borrower_exits_without_accessors() {
        leave_and_exit(Exit::NoAccessors, true);
    }
}
