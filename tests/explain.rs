//! Reason codes: TreeSHAP contributions equal to XGBoost's own
//! `pred_contribs` (models/lending_club.contribs.f32 from XGBoost 3.2.0,
//! tests/fixtures/quix_contribs.csv from XGBoost 1.4.2, both written by
//! models/contribs.py), grouped back to the columns an applicant wrote, in
//! every output of a run with `[explain]`, and in `loanflow explain`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{ingest, loanflow, root, stderr, Broker};
use loanflow::core::reasons::{ReasonValue, Sources};
use loanflow::core::record::{Format, Origin, RawRecord, Value};
use loanflow::dataflow::clean::Cleaner;
use loanflow::dataflow::ingest::Parser;
use loanflow::model::{Explainer, Model};
use loanflow::spec::Spec;

const EXPLAIN_SPEC: &str = "dataflows/lending_club_explain.toml";

/// Every line of a CSV through the spec's parser and cleaner: (ids, the
/// features row-major).
fn features_of(spec: &Spec, csv: &Path) -> (Vec<String>, Vec<f32>) {
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
    (ids, features)
}

/// Every row's contributions (num_features + 1 each, bias last).
fn contributions(model: &Model, features: &[f32]) -> Vec<f32> {
    let width = model.forest.num_features();
    let mut scratch = Explainer::new();
    let mut out = vec![0.0; features.len() / width * (width + 1)];
    for (row, o) in features.chunks(width).zip(out.chunks_mut(width + 1)) {
        model.forest.contributions_with(&mut scratch, row, o);
    }
    out
}

/// Every row's contributions by the fast walk (what a run's reasons use).
fn fast_contributions(model: &Model, features: &[f32]) -> Vec<f32> {
    let width = model.forest.num_features();
    let mut scratch = Explainer::new();
    let mut out = vec![0.0; features.len() / width * (width + 1)];
    for (row, o) in features.chunks(width).zip(out.chunks_mut(width + 1)) {
        model.forest.fast_contributions_with(&mut scratch, row, o);
    }
    out
}

/// Fast against exact: max |diff| per element, the bias bit for bit.
fn assert_fast_equals_exact(what: &str, model: &Model, features: &[f32]) -> Vec<f32> {
    let width = model.forest.num_features();
    let exact = contributions(model, features);
    let fast = fast_contributions(model, features);
    // Bound: 1e-6 relative to max(1, |exact|) (~8 ulps of f32). The
    // differences are the exact walk's own f32 rounding: tables stored in
    // f64 give the same max |diff| (measured: 1.43e-6 at -2.74 on the real
    // rows, 1.67e-6 at -2.42 on the velocity model's).
    let (mut max_diff, mut max_rel) = (0.0f32, 0.0f32);
    let mut same = 0usize;
    for (e, f) in exact.chunks(width + 1).zip(fast.chunks(width + 1)) {
        assert_eq!(e[width].to_bits(), f[width].to_bits(), "{what}: the bias");
        for (a, b) in e.iter().zip(f) {
            max_diff = max_diff.max((a - b).abs());
            max_rel = max_rel.max((a - b).abs() / a.abs().max(1.0));
            same += usize::from(a.to_bits() == b.to_bits());
        }
    }
    let (trees, values) = model.forest.fast_tables();
    println!(
        "{what}: fast vs exact on {} rows: max |diff| {max_diff:e} (relative to max(1, |exact|) {max_rel:e}), bit-identical {:.2} %; {trees} of {} trees from tables, {values} values",
        exact.len() / (width + 1),
        100.0 * same as f64 / exact.len() as f64,
        model.forest.num_trees()
    );
    assert!(
        max_rel <= 1e-6,
        "{what}: max |diff| {max_diff}, relative {max_rel}"
    );
    assert_eq!(trees, model.forest.num_trees(), "{what}: every tree fast");
    fast
}

