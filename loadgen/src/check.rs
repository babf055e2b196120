//! The end-of-run check: every message the server acknowledged reached its
//! recipient's application exactly once (after the SDK's dedup), and in
//! order per sender → recipient flow.
//!
//! Each flow has one [`SenderLog`] (acknowledged `client_msg_id`s) and one
//! [`RecipientLog`] (the `client_msg_id`s the application saw, in arrival
//! order). The SDK hands out `client_msg_id`s in increasing order per
//! session, so "in order" means increasing ids. One inversion is not the
//! server's doing: a message refused with a transient error (`QueueFull`,
//! ...) stays pending in the SDK and is sent again later, after messages
//! that were sent behind it. Such messages are listed in
//! [`SenderLog::retried`]; an inversion caused by one of them is counted as
//! `reordered_after_retry`, any other as `misordered`. Independently the
//! server's own order is checked: inbox ids (`Deliver.id`) of one flow must
//! increase.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// Failure descriptions kept per summary, for the report.
pub const EXAMPLES_MAX: usize = 10;

/// The sending side of one flow.
#[derive(Clone, Debug, Default)]
pub struct SenderLog {
    /// `client_msg_id`s the server acknowledged (`ServerAck`), this run.
    pub acked: Vec<u64>,
    /// Messages put on the wire again after a transient error or a
    /// reconnect (may arrive after later messages).
    pub retried: HashSet<u64>,
}

/// The receiving side of one flow, fed as messages arrive.
#[derive(Clone, Debug, Default)]
pub struct RecipientLog {
    /// `client_msg_id`s in arrival order, as the application saw them.
    pub delivered: Vec<u64>,
    last_server_id: Option<u64>,
    /// Arrivals whose inbox id was not above the previous one.
    pub server_order_violations: u64,
}

impl RecipientLog {
    /// Records one message the application saw.
    pub fn on_deliver(&mut self, server_id: u64, client_msg_id: u64) {
        if let Some(last) = self.last_server_id {
            if server_id <= last {
                self.server_order_violations += 1;
            }
        }
        self.last_server_id = Some(self.last_server_id.map_or(server_id, |l| l.max(server_id)));
        self.delivered.push(client_msg_id);
    }
}

/// Check results, summed over flows (and workers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// Sender → recipient flows checked.
    pub flows: u64,
    /// Messages the server acknowledged.
    pub acked: u64,
    /// Acknowledged messages that reached the recipient's application.
    pub delivered: u64,
    /// Acknowledged but never delivered.
    pub lost: u64,
    /// Delivered to the application more than once.
    pub duplicated: u64,
    /// Arrived after a later message of the same flow with no retry to
    /// explain it, or with an inbox id not above the previous one.
    pub misordered: u64,
    /// Arrived after later messages because the sender retried it after a
    /// transient error (expected, not a failure).
    pub reordered_after_retry: u64,
    /// Delivered, but the sender never saw the `ServerAck` (not a failure:
    /// e.g. the ack was in flight when the run ended).
    pub delivered_unacked: u64,
    /// Acknowledged messages whose `delivered` receipt never came.
    pub receipts_missing: u64,
    /// With read receipts on: acknowledged messages whose `read` receipt
    /// never came.
    pub reads_missing: u64,
    /// Up to [`EXAMPLES_MAX`] descriptions of failures.
    pub examples: Vec<String>,
}

impl CheckSummary {
    /// True when nothing was lost, duplicated, misordered or unreceipted.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.misordered == 0
            && self.receipts_missing == 0
            && self.reads_missing == 0
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Self) {
        self.flows += other.flows;
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.misordered += other.misordered;
        self.reordered_after_retry += other.reordered_after_retry;
        self.delivered_unacked += other.delivered_unacked;
        self.receipts_missing += other.receipts_missing;
        self.reads_missing += other.reads_missing;
        for e in &other.examples {
            self.example(e.clone());
        }
    }

    /// Keeps a failure description (up to [`EXAMPLES_MAX`]).
    pub fn example(&mut self, text: String) {
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(text);
        }
    }
}

