//! Queue-length alerts. [`Alerts`] is a sans-IO evaluator: values and
//! `now_ms` in, [`AlertEvent`]s out. An alert fires once when a queue stays
//! above its threshold for the rule's duration and clears once when it is
//! back at or under the threshold.
//!
//! [`report`] turns an event into a log line (WARN when firing) and the
//! `tern_alerts_firing` gauge; [`fire_webhook`] POSTs it as JSON (blocking:
//! call it off the executor). [`AlertWatcher`] puts the three together on a
//! std thread that reads the shards' gauges from [`Metrics`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::metrics::{Metrics, ShardGauges};

/// Default deadline of one webhook POST.
pub const WEBHOOK_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// Default shard queue rule: 100,000 items for 30 s.
pub const SHARD_QUEUE_RULE_DEFAULT: AlertRule = AlertRule {
    threshold: 100_000,
    duration_ms: 30_000,
};

/// Default user queue rule: a single user with 5,000 items (half the
/// default `inbox_len_max`) for 60 s.
pub const USER_QUEUE_RULE_DEFAULT: AlertRule = AlertRule {
    threshold: 5_000,
    duration_ms: 60_000,
};

/// Default mesh rule: 10,000 messages waiting for other shards for 10 s.
pub const MESH_QUEUE_RULE_DEFAULT: AlertRule = AlertRule {
    threshold: 10_000,
    duration_ms: 10_000,
};

/// Webhook events waiting for the sender thread; more are dropped (and
/// logged): the log line and the metric already carry the alert.
pub const WEBHOOK_QUEUE_LEN_MAX: usize = 256;

/// Largest webhook response body read (only to free the connection).
pub const WEBHOOK_RESPONSE_BYTES_MAX: u64 = 4 * 1024;

/// The value of `alert` in events and webhooks.
pub const ALERT_NAME: &str = "tern_queue_length";

/// Which queue an alert watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    /// All items queued for a shard's users together.
    ShardQueue,
    /// The longest single user queue on a shard.
    UserQueue,
    /// Messages a shard has queued for other shards.
    MeshQueue,
}

impl QueueKind {
    /// Every kind, in label order.
    pub const ALL: [QueueKind; 3] = [
        QueueKind::ShardQueue,
        QueueKind::UserQueue,
        QueueKind::MeshQueue,
    ];

    /// Label value and config section name.
    pub fn label(self) -> &'static str {
        match self {
            QueueKind::ShardQueue => "shard_queue",
            QueueKind::UserQueue => "user_queue",
            QueueKind::MeshQueue => "mesh_queue",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            QueueKind::ShardQueue => 0,
            QueueKind::UserQueue => 1,
            QueueKind::MeshQueue => 2,
        }
    }

    /// This kind's value among a shard's gauges.
    pub fn value_in(self, g: &ShardGauges) -> u64 {
        match self {
            QueueKind::ShardQueue => g.queue_items,
            QueueKind::UserQueue => g.queue_longest_items,
            QueueKind::MeshQueue => g.mesh_queue_depth,
        }
    }
}

