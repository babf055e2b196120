//! The sans-IO client session (quinn-proto style).
//!
//! Bytes from the server go in through [`ClientSession::handle_bytes`];
//! bytes for the server come out of [`ClientSession::poll_transmit`]; what
//! the application should see comes out of [`ClientSession::poll_event`].
//! Time is passed in (`now`) and timers are driven by
//! [`ClientSession::poll_timeout`] / [`ClientSession::handle_timeout`]. No
//! sockets, clock or threads inside: a test moves bytes between a session
//! and a fake server in memory.
//!
//! Delivery guarantees kept here:
//! - every `Send`/`MarkRead` stays pending until its `ServerAck`, is re-sent
//!   with the same `client_msg_id` after `retry_interval_ms` and again after
//!   each reconnect (after `LoginOk`, in the original order);
//! - every `Deliver`/`Receipt` is answered with `DeliverAck`, repeats
//!   included, but reaches the application once per id within the dedup
//!   window.

mod dedup;
mod pending;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tern_wire::{
    framing, DeviceKey, Encoder, ErrorCode, ErrorFrame, Frame, Hello, KickReason, Limits,
    PROTOCOL_VERSION,
};

use crate::config::{SessionConfig, MAX_FRAME_LEN_MIN, RETRY_INTERVAL_MS_MIN};
use crate::error::{ArgumentReason, ClientError, ProtocolReason};
use crate::event::{DropReason, Event, MediaRef, MessageBody};

use dedup::DedupWindow;
use pending::{Pending, PendingKind, PendingOp};

/// State of the transport under the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Bytes flow.
    Connected,
    /// No transport; operations wait in `pending`.
    Disconnected,
    /// Connected, but an inbound error made the byte stream unusable; only
    /// a transport reset helps.
    Broken,
}

/// Login state on the current connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    None,
    LoggingIn,
    LoggedIn { user_id: u64 },
}

/// A client's protocol state: registration, login, pending operations,
/// delivery dedup, keepalive. See the module docs.
#[derive(Debug)]
pub struct ClientSession {
    config: SessionConfig,
    limits: Limits,
    encoder: Encoder,
    /// `HelloOk.max_frame_len` of the current connection, when stated.
    server_max_frame_len: Option<u32>,
    link: Link,
    hello_sent: bool,
    auth: Auth,
    /// Remembered by `login` so a reconnect logs in again by itself.
    credentials: Option<(u64, DeviceKey)>,
    next_client_msg_id: u64,
    next_ping_nonce: u64,
    pending: Pending,
    dedup: DedupWindow,
    /// Inbound bytes not yet forming a whole frame (at most one frame).
    rx: Vec<u8>,
    /// Outbound bytes not yet taken by `poll_transmit`.
    tx: Vec<u8>,
    events: VecDeque<Event>,
    /// When something was last queued for sending (keepalive anchor).
    last_tx_at: Option<Instant>,
    /// Reused buffer for size checks of new operations.
    scratch: Vec<u8>,
}

impl ClientSession {
    /// A session over a freshly connected transport (nothing sent yet).
    ///
    /// `first_client_msg_id` must not repeat ids this user sent before: the
    /// server treats a known id as a retry and stores nothing. Persist the
    /// counter ([`Self::next_client_msg_id`]) or seed it from the clock
    /// ([`crate::client_msg_id_seed`]).
    pub fn new(config: SessionConfig, first_client_msg_id: u64) -> Self {
        let mut config = config;
        config.retry_interval_ms = config.retry_interval_ms.max(RETRY_INTERVAL_MS_MIN);
        config.max_frame_len = Limits::with_max_frame_len(config.max_frame_len)
            .max_frame_len
            .max(MAX_FRAME_LEN_MIN);
        let limits = Limits::with_max_frame_len(config.max_frame_len);
        Self {
            encoder: Encoder::new(&limits),
            limits,
            server_max_frame_len: None,
            link: Link::Connected,
            hello_sent: false,
            auth: Auth::None,
            credentials: None,
            next_client_msg_id: first_client_msg_id,
            next_ping_nonce: 1,
            pending: Pending::new(config.pending_len_max),
            dedup: DedupWindow::new(config.dedup_window_len),
            rx: Vec::new(),
            tx: Vec::new(),
            events: VecDeque::new(),
            last_tx_at: None,
            scratch: Vec::new(),
            config,
        }
    }

