//! An allocator of indices in `0..capacity` with amortised O(log n) operations and no scan.

use std::collections::BTreeSet;

/// Hands out the lowest free index of `0..capacity`, takes explicit reservations, and takes
/// indices back.
///
/// Indices below `next_fresh` are allocated unless they sit in `released`; indices at or above it
/// are free unless they sit in `ahead` (reservations made past the high-water mark). Allocation
/// pops the lowest released index or advances the mark, skipping each reservation once, so every
/// operation is O(log n) amortised and the memory grows with the number of holes and
/// reservations, not with the capacity (which may be 2^48 blocks of an IPv6 pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexAllocator {
    capacity: u128,
    next_fresh: u128,
    released: BTreeSet<u128>,
    ahead: BTreeSet<u128>,
    allocated: u128,
}

impl IndexAllocator {
    /// An allocator with every index of `0..capacity` free.
    pub fn new(capacity: u128) -> IndexAllocator {
        IndexAllocator {
            capacity,
            next_fresh: 0,
            released: BTreeSet::new(),
            ahead: BTreeSet::new(),
            allocated: 0,
        }
    }

    /// How many indices exist.
    pub fn capacity(&self) -> u128 {
        self.capacity
    }

    /// How many indices are allocated.
    pub fn allocated(&self) -> u128 {
        self.allocated
    }

    /// How many indices are free.
    pub fn free(&self) -> u128 {
        self.capacity - self.allocated
    }

    /// Allocates the lowest free index, or `None` when all are taken.
    pub fn allocate(&mut self) -> Option<u128> {
        if let Some(index) = self.released.pop_first() {
            self.allocated += 1;
            return Some(index);
        }
        while self.next_fresh < self.capacity {
            let index = self.next_fresh;
            self.next_fresh += 1;
            if !self.ahead.remove(&index) {
                self.allocated += 1;
                return Some(index);
            }
        }
        None
    }

    /// Allocates exactly `index`; false when it is taken or out of range.
    pub fn reserve(&mut self, index: u128) -> bool {
        if index >= self.capacity {
            return false;
        }
        let done =
            if index < self.next_fresh { self.released.remove(&index) } else { self.ahead.insert(index) };
        if done {
            self.allocated += 1;
        }
        done
    }

    /// Frees `index`; false when it was not allocated.
    pub fn release(&mut self, index: u128) -> bool {
        if index >= self.capacity {
            return false;
        }
        let done =
            if index < self.next_fresh { self.released.insert(index) } else { self.ahead.remove(&index) };
        if done {
            self.allocated -= 1;
        }
        done
    }

    /// True when `index` is allocated.
    pub fn is_allocated(&self, index: u128) -> bool {
        if index >= self.capacity {
            return false;
        }
        if index < self.next_fresh { !self.released.contains(&index) } else { self.ahead.contains(&index) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn lowest_first_and_reuse() {
        let mut a = IndexAllocator::new(4);
        assert_eq!(a.allocate(), Some(0));
        assert!(a.reserve(2));
        assert!(!a.reserve(2));
        assert_eq!(a.allocate(), Some(1));
        assert_eq!(a.allocate(), Some(3));
        assert_eq!(a.allocate(), None);
        assert!(a.release(1));
        assert!(!a.release(1));
        assert_eq!(a.allocate(), Some(1));
        assert!(!a.reserve(9));
        assert_eq!(a.free(), 0);
    }

    proptest! {
        /// The allocator agrees with a plain set model on every operation.
        #[test]
        fn matches_a_set_model(ops in proptest::collection::vec((0u8..3, 0u128..40), 0..300)) {
            let mut a = IndexAllocator::new(32);
            let mut model = BTreeSet::new();
            for (op, i) in ops {
                match op {
                    0 => {
                        let got = a.allocate();
                        let want = (0..32).find(|x| !model.contains(x));
                        prop_assert_eq!(got, want);
                        if let Some(x) = got { model.insert(x); }
                    }
                    1 => {
                        let want = i < 32 && !model.contains(&i);
                        prop_assert_eq!(a.reserve(i), want);
                        if want { model.insert(i); }
                    }
                    _ => {
                        let want = model.remove(&i);
                        prop_assert_eq!(a.release(i), want);
                    }
                }
                prop_assert_eq!(a.allocated(), model.len() as u128);
                for x in 0..34 {
                    prop_assert_eq!(a.is_allocated(x), model.contains(&x));
                }
            }
        }
    }
}
