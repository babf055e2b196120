//! SMS gateways against real endpoints: the HTTP gateway against a local
//! HTTP/1.1 receiver on 127.0.0.1, the outbox gateway against a real file
//! with concurrent appenders.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tern_engine::sms::{
    latest_pin_for, read_outbox, HttpGateway, HttpGatewayConfig, OutboxGateway, SmsError,
    SmsGateway, SmsMessage,
};

/// One request as the receiver saw it.
#[derive(Debug)]
struct Recorded {
    method: String,
    target: String,
    /// Lower-cased header names.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// How the receiver answers.
#[derive(Clone, Copy)]
enum Answer {
    /// Status line + a body of this many bytes.
    Status(u16, usize),
    /// Read the request, then say nothing and hold the socket open.
    Silent,
}

/// A tiny HTTP/1.1 receiver: serves `conns` connections (one request each)
/// then exits. Requests are sent on the returned channel.
struct Receiver {
    url: String,
    requests: mpsc::Receiver<Recorded>,
    /// Dropping this releases sockets held by `Answer::Silent`.
    _release: mpsc::Sender<()>,
}

fn start_receiver(answer: Answer, conns: usize) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (req_tx, req_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        for _ in 0..conns {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let Some(req) = read_request(&stream) else {
                continue;
            };
            let _ = req_tx.send(req);
            match answer {
                Answer::Status(code, body_len) => {
                    let mut w = &stream;
                    let head = format!(
                        "HTTP/1.1 {code} Test\r\nContent-Type: text/plain\r\n\
                         Content-Length: {body_len}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = w.write_all(head.as_bytes());
                    // The client may stop reading a long body: ignore EPIPE.
                    let _ = w.write_all(&vec![b'x'; body_len]);
                    let _ = w.flush();
                }
                Answer::Silent => {
                    // Hold the connection (never answer) until the test ends.
                    let _ = release_rx.recv_timeout(Duration::from_secs(30));
                    drop(stream);
                }
            }
        }
    });
    Receiver {
        url: format!("http://127.0.0.1:{port}/v1/sms?src=tern"),
        requests: req_rx,
        _release: release_tx,
    }
}

/// Reads the request line, headers and a Content-Length body.
fn read_request(stream: &TcpStream) -> Option<Recorded> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    assert_eq!(parts.next()?, "HTTP/1.1");
    let mut headers = HashMap::new();
    for _ in 0..100 {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .map_or(0, |v| v.parse().unwrap());
    assert!(len <= 64 * 1024, "receiver body cap");
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        target,
        headers,
        body,
    })
}

fn gateway(url: &str, token: Option<&str>, timeout_ms: u64) -> HttpGateway {
    let mut cfg = HttpGatewayConfig::new(url);
    cfg.bearer_token = token.map(str::to_owned);
    cfg.timeout_ms = timeout_ms;
    HttpGateway::new(cfg).unwrap()
}

fn msg(phone: &str, pin: &str) -> SmsMessage {
    SmsMessage::pin_code(phone, pin, 10)
}

#[test]
fn http_post_success_sends_json_and_bearer() {
    let rx = start_receiver(Answer::Status(200, 2), 1);
    let gw = gateway(&rx.url, Some("tok-123"), 5_000);
    gw.send_pin(&msg("+15550001111", "482913")).unwrap();

    let req = rx.requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/v1/sms?src=tern");
    assert_eq!(req.headers["authorization"], "Bearer tok-123");
    assert_eq!(req.headers["content-type"], "application/json");
    assert!(req.headers["host"].starts_with("127.0.0.1:"));
    let json: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "to": "+15550001111",
            "text": "Your Tern code is 482913. It expires in 10 minutes."
        })
    );
}

#[test]
fn http_without_token_sends_no_authorization() {
    let rx = start_receiver(Answer::Status(204, 0), 1);
    let gw = gateway(&rx.url, None, 5_000);
    gw.send_pin(&msg("+447700900123", "000001")).unwrap();
    let req = rx.requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(!req.headers.contains_key("authorization"));
    let json: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(json["to"], "+447700900123");
}

#[test]
fn http_non_2xx_is_status_error() {
    for code in [500u16, 404, 429, 302] {
        let rx = start_receiver(Answer::Status(code, 17), 1);
        let gw = gateway(&rx.url, Some("t"), 5_000);
        let err = gw.send_pin(&msg("+15550002222", "111111")).unwrap_err();
        match err {
            SmsError::Status(got) => assert_eq!(got, code),
            other => panic!("status {code}: unexpected {other:?}"),
        }
        // The request did reach the receiver exactly once (no redirect, no retry).
        rx.requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(rx
            .requests
            .recv_timeout(Duration::from_millis(100))
            .is_err());
    }
}

