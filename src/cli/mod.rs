//! Command-line flags (clap): every subcommand's argument types, parsed
//! into checked values (positive numbers, positions, rates, formats) by the
//! value parsers in [`values`], and the Kafka flags turned into a checked
//! [`KafkaConfig`]. Every subcommand's help ends with examples; defaults
//! make `loanflow run` with no arguments the embedded default job. May
//! import the edges ([`crate::io`], whose configuration it builds) and every
//! layer below them; never [`crate::pipeline`] or [`crate::commands`], which
//! take these types.

mod stages;
pub mod values;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};

use crate::core::record::Format;
use crate::dataflow::ingest::DEFAULT_MAX_RECORD_BYTES;
use crate::io::kafka::KafkaConfig;
use values::{format, positive, rfc3339, seconds};

/// The real applications: the default input of every command that reads one.
pub const DEFAULT_INPUT: &str = "data/lending_club.csv";

/// The default dataflow spec.
pub const DEFAULT_DATAFLOW: &str = "dataflows/lending_club.toml";

/// `--idle-spin`'s default, in microseconds (`pipeline::idle`).
pub const DEFAULT_IDLE_SPIN_MICROS: u64 = 100;

/// Every `Examples:` block of the help has one shape, so that a test can run
/// each command as it is written: a command starts with `  loanflow ` (or
/// `  RUST_LOG=… loanflow `), goes on over lines ending in ` \` (continued
/// lines indented further), and a comment is a line of its own above it,
/// starting with `  #`. Paths are the repository's (run from its root);
/// the broker is `127.0.0.1:9092`.
const EXAMPLES: &str = "\
Examples:
  # score data/lending_club.csv into out/predictions.jsonl
  loanflow run
  # a bigger stream, resampled from the real applications, scored on 4 threads
  loanflow generate --rows 1000000 --seed 7 --output out/1m.csv
  loanflow run -w 4 --input out/1m.csv --output out/1m.jsonl
  # a 2-process cluster on this machine
  loanflow cluster --processes 2 -w 2
  # with logs
  RUST_LOG=debug loanflow run";

/// The whole command line: `loanflow <COMMAND>`.
#[derive(Debug, Parser)]
#[command(
    name = "loanflow",
    version,
    about = "Real-time machine learning on streams: loan applications in, XGBoost scores out",
    long_about = "Real-time machine learning on streams. Loan applications flow from a file (or a \
Kafka topic) through a timely dataflow graph — ingest → clean → predict — on many worker \
threads, and leave scored by a native XGBoost scorer. The clean stage and the model are \
described by a dataflow spec (dataflows/*.toml); adding a dataflow needs no code.",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, one per module of [`crate::commands`].
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score applications from a file or a topic through the dataflow, into a
    /// file or a topic.
    #[command(after_help = "\
Examples:
  # the embedded default: data/lending_club.csv → out/predictions.jsonl
  loanflow run
  # the same on two worker threads
  loanflow run -w 2
  loanflow run --input data/lending_club.csv --output out/scored.jsonl \\
      --dead-letters out/bad.jsonl
  # a topic into a topic, live: says when it has caught up; Ctrl-C stops it
  loanflow run --brokers 127.0.0.1:9092 --input-topic loans \\
      --output-topic loans.scored -w 2
  # the same, ending by itself once caught up
  loanflow run --brokers 127.0.0.1:9092 --input-topic loans \\
      --output-topic loans.scored --until-caught-up
  # exactly once: outputs and offsets committed together
  loanflow run --brokers 127.0.0.1:9092 --input-topic loans \\
      --output-topic loans.scored --exactly-once --until-caught-up -w 2
  # the tutorial's services apart: clean into a topic, then predict from it
  loanflow run --stages clean --brokers 127.0.0.1:9092 --input-topic loans \\
      --cleaned-topic loans.cleaned --until-caught-up
  loanflow run --stages predict --brokers 127.0.0.1:9092 \\
      --cleaned-topic loans.cleaned --output-topic loans.scored \\
      --until-caught-up
  # the same on files
  loanflow run --stages clean --output out/rows.jsonl
  loanflow run --stages predict --input out/rows.jsonl \\
      --output out/scored.jsonl
  # Prometheus metrics (/metrics), /healthz and a live page (/) while it runs
  loanflow run --http 127.0.0.1:9100 --output out/watched.jsonl

--stages clean|predict runs one stage as its own service, as the tutorial
deployed them: a clean stage writes a feature row per application (JSON keyed
by id: the carried columns, every model feature by name, and the spec's name
and SHA-256) to --cleaned-topic (or --output); a predict stage scores them,
byte for byte as one dataflow would, and stops with one line, writing nothing,
on rows of another spec. Each stage has its own group (loanflow.DATAFLOW.clean
/ .predict). The default runs all stages in one dataflow; --cleaned-topic
beside --output-topic also publishes the feature rows.

Another spec and its model: --dataflow dataflows/quix_fraud.toml --input FILE.
A managed Kafka takes librdkafka properties, as kcat does: -X
security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512 -X
sasl.username=USER -X sasl.password=PASSWORD, or -X security.protocol=SSL -X
ssl.ca.location=ca.pem (a missing file is named at once).

