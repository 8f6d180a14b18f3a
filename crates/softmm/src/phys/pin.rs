//! Pin counts: a frame's half of page pins (`mm/pin.rs` owns the rest).
//!
//! A pin is a reference that also counts in `FrameMeta::pins`, so that
//! "maybe pinned" can be told from a plain reference (Linux's
//! `folio_maybe_dma_pinned`, exact here). This module owns only the two
//! counts and the order in which they move; who may pin, when, and what a
//! pin promises (exclusive pages, fork copies pinned pages, reclaim leaves
//! them alone) is `mm/pin.rs`, which knows address spaces and tables.

/// The counts the pin protocol works on: frame metadata's std atomics, and
/// under loom loom's, so that the loom model in `mm/pin.rs` runs this very
/// code.
pub(crate) trait PinCounts {
    /// The reference count (pins included), acquire.
    fn refs(&self) -> u32;
    /// The pin count, acquire.
    fn pins(&self) -> u32;
    fn add_pin(&self);
    fn sub_pin(&self);
    fn add_ref(&self);
    /// Returns the reference count before.
    fn sub_ref(&self) -> u32;
}

/// Take a pin: under the page-table lock mapping the frame, which COW's
/// reuse test also holds, so the order of the two increments is not
/// observable there.
#[inline]
pub(crate) fn take_pin(c: &impl PinCounts) {
    c.add_pin();
    c.add_ref();
}

/// Drop a pin, with no lock held: the pin count first, then the reference
/// (returns the reference count before, 1 meaning the caller must free).
/// With `unpinned_refs` reading the reference count before the pin count,
/// a racing unpin can only make that read high (a needless COW copy),
/// never low (a wrong reuse of a page someone else maps).
#[inline]
pub(crate) fn drop_pin(c: &impl PinCounts) -> u32 {
    c.sub_pin();
    c.sub_ref()
}

/// References that are not pins: what COW's reuse test and a pin's
/// exclusivity test look at. Reference count first (see `drop_pin`).
#[inline]
pub(crate) fn unpinned_refs(c: &impl PinCounts) -> u32 {
    let refs = c.refs();
    refs.saturating_sub(c.pins())
}
