//! Making a shard's changes durable before anyone hears of them.
//!
//! With `ShardConfig::durable` set, every change is also an
//! `Action::Append { seq, record }` for the runtime's log, and every answer
//! that promises durability (ServerAck, a StoreResult to another shard, the
//! Registered frame) and every delivery of a stored item waits until the
//! runtime reports the record durable with `handle_durable(seq)`
//! (invariant I1: ServerAck means it survives kill -9). Server ids are
//! therefore never shown before they are durable, so a crash cannot make
//! an id be handed out twice.
//!
//! Without it (tests of the protocol alone, and the in-memory mode),
//! answers go out at once.

use std::collections::VecDeque;

use tern_wire::{DeviceKey, ErrorCode, Frame, Registered};

use super::Shard;
use crate::action::Action;
use crate::conn::ConnId;
use crate::ids;
use crate::inbox::Item;
use crate::mesh::{MeshMsg, StoreResult, Stored};
use crate::record::Record;
use crate::user::UserId;

/// Log bytes of an item record besides its body (log header, recipient,
/// dedup key, fields): an upper bound, for `live_log_bytes`.
const ITEM_RECORD_OVERHEAD_BYTES: u64 = 96;
/// Log bytes of an account record (header, user, generation, key hash).
const ACCOUNT_RECORD_BYTES: u64 = 80;

/// Most queue entries one fetch looks at: it reads back at most this many
/// records, so one user's backlog costs at most this many loaded bodies
/// beyond what the delivery window holds.
pub(super) const FETCH_SCAN_MAX: usize = 64;

/// An answer held back until the records before it are durable.
#[derive(Debug)]
pub(super) enum Reply {
    /// ServerAck to a connection on this shard.
    Ack {
        conn: ConnId,
        client_msg_id: u64,
        stored: Stored,
        sent_at_ms: u64,
    },
    /// ServerAck to a connection on another shard, via the mesh.
    RemoteAck {
        shard: u16,
        conn: ConnId,
        client_msg_id: u64,
        stored: Stored,
        sent_at_ms: u64,
    },
    /// The device key of a fresh registration.
    Registered {
        conn: ConnId,
        user: UserId,
        key: DeviceKey,
        generation: u32,
    },
}

#[derive(Debug, Default)]
pub(super) struct Durability {
    pub(super) enabled: bool,
    /// Sequence number of the last record handed to the runtime.
    pub(super) appended_seq: u64,
    /// Every record up to this one is durable.
    pub(super) durable_seq: u64,
    /// Every inbox item with an id up to this one is durable (ids are
    /// allocated in append order).
    pub(super) durable_id: u64,
    /// Stored items not yet durable: (seq, id, recipient, log position
    /// once the runtime reports it with `note_location`, else 0).
    pending_items: VecDeque<(u64, u64, UserId, u64)>,
    deferred: VecDeque<(u64, Reply)>,
    /// The log failed a write or sync: nothing more is acknowledged.
    pub(super) poisoned: bool,
    /// The log has more bytes waiting for disk than it should take: new
    /// stores are refused (ShardUnavailable) until it drains.
    pub(super) backpressure: bool,
    /// Reused by `handle_durable` (once per group commit) for the users to
    /// pump, so it allocates nothing in steady state.
    users_scratch: Vec<UserId>,
}

impl Durability {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }
}

impl Shard {
    /// Hands `record` to the runtime's log; returns its sequence number
    /// (0 when the shard keeps nothing durable).
    pub(super) fn append(&mut self, record: Record) -> u64 {
        if !self.dur.enabled {
            return 0;
        }
        self.dur.appended_seq += 1;
        let seq = self.dur.appended_seq;
        if let Record::ItemStored { to, item, .. } = &record {
            self.dur.pending_items.push_back((seq, item.id(), *to, 0));
        }
        self.actions.push_back(Action::Append { seq, record });
        seq
    }

    /// The sequence number an answer about already-stored state must wait
    /// for (a retry of something not yet durable): everything appended so
    /// far, which includes it.
    pub(super) fn seq_covering(&self, id: u64) -> u64 {
        if self.is_durable_id(id) {
            0
        } else {
            self.dur.appended_seq
        }
    }

    pub(super) fn is_durable_id(&self, id: u64) -> bool {
        !self.dur.enabled || ids::seq_of(id) <= ids::seq_of(self.dur.durable_id)
    }

    /// Sends `reply` once record `seq` is durable.
    pub(super) fn reply_when_durable(&mut self, seq: u64, reply: Reply, now_ms: u64) {
        if !self.dur.enabled || seq <= self.dur.durable_seq {
            self.send_reply(reply, now_ms);
        } else {
            debug_assert!(self
                .dur
                .deferred
                .back()
                .is_none_or(|(last, _)| *last <= seq));
            self.dur.deferred.push_back((seq, reply));
        }
    }

