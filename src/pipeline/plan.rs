//! The plan of a run: where records come from and where they go, decided
//! once for all workers, with every set-up error found before any worker
//! starts (a missing column, an unreachable broker, a clash of paths).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use rdkafka::producer::BaseProducer;

use crate::cli::RunArgs;
use crate::core::fault::Fault;
use crate::core::names;
use crate::core::position::From;
use crate::core::record::Format;
use crate::dataflow::graph::Stages;
use crate::dataflow::ingest::Parser;
use crate::io::exactly_once::protocol::new_incarnation;
use crate::io::exactly_once::transactional_producer;
use crate::io::file::{
    create_parent, detect_format, part_path, remove_stale_parts, FileInput, FileOutput,
};
use crate::io::kafka::committed_offsets;
use crate::io::kafka::config::EnsuredTopic;
use crate::io::kafka::{KafkaConfig, SinkContext};
use crate::spec::Spec;

/// Where records come from, decided once for all workers.
pub enum SourcePlan {
    /// A file, split across the workers.
    File {
        /// The input, mapped once and shared by the workers.
        input: Arc<FileInput>,
        /// CSV or JSON Lines (`--format`, else the extension).
        format: Format,
        /// The input path as given, naming it in header errors.
        name: String,
    },
    /// A topic, its partitions shared by the workers.
    Kafka {
        /// How to reach the cluster.
        config: Arc<KafkaConfig>,
        /// The input topic.
        topic: String,
        /// The topic's partition count.
        partitions: i32,
        /// The consumer group whose committed offsets track progress (without
        /// `--group`, a fresh one for a bounded or positioned run).
        group: String,
        /// Always JSON Lines: each message is one JSON object.
        format: Format,
    },
}

/// Where scored applications and dead letters go.
pub enum SinkPlan {
    /// JSON Lines files (one pair per process in a cluster).
    File {
        /// Scored applications.
        scored: Arc<FileOutput>,
        /// Dead letters (created at the first one).
        dead: Arc<FileOutput>,
        /// In a cluster: the paths given, under whose `.d` folders the
        /// processes write their parts (with how many processes there are).
        parts_of: Option<(PathBuf, PathBuf, usize)>,
    },
    /// Topics, at least once or (with a plan) exactly once.
    Kafka {
        /// How to reach the cluster.
        config: Arc<KafkaConfig>,
        /// The topic outputs go to (a clean stage's: the cleaned topic).
        topic: String,
        /// The cleaned topic a whole run also publishes its feature rows to.
        cleaned_topic: Option<String>,
        /// The topic dead letters go to.
        dead_letter_topic: String,
        /// With `--exactly-once`, the transactions' plan; `None`: at least once.
        exactly_once: Option<ExactlyOncePlan>,
    },
}

/// What `--exactly-once` adds to a Kafka sink.
pub struct ExactlyOncePlan {
    /// Where every transaction writes a progress record (for `loanflow verify`).
    pub progress_topic: String,
    /// The input topic whose offsets the transactions commit.
    pub input_topic: String,
    /// The consumer group those offsets are committed for (the source's).
    pub group: String,
    /// Fresh per start: names the run's transactions (a cluster uses process 0's).
    pub incarnation: String,
    /// Per local worker: its transactional producer, zombie already fenced.
    pub producers: Mutex<Vec<Option<BaseProducer<SinkContext>>>>,
    /// The committed offsets read after the fencing, before any commit.
    pub resumed_from: Arc<BTreeMap<i32, i64>>,
}

/// Says on stderr, in one line, that loanflow created `topic` (if it did).
pub fn announce(topic: &EnsuredTopic) {
    if let Some(notice) = topic.notice() {
        eprintln!("loanflow: {notice}");
    }
}

/// This process's place: local workers, processes, its index.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// Worker threads in this process.
    pub workers: usize,
    /// Processes in the cluster (1: not a cluster).
    pub processes: usize,
    /// This process's index: 0 … processes - 1.
    pub process: usize,
}

