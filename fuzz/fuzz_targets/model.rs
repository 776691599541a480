//! The XGBoost JSON model loader (`Model::from_bytes`, what `Model::load`
//! runs on a file's contents) on arbitrary bytes: never a panic or a hang.
//! A model that loads must score a row of NaNs (all missing) and a row of
//! zeros without a panic: a NaN never comes out, a logistic model gives a
//! probability in [0, 1], and the batch scorer agrees bit for bit with the
//! row-at-a-time walk. Trees with children out of range, features beyond the
//! row, cycles or shared nodes must be load errors (with ASan, a scorer that
//! read outside its nodes or the row would be caught here).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use loanflow::model::{Model, Objective};

mod common;

/// Rows wider than this are not scored here (a file of a few bytes can claim
/// any `num_feature`; a run refuses a model whose width is not the spec's
/// before it scores anything).
const MAX_SCORED_WIDTH: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let model = match Model::from_bytes(data, Path::new("fuzz.json")) {
        Ok(model) => model,
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("fuzz.json"), "{message}");
            return;
        }
    };
    let forest = &model.forest;
    let width = forest.num_features();
    assert!(width > 0);
    assert!(forest.num_trees() > 0);
    assert!(model.feature_names.is_empty() || model.feature_names.len() == width);
    let spec = common::spec();
    let _ = model.check_features(&spec.name, &spec.feature_names());
    if width > MAX_SCORED_WIDTH {
        return;
    }
    for fill in [f32::NAN, 0.0] {
        let row = vec![fill; width];
        let one = forest.predict_row(&row);
        assert!(!one.is_nan(), "scored NaN");
        if forest.objective() == Objective::Logistic {
            assert!((0.0..=1.0).contains(&one), "logistic gave {one}");
        }
        // Three rows: the batch walk must agree with the row walk.
        let rows: Vec<f32> = row.iter().chain(&row).chain(&row).copied().collect();
        let mut out = [0.0f32; 3];
        forest.predict_batch(&rows, &mut out);
        for o in out {
            assert_eq!(o.to_bits(), one.to_bits(), "batch and row walks differ");
        }
    }
});
