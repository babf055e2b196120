//! Every bound the engine enforces, in one plain struct. Defaults are named
//! constants; units come last in names (`pin_ttl_ms`, `inbox_len_max`).

use std::fmt;

use tern_wire::{MAX_FRAME_LEN_DEFAULT, MAX_FRAME_LEN_MAX};

/// A token-bucket rate: at most `burst` events at once, refilled at `burst`
/// events per `period_ms` (one token every `period_ms / burst`, rounded up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Bucket size: events allowed back to back.
    pub burst: u32,
    /// Time to refill an empty bucket completely.
    pub period_ms: u64,
}

impl Rate {
    /// `burst` events per `period_ms`.
    pub const fn new(burst: u32, period_ms: u64) -> Self {
        Self { burst, period_ms }
    }

    /// Time for one token to come back, rounded up so the rate is never
    /// exceeded (and never 0 for a valid rate).
    pub fn interval_ms(&self) -> u64 {
        self.period_ms.div_ceil(u64::from(self.burst.max(1)))
    }
}

/// Shortest PIN length `validate` accepts.
pub const PIN_LEN_MIN: usize = 4;
/// Longest PIN length `validate` accepts.
pub const PIN_LEN_MAX: usize = 10;
/// Default PIN length.
pub const PIN_LEN_DEFAULT: usize = 6;
/// Default PIN lifetime: 10 minutes.
pub const PIN_TTL_MS_DEFAULT: u64 = 10 * 60 * 1000;
/// Default wrong tries before a PIN is dead.
pub const PIN_ATTEMPTS_MAX_DEFAULT: u32 = 5;
/// Most wrong tries `validate` accepts (keeps brute force out of reach:
/// 3 PINs per 10 min times this many guesses against 10^pin_len).
pub const PIN_ATTEMPTS_MAX_MAX: u32 = 10;
/// Default PIN requests per phone number: 3 per 10 minutes.
pub const PIN_REQUESTS_PER_PHONE_DEFAULT: Rate = Rate::new(3, 10 * 60 * 1000);
/// Default PIN requests per source address: 20 per 10 minutes.
pub const PIN_REQUESTS_PER_SOURCE_DEFAULT: Rate = Rate::new(20, 10 * 60 * 1000);
/// Default bound on PINs outstanding per shard at once.
pub const PINS_OUTSTANDING_MAX_DEFAULT: usize = 100_000;
/// Default failed logins per user: 10 per minute.
pub const LOGIN_FAILURES_PER_USER_DEFAULT: Rate = Rate::new(10, 60 * 1000);
/// Default failed logins per source address: 30 per minute.
pub const LOGIN_FAILURES_PER_SOURCE_DEFAULT: Rate = Rate::new(30, 60 * 1000);
/// Default time an unauthenticated connection may take to log in: 10 s.
pub const LOGIN_TIMEOUT_MS_DEFAULT: u64 = 10 * 1000;
/// Default time without any inbound frame before a connection is closed.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 5 * 60 * 1000;
/// Default quiet time after which the server sends a Ping.
pub const PING_INTERVAL_MS_DEFAULT: u64 = 2 * 60 * 1000;
/// Default items queued per user.
pub const INBOX_LEN_MAX_DEFAULT: usize = 10_000;
/// Default items queued per shard, all users together.
pub const SHARD_INBOX_ITEMS_MAX_DEFAULT: usize = 5_000_000;
/// Default message body bytes held in memory per shard: 1 GiB.
pub const SHARD_INBOX_BYTES_MAX_DEFAULT: usize = 1024 * 1024 * 1024;
/// Default dedup entries remembered per sender.
pub const DEDUP_WINDOW_LEN_DEFAULT: usize = 256;
/// Default dedup entries per shard, all senders together.
pub const DEDUP_ENTRIES_MAX_DEFAULT: usize = 1_000_000;
/// Default bytes waiting to be written to one connection: 256 KiB.
pub const CONN_OUTBOUND_BYTES_MAX_DEFAULT: usize = 256 * 1024;
/// Default connections per shard.
pub const CONNECTIONS_PER_SHARD_MAX_DEFAULT: usize = 50_000;
/// Default text message size: 16 KiB of UTF-8.
pub const BODY_TEXT_BYTES_MAX_DEFAULT: usize = 16 * 1024;
/// Default media URL length.
pub const MEDIA_URL_BYTES_MAX_DEFAULT: usize = 2048;
/// Default MIME type length (RFC 6838: type and subtype of at most 127
/// characters each, plus the slash).
pub const MEDIA_MIME_BYTES_MAX_DEFAULT: usize = 255;
/// Default media caption size: 4 KiB.
pub const MEDIA_CAPTION_BYTES_MAX_DEFAULT: usize = 4 * 1024;
/// Default base64 thumbnail size: 48 KiB.
pub const THUMBNAIL_B64_BYTES_MAX_DEFAULT: usize = 48 * 1024;
/// Default number of keys one rate limiter tracks.
pub const RATE_KEYS_MAX_DEFAULT: usize = 100_000;
/// Inbox items streamed to a device before it must acknowledge some: keeps
/// a device from being flooded and bounds what one connection buffers.
pub const DELIVER_WINDOW_LEN_DEFAULT: u32 = 256;
/// How long a connection's outbound bytes may sit unsent (its socket full)
/// before it is cut off as a slow consumer. Its inbox is kept.
pub const WRITE_STALL_MS_MAX_DEFAULT: u64 = 30_000;

