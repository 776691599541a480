//! `loanflow ingest`: a file's applications into a topic (the tutorial's
//! ingest service), as fast as the broker takes them or at `--rate`. A
//! signal stops it: what was sent is acknowledged, the summary says so, and
//! it exits 130 (SIGINT) or 143 (SIGTERM).

use anyhow::Result;

use crate::cli::IngestArgs;
use crate::core::pace::Pacer;
use crate::core::position::{Speed, Window};
use crate::pipeline::produce::{produce_file, ProduceJob};
use crate::pipeline::Control;
use crate::spec::Spec;

/// Runs `loanflow ingest` and prints its summary.
pub fn execute(args: &IngestArgs, control: &Control) -> Result<()> {
    let spec = Spec::load(&args.pipeline.dataflow)?;
    let config = args.kafka.required()?;
    let summary = produce_file(
        &ProduceJob {
            spec: &spec,
            config: &config,
            partitions: args.kafka.partitions,
            topic: &args.topic,
            input: &args.input,
            format: args.format,
            quiet: args.quiet,
            pacer: Pacer::new(Speed::Max, args.rate),
            window: Window::default(),
        },
        control,
    )?;
    eprintln!("{summary}");
    if summary.interrupted {
        return Err(control.interrupted().into());
    }
    Ok(())
}
