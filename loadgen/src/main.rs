//! `tern-loadgen`: see `tern-loadgen --help` and loadgen/README.md.

use std::process::ExitCode;

use clap::Parser;
use tern_loadgen::{Cli, RunOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.worker {
        return match tern_loadgen::worker_main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tern-loadgen worker: {e}");
                ExitCode::from(2)
            }
        };
    }
    let scenario = match cli.scenario() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tern-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    match tern_loadgen::run(&scenario, &RunOptions::default()) {
        Ok(report) => {
            print!("{}", report.table());
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("tern-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
