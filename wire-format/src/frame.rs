//! Typed, borrowed views of protocol frames. Built only from verified bytes
//! (see `decode`) or by protocol code that wants to send them (`Encoder`).

use std::fmt;

/// Length of a device key in bytes (256 bits).
pub const DEVICE_KEY_LEN: usize = 32;

/// Length of a SHA-256 digest in bytes.
pub const SHA256_LEN: usize = 32;

/// A device's secret, used as its password. Debug output never shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceKey(pub [u8; DEVICE_KEY_LEN]);

impl DeviceKey {
    /// The key as lowercase hex (64 characters), for the device's key file.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(DEVICE_KEY_LEN * 2);
        for b in self.0 {
            s.push(hex_digit(b >> 4));
            s.push(hex_digit(b & 0x0f));
        }
        s
    }

    /// Parses 64 hex characters; `None` for anything else.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.trim().as_bytes();
        if s.len() != DEVICE_KEY_LEN * 2 {
            return None;
        }
        let mut key = [0u8; DEVICE_KEY_LEN];
        for (out, pair) in key.iter_mut().zip(s.chunks_exact(2)) {
            let (&hi, &lo) = (pair.first()?, pair.get(1)?);
            *out = (hex_value(hi)? << 4) | hex_value(lo)?;
        }
        Some(Self(key))
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(
        b"0123456789abcdef"
            .get(usize::from(nibble & 0x0f))
            .copied()
            .unwrap_or(b'0'),
    )
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(<redacted>)")
    }
}

/// Stable numeric error codes (see docs/PROTOCOL.md). `Unknown` keeps codes
/// from newer peers instead of failing on them.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    MalformedFrame,
    FrameTooLarge,
    UnsupportedVersion,
    UnexpectedFrame,
    NotAuthenticated,
    PinRateLimited,
    PinInvalid,
    PinExpired,
    PinAttemptsExceeded,
    InvalidPhone,
    SmsFailed,
    LoginFailed,
    LoginRateLimited,
    LoginTimeout,
    UnknownRecipient,
    BodyTooLarge,
    BadMediaReference,
    QueueFull,
    ShardUnavailable,
    SlowConsumer,
    IdleTimeout,
    Internal,
    Overloaded,
    ShuttingDown,
    /// A code this build does not know (0 included).
    Unknown(u16),
}

impl ErrorCode {
    /// Every named code, for tables and tests.
    pub const ALL: [ErrorCode; 24] = [
        Self::MalformedFrame,
        Self::FrameTooLarge,
        Self::UnsupportedVersion,
        Self::UnexpectedFrame,
        Self::NotAuthenticated,
        Self::PinRateLimited,
        Self::PinInvalid,
        Self::PinExpired,
        Self::PinAttemptsExceeded,
        Self::InvalidPhone,
        Self::SmsFailed,
        Self::LoginFailed,
        Self::LoginRateLimited,
        Self::LoginTimeout,
        Self::UnknownRecipient,
        Self::BodyTooLarge,
        Self::BadMediaReference,
        Self::QueueFull,
        Self::ShardUnavailable,
        Self::SlowConsumer,
        Self::IdleTimeout,
        Self::Internal,
        Self::Overloaded,
        Self::ShuttingDown,
    ];

    /// The number on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            Self::MalformedFrame => 1,
            Self::FrameTooLarge => 2,
            Self::UnsupportedVersion => 3,
            Self::UnexpectedFrame => 4,
            Self::NotAuthenticated => 5,
            Self::PinRateLimited => 10,
            Self::PinInvalid => 11,
            Self::PinExpired => 12,
            Self::PinAttemptsExceeded => 13,
            Self::InvalidPhone => 14,
            Self::SmsFailed => 15,
            Self::LoginFailed => 20,
            Self::LoginRateLimited => 21,
            Self::LoginTimeout => 22,
            Self::UnknownRecipient => 30,
            Self::BodyTooLarge => 31,
            Self::BadMediaReference => 32,
            Self::QueueFull => 33,
            Self::ShardUnavailable => 34,
            Self::SlowConsumer => 40,
            Self::IdleTimeout => 41,
            Self::Internal => 50,
            Self::Overloaded => 51,
            Self::ShuttingDown => 52,
            Self::Unknown(n) => n,
        }
    }

    /// The code for a number from the wire.
    pub fn from_u16(n: u16) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| c.as_u16() == n)
            .unwrap_or(Self::Unknown(n))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(n) => write!(f, "Unknown({n})"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Why the server closed a session on purpose.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KickReason {
    /// The number was registered again on another device; this key is dead.
    DeviceReplaced,
    /// An operator kicked the user.
    AdminKick,
    /// The server is shutting down.
    ServerShutdown,
    /// Anything else, including reasons from newer servers.
    Other(u8),
}

impl KickReason {
    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Self::DeviceReplaced => 1,
            Self::AdminKick => 2,
            Self::ServerShutdown => 3,
            Self::Other(n) => n,
        }
    }

    pub(crate) fn from_u8(n: u8) -> Self {
        match n {
            1 => Self::DeviceReplaced,
            2 => Self::AdminKick,
            3 => Self::ServerShutdown,
            n => Self::Other(n),
        }
    }
}

