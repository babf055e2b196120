//! A byte stream of valid frames, cut into chunks at arbitrary boundaries
//! (as TCP and TLS deliver it), is read back by a small accumulating reader
//! built on `framing::check` / `framing::split`, and every frame comes out
//! equal to what was sent, in order.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use proptest::prelude::*;
use tern_wire::framing::{self, Check};
use tern_wire::{
    decode, Body, DeviceKey, Encoder, Error, ErrorCode, ErrorFrame, Frame, Hello, HelloOk,
    KickReason, Kicked, Limits, LoginError, Media, ReceiptKind, Registered, DEVICE_KEY_LEN,
};

// ---- the reader under test ------------------------------------------------------

/// Accumulates bytes and hands out whole frame payloads, the way a
/// connection's read loop does: `check` first (reject bad prefixes before
/// buffering a payload), `split` once complete, keep the remainder.
#[derive(Debug)]
struct Reader {
    buf: Vec<u8>,
    max_frame_len: u32,
}

impl Reader {
    fn new(max_frame_len: u32) -> Self {
        Self {
            buf: Vec::new(),
            max_frame_len,
        }
    }

    /// Adds `chunk` and returns the payloads of every frame now complete.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        self.buf.extend_from_slice(chunk);
        let mut payloads = Vec::new();
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            match framing::check(rest, self.max_frame_len)? {
                Check::Incomplete { frame_len } => {
                    match frame_len {
                        Some(len) => {
                            assert!(rest.len() >= framing::LEN_PREFIX_BYTES);
                            assert!(len > rest.len());
                            assert!(len <= framing::LEN_PREFIX_BYTES + self.max_frame_len as usize);
                        }
                        None => assert!(rest.len() < framing::LEN_PREFIX_BYTES),
                    }
                    assert_eq!(framing::split(rest, self.max_frame_len), Ok(None));
                    break;
                }
                Check::Complete { frame_len } => {
                    let (payload, consumed) = framing::split(rest, self.max_frame_len)?
                        .expect("check said the frame is complete");
                    assert_eq!(consumed, frame_len);
                    payloads.push(payload.to_vec());
                    start += consumed;
                }
            }
        }
        self.buf.drain(..start);
        Ok(payloads)
    }

    fn buffered(&self) -> usize {
        self.buf.len()
    }
}

// ---- owned frame descriptions, so proptest can generate them ---------------------

/// Every field any frame kind needs; `frame()` picks what its kind uses.
#[derive(Clone, Debug)]
struct Spec {
    kind: u8,
    n: [u64; 5],
    word: u32,
    half: u16,
    byte: u8,
    strings: [String; 4],
    key: [u8; DEVICE_KEY_LEN],
    flag: bool,
    media: bool,
}

const KIND_COUNT: u8 = 19;

fn kick_reason(n: u8) -> KickReason {
    match n {
        1 => KickReason::DeviceReplaced,
        2 => KickReason::AdminKick,
        3 => KickReason::ServerShutdown,
        n => KickReason::Other(n),
    }
}

fn receipt_kind(n: u8) -> ReceiptKind {
    match n {
        1 => ReceiptKind::Delivered,
        2 => ReceiptKind::Read,
        n => ReceiptKind::Other(n),
    }
}

