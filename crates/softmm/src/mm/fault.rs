//! Page faults: demand-zero, the zero frame, copy-on-write, shared page-in.
//!
//! `fault_in` is the one entry point. It runs under the `mmap_lock` held for
//! reading, takes the split page-table lock of the PTE table involved, and
//! returns the entry now in force, which grants the access asked for.
//!
//! - Read of untouched private memory maps the shared zero frame read-only
//!   (no frame allocated, counts in no RSS), as Linux does.
//! - Write of untouched private memory allocates a zeroed frame.
//! - Write to a present read-only private page is `do_wp_page`: a frame with
//!   refcount 1 is exclusive and reused in place; otherwise (or for the zero
//!   frame) the page is copied to a new frame.
//! - Shared memory maps the object's page, allocating it on first touch.
//! - A write to a present writable page that is not yet dirty sets the dirty
//!   bit, as the CPU does on its first write through a clean entry.

use super::change::Change;
use super::gather::Gather;
use super::{MmInner, MmState};
use crate::error::{Error, Result, SegvKind};
use crate::notifier::Event;
use crate::pgtable::{PteTableGuard, PTE_TABLE_SPAN};
use crate::phys::{flags, FrameId, ZERO_FRAME};
use crate::pte::Pte;
use crate::stats::Counters;
use crate::sync::Ordering;
use crate::tlb::Slot;
use crate::vma::{reusable_anon_of, Backing, Vma};

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
    /// A read that needs the page exclusive to this space (Linux's
    /// `FAULT_FLAG_UNSHARE`, for a read-only pin): COW is broken as for a
    /// write, but the entry keeps the protection it had, and untouched
    /// memory gets a frame of its own instead of the zero frame.
    Unshare,
    /// An instruction fetch: needs `PROT_EXEC` (x86-64 with NX faults a
    /// fetch from a page without it with an access error), then is a read:
    /// it never breaks COW.
    Fetch,
}

impl Access {
    /// Whether the fault makes the page this space's own (copy on write).
    #[inline]
    fn breaks_cow(self) -> bool {
        matches!(self, Access::Write | Access::Unshare)
    }
}

fn segv(mm: &MmInner, addr: u64, kind: SegvKind) -> Error {
    Counters::bump(&mm.machine.counters.segv);
    Error::Segv { addr, kind }
}

/// Make `va` accessible for `access` and return its entry. `except` is the
/// calling accessor's TLB slot, if any (see `Gather::finish`). When the
/// frame limit is reached, reclaims (swaps pages out) and tries again.
pub(crate) fn fault_in(mm: &MmInner, st: &MmState, va: u64, access: Access, except: Option<&Slot>) -> Result<Pte> {
    // Whether anyone listens cannot change while we hold the `mmap_lock`
    // (registration takes it for writing, as Linux's does): look once, and
    // run an instance of the fault without a single bracket when nobody
    // does, the same code as a build without notifiers.
    if mm.notifiers.any() {
        fault_in_as::<true>(mm, st, va, access, except)
    } else {
        fault_in_as::<false>(mm, st, va, access, except)
    }
}

/// `fault_in`; `NOTIFY` says whether subscribers hear of the changes.
fn fault_in_as<const NOTIFY: bool>(
    mm: &MmInner,
    st: &MmState,
    va: u64,
    access: Access,
    except: Option<&Slot>,
) -> Result<Pte> {
    let (mut stalls, mut reclaims) = (0, 0);
    loop {
        match fault_once::<NOTIFY>(mm, st, va, access, except) {
            Ok(Some(pte)) => return Ok(pte),
            // The entry changed under us, or a shared page went back to
            // swap between its swap-in and its mapping: look again.
            Ok(None) | Err(Error::Again) => continue,
            Err(Error::NoMemory(_))
                if stalls < MAX_STALLS && reclaims < MAX_RECLAIMS && crate::reclaim::can_reclaim(&mm.machine) =>
            {
                // Frames another faulting thread takes first do not count
                // against this one: only reclaims that free nothing do.
                reclaims += 1;
                if !reclaim_for(mm, st, va) {
                    stalls += 1;
                    std::thread::yield_now();
                }
            }
            Err(Error::NoMemory(why)) => return Err(crate::reclaim::out_of_memory(&mm.machine, why)),
            Err(e) => return Err(e),
        }
    }
}

