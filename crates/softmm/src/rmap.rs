//! Reverse mapping of private anonymous memory: the anon_vma (seed 004).
//!
//! A private anonymous frame records, in its metadata, the id of the
//! `AnonVma` of the VMA that created it (`FrameMeta::owner`) and its page
//! offset (`FrameMeta::index`). The VMAs that may map its frames are the
//! VMAs whose own anon_vma it is and, after fork, every descendant VMA. An
//! anon_vma lists the first (by address space) and its *children*: fork
//! gives the child's VMA a new anon_vma, listed as a child of the parent
//! VMA's. (Linux's `anon_vma_chain` links each VMA into every ancestor's
//! anon_vma instead, which costs a fork one link per ancestor: a live fork
//! chain of N levels would make N²/2 links.) A reverse-map walk goes from
//! a frame to its anon_vma, down the tree of children, and looks, in each
//! listed address space, at the one address where the frame can be mapped. Private anonymous VMAs keep `pgoff ==
//! start >> 12` (mmap sets it; splits, merges and fork keep it), so that
//! address is `index << 12` everywhere.
//!
//! # Membership and lifetime
//! A member is an address space with a count of its VMAs linked here. VMA
//! values carry their links (`AnonLink`): creating a VMA (prepare at the
//! first fault, a split, a fork) links it, dropping it (munmap, a merge,
//! exit) unlinks it. When the last member goes and no child is listed, the
//! list is empty, its parent stops listing it, and the anon_vma is
//! unreachable by any new link (a child holds its parent by `Arc`, so an
//! ancestor lives as long as its descendants): that is the garbage collection
//! the seed asks for, "through list_empty". Memory safety does not rest on
//! it: VMAs hold the anon_vma by `Arc`, and the machine's registry (how a
//! walker turns a frame's id into the object) holds a `Weak`, so the race of
//! the seed (a walk against `zap_pte_range` and exit freeing the anon_vma)
//! can at worst make the walker find an empty list. A walker takes no
//! reference on the list itself and never holds the anon_vma lock while it
//! takes an `mmap_lock` (see `rmap_walk`).
//!
//! # Lock kinds
//! The member list lock is chosen at build time (seed 004: "a configuration
//! option to switch the locking at compile time"): a spinning lock by
//! default, or with the `rmap-rwsem` feature a sleeping reader-writer lock,
//! which walks take shared. Sleeping MMU notifiers need neither: a walk
//! copies the member list under the lock and visits the members (where
//! notifiers are called) with it released (`Members::walk`).
//!
//! Lock order: `mmap_lock` -> page-table lock -> anon_vma lock. The anon_vma
//! lock is a leaf in practice: nothing is taken while it is held.

use crate::few::Few;
use crate::mm::MmInner;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// The member-list lock: spinning by default, sleeping with `rmap-rwsem`.
/// Under loom the same kinds come from loom (a spinning lock would spin
/// where the model checker cannot see it).
pub(crate) struct RmapLock<T>(LockImpl<T>);

#[cfg(all(not(feature = "rmap-rwsem"), not(loom)))]
type LockImpl<T> = spin::Mutex<T>;
#[cfg(all(not(feature = "rmap-rwsem"), loom))]
type LockImpl<T> = crate::sync::Mutex<T>;
#[cfg(all(feature = "rmap-rwsem", not(loom)))]
type LockImpl<T> = parking_lot::RwLock<T>;
#[cfg(all(feature = "rmap-rwsem", loom))]
type LockImpl<T> = loom::sync::RwLock<T>;

impl<T> RmapLock<T> {
    fn new(v: T) -> Self {
        RmapLock(LockImpl::new(v))
    }

