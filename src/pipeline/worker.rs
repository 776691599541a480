//! One timely worker of a run: in a cluster, the start-up check; then its
//! sink and source from the plan, the dataflow between them, and stepping
//! until every epoch is delivered (or the run failed).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use super::cluster::{self, Fingerprint, Membership, ProcessCounts};
use super::control::Control;
use super::idle::Idle;
use super::plan::{Placement, SinkPlan, SourcePlan};
use crate::core::fault::Fault;
use crate::core::monitor::{Monitor, WindowReport};
use crate::core::position::{From, Until};
use crate::core::reasons::Sources;
use crate::core::scored::OutputFormat;
use crate::core::window::Plan;
use crate::core::Epoch;
use crate::dataflow::clean::Cleaner;
use crate::dataflow::graph::{Graph, Spread, Stages, Windowing};
use crate::dataflow::ingest::Parser;
use crate::dataflow::pace::Pace;
use crate::dataflow::predict::Predictor;
use crate::dataflow::rows::RowReader;
use crate::dataflow::watermark::Marks;
use crate::io::exactly_once::{TransactionalSink, TransactionalSinkConfig};
use crate::io::file::{FileSink, FileSource};
use crate::io::kafka::{KafkaSink, KafkaSource, OffsetLedger};
use crate::io::monitor::MonitorSink;
use crate::io::{Feed, Progress, Reach, Sink, Source, Stats};
use crate::model::Forest;
use crate::spec::Spec;

/// Everything every worker of a process shares, read-only but for the
/// counters, the once-only cells and the producers it takes.
pub struct Shared {
    /// The dataflow spec.
    pub spec: Arc<Spec>,
    /// The model's trees, which every worker's predictor scores with.
    pub forest: Arc<Forest>,
    /// How scored applications are written (stamped with `--stamp`).
    pub format: OutputFormat,
    /// Where records come from.
    pub source: SourcePlan,
    /// Where outputs and dead letters go.
    pub sink: SinkPlan,
    /// Which stages run here (`--stages`).
    pub stages: Stages,
    /// The process's counters and first fault.
    pub stats: Arc<Stats>,
    /// The stop flag, and how to halt the process.
    pub control: Control,
    /// The bar over the input file's bytes, if one is shown.
    pub progress: Option<ProgressBar>,
    /// This process's place in a cluster; `None` for a single process.
    pub membership: Option<Membership>,
    /// What this process brings to a cluster's start-up check.
    pub fingerprint: Fingerprint,
    /// The sink's preparation, done once per process (after a cluster's check).
    pub sink_ready: OnceLock<Result<(), Fault>>,
    /// Set by the first worker to start, so a cluster's connection time is not counted.
    pub started: OnceLock<Instant>,
    /// How a replay into the pipeline is paced; `None`: as fast as it goes.
    pub pace: Option<Pace>,
    /// Local workers, processes, this process's index.
    pub at: Placement,
    /// Most records per epoch per worker (`--batch`).
    pub batch: usize,
    /// How far a source reads past what paces it (`run::Cadence`).
    pub reach: Reach,
    /// The one origin of every worker's Kafka ticks (`KafkaSource::origin`):
    /// set by the process's first worker past the cluster's start-up check,
    /// which every process passes within a message's time of the others,
    /// so the processes of a cluster tick together too, whenever each was
    /// launched.
    pub origin: OnceLock<Instant>,
    /// Where each Kafka partition starts (`--from`).
    pub from: From,
    /// Where each Kafka partition stops (`--until`, or `end` with
    /// `--until-caught-up`); `None`: run live until stopped.
    pub until: Option<Until>,
    /// Records longer than this many bytes are dead letters.
    pub max_record_bytes: usize,
    /// How long an idle worker polls before it parks (`--idle-spin`).
    pub idle_spin: Duration,
    /// A live topic run with window features: after how long without a
    /// record a partition stops holding the watermark (`--idle-timeout`).
    pub idle_timeout: Duration,
    /// With `--monitor`/`--monitor-topic`: the monitor, and where its
    /// reports go (nowhere but on process 0).
    pub monitor: Option<(Arc<Monitor>, Arc<MonitorSink>)>,
    /// Whether an input offset waits for the monitor's windows its records
    /// count in (`--monitor`/`--monitor-topic` asked for; not when the
    /// monitor only feeds `--http`'s gauges and page).
    pub monitor_holds_commits: bool,
}

