//! The sans-IO shard core: a full durable 1:1 message cycle (same shard
//! and across shards), one `handle_bytes` step for a Send, the fake
//! client's share of a cycle, and routing (`home_shard`).
//!
//! Durable mode with every `Action::Append` reported durable at once
//! (`harness::LogMode::Instant`); the `_log_encode` variant also encodes
//! each record and frames it with CRC32C, as the log writer would.

// A measurement program: a failed step must stop the run loudly rather
// than be measured as if it had worked.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern_benches::harness::{pair, seen, LogMode, Placement, Seen};
use tern_benches::TEXT_100B;
use tern_core::user::{home_shard, UserId};
use tern_wire::{framing, Body, Encoder, Frame, ReceiptKind};

fn bench_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/cycle");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("same_shard", Placement::SameShard, LogMode::Instant),
        ("cross_shard", Placement::CrossShard, LogMode::Instant),
        (
            "same_shard_log_encode",
            Placement::SameShard,
            LogMode::EncodeThenInstant,
        ),
        (
            "cross_shard_log_encode",
            Placement::CrossShard,
            LogMode::EncodeThenInstant,
        ),
    ];
    for (name, placement, mode) in cases {
        let (mut net, a, b) = pair(placement, mode).expect("pair");
        let mut cmid = 0u64;
        group.bench_function(name, |bench| {
            bench.iter(|| {
                cmid += 1;
                net.cycle(a, b, cmid, TEXT_100B).expect("cycle")
            })
        });
    }
    group.finish();
}

/// What the fake client does per cycle, alone: encode Send, decode
/// ServerAck, decode Deliver, encode DeliverAck, decode Receipt, encode
/// the receipt's DeliverAck. Subtract it from a cycle for the server's
/// share.
fn bench_client_side(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/client_side");
    group.throughput(Throughput::Elements(1));
    let mut enc = Encoder::default();
    let limits = tern_wire::Limits::default();
    let canned = |enc: &mut Encoder, f: &Frame<'_>| enc.encode_to_vec(f).expect("encode");
    let ack = canned(
        &mut enc,
        &Frame::ServerAck {
            client_msg_id: 7,
            server_msg_id: (1 << 54) | 9,
            timestamp_ms: 1_790_000_000_000,
        },
    );
    let deliver = canned(
        &mut enc,
        &Frame::Deliver {
            id: (1 << 54) | 9,
            from: 15_550_000_001,
            client_msg_id: 7,
            sent_at_ms: 1_790_000_000_000,
            body: Body::Text(TEXT_100B),
        },
    );
    let receipt = canned(
        &mut enc,
        &Frame::Receipt {
            id: (1 << 54) | 10,
            kind: ReceiptKind::Delivered,
            peer: 15_550_000_002,
            client_msg_id: 7,
            at_ms: 1_790_000_000_000,
        },
    );
    let mut out = Vec::with_capacity(1024);
    let read = |bytes: &[u8]| -> Seen {
        let (payload, _) = framing::split(bytes, limits.max_frame_len)
            .expect("split")
            .expect("whole");
        seen(payload, &limits).expect("decode")
    };
    group.bench_function("per_cycle", |bench| {
        bench.iter(|| {
            out.clear();
            enc.encode(
                &Frame::Send {
                    client_msg_id: 7,
                    to: 15_550_000_002,
                    body: Body::Text(TEXT_100B),
                },
                &mut out,
            )
            .expect("encode");
            let a = read(black_box(&ack));
            let d = read(black_box(&deliver));
            out.clear();
            enc.encode(&Frame::DeliverAck { id: (1 << 54) | 9 }, &mut out)
                .expect("encode");
            let r = read(black_box(&receipt));
            out.clear();
            enc.encode(&Frame::DeliverAck { id: (1 << 54) | 10 }, &mut out)
                .expect("encode");
            black_box((a, d, r, out.len()))
        })
    });
    group.finish();
}

/// `Shard::handle_bytes` for one Send frame (100-byte text) from a
/// logged-in user to an online user, alone: split, verify, decode, body
/// checks, dedup, store (Deliver encoded once, record built, inbox push,
/// Append queued), answer held for durability. Timed in batches of 64
/// Sends; the durability reports, deliveries, acks and receipts that keep
/// the state steady run between batches, untimed.
fn bench_handle_bytes_send(c: &mut Criterion) {
    const BATCH: u64 = 64;
    let mut group = c.benchmark_group("core/handle_bytes");
    group.throughput(Throughput::Elements(1));
    for placement in [Placement::SameShard, Placement::CrossShard] {
        let (mut net, a, b) = pair(placement, LogMode::Instant).expect("pair");
        let to = net.user_of(b).expect("user").0;
        let mut enc = Encoder::default();
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut cmid = 0u64;
        let name = match placement {
            Placement::SameShard => "send_recipient_same_shard",
            Placement::CrossShard => "send_recipient_other_shard",
        };
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    left -= n;
                    frames.clear();
                    for _ in 0..n {
                        cmid += 1;
                        frames.push(
                            enc.encode_to_vec(&Frame::Send {
                                client_msg_id: cmid,
                                to,
                                body: Body::Text(TEXT_100B),
                            })
                            .expect("encode"),
                        );
                    }
                    let start = Instant::now();
                    for f in &frames {
                        net.feed_bytes(a, black_box(f)).expect("feed");
                    }
                    timed += start.elapsed();
                    settle(&mut net, a, b);
                }
                timed
            })
        });
    }
    group.finish();
}

/// Untimed: makes everything durable, lets `b` ack every delivery and `a`
/// every receipt, until both are idle.
fn settle(net: &mut tern_benches::harness::Net, a: usize, b: usize) {
    let mut enc = Encoder::default();
    let mut acks = Vec::new();
    loop {
        net.run().expect("run");
        let mut any = false;
        for c in [a, b] {
            acks.clear();
            while let Some(s) = net.next_seen(c).expect("read") {
                match s {
                    Seen::Deliver { id, .. } | Seen::Receipt { id, .. } => {
                        enc.encode(&Frame::DeliverAck { id }, &mut acks)
                            .expect("encode");
                    }
                    Seen::ServerAck { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            if !acks.is_empty() {
                any = true;
                net.feed_bytes(c, &acks).expect("feed");
            }
        }
        if !any {
            net.run().expect("run");
            return;
        }
    }
}

/// `home_shard` for 1,024 sequential user ids.
fn bench_routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/routing");
    let users: Vec<UserId> = (0..1024).map(|i| UserId(15_550_000_000 + i)).collect();
    group.throughput(Throughput::Elements(users.len() as u64));
    for shards in [2u16, 64] {
        group.bench_function(BenchmarkId::new("home_shard_x1024", shards), |bench| {
            bench.iter(|| {
                let mut sum = 0u64;
                for &u in &users {
                    sum += u64::from(home_shard(black_box(u), black_box(shards)));
                }
                sum
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_cycle, bench_client_side, bench_handle_bytes_send, bench_routing
}
criterion_main!(benches);
