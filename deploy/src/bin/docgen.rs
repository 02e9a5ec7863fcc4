//! `wgpunch-docgen`: writes the man pages and shell completions of `wgpunch-client` and
//! `wgpunch-server`, generated from their clap definitions, under a directory laid out like
//! `PREFIX/share`. `scripts/install` runs it; its output is never committed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;

/// Writes the man pages and shell completions of wgpunch-client and wgpunch-server.
///
/// The tree under DIR mirrors PREFIX/share: man/man1/*.1, bash-completion/completions/*,
/// zsh/site-functions/_*, fish/vendor_completions.d/*.fish. The files written are listed on
/// standard output, one per line, relative to DIR.
///
/// Exit status: 0 on success, 1 on an error, 2 on a usage error.
#[derive(Debug, Parser)]
#[command(name = "wgpunch-docgen", version, about, long_about)]
struct Cli {
    /// The directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgpunch-docgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let written = wgpunch_deploy::docs::generate(&cli.out)
        .with_context(|| format!("generating documentation in {}", cli.out.display()))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
