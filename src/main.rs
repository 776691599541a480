//! The `loanflow` command: parses flags, sets up logging (`RUST_LOG`), runs
//! the subcommand, and turns any error into one line on stderr and exit 1.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Records are small and many: mimalloc's thread-local free lists beat the
/// system allocator on the per-record allocations of the hot path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser as _;
use loanflow::cli::{Cli, Command};

/// SIGINT/SIGTERM set the returned flag: the run finishes what it read,
/// delivers, commits and exits 0. A second SIGINT/SIGTERM exits at once.
fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = loanflow::failpoints::setup() {
        eprintln!("loanflow: error: {e:#}");
        return ExitCode::FAILURE;
    }
    if let Command::Cluster(args) = &cli.command {
        // The launcher handles its signals itself (it passes them on to its
        // processes); its flags go to every process as they were given.
        let run_args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return match loanflow::cluster::launch(args, &run_args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loanflow: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let stop = match stop_on_signals() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("loanflow: error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match &cli.command {
        Command::Run(args) => {
            loanflow::run::run_restarting(args, stop).map(|summary| eprintln!("{summary}"))
        }
        Command::Replay(args) => {
            loanflow::replay::replay(args, stop).map(|summary| eprintln!("{summary}"))
        }
        Command::Cluster(_) => unreachable!("handled above"),
        Command::Ingest(args) => {
            loanflow::produce::ingest(args, stop).map(|summary| eprintln!("{summary}"))
        }
        Command::Tail(args) => loanflow::produce::tail(args, stop),
        Command::Passthrough(args) => {
            loanflow::produce::passthrough(args).map(|summary| eprintln!("{summary}"))
        }
        Command::Bench(args) => loanflow::bench::bench(args, stop).and_then(|report| {
            print!("{}", report.table());
            if let Some(path) = &args.json {
                let text = serde_json::to_string_pretty(&report.to_json())?;
                std::fs::write(path, text + "\n")
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            }
            Ok(())
        }),
        Command::Verify(args) => loanflow::verify::verify(args).and_then(|report| {
            println!("{report}");
            if report.ok(args.exactly_once) {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "verify: the output does not match the input (see the counts above)"
                ))
            }
        }),
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