/// What a worker ends with: on worker 0 of a cluster, every process's counts.
pub type WorkerResult = Result<Option<Vec<ProcessCounts>>, Fault>;

/// Runs one worker to its end.
pub fn run_worker(worker: &mut Worker, shared: &Shared) -> WorkerResult {
    shared.started.get_or_init(Instant::now);
    let _running = Running::new();
    let incarnation = match &shared.membership {
        Some(m) => start_up_check(worker, shared, m)?,
        None => None,
    };
    let origin = *shared.origin.get_or_init(Instant::now);
    // The sink first: an exactly-once sink fences the previous incarnation
    // before the source reads the committed offsets.
    let ledger = OffsetLedger::default();
    let sink = sink(worker, shared, incarnation.as_deref(), &ledger)?;
    let exactly_once = shared.sink.exactly_once().is_some();
    let windows = windowing(shared, worker.index(), worker.peers());
    let marks = windows.as_ref().map(|w| w.marks.clone());
    let (source, parser) = source(
        shared,
        exactly_once.then_some(ledger),
        marks.clone(),
        origin,
    );
    let done = ProbeHandle::<Epoch>::new();
    // The monitor's reports when they hold no commit (see below).
    let reported = ProbeHandle::<Epoch>::new();
    let pipeline = worker.next_dataflow_index();
    // The sink's deliveries alone (`done` may also wait for the monitor's
    // reports, which wait for the watermark, which waits for reading).
    let delivered = ProbeHandle::<Epoch>::new();
    // With window features a source paces itself by what the window stage
    // took in, not by what was delivered (see `Windowing::read`): its
    // outputs wait for the watermark. Without them (the monitor alone)
    // nothing the sink delivers waits, so it paces by the sink as a
    // stateless run does, which keeps as little in flight.
    let progress = Progress {
        delivered: done.clone(),
        read: match &windows {
            Some(w) if w.plan.is_some() => w.read.clone(),
            Some(_) => delivered.clone(),
            None => done.clone(),
        },
        reach: shared.reach,
    };
    let graph = graph(shared, parser, windows);
    worker.dataflow::<Epoch, _, _>(|scope| {
        let raw = source.build(scope, progress);
        let (outputs, dead, reports) =
            crate::dataflow::graph::build(raw, shared.pace.clone(), graph);
        sink.build(outputs, dead)
            .probe_with(&delivered)
            .probe_with(&done);
        if let (Some(reports), Some((_, to))) = (reports, &shared.monitor) {
            // The run is done with an epoch only once its window reports
            // are delivered (dataflow::monitor, invariant 2) — unless they
            // only feed the metrics, which must not hold commits back.
            let written = write_reports(reports, Arc::clone(to), Arc::clone(&shared.stats));
            if shared.monitor_holds_commits {
                written.probe_with(&done);
            } else {
                written.probe_with(&reported);
            }
        }
    });
    let stats = &shared.stats;
    let halted = || marks.as_ref().is_some_and(Marks::halted);
    let finished = || done.done() && reported.done();
    let mut idle = Idle::new(shared.idle_spin);
    while !finished() && !stats.failed() && !halted() {
        idle.turn(worker, Duration::from_millis(100));
    }
    if (stats.failed() || halted()) && !finished() {
        // A failed run leaves epochs that will never finish (a sink holds
        // the capabilities of undelivered messages), and so does a window
        // run stopped while applications wait for the watermark (its source
        // committed what was delivered, then halted): drop the dataflow, or
        // timely would wait for it forever.
        worker.drop_dataflow(pipeline);
    }
    let Some(m) = &shared.membership else {
        return Ok(None);
    };
    if let Some(failure) = stats.failure() {
        cluster::fail_now(&shared.control, m.process, &failure);
    }
    // `done` is the whole cluster's: every process has counted all it will.
    let first = m.is_first_of_process(worker.index());
    let counts = cluster::gather(worker, first.then(|| ProcessCounts::of(m.process, stats)));
    Ok((worker.index() == 0).then_some(counts))
}

