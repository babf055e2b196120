//! Inbound bytes: framing, verification, dispatch by protocol phase.

use tern_wire::{framing, ErrorCode, Frame, HelloOk, PROTOCOL_VERSION};

use super::Shard;
use crate::conn::{ConnId, Phase};

/// What handling one frame did to the rest of the buffer.
pub(super) enum Flow {
    /// Go on with the next frame.
    Continue,
    /// Stop: the connection closed or moved (the rest went with it).
    Stop,
}

impl Shard {
    /// Plaintext bytes read from `conn`'s socket (after TLS).
    ///
    /// Frames are split with `framing::check` (an oversized length prefix is
    /// rejected before anything is buffered) and verified by `decode`
    /// before use. Bad input closes this connection with an error code and
    /// touches nothing else (invariant I5).
    pub fn handle_bytes(&mut self, conn: ConnId, bytes: &[u8], now_ms: u64) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if matches!(c.phase, Phase::Closing | Phase::Migrating) {
            return;
        }
        c.last_rx_ms = now_ms;
        c.ping_sent = false;
        if c.partial.is_empty() {
            let consumed = self.handle_frames(conn, bytes, now_ms);
            self.keep_partial(conn, bytes.get(consumed..).unwrap_or_default());
        } else {
            // Join the held partial frame with the new bytes. Bounded: the
            // partial is less than one frame and `check` caps frames.
            let mut buf = std::mem::take(&mut c.partial);
            buf.extend_from_slice(bytes);
            let consumed = self.handle_frames(conn, &buf, now_ms);
            self.keep_partial(conn, buf.get(consumed..).unwrap_or_default());
        }
    }

    fn keep_partial(&mut self, conn: ConnId, rest: &[u8]) {
        if let Some(c) = self.conns.get_mut(conn) {
            if matches!(c.phase, Phase::Closing | Phase::Migrating) {
                return;
            }
            c.partial.clear();
            if rest.is_empty() {
                // Idle connections hold no inbound buffer.
                c.partial = Vec::new();
            } else {
                c.partial.extend_from_slice(rest);
            }
        }
    }

    /// Handles every whole frame in `buf`; returns the bytes consumed.
    fn handle_frames(&mut self, conn: ConnId, buf: &[u8], now_ms: u64) -> usize {
        let max = self.wire_limits.max_frame_len;
        let mut pos = 0usize;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            let (payload, frame_len) = match framing::split(rest, max) {
                Ok(Some(split)) => split,
                Ok(None) => return pos,
                Err(e) => {
                    self.send_error(conn, e.code(), &e.to_string(), 0, true);
                    return buf.len();
                }
            };
            let flow = match tern_wire::decode(payload, &self.wire_limits) {
                Ok(frame) => self.handle_frame(conn, frame, rest, now_ms),
                Err(tern_wire::Error::UnknownFrameType(tag)) => {
                    // A newer client: say so, keep the connection.
                    self.stats.frames_rejected += 1;
                    let msg = format!("unknown frame type {tag}");
                    self.send_error(conn, ErrorCode::UnexpectedFrame, &msg, 0, false);
                    Flow::Continue
                }
                Err(e) => {
                    self.send_error(conn, e.code(), &e.to_string(), 0, true);
                    Flow::Stop
                }
            };
            match flow {
                Flow::Continue => pos += frame_len,
                Flow::Stop => return buf.len(),
            }
        }
    }

    /// One verified frame. `rest` starts at this frame's length prefix: it
    /// is what a migration carries to the user's home shard.
    fn handle_frame(&mut self, conn: ConnId, frame: Frame<'_>, rest: &[u8], now_ms: u64) -> Flow {
        let Some(phase) = self.conn(conn).map(|c| c.phase) else {
            return Flow::Stop;
        };
        match (phase, frame) {
            (_, Frame::Ping { nonce }) => {
                self.send_frame(conn, &Frame::Pong { nonce });
                Flow::Continue
            }
            (_, Frame::Pong { .. }) => Flow::Continue,
            (Phase::AwaitHello, Frame::Hello(hello)) => {
                if hello.protocol_version != PROTOCOL_VERSION {
                    let msg = format!(
                        "protocol version {} not supported; this server speaks {PROTOCOL_VERSION}",
                        hello.protocol_version
                    );
                    self.send_error(conn, ErrorCode::UnsupportedVersion, &msg, 0, true);
                    return Flow::Stop;
                }
                if let Some(c) = self.conns.get_mut(conn) {
                    c.phase = Phase::Anonymous;
                }
                // Moved out and put back, not cloned: `send_frame` needs
                // `&mut self`, and a clone would allocate on every Hello.
                let server_name = std::mem::take(&mut self.cfg.server_name);
                self.send_frame(
                    conn,
                    &Frame::HelloOk(HelloOk {
                        protocol_version: PROTOCOL_VERSION,
                        capabilities: 0,
                        server_name: &server_name,
                        max_frame_len: self.wire_limits.max_frame_len,
                    }),
                );
                self.cfg.server_name = server_name;
                Flow::Continue
            }
            (Phase::AwaitHello, other) => {
                let msg = format!("expected Hello, got {:?}", other.kind());
                self.send_error(conn, ErrorCode::UnexpectedFrame, &msg, 0, true);
                Flow::Stop
            }
            (Phase::Anonymous, Frame::RequestPin { phone }) => {
                self.on_request_pin(conn, phone, rest, now_ms)
            }
            (Phase::Anonymous, Frame::VerifyPin { phone, pin }) => {
                self.on_verify_pin(conn, phone, pin, rest, now_ms)
            }
            (
                Phase::Anonymous,
                Frame::Login {
                    user_id,
                    device_key,
                },
            ) => self.on_login(conn, user_id, &device_key, rest, now_ms),
            (Phase::Anonymous, other) => {
                let msg = format!("{:?} needs a logged-in session", other.kind());
                self.send_error(conn, ErrorCode::NotAuthenticated, &msg, 0, true);
                Flow::Stop
            }
            (
                Phase::Authenticated(user),
                Frame::Send {
                    client_msg_id,
                    to,
                    body,
                },
            ) => {
                self.on_send(conn, user, client_msg_id, to, &body, now_ms);
                Flow::Continue
            }
            (
                Phase::Authenticated(user),
                Frame::MarkRead {
                    client_msg_id,
                    to,
                    read_client_msg_id,
                },
            ) => {
                self.on_mark_read(conn, user, client_msg_id, to, read_client_msg_id, now_ms);
                Flow::Continue
            }
            (Phase::Authenticated(user), Frame::DeliverAck { id }) => {
                self.on_deliver_ack(conn, user, id, now_ms);
                Flow::Continue
            }
            (Phase::Authenticated(_), other) => {
                let msg = format!("{:?} is not valid after login", other.kind());
                self.send_error(conn, ErrorCode::UnexpectedFrame, &msg, 0, true);
                Flow::Stop
            }
            (Phase::Closing | Phase::Migrating, _) => Flow::Stop,
        }
    }
}
