//! The sans-IO session against an in-memory fake server: no sockets, time
//! passed in by hand.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{drain_events, key_for, pump, FakeServer, Got, InboxItem, ALICE, BOB, PIN};
use proptest::prelude::*;
use tern_client::{
    ClientError, ClientSession, DropReason, Event, MediaRef, MessageBody, ProtocolReason,
    SessionConfig,
};
use tern_wire::{
    Body, Encoder, ErrorCode, ErrorFrame, Frame, FrameKind, HelloOk, KickReason, Kicked,
    ReceiptKind,
};

const FIRST_ID: u64 = 500;

fn config() -> SessionConfig {
    SessionConfig::default()
}

/// A session logged in as ALICE against a fake server, events drained.
fn logged_in(config: SessionConfig) -> (ClientSession, FakeServer, Instant) {
    let t0 = Instant::now();
    let mut server = FakeServer::with_user(ALICE);
    let mut client = ClientSession::new(config, FIRST_ID);
    client.login(ALICE, key_for(ALICE, 1)).unwrap();
    pump(&mut client, &mut server, t0);
    let events = drain_events(&mut client);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::LoggedIn { user_id: ALICE, .. })),
        "{events:?}"
    );
    assert!(client.is_logged_in());
    (client, server, t0)
}

fn acked_ids(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Acked { client_msg_id, .. } => Some(*client_msg_id),
            _ => None,
        })
        .collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn register_then_login() {
    let t0 = Instant::now();
    let mut server = FakeServer::new();
    let mut client = ClientSession::new(config(), FIRST_ID);

    client.request_pin("+15551230001").unwrap();
    pump(&mut client, &mut server, t0);
    let events = drain_events(&mut client);
    assert!(matches!(events[0], Event::HelloOk { .. }), "{events:?}");
    assert_eq!(
        events[1],
        Event::PinSent {
            phone: "+15551230001".into(),
            pin_len: 6,
            expires_in_s: 300
        }
    );

    client.verify_pin("+15551230001", PIN).unwrap();
    pump(&mut client, &mut server, t0);
    let events = drain_events(&mut client);
    let Event::Registered {
        user_id,
        key,
        generation,
    } = events[0].clone()
    else {
        panic!("{events:?}")
    };
    assert_eq!((user_id, generation), (ALICE, 1));

    client.login(user_id, key).unwrap();
    pump(&mut client, &mut server, t0);
    assert_eq!(
        drain_events(&mut client),
        vec![Event::LoggedIn {
            user_id: ALICE,
            queued: 0,
            server_time_ms: 1_700_000_000_000
        }]
    );
    assert_eq!(client.user_id(), Some(ALICE));
    let hellos = server
        .received
        .iter()
        .filter(|g| matches!(g, Got::Hello { .. }))
        .count();
    assert_eq!(hellos, 1, "Hello goes once per connection");
}

#[test]
fn wrong_key_fails_login_and_is_not_retried_on_reconnect() {
    let t0 = Instant::now();
    let mut server = FakeServer::with_user(ALICE);
    let mut client = ClientSession::new(config(), FIRST_ID);
    client.login(ALICE, key_for(ALICE, 99)).unwrap();
    pump(&mut client, &mut server, t0);
    let events = drain_events(&mut client);
    assert!(
        matches!(
            &events[1],
            Event::LoginFailed {
                code: ErrorCode::LoginFailed,
                ..
            }
        ),
        "{events:?}"
    );
    assert!(!client.is_logged_in());

    client.on_disconnected();
    server.new_connection();
    client.on_connected(t0).unwrap();
    let mut out = Vec::new();
    client.poll_transmit(&mut out);
    assert!(out.is_empty(), "a refused key is not sent again by itself");
}

