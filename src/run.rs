//! `loanflow run`: loads and checks everything a run needs (spec, model,
//! input, outputs) before any worker starts — so set-up errors are one clear
//! line — then executes the dataflow on timely workers and returns a summary.

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;
use timely::{CommunicationConfig, WorkerConfig};

use crate::cli::{PipelineArgs, RunArgs};
use crate::dataflow::clean::Cleaner;
use crate::dataflow::ingest::Parser;
use crate::dataflow::predict::{OutputFormat, Predictor};
use crate::dataflow::{self, Epoch};
use crate::io::file::{detect_format, FileInput, FileOutput, FileSink, FileSource};
use crate::io::{Sink, Source, Stats};
use crate::model::Model;
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
    pub output: PathBuf,
    pub dead_letter_file: Option<PathBuf>,
    pub model: String,
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
        writeln!(
            f,
            "  scored        {:>10}  → {}",
            self.scored,
            self.output.display()
        )?;
        writeln!(
            f,
            "  flagged       {:>10}  ({:.2} %)",
            self.flagged,
            100.0 * self.flagged as f64 / self.scored.max(1) as f64
        )?;
        match &self.dead_letter_file {
            Some(path) => writeln!(
                f,
                "  dead letters  {:>10}  → {}",
                self.dead_letters,
                path.display()
            )?,
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

pub fn run(args: &RunArgs) -> Result<Summary> {
    let Loaded { spec, model } = load(&args.pipeline)?;
    let format = detect_format(&args.input, args.format)?;
    let input = Arc::new(FileInput::open(&args.input, format)?);
    let source_name = args.input.display().to_string();
    let max_record_bytes = args.max_record_bytes as usize;
    // Check the header now, so a missing column is a set-up error, not a failed worker.
    Parser::new(
        &spec,
        format,
        input.header(),
        &source_name,
        max_record_bytes,
    )?;
    if args.output == args.dead_letters {
        return Err(anyhow!(
            "--output and --dead-letters are both {}: give them different files",
            args.output.display()
        ));
    }
    let scored_out = Arc::new(FileOutput::create(&args.output, false)?);
    let dead_out = Arc::new(FileOutput::create(&args.dead_letters, true)?);
    let stats = Arc::new(Stats::default());
    let progress = progress_bar(input.data_len(), args.quiet);
    let workers = args.workers as usize;
    let batch = args.batch as usize;
    let format_out = OutputFormat::new(&spec, &model.id);
    let model_id = model.id.clone();
    let forest = Arc::new(model.forest.clone());
    tracing::info!(dataflow = %spec.name, model = %model.id, workers, input = %source_name, "starting");

    let started = Instant::now();
    let guards = {
        let stats = Arc::clone(&stats);
        let progress = progress.clone();
        let scored_out = Arc::clone(&scored_out);
        let dead_out = Arc::clone(&dead_out);
        timely::execute(timely_config(workers), move |worker| {
            let parser = Parser::new(
                &spec,
                format,
                input.header(),
                &source_name,
                max_record_bytes,
            )
            .expect("header checked before the workers started");
            let source: Box<dyn Source> = Box::new(FileSource {
                input: Arc::clone(&input),
                batch,
                progress: progress.clone(),
                stats: Arc::clone(&stats),
            });
            let sink: Box<dyn Sink> = Box::new(FileSink {
                scored: Arc::clone(&scored_out),
                dead: Arc::clone(&dead_out),
                format: format_out.clone(),
                stats: Arc::clone(&stats),
            });
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
    scored_out.finish().map_err(|e| anyhow!(e))?;
    let wrote_dead = dead_out.finish().map_err(|e| anyhow!(e))?;
    let elapsed = started.elapsed();
    Ok(Summary {
        records_in: Stats::get(&stats.records_in),
        bytes_in: Stats::get(&stats.bytes_in),
        scored: Stats::get(&stats.scored),
        flagged: Stats::get(&stats.flagged),
        dead_letters: Stats::get(&stats.dead_letters),
        elapsed,
        workers,
        output: scored_out.path().to_owned(),
        dead_letter_file: wrote_dead.then(|| dead_out.path().to_owned()),
        model: model_id,
    })
}
