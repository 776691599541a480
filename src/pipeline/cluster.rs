//! Cluster mode: one dataflow on N processes × W worker threads, on timely's
//! own cluster engine (`CommunicationConfig::Cluster`). `loanflow cluster`,
//! which launches N local processes to try it on one machine, is
//! [`crate::commands::cluster`].
//!
//! # How a cluster run goes
//! 1. Every process reads the same hostfile (`host:port` per line, process
//!    order) and connects to every other as timely's own cluster set-up
//!    does (process I connects to the processes before it and accepts the
//!    ones after it), but quietly ([`Membership::connect`]): timely's
//!    prints "awaiting connections" on stdout every second, and stdout is
//!    for data. A process still waiting after a second says once on
//!    stderr whom it waits for; one whose peers do not all come up within
//!    `--cluster-timeout` stops with a clear error instead of waiting for ever.
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
//! the binary's panic hook turns that into one line naming the lost peer
//! ([`peer_lost`]) and exit status [`PEER_LOST`]. A process whose own run
//! fails stops at once (exit 1, through [`Control::halt`]), so its peers
//! follow. Only `main` exits the process: this module asks it to. Outputs of a failed run stay
//! `.partial`; Kafka offsets are committed only for what was delivered, so a
//! re-run resumes without loss.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use serde::{Deserialize, Serialize};
use timely::communication::AllocatorBuilder;
use timely::dataflow::operators::vec::{Broadcast, ToStream};
use timely::dataflow::operators::{Inspect, Probe};
use timely::worker::Worker;
use timely::{CommunicationConfig, ExchangeData, WorkerConfig};

use super::control::Control;
use crate::cli::ClusterFlags;
use crate::core::fault::Fault;
use crate::io::Stats;

/// Exit status of a process that stopped because it lost a peer: the
/// launcher blames the peer, not it.
pub const PEER_LOST: i32 = 3;

/// Exit status of a process stopped by a signal before its cluster came up.
pub const STOPPED: i32 = 130;

