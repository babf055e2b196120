//! `tern`: the Tern server. `tern serve` runs it on embedded defaults (data
//! directory, self-signed certificate and SMS outbox made on first run).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tern_engine::server::{self, ServeOptions, SmsChoice, TlsChoice};
use tern_engine::sms::HttpGatewayConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "tern", version, about = "Tern messenger server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = server::LISTEN_DEFAULT, env = "TERN_LISTEN")]
    listen: SocketAddr,
    /// Data directory (created on first run).
    #[arg(long, default_value = server::DATA_DIR_DEFAULT, env = "TERN_DATA_DIR")]
    data_dir: PathBuf,
    /// Shards (executors); default one per core.
    #[arg(long, env = "TERN_SHARDS")]
    shards: Option<u16>,
    /// Do not pin shards to cores.
    #[arg(long)]
    no_pin_cores: bool,
    /// Operator certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key", env = "TERN_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Operator private key (PEM); needs --tls-cert.
    #[arg(long, requires = "tls_cert", env = "TERN_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Extra DNS names or IPs for the generated self-signed certificate.
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// Turn TLS OFF. For benchmarks on loopback only: keys and messages
    /// travel in clear text.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_plaintext: bool,
    /// Send PINs by POSTing JSON to this URL instead of the outbox file.
    #[arg(long, env = "TERN_SMS_HTTP_URL")]
    sms_http_url: Option<String>,
    /// Bearer token for --sms-http-url.
    #[arg(long, env = "TERN_SMS_HTTP_TOKEN", hide_env_values = true)]
    sms_http_token: Option<String>,
    /// Override an engine limit, NAME=VALUE (rates as BURST/PERIOD_MS);
    /// repeatable. E.g. --limit inbox_len_max=50000 --limit
    /// pin_requests_per_source=100000/60000 (for load tests).
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    limits: Vec<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_json);
    let tls = if args.insecure_plaintext {
        TlsChoice::InsecurePlaintext
    } else if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        TlsChoice::Files { cert, key }
    } else {
        TlsChoice::Embedded {
            extra_names: args.tls_names,
        }
    };
    let sms = match args.sms_http_url {
        Some(url) => {
            let mut cfg = HttpGatewayConfig::new(url);
            cfg.bearer_token = args.sms_http_token;
            SmsChoice::Http(cfg)
        }
        None => SmsChoice::Outbox,
    };
    let mut limits = tern_core::limits::Limits::default();
    for assignment in &args.limits {
        if let Err(e) = limits.set(assignment) {
            eprintln!("tern: --limit {e}");
            return ExitCode::FAILURE;
        }
    }
    let opts = ServeOptions {
        limits,
        listen: args.listen,
        shards: args.shards,
        pin_cores: if args.no_pin_cores { Some(false) } else { None },
        data_dir: args.data_dir,
        tls,
        sms,
        ..ServeOptions::default()
    };
    let started = match server::serve(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_banner(&started);
    let stop = started.handle.stop_flag();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("tern: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("tern: stopping (finishing in-flight work)");
    started.handle.join();
    eprintln!("tern: stopped");
    ExitCode::SUCCESS
}

fn print_banner(s: &server::Started) {
    let addr = s.handle.local_addr();
    eprintln!("tern: listening on {addr} with {} shard(s)", s.shards);
    eprintln!("tern: data directory {}", s.data_dir.display());
    match &s.tls {
        Some(id) => {
            eprintln!("tern: TLS certificate {}", id.cert_path.display());
            eprintln!("tern: certificate SHA-256 {}", id.fingerprint_sha256);
            eprintln!(
                "tern: connect with: tern-chat --server 127.0.0.1:{} --pin-sha256 {} ...",
                addr.port(),
                id.fingerprint_sha256
            );
        }
        None => eprintln!("tern: WARNING: TLS is off (--insecure-plaintext)"),
    }
    if let Some(outbox) = &s.sms_outbox {
        eprintln!("tern: SMS PINs are written to {}", outbox.display());
    }
}
