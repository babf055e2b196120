//! Owned events the session hands to the application, and owned message
//! bodies (the wire's borrowed views do not outlive the receive buffer).

use tern_wire::{DeviceKey, ErrorCode, KickReason, ReceiptKind, SHA256_LEN};

/// A reference to a media file uploaded over HTTP (owned form of
/// `tern_wire::Media`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRef {
    /// Where the file can be fetched.
    pub url: String,
    /// MIME type, e.g. `image/jpeg`.
    pub mime: String,
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the file content.
    pub sha256: [u8; SHA256_LEN],
    /// Small preview image, base64 encoded (may be empty).
    pub thumbnail_b64: String,
    /// Caption text (may be empty).
    pub caption: String,
}

/// A message's content, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// UTF-8 text.
    Text(String),
    /// A media reference.
    Media(MediaRef),
}

impl MessageBody {
    /// The borrowed wire view of this body, for encoding.
    pub fn as_wire(&self) -> tern_wire::Body<'_> {
        match self {
            Self::Text(text) => tern_wire::Body::Text(text),
            Self::Media(m) => tern_wire::Body::Media(tern_wire::Media {
                url: &m.url,
                mime: &m.mime,
                size: m.size,
                sha256: m.sha256,
                thumbnail_b64: &m.thumbnail_b64,
                caption: &m.caption,
            }),
        }
    }

    /// An owned copy of a wire body.
    pub fn from_wire(body: &tern_wire::Body<'_>) -> Self {
        match *body {
            tern_wire::Body::Text(text) => Self::Text(text.to_owned()),
            tern_wire::Body::Media(m) => Self::Media(MediaRef {
                url: m.url.to_owned(),
                mime: m.mime.to_owned(),
                size: m.size,
                sha256: m.sha256,
                thumbnail_b64: m.thumbnail_b64.to_owned(),
                caption: m.caption.to_owned(),
            }),
        }
    }
}

/// Why the session gave up on a pending operation by itself.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The server announced (`HelloOk.max_frame_len`) a frame bound smaller
    /// than this operation's encoded frame; it can never be accepted.
    TooLargeForServer {
        /// Encoded payload length.
        len: usize,
        /// The server's bound.
        max: u32,
    },
}

/// Something the application should know about, from
/// [`crate::ClientSession::poll_event`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The server answered `Hello`.
    HelloOk {
        /// The server's protocol version.
        protocol_version: u16,
        /// Free text naming the server.
        server_name: String,
        /// Largest frame the server accepts.
        max_frame_len: u32,
    },
    /// A PIN is on its way by SMS.
    PinSent {
        /// The number it was sent to.
        phone: String,
        /// Digits in the PIN.
        pin_len: u8,
        /// Seconds until the PIN expires.
        expires_in_s: u32,
    },
    /// `VerifyPin` succeeded: this device's key. Shown once; store it.
    Registered {
        /// The user id (the phone number's digits).
        user_id: u64,
        /// The device key, this device's password from now on.
        key: DeviceKey,
        /// Bumped each time the number is registered again.
        generation: u32,
    },
    /// Login succeeded; pending operations are being re-sent.
    LoggedIn {
        /// This user's id.
        user_id: u64,
        /// Inbox items waiting at login; they are streamed next.
        queued: u32,
        /// The server's clock.
        server_time_ms: u64,
    },
    /// Login was refused.
    LoginFailed {
        /// Why.
        code: ErrorCode,
        /// For people.
        message: String,
        /// When rate limited: wait this long before trying again.
        retry_after_ms: u32,
    },
    /// The operation `client_msg_id` is durable on the server (one check
    /// mark). Emitted once per operation.
    Acked {
        /// The operation's id (from `send_*` / `mark_read`).
        client_msg_id: u64,
        /// The server's id for it.
        server_msg_id: u64,
        /// Server time of the ack.
        timestamp_ms: u64,
    },
    /// A message from another user. Emitted once per inbox id within the
    /// dedup window; the `DeliverAck` is queued whatever happens.
    Message {
        /// The server's inbox id.
        id: u64,
        /// The sender's user id.
        from: u64,
        /// The sender's id for it (used in `mark_read`).
        client_msg_id: u64,
        /// When the sender sent it (server clock).
        sent_at_ms: u64,
        /// The content.
        body: MessageBody,
    },
    /// `peer` received or read the message this client sent as
    /// `client_msg_id`. Emitted once per inbox id within the dedup window.
    Receipt {
        /// The server's inbox id.
        id: u64,
        /// Delivered (two check marks) or read.
        kind: ReceiptKind,
        /// The recipient of the original message.
        peer: u64,
        /// The original message's `client_msg_id`.
        client_msg_id: u64,
        /// When it happened (server clock).
        at_ms: u64,
    },
    /// The server reported an error. When `client_msg_id` names a pending
    /// operation and the code is permanent, that operation is removed (not
    /// retried); transient codes (queue full, overloaded...) keep it pending.
    ServerError {
        /// The error code.
        code: ErrorCode,
        /// For people.
        message: String,
        /// The operation it answers, or 0.
        client_msg_id: u64,
        /// The server closes the connection after this.
        fatal: bool,
    },
    /// The session gave up on a pending operation by itself.
    Dropped {
        /// The operation.
        client_msg_id: u64,
        /// Why.
        reason: DropReason,
    },
    /// The server ended this session on purpose; it closes the connection.
    Kicked {
        /// Why. `DeviceReplaced` means this device key is dead.
        reason: KickReason,
        /// For people.
        message: String,
    },
    /// Answer to a `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}
