//! The metrics registry: per shard a block of atomics the shard writes
//! (events, or once per tick from `ShardStats`) and anyone reads without a
//! lock; Prometheus text rendering and a JSON snapshot for `tern ctl stats`.
//!
//! Writers are single (each shard owns its block), so plain `Relaxed`
//! stores and `fetch_add`s suffice: a scrape may see one counter a tick
//! newer than another, never a torn value.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tern_core::shard::ShardStats;
use tern_wire::ErrorCode;

use crate::sms::SmsError;

use super::alerts::QueueKind;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Copies a count kept elsewhere (the core's `ShardStats`).
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-bucket histogram of integer observations. `bounds` are
/// inclusive upper bounds (Prometheus `le`), ascending; one more bucket
/// catches everything above the last bound.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Rendering divisor: 1_000_000 renders microseconds as seconds.
    scale: u64,
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending), rendered divided by `scale`.
    pub fn new(bounds: &'static [u64], scale: u64) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w.first() < w.get(1)));
        Self {
            bounds,
            scale: scale.max(1),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn record(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy (each field read once).
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            le: self.bounds.to_vec(),
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
            scale: self.scale,
        }
    }
}

/// A histogram's values at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets, in the recorded unit.
    pub le: Vec<u64>,
    /// Observations per bucket (not cumulative); one more than `le`, the
    /// last counting values above every bound.
    pub counts: Vec<u64>,
    /// Sum of observations, in the recorded unit.
    pub sum: u64,
    /// Number of observations.
    pub count: u64,
    /// Divisor to the rendered unit (1_000_000: microseconds to seconds).
    pub scale: u64,
}

impl HistogramSnapshot {
    /// Upper bound of the bucket holding quantile `q` (0..=1), in the
    /// recorded unit; `None` when empty or in the overflow bucket.
    pub fn quantile_bound(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // Rank of the quantile, 1-based; a float is fine for display.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return self.le.get(i).copied();
            }
        }
        None
    }
}

/// Commit batch sizes (records per fdatasync).
pub const BATCH_ITEMS_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
/// fdatasync latency, microseconds.
pub const FSYNC_US_BOUNDS: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
/// Send -> ServerAck latency, microseconds.
pub const SEND_ACK_US_BOUNDS: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];
/// Send -> delivered latency, microseconds (recipients may be offline for
/// hours).
pub const SEND_DELIVERED_US_BOUNDS: &[u64] = &[
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    1_800_000_000,
    3_600_000_000,
    86_400_000_000,
];

/// Microseconds per second: histograms in µs are rendered in seconds.
pub const US_PER_S: u64 = 1_000_000;

/// Why a registration PIN could not be sent (label `reason` of
/// `tern_pins_failed_total`).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinFailure {
    /// The gateway did not answer in time.
    Timeout,
    /// The gateway answered a non-2xx status.
    Status,
    /// Connecting or talking to the gateway failed.
    Transport,
    /// The outbox file could not be written.
    Outbox,
    /// The gateway is misconfigured.
    Config,
}

impl PinFailure {
    /// Every reason, in label order.
    pub const ALL: [PinFailure; 5] = [
        PinFailure::Timeout,
        PinFailure::Status,
        PinFailure::Transport,
        PinFailure::Outbox,
        PinFailure::Config,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            PinFailure::Timeout => "timeout",
            PinFailure::Status => "status",
            PinFailure::Transport => "transport",
            PinFailure::Outbox => "outbox",
            PinFailure::Config => "config",
        }
    }

    /// The reason for a gateway error.
    pub fn of(e: &SmsError) -> PinFailure {
        match e {
            SmsError::Timeout => PinFailure::Timeout,
            SmsError::Status(_) => PinFailure::Status,
            SmsError::Outbox { .. } => PinFailure::Outbox,
            SmsError::Config(_) => PinFailure::Config,
            _ => PinFailure::Transport,
        }
    }

    fn index(self) -> usize {
        match self {
            PinFailure::Timeout => 0,
            PinFailure::Status => 1,
            PinFailure::Transport => 2,
            PinFailure::Outbox => 3,
            PinFailure::Config => 4,
        }
    }
}

