//! The operator surface of a real running server after real traffic:
//! /metrics counters move, a real backlog fires a queue-length alert at a
//! webhook receiver and clears it, and `tern ctl` commands reach the shards.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use tern_client::{ClientError, Event, KickReason};
use tern_core::limits::Limits;
use tern_engine::ops::admin::{admin_request, Reply, Request, Response};
use tern_engine::ops::alerts::{AlertRule, AlertRules, AlertSettings};
use tern_engine::server::OpsOptions;

use support::{http_get, phones, TestServer, T};

/// Sum of a metric over its shard series.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn ops(alerts: Option<AlertSettings>, dir_hint: &str) -> OpsOptions {
    OpsOptions {
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_socket: Some(
            std::env::temp_dir().join(format!("tern-admin-{}-{dir_hint}.sock", std::process::id())),
        ),
        alerts,
        reload: None,
    }
}

#[test]
fn metrics_endpoint_counts_real_traffic_and_reports_readiness() {
    let server = TestServer::start_with(2, Limits::default(), ops(None, "metrics"));
    let http = server.started.as_ref().unwrap().ops.http.unwrap();
    assert_eq!(http_get(http, "/healthz").0, 200);
    assert_eq!(http_get(http, "/readyz").0, 200);
    let p = phones(1558100, 2, 2, false);
    let ca = server.register(&p[0]);
    let cb = server.register(&p[1]);
    let (mut a, _) = server.login(&ca);
    let (mut b, _) = server.login(&cb);
    for i in 0..5 {
        a.send_text_acked(cb.user_id, &format!("m{i}"), T).unwrap();
    }
    for _ in 0..5 {
        support::expect(&mut b, "message", |e| {
            matches!(e, Event::Message { .. }).then_some(())
        });
    }
    b.flush().unwrap();
    // Gauges and counters are published each tick.
    std::thread::sleep(Duration::from_millis(400));
    let (status, text) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "tern_registrations_total"), 2);
    assert_eq!(metric(&text, "tern_messages_stored_total"), 5);
    assert_eq!(metric(&text, "tern_messages_delivered_total"), 5);
    assert!(metric(&text, "tern_logins_total") >= 2);
    assert_eq!(metric(&text, "tern_online_users"), 2);
    assert!(text.contains("# TYPE tern_connections gauge"));
    // The log's group commits were measured: every stored message and
    // receipt went through an fdatasync.
    assert!(
        metric(&text, "tern_fsync_latency_seconds_count") > 0,
        "{text}"
    );
    assert!(metric(&text, "tern_commit_batch_items_count") > 0);
    assert!(metric(&text, "tern_commit_batch_items_sum") >= 5);
    assert_eq!(metric(&text, "tern_send_ack_latency_seconds_count"), 5);
    assert_eq!(
        metric(&text, "tern_send_delivered_latency_seconds_count"),
        5
    );
    // A refused send shows up by its code.
    a.send_text(15559999999, "nobody there").unwrap();
    let _ = a.next_event(Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(300));
    let (_, text) = http_get(http, "/metrics");
    assert!(
        text.lines().any(|l| l.starts_with("tern_errors_total")
            && l.contains("code=\"unknown_recipient\"")
            && l.ends_with(" 1")),
        "{text}"
    );
}

/// A one-shot-per-connection HTTP receiver that hands over each body.
fn webhook_receiver() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&body).to_string());
        }
    });
    (url, rx)
}

#[test]
fn a_real_backlog_fires_the_queue_alert_and_draining_it_clears() {
    let (url, bodies) = webhook_receiver();
    let settings = AlertSettings {
        rules: AlertRules {
            user_queue: AlertRule {
                threshold: 5,
                duration_ms: 0,
            },
            ..AlertRules::default()
        },
        webhook_url: Some(url),
        ..AlertSettings::default()
    };
    let server = TestServer::start_with(2, Limits::default(), ops(Some(settings), "alerts"));
    let p = phones(1558200, 2, 2, false);
    let ca = server.register(&p[0]);
    let cb = server.register(&p[1]);
    let (mut a, _) = server.login(&ca);
    // Bob is offline: his queue grows past the threshold.
    for i in 0..10 {
        a.send_text_acked(cb.user_id, &format!("m{i}"), T).unwrap();
    }
    let firing = bodies.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(firing.contains("\"firing\""), "{firing}");
    assert!(firing.contains("user"), "{firing}");
    // Bob reads everything: the alert clears.
    let (mut b, queued) = server.login(&cb);
    assert_eq!(queued, 10);
    for _ in 0..10 {
        support::expect(&mut b, "message", |e| {
            matches!(e, Event::Message { .. }).then_some(())
        });
    }
    b.flush().unwrap();
    let cleared = bodies.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(cleared.contains("\"cleared\""), "{cleared}");
}

#[test]
fn tern_ctl_commands_reach_the_shards() {
    let server = TestServer::start_with(2, Limits::default(), ops(None, "ctl"));
    let sock = server
        .started
        .as_ref()
        .unwrap()
        .ops
        .admin_socket
        .clone()
        .unwrap();
    let p = phones(1558300, 2, 2, false);
    let ca = server.register(&p[0]);
    let cb = server.register(&p[1]);
    let (mut a, _) = server.login(&ca);
    for i in 0..3 {
        a.send_text_acked(cb.user_id, &format!("m{i}"), T).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let Response::Ok(Reply::Status(status)) = admin_request(&sock, &Request::Status).unwrap()
    else {
        panic!("status")
    };
    assert_eq!(status.shards, 2);
    assert!(status.ready);
    let Response::Ok(Reply::Queues(q)) = admin_request(&sock, &Request::Queues { top: 5 }).unwrap()
    else {
        panic!("queues")
    };
    assert_eq!(q.top.len(), 1);
    assert_eq!(q.top[0].user, p[1]);
    assert_eq!(q.top[0].len, 3);
    // Kick alice: her client hears AdminKick.
    let kick = admin_request(&sock, &Request::Kick { user: p[0].clone() }).unwrap();
    assert!(
        matches!(kick, Response::Ok(Reply::Kick(ref k)) if k.was_online),
        "{kick:?}"
    );
    let r = a.wait_for("Kicked", T, |_| None::<Result<(), ClientError>>);
    assert!(
        matches!(
            r,
            Err(ClientError::Kicked {
                reason: KickReason::AdminKick,
                ..
            })
        ),
        "{r:?}"
    );
    // Drain: not ready any more, existing clients stay, new ones are refused.
    let drain = admin_request(&sock, &Request::Drain).unwrap();
    assert!(matches!(drain, Response::Ok(Reply::Drain(_))), "{drain:?}");
    let http = server.started.as_ref().unwrap().ops.http.unwrap();
    assert_eq!(http_get(http, "/readyz").0, 503);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(server.addr()).is_err(),
        "no listener after drain"
    );
}
