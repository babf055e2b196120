//! User identity: a user id is its E.164 phone number read as an integer,
//! and a user's home shard is a fixed hash of that id.

use std::fmt;

use tern_wire::ErrorCode;

/// Fewest digits (country code included) an accepted phone number has.
pub const PHONE_DIGITS_MIN: usize = 8;

/// Most digits E.164 allows (country code included).
pub const PHONE_DIGITS_MAX: usize = 15;

/// Smallest user id: the smallest `PHONE_DIGITS_MIN`-digit number.
pub const USER_ID_MIN: u64 = 10_000_000;

/// Largest user id: the largest `PHONE_DIGITS_MAX`-digit number.
pub const USER_ID_MAX: u64 = 999_999_999_999_999;

/// A user. The value is the E.164 number's digits as an integer
/// (`+15551234567` is `UserId(15551234567)`), so the id is a pure function
/// of the phone number and back. E.164 numbers never start with 0, so no
/// leading zero is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(pub u64);

/// Why a phone number or user id was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhoneError {
    /// The number does not start with `+`.
    MissingPlus,
    /// A byte that is not an ASCII digit, at this byte offset (the `+` is
    /// offset 0). Spaces, dashes and letters all end here.
    NotDigit {
        /// Byte offset of the offending byte.
        at: usize,
    },
    /// The first digit is 0 (no country code starts with 0).
    LeadingZero,
    /// Fewer than [`PHONE_DIGITS_MIN`] digits.
    TooShort {
        /// Digits given.
        digits: usize,
    },
    /// More than [`PHONE_DIGITS_MAX`] digits.
    TooLong {
        /// Digits given (counted up to the first byte past the bound).
        digits: usize,
    },
    /// A numeric user id outside `USER_ID_MIN..=USER_ID_MAX`.
    IdOutOfRange {
        /// The refused id.
        id: u64,
    },
}

impl PhoneError {
    /// The protocol code for this error.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidPhone
    }
}

impl fmt::Display for PhoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingPlus => write!(f, "phone number must start with '+'"),
            Self::NotDigit { at } => write!(f, "phone number has a non-digit at byte {at}"),
            Self::LeadingZero => write!(f, "phone number must not start with 0"),
            Self::TooShort { digits } => write!(
                f,
                "phone number has {digits} digits, at least {PHONE_DIGITS_MIN} required"
            ),
            Self::TooLong { digits } => write!(
                f,
                "phone number has {digits}+ digits, at most {PHONE_DIGITS_MAX} allowed"
            ),
            Self::IdOutOfRange { id } => {
                write!(f, "user id {id} is outside {USER_ID_MIN}..={USER_ID_MAX}")
            }
        }
    }
}

impl std::error::Error for PhoneError {}

impl UserId {
    /// Parses an E.164 number: `+`, then 8 to 15 ASCII digits, the first
    /// one 1-9. Nothing else is accepted: no spaces, dashes or brackets.
    pub fn from_phone(phone: &str) -> Result<Self, PhoneError> {
        let bytes = phone.as_bytes();
        let digits = match bytes.split_first() {
            Some((b'+', rest)) => rest,
            _ => return Err(PhoneError::MissingPlus),
        };
        let mut value: u64 = 0;
        for (i, &b) in digits.iter().enumerate() {
            if i == PHONE_DIGITS_MAX {
                // Stop before the accumulator could overflow on hostile
                // input; the length alone is enough to refuse.
                return Err(PhoneError::TooLong { digits: i + 1 });
            }
            if !b.is_ascii_digit() {
                return Err(PhoneError::NotDigit { at: i + 1 });
            }
            if i == 0 && b == b'0' {
                return Err(PhoneError::LeadingZero);
            }
            // At most 15 digits: value < 10^15 < 2^50, no overflow.
            value = value * 10 + u64::from(b - b'0');
        }
        if digits.len() < PHONE_DIGITS_MIN {
            return Err(PhoneError::TooShort {
                digits: digits.len(),
            });
        }
        debug_assert!((USER_ID_MIN..=USER_ID_MAX).contains(&value));
        Ok(Self(value))
    }

