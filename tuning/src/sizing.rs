//! What N connections cost, from measured per-connection figures. Every
//! requirement the check compares against is computed here, so the check,
//! docs/TUNING.md (see [`sizing_markdown`]) and the shipped files agree.

use serde::Serialize;

use crate::parse::{grouped, human_bytes};

/// Kernel memory per idle TCP socket, measured on the development machine
/// (docs/TUNING.md, shared NOTES): slab objects TCP 2,368 B + sock_inode
/// 832 B + filp 192 B + dentry 192 B = 3,584 B, plus small per-socket
/// extras: ~3.6 KiB. Idle means no data queued; queued data is extra and
/// is what `tcp_mem` bounds.
pub const KERNEL_BYTES_PER_IDLE_SOCKET: u64 = 3_686;

/// User-space memory per idle TLS session: the TARGET (2 KiB), not a
/// measurement. The load generator measures the real figure (memory per
/// idle TLS session, docs/BENCHMARKS.md); replace this constant with it.
/// For scale: a default rustls `ServerConnection` after a TLS 1.3 handshake
/// is ~6.3 KiB and a glommio task holding a socket ~850 B (shared NOTES),
/// so meeting 2 KiB takes rustls's unbuffered API.
pub const USER_BYTES_PER_IDLE_SESSION_TARGET: u64 = 2_048;

/// Process memory that does not grow with connections: binary, allocator,
/// logs, admin and metrics endpoints. An allowance until measured.
pub const PROCESS_BASE_BYTES: u64 = 64 << 20;

/// Per-shard memory that does not grow with connections: glommio's 10 MiB
/// I/O buffer area, three io_uring rings, the 64 KiB shared read buffer,
/// mesh channels. An allowance until measured.
pub const SHARD_BASE_BYTES: u64 = 16 << 20;

/// File descriptors that are not client sockets, whole process: stdio,
/// certificate and config files, data directory, log segments, admin and
/// metrics sockets, sockets being moved between shards (dup'ed).
pub const FDS_RESERVED_BASE: u64 = 1_024;

/// File descriptors per shard that are not client sockets: listener,
/// io_uring rings, eventfds, log files.
pub const FDS_RESERVED_PER_SHARD: u64 = 64;

/// `fs.file-max` is system-wide: leave this much for everything else on the
/// machine.
pub const FILE_MAX_HEADROOM: u64 = 65_536;

/// The backlog glommio 0.9's `TcpListener::bind` passes to `listen(2)`. The
/// kernel uses min(this, `net.core.somaxconn`), so `somaxconn` above it
/// changes nothing until the engine binds its listeners with a larger one.
pub const LISTEN_BACKLOG: u64 = 1_024;

/// Kernel default of `net.core.netdev_max_backlog`.
pub const NETDEV_MAX_BACKLOG_DEFAULT: u64 = 1_000;

/// From this many connections on, the check asks for
/// [`NETDEV_MAX_BACKLOG_MANY_CONNECTIONS`].
pub const MANY_CONNECTIONS: u64 = 100_000;

/// Rule of thumb for `net.core.netdev_max_backlog` with many connections:
/// the per-CPU queue between the NIC (or loopback) and TCP must absorb a
/// burst such as a message fanned out to many recipients and their ACKs.
/// Drops show in column 2 of `/proc/net/softnet_stat`: watch it.
pub const NETDEV_MAX_BACKLOG_MANY_CONNECTIONS: u64 = 16_384;

/// Kernel default of `vm.max_map_count`.
pub const MAX_MAP_COUNT_DEFAULT: u64 = 65_530;

/// Smallest heap share one memory mapping can stand for: glibc malloc maps
/// every allocation from 128 KiB up on its own; mimalloc (the `tern`
/// binary's allocator) maps far larger segments. So the heap needs at most
/// one mapping per this many bytes.
pub const HEAP_BYTES_PER_MAPPING_MIN: u64 = 128 << 10;

/// glommio refuses to start an executor when `RLIMIT_MEMLOCK` (soft) is
/// below this (`Reactor::new`, glommio 0.9).
pub const MEMLOCK_GLOMMIO_MIN_BYTES: u64 = 512 << 10;

/// glommio's default I/O memory per executor (`DEFAULT_IO_MEMORY`); the
/// engine does not change it.
pub const GLOMMIO_IO_MEMORY_BYTES: u64 = 10 << 20;

/// io_uring rings per glommio executor (main, poll, latency); each registers
/// the executor's I/O memory, and the kernel counts registered buffers
/// against `RLIMIT_MEMLOCK` per ring.
pub const IO_URING_RINGS_PER_SHARD: u64 = 3;

