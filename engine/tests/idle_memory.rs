//! Architecture invariant: an idle connection holds no buffer
//! (docs/ARCHITECTURE.md, "Connections"). The real runtime runs in this
//! process; a wrapping allocator counts the heap of the server's threads
//! (the test's own thread, where the clients live, is skipped), and the
//! bytes per idle connection must stay within a budget that any buffer kept
//! while idle (rustls's 4 KiB receive buffer, an output buffer kept for
//! reuse) would break. What the bytes are: `examples/conn_mem.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_wrap
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tern_engine::server::{self, ServeOptions, TlsChoice};
use tern_wire::{framing, Encoder, Frame, Hello, PROTOCOL_VERSION};

/// Idle connections measured per case.
const CONNS: usize = 300;

/// Heap per idle connection, bytes asked for. What is left is state, not
/// buffers: glommio's task and poll source, the slab and slot entries
/// (~1.25 KiB in all), and with TLS rustls's session (~3.3 KiB). Room is
/// left for dependency updates, not for a buffer: a changed figure within
/// the budget is fine; one beyond it means something is kept while idle,
/// or a dependency grew (then re-measure with `conn_mem`).
const PLAIN_CONN_BYTES_MAX: isize = 1_400;
const TLS_CONN_BYTES_MAX: isize = 5_000;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Set on the clients' thread: its allocations are not the server's.
    static SKIP: Cell<bool> = const { Cell::new(false) };
}

fn count(bytes: isize) {
    if !SKIP.with(Cell::get) {
        LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
    }
}

// Counting the server's heap needs to see every allocation: wrapping the
// global allocator is the only way, and it is unsafe by the trait's
// contract.
#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is an atomic and the thread-local has no destructor: neither
// allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Connects, says Hello, waits for HelloOk; the connection then idles.
fn client(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Box<dyn Stream> {
    let tcp = TcpStream::connect(addr).unwrap();
    let mut s: Box<dyn Stream> = match tls {
        None => Box::new(tcp),
        Some(cfg) => {
            let name = ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let hello = Encoder::default()
        .encode_to_vec(&Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            capabilities: 0,
            client_name: "idle_memory",
        }))
        .unwrap();
    s.write_all(&hello).unwrap();
    s.flush().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while framing::split(&got, 1 << 20).unwrap().is_none() {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "server closed");
        got.extend_from_slice(&buf[..n]);
    }
    s
}

/// Waits until the server's shards report `n` connections in all (gauges
/// published each tick), so that closed ones are gone and new ones served.
fn settle(started: &server::Started, n: u64) {
    for _ in 0..300 {
        let now: u64 = started
            .metrics
            .shards()
            .iter()
            .map(|m| m.connections.get())
            .sum();
        if now == n {
            // One more tick: the tasks of closed connections have ended.
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the server did not reach {n} connections");
}

/// Heap the server holds per idle connection, bytes asked for.
fn per_connection(tls: bool) -> isize {
    let dir = std::env::temp_dir().join(format!("tern-idle-memory-{}-{tls}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = server::serve(ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(2),
        pin_cores: Some(false),
        data_dir: dir.clone(),
        tls: if tls {
            TlsChoice::Embedded {
                extra_names: Vec::new(),
            }
        } else {
            TlsChoice::InsecurePlaintext
        },
        limits: tern_core::limits::Limits {
            // Anonymous connections must stay for the whole measurement.
            login_timeout_ms: 600_000,
            ..tern_core::limits::Limits::default()
        },
        durability: tern_log::Durability::UnsafeNoFsync,
        ..ServeOptions::default()
    })
    .unwrap();
    let addr = started.handle.local_addr();
    let cfg = started.tls.as_ref().map(|id| {
        let pem = std::fs::read(&id.cert_path).unwrap();
        let cert = CertificateDer::from_pem_slice(&pem).unwrap();
        tern_engine::tls::client_config_trusting(&[cert]).unwrap()
    });
    // First-use allocations of the shards are not per connection; growing
    // tables are, amortized, as in production.
    let warm: Vec<_> = (0..50).map(|_| client(addr, cfg.as_ref())).collect();
    drop(warm);
    settle(&started, 0);
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut clients = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        clients.push(client(addr, cfg.as_ref()));
    }
    settle(&started, CONNS as u64);
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    drop(clients);
    drop(started);
    let _ = std::fs::remove_dir_all(&dir);
    (after - before) / CONNS as isize
}

#[test]
fn idle_connections_hold_state_but_no_buffers() {
    SKIP.with(|s| s.set(true));
    let plain = per_connection(false);
    let tls = per_connection(true);
    println!("heap per idle connection: plaintext {plain} B, TLS {tls} B");
    assert!(
        plain <= PLAIN_CONN_BYTES_MAX,
        "plaintext: {plain} B per idle connection"
    );
    assert!(
        tls <= TLS_CONN_BYTES_MAX,
        "TLS: {tls} B per idle connection"
    );
}