    /// Checks a numeric id from the wire (`Login.user_id`, `Send.to`): it
    /// must be the id of some valid phone number.
    pub fn from_wire(id: u64) -> Result<Self, PhoneError> {
        if (USER_ID_MIN..=USER_ID_MAX).contains(&id) {
            Ok(Self(id))
        } else {
            Err(PhoneError::IdOutOfRange { id })
        }
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The E.164 phone number of this user (`+` and the digits).
    pub fn to_phone(self) -> String {
        format!("+{}", self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

/// The splitmix64 finalizer (Steele, Lea, Flood 2014; the output function
/// of `java.util.SplittableRandom`). A bijection on u64 with full
/// avalanche, so sequential phone numbers spread evenly.
///
/// STABILITY: data on disk is stored per shard, so this function and its
/// constants must never change between releases. The test
/// `home_shard_is_pinned` holds known answers.
pub const fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The shard a user lives on: `mix64(user) % shards`. A pure function of
/// the id and the shard count.
///
/// `shards` must be at least 1; the runtime's configuration check refuses
/// 0 before any shard starts, so 0 here is a programming error and the
/// assertion (one compare) stays on.
pub fn home_shard(user: UserId, shards: u16) -> u16 {
    assert!(shards > 0, "home_shard: shard count must be at least 1");
    let shard = mix64(user.0) % u64::from(shards);
    // Cannot truncate: the remainder is below `shards`, a u16.
    #[allow(clippy::cast_possible_truncation)]
    let shard = shard as u16;
    shard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_numbers_and_round_trips() {
        let u = UserId::from_phone("+15551234567").unwrap();
        assert_eq!(u, UserId(15_551_234_567));
        assert_eq!(u.to_phone(), "+15551234567");
        assert_eq!(UserId::from_phone(&u.to_phone()), Ok(u));
        assert_eq!(u.to_string(), "+15551234567");
    }

    #[test]
    fn digit_count_bounds() {
        // 8 digits: the minimum is accepted, 7 is refused.
        assert_eq!(UserId::from_phone("+12345678"), Ok(UserId(12_345_678)));
        assert_eq!(
            UserId::from_phone("+1234567"),
            Err(PhoneError::TooShort { digits: 7 })
        );
        // 15 digits: the maximum is accepted, 16 is refused.
        assert_eq!(
            UserId::from_phone("+999999999999999"),
            Ok(UserId(USER_ID_MAX))
        );
        assert_eq!(
            UserId::from_phone("+1234567890123456"),
            Err(PhoneError::TooLong { digits: 16 })
        );
        assert_eq!(UserId::from_phone("+10000000"), Ok(UserId(USER_ID_MIN)));
        // Very long input stops early, never overflows.
        let long = format!("+{}", "9".repeat(10_000));
        assert_eq!(
            UserId::from_phone(&long),
            Err(PhoneError::TooLong { digits: 16 })
        );
    }

    #[test]
    fn rejects_malformed_numbers() {
        assert_eq!(
            UserId::from_phone("15551234567"),
            Err(PhoneError::MissingPlus)
        );
        assert_eq!(UserId::from_phone(""), Err(PhoneError::MissingPlus));
        assert_eq!(
            UserId::from_phone("+"),
            Err(PhoneError::TooShort { digits: 0 })
        );
        assert_eq!(
            UserId::from_phone("+1 555 1234567"),
            Err(PhoneError::NotDigit { at: 2 })
        );
        assert_eq!(
            UserId::from_phone(" +15551234567"),
            Err(PhoneError::MissingPlus)
        );
        assert_eq!(
            UserId::from_phone("+15551234567 "),
            Err(PhoneError::NotDigit { at: 12 })
        );
        assert_eq!(
            UserId::from_phone("+1555abc4567"),
            Err(PhoneError::NotDigit { at: 5 })
        );
        assert_eq!(
            UserId::from_phone("+1-555-1234567"),
            Err(PhoneError::NotDigit { at: 2 })
        );
        assert_eq!(
            UserId::from_phone("++15551234567"),
            Err(PhoneError::NotDigit { at: 1 })
        );
        assert_eq!(
            UserId::from_phone("+05551234567"),
            Err(PhoneError::LeadingZero)
        );
        // Non-ASCII digits (Arabic-Indic) are not digits here.
        assert_eq!(
            UserId::from_phone("+١٢٣٤٥٦٧٨٩"),
            Err(PhoneError::NotDigit { at: 1 })
        );
        assert_eq!(PhoneError::MissingPlus.code(), ErrorCode::InvalidPhone);
    }

    #[test]
    fn wire_id_bounds() {
        assert_eq!(UserId::from_wire(USER_ID_MIN), Ok(UserId(USER_ID_MIN)));
        assert_eq!(
            UserId::from_wire(USER_ID_MIN - 1),
            Err(PhoneError::IdOutOfRange {
                id: USER_ID_MIN - 1
            })
        );
        assert_eq!(UserId::from_wire(USER_ID_MAX), Ok(UserId(USER_ID_MAX)));
        assert_eq!(
            UserId::from_wire(USER_ID_MAX + 1),
            Err(PhoneError::IdOutOfRange {
                id: USER_ID_MAX + 1
            })
        );
        assert!(UserId::from_wire(0).is_err());
    }

    #[test]
    fn home_shard_is_pinned() {
        // Known answers. If this test fails the hash changed, and every
        // existing data directory would put users on the wrong shard.
        assert_eq!(mix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix64(15_551_234_567), 0x63A5_E940_E948_6FBB);
        assert_eq!(home_shard(UserId(15_551_234_567), 1), 0);
        assert_eq!(home_shard(UserId(15_551_234_567), 8), 3);
        assert_eq!(home_shard(UserId(15_551_234_567), 1024), 955);
        assert_eq!(home_shard(UserId(447_700_900_123), 8), 1);
        assert_eq!(home_shard(UserId(4_915_112_345_678), 3), 0);
    }

    #[test]
    fn home_shard_in_range_at_the_bounds() {
        for shards in [1u16, 2, 3, u16::MAX] {
            for id in [USER_ID_MIN, USER_ID_MAX, 15_551_234_567] {
                assert!(home_shard(UserId(id), shards) < shards);
            }
        }
    }

    #[test]
    #[should_panic(expected = "shard count")]
    fn home_shard_zero_shards_is_a_bug() {
        home_shard(UserId(USER_ID_MIN), 0);
    }

    #[test]
    fn home_shard_balances_sequential_numbers() {
        const USERS: u64 = 100_000;
        for shards in 2u16..=8 {
            let mut counts = vec![0u64; usize::from(shards)];
            for n in 0..USERS {
                let user = UserId::from_phone(&format!("+1555{:07}", n)).unwrap();
                counts[usize::from(home_shard(user, shards))] += 1;
            }
            let expected = USERS / u64::from(shards);
            for (shard, &count) in counts.iter().enumerate() {
                let diff = count.abs_diff(expected);
                // Within 3% of a perfectly even split.
                assert!(
                    diff * 100 <= expected * 3,
                    "shards={shards} shard={shard} count={count} expected={expected}"
                );
            }
        }
    }
}