/// Number of `code` label values: every named code plus `unknown`.
pub const ERROR_LABELS: usize = ErrorCode::ALL.len() + 1;

fn error_index(code: ErrorCode) -> usize {
    ErrorCode::ALL
        .iter()
        .position(|c| *c == code)
        .unwrap_or(ErrorCode::ALL.len())
}

/// `QueueFull` -> `queue_full`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Label value of an error code: `queue_full`, ..., `unknown`.
pub fn error_label(i: usize) -> String {
    match ErrorCode::ALL.get(i) {
        Some(code) => snake_case(&format!("{code:?}")),
        None => "unknown".to_string(),
    }
}

/// Per-tick values of a shard's gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardGauges {
    /// `Shard::connections()`.
    pub connections: u64,
    /// `Shard::online_users()`.
    pub online_users: u64,
    /// `Shard::queued_items()`: all users' queues together.
    pub queue_items: u64,
    /// The longest single user queue (`Inboxes::longest(1)`).
    pub queue_longest_items: u64,
    /// Mesh messages queued for other shards, not yet taken by them.
    pub mesh_queue_depth: u64,
    /// `Shard::spilled_items()`: queued messages whose body is only on disk.
    pub queue_items_spilled: u64,
    /// Segment files of the shard's log.
    pub log_segments: u64,
    /// 1 while new stores are refused because the log is behind.
    pub log_backpressure: u64,
}

/// One shard's metrics. Written by that shard only; read by anyone.
/// Aligned so two shards' blocks never share a cache line.
#[derive(Debug)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// Open connections (gauge).
    pub connections: Gauge,
    /// Logged-in users with a connection here (gauge).
    pub online_users: Gauge,
    /// Items queued for this shard's users (gauge).
    pub queue_items: Gauge,
    /// Longest single user queue (gauge).
    pub queue_longest_items: Gauge,
    /// Mesh messages queued for other shards (gauge).
    pub mesh_queue_depth: Gauge,
    /// Queued messages whose body is only in the log (gauge).
    pub queue_items_spilled: Gauge,
    /// Segment files of the log (gauge).
    pub log_segments: Gauge,
    /// 1 while stores are refused for log backpressure (gauge).
    pub log_backpressure: Gauge,
    /// Log segments deleted by reclaim.
    pub log_segments_reclaimed: Counter,
    /// Live records reclaim copied forward out of old segments.
    pub log_records_copied: Counter,
    /// 1 once the shard is poisoned (gauge): it stores nothing more.
    pub poisoned: Gauge,
    /// Connections accepted or adopted.
    pub connections_opened: Counter,
    /// Connections refused at the per-shard bound.
    pub connections_refused: Counter,
    /// Successful logins.
    pub logins: Counter,
    /// Failed logins.
    pub login_failures: Counter,
    /// Completed registrations.
    pub registrations: Counter,
    /// PINs the gateway accepted.
    pub pins_sent: Counter,
    /// Messages answered with ServerAck (stored or deduplicated).
    pub messages_accepted: Counter,
    /// Messages stored (first time seen).
    pub messages_stored: Counter,
    /// Retries answered from the dedup table.
    pub messages_deduplicated: Counter,
    /// Messages acknowledged by the recipient's device.
    pub messages_delivered: Counter,
    /// Receipts stored.
    pub receipts_stored: Counter,
    /// Receipts dropped (sender's inbox full).
    pub receipts_dropped: Counter,
    /// Inbound frames rejected (all reasons).
    pub frames_rejected: Counter,
    /// Connections moved to their user's home shard.
    pub migrations_out: Counter,
    /// Connections cut off as slow consumers.
    pub slow_consumers: Counter,
    /// Records per group commit.
    pub commit_batch_items: Histogram,
    /// fdatasync latency, µs.
    pub fsync_latency_us: Histogram,
    /// Send received -> ServerAck written, µs.
    pub send_ack_latency_us: Histogram,
    /// Send received -> DeliverAck from the recipient, µs.
    pub send_delivered_latency_us: Histogram,
    errors: [Counter; ERROR_LABELS],
    pins_failed: [Counter; PinFailure::ALL.len()],
    alerts_firing: [Gauge; QueueKind::ALL.len()],
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self {
            connections: Gauge::default(),
            online_users: Gauge::default(),
            queue_items: Gauge::default(),
            queue_longest_items: Gauge::default(),
            mesh_queue_depth: Gauge::default(),
            queue_items_spilled: Gauge::default(),
            log_segments: Gauge::default(),
            log_backpressure: Gauge::default(),
            log_segments_reclaimed: Counter::default(),
            log_records_copied: Counter::default(),
            poisoned: Gauge::default(),
            connections_opened: Counter::default(),
            connections_refused: Counter::default(),
            logins: Counter::default(),
            login_failures: Counter::default(),
            registrations: Counter::default(),
            pins_sent: Counter::default(),
            messages_accepted: Counter::default(),
            messages_stored: Counter::default(),
            messages_deduplicated: Counter::default(),
            messages_delivered: Counter::default(),
            receipts_stored: Counter::default(),
            receipts_dropped: Counter::default(),
            frames_rejected: Counter::default(),
            migrations_out: Counter::default(),
            slow_consumers: Counter::default(),
            commit_batch_items: Histogram::new(BATCH_ITEMS_BOUNDS, 1),
            fsync_latency_us: Histogram::new(FSYNC_US_BOUNDS, US_PER_S),
            send_ack_latency_us: Histogram::new(SEND_ACK_US_BOUNDS, US_PER_S),
            send_delivered_latency_us: Histogram::new(SEND_DELIVERED_US_BOUNDS, US_PER_S),
            errors: Default::default(),
            pins_failed: Default::default(),
            alerts_firing: Default::default(),
        }
    }
}

