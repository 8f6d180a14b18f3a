//! `check_invariants`: an audit that recounts what the counters claim.
//!
//! It walks every live address space's VMAs and page tables and every shared
//! object's page index, computes what each frame's refcount and mapcount must
//! be, and compares with the stored values; it also checks that every frame
//! is either referenced or on a free list (no leak, no double free), that
//! page-table pages are marked and counted, that PTEs lie inside VMAs of the
//! right kind, and that a writable private page is never shared.

use super::MmInner;
use crate::machine::MachineInner;
use crate::phys::{flags, FrameId, ZERO_FRAME};
use crate::pte::Pte;
use crate::vma::Backing;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;

/// The first broken invariant an audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantError {
    /// What is wrong, with the frame, address space and address involved.
    pub message: String,
}

impl fmt::Display for InvariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant broken: {}", self.message)
    }
}

impl std::error::Error for InvariantError {}

macro_rules! fail {
    ($($t:tt)*) => { return Err(InvariantError { message: format!($($t)*) }) };
}

#[derive(Default)]
struct Expected {
    refs: HashMap<FrameId, u32>,
    maps: HashMap<FrameId, u32>,
    /// Distinct table pages (a shared PTE table counts once).
    tables: std::collections::HashSet<FrameId>,
    /// PTE tables whose entries were counted already (through another
    /// address space sharing them).
    counted_pte_tables: std::collections::HashSet<FrameId>,
    /// Every PTE table of every address space.
    pte_tables: std::collections::HashSet<FrameId>,
    /// References on swap slots: swap entries and the swap cache.
    slots: HashMap<u32, u32>,
    /// Pins by frame, from the machine's pin registry.
    pins: HashMap<FrameId, u32>,
    /// Every PTE table that borrows, with its backing (`pgtable/borrow.rs`).
    borrowers: HashMap<FrameId, FrameId>,
}

pub(crate) fn check_machine(m: &MachineInner) -> Result<(), InvariantError> {
    let mut mms = m.live_mms();
    mms.sort_by_key(|mm| mm.id);
    // Quiesce: hold every mmap_lock for writing, in id order, then wait
    // for a background reclaim round in progress (whose batch holds frames).
    let guards: Vec<_> = mms.iter().map(|mm| mm.state.write()).collect();
    let _round = m.reclaim.round.lock();
    let mut exp = Expected::default();
    for (mm, st) in mms.iter().zip(&guards) {
        check_mm(m, mm, st, &mut exp)?;
    }
    for obj in m.live_shms() {
        for (pgoff, f) in obj.resident() {
            let meta = m.arena.meta(f);
            if !meta.has(flags::SHM) {
                fail!("frame {} at page {pgoff} of shared object {} is not marked SHM", f.0, obj.id());
            }
            *exp.refs.entry(f).or_default() += 1;
        }
        for (_, slot) in obj.swapped_pages() {
            *exp.slots.entry(slot).or_default() += 1;
        }
    }
    if let Some(swap) = m.reclaim.swap.as_ref() {
        let (cached, _) = swap.snapshot();
        for (slot, f) in cached {
            let meta = m.arena.meta(f);
            if !meta.has(flags::SWAPCACHE) || meta.swap.load(Ordering::Acquire) != slot + 1 {
                fail!("frame {} caches swap slot {slot} but its metadata says {:#x}", f.0, meta.flags());
            }
            *exp.refs.entry(f).or_default() += 1;
            *exp.slots.entry(slot).or_default() += 1;
        }
    }
    exp.pins = m.pins.snapshot();
    for (&f, &n) in &exp.pins {
        *exp.refs.entry(f).or_default() += n;
    }
    let held = match m.futexes.held_refs(&m.arena) {
        Ok(held) => held,
        Err(e) => fail!("futex keys: {e}"),
    };
    for (f, n) in held {
        *exp.refs.entry(f).or_default() += n as u32;
    }
    for (mm, st) in mms.iter().zip(&guards) {
        if let Err(e) = m.futexes.audit(mm, st) {
            fail!("futex/vcache of mm {}: {e}", mm.id);
        }
    }
    check_borrowers(m, &mut exp)?;
    check_frames(m, &exp)?;
    check_slots(m, &exp)
}

