//! Drift: how far a stream's distribution of the score and of each model
//! feature has moved from the training data's, as a population stability
//! index (PSI), the industry's measure (0.1: watch, 0.25: act).
//!
//! The training side is `models/NAME.reference.json`, written by
//! `models/train.py` beside the model ([`Reference`]): for the score and
//! every feature, bin edges at the training rows' deciles and the share of
//! training rows in each bin and missing. The stream side counts values into
//! the same bins ([`Histogram`]). Then, over the bins and missing,
//! `PSI = Σ (a − e) · ln(a / e)`, with `a` the stream's share and `e` the
//! training's, each floored at [`EPSILON`] so that an empty bin on either
//! side gives a large but finite term.
//!
//! Invariants:
//! 1. **The bins are the reference's, exactly**: a value falls in bin `i`
//!    when exactly `i` edges are at or below it (`f32` compares, as training
//!    binned its `f32` features), a NaN in missing ([`Histogram::add`]).
//! 2. **Counts are integers and the index is computed from them alone**, in
//!    bin order, so the same values give the same PSI bits in any order,
//!    on any worker count ([`psi`]).

use serde::{Deserialize, Serialize};

/// The floor of a share in a PSI term (both sides): an empty bin counts as
/// this share, not as 0 (which would make the index infinite).
pub const EPSILON: f64 = 1e-4;

/// PSI at or above this: the distribution moved enough to watch.
pub const WATCH: f64 = 0.1;

/// PSI at or above this: the distribution moved enough to act.
pub const ACT: f64 = 0.25;

/// Why a reference could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// The file is not a reference `models/train.py` writes.
    #[error("{0} is not a training reference (models/train.py writes them beside the model): {1}")]
    Format(String, serde_json::Error),
    /// Its edges are not ascending, or its shares do not fit them.
    #[error("reference {0}, histogram `{1}`: {2}")]
    Shape(String, String, &'static str),
}

/// One histogram of the training rows.
#[derive(Debug, Clone, Deserialize)]
pub struct Bins {
    /// Ascending bin edges (`f32` values).
    pub edges: Vec<f32>,
    /// The share of training rows in each of the `edges.len() + 1` bins.
    pub proportions: Vec<f64>,
    /// The share of training rows with the value missing.
    pub missing: f64,
}

/// A feature's training histogram.
#[derive(Debug, Clone, Deserialize)]
pub struct FeatureBins {
    /// The model feature's name.
    pub name: String,
    /// Its histogram.
    #[serde(flatten)]
    pub bins: Bins,
}

/// `models/NAME.reference.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    /// The model file it was trained with (its file name).
    pub model: String,
    /// That model file's SHA-256, hex.
    pub model_sha256: String,
    /// How many training rows the histograms count.
    pub rows: u64,
    /// The score's histogram.
    pub score: Bins,
    /// Every model feature's, in model order.
    pub features: Vec<FeatureBins>,
}

impl Reference {
    /// Reads a reference from its JSON text; `name` says which file.
    pub fn parse(name: &str, text: &str) -> Result<Reference, DriftError> {
        let r: Reference =
            serde_json::from_str(text).map_err(|e| DriftError::Format(name.to_owned(), e))?;
        let check = |what: &str, b: &Bins| {
            let shape = |m| Err(DriftError::Shape(name.to_owned(), what.to_owned(), m));
            if b.proportions.len() != b.edges.len() + 1 {
                return shape("one share per bin: one more than the edges");
            }
            if b.edges.windows(2).any(|w| w[0] >= w[1] || w[0].is_nan()) {
                return shape("edges must be distinct and ascending");
            }
            let total: f64 = b.proportions.iter().sum::<f64>() + b.missing;
            if (total - 1.0).abs() > 1e-9 {
                return shape("shares must sum to 1");
            }
            Ok(())
        };
        check("score", &r.score)?;
        for f in &r.features {
            check(&f.name, &f.bins)?;
        }
        Ok(r)
    }
}

/// A stream's counts in one reference histogram's bins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Histogram {
    /// Per bin (`edges.len() + 1`).
    pub counts: Vec<u64>,
    /// Missing values.
    pub missing: u64,
}

impl Histogram {
    /// Empty counts for `bins`.
    pub fn new(bins: &Bins) -> Histogram {
        Histogram {
            counts: vec![0; bins.edges.len() + 1],
            missing: 0,
        }
    }

