//! Per-user inboxes of one shard: messages and receipts waiting for the
//! user's device to acknowledge them.
//!
//! Each user's queue is a ring (`VecDeque`) in arrival order. A prefix of
//! it is "in flight": streamed to the connected device on this connection
//! and not yet acknowledged. `next_unsent` hands out the item after that
//! prefix (so each item goes out once per connection), `reset_in_flight`
//! on disconnect makes the whole queue unsent again (re-sent in order on
//! the next login), and `ack` removes an item wherever it is.
//!
//! Memory per queued item (measured with `std::mem::size_of`, pinned by the
//! test `item_size_is_pinned`): `Item` is 48 bytes inline in the ring (the
//! receipt variant fits in the message's space, the tag in the body
//! pointer's niche). A message body is one heap block of its length,
//! rounded up to the allocator's size class. The ring may hold up to twice
//! its length in capacity; `ack` shrinks a ring that falls to a quarter of
//! its capacity. Per user with a non-empty queue: 40 bytes of `Queue` plus
//! the hash-map slot (8-byte key, 1 control byte, load factor up to 7/8).
//! Users with empty queues take no memory here.
//!
//! State is rebuilt from the log with the same operations: `restore` for
//! each accepted item (in log order), `ack` for each acknowledgement.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;

use tern_wire::{ErrorCode, ReceiptKind};

use crate::limits::Limits;
use crate::user::UserId;

/// Most users `longest` reports, whatever is asked.
pub const LONGEST_MAX: usize = 1_000;

/// Rings at or below this capacity are never shrunk.
const SHRINK_CAPACITY_MIN: usize = 16;

/// One inbox entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A message for the user.
    Message {
        /// Server message id (unique, see `ids`).
        id: u64,
        /// Sender.
        from: UserId,
        /// The sender's id for this message.
        client_msg_id: u64,
        /// When the server accepted it.
        sent_at_ms: u64,
        /// The encoded message body, opaque here.
        body: Box<[u8]>,
    },
    /// A receipt for a message the user sent.
    Receipt {
        /// Server id of this receipt (acked like a message).
        id: u64,
        /// Delivered or read.
        kind: ReceiptKind,
        /// The user who received or read the message.
        peer: UserId,
        /// The user's own id for the message the receipt is about.
        client_msg_id: u64,
        /// When it was delivered or read.
        at_ms: u64,
    },
}

impl Item {
    /// The server id the device acknowledges.
    pub fn id(&self) -> u64 {
        match self {
            Self::Message { id, .. } | Self::Receipt { id, .. } => *id,
        }
    }

    /// Body bytes held on the heap (0 for receipts).
    pub fn body_len(&self) -> usize {
        match self {
            Self::Message { body, .. } => body.len(),
            Self::Receipt { .. } => 0,
        }
    }
}

/// Why an item was not queued.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboxError {
    /// The recipient's queue holds `inbox_len_max` items.
    UserQueueFull {
        /// Items queued for the user.
        len: usize,
    },
    /// The shard holds `shard_inbox_items_max` items.
    ShardQueueFull {
        /// Items queued on the shard.
        len: usize,
    },
    /// The shard holds `shard_inbox_bytes_max` body bytes.
    ShardBytesFull {
        /// Body bytes queued on the shard.
        bytes: usize,
    },
}

impl InboxError {
    /// The protocol code for this error.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::QueueFull
    }
}

impl fmt::Display for InboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserQueueFull { len } => write!(f, "recipient's queue is full ({len} items)"),
            Self::ShardQueueFull { len } => write!(f, "shard queues are full ({len} items)"),
            Self::ShardBytesFull { bytes } => {
                write!(f, "shard queues are full ({bytes} body bytes)")
            }
        }
    }
}

impl std::error::Error for InboxError {}

/// One user's queue.
#[derive(Debug)]
struct Queue {
    items: VecDeque<Item>,
    /// Items at the front streamed on the current connection, unacked.
    in_flight: u32,
    /// True while ids were pushed in increasing order: `ack` can then
    /// binary-search.
    sorted: bool,
}

impl Queue {
    fn new() -> Self {
        Self {
            items: VecDeque::new(),
            in_flight: 0,
            sorted: true,
        }
    }

    fn in_flight(&self) -> usize {
        usize::try_from(self.in_flight).unwrap_or(usize::MAX)
    }

    fn position(&self, id: u64) -> Option<usize> {
        if self.items.front().map(Item::id) == Some(id) {
            return Some(0);
        }
        if self.sorted {
            self.items.binary_search_by_key(&id, Item::id).ok()
        } else {
            self.items.iter().position(|item| item.id() == id)
        }
    }
}

