//! The one table of configuration keys: name, value kind, whether it can
//! change on a live `reload`, documentation and (for keys without a
//! default) an example. The commented default config, the environment
//! variable names, the `--set` parser, the reload plan and the reference in
//! docs/OPERATIONS.md are all generated from it.

use self::Kind::{Bool, Int, List, Rate, Str};

/// The shape of a key's value, for parsing environment variables and
/// `--set KEY=VALUE` (a config file carries its own TOML types).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string: text, a path or a socket address.
    Str,
    /// A whole number (`_` separators allowed).
    Int,
    /// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A list of strings; comma-separated in env and `--set`.
    List,
    /// A rate: `{ burst, period_ms }` in a file, `BURST/PERIOD_MS` in env
    /// and `--set`.
    Rate,
}

impl Kind {
    /// How a value of this kind is written in env and `--set`.
    pub fn syntax(self) -> &'static str {
        match self {
            Kind::Str => "text",
            Kind::Int => "a whole number",
            Kind::Bool => "true or false",
            Kind::List => "a comma-separated list",
            Kind::Rate => "BURST/PERIOD_MS, e.g. 20/600000",
        }
    }
}

/// One configuration key.
#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    /// Dotted path: `listen`, `tls.cert`, `alerts.user_queue.threshold`.
    pub key: &'static str,
    /// Value shape.
    pub kind: Kind,
    /// `tern ctl reload` applies a change of this key without a restart.
    pub live: bool,
    /// One-paragraph description (no line breaks).
    pub doc: &'static str,
    /// For keys that are unset by default: an example value as TOML, shown
    /// commented out in the default config.
    pub example: Option<&'static str>,
}

impl KeySpec {
    /// The environment variable that sets this key: `TERN_` and the key in
    /// upper case with `.` as `_` (`limits.inbox_len_max` is
    /// `TERN_LIMITS_INBOX_LEN_MAX`).
    pub fn env_var(&self) -> String {
        format!("TERN_{}", self.key.replace('.', "_").to_ascii_uppercase())
    }

    /// The section (`""` for top-level keys) and the last path component.
    pub fn split(&self) -> (&'static str, &'static str) {
        match self.key.rsplit_once('.') {
            Some((section, leaf)) => (section, leaf),
            None => ("", self.key),
        }
    }
}

/// Sections whose environment variables must all be known keys: a
/// `TERN_LIMITS_...` variable that names no key is a typo and is refused.
pub const ENV_SECTIONS: [&str; 6] = ["TLS", "SMS", "LOG", "LIMITS", "OPS", "ALERTS"];

const fn key(key: &'static str, kind: Kind, live: bool, doc: &'static str) -> KeySpec {
    KeySpec {
        key,
        kind,
        live,
        doc,
        example: None,
    }
}

const fn unset(
    key: &'static str,
    kind: Kind,
    live: bool,
    doc: &'static str,
    example: &'static str,
) -> KeySpec {
    KeySpec {
        key,
        kind,
        live,
        doc,
        example: Some(example),
    }
}

