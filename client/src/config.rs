//! Session limits and timers. Every bound the session keeps is here.

use tern_wire::MAX_FRAME_LEN_DEFAULT;

/// Default time a `Send`/`MarkRead` may wait for its `ServerAck` before it
/// is sent again with the same `client_msg_id`.
pub const RETRY_INTERVAL_MS_DEFAULT: u64 = 5_000;

/// Smallest accepted retry interval: a smaller one would resend in a hot
/// loop.
pub const RETRY_INTERVAL_MS_MIN: u64 = 10;

/// Default bound on operations waiting for their `ServerAck`.
pub const PENDING_LEN_MAX_DEFAULT: usize = 1024;

/// Default number of recent server inbox ids remembered to drop repeats.
pub const DEDUP_WINDOW_LEN_DEFAULT: usize = 4096;

/// Smallest accepted `max_frame_len`: every control frame (Ping, Pong,
/// DeliverAck, Login, MarkRead) fits well within it, so queuing one never
/// fails for size.
pub const MAX_FRAME_LEN_MIN: u32 = 256;

/// Default keepalive: a `Ping` after this long without sending anything.
pub const PING_INTERVAL_MS_DEFAULT: u64 = 30_000;

/// Limits and timers of a [`crate::ClientSession`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a `Send`/`MarkRead` waits for its `ServerAck` before it is
    /// sent again (same `client_msg_id`). Clamped to at least
    /// [`RETRY_INTERVAL_MS_MIN`].
    pub retry_interval_ms: u64,
    /// Operations that may wait for a `ServerAck` at once; one more makes
    /// `send_*`/`mark_read` return [`crate::ClientError::PendingFull`].
    pub pending_len_max: usize,
    /// Recent server inbox ids (messages and receipts) remembered so a
    /// repeat delivery yields no second event. 0 disables the check.
    pub dedup_window_len: usize,
    /// Keepalive: send a `Ping` after this long without sending anything.
    /// 0 disables keepalive.
    pub ping_interval_ms: u64,
    /// Largest frame payload accepted from the server and sent to it
    /// (length prefix excluded). Clamped to
    /// `MAX_FRAME_LEN_MIN..=MAX_FRAME_LEN_MAX`.
    pub max_frame_len: u32,
    /// Free text sent in `Hello`, for the server's logs.
    pub client_name: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            retry_interval_ms: RETRY_INTERVAL_MS_DEFAULT,
            pending_len_max: PENDING_LEN_MAX_DEFAULT,
            dedup_window_len: DEDUP_WINDOW_LEN_DEFAULT,
            ping_interval_ms: PING_INTERVAL_MS_DEFAULT,
            max_frame_len: MAX_FRAME_LEN_DEFAULT,
            client_name: concat!("tern-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}
