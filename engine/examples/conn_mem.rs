//! Heap bytes the running server holds per idle connection, and what they
//! are: the real runtime (`server::serve`, 2 shards, TLS or plaintext) is
//! started in this process, N clients connect (TLS handshake), send
//! `Hello`, get `HelloOk` and stay idle. A wrapping allocator counts only
//! the server's threads (the clients live on this thread, which it skips),
//! in bytes asked for, and tallies live blocks by size so the pieces of a
//! connection can be named (docs/BENCHMARKS.md, "Memory per idle TLS
//! session"). Connections are anonymous: a login adds the core's session
//! entry (`scale_sim`: 184 B per session with its connection).
//!
//! Run: `cargo run --release -p tern-engine --example conn_mem -- [N] [tls|plain]`

// A measurement program: any failure should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tern_engine::server::{self, ServeOptions, TlsChoice};
use tern_wire::{framing, Encoder, Frame, Hello, PROTOCOL_VERSION};

/// Block sizes tallied one by one; larger ones share the last slot.
const SIZES_TRACKED: usize = 8192;

struct Counting;

static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BY_SIZE: [AtomicIsize; SIZES_TRACKED + 1] =
    [const { AtomicIsize::new(0) }; SIZES_TRACKED + 1];

thread_local! {
    /// Set on the clients' thread: its allocations are not the server's.
    static SKIP: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize, blocks: isize) {
    if SKIP.with(Cell::get) {
        return;
    }
    LIVE_BYTES.fetch_add(size as isize * blocks, Ordering::Relaxed);
    LIVE_BY_SIZE[size.min(SIZES_TRACKED)].fetch_add(blocks, Ordering::Relaxed);
}

// A measurement needs to see every allocation: wrapping the global
// allocator is the only way, and it is unsafe by the trait's contract.
#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to mimalloc; the counters are
// atomics and a const thread-local without destructor: none allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: forwarded with the caller's layout.
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        // SAFETY: forwarded unchanged.
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot() -> (isize, Vec<isize>) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_BY_SIZE
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect(),
    )
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Connects, says Hello and waits for the answer.
fn client(addr: std::net::SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Box<dyn Stream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
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
            client_name: "conn_mem",
        }))
        .unwrap();
    s.write_all(&hello).unwrap();
    s.flush().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if framing::split(&got, 1 << 20).unwrap().is_some() {
            return s;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "server closed");
        got.extend_from_slice(&buf[..n]);
    }
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

fn main() {
    SKIP.with(|s| s.set(true));
    let n: usize = std::env::args()
        .nth(1)
        .map_or(4_000, |a| a.parse().expect("connection count"));
    let tls = std::env::args().nth(2).is_none_or(|m| m != "plain");
    let dir = std::env::temp_dir().join(format!("tern-conn-mem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let limits = tern_core::limits::Limits {
        // Anonymous connections must stay for the whole measurement.
        login_timeout_ms: 600_000,
        ..tern_core::limits::Limits::default()
    };
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
        limits,
        durability: tern_log::Durability::UnsafeNoFsync,
        ..ServeOptions::default()
    })
    .unwrap();
    let addr = started.handle.local_addr();
    let client_cfg = started.tls.as_ref().map(|id| {
        let pem = std::fs::read(&id.cert_path).unwrap();
        let cert = CertificateDer::from_pem_slice(&pem).unwrap();
        tern_engine::tls::client_config_trusting(&[cert]).unwrap()
    });

    // Warm-up: first-use allocations of the shards are not per connection.
    let warm: Vec<_> = (0..200)
        .map(|_| client(addr, client_cfg.as_ref()))
        .collect();
    drop(warm);
    settle(&started, 0);

    let (bytes0, sizes0) = snapshot();
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(client(addr, client_cfg.as_ref()));
    }
    settle(&started, n as u64);
    let (bytes1, sizes1) = snapshot();

    let per = (bytes1 - bytes0) as f64 / n as f64;
    println!(
        "{n} idle {} connections, 2 shards: {per:.0} B per connection on the server (bytes asked for)",
        if tls { "TLS" } else { "plaintext" }
    );
    let mut pieces: Vec<(usize, f64)> = (0..=SIZES_TRACKED)
        .map(|size| (size, (sizes1[size] - sizes0[size]) as f64 / n as f64))
        .filter(|(_, blocks)| *blocks >= 0.05)
        .collect();
    pieces.sort_by(|a, b| (b.0 as f64 * b.1).total_cmp(&(a.0 as f64 * a.1)));
    println!("  block size   blocks/conn   bytes/conn");
    for (size, blocks) in pieces.iter().take(16) {
        let plus = if *size == SIZES_TRACKED { "+" } else { " " };
        println!(
            "  {size:>9}{plus}  {blocks:>11.2}  {:>11.0}",
            *size as f64 * blocks
        );
    }
    drop(clients);
    started.handle.shutdown();
    drop(started);
    let _ = std::fs::remove_dir_all(&dir);
}
