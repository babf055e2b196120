//! Encoding typed frames to length-prefixed bytes.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use crate::error::Error;
use crate::frame::{Body, Frame};
use crate::framing;
use crate::generated as fb;
use crate::limits::{Limits, MAX_FRAME_LEN_DEFAULT};

/// Builder capacity at creation; grows on demand up to the frame bound.
const BUILDER_CAPACITY_INITIAL: usize = 256;

/// Encodes frames, reusing one FlatBuffers builder so that steady-state
/// encoding allocates nothing.
pub struct Encoder {
    builder: FlatBufferBuilder<'static>,
    max_frame_len: u32,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("max_frame_len", &self.max_frame_len)
            .finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new(&Limits::default())
    }
}

impl Encoder {
    /// An encoder that refuses to produce frames larger than the peer's
    /// `max_frame_len`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            builder: FlatBufferBuilder::with_capacity(BUILDER_CAPACITY_INITIAL),
            max_frame_len: limits.max_frame_len,
        }
    }

    /// The bound this encoder enforces.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Appends `frame`, length prefix included, to `out`. Returns the
    /// number of bytes appended. On error `out` is unchanged.
    pub fn encode(&mut self, frame: &Frame<'_>, out: &mut Vec<u8>) -> Result<usize, Error> {
        self.builder.reset();
        let (body_type, body) = build_body(&mut self.builder, frame);
        let root = fb::Frame::create(
            &mut self.builder,
            &fb::FrameArgs {
                body_type,
                body: Some(body),
            },
        );
        self.builder.finish_minimal(root);
        let data = self.builder.finished_data();
        let len = u32::try_from(data.len())
            .ok()
            .filter(|&len| len <= self.max_frame_len)
            .ok_or(Error::EncodeTooLarge {
                len: data.len(),
                max: self.max_frame_len,
            })?;
        out.reserve(framing::LEN_PREFIX_BYTES + data.len());
        framing::put_prefix(out, len);
        out.extend_from_slice(data);
        Ok(framing::LEN_PREFIX_BYTES + data.len())
    }

    /// Convenience for tests and tools: one frame in a fresh `Vec`.
    pub fn encode_to_vec(&mut self, frame: &Frame<'_>) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.encode(frame, &mut out)?;
        Ok(out)
    }
}

impl Encoder {
    /// An encoder with the default bound ([`MAX_FRAME_LEN_DEFAULT`]).
    pub fn with_default_limits() -> Self {
        Self::new(&Limits::with_max_frame_len(MAX_FRAME_LEN_DEFAULT))
    }
}

type Built = (fb::Body, WIPOffset<UnionWIPOffset>);

