//! The blocking driver over real sockets on 127.0.0.1: a TLS 1.3 server
//! (rustls `ServerConnection`, rcgen self-signed certificate) runs the fake
//! server logic on a thread.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use common::net::{self_signed, server_tls, temp_file, TestServer};
use common::{key_for, FakeServer, Got, InboxItem, ALICE, BOB};
use tern_client::{
    CertFingerprint, Client, ClientError, Credentials, DriverConfig, Event, MessageBody, Trust,
};

const WAIT: Duration = Duration::from_secs(5);

fn alice() -> Credentials {
    Credentials {
        user_id: ALICE,
        key: key_for(ALICE, 1),
        generation: 1,
    }
}

fn driver_config(addr: SocketAddr, trust: Trust) -> DriverConfig {
    DriverConfig::new(addr.to_string(), trust)
}

#[test]
fn tls_with_ca_file_registers_logs_in_receives_and_sends() {
    let cert = self_signed();
    let ca_path = temp_file("server.pem", &cert.pem);
    let mut fake = FakeServer::new();
    fake.inbox.push(InboxItem::Message {
        id: 9,
        from: BOB,
        client_msg_id: 31,
        text: "welcome".into(),
    });
    let server = TestServer::start(Some(server_tls(&cert)), fake, 1);

    let mut config = driver_config(server.addr, Trust::CaFile(ca_path.clone()));
    config.server_name = Some("localhost".into());
    let mut client = Client::connect(config, 1).unwrap();
    let pin = client.request_pin("+15551230001", WAIT).unwrap();
    assert_eq!((pin.pin_len, pin.expires_in_s), (6, 300));
    let creds = client
        .verify_pin("+15551230001", common::PIN, WAIT)
        .unwrap();
    assert_eq!(creds.user_id, ALICE);
    assert_eq!(client.login(&creds, WAIT).unwrap(), 1);

    let mut got = None;
    client
        .run(|session, event| {
            if let Event::Message {
                from,
                client_msg_id,
                body,
                ..
            } = event
            {
                session
                    .mark_read(from, client_msg_id, Instant::now())
                    .unwrap();
                got = Some(body);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(got, Some(MessageBody::Text("welcome".into())));

    let acked = client.send_text_acked(BOB, "hi bob", WAIT).unwrap();
    assert_eq!(acked.client_msg_id, 2, "the mark_read took id 1");
    assert_eq!(
        client.session().pending_len(),
        0,
        "the MarkRead was acked too"
    );
    client.close();

    let fake = server.join();
    assert!(fake.received.contains(&Got::DeliverAck { id: 9 }));
    assert!(fake.received.contains(&Got::MarkRead {
        client_msg_id: 1,
        to: BOB,
        read_client_msg_id: 31
    }));
    assert_eq!(fake.send_ids(), vec![2]);
    assert!(fake.inbox.is_empty());
    std::fs::remove_dir_all(ca_path.parent().unwrap()).unwrap();
}

#[test]
fn tls_with_pinned_fingerprint_logs_in_and_sends() {
    let cert = self_signed();
    let pin = CertFingerprint::of_der(&cert.der);
    let server = TestServer::start(Some(server_tls(&cert)), FakeServer::with_user(ALICE), 1);

    // No server name given: the pin is the trust, so "127.0.0.1" not being
    // in the certificate does not matter.
    let mut client =
        Client::connect(driver_config(server.addr, Trust::PinnedSha256(pin)), 100).unwrap();
    assert_eq!(client.login(&alice(), WAIT).unwrap(), 0);
    let acked = client.send_text_acked(BOB, "pinned", WAIT).unwrap();
    assert_eq!(acked.client_msg_id, 100);
    assert_eq!(acked.server_msg_id, 1000);
    client.close();
    assert_eq!(server.join().send_ids(), vec![100]);
}

#[test]
fn a_wrong_fingerprint_fails_the_handshake() {
    let cert = self_signed();
    let server = TestServer::start(Some(server_tls(&cert)), FakeServer::new(), 1);
    let mut wrong = CertFingerprint::of_der(&cert.der);
    wrong.0[0] ^= 1;
    let result = Client::connect(driver_config(server.addr, Trust::PinnedSha256(wrong)), 1);
    assert!(
        matches!(
            result,
            Err(ClientError::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure
            )))
        ),
        "{result:?}"
    );
    let fake = server.join();
    assert!(fake.received.is_empty(), "no frame got through");
}

#[test]
fn a_ca_file_with_the_wrong_name_fails_the_handshake() {
    let cert = self_signed();
    let ca_path = temp_file("server.pem", &cert.pem);
    let server = TestServer::start(Some(server_tls(&cert)), FakeServer::new(), 1);
    let mut config = driver_config(server.addr, Trust::CaFile(ca_path.clone()));
    config.server_name = Some("not-the-server.example".into());
    let result = Client::connect(config, 1);
    assert!(
        matches!(
            result,
            Err(ClientError::Tls(rustls::Error::InvalidCertificate(_)))
        ),
        "{result:?}"
    );
    server.join();
    std::fs::remove_dir_all(ca_path.parent().unwrap()).unwrap();
}

#[test]
fn an_unacked_send_is_resent_with_the_same_id_after_reconnect() {
    let cert = self_signed();
    let pin = CertFingerprint::of_der(&cert.der);
    let mut fake = FakeServer::with_user(ALICE);
    // The server "crashes" after receiving the first Send, before acking.
    fake.close_after_sends = 1;
    let server = TestServer::start(Some(server_tls(&cert)), fake, 2);

    let mut client =
        Client::connect(driver_config(server.addr, Trust::PinnedSha256(pin)), 7).unwrap();
    client.login(&alice(), WAIT).unwrap();
    let id = client.send_text(BOB, "must arrive").unwrap();
    let first = client.wait_for_ack(id, WAIT);
    assert!(
        matches!(first, Err(ClientError::ConnectionClosed)),
        "{first:?}"
    );
    assert!(!client.is_connected());
    assert!(client.session().is_pending(id));

    // Reconnect: the session logs in again by itself and re-sends.
    client.reconnect().unwrap();
    let acked = client.wait_for_ack(id, WAIT).unwrap();
    assert_eq!(acked.client_msg_id, id);
    client.close();

    let fake = server.join();
    assert_eq!(fake.send_ids(), vec![id, id]);
    assert_eq!(fake.stored.len(), 1);
    let logins = fake
        .received
        .iter()
        .filter(|g| matches!(g, Got::Login { .. }))
        .count();
    assert_eq!(logins, 2);
}

#[test]
fn insecure_plaintext_talks_plain_tcp() {
    let server = TestServer::start(None, FakeServer::with_user(ALICE), 1);
    let mut client =
        Client::connect(driver_config(server.addr, Trust::InsecurePlaintext), 1).unwrap();
    client.login(&alice(), WAIT).unwrap();
    let nonce = client.session_mut().ping(Instant::now()).unwrap();
    let pong = client
        .wait_for("Pong", WAIT, |e| match e {
            Event::Pong { nonce: n } => Some(Ok(*n)),
            _ => None,
        })
        .unwrap();
    assert_eq!(pong, nonce);
    client.close();
    assert!(server.join().received.contains(&Got::Ping { nonce }));
}

#[test]
fn a_wait_times_out_and_a_dead_address_fails_to_connect() {
    // A server that accepts but never answers Hello.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        // Read until the client hangs up.
        while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut client = Client::connect(driver_config(addr, Trust::InsecurePlaintext), 1).unwrap();
    let result = client.login(&alice(), Duration::from_millis(200));
    assert!(
        matches!(
            result,
            Err(ClientError::TimedOut {
                waiting_for: "LoginOk"
            })
        ),
        "{result:?}"
    );
    client.close();
    silent.join().unwrap();

    // Nothing listens on the port any more.
    let result = Client::connect(driver_config(addr, Trust::InsecurePlaintext), 1);
    assert!(matches!(result, Err(ClientError::Io(_))), "{result:?}");
}
