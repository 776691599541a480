//! A dataflow run: everything checked before the workers start, then the
//! workers, then the summary with the outputs published.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use timely::{CommunicationConfig, WorkerConfig};

use super::cluster::{self, Fingerprint, Membership, ProcessCounts};
use super::control::Control;
use super::load::{file_sha256, load, Loaded};
use super::plan::{Placement, SinkPlan, SourcePlan};
use super::progress;
use super::summary::Summary;
use super::worker::{run_worker, Shared};
use crate::cli::RunArgs;
use crate::core::fault::Fault;
use crate::core::monitor::Monitor;
use crate::core::position::Until;
use crate::core::scored::OutputFormat;
use crate::core::window::Plan;
use crate::dataflow::graph::Stages;
use crate::dataflow::pace::Pace;
use crate::io::file::part_dir;
use crate::io::monitor::MonitorSink;
use crate::io::{Reach, Stats};
use crate::spec::Spec;

/// How a run whose workers started ended in a fault: the first one
/// recorded, and whether the run had committed anything before it (which
/// [`run_restarting`](crate::pipeline::restart::run_restarting) uses to tell
/// one outage from the next). A run that could not start is a set-up error
/// instead.
#[derive(Debug, thiserror::Error)]
#[error("{fault}")]
pub struct RunFault {
    /// The first fault the run recorded.
    pub fault: Fault,
    /// Whether the run committed anything before it failed.
    pub committed: bool,
}

/// The timely configuration of `workers` threads in one process.
fn timely_config(workers: usize) -> timely::Config {
    timely::Config {
        communication: if workers == 1 {
            CommunicationConfig::Thread
        } else {
            CommunicationConfig::Process(workers)
        },
        worker: WorkerConfig::default(),
    }
}

/// Runs the dataflow until the input ends (files, `--until-caught-up`) or
/// the process is asked to stop (SIGINT/SIGTERM), then returns what it did.
pub fn run(args: &RunArgs, control: &Control) -> Result<Summary> {
    run_paced(args, None, control)
}

/// [`run`], with a file replayed at `pace` (see `loanflow replay`).
pub fn run_paced(args: &RunArgs, pace: Option<Pace>, control: &Control) -> Result<Summary> {
    let shared = Arc::new(prepare(args, pace, control)?);
    let Shared {
        membership,
        stats,
        at,
        ..
    } = &*shared;
    let at = *at;
    let watcher = progress::Watcher::start(Arc::clone(&shared), args.quiet);
    tracing::info!(dataflow = %shared.spec.name, model = %shared.fingerprint.model, workers = at.workers, processes = at.processes, process = at.process, "starting");
    let connected = Arc::new(AtomicBool::new(false));
    if let Some(m) = membership {
        cluster::watchdog(m, Arc::clone(&connected), control);
    }
    let guards = {
        let shared = Arc::clone(&shared);
        let work = move |worker: &mut timely::worker::Worker| run_worker(worker, &shared);
        match membership {
            // Connected quietly (timely's own set-up chatters on stdout).
            Some(m) => {
                let (builders, others) = m.connect()?;
                timely::execute::execute_from(builders, others, WorkerConfig::default(), work)
            }
            None => timely::execute(timely_config(at.workers), work),
        }
        .map_err(|e| anyhow!("cannot start the workers: {e}"))?
    };
    connected.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut cluster_counts: Option<Vec<ProcessCounts>> = None;
    let mut refused = None;
    for result in guards.join() {
        match result.map_err(|e| anyhow!("a worker failed: {e}"))? {
            Ok(Some(counts)) => cluster_counts = Some(counts),
            Ok(None) => {}
            Err(e) => refused = Some(e),
        }
    }
    watcher.finish();
    if let Some(e) = refused {
        return Err(e.into());
    }
    if let Some(bar) = &shared.progress {
        bar.finish_and_clear();
    }
    if let Some(fault) = stats.failure() {
        // Exactly-once sinks count their outputs once committed.
        let committed = Stats::get(&stats.scored) + Stats::get(&stats.dead_letters) > 0;
        return Err(RunFault {
            // A cluster process does not start again alone (its peers'
            // dataflow went down with its own; the launcher stops the cluster).
            fault: if at.processes == 1 {
                fault
            } else {
                fault.never_retried()
            },
            committed,
        }
        .into());
    }
    summarize(&shared, at, cluster_counts.as_deref())
}

