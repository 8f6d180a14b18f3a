//! Futex keys: what makes two waits on two addresses the same futex.

use crate::phys::FrameId;

/// The identity of a futex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FutexKey {
    /// Physical keys: a frame and the word's offset in it. The waiter
    /// holding this key holds a reference on the frame.
    Frame {
        /// The frame holding the word.
        frame: FrameId,
        /// The word's byte offset in the frame.
        offset: u32,
    },
    /// Linux's key for private mappings (and, in physical mode, for a page
    /// that maps nothing but the zero frame): the address space and address.
    Private {
        /// The address space's id.
        mm: u64,
        /// The word's virtual address.
        addr: u64,
    },
    /// Linux's key for shared mappings: the shared object and byte offset.
    Shared {
        /// The shared object's id.
        object: u64,
        /// The word's byte offset in the object.
        offset: u64,
    },
}

impl FutexKey {
    /// The frame this key holds a reference on, if any.
    pub fn frame(&self) -> Option<FrameId> {
        match self {
            FutexKey::Frame { frame, .. } => Some(*frame),
            _ => None,
        }
    }

    /// A well-mixed hash of the key, for the bucket choice.
    pub(crate) fn hash(&self) -> u64 {
        let (tag, a, b) = match *self {
            FutexKey::Frame { frame, offset } => (1u64, u64::from(frame.0), u64::from(offset)),
            FutexKey::Private { mm, addr } => (2, mm, addr),
            FutexKey::Shared { object, offset } => (3, object, offset),
        };
        let mut h = tag.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h = (h ^ a).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ b).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}
