//! `tern-ceiling`: the raw forwarding ceiling Tern is measured against.
//!
//! A minimal glommio server with Tern's shape and none of its work: one
//! executor per core, rustls with exactly Tern's TLS configuration (the
//! engine's own `server_config`, same self-signed certificate type), and
//! u32-LE length-prefixed frames. A connection's first frame is a hello
//! naming its own id and its peer's ([`frame`]); once both ends of a pair
//! have said hello, every later frame is forwarded verbatim to the peer:
//! the payload is never parsed, nothing is stored, nothing is acknowledged.
//!
//! Placement: **one port per core** (core k listens on `listen.port + k`;
//! [`Config::shared_port`] puts every core on one port, for handshakes),
//! not SO_REUSEPORT on one port, so a client that connects both ends of a
//! pair to the same port gets them on the same core and the forwarding
//! never crosses cores. That makes this an upper bound: Tern moves each
//! connection to its user's home shard, and about half of the pairs in a
//! two-shard run cross shards over the mesh.
//!
//! Bounds ([`Limits`]): frame payload size, connections per core, bytes
//! waiting to be written to one connection (a slow reader is cut off, and
//! its pair with it), time to say hello, time to wait for the peer. Bad
//! input closes that connection (after a refusal frame when it is still in
//! the hello stage); nothing panics.

mod conn;
pub mod error;
pub mod frame;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

pub use error::CeilingError;

/// Default first port (core k listens on `7600 + k`).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7600";
/// How often a core checks the stop flag.
pub const STOP_CHECK_MS: u64 = 100;
/// How often a core drops connections whose peer never came.
pub const SWEEP_MS: u64 = 1_000;
/// Pause after a failed `accept` (EMFILE and friends), as the engine does.
pub const ACCEPT_BACKOFF_MS: u64 = 50;
/// Default time from accept to a complete hello (TLS handshake included).
pub const HELLO_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time a connection waits for its peer's hello.
pub const PAIR_WAIT_MS_DEFAULT: u64 = 30_000;
/// With port 0 and several cores: tries at finding a run of free
/// consecutive ports before giving up.
pub const PORT_SEARCH_ATTEMPTS_MAX: usize = 16;

/// Every bound of the ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload (length prefix excluded), both directions.
    /// Default: Tern's `max_frame_len` default.
    pub frame_bytes_max: u32,
    /// Connections one core holds at once, pairs and waiting ones alike.
    /// Default: Tern's `connections_per_shard_max` default.
    pub conns_per_core_max: usize,
    /// Bytes waiting to be written to one connection before it is cut off
    /// as a slow reader. Default: Tern's `conn_outbound_bytes_max` default.
    pub out_bytes_max: usize,
    /// Time from accept to a complete hello.
    pub hello_timeout_ms: u64,
    /// Time a connection waits for its peer.
    pub pair_wait_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes_max: tern_wire::MAX_FRAME_LEN_DEFAULT,
            conns_per_core_max: tern_core::limits::CONNECTIONS_PER_SHARD_MAX_DEFAULT,
            out_bytes_max: tern_core::limits::CONN_OUTBOUND_BYTES_MAX_DEFAULT,
            hello_timeout_ms: HELLO_TIMEOUT_MS_DEFAULT,
            pair_wait_ms: PAIR_WAIT_MS_DEFAULT,
        }
    }
}

impl Limits {
    /// Refuses bounds that could never work.
    pub fn validate(&self) -> Result<(), CeilingError> {
        let bad = |m: &str| Err(CeilingError::Config(m.to_owned()));
        let frame = usize::try_from(self.frame_bytes_max).unwrap_or(usize::MAX);
        if self.frame_bytes_max == 0 || self.frame_bytes_max > tern_wire::MAX_FRAME_LEN_MAX {
            return bad("frame_bytes_max must be 1..=16 MiB");
        }
        if frame < frame::HELLO_PAYLOAD_BYTES {
            return bad("frame_bytes_max must hold a hello (20 bytes)");
        }
        if self.out_bytes_max < frame.saturating_add(frame::LEN_PREFIX_BYTES) {
            return bad("out_bytes_max must hold one frame of frame_bytes_max and its prefix");
        }
        if self.conns_per_core_max == 0 {
            return bad("conns_per_core_max must be at least 1");
        }
        if self.hello_timeout_ms == 0 || self.pair_wait_ms == 0 {
            return bad("hello_timeout_ms and pair_wait_ms must be at least 1");
        }
        Ok(())
    }
}

/// How the ceiling runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Core 0's address; core k listens on port + k. Port 0: core 0 takes
    /// a free port and the others follow it.
    pub listen: SocketAddr,
    /// Every core listens on `listen`'s port instead (SO_REUSEPORT, the
    /// kernel spreads connections over the cores, as with Tern's shards).
    /// The two ends of a pair then land on cores by chance and pair only
    /// when they meet on one: for accept and handshake measurements, where
    /// Tern's listener layout is the fair one.
    pub shared_port: bool,
    /// Executors, one per core.
    pub cores: usize,
    /// Pin executor k to CPU k.
    pub pin_cores: bool,
    /// `None`: plaintext (`--insecure-plaintext`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bounds.
    pub limits: Limits,
}