/// Room a `Deliver` frame needs besides its variable-length fields:
/// FlatBuffers tables, vtables, offsets, string length prefixes and
/// terminators, padding, the 32-byte sha256 vector and the fixed fields.
/// Measured well under 400 bytes (test `body::tests::largest_body_fits`);
/// 512 leaves room for fields appended later.
pub const DELIVER_OVERHEAD_BYTES: usize = 512;

/// Every engine bound. Plain data; [`Limits::validate`] refuses nonsense.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Digits in a PIN.
    pub pin_len: usize,
    /// How long a PIN stays valid.
    pub pin_ttl_ms: u64,
    /// Wrong tries after which a PIN is dead.
    pub pin_attempts_max: u32,
    /// PIN requests per phone number.
    pub pin_requests_per_phone: Rate,
    /// PIN requests per source address (IPv6 per /64).
    pub pin_requests_per_source: Rate,
    /// PINs outstanding per shard at once.
    pub pins_outstanding_max: usize,
    /// Failed logins per user.
    pub login_failures_per_user: Rate,
    /// Failed logins per source address (IPv6 per /64).
    pub login_failures_per_source: Rate,
    /// Time an unauthenticated connection may take to log in.
    pub login_timeout_ms: u64,
    /// Time without an inbound frame before the connection is closed.
    pub idle_timeout_ms: u64,
    /// Quiet time after which the server sends a Ping.
    pub ping_interval_ms: u64,
    /// Items queued per user.
    pub inbox_len_max: usize,
    /// Items queued per shard.
    pub shard_inbox_items_max: usize,
    /// Message body bytes queued per shard.
    pub shard_inbox_bytes_max: usize,
    /// Dedup entries remembered per sender.
    pub dedup_window_len: usize,
    /// Dedup entries remembered per shard.
    pub dedup_entries_max: usize,
    /// Bytes waiting to be written to one connection.
    pub conn_outbound_bytes_max: usize,
    /// Connections per shard.
    pub connections_per_shard_max: usize,
    /// Text message bytes.
    pub body_text_bytes_max: usize,
    /// Media URL bytes.
    pub media_url_bytes_max: usize,
    /// Media MIME type bytes.
    pub media_mime_bytes_max: usize,
    /// Media caption bytes.
    pub media_caption_bytes_max: usize,
    /// Base64 thumbnail bytes.
    pub thumbnail_b64_bytes_max: usize,
    /// Largest frame payload (length prefix excluded), both directions.
    pub max_frame_len: u32,
    /// Keys tracked by one rate limiter.
    pub rate_keys_max: usize,
    /// Unacknowledged inbox items in flight to one device.
    pub deliver_window_len: u32,
    /// Time a connection's output may stay unsent before it is cut off.
    pub write_stall_ms_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            pin_len: PIN_LEN_DEFAULT,
            pin_ttl_ms: PIN_TTL_MS_DEFAULT,
            pin_attempts_max: PIN_ATTEMPTS_MAX_DEFAULT,
            pin_requests_per_phone: PIN_REQUESTS_PER_PHONE_DEFAULT,
            pin_requests_per_source: PIN_REQUESTS_PER_SOURCE_DEFAULT,
            pins_outstanding_max: PINS_OUTSTANDING_MAX_DEFAULT,
            login_failures_per_user: LOGIN_FAILURES_PER_USER_DEFAULT,
            login_failures_per_source: LOGIN_FAILURES_PER_SOURCE_DEFAULT,
            login_timeout_ms: LOGIN_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            ping_interval_ms: PING_INTERVAL_MS_DEFAULT,
            inbox_len_max: INBOX_LEN_MAX_DEFAULT,
            shard_inbox_items_max: SHARD_INBOX_ITEMS_MAX_DEFAULT,
            shard_inbox_bytes_max: SHARD_INBOX_BYTES_MAX_DEFAULT,
            dedup_window_len: DEDUP_WINDOW_LEN_DEFAULT,
            dedup_entries_max: DEDUP_ENTRIES_MAX_DEFAULT,
            conn_outbound_bytes_max: CONN_OUTBOUND_BYTES_MAX_DEFAULT,
            connections_per_shard_max: CONNECTIONS_PER_SHARD_MAX_DEFAULT,
            body_text_bytes_max: BODY_TEXT_BYTES_MAX_DEFAULT,
            media_url_bytes_max: MEDIA_URL_BYTES_MAX_DEFAULT,
            media_mime_bytes_max: MEDIA_MIME_BYTES_MAX_DEFAULT,
            media_caption_bytes_max: MEDIA_CAPTION_BYTES_MAX_DEFAULT,
            thumbnail_b64_bytes_max: THUMBNAIL_B64_BYTES_MAX_DEFAULT,
            max_frame_len: MAX_FRAME_LEN_DEFAULT,
            rate_keys_max: RATE_KEYS_MAX_DEFAULT,
            deliver_window_len: DELIVER_WINDOW_LEN_DEFAULT,
            write_stall_ms_max: WRITE_STALL_MS_MAX_DEFAULT,
        }
    }
}

