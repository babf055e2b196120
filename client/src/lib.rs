//! Tern client SDK.
//!
//! - [`ClientSession`] (`session/`): the sans-IO protocol state machine.
//!   Bytes in (`handle_bytes`), bytes out (`poll_transmit`), owned
//!   [`Event`]s out (`poll_event`), time passed in (`poll_timeout` /
//!   `handle_timeout`). It keeps unacknowledged sends and re-sends them with
//!   the same `client_msg_id`, acknowledges every delivery and hides
//!   repeats, and survives reconnects.
//! - [`Client`] (`driver/`): a blocking driver over TCP + TLS 1.3 (rustls,
//!   ring), trusting a CA file, a pinned certificate fingerprint, or, named
//!   loudly, plaintext ([`Trust`], `tls.rs`).
//! - [`Credentials`]: a device's user id and key, and its 0600 key file.
//! - [`Phone`], [`parse_recipient`], [`client_msg_id_seed`]: identifiers.
//!
//! The `tern-chat` binary (`src/bin/tern_chat/`) is a command-line chat
//! client built on these.

mod config;
mod credentials;
mod driver;
mod error;
mod event;
mod ids;
mod session;
mod tls;

pub use config::{
    SessionConfig, DEDUP_WINDOW_LEN_DEFAULT, MAX_FRAME_LEN_MIN, PENDING_LEN_MAX_DEFAULT,
    PING_INTERVAL_MS_DEFAULT, RETRY_INTERVAL_MS_DEFAULT, RETRY_INTERVAL_MS_MIN,
};
pub use credentials::{Credentials, KEY_FILE_LEN_MAX};
pub use driver::{
    Acked, Client, DriverConfig, PinSent, CONNECT_TIMEOUT_MS_DEFAULT, DEFAULT_PORT, DEFAULT_SERVER,
    WRITE_TIMEOUT_MS_DEFAULT,
};
pub use error::{ArgumentReason, ClientError, ConfigReason, ProtocolReason};
pub use event::{DropReason, Event, MediaRef, MessageBody};
pub use ids::{client_msg_id_seed, display_user_id, parse_recipient, Phone, E164_DIGITS_MAX};
pub use session::ClientSession;
pub use tls::{client_config, crypto_provider, CertFingerprint, Trust, FINGERPRINT_LEN};

/// Re-exported wire types that appear in this crate's API.
pub use tern_wire::{DeviceKey, ErrorCode, KickReason, ReceiptKind};
