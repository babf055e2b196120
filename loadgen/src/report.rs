//! The run's result: a JSON document (schema `tern-loadgen/1`, documented
//! in loadgen/README.md) and the human table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::check::CheckSummary;
use crate::hist::LatencySummary;
use crate::proto::Counters;
use crate::scenario::{Mode, Scenario, Target};

/// Schema name and version written into every report.
pub const SCHEMA: &str = "tern-loadgen/1";

/// Registration of users missing from the key cache.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provisioning {
    /// Registered in this run (RequestPin → outbox → VerifyPin).
    pub registered: u64,
    /// Keys taken from the cache.
    pub cached: u64,
    /// Users that could not be registered.
    pub failed: u64,
    /// Seconds the provisioning phase took.
    pub seconds: f64,
}

/// Connection set-up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    /// Connections asked for.
    pub target: u64,
    /// Logged in at the start of the run phase.
    pub up: u64,
    /// Given up on.
    pub failed: u64,
    /// Logins after the first (offline returns and reconnects).
    pub reconnects: u64,
    /// Seconds from the first connect to the last login.
    pub ramp_seconds: f64,
}

/// Message counts and rates. Rates are over the run phase only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Length of the run phase, seconds (mean over workers).
    pub run_seconds: f64,
    /// Messages sent in the run phase.
    pub sent: u64,
    /// ServerAcks in the run phase.
    pub acked: u64,
    /// Messages delivered to recipients in the run phase.
    pub delivered: u64,
    /// Delivered receipts in the run phase.
    pub receipts: u64,
    /// Read receipts in the run phase.
    pub reads: u64,
    /// Open loop: skipped send slots in the run phase.
    pub omitted: u64,
    /// `delivered / run_seconds`: the headline figure.
    pub messages_per_s: f64,
    /// `acked / run_seconds`.
    pub acks_per_s: f64,
    /// `receipts / run_seconds`.
    pub receipts_per_s: f64,
    /// `--mode handshake`: TLS handshakes completed in the run phase.
    #[serde(default)]
    pub handshakes: u64,
    /// `handshakes / run_seconds`.
    #[serde(default)]
    pub handshakes_per_s: f64,
}

/// Server process figures from /proc (with `--server-pid`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    /// The sampled process.
    pub pid: u32,
    /// RSS before the generator did anything, KiB.
    pub rss_start_kib: u64,
    /// RSS after provisioning, before the login connections, KiB.
    pub rss_before_connect_kib: u64,
    /// RSS with every connection logged in and idle, KiB.
    pub rss_connected_kib: u64,
    /// Highest RSS seen (sampled each second), KiB.
    pub rss_peak_kib: u64,
    /// RSS after the drain, KiB.
    pub rss_end_kib: u64,
    /// `(rss_connected - rss_before_connect) / connections up`, bytes.
    pub rss_per_connection_bytes: f64,
    /// Server CPU time during the run phase, seconds.
    pub cpu_run_s: f64,
    /// Server CPU during the run phase / messages delivered in it, µs.
    pub cpu_us_per_message: f64,
    /// Server CPU during the run phase / run seconds (1.0 = one core).
    pub cpu_cores_busy: f64,
    /// `--mode handshake`: server CPU during the run phase / handshakes
    /// completed in it, µs.
    #[serde(default)]
    pub cpu_us_per_handshake: f64,
    /// Server CPU time over the whole load run, seconds.
    pub cpu_total_s: f64,
}

/// The generator's own cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadgenStats {
    /// CPU time of all workers, seconds.
    pub cpu_s: f64,
    /// That CPU time per delivered message (whole run), µs.
    pub cpu_us_per_message: f64,
    /// `--mode handshake`: that CPU time per handshake (whole run), µs.
    #[serde(default)]
    pub cpu_us_per_handshake: f64,
}

/// One second of progress, summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the generator started.
    pub t_s: f64,
    /// Phase name: provision, connect, run, drain.
    pub phase: String,
    /// Connections logged in.
    pub conns_up: u64,
    /// Rates over the last interval.
    pub sent_per_s: f64,
    /// See `sent_per_s`.
    pub acked_per_s: f64,
    /// See `sent_per_s`.
    pub delivered_per_s: f64,
    /// See `sent_per_s`.
    pub receipts_per_s: f64,
    /// Errors so far.
    pub errors: u64,
    /// Server RSS, KiB (with `--server-pid`).
    pub server_rss_kib: Option<u64>,
}