/// Why a [`Limits`] value was refused. Every variant names the field.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitsError {
    /// The field is 0 where 0 would refuse everything or divide by zero.
    Zero {
        /// Field name.
        field: &'static str,
    },
    /// The field is outside its accepted range.
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// Given value.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// The field does not fit with another field.
    Inconsistent {
        /// Field name.
        field: &'static str,
        /// What it must satisfy.
        rule: &'static str,
    },
}

impl LimitsError {
    /// The name of the offending field.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Zero { field }
            | Self::OutOfRange { field, .. }
            | Self::Inconsistent { field, .. } => field,
        }
    }
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zero { field } => write!(f, "limit `{field}` must not be 0"),
            Self::OutOfRange {
                field,
                value,
                min,
                max,
            } => write!(f, "limit `{field}` is {value}, must be in {min}..={max}"),
            Self::Inconsistent { field, rule } => write!(f, "limit `{field}`: {rule}"),
        }
    }
}

impl std::error::Error for LimitsError {}

fn nonzero(field: &'static str, value: u64) -> Result<(), LimitsError> {
    if value == 0 {
        Err(LimitsError::Zero { field })
    } else {
        Ok(())
    }
}

fn in_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), LimitsError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(LimitsError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

fn rate(field: &'static str, r: Rate) -> Result<(), LimitsError> {
    if r.burst == 0 || r.period_ms == 0 {
        return Err(LimitsError::Zero { field });
    }
    Ok(())
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Limits {
    /// Checks every field; the first problem found is returned, naming the
    /// field.
    pub fn validate(&self) -> Result<(), LimitsError> {
        in_range(
            "pin_len",
            as_u64(self.pin_len),
            as_u64(PIN_LEN_MIN),
            as_u64(PIN_LEN_MAX),
        )?;
        nonzero("pin_ttl_ms", self.pin_ttl_ms)?;
        in_range(
            "pin_attempts_max",
            u64::from(self.pin_attempts_max),
            1,
            u64::from(PIN_ATTEMPTS_MAX_MAX),
        )?;
        rate("pin_requests_per_phone", self.pin_requests_per_phone)?;
        rate("pin_requests_per_source", self.pin_requests_per_source)?;
        nonzero("pins_outstanding_max", as_u64(self.pins_outstanding_max))?;
        rate("login_failures_per_user", self.login_failures_per_user)?;
        rate("login_failures_per_source", self.login_failures_per_source)?;
        nonzero("login_timeout_ms", self.login_timeout_ms)?;
        nonzero("deliver_window_len", u64::from(self.deliver_window_len))?;
        nonzero("write_stall_ms_max", self.write_stall_ms_max)?;
        nonzero("idle_timeout_ms", self.idle_timeout_ms)?;
        nonzero("ping_interval_ms", self.ping_interval_ms)?;
        if self.ping_interval_ms >= self.idle_timeout_ms {
            return Err(LimitsError::Inconsistent {
                field: "ping_interval_ms",
                rule: "must be less than idle_timeout_ms, or a quiet peer is cut off before it is pinged",
            });
        }
        nonzero("inbox_len_max", as_u64(self.inbox_len_max))?;
        nonzero("shard_inbox_items_max", as_u64(self.shard_inbox_items_max))?;
        if self.inbox_len_max > self.shard_inbox_items_max {
            return Err(LimitsError::Inconsistent {
                field: "inbox_len_max",
                rule: "must not exceed shard_inbox_items_max",
            });
        }
        nonzero("shard_inbox_bytes_max", as_u64(self.shard_inbox_bytes_max))?;
        nonzero("dedup_window_len", as_u64(self.dedup_window_len))?;
        nonzero("dedup_entries_max", as_u64(self.dedup_entries_max))?;
        if self.dedup_window_len > self.dedup_entries_max {
            return Err(LimitsError::Inconsistent {
                field: "dedup_window_len",
                rule: "must not exceed dedup_entries_max",
            });
        }
        nonzero(
            "connections_per_shard_max",
            as_u64(self.connections_per_shard_max),
        )?;
        nonzero("body_text_bytes_max", as_u64(self.body_text_bytes_max))?;
        nonzero("media_url_bytes_max", as_u64(self.media_url_bytes_max))?;
        nonzero("media_mime_bytes_max", as_u64(self.media_mime_bytes_max))?;
        nonzero(
            "thumbnail_b64_bytes_max",
            as_u64(self.thumbnail_b64_bytes_max),
        )?;
        // media_caption_bytes_max may be 0: captions disabled.
        in_range(
            "max_frame_len",
            u64::from(self.max_frame_len),
            1,
            u64::from(MAX_FRAME_LEN_MAX),
        )?;
        let frame = usize::try_from(self.max_frame_len).unwrap_or(usize::MAX);
        // Whatever a sender may put in a message must still fit in the
        // Deliver frame built from it, or it could be accepted and then
        // never delivered.
        if self
            .body_text_bytes_max
            .saturating_add(DELIVER_OVERHEAD_BYTES)
            > frame
        {
            return Err(LimitsError::Inconsistent {
                field: "body_text_bytes_max",
                rule: "plus DELIVER_OVERHEAD_BYTES must fit in max_frame_len",
            });
        }
        let media = self
            .media_url_bytes_max
            .saturating_add(self.media_mime_bytes_max)
            .saturating_add(self.media_caption_bytes_max)
            .saturating_add(self.thumbnail_b64_bytes_max)
            .saturating_add(DELIVER_OVERHEAD_BYTES);
        if media > frame {
            return Err(LimitsError::Inconsistent {
                field: "thumbnail_b64_bytes_max",
                rule: "media url + mime + caption + thumbnail + DELIVER_OVERHEAD_BYTES must fit in max_frame_len",
            });
        }
        // One whole frame (with its 4-byte prefix) must always fit in the
        // outbound buffer, or the largest message could never be sent.
        if self.conn_outbound_bytes_max < frame.saturating_add(4) {
            return Err(LimitsError::Inconsistent {
                field: "conn_outbound_bytes_max",
                rule: "must hold at least one max_frame_len frame and its length prefix",
            });
        }
        nonzero("rate_keys_max", as_u64(self.rate_keys_max))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_named() {
        let l = Limits::default();
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(l.pin_len, 6);
        assert_eq!(l.pin_ttl_ms, 600_000);
        assert_eq!(l.pin_attempts_max, 5);
        assert_eq!(l.login_timeout_ms, 10_000);
        assert_eq!(l.inbox_len_max, 10_000);
        assert_eq!(l.shard_inbox_items_max, 5_000_000);
        assert_eq!(l.conn_outbound_bytes_max, 256 * 1024);
        assert_eq!(l.body_text_bytes_max, 16 * 1024);
        assert_eq!(l.thumbnail_b64_bytes_max, 48 * 1024);
        assert_eq!(l.max_frame_len, MAX_FRAME_LEN_DEFAULT);
    }

    #[test]
    fn rate_interval_rounds_up() {
        assert_eq!(Rate::new(3, 600_000).interval_ms(), 200_000);
        assert_eq!(Rate::new(3, 10).interval_ms(), 4);
        assert_eq!(Rate::new(10, 1).interval_ms(), 1);
    }

    #[test]
    fn pin_len_bounds() {
        for (len, ok) in [(3, false), (4, true), (10, true), (11, false)] {
            let l = Limits {
                pin_len: len,
                ..Limits::default()
            };
            let r = l.validate();
            assert_eq!(r.is_ok(), ok, "pin_len {len}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.field(), "pin_len");
            }
        }
    }

    #[test]
    fn pin_attempts_bounds() {
        for (n, ok) in [(0, false), (1, true), (10, true), (11, false)] {
            let l = Limits {
                pin_attempts_max: n,
                ..Limits::default()
            };
            assert_eq!(l.validate().is_ok(), ok, "pin_attempts_max {n}");
        }
    }

    #[test]
    fn zero_fields_are_named() {
        let cases: Vec<(&str, Limits)> = vec![
            (
                "pin_ttl_ms",
                Limits {
                    pin_ttl_ms: 0,
                    ..Limits::default()
                },
            ),
            (
                "inbox_len_max",
                Limits {
                    inbox_len_max: 0,
                    ..Limits::default()
                },
            ),
            (
                "dedup_window_len",
                Limits {
                    dedup_window_len: 0,
                    ..Limits::default()
                },
            ),
            (
                "rate_keys_max",
                Limits {
                    rate_keys_max: 0,
                    ..Limits::default()
                },
            ),
            (
                "pin_requests_per_phone",
                Limits {
                    pin_requests_per_phone: Rate::new(0, 1000),
                    ..Limits::default()
                },
            ),
            (
                "login_failures_per_source",
                Limits {
                    login_failures_per_source: Rate::new(5, 0),
                    ..Limits::default()
                },
            ),
            (
                "login_timeout_ms",
                Limits {
                    login_timeout_ms: 0,
                    ..Limits::default()
                },
            ),
            (
                "connections_per_shard_max",
                Limits {
                    connections_per_shard_max: 0,
                    ..Limits::default()
                },
            ),
        ];
        for (field, l) in cases {
            assert_eq!(l.validate(), Err(LimitsError::Zero { field }));
        }
    }

    #[test]
    fn max_frame_len_bounds() {
        let big = Limits {
            max_frame_len: MAX_FRAME_LEN_MAX,
            conn_outbound_bytes_max: MAX_FRAME_LEN_MAX as usize + 4,
            ..Limits::default()
        };
        assert_eq!(big.validate(), Ok(()));
        let too_big = Limits {
            max_frame_len: MAX_FRAME_LEN_MAX + 1,
            conn_outbound_bytes_max: MAX_FRAME_LEN_MAX as usize + 5,
            ..Limits::default()
        };
        assert_eq!(too_big.validate().unwrap_err().field(), "max_frame_len");
    }

    #[test]
    fn outbound_buffer_must_hold_one_frame() {
        let frame = MAX_FRAME_LEN_DEFAULT as usize;
        let at = Limits {
            conn_outbound_bytes_max: frame + 4,
            ..Limits::default()
        };
        assert_eq!(at.validate(), Ok(()));
        let under = Limits {
            conn_outbound_bytes_max: frame + 3,
            ..Limits::default()
        };
        assert_eq!(
            under.validate().unwrap_err().field(),
            "conn_outbound_bytes_max"
        );
    }

    #[test]
    fn bodies_must_fit_in_a_frame() {
        let frame = MAX_FRAME_LEN_DEFAULT as usize;
        let at = Limits {
            body_text_bytes_max: frame - DELIVER_OVERHEAD_BYTES,
            ..Limits::default()
        };
        assert_eq!(at.validate(), Ok(()));
        let over = Limits {
            body_text_bytes_max: frame - DELIVER_OVERHEAD_BYTES + 1,
            ..Limits::default()
        };
        assert_eq!(over.validate().unwrap_err().field(), "body_text_bytes_max");

        let d = Limits::default();
        let room = frame
            - DELIVER_OVERHEAD_BYTES
            - d.media_url_bytes_max
            - d.media_mime_bytes_max
            - d.media_caption_bytes_max;
        let at = Limits {
            thumbnail_b64_bytes_max: room,
            ..Limits::default()
        };
        assert_eq!(at.validate(), Ok(()));
        let over = Limits {
            thumbnail_b64_bytes_max: room + 1,
            ..Limits::default()
        };
        assert_eq!(
            over.validate().unwrap_err().field(),
            "thumbnail_b64_bytes_max"
        );
    }

    #[test]
    fn inconsistent_pairs_are_refused() {
        let ping = Limits {
            ping_interval_ms: IDLE_TIMEOUT_MS_DEFAULT,
            ..Limits::default()
        };
        assert_eq!(ping.validate().unwrap_err().field(), "ping_interval_ms");
        let ping_ok = Limits {
            ping_interval_ms: IDLE_TIMEOUT_MS_DEFAULT - 1,
            ..Limits::default()
        };
        assert_eq!(ping_ok.validate(), Ok(()));
        let inbox = Limits {
            inbox_len_max: 11,
            shard_inbox_items_max: 10,
            ..Limits::default()
        };
        assert_eq!(inbox.validate().unwrap_err().field(), "inbox_len_max");
        let dedup = Limits {
            dedup_window_len: 11,
            dedup_entries_max: 10,
            ..Limits::default()
        };
        assert_eq!(dedup.validate().unwrap_err().field(), "dedup_window_len");
    }
}

/// Why a `NAME=VALUE` override was refused.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverrideError {
    /// Not of the form `NAME=VALUE`.
    Syntax(String),
    /// No limit has this name.
    UnknownName(String),
    /// The value does not parse for this limit.
    BadValue {
        name: String,
        value: String,
        expected: &'static str,
    },
}

impl std::fmt::Display for OverrideError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Syntax(s) => write!(f, "`{s}` is not NAME=VALUE"),
            Self::UnknownName(n) => write!(
                f,
                "no limit is called `{n}`; known: {}",
                Limits::NAMES.join(", ")
            ),
            Self::BadValue {
                name,
                value,
                expected,
            } => write!(f, "`{name}={value}`: expected {expected}"),
        }
    }
}

