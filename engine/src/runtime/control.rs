//! Operator commands from outside the executors (the admin socket thread)
//! to one shard. Admin traffic is rare and not latency sensitive, so each
//! shard polls its crossbeam channel once per tick instead of being woken:
//! nothing on the message path notices.

use crossbeam_channel::{Receiver, Sender};
use tern_core::user::UserId;

/// Commands a shard handles in its ticker.
#[derive(Debug)]
pub enum Control {
    /// Kick `user` if online here; answers whether it was.
    Kick { user: UserId, reply: Sender<bool> },
    /// The shard's `n` longest user queues.
    Queues {
        n: usize,
        reply: Sender<Vec<(UserId, usize)>>,
    },
    /// Stop accepting new connections; existing ones stay. Answers the
    /// shard's connection count.
    Drain { reply: Sender<u64> },
}

/// Commands queued per shard before the sender is refused.
pub const CONTROL_QUEUE_LEN_MAX: usize = 64;

/// One channel per shard: senders for the admin side, receivers for the
/// shards (index = shard).
pub fn channels(shards: usize) -> (Vec<Sender<Control>>, Vec<Receiver<Control>>) {
    (0..shards)
        .map(|_| crossbeam_channel::bounded(CONTROL_QUEUE_LEN_MAX))
        .unzip()
}
