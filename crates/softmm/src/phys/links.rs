//! Links between frames that do not fit in a frame's metadata line: for
//! each frame, the frames that lean on it.
//!
//! The arena stores them and never reads them itself. Its one user is
//! `pgtable/borrow.rs`: a PTE table frame's links are the tables that
//! borrow its entries (what the tables mean, and the lock that orders a
//! link's coming and going, is said there). Kept here, beside the metadata
//! it extends, so that whoever holds the arena holds the links.
//!
//! Locks: a shard mutex is a leaf.

use super::FrameId;
use std::collections::HashMap;

/// Shards: links of unrelated frames rarely meet on a lock.
const SHARDS: usize = 64;

/// Each frame's dependent frames, per arena.
pub(crate) struct FrameLinks {
    shards: Box<[Shard]>,
}

/// Frame -> the frames linked to it.
type Shard = parking_lot::Mutex<HashMap<FrameId, Vec<FrameId>>>;

impl Default for FrameLinks {
    fn default() -> Self {
        FrameLinks { shards: (0..SHARDS).map(|_| parking_lot::Mutex::new(HashMap::new())).collect() }
    }
}

impl FrameLinks {
    fn shard(&self, t: FrameId) -> &Shard {
        &self.shards[t.0 as usize % SHARDS]
    }

    /// Link `c` to `t`.
    pub(crate) fn add(&self, t: FrameId, c: FrameId) {
        self.shard(t).lock().entry(t).or_default().push(c);
    }

    /// Unlink `c` from `t` (nothing if it is not linked).
    pub(crate) fn remove(&self, t: FrameId, c: FrameId) {
        let mut s = self.shard(t).lock();
        if let Some(list) = s.get_mut(&t) {
            list.retain(|&x| x != c);
            if list.is_empty() {
                s.remove(&t);
            }
        }
    }

    /// Unlink everything from `t`; what was linked.
    pub(crate) fn take(&self, t: FrameId) -> Vec<FrameId> {
        self.shard(t).lock().remove(&t).unwrap_or_default()
    }

    /// What is linked to `t` now.
    pub(crate) fn list(&self, t: FrameId) -> Vec<FrameId> {
        self.shard(t).lock().get(&t).cloned().unwrap_or_default()
    }

    /// Every (frame, linked frames) pair, for audits.
    pub(crate) fn snapshot(&self) -> Vec<(FrameId, Vec<FrameId>)> {
        self.shards.iter().flat_map(|s| s.lock().iter().map(|(&t, c)| (t, c.clone())).collect::<Vec<_>>()).collect()
    }
}
