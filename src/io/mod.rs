//! The edges: where raw records come from and where scored applications and
//! dead letters go. A [`Source`] turns into a timely stream of
//! [`RawRecord`]s on each worker; a [`Sink`] consumes the stages' two output
//! streams. The stages in [`crate::dataflow`] never know which edge they run on.

pub mod exactly_once;
pub mod file;
pub mod kafka;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use timely::dataflow::{ProbeHandle, Scope, Stream};

use crate::dataflow::predict::Scored;
use crate::dataflow::{Batches, Epoch};
use crate::record::{DeadLetter, RawRecord};

/// How far (in epochs) a source may run ahead of what the sinks have
/// finished: bounds the records in flight, so memory stays flat.
pub const MAX_EPOCHS_AHEAD: u64 = 4;

/// One worker's part of an input edge.
pub trait Source {
    /// Builds the source on `scope`. `done` shows which epochs the sinks have
    /// finished; the source must not open epoch `e` while `done` is still
    /// before `e - MAX_EPOCHS_AHEAD`.
    fn build<'s>(
        self: Box<Self>,
        scope: Scope<'s, Epoch>,
        done: ProbeHandle<Epoch>,
    ) -> Batches<'s, RawRecord>;
}

/// One worker's part of an output edge.
pub trait Sink {
    /// Consumes scored applications and dead letters; the returned stream's
    /// frontier passes an epoch once everything of that epoch is written.
    fn build<'s>(
        self: Box<Self>,
        scored: Batches<'s, Scored>,
        dead: Batches<'s, DeadLetter>,
    ) -> Stream<'s, Epoch, Vec<()>>;
}

/// Counts shared by every worker of a process, and the first fatal error.
#[derive(Debug, Default)]
pub struct Stats {
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub scored: AtomicU64,
    pub flagged: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Records a replay passed over: before `--from`.
    pub skipped: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    /// Whether that first error leaves nothing half-done that a fresh start
    /// of the dataflow would not redo (an aborted transaction, say).
    restartable: AtomicBool,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// What a sink wrote in one activation.
    pub fn outputs(&self, scored: u64, flagged: u64, dead_letters: u64) {
        Stats::add(&self.scored, scored);
        Stats::add(&self.flagged, flagged);
        Stats::add(&self.dead_letters, dead_letters);
    }

    /// Records a fatal error (the first one wins); workers stop soon after.
    pub fn fail(&self, message: String) {
        self.fail_with(message, false);
    }

    /// [`Stats::fail`], saying whether the run may start again from what is
    /// committed, as a restarted process would (`restartable`).
    pub fn fail_with(&self, message: String, restartable: bool) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            failure.replace(message);
            self.restartable.store(restartable, Ordering::Relaxed);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Whether the first fatal error was a restartable one.
    pub fn restartable(&self) -> bool {
        self.restartable.load(Ordering::Relaxed)
    }

    /// Whether a fatal error has been recorded (cheap: workers ask every step).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn the_first_failure_decides_whether_a_run_may_start_again() {
        let stats = Stats::default();
        assert!(!stats.failed());
        stats.fail_with("transaction aborted".into(), true);
        stats.fail("fenced".into());
        assert!(stats.failed() && stats.restartable());
        assert_eq!(stats.failure().as_deref(), Some("transaction aborted"));

        let stats = Stats::default();
        stats.fail("fenced".into());
        stats.fail_with("transaction aborted".into(), true);
        assert!(stats.failed() && !stats.restartable());
        assert_eq!(stats.failure().as_deref(), Some("fenced"));
    }
}
