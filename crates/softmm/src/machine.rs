//! The machine: one frame arena and every address space built on it.
//!
//! A [`Machine`] is what a host creates once. It owns the arena, hands out
//! new address spaces ([`Mm`]), keeps a registry of them (for audits and
//! global statistics) and the global event counters.
//!
//! Locks: `mms` and `shms` are leaf mutexes (registry only).

use crate::error::Result;
use crate::mm::{Mm, MmInner};
use crate::phys::FrameArena;
use crate::shm::ShmObject;
use crate::stats::{Counters, MachineStats};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use parking_lot::Mutex;
use std::sync::{Arc, Weak};

/// Configuration of a [`Machine`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Bytes of host address space reserved for frames. Only frames that are
    /// touched cost host memory. Default: 8 GiB.
    pub arena_bytes: u64,
    /// Lowest address a fixed mapping may use (Linux's `mmap_min_addr`).
    pub mmap_min_addr: u64,
    /// Frame caches in front of the global pool; 0 means one per CPU.
    /// With 1, a single-threaded history allocates the same frames every
    /// time it runs (what trace replay wants for reproducible frame numbers).
    pub cpu_caches: usize,
    /// Zero freed frames on a low-priority background thread, so that
    /// demand-zero faults find zeroed frames (see `phys/alloc.rs`). Default
    /// on; off under Miri. Allocation order then depends on timing, so
    /// reproducible histories (trace replay) turn it off.
    pub prezero: bool,
    /// How futexes are keyed (see [`crate::futex`]). Default: physical.
    pub futex_keys: crate::futex::FutexKeys,
    /// Most bytes of frames in use at once (data, page tables and the swap
    /// cache), rounded down to frames; `None`: the arena's size. When an
    /// allocation would pass it, reclaim swaps cold pages out.
    pub mem_limit: Option<u64>,
    /// Where swapped-out pages go (see [`crate::reclaim::SwapConfig`]).
    pub swap: crate::reclaim::SwapConfig,
    /// With a memory limit and swap, reclaim on a background thread
    /// (Linux's kswapd) whenever free frames below the limit fall under a
    /// low watermark, up to a high one ([`crate::reclaim::watermarks`]),
    /// so faults rarely have to reclaim themselves. Default off: on the
    /// 2-CPU machine softmm is measured on, reclaim from another CPU
    /// (cache lines moving between CPUs, TLB shootdowns that interrupt the
    /// faulting thread) cost more than the parallelism saved (see
    /// `docs/BENCHMARKS.md`). Which pages go out then depends on timing.
    pub background_reclaim: bool,
    /// How long a blocking futex wait ([`crate::Mm::futex_wait`] and the
    /// accessor's) keeps yielding its CPU (`sched_yield`) before it sleeps
    /// in the kernel. A wake that comes meanwhile costs neither side a
    /// futex(2) call: the waker sees nobody asleep, and the waiter, still
    /// running, sees its state change. On one CPU the yield is what lets
    /// the waker run; on several, the waiter notices within a yield.
    /// Zero: sleep at once, as Linux's futex does. A waiter that ends up
    /// asleep has spent up to this much CPU (less if other threads wanted
    /// the CPU: they got it). The trade-off: a waiter woken this fast
    /// contends again at once, so a mutex whose critical sections take
    /// about the yield window hands over more often and loses throughput
    /// (zero gives Linux's; figures in `docs/BENCHMARKS.md`, futex).
    /// Default 5 µs.
    pub futex_spin: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            arena_bytes: if cfg!(miri) { 512 * 4096 } else { 8 << 30 },
            mmap_min_addr: 0x10000,
            cpu_caches: 0,
            prezero: !cfg!(miri),
            futex_keys: crate::futex::FutexKeys::Physical,
            mem_limit: None,
            swap: crate::reclaim::SwapConfig::Auto,
            background_reclaim: false,
            futex_spin: std::time::Duration::from_micros(5),
        }
    }
}

pub(crate) struct MachineInner {
    pub(crate) arena: Arc<FrameArena>,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) futexes: crate::futex::Futexes,
    /// Registry of anon_vmas, for reverse-map walks from a frame.
    pub(crate) anon_vmas: Arc<crate::rmap::AnonVmas>,
    pub(crate) reclaim: crate::reclaim::Reclaim,
    /// Every pin, by frame (`mm/pin.rs`), for audits.
    pub(crate) pins: crate::mm::pin::PinRegistry,
    /// Set once any VMA of the machine was ever `VM_LOCKED` (mlock,
    /// `MAP_LOCKED`, mlockall): until then reclaim skips its look for a
    /// locked mapping of each frame (`reclaim/visit.rs`).
    pub(crate) mlock_used: AtomicBool,
    next_id: AtomicU64,
    mms: Mutex<Vec<Weak<MmInner>>>,
    shms: Mutex<Vec<Weak<ShmObject>>>,
    /// Live `Machine` and `Mm` values (`hold`, `release`).
    handles: AtomicU64,
}