impl ShardMetrics {
    /// Copies the core's cumulative counters (call once per tick).
    pub fn observe_stats(&self, s: &ShardStats) {
        self.connections_opened.set(s.connections_opened);
        self.connections_refused.set(s.connections_refused);
        self.logins.set(s.logins);
        self.login_failures.set(s.login_failures);
        self.registrations.set(s.registrations);
        self.pins_sent.set(s.pins_sent);
        self.messages_accepted
            .set(s.messages_stored.saturating_add(s.messages_deduplicated));
        self.messages_stored.set(s.messages_stored);
        self.messages_deduplicated.set(s.messages_deduplicated);
        self.messages_delivered.set(s.messages_delivered);
        self.receipts_stored.set(s.receipts_stored);
        self.receipts_dropped.set(s.receipts_dropped);
        self.frames_rejected.set(s.frames_rejected);
        self.migrations_out.set(s.migrations_out);
        self.slow_consumers.set(s.slow_consumers);
    }

    /// Sets the per-tick gauges.
    pub fn set_gauges(&self, g: &ShardGauges) {
        self.connections.set(g.connections);
        self.online_users.set(g.online_users);
        self.queue_items.set(g.queue_items);
        self.queue_longest_items.set(g.queue_longest_items);
        self.mesh_queue_depth.set(g.mesh_queue_depth);
        self.queue_items_spilled.set(g.queue_items_spilled);
        self.log_segments.set(g.log_segments);
        self.log_backpressure.set(g.log_backpressure);
    }

    /// Sets whether the shard is poisoned (`Shard::is_poisoned()`).
    pub fn set_poisoned(&self, poisoned: bool) {
        self.poisoned.set(u64::from(poisoned));
    }

    /// Counts one `Error` frame sent to a client.
    pub fn record_error(&self, code: ErrorCode) {
        if let Some(c) = self.errors.get(error_index(code)) {
            c.inc();
        }
    }

