//! The runtime: one glommio executor per shard, each with its own
//! SO_REUSEPORT listener, connection tasks, mesh tasks and a ticker.

pub(crate) mod conn;
pub mod control;
pub(crate) mod cpus;
pub(crate) mod fetch;
pub(crate) mod log;
pub(crate) mod mesh;
pub(crate) mod reclaim;
pub(crate) mod shard;

use std::cell::RefCell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::time::Duration;

use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use rand::RngCore;
use tern_core::shard::{Shard, ShardConfig, TICK_MS};

use self::conn::Scratch;

/// Threads of each shard's blocking pool. glommio's default is one, pinned
/// with the executor: the log writer's pwrite/fdatasync would then queue
/// behind a reclaim scan of a whole segment, a read-back of queued bodies
/// or an SMS gateway call that takes seconds, and every ServerAck with
/// it. The log, the fetch and the reclaim task each run one job at a time,
/// so four threads leave one for SMS calls; they are unpinned because they
/// spend their time blocked in the kernel.
const BLOCKING_THREADS_PER_SHARD: usize = 4;
use self::mesh::{Envelope, MeshEnds};
use self::shard::{drain_actions, RtRef, ShardRt};
use crate::clock::now_ms;
use crate::error::EngineError;
use crate::sms::SmsGateway;
use crate::tls::session::TlsSession;

/// Everything a running server needs, resolved (TLS loaded, gateway built).
#[derive(Clone)]
pub struct RuntimeConfig {
    pub listen: SocketAddr,
    pub shards: u16,
    /// Pin shard k to CPU k (thread per core). Off in tests that run more
    /// shards than cores.
    pub pin_cores: bool,
    /// `None` only with the explicit insecure plaintext option.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub shard: ShardConfig,
    pub sms: Arc<dyn SmsGateway>,
    pub shutdown_grace_ms: u64,
    /// Shard k keeps its log in `<data_dir>/shard-k`.
    pub data_dir: std::path::PathBuf,
    pub log: tern_log::LogOptions,
    /// Per-shard metrics, written each tick (`None`: not exported).
    pub metrics: Option<Arc<crate::ops::metrics::Metrics>>,
    /// Operator commands, one receiver per shard.
    pub control: Vec<crossbeam_channel::Receiver<control::Control>>,
    /// Readiness (/readyz): a shard whose log fails turns it false.
    pub ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("listen", &self.listen)
            .field("shards", &self.shards)
            .field("pin_cores", &self.pin_cores)
            .field("tls", &self.tls.is_some())
            .field("sms", &self.sms.name())
            .finish_non_exhaustive()
    }
}

/// A running server. Dropping it shuts the server down and waits.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// A handle with nothing behind it (what is left after `join`).
    pub(crate) fn detached() -> Self {
        Self {
            local_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            stop: Arc::new(AtomicBool::new(true)),
            threads: Vec::new(),
        }
    }

    /// The address the listeners are bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The flag that stops the server; signal handlers set it.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Asks every shard to stop: no new connections, clients are kicked
    /// with `ServerShutdown` after their queued output is flushed.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits until every shard has stopped.
    pub fn join(mut self) {
        self.join_threads();
    }

    fn join_threads(&mut self) {
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
        self.join_threads();
    }
}

/// Reserves `addr` (resolving port 0) with a bound, non-listening
/// SO_REUSEPORT socket: the shards can then bind the same port in parallel,
/// and the reservation takes no connections because it never listens.
fn reserve_port(addr: SocketAddr) -> Result<(SocketAddr, socket2::Socket), EngineError> {
    let domain = if addr.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let err = |e: std::io::Error| EngineError::Bind(format!("{addr}: {e}"));
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    let bound = socket
        .local_addr()
        .map_err(err)?
        .as_socket()
        .ok_or_else(|| EngineError::Bind(format!("{addr}: not an IP address")))?;
    Ok((bound, socket))
}

