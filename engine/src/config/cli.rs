//! Command-line side of the configuration: the flags `tern serve` takes
//! (every one optional, so "not given" never overrides the file or the
//! environment) and `tern config check|default|show|reference`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{assignment, keys, Assignment, Config, ConfigError, Origin};

/// Configuration flags of `tern serve` (and of `tern config show`). Mount
/// with `#[command(flatten)]`. Every flag is a command-line override of the
/// key it names; `--set KEY=VALUE` reaches every key.
#[derive(Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Default: $TERN_CONFIG, else none
    /// (embedded defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (key `listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory, created on first run (key `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Shards (executors); default one per core (key `shards`).
    #[arg(long)]
    pub shards: Option<u16>,
    /// Do not pin shards to cores (key `pin_cores = false`).
    #[arg(long)]
    pub no_pin_cores: bool,
    /// Operator certificate chain, PEM (key `tls.cert`).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Operator private key, PEM (key `tls.key`).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names or IPs for the generated self-signed certificate;
    /// repeatable (key `tls.names`).
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
    /// Turn TLS OFF. For benchmarks on loopback only: keys and messages
    /// travel in clear text (key `tls.insecure_plaintext`).
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Send PINs by POSTing JSON to this URL instead of the outbox file
    /// (key `sms.http_url`).
    #[arg(long)]
    pub sms_http_url: Option<String>,
    /// Bearer token for the SMS URL (key `sms.http_token`; prefer
    /// TERN_SMS_HTTP_TOKEN, flags are visible in `ps`).
    #[arg(long)]
    pub sms_http_token: Option<String>,
    /// When a message counts as stored: `fsync` or `unsafe-no-fsync`
    /// (benchmarks only) (key `log.durability`).
    #[arg(long, value_parser = ["fsync", "unsafe-no-fsync"])]
    pub durability: Option<String>,
    /// Override an engine limit, NAME=VALUE (rates as BURST/PERIOD_MS);
    /// repeatable. Same as `--set limits.NAME=VALUE`.
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    pub limits: Vec<String>,
    /// Log as JSON lines (key `log_json`).
    #[arg(long)]
    pub log_json: bool,
    /// Set any key, KEY=VALUE with a dotted key (`--set
    /// alerts.user_queue.threshold=500`); repeatable; applied last.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ConfigArgs {
    /// The flags as typed assignments, in order: named flags, `--limit`,
    /// `--set` (a later one wins).
    pub(crate) fn assignments(&self) -> Result<Vec<Assignment>, ConfigError> {
        let mut out = Vec::new();
        let mut push = |key: &str, raw: String, arg: String| -> Result<(), ConfigError> {
            let spec = keys::find(key).ok_or_else(|| ConfigError::UnknownKey {
                key: key.to_string(),
                origin: Origin::Cli { arg: arg.clone() },
            })?;
            out.push(assignment(spec, &raw, Origin::Cli { arg })?);
            Ok(())
        };
        if let Some(v) = &self.listen {
            push("listen", v.to_string(), format!("--listen {v}"))?;
        }
        if let Some(v) = &self.data_dir {
            let s = path_str(v, "data_dir", "--data-dir")?;
            push("data_dir", s.clone(), format!("--data-dir {s}"))?;
        }
        if let Some(v) = self.shards {
            push("shards", v.to_string(), format!("--shards {v}"))?;
        }
        if self.no_pin_cores {
            push("pin_cores", "false".into(), "--no-pin-cores".into())?;
        }
        if let Some(v) = &self.tls_cert {
            let s = path_str(v, "tls.cert", "--tls-cert")?;
            push("tls.cert", s.clone(), format!("--tls-cert {s}"))?;
        }
        if let Some(v) = &self.tls_key {
            let s = path_str(v, "tls.key", "--tls-key")?;
            push("tls.key", s.clone(), format!("--tls-key {s}"))?;
        }
        if !self.tls_names.is_empty() {
            if let Some(bad) = self.tls_names.iter().find(|n| n.contains(',')) {
                return Err(ConfigError::BadValue {
                    key: "tls.names".into(),
                    origin: Origin::Cli {
                        arg: format!("--tls-name {bad}"),
                    },
                    message: "a name cannot contain a comma".into(),
                });
            }
            let joined = self.tls_names.join(",");
            push("tls.names", joined.clone(), format!("--tls-name {joined}"))?;
        }
        if self.insecure_plaintext {
            push(
                "tls.insecure_plaintext",
                "true".into(),
                "--insecure-plaintext".into(),
            )?;
        }
        if let Some(v) = &self.sms_http_url {
            push("sms.http_url", v.clone(), format!("--sms-http-url {v}"))?;
        }
        if let Some(v) = &self.sms_http_token {
            push(
                "sms.http_token",
                v.clone(),
                "--sms-http-token <redacted>".into(),
            )?;
        }
        if let Some(v) = &self.durability {
            push("log.durability", v.clone(), format!("--durability {v}"))?;
        }
        if self.log_json {
            push("log_json", "true".into(), "--log-json".into())?;
        }
        for a in &self.limits {
            let arg = format!("--limit {a}");
            let (name, value) = split_assignment(a, &arg)?;
            push(&format!("limits.{name}"), value.to_string(), arg)?;
        }
        for a in &self.sets {
            let arg = format!("--set {a}");
            let (key, value) = split_assignment(a, &arg)?;
            push(key, value.to_string(), arg)?;
        }
        Ok(out)
    }
}

fn split_assignment<'a>(a: &'a str, arg: &str) -> Result<(&'a str, &'a str), ConfigError> {
    match a.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim(), v.trim())),
        _ => Err(ConfigError::BadValue {
            key: a.to_string(),
            origin: Origin::Cli {
                arg: arg.to_string(),
            },
            message: "expected KEY=VALUE".into(),
        }),
    }
}

fn path_str(p: &Path, key: &str, flag: &str) -> Result<String, ConfigError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| ConfigError::BadValue {
            key: key.to_string(),
            origin: Origin::Cli {
                arg: flag.to_string(),
            },
            message: "the path is not valid UTF-8".into(),
        })
}

/// `tern config ...`.
#[derive(Args, Debug)]
pub struct ConfigCmdArgs {
    #[command(subcommand)]
    pub cmd: ConfigCmd,
}

/// The `tern config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Check a config file: TOML syntax, unknown keys, bad values and
    /// limits that do not fit together. Exit status 0 when it is good.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print the full default configuration, every key commented.
    Default,
    /// Print the effective configuration (file, environment and flags
    /// merged) as TOML. The SMS token is redacted.
    Show(ConfigArgs),
    /// Print the configuration reference as a Markdown table.
    Reference,
}

/// Runs a `tern config` subcommand: prints to stdout, errors to stderr.
pub fn run_config_cmd(args: ConfigCmdArgs) -> ExitCode {
    match args.cmd {
        ConfigCmd::Check { file } => match super::check_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tern: {e}");
                ExitCode::FAILURE
            }
        },
        ConfigCmd::Default => {
            print!("{}", Config::default_toml_commented());
            ExitCode::SUCCESS
        }
        ConfigCmd::Reference => {
            print!("{}", super::reference_markdown());
            ExitCode::SUCCESS
        }
        ConfigCmd::Show(cargs) => {
            let mut config = match Config::load(&cargs) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tern: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if config.sms.http_token.is_some() {
                config.sms.http_token = Some("<redacted>".into());
            }
            match toml::to_string(&config) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tern: cannot print the configuration: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