/// Counts this worker in the metrics' running workers while it lives
/// (`/healthz`), however it ends.
struct Running(Option<&'static crate::core::metrics::Metrics>);

impl Running {
    fn new() -> Running {
        let m = crate::core::metrics::installed();
        if let Some(m) = m {
            m.worker_running(1);
        }
        Running(m)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(m) = self.0 {
            m.worker_running(-1);
        }
    }
}

/// Writes the monitor's window reports (they are all on worker 0).
fn write_reports<'s>(
    reports: crate::dataflow::Batches<'s, WindowReport>,
    to: Arc<MonitorSink>,
    stats: Arc<Stats>,
) -> crate::dataflow::Batches<'s, ()> {
    reports.unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        "MonitorSink",
        move |_, _| {
            move |input, _output| {
                input.for_each(|_, batch| {
                    if let Some(m) = crate::core::metrics::installed() {
                        // The same windows as the monitor's output, as gauges
                        // and the live page's series.
                        for report in batch.iter() {
                            m.set_window(report.window_end_ms, report.flag_rates(), report.psis());
                        }
                    }
                    if let Err(e) = to.write(batch) {
                        stats.fail(e);
                    }
                    batch.clear();
                });
            }
        },
    )
}

/// A cluster's start-up check: every worker sees every process's
/// fingerprint, so every process reaches the same verdict and stops by
/// itself. Returns the incarnation the cluster writes under: process 0's.
fn start_up_check(
    worker: &mut Worker,
    shared: &Shared,
    m: &Membership,
) -> Result<Option<String>, Fault> {
    let first = m.is_first_of_process(worker.index());
    let prints = cluster::gather(worker, first.then(|| shared.fingerprint.clone()));
    cluster::check_fingerprints(&prints)?;
    if let Err(e) = shared.sink_ready.get_or_init(|| shared.sink.prepare()) {
        cluster::fail_now(&shared.control, m.process, e);
    }
    Ok(prints
        .iter()
        .min_by_key(|p| p.process)
        .map(|p| p.incarnation.clone()))
}

/// The window features' plan, if the spec has any, with the partitions
/// worker `index` of `peers` reads: a file's worker one (its stripes), a
/// topic's worker the partitions it owns (as the Kafka source assigns them).
fn windowing(shared: &Shared, index: usize, peers: usize) -> Option<Windowing> {
    let partitions = match &shared.source {
        SourcePlan::File { .. } => vec![0],
        SourcePlan::Kafka { partitions, .. } => (0..*partitions)
            .filter(|p| *p as usize % peers == index)
            .collect(),
    };
    let live = matches!(&shared.source, SourcePlan::Kafka { .. }) && shared.until.is_none();
    let plan = Plan::of(&shared.spec);
    if plan.is_none() && shared.monitor.is_none() {
        return None; // the stateless path
    }
    Some(Windowing {
        plan: plan.map(Arc::new),
        lateness: shared.spec.lateness,
        partitions,
        read: ProbeHandle::new(),
        marks: Marks::default(),
        idle: live.then_some(shared.idle_timeout),
    })
}

/// The stages this run has, each with its plain struct.
fn graph(shared: &Shared, parser: Parser, windows: Option<Windowing>) -> Graph {
    let predictor = || {
        Predictor::new(Arc::clone(&shared.forest), shared.spec.threshold)
            .explaining(Sources::of(&shared.spec).map(Arc::new))
    };
    match shared.stages {
        Stages::All => Graph::All {
            parser,
            cleaner: Cleaner::new(&shared.spec),
            predictor: predictor(),
            cleaned: matches!(
                &shared.sink,
                SinkPlan::Kafka {
                    cleaned_topic: Some(_),
                    ..
                }
            ),
            windows,
            monitor: shared.monitor.as_ref().map(|(m, _)| Arc::clone(m)),
            // Only a topic's offsets are committed.
            monitor_holds: shared.monitor_holds_commits
                && matches!(shared.source, SourcePlan::Kafka { .. }),
            spread: spread(shared),
        },
        Stages::Clean => Graph::Clean {
            parser,
            cleaner: Cleaner::new(&shared.spec),
            windows,
            spread: spread(shared),
        },
        Stages::Predict => {
            let stats = Arc::clone(&shared.stats);
            Graph::Predict {
                rows: RowReader::new(&shared.spec, shared.max_record_bytes),
                predictor: predictor(),
                fail: Box::new(move |fault| stats.fail(fault)),
            }
        }
    }
}

