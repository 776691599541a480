//! `loanflow explain`: one application's full contribution table. The input
//! goes through the dataflow's clean stage as `run --stages clean` makes it
//! (window features and watermarks included, so a feature here is the
//! number `run` scores), into a temporary file of feature rows; the row of
//! the asked id is then scored and explained with the model: every source's
//! contribution ([`crate::core::reasons`], all of them, not the top few) and
//! the base value, which sum to the margin.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use super::backfill::read_rows;
use super::control::Control;
use super::load::{load, Loaded};
use super::run::run;
use crate::cli::ExplainArgs;
use crate::core::reasons::{Reason, Sources};
use crate::model::Objective;
use crate::spec::{Explain, ExplainFor};

/// One application's explanation.
pub struct Explanation {
    /// Its id.
    pub id: String,
    /// The model's output.
    pub score: f32,
    /// Whether the score reaches the spec's threshold.
    pub flagged: bool,
    /// The spec's threshold.
    pub threshold: f64,
    /// The margin: the trees' sum before the objective's transform.
    pub margin: f32,
    /// `ln(score / (1 - score))` for a logistic model (`None` otherwise).
    pub logit: Option<f64>,
    /// The bias: the base margin plus every tree's mean value.
    pub base: f32,
    /// Every source, largest contribution first.
    pub reasons: Vec<Reason>,
    /// The sources the reasons index.
    pub sources: Sources,
    /// The model's identity.
    pub model: String,
    /// The contributions and the base value, summed in `f64`.
    pub sum: f64,
}

/// How far the sum of the contributions may be from the margin: `f32`
/// rounding of ~100 trees' worth of additions (XGBoost's own sums differ
/// from its margins by ~4e-6 on the real rows).
pub const SUM_TOLERANCE: f64 = 1e-4;

/// Explains the application `args.id` of `args.input`; `None` if a signal
/// stopped the clean run before the end.
pub fn explain(args: &ExplainArgs, control: &Control) -> Result<Option<Explanation>> {
    let Loaded { spec, model } = load(
        &args.pipeline.dataflow,
        args.pipeline.model.as_deref(),
        true,
    )?;
    if !model.forest.explainable() {
        bail!(
            "model {} has no node covers (`sum_hessian`), which explaining needs",
            model.path.display()
        );
    }
    let dir = TempDir::new()?;
    let rows_path = dir.0.join("rows.jsonl");
    let summary = run(
        &args.run_args(rows_path.clone(), dir.0.join("dead_letters.jsonl")),
        control,
    )?;
    if summary.unfinished {
        return Ok(None);
    }
    let row = read_rows(&spec, &rows_path)?
        .into_iter()
        .find(|r| r.id == args.id)
        .ok_or_else(|| {
            let dead = if summary.dead_letters > 0 {
                format!(
                    ", {} records were dead letters (`loanflow run` says why)",
                    summary.dead_letters
                )
            } else {
                String::new()
            };
            anyhow!(
                "no application with id `{}` in {} ({} records read{dead})",
                args.id,
                args.input.display(),
                summary.records_in
            )
        })?;
    let forest = &model.forest;
    let width = forest.num_features();
    let mut contributions = vec![0.0f32; width + 1];
    forest.contributions(&row.features, &mut contributions);
    let defaults = Explain {
        top: usize::MAX,
        rows: ExplainFor::All,
        text: Default::default(),
    };
    let sources = Sources::new(&spec, spec.explain.as_ref().unwrap_or(&defaults));
    let mut reasons = Vec::new();
    sources.group(&row.features, &contributions, &mut reasons);
    reasons.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
    let score = forest.predict_row(&row.features);
    let margin = forest.margin_row(&row.features);
    let logit = (forest.objective() == Objective::Logistic).then(|| {
        let p = f64::from(score);
        (p / (1.0 - p)).ln()
    });
    let sum = contributions.iter().map(|&c| f64::from(c)).sum::<f64>();
    if (sum - f64::from(margin)).abs() > SUM_TOLERANCE {
        bail!(
            "the contributions of {} sum to {sum}, but its margin is {margin}: the explanation is wrong",
            args.id
        );
    }
    Ok(Some(Explanation {
        id: row.id,
        score,
        flagged: f64::from(score) >= spec.threshold,
        threshold: spec.threshold,
        margin,
        logit,
        base: contributions[width],
        reasons,
        sources,
        model: model.id.clone(),
        sum,
    }))
}

/// A private folder under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("loanflow-explain-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| anyhow!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Path::new(&self.0));
    }
}
