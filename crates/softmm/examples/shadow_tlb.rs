//! A KVM-like shadow TLB over a softmm address space: a secondary MMU that
//! caches virtual page -> frame translations and reads guest memory through
//! them, kept coherent by an MMU notifier.
//!
//! Protocol (what KVM does with `mmu_notifier_seq` and `mmu_lock`):
//! - `invalidate_range_start` takes the shadow's lock, drops the range's
//!   translations and counts the invalidation as in progress;
//!   `invalidate_range_end` counts it done and bumps the sequence.
//! - A read holds the lock while it reads through a cached translation, so
//!   once `start` has returned no read uses an old one.
//! - A fill looks the page up in the primary *outside* the lock, then
//!   installs it only if no invalidation is in progress and the sequence is
//!   unchanged: anything that overlapped makes it retry.
//!
//! Run: `cargo run --release -p softmm --example shadow_tlb`.

use softmm::notifier::{Again, MmuNotifier, Range};
use softmm::{FrameId, Machine, Mm};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    map: HashMap<u64, FrameId>,
    in_progress: u32,
    seq: u64,
}

/// The shadow TLB: translations of one address space.
#[derive(Default)]
pub struct ShadowTlb {
    state: Mutex<State>,
}

impl MmuNotifier for ShadowTlb {
    fn invalidate_range_start(&self, r: &Range) -> Result<(), Again> {
        let Ok(mut s) = self.state.lock() else { return Ok(()) };
        s.in_progress += 1;
        s.map.retain(|&vpn, _| {
            let va = vpn << 12;
            va < r.start || va >= r.end
        });
        Ok(())
    }

    fn invalidate_range_end(&self, _r: &Range) {
        if let Ok(mut s) = self.state.lock() {
            s.in_progress -= 1;
            s.seq += 1;
        }
    }

    fn release(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.map.clear();
        }
    }
}

/// What a shadow read found.
#[derive(Debug, PartialEq, Eq)]
pub enum ShadowRead {
    Hit(u32),
    /// No cached translation: the caller fills and tries again.
    Miss,
}

impl ShadowTlb {
    /// Read the `u32` at `va` through a cached translation, or report a miss.
    pub fn read_u32(&self, machine: &Machine, va: u64) -> ShadowRead {
        let Ok(s) = self.state.lock() else { return ShadowRead::Miss };
        let Some(&f) = s.map.get(&(va >> 12)) else { return ShadowRead::Miss };
        let mut b = [0u8; 4];
        // The lock is held: no invalidation of this page can complete its
        // `start` while we read, so `f` is still the page's frame.
        if machine.read_frame(f, (va & 0xfff) as usize, &mut b).is_err() {
            return ShadowRead::Miss;
        }
        ShadowRead::Hit(u32::from_ne_bytes(b))
    }

    /// Fill the translation of `va` from the primary (faulting it in for
    /// reading), unless an invalidation overlapped. Returns whether it did.
    pub fn fill(&self, mm: &Mm, va: u64) -> bool {
        let seq = match self.state.lock() {
            Ok(s) if s.in_progress == 0 => s.seq,
            _ => return false,
        };
        let mut b = [0u8; 1];
        if mm.read(va, &mut b).is_err() {
            return false;
        }
        let Some(f) = mm.phys(va) else { return false };
        let Ok(mut s) = self.state.lock() else { return false };
        if s.in_progress != 0 || s.seq != seq {
            return false; // something changed in between: look again
        }
        s.map.insert(va >> 12, f);
        true
    }

    /// Cached translations (for tests and reports).
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use softmm::{Config, MapKind, Placement, Prot};
    let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() })?;
    let mm = machine.new_mm()?;
    let base = mm.mmap(0x1000_0000, 16 << 12, Prot::RW, MapKind::Private, Placement::Fixed)?;
    mm.write(base, &7u32.to_ne_bytes())?;
    let shadow = Arc::new(ShadowTlb::default());
    let _sub = mm.register_notifier(shadow.clone());
    assert_eq!(shadow.read_u32(&machine, base), ShadowRead::Miss);
    assert!(shadow.fill(&mm, base));
    assert_eq!(shadow.read_u32(&machine, base), ShadowRead::Hit(7));
    let child = mm.fork()?; // write-protects: the shadow drops the page
    assert_eq!(shadow.read_u32(&machine, base), ShadowRead::Miss);
    assert!(shadow.fill(&mm, base));
    mm.write(base, &8u32.to_ne_bytes())?; // COW: a new frame, the shadow drops it again
    assert_eq!(shadow.read_u32(&machine, base), ShadowRead::Miss);
    assert!(shadow.fill(&mm, base));
    assert_eq!(shadow.read_u32(&machine, base), ShadowRead::Hit(8));
    drop(child);
    mm.munmap(base, 16 << 12)?;
    assert!(shadow.is_empty());
    println!("shadow TLB stayed coherent through fork, COW and munmap");
    Ok(())
}
