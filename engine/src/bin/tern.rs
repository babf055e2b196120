//! `tern`: the Tern server. `tern serve` runs it on embedded defaults (data
//! directory, self-signed certificate and SMS outbox made on first run).

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tern_engine::config::Config;
use tern_engine::operator::ReloadSource;
use tern_engine::ops::alerts::AlertSettings;
use tern_engine::server::{self, OpsOptions};

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
    /// Kernel and process limit checks for high connection density.
    #[command(subcommand)]
    Tune(TuneCommand),
    /// Check, print or explain the configuration.
    Config(tern_engine::config::ConfigCmdArgs),
    /// Talk to a running server over its admin socket.
    Ctl(tern_engine::ops::ctl::CtlArgs),
}

#[derive(Subcommand, Debug)]
enum TuneCommand {
    /// Report which kernel and process limits fall short of N connections,
    /// with the exact setting that fixes each (docs/TUNING.md). Exits 1
    /// when something is short.
    Check(TuneCheckArgs),
}

#[derive(Args, Debug)]
struct TuneCheckArgs {
    /// Connections the server should hold.
    #[arg(long)]
    connections: u64,
    /// Shards the server will run (default: one per core).
    #[arg(long)]
    shards: Option<u16>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    config: tern_engine::config::ConfigArgs,
    /// Start even if a shard log is corrupt, cutting it at the damage (the
    /// records after it are lost; the start-up log says how many).
    #[arg(long)]
    repair_log: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Tune(TuneCommand::Check(args)) => tune_check(&args),
        Command::Config(args) => tern_engine::config::run_config_cmd(args),
        Command::Ctl(args) => tern_engine::ops::ctl::run_ctl(args),
    }
}

fn tune_check(args: &TuneCheckArgs) -> ExitCode {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = args
        .shards
        .unwrap_or_else(|| u16::try_from(cores).unwrap_or(u16::MAX));
    let report = tern_tuning::check(args.connections, shards);
    if args.json {
        match report.to_json() {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("tern: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.render_table());
    }
    if report.has_short() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
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
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_json);
    let mut opts = match config.serve_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::FAILURE;
        }
    };
    opts.repair_log = args.repair_log;
    opts.ops = OpsOptions {
        http_listen: config.ops.http_enabled.then_some(config.ops.http_listen),
        admin_socket: Some(config.admin_socket_path()),
        alerts: Some(AlertSettings::from(&config.alerts)),
        reload: Some(ReloadSource {
            args: args.config.clone(),
            current: config,
        }),
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
    started.join();
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
    if let Some(http) = s.ops.http {
        eprintln!("tern: operations endpoint http://{http}/metrics (/healthz, /readyz)");
    }
    if let Some(sock) = &s.ops.admin_socket {
        eprintln!("tern: admin socket {} (tern ctl status)", sock.display());
    }
}
