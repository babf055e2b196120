//! From options to a running server: data directory, TLS identity, SMS
//! gateway, limits check, then the runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tern_core::limits::Limits;
use tern_core::shard::ShardConfig;

use crate::error::EngineError;
use crate::runtime::{self, RuntimeConfig, ServerHandle};
use crate::sms::{HttpGateway, HttpGatewayConfig, OutboxGateway, SmsGateway};
use crate::tls::{self, TlsIdentity, TlsSource};

/// Default listen address: all interfaces, port 7443.
pub const LISTEN_DEFAULT: &str = "0.0.0.0:7443";

/// Default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "tern-data";

/// How often the alert watcher reads the queue gauges.
pub const ALERT_INTERVAL_MS: u64 = 1_000;

/// How long a stopping shard waits for clients to take their last frames.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 5_000;

/// Where the TLS identity comes from.
#[derive(Clone, Debug)]
pub enum TlsChoice {
    /// `<data_dir>/tls/{cert,key}.pem`, generated self-signed on first run.
    Embedded { extra_names: Vec<String> },
    /// The operator's PEM files.
    Files { cert: PathBuf, key: PathBuf },
    /// No TLS at all. Only for benchmarks comparing with and without TLS;
    /// the server says so loudly at start.
    InsecurePlaintext,
}

/// Which SMS gateway sends PINs.
#[derive(Clone, Debug)]
pub enum SmsChoice {
    /// Append to `<data_dir>/sms-outbox.jsonl` and log (development).
    Outbox,
    /// POST to an HTTP SMS API.
    Http(HttpGatewayConfig),
}

/// The operator surface: all off by default (tests), on in `tern serve`.
#[derive(Debug, Default)]
pub struct OpsOptions {
    /// Serve /metrics, /healthz and /readyz here.
    pub http_listen: Option<SocketAddr>,
    /// Answer `tern ctl` on this Unix socket.
    pub admin_socket: Option<PathBuf>,
    /// Watch queue lengths and fire alerts.
    pub alerts: Option<crate::ops::alerts::AlertSettings>,
    /// Where `reload` re-reads the configuration.
    pub reload: Option<crate::operator::ReloadSource>,
}

/// Everything `tern serve` can be told.
#[derive(Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Default: one per available core.
    pub shards: Option<u16>,
    /// Default: pin when there are no more shards than cores.
    pub pin_cores: Option<bool>,
    pub data_dir: PathBuf,
    pub tls: TlsChoice,
    pub sms: SmsChoice,
    pub limits: Limits,
    pub shutdown_grace_ms: u64,
    /// When a message counts as stored: after fdatasync (default), or
    /// `UnsafeNoFsync` (benchmarks only: survives kill -9, not power loss).
    pub durability: tern_log::Durability,
    /// Cut a corrupt log at the damage instead of refusing to start.
    pub repair_log: bool,
    /// Log segment size, group-commit batch and pending bounds.
    pub log_segment_bytes_max: u32,
    pub log_batch_bytes_max: usize,
    pub log_pending_bytes_max: usize,
    pub ops: OpsOptions,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            shards: None,
            pin_cores: None,
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            tls: TlsChoice::Embedded {
                extra_names: Vec::new(),
            },
            sms: SmsChoice::Outbox,
            limits: Limits::default(),
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
            durability: tern_log::Durability::Fsync,
            repair_log: false,
            log_segment_bytes_max: tern_log::writer::SEGMENT_BYTES_MAX_DEFAULT,
            log_batch_bytes_max: tern_log::writer::BATCH_BYTES_MAX_DEFAULT,
            log_pending_bytes_max: tern_log::writer::PENDING_BYTES_MAX_DEFAULT,
            ops: OpsOptions::default(),
        }
    }
}

