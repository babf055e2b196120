//! Inbox ring: `push` + `next_unsent` + `ack` of one item ("ring push/pop"),
//! for a user whose queue is otherwise empty (the online case: every
//! message creates the user's queue and its ack removes it) and for a user
//! with 1,000 items queued. Each iteration clones the item first: a message
//! item owns its body (the encoded Deliver frame, here ~190 bytes), so one
//! allocation per message is part of the cost, as on the server.

// A measurement program: a failed step must stop the run loudly rather
// than be measured as if it had worked.
#![allow(clippy::expect_used)]

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern_benches::gate::workloads::message_record;
use tern_core::inbox::{Inboxes, Item};
use tern_core::limits::Limits;
use tern_core::record::Record;
use tern_core::user::UserId;
use tern_wire::ReceiptKind;

const USER: UserId = UserId(15_550_000_002);

fn items() -> [(&'static str, Item); 2] {
    let Record::ItemStored { item: message, .. } =
        message_record(USER, UserId(15_550_000_001), 1, 7)
    else {
        unreachable!("message_record builds an ItemStored")
    };
    let receipt = Item::Receipt {
        id: 1,
        kind: ReceiptKind::Delivered,
        peer: UserId(15_550_000_001),
        client_msg_id: 7,
        at_ms: 1_790_000_000_000,
    };
    [("message_100b", message), ("receipt", receipt)]
}

fn with_id(item: &Item, new_id: u64) -> Item {
    let mut item = item.clone();
    match &mut item {
        Item::Message { id, .. } | Item::Receipt { id, .. } => *id = new_id,
    }
    item
}

fn bench_ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("inbox/push_next_ack");
    group.throughput(Throughput::Elements(1));
    let limits = Limits::default();
    for depth in [0u64, 1_000] {
        for (name, item) in items() {
            let mut inboxes = Inboxes::new(&limits);
            let mut next_id = 1u64;
            for _ in 0..depth {
                inboxes.push(USER, with_id(&item, next_id)).expect("push");
                next_id += 1;
            }
            group.bench_function(BenchmarkId::new(name, format!("depth_{depth}")), |b| {
                b.iter(|| {
                    inboxes
                        .push(USER, with_id(black_box(&item), next_id))
                        .expect("push");
                    next_id += 1;
                    let id = inboxes.next_unsent(USER).map(Item::id).expect("unsent");
                    inboxes.ack(USER, id).expect("ack")
                })
            });
        }
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
    targets = bench_ring
}
criterion_main!(benches);
