//! From a futex address to its key, in each key mode, with the page-table
//! effects Linux has for the same call.
//!
//! - `linux` mode is today's Linux (`get_futex_key` of a non-private futex):
//!   get the page as `get_user_pages_fast(FOLL_WRITE)` would — which breaks
//!   COW and fills holes — falling back to a read-only get when the mapping
//!   is not writable (Linux then refuses anonymous memory with `EFAULT`: a
//!   read-only private word can never change); then key by `(mm, address)`
//!   for private memory and by `(object, offset)` for shared memory.
//! - `physical` mode keys by the frame and offset. A wait does not break COW
//!   (seed 003: "a nonintrusive futex-wait will not cause extra COW-copying"),
//!   so waiters of a parent and a forked child meet in one queue; only a
//!   page with no frame of its own (a hole or the zero frame) is faulted in
//!   for writing, when the mapping allows, so that two unrelated waits on
//!   untouched memory never share the zero frame's key. A wake never faults.
//! - A private file mapping's page not yet copied on write is the file's
//!   page-cache page, mapped read-only: `physical` keys it by that frame
//!   (and an empty entry by the file's cached page, as for a shared
//!   mapping; a wait reads, never copies), `linux` by `(file, offset)` as
//!   Linux keys every page that is not anonymous. Once the space writes the
//!   page, its anonymous copy keys as private memory does; a waiter keyed
//!   by the file's page is not reached through the copy (on Linux neither).

use super::FutexKey;
use crate::error::{Error, Result};
use crate::mm::translation::swap_cached;
pub(crate) use crate::mm::translation::{page_now, translation};
use crate::mm::{Access, MmInner, MmState};
use crate::phys::{flags, FrameId, ZERO_FRAME};
use crate::vcache::Translation;
use crate::vma::{Backing, Vma};

/// A key and the frame the futex word lives in now.
pub(super) struct Resolved {
    pub(super) key: FutexKey,
    /// The frame behind the word, referenced (the zero frame is not).
    pub(super) frame: FrameId,
}

impl Resolved {
    /// Drop the reference on the frame, unless the key keeps it.
    pub(super) fn release_frame(&self, mm: &MmInner) {
        if self.frame != ZERO_FRAME {
            mm.arena().put(self.frame);
        }
    }
}

/// How much faulting a resolution may do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Intent {
    /// A wait (or requeue target): may fault the page in.
    Wait,
    /// A wake: faults only in `linux` mode, as Linux's GUP does.
    Wake,
    /// The target of FUTEX_WAKE_OP: needs a writable page.
    Modify,
}

fn vma_for(st: &MmState, va: u64) -> Result<&Vma> {
    match st.vmas.find(va) {
        Some(v) if v.prot.readable() => Ok(v),
        _ => Err(Error::Fault { addr: va }),
    }
}

/// The frame the page of `va` maps now, referenced; faults it in for
/// `access` first if `fault` (an access the mapping forbids is `EFAULT`).
fn get_page(mm: &MmInner, st: &MmState, va: u64, access: Access) -> Result<FrameId> {
    crate::mm::grab_page(mm, st, va, access).map_err(|e| match e {
        Error::Segv { .. } => Error::Fault { addr: va },
        other => other,
    })
}

/// `get_user_pages_fast(FOLL_WRITE)`, falling back to a read-only get when
/// the mapping is not writable and the caller only reads (Linux's FUTEX_READ).
fn gup(mm: &MmInner, st: &MmState, vma: &Vma, va: u64, need_write: bool) -> Result<FrameId> {
    if vma.prot.writable() {
        let got = match gup_fast(mm, st, va, true) {
            Some(f) => Ok(f),
            None => get_page(mm, st, va, Access::Write),
        };
        // Linux's get_futex_key retries a failed write get read-only for a
        // word it only reads (a page past the end of a file: the read
        // fault maps the cached pages around it before it fails too).
        return match got {
            Err(Error::Fault { .. } | Error::Bus { .. }) if !need_write => match gup_fast(mm, st, va, false) {
                Some(f) => Ok(f),
                None => get_page(mm, st, va, Access::Read),
            },
            got => got,
        };
    }
    if need_write {
        return Err(Error::Fault { addr: va });
    }
    match gup_fast(mm, st, va, false) {
        Some(f) => Ok(f),
        None => get_page(mm, st, va, Access::Read),
    }
}

