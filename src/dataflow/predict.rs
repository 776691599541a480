//! The predict stage: feature rows → [`Scored`] applications, a batch at a
//! time through the native scorer. A plain struct, free of timely: the
//! operator that runs it is [`graph::predict`](crate::dataflow::graph::predict).
//!
//! With `[explain]` ([`Predictor::explaining`]), each application the spec
//! explains (flagged, or all) also gets its reason codes: its TreeSHAP
//! contributions (the fast walk, `crate::model`'s `fast_contributions_with`:
//! XGBoost's `pred_contribs` values within `f32` rounding), grouped back to their
//! sources and cut to the top few ([`crate::core::reasons`]). They are
//! computed from the feature row alone, so every stage layout — one dataflow,
//! or a predict stage reading the middle topic — gives the same reasons.
//! A batch is scored whole first, then its explained rows are explained one
//! after another.

use std::sync::Arc;

use crate::core::features::FeatureRow;
use crate::core::reasons::{Reason, Sources};
use crate::core::scored::Scored;
use crate::model::{Explainer, Forest};

/// Scores batches of rows with one forest.
pub struct Predictor {
    forest: Arc<Forest>,
    threshold: f64,
    features: Vec<f32>,
    scores: Vec<f32>,
    explain: Option<Explaining>,
}

/// What explaining needs, kept across batches.
struct Explaining {
    sources: Arc<Sources>,
    scratch: Explainer,
    contributions: Vec<f32>,
    grouped: Vec<Reason>,
    top: Vec<Reason>,
}

impl Predictor {
    /// Scores with `forest`, flagging scores at or above `threshold`.
    pub fn new(forest: Arc<Forest>, threshold: f64) -> Predictor {
        Predictor {
            forest,
            threshold,
            features: Vec::new(),
            scores: Vec::new(),
            explain: None,
        }
    }

    /// Also gives reasons to the applications `sources` explains (`None`:
    /// none). The forest must be explainable (checked when the run loads it).
    pub fn explaining(mut self, sources: Option<Arc<Sources>>) -> Predictor {
        self.explain = sources.map(|sources| {
            assert!(
                self.forest.explainable(),
                "an [explain] run loads a model with node covers"
            );
            Explaining {
                contributions: vec![0.0; self.forest.num_features() + 1],
                sources,
                scratch: Explainer::new(),
                grouped: Vec::new(),
                top: Vec::new(),
            }
        });
        self
    }

    /// Scores `rows` together, appending one [`Scored`] per row to `out`.
    pub fn score_batch(
        &mut self,
        rows: impl ExactSizeIterator<Item = FeatureRow>,
        out: &mut impl Extend<Scored>,
    ) {
        let n = rows.len();
        let width = self.forest.num_features();
        self.features.clear();
        self.features.reserve(n * width);
        let mut pending = Vec::with_capacity(n);
        for row in rows {
            debug_assert_eq!(row.features.len(), width);
            self.features.extend_from_slice(&row.features);
            pending.push((
                row.id,
                row.event_time,
                row.passthrough,
                row.read_at,
                row.origin,
            ));
        }
        self.scores.clear();
        self.scores.resize(n, 0.0);
        self.forest.predict_batch(&self.features, &mut self.scores);
        let threshold = self.threshold;
        let (forest, features, explain) = (&self.forest, &self.features, &mut self.explain);
        out.extend(pending.into_iter().zip(&self.scores).enumerate().map(
            |(i, ((id, event_time, passthrough, read_at, origin), &score))| {
                let flagged = f64::from(score) >= threshold;
                let reasons = explain
                    .as_mut()
                    .filter(|e| e.sources.explains(flagged))
                    .map(|e| e.reasons(forest, &features[i * width..(i + 1) * width]));
                Scored {
                    id,
                    origin,
                    score,
                    flagged,
                    event_time,
                    passthrough,
                    read_at,
                    reasons,
                }
            },
        ));
    }
}

impl Predictor {
    /// The features of the batch [`Predictor::score_batch`] scored last,
    /// row after row (`num_features` each).
    pub fn last_features(&self) -> &[f32] {
        &self.features
    }
}

impl Explaining {
    /// The top reasons of one row.
    fn reasons(&mut self, forest: &Forest, row: &[f32]) -> Vec<Reason> {
        forest.fast_contributions_with(&mut self.scratch, row, &mut self.contributions);
        self.sources
            .top(row, &self.contributions, &mut self.grouped, &mut self.top);
        self.top.clone()
    }
}