impl fmt::Display for QueueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Fire when the value stays above `threshold` for `duration_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRule {
    /// Values strictly above this count; 0 disables the rule.
    pub threshold: u64,
    /// How long the value must stay above before the alert fires
    /// (0: at the first observation above).
    pub duration_ms: u64,
}

impl AlertRule {
    /// Whether the rule can fire at all.
    pub fn enabled(&self) -> bool {
        self.threshold > 0
    }
}

/// One rule per queue kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRules {
    /// Shard queue (all users).
    pub shard_queue: AlertRule,
    /// Longest user queue.
    pub user_queue: AlertRule,
    /// Mesh depth.
    pub mesh_queue: AlertRule,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            shard_queue: SHARD_QUEUE_RULE_DEFAULT,
            user_queue: USER_QUEUE_RULE_DEFAULT,
            mesh_queue: MESH_QUEUE_RULE_DEFAULT,
        }
    }
}

impl AlertRules {
    /// The rule for `kind`.
    pub fn get(&self, kind: QueueKind) -> AlertRule {
        match kind {
            QueueKind::ShardQueue => self.shard_queue,
            QueueKind::UserQueue => self.user_queue,
            QueueKind::MeshQueue => self.mesh_queue,
        }
    }
}

/// Whether an event starts or ends an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The queue stayed above the threshold for the duration.
    Firing,
    /// The queue is back at or under the threshold.
    Cleared,
}

/// A firing or a clearing. Serialized as the webhook body:
/// `{"alert","shard","queue","value","threshold","since_ms","state","at_ms"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Always [`ALERT_NAME`].
    pub alert: String,
    /// The shard.
    pub shard: u16,
    /// The queue.
    pub queue: QueueKind,
    /// The observed value that caused the event.
    pub value: u64,
    /// The rule's threshold at the time.
    pub threshold: u64,
    /// When the value first went above the threshold (the caller's clock:
    /// the runtime passes Unix milliseconds).
    pub since_ms: u64,
    /// Firing or cleared.
    pub state: AlertState,
    /// When the event was produced (same clock).
    pub at_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Track {
    #[default]
    Below,
    Above {
        since_ms: u64,
    },
    Firing {
        since_ms: u64,
    },
}

/// The evaluator: per shard and queue kind, below / above since / firing.
#[derive(Clone, Debug)]
pub struct Alerts {
    rules: AlertRules,
    tracks: Vec<[Track; QueueKind::ALL.len()]>,
}

impl Alerts {
    /// An evaluator with every queue below its threshold.
    pub fn new(rules: AlertRules) -> Self {
        Self {
            rules,
            tracks: Vec::new(),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &AlertRules {
        &self.rules
    }

    /// Replaces the rules (live reload). Running timers are kept; an alert
    /// whose rule was disabled or whose new threshold is above the value
    /// clears at its next observation.
    pub fn set_rules(&mut self, rules: AlertRules) {
        self.rules = rules;
    }

    /// Whether the alert of `shard` and `kind` is firing.
    pub fn is_firing(&self, shard: u16, kind: QueueKind) -> bool {
        matches!(
            self.tracks
                .get(usize::from(shard))
                .and_then(|t| t.get(kind.index())),
            Some(Track::Firing { .. })
        )
    }

    /// One observation of a queue. Returns the event it causes, if any:
    /// `Firing` when the value has been above the threshold for at least
    /// the duration (`now_ms - since_ms >= duration_ms`), `Cleared` when a
    /// firing alert's value is back at or under it. A dip under the
    /// threshold before the alert fires restarts the timer.
    pub fn observe(
        &mut self,
        shard: u16,
        kind: QueueKind,
        value: u64,
        now_ms: u64,
    ) -> Option<AlertEvent> {
        let rule = self.rules.get(kind);
        let idx = usize::from(shard);
        if self.tracks.len() <= idx {
            self.tracks.resize(idx + 1, Default::default());
        }
        let track = self.tracks.get_mut(idx)?.get_mut(kind.index())?;
        let above = rule.enabled() && value > rule.threshold;
        let event = |state, since_ms| AlertEvent {
            alert: ALERT_NAME.to_string(),
            shard,
            queue: kind,
            value,
            threshold: rule.threshold,
            since_ms,
            state,
            at_ms: now_ms,
        };
        match (*track, above) {
            (Track::Below, false) | (Track::Firing { .. }, true) => None,
            (Track::Below, true) => {
                *track = Track::Above { since_ms: now_ms };
                if rule.duration_ms == 0 {
                    *track = Track::Firing { since_ms: now_ms };
                    return Some(event(AlertState::Firing, now_ms));
                }
                None
            }
            (Track::Above { since_ms }, true) => {
                if now_ms.saturating_sub(since_ms) >= rule.duration_ms {
                    *track = Track::Firing { since_ms };
                    Some(event(AlertState::Firing, since_ms))
                } else {
                    None
                }
            }
            (Track::Above { .. }, false) => {
                *track = Track::Below;
                None
            }
            (Track::Firing { since_ms }, false) => {
                *track = Track::Below;
                Some(event(AlertState::Cleared, since_ms))
            }
        }
    }

    /// Observes every queue kind of one shard.
    pub fn observe_gauges(
        &mut self,
        shard: u16,
        gauges: &ShardGauges,
        now_ms: u64,
    ) -> Vec<AlertEvent> {
        QueueKind::ALL
            .iter()
            .filter_map(|k| self.observe(shard, *k, k.value_in(gauges), now_ms))
            .collect()
    }
}

/// Logs the event (WARN when firing, INFO when cleared) and sets the
/// `tern_alerts_firing` gauge of its shard and queue.
pub fn report(event: &AlertEvent, metrics: &Metrics) {
    if let Some(s) = metrics.shard(event.shard) {
        s.set_alert_firing(event.queue, event.state == AlertState::Firing);
    }
    match event.state {
        AlertState::Firing => tracing::warn!(
            shard = event.shard,
            queue = %event.queue,
            value = event.value,
            threshold = event.threshold,
            since_ms = event.since_ms,
            "queue alert FIRING: shard {} {} is {} (threshold {}) for {} ms",
            event.shard,
            event.queue,
            event.value,
            event.threshold,
            event.at_ms.saturating_sub(event.since_ms)
        ),
        AlertState::Cleared => tracing::info!(
            shard = event.shard,
            queue = %event.queue,
            value = event.value,
            threshold = event.threshold,
            "queue alert cleared: shard {} {} is {} (threshold {})",
            event.shard,
            event.queue,
            event.value,
            event.threshold
        ),
    }
}

/// Why a webhook POST failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum AlertError {
    /// The receiver did not answer within the timeout.
    Timeout,
    /// The receiver answered a non-2xx status.
    Status(u16),
    /// Connecting or talking to the receiver failed.
    Transport(String),
    /// The event could not be encoded.
    Encode(String),
    /// The watcher thread could not be started.
    Spawn(std::io::Error),
}

impl fmt::Display for AlertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertError::Timeout => f.write_str("alert webhook timed out"),
            AlertError::Status(s) => write!(f, "alert webhook answered HTTP status {s}"),
            AlertError::Transport(e) => write!(f, "alert webhook transport error: {e}"),
            AlertError::Encode(e) => write!(f, "alert event encoding: {e}"),
            AlertError::Spawn(e) => write!(f, "cannot start the alert watcher: {e}"),
        }
    }
}

