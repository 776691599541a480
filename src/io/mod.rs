//! The edges: where raw records come from and where scored applications and
//! dead letters go. A [`Source`] turns into a timely stream of
//! [`RawRecord`]s on each worker; a [`Sink`] consumes the stages' two output
//! streams. The stages in [`crate::dataflow`] never know which edge they run on.
//!
//! Owns [`file`](mod@file) (a file split across workers, JSON Lines
//! sinks), [`kafka`] (config, source, sink, readers), [`exactly_once`] (the
//! protocol, shared with `verify`, and the transactional sink, built on
//! [`kafka`]), the run-wide counters and first fault ([`Stats`]) and the
//! failpoints tests arm ([`failpoints`]), and the `--http` server of
//! metrics and the live page ([`http`]). May import [`crate::dataflow`] and
//! below; never the pipeline or a command.

pub mod exactly_once;
pub mod failpoints;
pub mod file;
pub mod http;
pub mod kafka;
pub mod monitor;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::dataflow::{ProbeHandle, Scope, Stream};

use crate::core::fault::Fault;
use crate::core::record::{DeadLetter, RawRecord};
use crate::core::scored::{Output, Tally};
use crate::core::Epoch;
use crate::dataflow::Batches;

/// What a sink takes besides dead letters: scored applications and (from a
/// clean stage, or with a cleaned topic) feature rows.
pub type Outputs<'s> = Batches<'s, Output>;

/// The dead letters a sink takes.
pub type Deads<'s> = Batches<'s, DeadLetter>;

/// Which epochs every sink has finished: what a source is held back by.
pub type Done = ProbeHandle<Epoch>;

/// A sink's progress: its frontier passes an epoch once everything of that
/// epoch is written.
pub type Written<'s> = Stream<'s, Epoch, Vec<()>>;

/// How far (in epochs) a source may run ahead of what the sinks have
/// finished: bounds the records in flight, so memory stays flat.
pub const MAX_EPOCHS_AHEAD: u64 = 4;

/// What every source takes from the run: how much to read per epoch,
/// where to count it, and when to stop.
#[derive(Debug, Clone)]
pub struct Feed {
    /// Most records per epoch.
    pub batch: usize,
    /// The run's counters and first fault (a fault stops reading too).
    pub stats: Arc<Stats>,
    /// Set on SIGINT/SIGTERM: stop reading; what was read is still delivered.
    pub stop: Arc<AtomicBool>,
}

impl Feed {
    /// Whether reading should end now: a signal or a fault.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.stats.failed()
    }
}

/// How far the dataflow after a source has come: what it may commit, and
/// how far ahead it may read.
#[derive(Clone)]
pub struct Progress {
    /// Which epochs every sink has finished: offsets up to them may be
    /// committed.
    pub delivered: Done,
    /// What reading is paced by: the source must not open epoch `e` while
    /// this is still before `e - reach.epochs`. The same probe as
    /// `delivered`, except in a dataflow with window features, where
    /// applications wait for the watermark — which only more reading moves —
    /// and reading is paced by what the window stage took in instead
    /// (`dataflow::window::windows`).
    pub read: Done,
    /// How far past `read` the source reads, and how soon it looks again
    /// when held back.
    pub reach: Reach,
}

/// How far past what it is paced by a source may read ([`Progress::read`]),
/// and how soon it looks again when held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Epochs a source may open past `read`.
    pub epochs: Epoch,
    /// How soon a held-back source looks again.
    pub recheck: Duration,
}

impl Reach {
    /// Paced by the sinks: [`MAX_EPOCHS_AHEAD`] epochs, looking again each
    /// millisecond (sinks write at their own pace).
    pub const SINKS: Reach = Reach {
        epochs: MAX_EPOCHS_AHEAD,
        recheck: Duration::from_millis(1),
    };

    /// A window run's source (a file, or a topic read at least once), paced
    /// by the window stage's intake: one epoch past it, looking again after
    /// 50 µs (a few worker steps). What the intake waits for is the
    /// dataflow's own progress (never the watermark), a step or two per
    /// epoch; a source that ran further ahead only added rows waiting in
    /// the window stage for their answers (five epochs of them at `-w 1`
    /// with `SINKS`, two with this), which were out of cache when answered,
    /// and on a topic, waited longer (benches/README.md, "Window features",
    /// stops 34 and 36). Which runs use it: `pipeline::run`'s `Cadence`.
    pub const WINDOW_INTAKE: Reach = Reach {
        epochs: 1,
        recheck: Duration::from_micros(50),
    };
}

