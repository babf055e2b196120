//! `[limits]`: every [`tern_core::limits::Limits`] field under its own name.
//!
//! The struct is generated from one field list; `to_limits` builds a
//! `Limits` with a struct literal, so a field added to `Limits` and not here
//! fails to compile instead of silently being unconfigurable.

use serde::{Deserialize, Serialize};
use tern_core::limits::{Limits, Rate};

/// A token-bucket rate in the config file: `{ burst = 20, period_ms = 600000 }`
/// (at most `burst` events at once, refilled over `period_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Events allowed back to back.
    pub burst: u32,
    /// Time to refill an empty bucket completely.
    pub period_ms: u64,
}

impl From<Rate> for RateConfig {
    fn from(r: Rate) -> Self {
        Self {
            burst: r.burst,
            period_ms: r.period_ms,
        }
    }
}

impl From<RateConfig> for Rate {
    fn from(r: RateConfig) -> Self {
        Rate::new(r.burst, r.period_ms)
    }
}

macro_rules! limits_config {
    ($($name:ident: $ty:ty,)*) => {
        /// The `[limits]` section: one key per [`Limits`] field. Keys left
        /// out keep the engine defaults.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct LimitsConfig {
            $(pub $name: $ty,)*
        }

        impl From<&Limits> for LimitsConfig {
            fn from(l: &Limits) -> Self {
                Self { $($name: l.$name.into(),)* }
            }
        }

        impl LimitsConfig {
            /// Every key of the section, in file order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name),)*];

            /// The engine's `Limits` (not yet validated).
            pub fn to_limits(&self) -> Limits {
                Limits { $($name: self.$name.into(),)* }
            }
        }
    };
}

limits_config! {
    pin_len: usize,
    pin_ttl_ms: u64,
    pin_attempts_max: u32,
    pin_requests_per_phone: RateConfig,
    pin_requests_per_source: RateConfig,
    pins_outstanding_max: usize,
    login_failures_per_user: RateConfig,
    login_failures_per_source: RateConfig,
    login_timeout_ms: u64,
    idle_timeout_ms: u64,
    ping_interval_ms: u64,
    inbox_len_max: usize,
    shard_inbox_items_max: usize,
    shard_inbox_bytes_max: usize,
    dedup_window_len: usize,
    dedup_entries_max: usize,
    conn_outbound_bytes_max: usize,
    connections_per_shard_max: usize,
    body_text_bytes_max: usize,
    media_url_bytes_max: usize,
    media_mime_bytes_max: usize,
    media_caption_bytes_max: usize,
    thumbnail_b64_bytes_max: usize,
    max_frame_len: u32,
    rate_keys_max: usize,
    deliver_window_len: u32,
    write_stall_ms_max: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self::from(&Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_engine_and_round_trip() {
        assert_eq!(LimitsConfig::NAMES, &Limits::NAMES[..]);
        assert_eq!(LimitsConfig::default().to_limits(), Limits::default());
        let l = Limits {
            inbox_len_max: 7,
            pin_requests_per_source: Rate::new(9, 1000),
            ..Limits::default()
        };
        assert_eq!(LimitsConfig::from(&l).to_limits(), l);
    }
}
