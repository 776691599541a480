//! `loanflow cluster`: launches N local `loanflow run` processes connected
//! as one timely cluster on loopback, to try cluster mode on one machine
//! (what a process of a cluster does is [`crate::pipeline::cluster`]).
//! Passes signals on, prefixes each process's lines with `[pI]`, and if a
//! process dies stops the others and names the one to blame. Processes
//! that a passed-on signal stopped before the end of their input exit
//! 128 + the signal after their summaries, and so does the launcher.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use crate::cli::RunArgs;
use crate::pipeline::cluster::{PEER_LOST, STOPPED};
use crate::pipeline::load::load;
use crate::pipeline::Interrupted;

extern "C" {
    /// POSIX kill(2); std has no portable way to send SIGTERM to a child.
    fn kill(pid: i32, sig: i32) -> i32;
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) takes any pid and signal number and only returns an
    // error for bad ones. The pid is a child this process has not reaped yet
    // (the launcher signals only children whose exit it has not collected),
    // so it cannot have been reused by another process.
    unsafe {
        kill(child.id() as i32, sig);
    }
}

/// How long the others get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Free loopback ports, found by binding port 0 (all at once, so they differ)
/// and releasing them for the processes to bind.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot find free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Whether something listens on loopback TCP `port`, from `/proc/net/tcp`
/// (`None` where that cannot be read). Looking never touches the port.
fn listening(port: u16) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let wanted = format!(":{port:04X}");
    Some(table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let local = fields.next().unwrap_or_default();
        let state = fields.nth(1).unwrap_or_default();
        local.ends_with(&wanted) && state == "0A"
    }))
}

/// A temporary folder for the hostfile, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "loanflow-cluster-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        )));
        std::fs::create_dir_all(&dir.0).context("cannot create a temporary folder")?;
        Ok(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies `from` to `to` line by line, each line prefixed.
fn pump(from: impl Read + Send + 'static, prefix: String, to_stdout: bool) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    let mut out = Vec::with_capacity(prefix.len() + line.len());
                    out.extend_from_slice(prefix.as_bytes());
                    out.extend_from_slice(&line);
                    // Whole lines in one write: lines of processes never mix.
                    let _ = if to_stdout {
                        std::io::stdout().lock().write_all(&out)
                    } else {
                        std::io::stderr().lock().write_all(&out)
                    };
                }
            }
        }
    });
}

/// Waits (a few seconds at most) until `child` listens on `port`, exits, or
/// the launcher gets a signal.
fn wait_listening(port: u16, child: &mut Child, signalled: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !signalled.load(Ordering::Relaxed) {
        match (listening(port), child.try_wait()) {
            (Some(false), Ok(None)) => std::thread::sleep(Duration::from_millis(2)),
            _ => return,
        }
    }
}

/// Why a process ended, as the launcher reports it.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("died (killed by signal {sig})"),
        _ => format!("ended ({status})"),
    }
}

/// How much a failed process is to blame for the cluster's failure: killed
/// by a signal the launcher did not send > failed by itself > stopped
/// because a peer was lost or it was told to stop (exit 128 + the signal
/// the launcher sent it).
fn blame(status: ExitStatus, signalled_by_us: Option<i32>) -> u8 {
    let stopped_by_us = |code: i32| signalled_by_us.is_some_and(|sig| code == 128 + sig);
    match (status.code(), status.signal()) {
        (None, Some(sig)) if Some(sig) != signalled_by_us => 3,
        (Some(code), _) if code != PEER_LOST && code != STOPPED && !stopped_by_us(code) => 2,
        _ => 1,
    }
}

/// Whether `status` is a process's answer to the signal `passed_on` (from
/// the user, passed on by the launcher): it stopped before the end of its
/// input and exited 128 + the signal after its summary.
fn stopped_as_asked(status: ExitStatus, passed_on: Option<i32>) -> bool {
    passed_on.is_some_and(|sig| status.code() == Some(128 + sig))
}

