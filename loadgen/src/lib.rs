//! `tern-loadgen`: the bundled load generator for Tern.
//!
//! It speaks the real protocol through the client SDK's sans-IO
//! `ClientSession`, over rustls and non-blocking sockets driven by mio: one
//! thread per worker drives thousands of connections. More connections than
//! one process may open are spread over worker processes (`--procs`), each
//! binding its sockets to its own 127.x.y.z source addresses. Users are
//! registered through the real SMS-PIN path (PINs read from the server's
//! outbox file) and their keys cached for later runs. At the end every
//! acknowledged message is checked to have reached its recipient exactly
//! once and in order.
//!
//! Module map:
//! - [`scenario`]: flags + TOML → [`Scenario`], validated.
//! - [`pairing`]: users, pairs, workers, source addresses, offline plan.
//! - [`worker`]: the per-worker event loop (sessions, sockets, timers).
//! - [`raw`]: the worker without sessions: `--target ceiling` (the raw
//!   forwarding ceiling) and `--mode handshake` (TLS handshakes/s).
//! - [`conn`](crate::conn) (private): one socket + TLS connection.
//! - [`check`]: the exactly-once, in-order check.
//! - [`hist`]: latency histograms that merge across processes.
//! - [`run`]: the parent: workers, phases, server sampling, aggregation.
//! - [`report`]: the JSON report and the human table.
//! - [`outbox`], [`keys`], [`sys`], [`body`], [`addr`], [`proto`]: helpers.

pub mod addr;
pub mod body;
pub mod check;
mod conn;
pub mod error;
pub mod hist;
pub mod keys;
pub mod num;
pub mod outbox;
pub mod pairing;
pub mod proto;
pub mod raw;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sys;
pub mod worker;

pub use error::LoadgenError;
pub use report::Report;
pub use run::{run, worker_main, RunOptions};
pub use scenario::{Cli, Mode, Pairing, Scenario, Target, TrustChoice, WindowUntil};