/// Locked memory per shard: the registered I/O memory of every ring, plus
/// 1 MiB for the rings themselves (counted against `RLIMIT_MEMLOCK` on
/// kernels before 5.12). Below it glommio logs "registering buffers ...
/// Skipping" and runs without registered buffers.
pub const MEMLOCK_PER_SHARD_BYTES: u64 =
    IO_URING_RINGS_PER_SHARD * GLOMMIO_IO_MEMORY_BYTES + (1 << 20);

/// Local ports one source address can use towards one server address and
/// port with `ip_local_port_range = 1024 65535`.
pub const PORTS_PER_SOURCE_ADDRESS_MAX: u64 = 65_535 - 1_024 + 1;

/// What to check for: connections held at once, and shards (one per core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Client connections the server must hold at once.
    pub connections: u64,
    /// Shards the server runs (`tern serve --shards`, default one per CPU).
    pub shards: u16,
}

/// Resource needs of a [`Target`], from the constants of this module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sizing {
    /// Client connections.
    pub connections: u64,
    /// Shards.
    pub shards: u16,
    /// Kernel page size the page counts use.
    pub page_size_bytes: u64,
    /// Open files the process needs: N + reserved.
    pub fds_required: u64,
    /// `fs.file-max` needed: the process's files + headroom for the rest.
    pub file_max_required: u64,
    /// Connection-tracking entries needed when netfilter tracks these flows:
    /// N plus a quarter for closing and TIME_WAIT flows.
    pub conntrack_max_required: u64,
    /// N × [`KERNEL_BYTES_PER_IDLE_SOCKET`].
    pub kernel_bytes: u64,
    /// N × [`USER_BYTES_PER_IDLE_SESSION_TARGET`].
    pub user_bytes: u64,
    /// [`PROCESS_BASE_BYTES`] + shards × [`SHARD_BASE_BYTES`].
    pub base_bytes: u64,
    /// Memory for N idle connections: kernel + user + base.
    pub memory_required_bytes: u64,
    /// `tcp_mem` pressure threshold needed: kernel bytes in pages, so the
    /// sockets can queue about their own size in data before TCP enters
    /// memory pressure.
    pub tcp_mem_pressure_pages: u64,
    /// `somaxconn` and `tcp_max_syn_backlog` needed.
    pub listen_backlog_required: u64,
    /// `netdev_max_backlog` needed.
    pub netdev_max_backlog_required: u64,
    /// `vm.max_map_count` needed.
    pub max_map_count_required: u64,
    /// `RLIMIT_MEMLOCK` needed.
    pub memlock_required_bytes: u64,
    /// Source addresses a load generator needs towards one server
    /// address:port with the widest port range.
    pub source_addresses_full_range: u64,
}

