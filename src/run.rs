//! `loanflow run`: loads and checks everything a run needs (spec, model,
//! input, outputs) before any worker starts — so set-up errors are one clear
//! line — then executes the dataflow on timely workers and returns a summary.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;
use timely::{CommunicationConfig, WorkerConfig};

use crate::cli::{KafkaArgs, PipelineArgs, RunArgs, StartArg};
use crate::dataflow::clean::Cleaner;
use crate::dataflow::ingest::Parser;
use crate::dataflow::predict::{OutputFormat, Predictor};
use crate::dataflow::{self, Epoch};
use crate::io::file::{detect_format, FileInput, FileOutput, FileSink, FileSource};
use crate::io::kafka::{KafkaConfig, KafkaSink, KafkaSource, Start};
use crate::io::{Sink, Source, Stats};
use crate::model::Model;
use crate::record::Format;
use crate::spec::Spec;

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
    pub workers: usize,
    /// Where scored applications went (a file or a topic).
    pub output: String,
    /// Where dead letters went, if anywhere.
    pub dead_letters_to: Option<String>,
    pub model: String,
    /// Stopped by SIGINT/SIGTERM before the input ended.
    pub interrupted: bool,
}

impl Summary {
    pub fn records_per_second(&self) -> f64 {
        self.records_in as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "loanflow: {} records in {:.3} s — {:.0} records/s, {:.1} MB/s on {} worker{}",
            self.records_in,
            self.elapsed.as_secs_f64(),
            self.records_per_second(),
            self.bytes_in as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9),
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        )?;
        if self.interrupted {
            writeln!(f, "  (stopped by a signal: everything read was delivered)")?;
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
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
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
    },
    Kafka {
        config: Arc<KafkaConfig>,
        topic: String,
        dead_letter_topic: String,
    },
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
    let config = KafkaConfig::new(
        brokers,
        &args.properties,
        Duration::from_secs_f64(args.connect_timeout),
    )?;
    Ok(Some(Arc::new(config)))
}

/// Runs the dataflow until the input ends (files, `--until-caught-up`) or
/// `stop` is set (SIGINT/SIGTERM), then returns what it did.
pub fn run(args: &RunArgs, stop: Arc<AtomicBool>) -> Result<Summary> {
    let Loaded { spec, model } = load(&args.pipeline)?;
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
                group: args
                    .group
                    .clone()
                    .unwrap_or_else(|| format!("loanflow.{}", spec.name)),
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
            SinkPlan::Kafka {
                config: Arc::clone(config),
                topic: topic.clone(),
                dead_letter_topic,
            }
        }
        _ => {
            if args.output == args.dead_letters {
                return Err(anyhow!(
                    "--output and --dead-letters are both {}: give them different files",
                    args.output.display()
                ));
            }
            SinkPlan::File {
                scored: Arc::new(FileOutput::create(&args.output, false)?),
                dead: Arc::new(FileOutput::create(&args.dead_letters, true)?),
            }
        }
    };

    let stats = Arc::new(Stats::default());
    let progress = match &source_plan {
        SourcePlan::File { input, .. } => progress_bar(input.data_len(), args.quiet),
        SourcePlan::Kafka { .. } => None,
    };
    let workers = args.workers as usize;
    let batch = args.batch as usize;
    let start = match args.from {
        StartArg::Earliest => Start::Earliest,
        StartArg::Latest => Start::Latest,
    };
    let until_caught_up = args.until_caught_up;
    let format_out = OutputFormat::new(&spec, &model.id);
    let model_id = model.id.clone();
    let forest = Arc::new(model.forest.clone());
    let source_plan = Arc::new(source_plan);
    let sink_plan = Arc::new(sink_plan);
    tracing::info!(dataflow = %spec.name, model = %model.id, workers, "starting");

    let started = Instant::now();
    let guards = {
        let stats = Arc::clone(&stats);
        let stop = Arc::clone(&stop);
        let progress = progress.clone();
        let source_plan = Arc::clone(&source_plan);
        let sink_plan = Arc::clone(&sink_plan);
        timely::execute(timely_config(workers), move |worker| {
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
                        start,
                        until_caught_up,
                        batch,
                        stats: Arc::clone(&stats),
                        stop: Arc::clone(&stop),
                    }),
                    Parser::new(&spec, *format, None, topic, max_record_bytes)
                        .expect("JSON needs no header"),
                ),
            };
            let sink: Box<dyn Sink> = match &*sink_plan {
                SinkPlan::File { scored, dead } => Box::new(FileSink {
                    scored: Arc::clone(scored),
                    dead: Arc::clone(dead),
                    format: format_out.clone(),
                    stats: Arc::clone(&stats),
                }),
                SinkPlan::Kafka {
                    config,
                    topic,
                    dead_letter_topic,
                } => Box::new(KafkaSink {
                    config: Arc::clone(config),
                    topic: topic.clone(),
                    dead_letter_topic: dead_letter_topic.clone(),
                    format: format_out.clone(),
                    stats: Arc::clone(&stats),
                }),
            };
            let done = ProbeHandle::<Epoch>::new();
            worker.dataflow::<Epoch, _, _>(|scope| {
                let raw = source.build(scope, done.clone());
                let (scored, dead) = dataflow::build(
                    raw,
                    parser,
                    Cleaner::new(&spec),
                    Predictor::new(Arc::clone(&forest), spec.threshold),
                );
                sink.build(scored, dead).probe_with(&done);
            });
            while !done.done() && !stats.failed() {
                worker.step_or_park(Some(Duration::from_millis(100)));
            }
        })
        .map_err(|e| anyhow!("cannot start the workers: {e}"))?
    };
    for result in guards.join() {
        result.map_err(|e| anyhow!("a worker failed: {e}"))?;
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    if let Some(failure) = stats.failure() {
        return Err(anyhow!(failure));
    }
    let (output, dead_letters_to) = match &*sink_plan {
        SinkPlan::File { scored, dead } => {
            scored.finish().map_err(|e| anyhow!(e))?;
            let wrote_dead = dead.finish().map_err(|e| anyhow!(e))?;
            (
                scored.path().display().to_string(),
                wrote_dead.then(|| dead.path().display().to_string()),
            )
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
        records_in: Stats::get(&stats.records_in),
        bytes_in: Stats::get(&stats.bytes_in),
        scored: Stats::get(&stats.scored),
        flagged: Stats::get(&stats.flagged),
        dead_letters: Stats::get(&stats.dead_letters),
        elapsed: started.elapsed(),
        workers,
        output,
        dead_letters_to,
        model: model_id,
        interrupted: stop.load(Ordering::Relaxed),
    })
}
