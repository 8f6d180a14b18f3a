//! Model-based test of futex keys: random histories of fork, exit, writes
//! (breaking COW), DONTNEED, waits, wakes and cancellations over a private
//! and a shared region, in both key modes, against a reference model that
//! states which waiters a wake may reach:
//!
//! - `linux` keys: a private word is `(address space, address)`, a shared
//!   word is `(object, offset)` — here, the address (one object);
//! - `physical` keys: the frame and offset the waiter's page maps *now*
//!   (read with `phys`), as long as the page stays mapped; once it is
//!   unmapped (DONTNEED, exit) the waiter keeps the frame it had.
//!
//! After every wake: the count equals min(max(n, 1), candidates) and every
//! waiter it woke was a candidate. `check_invariants` runs after every step.

use proptest::prelude::*;
use softmm::futex::{WaitState, BITSET_MATCH_ANY};
use softmm::{Advice, Config, FutexKeys, FutexWaiter, Machine, MapKind, Mm, Placement, Prot};

const PRIV: u64 = 0x1000_0000; // two private pages
const SHARED: u64 = 0x2000_0000; // one shared page

fn word_addr(w: u8) -> u64 {
    match w % 6 {
        i @ 0..=3 => PRIV + u64::from(i / 2) * 4096 + u64::from(i % 2) * 8,
        i => SHARED + u64::from(i - 4) * 8,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Fork(u8),
    Exit(u8),
    Write(u8, u8, u32),
    DontNeed(u8, u8),
    Wait(u8, u8, bool),
    Wake(u8, u8, u32),
    Cancel(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => any::<u8>().prop_map(Op::Fork),
        1 => any::<u8>().prop_map(Op::Exit),
        3 => (any::<u8>(), any::<u8>(), 0u32..3).prop_map(|(s, w, v)| Op::Write(s, w, v)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(s, p)| Op::DontNeed(s, p)),
        4 => (any::<u8>(), any::<u8>(), prop::bool::weighted(0.85)).prop_map(|(s, w, m)| Op::Wait(s, w, m)),
        3 => (any::<u8>(), any::<u8>(), 0u32..4).prop_map(|(s, w, n)| Op::Wake(s, w, n)),
        1 => any::<u8>().prop_map(Op::Cancel),
    ]
}

/// What the model says a waiter is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Frame(u32, u64),
    Private(usize, u64),
    Shared(u64),
}

struct ModelWaiter {
    space: usize,
    addr: u64,
    key: Key,
    /// Physical keys: the page was unmapped once; the key stays frozen.
    frozen: bool,
    handle: FutexWaiter,
}

struct World {
    keys: FutexKeys,
    spaces: Vec<Option<Mm>>,
    waiters: Vec<ModelWaiter>,
    /// The shared page's frame once seen (object pages never move).
    shm_frame: std::cell::Cell<Option<u32>>,
}

impl World {
    fn live(&self, i: u8) -> Option<usize> {
        let live: Vec<usize> = (0..self.spaces.len()).filter(|&j| self.spaces[j].is_some()).collect();
        (!live.is_empty()).then(|| live[i as usize % live.len()])
    }

    fn mm(&self, s: usize) -> &Mm {
        self.spaces[s].as_ref().expect("live space")
    }

    /// The key the model gives `addr` of space `s` now (physical: what the
    /// page maps; None when it maps nothing).
    fn key_now(&self, s: usize, addr: u64) -> Option<Key> {
        match self.keys {
            FutexKeys::Linux if addr >= SHARED => Some(Key::Shared(addr)),
            FutexKeys::Linux => Some(Key::Private(s, addr)),
            _ => match self.mm(s).phys(addr) {
                Some(f) if f == softmm::ZERO_FRAME => Some(Key::Private(s, addr)),
                Some(f) => {
                    if addr >= SHARED {
                        self.shm_frame.set(Some(f.0));
                    }
                    Some(Key::Frame(f.0, addr & 0xfff))
                }
                // A shared page not mapped here is still the object's page.
                None if addr >= SHARED => self.shm_frame.get().map(|f| Key::Frame(f, addr & 0xfff)),
                None => None,
            },
        }
    }

