//! An in-memory fake Tern server for client tests: sans-IO like the
//! client, so a test moves bytes between the two by hand (quinn's `Pair`
//! habit). It keeps just enough state to be a believable peer: registered
//! keys, stored messages deduplicated by (sender, client_msg_id), and an
//! inbox that is delivered at login until acknowledged.

// Test helpers: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    dead_code,
    unreachable_pub
)]

pub mod net;

use std::collections::HashMap;
use std::time::Instant;

use tern_client::{ClientSession, Event, MessageBody};
use tern_wire::{
    framing, Body, DeviceKey, Encoder, ErrorCode, ErrorFrame, Frame, FrameKind, HelloOk, Limits,
    LoginError, ReceiptKind, Registered,
};

/// The PIN every phone "receives".
pub const PIN: &str = "123456";

/// A user id that tests log in as.
pub const ALICE: u64 = 15_551_230_001;
/// Another user.
pub const BOB: u64 = 15_551_230_002;

/// The key the fake server hands out for `user_id` at `generation`.
pub fn key_for(user_id: u64, generation: u32) -> DeviceKey {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&user_id.to_le_bytes());
    key[8..12].copy_from_slice(&generation.to_le_bytes());
    key[31] = 0xA5;
    DeviceKey(key)
}

/// A client frame the server received, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    Hello {
        client_name: String,
    },
    RequestPin {
        phone: String,
    },
    VerifyPin {
        phone: String,
        pin: String,
    },
    Login {
        user_id: u64,
    },
    Send {
        client_msg_id: u64,
        to: u64,
        body: MessageBody,
    },
    DeliverAck {
        id: u64,
    },
    MarkRead {
        client_msg_id: u64,
        to: u64,
        read_client_msg_id: u64,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Error {
        code: ErrorCode,
    },
    Other(FrameKind),
}

/// An item waiting in the fake inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboxItem {
    Message {
        id: u64,
        from: u64,
        client_msg_id: u64,
        text: String,
    },
    Receipt {
        id: u64,
        kind: ReceiptKind,
        peer: u64,
        client_msg_id: u64,
    },
}

impl InboxItem {
    fn id(&self) -> u64 {
        match self {
            Self::Message { id, .. } | Self::Receipt { id, .. } => *id,
        }
    }
}

#[derive(Debug)]
pub struct FakeServer {
    // ---- Durable state (survives reconnects) ----
    /// user id -> (current key, generation).
    pub keys: HashMap<u64, (DeviceKey, u32)>,
    /// (sender, client_msg_id) -> server id: a retry is stored once.
    pub stored: HashMap<(u64, u64), u64>,
    pub next_server_id: u64,
    /// Items delivered at every login until DeliverAck'ed.
    pub inbox: Vec<InboxItem>,
    /// Everything received, across connections.
    pub received: Vec<Got>,
    // ---- Behaviour switches ----
    /// When false, Send/MarkRead are recorded but not acknowledged (lost
    /// acks).
    pub ack_ops: bool,
    /// For this many next Sends: record, do not ack, and ask for the
    /// connection to be closed (a crash between receive and ack).
    pub close_after_sends: u32,
    /// `HelloOk.max_frame_len` advertised.
    pub advertised_max_frame_len: u32,
    // ---- Per connection ----
    rx: Vec<u8>,
    tx: Vec<u8>,
    encoder: Encoder,
    limits: Limits,
    user: Option<u64>,
    /// Set when the server wants the transport closed.
    pub close_requested: bool,
    /// Index into `received` where the current connection started.
    pub connection_start: usize,
}

impl Default for FakeServer {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeServer {
    pub fn new() -> Self {
        Self {
            keys: HashMap::new(),
            stored: HashMap::new(),
            next_server_id: 1000,
            inbox: Vec::new(),
            received: Vec::new(),
            ack_ops: true,
            close_after_sends: 0,
            advertised_max_frame_len: tern_wire::MAX_FRAME_LEN_DEFAULT,
            rx: Vec::new(),
            tx: Vec::new(),
            encoder: Encoder::default(),
            limits: Limits::default(),
            user: None,
            close_requested: false,
            connection_start: 0,
        }
    }

