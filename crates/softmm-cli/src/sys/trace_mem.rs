//! mmap, munmap, mprotect and madvise on the addresses a trace names, for
//! the Linux trace worker: any address, but never over the worker's own
//! memory.
//!
//! [`TraceMem`] remembers which pages the trace mapped (plain memory, so
//! the set is inherited across fork) and refuses, before the call, any
//! operation whose range overlaps a mapping of /proc/self/maps outside that
//! set. So every page these calls can change is either unmapped or the
//! trace's own, and no Rust reference points into trace memory (the worker
//! reaches it only through raw addresses, with the guarded copies of
//! `trace/guarded.rs`, after [`TraceMem::check_access`]).
//!
//! The worker's other threads (futex waiters) map nothing, so /proc/self/maps
//! cannot change between the check and the call.

use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use std::collections::BTreeMap;

const PAGE: u64 = 4096;

/// `MREMAP_DONTUNMAP` (Linux 5.7), spelled out as uapi/linux/mman.h has it.
const MREMAP_DONTUNMAP: i32 = 4;

/// What the kernel answered: `Err(errno)` when it refused the call.
pub type Answer = Result<(), Errno>;

/// `MAP_PRIVATE` or `MAP_SHARED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Private,
    Shared,
}

/// The trace's memory in this process, and the calls that change it.
#[derive(Default)]
pub struct TraceMem {
    owned: Owned,
}

