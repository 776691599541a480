//! Parity with XGBoost itself: every real row through spec → features →
//! native scorer must give XGBoost's own probability (models/*.expected.csv,
//! written by models/train.py; tests/fixtures/quix_expected.csv, written by
//! models/make_quix_fixture.py from XGBoost 3.2.0).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::root;
use loanflow::core::record::{Format, Origin, RawRecord};
use loanflow::dataflow::clean::Cleaner;
use loanflow::dataflow::ingest::Parser;
use loanflow::model::Model;
use loanflow::spec::Spec;

fn expected(path: &Path) -> HashMap<String, f32> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id,score"));
    lines
        .map(|l| {
            let (id, score) = l.split_once(',').unwrap();
            (id.to_owned(), score.parse().unwrap())
        })
        .collect()
}

/// Scores every line of a CSV through the spec's parser, cleaner and model;
/// returns (id, score) in file order.
fn score_csv(spec: &Spec, model: &Model, csv: &Path) -> Vec<(String, f32)> {
    let text = std::fs::read(csv).unwrap();
    let mut lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header = lines.next().unwrap();
    let mut parser = Parser::new(spec, Format::Csv, Some(header), "test", 1 << 16).unwrap();
    let cleaner = Cleaner::new(spec);
    let mut ids = Vec::new();
    let mut features = Vec::new();
    for (i, line) in lines.enumerate() {
        let record = parser
            .parse(RawRecord {
                read_at: 0,
                bytes: line.to_vec(),
                origin: Origin::File {
                    path: "test".into(),
                    line: i as u64 + 2,
                },
            })
            .unwrap_or_else(|d| panic!("line {}: {}", i + 2, d.reason));
        cleaner
            .features_into(&record.values, &mut features)
            .unwrap();
        ids.push(record.id);
    }
    let mut scores = vec![0.0; ids.len()];
    model.forest.predict_batch(&features, &mut scores);
    // The one-row path must agree with the batch path bit for bit.
    let width = model.forest.num_features();
    for (i, s) in scores.iter().enumerate() {
        assert_eq!(
            model
                .forest
                .predict_row(&features[i * width..(i + 1) * width])
                .to_bits(),
            s.to_bits()
        );
    }
    ids.into_iter().zip(scores).collect()
}

fn assert_parity(scored: &[(String, f32)], expected: &HashMap<String, f32>) -> (f32, usize) {
    assert_eq!(scored.len(), expected.len(), "one score per expected row");
    let mut max_diff = 0.0f32;
    let mut exact = 0;
    for (id, score) in scored {
        let want = expected
            .get(id)
            .unwrap_or_else(|| panic!("no expected score for {id}"));
        let diff = (score - want).abs();
        max_diff = max_diff.max(diff);
        exact += (score.to_bits() == want.to_bits()) as usize;
        assert!(diff <= 1e-6, "{id}: loanflow {score} vs XGBoost {want}");
    }
    (max_diff, exact)
}

#[test]
fn lending_club_all_rows_match_xgboost() {
    let spec = Spec::load(&root().join("dataflows/lending_club.toml")).unwrap();
    let model = Model::load(&spec.model).unwrap();
    model
        .check_features(&spec.name, &spec.feature_names())
        .unwrap();
    assert!(model.forest.num_trees() >= 100 && model.forest.max_depth() == 6);
    let scored = score_csv(&spec, &model, &root().join("data/lending_club.csv"));
    assert_eq!(scored.len(), 9857);
    let (max_diff, exact) = assert_parity(
        &scored,
        &expected(&root().join("models/lending_club.expected.csv")),
    );
    eprintln!(
        "lending_club: max |diff| = {max_diff:e}, bit-identical {exact}/{}",
        scored.len()
    );
}

#[test]
fn quix_reference_model_matches_xgboost_on_constructed_rows() {
    let spec = Spec::load(&root().join("dataflows/quix_fraud.toml")).unwrap();
    let model = Model::load(&spec.model).unwrap_or_else(|e| {
        panic!("{e} — the reference model lives in ../shared/reference beside the repository")
    });
    model
        .check_features(&spec.name, &spec.feature_names())
        .unwrap();
    let scored = score_csv(&spec, &model, &root().join("tests/fixtures/quix_rows.csv"));
    let (max_diff, exact) = assert_parity(
        &scored,
        &expected(&root().join("tests/fixtures/quix_expected.csv")),
    );
    eprintln!(
        "quix_fraud: max |diff| = {max_diff:e}, bit-identical {exact}/{}",
        scored.len()
    );
}

#[test]
fn model_that_does_not_fit_the_spec_is_refused() {
    let spec = Spec::load(&root().join("dataflows/lending_club.toml")).unwrap();
    let quix = Spec::load(&root().join("dataflows/quix_fraud.toml")).unwrap();
    let model = Model::load(&quix.model).unwrap();
    let err = model
        .check_features(&spec.name, &spec.feature_names())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the spec makes 73 features, the model takes 36"),
        "{err}"
    );
}