    // ---- Operations --------------------------------------------------

    /// Queues `Hello` if it was not sent on this connection yet. Every other
    /// operation does this itself, so calling it is optional.
    pub fn hello(&mut self) -> Result<(), ClientError> {
        self.require_link()?;
        self.ensure_hello()
    }

    /// Asks the server to send a PIN by SMS to `phone` (E.164).
    pub fn request_pin(&mut self, phone: &str) -> Result<(), ClientError> {
        self.require_link()?;
        self.ensure_hello()?;
        self.queue_frame(&Frame::RequestPin { phone })
    }

    /// Sends the PIN received by SMS; the answer is [`Event::Registered`].
    pub fn verify_pin(&mut self, phone: &str, pin: &str) -> Result<(), ClientError> {
        self.require_link()?;
        self.ensure_hello()?;
        self.queue_frame(&Frame::VerifyPin { phone, pin })
    }

    /// Logs in. The credentials are remembered: after a reconnect
    /// ([`Self::on_connected`]) the session logs in again by itself, unless
    /// the server said the key is dead (bad key, device replaced).
    pub fn login(&mut self, user_id: u64, key: DeviceKey) -> Result<(), ClientError> {
        self.require_link()?;
        self.ensure_hello()?;
        self.queue_frame(&Frame::Login {
            user_id,
            device_key: key,
        })?;
        self.credentials = Some((user_id, key));
        self.auth = Auth::LoggingIn;
        Ok(())
    }

    /// Sends a text message to user `to`; returns its `client_msg_id`.
    /// Works offline too: the message waits (bounded by `pending_len_max`)
    /// and goes out after the next `LoginOk`.
    pub fn send_text(&mut self, to: u64, text: &str, now: Instant) -> Result<u64, ClientError> {
        self.send(to, MessageBody::Text(text.to_owned()), now)
    }

    /// Sends a media reference to user `to`; returns its `client_msg_id`.
    pub fn send_media(
        &mut self,
        to: u64,
        media: MediaRef,
        now: Instant,
    ) -> Result<u64, ClientError> {
        self.send(to, MessageBody::Media(media), now)
    }

    /// Sends a message body to user `to`; returns its `client_msg_id`.
    pub fn send(&mut self, to: u64, body: MessageBody, now: Instant) -> Result<u64, ClientError> {
        self.push_op(PendingKind::Send { to, body }, now)
    }

    /// Tells `peer` that its message `read_client_msg_id` was read; returns
    /// this operation's own `client_msg_id` (acked and retried like a send).
    pub fn mark_read(
        &mut self,
        peer: u64,
        read_client_msg_id: u64,
        now: Instant,
    ) -> Result<u64, ClientError> {
        self.push_op(
            PendingKind::MarkRead {
                to: peer,
                read_client_msg_id,
            },
            now,
        )
    }

    /// Queues a `Ping`; returns its nonce (echoed in [`Event::Pong`]).
    pub fn ping(&mut self, now: Instant) -> Result<u64, ClientError> {
        self.require_link()?;
        self.ensure_hello()?;
        let nonce = self.next_ping_nonce;
        self.next_ping_nonce = nonce.wrapping_add(1);
        self.queue_frame(&Frame::Ping { nonce })?;
        self.last_tx_at = Some(now);
        Ok(nonce)
    }

    // ---- Input ---------------------------------------------------------

