//! The check on this machine's real limits. On the development machines
//! open files are capped at 20,000 per process (shared NOTES), so a million
//! connections must come out short with a LimitNOFILE / nr_open fix.

use tern_tuning::{check, read_snapshot, FixKind, Status};

/// Soft and hard "Max open files" from /proc/self/limits: a second way to
/// read what getrlimit returns.
fn open_files_from_proc() -> Option<(Option<u64>, Option<u64>)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut words = line.trim_start_matches("Max open files").split_whitespace();
    let value = |w: Option<&str>| w.and_then(|w| w.parse::<u64>().ok());
    Some((value(words.next()), value(words.next())))
}

#[test]
fn a_million_connections_are_short_of_open_files_here() {
    let report = check(1_000_000, 2);
    println!("{report}");
    let need = report.sizing.fds_required;
    assert_eq!(need, 1_001_152);
    let (soft, hard) = open_files_from_proc().expect("Max open files in /proc/self/limits");

    for (name, limit) in [
        ("RLIMIT_NOFILE (soft)", soft),
        ("RLIMIT_NOFILE (hard)", hard),
    ] {
        let f = report.finding(name).expect(name);
        // getrlimit and /proc/self/limits agree ("unlimited" parses to None).
        assert_eq!(
            f.current.replace(',', "").parse::<u64>().ok(),
            limit,
            "{name}: {}",
            f.current
        );
        let short = limit.is_some_and(|l| l < need);
        assert_eq!(f.status == Status::Short, short, "{name}: {f:?}");
        if short {
            assert!(
                f.fixes
                    .iter()
                    .any(|x| x.line.contains("LimitNOFILE") || x.line.contains("nr_open")),
                "{name}: {:?}",
                f.fixes
            );
        }
    }
    if hard.is_some_and(|h| h < need) {
        assert!(report.has_short());
        assert!(report
            .fix_lines(FixKind::SystemdUnit)
            .iter()
            .any(|l| l.starts_with("LimitNOFILE=")));
        let table = report.render_table();
        assert!(
            table.contains("SHORT    RLIMIT_NOFILE (hard)"),
            "the table shows the cap as short:\n{table}"
        );
    }
    // On the development machines (hard cap 20,000) this is the case.
    if hard == Some(20_000) {
        let f = report.finding("RLIMIT_NOFILE (hard)").expect("hard");
        assert_eq!(f.status, Status::Short);
        assert_eq!(f.current, "20,000");
    }
}

#[test]
fn this_machine_is_readable() {
    let snap = read_snapshot();
    assert!(snap.nofile.is_some(), "getrlimit(RLIMIT_NOFILE)");
    assert!(snap.memlock.is_some(), "getrlimit(RLIMIT_MEMLOCK)");
    assert!(snap.cpus.is_some_and(|c| c >= 1));
    let report = tern_tuning::evaluate(
        &snap,
        tern_tuning::Target {
            connections: 1_000,
            shards: 1,
        },
    );
    // Everything a Linux machine has in /proc is read and understood; only
    // the connection-tracking table may be absent (then "not loaded").
    let unknown: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.status == Status::Unknown)
        .map(|f| (f.name, f.current.clone()))
        .collect();
    assert!(unknown.is_empty(), "{unknown:?}");
    assert!(report.sizing.page_size_bytes.is_power_of_two());
    let json = report.to_json().expect("json");
    assert!(json.contains("\"fds_required\""));
}