    /// A server that already knows `user_id` with key generation 1.
    pub fn with_user(user_id: u64) -> Self {
        let mut s = Self::new();
        s.keys.insert(user_id, (key_for(user_id, 1), 1));
        s
    }

    /// The transport was replaced: per-connection state starts over.
    pub fn new_connection(&mut self) {
        self.rx.clear();
        self.tx.clear();
        self.user = None;
        self.close_requested = false;
        self.connection_start = self.received.len();
    }

    /// Frames received on the current connection.
    pub fn received_this_connection(&self) -> &[Got] {
        &self.received[self.connection_start..]
    }

    /// Queues a frame for the client.
    pub fn push(&mut self, frame: &Frame<'_>) {
        self.encoder.encode(frame, &mut self.tx).unwrap();
    }

    /// Queues a text Deliver for the client (not kept in the inbox).
    pub fn deliver_text(&mut self, id: u64, from: u64, client_msg_id: u64, text: &str) {
        self.push(&Frame::Deliver {
            id,
            from,
            client_msg_id,
            sent_at_ms: 1_700_000_000_000 + id,
            body: Body::Text(text),
        });
    }

    /// Queues a Receipt for the client (not kept in the inbox).
    pub fn receipt(&mut self, id: u64, kind: ReceiptKind, peer: u64, client_msg_id: u64) {
        self.push(&Frame::Receipt {
            id,
            kind,
            peer,
            client_msg_id,
            at_ms: 1_700_000_000_000 + id,
        });
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tx)
    }

    /// client_msg_ids of every Send received, in arrival order.
    pub fn send_ids(&self) -> Vec<u64> {
        self.received
            .iter()
            .filter_map(|g| match g {
                Got::Send { client_msg_id, .. } => Some(*client_msg_id),
                _ => None,
            })
            .collect()
    }

