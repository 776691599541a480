//! `loanflow replay FILE`: history replayed by its own event time (or at a
//! rate), into a topic (`--topic`) or straight into the pipeline, within an
//! event-time window (`--from`/`--until`).

use std::fmt;

use anyhow::{anyhow, Result};

use crate::cli::ReplayArgs;
use crate::core::pace::Pacer;
use crate::core::position::{From, Speed, Until, Window};
use crate::dataflow::ingest::DEFAULT_MAX_RECORD_BYTES;
use crate::dataflow::pace::Pace;
use crate::io::file::ParsedFile;
use crate::pipeline::produce::{produce_file, IngestSummary, ProduceJob};
use crate::pipeline::{run_paced, Control, Summary};
use crate::spec::Spec;

/// What `loanflow replay` did: a produce into a topic, or a pipeline run.
pub enum Replayed {
    /// Produced into a topic.
    Topic(IngestSummary),
    /// Ran through the pipeline.
    Pipeline(Summary),
}

impl fmt::Display for Replayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replayed::Topic(s) => s.fmt(f),
            Replayed::Pipeline(s) => s.fmt(f),
        }
    }
}

/// Runs `loanflow replay` and prints its summary; stopped by a signal
/// before the end of its file, it exits non-zero after it (as `run` and
/// `ingest` do).
pub fn execute(args: &ReplayArgs, control: &Control) -> Result<()> {
    let replayed = replay(args, control)?;
    eprintln!("{replayed}");
    let stopped = match &replayed {
        Replayed::Topic(s) => s.interrupted,
        Replayed::Pipeline(s) => s.unfinished,
    };
    if stopped {
        return Err(control.interrupted().into());
    }
    Ok(())
}

/// The FILE to replay, checked first: a missing one is named as FILE (the
/// argument `replay` takes), not as a flag.
fn check_file(args: &ReplayArgs) -> Result<()> {
    match std::fs::metadata(&args.file) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(anyhow!(
            "{} is not a file: give `loanflow replay` the CSV or JSON Lines file to replay",
            args.file.display()
        )),
        Err(e) => Err(anyhow!(
            "cannot read {}: {} (give `loanflow replay` an existing CSV or JSON Lines file: \
             loanflow replay FILE)",
            args.file.display(),
            match e.kind() {
                std::io::ErrorKind::NotFound => "not found".to_owned(),
                _ => e.to_string(),
            }
        )),
    }
}

/// The event-time window `--from`/`--until` give a file replay.
fn window(args: &ReplayArgs) -> Result<Window> {
    Ok(Window {
        from: match args.run.from {
            From::Time(t) => Some(t),
            From::Committed | From::Earliest => None,
            other => {
                return Err(anyhow!(
                    "a file replay starts at time:RFC3339 (or earliest), not {other:?}"
                ))
            }
        },
        until: match args.run.until {
            Some(Until::Time(t)) => Some(t),
            Some(Until::End) | None => None,
        },
    })
}

/// `loanflow replay FILE`.
pub fn replay(args: &ReplayArgs, control: &Control) -> Result<Replayed> {
    check_file(args)?;
    let window = window(args)?;
    let speed = if args.rate.is_some() {
        Speed::Max
    } else {
        args.speed
    };
    let pacer = Pacer::new(speed, args.rate);
    if args.topic.is_some() && args.run.http.is_some() {
        return Err(anyhow!(
            "--http serves a run of the pipeline, and replay --topic only produces: \
             give --http to the run that reads the topic"
        ));
    }
    if let Some(topic) = &args.topic {
        let spec = Spec::load(&args.run.pipeline.dataflow)?;
        let config = args.run.kafka.required()?;
        let job = ProduceJob {
            spec: &spec,
            config: &config,
            partitions: args.run.kafka.partitions,
            topic,
            input: &args.file,
            format: args.run.format,
            quiet: args.run.quiet,
            pacer,
            window,
        };
        return produce_file(&job, control).map(Replayed::Topic);
    }
    // Straight into the pipeline: every worker paces against the same origin.
    let origin = match window.from {
        Some(t) => t,
        None => first_event_time(args)?.unwrap_or(0),
    };
    let mut run = args.run.clone();
    run.input = args.file.clone();
    run.from = From::Committed;
    run.until = None;
    let pace = Pace {
        pacer: pacer.with_origin(origin),
        window,
    };
    run_paced(&run, Some(pace), control).map(Replayed::Pipeline)
}

/// The event time of the file's first valid record.
fn first_event_time(args: &ReplayArgs) -> Result<Option<i64>> {
    let spec = Spec::load(&args.run.pipeline.dataflow)?;
    let mut file = ParsedFile::open(&spec, &args.file, args.run.format, DEFAULT_MAX_RECORD_BYTES)?;
    let first = file
        .lines()
        .find_map(|line| line.parsed.ok().and_then(|r| r.event_time));
    Ok(first)
}
