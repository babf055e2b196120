//! Registration PINs: issue (rate-limited per phone and per source
//! address), verify (constant time, bounded tries, expiry), and a bound on
//! how many are outstanding.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use subtle::ConstantTimeEq;
use tern_wire::ErrorCode;

use crate::limits::{Limits, PIN_LEN_MAX};
use crate::rate::{source_key, RateDecision, RateLimiter};
use crate::user::{PhoneError, UserId};

/// Largest multiple of 10 that fits in a u32 range: draws at or above it are
/// thrown away so every digit is equally likely (no modulo bias).
const DIGIT_DRAW_LIMIT: u32 = u32::MAX - u32::MAX % 10;

/// Draws per digit before the random source is declared broken. With a
/// working generator a draw is rejected with probability 6 / 2^32, so
/// reaching this bound means the generator is stuck.
const DIGIT_DRAWS_MAX: usize = 16;

/// A freshly issued PIN, to be sent by SMS. `Debug` hides the digits.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedPin {
    /// The ASCII digits.
    pub pin: String,
    /// The PIN is refused from this time on.
    pub expires_at_ms: u64,
}

impl fmt::Debug for IssuedPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedPin")
            .field("pin", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// Which rate limit refused a PIN request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinLimit {
    /// Too many requests for this phone number.
    Phone,
    /// Too many requests from this source address (IPv6: its /64).
    Source,
}

/// Why a PIN request or check failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinError {
    /// The phone number is not valid E.164.
    InvalidPhone(PhoneError),
    /// Too many PIN requests; try again after `retry_after_ms`.
    RateLimited {
        /// The limit that refused.
        limit: PinLimit,
        /// Time until a request can succeed.
        retry_after_ms: u64,
    },
    /// Wrong PIN; `attempts_left` more tries before it is dead.
    Invalid {
        /// Tries left for this PIN.
        attempts_left: u32,
    },
    /// The PIN expired; request a new one.
    Expired,
    /// No PIN is outstanding for this number (never requested, already
    /// used, or purged after expiry); request one.
    NotRequested,
    /// Too many wrong tries; this PIN is dead, request a new one.
    AttemptsExceeded,
    /// The shard holds as many outstanding PINs as it may; try later.
    TooManyOutstanding {
        /// Time until an outstanding PIN expires.
        retry_after_ms: u64,
    },
    /// The random source produced no usable digit; it is broken.
    RandomFailure,
}

impl PinError {
    /// The protocol code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidPhone(_) => ErrorCode::InvalidPhone,
            Self::RateLimited { .. } => ErrorCode::PinRateLimited,
            Self::Invalid { .. } => ErrorCode::PinInvalid,
            // The client's next step is the same as for an expired PIN:
            // request a new one.
            Self::Expired | Self::NotRequested => ErrorCode::PinExpired,
            Self::AttemptsExceeded => ErrorCode::PinAttemptsExceeded,
            Self::TooManyOutstanding { .. } => ErrorCode::Overloaded,
            Self::RandomFailure => ErrorCode::Internal,
        }
    }

    /// For rate-limit style errors: how long to wait.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_ms, .. }
            | Self::TooManyOutstanding { retry_after_ms } => Some(*retry_after_ms),
            _ => None,
        }
    }
}

impl From<PhoneError> for PinError {
    fn from(e: PhoneError) -> Self {
        Self::InvalidPhone(e)
    }
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPhone(e) => write!(f, "{e}"),
            Self::RateLimited {
                limit,
                retry_after_ms,
            } => {
                let by = match limit {
                    PinLimit::Phone => "this number",
                    PinLimit::Source => "this address",
                };
                write!(
                    f,
                    "too many PIN requests for {by}; retry in {retry_after_ms} ms"
                )
            }
            Self::Invalid { attempts_left } => {
                write!(f, "wrong PIN; {attempts_left} tries left")
            }
            Self::Expired => write!(f, "PIN expired; request a new one"),
            Self::NotRequested => write!(f, "no PIN outstanding; request one"),
            Self::AttemptsExceeded => write!(f, "too many wrong tries; request a new PIN"),
            Self::TooManyOutstanding { retry_after_ms } => {
                write!(f, "too many PINs outstanding; retry in {retry_after_ms} ms")
            }
            Self::RandomFailure => write!(f, "random source failed"),
        }
    }
}

impl std::error::Error for PinError {}

/// One outstanding PIN: 24 bytes, digits inline, no heap.
#[derive(Clone, Copy)]
struct Outstanding {
    expires_at_ms: u64,
    digits: [u8; PIN_LEN_MAX],
    len: u8,
    /// Wrong tries so far; `attempts_max` of them make the PIN dead.
    wrong: u8,
}

