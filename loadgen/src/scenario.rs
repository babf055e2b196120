//! What a run does: the [`Scenario`], built from built-in defaults, then a
//! TOML file (`--scenario FILE`), then command-line flags (flags win).
//!
//! Every CLI field is an `Option` so "not given" differs from "given the
//! default value" (a clap default would silently override the file).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::body::BODY_HEADER_LEN;
use crate::error::LoadgenError;

/// Most connections one worker process drives: the process open-files cap
/// here is 20,000, and a worker needs a few descriptors of its own.
pub const CONNS_PER_WORKER_MAX: u32 = 19_000;
/// Connections per worker when `--procs` is not given.
pub const CONNS_PER_WORKER_AUTO: u32 = 15_000;
/// Most worker processes.
pub const PROCS_MAX: u32 = 64;
/// Most connections in one run.
pub const CONNECTIONS_MAX: u32 = CONNS_PER_WORKER_MAX * PROCS_MAX;
/// Largest message body the generator makes (the server's default text
/// bound is 16 KiB; a larger body is refused there, which is counted).
pub const BODY_BYTES_MAX: u32 = 60_000;
/// Longest run phase: one day.
pub const DURATION_S_MAX: f64 = 86_400.0;
/// Most outstanding messages per sender.
pub const OUTSTANDING_MAX: u32 = 1_000;
/// Default first source address (127.0.0.1 is left to the server).
pub const SOURCE_IP_FIRST_DEFAULT: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);
/// Default connections per source address. `bind(ip, 0)` draws from half
/// the ephemeral port range (~14k ports) per address; 4,000 leaves room
/// for sockets in TIME_WAIT from earlier runs.
pub const CONNS_PER_SOURCE_IP_DEFAULT: u32 = 4_000;
/// Default first phone number: users are `+{phone_base + i}`.
pub const PHONE_BASE_DEFAULT: u64 = 15_550_000_000;
/// Most consecutive server ports (`--server-ports`, one per core of
/// tern-ceiling).
pub const SERVER_PORTS_MAX: u32 = 1_024;

/// What the generator talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A Tern server: registration, login, the real protocol, receipts.
    #[default]
    Tern,
    /// tern-ceiling, the raw forwarding ceiling: no provisioning or login;
    /// each connection sends a hello naming itself and its partner, then
    /// message frames of the same body size go through verbatim and each
    /// recipient answers with a small receipt frame.
    Ceiling,
}

/// Who sends to whom. Either way each sender has exactly one fixed
/// recipient and each recipient exactly one sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pairing {
    /// Users 2k and 2k+1 send to each other: every connection sends and
    /// receives.
    Mutual,
    /// User 2k sends to 2k+1, which only receives.
    OneWay,
}

/// How fast senders send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Max throughput: each sender keeps `outstanding` messages in flight
    /// and sends the next one when one completes.
    Closed,
    /// Constant arrival rate (`rate` messages/s over all senders), with
    /// coordinated-omission correction.
    Open,
    /// Connect and log in, then hold the connections idle (memory per
    /// idle session); no messages.
    Idle,
    /// TLS handshakes per second: each of the connections repeatedly
    /// connects, completes the TLS 1.3 handshake (ALPN tern/1) and closes,
    /// for the duration. No protocol, no login; any target.
    Handshake,
}

/// When a closed-loop message stops counting against its sender's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WindowUntil {
    /// At its `ServerAck` (one check mark).
    Ack,
    /// At its `delivered` receipt (two check marks): the full cycle.
    Delivered,
}

/// How the generator trusts the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustChoice {
    /// A CA or the server's own self-signed certificate (PEM).
    CaCert(PathBuf),
    /// The server leaf certificate's SHA-256 (hex).
    PinSha256(String),
    /// Plain TCP; the server must run with `--insecure-plaintext` too.
    InsecurePlaintext,
}

