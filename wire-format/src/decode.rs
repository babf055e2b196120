//! Verified decoding: bytes from the network to a typed [`Frame`].

use crate::error::{Error, MalformedReason};
use crate::frame::{
    Body, DeviceKey, ErrorCode, ErrorFrame, Frame, Hello, HelloOk, KickReason, Kicked, LoginError,
    Media, ReceiptKind, Registered, DEVICE_KEY_LEN, SHA256_LEN,
};
use crate::generated as fb;
use crate::limits::Limits;

/// Decodes one frame payload (length prefix already removed by
/// [`crate::framing::split`]).
///
/// The FlatBuffers verifier runs first with [`Limits`] (depth, table count,
/// apparent size); only then are fields read. Required fields that are
/// absent and fixed-size byte fields of the wrong length are errors, so the
/// returned frame needs no further structural checks.
pub fn decode<'a>(payload: &'a [u8], limits: &Limits) -> Result<Frame<'a>, Error> {
    if payload.len() > limits.max_frame_len as usize {
        return Err(Error::FrameTooLarge {
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            max: limits.max_frame_len,
        });
    }
    let opts = limits.verifier_options();
    let root = fb::root_as_frame_with_opts(&opts, payload)
        .map_err(|e| Error::Malformed(MalformedReason::Verifier(e)))?;
    let tag = root.body_type();
    let frame = match tag {
        fb::Body::Hello => {
            let t = req(root.body_as_hello(), "Frame.body")?;
            Frame::Hello(Hello {
                protocol_version: t.protocol_version(),
                capabilities: t.capabilities(),
                client_name: t.client_name().unwrap_or(""),
            })
        }
        fb::Body::HelloOk => {
            let t = req(root.body_as_hello_ok(), "Frame.body")?;
            Frame::HelloOk(HelloOk {
                protocol_version: t.protocol_version(),
                capabilities: t.capabilities(),
                server_name: t.server_name().unwrap_or(""),
                max_frame_len: t.max_frame_len(),
            })
        }
        fb::Body::RequestPin => {
            let t = req(root.body_as_request_pin(), "Frame.body")?;
            Frame::RequestPin {
                phone: req(t.phone(), "RequestPin.phone")?,
            }
        }
        fb::Body::PinSent => {
            let t = req(root.body_as_pin_sent(), "Frame.body")?;
            Frame::PinSent {
                phone: req(t.phone(), "PinSent.phone")?,
                pin_len: t.pin_len(),
                expires_in_s: t.expires_in_s(),
            }
        }
        fb::Body::VerifyPin => {
            let t = req(root.body_as_verify_pin(), "Frame.body")?;
            Frame::VerifyPin {
                phone: req(t.phone(), "VerifyPin.phone")?,
                pin: req(t.pin(), "VerifyPin.pin")?,
            }
        }
        fb::Body::Registered => {
            let t = req(root.body_as_registered(), "Frame.body")?;
            Frame::Registered(Registered {
                user_id: t.user_id(),
                device_key: DeviceKey(fixed::<DEVICE_KEY_LEN>(
                    t.device_key().map(|v| v.bytes()),
                    "Registered.device_key",
                )?),
                device_generation: t.device_generation(),
            })
        }
        fb::Body::Login => {
            let t = req(root.body_as_login(), "Frame.body")?;
            Frame::Login {
                user_id: t.user_id(),
                device_key: DeviceKey(fixed::<DEVICE_KEY_LEN>(
                    t.device_key().map(|v| v.bytes()),
                    "Login.device_key",
                )?),
            }
        }
        fb::Body::LoginOk => {
            let t = req(root.body_as_login_ok(), "Frame.body")?;
            Frame::LoginOk {
                user_id: t.user_id(),
                queued: t.queued(),
                server_time_ms: t.server_time_ms(),
            }
        }
        fb::Body::LoginError => {
            let t = req(root.body_as_login_error(), "Frame.body")?;
            Frame::LoginError(LoginError {
                code: ErrorCode::from_u16(t.code().0),
                message: t.message().unwrap_or(""),
                retry_after_ms: t.retry_after_ms(),
            })
        }
        fb::Body::Send => {
            let t = req(root.body_as_send(), "Frame.body")?;
            Frame::Send {
                client_msg_id: t.client_msg_id(),
                to: t.to(),
                body: message_body(
                    t.body_type(),
                    t.body_as_text(),
                    t.body_as_media(),
                    "Send.body",
                )?,
            }
        }
        fb::Body::ServerAck => {
            let t = req(root.body_as_server_ack(), "Frame.body")?;
            Frame::ServerAck {
                client_msg_id: t.client_msg_id(),
                server_msg_id: t.server_msg_id(),
                timestamp_ms: t.timestamp_ms(),
            }
        }
        fb::Body::Deliver => {
            let t = req(root.body_as_deliver(), "Frame.body")?;
            Frame::Deliver {
                id: t.id(),
                from: t.from(),
                client_msg_id: t.client_msg_id(),
                sent_at_ms: t.sent_at_ms(),
                body: message_body(
                    t.body_type(),
                    t.body_as_text(),
                    t.body_as_media(),
                    "Deliver.body",
                )?,
            }
        }
        fb::Body::DeliverAck => {
            let t = req(root.body_as_deliver_ack(), "Frame.body")?;
            Frame::DeliverAck { id: t.id() }
        }
        fb::Body::MarkRead => {
            let t = req(root.body_as_mark_read(), "Frame.body")?;
            Frame::MarkRead {
                client_msg_id: t.client_msg_id(),
                to: t.to(),
                read_client_msg_id: t.read_client_msg_id(),
            }
        }
        fb::Body::Receipt => {
            let t = req(root.body_as_receipt(), "Frame.body")?;
            Frame::Receipt {
                id: t.id(),
                kind: ReceiptKind::from_u8(t.kind().0),
                peer: t.peer(),
                client_msg_id: t.client_msg_id(),
                at_ms: t.at_ms(),
            }
        }
        fb::Body::Ping => {
            let t = req(root.body_as_ping(), "Frame.body")?;
            Frame::Ping { nonce: t.nonce() }
        }
        fb::Body::Pong => {
            let t = req(root.body_as_pong(), "Frame.body")?;
            Frame::Pong { nonce: t.nonce() }
        }
        fb::Body::Error => {
            let t = req(root.body_as_error(), "Frame.body")?;
            Frame::Error(ErrorFrame {
                code: ErrorCode::from_u16(t.code().0),
                message: t.message().unwrap_or(""),
                client_msg_id: t.client_msg_id(),
                fatal: t.fatal(),
            })
        }
        fb::Body::Kicked => {
            let t = req(root.body_as_kicked(), "Frame.body")?;
            Frame::Kicked(Kicked {
                reason: KickReason::from_u8(t.reason().0),
                message: t.message().unwrap_or(""),
            })
        }
        fb::Body::NONE => return Err(MalformedReason::MissingField("Frame.body").into()),
        other => return Err(Error::UnknownFrameType(other.0)),
    };
    Ok(frame)
}

