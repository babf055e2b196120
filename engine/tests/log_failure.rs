//! A shard whose log write fails is poisoned, end to end through the real
//! `tern serve` binary: it says so loudly, answers Sends with
//! `ShardUnavailable`, acknowledges nothing it could not store, turns
//! `/readyz` to 503 and exports `tern_shard_poisoned 1`; a restart recovers
//! everything that was acknowledged before the failure, and nothing after it.
//!
//! How the disk is made to fail, without privileges: RLIMIT_FSIZE. Once the
//! server runs, the test lowers the child's file-size limit to 1 byte with
//! prlimit(2), which a user may do to its own processes (root included:
//! nothing bypasses the soft limit). Linux then fails every `pwrite` at a
//! file position at or past the limit with EFBIG, with nothing written, even
//! inside a preallocated segment: the log's next write fails. So this drives
//! the WRITE path itself (the poison cause is `op: Write`), not segment
//! creation. The kernel also sends SIGXFSZ, whose default action kills the
//! process; the server is started through `sh -c 'trap "" XFSZ; exec ...'`
//! so it runs with SIGXFSZ ignored (ignored signals stay ignored across
//! exec) and sees the error instead, as a server on a full disk would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rustix::process::{prlimit, Pid, Resource, Rlimit};
use tern_client::{Client, Credentials, DriverConfig, Event, MessageBody, Trust};
use tern_wire::ErrorCode;

use support::{http_get, T};

/// Deadline for an event the test waits for (start-up, a log line, a
/// metric after its next tick). Generous: it is never reached when things
/// work.
const WAIT: Duration = Duration::from_secs(30);

/// The real `tern serve` as a child process, its output read line by line.
struct Server {
    child: Child,
    addr: SocketAddr,
    ops: SocketAddr,
    lines: Receiver<String>,
    /// Every output line read so far, for failure messages.
    seen: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `tern serve` on one shard with SIGXFSZ ignored (see the module
    /// docs) and the operations endpoint on an ephemeral port.
    fn start(dir: &Path) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"trap "" XFSZ; exec "$0" "$@""#)
            .arg(env!("CARGO_BIN_EXE_tern"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--shards",
                "1",
                "--no-pin-cores",
                "--set",
                "ops.http_listen=127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The banner goes to stderr, tracing's log lines to stdout: read
        // both, and keep draining them so the server never blocks on a
        // full pipe.
        let (tx, lines) = mpsc::channel();
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for output in [stdout, stderr] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        let mut server = Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            ops: "0.0.0.0:0".parse().unwrap(),
            lines,
            seen: Vec::new(),
        };
        let line = server.wait_line("tern: listening on ");
        server.addr = after(&line, "tern: listening on ").parse().unwrap();
        let line = server.wait_line("tern: operations endpoint http://");
        let url = after(&line, "tern: operations endpoint http://");
        server.ops = url.trim_end_matches("/metrics").parse().unwrap();
        server
    }

    /// The first output line from now on that contains `needle`.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {needle:?} in the output; saw:\n{}",
                        self.seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "server exited before {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn client(&self, dir: &Path, seed: u64) -> Client {
        let cfg = DriverConfig::new(
            self.addr.to_string(),
            Trust::CaFile(dir.join("tls/cert.pem")),
        );
        Client::connect(cfg, seed).unwrap()
    }

    fn register(&self, dir: &Path, phone: &str) -> Credentials {
        let mut c = self.client(dir, 1);
        c.request_pin(phone, T).unwrap();
        let pin = tern_engine::sms::latest_pin_for(&dir.join("sms-outbox.jsonl"), phone).unwrap();
        let creds = c.verify_pin(phone, &pin, T).unwrap();
        c.close();
        creds
    }

