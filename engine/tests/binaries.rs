//! The shipped binaries together, as the README tells a person to use them:
//! `tern serve` on embedded defaults in a fresh data directory, two users
//! registering and chatting with `tern-chat`, then SIGTERM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `tern-chat` is built by the same `cargo test --workspace` run, next to
/// `tern` in the target directory.
fn tern_chat() -> PathBuf {
    let tern = PathBuf::from(env!("CARGO_BIN_EXE_tern"));
    let chat = tern.with_file_name("tern-chat");
    assert!(
        chat.exists(),
        "{} not built: run the workspace tests (cargo test --workspace)",
        chat.display()
    );
    chat
}

fn start_server(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut addr = None;
    while addr.is_none() && Instant::now() < deadline {
        let line = lines.next().unwrap().unwrap();
        if let Some(rest) = line.strip_prefix("tern: listening on ") {
            addr = Some(rest.split(' ').next().unwrap().to_string());
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        addr: addr.expect("server printed its address"),
        dir: dir.to_path_buf(),
    }
}

fn chat(server: &Server, key: &str, args: &[&str]) -> String {
    let out = Command::new(tern_chat())
        .arg("--server")
        .arg(&server.addr)
        .arg("--ca-cert")
        .arg(server.dir.join("tls/cert.pem"))
        .arg("--key-file")
        .arg(server.dir.join(key))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tern-chat {args:?} failed: {text}");
    text
}

fn pin(server: &Server, phone: &str) -> String {
    let outbox = std::fs::read_to_string(server.dir.join("sms-outbox.jsonl")).unwrap();
    let line = outbox.lines().rev().find(|l| l.contains(phone)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["pin"].as_str().unwrap().to_string()
}

fn register(server: &Server, key: &str, phone: &str) {
    chat(server, key, &["request-pin", "--phone", phone]);
    let pin = pin(server, phone);
    chat(server, key, &["verify", "--phone", phone, "--pin", &pin]);
}

#[test]
fn tern_serve_and_tern_chat_from_two_terminals() {
    let dir = std::env::temp_dir().join(format!("tern-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = start_server(&dir);
    assert!(
        dir.join("tls/cert.pem").exists(),
        "certificate made on first run"
    );
    register(&server, "alice.key", "+15557770001");
    register(&server, "bob.key", "+15557770002");

    let sent = chat(
        &server,
        "alice.key",
        &["send", "--to", "+15557770002", "hello from alice"],
    );
    assert!(sent.contains("✓ sent"), "{sent}");

    // Bob chats interactively: his queued message arrives, he answers.
    let mut bob = Command::new(tern_chat())
        .arg("--server")
        .arg(&server.addr)
        .arg("--ca-cert")
        .arg(dir.join("tls/cert.pem"))
        .arg("--key-file")
        .arg(dir.join("bob.key"))
        .args(["chat", "--to", "+15557770001"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = bob.stdin.take().unwrap();
        stdin.write_all(b"hi alice, got it\n").unwrap();
    } // EOF: chat ends once everything sent is acknowledged.
    let mut bob_out = String::new();
    bob.stdout
        .take()
        .unwrap()
        .read_to_string(&mut bob_out)
        .unwrap();
    assert!(bob.wait().unwrap().success());
    assert!(bob_out.contains("hello from alice"), "{bob_out}");
    assert!(bob_out.contains("✓ sent"), "{bob_out}");

    // Alice's next session shows the reply and the two check marks.
    let mut alice = Command::new(tern_chat())
        .arg("--server")
        .arg(&server.addr)
        .arg("--ca-cert")
        .arg(dir.join("tls/cert.pem"))
        .arg("--key-file")
        .arg(dir.join("alice.key"))
        .args(["chat", "--to", "+15557770002"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    drop(alice.stdin.take());
    let mut alice_out = String::new();
    alice
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut alice_out)
        .unwrap();
    let _ = alice.wait();
    assert!(alice_out.contains("hi alice, got it"), "{alice_out}");
    assert!(alice_out.contains("✓✓ delivered"), "{alice_out}");

    // SIGTERM: the server stops cleanly.
    let pid = server.child.id();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