#[test]
fn server_ack_clears_pending_and_is_reported_once() {
    let (mut client, mut server, t0) = logged_in(config());
    let id = client.send_text(BOB, "hi", t0).unwrap();
    assert_eq!(id, FIRST_ID);
    assert!(client.is_pending(id));
    pump(&mut client, &mut server, t0);
    assert_eq!(
        drain_events(&mut client),
        vec![Event::Acked {
            client_msg_id: id,
            server_msg_id: 1000,
            timestamp_ms: 1_700_000_000_000
        }]
    );
    assert_eq!(client.pending_len(), 0);
    assert_eq!(
        server.received.last(),
        Some(&Got::Send {
            client_msg_id: id,
            to: BOB,
            body: MessageBody::Text("hi".into())
        })
    );

    // A repeated ack (answer to a retry) is not reported again.
    server.push(&Frame::ServerAck {
        client_msg_id: id,
        server_msg_id: 1000,
        timestamp_ms: 1,
    });
    pump(&mut client, &mut server, t0);
    assert!(drain_events(&mut client).is_empty());
    assert_eq!(
        client.poll_timeout(),
        Some(t0 + ms(30_000)),
        "only keepalive left"
    );
}

#[test]
fn unacked_send_is_retried_with_the_same_id_after_the_interval() {
    let (mut client, mut server, t0) = logged_in(config());
    server.ack_ops = false;
    let id = client.send_text(BOB, "are you there?", t0).unwrap();
    pump(&mut client, &mut server, t0);
    assert_eq!(server.send_ids(), vec![id]);
    assert_eq!(client.poll_timeout(), Some(t0 + ms(5_000)));

    client.handle_timeout(t0 + ms(4_999)).unwrap();
    pump(&mut client, &mut server, t0 + ms(4_999));
    assert_eq!(server.send_ids(), vec![id], "not before the interval");

    client.handle_timeout(t0 + ms(5_000)).unwrap();
    pump(&mut client, &mut server, t0 + ms(5_000));
    assert_eq!(server.send_ids(), vec![id, id], "same client_msg_id");
    assert_eq!(client.transmit_count(id), Some(2));
    assert_eq!(client.poll_timeout(), Some(t0 + ms(10_000)));

    server.ack_ops = true;
    client.handle_timeout(t0 + ms(10_000)).unwrap();
    pump(&mut client, &mut server, t0 + ms(10_000));
    assert_eq!(server.send_ids(), vec![id, id, id]);
    assert_eq!(acked_ids(&drain_events(&mut client)), vec![id]);
    assert_eq!(client.pending_len(), 0);
    assert_eq!(server.stored.len(), 1, "stored once");
}

#[test]
fn pending_ops_are_resent_after_reconnect_in_original_order() {
    let (mut client, mut server, t0) = logged_in(config());
    server.ack_ops = false;
    let a = client.send_text(BOB, "a", t0).unwrap();
    let b = client.send_text(BOB, "b", t0).unwrap();
    let c = client.mark_read(BOB, 77, t0).unwrap();
    pump(&mut client, &mut server, t0);
    assert_eq!(server.send_ids(), vec![a, b]);

    // Connection lost; one more message is written while offline.
    client.on_disconnected();
    let d = client.send_text(BOB, "d", t0 + ms(100)).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        client.poll_transmit(&mut out),
        0,
        "nothing goes out offline"
    );
    assert_eq!(client.poll_timeout(), None);
    assert_eq!(client.pending_ids().collect::<Vec<_>>(), vec![a, b, c, d]);

    server.new_connection();
    server.ack_ops = true;
    let t1 = t0 + ms(1_000);
    client.on_connected(t1).unwrap();
    pump(&mut client, &mut server, t1);
    assert_eq!(
        server.received_this_connection(),
        &[
            Got::Hello {
                client_name: config().client_name
            },
            Got::Login { user_id: ALICE },
            Got::Send {
                client_msg_id: a,
                to: BOB,
                body: MessageBody::Text("a".into())
            },
            Got::Send {
                client_msg_id: b,
                to: BOB,
                body: MessageBody::Text("b".into())
            },
            Got::MarkRead {
                client_msg_id: c,
                to: BOB,
                read_client_msg_id: 77
            },
            Got::Send {
                client_msg_id: d,
                to: BOB,
                body: MessageBody::Text("d".into())
            },
        ]
    );
    let events = drain_events(&mut client);
    assert!(matches!(events[1], Event::LoggedIn { .. }), "{events:?}");
    assert_eq!(acked_ids(&events), vec![a, b, c, d]);
    assert_eq!(client.pending_len(), 0);
}

