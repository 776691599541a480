//! Hostile input (issue 7): what the loaders do with bytes nobody should
//! send. Every input path — a record (CSV or JSON Lines), a dataflow spec, a
//! model file — answers with a typed error or a dead letter that names the
//! problem, never a panic. Inputs the fuzz targets in `fuzz/` found are kept
//! here as regression tests (marked "found by fuzz target …").

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::root;
use loanflow::core::record::{
    write_record_json, DeadLetter, Format, Origin, RawRecord, Record, Stage, Value,
};
use loanflow::dataflow::clean::Cleaner;
use loanflow::dataflow::ingest::{Parser, DEFAULT_MAX_RECORD_BYTES};
use loanflow::model::{LoadError, Model, ModelError, Objective};
use loanflow::spec::{Spec, SpecError};

fn spec() -> Spec {
    Spec::load(&root().join("dataflows/lending_club.toml")).unwrap()
}

fn csv_text() -> String {
    std::fs::read_to_string(root().join("data/lending_club.csv")).unwrap()
}

/// The first data line of data/lending_club.csv.
fn good_line() -> String {
    csv_text().lines().nth(1).unwrap().to_owned()
}

/// The parser `loanflow run` builds for the shipped CSV.
fn csv_parser(spec: &Spec) -> Parser {
    let text = csv_text();
    let header = text.lines().next().unwrap();
    Parser::new(
        spec,
        Format::Csv,
        Some(header.as_bytes()),
        "data/lending_club.csv",
        DEFAULT_MAX_RECORD_BYTES,
    )
    .unwrap()
}

fn json_parser(spec: &Spec) -> Parser {
    Parser::new(spec, Format::Jsonl, None, "loans", DEFAULT_MAX_RECORD_BYTES).unwrap()
}

fn raw(bytes: &[u8]) -> RawRecord {
    RawRecord {
        bytes: bytes.to_vec(),
        origin: Origin::Kafka {
            topic: "loans".into(),
            partition: 3,
            offset: 42,
        },
        read_at: 0,
    }
}

/// Parses `bytes`, expecting an ingest dead letter that keeps them.
fn ingest_dead(parser: &mut Parser, bytes: &[u8]) -> DeadLetter {
    let dl = parser
        .parse(raw(bytes))
        .map(|r| r.values)
        .expect_err("expected a dead letter");
    assert_eq!(dl.stage, Stage::Ingest);
    assert_eq!(dl.raw, bytes, "the dead letter keeps the raw input");
    assert_eq!(
        dl.origin,
        Origin::Kafka {
            topic: "loans".into(),
            partition: 3,
            offset: 42
        }
    );
    dl
}

/// The good line with field `column` replaced by `value`.
fn line_with(spec: &Spec, column: &str, value: &str) -> String {
    let text = csv_text();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let i = header.iter().position(|h| *h == column).unwrap();
    assert!(spec.column(column).is_some());
    let mut fields: Vec<String> = good_line().split(',').map(str::to_owned).collect();
    fields[i] = value.to_owned();
    fields.join(",")
}

/// The good line as a JSON object, as `loanflow ingest` writes it.
fn good_json(spec: &Spec) -> serde_json::Map<String, serde_json::Value> {
    let record: Record = csv_parser(spec).parse(raw(good_line().as_bytes())).unwrap();
    let mut line = Vec::new();
    write_record_json(&spec.columns, &record.values, &mut line);
    serde_json::from_slice(&line).unwrap()
}

// ---- records ---------------------------------------------------------------

#[test]
fn nul_byte_in_a_number_is_a_dead_letter_naming_the_column() {
    let spec = spec();
    let line = line_with(&spec, "funded_amnt", "161\u{0}00");
    let dl = ingest_dead(&mut csv_parser(&spec), line.as_bytes());
    assert_eq!(
        dl.reason,
        "column `funded_amnt`: `161\u{0}00` is not an integer"
    );
    // The dead-letter line escapes the NUL: one valid JSON object, raw intact.
    let v: serde_json::Value = serde_json::from_slice(&dl.to_json()).unwrap();
    assert_eq!(v["raw"].as_str(), Some(line.as_str()));
    assert_eq!(v["topic"], "loans");
    assert_eq!(v["offset"], 42);
}

