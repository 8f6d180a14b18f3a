//! What a page of a space is now, as the vcache's clients see it: the
//! lookup a change of translations hands them (`Change`'s drop) and the one
//! futexes re-check with.

use super::{MmInner, MmState};
use crate::phys::FrameId;
use crate::pte::Pte;
use crate::vcache::Translation;

/// What `va`'s page-table entry translates to now, without faulting; a
/// frame comes referenced. Callers hold `mm`'s `mmap_lock` (either mode),
/// so tables stay put.
///
/// The rule, per kind of entry (see `docs/ARCHITECTURE.md`, "Futexes"):
/// - present: its frame (a borrowed entry's frame too: it is the page's);
/// - the zero frame: `Zero`;
/// - migration entry: the frame being moved, which the entry still holds
///   (the page has not left it yet; the move's repointing fires the vcache);
/// - swap entry: the frame the swap cache holds for its slot, if any (the
///   page's contents, where a fault will find them); else `Swapped`;
/// - none: `None`.
pub(crate) fn translation(mm: &MmInner, st: &MmState, va: u64) -> Translation {
    let Some(pt) = st.pt.as_ref() else { return Translation::None };
    let arena = mm.arena();
    let page = va & !0xfff;
    loop {
        let pte = pt.follow_pte(arena, page);
        if pte.is_swap() {
            match swap_cached(mm, pte) {
                Some(f) if pt.follow_pte(arena, page) == pte => return Translation::Frame(f),
                Some(f) => {
                    arena.put(f); // the entry changed: look again
                }
                None if pt.follow_pte(arena, page) == pte => return Translation::Swapped,
                None => {}
            }
            continue;
        }
        if !pte.is_present() && !pte.is_migration() {
            return Translation::None;
        }
        if pte.is_zero_frame() {
            return Translation::Zero;
        }
        let f = pte.frame();
        if arena.try_get(f) {
            let now = pt.follow_pte(arena, page);
            if now.page_frame() == Some(f) {
                return Translation::Frame(f);
            }
            arena.put(f);
        }
    }
}

/// The frame the swap cache holds for swap entry `pte`'s slot, referenced.
pub(crate) fn swap_cached(mm: &MmInner, pte: Pte) -> Option<FrameId> {
    let swap = mm.machine.reclaim.swap.as_ref()?;
    swap.lookup(mm.arena(), pte.swap_slot())
}

/// What the page at `va` is now, as a vcache callback or an audit sees it:
/// `translation`, and for an empty entry of shared memory the object's
/// page (reclaim clears the entries of a shared page it tries to swap out;
/// the page stays the object's, and the next fault maps it again).
pub(crate) fn page_now(mm: &MmInner, st: &MmState, va: u64) -> Translation {
    match translation(mm, st, va) {
        // A private file mapping's next read maps the file's page as well.
        Translation::None => match st.vmas.find(va).and_then(|v| Some((v, v.mapped_object()?))) {
            Some((vma, obj)) => obj.find_page(vma.pgoff_of(va)).map_or(Translation::None, Translation::Frame),
            None => Translation::None,
        },
        t => t,
    }
}
