//! Loading what every run needs before any worker starts: the spec and the
//! model that fits it, checked together.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};

use crate::model::Model;
use crate::spec::Spec;

/// A spec with the model that fits it.
pub struct Loaded {
    /// The dataflow spec.
    pub spec: Arc<Spec>,
    /// Its model (or `--model`'s), checked against the spec's features.
    pub model: Arc<Model>,
}

/// Loads the spec at `dataflow` and its model (`model` if given, else the
/// spec's) and checks that they fit together. A run that only makes
/// features (`scores: false`) loads no model: training a new one starts
/// from those features. A spec with `[explain]` needs a model whose trees
/// carry their node covers.
pub fn load(dataflow: &Path, model: Option<&Path>, scores: bool) -> Result<Loaded> {
    let spec = Spec::load(dataflow)?;
    if !scores {
        return Ok(Loaded {
            model: Arc::new(Model::absent(spec.feature_names().len())),
            spec: Arc::new(spec),
        });
    }
    let model = Model::load(model.unwrap_or(&spec.model))?;
    model.check_features(&spec.name, &spec.feature_names())?;
    if spec.explain.is_some() && !model.forest.explainable() {
        return Err(anyhow!(
            "model {} has no node covers (`sum_hessian`), which [explain] in {} needs: save it with XGBoost's save_model (JSON), or drop [explain]",
            model.path.display(),
            spec.path.display()
        ));
    }
    if spec.explain.is_some() {
        // The reason codes' tables (~15 ms, 4 MB for the example model),
        // built here rather than on the first flagged record.
        model.forest.fast_tables();
    }
    Ok(Loaded {
        spec: Arc::new(spec),
        model: Arc::new(model),
    })
}

/// SHA-256 of a file, hex (for the cluster's start-up check).
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}
