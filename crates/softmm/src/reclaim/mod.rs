//! Reclaim: a frame limit, swap-out to a swap device, swap-in on fault, and
//! migration of frames, all driven by the reverse map (`rmap.rs`).
//!
//! - `swap`: swap slots and the swap cache.
//! - [`device`]: the swap device trait, a real swap file, an in-memory
//!   device and a fault-injecting wrapper.
//! - `scan.rs`: the clock that picks victims by their accessed bits, and
//!   swap-out of frames in batches (one vectored write per run of slots).
//! - `migrate.rs`: moving a frame's contents to another frame.
//! - `swapin.rs`: bringing a page back on a fault.
//! - `kswapd.rs`: the background reclaimer, which keeps frames free ahead
//!   of the faults.
//! - `visit.rs`: visiting every entry that maps a frame (reverse map).
//!
//! # Locks
//! A frame being swapped out, swapped in or migrated is locked
//! (`FrameMeta::try_lock`). Reclaim and migration visit each address space
//! that may map the frame under its `mmap_lock` held for reading
//! (`read_recursive`, so a writer queued behind a fault that waits for this
//! very frame cannot block them; reclaim only *tries* the lock and skips a
//! busy space), then its PMD lock, then the PTE table's lock, as
//! `share::lock_pte_table` explains. No path that holds a page-table lock
//! waits for a frame lock, and writers of the `mmap_lock` never wait for
//! one either, so a fault may wait for a locked frame while holding its
//! space's `mmap_lock` for reading.

mod advice;
pub mod device;
mod kswapd;
mod migrate;
mod scan;
mod shm;
pub(crate) mod swap;
mod swapin;
mod visit;

pub(crate) use advice::{drop_pages, punch_shm, swapin_range};
pub use kswapd::watermarks;
pub(crate) use migrate::migrate_frame;
pub(crate) use scan::{can_reclaim, direct_reclaim, reclaim_pages, shrink};
pub(crate) use shm::write_back_range;
pub(crate) use swapin::swap_in;
pub(crate) use visit::{age, lock_member, visit_mappings, How, Visit};

use crate::machine::MachineInner;
use device::SwapDevice;
use std::path::PathBuf;
use std::sync::Arc;

/// Where pages go when the frame limit is reached.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum SwapConfig {
    /// A swap file of [`AUTO_SWAP_BYTES`] in the system temp directory,
    /// created only when a memory limit is set. (Default.)
    #[default]
    Auto,
    /// A swap file at `path` (created, must not exist) of `bytes`.
    File {
        /// Where to create the file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// A device of the host's own (an in-memory or fault-injecting one).
    Device(Arc<dyn SwapDevice>),
    /// No swap: the frame limit is a hard limit (faults fail with ENOMEM).
    Off,
}

/// Size of the swap file `SwapConfig::Auto` creates (sparse on disk).
pub const AUTO_SWAP_BYTES: u64 = 4 << 30;

/// The machine's reclaim state.
pub(crate) struct Reclaim {
    /// Shared with shared-memory objects, whose page index may name slots.
    pub(crate) swap: Option<Arc<swap::SwapSpace>>,
    /// The clock hand: the next frame the scan looks at.
    pub(crate) hand: std::sync::atomic::AtomicU32,
    /// One direct reclaimer (or the background one) at a time does the
    /// scanning; others wait for it.
    pub(crate) scanning: parking_lot::Mutex<()>,
    /// The background reclaimer, if started (joined when the machine goes).
    kswapd: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held by the background reclaimer for each round (inside
    /// `scanning`), and by the audit once it holds every `mmap_lock`, so
    /// that it never sees a batch half done. A round never waits for an
    /// `mmap_lock` (it only tries them), so the audit's wait ends.
    pub(crate) round: parking_lot::Mutex<()>,
}

impl Reclaim {
    pub(crate) fn new(limited: bool, cfg: &SwapConfig, arena: &crate::phys::FrameArena) -> crate::Result<Reclaim> {
        let dev: Option<Arc<dyn SwapDevice>> = match cfg {
            SwapConfig::Off => None,
            SwapConfig::Auto if !limited => None,
            SwapConfig::Auto => {
                Some(Arc::new(device::FileSwap::create(None, AUTO_SWAP_BYTES).map_err(|e| io_err(None, e))?))
            }
            SwapConfig::File { path, bytes } => {
                Some(Arc::new(device::FileSwap::create(Some(path), *bytes).map_err(|e| io_err(Some(path), e))?))
            }
            SwapConfig::Device(d) => Some(d.clone()),
        };
        Ok(Reclaim {
            swap: dev.map(|d| Arc::new(swap::SwapSpace::with_full_flag(d, arena.swap_full.clone()))),
            hand: std::sync::atomic::AtomicU32::new(1),
            scanning: parking_lot::Mutex::new(()),
            kswapd: parking_lot::Mutex::new(None),
            round: parking_lot::Mutex::new(()),
        })
    }

    /// Start the background reclaimer of `m` (which has a frame limit and
    /// a swap device).
    pub(crate) fn start_kswapd(m: &Arc<MachineInner>) -> crate::Result<()> {
        let handle = kswapd::start(m)?;
        *m.reclaim.kswapd.lock() = Some(handle);
        Ok(())
    }

    /// Wait for the background reclaimer to exit (its `Pressure` was told
    /// to stop). Not from that thread itself (a handle dropped in an MMU
    /// notifier it called): it exits once it returns to its loop.
    pub(crate) fn join_kswapd(&self) {
        let Some(handle) = self.kswapd.lock().take() else { return };
        if handle.thread().id() != std::thread::current().id() {
            let _ = handle.join();
        }
    }
}

/// Why the swap file at `path` (`None`: one in the temp directory) could
/// not be created, naming it.
/// The error of an allocation that failed under the frame limit for
/// `why`: when the swap device is full, a message naming it (still
/// `ENOMEM`: Linux would run out of memory).
pub(crate) fn out_of_memory(m: &MachineInner, why: &'static str) -> crate::Error {
    match m.reclaim.swap.as_ref() {
        Some(swap) if swap.is_full() => crate::Error::SwapExhausted { device: swap.dev.describe() },
        _ => crate::Error::NoMemory(why),
    }
}

fn io_err(path: Option<&std::path::Path>, e: std::io::Error) -> crate::Error {
    let errno = e.raw_os_error().unwrap_or(crate::errno::EIO);
    let what = match path {
        Some(p) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            format!("swap file {} exists; remove it or choose another", p.display())
        }
        Some(p) => format!("creating the swap file {}: {e}", p.display()),
        None => format!("creating a swap file in {}: {e}", std::env::temp_dir().display()),
    };
    crate::Error::SwapFile { what, errno }
}
