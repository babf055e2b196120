//! A connection that moves to its user's home shard at login takes along
//! what came after the login: a frame pipelined in the same TLS record
//! (decrypted before the move, so it travels as plaintext), and a TLS
//! record cut in two whose second half arrives after the move (it travels
//! as ciphertext inside the TLS session).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use tern_core::limits::Limits;
use tern_wire::{Encoder, Frame};

use support::{Seen, TestServer, T};

#[test]
fn a_moving_connection_keeps_pipelined_frames_and_split_records() {
    let server = TestServer::start(2, Limits::default());
    let mut enc = Encoder::default();
    // Where the kernel accepts a connection is its 4-tuple hash's choice:
    // with 16 users on 2 shards, some logins move (all stay put with
    // probability 2^-16), and every login must work either way.
    for i in 0..16u64 {
        let creds = server.register(&format!("+1559200{i:04}"));
        let mut raw = server.raw();
        raw.hello();
        let mut first = enc
            .encode_to_vec(&Frame::Login {
                user_id: creds.user_id,
                device_key: creds.key,
            })
            .unwrap();
        first.extend(enc.encode_to_vec(&Frame::Ping { nonce: 1 }).unwrap());
        let second = enc.encode_to_vec(&Frame::Ping { nonce: 2 }).unwrap();
        raw.send_split(&first, &second, 10);
        assert_eq!(raw.next(T), Some(Seen::LoginOk), "user {i}");
        assert_eq!(raw.next(T), Some(Seen::Other("Pong".into())), "user {i}");
        assert_eq!(raw.next(T), Some(Seen::Other("Pong".into())), "user {i}");
    }
}
