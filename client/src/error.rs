//! The crate's one error type, with reason enums for the details (rustls
//! style). Network input ends in one of these, never in a panic.

use std::fmt;
use std::path::PathBuf;

use tern_wire::{ErrorCode, FrameKind, KickReason};

/// Everything that can go wrong in the client: session, driver, TLS setup.
#[non_exhaustive]
#[derive(Debug)]
pub enum ClientError {
    /// A frame from the server failed framing or verification (bad length
    /// prefix, verifier rejection, missing field). The connection is broken:
    /// close it and reconnect.
    MalformedFrame(tern_wire::Error),
    /// A well-formed server frame that breaks the protocol. The connection
    /// is broken: close it and reconnect.
    Protocol(ProtocolReason),
    /// An outbound frame could not be encoded (it exceeds the frame bound).
    /// Nothing was queued.
    Encode(tern_wire::Error),
    /// `pending_len_max` operations already wait for their `ServerAck`;
    /// nothing was queued. Retry after some are acknowledged.
    PendingFull {
        /// The configured bound.
        pending_len_max: usize,
    },
    /// A caller-supplied value is unusable.
    InvalidArgument(ArgumentReason),
    /// The operation needs a connected transport.
    NotConnected,
    /// An earlier inbound error broke this connection; reset the transport
    /// (`on_disconnected` / `on_connected`) first.
    ConnectionBroken,
    /// The server closed the connection.
    ConnectionClosed,
    /// A socket operation failed.
    Io(std::io::Error),
    /// The TLS layer failed (handshake, certificate, alert).
    Tls(rustls::Error),
    /// The TLS or address configuration is unusable.
    Config(ConfigReason),
    /// A blocking wait ran out of time.
    TimedOut {
        /// What was being waited for.
        waiting_for: &'static str,
    },
    /// The server refused an operation the caller waited for (login, PIN,
    /// send).
    Rejected {
        /// The server's error code.
        code: ErrorCode,
        /// The server's message, for people.
        message: String,
    },
    /// The server ended this session on purpose.
    Kicked {
        /// Why.
        reason: KickReason,
        /// The server's message, for people.
        message: String,
    },
}

/// Detail for [`ClientError::Protocol`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolReason {
    /// The server sent a frame only clients send (Hello, Login, Send...).
    UnexpectedFrame(FrameKind),
}

/// Detail for [`ClientError::InvalidArgument`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgumentReason {
    /// Not an E.164 phone number (`+` then 1 to 15 digits, no leading 0).
    InvalidPhone(String),
    /// Neither a phone number nor a non-zero numeric user id.
    InvalidRecipient(String),
    /// The client message id counter reached `u64::MAX`.
    ClientMsgIdExhausted,
    /// A key file could not be parsed.
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

/// Detail for [`ClientError::Config`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigReason {
    /// The CA/certificate PEM file could not be read or parsed.
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The CA/certificate PEM file holds no certificate.
    NoCertificates(PathBuf),
    /// A certificate from the PEM file was refused as a trust anchor.
    BadTrustAnchor(String),
    /// The pinned fingerprint is not 32 bytes of hex.
    BadFingerprint(String),
    /// The TLS server name is neither a DNS name nor an IP address.
    InvalidServerName(String),
    /// The server address is not `HOST:PORT` or does not resolve.
    BadAddress(String),
    /// rustls refused the configuration (protocol versions, provider).
    Tls(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedFrame(e) => write!(f, "malformed frame from server: {e}"),
            Self::Protocol(reason) => write!(f, "protocol violation by server: {reason}"),
            Self::Encode(e) => write!(f, "cannot encode frame: {e}"),
            Self::PendingFull { pending_len_max } => write!(
                f,
                "{pending_len_max} operations already wait for the server's ack"
            ),
            Self::InvalidArgument(reason) => write!(f, "invalid argument: {reason}"),
            Self::NotConnected => write!(f, "not connected"),
            Self::ConnectionBroken => {
                write!(f, "connection broken by an earlier error; reconnect first")
            }
            Self::ConnectionClosed => write!(f, "connection closed by the server"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Tls(e) => write!(f, "tls error: {e}"),
            Self::Config(reason) => write!(f, "configuration error: {reason}"),
            Self::TimedOut { waiting_for } => write!(f, "timed out waiting for {waiting_for}"),
            Self::Rejected { code, message } => write!(f, "server refused: {code}: {message}"),
            Self::Kicked { reason, message } => {
                write!(f, "kicked by server ({reason:?}): {message}")
            }
        }
    }
}

impl fmt::Display for ProtocolReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedFrame(kind) => write!(f, "unexpected {kind:?} frame"),
        }
    }
}

impl fmt::Display for ArgumentReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPhone(s) => write!(
                f,
                "`{s}` is not an E.164 phone number (`+` then 1-15 digits, e.g. +15551234567)"
            ),
            Self::InvalidRecipient(s) => {
                write!(f, "`{s}` is neither a phone number nor a user id")
            }
            Self::ClientMsgIdExhausted => write!(f, "client message ids exhausted"),
            Self::BadKeyFile { path, detail } => {
                write!(f, "bad key file {}: {detail}", path.display())
            }
        }
    }
}

impl fmt::Display for ConfigReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CaFile { path, detail } => {
                write!(
                    f,
                    "cannot read certificates from {}: {detail}",
                    path.display()
                )
            }
            Self::NoCertificates(path) => write!(f, "no certificate in {}", path.display()),
            Self::BadTrustAnchor(detail) => write!(f, "unusable trust anchor: {detail}"),
            Self::BadFingerprint(detail) => write!(
                f,
                "bad SHA-256 fingerprint ({detail}): expected 64 hex digits, colons allowed"
            ),
            Self::InvalidServerName(name) => write!(f, "invalid TLS server name `{name}`"),
            Self::BadAddress(detail) => write!(f, "bad server address: {detail}"),
            Self::Tls(detail) => write!(f, "tls setup: {detail}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::MalformedFrame(e) | Self::Encode(e) => Some(e),
            Self::Io(e) => Some(e),
            Self::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ClientError {
    /// rustls reports TLS failures through `io::Error`s that wrap a
    /// `rustls::Error`; those become [`ClientError::Tls`].
    fn from(e: std::io::Error) -> Self {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned();
        match tls {
            Some(tls) => Self::Tls(tls),
            None => Self::Io(e),
        }
    }
}

impl From<rustls::Error> for ClientError {
    fn from(e: rustls::Error) -> Self {
        Self::Tls(e)
    }
}
