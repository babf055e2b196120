//! Real sockets for client tests: a TLS 1.3 (or plain TCP) server on
//! 127.0.0.1 that runs [`FakeServer`] on a thread, and its self-signed
//! certificate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code,
    unreachable_pub
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::{FakeServer, Got};

/// Longest a test server thread lives, whatever happens.
const SERVER_LIFETIME: Duration = Duration::from_secs(30);

pub struct Cert {
    pub der: CertificateDer<'static>,
    pub key_pkcs8: Vec<u8>,
    pub pem: String,
}

pub fn self_signed() -> Cert {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    Cert {
        der: cert.der().clone(),
        key_pkcs8: signing_key.serialize_der(),
        pem: cert.pem(),
    }
}

pub fn server_tls(cert: &Cert) -> Arc<ServerConfig> {
    let config = ServerConfig::builder_with_provider(tern_client::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pkcs8.clone())),
        )
        .unwrap();
    Arc::new(config)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

pub struct TestServer {
    pub addr: SocketAddr,
    /// A live copy of `FakeServer::received`, for tests that cannot wait
    /// for `join`.
    pub received: Arc<Mutex<Vec<Got>>>,
    thread: JoinHandle<FakeServer>,
}

impl TestServer {
    /// Serves `connections` connections one after another with the same
    /// fake server state, then returns that state.
    pub fn start(tls: Option<Arc<ServerConfig>>, mut fake: FakeServer, connections: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + SERVER_LIFETIME;
            for _ in 0..connections {
                let tcp = loop {
                    match listener.accept() {
                        Ok((tcp, _)) => break Some(tcp),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            if Instant::now() >= deadline {
                                break None;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                };
                let Some(tcp) = tcp else { break };
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let mut stream: Box<dyn ReadWrite> = match &tls {
                    Some(config) => Box::new(StreamOwned::new(
                        ServerConnection::new(Arc::clone(config)).unwrap(),
                        tcp,
                    )),
                    None => Box::new(tcp),
                };
                fake.new_connection();
                serve(&mut *stream, &mut fake, deadline, &log);
            }
            fake
        });
        Self {
            addr,
            received,
            thread,
        }
    }

    /// Polls the live log until `done` holds (true) or `timeout` passes.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Got]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(&self.received.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn join(self) -> FakeServer {
        self.thread.join().unwrap()
    }
}

/// Runs the fake server over one connection until it closes, fails, or the
/// fake server asks to close it.
fn serve(
    stream: &mut dyn ReadWrite,
    fake: &mut FakeServer,
    deadline: Instant,
    log: &Mutex<Vec<Got>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                fake.handle_bytes(&buf[..n]);
                log.lock().unwrap().clone_from(&fake.received);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // Handshake failures and resets end this connection.
            Err(_) => return,
        }
        let out = fake.take_output();
        if !out.is_empty() && (stream.write_all(&out).is_err() || stream.flush().is_err()) {
            return;
        }
        if fake.close_requested {
            return;
        }
    }
}

pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("tern-driver-test-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