/// The inboxes of one shard, with a bound per user and per shard.
pub struct Inboxes {
    user_len_max: usize,
    shard_items_max: usize,
    shard_bytes_max: usize,
    queues: HashMap<UserId, Queue>,
    total_len: usize,
    total_bytes: usize,
}

impl fmt::Debug for Inboxes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: the queues may hold millions of items.
        f.debug_struct("Inboxes")
            .field("users", &self.queues.len())
            .field("total_len", &self.total_len)
            .field("total_bytes", &self.total_bytes)
            .finish_non_exhaustive()
    }
}

impl Inboxes {
    /// Inboxes bounded by `limits` (`inbox_len_max`,
    /// `shard_inbox_items_max`, `shard_inbox_bytes_max`).
    pub fn new(limits: &Limits) -> Self {
        Self::with_bounds(
            limits.inbox_len_max,
            limits.shard_inbox_items_max,
            limits.shard_inbox_bytes_max,
        )
    }

    /// Inboxes with explicit bounds.
    pub fn with_bounds(
        user_len_max: usize,
        shard_items_max: usize,
        shard_bytes_max: usize,
    ) -> Self {
        Self {
            // The in-flight counter is a u32; no queue may outgrow it.
            user_len_max: user_len_max.min(u32::MAX as usize),
            shard_items_max,
            shard_bytes_max,
            queues: HashMap::new(),
            total_len: 0,
            total_bytes: 0,
        }
    }

    /// Would `push` accept an item with `body_len` body bytes for `user`
    /// now? Lets a caller refuse before making the item durable.
    pub fn check_room(&self, user: UserId, body_len: usize) -> Result<(), InboxError> {
        let len = self.len(user);
        if len >= self.user_len_max {
            return Err(InboxError::UserQueueFull { len });
        }
        if self.total_len >= self.shard_items_max {
            return Err(InboxError::ShardQueueFull {
                len: self.total_len,
            });
        }
        if self.total_bytes.saturating_add(body_len) > self.shard_bytes_max {
            return Err(InboxError::ShardBytesFull {
                bytes: self.total_bytes,
            });
        }
        Ok(())
    }

    /// Queues `item` for `user` at the back, within the bounds.
    pub fn push(&mut self, user: UserId, item: Item) -> Result<(), InboxError> {
        self.check_room(user, item.body_len())?;
        self.restore(user, item);
        Ok(())
    }

    /// Queues `item` ignoring the bounds: for log replay only. An item in
    /// the log was accepted under the bounds then in force; recovery must
    /// never drop it, even if the bounds have been lowered since.
    pub fn restore(&mut self, user: UserId, item: Item) {
        let queue = self.queues.entry(user).or_insert_with(Queue::new);
        if let Some(back) = queue.items.back() {
            if item.id() <= back.id() {
                queue.sorted = false;
            }
        }
        self.total_len += 1;
        self.total_bytes += item.body_len();
        queue.items.push_back(item);
    }

    /// The next item not yet streamed on this connection, without marking
    /// it.
    pub fn peek_unsent(&self, user: UserId) -> Option<&Item> {
        let queue = self.queues.get(&user)?;
        queue.items.get(queue.in_flight())
    }

    /// The next item not yet streamed on this connection, marked in
    /// flight: it will not be handed out again until `reset_in_flight`.
    pub fn next_unsent(&mut self, user: UserId) -> Option<&Item> {
        let queue = self.queues.get_mut(&user)?;
        let index = queue.in_flight();
        let item = queue.items.get(index)?;
        // index < len <= user_len_max <= u32::MAX (or a restored queue
        // past that, where saturating keeps it safe).
        queue.in_flight = queue.in_flight.saturating_add(1);
        Some(item)
    }

    /// The device disconnected: every unacked item becomes unsent again,
    /// to be streamed from the front, in order, on the next connection.
    pub fn reset_in_flight(&mut self, user: UserId) {
        if let Some(queue) = self.queues.get_mut(&user) {
            queue.in_flight = 0;
        }
    }