#[test]
fn retry_after_timeout_then_again_after_reconnect_keeps_the_id() {
    let (mut client, mut server, t0) = logged_in(config());
    server.ack_ops = false;
    let id = client.send_text(BOB, "x", t0).unwrap();
    pump(&mut client, &mut server, t0);
    client.handle_timeout(t0 + ms(5_000)).unwrap();
    pump(&mut client, &mut server, t0 + ms(5_000));
    client.on_disconnected();
    server.new_connection();
    server.ack_ops = true;
    client.on_connected(t0 + ms(6_000)).unwrap();
    pump(&mut client, &mut server, t0 + ms(6_000));
    assert_eq!(server.send_ids(), vec![id, id, id]);
    assert_eq!(acked_ids(&drain_events(&mut client)), vec![id]);
    assert_eq!(server.stored.len(), 1);
}

#[test]
fn repeated_deliver_yields_one_message_and_two_acks() {
    let (mut client, mut server, t0) = logged_in(config());
    server.deliver_text(42, BOB, 9, "hello");
    server.deliver_text(42, BOB, 9, "hello");
    pump(&mut client, &mut server, t0);
    assert_eq!(
        drain_events(&mut client),
        vec![Event::Message {
            id: 42,
            from: BOB,
            client_msg_id: 9,
            sent_at_ms: 1_700_000_000_042,
            body: MessageBody::Text("hello".into())
        }]
    );
    assert_eq!(server.deliver_acks(), vec![42, 42]);
}

#[test]
fn inbox_redelivered_after_reconnect_is_not_reported_twice() {
    let (mut client, mut server, t0) = logged_in(config());
    server.inbox.push(InboxItem::Message {
        id: 7,
        from: BOB,
        client_msg_id: 1,
        text: "queued".into(),
    });
    // First login after the item was queued: delivered, but the ack is lost
    // with the connection.
    client.on_connected(t0).unwrap();
    server.new_connection();
    let mut out = Vec::new();
    client.poll_transmit(&mut out);
    server.handle_bytes(&out);
    client.handle_bytes(&server.take_output(), t0).unwrap();
    let events = drain_events(&mut client);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Message { id: 7, .. }))
            .count(),
        1
    );
    client.on_disconnected();
    server.new_connection();
    client.on_connected(t0).unwrap();
    pump(&mut client, &mut server, t0);
    let events = drain_events(&mut client);
    assert!(
        matches!(
            events.as_slice(),
            [Event::HelloOk { .. }, Event::LoggedIn { queued: 1, .. }]
        ),
        "{events:?}"
    );
    assert!(server.inbox.is_empty(), "acked the second time");
}

#[test]
fn receipt_is_acked_and_reported_once() {
    let (mut client, mut server, t0) = logged_in(config());
    server.receipt(50, ReceiptKind::Delivered, BOB, 3);
    server.receipt(50, ReceiptKind::Delivered, BOB, 3);
    server.receipt(51, ReceiptKind::Read, BOB, 3);
    pump(&mut client, &mut server, t0);
    assert_eq!(
        drain_events(&mut client),
        vec![
            Event::Receipt {
                id: 50,
                kind: ReceiptKind::Delivered,
                peer: BOB,
                client_msg_id: 3,
                at_ms: 1_700_000_000_050
            },
            Event::Receipt {
                id: 51,
                kind: ReceiptKind::Read,
                peer: BOB,
                client_msg_id: 3,
                at_ms: 1_700_000_000_051
            }
        ]
    );
    assert_eq!(server.deliver_acks(), vec![50, 50, 51]);
}

