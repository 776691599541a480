//! `loanflow passthrough`: a topic copied to another with no processing,
//! the broker's raw limit to measure the pipeline against.

use anyhow::Result;

use crate::cli::PassthroughArgs;
use crate::pipeline::copy::{copy, Copy};

/// Runs `loanflow passthrough` and prints its summary.
pub fn execute(args: &PassthroughArgs) -> Result<()> {
    let config = args.kafka.required()?;
    let summary = copy(&Copy {
        config: &config,
        input: &args.input_topic,
        output: &args.output_topic,
        partitions: args.kafka.partitions,
        workers: args.workers as usize,
    })?;
    eprintln!("{summary}");
    Ok(())
}
