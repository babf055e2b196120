//! Tern engine sans-IO core: the state machines a shard runs, with no
//! sockets, no clock, no threads and no global randomness (hash-table keys
//! aside, see [`hash`]: they change layout, never outcomes). Time comes in as
//! `now_ms: u64` (milliseconds; monotonic or wall, the caller's choice, as
//! long as it is the same clock throughout), randomness as
//! `&mut impl rand::RngCore`. Every structure is owned by one shard and
//! bounded by a field of [`Limits`].
//!
//! - [`user`]: user ids (E.164 numbers as integers) and the home shard.
//! - [`limits`]: every bound, with defaults and a consistency check.
//! - [`rate`]: keyed token-bucket rate limiter with a bound on keys.
//! - [`pin`]: registration PINs.
//! - [`account`]: device-key hashes and generations, event-sourced.
//! - [`inbox`]: per-user queues of messages and receipts.
//! - [`dedup`]: `(sender, client_msg_id) -> server_msg_id` windows.
//! - [`ids`]: server message ids, unique across shards.
//! - [`hash`]: the keyed fast hasher of the maps keyed by ids.
//! - [`body`]: message body checks (sizes, media references).
//! - [`error`]: the crate error, mapping to protocol error codes.
//! - [`conn`], [`mesh`], [`action`]: connections, messages between shards,
//!   and instructions for the runtime.
//! - [`shard`]: the shard state machine that ties all of the above together.

pub mod account;
pub mod action;
pub mod body;
pub mod conn;
pub mod dedup;
pub mod error;
pub mod hash;
pub mod ids;
pub mod inbox;
pub mod limits;
pub mod mesh;
pub mod order;
pub mod pin;
pub mod rate;
pub mod record;
pub mod shard;
pub mod user;

pub use account::{
    key_hash, new_device_key, AccountError, AccountEvent, AccountTable, KeyHash, LoginFail,
};
pub use body::{BodyError, BodyField, MediaReason};
pub use dedup::Dedup;
pub use error::Error;
pub use ids::{IdAllocator, IdError};
pub use inbox::{InboxError, Inboxes, Item};
pub use limits::{Limits, LimitsError, Rate};
pub use pin::{IssuedPin, PinError, PinLimit, PinRegistry};
pub use rate::{source_key, RateDecision, RateLimiter};
pub use user::{home_shard, PhoneError, UserId};
