//! Reclaim: a frame limit, swap-out to a swap device, swap-in on fault, and
//! migration of frames, all driven by the reverse map (`rmap.rs`).
//!
//! - [`swap`]: swap slots and the swap cache.
//! - [`device`]: the swap device trait, a real swap file, an in-memory
//!   device and a fault-injecting wrapper.
//! - `scan.rs`: the clock that picks victims by their accessed bits, and
//!   swap-out of frames in batches (one vectored write per run of slots).
//! - `migrate.rs`: moving a frame's contents to another frame.
//! - `swapin.rs`: bringing a page back on a fault.
//!
//! # Locks
//! A frame being swapped out, swapped in or migrated is locked
//! (`FrameMeta::try_lock`). Reclaim and migration visit each address space
//! that may map the frame under its `mmap_lock` held for reading
//! (`read_recursive`, so a writer queued behind a fault that waits for this
//! very frame cannot block them; reclaim only *tries* the lock and skips a
//! busy space), then its PMD lock, then the PTE table's lock, as
//! `share::lock_pte_table` explains. No path that holds a page-table lock
//! waits for a frame lock, and writers of the `mmap_lock` never wait for
//! one either, so a fault may wait for a locked frame while holding its
//! space's `mmap_lock` for reading.

pub mod device;
mod migrate;
mod scan;
mod shm;
pub(crate) mod swap;
mod swapin;

pub(crate) use migrate::migrate_frame;
pub(crate) use scan::{direct_reclaim, shrink};
pub(crate) use swapin::swap_in;

use crate::machine::MachineInner;
use crate::mm::MmInner;
use crate::phys::FrameId;
use crate::pte::Pte;
use crate::sync::Ordering;
use device::SwapDevice;
use std::path::PathBuf;
use std::sync::Arc;

/// Where pages go when the frame limit is reached.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum SwapConfig {
    /// A swap file of [`AUTO_SWAP_BYTES`] in the system temp directory,
    /// created only when a memory limit is set. (Default.)
    #[default]
    Auto,
    /// A swap file at `path` (created, must not exist) of `bytes`.
    File { path: PathBuf, bytes: u64 },
    /// A device of the host's own (an in-memory or fault-injecting one).
    Device(Arc<dyn SwapDevice>),
    /// No swap: the frame limit is a hard limit (faults fail with ENOMEM).
    Off,
}

/// Size of the swap file `SwapConfig::Auto` creates (sparse on disk).
pub const AUTO_SWAP_BYTES: u64 = 4 << 30;

/// The machine's reclaim state.
pub(crate) struct Reclaim {
    /// Shared with shared-memory objects, whose page index may name slots.
    pub(crate) swap: Option<Arc<swap::SwapSpace>>,
    /// The clock hand: the next frame the scan looks at.
    pub(crate) hand: std::sync::atomic::AtomicU32,
    /// One direct reclaimer at a time does the scanning; others wait for it.
    pub(crate) scanning: parking_lot::Mutex<()>,
}

impl Reclaim {
    pub(crate) fn new(limited: bool, cfg: &SwapConfig) -> crate::Result<Reclaim> {
        let dev: Option<Arc<dyn SwapDevice>> = match cfg {
            SwapConfig::Off => None,
            SwapConfig::Auto if !limited => None,
            SwapConfig::Auto => Some(Arc::new(device::FileSwap::create(None, AUTO_SWAP_BYTES).map_err(io_err)?)),
            SwapConfig::File { path, bytes } => {
                Some(Arc::new(device::FileSwap::create(Some(path), *bytes).map_err(io_err)?))
            }
            SwapConfig::Device(d) => Some(d.clone()),
        };
        Ok(Reclaim {
            swap: dev.map(|d| Arc::new(swap::SwapSpace::new(d))),
            hand: std::sync::atomic::AtomicU32::new(1),
            scanning: parking_lot::Mutex::new(()),
        })
    }
}

fn io_err(e: std::io::Error) -> crate::Error {
    crate::Error::Host { what: "creating the swap file", errno: e.raw_os_error().unwrap_or(crate::errno::EIO) }
}

/// What a visit of every mapping of a frame did.
#[derive(Default)]
pub(crate) struct Visit {
    /// PTE tables whose entry was changed (a shared one counts once).
    tables: Vec<FrameId>,
    /// Address spaces that may cache the old translation.
    flush: Vec<Arc<MmInner>>,
    /// Entries changed.
    pub(crate) changed: u32,
    /// Some address space was busy and skipped (`try_only`), or one of
    /// its secondary MMUs refused a non-blocking invalidation.
    pub(crate) skipped: bool,
    /// MMU-notifier invalidations started, ended once translations are
    /// shot down (`flush`, or dropping the visit).
    pending: Vec<(Arc<MmInner>, crate::notifier::Invalidation)>,
}