impl std::error::Error for OverrideError {}

fn parse_num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, OverrideError> {
    value
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| OverrideError::BadValue {
            name: name.to_string(),
            value: value.to_string(),
            expected: "a whole number",
        })
}

fn parse_rate(name: &str, value: &str) -> Result<Rate, OverrideError> {
    let bad = || OverrideError::BadValue {
        name: name.to_string(),
        value: value.to_string(),
        expected: "BURST/PERIOD_MS, e.g. 20/600000",
    };
    let (burst, period) = value.split_once('/').ok_or_else(bad)?;
    let burst = burst.trim().replace('_', "").parse().map_err(|_| bad())?;
    let period = period.trim().replace('_', "").parse().map_err(|_| bad())?;
    Ok(Rate::new(burst, period))
}

impl Limits {
    /// Every limit's name, as accepted by [`Limits::set`].
    pub const NAMES: [&'static str; 27] = [
        "pin_len",
        "pin_ttl_ms",
        "pin_attempts_max",
        "pin_requests_per_phone",
        "pin_requests_per_source",
        "pins_outstanding_max",
        "login_failures_per_user",
        "login_failures_per_source",
        "login_timeout_ms",
        "idle_timeout_ms",
        "ping_interval_ms",
        "inbox_len_max",
        "shard_inbox_items_max",
        "shard_inbox_bytes_max",
        "dedup_window_len",
        "dedup_entries_max",
        "conn_outbound_bytes_max",
        "connections_per_shard_max",
        "body_text_bytes_max",
        "media_url_bytes_max",
        "media_mime_bytes_max",
        "media_caption_bytes_max",
        "thumbnail_b64_bytes_max",
        "max_frame_len",
        "rate_keys_max",
        "deliver_window_len",
        "write_stall_ms_max",
    ];