    /// Feeds bytes read from the transport. Whole frames are decoded and
    /// handled at once; a partial frame waits for more bytes.
    ///
    /// An error (malformed frame, protocol violation) breaks the connection:
    /// events of frames before the bad one are kept, and further input is
    /// refused with [`ClientError::ConnectionBroken`] until the transport is
    /// reset. Pending operations survive.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) -> Result<(), ClientError> {
        match self.link {
            Link::Connected => {}
            Link::Disconnected => return Err(ClientError::NotConnected),
            Link::Broken => return Err(ClientError::ConnectionBroken),
        }
        self.last_tx_at.get_or_insert(now);
        let result = if self.rx.is_empty() {
            // Common case: parse straight from the caller's buffer and keep
            // only the tail of a partial frame.
            self.process(bytes, now).map(|consumed| {
                self.rx
                    .extend_from_slice(bytes.get(consumed..).unwrap_or_default());
            })
        } else {
            let mut buf = std::mem::take(&mut self.rx);
            buf.extend_from_slice(bytes);
            let result = self.process(&buf, now);
            if let Ok(consumed) = result {
                buf.drain(..consumed.min(buf.len()));
            }
            self.rx = buf;
            result.map(|_| ())
        };
        if result.is_err() {
            self.link = Link::Broken;
            self.auth = Auth::None;
            self.rx.clear();
            self.tx.clear();
            self.pending.clear_deadlines();
        }
        result
    }

    /// Drives timers: re-sends pending operations whose retry deadline
    /// passed (same `client_msg_id`, original order) and sends a keepalive
    /// `Ping` when nothing was sent for `ping_interval_ms`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        if self.link != Link::Connected {
            return Ok(());
        }
        let last_tx_at = *self.last_tx_at.get_or_insert(now);
        if let Some(interval) = self.ping_interval() {
            if self.hello_sent && now >= last_tx_at + interval {
                self.ping(now)?;
            }
        }
        if matches!(self.auth, Auth::LoggedIn { .. }) {
            self.retransmit(now, |op| op.retry_at.is_some_and(|at| at <= now));
        }
        Ok(())
    }

    /// The transport is gone. Pending operations are kept (re-sent after
    /// the next `LoginOk`); unsent bytes and partial input are dropped
    /// (unsent `DeliverAck`s make the server deliver again, and the dedup
    /// window hides the repeats).
    pub fn on_disconnected(&mut self) {
        self.link = Link::Disconnected;
        self.hello_sent = false;
        self.auth = Auth::None;
        self.server_max_frame_len = None;
        self.rx.clear();
        self.tx.clear();
        self.pending.clear_deadlines();
    }

    /// A new transport is up (resets the old one if the caller did not).
    /// When credentials are known from an earlier [`Self::login`], queues
    /// `Hello` and `Login` by itself; pending operations follow `LoginOk`.
    pub fn on_connected(&mut self, now: Instant) -> Result<(), ClientError> {
        if self.link != Link::Disconnected {
            self.on_disconnected();
        }
        self.link = Link::Connected;
        self.last_tx_at = Some(now);
        if let Some((user_id, key)) = self.credentials {
            self.login(user_id, key)?;
        }
        Ok(())
    }

    /// Forgets the credentials remembered by [`Self::login`], so reconnects
    /// no longer log in by themselves.
    pub fn forget_credentials(&mut self) {
        self.credentials = None;
    }

    // ---- Output --------------------------------------------------------

    /// Appends every queued outbound byte to `out`; returns how many.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let len = self.tx.len();
        if out.is_empty() {
            std::mem::swap(out, &mut self.tx);
        } else {
            out.append(&mut self.tx);
        }
        len
    }

    /// True when [`Self::poll_transmit`] has bytes to hand out.
    pub fn has_transmit(&self) -> bool {
        !self.tx.is_empty()
    }

    /// The next event for the application, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.link != Link::Connected {
            return None;
        }
        let keepalive = match (self.ping_interval(), self.last_tx_at) {
            (Some(interval), Some(last)) if self.hello_sent => Some(last + interval),
            _ => None,
        };
        let retry = match self.auth {
            Auth::LoggedIn { .. } => self.pending.next_deadline(),
            _ => None,
        };
        match (keepalive, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- Inspection ----------------------------------------------------

    /// The limits in force (after clamping).
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// True while a transport is attached and usable.
    pub fn is_connected(&self) -> bool {
        self.link == Link::Connected
    }

    /// True after `LoginOk` on the current connection.
    pub fn is_logged_in(&self) -> bool {
        matches!(self.auth, Auth::LoggedIn { .. })
    }

    /// The logged-in user, if any.
    pub fn user_id(&self) -> Option<u64> {
        match self.auth {
            Auth::LoggedIn { user_id } => Some(user_id),
            _ => None,
        }
    }

    /// Operations waiting for their `ServerAck`.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Ids of the operations waiting for their `ServerAck`, oldest first.
    pub fn pending_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.ids()
    }

    /// True while `client_msg_id` waits for its `ServerAck`.
    pub fn is_pending(&self, client_msg_id: u64) -> bool {
        self.pending.contains(client_msg_id)
    }

    /// How many times the pending operation was put on the wire.
    pub fn transmit_count(&self, client_msg_id: u64) -> Option<u32> {
        self.pending.get(client_msg_id).map(|op| op.transmit_count)
    }

    /// Server ids currently remembered by the dedup window.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// The id the next operation will get (persist it to avoid reuse).
    pub fn next_client_msg_id(&self) -> u64 {
        self.next_client_msg_id
    }

    /// The server's frame bound from `HelloOk`, once known.
    pub fn server_max_frame_len(&self) -> Option<u32> {
        self.server_max_frame_len
    }

    // ---- Internals -----------------------------------------------------

    fn require_link(&self) -> Result<(), ClientError> {
        match self.link {
            Link::Connected => Ok(()),
            Link::Disconnected => Err(ClientError::NotConnected),
            Link::Broken => Err(ClientError::ConnectionBroken),
        }
    }

    fn ping_interval(&self) -> Option<Duration> {
        (self.config.ping_interval_ms > 0)
            .then(|| Duration::from_millis(self.config.ping_interval_ms))
    }

    fn retry_interval(&self) -> Duration {
        Duration::from_millis(self.config.retry_interval_ms)
    }

    fn ensure_hello(&mut self) -> Result<(), ClientError> {
        if self.hello_sent {
            return Ok(());
        }
        self.encoder
            .encode(
                &Frame::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    capabilities: 0,
                    client_name: &self.config.client_name,
                }),
                &mut self.tx,
            )
            .map_err(ClientError::Encode)?;
        self.hello_sent = true;
        Ok(())
    }

    fn queue_frame(&mut self, frame: &Frame<'_>) -> Result<(), ClientError> {
        self.encoder
            .encode(frame, &mut self.tx)
            .map(|_| ())
            .map_err(ClientError::Encode)
    }

    fn can_transmit_ops(&self) -> bool {
        self.link == Link::Connected && matches!(self.auth, Auth::LoggedIn { .. })
    }

    /// Admits a new operation: checks room and size before taking an id,
    /// so a refused operation leaves no trace.
    fn push_op(&mut self, kind: PendingKind, now: Instant) -> Result<u64, ClientError> {
        self.pending.check_room()?;
        let client_msg_id = self.next_client_msg_id;
        let next = client_msg_id
            .checked_add(1)
            .ok_or(ClientError::InvalidArgument(
                ArgumentReason::ClientMsgIdExhausted,
            ))?;
        let mut op = PendingOp {
            client_msg_id,
            kind,
            retry_at: None,
            transmit_count: 0,
        };
        self.scratch.clear();
        let encoded_len = self
            .encoder
            .encode(&op.frame(), &mut self.scratch)
            .map_err(ClientError::Encode)?;
        let payload_len = encoded_len.saturating_sub(framing::LEN_PREFIX_BYTES);
        if let Some(max) = self.server_max_frame_len {
            if payload_len > max as usize {
                return Err(ClientError::Encode(tern_wire::Error::EncodeTooLarge {
                    len: payload_len,
                    max,
                }));
            }
        }
        if self.can_transmit_ops() {
            self.tx.extend_from_slice(&self.scratch);
            op.retry_at = Some(now + self.retry_interval());
            op.transmit_count = 1;
            self.last_tx_at = Some(now);
        }
        self.pending.insert(op)?;
        self.next_client_msg_id = next;
        Ok(client_msg_id)
    }

    /// Puts every pending operation selected by `due` on the wire again, in
    /// creation order, and re-arms its retry deadline. Operations the
    /// server's frame bound can never accept are dropped with an event.
    fn retransmit(&mut self, now: Instant, due: impl Fn(&PendingOp) -> bool) {
        let retry_at = now + self.retry_interval();
        let mut dropped: Vec<(u64, DropReason)> = Vec::new();
        for op in self.pending.iter_mut().filter(|op| due(op)) {
            let client_msg_id = op.client_msg_id;
            let start = self.tx.len();
            match self.encoder.encode(&op.frame(), &mut self.tx) {
                Ok(encoded_len) => {
                    let len = encoded_len.saturating_sub(framing::LEN_PREFIX_BYTES);
                    match self.server_max_frame_len {
                        Some(max) if len > max as usize => {
                            self.tx.truncate(start);
                            dropped
                                .push((client_msg_id, DropReason::TooLargeForServer { len, max }));
                        }
                        _ => {
                            op.retry_at = Some(retry_at);
                            op.transmit_count = op.transmit_count.saturating_add(1);
                            self.last_tx_at = Some(now);
                        }
                    }
                }
                Err(e) => {
                    // It was encoded under the same bound when admitted, so
                    // this is not expected; give up on it loudly anyway.
                    let (len, max) = match e {
                        tern_wire::Error::EncodeTooLarge { len, max } => (len, max),
                        _ => (0, self.encoder.max_frame_len()),
                    };
                    dropped.push((client_msg_id, DropReason::TooLargeForServer { len, max }));
                }
            }
        }
        for (client_msg_id, reason) in dropped {
            self.pending.remove(client_msg_id);
            self.events.push_back(Event::Dropped {
                client_msg_id,
                reason,
            });
        }
    }

    /// Handles every whole frame at the start of `buf`; returns the bytes
    /// consumed.
    fn process(&mut self, buf: &[u8], now: Instant) -> Result<usize, ClientError> {
        let mut consumed = 0usize;
        while let Some(rest) = buf.get(consumed..) {
            let Some((payload, used)) = framing::split(rest, self.limits.max_frame_len)
                .map_err(ClientError::MalformedFrame)?
            else {
                break;
            };
            match tern_wire::decode(payload, &self.limits) {
                Ok(frame) => self.handle_frame(frame, now)?,
                Err(tern_wire::Error::UnknownFrameType(tag)) => {
                    // A newer server's frame kind: say so, stay connected
                    // (schema growth rule).
                    let message = format!("unknown frame type {tag}");
                    self.queue_frame(&Frame::Error(ErrorFrame {
                        code: ErrorCode::UnexpectedFrame,
                        message: &message,
                        client_msg_id: 0,
                        fatal: false,
                    }))?;
                }
                Err(e) => return Err(ClientError::MalformedFrame(e)),
            }
            consumed += used;
        }
        Ok(consumed)
    }

    fn handle_frame(&mut self, frame: Frame<'_>, now: Instant) -> Result<(), ClientError> {
        match frame {
            Frame::HelloOk(h) => {
                // 0 is the FlatBuffers default: the server stated no bound.
                self.server_max_frame_len = (h.max_frame_len > 0).then_some(h.max_frame_len);
                self.events.push_back(Event::HelloOk {
                    protocol_version: h.protocol_version,
                    server_name: h.server_name.to_owned(),
                    max_frame_len: h.max_frame_len,
                });
            }
            Frame::PinSent {
                phone,
                pin_len,
                expires_in_s,
            } => self.events.push_back(Event::PinSent {
                phone: phone.to_owned(),
                pin_len,
                expires_in_s,
            }),
            Frame::Registered(r) => self.events.push_back(Event::Registered {
                user_id: r.user_id,
                key: r.device_key,
                generation: r.device_generation,
            }),
            Frame::LoginOk {
                user_id,
                queued,
                server_time_ms,
            } => {
                self.auth = Auth::LoggedIn { user_id };
                self.events.push_back(Event::LoggedIn {
                    user_id,
                    queued,
                    server_time_ms,
                });
                self.retransmit(now, |_| true);
            }
            Frame::LoginError(e) => {
                self.auth = Auth::None;
                if e.code == ErrorCode::LoginFailed {
                    // The key is wrong or dead: never retry it by itself.
                    self.credentials = None;
                }
                self.events.push_back(Event::LoginFailed {
                    code: e.code,
                    message: e.message.to_owned(),
                    retry_after_ms: e.retry_after_ms,
                });
            }
            Frame::ServerAck {
                client_msg_id,
                server_msg_id,
                timestamp_ms,
            } => {
                // A repeated ack (answer to a retry) finds nothing pending
                // and is not reported twice.
                if self.pending.remove(client_msg_id).is_some() {
                    self.events.push_back(Event::Acked {
                        client_msg_id,
                        server_msg_id,
                        timestamp_ms,
                    });
                }
            }
            Frame::Deliver {
                id,
                from,
                client_msg_id,
                sent_at_ms,
                body,
            } => {
                self.queue_frame(&Frame::DeliverAck { id })?;
                self.last_tx_at = Some(now);
                if self.dedup.insert(id) {
                    self.events.push_back(Event::Message {
                        id,
                        from,
                        client_msg_id,
                        sent_at_ms,
                        body: MessageBody::from_wire(&body),
                    });
                }
            }
            Frame::Receipt {
                id,
                kind,
                peer,
                client_msg_id,
                at_ms,
            } => {
                self.queue_frame(&Frame::DeliverAck { id })?;
                self.last_tx_at = Some(now);
                if self.dedup.insert(id) {
                    self.events.push_back(Event::Receipt {
                        id,
                        kind,
                        peer,
                        client_msg_id,
                        at_ms,
                    });
                }
            }
            Frame::Ping { nonce } => {
                self.queue_frame(&Frame::Pong { nonce })?;
                self.last_tx_at = Some(now);
            }
            Frame::Pong { nonce } => self.events.push_back(Event::Pong { nonce }),
            Frame::Error(e) => {
                if e.client_msg_id != 0 && !is_transient(e.code) {
                    self.pending.remove(e.client_msg_id);
                }
                self.events.push_back(Event::ServerError {
                    code: e.code,
                    message: e.message.to_owned(),
                    client_msg_id: e.client_msg_id,
                    fatal: e.fatal,
                });
            }
            Frame::Kicked(k) => {
                self.auth = Auth::None;
                if k.reason == KickReason::DeviceReplaced {
                    // Invariant I6: a replaced key never logs in again.
                    self.credentials = None;
                }
                self.events.push_back(Event::Kicked {
                    reason: k.reason,
                    message: k.message.to_owned(),
                });
            }
            other => {
                return Err(ClientError::Protocol(ProtocolReason::UnexpectedFrame(
                    other.kind(),
                )))
            }
        }
        Ok(())
    }
}

/// Error codes after which an operation may succeed if sent again; the
/// operation stays pending. Every other code (unknown ones included) ends
/// the operation.
pub(crate) fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::QueueFull
            | ErrorCode::ShardUnavailable
            | ErrorCode::Overloaded
            | ErrorCode::ShuttingDown
            | ErrorCode::Internal
            | ErrorCode::SlowConsumer
            | ErrorCode::IdleTimeout
    )
}
