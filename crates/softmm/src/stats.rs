//! Counters: global event counters and smaps-style per-VMA accounting.
//!
//! Per-VMA figures follow `/proc/PID/smaps` (Linux `smaps_account`): the zero
//! frame counts nowhere; a page whose frame has refcount 1 is private;
//! otherwise it is shared when mapped more than once, and PSS divides its size
//! by its mapcount, in Linux's fixed point (`PSS_SHIFT` = 12) so the kB figure
//! rounds exactly as Linux's does.

use crate::sync::{AtomicU64, Ordering};

/// Global event counters of a [`crate::Machine`].
#[derive(Default)]
pub(crate) struct Counters {
    pub fault_zero_page: AtomicU64,
    pub fault_anon: AtomicU64,
    pub fault_shared: AtomicU64,
    pub fault_cow_copy: AtomicU64,
    pub fault_cow_reuse: AtomicU64,
    pub fault_minor: AtomicU64,
    pub segv: AtomicU64,
    pub page_tables: AtomicU64,
    pub forks: AtomicU64,
    pub tlb_flushes: AtomicU64,
    /// PTE tables currently shared by two or more address spaces.
    pub shared_tables: AtomicU64,
    pub table_shares: AtomicU64,
    pub table_copies: AtomicU64,
    pub table_reuses: AtomicU64,
    pub swap_outs: AtomicU64,
    pub swap_ins: AtomicU64,
    pub swap_cache_hits: AtomicU64,
    pub swap_failures: AtomicU64,
    pub migrations: AtomicU64,
    pub fork_pinned_copies: AtomicU64,
    pub direct_reclaims: AtomicU64,
    pub background_reclaimed: AtomicU64,
    pub look_around_aged: AtomicU64,
    pub lazyfree_dropped: AtomicU64,
    pub file_pages_dropped: AtomicU64,
    pub tables_moved: AtomicU64,
}

