//! A keyed token-bucket rate limiter with a bound on tracked keys.
//!
//! Each key's bucket is stored as one number, its "theoretical arrival
//! time" (GCRA, the generic cell rate algorithm, which is exactly a token
//! bucket): `tat` is when the bucket would be full again. A key whose `tat`
//! is not after `now` has a full bucket and carries no information, so it
//! can be forgotten; that is what makes the key bound safe.
//!
//! One limiter per shard, owned by that shard: no locks, no shared map.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};

use crate::limits::Rate;

/// The answer of a rate limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead.
    Allowed,
    /// Refused; a token is back after `retry_after_ms` (at least 1).
    Limited {
        /// Time until trying again can succeed.
        retry_after_ms: u64,
    },
}

impl RateDecision {
    /// True for [`RateDecision::Allowed`].
    pub fn is_allowed(self) -> bool {
        matches!(self, Self::Allowed)
    }
}

/// A token-bucket limiter keyed by `K` (a phone number, a user id, a
/// source address), tracking at most `keys_max` keys.
///
/// When the table is full and a new key arrives, keys whose buckets are
/// full again are dropped (a sweep over the table). If none is, the new
/// key is refused as if limited: the table never grows past its bound. A
/// sweep that frees nothing records when the earliest bucket refills and no
/// sweep runs before then, so a full table of live keys costs one lookup
/// per refused request, not a scan.
#[derive(Debug)]
pub struct RateLimiter<K> {
    /// Time for one token to come back.
    interval_ms: u64,
    /// How far `tat` may run ahead of `now`: `burst * interval_ms`.
    tolerance_ms: u64,
    keys_max: usize,
    tat: HashMap<K, u64>,
    /// No sweep can free a key before this time.
    sweep_not_before_ms: u64,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter allowing `rate` per key, tracking at most `keys_max` keys.
    /// A rate with 0 burst or period, or `keys_max` 0, is refused by
    /// `Limits::validate`; here they are raised to 1 so nothing divides by
    /// zero.
    pub fn new(rate: Rate, keys_max: usize) -> Self {
        let interval_ms = rate.interval_ms().max(1);
        Self {
            interval_ms,
            tolerance_ms: interval_ms.saturating_mul(u64::from(rate.burst.max(1))),
            keys_max: keys_max.max(1),
            tat: HashMap::new(),
            sweep_not_before_ms: 0,
        }
    }

    /// Takes one token for `key` if there is one.
    pub fn acquire(&mut self, key: &K, now_ms: u64) -> RateDecision {
        self.decide(key, now_ms, true)
    }

    /// Would [`acquire`](Self::acquire) allow `key` now? Takes nothing
    /// (may drop refilled keys to answer for a new key on a full table).
    /// Use it to refuse before doing work whose failure is what gets
    /// counted, e.g. check before a login attempt, acquire on failure.
    pub fn peek(&mut self, key: &K, now_ms: u64) -> RateDecision {
        self.decide(key, now_ms, false)
    }

    /// Forgets `key`: its bucket is full again.
    pub fn forget(&mut self, key: &K) {
        self.tat.remove(key);
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }

    /// The bound on tracked keys.
    pub fn keys_max(&self) -> usize {
        self.keys_max
    }

    /// Drops every key whose bucket is full at `now_ms`. Optional: the
    /// limiter sweeps by itself when full. Returns the number dropped.
    pub fn purge(&mut self, now_ms: u64) -> usize {
        let before = self.tat.len();
        self.sweep(now_ms);
        before - self.tat.len()
    }

    fn decide(&mut self, key: &K, now_ms: u64, take: bool) -> RateDecision {
        let tat = match self.tat.get(key) {
            Some(&tat) => tat,
            None => {
                if let Err(retry_after_ms) = self.make_room(now_ms) {
                    return RateDecision::Limited { retry_after_ms };
                }
                now_ms
            }
        };
        let new_tat = tat.max(now_ms).saturating_add(self.interval_ms);
        let allowed_until = now_ms.saturating_add(self.tolerance_ms);
        if new_tat > allowed_until {
            return RateDecision::Limited {
                retry_after_ms: new_tat - allowed_until,
            };
        }
        if take {
            self.tat.insert(key.clone(), new_tat);
            // The bound holds: a new key got here only through make_room.
            debug_assert!(self.tat.len() <= self.keys_max);
        }
        RateDecision::Allowed
    }

