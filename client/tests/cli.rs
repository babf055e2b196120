//! The `tern-chat` binary end to end against the fake server over TLS on
//! 127.0.0.1: register, send, chat from stdin, listen with read receipts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::net::{self_signed, server_tls, temp_file, TestServer};
use common::{key_for, FakeServer, Got, InboxItem, ALICE, BOB};
use tern_client::{CertFingerprint, Credentials};
use tern_wire::ReceiptKind;

const BIN: &str = env!("CARGO_BIN_EXE_tern-chat");

fn tern_chat(server: &TestServer, pin: &CertFingerprint, key_file: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--server")
        .arg(server.addr.to_string())
        .arg("--pin-sha256")
        .arg(pin.to_colon_hex())
        .arg("--key-file")
        .arg(key_file)
        .arg("--timeout-s")
        .arg("5")
        .env_remove("TERN_SERVER")
        .env_remove("TERN_KEY_FILE");
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    let stdout = String::from_utf8(stdout).unwrap();
    assert!(
        status.success(),
        "{cmd:?} failed: {status}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

fn scratch_dir() -> PathBuf {
    temp_file("placeholder", "").parent().unwrap().to_path_buf()
}

#[test]
fn register_send_and_chat_from_stdin() {
    let cert = self_signed();
    let pin = CertFingerprint::of_der(&cert.der);
    let mut fake = FakeServer::new();
    fake.inbox.push(InboxItem::Message {
        id: 70,
        from: BOB,
        client_msg_id: 4,
        text: "hi alice".into(),
    });
    // request-pin, verify, send, chat: one connection each.
    let server = TestServer::start(Some(server_tls(&cert)), fake, 4);
    let dir = scratch_dir();
    let key_file = dir.join("alice.key");

    let out = run_ok(tern_chat(&server, &pin, &key_file).args([
        "request-pin",
        "--phone",
        "+15551230001",
    ]));
    assert!(
        out.starts_with("PIN sent to +15551230001 (6 digits, expires in 300 s)"),
        "{out}"
    );

    let out = run_ok(tern_chat(&server, &pin, &key_file).args([
        "verify",
        "--phone",
        "+15551230001",
        "--pin",
        common::PIN,
    ]));
    assert!(
        out.starts_with("registered as +15551230001 (device generation 1); key saved to"),
        "{out}"
    );
    let creds = Credentials::load(&key_file).unwrap();
    assert_eq!((creds.user_id, creds.key), (ALICE, key_for(ALICE, 1)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // `send` logs in; the queued message from Bob arrives too and is shown
    // (it is acknowledged, so it must not vanish unseen).
    let out = run_ok(tern_chat(&server, &pin, &key_file).args([
        "send",
        "--to",
        "+15551230002",
        "hello",
        "bob",
    ]));
    assert!(out.contains("✓ sent (server id 1000)"), "{out}");
    assert!(out.contains("+15551230002: hi alice"), "{out}");

    let mut child = tern_chat(&server, &pin, &key_file)
        .args(["chat", "--to", "+15551230002"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"first line\n\nsecond line\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.contains("✓ sent (server id 1001)"), "{out}");
    assert!(out.contains("✓ sent (server id 1002)"), "{out}");

    let fake = server.join();
    let texts: Vec<String> = fake
        .received
        .iter()
        .filter_map(|g| match g {
            Got::Send {
                body: tern_client::MessageBody::Text(t),
                to: BOB,
                ..
            } => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec!["hello bob", "first line", "second line"]);
    assert!(fake.received.contains(&Got::DeliverAck { id: 70 }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn listen_prints_messages_and_receipts_and_marks_read() {
    let cert = self_signed();
    let pin = CertFingerprint::of_der(&cert.der);
    let mut fake = FakeServer::with_user(ALICE);
    fake.inbox.push(InboxItem::Message {
        id: 80,
        from: BOB,
        client_msg_id: 12,
        text: "are you there?".into(),
    });
    fake.inbox.push(InboxItem::Receipt {
        id: 81,
        kind: ReceiptKind::Delivered,
        peer: BOB,
        client_msg_id: 5,
    });
    fake.inbox.push(InboxItem::Receipt {
        id: 82,
        kind: ReceiptKind::Read,
        peer: BOB,
        client_msg_id: 5,
    });
    let server = TestServer::start(Some(server_tls(&cert)), fake, 1);
    let dir = scratch_dir();
    let key_file = dir.join("alice.key");
    Credentials {
        user_id: ALICE,
        key: key_for(ALICE, 1),
        generation: 1,
    }
    .save(&key_file)
    .unwrap();

    let mut child = tern_chat(&server, &pin, &key_file)
        .args(["listen", "--mark-read"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while lines.len() < 3 {
        match lines_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => lines.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("listen printed only {lines:?}: {e}");
            }
        }
    }
    let marked = server.wait_until(Duration::from_secs(10), |got| {
        got.iter().any(|g| {
            matches!(
                g,
                Got::MarkRead {
                    to: BOB,
                    read_client_msg_id: 12,
                    ..
                }
            )
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(marked, "no read receipt reached the server");
    assert_eq!(lines[0], "[22:13:20Z] +15551230002: are you there?");
    assert_eq!(lines[1], "✓✓ delivered to +15551230002 (message 5)");
    assert_eq!(lines[2], "✓✓ read by +15551230002 (message 5)");
    let fake = server.join();
    assert_eq!(fake.deliver_acks(), vec![80, 81, 82]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_key_file_is_explained() {
    let output = Command::new(BIN)
        .args([
            "--insecure-plaintext",
            "--key-file",
            "/nonexistent/tern.key",
            "listen",
        ])
        .env_remove("TERN_SERVER")
        .env_remove("TERN_KEY_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8(output.stderr).unwrap();
    assert!(err.contains("register first"), "{err}");
}
