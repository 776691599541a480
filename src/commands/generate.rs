//! `loanflow generate`: a larger stream for benchmarks, resampled from the
//! real applications. A signal stops it: what was written stays
//! `OUTPUT.partial`, the summary says so, and it exits 130 (SIGINT) or 143
//! (SIGTERM).

use anyhow::Result;

use crate::cli::GenerateArgs;
use crate::pipeline::generate::generate;
use crate::pipeline::Control;

/// Runs `loanflow generate` and says what it wrote.
pub fn execute(args: &GenerateArgs, control: &Control) -> Result<()> {
    let generated = generate(args, &control.stop_flag())?;
    if generated.interrupted {
        eprintln!(
            "loanflow: wrote {} of {} resampled applications to {} (stopped by {} before the end; {} was not written)",
            generated.rows,
            args.rows,
            generated.path.display(),
            crate::pipeline::control::signal_name(control.interrupted().signal),
            args.output.display()
        );
        return Err(control.interrupted().into());
    }
    eprintln!(
        "loanflow: wrote {} resampled applications to {}",
        generated.rows,
        generated.path.display()
    );
    Ok(())
}