/// `loanflow cluster`: launches `--processes N` local `loanflow run`
/// processes with `run_args` (the flags given to `cluster`, passed on as
/// they are) and supervises them. Returns `Ok` when every process exits 0.
pub fn execute(args: &RunArgs, run_args: &[OsString]) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let processes = args
        .cluster
        .processes
        .ok_or_else(|| anyhow!("give --processes N: how many processes to launch"))?
        as usize;
    if args.cluster.process.is_some() || args.cluster.hostfile.is_some() {
        return Err(anyhow!(
            "`loanflow cluster` picks --process and --hostfile itself: use `loanflow run` to give them"
        ));
    }
    // Set-up errors shared by every process are one line here, not N.
    load(
        &args.pipeline.dataflow,
        args.pipeline.model.as_deref(),
        args.stages != crate::dataflow::graph::Stages::Clean,
    )?;
    // Signals go to the launcher, which passes each on exactly once.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    // Seen while processes are still being started (they get it right after).
    let signalled_early = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&signalled_early))
            .context("cannot install signal handlers")?;
    }
    if let Some(addr) = &args.http {
        // Each process serves on ADDR's port + its index (pipeline::run),
        // or on a port of its own with `:0`; once bound, it says where on
        // its stderr, which is passed on with the rest (`[pI] loanflow:
        // process I serves http://…/`). Checked here: one line, not N.
        let last = u16::try_from(processes.saturating_sub(1)).unwrap_or(u16::MAX);
        crate::io::http::with_port_offset(addr, last)?;
    }
    let dir = TempDir::new()?;
    let (hostfile, ports) = write_hostfile(&dir, processes)?;
    tracing::info!(processes, hostfile = %hostfile.display(), "launching");
    let mut children = spawn(run_args, &hostfile, &ports, &signalled_early)?;
    let (failures, stopped) = supervise(&mut children, &mut signals);
    // Let the pumps print the last lines.
    std::thread::sleep(Duration::from_millis(50));
    match culprit(&failures) {
        // Stopped by the user's signal before the end of the input: the
        // processes printed their summaries; exit as they did.
        None => match stopped {
            Some(signal) => Err(Interrupted { signal }.into()),
            None => Ok(()),
        },
        Some((i, status)) => {
            let others = if processes == 2 {
                "the other process was stopped"
            } else {
                "the others were stopped"
            };
            Err(anyhow!(
                "process {i} of {processes} {}; {others}",
                describe(status)
            ))
        }
    }
}

/// A hostfile of free loopback ports, one per process, in `dir`.
fn write_hostfile(dir: &TempDir, processes: usize) -> Result<(PathBuf, Vec<u16>)> {
    let hostfile = dir.0.join("hosts");
    let ports = free_ports(processes)?;
    let hosts: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&hostfile, &hosts)
        .with_context(|| format!("cannot write {}", hostfile.display()))?;
    Ok((hostfile, ports))
}

/// Starts every process, each when the ones before it listen; on a failed
/// start, kills those already started.
fn spawn(
    run_args: &[OsString],
    hostfile: &Path,
    ports: &[u16],
    signalled_early: &AtomicBool,
) -> Result<Vec<Option<Child>>> {
    let processes = ports.len();
    let exe = std::env::current_exe().context("cannot find the loanflow binary")?;
    let mut children: Vec<Option<Child>> = Vec::with_capacity(processes);
    for (i, &port) in ports.iter().enumerate() {
        let spawned = Command::new(&exe)
            .arg("run")
            .args(run_args)
            .arg("--process")
            .arg(i.to_string())
            .arg("--hostfile")
            .arg(hostfile)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches only the
            // launcher, which passes it on once (a second one would make
            // the processes exit at once).
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                for child in children.iter_mut().flatten() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(anyhow!("cannot start process {i} ({}): {e}", exe.display()));
            }
        };
        let prefix = format!("[p{i}] ");
        if let Some(out) = child.stdout.take() {
            pump(out, prefix.clone(), true);
        }
        if let Some(err) = child.stderr.take() {
            pump(err, prefix, false);
        }
        // timely's process i connects to every process before it, retrying
        // once a second: start it when those listen.
        if i + 1 < processes {
            wait_listening(port, &mut child, signalled_early);
        }
        children.push(Some(child));
    }
    Ok(children)
}