impl Outstanding {
    fn digits(&self) -> &[u8] {
        self.digits
            .get(..usize::from(self.len))
            .unwrap_or(&self.digits)
    }
}

/// The PINs of one shard and the rate limits on requesting them.
pub struct PinRegistry {
    pin_len: usize,
    ttl_ms: u64,
    attempts_max: u32,
    outstanding_max: usize,
    pins: HashMap<UserId, Outstanding>,
    per_phone: RateLimiter<UserId>,
    per_source: RateLimiter<IpAddr>,
    /// No expired PIN can exist before this time (see `make_room`).
    purge_not_before_ms: u64,
}

impl fmt::Debug for PinRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinRegistry")
            .field("outstanding", &self.pins.len())
            .field("outstanding_max", &self.outstanding_max)
            .finish_non_exhaustive()
    }
}

impl PinRegistry {
    /// A registry with the PIN bounds of `limits` (assumed validated;
    /// out-of-range values are clamped so nothing breaks).
    pub fn new(limits: &Limits) -> Self {
        Self {
            pin_len: limits.pin_len.clamp(1, PIN_LEN_MAX),
            ttl_ms: limits.pin_ttl_ms,
            attempts_max: limits.pin_attempts_max.clamp(1, u32::from(u8::MAX)),
            outstanding_max: limits.pins_outstanding_max.max(1),
            pins: HashMap::new(),
            per_phone: RateLimiter::new(limits.pin_requests_per_phone, limits.rate_keys_max),
            per_source: RateLimiter::new(limits.pin_requests_per_source, limits.rate_keys_max),
            purge_not_before_ms: 0,
        }
    }

    /// Issues a new PIN for `user`, replacing any outstanding one (which
    /// stops working). The source limit is checked first and pays for
    /// every request that reaches it, so one address hammering a number
    /// uses up its own budget; the number's budget is only spent by
    /// requests the source limit let through.
    pub fn request(
        &mut self,
        user: UserId,
        source: IpAddr,
        now_ms: u64,
        rng: &mut impl rand::RngCore,
    ) -> Result<IssuedPin, PinError> {
        if let RateDecision::Limited { retry_after_ms } =
            self.per_source.acquire(&source_key(source), now_ms)
        {
            return Err(PinError::RateLimited {
                limit: PinLimit::Source,
                retry_after_ms,
            });
        }
        if let RateDecision::Limited { retry_after_ms } = self.per_phone.acquire(&user, now_ms) {
            return Err(PinError::RateLimited {
                limit: PinLimit::Phone,
                retry_after_ms,
            });
        }
        if !self.pins.contains_key(&user) {
            self.make_room(now_ms)?;
        }
        let mut digits = [0u8; PIN_LEN_MAX];
        for d in digits.iter_mut().take(self.pin_len) {
            *d = b'0' + random_digit(rng)?;
        }
        let len = u8::try_from(self.pin_len).unwrap_or(u8::MAX);
        let expires_at_ms = now_ms.saturating_add(self.ttl_ms);
        let entry = Outstanding {
            expires_at_ms,
            digits,
            len,
            wrong: 0,
        };
        let pin = String::from_utf8_lossy(entry.digits()).into_owned();
        self.pins.insert(user, entry);
        // Bound kept: a new key got here only through make_room.
        debug_assert!(self.pins.len() <= self.outstanding_max);
        Ok(IssuedPin { pin, expires_at_ms })
    }

    /// Checks `pin` for `user`. A correct PIN is consumed (a second verify
    /// fails with `NotRequested`). The comparison takes the same time
    /// wherever the digits differ.
    pub fn verify(&mut self, user: UserId, pin: &str, now_ms: u64) -> Result<(), PinError> {
        let Some(entry) = self.pins.get_mut(&user) else {
            return Err(PinError::NotRequested);
        };
        if now_ms >= entry.expires_at_ms {
            self.pins.remove(&user);
            return Err(PinError::Expired);
        }
        let wrong = u32::from(entry.wrong);
        if wrong >= self.attempts_max {
            // Dead PIN: kept until it expires only to answer this clearly.
            return Err(PinError::AttemptsExceeded);
        }
        // Constant time over the digits; a length mismatch (public
        // information) is simply unequal.
        let equal: bool = entry.digits().ct_eq(pin.as_bytes()).into();
        if equal {
            self.pins.remove(&user);
            return Ok(());
        }
        entry.wrong = entry.wrong.saturating_add(1);
        let wrong = wrong + 1;
        if wrong >= self.attempts_max {
            Err(PinError::AttemptsExceeded)
        } else {
            Err(PinError::Invalid {
                attempts_left: self.attempts_max - wrong,
            })
        }
    }