    #[cfg(not(feature = "rmap-rwsem"))]
    fn read(&self) -> impl std::ops::Deref<Target = T> + '_ {
        self.0.lock()
    }
    #[cfg(not(feature = "rmap-rwsem"))]
    fn write(&self) -> impl std::ops::DerefMut<Target = T> + '_ {
        self.0.lock()
    }

    #[cfg(all(feature = "rmap-rwsem", not(loom)))]
    fn read(&self) -> impl std::ops::Deref<Target = T> + '_ {
        self.0.read()
    }
    #[cfg(all(feature = "rmap-rwsem", not(loom)))]
    fn write(&self) -> impl std::ops::DerefMut<Target = T> + '_ {
        self.0.write()
    }

    #[cfg(all(feature = "rmap-rwsem", loom))]
    fn read(&self) -> impl std::ops::Deref<Target = T> + '_ {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    #[cfg(all(feature = "rmap-rwsem", loom))]
    fn write(&self) -> impl std::ops::DerefMut<Target = T> + '_ {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The lock kind compiled in, for reports and benchmarks.
#[cfg(feature = "testing")]
pub const LOCK_KIND: &str = if cfg!(feature = "rmap-rwsem") { "rwsem" } else { "spin" };

/// How a member list holds a member: by id, with a way to reach it while
/// it lives. The real lists hold address spaces ([`MmRef`]); the loom
/// model holds a small stand-in and runs the same list code.
pub(crate) trait MemberRef: Clone {
    /// The member itself, held while a walk visits it.
    type Strong;
    fn id(&self) -> u64;
    fn upgrade(&self) -> Option<Self::Strong>;
}

/// An address space as the reverse map names it.
#[derive(Clone)]
pub(crate) struct MmRef {
    pub(crate) id: u64,
    pub(crate) mm: Weak<MmInner>,
}

impl MmRef {
    /// A reference to no address space (VMA unit tests).
    #[cfg(test)]
    pub(crate) fn detached() -> MmRef {
        MmRef { id: 0, mm: Weak::new() }
    }
}

impl MemberRef for MmRef {
    type Strong = Arc<MmInner>;
    #[inline]
    fn id(&self) -> u64 {
        self.id
    }
    #[inline]
    fn upgrade(&self) -> Option<Arc<MmInner>> {
        self.mm.upgrade()
    }
}

struct Member<M> {
    mm: M,
    /// VMAs of that space linked here.
    vmas: u32,
}

/// The address spaces whose VMAs may map some frames, each with its count
/// of linked VMAs: an anon_vma's list, and a shared object's (Linux's
/// `i_mmap`, at address-space granularity). Generic over the member handle
/// `M` and the tree node `N` (what children are) only for the loom model;
/// the real lists are the defaults.
pub(crate) struct Members<M = MmRef, N = AnonVma>(RmapLock<List<M, N>>);

struct List<M = MmRef, N = AnonVma> {
    members: Vec<Member<M>>,
    /// Each member's position in `members`: a fork chain of depth d links
    /// each new space into d anon_vmas of up to d members each, so a
    /// search of the list would make deep chains cubic.
    at: IdMap<usize>,
    /// An anon_vma's children: the anon_vmas of the VMAs forked from its
    /// members' (empty for a shared object's list).
    children: IdMap<Weak<N>>,
    /// Links made so far: a walker that finds it unchanged after its
    /// visits knows no one joined meanwhile, without comparing lists.
    joins: u64,
    /// The loom twin's broken walk: trust the first look.
    #[cfg(all(test, loom))]
    look_once: bool,
}

impl<M, N> Default for List<M, N> {
    fn default() -> Self {
        List {
            members: Vec::new(),
            at: IdMap::default(),
            children: IdMap::default(),
            joins: 0,
            #[cfg(all(test, loom))]
            look_once: false,
        }
    }
}

impl<M: MemberRef, N> List<M, N> {
    fn find(&self, mm_id: u64) -> Option<&Member<M>> {
        self.at.get(&mm_id).map(|&i| &self.members[i])
    }

    fn link(&mut self, mm: &M) {
        self.joins += 1;
        match self.at.get(&mm.id()) {
            Some(&i) => self.members[i].vmas += 1,
            None => {
                self.at.insert(mm.id(), self.members.len());
                self.members.push(Member { mm: mm.clone(), vmas: 1 });
            }
        }
    }

    /// Nothing listed: no member and no child.
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    fn unlink(&mut self, mm_id: u64) {
        let Some(&i) = self.at.get(&mm_id) else { return };
        self.members[i].vmas -= 1;
        if self.members[i].vmas == 0 {
            self.at.remove(&mm_id);
            self.members.swap_remove(i);
            if let Some(moved) = self.members.get(i) {
                self.at.insert(moved.mm.id(), i);
            }
        }
    }

