//! The vcache: callbacks on changes of a virtual page's translation
//! (seeds 000 and 003).
//!
//! A user that depends on which frame backs `(mm, page)` — a futex waiter
//! keyed by its frame — attaches an entry for that page. Every operation
//! that changes or removes the page's translation (COW, unshare, munmap,
//! `madvise(DONTNEED)`, an mprotect that removes access, exit) calls
//! `Vcache::invalidate` *after* changing the page table, and the
//! callback runs for each entry with the bucket lock held, so callbacks for one page are
//! serialized and each sees the translation as it is then.
//!
//! # The fence pairing (seed 000)
//! Attaching happens first and is followed by a full fence, then the user
//! re-checks the translation; the changer writes the entry first, then a
//! full fence, then reads the per-mm count of entries without a lock and
//! takes a bucket lock only when it is not zero:
//!
//! ```text
//! attacher:  users += 1 (SeqCst RMW); fence(SeqCst); read PTE
//! changer:   write PTE;               fence(SeqCst); read users
//! ```
//!
//! With both fences sequentially consistent, at least one side sees the
//! other's write: either the attacher reads the new PTE (and re-derives its
//! key itself) or the changer sees the entry and calls back. Nobody is left
//! keyed by a translation that no longer exists.
//!
//! # Lock order
//! A bucket lock is taken under the `mmap_lock` (either mode) and never
//! under a page-table lock: changers call `invalidate` after releasing the
//! page-table lock. Callbacks may take futex bucket locks (inner to this);
//! two vcache buckets are taken together only in index order.

use crate::phys::{FrameArena, FrameId};
use crate::sync::{fence, Arc, AtomicUsize, Mutex, MutexGuard, Ordering};

/// A subscriber of the vcache (seed 003's `callback`): it attaches entries
/// of its own kind (`Vcache<Entry>`) and is called back for them when the
/// translation of their page changes. Futexes are one (`futex::Futexes`);
/// the machine lists its clients (`MachineInner::vcache_clients`), and a
/// changer of translations reaches them only through [`invalidate`] (the
/// change type `mm::Change` calls it), never a client directly.
pub(crate) trait Client: Sync {
    /// The translations of `[lo, hi)` in space `mm` changed (the page
    /// tables say so): call back this client's entries there, under their
    /// bucket locks. `now(va)` is what the page at `va` is now (a frame
    /// comes referenced for the callee; `frames` takes references back).
    fn invalidate(&self, frames: &FrameArena, mm: u64, lo: u64, hi: u64, now: &dyn Fn(u64) -> Translation);

    /// The entries of `[lo, hi)` in space `mm` moved to `new_lo` (mremap:
    /// the page tables say so, each page keeps its translation): re-key
    /// this client's entries there to their pages' new addresses.
    fn moved(&self, frames: &FrameArena, mm: u64, lo: u64, hi: u64, new_lo: u64);

    /// Space `mm` is gone and its translations are shot down: drop
    /// whatever this client keeps for it (entries counted in `users`).
    fn release(&self, frames: &FrameArena, users: &AtomicUsize, mm: u64);
}

/// The changer's side of the fence pairing (see the top of this file):
/// after writing the entries, a full fence, then whether `users` (a
/// space's count of entries) says anything is attached.
#[inline]
pub(crate) fn attached(users: &AtomicUsize) -> bool {
    fence(Ordering::SeqCst);
    users.load(Ordering::SeqCst) != 0
}

/// Tell every client that the translations of `[lo, hi)` in `mm` changed:
/// one fence and one load when the space has no entries (`users`).
pub(crate) fn invalidate(
    clients: &[&dyn Client],
    users: &AtomicUsize,
    frames: &FrameArena,
    mm: u64,
    lo: u64,
    hi: u64,
    now: &dyn Fn(u64) -> Translation,
) {
    if attached(users) {
        for c in clients {
            c.invalidate(frames, mm, lo, hi, now);
        }
    }
}

/// The entries of `[lo, hi)` in `mm` moved to `new_lo` (mremap, under the
/// `mmap_lock` held for writing, after the page-table locks are released):
/// every client re-keys its entries there, so that they keep following
/// their pages. With no entry in the space, one fence and one load.
pub(crate) fn moved(
    clients: &[&dyn Client],
    users: &AtomicUsize,
    frames: &FrameArena,
    mm: u64,
    lo: u64,
    hi: u64,
    new_lo: u64,
) {
    if attached(users) {
        for c in clients {
            c.moved(frames, mm, lo, hi, new_lo);
        }
    }
}

