//! Configuration: a TOML file, then environment variables
//! (`TERN_<SECTION>_<KEY>`), then command-line overrides, in rising order of
//! precedence. Embedded defaults need no file.
//!
//! Layers are merged as TOML tables in which a key that was not given is
//! simply absent, so a default can never override a value from a lower
//! layer (the clap-default trap). The defaults are the lowest layer: the
//! serialized [`Config::default`]. Every layer is checked on its own first,
//! so an unknown key or a bad value is reported with the key's name and
//! where it came from (file and line, environment variable, or flag).
//!
//! Every key is described once, in [`keys::KEYS`]; the commented default
//! config ([`Config::default_toml_commented`]), the reference in
//! docs/OPERATIONS.md ([`reference_markdown`]) and the reload plan
//! ([`Config::changes`]) come from that table.

mod cli;
pub mod keys;
mod limits;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ops::alerts::{self, AlertRule, AlertRules};
use crate::ops::http::{HEADER_BYTES_MAX_DEFAULT, READ_TIMEOUT_MS_DEFAULT};
use crate::server::{ServeOptions, SmsChoice, TlsChoice};
use crate::sms::HttpGatewayConfig;

pub use cli::{run_config_cmd, ConfigArgs, ConfigCmd, ConfigCmdArgs};
pub use keys::{KeySpec, Kind, KEYS};
pub use limits::{LimitsConfig, RateConfig};

/// File name of the admin socket inside the data directory, when
/// `ops.admin_socket` is not set.
pub const ADMIN_SOCKET_FILE_NAME: &str = "admin.sock";

/// Default address of the operations HTTP endpoint: localhost only.
pub const OPS_HTTP_LISTEN_DEFAULT: &str = "127.0.0.1:9443";

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV_VAR: &str = "TERN_CONFIG";

/// Largest config file read, bytes. A config is a few KiB; anything near
/// this is not a config file.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Everything the server can be configured with, fully resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Messaging listener address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Shards; `None`: one per core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<u16>,
    /// Pin shards to cores; `None`: pin when shards <= cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_cores: Option<bool>,
    /// Grace period of a graceful stop.
    pub shutdown_grace_ms: u64,
    /// Log as JSON lines.
    pub log_json: bool,
    /// `[tls]`.
    pub tls: TlsConfig,
    /// `[sms]`.
    pub sms: SmsConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[ops]`.
    pub ops: OpsConfig,
    /// `[alerts]`.
    pub alerts: AlertsConfig,
}

/// `[tls]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Operator certificate chain (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Operator private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Extra names for the generated certificate.
    pub names: Vec<String>,
    /// TLS off (benchmarks only).
    pub insecure_plaintext: bool,
}

/// `[sms]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// HTTP SMS gateway URL; `None`: outbox file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
    /// Bearer token for the gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_token: Option<String>,
    /// Deadline of one POST.
    pub timeout_ms: u64,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            http_url: None,
            http_token: None,
            timeout_ms: crate::sms::DEFAULT_TIMEOUT_MS,
        }
    }
}

impl fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsConfig")
            .field("http_url", &self.http_url)
            .field(
                "http_token",
                &self.http_token.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// When a message counts as stored (`log.durability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityConfig {
    /// ServerAck after fdatasync: survives power loss.
    #[default]
    Fsync,
    /// ServerAck before any sync: survives kill -9, not power loss.
    /// Benchmarks only.
    UnsafeNoFsync,
}

impl From<tern_log::Durability> for DurabilityConfig {
    fn from(d: tern_log::Durability) -> Self {
        match d {
            tern_log::Durability::Fsync => DurabilityConfig::Fsync,
            tern_log::Durability::UnsafeNoFsync => DurabilityConfig::UnsafeNoFsync,
        }
    }
}

impl From<DurabilityConfig> for tern_log::Durability {
    fn from(d: DurabilityConfig) -> Self {
        match d {
            DurabilityConfig::Fsync => tern_log::Durability::Fsync,
            DurabilityConfig::UnsafeNoFsync => tern_log::Durability::UnsafeNoFsync,
        }
    }
}

