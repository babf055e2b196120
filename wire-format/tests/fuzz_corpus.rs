//! Replays the fuzz corpus (`fuzz/corpus/decode_frame/`) and any crash
//! artifacts (`fuzz/artifacts/`) through the fuzz target's own checks, on
//! stable, as an ordinary test. Also generates the seed files:
//!
//! ```text
//! cargo test -p tern-wire --test fuzz_corpus -- --ignored write_seed_corpus
//! ```
//!
//! writes every `seed-*` file of the corpus from `seeds()` below (and
//! removes `seed-*` files it no longer produces; files the fuzzer added are
//! left alone). `committed_seeds_are_current` fails when the committed seeds
//! differ from what `seeds()` produces, e.g. after a schema change.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

#[path = "../../fuzz/shared/decode_frame.rs"]
mod decode_frame;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use tern_wire::{
    decode, framing, raw, Body, DeviceKey, Encoder, Error, ErrorCode, ErrorFrame, Frame, Hello,
    HelloOk, KickReason, Kicked, Limits, LoginError, MalformedReason, Media, ReceiptKind,
    Registered, DEVICE_KEY_LEN, MAX_FRAME_LEN_DEFAULT, PROTOCOL_VERSION, SHA256_LEN,
};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn corpus_dir() -> PathBuf {
    fuzz_dir().join("corpus/decode_frame")
}

/// Every regular file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

// ---- seeds ---------------------------------------------------------------------

const MEDIA: Media<'static> = Media {
    url: "https://media.example/f/1",
    mime: "image/jpeg",
    size: 52_133,
    sha256: [0x5a; SHA256_LEN],
    thumbnail_b64: "/9j/4AAQ",
    caption: "beach",
};

/// Valid frames: every kind, both message bodies, unknown enum values, edge
/// integers.
fn seed_frames() -> Vec<(&'static str, Frame<'static>)> {
    vec![
        (
            "hello",
            Frame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                capabilities: 0,
                client_name: "tern-chat/0.1",
            }),
        ),
        (
            "hello-ok",
            Frame::HelloOk(HelloOk {
                protocol_version: PROTOCOL_VERSION,
                capabilities: 0,
                server_name: "tern/0.1",
                max_frame_len: MAX_FRAME_LEN_DEFAULT,
            }),
        ),
        (
            "request-pin",
            Frame::RequestPin {
                phone: "+15551234567",
            },
        ),
        (
            "pin-sent",
            Frame::PinSent {
                phone: "+15551234567",
                pin_len: 6,
                expires_in_s: 300,
            },
        ),
        (
            "verify-pin",
            Frame::VerifyPin {
                phone: "+15551234567",
                pin: "123456",
            },
        ),
        (
            "registered",
            Frame::Registered(Registered {
                user_id: 42,
                device_key: DeviceKey([0x11; DEVICE_KEY_LEN]),
                device_generation: 3,
            }),
        ),
        (
            "login",
            Frame::Login {
                user_id: 42,
                device_key: DeviceKey([0x11; DEVICE_KEY_LEN]),
            },
        ),
        (
            "login-ok",
            Frame::LoginOk {
                user_id: 42,
                queued: 5,
                server_time_ms: 1_700_000_000_000,
            },
        ),
        (
            "login-error",
            Frame::LoginError(LoginError {
                code: ErrorCode::LoginRateLimited,
                message: "wait",
                retry_after_ms: 2000,
            }),
        ),
        (
            "send-text",
            Frame::Send {
                client_msg_id: 1,
                to: 43,
                body: Body::Text("hello"),
            },
        ),
        (
            "send-media",
            Frame::Send {
                client_msg_id: 2,
                to: 43,
                body: Body::Media(MEDIA),
            },
        ),
        (
            "server-ack",
            Frame::ServerAck {
                client_msg_id: 1,
                server_msg_id: 1001,
                timestamp_ms: 1_700_000_000_001,
            },
        ),
        (
            "deliver-text",
            Frame::Deliver {
                id: 7,
                from: 42,
                client_msg_id: 1,
                sent_at_ms: 1_700_000_000_002,
                body: Body::Text("hello"),
            },
        ),
        (
            "deliver-media",
            Frame::Deliver {
                id: 8,
                from: 42,
                client_msg_id: 2,
                sent_at_ms: 1_700_000_000_003,
                body: Body::Media(MEDIA),
            },
        ),
        ("deliver-ack", Frame::DeliverAck { id: 7 }),
        (
            "mark-read",
            Frame::MarkRead {
                client_msg_id: 3,
                to: 42,
                read_client_msg_id: 1,
            },
        ),
        (
            "receipt",
            Frame::Receipt {
                id: 9,
                kind: ReceiptKind::Read,
                peer: 43,
                client_msg_id: 1,
                at_ms: 1_700_000_000_004,
            },
        ),
        ("ping", Frame::Ping { nonce: 1 }),
        ("pong", Frame::Pong { nonce: 1 }),
        (
            "error",
            Frame::Error(ErrorFrame {
                code: ErrorCode::QueueFull,
                message: "full",
                client_msg_id: 1,
                fatal: false,
            }),
        ),
        (
            "kicked",
            Frame::Kicked(Kicked {
                reason: KickReason::DeviceReplaced,
                message: "new device",
            }),
        ),
        (
            "error-unknown-code",
            Frame::Error(ErrorFrame {
                code: ErrorCode::Unknown(999),
                message: "",
                client_msg_id: u64::MAX,
                fatal: true,
            }),
        ),
        (
            "kicked-other-reason",
            Frame::Kicked(Kicked {
                reason: KickReason::Other(9),
                message: "",
            }),
        ),
        (
            "receipt-other-kind",
            Frame::Receipt {
                id: u64::MAX,
                kind: ReceiptKind::Other(7),
                peer: u64::MAX,
                client_msg_id: u64::MAX,
                at_ms: u64::MAX,
            },
        ),
        (
            "send-empty-text-max-ids",
            Frame::Send {
                client_msg_id: u64::MAX,
                to: u64::MAX,
                body: Body::Text(""),
            },
        ),
    ]
}

