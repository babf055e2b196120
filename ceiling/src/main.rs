//! `tern-ceiling`: see `tern-ceiling --help` and ceiling/README.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use tern_ceiling::{Config, Limits, LISTEN_DEFAULT};

// The same allocator as `tern`, so allocation costs compare.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Raw forwarding ceiling for Tern: pairs connections by a hello frame and
/// forwards every later u32-LE length-prefixed frame verbatim to the peer
/// (no parsing, no storage, no acks). One glommio executor per core; core
/// k listens on PORT + k. TLS 1.3 with Tern's exact rustls configuration
/// unless --insecure-plaintext. Stops on SIGINT/SIGTERM and prints its
/// counters.
#[derive(Debug, Parser)]
#[command(name = "tern-ceiling", version, max_term_width = 100)]
struct Cli {
    /// Core 0's address; core k listens on the next ports (PORT + k).
    #[arg(long, default_value = LISTEN_DEFAULT)]
    listen: SocketAddr,
    /// Every core listens on the --listen port (SO_REUSEPORT, the kernel
    /// spreads connections, as over Tern's shards). The ends of a pair then
    /// meet only by chance: for accept/handshake measurements.
    #[arg(long)]
    shared_port: bool,
    /// Executors (one per core). [default: the available cores]
    #[arg(long)]
    cores: Option<usize>,
    /// Do not pin executor k to CPU k.
    #[arg(long)]
    no_pin: bool,
    /// Certificate chain (PEM), e.g. a Tern data dir's tls/cert.pem, so
    /// both servers use the same certificate. Needs --key.
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
    /// Without --cert: where the self-signed certificate is generated (by
    /// Tern's own code, in DIR/tls/) or reused.
    #[arg(long, value_name = "DIR", default_value = "ceiling-data")]
    data_dir: PathBuf,
    /// Plain TCP, no TLS.
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    insecure_plaintext: bool,
    /// Largest frame payload, bytes; a larger one closes the pair. [default: Tern's, 65536]
    #[arg(long)]
    frame_bytes_max: Option<u32>,
    /// Connections per core. [default: Tern's per-shard bound]
    #[arg(long)]
    conns_per_core_max: Option<usize>,
    /// Bytes waiting to be written to one connection before it is cut off
    /// as a slow reader (with its pair). [default: Tern's, 262144]
    #[arg(long)]
    out_bytes_max: Option<usize>,
    /// Milliseconds from accept to a complete hello (TLS handshake included). [default: 10000]
    #[arg(long)]
    hello_timeout_ms: Option<u64>,
    /// Milliseconds a connection waits for its peer's hello. [default: 30000]
    #[arg(long)]
    pair_wait_ms: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern-ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), tern_ceiling::CeilingError> {
    use tern_engine::tls;
    let d = Limits::default();
    let limits = Limits {
        frame_bytes_max: cli.frame_bytes_max.unwrap_or(d.frame_bytes_max),
        conns_per_core_max: cli.conns_per_core_max.unwrap_or(d.conns_per_core_max),
        out_bytes_max: cli.out_bytes_max.unwrap_or(d.out_bytes_max),
        hello_timeout_ms: cli.hello_timeout_ms.unwrap_or(d.hello_timeout_ms),
        pair_wait_ms: cli.pair_wait_ms.unwrap_or(d.pair_wait_ms),
    };
    let tls = if cli.insecure_plaintext {
        None
    } else {
        let identity = match (&cli.cert, &cli.key) {
            (Some(cert), Some(key)) => tls::load_pem_pair(cert, key)?,
            _ => tls::load_or_generate(&cli.data_dir, &[])?,
        };
        eprintln!(
            "tern-ceiling: TLS certificate {} (SHA-256 {})",
            identity.cert_path.display(),
            identity.fingerprint_sha256
        );
        Some(tls::server_config(&identity)?)
    };
    let cores = cli
        .cores
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let handle = tern_ceiling::start(Config {
        listen: cli.listen,
        shared_port: cli.shared_port,
        cores,
        pin_cores: !cli.no_pin,
        tls: tls.clone(),
        limits,
    })?;
    let addrs = handle.addrs();
    let ports: Vec<String> = addrs.iter().map(|a| a.port().to_string()).collect();
    eprintln!(
        "tern-ceiling: listening on {} ports {} ({} cores, {}); {}",
        addrs.first().map_or(String::new(), |a| a.ip().to_string()),
        ports.join(","),
        addrs.len(),
        if tls.is_some() {
            "TLS 1.3"
        } else {
            "PLAINTEXT"
        },
        if cli.shared_port {
            "one port shared by every core (pairs meet only by chance)".to_owned()
        } else {
            format!(
                "pair k connects both ends to port {} + k % {}",
                ports.first().map_or("?", String::as_str),
                addrs.len()
            )
        }
    );
    let stop = handle.stop_flag();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| tern_ceiling::CeilingError::Start(format!("signal handler: {e}")))?;
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = handle.stats();
    handle.stop();
    eprintln!(
        "tern-ceiling: stopped; accepted {}, pairs {}, frames forwarded {}, closes {:?}",
        stats.accepted, stats.pairs, stats.frames_forwarded, stats.closes
    );
    Ok(())
}
