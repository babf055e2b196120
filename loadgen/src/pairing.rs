//! Users, pairs, and how they are split over worker processes.
//!
//! User `u` (0-based) is phone `+{phone_base + u}`. Users `2k` and `2k+1`
//! form pair `k`: in `mutual` pairing each sends to the other, in
//! `one-way` pairing `2k` sends to `2k+1`. Either way every sender has one
//! fixed recipient and every recipient one sender, so per-pair order and
//! loss are checked exactly. Whole pairs go to one worker (contiguous
//! ranges), so both ends of a pair share a process and a clock.
//!
//! The server places users by `home = hash(user_id) % shards`; consecutive
//! phone numbers hash independently, so with S shards about (S-1)/S of the
//! pairs cross shards (`cross_shard_pairs` counts them exactly).

use std::net::Ipv4Addr;
use std::ops::Range;

use crate::addr::source_ip;
use crate::scenario::{Pairing, Scenario};

/// Fewest and most digits the server accepts in a phone number.
pub const PHONE_DIGITS_MIN: usize = 8;
/// See [`PHONE_DIGITS_MIN`].
pub const PHONE_DIGITS_MAX: usize = 15;

/// What one worker process drives.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerPlan {
    /// Worker index, from 0.
    pub index: usize,
    /// Global user indices (an even-sized range of whole pairs).
    pub users: Range<u32>,
    /// Source addresses; user `users.start + j` binds to
    /// `source_ips[j / conns_per_source_ip]`.
    pub source_ips: Vec<Ipv4Addr>,
}

/// The split of a scenario's users over workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// One plan per worker.
    pub workers: Vec<WorkerPlan>,
}

impl Layout {
    /// Splits the pairs as evenly as possible over `scenario.procs()`
    /// workers and hands out source addresses.
    pub fn new(s: &Scenario) -> Result<Self, String> {
        let first_phone = s.phone_base;
        let last_phone = s
            .phone_base
            .checked_add(u64::from(s.connections))
            .ok_or("phone_base too large")?;
        for p in [first_phone, last_phone] {
            let digits = p.to_string().len();
            if !(PHONE_DIGITS_MIN..=PHONE_DIGITS_MAX).contains(&digits) || p == 0 {
                return Err(format!(
                    "phone numbers +{first_phone}..+{last_phone} must have \
                     {PHONE_DIGITS_MIN}-{PHONE_DIGITS_MAX} digits (set phone_base)"
                ));
            }
        }
        let procs = s.procs().max(1);
        let pairs = s.connections / 2;
        let mut workers = Vec::new();
        let mut next_pair = 0u32;
        let mut next_ip = 0u32;
        for w in 0..procs {
            let n = pairs / procs + u32::from(w < pairs % procs);
            let users = next_pair * 2..(next_pair + n) * 2;
            next_pair += n;
            let ips_needed = (n * 2).div_ceil(s.conns_per_source_ip);
            let mut source_ips = Vec::new();
            for _ in 0..ips_needed {
                let ip = source_ip(s.source_ip_first, next_ip).ok_or_else(|| {
                    format!(
                        "source addresses from {} run past 127.255.255.254",
                        s.source_ip_first
                    )
                })?;
                source_ips.push(ip);
                next_ip += 1;
            }
            workers.push(WorkerPlan {
                index: usize::try_from(w).unwrap_or(usize::MAX),
                users,
                source_ips,
            });
        }
        Ok(Self { workers })
    }

    /// Source addresses over all workers.
    pub fn source_ip_count(&self) -> usize {
        self.workers.iter().map(|w| w.source_ips.len()).sum()
    }
}

/// Phone number of user `u`.
pub fn phone(phone_base: u64, u: u32) -> String {
    format!("+{}", phone_base + u64::from(u))
}

/// User id (the phone number's digits) of user `u`.
pub fn user_id(phone_base: u64, u: u32) -> u64 {
    phone_base + u64::from(u)
}

/// The other member of `u`'s pair.
pub fn partner(u: u32) -> u32 {
    u ^ 1
}

/// Whom `u` sends to, if `u` sends.
pub fn recipient_of(pairing: Pairing, u: u32) -> Option<u32> {
    match pairing {
        Pairing::Mutual => Some(partner(u)),
        Pairing::OneWay => (u % 2 == 0).then_some(u + 1),
    }
}

/// Who sends to `u`, if anyone.
pub fn sender_to(pairing: Pairing, u: u32) -> Option<u32> {
    match pairing {
        Pairing::Mutual => Some(partner(u)),
        Pairing::OneWay => (u % 2 == 1).then(|| u - 1),
    }
}

/// Pairs whose two users have different home shards, out of all pairs.
pub fn cross_shard_pairs(s: &Scenario, shards: u16) -> (u32, u32) {
    let pairs = s.connections / 2;
    let home = |u: u32| {
        tern_core::user::home_shard(tern_core::user::UserId(user_id(s.phone_base, u)), shards)
    };
    let cross = (0..pairs)
        .filter(|k| home(2 * k) != home(2 * k + 1))
        .count();
    (u32::try_from(cross).unwrap_or(u32::MAX), pairs)
}

/// SplitMix64: a small seeded generator for reproducible choices.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        // 53 random bits as a fraction: exact in f64.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// One recipient's planned absence: it disconnects `at_s` seconds into the
/// run phase and reconnects `offline_s` later.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Absence {
    /// Global user index.
    pub user: u32,
    /// Seconds after the run phase starts.
    pub at_s: f64,
}

