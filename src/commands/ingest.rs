//! `loanflow ingest`: a file's applications into a topic (the tutorial's
//! ingest service), as fast as the broker takes them or at `--rate`.

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
    Ok(())
}