    /// Waits until the metric series `series` (name and labels) reads
    /// `value` (metrics are published once per tick).
    fn wait_metric(&self, series: &str, value: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, text) = http_get(self.ops, "/metrics");
            let got = metric(&text, series);
            if got == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} is {got:?}, waited for {value}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&self, status: u16) {
        let deadline = Instant::now() + WAIT;
        while http_get(self.ops, "/readyz").0 != status {
            assert!(Instant::now() < deadline, "/readyz never {status}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The value of one series (name and labels) in Prometheus text.
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn after<'a>(line: &'a str, prefix: &str) -> &'a str {
    let rest = &line[line.find(prefix).unwrap() + prefix.len()..];
    rest.split(' ').next().unwrap()
}

/// From now on every write of the server at a file position >= 1 fails
/// with EFBIG.
fn fail_file_writes(child: &Child) {
    let one_byte = Rlimit {
        current: Some(1),
        maximum: Some(1),
    };
    prlimit(Some(Pid::from_child(child)), Resource::Fsize, one_byte)
        .expect("prlimit(RLIMIT_FSIZE) on our own child");
}

#[test]
fn a_failed_log_write_poisons_the_shard_and_acks_nothing_after_it() {
    let dir: PathBuf = std::env::temp_dir().join(format!("tern-logfail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = Server::start(&dir);
    let alice = server.register(&dir, "+15557880001");
    let bob = server.register(&dir, "+15557880002");
    let mut a = server.client(&dir, 100);
    a.login(&alice, T).unwrap();
    a.send_text_acked(bob.user_id, "before the failure", T)
        .unwrap();
    server.wait_ready(200);
    server.wait_metric("tern_shard_poisoned{shard=\"0\"}", 0);

    fail_file_writes(&server.child);
    let in_flight = a
        .send_text(bob.user_id, "in flight at the failure")
        .unwrap();

    // Loudly: the poison cause is the failed write, with the kernel's error.
    let line = server.wait_line("SHARD POISONED");
    assert!(line.contains("op: Write"), "{line}");
    assert!(line.contains("os_code: Some(27)"), "EFBIG expected: {line}");

    // Sends now get ShardUnavailable, and nothing is ever acknowledged.
    let after_failure = a.send_text(bob.user_id, "after the failure").unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no ShardUnavailable for the Send");
        match a.next_event(left).unwrap() {
            Some(Event::ServerError {
                code: ErrorCode::ShardUnavailable,
                client_msg_id,
                fatal: false,
                ..
            }) if client_msg_id == after_failure => break,
            Some(Event::Acked { client_msg_id, .. }) => panic!(
                "ServerAck for {client_msg_id} after the log failed \
                 (in flight {in_flight}, after {after_failure})"
            ),
            // The session's own events (a HelloOk left from connecting),
            // the in-flight message's retries answered ShardUnavailable.
            Some(_) | None => {}
        }
    }
    server.wait_ready(503);
    server.wait_metric("tern_shard_poisoned{shard=\"0\"}", 1);
    // The Send answered above, and maybe retries of the one in flight.
    let refused = "tern_errors_total{shard=\"0\",code=\"shard_unavailable\"}";
    let deadline = Instant::now() + WAIT;
    while metric(&http_get(server.ops, "/metrics").1, refused) < Some(1) {
        assert!(Instant::now() < deadline, "{refused} never counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    while let Some(event) = a.next_event(Duration::ZERO).unwrap() {
        assert!(
            !matches!(event, Event::Acked { .. }),
            "ServerAck after the log failed: {event:?}"
        );
    }
    a.close();

    // kill -9 and start again (with no file-size limit): what was acked is
    // there; the write that failed wrote nothing, so neither later message is.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let server = Server::start(&dir);
    server.wait_ready(200);
    let mut b = server.client(&dir, 200);
    assert_eq!(b.login(&bob, T).unwrap(), 1, "exactly the acked message");
    let text = b
        .wait_for("message", T, |e| match e {
            Event::Message {
                body: MessageBody::Text(t),
                ..
            } => Some(Ok(t.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(text, "before the failure");
    server.wait_metric("tern_shard_poisoned{shard=\"0\"}", 0);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