impl std::error::Error for AlertError {}

/// POSTs `event` as JSON to `url` (blocking, at most `timeout_ms`; no
/// redirects). Run it off the executor.
pub fn fire_webhook(url: &str, event: &AlertEvent, timeout_ms: u64) -> Result<(), AlertError> {
    let body = serde_json::to_vec(event).map_err(|e| AlertError::Encode(e.to_string()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(timeout_ms.max(1))))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent("tern-alerts")
        .build()
        .into();
    let mut resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(&body[..])
        .map_err(|e| match e {
            ureq::Error::Timeout(_) => AlertError::Timeout,
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => AlertError::Timeout,
            other => AlertError::Transport(other.to_string()),
        })?;
    let status = resp.status().as_u16();
    // Bounded read, only to let the receiver finish cleanly.
    let _ = resp
        .body_mut()
        .with_config()
        .limit(WEBHOOK_RESPONSE_BYTES_MAX)
        .read_to_vec();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(AlertError::Status(status))
    }
}

/// What an [`AlertWatcher`] evaluates with; replace it on reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertSettings {
    /// The rules.
    pub rules: AlertRules,
    /// Webhook receiving every event, if any.
    pub webhook_url: Option<String>,
    /// Deadline of one webhook POST.
    pub webhook_timeout_ms: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            rules: AlertRules::default(),
            webhook_url: None,
            webhook_timeout_ms: WEBHOOK_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl From<&crate::config::AlertsConfig> for AlertSettings {
    fn from(c: &crate::config::AlertsConfig) -> Self {
        Self {
            rules: c.rules(),
            webhook_url: c.webhook_url.clone(),
            webhook_timeout_ms: c.webhook_timeout_ms,
        }
    }
}

struct WatcherShared {
    settings: Mutex<AlertSettings>,
    stop: AtomicBool,
}

