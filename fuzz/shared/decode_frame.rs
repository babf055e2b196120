//! The checks of the `decode_frame` fuzz target, shared with the stable test
//! `wire-format/tests/fuzz_corpus.rs` (included there with `#[path]`), so the
//! committed corpus is replayed by `cargo test` exactly as the fuzzer runs it.
//!
//! Properties, for any input bytes:
//! - nothing panics (framing, decoding, error formatting);
//! - `framing::split` consumes a whole frame and never more than the buffer;
//! - a frame that decodes re-encodes, and the re-encoding decodes to the same
//!   frame; encoding that frame again gives the same bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code
)]

use tern_wire::{decode, framing, Encoder, Error, Frame, Limits, MAX_FRAME_LEN_MAX};

/// What one run saw; the corpus test checks the seeds reach every path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Frames split off the stream and decoded.
    pub(crate) frames_decoded: usize,
    /// Frames split off the stream that failed to decode.
    pub(crate) frames_rejected: usize,
    /// The stream ended on a framing error (zero or oversized length).
    pub(crate) framing_error: bool,
    /// The whole input, taken as one payload without a prefix, decoded.
    pub(crate) whole_input_decoded: bool,
}

/// Runs `data` through the reader path (split in a loop, then decode) with
/// the default limits, and also decodes `data` as a bare payload.
pub(crate) fn run(data: &[u8]) -> Outcome {
    let limits = Limits::default();
    // Re-encoding may legitimately need more room than the input: a hostile
    // sender can point several string fields at one string, which the
    // encoder then writes out once per field. The verifier's apparent-size
    // bound (2x the frame bound) caps that, far below MAX_FRAME_LEN_MAX.
    let relay_limits = Limits::with_max_frame_len(MAX_FRAME_LEN_MAX);
    let mut encoder = Encoder::new(&relay_limits);
    let mut outcome = Outcome::default();

    let mut rest = data;
    loop {
        match framing::split(rest, limits.max_frame_len) {
            Ok(Some((payload, consumed))) => {
                assert_eq!(consumed, framing::LEN_PREFIX_BYTES + payload.len());
                assert!(consumed <= rest.len());
                assert!(!payload.is_empty());
                assert!(payload.len() <= limits.max_frame_len as usize);
                match decode(payload, &limits) {
                    Ok(frame) => {
                        check_reencode(&mut encoder, &frame, &relay_limits);
                        outcome.frames_decoded += 1;
                    }
                    Err(e) => {
                        check_error(&e);
                        outcome.frames_rejected += 1;
                    }
                }
                rest = &rest[consumed..];
            }
            Ok(None) => {
                assert!(
                    rest.len() < framing::LEN_PREFIX_BYTES || {
                        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                        (len as usize) > rest.len() - framing::LEN_PREFIX_BYTES
                    }
                );
                break;
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::EmptyFrame | Error::FrameTooLarge { .. }),
                    "framing can only fail on the length prefix: {e:?}"
                );
                check_error(&e);
                outcome.framing_error = true;
                break;
            }
        }
    }

    match decode(data, &limits) {
        Ok(frame) => {
            check_reencode(&mut encoder, &frame, &relay_limits);
            outcome.whole_input_decoded = true;
        }
        Err(e) => check_error(&e),
    }
    outcome
}

fn check_error(e: &Error) {
    // Formatting and classification must not panic on any error.
    let text = e.to_string();
    assert!(!text.is_empty());
    let _code = e.code();
    assert!(
        !matches!(e, Error::EncodeTooLarge { .. }),
        "decoding never reports an encode error"
    );
}

fn check_reencode(encoder: &mut Encoder, frame: &Frame<'_>, limits: &Limits) {
    let mut out = vec![0xAA];
    let written = encoder
        .encode(frame, &mut out)
        .expect("a decoded frame re-encodes");
    assert_eq!(written + 1, out.len());
    let encoded = &out[1..];
    let (payload, consumed) = framing::split(encoded, limits.max_frame_len)
        .expect("encoder output has a valid prefix")
        .expect("encoder output is one whole frame");
    assert_eq!(consumed, encoded.len());
    let again = decode(payload, limits).expect("re-encoded frame decodes");
    assert_eq!(&again, frame);
    assert_eq!(again.kind(), frame.kind());

    let mut second = Vec::new();
    encoder
        .encode(&again, &mut second)
        .expect("a decoded frame re-encodes");
    assert_eq!(second, encoded, "encoding is deterministic");
}
