//! Send, MarkRead, DeliverAck, storing on the recipient's home shard, and
//! streaming inbox items to an online device.

use tern_wire::{Body, ErrorCode, Frame, ReceiptKind};

use super::durability::Reply;
use super::LatencyKind;
use super::Shard;
use crate::action::Action;
use crate::body;
use crate::conn::{ConnId, Phase};
use crate::inbox::{Item, Unsent};
use crate::mesh::{
    ConnRef, MeshMsg, OwnedBody, ReceiptPush, StoreContent, StoreReq, StoreResult, Stored,
};
use crate::record::Record;
use crate::user::UserId;

/// Content to store, borrowed when the store is local.
enum ContentRef<'a> {
    Message(Body<'a>),
    Read { read_client_msg_id: u64 },
}

impl ContentRef<'_> {
    /// The owned form, for the trip to another shard.
    fn to_owned(&self) -> StoreContent {
        match self {
            Self::Message(body) => StoreContent::Message(OwnedBody::from_body(body)),
            Self::Read { read_client_msg_id } => StoreContent::Read {
                read_client_msg_id: *read_client_msg_id,
            },
        }
    }
}

impl Shard {
    pub(super) fn on_send(
        &mut self,
        conn: ConnId,
        from: UserId,
        client_msg_id: u64,
        to: u64,
        body: &Body<'_>,
        now_ms: u64,
    ) {
        if let Err(e) = body::validate(body, &self.cfg.limits) {
            self.send_error(conn, e.code(), &e.to_string(), client_msg_id, false);
            return;
        }
        let content = ContentRef::Message(*body);
        self.submit(conn, from, client_msg_id, to, content, now_ms);
    }

    pub(super) fn on_mark_read(
        &mut self,
        conn: ConnId,
        reader: UserId,
        client_msg_id: u64,
        to: u64,
        read_client_msg_id: u64,
        now_ms: u64,
    ) {
        let content = ContentRef::Read { read_client_msg_id };
        self.submit(conn, reader, client_msg_id, to, content, now_ms);
    }

    /// Routes a client operation to the recipient's home shard: stored
    /// here when that is this shard, else sent over the mesh (owned) with
    /// the connection to answer.
    fn submit(
        &mut self,
        conn: ConnId,
        from: UserId,
        client_msg_id: u64,
        to: u64,
        content: ContentRef<'_>,
        now_ms: u64,
    ) {
        let Ok(to) = UserId::from_wire(to) else {
            self.answer_error(conn, client_msg_id, ErrorCode::UnknownRecipient);
            return;
        };
        let home = self.home_of(to);
        if home == self.cfg.shard {
            let outcome = self.store(from, client_msg_id, to, now_ms, content, now_ms);
            self.answer_local(conn, client_msg_id, outcome, now_ms, now_ms);
            return;
        }
        let req = StoreReq {
            from,
            client_msg_id,
            to,
            sent_at_ms: now_ms,
            reply: ConnRef {
                shard: self.cfg.shard,
                conn,
            },
            content: content.to_owned(),
        };
        self.actions.push_back(Action::Mesh {
            to: home,
            msg: MeshMsg::Store(Box::new(req)),
        });
    }

    pub(super) fn on_deliver_ack(&mut self, conn: ConnId, user: UserId, id: u64, now_ms: u64) {
        let Some(item) = self.inboxes.ack(user, id) else {
            // A repeated or unknown ack: acks are idempotent.
            return;
        };
        // Nothing waits on this record: if a crash loses it, the item is
        // delivered again and the device drops the repeat by id (I3).
        self.append(Record::ItemAcked { user, id });
        if let Some(c) = self.conns.get_mut(conn) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        if let Item::Message {
            from,
            client_msg_id,
            sent_at_ms,
            ..
        } = item
        {
            self.stats.messages_delivered += 1;
            self.sample_latency(
                LatencyKind::SendToDelivered,
                now_ms.saturating_sub(sent_at_ms),
            );
            let push = ReceiptPush {
                to: from,
                kind: ReceiptKind::Delivered,
                peer: user,
                client_msg_id,
                at_ms: now_ms,
            };
            let home = self.home_of(from);
            if home == self.cfg.shard {
                self.push_receipt(push, now_ms);
            } else {
                self.actions.push_back(Action::Mesh {
                    to: home,
                    msg: MeshMsg::Receipt(push),
                });
            }
        }
        self.pump(user, now_ms);
    }