/// Starts every shard (each recovers its log in parallel with the others,
/// then binds) and returns once all are listening.
pub fn start(cfg: RuntimeConfig) -> Result<ServerHandle, EngineError> {
    let shards = usize::from(cfg.shards.max(1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut ends: Vec<Option<MeshEnds>> = mesh::build(shards).into_iter().map(Some).collect();
    let mut threads = Vec::with_capacity(shards);
    let (local_addr, reservation) = reserve_port(cfg.listen)?;
    let allowed_cpus = cpus::allowed();
    let (tx, rx) = mpsc::channel::<Result<SocketAddr, EngineError>>();
    for k in 0..shards {
        let ends_k = ends
            .get_mut(k)
            .and_then(Option::take)
            .ok_or_else(|| EngineError::Start("mesh ends missing".into()))?;
        let ctx = ShardCtx {
            index: u16::try_from(k).map_err(|_| EngineError::Start("too many shards".into()))?,
            listen: local_addr,
            cfg: cfg.clone(),
            ends: ends_k,
            stop: stop.clone(),
            bound: tx.clone(),
        };
        let placement = if cfg.pin_cores {
            // The k-th CPU this process may use, not CPU k.
            let cpu = allowed_cpus
                .as_ref()
                .and_then(|c| c.get(k % c.len().max(1)).copied())
                .unwrap_or(k);
            Placement::Fixed(cpu)
        } else {
            Placement::Unbound
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("tern-shard-{k}"))
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(
                BLOCKING_THREADS_PER_SHARD,
            ))
            .spawn(move || async move { shard_main(ctx).await })
            .map_err(|e| EngineError::Start(format!("shard {k} executor: {e}")))?;
        let join = std::thread::Builder::new()
            .name(format!("tern-join-{k}"))
            .spawn(move || {
                let _ = handle.join();
            })
            .map_err(|e| EngineError::Start(format!("join thread: {e}")))?;
        threads.push(join);
    }
    drop(tx);
    let mut handle = ServerHandle {
        local_addr,
        stop,
        threads,
    };
    for _ in 0..shards {
        let failed = match rx.recv() {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(EngineError::Start("a shard died while starting".into())),
        };
        if let Some(e) = failed {
            handle.shutdown();
            handle.join_threads();
            return Err(e);
        }
    }
    drop(reservation);
    Ok(handle)
}

struct ShardCtx {
    index: u16,
    listen: SocketAddr,
    cfg: RuntimeConfig,
    ends: MeshEnds,
    stop: Arc<AtomicBool>,
    bound: mpsc::Sender<Result<SocketAddr, EngineError>>,
}

async fn shard_main(ctx: ShardCtx) {
    let ShardCtx {
        index,
        listen,
        cfg,
        ends,
        stop,
        bound,
    } = ctx;
    // Recover before listening: no client is served from a half-built
    // state, and a corrupt log stops start-up with a message naming the
    // file and offset.
    let shards = usize::from(cfg.shards.max(1));
    let mut shard_cfg = cfg.shard.clone();
    shard_cfg.shard = index;
    shard_cfg.shards = cfg.shards.max(1);
    shard_cfg.durable = true;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let mut core = Shard::new(shard_cfg, seed);
    let log_dir = cfg.data_dir.join(format!("shard-{index}"));
    let (log, report) = match log::open_and_recover(&log_dir, &cfg.log, &mut core) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = bound.send(Err(e));
            return;
        }
    };
    tracing::info!(
        shard = index,
        records = report.records,
        bytes = report.bytes,
        torn_tail_bytes = report.torn_tail_bytes,
        queued = core.queued_items(),
        elapsed_ms = u64::try_from(report.elapsed_ms).unwrap_or(u64::MAX),
        "shard recovered"
    );
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            let _ = bound.send(Err(EngineError::Bind(format!("{listen}: {e}"))));
            return;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = bound.send(Err(EngineError::Bind(format!("{listen}: {e}"))));
            return;
        }
    };
    let rt: RtRef = Rc::new(RefCell::new(ShardRt::new(core, shards)));
    rt.borrow_mut().log = Some(log);
    rt.borrow_mut().metrics = cfg.metrics.clone();
    let scratch = Rc::new(RefCell::new(Scratch::new()));
    let sms = cfg.sms.clone();

    // Report the bound port first: the next shard starts only then, and a
    // channel end's `connect` waits for the other end's shard.
    let _ = bound.send(Ok(addr));
    tracing::info!(shard = index, %addr, "shard listening");

    // Mesh: connect every end concurrently (each waits for its peer).
    let sender_tasks: Vec<_> = ends
        .senders
        .into_iter()
        .map(|s| s.map(|s| glommio::spawn_local(s.connect())))
        .collect();
    let receiver_tasks: Vec<_> = ends
        .receivers
        .into_iter()
        .flatten()
        .map(|r| glommio::spawn_local(r.connect()))
        .collect();
    let mut senders: Vec<Option<ConnectedSender<Envelope>>> = Vec::with_capacity(shards);
    for t in sender_tasks {
        senders.push(match t {
            Some(t) => Some(t.await),
            None => None,
        });
    }
    let mut receivers: Vec<ConnectedReceiver<Envelope>> = Vec::new();
    for t in receiver_tasks {
        receivers.push(t.await);
    }

    for rx in receivers {
        let (rt, sms, scratch, tls) = (rt.clone(), sms.clone(), scratch.clone(), cfg.tls.clone());
        glommio::spawn_local(async move {
            while let Some(env) = rx.recv().await {
                on_envelope(&rt, &sms, &scratch, tls.as_ref(), env);
            }
        })
        .detach();
    }
    let mesh_task = glommio::spawn_local(mesh_sender(rt.clone(), senders));
    let log_task = glommio::spawn_local(log::run(
        rt.clone(),
        sms.clone(),
        cfg.metrics.clone(),
        cfg.ready.clone(),
    ));
    let fetch_task = glommio::spawn_local(fetch::run(rt.clone(), sms.clone()));
    let reclaim_task = glommio::spawn_local(reclaim::run(rt.clone(), cfg.metrics.clone()));

    let accept_task = {
        let (rt, sms, scratch, tls) = (rt.clone(), sms.clone(), scratch.clone(), cfg.tls.clone());
        glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(stream) => on_accept(&rt, &sms, &scratch, tls.as_ref(), stream),
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    };

    // Ticker: timers in the core, metrics, operator commands, stop flag.
    let tick = Duration::from_millis(TICK_MS);
    let control = cfg.control.get(usize::from(index)).cloned();
    let metrics = cfg.metrics.clone();
    let mut accept_task = Some(accept_task);
    let mut ticks: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(tick).await;
        rt.borrow_mut().core.handle_timeout(now_ms());
        drain_actions(&rt, &sms);
        if let Some(rx) = &control {
            while let Ok(cmd) = rx.try_recv() {
                handle_control(&rt, &sms, cmd, &mut accept_task);
            }
        }
        if let Some(m) = metrics.as_ref().and_then(|m| m.shard(index)) {
            // The longest queue walks every user: once a second is enough.
            let longest = if ticks % 10 == 0 {
                Some(
                    rt.borrow()
                        .core
                        .longest_queues(1)
                        .first()
                        .map_or(0, |q| q.1),
                )
            } else {
                None
            };
            publish_metrics(&rt, m, longest);
        }
        // However the shard got poisoned (a failed write or sync, a refused
        // append, a record that could not be read back), it is not ready.
        if rt.borrow().core.is_poisoned() && cfg.ready.load(Ordering::SeqCst) {
            cfg.ready.store(false, Ordering::SeqCst);
        }
        ticks += 1;
    }

    // Graceful stop: no new sockets; everyone is kicked after a flush.
    drop(accept_task.take());
    rt.borrow_mut().core.begin_shutdown();
    drain_actions(&rt, &sms);
    let deadline = now_ms() + cfg.shutdown_grace_ms;
    while (rt.borrow().core.connections() > 0 || rt.borrow().core.undurable_records() > 0)
        && !rt.borrow().core.is_poisoned()
        && now_ms() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // Let the log finish what it started (bounded by the same deadline).
    while !rt.borrow().log.as_ref().is_none_or(log::ShardLog::is_idle) && now_ms() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let left = rt.borrow().core.connections();
    tracing::info!(shard = index, left, "shard stopped");
    rt.borrow_mut().stopping = true;
    drop(mesh_task);
    drop(reclaim_task);
    drop(fetch_task);
    drop(log_task);
}