/// Why a connection was closed (or refused). Each closed connection is
/// counted once, under one of these.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Close {
    /// The client closed its connection (EOF, reset, TLS close_notify).
    ClientClosed,
    /// Its pair's other connection ended, so this one was closed too.
    PartnerClosed,
    /// A socket error.
    Io,
    /// TLS failed (handshake, bad record, ALPN mismatch).
    Tls,
    /// No complete hello within `hello_timeout_ms`.
    HelloTimeout,
    /// The first frame was not a valid hello.
    BadHello,
    /// The hello's id is taken, or its peer waits for someone else.
    IdTaken,
    /// The peer never said hello within `pair_wait_ms`.
    PairWaitExpired,
    /// A frame announced a payload above `frame_bytes_max`.
    FrameTooLarge,
    /// More than `out_bytes_max` waited to be written to it.
    SlowReader,
    /// Refused at accept: the core holds `conns_per_core_max` connections.
    ConnsMax,
}

impl Close {
    /// Every reason, in counter order.
    pub const ALL: [Close; 11] = [
        Self::ClientClosed,
        Self::PartnerClosed,
        Self::Io,
        Self::Tls,
        Self::HelloTimeout,
        Self::BadHello,
        Self::IdTaken,
        Self::PairWaitExpired,
        Self::FrameTooLarge,
        Self::SlowReader,
        Self::ConnsMax,
    ];

    /// A short stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::PartnerClosed => "partner_closed",
            Self::Io => "io",
            Self::Tls => "tls",
            Self::HelloTimeout => "hello_timeout",
            Self::BadHello => "bad_hello",
            Self::IdTaken => "id_taken",
            Self::PairWaitExpired => "pair_wait_expired",
            Self::FrameTooLarge => "frame_too_large",
            Self::SlowReader => "slow_reader",
            Self::ConnsMax => "conns_max",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// Counters of all cores. Touched per connection event, never per frame
/// (frame counts are added when a pair ends).
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    hellos: AtomicU64,
    pairs: AtomicU64,
    frames: AtomicU64,
    closes: [AtomicU64; Close::ALL.len()],
}

impl Stats {
    fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    fn hello(&self) {
        self.hellos.fetch_add(1, Ordering::Relaxed);
    }

    fn paired(&self) {
        self.pairs.fetch_add(1, Ordering::Relaxed);
    }

    fn forwarded(&self, frames: u64) {
        self.frames.fetch_add(frames, Ordering::Relaxed);
    }

    fn count(&self, c: Close) {
        self.count_n(c, 1);
    }

