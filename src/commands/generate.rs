//! `loanflow generate`: a larger stream for benchmarks, resampled from the
//! real applications.

use anyhow::Result;

use crate::cli::GenerateArgs;
use crate::pipeline::generate::generate;

/// Runs `loanflow generate` and says what it wrote.
pub fn execute(args: &GenerateArgs) -> Result<()> {
    let n = generate(args)?;
    eprintln!(
        "loanflow: wrote {n} resampled applications to {}",
        args.output.display()
    );
    Ok(())
}
