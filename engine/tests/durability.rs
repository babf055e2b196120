//! Invariant I1 end to end: what got a ServerAck survives a restart and a
//! kill -9 of the real server process; accounts and key replacement too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_client::{Client, ClientError, Credentials, DriverConfig, Event, MessageBody, Trust};
use tern_core::limits::Limits;
use tern_engine::server::{self, ServeOptions};

use support::{phones, T};

fn serve_in_process(dir: &Path) -> server::Started {
    server::serve(ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(2),
        pin_cores: Some(false),
        data_dir: dir.to_path_buf(),
        limits: Limits::default(),
        shutdown_grace_ms: 2_000,
        ..ServeOptions::default()
    })
    .unwrap()
}

fn client_for(addr: std::net::SocketAddr, dir: &Path, seed: u64) -> Client {
    let cfg = DriverConfig::new(addr.to_string(), Trust::CaFile(dir.join("tls/cert.pem")));
    Client::connect(cfg, seed).unwrap()
}

fn register(addr: std::net::SocketAddr, dir: &Path, phone: &str) -> Credentials {
    let mut c = client_for(addr, dir, 1);
    c.request_pin(phone, T).unwrap();
    let pin = tern_engine::sms::latest_pin_for(&dir.join("sms-outbox.jsonl"), phone).unwrap();
    c.verify_pin(phone, &pin, T).unwrap()
}

#[test]
fn queues_accounts_and_key_replacement_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("tern-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let p = phones(1557100, 2, 2, false);
    let started = serve_in_process(&dir);
    let addr = started.handle.local_addr();
    let ca = register(addr, &dir, &p[0]);
    let old_b = register(addr, &dir, &p[1]);
    let cb = register(addr, &dir, &p[1]);
    let mut a = client_for(addr, &dir, 100);
    a.login(&ca, T).unwrap();
    for i in 0..10 {
        a.send_text_acked(cb.user_id, &format!("m{i}"), T).unwrap();
    }
    a.close();
    started.stop();

    let started = serve_in_process(&dir);
    let addr = started.handle.local_addr();
    let mut stale = client_for(addr, &dir, 200);
    let err = stale.login(&old_b, T).unwrap_err();
    assert!(
        matches!(err, ClientError::Rejected { .. }),
        "replaced key stays dead: {err:?}"
    );
    let mut b = client_for(addr, &dir, 300);
    assert_eq!(b.login(&cb, T).unwrap(), 10);
    for i in 0..10 {
        let text = b
            .wait_for("message", T, |e| match e {
                Event::Message {
                    body: MessageBody::Text(t),
                    ..
                } => Some(Ok(t.clone())),
                _ => None,
            })
            .unwrap();
        assert_eq!(text, format!("m{i}"));
    }
    started.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real `tern serve` as a child process.
struct Proc {
    child: Child,
    addr: std::net::SocketAddr,
}

fn spawn_server(dir: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--no-pin-cores",
        ])
        .arg("--data-dir")
        .arg(dir)
        // Small segments: reclaim deletes and copies forward between and
        // during the kills, so its crash safety is tested too.
        .env("TERN_LOG_SEGMENT_BYTES_MAX", "65536")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(Instant::now() < deadline, "server did not start");
        let line = lines
            .next()
            .expect("server exited during start-up")
            .unwrap();
        if let Some(rest) = line.strip_prefix("tern: listening on ") {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Proc { child, addr }
}

/// What the senders and recipients saw, across all server lifetimes.
#[derive(Default)]
struct Ledger {
    /// pair -> highest message number acknowledged by the server, and all
    /// acknowledged numbers.
    acked: HashMap<usize, Vec<u64>>,
    /// pair -> highest number ever sent (acked or not).
    sent_max: HashMap<usize, u64>,
    /// pair -> numbers in the order they first reached the recipient.
    received: HashMap<usize, Vec<u64>>,
}

fn parse(text: &str) -> (usize, u64) {
    let (pair, n) = text.split_once(':').unwrap();
    (pair.parse().unwrap(), n.parse().unwrap())
}