    /// Whether a walker that last looked when `last` links had been made
    /// has seen every member and child: no one joined since. The first
    /// look never settles: the visits after it are what others may race.
    #[inline]
    fn settled(&self, last: Option<u64>) -> bool {
        #[cfg(all(test, loom))]
        if self.look_once && last.is_some() {
            return true;
        }
        last == Some(self.joins)
    }
}

impl<M, N> Default for Members<M, N> {
    fn default() -> Self {
        Members(RmapLock::new(List::default()))
    }
}

impl<M: MemberRef, N> Members<M, N> {
    /// Link one more VMA of `mm`.
    pub(crate) fn link(&self, mm: &M) {
        self.0.write().link(mm);
    }

    /// Unlink one VMA of the space `mm_id`; returns whether the list is
    /// now empty.
    pub(crate) fn unlink(&self, mm_id: u64) -> bool {
        let mut list = self.0.write();
        list.unlink(mm_id);
        list.is_empty()
    }

    /// List child `id` (a walk that is looking at the list sees it).
    fn add_child(&self, id: u64, child: &Arc<N>) {
        let mut list = self.0.write();
        list.joins += 1;
        list.children.insert(id, Arc::downgrade(child));
    }

    /// Unlist child `id`; returns whether it was listed and the list is
    /// now empty.
    fn remove_child(&self, id: u64) -> bool {
        let mut list = self.0.write();
        list.children.remove(&id).is_some() && list.is_empty()
    }

    /// How many VMAs of `mm_id` are linked (audits).
    pub(crate) fn links_of(&self, mm_id: u64) -> u32 {
        self.0.read().find(mm_id).map_or(0, |m| m.vmas)
    }

    /// Members listed (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn len(&self) -> usize {
        self.0.read().members.len()
    }

    /// Visit every member, including those that join while the visit runs
    /// (the list is looked at again until no link was made since the last
    /// look); see [`rmap_walk`]. The list lock is not held while `visit`
    /// runs.
    pub(crate) fn walk(&self, visit: impl FnMut(&M::Strong)) {
        self.walk_with(visit, |_| {});
    }

    /// `walk`, also handing each child anon_vma (those that join while
    /// the walk runs too) to `child`, after the members seen with it.
    fn walk_with(&self, mut visit: impl FnMut(&M::Strong), mut child: impl FnMut(Arc<N>)) {
        // Most lists hold one space: neither list below allocates then.
        let mut seen: Few<u64> = Few::default();
        let mut found: Few<(u64, Option<M::Strong>)> = Few::default();
        let mut seen_children: Few<u64> = Few::default();
        let mut kids: Vec<Arc<N>> = Vec::new();
        let mut joins = None;
        loop {
            {
                let list = self.0.read();
                if list.settled(joins) {
                    return;
                }
                joins = Some(list.joins);
                // Upgraded under the lock (one atomic each), dropped after it.
                for m in list.members.iter().filter(|m| !seen.iter().any(|&id| id == m.mm.id())) {
                    found.push((m.mm.id(), m.mm.upgrade()));
                }
                for (&id, c) in list.children.iter() {
                    if !seen_children.iter().any(|&s| s == id) {
                        seen_children.push(id);
                        kids.extend(c.upgrade());
                    }
                }
            }
            for (id, mm) in found.drain() {
                seen.push(id);
                if let Some(mm) = mm {
                    visit(&mm);
                }
            }
            kids.drain(..).for_each(&mut child);
        }
    }
}

/// A node of the anon_vma tree as a walk sees it: its list of members and
/// children ([`AnonVma`]; the loom model's stand-in).
pub(crate) trait Listed: Sized {
    type Member: MemberRef;
    fn members(&self) -> &Members<Self::Member, Self>;
}

impl Listed for AnonVma {
    type Member = MmRef;
    #[inline]
    fn members(&self) -> &Members {
        &self.members
    }
}

