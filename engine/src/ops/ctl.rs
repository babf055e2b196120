//! `tern ctl`: the admin CLI. Mount [`CtlArgs`] as a subcommand of the
//! `tern` binary and call [`run_ctl`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::admin::{admin_request, AdminError, Reply, Request, QUEUES_TOP_DEFAULT};
use super::metrics::{scaled, MetricsSnapshot};
use crate::config::{Config, ConfigArgs};

/// `tern ctl [--socket PATH | --config FILE] [--json] COMMAND`.
#[derive(Args, Clone, Debug)]
pub struct CtlArgs {
    /// Admin socket of the running server. Default: `ops.admin_socket`
    /// from the config (file from --config or $TERN_CONFIG, and the
    /// environment), else `<data_dir>/admin.sock`.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Config file to find the socket in.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the server's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

/// The `tern ctl` commands.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum CtlCmd {
    /// Version, uptime, shards, connections, readiness.
    Status,
    /// Every metric per shard (`--json` for all of it).
    Stats,
    /// The users with the longest queues across shards.
    Queues {
        /// How many users.
        #[arg(long, default_value_t = QUEUES_TOP_DEFAULT)]
        top: usize,
    },
    /// Disconnect a user's device (phone number or numeric id).
    Kick {
        /// `+15551234567`.
        user: String,
    },
    /// Stop accepting connections; /readyz turns 503. Connected clients
    /// stay until they leave.
    Drain,
    /// Re-read the config file; apply what can change live.
    Reload,
}

impl CtlCmd {
    /// The request this command sends.
    pub fn request(&self) -> Request {
        match self {
            CtlCmd::Status => Request::Status,
            CtlCmd::Stats => Request::Stats,
            CtlCmd::Queues { top } => Request::Queues { top: *top },
            CtlCmd::Kick { user } => Request::Kick { user: user.clone() },
            CtlCmd::Drain => Request::Drain,
            CtlCmd::Reload => Request::Reload,
        }
    }
}

/// The socket `args` point at.
pub fn socket_path(args: &CtlArgs) -> Result<PathBuf, crate::config::ConfigError> {
    if let Some(p) = &args.socket {
        return Ok(p.clone());
    }
    let cargs = ConfigArgs {
        config: args.config.clone(),
        ..ConfigArgs::default()
    };
    Ok(Config::load(&cargs)?.admin_socket_path())
}

/// Runs the command and returns what to print.
pub fn execute(args: &CtlArgs) -> Result<String, CtlError> {
    let path = socket_path(args).map_err(CtlError::Config)?;
    let response = admin_request(&path, &args.cmd.request()).map_err(CtlError::Admin)?;
    if args.json {
        let failed = matches!(response, super::admin::Response::Error(_));
        let text = serde_json::to_string_pretty(&response)
            .map_err(|e| CtlError::Admin(AdminError::Protocol(e.to_string())))?;
        if failed {
            return Err(CtlError::Json(text));
        }
        return Ok(text + "\n");
    }
    let reply = response.into_result().map_err(CtlError::Admin)?;
    Ok(format_reply(&reply))
}

/// Why `tern ctl` failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum CtlError {
    /// The config (to find the socket) is invalid.
    Config(crate::config::ConfigError),
    /// Talking to the server failed, or it answered an error.
    Admin(AdminError),
    /// The server answered an error; `--json` shows it as JSON.
    Json(String),
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Config(e) => write!(f, "{e}"),
            CtlError::Admin(e) => write!(f, "{e}"),
            CtlError::Json(j) => f.write_str(j),
        }
    }
}

impl std::error::Error for CtlError {}

/// Runs `tern ctl`: 0 on success, 1 when the server answered an error, 2
/// when it could not be reached.
pub fn run_ctl(args: CtlArgs) -> ExitCode {
    match execute(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(CtlError::Json(text)) => {
            println!("{text}");
            ExitCode::from(1)
        }
        Err(e @ CtlError::Admin(AdminError::Command(_))) => {
            eprintln!("tern ctl: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tern ctl: {e}");
            ExitCode::from(2)
        }
    }
}

