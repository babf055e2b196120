//! Results and baseline files, and the verdict.
//!
//! A file is one JSON object (schema 1):
//!
//! ```json
//! {"schema":1,"valgrind":"valgrind-3.19.0","rustc":"rustc 1.95.0 (...)",
//!  "threshold_pct":3.0,
//!  "workloads":{"core_cycle":{"instructions":41234567,"iterations":1000}}}
//! ```
//!
//! `instructions` is callgrind's `Ir` collected inside the workload's
//! measured function only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Version of the file layout.
pub const SCHEMA: u32 = 1;

/// Default allowed rise of a workload's instruction count, in percent.
pub const THRESHOLD_PCT_DEFAULT: f64 = 3.0;

/// One workload's count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub instructions: u64,
    pub iterations: u64,
}

/// A results or baseline file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    /// `valgrind --version` of the run.
    pub valgrind: String,
    /// `rustc -V` of the build.
    pub rustc: String,
    pub threshold_pct: f64,
    pub workloads: BTreeMap<String, Entry>,
}

/// What happened to one workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the threshold.
    Ok,
    /// Rose more than the threshold: the gate fails.
    Regressed,
    /// Fell more than the threshold: passes; the baseline should follow.
    Improved,
    /// Not in the baseline: passes; add it with `--update`.
    New,
    /// In the baseline but not measured: the gate fails.
    Missing,
    /// Iteration counts differ: the numbers cannot be compared; the gate
    /// fails until the baseline is updated.
    Incomparable,
}

impl Verdict {
    pub fn fails(self) -> bool {
        matches!(self, Self::Regressed | Self::Missing | Self::Incomparable)
    }

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Regressed => "REGRESSED",
            Self::Improved => "improved",
            Self::New => "new",
            Self::Missing => "MISSING",
            Self::Incomparable => "ITERATIONS CHANGED",
        }
    }
}

/// One line of the comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub old: Option<u64>,
    pub new: Option<u64>,
    /// new / old.
    pub ratio: Option<f64>,
    pub verdict: Verdict,
}

#[allow(clippy::cast_precision_loss)] // Ratios of counts below 2^53 are exact enough.
fn ratio(new: u64, old: u64) -> f64 {
    if old == 0 {
        if new == 0 {
            1.0
        } else {
            f64::INFINITY
        }
    } else {
        new as f64 / old as f64
    }
}

/// Compares `results` with `baseline`: a workload fails when its count
/// rose by more than `threshold_pct` percent.
pub fn compare(baseline: &Report, results: &Report, threshold_pct: f64) -> Vec<Row> {
    let limit = 1.0 + threshold_pct / 100.0;
    let floor = 1.0 - threshold_pct / 100.0;
    let mut names: Vec<&String> = baseline
        .workloads
        .keys()
        .chain(results.workloads.keys())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let old = baseline.workloads.get(name);
            let new = results.workloads.get(name);
            let (r, verdict) = match (old, new) {
                (Some(o), Some(n)) if o.iterations != n.iterations => (None, Verdict::Incomparable),
                (Some(o), Some(n)) => {
                    let r = ratio(n.instructions, o.instructions);
                    let v = if r > limit {
                        Verdict::Regressed
                    } else if r < floor {
                        Verdict::Improved
                    } else {
                        Verdict::Ok
                    };
                    (Some(r), v)
                }
                (Some(_), None) => (None, Verdict::Missing),
                (None, _) => (None, Verdict::New),
            };
            Row {
                name: name.clone(),
                old: old.map(|e| e.instructions),
                new: new.map(|e| e.instructions),
                ratio: r,
                verdict,
            }
        })
        .collect()
}

/// True when any row fails the gate.
pub fn failed(rows: &[Row]) -> bool {
    rows.iter().any(|r| r.verdict.fails())
}

/// The comparison as a plain-text table.
pub fn table(rows: &[Row], threshold_pct: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<14} {:>15} {:>15} {:>8}  verdict (threshold +{threshold_pct}%)",
        "workload", "baseline Ir", "new Ir", "ratio"
    );
    let num = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for r in rows {
        let ratio = r
            .ratio
            .map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
        let _ = writeln!(
            s,
            "{:<14} {:>15} {:>15} {:>8}  {}",
            r.name,
            num(r.old),
            num(r.new),
            ratio,
            r.verdict.label()
        );
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a failure should stop the test.
mod tests {
    use super::*;

    fn report(entries: &[(&str, u64, u64)]) -> Report {
        Report {
            schema: SCHEMA,
            valgrind: "valgrind-3.19.0".into(),
            rustc: "rustc".into(),
            threshold_pct: 3.0,
            workloads: entries
                .iter()
                .map(|&(n, i, it)| {
                    (
                        n.to_string(),
                        Entry {
                            instructions: i,
                            iterations: it,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn threshold_is_a_rise_past_the_percentage() {
        let base = report(&[("a", 1000, 10), ("b", 1000, 10), ("c", 1000, 10)]);
        let new = report(&[("a", 1030, 10), ("b", 1031, 10), ("c", 900, 10)]);
        let rows = compare(&base, &new, 3.0);
        let v: Vec<_> = rows.iter().map(|r| r.verdict).collect();
        assert_eq!(v, [Verdict::Ok, Verdict::Regressed, Verdict::Improved]);
        assert!(failed(&rows));
        assert!(table(&rows, 3.0).contains("REGRESSED"));
    }

    #[test]
    fn missing_and_changed_iterations_fail_new_passes() {
        let base = report(&[("a", 1000, 10), ("b", 1000, 10)]);
        let new = report(&[("b", 1000, 20), ("c", 5, 1)]);
        let rows = compare(&base, &new, 3.0);
        let v: Vec<_> = rows.iter().map(|r| r.verdict).collect();
        assert_eq!(v, [Verdict::Missing, Verdict::Incomparable, Verdict::New]);
        assert!(failed(&rows));
        let only_new = compare(&report(&[]), &new, 3.0);
        assert!(!failed(&only_new));
    }

    #[test]
    fn reports_round_trip_through_json() {
        let r = report(&[("core_cycle", 41_234_567, 1000)]);
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&s).unwrap(), r);
    }
}