/// Visit the members of `first` and, down the tree, its descendants'.
/// A stack, not recursion: fork trees can be deep.
fn walk_tree<N: Listed>(first: Option<Arc<N>>, mut visit: impl FnMut(&<N::Member as MemberRef>::Strong)) {
    // Each node's children are read with its members, under the same
    // re-reading rule, and walked after them.
    let mut todo: Vec<Arc<N>> = first.into_iter().collect();
    while let Some(n) = todo.pop() {
        n.members().walk_with(&mut visit, |c| todo.push(c));
    }
}

/// One anon_vma: the VMAs whose own anon_vma it is (by address space),
/// and the anon_vmas forked from it. The spaces that may map its frames
/// are its members and, down the tree of children, theirs.
pub(crate) struct AnonVma {
    pub(crate) id: u64,
    members: Members,
    /// The anon_vma this one was forked from: its frames may be mapped by
    /// this one's members. Held, so an ancestor outlives its descendants.
    parent: Option<Arc<AnonVma>>,
    /// The id of the oldest ancestor (its own, without a parent).
    root: u64,
    registry: Weak<AnonVmas>,
}

impl AnonVma {
    /// Link one more VMA of `mm`.
    pub(crate) fn link(&self, mm: &MmRef) {
        self.members.link(mm);
    }

    /// Unlink one VMA of the space `mm_id`.
    pub(crate) fn unlink(&self, mm_id: u64) {
        if self.members.unlink(mm_id) {
            self.emptied();
        }
    }

    /// Garbage collection through the empty list: no walker can find this
    /// anon_vma any more, and its parent no longer lists it (which may
    /// empty the parent in turn: a loop, as chains can be long).
    fn emptied(&self) {
        self.forget();
        let mut child = self.id;
        let mut up = self.parent.as_ref();
        while let Some(p) = up {
            if !p.members.remove_child(child) {
                return;
            }
            p.forget();
            (child, up) = (p.id, p.parent.as_ref());
        }
    }

    fn forget(&self) {
        if let Some(r) = self.registry.upgrade() {
            r.forget(self.id);
        }
    }

    /// How many VMAs of `mm_id` are linked (audits).
    pub(crate) fn links_of(&self, mm_id: u64) -> u32 {
        self.members.links_of(mm_id)
    }

    /// Whether `id` is this anon_vma or one of its ancestors: whether the
    /// frames it owns may be mapped by this one's members (audits).
    pub(crate) fn descends_from(&self, id: u64) -> bool {
        let mut at = Some(self);
        while let Some(a) = at {
            if a.id == id {
                return true;
            }
            at = a.parent.as_deref();
        }
        false
    }
}

impl Drop for AnonVma {
    fn drop(&mut self) {
        self.forget();
        // Drop a chain of ancestors that only this one held in a loop, not
        // by recursion (a deep fork chain would overflow the stack).
        let mut up = self.parent.take();
        while let Some(p) = up {
            up = Arc::into_inner(p).and_then(|mut a| a.parent.take());
        }
    }
}

const SHARDS: usize = 64;

/// Hashes an id with one multiply: ids are a counter's values, not
/// attacker-chosen, and every reverse-map walk looks one up (SipHash cost
/// as much as the rest of the lookup).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        // Odd multiplier: the low bits (the bucket) stay a bijection of the
        // id's, the high bits (the tag) mix all of them.
        self.0 = (self.0 ^ x ^ (x >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The machine's registry: anon_vma id -> object, for walkers that start
/// from a frame. Holds `Weak`s: VMAs own anon_vmas.
pub(crate) struct AnonVmas {
    shards: [Mutex<IdMap<Weak<AnonVma>>>; SHARDS],
    me: Weak<AnonVmas>,
}

impl AnonVmas {
    pub(crate) fn new() -> Arc<AnonVmas> {
        Arc::new_cyclic(|me| AnonVmas { shards: std::array::from_fn(|_| Mutex::new(IdMap::default())), me: me.clone() })
    }

    fn shard(&self, id: u64) -> &Mutex<IdMap<Weak<AnonVma>>> {
        &self.shards[(id as usize).wrapping_mul(0x9e37_79b9) % SHARDS]
    }

    /// A new anon_vma with `first` as its only member.
    pub(crate) fn create(&self, id: u64, first: &MmRef) -> Arc<AnonVma> {
        self.create_under(id, first, None)
    }

    /// A new anon_vma with `first` as its only member, a child of `parent`
    /// if given.
    fn create_under(&self, id: u64, first: &MmRef, parent: Option<&Arc<AnonVma>>) -> Arc<AnonVma> {
        let av = Arc::new(AnonVma {
            id,
            members: Members::default(),
            parent: parent.cloned(),
            root: parent.map_or(id, |p| p.root),
            registry: self.me.clone(),
        });
        av.link(first);
        if let Some(p) = parent {
            p.members.add_child(id, &av);
        }
        self.shard(id).lock().insert(id, Arc::downgrade(&av));
        av
    }

    /// The anon_vma with this id, if it still has members.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<AnonVma>> {
        self.shard(id).lock().get(&id).and_then(Weak::upgrade)
    }

    fn forget(&self, id: u64) {
        self.shard(id).lock().remove(&id);
    }

    /// Number of live anon_vmas (audits, reports).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().values().filter(|w| w.strong_count() > 0).count()).sum()
    }
}

