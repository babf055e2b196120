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
//! test `entry_size_is_pinned`): an `Entry` is 56 bytes inline in the ring
//! (an `Item` is 48, the receipt variant fitting in the message's space,
//! plus the loaded/spilled tag). A loaded message body is one heap block of
//! its length, rounded up to the allocator's size class; a spilled one
//! takes no heap. The ring may hold up to twice
//! its length in capacity; `ack` shrinks a ring that falls to a quarter of
//! its capacity. Per user with a non-empty queue: 40 bytes of `Queue` plus
//! the hash-map slot (8-byte key, 1 control byte, load factor up to 7/8).
//! Users with empty queues take no memory here.
//!
//! Bodies on disk ("spilled" entries). In durable mode a message's record
//! in the shard's log holds its whole Deliver frame, so the ring need not:
//! an entry can be `Spilled`, keeping only the id, the record's log
//! position and the body length (for the byte bound). Messages for a user
//! who is offline when they become durable are spilled at once, and every
//! message restored from the log at start-up is restored spilled. When the
//! user's device is ready for them, `take_fetch` hands out the positions
//! of the next spilled entries, the runtime reads the records back, and
//! `load` puts the items in place; only loaded items are streamed.
//! Messages already loaded when their user goes offline stay loaded (their
//! log position is not kept) until acked or the next restart.
//!
//! State is rebuilt from the log with the same operations: `restore` for
//! each accepted item (in log order; a copy of an item already queued, left
//! by reclaim's copy-forward, is ignored), `remove` for each
//! acknowledgement.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::hash::IdMap;
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

/// What the next unsent entry of a queue is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsent<'a> {
    /// In memory: can be streamed now.
    Loaded(&'a Item),
    /// Its body is only in the log: fetch it first (`take_fetch`).
    Spilled {
        /// Server id of the item.
        id: u64,
    },
}

/// One ring slot.
#[derive(Debug)]
enum Entry {
    Loaded(Item),
    /// A message whose record (the whole item) is in the log at `loc`
    /// (a packed log position, opaque here).
    Spilled {
        id: u64,
        loc: u64,
        body_len: u32,
    },
}

impl Entry {
    fn id(&self) -> u64 {
        match self {
            Self::Loaded(item) => item.id(),
            Self::Spilled { id, .. } => *id,
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Self::Loaded(item) => item.body_len(),
            Self::Spilled { body_len, .. } => usize::try_from(*body_len).unwrap_or(usize::MAX),
        }
    }

    /// Adds this entry to the shard totals on its way into a ring.
    fn into_counted(self, total_len: &mut usize, total_bytes: &mut usize) -> Self {
        *total_len += 1;
        *total_bytes += self.body_len();
        self
    }
}

/// One user's queue.
#[derive(Debug)]
struct Queue {
    items: VecDeque<Entry>,
    /// Items at the front streamed on the current connection, unacked.
    in_flight: u32,
    /// True while ids were pushed in increasing order: `ack` can then
    /// binary-search.
    sorted: bool,
    /// Spilled entries of this queue are being read back (`take_fetch`
    /// handed them out and `fetch_done` has not been called).
    fetching: bool,
}

impl Queue {
    fn new() -> Self {
        Self {
            items: VecDeque::new(),
            in_flight: 0,
            sorted: true,
            fetching: false,
        }
    }

    fn in_flight(&self) -> usize {
        usize::try_from(self.in_flight).unwrap_or(usize::MAX)
    }

    fn position(&self, id: u64) -> Option<usize> {
        if self.items.front().map(Entry::id) == Some(id) {
            return Some(0);
        }
        if self.sorted {
            self.items.binary_search_by_key(&id, Entry::id).ok()
        } else {
            self.items.iter().position(|entry| entry.id() == id)
        }
    }
}

/// The inboxes of one shard, with a bound per user and per shard.
pub struct Inboxes {
    user_len_max: usize,
    shard_items_max: usize,
    shard_bytes_max: usize,
    queues: IdMap<UserId, Queue>,
    total_len: usize,
    total_bytes: usize,
    /// Entries whose body is only on disk.
    spilled_len: usize,
}

