//! The operations HTTP endpoint on a real glommio executor, fetched with a
//! plain std client: status codes, metrics text, slowloris and oversized
//! heads; and alert webhooks received by a local HTTP receiver.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use tern_engine::ops::alerts::{
    fire_webhook, AlertError, AlertEvent, AlertRule, AlertRules, AlertSettings, AlertState,
    AlertWatcher, Alerts, QueueKind,
};
use tern_engine::ops::http::{self, HttpLimits, OpsState};
use tern_engine::ops::metrics::{Metrics, ShardGauges};
use tern_wire::ErrorCode;

const T: Duration = Duration::from_secs(10);

/// The endpoint on its own glommio executor thread; stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(state: Arc<OpsState>) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stop2 = Arc::clone(&stop);
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name("ops-http-test")
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let task = glommio::spawn_local(http::serve(listener, state));
                while !stop2.load(Ordering::SeqCst) {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
                drop(task);
            })
            .unwrap();
        let addr = rx.recv_timeout(T).unwrap();
        Server {
            addr,
            stop,
            thread: Some(std::thread::spawn(move || {
                handle.join().unwrap();
            })),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

struct HttpAnswer {
    status: u16,
    head: String,
    body: String,
}

fn send_raw(addr: SocketAddr, raw: &[u8]) -> HttpAnswer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(raw).unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    parse_answer(&bytes)
}

fn parse_answer(bytes: &[u8]) -> HttpAnswer {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    HttpAnswer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> HttpAnswer {
    send_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: ops-test\r\n\r\n").as_bytes(),
    )
}

#[test]
fn endpoints_answer_with_the_right_status_and_metrics() {
    let metrics = Metrics::new(2);
    let state = OpsState::new(Arc::clone(&metrics));
    let server = Server::start(Arc::clone(&state));

    let h = get(server.addr, "/healthz");
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
    assert!(h.head.contains("Connection: close"));

    // Not ready until the runtime says so.
    assert_eq!(get(server.addr, "/readyz").status, 503);
    state.ready.store(true, Ordering::Release);
    assert_eq!(get(server.addr, "/readyz").status, 200);
    state.ready.store(false, Ordering::Release);
    assert_eq!(get(server.addr, "/readyz").status, 503);

    // Counters moved by the "runtime" show up in the scrape.
    let s1 = metrics.shard(1).unwrap();
    s1.logins.add(5);
    s1.record_error(ErrorCode::QueueFull);
    s1.send_ack_latency_us.record(300);
    s1.set_gauges(&ShardGauges {
        connections: 12,
        queue_items: 34,
        ..ShardGauges::default()
    });
    let m = get(server.addr, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.head.contains("Content-Type: text/plain; version=0.0.4"));
    let content_length: usize = m
        .head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(content_length, m.body.len());
    for line in [
        "tern_logins_total{shard=\"1\"} 5",
        "tern_logins_total{shard=\"0\"} 0",
        "tern_errors_total{shard=\"1\",code=\"queue_full\"} 1",
        "tern_connections{shard=\"1\"} 12",
        "tern_offline_queue_items{shard=\"1\"} 34",
        "tern_send_ack_latency_seconds_bucket{shard=\"1\",le=\"0.0005\"} 1",
        "tern_send_ack_latency_seconds_count{shard=\"1\"} 1",
    ] {
        assert!(m.body.lines().any(|l| l == line), "missing {line}");
    }

    // HEAD: same head, no body. Query strings are ignored.
    let head = send_raw(server.addr, b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    assert_eq!(get(server.addr, "/").status, 404);
    assert_eq!(get(server.addr, "/metrics/x").status, 404);
    let post = send_raw(
        server.addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(post.status, 405);
    assert!(post.head.contains("Allow: GET, HEAD"));
    assert_eq!(send_raw(server.addr, b"garbage\r\n\r\n").status, 400);
}

#[test]
fn a_slow_client_is_dropped_after_the_read_timeout() {
    let state = OpsState::with(
        Metrics::new(1),
        Arc::new(AtomicBool::new(true)),
        HttpLimits {
            read_timeout_ms: 300,
            ..HttpLimits::default()
        },
    );
    let server = Server::start(state);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let start = Instant::now();
    // Headers that never end, one byte now and then.
    s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
    let mut writer = s.try_clone().unwrap();
    let dripper = std::thread::spawn(move || {
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(50));
            if writer.write_all(b"a").is_err() {
                break;
            }
        }
    });
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let elapsed = start.elapsed();
    dripper.join().unwrap();
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_900), "{elapsed:?}");
    assert_eq!(parse_answer(&bytes).status, 408);

    // The endpoint still serves others.
    assert_eq!(get(server.addr, "/healthz").status, 200);
}

#[test]
fn an_oversized_head_gets_431() {
    let state = OpsState::with(
        Metrics::new(1),
        Arc::new(AtomicBool::new(true)),
        HttpLimits {
            header_bytes_max: 1024,
            ..HttpLimits::default()
        },
    );
    let server = Server::start(state);
    let big = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "b".repeat(4096)
    );
    assert_eq!(send_raw(server.addr, big.as_bytes()).status, 431);
    // Just under the bound is served.
    let fits = format!(
        "GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(900)
    );
    assert_eq!(send_raw(server.addr, fits.as_bytes()).status, 200);
}