/// Direct reclaims freeing nothing that one fault sits through before it
/// gives up with ENOMEM (every page pinned, locked or busy).
const MAX_STALLS: u32 = 64;

/// Direct reclaims in all that one fault runs before it gives up with
/// ENOMEM (Linux's bounded `should_reclaim_retry`): far more than racing
/// faults ever take from one, so reached only when reclaim keeps freeing
/// what this very fault needs again.
const MAX_RECLAIMS: u32 = 1024;

/// Direct reclaim for a fault at `va` that found no free frame. The page
/// the fault works on (the one it copies on write, or just swapped in) is
/// held meanwhile, so reclaim cannot free it: the fault needs it and its
/// next attempt would only read it back, taking the freed frame (a fault
/// that needs a page table to unshare, the page, and its copy at once, with
/// one frame to spare, cycled so forever). Reclaim that can free nothing
/// else is then a stall. Returns whether frames were freed.
fn reclaim_for(mm: &MmInner, st: &MmState, va: u64) -> bool {
    let held = hold_page(mm, st, va);
    let freed = crate::reclaim::direct_reclaim(&mm.machine);
    if let Some(f) = held {
        mm.arena().put(f);
    }
    freed
}

/// A reference on the page mapped at `va`, if it is one reclaim may take
/// (Linux's `get_page_unless_zero`, then a recheck of the entry).
fn hold_page(mm: &MmInner, st: &MmState, va: u64) -> Option<FrameId> {
    let pt = st.pt.as_ref()?;
    let arena = mm.arena();
    let pte = pt.follow_pte(arena, va);
    let f = pte.frame();
    let reclaimable =
        pte.is_present() && !pte.is_zero_frame() && arena.meta(f).flags() & (flags::ANON | flags::SHM) != 0;
    if !reclaimable || !arena.try_get(f) {
        return None;
    }
    let now = pt.follow_pte(arena, va);
    if !now.is_present() || now.frame() != f {
        arena.put(f);
        return None;
    }
    Some(f)
}