/// Space `mm` is gone (its translations shot down): every client lets go.
pub(crate) fn release(clients: &[&dyn Client], users: &AtomicUsize, frames: &FrameArena, mm: u64) {
    for c in clients {
        c.release(frames, users, mm);
    }
}

/// A new per-space count of attached entries (`MmInner::vcache_users`).
pub(crate) fn new_users() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// Buckets of the hash; few under loom so that the model meets collisions.
const BUCKETS: usize = if cfg!(loom) { 2 } else { 1024 };

/// What a page translates to at the time of a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Translation {
    /// A frame, with a reference taken for the caller.
    Frame(FrameId),
    /// The shared zero frame (no reference).
    Zero,
    /// A page whose contents are only on the swap device (no frame).
    Swapped,
    /// Nothing (unmapped, or the address space is gone).
    None,
}

/// One attached entry.
pub(crate) struct Entry<C> {
    mm: u64,
    page: u64,
    client: Arc<C>,
}

/// The hash of entries, one per machine.
pub(crate) struct Vcache<C> {
    buckets: Box<[Mutex<Vec<Entry<C>>>]>,
}

/// A locked bucket, to attach into while re-checking a translation.
pub(crate) struct Bucket<'a, C> {
    pub(crate) index: usize,
    guard: MutexGuard<'a, Vec<Entry<C>>>,
}

impl<C> Bucket<'_, C> {
    /// Publish an entry: count it in `users` (the per-mm count changers
    /// read), add it, then fence. The caller re-checks the translation
    /// only after this returns.
    pub(crate) fn attach(&mut self, users: &AtomicUsize, mm: u64, page: u64, client: Arc<C>) {
        users.fetch_add(1, Ordering::SeqCst);
        self.guard.push(Entry { mm, page: page & !0xfff, client });
        fence(Ordering::SeqCst);
    }

    /// Remove one entry of `client` for `(mm, page)` (which must hash to
    /// this bucket), if attached; returns whether one was.
    pub(crate) fn detach(&mut self, users: &AtomicUsize, mm: u64, page: u64, client: &Arc<C>) -> bool {
        let page = page & !0xfff;
        debug_assert_eq!(self.index, Vcache::<C>::index(mm, page), "detach from another bucket");
        let Some(i) = self.guard.iter().position(|e| e.mm == mm && e.page == page && Arc::ptr_eq(&e.client, client))
        else {
            return false;
        };
        self.guard.swap_remove(i);
        users.fetch_sub(1, Ordering::SeqCst);
        true
    }

    /// Call `f` for every entry of `(mm, page)` in this bucket (with the
    /// bucket still locked).
    pub(crate) fn each(&self, mm: u64, page: u64, mut f: impl FnMut(&Arc<C>)) {
        let page = page & !0xfff;
        self.guard.iter().filter(|e| e.mm == mm && e.page == page).for_each(|e| f(&e.client));
    }
}

impl<C> Default for Vcache<C> {
    fn default() -> Self {
        Vcache { buckets: (0..BUCKETS).map(|_| Mutex::new(Vec::new())).collect() }
    }
}

impl<C> Vcache<C> {
    /// The bucket of `(mm, page)`: invariant, so computable before any lock.
    pub(crate) fn index(mm: u64, page: u64) -> usize {
        let h = (page >> 12).wrapping_add(mm.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize % BUCKETS
    }

    /// Lock the bucket of `(mm, page)`.
    pub(crate) fn lock(&self, mm: u64, page: u64) -> Bucket<'_, C> {
        let index = Self::index(mm, page & !0xfff);
        Bucket { index, guard: self.buckets[index].lock() }
    }

    /// Lock the buckets of two pages of one mm, in index order (one lock if
    /// they share a bucket). The first returned is the lower index.
    pub(crate) fn lock_two(&self, mm: u64, a: u64, b: u64) -> (Bucket<'_, C>, Option<Bucket<'_, C>>) {
        let (ia, ib) = (Self::index(mm, a & !0xfff), Self::index(mm, b & !0xfff));
        let (lo, hi) = (ia.min(ib), ia.max(ib));
        let first = Bucket { index: lo, guard: self.buckets[lo].lock() };
        let second = (hi != lo).then(|| Bucket { index: hi, guard: self.buckets[hi].lock() });
        (first, second)
    }

    /// Remove one entry of `client` for `(mm, page)`, if attached.
    pub(crate) fn detach(&self, users: &AtomicUsize, mm: u64, page: u64, client: &Arc<C>) {
        self.lock(mm, page).detach(users, mm, page, client);
    }

