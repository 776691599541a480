//! What a run did, and the summary a person reads at its end.

use std::fmt;
use std::time::Duration;

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Records read.
    pub records_in: u64,
    /// Bytes of those records.
    pub bytes_in: u64,
    /// Scored applications delivered.
    pub scored: u64,
    /// Of those, the flagged ones.
    pub flagged: u64,
    /// Dead letters delivered.
    pub dead_letters: u64,
    /// From the first worker's start (a cluster's connection time not counted).
    pub elapsed: Duration,
    /// Workers over the whole cluster.
    pub workers: usize,
    /// Processes in the cluster (1: not a cluster).
    pub processes: usize,
    /// This process's index; a summary of process 0 covers the cluster,
    /// any other covers only its process.
    pub process: usize,
    /// Where scored applications went (a file or a topic).
    pub output: String,
    /// Where dead letters went, if anywhere.
    pub dead_letters_to: Option<String>,
    /// The model's id (`name@sha256:…`).
    pub model: String,
    /// Stopped by SIGINT/SIGTERM before the input ended.
    pub interrupted: bool,
    /// Times the run started its dataflow again after an aborted
    /// transaction ([`super::restart::run_restarting`]); the counts are the last start's.
    pub restarts: u32,
}

impl Summary {
    /// Records read per second of the run.
    pub fn records_per_second(&self) -> f64 {
        self.records_in as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.process != 0 {
            // The cluster's summary is process 0's; this is one process's share.
            return write!(
                f,
                "loanflow: process {} of {}: read {} records, scored {}, {} dead letters → {} (cluster summary on process 0)",
                self.process,
                self.processes,
                self.records_in,
                self.scored,
                self.dead_letters,
                self.output
            );
        }
        write!(
            f,
            "loanflow: {} records in {:.3} s — {:.0} records/s, {:.1} MB/s on {} worker{}",
            self.records_in,
            self.elapsed.as_secs_f64(),
            self.records_per_second(),
            self.bytes_in as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9),
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        )?;
        if self.processes > 1 {
            write!(
                f,
                " ({} processes × {})",
                self.processes,
                self.workers / self.processes
            )?;
        }
        writeln!(f)?;
        if self.interrupted {
            writeln!(f, "  (stopped by a signal: everything read was delivered)")?;
        }
        if self.restarts > 0 {
            writeln!(
                f,
                "  (started again {} time{} after an aborted transaction; counts since the last start)",
                self.restarts,
                if self.restarts == 1 { "" } else { "s" }
            )?;
        }
        writeln!(f, "  scored        {:>10}  → {}", self.scored, self.output)?;
        writeln!(
            f,
            "  flagged       {:>10}  ({:.2} %)",
            self.flagged,
            100.0 * self.flagged as f64 / self.scored.max(1) as f64
        )?;
        match &self.dead_letters_to {
            Some(to) => writeln!(f, "  dead letters  {:>10}  → {}", self.dead_letters, to)?,
            None => writeln!(f, "  dead letters  {:>10}", self.dead_letters)?,
        }
        write!(f, "  model         {}", self.model)
    }
}
