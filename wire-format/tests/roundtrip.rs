//! Every frame kind survives encode -> framing -> decode unchanged, with
//! edge values (empty strings, maximum integers, unknown enum values), and
//! the Rust enum mirrors agree with the generated schema enums.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use flatbuffers::FlatBufferBuilder;
use tern_wire::{
    decode, framing, raw, Body, DeviceKey, Encoder, ErrorCode, ErrorFrame, Frame, FrameKind, Hello,
    HelloOk, KickReason, Kicked, Limits, LoginError, Media, ReceiptKind, Registered,
    DEVICE_KEY_LEN, PROTOCOL_VERSION, SHA256_LEN,
};

/// Index of a kind in `Body` union order. Exhaustive on purpose: a new
/// `FrameKind` does not compile until this test covers it.
fn kind_index(kind: FrameKind) -> usize {
    match kind {
        FrameKind::Hello => 0,
        FrameKind::HelloOk => 1,
        FrameKind::RequestPin => 2,
        FrameKind::PinSent => 3,
        FrameKind::VerifyPin => 4,
        FrameKind::Registered => 5,
        FrameKind::Login => 6,
        FrameKind::LoginOk => 7,
        FrameKind::LoginError => 8,
        FrameKind::Send => 9,
        FrameKind::ServerAck => 10,
        FrameKind::Deliver => 11,
        FrameKind::DeliverAck => 12,
        FrameKind::MarkRead => 13,
        FrameKind::Receipt => 14,
        FrameKind::Ping => 15,
        FrameKind::Pong => 16,
        FrameKind::Error => 17,
        FrameKind::Kicked => 18,
    }
}

const KIND_COUNT: usize = 19;

fn key(seed: u8) -> DeviceKey {
    DeviceKey(core::array::from_fn(|i| seed.wrapping_add(i as u8)))
}

fn digest(seed: u8) -> [u8; SHA256_LEN] {
    core::array::from_fn(|i| seed ^ (i as u8).wrapping_mul(31))
}

fn media<'a>(url: &'a str, caption: &'a str, size: u64, thumb: &'a str) -> Media<'a> {
    Media {
        url,
        mime: "image/jpeg",
        size,
        sha256: digest(0x5a),
        thumbnail_b64: thumb,
        caption,
    }
}

const EMPTY_MEDIA: Media<'static> = Media {
    url: "",
    mime: "",
    size: 0,
    sha256: [0; SHA256_LEN],
    thumbnail_b64: "",
    caption: "",
};

/// Typical values for every frame kind.
fn typical_frames() -> Vec<Frame<'static>> {
    vec![
        Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            capabilities: 0b1010,
            client_name: "tern-chat/0.1",
        }),
        Frame::HelloOk(HelloOk {
            protocol_version: PROTOCOL_VERSION,
            capabilities: 3,
            server_name: "tern/0.1",
            max_frame_len: 65_536,
        }),
        Frame::RequestPin {
            phone: "+15551234567",
        },
        Frame::PinSent {
            phone: "+15551234567",
            pin_len: 6,
            expires_in_s: 300,
        },
        Frame::VerifyPin {
            phone: "+15551234567",
            pin: "123456",
        },
        Frame::Registered(Registered {
            user_id: 42,
            device_key: key(7),
            device_generation: 2,
        }),
        Frame::Login {
            user_id: 42,
            device_key: key(9),
        },
        Frame::LoginOk {
            user_id: 42,
            queued: 17,
            server_time_ms: 1_700_000_000_000,
        },
        Frame::LoginError(LoginError {
            code: ErrorCode::LoginRateLimited,
            message: "slow down",
            retry_after_ms: 1500,
        }),
        Frame::Send {
            client_msg_id: 1,
            to: 43,
            body: Body::Text("hello, world"),
        },
        Frame::Send {
            client_msg_id: 2,
            to: 43,
            body: Body::Media(media(
                "https://media.example/abc",
                "look",
                123_456,
                "iVBORw0KGgo=",
            )),
        },
        Frame::ServerAck {
            client_msg_id: 1,
            server_msg_id: 1001,
            timestamp_ms: 1_700_000_000_001,
        },
        Frame::Deliver {
            id: 5,
            from: 42,
            client_msg_id: 1,
            sent_at_ms: 1_700_000_000_002,
            body: Body::Text("hello, world"),
        },
        Frame::Deliver {
            id: 6,
            from: 42,
            client_msg_id: 2,
            sent_at_ms: 1_700_000_000_003,
            body: Body::Media(media("https://media.example/def", "", 1, "")),
        },
        Frame::DeliverAck { id: 5 },
        Frame::MarkRead {
            client_msg_id: 3,
            to: 42,
            read_client_msg_id: 1,
        },
        Frame::Receipt {
            id: 7,
            kind: ReceiptKind::Delivered,
            peer: 43,
            client_msg_id: 1,
            at_ms: 1_700_000_000_004,
        },
        Frame::Receipt {
            id: 8,
            kind: ReceiptKind::Read,
            peer: 43,
            client_msg_id: 1,
            at_ms: 1_700_000_000_005,
        },
        Frame::Ping { nonce: 99 },
        Frame::Pong { nonce: 99 },
        Frame::Error(ErrorFrame {
            code: ErrorCode::QueueFull,
            message: "inbox full",
            client_msg_id: 1,
            fatal: false,
        }),
        Frame::Kicked(Kicked {
            reason: KickReason::DeviceReplaced,
            message: "registered on another device",
        }),
    ]
}

