//! The crate's one error type.

use std::fmt;

use crate::frame::ErrorCode;

/// Why a frame could not be read or written.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The length prefix announces more than the configured bound.
    FrameTooLarge {
        /// Announced payload length.
        len: u32,
        /// Configured bound.
        max: u32,
    },
    /// The length prefix is zero; no frame is empty.
    EmptyFrame,
    /// The payload is not a valid `Frame` (verifier or field checks).
    Malformed(MalformedReason),
    /// A well-formed frame of a kind this build does not know (a newer
    /// peer). The connection may stay open.
    UnknownFrameType(u8),
    /// Encoding produced more than `max_frame_len` bytes.
    EncodeTooLarge {
        /// Encoded payload length.
        len: usize,
        /// Configured bound.
        max: u32,
    },
}

/// Detail for [`Error::Malformed`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MalformedReason {
    /// The FlatBuffers verifier rejected the buffer.
    Verifier(flatbuffers::InvalidFlatbuffer),
    /// A field the protocol requires is absent.
    MissingField(&'static str),
    /// A fixed-size byte field has the wrong length.
    BadFieldLength {
        /// Field name.
        field: &'static str,
        /// Required length in bytes.
        expected: usize,
        /// Received length in bytes.
        got: usize,
    },
    /// A union member's type tag is not one this build knows.
    UnknownUnionType {
        /// Union name.
        union: &'static str,
        /// Received tag.
        tag: u8,
    },
}

impl Error {
    /// The protocol error code a server sends before closing the connection
    /// over this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } | Self::EncodeTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::EmptyFrame | Self::Malformed(_) => ErrorCode::MalformedFrame,
            Self::UnknownFrameType(_) => ErrorCode::UnexpectedFrame,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max} byte limit")
            }
            Self::EmptyFrame => write!(f, "frame length prefix is zero"),
            Self::Malformed(reason) => write!(f, "malformed frame: {reason}"),
            Self::UnknownFrameType(tag) => write!(f, "unknown frame type {tag}"),
            Self::EncodeTooLarge { len, max } => {
                write!(
                    f,
                    "encoded frame of {len} bytes exceeds the {max} byte limit"
                )
            }
        }
    }
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Verifier(e) => write!(f, "verifier: {e}"),
            Self::MissingField(name) => write!(f, "missing required field `{name}`"),
            Self::BadFieldLength {
                field,
                expected,
                got,
            } => write!(f, "field `{field}` is {got} bytes, expected {expected}"),
            Self::UnknownUnionType { union, tag } => {
                write!(f, "unknown `{union}` type tag {tag}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<MalformedReason> for Error {
    fn from(reason: MalformedReason) -> Self {
        Self::Malformed(reason)
    }
}