    /// Ok when a new key fits; otherwise the time until one may.
    fn make_room(&mut self, now_ms: u64) -> Result<(), u64> {
        if self.tat.len() < self.keys_max {
            return Ok(());
        }
        if now_ms < self.sweep_not_before_ms {
            return Err(self.sweep_not_before_ms - now_ms);
        }
        let earliest = self.sweep(now_ms);
        if self.tat.len() < self.keys_max {
            Ok(())
        } else {
            // Every key is live; the earliest refills at `earliest` (> now).
            self.sweep_not_before_ms = earliest;
            Err(earliest.saturating_sub(now_ms).max(1))
        }
    }

    /// Drops full buckets; returns the earliest `tat` left (or `u64::MAX`).
    fn sweep(&mut self, now_ms: u64) -> u64 {
        let mut earliest = u64::MAX;
        self.tat.retain(|_, &mut tat| {
            let live = tat > now_ms;
            if live {
                earliest = earliest.min(tat);
            }
            live
        });
        earliest
    }
}

/// The key to rate-limit a source address by. IPv4 addresses (including
/// IPv4-mapped IPv6) are used whole; IPv6 addresses are cut to their /64
/// prefix, since one subscriber usually holds a whole /64 and could
/// otherwise use a fresh address per request.
pub fn source_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(
                v6.to_bits() & 0xFFFF_FFFF_FFFF_FFFF_0000_0000_0000_0000,
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LIMITED_1: RateDecision = RateDecision::Limited { retry_after_ms: 1 };

    #[test]
    fn burst_then_limited_at_the_bound() {
        // 3 per 300 ms: one token per 100 ms.
        let mut rl = RateLimiter::new(Rate::new(3, 300), 10);
        for _ in 0..3 {
            assert_eq!(rl.acquire(&1u64, 1_000), RateDecision::Allowed);
        }
        assert_eq!(
            rl.acquire(&1u64, 1_000),
            RateDecision::Limited {
                retry_after_ms: 100
            }
        );
        // One ms before the token is back: still limited, by 1 ms.
        assert_eq!(rl.acquire(&1u64, 1_099), LIMITED_1);
        // Exactly when it is back: allowed, once.
        assert_eq!(rl.acquire(&1u64, 1_100), RateDecision::Allowed);
        assert!(!rl.acquire(&1u64, 1_100).is_allowed());
        // Other keys are independent.
        assert!(rl.acquire(&2u64, 1_100).is_allowed());
    }

    #[test]
    fn refills_fully_after_the_period() {
        let mut rl = RateLimiter::new(Rate::new(3, 300), 10);
        for _ in 0..3 {
            assert!(rl.acquire(&7u32, 0).is_allowed());
        }
        assert!(!rl.acquire(&7u32, 0).is_allowed());
        for _ in 0..3 {
            assert!(rl.acquire(&7u32, 300).is_allowed());
        }
        assert!(!rl.acquire(&7u32, 300).is_allowed());
    }

    #[test]
    fn limited_requests_do_not_consume() {
        let mut rl = RateLimiter::new(Rate::new(1, 100), 10);
        assert!(rl.acquire(&1u8, 0).is_allowed());
        for t in 0..100 {
            assert!(!rl.acquire(&1u8, t).is_allowed());
        }
        assert!(rl.acquire(&1u8, 100).is_allowed());
    }

    #[test]
    fn peek_takes_nothing() {
        let mut rl = RateLimiter::new(Rate::new(2, 100), 10);
        for _ in 0..10 {
            assert!(rl.peek(&1u8, 0).is_allowed());
        }
        assert!(rl.is_empty());
        assert!(rl.acquire(&1u8, 0).is_allowed());
        assert!(rl.acquire(&1u8, 0).is_allowed());
        assert_eq!(
            rl.peek(&1u8, 0),
            RateDecision::Limited { retry_after_ms: 50 }
        );
        rl.forget(&1u8);
        assert!(rl.peek(&1u8, 0).is_allowed());
    }

    #[test]
    fn key_bound_refuses_new_keys_while_all_are_live() {
        let mut rl = RateLimiter::new(Rate::new(1, 1_000), 3);
        // Up to the bound: fine.
        for k in 0..3u32 {
            assert!(rl.acquire(&k, 0).is_allowed());
        }
        assert_eq!(rl.len(), 3);
        // One past: refused, and the table does not grow.
        assert_eq!(
            rl.acquire(&3, 10),
            RateDecision::Limited {
                retry_after_ms: 990
            }
        );
        assert_eq!(
            rl.peek(&4, 10),
            RateDecision::Limited {
                retry_after_ms: 990
            }
        );
        assert_eq!(rl.len(), 3);
        // Tracked keys still get their own answer.
        assert_eq!(
            rl.acquire(&0, 10),
            RateDecision::Limited {
                retry_after_ms: 990
            }
        );
        // Once buckets are full again, their keys make room.
        assert!(rl.acquire(&3, 1_000).is_allowed());
        assert_eq!(rl.len(), 1);
    }

    #[test]
    fn key_bound_evicts_only_full_buckets() {
        let mut rl = RateLimiter::new(Rate::new(1, 100), 2);
        assert!(rl.acquire(&"old", 0).is_allowed());
        assert!(rl.acquire(&"busy", 150).is_allowed());
        // "old" is full again at 100; "busy" is not until 250.
        assert!(rl.acquire(&"new", 200).is_allowed());
        assert_eq!(rl.len(), 2);
        assert!(!rl.acquire(&"busy", 200).is_allowed());
        assert!(!rl.acquire(&"new", 200).is_allowed());
    }

    #[test]
    fn purge_drops_full_buckets() {
        let mut rl = RateLimiter::new(Rate::new(2, 100), 10);
        assert!(rl.acquire(&1u8, 0).is_allowed());
        assert!(rl.acquire(&2u8, 40).is_allowed());
        // Key 1 full again at 50, key 2 at 90.
        assert_eq!(rl.purge(49), 0);
        assert_eq!(rl.purge(50), 1);
        assert_eq!(rl.purge(90), 1);
        assert!(rl.is_empty());
    }

    #[test]
    fn clock_extremes_do_not_overflow() {
        // Arithmetic saturates instead of overflowing. (At the very end of
        // a u64 millisecond clock, 584 million years out, saturation lets
        // requests through; nothing panics.)
        let mut rl = RateLimiter::new(Rate::new(1, u64::MAX), 1);
        assert!(rl.acquire(&1u8, u64::MAX - 1).is_allowed());
        let _ = rl.acquire(&1u8, u64::MAX);
        let mut rl = RateLimiter::new(Rate::new(u32::MAX, 1), 1);
        assert!(rl.acquire(&1u8, u64::MAX).is_allowed());
        let _ = rl.acquire(&2u8, 0);
        // A clock that steps back never allows more than the burst.
        let mut rl = RateLimiter::new(Rate::new(1, 100), 4);
        assert!(rl.acquire(&1u8, 1_000).is_allowed());
        assert_eq!(
            rl.acquire(&1u8, 500),
            RateDecision::Limited {
                retry_after_ms: 600
            }
        );
    }

    #[test]
    fn zero_rate_is_raised_not_divided() {
        let mut rl = RateLimiter::new(Rate::new(0, 0), 0);
        assert_eq!(rl.keys_max(), 1);
        assert!(rl.acquire(&1u8, 0).is_allowed());
        assert!(!rl.acquire(&1u8, 0).is_allowed());
        assert!(rl.acquire(&1u8, 1).is_allowed());
    }

    #[test]
    fn source_key_groups_ipv6_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        assert_eq!(source_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(source_key(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(mapped), v4);
        let other: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8));
        assert_ne!(source_key(other), v4);
    }

    proptest::proptest! {
        /// Over any window of `period` ms, a key never gets more than
        /// `burst` + (window / interval) tokens, and the table stays bounded.
        #[test]
        fn never_exceeds_rate(
            burst in 1u32..5,
            period in 1u64..500,
            steps in proptest::collection::vec((0u64..50, 0u8..6), 1..200),
        ) {
            let keys_max = 4;
            let mut rl = RateLimiter::new(Rate::new(burst, period), keys_max);
            let interval = Rate::new(burst, period).interval_ms();
            let mut now = 0u64;
            let mut grants: HashMap<u8, Vec<u64>> = HashMap::new();
            for (dt, key) in steps {
                now += dt;
                if rl.acquire(&key, now).is_allowed() {
                    grants.entry(key).or_default().push(now);
                }
                proptest::prop_assert!(rl.len() <= keys_max);
            }
            for times in grants.values() {
                for (i, &start) in times.iter().enumerate() {
                    // Grants within [start, start + k * interval) number at
                    // most burst + k.
                    for k in 0..4u64 {
                        let end = start + k * interval;
                        let n = times[i..].iter().take_while(|&&t| t < end).count() as u64;
                        proptest::prop_assert!(n <= u64::from(burst) + k);
                    }
                }
            }
        }
    }
}