/// A complete, validated run description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// What the generator talks to.
    #[serde(default)]
    pub target: Target,
    /// Server address, `HOST:PORT` (loopback only).
    pub server: String,
    /// The server listens on this many consecutive ports from `server`'s
    /// port; pair k uses port + k % server_ports.
    #[serde(default = "one")]
    pub server_ports: u32,
    /// TLS server name; default: the host part of `server`.
    pub server_name: Option<String>,
    /// Trust.
    pub trust: TrustChoice,
    /// Connections = users (even).
    pub connections: u32,
    /// Who sends to whom.
    pub pairing: Pairing,
    /// Closed loop, open loop or idle.
    pub mode: Mode,
    /// Open loop: messages per second over all senders.
    pub rate_per_s: f64,
    /// Closed loop: messages in flight per sender. Open loop: the in-flight
    /// cap per sender (a slot finding the sender at its cap is skipped).
    pub outstanding: u32,
    /// Closed loop: what completes a message.
    pub window_until: WindowUntil,
    /// Text body bytes (a timestamp header, then padding).
    pub body_bytes: u32,
    /// Length of the measured run phase, after every connection is up.
    pub duration_s: f64,
    /// New connections per second during ramp-up (all workers together).
    pub ramp_per_s: u32,
    /// Fraction of recipients that go offline once during the run.
    pub offline_fraction: f64,
    /// How long they stay offline.
    pub offline_s: f64,
    /// Recipients mark every message read (read receipts to the sender).
    pub read_receipts: bool,
    /// Worker processes; default `ceil(connections / 15,000)`.
    pub procs: Option<u32>,
    /// Connections per 127.x.y.z source address.
    pub conns_per_source_ip: u32,
    /// First source address.
    pub source_ip_first: Ipv4Addr,
    /// User `i` is phone `+{phone_base + i}`.
    pub phone_base: u64,
    /// The server's SMS outbox file (registration reads PINs there).
    pub sms_outbox: Option<PathBuf>,
    /// File of device keys from earlier runs.
    pub keys_cache: Option<PathBuf>,
    /// Registrations in progress at once (all workers together).
    pub provision_concurrency: u32,
    /// Bound on TCP connect + TLS handshake + login of one connection.
    pub connect_timeout_s: f64,
    /// After the run phase: how long to wait for outstanding acks,
    /// deliveries and receipts.
    pub drain_timeout_s: f64,
    /// Server process to sample (RSS, CPU time) from /proc.
    pub server_pid: Option<u32>,
    /// The server's shard count, to report the cross-shard pair fraction.
    pub server_shards: Option<u16>,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Seed for offline selection and timing.
    pub seed: u64,
    /// Print a progress line each second on stderr.
    pub progress: bool,
}

fn one() -> u32 {
    1
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            target: Target::Tern,
            server: "127.0.0.1:7443".to_owned(),
            server_ports: 1,
            server_name: None,
            trust: TrustChoice::InsecurePlaintext,
            connections: 1_000,
            pairing: Pairing::Mutual,
            mode: Mode::Closed,
            rate_per_s: 10_000.0,
            outstanding: 8,
            window_until: WindowUntil::Delivered,
            body_bytes: 100,
            duration_s: 10.0,
            ramp_per_s: 2_000,
            offline_fraction: 0.0,
            offline_s: 2.0,
            read_receipts: false,
            procs: None,
            conns_per_source_ip: CONNS_PER_SOURCE_IP_DEFAULT,
            source_ip_first: SOURCE_IP_FIRST_DEFAULT,
            phone_base: PHONE_BASE_DEFAULT,
            sms_outbox: None,
            keys_cache: None,
            provision_concurrency: 256,
            connect_timeout_s: 10.0,
            drain_timeout_s: 30.0,
            server_pid: None,
            server_shards: None,
            json: None,
            seed: 1,
            progress: true,
        }
    }
}

/// The scenario file: every field optional, unknown keys refused. Keys are
/// the long flag names with `_` for `-`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub target: Option<Target>,
    pub server: Option<String>,
    pub server_ports: Option<u32>,
    pub server_name: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub pin_sha256: Option<String>,
    pub insecure_plaintext: Option<bool>,
    pub connections: Option<u32>,
    pub pairing: Option<Pairing>,
    pub mode: Option<Mode>,
    pub rate: Option<f64>,
    pub outstanding: Option<u32>,
    pub window_until: Option<WindowUntil>,
    pub body_bytes: Option<u32>,
    pub duration_s: Option<f64>,
    pub ramp_per_s: Option<u32>,
    pub offline_fraction: Option<f64>,
    pub offline_s: Option<f64>,
    pub read_receipts: Option<bool>,
    pub procs: Option<u32>,
    pub conns_per_source_ip: Option<u32>,
    pub source_ip_first: Option<Ipv4Addr>,
    pub phone_base: Option<u64>,
    pub sms_outbox: Option<PathBuf>,
    pub keys_cache: Option<PathBuf>,
    pub provision_concurrency: Option<u32>,
    pub connect_timeout_s: Option<f64>,
    pub drain_timeout_s: Option<f64>,
    pub server_pid: Option<u32>,
    pub server_shards: Option<u16>,
    pub json: Option<PathBuf>,
    pub seed: Option<u64>,
    pub progress: Option<bool>,
}

