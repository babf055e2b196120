//! `tern-chat`: a command-line chat client for Tern. See client/README.md.

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(commands::Failure(message)) => {
            eprintln!("tern-chat: {message}");
            ExitCode::FAILURE
        }
    }
}