/// Receives until `stop` (or, with `drain`, until quiet for a while).
fn receive(mut c: Client, pair: usize, ledger: &Mutex<Ledger>, stop: &AtomicBool, drain: bool) {
    let mut quiet_since = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match c.next_event(Duration::from_millis(50)) {
            Ok(Some(Event::Message {
                body: MessageBody::Text(t),
                ..
            })) => {
                quiet_since = Instant::now();
                let (p, n) = parse(&t);
                assert_eq!(p, pair);
                let mut l = ledger.lock().unwrap();
                let seen = l.received.entry(pair).or_default();
                if !seen.contains(&n) {
                    seen.push(n);
                }
            }
            Ok(_) => {
                if drain && quiet_since.elapsed() > Duration::from_millis(1_500) {
                    return;
                }
            }
            Err(_) => return, // server killed
        }
    }
}

fn send(mut c: Client, pair: usize, to: u64, ledger: &Mutex<Ledger>, stop: &AtomicBool) {
    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let n = {
            let mut l = ledger.lock().unwrap();
            let n = l.sent_max.entry(pair).or_default();
            *n += 1;
            *n
        };
        let Ok(cmid) = c.send_text(to, &format!("{pair}:{n}")) else {
            return;
        };
        in_flight.insert(cmid, n);
        // Collect acks without waiting for each one: load, not lockstep.
        while let Ok(Some(event)) = c.next_event(Duration::from_millis(1)) {
            if let Event::Acked { client_msg_id, .. } = event {
                if let Some(n) = in_flight.remove(&client_msg_id) {
                    ledger
                        .lock()
                        .unwrap()
                        .acked
                        .entry(pair)
                        .or_default()
                        .push(n);
                }
            }
        }
        if in_flight.len() > 200 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[test]
fn every_acked_message_survives_repeated_kill_9() {
    let kills: usize = std::env::var("TERN_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir: PathBuf = std::env::temp_dir().join(format!("tern-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Two pairs, each sender and recipient on different shards.
    let mut phones = phones(1557200, 2, 2, false);
    phones.extend(support::phones(1557300, 2, 2, false));
    let mut proc = spawn_server(&dir);
    let creds: Vec<Credentials> = phones
        .iter()
        .map(|p| register(proc.addr, &dir, p))
        .collect();
    // Pairs (sender, recipient): 0 -> 1 and 2 -> 3, across shards.
    let pairs = [(0usize, 1usize), (2, 3)];
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut next_rand = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for round in 0..=kills {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (pair, &(s, r)) in pairs.iter().enumerate() {
            let mut sender = client_for(
                proc.addr,
                &dir,
                (round as u64 + 1) << 40 | (pair as u64) << 32,
            );
            let mut recipient = client_for(proc.addr, &dir, 7);
            if sender.login(&creds[s], T).is_err() || recipient.login(&creds[r], T).is_err() {
                panic!("login failed in round {round}");
            }
            let to = creds[r].user_id;
            let (l1, l2, s1, s2) = (ledger.clone(), ledger.clone(), stop.clone(), stop.clone());
            let last = round == kills;
            threads.push(std::thread::spawn(move || {
                receive(recipient, pair, &l1, &s1, last)
            }));
            if !last {
                threads.push(std::thread::spawn(move || send(sender, pair, to, &l2, &s2)));
            }
        }
        if round == kills {
            // Final lifetime: no more load, recipients drain everything.
            for t in threads {
                t.join().unwrap();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100 + next_rand() % 400));
        proc.child.kill().unwrap(); // SIGKILL
        proc.child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        proc = spawn_server(&dir);
    }
    let _ = proc.child.kill();
    let _ = proc.child.wait();

    let l = ledger.lock().unwrap();
    let mut checked = 0usize;
    for pair in 0..pairs.len() {
        let received = l.received.get(&pair).cloned().unwrap_or_default();
        let acked = l.acked.get(&pair).cloned().unwrap_or_default();
        assert!(!acked.is_empty(), "pair {pair}: no message was ever acked");
        for n in &acked {
            assert!(received.contains(n), "pair {pair}: acked message {n} lost");
        }
        let sent_max = l.sent_max.get(&pair).copied().unwrap_or(0);
        assert!(
            received.iter().all(|n| *n <= sent_max),
            "pair {pair}: phantom message"
        );
        let mut sorted = received.clone();
        sorted.sort_unstable();
        assert_eq!(received, sorted, "pair {pair}: order broken (I2)");
        checked += acked.len();
    }
    println!(
        "crash test: {kills} kills, {checked} acked messages checked, {} received",
        l.received.values().map(Vec::len).sum::<usize>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