#[test]
fn nul_byte_in_a_level_is_a_clean_dead_letter() {
    let spec = spec();
    let line = line_with(&spec, "sub_grade", "C\u{0}4");
    let record = csv_parser(&spec).parse(raw(line.as_bytes())).unwrap();
    let dl = Cleaner::new(&spec).clean(record).unwrap_err();
    assert_eq!(dl.stage, Stage::Clean);
    assert!(
        dl.reason
            .starts_with("column `sub_grade`: unknown level `C\u{0}4` (expected one of A1, A2"),
        "{}",
        dl.reason
    );
}

#[test]
fn one_megabyte_field_is_a_dead_letter_over_the_limit() {
    let spec = spec();
    let huge = "A".repeat(1 << 20);
    for (parser, line) in [
        (
            &mut csv_parser(&spec),
            line_with(&spec, "addr_state", &huge),
        ),
        (
            &mut json_parser(&spec),
            format!("{{\"id\":\"lc-1\",\"addr_state\":\"{huge}\"}}"),
        ),
    ] {
        let dl = ingest_dead(parser, line.as_bytes());
        assert_eq!(
            dl.reason,
            format!(
                "record is {} bytes, over the limit of 65536 (raise --max-record-bytes if it is genuine)",
                line.len()
            )
        );
    }
}

#[test]
fn deeply_nested_json_is_skipped_without_recursion() {
    // serde_json skips a value it does not keep (IgnoredAny) with a loop, not
    // recursion: 20,000 levels cost no stack, whatever the key.
    let spec = spec();
    let mut parser = json_parser(&spec);
    let nested = |key: &str| {
        let mut obj = good_json(&spec);
        obj.remove(key);
        let mut line = serde_json::to_string(&obj).unwrap();
        line.pop(); // the closing brace
        line.push_str(&format!(
            ",\"{key}\":{}{}}}",
            "[".repeat(20_000),
            "]".repeat(20_000)
        ));
        line
    };
    // In a column: a dead letter naming it.
    let line = nested("addr_state");
    let dl = ingest_dead(&mut parser, line.as_bytes());
    assert_eq!(
        dl.reason,
        "column `addr_state`: expected a string, found an object or array"
    );
    // In a key the spec does not read: ignored, the record is the good one.
    let good = csv_parser(&spec)
        .parse(raw(good_line().as_bytes()))
        .unwrap();
    let record = parser.parse(raw(nested("unread").as_bytes())).unwrap();
    assert_eq!(record.values, good.values);
    // As the whole record: not an object.
    let line = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let dl = ingest_dead(&mut parser, line.as_bytes());
    assert!(
        dl.reason.starts_with(
            "invalid type: sequence, expected a JSON object with one field per column"
        ),
        "{}",
        dl.reason
    );
    // Never closed.
    let line = format!("{{\"unread\":{}", "{\"a\":[".repeat(8_000));
    let dl = ingest_dead(&mut parser, line.as_bytes());
    assert!(
        dl.reason.starts_with("not valid JSON: EOF while parsing"),
        "{}",
        dl.reason
    );
}

#[test]
fn not_utf8_is_a_dead_letter_kept_as_base64() {
    let spec = spec();
    let mut bytes = good_line().into_bytes();
    bytes[3] = 0xff;
    for parser in [&mut csv_parser(&spec), &mut json_parser(&spec)] {
        let dl = ingest_dead(parser, &bytes);
        assert_eq!(dl.reason, "not UTF-8 (invalid byte at offset 3)");
        let v: serde_json::Value = serde_json::from_slice(&dl.to_json()).unwrap();
        assert!(v.get("raw").is_none());
        assert!(v["raw_base64"].is_string());
    }
}

