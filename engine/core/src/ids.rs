//! Server message ids: unique across shards, increasing within a shard.
//!
//! An id is `shard << SEQ_BITS | seq`: the shard index in the top
//! [`SHARD_BITS`] bits, a per-shard sequence number below. Sequence 0 is
//! never handed out, so no id is 0 (0 means "none" on the wire).
//!
//! After a restart the allocator resumes after the last sequence the log
//! holds, so an id handed out but never made durable is handed out again.
//! That is safe only if no such id ever left the server: devices discard
//! repeats by id (invariant I3), so a `Deliver` or `ServerAck` carrying an
//! id before its record is durable could make a device drop a different
//! message after a crash. Either send ids only after the fsync covering
//! them, or log a high-water mark ahead of use and resume after it.

use std::fmt;

use tern_wire::ErrorCode;

/// Bits for the shard index.
pub const SHARD_BITS: u32 = 10;
/// Bits for the per-shard sequence.
pub const SEQ_BITS: u32 = u64::BITS - SHARD_BITS;
/// Most shards ids can tell apart: 1024.
pub const SHARDS_MAX: u32 = 1 << SHARD_BITS;
/// Largest sequence number: 2^54 - 1 (at a million ids per second, 570
/// years).
pub const SEQ_MAX: u64 = (1 << SEQ_BITS) - 1;

/// Why an id could not be made.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdError {
    /// Every sequence number of this shard is used.
    Exhausted {
        /// The shard.
        shard: u16,
    },
}

impl IdError {
    /// The protocol code for this error.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exhausted { shard } => write!(f, "shard {shard} has used every message id"),
        }
    }
}

impl std::error::Error for IdError {}

/// The shard an id was made on.
pub fn shard_of(id: u64) -> u16 {
    // Cannot truncate: the top SHARD_BITS (10) bits fit in a u16.
    #[allow(clippy::cast_possible_truncation)]
    let shard = (id >> SEQ_BITS) as u16;
    shard
}

/// The id with `seq` on `shard` (the inverse of [`shard_of`] and
/// [`seq_of`]).
pub fn compose(shard: u16, seq: u64) -> u64 {
    (u64::from(shard) << SEQ_BITS) | (seq & SEQ_MAX)
}

/// The sequence part of an id.
pub fn seq_of(id: u64) -> u64 {
    id & SEQ_MAX
}

/// Hands out the ids of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdAllocator {
    shard: u16,
    /// The sequence the next id gets (>= 1); `SEQ_MAX + 1` when exhausted.
    next_seq: u64,
}

impl IdAllocator {
    /// An allocator for `shard` resuming after `last_seq`: the highest
    /// sequence the shard's log holds, 0 for a fresh shard. The first id
    /// gets sequence `last_seq + 1`; from `last_seq >= SEQ_MAX` on, every
    /// `next` is `Exhausted`.
    ///
    /// `shard` must be below [`SHARDS_MAX`]: the runtime checks the shard
    /// count against it at start-up, so a larger index is a programming
    /// error and the assertion (one compare, once per shard) stays on.
    pub fn new(shard: u16, last_seq: u64) -> Self {
        assert!(
            u32::from(shard) < SHARDS_MAX,
            "IdAllocator: shard {shard} does not fit in {SHARD_BITS} bits"
        );
        Self {
            shard,
            next_seq: last_seq.min(SEQ_MAX).saturating_add(1),
        }
    }

    /// The next id. Never wraps: past [`SEQ_MAX`] it fails, every time.
    // Not an Iterator: the item is a Result and exhaustion is an error.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<u64, IdError> {
        if self.next_seq > SEQ_MAX {
            return Err(IdError::Exhausted { shard: self.shard });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = (u64::from(self.shard) << SEQ_BITS) | seq;
        // Cheap and guards the layout: the parts come back out unchanged.
        debug_assert!(shard_of(id) == self.shard && seq_of(id) == seq && id != 0);
        Ok(id)
    }

    /// This allocator's shard.
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// The sequence of the last id handed out (the `last_seq` given to
    /// `new` before the first); what the log must remember to resume.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn layout() {
        assert_eq!(SEQ_BITS, 54);
        let mut a = IdAllocator::new(3, 0);
        let id = a.next().unwrap();
        assert_eq!(id, (3 << 54) | 1);
        assert_eq!(shard_of(id), 3);
        assert_eq!(seq_of(id), 1);
        assert_eq!(a.last_seq(), 1);
        assert_eq!(a.shard(), 3);
        // Shard 0's first id is 1: no id is ever 0.
        assert_eq!(IdAllocator::new(0, 0).next(), Ok(1));
    }

    #[test]
    fn unique_across_shards_and_increasing() {
        let mut seen = HashSet::new();
        for shard in [0u16, 1, 2, 511, 1023] {
            let mut a = IdAllocator::new(shard, 0);
            let mut last = 0;
            for _ in 0..1_000 {
                let id = a.next().unwrap();
                assert!(id > last);
                last = id;
                assert!(seen.insert(id));
            }
        }
        assert_eq!(seen.len(), 5_000);
    }

    #[test]
    fn shard_bound() {
        // The last shard index works, up to the largest u64.
        let mut top = IdAllocator::new(1023, SEQ_MAX - 1);
        assert_eq!(top.next(), Ok(u64::MAX));
        assert_eq!(shard_of(u64::MAX), 1023);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn shard_past_the_bound_is_a_bug() {
        let _ = IdAllocator::new(1024, 0);
    }

    #[test]
    fn overflow_is_an_error_never_a_wrap() {
        let mut a = IdAllocator::new(5, SEQ_MAX - 2);
        assert_eq!(seq_of(a.next().unwrap()), SEQ_MAX - 1);
        // The last sequence is handed out...
        let last = a.next().unwrap();
        assert_eq!(seq_of(last), SEQ_MAX);
        assert_eq!(shard_of(last), 5);
        // ...and one past it fails, and keeps failing.
        assert_eq!(a.next(), Err(IdError::Exhausted { shard: 5 }));
        assert_eq!(a.next(), Err(IdError::Exhausted { shard: 5 }));
        assert_eq!(a.last_seq(), SEQ_MAX);
        assert_eq!(IdError::Exhausted { shard: 5 }.code(), ErrorCode::Internal);
        // Resuming at or past the end: exhausted at once.
        assert!(IdAllocator::new(5, SEQ_MAX).next().is_err());
        assert!(IdAllocator::new(5, u64::MAX).next().is_err());
    }

    #[test]
    fn restart_resumes_after_the_last_persisted_seq() {
        let mut before = IdAllocator::new(7, 0);
        let ids: Vec<u64> = (0..10).map(|_| before.next().unwrap()).collect();
        let persisted = before.last_seq();
        assert_eq!(persisted, seq_of(ids[9]));
        let mut after = IdAllocator::new(7, persisted);
        let next = after.next().unwrap();
        assert!(next > ids[9]);
        assert_eq!(seq_of(next), 11);
    }
}
