//! The whole record path: parse (as CSV with the real header, and as JSON
//! Lines) → clean (the spec's Cleaner) → score (models/lending_club.xgb.json,
//! binary:logistic) → the output line, for whatever the parser accepts.
//! Never a panic; a clean refusal is a clean-stage dead letter keeping the raw
//! bytes; a cleaned row has the model's width; every score is a probability
//! (finite, in [0, 1]), the batch scorer agrees bit for bit with the
//! row-at-a-time walk, and the output line is one JSON object.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use loanflow::dataflow::clean::Cleaner;
use loanflow::dataflow::ingest::Parser;
use loanflow::core::scored::OutputFormat;
use loanflow::dataflow::predict::Predictor;
use loanflow::model::{Model, Objective};
use loanflow::core::record::Stage;
use loanflow::spec::Spec;

mod common;

struct State {
    spec: Spec,
    model: Model,
    csv: Parser,
    json: Parser,
    cleaner: Cleaner,
    predictor: Predictor,
    output: OutputFormat,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new({
        let spec = common::spec();
        let model = common::model();
        model
            .check_features(&spec.name, &spec.feature_names())
            .expect("the shipped model fits the shipped spec");
        assert_eq!(model.forest.objective(), Objective::Logistic);
        State {
            csv: common::csv_parser(&spec),
            json: common::json_parser(&spec),
            cleaner: Cleaner::new(&spec),
            predictor: Predictor::new(Arc::new(model.forest.clone()), spec.threshold),
            output: OutputFormat::new(&spec, &model.id),
            model,
            spec,
        }
    });
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|state| {
        let state = &mut *state.borrow_mut();
        let csv = state.csv.parse(common::raw(data));
        let json = state.json.parse(common::raw(data));
        for parsed in [csv, json] {
            let Ok(record) = parsed else { continue };
            common::check_record(&state.spec, &record, data);
            match state.cleaner.clean(record) {
                Ok(row) => score(state, row),
                Err(dl) => common::check_dead_letter(&dl, data, Stage::Clean),
            }
        }
    })
});

fn score(state: &mut State, row: loanflow::dataflow::clean::FeatureRow) {
    let forest = &state.model.forest;
    assert_eq!(row.features.len(), forest.num_features());
    assert_eq!(row.features.len(), state.cleaner.num_features());
    let one = forest.predict_row(&row.features);
    let mut scored = Vec::new();
    state
        .predictor
        .score_batch(std::iter::once(row), &mut scored);
    assert_eq!(scored.len(), 1);
    let s = &scored[0];
    assert!(
        s.score.is_finite() && (0.0..=1.0).contains(&s.score),
        "binary:logistic gave {}",
        s.score
    );
    assert_eq!(
        s.score.to_bits(),
        one.to_bits(),
        "batch and row walks differ"
    );
    assert_eq!(s.flagged, f64::from(s.score) >= state.spec.threshold);
    let mut line = Vec::new();
    state.output.write(s, 0, &mut line);
    let v: serde_json::Value = serde_json::from_slice(&line).expect("the output is JSON");
    assert_eq!(v["id"].as_str(), Some(s.id.as_str()));
}
