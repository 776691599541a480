//! `loanflow run`: the dataflow, started again after a fault a restart
//! helps, its summary on stderr. A run whose input has an end (a file,
//! `--until`) that a signal cut short exits non-zero after its summary,
//! its file outputs left `.partial`; a live topic run stopped by a signal
//! exits 0 (see `pipeline::control`).

use anyhow::Result;

use crate::cli::RunArgs;
use crate::pipeline::{run_restarting, Control};

/// Runs `loanflow run` and prints its summary.
pub fn execute(args: &RunArgs, control: &Control) -> Result<()> {
    let summary = run_restarting(args, control)?;
    eprintln!("{summary}");
    if summary.unfinished {
        return Err(control.interrupted().into());
    }
    Ok(())
}
