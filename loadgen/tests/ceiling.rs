//! The raw worker against real servers started in this process: the
//! ceiling target (tern-ceiling, closed and open loop, TLS and plaintext)
//! and the handshake mode (against tern-ceiling and a Tern server). They
//! assert that frames flowed and nothing was lost, duplicated or
//! misordered, and that the report has the documented fields. No timing
//! thresholds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::Command;

use tern_ceiling::{Config, Handle, Limits};
use tern_engine::server::{self, ServeOptions, Started};
use tern_loadgen::{Mode, Pairing, RunOptions, Scenario, Target, TrustChoice};

struct Ceiling {
    handle: Option<Handle>,
    cert: Option<PathBuf>,
    dir: PathBuf,
}

impl Ceiling {
    fn start(tag: &str, tls: bool, cores: usize) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tern-loadgen-ceiling-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let identity = tls.then(|| tern_engine::tls::load_or_generate(&dir, &[]).unwrap());
        let handle = tern_ceiling::start(Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            shared_port: false,
            cores,
            pin_cores: false,
            tls: identity
                .as_ref()
                .map(|id| tern_engine::tls::server_config(id).unwrap()),
            limits: Limits::default(),
        })
        .unwrap();
        Self {
            handle: Some(handle),
            cert: identity.map(|id| id.cert_path),
            dir,
        }
    }

    fn handle(&self) -> &Handle {
        self.handle.as_ref().unwrap()
    }

    fn addr(&self) -> String {
        self.handle().addrs()[0].to_string()
    }

    fn trust(&self) -> TrustChoice {
        match &self.cert {
            Some(c) => TrustChoice::CaCert(c.clone()),
            None => TrustChoice::InsecurePlaintext,
        }
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The binary, two worker processes, TLS, the ceiling on two cores (two
/// ports), closed loop: every message is delivered once and in order and
/// its receipt frame comes back; the report names the target.
#[test]
fn binary_closed_loop_against_the_ceiling_over_tls() {
    let c = Ceiling::start("bin", true, 2);
    let report_path = c.dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tern-loadgen"))
        .args(["--target", "ceiling", "--server-ports", "2"])
        .args(["--server", &c.addr()])
        .arg("--ca-cert")
        .arg(c.cert.as_ref().unwrap())
        .arg("--json")
        .arg(&report_path)
        .args([
            "--connections",
            "200",
            "--duration",
            "2",
            "--procs",
            "2",
            "--outstanding",
            "4",
            "--conns-per-source-ip",
            "60",
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
    assert!(stdout.contains("target Ceiling on 2 ports"), "{stdout}");
    assert!(stdout.contains("check          OK"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(r["scenario"]["target"], "ceiling");
    assert_eq!(r["scenario"]["server_ports"], 2);
    assert_eq!(r["provisioning"]["registered"], 0);
    assert_eq!(r["connections"]["up"], 200);
    let check = &r["check"];
    assert_eq!(check["flows"], 200);
    assert_eq!(check["lost"], 0);
    assert_eq!(check["duplicated"], 0);
    assert_eq!(check["misordered"], 0);
    assert_eq!(check["receipts_missing"], 0);
    assert!(check["acked"].as_u64().unwrap() > 0, "messages flowed");
    assert_eq!(check["delivered"], check["acked"]);
    assert!(r["throughput"]["messages_per_s"].as_f64().unwrap() > 0.0);
    for name in ["connect", "pair", "deliver", "receipt"] {
        assert!(
            r["latency_us"][name]["count"].as_u64().unwrap() > 0,
            "{name} histogram empty"
        );
    }
    assert_eq!(r["errors"], serde_json::json!({}));
    assert!(r["server"]["cpu_us_per_message"].as_f64().unwrap() > 0.0);
    // Both cores paired half of the connections.
    let stats = c.handle().stats();
    assert_eq!(stats.pairs, 100, "{stats:?}");
}

/// The library entry point, one worker, plaintext: open loop, then
/// one-way pairing in a closed loop.
#[test]
fn library_open_loop_and_one_way_against_the_ceiling() {
    let c = Ceiling::start("lib", false, 1);
    let base = Scenario {
        target: Target::Ceiling,
        server: c.addr(),
        trust: c.trust(),
        connections: 40,
        duration_s: 1.0,
        progress: false,
        ..Scenario::default()
    };
    let open = Scenario {
        mode: Mode::Open,
        rate_per_s: 2_000.0,
        ..base.clone()
    };
    let r = tern_loadgen::run(&open, &RunOptions::default()).unwrap();
    assert!(r.ok, "{}", r.table());
    assert!(r.check.acked > 0);
    assert_eq!(r.check.lost, 0);
    assert_eq!(r.totals.delivered, r.totals.receipts);
    assert_eq!(r.totals.stale, 0);
    let one_way = Scenario {
        pairing: Pairing::OneWay,
        // The same ids pair again: the first run's connections are gone.
        ..base
    };
    let r = tern_loadgen::run(&one_way, &RunOptions::default()).unwrap();
    assert!(r.ok, "{}", r.table());
    assert_eq!(r.check.flows, 20);
    assert!(r.check.acked > 0);
    assert_eq!(r.check.lost, 0);
}

fn tern_server(tag: &str) -> (Started, PathBuf) {
    let dir = std::env::temp_dir().join(format!("tern-loadgen-hs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(2),
        pin_cores: Some(false),
        data_dir: dir.join("data"),
        shutdown_grace_ms: 2_000,
        ..ServeOptions::default()
    };
    (server::serve(opts).unwrap(), dir)
}

fn handshakes(server: String, ports: u32, trust: TrustChoice) -> tern_loadgen::Report {
    let s = Scenario {
        mode: Mode::Handshake,
        server,
        server_ports: ports,
        trust,
        connections: 4,
        duration_s: 1.0,
        progress: false,
        ..Scenario::default()
    };
    tern_loadgen::run(&s, &RunOptions::default()).unwrap()
}

/// Handshake mode completes real TLS 1.3 handshakes against a Tern server
/// and against the ceiling, and reports them.
#[test]
fn handshake_mode_against_tern_and_the_ceiling() {
    let (tern, dir) = tern_server("tern");
    let cert = tern.tls.as_ref().unwrap().cert_path.clone();
    let r = handshakes(
        tern.handle.local_addr().to_string(),
        1,
        TrustChoice::CaCert(cert),
    );
    tern.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(r.throughput.handshakes > 0, "{}", r.table());
    assert!(r.throughput.handshakes_per_s > 0.0);
    assert!(r.errors.is_empty(), "{}", r.table());
    assert!(r.table().contains("handshakes     "), "{}", r.table());
    assert!(r.latency_us["handshake"].count >= r.throughput.handshakes);

    let c = Ceiling::start("hs", true, 2);
    let r = handshakes(c.addr(), 2, c.trust());
    assert!(r.throughput.handshakes > 0, "{}", r.table());
    assert!(r.errors.is_empty(), "{}", r.table());
    // Every handshake reached the ceiling (both ports) and none paired.
    let stats = c.handle().stats();
    assert!(stats.accepted >= r.throughput.handshakes, "{stats:?}");
    assert_eq!(stats.hellos, 0);
}
