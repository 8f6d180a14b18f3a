//! Virtual memory areas: the per-address-space map of what is mapped where.
//!
//! A `VmaTree` is ordered by start address and guarded by the `mmap_lock`
//! (see `mm/mod.rs`). Splitting and merging follow Linux, because VMA
//! boundaries are visible to users through smaps:
//! - an operation that changes nothing about a VMA does not split it;
//! - adjacent VMAs merge when flags, backing, page offsets and anon_vma agree
//!   (`is_mergeable_vma`, `is_mergeable_anon_vma`);
//! - munmap never merges.
//!
//! A private VMA carries its anon_vma links (`AnonLink`, `rmap.rs`); the
//! anon_vma also decides whether two private VMAs may merge.

pub(crate) use crate::rmap::AnonLink;
use crate::rmap::{AnonVma, AnonVmas, MmRef};
use crate::shm::ShmLink;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Page protection of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Prot(u8);

impl Prot {
    /// No access (`PROT_NONE`).
    pub const NONE: Prot = Prot(0);
    /// Read only.
    pub const READ: Prot = Prot(1);
    /// Write (readable too: x86 cannot map write-only).
    pub const WRITE: Prot = Prot(2);
    /// Read and write.
    pub const RW: Prot = Prot(3);
    /// Execute (`PROT_EXEC`; readable too, as on x86-64 without
    /// protection keys).
    pub const EXEC: Prot = Prot(4);
    /// Read and execute.
    pub const RX: Prot = Prot(5);
    /// Read, write and execute.
    pub const RWX: Prot = Prot(7);

    /// Loads are allowed.
    pub const fn readable(self) -> bool {
        // x86 cannot map write-only: PROT_WRITE pages are readable too.
        self.0 != 0
    }
    /// Stores are allowed.
    pub const fn writable(self) -> bool {
        self.0 & 2 != 0
    }
    /// Instruction fetches are allowed.
    pub const fn executable(self) -> bool {
        self.0 & 4 != 0
    }
    /// Both protections' rights.
    pub const fn union(self, o: Prot) -> Prot {
        Prot(self.0 | o.0)
    }

    /// Parse the trace spelling: `-`, or the letters `r`, `w`, `x` in that
    /// order, each at most once (`r`, `rw`, `rx`, `rwx`, `x`); `wr` is
    /// accepted too, as version 1 traces may spell it.
    pub fn parse(s: &str) -> Option<Prot> {
        if s == "-" {
            return Some(Prot::NONE);
        }
        if s == "wr" {
            return Some(Prot::RW);
        }
        let mut bits = 0u8;
        let mut last = 0u8;
        for c in s.bytes() {
            let bit = match c {
                b'r' => 1,
                b'w' => 2,
                b'x' => 4,
                _ => return None,
            };
            if bit <= last {
                return None; // out of order or repeated
            }
            bits |= bit;
            last = bit;
        }
        (bits != 0).then_some(Prot(bits))
    }
}

impl fmt::Debug for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.0 & 1 != 0 { "r" } else { "-" };
        let w = if self.writable() { "w" } else { "-" };
        let x = if self.executable() { "x" } else { "" };
        write!(f, "{r}{w}{x}")
    }
}

/// The three letters `/proc/PID/maps` writes for these rights (`rw-`,
/// `r-x`, `--x`): the bits as asked, so `PROT_EXEC` alone is `--x` and
/// `PROT_WRITE` alone `-w-`, as Linux shows them, though x86 reads both.
impl fmt::Display for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.0 & 1 != 0 { 'r' } else { '-' };
        let w = if self.writable() { 'w' } else { '-' };
        let x = if self.executable() { 'x' } else { '-' };
        write!(f, "{r}{w}{x}")
    }
}

/// Linux's `vm_flags` that are not protections: what `mlock`, `madvise`
/// and the stack set on a VMA. Two VMAs merge only when these are equal,
/// and an operation that changes them splits a VMA at the range's edges,
/// as Linux's `vma_modify_flags` does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub(crate) struct VmFlags(u16);

