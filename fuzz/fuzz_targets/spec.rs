//! The dataflow spec loader on arbitrary text (`Spec::parse`, what
//! `Spec::load` runs on a file's contents): never a panic; an error's message
//! names the file. A spec that loads must also compile into everything a run
//! builds from it — the clean stage, a JSON parser, a CSV parser for a header
//! of its own columns — and a record made from its columns must go through
//! ingest and clean without a panic; the lending_club model's feature check
//! against it must be an answer, not a panic.
#![no_main]

use std::cell::RefCell;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use loanflow::dataflow::clean::Cleaner;
use loanflow::dataflow::ingest::Parser;
use loanflow::model::Model;
use loanflow::core::record::{write_record_json, Format, Stage, Value};
use loanflow::spec::{ColumnType, Spec};

mod common;

thread_local! {
    static MODEL: RefCell<Model> = RefCell::new(common::model());
}

fuzz_target!(|data: &[u8]| {
    // `Spec::load` reads the file with read_to_string: non-UTF-8 is a read error.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let spec = match Spec::parse(Path::new("fuzz.toml"), text) {
        Ok(spec) => spec,
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("fuzz.toml"), "{message}");
            return;
        }
    };
    assert!(spec.id < spec.columns.len());
    assert!(!spec.columns[spec.id].nullable());
    let names = spec.feature_names();
    assert!(!names.is_empty());
    MODEL.with(|m| {
        let _ = m.borrow().check_features(&spec.name, &names);
    });

    let cleaner = Cleaner::new(&spec);
    assert_eq!(cleaner.num_features(), names.len());

    // A record with a plausible value in every column, as CSV and as JSON.
    let texts: Vec<&str> = spec
        .columns
        .iter()
        .map(|c| match c.ty {
            ColumnType::String => "a",
            ColumnType::Int => "1",
            ColumnType::Float => "1.5",
            ColumnType::Timestamp => "2016-01-01T00:00:00Z",
        })
        .collect();
    let header = spec
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let line = texts.join(",");
    if let Ok(mut csv) = Parser::new(
        &spec,
        Format::Csv,
        Some(header.as_bytes()),
        "fuzz.csv",
        1 << 16,
    ) {
        ingest_and_clean(&spec, &cleaner, &mut csv, line.as_bytes());
    }
    let values: Vec<Value> = spec
        .columns
        .iter()
        .zip(&texts)
        .map(|(c, t)| loanflow::core::record::parse_value(c, t).unwrap_or(Value::Null))
        .collect();
    let mut json_line = Vec::new();
    write_record_json(&spec.columns, &values, &mut json_line);
    let mut json =
        Parser::new(&spec, Format::Jsonl, None, "fuzz", 1 << 16).expect("JSON needs no header");
    ingest_and_clean(&spec, &cleaner, &mut json, &json_line);
});

fn ingest_and_clean(spec: &Spec, cleaner: &Cleaner, parser: &mut Parser, line: &[u8]) {
    match parser.parse(common::raw(line)) {
        Ok(record) => {
            assert_eq!(record.values.len(), spec.columns.len());
            match cleaner.clean(record) {
                Ok(row) => assert_eq!(row.features.len(), cleaner.num_features()),
                Err(dl) => common::check_dead_letter(&dl, line, Stage::Clean),
            }
        }
        Err(dl) => common::check_dead_letter(&dl, line, Stage::Ingest),
    }
}