/// Everything before the workers start: the spec and model, the cluster
/// membership, the source and sink plans. Every error here is a set-up
/// error, one line, and nothing has been written.
fn prepare(args: &RunArgs, pace: Option<Pace>, control: &Control) -> Result<Shared> {
    args.check_stages()?;
    let Loaded { spec, model } = load(
        &args.pipeline.dataflow,
        args.pipeline.model.as_deref(),
        args.stages != Stages::Clean,
    )?;
    let spec = if args.label_through {
        Arc::new(with_label_through(&spec))
    } else {
        spec
    };
    let workers = args.workers as usize;
    let membership = Membership::from_flags(&args.cluster, workers)?;
    let at = placement(args, membership.as_ref());
    if let Some(addr) = &args.http {
        // Before anything is read or written: a bad or busy address is a
        // set-up error. A run started again keeps the server (io::http).
        let offset = u16::try_from(at.process).unwrap_or(u16::MAX);
        let first = crate::io::http::served().is_none();
        let served = crate::io::http::serve(&crate::io::http::with_port_offset(addr, offset)?)?;
        if first {
            // Where it listens, the real port of `:0` included (`loanflow
            // cluster` passes each process's line on); once, not per restart.
            match at.processes {
                1 => eprintln!(
                    "loanflow: serving http://{}/ (metrics: /metrics)",
                    served.addr
                ),
                _ => eprintln!(
                    "loanflow: process {} serves http://{}/ (metrics: /metrics)",
                    at.process, served.addr
                ),
            }
        }
    }
    let kafka = args.kafka.config()?;
    let source = SourcePlan::new(args, &spec, kafka.as_ref())?;
    let sink = SinkPlan::new(args, &source, kafka.as_ref(), at)?;
    let monitor = monitor(args, &spec, kafka.as_ref(), at)?;
    let until = if args.until_caught_up {
        Some(Until::End)
    } else {
        args.until
    };
    let stats = Arc::new(Stats::default());
    let progress = match &source {
        // A process of a cluster reads a share of the file the bar cannot know.
        SourcePlan::File { input, .. } if at.processes == 1 => {
            progress::progress_bar(input.data_len(), args.quiet)
        }
        _ => None,
    };
    let fingerprint = Fingerprint {
        process: at.process,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        spec: spec.name.clone(),
        spec_sha256: file_sha256(&args.pipeline.dataflow)?,
        model: model.id.clone(),
        model_sha256: model.sha256.clone(),
        incarnation: sink
            .exactly_once()
            .map(|eo| eo.incarnation.clone())
            .unwrap_or_default(),
    };
    let Cadence { batch, reach } = Cadence::of(
        args.batch.map(|b| b as usize),
        matches!(source, SourcePlan::File { .. }),
        Plan::of(&spec).is_some(),
        sink.exactly_once().is_some(),
        pace.as_ref(),
    );
    Ok(Shared {
        format: OutputFormat::new(&spec, &model.id).stamped(args.stamp),
        forest: Arc::new(model.forest.clone()),
        spec,
        source,
        sink,
        stages: args.stages,
        stats,
        control: control.clone(),
        progress,
        membership,
        fingerprint,
        sink_ready: OnceLock::new(),
        started: OnceLock::new(),
        pace,
        at,
        batch,
        reach,
        origin: OnceLock::new(),
        from: args.from,
        until,
        max_record_bytes: args.max_record_bytes as usize,
        idle_spin: Duration::from_micros(args.idle_spin),
        idle_timeout: args.idle_timeout,
        monitor_holds_commits: args.monitor.is_some() || args.monitor_topic.is_some(),
        monitor,
    })
}

/// Records per epoch per worker from a file, without `--batch`. There an
/// epoch is only the unit of progress, and each operator takes a whole
/// epoch at a time, so a small one keeps its records in cache from one
/// operator to the next; window runs gain most, since their rows wait for
/// their epoch's answers (benches/README.md, "Window features"). Outputs
/// do not depend on it.
pub const FILE_BATCH: usize = 1024;

/// [`FILE_BATCH`] for a dataflow with window features: its rows wait for
/// their epoch's answers, so what waits is smaller and more of it still in
/// cache when answered. Faster on the machine of stop 28; within the noise
/// of 256 and 1,024 on stop 29's (benches/README.md, "Window features").
pub const FILE_WINDOW_BATCH: usize = 512;

