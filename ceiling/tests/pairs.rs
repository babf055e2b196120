//! Real sockets over loopback against a ceiling started in this process:
//! pairs forward verbatim (plaintext and TLS), and hostile input (an
//! oversized frame, a bad hello, a reader that never reads, silence, too
//! many connections) closes only what it should, with the reason counted.
//! No timing thresholds: waits are bounded only to turn a hang into a
//! failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_ceiling::frame::{self, Hello};
use tern_ceiling::{Close, Config, Handle, Limits};

/// Upper bound on any wait in these tests (a hang guard, not a threshold).
const HANG_GUARD: Duration = Duration::from_secs(30);

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

struct Ceiling {
    handle: Option<Handle>,
    client_tls: Option<Arc<rustls::ClientConfig>>,
    dir: PathBuf,
}

impl Ceiling {
    fn start(tag: &str, tls: bool, cores: usize, limits: Limits) -> Self {
        Self::start_with(tag, tls, cores, false, limits)
    }

    fn start_with(tag: &str, tls: bool, cores: usize, shared_port: bool, limits: Limits) -> Self {
        let dir = std::env::temp_dir().join(format!("tern-ceiling-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (server_tls, client_tls) = if tls {
            let id = tern_engine::tls::load_or_generate(&dir, &[]).unwrap();
            (
                Some(tern_engine::tls::server_config(&id).unwrap()),
                Some(tern_engine::tls::client_config_trusting(&id.cert_chain).unwrap()),
            )
        } else {
            (None, None)
        };
        let handle = tern_ceiling::start(Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            shared_port,
            cores,
            pin_cores: false,
            tls: server_tls,
            limits,
        })
        .unwrap();
        Self {
            handle: Some(handle),
            client_tls,
            dir,
        }
    }

    fn handle(&self) -> &Handle {
        self.handle.as_ref().unwrap()
    }

    fn addr(&self, core: usize) -> SocketAddr {
        self.handle().addrs()[core]
    }

    fn connect(&self, core: usize) -> Box<dyn Io> {
        let sock = TcpStream::connect(self.addr(core)).unwrap();
        sock.set_read_timeout(Some(HANG_GUARD)).unwrap();
        sock.set_write_timeout(Some(HANG_GUARD)).unwrap();
        sock.set_nodelay(true).unwrap();
        match &self.client_tls {
            None => Box::new(sock),
            Some(cfg) => {
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let mut conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
                let mut sock = sock;
                while conn.is_handshaking() {
                    conn.complete_io(&mut sock).unwrap();
                }
                assert_eq!(conn.alpn_protocol(), Some(&b"tern/1"[..]));
                Box::new(rustls::StreamOwned::new(conn, sock))
            }
        }
    }

    /// Connects both ends of a pair and waits for both "paired" frames.
    fn pair(&self, core: usize, a: u64, b: u64) -> (Box<dyn Io>, Box<dyn Io>) {
        let mut x = self.connect(core);
        x.write_all(&frame::encode_hello(Hello { own: a, peer: b }))
            .unwrap();
        let mut y = self.connect(core);
        y.write_all(&frame::encode_hello(Hello { own: b, peer: a }))
            .unwrap();
        assert_eq!(
            frame::decode_paired(&read_frame(&mut x)),
            Some(Hello { own: a, peer: b })
        );
        assert_eq!(
            frame::decode_paired(&read_frame(&mut y)),
            Some(Hello { own: b, peer: a })
        );
        (x, y)
    }