impl MachineInner {
    /// The clients of the vcache (`vcache::Client`), which every change of
    /// translations tells: futexes, the one so far.
    #[inline]
    pub(crate) fn vcache_clients(&self) -> [&dyn crate::vcache::Client; 1] {
        [&self.futexes]
    }
}

impl MachineInner {
    /// One more `Machine` or `Mm` value.
    pub(crate) fn hold(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    /// A `Machine` or `Mm` value went away. The last one stops the
    /// background reclaimer and waits for its round in progress: otherwise
    /// the reclaimer could hold the machine (and its swap file) past the
    /// user's last handle, even past the process's exit.
    pub(crate) fn release(&self) {
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.arena.pressure.stop();
            self.reclaim.join_kswapd();
        }
    }

    /// A fresh identity for an address space, anon_vma or shared object.
    pub(crate) fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn register_mm(&self, mm: &Arc<MmInner>) {
        let mut mms = self.mms.lock();
        mms.retain(|w| w.strong_count() > 0);
        mms.push(Arc::downgrade(mm));
    }

    pub(crate) fn new_shm(&self, npages: u64) -> Result<Arc<ShmObject>> {
        let obj = ShmObject::new(self.new_id(), self.arena.clone(), self.reclaim.swap.clone(), npages)?;
        self.register_shm(obj)
    }

    /// A shared object of `size` bytes over `store` (a file).
    pub(crate) fn new_shm_with(&self, store: crate::shm::Store, size: u64) -> Result<Arc<ShmObject>> {
        let obj = ShmObject::with_store(self.new_id(), self.arena.clone(), self.reclaim.swap.clone(), size, store)?;
        self.register_shm(obj)
    }

    fn register_shm(&self, obj: Arc<ShmObject>) -> Result<Arc<ShmObject>> {
        let mut shms = self.shms.lock();
        shms.retain(|w| w.strong_count() > 0);
        shms.push(Arc::downgrade(&obj));
        Ok(obj)
    }

    pub(crate) fn live_mms(&self) -> Vec<Arc<MmInner>> {
        self.mms.lock().iter().filter_map(Weak::upgrade).collect()
    }

    /// The live shared object with this id (reclaim, from a frame's owner).
    pub(crate) fn shm_by_id(&self, id: u64) -> Option<Arc<ShmObject>> {
        self.shms.lock().iter().filter_map(Weak::upgrade).find(|o| o.id() == id)
    }

    pub(crate) fn live_shms(&self) -> Vec<Arc<ShmObject>> {
        self.shms.lock().iter().filter_map(Weak::upgrade).collect()
    }
}

impl Drop for MachineInner {
    fn drop(&mut self) {
        self.arena.stop_zeroer();
        self.arena.pressure.stop();
        self.reclaim.join_kswapd();
    }
}

/// A pool of physical frames and the address spaces over it.
pub struct Machine {
    pub(crate) inner: Arc<MachineInner>,
}

impl Machine {
    /// A handle on `inner`, counted (see `MachineInner::release`).
    pub(crate) fn from_inner(inner: Arc<MachineInner>) -> Machine {
        inner.hold();
        Machine { inner }
    }
}