    /// Counts `value` (invariant 1).
    pub fn add(&mut self, bins: &Bins, value: f32) {
        if value.is_nan() {
            self.missing += 1;
        } else {
            let i = bins.edges.partition_point(|e| *e <= value);
            self.counts[i] += 1;
        }
    }

    /// Adds another stream's counts of the same bins (a window's workers).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.missing += other.missing;
    }

    /// How many values were counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.missing
    }
}

/// The PSI of `stream` against the training histogram `bins` (invariant 2);
/// `None` for a stream with no values.
pub fn psi(bins: &Bins, stream: &Histogram) -> Option<f64> {
    let n = stream.total();
    if n == 0 {
        return None;
    }
    let term = |count: u64, expected: f64| {
        let a = (count as f64 / n as f64).max(EPSILON);
        let e = expected.max(EPSILON);
        (a - e) * (a / e).ln()
    };
    let bins_sum: f64 = stream
        .counts
        .iter()
        .zip(&bins.proportions)
        .map(|(c, e)| term(*c, *e))
        .sum();
    Some(bins_sum + term(stream.missing, bins.missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins() -> Bins {
        Bins {
            edges: vec![1.0, 2.0, 3.0],
            proportions: vec![0.25, 0.25, 0.25, 0.15],
            missing: 0.1,
        }
    }

    #[test]
    fn values_fall_in_the_reference_bins() {
        let b = bins();
        let mut h = Histogram::new(&b);
        for v in [0.5, 1.0, 1.5, 2.0, 3.0, 99.0, f32::NAN, -1.0] {
            h.add(&b, v);
        }
        // An edge belongs to the bin above it (edges at or below the value).
        assert_eq!(h.counts, vec![2, 2, 1, 2]);
        assert_eq!(h.missing, 1);
        assert_eq!(h.total(), 8);
    }

    #[test]
    fn psi_is_zero_for_the_same_shares_and_grows_with_the_shift() {
        let b = bins();
        let same = Histogram {
            counts: vec![25, 25, 25, 15],
            missing: 10,
        };
        assert!(psi(&b, &same).unwrap().abs() < 1e-12);
        // By hand: shares 0.1 0.2 0.3 0.3 and 0.1 missing.
        let moved = Histogram {
            counts: vec![10, 20, 30, 30],
            missing: 10,
        };
        let by_hand = (0.1f64 - 0.25) * (0.1f64 / 0.25).ln()
            + (0.2f64 - 0.25) * (0.2f64 / 0.25).ln()
            + (0.3f64 - 0.25) * (0.3f64 / 0.25).ln()
            + (0.3f64 - 0.15) * (0.3f64 / 0.15).ln();
        assert!((psi(&b, &moved).unwrap() - by_hand).abs() < 1e-12);
        assert!(by_hand > ACT, "{by_hand}");
        // An empty bin is floored, not infinite.
        let empty_bin = Histogram {
            counts: vec![0, 50, 25, 15],
            missing: 10,
        };
        let p = psi(&b, &empty_bin).unwrap();
        assert!(p.is_finite() && p > ACT, "{p}");
        assert_eq!(psi(&b, &Histogram::new(&b)), None);
    }

    #[test]
    fn merged_counts_give_the_same_bits_as_one_stream() {
        let b = bins();
        let values: Vec<f32> = (0..1000).map(|i| (i % 37) as f32 / 9.0).collect();
        let mut one = Histogram::new(&b);
        values.iter().for_each(|v| one.add(&b, *v));
        let (mut x, mut y) = (Histogram::new(&b), Histogram::new(&b));
        for (i, v) in values.iter().enumerate().rev() {
            if i % 3 == 0 {
                x.add(&b, *v)
            } else {
                y.add(&b, *v)
            }
        }
        x.merge(&y);
        assert_eq!(x, one);
        assert_eq!(
            psi(&b, &x).unwrap().to_bits(),
            psi(&b, &one).unwrap().to_bits()
        );
    }

    #[test]
    fn a_malformed_reference_is_refused_with_what_is_wrong() {
        let err = Reference::parse("r.json", "{}").unwrap_err();
        assert!(err.to_string().contains("r.json"), "{err}");
        let bad = r#"{"model":"m","model_sha256":"x","rows":1,
            "score":{"edges":[2.0,1.0],"proportions":[0.5,0.25,0.25],"missing":0.0},
            "features":[]}"#;
        let err = Reference::parse("r.json", bad).unwrap_err();
        assert!(err.to_string().contains("ascending"), "{err}");
    }
}