fn encode(frame: &Frame<'_>) -> Vec<u8> {
    Encoder::default().encode_to_vec(frame).unwrap()
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn finish_frame(
    b: &mut FlatBufferBuilder<'_>,
    body_type: raw::Body,
    body: Option<WIPOffset<UnionWIPOffset>>,
) -> Vec<u8> {
    let root = raw::Frame::create(b, &raw::FrameArgs { body_type, body });
    b.finish_minimal(root);
    framed(b.finished_data())
}

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

fn replace_once(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    bytes[at..at + to.len()].copy_from_slice(to);
}

/// Every seed file: name (without the `seed-` prefix) and content.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = seed_frames()
        .into_iter()
        .map(|(name, frame)| (format!("valid-{name}"), encode(&frame)))
        .collect();

    // Several frames in one input, as a connection delivers them.
    let mut stream = Vec::new();
    for (_, frame) in seed_frames().iter().take(8) {
        stream.extend(encode(frame));
    }
    out.push(("stream-login-sequence".into(), stream));
    let mut partial = encode(&Frame::Ping { nonce: 2 });
    let pong = encode(&Frame::Pong { nonce: 2 });
    partial.extend_from_slice(&pong[..pong.len() / 2]);
    out.push(("stream-trailing-partial-frame".into(), partial));

    // A bare payload without a prefix (the target decodes the whole input
    // too).
    let send = encode(&Frame::Send {
        client_msg_id: 5,
        to: 6,
        body: Body::Text("bare"),
    });
    out.push(("bare-payload-send".into(), send[4..].to_vec()));

    // Framing attacks.
    out.push(("hostile-empty-input".into(), Vec::new()));
    out.push(("hostile-zero-length".into(), vec![0, 0, 0, 0]));
    out.push((
        "hostile-length-over-bound".into(),
        (MAX_FRAME_LEN_DEFAULT + 1).to_le_bytes().to_vec(),
    ));
    out.push((
        "hostile-length-u32-max".into(),
        u32::MAX.to_le_bytes().to_vec(),
    ));
    let mut truncated = encode(&Frame::Send {
        client_msg_id: 1,
        to: 2,
        body: Body::Media(MEDIA),
    });
    truncated.truncate(truncated.len() / 2);
    out.push(("hostile-truncated-media".into(), truncated));
    // A prefix that claims one byte more than the payload it carries.
    let mut short = encode(&Frame::Ping { nonce: 3 });
    let claimed = (short.len() - 4 + 1) as u32;
    short[..4].copy_from_slice(&claimed.to_le_bytes());
    out.push(("hostile-prefix-one-too-long".into(), short));

    // Union tags.
    let mut b = FlatBufferBuilder::new();
    let ping = raw::Ping::create(&mut b, &raw::PingArgs { nonce: 1 });
    out.push((
        "hostile-body-tag-200".into(),
        finish_frame(&mut b, raw::Body(200), Some(ping.as_union_value())),
    ));
    let mut b = FlatBufferBuilder::new();
    let text = b.create_string("hi");
    let text = raw::Text::create(&mut b, &raw::TextArgs { text: Some(text) });
    out.push((
        "hostile-message-body-tag-9".into(),
        raw_send(&mut b, raw::MessageBody(9), Some(text.as_union_value())),
    ));
    let mut b = FlatBufferBuilder::new();
    out.push((
        "hostile-body-tag-without-table".into(),
        finish_frame(&mut b, raw::Body::Send, None),
    ));
    let mut b = FlatBufferBuilder::new();
    out.push((
        "hostile-empty-frame-table".into(),
        finish_frame(&mut b, raw::Body::NONE, None),
    ));
    let mut b = FlatBufferBuilder::new();
    out.push((
        "hostile-send-without-body".into(),
        raw_send(&mut b, raw::MessageBody::NONE, None),
    ));

    // Field contents.
    out.push((
        "hostile-device-key-31".into(),
        raw_login(&[7; DEVICE_KEY_LEN - 1]),
    ));
    out.push((
        "hostile-device-key-33".into(),
        raw_login(&[7; DEVICE_KEY_LEN + 1]),
    ));
    let mut b = FlatBufferBuilder::new();
    let url = b.create_string("u");
    let mime = b.create_string("m");
    let sha = b.create_vector(&[1u8; SHA256_LEN - 1]);
    let media = raw::Media::create(
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
    out.push((
        "hostile-sha256-31".into(),
        raw_send(
            &mut b,
            raw::MessageBody::Media,
            Some(media.as_union_value()),
        ),
    ));
    let mut bad_utf8 = encode(&Frame::RequestPin { phone: "+1ZZZZ" });
    replace_once(&mut bad_utf8, b"ZZZZ", &[0xFF, 0xC3, 0x28, 0xED]);
    out.push(("hostile-invalid-utf8".into(), bad_utf8));
    let mut no_nul = encode(&Frame::Send {
        client_msg_id: 1,
        to: 2,
        body: Body::Text("ZZZZ"),
    });
    replace_once(&mut no_nul, b"ZZZZ\0", b"ZZZZ!");
    out.push(("hostile-missing-nul".into(), no_nul));
    let mut huge_vec = encode(&Frame::Login {
        user_id: 1,
        device_key: DeviceKey([0x11; DEVICE_KEY_LEN]),
    });
    let mut needle = vec![32u8, 0, 0, 0];
    needle.extend_from_slice(&[0x11; 4]);
    replace_once(&mut huge_vec, &needle, &(1u32 << 31).to_le_bytes());
    out.push(("hostile-vector-len-2-pow-31".into(), huge_vec));

    // Deterministic noise.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..96)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    out.push(("hostile-noise".into(), framed(&noise)));

    out.into_iter()
        .map(|(name, bytes)| (format!("seed-{name}"), bytes))
        .collect()
}

// ---- tests -----------------------------------------------------------------------

#[test]
fn corpus_and_artifacts_replay_through_the_fuzz_checks() {
    let corpus = files_under(&corpus_dir());
    assert!(
        !corpus.is_empty(),
        "{} is empty; run write_seed_corpus",
        corpus_dir().display()
    );
    let mut total = decode_frame::Outcome::default();
    for path in &corpus {
        let outcome = decode_frame::run(&fs::read(path).unwrap());
        total.frames_decoded += outcome.frames_decoded;
        total.frames_rejected += outcome.frames_rejected;
        total.framing_error |= outcome.framing_error;
        total.whole_input_decoded |= outcome.whole_input_decoded;
    }
    // The seeds reach every branch of the target.
    assert!(total.frames_decoded >= seed_frames().len(), "{total:?}");
    assert!(total.frames_rejected > 0, "{total:?}");
    assert!(total.framing_error, "{total:?}");
    assert!(total.whole_input_decoded, "{total:?}");

    // Crashes found by the fuzzer (cargo fuzz writes them here) must stay
    // fixed once the bug is.
    let artifacts = fuzz_dir().join("artifacts");
    if artifacts.is_dir() {
        for path in files_under(&artifacts) {
            decode_frame::run(&fs::read(&path).unwrap());
        }
    }
}

#[test]
fn committed_seeds_are_current() {
    for (name, bytes) in seeds() {
        let path = corpus_dir().join(&name);
        let committed = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo test -p tern-wire --test fuzz_corpus -- --ignored write_seed_corpus`",
                path.display()
            )
        });
        assert_eq!(committed, bytes, "{name} is stale; run write_seed_corpus");
    }
}

#[test]
fn committed_seeds_cover_every_kind_and_every_rejection() {
    let limits = Limits::default();
    let mut kinds = BTreeSet::new();
    let mut rejections = BTreeSet::new();
    for path in files_under(&corpus_dir()) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("seed-") {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        let mut rest = &bytes[..];
        loop {
            match framing::split(rest, limits.max_frame_len) {
                Ok(Some((payload, consumed))) => {
                    match decode(payload, &limits) {
                        Ok(frame) => {
                            kinds.insert(format!("{:?}", frame.kind()));
                        }
                        Err(e) => {
                            rejections.insert(rejection(&e));
                        }
                    }
                    rest = &rest[consumed..];
                }
                Ok(None) => break,
                Err(e) => {
                    rejections.insert(rejection(&e));
                    break;
                }
            }
        }
    }
    assert_eq!(kinds.len(), 19, "kinds decoded from the seeds: {kinds:?}");
    let expected: BTreeSet<&str> = [
        "EmptyFrame",
        "FrameTooLarge",
        "UnknownFrameType",
        "MissingField",
        "BadFieldLength",
        "UnknownUnionType",
        "Verifier",
    ]
    .into_iter()
    .collect();
    let got: BTreeSet<&str> = rejections.iter().map(String::as_str).collect();
    assert_eq!(got, expected);
}

fn rejection(e: &Error) -> String {
    match e {
        Error::Malformed(MalformedReason::Verifier(_)) => "Verifier".into(),
        Error::Malformed(MalformedReason::MissingField(_)) => "MissingField".into(),
        Error::Malformed(MalformedReason::BadFieldLength { .. }) => "BadFieldLength".into(),
        Error::Malformed(MalformedReason::UnknownUnionType { .. }) => "UnknownUnionType".into(),
        Error::EmptyFrame => "EmptyFrame".into(),
        Error::FrameTooLarge { .. } => "FrameTooLarge".into(),
        Error::UnknownFrameType(_) => "UnknownFrameType".into(),
        other => format!("{other:?}"),
    }
}

#[test]
#[ignore = "writes fuzz/corpus/decode_frame/seed-*; run on purpose"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    fs::create_dir_all(&dir).unwrap();
    let seeds = seeds();
    let names: BTreeSet<&str> = seeds.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), seeds.len(), "seed names are unique");
    for path in files_under(&dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("seed-") && !names.contains(name.as_str()) {
            fs::remove_file(&path).unwrap();
        }
    }
    for (name, bytes) in &seeds {
        fs::write(dir.join(name), bytes).unwrap();
    }
    assert_eq!(
        files_under(&dir)
            .iter()
            .filter(|p| p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-"))
            .count(),
        seeds.len()
    );
}
