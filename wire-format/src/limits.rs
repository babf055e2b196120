//! Bounds on what a peer may send. Every inbound frame is checked against
//! these before any field is read.

use flatbuffers::VerifierOptions;

/// Protocol version spoken by this crate (Hello/HelloOk).
pub const PROTOCOL_VERSION: u16 = 1;

/// TLS ALPN protocol id of this protocol, offered by clients and selected
/// by the server.
pub const ALPN: &[u8] = b"tern/1";

/// Default largest frame payload (length prefix excluded): 64 KiB. A text
/// message, or a media reference with a small thumbnail, fits with room.
pub const MAX_FRAME_LEN_DEFAULT: u32 = 64 * 1024;

/// Largest value `max_frame_len` may be configured to: 16 MiB. Media goes
/// over HTTP; a frame never needs to be bigger than this.
pub const MAX_FRAME_LEN_MAX: u32 = 16 * 1024 * 1024;

/// Deepest legitimate nesting is Frame -> Deliver -> Media -> vector (4);
/// 8 leaves room for growth while stopping deep-nesting attacks.
const VERIFIER_DEPTH_MAX: usize = 8;

/// A legitimate frame holds at most 3 tables (Frame, body, message body).
const VERIFIER_TABLES_MAX: usize = 16;

/// Limits applied to inbound frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted frame payload in bytes (length prefix excluded).
    pub max_frame_len: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: MAX_FRAME_LEN_DEFAULT,
        }
    }
}

impl Limits {
    /// Limits with the given frame size, clamped to `1..=MAX_FRAME_LEN_MAX`.
    pub fn with_max_frame_len(max_frame_len: u32) -> Self {
        Self {
            max_frame_len: max_frame_len.clamp(1, MAX_FRAME_LEN_MAX),
        }
    }

    pub(crate) fn verifier_options(&self) -> VerifierOptions {
        VerifierOptions {
            max_depth: VERIFIER_DEPTH_MAX,
            max_tables: VERIFIER_TABLES_MAX,
            // The builder shares vtables between tables, so a legitimate
            // frame's apparent (tree-expanded) size can exceed its byte size
            // a little; twice the frame bound still stops DAG blow-ups.
            max_apparent_size: (self.max_frame_len as usize).saturating_mul(2),
            ignore_missing_null_terminator: false,
        }
    }
}