/// Load generator for Tern: drives a server with many real client sessions
/// (TLS 1.3 or plain TCP, the real protocol) and checks that every
/// acknowledged message arrives exactly once and in order.
///
/// Settings come from built-in defaults, then `--scenario FILE` (TOML, keys
/// are the long option names with `_`, e.g. `body_bytes = 100`), then these
/// options. Exit status: 0 when the check passed, 1 when a message was
/// lost, duplicated or misordered (or a receipt is missing), 2 when the run
/// could not be set up.
#[derive(Clone, Debug, Default, Parser)]
#[command(name = "tern-loadgen", version, max_term_width = 100)]
pub struct Cli {
    /// TOML scenario file; options given here override its values.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// tern: a Tern server (provisioning, login, the real protocol);
    /// ceiling: tern-ceiling, the raw forwarding ceiling (hello, then
    /// verbatim frames and receipt frames; no provisioning or login).
    /// [default: tern]
    #[arg(long, value_enum)]
    pub target: Option<Target>,
    /// Server address HOST:PORT (loopback addresses only). [default: 127.0.0.1:7443]
    #[arg(long)]
    pub server: Option<String>,
    /// The server listens on N consecutive ports from --server's port
    /// (tern-ceiling: one per core); both ends of pair k connect to port +
    /// k % N. Tern listens on one. [default: 1]
    #[arg(long, value_name = "N")]
    pub server_ports: Option<u32>,
    /// TLS server name to verify. [default: the host part of --server]
    #[arg(long)]
    pub server_name: Option<String>,
    /// Trust the server certificate(s) in this PEM file (a CA, or the
    /// server's self-signed cert, e.g. tern-data/tls/cert.pem).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Trust exactly the server leaf certificate with this SHA-256
    /// fingerprint (hex, colons allowed).
    #[arg(long, value_name = "HEX")]
    pub pin_sha256: Option<String>,
    /// Plain TCP, no TLS. The server must run with --insecure-plaintext
    /// too. Give `false` to override a scenario file.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub insecure_plaintext: Option<bool>,
    /// Connections, one user each; must be even (users are paired). With
    /// --mode handshake: handshakes in progress at once. [default: 1000]
    #[arg(short = 'c', long)]
    pub connections: Option<u32>,
    /// mutual: users 2k and 2k+1 message each other; one-way: 2k sends to
    /// 2k+1. [default: mutual]
    #[arg(long, value_enum)]
    pub pairing: Option<Pairing>,
    /// closed: max throughput with --outstanding messages in flight per
    /// sender; open: constant --rate with coordinated-omission correction;
    /// idle: connect and hold (memory per idle session); handshake: each
    /// connection repeatedly connects, completes the TLS handshake and
    /// closes (handshakes/s; needs TLS). [default: closed]
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Open loop: messages per second over all senders. [default: 10000]
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Closed loop: messages in flight per sender. Open loop: cap on a
    /// sender's unacknowledged messages; a send slot that finds the sender at
    /// the cap is skipped and counted as omitted. [default: 8]
    #[arg(long)]
    pub outstanding: Option<u32>,
    /// Closed loop: a message leaves its sender's window at its ServerAck
    /// (ack) or at its delivered receipt (delivered, the full cycle; with
    /// --target ceiling, the recipient's receipt frame, the only choice).
    /// [default: delivered]
    #[arg(long, value_enum)]
    pub window_until: Option<WindowUntil>,
    /// Message body bytes (text: send timestamp and sequence, then
    /// padding; at least 40). [default: 100]
    #[arg(long)]
    pub body_bytes: Option<u32>,
    /// Seconds of the measured run phase, counted from when every
    /// connection is up. [default: 10]
    #[arg(short = 'd', long = "duration", value_name = "SECONDS")]
    pub duration_s: Option<f64>,
    /// New connections per second while ramping up (all workers). [default: 2000]
    #[arg(long = "ramp", value_name = "CONNS_PER_S")]
    pub ramp_per_s: Option<u32>,
    /// Fraction (0..1) of recipients that disconnect once during the run
    /// and come back after --offline seconds; messages to them wait in the
    /// server's offline queue. [default: 0]
    #[arg(long)]
    pub offline_fraction: Option<f64>,
    /// Seconds an offline recipient stays away. [default: 2]
    #[arg(long = "offline", value_name = "SECONDS")]
    pub offline_s: Option<f64>,
    /// Recipients mark every message read, so senders get read receipts.
    /// Give `false` to override a scenario file.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub read_receipts: Option<bool>,
    /// Worker processes (each drives its connections on one thread).
    /// [default: connections / 15000, rounded up]
    #[arg(long)]
    pub procs: Option<u32>,
    /// Connections bound to one 127.x.y.z source address. [default: 4000]
    #[arg(long)]
    pub conns_per_source_ip: Option<u32>,
    /// First source address; workers use consecutive addresses from here
    /// (inside 127.0.0.0/8). [default: 127.0.1.1]
    #[arg(long)]
    pub source_ip_first: Option<Ipv4Addr>,
    /// User i registers phone +(PHONE_BASE + i). [default: 15550000000]
    #[arg(long)]
    pub phone_base: Option<u64>,
    /// The server's SMS outbox file (<data-dir>/sms-outbox.jsonl); needed
    /// to register users that are not in --keys-cache.
    #[arg(long, value_name = "PATH")]
    pub sms_outbox: Option<PathBuf>,
    /// Device keys from earlier runs (JSON lines); users found there log in
    /// directly, new registrations are added.
    #[arg(long, value_name = "PATH")]
    pub keys_cache: Option<PathBuf>,
    /// Registrations in progress at once (all workers). [default: 256]
    #[arg(long)]
    pub provision_concurrency: Option<u32>,
    /// Seconds allowed for TCP connect + TLS handshake + login. [default: 10]
    #[arg(long = "connect-timeout", value_name = "SECONDS")]
    pub connect_timeout_s: Option<f64>,
    /// Seconds to wait after the run for outstanding acks, deliveries and
    /// receipts before checking. [default: 30]
    #[arg(long = "drain-timeout", value_name = "SECONDS")]
    pub drain_timeout_s: Option<f64>,
    /// Sample this server process's RSS and CPU time from /proc: reports
    /// memory per connection and server CPU per delivered message.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// The server's shard count: reports how many pairs cross shards.
    #[arg(long)]
    pub server_shards: Option<u16>,
    /// Write the JSON report here (schema: loadgen/README.md).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Seed for choosing offline recipients and their times. [default: 1]
    #[arg(long)]
    pub seed: Option<u64>,
    /// No per-second progress lines on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Internal: run as a worker process (config as JSON on stdin).
    #[arg(long, hide = true)]
    pub worker: bool,
}

