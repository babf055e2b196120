//! Log records: tern-log framing (length + kind + CRC32C) of a 200-byte
//! payload, and tern-core's record payloads (`Record::encode` /
//! `Record::decode`) for the records a message cycle appends.

// A measurement program: a failed step must stop the run loudly rather
// than be measured as if it had worked.
#![allow(clippy::expect_used, clippy::panic)]
// Test data: a byte pattern, truncation intended.
#![allow(clippy::cast_possible_truncation)]

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tern_benches::gate::workloads::message_record;
use tern_core::inbox::Item;
use tern_core::record::Record;
use tern_core::user::UserId;
use tern_wire::ReceiptKind;

fn bench_log_framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("log/record_200b");
    let payload: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut out = Vec::with_capacity(512);
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("encode_crc32c", |b| {
        b.iter(|| {
            out.clear();
            tern_log::record::encode(1, black_box(&payload), &mut out).expect("encode")
        })
    });
    out.clear();
    tern_log::record::encode(1, &payload, &mut out).expect("encode");
    group.bench_function("decode_crc32c", |b| {
        b.iter(|| match tern_log::record::decode(black_box(&out)) {
            tern_log::Decoded::Complete { len, .. } => len,
            other => panic!("{other:?}"),
        })
    });
    group.finish();
}

fn bench_core_records(c: &mut Criterion) {
    let mut group = c.benchmark_group("log/core_record");
    group.throughput(Throughput::Elements(1));
    let to = UserId(15_550_000_002);
    let from = UserId(15_550_000_001);
    let records = [
        (
            "item_stored_message_100b",
            message_record(to, from, (1 << 54) | 42, 7),
        ),
        (
            "item_stored_receipt",
            Record::ItemStored {
                to: from,
                dedup: None,
                item: Item::Receipt {
                    id: (1 << 54) | 43,
                    kind: ReceiptKind::Delivered,
                    peer: to,
                    client_msg_id: 7,
                    at_ms: 1_790_000_000_000,
                },
            },
        ),
        (
            "item_acked",
            Record::ItemAcked {
                user: to,
                id: (1 << 54) | 42,
            },
        ),
    ];
    let mut out = Vec::with_capacity(1024);
    for (name, record) in &records {
        out.clear();
        record.encode(&mut out);
        eprintln!("{name}: payload {} bytes", out.len());
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                out.clear();
                black_box(record).encode(&mut out);
                out.len()
            })
        });
        out.clear();
        record.encode(&mut out);
        let kind = record.kind();
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| Record::decode(kind, black_box(&out)).expect("decode"))
        });
    }
    // What the log task does per appended message: payload + framing.
    let (_, message) = records.first().expect("records");
    let mut payload = Vec::with_capacity(1024);
    group.bench_function("encode_and_frame/item_stored_message_100b", |b| {
        b.iter(|| {
            payload.clear();
            black_box(message).encode(&mut payload);
            out.clear();
            tern_log::record::encode(message.kind(), &payload, &mut out).expect("encode")
        })
    });
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
    targets = bench_log_framing, bench_core_records
}
criterion_main!(benches);
