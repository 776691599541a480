//! Cluster mode: one dataflow on N processes × W worker threads, on timely's
//! own cluster engine (`CommunicationConfig::Cluster`), and `loanflow
//! cluster`, which launches N local processes to try it on one machine.
//!
//! # How a cluster run goes
//! 1. Every process reads the same hostfile (`host:port` per line, process
//!    order) and connects to every other: timely's `try_build`. A process
//!    whose peers do not all come up within `--cluster-timeout` stops with a
//!    clear error instead of waiting for ever.
//! 2. Start-up check: a tiny dataflow broadcasts each process's
//!    [`Fingerprint`] (binary version, spec and model SHA-256) to every
//!    worker. Every worker sees the same set, so every process reaches the
//!    same verdict by itself: on a mismatch all exit non-zero with the same
//!    one-line error, before any output is touched.
//! 3. The pipeline runs with global worker indices (`worker.index()` is
//!    `process × W + thread`), so the file and Kafka sources shard across all
//!    N × W workers with no change.
//! 4. A last tiny dataflow gathers each process's [`ProcessCounts`] at every
//!    worker; process 0 prints the cluster's summary.
//!
//! # When a process dies
//! Its peers' timely network threads panic ("timely communication error");
//! [`exit_when_a_peer_is_lost`] turns that into one line naming the lost
//! peer and exit status [`PEER_LOST`]. A process whose own run fails stops
//! at once (exit 1), so its peers follow. Outputs of a failed run stay
//! `.partial`; Kafka offsets are committed only for what was delivered, so a
//! re-run resumes without loss.

use std::cell::RefCell;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::{Broadcast, ToStream};
use timely::dataflow::operators::{Inspect, Probe};
use timely::worker::Worker;
use timely::{CommunicationConfig, ExchangeData, WorkerConfig};

use crate::cli::{ClusterFlags, RunArgs};
use crate::io::Stats;

/// Exit status of a process that stopped because it lost a peer: the
/// launcher blames the peer, not it.
pub const PEER_LOST: i32 = 3;

/// Exit status of a process stopped by a signal before its cluster came up.
pub const STOPPED: i32 = 130;

/// This process's place in a cluster of more than one process.
#[derive(Debug, Clone)]
pub struct Membership {
    pub processes: usize,
    pub process: usize,
    /// Worker threads per process.
    pub threads: usize,
    pub addresses: Vec<String>,
    pub timeout: Duration,
}

impl Membership {
    /// The membership the flags describe, or `None` for a single process.
    pub fn from_flags(flags: &ClusterFlags, threads: usize) -> Result<Option<Membership>> {
        let processes = flags.processes.unwrap_or(1) as usize;
        if processes == 1 {
            if flags.process.is_some_and(|p| p != 0) {
                return Err(anyhow!("--process must be 0 with --processes 1"));
            }
            return Ok(None);
        }
        let process = flags.process.ok_or_else(|| {
            anyhow!(
                "--processes {processes} needs --process I, this process's index (0 … {}); \
                 to start all of them on this machine use `loanflow cluster`",
                processes - 1
            )
        })? as usize;
        if process >= processes {
            return Err(anyhow!(
                "--process {process} is out of range: with --processes {processes} it is 0 … {}",
                processes - 1
            ));
        }
        let hostfile = flags.hostfile.as_ref().ok_or_else(|| {
            anyhow!("--processes {processes} needs --hostfile FILE: one host:port per line, in process order")
        })?;
        let addresses = read_hostfile(hostfile, processes)?;
        if !(flags.cluster_timeout.is_finite() && flags.cluster_timeout > 0.0) {
            return Err(anyhow!(
                "--cluster-timeout must be a positive number of seconds"
            ));
        }
        Ok(Some(Membership {
            processes,
            process,
            threads,
            addresses,
            timeout: Duration::from_secs_f64(flags.cluster_timeout),
        }))
    }

    /// timely's configuration for this process.
    pub fn config(&self) -> timely::Config {
        timely::Config {
            communication: CommunicationConfig::Cluster {
                threads: self.threads,
                process: self.process,
                addresses: self.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: WorkerConfig::default(),
        }
    }

    /// Whether the worker with this global index is its process's first.
    pub fn is_first_of_process(&self, worker: usize) -> bool {
        worker % self.threads == 0
    }
}

/// The addresses of a hostfile: one `host:port` per line, in process order
/// (blank lines and `#` comments skipped); the first `processes` are used.
pub fn read_hostfile(path: &Path, processes: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read hostfile {}", path.display()))?;
    let mut addresses = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let ok = line
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(anyhow!(
                "hostfile {} line {}: `{line}` is not host:port",
                path.display(),
                n + 1
            ));
        }
        addresses.push(line.to_owned());
    }
    if addresses.len() < processes {
        return Err(anyhow!(
            "hostfile {} lists {} address{} but --processes is {processes}: give one host:port line per process",
            path.display(),
            addresses.len(),
            if addresses.len() == 1 { "" } else { "es" }
        ));
    }
    addresses.truncate(processes);
    Ok(addresses)
}

