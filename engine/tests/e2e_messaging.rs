//! The message path end to end over real TLS sockets on loopback, through
//! `server::serve` (the code path `tern serve` runs), with users spread over
//! several shards so cross-shard delivery is exercised.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use tern_client::{ClientError, Event, KickReason, MessageBody, ReceiptKind};
use tern_core::limits::Limits;

use support::{expect, phones, uid, TestServer};

#[test]
fn two_users_chat_across_shards_with_delivered_and_read_receipts() {
    let server = TestServer::start(2, Limits::default());
    let p = phones(1555100, 2, 2, false);
    let (alice, bob) = (&p[0], &p[1]);
    let ca = server.register(alice);
    let cb = server.register(bob);
    let (mut a, _) = server.login(&ca);
    let (mut b, _) = server.login(&cb);

    let acked = a
        .send_text_acked(uid(bob), "hello bob", support::T)
        .unwrap();
    let (id, from, cmid) = expect(&mut b, "Message", |e| match e {
        Event::Message {
            id,
            from,
            client_msg_id,
            body: MessageBody::Text(t),
            ..
        } if t == "hello bob" => Some((*id, *from, *client_msg_id)),
        _ => None,
    });
    assert_eq!(from, uid(alice));
    assert_eq!(cmid, acked.client_msg_id);
    assert_eq!(id, acked.server_msg_id, "inbox id is the server id");
    // The SDK queues the DeliverAck for its next turn; send it now.
    b.flush().unwrap();
    // Bob's SDK acknowledged the delivery: two check marks for alice.
    expect(&mut a, "Delivered receipt", |e| match e {
        Event::Receipt {
            kind: ReceiptKind::Delivered,
            peer,
            client_msg_id,
            ..
        } if *peer == uid(bob) && *client_msg_id == cmid => Some(()),
        _ => None,
    });
    let read_op = b.mark_read(uid(alice), cmid).unwrap();
    b.wait_for_ack(read_op, support::T).unwrap();
    expect(&mut a, "Read receipt", |e| match e {
        Event::Receipt {
            kind: ReceiptKind::Read,
            client_msg_id,
            ..
        } if *client_msg_id == cmid => Some(()),
        _ => None,
    });
    // And back the other way, on the same connections.
    b.send_text_acked(uid(alice), "hi alice", support::T)
        .unwrap();
    expect(&mut a, "reply", |e| match e {
        Event::Message {
            body: MessageBody::Text(t),
            ..
        } if t == "hi alice" => Some(()),
        _ => None,
    });
}

#[test]
fn offline_recipient_gets_its_queue_in_order_and_offline_sender_its_receipts() {
    let server = TestServer::start(3, Limits::default());
    let p = phones(1555200, 2, 3, false);
    let (alice, bob) = (&p[0], &p[1]);
    let ca = server.register(alice);
    let cb = server.register(bob);
    let (mut a, _) = server.login(&ca);
    let mut sent = Vec::new();
    for i in 0..20 {
        let acked = a
            .send_text_acked(uid(bob), &format!("m{i}"), support::T)
            .unwrap();
        sent.push(acked.client_msg_id);
    }
    a.close();

    let (mut b, queued) = server.login(&cb);
    assert_eq!(queued, 20);
    let mut got = Vec::new();
    while got.len() < 20 {
        let text = expect(&mut b, "queued message", |e| match e {
            Event::Message {
                body: MessageBody::Text(t),
                ..
            } => Some(t.clone()),
            _ => None,
        });
        got.push(text);
    }
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "order kept per sender and recipient (I2)");
    // Bob's DeliverAcks go out with this flush; receipts are made from them.
    b.flush().unwrap();
    b.close();

    let (mut a2, queued) = server.login(&ca);
    assert_eq!(queued, 20, "the receipts waited for alice");
    let mut receipts = Vec::new();
    while receipts.len() < 20 {
        let cmid = expect(&mut a2, "receipt", |e| match e {
            Event::Receipt {
                kind: ReceiptKind::Delivered,
                client_msg_id,
                ..
            } => Some(*client_msg_id),
            _ => None,
        });
        receipts.push(cmid);
    }
    assert_eq!(receipts, sent);
}

#[test]
fn reregistration_kicks_the_old_device_and_its_key_never_works_again() {
    let server = TestServer::start(2, Limits::default());
    let phone = &phones(1555300, 1, 2, false)[0];
    let old = server.register(phone);
    let (mut old_client, _) = server.login(&old);
    let new = server.register(phone);
    assert!(new.generation > old.generation);
    let kicked = old_client.wait_for("Kicked", support::T, |_| None::<Result<(), ClientError>>);
    assert!(
        matches!(
            kicked,
            Err(ClientError::Kicked {
                reason: KickReason::DeviceReplaced,
                ..
            })
        ),
        "{kicked:?}"
    );
    let mut c = server.client();
    let err = c.login(&old, support::T).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Rejected {
                code: tern_client::ErrorCode::LoginFailed,
                ..
            }
        ),
        "{err:?}"
    );
    let (_c2, _) = server.login(&new);
}

#[test]
fn duplicate_client_msg_id_is_stored_once() {
    let server = TestServer::start(2, Limits::default());
    let p = phones(1555400, 2, 2, false);
    let ca = server.register(&p[0]);
    let cb = server.register(&p[1]);
    let mut raw = server.raw();
    raw.hello();
    raw.send(&tern_wire::Frame::Login {
        user_id: ca.user_id,
        device_key: ca.key,
    });
    assert_eq!(raw.next(support::T), Some(support::Seen::LoginOk));
    let send = tern_wire::Frame::Send {
        client_msg_id: 77,
        to: cb.user_id,
        body: tern_wire::Body::Text("only once"),
    };
    raw.send(&send);
    raw.send(&send);
    for _ in 0..2 {
        assert_eq!(
            raw.next(support::T),
            Some(support::Seen::Other("ServerAck".into()))
        );
    }
    let (_b, queued) = server.login(&cb);
    assert_eq!(queued, 1);
}

#[test]
fn shutdown_kicks_clients_with_server_shutdown() {
    let mut server = TestServer::start(2, Limits::default());
    let phone = &phones(1555500, 1, 2, false)[0];
    let creds = server.register(phone);
    let (mut c, _) = server.login(&creds);
    server.stop();
    let r = c.wait_for("Kicked", support::T, |_| None::<Result<(), ClientError>>);
    assert!(
        matches!(
            r,
            Err(ClientError::Kicked {
                reason: KickReason::ServerShutdown,
                ..
            })
        ),
        "{r:?}"
    );
}