impl Spec {
    fn frame(&self) -> Frame<'_> {
        let [a, b, c, d, e] = self.n;
        let [s0, s1, s2, s3] = &self.strings;
        let body = if self.media {
            Body::Media(Media {
                url: s0,
                mime: s1,
                size: e,
                sha256: self.key,
                thumbnail_b64: s2,
                caption: s3,
            })
        } else {
            Body::Text(s0)
        };
        match self.kind {
            0 => Frame::Hello(Hello {
                protocol_version: self.half,
                capabilities: a,
                client_name: s0,
            }),
            1 => Frame::HelloOk(HelloOk {
                protocol_version: self.half,
                capabilities: a,
                server_name: s0,
                max_frame_len: self.word,
            }),
            2 => Frame::RequestPin { phone: s0 },
            3 => Frame::PinSent {
                phone: s0,
                pin_len: self.byte,
                expires_in_s: self.word,
            },
            4 => Frame::VerifyPin { phone: s0, pin: s1 },
            5 => Frame::Registered(Registered {
                user_id: a,
                device_key: DeviceKey(self.key),
                device_generation: self.word,
            }),
            6 => Frame::Login {
                user_id: a,
                device_key: DeviceKey(self.key),
            },
            7 => Frame::LoginOk {
                user_id: a,
                queued: self.word,
                server_time_ms: b,
            },
            8 => Frame::LoginError(LoginError {
                code: ErrorCode::from_u16(self.half),
                message: s0,
                retry_after_ms: self.word,
            }),
            9 => Frame::Send {
                client_msg_id: a,
                to: b,
                body,
            },
            10 => Frame::ServerAck {
                client_msg_id: a,
                server_msg_id: b,
                timestamp_ms: c,
            },
            11 => Frame::Deliver {
                id: a,
                from: b,
                client_msg_id: c,
                sent_at_ms: d,
                body,
            },
            12 => Frame::DeliverAck { id: a },
            13 => Frame::MarkRead {
                client_msg_id: a,
                to: b,
                read_client_msg_id: c,
            },
            14 => Frame::Receipt {
                id: a,
                kind: receipt_kind(self.byte),
                peer: b,
                client_msg_id: c,
                at_ms: d,
            },
            15 => Frame::Ping { nonce: a },
            16 => Frame::Pong { nonce: a },
            17 => Frame::Error(ErrorFrame {
                code: ErrorCode::from_u16(self.half),
                message: s0,
                client_msg_id: a,
                fatal: self.flag,
            }),
            18 => Frame::Kicked(Kicked {
                reason: kick_reason(self.byte),
                message: s0,
            }),
            other => panic!("kind {other} out of range"),
        }
    }
}

fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(1), Just(u64::MAX), any::<u64>()]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => ".{0,16}",
        1 => Just(String::new()),
        // Long enough to span many chunks.
        1 => "[a-z0-9 ]{300,3000}",
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..KIND_COUNT,
        proptest::array::uniform5(edgy_u64()),
        prop_oneof![Just(u32::MAX), any::<u32>()],
        prop_oneof![Just(999u16), 0u16..60, any::<u16>()],
        any::<u8>(),
        proptest::array::uniform4(text()),
        any::<[u8; DEVICE_KEY_LEN]>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(kind, n, word, half, byte, strings, key, flag, media)| Spec {
                kind,
                n,
                word,
                half,
                byte,
                strings,
                key,
                flag,
                media,
            },
        )
}

/// Encodes `specs` into one stream.
fn encode_all(specs: &[Spec]) -> Vec<u8> {
    let mut encoder = Encoder::default();
    let mut stream = Vec::new();
    for spec in specs {
        encoder.encode(&spec.frame(), &mut stream).unwrap();
    }
    stream
}

/// Cuts `stream` at `cuts` (any order, duplicates allowed) and feeds the
/// pieces to a reader; returns the payloads it produced.
fn read_in_chunks(stream: &[u8], cuts: &[usize], max_frame_len: u32) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    let mut reader = Reader::new(max_frame_len);
    let mut payloads = Vec::new();
    for pair in points.windows(2) {
        payloads.extend(reader.feed(&stream[pair[0]..pair[1]]).unwrap());
    }
    assert_eq!(reader.buffered(), 0, "bytes left over after the last frame");
    payloads
}

fn assert_decodes_to(payloads: &[Vec<u8>], specs: &[Spec]) {
    let limits = Limits::default();
    assert_eq!(payloads.len(), specs.len());
    for (payload, spec) in payloads.iter().zip(specs) {
        assert_eq!(decode(payload, &limits).unwrap(), spec.frame());
    }
}

