//! The check itself: parse a [`Snapshot`] and compare every limit with what
//! a [`Target`] needs. Pure: no I/O, no clock; unreadable or unparseable
//! values become `unknown` findings, never a panic.

use crate::parse::{self, grouped, human_bytes, CgroupLimit};
use crate::report::{Finding, Fix, FixKind, Report, Scope, Status};
use crate::sizing::{
    nofile_recommended, Sizing, Target, FDS_RESERVED_BASE, FDS_RESERVED_PER_SHARD,
    KERNEL_BYTES_PER_IDLE_SOCKET, LISTEN_BACKLOG, MEMLOCK_GLOMMIO_MIN_BYTES,
    PORTS_PER_SOURCE_ADDRESS_MAX, USER_BYTES_PER_IDLE_SESSION_TARGET,
};
use crate::snapshot::{Rlimit, RlimitValue, Snapshot};

/// Page size assumed for the sizing figures when the snapshot has none
/// (findings that depend on it are then `unknown`).
pub const PAGE_SIZE_BYTES_ASSUMED: u64 = 4096;

/// `somaxconn` and `tcp_max_syn_backlog` to set when short: the kernel
/// default of `somaxconn` since Linux 5.4, above the engine's listen
/// backlog so a larger one later needs no second change.
pub const LISTEN_QUEUE_RECOMMENDED: u64 = 4096;

/// Longest raw text quoted in an `unknown` finding.
const QUOTE_CHARS_MAX: usize = 40;

/// Compares the limits in `snap` with what `target` needs.
pub fn evaluate(snap: &Snapshot, target: Target) -> Report {
    let page = snap
        .kernel_page_size
        .as_deref()
        .and_then(parse::page_size_bytes);
    let sizing = Sizing::new(target, page.unwrap_or(PAGE_SIZE_BYTES_ASSUMED));
    let ctx = Ctx {
        snap,
        target,
        sizing: &sizing,
        page,
    };
    let findings = vec![
        ctx.nofile_soft(),
        ctx.nofile_hard(),
        ctx.nr_open(),
        ctx.file_max(),
        ctx.conntrack(),
        ctx.somaxconn(),
        ctx.syn_backlog(),
        ctx.syncookies(),
        ctx.tcp_mem(),
        ctx.buffer_floor(),
        ctx.netdev_backlog(),
        ctx.max_map_count(),
        ctx.memlock(),
        ctx.memory(),
        ctx.cpus(),
        ctx.port_range(),
    ];
    Report {
        target,
        sizing,
        findings,
    }
}

struct Ctx<'a> {
    snap: &'a Snapshot,
    target: Target,
    sizing: &'a Sizing,
    page: Option<u64>,
}

/// A sysctl that must be at least `need`; the fix sets it to `set`, and an
/// unreadable value also gets the command to read it by hand.
fn sysctl_at_least(
    name: &'static str,
    text: Option<&str>,
    need: u64,
    set: u64,
    why: &str,
) -> Finding {
    let (have, current) = show_u64(text);
    let status = at_least(have, need);
    let mut fixes = vec![Fix::new(FixKind::Sysctl, format!("{name} = {set}"))];
    if status == Status::Unknown {
        fixes.push(manual_read(name));
    }
    finding(
        name,
        status,
        current,
        format!("≥ {}", grouped(need)),
        why.to_owned(),
        fixes,
    )
}

fn finding(
    name: &'static str,
    status: Status,
    current: String,
    required: String,
    why: String,
    fixes: Vec<Fix>,
) -> Finding {
    Finding {
        name,
        scope: Scope::Server,
        status,
        current,
        required,
        why,
        fixes: if status == Status::Ok {
            Vec::new()
        } else {
            fixes
        },
    }
}

/// `Ok` when `have` is known and at least `need`.
fn at_least(have: Option<u64>, need: u64) -> Status {
    match have {
        Some(v) if v >= need => Status::Ok,
        Some(_) => Status::Short,
        None => Status::Unknown,
    }
}

