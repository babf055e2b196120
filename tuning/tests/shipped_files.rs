//! The shipped sysctl file, systemd unit and docs/TUNING.md agree with what
//! the check asks for, so none of them can drift from the code.

use std::path::{Path, PathBuf};

use tern_tuning::{
    evaluate, sizing_markdown, Rlimit, RlimitValue, Scope, Sizing, Snapshot, Status, Target,
};

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn file(rel: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path(rel))
}

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

/// The development machine with kernel defaults (as read on 2026-11-24).
fn dev_machine() -> Snapshot {
    let limit = |v| {
        Some(Rlimit {
            soft: RlimitValue::Finite(v),
            hard: RlimitValue::Finite(v),
        })
    };
    Snapshot {
        nofile: limit(20_000),
        memlock: limit(8 << 20),
        nr_open: some("1048576"),
        file_max: some("2466183"),
        nf_conntrack_max: some("262144"),
        somaxconn: some("4096"),
        tcp_max_syn_backlog: some("2048"),
        tcp_syncookies: some("1"),
        ip_local_port_range: some("32768 60999"),
        tcp_mem: some("287901 383869 575802"),
        tcp_rmem: some("4096 131072 33554432"),
        tcp_wmem: some("4096 16384 4194304"),
        netdev_max_backlog: some("1000"),
        max_map_count: some("65530"),
        meminfo: some("MemAvailable:   24244752 kB\n"),
        cgroup_memory_limit: some("max"),
        kernel_page_size: some("KernelPageSize:        4 kB"),
        cpus: Some(16),
    }
}

/// `key = value` settings of a sysctl.d file, commented-out ones included.
fn sysctl_keys(conf: &str) -> Vec<String> {
    conf.lines()
        .map(|l| l.trim().trim_start_matches('#').trim_start_matches('-'))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, _)| k.trim().to_owned())
        .filter(|k| !k.contains(' ') && k.contains('.'))
        .collect()
}

#[test]
fn sysctl_file_satisfies_the_check_for_a_million() {
    let conf = file("sysctl.d/90-tern.conf").expect("90-tern.conf");
    for shards in [2, 16] {
        let mut snap = dev_machine();
        let unread = snap.apply_sysctl_conf(&conf);
        assert!(
            unread.is_empty(),
            "active keys the check does not read: {unread:?}"
        );
        let report = evaluate(
            &snap,
            Target {
                connections: 1_000_000,
                shards,
            },
        );
        // What is left is the process limits: the unit's job, not sysctl's.
        let short: Vec<&str> = report
            .findings
            .iter()
            .filter(|f| f.scope == Scope::Server && f.status != Status::Ok)
            .map(|f| f.name)
            .collect();
        assert_eq!(
            short,
            [
                "RLIMIT_NOFILE (soft)",
                "RLIMIT_NOFILE (hard)",
                "RLIMIT_MEMLOCK (soft)"
            ],
            "{report}"
        );
    }
}

#[test]
fn sysctl_file_names_only_real_keys() {
    let conf = file("sysctl.d/90-tern.conf").expect("90-tern.conf");
    let keys = sysctl_keys(&conf);
    assert!(keys.len() >= 14, "{keys:?}");
    for key in keys {
        if key.starts_with("net.netfilter.") {
            continue; // exists only while nf_conntrack is loaded
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        assert!(Path::new(&path).exists(), "{key}: no {path}");
    }
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .collect()
}

#[test]
fn systemd_unit_limits_cover_a_million_on_sixteen_shards() {
    let unit = file("systemd/tern.service").expect("tern.service");
    let sizing = Sizing::new(
        Target {
            connections: 1_000_000,
            shards: 16,
        },
        4096,
    );
    let nofile: u64 = unit_value(&unit, "LimitNOFILE")
        .first()
        .and_then(|v| v.parse().ok())
        .expect("LimitNOFILE=<number>");
    assert!(nofile >= sizing.fds_required, "{nofile}");
    assert!(
        nofile <= 1_048_576,
        "must fit the kernel's default fs.nr_open"
    );
    let memlock = unit_value(&unit, "LimitMEMLOCK");
    let mib: u64 = memlock
        .first()
        .and_then(|v| v.strip_suffix('M'))
        .and_then(|v| v.parse().ok())
        .expect("LimitMEMLOCK=<n>M");
    assert!(mib << 20 >= sizing.memlock_required_bytes, "{mib}M");
    assert_eq!(
        unit_value(&unit, "ExecStart"),
        ["/usr/local/bin/tern serve --data-dir /var/lib/tern"]
    );
    for line in [
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "StateDirectory=tern",
        "#CPUAffinity=0-15",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
}

#[test]
fn tuning_doc_has_the_current_sizing_table() {
    let doc = file("../docs/TUNING.md").expect("docs/TUNING.md");
    let table = sizing_markdown(&[100_000, 1_000_000, 2_000_000], 16);
    assert!(
        doc.contains(&table),
        "docs/TUNING.md must contain this table (regenerate it):\n{table}"
    );
    for needle in [
        "tern tune check --connections",
        "20,000",
        "LimitNOFILE",
        "fs.nr_open",
        "tcp_mem",
        "ip_local_port_range",
        "LimitMEMLOCK",
    ] {
        assert!(doc.contains(needle), "docs/TUNING.md lacks {needle:?}");
    }
}