    /// The device acknowledged item `id`: removes and returns it. `None`
    /// for an id not queued (already acked, or bogus). O(1) for the front
    /// item (the usual case: devices ack in order); otherwise a binary
    /// search (linear if ids arrived out of order) plus a shift of the
    /// shorter side of the ring, bounded by `inbox_len_max`.
    pub fn ack(&mut self, user: UserId, id: u64) -> Option<Item> {
        let queue = self.queues.get_mut(&user)?;
        let index = queue.position(id)?;
        let item = queue.items.remove(index)?;
        if index < queue.in_flight() {
            queue.in_flight -= 1;
        }
        // Totals count every queued item: they cannot underflow.
        debug_assert!(self.total_len >= 1 && self.total_bytes >= item.body_len());
        self.total_len -= 1;
        self.total_bytes -= item.body_len();
        if queue.items.is_empty() {
            self.queues.remove(&user);
        } else {
            let capacity = queue.items.capacity();
            if capacity > SHRINK_CAPACITY_MIN && queue.items.len() <= capacity / 4 {
                queue.items.shrink_to(capacity / 2);
            }
        }
        Some(item)
    }

    /// Items queued for `user`.
    pub fn len(&self, user: UserId) -> usize {
        self.queues.get(&user).map_or(0, |q| q.items.len())
    }

    /// Items of `user` streamed on this connection and not yet acked.
    pub fn in_flight_len(&self, user: UserId) -> usize {
        self.queues.get(&user).map_or(0, Queue::in_flight)
    }

    /// Items of `user` not yet streamed on this connection.
    pub fn unsent_len(&self, user: UserId) -> usize {
        self.len(user) - self.in_flight_len(user)
    }

    /// Items of `user`, in queue order.
    pub fn iter(&self, user: UserId) -> impl Iterator<Item = &Item> {
        self.queues
            .get(&user)
            .into_iter()
            .flat_map(|q| q.items.iter())
    }

    /// Items queued on the shard.
    pub fn total_len(&self) -> usize {
        self.total_len
    }

    /// Body bytes queued on the shard.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Users with at least one queued item.
    pub fn users(&self) -> usize {
        self.queues.len()
    }

    /// The `n` users with the longest queues (at most [`LONGEST_MAX`]),
    /// longest first; ties by smaller user id. One pass over the users
    /// with a heap of `n`: O(users * log n), and users <= total items.
    pub fn longest(&self, n: usize) -> Vec<(UserId, usize)> {
        let n = n.min(LONGEST_MAX);
        if n == 0 {
            return Vec::new();
        }
        // Min-heap of the best n so far; the key orders longer first, then
        // smaller user id first.
        let mut heap: BinaryHeap<Reverse<(usize, Reverse<UserId>)>> =
            BinaryHeap::with_capacity(n + 1);
        for (&user, queue) in &self.queues {
            heap.push(Reverse((queue.items.len(), Reverse(user))));
            if heap.len() > n {
                heap.pop();
            }
        }
        // Ascending order of Reverse(key) is descending order of key.
        heap.into_sorted_vec()
            .into_iter()
            .map(|Reverse((len, Reverse(user)))| (user, len))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: UserId = UserId(15_551_230_001);
    const BOB: UserId = UserId(15_551_230_002);
    const CAROL: UserId = UserId(15_551_230_003);

    fn msg(id: u64, body: &[u8]) -> Item {
        Item::Message {
            id,
            from: BOB,
            client_msg_id: id + 1000,
            sent_at_ms: 5,
            body: body.into(),
        }
    }

    fn receipt(id: u64) -> Item {
        Item::Receipt {
            id,
            kind: ReceiptKind::Delivered,
            peer: CAROL,
            client_msg_id: 9,
            at_ms: 6,
        }
    }

    fn drain_unsent(inbox: &mut Inboxes, user: UserId) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Some(item) = inbox.next_unsent(user) {
            ids.push(item.id());
        }
        ids
    }

    #[test]
    fn item_size_is_pinned() {
        // Measured: 48 bytes per queued item inline (see the module doc).
        assert_eq!(std::mem::size_of::<Item>(), 48);
        assert_eq!(std::mem::size_of::<Queue>(), 40);
        assert_eq!(std::mem::size_of::<(UserId, Queue)>(), 48);
    }

    #[test]
    fn stream_once_per_connection_and_resend_in_order() {
        let mut inbox = Inboxes::new(&Limits::default());
        for id in 1..=3 {
            inbox.push(ALICE, msg(id, b"hi")).unwrap();
        }
        inbox.push(ALICE, receipt(4)).unwrap();
        assert_eq!(inbox.peek_unsent(ALICE).map(Item::id), Some(1));
        assert_eq!(drain_unsent(&mut inbox, ALICE), vec![1, 2, 3, 4]);
        assert_eq!(inbox.next_unsent(ALICE), None);
        assert_eq!(inbox.in_flight_len(ALICE), 4);
        // Acked 1; then the connection drops.
        assert_eq!(inbox.ack(ALICE, 1), Some(msg(1, b"hi")));
        inbox.reset_in_flight(ALICE);
        assert_eq!(inbox.unsent_len(ALICE), 3);
        // Next login: the rest again, in order.
        assert_eq!(drain_unsent(&mut inbox, ALICE), vec![2, 3, 4]);
        // New arrivals while connected are streamed after them.
        inbox.push(ALICE, msg(5, b"")).unwrap();
        assert_eq!(drain_unsent(&mut inbox, ALICE), vec![5]);
        for id in 2..=5 {
            assert!(inbox.ack(ALICE, id).is_some());
        }
        assert_eq!(inbox.len(ALICE), 0);
        assert_eq!(inbox.users(), 0);
        assert_eq!(inbox.total_len(), 0);
        assert_eq!(inbox.total_bytes(), 0);
    }