/// A one-thread HTTP receiver: answers 200 to every POST and hands the
/// JSON body to the test.
fn receiver() -> (String, mpsc::Receiver<serde_json::Value>, Arc<AtomicU64>) {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let posts = Arc::new(AtomicU64::new(0));
    let posts2 = Arc::clone(&posts);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            assert!(request_line.starts_with("POST /hook "), "{request_line}");
            let mut len = 0usize;
            let mut json = false;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if l == "content-type: application/json" {
                    json = true;
                }
            }
            assert!(json, "webhook is not sent as JSON");
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            let mut w = stream;
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            posts2.fetch_add(1, Ordering::SeqCst);
            if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                return;
            }
        }
    });
    (url, rx, posts)
}

#[test]
fn webhook_receives_firing_and_clearing_events() {
    let (url, rx, _) = receiver();
    let rule = AlertRule {
        threshold: 100,
        duration_ms: 1_000,
    };
    let mut alerts = Alerts::new(AlertRules {
        shard_queue: rule,
        ..AlertRules::default()
    });
    let k = QueueKind::ShardQueue;
    assert!(alerts.observe(2, k, 150, 10_000).is_none());
    let firing = alerts.observe(2, k, 180, 11_000).unwrap();
    fire_webhook(&url, &firing, 5_000).unwrap();
    let j = rx.recv_timeout(T).unwrap();
    assert_eq!(j["alert"], "tern_queue_length");
    assert_eq!(j["state"], "firing");
    assert_eq!(j["shard"], 2);
    assert_eq!(j["queue"], "shard_queue");
    assert_eq!(j["value"], 180);
    assert_eq!(j["threshold"], 100);
    assert_eq!(j["since_ms"], 10_000);

    let cleared = alerts.observe(2, k, 40, 12_000).unwrap();
    fire_webhook(&url, &cleared, 5_000).unwrap();
    let j = rx.recv_timeout(T).unwrap();
    assert_eq!(j["state"], "cleared");
    assert_eq!(j["value"], 40);
    let back: AlertEvent = serde_json::from_value(j).unwrap();
    assert_eq!(back, cleared);
    assert_eq!(back.state, AlertState::Cleared);

    // A receiver that is not there is a transport error, not a hang.
    let dead = StdListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/", dead.local_addr().unwrap());
    drop(dead);
    assert!(matches!(
        fire_webhook(&dead_url, &cleared, 2_000),
        Err(AlertError::Transport(_) | AlertError::Timeout)
    ));
}

static FAKE_NOW_MS: AtomicU64 = AtomicU64::new(0);

fn fake_now() -> u64 {
    FAKE_NOW_MS.load(Ordering::SeqCst)
}

#[test]
fn watcher_fires_on_a_backlog_in_the_gauges_and_clears() {
    let (url, rx, posts) = receiver();
    let metrics = Metrics::new(2);
    let settings = AlertSettings {
        rules: AlertRules {
            user_queue: AlertRule {
                threshold: 10,
                duration_ms: 500,
            },
            ..AlertRules::default()
        },
        webhook_url: Some(url),
        webhook_timeout_ms: 5_000,
    };
    let watcher = AlertWatcher::spawn(Arc::clone(&metrics), settings, 20, fake_now).unwrap();
    let shard = metrics.shard(1).unwrap();
    // A user on shard 1 stops reading: its queue grows past the threshold.
    FAKE_NOW_MS.store(1_000, Ordering::SeqCst);
    shard.queue_longest_items.set(11);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(posts.load(Ordering::SeqCst), 0, "fired before the duration");
    assert!(!shard.alert_firing(QueueKind::UserQueue));
    FAKE_NOW_MS.store(1_500, Ordering::SeqCst);
    let j = rx.recv_timeout(T).unwrap();
    assert_eq!(
        (
            j["state"].as_str(),
            j["shard"].as_u64(),
            j["queue"].as_str()
        ),
        (Some("firing"), Some(1), Some("user_queue"))
    );
    assert!(shard.alert_firing(QueueKind::UserQueue));
    assert!(!metrics.shard(0).unwrap().alert_firing(QueueKind::UserQueue));
    // The recipient reads: back under the threshold.
    shard.queue_longest_items.set(3);
    let j = rx.recv_timeout(T).unwrap();
    assert_eq!(j["state"], "cleared");
    assert!(!shard.alert_firing(QueueKind::UserQueue));
    watcher.stop();
    // Fired once, cleared once.
    assert_eq!(posts.load(Ordering::SeqCst), 2);
}

/// Every metric family the registry renders is described in
/// docs/OPERATIONS.md, so the metrics reference cannot silently fall behind.
#[test]
fn every_metric_is_documented() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/OPERATIONS.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let text = tern_engine::ops::render_prometheus(&Metrics::new(1));
    let mut families = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is not in docs/OPERATIONS.md"
            );
            families += 1;
        }
    }
    assert!(families >= 25, "{families}");
}
