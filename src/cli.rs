//! Command-line flags (clap). Every subcommand's help ends with examples;
//! defaults make `loanflow run` with no arguments the embedded default job.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::dataflow::ingest::DEFAULT_MAX_RECORD_BYTES;
use crate::record::Format;

const EXAMPLES: &str = "\
Examples:
  loanflow run                                  score data/lending_club.csv into out/predictions.jsonl
  loanflow run -w 4 --input big.csv --output out/big.jsonl
  loanflow generate --rows 1000000 --seed 7 --output out/1m.csv
  RUST_LOG=debug loanflow run                   with logs";

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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score applications from a file through the dataflow.
    #[command(after_help = "\
Examples:
  loanflow run                                      the embedded default: data/lending_club.csv → out/predictions.jsonl
  loanflow run -w 2                                 the same on two worker threads
  loanflow run --input apps.jsonl --output scored.jsonl --dead-letters bad.jsonl
  loanflow run --dataflow dataflows/quix_fraud.toml --input homecredit.csv")]
    Run(RunArgs),
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
}

#[derive(Debug, Args, Clone)]
pub struct PipelineArgs {
    /// The dataflow spec: columns, features, model.
    #[arg(
        long,
        default_value = "dataflows/lending_club.toml",
        value_name = "TOML"
    )]
    pub dataflow: PathBuf,
    /// Score with this XGBoost JSON model instead of the spec's.
    #[arg(long, value_name = "JSON")]
    pub model: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Applications to score: CSV with a header, or JSON Lines.
    #[arg(
        short,
        long,
        default_value = "data/lending_club.csv",
        value_name = "FILE"
    )]
    pub input: PathBuf,
    /// Input format (default: from the file extension).
    #[arg(long, value_enum)]
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
}

#[derive(Debug, Args, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// How many applications to write.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,
    /// Seed of the resampling: the same seed gives the same stream.
    #[arg(long, default_value_t = 2016)]
    pub seed: u64,
    /// The real applications to resample (CSV).
    #[arg(
        short,
        long,
        default_value = "data/lending_club.csv",
        value_name = "FILE"
    )]
    pub input: PathBuf,
    /// Where to write: .csv, or .jsonl for JSON Lines; `-` for CSV on stdout.
    #[arg(short, long, default_value = "out/generated.csv", value_name = "FILE")]
    pub output: PathBuf,
    /// No progress bar, even on a terminal.
    #[arg(short, long)]
    pub quiet: bool,
}