/// One attempt of `fault_in`: `None` when the entry changed under it (a
/// racing swap-in, a migration that finished) and it must look again.
fn fault_once<const NOTIFY: bool>(
    mm: &MmInner,
    st: &MmState,
    va: u64,
    access: Access,
    except: Option<&Slot>,
) -> Result<Option<Pte>> {
    let Some(vma) = st.vmas.find(va) else {
        return Err(segv(mm, va, SegvKind::MapErr));
    };
    let allowed = match access {
        Access::Read | Access::Unshare => vma.prot.readable(),
        Access::Write => vma.prot.writable(),
        Access::Fetch => vma.prot.executable(),
    };
    if !allowed {
        return Err(segv(mm, va, SegvKind::AccErr));
    }
    // Past the permission check a fetch is a read of the page.
    let access = if access == Access::Fetch { Access::Read } else { access };
    let pt = st.pt.as_ref().ok_or(Error::Exited)?;
    let arena = mm.arena();
    let va = va & !0xfff;
    // Fast path: already mapped with what the access needs. Like the MMU,
    // set a missing accessed (and, for a write, dirty) bit with a
    // compare-and-swap instead of taking the page-table lock.
    let cur = pt.follow_pte(arena, va);
    if let Some(pte) = fast_path(mm, pt, va, cur, access) {
        return Ok(Some(pte));
    }
    if past_end_without_table(pt, arena, vma, va, access) {
        return Err(Error::Bus { addr: va });
    }
    let mut added = 0;
    let table = pt.pte_table_alloc(arena, va, &mut added);
    if added > 0 {
        mm.machine.counters.page_tables.fetch_add(added as u64, Ordering::Relaxed);
    }
    table?;
    // Any change to a shared PTE table makes it this space's own first
    // (seed 001: a write fault, a COW, or installing an entry).
    if pt.pte_table_shared(arena, va) {
        let base = va & !(PTE_TABLE_SPAN - 1);
        let mut change = Change::open(mm, Some(st), base, base + PTE_TABLE_SPAN, NOTIFY.then_some(Event::Cow));
        change.unshare(pt, va)?;
        change.translations_moved(base, base + PTE_TABLE_SPAN);
        drop(change);
        let now = pt.follow_pte(arena, va);
        if let Some(pte) = fast_path(mm, pt, va, now, access) {
            return Ok(Some(pte));
        }
    }
    // A page on its way somewhere: wait for a migration to finish, or
    // bring a swapped-out page back (I/O happens here, outside every
    // page-table lock).
    let now = pt.follow_pte(arena, va);
    if now.is_migration() {
        wait_for_migration(pt, arena, va, now);
        return Ok(None);
    }
    if now.is_none() {
        if let Some(obj) = vma.mapped_object() {
            // A shared page on swap is named by the object's index, not by
            // a PTE, and a file's page may have to be read in: the object
            // brings it into its cache first (or says it is past the end).
            match obj.prepare_fault(vma.pgoff_of(va), va) {
                Ok(true) => crate::stats::Counters::bump(&mm.machine.counters.swap_ins),
                Ok(false) => {}
                // Past the end: a read fault still maps the cached pages
                // around it, then fails (Linux's do_read_fault runs
                // fault-around before the fault itself).
                Err(Error::Bus { .. }) if access != Access::Write => {}
                Err(e) => return Err(e),
            }
        }
    }
    let swapped_in = if now.is_swap() {
        match crate::reclaim::swap_in(mm, vma, va, now.swap_slot()) {
            Ok(f) => Some((now, f)),
            Err(Error::Again) => return Ok(None),
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    // Read the table from the PMD entry only now: another thread may have
    // unshared it (installed a copy) since our walk. Once writable, the
    // entry stays put while we hold the mmap_lock.
    let table = pt.pte_table(arena, va).ok_or(Error::Exited)?;
    // A write to a present read-only page may give it a new frame (COW):
    // secondary MMUs drop the page first (not under the page-table lock,
    // since a subscriber may sleep).
    let cow = cur.is_present() && access.breaks_cow() && !cur.is_writable();
    let bracketed = NOTIFY && cow;
    let mut change = Change::open(mm, Some(st), va, va + 4096, bracketed.then_some(Event::Cow));
    change.except(except);
    let result = {
        let mut g = change.lock_table(pt, table, va & !(PTE_TABLE_SPAN - 1));
        let entry = g.get(va);
        match swapped_in {
            Some((swp, f)) if entry.is_swap() && entry.swap_slot() == swp.swap_slot() => {
                Ok(do_swap_page(mm, vma, &mut g, va, entry, f, access))
            }
            Some((_, f)) => {
                arena.put(f); // someone else brought it back first
                Ok(None)
            }
            None if entry.is_swap() || entry.is_migration() => Ok(None),
            // The entry became a present read-only one since `cur` (a racing
            // read fault): a write now copies on write, which secondary MMUs
            // must hear about first. Look again with the bracket in place.
            None if NOTIFY && !bracketed && access.breaks_cow() && entry.is_present() && !entry.is_writable() => {
                Ok(None)
            }
            None => handle_pte_fault(&Vmf { mm, st, vma, va, access }, &mut g, change.gather()).map(Some),
        }
    };
    // A new frame for a page that had one (COW, or the zero frame's first
    // write): the vcache hears of it when the change ends.
    // Any other new entry (a first fault, a swap-in, COW's reuse making
    // the page writable) changes only what snapshots see.
    if let Ok(Some(new)) = &result {
        if cur.is_present() && new.frame() != cur.frame() {
            change.translations_changed(va, va + 4096);
        } else if new.raw() != cur.raw() {
            change.pages_changed(va, va + 4096);
        }
    }
    drop(change);
    result
}

/// Wait until the migration entry `entry` at `va` is replaced (the
/// migrating thread never needs this space's `mmap_lock` for writing, so
/// the wait ends).
fn wait_for_migration(pt: &crate::pgtable::PageTable, arena: &crate::phys::FrameArena, va: u64, entry: Pte) {
    let backoff = crossbeam_utils::Backoff::new();
    loop {
        let p = pt.follow_pte(arena, va);
        if !p.is_migration() || p.frame() != entry.frame() {
            return;
        }
        backoff.snooze();
    }
}

/// Map frame `f`, just brought back for the swap entry `entry` (the
/// caller's reference on `f` becomes the entry's). Linux's `do_swap_page`:
/// a write by the only user of the slot takes the page out of the swap
/// cache and maps it writable; otherwise it is mapped read-only and a write
/// goes on to copy-on-write. `None` asks the caller to fault again.
fn do_swap_page(
    mm: &MmInner,
    vma: &Vma,
    g: &mut PteTableGuard<'_>,
    va: u64,
    entry: Pte,
    f: FrameId,
    access: Access,
) -> Option<Pte> {
    let arena = mm.arena();
    let swap = mm.machine.reclaim.swap.as_ref()?;
    let meta = arena.meta(f);
    meta.add_counts(0, 1);
    swap.put(entry.swap_slot());
    let mut bits = 0;
    if access == Access::Write && vma.prot.writable() && take_from_swap_cache(mm, f, meta.futex_keys()) {
        bits = Pte::WRITE | Pte::DIRTY;
        meta.set_flags(flags::DIRTY);
    }
    let new = install(g, va, f, bits);
    if access == Access::Write && !new.is_writable() {
        return None; // mapped read-only: the retry copies on write
    }
    Some(new)
}

/// The entry, if `pte` lets `access` through with at most the accessed and
/// dirty bits to set (which this sets without the lock, as an MMU does).
#[inline]
fn fast_path(mm: &MmInner, pt: &crate::pgtable::PageTable, va: u64, pte: Pte, access: Access) -> Option<Pte> {
    if !pte.is_present() || !pte.is_user() || (access.breaks_cow() && !pte.is_writable()) {
        return None;
    }
    let want = match access {
        Access::Read | Access::Unshare | Access::Fetch => Pte::ACCESSED,
        Access::Write => Pte::ACCESSED | Pte::DIRTY,
    };
    if pte.raw() & want == want {
        return Some(pte);
    }
    if !pt.set_access_flags(mm.arena(), va, pte, want) {
        return None; // the entry changed under us: take the locked path
    }
    // Only the entry becomes dirty, as with a CPU's write: the frame itself
    // is marked when the entry is zapped (see `Change::zap`).
    Some(pte.with(want))
}

/// One fault, as the locked path handles it (Linux's `vm_fault`).
struct Vmf<'a> {
    mm: &'a MmInner,
    /// The `mmap_lock`'s state, held for reading.
    st: &'a MmState,
    vma: &'a Vma,
    /// The faulting address, page-aligned.
    va: u64,
    access: Access,
}

fn handle_pte_fault(vmf: &Vmf<'_>, g: &mut PteTableGuard<'_>, gather: &mut Gather) -> Result<Pte> {
    let Vmf { mm, st, vma, va, access } = *vmf;
    let pte = g.get(va);
    let c = &mm.machine.counters;
    if !pte.is_present() {
        if let Some(obj) = vma.private_file() {
            return do_private_file_fault(vmf, obj, g);
        }
        return match (&vma.backing, access) {
            (Backing::Anon(_), Access::Read) => {
                let new = Pte::new(ZERO_FRAME, Pte::USER | Pte::ACCESSED | Pte::SOFT_ZERO);
                g.set(va, new);
                Counters::bump(&c.fault_zero_page);
                Ok(new)
            }
            (Backing::Anon(_), _) => {
                let f = new_anon_frame(mm, st, vma, va, None)?;
                Counters::bump(&c.fault_anon);
                Ok(install_anon(mm, g, va, f, access))
            }
            (Backing::Shm(obj), _) => {
                let f = get_page_around(vma, obj, g, va, access != Access::Write)?;
                let m = mm.arena().meta(f);
                m.add_counts(0, 1);
                let writable = vma.prot.writable() && (access == Access::Write || !vma.writenotify());
                let mut bits = if writable { Pte::WRITE } else { 0 };
                if access == Access::Write {
                    bits |= Pte::DIRTY;
                    m.set_flags(flags::DIRTY);
                }
                Counters::bump(&c.fault_shared);
                Ok(install(g, va, f, bits))
            }
        };
    }
    // Present: bring permission bits up to what the VMA allows.
    let mut new = pte.with(Pte::ACCESSED);
    if vma.prot.readable() {
        new = new.with(Pte::USER);
    }
    if access.breaks_cow() && !pte.is_writable() {
        if let Backing::Anon(_) = vma.backing {
            return do_wp_page(vmf, g, pte, gather);
        }
    }
    if access == Access::Write && !pte.is_writable() {
        // A write fault on shared memory dirties the page itself (Linux's
        // wp_page_shared -> fault_dirty_shared_page), so every mapping of it
        // reports it dirty from now on.
        new = new.with(Pte::WRITE);
        mm.arena().meta(pte.frame()).set_flags(flags::DIRTY);
    }
    if access == Access::Write {
        // Writable but clean: the CPU sets the entry's dirty bit only.
        new = new.with(Pte::DIRTY);
    }
    if new != pte {
        g.set(va, new);
        Counters::bump(&c.fault_minor);
    }
    Ok(new)
}

/// A fault on an empty entry of a private file mapping (Linux's
/// `do_read_fault` and `do_cow_fault`): a read maps the file's page-cache
/// page read-only, with fault-around, so later writes to the file show
/// through until this space writes the page; a write (or an unshare)
/// copies the file's page into a new anonymous frame of the VMA's
/// anon_vma, and the file's page stays as it was.
fn do_private_file_fault(vmf: &Vmf<'_>, obj: &crate::shm::ShmObject, g: &mut PteTableGuard<'_>) -> Result<Pte> {
    let Vmf { mm, st, vma, va, access } = *vmf;
    let c = &mm.machine.counters;
    let src = get_page_around(vma, obj, g, va, !access.breaks_cow())?;
    if !access.breaks_cow() {
        mm.arena().meta(src).add_counts(0, 1);
        Counters::bump(&c.fault_shared);
        return Ok(install(g, va, src, 0));
    }
    let copy = new_anon_frame(mm, st, vma, va, Some(src));
    // The file keeps its page (the index's reference); a truncation that
    // took it meanwhile leaves ours the last, and the frame goes now.
    mm.arena().put(src);
    let f = copy?;
    Counters::bump(&c.fault_cow_copy);
    Ok(install_anon(mm, g, va, f, access))
}

/// Pages around a read fault that fault-around maps: Linux's
/// `fault_around_bytes` (64 KiB) as a page count.
const FAULT_AROUND_PAGES: u64 = 16;

/// Whether a fault at `va` past the end of a host file maps nothing and
/// leaves no PTE table (a write fault always; a read fault as follows): Linux 6.18's `filemap_map_pages` installs a
/// missing PTE table only when the first cached page of the fault-around
/// range is not the file's last (no PMD may map across the end of a file),
/// and without a table it maps nothing; the fault then fails (SIGBUS) and
/// frees the table it had ready. Shared anonymous memory (shmem) is exempt,
/// as in Linux.
fn past_end_without_table(
    pt: &crate::pgtable::PageTable,
    arena: &crate::phys::FrameArena,
    vma: &Vma,
    va: u64,
    access: Access,
) -> bool {
    // Shared and private file mappings alike: the window's pages are the
    // file's page-cache pages.
    let Some(obj) = vma.mapped_object() else { return false };
    if !obj.store.is_host() || pt.pte_table(arena, va).is_some() {
        return false;
    }
    let last = obj.size().div_ceil(4096).saturating_sub(1);
    if vma.pgoff_of(va) <= last && obj.size() > 0 {
        return false;
    }
    // A write fault there (do_shared_fault) maps nothing around at all.
    if access == Access::Write {
        return true;
    }
    let (lo, hi) = around_window(vma, va);
    let index = obj.index.lock();
    !(lo..hi)
        .step_by(4096)
        .map(|at| vma.pgoff_of(at))
        .filter(|&p| p < last)
        .any(|p| matches!(index.pages.get(p as usize), Some(crate::shm::ShmPage::Frame(_))))
}

/// The fault-around range of a fault at `va`: 64 KiB aligned down, cut at
/// the VMA's ends and the PTE table's end.
fn around_window(vma: &Vma, va: u64) -> (u64, u64) {
    let window = FAULT_AROUND_PAGES * 4096;
    let lo = (va & !(window - 1)).max(vma.start);
    let hi = (lo + window).min(vma.end).min((va & !(PTE_TABLE_SPAN - 1)) + PTE_TABLE_SPAN);
    (lo, hi)
}

/// The object's page for the fault at `va` (with a reference for the
/// caller, as [`crate::shm::ShmObject::get_page_around`]), and for a read
/// fault (`around`) Linux's `do_fault_around` first: the pages of a 64 KiB
/// window around `va` that are already resident in the object and not yet
/// mapped here are mapped too, also when the fault itself then fails (past
/// the end of a file: `do_read_fault` maps around before it looks at the
/// page). The window starts at `va` aligned down to 64 KiB, moved up to the
/// VMA's start if that is later, and runs 16 pages from there, cut at the
/// VMA's end and the PTE table's end (exactly Linux's `from_pte`/`to_pte`).
/// Pages are mapped clean (not dirty), writable when the VMA is shared and
/// writable but for a host file's (write-notified; a private file mapping
/// maps them read-only: a write copies). Visible to users through `phys`
/// and smaps (mapcount, PSS). One look at the object's index does both: its
/// lock nests inside the page-table lock.
fn get_page_around(
    vma: &Vma,
    obj: &crate::shm::ShmObject,
    g: &mut PteTableGuard<'_>,
    va: u64,
    around: bool,
) -> Result<FrameId> {
    let (lo, hi) = around_window(vma, va);
    let hi = if around { hi } else { lo };
    let shared = matches!(vma.backing, Backing::Shm(_));
    let bits = if shared && vma.prot.writable() && !vma.writenotify() { Pte::WRITE } else { 0 };
    let first = vma.pgoff_of(lo);
    let addr = |pgoff: u64| lo + ((pgoff - first) << 12);
    let mut found = [(0u64, FrameId(0)); FAULT_AROUND_PAGES as usize];
    let mut n = 0;
    let f = obj.get_page_around(
        vma.pgoff_of(va),
        va,
        (first, (hi - lo) >> 12),
        |pgoff| addr(pgoff) != va && g.get(addr(pgoff)).is_none(),
        |pgoff, f| {
            found[n] = (addr(pgoff), f);
            n += 1;
        },
    );
    for &(at, f) in &found[..n] {
        install(g, at, f, bits);
    }
    f
}

/// Write to a present, write-protected private page (or an unshare of
/// it: the same, but the entry stays read-only).
/// `pte` is the entry found under the page-table lock `g` holds.
fn do_wp_page(vmf: &Vmf<'_>, g: &mut PteTableGuard<'_>, pte: Pte, gather: &mut Gather) -> Result<Pte> {
    let Vmf { mm, st, vma, va, access } = *vmf;
    let c = &mm.machine.counters;
    let arena = mm.arena();
    if pte.is_zero_frame() {
        // Other threads may hold the zero frame in their TLBs for this page.
        let f = new_anon_frame(mm, st, vma, va, None)?;
        gather.need_flush();
        Counters::bump(&c.fault_anon);
        return Ok(install_anon(mm, g, va, f, access));
    }
    let old = pte.frame();
    if pte.is_borrowed() {
        // Never exclusive (B4: its backing maps the frame too). The entry
        // holds no reference to drop; take one for the shootdown instead,
        // since the backing's last mapper may free the frame as soon as
        // this entry no longer borrows it.
        let f = new_anon_frame(mm, st, vma, va, Some(old))?;
        arena.get(old);
        gather.defer_put(arena, old);
        Counters::bump(&c.fault_cow_copy);
        return Ok(install_anon(mm, g, va, f, access));
    }
    if !arena.meta(old).has(flags::ANON) {
        // A private file mapping's page-cache page (Linux's wp_page_copy
        // for a page that is not anonymous): never reused, always copied.
        let f = new_anon_frame(mm, st, vma, va, Some(old))?;
        gather.unmap_and_put(arena, old);
        Counters::bump(&c.fault_cow_copy);
        return Ok(install_anon(mm, g, va, f, access));
    }
    if anon_exclusive(mm, old) {
        if access == Access::Unshare {
            return Ok(pte); // already this space's own
        }
        let new = pte.with(Pte::WRITE | Pte::DIRTY | Pte::ACCESSED | Pte::USER);
        arena.meta(old).set_flags(flags::DIRTY);
        g.set(va, new);
        Counters::bump(&c.fault_cow_reuse);
        return Ok(new);
    }
    let f = new_anon_frame(mm, st, vma, va, Some(old))?;
    gather.unmap_and_put(arena, old);
    Counters::bump(&c.fault_cow_copy);
    Ok(install_anon(mm, g, va, f, access))
}

/// COW's reuse test (Linux's `wp_can_reuse_anon_folio`): whether the
/// private frame `f`, mapped by the entry being faulted (in a table this
/// space owns alone), is seen by nobody else, so that a write may reuse it
/// in place. Pins do not count (a pinner must keep seeing this page), nor
/// do futex waiters keyed by it (they follow this page anyway); a swap
/// cache holding it alone lets go first (the device copy goes stale the
/// moment the page is written). Needs the page-table lock: pins are taken
/// under it.
pub(crate) fn anon_exclusive(mm: &MmInner, f: FrameId) -> bool {
    let meta = mm.arena().meta(f);
    // Waiters are counted after they took their reference and uncounted
    // before they drop it: read before the references, the count is at most
    // the waiters' share of them (a waiter leaving or coming meanwhile only
    // errs toward copying).
    let waiters = meta.futex_keys();
    let mut refs = meta.unpinned_refs();
    if refs == 2 + waiters && meta.has(flags::SWAPCACHE) && take_from_swap_cache(mm, f, waiters) {
        refs -= 1;
    }
    refs == 1 || refs == 1 + waiters
}

/// Take `f` (mapped once, by the entry being faulted) out of the swap cache
/// if nothing else holds it (but pins and the `waiters` futex waiters keyed
/// by it, read before: they follow this page wherever it goes) and no swap
/// entry names its slot, so that it may be mapped writable. Needs the frame
/// lock, as every removal from the cache does (reclaim holds it from the
/// moment it looks at the cache to the end of a swap-out); when reclaim
/// holds it now, the answer is no and the write copies instead.
fn take_from_swap_cache(mm: &MmInner, f: FrameId, waiters: u32) -> bool {
    let Some(swap) = mm.machine.reclaim.swap.as_ref() else { return false };
    let meta = mm.arena().meta(f);
    if !meta.try_lock() {
        return false;
    }
    let taken = swap.remove_if(mm.arena(), f, 2 + meta.pins() + waiters, true);
    swap.unlock_frame(mm.arena(), f);
    taken
}

/// Install a freshly referenced frame `f` at `va` (mapcount already counted
/// for shared pages; counted here for new anonymous ones).
fn install(g: &mut PteTableGuard<'_>, va: u64, f: FrameId, bits: u64) -> Pte {
    let new = Pte::new(f, bits | Pte::USER | Pte::ACCESSED);
    g.set(va, new);
    new
}

/// Install the new anonymous frame `f` at `va` (writable for a write,
/// read-only for an unshare), and only then mark it anonymous: the reclaim
/// clock considers only frames marked so, and must find them mapped and
/// fully set up (rmap owner and index).
fn install_anon(mm: &MmInner, g: &mut PteTableGuard<'_>, va: u64, f: FrameId, access: Access) -> Pte {
    let bits = if access == Access::Write { Pte::WRITE | Pte::DIRTY } else { 0 };
    let new = install(g, va, f, bits);
    mm.arena().meta(f).set_flags(flags::ANON);
    new
}

/// A new private anonymous frame for `va`: zeroed, or a copy of `copy_of`.
/// It comes with one reference and one mapping (for the entry the caller
/// installs with `install_anon`) and its rmap link to the VMA's anon_vma
/// (prepared on first use); it is not marked `ANON` until installed.
fn new_anon_frame(mm: &MmInner, st: &MmState, vma: &Vma, va: u64, copy_of: Option<FrameId>) -> Result<FrameId> {
    let arena = mm.arena();
    let anon = anon_vma_prepare(mm, st, vma);
    let f = arena.alloc(copy_of.is_none(), flags::DIRTY)?;
    if let Some(src) = copy_of {
        arena.copy_frame(f, src);
    }
    let m = arena.meta(f);
    m.owner.store(anon, Ordering::Relaxed);
    m.index.store(vma.pgoff_of(va), Ordering::Relaxed);
    // Add, never set: a scanner that looked at this frame's previous life
    // may hold a reference it is about to drop.
    m.add_counts(0, 1);
    Ok(f)
}

/// Give `vma` an anon_vma if it has none: a neighbour's when Linux would
/// reuse it (`find_mergeable_anon_vma`), else a new one. Returns its id.
fn anon_vma_prepare(mm: &MmInner, st: &MmState, vma: &Vma) -> u64 {
    let Backing::Anon(link) = &vma.backing else { return 0 };
    if let Some(av) = link.anon_vma() {
        return av.id;
    }
    let (prev, _) = st.vmas.neighbours(vma.start);
    let next = st.vmas.neighbours(vma.end).1.filter(|n| n.start == vma.end);
    let reuse = next.and_then(|n| reusable_anon_of(vma, n)).or_else(|| prev.and_then(|p| reusable_anon_of(vma, p)));
    let reuse = reuse.cloned();
    let machine = &mm.machine;
    // The VMA's anon_vma decides what it merges with: a snapshot taken
    // before it had one must give the VMA back without it.
    st.vmas.changed(vma.start, vma.end);
    link.prepare(|me| match reuse {
        Some(av) => {
            av.link(me);
            av
        }
        None => machine.anon_vmas.create(machine.new_id(), me),
    })
    .id
}