#[test]
fn pending_bound_exact_then_one_more_is_refused() {
    let config = SessionConfig {
        pending_len_max: 4,
        ..config()
    };
    let (mut client, mut server, t0) = logged_in(config);
    server.ack_ops = false;
    let ids: Vec<u64> = (0..4)
        .map(|i| client.send_text(BOB, &format!("m{i}"), t0).unwrap())
        .collect();
    assert_eq!(client.pending_len(), 4);
    let next = client.next_client_msg_id();
    assert!(matches!(
        client.send_text(BOB, "one too many", t0),
        Err(ClientError::PendingFull { pending_len_max: 4 })
    ));
    assert!(matches!(
        client.mark_read(BOB, 1, t0),
        Err(ClientError::PendingFull { .. })
    ));
    assert_eq!(client.next_client_msg_id(), next, "a refusal uses no id");
    assert_eq!(client.pending_len(), 4);
    pump(&mut client, &mut server, t0);
    assert_eq!(server.send_ids(), ids, "the refused one never went out");

    server.push(&Frame::ServerAck {
        client_msg_id: ids[0],
        server_msg_id: 1,
        timestamp_ms: 1,
    });
    pump(&mut client, &mut server, t0);
    assert_eq!(client.send_text(BOB, "room again", t0).unwrap(), next);
    assert_eq!(client.pending_len(), 4);
}

