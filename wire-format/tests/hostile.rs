//! Hostile input: every malformed, truncated, oversized or lying frame ends
//! in an error (or `Incomplete` while bytes are missing), never a panic and
//! never a frame that differs from what the bytes say.
//!
//! Buffers are built by patching bytes of valid encodings or with the raw
//! generated builder API.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, UnionWIPOffset, WIPOffset};
use proptest::prelude::*;
use tern_wire::{
    decode, framing, raw, Body, DeviceKey, Encoder, Error, ErrorCode, ErrorFrame, Frame, Hello,
    HelloOk, KickReason, Kicked, Limits, LoginError, MalformedReason, Media, ReceiptKind,
    Registered, DEVICE_KEY_LEN, MAX_FRAME_LEN_DEFAULT, MAX_FRAME_LEN_MAX, SHA256_LEN,
};

// ---- helpers ----------------------------------------------------------------

/// Key bytes 0xA0..=0xBF: a pattern that occurs nowhere else in an encoding.
const KEY: DeviceKey = DeviceKey([
    0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF,
    0xB0, 0xB1, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xBB, 0xBC, 0xBD, 0xBE, 0xBF,
]);

const MEDIA: Media<'static> = Media {
    url: "https://media.example/x",
    mime: "image/png",
    size: 1234,
    sha256: [0xC5; SHA256_LEN],
    thumbnail_b64: "AAAA",
    caption: "cap",
};

/// One frame of every kind.
fn samples() -> Vec<Frame<'static>> {
    vec![
        Frame::Hello(Hello {
            protocol_version: 1,
            capabilities: 7,
            client_name: "tern-chat",
        }),
        Frame::HelloOk(HelloOk {
            protocol_version: 1,
            capabilities: 7,
            server_name: "tern",
            max_frame_len: MAX_FRAME_LEN_DEFAULT,
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
            user_id: 1,
            device_key: KEY,
            device_generation: 1,
        }),
        Frame::Login {
            user_id: 1,
            device_key: KEY,
        },
        Frame::LoginOk {
            user_id: 1,
            queued: 2,
            server_time_ms: 3,
        },
        Frame::LoginError(LoginError {
            code: ErrorCode::LoginFailed,
            message: "no",
            retry_after_ms: 0,
        }),
        Frame::Send {
            client_msg_id: 1,
            to: 2,
            body: Body::Text("hi there"),
        },
        Frame::Send {
            client_msg_id: 1,
            to: 2,
            body: Body::Media(MEDIA),
        },
        Frame::ServerAck {
            client_msg_id: 1,
            server_msg_id: 2,
            timestamp_ms: 3,
        },
        Frame::Deliver {
            id: 1,
            from: 2,
            client_msg_id: 3,
            sent_at_ms: 4,
            body: Body::Text("hi there"),
        },
        Frame::Deliver {
            id: 1,
            from: 2,
            client_msg_id: 3,
            sent_at_ms: 4,
            body: Body::Media(MEDIA),
        },
        Frame::DeliverAck { id: 9 },
        Frame::MarkRead {
            client_msg_id: 1,
            to: 2,
            read_client_msg_id: 3,
        },
        Frame::Receipt {
            id: 1,
            kind: ReceiptKind::Read,
            peer: 2,
            client_msg_id: 3,
            at_ms: 4,
        },
        Frame::Ping { nonce: 5 },
        Frame::Pong { nonce: 5 },
        Frame::Error(ErrorFrame {
            code: ErrorCode::Internal,
            message: "oops",
            client_msg_id: 0,
            fatal: true,
        }),
        Frame::Kicked(Kicked {
            reason: KickReason::AdminKick,
            message: "bye",
        }),
    ]
}

/// The whole encoding of `frame`, prefix included.
fn encode(frame: &Frame<'_>) -> Vec<u8> {
    Encoder::new(&Limits::with_max_frame_len(MAX_FRAME_LEN_MAX))
        .encode_to_vec(frame)
        .unwrap()
}

/// The payload of `frame` (prefix removed).
fn payload(frame: &Frame<'_>) -> Vec<u8> {
    encode(frame).split_off(framing::LEN_PREFIX_BYTES)
}

/// Position of the only occurrence of `needle` in `hay`.
fn find_once(hay: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "needle {needle:?} found at {hits:?}");
    hits[0]
}

fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Finishes a raw `Frame` with the given body.
fn finish_frame(
    b: &mut FlatBufferBuilder<'_>,
    body_type: raw::Body,
    body: Option<WIPOffset<UnionWIPOffset>>,
) -> Vec<u8> {
    let root = raw::Frame::create(b, &raw::FrameArgs { body_type, body });
    b.finish_minimal(root);
    b.finished_data().to_vec()
}

fn raw_ping(b: &mut FlatBufferBuilder<'_>) -> WIPOffset<UnionWIPOffset> {
    raw::Ping::create(b, &raw::PingArgs { nonce: 77 }).as_union_value()
}

fn raw_text(b: &mut FlatBufferBuilder<'_>, s: &str) -> WIPOffset<UnionWIPOffset> {
    let text = b.create_string(s);
    raw::Text::create(b, &raw::TextArgs { text: Some(text) }).as_union_value()
}

