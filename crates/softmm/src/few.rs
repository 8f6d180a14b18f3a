//! `Few`: a list that keeps its first element inline.
//!
//! For the short lists of hot paths that would otherwise allocate every
//! time: a reverse-map walk usually meets one address space, a visit of a
//! frame's mappings usually changes one entry, and a futex wake usually
//! wakes one waiter.

/// A list whose first element needs no allocation.
pub(crate) struct Few<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few { first: None, rest: Vec::new() }
    }
}

impl<T> Few<T> {
    /// Append `v`.
    pub(crate) fn push(&mut self, v: T) {
        match self.first {
            None => self.first = Some(v),
            Some(_) => self.rest.push(v),
        }
    }

    /// How many elements it holds.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Every element, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(self.rest.iter())
    }

    /// Every element, in order, to change in place.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.first.iter_mut().chain(self.rest.iter_mut())
    }

    /// Remove and return every element, in order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.first.take().into_iter().chain(self.rest.drain(..))
    }
}

#[cfg(test)]
mod tests {
    use super::Few;

    #[test]
    fn keeps_order_and_drains_to_empty() {
        let mut f = Few::default();
        assert_eq!(f.iter().count(), 0);
        for i in 0..5 {
            f.push(i);
        }
        assert_eq!(f.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(f.len(), 5);
        assert_eq!(f.drain().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!((f.iter().count(), f.len()), (0, 0));
        f.push(7);
        assert_eq!(f.len(), 1);
        assert_eq!(f.iter().copied().collect::<Vec<_>>(), [7]);
    }
}
