//! What the check looks at, as read from this machine: raw text of `/proc`
//! and `/sys` files and the process limits. [`read_snapshot`] does all the
//! I/O; [`crate::evaluate`] only parses and compares, so tests can feed it
//! any snapshot.

use serde::Serialize;

use crate::sys::{self, Resource};

/// One side of a process limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RlimitValue {
    /// A finite limit (files, or bytes for `RLIMIT_MEMLOCK`).
    Finite(u64),
    /// `RLIM_INFINITY`.
    Unlimited,
}

impl RlimitValue {
    /// True when this limit allows at least `n`.
    pub fn allows(self, n: u64) -> bool {
        match self {
            Self::Finite(v) => v >= n,
            Self::Unlimited => true,
        }
    }
}

/// Soft and hard limit of one resource (`getrlimit(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rlimit {
    /// The limit in force; the process may raise it up to `hard`.
    pub soft: RlimitValue,
    /// The ceiling for `soft`; only a privileged process raises it.
    pub hard: RlimitValue,
}

/// Raw inputs of the check. `None` means "could not be read" (the finding is
/// then `unknown`); text is kept exactly as the kernel wrote it so parsing
/// stays in [`crate::evaluate`], where it is tested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// `RLIMIT_NOFILE` of this process.
    pub nofile: Option<Rlimit>,
    /// `RLIMIT_MEMLOCK` of this process.
    pub memlock: Option<Rlimit>,
    /// `/proc/sys/fs/nr_open`: ceiling for `RLIMIT_NOFILE`.
    pub nr_open: Option<String>,
    /// `/proc/sys/fs/file-max`: open files, whole system.
    pub file_max: Option<String>,
    /// `/proc/sys/net/netfilter/nf_conntrack_max`; `None` also when
    /// connection tracking is not loaded (the file does not exist).
    pub nf_conntrack_max: Option<String>,
    /// `/proc/sys/net/core/somaxconn`.
    pub somaxconn: Option<String>,
    /// `/proc/sys/net/ipv4/tcp_max_syn_backlog`.
    pub tcp_max_syn_backlog: Option<String>,
    /// `/proc/sys/net/ipv4/tcp_syncookies`.
    pub tcp_syncookies: Option<String>,
    /// `/proc/sys/net/ipv4/ip_local_port_range`.
    pub ip_local_port_range: Option<String>,
    /// `/proc/sys/net/ipv4/tcp_mem` (pages).
    pub tcp_mem: Option<String>,
    /// `/proc/sys/net/ipv4/tcp_rmem` (bytes: min default max).
    pub tcp_rmem: Option<String>,
    /// `/proc/sys/net/ipv4/tcp_wmem` (bytes: min default max).
    pub tcp_wmem: Option<String>,
    /// `/proc/sys/net/core/netdev_max_backlog`.
    pub netdev_max_backlog: Option<String>,
    /// `/proc/sys/vm/max_map_count`.
    pub max_map_count: Option<String>,
    /// `/proc/meminfo`.
    pub meminfo: Option<String>,
    /// This process's cgroup memory limit file (v2 `memory.max` or v1
    /// `memory.limit_in_bytes`), when one could be found.
    pub cgroup_memory_limit: Option<String>,
    /// The first `KernelPageSize:` line of `/proc/self/smaps` (`tcp_mem` is
    /// in pages of this size).
    pub kernel_page_size: Option<String>,
    /// CPUs this process may run on (affinity mask and cgroup quota).
    pub cpus: Option<u64>,
}

/// Every sysctl the check reads, as `(name, /proc/sys path)`.
pub(crate) const SYSCTL_FILES: [(&str, &str); 13] = [
    ("fs.nr_open", "/proc/sys/fs/nr_open"),
    ("fs.file-max", "/proc/sys/fs/file-max"),
    (
        "net.netfilter.nf_conntrack_max",
        "/proc/sys/net/netfilter/nf_conntrack_max",
    ),
    ("net.core.somaxconn", "/proc/sys/net/core/somaxconn"),
    (
        "net.ipv4.tcp_max_syn_backlog",
        "/proc/sys/net/ipv4/tcp_max_syn_backlog",
    ),
    (
        "net.ipv4.tcp_syncookies",
        "/proc/sys/net/ipv4/tcp_syncookies",
    ),
    (
        "net.ipv4.ip_local_port_range",
        "/proc/sys/net/ipv4/ip_local_port_range",
    ),
    ("net.ipv4.tcp_mem", "/proc/sys/net/ipv4/tcp_mem"),
    ("net.ipv4.tcp_rmem", "/proc/sys/net/ipv4/tcp_rmem"),
    ("net.ipv4.tcp_wmem", "/proc/sys/net/ipv4/tcp_wmem"),
    (
        "net.core.netdev_max_backlog",
        "/proc/sys/net/core/netdev_max_backlog",
    ),
    ("vm.max_map_count", "/proc/sys/vm/max_map_count"),
    // Not a sysctl, but read the same way.
    ("meminfo", "/proc/meminfo"),
];