#[allow(dead_code)] // set by mlock, madvise and the stack as they land
impl VmFlags {
    /// No flag.
    pub(crate) const NONE: VmFlags = VmFlags(0);
    /// `VM_LOCKED`: pages are faulted in and never reclaimed (`mlock`).
    pub(crate) const LOCKED: VmFlags = VmFlags(1 << 0);
    /// `VM_LOCKONFAULT`: locked as they fault in (`mlock2(MLOCK_ONFAULT)`).
    pub(crate) const LOCKONFAULT: VmFlags = VmFlags(1 << 1);
    /// `VM_DONTCOPY`: a fork does not copy the VMA (`MADV_DONTFORK`).
    pub(crate) const DONTCOPY: VmFlags = VmFlags(1 << 2);
    /// `VM_WIPEONFORK`: the child gets the range zero-filled.
    pub(crate) const WIPEONFORK: VmFlags = VmFlags(1 << 3);
    /// `VM_GROWSDOWN`: a stack that grows toward lower addresses.
    pub(crate) const GROWSDOWN: VmFlags = VmFlags(1 << 4);

    /// Whether every flag of `f` is set.
    pub(crate) const fn contains(self, f: VmFlags) -> bool {
        self.0 & f.0 == f.0
    }
    /// These flags and `f`'s.
    pub(crate) const fn with(self, f: VmFlags) -> VmFlags {
        VmFlags(self.0 | f.0)
    }
    /// These flags without `f`'s.
    pub(crate) const fn without(self, f: VmFlags) -> VmFlags {
        VmFlags(self.0 & !f.0)
    }
}

/// Linux's `stack_guard_gap` default: 256 pages below a stack VMA that no
/// other mapping placed by the kernel (or the heap) may take.
pub(crate) const STACK_GUARD_GAP: u64 = 256 * 4096;

/// What a mapping maps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapKind {
    /// Private anonymous memory (copy-on-write across fork).
    Private,
    /// Shared anonymous memory (one object, shared across fork).
    Shared,
}

/// What backs a VMA.
pub(crate) enum Backing {
    Anon(AnonLink),
    Shm(ShmLink),
}

/// One mapping.
pub(crate) struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: Prot,
    /// Linux's `VM_ACCOUNT`: a private mapping that has been writable.
    pub account: bool,
    /// Page offset of `start` in the backing (for anonymous memory,
    /// `start >> 12` at mmap time, as Linux sets it).
    pub pgoff: u64,
    pub backing: Backing,
    /// The file a private file mapping maps (`MAP_PRIVATE` of a file): its
    /// backing is `Anon` (its copies on write are anonymous pages of its
    /// anon_vma) and its other pages are the file's page-cache pages,
    /// mapped read-only. Linked into the file's members (its `i_mmap`).
    /// Always `None` for shared VMAs.
    pub file: Option<ShmLink>,
    /// `mlock`, `madvise` and stack flags (merging needs them equal).
    pub flags: VmFlags,
}