/// Borrowed entries: each borrower holds a reference on its backing and
/// counts in its borrower half (B2: the backing is a live table, mapped
/// by some space), and the registry lists exactly these pairs.
fn check_borrowers(m: &MachineInner, exp: &mut Expected) -> Result<(), InvariantError> {
    let mut listed: HashMap<FrameId, FrameId> = HashMap::new();
    for (t, cs) in m.arena.borrows.snapshot() {
        for c in cs {
            if listed.insert(c, t).is_some() {
                fail!("PTE table {} is registered twice as a borrower", c.0);
            }
        }
    }
    for (&c, &t) in &exp.borrowers {
        if listed.get(&c) != Some(&t) {
            fail!("PTE table {} borrows from table {} but the registry says {:?}", c.0, t.0, listed.get(&c));
        }
        if !exp.pte_tables.contains(&t) {
            fail!("PTE table {} borrows from table {}, which no address space maps (an orphan)", c.0, t.0);
        }
        *exp.refs.entry(t).or_default() += 1;
        *exp.maps.entry(t).or_default() += 1;
    }
    if let Some((c, t)) = listed.iter().find(|(c, _)| !exp.borrowers.contains_key(c)) {
        fail!("the registry lists PTE table {} as a borrower of {}, but no live table is", c.0, t.0);
    }
    Ok(())
}

/// B1 for the borrowed entry `pte` at `va` of PTE table `c`: `c` has a
/// backing whose entry there maps the same frame, and it is not writable.
fn check_borrowed(m: &MachineInner, mm: &MmInner, va: u64, pte: Pte, c: FrameId) -> Result<(), InvariantError> {
    let Some(t) = crate::pgtable::borrow::backing(&m.arena, c) else {
        fail!("mm {}: borrowed entry at {va:#x} ({pte:?}) in table {}, which borrows from nothing", mm.id, c.0);
    };
    let there = crate::pgtable::borrow::entry(&m.arena, t, crate::pgtable::index(va, 0));
    if !there.is_present() || there.frame() != pte.frame() {
        fail!("mm {}: borrowed entry at {va:#x} ({pte:?}) but its backing {} has {there:?}", mm.id, t.0);
    }
    if pte.is_writable() {
        fail!("mm {}: borrowed entry at {va:#x} is writable ({pte:?})", mm.id);
    }
    Ok(())
}

/// Every swap slot's count equals the swap entries and cache naming it.
fn check_slots(m: &MachineInner, exp: &Expected) -> Result<(), InvariantError> {
    let Some(swap) = m.reclaim.swap.as_ref() else {
        if let Some(slot) = exp.slots.keys().next() {
            fail!("swap entry for slot {slot} without a swap device");
        }
        return Ok(());
    };
    let (_, counts) = swap.snapshot();
    for &(slot, c) in &counts {
        let want = exp.slots.get(&slot).copied().unwrap_or(0);
        if c != want {
            fail!("swap slot {slot}: count {c} but {want} entries and cache references found");
        }
    }
    for (&slot, &want) in &exp.slots {
        if swap.count(slot) == 0 {
            fail!("swap slot {slot} is free but {want} entries name it");
        }
    }
    if swap.used() != counts.len() as u64 {
        fail!("swap device counts {} slots in use, audit found {}", swap.used(), counts.len());
    }
    Ok(())
}

/// The reverse map is complete: each anonymous page mapped at `va` in `mm`
/// by a VMA whose own anon_vma is `own` has a live anon_vma that is `own`
/// or an ancestor of it (a walk from it reaches `mm`), and its index is
/// the VMA's page offset at `va` (`expected`).
fn check_rmap(
    m: &MachineInner,
    mm: &MmInner,
    own: Option<&crate::rmap::AnonVma>,
    va: u64,
    expected: u64,
    f: FrameId,
) -> Result<(), InvariantError> {
    let meta = m.arena.meta(f);
    let owner = meta.owner.load(Ordering::Acquire);
    let index = meta.index.load(Ordering::Acquire);
    if index != expected {
        fail!("mm {}: frame {} mapped at {va:#x} has rmap index {index:#x}, not {expected:#x}", mm.id, f.0);
    }
    if m.anon_vmas.get(owner).is_none() {
        fail!("mm {}: frame {} at {va:#x}: its anon_vma {owner} is gone", mm.id, f.0);
    }
    match own {
        Some(own) if own.links_of(mm.id) > 0 && own.descends_from(owner) => Ok(()),
        _ => fail!("mm {}: frame {} at {va:#x}: its anon_vma {owner} does not reach the space", mm.id, f.0),
    }
}

