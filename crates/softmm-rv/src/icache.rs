//! Decoded-instruction caches: each hart keeps what it decoded, compiled to
//! [`Op`]s (a handler and operands, see [`crate::threaded`]), per 4 KiB page
//! of code, so a hot loop is fetched through the softmm accessor and
//! decoded once, not at every step.
//!
//! Staleness is softmm's to report. One [`CodeWatch`] per address space is
//! an MMU notifier: an invalidation that can change what a code address
//! holds or whether it may be fetched (unmap, a replacing `MAP_FIXED`,
//! `MADV_DONTNEED`, reduced protection, teardown) and that overlaps the
//! span of pages any hart has cached bumps the watch's generation; a hart
//! whose cache was filled under an older generation drops it when it next
//! enters a page, and its page loop leaves as soon as a load finds the
//! generation moved (see [`crate::hart::Hart::run`]). Copy-on-write, swap-out and migration move frames without
//! changing their bytes and leave the caches alone. Stores to code are seen
//! after `fence.i` (this hart) or the `riscv_flush_icache` system call
//! (every hart), which is what RISC-V asks of self-modifying programs.
//!
//! Instructions that cross a page boundary are not cached (they are fetched
//! every time).

use crate::decode::Inst;
use crate::threaded::{compile, fused, fused3, Op, KIND_LEN4};
use softmm::notifier::{Again, Event, MmuNotifier, Range};
use softmm::{Mm, Subscription};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Most pages a hart caches before it starts over (each page is 32 KiB of
/// decoded slots).
const MAX_PAGES: usize = 1024;
/// Slots per page: one per 2-byte instruction start.
const SLOTS: usize = 2048;
/// Ops after the last slot of a page ([`Op::PAGE_END`]): where the op of a
/// page's last instruction goes on.
const PAGE_END_OPS: usize = 2;
/// Entries of the direct-mapped page index in front of the hash map.
const RECENT: usize = 256;

/// One address space's invalidation generation, and the span of pages
/// whose code some hart may have cached.
pub struct CodeWatch {
    gen: AtomicU64,
    lo: AtomicU64,
    hi: AtomicU64,
}

impl CodeWatch {
    /// A watch subscribed to `mm`'s notifiers; `None` in a softmm built
    /// without notifiers (nobody would tell the caches, so harts must not
    /// have one). Keep the subscription as long as harts run.
    pub fn register(mm: &Mm) -> Option<(Arc<CodeWatch>, Subscription)> {
        if !softmm::notifier::NOTIFIERS_COMPILED {
            return None;
        }
        let w = CodeWatch::unwatched();
        let sub = mm.register_notifier(w.clone());
        Some((w, sub))
    }

    /// A watch no address space bumps, for a hart without a cache.
    pub(crate) fn unwatched() -> Arc<CodeWatch> {
        Arc::new(CodeWatch { gen: AtomicU64::new(0), lo: AtomicU64::new(u64::MAX), hi: AtomicU64::new(0) })
    }

    /// The generation now (an acquire load).
    #[inline(always)]
    pub(crate) fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    /// Drop every hart's cache (`riscv_flush_icache`).
    pub fn flush_all(&self) {
        self.gen.fetch_add(1, Ordering::SeqCst);
    }

    /// Widen the watched span to the page of `pc`, then read the
    /// generation: a change after this read makes the caller's fill stale.
    fn watch_page(&self, pc: u64) -> u64 {
        let page = pc & !0xfff;
        self.lo.fetch_min(page, Ordering::SeqCst);
        self.hi.fetch_max(page + 0x1000, Ordering::SeqCst);
        self.gen.load(Ordering::SeqCst)
    }
}

impl MmuNotifier for CodeWatch {
    fn invalidate_range_start(&self, range: &Range) -> Result<(), Again> {
        let changes_code =
            matches!(range.event, Event::Unmap | Event::Clear | Event::Protection | Event::Release | Event::Restore);
        if changes_code && range.start < self.hi.load(Ordering::SeqCst) && range.end > self.lo.load(Ordering::SeqCst) {
            self.gen.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn invalidate_range_end(&self, _range: &Range) {}
}

/// One hart's cache.
pub struct ICache {
    watch: Arc<CodeWatch>,
    /// The generation the cached pages were filled under.
    seen: u64,
    index: HashMap<u64, usize>,
    pages: Vec<Box<[Op; SLOTS + PAGE_END_OPS]>>,
    /// Per page, each slot's kind for fusion (0: none or not filled; see
    /// [`crate::threaded::fused`]).
    kinds: Vec<[u8; SLOTS]>,
    /// The decoded instructions (and their raw bits) of the cached ops the
    /// generic executor runs, by the index those ops hold.
    generic: Vec<(Inst, u32)>,
    /// The page of the last lookup, as (page number + 1, index); 0: none.
    last: (u64, usize),
    /// (page number + 1, index) by page number modulo [`RECENT`]: code
    /// that calls between a few hundred pages (an interpreter's dispatch
    /// loop and its helpers) finds them here without hashing.
    recent: Box<[(u64, usize); RECENT]>,
}

/// A fill in progress: the generation read before the fetch.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl ICache {
    pub fn new(watch: Arc<CodeWatch>) -> ICache {
        let seen = watch.gen.load(Ordering::SeqCst);
        ICache {
            watch,
            seen,
            index: HashMap::new(),
            pages: Vec::new(),
            kinds: Vec::new(),
            generic: Vec::new(),
            last: (0, 0),
            recent: Box::new([(0, 0); RECENT]),
        }
    }

    /// Forget everything (this hart's `fence.i`).
    pub fn flush(&mut self) {
        self.index.clear();
        self.pages.clear();
        self.kinds.clear();
        self.generic.clear();
        self.last = (0, 0);
        self.recent.fill((0, 0));
    }

    /// The watch this cache follows.
    pub fn watch(&self) -> &Arc<CodeWatch> {
        &self.watch
    }

    /// Whether an invalidation came since the cache was last checked.
    #[inline(always)]
    pub fn stale(&self) -> bool {
        self.watch.gen.load(Ordering::Acquire) != self.seen
    }

    /// The generation the cached pages were filled under (what
    /// [`stale`](Self::stale) compares with; it changes only in
    /// [`page`](Self::page), [`fill`](Self::fill)).
    #[inline(always)]
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The ops of the page of `pc` (slots not filled yet hold
    /// [`Op::FILL`]), after dropping everything if an invalidation came.
    /// The pointer is to `SLOTS` ops (one per 2-byte offset), then
    /// [`Op::PAGE_END`] ops, and stays valid until the next
    /// [`flush`](Self::flush) or [`fill`](Self::fill).
    #[inline]
    pub fn page(&mut self, pc: u64) -> *const Op {
        if self.stale() {
            self.flush();
            self.seen = self.watch.gen.load(Ordering::Acquire);
        }
        let tag = (pc >> 12) + 1;
        let i = if self.last.0 == tag {
            self.last.1
        } else {
            let r = self.recent[tag as usize % RECENT];
            let i = if r.0 == tag { r.1 } else { self.index_of(tag) };
            self.recent[tag as usize % RECENT] = (tag, i);
            self.last = (tag, i);
            i
        };
        self.pages[i].as_ptr()
    }

    /// The index of page `tag`, made if missing.
    fn index_of(&mut self, tag: u64) -> usize {
        if let Some(&i) = self.index.get(&tag) {
            return i;
        }
        if self.pages.len() >= MAX_PAGES {
            self.flush();
        }
        let mut ops = vec![Op::FILL; SLOTS + PAGE_END_OPS];
        ops[SLOTS..].fill(Op::PAGE_END);
        let fresh: Box<[Op; SLOTS + PAGE_END_OPS]> = match ops.into_boxed_slice().try_into() {
            Ok(b) => b,
            Err(_) => unreachable!("a vector of SLOTS ops"),
        };
        self.pages.push(fresh);
        self.kinds.push([0; SLOTS]);
        self.index.insert(tag, self.pages.len() - 1);
        self.pages.len() - 1
    }

    /// Before fetching `pc` for a fill.
    #[inline]
    pub fn begin_fill(&self, pc: u64) -> Ticket {
        Ticket(self.watch.watch_page(pc))
    }

    /// Cache what the fetch begun with `ticket` found, unless an
    /// invalidation came in between or the instruction crosses a page.
    pub fn fill(&mut self, ticket: Ticket, pc: u64, inst: Inst, raw: u32) {
        let len = crate::decode::inst_len(raw);
        if (pc & 0xfff) + len > 0x1000 || self.watch.gen.load(Ordering::SeqCst) != ticket.0 {
            return;
        }
        if ticket.0 != self.seen {
            self.flush();
            self.seen = ticket.0;
        }
        let tag = (pc >> 12) + 1;
        let i = self.index_of(tag);
        let slot = ((pc & 0xfff) >> 1) as usize;
        if self.kinds[i][slot] != 0 {
            // Filled already (the op before it may be fused with it).
            return;
        }
        let generic = &mut self.generic;
        let (op, kind) = compile(inst, raw, pc, |inst, raw| {
            generic.push((inst, raw));
            (generic.len() - 1) as u32
        });
        self.pages[i][slot] = op;
        self.kinds[i][slot] = kind;
        // Fuse it with the instructions after it, and the ones up to two
        // instructions (at most 8 bytes) before it with it.
        for s in slot.saturating_sub(4)..=slot {
            self.fuse(i, s);
        }
    }

    /// Give the op in `slot` of page `i` the handler of its three or pair
    /// with the instructions right after it, if they are filled and fused.
    /// (A slot is filled once until the page is dropped, so a fused op's
    /// successors keep the ops it was made for.)
    fn fuse(&mut self, i: usize, slot: usize) {
        let kinds = &self.kinds[i];
        let after = |s: usize| s + if kinds[s] & KIND_LEN4 != 0 { 2 } else { 1 };
        let a = kinds[slot];
        if a == 0 {
            return;
        }
        let b_slot = after(slot);
        let Some(&b) = kinds.get(b_slot) else { return };
        if b == 0 {
            return;
        }
        let c = kinds.get(after(b_slot)).copied().unwrap_or(0);
        let f = if c == 0 { None } else { fused3(a, b, c) };
        if let Some(f) = f.or_else(|| fused(a, b)) {
            self.pages[i][slot].f = f;
        }
    }

    /// The instruction a generic op holding `index` runs, and its raw bits.
    #[inline]
    pub fn generic(&self, index: u32) -> Option<(Inst, u32)> {
        self.generic.get(index as usize).copied()
    }
}