/// The link of one private VMA: its own anon_vma (set at the first fault
/// that needs one, or at fork), whose ancestors are the anon_vmas whose
/// frames it may map (Linux's anon_vma chain). Only the own anon_vma lists
/// the VMA: its ancestors reach it through their children, so a fork links
/// one anon_vma whatever the depth of the fork tree (Linux links one per
/// ancestor).
pub(crate) struct AnonLink {
    mm: MmRef,
    own: std::sync::OnceLock<Arc<AnonVma>>,
    /// Ancestors of `own` (0 for a VMA whose anon_vma it created or reused).
    ancestors: u64,
}

impl AnonLink {
    /// The links of a new private mapping of `mm`: none yet.
    pub(crate) fn new(mm: MmRef) -> AnonLink {
        AnonLink { mm, own: std::sync::OnceLock::new(), ancestors: 0 }
    }

    /// (own anon_vma id or 0, anon_vmas chained): what VMA merging and
    /// anon_vma reuse look at (Linux's `vma->anon_vma` and whether the
    /// chain is singular).
    pub(crate) fn get(&self) -> (u64, u64) {
        match self.own.get() {
            Some(av) => (av.id, self.ancestors + 1),
            None => (0, 0),
        }
    }

    /// The own anon_vma, if any.
    pub(crate) fn anon_vma(&self) -> Option<&Arc<AnonVma>> {
        self.own.get()
    }

    /// The id of the oldest anon_vma this VMA is chained to (Linux's
    /// `anon_vma->root`), 0 if none: a walk from it covers every VMA of the
    /// fork tree, so a page that may be shared with relatives (one swapped
    /// in) uses it.
    pub(crate) fn root_id(&self) -> u64 {
        self.own.get().map_or(0, |a| a.root)
    }

    /// Set the own anon_vma (at the first fault) unless a racing fault did:
    /// `make` gives a new one or a neighbour's (one without ancestors).
    /// Returns the one in force.
    pub(crate) fn prepare(&self, make: impl FnOnce(&MmRef) -> Arc<AnonVma>) -> &Arc<AnonVma> {
        self.own.get_or_init(|| make(&self.mm))
    }

    /// This VMA's link again, for another VMA of the same space (a split).
    pub(crate) fn clone_link(&self) -> AnonLink {
        let own = std::sync::OnceLock::new();
        if let Some(av) = self.own.get() {
            av.link(&self.mm);
            let _ = own.set(av.clone());
        }
        AnonLink { mm: self.mm.clone(), own, ancestors: self.ancestors }
    }

    /// The link of the child's copy of this VMA at fork: a new own
    /// anon_vma, a child of this VMA's (`anon_vma_fork`). A VMA without an
    /// anon_vma has no frames: the child's copy then has none either.
    pub(crate) fn fork_link(&self, reg: &AnonVmas, id: u64, child: &MmRef) -> AnonLink {
        let Some(own) = self.own.get() else { return AnonLink::new(child.clone()) };
        let new = std::sync::OnceLock::new();
        let _ = new.set(reg.create_under(id, child, Some(own)));
        AnonLink { mm: child.clone(), own: new, ancestors: self.ancestors + 1 }
    }