impl Cli {
    /// The CLI's settings as a file layer (flags are applied over the file
    /// exactly like a second file).
    fn as_layer(&self) -> ScenarioFile {
        ScenarioFile {
            target: self.target,
            server: self.server.clone(),
            server_ports: self.server_ports,
            server_name: self.server_name.clone(),
            ca_cert: self.ca_cert.clone(),
            pin_sha256: self.pin_sha256.clone(),
            insecure_plaintext: self.insecure_plaintext,
            connections: self.connections,
            pairing: self.pairing,
            mode: self.mode,
            rate: self.rate,
            outstanding: self.outstanding,
            window_until: self.window_until,
            body_bytes: self.body_bytes,
            duration_s: self.duration_s,
            ramp_per_s: self.ramp_per_s,
            offline_fraction: self.offline_fraction,
            offline_s: self.offline_s,
            read_receipts: self.read_receipts,
            procs: self.procs,
            conns_per_source_ip: self.conns_per_source_ip,
            source_ip_first: self.source_ip_first,
            phone_base: self.phone_base,
            sms_outbox: self.sms_outbox.clone(),
            keys_cache: self.keys_cache.clone(),
            provision_concurrency: self.provision_concurrency,
            connect_timeout_s: self.connect_timeout_s,
            drain_timeout_s: self.drain_timeout_s,
            server_pid: self.server_pid,
            server_shards: self.server_shards,
            json: self.json.clone(),
            seed: self.seed,
            progress: self.quiet.then_some(false),
        }
    }

    /// Defaults, then the `--scenario` file, then the flags; validated.
    pub fn scenario(&self) -> Result<Scenario, LoadgenError> {
        let file = match &self.scenario {
            Some(path) => parse_file(path)?,
            None => ScenarioFile::default(),
        };
        Scenario::from_layers(&[file, self.as_layer()])
    }
}

/// Reads and parses a TOML scenario file.
pub fn parse_file(path: &Path) -> Result<ScenarioFile, LoadgenError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadgenError::File {
        path: path.to_path_buf(),
        source,
    })?;
    parse_toml(&text).map_err(|detail| LoadgenError::Toml {
        path: path.to_path_buf(),
        detail,
    })
}

/// Parses scenario TOML text.
pub fn parse_toml(text: &str) -> Result<ScenarioFile, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