A file run stopped by SIGINT/SIGTERM delivers what it read, leaves its outputs
as OUTPUT.partial (the final names appear only when a run completes) and exits
130 (SIGINT) or 143 (SIGTERM), as does a run bounded by --until. A live topic
run is a service: SIGINT/SIGTERM is how it ends, so it finishes its open
epochs, commits, and exits 0. A live run says on stderr when it has caught up
and waits for more; on a terminal a spinner shows records/s and lag (-q: none),
and with RUST_LOG=info a line every 10 s says the same.

With --input-topic, records come from Kafka (JSON objects, or --format csv
lines); with --output-topic, scored applications go to Kafka keyed by id and
dead letters to --dead-letter-topic. Offsets are committed (group --group) only
after every output they cover is acknowledged: a restart resumes there, nothing
is lost. Missing output and dead-letter topics are created with the input
topic's partition count (1 for a file input; --partitions N to choose), one
line on stderr each; --no-create-topics makes a missing topic an error instead.
A missing input topic is an error unless --partitions N asks for it to be
created.

With --exactly-once, each worker's outputs, dead letters and the offsets they
cover are committed in one Kafka transaction (transactional.id GROUP.tx.W-w, so
keep the worker count when restarting); outputs carry
loanflow.incarnation/worker/epoch headers and every transaction writes a record
to --progress-topic, so `loanflow verify` can tell committed records from
aborted ones even on brokers that deliver aborted records to read_committed
readers.

While the broker is unreachable the run waits (librdkafka retries with
backoff), logging what it waits for; after --max-outage seconds it exits
non-zero, and nothing undelivered is committed.

With --processes N --process I --hostfile FILE, this process is process I of a
timely cluster of N (FILE: one host:port per line, in process order), e.g. on
host A `loanflow run -w 4 --processes 2 --process 0 --hostfile hosts.txt` and
the same with --process 1 on host B; every process must run the same binary,
spec and model (checked at start-up). Workers are numbered across the cluster,
so file lines and Kafka partitions are shared by all N × W workers; file
outputs become OUTPUT.d/part-0000I.jsonl.