/// `get_user_pages_fast`'s lock-free part: a present entry that already
/// allows the access gives its frame (referenced) with no change at all —
/// in particular a writable but clean entry stays clean, where a CPU's
/// write would dirty it (visible in smaps as private_clean vs dirty).
fn gup_fast(mm: &MmInner, st: &MmState, va: u64, write: bool) -> Option<FrameId> {
    let pt = st.pt.as_ref()?;
    let arena = mm.arena();
    let page = va & !0xfff;
    let pte = pt.follow_pte(arena, page);
    if !pte.is_present() || !pte.is_user() || (write && !pte.is_writable()) {
        return None;
    }
    let f = pte.frame();
    if !arena.try_get(f) {
        return None;
    }
    if pt.follow_pte(arena, page).raw() & !(crate::pte::Pte::ACCESSED | crate::pte::Pte::DIRTY)
        == pte.raw() & !(crate::pte::Pte::ACCESSED | crate::pte::Pte::DIRTY)
    {
        return Some(f);
    }
    arena.put(f);
    None
}

/// Key of `va` in `linux` mode.
pub(super) fn linux(mm: &MmInner, st: &MmState, va: u64, intent: Intent) -> Result<Resolved> {
    let vma = vma_for(st, va)?;
    let frame = gup(mm, st, vma, va, intent == Intent::Modify)?;
    // Linux's get_futex_key refuses a page it could only get read-only when
    // it is anonymous (or the zero page): such a word can never change. The
    // read-only get has already faulted the page in, as on Linux.
    // A private file mapping's page not yet copied on write is the file's
    // page-cache page: keyed by the file and offset, as a shared mapping's
    // (Linux keys every page that is not anonymous by its inode).
    let cache_page = vma.private_file().filter(|_| frame != ZERO_FRAME && !mm.arena().meta(frame).has(flags::ANON));
    if matches!(vma.backing, Backing::Anon(_)) && cache_page.is_none() && !vma.prot.writable() {
        mm.arena().put(frame);
        return Err(Error::Fault { addr: va });
    }
    let shared = |obj: &crate::shm::ShmObject| FutexKey::Shared {
        object: obj.id(),
        offset: vma.pgoff_of(va) * 4096 + (va & 0xfff),
    };
    let key = match (&vma.backing, cache_page) {
        (Backing::Anon(_), Some(obj)) => shared(obj),
        (Backing::Anon(_), None) => FutexKey::Private { mm: mm.id, addr: va },
        (Backing::Shm(obj), _) => shared(obj),
    };
    Ok(Resolved { key, frame: drop_zero_ref(mm, frame) })
}

/// The zero frame is mapped without references; `grab_page` still counts
/// one on it, which we give back at once so `Resolved` stays uniform.
fn drop_zero_ref(mm: &MmInner, f: FrameId) -> FrameId {
    if f == ZERO_FRAME {
        mm.arena().put(f);
    }
    f
}

