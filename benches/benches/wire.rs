//! Frame encode, split + verify + decode, for the hot frames of a message
//! cycle (Send, Deliver, DeliverAck, Receipt).

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tern_wire::{framing, Body, Encoder, Frame, Limits, ReceiptKind};

fn frames() -> Vec<(&'static str, Frame<'static>)> {
    const TEXT: &str = "hello there, this is a typical short chat message of 100 bytes or so, give or take a few..";
    vec![
        (
            "send_100b",
            Frame::Send {
                client_msg_id: 0x1234_5678,
                to: 15_551_234_567,
                body: Body::Text(TEXT),
            },
        ),
        (
            "deliver_100b",
            Frame::Deliver {
                id: 987_654_321,
                from: 15_551_234_567,
                client_msg_id: 0x1234_5678,
                sent_at_ms: 1_790_000_000_000,
                body: Body::Text(TEXT),
            },
        ),
        ("deliver_ack", Frame::DeliverAck { id: 987_654_321 }),
        (
            "receipt",
            Frame::Receipt {
                id: 55,
                kind: ReceiptKind::Delivered,
                peer: 15_551_234_567,
                client_msg_id: 0x1234_5678,
                at_ms: 1_790_000_000_000,
            },
        ),
    ]
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/encode");
    let mut encoder = Encoder::default();
    let mut out = Vec::with_capacity(1024);
    for (name, frame) in frames() {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let n = encoder.encode(black_box(&frame), &mut out);
                black_box(n)
            })
        });
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/split_verify_decode");
    let limits = Limits::default();
    let mut encoder = Encoder::default();
    for (name, frame) in frames() {
        let Ok(bytes) = encoder.encode_to_vec(&frame) else {
            continue;
        };
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| {
                let Ok(Some((payload, _))) =
                    framing::split(black_box(&bytes), limits.max_frame_len)
                else {
                    return None;
                };
                tern_wire::decode(payload, &limits).ok().map(|f| f.kind())
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
    targets = bench_encode, bench_decode
}
criterion_main!(benches);