/// The recipients of `users` that go offline once: `offline_fraction` of
/// them (rounded), chosen and timed reproducibly from the seed, each
/// leaving at a uniform time in `[0, duration - offline]`.
pub fn absences(s: &Scenario, users: Range<u32>) -> Vec<Absence> {
    let mut recipients: Vec<u32> = users
        .filter(|&u| sender_to(s.pairing, u).is_some())
        .collect();
    let n = (s.offline_fraction * recipients.len() as f64).round();
    let n = usize::try_from(crate::num::f64_to_u64(n))
        .unwrap_or(usize::MAX)
        .min(recipients.len());
    let first = recipients.first().copied().unwrap_or(0);
    let mut rng = SplitMix64::new(s.seed ^ u64::from(first).wrapping_mul(0x2545_f491_4f6c_dd1d));
    // Partial Fisher-Yates: the first n entries become the sample.
    for i in 0..n {
        let span = (recipients.len() - i) as u64;
        let j = i + usize::try_from(rng.below(span)).unwrap_or(0);
        recipients.swap(i, j);
    }
    let window = (s.duration_s - s.offline_s).max(0.0);
    let mut out: Vec<Absence> = recipients
        .into_iter()
        .take(n)
        .map(|user| Absence {
            user,
            at_s: rng.next_f64() * window,
        })
        .collect();
    out.sort_by_key(|a| a.user);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Scenario, TrustChoice};

    fn scenario(connections: u32, procs: u32, per_ip: u32) -> Scenario {
        Scenario {
            connections,
            procs: Some(procs),
            conns_per_source_ip: per_ip,
            trust: TrustChoice::InsecurePlaintext,
            ..Scenario::default()
        }
    }

    #[test]
    fn pairs_send_to_each_other_or_one_way() {
        assert_eq!(recipient_of(Pairing::Mutual, 4), Some(5));
        assert_eq!(recipient_of(Pairing::Mutual, 5), Some(4));
        assert_eq!(sender_to(Pairing::Mutual, 5), Some(4));
        assert_eq!(recipient_of(Pairing::OneWay, 4), Some(5));
        assert_eq!(recipient_of(Pairing::OneWay, 5), None);
        assert_eq!(sender_to(Pairing::OneWay, 5), Some(4));
        assert_eq!(sender_to(Pairing::OneWay, 4), None);
        for u in 0..100 {
            for p in [Pairing::Mutual, Pairing::OneWay] {
                if let Some(r) = recipient_of(p, u) {
                    assert_eq!(sender_to(p, r), Some(u), "one sender per recipient");
                    assert_eq!(r / 2, u / 2, "same pair");
                }
            }
        }
    }

    #[test]
    fn workers_get_whole_pairs_and_distinct_source_ips() {
        let s = scenario(10_002, 3, 1_000);
        let layout = Layout::new(&s).unwrap();
        assert_eq!(layout.workers.len(), 3);
        let mut next = 0;
        let mut ips = std::collections::HashSet::new();
        for w in &layout.workers {
            assert_eq!(w.users.start, next, "contiguous");
            assert_eq!(w.users.start % 2, 0, "whole pairs");
            assert_eq!(w.users.len() % 2, 0);
            next = w.users.end;
            let n = u32::try_from(w.users.len()).unwrap();
            assert_eq!(w.source_ips.len(), n.div_ceil(1_000) as usize);
            for ip in &w.source_ips {
                assert!(ips.insert(*ip), "{ip} used twice");
                assert_eq!(ip.octets()[0], 127);
            }
        }
        assert_eq!(next, 10_002);
        // 5001 pairs over 3 workers: 1667 each.
        let sizes: Vec<usize> = layout.workers.iter().map(|w| w.users.len()).collect();
        assert_eq!(sizes, vec![3_334, 3_334, 3_334]);
        assert_eq!(layout.source_ip_count(), 12);
    }

    #[test]
    fn phones_and_ids() {
        assert_eq!(phone(15_550_000_000, 7), "+15550000007");
        assert_eq!(user_id(15_550_000_000, 7), 15_550_000_007);
        let mut s = scenario(10, 1, 100);
        s.phone_base = 1;
        assert!(Layout::new(&s).unwrap_err().contains("digits"));
    }

    #[test]
    fn cross_shard_pairs_are_about_half_with_two_shards() {
        let s = scenario(2_000, 1, 4_000);
        let (cross, pairs) = cross_shard_pairs(&s, 2);
        assert_eq!(pairs, 1_000);
        assert!((350..650).contains(&cross), "{cross}");
        assert_eq!(cross_shard_pairs(&s, 1).0, 0);
    }

    #[test]
    fn absences_pick_the_fraction_of_recipients_reproducibly() {
        let mut s = scenario(1_000, 1, 4_000);
        s.offline_fraction = 0.1;
        s.duration_s = 10.0;
        s.offline_s = 4.0;
        let a = absences(&s, 0..1_000);
        assert_eq!(a.len(), 100);
        assert_eq!(a, absences(&s, 0..1_000), "same seed, same plan");
        for x in &a {
            assert!((0.0..=6.0).contains(&x.at_s));
        }
        let users: std::collections::HashSet<u32> = a.iter().map(|x| x.user).collect();
        assert_eq!(users.len(), 100, "distinct");
        s.pairing = Pairing::OneWay;
        let a = absences(&s, 0..1_000);
        assert_eq!(a.len(), 50, "only the 500 recipients");
        assert!(a.iter().all(|x| x.user % 2 == 1));
        s.offline_fraction = 0.0;
        assert!(absences(&s, 0..1_000).is_empty());
        s.seed = 99;
        s.offline_fraction = 0.1;
        assert_ne!(absences(&s, 0..1_000), {
            s.seed = 1;
            absences(&s, 0..1_000)
        });
    }
}
