//! `loanflow run`: loads and checks everything a run needs (spec, model,
//! input, outputs) before any worker starts — so set-up errors are one clear
//! line — then executes the dataflow on timely workers and returns a summary.
//!
//! With `--processes N` the same runs as one process of a timely cluster;
//! see [`crate::cluster`] for what changes (a start-up check, per-process
//! output files, a cluster-wide summary from process 0).

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;
use timely::{CommunicationConfig, WorkerConfig};

use crate::cli::{KafkaArgs, PipelineArgs, RunArgs};
use crate::cluster::{self, Fingerprint, Membership, ProcessCounts};
use crate::dataflow::clean::Cleaner;
use crate::dataflow::ingest::Parser;
use crate::dataflow::pace::Pace;
use crate::dataflow::predict::{OutputFormat, Predictor};
use crate::dataflow::{self, Epoch};
use crate::io::exactly_once::{
    committed_offsets, new_incarnation, transactional_producer, OffsetLedger, TransactionalSink,
    TransactionalSinkConfig,
};
use crate::io::file::{
    create_parent, detect_format, part_dir, part_path, remove_stale_parts, FileInput, FileOutput,
    FileSink, FileSource,
};
use crate::io::kafka::{KafkaConfig, KafkaSink, KafkaSource, SinkContext};
use crate::io::{Sink, Source, Stats};
use crate::model::Model;
use crate::record::Format;
use crate::replay::{From, Until};
use crate::spec::Spec;
use rdkafka::producer::BaseProducer;

/// A spec with the model that fits it.
pub struct Loaded {
    pub spec: Arc<Spec>,
    pub model: Arc<Model>,
}

/// Loads the spec and its model and checks that they fit together.
pub fn load(args: &PipelineArgs) -> Result<Loaded> {
    let spec = Spec::load(&args.dataflow)?;
    let model = Model::load(args.model.as_ref().unwrap_or(&spec.model))?;
    model.check_features(&spec.name, &spec.feature_names())?;
    Ok(Loaded {
        spec: Arc::new(spec),
        model: Arc::new(model),
    })
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub records_in: u64,
    pub bytes_in: u64,
    pub scored: u64,
    pub flagged: u64,
    pub dead_letters: u64,
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
    pub model: String,
    /// Stopped by SIGINT/SIGTERM before the input ended.
    pub interrupted: bool,
    /// Times the run started its dataflow again after an aborted
    /// transaction ([`run_restarting`]); the counts are the last start's.
    pub restarts: u32,
}

