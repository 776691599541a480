//! The `loanflow` command: parses flags, sets up logging (`RUST_LOG`),
//! installs the signal handlers and the panic hook, runs the subcommand,
//! and turns any error into one line on stderr and exit 1 (a job a signal
//! stopped before its end exits 128 + the signal, after its summary). The
//! only code that exits the process (the library asks it to through
//! [`halt`]).
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default: loanflow's own
//! warnings; librdkafka's log lines only when `RUST_LOG` is set), with
//! colours only when stderr is a terminal.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

/// Records are small and many: mimalloc's thread-local free lists beat the
/// system allocator on the per-record allocations of the hot path. Its v2
/// line (Cargo.toml): with two workers, where a window run's members and
/// answers are freed by the thread that did not allocate them, v2 ran both
/// dataflows faster than v3 in each of two sittings (velocity by 11 % and
/// 23 %, medians; benches/README.md, "Window features", stop 29).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser as _;
use loanflow::cli::{Cli, Command, DEFAULT_DATAFLOW, DEFAULT_INPUT};
use loanflow::commands;
use loanflow::pipeline::cluster::{peer_lost, PEER_LOST};
use loanflow::pipeline::{Control, Interrupted};

/// The filter without `RUST_LOG`: loanflow's warnings, none of librdkafka's
/// own log lines (loanflow says what went wrong in its own words).
const DEFAULT_LOG_FILTER: &str = "warn,librdkafka=off";

/// Logs on stderr: `RUST_LOG` if it is set (and valid), else
/// [`DEFAULT_LOG_FILTER`]; ANSI colours only on a terminal.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER))
        }
        _ => EnvFilter::new(DEFAULT_LOG_FILTER),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// The first SIGINT/SIGTERM sets the returned flag (after recording which
/// signal it was): the job stops reading, delivers what it read, prints its
/// summary and exits (see `pipeline::control`). A second one exits at once,
/// 130 after SIGINT, 143 after SIGTERM.
fn stop_on_signals() -> std::io::Result<(Arc<AtomicBool>, Arc<AtomicUsize>)> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&stop))?;
        signal_hook::flag::register_usize(signal, Arc::clone(&which), signal as usize)?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok((stop, which))
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

/// The error as one line, each cause said once: a cause whose text the
/// line already holds (a typed error that names its source in its own
/// message) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// When a default path (relative to the repository root) is what was not
/// found — loanflow run from another folder — the line that says so and
/// what to do, instead of the OS's words.
fn missing_default(e: &anyhow::Error, line: &str) -> Option<String> {
    let not_found = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    });
    if !not_found {
        return None;
    }
    let (path, flag) = [(DEFAULT_DATAFLOW, "--dataflow"), (DEFAULT_INPUT, "--input")]
        .into_iter()
        .find(|(path, _)| line.contains(path) && !Path::new(path).exists())?;
    let here = std::env::current_dir()
        .map(|d| format!(" in {}", d.display()))
        .unwrap_or_default();
    Some(format!(
        "{path} not found{here}: loanflow's default paths are relative to the repository \
         root, so run it from there (or pass {flag} PATH)"
    ))
}

/// How a command's error ends the process: a job a signal stopped exits
/// 128 + the signal (its summary was printed); any other error is one line
/// on stderr and exit 1.
fn fail(e: &anyhow::Error) -> ExitCode {
    if let Some(stopped) = e.downcast_ref::<Interrupted>() {
        return ExitCode::from(stopped.exit_code() as u8);
    }
    let line = one_line(e);
    let line = missing_default(e, &line).unwrap_or(line);
    eprintln!("loanflow: error: {line}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    if let Err(e) = loanflow::io::failpoints::setup() {
        return fail(&e.into());
    }
    if let Command::Cluster(args) = &cli.command {
        // The launcher handles its signals itself (it passes them on to its
        // processes); its flags go to every process as they were given.
        let run_args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return match commands::cluster::execute(&args.resolved(), &run_args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    // `verify` only reads and reports at its end: a signal ends it at once,
    // as it ends any program that has nothing to finish.
    let (stop, which) = if matches!(cli.command, Command::Verify(_)) {
        (Arc::default(), Arc::default())
    } else {
        match stop_on_signals() {
            Ok(flags) => flags,
            Err(e) => {
                eprintln!("loanflow: error: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let cluster_process = match &cli.command {
        Command::Run(args) => args.cluster.processes.map(|_| args.cluster.process),
        _ => None,
    };
    if let Some(process) = cluster_process {
        exit_when_a_peer_is_lost(process.unwrap_or(0) as usize);
    }
    let control = Control::new(stop, halt).with_signal(which);
    let result = match &cli.command {
        Command::Run(args) => commands::run::execute(&args.resolved(), &control),
        Command::Replay(args) => commands::replay::execute(args, &control),
        Command::Cluster(_) => unreachable!("handled above"),
        Command::Ingest(args) => commands::ingest::execute(args, &control),
        Command::Tail(args) => commands::tail::execute(args, &control),
        Command::Monitor(args) => commands::monitor::execute(args, &control),
        Command::Passthrough(args) => commands::passthrough::execute(args, &control),
        Command::Bench(args) => commands::bench::execute(args, &control),
        Command::Verify(args) => commands::verify::execute(args),
        Command::Generate(args) => commands::generate::execute(args, &control),
        Command::Features(args) => commands::features::execute(args, &control),
        Command::Explain(args) => commands::explain::execute(args, &control),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read input x.csv: {source} (pass --input)")]
        struct Open {
            source: std::io::Error,
        }
        let e = anyhow::Error::from(Open {
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        });
        assert_eq!(one_line(&e), "cannot read input x.csv: gone (pass --input)");
        let e = anyhow::anyhow!("gone").context("cannot read x");
        assert_eq!(one_line(&e), "cannot read x: gone");
    }
}
