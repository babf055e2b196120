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

/// Everything `tern serve` can be told.
#[derive(Clone, Debug)]
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
    let handle = runtime::start(RuntimeConfig {
        listen: opts.listen,
        shards,
        pin_cores,
        tls: tls_config,
        shard: shard_cfg,
        sms,
        shutdown_grace_ms: opts.shutdown_grace_ms,
    })?;
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
    })
}