    /// The link a restore gives the space `mm` for a snapshot's VMA
    /// (`mm/snapshot.rs`): the snapshot's own anon_vma was forked from the
    /// space's, so the space links its parent again, and every frame the
    /// snapshot shares with it stays reachable; merges with the space's
    /// unchanged VMAs see the anon_vma they had. A VMA without one gets none.
    pub(crate) fn restore_link(&self, mm: &MmRef) -> AnonLink {
        let own = std::sync::OnceLock::new();
        let Some(av) = self.own.get() else { return AnonLink::new(mm.clone()) };
        let (target, ancestors) = match &av.parent {
            Some(p) => (p.clone(), self.ancestors.saturating_sub(1)),
            None => (av.clone(), self.ancestors),
        };
        target.link(mm);
        let _ = own.set(target);
        AnonLink { mm: mm.clone(), own, ancestors }
    }

    /// Take `other`'s own anon_vma (a merge of a VMA without one into a
    /// neighbour with a singular chain).
    pub(crate) fn adopt(&mut self, other: &AnonLink) {
        if self.own.get().is_some() {
            return;
        }
        if let Some(av) = other.own.get() {
            av.link(&self.mm);
            let _ = self.own.set(av.clone());
            self.ancestors = other.ancestors;
        }
    }
}

impl Drop for AnonLink {
    fn drop(&mut self) {
        if let Some(a) = self.own.get() {
            a.unlink(self.mm.id);
        }
    }
}

/// Visit every address space that may map the anonymous frame with rmap
/// `owner` id at `va`: `visit(mm)`. The walk takes no lock of its own while
/// `visit` runs (which takes the space's `mmap_lock` and page-table lock).
/// Members and children that join while the walk runs (a fork copying the
/// page) are visited too: each list is read again until no link was made
/// since its last read (a count of links under the list lock). Fork lists
/// the child's new anon_vma, with the child as its member, under the
/// parent's before it copies any entry, and holds the parent's `mmap_lock` for
/// writing while it copies, so a child that maps the frame is always seen
/// by a walk that visits the parent after the fork, or finds the page
/// already changed when it visits the parent before.
pub(crate) fn rmap_walk(reg: &AnonVmas, owner: u64, visit: impl FnMut(&Arc<MmInner>)) {
    walk_tree(reg.get(owner), visit);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{List, Members, MmRef};
    use std::sync::Weak;

    fn mm(id: u64) -> MmRef {
        MmRef { id, mm: Weak::new() }
    }

    /// The index names each member's position, and nothing else.
    fn consistent(l: &List) {
        assert_eq!(l.at.len(), l.members.len());
        for (i, m) in l.members.iter().enumerate() {
            assert_eq!(l.at.get(&m.mm.id), Some(&i), "member {} at {i}", m.mm.id);
        }
    }

    #[test]
    fn link_unlink_keep_counts_order_and_index() {
        let mut l: List = List::default();
        for id in [1, 2, 3, 2, 4] {
            l.link(&mm(id));
            consistent(&l);
        }
        assert_eq!(l.find(2).map(|m| m.vmas), Some(2));
        l.unlink(2);
        assert_eq!(l.find(2).map(|m| m.vmas), Some(1));
        // The last member fills the gap of a removed one (walk order as a
        // plain list with swap_remove had it).
        l.unlink(1);
        consistent(&l);
        assert_eq!(l.members.iter().map(|m| m.mm.id).collect::<Vec<_>>(), [4, 2, 3]);
        l.unlink(3); // the last one: nothing moves
        l.unlink(9); // not a member: nothing changes
        consistent(&l);
        assert_eq!(l.members.iter().map(|m| m.mm.id).collect::<Vec<_>>(), [4, 2]);
        assert_eq!(l.joins, 5);
    }

    #[test]
    fn many_members_link_and_unlink_through_the_index() {
        // A shared object mapped by many spaces: one member per space.
        let root = Members::default();
        for id in 0..2000 {
            root.link(&mm(id));
        }
        assert_eq!(root.len(), 2000);
        assert!((0..2000).all(|id| root.links_of(id) == 1));
        for id in (0..2000).step_by(2) {
            assert!(!root.unlink(id));
        }
        assert_eq!(root.len(), 1000);
        assert!((0..2000).all(|id| root.links_of(id) == (id % 2) as u32));
        consistent(&root.0.read());
    }
}

