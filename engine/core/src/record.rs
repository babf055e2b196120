//! The shard's log records: what the core asks the runtime to make durable,
//! and what recovery replays. The log (tern-log) stores `(kind, payload)`
//! with its own length and CRC32C; this module owns the payload layout.
//!
//! Layout: little-endian fixed-width fields; byte strings as a u32 length
//! then the bytes. Versioning: a new record kind gets a new number; a field
//! appended to a kind is read only when present (older payloads are
//! shorter).

use std::fmt;

use tern_wire::ReceiptKind;

use crate::account::{AccountEvent, KeyHash};
use crate::inbox::Item;
use crate::user::UserId;

/// Record kinds on disk. Never renumber.
pub const KIND_ITEM_STORED: u8 = 1;
pub const KIND_ITEM_ACKED: u8 = 2;
pub const KIND_ACCOUNT: u8 = 3;

/// Largest stored body (an encoded Deliver frame); matches the largest frame
/// the protocol allows, so a record can always hold one.
pub const BODY_BYTES_MAX: usize = tern_wire::MAX_FRAME_LEN_MAX as usize + 4;

/// One durable fact about a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An inbox item was stored for `to`. `dedup` is the sender's
    /// `(user, client_msg_id)` when the item came from a client operation.
    ItemStored {
        to: UserId,
        dedup: Option<(UserId, u64)>,
        item: Item,
    },
    /// `user`'s device acknowledged inbox item `id`: it is gone.
    ItemAcked { user: UserId, id: u64 },
    /// An account change (registration).
    Account(AccountEvent),
}

/// Why a payload could not be read.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// A kind this build does not know.
    UnknownKind(u8),
    /// The payload ended inside a field.
    Truncated { field: &'static str },
    /// A field holds an impossible value.
    BadValue { field: &'static str },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            Self::Truncated { field } => write!(f, "record ends inside `{field}`"),
            Self::BadValue { field } => write!(f, "record field `{field}` is invalid"),
        }
    }
}

impl std::error::Error for RecordError {}

impl Record {
    /// The record's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Self::ItemStored { .. } => KIND_ITEM_STORED,
            Self::ItemAcked { .. } => KIND_ITEM_ACKED,
            Self::Account(_) => KIND_ACCOUNT,
        }
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::ItemStored { to, dedup, item } => {
                put_u64(out, to.0);
                match dedup {
                    Some((from, cmid)) => {
                        out.push(1);
                        put_u64(out, from.0);
                        put_u64(out, *cmid);
                    }
                    None => out.push(0),
                }
                match item {
                    Item::Message {
                        id,
                        from,
                        client_msg_id,
                        sent_at_ms,
                        body,
                    } => {
                        out.push(1);
                        put_u64(out, *id);
                        put_u64(out, from.0);
                        put_u64(out, *client_msg_id);
                        put_u64(out, *sent_at_ms);
                        // Bodies are bounded far below u32::MAX
                        // (BODY_BYTES_MAX); saturate rather than wrap.
                        put_u32(out, u32::try_from(body.len()).unwrap_or(u32::MAX));
                        out.extend_from_slice(body);
                    }
                    Item::Receipt {
                        id,
                        kind,
                        peer,
                        client_msg_id,
                        at_ms,
                    } => {
                        out.push(2);
                        put_u64(out, *id);
                        out.push(receipt_kind_byte(*kind));
                        put_u64(out, peer.0);
                        put_u64(out, *client_msg_id);
                        put_u64(out, *at_ms);
                    }
                }
            }
            Self::ItemAcked { user, id } => {
                put_u64(out, user.0);
                put_u64(out, *id);
            }
            Self::Account(AccountEvent::Registered {
                user,
                generation,
                key_hash,
            }) => {
                out.push(1);
                put_u64(out, user.0);
                put_u32(out, *generation);
                out.extend_from_slice(key_hash);
            }
        }
    }

    /// Reads a payload of `kind`.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self, RecordError> {
        Self::decode_inner(kind, payload, true).map(|(record, _)| record)
    }

    /// Like `decode`, but a message's body is checked and measured, not
    /// copied: the item comes back with an empty body, and the body's
    /// length is returned beside it. For replay, which leaves bodies on
    /// disk (allocating each one only to drop it costs time and leaves the
    /// allocator fragmented).
    pub fn decode_without_body(kind: u8, payload: &[u8]) -> Result<(Self, usize), RecordError> {
        Self::decode_inner(kind, payload, false)
    }

    fn decode_inner(
        kind: u8,
        payload: &[u8],
        keep_body: bool,
    ) -> Result<(Self, usize), RecordError> {
        let mut body_len = 0;
        let record = Self::decode_fields(kind, payload, keep_body, &mut body_len)?;
        Ok((record, body_len))
    }

    fn decode_fields(
        kind: u8,
        payload: &[u8],
        keep_body: bool,
        body_len: &mut usize,
    ) -> Result<Self, RecordError> {
        let mut r = Reader { buf: payload };
        match kind {
            KIND_ITEM_STORED => {
                let to = UserId(r.u64("to")?);
                let dedup = match r.u8("dedup")? {
                    0 => None,
                    1 => Some((UserId(r.u64("dedup.from")?), r.u64("dedup.cmid")?)),
                    _ => return Err(RecordError::BadValue { field: "dedup" }),
                };
                let item = match r.u8("item")? {
                    1 => {
                        let id = r.u64("id")?;
                        let from = UserId(r.u64("from")?);
                        let client_msg_id = r.u64("client_msg_id")?;
                        let sent_at_ms = r.u64("sent_at_ms")?;
                        let len = r.u32("body.len")? as usize;
                        if len > BODY_BYTES_MAX {
                            return Err(RecordError::BadValue { field: "body.len" });
                        }
                        let bytes = r.bytes(len, "body")?;
                        *body_len = len;
                        let body = if keep_body {
                            bytes.into()
                        } else {
                            Box::default()
                        };
                        Item::Message {
                            id,
                            from,
                            client_msg_id,
                            sent_at_ms,
                            body,
                        }
                    }
                    2 => Item::Receipt {
                        id: r.u64("id")?,
                        kind: receipt_kind(r.u8("kind")?)?,
                        peer: UserId(r.u64("peer")?),
                        client_msg_id: r.u64("client_msg_id")?,
                        at_ms: r.u64("at_ms")?,
                    },
                    _ => return Err(RecordError::BadValue { field: "item" }),
                };
                Ok(Self::ItemStored { to, dedup, item })
            }
            KIND_ITEM_ACKED => Ok(Self::ItemAcked {
                user: UserId(r.u64("user")?),
                id: r.u64("id")?,
            }),
            KIND_ACCOUNT => match r.u8("event")? {
                1 => {
                    let user = UserId(r.u64("user")?);
                    let generation = r.u32("generation")?;
                    let mut key_hash: KeyHash = [0; 32];
                    key_hash.copy_from_slice(r.bytes(32, "key_hash")?);
                    Ok(Self::Account(AccountEvent::Registered {
                        user,
                        generation,
                        key_hash,
                    }))
                }
                _ => Err(RecordError::BadValue { field: "event" }),
            },
            other => Err(RecordError::UnknownKind(other)),
        }
    }
}

