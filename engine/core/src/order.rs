//! Keeping one sender's messages to one recipient in order (invariant I2)
//! when some are refused for a while.
//!
//! A client pipelines its Sends. If the recipient's shard refuses one with
//! a transient code (its queue is full, its log is behind) and takes a
//! later one a moment after (the queue drained), the refused message,
//! retried later, would land behind its successor. So a transient refusal
//! of `(from, to, client_msg_id = F)` leaves a *floor*: until operation F
//! is stored, every newer operation of that pair (`client_msg_id > F`) is
//! refused with the same code. Clients number operations in creation order
//! and retry pending ones in that order, so the retry of F comes first and
//! lifts the floor, and the rest follow in order.
//!
//! Bounded: at most [`FLOORS_MAX`] pairs (the oldest floor is dropped when
//! full), and a floor lapses after [`FLOOR_TTL_MS`] (a client that never
//! retries F, say one that was reinstalled, must not block the pair
//! forever). Both only ever cost order for that pair, never a message.

use std::collections::VecDeque;

use crate::hash::IdMap;

use tern_wire::ErrorCode;

use crate::user::UserId;

/// Most pairs with a floor at once, per shard.
pub const FLOORS_MAX: usize = 65_536;
/// A floor not lifted within this long lapses. Clients retry pending
/// operations every few seconds (5 s by default) and after each reconnect.
pub const FLOOR_TTL_MS: u64 = 60_000;

#[derive(Clone, Copy, Debug)]
struct Floor {
    client_msg_id: u64,
    code: ErrorCode,
    at_ms: u64,
}

/// The floors of one shard.
#[derive(Debug, Default)]
pub struct Floors {
    floors: IdMap<(UserId, UserId), Floor>,
    /// Pairs in the order their floor was set, for eviction when full
    /// (may name pairs whose floor was lifted since: skipped then).
    order: VecDeque<(UserId, UserId)>,
}

impl Floors {
    pub fn new() -> Self {
        Self::default()
    }

    /// May operation `client_msg_id` of `from` to `to` be stored now? The
    /// refusal code of the pair's floor if a newer one must wait.
    pub fn check(
        &mut self,
        from: UserId,
        to: UserId,
        client_msg_id: u64,
        now_ms: u64,
    ) -> Result<(), ErrorCode> {
        let Some(floor) = self.floors.get(&(from, to)) else {
            return Ok(());
        };
        if now_ms >= floor.at_ms.saturating_add(FLOOR_TTL_MS) {
            self.floors.remove(&(from, to));
            return Ok(());
        }
        if client_msg_id > floor.client_msg_id {
            Err(floor.code)
        } else {
            Ok(())
        }
    }

    /// Operation `client_msg_id` of the pair was refused with transient
    /// `code`.
    pub fn refused(
        &mut self,
        from: UserId,
        to: UserId,
        client_msg_id: u64,
        code: ErrorCode,
        now_ms: u64,
    ) {
        let key = (from, to);
        if let Some(floor) = self.floors.get_mut(&key) {
            if client_msg_id <= floor.client_msg_id {
                floor.client_msg_id = client_msg_id;
                floor.code = code;
            }
            return;
        }
        while self.floors.len() >= FLOORS_MAX {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.floors.remove(&oldest);
        }
        // Entries of lifted floors linger in `order`; keep it bounded too.
        if self.order.len() >= FLOORS_MAX.saturating_mul(2) {
            self.order.retain(|k| self.floors.contains_key(k));
        }
        self.floors.insert(
            key,
            Floor {
                client_msg_id,
                code,
                at_ms: now_ms,
            },
        );
        self.order.push_back(key);
    }

    /// Operation `client_msg_id` of the pair was stored: a floor at or
    /// below it is lifted.
    pub fn stored(&mut self, from: UserId, to: UserId, client_msg_id: u64) {
        if self.floors.is_empty() {
            return;
        }
        let key = (from, to);
        if self
            .floors
            .get(&key)
            .is_some_and(|f| client_msg_id >= f.client_msg_id)
        {
            self.floors.remove(&key);
        }
    }

    /// Pairs with a floor.
    pub fn len(&self) -> usize {
        self.floors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.floors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: UserId = UserId(15_551_240_001);
    const B: UserId = UserId(15_551_240_002);
    const C: UserId = UserId(15_551_240_003);

    #[test]
    fn newer_operations_wait_for_the_refused_one() {
        let mut f = Floors::new();
        assert_eq!(f.check(A, B, 1, 0), Ok(()));
        f.stored(A, B, 1);
        f.refused(A, B, 2, ErrorCode::QueueFull, 0);
        // 3 and 4 were pipelined behind 2: refused even if room appeared.
        assert_eq!(f.check(A, B, 3, 10), Err(ErrorCode::QueueFull));
        f.refused(A, B, 3, ErrorCode::QueueFull, 10);
        assert_eq!(f.check(A, B, 4, 10), Err(ErrorCode::QueueFull));
        // Other pairs are not affected.
        assert_eq!(f.check(A, C, 9, 10), Ok(()));
        assert_eq!(f.check(C, B, 9, 10), Ok(()));
        // The retry of 2 comes first and lifts the floor.
        assert_eq!(f.check(A, B, 2, 20), Ok(()));
        f.stored(A, B, 2);
        assert_eq!(f.check(A, B, 3, 20), Ok(()));
        assert!(f.is_empty());
    }

    #[test]
    fn the_lowest_refusal_is_the_floor() {
        let mut f = Floors::new();
        f.refused(A, B, 5, ErrorCode::ShardUnavailable, 0);
        f.refused(A, B, 3, ErrorCode::QueueFull, 0);
        assert_eq!(f.check(A, B, 4, 0), Err(ErrorCode::QueueFull));
        f.stored(A, B, 3);
        assert_eq!(f.check(A, B, 5, 0), Ok(()));
    }

    #[test]
    fn a_floor_lapses_after_its_ttl() {
        let mut f = Floors::new();
        f.refused(A, B, 2, ErrorCode::QueueFull, 1_000);
        assert!(f.check(A, B, 3, 1_000 + FLOOR_TTL_MS - 1).is_err());
        assert_eq!(f.check(A, B, 3, 1_000 + FLOOR_TTL_MS), Ok(()));
        assert!(f.is_empty());
    }

    #[test]
    fn at_the_bound_the_oldest_floor_goes() {
        let mut f = Floors::new();
        for i in 0..FLOORS_MAX as u64 {
            f.refused(UserId(i), B, 1, ErrorCode::QueueFull, 0);
        }
        assert_eq!(f.len(), FLOORS_MAX);
        f.refused(C, B, 1, ErrorCode::QueueFull, 0);
        assert_eq!(f.len(), FLOORS_MAX);
        assert_eq!(f.check(UserId(0), B, 2, 0), Ok(()), "oldest dropped");
        assert!(f.check(C, B, 2, 0).is_err());
        assert!(f.check(UserId(1), B, 2, 0).is_err());
    }
}