    /// Waits until `pred` holds for the counters.
    fn wait_stats(&self, what: &str, pred: impl Fn(&tern_ceiling::StatsSnapshot) -> bool) {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let s = self.handle().stats();
            if pred(&s) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {s:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut f = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn read_frame(c: &mut dyn Io) -> Vec<u8> {
    let mut prefix = [0u8; 4];
    c.read_exact(&mut prefix).unwrap();
    let mut payload = vec![0u8; u32::from_le_bytes(prefix) as usize];
    c.read_exact(&mut payload).unwrap();
    payload
}

/// A frame, or `None` when the connection ends first.
fn try_read_frame(c: &mut dyn Io) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 4];
    c.read_exact(&mut prefix).ok()?;
    let mut payload = vec![0u8; u32::from_le_bytes(prefix) as usize];
    c.read_exact(&mut payload).ok()?;
    Some(payload)
}

/// True once the server has closed `c` (EOF or reset), reading and
/// discarding whatever came before.
fn closed_by_server(c: &mut dyn Io) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe
                ) =>
            {
                return true
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn exchange(x: &mut dyn Io, y: &mut dyn Io, frame_bytes_max: usize) {
    let sizes = [0, 1, 100, 4_096.min(frame_bytes_max), frame_bytes_max];
    // Sent back to back, so several frames share reads and records.
    let mut burst = Vec::new();
    for (i, len) in sizes.iter().enumerate() {
        burst.extend(framed(&payload(*len, i as u8)));
    }
    x.write_all(&burst).unwrap();
    for (i, len) in sizes.iter().enumerate() {
        assert_eq!(read_frame(y), payload(*len, i as u8), "frame {i}");
    }
    y.write_all(&framed(b"back")).unwrap();
    assert_eq!(read_frame(x), b"back");
}

#[test]
fn plaintext_pairs_on_two_cores_forward_verbatim() {
    let limits = Limits::default();
    let c = Ceiling::start("plain", false, 2, limits);
    let a0 = c.addr(0);
    assert_eq!(c.addr(1).port(), a0.port() + 1, "consecutive ports");
    // Bytes right behind a hello are forwarded once the pair is made.
    let mut early = c.connect(0);
    let mut first = frame::encode_hello(Hello { own: 10, peer: 11 }).to_vec();
    first.extend(framed(b"early"));
    early.write_all(&first).unwrap();
    let (mut x, mut y) = c.pair(1, 20, 21);
    let mut late = c.connect(0);
    late.write_all(&frame::encode_hello(Hello { own: 11, peer: 10 }))
        .unwrap();
    assert!(frame::decode_paired(&read_frame(&mut early)).is_some());
    assert!(frame::decode_paired(&read_frame(&mut late)).is_some());
    assert_eq!(read_frame(&mut late), b"early");
    let max = limits.frame_bytes_max as usize;
    exchange(&mut *x, &mut *y, max);
    exchange(&mut *late, &mut *early, max);
    drop(x);
    assert!(closed_by_server(&mut *y), "the partner is closed too");
    c.wait_stats("pair ends", |s| {
        s.pairs == 2 && s.closed(Close::ClientClosed) == 1 && s.closed(Close::PartnerClosed) == 1
    });
    // Counted when a pair ends: the ended pair forwarded 5 + 1 frames
    // (hellos are not counted).
    c.wait_stats("frames counted", |s| s.frames_forwarded == 6);
}

#[test]
fn tls_pair_forwards_with_terns_alpn() {
    let limits = Limits::default();
    let c = Ceiling::start("tls", true, 1, limits);
    let (mut x, mut y) = c.pair(0, 1, 2);
    exchange(&mut *x, &mut *y, limits.frame_bytes_max as usize);
    exchange(&mut *y, &mut *x, limits.frame_bytes_max as usize);
}

#[test]
fn oversized_frame_closes_its_pair_and_nothing_else() {
    let limits = Limits {
        frame_bytes_max: 1_000,
        out_bytes_max: 8_192,
        ..Limits::default()
    };
    for tls in [false, true] {
        let c = Ceiling::start(&format!("big-{tls}"), tls, 1, limits);
        let (mut x, mut y) = c.pair(0, 1, 2);
        let (mut p, mut q) = c.pair(0, 3, 4);
        // A good frame, then a prefix announcing 1,001 bytes.
        let mut hostile = framed(b"fine");
        hostile.extend_from_slice(&1_001u32.to_le_bytes());
        hostile.extend_from_slice(b"xxxx");
        x.write_all(&hostile).unwrap();
        assert!(closed_by_server(&mut *x));
        assert!(closed_by_server(&mut *y));
        c.wait_stats("frame_too_large", |s| s.closed(Close::FrameTooLarge) == 1);
        // The other pair still works.
        exchange(&mut *p, &mut *q, 1_000);
        // A length prefix of u32::MAX is refused the same way.
        p.write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(closed_by_server(&mut *q));
        c.wait_stats("second", |s| s.closed(Close::FrameTooLarge) == 2);
    }
}

#[test]
fn bad_hellos_are_refused_with_a_reason() {
    let c = Ceiling::start("hello", true, 1, Limits::default());
    let cases: [(Vec<u8>, &str); 3] = [
        // A 1 GiB "hello": refused from its prefix alone.
        ((1u32 << 30).to_le_bytes().to_vec(), "length 1073741824"),
        (framed(b"TCH2aaaaaaaabbbbbbbb"), "not a hello"),
        (
            frame::encode_hello(Hello { own: 5, peer: 5 }).to_vec(),
            "own id equals peer id",
        ),
    ];
    for (bytes, needle) in cases {
        let mut s = c.connect(0);
        s.write_all(&bytes).unwrap();
        let reason = frame::decode_refused(&read_frame(&mut *s)).unwrap();
        assert!(reason.contains(needle), "{reason}");
        assert!(closed_by_server(&mut *s));
    }
    // An id that is already waiting, and a peer waiting for someone else.
    let mut w = c.connect(0);
    w.write_all(&frame::encode_hello(Hello { own: 7, peer: 8 }))
        .unwrap();
    c.wait_stats("waiting", |s| s.hellos == 1);
    for (hello, needle) in [
        (Hello { own: 7, peer: 9 }, "already waiting"),
        (Hello { own: 1, peer: 7 }, "waiting for another peer"),
    ] {
        let mut s = c.connect(0);
        s.write_all(&frame::encode_hello(hello)).unwrap();
        let reason = frame::decode_refused(&read_frame(&mut *s)).unwrap();
        assert!(reason.contains(needle), "{reason}");
    }
    // The waiting connection is untouched and still pairs.
    let mut v = c.connect(0);
    v.write_all(&frame::encode_hello(Hello { own: 8, peer: 7 }))
        .unwrap();
    assert!(frame::decode_paired(&read_frame(&mut *w)).is_some());
    assert!(frame::decode_paired(&read_frame(&mut *v)).is_some());
    c.wait_stats("counted", |s| {
        s.closed(Close::BadHello) == 3 && s.closed(Close::IdTaken) == 2
    });
}

#[test]
fn a_reader_that_never_reads_is_cut_off() {
    let limits = Limits {
        frame_bytes_max: 16 * 1024,
        out_bytes_max: 64 * 1024,
        ..Limits::default()
    };
    let c = Ceiling::start("slow", false, 1, limits);
    let (mut x, _never_reads) = c.pair(0, 1, 2);
    let chunk = framed(&payload(16 * 1024, 1));
    // Fills the reader's socket buffers, then the server's bound; the
    // server then closes both, and writing fails. The byte cap only turns
    // a server that never cuts off into a failure instead of a hang.
    let mut written = 0usize;
    let cut = loop {
        if x.write_all(&chunk).is_err() {
            break true;
        }
        written += chunk.len();
        if written > 1 << 30 {
            break false;
        }
    };
    assert!(cut, "never cut off after {written} bytes");
    c.wait_stats("slow_reader", |s| s.closed(Close::SlowReader) == 1);
}

#[test]
fn silence_and_lonely_connections_are_dropped() {
    let limits = Limits {
        hello_timeout_ms: 200,
        pair_wait_ms: 300,
        ..Limits::default()
    };
    let c = Ceiling::start("silence", false, 1, limits);
    // Says nothing: closed at the hello timeout.
    let mut quiet = c.connect(0);
    // Says hello, but its peer never comes: dropped at a sweep.
    let mut lonely = c.connect(0);
    lonely
        .write_all(&frame::encode_hello(Hello { own: 1, peer: 2 }))
        .unwrap();
    assert!(closed_by_server(&mut *quiet));
    assert!(closed_by_server(&mut *lonely));
    c.wait_stats("both counted", |s| {
        s.closed(Close::HelloTimeout) == 1 && s.closed(Close::PairWaitExpired) == 1
    });
}

#[test]
fn connections_above_the_bound_are_closed_at_once() {
    let limits = Limits {
        conns_per_core_max: 2,
        pair_wait_ms: 500,
        ..Limits::default()
    };
    let c = Ceiling::start("connsmax", false, 1, limits);
    let mut a = c.connect(0);
    a.write_all(&frame::encode_hello(Hello { own: 1, peer: 2 }))
        .unwrap();
    let mut b = c.connect(0);
    b.write_all(&frame::encode_hello(Hello { own: 3, peer: 4 }))
        .unwrap();
    c.wait_stats("two waiting", |s| s.hellos == 2);
    let mut third = c.connect(0);
    assert!(closed_by_server(&mut *third));
    c.wait_stats("refused", |s| s.closed(Close::ConnsMax) == 1);
    // Slots are given back: the two leave, are dropped at the pair-wait
    // sweep (a parked connection is not read), and a pair fits again.
    drop((a, b));
    let deadline = Instant::now() + HANG_GUARD;
    let mut id = 10;
    loop {
        id += 2;
        let mut x = c.connect(0);
        let mut y = c.connect(0);
        let _ = x.write_all(&frame::encode_hello(Hello {
            own: id,
            peer: id + 1,
        }));
        let _ = y.write_all(&frame::encode_hello(Hello {
            own: id + 1,
            peer: id,
        }));
        if try_read_frame(&mut *x).is_some() && try_read_frame(&mut *y).is_some() {
            exchange(&mut *x, &mut *y, 1_000);
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", c.handle().stats());
    }
}

#[test]
fn a_shared_port_takes_handshakes_on_every_core() {
    let c = Ceiling::start_with("shared", true, 2, true, Limits::default());
    assert_eq!(c.addr(0), c.addr(1), "one port");
    // Full TLS handshakes (with ALPN checked), then a reset or a close,
    // as `tern-loadgen --mode handshake` does.
    for _ in 0..20 {
        drop(c.connect(0));
    }
    c.wait_stats("all accepted", |s| s.accepted == 20);
    c.wait_stats("all closed", |s| s.closed(Close::ClientClosed) == 20);
    assert_eq!(c.handle().stats().hellos, 0);
}

#[test]
fn limits_that_cannot_work_are_refused() {
    for bad in [
        Limits {
            frame_bytes_max: 10,
            ..Limits::default()
        },
        Limits {
            out_bytes_max: 1_000,
            ..Limits::default()
        },
        Limits {
            conns_per_core_max: 0,
            ..Limits::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    assert!(Limits::default().validate().is_ok());
}