/// Where records are cleaned: a file's stripes are shared evenly by every
/// worker of every process (`io::file`), so each cleans what it read; a
/// topic's partitions may be fewer than the workers, so records go by id.
fn spread(shared: &Shared) -> Spread {
    match shared.source {
        SourcePlan::File { .. } => Spread::AsRead,
        SourcePlan::Kafka { .. } => Spread::ById,
    }
}

/// This worker's sink, from the plan.
fn sink(
    worker: &Worker,
    shared: &Shared,
    incarnation: Option<&str>,
    ledger: &OffsetLedger,
) -> Result<Box<dyn Sink>, Fault> {
    let format = shared.format.clone();
    let stats = Arc::clone(&shared.stats);
    Ok(match &shared.sink {
        SinkPlan::File { scored, dead, .. } => Box::new(FileSink {
            scored: Arc::clone(scored),
            dead: Arc::clone(dead),
            format,
            stats,
        }),
        SinkPlan::Kafka {
            config,
            topic,
            cleaned_topic,
            dead_letter_topic,
            exactly_once: Some(eo),
        } => Box::new(TransactionalSink::new(TransactionalSinkConfig {
            producer: eo.take_producer(worker.index() % shared.at.workers)?,
            resumed_from: Arc::clone(&eo.resumed_from),
            config,
            topic,
            cleaned_topic: cleaned_topic.as_deref(),
            dead_letter_topic,
            progress_topic: &eo.progress_topic,
            input_topic: &eo.input_topic,
            dataflow: &shared.spec.name,
            group: &eo.group,
            incarnation: incarnation.unwrap_or(&eo.incarnation),
            worker: worker.index(),
            workers: worker.peers(),
            ledger: ledger.clone(),
            format,
            stats,
        })?),
        SinkPlan::Kafka {
            config,
            topic,
            cleaned_topic,
            dead_letter_topic,
            exactly_once: None,
        } => Box::new(KafkaSink {
            config: Arc::clone(config),
            topic: topic.clone(),
            cleaned_topic: cleaned_topic.clone(),
            dead_letter_topic: dead_letter_topic.clone(),
            format,
            stats,
        }),
    })
}

/// This worker's source and the parser of what it reads, from the plan.
fn source(
    shared: &Shared,
    ledger: Option<OffsetLedger>,
    marks: Option<Marks>,
    origin: Instant,
) -> (Box<dyn Source>, Parser) {
    let feed = Feed {
        batch: shared.batch,
        stats: Arc::clone(&shared.stats),
        stop: shared.control.stop_flag(),
    };
    match &shared.source {
        SourcePlan::File {
            input,
            format,
            name,
        } => (
            Box::new(FileSource {
                input: Arc::clone(input),
                progress: shared.progress.clone(),
                feed,
                readers: shared.at.workers,
            }),
            Parser::new(
                &shared.spec,
                *format,
                input.header(),
                name,
                shared.max_record_bytes,
            )
            .expect("header checked before the workers started"),
        ),
        SourcePlan::Kafka {
            config,
            topic,
            partitions,
            group,
            format,
        } => (
            Box::new(KafkaSource {
                config: Arc::clone(config),
                topic: topic.clone(),
                group: group.clone(),
                partitions: *partitions,
                from: shared.from,
                until: shared.until,
                // A cleaned topic is in the order rows were finished, not event time.
                ordered: shared.stages != Stages::Predict,
                feed,
                ledger,
                marks,
                origin,
            }),
            Parser::new(&shared.spec, *format, None, topic, shared.max_record_bytes)
                .expect("JSON needs no header"),
        ),
    }
}