impl Vma {
    pub(crate) fn kind(&self) -> MapKind {
        match self.backing {
            Backing::Anon(_) => MapKind::Private,
            Backing::Shm(_) => MapKind::Shared,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.end - self.start
    }

    /// The object whose page-cache pages this VMA maps: a shared VMA's
    /// object, or a private file mapping's file.
    pub(crate) fn mapped_object(&self) -> Option<&std::sync::Arc<crate::shm::ShmObject>> {
        match &self.backing {
            Backing::Shm(o) => Some(o),
            Backing::Anon(_) => self.file.as_deref(),
        }
    }

    /// The file of a private file mapping (`None` for anonymous memory and
    /// shared VMAs).
    pub(crate) fn private_file(&self) -> Option<&std::sync::Arc<crate::shm::ShmObject>> {
        self.file.as_deref()
    }

    /// Whether this VMA maps object `obj`'s pages (shared or private).
    pub(crate) fn maps_object(&self, obj: &crate::shm::ShmObject) -> bool {
        self.mapped_object().is_some_and(|o| std::ptr::eq(&**o, obj))
    }

    /// Linux's `vma_wants_writenotify` for shared memory: a host file's
    /// pages are mapped read-only until written, so that the write fault
    /// marks the page dirty (every mapping then sees it dirty, and write-back
    /// sees the write); write-back makes them read-only again.
    pub(crate) fn writenotify(&self) -> bool {
        matches!(&self.backing, Backing::Shm(o) if o.store.is_host())
    }

    /// Where this VMA starts for those who must keep clear of it (Linux's
    /// `vm_start_gap`): a stack keeps its guard gap below it.
    pub(crate) fn start_gap(&self) -> u64 {
        if self.flags.contains(VmFlags::GROWSDOWN) {
            self.start.saturating_sub(STACK_GUARD_GAP)
        } else {
            self.start
        }
    }

    pub(crate) fn pgoff_of(&self, va: u64) -> u64 {
        self.pgoff + ((va - self.start) >> 12)
    }

    /// A copy of this VMA restricted to `[start, end)`.
    fn slice(&self, start: u64, end: u64) -> Vma {
        Vma {
            start,
            end,
            prot: self.prot,
            account: self.account,
            flags: self.flags,
            pgoff: self.pgoff_of(start),
            backing: match &self.backing {
                Backing::Anon(l) => Backing::Anon(l.clone_link()),
                Backing::Shm(o) => Backing::Shm(o.clone_link()),
            },
            file: self.file.as_ref().map(ShmLink::clone_link),
        }
    }

    /// The VMA a move of `[old, old + len)`'s start to `new` creates
    /// (Linux's `copy_vma`): same rights, flags and backing (the same
    /// anon_vma), `len` bytes long, with the page offset `old` had, so
    /// every page keeps its offset (and an anonymous page its `index`).
    ///
    /// A private anonymous VMA never faulted (no anon_vma) has no page to
    /// keep an offset for: it takes the new address's, so it may merge
    /// there. A file mapping's offset is in the file: it always stays.
    pub(crate) fn moved_copy(&self, old: u64, new: u64, len: u64) -> Vma {
        let mut v = self.slice(old, self.end);
        v.start = new;
        v.end = new + len;
        if let (Backing::Anon(l), None) = (&v.backing, &v.file) {
            if l.get().0 == 0 {
                v.pgoff = new >> 12;
            }
        }
        v
    }

    /// The VMA a fork gives the child: same range; a private VMA with an
    /// anon_vma gets a new one chained to the parent's (`anon_vma_fork`).
    pub(crate) fn fork_copy(&self, reg: &AnonVmas, new_anon_id: impl FnOnce() -> u64, child: &MmRef) -> Vma {
        let backing = match &self.backing {
            Backing::Anon(l) => {
                let id = if l.get().0 != 0 { new_anon_id() } else { 0 };
                Backing::Anon(l.fork_link(reg, id, child))
            }
            Backing::Shm(o) => Backing::Shm(o.link_for(child)),
        };
        // A child does not inherit memory locks (Linux's dup_mmap).
        let flags = self.flags.without(VmFlags::LOCKED.with(VmFlags::LOCKONFAULT));
        let (start, end, prot, account, pgoff) = (self.start, self.end, self.prot, self.account, self.pgoff);
        let file = self.file.as_ref().map(|f| f.link_for(child));
        Vma { start, end, prot, account, pgoff, backing, file, flags }
    }

    /// `[start, end)` of this snapshot VMA as a restore gives it back to the
    /// space `live` (`mm/snapshot.rs`): same rights, flags and offsets; a
    /// private backing linked to the anon_vma the snapshot's was forked
    /// from (`AnonLink::restore_link`), an object linked for `live`.
    pub(crate) fn restored_copy(&self, start: u64, end: u64, live: &MmRef) -> Vma {
        let backing = match &self.backing {
            Backing::Anon(l) => Backing::Anon(l.restore_link(live)),
            Backing::Shm(o) => Backing::Shm(o.link_for(live)),
        };
        let file = self.file.as_ref().map(|f| f.link_for(live));
        let (prot, account, flags, pgoff) = (self.prot, self.account, self.flags, self.pgoff_of(start));
        Vma { start, end, prot, account, pgoff, backing, file, flags }
    }

    /// The VMA a fork gives the child for a `VM_WIPEONFORK` VMA: same range
    /// and flags, a new private backing without an anon_vma (Linux's
    /// `anon_vma_fork` leaves it none), so every page reads as zeros.
    pub(crate) fn wiped_copy(&self, child: &MmRef) -> Vma {
        let backing = Backing::Anon(AnonLink::new(child.clone()));
        // Not the memory locks either (Linux's dup_mmap, as `fork_copy`).
        let flags = self.flags.without(VmFlags::LOCKED.with(VmFlags::LOCKONFAULT));
        let (start, end, prot, account, pgoff) = (self.start, self.end, self.prot, self.account, self.pgoff);
        Vma { start, end, prot, account, pgoff, backing, file: None, flags }
    }

    /// Flags equal and backing contiguous: `is_mergeable_vma` plus the pgoff test.
    fn compatible(&self, next: &Vma) -> bool {
        if self.end != next.start || self.prot != next.prot || self.account != next.account || self.flags != next.flags
        {
            return false;
        }
        if next.pgoff != self.pgoff + (self.len() >> 12) || !same_file(self, next) {
            return false;
        }
        match (&self.backing, &next.backing) {
            (Backing::Shm(a), Backing::Shm(b)) => Arc::ptr_eq(&**a, &**b),
            (Backing::Anon(a), Backing::Anon(b)) => anon_mergeable(a.get(), b.get()),
            _ => false,
        }
    }
}

/// The same private file, or neither a private file mapping (Linux's
/// `vm_file` test of `is_mergeable_vma` and `anon_vma_compatible`).
fn same_file(a: &Vma, b: &Vma) -> bool {
    match (&a.file, &b.file) {
        (None, None) => true,
        (Some(x), Some(y)) => Arc::ptr_eq(&**x, &**y),
        _ => false,
    }
}

/// `is_mergeable_anon_vma`: the same anon_vma, or one side without one while
/// the other was never forked (its chain is singular).
fn anon_mergeable(a: (u64, u64), b: (u64, u64)) -> bool {
    match (a.0, b.0) {
        (0, 0) => true,
        (0, _) => b.1 <= 1,
        (_, 0) => a.1 <= 1,
        (x, y) => x == y,
    }
}

/// `anon_vma_compatible` + `reusable_anon_vma`: may a VMA at `[start,end)`
/// with these flags take `neighbour`'s anon_vma at its first fault? Access
/// flags do not matter here, unlike for merging.
pub(crate) fn reusable_anon_of<'a>(v: &Vma, neighbour: &'a Vma) -> Option<&'a std::sync::Arc<AnonVma>> {
    let adjacent = v.end == neighbour.start || neighbour.end == v.start;
    let (lo, hi) = if v.start < neighbour.start { (v, neighbour) } else { (neighbour, v) };
    let linear = hi.pgoff == lo.pgoff + (lo.len() >> 12);
    // Linux's `anon_vma_compatible`: the flags other than the access
    // rights must agree (a locked or don't-fork neighbour's anon_vma is not
    // taken, so the two VMAs never merge later).
    if !adjacent || !linear || v.account != neighbour.account || v.flags != neighbour.flags || !same_file(v, neighbour)
    {
        return None;
    }
    match &neighbour.backing {
        Backing::Anon(l) => {
            let (id, chain) = l.get();
            if id != 0 && chain == 1 {
                l.anon_vma()
            } else {
                None
            }
        }
        Backing::Shm(_) => None,
    }
}

