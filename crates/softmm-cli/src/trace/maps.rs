//! The `maps A` operation (TRACE.md, version 2), for both runners: which
//! VMAs it lists and how its line is written.
//!
//! A space's *named ranges* are the ranges of its successful `mmap`s, of
//! in-place `mremap` growth and of `mremap ... fixed` targets; a
//! fork inherits its parent's and they never shrink. `maps` lists the VMAs
//! that overlap one of them, so that what else lives in a real process
//! (the worker's own code, heap and stacks) stays out of the comparison.

/// The ranges a trace named in one address space, as `[start, end)`.
#[derive(Clone, Debug, Default)]
pub struct NamedRanges(Vec<(u64, u64)>);

impl NamedRanges {
    /// Name the range of a successful `mmap ADDR LEN` (LEN rounded up to
    /// pages, as mmap does; a length that cannot be rounded names nothing,
    /// as no such mmap succeeds).
    pub fn add_mmap(&mut self, addr: u64, len: u64) {
        let Some(end) = len.checked_add(0xfff).map(|l| l & !0xfff).and_then(|l| addr.checked_add(l)) else {
            return;
        };
        if end > addr && !self.0.contains(&(addr, end)) {
            self.0.push((addr, end));
        }
    }

    /// Name `[start, end)` (page-aligned, from a successful mremap: in-place
    /// growth or a fixed target).
    pub fn add_range(&mut self, start: u64, end: u64) {
        if end > start && !self.0.contains(&(start, end)) {
            self.0.push((start, end));
        }
    }

    /// The named ranges, in the order they were named.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Whether `[start, end)` overlaps a named range.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.0.iter().any(|&(s, e)| s < end && start < e)
    }
}

/// The output line of an `mremap` of `old` that succeeded at `at`, and the
/// range it names (TRACE.md): `at 0xNEW` for a fixed target, `ok` in
/// place (growth names the grown range), `moved` when the kernel chose
/// the address (not named).
pub fn remap_line(old: u64, new_len: u64, fixed: bool, at: u64) -> (String, Option<(u64, u64)>) {
    let named = |start: u64| {
        let len = new_len.checked_add(0xfff).map(|l| l & !0xfff)?;
        Some((start, start.checked_add(len)?))
    };
    if fixed {
        (format!("at {at:#x}"), named(at))
    } else if at == old {
        ("ok".into(), named(old))
    } else {
        ("moved".into(), None)
    }
}

/// One VMA as `maps` writes it.
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    /// As `/proc/PID/maps` writes them: `rw-p`, `r-xs`.
    pub perms: String,
    /// `anon`, or `file F+0xOFF`.
    pub kind: String,
}

/// The output line of `maps`: the entries that overlap a named range, in
/// the order given (address order), joined by `;`; `maps` alone when none.
pub fn maps_line(entries: impl IntoIterator<Item = MapsEntry>, named: &NamedRanges) -> String {
    let listed: Vec<String> = entries
        .into_iter()
        .filter(|e| named.overlaps(e.start, e.end))
        .map(|e| format!("{:#x}-{:#x} {} {}", e.start, e.end, e.perms, e.kind))
        .collect();
    if listed.is_empty() {
        "maps".into()
    } else {
        format!("maps {}", listed.join(";"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: u64, end: u64, perms: &str) -> MapsEntry {
        MapsEntry { start, end, perms: perms.into(), kind: "anon".into() }
    }

    #[test]
    fn lists_what_overlaps_named_ranges() {
        let mut named = NamedRanges::default();
        assert_eq!(maps_line([entry(0x1000, 0x2000, "rw-p")], &named), "maps");
        named.add_mmap(0x10000, 0x1001);
        named.add_mmap(u64::MAX - 0xfff, 0x2000); // cannot be mapped: not named
        named.add_mmap(0x10000, 0);
        let line = maps_line(
            [entry(0x8000, 0x10000, "r--p"), entry(0x10000, 0x11000, "r-xp"), entry(0x11000, 0x13000, "rw-s")],
            &named,
        );
        assert_eq!(line, "maps 0x10000-0x11000 r-xp anon;0x11000-0x13000 rw-s anon");
    }
}
