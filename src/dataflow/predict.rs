//! The predict stage: feature rows → [`Scored`] applications, a batch at a
//! time through the native scorer. A plain struct, free of timely: the
//! operator that runs it is [`graph::predict`](crate::dataflow::graph::predict).

use std::sync::Arc;

use crate::core::features::FeatureRow;
use crate::core::scored::Scored;
use crate::model::Forest;

/// Scores batches of rows with one forest.
pub struct Predictor {
    forest: Arc<Forest>,
    threshold: f64,
    features: Vec<f32>,
    scores: Vec<f32>,
}

impl Predictor {
    /// Scores with `forest`, flagging scores at or above `threshold`.
    pub fn new(forest: Arc<Forest>, threshold: f64) -> Predictor {
        Predictor {
            forest,
            threshold,
            features: Vec::new(),
            scores: Vec::new(),
        }
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
        out.extend(pending.into_iter().zip(&self.scores).map(
            |((id, event_time, passthrough, read_at, origin), &score)| Scored {
                id,
                origin,
                score,
                flagged: f64::from(score) >= threshold,
                event_time,
                passthrough,
                read_at,
            },
        ));
    }
}
