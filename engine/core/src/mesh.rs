//! Messages between shards. The runtime carries them over the cross-core
//! mesh in per-tick batches; the core only builds and consumes them.

use tern_wire::{Body, ErrorCode, Media, ReceiptKind, SHA256_LEN};

use crate::conn::ConnId;
use crate::user::UserId;

/// A connection on some shard, for replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub shard: u16,
    pub conn: ConnId,
}

/// A message body owned for the trip between shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedBody {
    Text(Box<str>),
    Media(Box<OwnedMedia>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedMedia {
    pub url: Box<str>,
    pub mime: Box<str>,
    pub size: u64,
    pub sha256: [u8; SHA256_LEN],
    pub thumbnail_b64: Box<str>,
    pub caption: Box<str>,
}

impl OwnedBody {
    pub fn from_body(body: &Body<'_>) -> Self {
        match body {
            Body::Text(t) => Self::Text((*t).into()),
            Body::Media(m) => Self::Media(Box::new(OwnedMedia {
                url: m.url.into(),
                mime: m.mime.into(),
                size: m.size,
                sha256: m.sha256,
                thumbnail_b64: m.thumbnail_b64.into(),
                caption: m.caption.into(),
            })),
        }
    }

    pub fn as_body(&self) -> Body<'_> {
        match self {
            Self::Text(t) => Body::Text(t),
            Self::Media(m) => Body::Media(Media {
                url: &m.url,
                mime: &m.mime,
                size: m.size,
                sha256: m.sha256,
                thumbnail_b64: &m.thumbnail_b64,
                caption: &m.caption,
            }),
        }
    }
}

/// What a client operation asks the recipient's home shard to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreContent {
    /// A chat message (from `Send`).
    Message(OwnedBody),
    /// A read receipt (from `MarkRead`) for the recipient's message
    /// `read_client_msg_id`.
    Read { read_client_msg_id: u64 },
}

/// One shard asking another to store an item for a user it homes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreReq {
    pub from: UserId,
    pub client_msg_id: u64,
    pub to: UserId,
    pub sent_at_ms: u64,
    pub reply: ConnRef,
    pub content: StoreContent,
}

/// The answer to a [`StoreReq`], sent back to the origin connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreResult {
    pub conn: ConnId,
    pub client_msg_id: u64,
    /// When the origin shard received the operation (for latency).
    pub sent_at_ms: u64,
    pub outcome: Result<Stored, ErrorCode>,
}

/// A stored operation: the ServerAck fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub server_msg_id: u64,
    pub timestamp_ms: u64,
}

/// A server-made receipt for a user homed on the receiving shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptPush {
    pub to: UserId,
    pub kind: ReceiptKind,
    pub peer: UserId,
    pub client_msg_id: u64,
    pub at_ms: u64,
}

/// Everything the core sends between shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshMsg {
    Store(Box<StoreReq>),
    StoreResult(StoreResult),
    Receipt(ReceiptPush),
}