/// Compares with XGBoost's: max |diff| per element, share bit-identical;
/// and every row sums to its margin.
fn assert_parity(
    what: &str,
    model: &Model,
    features: &[f32],
    got: &[f32],
    want: &[f32],
) -> (f32, f64) {
    assert_eq!(got.len(), want.len(), "{what}: one value per element");
    let mut max_diff = 0.0f32;
    let mut exact = 0usize;
    for (g, w) in got.iter().zip(want) {
        max_diff = max_diff.max((g - w).abs());
        exact += usize::from(g.to_bits() == w.to_bits());
    }
    let share = exact as f64 / got.len() as f64;
    let width = model.forest.num_features();
    let mut max_sum_diff = 0.0f64;
    for (row, c) in features.chunks(width).zip(got.chunks(width + 1)) {
        let sum: f64 = c.iter().map(|&v| f64::from(v)).sum();
        max_sum_diff = max_sum_diff.max((sum - f64::from(model.forest.margin_row(row))).abs());
    }
    println!(
        "{what}: {} elements, max |diff| {max_diff:e}, bit-identical {:.4} %, max |row sum - margin| {max_sum_diff:e}",
        got.len(),
        100.0 * share
    );
    assert!(max_diff <= 1e-5, "{what}: max |diff| {max_diff}");
    assert!(
        max_sum_diff <= 1e-4,
        "{what}: a row sums {max_sum_diff} off its margin"
    );
    (max_diff, share)
}

#[test]
fn lending_club_contributions_equal_xgboost_3_2_0() {
    let spec = Spec::load(&root().join("dataflows/lending_club.toml")).unwrap();
    let model = Model::load(&spec.model).unwrap();
    let (ids, features) = features_of(&spec, &root().join("data/lending_club.csv"));
    assert_eq!(ids.len(), 9857);
    let bytes = std::fs::read(root().join("models/lending_club.contribs.f32")).unwrap();
    let want: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let got = contributions(&model, &features);
    let (_, share) = assert_parity("lending_club", &model, &features, &got, &want);
    // Measured: 100 % (every element of every row, bias included).
    assert_eq!(share, 1.0, "bit-identical share");
    // The fast walk (a run's reasons): within 1e-6 of the exact walk, and
    // within the 1e-5 of XGBoost.
    let fast = assert_fast_equals_exact("lending_club", &model, &features);
    let (_, share) = assert_parity("lending_club (fast)", &model, &features, &fast, &want);
    assert!(share > 0.5, "bit-identical share {share}");
}

/// The velocity model's fast contributions on the real rows' features,
/// window features included (a clean-stage run makes them).
#[test]
fn velocity_model_fast_contributions_equal_the_exact_ones() {
    let spec_path = root().join("dataflows/lending_club_velocity.toml");
    let spec = Spec::load(&spec_path).unwrap();
    let model = Model::load(&spec.model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("rows.jsonl");
    run_ok(&[
        "run",
        "-q",
        "--stages",
        "clean",
        "--dataflow",
        spec_path.to_str().unwrap(),
        "--output",
        rows.to_str().unwrap(),
    ]);
    let names = spec.feature_names();
    let mut features = Vec::new();
    for line in std::fs::read_to_string(&rows).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for name in &names {
            let f = &v["features"][name.as_str()];
            features.push(f.as_f64().map_or(f32::NAN, |x| x as f32));
        }
    }
    assert_eq!(features.len(), 9857 * model.forest.num_features());
    let window = names.iter().position(|n| n == "state_apps_24h").unwrap();
    assert!(
        features
            .chunks(names.len())
            .any(|r| r[window].is_finite() && r[window] > 0.0),
        "window features are filled"
    );
    let fast = assert_fast_equals_exact("velocity", &model, &features);
    let width = model.forest.num_features();
    for (row, c) in features.chunks(width).zip(fast.chunks(width + 1)) {
        let sum: f64 = c.iter().map(|&v| f64::from(v)).sum();
        assert!((sum - f64::from(model.forest.margin_row(row))).abs() < 1e-4);
    }
}