/// How an unusable value is shown: missing, or the raw text, shortened.
fn unusable(text: Option<&str>) -> String {
    match text {
        None => "unreadable".to_owned(),
        Some(t) => {
            let t = t.trim();
            let mut shown: String = t.chars().take(QUOTE_CHARS_MAX).collect();
            if t.chars().count() > QUOTE_CHARS_MAX {
                shown.push('…');
            }
            format!("unparseable: {shown:?}")
        }
    }
}

fn show_u64(text: Option<&str>) -> (Option<u64>, String) {
    match text.and_then(parse::u64_value) {
        Some(v) => (Some(v), grouped(v)),
        None => (None, unusable(text)),
    }
}

fn show_rlimit(v: RlimitValue, bytes: bool) -> String {
    match v {
        RlimitValue::Unlimited => "unlimited".to_owned(),
        RlimitValue::Finite(n) if bytes => human_bytes(n),
        RlimitValue::Finite(n) => grouped(n),
    }
}

fn manual_read(name: &str) -> Fix {
    Fix::new(
        FixKind::Manual,
        format!("could not read it: check with `sysctl {name}`"),
    )
}

fn next_pow2(n: u64) -> u64 {
    n.checked_next_power_of_two().unwrap_or(n)
}

impl Ctx<'_> {
    fn n(&self) -> String {
        grouped(self.target.connections)
    }

    fn nr_open_value(&self) -> Option<u64> {
        self.snap.nr_open.as_deref().and_then(parse::u64_value)
    }

    fn nofile_rec(&self) -> u64 {
        nofile_recommended(self.sizing.fds_required, self.nr_open_value())
    }

    fn nofile_why(&self) -> String {
        format!(
            "one descriptor per connection plus {} + {} per shard for listeners, io_uring rings, \
             files and sockets being moved between shards",
            grouped(FDS_RESERVED_BASE),
            FDS_RESERVED_PER_SHARD
        )
    }

    /// The `fs.nr_open` line, when the recommended limit is above it.
    fn nr_open_fix(&self, rec: u64) -> Option<Fix> {
        match self.nr_open_value() {
            Some(cap) if cap >= rec => None,
            _ => Some(Fix::new(FixKind::Sysctl, format!("fs.nr_open = {rec}"))),
        }
    }

    fn nofile(&self, hard: bool) -> Finding {
        let need = self.sizing.fds_required;
        let rec = self.nofile_rec();
        let (status, current) = match self.snap.nofile {
            None => (Status::Unknown, "getrlimit failed".to_owned()),
            Some(Rlimit { soft, hard: h }) => {
                let v = if hard { h } else { soft };
                let status = if v.allows(need) {
                    Status::Ok
                } else {
                    Status::Short
                };
                (status, show_rlimit(v, false))
            }
        };
        let mut fixes = Vec::new();
        fixes.extend(self.nr_open_fix(rec));
        fixes.push(Fix::new(FixKind::SystemdUnit, format!("LimitNOFILE={rec}")));
        if hard {
            fixes.push(Fix::new(
                FixKind::LimitsConf,
                format!("tern  -  nofile  {rec}"),
            ));
        } else {
            fixes.push(Fix::new(FixKind::Shell, format!("ulimit -n {rec}")));
        }
        let why = if hard {
            format!(
                "the soft limit can be raised only up to the hard one (and the hard one only by \
                 root); {}",
                self.nofile_why()
            )
        } else {
            self.nofile_why()
        };
        finding(
            if hard {
                "RLIMIT_NOFILE (hard)"
            } else {
                "RLIMIT_NOFILE (soft)"
            },
            status,
            current,
            format!("≥ {}", grouped(need)),
            why,
            fixes,
        )
    }

    fn nofile_soft(&self) -> Finding {
        self.nofile(false)
    }

    fn nofile_hard(&self) -> Finding {
        self.nofile(true)
    }

    fn nr_open(&self) -> Finding {
        sysctl_at_least(
            "fs.nr_open",
            self.snap.nr_open.as_deref(),
            self.sizing.fds_required,
            self.nofile_rec(),
            "ceiling for RLIMIT_NOFILE: LimitNOFILE= and ulimit -n cannot go above it",
        )
    }

    fn file_max(&self) -> Finding {
        let need = self.sizing.file_max_required;
        sysctl_at_least(
            "fs.file-max",
            self.snap.file_max.as_deref(),
            need,
            next_pow2(need),
            "open files of the whole system: the server's plus room for everything else (a load \
             generator on the same machine needs as many again)",
        )
    }

    fn conntrack(&self) -> Finding {
        let name = "net.netfilter.nf_conntrack_max";
        let need = self.sizing.conntrack_max_required;
        let (status, current) = match self.snap.nf_conntrack_max.as_deref() {
            None => (Status::Ok, "not loaded".to_owned()),
            text => {
                let (have, current) = show_u64(text);
                (at_least(have, need), current)
            }
        };
        let fixes = vec![
            Fix::new(FixKind::Sysctl, format!("{name} = {}", next_pow2(need))),
            Fix::new(
                FixKind::Manual,
                "or do not track the tern port (7443 by default): `iptables -t raw -A PREROUTING -p tcp --dport \
                 7443 -j NOTRACK` and `iptables -t raw -A OUTPUT -p tcp --sport 7443 -j NOTRACK`",
            ),
        ];
        finding(
            name,
            status,
            current,
            format!("≥ {} when loaded", grouped(need)),
            "with connection tracking loaded every flow takes an entry; when the table is full \
             new connections are dropped (\"nf_conntrack: table full\" in dmesg)"
                .to_owned(),
            fixes,
        )
    }

    fn listen_queue(&self, name: &'static str, text: Option<&str>, why: &str) -> Finding {
        let need = self.sizing.listen_backlog_required;
        sysctl_at_least(name, text, need, need.max(LISTEN_QUEUE_RECOMMENDED), why)
    }

    fn somaxconn(&self) -> Finding {
        self.listen_queue(
            "net.core.somaxconn",
            self.snap.somaxconn.as_deref(),
            &format!(
                "each shard's accept queue holds min(listen backlog {}, somaxconn) connections \
                 waiting for accept, e.g. during a reconnect wave after a restart",
                grouped(LISTEN_BACKLOG)
            ),
        )
    }

    fn syn_backlog(&self) -> Finding {
        self.listen_queue(
            "net.ipv4.tcp_max_syn_backlog",
            self.snap.tcp_max_syn_backlog.as_deref(),
            "half-open connections per listener; without SYN cookies a fuller queue drops SYNs",
        )
    }

    fn syncookies(&self) -> Finding {
        let name = "net.ipv4.tcp_syncookies";
        let (have, current) = show_u64(self.snap.tcp_syncookies.as_deref());
        let status = at_least(have, 1);
        let mut fixes = vec![Fix::new(FixKind::Sysctl, format!("{name} = 1"))];
        if status == Status::Unknown {
            fixes.push(manual_read(name));
        }
        finding(
            name,
            status,
            current,
            "1 (or 2)".to_owned(),
            format!(
                "when the SYN queue overflows, cookies answer instead of dropping: {} clients \
                 reconnecting at once do not stall on retransmitted SYNs",
                self.n()
            ),
            fixes,
        )
    }

    fn triple(text: Option<&str>) -> Option<[u64; 3]> {
        text.and_then(parse::u64_fields::<3>)
    }

    /// The `tcp_mem` line to set: pressure from the idle kernel memory,
    /// high from the buffer floors, never below the current values.
    fn tcp_mem_rec(&self, floor_pages: Option<u64>) -> [u64; 3] {
        let p = self.sizing.tcp_mem_pressure_pages;
        let rec = [
            p,
            p.saturating_mul(4) / 3,
            p.saturating_mul(2).max(floor_pages.unwrap_or(0)),
        ];
        match Self::triple(self.snap.tcp_mem.as_deref()) {
            Some([a, b, c]) => [rec[0].max(a), rec[1].max(b), rec[2].max(c)],
            None => rec,
        }
    }

    fn floor_pages(&self) -> Option<u64> {
        let [rmin, _, _] = Self::triple(self.snap.tcp_rmem.as_deref())?;
        let [wmin, _, _] = Self::triple(self.snap.tcp_wmem.as_deref())?;
        Some(self.sizing.buffer_floor_pages(rmin, wmin))
    }

    fn tcp_mem_fix(&self) -> Fix {
        let [a, b, c] = self.tcp_mem_rec(self.floor_pages());
        Fix::new(FixKind::Sysctl, format!("net.ipv4.tcp_mem = {a} {b} {c}"))
    }

    fn tcp_mem(&self) -> Finding {
        let name = "net.ipv4.tcp_mem";
        let need = self.sizing.tcp_mem_pressure_pages;
        let text = self.snap.tcp_mem.as_deref();
        let (status, current) = match (Self::triple(text), self.page) {
            (Some([a, b, c]), Some(page)) => (
                at_least(Some(b), need),
                format!(
                    "{} {} {} pages (pressure {})",
                    grouped(a),
                    grouped(b),
                    grouped(c),
                    human_bytes(b.saturating_mul(page))
                ),
            ),
            (Some(_), None) => (Status::Unknown, "page size unknown".to_owned()),
            (None, _) => (Status::Unknown, unusable(text)),
        };
        let mut fixes = vec![self.tcp_mem_fix()];
        if status == Status::Unknown {
            fixes.push(manual_read(name));
        }
        finding(
            name,
            status,
            current,
            format!(
                "pressure ≥ {} pages ({})",
                grouped(need),
                human_bytes(self.sizing.kernel_bytes)
            ),
            format!(
                "tcp_mem bounds data queued in sockets (not the sockets themselves: N × {} B \
                 = {} idle); queued data of that size should not push TCP into memory \
                 pressure, which shrinks every socket's buffers",
                grouped(KERNEL_BYTES_PER_IDLE_SOCKET),
                human_bytes(self.sizing.kernel_bytes)
            ),
            fixes,
        )
    }

    fn buffer_floor(&self) -> Finding {
        let name = "tcp_rmem/tcp_wmem floor";
        let rmem = Self::triple(self.snap.tcp_rmem.as_deref());
        let wmem = Self::triple(self.snap.tcp_wmem.as_deref());
        let mem = Self::triple(self.snap.tcp_mem.as_deref());
        let (status, current, required) = match (rmem, wmem, mem, self.page) {
            (Some([r0, _, _]), Some([w0, _, _]), Some([_, _, high]), Some(_)) => {
                let need = self.sizing.buffer_floor_pages(r0, w0);
                (
                    at_least(Some(high), need),
                    format!(
                        "floors {} + {} B, high {} pages",
                        grouped(r0),
                        grouped(w0),
                        grouped(high)
                    ),
                    format!("tcp_mem high ≥ {} pages", grouped(need)),
                )
            }
            _ => {
                let shown = if rmem.is_none() {
                    format!("tcp_rmem {}", unusable(self.snap.tcp_rmem.as_deref()))
                } else if wmem.is_none() {
                    format!("tcp_wmem {}", unusable(self.snap.tcp_wmem.as_deref()))
                } else if mem.is_none() {
                    format!("tcp_mem {}", unusable(self.snap.tcp_mem.as_deref()))
                } else {
                    "page size unknown".to_owned()
                };
                (
                    Status::Unknown,
                    shown,
                    "tcp_mem high ≥ N × (rmem + wmem floors)".to_owned(),
                )
            }
        };
        let mut fixes = vec![self.tcp_mem_fix()];
        if status == Status::Unknown {
            fixes.push(manual_read(
                "net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.tcp_mem",
            ));
        }
        finding(
            name,
            status,
            current,
            required,
            format!(
                "tcp_rmem[0] and tcp_wmem[0] are guaranteed to every socket even under memory \
                 pressure; {} sockets holding their floor at once need that many pages below \
                 tcp_mem high, or the kernel drops data{}",
                self.n(),
                match (rmem, wmem) {
                    (Some([_, r1, _]), Some([_, w1, _])) => format!(
                        " (the defaults, each socket's initial buffer sizes, are {} + {} B)",
                        grouped(r1),
                        grouped(w1)
                    ),
                    _ => String::new(),
                }
            ),
            fixes,
        )
    }

    fn netdev_backlog(&self) -> Finding {
        let need = self.sizing.netdev_max_backlog_required;
        sysctl_at_least(
            "net.core.netdev_max_backlog",
            self.snap.netdev_max_backlog.as_deref(),
            need,
            need,
            "per-CPU queue of received packets (loopback too) before TCP takes them; a burst \
             such as a message fanned out to many recipients overflows a short one and drops \
             packets (column 2 of /proc/net/softnet_stat)",
        )
    }

    fn max_map_count(&self) -> Finding {
        let need = self.sizing.max_map_count_required;
        sysctl_at_least(
            "vm.max_map_count",
            self.snap.max_map_count.as_deref(),
            need,
            need,
            "memory mappings per process; the heap for the sessions needs at most one per \
             128 KiB, and past the limit allocations fail",
        )
    }

    fn memlock(&self) -> Finding {
        let need = self.sizing.memlock_required_bytes;
        let (status, current) = match self.snap.memlock {
            None => (Status::Unknown, "getrlimit failed".to_owned()),
            Some(Rlimit { soft, hard }) => (
                if soft.allows(need) {
                    Status::Ok
                } else {
                    Status::Short
                },
                format!(
                    "{} (hard {})",
                    show_rlimit(soft, true),
                    show_rlimit(hard, true)
                ),
            ),
        };
        let fatal = matches!(
            self.snap.memlock,
            Some(Rlimit {
                soft: RlimitValue::Finite(v),
                ..
            }) if v < MEMLOCK_GLOMMIO_MIN_BYTES
        );
        let mib = need.div_ceil(1 << 20);
        let why = format!(
            "each shard's 3 io_uring rings register glommio's 10 MiB I/O memory, counted against \
             this limit; below it glommio runs without registered buffers (a warning at start){}",
            if fatal {
                "; below 512 KiB, as now, glommio refuses to start"
            } else {
                ""
            }
        );
        finding(
            "RLIMIT_MEMLOCK (soft)",
            status,
            current,
            format!("≥ {}", human_bytes(need)),
            why,
            vec![
                Fix::new(FixKind::SystemdUnit, format!("LimitMEMLOCK={mib}M")),
                Fix::new(
                    FixKind::Shell,
                    format!("ulimit -l {}", mib.saturating_mul(1024)),
                ),
            ],
        )
    }

    fn memory(&self) -> Finding {
        let need = self.sizing.memory_required_bytes;
        let meminfo = self.snap.meminfo.as_deref();
        let available = meminfo.and_then(|m| parse::kib_field_bytes(m, "MemAvailable"));
        let cgroup = self
            .snap
            .cgroup_memory_limit
            .as_deref()
            .and_then(parse::cgroup_limit);
        let (have, current) = match (available, cgroup) {
            (None, _) if meminfo.is_none() => (None, "/proc/meminfo unreadable".to_owned()),
            (None, _) => (None, "no MemAvailable in /proc/meminfo".to_owned()),
            (Some(avail), Some(CgroupLimit::Bytes(limit))) if limit < avail => (
                Some(limit),
                format!("{} (cgroup limit)", human_bytes(limit)),
            ),
            (Some(avail), _) => (Some(avail), format!("{} available", human_bytes(avail))),
        };
        let status = at_least(have, need);
        let cgroup_bound = matches!(
            (available, cgroup),
            (Some(avail), Some(CgroupLimit::Bytes(limit))) if limit < avail
        );
        let mut fixes = Vec::new();
        if cgroup_bound {
            fixes.push(Fix::new(
                FixKind::SystemdUnit,
                format!("MemoryMax={}M", need.div_ceil(1 << 20)),
            ));
        }
        fixes.push(Fix::new(
            FixKind::Manual,
            format!(
                "add memory or plan fewer connections per machine: {} B per idle connection \
                 (kernel {} + user target {}) plus {}",
                grouped(KERNEL_BYTES_PER_IDLE_SOCKET + USER_BYTES_PER_IDLE_SESSION_TARGET),
                grouped(KERNEL_BYTES_PER_IDLE_SOCKET),
                grouped(USER_BYTES_PER_IDLE_SESSION_TARGET),
                human_bytes(self.sizing.base_bytes)
            ),
        ));
        finding(
            "memory",
            status,
            current,
            format!("≥ {} for idle connections", human_bytes(need)),
            format!(
                "{} idle connections: kernel {} + user {} (TARGET per session until the load \
                 generator measures it) + base {}; traffic adds queued data on top",
                self.n(),
                human_bytes(self.sizing.kernel_bytes),
                human_bytes(self.sizing.user_bytes),
                human_bytes(self.sizing.base_bytes)
            ),
            fixes,
        )
    }

    fn cpus(&self) -> Finding {
        let shards = u64::from(self.target.shards);
        let cpus = self.snap.cpus;
        let status = at_least(cpus, shards);
        let current = cpus.map_or_else(|| "unknown".to_owned(), grouped);
        let mut fixes = Vec::new();
        if let Some(c) = cpus.filter(|&c| c > 0) {
            fixes.push(Fix::new(FixKind::TernServe, format!("--shards {c}")));
        }
        fixes.push(Fix::new(
            FixKind::Manual,
            "or let the process use more CPUs (CPUAffinity= in the unit, the container's CPU \
             limit)",
        ));
        finding(
            "cpus",
            status,
            current,
            format!("≥ {} (one per shard)", grouped(shards)),
            "one shard per core, pinned to CPU k; with more shards than CPUs they share cores \
             and the server does not pin them"
                .to_owned(),
            fixes,
        )
    }

    fn port_range(&self) -> Finding {
        let name = "net.ipv4.ip_local_port_range";
        let n = self.target.connections;
        let text = self.snap.ip_local_port_range.as_deref();
        let range = text
            .and_then(parse::u64_fields::<2>)
            .filter(|[lo, hi]| lo <= hi);
        let (status, current, ports) = match range {
            Some([lo, hi]) => {
                let ports = (hi - lo).saturating_add(1);
                (
                    at_least(Some(ports), n),
                    format!("{lo}-{hi} ({} ports)", grouped(ports)),
                    Some(ports),
                )
            }
            None => (Status::Unknown, unusable(text), None),
        };
        let mut fixes = Vec::new();
        if ports.is_none_or(|p| p < PORTS_PER_SOURCE_ADDRESS_MAX) {
            fixes.push(Fix::new(FixKind::Sysctl, format!("{name} = 1024 65535")));
        }
        if n > PORTS_PER_SOURCE_ADDRESS_MAX || ports.is_some_and(|p| p < n) {
            fixes.push(Fix::new(
                FixKind::Manual,
                format!(
                    "spread the connections over {k} source addresses with the full range (bind \
                     each socket to its own local IP before connect; on loopback any address of \
                     127.0.0.0/8), or over as many server addresses",
                    k = grouped(self.sizing.source_addresses_full_range),
                ),
            ));
        }
        if status == Status::Unknown {
            fixes.push(manual_read(name));
        }
        let required = match ports {
            Some(p) if p < n => format!(
                "≥ {} ports, or {} source addresses with this range",
                grouped(n),
                grouped(self.sizing.source_addresses(p))
            ),
            _ => format!("≥ {} ports per source address", grouped(n)),
        };
        Finding {
            scope: Scope::LoadGenerator,
            ..finding(
                name,
                status,
                current,
                required,
                "only for the machine opening the connections: towards one server address:port \
                 each source address can open one connection per local port"
                    .to_owned(),
                fixes,
            )
        }
    }
}

#[cfg(test)]
mod tests;
