//! What a run says while it runs, and how long it was busy.
//!
//! - A progress bar over the input's bytes for a file run, on a terminal.
//! - The run's [`Watcher`]: a thread that looks at the run's counters every
//!   [`TICK`] and
//!   - for a topic run, measures the time it was caught up and waiting:
//!     every owned partition at its end and nothing read, skipped or
//!     delivered for two ticks in a row. That is idle, kept in
//!     [`Stats::idle_ns`](crate::io::Stats); the summary's records/s count
//!     only the busy rest. A file run is busy all along (a paced replay's
//!     waits included: the pace is the point);
//!   - for a live topic run (no `--until`), says on stderr when every
//!     partition of the process is read to its end and nothing moves: once,
//!     `loanflow: caught up on loans (4 partitions, 9857 records); waiting for
//!     more — Ctrl-C stops`, and again each time it catches up after new
//!     records (at most once per [`REPEAT_AFTER`]; the repeats not with `-q`);
//!   - for a topic run, shows records/s and lag: a spinner on a terminal
//!     (not with `-q`), else an `info` log line every [`LOG_EVERY`] while
//!     records move (`RUST_LOG=info`).
//!
//! Counters are read, never written, except the idle time: the watcher
//! cannot slow the workers down.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::plan::{Placement, SourcePlan};
use super::worker::Shared;
use crate::io::Stats;

/// A progress bar over `total` bytes on stderr, when stderr is a terminal
/// and not `quiet`.
pub fn progress_bar(total: u64, quiet: bool) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}")
            .expect("static template"),
    );
    Some(bar)
}

/// How often the watcher looks at the counters.
pub const TICK: Duration = Duration::from_millis(50);

/// How often a topic run not on a terminal logs its progress (`info`).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The least time between two "caught up" lines of a live run.
pub const REPEAT_AFTER: Duration = Duration::from_secs(10);

/// The counters that move when a run has work: read, skipped, delivered.
fn moving(stats: &Stats) -> [u64; 5] {
    [
        Stats::get(&stats.records_in),
        Stats::get(&stats.skipped),
        Stats::get(&stats.scored),
        Stats::get(&stats.cleaned),
        Stats::get(&stats.dead_letters),
    ]
}

/// The thread watching a run (see the module docs); stopped by
/// [`Watcher::finish`] or when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching the run `shared` describes (a topic run: a file run
    /// has nothing to watch); `quiet` (`-q`): no spinner, no repeated
    /// "caught up" lines.
    pub fn start(shared: Arc<Shared>, quiet: bool) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        if matches!(shared.source, SourcePlan::File { .. }) {
            return Watcher { stop, thread: None };
        }
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("loanflow-watch".into())
                .spawn(move || watch(&shared, quiet, &stop))
                .ok()
        };
        Watcher { stop, thread }
    }

    /// Stops watching, once the workers are done (the idle time is final).
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // Wakes it from its tick at once: the run's end never waits for it.
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The topic side of a watch: what a topic run shows.
struct Topic<'a> {
    name: &'a str,
    partitions: i32,
    config: &'a crate::io::kafka::KafkaConfig,
}

