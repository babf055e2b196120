//! Kernel and process limit checks for holding many connections per box.
//!
//! [`check`] reads this machine's limits (open files, `fs.nr_open`,
//! `somaxconn`, `tcp_mem`, locked memory, memory, CPUs, ...) and says, for a
//! number of connections and shards, what falls short and the exact line
//! that fixes it. It is the library behind `tern tune check --connections N`;
//! docs/TUNING.md explains every figure.
//!
//! The work is split so it can be tested without the machine:
//! [`read_snapshot`] does all the reading into a [`Snapshot`] of raw text,
//! and [`evaluate`] parses and compares, purely.
//!
//! ```
//! use tern_tuning::{evaluate, Snapshot, Status, Target};
//!
//! let mut snap = Snapshot::default();
//! snap.nr_open = Some("1048576\n".to_owned());
//! let report = evaluate(&snap, Target { connections: 2_000_000, shards: 2 });
//! let nr_open = report.finding("fs.nr_open").unwrap();
//! assert_eq!(nr_open.status, Status::Short);
//! assert_eq!(nr_open.fixes[0].line, "fs.nr_open = 2097152");
//! ```

mod evaluate;
mod parse;
mod report;
mod sizing;
mod snapshot;
mod sys;

pub use evaluate::{evaluate, LISTEN_QUEUE_RECOMMENDED, PAGE_SIZE_BYTES_ASSUMED};
pub use report::{Finding, Fix, FixKind, Report, Scope, Status, Summary};
pub use sizing::{
    nofile_recommended, sizing_markdown, Sizing, Target, FDS_RESERVED_BASE, FDS_RESERVED_PER_SHARD,
    FILE_MAX_HEADROOM, GLOMMIO_IO_MEMORY_BYTES, HEAP_BYTES_PER_MAPPING_MIN,
    IO_URING_RINGS_PER_SHARD, KERNEL_BYTES_PER_IDLE_SOCKET, LISTEN_BACKLOG, MANY_CONNECTIONS,
    MAX_MAP_COUNT_DEFAULT, MEMLOCK_GLOMMIO_MIN_BYTES, MEMLOCK_PER_SHARD_BYTES,
    NETDEV_MAX_BACKLOG_DEFAULT, NETDEV_MAX_BACKLOG_MANY_CONNECTIONS, PORTS_PER_SOURCE_ADDRESS_MAX,
    PROCESS_BASE_BYTES, SHARD_BASE_BYTES, USER_BYTES_PER_IDLE_SESSION_TARGET,
};
pub use snapshot::{read_snapshot, Rlimit, RlimitValue, Snapshot};

/// Checks this machine's limits, as seen by the calling process, for
/// `target_connections` connections on `shards` shards.
///
/// `tern tune check --connections N [--shards S] [--json]` prints
/// [`Report::render_table`] (or [`Report::to_json`]) of this and exits
/// non-zero when [`Report::has_short`].
pub fn check(target_connections: u64, shards: u16) -> Report {
    evaluate(
        &read_snapshot(),
        Target {
            connections: target_connections,
            shards,
        },
    )
}
