//! Chaos model test: one proptest state machine whose steps mix futex waits
//! and wakes (both key modes, chosen per case), fork, copy-on-write writes,
//! exit, munmap, `madvise(DONTNEED)`, mprotect, reclaim to an in-memory swap
//! device under a frame limit, migration and compaction (which may fail),
//! pins, and a subscribed MMU notifier (a shadow TLB), each step checked
//! against a reference model built without looking at softmm's internals:
//!
//! - **Bytes.** Every mapped page has exact contents in the model; after
//!   every step each page that is resident is read through its frame and
//!   compared, explicit `Read` steps read through `Mm::read` (swapping in),
//!   and the end of each case reads everything.
//! - **Page identity.** Each private page with a frame of its own has a
//!   logical id (never a frame number). Fork gives the child the same ids,
//!   except for pages pinned then, which the child gets a copy of. A write
//!   (or anything that faults for writing, or a pin) to a page whose id is
//!   mapped by more than one (space, page) gives it a new id; if only the
//!   writer maps it, the id stays. A hole has no id; DONTNEED, munmap and
//!   exit remove mappings of ids. mprotect, reclaim and migration never
//!   change ids. After every step: two present mappings of one id map one
//!   frame, different ids map different frames, holes map nothing or the
//!   zero frame, and a pinned page stays on its pinned frame.
//! - **Waiters.** Physical keys: a waiter is keyed by the id of its page
//!   when it waits (a wait on a hole in a writable mapping faults it in; in
//!   a read-only mapping it is keyed by (space, address) while its page is a
//!   hole), and follows its page to new ids until the page is removed from
//!   its space; it then stays with the id it had. Linux keys: private words
//!   by (space, address), shared words by (object, offset). In both modes a
//!   space's exit ends every wait it started (`WaitState::Exited`, as
//!   Linux's exit ends the threads that wait) and no other. A wake through (space, address)
//!   must wake exactly min(max(n, 1), reachable) waiters, all reachable;
//!   no waiter may be woken by anything else.
//! - **Notifier.** A shadow TLB caches each subscribed space's translations
//!   between steps and drops what `invalidate_range_start` names; every
//!   bracket must be closed after a step, and no cached translation may
//!   differ from the page table (a change nobody was told about).
//!
//! `check_invariants` audits the machine after every step.
//!
//! Budget: `PROPTEST_CASES` (default 2,000 in release builds, 200 in debug)
//! cases of up to `CHAOS_STEPS` (default 100) steps. `CHAOS_REPORT=1` prints
//! the total number of steps and what they did at the end (run with
//! `--nocapture`). `CHAOS_RECLAIM=0` leaves out the frame limit, reclaim,
//! migration and compaction (a check of the model itself); `CHAOS_SKIP`
//! names kinds of steps to leave out (`CHAOS_SKIP=Reclaim,Evacuate`);
//! `CHAOS_KEYS=physical` or `linux` runs one key mode only.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner};
use softmm::futex::{WaitState, BITSET_MATCH_ANY};
use softmm::notifier::{Again, Event, MmuNotifier, Range};
use softmm::reclaim::device::MemSwap;
use softmm::{
    errno, Advice, Config, Error, ForkPolicy, FrameId, FutexKeys, FutexWaiter, Machine, MapKind, Mm, PinnedPages,
    Placement, Prot, SegvKind, Subscription, SwapConfig, ZERO_FRAME,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const PAGE: u64 = 4096;
/// Private anonymous pages `[PRIV, PRIV + NPRIV pages)`.
const PRIV: u64 = 0x1000_0000;
const NPRIV: usize = 6;
/// Shared anonymous pages (one object) after a one-page gap.
const SHARED: u64 = PRIV + (NPRIV as u64 + 2) * PAGE;
const NSH: usize = 2;
const NPAGES: usize = NPRIV + NSH;
/// Word offsets within a page that futex ops and word writes use.
const OFFS: [u64; 3] = [0, 8, 4092];
/// Frame limit (data, page tables and swap cache) when reclaim is on.
const LIMIT_FRAMES: u64 = 40;
const MAX_LIVE: usize = 4;
const MAX_SPACES: usize = 10;
const MAX_WAITERS: usize = 10;
const MAX_PINS: usize = 3;
/// Model ids of the shared object's pages are 1..=NSH; private ids start here.
const FIRST_PRIVATE_ID: u64 = 16;

// ---------------------------------------------------------------------------
// Operations (indices are resolved modulo what exists when the step runs)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Op {
    Wait {
        s: u8,
        pg: u8,
        off: u8,
        matches: bool,
    },
    Wake {
        s: u8,
        pg: u8,
        off: u8,
        n: u32,
    },
    /// A wake through space `s` at the word waiter `j` waited on.
    WakeAt {
        j: u8,
        s: u8,
        n: u32,
    },
    Cancel {
        j: u8,
    },
    Fork {
        s: u8,
        copy_tables: bool,
        subscribe: bool,
    },
    Exit {
        s: u8,
    },
    /// A u32 store to a futex word.
    Write {
        s: u8,
        pg: u8,
        off: u8,
        v: u32,
    },
    /// 24 bytes of pattern somewhere in the page (not only words).
    Scribble {
        s: u8,
        pg: u8,
        at: u16,
        seed: u8,
    },
    Read {
        s: u8,
        pg: u8,
    },
    Munmap {
        s: u8,
        pg: u8,
    },
    /// mmap a fresh private page over a private slot (`Placement::Fixed`).
    Remap {
        s: u8,
        pg: u8,
    },
    DontNeed {
        s: u8,
        pg: u8,
    },
    Mprotect {
        s: u8,
        pg: u8,
        ro: bool,
    },
    Reclaim {
        k: u8,
    },
    Migrate {
        s: u8,
        pg: u8,
    },
    Evacuate {
        lo: u8,
        len: u8,
    },
    Pin {
        s: u8,
        pg: u8,
        write: bool,
    },
    Unpin {
        j: u8,
    },
    /// Subscribe a shadow TLB, or drop the subscription if there is one.
    Subscribe {
        s: u8,
    },
}