    /// Copies a per-code error count kept elsewhere.
    pub fn set_error_count(&self, code: ErrorCode, n: u64) {
        if let Some(c) = self.errors.get(error_index(code)) {
            c.set(n);
        }
    }

    /// Errors sent with `code` so far.
    pub fn error_count(&self, code: ErrorCode) -> u64 {
        self.errors.get(error_index(code)).map_or(0, Counter::get)
    }

    /// Counts one PIN the gateway failed to send.
    pub fn record_pin_failed(&self, reason: PinFailure) {
        if let Some(c) = self.pins_failed.get(reason.index()) {
            c.inc();
        }
    }

    /// PINs failed for `reason` so far.
    pub fn pins_failed(&self, reason: PinFailure) -> u64 {
        self.pins_failed.get(reason.index()).map_or(0, Counter::get)
    }

    /// Sets whether the alert for `kind` is firing on this shard.
    pub fn set_alert_firing(&self, kind: QueueKind, firing: bool) {
        if let Some(g) = self.alerts_firing.get(kind.index()) {
            g.set(u64::from(firing));
        }
    }

    /// Whether the alert for `kind` is firing on this shard.
    pub fn alert_firing(&self, kind: QueueKind) -> bool {
        self.alerts_firing
            .get(kind.index())
            .is_some_and(|g| g.get() != 0)
    }
}

/// The registry: one [`ShardMetrics`] per shard, fixed at start. Share it
/// as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    shards: Box<[ShardMetrics]>,
    start_time_unix_s: u64,
}

impl Metrics {
    /// A registry for `shards` shards, started now.
    pub fn new(shards: u16) -> Arc<Metrics> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::new_at(shards, now)
    }

    /// A registry with a given start time (Unix seconds), for exact tests.
    pub fn new_at(shards: u16, start_time_unix_s: u64) -> Arc<Metrics> {
        Arc::new(Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            start_time_unix_s,
        })
    }

    /// Shard `i`'s block (`None` past the last shard).
    pub fn shard(&self, i: u16) -> Option<&ShardMetrics> {
        self.shards.get(usize::from(i))
    }

    /// Every shard's block, by shard number.
    pub fn shards(&self) -> &[ShardMetrics] {
        &self.shards
    }

    /// Process start, Unix seconds.
    pub fn start_time_unix_s(&self) -> u64 {
        self.start_time_unix_s
    }

    /// Open connections on all shards.
    pub fn connections_total(&self) -> u64 {
        self.shards.iter().map(|s| s.connections.get()).sum()
    }

    /// Everything as plain data (`tern ctl stats`).
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            start_time_unix_s: self.start_time_unix_s,
            shards: self
                .shards
                .iter()
                .enumerate()
                .map(|(i, s)| shard_snapshot(u16::try_from(i).unwrap_or(u16::MAX), s))
                .collect(),
        }
    }
}

/// All metrics at one moment, as JSON for `tern ctl stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Process start, Unix seconds.
    pub start_time_unix_s: u64,
    /// Per shard.
    pub shards: Vec<ShardSnapshot>,
}

/// One shard's metrics at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSnapshot {
    /// Shard number.
    pub shard: u16,
    /// Gauges and counters by metric name (without `tern_`).
    pub values: BTreeMap<String, u64>,
    /// Non-zero error counts by code label.
    pub errors: BTreeMap<String, u64>,
    /// Non-zero PIN failures by reason.
    pub pins_failed: BTreeMap<String, u64>,
    /// Queue kinds whose alert is firing.
    pub alerts_firing: Vec<String>,
    /// Histograms by metric name.
    pub histograms: BTreeMap<String, HistogramSnapshot>,
}

type Getter = fn(&ShardMetrics) -> u64;
type HistGetter = fn(&ShardMetrics) -> &Histogram;