    #[test]
    fn out_of_order_and_bogus_acks() {
        let mut inbox = Inboxes::new(&Limits::default());
        for id in 1..=5 {
            inbox.push(ALICE, msg(id, b"x")).unwrap();
        }
        assert_eq!(drain_unsent(&mut inbox, ALICE).len(), 5);
        inbox.reset_in_flight(ALICE);
        // Streamed 1, 2, 3 on this connection.
        for _ in 0..3 {
            inbox.next_unsent(ALICE);
        }
        assert_eq!(inbox.ack(ALICE, 2).map(|i| i.id()), Some(2));
        assert_eq!(inbox.in_flight_len(ALICE), 2);
        // Ack of an item not yet streamed on this connection (the device
        // had it from before): removed, in-flight count unchanged.
        assert_eq!(inbox.ack(ALICE, 5).map(|i| i.id()), Some(5));
        assert_eq!(inbox.in_flight_len(ALICE), 2);
        assert_eq!(inbox.ack(ALICE, 2), None);
        assert_eq!(inbox.ack(ALICE, 99), None);
        assert_eq!(inbox.ack(BOB, 1), None);
        assert_eq!(drain_unsent(&mut inbox, ALICE), vec![4]);
        let left: Vec<u64> = inbox.iter(ALICE).map(Item::id).collect();
        assert_eq!(left, vec![1, 3, 4]);
        assert_eq!(inbox.total_len(), 3);
    }

    #[test]
    fn unsorted_ids_still_ack() {
        // Items from several shards' allocators arrive in no id order.
        let mut inbox = Inboxes::new(&Limits::default());
        for id in [30, 10, 20, 5] {
            inbox.push(ALICE, receipt(id)).unwrap();
        }
        assert_eq!(inbox.ack(ALICE, 20).map(|i| i.id()), Some(20));
        assert_eq!(inbox.ack(ALICE, 5).map(|i| i.id()), Some(5));
        assert_eq!(inbox.ack(ALICE, 7), None);
        let order: Vec<u64> = drain_unsent(&mut inbox, ALICE);
        assert_eq!(order, vec![30, 10]);
    }

    #[test]
    fn user_bound() {
        let mut inbox = Inboxes::with_bounds(3, 100, 1_000);
        for id in 1..=3 {
            inbox.push(ALICE, msg(id, b"")).unwrap();
        }
        assert_eq!(
            inbox.push(ALICE, msg(4, b"")),
            Err(InboxError::UserQueueFull { len: 3 })
        );
        assert_eq!(inbox.len(ALICE), 3);
        // Other users are unaffected; an ack makes room.
        assert!(inbox.push(BOB, msg(5, b"")).is_ok());
        inbox.ack(ALICE, 1).unwrap();
        assert!(inbox.push(ALICE, msg(6, b"")).is_ok());
        assert_eq!(
            InboxError::UserQueueFull { len: 3 }.code(),
            ErrorCode::QueueFull
        );
    }

    #[test]
    fn shard_item_bound() {
        let mut inbox = Inboxes::with_bounds(10, 4, 1_000);
        inbox.push(ALICE, msg(1, b"")).unwrap();
        inbox.push(ALICE, msg(2, b"")).unwrap();
        inbox.push(BOB, receipt(3)).unwrap();
        inbox.push(CAROL, msg(4, b"")).unwrap();
        assert_eq!(inbox.total_len(), 4);
        assert_eq!(
            inbox.push(CAROL, msg(5, b"")),
            Err(InboxError::ShardQueueFull { len: 4 })
        );
        inbox.ack(BOB, 3).unwrap();
        assert!(inbox.push(CAROL, msg(5, b"")).is_ok());
    }