    /// Drops expired PINs and refilled rate-limit keys. Returns the number
    /// of PINs dropped. Call it now and then (e.g. once a minute).
    pub fn purge(&mut self, now_ms: u64) -> usize {
        self.per_phone.purge(now_ms);
        self.per_source.purge(now_ms);
        let before = self.pins.len();
        self.purge_pins(now_ms);
        before - self.pins.len()
    }

    /// PINs outstanding (dead and expired ones included until purged).
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// True when no PIN is outstanding.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// The configured PIN length.
    pub fn pin_len(&self) -> usize {
        self.pin_len
    }

    fn make_room(&mut self, now_ms: u64) -> Result<(), PinError> {
        if self.pins.len() < self.outstanding_max {
            return Ok(());
        }
        if now_ms < self.purge_not_before_ms {
            return Err(PinError::TooManyOutstanding {
                retry_after_ms: self.purge_not_before_ms - now_ms,
            });
        }
        let earliest = self.purge_pins(now_ms);
        if self.pins.len() < self.outstanding_max {
            return Ok(());
        }
        self.purge_not_before_ms = earliest;
        Err(PinError::TooManyOutstanding {
            retry_after_ms: earliest.saturating_sub(now_ms).max(1),
        })
    }

    /// Drops expired PINs; returns the earliest expiry left (or u64::MAX).
    fn purge_pins(&mut self, now_ms: u64) -> u64 {
        let mut earliest = u64::MAX;
        self.pins.retain(|_, p| {
            let live = p.expires_at_ms > now_ms;
            if live {
                earliest = earliest.min(p.expires_at_ms);
            }
            live
        });
        earliest
    }
}