impl Counters {
    #[inline]
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of global counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineStats {
    /// Read faults that mapped the shared zero frame.
    pub fault_zero_page: u64,
    /// Faults that allocated a fresh private anonymous frame.
    pub fault_anon: u64,
    /// Faults that mapped a page of a shared object.
    pub fault_shared: u64,
    /// Write faults that copied a shared frame (copy-on-write).
    pub fault_cow_copy: u64,
    /// Write faults on a COW page whose frame turned out exclusive (reused).
    pub fault_cow_reuse: u64,
    /// Faults that only updated bits of a present entry (dirty, permissions).
    pub fault_minor: u64,
    /// Accesses that ended in a segmentation fault.
    pub segv: u64,
    /// Page-table pages in use (roots included).
    pub page_tables: u64,
    /// Forks performed.
    pub forks: u64,
    /// TLB shootdowns that had to reach other accessors.
    pub tlb_flushes: u64,
    /// PTE tables shared by two or more address spaces right now.
    pub shared_tables: u64,
    /// PTE tables shared by fork (one per table per fork).
    pub table_shares: u64,
    /// Unshares that copied a table.
    pub table_copies: u64,
    /// Unshares by the last sharer, which kept the table.
    pub table_reuses: u64,
    /// Pages written to the swap device and freed.
    pub swap_outs: u64,
    /// Host-file pages reclaim dropped from the page cache (written back
    /// first when dirty).
    pub file_pages_dropped: u64,
    /// PTE tables mremap moved whole, by their PMD entry (512 entries each).
    pub tables_moved: u64,
    /// Faults that read a page back from the swap device.
    pub swap_ins: u64,
    /// Faults on a swap entry that found the page still in the swap cache.
    pub swap_cache_hits: u64,
    /// Pages whose accessed bit a reclaim look-around cleared (each one
    /// reverse-map walk the clock did not need: `reclaim/visit.rs`).
    pub look_around_aged: u64,
    /// Swap-outs that failed (device full or failing); the page stayed.
    pub swap_failures: u64,
    /// Frames moved by migration.
    pub migrations: u64,
    /// Pinned pages fork copied for the child instead of sharing them.
    pub fork_pinned_copies: u64,
    /// Pins held now (a frame pinned twice counts twice).
    pub pins: u64,
    /// Times an allocation at the frame limit reclaimed itself (Linux's
    /// `allocstall`).
    pub direct_reclaims: u64,
    /// Frames the background reclaimer freed (Linux's `pgsteal_kswapd`).
    pub background_reclaimed: u64,
    /// Lazily freed pages (MADV_FREE) that reclaim dropped instead of
    /// swapping them (Linux's `pglazyfreed`).
    pub lazyfree_dropped: u64,
    /// Swap slots in use.
    pub swap_used: u64,
    /// Slots on the swap device (0: no swap).
    pub swap_slots: u64,
    /// Live anon_vmas (reverse-map objects).
    pub anon_vmas: u64,
    /// Frames allocated (page tables included, zero frame excluded).
    pub frames_in_use: u64,
    /// Frames in the arena.
    pub frames_capacity: u64,
    /// Frames ever touched (what the arena costs the host).
    pub frames_touched: u64,
}

impl MachineStats {
    pub(crate) fn from_counters(c: &Counters) -> MachineStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MachineStats {
            fault_zero_page: l(&c.fault_zero_page),
            lazyfree_dropped: l(&c.lazyfree_dropped),
            fault_anon: l(&c.fault_anon),
            fault_shared: l(&c.fault_shared),
            fault_cow_copy: l(&c.fault_cow_copy),
            fault_cow_reuse: l(&c.fault_cow_reuse),
            fault_minor: l(&c.fault_minor),
            segv: l(&c.segv),
            page_tables: l(&c.page_tables),
            forks: l(&c.forks),
            tlb_flushes: l(&c.tlb_flushes),
            shared_tables: l(&c.shared_tables),
            table_shares: l(&c.table_shares),
            table_copies: l(&c.table_copies),
            table_reuses: l(&c.table_reuses),
            swap_outs: l(&c.swap_outs),
            file_pages_dropped: l(&c.file_pages_dropped),
            tables_moved: l(&c.tables_moved),
            swap_ins: l(&c.swap_ins),
            swap_cache_hits: l(&c.swap_cache_hits),
            swap_failures: l(&c.swap_failures),
            migrations: l(&c.migrations),
            fork_pinned_copies: l(&c.fork_pinned_copies),
            direct_reclaims: l(&c.direct_reclaims),
            background_reclaimed: l(&c.background_reclaimed),
            look_around_aged: l(&c.look_around_aged),
            ..Default::default()
        }
    }
}

/// smaps counters of one VMA, in kB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Smaps {
    /// First address of the VMA (bytes, not kB).
    pub start: u64,
    /// The address after its end (bytes, not kB).
    pub end: u64,
    /// Resident set: kB of the VMA present in frames.
    pub rss: u64,
    /// Proportional set: each resident page divided by its number of mappers.
    pub pss: u64,
    /// The part of `pss` that is dirty memory (Linux's `Pss_Dirty:`).
    pub pss_dirty: u64,
    /// Anonymous memory.
    pub anonymous: u64,
    /// Clean memory mapped by more than one address space.
    pub shared_clean: u64,
    /// Dirty memory mapped by more than one address space.
    pub shared_dirty: u64,
    /// Clean memory mapped by this address space only.
    pub private_clean: u64,
    /// Dirty memory mapped by this address space only.
    pub private_dirty: u64,
    /// Resident memory recently accessed (Linux's `Referenced:`: the
    /// entry's accessed bit or the frame's referenced flag).
    pub referenced: u64,
    /// Anonymous memory `MADV_FREE` left clean, freed rather than swapped
    /// by reclaim (Linux's `LazyFree:`).
    pub lazyfree: u64,
    /// Memory out on the swap device.
    pub swap: u64,
    /// Linux's `Locked:`: the PSS of the VMA when it is `VM_LOCKED`
    /// (`mlock`), else 0.
    pub locked: u64,
}

