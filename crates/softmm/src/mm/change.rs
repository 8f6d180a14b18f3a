//! The one way to change entries of a live address space: a [`Change`] is
//! opened for a range and an event, offers the operations (zap, protect,
//! unshare, install or replace under a page-table lock), and on drop runs
//! the side effects of every change of translations in one fixed order
//! (Linux's `mmu_gather` + `mmu_notifier_range` + the vcache call in one
//! value, as Asterinas' `CursorMut` owns its `TlbFlusher`):
//!
//! 1. **`invalidate_range_start`** to secondary MMUs (`notifier.rs`), when
//!    the change is opened: before any entry changes, and outside every
//!    page-table lock, since a subscriber may sleep.
//! 2. **Entries change** under their page-table locks (the operations
//!    below, or the caller's own under a lock it took through this type's
//!    borrow of the space).
//! 3. **The vcache** (`vcache.rs`): its clients hear of the pages whose
//!    translation changed, after the page tables say so (the changer's
//!    half of the fence pairing) and after the page-table locks are
//!    released (a vcache bucket is never taken under one), with the
//!    `mmap_lock` still held, so that the lookup a client is handed reads
//!    tables that stay put.
//! 4. **TLB shootdown** (`Gather::finish`): no accessor keeps a stale
//!    translation. After the vcache: a futex waiter that followed its page
//!    to a new frame no longer needs the old one, whose reference the next
//!    step may drop.
//! 5. **Deferred frees** (`gather::Deferred`, which only the shootdown
//!    hands out): frames and
//!    shared tables unmapped here lose their references only now, after
//!    the shootdown, so no accessor reads a freed frame.
//! 6. **`invalidate_range_end`**: last, so that a secondary MMU refaulting
//!    after it sees the new entries and no frame that is still in flux.
//!
//! Dropping the value on any path (an early return, `?`) runs the same
//! steps, so no bracket stays open. A reclaim or migration pass, which
//! changes one page in many spaces, hands each change's steps 4 to 6 to a
//! [`ChangeBatch`] (`Change::defer_to`, after step 3), which runs them in
//! the same order once per space for the whole pass.
//!
//! Entries are written only inside `pgtable/`; outside it, a table is
//! locked for writing only with the `pgtable::Edit` a change hands out,
//! and only this module mints one (`tests/raw_stores.rs` checks both).
//! The MMU-style setting of accessed and dirty bits
//! (`PageTable::set_access_flags`) changes no translation and needs none.

use super::gather::Gather;
use super::{MmInner, MmState};
use crate::error::Result;
use crate::notifier::{Event, Invalidation, Range};
use crate::pgtable::{share, Edit, PageTable, PteTableGuard, ZapSink, PTE_TABLE_SPAN};
use crate::phys::FrameId;
use crate::pte::Pte;
use crate::tlb::Slot;
use crate::vcache::Translation;
use crate::vma::Prot;
use std::sync::Arc;

/// A change of entries in `[lo, hi)` of one address space, open until it
/// is dropped (see the module documentation for what the drop does).
#[must_use = "a change runs its side effects when dropped"]
pub(crate) struct Change<'a> {
    mm: &'a MmInner,
    /// The `mmap_lock`'s state the change runs under, for the lookup the
    /// vcache's clients get; `None` once the space has exited (every page
    /// then translates to nothing).
    st: Option<&'a MmState>,
    /// The secondary MMUs' bracket, if one was opened.
    inv: Option<Invalidation>,
    gather: Gather,
    /// The calling accessor's TLB slot, which the shootdown need not wait for.
    except: Option<&'a Slot>,
    /// Pages whose translation changed: `[changed.0, changed.1)`.
    changed: (u64, u64),
    /// Pages whose entries changed in what a snapshot of the space sees
    /// (`mm/snapshot.rs`): `changed`, except an unshare's pages, which keep
    /// their frames.
    logged: (u64, u64),
    /// Whether `logged` goes to the snapshots' logs at the end (a restore
    /// logs the exact pages it changed itself, `mm/restore.rs`).
    log: bool,
    /// Leave to write entries (`pgtable::Edit`), minted here alone.
    edit: Edit,
}