impl fmt::Debug for Inboxes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: the queues may hold millions of items.
        f.debug_struct("Inboxes")
            .field("users", &self.queues.len())
            .field("total_len", &self.total_len)
            .field("total_bytes", &self.total_bytes)
            .field("spilled_len", &self.spilled_len)
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
            queues: IdMap::default(),
            total_len: 0,
            total_bytes: 0,
            spilled_len: 0,
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
        self.insert(user, Entry::Loaded(item), false);
        Ok(())
    }

    /// Queues `item` ignoring the bounds: for log replay only. An item in
    /// the log was accepted under the bounds then in force; recovery must
    /// never drop it, even if the bounds have been lowered since. Returns
    /// false (and changes nothing) if an item with this id is already
    /// queued: a copy left by reclaim's copy-forward.
    pub fn restore(&mut self, user: UserId, item: Item) -> bool {
        self.insert(user, Entry::Loaded(item), true)
    }

    /// Like `restore`, for a message left on disk: only its id, its log
    /// position `loc` and its body length are kept.
    pub fn restore_spilled(&mut self, user: UserId, id: u64, loc: u64, body_len: usize) -> bool {
        let body_len = u32::try_from(body_len).unwrap_or(u32::MAX);
        self.insert(user, Entry::Spilled { id, loc, body_len }, true)
    }

    /// Live arrivals go to the back, in arrival order. Replayed ones
    /// (`replay`) are deduplicated and, when older than the back, put in id
    /// order.
    fn insert(&mut self, user: UserId, entry: Entry, replay: bool) -> bool {
        let queue = self.queues.entry(user).or_insert_with(Queue::new);
        let id = entry.id();
        let spilled = usize::from(matches!(entry, Entry::Spilled { .. }));
        match queue.items.back().map(Entry::id) {
            Some(back) if replay && id <= back => {
                if queue.position(id).is_some() {
                    return false;
                }
                if queue.sorted {
                    // A copied-forward item older than items already
                    // restored: its place is by id (ids are allocated in
                    // store order), keeping each pair's order. Never in
                    // flight: replay runs before any connection.
                    let at = queue.items.partition_point(|e| e.id() < id);
                    debug_assert!(at >= queue.in_flight());
                    queue.items.insert(
                        at,
                        entry.into_counted(&mut self.total_len, &mut self.total_bytes),
                    );
                    self.spilled_len += spilled;
                    return true;
                }
            }
            _ => {}
        }
        if let Some(back) = queue.items.back() {
            if id <= back.id() {
                queue.sorted = false;
            }
        }
        queue
            .items
            .push_back(entry.into_counted(&mut self.total_len, &mut self.total_bytes));
        self.spilled_len += spilled;
        true
    }

    /// The next entry not yet streamed on this connection, without marking
    /// it.
    pub fn peek_unsent(&self, user: UserId) -> Option<Unsent<'_>> {
        let queue = self.queues.get(&user)?;
        match queue.items.get(queue.in_flight())? {
            Entry::Loaded(item) => Some(Unsent::Loaded(item)),
            Entry::Spilled { id, .. } => Some(Unsent::Spilled { id: *id }),
        }
    }

    /// The next item not yet streamed on this connection, marked in
    /// flight: it will not be handed out again until `reset_in_flight`.
    /// `None` also when the next entry is spilled (fetch it first).
    pub fn next_unsent(&mut self, user: UserId) -> Option<&Item> {
        let queue = self.queues.get_mut(&user)?;
        let index = queue.in_flight();
        let Entry::Loaded(item) = queue.items.get(index)? else {
            return None;
        };
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
    /// for an id not queued (already acked, or bogus), and for a spilled
    /// entry: the device cannot have had it on this connection, and the
    /// delivered receipt needs the item, so it stays until it is streamed
    /// and acked again (devices ack repeats). O(1) for the front item (the
    /// usual case: devices ack in order); otherwise a binary search (linear
    /// if ids arrived out of order) plus a shift of the shorter side of the
    /// ring, bounded by `inbox_len_max`.
    pub fn ack(&mut self, user: UserId, id: u64) -> Option<Item> {
        let queue = self.queues.get(&user)?;
        let index = queue.position(id)?;
        if let Some(Entry::Spilled { .. }) = queue.items.get(index) {
            return None;
        }
        match self.remove_at(user, index)? {
            Entry::Loaded(item) => Some(item),
            Entry::Spilled { .. } => None,
        }
    }

    /// Removes item `id` whatever its state: replay of an acknowledgement.
    /// Returns whether it was queued.
    pub fn remove(&mut self, user: UserId, id: u64) -> bool {
        let Some(index) = self.queues.get(&user).and_then(|q| q.position(id)) else {
            return false;
        };
        self.remove_at(user, index).is_some()
    }

    /// Removes the entry at `index` of `user`'s queue; keeps the totals and
    /// the in-flight prefix right and drops or shrinks the ring.
    fn remove_at(&mut self, user: UserId, index: usize) -> Option<Entry> {
        let queue = self.queues.get_mut(&user)?;
        let entry = queue.items.remove(index)?;
        if index < queue.in_flight() {
            queue.in_flight -= 1;
        }
        // Totals count every queued item: they cannot underflow.
        debug_assert!(self.total_len >= 1 && self.total_bytes >= entry.body_len());
        self.total_len -= 1;
        self.total_bytes -= entry.body_len();
        if let Entry::Spilled { .. } = entry {
            self.spilled_len -= 1;
        }
        if queue.items.is_empty() {
            self.queues.remove(&user);
        } else {
            let capacity = queue.items.capacity();
            if capacity > SHRINK_CAPACITY_MIN && queue.items.len() <= capacity / 4 {
                queue.items.shrink_to(capacity / 2);
            }
        }
        Some(entry)
    }

    /// Is item `id` queued for `user` (loaded or spilled)?
    pub fn contains(&self, user: UserId, id: u64) -> bool {
        self.queues
            .get(&user)
            .is_some_and(|q| q.position(id).is_some())
    }

    /// Drops the body of queued message `id` (not in flight), keeping its
    /// log position `loc` instead. Returns whether it was spilled.
    pub fn spill(&mut self, user: UserId, id: u64, loc: u64) -> bool {
        let Some(queue) = self.queues.get_mut(&user) else {
            return false;
        };
        let Some(index) = queue.position(id) else {
            return false;
        };
        if index < queue.in_flight() {
            return false;
        }
        let Some(entry) = queue.items.get_mut(index) else {
            return false;
        };
        let body_len = match entry {
            Entry::Loaded(Item::Message { body, .. }) => body.len(),
            _ => return false,
        };
        *entry = Entry::Spilled {
            id,
            loc,
            // Bodies are bounded far below u32::MAX (frame bound).
            body_len: u32::try_from(body_len).unwrap_or(u32::MAX),
        };
        self.spilled_len += 1;
        true
    }

    /// A spilled entry's record moved to `loc` (reclaim copied it
    /// forward). Returns whether the entry was spilled and updated.
    pub fn relocate(&mut self, user: UserId, id: u64, loc: u64) -> bool {
        let Some(queue) = self.queues.get_mut(&user) else {
            return false;
        };
        match queue.position(id).and_then(|i| queue.items.get_mut(i)) {
            Some(Entry::Spilled { loc: at, .. }) => {
                *at = loc;
                true
            }
            _ => false,
        }
    }

    /// The `(id, loc)` of the spilled entries among the next `scan_max`
    /// unsent entries of `user`, unless a fetch for the queue is already
    /// running. Marks the queue fetching when it returns any.
    pub fn take_fetch(&mut self, user: UserId, scan_max: usize) -> Vec<(u64, u64)> {
        let Some(queue) = self.queues.get_mut(&user) else {
            return Vec::new();
        };
        if queue.fetching {
            return Vec::new();
        }
        let wanted: Vec<(u64, u64)> = queue
            .items
            .iter()
            .skip(queue.in_flight())
            .take(scan_max)
            .filter_map(|e| match e {
                Entry::Spilled { id, loc, .. } => Some((*id, *loc)),
                Entry::Loaded(_) => None,
            })
            .collect();
        queue.fetching = !wanted.is_empty();
        wanted
    }

    /// Puts a fetched `item` in place of its spilled entry. Returns false
    /// if the entry is gone (acked meanwhile) or already loaded.
    pub fn load(&mut self, user: UserId, item: Item) -> bool {
        let Some(queue) = self.queues.get_mut(&user) else {
            return false;
        };
        let Some(entry) = queue
            .position(item.id())
            .and_then(|i| queue.items.get_mut(i))
        else {
            return false;
        };
        let Entry::Spilled { body_len, .. } = *entry else {
            return false;
        };
        // The record is the one stored: same body. Keep the byte total
        // exact even if it were not.
        let body_len = usize::try_from(body_len).unwrap_or(usize::MAX);
        self.total_bytes = self.total_bytes - body_len + item.body_len();
        *entry = Entry::Loaded(item);
        self.spilled_len -= 1;
        true
    }

    /// The fetch handed out by `take_fetch` for `user` is over (loaded or
    /// failed): a later `take_fetch` may start another.
    pub fn fetch_done(&mut self, user: UserId) {
        if let Some(queue) = self.queues.get_mut(&user) {
            queue.fetching = false;
        }
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

    /// Ids of the items of `user`, in queue order.
    pub fn ids(&self, user: UserId) -> impl Iterator<Item = u64> + '_ {
        self.queues
            .get(&user)
            .into_iter()
            .flat_map(|q| q.items.iter().map(Entry::id))
    }

    /// Items queued on the shard.
    pub fn total_len(&self) -> usize {
        self.total_len
    }

    /// Body bytes queued on the shard.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Queued messages whose body is only on disk.
    pub fn spilled_len(&self) -> usize {
        self.spilled_len
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
    fn entry_size_is_pinned() {
        // Measured: 56 bytes per queued entry inline (see the module doc).
        assert_eq!(std::mem::size_of::<Item>(), 48);
        assert_eq!(std::mem::size_of::<Entry>(), 56);
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
        assert!(matches!(inbox.peek_unsent(ALICE), Some(Unsent::Loaded(i)) if i.id() == 1));
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
        let left: Vec<u64> = inbox.ids(ALICE).collect();
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
    fn spilled_entries_are_fetched_loaded_and_streamed_in_order() {
        let mut inbox = Inboxes::new(&Limits::default());
        for id in 1..=4 {
            inbox.push(ALICE, msg(id, b"body")).unwrap();
        }
        // 2 and 3 leave memory; 1 is streamed first.
        assert!(inbox.spill(ALICE, 2, 102));
        assert!(inbox.spill(ALICE, 3, 103));
        assert_eq!(inbox.spilled_len(), 2);
        assert_eq!(inbox.total_bytes(), 16, "spilled bodies still count");
        assert_eq!(drain_unsent(&mut inbox, ALICE), vec![1]);
        assert_eq!(inbox.peek_unsent(ALICE), Some(Unsent::Spilled { id: 2 }));
        // In-flight and receipt entries never spill.
        assert!(!inbox.spill(ALICE, 1, 101));
        inbox.push(ALICE, receipt(5)).unwrap();
        assert!(!inbox.spill(ALICE, 5, 105));
        // A stale ack of a spilled entry keeps it.
        assert_eq!(inbox.ack(ALICE, 2), None);
        assert!(inbox.contains(ALICE, 2));
        // Reclaim moved 3's record.
        assert!(inbox.relocate(ALICE, 3, 203));
        assert!(!inbox.relocate(ALICE, 4, 204), "4 is loaded");
        let wanted = inbox.take_fetch(ALICE, 10);
        assert_eq!(wanted, vec![(2, 102), (3, 203)]);
        assert!(
            inbox.take_fetch(ALICE, 10).is_empty(),
            "one fetch at a time"
        );
        assert!(inbox.load(ALICE, msg(3, b"body")));
        assert!(inbox.load(ALICE, msg(2, b"body")));
        assert!(!inbox.load(ALICE, msg(2, b"body")), "already loaded");
        inbox.fetch_done(ALICE);
        assert_eq!(inbox.spilled_len(), 0);
        assert_eq!(drain_unsent(&mut inbox, ALICE), vec![2, 3, 4, 5]);
        assert_eq!(inbox.total_bytes(), 16);
    }

    #[test]
    fn take_fetch_scans_a_bounded_window() {
        let mut inbox = Inboxes::new(&Limits::default());
        for id in 1..=10 {
            inbox.restore_spilled(ALICE, id, 100 + id, 4);
        }
        let wanted = inbox.take_fetch(ALICE, 3);
        assert_eq!(wanted, vec![(1, 101), (2, 102), (3, 103)]);
        inbox.fetch_done(ALICE);
        assert_eq!(inbox.take_fetch(BOB, 3), vec![]);
    }

    #[test]
    fn replay_restores_copies_once_and_in_id_order() {
        let mut inbox = Inboxes::new(&Limits::default());
        assert!(inbox.restore_spilled(ALICE, 1, 11, 4));
        assert!(inbox.restore_spilled(ALICE, 3, 13, 4));
        assert!(inbox.restore(ALICE, receipt(4)));
        // Copies written later in the log: 1 again (skipped), 2 (whose
        // original segment is gone) goes in id order.
        assert!(!inbox.restore_spilled(ALICE, 1, 21, 4));
        assert!(inbox.restore_spilled(ALICE, 2, 22, 4));
        assert!(!inbox.restore(ALICE, receipt(4)));
        assert_eq!(inbox.ids(ALICE).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(inbox.total_len(), 4);
        assert_eq!(inbox.spilled_len(), 3);
        // Replayed acks remove whatever the state.
        assert!(inbox.remove(ALICE, 2));
        assert!(!inbox.remove(ALICE, 2));
        assert_eq!(inbox.spilled_len(), 2);
        assert_eq!(inbox.total_bytes(), 8);
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
