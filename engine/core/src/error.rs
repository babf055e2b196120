//! The crate's one error type. Each module has its own reason enum; this
//! wraps them, and every error maps to the stable protocol code a client
//! is sent (`code()`).

use std::fmt;

use tern_wire::ErrorCode;

use crate::account::{AccountError, LoginFail};
use crate::body::BodyError;
use crate::ids::IdError;
use crate::inbox::InboxError;
use crate::limits::LimitsError;
use crate::pin::PinError;
use crate::user::{PhoneError, UserId};

/// Anything the engine core refuses.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A phone number or user id is not valid.
    Phone(PhoneError),
    /// A PIN request or check failed.
    Pin(PinError),
    /// A login failed (unknown user or wrong key; the client is not told
    /// which).
    Login(LoginFail),
    /// Too many failed logins for this user or source address.
    LoginRateLimited {
        /// Time until a login attempt is looked at again.
        retry_after_ms: u64,
    },
    /// An account change was refused.
    Account(AccountError),
    /// The recipient has no account.
    UnknownRecipient {
        /// The recipient named by the sender.
        user: UserId,
    },
    /// A message body is too large or its media reference malformed.
    Body(BodyError),
    /// An inbox bound was reached.
    Inbox(InboxError),
    /// No message id could be made.
    Id(IdError),
    /// The configured limits are inconsistent.
    Limits(LimitsError),
    /// A log record payload could not be read (replay).
    Record(crate::record::RecordError),
}

impl Error {
    /// The protocol code a client is sent for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Phone(e) => e.code(),
            Self::Pin(e) => e.code(),
            Self::Login(e) => e.code(),
            Self::LoginRateLimited { .. } => ErrorCode::LoginRateLimited,
            Self::Account(e) => e.code(),
            Self::UnknownRecipient { .. } => ErrorCode::UnknownRecipient,
            Self::Body(e) => e.code(),
            Self::Inbox(e) => e.code(),
            Self::Id(e) => e.code(),
            // A configuration error never reaches a client in practice.
            Self::Limits(_) | Self::Record(_) => ErrorCode::Internal,
        }
    }

    /// For rate-limit errors: how long the client should wait.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::Pin(e) => e.retry_after_ms(),
            Self::LoginRateLimited { retry_after_ms } => Some(*retry_after_ms),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Phone(e) => e.fmt(f),
            Self::Pin(e) => e.fmt(f),
            Self::Login(e) => e.fmt(f),
            Self::LoginRateLimited { retry_after_ms } => {
                write!(f, "too many failed logins; retry in {retry_after_ms} ms")
            }
            Self::Account(e) => e.fmt(f),
            Self::UnknownRecipient { user } => write!(f, "no such user {user}"),
            Self::Body(e) => e.fmt(f),
            Self::Inbox(e) => e.fmt(f),
            Self::Id(e) => e.fmt(f),
            Self::Limits(e) => e.fmt(f),
            Self::Record(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Phone(e) => Some(e),
            Self::Pin(e) => Some(e),
            Self::Login(e) => Some(e),
            Self::Account(e) => Some(e),
            Self::Body(e) => Some(e),
            Self::Inbox(e) => Some(e),
            Self::Id(e) => Some(e),
            Self::Limits(e) => Some(e),
            Self::Record(e) => Some(e),
            Self::LoginRateLimited { .. } | Self::UnknownRecipient { .. } => None,
        }
    }
}

macro_rules! from_reason {
    ($($reason:ty => $variant:ident),* $(,)?) => {
        $(impl From<$reason> for Error {
            fn from(e: $reason) -> Self {
                Self::$variant(e)
            }
        })*
    };
}

from_reason! {
    PhoneError => Phone,
    PinError => Pin,
    LoginFail => Login,
    AccountError => Account,
    BodyError => Body,
    InboxError => Inbox,
    IdError => Id,
    LimitsError => Limits,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::MediaReason;
    use crate::pin::PinLimit;
    use std::error::Error as _;

    #[test]
    fn every_reason_maps_to_its_code() {
        let cases: Vec<(Error, ErrorCode)> = vec![
            (PhoneError::MissingPlus.into(), ErrorCode::InvalidPhone),
            (
                PinError::RateLimited {
                    limit: PinLimit::Phone,
                    retry_after_ms: 5,
                }
                .into(),
                ErrorCode::PinRateLimited,
            ),
            (
                PinError::Invalid { attempts_left: 2 }.into(),
                ErrorCode::PinInvalid,
            ),
            (PinError::Expired.into(), ErrorCode::PinExpired),
            (
                PinError::AttemptsExceeded.into(),
                ErrorCode::PinAttemptsExceeded,
            ),
            (
                PinError::InvalidPhone(PhoneError::LeadingZero).into(),
                ErrorCode::InvalidPhone,
            ),
            (LoginFail::BadKey.into(), ErrorCode::LoginFailed),
            (LoginFail::UnknownUser.into(), ErrorCode::LoginFailed),
            (
                Error::LoginRateLimited { retry_after_ms: 9 },
                ErrorCode::LoginRateLimited,
            ),
            (
                AccountError::GenerationExhausted {
                    user: UserId(12_345_678),
                }
                .into(),
                ErrorCode::Internal,
            ),
            (
                Error::UnknownRecipient {
                    user: UserId(12_345_678),
                },
                ErrorCode::UnknownRecipient,
            ),
            (
                BodyError::BadMedia(MediaReason::UrlScheme).into(),
                ErrorCode::BadMediaReference,
            ),
            (
                InboxError::UserQueueFull { len: 1 }.into(),
                ErrorCode::QueueFull,
            ),
            (
                InboxError::ShardQueueFull { len: 1 }.into(),
                ErrorCode::QueueFull,
            ),
            (
                InboxError::ShardBytesFull { bytes: 1 }.into(),
                ErrorCode::QueueFull,
            ),
            (IdError::Exhausted { shard: 1 }.into(), ErrorCode::Internal),
            (
                LimitsError::Zero {
                    field: "pin_ttl_ms",
                }
                .into(),
                ErrorCode::Internal,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn retry_after_and_source() {
        let e: Error = PinError::RateLimited {
            limit: PinLimit::Source,
            retry_after_ms: 42,
        }
        .into();
        assert_eq!(e.retry_after_ms(), Some(42));
        assert!(e.source().is_some());
        let e = Error::LoginRateLimited { retry_after_ms: 7 };
        assert_eq!(e.retry_after_ms(), Some(7));
        assert!(e.source().is_none());
        assert_eq!(Error::from(LoginFail::BadKey).retry_after_ms(), None);
        assert!(Error::from(LimitsError::Zero { field: "x" })
            .to_string()
            .contains("`x`"));
    }
}