impl Op {
    fn is_reclaim(&self) -> bool {
        matches!(self, Op::Reclaim { .. } | Op::Migrate { .. } | Op::Evacuate { .. })
    }
}

fn op() -> impl Strategy<Value = Op> {
    let s = any::<u8>;
    let pg = || 0u8..NPAGES as u8;
    let off = || 0u8..OFFS.len() as u8;
    prop_oneof![
        6 => (s(), pg(), off(), prop::bool::weighted(0.85))
            .prop_map(|(s, pg, off, matches)| Op::Wait { s, pg, off, matches }),
        6 => (s(), pg(), off(), 0u32..4).prop_map(|(s, pg, off, n)| Op::Wake { s, pg, off, n }),
        4 => (s(), s(), 0u32..4).prop_map(|(j, s, n)| Op::WakeAt { j, s, n }),
        1 => s().prop_map(|j| Op::Cancel { j }),
        3 => (s(), any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(s, copy_tables, subscribe)| Op::Fork { s, copy_tables, subscribe }),
        1 => s().prop_map(|s| Op::Exit { s }),
        6 => (s(), pg(), off(), 0u32..3).prop_map(|(s, pg, off, v)| Op::Write { s, pg, off, v }),
        2 => (s(), pg(), 0u16..(PAGE as u16 - 24), any::<u8>())
            .prop_map(|(s, pg, at, seed)| Op::Scribble { s, pg, at, seed }),
        2 => (s(), pg()).prop_map(|(s, pg)| Op::Read { s, pg }),
        1 => (s(), pg()).prop_map(|(s, pg)| Op::Munmap { s, pg }),
        1 => (s(), pg()).prop_map(|(s, pg)| Op::Remap { s, pg }),
        2 => (s(), pg()).prop_map(|(s, pg)| Op::DontNeed { s, pg }),
        2 => (s(), pg(), any::<bool>()).prop_map(|(s, pg, ro)| Op::Mprotect { s, pg, ro }),
        3 => (1u8..24).prop_map(|k| Op::Reclaim { k }),
        3 => (s(), pg()).prop_map(|(s, pg)| Op::Migrate { s, pg }),
        1 => (any::<u8>(), 1u8..64).prop_map(|(lo, len)| Op::Evacuate { lo, len }),
        2 => (s(), pg(), any::<bool>()).prop_map(|(s, pg, write)| Op::Pin { s, pg, write }),
        1 => s().prop_map(|j| Op::Unpin { j }),
        1 => s().prop_map(|s| Op::Subscribe { s }),
    ]
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn reclaim_on() -> bool {
    env_num("CHAOS_RECLAIM") != Some(0)
}

fn case() -> impl Strategy<Value = (FutexKeys, Vec<Op>)> {
    let steps = env_num("CHAOS_STEPS").unwrap_or(100).max(1) as usize;
    let keys = match std::env::var("CHAOS_KEYS").ok().and_then(|k| k.parse().ok()) {
        Some(k) => Just(k).boxed(),
        None => prop_oneof![Just(FutexKeys::Physical), Just(FutexKeys::Linux)].boxed(),
    };
    let ops = prop::collection::vec(op(), 1..=steps);
    let skip: Vec<String> = std::env::var("CHAOS_SKIP").unwrap_or_default().split(',').map(str::to_owned).collect();
    (keys, ops).prop_map(move |(k, ops)| {
        let keep = |o: &Op| {
            let name = format!("{o:?}");
            let name = name.split(' ').next().unwrap_or_default();
            (reclaim_on() || !o.is_reclaim()) && !skip.iter().any(|s| s == name)
        };
        (k, ops.into_iter().filter(keep).collect())
    })
}

// ---------------------------------------------------------------------------
// The shadow TLB (an MMU notifier subscriber)
// ---------------------------------------------------------------------------

#[derive(Default)]
struct ShadowState {
    /// Page address -> frame, filled between steps from `phys`.
    tlb: BTreeMap<u64, FrameId>,
    open: Vec<(u64, u64, Event)>,
    releases: u32,
    errors: Vec<String>,
}

#[derive(Default)]
struct Shadow {
    st: Mutex<ShadowState>,
}

impl MmuNotifier for Shadow {
    fn invalidate_range_start(&self, r: &Range) -> Result<(), Again> {
        let mut st = self.st.lock().unwrap();
        if st.releases > 0 {
            st.errors.push(format!("start {r:?} after release"));
        }
        if r.start >= r.end {
            st.errors.push(format!("empty range {r:?}"));
        }
        st.tlb.retain(|&va, _| !(r.start..r.end).contains(&va));
        st.open.push((r.start, r.end, r.event));
        Ok(())
    }

    fn invalidate_range_end(&self, r: &Range) {
        let mut st = self.st.lock().unwrap();
        match st.open.iter().position(|&o| o == (r.start, r.end, r.event)) {
            Some(i) => {
                st.open.remove(i);
            }
            None => st.errors.push(format!("end {r:?} without its start")),
        }
    }

    fn release(&self) {
        let mut st = self.st.lock().unwrap();
        st.releases += 1;
        st.tlb.clear();
    }
}

impl Shadow {
    /// Between steps: every bracket closed, nothing wrong seen.
    fn settled(&self) -> Result<(), String> {
        let st = self.st.lock().unwrap();
        if let Some(e) = st.errors.first() {
            return Err(format!("shadow TLB: {e}"));
        }
        if !st.open.is_empty() {
            return Err(format!("shadow TLB: brackets left open: {:x?}", st.open));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Slot {
    mapped: bool,
    ro: bool,
    /// Private pages: the id of the page's own frame (None: a hole).
    /// Shared pages: unused (the object's page id is fixed).
    id: Option<u64>,
}

struct Space {
    mm: Mm,
    slots: [Slot; NPAGES],
    /// Dropped after `mm` (field order).
    shadow: Option<(Subscription, Arc<Shadow>)>,
}

/// What the model says a waiter is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WKey {
    /// Physical: the page with this id, at this offset.
    Id(u64, u64),
    /// Physical: a hole of a read-only private mapping, (space, page, off).
    Hole(usize, usize, u64),
    /// Linux: a private word, (space, address).
    LinuxPrivate(usize, u64),
    /// Linux: a shared word, (object page, offset).
    LinuxShared(usize, u64),
}

struct ModelWaiter {
    h: FutexWaiter,
    /// The space that started the wait: its exit ends the wait.
    owner: usize,
    key: WKey,
    /// Physical keys: the (space, page) whose id changes it follows.
    follows: Option<(usize, usize)>,
    /// The (page, offset) it waited on.
    word: (usize, u64),
    what: String,
}

struct ModelPin {
    h: PinnedPages,
    id: u64,
    frame: FrameId,
    what: String,
}

#[derive(Default)]
struct Tally {
    steps: AtomicU64,
    cases: AtomicU64,
    waits_queued: AtomicU64,
    woken: AtomicU64,
    swap_outs: AtomicU64,
    swap_ins: AtomicU64,
    migrations: AtomicU64,
    migrate_busy: AtomicU64,
    migrate_no_memory: AtomicU64,
    cow_copies: AtomicU64,
    fork_pinned_copies: AtomicU64,
}

static TALLY: Tally = Tally {
    steps: AtomicU64::new(0),
    cases: AtomicU64::new(0),
    waits_queued: AtomicU64::new(0),
    woken: AtomicU64::new(0),
    swap_outs: AtomicU64::new(0),
    swap_ins: AtomicU64::new(0),
    migrations: AtomicU64::new(0),
    migrate_busy: AtomicU64::new(0),
    migrate_no_memory: AtomicU64::new(0),
    cow_copies: AtomicU64::new(0),
    fork_pinned_copies: AtomicU64::new(0),
};

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

type Res = Result<(), String>;

macro_rules! ensure {
    ($c:expr, $($msg:tt)*) => {
        if !$c {
            return Err(format!($($msg)*));
        }
    };
}

static ZEROS: [u8; PAGE as usize] = [0; PAGE as usize];

fn addr_of(pg: usize) -> u64 {
    if pg < NPRIV {
        PRIV + pg as u64 * PAGE
    } else {
        SHARED + (pg - NPRIV) as u64 * PAGE
    }
}

fn shm_id(pg: usize) -> u64 {
    (pg - NPRIV) as u64 + 1
}

fn is_private(pg: usize) -> bool {
    pg < NPRIV
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i as u8).wrapping_mul(29)) | 0x80).collect()
}