impl SourcePlan {
    /// The source `args` name: `--input-topic` (a predict stage:
    /// `--cleaned-topic`) with brokers, else `--input`.
    pub fn new(
        args: &RunArgs,
        spec: &Spec,
        kafka: Option<&Arc<KafkaConfig>>,
    ) -> Result<SourcePlan> {
        match (args.source_topic(), kafka) {
            (Some(topic), Some(config)) => {
                let input = config.ensure_input_topic(topic, args.kafka.partitions)?;
                announce(&input);
                let partitions = input.partitions;
                let format = args.format.unwrap_or(Format::Jsonl);
                // A CSV payload would need a header; Kafka messages are JSON objects.
                if format == Format::Csv {
                    return Err(anyhow!("Kafka input must be JSON objects (--format jsonl)"));
                }
                // A stage run as its own service is its own dataflow: its own
                // group, and so its own transactional ids (a clean and a
                // predict stage never fence each other).
                let dataflow = match args.stages {
                    Stages::All => spec.name.clone(),
                    Stages::Clean => names::stage(&spec.name, "clean"),
                    Stages::Predict => names::stage(&spec.name, "predict"),
                };
                let group = args.group.clone().unwrap_or_else(|| {
                    if args.until.is_some() || args.from != From::Committed {
                        // A replay: its own group, never the live pipeline's.
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis());
                        names::replay_group(&dataflow, now)
                    } else {
                        names::group(&dataflow)
                    }
                });
                Ok(SourcePlan::Kafka {
                    config: Arc::clone(config),
                    topic: topic.to_owned(),
                    partitions,
                    group,
                    format,
                })
            }
            _ => {
                let format = detect_format(&args.input, args.format)?;
                let input = Arc::new(FileInput::open(&args.input, format)?);
                let name = args.input.display().to_string();
                if args.stages == Stages::Predict && format != Format::Jsonl {
                    return Err(anyhow!(
                        "--stages predict reads feature rows as JSON Lines (what --stages clean \
                         writes), not {}: give the clean stage's output",
                        args.input.display()
                    ));
                }
                // Check the header now, so a missing column is a set-up error, not a failed worker.
                Parser::new(
                    spec,
                    format,
                    input.header(),
                    &name,
                    args.max_record_bytes as usize,
                )?;
                Ok(SourcePlan::File {
                    input,
                    format,
                    name,
                })
            }
        }
    }
}

impl SinkPlan {
    /// The sink `args` name: `--output-topic` (a clean stage:
    /// `--cleaned-topic`) with brokers, else files.
    pub fn new(
        args: &RunArgs,
        source: &SourcePlan,
        kafka: Option<&Arc<KafkaConfig>>,
        at: Placement,
    ) -> Result<SinkPlan> {
        match (args.sink_topic(), kafka) {
            (Some(topic), Some(config)) => {
                let dead_letter_topic = args
                    .dead_letter_topic
                    .clone()
                    .unwrap_or_else(|| names::dead_letter_topic(topic));
                // Missing ones are created like the input: `--partitions N`,
                // else the input topic's count (1 for a file).
                let partitions = args.kafka.partitions.unwrap_or(match source {
                    SourcePlan::Kafka { partitions, .. } => *partitions,
                    SourcePlan::File { .. } => 1,
                });
                announce(&config.ensure_output_topic(topic, partitions, &[])?);
                announce(&config.ensure_output_topic(&dead_letter_topic, partitions, &[])?);
                let cleaned_topic = args.published_cleaned_topic().map(str::to_owned);
                if let Some(cleaned) = &cleaned_topic {
                    announce(&config.ensure_output_topic(cleaned, partitions, &[])?);
                }
                let exactly_once = if args.exactly_once {
                    Some(ExactlyOncePlan::new(args, source, config, at)?)
                } else {
                    None
                };
                Ok(SinkPlan::Kafka {
                    config: Arc::clone(config),
                    topic: topic.to_owned(),
                    cleaned_topic,
                    dead_letter_topic,
                    exactly_once,
                })
            }
            _ => SinkPlan::files(args, at),
        }
    }