With --http ADDR the process serves, while it runs, /metrics (Prometheus: records
per stage, dead letters by stage and reason, latency, batch sizes, consumer lag
and committed offsets per partition, transactions, restarts, watermark lag, the
monitor's flag rates and PSI), /healthz (200 while the workers run) and / (a
live page: records/s, latency p50/p99, flag rate and PSI, the newest flagged
applications; nothing loaded from elsewhere). A bad or busy ADDR stops the run
before it starts; once bound, the run says where it serves (the real port of
ADDR's port 0). In a cluster process I serves on ADDR's port + I (with port 0,
on a free port of its own).")]
    Run(RunCommandArgs),
    /// Try a cluster on this machine: launch N `loanflow run` processes connected on loopback.
    #[command(after_help = "\
Starts --processes N copies of `loanflow run` with every run option given here,
each with -w worker threads, connected as one timely cluster on free 127.0.0.1
ports (the hostfile it writes is what you would copy to several machines). Each
process's log lines are prefixed with [pI]; process 0 prints the cluster's
summary. SIGINT/SIGTERM are passed on (the processes deliver what they read,
then exit: a file run stopped so leaves .partial parts and exits 130/143, and
so does the launcher). A process waiting for its peers says so once on stderr;
stdout stays for data. If a process dies, the others are stopped and the
launcher exits non-zero naming it.

File outputs are written one file per process, sorted by process index:
--output out/p.jsonl → out/p.jsonl.d/part-00000.jsonl, part-00001.jsonl, …

Examples:
  loanflow cluster --processes 2 --workers 2
  loanflow cluster --processes 2 -w 2 --input data/lending_club.csv \\
      --output out/cluster.jsonl -q
  loanflow cluster --processes 2 -w 1 --brokers 127.0.0.1:9092 \\
      --input-topic loans --output-topic loans.scored --until-caught-up")]
    Cluster(RunCommandArgs),
    /// Produce applications from a file into a Kafka topic (the tutorial's ingest service).
    #[command(after_help = "\
Each valid record becomes a JSON object keyed by its id, with its event time
(the spec's event_time column) as the Kafka message timestamp. A line that is
not a valid record is sent as it is (no key): the pipeline dead-letters it.
Exits non-zero if any message was not acknowledged by the broker. A missing
topic is created with --partitions N partitions (default 1: pass more to read
it with more workers), said in one line; --no-create-topics makes it an error
instead.

Examples:
  loanflow ingest --brokers 127.0.0.1:9092 --topic loans --partitions 4
  # paced: 5000 records per second
  loanflow ingest --brokers 127.0.0.1:9092 --topic loans \\
      --input data/lending_club.csv --rate 5000")]
    Ingest(IngestArgs),
    /// Print scored applications from a topic as they arrive (the tutorial's stream reader).
    #[command(after_help = "\
A topic that does not exist yet is waited for (said once on stderr), then read
from its first message. -n COUNT or Ctrl-C ends it, with exit status 0.

Examples:
  loanflow tail --brokers 127.0.0.1:9092 --topic loans.scored \\
      --from-beginning
  loanflow tail --brokers 127.0.0.1:9092 --topic loans.scored -n 10 --json")]
    Tail(TailArgs),
    /// Show the model monitor's windows as a table: applications, flag rates
    /// by group, the column that drifted most (run --monitor writes them).
    #[command(after_help = "\
Reads the window reports `run --monitor FILE` writes (JSON Lines), or those
`run --monitor-topic T` sends (every partition from offset 0 to its end), and
prints one row per window: its start, applications, flagged and flag rate,
the groups with the highest flag rates, and the column with the highest PSI
against the training reference. A row whose worst PSI is 0.25 or more is marked
ACT, 0.1 or more watch (in red and yellow on a terminal).

Examples:
  # the windows of a run (the spec's [monitor]), then the table
  loanflow run --monitor out/monitor.jsonl
  loanflow monitor out/monitor.jsonl
  # from the topic a Kafka run wrote with --monitor-topic loans.monitor
  loanflow monitor --brokers 127.0.0.1:9092 --monitor-topic loans.monitor")]
    Monitor(MonitorArgs),
    /// Replay history: a file of applications paced by their own event time, into a
    /// topic or straight into the pipeline.
    #[command(after_help = "\
--speed 3600 replays one hour of applied_at per second (--speed max: as fast as
it goes; --rate N: N records per second instead). --from/--until time:RFC3339
bound the replay by event time (from inclusive, until exclusive). Without
--topic the records go straight into the pipeline and every `run` flag applies
(--output, -w, --output-topic…).

Examples:
  # a file into a topic, one week of applied_at per second
  loanflow replay data/lending_club.csv --brokers 127.0.0.1:9092 \\
      --topic loans --speed 604800
  # February only, straight into the pipeline, as fast as it goes
  loanflow replay data/lending_club.csv --speed max \\
      --from time:2016-02-01T00:00:00Z --until time:2016-03-01T00:00:00Z \\
      --output out/february.jsonl
  # 5000 records per second into the pipeline, scores to a topic
  loanflow replay data/lending_club.csv --rate 5000 --brokers 127.0.0.1:9092 \\
      --output-topic scored
  # watched: metrics, /healthz and the live page on http://127.0.0.1:9100/
  loanflow replay data/lending_club.csv --speed 604800 --http 127.0.0.1:9100 \\
      --output out/watched.jsonl")]
    Replay(ReplayArgs),
    /// Copy a topic to another with no processing: the raw consume → produce
    /// limit of a broker, to measure the pipeline against.
    #[command(after_help = "\
Reads every partition of --input-topic from the beginning to its end (partition
EOF) and writes each message (key and value) to --output-topic with the same
producer settings as `loanflow run`; -w threads own disjoint partitions, as
run's workers do. A missing --output-topic is created with the input's
partition count (or --partitions N), said in one line; --no-create-topics makes
it an error instead.

Examples:
  loanflow passthrough --brokers 127.0.0.1:9092 --input-topic loans \\
      --output-topic copy -w 2")]
    Passthrough(PassthroughArgs),
    /// Write a larger stream for benchmarks by resampling the real applications.
    #[command(after_help = "\
The rows are drawn with replacement from the real applications (every value
real, only the combination of row and time is new), given fresh ids and arrival
times that continue after the source's last one with gaps resampled from the
real ones. The same seed gives the same file.

Examples:
  loanflow generate --rows 1000000 --seed 7 --output out/1m.csv
  # JSON Lines, by the extension
  loanflow generate --rows 5000 --seed 1 --output out/5k.jsonl
  # synthetic drift: worse grades and higher rates from 16 June 2016 on
  loanflow generate --rows 20000 --shift-at 2016-06-16T00:00:00Z \\
      --output out/drift.csv")]
    Generate(GenerateArgs),
    /// Make the training set: every model feature of every application, as the
    /// dataflow computes it, window features included (no model needed).
    #[command(after_help = "\
The same dataflow `run` serves, without the model: ingest, clean and the window
features over event time, each computed once the watermark has passed the
application, so a feature here is the number `run` scores with, for any worker
count or batch size. Writes CSV: id, the event-time column, the label (1 if it
is the spec's positive value, 0 if not, empty if missing), then every model
feature in model order (shortest float32 text; empty = missing), sorted by event
time then id. models/train.py trains from it.

Examples:
  loanflow features --dataflow dataflows/lending_club_velocity.toml \\
      --output out/velocity_features.csv
  # the stateless spec, on 2 workers
  loanflow features -w 2 --output out/features.csv")]
    Features(FeaturesArgs),
    /// Explain one application's score: every column's exact contribution
    /// (TreeSHAP, as XGBoost's pred_contribs), summing to the margin.
    #[command(after_help = "\
Reads --input with the dataflow's clean stage (as `run` does, window features
included), finds the application whose id is --id and prints, on stdout, its
score and margin, the base value (the base margin plus every tree's mean), then
every source column — the column the applicant filled in (a one-hot group's and
an ordinal's features summed back to it) or a window feature — with its value
and its contribution in log-odds, largest first, as `reasons` are ordered. The
contributions and the base value sum to the margin, the score's logit: both are
printed and checked. Texts come from the spec's [explain.text], else the column
name. An id that is not in the file (or whose record is a dead letter) is one
line on stderr and exit status 1.

Examples:
  loanflow explain --id lc-000048
  loanflow explain --dataflow dataflows/lending_club_explain.toml \\
      --input data/lending_club.csv --id lc-000150
  # the tutorial's model, on its constructed rows
  loanflow explain --dataflow dataflows/quix_fraud.toml \\
      --input tests/fixtures/quix_rows.csv --id q-0031")]
    Explain(ExplainArgs),
    /// Measure the pipeline: records/s, MB/s, CPU per record and latency per
    /// configuration, next to the raw limits (file copy, the scorer alone).
    #[command(after_help = "\
Generates --rows applications (like `loanflow generate`, cached under --dir) or
takes --input, then runs file → file (and with --brokers Kafka → Kafka) for
each worker count of --workers, --repeat times each, all in one sitting. Every
run writes --stamp'ed outputs; latency is each record's source read → sink
write, pooled over the repeats. The limits are measured in the same sitting: a
plain file copy (read + write, no processing), the scorer alone (the input's
rows cleaned once, then predict_batch over as many rows on as many threads),
and with --brokers the raw Kafka passthrough (Kafka outputs are read back from
their topic for the latency). The table (markdown) goes to stdout, a line per
run to stderr; --json FILE writes it all. With --rate R,… (records/s, or a
percentage of the max measured in the same call, e.g. --rate 10%,50%,90%) each
worker count is also offered each load (paced like `loanflow replay --rate`,
split over the workers): a second table gives the latency from when each record
was due, and the p99 at 50 % load against --p99-target-ms. With --against TOML
that dataflow runs too, each of its runs right after one of --dataflow's (file
and Kafka alike, so both meet the same machine): --dataflow's records/s as a
share of its own per worker count, against --share-target.

Examples:
  # 1,000,000 rows, -w 1 and -w 2, 3 runs each
  loanflow bench
  loanflow bench --rows 200000 --workers 1,2,4 --repeat 5 \\
      --json out/bench.json
  # latency at 200k records/s
  loanflow bench --input data/lending_club.csv --workers 2 --rate 200000
  # latency against load
  loanflow bench --rows 1000000 --rate 10%,50%,90% --json out/bench.json
  # with the Kafka runs and the broker's raw limit
  loanflow bench --rows 1000000 --brokers 127.0.0.1:9092 --partitions 4
  # window features next to the stateless dataflow, runs interleaved
  loanflow bench --dataflow dataflows/lending_club_velocity.toml \\
      --against dataflows/lending_club.toml --repeat 5")]
    Bench(BenchArgs),
    /// Check a Kafka → Kafka run: every input scored (or dead-lettered) exactly
    /// once among committed records; lost, duplicated and aborted counts.
    #[command(after_help = "\
Reads the whole input topic, the output and dead-letter topics and the progress
topic, and the group's committed offsets. A message written with --exactly-once
(headers loanflow.incarnation/worker/epoch) counts only if its transaction is
on a chain of progress records that starts at the committed offsets; other such
messages were aborted and are discarded (some brokers deliver them to every
reader). Messages without those headers (at-least-once runs) all count. Then
each input id must have exactly one committed output or dead letter: missing
ones are lost, extra ones duplicated (and compared byte by byte with the first
copy). Exits 1 if any is lost, any duplicate differs, or (with --exactly-once)
any is duplicated.

Examples:
  loanflow verify --brokers 127.0.0.1:9092 --input-topic loans \\
      --output-topic loans.scored
  loanflow verify --brokers 127.0.0.1:9092 --input-topic loans \\
      --output-topic loans.scored --exactly-once --json out/verify.json")]
    Verify(VerifyArgs),
}

/// The flags of `loanflow verify`.
#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// The broker the run used.
    #[command(flatten)]
    pub kafka: KafkaConnectArgs,
    /// The dataflow spec (names the default group).
    #[arg(long, default_value = DEFAULT_DATAFLOW, value_name = "TOML")]
    pub dataflow: PathBuf,
    /// The topic the run read.
    #[arg(long, value_name = "TOPIC")]
    pub input_topic: String,
    /// The topic the run wrote scored applications to.
    #[arg(long, value_name = "TOPIC")]
    pub output_topic: String,
    /// Default: OUTPUT_TOPIC.dead-letters.
    #[arg(long, value_name = "TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Default: OUTPUT_TOPIC.progress.
    #[arg(long, value_name = "TOPIC")]
    pub progress_topic: Option<String>,
    /// The run's consumer group (default: loanflow.DATAFLOW).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Also fail on any duplicate (the run used --exactly-once).
    #[arg(long)]
    pub exactly_once: bool,
    /// Write the counts as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The dataflow spec and the model, shared by the commands that read them.
#[derive(Debug, Args, Clone)]
pub struct PipelineArgs {
    /// The dataflow spec: columns, features, model.
    #[arg(long, default_value = DEFAULT_DATAFLOW, value_name = "TOML")]
    pub dataflow: PathBuf,
    /// Score with this XGBoost JSON model instead of the spec's.
    #[arg(long, value_name = "JSON")]
    pub model: Option<PathBuf>,
}

/// The dataflow spec alone, for the commands that read records with it but
/// never score them (`ingest`, `generate`): they take no `--model`.
#[derive(Debug, Args, Clone)]
pub struct SpecArgs {
    /// The dataflow spec the records are read with (its model is not read).
    #[arg(long, default_value = DEFAULT_DATAFLOW, value_name = "TOML")]
    pub dataflow: PathBuf,
}

/// The Kafka flags of the commands that only read (`tail`, `verify`): how to
/// reach the broker, nothing about creating topics or waiting out outages.
#[derive(Debug, Args, Clone)]
pub struct KafkaConnectArgs {
    /// Kafka bootstrap servers (any Kafka-API broker: Apache Kafka, Redpanda, Tansu, …).
    #[arg(long, env = "LOANFLOW_BROKERS", value_name = "HOST:PORT,…")]
    pub brokers: Option<String>,
    /// A librdkafka property, as kcat takes it (repeat): -X security.protocol=SSL
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// How long to wait for the broker before giving up, in seconds (a refused
    /// connection, an unknown host or a certificate error fails at once).
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = seconds)]
    pub connect_timeout: Duration,
}