/// What every process of a cluster must agree on before any record moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub process: usize,
    pub version: String,
    pub spec: String,
    pub spec_sha256: String,
    pub model: String,
    pub model_sha256: String,
    /// This process's exactly-once incarnation (the cluster uses process 0's).
    pub incarnation: String,
}

/// `Ok` when every process runs the same binary version, spec and model;
/// else one line naming both sides of the first difference.
pub fn check_fingerprints(prints: &[Fingerprint]) -> Result<(), String> {
    let mut prints = prints.to_vec();
    prints.sort_by_key(|p| p.process);
    let Some(first) = prints.first() else {
        return Ok(());
    };
    for other in &prints[1..] {
        let (a, b) = (first.process, other.process);
        if other.model_sha256 != first.model_sha256 {
            return Err(format!(
                "the processes do not run the same model: process {a} has {} (sha256 {}), \
                 process {b} has {} (sha256 {}); give every process the same model file",
                first.model, first.model_sha256, other.model, other.model_sha256
            ));
        }
        if other.spec_sha256 != first.spec_sha256 {
            return Err(format!(
                "the processes do not run the same dataflow spec: process {a} has `{}` (sha256 {}), \
                 process {b} has `{}` (sha256 {}); give every process the same --dataflow file",
                first.spec, first.spec_sha256, other.spec, other.spec_sha256
            ));
        }
        if other.version != first.version {
            return Err(format!(
                "the processes do not run the same loanflow: process {a} is {}, process {b} is {}",
                first.version, other.version
            ));
        }
    }
    Ok(())
}

/// One process's counts, for the cluster's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCounts {
    pub process: usize,
    pub records_in: u64,
    pub bytes_in: u64,
    pub scored: u64,
    pub flagged: u64,
    pub dead_letters: u64,
}

impl ProcessCounts {
    pub fn of(process: usize, stats: &Stats) -> ProcessCounts {
        ProcessCounts {
            process,
            records_in: Stats::get(&stats.records_in),
            bytes_in: Stats::get(&stats.bytes_in),
            scored: Stats::get(&stats.scored),
            flagged: Stats::get(&stats.flagged),
            dead_letters: Stats::get(&stats.dead_letters),
        }
    }
}

/// Runs a tiny dataflow in which every worker broadcasts `item` (if any) to
/// every worker, and returns all items, in no particular order. Every worker
/// of the cluster must call it, in the same order relative to its other
/// dataflows.
pub fn gather<T: ExchangeData + Clone>(worker: &mut Worker, item: Option<T>) -> Vec<T> {
    let got = Rc::new(RefCell::new(Vec::new()));
    let probe = worker.dataflow::<u64, _, _>(|scope| {
        let sink = Rc::clone(&got);
        let (probe, _) = item
            .into_iter()
            .to_stream(scope)
            .broadcast()
            .inspect(move |x| sink.borrow_mut().push(x.clone()))
            .probe();
        probe
    });
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
    got.take()
}

/// Turns the panic of a timely network thread (a peer's connection broke:
/// it died, or the network did) into one line and exit status [`PEER_LOST`],
/// instead of a panic trace and workers waiting for ever.
pub fn exit_when_a_peer_is_lost(process: usize) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if message.contains("timely communication error") {
            let peer = std::thread::current()
                .name()
                .and_then(|n| n.rsplit_once('-'))
                .map(|(_, i)| format!("process {i}"))
                .unwrap_or_else(|| "a peer".into());
            eprintln!(
                "loanflow: error: process {process} lost its connection to {peer} ({message}): \
                 that process stopped or the network failed; stopping"
            );
            std::process::exit(PEER_LOST);
        }
        default(info)
    }));
}