/// Gauges: name, help, value.
const GAUGES: &[(&str, &str, Getter)] = &[
    ("tern_connections", "Open client connections.", |s| {
        s.connections.get()
    }),
    (
        "tern_online_users",
        "Logged-in users with a connection on the shard.",
        |s| s.online_users.get(),
    ),
    (
        "tern_offline_queue_items",
        "Items (messages and receipts) queued for the shard's users, all users together.",
        |s| s.queue_items.get(),
    ),
    (
        "tern_offline_queue_longest_items",
        "Length of the longest single user queue on the shard.",
        |s| s.queue_longest_items.get(),
    ),
    (
        "tern_mesh_queue_depth",
        "Messages the shard has queued for other shards (cross-core mesh).",
        |s| s.mesh_queue_depth.get(),
    ),
    (
        "tern_offline_queue_items_spilled",
        "Queued messages whose body is only in the log (read back when the device is ready).",
        |s| s.queue_items_spilled.get(),
    ),
    (
        "tern_log_segments",
        "Segment files of the shard's log.",
        |s| s.log_segments.get(),
    ),
    (
        "tern_log_backpressure",
        "1 while the shard refuses new messages (ShardUnavailable) because its log is behind.",
        |s| s.log_backpressure.get(),
    ),
    (
        "tern_shard_poisoned",
        "1 once the shard's log failed (a write, fsync, segment create or delete, or a refused \
         append, a record that could not be read back): the shard stores and acknowledges nothing \
         more until a restart.",
        |s| s.poisoned.get(),
    ),
];

/// Counters: name, help, value.
const COUNTERS: &[(&str, &str, Getter)] = &[
    (
        "tern_connections_opened_total",
        "Connections accepted or adopted from another shard.",
        |s| s.connections_opened.get(),
    ),
    (
        "tern_connections_refused_total",
        "Connections refused at limits.connections_per_shard_max.",
        |s| s.connections_refused.get(),
    ),
    ("tern_logins_total", "Successful logins.", |s| {
        s.logins.get()
    }),
    ("tern_login_failures_total", "Failed logins.", |s| {
        s.login_failures.get()
    }),
    (
        "tern_registrations_total",
        "Completed registrations (PIN verified, device key issued).",
        |s| s.registrations.get(),
    ),
    (
        "tern_pins_sent_total",
        "Registration PINs the SMS gateway accepted.",
        |s| s.pins_sent.get(),
    ),
    (
        "tern_messages_accepted_total",
        "Messages answered with ServerAck (stored or deduplicated).",
        |s| s.messages_accepted.get(),
    ),
    (
        "tern_messages_stored_total",
        "Messages stored (first time seen).",
        |s| s.messages_stored.get(),
    ),
    (
        "tern_messages_deduplicated_total",
        "Message retries answered from the dedup table, not stored again.",
        |s| s.messages_deduplicated.get(),
    ),
    (
        "tern_messages_delivered_total",
        "Messages acknowledged by the recipient's device (DeliverAck).",
        |s| s.messages_delivered.get(),
    ),
    (
        "tern_receipts_stored_total",
        "Delivered and read receipts stored.",
        |s| s.receipts_stored.get(),
    ),
    (
        "tern_receipts_dropped_total",
        "Server-made receipts dropped because the sender's queue was full.",
        |s| s.receipts_dropped.get(),
    ),
    (
        "tern_frames_rejected_total",
        "Inbound frames rejected (malformed, too large, unexpected).",
        |s| s.frames_rejected.get(),
    ),
    (
        "tern_migrations_total",
        "Connections moved to their user's home shard.",
        |s| s.migrations_out.get(),
    ),
    (
        "tern_slow_consumers_total",
        "Connections cut off because their output stayed unsent too long.",
        |s| s.slow_consumers.get(),
    ),
    (
        "tern_log_segments_reclaimed_total",
        "Log segments deleted by reclaim (every item in them acknowledged or copied forward).",
        |s| s.log_segments_reclaimed.get(),
    ),
    (
        "tern_log_records_copied_total",
        "Live records reclaim copied forward out of old log segments.",
        |s| s.log_records_copied.get(),
    ),
];