/// Every configuration key, in file order (top-level keys first, then one
/// section after another).
pub const KEYS: &[KeySpec] = &[
    key("listen", Str, false, "Address the messaging listener binds (TLS over TCP)."),
    key("data_dir", Str, false, "Data directory: logs, generated TLS identity, SMS outbox, admin socket. Created on first run."),
    unset("shards", Int, false, "Shards (executors, one thread each). Unset: one per available core.", "4"),
    unset("pin_cores", Bool, false, "Pin shard k to CPU k. Unset: pin when there are no more shards than cores.", "true"),
    key("shutdown_grace_ms", Int, false, "On SIGTERM, how long shards wait for clients to take their last frames before exiting."),
    key("log_json", Bool, false, "Log as JSON lines instead of the human format."),
    unset("tls.cert", Str, false, "Operator certificate chain (PEM). Needs tls.key. Unset: a self-signed identity in <data_dir>/tls is generated on first run.", "\"/etc/tern/cert.pem\""),
    unset("tls.key", Str, false, "Operator private key (PEM). Needs tls.cert.", "\"/etc/tern/key.pem\""),
    key("tls.names", List, false, "Extra DNS names or IPs for the generated self-signed certificate (ignored with tls.cert)."),
    key("tls.insecure_plaintext", Bool, false, "Turn TLS OFF. Benchmarks on loopback only: device keys and messages travel in clear text."),
    unset("sms.http_url", Str, false, "POST registration PINs as JSON to this http:// or https:// URL. Unset: PINs go to <data_dir>/sms-outbox.jsonl and the log (development).", "\"https://sms.example.com/send\""),
    unset("sms.http_token", Str, false, "Bearer token sent to sms.http_url. Prefer the environment variable over the file.", "\"change-me\""),
    key("sms.timeout_ms", Int, false, "Deadline of one SMS POST (connect, TLS, send, answer)."),
    key("log.durability", Str, false, "When a message counts as stored: \"fsync\" (ServerAck after fdatasync: survives power loss) or \"unsafe-no-fsync\" (benchmarks only: survives kill -9, not a power loss)."),
    key("log.segment_bytes_max", Int, false, "Size of one log segment file (preallocated); a record never straddles two."),
    key("log.batch_bytes_max", Int, false, "Most bytes one group commit (write + fdatasync) carries; appends arriving during a commit wait for the next."),
    key("log.pending_bytes_max", Int, false, "Most appended bytes not yet durable per shard. Past half of it new messages are refused (ShardUnavailable, retry later) until a quarter is left; acks and receipts still go in. Reaching it poisons the shard."),
    key("limits.pin_len", Int, false, "Digits in a registration PIN (4 to 10)."),
    key("limits.pin_ttl_ms", Int, false, "How long a PIN stays valid."),
    key("limits.pin_attempts_max", Int, false, "Wrong tries after which a PIN is dead (at most 10)."),
    key("limits.pin_requests_per_phone", Rate, false, "PIN requests per phone number."),
    key("limits.pin_requests_per_source", Rate, false, "PIN requests per source address (IPv6 per /64)."),
    key("limits.pins_outstanding_max", Int, false, "PINs outstanding per shard at once."),
    key("limits.login_failures_per_user", Rate, false, "Failed logins per user."),
    key("limits.login_failures_per_source", Rate, false, "Failed logins per source address (IPv6 per /64)."),
    key("limits.login_timeout_ms", Int, false, "Time an unauthenticated connection may take to log in."),
    key("limits.idle_timeout_ms", Int, false, "Time without an inbound frame before a connection is closed."),
    key("limits.ping_interval_ms", Int, false, "Quiet time after which the server sends a Ping (less than idle_timeout_ms)."),
    key("limits.inbox_len_max", Int, false, "Items queued per user (messages and receipts); past it the sender gets QueueFull."),
    key("limits.shard_inbox_items_max", Int, false, "Items queued per shard, all users together."),
    key("limits.shard_inbox_bytes_max", Int, false, "Message bytes queued per shard, all users together."),
    key("limits.dedup_window_len", Int, false, "Recent client message ids remembered per sender for deduplication."),
    key("limits.dedup_entries_max", Int, false, "Deduplication entries per shard, all senders together."),
    key("limits.conn_outbound_bytes_max", Int, false, "Bytes waiting to be written to one connection (must hold one max_frame_len frame)."),
    key("limits.connections_per_shard_max", Int, false, "Connections per shard; further connections are refused."),
    key("limits.body_text_bytes_max", Int, false, "Text message bytes (UTF-8)."),
    key("limits.media_url_bytes_max", Int, false, "Media URL bytes."),
    key("limits.media_mime_bytes_max", Int, false, "Media MIME type bytes."),
    key("limits.media_caption_bytes_max", Int, false, "Media caption bytes."),
    key("limits.thumbnail_b64_bytes_max", Int, false, "Base64 thumbnail bytes."),
    key("limits.max_frame_len", Int, false, "Largest frame payload in bytes (length prefix excluded), both directions."),
    key("limits.rate_keys_max", Int, false, "Keys (phones, users, addresses) tracked by one rate limiter."),
    key("limits.deliver_window_len", Int, false, "Unacknowledged inbox items in flight to one device."),
    key("limits.write_stall_ms_max", Int, false, "Time a connection's output may stay unsent before it is cut off as a slow consumer (its inbox is kept)."),
    key("ops.http_enabled", Bool, false, "Serve /metrics, /healthz and /readyz over HTTP."),
    key("ops.http_listen", Str, false, "Address of the operations HTTP endpoint. Keep it on localhost or a private network: it has no authentication."),
    key("ops.http_header_bytes_max", Int, false, "Largest request head (request line and headers) the operations endpoint reads; larger gets 431."),
    key("ops.http_read_timeout_ms", Int, false, "Time a client of the operations endpoint has to send its request head."),
    unset("ops.admin_socket", Str, false, "Unix socket of the admin channel (`tern ctl`), created with mode 0600. Unset: <data_dir>/admin.sock.", "\"/run/tern/admin.sock\""),
    unset("alerts.webhook_url", Str, true, "POST every alert firing and clearing as JSON to this http:// or https:// URL. Unset: alerts go to the log and the tern_alerts_firing metric only.", "\"http://127.0.0.1:9000/tern-alerts\""),
    key("alerts.webhook_timeout_ms", Int, true, "Deadline of one webhook POST."),
    key("alerts.shard_queue.threshold", Int, true, "Items queued on one shard (all users together) above which the shard queue alert starts counting; 0 disables it."),
    key("alerts.shard_queue.duration_ms", Int, true, "How long the shard queue must stay above its threshold before the alert fires."),
    key("alerts.user_queue.threshold", Int, true, "Length of the longest single user queue on a shard above which the user queue alert starts counting; 0 disables it."),
    key("alerts.user_queue.duration_ms", Int, true, "How long the longest user queue must stay above its threshold before the alert fires."),
    key("alerts.mesh_queue.threshold", Int, true, "Messages a shard has queued for other shards (cross-core mesh depth) above which the mesh alert starts counting; 0 disables it."),
    key("alerts.mesh_queue.duration_ms", Int, true, "How long the mesh depth must stay above its threshold before the alert fires."),
];

/// The table entry for a dotted key.
pub fn find(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.key == key)
}

/// The table entry whose environment variable is `var`.
pub fn find_env(var: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.env_var() == var)
}