/// Pairs whose users live on different server shards.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CrossShard {
    /// The server's shard count (`--server-shards`).
    pub shards: u16,
    /// Pairs crossing shards.
    pub cross: u32,
    /// All pairs.
    pub pairs: u32,
}

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// True when the loss/order check passed.
    pub ok: bool,
    /// The scenario that ran.
    pub scenario: Scenario,
    /// Wall clock at start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// Worker processes.
    pub procs: u32,
    /// Source addresses used.
    pub source_ips: usize,
    /// Cross-shard pairs (with `--server-shards`).
    pub cross_shard: Option<CrossShard>,
    /// Registration.
    pub provisioning: Provisioning,
    /// Connection set-up.
    pub connections: Connections,
    /// Phase lengths, seconds: provision, connect, run, drain.
    pub phases_s: BTreeMap<String, f64>,
    /// Every outstanding message completed before the drain timeout.
    pub drained: bool,
    /// Counts and rates of the run phase.
    pub throughput: Throughput,
    /// Counters over the whole run (drain included).
    pub totals: Counters,
    /// Latency percentiles by name (connect, login, ack, deliver, receipt,
    /// read; handshake and pair in raw runs), microseconds.
    pub latency_us: BTreeMap<String, LatencySummary>,
    /// Errors by name.
    pub errors: BTreeMap<String, u64>,
    /// The loss/order check.
    pub check: CheckSummary,
    /// Server figures (with `--server-pid`).
    pub server: Option<ServerStats>,
    /// The generator's own cost.
    pub loadgen: LoadgenStats,
    /// One entry per second.
    pub timeline: Vec<Second>,
    /// Notable problems, for people.
    pub notes: Vec<String>,
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(x: f64) -> String {
    thousands(crate::num::f64_to_u64(x.round()))
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let s = &self.scenario;
        let mut o = String::new();
        let mode = match s.mode {
            Mode::Closed => format!(
                "closed loop, {} outstanding per sender (until {:?})",
                s.outstanding, s.window_until
            ),
            Mode::Open => format!(
                "open loop, {} msgs/s (cap {} in flight per sender)",
                rate(s.rate_per_s),
                s.outstanding
            ),
            Mode::Idle => "idle (no messages)".to_owned(),
            Mode::Handshake => "TLS handshakes (connect, handshake, close)".to_owned(),
        };
        let _ = writeln!(
            o,
            "tern-loadgen: {} connections ({} procs, {} source IPs), {:?} pairs, {mode}, \
             {} B bodies, {} s, {}{}{}{}",
            thousands(s.connections.into()),
            self.procs,
            self.source_ips,
            s.pairing,
            s.body_bytes,
            s.duration_s,
            if s.tls() { "TLS" } else { "PLAINTEXT" },
            match (s.target, s.server_ports) {
                (Target::Tern, 1) => String::new(),
                (t, 1) => format!(", target {t:?}"),
                (t, n) => format!(", target {t:?} on {n} ports"),
            },
            if s.read_receipts {
                ", read receipts"
            } else {
                ""
            },
            if s.offline_fraction > 0.0 {
                format!(
                    ", {}% of recipients offline {} s",
                    s.offline_fraction * 100.0,
                    s.offline_s
                )
            } else {
                String::new()
            }
        );
        if let Some(c) = &self.cross_shard {
            let _ = writeln!(
                o,
                "pairs          {} of {} cross shards ({} shards)",
                c.cross, c.pairs, c.shards
            );
        }
        let p = &self.provisioning;
        let _ = writeln!(
            o,
            "provisioning   registered {}, cached {}, failed {} ({:.1} s)",
            thousands(p.registered),
            thousands(p.cached),
            p.failed,
            p.seconds
        );
        let c = &self.connections;
        let _ = writeln!(
            o,
            "connections    up {}, failed {}, reconnects {} (ramp {:.1} s)",
            thousands(c.up),
            c.failed,
            c.reconnects,
            c.ramp_seconds
        );
        let t = &self.throughput;
        if s.mode == Mode::Handshake {
            let _ = writeln!(
                o,
                "handshakes     {} /s over {:.1} s ({} completed, {} concurrent)",
                rate(t.handshakes_per_s),
                t.run_seconds,
                thousands(t.handshakes),
                thousands(s.connections.into())
            );
        } else {
            let _ = writeln!(
                o,
                "throughput     {} msgs/s delivered, {} acks/s, {} receipts/s over {:.1} s \
             (sent {}, delivered {}{})",
                rate(t.messages_per_s),
                rate(t.acks_per_s),
                rate(t.receipts_per_s),
                t.run_seconds,
                thousands(t.sent),
                thousands(t.delivered),
                if t.omitted > 0 {
                    format!(", omitted slots {}", thousands(t.omitted))
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(
            o,
            "latency (µs)   {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for name in [
            "connect",
            "handshake",
            "login",
            "pair",
            "ack",
            "deliver",
            "receipt",
            "read",
        ] {
            if let Some(l) = self.latency_us.get(name).filter(|l| l.count > 0) {
                let _ = writeln!(
                    o,
                    "  {name:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    l.count, l.p50, l.p90, l.p99, l.p999, l.max
                );
            }
        }
        if self.errors.is_empty() {
            let _ = writeln!(o, "errors         none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {}", thousands(*v)))
                .collect();
            let _ = writeln!(o, "errors         {}", list.join(", "));
        }
        if let Some(sv) = &self.server {
            let _ = writeln!(
                o,
                "server         rss {} -> {} KiB with {} conns up: {:.0} B/connection; \
                 peak {} KiB",
                thousands(sv.rss_before_connect_kib),
                thousands(sv.rss_connected_kib),
                thousands(c.up),
                sv.rss_per_connection_bytes,
                thousands(sv.rss_peak_kib)
            );
            if s.mode == Mode::Handshake {
                let _ = writeln!(
                    o,
                    "server cpu     {:.2} s in the run ({:.2} cores): {:.2} µs per handshake",
                    sv.cpu_run_s, sv.cpu_cores_busy, sv.cpu_us_per_handshake
                );
            } else {
                let _ = writeln!(
                    o,
                    "server cpu     {:.2} s in the run ({:.2} cores): {:.2} µs per delivered \
                     message",
                    sv.cpu_run_s, sv.cpu_cores_busy, sv.cpu_us_per_message
                );
            }
        }
        if s.mode == Mode::Handshake {
            let _ = writeln!(
                o,
                "loadgen cpu    {:.2} s ({:.2} µs per handshake)",
                self.loadgen.cpu_s, self.loadgen.cpu_us_per_handshake
            );
        } else {
            let _ = writeln!(
                o,
                "loadgen cpu    {:.2} s ({:.2} µs per delivered message)",
                self.loadgen.cpu_s, self.loadgen.cpu_us_per_message
            );
        }
        let k = &self.check;
        let _ = writeln!(
            o,
            "check          {}: {} flows, {} acked, {} delivered, {} lost, {} duplicated, \
             {} misordered, {} receipts missing{}{}",
            if self.ok { "OK" } else { "FAILED" },
            thousands(k.flows),
            thousands(k.acked),
            thousands(k.delivered),
            k.lost,
            k.duplicated,
            k.misordered,
            k.receipts_missing,
            if s.read_receipts {
                format!(", {} reads missing", k.reads_missing)
            } else {
                String::new()
            },
            if k.reordered_after_retry > 0 {
                format!(
                    " ({} reordered by retries after transient errors)",
                    k.reordered_after_retry
                )
            } else {
                String::new()
            }
        );
        for e in &k.examples {
            let _ = writeln!(o, "  - {e}");
        }
        if !self.drained {
            let _ = writeln!(o, "drain          timed out: work was still outstanding");
        }
        for n in &self.notes {
            let _ = writeln!(o, "note           {n}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rate(12_345.6), "12,346");
    }

    #[test]
    fn table_names_the_verdict_and_failures() {
        let mut r = Report {
            schema: SCHEMA.to_owned(),
            ok: true,
            scenario: Scenario::default(),
            started_unix_ms: 0,
            procs: 1,
            source_ips: 1,
            cross_shard: None,
            provisioning: Provisioning::default(),
            connections: Connections::default(),
            phases_s: BTreeMap::new(),
            drained: true,
            throughput: Throughput::default(),
            totals: Counters::default(),
            latency_us: BTreeMap::new(),
            errors: BTreeMap::new(),
            check: CheckSummary::default(),
            server: None,
            loadgen: LoadgenStats::default(),
            timeline: Vec::new(),
            notes: Vec::new(),
        };
        assert!(r.table().contains("check          OK"));
        r.ok = false;
        r.check.lost = 3;
        r.check.examples.push("a -> b: 3 lost".to_owned());
        r.errors.insert("QueueFull".to_owned(), 2);
        let t = r.table();
        assert!(t.contains("FAILED"), "{t}");
        assert!(t.contains("3 lost"));
        assert!(t.contains("QueueFull 2"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["check"]["lost"], 3);
    }
}