    /// Applies one `NAME=VALUE` override (rates as `BURST/PERIOD_MS`).
    /// Call [`Limits::validate`] after the last one.
    pub fn set(&mut self, assignment: &str) -> Result<(), OverrideError> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| OverrideError::Syntax(assignment.to_string()))?;
        let name = name.trim();
        match name {
            "pin_len" => self.pin_len = parse_num(name, value)?,
            "pin_ttl_ms" => self.pin_ttl_ms = parse_num(name, value)?,
            "pin_attempts_max" => self.pin_attempts_max = parse_num(name, value)?,
            "pin_requests_per_phone" => self.pin_requests_per_phone = parse_rate(name, value)?,
            "pin_requests_per_source" => self.pin_requests_per_source = parse_rate(name, value)?,
            "pins_outstanding_max" => self.pins_outstanding_max = parse_num(name, value)?,
            "login_failures_per_user" => self.login_failures_per_user = parse_rate(name, value)?,
            "login_failures_per_source" => {
                self.login_failures_per_source = parse_rate(name, value)?;
            }
            "login_timeout_ms" => self.login_timeout_ms = parse_num(name, value)?,
            "idle_timeout_ms" => self.idle_timeout_ms = parse_num(name, value)?,
            "ping_interval_ms" => self.ping_interval_ms = parse_num(name, value)?,
            "inbox_len_max" => self.inbox_len_max = parse_num(name, value)?,
            "shard_inbox_items_max" => self.shard_inbox_items_max = parse_num(name, value)?,
            "shard_inbox_bytes_max" => self.shard_inbox_bytes_max = parse_num(name, value)?,
            "dedup_window_len" => self.dedup_window_len = parse_num(name, value)?,
            "dedup_entries_max" => self.dedup_entries_max = parse_num(name, value)?,
            "conn_outbound_bytes_max" => self.conn_outbound_bytes_max = parse_num(name, value)?,
            "connections_per_shard_max" => {
                self.connections_per_shard_max = parse_num(name, value)?;
            }
            "body_text_bytes_max" => self.body_text_bytes_max = parse_num(name, value)?,
            "media_url_bytes_max" => self.media_url_bytes_max = parse_num(name, value)?,
            "media_mime_bytes_max" => self.media_mime_bytes_max = parse_num(name, value)?,
            "media_caption_bytes_max" => self.media_caption_bytes_max = parse_num(name, value)?,
            "thumbnail_b64_bytes_max" => self.thumbnail_b64_bytes_max = parse_num(name, value)?,
            "max_frame_len" => self.max_frame_len = parse_num(name, value)?,
            "rate_keys_max" => self.rate_keys_max = parse_num(name, value)?,
            "deliver_window_len" => self.deliver_window_len = parse_num(name, value)?,
            "write_stall_ms_max" => self.write_stall_ms_max = parse_num(name, value)?,
            other => return Err(OverrideError::UnknownName(other.to_string())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod override_tests {
    use super::*;

    #[test]
    fn every_name_is_settable_and_unknown_names_are_refused() {
        let defaults = Limits::default();
        for name in Limits::NAMES {
            let mut l = Limits::default();
            let rate =
                name.starts_with("pin_requests_per_") || name.starts_with("login_failures_per_");
            let value = if rate { "7/1000" } else { "7" };
            l.set(&format!("{name}={value}")).unwrap();
            assert_ne!(l, defaults, "{name} changed nothing");
        }
        let mut l = Limits::default();
        assert!(matches!(
            l.set("nope=1"),
            Err(OverrideError::UnknownName(_))
        ));
        assert!(matches!(
            l.set("inbox_len_max"),
            Err(OverrideError::Syntax(_))
        ));
        assert!(matches!(
            l.set("inbox_len_max=lots"),
            Err(OverrideError::BadValue { .. })
        ));
        assert!(matches!(
            l.set("pin_requests_per_source=5"),
            Err(OverrideError::BadValue { .. })
        ));
        l.set("pin_requests_per_source=1_000_000/1000").unwrap();
        assert_eq!(l.pin_requests_per_source, Rate::new(1_000_000, 1000));
    }
}