fn is_segv(r: &softmm::Result<impl Sized>, addr: u64, kind: SegvKind) -> bool {
    matches!(r, Err(Error::Segv { addr: a, kind: k }) if *a == addr && *k == kind)
}

fn errno_is<T>(r: &softmm::Result<T>, e: i32) -> bool {
    matches!(r, Err(x) if x.errno() == e)
}

struct World {
    m: Machine,
    keys: FutexKeys,
    spaces: Vec<Option<Space>>,
    contents: HashMap<u64, Vec<u8>>,
    next_id: u64,
    waiters: Vec<ModelWaiter>,
    pins: Vec<ModelPin>,
}

impl World {
    fn new(keys: FutexKeys) -> Result<World, String> {
        let swap = MemSwap::new(2 << 20).map_err(|e| e.to_string())?;
        let m = Machine::new(Config {
            arena_bytes: 32 << 20,
            prezero: false,
            cpu_caches: 1,
            futex_keys: keys,
            mem_limit: reclaim_on().then_some(LIMIT_FRAMES * PAGE),
            swap: SwapConfig::Device(Arc::new(swap)),
            background_reclaim: false,
            ..Config::default()
        })
        .map_err(|e| e.to_string())?;
        let mm = m.new_mm().map_err(|e| e.to_string())?;
        mm.mmap(PRIV, NPRIV as u64 * PAGE, Prot::RW, MapKind::Private, Placement::Fixed).map_err(|e| e.to_string())?;
        mm.mmap(SHARED, NSH as u64 * PAGE, Prot::RW, MapKind::Shared, Placement::Fixed).map_err(|e| e.to_string())?;
        let mut contents = HashMap::new();
        for pg in NPRIV..NPAGES {
            contents.insert(shm_id(pg), vec![0u8; PAGE as usize]);
        }
        let slots = [Slot { mapped: true, ro: false, id: None }; NPAGES];
        Ok(World {
            m,
            keys,
            spaces: vec![Some(Space { mm, slots, shadow: None })],
            contents,
            next_id: FIRST_PRIVATE_ID,
            waiters: Vec::new(),
            pins: Vec::new(),
        })
    }

    fn physical(&self) -> bool {
        self.keys == FutexKeys::Physical
    }

    fn live_list(&self) -> Vec<usize> {
        (0..self.spaces.len()).filter(|&j| self.spaces[j].is_some()).collect()
    }

    fn live(&self, i: u8) -> Option<usize> {
        let live = self.live_list();
        (!live.is_empty()).then(|| live[i as usize % live.len()])
    }

    fn sp(&self, s: usize) -> &Space {
        self.spaces[s].as_ref().expect("live space")
    }

    fn slot(&self, s: usize, pg: usize) -> Slot {
        self.sp(s).slots[pg]
    }

    /// The model id of (s, pg) now: private pages their own, shared pages
    /// the object's (when mapped).
    fn id_of(&self, s: usize, pg: usize) -> Option<u64> {
        let sl = self.slot(s, pg);
        if !sl.mapped {
            return None;
        }
        if is_private(pg) {
            sl.id
        } else {
            Some(shm_id(pg))
        }
    }

    fn bytes(&self, id: Option<u64>) -> &[u8] {
        match id {
            Some(id) => &self.contents[&id],
            None => &ZEROS,
        }
    }

    fn word(&self, s: usize, pg: usize, off: u64) -> u32 {
        let b = self.bytes(self.id_of(s, pg));
        u32::from_ne_bytes(b[off as usize..off as usize + 4].try_into().unwrap())
    }

    /// How many live (space, page) map private id `id` (swapped out or not).
    fn mapcount(&self, id: u64) -> usize {
        self.spaces
            .iter()
            .flatten()
            .flat_map(|sp| sp.slots[..NPRIV].iter())
            .filter(|sl| sl.mapped && sl.id == Some(id))
            .count()
    }

