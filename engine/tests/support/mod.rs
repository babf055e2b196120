//! Shared helpers for the engine's end-to-end tests: a real server started
//! through `server::serve` (TLS on loopback, outbox SMS gateway, temp data
//! dir), SDK clients, and a raw TLS client for hostile input.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_client::{Client, Credentials, DriverConfig, Event, Trust};
use tern_core::limits::Limits;
use tern_core::user::{home_shard, UserId};
use tern_engine::server::{self, ServeOptions, Started};
use tern_engine::sms::latest_pin_for;
use tern_wire::{framing, Encoder, ErrorCode, Frame, Hello, PROTOCOL_VERSION};

pub const T: Duration = Duration::from_secs(10);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

pub struct TestServer {
    pub started: Option<Started>,
    pub dir: PathBuf,
    pub shards: u16,
    /// Applied to the options at every (re)start.
    tune: fn(&mut ServeOptions),
}

impl TestServer {
    pub fn start(shards: u16, limits: Limits) -> Self {
        Self::start_with(shards, limits, server::OpsOptions::default())
    }

    /// With the operator surface (metrics endpoint, admin socket, alerts).
    pub fn start_with(shards: u16, limits: Limits, ops: server::OpsOptions) -> Self {
        let mut s = Self::unstarted(shards, |_| {});
        let started = server::serve(ServeOptions {
            limits,
            ops,
            ..s.options()
        })
        .unwrap();
        s.started = Some(started);
        s
    }

    /// With options changed by `tune` (kept for `restart`).
    pub fn start_tuned(shards: u16, tune: fn(&mut ServeOptions)) -> Self {
        let mut s = Self::unstarted(shards, tune);
        s.started = Some(server::serve(s.options()).unwrap());
        s
    }