/// A started server and what a person needs to connect to it.
#[derive(Debug)]
pub struct Started {
    pub handle: ServerHandle,
    pub tls: Option<TlsIdentity>,
    pub data_dir: PathBuf,
    pub sms_outbox: Option<PathBuf>,
    pub shards: u16,
    pub metrics: Arc<crate::ops::metrics::Metrics>,
    /// True while every shard is recovered and accepting (/readyz).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    pub ops: crate::operator::OpsAddrs,
    ops_http: Option<crate::operator::OpsHttp>,
    admin: Option<crate::ops::admin::AdminServer>,
    alerts: Option<Arc<crate::ops::alerts::AlertWatcher>>,
}

impl Started {
    /// Waits until the server stops (signal, or `handle.shutdown()`), then
    /// stops the operator surface.
    pub fn join(mut self) {
        let handle = std::mem::replace(&mut self.handle, ServerHandle::detached());
        handle.join();
        self.stop_ops();
    }

    /// Stops the server and waits.
    pub fn stop(self) {
        self.handle.shutdown();
        self.join();
    }

    fn stop_ops(&mut self) {
        self.ready.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(mut http) = self.ops_http.take() {
            http.stop();
        }
        if let Some(alerts) = self.alerts.take() {
            if let Ok(alerts) = Arc::try_unwrap(alerts) {
                alerts.stop();
            }
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop_ops();
    }
}

/// Prepares everything and starts the shards.
pub fn serve(opts: ServeOptions) -> Result<Started, EngineError> {
    opts.limits
        .validate()
        .map_err(|e| EngineError::Config(e.to_string()))?;
    std::fs::create_dir_all(&opts.data_dir).map_err(|source| EngineError::DataDir {
        path: opts.data_dir.clone(),
        source,
    })?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = match opts.shards {
        Some(0) => return Err(EngineError::Config("shards must be at least 1".into())),
        Some(n) => n,
        None => u16::try_from(cores).unwrap_or(u16::MAX),
    };
    let pin_cores = opts.pin_cores.unwrap_or(usize::from(shards) <= cores);
    check_shard_count(&opts.data_dir, shards)?;
    let log_writer = tern_log::WriterOptions {
        durability: opts.durability,
        segment_bytes_max: opts.log_segment_bytes_max,
        batch_bytes_max: opts.log_batch_bytes_max,
        pending_bytes_max: opts.log_pending_bytes_max,
    };
    log_writer
        .validate()
        .map_err(|e| EngineError::Config(format!("log: {e}")))?;
    if opts.durability == tern_log::Durability::UnsafeNoFsync {
        tracing::warn!(
            "UNSAFE: durability = unsafe-no-fsync: ServerAck is sent before fdatasync. \
             Survives kill -9, NOT power loss. Benchmarks only."
        );
    }

    let (tls_identity, tls_config) = match &opts.tls {
        TlsChoice::InsecurePlaintext => {
            tracing::warn!(
                "INSECURE: TLS is OFF (--insecure-plaintext). Device keys and messages \
                 cross the network in clear text. Use only for benchmarks on loopback."
            );
            (None, None)
        }
        TlsChoice::Embedded { extra_names } => {
            let id = tls::load_tls_source(&TlsSource::Embedded {
                data_dir: opts.data_dir.clone(),
                extra_names: extra_names.clone(),
            })?;
            let cfg = tls::server_config(&id)?;
            (Some(id), Some(cfg))
        }
        TlsChoice::Files { cert, key } => {
            let id = tls::load_tls_source(&TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            })?;
            let cfg = tls::server_config(&id)?;
            (Some(id), Some(cfg))
        }
    };
    if let Some(id) = &tls_identity {
        id.log_summary();
    }

    let (sms, sms_outbox): (Arc<dyn SmsGateway>, Option<PathBuf>) = match &opts.sms {
        SmsChoice::Outbox => {
            let gw = OutboxGateway::new(&opts.data_dir);
            let path = gw.path().to_path_buf();
            tracing::info!(outbox = %path.display(), "SMS gateway: outbox file (development)");
            (Arc::new(gw), Some(path))
        }
        SmsChoice::Http(cfg) => {
            let gw = HttpGateway::new(cfg.clone())?;
            tracing::info!(url = %gw.url(), "SMS gateway: HTTP");
            (Arc::new(gw), None)
        }
    };

