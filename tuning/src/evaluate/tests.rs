use super::*;
use crate::report::Summary;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn target(connections: u64, shards: u16) -> Target {
    Target {
        connections,
        shards,
    }
}

fn million() -> Target {
    target(1_000_000, 2)
}

fn rlimit(soft: u64, hard: u64) -> Option<Rlimit> {
    Some(Rlimit {
        soft: RlimitValue::Finite(soft),
        hard: RlimitValue::Finite(hard),
    })
}

fn t(text: &str) -> Option<String> {
    Some(text.to_owned())
}

fn meminfo_available(bytes: u64) -> Option<String> {
    Some(format!(
        "MemTotal:       {} kB\nMemFree:        1000 kB\nMemAvailable:   {} kB\n",
        bytes / 1024 + 1000,
        bytes / 1024
    ))
}

/// A machine tuned for a million connections on 2 shards.
fn good() -> Snapshot {
    Snapshot {
        nofile: rlimit(1_048_576, 1_048_576),
        memlock: Some(Rlimit {
            soft: RlimitValue::Unlimited,
            hard: RlimitValue::Unlimited,
        }),
        nr_open: t("1048576\n"),
        file_max: t("9223372036854775807\n"),
        nf_conntrack_max: None,
        somaxconn: t("4096\n"),
        tcp_max_syn_backlog: t("4096\n"),
        tcp_syncookies: t("1\n"),
        ip_local_port_range: t("1024\t65535\n"),
        tcp_mem: t("1048576\t1572864\t2097152\n"),
        tcp_rmem: t("4096\t16384\t4194304\n"),
        tcp_wmem: t("4096\t16384\t4194304\n"),
        netdev_max_backlog: t("16384\n"),
        max_map_count: t("262144\n"),
        meminfo: meminfo_available(32 * GIB),
        cgroup_memory_limit: t("max\n"),
        kernel_page_size: t("KernelPageSize:        4 kB"),
        cpus: Some(2),
    }
}

/// The development machine as measured (shared NOTES, /proc on 2026-11-24).
fn dev_machine() -> Snapshot {
    Snapshot {
        nofile: rlimit(20_000, 20_000),
        memlock: rlimit(8 * MIB, 8 * MIB),
        nr_open: t("1048576\n"),
        file_max: t("2466183\n"),
        nf_conntrack_max: t("262144\n"),
        somaxconn: t("4096\n"),
        tcp_max_syn_backlog: t("2048\n"),
        tcp_syncookies: t("1\n"),
        ip_local_port_range: t("32768\t60999\n"),
        tcp_mem: t("287901\t383869\t575802\n"),
        tcp_rmem: t("4096\t131072\t33554432\n"),
        tcp_wmem: t("4096\t16384\t4194304\n"),
        netdev_max_backlog: t("1000\n"),
        max_map_count: t("65530\n"),
        meminfo: t("MemTotal:       24684096 kB\nMemAvailable:   24244752 kB\n"),
        cgroup_memory_limit: t("9223372036854771712\n"),
        kernel_page_size: t("KernelPageSize:        4 kB"),
        cpus: Some(2),
    }
}

fn names_with(report: &Report, scope: Scope, status: Status) -> Vec<&'static str> {
    report
        .findings
        .iter()
        .filter(|f| f.scope == scope && f.status == status)
        .map(|f| f.name)
        .collect()
}

