//! `loanflow explain`: prints one application's contribution table on
//! stdout — its score and margin, the base value, every source column with
//! its value and contribution (largest first), and their sum beside the
//! margin and the score's logit. A signal stops it before anything is
//! printed; it exits 130 (SIGINT) or 143 (SIGTERM).

use std::fmt::Write as _;

use anyhow::Result;

use crate::cli::ExplainArgs;
use crate::pipeline::explain::{explain, Explanation};
use crate::pipeline::Control;

/// Runs `loanflow explain` and prints the table.
pub fn execute(args: &ExplainArgs, control: &Control) -> Result<()> {
    let Some(done) = explain(args, control)? else {
        eprintln!("loanflow: stopped before the end: nothing explained");
        return Err(control.interrupted().into());
    };
    print!("{}", table(&done));
    Ok(())
}

/// The table, as printed.
pub fn table(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: score {} ({}, threshold {}), margin {}, model {}",
        e.id,
        e.score,
        if e.flagged { "flagged" } else { "not flagged" },
        e.threshold,
        e.margin,
        e.model
    );
    let values: Vec<String> = e.reasons.iter().map(|r| e.sources.value_text(r)).collect();
    let name_width = e
        .reasons
        .iter()
        .map(|r| e.sources.sources()[r.source as usize].name.chars().count())
        .chain([10])
        .max()
        .unwrap_or(10);
    let value_width = values
        .iter()
        .map(|v| v.chars().count())
        .chain([5])
        .max()
        .unwrap_or(5);
    let _ = writeln!(
        out,
        "  {:<name_width$}  {:<value_width$}  {:>13}  text",
        "column", "value", "contribution"
    );
    let _ = writeln!(
        out,
        "  {:<name_width$}  {:<value_width$}  {:>+13.7}  base margin + every tree's mean value",
        "base value", "", e.base
    );
    for (reason, value) in e.reasons.iter().zip(&values) {
        let source = &e.sources.sources()[reason.source as usize];
        let _ = writeln!(
            out,
            "  {:<name_width$}  {:<value_width$}  {:>+13.7}  {}",
            source.name, value, reason.contribution, source.text
        );
    }
    let logit = match e.logit {
        Some(l) => format!(", logit(score) {l:+.7}"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "  {:<name_width$}  {:<value_width$}  {:>+13.7}  = margin {:+.7}{logit}",
        "sum", "", e.sum, e.margin
    );
    out
}