impl Summary {
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

/// The timely configuration for our flags.
pub fn timely_config(workers: usize) -> timely::Config {
    timely::Config {
        communication: if workers == 1 {
            CommunicationConfig::Thread
        } else {
            CommunicationConfig::Process(workers)
        },
        worker: WorkerConfig::default(),
    }
}

/// A progress bar over `total` bytes on stderr, when stderr is a terminal.
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

/// Where records come from, decided once for all workers.
enum SourcePlan {
    File {
        input: Arc<FileInput>,
        format: Format,
        name: String,
    },
    Kafka {
        config: Arc<KafkaConfig>,
        topic: String,
        partitions: i32,
        group: String,
        format: Format,
    },
}

/// Where scored applications and dead letters go.
enum SinkPlan {
    File {
        scored: Arc<FileOutput>,
        dead: Arc<FileOutput>,
        /// In a cluster: the paths given, under whose `.d` folders the
        /// processes write their parts (with how many processes there are).
        parts_of: Option<(PathBuf, PathBuf, usize)>,
    },
    Kafka {
        config: Arc<KafkaConfig>,
        topic: String,
        dead_letter_topic: String,
        exactly_once: Option<ExactlyOncePlan>,
    },
}

/// What `--exactly-once` adds to a Kafka sink.
struct ExactlyOncePlan {
    progress_topic: String,
    input_topic: String,
    group: String,
    /// Fresh per start: names the run's transactions (a cluster uses process 0's).
    incarnation: String,
    /// Per local worker: its transactional producer, zombie already fenced.
    producers: Mutex<Vec<Option<BaseProducer<SinkContext>>>>,
    /// The committed offsets read after the fencing, before any commit.
    resumed_from: Arc<BTreeMap<i32, i64>>,
}

impl SinkPlan {
    /// Makes file outputs ready to write: removes what an earlier run left
    /// there and opens the scored file. A cluster calls this only after its
    /// start-up check passed, so a cluster that refuses to start writes nothing.
    fn prepare(&self) -> Result<(), String> {
        let SinkPlan::File {
            scored,
            dead,
            parts_of,
        } = self
        else {
            return Ok(());
        };
        if let Some((output, dead_letters, processes)) = parts_of {
            remove_stale_parts(output, *processes).map_err(|e| e.to_string())?;
            remove_stale_parts(dead_letters, *processes).map_err(|e| e.to_string())?;
        }
        scored.prepare(false).map_err(|e| e.to_string())?;
        dead.prepare(true).map_err(|e| e.to_string())
    }
}

/// The timely configuration of a run: threads, or a process of a cluster.
pub fn run_config(workers: usize, membership: Option<&Membership>) -> timely::Config {
    match membership {
        Some(m) => m.config(),
        None => timely_config(workers),
    }
}

/// SHA-256 of a file, hex (for the cluster's start-up check).
fn file_sha256(path: &std::path::Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// The Kafka configuration of `args`, if it names brokers.
pub fn kafka_config(args: &KafkaArgs) -> Result<Option<Arc<KafkaConfig>>> {
    let Some(brokers) = &args.brokers else {
        return Ok(None);
    };
    if !(args.connect_timeout.is_finite() && args.connect_timeout > 0.0) {
        return Err(anyhow!(
            "--connect-timeout must be a positive number of seconds"
        ));
    }
    if !(args.max_outage.is_finite() && args.max_outage > 0.0) {
        return Err(anyhow!("--max-outage must be a positive number of seconds"));
    }
    let config = KafkaConfig::new(
        brokers,
        &args.properties,
        Duration::from_secs_f64(args.connect_timeout),
    )?
    .with_max_outage(Duration::from_secs_f64(args.max_outage));
    Ok(Some(Arc::new(config)))
}

/// Runs the dataflow until the input ends (files, `--until-caught-up`) or
/// `stop` is set (SIGINT/SIGTERM), then returns what it did.
pub fn run(args: &RunArgs, stop: Arc<AtomicBool>) -> Result<Summary> {
    run_paced(args, None, stop)
}

/// A run that stopped on an error a fresh start recovers from: an
/// exactly-once transaction the broker made it abort (it went away
/// mid-transaction). Nothing of that transaction is committed. Never the
/// error of a cluster process: it does not start again alone.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Restartable {
    pub message: String,
    /// Whether the run committed anything before it failed (see [`Restarts`]).
    pub committed: bool,
}

/// [`run`], started again from the last committed transaction after a
/// [`Restartable`] failure, as a supervisor would restart the process (same
/// fencing, a new incarnation, so the exactly-once rule holds unchanged):
/// `loanflow run --exactly-once` rides out a broker outage that hits a
/// transaction. Restarts (and the errors of a restart that cannot reach the
/// broker yet) stop after `--max-outage` (see [`Restarts`]); a cluster
/// process never restarts alone (its launcher stops the cluster).
pub fn run_restarting(args: &RunArgs, stop: Arc<AtomicBool>) -> Result<Summary> {
    let mut restarts = Restarts::new(Duration::from_secs_f64(args.kafka.max_outage));
    loop {
        let started = Instant::now();
        let result = run(args, Arc::clone(&stop));
        let Err(e) = &result else {
            return result.map(|summary| Summary {
                restarts: restarts.count,
                ..summary
            });
        };
        if stop.load(Ordering::Relaxed) {
            return result;
        }
        match restarts.next(e, started.elapsed(), Instant::now()) {
            Next::Exit => return result,
            Next::GiveUp => {
                let max_outage = restarts.max_outage;
                return result.map_err(|e| {
                    e.context(format!(
                        "gave up after restarting for {max_outage:?} (--max-outage)"
                    ))
                });
            }
            Next::Restart => {
                tracing::warn!("{e:#}; starting again from the last committed transaction");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// What [`run_restarting`] does after a failed run.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Restart,
    /// Not a failure a restart recovers from: the run's error stands.
    Exit,
    /// The outage has lasted `--max-outage`.
    GiveUp,
}

/// The outage clock of [`run_restarting`]. An outage starts at a
/// [`Restartable`] failure; while it lasts, the restarts' own errors (the
/// broker is still away) are waited out too, up to `max_outage`. It ends
/// with a run that commits and keeps going for at least `max_outage` (its
/// failure, if any, starts a new one): a run that rides out one outage an
/// hour has the whole `--max-outage` for each. A run that commits a little
/// and fails again soon does not end it: a broker that acknowledges commits
/// but keeps aborting transactions (Tansu's SQLite engine after a restart,
/// BROKER_NOTES quirk 13) would otherwise be retried for ever.
struct Restarts {
    max_outage: Duration,
    outage: Option<Instant>,
    /// Restarts so far.
    count: u32,
}

impl Restarts {
    fn new(max_outage: Duration) -> Restarts {
        Restarts {
            max_outage,
            outage: None,
            count: 0,
        }
    }

    /// What to do after `failure`, seen at `now`, of a run that lasted `ran`.
    fn next(&mut self, failure: &anyhow::Error, ran: Duration, now: Instant) -> Next {
        let restartable = failure.downcast_ref::<Restartable>();
        if restartable.is_some_and(|r| r.committed) && ran >= self.max_outage {
            self.outage = None;
        }
        if restartable.is_none() && self.outage.is_none() {
            return Next::Exit;
        }
        let since = *self.outage.get_or_insert(now);
        if now.duration_since(since) >= self.max_outage {
            return Next::GiveUp;
        }
        self.count += 1;
        Next::Restart
    }
}

/// [`run`], with a file replayed at `pace` (see `loanflow replay`).
pub fn run_paced(args: &RunArgs, pace: Option<Pace>, stop: Arc<AtomicBool>) -> Result<Summary> {
    let Loaded { spec, model } = load(&args.pipeline)?;
    let workers = args.workers as usize;
    let membership = Membership::from_flags(&args.cluster, workers)?;
    let (processes, process) = membership
        .as_ref()
        .map_or((1, 0), |m| (m.processes, m.process));
    let kafka = kafka_config(&args.kafka)?;
    let max_record_bytes = args.max_record_bytes as usize;

    let source_plan = match (&args.input_topic, &kafka) {
        (Some(topic), Some(config)) => {
            let partitions = config.ensure_topic(topic, args.kafka.partitions)?;
            let format = args.format.unwrap_or(Format::Jsonl);
            // A CSV payload would need a header; Kafka messages are JSON objects.
            if format == Format::Csv {
                return Err(anyhow!("Kafka input must be JSON objects (--format jsonl)"));
            }
            SourcePlan::Kafka {
                config: Arc::clone(config),
                topic: topic.clone(),
                partitions,
                group: args.group.clone().unwrap_or_else(|| {
                    if args.until.is_some() || args.from != From::Committed {
                        // A replay: its own group, never the live pipeline's.
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis());
                        format!("loanflow.{}.replay-{now}", spec.name)
                    } else {
                        format!("loanflow.{}", spec.name)
                    }
                }),
                format,
            }
        }
        _ => {
            let format = detect_format(&args.input, args.format)?;
            let input = Arc::new(FileInput::open(&args.input, format)?);
            let name = args.input.display().to_string();
            // Check the header now, so a missing column is a set-up error, not a failed worker.
            Parser::new(&spec, format, input.header(), &name, max_record_bytes)?;
            SourcePlan::File {
                input,
                format,
                name,
            }
        }
    };
    let sink_plan = match (&args.output_topic, &kafka) {
        (Some(topic), Some(config)) => {
            let dead_letter_topic = args
                .dead_letter_topic
                .clone()
                .unwrap_or_else(|| format!("{topic}.dead-letters"));
            config.ensure_topic(topic, args.kafka.partitions)?;
            config.ensure_topic(&dead_letter_topic, args.kafka.partitions)?;
            let exactly_once = match (&source_plan, args.exactly_once) {
                (
                    SourcePlan::Kafka {
                        topic: input_topic,
                        partitions,
                        group,
                        ..
                    },
                    true,
                ) => {
                    let progress_topic = args
                        .progress_topic
                        .clone()
                        .unwrap_or_else(|| format!("{topic}.progress"));
                    // One partition (in order), compacted: each writer's last record is
                    // all `verify` needs (exactly_once).
                    config.ensure_topic_with(
                        &progress_topic,
                        Some(1),
                        &[("cleanup.policy", "compact")],
                    )?;
                    // Fence every local worker's zombie first, then read where
                    // the run resumes (exactly_once, invariant 5).
                    let total = workers * processes;
                    let producers = (0..workers)
                        .map(|i| {
                            transactional_producer(config, group, process * workers + i, total)
                                .map(Some)
                        })
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(|e| anyhow!(e))?;
                    let resumed_from =
                        committed_offsets(config, group, input_topic, 0..*partitions)
                            .map_err(|e| anyhow!(e))?;
                    Some(ExactlyOncePlan {
                        progress_topic,
                        input_topic: input_topic.clone(),
                        group: group.clone(),
                        incarnation: new_incarnation(),
                        producers: Mutex::new(producers),
                        resumed_from: Arc::new(resumed_from),
                    })
                }
                (_, true) => {
                    return Err(anyhow!(
                        "--exactly-once needs --input-topic and --output-topic"
                    ))
                }
                (_, false) => None,
            };
            SinkPlan::Kafka {
                config: Arc::clone(config),
                topic: topic.clone(),
                dead_letter_topic,
                exactly_once,
            }
        }
        _ => {
            if args.output == args.dead_letters {
                return Err(anyhow!(
                    "--output and --dead-letters are both {}: give them different files",
                    args.output.display()
                ));
            }
            if processes == 1 {
                SinkPlan::File {
                    scored: Arc::new(FileOutput::create(&args.output, false)?),
                    dead: Arc::new(FileOutput::create(&args.dead_letters, true)?),
                    parts_of: None,
                }
            } else {
                // One file per process, touched only after the start-up check;
                // a folder that cannot be made is a set-up error now.
                create_parent(&args.output)?;
                create_parent(&args.dead_letters)?;
                SinkPlan::File {
                    scored: Arc::new(FileOutput::new(&part_path(&args.output, process))),
                    dead: Arc::new(FileOutput::new(&part_path(&args.dead_letters, process))),
                    parts_of: Some((args.output.clone(), args.dead_letters.clone(), processes)),
                }
            }
        }
    };

    let stats = Arc::new(Stats::default());
    let progress = match &source_plan {
        // A process of a cluster reads a share of the file the bar cannot know.
        SourcePlan::File { input, .. } if processes == 1 => {
            progress_bar(input.data_len(), args.quiet)
        }
        _ => None,
    };
    let batch = args.batch as usize;
    let from = args.from;
    let until = if args.until_caught_up {
        Some(Until::End)
    } else {
        args.until
    };
    if until.is_some() && args.input_topic.is_none() {
        return Err(anyhow!("--until applies to --input-topic (a file ends by itself; `loanflow replay` bounds a file by event time)"));
    }
    let format_out = OutputFormat::new(&spec, &model.id).stamped(args.stamp);
    let model_id = model.id.clone();
    let forest = Arc::new(model.forest.clone());
    let source_plan = Arc::new(source_plan);
    let sink_plan = Arc::new(sink_plan);
    let fingerprint = Fingerprint {
        process,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        spec: spec.name.clone(),
        spec_sha256: file_sha256(&args.pipeline.dataflow)?,
        model: model.id.clone(),
        model_sha256: model.sha256.clone(),
        incarnation: match &*sink_plan {
            SinkPlan::Kafka {
                exactly_once: Some(eo),
                ..
            } => eo.incarnation.clone(),
            _ => String::new(),
        },
    };
    tracing::info!(dataflow = %spec.name, model = %model.id, workers, processes, process, "starting");

    let connected = Arc::new(AtomicBool::new(false));
    if let Some(m) = &membership {
        cluster::exit_when_a_peer_is_lost(m.process);
        cluster::watchdog(m, Arc::clone(&connected), Arc::clone(&stop));
    }
    // Set by the first worker to start, so a cluster's connection time is not counted.
    let started = Arc::new(OnceLock::<Instant>::new());
    let sink_ready = Arc::new(OnceLock::<Result<(), String>>::new());
    let guards = {
        let stats = Arc::clone(&stats);
        let stop = Arc::clone(&stop);
        let progress = progress.clone();
        let source_plan = Arc::clone(&source_plan);
        let sink_plan = Arc::clone(&sink_plan);
        let membership = membership.clone();
        let started = Arc::clone(&started);
        timely::execute(run_config(workers, membership.as_ref()), move |worker| {
            started.get_or_init(Instant::now);
            // A cluster's processes write under one incarnation: process 0's.
            let mut incarnation: Option<String> = None;
            if let Some(m) = &membership {
                // Every worker sees every process's fingerprint, so every
                // process reaches the same verdict and stops by itself.
                let first = m.is_first_of_process(worker.index());
                let prints = cluster::gather(worker, first.then(|| fingerprint.clone()));
                cluster::check_fingerprints(&prints)?;
                incarnation = prints
                    .iter()
                    .min_by_key(|p| p.process)
                    .map(|p| p.incarnation.clone());
                if let Err(e) = sink_ready.get_or_init(|| sink_plan.prepare()) {
                    cluster::fail_now(m.process, e);
                }
            }
            // The sink first: an exactly-once sink fences the previous
            // incarnation before the source reads the committed offsets.
            let ledger = OffsetLedger::default();
            let sink: Box<dyn Sink> = match &*sink_plan {
                SinkPlan::File { scored, dead, .. } => Box::new(FileSink {
                    scored: Arc::clone(scored),
                    dead: Arc::clone(dead),
                    format: format_out.clone(),
                    stats: Arc::clone(&stats),
                }),
                SinkPlan::Kafka {
                    config,
                    topic,
                    dead_letter_topic,
                    exactly_once: Some(eo),
                } => Box::new(TransactionalSink::new(TransactionalSinkConfig {
                    producer: eo
                        .producers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(worker.index() % workers)
                        .and_then(Option::take)
                        .ok_or("no transactional producer for this worker")?,
                    resumed_from: Arc::clone(&eo.resumed_from),
                    config,
                    topic,
                    dead_letter_topic,
                    progress_topic: &eo.progress_topic,
                    input_topic: &eo.input_topic,
                    dataflow: &spec.name,
                    group: &eo.group,
                    incarnation: incarnation.as_deref().unwrap_or(&eo.incarnation),
                    worker: worker.index(),
                    workers: worker.peers(),
                    ledger: ledger.clone(),
                    format: format_out.clone(),
                    stats: Arc::clone(&stats),
                })?),
                SinkPlan::Kafka {
                    config,
                    topic,
                    dead_letter_topic,
                    exactly_once: None,
                } => Box::new(KafkaSink {
                    config: Arc::clone(config),
                    topic: topic.clone(),
                    dead_letter_topic: dead_letter_topic.clone(),
                    format: format_out.clone(),
                    stats: Arc::clone(&stats),
                }),
            };
            let exactly_once = matches!(
                &*sink_plan,
                SinkPlan::Kafka {
                    exactly_once: Some(_),
                    ..
                }
            );
            let (source, parser): (Box<dyn Source>, Parser) = match &*source_plan {
                SourcePlan::File {
                    input,
                    format,
                    name,
                } => (
                    Box::new(FileSource {
                        input: Arc::clone(input),
                        batch,
                        progress: progress.clone(),
                        stats: Arc::clone(&stats),
                        stop: Arc::clone(&stop),
                    }),
                    Parser::new(&spec, *format, input.header(), name, max_record_bytes)
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
                        from,
                        until,
                        batch,
                        stats: Arc::clone(&stats),
                        stop: Arc::clone(&stop),
                        ledger: exactly_once.then(|| ledger.clone()),
                    }),
                    Parser::new(&spec, *format, None, topic, max_record_bytes)
                        .expect("JSON needs no header"),
                ),
            };
            let done = ProbeHandle::<Epoch>::new();
            let pipeline = worker.next_dataflow_index();
            worker.dataflow::<Epoch, _, _>(|scope| {
                let raw = source.build(scope, done.clone());
                let (scored, dead) = dataflow::build(
                    raw,
                    pace,
                    parser,
                    Cleaner::new(&spec),
                    Predictor::new(Arc::clone(&forest), spec.threshold),
                );
                sink.build(scored, dead).probe_with(&done);
            });
            while !done.done() && !stats.failed() {
                worker.step_or_park(Some(Duration::from_millis(100)));
            }
            if stats.failed() && !done.done() {
                // A failed run leaves epochs that will never finish (a sink
                // holds the capabilities of undelivered messages): drop the
                // dataflow, or timely would wait for it forever.
                worker.drop_dataflow(pipeline);
            }
            let Some(m) = &membership else {
                return Ok(None);
            };
            if let Some(failure) = stats.failure() {
                cluster::fail_now(m.process, &failure);
            }
            // `done` is the whole cluster's: every process has counted all it will.
            let first = m.is_first_of_process(worker.index());
            let counts =
                cluster::gather(worker, first.then(|| ProcessCounts::of(m.process, &stats)));
            Ok((worker.index() == 0).then_some(counts))
        })
        .map_err(|e| anyhow!("cannot start the workers: {e}"))?
    };
    connected.store(true, Ordering::Relaxed);
    let mut cluster_counts: Option<Vec<ProcessCounts>> = None;
    let mut refused: Option<String> = None;
    for result in guards.join() {
        match result.map_err(|e| anyhow!("a worker failed: {e}"))? {
            Ok(Some(counts)) => cluster_counts = Some(counts),
            Ok(None) => {}
            Err(e) => refused = Some(e),
        }
    }
    if let Some(e) = refused {
        return Err(anyhow!(e));
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    if let Some(failure) = stats.failure() {
        // A cluster process does not start again alone (its peers' dataflow
        // went down with its own; the launcher stops the cluster).
        if stats.restartable() && processes == 1 {
            // Exactly-once sinks count their outputs once committed.
            let committed = Stats::get(&stats.scored) + Stats::get(&stats.dead_letters) > 0;
            return Err(Restartable {
                message: failure,
                committed,
            }
            .into());
        }
        return Err(anyhow!(failure));
    }
    let mut totals = ProcessCounts::of(process, &stats);
    if let Some(counts) = &cluster_counts {
        totals = ProcessCounts {
            process,
            ..Default::default()
        };
        for c in counts {
            totals.records_in += c.records_in;
            totals.bytes_in += c.bytes_in;
            totals.scored += c.scored;
            totals.flagged += c.flagged;
            totals.dead_letters += c.dead_letters;
        }
    }
    let (output, dead_letters_to) = match &*sink_plan {
        SinkPlan::File {
            scored,
            dead,
            parts_of,
        } => {
            scored.finish().map_err(|e| anyhow!(e))?;
            let wrote_dead = dead.finish().map_err(|e| anyhow!(e))?;
            match parts_of {
                Some((output, dead_letters, _)) if process == 0 => (
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
    Ok(Summary {
        records_in: totals.records_in,
        bytes_in: totals.bytes_in,
        scored: totals.scored,
        flagged: totals.flagged,
        dead_letters: totals.dead_letters,
        elapsed: started.get().map_or(Duration::ZERO, Instant::elapsed),
        workers: workers * processes,
        processes,
        process,
        output,
        dead_letters_to,
        model: model_id,
        interrupted: stop.load(Ordering::Relaxed),
        restarts: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aborted(committed: bool) -> anyhow::Error {
        Restartable {
            message: "transaction aborted".into(),
            committed,
        }
        .into()
    }

    const fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn restarts_within_an_outage_and_gives_up_after_max_outage() {
        let t0 = Instant::now();
        let mut r = Restarts::new(s(10));
        // Not restartable, no outage going on: the error stands.
        assert_eq!(r.next(&anyhow!("bad spec"), s(1), t0), Next::Exit);
        assert_eq!(r.next(&aborted(false), s(60), t0), Next::Restart);
        // The restarts' own errors (broker still away) are waited out...
        assert_eq!(
            r.next(&anyhow!("unreachable"), s(0), t0 + s(5)),
            Next::Restart
        );
        // ...for --max-outage from the first failure.
        assert_eq!(
            r.next(&anyhow!("unreachable"), s(0), t0 + s(10)),
            Next::GiveUp
        );
    }

    #[test]
    fn a_run_that_kept_committing_starts_a_new_outage() {
        let t0 = Instant::now();
        let mut r = Restarts::new(s(10));
        assert_eq!(r.next(&aborted(false), s(60), t0), Next::Restart);
        // The restarted run committed for an hour, then failed again: a new
        // outage with the whole --max-outage, not the first one's clock.
        assert_eq!(r.next(&aborted(true), s(3600), t0 + s(3601)), Next::Restart);
        assert_eq!(
            r.next(&anyhow!("unreachable"), s(1), t0 + s(3610)),
            Next::Restart
        );
        assert_eq!(
            r.next(&anyhow!("unreachable"), s(1), t0 + s(3611)),
            Next::GiveUp
        );
    }

    #[test]
    fn runs_that_fail_soon_after_committing_do_not_end_the_outage() {
        let t0 = Instant::now();
        // Each restart commits a transaction or two, then the broker aborts
        // one again (BROKER_NOTES quirk 13): one outage, given up on.
        let mut r = Restarts::new(s(10));
        assert_eq!(r.next(&aborted(true), s(60), t0), Next::Restart);
        assert_eq!(r.next(&aborted(true), s(5), t0 + s(6)), Next::Restart);
        assert_eq!(r.next(&aborted(true), s(5), t0 + s(12)), Next::GiveUp);
        // One that committed nothing goes on with the outage it is in,
        // however long it took to fail.
        let mut r = Restarts::new(s(10));
        assert_eq!(r.next(&aborted(false), s(1), t0), Next::Restart);
        assert_eq!(r.next(&aborted(false), s(30), t0 + s(31)), Next::GiveUp);
    }
}