#[test]
fn http_large_response_bodies_are_bounded_not_fatal() {
    // 1 MiB answers: the gateway reads at most a few KiB of them.
    let rx = start_receiver(Answer::Status(200, 1024 * 1024), 1);
    gateway(&rx.url, None, 5_000)
        .send_pin(&msg("+15550003333", "222222"))
        .unwrap();
    let rx = start_receiver(Answer::Status(500, 1024 * 1024), 1);
    let err = gateway(&rx.url, None, 5_000)
        .send_pin(&msg("+15550003333", "222222"))
        .unwrap_err();
    assert!(matches!(err, SmsError::Status(500)), "{err:?}");
}

#[test]
fn http_silent_receiver_times_out() {
    let rx = start_receiver(Answer::Silent, 1);
    let gw = gateway(&rx.url, None, 300);
    let started = Instant::now();
    let err = gw.send_pin(&msg("+15550004444", "333333")).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, SmsError::Timeout), "{err:?}");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The request was fully sent before the receiver went silent.
    let req = rx.requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(req.method, "POST");
}

#[test]
fn http_connection_refused_is_transport_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // listener dropped: nothing listens on `port` now
    let gw = gateway(&format!("http://127.0.0.1:{port}/sms"), None, 2_000);
    let started = Instant::now();
    let err = gw.send_pin(&msg("+15550005555", "444444")).unwrap_err();
    assert!(matches!(err, SmsError::Transport(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().starts_with("SMS gateway transport error"));
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "tern-sms-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn outbox_concurrent_appends_never_interleave() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 200;
    let dir = TempDir::new("concurrent");
    // Two independent gateway instances on the same file, two threads each.
    let gateways = [
        Arc::new(OutboxGateway::new(&dir.0)),
        Arc::new(OutboxGateway::new(&dir.0)),
    ];
    let path = gateways[0].path().to_path_buf();
    assert_eq!(path, dir.0.join("sms-outbox.jsonl"));
    assert!(!path.exists(), "created on first use only");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let gw = Arc::clone(&gateways[t % 2]);
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let phone = format!("+1555{t:03}{i:04}");
                    // A long text makes a torn or interleaved line likely to show.
                    let mut m = msg(&phone, &format!("{t}{i:05}"));
                    m.text.push_str(&" padding".repeat(64));
                    gw.send_pin(&m).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }

    let raw = std::fs::read_to_string(&path).unwrap();
    assert!(raw.ends_with('\n'));
    assert_eq!(raw.lines().count(), THREADS * PER_THREAD);
    for line in raw.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
        assert!(line.starts_with("{\"ts_ms\":"), "field order: {line}");
    }
    let entries = read_outbox(&path);
    assert_eq!(entries.len(), THREADS * PER_THREAD);
    let phones: BTreeSet<_> = entries.iter().map(|e| e.phone.as_str()).collect();
    assert_eq!(phones.len(), THREADS * PER_THREAD);
    // Each thread's own lines stay in its order.
    for t in 0..THREADS {
        let pins: Vec<_> = entries
            .iter()
            .filter(|e| e.phone.starts_with(&format!("+1555{t:03}")))
            .map(|e| e.pin.clone())
            .collect();
        let expected: Vec<_> = (0..PER_THREAD).map(|i| format!("{t}{i:05}")).collect();
        assert_eq!(pins, expected);
    }
    for e in &entries {
        assert!(e.text.starts_with(&format!("Your Tern code is {}.", e.pin)));
    }
}

#[test]
fn outbox_latest_pin_is_the_newest() {
    let dir = TempDir::new("latest");
    let gw = OutboxGateway::new(&dir.0);
    gw.send_pin(&msg("+15550006666", "100001")).unwrap();
    gw.send_pin(&msg("+15550007777", "200002")).unwrap();
    gw.send_pin(&msg("+15550006666", "100003")).unwrap();
    assert_eq!(
        latest_pin_for(gw.path(), "+15550006666").as_deref(),
        Some("100003")
    );
    assert_eq!(
        latest_pin_for(gw.path(), "+15550007777").as_deref(),
        Some("200002")
    );
    assert_eq!(latest_pin_for(gw.path(), "+15550008888"), None);
    let entries = read_outbox(gw.path());
    assert_eq!(entries.len(), 3);
    assert!(entries.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));

    // The file may be removed (rotated) at any time: the next SMS recreates it.
    std::fs::remove_file(gw.path()).unwrap();
    gw.send_pin(&msg("+15550006666", "100004")).unwrap();
    assert_eq!(read_outbox(gw.path()).len(), 1);
    assert_eq!(
        latest_pin_for(gw.path(), "+15550006666").as_deref(),
        Some("100004")
    );
}
