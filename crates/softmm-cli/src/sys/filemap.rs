//! Read faults on a file of this process's page cache: the Linux side of
//! `bench file`, with its raw pointer argued for here once.

use rustix::mm::{MapFlags, ProtFlags};
use std::fs::File;
use std::io;

const PAGE: usize = 4096;

/// What one mapping of the file cost.
pub struct Passes {
    /// ns for the first load of every page: each a read fault, or a page
    /// that an earlier fault's fault-around mapped.
    pub first_ns: u64,
    /// ns for the same loads again, every page mapped.
    pub second_ns: u64,
    /// Minor faults the first pass took (this process's count).
    pub faults: u64,
}

/// Map `len` bytes of `file` shared and read-only, load the first byte of
/// every page twice over, and unmap.
pub fn touch_mapped(file: &File, len: usize) -> io::Result<Passes> {
    // SAFETY: a new mapping at an address the kernel chooses cannot overlap
    // memory Rust knows about; it is read-only and unmapped below.
    let p = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::SHARED, file, 0) }?;
    let base = p.cast::<u8>();
    let pass = || {
        let t = super::mono_ns();
        let mut sum = 0u8;
        for off in (0..len).step_by(PAGE) {
            // SAFETY: `off < len`, inside the readable mapping just made;
            // the file is at least `len` long (the caller made it so), so no
            // page lies past its end.
            sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(base.add(off)) });
        }
        std::hint::black_box(sum);
        super::mono_ns().saturating_sub(t)
    };
    let before = minor_faults()?;
    let first_ns = pass();
    let faults = minor_faults()?.saturating_sub(before);
    let second_ns = pass();
    // SAFETY: exactly the mapping made above; no reference into it remains.
    unsafe { rustix::mm::munmap(p, len) }?;
    Ok(Passes { first_ns, second_ns, faults })
}

/// This process's minor faults so far (`/proc/self/stat`, field 10).
fn minor_faults() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces: count after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no minflt field in /proc/self/stat"))
}
