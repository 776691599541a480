//! Command-line flags (clap): every subcommand's argument types, parsed
//! into checked values (positive numbers, positions, rates, formats) by the
//! value parsers in [`values`], and the Kafka flags turned into a checked
//! [`KafkaConfig`]. Every subcommand's help ends with examples; defaults
//! make `loanflow run` with no arguments the embedded default job. May
//! import the edges ([`crate::io`], whose configuration it builds) and every
//! layer below them; never [`crate::pipeline`] or [`crate::commands`], which
//! take these types.

pub mod values;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};

use crate::core::record::Format;
use crate::dataflow::ingest::DEFAULT_MAX_RECORD_BYTES;
use crate::io::kafka::KafkaConfig;
use values::{format, positive, seconds};

/// The real applications: the default input of every command that reads one.
const DEFAULT_INPUT: &str = "data/lending_club.csv";

/// The default dataflow spec.
const DEFAULT_DATAFLOW: &str = "dataflows/lending_club.toml";

const EXAMPLES: &str = "\
Examples:
  loanflow run                                  score data/lending_club.csv into out/predictions.jsonl
  loanflow run -w 4 --input big.csv --output out/big.jsonl
  loanflow cluster --processes 2 -w 2           a 2-process cluster on this machine
  loanflow generate --rows 1000000 --seed 7 --output out/1m.csv
  RUST_LOG=debug loanflow run                   with logs";

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
    /// Score applications from a file through the dataflow.
    #[command(after_help = "\
Examples:
  loanflow run                                      the embedded default: data/lending_club.csv → out/predictions.jsonl
  loanflow run -w 2                                 the same on two worker threads
  loanflow run --input apps.jsonl --output scored.jsonl --dead-letters bad.jsonl
  loanflow run --dataflow dataflows/quix_fraud.toml --input homecredit.csv
  loanflow run --brokers 127.0.0.1:9092 --input-topic loans --output-topic loans.scored -w 2
  loanflow run --brokers 127.0.0.1:9092 --input-topic loans --output-topic loans.scored --until-caught-up
  loanflow run --brokers 127.0.0.1:9092 --input-topic loans --output-topic loans.scored --exactly-once -w 2
  loanflow run -w 4 --processes 2 --process 0 --hostfile hosts.txt     on host A (process 1 on host B)
  loanflow run --brokers broker:9093 --input-topic loans --output-topic scored \\
      -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512 -X sasl.username=u -X sasl.password=p

With --input-topic, records come from Kafka (JSON objects, or --format csv lines);
with --output-topic, scored applications go to Kafka keyed by id and dead letters
to --dead-letter-topic. Offsets are committed (group --group) only after every
output they cover is acknowledged: a restart resumes there, nothing is lost.

With --exactly-once, each worker's outputs, dead letters and the offsets they cover
are committed in one Kafka transaction (transactional.id GROUP.tx.W-w, so keep the
worker count when restarting); outputs carry loanflow.incarnation/worker/epoch
headers and every transaction writes a record to --progress-topic, so `loanflow
verify` can tell committed records from aborted ones even on brokers that deliver
aborted records to read_committed readers.

While the broker is unreachable the run waits (librdkafka retries with backoff),
logging what it waits for; after --max-outage seconds it exits non-zero, and
nothing undelivered is committed.

With --processes N --process I --hostfile FILE, this process is process I of a
timely cluster of N (FILE: one host:port per line, in process order); every
process must run the same binary, spec and model (checked at start-up). Workers
are numbered across the cluster, so file lines and Kafka partitions are shared
by all N × W workers; file outputs become OUTPUT.d/part-0000I.jsonl.")]
    Run(RunArgs),
    /// Try a cluster on this machine: launch N `loanflow run` processes connected on loopback.
    #[command(after_help = "\
Starts --processes N copies of `loanflow run` with every run option given here,
each with -w worker threads, connected as one timely cluster on free 127.0.0.1
ports (the hostfile it writes is what you would copy to several machines). Each
process's log lines are prefixed with [pI]; process 0 prints the cluster's summary.
SIGINT/SIGTERM are passed on (the processes finish what they read, then exit).
If a process dies, the others are stopped and the launcher exits non-zero naming it.

File outputs are written one file per process, sorted by process index:
--output out/p.jsonl → out/p.jsonl.d/part-00000.jsonl, part-00001.jsonl, …

Examples:
  loanflow cluster --processes 2 --workers 2
  loanflow cluster --processes 2 -w 2 --input out/1m.csv --output out/1m.jsonl -q
  loanflow cluster --processes 2 -w 1 --brokers 127.0.0.1:9092 --input-topic loans \\
      --output-topic loans.scored --until-caught-up")]
    Cluster(RunArgs),
    /// Produce applications from a file into a Kafka topic (the tutorial's ingest service).
    #[command(after_help = "\