impl<'a> Change<'a> {
    /// Open a change of `mm` (under its `mmap_lock`, whose state is `st`)
    /// for `[lo, hi)`: secondary MMUs hear `event`'s start now, if one is
    /// given (a fault with nobody listening passes `None` and costs no call).
    #[inline(always)]
    pub(crate) fn open(mm: &'a MmInner, st: Option<&'a MmState>, lo: u64, hi: u64, event: Option<Event>) -> Self {
        // With nobody listening no bracket is kept (its end would be a
        // no-op), and the value is built in one expression, in place.
        let inv = match event {
            Some(event) if mm.notifiers.any() => Some(mm.notifiers.start_blocking(lo, hi, event)),
            _ => None,
        };
        Change {
            mm,
            st,
            inv,
            gather: Gather::default(),
            except: None,
            changed: (0, 0),
            logged: (0, 0),
            log: true,
            edit: Edit::for_change(),
        }
    }

    /// Open a change of one page or range for a reverse-map visit, which
    /// may not block when `blockable` is false: `None` when a secondary MMU
    /// refused the non-blocking start (the caller skips the space). With
    /// nobody listening, no bracket is opened.
    #[inline]
    pub(crate) fn try_open(
        mm: &'a MmInner,
        st: Option<&'a MmState>,
        lo: u64,
        hi: u64,
        event: Option<Event>,
        blockable: bool,
    ) -> Option<Self> {
        let mut c = Change::open(mm, st, lo, hi, None);
        if let Some(event) = event.filter(|_| mm.notifiers.any()) {
            c.inv = Some(mm.notifiers.start(Range { start: lo, end: hi, event, blockable }).ok()?);
        }
        Some(c)
    }

    /// For an operation under the `mmap_lock` held for writing: references
    /// are dropped at once when no accessor exists (`Gather::for_write_locked`).
    #[inline]
    pub(crate) fn write_locked(mut self) -> Self {
        self.gather = Gather::for_write_locked(self.mm);
        self
    }

    /// The caller tells the snapshots' logs what changed itself (a
    /// restore, whose widened range would log every page between its
    /// first and last change).
    #[inline]
    pub(crate) fn unlogged(mut self) -> Self {
        self.log = false;
        self
    }

    /// The shootdown need not wait for `slot` (the accessor this runs for).
    #[inline]
    pub(crate) fn except(&mut self, slot: Option<&'a Slot>) {
        self.except = slot;
    }

    /// Leave to lock page tables for writing while this change is open
    /// (`share::lock_pte_table`).
    #[inline]
    pub(crate) fn edit(&self) -> Edit {
        self.edit
    }