/// `[log]`: the shards' message logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// When a message counts as stored.
    pub durability: DurabilityConfig,
    /// Size of one segment file.
    pub segment_bytes_max: u32,
    /// Most bytes in one write + fdatasync (one group commit).
    pub batch_bytes_max: usize,
    /// Most appended bytes not yet durable before the shard refuses more.
    pub pending_bytes_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        let w = tern_log::WriterOptions::default();
        Self {
            durability: DurabilityConfig::default(),
            segment_bytes_max: w.segment_bytes_max,
            batch_bytes_max: w.batch_bytes_max,
            pending_bytes_max: w.pending_bytes_max,
        }
    }
}

/// `[ops]`: the operations HTTP endpoint and the admin socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Serve /metrics, /healthz, /readyz.
    pub http_enabled: bool,
    /// Address of the operations endpoint.
    pub http_listen: SocketAddr,
    /// Largest request head read.
    pub http_header_bytes_max: usize,
    /// Time to send the request head.
    pub http_read_timeout_ms: u64,
    /// Admin socket; `None`: `<data_dir>/admin.sock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<PathBuf>,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            http_enabled: true,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            http_header_bytes_max: HEADER_BYTES_MAX_DEFAULT,
            http_read_timeout_ms: READ_TIMEOUT_MS_DEFAULT,
            admin_socket: None,
        }
    }
}

/// One queue-length alert rule in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRuleConfig {
    /// Fires above this value; 0 disables the rule.
    pub threshold: u64,
    /// ... after staying above it this long.
    pub duration_ms: u64,
}

impl From<AlertRuleConfig> for AlertRule {
    fn from(r: AlertRuleConfig) -> Self {
        AlertRule {
            threshold: r.threshold,
            duration_ms: r.duration_ms,
        }
    }
}

impl From<AlertRule> for AlertRuleConfig {
    fn from(r: AlertRule) -> Self {
        AlertRuleConfig {
            threshold: r.threshold,
            duration_ms: r.duration_ms,
        }
    }
}

/// `[alerts]`: queue-length alerts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Webhook receiving firing/cleared events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Deadline of one webhook POST.
    pub webhook_timeout_ms: u64,
    /// Items queued on a shard, all users.
    pub shard_queue: AlertRuleConfig,
    /// Longest single user queue on a shard.
    pub user_queue: AlertRuleConfig,
    /// Cross-shard mesh depth of a shard.
    pub mesh_queue: AlertRuleConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        let rules = AlertRules::default();
        Self {
            webhook_url: None,
            webhook_timeout_ms: alerts::WEBHOOK_TIMEOUT_MS_DEFAULT,
            shard_queue: rules.shard_queue.into(),
            user_queue: rules.user_queue.into(),
            mesh_queue: rules.mesh_queue.into(),
        }
    }
}

impl AlertsConfig {
    /// The evaluator's rules.
    pub fn rules(&self) -> AlertRules {
        AlertRules {
            shard_queue: self.shard_queue.into(),
            user_queue: self.user_queue.into(),
            mesh_queue: self.mesh_queue.into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let serve = ServeOptions::default();
        Self {
            listen: serve.listen,
            data_dir: serve.data_dir,
            shards: None,
            pin_cores: None,
            shutdown_grace_ms: serve.shutdown_grace_ms,
            log_json: false,
            tls: TlsConfig::default(),
            sms: SmsConfig::default(),
            log: LogConfig {
                durability: serve.durability.into(),
                segment_bytes_max: serve.log_segment_bytes_max,
                batch_bytes_max: serve.log_batch_bytes_max,
                pending_bytes_max: serve.log_pending_bytes_max,
            },
            limits: LimitsConfig::from(&serve.limits),
            ops: OpsConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

/// Where a value came from, for error messages.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A config file, at this line when known.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: Option<usize>,
    },
    /// An environment variable.
    Env {
        /// Its name.
        var: String,
    },
    /// A command-line flag.
    Cli {
        /// The flag as given (`--set limits.inbox_len_max=5`).
        arg: String,
    },
    /// The merged configuration (no single source).
    Merged,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{line}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::Cli { arg } => write!(f, "command line `{arg}`"),
            Origin::Merged => f.write_str("merged configuration"),
        }
    }
}

