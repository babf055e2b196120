//! The regression gate: fixed workloads whose instruction counts
//! (valgrind callgrind) are compared with a committed baseline.
//!
//! [`workloads`] builds and runs each workload; the gate_workload binary
//! runs one under valgrind, and `gate/run.sh` hands the counts to
//! [`compare`]. See benches/gate/README.md for why instruction counts and
//! how to move the baseline on purpose.

pub mod compare;
pub mod workloads;
