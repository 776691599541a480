//! The `loanflow` command: parses flags, sets up logging (`RUST_LOG`),
//! installs the signal handlers and the panic hook, runs the subcommand,
//! and turns any error into one line on stderr and exit 1. The only code
//! that exits the process (the library asks it to through [`halt`]).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Records are small and many: mimalloc's thread-local free lists beat the
/// system allocator on the per-record allocations of the hot path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser as _;
use loanflow::cli::{Cli, Command};
use loanflow::commands;
use loanflow::pipeline::cluster::{peer_lost, PEER_LOST};
use loanflow::pipeline::Control;

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

/// Stops the process at once with one line: how a cluster process whose
/// peers cannot go on leaves (see `pipeline::cluster`).
#[allow(clippy::exit)] // the one place the process exits (the lint guards the library)
fn halt(code: i32, message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(code)
}

/// In cluster mode, a timely network thread's panic (a peer died, or the
/// network did) becomes one line and exit status `PEER_LOST`, not a trace.
fn exit_when_a_peer_is_lost(process: usize) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if let Some(line) = peer_lost(process, &message, std::thread::current().name()) {
            halt(PEER_LOST, &format!("loanflow: error: {line}"));
        }
        default(info)
    }));
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
    if let Err(e) = loanflow::io::failpoints::setup() {
        eprintln!("loanflow: error: {e:#}");
        return ExitCode::FAILURE;
    }
    if let Command::Cluster(args) = &cli.command {
        // The launcher handles its signals itself (it passes them on to its
        // processes); its flags go to every process as they were given.
        let run_args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return match commands::cluster::execute(args, &run_args) {
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
    let cluster_process = match &cli.command {
        Command::Run(args) => args.cluster.processes.map(|_| args.cluster.process),
        Command::Replay(args) => args.run.cluster.processes.map(|_| args.run.cluster.process),
        _ => None,
    };
    if let Some(process) = cluster_process {
        exit_when_a_peer_is_lost(process.unwrap_or(0) as usize);
    }
    let control = Control::new(stop, halt);
    let result = match &cli.command {
        Command::Run(args) => commands::run::execute(args, &control),
        Command::Replay(args) => commands::replay::execute(args, &control),
        Command::Cluster(_) => unreachable!("handled above"),
        Command::Ingest(args) => commands::ingest::execute(args, &control),
        Command::Tail(args) => commands::tail::execute(args, &control),
        Command::Passthrough(args) => commands::passthrough::execute(args),
        Command::Bench(args) => commands::bench::execute(args, &control),
        Command::Verify(args) => commands::verify::execute(args),
        Command::Generate(args) => commands::generate::execute(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loanflow: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