    fn files(args: &RunArgs, at: Placement) -> Result<SinkPlan> {
        if args.output == args.dead_letters {
            return Err(anyhow!(
                "--output and --dead-letters are both {}: give them different files",
                args.output.display()
            ));
        }
        if at.processes == 1 {
            return Ok(SinkPlan::File {
                scored: Arc::new(FileOutput::create(&args.output, false)?),
                dead: Arc::new(FileOutput::create(&args.dead_letters, true)?),
                parts_of: None,
            });
        }
        // One file per process, touched only after the start-up check; a
        // folder that cannot be made is a set-up error now.
        create_parent(&args.output)?;
        create_parent(&args.dead_letters)?;
        Ok(SinkPlan::File {
            scored: Arc::new(FileOutput::new(&part_path(&args.output, at.process))),
            dead: Arc::new(FileOutput::new(&part_path(&args.dead_letters, at.process))),
            parts_of: Some((args.output.clone(), args.dead_letters.clone(), at.processes)),
        })
    }

    /// Makes file outputs ready to write: removes what an earlier run left
    /// there and opens the scored file. A cluster calls this only after its
    /// start-up check passed, so a cluster that refuses to start writes nothing.
    pub fn prepare(&self) -> Result<(), Fault> {
        let SinkPlan::File {
            scored,
            dead,
            parts_of,
        } = self
        else {
            return Ok(());
        };
        let fault = |e: crate::io::file::FileError| Fault::fatal(e.to_string());
        if let Some((output, dead_letters, processes)) = parts_of {
            remove_stale_parts(output, *processes).map_err(fault)?;
            remove_stale_parts(dead_letters, *processes).map_err(fault)?;
        }
        scored.prepare(false).map_err(fault)?;
        dead.prepare(true).map_err(fault)
    }

    /// The exactly-once plan, if the sink has one.
    pub fn exactly_once(&self) -> Option<&ExactlyOncePlan> {
        match self {
            SinkPlan::Kafka {
                exactly_once: Some(eo),
                ..
            } => Some(eo),
            _ => None,
        }
    }
}

impl ExactlyOncePlan {
    fn new(
        args: &RunArgs,
        source: &SourcePlan,
        config: &Arc<KafkaConfig>,
        at: Placement,
    ) -> Result<ExactlyOncePlan> {
        let SourcePlan::Kafka {
            topic: input_topic,
            partitions,
            group,
            ..
        } = source
        else {
            return Err(anyhow!(
                "--exactly-once needs --input-topic and --output-topic"
            ));
        };
        let output_topic = args.sink_topic().unwrap_or_default();
        let progress_topic = args
            .progress_topic
            .clone()
            .unwrap_or_else(|| names::progress_topic(output_topic));
        // One partition (in order), compacted: each writer's last record is
        // all `verify` needs (exactly_once).
        announce(&config.ensure_output_topic(
            &progress_topic,
            1,
            &[("cleanup.policy", "compact")],
        )?);
        // Fence every local worker's zombie first, then read where the run
        // resumes (exactly_once, invariant 5).
        let total = at.workers * at.processes;
        let producers = (0..at.workers)
            .map(|i| {
                transactional_producer(config, group, at.process * at.workers + i, total).map(Some)
            })
            .collect::<Result<Vec<_>, Fault>>()?;
        let resumed_from = committed_offsets(config, group, input_topic, 0..*partitions)?;
        Ok(ExactlyOncePlan {
            progress_topic,
            input_topic: input_topic.clone(),
            group: group.clone(),
            incarnation: new_incarnation(),
            producers: Mutex::new(producers),
            resumed_from: Arc::new(resumed_from),
        })
    }

    /// Worker `index`'s transactional producer (each is taken once).
    pub fn take_producer(&self, index: usize) -> Result<BaseProducer<SinkContext>, Fault> {
        self.producers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| Fault::fatal("no transactional producer for this worker"))
    }
}