/// Edge values: empty strings, zeros and maximum integers, unknown enum
/// values from a newer peer, non-ASCII and NUL inside strings.
fn edge_frames() -> Vec<Frame<'static>> {
    vec![
        Frame::Hello(Hello {
            protocol_version: 0,
            capabilities: 0,
            client_name: "",
        }),
        Frame::Hello(Hello {
            protocol_version: u16::MAX,
            capabilities: u64::MAX,
            client_name: "клиент \u{1F426} \0 nul",
        }),
        Frame::HelloOk(HelloOk {
            protocol_version: u16::MAX,
            capabilities: u64::MAX,
            server_name: "",
            max_frame_len: u32::MAX,
        }),
        Frame::HelloOk(HelloOk {
            protocol_version: 0,
            capabilities: 0,
            server_name: "s",
            max_frame_len: 0,
        }),
        Frame::RequestPin { phone: "" },
        Frame::PinSent {
            phone: "",
            pin_len: u8::MAX,
            expires_in_s: u32::MAX,
        },
        Frame::PinSent {
            phone: "+1",
            pin_len: 0,
            expires_in_s: 0,
        },
        Frame::VerifyPin { phone: "", pin: "" },
        Frame::Registered(Registered {
            user_id: u64::MAX,
            device_key: DeviceKey([0xff; DEVICE_KEY_LEN]),
            device_generation: u32::MAX,
        }),
        Frame::Registered(Registered {
            user_id: 0,
            device_key: DeviceKey([0; DEVICE_KEY_LEN]),
            device_generation: 0,
        }),
        Frame::Login {
            user_id: u64::MAX,
            device_key: DeviceKey([0; DEVICE_KEY_LEN]),
        },
        Frame::Login {
            user_id: 0,
            device_key: DeviceKey([0xff; DEVICE_KEY_LEN]),
        },
        Frame::LoginOk {
            user_id: u64::MAX,
            queued: u32::MAX,
            server_time_ms: u64::MAX,
        },
        Frame::LoginOk {
            user_id: 0,
            queued: 0,
            server_time_ms: 0,
        },
        Frame::LoginError(LoginError {
            code: ErrorCode::Unknown(999),
            message: "",
            retry_after_ms: u32::MAX,
        }),
        Frame::LoginError(LoginError {
            code: ErrorCode::Unknown(0),
            message: "",
            retry_after_ms: 0,
        }),
        Frame::Send {
            client_msg_id: u64::MAX,
            to: u64::MAX,
            body: Body::Text(""),
        },
        Frame::Send {
            client_msg_id: 0,
            to: 0,
            body: Body::Media(EMPTY_MEDIA),
        },
        Frame::Send {
            client_msg_id: u64::MAX,
            to: u64::MAX,
            body: Body::Media(Media {
                url: "u",
                mime: "m",
                size: u64::MAX,
                sha256: [0xff; SHA256_LEN],
                thumbnail_b64: "t",
                caption: "c\u{e9}",
            }),
        },
        Frame::ServerAck {
            client_msg_id: u64::MAX,
            server_msg_id: u64::MAX,
            timestamp_ms: u64::MAX,
        },
        Frame::ServerAck {
            client_msg_id: 0,
            server_msg_id: 0,
            timestamp_ms: 0,
        },
        Frame::Deliver {
            id: u64::MAX,
            from: u64::MAX,
            client_msg_id: u64::MAX,
            sent_at_ms: u64::MAX,
            body: Body::Text(""),
        },
        Frame::Deliver {
            id: 0,
            from: 0,
            client_msg_id: 0,
            sent_at_ms: 0,
            body: Body::Media(EMPTY_MEDIA),
        },
        Frame::DeliverAck { id: u64::MAX },
        Frame::DeliverAck { id: 0 },
        Frame::MarkRead {
            client_msg_id: u64::MAX,
            to: u64::MAX,
            read_client_msg_id: u64::MAX,
        },
        Frame::MarkRead {
            client_msg_id: 0,
            to: 0,
            read_client_msg_id: 0,
        },
        Frame::Receipt {
            id: u64::MAX,
            kind: ReceiptKind::Other(7),
            peer: u64::MAX,
            client_msg_id: u64::MAX,
            at_ms: u64::MAX,
        },
        Frame::Receipt {
            id: 0,
            kind: ReceiptKind::Other(0),
            peer: 0,
            client_msg_id: 0,
            at_ms: 0,
        },
        Frame::Receipt {
            id: 1,
            kind: ReceiptKind::Other(u8::MAX),
            peer: 1,
            client_msg_id: 1,
            at_ms: 1,
        },
        Frame::Ping { nonce: u64::MAX },
        Frame::Ping { nonce: 0 },
        Frame::Pong { nonce: u64::MAX },
        Frame::Pong { nonce: 0 },
        Frame::Error(ErrorFrame {
            code: ErrorCode::Unknown(999),
            message: "",
            client_msg_id: u64::MAX,
            fatal: true,
        }),
        Frame::Error(ErrorFrame {
            code: ErrorCode::Unknown(u16::MAX),
            message: "\u{10FFFF}",
            client_msg_id: 0,
            fatal: false,
        }),
        Frame::Kicked(Kicked {
            reason: KickReason::Other(9),
            message: "",
        }),
        Frame::Kicked(Kicked {
            reason: KickReason::Other(0),
            message: "",
        }),
        Frame::Kicked(Kicked {
            reason: KickReason::Other(u8::MAX),
            message: "bye",
        }),
    ]
}