/// A `Send` whose message body is `(body_type, body)`.
fn raw_send(
    b: &mut FlatBufferBuilder<'_>,
    body_type: raw::MessageBody,
    body: Option<WIPOffset<UnionWIPOffset>>,
) -> Vec<u8> {
    let send = raw::Send::create(
        b,
        &raw::SendArgs {
            client_msg_id: 1,
            to: 2,
            body_type,
            body,
        },
    );
    finish_frame(b, raw::Body::Send, Some(send.as_union_value()))
}

fn limits() -> Limits {
    Limits::default()
}

fn verifier_error(result: Result<Frame<'_>, Error>) -> InvalidFlatbuffer {
    match result {
        Err(Error::Malformed(MalformedReason::Verifier(e))) => e,
        other => panic!("expected a verifier error, got {other:?}"),
    }
}

/// Any outcome is fine except a panic, but a frame that decodes must be
/// exactly what its own re-encoding decodes to.
fn decode_is_consistent(bytes: &[u8]) -> Option<Frame<'_>> {
    let frame = match decode(bytes, &limits()) {
        Ok(frame) => frame,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert_ne!(e.code().as_u16(), 0);
            return None;
        }
    };
    let again = encode(&frame);
    assert_eq!(
        decode(&again[4..], &Limits::with_max_frame_len(MAX_FRAME_LEN_MAX)).unwrap(),
        frame
    );
    Some(frame)
}

// ---- truncation -------------------------------------------------------------

#[test]
fn every_prefix_of_every_encoding_is_incomplete_or_an_error() {
    let max = limits().max_frame_len;
    for frame in samples() {
        let bytes = encode(&frame);
        for cut in 0..bytes.len() {
            let head = &bytes[..cut];
            let expected = if cut < framing::LEN_PREFIX_BYTES {
                None
            } else {
                Some(bytes.len())
            };
            assert_eq!(
                framing::check(head, max),
                Ok(framing::Check::Incomplete {
                    frame_len: expected
                }),
                "{frame:?} cut at {cut}"
            );
            assert_eq!(framing::split(head, max), Ok(None));

            // The truncated payload fed straight to `decode` (a reader that
            // trusted a short read): an error, or, when only the padding
            // after the last string (at most 3 bytes) was cut, the very same
            // frame.
            if cut >= framing::LEN_PREFIX_BYTES {
                match decode(&head[framing::LEN_PREFIX_BYTES..], &limits()) {
                    Err(Error::Malformed(_)) => {}
                    Ok(decoded) => {
                        assert_eq!(decoded, frame, "cut at {cut} decoded differently");
                        assert!(
                            bytes.len() - cut < 4,
                            "{frame:?}: {} bytes missing yet decoded",
                            bytes.len() - cut
                        );
                    }
                    Err(other) => panic!("{frame:?} cut at {cut}: {other:?}"),
                }
            }
        }
        assert!(matches!(
            framing::check(&bytes, max),
            Ok(framing::Check::Complete { .. })
        ));
    }
}

#[test]
fn truncated_payload_mostly_fails_verification() {
    // Cutting the payload in half always loses referenced data.
    for frame in samples() {
        let p = payload(&frame);
        let half = &p[..p.len() / 2];
        assert!(
            matches!(decode(half, &limits()), Err(Error::Malformed(_))),
            "{frame:?}"
        );
    }
}

// ---- sizes ------------------------------------------------------------------

#[test]
fn length_prefix_past_the_bound_is_rejected_from_the_prefix_alone() {
    for max in [1u32, 100, MAX_FRAME_LEN_DEFAULT, MAX_FRAME_LEN_MAX] {
        let past = (max + 1).to_le_bytes();
        assert_eq!(
            framing::check(&past, max),
            Err(Error::FrameTooLarge { len: max + 1, max })
        );
        assert_eq!(
            framing::split(&past, max),
            Err(Error::FrameTooLarge { len: max + 1, max })
        );
        let huge = u32::MAX.to_le_bytes();
        assert_eq!(
            framing::check(&huge, max),
            Err(Error::FrameTooLarge { len: u32::MAX, max })
        );
        // The bound itself is fine: the reader waits for the payload.
        let at = max.to_le_bytes();
        assert_eq!(
            framing::check(&at, max),
            Ok(framing::Check::Incomplete {
                frame_len: Some(4 + max as usize)
            })
        );
    }
    let err = framing::check(&u32::MAX.to_le_bytes(), 10).unwrap_err();
    assert_eq!(err.code(), ErrorCode::FrameTooLarge);
}