#[cfg(all(test, not(loom)))]
mod tree_tests {
    use super::rmap_walk;
    use crate::vma::Backing;
    use crate::{Config, Machine, MapKind, Mm, Placement, Prot};

    const BASE: u64 = 0x1000_0000;

    /// The own anon_vma of the VMA at BASE of `mm`.
    fn own(mm: &Mm) -> std::sync::Arc<super::AnonVma> {
        let st = mm.inner.state.read();
        match st.vmas.find(BASE).map(|v| &v.backing) {
            Some(Backing::Anon(l)) => l.anon_vma().cloned().unwrap(),
            _ => panic!("no private VMA at BASE"),
        }
    }

    /// What a walk from `id` visits, by space id.
    fn walk(m: &Machine, id: u64) -> Vec<u64> {
        let mut seen = vec![];
        rmap_walk(&m.inner.anon_vmas, id, |mm| seen.push(mm.id));
        seen.sort_unstable();
        seen
    }

    #[test]
    // Whole machines forking many times: minutes under Miri, and no unsafe
    // code of their own (the release suite runs them).
    #[cfg_attr(miri, ignore)]
    fn a_fork_chain_links_one_anon_vma_per_level_and_walks_reach_descendants() {
        let m = Machine::new(Config { arena_bytes: 64 << 20, prezero: false, ..Config::default() }).unwrap();
        let root = m.new_mm().unwrap();
        root.mmap(BASE, 4096, Prot::RW, MapKind::Private, Placement::Fixed).unwrap();
        root.write(BASE, b"r").unwrap();
        let mut chain = vec![root];
        for _ in 0..1000 {
            let next = chain[chain.len() - 1].fork().unwrap();
            chain.push(next);
        }
        // Each anon_vma lists its own space and at most one child, however
        // deep the chain (a chain of links per ancestor would give the
        // root 1001 members).
        for mm in &chain {
            let av = own(mm);
            let list = av.members.0.read();
            assert_eq!((list.members.len(), list.at.len()), (1, 1));
            assert!(list.children.len() <= 1);
        }
        let ids: Vec<u64> = chain.iter().map(|mm| mm.inner.id).collect();
        let mut all = ids.clone();
        all.sort_unstable();
        assert_eq!(walk(&m, own(&chain[0]).id), all, "the root's frames may be mapped anywhere below");
        assert_eq!(walk(&m, own(&chain[990]).id), ids[990..].to_vec());
        assert_eq!(own(&chain[1000]).root, own(&chain[0]).id);
        assert!(own(&chain[1000]).descends_from(own(&chain[0]).id));
        // A space leaving the middle: its anon_vma stays (a child holds
        // it) and walks still pass through it.
        let mid_av = own(&chain[500]).id;
        chain.remove(500).exit();
        assert_eq!(walk(&m, own(&chain[0]).id).len(), 1000);
        assert!(m.inner.anon_vmas.get(mid_av).is_some());
        m.check_invariants().unwrap();
        // The leaves go first: each emptied anon_vma unlists itself, and
        // the empty ancestors with it.
        while let Some(mm) = chain.pop() {
            mm.exit();
        }
        assert_eq!(m.stats().anon_vmas, 0);
        assert!(m.inner.anon_vmas.get(mid_av).is_none());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The reverse-map walk against fork and exit under loom, running the
    //! real `Members` (`link`, `unlink`, `add_child`, the re-reading
    //! `walk_with`) and the real tree walk of `rmap_walk` (`walk_tree`) on
    //! the real list lock (loom's mutex, or its rwlock with `rmap-rwsem`).
    //! Modelled: reclaim unmapping a page (`try_to_unmap`: visit each
    //! space under its `mmap_lock`, clear its entry under its page-table
    //! lock) while P, one of the two spaces mapping it, forks (under P's
    //! `mmap_lock` for writing: list the child's anon_vma, the child C as
    //! its member, under P's, then copy P's entry to C) and then exits
    //! (zap, unlink: the other member, Q, moves in the list). Checked:
    //! after the walk no space maps the page, so a child that joined during
    //! the walk was visited, and a member that moved was not skipped.
    //!
    //! Not modelled: the anon_vmas' lifetime (the registry's `Weak`, the
    //! VMAs' `Arc`, collection through the empty list). It rests on std
    //! `Arc`/`Weak`, which loom cannot model (loom has no `Weak`); here the
    //! test holds every node, and members are never freed.
    use super::{walk_tree, Listed, MemberRef, Members};
    use crate::sync::{Arc, Mutex};
    use loom::sync::RwLock;

    /// An address space: its `mmap_lock` and its entry for the page (1:
    /// mapped) under its page-table lock.
    struct Space {
        id: u64,
        mmap_lock: RwLock<()>,
        pte: Mutex<u64>,
    }

    #[derive(Clone)]
    struct SpaceRef(Arc<Space>);

    impl MemberRef for SpaceRef {
        type Strong = Arc<Space>;
        fn id(&self) -> u64 {
            self.0.id
        }
        fn upgrade(&self) -> Option<Arc<Space>> {
            Some(self.0.clone())
        }
    }

    /// An anon_vma: its list (std `Arc`, as the real tree; see above).
    #[derive(Default)]
    struct Node(Members<SpaceRef, Node>);

    impl Listed for Node {
        type Member = SpaceRef;
        fn members(&self) -> &Members<SpaceRef, Node> {
            &self.0
        }
    }

    fn space(id: u64, pte: u64) -> SpaceRef {
        SpaceRef(Arc::new(Space { id, mmap_lock: RwLock::new(()), pte: Mutex::new(pte) }))
    }

    /// `try_to_unmap` of the page owned by `root`.
    fn reclaim(root: std::sync::Arc<Node>) {
        walk_tree(Some(root), |s| {
            let _r = s.mmap_lock.read().unwrap();
            *s.pte.lock() = 0;
        });
    }

    /// P forks C (`anon_vma_fork`, then `copy_page_range`), then exits.
    fn fork_then_exit(a: &Node, p: &SpaceRef, c: &SpaceRef, kids: &mut Vec<std::sync::Arc<Node>>) {
        {
            let _w = p.0.mmap_lock.write().unwrap();
            let b = std::sync::Arc::new(Node::default());
            b.0.link(c);
            a.0.add_child(2, &b);
            kids.push(b);
            let pte = *p.0.pte.lock();
            *c.0.pte.lock() = pte;
        }
        {
            let _w = p.0.mmap_lock.write().unwrap();
            *p.0.pte.lock() = 0;
        }
        a.0.unlink(p.id());
    }

    fn walk_vs_fork_and_exit(look_once: bool) {
        loom::model(move || {
            let a = std::sync::Arc::new(Node::default());
            a.0 .0.write().look_once = look_once;
            let (p, q, c) = (space(1, 1), space(3, 1), space(2, 0));
            a.0.link(&p);
            a.0.link(&q);
            let w = {
                let a = a.clone();
                loom::thread::spawn(move || reclaim(a))
            };
            let mut kids = Vec::new();
            fork_then_exit(&a, &p, &c, &mut kids);
            w.join().unwrap();
            assert_eq!((*p.0.pte.lock(), *q.0.pte.lock()), (0, 0), "a member still maps the page after the walk");
            assert_eq!(*c.0.pte.lock(), 0, "the child still maps the page after the walk");
        });
    }

    #[test]
    fn rmap_walk_sees_a_child_forked_during_the_walk() {
        walk_vs_fork_and_exit(false);
    }

    /// The twin: a walk that trusts its first look at the list misses the
    /// child that joined while it visited the parent.
    #[test]
    #[should_panic(expected = "the child still maps the page after the walk")]
    fn rmap_walk_without_the_reread_misses_the_child() {
        walk_vs_fork_and_exit(true);
    }
}