fn div_ceil_nonzero(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

impl Sizing {
    /// The needs of `target` with pages of `page_size_bytes`.
    pub fn new(target: Target, page_size_bytes: u64) -> Self {
        let n = target.connections;
        let shards = u64::from(target.shards.max(1));
        let fds_required = n
            .saturating_add(FDS_RESERVED_BASE)
            .saturating_add(FDS_RESERVED_PER_SHARD.saturating_mul(shards));
        let kernel_bytes = n.saturating_mul(KERNEL_BYTES_PER_IDLE_SOCKET);
        let user_bytes = n.saturating_mul(USER_BYTES_PER_IDLE_SESSION_TARGET);
        let base_bytes = PROCESS_BASE_BYTES.saturating_add(SHARD_BASE_BYTES.saturating_mul(shards));
        Self {
            connections: n,
            shards: target.shards,
            page_size_bytes,
            fds_required,
            file_max_required: fds_required.saturating_add(FILE_MAX_HEADROOM),
            conntrack_max_required: n.saturating_add(n / 4),
            kernel_bytes,
            user_bytes,
            base_bytes,
            memory_required_bytes: kernel_bytes
                .saturating_add(user_bytes)
                .saturating_add(base_bytes),
            tcp_mem_pressure_pages: div_ceil_nonzero(kernel_bytes, page_size_bytes),
            listen_backlog_required: LISTEN_BACKLOG,
            netdev_max_backlog_required: if n >= MANY_CONNECTIONS {
                NETDEV_MAX_BACKLOG_MANY_CONNECTIONS
            } else {
                NETDEV_MAX_BACKLOG_DEFAULT
            },
            max_map_count_required: MAX_MAP_COUNT_DEFAULT.max(div_ceil_nonzero(
                user_bytes.saturating_add(base_bytes),
                HEAP_BYTES_PER_MAPPING_MIN,
            )),
            memlock_required_bytes: MEMLOCK_GLOMMIO_MIN_BYTES
                .max(MEMLOCK_PER_SHARD_BYTES.saturating_mul(shards)),
            source_addresses_full_range: div_ceil_nonzero(n, PORTS_PER_SOURCE_ADDRESS_MAX),
        }
    }

    /// `tcp_mem` high threshold needed so that every socket can hold its
    /// guaranteed minimum buffers (`tcp_rmem[0]` + `tcp_wmem[0]`) at once.
    pub fn buffer_floor_pages(&self, rmem_min_bytes: u64, wmem_min_bytes: u64) -> u64 {
        div_ceil_nonzero(
            self.connections
                .saturating_mul(rmem_min_bytes.saturating_add(wmem_min_bytes)),
            self.page_size_bytes,
        )
    }

    /// Source addresses a load generator needs towards one server
    /// address:port when each can use `ports` local ports.
    pub fn source_addresses(&self, ports: u64) -> u64 {
        div_ceil_nonzero(self.connections, ports)
    }
}

/// `RLIMIT_NOFILE` (and `fs.nr_open`, when it must grow) to set for
/// `fds_required`: the next power of two, or `nr_open` when it already lies
/// between the two (the limit cannot exceed it).
pub fn nofile_recommended(fds_required: u64, nr_open: Option<u64>) -> u64 {
    let pow2 = fds_required
        .checked_next_power_of_two()
        .unwrap_or(fds_required);
    match nr_open {
        Some(cap) if cap >= fds_required && cap < pow2 => cap,
        _ => pow2,
    }
}

/// The sizing table of docs/TUNING.md for these connection counts, 4 KiB
/// pages and default socket buffer floors (4 KiB each way). A test keeps
/// the document equal to this output.
pub fn sizing_markdown(connections: &[u64], shards: u16) -> String {
    const PAGE: u64 = 4096;
    const FLOOR: u64 = 4096;
    let rows: Vec<Sizing> = connections
        .iter()
        .map(|&n| {
            Sizing::new(
                Target {
                    connections: n,
                    shards,
                },
                PAGE,
            )
        })
        .collect();
    let mut out = String::new();
    let mut line = |label: String, cell: &dyn Fn(&Sizing) -> String| {
        out.push_str("| ");
        out.push_str(&label);
        for s in &rows {
            out.push_str(" | ");
            out.push_str(&cell(s));
        }
        out.push_str(" |\n");
    };
    line(format!("{shards} shards, N ="), &|s| grouped(s.connections));
    line("---".to_owned(), &|_| "---".to_owned());
    line(
        format!(
            "open files: N + {} + {} × shards",
            grouped(FDS_RESERVED_BASE),
            FDS_RESERVED_PER_SHARD
        ),
        &|s| grouped(s.fds_required),
    );
    line("`LimitNOFILE=` to set (power of two)".to_owned(), &|s| {
        grouped(nofile_recommended(s.fds_required, None))
    });
    line(
        format!(
            "`fs.file-max` ≥ open files + {}",
            grouped(FILE_MAX_HEADROOM)
        ),
        &|s| grouped(s.file_max_required),
    );
    line(
        "`nf_conntrack_max` ≥ 1.25 × N (when loaded)".to_owned(),
        &|s| grouped(s.conntrack_max_required),
    );
    line(
        format!(
            "kernel, idle: N × {} B",
            grouped(KERNEL_BYTES_PER_IDLE_SOCKET)
        ),
        &|s| human_bytes(s.kernel_bytes),
    );
    line(
        format!(
            "user, idle (target): N × {} B",
            grouped(USER_BYTES_PER_IDLE_SESSION_TARGET)
        ),
        &|s| human_bytes(s.user_bytes),
    );
    line(
        format!(
            "process base: {} + {} × shards",
            human_bytes(PROCESS_BASE_BYTES),
            human_bytes(SHARD_BASE_BYTES)
        ),
        &|s| human_bytes(s.base_bytes),
    );
    line("**memory needed, idle**".to_owned(), &|s| {
        format!("**{}**", human_bytes(s.memory_required_bytes))
    });
    line(
        "`tcp_mem` pressure ≥ kernel bytes / 4 KiB (pages)".to_owned(),
        &|s| grouped(s.tcp_mem_pressure_pages),
    );
    line(
        "`tcp_mem` high ≥ N × (4 KiB + 4 KiB floors) / 4 KiB (pages)".to_owned(),
        &|s| grouped(s.buffer_floor_pages(FLOOR, FLOOR)),
    );
    line(
        format!(
            "`LimitMEMLOCK` ≥ {} × shards",
            human_bytes(MEMLOCK_PER_SHARD_BYTES)
        ),
        &|s| human_bytes(s.memlock_required_bytes),
    );
    line(
        format!(
            "load generator source addresses, range 1024-65535 ({} ports)",
            grouped(PORTS_PER_SOURCE_ADDRESS_MAX)
        ),
        &|s| grouped(s.source_addresses_full_range),
    );
    line(
        "load generator source addresses, default range 32768-60999 (28,232 ports)".to_owned(),
        &|s| grouped(s.source_addresses(60_999 - 32_768 + 1)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizing(n: u64, shards: u16) -> Sizing {
        Sizing::new(
            Target {
                connections: n,
                shards,
            },
            4096,
        )
    }

    #[test]
    fn one_million_on_two_shards() {
        let s = sizing(1_000_000, 2);
        assert_eq!(s.fds_required, 1_000_000 + 1_024 + 128);
        assert_eq!(s.file_max_required, 1_001_152 + 65_536);
        assert_eq!(s.kernel_bytes, 3_686_000_000);
        assert_eq!(s.user_bytes, 2_048_000_000);
        assert_eq!(s.base_bytes, (64 + 32) << 20);
        assert_eq!(
            s.memory_required_bytes,
            3_686_000_000 + 2_048_000_000 + (96 << 20)
        );
        // 3,686,000,000 / 4096 = 899,902.3 → rounded up.
        assert_eq!(s.tcp_mem_pressure_pages, 899_903);
        assert_eq!(s.buffer_floor_pages(4096, 4096), 2_000_000);
        assert_eq!(s.source_addresses_full_range, 16);
        assert_eq!(s.source_addresses(28_232), 36);
        assert_eq!(s.memlock_required_bytes, 2 * (31 << 20));
        assert_eq!(s.netdev_max_backlog_required, 16_384);
        assert_eq!(s.max_map_count_required, 65_530);
    }

    #[test]
    fn small_targets_keep_kernel_defaults() {
        let s = sizing(10_000, 1);
        assert_eq!(s.netdev_max_backlog_required, NETDEV_MAX_BACKLOG_DEFAULT);
        assert_eq!(s.max_map_count_required, MAX_MAP_COUNT_DEFAULT);
        assert_eq!(s.source_addresses_full_range, 1);
        assert_eq!(s.memlock_required_bytes, 31 << 20);
    }

    #[test]
    fn huge_targets_saturate_instead_of_overflowing() {
        let s = sizing(u64::MAX, u16::MAX);
        assert_eq!(s.fds_required, u64::MAX);
        assert_eq!(s.memory_required_bytes, u64::MAX);
        assert!(s.max_map_count_required > MAX_MAP_COUNT_DEFAULT);
        let zero_page = Sizing::new(
            Target {
                connections: 5,
                shards: 0,
            },
            0,
        );
        assert_eq!(
            zero_page.tcp_mem_pressure_pages,
            5 * KERNEL_BYTES_PER_IDLE_SOCKET
        );
        assert_eq!(
            zero_page.fds_required,
            5 + 1_024 + 64,
            "0 shards counts as 1"
        );
    }

    #[test]
    fn nofile_recommendation() {
        assert_eq!(nofile_recommended(1_001_152, None), 1_048_576);
        assert_eq!(nofile_recommended(1_001_152, Some(1_048_576)), 1_048_576);
        assert_eq!(nofile_recommended(1_001_152, Some(1_010_000)), 1_010_000);
        assert_eq!(nofile_recommended(2_001_152, Some(1_048_576)), 2_097_152);
        assert_eq!(nofile_recommended(u64::MAX, None), u64::MAX);
    }

    #[test]
    fn markdown_table_has_a_column_per_target() {
        let md = sizing_markdown(&[100_000, 1_000_000], 2);
        let first = md.lines().next().unwrap_or_default();
        assert_eq!(first, "| 2 shards, N = | 100,000 | 1,000,000 |");
        assert!(md.contains("| `LimitNOFILE=` to set (power of two) | 131,072 | 1,048,576 |"));
        assert!(md.lines().all(|l| l.matches(" | ").count() == 2), "{md}");
    }
}