/// The VMAs of one address space, by start address.
#[derive(Default)]
pub(crate) struct VmaTree {
    map: BTreeMap<u64, Vma>,
    /// Some private VMA was moved (mremap), here or in an ancestor before
    /// a fork: its page offset no longer says its address, and the
    /// reverse map must look its pages up by offset (`anon_addresses`).
    remapped: bool,
    /// The snapshot logs of the space (`mm/snapshot.rs`), once it took a
    /// snapshot: every change of a VMA's range or attributes is logged.
    logs: Option<std::sync::Arc<crate::snaplog::SnapLogs>>,
}

impl VmaTree {
    /// The VMA containing `va`.
    pub(crate) fn find(&self, va: u64) -> Option<&Vma> {
        self.map.range(..=va).next_back().map(|(_, v)| v).filter(|v| va < v.end)
    }

    /// The VMAs before and after `va` (`va` itself inside neither).
    pub(crate) fn neighbours(&self, va: u64) -> (Option<&Vma>, Option<&Vma>) {
        let prev = self.map.range(..va).next_back().map(|(_, v)| v).filter(|v| v.end <= va);
        let next = self.map.range(va..).next().map(|(_, v)| v);
        (prev, next)
    }

    /// End of the last VMA ending at or before `va` (0 if none).
    pub(crate) fn floor(&self, va: u64) -> u64 {
        self.map.range(..va).next_back().map(|(_, v)| v.end.min(va)).unwrap_or(0)
    }

    /// Start of the first VMA starting at or after `va` (`limit` if none).
    pub(crate) fn ceiling(&self, va: u64, limit: u64) -> u64 {
        self.map.range(va..).next().map(|(_, v)| v.start).unwrap_or(limit)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.map.values()
    }