/// Encodes `frame`, checks the prefix and framing, decodes, and returns the
/// whole encoding (prefix included).
fn assert_round_trips(encoder: &mut Encoder, frame: &Frame<'_>) -> Vec<u8> {
    let limits = Limits::default();
    let mut out = b"previous".to_vec();
    let written = encoder.encode(frame, &mut out).unwrap();
    assert_eq!(&out[..8], b"previous", "encode appends, never overwrites");
    let encoded = out.split_off(8);
    assert_eq!(written, encoded.len());

    let prefix = u32::from_le_bytes(encoded[..4].try_into().unwrap());
    assert_eq!(prefix as usize, encoded.len() - framing::LEN_PREFIX_BYTES);
    assert_eq!(
        framing::check(&encoded, limits.max_frame_len),
        Ok(framing::Check::Complete {
            frame_len: encoded.len()
        })
    );
    let (payload, consumed) = framing::split(&encoded, limits.max_frame_len)
        .unwrap()
        .unwrap();
    assert_eq!(consumed, encoded.len());

    let decoded = decode(payload, &limits).unwrap();
    assert_eq!(&decoded, frame, "decode(encode(f)) == f");
    assert_eq!(decoded.kind(), frame.kind());

    // Encoding is deterministic, so the decoded frame encodes to the same
    // bytes.
    assert_eq!(encoder.encode_to_vec(&decoded).unwrap(), encoded);
    encoded
}