#[test]
fn hostile_csv_structure_is_a_dead_letter_with_a_reason() {
    let spec = spec();
    let mut parser = csv_parser(&spec);
    let good = good_line();
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{good},extra"),
            "expected 25 fields (as in the header), found 26",
        ),
        (
            format!("\"{good}"),
            "broken CSV quoting: a quote is not closed",
        ),
        (
            // A newline is not a record end inside a record (a Kafka message may hold one).
            good.replacen(',', "\n", 1),
            "expected 25 fields (as in the header), found 24",
        ),
        (
            "\u{feff}".to_owned(),
            "expected 25 fields (as in the header), found 1",
        ),
        (" \t \r ".to_owned(), "empty record"),
        (",".repeat(100_000), "over the limit of 65536"),
        (
            ",".repeat(60_000),
            "expected 25 fields (as in the header), found 60001",
        ),
        (
            line_with(&spec, "int_rate", "1e999"),
            "column `int_rate`: `1e999` is not a finite number",
        ),
        (
            line_with(&spec, "int_rate", "NaN"),
            "column `int_rate`: `NaN` is not a finite number",
        ),
        (
            line_with(&spec, "funded_amnt", "99999999999999999999"),
            "column `funded_amnt`: `99999999999999999999` is not an integer",
        ),
        (
            line_with(&spec, "applied_at", "+275760-09-13T00:00:00Z"),
            "is not an RFC 3339 time",
        ),
        (
            // A valid RFC 3339 time that nanoseconds since 1970 in an i64 cannot hold.
            line_with(&spec, "applied_at", "2300-01-01T00:00:00Z"),
            "column `applied_at`: `2300-01-01T00:00:00Z` is not an RFC 3339 time",
        ),
    ];
    for (line, reason) in cases {
        let dl = ingest_dead(&mut parser, line.as_bytes());
        assert!(
            dl.reason.contains(reason),
            "{:?}: {}",
            &line[..line.len().min(80)],
            dl.reason
        );
    }
    // The parser is reused after every refusal: a good line still parses.
    assert!(parser.parse(raw(good.as_bytes())).is_ok());
}

#[test]
fn hostile_json_values_are_dead_letters_naming_the_column() {
    let spec = spec();
    let mut parser = json_parser(&spec);
    let with = |key: &str, value: serde_json::Value| {
        let mut obj = good_json(&spec);
        obj.insert(key.into(), value);
        serde_json::to_string(&obj).unwrap()
    };
    let cases: Vec<(String, &str)> = vec![
        (
            with("funded_amnt", serde_json::json!(u64::MAX)),
            "18446744073709551615 is too large",
        ),
        (
            // 1e300 is integral, but far beyond an i64.
            with("funded_amnt", serde_json::json!(1e300)),
            "column `funded_amnt`: `1000000000000000000000000000000",
        ),
        (
            with("applied_at", serde_json::json!(1451606400)),
            "column `applied_at`: expected an RFC 3339 time string, found a number",
        ),
        (
            with("id", serde_json::json!(null)),
            "column `id` is empty and has no missing values allowed",
        ),
        (
            with("id", serde_json::json!(true)),
            "column `id`: expected a string, found a boolean",
        ),
        (
            r#"{"id":"lc-1","id":"lc-2"}"#.to_owned(),
            "field `id` appears twice",
        ),
        ("{\"id\":\"lc-\\ud800\"}".to_owned(), "not valid JSON"),
        ("\u{0}".to_owned(), "not valid JSON"),
        ("null".to_owned(), "a JSON object with one field per column"),
        ("{} {}".to_owned(), "not a single JSON object"),
    ];
    for (line, reason) in cases {
        let dl = ingest_dead(&mut parser, line.as_bytes());
        assert!(
            dl.reason.contains(reason),
            "{:?}: {}",
            &line[..line.len().min(80)],
            dl.reason
        );
    }
    // An overflowing float in a float column: serde_json refuses it.
    let line =
        with("int_rate", serde_json::json!(1.0)).replace("\"int_rate\":1.0", "\"int_rate\":1e400");
    let dl = ingest_dead(&mut parser, line.as_bytes());
    assert!(dl.reason.contains("number out of range"), "{}", dl.reason);
}

#[test]
fn an_accepted_record_reads_back_from_its_json_form() {
    // What `loanflow ingest` writes to Kafka is what `run --input-topic` reads.
    let spec = spec();
    let mut csv = csv_parser(&spec);
    let mut json = json_parser(&spec);
    for line in csv_text().lines().skip(1).step_by(97) {
        let record = csv.parse(raw(line.as_bytes())).unwrap();
        let mut out = Vec::new();
        write_record_json(&spec.columns, &record.values, &mut out);
        let back = json.parse(raw(&out)).unwrap();
        assert_eq!(back.values, record.values);
        assert_eq!(back.id, record.id);
    }
}