/// Why a configuration was refused. Every variant but `Read` and `Syntax`
/// names the key.
#[non_exhaustive]
#[derive(Debug)]
pub enum ConfigError {
    /// The config file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// No such key.
    UnknownKey {
        /// The key as written (dotted for files and flags).
        key: String,
        /// Where it was written.
        origin: Origin,
    },
    /// The value does not parse for this key.
    BadValue {
        /// The key.
        key: String,
        /// Where the value came from.
        origin: Origin,
        /// What was expected or what is wrong.
        message: String,
    },
    /// Values that parse but are refused together or alone (a limit out of
    /// range, a certificate without its key, ...).
    Invalid {
        /// The key at fault.
        key: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// The key this error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::BadValue { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }

    /// The 1-based line in the config file, when the error came from one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { line, .. } => *line,
            ConfigError::UnknownKey { origin, .. } | ConfigError::BadValue { origin, .. } => {
                match origin {
                    Origin::File { line, .. } => *line,
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Syntax {
                path,
                line: Some(line),
                message,
            } => write!(f, "{}:{line}: not valid TOML: {message}", path.display()),
            ConfigError::Syntax {
                path,
                line: None,
                message,
            } => write!(f, "{}: not valid TOML: {message}", path.display()),
            ConfigError::UnknownKey { key, origin } => write!(
                f,
                "unknown configuration key `{key}` ({origin}); `tern config default` lists every key"
            ),
            ConfigError::BadValue {
                key,
                origin,
                message,
            } => write!(f, "bad value for `{key}` ({origin}): {message}"),
            ConfigError::Invalid { key, reason } => write!(f, "invalid `{key}`: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Keys that changed between two configurations, split by whether a live
/// `reload` applies them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChanges {
    /// Changed keys that `reload` applies at once.
    pub live: Vec<String>,
    /// Changed keys that take effect only after a restart.
    pub restart: Vec<String>,
}

impl ConfigChanges {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.restart.is_empty()
    }
}

/// One value from the environment or the command line, already typed.
#[derive(Clone, Debug)]
pub(crate) struct Assignment {
    pub(crate) spec: &'static KeySpec,
    pub(crate) value: toml::Value,
}

impl Config {
    /// Loads the configuration for `tern serve`: the file from `--config`
    /// (or `TERN_CONFIG`), then the process environment, then `args`.
    pub fn load(args: &ConfigArgs) -> Result<Config, ConfigError> {
        let env = std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("TERN_")
                .then(|| (k, v.to_string_lossy().into_owned()))
        });
        Self::load_with_env(args, env)
    }

    /// [`Config::load`] with an explicit environment (tests; embedding).
    pub fn load_with_env<I>(args: &ConfigArgs, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("TERN_"))
            .collect();
        env.sort();
        let file = args.config.clone().or_else(|| {
            env.iter()
                .find(|(k, _)| k == CONFIG_ENV_VAR)
                .map(|(_, v)| PathBuf::from(v))
        });
        let mut merged = default_table()?;
        if let Some(path) = &file {
            let (_, table) = read_file(path)?;
            merge_tables(&mut merged, table);
        }
        for a in env_assignments(&env)? {
            set_path(&mut merged, a.spec.key, a.value);
        }
        for a in args.assignments()? {
            set_path(&mut merged, a.spec.key, a.value);
        }
        let config: Config =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::BadValue {
                    key: "(merged)".into(),
                    origin: Origin::Merged,
                    message: e.message().to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a whole config file's text (no environment, no flags) and
    /// validates it. `path` is only used in messages.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let (config, _) = parse_file_text(text, path)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that parses but may still be wrong: the engine's
    /// limits, TLS and SMS settings, ops and alert bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        self.limits
            .to_limits()
            .validate()
            .map_err(|e| ConfigError::Invalid {
                key: format!("limits.{}", e.field()),
                reason: e.to_string(),
            })?;
        if self.shards == Some(0) {
            return Err(invalid("shards", "must be at least 1"));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err(invalid("tls.key", "tls.cert is set but tls.key is not"))
            }
            (None, Some(_)) => {
                return Err(invalid("tls.cert", "tls.key is set but tls.cert is not"))
            }
            _ => {}
        }
        if self.tls.insecure_plaintext && self.tls.cert.is_some() {
            return Err(invalid(
                "tls.insecure_plaintext",
                "cannot be combined with tls.cert and tls.key",
            ));
        }
        if let Some(url) = &self.sms.http_url {
            if !is_http_url(url) {
                return Err(invalid(
                    "sms.http_url",
                    "must start with http:// or https://",
                ));
            }
        } else if self.sms.http_token.is_some() {
            return Err(invalid(
                "sms.http_token",
                "is set but sms.http_url is not (the token would be unused)",
            ));
        }
        if self.sms.timeout_ms == 0 {
            return Err(invalid("sms.timeout_ms", "must be at least 1"));
        }
        if self.ops.http_header_bytes_max < crate::ops::http::HEADER_BYTES_MIN {
            return Err(ConfigError::Invalid {
                key: "ops.http_header_bytes_max".into(),
                reason: format!("must be at least {}", crate::ops::http::HEADER_BYTES_MIN),
            });
        }
        if self.ops.http_read_timeout_ms == 0 {
            return Err(invalid("ops.http_read_timeout_ms", "must be at least 1"));
        }
        if let Some(url) = &self.alerts.webhook_url {
            if !is_http_url(url) {
                return Err(invalid(
                    "alerts.webhook_url",
                    "must start with http:// or https://",
                ));
            }
        }
        if self.alerts.webhook_timeout_ms == 0 {
            return Err(invalid("alerts.webhook_timeout_ms", "must be at least 1"));
        }
        Ok(())
    }