#[test]
fn every_frame_kind_round_trips_with_typical_values() {
    let mut encoder = Encoder::default();
    let mut seen = [false; KIND_COUNT];
    let mut text_seen = [false; 2];
    let mut media_seen = [false; 2];
    for frame in typical_frames() {
        assert_round_trips(&mut encoder, &frame);
        seen[kind_index(frame.kind())] = true;
        match frame {
            Frame::Send { body, .. } => match body {
                Body::Text(_) => text_seen[0] = true,
                Body::Media(_) => media_seen[0] = true,
            },
            Frame::Deliver { body, .. } => match body {
                Body::Text(_) => text_seen[1] = true,
                Body::Media(_) => media_seen[1] = true,
            },
            _ => {}
        }
    }
    assert!(seen.iter().all(|&s| s), "kinds not covered: {seen:?}");
    assert_eq!(text_seen, [true, true], "Send and Deliver with Body::Text");
    assert_eq!(
        media_seen,
        [true, true],
        "Send and Deliver with Body::Media"
    );
}

#[test]
fn every_frame_kind_round_trips_with_edge_values() {
    let mut encoder = Encoder::default();
    let mut seen = [false; KIND_COUNT];
    for frame in edge_frames() {
        assert_round_trips(&mut encoder, &frame);
        seen[kind_index(frame.kind())] = true;
    }
    assert!(seen.iter().all(|&s| s), "kinds not covered: {seen:?}");
}

#[test]
fn unknown_enum_values_survive() {
    let mut encoder = Encoder::default();
    let limits = Limits::default();
    let cases = [
        (
            Frame::Error(ErrorFrame {
                code: ErrorCode::Unknown(999),
                message: "from the future",
                client_msg_id: 5,
                fatal: false,
            }),
            "Unknown(999)",
        ),
        (
            Frame::Kicked(Kicked {
                reason: KickReason::Other(9),
                message: "",
            }),
            "Other(9)",
        ),
        (
            Frame::Receipt {
                id: 1,
                kind: ReceiptKind::Other(7),
                peer: 2,
                client_msg_id: 3,
                at_ms: 4,
            },
            "Other(7)",
        ),
    ];
    for (frame, shown) in cases {
        let bytes = encoder.encode_to_vec(&frame).unwrap();
        let decoded = decode(&bytes[4..], &limits).unwrap();
        let value = match decoded {
            Frame::Error(e) => format!("{:?}", e.code),
            Frame::Kicked(k) => format!("{:?}", k.reason),
            Frame::Receipt { kind, .. } => format!("{kind:?}"),
            other => panic!("wrong kind {other:?}"),
        };
        assert_eq!(value, shown);
        assert_eq!(decoded, frame);
    }
    // The number itself is on the wire, readable with the raw API.
    let bytes = encoder
        .encode_to_vec(&Frame::Error(ErrorFrame {
            code: ErrorCode::Unknown(999),
            message: "",
            client_msg_id: 0,
            fatal: false,
        }))
        .unwrap();
    let root = raw::root_as_frame(&bytes[4..]).unwrap();
    assert_eq!(root.body_as_error().unwrap().code(), raw::ErrorCode(999));
    assert_eq!(ErrorCode::Unknown(999).to_string(), "Unknown(999)");
}

#[test]
fn many_frames_in_one_buffer_split_in_order() {
    let mut encoder = Encoder::default();
    let frames: Vec<Frame<'static>> = typical_frames().into_iter().chain(edge_frames()).collect();
    let mut stream = Vec::new();
    let mut total = 0;
    for frame in &frames {
        total += encoder.encode(frame, &mut stream).unwrap();
    }
    assert_eq!(total, stream.len());
    let limits = Limits::default();
    let mut rest = &stream[..];
    let mut decoded = Vec::new();
    while let Some((payload, consumed)) = framing::split(rest, limits.max_frame_len).unwrap() {
        decoded.push(decode(payload, &limits).unwrap());
        rest = &rest[consumed..];
    }
    assert!(rest.is_empty());
    assert_eq!(decoded, frames);
}