/// One uniformly distributed digit 0-9 by rejection sampling.
fn random_digit(rng: &mut impl rand::RngCore) -> Result<u8, PinError> {
    for _ in 0..DIGIT_DRAWS_MAX {
        let x = rng.next_u32();
        if x < DIGIT_DRAW_LIMIT {
            // x % 10 < 10: the conversion cannot fail.
            return u8::try_from(x % 10).map_err(|_| PinError::RandomFailure);
        }
    }
    Err(PinError::RandomFailure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::net::Ipv4Addr;

    const ALICE: UserId = UserId(15_551_230_001);
    const BOB: UserId = UserId(15_551_230_002);

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, n))
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn wrong_pin(pin: &str) -> String {
        pin.bytes()
            .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
            .collect()
    }

    #[test]
    fn issue_and_verify_consumes() {
        let mut reg = PinRegistry::new(&Limits::default());
        let issued = reg.request(ALICE, ip(1), 1_000, &mut rng()).unwrap();
        assert_eq!(issued.pin.len(), 6);
        assert!(issued.pin.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(issued.expires_at_ms, 1_000 + 600_000);
        assert!(!format!("{issued:?}").contains(&issued.pin));
        assert_eq!(reg.verify(ALICE, &issued.pin, 2_000), Ok(()));
        assert_eq!(
            reg.verify(ALICE, &issued.pin, 2_000),
            Err(PinError::NotRequested)
        );
        assert!(reg.is_empty());
    }

    #[test]
    fn expiry_bound() {
        let mut reg = PinRegistry::new(&Limits::default());
        let p = reg.request(ALICE, ip(1), 0, &mut rng()).unwrap();
        // One ms before expiry: fine.
        assert_eq!(reg.verify(ALICE, &p.pin, p.expires_at_ms - 1), Ok(()));
        let p = reg.request(ALICE, ip(1), 0, &mut rng()).unwrap();
        // At expiry: refused, and gone.
        assert_eq!(
            reg.verify(ALICE, &p.pin, p.expires_at_ms),
            Err(PinError::Expired)
        );
        assert_eq!(
            reg.verify(ALICE, &p.pin, p.expires_at_ms),
            Err(PinError::NotRequested)
        );
    }

    #[test]
    fn attempts_bound() {
        let limits = Limits::default();
        let max = limits.pin_attempts_max;
        // max - 1 wrong tries, then the right PIN: accepted.
        let mut reg = PinRegistry::new(&limits);
        let p = reg.request(ALICE, ip(1), 0, &mut rng()).unwrap();
        let bad = wrong_pin(&p.pin);
        for i in 1..max {
            assert_eq!(
                reg.verify(ALICE, &bad, 1),
                Err(PinError::Invalid {
                    attempts_left: max - i
                })
            );
        }
        assert_eq!(reg.verify(ALICE, &p.pin, 1), Ok(()));

        // max wrong tries: the PIN is dead, even the right one fails.
        let p = reg.request(ALICE, ip(1), 0, &mut rng()).unwrap();
        let bad = wrong_pin(&p.pin);
        for _ in 1..max {
            assert!(matches!(
                reg.verify(ALICE, &bad, 1),
                Err(PinError::Invalid { .. })
            ));
        }
        assert_eq!(reg.verify(ALICE, &bad, 1), Err(PinError::AttemptsExceeded));
        assert_eq!(
            reg.verify(ALICE, &p.pin, 1),
            Err(PinError::AttemptsExceeded)
        );
        // A new PIN starts afresh.
        let p = reg.request(ALICE, ip(1), 0, &mut rng()).unwrap();
        assert_eq!(reg.verify(ALICE, &p.pin, 1), Ok(()));
    }

    #[test]
    fn wrong_length_and_garbage_count_as_wrong() {
        let mut reg = PinRegistry::new(&Limits::default());
        let p = reg.request(ALICE, ip(1), 0, &mut rng()).unwrap();
        let longer = format!("{}0", p.pin);
        assert!(matches!(
            reg.verify(ALICE, &longer, 1),
            Err(PinError::Invalid { attempts_left: 4 })
        ));
        assert!(matches!(
            reg.verify(ALICE, &p.pin[..5], 1),
            Err(PinError::Invalid { attempts_left: 3 })
        ));
        assert!(matches!(
            reg.verify(ALICE, "", 1),
            Err(PinError::Invalid { attempts_left: 2 })
        ));
        assert_eq!(reg.verify(BOB, &p.pin, 1), Err(PinError::NotRequested));
        assert_eq!(reg.verify(ALICE, &p.pin, 1), Ok(()));
    }

    #[test]
    fn new_request_replaces_old_pin() {
        let mut reg = PinRegistry::new(&Limits::default());
        let mut r = rng();
        let first = reg.request(ALICE, ip(1), 0, &mut r).unwrap();
        let mut second = reg.request(ALICE, ip(1), 0, &mut r).unwrap();
        while second.pin == first.pin {
            second = reg.request(ALICE, ip(1), 0, &mut r).unwrap();
        }
        assert!(matches!(
            reg.verify(ALICE, &first.pin, 1),
            Err(PinError::Invalid { .. })
        ));
        assert_eq!(reg.verify(ALICE, &second.pin, 1), Ok(()));
    }

    #[test]
    fn per_phone_rate_bound() {
        let limits = Limits::default();
        let burst = limits.pin_requests_per_phone.burst;
        let mut reg = PinRegistry::new(&limits);
        let mut r = rng();
        // `burst` requests from different addresses: fine.
        for i in 0..burst {
            assert!(reg
                .request(ALICE, ip(u8::try_from(i).unwrap()), 0, &mut r)
                .is_ok());
        }
        // One more: refused by the phone limit.
        let err = reg.request(ALICE, ip(99), 0, &mut r).unwrap_err();
        assert_eq!(
            err,
            PinError::RateLimited {
                limit: PinLimit::Phone,
                retry_after_ms: limits.pin_requests_per_phone.interval_ms()
            }
        );
        assert_eq!(err.code(), ErrorCode::PinRateLimited);
        assert_eq!(err.retry_after_ms(), Some(200_000));
        // Another number is unaffected.
        assert!(reg.request(BOB, ip(99), 0, &mut r).is_ok());
        // After the wait: allowed again.
        assert!(reg.request(ALICE, ip(99), 200_000, &mut r).is_ok());
    }

    #[test]
    fn per_source_rate_bound() {
        let limits = Limits::default();
        let burst = limits.pin_requests_per_source.burst;
        let mut reg = PinRegistry::new(&limits);
        let mut r = rng();
        for i in 0..u64::from(burst) {
            let user = UserId(15_551_000_000 + i);
            assert!(reg.request(user, ip(1), 0, &mut r).is_ok());
        }
        let err = reg.request(BOB, ip(1), 0, &mut r).unwrap_err();
        assert!(matches!(
            err,
            PinError::RateLimited {
                limit: PinLimit::Source,
                ..
            }
        ));
        // The refused request did not spend BOB's phone budget.
        for _ in 0..limits.pin_requests_per_phone.burst {
            assert!(reg.request(BOB, ip(2), 0, &mut r).is_ok());
        }
    }

    #[test]
    fn ipv6_source_limited_per_64() {
        let limits = Limits {
            pin_requests_per_source: crate::limits::Rate::new(2, 1_000),
            ..Limits::default()
        };
        let mut reg = PinRegistry::new(&limits);
        let mut r = rng();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        let c: IpAddr = "2001:db8::3".parse().unwrap();
        assert!(reg.request(UserId(15_550_000_001), a, 0, &mut r).is_ok());
        assert!(reg.request(UserId(15_550_000_002), b, 0, &mut r).is_ok());
        assert!(reg.request(UserId(15_550_000_003), c, 0, &mut r).is_err());
    }

    #[test]
    fn outstanding_bound_and_purge() {
        let limits = Limits {
            pins_outstanding_max: 3,
            ..Limits::default()
        };
        let mut reg = PinRegistry::new(&limits);
        let mut r = rng();
        for i in 0..3u8 {
            let user = UserId(15_552_000_000 + u64::from(i));
            reg.request(user, ip(i), 100 * u64::from(i), &mut r)
                .unwrap();
        }
        assert_eq!(reg.len(), 3);
        // One past the bound: refused until the first PIN expires.
        let err = reg.request(BOB, ip(9), 1_000, &mut r).unwrap_err();
        assert_eq!(
            err,
            PinError::TooManyOutstanding {
                retry_after_ms: 600_000 - 1_000
            }
        );
        assert_eq!(err.code(), ErrorCode::Overloaded);
        // Re-requesting for a number that already has one is fine.
        assert!(reg
            .request(UserId(15_552_000_002), ip(8), 1_000, &mut r)
            .is_ok());
        assert_eq!(reg.len(), 3);
        // At the first expiry, a slot frees itself.
        assert!(reg.request(BOB, ip(9), 600_000, &mut r).is_ok());
        assert_eq!(reg.len(), 3);
        assert_eq!(reg.purge(600_099), 0);
        assert_eq!(reg.purge(600_100), 1);
        assert_eq!(reg.purge(10_000_000), 2);
        assert!(reg.is_empty());
    }

    #[test]
    fn digits_are_uniform() {
        let limits = Limits {
            pin_len: 10,
            pin_requests_per_phone: crate::limits::Rate::new(u32::MAX, 1),
            pin_requests_per_source: crate::limits::Rate::new(u32::MAX, 1),
            ..Limits::default()
        };
        let mut reg = PinRegistry::new(&limits);
        let mut r = rng();
        let mut counts = [0u32; 10];
        for _ in 0..5_000 {
            let p = reg.request(ALICE, ip(1), 0, &mut r).unwrap();
            assert_eq!(p.pin.len(), 10);
            for b in p.pin.bytes() {
                counts[usize::from(b - b'0')] += 1;
            }
        }
        // 50,000 digits, 5,000 expected each; sd ~67. Allow 5 sd.
        for (d, &c) in counts.iter().enumerate() {
            assert!((4_665..=5_335).contains(&c), "digit {d}: {c}");
        }
    }

    /// Returns the given values in a cycle.
    struct Scripted(Vec<u32>, usize);

    impl rand::RngCore for Scripted {
        fn next_u32(&mut self) -> u32 {
            let v = self.0[self.1 % self.0.len()];
            self.1 += 1;
            v
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32())
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            for b in dst {
                *b = self.next_u32().to_le_bytes()[0];
            }
        }
    }

    #[test]
    fn rejection_sampling_skips_the_biased_tail() {
        // The top 6 values would bias digits 0-5; they are skipped.
        let mut r = Scripted(vec![u32::MAX, DIGIT_DRAW_LIMIT, DIGIT_DRAW_LIMIT - 1], 0);
        assert_eq!(random_digit(&mut r), Ok(9));
        assert_eq!(r.1, 3);
        let mut r = Scripted(vec![DIGIT_DRAW_LIMIT], 0);
        assert_eq!(random_digit(&mut r), Err(PinError::RandomFailure));
        assert_eq!(r.1, DIGIT_DRAWS_MAX);
        let mut reg = PinRegistry::new(&Limits::default());
        assert_eq!(
            reg.request(ALICE, ip(1), 0, &mut Scripted(vec![u32::MAX], 0)),
            Err(PinError::RandomFailure)
        );
        assert_eq!(PinError::RandomFailure.code(), ErrorCode::Internal);
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            PinError::from(PhoneError::MissingPlus).code(),
            ErrorCode::InvalidPhone
        );
        assert_eq!(
            PinError::Invalid { attempts_left: 1 }.code(),
            ErrorCode::PinInvalid
        );
        assert_eq!(PinError::Expired.code(), ErrorCode::PinExpired);
        assert_eq!(PinError::NotRequested.code(), ErrorCode::PinExpired);
        assert_eq!(
            PinError::AttemptsExceeded.code(),
            ErrorCode::PinAttemptsExceeded
        );
    }
}