/// Each anon_vma lists each space with exactly the number of its VMAs
/// whose own anon_vma it is.
fn check_links(mm: &MmInner, st: &super::MmState) -> Result<(), InvariantError> {
    let mut links: HashMap<u64, (u32, std::sync::Arc<crate::rmap::AnonVma>)> = HashMap::new();
    for v in st.vmas.iter() {
        if let Backing::Anon(l) = &v.backing {
            if let Some(av) = l.anon_vma() {
                links.entry(av.id).or_insert_with(|| (0, av.clone())).0 += 1;
            }
        }
    }
    for (id, (n, av)) in links {
        let listed = av.links_of(mm.id);
        if listed != n {
            fail!("mm {}: anon_vma {id} lists {listed} of its VMAs, {n} are chained to it", mm.id);
        }
    }
    Ok(())
}

/// Flags a VMA may carry together: lock-on-fault only with a lock (as
/// `mlock2` and `mlockall` set them), a growing stack only in private
/// memory (`MAP_GROWSDOWN` of shared memory is refused).
fn check_vma_flags(mm: &MmInner, v: &crate::vma::Vma) -> Result<(), InvariantError> {
    use crate::vma::VmFlags;
    if v.flags.contains(VmFlags::LOCKONFAULT) && !v.flags.contains(VmFlags::LOCKED) {
        fail!("mm {}: VMA {:#x}-{:#x} is lock-on-fault without being locked", mm.id, v.start, v.end);
    }
    if v.flags.contains(VmFlags::GROWSDOWN) && v.kind() == crate::vma::MapKind::Shared {
        fail!("mm {}: shared VMA {:#x}-{:#x} grows down", mm.id, v.start, v.end);
    }
    Ok(())
}