fn handle_control(
    rt: &RtRef,
    sms: &Arc<dyn SmsGateway>,
    cmd: control::Control,
    accept_task: &mut Option<glommio::Task<()>>,
) {
    match cmd {
        control::Control::Kick { user, reply } => {
            let kicked = rt.borrow_mut().core.kick_user(
                user,
                tern_wire::KickReason::AdminKick,
                "disconnected by an operator",
            );
            drain_actions(rt, sms);
            let _ = reply.send(kicked);
        }
        control::Control::Queues { n, reply } => {
            let _ = reply.send(rt.borrow().core.longest_queues(n));
        }
        control::Control::Drain { reply } => {
            // Dropping the task cancels the pending accept; the listener
            // closes, and SO_REUSEPORT sends new connections elsewhere.
            drop(accept_task.take());
            let connections = rt.borrow().core.connections();
            let _ = reply.send(u64::try_from(connections).unwrap_or(u64::MAX));
        }
    }
}

fn publish_metrics(rt: &RtRef, m: &crate::ops::metrics::ShardMetrics, longest: Option<usize>) {
    // The core's clock has millisecond resolution; the histograms are in µs.
    let dropped = rt.borrow_mut().core.drain_latency_samples(|kind, ms| {
        let us = ms.saturating_mul(1_000);
        match kind {
            tern_core::shard::LatencyKind::SendToAck => m.send_ack_latency_us.record(us),
            tern_core::shard::LatencyKind::SendToDelivered => {
                m.send_delivered_latency_us.record(us);
            }
        }
    });
    if dropped > 0 {
        tracing::debug!(dropped, "latency samples dropped at the bound");
    }
    let r = rt.borrow();
    let stats = r.core.stats();
    m.observe_stats(&stats);
    for code in tern_wire::ErrorCode::ALL {
        m.set_error_count(code, stats.errors(code));
    }
    let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let mesh_queue_depth = r.mesh_out.iter().map(Vec::len).sum::<usize>();
    let prev_longest = m.queue_longest_items.get();
    m.set_gauges(&crate::ops::metrics::ShardGauges {
        connections: to_u64(r.core.connections()),
        online_users: to_u64(r.core.online_users()),
        queue_items: to_u64(r.core.queued_items()),
        queue_longest_items: longest.map_or(prev_longest, to_u64),
        mesh_queue_depth: to_u64(mesh_queue_depth),
        queue_items_spilled: to_u64(r.core.spilled_items()),
        log_segments: r
            .log
            .as_ref()
            .map_or(0, |l| to_u64(l.writer.live_segments().count())),
        log_backpressure: u64::from(r.core.log_backpressure()),
    });
    m.set_poisoned(r.core.is_poisoned());
}