#[test]
fn absent_optional_strings_decode_as_empty() {
    // A peer that leaves optional strings out (not even empty) is fine.
    let mut b = FlatBufferBuilder::new();
    let hello = raw::Hello::create(
        &mut b,
        &raw::HelloArgs {
            protocol_version: 1,
            capabilities: 2,
            client_name: None,
        },
    );
    let root = raw::Frame::create(
        &mut b,
        &raw::FrameArgs {
            body_type: raw::Body::Hello,
            body: Some(hello.as_union_value()),
        },
    );
    b.finish_minimal(root);
    let decoded = decode(b.finished_data(), &Limits::default()).unwrap();
    assert_eq!(
        decoded,
        Frame::Hello(Hello {
            protocol_version: 1,
            capabilities: 2,
            client_name: "",
        })
    );
}

fn debug_name<T: std::fmt::Debug>(value: T) -> String {
    format!("{value:?}")
}

#[test]
fn error_code_mirror_matches_schema() {
    // Schema -> Rust: every generated value maps to the variant of the same
    // name. `None` (0) is "no error" in the schema and has no variant.
    for &value in raw::ErrorCode::ENUM_VALUES {
        let name = value.variant_name().unwrap();
        let typed = ErrorCode::from_u16(value.0);
        if name == "None" {
            assert_eq!(value.0, 0);
            assert_eq!(typed, ErrorCode::Unknown(0));
            continue;
        }
        assert_eq!(debug_name(typed), name, "schema value {}", value.0);
        assert_eq!(typed.as_u16(), value.0, "{name}");
    }
    // Rust -> schema: every variant has the schema's number for its name.
    for code in ErrorCode::ALL {
        let generated = raw::ErrorCode(code.as_u16());
        assert_eq!(
            generated.variant_name(),
            Some(debug_name(code).as_str()),
            "{code:?} is {} in Rust",
            code.as_u16()
        );
    }
    assert_eq!(ErrorCode::ALL.len() + 1, raw::ErrorCode::ENUM_VALUES.len());
    // Numbers between the named ones are unknown in both.
    for n in [6u16, 9, 16, 53, 999, u16::MAX] {
        assert_eq!(raw::ErrorCode(n).variant_name(), None);
        assert_eq!(ErrorCode::from_u16(n), ErrorCode::Unknown(n));
    }
}

/// Decodes a `Kicked` frame built with the raw API and a raw reason.
fn decode_raw_kick(reason: raw::KickReason) -> KickReason {
    let mut b = FlatBufferBuilder::new();
    let message = b.create_string("m");
    let kicked = raw::Kicked::create(
        &mut b,
        &raw::KickedArgs {
            reason,
            message: Some(message),
        },
    );
    let root = raw::Frame::create(
        &mut b,
        &raw::FrameArgs {
            body_type: raw::Body::Kicked,
            body: Some(kicked.as_union_value()),
        },
    );
    b.finish_minimal(root);
    match decode(b.finished_data(), &Limits::default()).unwrap() {
        Frame::Kicked(k) => k.reason,
        other => panic!("decoded {other:?}"),
    }
}