    /// Physical keys follow their page while it stays mapped.
    fn refresh(&mut self) {
        if self.keys != FutexKeys::Physical {
            return;
        }
        for i in 0..self.waiters.len() {
            let (s, addr, frozen) = (self.waiters[i].space, self.waiters[i].addr, self.waiters[i].frozen);
            if frozen || self.waiters[i].handle.state() != WaitState::Waiting {
                continue;
            }
            let now = if self.spaces[s].is_some() { self.key_now(s, addr) } else { None };
            match now {
                Some(k) => self.waiters[i].key = k,
                None => self.waiters[i].frozen = true,
            }
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Fork(i) => {
                if let Some(s) = self.live(i) {
                    if self.spaces.len() < 6 {
                        let c = self.mm(s).fork().map_err(|e| TestCaseError::fail(e.to_string()))?;
                        self.spaces.push(Some(c));
                    }
                }
            }
            Op::Exit(i) => {
                if let Some(s) = self.live(i) {
                    self.spaces[s] = None;
                }
            }
            Op::Write(i, w, v) => {
                if let Some(s) = self.live(i) {
                    self.mm(s)
                        .write(word_addr(w) + 4, &v.to_ne_bytes())
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
            Op::DontNeed(i, p) => {
                if let Some(s) = self.live(i) {
                    let page = PRIV + u64::from(p % 2) * 4096;
                    self.mm(s).madvise(page, 4096, Advice::DontNeed).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
            Op::Wait(i, w, matches) => {
                let Some(s) = self.live(i) else { return Ok(()) };
                let addr = word_addr(w);
                let mut cur = [0u8; 4];
                self.mm(s).read(addr, &mut cur).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let cur = u32::from_ne_bytes(cur);
                let val = if matches { cur } else { cur.wrapping_add(1) };
                match self.mm(s).futex_wait_start(addr, val, BITSET_MATCH_ANY) {
                    Ok(handle) => {
                        prop_assert!(matches, "queued although the word differs");
                        let key = self.key_now(s, addr).ok_or_else(|| TestCaseError::fail("no key after wait"))?;
                        self.waiters.push(ModelWaiter { space: s, addr, key, frozen: false, handle });
                    }
                    Err(e) => prop_assert!(!matches && e == softmm::Error::Again, "wait: {e}"),
                }
            }
            Op::Wake(i, w, n) => {
                let Some(s) = self.live(i) else { return Ok(()) };
                let addr = word_addr(w);
                // A physical wake does not fault: a hole has no frame key.
                let key = self.key_now(s, addr);
                let before: Vec<bool> = self.waiters.iter().map(|m| m.handle.state() == WaitState::Waiting).collect();
                let candidates: Vec<usize> =
                    (0..self.waiters.len()).filter(|&j| before[j] && Some(self.waiters[j].key) == key).collect();
                let woken = self.mm(s).futex_wake(addr, n).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let newly: Vec<usize> = (0..self.waiters.len())
                    .filter(|&j| before[j] && self.waiters[j].handle.state() == WaitState::Woken)
                    .collect();
                prop_assert_eq!(woken as usize, newly.len());
                prop_assert_eq!(newly.len(), candidates.len().min(n.max(1) as usize), "candidates {:?}", candidates);
                prop_assert!(
                    newly.iter().all(|j| candidates.contains(j)),
                    "woke {:?}, candidates {:?}",
                    newly,
                    candidates
                );
            }
            Op::Cancel(j) => {
                if !self.waiters.is_empty() {
                    let j = j as usize % self.waiters.len();
                    let w = self.waiters.remove(j);
                    let was = w.handle.state();
                    let end = w.handle.wait(Some(softmm::futex::Timeout::After(std::time::Duration::ZERO)));
                    prop_assert_eq!(end.is_ok(), was == WaitState::Woken);
                }
            }
        }
        self.refresh();
        let any = self.spaces.iter().flatten().next();
        if let Some(mm) = any {
            mm.check_invariants().map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
        }
        Ok(())
    }
}

fn run(keys: FutexKeys, ops: &[Op]) -> Result<(), TestCaseError> {
    let m = Machine::new(Config {
        arena_bytes: 32 << 20,
        prezero: false,
        cpu_caches: 1,
        futex_keys: keys,
        ..Config::default()
    })
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let root = m.new_mm().map_err(|e| TestCaseError::fail(e.to_string()))?;
    root.mmap(PRIV, 2 * 4096, Prot::RW, MapKind::Private, Placement::Fixed)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    root.mmap(SHARED, 4096, Prot::RW, MapKind::Shared, Placement::Fixed)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut w = World { keys, spaces: vec![Some(root)], waiters: Vec::new(), shm_frame: Default::default() };
    for op in ops {
        w.step(op)?;
    }
    // Leave: every waiter is dropped (cancelled), nothing may leak.
    let keep = m.new_mm().map_err(|e| TestCaseError::fail(e.to_string()))?;
    w.waiters.clear();
    w.spaces.clear();
    keep.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(m.stats().frames_in_use, 1, "only the zero frame is left");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn physical_keys_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(FutexKeys::Physical, &ops)?;
    }

    #[test]
    fn linux_keys_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(FutexKeys::Linux, &ops)?;
    }
}