Each valid record becomes a JSON object keyed by its id, with its event time
(the spec's event_time column) as the Kafka message timestamp. A line that is not
a valid record is sent as it is (no key): the pipeline dead-letters it. Exits
non-zero if any message was not acknowledged by the broker.

Examples:
  loanflow ingest --brokers 127.0.0.1:9092 --topic loans --partitions 4
  loanflow ingest --brokers 127.0.0.1:9092 --topic loans --input out/1m.csv --rate 5000")]
    Ingest(IngestArgs),
    /// Print scored applications from a topic as they arrive (the tutorial's stream reader).
    #[command(after_help = "\
Examples:
  loanflow tail --brokers 127.0.0.1:9092 --topic loans.scored --from-beginning
  loanflow tail --brokers 127.0.0.1:9092 --topic loans.scored -n 10 --json")]
    Tail(TailArgs),
    /// Replay history: a file of applications paced by their own event time, into a
    /// topic or straight into the pipeline.
    #[command(after_help = "\
--speed 3600 replays one hour of applied_at per second (--speed max: as fast as it
goes; --rate N: N records per second instead). --from/--until time:RFC3339 bound the
replay by event time (from inclusive, until exclusive). Without --topic the records go
straight into the pipeline and every `run` flag applies (--output, -w, --output-topic…).

Examples:
  loanflow replay data/lending_club.csv --brokers 127.0.0.1:9092 --topic loans --speed 86400
  loanflow replay data/lending_club.csv --speed max --from time:2016-02-01T00:00:00Z \\
      --until time:2016-03-01T00:00:00Z --output out/february.jsonl
  loanflow replay out/1m.csv --rate 5000 --brokers 127.0.0.1:9092 --output-topic scored")]
    Replay(ReplayArgs),
    /// Copy a topic to another with no processing: the raw consume → produce
    /// limit of a broker, to measure the pipeline against.
    #[command(after_help = "\
Reads every partition of --input-topic from the beginning to its end (partition EOF)
and writes each message (key and value) to --output-topic with the same producer
settings as `loanflow run`; -w threads own disjoint partitions, as run's workers do.

Examples:
  loanflow passthrough --brokers 127.0.0.1:9092 --input-topic loans --output-topic copy -w 2")]
    Passthrough(PassthroughArgs),
    /// Write a larger stream for benchmarks by resampling the real applications.
    #[command(after_help = "\
The rows are drawn with replacement from the real applications (every value real,
only the combination of row and time is new), given fresh ids and arrival times that
continue after the source's last one with gaps resampled from the real ones. The same
seed gives the same file.

Examples:
  loanflow generate --rows 1000000 --seed 7 --output out/1m.csv
  loanflow generate --rows 5000 --seed 1 --output out/5k.jsonl     JSON Lines, by extension")]
    Generate(GenerateArgs),
    /// Measure the pipeline: records/s, MB/s, CPU per record and latency per
    /// configuration, next to the raw limits (file copy, the scorer alone).
    #[command(after_help = "\
Generates --rows applications (like `loanflow generate`, cached under --dir) or takes
--input, then runs file → file (and with --brokers Kafka → Kafka) for each worker count
of --workers, --repeat times each, all in one sitting. Every run writes --stamp'ed
outputs; latency is each record's source read → sink write, pooled over the repeats.
The limits are measured in the same sitting: a plain file copy (read + write, no
processing), the scorer alone (the input's rows cleaned once, then predict_batch over
as many rows on as many threads), and with --brokers the raw Kafka passthrough (Kafka
outputs are read back from their topic for the latency). The
table (markdown) goes to stdout, a line per run to stderr; --json FILE writes it all.
With --rate R,… (records/s, or a percentage of the max measured in the same call,
e.g. --rate 10%,50%,90%) each worker count is also offered each load (paced like
`loanflow replay --rate`, split over the workers): a second table gives the latency
from when each record was due, and the p99 at 50 % load against --p99-target-ms.

Examples:
  loanflow bench                                        1,000,000 rows, -w 1 and -w 2, 3 runs each
  loanflow bench --rows 200000 --workers 1,2,4 --repeat 5 --json out/bench.json
  loanflow bench --input out/1m.csv --workers 2 --rate 200000     latency at 200k records/s
  loanflow bench --rows 1000000 --rate 10%,50%,90% --json out/bench.json   latency vs load
  loanflow bench --rows 1000000 --brokers 127.0.0.1:9092 --partitions 4")]
    Bench(BenchArgs),
    /// Check a Kafka → Kafka run: every input scored (or dead-lettered) exactly
    /// once among committed records; lost, duplicated and aborted counts.
    #[command(after_help = "\
Reads the whole input topic, the output and dead-letter topics and the progress
topic, and the group's committed offsets. A message written with --exactly-once
(headers loanflow.incarnation/worker/epoch) counts only if its transaction is on a
chain of progress records that starts at the committed offsets; other such
messages were aborted and are discarded (some brokers deliver them to every
reader). Messages without those headers (at-least-once runs) all count. Then each
input id must have exactly one committed output or dead letter: missing ones are
lost, extra ones duplicated (and compared byte by byte with the first copy).
Exits 1 if any is lost, any duplicate differs, or (with --exactly-once) any is
duplicated.

Examples:
  loanflow verify --brokers 127.0.0.1:9092 --input-topic loans --output-topic loans.scored
  loanflow verify --brokers 127.0.0.1:9092 --input-topic loans --output-topic loans.scored \\
      --exactly-once --json out/verify.json")]
    Verify(VerifyArgs),
}

