//! `wgpunch-client`: command line, logging and exit codes around [`wgpunch_client::run`].

use std::process::ExitCode;

use clap::Parser as _;
use wgpunch_client::cli::{Cli, EXIT_ERROR};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match wgpunch_client::run::run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("wgpunch-client: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