impl TraceMem {
    /// Refuse `[start, end)` if it overlaps memory the trace did not map.
    pub fn check(&self, start: u64, end: u64) -> Result<(), String> {
        for m in read_maps()? {
            if m.start < end && start < m.end {
                let (s, e) = (m.start.max(start), m.end.min(end));
                if !self.owned.covers(s, e) {
                    return Err(format!(
                        "the trace touches {s:#x}-{e:#x}, which is the Linux runner's own memory ({:#x}-{:#x}); \
                         choose other addresses",
                        m.start, m.end
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refuse a load or store of `len` bytes at `addr` unless every page it
    /// touches is unmapped or the trace's.
    pub fn check_access(&self, addr: u64, len: u64) -> Result<(), String> {
        if len > 1 << 30 {
            return Err("access longer than 1 GiB".into());
        }
        if len == 0 {
            return Ok(());
        }
        // An access may end exactly at the top of the 64-bit space (its
        // last byte is u64::MAX); only one past it wraps.
        let last = addr.checked_add(len - 1).ok_or("access range wraps around")?;
        let end = (last | (PAGE - 1)).saturating_add(1);
        self.check(addr & !(PAGE - 1), end)
    }

    /// Check the pages a call on `[addr, addr + len)` can change. A range
    /// that wraps is not checked: the kernel rejects it before touching
    /// anything (EINVAL or ENOMEM).
    fn check_span(&self, addr: u64, len: u64) -> Result<(), String> {
        match span(addr, len) {
            Some((s, e)) => self.check(s, e),
            None => Ok(()),
        }
    }

    /// mmap(2) anonymous memory at exactly `addr`: `MAP_FIXED` when the
    /// range overlaps trace memory (real MAP_FIXED semantics), else
    /// `MAP_FIXED_NOREPLACE`, which can never clobber the runner.
    pub fn mmap(&mut self, addr: u64, len: u64, prot: ProtFlags, sharing: Sharing) -> Result<Answer, String> {
        let mut flags = match sharing {
            Sharing::Private => MapFlags::PRIVATE,
            Sharing::Shared => MapFlags::SHARED,
        };
        flags |= MapFlags::FIXED_NOREPLACE;
        if let Some((s, e)) = span(addr, len) {
            self.check(s, e)?;
            if read_maps()?.iter().any(|m| m.start < e && s < m.end) {
                flags = flags.difference(MapFlags::FIXED_NOREPLACE) | MapFlags::FIXED;
            }
        }
        // SAFETY: with MAP_FIXED the range holds only trace memory (checked
        // above; see the module comment); MAP_FIXED_NOREPLACE never
        // replaces anything. Either way no Rust object is affected.
        let p = match unsafe { rustix::mm::mmap_anonymous(addr as *mut _, len as usize, prot, flags) } {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        if p as u64 != addr {
            // Kernels before 4.17 treat MAP_FIXED_NOREPLACE as a hint.
            // SAFETY: `p..p + len` is the mapping just made, which nothing
            // else knows of.
            let _ = unsafe { rustix::mm::munmap(p, len as usize) };
            return Err(format!("the kernel placed a fixed mapping at {:#x}, not {addr:#x}", p as u64));
        }
        if let Some((s, e)) = span(addr, len) {
            self.owned.add(s, e);
        }
        Ok(Ok(()))
    }

    /// mmap(2) of `fd` from byte `offset` at exactly `addr`, as `mmap`
    /// places anonymous memory (MAP_FIXED only over trace memory).
    #[allow(clippy::too_many_arguments)]
    pub fn mmap_file(
        &mut self,
        addr: u64,
        len: u64,
        prot: ProtFlags,
        sharing: Sharing,
        fd: std::os::fd::BorrowedFd<'_>,
        offset: u64,
    ) -> Result<Answer, String> {
        let mut flags = match sharing {
            Sharing::Private => MapFlags::PRIVATE,
            Sharing::Shared => MapFlags::SHARED,
        };
        flags |= MapFlags::FIXED_NOREPLACE;
        if let Some((s, e)) = span(addr, len) {
            self.check(s, e)?;
            if read_maps()?.iter().any(|m| m.start < e && s < m.end) {
                flags = flags.difference(MapFlags::FIXED_NOREPLACE) | MapFlags::FIXED;
            }
        }
        // SAFETY: as in `mmap`: MAP_FIXED only over trace memory, which no
        // Rust object lives in; MAP_FIXED_NOREPLACE replaces nothing.
        let p = match unsafe { rustix::mm::mmap(addr as *mut _, len as usize, prot, flags, fd, offset) } {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        if p as u64 != addr {
            // SAFETY: as in `mmap`, the mapping just made.
            let _ = unsafe { rustix::mm::munmap(p, len as usize) };
            return Err(format!("the kernel placed a fixed mapping at {:#x}, not {addr:#x}", p as u64));
        }
        if let Some((s, e)) = span(addr, len) {
            self.owned.add(s, e);
        }
        Ok(Ok(()))
    }

    /// msync(2) with `MS_SYNC`.
    pub fn msync(&self, addr: u64, len: u64) -> Result<Answer, String> {
        self.check_span(addr, len)?;
        // SAFETY: writing pages back changes no memory; the range holds
        // only trace memory or nothing (checked above).
        Ok(errno_answer(unsafe { libc::msync(addr as *mut libc::c_void, len as usize, libc::MS_SYNC) }))
    }

    /// munmap(2).
    pub fn munmap(&mut self, addr: u64, len: u64) -> Result<Answer, String> {
        self.check_span(addr, len)?;
        // SAFETY: the range holds only trace memory or nothing (checked
        // above; see the module comment), or the kernel rejects it.
        let r = unsafe { rustix::mm::munmap(addr as *mut _, len as usize) };
        if r.is_ok() {
            if let Some((s, e)) = span(addr, len) {
                self.owned.remove(s, e);
            }
        }
        Ok(r)
    }

    /// mremap(2) with `MREMAP_MAYMOVE`, `MREMAP_FIXED` (to `fixed`) and
    /// `MREMAP_DONTUNMAP` as asked. The old range and a fixed target must
    /// be trace memory or unmapped; growth in place takes only free
    /// addresses, and a kernel-chosen target is free, so nothing of the
    /// runner moves or goes. Returns the mapping's address.
    pub fn mremap(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        maymove: bool,
        fixed: Option<u64>,
        dontunmap: bool,
    ) -> Result<Result<u64, Errno>, String> {
        // The old range (at least its first page: a zero old length
        // duplicates a mapping) and a fixed target.
        self.check_span(old, old_len.max(1))?;
        if let Some(to) = fixed {
            self.check_span(to, new_len)?;
        }
        let bit = |on: bool, b: i32| if on { b } else { 0 };
        let flags = bit(maymove, libc::MREMAP_MAYMOVE)
            | bit(fixed.is_some(), libc::MREMAP_FIXED)
            | bit(dontunmap, MREMAP_DONTUNMAP);
        // SAFETY: every page this call can unmap or move is trace memory
        // (checked above; see the module comment), and the kernel places a
        // moved mapping only over free addresses or the fixed target.
        let p = unsafe {
            libc::mremap(
                old as *mut libc::c_void,
                old_len as usize,
                new_len as usize,
                flags,
                fixed.unwrap_or(0) as usize,
            )
        };
        if p == libc::MAP_FAILED {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Ok(Err(Errno::from_raw_os_error(errno)));
        }
        let at = p as u64;
        let aligned = |l: u64| l.wrapping_add(PAGE - 1) & !(PAGE - 1);
        let (old_len, new_len) = (aligned(old_len), aligned(new_len));
        if at == old {
            // In place: the tail of a shrink went, a growth is ours.
            self.owned.remove(old + new_len.min(old_len), old + old_len);
            self.owned.add(old, old + new_len);
        } else {
            if !dontunmap {
                self.owned.remove(old, old + old_len);
            }
            self.owned.add(at, at + new_len);
        }
        Ok(Ok(at))
    }

    /// mprotect(2).
    pub fn mprotect(&self, addr: u64, len: u64, prot: ProtFlags) -> Result<Answer, String> {
        self.check_span(addr, len)?;
        let flags = MprotectFlags::from_bits_retain(prot.bits());
        // SAFETY: as in `munmap`: only trace memory changes protection.
        Ok(unsafe { rustix::mm::mprotect(addr as *mut _, len as usize, flags) })
    }

    /// madvise(2) with `advice` (a `MADV_*` value).
    pub fn madvise(&self, addr: u64, len: u64, advice: i32) -> Result<Answer, String> {
        self.check_span(addr, len)?;
        // SAFETY: as in `munmap`: only trace memory is changed (zapped,
        // punched, populated or flagged); no Rust object lives there.
        let r = unsafe { libc::madvise(addr as *mut libc::c_void, len as libc::size_t, advice) };
        let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Ok(if r == 0 { Ok(()) } else { Err(Errno::from_raw_os_error(errno())) })
    }
}

/// mlock(2) and munlock(2), on the trace's memory only.
impl TraceMem {
    /// mlock(2).
    pub fn mlock(&self, addr: u64, len: u64) -> Result<Answer, String> {
        self.check_lock_span(addr, len)?;
        // SAFETY: locking changes no memory; the range holds only trace
        // memory or nothing (checked above).
        Ok(errno_answer(unsafe { libc::mlock(addr as *const libc::c_void, len as usize) }))
    }

    /// munlock(2).
    pub fn munlock(&self, addr: u64, len: u64) -> Result<Answer, String> {
        self.check_lock_span(addr, len)?;
        // SAFETY: as in `mlock`.
        Ok(errno_answer(unsafe { libc::munlock(addr as *const libc::c_void, len as usize) }))
    }

    /// Check the pages mlock or munlock of `[addr, addr + len)` touch:
    /// the address rounded down, the length with its page offset rounded
    /// up, in the kernel's wrapping arithmetic (a range that wraps or is
    /// empty changes nothing).
    fn check_lock_span(&self, addr: u64, len: u64) -> Result<(), String> {
        let l = len.wrapping_add(addr % PAGE).wrapping_add(PAGE - 1) & !(PAGE - 1);
        let start = addr & !(PAGE - 1);
        match start.checked_add(l) {
            Some(end) if end > start => self.check(start, end),
            _ => Ok(()),
        }
    }
}

/// A libc call's answer: `Err(errno)` when it returned -1.
fn errno_answer(r: libc::c_int) -> Answer {
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)))
    }
}

/// Pages mapped by the trace: start -> end, merged.
#[derive(Default)]
struct Owned {
    ranges: BTreeMap<u64, u64>,
}

impl Owned {
    fn add(&mut self, start: u64, end: u64) {
        self.remove(start, end);
        self.ranges.insert(start, end);
    }
    fn remove(&mut self, start: u64, end: u64) {
        let keys: Vec<(u64, u64)> =
            self.ranges.range(..end).filter(|(_, &e)| e > start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in keys {
            self.ranges.remove(&s);
            if s < start {
                self.ranges.insert(s, start);
            }
            if e > end {
                self.ranges.insert(end, e);
            }
        }
    }
    fn covers(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        for (&s, &e) in self.ranges.range(..end) {
            if e <= at {
                continue;
            }
            if s > at {
                return false;
            }
            at = e;
            if at >= end {
                return true;
            }
        }
        at >= end
    }
}

/// One mapping of /proc/self/maps.
struct MapsEntry {
    start: u64,
    end: u64,
}

fn read_maps() -> Result<Vec<MapsEntry>, String> {
    let text = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let range = line.split_whitespace().next().unwrap_or("");
        let (s, e) = range.split_once('-').ok_or("malformed /proc/self/maps")?;
        let s = u64::from_str_radix(s, 16).map_err(|_| "malformed /proc/self/maps")?;
        let e = u64::from_str_radix(e, 16).map_err(|_| "malformed /proc/self/maps")?;
        out.push(MapsEntry { start: s, end: e });
    }
    Ok(out)
}

/// The range `[addr, addr + PAGE_ALIGN(len))`, if it does not wrap.
fn span(addr: u64, len: u64) -> Option<(u64, u64)> {
    let l = len.checked_add(PAGE - 1)? & !(PAGE - 1);
    Some((addr & !(PAGE - 1), addr.checked_add(l)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_ranges() {
        let mut o = Owned::default();
        o.add(0x1000, 0x5000);
        assert!(o.covers(0x1000, 0x5000));
        assert!(o.covers(0x2000, 0x3000));
        o.remove(0x2000, 0x3000);
        assert!(!o.covers(0x1000, 0x5000));
        assert!(o.covers(0x3000, 0x5000));
        o.add(0x2000, 0x3000);
        assert!(o.covers(0x1000, 0x5000));
        assert!(!o.covers(0x0, 0x2000));
    }
}