    fn pinned(&self, id: u64) -> bool {
        self.pins.iter().any(|p| p.id == id)
    }

    fn new_id(&mut self, from: Option<u64>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = self.bytes(from).to_vec();
        self.contents.insert(id, bytes);
        id
    }

    /// Set private (s, pg)'s id; waiters following the page follow it to a
    /// new id, and stop following when the page goes.
    fn set_id(&mut self, s: usize, pg: usize, id: Option<u64>) {
        self.spaces[s].as_mut().expect("live").slots[pg].id = id;
        for w in &mut self.waiters {
            if w.follows != Some((s, pg)) {
                continue;
            }
            match id {
                Some(id) => {
                    let off = match w.key {
                        WKey::Id(_, off) | WKey::Hole(_, _, off) => off,
                        k => unreachable!("a following waiter keyed {k:?}"),
                    };
                    w.key = WKey::Id(id, off);
                }
                None => w.follows = None,
            }
        }
    }

    /// A page removed from (s, pg): private memory loses its id.
    fn remove(&mut self, s: usize, pg: usize) {
        if is_private(pg) {
            self.set_id(s, pg, None);
        }
    }

    /// What a write fault (or an unshare, or a pin) does to private
    /// (s, pg), which is mapped writable or being pinned: a hole gets a new
    /// page, a page mapped elsewhere too is copied, an exclusive one reused.
    fn write_fault(&mut self, s: usize, pg: usize) {
        debug_assert!(is_private(pg));
        let old = self.slot(s, pg).id;
        let new = match old {
            None => self.new_id(None),
            Some(x) if self.mapcount(x) > 1 => {
                bump(&TALLY.cow_copies, 1);
                self.new_id(Some(x))
            }
            Some(x) => x,
        };
        if old != Some(new) {
            self.set_id(s, pg, Some(new));
        }
    }

    fn mm(&self, s: usize) -> &Mm {
        &self.sp(s).mm
    }