    /// The options `server::serve` takes. Validates first. The `[ops]` and
    /// `[alerts]` sections and `log_json` are not part of `ServeOptions`:
    /// read them from the `Config`. `repair_log` stays false.
    pub fn serve_options(&self) -> Result<ServeOptions, ConfigError> {
        self.validate()?;
        let tls = if self.tls.insecure_plaintext {
            TlsChoice::InsecurePlaintext
        } else if let (Some(cert), Some(key)) = (&self.tls.cert, &self.tls.key) {
            TlsChoice::Files {
                cert: cert.clone(),
                key: key.clone(),
            }
        } else {
            TlsChoice::Embedded {
                extra_names: self.tls.names.clone(),
            }
        };
        let sms = match &self.sms.http_url {
            Some(url) => {
                let mut cfg = HttpGatewayConfig::new(url.clone());
                cfg.bearer_token = self.sms.http_token.clone();
                cfg.timeout_ms = self.sms.timeout_ms;
                SmsChoice::Http(cfg)
            }
            None => SmsChoice::Outbox,
        };
        Ok(ServeOptions {
            listen: self.listen,
            shards: self.shards,
            pin_cores: self.pin_cores,
            data_dir: self.data_dir.clone(),
            tls,
            sms,
            limits: self.limits.to_limits(),
            shutdown_grace_ms: self.shutdown_grace_ms,
            durability: self.log.durability.into(),
            log_segment_bytes_max: self.log.segment_bytes_max,
            log_batch_bytes_max: self.log.batch_bytes_max,
            log_pending_bytes_max: self.log.pending_bytes_max,
            // `repair_log` is a one-off start-up action, not configuration:
            // the caller sets it from its `--repair-log` flag.
            ..ServeOptions::default()
        })
    }