impl KafkaConnectArgs {
    /// The Kafka configuration these flags give, if they name brokers.
    pub fn config(&self) -> Result<Option<Arc<KafkaConfig>>> {
        Ok(self.base()?.map(Arc::new))
    }

    /// [`Self::config`], for a command that cannot do without a broker.
    pub fn required(&self) -> Result<Arc<KafkaConfig>> {
        required(self.config()?)
    }

    fn base(&self) -> Result<Option<KafkaConfig>> {
        let Some(brokers) = &self.brokers else {
            return Ok(None);
        };
        Ok(Some(KafkaConfig::new(
            brokers,
            &self.properties,
            self.connect_timeout,
        )?))
    }
}

/// A broker's configuration, or the one line saying how to name it.
fn required(config: Option<Arc<KafkaConfig>>) -> Result<Arc<KafkaConfig>> {
    config.ok_or_else(|| anyhow!("--brokers is required (or set LOANFLOW_BROKERS)"))
}

/// Kafka flags of the commands that write topics (`run`, `cluster`,
/// `replay`, `ingest`, `passthrough`, `bench`): the connection, creating
/// missing topics, waiting out outages.
#[derive(Debug, Args, Clone)]
pub struct KafkaArgs {
    /// How to reach the broker.
    #[command(flatten)]
    pub connect: KafkaConnectArgs,
    /// Partitions of the topics loanflow creates: a missing input topic (else an
    /// error) and the missing topics it writes (default: the input topic's count, or 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: Option<i32>,
    /// Never create a topic: a missing topic this command writes is an error
    /// (by default loanflow creates it and says so in one line on stderr).
    #[arg(long, conflicts_with = "partitions")]
    pub no_create_topics: bool,
    /// How long a running job waits for a broker that went away (retrying, and
    /// logging what it waits for) before it exits non-zero, in seconds. Nothing
    /// undelivered is committed either way.
    #[arg(long, default_value = "300", value_name = "SECONDS", value_parser = seconds)]
    pub max_outage: Duration,
}