/// `3725` -> `1h2m5s`.
pub fn format_duration_s(s: u64) -> String {
    let (d, h, m, s) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m{s}s"),
        _ => format!("{d}d{h}h{m}m"),
    }
}

/// The text `tern ctl` prints for a reply.
pub fn format_reply(reply: &Reply) -> String {
    let mut out = String::new();
    match reply {
        Reply::Status(s) => {
            let state = if s.draining {
                "draining"
            } else if s.ready {
                "ready"
            } else {
                "not ready"
            };
            let _ = writeln!(
                out,
                "tern {}: {state}, up {}, {} shard(s), {} connection(s)",
                s.version,
                format_duration_s(s.uptime_s),
                s.shards,
                s.connections
            );
        }
        Reply::Stats(m) => format_stats(&mut out, m),
        Reply::Queues(q) => {
            if q.top.is_empty() {
                out.push_str("no queued items\n");
            } else {
                let _ = writeln!(
                    out,
                    "{:>4}  {:<17} {:>5} {:>10}",
                    "#", "user", "shard", "queued"
                );
                for (i, e) in q.top.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{:>4}  {:<17} {:>5} {:>10}",
                        i + 1,
                        e.user,
                        e.shard,
                        e.len
                    );
                }
            }
        }
        Reply::Kick(k) => {
            if k.was_online {
                let _ = writeln!(out, "kicked {} (its device was connected)", k.user);
            } else {
                let _ = writeln!(out, "{} was not connected; nothing to kick", k.user);
            }
        }
        Reply::Drain(d) => {
            if d.already_draining {
                out.push_str("already draining\n");
            } else {
                let _ = writeln!(
                    out,
                    "draining: not accepting connections; {} client(s) still connected",
                    d.connections
                );
            }
        }
        Reply::Reload(r) => {
            if let Some(f) = &r.file {
                let _ = writeln!(out, "reloaded {f}");
            }
            if r.applied.is_empty() && r.needs_restart.is_empty() {
                out.push_str("no changes\n");
            }
            if !r.applied.is_empty() {
                let _ = writeln!(out, "applied now: {}", r.applied.join(", "));
            }
            if !r.needs_restart.is_empty() {
                let _ = writeln!(
                    out,
                    "changed, needs a restart: {}",
                    r.needs_restart.join(", ")
                );
            }
        }
    }
    out
}

fn format_stats(out: &mut String, m: &MetricsSnapshot) {
    let _ = writeln!(
        out,
        "{:>5} {:>8} {:>10} {:>8} {:>6} {:>10} {:>10} {:>10} {:>9}",
        "shard",
        "conns",
        "queued",
        "longest",
        "mesh",
        "accepted",
        "delivered",
        "rejected",
        "ack p99"
    );
    for s in &m.shards {
        let v = |k: &str| s.values.get(k).copied().unwrap_or(0);
        let p99 = s
            .histograms
            .get("send_ack_latency_seconds")
            .and_then(|h| {
                h.quantile_bound(0.99)
                    .map(|b| format!("<={}s", scaled(b, h.scale)))
            })
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:>5} {:>8} {:>10} {:>8} {:>6} {:>10} {:>10} {:>10} {:>9}",
            s.shard,
            v("connections"),
            v("offline_queue_items"),
            v("offline_queue_longest_items"),
            v("mesh_queue_depth"),
            v("messages_accepted_total"),
            v("messages_delivered_total"),
            v("frames_rejected_total"),
            p99
        );
        if !s.errors.is_empty() {
            let errs: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "      errors: {}", errs.join(" "));
        }
        if !s.alerts_firing.is_empty() {
            let _ = writeln!(out, "      ALERT firing: {}", s.alerts_firing.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(format_duration_s(5), "5s");
        assert_eq!(format_duration_s(65), "1m5s");
        assert_eq!(format_duration_s(3_725), "1h2m5s");
        assert_eq!(format_duration_s(90_061), "1d1h1m");
    }
}
