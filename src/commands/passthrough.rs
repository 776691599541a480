//! `loanflow passthrough`: a topic copied to another with no processing,
//! the broker's raw limit to measure the pipeline against. A signal stops
//! it: what was read is delivered, the summary says so, and it exits 130
//! (SIGINT) or 143 (SIGTERM).

use anyhow::Result;

use crate::cli::PassthroughArgs;
use crate::pipeline::copy::{copy, Copy};
use crate::pipeline::Control;

/// Runs `loanflow passthrough` and prints its summary.
pub fn execute(args: &PassthroughArgs, control: &Control) -> Result<()> {
    let config = args.kafka.required()?;
    let summary = copy(&Copy {
        config: &config,
        input: &args.input_topic,
        output: &args.output_topic,
        partitions: args.kafka.partitions,
        workers: args.workers as usize,
        stop: control.stop_flag(),
    })?;
    eprintln!("{summary}");
    if summary.interrupted {
        return Err(control.interrupted().into());
    }
    Ok(())
}