    /// A store request from another shard for a user homed here.
    pub(super) fn store_remote(&mut self, req: StoreReq, now_ms: u64) {
        let content = match &req.content {
            StoreContent::Message(body) => ContentRef::Message(body.as_body()),
            StoreContent::Read { read_client_msg_id } => ContentRef::Read {
                read_client_msg_id: *read_client_msg_id,
            },
        };
        let outcome = self.store(
            req.from,
            req.client_msg_id,
            req.to,
            req.sent_at_ms,
            content,
            now_ms,
        );
        if req.reply.shard == self.cfg.shard {
            self.answer_local(
                req.reply.conn,
                req.client_msg_id,
                outcome,
                req.sent_at_ms,
                now_ms,
            );
            return;
        }
        match outcome {
            Ok((stored, seq)) => self.reply_when_durable(
                seq,
                Reply::RemoteAck {
                    shard: req.reply.shard,
                    conn: req.reply.conn,
                    client_msg_id: req.client_msg_id,
                    stored,
                    sent_at_ms: req.sent_at_ms,
                },
                now_ms,
            ),
            Err(code) => self.actions.push_back(Action::Mesh {
                to: req.reply.shard,
                msg: MeshMsg::StoreResult(StoreResult {
                    conn: req.reply.conn,
                    client_msg_id: req.client_msg_id,
                    sent_at_ms: req.sent_at_ms,
                    outcome: Err(code),
                }),
            }),
        }
    }

    /// The home shard's answer for a connection here: it already waited
    /// for durability there.
    pub(super) fn store_result(&mut self, res: StoreResult, now_ms: u64) {
        match res.outcome {
            Ok(stored) => {
                self.send_ack_now(res.conn, res.client_msg_id, stored, res.sent_at_ms, now_ms);
            }
            Err(code) => self.answer_error(res.conn, res.client_msg_id, code),
        }
    }

    /// Stores one operation for `to` (homed here) unless it is a repeat.
    /// This is where an item becomes the server's responsibility.
    fn store(
        &mut self,
        from: UserId,
        client_msg_id: u64,
        to: UserId,
        sent_at_ms: u64,
        content: ContentRef<'_>,
        now_ms: u64,
    ) -> Result<(Stored, u64), ErrorCode> {
        debug_assert_eq!(self.home_of(to), self.cfg.shard);
        if self.dur.poisoned {
            return Err(ErrorCode::ShardUnavailable);
        }
        if let Some(server_msg_id) = self.dedup.lookup(from, client_msg_id) {
            // A repeat appends nothing: answered even under backpressure.
            self.stats.messages_deduplicated += 1;
            let seq = self.seq_covering(server_msg_id);
            return Ok((
                Stored {
                    server_msg_id,
                    timestamp_ms: now_ms,
                },
                seq,
            ));
        }
        // Behind an earlier refused operation of this pair: wait for it (I2).
        self.floors.check(from, to, client_msg_id, now_ms)?;
        if self.dur.backpressure {
            let code = ErrorCode::ShardUnavailable;
            self.floors.refused(from, to, client_msg_id, code, now_ms);
            return Err(code);
        }
        if !self.accounts.contains(to) {
            return Err(ErrorCode::UnknownRecipient);
        }
        let id = self.ids.next().map_err(|_| ErrorCode::Internal)?;
        let item = match content {
            ContentRef::Message(body) => {
                let mut frame = Vec::new();
                let deliver = Frame::Deliver {
                    id,
                    from: from.0,
                    client_msg_id,
                    sent_at_ms,
                    body,
                };
                if self.encoder.encode(&deliver, &mut frame).is_err() {
                    // Validated bodies fit a frame (limits.validate keeps
                    // body bounds under the frame bound).
                    return Err(ErrorCode::BodyTooLarge);
                }
                Item::Message {
                    id,
                    from,
                    client_msg_id,
                    sent_at_ms,
                    body: frame.into_boxed_slice(),
                }
            }
            ContentRef::Read { read_client_msg_id } => Item::Receipt {
                id,
                kind: ReceiptKind::Read,
                peer: from,
                client_msg_id: read_client_msg_id,
                at_ms: sent_at_ms,
            },
        };
        let is_message = matches!(item, Item::Message { .. });
        let record = self
            .dur
            .enabled
            .then(|| Self::item_record(to, Some((from, client_msg_id)), &item));
        if let Err(e) = self.inboxes.push(to, item) {
            let code = e.code();
            self.floors.refused(from, to, client_msg_id, code, now_ms);
            return Err(code);
        }
        self.floors.stored(from, to, client_msg_id);
        self.dedup.insert(from, client_msg_id, id);
        let seq = record.map_or(0, |r| self.append(r));
        if is_message {
            self.stats.messages_stored += 1;
        } else {
            self.stats.receipts_stored += 1;
        }
        self.pump_new_item(to, now_ms);
        Ok((
            Stored {
                server_msg_id: id,
                timestamp_ms: now_ms,
            },
            seq,
        ))
    }

    /// Answers a connection on this shard: ServerAck once durable, or the
    /// error now.
    fn answer_local(
        &mut self,
        conn: ConnId,
        client_msg_id: u64,
        outcome: Result<(Stored, u64), ErrorCode>,
        sent_at_ms: u64,
        now_ms: u64,
    ) {
        match outcome {
            Ok((stored, seq)) => self.reply_when_durable(
                seq,
                Reply::Ack {
                    conn,
                    client_msg_id,
                    stored,
                    sent_at_ms,
                },
                now_ms,
            ),
            Err(code) => self.answer_error(conn, client_msg_id, code),
        }
    }

