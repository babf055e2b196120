//! Send deduplication: `(sender, client_msg_id) -> server_msg_id` for
//! recent sends, so a retried Send is acked again but stored once.
//!
//! Two bounds, both FIFO over inserts:
//! - per sender: an entry is forgotten after `window_len` later inserts by
//!   the same sender;
//! - per shard: an entry is forgotten after `entries_max` later inserts by
//!   anyone.
//!
//! A retry that arrives after its entry was forgotten is stored again; the
//! device discards the repeat by its id (invariant I3). The windows only
//! need to cover retries of sends still unacked when a connection drops.
//!
//! Layout: per sender a ring of `(client_msg_id, server_msg_id)` (16
//! bytes an entry), plus one shard-wide ring of sender ids in insert order
//! (8 bytes an entry) for the shard bound: 24 bytes per entry, plus ring
//! slack (capacity up to twice the length). Per sender with entries: a
//! 48-byte `Window` plus its hash-map slot. A lookup is O(1) when the
//! sender's ids only grow (the usual counter: anything above the largest
//! id seen is new), else a scan of at most `window_len` entries.
//!
//! Rebuilt from the log by calling `insert` for each accepted message in
//! log order: the same path as live use.

use std::collections::VecDeque;

use crate::hash::IdMap;
use std::fmt;

use crate::limits::Limits;
use crate::user::UserId;

/// One sender's recent sends, oldest first.
#[derive(Debug)]
struct Window {
    /// `(client_msg_id, server_msg_id)`, oldest first.
    entries: VecDeque<(u64, u64)>,
    /// Largest client id ever inserted while this window existed: an id
    /// above it cannot be in `entries`.
    client_id_max: u64,
    /// Entries of this sender in the shard-wide `order` ring. At least
    /// `entries.len()`: the extra ones were evicted by the window bound,
    /// and are the oldest of this sender's in `order`.
    in_order: u64,
}

/// The dedup table of one shard.
pub struct Dedup {
    window_len: usize,
    entries_max: usize,
    senders: IdMap<UserId, Window>,
    /// One sender id per insert, oldest first: the shard-wide FIFO.
    order: VecDeque<UserId>,
    /// Live entries (sum of the windows' lengths).
    len: usize,
}

