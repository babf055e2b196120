//! The log stays bounded under real traffic through the real server: old
//! segments are deleted once their messages are acknowledged, live items
//! and accounts are copied forward out of them, and after a restart every
//! queued message still arrives, in order, read back from disk.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use tern_client::{Client, Event, MessageBody};
use tern_engine::server::ServeOptions;

use support::{phones, TestServer, T};

/// Small segments so that a few thousand messages roll many of them.
const SEGMENT_BYTES: u32 = 64 << 10;

fn small_segments(opts: &mut ServeOptions) {
    opts.log_segment_bytes_max = SEGMENT_BYTES;
}

/// Segment numbers of shard 0's log, ascending.
fn segments(dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(dir.join("shard-0"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    found.sort_unstable();
    found
}

/// Reads `n` messages on `c` (each acked by the client) and returns their
/// texts.
fn read_texts(c: &mut Client, n: usize) -> Vec<String> {
    let mut texts = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(60);
    while texts.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} arrived",
            texts.len()
        );
        if let Some(Event::Message {
            body: MessageBody::Text(t),
            ..
        }) = c.next_event(Duration::from_millis(200)).unwrap()
        {
            texts.push(t);
        }
    }
    c.flush().unwrap();
    texts
}

#[test]
fn acknowledged_traffic_is_reclaimed_and_offline_queues_survive_copy_forward_and_restart() {
    let mut server = TestServer::start_tuned(1, small_segments);
    let p = phones(1558200, 3, 1, true);
    let (alice, bob, carol) = (
        server.register(&p[0]),
        server.register(&p[1]),
        server.register(&p[2]),
    );
    let (mut a, _) = server.login(&alice);
    let (mut b, _) = server.login(&bob);
    // Carol is offline: her messages sit in the first segment, on disk only.
    let carol_texts: Vec<String> = (0..30).map(|i| format!("for carol {i}")).collect();
    for t in &carol_texts {
        a.send_text_acked(carol.user_id, t, T).unwrap();
    }
    // Acknowledged traffic between Alice and Bob rolls segment after
    // segment (~100-byte bodies; each message also logs an ack, a receipt
    // and the receipt's ack).
    let body = "x".repeat(100);
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = segments(&server.dir)[0];
    // Until the segment holding Carol's messages and the accounts is gone:
    // that takes copying them forward.
    while segments(&server.dir).first() == Some(&first) {
        assert!(Instant::now() < deadline, "segment {first} never reclaimed");
        for _ in 0..50 {
            a.send_text_acked(bob.user_id, &body, T).unwrap();
        }
        sent += 50;
        assert_eq!(read_texts(&mut b, 50).len(), 50);
        // Alice's delivered receipts, acked as they come.
        while a.next_event(Duration::from_millis(1)).unwrap().is_some() {}
        a.flush().unwrap();
    }
    // Keep going until 4x the bound has been written.
    while *segments(&server.dir).last().unwrap() < first + 4 * 7 {
        assert!(Instant::now() < deadline, "traffic too slow");
        for _ in 0..50 {
            a.send_text_acked(bob.user_id, &body, T).unwrap();
        }
        sent += 50;
        assert_eq!(read_texts(&mut b, 50).len(), 50);
        while a.next_event(Duration::from_millis(1)).unwrap().is_some() {}
        a.flush().unwrap();
    }
    // Bounded: the floor of 4 segments plus the active one and the one
    // being copied, far below what was written (reclaim may lag the
    // traffic by a few seconds).
    let settle = Instant::now() + Duration::from_secs(20);
    let on_disk = loop {
        let on_disk = segments(&server.dir);
        if on_disk.len() <= 6 || Instant::now() > settle {
            break on_disk;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let written = on_disk.last().unwrap() - first + 1;
    println!("sent {sent} messages; wrote {written} segments; on disk now {on_disk:?}");
    assert!(on_disk.len() <= 6, "{on_disk:?}");

    // Restart: accounts and Carol's queue were copied; all of it comes
    // back from the log.
    drop((a, b));
    server.restart();
    let (mut c, queued) = server.login(&carol);
    assert_eq!(queued, 30);
    assert_eq!(read_texts(&mut c, 30), carol_texts);
    let (mut a, _) = server.login(&alice);
    a.send_text_acked(bob.user_id, "after restart", T).unwrap();
    let (mut b, _) = server.login(&bob);
    assert_eq!(read_texts(&mut b, 1), ["after restart"]);
}