    /// The runtime's log has every record up to `seq` on disk.
    pub fn handle_durable(&mut self, seq: u64, now_ms: u64) {
        assert!(
            seq <= self.dur.appended_seq,
            "durable seq {seq} past appended {}",
            self.dur.appended_seq
        );
        if seq <= self.dur.durable_seq {
            return;
        }
        self.dur.durable_seq = seq;
        let mut users = std::mem::take(&mut self.dur.users_scratch);
        users.clear();
        while let Some(&(s, id, user, loc)) = self.dur.pending_items.front() {
            if s > seq {
                break;
            }
            self.dur.pending_items.pop_front();
            self.dur.durable_id = id;
            if !self.online.contains_key(&user) {
                // Nobody to stream it to: keep only where its record is.
                // It is read back when the device comes for it.
                if loc != 0 {
                    self.inboxes.spill(user, id, loc);
                }
                continue;
            }
            if users.last() != Some(&user) {
                users.push(user);
            }
        }
        while let Some((s, _)) = self.dur.deferred.front() {
            if *s > seq {
                break;
            }
            if let Some((_, reply)) = self.dur.deferred.pop_front() {
                self.send_reply(reply, now_ms);
            }
        }
        users.sort_unstable();
        users.dedup();
        for &user in &users {
            self.pump(user, now_ms);
        }
        self.dur.users_scratch = users;
    }

    /// The runtime appended record `seq` (the last `Action::Append`) at log
    /// position `loc` (packed, never 0). Lets a stored item leave memory
    /// once durable while its user is offline.
    pub fn note_location(&mut self, seq: u64, loc: u64) {
        debug_assert!(loc != 0, "log positions start after 0");
        if let Some(back) = self.dur.pending_items.back_mut() {
            if back.0 == seq {
                back.3 = loc;
            }
        }
    }

    /// The runtime's log has more appended bytes waiting for disk than its
    /// high-water mark (`true`), or has drained below the low-water mark
    /// again (`false`). While set, new stores are refused with
    /// `ShardUnavailable`: the client retries later, nothing is lost, and
    /// the shard is not poisoned for a disk that is merely slow.
    pub fn set_log_backpressure(&mut self, on: bool) {
        self.dur.backpressure = on;
    }

    pub fn log_backpressure(&self) -> bool {
        self.dur.backpressure
    }

    /// The runtime read back the items a `Action::Fetch` for `user` asked
    /// for (in any order; an item acked meanwhile is ignored), and streams
    /// what the device can take.
    pub fn handle_fetched(&mut self, user: UserId, items: Vec<Item>, now_ms: u64) {
        for item in items {
            self.inboxes.load(user, item);
        }
        self.inboxes.fetch_done(user);
        self.pump(user, now_ms);
    }

    /// The runtime could not read back records of `user`'s queue. A disk
    /// that loses durable records is not trusted further: the shard is
    /// poisoned (stores nothing new). The user's fetch stays marked
    /// running, so a broken record is not re-read in a loop.
    pub fn handle_fetch_failed(&mut self, user: UserId) {
        let _ = user;
        self.dur.poisoned = true;
    }

    /// The runtime's log failed a write or fsync. From now on this shard
    /// stores nothing new (Sends get `ShardUnavailable`), and answers held
    /// back for records not yet durable are never sent: a failed fsync is
    /// never retried and then trusted (fsyncgate).
    pub fn poison(&mut self) {
        self.dur.poisoned = true;
    }

    pub fn is_poisoned(&self) -> bool {
        self.dur.poisoned
    }

    /// Records appended and not yet reported durable.
    pub fn undurable_records(&self) -> u64 {
        self.dur.appended_seq - self.dur.durable_seq
    }

    fn send_reply(&mut self, reply: Reply, now_ms: u64) {
        match reply {
            Reply::Ack {
                conn,
                client_msg_id,
                stored,
                sent_at_ms,
            } => self.send_ack_now(conn, client_msg_id, stored, sent_at_ms, now_ms),
            Reply::RemoteAck {
                shard,
                conn,
                client_msg_id,
                stored,
                sent_at_ms,
            } => self.actions.push_back(Action::Mesh {
                to: shard,
                msg: MeshMsg::StoreResult(StoreResult {
                    conn,
                    client_msg_id,
                    sent_at_ms,
                    outcome: Ok(stored),
                }),
            }),
            Reply::Registered {
                conn,
                user,
                key,
                generation,
            } => self.send_frame(
                conn,
                &Frame::Registered(Registered {
                    user_id: user.0,
                    device_key: key,
                    device_generation: generation,
                }),
            ),
        }
    }