    pub(super) fn send_ack_now(
        &mut self,
        conn: ConnId,
        client_msg_id: u64,
        stored: Stored,
        sent_at_ms: u64,
        now_ms: u64,
    ) {
        self.sample_latency(LatencyKind::SendToAck, now_ms.saturating_sub(sent_at_ms));
        self.send_frame(
            conn,
            &Frame::ServerAck {
                client_msg_id,
                server_msg_id: stored.server_msg_id,
                timestamp_ms: stored.timestamp_ms,
            },
        );
    }

    fn answer_error(&mut self, conn: ConnId, client_msg_id: u64, code: ErrorCode) {
        let message = match code {
            ErrorCode::QueueFull => "recipient's queue is full; nothing was stored, retry later",
            ErrorCode::UnknownRecipient => "no such user",
            ErrorCode::ShardUnavailable => {
                "the recipient's shard cannot store messages now (storage failing or behind); retry later"
            }
            _ => "could not store the message",
        };
        self.send_error(conn, code, message, client_msg_id, false);
    }

    /// A server-made Delivered receipt for a user homed here.
    pub(super) fn push_receipt(&mut self, push: ReceiptPush, now_ms: u64) {
        debug_assert_eq!(self.home_of(push.to), self.cfg.shard);
        let Ok(id) = self.ids.next() else {
            self.stats.receipts_dropped += 1;
            return;
        };
        let item = Item::Receipt {
            id,
            kind: push.kind,
            peer: push.peer,
            client_msg_id: push.client_msg_id,
            at_ms: push.at_ms,
        };
        let record = self
            .dur
            .enabled
            .then(|| Self::item_record(push.to, None, &item));
        match self.inboxes.push(push.to, item) {
            Ok(()) => {
                self.stats.receipts_stored += 1;
                if let Some(record) = record {
                    self.append(record);
                }
                self.pump_new_item(push.to, now_ms);
            }
            // The sender's own inbox is full (long offline): the receipt is
            // counted as dropped; the message itself was delivered.
            Err(_) => self.stats.receipts_dropped += 1,
        }
    }

    /// After an item was queued for `user`: streams it unless it must wait
    /// for its record. With durability on, it cannot go out yet and
    /// `handle_durable` pumps it; every item queued before it was pumped
    /// when it last became sendable (durable, window or buffer freed,
    /// login), so a pump here would only cost lookups.
    fn pump_new_item(&mut self, user: UserId, now_ms: u64) {
        if !self.dur.enabled {
            self.pump(user, now_ms);
        }
    }

    /// Streams queued items to `user`'s connection while its delivery
    /// window and outbound buffer allow.
    pub(super) fn pump(&mut self, user: UserId, _now_ms: u64) {
        let Some(&conn) = self.online.get(&user) else {
            return;
        };
        let out_soft_max = self.cfg.limits.conn_outbound_bytes_max / 2;
        let window = self.cfg.limits.deliver_window_len;
        let (gated, durable_seq) = (self.dur.enabled, crate::ids::seq_of(self.dur.durable_id));
        let durable = |id: u64| !gated || crate::ids::seq_of(id) <= durable_seq;
        let mut woke = false;
        loop {
            let Some(c) = self.conns.get_mut(conn) else {
                return;
            };
            if c.phase != Phase::Authenticated(user)
                || c.in_flight >= window
                || c.out.len() >= out_soft_max
            {
                break;
            }
            // Only durable items go out: their ids are final only then.
            match self.inboxes.peek_unsent(user) {
                Some(Unsent::Loaded(item)) if durable(item.id()) => {}
                Some(Unsent::Spilled { .. }) => {
                    // Its body is on disk: have the runtime read the next
                    // few back (once; `handle_fetched` pumps again).
                    let items = self
                        .inboxes
                        .take_fetch(user, super::durability::FETCH_SCAN_MAX);
                    if !items.is_empty() {
                        self.actions.push_back(Action::Fetch { user, items });
                    }
                    break;
                }
                _ => break,
            }
            let Some(item) = self.inboxes.next_unsent(user) else {
                break;
            };
            woke |= c.out.is_empty();
            match item {
                Item::Message { body, .. } => c.out.extend_from_slice(body),
                Item::Receipt {
                    id,
                    kind,
                    peer,
                    client_msg_id,
                    at_ms,
                } => {
                    let frame = Frame::Receipt {
                        id: *id,
                        kind: *kind,
                        peer: peer.0,
                        client_msg_id: *client_msg_id,
                        at_ms: *at_ms,
                    };
                    if self.encoder.encode(&frame, &mut c.out).is_err() {
                        debug_assert!(false, "receipt frame cannot exceed the frame bound");
                    }
                }
            }
            c.in_flight += 1;
        }
        if woke {
            self.actions.push_back(Action::Wake(conn));
        }
    }
}