/// One worker's part of an input edge.
pub trait Source {
    /// Builds the source on `scope`, paced and committing by `progress`.
    fn build<'s>(
        self: Box<Self>,
        scope: Scope<'s, Epoch>,
        progress: Progress,
    ) -> Batches<'s, RawRecord>;
}

/// One worker's part of an output edge.
pub trait Sink {
    /// Consumes outputs and dead letters; the returned stream's frontier
    /// passes an epoch once everything of that epoch is written.
    fn build<'s>(self: Box<Self>, outputs: Outputs<'s>, dead: Deads<'s>) -> Written<'s>;
}

/// Counts shared by every worker of a process, and the first fault.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records read by the sources.
    pub records_in: AtomicU64,
    /// Bytes of those records.
    pub bytes_in: AtomicU64,
    /// Scored applications delivered (committed, with exactly once).
    pub scored: AtomicU64,
    /// Of those, the flagged ones.
    pub flagged: AtomicU64,
    /// Feature rows delivered (a clean stage's outputs, or a cleaned topic's).
    pub cleaned: AtomicU64,
    /// Dead letters delivered.
    pub dead_letters: AtomicU64,
    /// Records a replay passed over: before `--from`.
    pub skipped: AtomicU64,
    /// Records of history a window run read before its start, to rebuild
    /// its windows (events only: no output, no dead letter).
    pub history: AtomicU64,
    /// Kafka partitions this process's sources own.
    pub partitions: AtomicU64,
    /// Of those, the ones read to their end (partition EOF, or their
    /// `--until` bound) with nothing read from them since: all of them means
    /// this process has caught up.
    pub partitions_at_end: AtomicU64,
    /// Nanoseconds of the run during which nothing moved (caught up and
    /// waiting, say), kept by the run's watcher: the run was busy the rest.
    pub idle_ns: AtomicU64,
    failed: AtomicBool,
    /// The first fault; it decides whether the run may start again.
    failure: Mutex<Option<Fault>>,
}

impl Stats {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// What a sink delivered in one activation.
    pub fn outputs(&self, tally: Tally) {
        if let Some(m) = crate::core::metrics::installed() {
            m.delivered(
                tally.scored,
                tally.flagged,
                tally.cleaned,
                tally.dead_letters,
            );
        }
        Stats::add(&self.scored, tally.scored);
        Stats::add(&self.flagged, tally.flagged);
        Stats::add(&self.cleaned, tally.cleaned);
        Stats::add(&self.dead_letters, tally.dead_letters);
    }

    /// A source read `count` records of `bytes` bytes, as one batch.
    pub fn read(&self, count: usize, bytes: u64) {
        Stats::add(&self.records_in, count as u64);
        Stats::add(&self.bytes_in, bytes);
        if let Some(m) = crate::core::metrics::installed() {
            m.source_batch(count);
        }
    }

    /// Records a fault (the first one wins); workers stop soon after.
    pub fn fail(&self, fault: Fault) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            failure.replace(fault);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Whether a fatal error has been recorded (cheap: workers ask every step).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The first fault, if any.
    pub fn failure(&self) -> Option<Fault> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::Stats;
    use crate::core::fault::{Fault, RetryHint};

    fn restartable(stats: &Stats) -> bool {
        stats
            .failure()
            .is_some_and(|f| f.hint() == RetryHint::Restart)
    }

    #[test]
    fn the_first_failure_decides_whether_a_run_may_start_again() {
        let stats = Stats::default();
        assert!(!stats.failed());
        stats.fail(Fault::restartable("transaction aborted"));
        stats.fail(Fault::fatal("fenced"));
        assert!(stats.failed() && restartable(&stats));
        assert_eq!(
            stats.failure().map(|f| f.to_string()).as_deref(),
            Some("transaction aborted")
        );

        let stats = Stats::default();
        stats.fail(Fault::fatal("fenced"));
        stats.fail(Fault::restartable("transaction aborted"));
        assert!(stats.failed() && !restartable(&stats));
        assert_eq!(
            stats.failure().map(|f| f.to_string()).as_deref(),
            Some("fenced")
        );
    }
}
