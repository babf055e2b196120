//! The result of a check: one [`Finding`] per limit, rendered as a table for
//! people ([`Report::render_table`], also `Display`) or JSON for tools
//! ([`Report::to_json`]).

use std::fmt;

use serde::Serialize;

use crate::parse::grouped;
use crate::sizing::{Sizing, Target, USER_BYTES_PER_IDLE_SESSION_TARGET};

/// How a limit compares with what the target needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Enough for the target.
    Ok,
    /// Below what the target needs: apply the fix.
    Short,
    /// Could not be read or parsed; check by hand.
    Unknown,
}

/// Which machine a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The machine running `tern serve`.
    Server,
    /// A machine opening the client connections (the load generator). The
    /// server itself only accepts, so these never make the server short.
    LoadGenerator,
}

/// Where a fix line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FixKind {
    /// A line for `/etc/sysctl.d/90-tern.conf`, applied with `sysctl --system`.
    Sysctl,
    /// A line for the `[Service]` section of `tern.service`.
    SystemdUnit,
    /// A line for `/etc/security/limits.d/tern.conf` (login sessions).
    LimitsConf,
    /// A command for the shell that starts `tern` (not persistent).
    Shell,
    /// A `tern serve` flag.
    TernServe,
    /// Something to do by hand, described in the line.
    Manual,
}

impl FixKind {
    /// Where the line goes, for people.
    pub fn place(self) -> &'static str {
        match self {
            Self::Sysctl => "/etc/sysctl.d/90-tern.conf, then `sysctl --system`",
            Self::SystemdUnit => "tern.service [Service]",
            Self::LimitsConf => "/etc/security/limits.d/tern.conf",
            Self::Shell => "shell starting tern",
            Self::TernServe => "tern serve flag",
            Self::Manual => "by hand",
        }
    }
}

/// One exact change that fixes a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// Where it goes.
    pub kind: FixKind,
    /// The line itself, ready to paste (`fs.nr_open = 2097152`,
    /// `LimitNOFILE=1048576`, `ulimit -n 1048576`).
    pub line: String,
}

impl Fix {
    pub(crate) fn new(kind: FixKind, line: impl Into<String>) -> Self {
        Self {
            kind,
            line: line.into(),
        }
    }
}

/// One limit, what it is, what the target needs, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The limit: a sysctl name (`net.core.somaxconn`), a process limit
    /// (`RLIMIT_NOFILE (soft)`), `memory` or `cpus`. Stable: tools may match
    /// on it.
    pub name: &'static str,
    /// Which machine it is about.
    pub scope: Scope,
    /// Ok, short or unknown.
    pub status: Status,
    /// The value now, as read (or why it could not be read).
    pub current: String,
    /// What the target needs.
    pub required: String,
    /// Why the target needs it, in one sentence.
    pub why: String,
    /// Exact changes, most usual first. Empty when the status is ok.
    pub fixes: Vec<Fix>,
}

/// Counts of findings by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Server findings that are ok.
    pub ok: usize,
    /// Server findings that are short.
    pub short: usize,
    /// Server findings that could not be read.
    pub unknown: usize,
    /// Load-generator findings that are short.
    pub load_generator_short: usize,
}

/// The result of [`crate::check`] or [`crate::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// What was checked for.
    pub target: Target,
    /// What the target costs, from the measured per-connection figures.
    pub sizing: Sizing,
    /// One per limit, server findings first.
    pub findings: Vec<Finding>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    target: &'a Target,
    summary: Summary,
    sizing: &'a Sizing,
    findings: &'a [Finding],
}

impl Report {
    /// The finding called `name`.
    pub fn finding(&self, name: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.name == name)
    }

    /// Counts by status.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for f in &self.findings {
            match (f.scope, f.status) {
                (Scope::Server, Status::Ok) => s.ok += 1,
                (Scope::Server, Status::Short) => s.short += 1,
                (Scope::Server, Status::Unknown) => s.unknown += 1,
                (Scope::LoadGenerator, Status::Short) => s.load_generator_short += 1,
                (Scope::LoadGenerator, _) => {}
            }
        }
        s
    }

    /// True when some server limit is short for the target (the
    /// `tern tune check` exit status should then be non-zero).
    pub fn has_short(&self) -> bool {
        self.summary().short > 0
    }

    /// Every distinct fix line of `kind` from server findings that are not
    /// ok, in finding order: e.g. all `Sysctl` lines make a sysctl.d file.
    pub fn fix_lines(&self, kind: FixKind) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for f in &self.findings {
            if f.scope != Scope::Server || f.status == Status::Ok {
                continue;
            }
            for fix in f.fixes.iter().filter(|x| x.kind == kind) {
                if !out.contains(&fix.line) {
                    out.push(fix.line.clone());
                }
            }
        }
        out
    }

    /// The report as pretty JSON: `target`, `summary`, `sizing` and
    /// `findings` (each with `name`, `scope`, `status`, `current`,
    /// `required`, `why`, `fixes[{kind, line}]`).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(&JsonReport {
            target: &self.target,
            summary: self.summary(),
            sizing: &self.sizing,
            findings: &self.findings,
        })
    }

    /// The report as a table for a terminal: one row per finding, then for
    /// each finding that is not ok the reason and the fix lines.
    pub fn render_table(&self) -> String {
        let name_w = self
            .findings
            .iter()
            .map(|f| f.name.chars().count())
            .max()
            .unwrap_or(0)
            .max("SETTING".len());
        let cur_w = self
            .findings
            .iter()
            .map(|f| f.current.chars().count())
            .max()
            .unwrap_or(0)
            .max("CURRENT".len());
        let mut out = format!(
            "Tern tuning check: {} connections on {} shard{}\n",
            grouped(self.target.connections),
            self.target.shards,
            if self.target.shards == 1 { "" } else { "s" }
        );
        for (scope, title) in [
            (Scope::Server, "Server"),
            (
                Scope::LoadGenerator,
                "Load generator hosts (not needed on the server)",
            ),
        ] {
            let rows: Vec<&Finding> = self.findings.iter().filter(|f| f.scope == scope).collect();
            if rows.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "\n{title}\n{:<8} {:<name_w$}  {:<cur_w$}  REQUIRED\n",
                "STATUS", "SETTING", "CURRENT"
            ));
            for f in rows {
                let status = match f.status {
                    Status::Ok => "ok",
                    Status::Short => "SHORT",
                    Status::Unknown => "unknown",
                };
                out.push_str(&format!(
                    "{status:<8} {:<name_w$}  {:<cur_w$}  {}\n",
                    f.name, f.current, f.required
                ));
                if f.status != Status::Ok {
                    out.push_str(&format!("         why: {}\n", f.why));
                    for fix in &f.fixes {
                        out.push_str(&format!(
                            "         fix ({}): {}\n",
                            fix.kind.place(),
                            fix.line
                        ));
                    }
                }
            }
        }
        let s = self.summary();
        out.push_str(&format!(
            "\nServer: {} short, {} unknown, {} ok. Load generator: {} short.\n",
            s.short, s.unknown, s.ok, s.load_generator_short
        ));
        out.push_str(&format!(
            "Process limits are those of this process: run the check under the server's \
             limits.\nMemory uses the {} B per idle session TARGET until the load generator \
             measures it (docs/TUNING.md).\n",
            grouped(USER_BYTES_PER_IDLE_SESSION_TARGET)
        ));
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_table())
    }
}