/// What [`supervise`] saw: (process, status, blame) of every process that
/// failed, and the user's signal if processes stopped early because of it.
type Outcome = (Vec<(usize, ExitStatus, u8)>, Option<i32>);

/// Passes signals on, collects exits, and once one process failed stops the
/// others (SIGTERM, then SIGKILL after [`STOP_GRACE`]). A process that exits
/// 128 + the user's signal passed on to it stopped as asked, not failed.
fn supervise(
    children: &mut [Option<Child>],
    signals: &mut signal_hook::iterator::Signals,
) -> Outcome {
    use signal_hook::consts::{SIGKILL, SIGTERM};
    let mut failures: Vec<(usize, ExitStatus, u8)> = Vec::new();
    let mut signalled: Vec<Option<i32>> = vec![None; children.len()];
    let mut stopping_since: Option<Instant> = None;
    let mut killed = false;
    let (mut passed_on, mut stopped) = (None, None);
    while children.iter().any(Option::is_some) {
        for sig in signals.pending() {
            passed_on.get_or_insert(sig);
            for (i, child) in children.iter().enumerate() {
                if let Some(child) = child {
                    signal(child, sig);
                    signalled[i] = Some(sig);
                }
            }
        }
        for (i, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    *slot = None;
                    if stopped_as_asked(status, passed_on) && stopping_since.is_none() {
                        stopped = passed_on;
                    } else if !status.success() {
                        failures.push((i, status, blame(status, signalled[i])));
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot wait for process {i}: {e}");
                }
            }
        }
        if !failures.is_empty() && stopping_since.is_none() {
            stopping_since = Some(Instant::now());
            for (i, child) in children.iter().enumerate() {
                if let Some(child) = child {
                    signal(child, SIGTERM);
                    signalled[i] = Some(SIGTERM);
                }
            }
        }
        if stopping_since.is_some_and(|since| since.elapsed() > STOP_GRACE) && !killed {
            killed = true;
            for (i, child) in children.iter_mut().enumerate() {
                if let Some(child) = child {
                    let _ = child.kill();
                    signalled[i] = Some(SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (failures, stopped)
}

/// The process most to blame, earliest first among equals.
fn culprit(failures: &[(usize, ExitStatus, u8)]) -> Option<(usize, ExitStatus)> {
    failures
        .iter()
        .enumerate()
        .max_by_key(|(n, (_, _, blame))| (*blame, std::cmp::Reverse(*n)))
        .map(|(_, (i, status, _))| (*i, *status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_death_is_blamed_before_an_exit() {
        let killed = ExitStatus::from_raw(9);
        let failed = ExitStatus::from_raw(1 << 8);
        let lost = ExitStatus::from_raw(PEER_LOST << 8);
        assert!(blame(killed, None) > blame(failed, None));
        assert!(blame(failed, None) > blame(lost, None));
        assert_eq!(blame(ExitStatus::from_raw(15), Some(15)), 1);
        assert_eq!(describe(killed), "died (killed by signal 9)");
    }

    #[test]
    fn a_process_that_stopped_at_a_passed_on_signal_did_not_fail() {
        let stopped_by_term = ExitStatus::from_raw(143 << 8);
        assert_eq!(
            blame(stopped_by_term, Some(15)),
            1,
            "the launcher's own SIGTERM"
        );
        assert_eq!(blame(stopped_by_term, None), 2, "nobody asked it to stop");
        assert!(stopped_as_asked(stopped_by_term, Some(15)));
        assert!(!stopped_as_asked(stopped_by_term, Some(2)));
        assert!(!stopped_as_asked(ExitStatus::from_raw(0), Some(2)));
    }
}