/// Records per epoch per worker from Kafka, without `--batch`: there an
/// epoch is also the unit of commits (and of transactions, exactly once).
pub const KAFKA_BATCH: usize = 4096;

/// [`KAFKA_BATCH`] for a dataflow with window features, at least once: an
/// application waits for the watermark, which moves once per epoch, so an
/// epoch of 4,096 records read four epochs ahead kept each about an epoch
/// and a half (p50 61–67 ms, -w 1, 300,000 records at 90,000/s, Tansu);
/// with 1,024 and [`Reach::WINDOW_INTAKE`] p50 was 13–15 ms at the same rate
/// (benches/README.md, "Window features", stop 36). Exactly once keeps
/// [`KAFKA_BATCH`]: each epoch is a transaction, and 1,024 took 1.7× the
/// CPU there.
pub const KAFKA_WINDOW_BATCH: usize = 1024;

/// How long an epoch of a source paced by rate lasts at most: an
/// application waits for its epoch to be passed (window features, the
/// monitor), so at a low rate a full `--batch` would be a long wait.
const PACED_EPOCH_SECS: f64 = 0.005;

/// How a run's sources cut their reading into epochs and how far they read
/// ahead: decided once per process, from the flags and the dataflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cadence {
    /// Records per epoch per worker ([`epoch_batch`]).
    batch: usize,
    /// How far past what paces it a source reads (`io::Progress::read`).
    reach: Reach,
}

impl Cadence {
    /// `asked` is `--batch`; `file`: the source is a file, not a topic. A
    /// dataflow with window features (`windows`) reads in smaller epochs,
    /// and no further than an epoch past what its window stage took in
    /// ([`Reach::WINDOW_INTAKE`]): its applications wait for the watermark,
    /// so every epoch read ahead is an epoch they wait longer, and cached
    /// rows grown cold. Not where a pace holds
    /// records until they are due (a replay reads ahead of that, at the
    /// sinks' reach), nor for exactly-once topics, whose epochs are
    /// transactions ([`KAFKA_WINDOW_BATCH`]).
    fn of(
        asked: Option<usize>,
        file: bool,
        windows: bool,
        exactly_once: bool,
        pace: Option<&Pace>,
    ) -> Cadence {
        let batch = asked.unwrap_or(match (file, windows) {
            (true, true) => FILE_WINDOW_BATCH,
            (true, false) => FILE_BATCH,
            (false, true) if !exactly_once => KAFKA_WINDOW_BATCH,
            (false, _) => KAFKA_BATCH,
        });
        let reach = if windows && pace.is_none() && (file || !exactly_once) {
            Reach::WINDOW_INTAKE
        } else {
            Reach::SINKS
        };
        Cadence {
            batch: epoch_batch(batch, pace),
            reach,
        }
    }
}

/// Records per epoch per worker: `--batch`, or fewer when the source is paced
/// by rate, so that an epoch closes within [`PACED_EPOCH_SECS`] of the pace.
/// Outputs do not depend on it (batch sizes are a tested dimension of
/// determinism); only how soon an epoch is passed does.
fn epoch_batch(batch: usize, pace: Option<&Pace>) -> usize {
    match pace.and_then(|p| p.pacer.rate()) {
        Some(rate) => batch.min(((rate * PACED_EPOCH_SECS).ceil() as usize).max(1)),
        None => batch,
    }
}

/// The monitor `--monitor`/`--monitor-topic` ask for, with its outputs
/// (written by process 0 only, where worker 0 merges the windows).
fn monitor(
    args: &RunArgs,
    spec: &Spec,
    kafka: Option<&Arc<crate::io::kafka::KafkaConfig>>,
    at: Placement,
) -> Result<Option<(Arc<Monitor>, Arc<MonitorSink>)>> {
    let asked = args.monitor.is_some() || args.monitor_topic.is_some();
    // With --http, a spec's [monitor] feeds the gauges and the live page even
    // when no monitor output is asked for (where every stage runs together).
    let for_page = args.http.is_some()
        && !args.no_monitor
        && spec.monitor.is_some()
        && args.stages == Stages::All;
    if !asked && !for_page {
        return Ok(None);
    }
    if args.stages != Stages::All {
        return Err(anyhow!(
            "--monitor needs every stage in one dataflow (it counts scores and features together): drop --stages"
        ));
    }
    let monitor = Monitor::load(spec)?;
    let mut to = MonitorSink::default();
    if at.process == 0 {
        if let Some(path) = &args.monitor {
            if path == &args.output || path == &args.dead_letters {
                return Err(anyhow!(
                    "--monitor {} is also an output of the run: give it a file of its own",
                    path.display()
                ));
            }
            to = to.with_file(path)?;
        }
        if let (Some(topic), Some(config)) = (&args.monitor_topic, kafka) {
            super::plan::announce(&config.ensure_output_topic(topic, 1, &[])?);
            to = to.with_topic(config, topic)?;
        }
    }
    Ok(Some((Arc::new(monitor), Arc::new(to))))
}