    /// Lock the PTE table `table` of `pt` (covering `base`) to change its
    /// entries as part of this change.
    #[inline]
    pub(crate) fn lock_table(&self, pt: &PageTable, table: FrameId, base: u64) -> PteTableGuard<'a> {
        pt.lock(self.mm.arena(), table, base, self.edit)
    }

    /// The deferred work of the caller's own changes under a page-table
    /// lock (COW's replaced frame, an install over the zero frame).
    #[inline]
    pub(crate) fn gather(&mut self) -> &mut Gather {
        &mut self.gather
    }

    /// Cached translations must be shot down (an entry lost write or access).
    #[inline]
    pub(crate) fn need_flush(&mut self) {
        self.gather.need_flush();
    }

    /// The translations of `[lo, hi)` changed: the vcache's clients hear
    /// so, and snapshots of the space log the pages.
    #[inline]
    pub(crate) fn translations_changed(&mut self, lo: u64, hi: u64) {
        self.translations_moved(lo, hi);
        self.pages_changed(lo, hi);
    }

    /// The translations of `[lo, hi)` changed but name the same pages (an
    /// unshare): the vcache's clients hear so; snapshots log nothing.
    #[inline]
    pub(crate) fn translations_moved(&mut self, lo: u64, hi: u64) {
        self.changed = widen(self.changed, lo, hi);
    }

    /// Entries of `[lo, hi)` changed without changing any translation the
    /// vcache follows (a fault filling an empty entry): snapshots log them.
    #[inline]
    pub(crate) fn pages_changed(&mut self, lo: u64, hi: u64) {
        self.logged = widen(self.logged, lo, hi);
    }

    /// `zap_pte_range` over `[start, end)`: clear every entry, drop
    /// mappings, and defer the frame references to the shootdown. A shared
    /// PTE table the range covers whole is dropped instead (`may_drop`,
    /// under the write lock: only its last sharer zaps it); one covered in
    /// part must have been unshared.
    pub(crate) fn zap(&mut self, pt: &PageTable, start: u64, end: u64, may_drop: bool) {
        let m = &self.mm.machine;
        let mut sink = Zapper { m, gather: &mut self.gather };
        pt.zap_range(&m.arena, &m.counters, (start, end), may_drop, self.edit, &mut sink);
        self.translations_changed(start, end);
    }

    /// Rewrite the permission bits of present entries in `[start, end)`.
    /// Private pages never become writable here (COW decides at the next
    /// write fault); shared pages become writable when `prot` allows it,
    /// those of a write-notified mapping (`notify`, a host file's) only
    /// when dirty (Linux's `can_change_pte_writable`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn protect(&mut self, pt: &PageTable, start: u64, end: u64, prot: Prot, shared: bool, notify: bool) {
        let arena = self.mm.arena();
        let (gather, edit) = (&mut self.gather, self.edit);
        pt.for_each_pte_table(arena, start, end, |table, lo, hi| {
            let mut g = pt.lock(arena, table, lo & !(PTE_TABLE_SPAN - 1), edit);
            let mut va = lo;
            while va < hi {
                let pte = g.get(va);
                // A migration entry carries the flags it will be restored
                // with: they change as the present entry's would.
                if pte.is_present() || pte.is_migration() {
                    let mut new = if prot.readable() { pte.with(Pte::USER) } else { pte.without(Pte::USER) };
                    if !prot.writable() {
                        new = new.without(Pte::WRITE);
                    } else if shared && !pte.is_borrowed() && (!notify || pte.is_dirty()) {
                        new = new.with(Pte::WRITE);
                    }
                    if new != pte {
                        g.set(va, new);
                        if (pte.is_writable() && !new.is_writable()) || (pte.is_user() && !new.is_user()) {
                            gather.need_flush();
                        }
                    }
                }
                va += 4096;
            }
        });
        self.translations_changed(start, end);
    }

    /// Make the shared PTE table covering `va` this space's own (seed 001).
    /// Whether its pages' translations changed is the caller's to say.
    pub(crate) fn unshare(&mut self, pt: &PageTable, va: u64) -> Result<share::Unshare> {
        let m = &self.mm.machine;
        share::unshare(&m.arena, pt, va, &m.counters, m.reclaim.swap.as_deref())
    }

    /// `move_page_tables` for mremap: the entries of `[old, old + len)`
    /// move to `new` (`PageTable::move_ptes`). The vcache's clients move
    /// their entries with them (`vcache::moved`). The change was opened for
    /// the old range: its translations are gone (clients hear so for what
    /// is still attached there) and, if any was present, shot down.
    /// The new range held nothing, so nobody caches a translation of it.
    pub(crate) fn move_ptes(&mut self, pt: &PageTable, old: u64, new: u64, len: u64) -> Result<crate::pgtable::Moved> {
        let m = &self.mm.machine;
        let mut moved = crate::pgtable::Moved::default();
        let r = pt.move_ptes(&m.arena, old, new, len, self.edit, &mut moved);
        m.counters.page_tables.fetch_add(moved.tables_added as u64, crate::sync::Ordering::Relaxed);
        m.counters.tables_moved.fetch_add(moved.tables_moved as u64, crate::sync::Ordering::Relaxed);
        if moved.present > 0 {
            self.gather.need_flush();
        }
        // The vcache's clients re-key their entries to the new range
        // first (the tables say so, their locks are released): a waiter
        // keeps following its page, and the old range's callback at the
        // drop finds nothing of it there.
        let users = &self.mm.vcache_users;
        crate::vcache::moved(&m.vcache_clients(), users, &m.arena, self.mm.id, old, old + len, new);
        self.translations_changed(old, old + len);
        r.map(|()| moved)
    }

    /// Zap every entry of the exited space (its tree `pt`, already taken
    /// out of the state): shared tables lose this space's reference. The
    /// range runs to the end of the last PTE table's span (past `TASK_SIZE`,
    /// where nothing is mapped), so that a shared table there is covered
    /// whole, as a zap that drops one must.
    pub(crate) fn zap_all(&mut self, pt: &PageTable) {
        let end = crate::pgtable::TASK_SIZE.next_multiple_of(crate::pgtable::PTE_TABLE_SPAN);
        self.zap(pt, 0, end, true);
    }
}

/// `[r.0, r.1)` widened to cover `[lo, hi)` (an empty `r` becomes it).
#[inline]
fn widen(r: (u64, u64), lo: u64, hi: u64) -> (u64, u64) {
    if r.0 < r.1 {
        (r.0.min(lo), r.1.max(hi))
    } else {
        (lo, hi)
    }
}

/// What a zap of this change's entries hands back: the mappings drop now
/// (`mmap::zap_pte`), the frame references and tables after the shootdown.
struct Zapper<'g> {
    m: &'g crate::machine::MachineInner,
    gather: &'g mut Gather,
}