/// Stops this process if its cluster does not connect within the timeout
/// (a peer that never starts would otherwise keep timely waiting for ever),
/// or if a signal asks it to stop before then.
pub fn watchdog(membership: &Membership, connected: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let deadline = Instant::now() + membership.timeout;
    let (process, timeout) = (membership.process, membership.timeout);
    let addresses = membership.addresses.join(", ");
    std::thread::spawn(move || loop {
        if connected.load(Ordering::Relaxed) {
            return;
        }
        if stop.load(Ordering::Relaxed) {
            eprintln!("loanflow: process {process}: stopped before the cluster connected");
            std::process::exit(STOPPED);
        }
        if Instant::now() > deadline {
            eprintln!(
                "loanflow: error: process {process}: the cluster did not connect within {timeout:?} \
                 (addresses {addresses}): start every process with the same --hostfile and \
                 --processes, and open their ports"
            );
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}

/// Stops this process at once after a fatal error in cluster mode: its
/// peers cannot finish without it, and they stop when its connections close.
pub fn fail_now(process: usize, failure: &str) -> ! {
    eprintln!("loanflow: error: process {process}: {failure}");
    std::process::exit(1);
}

// ---------------------------------------------------------------------------
// `loanflow cluster`: the local launcher.

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
/// because a peer was lost or it was told to stop.
fn blame(status: ExitStatus, signalled_by_us: Option<i32>) -> u8 {
    match (status.code(), status.signal()) {
        (None, Some(sig)) if Some(sig) != signalled_by_us => 3,
        (Some(code), _) if code != PEER_LOST && code != STOPPED => 2,
        _ => 1,
    }
}

/// `loanflow cluster`: launches `--processes N` local `loanflow run`
/// processes with `run_args` (the flags given to `cluster`, passed on as
/// they are) and supervises them. Returns `Ok` when every process exits 0.
pub fn launch(args: &RunArgs, run_args: &[OsString]) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGKILL, SIGTERM};
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
    crate::run::load(&args.pipeline)?;
    // Signals go to the launcher, which passes each on exactly once.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    // Seen while processes are still being started (they get it right after).
    let signalled_early = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&signalled_early))
            .context("cannot install signal handlers")?;
    }

    let dir = TempDir(std::env::temp_dir().join(format!(
        "loanflow-cluster-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )));
    std::fs::create_dir_all(&dir.0).context("cannot create a temporary folder")?;
    let hostfile = dir.0.join("hosts");
    let ports = free_ports(processes)?;
    let hosts: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&hostfile, &hosts)
        .with_context(|| format!("cannot write {}", hostfile.display()))?;
    tracing::info!(processes, hostfile = %hostfile.display(), "launching");

    let exe = std::env::current_exe().context("cannot find the loanflow binary")?;
    let mut children: Vec<Option<Child>> = Vec::with_capacity(processes);
    for i in 0..processes {
        let spawned = Command::new(&exe)
            .arg("run")
            .args(run_args)
            .arg("--process")
            .arg(i.to_string())
            .arg("--hostfile")
            .arg(&hostfile)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches only the
            // launcher, which passes it on once (a second one would make
            // the processes exit at once).
            .process_group(0)
            .spawn();
        match spawned {
            Ok(mut child) => {
                let prefix = format!("[p{i}] ");
                if let Some(out) = child.stdout.take() {
                    pump(out, prefix.clone(), true);
                }
                if let Some(err) = child.stderr.take() {
                    pump(err, prefix, false);
                }
                children.push(Some(child));
                // timely's process i connects to every process before it,
                // retrying once a second: start it when those listen.
                if i + 1 < processes {
                    let child = children[i].as_mut().expect("just pushed");
                    wait_listening(ports[i], child, &signalled_early);
                }
            }
            Err(e) => {
                for child in children.iter_mut().flatten() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(anyhow!("cannot start process {i} ({}): {e}", exe.display()));
            }
        }
    }

    // (process, status, blame) of every process that did not exit 0.
    let mut failures: Vec<(usize, ExitStatus, u8)> = Vec::new();
    let mut signalled: Vec<Option<i32>> = vec![None; processes];
    let mut stopping_since: Option<Instant> = None;
    let mut killed = false;
    while children.iter().any(Option::is_some) {
        for sig in signals.pending() {
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
                    if !status.success() {
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
        if let Some(since) = stopping_since {
            if since.elapsed() > STOP_GRACE && !killed {
                killed = true;
                for (i, child) in children.iter_mut().enumerate() {
                    if let Some(child) = child {
                        let _ = child.kill();
                        signalled[i] = Some(SIGKILL);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the pumps print the last lines.
    std::thread::sleep(Duration::from_millis(50));

    // The most to blame, earliest first among equals.
    let culprit = failures
        .iter()
        .enumerate()
        .max_by_key(|(n, (_, _, blame))| (*blame, std::cmp::Reverse(*n)))
        .map(|(_, f)| *f);
    match culprit {
        None => Ok(()),
        Some((i, status, _)) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn print(process: usize, model: &str) -> Fingerprint {
        Fingerprint {
            process,
            version: "0.1.0".into(),
            spec: "lending_club".into(),
            spec_sha256: "s".into(),
            model: format!("m@sha256:{model}"),
            model_sha256: model.into(),
            incarnation: format!("inc{process}"),
        }
    }

    #[test]
    fn fingerprints_agree_or_name_both_sides() {
        assert!(check_fingerprints(&[print(1, "aa"), print(0, "aa")]).is_ok());
        let e = check_fingerprints(&[print(1, "bb"), print(0, "aa"), print(2, "aa")]).unwrap_err();
        assert!(e.contains("process 0 has m@sha256:aa (sha256 aa)"), "{e}");
        assert!(e.contains("process 1 has m@sha256:bb (sha256 bb)"), "{e}");
    }

    #[test]
    fn hostfiles_are_checked() {
        let dir = std::env::temp_dir().join(format!("loanflow-hostfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        std::fs::write(&path, "# cluster\na:2101\n\n b:2102 \nc:2103\n").unwrap();
        assert_eq!(read_hostfile(&path, 2).unwrap(), ["a:2101", "b:2102"]);
        let e = read_hostfile(&path, 4).unwrap_err().to_string();
        assert!(e.contains("lists 3 addresses but --processes is 4"), "{e}");
        std::fs::write(&path, "a:2101\nb\n").unwrap();
        let e = read_hostfile(&path, 2).unwrap_err().to_string();
        assert!(e.contains("line 2: `b` is not host:port"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
}