fn fix_text(report: &Report, name: &str) -> String {
    report
        .finding(name)
        .unwrap_or_else(|| panic!("no finding {name}"))
        .fixes
        .iter()
        .map(|f| f.line.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

const SERVER_FINDINGS: usize = 15;

#[test]
fn tuned_machine_is_ok_for_a_million() {
    let report = evaluate(&good(), million());
    assert_eq!(report.findings.len(), SERVER_FINDINGS + 1);
    assert_eq!(
        report.summary(),
        Summary {
            ok: SERVER_FINDINGS,
            short: 0,
            unknown: 0,
            load_generator_short: 1,
        },
        "{report}"
    );
    assert!(!report.has_short());
    for f in report.findings.iter().filter(|f| f.scope == Scope::Server) {
        assert!(f.fixes.is_empty(), "{}: ok findings carry no fix", f.name);
        assert!(!f.current.is_empty() && !f.required.is_empty() && !f.why.is_empty());
    }
    // A million connections from one load-generator address cannot fit in
    // 64,512 ports: it needs 16 source addresses.
    let ports = report
        .finding("net.ipv4.ip_local_port_range")
        .expect("port range finding");
    assert_eq!(ports.scope, Scope::LoadGenerator);
    assert_eq!(ports.status, Status::Short);
    assert!(fix_text(&report, "net.ipv4.ip_local_port_range").contains("16 source addresses"));
    assert!(report.fix_lines(FixKind::Sysctl).is_empty());
}

#[test]
fn small_target_is_ok_everywhere() {
    let report = evaluate(&good(), target(50_000, 2));
    assert_eq!(report.summary().short, 0);
    assert_eq!(report.summary().load_generator_short, 0);
    let report = evaluate(&dev_machine(), target(10_000, 2));
    assert_eq!(
        names_with(&report, Scope::Server, Status::Short),
        ["RLIMIT_MEMLOCK (soft)"]
    );
    let report = evaluate(&dev_machine(), target(0, 1));
    assert_eq!(
        names_with(&report, Scope::Server, Status::Short),
        ["RLIMIT_MEMLOCK (soft)"]
    );
}

/// One limit lowered at a time: exactly the expected findings turn short,
/// with the expected fix lines.
#[test]
fn each_limit_short() {
    type Mutation = fn(&mut Snapshot);
    let cases: Vec<(Mutation, Vec<&str>, &str)> = vec![
        (
            |s| s.nofile = rlimit(20_000, 1_048_576),
            vec!["RLIMIT_NOFILE (soft)"],
            "ulimit -n 1048576",
        ),
        (
            |s| s.nofile = rlimit(20_000, 20_000),
            vec!["RLIMIT_NOFILE (soft)", "RLIMIT_NOFILE (hard)"],
            "LimitNOFILE=1048576",
        ),
        (
            |s| s.nr_open = t("1000000"),
            vec!["fs.nr_open"],
            "fs.nr_open = 1048576",
        ),
        (
            |s| s.file_max = t("100000"),
            vec!["fs.file-max"],
            "fs.file-max = 2097152",
        ),
        (
            |s| s.nf_conntrack_max = t("262144"),
            vec!["net.netfilter.nf_conntrack_max"],
            "net.netfilter.nf_conntrack_max = 2097152",
        ),
        (
            |s| s.somaxconn = t("128"),
            vec!["net.core.somaxconn"],
            "net.core.somaxconn = 4096",
        ),
        (
            |s| s.tcp_max_syn_backlog = t("512"),
            vec!["net.ipv4.tcp_max_syn_backlog"],
            "net.ipv4.tcp_max_syn_backlog = 4096",
        ),
        (
            |s| s.tcp_syncookies = t("0"),
            vec!["net.ipv4.tcp_syncookies"],
            "net.ipv4.tcp_syncookies = 1",
        ),
        (
            // Pressure too low, high fine.
            |s| s.tcp_mem = t("1 2 4000000"),
            vec!["net.ipv4.tcp_mem"],
            "net.ipv4.tcp_mem = 899903 1199870 4000000",
        ),
        (
            // High below a million × (4 KiB + 4 KiB) = 2,000,000 pages.
            |s| s.tcp_mem = t("1048576 1572864 1900000"),
            vec!["tcp_rmem/tcp_wmem floor"],
            "net.ipv4.tcp_mem = 1048576 1572864 2000000",
        ),
        (
            |s| s.netdev_max_backlog = t("1000"),
            vec!["net.core.netdev_max_backlog"],
            "net.core.netdev_max_backlog = 16384",
        ),
        (
            |s| s.max_map_count = t("1000"),
            vec!["vm.max_map_count"],
            "vm.max_map_count = 65530",
        ),
        (
            |s| s.memlock = rlimit(8 * MIB, 8 * MIB),
            vec!["RLIMIT_MEMLOCK (soft)"],
            "LimitMEMLOCK=62M",
        ),
        (
            |s| s.meminfo = meminfo_available(2 * GIB),
            vec!["memory"],
            "add memory",
        ),
        (
            |s| s.cgroup_memory_limit = t("1073741824"),
            vec!["memory"],
            "MemoryMax=5565M",
        ),
        (|s| s.cpus = Some(1), vec!["cpus"], "--shards 1"),
    ];
    for (mutate, expected, fix) in cases {
        let mut snap = good();
        mutate(&mut snap);
        let report = evaluate(&snap, million());
        let short = names_with(&report, Scope::Server, Status::Short);
        assert_eq!(short, expected, "{report}");
        assert!(names_with(&report, Scope::Server, Status::Unknown).is_empty());
        assert!(report.has_short());
        let fixes: String = expected.iter().map(|n| fix_text(&report, n)).collect();
        assert!(
            fixes.contains(fix),
            "{expected:?}: {fix:?} not in {fixes:?}"
        );
    }
}

#[test]
fn development_machine_for_a_million() {
    let report = evaluate(&dev_machine(), million());
    assert_eq!(
        names_with(&report, Scope::Server, Status::Short),
        [
            "RLIMIT_NOFILE (soft)",
            "RLIMIT_NOFILE (hard)",
            "net.netfilter.nf_conntrack_max",
            "net.ipv4.tcp_mem",
            "tcp_rmem/tcp_wmem floor",
            "net.core.netdev_max_backlog",
            "RLIMIT_MEMLOCK (soft)",
        ],
        "{report}"
    );
    let hard = report.finding("RLIMIT_NOFILE (hard)").expect("hard");
    assert_eq!(hard.current, "20,000");
    assert_eq!(hard.required, "≥ 1,001,152");
    // nr_open (1,048,576) already allows the recommended limit: no sysctl.
    assert_eq!(
        fix_text(&report, "RLIMIT_NOFILE (hard)"),
        "LimitNOFILE=1048576\ntern  -  nofile  1048576"
    );
    // Both tcp_mem findings want the same line; it is listed once.
    let sysctl = report.fix_lines(FixKind::Sysctl);
    assert_eq!(
        sysctl,
        [
            "net.netfilter.nf_conntrack_max = 2097152",
            "net.ipv4.tcp_mem = 899903 1199870 2000000",
            "net.core.netdev_max_backlog = 16384",
        ]
    );
    assert_eq!(
        report.fix_lines(FixKind::SystemdUnit),
        ["LimitNOFILE=1048576", "LimitMEMLOCK=62M"]
    );
    let memory = report.finding("memory").expect("memory");
    assert_eq!(memory.status, Status::Ok);
    assert_eq!(memory.current, "23.1 GiB available");
}

#[test]
fn two_million_needs_nr_open_raised() {
    let report = evaluate(&dev_machine(), target(2_000_000, 2));
    let nr_open = report.finding("fs.nr_open").expect("nr_open");
    assert_eq!(nr_open.status, Status::Short);
    assert_eq!(fix_text(&report, "fs.nr_open"), "fs.nr_open = 2097152");
    // The open-files findings name nr_open too: LimitNOFILE alone would fail.
    let soft = fix_text(&report, "RLIMIT_NOFILE (soft)");
    assert!(
        soft.starts_with("fs.nr_open = 2097152\nLimitNOFILE=2097152"),
        "{soft}"
    );
}

#[test]
fn nr_open_between_need_and_power_of_two_is_used_as_is() {
    let mut snap = dev_machine();
    snap.nr_open = t("1010000");
    let report = evaluate(&snap, million());
    assert_eq!(
        report.finding("fs.nr_open").map(|f| f.status),
        Some(Status::Ok)
    );
    assert!(fix_text(&report, "RLIMIT_NOFILE (soft)").contains("LimitNOFILE=1010000"));
}

#[test]
fn memlock_below_glommio_minimum_says_it_will_not_start() {
    let mut snap = good();
    snap.memlock = rlimit(64 << 10, 64 << 10);
    let report = evaluate(&snap, million());
    let f = report.finding("RLIMIT_MEMLOCK (soft)").expect("memlock");
    assert_eq!(f.status, Status::Short);
    assert!(f.why.contains("refuses to start"), "{}", f.why);
    assert_eq!(f.current, "64.0 KiB (hard 64.0 KiB)");
    let mut snap = good();
    snap.memlock = rlimit(8 * MIB, 8 * MIB);
    let report = evaluate(&snap, million());
    let f = report.finding("RLIMIT_MEMLOCK (soft)").expect("memlock");
    assert!(!f.why.contains("refuses to start"));
    assert!(fix_text(&report, "RLIMIT_MEMLOCK (soft)").contains("ulimit -l 63488"));
}

#[test]
fn cgroup_limit_below_available_memory_is_what_counts() {
    let mut snap = good();
    snap.cgroup_memory_limit = t("8589934592\n");
    let report = evaluate(&snap, million());
    let f = report.finding("memory").expect("memory");
    assert_eq!(f.status, Status::Ok);
    assert_eq!(f.current, "8.0 GiB (cgroup limit)");
}

#[test]
fn unparseable_values_are_unknown() {
    let junk = || t("lots\n");
    let snap = Snapshot {
        nofile: None,
        memlock: None,
        nr_open: junk(),
        file_max: junk(),
        nf_conntrack_max: junk(),
        somaxconn: t("-1"),
        tcp_max_syn_backlog: t(""),
        tcp_syncookies: t("1 1"),
        ip_local_port_range: t("60999 32768"),
        tcp_mem: t("1 2"),
        tcp_rmem: t("4096 16384"),
        tcp_wmem: junk(),
        netdev_max_backlog: t("99999999999999999999999"),
        max_map_count: t("0x1000"),
        meminfo: t("MemTotal: 100 kB\n"),
        cgroup_memory_limit: junk(),
        kernel_page_size: t("KernelPageSize: 3 kB"),
        cpus: None,
    };
    let report = evaluate(&snap, million());
    for f in &report.findings {
        assert_eq!(f.status, Status::Unknown, "{}: {}", f.name, f.current);
        assert!(
            !f.fixes.is_empty(),
            "{}: unknown findings say what to set",
            f.name
        );
    }
    assert_eq!(report.summary().unknown, SERVER_FINDINGS);
    assert!(!report.has_short(), "unknown is not short");
    let f = report.finding("fs.nr_open").expect("nr_open");
    assert_eq!(f.current, "unparseable: \"lots\"");
    assert!(fix_text(&report, "fs.nr_open").contains("sysctl fs.nr_open"));
    assert_eq!(
        report.finding("memory").map(|f| f.current.as_str()),
        Some("no MemAvailable in /proc/meminfo")
    );
}

#[test]
fn empty_snapshot_is_unknown_except_absent_conntrack() {
    let report = evaluate(&Snapshot::default(), million());
    let unknown = names_with(&report, Scope::Server, Status::Unknown);
    assert_eq!(unknown.len(), SERVER_FINDINGS - 1);
    assert_eq!(
        names_with(&report, Scope::Server, Status::Ok),
        ["net.netfilter.nf_conntrack_max"],
        "no conntrack file means conntrack is not loaded"
    );
    assert_eq!(
        report
            .finding("RLIMIT_NOFILE (soft)")
            .map(|f| f.current.as_str()),
        Some("getrlimit failed")
    );
}

#[test]
fn page_size_unknown_makes_only_page_counts_unknown() {
    let mut snap = good();
    snap.kernel_page_size = None;
    let report = evaluate(&snap, million());
    assert_eq!(
        names_with(&report, Scope::Server, Status::Unknown),
        ["net.ipv4.tcp_mem", "tcp_rmem/tcp_wmem floor"]
    );
    assert_eq!(report.sizing.page_size_bytes, PAGE_SIZE_BYTES_ASSUMED);
}

#[test]
fn large_pages_shrink_page_counts() {
    let mut snap = good();
    snap.kernel_page_size = t("KernelPageSize:       64 kB");
    snap.tcp_mem = t("60000 70000 130000");
    let report = evaluate(&snap, million());
    // 3,686,000,000 B / 64 KiB = 56,244 pages; floors 8 KiB × 1M / 64 KiB = 125,000.
    assert_eq!(report.sizing.tcp_mem_pressure_pages, 56_244);
    assert_eq!(report.summary().short, 0, "{report}");
}

/// Whatever the kernel says and whatever the target, evaluate answers with
/// the same findings and never panics.
#[test]
fn never_panics_on_odd_input() {
    let odd = [
        "",
        "\n",
        "0",
        "-5",
        "18446744073709551615",
        "18446744073709551616",
        "1 2 3 4",
        "0 0 0",
        "65535 1024",
        "é ∞",
        "KernelPageSize: 0 kB",
        "MemAvailable: 18446744073709551615 kB",
    ];
    let targets = [
        target(0, 0),
        target(1, 1),
        million(),
        target(u64::MAX, u16::MAX),
    ];
    for text in odd {
        let v = t(text);
        let snap = Snapshot {
            nofile: rlimit(0, 0),
            memlock: rlimit(0, u64::MAX),
            nr_open: v.clone(),
            file_max: v.clone(),
            nf_conntrack_max: v.clone(),
            somaxconn: v.clone(),
            tcp_max_syn_backlog: v.clone(),
            tcp_syncookies: v.clone(),
            ip_local_port_range: v.clone(),
            tcp_mem: v.clone(),
            tcp_rmem: v.clone(),
            tcp_wmem: v.clone(),
            netdev_max_backlog: v.clone(),
            max_map_count: v.clone(),
            meminfo: v.clone(),
            cgroup_memory_limit: v.clone(),
            kernel_page_size: v,
            cpus: Some(0),
        };
        for tg in targets {
            let report = evaluate(&snap, tg);
            assert_eq!(report.findings.len(), SERVER_FINDINGS + 1);
            for f in &report.findings {
                assert!(
                    f.status == Status::Ok || !f.fixes.is_empty(),
                    "{text:?} {tg:?} {}: no fix",
                    f.name
                );
            }
            assert!(report.render_table().contains("Server:"));
            assert!(report.to_json().is_ok());
        }
    }
}

#[test]
fn table_shows_rows_reasons_and_fixes() {
    let report = evaluate(&dev_machine(), million());
    let table = report.render_table();
    assert!(table.starts_with("Tern tuning check: 1,000,000 connections on 2 shards\n"));
    let row = table
        .lines()
        .find(|l| l.contains("RLIMIT_NOFILE (hard)"))
        .expect("hard row");
    assert!(row.starts_with("SHORT"), "{row}");
    assert!(
        row.contains("20,000") && row.ends_with("≥ 1,001,152"),
        "{row}"
    );
    assert!(table.contains("fix (tern.service [Service]): LimitNOFILE=1048576"));
    assert!(table.contains("fix (/etc/sysctl.d/90-tern.conf, then `sysctl --system`): net.core.netdev_max_backlog = 16384"));
    assert!(table.contains("Load generator hosts (not needed on the server)"));
    let ok_row = table
        .lines()
        .find(|l| l.contains("fs.nr_open"))
        .expect("nr_open row");
    assert!(ok_row.starts_with("ok "), "{ok_row}");
    assert!(table.contains("Server: 7 short, 0 unknown, 8 ok. Load generator: 1 short."));
    assert_eq!(format!("{report}"), table);
}

#[test]
fn json_has_target_summary_sizing_and_findings() {
    let report = evaluate(&dev_machine(), million());
    let json = report.to_json().expect("json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["target"]["connections"], 1_000_000);
    assert_eq!(v["target"]["shards"], 2);
    assert_eq!(v["summary"]["short"], 7);
    assert_eq!(v["sizing"]["fds_required"], 1_001_152);
    assert_eq!(v["sizing"]["tcp_mem_pressure_pages"], 899_903);
    let first = &v["findings"][0];
    assert_eq!(first["name"], "RLIMIT_NOFILE (soft)");
    assert_eq!(first["scope"], "server");
    assert_eq!(first["status"], "short");
    assert_eq!(first["fixes"][0]["kind"], "systemd_unit");
    assert_eq!(first["fixes"][0]["line"], "LimitNOFILE=1048576");
    let last = &v["findings"][SERVER_FINDINGS];
    assert_eq!(last["scope"], "load_generator");
    assert_eq!(
        v["findings"].as_array().map(Vec::len),
        Some(SERVER_FINDINGS + 1)
    );
}