/// Checks one flow; `name` labels failure examples (e.g. "+1555 -> +1556").
pub fn check_flow(name: &str, sender: &SenderLog, recipient: &RecipientLog) -> CheckSummary {
    let mut out = CheckSummary {
        flows: 1,
        acked: sender.acked.len() as u64,
        ..CheckSummary::default()
    };
    let acked: HashSet<u64> = sender.acked.iter().copied().collect();
    let mut seen: HashSet<u64> = HashSet::with_capacity(recipient.delivered.len());
    let mut max_so_far: Option<u64> = None;
    for &id in &recipient.delivered {
        if !seen.insert(id) {
            out.duplicated += 1;
            out.example(format!("{name}: message {id} delivered twice"));
            continue;
        }
        if let Some(max) = max_so_far {
            if id < max {
                if sender.retried.contains(&id) {
                    out.reordered_after_retry += 1;
                } else {
                    out.misordered += 1;
                    out.example(format!("{name}: message {id} arrived after {max}"));
                }
            }
        }
        max_so_far = Some(max_so_far.map_or(id, |m| m.max(id)));
        if acked.contains(&id) {
            out.delivered += 1;
        } else {
            out.delivered_unacked += 1;
        }
    }
    if recipient.server_order_violations > 0 {
        out.misordered += recipient.server_order_violations;
        out.example(format!(
            "{name}: {} inbox ids not above the previous one",
            recipient.server_order_violations
        ));
    }
    let mut lost: Vec<u64> = acked.difference(&seen).copied().collect();
    lost.sort_unstable();
    out.lost = lost.len() as u64;
    if let Some(first) = lost.first() {
        out.example(format!(
            "{name}: {} acknowledged message(s) never delivered, first {first}",
            lost.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(acked: &[u64], retried: &[u64]) -> SenderLog {
        SenderLog {
            acked: acked.to_vec(),
            retried: retried.iter().copied().collect(),
        }
    }

    fn recipient(arrivals: &[(u64, u64)]) -> RecipientLog {
        let mut r = RecipientLog::default();
        for &(server_id, cmid) in arrivals {
            r.on_deliver(server_id, cmid);
        }
        r
    }

    #[test]
    fn clean_flow_passes() {
        let s = sender(&[10, 11, 12], &[]);
        let r = recipient(&[(100, 10), (101, 11), (105, 12)]);
        let c = check_flow("a->b", &s, &r);
        assert_eq!(c.acked, 3);
        assert_eq!(c.delivered, 3);
        assert_eq!((c.lost, c.duplicated, c.misordered), (0, 0, 0));
        assert!(c.ok());
        assert!(c.examples.is_empty());
    }

    #[test]
    fn loss_is_found_and_named() {
        let s = sender(&[10, 11, 12, 13], &[]);
        let r = recipient(&[(1, 10), (2, 12)]);
        let c = check_flow("a->b", &s, &r);
        assert_eq!(c.lost, 2);
        assert_eq!(c.delivered, 2);
        assert!(!c.ok());
        assert!(c.examples[0].contains("first 11"), "{:?}", c.examples);
    }

    #[test]
    fn duplicates_are_counted_once_each_and_not_as_misorder() {
        let s = sender(&[10, 11], &[]);
        let r = recipient(&[(1, 10), (2, 11), (3, 10)]);
        let c = check_flow("a->b", &s, &r);
        assert_eq!(c.duplicated, 1);
        assert_eq!(c.misordered, 0);
        assert_eq!(c.delivered, 2);
        assert!(!c.ok());
    }

    #[test]
    fn inversions_are_misorder_unless_a_retry_explains_them() {
        let s = sender(&[10, 11, 12], &[]);
        let r = recipient(&[(1, 10), (2, 12), (3, 11)]);
        let c = check_flow("a->b", &s, &r);
        assert_eq!(c.misordered, 1);
        assert!(c.examples[0].contains("11 arrived after 12"));
        let s = sender(&[10, 11, 12], &[11]);
        let c = check_flow("a->b", &s, &r);
        assert_eq!(c.misordered, 0);
        assert_eq!(c.reordered_after_retry, 1);
        assert!(c.ok());
    }

    #[test]
    fn server_inbox_order_is_checked_too() {
        let s = sender(&[10, 11], &[]);
        let r = recipient(&[(5, 10), (4, 11)]);
        assert_eq!(r.server_order_violations, 1);
        let c = check_flow("a->b", &s, &r);
        assert_eq!(c.misordered, 1);
        assert!(!c.ok());
    }

    #[test]
    fn unacked_deliveries_are_reported_but_not_failures() {
        let s = sender(&[10], &[]);
        let r = recipient(&[(1, 10), (2, 11)]);
        let c = check_flow("a->b", &s, &r);
        assert_eq!(c.delivered_unacked, 1);
        assert!(c.ok());
    }

    #[test]
    fn summaries_add_up_and_keep_few_examples() {
        let mut total = CheckSummary::default();
        for i in 0..20u64 {
            let s = sender(&[1, 2], &[]);
            let r = recipient(&[(1, 1)]);
            total.add(&check_flow(&format!("f{i}"), &s, &r));
        }
        assert_eq!(total.flows, 20);
        assert_eq!(total.acked, 40);
        assert_eq!(total.lost, 20);
        assert_eq!(total.examples.len(), EXAMPLES_MAX);
        let m = CheckSummary {
            receipts_missing: 1,
            ..CheckSummary::default()
        };
        assert!(!m.ok());
    }
}
