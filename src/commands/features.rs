//! `loanflow features`: the backfill a model is trained from, and a summary
//! of what it wrote. A signal stops it before any CSV is written; it exits
//! 130 (SIGINT) or 143 (SIGTERM).

use anyhow::Result;

use crate::cli::FeaturesArgs;
use crate::pipeline::backfill::backfill;
use crate::pipeline::Control;

/// Runs `loanflow features` and says what it wrote.
pub fn execute(args: &FeaturesArgs, control: &Control) -> Result<()> {
    let done = backfill(args, control)?;
    if done.run.unfinished {
        eprintln!("{}", done.run);
        eprintln!(
            "loanflow: stopped before the end: {} was not written",
            args.output.display()
        );
        return Err(control.interrupted().into());
    }
    let dead = match &done.run.dead_letters_to {
        Some(to) if done.run.dead_letters > 0 => {
            format!("; {} dead letters → {to}", done.run.dead_letters)
        }
        _ => String::new(),
    };
    eprintln!(
        "loanflow: {} feature rows of {} records → {} (sorted by event time, id) in {:.3} s on {} worker{}{dead}",
        done.rows,
        done.run.records_in,
        done.path.display(),
        done.run.elapsed.as_secs_f64(),
        done.run.workers,
        if done.run.workers == 1 { "" } else { "s" },
    );
    Ok(())
}