/// Fixed-point shift of PSS, as Linux's `PSS_SHIFT`.
const PSS_SHIFT: u32 = 12;

/// Accumulates smaps figures page by page, in bytes.
#[derive(Default)]
pub(crate) struct SmapsAcc {
    rss: u64,
    pss: u64,
    pss_dirty: u64,
    referenced: u64,
    lazyfree: u64,
    anon: u64,
    shared_clean: u64,
    shared_dirty: u64,
    private_clean: u64,
    private_dirty: u64,
    swap: u64,
}

impl SmapsAcc {
    /// One page held by a swap entry (Linux's `Swap:` line).
    pub(crate) fn swapped(&mut self) {
        self.swap += 4096;
    }

    /// One present page's accessed state and lazy-free mark, after
    /// [`SmapsAcc::page`] counted it.
    pub(crate) fn page_marks(&mut self, referenced: bool, lazyfree: bool) {
        if referenced {
            self.referenced += 4096;
        }
        if lazyfree {
            self.lazyfree += 4096;
        }
    }

    /// One present, non-zero page: its frame's refcount and mapcount, whether
    /// it is anonymous and whether it is dirty (PTE or frame).
    pub(crate) fn page(&mut self, refcount: u32, mapcount: u32, anon: bool, dirty: bool) {
        let size = 4096u64;
        self.rss += size;
        if anon {
            self.anon += size;
        }
        let private = refcount == 1 || mapcount < 2;
        let pss = if private { size << PSS_SHIFT } else { (size << PSS_SHIFT) / mapcount as u64 };
        self.pss += pss;
        if dirty {
            self.pss_dirty += pss;
        }
        match (private, dirty) {
            (true, true) => self.private_dirty += size,
            (true, false) => self.private_clean += size,
            (false, true) => self.shared_dirty += size,
            (false, false) => self.shared_clean += size,
        }
    }

    pub(crate) fn finish(self, start: u64, end: u64) -> Smaps {
        Smaps {
            start,
            end,
            rss: self.rss >> 10,
            pss: (self.pss >> PSS_SHIFT) >> 10,
            pss_dirty: (self.pss_dirty >> PSS_SHIFT) >> 10,
            referenced: self.referenced >> 10,
            lazyfree: self.lazyfree >> 10,
            anonymous: self.anon >> 10,
            shared_clean: self.shared_clean >> 10,
            shared_dirty: self.shared_dirty >> 10,
            private_clean: self.private_clean >> 10,
            private_dirty: self.private_dirty >> 10,
            swap: self.swap >> 10,
            locked: 0,
        }
    }
}

impl std::fmt::Display for Smaps {
    /// The trace format's `smaps` line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rss={} pss={} anon={} shared_clean={} shared_dirty={} private_clean={} private_dirty={} swap={}",
            self.rss,
            self.pss,
            self.anonymous,
            self.shared_clean,
            self.shared_dirty,
            self.private_clean,
            self.private_dirty,
            self.swap
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_halves_for_two_mappers() {
        let mut a = SmapsAcc::default();
        a.page(2, 2, true, true);
        a.page(1, 1, true, true);
        let s = a.finish(0, 8192);
        assert_eq!((s.rss, s.pss, s.shared_dirty, s.private_dirty, s.anonymous), (8, 6, 4, 4, 8));
    }

    #[test]
    fn pss_rounds_like_linux() {
        let mut a = SmapsAcc::default();
        for _ in 0..3 {
            a.page(3, 3, true, false);
        }
        // Linux truncates each page's share in fixed point: 3 * floor(4096 *
        // 4096 / 3) >> 12 = 4095 bytes, shown as 3 kB, not 4.
        assert_eq!(a.finish(0, 0).pss, 3);
    }
}