/// `spec` with its label column carried like a passthrough column (the
/// backfill's rows need it; serving never does).
pub fn with_label_through(spec: &Spec) -> Spec {
    let mut spec = spec.clone();
    if let Some(label) = spec.label.as_ref().and_then(|l| spec.column(&l.column)) {
        if !spec.passthrough.contains(&label) {
            spec.passthrough.push(label);
        }
    }
    spec
}

fn placement(args: &RunArgs, membership: Option<&Membership>) -> Placement {
    let (processes, process) = membership.map_or((1, 0), |m| (m.processes, m.process));
    Placement {
        workers: args.workers as usize,
        processes,
        process,
    }
}

/// The run's summary, its outputs published (file outputs are renamed from
/// `.partial` only now that the run succeeded, and only if it read its input
/// to the end: a file run or a bounded one that a signal stopped leaves them
/// `.partial` and says so, [`Summary::unfinished`]).
fn summarize(shared: &Shared, at: Placement, cluster: Option<&[ProcessCounts]>) -> Result<Summary> {
    let mut totals = ProcessCounts::of(at.process, &shared.stats);
    if let Some(counts) = cluster {
        // The cluster was busy while any of its processes was.
        let idle_ns = counts.iter().map(|c| c.idle_ns).min().unwrap_or(0);
        totals = ProcessCounts {
            process: at.process,
            idle_ns,
            ..Default::default()
        };
        for c in counts {
            totals.skipped += c.skipped;
            totals.history += c.history;
            totals.records_in += c.records_in;
            totals.bytes_in += c.bytes_in;
            totals.scored += c.scored;
            totals.flagged += c.flagged;
            totals.cleaned += c.cleaned;
            totals.dead_letters += c.dead_letters;
        }
    }
    // A live topic run ends by a signal (a service being stopped); an
    // input with an end (a file, --until) that a signal cut short is unfinished.
    let has_end = matches!(shared.source, SourcePlan::File { .. }) || shared.until.is_some();
    let unfinished = shared.control.stopped() && has_end;
    let (output, dead_letters_to) = match &shared.sink {
        SinkPlan::File {
            scored,
            dead,
            parts_of,
        } if unfinished => {
            let partial = |p: Option<&std::path::Path>| p.map(|p| p.display().to_string());
            let (output, dead_to) = (scored.keep_partial()?, dead.keep_partial()?);
            match parts_of {
                Some((output, dead_letters, _)) if at.process == 0 => (
                    format!("{}/part-*.jsonl.partial", part_dir(output).display()),
                    (totals.dead_letters > 0).then(|| {
                        format!("{}/part-*.jsonl.partial", part_dir(dead_letters).display())
                    }),
                ),
                _ => (
                    partial(output).unwrap_or_else(|| scored.path().display().to_string()),
                    partial(dead_to),
                ),
            }
        }
        SinkPlan::File {
            scored,
            dead,
            parts_of,
        } => {
            scored.finish()?;
            let wrote_dead = dead.finish()?;
            match parts_of {
                Some((output, dead_letters, _)) if at.process == 0 => (
                    format!("{}/part-*.jsonl", part_dir(output).display()),
                    (totals.dead_letters > 0)
                        .then(|| format!("{}/part-*.jsonl", part_dir(dead_letters).display())),
                ),
                _ => (
                    scored.path().display().to_string(),
                    wrote_dead.then(|| dead.path().display().to_string()),
                ),
            }
        }
        SinkPlan::Kafka {
            topic,
            dead_letter_topic,
            ..
        } => (
            format!("topic {topic}"),
            Some(format!("topic {dead_letter_topic}")),
        ),
    };
    let cleaned_to = match (&shared.sink, shared.stages) {
        (
            SinkPlan::Kafka {
                cleaned_topic: Some(t),
                ..
            },
            _,
        ) => Some(format!("topic {t}")),
        (_, Stages::Clean) => Some(output.clone()),
        _ => None,
    };
    let elapsed = shared
        .started
        .get()
        .map_or(Duration::ZERO, Instant::elapsed);
    Ok(Summary {
        busy: elapsed.saturating_sub(Duration::from_nanos(totals.idle_ns)),
        skipped: totals.skipped,
        history: totals.history,
        windows: !shared.spec.windows.is_empty() && shared.stages != Stages::Predict,
        signal: shared.control.signal(),
        unfinished,
        records_in: totals.records_in,
        bytes_in: totals.bytes_in,
        scored: totals.scored,
        flagged: totals.flagged,
        cleaned: totals.cleaned,
        cleaned_to,
        stages: shared.stages,
        dead_letters: totals.dead_letters,
        elapsed,
        workers: at.workers * at.processes,
        processes: at.processes,
        process: at.process,
        output,
        dead_letters_to,
        model: shared.fingerprint.model.clone(),
        interrupted: shared.control.stopped(),
        restarts: 0,
        http: crate::io::http::served().map(|a| a.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pace::Pacer;
    use crate::core::position::{Speed, Window};

    fn paced(rate: Option<f64>, speed: Speed) -> Pace {
        Pace {
            pacer: Pacer::new(speed, rate),
            window: Window::default(),
        }
    }

    #[test]
    fn a_source_paced_by_rate_closes_epochs_of_at_most_five_milliseconds() {
        assert_eq!(epoch_batch(4096, None), 4096);
        // 800 records/s: 4 records are 5 ms.
        assert_eq!(epoch_batch(4096, Some(&paced(Some(800.0), Speed::Max))), 4);
        // 58,436 records/s: 293 (rounded up).
        assert_eq!(
            epoch_batch(4096, Some(&paced(Some(58_436.0), Speed::Max))),
            293
        );
        // Never more than --batch, never none.
        assert_eq!(epoch_batch(64, Some(&paced(Some(1e9), Speed::Max))), 64);
        assert_eq!(epoch_batch(4096, Some(&paced(Some(1.0), Speed::Max))), 1);
        // Paced by event time: the rate is not known, --batch stands.
        let by_time = paced(None, Speed::Factor(3600.0));
        assert_eq!(epoch_batch(4096, Some(&by_time)), 4096);
    }

    #[test]
    fn window_runs_read_small_epochs_close_behind_their_window_stage_except_exactly_once() {
        let of = |asked, file, windows, exactly_once, pace| {
            let Cadence { batch, reach } = Cadence::of(asked, file, windows, exactly_once, pace);
            (batch, reach)
        };
        let (intake, sinks) = (Reach::WINDOW_INTAKE, Reach::SINKS);
        // Stateless: as before, paced by the sinks.
        assert_eq!(of(None, true, false, false, None), (FILE_BATCH, sinks));
        assert_eq!(of(None, false, false, false, None), (KAFKA_BATCH, sinks));
        assert_eq!(of(None, false, false, true, None), (KAFKA_BATCH, sinks));
        // Window features: a file, and a topic at least once.
        assert_eq!(
            of(None, true, true, false, None),
            (FILE_WINDOW_BATCH, intake)
        );
        assert_eq!(
            of(None, false, true, false, None),
            (KAFKA_WINDOW_BATCH, intake)
        );
        // Exactly once: an epoch is a transaction; as a stateless run.
        assert_eq!(of(None, false, true, true, None), (KAFKA_BATCH, sinks));
        // --batch stands, whatever the source.
        assert_eq!(of(Some(64), false, true, false, None), (64, intake));
        assert_eq!(of(Some(64), true, false, false, None), (64, sinks));
        // A replay paced by rate: its epochs shrink to the pace, and it reads
        // ahead of what is due at the sinks' reach.
        let rate = paced(Some(800.0), Speed::Max);
        assert_eq!(of(None, false, true, false, Some(&rate)), (4, sinks));
        assert_eq!(of(None, true, true, false, Some(&rate)), (4, sinks));
    }
}