impl KafkaArgs {
    /// The Kafka configuration these flags give, if they name brokers.
    pub fn config(&self) -> Result<Option<Arc<KafkaConfig>>> {
        Ok(self.connect.base()?.map(|config| {
            Arc::new(
                config
                    .with_max_outage(self.max_outage)
                    .with_create_topics(!self.no_create_topics),
            )
        }))
    }

    /// [`Self::config`], for a command that cannot do without a broker.
    pub fn required(&self) -> Result<Arc<KafkaConfig>> {
        required(self.config()?)
    }
}

/// The flags of `loanflow run`, also taken by `cluster` and by `replay` into
/// the pipeline.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// The spec and model to score with.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The broker, for a topic source or sink.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The topic to read instead of the input file: `--input-topic` of `run`
    /// and `cluster` ([`RunCommandArgs`]); `replay` reads its FILE.
    #[arg(skip)]
    pub input_topic: Option<String>,
    /// Write scored applications to this topic instead of --output.
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    pub output_topic: Option<String>,
    /// Dead letters topic (with a topic output; default: OUTPUT_TOPIC.dead-letters,
    /// or CLEANED_TOPIC.dead-letters for --stages clean).
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    pub dead_letter_topic: Option<String>,
    /// Which stages this process runs: `all` (ingest → clean → predict, one
    /// dataflow), `clean` (ingest → clean: feature rows to --cleaned-topic, or to
    /// --output) or `predict` (feature rows from --cleaned-topic, or from --input,
    /// → scores): the tutorial's services, deployed and scaled apart.
    #[arg(long, default_value = "all", value_name = "STAGES", value_parser = values::stages())]
    pub stages: crate::dataflow::graph::Stages,
    /// The middle topic of the tutorial's chain: feature rows as JSON keyed by id.
    /// `--stages clean` writes it, `--stages predict` reads it, and the default
    /// (all stages) also publishes it beside --output-topic.
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    pub cleaned_topic: Option<String>,
    /// Consumer group whose committed offsets track progress (default: loanflow.DATAFLOW).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Exactly once (Kafka → Kafka): each worker commits its outputs and the input
    /// offsets they cover in one Kafka transaction. Default: at least once.
    #[arg(long, requires = "brokers")]
    pub exactly_once: bool,
    /// Where --exactly-once writes a progress record per transaction (default:
    /// OUTPUT_TOPIC.progress); `loanflow verify` reads it.
    #[arg(long, value_name = "TOPIC", requires = "exactly_once")]
    pub progress_topic: Option<String>,
    /// `--until-caught-up` of `run` and `cluster` ([`RunCommandArgs`]).
    #[arg(skip)]
    pub until_caught_up: bool,
    /// Where each partition starts: committed (the group's offset, else the beginning),
    /// earliest, latest, offset:N, or time:RFC3339 (records before it are skipped).
    #[arg(long, default_value = "committed", value_name = "POSITION")]
    pub from: crate::core::position::From,
    /// Stop each partition at its end (`end`) or at its first record at or after
    /// time:RFC3339; the run ends by itself when every partition has. A bounded or
    /// positioned run uses its own consumer group unless --group is given, so a live
    /// pipeline's committed offsets never move.
    #[arg(long, value_name = "BOUND")]
    pub until: Option<crate::core::position::Until>,
    /// Window features on a live topic: a partition that delivers nothing for this
    /// many seconds stops holding the watermark, so applications on busy partitions
    /// are still answered. Wall clock, so the one setting by which two runs of the
    /// same input can differ: a record from a partition back from idle that is below
    /// the watermark by then is a late dead letter.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = seconds)]
    pub idle_timeout: Duration,
    /// Stamp every output with `event_time` (the spec's event-time column) and
    /// `latency_ms` (from the source reading it to the sink writing it: wall clock,
    /// so the one field that differs between two replays of the same history).
    #[arg(long)]
    pub stamp: bool,
    /// Serve Prometheus metrics (/metrics), a health check (/healthz) and a live
    /// page (/) on ADDR (host:port; port 0: a free one, named on stderr) while
    /// the run lasts; in a cluster, process I serves on ADDR's port + I.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// With --http: leave the spec's `[monitor]` off. The page then shows no
    /// monitor charts, and the run keeps the cost of a run without --http.
    #[arg(long, requires = "http", conflicts_with_all = ["monitor", "monitor_topic"])]
    pub no_monitor: bool,
    /// Model monitoring: one JSON line per event-time window of the spec's
    /// `[monitor]` (flag rates by group, score and feature PSI against the
    /// training reference, dead letters), written once the watermark passes
    /// the window's end; `loanflow monitor FILE` shows them as a table.
    #[arg(long, value_name = "FILE")]
    pub monitor: Option<PathBuf>,
    /// The monitor's window reports to this topic (keyed by window start), like --monitor.
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    pub monitor_topic: Option<String>,
    /// Carry the spec's label column through the clean stage like a
    /// passthrough column: what `loanflow features` writes beside the features.
    #[arg(skip)]
    pub label_through: bool,
    /// The input file: `--input` of `run` and `cluster` ([`RunCommandArgs`]),
    /// the FILE `replay` replays.
    #[arg(skip = PathBuf::from(DEFAULT_INPUT))]
    pub input: PathBuf,
    /// Input format (default: from the file extension).
    #[arg(long, value_parser = format())]
    pub format: Option<Format>,
    /// Scored applications, one JSON object per line.
    #[arg(
        short,
        long,
        default_value = "out/predictions.jsonl",
        value_name = "FILE"
    )]
    pub output: PathBuf,
    /// Records that could not be scored, with the reason and where they came from.
    /// Written only if there are any.
    #[arg(long, default_value = "out/dead_letters.jsonl", value_name = "FILE")]
    pub dead_letters: PathBuf,
    /// Worker threads.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
    /// Records per epoch per worker: the unit of progress (and of commits, with
    /// Kafka) [default: 1024 from a file (512 with window features), 4096 from
    /// Kafka (1024 with window features, at least once)]. A replay or bench
    /// paced by --rate closes epochs after at most 5 ms of its pace (fewer
    /// records), so windows are answered promptly.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Option<u32>,
    /// Records longer than this are dead letters.
    #[arg(long, default_value_t = DEFAULT_MAX_RECORD_BYTES as u64, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_record_bytes: u64,
    /// How long an idle worker keeps polling before it parks, in microseconds:
    /// peers' messages often come sooner than a parked thread wakes. It gives its
    /// core to any other thread after every poll, and stops polling while its
    /// waits keep ending in a park. 0: park after timely's own 10 µs.
    #[arg(long, default_value_t = DEFAULT_IDLE_SPIN_MICROS,
          value_name = "MICROS", value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub idle_spin: u64,
    /// No progress bar, even on a terminal.
    #[arg(short, long)]
    pub quiet: bool,
    /// This process's place in a timely cluster: the cluster flags of `run`
    /// and `cluster` ([`RunCommandArgs`]); none for `replay`.
    #[arg(skip)]
    pub cluster: ClusterFlags,
}