impl ZapSink for Zapper<'_> {
    #[inline]
    fn zapped(&mut self, _va: u64, pte: Pte) {
        super::mmap::zap_pte(self.m, pte, self.gather);
    }
    #[inline]
    fn shootdown_pending(&self) -> bool {
        self.gather.shootdown_pending()
    }
    #[inline]
    fn drop_table_later(&mut self, t: FrameId, base: u64) {
        self.gather.drop_table_later(t, base);
    }
    #[inline]
    fn need_flush(&mut self) {
        self.gather.need_flush();
    }
}

impl Change<'_> {
    /// End the change here for its entries and the vcache (steps 2 and 3,
    /// now, under the `mmap_lock` the caller holds), and hand its
    /// shootdown, deferred frees and bracket end (steps 4 to 6) to `batch`,
    /// which runs them once per space for all the changes it holds.
    /// `mm` is the space the change was opened for.
    pub(crate) fn defer_to(mut self, batch: &mut ChangeBatch, mm: &Arc<MmInner>) {
        debug_assert!(std::ptr::eq(&**mm, self.mm), "a change deferred to another space's entry");
        let gather = std::mem::take(&mut self.gather);
        let inv = self.inv.take();
        if gather.is_empty() && inv.is_none() {
            return;
        }
        let i = match batch.spaces.iter().position(|s| Arc::ptr_eq(&s.mm, mm)) {
            Some(i) => i,
            None => {
                batch.spaces.push(Space { mm: mm.clone(), gather: Gather::default(), invs: Vec::new() });
                batch.spaces.len() - 1
            }
        };
        let s = &mut batch.spaces[i];
        s.gather.absorb(gather);
        s.invs.extend(inv);
    }
}

/// The side effects several changes handed over (`Change::defer_to`),
/// run once per address space: a reclaim or migration pass changes entries
/// of many spaces, frame after frame, and shoots each space down once for
/// them all (Linux's `try_to_unmap_flush`). Dropping the batch runs, for
/// every space: the TLB shootdown, then the deferred frees, then the
/// secondary MMUs' `invalidate_range_end` — the order of a single
/// `Change`'s drop, whose vcache step each change ran when it was handed
/// over.
#[derive(Default)]
#[must_use = "a batch runs its changes' side effects when dropped"]
pub(crate) struct ChangeBatch {
    spaces: Vec<Space>,
}

/// What a batch still owes one address space.
struct Space {
    mm: Arc<MmInner>,
    gather: Gather,
    invs: Vec<Invalidation>,
}

impl ChangeBatch {
    /// Take over what `other` owes (its spaces' shootdowns, frees and
    /// bracket ends), so that they run with this batch's.
    pub(crate) fn absorb(&mut self, mut other: ChangeBatch) {
        for s in other.spaces.drain(..) {
            match self.spaces.iter_mut().find(|x| Arc::ptr_eq(&x.mm, &s.mm)) {
                Some(x) => {
                    x.gather.absorb(s.gather);
                    x.invs.extend(s.invs);
                }
                None => self.spaces.push(s),
            }
        }
    }

    /// Run the side effects now (what dropping the batch does).
    pub(crate) fn finish(self) {}
}

impl Drop for ChangeBatch {
    fn drop(&mut self) {
        let mut spaces = std::mem::take(&mut self.spaces);
        // 4 and 5: every space's shootdown, then its deferred frees.
        for s in &mut spaces {
            std::mem::take(&mut s.gather).finish(&s.mm, None);
        }
        // 6. Secondary MMUs may map again.
        for s in spaces {
            for inv in s.invs {
                s.mm.notifiers.end(inv);
            }
        }
    }
}

impl Drop for Change<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        let mm = self.mm;
        // Snapshots log what changed (a leaf lock, only when one is alive).
        if self.log && self.logged.0 < self.logged.1 {
            mm.snaps.pages_changed(self.logged.0, self.logged.1);
        }
        // 3. The vcache, after the tables say so and their locks are gone.
        let (lo, hi) = self.changed;
        if lo < hi {
            let st = self.st;
            let now = |va: u64| match st {
                Some(st) => super::translation::page_now(mm, st, va),
                None => Translation::None,
            };
            let m = &mm.machine;
            crate::vcache::invalidate(&m.vcache_clients(), &mm.vcache_users, &m.arena, mm.id, lo, hi, &now);
        }
        // 4 and 5. The shootdown, then the deferred frees (which only the
        // shootdown hands out).
        std::mem::take(&mut self.gather).finish(mm, self.except);
        // 6. Secondary MMUs may map again.
        if let Some(inv) = self.inv.take() {
            mm.notifiers.end(inv);
        }
    }
}