impl Visit {
    /// Shoot down every stale translation the changes left, then end the
    /// secondary MMUs' invalidations.
    pub(crate) fn flush(&mut self) {
        for mm in &self.flush {
            if mm.tlb.flush(None) {
                crate::stats::Counters::bump(&mm.machine.counters.tlb_flushes);
            }
        }
        self.end_invalidations();
    }

    fn end_invalidations(&mut self) {
        for (mm, inv) in self.pending.drain(..) {
            mm.notifiers.end(inv);
        }
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        self.end_invalidations();
    }
}

/// Visit every page-table entry that holds anonymous frame `f` (present or
/// migration entry), through the reverse map, and let `edit` (a pure
/// function: it may run more than once for one entry) choose a
/// replacement; `changed(old)` runs once for each entry replaced, under its
/// page-table lock. `try_only`: skip address spaces whose `mmap_lock` is
/// not free now.
pub(crate) fn visit_mappings(
    m: &MachineInner,
    f: FrameId,
    try_only: bool,
    edit: impl Fn(Pte) -> Option<Pte>,
    changed: impl FnMut(Pte),
) -> Visit {
    visit_mappings_for(m, f, try_only, None, edit, changed)
}

/// `visit_mappings` that brackets each address space's change with MMU
/// notifier calls for `event` (one page, `[va, va + 4096)`, per space).
pub(crate) fn visit_mappings_for(
    m: &MachineInner,
    f: FrameId,
    try_only: bool,
    event: Option<crate::notifier::Event>,
    edit: impl Fn(Pte) -> Option<Pte>,
    mut changed: impl FnMut(Pte),
) -> Visit {
    let arena = &m.arena;
    let (owner, va) = rmap_address(arena.meta(f));
    let mut v = Visit::default();
    crate::rmap::rmap_walk(&m.anon_vmas, owner, |mm| {
        let Some(st) = lock_member(mm, try_only) else {
            v.skipped = true;
            return;
        };
        let Some(pt) = st.pt.as_ref() else { return };
        // Secondary MMUs first, outside the page-table lock (they may sleep).
        let inv = match event.filter(|_| mm.notifiers.any()) {
            None => None,
            Some(event) => {
                let range = crate::notifier::Range { start: va, end: va + 4096, event, blockable: !try_only };
                match mm.notifiers.start(range) {
                    Ok(inv) => Some(inv),
                    Err(_) => {
                        v.skipped = true;
                        return;
                    }
                }
            }
        };
        if let Some(inv) = inv {
            v.pending.push((mm.clone(), inv));
        }
        let Some(mut g) = crate::pgtable::share::lock_pte_table(arena, pt, va) else { return };
        // A table shared with a space visited before, whose entry was
        // changed through it: this space may cache the old translation
        // too. (Looked at only when the entry no longer holds the frame: a
        // table freed and reallocated during the walk may reuse the id.)
        let changed_before = v.tables.contains(&g.table());
        let mut pte = g.get(va);
        let changed = loop {
            if pte.counted_frame() != Some(f) {
                if changed_before {
                    v.flush.push(mm.clone());
                }
                return;
            }
            let Some(new) = edit(pte) else { break false };
            // An MMU-style lock-free setter may add accessed or dirty bits
            // meanwhile: never lose them.
            match g.cas(va, pte, new) {
                Ok(old) => {
                    changed(old);
                    break true;
                }
                Err(now) => pte = now,
            }
        };
        if changed {
            v.tables.push(g.table());
            v.flush.push(mm.clone());
            v.changed += 1;
            drop(g);
            crate::futex::invalidate(mm, Some(&st), va, va + 4096);
        }
    });
    v
}

/// Whether a secondary MMU (MMU notifier `clear_young`) accessed anonymous
/// frame `f` since the last look, in any address space mapping it; clears
/// those bits. Spaces whose `mmap_lock` is busy are skipped.
pub(crate) fn young_in_secondaries(m: &MachineInner, f: FrameId) -> bool {
    let (owner, va) = rmap_address(m.arena.meta(f));
    let mut young = false;
    crate::rmap::rmap_walk(&m.anon_vmas, owner, |mm| {
        if mm.notifiers.any() {
            young |= mm.notifiers.clear_young(va, va + 4096);
        }
    });
    young
}

/// An anonymous frame's anon_vma id and the one address it can be mapped
/// at in any space (`rmap.rs`, rule 3).
fn rmap_address(meta: &crate::phys::FrameMeta) -> (u64, u64) {
    (meta.owner.load(Ordering::Acquire), meta.index.load(Ordering::Acquire) << 12)
}

/// A member address space's `mmap_lock` for a reverse-map visit: tried only
/// (`None` when busy) or waited for, without queueing behind a writer.
pub(crate) fn lock_member(
    mm: &MmInner,
    try_only: bool,
) -> Option<parking_lot::RwLockReadGuard<'_, crate::mm::MmState>> {
    if try_only {
        mm.state.try_read_recursive()
    } else {
        Some(mm.state.read_recursive())
    }
}