    let shard_cfg = ShardConfig::new(0, shards, opts.limits.clone());
    let metrics = crate::ops::metrics::Metrics::new(shards);
    let (control_tx, control_rx) = runtime::control::channels(usize::from(shards));
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handle = runtime::start(RuntimeConfig {
        listen: opts.listen,
        shards,
        pin_cores,
        tls: tls_config,
        shard: shard_cfg,
        sms,
        shutdown_grace_ms: opts.shutdown_grace_ms,
        data_dir: opts.data_dir.clone(),
        log: tern_log::LogOptions {
            writer: log_writer,
            repair: opts.repair_log,
            ..tern_log::LogOptions::default()
        },
        metrics: Some(metrics.clone()),
        control: control_rx,
        ready: ready.clone(),
    })?;
    // Every shard has recovered and listens.
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let OpsOptions {
        http_listen,
        admin_socket,
        alerts,
        reload,
    } = opts.ops;
    let ops_http = match http_listen {
        Some(listen) => {
            let state = crate::ops::http::OpsState::with(
                metrics.clone(),
                ready.clone(),
                crate::ops::http::HttpLimits::default(),
            );
            let http = crate::operator::OpsHttp::start(listen, state)?;
            tracing::info!(addr = %http.addr, "operations endpoint: /metrics /healthz /readyz");
            Some(http)
        }
        None => None,
    };
    let alerts = match alerts {
        Some(settings) => Some(Arc::new(
            crate::ops::alerts::AlertWatcher::spawn(
                metrics.clone(),
                settings,
                ALERT_INTERVAL_MS,
                crate::clock::now_ms,
            )
            .map_err(|e| EngineError::Start(format!("alert watcher: {e}")))?,
        )),
        None => None,
    };
    let admin = match &admin_socket {
        Some(path) => {
            let handler = crate::operator::EngineAdmin {
                control: control_tx,
                metrics: metrics.clone(),
                ready: ready.clone(),
                draining: std::sync::atomic::AtomicBool::new(false),
                started: std::time::Instant::now(),
                shards,
                reload: reload.map(std::sync::Mutex::new),
                alerts: alerts.clone(),
            };
            let server = crate::ops::admin::AdminServer::spawn(path, Arc::new(handler))
                .map_err(|e| EngineError::Start(format!("admin socket {}: {e}", path.display())))?;
            tracing::info!(socket = %path.display(), "admin socket (tern ctl)");
            Some(server)
        }
        None => None,
    };
    tracing::info!(
        addr = %handle.local_addr(),
        shards,
        pin_cores,
        tls = tls_identity.is_some(),
        "tern ready"
    );
    Ok(Started {
        handle,
        tls: tls_identity,
        data_dir: opts.data_dir,
        sms_outbox,
        shards,
        metrics,
        ready,
        ops: crate::operator::OpsAddrs {
            http: ops_http.as_ref().map(|h| h.addr),
            admin_socket,
        },
        ops_http,
        admin,
        alerts,
    })
}

/// Name of the file in the data directory that records the shard count.
pub const SHARDS_FILE: &str = "shards";

/// Users live on `hash(user) % shards`, and each shard's log holds its own
/// users: starting with a different shard count would strand them. The
/// count is written on first start and checked after.
fn check_shard_count(data_dir: &std::path::Path, shards: u16) -> Result<(), EngineError> {
    let path = data_dir.join(SHARDS_FILE);
    let io = |source| EngineError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let recorded: u16 = text.trim().parse().map_err(|_| {
                EngineError::Config(format!("{} does not hold a shard count", path.display()))
            })?;
            if recorded != shards {
                return Err(EngineError::Config(format!(
                    "this data directory was created with {recorded} shards and users are \
                     placed by shard; start with --shards {recorded} (changing the count \
                     needs a migration that does not exist yet)"
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{shards}\n")).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}