#[test]
fn kick_reason_mirror_matches_schema() {
    for &value in raw::KickReason::ENUM_VALUES {
        let name = value.variant_name().unwrap();
        let typed = decode_raw_kick(value);
        if name == "Other" {
            assert_eq!(typed, KickReason::Other(value.0));
        } else {
            assert_eq!(debug_name(typed), name, "schema value {}", value.0);
        }
    }
    let mut encoder = Encoder::default();
    let named = [
        KickReason::DeviceReplaced,
        KickReason::AdminKick,
        KickReason::ServerShutdown,
    ];
    for reason in named {
        let bytes = encoder
            .encode_to_vec(&Frame::Kicked(Kicked {
                reason,
                message: "",
            }))
            .unwrap();
        let root = raw::root_as_frame(&bytes[4..]).unwrap();
        let generated = root.body_as_kicked().unwrap().reason();
        assert_eq!(
            generated.variant_name(),
            Some(debug_name(reason).as_str()),
            "{reason:?} encodes as {}",
            generated.0
        );
    }
    // The schema's `Other` plus the named reasons, nothing more.
    assert_eq!(named.len() + 1, raw::KickReason::ENUM_VALUES.len());
    assert_eq!(decode_raw_kick(raw::KickReason(4)), KickReason::Other(4));
}

/// Decodes a `Receipt` frame built with the raw API and a raw kind.
fn decode_raw_receipt(kind: raw::ReceiptKind) -> ReceiptKind {
    let mut b = FlatBufferBuilder::new();
    let receipt = raw::Receipt::create(
        &mut b,
        &raw::ReceiptArgs {
            id: 1,
            kind,
            peer: 2,
            client_msg_id: 3,
            at_ms: 4,
        },
    );
    let root = raw::Frame::create(
        &mut b,
        &raw::FrameArgs {
            body_type: raw::Body::Receipt,
            body: Some(receipt.as_union_value()),
        },
    );
    b.finish_minimal(root);
    match decode(b.finished_data(), &Limits::default()).unwrap() {
        Frame::Receipt { kind, .. } => kind,
        other => panic!("decoded {other:?}"),
    }
}

#[test]
fn receipt_kind_mirror_matches_schema() {
    for &value in raw::ReceiptKind::ENUM_VALUES {
        let name = value.variant_name().unwrap();
        let typed = decode_raw_receipt(value);
        assert_eq!(debug_name(typed), name, "schema value {}", value.0);
    }
    let mut encoder = Encoder::default();
    let named = [ReceiptKind::Delivered, ReceiptKind::Read];
    for kind in named {
        let bytes = encoder
            .encode_to_vec(&Frame::Receipt {
                id: 1,
                kind,
                peer: 2,
                client_msg_id: 3,
                at_ms: 4,
            })
            .unwrap();
        let root = raw::root_as_frame(&bytes[4..]).unwrap();
        let generated = root.body_as_receipt().unwrap().kind();
        assert_eq!(
            generated.variant_name(),
            Some(debug_name(kind).as_str()),
            "{kind:?} encodes as {}",
            generated.0
        );
    }
    assert_eq!(named.len(), raw::ReceiptKind::ENUM_VALUES.len());
    // The schema's default for an absent field is Delivered.
    assert_eq!(
        raw::ReceiptArgs::default().kind,
        raw::ReceiptKind::Delivered
    );
    for n in [0u8, 3, u8::MAX] {
        assert_eq!(
            decode_raw_receipt(raw::ReceiptKind(n)),
            ReceiptKind::Other(n)
        );
    }
}

#[test]
fn body_union_order_matches_frame_kind_order() {
    // The typed decoder maps each generated Body tag to a FrameKind; check the
    // generated union lists the kinds in the order `kind_index` assumes, so
    // the raw tag of a kind is its index + 1.
    let mut encoder = Encoder::default();
    let mut tags = [0u8; KIND_COUNT];
    for frame in typical_frames() {
        let bytes = encoder.encode_to_vec(&frame).unwrap();
        let root = raw::root_as_frame(&bytes[4..]).unwrap();
        let tag = root.body_type();
        assert_eq!(
            tag.variant_name(),
            Some(debug_name(frame.kind()).as_str()),
            "{:?}",
            frame.kind()
        );
        tags[kind_index(frame.kind())] = tag.0;
    }
    let expected: Vec<u8> = (1..=KIND_COUNT as u8).collect();
    assert_eq!(tags.to_vec(), expected);
    assert_eq!(raw::Body::ENUM_VALUES.len(), KIND_COUNT + 1, "NONE + kinds");
}