fn req<T>(value: Option<T>, field: &'static str) -> Result<T, Error> {
    value.ok_or(Error::Malformed(MalformedReason::MissingField(field)))
}

fn fixed<const N: usize>(bytes: Option<&[u8]>, field: &'static str) -> Result<[u8; N], Error> {
    let bytes = req(bytes, field)?;
    <[u8; N]>::try_from(bytes).map_err(|_| {
        Error::Malformed(MalformedReason::BadFieldLength {
            field,
            expected: N,
            got: bytes.len(),
        })
    })
}

fn message_body<'a>(
    tag: fb::MessageBody,
    text: Option<fb::Text<'a>>,
    media: Option<fb::Media<'a>>,
    field: &'static str,
) -> Result<Body<'a>, Error> {
    match tag {
        fb::MessageBody::Text => {
            let t = req(text, field)?;
            Ok(Body::Text(req(t.text(), "Text.text")?))
        }
        fb::MessageBody::Media => {
            let m = req(media, field)?;
            Ok(Body::Media(Media {
                url: req(m.url(), "Media.url")?,
                mime: req(m.mime(), "Media.mime")?,
                size: m.size(),
                sha256: fixed::<SHA256_LEN>(m.sha256().map(|v| v.bytes()), "Media.sha256")?,
                thumbnail_b64: m.thumbnail_b64().unwrap_or(""),
                caption: m.caption().unwrap_or(""),
            }))
        }
        fb::MessageBody::NONE => Err(MalformedReason::MissingField(field).into()),
        other => Err(MalformedReason::UnknownUnionType {
            union: "MessageBody",
            tag: other.0,
        }
        .into()),
    }
}
