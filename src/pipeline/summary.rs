//! What a run did, and the summary a person reads at its end.
//!
//! Records/s count the time the run was busy ([`Summary::busy`]): a live
//! run that waited an hour for new records did not process slowly. The
//! first line gives both times when they differ.

use std::fmt;
use std::time::Duration;

use super::control::signal_name;
use crate::dataflow::graph::Stages;

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
    /// Feature rows delivered (a clean stage's outputs, or a cleaned topic's).
    pub cleaned: u64,
    /// Where feature rows went, if anywhere.
    pub cleaned_to: Option<String>,
    /// Which stages ran.
    pub stages: Stages,
    /// Dead letters delivered.
    pub dead_letters: u64,
    /// From the first worker's start (a cluster's connection time not counted).
    pub elapsed: Duration,
    /// Of `elapsed`, the time the run had work: not caught up and waiting
    /// (the run's watcher measures the rest, see `pipeline::progress`).
    pub busy: Duration,
    /// Records a bounded replay passed over: those before `--from`.
    pub skipped: u64,
    /// Records of history read to rebuild the windows (a window run that
    /// started past a partition's beginning): read, not answered.
    pub history: u64,
    /// The dataflow has window features: a signal leaves the applications
    /// that wait for the watermark unanswered (and their offsets uncommitted).
    pub windows: bool,
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
    /// The signal that stopped it, if one did.
    pub signal: Option<i32>,
    /// The input has an end (a file, `--until`) the run did not reach
    /// because a signal stopped it: file outputs are left as `.partial`
    /// and the command exits non-zero. A live topic run stopped by a signal
    /// is not unfinished: that is how a service ends.
    pub unfinished: bool,
    /// Times the run started its dataflow again after an aborted
    /// transaction ([`super::restart::run_restarting`]); the counts are the last start's.
    pub restarts: u32,
    /// Where `--http` served the metrics and the live page, if it did.
    pub http: Option<String>,
}

impl Summary {
    /// Records read per second of the run's busy time.
    pub fn records_per_second(&self) -> f64 {
        self.records_in as f64 / self.busy_seconds()
    }

    /// [`Summary::busy`] in seconds (never 0, never more than elapsed).
    fn busy_seconds(&self) -> f64 {
        self.busy.min(self.elapsed).as_secs_f64().max(1e-9)
    }

    /// Records read and neither answered nor dead-lettered (nor history,
    /// nor skipped): applications a stopped window run left waiting for
    /// the watermark. 0 for a stateless dataflow.
    pub fn waiting(&self) -> u64 {
        if !self.windows {
            return 0;
        }
        let outputs = if self.stages == Stages::Clean {
            self.cleaned
        } else {
            self.scored
        };
        self.records_in
            .saturating_sub(self.history + self.skipped + outputs + self.dead_letters)
    }