    /// The admin socket: `ops.admin_socket`, else `<data_dir>/admin.sock`.
    pub fn admin_socket_path(&self) -> PathBuf {
        self.ops
            .admin_socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join(ADMIN_SOCKET_FILE_NAME))
    }

    /// Which keys differ from `self` in `new`, split into those a live
    /// reload applies and those that need a restart.
    pub fn changes(&self, new: &Config) -> ConfigChanges {
        let (Ok(old_t), Ok(new_t)) = (to_table(self), to_table(new)) else {
            return ConfigChanges::default();
        };
        let mut out = ConfigChanges::default();
        for spec in KEYS {
            if get_path(&old_t, spec.key) != get_path(&new_t, spec.key) {
                if spec.live {
                    out.live.push(spec.key.to_string());
                } else {
                    out.restart.push(spec.key.to_string());
                }
            }
        }
        out
    }

    /// The full default configuration as TOML, every key with a comment,
    /// keys without a default commented out with an example value.
    pub fn default_toml_commented() -> String {
        let defaults = to_table(&Config::default()).unwrap_or_default();
        let mut out = String::new();
        out.push_str(
            "# Tern configuration. Every key is optional: a key left out keeps the\n\
             # default shown here. Precedence, lowest first: this file, environment\n\
             # variables (shown per key), command-line flags (`--set KEY=VALUE`).\n\
             # Check a file with `tern config check FILE`.\n",
        );
        let mut section = "";
        for spec in KEYS {
            let (sec, leaf) = spec.split();
            if sec != section {
                out.push_str(&format!("\n[{sec}]\n"));
                section = sec;
            } else {
                out.push('\n');
            }
            for line in wrap(spec.doc, 76) {
                out.push_str(&format!("# {line}\n"));
            }
            out.push_str(&format!(
                "# env: {}; on reload: {}\n",
                spec.env_var(),
                if spec.live { "live" } else { "restart" }
            ));
            match get_path(&defaults, spec.key) {
                Some(v) => out.push_str(&format!("{leaf} = {}\n", render_value(v))),
                None => out.push_str(&format!("# {leaf} = {}\n", spec.example.unwrap_or("\"\""))),
            }
        }
        out
    }
}

/// Reads and validates a config file on its own (`tern config check`):
/// no environment, no flags.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    let (config, _) = read_file(path)?;
    config.validate()?;
    Ok(config)
}

/// The configuration reference as a Markdown table, generated from
/// [`KEYS`] and the defaults (kept in docs/OPERATIONS.md; a test checks it
/// is current).
pub fn reference_markdown() -> String {
    let defaults = to_table(&Config::default()).unwrap_or_default();
    let mut out = String::from(
        "| Key | Environment | Default | Reload | Description |\n|---|---|---|---|---|\n",
    );
    for spec in KEYS {
        let default = match get_path(&defaults, spec.key) {
            Some(v) => format!("`{}`", render_value(v)),
            None => format!("unset (e.g. `{}`)", spec.example.unwrap_or("\"\"")),
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} |\n",
            spec.key,
            spec.env_var(),
            default.replace('|', "\\|"),
            if spec.live { "live" } else { "restart" },
            spec.doc.replace('|', "\\|"),
        ));
    }
    out
}

fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn to_table(config: &Config) -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(config).map_err(|e| ConfigError::Invalid {
        key: "(config)".into(),
        reason: format!("cannot serialize: {e}"),
    })
}

fn default_table() -> Result<toml::Table, ConfigError> {
    to_table(&Config::default())
}

fn read_file(path: &Path) -> Result<(Config, toml::Table), ConfigError> {
    use std::io::Read as _;
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(CONFIG_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > CONFIG_FILE_BYTES_MAX {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {CONFIG_FILE_BYTES_MAX} bytes"),
        )));
    }
    parse_file_text(&text, path)
}

/// Parses a file's text twice: as a plain table (syntax, and the layer to
/// merge) and as a `Config` (unknown keys and bad values, with positions).
fn parse_file_text(text: &str, path: &Path) -> Result<(Config, toml::Table), ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim().to_string(),
    })?;
    let config: Config = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        let (line, key) = match e.span() {
            Some(span) => {
                let (line, key) = key_at(text, span.start);
                (Some(line), key)
            }
            None => (None, None),
        };
        let origin = Origin::File {
            path: path.to_path_buf(),
            line,
        };
        if let Some(name) = unknown_field_name(&message) {
            let key = match key {
                Some(k) if k == name || k.ends_with(&format!(".{name}")) => k,
                Some(k) => format!("{k}.{name}"),
                None => name,
            };
            ConfigError::UnknownKey { key, origin }
        } else {
            ConfigError::BadValue {
                key: key.unwrap_or_else(|| "(unknown)".into()),
                origin,
                message,
            }
        }
    })?;
    Ok((config, table))
}

