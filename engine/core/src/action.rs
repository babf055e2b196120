//! What the shard core asks its runtime to do.

use crate::conn::{ConnId, MigrationState};
use crate::mesh::MeshMsg;
use crate::record::Record;
use crate::user::UserId;

/// A PIN to send by SMS; the runtime answers with
/// `Shard::handle_sms_result(job, ..)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmsJob {
    pub job: u64,
    pub phone: String,
    pub pin: String,
    pub text: String,
}

/// An instruction for the runtime, drained with `Shard::poll_action`.
#[derive(Debug)]
pub enum Action {
    /// `conn` has plaintext to send: call `Shard::take_output`.
    Wake(ConnId),
    /// Flush what `conn` has queued (its last frame is an Error or Kicked),
    /// then close the socket and call `Shard::handle_closed`.
    Close(ConnId),
    /// Flush `conn`, then hand its socket and TLS state to shard `to`, which
    /// calls `Shard::adopt` with `state`; then `Shard::forget` here.
    Migrate {
        conn: ConnId,
        to: u16,
        state: MigrationState,
    },
    /// Carry `msg` to shard `to` (batched per tick by the runtime).
    Mesh { to: u16, msg: MeshMsg },
    /// Send an SMS through the gateway, off the executor thread.
    SendSms(SmsJob),
    /// Append `record` to the shard's log; report with
    /// `Shard::handle_durable(seq)` once it (and all before it) is synced.
    /// Only in durable mode.
    Append { seq: u64, record: Record },
    /// Read back the item records at `items` (`(id, log position)`) of
    /// `user`'s queue, whose bodies were left on disk; answer with
    /// `Shard::handle_fetched(user, ..)` or `Shard::handle_fetch_failed`.
    /// Only in durable mode.
    Fetch {
        user: UserId,
        items: Vec<(u64, u64)>,
    },
}