/// The flags of `loanflow run` and `loanflow cluster`: a run's flags, its
/// input (a file or a topic, read to its end or live), and its place in a
/// timely cluster (`cluster`: how many processes to launch). `replay` takes
/// the run's flags without these (its input is FILE; it never runs as a
/// cluster).
#[derive(Debug, Args, Clone)]
pub struct RunCommandArgs {
    /// Applications to score: CSV with a header, or JSON Lines.
    #[arg(short, long, default_value = DEFAULT_INPUT, value_name = "FILE")]
    pub input: PathBuf,
    /// Read applications from this topic instead of --input.
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    pub input_topic: Option<String>,
    /// Everything else about the run.
    #[command(flatten)]
    pub run: RunArgs,
    /// Stop once every owned partition is read to its end and everything read
    /// is delivered and committed (= --until end).
    #[arg(long, requires = "brokers", conflicts_with = "until")]
    pub until_caught_up: bool,
    /// This process's place in a timely cluster (`cluster`: how many to launch).
    #[command(flatten)]
    pub cluster: ClusterFlags,
}

impl RunCommandArgs {
    /// The run these flags describe, input file and cluster place included.
    pub fn resolved(&self) -> RunArgs {
        RunArgs {
            input: self.input.clone(),
            input_topic: self.input_topic.clone(),
            until_caught_up: self.until_caught_up,
            cluster: self.cluster.clone(),
            ..self.run.clone()
        }
    }
}