/// This process's place in a cluster of more than one process.
#[derive(Debug, Clone)]
pub struct Membership {
    /// Processes in the cluster (more than one).
    pub processes: usize,
    /// This process's index: 0 … processes - 1.
    pub process: usize,
    /// Worker threads per process.
    pub threads: usize,
    /// Every process's `host:port`, in process order (from the hostfile).
    pub addresses: Vec<String>,
    /// How long to wait for every process to connect (`--cluster-timeout`).
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
        Ok(Some(Membership {
            processes,
            process,
            threads,
            addresses,
            timeout: flags.cluster_timeout,
        }))
    }

    /// timely's configuration for this process (what [`Membership::connect`]
    /// builds, quietly).
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

    /// Connects this process to every other and returns timely's
    /// allocators for its workers (for `timely::execute::execute_from`):
    /// what `timely::execute` does for [`Membership::config`], without
    /// timely's lines on stdout. Blocks until every peer is connected; the
    /// [`watchdog`] stops the process if that takes `--cluster-timeout`.
    pub fn connect(&self) -> Result<(Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>)> {
        use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
        use timely::communication::allocator::ProcessBuilder;
        let sockets = self.sockets()?;
        let hooks = timely::communication::Hooks::default();
        let local = ProcessBuilder::new_typed_vector(
            self.threads,
            hooks.refill.clone(),
            hooks.spill.clone(),
        );
        let (builders, guard) =
            initialize_networking_from_sockets(local, sockets, self.process, self.threads, hooks)
                .map_err(|e| anyhow!("cannot start the cluster's network threads: {e}"))?;
        Ok((
            builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
            Box::new(guard),
        ))
    }

    /// One socket per other process, in process order (`None` at this
    /// process's own place), each told this process's index first: timely's
    /// handshake (a big-endian u64).
    fn sockets(&self) -> Result<Vec<Option<TcpStream>>> {
        let n = self.addresses.len();
        let me = self.process;
        let connected = Arc::new(Mutex::new(vec![false; n]));
        connected.lock().unwrap_or_else(|e| e.into_inner())[me] = true;
        let listeners = self.addresses[me]
            .split_whitespace()
            .map(|a| {
                TcpListener::bind(a)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| anyhow!("process {me} cannot listen on {a}: {e} (is that address one of this machine's, and the port free?)"))
            })
            .collect::<Result<Vec<_>>>()?;
        let before = {
            let (addresses, connected) = (self.addresses.clone(), Arc::clone(&connected));
            std::thread::spawn(move || connect_to_earlier(&addresses, me, &connected))
        };
        let after = {
            let connected = Arc::clone(&connected);
            std::thread::spawn(move || accept_later(&listeners, me, n, &connected))
        };
        let started = Instant::now();
        let mut said = false;
        while !(before.is_finished() && after.is_finished()) {
            if !said && started.elapsed() >= Duration::from_secs(1) {
                said = true;
                let missing: Vec<String> = connected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !**c)
                    .map(|(i, _)| format!("process {i} ({})", self.addresses[i]))
                    .collect();
                if !missing.is_empty() {
                    eprintln!(
                        "loanflow: process {me} of {n}: waiting for {} to connect (up to --cluster-timeout {} s)",
                        missing.join(", "),
                        self.timeout.as_secs()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut sockets = before
            .join()
            .map_err(|_| anyhow!("connecting to the cluster failed"))?;
        sockets.push(None);
        sockets.extend(
            after
                .join()
                .map_err(|_| anyhow!("connecting to the cluster failed"))??,
        );
        Ok(sockets)
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

/// Connects to every process before `me`, retrying until it listens, and
/// says who this is. Never fails (the watchdog ends a wait that is too long).
fn connect_to_earlier(
    addresses: &[String],
    me: usize,
    connected: &Mutex<Vec<bool>>,
) -> Vec<Option<TcpStream>> {
    (0..me)
        .map(|i| loop {
            let attempt = TcpStream::connect(&addresses[i]).and_then(|mut stream| {
                stream.set_nodelay(true)?;
                stream.write_all(&(me as u64).to_be_bytes())?;
                Ok(stream)
            });
            match attempt {
                Ok(stream) => {
                    connected.lock().unwrap_or_else(|e| e.into_inner())[i] = true;
                    break Some(stream);
                }
                Err(e) => {
                    tracing::debug!(
                        "process {me}: connecting to process {i} ({}): {e}; retrying",
                        addresses[i]
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .collect()
}

/// Accepts a connection from every process after `me` (of `n`), each
/// placed by the index it sends.
fn accept_later(
    listeners: &[TcpListener],
    me: usize,
    n: usize,
    connected: &Mutex<Vec<bool>>,
) -> Result<Vec<Option<TcpStream>>> {
    let mut sockets: Vec<Option<TcpStream>> = (me + 1..n).map(|_| None).collect();
    while sockets.iter().any(Option::is_none) {
        let mut accepted = false;
        for listener in listeners {
            match listener.accept() {
                Ok((mut stream, from)) => {
                    stream.set_nonblocking(false)?;
                    stream.set_nodelay(true)?;
                    let mut index = [0u8; 8];
                    stream.read_exact(&mut index)?;
                    let index = u64::from_be_bytes(index) as usize;
                    if index <= me || index >= n {
                        tracing::warn!("process {me}: a connection from {from} says it is process {index}; ignored");
                        continue;
                    }
                    connected.lock().unwrap_or_else(|e| e.into_inner())[index] = true;
                    sockets[index - me - 1] = Some(stream);
                    accepted = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(anyhow!("process {me}: accepting a peer's connection: {e}")),
            }
        }
        if !accepted {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(sockets)
}

/// What every process of a cluster must agree on before any record moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The process's index.
    pub process: usize,
    /// Its loanflow version.
    pub version: String,
    /// Its spec's name.
    pub spec: String,
    /// SHA-256 of its spec file, hex.
    pub spec_sha256: String,
    /// Its model's id (`name@sha256:…`).
    pub model: String,
    /// SHA-256 of its model file, hex.
    pub model_sha256: String,
    /// This process's exactly-once incarnation (the cluster uses process 0's).
    pub incarnation: String,
}

/// `Ok` when every process runs the same binary version, spec and model;
/// else one line naming both sides of the first difference.
pub fn check_fingerprints(prints: &[Fingerprint]) -> Result<(), Fault> {
    let mut prints = prints.to_vec();
    prints.sort_by_key(|p| p.process);
    let Some(first) = prints.first() else {
        return Ok(());
    };
    for other in &prints[1..] {
        let (a, b) = (first.process, other.process);
        if other.model_sha256 != first.model_sha256 {
            return Err(Fault::fatal(format!(
                "the processes do not run the same model: process {a} has {} (sha256 {}), \
                 process {b} has {} (sha256 {}); give every process the same model file",
                first.model, first.model_sha256, other.model, other.model_sha256
            )));
        }
        if other.spec_sha256 != first.spec_sha256 {
            return Err(Fault::fatal(format!(
                "the processes do not run the same dataflow spec: process {a} has `{}` (sha256 {}), \
                 process {b} has `{}` (sha256 {}); give every process the same --dataflow file",
                first.spec, first.spec_sha256, other.spec, other.spec_sha256
            )));
        }
        if other.version != first.version {
            return Err(Fault::fatal(format!(
                "the processes do not run the same loanflow: process {a} is {}, process {b} is {}",
                first.version, other.version
            )));
        }
    }
    Ok(())
}

/// One process's counts, for the cluster's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCounts {
    /// The process's index.
    pub process: usize,
    /// Records read.
    pub records_in: u64,
    /// Bytes of those records.
    pub bytes_in: u64,
    /// Scored applications delivered.
    pub scored: u64,
    /// Of those, the flagged ones.
    pub flagged: u64,
    /// Feature rows delivered.
    pub cleaned: u64,
    /// Dead letters delivered.
    pub dead_letters: u64,
    /// Records passed over before `--from`.
    pub skipped: u64,
    /// Records of history read to rebuild the windows.
    pub history: u64,
    /// Nanoseconds the process had nothing to do (see `pipeline::progress`).
    pub idle_ns: u64,
}

impl ProcessCounts {
    /// Process `process`'s counts so far, read from its `stats`.
    pub fn of(process: usize, stats: &Stats) -> ProcessCounts {
        ProcessCounts {
            process,
            records_in: Stats::get(&stats.records_in),
            bytes_in: Stats::get(&stats.bytes_in),
            scored: Stats::get(&stats.scored),
            flagged: Stats::get(&stats.flagged),
            cleaned: Stats::get(&stats.cleaned),
            dead_letters: Stats::get(&stats.dead_letters),
            skipped: Stats::get(&stats.skipped),
            history: Stats::get(&stats.history),
            idle_ns: Stats::get(&stats.idle_ns),
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

/// The line to print when a panic is a timely network thread's (`message`,
/// on the thread named `thread`) — a peer's connection broke: it died, or
/// the network did — for process `process`; `None` for any other panic.
/// The binary's panic hook prints it and exits with [`PEER_LOST`], instead
/// of a panic trace and workers waiting for ever.
pub fn peer_lost(process: usize, message: &str, thread: Option<&str>) -> Option<String> {
    if !message.contains("timely communication error") {
        return None;
    }
    let peer = thread
        .and_then(|n| n.rsplit_once('-'))
        .map(|(_, i)| format!("process {i}"))
        .unwrap_or_else(|| "a peer".into());
    Some(format!(
        "process {process} lost its connection to {peer} ({message}): \
         that process stopped or the network failed; stopping"
    ))
}

/// Stops this process if its cluster does not connect within the timeout
/// (a peer that never starts would otherwise keep timely waiting for ever),
/// or if a signal asks it to stop before then.
pub fn watchdog(membership: &Membership, connected: Arc<AtomicBool>, control: &Control) {
    let deadline = Instant::now() + membership.timeout;
    let (process, timeout) = (membership.process, membership.timeout);
    let addresses = membership.addresses.join(", ");
    let control = control.clone();
    std::thread::spawn(move || loop {
        if connected.load(Ordering::Relaxed) {
            return;
        }
        if control.stopped() {
            control.halt(
                STOPPED,
                &format!("loanflow: process {process}: stopped before the cluster connected"),
            );
        }
        if Instant::now() > deadline {
            control.halt(
                1,
                &format!(
                    "loanflow: error: process {process}: the cluster did not connect within {timeout:?} \
                     (addresses {addresses}): start every process with the same --hostfile and \
                     --processes, and open their ports"
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}

/// Stops this process at once after a fault in cluster mode: its peers
/// cannot finish without it, and they stop when its connections close.
pub fn fail_now(control: &Control, process: usize, failure: &Fault) -> ! {
    control.halt(1, &format!("loanflow: error: process {process}: {failure}"))
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
        let e = e.to_string();
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
    fn only_a_timely_network_panic_is_a_lost_peer() {
        let line = peer_lost(
            0,
            "timely communication error: reading data",
            Some("recv-1"),
        );
        assert_eq!(
            line.as_deref(),
            Some(
                "process 0 lost its connection to process 1 (timely communication error: \
                 reading data): that process stopped or the network failed; stopping"
            )
        );
        assert!(peer_lost(0, "index out of bounds", Some("recv-1")).is_none());
    }
}