    /// The translations of `[lo, hi)` in `mm` changed (the page tables
    /// already say so): call `callback(client, page)` for every entry there,
    /// under its bucket lock. `users` is `mm`'s count of entries: with none,
    /// this is one fence and one load. (Changers go through the free
    /// [`invalidate`], which tells every client; the models call this.)
    #[cfg(loom)]
    pub(crate) fn invalidate(&self, users: &AtomicUsize, mm: u64, lo: u64, hi: u64, callback: impl Fn(&Arc<C>, u64)) {
        if attached(users) {
            self.call_range(mm, lo, hi, callback);
        }
    }

    /// `invalidate` after the caller's own `attached` check.
    pub(crate) fn call_range(&self, mm: u64, lo: u64, hi: u64, callback: impl Fn(&Arc<C>, u64)) {
        let (lo, hi) = (lo & !0xfff, hi);
        let pages = hi.saturating_sub(lo).div_ceil(4096);
        let call = |index: usize| {
            let b = self.buckets[index].lock();
            for e in b.iter().filter(|e| e.mm == mm && e.page >= lo && e.page < hi) {
                callback(&e.client, e.page);
            }
        };
        if pages <= BUCKETS as u64 {
            let mut page = lo;
            while page < hi {
                call(Self::index(mm, page));
                page += 4096;
            }
        } else {
            (0..BUCKETS).for_each(call);
        }
    }

    /// Re-key every entry of `mm` in `[lo, hi)` to the same offset from
    /// `new_lo` (which must not overlap the range), moving it to its new
    /// bucket. For each, `rekey(client, old_page, new_page)` runs with both
    /// buckets held (two, in index order), so that whoever detaches the
    /// entry by the client's own record finds it where the record says;
    /// it returns `false` to leave the entry where it is (the client is
    /// being released and detaches it there).
    pub(crate) fn moved(&self, mm: u64, lo: u64, hi: u64, new_lo: u64, rekey: impl Fn(&Arc<C>, u64, u64) -> bool) {
        let (lo, new_lo) = (lo & !0xfff, new_lo & !0xfff);
        debug_assert!(new_lo >= hi || new_lo + (hi - lo) <= lo, "a move onto itself");
        let pages = hi.saturating_sub(lo).div_ceil(4096);
        let mut sources: Vec<usize> = if pages <= BUCKETS as u64 {
            (0..pages).map(|i| Self::index(mm, lo + i * 4096)).collect()
        } else {
            (0..BUCKETS).collect()
        };
        sources.sort_unstable();
        sources.dedup();
        for src in sources {
            // The pages to move, then each under both of its buckets' locks:
            // only the space's own operations attach here, and its
            // `mmap_lock` is held for writing, so no entry appears meanwhile.
            let found: Vec<u64> = self.buckets[src]
                .lock()
                .iter()
                .filter(|e| e.mm == mm && e.page >= lo && e.page < hi)
                .map(|e| e.page)
                .collect();
            for page in found {
                self.move_entry(mm, src, page, new_lo + (page - lo), &rekey);
            }
        }
    }

    /// Move one entry of `(mm, page)` (in bucket `src`) to `(mm, to)`.
    fn move_entry(&self, mm: u64, src: usize, page: u64, to: u64, rekey: &impl Fn(&Arc<C>, u64, u64) -> bool) {
        let dst = Self::index(mm, to);
        let (lo, hi) = (src.min(dst), src.max(dst));
        let mut first = self.buckets[lo].lock();
        let mut second = (hi != lo).then(|| self.buckets[hi].lock());
        let from = if src == lo { &mut first } else { second.as_mut().unwrap_or(&mut first) };
        let Some(i) = from.iter().position(|e| e.mm == mm && e.page == page && rekey(&e.client, page, to)) else {
            return;
        };
        let mut e = from.swap_remove(i);
        e.page = to;
        let into = if dst == lo { &mut first } else { second.as_mut().unwrap_or(&mut first) };
        into.push(e);
    }

    /// Call `f(mm, page, client)` for every entry, one bucket locked at a
    /// time (audits).
    pub(crate) fn each_entry(&self, mut f: impl FnMut(u64, u64, &Arc<C>)) {
        for b in self.buckets.iter() {
            for e in b.lock().iter() {
                f(e.mm, e.page, &e.client);
            }
        }
    }

    /// Entries attached for `mm` (for audits and tests).
    pub(crate) fn count_for(&self, mm: u64) -> usize {
        self.buckets.iter().map(|b| b.lock().iter().filter(|e| e.mm == mm).count()).sum()
    }
}
