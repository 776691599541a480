//! The `loanflow` command: parses flags, sets up logging (`RUST_LOG`), runs
//! the subcommand, and turns any error into one line on stderr and exit 1.

use std::process::ExitCode;

/// Records are small and many: mimalloc's thread-local free lists beat the
/// system allocator on the per-record allocations of the hot path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser as _;
use loanflow::cli::{Cli, Command};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => loanflow::run::run(args).map(|summary| eprintln!("{summary}")),
        Command::Generate(args) => loanflow::generate::generate(args).map(|n| {
            eprintln!(
                "loanflow: wrote {n} resampled applications to {}",
                args.output.display()
            )
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loanflow: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