/// The flags of `loanflow verify`.
#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// The broker the run used.
    #[command(flatten)]
    pub kafka: KafkaArgs,
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

/// Kafka connection flags, shared by every command that talks to a broker.
#[derive(Debug, Args, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (any Kafka-API broker: Apache Kafka, Redpanda, Tansu, …).
    #[arg(long, env = "LOANFLOW_BROKERS", value_name = "HOST:PORT,…")]
    pub brokers: Option<String>,
    /// A librdkafka property, as kcat takes it (repeat): -X security.protocol=SSL
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// How long to wait for the broker before giving up, in seconds.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = seconds)]
    pub connect_timeout: Duration,
    /// Create missing topics with this many partitions (else a missing topic is an error).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: Option<i32>,
    /// How long a running job waits for a broker that went away (retrying, and
    /// logging what it waits for) before it exits non-zero, in seconds. Nothing
    /// undelivered is committed either way.
    #[arg(long, default_value = "300", value_name = "SECONDS", value_parser = seconds)]
    pub max_outage: Duration,
}

impl KafkaArgs {
    /// The Kafka configuration these flags give, if they name brokers.
    pub fn config(&self) -> Result<Option<Arc<KafkaConfig>>> {
        let Some(brokers) = &self.brokers else {
            return Ok(None);
        };
        let config = KafkaConfig::new(brokers, &self.properties, self.connect_timeout)?
            .with_max_outage(self.max_outage);
        Ok(Some(Arc::new(config)))
    }

    /// [`Self::config`], for a command that cannot do without a broker.
    pub fn required(&self) -> Result<Arc<KafkaConfig>> {
        self.config()?
            .ok_or_else(|| anyhow!("--brokers is required (or set LOANFLOW_BROKERS)"))
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
    /// Read applications from this topic instead of --input.
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    pub input_topic: Option<String>,
    /// Write scored applications to this topic instead of --output.
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    pub output_topic: Option<String>,
    /// Dead letters topic (with --output-topic; default: OUTPUT_TOPIC.dead-letters).
    #[arg(long, value_name = "TOPIC", requires = "output_topic")]
    pub dead_letter_topic: Option<String>,
    /// Consumer group whose committed offsets track progress (default: loanflow.DATAFLOW).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Exactly once (Kafka → Kafka): each worker commits its outputs and the input
    /// offsets they cover in one Kafka transaction. Default: at least once.
    #[arg(long, requires_all = ["input_topic", "output_topic"])]
    pub exactly_once: bool,
    /// Where --exactly-once writes a progress record per transaction (default:
    /// OUTPUT_TOPIC.progress); `loanflow verify` reads it.
    #[arg(long, value_name = "TOPIC", requires = "exactly_once")]
    pub progress_topic: Option<String>,
    /// Stop once every owned partition is read to its end and everything read is delivered and committed (= --until end).
    #[arg(long, requires = "input_topic", conflicts_with = "until")]
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
    /// Stamp every output with `event_time` (the spec's event-time column) and
    /// `latency_ms` (from the source reading it to the sink writing it: wall clock,
    /// so the one field that differs between two replays of the same history).
    #[arg(long)]
    pub stamp: bool,
    /// Applications to score: CSV with a header, or JSON Lines.
    #[arg(short, long, default_value = DEFAULT_INPUT, value_name = "FILE")]
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
    /// Records per epoch per worker: the unit of progress (and of commits, with Kafka).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Records longer than this are dead letters.
    #[arg(long, default_value_t = DEFAULT_MAX_RECORD_BYTES as u64, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_record_bytes: u64,
    /// No progress bar, even on a terminal.
    #[arg(short, long)]
    pub quiet: bool,
    /// This process's place in a timely cluster (`cluster`: how many to launch).
    #[command(flatten)]
    pub cluster: ClusterFlags,
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
    pub pipeline: PipelineArgs,
    /// The broker to produce to.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The topic to produce to.
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
    /// Produce into this topic (with --brokers) instead of running the pipeline.
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
    /// The topic to copy into (created with --partitions if missing).
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
    pub kafka: KafkaArgs,
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

/// The flags of `loanflow generate`.
#[derive(Debug, Args, Clone)]
pub struct GenerateArgs {
    /// The spec the rows are read and written with (the model is not read).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
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
