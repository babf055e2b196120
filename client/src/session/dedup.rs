//! A bounded window of recently seen server inbox ids.
//!
//! Delivery is at-least-once (invariant I3): the server repeats an item
//! until it sees the `DeliverAck`. The window lets the session hand each
//! item to the application once. It remembers the last `len_max` ids; an id
//! older than that may be reported again.

use std::collections::{HashSet, VecDeque};

#[derive(Debug)]
pub(crate) struct DedupWindow {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    len_max: usize,
}

impl DedupWindow {
    pub(crate) fn new(len_max: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            len_max,
        }
    }

    /// Records `id`; true when it was not in the window (first sighting).
    /// With `len_max == 0` every id is new.
    pub(crate) fn insert(&mut self, id: u64) -> bool {
        if self.len_max == 0 {
            return true;
        }
        if self.seen.contains(&id) {
            return false;
        }
        if self.order.len() >= self.len_max {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.order.push_back(id);
        self.seen.insert(id);
        debug_assert_eq!(self.seen.len(), self.order.len());
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exactly_len_max_ids() {
        let mut w = DedupWindow::new(3);
        assert!(w.insert(1));
        assert!(w.insert(2));
        assert!(w.insert(3));
        assert!(!w.insert(1), "1 is still in a full window");
        assert!(w.insert(4), "4 evicts 1");
        assert_eq!(w.len(), 3);
        assert!(w.insert(1), "1 was evicted, so it is new again");
        assert!(!w.insert(3));
        assert!(!w.insert(4));
        assert!(w.insert(2), "2 was evicted by 1");
    }

    #[test]
    fn zero_len_disables_dedup() {
        let mut w = DedupWindow::new(0);
        assert!(w.insert(7));
        assert!(w.insert(7));
        assert_eq!(w.len(), 0);
    }
}