    /// Whether the run spent a noticeable part of its time waiting.
    fn idled(&self) -> bool {
        let idle = self.elapsed.saturating_sub(self.busy);
        idle >= Duration::from_millis(50) && idle.as_secs_f64() >= 0.01 * self.elapsed.as_secs_f64()
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
            )
            .and_then(|()| match &self.http {
                Some(addr) => write!(f, "; served http://{addr}/"),
                None => Ok(()),
            });
        }
        write!(
            f,
            "loanflow: {} records in {:.3} s",
            self.records_in,
            self.elapsed.as_secs_f64(),
        )?;
        if self.idled() {
            write!(f, " (busy {:.3} s)", self.busy.as_secs_f64())?;
        }
        write!(
            f,
            " — {:.0} records/s, {:.1} MB/s on {} worker{}",
            self.records_per_second(),
            self.bytes_in as f64 / 1e6 / self.busy_seconds(),
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
        if self.skipped > 0 {
            write!(f, " ({} outside --from/--until skipped)", self.skipped)?;
        }
        if self.history > 0 {
            write!(
                f,
                " ({} before the start read as history, to rebuild the windows)",
                self.history
            )?;
        }
        writeln!(f)?;
        let signal = signal_name(self.signal.unwrap_or(super::control::SIGINT));
        let waiting = self.waiting();
        if self.interrupted && waiting > 0 {
            writeln!(
                f,
                "  (stopped by {signal}: {waiting} applications waiting for the watermark were not answered \
                 nor committed; the next run reads them again{})",
                if self.unfinished {
                    "; file outputs are left as .partial"
                } else {
                    ""
                }
            )?;
        } else if self.unfinished {
            writeln!(
                f,
                "  (stopped by {signal} before the end of the input: what was read is delivered; \
                 file outputs are left as .partial)"
            )?;
        } else if self.interrupted {
            writeln!(f, "  (stopped by {signal}: everything read was delivered)")?;
        }
        if self.restarts > 0 {
            writeln!(
                f,
                "  (started again {} time{} after an aborted transaction; counts since the last start)",
                self.restarts,
                if self.restarts == 1 { "" } else { "s" }
            )?;
        }
        if self.stages != Stages::Clean {
            writeln!(f, "  scored        {:>10}  → {}", self.scored, self.output)?;
            writeln!(
                f,
                "  flagged       {:>10}  ({:.2} %)",
                self.flagged,
                100.0 * self.flagged as f64 / self.scored.max(1) as f64
            )?;
        }
        if let Some(to) = &self.cleaned_to {
            writeln!(
                f,
                "  cleaned       {:>10}  → {} (feature rows)",
                self.cleaned, to
            )?;
        }
        match &self.dead_letters_to {
            Some(to) => writeln!(f, "  dead letters  {:>10}  → {}", self.dead_letters, to)?,
            None => writeln!(f, "  dead letters  {:>10}", self.dead_letters)?,
        }
        write!(f, "  model         {}", self.model)?;
        if let Some(addr) = &self.http {
            write!(f, "\n  http          http://{addr}/ (metrics: /metrics)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(elapsed_ms: u64, busy_ms: u64) -> Summary {
        Summary {
            records_in: 9857,
            bytes_in: 1_000_000,
            scored: 9857,
            flagged: 94,
            cleaned: 0,
            cleaned_to: None,
            stages: Stages::default(),
            dead_letters: 0,
            elapsed: Duration::from_millis(elapsed_ms),
            busy: Duration::from_millis(busy_ms),
            history: 0,
            windows: false,
            skipped: 0,
            workers: 1,
            http: None,
            processes: 1,
            process: 0,
            output: "topic loans.scored".into(),
            dead_letters_to: None,
            model: "m".into(),
            interrupted: false,
            signal: None,
            unfinished: false,
            restarts: 0,
        }
    }

    #[test]
    fn records_per_second_count_busy_time_and_the_summary_gives_both_times() {
        let s = summary(647_472, 812);
        assert_eq!(s.records_per_second().round(), (9857.0f64 / 0.812).round());
        let text = s.to_string();
        assert!(
            text.starts_with(
                "loanflow: 9857 records in 647.472 s (busy 0.812 s) — 12139 records/s"
            ),
            "{text}"
        );
        // No waiting: one time.
        let text = summary(812, 812).to_string();
        assert!(
            text.starts_with("loanflow: 9857 records in 0.812 s — 12139 records/s"),
            "{text}"
        );
    }

    #[test]
    fn a_bounded_replay_says_what_it_skipped_and_a_stopped_file_run_what_it_left() {
        let mut s = summary(1000, 1000);
        s.skipped = 6721;
        s.records_in = 3136;
        let text = s.to_string();
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with("(6721 outside --from/--until skipped)"),
            "{text}"
        );
        s.interrupted = true;
        s.unfinished = true;
        s.signal = Some(15);
        let text = s.to_string();
        assert!(
            text.contains("stopped by SIGTERM before the end of the input"),
            "{text}"
        );
        assert!(text.contains(".partial"), "{text}");
    }
}