/// What a receipt says about a sent message.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    /// The recipient's device has it (two check marks).
    Delivered,
    /// The recipient read it.
    Read,
    /// A kind from a newer server.
    Other(u8),
}

impl ReceiptKind {
    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Self::Delivered => 1,
            Self::Read => 2,
            Self::Other(n) => n,
        }
    }

    pub(crate) fn from_u8(n: u8) -> Self {
        match n {
            1 => Self::Delivered,
            2 => Self::Read,
            n => Self::Other(n),
        }
    }
}

/// A message's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// UTF-8 text.
    Text(&'a str),
    /// A reference to a file uploaded over HTTP.
    Media(Media<'a>),
}

/// A media reference: the file itself lives behind `url`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Media<'a> {
    pub url: &'a str,
    pub mime: &'a str,
    pub size: u64,
    pub sha256: [u8; SHA256_LEN],
    pub thumbnail_b64: &'a str,
    pub caption: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    pub protocol_version: u16,
    pub capabilities: u64,
    pub client_name: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloOk<'a> {
    pub protocol_version: u16,
    pub capabilities: u64,
    pub server_name: &'a str,
    pub max_frame_len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    pub user_id: u64,
    pub device_key: DeviceKey,
    pub device_generation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginError<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
    pub retry_after_ms: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorFrame<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
    pub client_msg_id: u64,
    pub fatal: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kicked<'a> {
    pub reason: KickReason,
    pub message: &'a str,
}

/// One protocol frame. Field meanings are in `schema/tern.fbs` and
/// docs/PROTOCOL.md.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Hello(Hello<'a>),
    HelloOk(HelloOk<'a>),
    RequestPin {
        phone: &'a str,
    },
    PinSent {
        phone: &'a str,
        pin_len: u8,
        expires_in_s: u32,
    },
    VerifyPin {
        phone: &'a str,
        pin: &'a str,
    },
    Registered(Registered),
    Login {
        user_id: u64,
        device_key: DeviceKey,
    },
    LoginOk {
        user_id: u64,
        queued: u32,
        server_time_ms: u64,
    },
    LoginError(LoginError<'a>),
    Send {
        client_msg_id: u64,
        to: u64,
        body: Body<'a>,
    },
    ServerAck {
        client_msg_id: u64,
        server_msg_id: u64,
        timestamp_ms: u64,
    },
    Deliver {
        id: u64,
        from: u64,
        client_msg_id: u64,
        sent_at_ms: u64,
        body: Body<'a>,
    },
    DeliverAck {
        id: u64,
    },
    MarkRead {
        client_msg_id: u64,
        to: u64,
        read_client_msg_id: u64,
    },
    Receipt {
        id: u64,
        kind: ReceiptKind,
        peer: u64,
        client_msg_id: u64,
        at_ms: u64,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Error(ErrorFrame<'a>),
    Kicked(Kicked<'a>),
}

/// The kind of a frame, without its fields: for metrics, logs and state
/// checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Hello,
    HelloOk,
    RequestPin,
    PinSent,
    VerifyPin,
    Registered,
    Login,
    LoginOk,
    LoginError,
    Send,
    ServerAck,
    Deliver,
    DeliverAck,
    MarkRead,
    Receipt,
    Ping,
    Pong,
    Error,
    Kicked,
}

impl Frame<'_> {
    /// This frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Self::Hello(_) => FrameKind::Hello,
            Self::HelloOk(_) => FrameKind::HelloOk,
            Self::RequestPin { .. } => FrameKind::RequestPin,
            Self::PinSent { .. } => FrameKind::PinSent,
            Self::VerifyPin { .. } => FrameKind::VerifyPin,
            Self::Registered(_) => FrameKind::Registered,
            Self::Login { .. } => FrameKind::Login,
            Self::LoginOk { .. } => FrameKind::LoginOk,
            Self::LoginError(_) => FrameKind::LoginError,
            Self::Send { .. } => FrameKind::Send,
            Self::ServerAck { .. } => FrameKind::ServerAck,
            Self::Deliver { .. } => FrameKind::Deliver,
            Self::DeliverAck { .. } => FrameKind::DeliverAck,
            Self::MarkRead { .. } => FrameKind::MarkRead,
            Self::Receipt { .. } => FrameKind::Receipt,
            Self::Ping { .. } => FrameKind::Ping,
            Self::Pong { .. } => FrameKind::Pong,
            Self::Error(_) => FrameKind::Error,
            Self::Kicked(_) => FrameKind::Kicked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_key_hex_round_trips_and_rejects_junk() {
        let key = DeviceKey(core::array::from_fn(|i| u8::try_from(i * 7).unwrap()));
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(DeviceKey::from_hex(&hex), Some(key));
        assert_eq!(DeviceKey::from_hex(&hex.to_uppercase()), Some(key));
        assert_eq!(DeviceKey::from_hex(&hex[..63]), None);
        assert_eq!(DeviceKey::from_hex(&format!("{}zz", &hex[..62])), None);
        assert_eq!(format!("{key:?}"), "DeviceKey(<redacted>)");
    }

    #[test]
    fn error_codes_round_trip_and_unknown_is_kept() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), code);
        }
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Unknown(999));
        assert_eq!(ErrorCode::from_u16(0), ErrorCode::Unknown(0));
    }
}