    /// Ids of every DeliverAck received, in arrival order.
    pub fn deliver_acks(&self) -> Vec<u64> {
        self.received
            .iter()
            .filter_map(|g| match g {
                Got::DeliverAck { id } => Some(*id),
                _ => None,
            })
            .collect()
    }

    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        self.rx.extend_from_slice(bytes);
        let mut consumed = 0;
        let rx = std::mem::take(&mut self.rx);
        while let Some((payload, used)) =
            framing::split(&rx[consumed..], self.limits.max_frame_len).unwrap()
        {
            let frame = tern_wire::decode(payload, &self.limits).unwrap();
            self.handle_frame(frame);
            consumed += used;
        }
        self.rx = rx[consumed..].to_vec();
    }

    fn server_time_ms(&self) -> u64 {
        1_700_000_000_000
    }

    fn handle_frame(&mut self, frame: Frame<'_>) {
        let got = match frame {
            Frame::Hello(h) => {
                self.push(&Frame::HelloOk(HelloOk {
                    protocol_version: tern_wire::PROTOCOL_VERSION,
                    capabilities: 0,
                    server_name: "fake-tern",
                    max_frame_len: self.advertised_max_frame_len,
                }));
                Got::Hello {
                    client_name: h.client_name.to_owned(),
                }
            }
            Frame::RequestPin { phone } => {
                self.push(&Frame::PinSent {
                    phone,
                    pin_len: 6,
                    expires_in_s: 300,
                });
                Got::RequestPin {
                    phone: phone.to_owned(),
                }
            }
            Frame::VerifyPin { phone, pin } => {
                if pin == PIN {
                    let user_id: u64 = phone.trim_start_matches('+').parse().unwrap();
                    let generation = self.keys.get(&user_id).map_or(1, |(_, g)| g + 1);
                    let key = key_for(user_id, generation);
                    self.keys.insert(user_id, (key, generation));
                    self.push(&Frame::Registered(Registered {
                        user_id,
                        device_key: key,
                        device_generation: generation,
                    }));
                } else {
                    self.push(&Frame::Error(ErrorFrame {
                        code: ErrorCode::PinInvalid,
                        message: "wrong PIN",
                        client_msg_id: 0,
                        fatal: false,
                    }));
                }
                Got::VerifyPin {
                    phone: phone.to_owned(),
                    pin: pin.to_owned(),
                }
            }
            Frame::Login {
                user_id,
                device_key,
            } => {
                if self.keys.get(&user_id).map(|(k, _)| *k) == Some(device_key) {
                    self.user = Some(user_id);
                    self.push(&Frame::LoginOk {
                        user_id,
                        queued: u32::try_from(self.inbox.len()).unwrap(),
                        server_time_ms: self.server_time_ms(),
                    });
                    for item in self.inbox.clone() {
                        match item {
                            InboxItem::Message {
                                id,
                                from,
                                client_msg_id,
                                text,
                            } => self.deliver_text(id, from, client_msg_id, &text),
                            InboxItem::Receipt {
                                id,
                                kind,
                                peer,
                                client_msg_id,
                            } => self.receipt(id, kind, peer, client_msg_id),
                        }
                    }
                } else {
                    self.push(&Frame::LoginError(LoginError {
                        code: ErrorCode::LoginFailed,
                        message: "bad key",
                        retry_after_ms: 0,
                    }));
                }
                Got::Login { user_id }
            }
            Frame::Send {
                client_msg_id,
                to,
                body,
            } => {
                let sender = self.user.expect("Send before LoginOk");
                if self.close_after_sends > 0 {
                    self.close_after_sends -= 1;
                    self.close_requested = true;
                } else if self.ack_ops {
                    self.ack(sender, client_msg_id);
                }
                Got::Send {
                    client_msg_id,
                    to,
                    body: MessageBody::from_wire(&body),
                }
            }
            Frame::MarkRead {
                client_msg_id,
                to,
                read_client_msg_id,
            } => {
                let sender = self.user.expect("MarkRead before LoginOk");
                if self.ack_ops {
                    self.ack(sender, client_msg_id);
                }
                Got::MarkRead {
                    client_msg_id,
                    to,
                    read_client_msg_id,
                }
            }
            Frame::DeliverAck { id } => {
                self.inbox.retain(|item| item.id() != id);
                Got::DeliverAck { id }
            }
            Frame::Ping { nonce } => {
                self.push(&Frame::Pong { nonce });
                Got::Ping { nonce }
            }
            Frame::Pong { nonce } => Got::Pong { nonce },
            Frame::Error(e) => Got::Error { code: e.code },
            other => Got::Other(other.kind()),
        };
        self.received.push(got);
    }

    fn ack(&mut self, sender: u64, client_msg_id: u64) {
        let next = self.next_server_id;
        let server_msg_id = *self.stored.entry((sender, client_msg_id)).or_insert(next);
        if server_msg_id == next {
            self.next_server_id += 1;
        }
        self.push(&Frame::ServerAck {
            client_msg_id,
            server_msg_id,
            timestamp_ms: self.server_time_ms(),
        });
    }
}

/// Moves bytes both ways until neither side has anything to say.
pub fn pump(client: &mut ClientSession, server: &mut FakeServer, now: Instant) {
    for _ in 0..64 {
        let mut out = Vec::new();
        client.poll_transmit(&mut out);
        if !out.is_empty() {
            server.handle_bytes(&out);
        }
        let back = server.take_output();
        if !back.is_empty() {
            client.handle_bytes(&back, now).unwrap();
        }
        if out.is_empty() && back.is_empty() {
            return;
        }
    }
    panic!("pump did not settle");
}

/// Every queued event.
pub fn drain_events(client: &mut ClientSession) -> Vec<Event> {
    std::iter::from_fn(|| client.poll_event()).collect()
}