fn watch(shared: &Shared, quiet: bool, stop: &AtomicBool) {
    let stats = &shared.stats;
    let topic = match &shared.source {
        SourcePlan::Kafka {
            topic,
            partitions,
            config,
            ..
        } => Some(Topic {
            name: topic,
            partitions: *partitions,
            config,
        }),
        SourcePlan::File { .. } => None,
    };
    let live = topic.is_some() && shared.until.is_none();
    let spinner = topic
        .as_ref()
        .filter(|_| !quiet && std::io::stderr().is_terminal())
        .map(|_| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("static template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
    let say = |line: String| match &spinner {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    };

    let mut last = moving(stats);
    let mut last_tick = Instant::now();
    // Ticks in a row nothing moved, and the first of them (idle once confirmed).
    let (mut still, mut pending) = (0u32, Duration::ZERO);
    let mut idle = Duration::ZERO;
    // The last "caught up" line: when, and how many records had been read.
    let mut announced: Option<(Instant, u64)> = None;
    // Records/s over the last half second or so, and the last log line.
    let mut rate_from = (Instant::now(), 0u64);
    let mut rate = 0.0;
    let mut logged = (Instant::now(), 0u64);

    loop {
        std::thread::park_timeout(TICK);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let dt = now - last_tick;
        last_tick = now;
        if shared.started.get().is_none() {
            continue; // a cluster still connecting: not part of the run's time
        }
        let Some(topic) = &topic else { continue };
        let owned = Stats::get(&stats.partitions);
        // A process whose workers own no partition (more workers than
        // partitions) has nothing to catch up on: it is caught up at once.
        let caught_up = (owned > 0 && Stats::get(&stats.partitions_at_end) >= owned)
            || owns_none(topic.partitions, shared.at);
        let counters = moving(stats);
        if counters != last || !caught_up {
            (still, pending) = (0, Duration::ZERO);
        } else {
            still += 1;
            match still {
                1 => pending = dt,
                2 => idle += pending + dt,
                _ => idle += dt,
            }
        }
        last = counters;
        stats
            .idle_ns
            .store(idle.as_nanos() as u64, Ordering::Relaxed);

        let read = Stats::get(&stats.records_in);
        if now - rate_from.0 >= Duration::from_millis(500) {
            rate = (read - rate_from.1) as f64 / (now - rate_from.0).as_secs_f64();
            rate_from = (now, read);
        }
        let lag = if caught_up {
            Some(0)
        } else {
            topic.config.lag(topic.name)
        };
        if live && still >= 2 {
            let again = announced.is_some_and(|(at, records)| {
                records != read && !quiet && at.elapsed() >= REPEAT_AFTER
            });
            if announced.is_none() || again {
                announced = Some((now, read));
                say(caught_up_line(topic, owned, read));
            }
        }
        if let Some(bar) = &spinner {
            bar.set_message(if still >= 2 {
                format!(
                    "{}: {read} records · caught up, waiting for more — Ctrl-C stops",
                    topic.name
                )
            } else {
                format!(
                    "{}: {read} records · {rate:.0} records/s{}",
                    topic.name,
                    lag.map(|l| format!(" · lag {l}")).unwrap_or_default()
                )
            });
        } else if now - logged.0 >= LOG_EVERY {
            if read != logged.1 || lag.is_some_and(|l| l > 0) {
                let per_second = (read - logged.1) as f64 / (now - logged.0).as_secs_f64();
                tracing::info!(
                    "{}: {read} records read, {per_second:.0} records/s{}",
                    topic.name,
                    lag.map(|l| format!(", lag {l}")).unwrap_or_default()
                );
            }
            logged = (now, read);
        }
    }
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
}

/// Whether no partition of `partitions` belongs to this process's workers
/// (partition `p` is worker `p % all workers`'s, workers numbered process by process).
fn owns_none(partitions: i32, at: Placement) -> bool {
    let all = at.workers * at.processes;
    let mine = at.process * at.workers..(at.process + 1) * at.workers;
    !(0..partitions.max(0) as usize).any(|p| mine.contains(&(p % all)))
}

/// `loanflow: caught up on loans (4 partitions, 9857 records); waiting for
/// more — Ctrl-C stops` (a cluster process names its share of the partitions).
fn caught_up_line(topic: &Topic<'_>, owned: u64, read: u64) -> String {
    let partitions = if owned == topic.partitions as u64 {
        format!("{owned} partition{}", if owned == 1 { "" } else { "s" })
    } else if owned == 0 {
        format!(
            "none of its {} partitions: more workers than partitions",
            topic.partitions
        )
    } else {
        format!("{owned} of its {} partitions", topic.partitions)
    };
    format!(
        "loanflow: caught up on {} ({partitions}, {read} records); waiting for more — Ctrl-C stops",
        topic.name
    )
}

#[cfg(test)]
mod tests {
    use super::{owns_none, Placement};

    #[test]
    fn a_process_whose_workers_own_no_partition_knows_it() {
        let at = |process, workers, processes| Placement {
            workers,
            processes,
            process,
        };
        // 4 partitions over 2 × 4 workers: process 1's workers 4..8 own none.
        assert!(!owns_none(4, at(0, 4, 2)));
        assert!(owns_none(4, at(1, 4, 2)));
        // 8 partitions: partition 4 → worker 4, in process 1.
        assert!(!owns_none(8, at(1, 4, 2)));
        assert!(!owns_none(1, at(0, 1, 1)));
    }
}