    #[test]
    fn shard_byte_bound() {
        let mut inbox = Inboxes::with_bounds(10, 10, 10);
        inbox.push(ALICE, msg(1, b"12345")).unwrap();
        // Exactly up to the bound: fine.
        inbox.push(BOB, msg(2, b"12345")).unwrap();
        assert_eq!(inbox.total_bytes(), 10);
        // Receipts carry no body bytes.
        inbox.push(BOB, receipt(3)).unwrap();
        // One byte past: refused.
        assert_eq!(
            inbox.push(CAROL, msg(4, b"1")),
            Err(InboxError::ShardBytesFull { bytes: 10 })
        );
        assert_eq!(inbox.check_room(CAROL, 0), Ok(()));
        inbox.ack(ALICE, 1).unwrap();
        assert_eq!(inbox.total_bytes(), 5);
        assert!(inbox.push(CAROL, msg(4, b"12345")).is_ok());
    }

    #[test]
    fn restore_ignores_bounds() {
        let mut inbox = Inboxes::with_bounds(1, 1, 1);
        inbox.restore(ALICE, msg(1, b"long body"));
        inbox.restore(ALICE, msg(2, b"another"));
        assert_eq!(inbox.len(ALICE), 2);
        assert!(inbox.push(ALICE, msg(3, b"")).is_err());
        assert_eq!(drain_unsent(&mut inbox, ALICE), vec![1, 2]);
    }

    #[test]
    fn longest_is_bounded_and_ordered() {
        let mut inbox = Inboxes::new(&Limits::default());
        let mut id = 0;
        for (user, n) in [
            (ALICE, 2),
            (BOB, 5),
            (CAROL, 2),
            (UserId(15_551_230_004), 1),
        ] {
            for _ in 0..n {
                id += 1;
                inbox.push(user, receipt(id)).unwrap();
            }
        }
        assert_eq!(inbox.longest(2), vec![(BOB, 5), (ALICE, 2)]);
        assert_eq!(
            inbox.longest(10),
            vec![
                (BOB, 5),
                (ALICE, 2),
                (CAROL, 2),
                (UserId(15_551_230_004), 1)
            ]
        );
        assert!(inbox.longest(0).is_empty());
        assert_eq!(inbox.longest(usize::MAX).len(), 4);
    }

    #[test]
    fn ring_shrinks_after_draining() {
        let mut inbox = Inboxes::new(&Limits::default());
        for id in 1..=1_000 {
            inbox.push(ALICE, receipt(id)).unwrap();
        }
        for id in 1..=990 {
            inbox.ack(ALICE, id).unwrap();
        }
        let capacity = inbox.queues[&ALICE].items.capacity();
        assert!(capacity <= 64, "capacity {capacity}");
        assert_eq!(inbox.len(ALICE), 10);
    }

    proptest::proptest! {
        /// Against a simple model: every pushed item is handed out in
        /// queue order, once per connection; acks remove exactly that item.
        #[test]
        fn matches_model(ops in proptest::collection::vec((0u8..4, 0u64..40), 1..300)) {
            let mut inbox = Inboxes::with_bounds(16, 1_000, 1_000_000);
            let mut model: Vec<u64> = Vec::new();
            let mut sent = 0usize;
            let mut next_id = 1u64;
            for (op, arg) in ops {
                match op {
                    0 => {
                        let r = inbox.push(ALICE, msg(next_id, b"b"));
                        if model.len() < 16 {
                            proptest::prop_assert!(r.is_ok());
                            model.push(next_id);
                        } else {
                            proptest::prop_assert_eq!(r, Err(InboxError::UserQueueFull { len: 16 }));
                        }
                        next_id += 1;
                    }
                    1 => {
                        let got = inbox.next_unsent(ALICE).map(Item::id);
                        proptest::prop_assert_eq!(got, model.get(sent).copied());
                        if got.is_some() { sent += 1; }
                    }
                    2 => {
                        let got = inbox.ack(ALICE, arg).map(|i| i.id());
                        match model.iter().position(|&id| id == arg) {
                            Some(pos) => {
                                proptest::prop_assert_eq!(got, Some(arg));
                                model.remove(pos);
                                if pos < sent { sent -= 1; }
                            }
                            None => proptest::prop_assert_eq!(got, None),
                        }
                    }
                    _ => {
                        inbox.reset_in_flight(ALICE);
                        sent = 0;
                    }
                }
                proptest::prop_assert_eq!(inbox.len(ALICE), model.len());
                proptest::prop_assert_eq!(inbox.in_flight_len(ALICE), sent);
                proptest::prop_assert_eq!(inbox.total_len(), model.len());
                proptest::prop_assert_eq!(inbox.total_bytes(), model.len());
            }
        }
    }
}