fn check_mm(m: &MachineInner, mm: &MmInner, st: &super::MmState, exp: &mut Expected) -> Result<(), InvariantError> {
    let arena = &m.arena;
    let mut prev_end = 0;
    for v in st.vmas.iter() {
        if v.start % 4096 != 0 || v.end % 4096 != 0 || v.start >= v.end || v.start < prev_end {
            fail!("mm {}: VMA {:#x}-{:#x} misaligned, empty or overlapping", mm.id, v.start, v.end);
        }
        prev_end = v.end;
        check_vma_flags(mm, v)?;
    }
    let Some(pt) = st.pt.as_ref() else {
        if st.vmas.len() != 0 {
            fail!("mm {} exited but still has {} VMAs", mm.id, st.vmas.len());
        }
        return Ok(());
    };
    let mut err = None;
    let mut ptes: Vec<(u64, Pte, FrameId, bool)> = Vec::new();
    pt.for_each_table(arena, |t, level| {
        exp.tables.insert(t);
        if level == 0 {
            exp.pte_tables.insert(t);
            if let Some(b) = crate::pgtable::borrow::backing(arena, t) {
                exp.borrowers.insert(t, b);
            }
        }
        *exp.refs.entry(t).or_default() += 1;
        if !arena.meta(t).has(flags::PAGETABLE) && err.is_none() {
            err = Some(format!("mm {}: table frame {} (level {level}) not marked PAGETABLE", mm.id, t.0));
        }
    });
    if let Some(e) = err {
        fail!("{e}");
    }
    check_links(mm, st)?;
    collect_ptes(arena, pt.root(), 3, 0, true, &mut ptes);
    // Sharing: a writable PMD entry means an exclusive table; a table with
    // more than one reference is write-protected in every sharer.
    let mut bad = None;
    pt.for_each_pmd(arena, 0, crate::pgtable::TASK_SIZE, |_, e, lo, _| {
        let rc = arena.meta(e.frame()).refcount();
        if bad.is_none() && e.is_writable() && rc != 1 {
            bad = Some(format!(
                "mm {}: writable PMD entry at {lo:#x} maps PTE table {} with refcount {rc}",
                mm.id,
                e.frame().0
            ));
        }
    });
    if let Some(b) = bad {
        fail!("{b}");
    }
    // Entries of a table shared with another space are checked against
    // this space's VMAs too, but their frames are counted once.
    // (Only this space's tables are looked up: copying the set of every
    // space's would make an audit quadratic in the number of spaces.)
    let first_seen: std::collections::HashSet<FrameId> =
        ptes.iter().map(|p| p.2).filter(|t| !exp.counted_pte_tables.contains(t)).collect();
    exp.counted_pte_tables.extend(first_seen.iter().copied());
    for (va, pte, table, pmd_writable) in ptes {
        let first_visit = first_seen.contains(&table);
        let Some(v) = st.vmas.find(va) else {
            fail!("mm {}: PTE at {va:#x} ({pte:?}) outside every VMA", mm.id);
        };
        if pte.is_swap() {
            if !matches!(v.backing, Backing::Anon(_)) {
                fail!("mm {}: swap entry at {va:#x} in a shared VMA", mm.id);
            }
            if first_visit {
                *exp.slots.entry(pte.swap_slot()).or_default() += 1;
            }
            continue;
        }
        if pte.is_zero_frame() {
            if pte.frame() != ZERO_FRAME || pte.is_writable() {
                fail!("mm {}: zero-frame PTE at {va:#x} is {pte:?}", mm.id);
            }
            if !matches!(v.backing, Backing::Anon(_)) || v.private_file().is_some() {
                fail!("mm {}: zero frame mapped in a shared or file VMA at {va:#x}", mm.id);
            }
            continue;
        }
        let f = pte.frame();
        let meta = arena.meta(f);
        if !meta.has(flags::ALLOCATED) {
            fail!("mm {}: PTE at {va:#x} maps free frame {}", mm.id, f.0);
        }
        if pte.is_borrowed() {
            check_borrowed(m, mm, va, pte, table)?;
        }
        match &v.backing {
            // A private file mapping's page not yet copied on write: the
            // file's own page at that offset, mapped read-only.
            Backing::Anon(_) if !meta.has(flags::ANON) && v.private_file().is_some() => {
                check_cache_page(mm, v, va, pte, f)?;
            }
            Backing::Anon(link) => {
                if !meta.has(flags::ANON) {
                    fail!("mm {}: private PTE at {va:#x} maps non-anonymous frame {}", mm.id, f.0);
                }
                check_rmap(m, mm, link.anon_vma().map(|a| &**a), va, v.pgoff_of(va), f)?;
                // A frame reclaim put in the swap cache but could not unmap
                // everywhere (a busy space) may stay writable there; its
                // device copy must then never be trusted.
                if pte.is_writable() && pte.is_present() && meta.has(flags::SWAP_VALID) {
                    fail!("mm {}: writable PTE at {va:#x} maps frame {} whose swap copy is marked valid", mm.id, f.0);
                }
                // Pin rule 1 and 3 (`mm/pin.rs`): a pinned private page is
                // its space's own, in a table of its own.
                if meta.pins() > 0 && (!pmd_writable || meta.mapcount() != 1) {
                    fail!(
                        "mm {}: pinned private frame {} at {va:#x} is shared (mapcount {}, table shared: {})",
                        mm.id,
                        f.0,
                        meta.mapcount(),
                        !pmd_writable
                    );
                }
                if pte.is_writable() && pmd_writable && meta.mapcount() != 1 {
                    fail!(
                        "mm {}: writable private PTE at {va:#x} maps frame {} with mapcount {} (COW broken)",
                        mm.id,
                        f.0,
                        meta.mapcount()
                    );
                }
            }
            Backing::Shm(obj) => {
                let pgoff = v.pgoff_of(va);
                let want = obj.resident().into_iter().find(|(p, _)| *p == pgoff).map(|(_, f)| f);
                if want != Some(f) {
                    fail!("mm {}: shared PTE at {va:#x} maps frame {} but the object has {want:?}", mm.id, f.0);
                }
            }
        }
        if pte.is_writable() && !v.prot.writable() {
            fail!("mm {}: writable PTE at {va:#x} in a VMA without write permission", mm.id);
        }
        if first_visit && !pte.is_borrowed() {
            *exp.refs.entry(f).or_default() += 1;
            *exp.maps.entry(f).or_default() += 1;
        }
    }
    Ok(())
}

/// A private file VMA maps a frame of its file read-only: the file's page
/// at the entry's offset (invariant 3).
fn check_cache_page(mm: &MmInner, v: &crate::vma::Vma, va: u64, pte: Pte, f: FrameId) -> Result<(), InvariantError> {
    let Some(obj) = v.private_file() else { return Ok(()) };
    let pgoff = v.pgoff_of(va);
    let want = obj.resident().into_iter().find(|(p, _)| *p == pgoff).map(|(_, f)| f);
    if want != Some(f) {
        fail!("mm {}: private file PTE at {va:#x} maps frame {} but the file has {want:?}", mm.id, f.0);
    }
    if pte.is_writable() {
        fail!("mm {}: private file PTE at {va:#x} maps page-cache frame {} writable", mm.id, f.0);
    }
    Ok(())
}