#[test]
fn csv_and_json_read_the_same_digits_as_the_same_number() {
    // Found by fuzz target `record_csv` (its JSON round trip): serde_json's
    // default float parser is not correctly rounded, so `10.759223372036855`
    // read as 10.759223372036857 from JSON but as 10.759223372036855 from
    // CSV, and a record re-read from its own `loanflow ingest` JSON differed.
    // Fixed with serde_json's `float_roundtrip` feature.
    let spec = spec();
    let crash = "lc-009019,2016-03-24T04:55:44Z,5000,term_36,10.759223372036854775807,B4,NJ,Verified,63000.0,emp_1,1,0,7.6,1,+2,3,3,49768,60,0,2,63,27,75565,good";
    let record = csv_parser(&spec).parse(raw(crash.as_bytes())).unwrap();
    let rate = spec.column("int_rate").unwrap();
    assert_eq!(record.values[rate], Value::Float(10.759223372036855));
    let mut line = Vec::new();
    write_record_json(&spec.columns, &record.values, &mut line);
    assert!(String::from_utf8_lossy(&line).contains("\"int_rate\":10.759223372036855,"));
    let back = json_parser(&spec).parse(raw(&line)).unwrap();
    assert_eq!(back.values, record.values);
    // Found by fuzz target `record_json`: the same bug read a long decimal
    // in a JSON record as 90875.55555555555 (CSV: 90875.55555555556).
    let crash = r#"{"id":"lc-001119","applied_at":"2016-01-11T04:23:28Z","funded_amnt":8000,"term":"term_36","int_rate":15.31,"sub_grade":"C5","addr_state":"VA","verification_status":"Verified","annual_inc":90875.5555555555555555555555555555555555555555555555555555555555555555555555555550,"emp_length":"emp_2","delinq_2yrs":0,"inq_last_6mths":1,"revol_util":43.0,"acc_now_delinq":0,"open_il_6m":3,"open_il_12m":2,"open_il_24m":3,"total_bal_il":21298,"all_util":74,"inq_fi":0,"inq_last_12m":2,"delinq_amnt":0,"num_il_tl":4,"total_il_high_credit_limit":23463,"Class":"bad"}"#;
    let record = json_parser(&spec).parse(raw(crash.as_bytes())).unwrap();
    let income = spec.column("annual_inc").unwrap();
    assert_eq!(record.values[income], Value::Float(90875.55555555556));
    let mut line = Vec::new();
    write_record_json(&spec.columns, &record.values, &mut line);
    assert_eq!(
        json_parser(&spec).parse(raw(&line)).unwrap().values,
        record.values
    );
    // The same digits typed straight into either format.
    for digits in [
        "90875.5555555555555555555555555555555555555555555555555555555555555555555555555550",
        "10.759223372036855",
        "0.30000000000000004",
        "2.2250738585072014e-308",
        "9007199254740993.0",
    ] {
        let want: f64 = digits.parse().unwrap();
        let csv = line_with(&spec, "int_rate", digits);
        let csv = csv_parser(&spec).parse(raw(csv.as_bytes())).unwrap();
        assert_eq!(csv.values[rate], Value::Float(want), "{digits}");
        let mut obj = good_json(&spec);
        obj.remove("int_rate");
        let mut json = serde_json::to_string(&obj).unwrap();
        json.pop();
        json.push_str(&format!(",\"int_rate\":{digits}}}"));
        let json = json_parser(&spec).parse(raw(json.as_bytes())).unwrap();
        assert_eq!(json.values[rate], Value::Float(want), "{digits}");
    }
}

// ---- dataflow specs ----------------------------------------------------------

const SPEC: &str = r#"name = "t"
model = "m.json"
id = "id"
[columns]
id = "string"
x = "float"
[[features]]
kind = "numeric"
column = "x"
"#;

fn parse_spec(text: &str) -> Result<Spec, SpecError> {
    Spec::parse(Path::new("dataflows/hostile.toml"), text)
}

fn spec_error(text: &str) -> String {
    let e = parse_spec(text).unwrap_err();
    let message = e.to_string();
    assert!(message.contains("dataflows/hostile.toml"), "{message}");
    message
}

#[test]
fn spec_with_an_unknown_key_names_it_and_its_line() {
    let text = SPEC.replace("id = \"id\"", "id = \"id\"\nthreshhold = 0.7");
    let message = spec_error(&text);
    assert!(matches!(parse_spec(&text), Err(SpecError::Parse { .. })));
    assert!(message.contains("unknown field `threshhold`"), "{message}");
    assert!(message.contains("(line 4, column 1)"), "{message}");
}