/// A std thread that every `interval_ms` reads each shard's queue gauges
/// from [`Metrics`], evaluates the rules, reports events and hands them to
/// a second thread that POSTs the webhook. Nothing on the message path is
/// touched: the shards only keep their gauges current.
pub struct AlertWatcher {
    shared: Arc<WatcherShared>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for AlertWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertWatcher").finish_non_exhaustive()
    }
}

impl AlertWatcher {
    /// Starts the watcher. `now_ms` is its clock (the runtime passes
    /// `crate::clock::now_ms`).
    pub fn spawn(
        metrics: Arc<Metrics>,
        settings: AlertSettings,
        interval_ms: u64,
        now_ms: fn() -> u64,
    ) -> Result<AlertWatcher, AlertError> {
        let shared = Arc::new(WatcherShared {
            settings: Mutex::new(settings),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::sync_channel::<(String, u64, AlertEvent)>(WEBHOOK_QUEUE_LEN_MAX);
        let sender = std::thread::Builder::new()
            .name("tern-alert-webhook".into())
            .spawn(move || webhook_loop(&rx))
            .map_err(AlertError::Spawn)?;
        let sh = Arc::clone(&shared);
        let watcher = std::thread::Builder::new()
            .name("tern-alerts".into())
            .spawn(move || watch_loop(&metrics, &sh, interval_ms.max(1), now_ms, &tx))
            .map_err(AlertError::Spawn)?;
        Ok(AlertWatcher {
            shared,
            threads: vec![watcher, sender],
        })
    }

    /// Replaces rules and webhook (live reload).
    pub fn set_settings(&self, settings: AlertSettings) {
        if let Ok(mut s) = self.shared.settings.lock() {
            *s = settings;
        }
    }

    /// Stops both threads and waits for them (a webhook POST in flight
    /// finishes first, bounded by its timeout).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for AlertWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn watch_loop(
    metrics: &Metrics,
    shared: &WatcherShared,
    interval_ms: u64,
    now_ms: fn() -> u64,
    tx: &SyncSender<(String, u64, AlertEvent)>,
) {
    let mut alerts = Alerts::new(AlertRules::default());
    // Sleep in short slices so stop() is prompt.
    let slice = Duration::from_millis(interval_ms.min(50));
    let mut waited_ms = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(slice);
        waited_ms += interval_ms.min(50);
        if waited_ms < interval_ms {
            continue;
        }
        waited_ms = 0;
        let settings = match shared.settings.lock() {
            Ok(s) => s.clone(),
            Err(_) => return,
        };
        alerts.set_rules(settings.rules);
        let now = now_ms();
        for (i, s) in metrics.shards().iter().enumerate() {
            let shard = u16::try_from(i).unwrap_or(u16::MAX);
            let gauges = ShardGauges {
                connections: s.connections.get(),
                online_users: s.online_users.get(),
                queue_items: s.queue_items.get(),
                queue_longest_items: s.queue_longest_items.get(),
                mesh_queue_depth: s.mesh_queue_depth.get(),
                queue_items_spilled: s.queue_items_spilled.get(),
                log_segments: s.log_segments.get(),
                log_backpressure: s.log_backpressure.get(),
            };
            for event in alerts.observe_gauges(shard, &gauges, now) {
                report(&event, metrics);
                if let Some(url) = &settings.webhook_url {
                    match tx.try_send((url.clone(), settings.webhook_timeout_ms, event)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            tracing::warn!("alert webhook queue full; event not posted");
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
            }
        }
    }
}

fn webhook_loop(rx: &Receiver<(String, u64, AlertEvent)>) {
    while let Ok((url, timeout_ms, event)) = rx.recv() {
        if let Err(e) = fire_webhook(&url, &event, timeout_ms) {
            tracing::warn!(url = %url, error = %e, shard = event.shard, queue = %event.queue,
                "alert webhook failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(threshold: u64, duration_ms: u64) -> AlertRules {
        let r = AlertRule {
            threshold,
            duration_ms,
        };
        AlertRules {
            shard_queue: r,
            user_queue: r,
            mesh_queue: r,
        }
    }

    #[test]
    fn fires_exactly_at_the_duration_and_once() {
        let mut a = Alerts::new(rules(100, 1_000));
        let k = QueueKind::ShardQueue;
        // At the threshold is not above it.
        assert_eq!(a.observe(0, k, 100, 0), None);
        assert_eq!(a.observe(0, k, 101, 10), None);
        // One ms short of the duration.
        assert_eq!(a.observe(0, k, 500, 1_009), None);
        assert!(!a.is_firing(0, k));
        let e = a.observe(0, k, 150, 1_010).unwrap();
        assert_eq!(e.state, AlertState::Firing);
        assert_eq!((e.shard, e.queue, e.value, e.threshold), (0, k, 150, 100));
        assert_eq!((e.since_ms, e.at_ms), (10, 1_010));
        assert!(a.is_firing(0, k));
        // Still above: nothing more.
        assert_eq!(a.observe(0, k, 10_000, 5_000), None);
        // Back at the threshold: cleared once.
        let c = a.observe(0, k, 100, 6_000).unwrap();
        assert_eq!(c.state, AlertState::Cleared);
        assert_eq!(c.since_ms, 10);
        assert_eq!(a.observe(0, k, 0, 7_000), None);
        assert!(!a.is_firing(0, k));
    }

    #[test]
    fn a_dip_restarts_the_timer() {
        let mut a = Alerts::new(rules(10, 100));
        let k = QueueKind::UserQueue;
        assert_eq!(a.observe(3, k, 11, 0), None);
        assert_eq!(a.observe(3, k, 10, 50), None);
        assert_eq!(a.observe(3, k, 11, 60), None);
        assert_eq!(a.observe(3, k, 11, 159), None);
        let e = a.observe(3, k, 11, 160).unwrap();
        assert_eq!((e.state, e.since_ms, e.shard), (AlertState::Firing, 60, 3));
        // Other shards and kinds are independent.
        assert!(!a.is_firing(0, k));
        assert!(!a.is_firing(3, QueueKind::MeshQueue));
    }

    #[test]
    fn zero_duration_fires_at_once_and_zero_threshold_disables() {
        let mut a = Alerts::new(rules(5, 0));
        let e = a.observe(0, QueueKind::MeshQueue, 6, 42).unwrap();
        assert_eq!((e.state, e.since_ms), (AlertState::Firing, 42));
        // Disabling the rule clears a firing alert at the next observation.
        a.set_rules(rules(0, 0));
        let c = a.observe(0, QueueKind::MeshQueue, 1_000_000, 50).unwrap();
        assert_eq!(c.state, AlertState::Cleared);
        assert_eq!(a.observe(0, QueueKind::MeshQueue, u64::MAX, 60), None);
    }

    #[test]
    fn observe_gauges_maps_each_kind() {
        let mut a = Alerts::new(rules(1, 0));
        let g = ShardGauges {
            queue_items: 2,
            queue_longest_items: 0,
            mesh_queue_depth: 5,
            ..ShardGauges::default()
        };
        let events = a.observe_gauges(1, &g, 7);
        let kinds: Vec<_> = events.iter().map(|e| (e.queue, e.value)).collect();
        assert_eq!(
            kinds,
            vec![(QueueKind::ShardQueue, 2), (QueueKind::MeshQueue, 5)]
        );
    }

    #[test]
    fn report_sets_the_gauge_and_event_json_has_the_fields() {
        let m = Metrics::new_at(2, 0);
        let mut a = Alerts::new(rules(1, 0));
        let e = a.observe(1, QueueKind::UserQueue, 9, 5).unwrap();
        report(&e, &m);
        assert!(m.shard(1).unwrap().alert_firing(QueueKind::UserQueue));
        assert!(!m.shard(0).unwrap().alert_firing(QueueKind::UserQueue));
        let json: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(json["alert"], ALERT_NAME);
        assert_eq!(json["queue"], "user_queue");
        assert_eq!(json["state"], "firing");
        assert_eq!(json["shard"], 1);
        assert_eq!(json["value"], 9);
        assert_eq!(json["threshold"], 1);
        assert_eq!(json["since_ms"], 5);
        let c = a.observe(1, QueueKind::UserQueue, 0, 6).unwrap();
        report(&c, &m);
        assert!(!m.shard(1).unwrap().alert_firing(QueueKind::UserQueue));
    }
}