#[test]
fn decode_rejects_a_payload_larger_than_the_limit() {
    let limits = Limits::with_max_frame_len(64);
    let p = payload(&Frame::Send {
        client_msg_id: 1,
        to: 2,
        body: Body::Text(&"x".repeat(100)),
    });
    assert!(p.len() > 64);
    assert_eq!(
        decode(&p, &limits),
        Err(Error::FrameTooLarge {
            len: p.len() as u32,
            max: 64
        })
    );
    // Size is checked before content: garbage of max+1 bytes is too large,
    // garbage of max bytes is malformed.
    assert_eq!(
        decode(&[0xEE; 65], &limits),
        Err(Error::FrameTooLarge { len: 65, max: 64 })
    );
    assert!(matches!(
        decode(&[0xEE; 64], &limits),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn zero_length_frame_is_rejected() {
    assert_eq!(framing::check(&[0, 0, 0, 0], 16), Err(Error::EmptyFrame));
    assert_eq!(
        framing::split(&[0, 0, 0, 0, 1, 2, 3], 16),
        Err(Error::EmptyFrame)
    );
    assert_eq!(Error::EmptyFrame.code(), ErrorCode::MalformedFrame);
    // An empty payload handed to decode directly.
    assert!(matches!(
        verifier_error(decode(&[], &limits())),
        InvalidFlatbuffer::RangeOutOfBounds { .. }
    ));
    // Too short to hold a root offset and a table.
    for len in 1..8 {
        assert!(matches!(
            decode(&vec![0u8; len], &limits()),
            Err(Error::Malformed(_))
        ));
    }
}

#[test]
fn limits_are_clamped_to_the_documented_range() {
    assert_eq!(Limits::with_max_frame_len(0).max_frame_len, 1);
    assert_eq!(
        Limits::with_max_frame_len(u32::MAX).max_frame_len,
        MAX_FRAME_LEN_MAX
    );
    assert_eq!(Limits::default().max_frame_len, MAX_FRAME_LEN_DEFAULT);
}

/// A `Send` with a text of `len` bytes.
fn send_text(text: &str) -> Frame<'_> {
    Frame::Send {
        client_msg_id: u64::MAX,
        to: u64::MAX,
        body: Body::Text(text),
    }
}

/// Payload length of `frame`, whether or not it fits a frame.
fn payload_len(frame: &Frame<'_>) -> usize {
    match Encoder::new(&Limits::with_max_frame_len(MAX_FRAME_LEN_MAX)).encode_to_vec(frame) {
        Ok(bytes) => bytes.len() - framing::LEN_PREFIX_BYTES,
        Err(Error::EncodeTooLarge { len, .. }) => len,
        Err(other) => panic!("{other:?}"),
    }
}

/// A text whose `Send` frame has a payload of exactly `target` bytes.
fn text_for_payload_len(target: usize) -> String {
    let base = target - 200;
    let overhead = payload_len(&send_text(&"a".repeat(base))) - base;
    let guess = target - overhead;
    for d in 0..=16 {
        for len in [guess - d, guess + d] {
            let text = "a".repeat(len);
            if payload_len(&send_text(&text)) == target {
                return text;
            }
        }
    }
    panic!("no text length gives a payload of exactly {target} bytes");
}

fn check_exact_bound(max: u32) {
    let limits = Limits::with_max_frame_len(max);
    let text = text_for_payload_len(max as usize);
    let frame = send_text(&text);

    // Exactly at the bound: the encoder produces it, framing accepts it,
    // the verifier accepts it.
    let mut encoder = Encoder::new(&limits);
    let bytes = encoder.encode_to_vec(&frame).unwrap();
    assert_eq!(bytes.len(), 4 + max as usize);
    let (p, consumed) = framing::split(&bytes, max).unwrap().unwrap();
    assert_eq!(consumed, bytes.len());
    assert_eq!(p.len(), max as usize);
    assert_eq!(decode(p, &limits).unwrap(), frame);

    // One byte past: a trailing byte the verifier would ignore, rejected on
    // size alone by decode and framing.
    let mut longer = p.to_vec();
    longer.push(0);
    assert_eq!(
        decode(&longer, &limits),
        Err(Error::FrameTooLarge { len: max + 1, max })
    );
    if max < MAX_FRAME_LEN_MAX {
        assert_eq!(
            decode(&longer, &Limits::with_max_frame_len(max + 1)).unwrap(),
            frame
        );
    }
    let mut framed = (max + 1).to_le_bytes().to_vec();
    framed.extend_from_slice(&longer);
    assert_eq!(
        framing::check(&framed, max),
        Err(Error::FrameTooLarge { len: max + 1, max })
    );

    // The next larger text does not fit: the encoder refuses it.
    let bigger = format!("{text}aaaaaaaa");
    let mut out = vec![1, 2, 3];
    let err = encoder.encode(&send_text(&bigger), &mut out).unwrap_err();
    assert!(matches!(err, Error::EncodeTooLarge { len, max: m } if len > max as usize && m == max));
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn payload_of_exactly_the_default_bound_decodes_and_one_more_does_not() {
    check_exact_bound(MAX_FRAME_LEN_DEFAULT);
}

#[test]
fn payload_of_exactly_the_largest_configurable_bound_decodes() {
    check_exact_bound(MAX_FRAME_LEN_MAX);
}

#[test]
fn payload_of_exactly_a_small_bound_decodes() {
    check_exact_bound(256);
}

#[test]
fn encoder_refuses_frames_over_its_bound_and_leaves_output_unchanged() {
    let mut encoder = Encoder::new(&Limits::with_max_frame_len(64));
    assert_eq!(encoder.max_frame_len(), 64);
    let mut out = b"earlier frames".to_vec();
    let capacity = out.capacity();
    let text = "y".repeat(200);
    let err = encoder.encode(&send_text(&text), &mut out).unwrap_err();
    let Error::EncodeTooLarge { len, max } = err else {
        panic!("expected EncodeTooLarge, got {err:?}");
    };
    assert_eq!(max, 64);
    assert_eq!(len, payload(&send_text(&text)).len());
    assert_eq!(out, b"earlier frames");
    assert_eq!(out.capacity(), capacity);
    assert_eq!(err.code(), ErrorCode::FrameTooLarge);
    assert!(err.to_string().contains("64"));

    // The encoder is still usable after refusing.
    let n = encoder.encode(&Frame::Ping { nonce: 1 }, &mut out).unwrap();
    assert_eq!(out.len(), b"earlier frames".len() + n);
    let (p, _) = framing::split(&out[14..], 64).unwrap().unwrap();
    assert_eq!(
        decode(p, &Limits::with_max_frame_len(64)).unwrap(),
        Frame::Ping { nonce: 1 }
    );
    assert!(encoder.encode_to_vec(&send_text(&text)).is_err());
}

// ---- garbage ----------------------------------------------------------------

fn stream_never_panics(bytes: &[u8]) {
    let max = limits().max_frame_len;
    let mut rest = bytes;
    loop {
        match framing::split(rest, max) {
            Ok(Some((p, consumed))) => {
                assert!(consumed <= rest.len());
                assert_eq!(consumed, p.len() + 4);
                decode_is_consistent(p);
                rest = &rest[consumed..];
            }
            Ok(None) => break,
            Err(e) => {
                assert!(matches!(e, Error::EmptyFrame | Error::FrameTooLarge { .. }));
                break;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        decode_is_consistent(&bytes);
        stream_never_panics(&bytes);
    }

    #[test]
    fn random_bytes_after_a_plausible_header_never_panic(
        body_tag in 0u8..24,
        tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // A root offset and vtable that look right, then noise: reaches past
        // the first verifier checks far more often than pure noise.
        // root offset 12; vtable at 4 (len 8, table len 12, body_type at
        // +4, body at +8); Frame table at 12 (soffset 8); tag at 16; body
        // offset at 20 pointing at 24, where the noise starts.
        let mut bytes = vec![
            12, 0, 0, 0, 8, 0, 12, 0, 4, 0, 8, 0, 8, 0, 0, 0, body_tag, 0, 0, 0, 4, 0, 0, 0,
        ];
        bytes.extend_from_slice(&tail);
        decode_is_consistent(&bytes);
    }

    #[test]
    fn mutated_valid_encodings_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let frames = samples();
        let frame = which.get(&frames);
        let mut p = payload(frame);
        for (at, value) in &edits {
            let i = at.index(p.len());
            p[i] = *value;
        }
        decode_is_consistent(&p);
        let mut framed = (p.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&p);
        stream_never_panics(&framed);
    }
}

// ---- nesting and blow-ups ----------------------------------------------------

#[test]
fn deep_chain_of_tables_behind_an_unknown_field_is_not_walked() {
    // 4000 nested tables, each pointing at the next through field 0, hung
    // off an unknown field of a Text table (a "newer peer" field). The
    // verifier walks only the schema (at most Frame -> Send/Deliver ->
    // Text/Media), so the chain is neither recursed into nor counted.
    let mut b = FlatBufferBuilder::new();
    let mut inner = None;
    for _ in 0..4000 {
        let start = b.start_table();
        if let Some(next) = inner {
            b.push_slot_always::<WIPOffset<_>>(4, next);
        }
        inner = Some(b.end_table(start));
    }
    let text = b.create_string("surface");
    let start = b.start_table();
    b.push_slot_always::<WIPOffset<_>>(raw::Text::VT_TEXT, text);
    b.push_slot_always::<WIPOffset<_>>(raw::Text::VT_TEXT + 2, inner.unwrap());
    let text_table = b.end_table(start);
    let bytes = raw_send(
        &mut b,
        raw::MessageBody::Text,
        Some(text_table.as_union_value()),
    );
    assert!(bytes.len() > 30_000 && bytes.len() <= MAX_FRAME_LEN_DEFAULT as usize);
    assert_eq!(
        decode(&bytes, &limits()).unwrap(),
        Frame::Send {
            client_msg_id: 1,
            to: 2,
            body: Body::Text("surface"),
        }
    );
}

#[test]
fn nested_tables_posing_as_every_schema_level_stop_at_the_schema_depth() {
    // Each table of a 1000-deep chain is shaped to be read as a Frame and as
    // a Deliver at once: a Body tag and a MessageBody tag, and both union
    // offsets pointing at the next table. The verifier follows the schema
    // only (Frame -> Deliver -> Text at most), so it never recurses down
    // the chain; here it stops at the second level, where Deliver's u64
    // `id` slot holds the 1-byte tag.
    let mut b = FlatBufferBuilder::new();
    let mut inner: Option<WIPOffset<flatbuffers::TableFinishedWIPOffset>> = None;
    for _ in 0..1000 {
        let start = b.start_table();
        if let Some(next) = inner {
            b.push_slot_always::<WIPOffset<_>>(raw::Frame::VT_BODY, next);
            b.push_slot_always::<WIPOffset<_>>(raw::Deliver::VT_BODY, next);
        }
        b.push_slot::<u8>(raw::Frame::VT_BODY_TYPE, raw::Body::Deliver.0, 0);
        b.push_slot::<u8>(raw::Deliver::VT_BODY_TYPE, raw::MessageBody::Text.0, 0);
        inner = Some(b.end_table(start));
    }
    b.finish_minimal(inner.unwrap());
    let bytes = b.finished_data().to_vec();
    assert!(matches!(
        verifier_error(decode(&bytes, &limits())),
        InvalidFlatbuffer::Unaligned { .. }
    ));
}

#[test]
fn shared_strings_cannot_blow_up_the_apparent_size() {
    // Media's four string fields all point at one 40 KB string: 40 KB on
    // the wire, 160 KB to anyone who copies the fields out. The verifier's
    // apparent-size bound (twice the frame bound) stops it.
    let big = "z".repeat(40_000);
    let mut b = FlatBufferBuilder::new();
    let shared = b.create_string(&big);
    let sha = b.create_vector(&[0u8; SHA256_LEN]);
    let media = raw::Media::create(
        &mut b,
        &raw::MediaArgs {
            url: Some(shared),
            mime: Some(shared),
            size: 1,
            sha256: Some(sha),
            thumbnail_b64: Some(shared),
            caption: Some(shared),
        },
    );
    let bytes = raw_send(
        &mut b,
        raw::MessageBody::Media,
        Some(media.as_union_value()),
    );
    assert!(bytes.len() < MAX_FRAME_LEN_DEFAULT as usize);
    assert_eq!(
        verifier_error(decode(&bytes, &limits())),
        InvalidFlatbuffer::ApparentSizeTooLarge
    );

    // Sharing within the bound is legal and decodes to the shared text.
    let mut b = FlatBufferBuilder::new();
    let shared = b.create_string(&big);
    let sha = b.create_vector(&[0u8; SHA256_LEN]);
    let media = raw::Media::create(
        &mut b,
        &raw::MediaArgs {
            url: Some(shared),
            mime: Some(shared),
            size: 1,
            sha256: Some(sha),
            thumbnail_b64: None,
            caption: None,
        },
    );
    let bytes = raw_send(
        &mut b,
        raw::MessageBody::Media,
        Some(media.as_union_value()),
    );
    let Frame::Send {
        body: Body::Media(m),
        ..
    } = decode(&bytes, &limits()).unwrap()
    else {
        panic!("expected a media Send");
    };
    assert_eq!(m.url, big);
    assert_eq!(m.mime, big);
    assert_eq!(m.caption, "");
}

// ---- lying lengths and offsets ----------------------------------------------

#[test]
fn vector_length_claiming_2_pow_31_elements_is_rejected() {
    for frame in [
        Frame::Login {
            user_id: 1,
            device_key: KEY,
        },
        Frame::Registered(Registered {
            user_id: 1,
            device_key: KEY,
            device_generation: 1,
        }),
    ] {
        let original = payload(&frame);
        let mut needle = vec![32u8, 0, 0, 0];
        needle.extend_from_slice(&KEY.0);
        let at = find_once(&original, &needle);
        for claimed in [1u32 << 31, u32::MAX, 33, 1 << 16] {
            let mut p = original.clone();
            put_u32(&mut p, at, claimed);
            assert!(
                matches!(
                    verifier_error(decode(&p, &limits())),
                    InvalidFlatbuffer::RangeOutOfBounds { .. }
                ),
                "{frame:?} claiming {claimed}"
            );
        }
    }
}

#[test]
fn string_length_claiming_2_pow_31_bytes_is_rejected() {
    let original = payload(&send_text("MARKER"));
    let at = find_once(&original, b"MARKER") - 4;
    assert_eq!(original[at..at + 4], 6u32.to_le_bytes());
    for claimed in [1u32 << 31, u32::MAX, 1 << 20] {
        let mut p = original.clone();
        put_u32(&mut p, at, claimed);
        assert!(matches!(
            verifier_error(decode(&p, &limits())),
            InvalidFlatbuffer::RangeOutOfBounds { .. }
        ));
    }
}

#[test]
fn root_and_vtable_offsets_out_of_bounds_are_rejected() {
    let original = payload(&Frame::Ping { nonce: 1 });
    for root in [u32::MAX, 1 << 31, original.len() as u32, 2] {
        let mut p = original.clone();
        put_u32(&mut p, 0, root);
        assert!(
            matches!(decode(&p, &limits()), Err(Error::Malformed(_))),
            "root offset {root}"
        );
    }
    // The root table's first 4 bytes are its signed offset to the vtable.
    let root = u32::from_le_bytes(original[..4].try_into().unwrap()) as usize;
    for soffset in [i32::MAX, i32::MIN, -(original.len() as i32)] {
        let mut p = original.clone();
        p[root..root + 4].copy_from_slice(&soffset.to_le_bytes());
        assert!(
            matches!(
                verifier_error(decode(&p, &limits())),
                InvalidFlatbuffer::SignedOffsetOutOfBounds { .. }
                    | InvalidFlatbuffer::RangeOutOfBounds { .. }
            ),
            "soffset {soffset}"
        );
    }
}

// ---- union tags --------------------------------------------------------------

#[test]
fn unknown_body_tag_is_unknown_frame_type() {
    for tag in [20u8, 200, u8::MAX] {
        let mut b = FlatBufferBuilder::new();
        let ping = raw_ping(&mut b);
        let bytes = finish_frame(&mut b, raw::Body(tag), Some(ping));
        let err = decode(&bytes, &limits()).unwrap_err();
        assert_eq!(err, Error::UnknownFrameType(tag));
        assert_eq!(err.code(), ErrorCode::UnexpectedFrame);
    }
}

#[test]
fn unknown_body_tag_patched_into_a_valid_encoding() {
    // Patch the tag byte of a real Ping encoding: find it as the byte whose
    // change to another kind changes what decodes.
    let original = payload(&Frame::Pong { nonce: 3 });
    let tag = raw::Body::Pong.0;
    let candidates: Vec<usize> = (0..original.len())
        .filter(|&i| original[i] == tag)
        .filter(|&i| {
            let mut p = original.clone();
            p[i] = raw::Body::Ping.0;
            decode(&p, &limits()) == Ok(Frame::Ping { nonce: 3 })
        })
        .collect();
    assert_eq!(candidates.len(), 1);
    let mut p = original.clone();
    p[candidates[0]] = 200;
    assert_eq!(decode(&p, &limits()), Err(Error::UnknownFrameType(200)));
}

#[test]
fn unknown_message_body_tag_is_malformed() {
    for tag in [3u8, 9, u8::MAX] {
        let mut b = FlatBufferBuilder::new();
        let text = raw_text(&mut b, "hi");
        let bytes = raw_send(&mut b, raw::MessageBody(tag), Some(text));
        assert_eq!(
            decode(&bytes, &limits()),
            Err(Error::Malformed(MalformedReason::UnknownUnionType {
                union: "MessageBody",
                tag
            }))
        );

        let mut b = FlatBufferBuilder::new();
        let text = raw_text(&mut b, "hi");
        let deliver = raw::Deliver::create(
            &mut b,
            &raw::DeliverArgs {
                id: 1,
                from: 2,
                client_msg_id: 3,
                sent_at_ms: 4,
                body_type: raw::MessageBody(tag),
                body: Some(text),
            },
        );
        let bytes = finish_frame(&mut b, raw::Body::Deliver, Some(deliver.as_union_value()));
        let err = decode(&bytes, &limits()).unwrap_err();
        assert_eq!(
            err,
            Error::Malformed(MalformedReason::UnknownUnionType {
                union: "MessageBody",
                tag
            })
        );
        assert_eq!(err.code(), ErrorCode::MalformedFrame);
    }
}

#[test]
fn union_tag_without_its_table_is_malformed() {
    // Tag set, table absent: the verifier calls the union inconsistent
    // before the decoder's own MissingField check is reached.
    let mut b = FlatBufferBuilder::new();
    let bytes = finish_frame(&mut b, raw::Body::Send, None);
    assert!(matches!(
        verifier_error(decode(&bytes, &limits())),
        InvalidFlatbuffer::InconsistentUnion { .. }
    ));

    let mut b = FlatBufferBuilder::new();
    let bytes = finish_frame(&mut b, raw::Body(200), None);
    assert!(matches!(
        verifier_error(decode(&bytes, &limits())),
        InvalidFlatbuffer::InconsistentUnion { .. }
    ));

    let mut b = FlatBufferBuilder::new();
    let bytes = raw_send(&mut b, raw::MessageBody::Text, None);
    assert!(matches!(
        verifier_error(decode(&bytes, &limits())),
        InvalidFlatbuffer::InconsistentUnion { .. }
    ));

    // Table present, tag absent (NONE, the default, is not stored).
    let mut b = FlatBufferBuilder::new();
    let ping = raw_ping(&mut b);
    let bytes = finish_frame(&mut b, raw::Body::NONE, Some(ping));
    assert!(matches!(
        verifier_error(decode(&bytes, &limits())),
        InvalidFlatbuffer::InconsistentUnion { .. }
    ));
}

#[test]
fn missing_body_is_missing_field() {
    // An empty Frame table: no tag, no body.
    let mut b = FlatBufferBuilder::new();
    let bytes = finish_frame(&mut b, raw::Body::NONE, None);
    assert_eq!(
        decode(&bytes, &limits()),
        Err(Error::Malformed(MalformedReason::MissingField(
            "Frame.body"
        )))
    );

    // Tag NONE written out explicitly next to a table.
    let mut b = FlatBufferBuilder::new();
    b.force_defaults(true);
    let ping = raw_ping(&mut b);
    let bytes = finish_frame(&mut b, raw::Body::NONE, Some(ping));
    assert_eq!(
        decode(&bytes, &limits()),
        Err(Error::Malformed(MalformedReason::MissingField(
            "Frame.body"
        )))
    );

    // A Send or Deliver without a message body.
    let mut b = FlatBufferBuilder::new();
    let bytes = raw_send(&mut b, raw::MessageBody::NONE, None);
    assert_eq!(
        decode(&bytes, &limits()),
        Err(Error::Malformed(MalformedReason::MissingField("Send.body")))
    );
    let mut b = FlatBufferBuilder::new();
    let deliver = raw::Deliver::create(&mut b, &raw::DeliverArgs::default());
    let bytes = finish_frame(&mut b, raw::Body::Deliver, Some(deliver.as_union_value()));
    assert_eq!(
        decode(&bytes, &limits()),
        Err(Error::Malformed(MalformedReason::MissingField(
            "Deliver.body"
        )))
    );
}

#[test]
fn tag_naming_another_kind_reads_the_table_as_that_kind() {
    // A Ping table under a Login tag: read as a Login, it has no device key.
    let mut b = FlatBufferBuilder::new();
    let ping = raw_ping(&mut b);
    let bytes = finish_frame(&mut b, raw::Body::Login, Some(ping));
    assert_eq!(
        decode(&bytes, &limits()),
        Err(Error::Malformed(MalformedReason::MissingField(
            "Login.device_key"
        )))
    );
}

#[test]
fn required_fields_that_are_absent_are_missing_field() {
    fn check(bytes: &[u8], field: &'static str) {
        let err = decode(bytes, &limits()).unwrap_err();
        assert_eq!(err, Error::Malformed(MalformedReason::MissingField(field)));
        assert_eq!(err.code(), ErrorCode::MalformedFrame);
        assert!(err.to_string().contains(field));
    }

    let mut b = FlatBufferBuilder::new();
    let t = raw::RequestPin::create(&mut b, &raw::RequestPinArgs { phone: None });
    check(
        &finish_frame(&mut b, raw::Body::RequestPin, Some(t.as_union_value())),
        "RequestPin.phone",
    );

    let mut b = FlatBufferBuilder::new();
    let t = raw::PinSent::create(&mut b, &raw::PinSentArgs::default());
    check(
        &finish_frame(&mut b, raw::Body::PinSent, Some(t.as_union_value())),
        "PinSent.phone",
    );

    let mut b = FlatBufferBuilder::new();
    let phone = b.create_string("+1");
    let t = raw::VerifyPin::create(
        &mut b,
        &raw::VerifyPinArgs {
            phone: Some(phone),
            pin: None,
        },
    );
    check(
        &finish_frame(&mut b, raw::Body::VerifyPin, Some(t.as_union_value())),
        "VerifyPin.pin",
    );

    let mut b = FlatBufferBuilder::new();
    let t = raw::VerifyPin::create(&mut b, &raw::VerifyPinArgs::default());
    check(
        &finish_frame(&mut b, raw::Body::VerifyPin, Some(t.as_union_value())),
        "VerifyPin.phone",
    );

    let mut b = FlatBufferBuilder::new();
    let t = raw::Registered::create(&mut b, &raw::RegisteredArgs::default());
    check(
        &finish_frame(&mut b, raw::Body::Registered, Some(t.as_union_value())),
        "Registered.device_key",
    );

    let mut b = FlatBufferBuilder::new();
    let t = raw::Login::create(&mut b, &raw::LoginArgs::default());
    check(
        &finish_frame(&mut b, raw::Body::Login, Some(t.as_union_value())),
        "Login.device_key",
    );

    let mut b = FlatBufferBuilder::new();
    let t = raw::Text::create(&mut b, &raw::TextArgs { text: None });
    check(
        &raw_send(&mut b, raw::MessageBody::Text, Some(t.as_union_value())),
        "Text.text",
    );

    for missing in ["url", "mime", "sha256"] {
        let mut b = FlatBufferBuilder::new();
        let s = b.create_string("s");
        let sha = b.create_vector(&[0u8; SHA256_LEN]);
        let t = raw::Media::create(
            &mut b,
            &raw::MediaArgs {
                url: (missing != "url").then_some(s),
                mime: (missing != "mime").then_some(s),
                size: 0,
                sha256: (missing != "sha256").then_some(sha),
                thumbnail_b64: None,
                caption: None,
            },
        );
        let field = match missing {
            "url" => "Media.url",
            "mime" => "Media.mime",
            _ => "Media.sha256",
        };
        check(
            &raw_send(&mut b, raw::MessageBody::Media, Some(t.as_union_value())),
            field,
        );
    }
}

// ---- fixed-size fields -------------------------------------------------------

fn raw_login(key: &[u8]) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let device_key = b.create_vector(key);
    let t = raw::Login::create(
        &mut b,
        &raw::LoginArgs {
            user_id: 1,
            device_key: Some(device_key),
        },
    );
    finish_frame(&mut b, raw::Body::Login, Some(t.as_union_value()))
}

fn raw_registered(key: &[u8]) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let device_key = b.create_vector(key);
    let t = raw::Registered::create(
        &mut b,
        &raw::RegisteredArgs {
            user_id: 1,
            device_key: Some(device_key),
            device_generation: 1,
        },
    );
    finish_frame(&mut b, raw::Body::Registered, Some(t.as_union_value()))
}

fn raw_media_send(sha256: &[u8]) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let url = b.create_string("https://m/x");
    let mime = b.create_string("image/png");
    let sha = b.create_vector(sha256);
    let t = raw::Media::create(
        &mut b,
        &raw::MediaArgs {
            url: Some(url),
            mime: Some(mime),
            size: 1,
            sha256: Some(sha),
            thumbnail_b64: None,
            caption: None,
        },
    );
    raw_send(&mut b, raw::MessageBody::Media, Some(t.as_union_value()))
}

#[test]
fn device_key_and_sha256_of_the_wrong_length_are_rejected() {
    for len in [0usize, 1, 31, 33, 64] {
        let bytes = vec![0x11u8; len];
        for (encoded, field) in [
            (raw_login(&bytes), "Login.device_key"),
            (raw_registered(&bytes), "Registered.device_key"),
            (raw_media_send(&bytes), "Media.sha256"),
        ] {
            let err = decode(&encoded, &limits()).unwrap_err();
            assert_eq!(
                err,
                Error::Malformed(MalformedReason::BadFieldLength {
                    field,
                    expected: 32,
                    got: len
                })
            );
            assert_eq!(err.code(), ErrorCode::MalformedFrame);
        }
    }
    // The right length, built the same way, decodes.
    let key = [0x22u8; DEVICE_KEY_LEN];
    assert_eq!(
        decode(&raw_login(&key), &limits()).unwrap(),
        Frame::Login {
            user_id: 1,
            device_key: DeviceKey(key)
        }
    );
    assert!(matches!(
        decode(&raw_media_send(&[0x33; SHA256_LEN]), &limits()).unwrap(),
        Frame::Send {
            body: Body::Media(Media {
                sha256: [0x33, ..],
                ..
            }),
            ..
        }
    ));
}

// ---- strings -------------------------------------------------------------------

/// `frame` encoded with the bytes of "ZZZZ" replaced by `replacement`.
fn patch_marker(frame: &Frame<'_>, replacement: &[u8; 4]) -> Vec<u8> {
    let mut p = payload(frame);
    let at = find_once(&p, b"ZZZZ");
    p[at..at + 4].copy_from_slice(replacement);
    p
}

#[test]
fn invalid_utf8_in_any_string_is_a_verifier_error() {
    let with_marker = [
        Frame::RequestPin { phone: "+1ZZZZ" },
        send_text("ZZZZ"),
        Frame::Hello(Hello {
            protocol_version: 1,
            capabilities: 0,
            client_name: "ZZZZ",
        }),
        // Optional strings are checked too.
        Frame::Deliver {
            id: 1,
            from: 2,
            client_msg_id: 3,
            sent_at_ms: 4,
            body: Body::Media(Media {
                caption: "ZZZZ",
                ..MEDIA
            }),
        },
        Frame::Error(ErrorFrame {
            code: ErrorCode::Internal,
            message: "xZZZZx",
            client_msg_id: 0,
            fatal: false,
        }),
    ];
    for frame in &with_marker {
        // Sanity: the marker version decodes.
        assert_eq!(decode(&payload(frame), &limits()).unwrap(), *frame);
        for bad in [
            [0xFF, 0xFE, 0xFD, 0xFC],
            [b'a', 0xC3, 0x28, b'a'],
            [0xED, 0xA0, 0x80, b'a'],
        ] {
            let p = patch_marker(frame, &bad);
            let err = verifier_error(decode(&p, &limits()));
            assert!(
                matches!(err, InvalidFlatbuffer::Utf8Error { .. }),
                "{frame:?}: {err:?}"
            );
        }
    }
}

#[test]
fn string_without_its_nul_terminator_is_a_verifier_error() {
    let mut p = payload(&send_text("ZZZZ"));
    let at = find_once(&p, b"ZZZZ\0");
    p[at + 4] = b'!';
    assert!(matches!(
        verifier_error(decode(&p, &limits())),
        InvalidFlatbuffer::MissingNullTerminator { .. }
    ));
}

// ---- error classification -------------------------------------------------------

#[test]
fn every_error_maps_to_a_protocol_code() {
    let cases = [
        (
            Error::FrameTooLarge { len: 2, max: 1 },
            ErrorCode::FrameTooLarge,
        ),
        (
            Error::EncodeTooLarge { len: 2, max: 1 },
            ErrorCode::FrameTooLarge,
        ),
        (Error::EmptyFrame, ErrorCode::MalformedFrame),
        (
            Error::Malformed(MalformedReason::MissingField("x")),
            ErrorCode::MalformedFrame,
        ),
        (Error::UnknownFrameType(200), ErrorCode::UnexpectedFrame),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err}");
        assert!(!err.to_string().is_empty());
    }
}