impl fmt::Debug for Dedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("window_len", &self.window_len)
            .field("entries_max", &self.entries_max)
            .field("senders", &self.senders.len())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Dedup {
    /// A table bounded by `limits.dedup_window_len` and
    /// `limits.dedup_entries_max`.
    pub fn from_limits(limits: &Limits) -> Self {
        Self::new(limits.dedup_window_len, limits.dedup_entries_max)
    }

    /// A table remembering `window_len` sends per sender and `entries_max`
    /// in total (0 is raised to 1).
    pub fn new(window_len: usize, entries_max: usize) -> Self {
        Self {
            window_len: window_len.max(1),
            entries_max: entries_max.max(1),
            senders: IdMap::default(),
            order: VecDeque::new(),
            len: 0,
        }
    }

    /// The server id already given to this send, if it is remembered.
    pub fn lookup(&self, sender: UserId, client_msg_id: u64) -> Option<u64> {
        let window = self.senders.get(&sender)?;
        if client_msg_id > window.client_id_max {
            return None;
        }
        // Newest first: a retry is usually of a recent send.
        window
            .entries
            .iter()
            .rev()
            .find(|&&(client, _)| client == client_msg_id)
            .map(|&(_, server)| server)
    }

    /// Remembers that `(sender, client_msg_id)` was stored as
    /// `server_msg_id`. Call after `lookup` found nothing and the message
    /// was stored; evicts the oldest entries past the bounds.
    pub fn insert(&mut self, sender: UserId, client_msg_id: u64, server_msg_id: u64) {
        // A duplicate would shadow nothing but waste a slot; callers look
        // up first. Checked in debug builds only: it costs a scan.
        debug_assert!(self.lookup(sender, client_msg_id).is_none());
        let window = self.senders.entry(sender).or_insert_with(|| Window {
            entries: VecDeque::new(),
            client_id_max: 0,
            in_order: 0,
        });
        window.entries.push_back((client_msg_id, server_msg_id));
        window.client_id_max = window.client_id_max.max(client_msg_id);
        window.in_order += 1;
        if window.entries.len() > self.window_len {
            // Its slot in `order` stays and is skipped when reached.
            window.entries.pop_front();
        } else {
            self.len += 1;
        }
        self.order.push_back(sender);
        while self.order.len() > self.entries_max {
            self.pop_oldest();
        }
        debug_assert!(self.len <= self.entries_max && self.len <= self.order.len());
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Senders with at least one entry.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Drops the oldest insert shard-wide.
    fn pop_oldest(&mut self) {
        let Some(sender) = self.order.pop_front() else {
            return;
        };
        let Some(window) = self.senders.get_mut(&sender) else {
            // Every id in `order` has a window until its last slot goes.
            debug_assert!(false, "dedup order names a sender without a window");
            return;
        };
        let live = u64::try_from(window.entries.len()).unwrap_or(u64::MAX);
        if window.in_order > live {
            // This slot's entry was already evicted by the window bound.
        } else if window.entries.pop_front().is_some() {
            self.len -= 1;
        }
        window.in_order -= 1;
        if window.in_order == 0 {
            debug_assert!(window.entries.is_empty());
            self.senders.remove(&sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: UserId = UserId(15_551_230_001);
    const BOB: UserId = UserId(15_551_230_002);

    #[test]
    fn entry_size_is_pinned() {
        // Per entry: 16 bytes in the sender's ring + 8 in the shard ring.
        assert_eq!(std::mem::size_of::<(u64, u64)>(), 16);
        assert_eq!(std::mem::size_of::<UserId>(), 8);
        assert_eq!(std::mem::size_of::<Window>(), 48);
    }

    #[test]
    fn retry_found_then_stored_once() {
        let mut d = Dedup::from_limits(&Limits::default());
        assert_eq!(d.lookup(ALICE, 1), None);
        d.insert(ALICE, 1, 100);
        assert_eq!(d.lookup(ALICE, 1), Some(100));
        assert_eq!(d.lookup(BOB, 1), None);
        d.insert(BOB, 1, 200);
        assert_eq!(d.lookup(BOB, 1), Some(200));
        assert_eq!(d.lookup(ALICE, 1), Some(100));
        assert_eq!(d.len(), 2);
        assert_eq!(d.senders(), 2);
    }

    #[test]
    fn window_bound() {
        let window = 4;
        let mut d = Dedup::new(window, 100);
        for cid in 1..=window as u64 {
            d.insert(ALICE, cid, cid * 10);
        }
        // The oldest send is still inside the window.
        assert_eq!(d.lookup(ALICE, 1), Some(10));
        // One more send pushes it out.
        d.insert(ALICE, 5, 50);
        assert_eq!(d.lookup(ALICE, 1), None);
        assert_eq!(d.lookup(ALICE, 2), Some(20));
        assert_eq!(d.lookup(ALICE, 5), Some(50));
        assert_eq!(d.len(), window);
        // Another sender's window is separate.
        d.insert(BOB, 1, 11);
        assert_eq!(d.lookup(ALICE, 2), Some(20));
    }

    #[test]
    fn shard_bound() {
        let mut d = Dedup::new(10, 3);
        d.insert(ALICE, 1, 10);
        d.insert(BOB, 1, 11);
        d.insert(ALICE, 2, 12);
        // At the bound: all remembered.
        assert_eq!(d.len(), 3);
        assert_eq!(d.lookup(ALICE, 1), Some(10));
        // One past: the oldest insert shard-wide goes.
        d.insert(BOB, 2, 13);
        assert_eq!(d.len(), 3);
        assert_eq!(d.lookup(ALICE, 1), None);
        assert_eq!(d.lookup(BOB, 1), Some(11));
        d.insert(BOB, 3, 14);
        d.insert(BOB, 4, 15);
        // ALICE's entries all went: her window is freed.
        assert_eq!(d.lookup(ALICE, 2), None);
        assert_eq!(d.senders(), 1);
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn random_client_ids_are_found() {
        let mut d = Dedup::new(8, 100);
        let ids = [900u64, 3, 77, 12, 5000, 1];
        for (i, &cid) in ids.iter().enumerate() {
            d.insert(ALICE, cid, i as u64);
        }
        for (i, &cid) in ids.iter().enumerate() {
            assert_eq!(d.lookup(ALICE, cid), Some(i as u64));
        }
        assert_eq!(d.lookup(ALICE, 4), None);
        assert_eq!(d.lookup(ALICE, 5001), None);
    }

    proptest::proptest! {
        /// Against a model: an entry is remembered exactly while fewer than
        /// `window` later inserts by its sender and fewer than `max` later
        /// inserts overall have happened.
        #[test]
        fn matches_model(
            window in 1usize..6,
            max in 1usize..12,
            senders in proptest::collection::vec(0u64..3, 1..200),
        ) {
            let mut d = Dedup::new(window, max);
            let mut log: Vec<(UserId, u64)> = Vec::new();
            for (n, s) in senders.into_iter().enumerate() {
                let sender = UserId(15_550_000_000 + s);
                let cid = n as u64;
                d.insert(sender, cid, cid + 1);
                log.push((sender, cid));
                let mut live = 0;
                for (i, &(snd, c)) in log.iter().enumerate() {
                    let later_all = log.len() - 1 - i;
                    let later_own = log[i + 1..].iter().filter(|(x, _)| *x == snd).count();
                    let expected = (later_all < max && later_own < window).then_some(c + 1);
                    proptest::prop_assert_eq!(d.lookup(snd, c), expected);
                    live += usize::from(expected.is_some());
                }
                proptest::prop_assert_eq!(d.len(), live);
                proptest::prop_assert!(d.order.len() <= max);
            }
        }
    }
}