/// `unknown field `foo`, expected ...` -> `foo`.
fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    rest.get(..end).map(str::to_string)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let upto = text.get(..offset.min(text.len())).unwrap_or(text);
    upto.bytes().filter(|&b| b == b'\n').count() + 1
}

/// The line of `offset` and the dotted key written on it (the section
/// header's name for a header line), from the text around it.
fn key_at(text: &str, offset: usize) -> (usize, Option<String>) {
    let line_no = line_of(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let idx = line_no.saturating_sub(1);
    let Some(line) = lines.get(idx).map(|l| l.trim()) else {
        return (line_no, None);
    };
    if let Some(header) = header_name(line) {
        return (line_no, Some(header));
    }
    let section = lines
        .get(..idx)
        .unwrap_or(&[])
        .iter()
        .rev()
        .find_map(|l| header_name(l.trim()));
    let Some((lhs, _)) = line.split_once('=') else {
        return (line_no, section);
    };
    let lhs: String = lhs
        .trim()
        .split('.')
        .map(|p| p.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".");
    let key = match section {
        Some(s) if !s.is_empty() => format!("{s}.{lhs}"),
        _ => lhs,
    };
    (line_no, Some(key))
}

fn header_name(line: &str) -> Option<String> {
    let inner = line
        .strip_prefix("[[")
        .and_then(|l| l.split_once("]]"))
        .or_else(|| line.strip_prefix('[').and_then(|l| l.split_once(']')))?
        .0;
    Some(
        inner
            .split('.')
            .map(|p| p.trim().trim_matches('"'))
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// Overlays `top` on `base`, recursing into tables.
fn merge_tables(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge_tables(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn get_path<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let first = parts.next()?;
    let mut v = table.get(first)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

/// Typed assignments from `TERN_...` variables (sorted by name). Variables
/// of a known section that name no key are refused; others (`TERN_CONFIG`,
/// the client's `TERN_SERVER`) are not ours and are ignored.
fn env_assignments(env: &[(String, String)]) -> Result<Vec<Assignment>, ConfigError> {
    let mut out = Vec::new();
    for (var, value) in env {
        let origin = Origin::Env { var: var.clone() };
        match keys::find_env(var) {
            Some(spec) => out.push(assignment(spec, value, origin)?),
            None => {
                let rest = var.strip_prefix("TERN_").unwrap_or(var);
                if keys::ENV_SECTIONS
                    .iter()
                    .any(|s| rest.strip_prefix(s).is_some_and(|r| r.starts_with('_')))
                {
                    return Err(ConfigError::UnknownKey {
                        key: rest.to_ascii_lowercase().replacen('_', ".", 1),
                        origin,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Parses `raw` as a value of `spec`'s kind and checks it deserializes for
/// that key alone, so a bad value is reported against its key and source.
pub(crate) fn assignment(
    spec: &'static KeySpec,
    raw: &str,
    origin: Origin,
) -> Result<Assignment, ConfigError> {
    let bad = |message: String| ConfigError::BadValue {
        key: spec.key.to_string(),
        origin: origin.clone(),
        message,
    };
    let expected = || format!("expected {}, got `{raw}`", spec.kind.syntax());
    let value = match spec.kind {
        Kind::Str => toml::Value::String(raw.to_string()),
        Kind::Int => toml::Value::Integer(parse_int(raw).ok_or_else(|| bad(expected()))?),
        Kind::Bool => toml::Value::Boolean(parse_bool(raw).ok_or_else(|| bad(expected()))?),
        Kind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        Kind::Rate => {
            let (burst, period) = raw.split_once('/').ok_or_else(|| bad(expected()))?;
            let burst = parse_int(burst).ok_or_else(|| bad(expected()))?;
            let period = parse_int(period).ok_or_else(|| bad(expected()))?;
            let mut t = toml::Table::new();
            t.insert("burst".into(), toml::Value::Integer(burst));
            t.insert("period_ms".into(), toml::Value::Integer(period));
            toml::Value::Table(t)
        }
    };
    let mut alone = toml::Table::new();
    set_path(&mut alone, spec.key, value.clone());
    toml::Value::Table(alone)
        .try_into::<Config>()
        .map_err(|e| bad(format!("{} (got `{raw}`)", e.message().trim())))?;
    Ok(Assignment { spec, value })
}

fn parse_int(raw: &str) -> Option<i64> {
    raw.trim().replace('_', "").parse().ok()
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A value as written in a TOML file.
fn render_value(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => {
            let inner: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{k} = {}", render_value(v)))
                .collect();
            format!("{{ {} }}", inner.join(", "))
        }
        toml::Value::Array(a) => {
            let inner: Vec<String> = a.iter().map(render_value).collect();
            format!("[{}]", inner.join(", "))
        }
        other => other.to_string(),
    }
}

/// Greedy word wrap.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_in_the_table_is_in_the_config_and_back() {
        // A config with every optional key set serializes to exactly the
        // table's keys: nothing undocumented, nothing documented that is not
        // there.
        let mut c = Config {
            shards: Some(2),
            pin_cores: Some(true),
            ..Config::default()
        };
        c.tls.cert = Some("c.pem".into());
        c.tls.key = Some("k.pem".into());
        c.sms.http_url = Some("http://x".into());
        c.sms.http_token = Some("t".into());
        c.ops.admin_socket = Some("a.sock".into());
        c.alerts.webhook_url = Some("http://y".into());
        let t = to_table(&c).unwrap();
        let mut leaves = Vec::new();
        fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(inner)
                        if !(inner.contains_key("burst") && inner.contains_key("period_ms")) =>
                    {
                        walk(&key, inner, out)
                    }
                    _ => out.push(key),
                }
            }
        }
        walk("", &t, &mut leaves);
        leaves.sort();
        let mut keys: Vec<String> = KEYS.iter().map(|k| k.key.to_string()).collect();
        keys.sort();
        assert_eq!(leaves, keys);
    }

    #[test]
    fn kinds_match_default_values_and_examples() {
        let d = to_table(&Config::default()).unwrap();
        for spec in KEYS {
            let v = match get_path(&d, spec.key) {
                Some(v) => {
                    assert!(
                        spec.example.is_none(),
                        "{} has a default and an example",
                        spec.key
                    );
                    v.clone()
                }
                None => {
                    let ex = spec
                        .example
                        .unwrap_or_else(|| panic!("{} lacks an example", spec.key));
                    let t: toml::Table = toml::from_str(&format!("v = {ex}")).unwrap();
                    t["v"].clone()
                }
            };
            let ok = match spec.kind {
                Kind::Str => v.is_str(),
                Kind::Int => v.is_integer(),
                Kind::Bool => v.is_bool(),
                Kind::List => v.is_array(),
                Kind::Rate => v.is_table(),
            };
            assert!(ok, "{}: kind {:?} but value {v}", spec.key, spec.kind);
            assert!(!spec.doc.contains('\n'), "{}", spec.key);
        }
    }

    #[test]
    fn key_at_finds_sections_and_keys() {
        let text =
            "listen = 1\n[limits]\ninbox_len_max = \"x\"\n[alerts.user_queue]\nthreshold = 1\n";
        assert_eq!(key_at(text, 0), (1, Some("listen".into())));
        let off = text.find("\"x\"").unwrap();
        assert_eq!(key_at(text, off), (3, Some("limits.inbox_len_max".into())));
        let off = text.find("threshold").unwrap();
        assert_eq!(
            key_at(text, off),
            (5, Some("alerts.user_queue.threshold".into()))
        );
        let off = text.find("[alerts").unwrap();
        assert_eq!(key_at(text, off), (4, Some("alerts.user_queue".into())));
    }

    #[test]
    fn wrap_respects_width() {
        let lines = wrap("aaa bbb ccc ddd", 7);
        assert_eq!(lines, vec!["aaa bbb", "ccc ddd"]);
        assert!(wrap("", 10).is_empty());
    }
}
