//! Tern's measurement code: the pieces shared by the criterion benches
//! (`benches/`), the scale simulation (`src/bin/scale_sim.rs`) and the
//! instruction-count regression gate (`src/bin/gate_workload.rs`,
//! `gate/run.sh`). See benches/README.md for the commands and figures.
//!
//! - [`harness`]: several sans-IO `Shard`s and fake clients driven in
//!   memory (durable mode, every append reported durable at once), with a
//!   full 1:1 message cycle.
//! - [`gate`]: the gate's fixed workloads and its baseline comparison.
//! - [`rss`]: resident memory from `/proc/self/status`.

pub mod gate;
pub mod harness;
pub mod rss;

/// A realistic short chat text: exactly 100 bytes of ASCII.
pub const TEXT_100B: &str = "hello there, this is a typical short chat message of 100 bytes or so, give or take a couple of chars";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_100_bytes() {
        assert_eq!(TEXT_100B.len(), 100);
    }
}