#[test]
fn spec_with_a_wrong_type_names_its_line() {
    let message = spec_error(&SPEC.replace(
        "model = \"m.json\"",
        "model = \"m.json\"\nthreshold = \"high\"",
    ));
    assert!(
        message.contains("invalid type: string \"high\", expected f64"),
        "{message}"
    );
    assert!(message.contains("(line 3, column 13)"), "{message}");
    let message = spec_error(&SPEC.replace("x = \"float\"", "x = 7"));
    assert!(matches!(
        parse_spec(&SPEC.replace("x = \"float\"", "x = 7")),
        Err(SpecError::Invalid { .. })
    ));
    assert!(message.contains("column `x`"), "{message}");
}

#[test]
fn spec_that_is_not_toml_or_has_hostile_values() {
    let cases: Vec<(String, &str)> = vec![
        ("\u{0}".to_owned(), "not valid TOML"),
        ("[[[".to_owned(), "not valid TOML"),
        ("a = \"é".to_owned(), "not valid TOML"),
        (
            format!("{}1{}", "x = [".repeat(10_000), "]".repeat(10_000)),
            "not valid TOML",
        ),
        (
            SPEC.replace("id = \"id\"", "id = \"id\"\nthreshold = nan"),
            "`threshold` must be a finite number",
        ),
        (
            SPEC.replace("id = \"id\"", "id = \"nope\""),
            "`id` names column `nope`, which is not in [columns]",
        ),
        (
            format!("{SPEC}[[features]]\nkind = \"numeric\"\ncolumn = \"x\"\n"),
            "feature `x` appears twice",
        ),
        (
            SPEC.replace("kind = \"numeric\"", "kind = \"numeric\"\nlevels = []"),
            "unknown field `levels`",
        ),
    ];
    for (text, reason) in cases {
        let message = spec_error(&text);
        assert!(
            message.contains(reason),
            "{:?}: {message}",
            &text[..text.len().min(60)]
        );
    }
}

// ---- models --------------------------------------------------------------------

/// A model document with `trees` (JSON) and `num_feature`.
fn model_doc(trees: &str, num_feature: &str, objective: &str) -> String {
    format!(
        r#"{{"learner":{{"feature_names":[],
          "gradient_booster":{{"name":"gbtree","model":{{"tree_info":[],"trees":[{trees}]}}}},
          "learner_model_param":{{"base_score":"[5E-1]","num_class":"0","num_feature":"{num_feature}"}},
          "objective":{{"name":"{objective}"}}}},"version":[3,2,0]}}"#
    )
}

fn tree(left: &[i64], right: &[i64], values: &[f64], features: &[i64]) -> String {
    let n = left.len();
    format!(
        r#"{{"left_children":{left:?},"right_children":{right:?},"split_conditions":{values:?},"split_indices":{features:?},"default_left":{:?}}}"#,
        vec![0; n]
    )
}

fn load(doc: &str) -> Result<Model, ModelError> {
    Model::from_bytes(doc.as_bytes(), Path::new("models/hostile.json"))
}

/// The message of a load error, which must name the file.
fn load_error(doc: &str) -> (LoadError, String) {
    match load(doc) {
        Err(e @ ModelError::Load { .. }) => {
            let message = e.to_string();
            assert!(
                message.starts_with("model models/hostile.json: "),
                "{message}"
            );
            let ModelError::Load { source, .. } = e else {
                unreachable!()
            };
            (source, message)
        }
        Err(e) => panic!("not a load error: {e}"),
        Ok(_) => panic!("loaded a hostile model"),
    }
}

#[test]
fn model_child_index_out_of_range_is_a_load_error_naming_it() {
    let doc = model_doc(
        &tree(&[1, -1, -1], &[7, -1, -1], &[0.5, 1.0, 2.0], &[0, 0, 0]),
        "2",
        "binary:logistic",
    );
    let (e, message) = load_error(&doc);
    assert!(matches!(e, LoadError::Corrupt(_)));
    assert!(
        message.ends_with("corrupt model: tree 0: node 0 has children 1, 7 outside the tree"),
        "{message}"
    );
    let doc = model_doc(
        &tree(&[1, -1, -1], &[-5, -1, -1], &[0.5, 1.0, 2.0], &[0, 0, 0]),
        "2",
        "binary:logistic",
    );
    assert!(load_error(&doc)
        .1
        .contains("node 0 has children 1, -5 outside the tree"));
}