    fn step(&mut self, op: &Op) -> Res {
        match *op {
            Op::Wait { s, pg, off, matches } => self.wait(s, pg as usize, OFFS[off as usize], matches)?,
            Op::Wake { s, pg, off, n } => self.wake(s, pg as usize, OFFS[off as usize], n)?,
            Op::WakeAt { j, s, n } => {
                if !self.waiters.is_empty() {
                    let (pg, off) = self.waiters[j as usize % self.waiters.len()].word;
                    self.wake(s, pg, off, n)?;
                }
            }
            Op::Cancel { j } => {
                if !self.waiters.is_empty() {
                    let w = self.waiters.remove(j as usize % self.waiters.len());
                    ensure!(w.h.state() == WaitState::Waiting, "{} was {:?} when cancelled", w.what, w.h.state());
                    ensure!(w.h.cancel() == WaitState::Cancelled, "{}: cancel did not cancel", w.what);
                }
            }
            Op::Fork { s, copy_tables, subscribe } => self.fork(s, copy_tables, subscribe)?,
            Op::Exit { s } => self.exit(s)?,
            Op::Write { s, pg, off, v } => {
                let Some(s) = self.live(s) else { return Ok(()) };
                self.write(s, pg as usize, OFFS[off as usize], &v.to_ne_bytes())?;
            }
            Op::Scribble { s, pg, at, seed } => {
                let Some(s) = self.live(s) else { return Ok(()) };
                self.write(s, pg as usize, u64::from(at), &pattern(seed, 24))?;
            }
            Op::Read { s, pg } => {
                let Some(s) = self.live(s) else { return Ok(()) };
                self.read_page(s, pg as usize, "read")?;
            }
            Op::Munmap { s, pg } => {
                let Some(s) = self.live(s) else { return Ok(()) };
                let pg = pg as usize;
                self.mm(s).munmap(addr_of(pg), PAGE).map_err(|e| format!("munmap: {e}"))?;
                self.remove(s, pg);
                self.spaces[s].as_mut().expect("live").slots[pg].mapped = false;
            }
            Op::Remap { s, pg } => {
                let Some(s) = self.live(s) else { return Ok(()) };
                let pg = pg as usize;
                if !is_private(pg) {
                    return Ok(());
                }
                self.mm(s)
                    .mmap(addr_of(pg), PAGE, Prot::RW, MapKind::Private, Placement::Fixed)
                    .map_err(|e| format!("mmap: {e}"))?;
                self.remove(s, pg);
                self.spaces[s].as_mut().expect("live").slots[pg] = Slot { mapped: true, ro: false, id: None };
            }
            Op::DontNeed { s, pg } => {
                let Some(s) = self.live(s) else { return Ok(()) };
                let pg = pg as usize;
                let r = self.mm(s).madvise(addr_of(pg), PAGE, Advice::DontNeed);
                if self.slot(s, pg).mapped {
                    r.map_err(|e| format!("madvise: {e}"))?;
                    self.remove(s, pg);
                } else {
                    ensure!(errno_is(&r, errno::ENOMEM), "madvise of a hole in the map: {r:?}");
                }
            }
            Op::Mprotect { s, pg, ro } => {
                let Some(s) = self.live(s) else { return Ok(()) };
                let pg = pg as usize;
                let prot = if ro { Prot::READ } else { Prot::RW };
                let r = self.mm(s).mprotect(addr_of(pg), PAGE, prot);
                if self.slot(s, pg).mapped {
                    r.map_err(|e| format!("mprotect: {e}"))?;
                    self.spaces[s].as_mut().expect("live").slots[pg].ro = ro;
                } else {
                    ensure!(errno_is(&r, errno::ENOMEM), "mprotect of a hole in the map: {r:?}");
                }
            }
            Op::Reclaim { k } => {
                let before = self.m.stats().swap_outs;
                self.m.reclaim(k as usize);
                bump(&TALLY.swap_outs, self.m.stats().swap_outs - before);
            }
            Op::Migrate { s, pg } => self.migrate(s, pg as usize)?,
            Op::Evacuate { lo, len } => {
                let lo = u32::from(lo);
                let (moved, _) = self.m.evacuate(lo..lo + u32::from(len));
                bump(&TALLY.migrations, moved);
            }
            Op::Pin { s, pg, write } => self.pin(s, pg as usize, write)?,
            Op::Unpin { j } => {
                if !self.pins.is_empty() {
                    self.pins.remove(j as usize % self.pins.len());
                }
            }
            Op::Subscribe { s } => {
                let Some(s) = self.live(s) else { return Ok(()) };
                let sp = self.spaces[s].as_mut().expect("live");
                match sp.shadow.take() {
                    Some((sub, shadow)) => {
                        drop(sub);
                        shadow.settled()?;
                    }
                    None => {
                        let shadow = Arc::new(Shadow::default());
                        sp.shadow = Some((sp.mm.register_notifier(shadow.clone()), shadow));
                    }
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, s: usize, pg: usize, off: u64, data: &[u8]) -> Res {
        let addr = addr_of(pg) + off;
        let sl = self.slot(s, pg);
        let r = self.mm(s).write(addr, data);
        if !sl.mapped {
            ensure!(is_segv(&r, addr, SegvKind::MapErr), "write to unmapped {addr:#x}: {r:?}");
            return Ok(());
        }
        if sl.ro {
            ensure!(is_segv(&r, addr, SegvKind::AccErr), "write to read-only {addr:#x}: {r:?}");
            return Ok(());
        }
        r.map_err(|e| format!("write {addr:#x}: {e}"))?;
        if is_private(pg) {
            self.write_fault(s, pg);
        }
        let id = self.id_of(s, pg).expect("written page has an id");
        let page = self.contents.get_mut(&id).expect("contents");
        page[off as usize..off as usize + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// Read (s, pg) through `Mm::read` (faulting, swapping in) and compare.
    fn read_page(&mut self, s: usize, pg: usize, what: &str) -> Res {
        let addr = addr_of(pg);
        let mut buf = vec![0u8; PAGE as usize];
        let r = self.mm(s).read(addr, &mut buf);
        if !self.slot(s, pg).mapped {
            ensure!(is_segv(&r, addr, SegvKind::MapErr), "{what} of unmapped {addr:#x}: {r:?}");
            return Ok(());
        }
        r.map_err(|e| format!("{what} {addr:#x}: {e}"))?;
        let want = self.bytes(self.id_of(s, pg));
        if buf != want {
            let at = buf.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!(
                "{what}: space {s} byte {:#x} is {:#04x}, the model says {:#04x} (page id {:?})",
                addr + at as u64,
                buf[at],
                want[at],
                self.id_of(s, pg)
            ));
        }
        Ok(())
    }

    /// The key a wait or wake through (s, pg, off) uses, after the faults
    /// that call makes; Err(()) when the call must fail with EFAULT.
    fn resolve(&mut self, s: usize, pg: usize, off: u64, wait: bool) -> Result<WKey, ()> {
        let sl = self.slot(s, pg);
        if !sl.mapped {
            return Err(());
        }
        let addr = addr_of(pg) + off;
        if !is_private(pg) {
            return Ok(if self.physical() { WKey::Id(shm_id(pg), off) } else { WKey::LinuxShared(pg - NPRIV, off) });
        }
        if self.physical() {
            // Waits fault a hole in (for writing where allowed); wakes
            // never fault.
            if sl.id.is_none() && wait && !sl.ro {
                self.write_fault(s, pg);
            }
            return Ok(match self.slot(s, pg).id {
                Some(id) => WKey::Id(id, off),
                None => WKey::Hole(s, pg, off),
            });
        }
        // Linux keys: GUP for writing (breaks COW, fills holes); a private
        // word that cannot be written is EFAULT.
        if sl.ro {
            return Err(());
        }
        self.write_fault(s, pg);
        Ok(WKey::LinuxPrivate(s, addr))
    }

    fn wait(&mut self, s: u8, pg: usize, off: u64, matches: bool) -> Res {
        let Some(s) = self.live(s) else { return Ok(()) };
        if self.waiters.len() >= MAX_WAITERS {
            return Ok(());
        }
        let addr = addr_of(pg) + off;
        let cur = if self.slot(s, pg).mapped { self.word(s, pg, off) } else { 0 };
        let val = if matches { cur } else { cur.wrapping_add(1) };
        let r = self.mm(s).futex_wait_start(addr, val, BITSET_MATCH_ANY);
        let key = match self.resolve(s, pg, off, true) {
            Err(()) => {
                ensure!(errno_is(&r, errno::EFAULT), "wait at {addr:#x} of space {s}: {:?}, want EFAULT", r.err());
                return Ok(());
            }
            Ok(k) => k,
        };
        match r {
            Ok(h) => {
                ensure!(matches, "wait at {addr:#x} queued although the word is {cur}, not {val}");
                let follows = (self.physical() && is_private(pg)).then_some((s, pg));
                let what = format!("waiter of space {s} at {addr:#x} (keyed {key:?} when it waited)");
                self.waiters.push(ModelWaiter { h, owner: s, key, follows, word: (pg, off), what });
                bump(&TALLY.waits_queued, 1);
            }
            Err(e) => ensure!(!matches && e == Error::Again, "wait at {addr:#x} for {val} (word {cur}): {e}"),
        }
        Ok(())
    }

    fn wake(&mut self, s: u8, pg: usize, off: u64, n: u32) -> Res {
        let Some(s) = self.live(s) else { return Ok(()) };
        let addr = addr_of(pg) + off;
        let r = self.mm(s).futex_wake(addr, n);
        let key = match self.resolve(s, pg, off, false) {
            Err(()) => {
                ensure!(errno_is(&r, errno::EFAULT), "wake at {addr:#x} of space {s}: {r:?}, want EFAULT");
                return Ok(());
            }
            Ok(k) => k,
        };
        let got = r.map_err(|e| format!("wake at {addr:#x} of space {s}: {e}"))?;
        let reachable: Vec<usize> = (0..self.waiters.len()).filter(|&j| self.waiters[j].key == key).collect();
        let woken: Vec<usize> =
            (0..self.waiters.len()).filter(|&j| self.waiters[j].h.state() == WaitState::Woken).collect();
        let describe = |v: &[usize]| v.iter().map(|&j| self.waiters[j].what.clone()).collect::<Vec<_>>();
        let want = reachable.len().min(n.max(1) as usize);
        ensure!(
            got as usize == woken.len(),
            "wake at {addr:#x} of space {s} says {got} woken, {} are: {:?}",
            woken.len(),
            describe(&woken)
        );
        ensure!(
            woken.len() == want && woken.iter().all(|j| reachable.contains(j)),
            "wake({n}) at {addr:#x} of space {s} (model key {key:?}) woke {:?}; the model says it reaches {:?}",
            describe(&woken),
            describe(&reachable)
        );
        bump(&TALLY.woken, woken.len() as u64);
        for j in woken.into_iter().rev() {
            let w = self.waiters.remove(j);
            w.h.wait(None).map_err(|e| format!("{}: woken, but its wait ends with {e}", w.what))?;
        }
        Ok(())
    }

    fn fork(&mut self, s: u8, copy_tables: bool, subscribe: bool) -> Res {
        let Some(s) = self.live(s) else { return Ok(()) };
        if self.live_list().len() >= MAX_LIVE || self.spaces.len() >= MAX_SPACES {
            return Ok(());
        }
        let policy = if copy_tables { ForkPolicy::CopyTables } else { ForkPolicy::SharedTables };
        let child = self.mm(s).fork_with(policy).map_err(|e| format!("fork: {e}"))?;
        let mut slots = self.sp(s).slots;
        for sl in slots[..NPRIV].iter_mut() {
            if let Some(id) = sl.id.filter(|&id| sl.mapped && self.pinned(id)) {
                // A pinned page is copied for the child at fork.
                sl.id = Some(self.new_id(Some(id)));
                bump(&TALLY.fork_pinned_copies, 1);
            }
        }
        let shadow = subscribe.then(|| {
            let sh = Arc::new(Shadow::default());
            (child.register_notifier(sh.clone()), sh)
        });
        self.spaces.push(Some(Space { mm: child, slots, shadow }));
        Ok(())
    }

    fn exit(&mut self, s: u8) -> Res {
        let Some(s) = self.live(s) else { return Ok(()) };
        for pg in 0..NPRIV {
            self.set_id(s, pg, None);
        }
        let sp = self.spaces[s].take().expect("live");
        let shadow = sp.shadow.as_ref().map(|(_, sh)| sh.clone());
        drop(sp);
        // The exit ends every wait the space started (as Linux's exit ends
        // its threads), and no other.
        let (ended, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters).into_iter().partition(|w| w.owner == s);
        self.waiters = kept;
        for w in ended {
            ensure!(w.h.state() == WaitState::Exited, "{} is {:?} after its space exited", w.what, w.h.state());
            ensure!(matches!(w.h.wait(None), Err(Error::Exited)), "a wait of an exited space ends with Exited");
        }
        if let Some(sh) = shadow {
            sh.settled()?;
            let releases = sh.st.lock().unwrap().releases;
            ensure!(releases == 1, "shadow TLB: {releases} releases at exit");
        }
        Ok(())
    }

    fn migrate(&mut self, s: u8, pg: usize) -> Res {
        let Some(s) = self.live(s) else { return Ok(()) };
        let addr = addr_of(pg);
        let mm = self.mm(s);
        let before = mm.phys(addr);
        let r = mm.migrate(addr);
        let sl = self.slot(s, pg);
        let fault_or_invalid = matches!(r, Err(Error::Fault { .. }) | Err(Error::Invalid(_)));
        if !sl.mapped || before.is_none() {
            ensure!(matches!(r, Err(Error::Fault { .. })), "migrate of {addr:#x} with nothing present: {r:?}");
            return Ok(());
        }
        if !is_private(pg) || sl.id.is_none() {
            ensure!(fault_or_invalid, "migrate of a shared page or a hole at {addr:#x}: {r:?}");
            return Ok(());
        }
        let id = sl.id.expect("id");
        match r {
            Ok(new) => {
                ensure!(!self.pinned(id), "migrate moved pinned page {addr:#x}");
                ensure!(Some(new) != before, "migrate of {addr:#x} returned the old frame");
                ensure!(
                    mm.phys(addr) == Some(new),
                    "migrate of {addr:#x} returned {new:?}, the page maps {:?}",
                    mm.phys(addr)
                );
                bump(&TALLY.migrations, 1);
            }
            Err(Error::Busy(_)) => bump(&TALLY.migrate_busy, 1),
            // The move needs a frame of its own: at the frame limit (less
            // the frame kept for swap-in while swap is full) there is none,
            // and nothing changes (the checks after the step say so).
            Err(Error::NoMemory(_)) if self.m.stats().frames_in_use + 1 >= LIMIT_FRAMES => {
                bump(&TALLY.migrate_no_memory, 1)
            }
            Err(e) => return Err(format!("migrate of {addr:#x} (page id {id}): {e}")),
        }
        Ok(())
    }

    fn pin(&mut self, s: u8, pg: usize, write: bool) -> Res {
        let Some(s) = self.live(s) else { return Ok(()) };
        if self.pins.len() >= MAX_PINS {
            return Ok(());
        }
        let addr = addr_of(pg);
        let r = self.mm(s).pin_pages(addr, PAGE, write);
        let sl = self.slot(s, pg);
        if !sl.mapped {
            ensure!(is_segv(&r, addr, SegvKind::MapErr), "pin of unmapped {addr:#x}: {:?}", r.err());
            return Ok(());
        }
        if write && sl.ro {
            ensure!(is_segv(&r, addr, SegvKind::AccErr), "write pin of read-only {addr:#x}: {:?}", r.err());
            return Ok(());
        }
        let h = r.map_err(|e| format!("pin {addr:#x}: {e}"))?;
        if is_private(pg) {
            self.write_fault(s, pg);
        }
        let id = self.id_of(s, pg).expect("pinned page has an id");
        let frame = h.frames()[0];
        let now = self.mm(s).phys(addr);
        ensure!(now == Some(frame), "pin of {addr:#x} holds {frame:?}, the page maps {now:?}");
        let what = format!("pin of space {s} at {addr:#x} (page id {id})");
        self.pins.push(ModelPin { h, id, frame, what });
        Ok(())
    }

    /// After every step.
    fn check(&mut self) -> Res {
        self.m.check_invariants().map_err(|e| format!("check_invariants: {e}"))?;
        for w in &self.waiters {
            ensure!(w.h.state() == WaitState::Waiting, "{} is {:?}, no wake reached it", w.what, w.h.state());
        }
        // Frame <-> id, both ways.
        let mut frame_of: HashMap<u64, FrameId> = HashMap::new();
        let mut id_at: HashMap<FrameId, u64> = HashMap::new();
        let mut note = |id: u64, f: FrameId, what: &str| -> Res {
            if let Some(&g) = frame_of.get(&id) {
                ensure!(g == f, "{what}: page id {id} is mapped from two frames, {g:?} and {f:?}");
            }
            if let Some(&other) = id_at.get(&f) {
                ensure!(other == id, "{what}: frame {f:?} holds page ids {other} and {id}");
            }
            frame_of.insert(id, f);
            id_at.insert(f, id);
            Ok(())
        };
        for p in &self.pins {
            note(p.id, p.frame, &p.what)?;
            let mut buf = vec![0u8; PAGE as usize];
            p.h.read(p.h.addr(), &mut buf).map_err(|e| format!("{}: read: {e}", p.what))?;
            ensure!(buf == self.contents[&p.id], "{}: the pinned bytes differ from the model", p.what);
        }
        let mut page = vec![0u8; PAGE as usize];
        for s in self.live_list() {
            let sp = self.sp(s);
            for pg in 0..NPAGES {
                let addr = addr_of(pg);
                let phys = sp.mm.phys(addr);
                let what = format!("space {s} page {addr:#x}");
                let Some(id) = self.id_of(s, pg) else {
                    let ok = phys.is_none() || (sp.slots[pg].mapped && phys == Some(ZERO_FRAME));
                    ensure!(ok, "{what}: a hole in the model maps {phys:?}");
                    continue;
                };
                let Some(f) = phys else {
                    // Not resident (swapped out, or a shared page not
                    // touched here); a pinned private page never leaves
                    // memory (a shared one need not be mapped everywhere).
                    ensure!(!is_private(pg) || !self.pinned(id), "{what}: pinned page id {id} is not resident");
                    continue;
                };
                ensure!(f != ZERO_FRAME, "{what}: page id {id} maps the zero frame");
                note(id, f, &what)?;
                self.m.read_frame(f, 0, &mut page).map_err(|e| format!("{what}: read_frame: {e}"))?;
                if page != self.contents[&id] {
                    let at = page.iter().zip(&self.contents[&id]).position(|(a, b)| a != b).unwrap_or(0);
                    return Err(format!(
                        "{what} (page id {id}, frame {f:?}): byte {:#x} is {:#04x}, the model says {:#04x}",
                        addr + at as u64,
                        page[at],
                        self.contents[&id][at]
                    ));
                }
            }
        }
        self.check_shadows()
    }

    /// Every cached translation still holds; then refill the caches.
    fn check_shadows(&self) -> Res {
        for s in self.live_list() {
            let sp = self.sp(s);
            let Some((_, sh)) = &sp.shadow else { continue };
            sh.settled()?;
            let mut st = sh.st.lock().unwrap();
            for (&va, &f) in &st.tlb {
                let now = sp.mm.phys(va);
                ensure!(
                    now == Some(f),
                    "shadow TLB of space {s}: {va:#x} cached as {f:?}, the page table maps {now:?} (no invalidation)"
                );
            }
            st.tlb.clear();
            for pg in 0..NPAGES {
                if let Some(f) = sp.mm.phys(addr_of(pg)) {
                    st.tlb.insert(addr_of(pg), f);
                }
            }
        }
        Ok(())
    }

    /// At the end of a case: every page of every live space read through
    /// `Mm::read`, then everything torn down and given back.
    fn finish(mut self) -> Res {
        for s in self.live_list() {
            for pg in 0..NPAGES {
                self.read_page(s, pg, "final read")?;
            }
        }
        self.check()?;
        let m = self.m.clone();
        let st = m.stats();
        bump(&TALLY.swap_ins, st.swap_ins);
        self.waiters.clear();
        self.pins.clear();
        while !self.live_list().is_empty() {
            self.exit(0)?;
        }
        drop(self);
        m.check_invariants().map_err(|e| format!("after teardown: {e}"))?;
        let st = m.stats();
        ensure!(
            st.frames_in_use == 0 && st.page_tables == 0 && st.swap_used == 0,
            "after teardown: {} frames, {} page tables, {} swap slots in use",
            st.frames_in_use,
            st.page_tables,
            st.swap_used
        );
        Ok(())
    }
}

fn run(keys: FutexKeys, ops: &[Op]) -> Res {
    let mut w = World::new(keys)?;
    w.check().map_err(|e| format!("at the start: {e}"))?;
    for (i, op) in ops.iter().enumerate() {
        w.step(op).map_err(|e| format!("step {i} {op:?}: {e}"))?;
        w.check().map_err(|e| format!("after step {i} {op:?}: {e}"))?;
    }
    bump(&TALLY.steps, ops.len() as u64);
    bump(&TALLY.cases, 1);
    w.finish()
}

fn report() {
    if std::env::var_os("CHAOS_REPORT").is_none() {
        return;
    }
    let t = &TALLY;
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "chaos: {} cases, {} steps; {} waits queued, {} woken; {} swap-outs, {} swap-ins; {} migrations, {} busy, {} without a frame; \
         {} COW copies; {} pinned pages copied at fork",
        g(&t.cases),
        g(&t.steps),
        g(&t.waits_queued),
        g(&t.woken),
        g(&t.swap_outs),
        g(&t.swap_ins),
        g(&t.migrations),
        g(&t.migrate_busy),
        g(&t.migrate_no_memory),
        g(&t.cow_copies),
        g(&t.fork_pinned_copies),
    );
}

fn config() -> ProptestConfig {
    let default = if cfg!(debug_assertions) { 200 } else { 2000 };
    let cases = env_num("PROPTEST_CASES").map_or(default, |c| c as u32);
    ProptestConfig {
        cases,
        max_shrink_iters: 20_000,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

#[test]
fn chaos_model() {
    let mut runner = TestRunner::new(config());
    let result = runner.run(&case(), |(keys, ops)| run(keys, &ops).map_err(TestCaseError::fail));
    report();
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// Fixed histories: the harness itself, and what the chaos model found (each
// failed before waiters followed their pages across swap and migration)
// ---------------------------------------------------------------------------

/// Run `ops` on `w` as the chaos test does (each step checked).
fn steps(w: &mut World, ops: &[Op]) {
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = w.step(op).and_then(|()| w.check()) {
            panic!("step {i} {op:?}: {e}");
        }
    }
}

fn world(keys: FutexKeys) -> World {
    World::new(keys).unwrap_or_else(|e| panic!("{e}"))
}

fn end(w: World) {
    if let Err(e) = w.finish() {
        panic!("{e}");
    }
}

const WAIT0: Op = Op::Wait { s: 0, pg: 0, off: 0, matches: true };
const WAKE0: Op = Op::Wake { s: 0, pg: 0, off: 0, n: 1 };
const WRITE0: Op = Op::Write { s: 0, pg: 0, off: 1, v: 7 };
const FORK0: Op = Op::Fork { s: 0, copy_tables: false, subscribe: true };

/// The harness with every kind of step, so a broken harness shows even with
/// `PROPTEST_CASES=0`; a page really goes to swap and comes back.
#[test]
fn chaos_harness_smoke() {
    for keys in [FutexKeys::Physical, FutexKeys::Linux] {
        let mut w = world(keys);
        steps(
            &mut w,
            &[
                Op::Subscribe { s: 0 },
                Op::Write { s: 0, pg: 1, off: 0, v: 2 },
                Op::Scribble { s: 0, pg: 6, at: 100, seed: 3 },
                FORK0,
                Op::Pin { s: 0, pg: 2, write: true },
                Op::Fork { s: 0, copy_tables: true, subscribe: false },
                Op::Write { s: 1, pg: 1, off: 1, v: 1 },
                Op::Mprotect { s: 2, pg: 1, ro: true },
                Op::Write { s: 2, pg: 1, off: 1, v: 1 },
                Op::Reclaim { k: 20 },
            ],
        );
        assert_eq!(w.mm(0).phys(PRIV + PAGE), None, "{keys:?}: the page went to swap");
        assert!(w.m.stats().swap_outs > 0);
        steps(
            &mut w,
            &[
                Op::Read { s: 0, pg: 1 },
                Op::Wait { s: 0, pg: 6, off: 0, matches: true },
                Op::WakeAt { j: 0, s: 1, n: 1 },
                Op::Migrate { s: 1, pg: 1 },
                Op::Migrate { s: 0, pg: 2 },
                Op::Evacuate { lo: 0, len: 63 },
                Op::DontNeed { s: 1, pg: 1 },
                Op::Munmap { s: 1, pg: 6 },
                Op::Remap { s: 0, pg: 1 },
                Op::Unpin { j: 0 },
                Op::Exit { s: 1 },
                Op::Cancel { j: 0 },
            ],
        );
        assert!(w.m.stats().swap_ins > 0);
        end(w);
    }
}

/// A waiter whose page is swapped out is still reached by a wake through
/// that page (physical keys: the page, not its residence, is the key).
#[test]
fn a_wake_reaches_a_waiter_whose_page_is_swapped_out() {
    let mut w = world(FutexKeys::Physical);
    steps(&mut w, &[WAIT0, Op::Reclaim { k: 1 }]);
    assert_eq!(w.mm(0).phys(PRIV), None, "the page went to swap");
    steps(&mut w, &[WAKE0]);
    end(w);
}

/// After swap-in, the first write reuses the page (the waiter and the swap
/// cache do not force a copy) and the waiter is still reached.
#[test]
fn a_waiter_follows_its_page_through_swap_in_and_write() {
    let mut w = world(FutexKeys::Physical);
    steps(&mut w, &[WAIT0, Op::Reclaim { k: 1 }]);
    assert_eq!(w.mm(0).phys(PRIV), None, "the page went to swap");
    steps(&mut w, &[Op::Read { s: 0, pg: 0 }, WRITE0, WAKE0]);
    end(w);
}

/// A waiter on a page that was swapped out and written leaks nothing once
/// everything is gone (frames and swap slots all given back).
#[test]
fn a_waiter_on_a_swapped_page_leaks_nothing() {
    let mut w = world(FutexKeys::Physical);
    steps(&mut w, &[WAIT0, Op::Reclaim { k: 1 }]);
    assert_eq!(w.mm(0).phys(PRIV), None, "the page went to swap");
    steps(&mut w, &[WRITE0]);
    end(w);
}

/// A wait on a swapped-out page shared copy-on-write does not break COW
/// (it does not when the page is resident): the child's wake reaches it.
#[test]
fn a_wait_on_a_swapped_cow_page_stays_on_the_shared_page() {
    let mut w = world(FutexKeys::Physical);
    steps(&mut w, &[WRITE0, FORK0, Op::Reclaim { k: 8 }]);
    assert_eq!(w.mm(0).phys(PRIV), None, "the page went to swap");
    steps(&mut w, &[WAIT0, Op::Wake { s: 1, pg: 0, off: 0, n: 1 }]);
    end(w);
}

/// A migration refused because a waiter holds the page leaves the waiter
/// following its page: a later fork and a write by the waiter's space
/// (COW: a new page) take the waiter along.
#[test]
fn a_failed_migration_leaves_the_waiter_following_its_page() {
    let mut w = world(FutexKeys::Physical);
    steps(&mut w, &[WAIT0, Op::Migrate { s: 0, pg: 0 }, FORK0, WRITE0, WAKE0]);
    end(w);
}
