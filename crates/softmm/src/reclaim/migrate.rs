//! Migration: move a private anonymous frame's contents to another frame
//! and repoint every entry that maps it, without any address space noticing
//! (Linux's `migrate_pages` for one anonymous folio).
//!
//! With the frame locked:
//! 1. every entry mapping it becomes a *migration entry* (same frame and
//!    flags, not present) through the reverse map, and the translations are
//!    shot down; a fault on such an entry waits until it changes;
//! 2. if nothing but those entries holds the frame (no remote access in
//!    flight, no futex waiter keyed on it, no pin), the contents are copied;
//!    otherwise the move is abandoned (`EBUSY`) and the entries go back;
//! 3. every migration entry becomes a present entry of the new frame.
//!
//! A migration entry keeps the frame's reference and mapping, so fork,
//! unshare and zap treat it as the present entry it stands for, and the
//! counts stay exact at every step. Entries copied while the move runs
//! (a fork, an unshare) are found by step 3: fork links the child into the
//! anon_vma before it copies, and `rmap_walk` re-reads the member list.

use super::{visit_mappings, How};
use crate::error::{Error, Result};
use crate::machine::MachineInner;
use crate::notifier::Event;
use crate::phys::{flags, FrameId};
use crate::stats::Counters;
use std::sync::atomic::Ordering;

/// Move frame `f` (the caller holds a reference on it) to a new frame.
/// `avoid(frame)` rejects destination frames (compaction keeps them out of
/// the range it empties). Returns the new frame.
pub(crate) fn migrate_frame(m: &MachineInner, f: FrameId, avoid: impl Fn(FrameId) -> bool) -> Result<FrameId> {
    let meta = m.arena.meta(f);
    if !meta.has(flags::ANON) {
        return Err(Error::Invalid("only private anonymous frames can migrate"));
    }
    let n = alloc_destination(m, f, &avoid)?;
    if !meta.try_lock() {
        m.arena.put(n);
        return Err(Error::Busy("the frame is locked by reclaim or another migration"));
    }
    // Checked under the lock: reclaim, which puts frames in the swap cache,
    // holds it too.
    let refusal = if meta.has(flags::SWAPCACHE) {
        Some("the frame is in the swap cache")
    } else if meta.pins.load(Ordering::Acquire) > 0 {
        Some("the frame is pinned")
    } else {
        None
    };
    let r = match refusal {
        Some(why) => {
            m.arena.put(n);
            Err(Error::Busy(why))
        }
        None => migrate_locked(m, f, n),
    };
    meta.unlock();
    r
}

/// A frame for the contents of `f`, not one `avoid` rejects.
fn alloc_destination(m: &MachineInner, f: FrameId, avoid: &impl Fn(FrameId) -> bool) -> Result<FrameId> {
    let arena = &m.arena;
    // Marked ANON only once it maps the page (see `migrate_locked`).
    let fl = arena.meta(f).flags() & flags::DIRTY;
    let mut rejected = Vec::new();
    let got = loop {
        match arena.alloc(false, fl) {
            Ok(n) if avoid(n) => rejected.push(n),
            other => break other,
        }
    };
    for r in rejected {
        arena.put(r);
    }
    got
}

fn migrate_locked(m: &MachineInner, f: FrameId, n: FrameId) -> Result<FrameId> {
    let arena = &m.arena;
    let (fm, nm) = (arena.meta(f), arena.meta(n));
    nm.owner.store(fm.owner.load(Ordering::Acquire), Ordering::Release);
    nm.index.store(fm.index.load(Ordering::Acquire), Ordering::Release);
    let how = How { event: Some(Event::Migrate), ..How::default() };
    let freeze = visit_mappings(m, f, how, |pte| pte.is_present().then(|| pte.to_migration()), |_| {});
    // Every space's shootdown, then its secondary MMUs' bracket end.
    freeze.changes.finish();
    // Only the entries (all migration entries now) and our own reference
    // may hold the frame; anything else may still read or write it.
    let busy = fm.refcount() != fm.mapcount() + 1;
    let target = if busy { f } else { n };
    if !busy {
        arena.copy_frame(n, f);
    }
    visit_mappings(
        m,
        f,
        How::default(),
        |pte| pte.is_migration().then(|| pte.from_migration(target)),
        |_| {
            if !busy {
                nm.add_counts(1, 1);
                fm.sub_counts(1, 1);
            }
        },
    );
    if busy {
        arena.put(n);
        return Err(Error::Busy("the frame is held by a remote access, a futex waiter or a pin"));
    }
    nm.set_flags(flags::ANON);
    arena.put(n); // the allocation's reference: the entries hold it now
    Counters::bump(&m.counters.migrations);
    Ok(n)
}