fn build_body(b: &mut FlatBufferBuilder<'static>, frame: &Frame<'_>) -> Built {
    match *frame {
        Frame::Hello(h) => {
            let client_name = Some(b.create_string(h.client_name));
            let t = fb::Hello::create(
                b,
                &fb::HelloArgs {
                    protocol_version: h.protocol_version,
                    capabilities: h.capabilities,
                    client_name,
                },
            );
            (fb::Body::Hello, t.as_union_value())
        }
        Frame::HelloOk(h) => {
            let server_name = Some(b.create_string(h.server_name));
            let t = fb::HelloOk::create(
                b,
                &fb::HelloOkArgs {
                    protocol_version: h.protocol_version,
                    capabilities: h.capabilities,
                    server_name,
                    max_frame_len: h.max_frame_len,
                },
            );
            (fb::Body::HelloOk, t.as_union_value())
        }
        Frame::RequestPin { phone } => {
            let phone = Some(b.create_string(phone));
            let t = fb::RequestPin::create(b, &fb::RequestPinArgs { phone });
            (fb::Body::RequestPin, t.as_union_value())
        }
        Frame::PinSent {
            phone,
            pin_len,
            expires_in_s,
        } => {
            let phone = Some(b.create_string(phone));
            let t = fb::PinSent::create(
                b,
                &fb::PinSentArgs {
                    phone,
                    pin_len,
                    expires_in_s,
                },
            );
            (fb::Body::PinSent, t.as_union_value())
        }
        Frame::VerifyPin { phone, pin } => {
            let phone = Some(b.create_string(phone));
            let pin = Some(b.create_string(pin));
            let t = fb::VerifyPin::create(b, &fb::VerifyPinArgs { phone, pin });
            (fb::Body::VerifyPin, t.as_union_value())
        }
        Frame::Registered(r) => {
            let device_key = Some(b.create_vector(&r.device_key.0));
            let t = fb::Registered::create(
                b,
                &fb::RegisteredArgs {
                    user_id: r.user_id,
                    device_key,
                    device_generation: r.device_generation,
                },
            );
            (fb::Body::Registered, t.as_union_value())
        }
        Frame::Login {
            user_id,
            device_key,
        } => {
            let device_key = Some(b.create_vector(&device_key.0));
            let t = fb::Login::create(
                b,
                &fb::LoginArgs {
                    user_id,
                    device_key,
                },
            );
            (fb::Body::Login, t.as_union_value())
        }
        Frame::LoginOk {
            user_id,
            queued,
            server_time_ms,
        } => {
            let t = fb::LoginOk::create(
                b,
                &fb::LoginOkArgs {
                    user_id,
                    queued,
                    server_time_ms,
                },
            );
            (fb::Body::LoginOk, t.as_union_value())
        }
        Frame::LoginError(e) => {
            let message = Some(b.create_string(e.message));
            let t = fb::LoginError::create(
                b,
                &fb::LoginErrorArgs {
                    code: fb::ErrorCode(e.code.as_u16()),
                    message,
                    retry_after_ms: e.retry_after_ms,
                },
            );
            (fb::Body::LoginError, t.as_union_value())
        }
        Frame::Send {
            client_msg_id,
            to,
            body,
        } => {
            let (body_type, body) = build_message_body(b, &body);
            let t = fb::Send::create(
                b,
                &fb::SendArgs {
                    client_msg_id,
                    to,
                    body_type,
                    body: Some(body),
                },
            );
            (fb::Body::Send, t.as_union_value())
        }
        Frame::ServerAck {
            client_msg_id,
            server_msg_id,
            timestamp_ms,
        } => {
            let t = fb::ServerAck::create(
                b,
                &fb::ServerAckArgs {
                    client_msg_id,
                    server_msg_id,
                    timestamp_ms,
                },
            );
            (fb::Body::ServerAck, t.as_union_value())
        }
        Frame::Deliver {
            id,
            from,
            client_msg_id,
            sent_at_ms,
            body,
        } => {
            let (body_type, body) = build_message_body(b, &body);
            let t = fb::Deliver::create(
                b,
                &fb::DeliverArgs {
                    id,
                    from,
                    client_msg_id,
                    sent_at_ms,
                    body_type,
                    body: Some(body),
                },
            );
            (fb::Body::Deliver, t.as_union_value())
        }
        Frame::DeliverAck { id } => {
            let t = fb::DeliverAck::create(b, &fb::DeliverAckArgs { id });
            (fb::Body::DeliverAck, t.as_union_value())
        }
        Frame::MarkRead {
            client_msg_id,
            to,
            read_client_msg_id,
        } => {
            let t = fb::MarkRead::create(
                b,
                &fb::MarkReadArgs {
                    client_msg_id,
                    to,
                    read_client_msg_id,
                },
            );
            (fb::Body::MarkRead, t.as_union_value())
        }
        Frame::Receipt {
            id,
            kind,
            peer,
            client_msg_id,
            at_ms,
        } => {
            let t = fb::Receipt::create(
                b,
                &fb::ReceiptArgs {
                    id,
                    kind: fb::ReceiptKind(kind.as_u8()),
                    peer,
                    client_msg_id,
                    at_ms,
                },
            );
            (fb::Body::Receipt, t.as_union_value())
        }
        Frame::Ping { nonce } => {
            let t = fb::Ping::create(b, &fb::PingArgs { nonce });
            (fb::Body::Ping, t.as_union_value())
        }
        Frame::Pong { nonce } => {
            let t = fb::Pong::create(b, &fb::PongArgs { nonce });
            (fb::Body::Pong, t.as_union_value())
        }
        Frame::Error(e) => {
            let message = Some(b.create_string(e.message));
            let t = fb::Error::create(
                b,
                &fb::ErrorArgs {
                    code: fb::ErrorCode(e.code.as_u16()),
                    message,
                    client_msg_id: e.client_msg_id,
                    fatal: e.fatal,
                },
            );
            (fb::Body::Error, t.as_union_value())
        }
        Frame::Kicked(k) => {
            let message = Some(b.create_string(k.message));
            let t = fb::Kicked::create(
                b,
                &fb::KickedArgs {
                    reason: fb::KickReason(k.reason.as_u8()),
                    message,
                },
            );
            (fb::Body::Kicked, t.as_union_value())
        }
    }
}

fn build_message_body(
    b: &mut FlatBufferBuilder<'static>,
    body: &Body<'_>,
) -> (fb::MessageBody, WIPOffset<UnionWIPOffset>) {
    match *body {
        Body::Text(text) => {
            let text = Some(b.create_string(text));
            let t = fb::Text::create(b, &fb::TextArgs { text });
            (fb::MessageBody::Text, t.as_union_value())
        }
        Body::Media(m) => {
            let url = Some(b.create_string(m.url));
            let mime = Some(b.create_string(m.mime));
            let sha256 = Some(b.create_vector(&m.sha256));
            let thumbnail_b64 = Some(b.create_string(m.thumbnail_b64));
            let caption = Some(b.create_string(m.caption));
            let t = fb::Media::create(
                b,
                &fb::MediaArgs {
                    url,
                    mime,
                    size: m.size,
                    sha256,
                    thumbnail_b64,
                    caption,
                },
            );
            (fb::MessageBody::Media, t.as_union_value())
        }
    }
}