    fn unstarted(shards: u16, tune: fn(&mut ServeOptions)) -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tern-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self {
            started: None,
            dir,
            shards,
            tune,
        }
    }

    fn options(&self) -> ServeOptions {
        let mut opts = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: Some(self.shards),
            pin_cores: Some(false),
            data_dir: self.dir.clone(),
            shutdown_grace_ms: 2_000,
            ..ServeOptions::default()
        };
        (self.tune)(&mut opts);
        opts
    }

    /// Stops the server cleanly and starts it again on the same data dir
    /// (a new port).
    pub fn restart(&mut self) {
        self.stop();
        self.started = Some(server::serve(self.options()).unwrap());
    }

    pub fn addr(&self) -> SocketAddr {
        self.started.as_ref().unwrap().handle.local_addr()
    }

    pub fn cert_path(&self) -> PathBuf {
        self.started
            .as_ref()
            .unwrap()
            .tls
            .as_ref()
            .unwrap()
            .cert_path
            .clone()
    }

    pub fn outbox(&self) -> PathBuf {
        self.started.as_ref().unwrap().sms_outbox.clone().unwrap()
    }

    pub fn client(&self) -> Client {
        let cfg = DriverConfig::new(self.addr().to_string(), Trust::CaFile(self.cert_path()));
        let seed = NEXT_DIR.fetch_add(1, Ordering::SeqCst) << 32;
        let mut c = Client::connect(cfg, seed + 1).unwrap();
        c.wait_for("HelloOk", T, |e| {
            matches!(e, Event::HelloOk { .. }).then_some(Ok(()))
        })
        .unwrap();
        c
    }

    /// Registers `phone` through the real path: RequestPin, the PIN read
    /// back from the SMS outbox file, VerifyPin.
    pub fn register(&self, phone: &str) -> Credentials {
        let mut c = self.client();
        c.request_pin(phone, T).unwrap();
        let pin = latest_pin_for(&self.outbox(), phone).expect("PIN in the outbox");
        let creds = c.verify_pin(phone, &pin, T).unwrap();
        c.close();
        creds
    }

    /// A logged-in client.
    pub fn login(&self, creds: &Credentials) -> (Client, u32) {
        let mut c = self.client();
        let queued = c.login(creds, T).unwrap();
        (c, queued)
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(
            self.addr(),
            &self
                .started
                .as_ref()
                .unwrap()
                .tls
                .as_ref()
                .unwrap()
                .cert_chain,
        )
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.started.take() {
            s.stop();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `count` phone numbers whose users have pairwise different home shards
/// (`count <= shards`), or all on one shard when `same` is set.
pub fn phones(prefix: u64, count: usize, shards: u16, same: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut homes = Vec::new();
    for i in 0..100_000u64 {
        let phone = format!("+{}", prefix * 10_000 + i);
        let home = home_shard(UserId::from_phone(&phone).unwrap(), shards);
        let ok = if same {
            homes.first().is_none_or(|&h| h == home)
        } else {
            !homes.contains(&home)
        };
        if ok {
            homes.push(home);
            out.push(phone);
            if out.len() == count {
                return out;
            }
        }
    }
    panic!("could not find {count} phones");
}

pub fn uid(phone: &str) -> u64 {
    UserId::from_phone(phone).unwrap().0
}

/// Waits for the first event `pick` accepts, failing on timeout.
pub fn expect<T>(
    c: &mut Client,
    what: &'static str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    c.wait_for(what, T, |e| pick(e).map(Ok)).unwrap()
}

/// What a raw client saw, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    HelloOk,
    Error { code: ErrorCode, fatal: bool },
    LoginOk,
    LoginError(ErrorCode),
    Deliver { id: u64 },
    Other(String),
}

/// A TLS client that sends whatever bytes a test wants and reports what
/// comes back, frame by frame.
pub struct Raw {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    enc: Encoder,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr, certs: &[rustls_pki_types::CertificateDer<'static>]) -> Self {
        Self::connect_with(TcpStream::connect(addr).unwrap(), certs)
    }

    pub fn connect_with(
        tcp: TcpStream,
        certs: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Self {
        let cfg: Arc<rustls::ClientConfig> =
            tern_engine::tls::client_config_trusting(certs).unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(cfg, name).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Self {
            tls: rustls::StreamOwned::new(conn, tcp),
            enc: Encoder::default(),
            buf: Vec::new(),
        }
    }

    pub fn hello(&mut self) {
        self.send(&Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            capabilities: 0,
            client_name: "raw",
        }));
        assert_eq!(self.next(T), Some(Seen::HelloOk));
    }

    pub fn send(&mut self, frame: &Frame<'_>) {
        let bytes = self.enc.encode_to_vec(frame).unwrap();
        self.send_bytes(&bytes);
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).unwrap();
        self.tls.flush().unwrap();
    }

    /// Sends `first` and `second` as two TLS records, all in one socket
    /// write except the last `held` bytes, which follow after a pause: the
    /// server sees the second record cut in two.
    pub fn send_split(&mut self, first: &[u8], second: &[u8], held: usize) {
        let mut wire = Vec::new();
        for plain in [first, second] {
            // One `write_all` of at most 16 KiB is one record.
            self.tls.conn.writer().write_all(plain).unwrap();
            while self.tls.conn.wants_write() {
                self.tls.conn.write_tls(&mut wire).unwrap();
            }
        }
        let cut = wire.len() - held;
        self.tls.sock.write_all(&wire[..cut]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        self.tls.sock.write_all(&wire[cut..]).unwrap();
    }

    /// The next frame, `None` on timeout or when the server closed.
    pub fn next(&mut self, timeout: Duration) -> Option<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((payload, n)) = framing::split(&self.buf, 16 << 20).unwrap() {
                let seen = match tern_wire::decode(payload, &tern_wire::Limits::default()).unwrap()
                {
                    Frame::HelloOk(_) => Seen::HelloOk,
                    Frame::Error(e) => Seen::Error {
                        code: e.code,
                        fatal: e.fatal,
                    },
                    Frame::LoginOk { .. } => Seen::LoginOk,
                    Frame::LoginError(e) => Seen::LoginError(e.code),
                    Frame::Deliver { id, .. } => Seen::Deliver { id },
                    other => Seen::Other(format!("{:?}", other.kind())),
                };
                self.buf.drain(..n);
                return Some(seen);
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.tls.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    }

    /// True when the server closes the connection within `timeout`
    /// (frames received before the close are skipped).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut chunk = [0u8; 4096];
            match self.tls.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// A one-shot HTTP/1.1 GET on a fresh connection: (status, whole response).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, text)
}