proptest! {
    #[test]
    fn frames_survive_arbitrary_chunking(
        specs in proptest::collection::vec(spec(), 1..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let stream = encode_all(&specs);
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        let payloads = read_in_chunks(&stream, &cuts, Limits::default().max_frame_len);
        assert_decodes_to(&payloads, &specs);
    }

    #[test]
    fn frames_survive_small_fixed_size_chunks(
        specs in proptest::collection::vec(spec(), 1..6),
        chunk in 1usize..9,
    ) {
        let stream = encode_all(&specs);
        let cuts: Vec<usize> = (0..stream.len()).step_by(chunk).collect();
        let payloads = read_in_chunks(&stream, &cuts, Limits::default().max_frame_len);
        assert_decodes_to(&payloads, &specs);
    }

    #[test]
    fn a_bad_prefix_after_good_frames_fails_only_when_reached(
        specs in proptest::collection::vec(spec(), 1..6),
        bad_len in prop_oneof![Just(0u32), Just(Limits::default().max_frame_len + 1), Just(u32::MAX)],
        cut in any::<prop::sample::Index>(),
    ) {
        // Good frames, then a hostile length prefix: the reader returns the
        // good frames, then fails on the prefix alone (no payload follows).
        let mut stream = encode_all(&specs);
        let good_len = stream.len();
        stream.extend_from_slice(&bad_len.to_le_bytes());
        let cut = cut.index(good_len + 1);
        let mut reader = Reader::new(Limits::default().max_frame_len);
        let mut payloads = reader.feed(&stream[..cut]).unwrap();
        let mut err = None;
        // The rest one byte at a time: the error comes with the prefix's
        // last byte, not before, and not after buffering anything more.
        for at in cut..stream.len() {
            match reader.feed(&stream[at..=at]) {
                Ok(more) => payloads.extend(more),
                Err(e) => {
                    prop_assert_eq!(at, stream.len() - 1);
                    err = Some(e);
                    break;
                }
            }
        }
        let err = err.expect("bad prefix reported");
        if bad_len == 0 {
            prop_assert_eq!(err, Error::EmptyFrame);
        } else {
            prop_assert_eq!(err, Error::FrameTooLarge { len: bad_len, max: Limits::default().max_frame_len });
        }
        assert_decodes_to(&payloads, &specs);
    }
}

#[test]
fn one_byte_at_a_time_covers_every_boundary() {
    let specs: Vec<Spec> = (0..KIND_COUNT)
        .map(|kind| Spec {
            kind,
            n: [1, u64::MAX, 3, 0, 5],
            word: u32::MAX,
            half: 999,
            byte: 9,
            strings: [
                "first".into(),
                String::new(),
                "\u{1F426}".into(),
                "x".repeat(70),
            ],
            key: [0x42; DEVICE_KEY_LEN],
            flag: true,
            media: kind % 2 == 1,
        })
        .collect();
    let stream = encode_all(&specs);
    let cuts: Vec<usize> = (0..stream.len()).collect();
    let payloads = read_in_chunks(&stream, &cuts, Limits::default().max_frame_len);
    assert_decodes_to(&payloads, &specs);
    // Both message body shapes were in the stream.
    assert!(specs.iter().any(|s| s.kind == 9 && s.media));
    assert!(specs.iter().any(|s| s.kind == 11 && s.media));
}

#[test]
fn the_whole_stream_in_one_chunk_yields_every_frame_at_once() {
    let specs: Vec<Spec> = (0..KIND_COUNT)
        .map(|kind| Spec {
            kind,
            n: [0; 5],
            word: 0,
            half: 0,
            byte: 0,
            strings: Default::default(),
            key: [0; DEVICE_KEY_LEN],
            flag: false,
            media: kind % 2 == 0,
        })
        .collect();
    let stream = encode_all(&specs);
    let mut reader = Reader::new(Limits::default().max_frame_len);
    let payloads = reader.feed(&stream).unwrap();
    assert_eq!(reader.buffered(), 0);
    assert_decodes_to(&payloads, &specs);
}

#[test]
fn reader_rejects_an_oversized_prefix_before_buffering_its_payload() {
    let mut reader = Reader::new(64);
    let big = Spec {
        kind: 9,
        n: [1; 5],
        word: 0,
        half: 0,
        byte: 0,
        strings: ["y".repeat(100), String::new(), String::new(), String::new()],
        key: [0; DEVICE_KEY_LEN],
        flag: false,
        media: false,
    };
    let stream = encode_all(std::slice::from_ref(&big));
    assert_eq!(reader.feed(&stream[..3]), Ok(Vec::new()));
    let err = reader.feed(&stream[3..4]).unwrap_err();
    assert_eq!(
        err,
        Error::FrameTooLarge {
            len: (stream.len() - 4) as u32,
            max: 64
        }
    );
    assert_eq!(reader.buffered(), 4, "only the prefix was buffered");
}