/// Histograms: name, help, histogram.
const HISTOGRAMS: &[(&str, &str, HistGetter)] = &[
    (
        "tern_commit_batch_items",
        "Records per group commit (one fdatasync).",
        |s| &s.commit_batch_items,
    ),
    (
        "tern_fsync_latency_seconds",
        "fdatasync latency of the shard's log.",
        |s| &s.fsync_latency_us,
    ),
    (
        "tern_send_ack_latency_seconds",
        "Time from a Send frame's arrival to its ServerAck.",
        |s| &s.send_ack_latency_us,
    ),
    (
        "tern_send_delivered_latency_seconds",
        "Time from a Send frame's arrival to the recipient's DeliverAck.",
        |s| &s.send_delivered_latency_us,
    ),
];

fn shard_snapshot(shard: u16, s: &ShardMetrics) -> ShardSnapshot {
    let strip = |n: &str| n.strip_prefix("tern_").unwrap_or(n).to_string();
    let values = GAUGES
        .iter()
        .chain(COUNTERS)
        .map(|(name, _, get)| (strip(name), get(s)))
        .collect();
    let errors = s
        .errors
        .iter()
        .enumerate()
        .filter(|(_, c)| c.get() > 0)
        .map(|(i, c)| (error_label(i), c.get()))
        .collect();
    let pins_failed = PinFailure::ALL
        .iter()
        .filter(|r| s.pins_failed(**r) > 0)
        .map(|r| (r.label().to_string(), s.pins_failed(*r)))
        .collect();
    let alerts_firing = QueueKind::ALL
        .iter()
        .filter(|k| s.alert_firing(**k))
        .map(|k| k.label().to_string())
        .collect();
    let histograms = HISTOGRAMS
        .iter()
        .map(|(name, _, get)| (strip(name), get(s).snapshot()))
        .collect();
    ShardSnapshot {
        shard,
        values,
        errors,
        pins_failed,
        alerts_firing,
        histograms,
    }
}