#[test]
fn model_feature_beyond_the_row_is_a_load_error() {
    let doc = model_doc(
        &tree(&[1, -1, -1], &[2, -1, -1], &[0.5, 1.0, 2.0], &[2, 0, 0]),
        "2",
        "binary:logistic",
    );
    assert!(load_error(&doc)
        .1
        .ends_with("tree 0: node 0 splits on feature 2, but the model has 2"));
    let doc = model_doc(
        &tree(&[1, -1, -1], &[2, -1, -1], &[0.5, 1.0, 2.0], &[-1, 0, 0]),
        "2",
        "binary:logistic",
    );
    assert!(load_error(&doc)
        .1
        .ends_with("tree 0: node 0 splits on feature -1, but the model has 2"));
}

#[test]
fn model_cycles_and_shared_nodes_are_load_errors() {
    // Node 1 points back at node 2's parent chain: 1 → 2 → 1.
    let doc = model_doc(
        &tree(
            &[1, 2, 1, -1],
            &[3, 3, 3, -1],
            &[0.5, 0.5, 0.5, 1.0],
            &[0, 0, 0, 0],
        ),
        "1",
        "binary:logistic",
    );
    let message = load_error(&doc).1;
    assert!(message.contains("tree 0: node"), "{message}");
    assert!(
        message.contains("is reached twice or does not exist"),
        "{message}"
    );
    // An orphan: node 3 is nobody's child.
    let doc = model_doc(
        &tree(
            &[1, -1, -1, -1],
            &[2, -1, -1, -1],
            &[0.5, 1.0, 2.0, 3.0],
            &[0, 0, 0, 0],
        ),
        "1",
        "binary:logistic",
    );
    assert!(load_error(&doc)
        .1
        .ends_with("tree 0: 1 of its 4 nodes are not reachable from the root"));
}

#[test]
fn model_with_ragged_or_empty_trees_is_a_load_error() {
    let ragged = r#"{"left_children":[1,-1,-1],"right_children":[2,-1],"split_conditions":[0.5,1,2],"split_indices":[0,0,0],"default_left":[0,0,0]}"#;
    assert!(load_error(&model_doc(ragged, "1", "binary:logistic"))
        .1
        .ends_with("tree 0: node arrays of different lengths"));
    assert!(load_error(&model_doc(
        &tree(&[], &[], &[], &[]),
        "1",
        "binary:logistic"
    ))
    .1
    .ends_with("tree 0: no nodes"));
    assert!(load_error(&model_doc("", "1", "binary:logistic"))
        .1
        .ends_with("corrupt model: no trees"));
}

#[test]
fn model_that_is_not_json_is_a_load_error() {
    for bytes in [
        &b""[..],
        b"\xff\xfe",
        b"{",
        b"[]",
        b"{\"learner\":{}}",
        b"\0",
    ] {
        let e = Model::from_bytes(bytes, Path::new("models/hostile.json")).unwrap_err();
        assert!(
            matches!(
                e,
                ModelError::Load {
                    source: LoadError::Json(_),
                    ..
                }
            ),
            "{e}"
        );
    }
}

/// A chain `depth` levels deep: node 2k splits to leaf 2k+1 and node 2k+2.
fn chain(depth: usize) -> String {
    let n = 2 * depth + 1;
    let mut left = vec![-1i64; n];
    let mut right = vec![-1i64; n];
    let mut values = vec![0.5f64; n];
    for k in 0..depth {
        left[2 * k] = (2 * k + 1) as i64;
        right[2 * k] = (2 * k + 2) as i64;
        values[2 * k + 1] = -0.25;
    }
    values[n - 1] = 1.0;
    tree(&left, &right, &values, &vec![0; n])
}

#[test]
fn model_with_no_features_is_a_load_error_not_a_panic() {
    // Found by review, confirmed with fuzz target `model`: a forest of leaves
    // claiming 0 features loaded, then `Forest::push` panicked.
    let doc = model_doc(&tree(&[-1], &[-1], &[0.25], &[0]), "0", "binary:logistic");
    let (e, message) = load_error(&doc);
    assert!(matches!(e, LoadError::Corrupt(_)));
    assert!(
        message.ends_with("num_feature is 0: a model reads at least one feature"),
        "{message}"
    );
    // One feature is enough for a forest of leaves, and it scores.
    let model = load(&model_doc(
        &tree(&[-1], &[-1], &[0.25], &[0]),
        "1",
        "binary:logistic",
    ))
    .unwrap();
    assert_eq!(
        model.forest.predict_row(&[f32::NAN]),
        1.0 / (1.0 + (-0.25f32).exp())
    );
}

