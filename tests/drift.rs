//! The training references `models/train.py` writes beside each model
//! (`models/NAME.reference.json`) against the data they came from, through
//! `loanflow::core::drift`: the 9,857 real rows (80 % of which trained the
//! model) sit within PSI 0.01 of the reference for the score and every
//! feature, and the riskiest 30 % of them — a stream whose mix moved toward
//! worse applicants — shows PSI above the "act" threshold for the score and
//! the interest rate.

mod common;

use std::collections::HashMap;

use common::{loanflow, root, stderr};
use loanflow::core::drift::{psi, Bins, Histogram, Reference, ACT};
use sha2::{Digest, Sha256};

/// `loanflow features` of the real rows: (ids, feature names, rows).
fn backfill(spec: &str, dir: &std::path::Path) -> (Vec<String>, Vec<String>, Vec<Vec<f32>>) {
    let out = dir.join("features.csv");
    let run = loanflow(&[
        "features",
        "-q",
        "--dataflow",
        spec,
        "--input",
        "data/lending_club.csv",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let mut reader = csv::Reader::from_path(&out).unwrap();
    let names: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .skip(3)
        .map(String::from)
        .collect();
    let (mut ids, mut rows) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record.unwrap();
        ids.push(record[0].to_owned());
        rows.push(common::backfill_features(&record));
    }
    (ids, names, rows)
}

fn histogram(bins: &Bins, values: impl Iterator<Item = f32>) -> Histogram {
    let mut h = Histogram::new(bins);
    values.for_each(|v| h.add(bins, v));
    h
}

fn check(name: &str, spec: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = root().join(format!("models/{name}.reference.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    let reference = Reference::parse(&path.display().to_string(), &text).unwrap();
    // It belongs to the committed model.
    let model = std::fs::read(root().join(format!("models/{name}.xgb.json"))).unwrap();
    assert_eq!(
        reference.model_sha256,
        hex(&Sha256::digest(&model)),
        "{name}: stale reference"
    );
    let (ids, names, rows) = backfill(spec, dir.path());
    assert_eq!(rows.len(), 9857);
    let feature_names: Vec<&str> = reference.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        feature_names, names,
        "{name}: the model's features in order"
    );
    assert!(
        reference.rows > 7000 && reference.rows < 9857,
        "{name}: the training split"
    );
    let scores: HashMap<String, f64> = common::expected_scores_of(name);
    let score_of = |i: usize| scores[&ids[i]] as f32;

    // The data the model was trained on: no drift.
    let all: Vec<usize> = (0..rows.len()).collect();
    let p = psi(
        &reference.score,
        &histogram(&reference.score, all.iter().map(|&i| score_of(i))),
    )
    .unwrap();
    assert!(p < 0.01, "{name}: score PSI {p} on its own data");
    for (j, f) in reference.features.iter().enumerate() {
        let p = psi(&f.bins, &histogram(&f.bins, rows.iter().map(|r| r[j]))).unwrap();
        assert!(p < 0.01, "{name}: {} PSI {p} on its own data", f.name);
    }

    // The riskiest 30 %: the score and the interest rate moved.
    let mut by_risk = all.clone();
    by_risk.sort_by(|a, b| score_of(*b).total_cmp(&score_of(*a)));
    let risky = &by_risk[..rows.len() * 3 / 10];
    let p = psi(
        &reference.score,
        &histogram(&reference.score, risky.iter().map(|&i| score_of(i))),
    )
    .unwrap();
    assert!(p > ACT, "{name}: score PSI {p} of the riskiest 30 %");
    let rate = reference
        .features
        .iter()
        .position(|f| f.name == "int_rate")
        .unwrap();
    let bins = &reference.features[rate].bins;
    let p = psi(bins, &histogram(bins, risky.iter().map(|&i| rows[i][rate]))).unwrap();
    assert!(p > ACT, "{name}: int_rate PSI {p} of the riskiest 30 %");
    eprintln!("{name}: riskiest 30 %: int_rate PSI {p:.3}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_lending_club_reference_fits_its_data_and_sees_a_riskier_mix() {
    check("lending_club", "dataflows/lending_club.toml");
}

#[test]
fn the_velocity_reference_fits_its_data_and_sees_a_riskier_mix() {
    check(
        "lending_club_velocity",
        "dataflows/lending_club_velocity.toml",
    );
}
