//! The operator's surface of a running server, glued to the runtime: the
//! HTTP endpoint (/metrics, /healthz, /readyz) on its own small glommio
//! executor, the queue-length alert watcher, and the admin socket whose
//! commands reach the shards over their control channels.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tern_core::user::{home_shard, UserId};

use crate::config::{Config, ConfigArgs};
use crate::error::EngineError;
use crate::ops::admin::{
    AdminHandler, CommandError, DrainReply, ErrorKind, KickReply, QueuesReply, ReloadReply,
    StatusReply,
};
use crate::ops::alerts::{AlertSettings, AlertWatcher};
use crate::ops::http::OpsState;
use crate::ops::metrics::{Metrics, MetricsSnapshot};
use crate::runtime::control::Control;

/// How long an admin command waits for a shard's answer.
const SHARD_REPLY_TIMEOUT_MS: u64 = 2_000;

/// The ops HTTP endpoint's executor.
#[derive(Debug)]
pub(crate) struct OpsHttp {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl OpsHttp {
    /// Binds `listen` and serves on a dedicated executor (not a shard: a
    /// slow scraper must never delay messages).
    pub(crate) fn start(listen: SocketAddr, state: Arc<OpsState>) -> Result<Self, EngineError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stop_flag = stop.clone();
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name("tern-ops-http")
            .spawn(move || async move {
                let listener = match glommio::net::TcpListener::bind(listen) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(format!("ops endpoint {listen}: {e}")));
                        return;
                    }
                };
                let _ = tx.send(listener.local_addr().map_err(|e| e.to_string()));
                let server = glommio::spawn_local(crate::ops::http::serve(listener, state));
                while !stop_flag.load(Ordering::SeqCst) {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                drop(server);
            })
            .map_err(|e| EngineError::Start(format!("ops executor: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("tern-ops-join".into())
            .spawn(move || {
                let _ = handle.join();
            })
            .map_err(|e| EngineError::Start(format!("ops join thread: {e}")))?;
        let addr = match rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return Err(EngineError::Bind(e)),
            Err(_) => return Err(EngineError::Start("ops executor died".into())),
        };
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for OpsHttp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What `reload` re-reads.
#[derive(Debug)]
pub struct ReloadSource {
    pub args: ConfigArgs,
    pub current: Config,
}

/// The admin commands, carried out by the shards.
pub(crate) struct EngineAdmin {
    pub(crate) control: Vec<Sender<Control>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) draining: AtomicBool,
    pub(crate) started: Instant,
    pub(crate) shards: u16,
    pub(crate) reload: Option<Mutex<ReloadSource>>,
    pub(crate) alerts: Option<Arc<AlertWatcher>>,
}

fn shard_gone() -> CommandError {
    CommandError::new(ErrorKind::Failed, "a shard did not answer in time")
}

impl EngineAdmin {
    fn ask<T>(
        &self,
        shard: usize,
        make: impl FnOnce(Sender<T>) -> Control,
    ) -> Result<T, CommandError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sender = self.control.get(shard).ok_or_else(shard_gone)?;
        sender.try_send(make(tx)).map_err(|_| shard_gone())?;
        rx.recv_timeout(Duration::from_millis(SHARD_REPLY_TIMEOUT_MS))
            .map_err(|_| shard_gone())
    }
}

impl AdminHandler for EngineAdmin {
    fn status(&self) -> StatusReply {
        StatusReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            shards: self.shards,
            connections: self
                .metrics
                .shards()
                .iter()
                .map(|s| s.connections.get())
                .sum(),
            ready: self.ready.load(Ordering::SeqCst),
            draining: self.draining.load(Ordering::SeqCst),
        }
    }

    fn stats(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    fn queues(&self, top: usize) -> Result<QueuesReply, CommandError> {
        let mut per_shard = Vec::with_capacity(self.control.len());
        for shard in 0..self.control.len() {
            let list = self.ask(shard, |reply| Control::Queues { n: top, reply })?;
            per_shard.push((u16::try_from(shard).unwrap_or(u16::MAX), list));
        }
        Ok(QueuesReply::merge(per_shard, top))
    }

    fn kick(&self, user: UserId) -> Result<KickReply, CommandError> {
        let home = usize::from(home_shard(user, self.shards));
        let was_online = self.ask(home, |reply| Control::Kick { user, reply })?;
        Ok(KickReply {
            user: user.to_phone(),
            was_online,
        })
    }

    fn drain(&self) -> Result<DrainReply, CommandError> {
        let already_draining = self.draining.swap(true, Ordering::SeqCst);
        // Not ready: load balancers stop sending new clients here.
        self.ready.store(false, Ordering::SeqCst);
        let mut connections = 0u64;
        for shard in 0..self.control.len() {
            connections += self.ask(shard, |reply| Control::Drain { reply })?;
        }
        Ok(DrainReply {
            already_draining,
            connections,
        })
    }

    fn reload(&self) -> Result<ReloadReply, CommandError> {
        let Some(source) = &self.reload else {
            return Err(CommandError::new(
                ErrorKind::Failed,
                "this server was not started from a configuration",
            ));
        };
        let mut source = source
            .lock()
            .map_err(|_| CommandError::new(ErrorKind::Failed, "reload state poisoned"))?;
        let new = Config::load(&source.args)
            .map_err(|e| CommandError::new(ErrorKind::Failed, e.to_string()))?;
        let changes = source.current.changes(&new);
        if let Some(alerts) = &self.alerts {
            alerts.set_settings(AlertSettings::from(&new.alerts));
        }
        let file = source.args.config.clone();
        source.current = new;
        Ok(ReloadReply::from_changes(file.as_deref(), changes))
    }
}

/// Where the admin socket and HTTP endpoint are, for the start banner.
#[derive(Debug, Default)]
pub struct OpsAddrs {
    pub http: Option<SocketAddr>,
    pub admin_socket: Option<PathBuf>,
}
