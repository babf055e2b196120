//! What the parent and its workers say to each other. A worker process
//! reads one [`WorkerConfig`] JSON line on stdin, then [`Command`] lines;
//! it writes [`WorkerMsg`] JSON lines on stdout. A worker in a thread (one
//! process runs) exchanges the same values over channels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::CheckSummary;
use crate::keys::KeyEntry;
use crate::pairing::WorkerPlan;
use crate::scenario::Scenario;

/// Everything a worker needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// The whole run's scenario.
    pub scenario: Scenario,
    /// This worker's users and source addresses.
    pub plan: WorkerPlan,
    /// Cached device keys of this worker's users.
    pub keys: Vec<KeyEntry>,
    /// Random per run; written into every body.
    pub run_nonce: u32,
    /// First `client_msg_id` of every session (the clock in µs): above
    /// any id an earlier run used.
    pub first_client_msg_id: u64,
}

/// Parent → worker, after the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Registration is done everywhere: connect and log in.
    Connect,
    /// Every worker is connected: start the measured run phase.
    Run,
    /// Give up now and report.
    Abort,
}

/// Cumulative counters of one worker (summed over workers by the parent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Connections logged in right now.
    pub conns_up: u64,
    /// Users given up on (could not register or connect).
    pub conns_failed: u64,
    /// Logins after the first one (offline returns and reconnects).
    pub reconnects: u64,
    /// Messages handed to the SDK.
    pub sent: u64,
    /// `ServerAck`s of messages.
    pub acked: u64,
    /// Messages the recipients' applications saw (this run's, deduped).
    pub delivered: u64,
    /// `delivered` receipts received.
    pub receipts: u64,
    /// `read` receipts received.
    pub reads: u64,
    /// Open loop: send slots skipped (sender at its in-flight cap, or the
    /// generator behind schedule).
    pub omitted: u64,
    /// Errors of any kind (see the per-code table).
    pub errors: u64,
    /// Messages and receipts from an earlier run, ignored.
    pub stale: u64,
    /// `--mode handshake`: TLS handshakes completed.
    #[serde(default)]
    pub handshakes: u64,
}

impl Counters {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Self) {
        self.conns_up += o.conns_up;
        self.conns_failed += o.conns_failed;
        self.reconnects += o.reconnects;
        self.sent += o.sent;
        self.acked += o.acked;
        self.delivered += o.delivered;
        self.receipts += o.receipts;
        self.reads += o.reads;
        self.omitted += o.omitted;
        self.errors += o.errors;
        self.stale += o.stale;
        self.handshakes += o.handshakes;
    }

    /// `self - earlier`, field by field (saturating; `conns_up` is kept).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            conns_up: self.conns_up,
            conns_failed: self.conns_failed.saturating_sub(earlier.conns_failed),
            reconnects: self.reconnects.saturating_sub(earlier.reconnects),
            sent: self.sent.saturating_sub(earlier.sent),
            acked: self.acked.saturating_sub(earlier.acked),
            delivered: self.delivered.saturating_sub(earlier.delivered),
            receipts: self.receipts.saturating_sub(earlier.receipts),
            reads: self.reads.saturating_sub(earlier.reads),
            omitted: self.omitted.saturating_sub(earlier.omitted),
            errors: self.errors.saturating_sub(earlier.errors),
            stale: self.stale.saturating_sub(earlier.stale),
            handshakes: self.handshakes.saturating_sub(earlier.handshakes),
        }
    }
}

/// A worker's final report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Counters at the end.
    pub total: Counters,
    /// Counters of the run phase alone (start of run to start of drain).
    pub run: Counters,
    /// Length of the run phase, seconds.
    pub run_s: f64,
    /// Length of the drain, seconds.
    pub drain_s: f64,
    /// True when everything outstanding completed before the drain timeout.
    pub drained: bool,
    /// Errors by name: server codes (`QueueFull`) or local ones
    /// (`local:...`).
    pub errors: BTreeMap<String, u64>,
    /// Latency histograms by name, HdrHistogram V2 + base64.
    pub hists: BTreeMap<String, String>,
    /// The loss/order check of this worker's flows.
    pub check: CheckSummary,
    /// Keys registered in this run (for the cache).
    pub new_keys: Vec<KeyEntry>,
    /// Flows that sent in the run phase.
    pub active_flows: u64,
    /// The worker's own CPU time over the whole run, microseconds.
    pub cpu_us: u64,
    /// First few notable problems, for people.
    pub notes: Vec<String>,
}

/// Worker → parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// Registration finished (every user has a key or was given up on).
    Provisioned {
        /// Users registered now.
        registered: u64,
        /// Users whose key came from the cache.
        cached: u64,
        /// Users that could not be registered.
        failed: u64,
    },
    /// Every user is logged in or was given up on.
    Connected {
        /// Logged in.
        up: u64,
        /// Given up on.
        failed: u64,
    },
    /// Once a second.
    Progress {
        /// Cumulative counters.
        counters: Counters,
    },
    /// The final report; the worker exits after it.
    Done {
        /// The report.
        result: Box<WorkerResult>,
    },
    /// The worker cannot go on.
    Fatal {
        /// Why.
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json_lines() {
        let msgs = vec![
            WorkerMsg::Provisioned {
                registered: 3,
                cached: 4,
                failed: 0,
            },
            WorkerMsg::Progress {
                counters: Counters {
                    sent: 9,
                    ..Counters::default()
                },
            },
            WorkerMsg::Done {
                result: Box::default(),
            },
        ];
        for m in msgs {
            let line = serde_json::to_string(&m).unwrap();
            assert!(!line.contains('\n'));
            let back: WorkerMsg = serde_json::from_str(&line).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), line);
        }
        let c: Command = serde_json::from_str("{\"cmd\":\"run\"}").unwrap();
        assert_eq!(c, Command::Run);
    }

    #[test]
    fn counters_add_and_subtract() {
        let a = Counters {
            sent: 10,
            delivered: 7,
            conns_up: 4,
            ..Counters::default()
        };
        let mut b = a;
        b.add(&a);
        assert_eq!(b.sent, 20);
        assert_eq!(b.conns_up, 8);
        let d = b.since(&a);
        assert_eq!(d.sent, 10);
        assert_eq!(d.delivered, 7);
        assert_eq!(d.conns_up, 8, "a gauge, not a count");
    }
}
