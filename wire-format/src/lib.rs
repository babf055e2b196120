//! Tern wire protocol.
//!
//! A frame on the wire is a `u32` little-endian length followed by that many
//! bytes holding one FlatBuffers `Frame` table (`schema/tern.fbs`).
//!
//! Reading is two steps, as in mini-redis: [`framing::check`] looks at the
//! length prefix only (rejecting oversized frames before anything is
//! allocated; [`framing::Check::Incomplete`] is a normal outcome), then
//! [`decode`] runs the FlatBuffers verifier with tight [`Limits`] and turns
//! the verified buffer into a typed, borrowed [`Frame`]. Nothing reads a
//! field of unverified bytes.
//!
//! Writing goes through [`Encoder`], which reuses one builder so steady-state
//! encoding does not allocate.

mod decode;
mod encode;
mod error;
mod frame;
pub mod framing;
mod generated;
mod limits;

pub use decode::decode;
pub use encode::Encoder;
pub use error::{Error, MalformedReason};
pub use frame::{
    Body, DeviceKey, ErrorCode, ErrorFrame, Frame, FrameKind, Hello, HelloOk, KickReason, Kicked,
    LoginError, Media, ReceiptKind, Registered, DEVICE_KEY_LEN, SHA256_LEN,
};
pub use limits::{Limits, ALPN, MAX_FRAME_LEN_DEFAULT, MAX_FRAME_LEN_MAX, PROTOCOL_VERSION};

/// The raw generated FlatBuffers API, for benchmarks and hand-built hostile
/// test frames. Protocol code uses [`Frame`].
pub mod raw {
    pub use crate::generated::*;
}