impl Clone for Machine {
    fn clone(&self) -> Self {
        Machine::from_inner(self.inner.clone())
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl Machine {
    /// Reserve the arena and set up an empty machine.
    pub fn new(config: Config) -> Result<Machine> {
        let arena = Arc::new(FrameArena::new(config.arena_bytes, config.cpu_caches)?);
        if let Some(limit) = config.mem_limit {
            let frames = limit / crate::phys::PAGE_SIZE as u64;
            if frames < 16 {
                return Err(crate::Error::Invalid("mem_limit must allow at least 16 frames (64 KiB)"));
            }
            arena.set_limit(frames);
        }
        let reclaim = crate::reclaim::Reclaim::new(config.mem_limit.is_some(), &config.swap, &arena)?;
        if config.prezero {
            arena.start_zeroer()?;
        }
        let background = config.background_reclaim && config.mem_limit.is_some() && reclaim.swap.is_some();
        let inner = Arc::new(MachineInner {
            arena,
            config,
            counters: Counters::default(),
            futexes: crate::futex::Futexes::default(),
            anon_vmas: crate::rmap::AnonVmas::new(),
            reclaim,
            pins: Default::default(),
            mlock_used: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            mms: Mutex::new(Vec::new()),
            shms: Mutex::new(Vec::new()),
            handles: AtomicU64::new(1),
        });
        if background {
            crate::reclaim::Reclaim::start_kswapd(&inner)?;
        }
        Ok(Machine { inner })
    }

    /// A new, empty address space.
    pub fn new_mm(&self) -> Result<Mm> {
        Mm::new(self.inner.clone())
    }

    /// A new in-memory file of `len` bytes of zeros, as `memfd_create`
    /// then `ftruncate`; `name` is for display only.
    pub fn memfd(&self, name: &str, len: u64) -> Result<crate::File> {
        crate::file::File::memfd(&self.inner, name, len)
    }

    /// The host file at `path`, opened for reading and writing, with a page
    /// cache in the arena. `Error::FileIo` with the host's errno when it
    /// cannot be opened.
    pub fn open_file(&self, path: impl AsRef<std::path::Path>) -> Result<crate::File> {
        crate::file::File::open(&self.inner, path.as_ref())
    }

    /// A snapshot of the global counters.
    pub fn stats(&self) -> MachineStats {
        let mut s = MachineStats::from_counters(&self.inner.counters);
        s.frames_in_use = self.inner.arena.in_use();
        s.frames_capacity = self.inner.arena.capacity() as u64;
        s.frames_touched = self.inner.arena.touched() as u64;
        s.swap_used = self.inner.reclaim.swap.as_ref().map_or(0, |sw| sw.used());
        s.swap_slots = self.inner.reclaim.swap.as_ref().map_or(0, |sw| sw.slots());
        s.anon_vmas = self.inner.anon_vmas.len() as u64;
        s.pins = self.inner.pins.total();
        s
    }

    /// Wait until the background zeroing thread has zeroed every frame freed
    /// to the global pool so far (or `timeout` passes). Returns whether it
    /// finished. Useful before timing faults; a no-op without pre-zeroing.
    pub fn wait_for_prezeroing(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        if self.inner.config.prezero {
            self.inner.arena.zero_all();
        }
        while self.inner.config.prezero && self.inner.arena.zeroing_pending() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        true
    }

    /// Read bytes of physical frame `frame` at `offset`, whatever it holds
    /// now: how a secondary MMU (a shadow TLB, a device) reads through a
    /// translation it cached. Only meaningful while the secondary knows the
    /// frame is still mapped, which is what MMU notifiers tell it.
    pub fn read_frame(&self, frame: crate::phys::FrameId, offset: usize, out: &mut [u8]) -> Result<()> {
        let arena = &self.inner.arena;
        if frame.0 >= arena.capacity() || offset.checked_add(out.len()).is_none_or(|e| e > crate::phys::PAGE_SIZE) {
            return Err(crate::Error::Invalid("frame or range outside the arena"));
        }
        arena.read(frame, offset, out);
        Ok(())
    }

    /// Run the reclaim clock until `frames` frames are freed (swapped out)
    /// or nothing more can be; returns the frames freed. Without a swap
    /// device this frees nothing.
    pub fn reclaim(&self, frames: usize) -> usize {
        crate::reclaim::shrink(&self.inner, frames)
    }

    /// Compaction: move every private anonymous frame whose number lies in
    /// `range` to a frame outside it (through [`Mm::migrate`]'s mechanism),
    /// so the range can be given back or used for something contiguous.
    /// Frames that cannot move now (locked, pinned, in the swap cache, held
    /// by a futex waiter or a remote access) stay. Returns (moved, stayed).
    pub fn evacuate(&self, range: std::ops::Range<u32>) -> (u64, u64) {
        let m = &self.inner;
        let arena = &m.arena;
        let (mut moved, mut stayed) = (0, 0);
        let hi = range.end.min(arena.touched());
        for i in range.start.max(1)..hi {
            let f = crate::phys::FrameId(i);
            let meta = arena.meta(f);
            if !meta.has(crate::phys::flags::ANON) || !arena.try_get(f) {
                continue;
            }
            if meta.has(crate::phys::flags::ANON) {
                match crate::reclaim::migrate_frame(m, f, |n| range.contains(&n.0)) {
                    Ok(_) => moved += 1,
                    Err(_) => stayed += 1,
                }
            }
            arena.put(f);
        }
        (moved, stayed)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Audit every frame of the machine; see [`Mm::check_invariants`].
    pub fn check_invariants(&self) -> std::result::Result<(), crate::InvariantError> {
        crate::mm::invariants::check_machine(&self.inner)
    }
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine").field("config", &self.inner.config).finish()
    }
}