fn receipt_kind_byte(kind: ReceiptKind) -> u8 {
    match kind {
        ReceiptKind::Delivered => 1,
        ReceiptKind::Read => 2,
        ReceiptKind::Other(n) => n,
        // ReceiptKind is non_exhaustive; a future kind is stored as "other".
        _ => 0,
    }
}

fn receipt_kind(b: u8) -> Result<ReceiptKind, RecordError> {
    match b {
        1 => Ok(ReceiptKind::Delivered),
        2 => Ok(ReceiptKind::Read),
        _ => Err(RecordError::BadValue { field: "kind" }),
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated { field });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        Ok(self.bytes(1, field)?.first().copied().unwrap_or(0))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.bytes(4, field)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, RecordError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.bytes(8, field)?);
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        vec![
            Record::ItemStored {
                to: UserId(15550000002),
                dedup: Some((UserId(15550000001), 77)),
                item: Item::Message {
                    id: 1 << 54 | 9,
                    from: UserId(15550000001),
                    client_msg_id: 77,
                    sent_at_ms: 1_790_000_000_000,
                    body: vec![1, 2, 3, 4, 5].into_boxed_slice(),
                },
            },
            Record::ItemStored {
                to: UserId(15550000001),
                dedup: None,
                item: Item::Receipt {
                    id: 10,
                    kind: ReceiptKind::Delivered,
                    peer: UserId(15550000002),
                    client_msg_id: 77,
                    at_ms: 5,
                },
            },
            Record::ItemStored {
                to: UserId(15550000001),
                dedup: Some((UserId(15550000002), 3)),
                item: Item::Receipt {
                    id: 11,
                    kind: ReceiptKind::Read,
                    peer: UserId(15550000002),
                    client_msg_id: 77,
                    at_ms: 6,
                },
            },
            Record::ItemAcked {
                user: UserId(15550000002),
                id: 9,
            },
            Record::Account(AccountEvent::Registered {
                user: UserId(15550000003),
                generation: 4,
                key_hash: [0xab; 32],
            }),
        ]
    }

    #[test]
    fn every_record_round_trips_and_every_truncation_is_an_error() {
        for rec in samples() {
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            assert_eq!(Record::decode(rec.kind(), &buf), Ok(rec.clone()));
            for cut in 0..buf.len() {
                assert!(
                    Record::decode(rec.kind(), &buf[..cut]).is_err(),
                    "{rec:?} cut at {cut}"
                );
            }
        }
        assert_eq!(Record::decode(99, &[]), Err(RecordError::UnknownKind(99)));
    }

    #[test]
    fn decode_without_body_measures_instead_of_copying() {
        for record in samples() {
            let mut payload = Vec::new();
            record.encode(&mut payload);
            let (light, body_len) = Record::decode_without_body(record.kind(), &payload).unwrap();
            match (&record, &light) {
                (
                    Record::ItemStored { item: full, .. },
                    Record::ItemStored {
                        item: Item::Message { body, id, .. },
                        ..
                    },
                ) => {
                    assert_eq!(body_len, full.body_len());
                    assert!(body.is_empty());
                    assert_eq!(*id, full.id());
                }
                _ => {
                    assert_eq!(light, record);
                    assert_eq!(body_len, 0);
                }
            }
            // Every truncation is still refused.
            for cut in 0..payload.len() {
                assert!(Record::decode_without_body(record.kind(), &payload[..cut]).is_err());
            }
        }
    }

    #[test]
    fn a_body_length_past_the_bound_is_refused_before_reading() {
        let mut buf = Vec::new();
        put_u64(&mut buf, 1);
        buf.push(0);
        buf.push(1);
        for _ in 0..4 {
            put_u64(&mut buf, 1);
        }
        put_u32(&mut buf, u32::MAX);
        assert_eq!(
            Record::decode(KIND_ITEM_STORED, &buf),
            Err(RecordError::BadValue { field: "body.len" })
        );
    }
}