/// Key of `va` in `physical` mode.
pub(super) fn physical(mm: &MmInner, st: &MmState, va: u64, intent: Intent) -> Result<Resolved> {
    let vma = vma_for(st, va)?;
    let offset = (va & 0xfff) as u32;
    let private = FutexKey::Private { mm: mm.id, addr: va };
    let frame_key = |frame: FrameId| Resolved { key: FutexKey::Frame { frame, offset }, frame };
    if intent == Intent::Modify {
        return Ok(frame_key(gup(mm, st, vma, va, true)?));
    }
    match translation(mm, st, va) {
        Translation::Frame(f) => Ok(frame_key(f)),
        // A page only on the swap device: no waiter can be keyed by it (a
        // waiter's frame reference keeps its page in the swap cache). A
        // wait reads it back, mapped read-only: waiting never breaks COW.
        Translation::Swapped => match intent {
            // Not the hole key `(mm, address)`: the page has contents, and a
            // waiter on the hole this page once was must not be reached
            // through it. The zero frame never keys a waiter (its waits key
            // by address), so this key meets nobody.
            Intent::Wake => Ok(Resolved { key: FutexKey::Frame { frame: ZERO_FRAME, offset }, frame: ZERO_FRAME }),
            _ => Ok(frame_key(get_page(mm, st, va, Access::Read)?)),
        },
        // A private file mapping's empty entry is keyed as a shared
        // mapping's: by the file's page-cache page, which its next read
        // maps (a wait reads, so it never copies the page on write).
        Translation::Zero | Translation::None => match (vma.mapped_object(), intent) {
            (Some(obj), Intent::Wake) => match obj.find_page(vma.pgoff_of(va)) {
                Some(f) => Ok(frame_key(f)),
                None => Ok(Resolved { key: private, frame: ZERO_FRAME }),
            },
            (Some(_), _) => Ok(frame_key(get_page(mm, st, va, Access::Read)?)),
            (None, _) => physical_anon(mm, st, vma, va, intent),
        },
    }
}

/// `physical`'s key for an empty entry (or the zero frame) of private
/// anonymous memory.
fn physical_anon(mm: &MmInner, st: &MmState, vma: &Vma, va: u64, intent: Intent) -> Result<Resolved> {
    let offset = (va & 0xfff) as u32;
    let private = FutexKey::Private { mm: mm.id, addr: va };
    let frame_key = |frame: FrameId| Resolved { key: FutexKey::Frame { frame, offset }, frame };
    match (&vma.backing, intent) {
        (Backing::Anon(_), Intent::Wake) => Ok(Resolved { key: private, frame: ZERO_FRAME }),
        (Backing::Anon(_), _) if vma.prot.writable() => Ok(frame_key(get_page(mm, st, va, Access::Write)?)),
        (Backing::Anon(_), _) => match drop_zero_ref(mm, get_page(mm, st, va, Access::Read)?) {
            ZERO_FRAME => Ok(Resolved { key: private, frame: ZERO_FRAME }),
            f => Ok(frame_key(f)),
        },
        (Backing::Shm(_), _) => Ok(frame_key(get_page(mm, st, va, Access::Read)?)),
    }
}

/// The physical key of `va` if it maps a frame of its own now, read from
/// the entry without taking a reference (the frame may change at once: only
/// good for choosing a bucket). `EFAULT` as `physical` gives it.
pub(super) fn peek(mm: &MmInner, st: &MmState, va: u64) -> Result<Option<FutexKey>> {
    vma_for(st, va)?;
    let Some(pt) = st.pt.as_ref() else { return Ok(None) };
    let pte = pt.follow_pte(mm.arena(), va & !0xfff);
    if !pte.is_present() || pte.is_zero_frame() {
        return Ok(None);
    }
    Ok(Some(FutexKey::Frame { frame: pte.frame(), offset: (va & 0xfff) as u32 }))
}

/// Whether `va` still maps `frame` (the re-check under the bucket lock),
/// by `translation`'s rule; `writable`: through a present writable entry.
pub(super) fn still_maps(mm: &MmInner, st: &MmState, va: u64, frame: FrameId, writable: bool) -> bool {
    let Some(pt) = st.pt.as_ref() else { return false };
    let pte = pt.follow_pte(mm.arena(), va & !0xfff);
    if writable {
        return pte.is_present() && pte.frame() == frame && pte.is_writable();
    }
    if frame == ZERO_FRAME {
        return pte.is_none() || pte.is_zero_frame(); // a hole reads as zeros, as the zero frame does
    }
    if pte.is_swap() {
        return match swap_cached(mm, pte) {
            Some(f) => {
                mm.arena().put(f);
                f == frame
            }
            None => false,
        };
    }
    pte.page_frame() == Some(frame)
}