#[test]
fn model_wider_than_the_scorer_packs_is_refused() {
    // A feature index is packed into 30 bits of a node: beyond that a split
    // would silently read another feature.
    let doc = model_doc(
        &tree(
            &[1, -1, -1],
            &[2, -1, -1],
            &[0.5, 1.0, 2.0],
            &[1 << 30, 0, 0],
        ),
        "1073741825",
        "binary:logistic",
    );
    let (e, message) = load_error(&doc);
    assert!(matches!(e, LoadError::Unsupported(_)));
    assert!(
        message.ends_with("1073741825 features (loanflow scores dense rows of at most 1073741824)"),
        "{message}"
    );
    let doc = model_doc(
        &tree(&[-1], &[-1], &[0.25], &[0]),
        "99999999999999999999999",
        "binary:logistic",
    );
    assert!(load_error(&doc)
        .1
        .ends_with("num_feature `99999999999999999999999` is not a number"));
}

#[test]
fn model_with_numbers_beyond_f32_is_a_load_error_not_a_nan_score() {
    // Found by review, confirmed with fuzz target `model`: JSON numbers beyond
    // f32 (1e39) loaded as infinite leaves, and a +inf and a -inf leaf summed
    // to a NaN score. Now serde_json (with `float_roundtrip`) refuses them as
    // out of range, and the loader also refuses any non-finite leaf.
    for leaf in ["1e39", "-1e39", "3.40282357e38"] {
        let doc = model_doc(&tree(&[-1], &[-1], &[0.0], &[0]), "1", "reg:squarederror").replace(
            "\"split_conditions\":[0.0]",
            &format!("\"split_conditions\":[{leaf}]"),
        );
        let (e, message) = load_error(&doc);
        assert!(matches!(e, LoadError::Json(_)), "{message}");
        assert!(message.contains("number out of range"), "{message}");
    }
    // f32::MAX itself is a finite leaf.
    let doc = model_doc(&tree(&[-1], &[-1], &[0.0], &[0]), "1", "reg:squarederror").replace(
        "\"split_conditions\":[0.0]",
        "\"split_conditions\":[3.4028235e38]",
    );
    let model = load(&doc).unwrap();
    assert_eq!(model.forest.predict_row(&[0.0]), f32::MAX);
    // A split threshold beyond f32 likewise.
    let doc = model_doc(
        &tree(&[1, -1, -1], &[2, -1, -1], &[0.5, 1.0, 2.0], &[0, 0, 0]),
        "1",
        "binary:logistic",
    )
    .replace("[0.5, 1.0, 2.0]", "[1e39, 1.0, 2.0]");
    assert!(load_error(&doc).1.contains("number out of range"));
}

#[test]
fn model_with_a_huge_depth_is_refused_quickly() {
    let start = Instant::now();
    let (e, message) = load_error(&model_doc(&chain(100_000), "1", "binary:logistic"));
    assert!(matches!(e, LoadError::Unsupported(_)));
    assert!(
        message.ends_with("tree 0 is 100000 levels deep (loanflow scores trees up to 1024 levels)"),
        "{message}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(load_error(&model_doc(&chain(1025), "1", "binary:logistic"))
        .1
        .contains("1025 levels deep"));
    // At the limit it loads and scores like a walk down the chain.
    let model = load(&model_doc(&chain(1024), "1", "reg:squarederror")).unwrap();
    assert_eq!(model.forest.max_depth(), 1024);
    assert_eq!(model.forest.objective(), Objective::Identity);
    assert_eq!(model.forest.predict_row(&[0.0]), 0.5 - 0.25); // 0 < 0.5: left at once
    assert_eq!(model.forest.predict_row(&[1.0]), 0.5 + 1.0); // always right: the last leaf
}

#[test]
fn loaded_hostile_looking_models_score_finite_probabilities() {
    // The shipped model on rows of NaNs, zeros and extremes: probabilities, never NaN.
    let model = Model::load(&root().join("models/lending_club.xgb.json")).unwrap();
    let width = model.forest.num_features();
    for fill in [
        f32::NAN,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
    ] {
        let p = model.forest.predict_row(&vec![fill; width]);
        assert!(p.is_finite() && (0.0..=1.0).contains(&p), "{fill}: {p}");
    }
}
