//! Fuzz target: arbitrary bytes through length-prefix framing and verified
//! decoding; every decoded frame must re-encode and decode to itself.
//! The checks live in `shared/decode_frame.rs` so that
//! `wire-format/tests/fuzz_corpus.rs` replays the corpus with the same code
//! on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../shared/decode_frame.rs"]
mod decode_frame;

fuzz_target!(|data: &[u8]| {
    let _outcome = decode_frame::run(data);
});