/// Where a process sits in a timely cluster (`run`), or how many to launch (`cluster`).
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterFlags {
    /// Processes in the cluster, each running -w worker threads (timely's cluster mode).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub processes: Option<u16>,
    /// This process's index in the cluster: 0 … N-1 (process 0 prints the cluster's summary).
    #[arg(long, value_name = "I", requires = "processes")]
    pub process: Option<u16>,
    /// The cluster's addresses: one host:port per line, in process order (the same file everywhere).
    #[arg(long, value_name = "FILE", requires = "processes")]
    pub hostfile: Option<PathBuf>,
    /// How long to wait for every process of the cluster to connect, in seconds.
    #[arg(long, default_value = "60", value_name = "SECONDS", value_parser = seconds)]
    pub cluster_timeout: Duration,
}

/// The flags of `loanflow ingest`.
#[derive(Debug, Args, Clone)]
pub struct IngestArgs {
    /// The spec the records are parsed with (the model is not read).
    #[command(flatten)]
    pub pipeline: SpecArgs,
    /// The broker to produce to.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The topic to produce to (created if missing: --partitions N, default 1).
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Applications to send: CSV with a header, or JSON Lines.
    #[arg(short, long, default_value = DEFAULT_INPUT, value_name = "FILE")]
    pub input: PathBuf,
    /// Input format (default: from the file extension).
    #[arg(long, value_parser = format())]
    pub format: Option<Format>,
    /// Records per second (default: as fast as the broker takes them).
    #[arg(long, value_name = "N", value_parser = positive)]
    pub rate: Option<f64>,
    /// No progress bar, even on a terminal.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The flags of `loanflow replay`.
#[derive(Debug, Args, Clone)]
pub struct ReplayArgs {
    /// The history to replay: CSV or JSON Lines, in arrival order.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Seconds of event time per second of wall time, or max.
    #[arg(long, default_value = "max", value_name = "FACTOR")]
    pub speed: crate::core::position::Speed,
    /// Records per second instead of event-time pacing (per worker, into the pipeline).
    #[arg(long, value_name = "N", conflicts_with = "speed", value_parser = positive)]
    pub rate: Option<f64>,
    /// Produce into this topic (with --brokers) instead of running the pipeline
    /// (created if missing: --partitions N, default 1).
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    pub topic: Option<String>,
    /// The run the records go into without `--topic`; with it, its spec, Kafka
    /// flags, `--format`, `--from`/`--until` and `--quiet` still apply.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The flags of `loanflow passthrough`.
#[derive(Debug, Args, Clone)]
pub struct PassthroughArgs {
    /// The broker holding both topics.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The topic to copy, every partition from the beginning to its end.
    #[arg(long, value_name = "TOPIC")]
    pub input_topic: String,
    /// The topic to copy into (created if missing: the input's partition count, or --partitions N).
    #[arg(long, value_name = "TOPIC")]
    pub output_topic: String,
    /// Threads, each owning the partitions p with p % threads == its index.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
}

/// The flags of `loanflow tail`.
#[derive(Debug, Args, Clone)]
pub struct TailArgs {
    /// The broker to read from.
    #[command(flatten)]
    pub kafka: KafkaConnectArgs,
    /// The topic to read.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Start at the beginning of the topic (default: only new messages).
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many messages.
    #[arg(short = 'n', long, value_name = "COUNT")]
    pub count: Option<u64>,
    /// Print each message's JSON value as it is.
    #[arg(long)]
    pub json: bool,
}

/// The flags of `loanflow monitor`.
#[derive(Debug, Args, Clone)]
pub struct MonitorArgs {
    /// The window reports `run --monitor FILE` wrote.
    #[arg(value_name = "FILE", required_unless_present = "monitor_topic")]
    pub file: Option<PathBuf>,
    /// Read them from this topic instead (`run --monitor-topic`).
    #[arg(
        long,
        value_name = "TOPIC",
        requires = "brokers",
        conflicts_with = "file"
    )]
    pub monitor_topic: Option<String>,
    /// The broker, for --monitor-topic.
    #[command(flatten)]
    pub kafka: KafkaConnectArgs,
    /// How many groups (by flag rate, highest first) each row shows.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub groups: usize,
}

/// The flags of `loanflow features`.
#[derive(Debug, Args, Clone)]
pub struct FeaturesArgs {
    /// The spec whose features are made (its model is not read).
    #[command(flatten)]
    pub pipeline: SpecArgs,
    /// Applications: CSV with a header, or JSON Lines.
    #[arg(short, long, default_value = DEFAULT_INPUT, value_name = "FILE")]
    pub input: PathBuf,
    /// Input format (default: from the file extension).
    #[arg(long, value_parser = format())]
    pub format: Option<Format>,
    /// The backfill: CSV of id, event time, label and every model feature in
    /// model order, sorted by event time then id.
    #[arg(short, long, default_value = "out/features.csv", value_name = "FILE")]
    pub output: PathBuf,
    /// Records that made no feature row (unreadable, not cleanable, late), with
    /// the reason and where they came from. Written only if there are any.
    #[arg(
        long,
        default_value = "out/features.dead_letters.jsonl",
        value_name = "FILE"
    )]
    pub dead_letters: PathBuf,
    /// Worker threads.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
    /// Records per epoch per worker [default: 1024 (512 with window features)].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Option<u32>,
    /// No progress bar, even on a terminal.
    #[arg(short, long)]
    pub quiet: bool,
}

