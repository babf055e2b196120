//! Restart with many queued messages: builds shard logs holding N queued
//! messages (the server's own record format, 100-byte texts, 10,000
//! recipients, 2 shards), then measures `server::serve` from call to ready
//! (every shard recovered and listening) and the resident memory the queued
//! messages take.
//!
//! Run: `cargo run --release -p tern-engine --example recovery_bench -- 1000000`

// A measurement program: any failure should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::indexing_slicing
)]

use std::time::Instant;

use tern_core::account::{key_hash, AccountEvent};
use tern_core::ids;
use tern_core::inbox::Item;
use tern_core::limits::Limits;
use tern_core::record::Record;
use tern_core::user::{home_shard, UserId};
use tern_engine::server::{self, ServeOptions};
use tern_wire::{Body, DeviceKey, Encoder, Frame};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SHARDS: u16 = 2;
const RECIPIENTS: u64 = 10_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    let messages: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("tern-recovery-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(server::SHARDS_FILE), format!("{SHARDS}\n")).unwrap();

    // Write each shard's log the way the server would have.
    let build = Instant::now();
    let text = "x".repeat(100);
    let mut enc = Encoder::default();
    let mut payload = Vec::new();
    let mut bytes_total = 0u64;
    for shard in 0..SHARDS {
        let log_dir = dir.join(format!("shard-{shard}"));
        let options = tern_log::LogOptions {
            writer: tern_log::WriterOptions {
                durability: tern_log::Durability::UnsafeNoFsync,
                ..tern_log::WriterOptions::default()
            },
            ..tern_log::LogOptions::default()
        };
        let mut opened = tern_log::open_log(&log_dir, &options).unwrap();
        let users: Vec<UserId> = (0..RECIPIENTS * 2)
            .map(|i| UserId(15_550_000_000 + i))
            .filter(|u| home_shard(*u, SHARDS) == shard)
            .collect();
        let mut append =
            |writer: &mut tern_log::Writer, driver: &mut tern_log::FileDriver, r: &Record| {
                payload.clear();
                r.encode(&mut payload);
                bytes_total += payload.len() as u64;
                if writer.append(r.kind(), &payload).is_err() {
                    tern_log::drive(writer, driver).unwrap();
                    writer.append(r.kind(), &payload).unwrap();
                }
            };
        for u in &users {
            let rec = Record::Account(AccountEvent::Registered {
                user: *u,
                generation: 1,
                key_hash: key_hash(&DeviceKey([7; 32])),
            });
            append(&mut opened.writer, &mut opened.driver, &rec);
        }
        let per_shard = messages / u64::from(SHARDS);
        for seq in 1..=per_shard {
            let to = users[(seq % users.len() as u64) as usize];
            let from = UserId(15_559_000_000 + seq % 1000);
            let id = ids::compose(shard, seq);
            let mut frame = Vec::new();
            enc.encode(
                &Frame::Deliver {
                    id,
                    from: from.0,
                    client_msg_id: seq,
                    sent_at_ms: 1_790_000_000_000,
                    body: Body::Text(&text),
                },
                &mut frame,
            )
            .unwrap();
            let rec = Record::ItemStored {
                to,
                dedup: Some((from, seq)),
                item: Item::Message {
                    id,
                    from,
                    client_msg_id: seq,
                    sent_at_ms: 1_790_000_000_000,
                    body: frame.into_boxed_slice(),
                },
            };
            append(&mut opened.writer, &mut opened.driver, &rec);
        }
        tern_log::drive(&mut opened.writer, &mut opened.driver).unwrap();
    }
    println!(
        "built {messages} queued messages ({:.0} MiB of records) in {:.1} s",
        bytes_total as f64 / (1 << 20) as f64,
        build.elapsed().as_secs_f64()
    );

    let rss_before = rss_kib();
    let started = Instant::now();
    let limits = Limits {
        shard_inbox_items_max: 10_000_000,
        inbox_len_max: 1_000_000,
        ..Limits::default()
    };
    let s = server::serve(ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(SHARDS),
        data_dir: dir.clone(),
        limits,
        tls: server::TlsChoice::InsecurePlaintext,
        ..ServeOptions::default()
    })
    .unwrap();
    let ready = started.elapsed();
    let rss_at_ready = rss_kib();
    // The allocator returns the recovery's read buffers (a segment at a
    // time per shard) to the OS lazily: measure again once it has.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let rss_after = rss_kib();
    let per_msg = (rss_after.saturating_sub(rss_before) * 1024) as f64 / messages as f64;
    let per_msg_at_ready =
        (rss_at_ready.saturating_sub(rss_before) * 1024) as f64 / messages as f64;
    println!(
        "restart to ready: {:.2} s for {messages} queued messages on {SHARDS} shards",
        ready.as_secs_f64()
    );
    println!(
        "resident memory: {} MiB before, {} MiB at ready ({per_msg_at_ready:.0} B per queued \
         message), {} MiB 3 s later ({per_msg:.0} B per queued message: its ring entry and dedup \
         entry; the ~180-byte Deliver frame stays on disk until read back)",
        rss_before / 1024,
        rss_at_ready / 1024,
        rss_after / 1024
    );
    s.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