/// Every non-empty PTE under `t` (present, swap or migration entry):
/// (address, entry, its PTE table, whether the PMD entry above it is
/// writable).
fn collect_ptes(
    arena: &crate::phys::FrameArena,
    t: FrameId,
    level: u32,
    base: u64,
    writable_above: bool,
    out: &mut Vec<(u64, Pte, FrameId, bool)>,
) {
    let span = crate::pgtable::entry_span(level);
    for i in 0..crate::pgtable::PTRS_PER_TABLE {
        let e = Pte::from_raw(crate::pgtable::slot(arena, t, i).load(Ordering::Acquire));
        let va = base + i as u64 * span;
        if level == 0 && !e.is_none() {
            out.push((va, e, t, writable_above));
            continue;
        }
        if !e.is_present() {
            continue;
        }
        if level == 0 {
            out.push((va, e, t, writable_above));
        } else {
            collect_ptes(arena, e.frame(), level - 1, va, writable_above && e.is_writable(), out);
        }
    }
}

fn check_frames(m: &MachineInner, exp: &Expected) -> Result<(), InvariantError> {
    let arena = &m.arena;
    let free_list = arena.free_frames();
    for &(f, zeroed) in &free_list {
        if zeroed && !arena.frame_is_zero(f) {
            fail!("frame {} is on a zeroed free list but holds non-zero bytes", f.0);
        }
    }
    let free: std::collections::HashSet<FrameId> = free_list.into_iter().map(|(f, _)| f).collect();
    let mut in_use = 0u64;
    for i in 1..arena.touched() {
        let f = FrameId(i);
        let meta = arena.meta(f);
        let want_ref = exp.refs.get(&f).copied().unwrap_or(0);
        let want_map = exp.maps.get(&f).copied().unwrap_or(0);
        let on_free = free.contains(&f);
        if want_ref == 0 {
            if !on_free {
                fail!(
                    "frame {} leaked: refcount {}, flags {:#x}, referenced by nothing",
                    i,
                    meta.refcount(),
                    meta.flags()
                );
            }
            if meta.refcount() != 0 || meta.flags() != 0 || meta.pins() != 0 {
                fail!(
                    "free frame {} has refcount {} flags {:#x} pins {}",
                    i,
                    meta.refcount(),
                    meta.flags(),
                    meta.pins()
                );
            }
            continue;
        }
        in_use += 1;
        if on_free {
            fail!("frame {} is on a free list but referenced {} times", i, want_ref);
        }
        if meta.refcount() != want_ref {
            fail!("frame {}: refcount {} but {} references found", i, meta.refcount(), want_ref);
        }
        let want_pins = exp.pins.get(&f).copied().unwrap_or(0);
        if meta.pins() != want_pins {
            fail!("frame {}: pin count {} but {} pins registered", i, meta.pins(), want_pins);
        }
        if meta.has(flags::LAZYFREE) && !meta.has(flags::ANON) {
            fail!("frame {}: lazily freeable but not private anonymous (flags {:#x})", i, meta.flags());
        }
        if meta.mapcount() != want_map {
            let what = if meta.has(flags::PAGETABLE) { "borrowing tables" } else { "mappings" };
            fail!("frame {}: mapcount {} but {} {what} found", i, meta.mapcount(), want_map);
        }
    }
    if arena.in_use() != in_use {
        fail!("allocator counts {} frames in use, audit found {}", arena.in_use(), in_use);
    }
    let counted = m.counters.page_tables.load(Ordering::Relaxed);
    if counted != exp.tables.len() as u64 {
        fail!("page-table counter says {counted}, audit found {} table pages", exp.tables.len());
    }
    let shared = exp.pte_tables.iter().filter(|&&t| arena.meta(t).refcount() > 1).count() as u64;
    let said = m.counters.shared_tables.load(Ordering::Relaxed);
    if said != shared {
        fail!("shared-table counter says {said}, audit found {shared} PTE tables with more than one sharer");
    }
    Ok(())
}
