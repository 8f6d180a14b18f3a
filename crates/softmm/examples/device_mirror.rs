//! An HMM-like device mirror: a device with its own page table over one
//! range of a softmm address space and its own fault path, kept coherent
//! by an interval notifier and its sequence count (Linux's
//! `mmu_interval_notifier` + `hmm_range_fault` pattern).
//!
//! - Device fault: `seq = read_begin()`, fault the page in on the primary
//!   and look up its frame (no lock held), then take the device lock and
//!   install the entry only if `!read_retry(seq)`; otherwise start over.
//! - Invalidation callback: take the device lock, drop the range's
//!   entries, `set_seq`.
//! - Device access: under the device lock, through the entry.
//!
//! Run: `cargo run --release -p softmm --example device_mirror`.

use softmm::notifier::{IntervalHandle, IntervalOps, Range};
use softmm::{FrameId, IntervalNotifier, Machine, Mm};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Table {
    entries: Mutex<HashMap<u64, FrameId>>,
}

impl IntervalOps for Table {
    fn invalidate(&self, h: &IntervalHandle<'_>, r: &Range, cur_seq: u64) -> bool {
        let Ok(mut e) = self.entries.lock() else { return true };
        e.retain(|&vpn, _| {
            let va = vpn << 12;
            va < r.start || va >= r.end
        });
        h.set_seq(cur_seq);
        true
    }
}

/// The device's mirror of `[start, start + len)` of one address space.
pub struct DeviceMirror {
    table: Arc<Table>,
    interval: IntervalNotifier,
}

impl DeviceMirror {
    pub fn new(mm: &Mm, start: u64, len: u64) -> softmm::Result<DeviceMirror> {
        let table = Arc::new(Table::default());
        let interval = mm.insert_interval_notifier(start, len, table.clone())?;
        Ok(DeviceMirror { table, interval })
    }

    /// The device's fault path: make `va` present in the mirror (read).
    /// Returns false when the primary has nothing readable there.
    pub fn fault(&self, mm: &Mm, va: u64) -> bool {
        let (lo, hi) = self.interval.range();
        if va < lo || va >= hi {
            return false;
        }
        for _ in 0..1000 {
            let seq = self.interval.read_begin();
            let mut b = [0u8; 1];
            if mm.read(va, &mut b).is_err() {
                return false;
            }
            let Some(f) = mm.phys(va) else { continue };
            let Ok(mut e) = self.table.entries.lock() else { return false };
            if self.interval.read_retry(seq) {
                continue; // an invalidation overlapped: look again
            }
            e.insert(va >> 12, f);
            return true;
        }
        false
    }

    /// A device read of the `u32` at `va`: `None` is a device page fault.
    pub fn read_u32(&self, machine: &Machine, va: u64) -> Option<u32> {
        let e = self.table.entries.lock().ok()?;
        let f = *e.get(&(va >> 12))?;
        let mut b = [0u8; 4];
        machine.read_frame(f, (va & 0xfff) as usize, &mut b).ok()?;
        Some(u32::from_ne_bytes(b))
    }
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use softmm::{Config, MapKind, Placement, Prot};
    let machine = Machine::new(Config { arena_bytes: 64 << 20, ..Config::default() })?;
    let mm = machine.new_mm()?;
    let base = mm.mmap(0x1000_0000, 16 << 12, Prot::RW, MapKind::Private, Placement::Fixed)?;
    mm.write(base, &5u32.to_ne_bytes())?;
    let dev = DeviceMirror::new(&mm, base, 16 << 12)?;
    assert_eq!(dev.read_u32(&machine, base), None);
    assert!(dev.fault(&mm, base));
    assert_eq!(dev.read_u32(&machine, base), Some(5));
    mm.madvise(base, 4096, softmm::Advice::DontNeed)?; // the device entry goes
    assert_eq!(dev.read_u32(&machine, base), None);
    assert!(dev.fault(&mm, base));
    assert_eq!(dev.read_u32(&machine, base), Some(0));
    println!("device mirror stayed coherent through DONTNEED");
    Ok(())
}