fn trust_of(layer: &ScenarioFile) -> Result<Option<TrustChoice>, LoadgenError> {
    let mut given = Vec::new();
    if let Some(path) = &layer.ca_cert {
        given.push(TrustChoice::CaCert(path.clone()));
    }
    if let Some(pin) = &layer.pin_sha256 {
        given.push(TrustChoice::PinSha256(pin.clone()));
    }
    if layer.insecure_plaintext == Some(true) {
        given.push(TrustChoice::InsecurePlaintext);
    }
    if given.len() > 1 {
        return Err(LoadgenError::Scenario(
            "give only one of --ca-cert, --pin-sha256, --insecure-plaintext".to_owned(),
        ));
    }
    Ok(given.pop())
}

impl Scenario {
    /// Applies `layers` in order over the defaults (later layers win) and
    /// validates the result. A layer that names a trust choice replaces the
    /// earlier one; at least one layer must name one.
    pub fn from_layers(layers: &[ScenarioFile]) -> Result<Self, LoadgenError> {
        let mut s = Self::default();
        let mut trust = None;
        for l in layers {
            macro_rules! set {
                ($($field:ident <- $from:ident),* $(,)?) => {
                    $( if let Some(v) = l.$from.clone() { s.$field = v; } )*
                };
            }
            set!(
                target <- target,
                server <- server,
                server_ports <- server_ports,
                connections <- connections,
                pairing <- pairing,
                mode <- mode,
                rate_per_s <- rate,
                outstanding <- outstanding,
                window_until <- window_until,
                body_bytes <- body_bytes,
                duration_s <- duration_s,
                ramp_per_s <- ramp_per_s,
                offline_fraction <- offline_fraction,
                offline_s <- offline_s,
                read_receipts <- read_receipts,
                conns_per_source_ip <- conns_per_source_ip,
                source_ip_first <- source_ip_first,
                phone_base <- phone_base,
                provision_concurrency <- provision_concurrency,
                connect_timeout_s <- connect_timeout_s,
                drain_timeout_s <- drain_timeout_s,
                seed <- seed,
                progress <- progress,
            );
            macro_rules! set_opt {
                ($($field:ident),* $(,)?) => {
                    $( if l.$field.is_some() { s.$field = l.$field.clone(); } )*
                };
            }
            set_opt!(
                server_name,
                procs,
                sms_outbox,
                keys_cache,
                server_pid,
                server_shards,
                json
            );
            if let Some(t) = trust_of(l)? {
                trust = Some(t);
            } else if l.insecure_plaintext == Some(false)
                && trust == Some(TrustChoice::InsecurePlaintext)
            {
                trust = None;
            }
        }
        s.trust = trust.ok_or_else(|| {
            LoadgenError::Scenario(
                "say how to trust the server: --ca-cert PEM, --pin-sha256 HEX, or \
                 --insecure-plaintext (the server must run with it too)"
                    .to_owned(),
            )
        })?;
        s.validate()?;
        Ok(s)
    }

