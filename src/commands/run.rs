//! `loanflow run`: the dataflow, started again after a fault a restart
//! helps, its summary on stderr.

use anyhow::Result;

use crate::cli::RunArgs;
use crate::pipeline::{run_restarting, Control};

/// Runs `loanflow run` and prints its summary.
pub fn execute(args: &RunArgs, control: &Control) -> Result<()> {
    let summary = run_restarting(args, control)?;
    eprintln!("{summary}");
    Ok(())
}