    /// VMAs overlapping `[start, end)`, in order.
    pub(crate) fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Vma> {
        let first = self.find(start).map(|v| v.start).unwrap_or(start);
        self.map.range(first..end).map(|(_, v)| v).filter(move |v| v.end > start)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Log VMA changes of this tree into `logs` from now on.
    pub(crate) fn set_logs(&mut self, logs: std::sync::Arc<crate::snaplog::SnapLogs>) {
        self.logs = Some(logs);
    }

    /// `[lo, hi)` changed its mappings: snapshots of the space hear so.
    /// Splits and merges change nothing a snapshot sees and are not logged.
    pub(crate) fn changed(&self, lo: u64, hi: u64) {
        if let Some(l) = &self.logs {
            l.vmas_changed(lo, hi);
        }
    }

    /// Split the VMA containing `at` (if `at` is strictly inside one).
    pub(crate) fn split_at(&mut self, at: u64) {
        let Some(v) = self.find(at) else { return };
        if v.start == at {
            return;
        }
        let start = v.start;
        let hi = v.slice(at, v.end);
        if let Some(lo) = self.map.get_mut(&start) {
            lo.end = at;
        }
        self.map.insert(at, hi);
    }

    /// Remove every VMA inside `[start, end)`, splitting at the edges first.
    pub(crate) fn remove_range(&mut self, start: u64, end: u64) -> Vec<Vma> {
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.map.range(start..end).map(|(k, _)| *k).collect();
        if !keys.is_empty() {
            self.changed(start, end);
        }
        keys.into_iter().filter_map(|k| self.map.remove(&k)).collect()
    }

    /// Insert a VMA into a hole (the caller cleared the range first).
    pub(crate) fn insert(&mut self, v: Vma) {
        debug_assert!(self.overlapping(v.start, v.end).next().is_none(), "VMA insert over a mapping");
        self.remapped |= matches!(v.backing, Backing::Anon(_)) && v.pgoff != v.start >> 12;
        self.changed(v.start, v.end);
        self.map.insert(v.start, v);
    }

    /// Move the start of the VMA at `start` down to `new_start` (a stack
    /// growing into the hole below it), its page offset with it, so every
    /// page keeps its offset.
    pub(crate) fn extend_down(&mut self, start: u64, new_start: u64) {
        let Some(mut v) = self.map.remove(&start) else { return };
        self.changed(new_start, start);
        v.pgoff -= (start - new_start) >> 12;
        v.start = new_start;
        self.map.insert(new_start, v);
    }

    /// Apply `f` to every VMA inside `[start, end)` (split at the edges
    /// only where `f` would change something, as Linux's mprotect does).
    /// The caller changes the VMA's attributes, not its range (a change
    /// of its end logs the new part itself, `changed`).
    pub(crate) fn get_mut(&mut self, start: u64) -> Option<&mut Vma> {
        if let Some(v) = self.map.get(&start) {
            self.changed(v.start, v.end);
        }
        self.map.get_mut(&start)
    }

    /// Merge the VMA ending at `at` with the one starting there, if they are
    /// compatible. Returns whether they merged.
    pub(crate) fn try_merge_at(&mut self, at: u64) -> bool {
        let Some(next) = self.map.get(&at) else { return false };
        let Some((&pstart, prev)) = self.map.range(..at).next_back() else { return false };
        if !prev.compatible(next) {
            return false;
        }
        // The merged VMA keeps the anon_vma of whichever side has one.
        let Some(next) = self.map.remove(&at) else { return false };
        if let Some(prev) = self.map.get_mut(&pstart) {
            prev.end = next.end;
            if let (Backing::Anon(l), Backing::Anon(n)) = (&mut prev.backing, &next.backing) {
                l.adopt(n);
            }
        }
        true
    }

    /// The addresses at which anonymous page `index` of anon_vma `owner`
    /// (or of a descendant) can be mapped here: Linux's
    /// `vma_address` over the VMAs of the anon_vma, `start + (index -
    /// pgoff) << 12`. Until a private VMA was moved, every such VMA has
    /// `pgoff == start >> 12`, and the one address is `index << 12`.
    pub(crate) fn anon_addresses(&self, owner: u64, index: u64) -> crate::few::Few<u64> {
        let mut out = crate::few::Few::default();
        if !self.remapped {
            out.push(index << 12);
            return out;
        }
        for v in self.map.values() {
            let Backing::Anon(l) = &v.backing else { continue };
            let inside = index >= v.pgoff && index - v.pgoff < v.len() >> 12;
            if inside && l.anon_vma().is_some_and(|a| a.descends_from(owner)) {
                out.push(v.start + ((index - v.pgoff) << 12));
            }
        }
        out
    }

    /// Find a free range of `len` bytes at or above `min`, top-down below
    /// `top` as Linux's default mmap layout does. Returns its start.
    pub(crate) fn find_free(&self, len: u64, min: u64, top: u64) -> Option<u64> {
        let mut hi = top;
        for v in self.map.values().rev() {
            if v.end <= hi && hi - v.end >= len {
                return Some(hi - len).filter(|&s| s >= min);
            }
            hi = hi.min(v.start_gap());
            if hi < min + len {
                return None;
            }
        }
        (hi >= min + len).then(|| hi - len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(start: u64, end: u64, prot: Prot) -> Vma {
        Vma {
            start,
            end,
            prot,
            flags: VmFlags::NONE,
            account: prot.writable(),
            pgoff: start >> 12,
            backing: Backing::Anon(AnonLink::new(MmRef::detached())),
            file: None,
        }
    }

    #[test]
    fn prot_spellings() {
        for (s, p) in [("-", Prot::NONE), ("r", Prot::READ), ("w", Prot::WRITE), ("rw", Prot::RW), ("wr", Prot::RW)] {
            assert_eq!(Prot::parse(s), Some(p), "{s}");
        }
        for (s, p) in [("x", Prot::EXEC), ("rx", Prot::RX), ("rwx", Prot::RWX)] {
            assert_eq!(Prot::parse(s), Some(p), "{s}");
            assert!(p.executable() && p.readable());
        }
        assert!(!Prot::RW.executable());
        for bad in ["", "xr", "rr", "rwxx", "q", "r-x", "wx r"] {
            assert_eq!(Prot::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn flags_split_and_merge() {
        let mut t = VmaTree::default();
        t.insert(anon(0x10000, 0x20000, Prot::RW));
        t.insert(anon(0x20000, 0x30000, Prot::RW));
        t.get_mut(0x20000).unwrap().flags = VmFlags::LOCKED;
        assert!(!t.try_merge_at(0x20000), "different flags");
        t.get_mut(0x20000).unwrap().flags = VmFlags::NONE;
        assert!(t.try_merge_at(0x20000));
        let f = VmFlags::LOCKED.with(VmFlags::DONTCOPY);
        assert!(f.contains(VmFlags::LOCKED) && !f.without(VmFlags::LOCKED).contains(VmFlags::LOCKED));
    }

    #[test]
    fn split_and_find() {
        let mut t = VmaTree::default();
        t.insert(anon(0x10000, 0x20000, Prot::RW));
        t.split_at(0x14000);
        assert_eq!(t.len(), 2);
        let v = t.find(0x15000).unwrap();
        assert_eq!((v.start, v.end, v.pgoff), (0x14000, 0x20000, 0x14));
        assert!(t.find(0x20000).is_none());
        assert!(t.find(0xffff).is_none());
    }

    #[test]
    fn remove_middle_leaves_two() {
        let mut t = VmaTree::default();
        t.insert(anon(0x10000, 0x20000, Prot::RW));
        let gone = t.remove_range(0x12000, 0x13000);
        assert_eq!(gone.len(), 1);
        assert_eq!(t.len(), 2);
        assert_eq!(t.floor(0x12000), 0x12000);
        assert_eq!(t.ceiling(0x12000, 1 << 47), 0x13000);
    }

    #[test]
    fn merge_rules() {
        let mut t = VmaTree::default();
        t.insert(anon(0x10000, 0x20000, Prot::RW));
        t.insert(anon(0x20000, 0x30000, Prot::RW));
        assert!(t.try_merge_at(0x20000));
        assert_eq!(t.len(), 1);
        t.insert(anon(0x30000, 0x40000, Prot::READ));
        assert!(!t.try_merge_at(0x30000), "different protection");
    }

    #[test]
    fn forked_anon_vma_does_not_merge_with_empty() {
        let a = (7, 2);
        assert!(!anon_mergeable(a, (0, 0)));
        assert!(anon_mergeable((7, 1), (0, 0)));
        assert!(anon_mergeable((7, 2), (7, 2)));
        assert!(!anon_mergeable((7, 1), (8, 1)));
    }

    #[test]
    fn find_free_is_top_down() {
        let mut t = VmaTree::default();
        let top = 0x100000;
        assert_eq!(t.find_free(0x1000, 0x10000, top), Some(0xff000));
        t.insert(anon(0xf0000, top, Prot::RW));
        assert_eq!(t.find_free(0x1000, 0x10000, top), Some(0xef000));
        assert_eq!(t.find_free(0x100000, 0x10000, top), None);
    }
}