fn on_accept(
    rt: &RtRef,
    sms: &Arc<dyn SmsGateway>,
    scratch: &Rc<RefCell<Scratch>>,
    tls: Option<&Arc<rustls::ServerConfig>>,
    stream: TcpStream,
) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let opened = rt.borrow_mut().core.open(peer.ip(), now_ms());
    let id = match opened {
        Ok(id) => id,
        Err(code) => {
            tracing::debug!(%peer, ?code, "connection refused");
            return;
        }
    };
    let tls = match tls.map(|cfg| TlsSession::new(cfg.clone())) {
        None => None,
        Some(Ok(conn)) => Some(Box::new(conn)),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "TLS session setup failed");
            rt.borrow_mut().core.handle_closed(id, now_ms());
            return;
        }
    };
    spawn_conn(rt, sms, scratch, id, stream, tls);
}

fn spawn_conn(
    rt: &RtRef,
    sms: &Arc<dyn SmsGateway>,
    scratch: &Rc<RefCell<Scratch>>,
    id: tern_core::conn::ConnId,
    stream: TcpStream,
    tls: Option<Box<TlsSession>>,
) {
    glommio::spawn_local(conn::run(
        rt.clone(),
        sms.clone(),
        scratch.clone(),
        id,
        stream,
        tls,
    ))
    .detach();
}

fn on_envelope(
    rt: &RtRef,
    sms: &Arc<dyn SmsGateway>,
    scratch: &Rc<RefCell<Scratch>>,
    _tls: Option<&Arc<rustls::ServerConfig>>,
    env: Envelope,
) {
    match env {
        Envelope::Batch(msgs) => {
            {
                let mut r = rt.borrow_mut();
                let now = now_ms();
                for msg in msgs {
                    r.core.handle_mesh(msg, now);
                }
            }
            drain_actions(rt, sms);
        }
        Envelope::Adopt(adopt) => {
            let mesh::Adopt { fd, tls, state } = *adopt;
            let socket = socket2::Socket::from(std::net::TcpStream::from(fd));
            let stream = TcpStream::from(socket);
            let adopted = rt.borrow_mut().core.adopt(state, now_ms());
            match adopted {
                Ok(id) => spawn_conn(rt, sms, scratch, id, stream, tls),
                Err(code) => tracing::debug!(?code, "adoption refused; closing"),
            }
            drain_actions(rt, sms);
        }
    }
}

/// Sends each tick's batches to the other shards. Waits (back-pressure)
/// when a peer's channel is full.
async fn mesh_sender(rt: RtRef, senders: Vec<Option<ConnectedSender<Envelope>>>) {
    loop {
        poll_fn(|cx| {
            let mut r = rt.borrow_mut();
            if r.has_mesh_out() {
                Poll::Ready(())
            } else {
                r.mesh_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let (batches, adopts) = {
            let mut r = rt.borrow_mut();
            let batches: Vec<_> = r.mesh_out.iter_mut().map(std::mem::take).collect();
            let adopts: Vec<_> = r.adopt_out.iter_mut().map(std::mem::take).collect();
            (batches, adopts)
        };
        for (to, batch) in batches.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            if let Some(Some(tx)) = senders.get(to) {
                if tx.send(Envelope::Batch(batch)).await.is_err() {
                    tracing::warn!(to, "mesh peer gone; batch dropped");
                }
            }
        }
        for (to, list) in adopts.into_iter().enumerate() {
            for adopt in list {
                if let Some(Some(tx)) = senders.get(to) {
                    if tx.send(Envelope::Adopt(Box::new(adopt))).await.is_err() {
                        tracing::warn!(to, "mesh peer gone; connection dropped");
                    }
                }
            }
        }
    }
}