#[test]
fn dedup_window_is_bounded_and_forgets_the_oldest() {
    let config = SessionConfig {
        dedup_window_len: 3,
        ..config()
    };
    let (mut client, mut server, t0) = logged_in(config);
    for id in 1..=4 {
        server.deliver_text(id, BOB, id, "m");
    }
    pump(&mut client, &mut server, t0);
    assert_eq!(drain_events(&mut client).len(), 4);
    assert_eq!(client.dedup_len(), 3);

    // 4 is remembered; 1 fell out of the window and is reported again.
    server.deliver_text(4, BOB, 4, "m");
    server.deliver_text(1, BOB, 1, "m");
    pump(&mut client, &mut server, t0);
    let ids: Vec<u64> = drain_events(&mut client)
        .iter()
        .filter_map(|e| match e {
            Event::Message { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![1]);
    assert_eq!(client.dedup_len(), 3);
    assert_eq!(
        server.deliver_acks(),
        vec![1, 2, 3, 4, 4, 1],
        "every copy acked"
    );
}

/// Server bytes holding one of each server frame kind.
fn server_stream() -> Vec<u8> {
    let mut enc = Encoder::default();
    let mut out = Vec::new();
    let frames = [
        Frame::HelloOk(HelloOk {
            protocol_version: 1,
            capabilities: 0,
            server_name: "s",
            max_frame_len: 65_536,
        }),
        Frame::PinSent {
            phone: "+15551230001",
            pin_len: 6,
            expires_in_s: 60,
        },
        Frame::LoginOk {
            user_id: ALICE,
            queued: 3,
            server_time_ms: 5,
        },
        Frame::Deliver {
            id: 1,
            from: BOB,
            client_msg_id: 2,
            sent_at_ms: 3,
            body: Body::Text("split me"),
        },
        Frame::Deliver {
            id: 2,
            from: BOB,
            client_msg_id: 3,
            sent_at_ms: 4,
            body: Body::Media(tern_wire::Media {
                url: "https://media.example/abc",
                mime: "image/png",
                size: 1234,
                sha256: [9; 32],
                thumbnail_b64: "AAAA",
                caption: "cat",
            }),
        },
        Frame::Receipt {
            id: 3,
            kind: ReceiptKind::Read,
            peer: BOB,
            client_msg_id: 500,
            at_ms: 6,
        },
        Frame::Pong { nonce: 8 },
        Frame::Error(ErrorFrame {
            code: ErrorCode::Overloaded,
            message: "busy",
            client_msg_id: 0,
            fatal: false,
        }),
        Frame::Kicked(Kicked {
            reason: KickReason::AdminKick,
            message: "bye",
        }),
    ];
    for f in &frames {
        enc.encode(f, &mut out).unwrap();
    }
    out
}

fn feed_in_pieces(stream: &[u8], cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let t0 = Instant::now();
    let mut client = ClientSession::new(config(), FIRST_ID);
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        client.handle_bytes(&stream[start..cut], t0).unwrap();
        start = cut;
    }
    let mut out = Vec::new();
    client.poll_transmit(&mut out);
    (drain_events(&mut client), out)
}

#[test]
fn frames_split_at_every_byte_boundary_parse_the_same() {
    let stream = server_stream();
    let (whole_events, whole_out) = feed_in_pieces(&stream, &[]);
    assert_eq!(whole_events.len(), 9, "{whole_events:?}");
    assert!(matches!(
        &whole_events[4],
        Event::Message { body: MessageBody::Media(MediaRef { caption, .. }), .. } if caption == "cat"
    ));
    assert!(!whole_out.is_empty(), "DeliverAcks were queued");
    for cut in 0..=stream.len() {
        assert_eq!(
            feed_in_pieces(&stream, &[cut]),
            (whole_events.clone(), whole_out.clone()),
            "cut at {cut}"
        );
    }
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(
        feed_in_pieces(&stream, &every_byte),
        (whole_events, whole_out)
    );
}

#[test]
fn garbage_from_the_server_is_an_error_not_a_panic() {
    let (mut client, _server, t0) = logged_in(config());
    // A plausible length prefix followed by bytes that are no FlatBuffer.
    let mut garbage = 12u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xFF; 12]);
    assert!(matches!(
        client.handle_bytes(&garbage, t0),
        Err(ClientError::MalformedFrame(_))
    ));
    assert!(matches!(
        client.handle_bytes(b"more", t0),
        Err(ClientError::ConnectionBroken)
    ));
    assert!(!client.is_logged_in());

    for bad in [
        vec![0, 0, 0, 0],
        (tern_wire::MAX_FRAME_LEN_DEFAULT + 1)
            .to_le_bytes()
            .to_vec(),
    ] {
        let mut c = ClientSession::new(config(), 1);
        assert!(
            matches!(
                c.handle_bytes(&bad, t0),
                Err(ClientError::MalformedFrame(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn a_broken_connection_recovers_after_reconnect_with_pending_kept() {
    let (mut client, mut server, t0) = logged_in(config());
    server.ack_ops = false;
    let id = client.send_text(BOB, "survive", t0).unwrap();
    pump(&mut client, &mut server, t0);
    assert!(client.handle_bytes(&[1, 0, 0, 0, 0xEE], t0).is_err());
    assert!(matches!(
        client.request_pin("+1555"),
        Err(ClientError::ConnectionBroken)
    ));
    client.on_disconnected();
    server.new_connection();
    server.ack_ops = true;
    client.on_connected(t0).unwrap();
    pump(&mut client, &mut server, t0);
    assert_eq!(acked_ids(&drain_events(&mut client)), vec![id]);
}

#[test]
fn a_client_only_frame_from_the_server_is_a_protocol_error() {
    let (mut client, mut server, t0) = logged_in(config());
    server.push(&Frame::Login {
        user_id: 1,
        device_key: key_for(1, 1),
    });
    assert!(matches!(
        client.handle_bytes(&server.take_output(), t0),
        Err(ClientError::Protocol(ProtocolReason::UnexpectedFrame(
            FrameKind::Login
        )))
    ));
}

/// A well-formed frame whose body type is from a "newer" protocol.
fn unknown_kind_frame() -> Vec<u8> {
    use tern_wire::raw;
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let ping = raw::Ping::create(&mut b, &raw::PingArgs { nonce: 1 });
    let root = raw::Frame::create(
        &mut b,
        &raw::FrameArgs {
            body_type: raw::Body(200),
            body: Some(ping.as_union_value()),
        },
    );
    b.finish_minimal(root);
    let data = b.finished_data();
    let mut out = u32::try_from(data.len()).unwrap().to_le_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

#[test]
fn an_unknown_frame_kind_is_answered_and_the_connection_stays() {
    let (mut client, mut server, t0) = logged_in(config());
    client.handle_bytes(&unknown_kind_frame(), t0).unwrap();
    server.deliver_text(5, BOB, 5, "still here");
    pump(&mut client, &mut server, t0);
    assert!(server.received.contains(&Got::Error {
        code: ErrorCode::UnexpectedFrame
    }));
    assert!(matches!(
        drain_events(&mut client).as_slice(),
        [Event::Message { id: 5, .. }]
    ));
}

#[test]
fn keepalive_ping_after_idle_and_pong_event() {
    let (mut client, mut server, t0) = logged_in(config());
    assert_eq!(client.poll_timeout(), Some(t0 + ms(30_000)));
    client.handle_timeout(t0 + ms(29_999)).unwrap();
    assert!(!client.has_transmit());
    client.handle_timeout(t0 + ms(30_000)).unwrap();
    pump(&mut client, &mut server, t0 + ms(30_000));
    assert!(matches!(server.received.last(), Some(Got::Ping { .. })));
    assert!(matches!(
        drain_events(&mut client).as_slice(),
        [Event::Pong { .. }]
    ));
    assert_eq!(client.poll_timeout(), Some(t0 + ms(60_000)));

    // Sending anything pushes the keepalive back.
    client.send_text(BOB, "x", t0 + ms(40_000)).unwrap();
    pump(&mut client, &mut server, t0 + ms(40_000));
    assert_eq!(client.poll_timeout(), Some(t0 + ms(70_000)));
}

#[test]
fn keepalive_can_be_disabled() {
    let config = SessionConfig {
        ping_interval_ms: 0,
        ..config()
    };
    let (client, _server, _t0) = logged_in(config);
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn a_server_ping_is_answered_with_pong() {
    let (mut client, mut server, t0) = logged_in(config());
    server.push(&Frame::Ping { nonce: 77 });
    pump(&mut client, &mut server, t0);
    assert_eq!(server.received.last(), Some(&Got::Pong { nonce: 77 }));
}

#[test]
fn a_permanent_error_ends_the_op_and_a_transient_one_keeps_it() {
    let (mut client, mut server, t0) = logged_in(config());
    server.ack_ops = false;
    let a = client.send_text(404, "to nobody", t0).unwrap();
    let b = client.send_text(BOB, "busy server", t0).unwrap();
    pump(&mut client, &mut server, t0);
    for (id, code) in [(a, ErrorCode::UnknownRecipient), (b, ErrorCode::QueueFull)] {
        server.push(&Frame::Error(ErrorFrame {
            code,
            message: "no",
            client_msg_id: id,
            fatal: false,
        }));
    }
    pump(&mut client, &mut server, t0);
    let events = drain_events(&mut client);
    assert_eq!(events.len(), 2);
    assert!(matches!(
        events[0],
        Event::ServerError {
            code: ErrorCode::UnknownRecipient,
            client_msg_id,
            ..
        } if client_msg_id == a
    ));
    assert_eq!(client.pending_ids().collect::<Vec<_>>(), vec![b]);
}

#[test]
fn kicked_for_a_replaced_device_forgets_the_credentials() {
    let (mut client, mut server, t0) = logged_in(config());
    server.push(&Frame::Kicked(Kicked {
        reason: KickReason::DeviceReplaced,
        message: "registered on another phone",
    }));
    pump(&mut client, &mut server, t0);
    assert_eq!(
        drain_events(&mut client),
        vec![Event::Kicked {
            reason: KickReason::DeviceReplaced,
            message: "registered on another phone".into()
        }]
    );
    client.on_disconnected();
    client.on_connected(t0).unwrap();
    assert!(!client.has_transmit(), "no automatic Login with a dead key");
}

#[test]
fn sends_before_login_go_out_after_login_ok_in_order() {
    let t0 = Instant::now();
    let mut server = FakeServer::with_user(ALICE);
    let mut client = ClientSession::new(config(), FIRST_ID);
    let a = client.send_text(BOB, "early a", t0).unwrap();
    let b = client.send_text(BOB, "early b", t0).unwrap();
    assert!(!client.has_transmit(), "nothing before login");
    client.login(ALICE, key_for(ALICE, 1)).unwrap();
    pump(&mut client, &mut server, t0);
    assert_eq!(server.send_ids(), vec![a, b]);
    assert_eq!(acked_ids(&drain_events(&mut client)), vec![a, b]);
}

#[test]
fn an_oversized_send_is_refused_without_using_an_id() {
    let (mut client, _server, t0) = logged_in(config());
    let huge = "x".repeat(70_000);
    assert!(matches!(
        client.send_text(BOB, &huge, t0),
        Err(ClientError::Encode(tern_wire::Error::EncodeTooLarge { .. }))
    ));
    assert_eq!(client.next_client_msg_id(), FIRST_ID);
    assert_eq!(client.pending_len(), 0);
}

#[test]
fn the_servers_smaller_frame_bound_drops_an_op_that_can_never_fit() {
    let (mut client, mut server, t0) = logged_in(config());
    client.on_disconnected();
    let big = client.send_text(BOB, &"y".repeat(1_000), t0).unwrap();
    let small = client.send_text(BOB, "fits", t0).unwrap();
    server.new_connection();
    server.advertised_max_frame_len = 512;
    client.on_connected(t0).unwrap();
    pump(&mut client, &mut server, t0);
    let events = drain_events(&mut client);
    let dropped: Vec<(u64, usize, u32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Dropped {
                client_msg_id,
                reason: DropReason::TooLargeForServer { len, max },
            } => Some((*client_msg_id, *len, *max)),
            _ => None,
        })
        .collect();
    assert_eq!(dropped.len(), 1, "{events:?}");
    let (id, len, max) = dropped[0];
    assert_eq!((id, max), (big, 512));
    assert!(len > 1_000);
    assert_eq!(acked_ids(&events), vec![small]);
    assert_eq!(server.send_ids(), vec![small]);
    assert!(matches!(
        client.send_text(BOB, &"z".repeat(1_000), t0),
        Err(ClientError::Encode(_))
    ));
}

#[test]
fn operations_that_talk_need_a_connection_but_sends_wait_offline() {
    let mut client = ClientSession::new(config(), FIRST_ID);
    client.on_disconnected();
    let t0 = Instant::now();
    assert!(matches!(
        client.request_pin("+15551230001"),
        Err(ClientError::NotConnected)
    ));
    assert!(matches!(client.ping(t0), Err(ClientError::NotConnected)));
    assert!(matches!(
        client.handle_bytes(b"x", t0),
        Err(ClientError::NotConnected)
    ));
    assert_eq!(client.send_text(BOB, "later", t0).unwrap(), FIRST_ID);
    assert_eq!(client.pending_len(), 1);
}

#[test]
fn send_media_carries_every_field() {
    let (mut client, mut server, t0) = logged_in(config());
    let media = MediaRef {
        url: "https://media.example/f/abc".into(),
        mime: "image/jpeg".into(),
        size: 123_456,
        sha256: [3; 32],
        thumbnail_b64: "/9j/4AAQ".into(),
        caption: "sunset".into(),
    };
    let id = client.send_media(BOB, media.clone(), t0).unwrap();
    pump(&mut client, &mut server, t0);
    assert!(server.received.contains(&Got::Send {
        client_msg_id: id,
        to: BOB,
        body: MessageBody::Media(media)
    }));
    assert_eq!(acked_ids(&drain_events(&mut client)), vec![id]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the server sends, the session answers with Ok or Err, never
    /// a panic, and keeps at most one partial frame buffered.
    #[test]
    fn arbitrary_server_bytes_never_panic(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)
    ) {
        let t0 = Instant::now();
        let mut client = ClientSession::new(SessionConfig::default(), 1);
        for chunk in &chunks {
            if client.handle_bytes(chunk, t0).is_err() {
                // Once broken, the session refuses input until reset.
                prop_assert!(matches!(
                    client.handle_bytes(&[0], t0),
                    Err(ClientError::ConnectionBroken)
                ));
                prop_assert!(!client.has_transmit());
                break;
            }
        }
        while client.poll_event().is_some() {}
    }

    /// Valid frames with random bytes flipped: still no panic.
    #[test]
    fn corrupted_valid_frames_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
    ) {
        let mut stream = server_stream();
        for (at, byte) in flips {
            let len = stream.len();
            stream[at % len] ^= byte | 1;
        }
        let mut client = ClientSession::new(SessionConfig::default(), 1);
        let result = client.handle_bytes(&stream, Instant::now());
        prop_assert!(
            matches!(
                result,
                Ok(()) | Err(ClientError::MalformedFrame(_) | ClientError::Protocol(_))
            ),
            "{result:?}"
        );
        while client.poll_event().is_some() {}
    }
}

#[test]
fn a_session_can_move_to_another_thread() {
    let (client, mut server, t0) = logged_in(config());
    let mut client = std::thread::spawn(move || {
        let mut client = client;
        client.send_text(BOB, "from a thread", t0).unwrap();
        client
    })
    .join()
    .unwrap();
    pump(&mut client, &mut server, t0);
    assert_eq!(acked_ids(&drain_events(&mut client)), vec![FIRST_ID]);
}