impl FeaturesArgs {
    /// The run that makes the backfill's rows: the clean stage alone, the
    /// label carried through, feature rows to `rows`.
    pub fn run_args(&self, rows: PathBuf) -> RunArgs {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            run: RunCommandArgs,
        }
        let defaults = Defaults::try_parse_from(["loanflow"])
            .expect("run's flags all have defaults")
            .run
            .resolved();
        let mut run = RunArgs {
            pipeline: PipelineArgs {
                dataflow: self.pipeline.dataflow.clone(),
                model: None,
            },
            stages: crate::dataflow::graph::Stages::Clean,
            label_through: true,
            input: self.input.clone(),
            format: self.format,
            output: rows,
            dead_letters: self.dead_letters.clone(),
            workers: self.workers,
            batch: self.batch,
            quiet: self.quiet,
            ..defaults
        };
        // A file in, a file out: no broker, whatever the environment says.
        run.kafka.connect.brokers = None;
        run
    }
}

/// The flags of `loanflow explain`.
#[derive(Debug, Args, Clone)]
pub struct ExplainArgs {
    /// The spec and the model that scores (`--model` overrides the spec's).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Applications: CSV with a header, or JSON Lines.
    #[arg(short, long, default_value = DEFAULT_INPUT, value_name = "FILE")]
    pub input: PathBuf,
    /// Input format (default: from the file extension).
    #[arg(long, value_parser = format())]
    pub format: Option<Format>,
    /// The application to explain (its id column's value).
    #[arg(long, value_name = "ID")]
    pub id: String,
}

impl ExplainArgs {
    /// The run that makes the input's feature rows: the clean stage alone,
    /// one worker, feature rows to `rows`, dead letters to `dead_letters`.
    pub fn run_args(&self, rows: PathBuf, dead_letters: PathBuf) -> RunArgs {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            run: RunCommandArgs,
        }
        let defaults = Defaults::try_parse_from(["loanflow"])
            .expect("run's flags all have defaults")
            .run
            .resolved();
        let mut run = RunArgs {
            pipeline: PipelineArgs {
                dataflow: self.pipeline.dataflow.clone(),
                model: None,
            },
            stages: crate::dataflow::graph::Stages::Clean,
            input: self.input.clone(),
            format: self.format,
            output: rows,
            dead_letters,
            workers: 1,
            quiet: true,
            ..defaults
        };
        // A file in, a file out: no broker, whatever the environment says.
        run.kafka.connect.brokers = None;
        run
    }
}

/// The flags of `loanflow generate`.
#[derive(Debug, Args, Clone)]
pub struct GenerateArgs {
    /// The spec the rows are read and written with (the model is not read).
    #[command(flatten)]
    pub pipeline: SpecArgs,
    /// How many applications to write.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,
    /// Seed of the resampling: the same seed gives the same stream.
    #[arg(long, default_value_t = 2016)]
    pub seed: u64,
    /// The real applications to resample (CSV).
    #[arg(short, long, default_value = DEFAULT_INPUT, value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write: .csv, or .jsonl for JSON Lines; `-` for CSV on stdout.
    #[arg(short, long, default_value = "out/generated.csv", value_name = "FILE")]
    pub output: PathBuf,
    /// Synthetic drift, for trying the monitor: from this RFC 3339 time on, each
    /// row is the worse `sub_grade` of two draws and its `int_rate` is 3 points
    /// higher (needs those two columns).
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    pub shift_at: Option<i64>,
    /// Multiplies the resampled gaps between arrival times: 0.1 packs ten
    /// times the applications into each hour (fuller windows). At 1, about
    /// 9 million rows reach 2262, the last time a nanosecond clock holds.
    #[arg(long, default_value_t = 1.0, value_name = "F", value_parser = positive)]
    pub gap_scale: f64,
    /// No progress bar, even on a terminal.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The flags of `loanflow bench`.
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// The spec and model every run and limit uses.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The broker for the Kafka runs; without `--brokers`, files only.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Applications to generate (resampled from data/lending_club.csv, --seed).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..),
          conflicts_with = "input")]
    pub rows: u64,
    /// Seed of the generated stream.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Benchmark this file instead of a generated one (CSV with a header, or JSON Lines).
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Worker counts to measure, comma separated.
    #[arg(short, long, default_value = "1,2", value_name = "N,…", value_delimiter = ',',
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Vec<u16>,
    /// Runs per configuration (the table shows their median, min and max).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Offered loads, comma separated, each records per second (split over the workers)
    /// or a percentage of the max measured just before with as many workers
    /// (--rate 10%,50%,90%): latency under each load, in a second table.
    #[arg(long, value_name = "N|P%,…", value_delimiter = ',')]
    pub rate: Vec<crate::core::pace::Rate>,
    /// The p99 latency target at 50 % load (checked when --rate has 50%), in milliseconds.
    #[arg(long, default_value_t = 20.0, value_name = "MS", value_parser = positive)]
    pub p99_target_ms: f64,
    /// Another dataflow (with its own model) to run in the same sitting, each of its
    /// runs right after one of --dataflow's: --dataflow's records/s are then given as
    /// a share of its own, per worker count, against --share-target (e.g. what window
    /// features cost next to the stateless dataflow).
    #[arg(long, value_name = "TOML")]
    pub against: Option<PathBuf>,
    /// The share of --against's records/s that --dataflow should keep per worker count
    /// (checked with --against), in percent.
    #[arg(long, default_value_t = 50.0, value_name = "PCT", value_parser = positive)]
    pub share_target: f64,
    /// Write every result as JSON (for plotting).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Where the generated stream and the runs' outputs go.
    #[arg(long, default_value = "out/bench", value_name = "DIR")]
    pub dir: PathBuf,
    /// No progress lines on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}
