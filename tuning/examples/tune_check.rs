//! What `tern tune check` prints, before the subcommand exists:
//! `cargo run -p tern-tuning --example tune_check -- 1000000 [SHARDS] [--json]`.
//! Shards default to the CPUs this process may use. Exit status 1 when a
//! server limit is short, 2 on bad arguments.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let mut numbers = args.iter().filter(|a| *a != "--json");
    let connections = match numbers.next().map(|a| a.parse::<u64>()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: tune_check CONNECTIONS [SHARDS] [--json]");
            return ExitCode::from(2);
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = match numbers.next().map(|a| a.parse::<u16>()) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("SHARDS: {e}");
            return ExitCode::from(2);
        }
        None => u16::try_from(cpus).unwrap_or(u16::MAX),
    };
    let report = tern_tuning::check(connections, shards);
    if json {
        match report.to_json() {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("JSON: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{report}");
    }
    if report.has_short() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