    /// Refuses values that cannot run.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let bad = |m: String| Err(LoadgenError::Scenario(m));
        if self.connections < 2 || self.connections % 2 != 0 {
            return bad(format!(
                "connections must be even and at least 2 (users are paired), got {}",
                self.connections
            ));
        }
        if self.connections > CONNECTIONS_MAX {
            return bad(format!("connections at most {CONNECTIONS_MAX}"));
        }
        if self.mode == Mode::Open && !(self.rate_per_s > 0.0 && self.rate_per_s.is_finite()) {
            return bad(format!(
                "open loop needs --rate > 0, got {}",
                self.rate_per_s
            ));
        }
        if self.outstanding == 0 || self.outstanding > OUTSTANDING_MAX {
            return bad(format!("outstanding must be 1..={OUTSTANDING_MAX}"));
        }
        let body_min = u32::try_from(BODY_HEADER_LEN).unwrap_or(u32::MAX);
        if self.body_bytes < body_min || self.body_bytes > BODY_BYTES_MAX {
            return bad(format!(
                "body_bytes must be {body_min}..={BODY_BYTES_MAX}, got {}",
                self.body_bytes
            ));
        }
        if !(self.duration_s > 0.0 && self.duration_s <= DURATION_S_MAX) {
            return bad(format!("duration must be in (0, {DURATION_S_MAX}] seconds"));
        }
        if self.ramp_per_s == 0 {
            return bad("ramp must be at least 1 connection/s".to_owned());
        }
        if !(0.0..=1.0).contains(&self.offline_fraction) {
            return bad("offline_fraction must be in 0..=1".to_owned());
        }
        if self.offline_fraction > 0.0
            && !(self.offline_s > 0.0 && self.offline_s <= self.duration_s)
        {
            return bad(format!(
                "offline ({} s) must be > 0 and at most the duration ({} s)",
                self.offline_s, self.duration_s
            ));
        }
        if self.conns_per_source_ip == 0 || self.conns_per_source_ip > 20_000 {
            return bad("conns_per_source_ip must be 1..=20000".to_owned());
        }
        if self.source_ip_first.octets()[0] != 127 {
            return bad(format!(
                "source_ip_first must be in 127.0.0.0/8 (loopback), got {}",
                self.source_ip_first
            ));
        }
        if self.provision_concurrency == 0 {
            return bad("provision_concurrency must be at least 1".to_owned());
        }
        for (name, v) in [
            ("connect_timeout", self.connect_timeout_s),
            ("drain_timeout", self.drain_timeout_s),
        ] {
            if !(v > 0.0 && v <= DURATION_S_MAX) {
                return bad(format!("{name} must be in (0, {DURATION_S_MAX}] seconds"));
            }
        }
        if self.server_shards == Some(0) {
            return bad("server_shards must be at least 1".to_owned());
        }
        self.validate_target()?;
        let procs = self.procs();
        if procs == 0 || procs > PROCS_MAX {
            return bad(format!("procs must be 1..={PROCS_MAX}"));
        }
        if procs > self.connections / 2 {
            return bad(format!(
                "{procs} procs for {} connections: each worker needs at least one pair",
                self.connections
            ));
        }
        let per_worker = self.connections.div_ceil(procs);
        if per_worker > CONNS_PER_WORKER_MAX {
            return bad(format!(
                "{per_worker} connections per worker is over the open-files budget \
                 ({CONNS_PER_WORKER_MAX}); use --procs {} or more",
                self.connections.div_ceil(CONNS_PER_WORKER_MAX)
            ));
        }
        if let Err(e) = crate::pairing::Layout::new(self) {
            return bad(e);
        }
        if !crate::addr::is_loopback_target(&self.server) {
            return bad(format!(
                "server `{}` is not a loopback address (127.0.0.0/8, ::1, localhost)",
                self.server
            ));
        }
        Ok(())
    }

    /// The rules of `--target ceiling`, `--mode handshake` and
    /// `--server-ports`.
    fn validate_target(&self) -> Result<(), LoadgenError> {
        let bad = |m: String| Err(LoadgenError::Scenario(m));
        if self.server_ports == 0 || self.server_ports > SERVER_PORTS_MAX {
            return bad(format!("server_ports must be 1..={SERVER_PORTS_MAX}"));
        }
        let port = crate::addr::split_host_port(&self.server).map_or(0, |(_, p)| p);
        if u32::from(port) + self.server_ports - 1 > u32::from(u16::MAX) {
            return bad(format!(
                "ports {port}..{port}+{} run past 65535",
                self.server_ports
            ));
        }
        let raw = self.target == Target::Ceiling || self.mode == Mode::Handshake;
        if self.target == Target::Tern && self.server_ports > 1 && self.mode != Mode::Handshake {
            return bad(
                "a Tern server listens on one port (SO_REUSEPORT over its shards): \
                 --server-ports is for --target ceiling or --mode handshake"
                    .to_owned(),
            );
        }
        if self.mode == Mode::Handshake && !self.tls() {
            return bad(
                "--mode handshake measures TLS handshakes: give --ca-cert or --pin-sha256"
                    .to_owned(),
            );
        }
        if raw && self.offline_fraction > 0.0 {
            return bad("--offline-fraction needs --target tern (a server that queues)".to_owned());
        }
        if raw && self.read_receipts {
            return bad("--read-receipts needs --target tern".to_owned());
        }
        if self.target == Target::Ceiling
            && self.mode == Mode::Closed
            && self.window_until == WindowUntil::Ack
        {
            return bad(
                "--target ceiling has no ServerAck: its window ends at the receipt frame \
                 (--window-until delivered)"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// True when the raw worker (no client sessions) runs this scenario:
    /// the ceiling target, or handshakes only.
    pub fn raw(&self) -> bool {
        self.target == Target::Ceiling || self.mode == Mode::Handshake
    }

    /// The server address for pair `pair` (port + pair % server_ports).
    pub fn server_for_pair(&self, base: std::net::SocketAddr, pair: u32) -> std::net::SocketAddr {
        let mut addr = base;
        let offset = pair % self.server_ports.max(1);
        let port = u32::from(base.port()) + offset;
        addr.set_port(u16::try_from(port).unwrap_or(base.port()));
        addr
    }

    /// Worker processes: given, or one per 15,000 connections.
    pub fn procs(&self) -> u32 {
        self.procs
            .unwrap_or_else(|| self.connections.div_ceil(CONNS_PER_WORKER_AUTO).max(1))
    }

    /// Senders in the whole run.
    pub fn senders(&self) -> u32 {
        match self.pairing {
            Pairing::Mutual => self.connections,
            Pairing::OneWay => self.connections / 2,
        }
    }

    /// Open loop: time between two sends of one sender, microseconds.
    pub fn send_interval_us(&self) -> u64 {
        if self.mode != Mode::Open || self.rate_per_s <= 0.0 {
            return 0;
        }
        let us = f64::from(self.senders()) / self.rate_per_s * 1e6;
        crate::num::f64_to_u64(us.clamp(1.0, 1e12))
    }

    /// Whether the connections speak TLS.
    pub fn tls(&self) -> bool {
        self.trust != TrustChoice::InsecurePlaintext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["tern-loadgen"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_need_a_trust_choice() {
        let err = cli(&[]).scenario().unwrap_err();
        assert!(err.to_string().contains("--ca-cert"), "{err}");
        let s = cli(&["--insecure-plaintext"]).scenario().unwrap();
        assert_eq!(s.trust, TrustChoice::InsecurePlaintext);
        assert_eq!(s.connections, 1_000);
        assert_eq!(s.mode, Mode::Closed);
        assert_eq!(s.procs(), 1);
        assert!(!s.tls());
    }

    #[test]
    fn flags_parse_into_the_scenario() {
        let s = cli(&[
            "--ca-cert",
            "/tmp/cert.pem",
            "-c",
            "2000",
            "--mode",
            "open",
            "--rate",
            "5000",
            "--body-bytes",
            "200",
            "-d",
            "20",
            "--ramp",
            "500",
            "--offline-fraction",
            "0.25",
            "--offline",
            "3",
            "--read-receipts",
            "--pairing",
            "one-way",
            "--window-until",
            "ack",
            "--procs",
            "2",
            "--server",
            "127.0.0.1:9000",
        ])
        .scenario()
        .unwrap();
        assert_eq!(s.trust, TrustChoice::CaCert("/tmp/cert.pem".into()));
        assert_eq!(s.connections, 2_000);
        assert_eq!(s.mode, Mode::Open);
        assert_eq!(s.rate_per_s, 5_000.0);
        assert_eq!(s.body_bytes, 200);
        assert_eq!(s.duration_s, 20.0);
        assert_eq!(s.ramp_per_s, 500);
        assert_eq!(s.offline_fraction, 0.25);
        assert_eq!(s.offline_s, 3.0);
        assert!(s.read_receipts);
        assert_eq!(s.pairing, Pairing::OneWay);
        assert_eq!(s.window_until, WindowUntil::Ack);
        assert_eq!(s.procs(), 2);
        assert_eq!(s.server, "127.0.0.1:9000");
        // 1000 senders at 5000/s: one send per sender every 200 ms.
        assert_eq!(s.senders(), 1_000);
        assert_eq!(s.send_interval_us(), 200_000);
    }

    #[test]
    fn toml_file_is_overridden_by_flags() {
        let file = parse_toml(
            r#"
            connections = 400
            mode = "open"
            rate = 1000.0
            body_bytes = 64
            read_receipts = true
            pin_sha256 = "ab"
            duration_s = 5.0
            pairing = "one-way"
            "#,
        )
        .unwrap();
        assert_eq!(file.connections, Some(400));
        let flags = cli(&[
            "-c",
            "600",
            "--read-receipts",
            "false",
            "--insecure-plaintext",
        ])
        .as_layer();
        let s = Scenario::from_layers(&[file.clone(), flags]).unwrap();
        assert_eq!(s.connections, 600, "flag wins");
        assert_eq!(s.mode, Mode::Open, "file value kept");
        assert_eq!(s.body_bytes, 64);
        assert_eq!(s.pairing, Pairing::OneWay);
        assert!(!s.read_receipts, "--read-receipts false overrides the file");
        assert_eq!(
            s.trust,
            TrustChoice::InsecurePlaintext,
            "flag trust replaces file trust"
        );
        // Without flags the file's trust stands.
        let s = Scenario::from_layers(&[file]).unwrap();
        assert_eq!(s.trust, TrustChoice::PinSha256("ab".into()));
        assert!(s.read_receipts);
    }

    #[test]
    fn unknown_toml_keys_and_bad_values_are_refused() {
        assert!(parse_toml("conections = 5").is_err());
        assert!(parse_toml("mode = \"sideways\"").is_err());
        let plain = cli(&["--insecure-plaintext"]).as_layer();
        for (toml_text, needle) in [
            ("connections = 3", "even"),
            ("connections = 0", "even"),
            ("mode = \"open\"\nrate = 0.0", "--rate"),
            ("outstanding = 0", "outstanding"),
            ("body_bytes = 10", "body_bytes"),
            ("duration_s = 0.0", "duration"),
            ("offline_fraction = 1.5", "offline_fraction"),
            ("offline_fraction = 0.5\noffline_s = 100.0", "offline"),
            ("source_ip_first = \"10.0.0.1\"", "127.0.0.0/8"),
            ("server = \"192.0.2.1:7443\"", "loopback"),
            ("connections = 2\nprocs = 2", "at least one pair"),
            ("connections = 40000\nprocs = 1", "--procs 3"),
        ] {
            let file = parse_toml(toml_text).unwrap();
            let err = Scenario::from_layers(&[file, plain.clone()]).unwrap_err();
            assert!(err.to_string().contains(needle), "{toml_text}: {err}");
        }
        let two = cli(&["--ca-cert", "a.pem", "--insecure-plaintext"]);
        assert!(two.scenario().unwrap_err().to_string().contains("only one"));
    }

    #[test]
    fn procs_default_to_one_per_15k_connections() {
        let s = cli(&["--insecure-plaintext", "-c", "40000"])
            .scenario()
            .unwrap();
        assert_eq!(s.procs(), 3);
        let s = cli(&["--insecure-plaintext", "-c", "15000"])
            .scenario()
            .unwrap();
        assert_eq!(s.procs(), 1);
    }

    #[test]
    fn readme_example_scenario_parses_and_validates() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").unwrap() + "```toml\n".len();
        let len = readme[start..].find("```").unwrap();
        let file = parse_toml(&readme[start..start + len]).unwrap();
        let s = Scenario::from_layers(&[file]).unwrap();
        assert_eq!(s.mode, Mode::Open);
        assert_eq!(
            s.trust,
            TrustChoice::CaCert("tern-data/tls/cert.pem".into())
        );
        assert!(s.read_receipts);
    }

    #[test]
    fn ceiling_and_handshake_rules() {
        let s = cli(&[
            "--insecure-plaintext",
            "--target",
            "ceiling",
            "--server-ports",
            "2",
        ])
        .scenario()
        .unwrap();
        assert_eq!(s.target, Target::Ceiling);
        assert!(s.raw());
        let base: std::net::SocketAddr = "127.0.0.1:7600".parse().unwrap();
        assert_eq!(s.server_for_pair(base, 0).port(), 7600);
        assert_eq!(s.server_for_pair(base, 1).port(), 7601);
        assert_eq!(s.server_for_pair(base, 2).port(), 7600);
        let s = cli(&["--pin-sha256", "ab", "--mode", "handshake"])
            .scenario()
            .unwrap();
        assert!(s.raw(), "handshakes need no session");
        assert!(!cli(&["--insecure-plaintext"]).scenario().unwrap().raw());
        for (args, needle) in [
            (
                &["--insecure-plaintext", "--server-ports", "2"][..],
                "one port",
            ),
            (
                &["--insecure-plaintext", "--mode", "handshake"][..],
                "measures TLS handshakes",
            ),
            (
                &[
                    "--insecure-plaintext",
                    "--target",
                    "ceiling",
                    "--window-until",
                    "ack",
                ][..],
                "no ServerAck",
            ),
            (
                &[
                    "--insecure-plaintext",
                    "--target",
                    "ceiling",
                    "--read-receipts",
                ][..],
                "--target tern",
            ),
            (
                &[
                    "--insecure-plaintext",
                    "--target",
                    "ceiling",
                    "--offline-fraction",
                    "0.1",
                ][..],
                "--target tern",
            ),
            (
                &[
                    "--insecure-plaintext",
                    "--target",
                    "ceiling",
                    "--server",
                    "127.0.0.1:65535",
                    "--server-ports",
                    "2",
                ][..],
                "past 65535",
            ),
        ] {
            let err = cli(args).scenario().unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn quiet_turns_progress_off() {
        assert!(
            !cli(&["--insecure-plaintext", "-q"])
                .scenario()
                .unwrap()
                .progress
        );
        assert!(cli(&["--insecure-plaintext"]).scenario().unwrap().progress);
    }
}