/// `value / scale` as a decimal without trailing zeros: 250 / 10^6 is
/// `0.00025`, 2_500_000 / 10^6 is `2.5`, 7 / 1 is `7`.
pub fn scaled(value: u64, scale: u64) -> String {
    if scale <= 1 {
        return value.to_string();
    }
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = scale.ilog10() as usize;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One gauge or counter family, one line per shard.
pub fn render_simple(
    out: &mut String,
    m: &Metrics,
    name: &str,
    help: &str,
    kind: &str,
    get: Getter,
) {
    header(out, name, help, kind);
    for (i, s) in m.shards.iter().enumerate() {
        let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", get(s));
    }
}

/// One histogram family: cumulative buckets, `_sum` and `_count` per shard.
pub fn render_histogram(out: &mut String, m: &Metrics, name: &str, help: &str, get: HistGetter) {
    header(out, name, help, "histogram");
    for (i, s) in m.shards.iter().enumerate() {
        let h = get(s).snapshot();
        let mut cumulative = 0u64;
        for (j, c) in h.counts.iter().enumerate() {
            cumulative += c;
            let le =
                h.le.get(j)
                    .map_or_else(|| "+Inf".to_string(), |b| scaled(*b, h.scale));
            let _ = writeln!(
                out,
                "{name}_bucket{{shard=\"{i}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{shard=\"{i}\"}} {}",
            scaled(h.sum, h.scale)
        );
        let _ = writeln!(out, "{name}_count{{shard=\"{i}\"}} {}", h.count);
    }
}

/// The whole registry in the Prometheus text exposition format (0.0.4).
pub fn render_prometheus(m: &Metrics) -> String {
    let mut out = String::with_capacity(16 * 1024);
    header(
        &mut out,
        "tern_build_info",
        "Build of the running server (value 1).",
        "gauge",
    );
    let _ = writeln!(
        out,
        "tern_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    header(
        &mut out,
        "tern_start_time_seconds",
        "Process start, Unix time.",
        "gauge",
    );
    let _ = writeln!(out, "tern_start_time_seconds {}", m.start_time_unix_s);
    for (name, help, get) in GAUGES {
        render_simple(&mut out, m, name, help, "gauge", *get);
    }
    for (name, help, get) in COUNTERS {
        render_simple(&mut out, m, name, help, "counter", *get);
    }
    header(
        &mut out,
        "tern_errors_total",
        "Error frames sent to clients, by protocol error code.",
        "counter",
    );
    for (i, s) in m.shards.iter().enumerate() {
        for (j, c) in s.errors.iter().enumerate() {
            let _ = writeln!(
                out,
                "tern_errors_total{{shard=\"{i}\",code=\"{}\"}} {}",
                error_label(j),
                c.get()
            );
        }
    }
    header(
        &mut out,
        "tern_pins_failed_total",
        "Registration PINs the SMS gateway failed to send, by reason.",
        "counter",
    );
    for (i, s) in m.shards.iter().enumerate() {
        for r in PinFailure::ALL {
            let _ = writeln!(
                out,
                "tern_pins_failed_total{{shard=\"{i}\",reason=\"{}\"}} {}",
                r.label(),
                s.pins_failed(r)
            );
        }
    }
    header(
        &mut out,
        "tern_alerts_firing",
        "1 while the queue-length alert of this shard and queue is firing.",
        "gauge",
    );
    for (i, s) in m.shards.iter().enumerate() {
        for k in QueueKind::ALL {
            let _ = writeln!(
                out,
                "tern_alerts_firing{{shard=\"{i}\",queue=\"{}\"}} {}",
                k.label(),
                u64::from(s.alert_firing(k))
            );
        }
    }
    for (name, help, get) in HISTOGRAMS {
        render_histogram(&mut out, m, name, help, *get);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_prints_decimals_without_trailing_zeros() {
        assert_eq!(scaled(7, 1), "7");
        assert_eq!(scaled(250, US_PER_S), "0.00025");
        assert_eq!(scaled(2_500_000, US_PER_S), "2.5");
        assert_eq!(scaled(3_000_000, US_PER_S), "3");
        assert_eq!(scaled(1, US_PER_S), "0.000001");
        assert_eq!(scaled(0, US_PER_S), "0");
    }

    #[test]
    fn counter_family_exact_text() {
        let m = Metrics::new_at(2, 0);
        m.shard(0).unwrap().logins.add(3);
        m.shard(1).unwrap().logins.inc();
        let mut out = String::new();
        render_simple(
            &mut out,
            &m,
            "tern_logins_total",
            "Successful logins.",
            "counter",
            |s| s.logins.get(),
        );
        assert_eq!(
            out,
            "# HELP tern_logins_total Successful logins.\n\
             # TYPE tern_logins_total counter\n\
             tern_logins_total{shard=\"0\"} 3\n\
             tern_logins_total{shard=\"1\"} 1\n"
        );
    }

    #[test]
    fn histogram_exact_text_with_bounds_inclusive() {
        const BOUNDS: &[u64] = &[1_000, 10_000];
        let m = Metrics::new_at(1, 0);
        let s = m.shard(0).unwrap();
        // Replace the fsync histogram's view with a small one: render a
        // standalone histogram through the same function.
        let h = Histogram::new(BOUNDS, US_PER_S);
        for v in [1_000, 1_001, 10_000, 10_001] {
            h.record(v);
        }
        assert_eq!(h.snapshot().counts, vec![1, 2, 1]);
        for v in [1_000, 1_001, 10_000, 10_001] {
            s.fsync_latency_us.record(v);
        }
        let mut out = String::new();
        render_histogram(&mut out, &m, "tern_fsync_latency_seconds", "fsync.", |s| {
            &s.fsync_latency_us
        });
        assert_eq!(
            out,
            "# HELP tern_fsync_latency_seconds fsync.\n\
             # TYPE tern_fsync_latency_seconds histogram\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.00005\"} 0\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.0001\"} 0\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.00025\"} 0\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.0005\"} 0\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.001\"} 1\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.0025\"} 2\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.005\"} 2\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.01\"} 3\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.025\"} 4\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.05\"} 4\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.1\"} 4\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"0.25\"} 4\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"1\"} 4\n\
             tern_fsync_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"} 4\n\
             tern_fsync_latency_seconds_sum{shard=\"0\"} 0.022002\n\
             tern_fsync_latency_seconds_count{shard=\"0\"} 4\n"
        );
    }

    #[test]
    fn stats_snapshot_and_labels_render() {
        let m = Metrics::new_at(1, 1_700_000_000);
        let s = m.shard(0).unwrap();
        s.observe_stats(&ShardStats {
            messages_stored: 5,
            messages_deduplicated: 2,
            logins: 4,
            ..ShardStats::default()
        });
        s.set_gauges(&ShardGauges {
            connections: 9,
            queue_items: 11,
            ..ShardGauges::default()
        });
        s.record_error(ErrorCode::QueueFull);
        s.record_error(ErrorCode::Unknown(999));
        s.record_pin_failed(PinFailure::of(&SmsError::Timeout));
        s.set_alert_firing(QueueKind::UserQueue, true);
        s.set_poisoned(true);
        let text = render_prometheus(&m);
        for line in [
            "tern_start_time_seconds 1700000000",
            "tern_messages_accepted_total{shard=\"0\"} 7",
            "tern_messages_stored_total{shard=\"0\"} 5",
            "tern_logins_total{shard=\"0\"} 4",
            "tern_connections{shard=\"0\"} 9",
            "tern_offline_queue_items{shard=\"0\"} 11",
            "tern_errors_total{shard=\"0\",code=\"queue_full\"} 1",
            "tern_errors_total{shard=\"0\",code=\"unknown\"} 1",
            "tern_errors_total{shard=\"0\",code=\"malformed_frame\"} 0",
            "tern_pins_failed_total{shard=\"0\",reason=\"timeout\"} 1",
            "tern_alerts_firing{shard=\"0\",queue=\"user_queue\"} 1",
            "tern_alerts_firing{shard=\"0\",queue=\"shard_queue\"} 0",
            "tern_shard_poisoned{shard=\"0\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        // Every family has exactly one HELP and one TYPE, and every sample
        // line is `name{labels} value` or `name value`.
        let mut helps = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(helps.insert(name.to_string()), "two HELP for {name}");
            } else if !line.starts_with("# TYPE ") {
                let (series, value) = line.rsplit_once(' ').unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
                let name = series.split('{').next().unwrap();
                assert!(
                    helps.iter().any(|h| name.starts_with(h.as_str())),
                    "{line} has no HELP"
                );
            }
        }
        let snap = m.snapshot();
        let sh = &snap.shards[0];
        assert_eq!(sh.values["messages_accepted_total"], 7);
        assert_eq!(sh.values["shard_poisoned"], 1);
        assert_eq!(sh.errors["queue_full"], 1);
        assert_eq!(sh.pins_failed["timeout"], 1);
        assert_eq!(sh.alerts_firing, vec!["user_queue".to_string()]);
        assert_eq!(m.connections_total(), 9);
    }

    #[test]
    fn quantile_bound_picks_the_bucket() {
        let h = Histogram::new(&[10, 20, 30], 1);
        assert_eq!(h.snapshot().quantile_bound(0.5), None);
        for v in [5, 15, 15, 25] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.quantile_bound(0.25), Some(10));
        assert_eq!(s.quantile_bound(0.5), Some(20));
        assert_eq!(s.quantile_bound(1.0), Some(30));
        h.record(99);
        assert_eq!(h.snapshot().quantile_bound(1.0), None);
    }

    #[test]
    fn error_labels_are_snake_case_and_unique() {
        let labels: Vec<String> = (0..ERROR_LABELS).map(error_label).collect();
        assert_eq!(labels[0], "malformed_frame");
        assert_eq!(labels.last().unwrap(), "unknown");
        let set: std::collections::HashSet<_> = labels.iter().collect();
        assert_eq!(set.len(), labels.len());
    }
}
