//! Heap bytes one idle server-side TLS session holds, by rustls API: the
//! buffered `ServerConnection` the runtime used first, the
//! `UnbufferedServerConnection` it uses now (caller-owned buffers, none
//! kept while idle), and, as the floor, what is left after
//! `dangerous_into_kernel_connection` (secrets and key-update state only).
//! See docs/BENCHMARKS.md, "Memory per idle TLS session".
//!
//! Each session does a full TLS 1.3 handshake in memory with the server's
//! real configuration (`tls::server_config`), then one small application
//! record each way (a login and its answer), then goes idle. The clients
//! are dropped and the live heap bytes left (counted by a wrapping
//! allocator, bytes asked for: mimalloc rounds each block up to its size
//! class on top) are divided by the session count.
//!
//! Run: `cargo run --release -p tern-engine --example tls_session_mem [-- N [buffered|unbuffered|kernel]]`

// A measurement program: any failure should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::ConnectionState;
use rustls::{ClientConnection, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tern_engine::tls::{
    client_config_trusting, generate_self_signed, server_config, sha256_fingerprint, TlsIdentity,
};

/// Counts live heap bytes (as requested) and live blocks.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

// A measurement needs to see every allocation: wrapping the global
// allocator is the only way, and it is unsafe by the trait's contract.
#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to mimalloc; the counters are
// plain atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged.
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (isize, isize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_BLOCKS.load(Ordering::Relaxed),
    )
}

fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let pair = generate_self_signed(&[]).unwrap();
    let cert = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
    let identity = TlsIdentity {
        fingerprint_sha256: sha256_fingerprint(&cert),
        cert_chain: vec![cert.clone()],
        key: PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap(),
        cert_path: "mem-cert".into(),
        key_path: "mem-key".into(),
        generated: true,
    };
    (
        server_config(&identity).unwrap(),
        client_config_trusting(&[cert]).unwrap(),
    )
}

fn new_client(cfg: &Arc<rustls::ClientConfig>) -> ClientConnection {
    ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Moves the client's pending TLS bytes out.
fn client_out(c: &mut ClientConnection) -> Vec<u8> {
    let mut v = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut v).unwrap();
    }
    v
}

fn client_in(c: &mut ClientConnection, mut bytes: &[u8]) -> Vec<u8> {
    while !bytes.is_empty() {
        c.read_tls(&mut bytes).unwrap();
        c.process_new_packets().unwrap();
    }
    let mut plain = Vec::new();
    let _ = c.reader().read_to_end(&mut plain);
    plain
}

const LOGIN: &[u8] = &[7; 120];
const LOGIN_OK: &[u8] = &[9; 40];

fn buffered_session(
    scfg: &Arc<rustls::ServerConfig>,
    ccfg: &Arc<rustls::ClientConfig>,
) -> (ServerConnection, ClientConnection) {
    let mut s = ServerConnection::new(scfg.clone()).unwrap();
    let mut c = new_client(ccfg);
    let mut plain = Vec::new();
    let mut sent = false;
    let mut answered = false;
    for _ in 0..16 {
        if !c.is_handshaking() && !sent {
            c.writer().write_all(LOGIN).unwrap();
            sent = true;
        }
        let bytes = client_out(&mut c);
        let mut rd = bytes.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        let _ = s.reader().read_to_end(&mut plain);
        if plain.len() >= LOGIN.len() && !answered {
            s.writer().write_all(LOGIN_OK).unwrap();
            answered = true;
        }
        let mut back = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut back).unwrap();
        }
        let got = client_in(&mut c, &back);
        if got == LOGIN_OK {
            return (s, c);
        }
    }
    panic!("buffered session did not finish");
}

