//! Identifiers: user ids from phone numbers, and seeds for client message
//! ids.
//!
//! A user id is the digits of the E.164 phone number: `+15551234567` is
//! user `15551234567`. E.164 allows at most 15 digits, so every id fits a
//! `u64` and the phone number can be rebuilt as `+{id}`.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{ArgumentReason, ClientError};

/// Most digits in an E.164 number.
pub const E164_DIGITS_MAX: usize = 15;

/// A validated E.164 phone number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Phone {
    e164: String,
    user_id: u64,
}

impl Phone {
    /// Parses `+` followed by 1 to 15 digits, the first not 0. Spaces and
    /// dashes between digits are ignored (`+1 555-123-4567`).
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let invalid = || ClientError::InvalidArgument(ArgumentReason::InvalidPhone(s.to_owned()));
        let digits_part = s.trim().strip_prefix('+').ok_or_else(invalid)?;
        let mut digits = String::with_capacity(E164_DIGITS_MAX);
        for c in digits_part.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' => {}
                _ => return Err(invalid()),
            }
        }
        if digits.is_empty() || digits.len() > E164_DIGITS_MAX || digits.starts_with('0') {
            return Err(invalid());
        }
        // At most 15 decimal digits: always fits u64.
        let user_id = digits.parse::<u64>().map_err(|_| invalid())?;
        Ok(Self {
            e164: format!("+{digits}"),
            user_id,
        })
    }

    /// The number as sent on the wire, e.g. `+15551234567`.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The user id: the number's digits.
    pub fn user_id(&self) -> u64 {
        self.user_id
    }
}

impl FromStr for Phone {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

/// Parses a recipient given as a phone number (`+15551234567`) or as a
/// numeric user id (`15551234567`); returns the user id.
pub fn parse_recipient(s: &str) -> Result<u64, ClientError> {
    let t = s.trim();
    if t.starts_with('+') {
        return Phone::parse(t).map(|p| p.user_id());
    }
    match t.parse::<u64>() {
        Ok(id) if id != 0 => Ok(id),
        _ => Err(ClientError::InvalidArgument(
            ArgumentReason::InvalidRecipient(s.to_owned()),
        )),
    }
}

/// How a user id is shown to people: its phone number, `+{digits}`.
pub fn display_user_id(user_id: u64) -> String {
    format!("+{user_id}")
}

/// A first `client_msg_id` for a process that does not persist its
/// counter: microseconds since the Unix epoch. Two runs of the same device
/// then never reuse an id (unless the clock goes back), so the server never
/// mistakes a new message for a retry of an old one. Time is passed in: the
/// caller reads the clock.
pub fn client_msg_id_seed(now: SystemTime) -> u64 {
    let micros = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    // Saturates in the year 586,000; never 0 so "0 = none" stays free.
    u64::try_from(micros).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn phone_parses_to_its_digits() {
        let p = Phone::parse("+15551234567").unwrap();
        assert_eq!(p.user_id(), 15_551_234_567);
        assert_eq!(p.as_str(), "+15551234567");
        assert_eq!(Phone::parse(" +1 555-123-4567 ").unwrap(), p);
        assert_eq!(p.to_string(), "+15551234567");
        assert_eq!(
            "+491701234567".parse::<Phone>().unwrap().user_id(),
            491_701_234_567
        );
    }

    #[test]
    fn phone_rejects_non_e164() {
        for bad in [
            "",
            "+",
            "15551234567",
            "+0555",
            "+1555123456789012",
            "+1555abc",
            "++1555",
            "+1.555",
        ] {
            assert!(
                matches!(
                    Phone::parse(bad),
                    Err(ClientError::InvalidArgument(ArgumentReason::InvalidPhone(
                        _
                    )))
                ),
                "{bad:?} accepted"
            );
        }
        // 15 digits is the E.164 maximum and is accepted.
        assert_eq!(
            Phone::parse("+999999999999999").unwrap().user_id(),
            999_999_999_999_999
        );
    }

    #[test]
    fn recipient_is_phone_or_id() {
        assert_eq!(parse_recipient("+15551234567").unwrap(), 15_551_234_567);
        assert_eq!(parse_recipient("15551234567").unwrap(), 15_551_234_567);
        assert!(parse_recipient("0").is_err());
        assert!(parse_recipient("bob").is_err());
        assert!(parse_recipient("+0").is_err());
        assert_eq!(display_user_id(15_551_234_567), "+15551234567");
    }

    #[test]
    fn seed_is_micros_and_never_zero() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(client_msg_id_seed(t), 1_700_000_000_123_456);
        assert_eq!(client_msg_id_seed(UNIX_EPOCH), 1);
    }
}
