//! Smoke runs of the load generator against a real server started in this
//! process (`tern_engine::server::serve`, 127.0.0.1:0, temp data dir,
//! limits relaxed so hundreds of users can register through the real PIN
//! path). They assert that messages flowed and that nothing acknowledged
//! was lost, duplicated or misordered. No timing thresholds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tern_core::limits::{Limits, Rate};
use tern_engine::server::{self, ServeOptions, Started, TlsChoice};
use tern_loadgen::{Mode, RunOptions, Scenario, TrustChoice};

struct Server {
    started: Option<Started>,
    dir: PathBuf,
}

impl Server {
    fn start(tag: &str, tls: bool) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tern-loadgen-smoke-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let limits = Limits {
            pin_requests_per_source: Rate::new(1_000_000, 1_000),
            pin_requests_per_phone: Rate::new(1_000, 1_000),
            inbox_len_max: 100_000,
            ..Limits::default()
        };
        let opts = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: Some(2),
            pin_cores: Some(false),
            data_dir: dir.join("data"),
            limits,
            shutdown_grace_ms: 2_000,
            tls: if tls {
                ServeOptions::default().tls
            } else {
                TlsChoice::InsecurePlaintext
            },
            ..ServeOptions::default()
        };
        Self {
            started: Some(server::serve(opts).unwrap()),
            dir,
        }
    }

    fn started(&self) -> &Started {
        self.started.as_ref().unwrap()
    }

    fn addr(&self) -> String {
        self.started().handle.local_addr().to_string()
    }

    fn outbox(&self) -> PathBuf {
        self.started().sms_outbox.clone().unwrap()
    }

    fn cert(&self) -> PathBuf {
        self.started().tls.as_ref().unwrap().cert_path.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.started.take() {
            s.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The binary, two worker processes, TLS, 200 connections for 3 s, with
/// offline recipients and read receipts: every acked message arrives once
/// and in order, and the JSON report has the documented shape.
#[test]
fn binary_two_procs_over_tls_loses_nothing() {
    let server = Server::start("bin", true);
    let report_path = server.dir.join("report.json");
    let keys = server.dir.join("keys.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_tern-loadgen"))
        .args(["--server", &server.addr()])
        .arg("--ca-cert")
        .arg(server.cert())
        .arg("--sms-outbox")
        .arg(server.outbox())
        .arg("--keys-cache")
        .arg(&keys)
        .arg("--json")
        .arg(&report_path)
        .args([
            "--connections",
            "200",
            "--duration",
            "3",
            "--procs",
            "2",
            "--outstanding",
            "4",
            "--offline-fraction",
            "0.1",
            "--offline",
            "1",
            "--read-receipts",
            "--conns-per-source-ip",
            "60",
            "--server-shards",
            "2",
            "--drain-timeout",
            "20",
            "--quiet",
        ])
        .args(["--server-pid", &std::process::id().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("check          OK"), "{stdout}");
    let r = read_json(&report_path);
    assert_eq!(r["schema"], "tern-loadgen/1");
    assert_eq!(r["ok"], true);
    assert_eq!(r["procs"], 2);
    assert_eq!(r["source_ips"], 4, "100 users per worker, 60 per address");
    assert_eq!(r["provisioning"]["registered"], 200);
    assert_eq!(r["connections"]["up"], 200);
    assert_eq!(r["connections"]["failed"], 0);
    // 10% of the 200 recipients went offline and came back.
    assert!(
        r["connections"]["reconnects"].as_u64().unwrap() >= 20,
        "{r}"
    );
    let check = &r["check"];
    assert_eq!(check["flows"], 200);
    assert_eq!(check["lost"], 0);
    assert_eq!(check["duplicated"], 0);
    assert_eq!(check["misordered"], 0);
    assert_eq!(check["receipts_missing"], 0);
    assert_eq!(check["reads_missing"], 0);
    let acked = check["acked"].as_u64().unwrap();
    assert!(acked > 0, "messages flowed");
    assert_eq!(check["delivered"].as_u64().unwrap(), acked);
    assert!(r["throughput"]["messages_per_s"].as_f64().unwrap() > 0.0);
    for name in ["connect", "login", "ack", "deliver", "receipt", "read"] {
        assert!(
            r["latency_us"][name]["count"].as_u64().unwrap() > 0,
            "{name} histogram empty"
        );
    }
    assert!(r["server"]["cpu_us_per_message"].as_f64().unwrap() > 0.0);
    assert!(r["cross_shard"]["pairs"] == 100);
    // The key cache now holds every user, readable by the owner only.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::read_to_string(&keys).unwrap().lines().count(), 200);
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The library entry point, one in-process worker, plaintext, open loop;
/// a second run logs in with the cached keys instead of registering.
#[test]
fn library_open_loop_plaintext_reuses_cached_keys() {
    let server = Server::start("lib", false);
    let keys = server.dir.join("keys.jsonl");
    let scenario = Scenario {
        server: server.addr(),
        trust: TrustChoice::InsecurePlaintext,
        connections: 40,
        mode: Mode::Open,
        rate_per_s: 2_000.0,
        duration_s: 1.5,
        sms_outbox: Some(server.outbox()),
        keys_cache: Some(keys.clone()),
        progress: false,
        drain_timeout_s: 20.0,
        ..Scenario::default()
    };
    let first = tern_loadgen::run(&scenario, &RunOptions::default()).unwrap();
    assert!(first.ok, "{}", first.table());
    assert_eq!(first.provisioning.registered, 40);
    assert_eq!(first.connections.up, 40);
    assert!(first.check.acked > 0);
    assert_eq!(first.check.lost, 0);
    assert_eq!(first.check.misordered, 0);
    assert_eq!(first.check.duplicated, 0);
    assert!(first.totals.delivered >= first.check.acked);

    let second = tern_loadgen::run(&scenario, &RunOptions::default()).unwrap();
    assert!(second.ok, "{}", second.table());
    assert_eq!(second.provisioning.registered, 0);
    assert_eq!(second.provisioning.cached, 40);
    assert_eq!(second.connections.up, 40);
    assert!(second.check.acked > 0);
    assert_eq!(second.check.lost, 0);
    // Nothing from the first run is left to arrive.
    assert_eq!(second.totals.stale, 0);
}

/// Cached keys the server does not know (its data was reset) are replaced
/// by registering again on the same connection; the run then proceeds.
#[test]
fn stale_cached_keys_are_replaced_by_registering_again() {
    let server = Server::start("stale", false);
    let keys = server.dir.join("keys.jsonl");
    let base = 15_550_000_000u64;
    let mut text = String::new();
    for u in 0..20u64 {
        text.push_str(&format!(
            "{{\"phone\":\"+{id}\",\"user_id\":{id},\"key\":\"{key}\",\"generation\":1}}\n",
            id = base + u,
            key = "ab".repeat(32)
        ));
    }
    std::fs::write(&keys, text).unwrap();
    let scenario = Scenario {
        server: server.addr(),
        trust: TrustChoice::InsecurePlaintext,
        connections: 20,
        phone_base: base,
        duration_s: 1.0,
        sms_outbox: Some(server.outbox()),
        keys_cache: Some(keys.clone()),
        progress: false,
        ..Scenario::default()
    };
    let r = tern_loadgen::run(&scenario, &RunOptions::default()).unwrap();
    assert!(r.ok, "{}", r.table());
    assert_eq!(r.provisioning.cached, 20, "all 20 came from the cache");
    assert_eq!(r.connections.up, 20);
    assert_eq!(r.errors.get("login:LoginFailed"), Some(&20));
    assert!(r.check.acked > 0);
    assert_eq!(r.check.lost, 0);
    // The cache now holds the new, working keys.
    let cached = std::fs::read_to_string(&keys).unwrap();
    assert_eq!(cached.lines().count(), 20);
    assert!(!cached.contains(&"ab".repeat(32)));
}