#[test]
fn tutorial_model_contributions_equal_xgboost_1_4_2() {
    let spec = Spec::load(&root().join("dataflows/quix_fraud.toml")).unwrap();
    let model = Model::load(&spec.model).unwrap();
    let (ids, features) = features_of(&spec, &root().join("tests/fixtures/quix_rows.csv"));
    let text = std::fs::read_to_string(root().join("tests/fixtures/quix_contribs.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[1..header.len() - 1], spec.feature_names());
    let mut want = Vec::new();
    for (line, id) in lines.zip(&ids) {
        let mut fields = line.split(',');
        assert_eq!(fields.next(), Some(id.as_str()));
        want.extend(fields.map(|v| v.parse::<f32>().unwrap()));
    }
    // The fixture's rows hold unknown categories and missing values.
    assert!(features.iter().any(|f| f.is_nan()));
    let got = contributions(&model, &features);
    let (_, share) = assert_parity("quix_fraud", &model, &features, &got, &want);
    // Measured: 100 %.
    assert_eq!(share, 1.0, "bit-identical share");
    let fast = assert_fast_equals_exact("quix_fraud", &model, &features);
    assert_parity("quix_fraud (fast)", &model, &features, &fast, &want);
}

/// Every row's raw values by column name (the parser's typed values).
fn raw_values(spec: &Spec, csv: &Path) -> Vec<BTreeMap<String, Value>> {
    let text = std::fs::read(csv).unwrap();
    let mut lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header = lines.next().unwrap();
    let mut parser = Parser::new(spec, Format::Csv, Some(header), "test", 1 << 16).unwrap();
    lines
        .enumerate()
        .map(|(i, line)| {
            let record = parser
                .parse(RawRecord {
                    read_at: 0,
                    bytes: line.to_vec(),
                    origin: Origin::File {
                        path: "test".into(),
                        line: i as u64 + 2,
                    },
                })
                .unwrap();
            spec.columns
                .iter()
                .map(|c| c.name.clone())
                .zip(record.values)
                .collect()
        })
        .collect()
}

/// Grouping, on every real row and on the tutorial's: a source's
/// contribution is the f32 sum of its features' (a one-hot group's columns),
/// and its value is what the applicant wrote (null where the features cannot
/// tell: a one-hot value outside the group's list, a missing value).
#[test]
fn reasons_sum_one_hot_columns_back_to_the_column_and_name_its_value() {
    for (spec_path, csv) in [
        (EXPLAIN_SPEC, "data/lending_club.csv"),
        ("dataflows/quix_fraud.toml", "tests/fixtures/quix_rows.csv"),
    ] {
        let spec = Spec::load(&root().join(spec_path)).unwrap();
        let model = Model::load(&spec.model).unwrap();
        let sources = match Sources::of(&spec) {
            Some(s) => s,
            None => Sources::new(
                &spec,
                &loanflow::spec::Explain {
                    top: 4,
                    rows: loanflow::spec::ExplainFor::All,
                    text: Default::default(),
                },
            ),
        };
        let (_, features) = features_of(&spec, &root().join(csv));
        let raws = raw_values(&spec, &root().join(csv));
        let width = model.forest.num_features();
        let contributions = contributions(&model, &features);
        let names = spec.feature_names();
        let mut grouped = Vec::new();
        let (mut one_hot_groups, mut named, mut nulls) = (0, 0, 0);
        for ((row, c), raw) in features
            .chunks(width)
            .zip(contributions.chunks(width + 1))
            .zip(&raws)
        {
            grouped.clear();
            sources.group(row, c, &mut grouped);
            assert_eq!(grouped.len(), sources.sources().len());
            for reason in &grouped {
                let source = &sources.sources()[reason.source as usize];
                let mut sum = 0.0f32;
                for &slot in &source.slots {
                    sum += c[slot];
                }
                assert_eq!(reason.contribution.to_bits(), sum.to_bits());
                let Some(raw) = raw.get(&source.name) else {
                    continue;
                };
                let text = sources.value_text(reason);
                if source.slots.len() > 1 {
                    one_hot_groups += 1;
                    // The group's features are COLUMN__value.
                    assert!(names[source.slots[0]].starts_with(&format!("{}__", source.name)));
                }
                match (raw, reason.value) {
                    (Value::Str(s), ReasonValue::Label(_)) => {
                        assert_eq!(&text, s);
                        named += 1;
                    }
                    (Value::Int(n), ReasonValue::Int(m)) => assert_eq!(*n, m),
                    (Value::Float(x), ReasonValue::Number(y)) => assert_eq!(*x as f32, y),
                    (_, ReasonValue::Null) => {
                        nulls += 1;
                        let listed = source.labels.iter().any(|l| Value::Str(l.clone()) == *raw);
                        assert!(
                            matches!(raw, Value::Null) || !listed,
                            "{}: {raw:?} was listed, yet null",
                            source.name
                        );
                    }
                    other => panic!("{}: {other:?}", source.name),
                }
            }
        }
        println!(
            "{spec_path}: {one_hot_groups} one-hot groups, {named} values named, {nulls} null"
        );
        assert!(one_hot_groups > 0 && named > 0);
    }
}

fn run_ok(args: &[&str]) -> String {
    let out = loanflow(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stderr(&out)
}

fn lines_by_id(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_owned(), l.to_owned())
        })
        .collect()
}