    fn count_n(&self, c: Close, n: u64) {
        if let Some(x) = self.closes.get(c.index()) {
            x.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            hellos: self.hellos.load(Ordering::Relaxed),
            pairs: self.pairs.load(Ordering::Relaxed),
            frames_forwarded: self.frames.load(Ordering::Relaxed),
            closes: Close::ALL
                .iter()
                .zip(&self.closes)
                .map(|(c, n)| (c.name(), n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// A copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections accepted (not counting those refused at `conns_max`).
    pub accepted: u64,
    /// Valid hellos received (the connection then waits or pairs, unless
    /// its id is taken).
    pub hellos: u64,
    /// Pairs made.
    pub pairs: u64,
    /// Frames forwarded by pairs that have ended (hellos not counted).
    pub frames_forwarded: u64,
    /// Closed connections by reason name (non-zero ones).
    pub closes: BTreeMap<&'static str, u64>,
}

impl StatsSnapshot {
    /// Connections closed for `c`.
    pub fn closed(&self, c: Close) -> u64 {
        self.closes.get(c.name()).copied().unwrap_or(0)
    }
}

/// A running ceiling. Dropping it stops every core and waits.
#[derive(Debug)]
pub struct Handle {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl Handle {
    /// Core k's address is `addrs()[k]` (consecutive ports, or all the same
    /// with [`Config::shared_port`]).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The flag that stops the cores (signal handlers set it).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Counters of all cores.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops every core and waits for them.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a core's executor failed");
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts one executor per core and returns once every core listens.
pub fn start(cfg: Config) -> Result<Handle, CeilingError> {
    cfg.limits.validate()?;
    if cfg.cores == 0 {
        return Err(CeilingError::Config("cores must be at least 1".to_owned()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let mut handle = Handle {
        addrs: Vec::with_capacity(cfg.cores),
        stop: stop.clone(),
        stats: stats.clone(),
        threads: Vec::with_capacity(cfg.cores),
    };
    let mut next = cfg.listen;
    // Port 0 with one port per core: find a free run first, held by
    // SO_REUSEPORT sockets that never listen (so they take no
    // connections) until every core has bound its own.
    let mut reservation = Vec::new();
    if cfg.listen.port() == 0 && !cfg.shared_port && cfg.cores > 1 {
        let (base, held) = reserve_ports(cfg.listen, cfg.cores)?;
        next = base;
        reservation = held;
    }
    for k in 0..cfg.cores {
        // One at a time: core 0 may pick the port the others follow.
        let (tx, rx) = mpsc::channel();
        let ctx = CoreCtx {
            listen: next,
            tls: cfg.tls.clone(),
            limits: cfg.limits,
            stats: stats.clone(),
            stop: stop.clone(),
            bound: tx,
        };
        let placement = if cfg.pin_cores {
            Placement::Fixed(k)
        } else {
            Placement::Unbound
        };
        let spawned = LocalExecutorBuilder::new(placement)
            .name(&format!("ceiling-{k}"))
            .spawn(move || async move { core_main(ctx).await });
        match spawned {
            Ok(t) => handle.threads.push(t),
            Err(e) => return Err(CeilingError::Start(format!("core {k}: {e}"))),
        }
        let addr = match rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(CeilingError::Start(format!("core {k} died starting"))),
        };
        handle.addrs.push(addr);
        if cfg.shared_port {
            next = addr;
            continue;
        }
        let port = addr.port().checked_add(1).ok_or_else(|| {
            CeilingError::Config(format!("no port after {} for core {}", addr, k + 1))
        });
        match port {
            Ok(p) => next.set_port(p),
            Err(e) if k + 1 < cfg.cores => return Err(e),
            Err(_) => {}
        }
    }
    drop(reservation);
    Ok(handle)
}

/// Binds `count` consecutive ports from a kernel-chosen one (SO_REUSEPORT,
/// not listening); retries when one of the run is taken.
fn reserve_ports(
    listen: SocketAddr,
    count: usize,
) -> Result<(SocketAddr, Vec<socket2::Socket>), CeilingError> {
    let bind = |addr: SocketAddr| -> std::io::Result<socket2::Socket> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        s.set_reuse_port(true)?;
        s.bind(&addr.into())?;
        Ok(s)
    };
    let err = |source| CeilingError::Bind {
        addr: listen,
        source,
    };
    for _ in 0..PORT_SEARCH_ATTEMPTS_MAX {
        let first = bind(listen).map_err(err)?;
        let base = first
            .local_addr()
            .map_err(err)?
            .as_socket()
            .ok_or_else(|| CeilingError::Config(format!("{listen}: not an IP address")))?;
        let mut held = vec![first];
        for k in 1..count {
            let port = u16::try_from(usize::from(base.port()) + k).ok();
            let Some(port) = port else { break };
            let mut addr = base;
            addr.set_port(port);
            match bind(addr) {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
        if held.len() == count {
            return Ok((base, held));
        }
    }
    Err(CeilingError::Config(format!(
        "no {count} consecutive free ports found after {PORT_SEARCH_ATTEMPTS_MAX} tries; \
         give --listen a port"
    )))
}

struct CoreCtx {
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    bound: mpsc::Sender<Result<SocketAddr, CeilingError>>,
}

async fn core_main(ctx: CoreCtx) {
    let listen = ctx.listen;
    let bound = TcpListener::bind(listen).and_then(|l| Ok((l.local_addr()?, l)));
    let listener = match bound {
        Ok((addr, l)) => {
            let _ = ctx.bound.send(Ok(addr));
            l
        }
        Err(e) => {
            let source = match e {
                glommio::GlommioError::IoError(io) => io,
                other => std::io::Error::other(other.to_string()),
            };
            let _ = ctx.bound.send(Err(CeilingError::Bind {
                addr: listen,
                source,
            }));
            return;
        }
    };
    let core = Rc::new(conn::Core {
        limits: ctx.limits,
        tls: ctx.tls,
        stats: ctx.stats,
        scratch: RefCell::new(conn::Scratch::new()),
        waiting: RefCell::new(HashMap::new()),
        conns: Rc::new(Cell::new(0)),
    });
    let accept = {
        let core = core.clone();
        glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        glommio::spawn_local(conn::serve(core.clone(), stream)).detach();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        glommio::timer::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
                    }
                }
            }
        })
    };
    let mut last_sweep = Instant::now();
    while !ctx.stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(STOP_CHECK_MS)).await;
        let now = Instant::now();
        if now.saturating_duration_since(last_sweep) >= Duration::from_millis(SWEEP_MS) {
            last_sweep = now;
            core.sweep_waiting(now);
        }
    }
    // Returning ends the executor; its tasks (and sockets) are dropped.
    drop(accept);
    core.waiting.borrow_mut().clear();
}