impl Snapshot {
    /// The slot holding sysctl `name` (dotted form, `net.core.somaxconn`).
    fn sysctl_slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "fs.nr_open" => &mut self.nr_open,
            "fs.file-max" => &mut self.file_max,
            "net.netfilter.nf_conntrack_max" => &mut self.nf_conntrack_max,
            "net.core.somaxconn" => &mut self.somaxconn,
            "net.ipv4.tcp_max_syn_backlog" => &mut self.tcp_max_syn_backlog,
            "net.ipv4.tcp_syncookies" => &mut self.tcp_syncookies,
            "net.ipv4.ip_local_port_range" => &mut self.ip_local_port_range,
            "net.ipv4.tcp_mem" => &mut self.tcp_mem,
            "net.ipv4.tcp_rmem" => &mut self.tcp_rmem,
            "net.ipv4.tcp_wmem" => &mut self.tcp_wmem,
            "net.core.netdev_max_backlog" => &mut self.netdev_max_backlog,
            "vm.max_map_count" => &mut self.max_map_count,
            "meminfo" => &mut self.meminfo,
            _ => return None,
        })
    }

    /// Overlays the settings of a `sysctl.d` file (`key = value` lines,
    /// `#`/`;` comments, `-` prefix for "ignore errors", `/` or `.` as
    /// separator) on this snapshot: what the check would say after
    /// `sysctl --system`. Returns the keys the check does not read, in file
    /// order, so a caller can spot typos.
    pub fn apply_sysctl_conf(&mut self, conf: &str) -> Vec<String> {
        let mut unread = Vec::new();
        for line in conf.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                unread.push(line.to_owned());
                continue;
            };
            let key = key.trim().trim_start_matches('-').replace('/', ".");
            match self.sysctl_slot(&key) {
                Some(slot) if key != "meminfo" => *slot = Some(value.trim().to_owned()),
                _ => unread.push(key),
            }
        }
        unread
    }
}

/// Reads this machine's limits into a [`Snapshot`]. Never fails: whatever
/// cannot be read stays `None` and is reported as `unknown`.
///
/// The process limits are those of the calling process: run the check
/// under the same limits as the server (for a systemd unit, e.g.
/// `systemd-run -p LimitNOFILE=... tern tune check ...`).
pub fn read_snapshot() -> Snapshot {
    let mut snap = Snapshot {
        nofile: sys::getrlimit(Resource::OpenFiles).ok(),
        memlock: sys::getrlimit(Resource::LockedMemory).ok(),
        cpus: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u64::try_from(n.get()).ok()),
        ..Snapshot::default()
    };
    for (name, path) in SYSCTL_FILES {
        if let Some(slot) = snap.sysctl_slot(name) {
            *slot = std::fs::read_to_string(path).ok();
        }
    }
    snap.kernel_page_size = std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|smaps| {
            smaps
                .lines()
                .find(|l| l.starts_with("KernelPageSize:"))
                .map(str::to_owned)
        });
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    snap.cgroup_memory_limit = crate::parse::cgroup_memory_limit_paths(&cgroup)
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok());
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_conf_overlay() {
        let mut snap = Snapshot::default();
        let unread = snap.apply_sysctl_conf(
            "# comment\n; also a comment\n\nfs.nr_open = 2097152\n\
             -net/core/somaxconn=4096\nnet.ipv4.tcp_mem = 1 2 3\n\
             net.ipv4.tcp_fin_timeout = 15\nmeminfo = 1\nnot a setting\n",
        );
        assert_eq!(snap.nr_open.as_deref(), Some("2097152"));
        assert_eq!(snap.somaxconn.as_deref(), Some("4096"));
        assert_eq!(snap.tcp_mem.as_deref(), Some("1 2 3"));
        assert_eq!(snap.meminfo, None, "meminfo is not a sysctl");
        assert_eq!(
            unread,
            vec![
                "net.ipv4.tcp_fin_timeout".to_owned(),
                "meminfo".to_owned(),
                "not a setting".to_owned()
            ]
        );
    }

    #[test]
    fn every_sysctl_file_has_a_slot() {
        let mut snap = Snapshot::default();
        for (name, _) in SYSCTL_FILES {
            assert!(snap.sysctl_slot(name).is_some(), "{name}");
        }
    }

    #[test]
    fn rlimit_allows() {
        assert!(RlimitValue::Unlimited.allows(u64::MAX));
        assert!(RlimitValue::Finite(20_000).allows(20_000));
        assert!(!RlimitValue::Finite(20_000).allows(20_001));
    }
}