/// The explain spec with `for` and `top` changed, written into `dir` (its
/// model path made absolute).
fn spec_variant(dir: &Path, rows: &str, top: usize) -> PathBuf {
    let text = std::fs::read_to_string(root().join(EXPLAIN_SPEC))
        .unwrap()
        .replace(
            "model = \"../models/lending_club.xgb.json\"",
            &format!(
                "model = {:?}",
                root()
                    .join("models/lending_club.xgb.json")
                    .display()
                    .to_string()
            ),
        )
        .replace("for = \"flagged\"", &format!("for = {rows:?}"))
        .replace("top = 4", &format!("top = {top}"));
    let path = dir.join(format!("explain_{rows}_{top}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The reasons a run wrote, checked against the contributions computed
/// here: each explained line's `reasons` are the top `top` sources, largest
/// first, equal to [`Sources::top`] on the row's fast contributions (what
/// the stream uses), each within 1e-5 of its exact (XGBoost's) grouped
/// contribution; the line without them is byte for byte the line of a run
/// without `[explain]`.
fn check_explained_run(
    out: &Path,
    plain: &BTreeMap<String, String>,
    spec: &Spec,
    all: bool,
) -> usize {
    let model = Model::load(&spec.model).unwrap();
    let sources = Sources::of(spec).unwrap();
    let (ids, features) = features_of(spec, &root().join("data/lending_club.csv"));
    let width = model.forest.num_features();
    let got = lines_by_id(out);
    assert_eq!(got.len(), plain.len());
    let (mut scratch, mut top, mut c) = (Vec::new(), Vec::new(), vec![0.0; width + 1]);
    let (mut exact, mut grouped) = (vec![0.0; width + 1], Vec::new());
    let mut explainer = Explainer::new();
    let mut explained = 0;
    for (id, row) in ids.iter().zip(features.chunks(width)) {
        let line = &got[id];
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let flagged = v["flagged"].as_bool().unwrap();
        let Some(reasons) = v.get("reasons") else {
            assert!(!flagged && !all, "{id}: no reasons");
            assert_eq!(line, &plain[id]);
            continue;
        };
        assert!(flagged || all, "{id}: reasons on an unflagged application");
        explained += 1;
        let cut = line.find(",\"reasons\":").unwrap();
        assert_eq!(format!("{}}}", &line[..cut]), plain[id], "{id}");
        model
            .forest
            .fast_contributions_with(&mut explainer, row, &mut c);
        sources.top(row, &c, &mut scratch, &mut top);
        model.forest.contributions(row, &mut exact);
        grouped.clear();
        sources.group(row, &exact, &mut grouped);
        let reasons = reasons.as_array().unwrap();
        assert_eq!(reasons.len(), sources.top.min(sources.sources().len()));
        let mut last = f64::INFINITY;
        for (r, want) in reasons.iter().zip(&top) {
            let source = &sources.sources()[want.source as usize];
            assert_eq!(r["column"], source.name.as_str());
            assert_eq!(r["text"], source.text.as_str());
            let contribution = r["contribution"].as_f64().unwrap();
            assert_eq!(contribution as f32, want.contribution, "{id}");
            let exact = grouped[want.source as usize].contribution;
            assert!(
                (want.contribution - exact).abs() <= 1e-5,
                "{id}: fast {} vs exact {exact}",
                want.contribution
            );
            assert!(contribution <= last, "{id}: not sorted");
            last = contribution;
            let value = match &r["value"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(value, sources.value_text(want), "{id}");
        }
    }
    explained
}

#[test]
fn a_run_with_explain_puts_the_top_reasons_on_flagged_applications_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).display().to_string();
    run_ok(&["run", "-q", "--output", &out("plain.jsonl")]);
    let plain = lines_by_id(Path::new(&out("plain.jsonl")));
    run_ok(&[
        "run",
        "-q",
        "--dataflow",
        EXPLAIN_SPEC,
        "--output",
        &out("flagged.jsonl"),
    ]);
    let spec = Spec::load(&root().join(EXPLAIN_SPEC)).unwrap();
    let explained = check_explained_run(Path::new(&out("flagged.jsonl")), &plain, &spec, false);
    let flagged = plain
        .values()
        .filter(|l| l.contains("\"flagged\":true"))
        .count();
    assert_eq!((explained, flagged), (94, 94));
    // Every stage layout writes the same bytes: two workers, and a chain of
    // a clean stage and a predict stage reading its feature rows.
    run_ok(&[
        "run",
        "-q",
        "-w",
        "2",
        "--dataflow",
        EXPLAIN_SPEC,
        "--output",
        &out("w2.jsonl"),
    ]);
    run_ok(&[
        "run",
        "-q",
        "--stages",
        "clean",
        "--dataflow",
        EXPLAIN_SPEC,
        "--output",
        &out("rows.jsonl"),
    ]);
    run_ok(&[
        "run",
        "-q",
        "--stages",
        "predict",
        "--dataflow",
        EXPLAIN_SPEC,
        "--input",
        &out("rows.jsonl"),
        "--output",
        &out("chain.jsonl"),
    ]);
    // A 2 × 2 cluster (its parts together) and a paced replay.
    run_ok(&[
        "cluster",
        "--processes",
        "2",
        "-w",
        "2",
        "-q",
        "--dataflow",
        EXPLAIN_SPEC,
        "--output",
        &out("cluster.jsonl"),
    ]);
    let mut cluster = BTreeMap::new();
    for p in 0..2 {
        let part = dir
            .path()
            .join("cluster.jsonl.d")
            .join(format!("part-{p:05}.jsonl"));
        let lines = lines_by_id(&part);
        assert!(!lines.is_empty(), "process {p} wrote nothing");
        cluster.extend(lines);
    }
    run_ok(&[
        "replay",
        "data/lending_club.csv",
        "--speed",
        "20000000",
        "-q",
        "--dataflow",
        EXPLAIN_SPEC,
        "--output",
        &out("replay.jsonl"),
    ]);
    let one = lines_by_id(Path::new(&out("flagged.jsonl")));
    assert_eq!(lines_by_id(Path::new(&out("w2.jsonl"))), one);
    assert_eq!(lines_by_id(Path::new(&out("chain.jsonl"))), one);
    assert_eq!(cluster, one, "a 2 × 2 cluster");
    assert_eq!(
        lines_by_id(Path::new(&out("replay.jsonl"))),
        one,
        "a replay"
    );
}

#[test]
fn for_all_explains_every_application_with_its_top_n() {
    let dir = tempfile::tempdir().unwrap();
    let plain_out = dir.path().join("plain.jsonl");
    run_ok(&["run", "-q", "--output", plain_out.to_str().unwrap()]);
    let plain = lines_by_id(&plain_out);
    let spec_path = spec_variant(dir.path(), "all", 2);
    let out = dir.path().join("all.jsonl");
    run_ok(&[
        "run",
        "-q",
        "--dataflow",
        spec_path.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let spec = Spec::load(&spec_path).unwrap();
    assert_eq!(check_explained_run(&out, &plain, &spec, true), 9857);
}

#[test]
fn a_kafka_run_writes_the_reasons_a_file_run_writes() {
    let broker = Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "4");
    let dir = tempfile::tempdir().unwrap();
    let file_out = dir.path().join("file.jsonl");
    run_ok(&[
        "run",
        "-q",
        "--dataflow",
        EXPLAIN_SPEC,
        "--output",
        file_out.to_str().unwrap(),
    ]);
    run_ok(&[
        "run",
        "-q",
        "-w",
        "2",
        "--dataflow",
        EXPLAIN_SPEC,
        "--brokers",
        &broker.address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
        "--until-caught-up",
    ]);
    let file = lines_by_id(&file_out);
    let topic: BTreeMap<String, String> = broker
        .read_all("scored")
        .into_iter()
        .map(|r| (r.key.unwrap(), String::from_utf8(r.value).unwrap()))
        .collect();
    assert_eq!(topic.len(), 9857);
    assert_eq!(
        topic.values().filter(|l| l.contains("\"reasons\"")).count(),
        94
    );
    assert_eq!(topic, file);
}

#[test]
fn explain_prints_every_column_and_sums_to_the_margin() {
    let out = loanflow(&["explain", "--dataflow", EXPLAIN_SPEC, "--id", "lc-000048"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    println!("{table}");
    let spec = Spec::load(&root().join(EXPLAIN_SPEC)).unwrap();
    let model = Model::load(&spec.model).unwrap();
    let sources = Sources::of(&spec).unwrap();
    let (ids, features) = features_of(&spec, &root().join("data/lending_club.csv"));
    let width = model.forest.num_features();
    let at = ids.iter().position(|i| i == "lc-000048").unwrap();
    let row = &features[at * width..(at + 1) * width];
    let mut c = vec![0.0; width + 1];
    model.forest.contributions(row, &mut c);
    let mut all = Vec::new();
    sources.group(row, &c, &mut all);
    let lines: Vec<&str> = table.lines().collect();
    let score = model.forest.predict_row(row);
    assert!(
        lines[0].starts_with(&format!("lc-000048: score {score} (flagged")),
        "{}",
        lines[0]
    );
    // Header, base value, one line per source, sum.
    assert_eq!(lines.len(), 1 + 1 + 1 + sources.sources().len() + 1);
    let number = |line: &str, at: usize| -> f64 {
        line.split_whitespace().nth(at).unwrap().parse().unwrap()
    };
    assert!((number(lines[2], 2) - f64::from(c[width])).abs() < 1e-7);
    let mut last = f64::INFINITY;
    for (line, reason) in lines[3..lines.len() - 1].iter().zip({
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
        sorted
    }) {
        let source = &sources.sources()[reason.source as usize];
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], source.name);
        assert_eq!(fields[1], sources.value_text(&reason));
        let shown = number(line, 2);
        assert!(
            (shown - f64::from(reason.contribution)).abs() < 1e-7,
            "{line}"
        );
        assert!(shown <= last);
        last = shown;
        assert!(line.ends_with(&source.text), "{line}");
    }
    let sum_line = lines[lines.len() - 1];
    let margin = model.forest.margin_row(row);
    assert!(
        sum_line.contains(&format!("= margin {margin:+.7}")),
        "{sum_line}"
    );
    assert!(
        (number(sum_line, 1) - f64::from(margin)).abs() < 1e-5,
        "{sum_line}"
    );
    assert!(sum_line.contains("logit(score)"));
    assert!(
        sources.value_text(
            &all[sources
                .sources()
                .iter()
                .position(|s| s.name == "sub_grade")
                .unwrap()]
        ) == "C5"
    );

    let out = loanflow(&["explain", "--id", "no-such-id"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no application with id `no-such-id` in data/lending_club.csv"),
        "{err}"
    );
}
