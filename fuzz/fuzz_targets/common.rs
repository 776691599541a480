//! What the fuzz targets share: the real spec, header and model (compiled in,
//! so a target runs from any directory), and the checks every target makes on
//! what the library hands back.
#![allow(dead_code)] // each target uses its own part of this module

use std::path::Path;

use loanflow::dataflow::ingest::{Parser, DEFAULT_MAX_RECORD_BYTES};
use loanflow::model::Model;
use loanflow::core::record::{
    write_record_json, DeadLetter, Format, Origin, RawRecord, Record, Stage, Value,
};
use loanflow::spec::{ColumnType, Spec};

pub const SPEC_PATH: &str = "dataflows/lending_club.toml";
pub const SPEC_TEXT: &str = include_str!("../../dataflows/lending_club.toml");
pub const CSV: &str = include_str!("../../data/lending_club.csv");
pub const MODEL_PATH: &str = "models/lending_club.xgb.json";
pub const MODEL: &[u8] = include_bytes!("../../models/lending_club.xgb.json");

/// The shipped spec, loaded the way `loanflow run` loads it.
pub fn spec() -> Spec {
    Spec::parse(Path::new(SPEC_PATH), SPEC_TEXT).expect("the shipped spec loads")
}

/// The shipped model.
pub fn model() -> Model {
    Model::from_bytes(MODEL, Path::new(MODEL_PATH)).expect("the shipped model loads")
}

/// The header line of data/lending_club.csv, as `FileInput` hands it to the
/// parser (no line end).
pub fn header() -> &'static [u8] {
    CSV.lines().next().expect("the CSV has a header").as_bytes()
}

/// The parser `run.rs` builds for the shipped CSV (default --max-record-bytes).
pub fn csv_parser(spec: &Spec) -> Parser {
    Parser::new(
        spec,
        Format::Csv,
        Some(header()),
        "data/lending_club.csv",
        DEFAULT_MAX_RECORD_BYTES,
    )
    .expect("the shipped header fits the shipped spec")
}

/// The parser `run.rs` builds for JSON Lines (a .jsonl file or a Kafka topic).
pub fn json_parser(spec: &Spec) -> Parser {
    Parser::new(spec, Format::Jsonl, None, "loans", DEFAULT_MAX_RECORD_BYTES)
        .expect("JSON needs no header")
}

pub fn raw(bytes: &[u8]) -> RawRecord {
    RawRecord {
        bytes: bytes.to_vec(),
        origin: Origin::File {
            path: "fuzz".into(),
            line: 2,
        },
        read_at: 0,
    }
}

/// A dead letter must keep the raw input exactly, name its stage and a
/// reason, and serialise to one JSON object that gives the input back.
pub fn check_dead_letter(dl: &DeadLetter, input: &[u8], stage: Stage) {
    assert_eq!(dl.raw, input, "a dead letter keeps the raw input");
    assert_eq!(dl.stage, stage);
    assert!(!dl.reason.trim().is_empty(), "a dead letter has a reason");
    let json: serde_json::Value =
        serde_json::from_slice(&dl.to_json()).expect("a dead letter is valid JSON");
    match std::str::from_utf8(input) {
        Ok(text) => assert_eq!(json["raw"].as_str(), Some(text)),
        Err(_) => assert!(json["raw_base64"].is_string()),
    }
    assert_eq!(json["reason"].as_str(), Some(dl.reason.as_str()));
}

/// An accepted record must have one value per column, each of its column's
/// type, and keep its raw input.
pub fn check_record(spec: &Spec, record: &Record, input: &[u8]) {
    assert_eq!(record.raw, input);
    assert_eq!(record.values.len(), spec.columns.len());
    for (column, value) in spec.columns.iter().zip(&record.values) {
        let ok = match (value, column.ty) {
            (Value::Null, _) => column.nullable(),
            (Value::Str(_), ColumnType::String) => true,
            (Value::Int(_), ColumnType::Int) => true,
            (Value::Float(f), ColumnType::Float) => f.is_finite(),
            (Value::Time(_), ColumnType::Timestamp) => true,
            _ => false,
        };
        assert!(
            ok,
            "column `{}` ({:?}) holds {value:?}",
            column.name, column.ty
        );
    }
    assert!(!record.id.is_empty(), "an accepted record has an id");
    if let Some(i) = spec.event_time {
        match record.values[i] {
            Value::Time(t) => assert_eq!(record.event_time, Some(t)),
            _ => assert_eq!(record.event_time, None),
        }
    }
}

/// A record the pipeline accepted, written as JSON the way `loanflow ingest`
/// writes it, must be read back by the JSON parser to the same values: the
/// Kafka path must never dead-letter what the file path scored.
pub fn check_json_round_trip(spec: &Spec, json: &mut Parser, record: &Record) {
    let mut line = Vec::new();
    write_record_json(&spec.columns, &record.values, &mut line);
    match json.parse(raw(&line)) {
        Ok(back) => {
            assert_eq!(
                back.values,
                record.values,
                "{}",
                String::from_utf8_lossy(&line)
            );
            assert_eq!(back.id, record.id);
            assert_eq!(back.event_time, record.event_time);
        }
        Err(dl) => panic!(
            "the JSON form of an accepted record is a dead letter: {} ({})",
            dl.reason,
            String::from_utf8_lossy(&line)
        ),
    }
}
