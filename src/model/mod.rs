//! The model: an XGBoost JSON model file loaded into a native forest, with
//! its identity (file name + content hash) and the check that it fits a
//! dataflow spec. Scoring and explaining (TreeSHAP contributions: `shap.rs`
//! bit-identical to XGBoost, `fast_shap.rs` the same values faster) need no
//! Python and no C++ XGBoost. May import nothing else of the crate.

mod fast_shap;
mod forest;
mod shap;
mod xgboost;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use fast_shap::{BUDGET, MAX_DEPTH};
pub use forest::{Forest, Objective};
pub use shap::Explainer;
pub use xgboost::LoadError;

/// Why a model could not be used. Each message names the model file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file cannot be read.
    #[error("cannot read model {path}: {source} (the spec's `model` or --model must name an XGBoost JSON file)")]
    Read {
        /// The model file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not an XGBoost JSON model that loanflow can score exactly.
    #[error("model {path}: {source}")]
    Load {
        /// The model file.
        path: PathBuf,
        /// What the loader refused.
        source: LoadError,
    },
    /// The model's features are not the spec's: another count, or another
    /// name at some position.
    #[error("model {path} does not fit dataflow `{spec}`: {message}")]
    Mismatch {
        /// The model file.
        path: PathBuf,
        /// The dataflow spec's name.
        spec: String,
        /// Which count or feature differs.
        message: String,
    },
}

/// A loaded model and who it is.
#[derive(Debug, Clone)]
pub struct Model {
    /// The trees, ready to score.
    pub forest: Forest,
    /// Feature names saved in the model file (empty if it saved none).
    pub feature_names: Vec<String>,
    /// `file-stem@sha256:first-12-hex`: names exactly which model scored a record.
    pub id: String,
    /// Full SHA-256 of the model file, hex.
    pub sha256: String,
    /// The path the model was loaded as (see [`Model::from_bytes`]).
    pub path: PathBuf,
}

impl Model {
    /// Reads and loads the XGBoost JSON model file at `path`.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.to_owned(),
            source,
        })?;
        Model::from_bytes(&bytes, path)
    }

    /// No model: what a clean stage (`run --stages clean`, `loanflow
    /// features`) carries, which makes features and never scores. Its id
    /// says so in the cluster's start-up check.
    pub fn absent(num_features: usize) -> Model {
        Model {
            forest: Forest::new(num_features, 0.0, Objective::Identity),
            feature_names: Vec::new(),
            id: "none".to_owned(),
            sha256: String::new(),
            path: PathBuf::new(),
        }
    }

    /// Loads a model from the bytes of an XGBoost JSON model file; `path`
    /// names it (in errors and in [`Model::id`]) and is not read.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Model, ModelError> {
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        let (forest, feature_names) = xgboost::parse(bytes).map_err(|source| ModelError::Load {
            path: path.to_owned(),
            source,
        })?;
        let stem = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let stem = stem.strip_suffix(".json").unwrap_or(&stem);
        Ok(Model {
            forest,
            feature_names,
            id: format!("{stem}@sha256:{}", &sha256[..12]),
            sha256,
            path: path.to_owned(),
        })
    }

    /// Checks that the spec's features are the model's, in the same order.
    /// A model saved without names is checked by count only.
    pub fn check_features(&self, spec_name: &str, expected: &[String]) -> Result<(), ModelError> {
        let mismatch = |message: String| ModelError::Mismatch {
            path: self.path.clone(),
            spec: spec_name.to_owned(),
            message,
        };
        if expected.len() != self.forest.num_features() {
            return Err(mismatch(format!(
                "the spec makes {} features, the model takes {}",
                expected.len(),
                self.forest.num_features()
            )));
        }
        if let Some((i, (spec, model))) = expected
            .iter()
            .zip(&self.feature_names)
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            return Err(mismatch(format!(
                "feature {i} is `{spec}` in the spec but `{model}` in the model (retrain, or fix the spec's feature order)"
            )));
        }
        Ok(())
    }
}