/// What the runtime does with an unbuffered server connection: process
/// every complete record of `incoming` in place, append TLS output to
/// `out`, collect plaintext. Returns the bytes consumed.
fn unbuffered_step(
    s: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    out: &mut Vec<u8>,
    plain: &mut Vec<u8>,
    reply: Option<&[u8]>,
) -> usize {
    let mut pos = 0;
    let mut reply = reply;
    loop {
        let status = s.process_tls_records(&mut incoming[pos..]);
        let discard = status.discard;
        match status.state.unwrap() {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(rec) = r.next_record() {
                    plain.extend_from_slice(rec.unwrap().payload);
                }
            }
            ConnectionState::EncodeTlsData(mut e) => {
                let start = out.len();
                out.resize(start + 20_000, 0);
                let n = e.encode(&mut out[start..]).unwrap();
                out.truncate(start + n);
            }
            ConnectionState::TransmitTlsData(t) => t.done(),
            ConnectionState::WriteTraffic(mut w) => {
                if let Some(data) = reply.take() {
                    let start = out.len();
                    out.resize(start + data.len() + 64, 0);
                    let n = w.encrypt(data, &mut out[start..]).unwrap();
                    out.truncate(start + n);
                    pos += discard;
                    continue;
                }
                pos += discard;
                return pos;
            }
            ConnectionState::BlockedHandshake => {
                pos += discard;
                return pos;
            }
            other => panic!("unexpected state {other:?}"),
        }
        pos += discard;
    }
}

fn unbuffered_session(
    scfg: &Arc<rustls::ServerConfig>,
    ccfg: &Arc<rustls::ClientConfig>,
) -> (UnbufferedServerConnection, ClientConnection) {
    let mut s = UnbufferedServerConnection::new(scfg.clone()).unwrap();
    let mut c = new_client(ccfg);
    let mut plain = Vec::new();
    let mut sent = false;
    let mut answered = false;
    // Caller-owned input: only a partial record stays between steps.
    let mut pending: Vec<u8> = Vec::new();
    for _ in 0..16 {
        if !c.is_handshaking() && !sent {
            c.writer().write_all(LOGIN).unwrap();
            sent = true;
        }
        pending.extend_from_slice(&client_out(&mut c));
        let mut out = Vec::new();
        let used = unbuffered_step(&mut s, &mut pending, &mut out, &mut plain, None);
        pending.drain(..used);
        if plain.len() >= LOGIN.len() && !answered {
            let used = unbuffered_step(&mut s, &mut pending, &mut out, &mut plain, Some(LOGIN_OK));
            pending.drain(..used);
            answered = true;
        }
        let got = client_in(&mut c, &out);
        if got == LOGIN_OK {
            assert!(pending.is_empty());
            return (s, c);
        }
    }
    panic!("unbuffered session did not finish");
}

fn measure<S>(name: &str, n: usize, make: impl Fn() -> (S, ClientConnection)) -> f64 {
    // Both vectors are allocated before the first count and the clients'
    // one is cleared, not freed, so neither moves the difference.
    let mut servers: Vec<Box<S>> = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    let (bytes0, blocks0) = live();
    for _ in 0..n {
        let (s, c) = make();
        servers.push(Box::new(s));
        clients.push(c);
    }
    clients.clear();
    let (bytes1, blocks1) = live();
    let per = (bytes1 - bytes0) as f64 / n as f64;
    println!(
        "{name:<34} {per:>8.0} B/session  {:>5.1} blocks/session  (struct {} B)",
        (blocks1 - blocks0) as f64 / n as f64,
        std::mem::size_of::<S>()
    );
    drop(servers);
    per
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(2_000, |a| a.parse().expect("session count"));
    let only = std::env::args().nth(2);
    let run = |which: &str| only.as_deref().is_none_or(|o| o == which);
    let (scfg, ccfg) = configs();
    println!("{n} sessions, TLS 1.3, live heap bytes asked for (before allocator rounding)");
    let mut buffered = 0.0;
    if run("buffered") {
        buffered = measure("ServerConnection (buffered)", n, || {
            buffered_session(&scfg, &ccfg)
        });
    }
    if run("kernel") {
        // The floor below rustls's own connection types: after the
        // handshake, only the traffic secrets and rustls's key-update
        // state (`KernelConnection`) are kept, and record protection would
        // be the caller's (as with kTLS).
        let mut k = (*scfg).clone();
        k.enable_secret_extraction = true;
        let kcfg = Arc::new(k);
        measure("KernelConnection + secrets", n, || {
            let (s, c) = unbuffered_session(&kcfg, &ccfg);
            (s.dangerous_into_kernel_connection().unwrap(), c)
        });
    }
    let mut unbuffered = 0.0;
    if run("unbuffered") {
        unbuffered = measure("UnbufferedServerConnection", n, || {
            unbuffered_session(&scfg, &ccfg)
        });
    }
    if buffered > 0.0 && unbuffered > 0.0 {
        println!("unbuffered / buffered: {:.2}", unbuffered / buffered);
    }
}