    // ---- recovery ------------------------------------------------------------

    /// Applies one record read back from the log at start-up, before any
    /// connection exists; `loc` is where it lies in the log (packed, never
    /// 0). Replay and live use share the same tables. Message bodies are
    /// left on disk (restored spilled). Copies left by reclaim's
    /// copy-forward are harmless: an item already queued is restored once,
    /// an account event equal to the current state is ignored.
    pub fn replay(&mut self, record: Record, loc: u64) -> Result<(), ErrorCode> {
        let body_len = match &record {
            Record::ItemStored { item, .. } => item.body_len(),
            _ => 0,
        };
        self.replay_measured(record, body_len, loc)
            .map_err(|e| e.code())
    }

    /// Decodes and replays a record payload of `kind` read at `loc`,
    /// without copying message bodies (they stay on disk).
    pub fn replay_payload(
        &mut self,
        kind: u8,
        payload: &[u8],
        loc: u64,
    ) -> Result<(), crate::Error> {
        let (record, body_len) =
            Record::decode_without_body(kind, payload).map_err(crate::Error::Record)?;
        self.replay_measured(record, body_len, loc)
            .map_err(crate::Error::Account)
    }

    /// `replay` of a record whose message body (if any) is `body_len`
    /// bytes on disk; the body in `record` itself is not used.
    fn replay_measured(
        &mut self,
        record: Record,
        body_len: usize,
        loc: u64,
    ) -> Result<(), crate::account::AccountError> {
        match record {
            Record::ItemStored { to, dedup, item } => {
                let id = item.id();
                if ids::shard_of(id) == self.cfg.shard {
                    self.recovered_seq_max = self.recovered_seq_max.max(ids::seq_of(id));
                }
                if let Some((from, cmid)) = dedup {
                    // A reclaim copy of an item replayed already.
                    if self.dedup.lookup(from, cmid).is_none() {
                        self.dedup.insert(from, cmid, id);
                    }
                }
                // Durable items are restored even past the live bounds:
                // recovery never drops what was acknowledged.
                match item {
                    Item::Message { .. } => {
                        self.inboxes.restore_spilled(to, id, loc, body_len);
                    }
                    receipt @ Item::Receipt { .. } => {
                        self.inboxes.restore(to, receipt);
                    }
                }
            }
            Record::ItemAcked { user, id } => {
                self.inboxes.remove(user, id);
            }
            Record::Account(event) => {
                if !self.accounts.is_current(&event) {
                    self.accounts.apply(&event)?;
                }
            }
        }
        Ok(())
    }

    // ---- reclaim -------------------------------------------------------------

    /// Does `record` (read from an old log segment) still hold state the
    /// shard needs after a restart? A stored item still queued, or the
    /// account event that is the account's current state. Acks are never
    /// needed once the item they remove is gone from every segment, which
    /// reclaim's oldest-first order guarantees.
    pub fn is_live(&self, record: &Record) -> bool {
        match record {
            Record::ItemStored { to, item, .. } => self.inboxes.contains(*to, item.id()),
            Record::ItemAcked { .. } => false,
            Record::Account(event) => self.accounts.is_current(event),
        }
    }

    /// Reclaim copied `record` forward to `loc`: a spilled item now reads
    /// from there.
    pub fn relocate(&mut self, record: &Record, loc: u64) {
        if let Record::ItemStored { to, item, .. } = record {
            self.inboxes.relocate(*to, item.id(), loc);
        }
    }

    /// Bytes of log the live state needs (queued items with their record
    /// overhead, and one record per account): what reclaim compares the
    /// log's size against.
    pub fn live_log_bytes(&self) -> u64 {
        let items = self.inboxes.total_len() as u64;
        let bytes = self.inboxes.total_bytes() as u64;
        let accounts = self.accounts.len() as u64;
        bytes + items * ITEM_RECORD_OVERHEAD_BYTES + accounts * ACCOUNT_RECORD_BYTES
    }

    /// Ends recovery: server ids continue after the highest one replayed.
    pub fn finish_recovery(&mut self) {
        self.ids = crate::ids::IdAllocator::new(self.cfg.shard, self.recovered_seq_max);
        self.dur.durable_id = ids::compose(self.cfg.shard, self.recovered_seq_max);
    }

    /// Builds the item record for `to` (shared by the store paths).
    pub(super) fn item_record(to: UserId, dedup: Option<(UserId, u64)>, item: &Item) -> Record {
        Record::ItemStored {
            to,
            dedup,
            item: item.clone(),
        }
    }
}
