//! `loanflow run` and `loanflow generate` end to end, as a user runs them:
//! the binary on real files, checked against XGBoost's own scores.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{expected_scores, lines, loanflow, predictions, root, sorted_lines, stderr};
use loanflow::core::record::parse_time;
use serde_json::Value;

fn read_jsonl(path: &Path) -> Vec<Value> {
    lines(path)
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Runs the default job with `workers` into a temp dir; returns predictions by id.
fn run_default(dir: &Path, workers: usize) -> BTreeMap<String, String> {
    let output = dir.join(format!("w{workers}.jsonl"));
    let out = loanflow(&[
        "run",
        "-w",
        &workers.to_string(),
        "--output",
        output.to_str().unwrap(),
        "--dead-letters",
        dir.join(format!("dl{workers}.jsonl")).to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("9857 records"),
        "summary: {}",
        stderr(&out)
    );
    predictions(lines(&output))
}

#[test]
fn default_job_scores_every_row_like_xgboost_on_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected_scores();
    let one = run_default(dir.path(), 1);
    assert_eq!(one.len(), 9857);
    for (id, line) in &one {
        let v: Value = serde_json::from_str(line).unwrap();
        let score = v["score"].as_f64().unwrap();
        assert!(
            (score - expected[id]).abs() <= 1e-6,
            "{id}: {score} vs {}",
            expected[id]
        );
        assert_eq!(v["flagged"].as_bool().unwrap(), score >= 0.5);
        assert!(v["model"]
            .as_str()
            .unwrap()
            .starts_with("lending_club.xgb@sha256:"));
        assert!(v["applied_at"].as_str().unwrap().starts_with("2016-0"));
    }
    assert!(
        !dir.path().join("dl1.jsonl").exists(),
        "no dead letters on clean data"
    );
    for workers in [2, 4] {
        assert_eq!(
            run_default(dir.path(), workers),
            one,
            "-w {workers} differs from -w 1"
        );
    }
}

/// Real rows with malformed lines mixed in: each bad line must land in the
/// dead-letter file with a reason and its line number; every good row scored.
#[test]
fn malformed_lines_become_dead_letters_and_the_rest_is_scored() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::read(root().join("data/lending_club.csv")).unwrap();
    let mut lines: Vec<Vec<u8>> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let good_line = String::from_utf8(lines[1].clone()).unwrap();
    let with = |from: &str, to: &str| good_line.replacen(from, to, 1).into_bytes();
    let mut huge = good_line.clone().into_bytes();
    huge.extend(std::iter::repeat_n(b'x', 1 << 20));
    let mut not_utf8 = good_line.clone().into_bytes();
    not_utf8[20] = 0xff;
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (with("lc-000001,", "\"lc-bad-quote,"), "quote"),
        (
            with(",13.99,", ",thirteen,"),
            "`thirteen` is not a finite number",
        ),
        (with(",C4,", ",Z9,"), "unknown level `Z9`"),
        (Vec::new(), "empty record"),
        (huge, "over the limit"),
        (not_utf8, "not UTF-8"),
        (with(",16100,", ",16100,extra,"), "expected 25 fields"),
    ];
    // Insert each bad line after a different good one; remember its line number.
    let mut want = Vec::new();
    for (k, (bytes, reason)) in bad.into_iter().enumerate() {
        let at = 1 + (k + 1) * 1000;
        lines.insert(at, bytes);
        want.push((at as u64 + 1, reason));
    }
    let input = dir.path().join("mixed.csv");
    std::fs::write(&input, lines.join(&b'\n')).unwrap();
    let (output, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    for workers in ["1", "3"] {
        let out = loanflow(&[
            "run",
            "-w",
            workers,
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--dead-letters",
            dead.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let scored = read_jsonl(&output);
        assert_eq!(scored.len(), 9857, "every good row scored (-w {workers})");
        let dead_letters = read_jsonl(&dead);
        assert_eq!(dead_letters.len(), want.len(), "{dead_letters:#?}");
        for (line, reason) in &want {
            let d = dead_letters
                .iter()
                .find(|d| d["line"].as_u64() == Some(*line))
                .unwrap_or_else(|| panic!("no dead letter for line {line}: {dead_letters:#?}"));
            assert!(
                d["reason"].as_str().unwrap().contains(reason),
                "line {line}: {d}"
            );
            assert_eq!(d["file"].as_str().unwrap(), input.to_str().unwrap());
            assert!(d["raw"].is_string() || d["raw_base64"].is_string());
        }
        let clean = dead_letters.iter().find(|d| d["stage"] == "clean").unwrap();
        assert!(
            clean["raw"].as_str().unwrap().contains(",Z9,"),
            "raw input kept: {clean}"
        );
    }
}

#[test]
fn jsonl_input_scores_like_csv() {
    let dir = tempfile::tempdir().unwrap();
    let gen_csv = dir.path().join("g.csv");
    let gen_jsonl = dir.path().join("g.jsonl");
    for path in [&gen_csv, &gen_jsonl] {
        let out = loanflow(&[
            "generate",
            "--rows",
            "3000",
            "--seed",
            "11",
            "--output",
            path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mut results = Vec::new();
    for input in [&gen_csv, &gen_jsonl] {
        let output = input.with_extension("out.jsonl");
        let out = loanflow(&[
            "run",
            "-w",
            "2",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let lines = sorted_lines(&output);
        assert_eq!(lines.len(), 3000);
        results.push(lines);
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn generate_is_deterministic_and_resamples_real_rows() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|n| dir.path().join(format!("{n}.csv")))
        .collect();
    for (path, seed) in paths.iter().zip(["5", "5", "6"]) {
        let out = loanflow(&[
            "generate",
            "--rows",
            "2000",
            "--seed",
            seed,
            "--output",
            path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let a = std::fs::read_to_string(&paths[0]).unwrap();
    assert_eq!(
        a,
        std::fs::read_to_string(&paths[1]).unwrap(),
        "same seed, same stream"
    );
    assert_ne!(
        a,
        std::fs::read_to_string(&paths[2]).unwrap(),
        "another seed, another stream"
    );

    let real = std::fs::read_to_string(root().join("data/lending_club.csv")).unwrap();
    let strip = |line: &str| line.splitn(3, ',').nth(2).unwrap().to_owned();
    let real_rows: std::collections::HashSet<String> = real.lines().skip(1).map(strip).collect();
    let last_real = real
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().to_owned())
        .max()
        .unwrap();
    let mut previous = last_real.clone();
    for line in a.lines().skip(1) {
        assert!(real_rows.contains(&strip(line)), "not a real row: {line}");
        let at = line.split(',').nth(1).unwrap().to_owned();
        assert!(at >= previous, "applied_at goes back in time: {line}");
        previous = at;
    }
    assert!(previous > last_real, "time continues after the real data");
}

/// `--gap-scale` multiplies each resampled gap (the same draws: the same
/// rows, their gaps halved), and a stream that would run past the last time
/// a nanosecond clock holds is refused before a row is written, never
/// wrapped around to 1677 (10 M rows at the real rate once were).
#[test]
fn generate_scales_gaps_and_refuses_a_stream_past_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let times = |scale: &str| -> Vec<i64> {
        let path = dir.path().join(format!("s{scale}.csv"));
        let out = loanflow(&[
            "generate",
            "--rows",
            "500",
            "--seed",
            "3",
            "--gap-scale",
            scale,
            "--output",
            path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| parse_time(l.split(',').nth(1).unwrap()).unwrap())
            .collect()
    };
    let (real, half) = (times("1"), times("0.5"));
    let gaps = |t: &[i64]| t.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>();
    let halved: Vec<i64> = gaps(&real)
        .iter()
        .map(|g| (*g as f64 * 0.5).round() as i64)
        .collect();
    // Each gap is one source gap, scaled and rounded to the nanosecond.
    assert_eq!(gaps(&half).len(), halved.len());
    for (got, want) in gaps(&half).iter().zip(&halved) {
        assert!((got - want).abs() <= 1, "gap {got} ns, want {want} ns");
    }

    let path = dir.path().join("far.csv");
    let out = loanflow(&[
        "generate",
        "--rows",
        "10000000",
        "--output",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("past 2262-04-11") && err.contains("--gap-scale 0.88"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("far")),
        "nothing written"
    );
}

#[test]
fn setup_errors_are_one_clear_line_and_a_failure_exit() {
    let dir = tempfile::tempdir().unwrap();
    let bad_spec = dir.path().join("bad.toml");
    std::fs::write(&bad_spec, "name = [").unwrap();
    // A spec whose model does not fit: the quix model for lending_club features.
    let mismatched = dir.path().join("mismatch.toml");
    let text = std::fs::read_to_string(root().join("dataflows/lending_club.toml")).unwrap();
    let quix_model = root().join("../shared/reference/quix_fraud_model.json");
    std::fs::write(
        &mismatched,
        text.replace(
            "model = \"../models/lending_club.xgb.json\"",
            &format!("model = {:?}", quix_model.to_str().unwrap()),
        ),
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "--input", "no/such/file.csv"],
            "cannot read input no/such/file.csv",
        ),
        (
            vec!["run", "--dataflow", "no/such/spec.toml"],
            "cannot read dataflow spec no/such/spec.toml",
        ),
        (
            vec!["run", "--dataflow", bad_spec.to_str().unwrap()],
            "is not valid TOML",
        ),
        (
            vec!["run", "--dataflow", mismatched.to_str().unwrap()],
            "does not fit dataflow `lending_club`",
        ),
        (
            vec!["run", "--model", "no/such/model.json"],
            "cannot read model no/such/model.json",
        ),
        (
            vec!["run", "--input", "Cargo.toml"],
            "cannot tell the format",
        ),
        (
            vec!["run", "--input", "data/README.md", "--format", "csv"],
            "the CSV header has no column",
        ),
    ];
    for (args, message) in cases {
        let out = loanflow(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line, got {err}"
        );
        assert!(
            err.starts_with("loanflow: error: ") && err.contains(message),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // A bad flag is clap's usage error (exit 2), not a panic.
    let out = loanflow(&["run", "-w", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn help_has_examples() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["generate", "--help"],
    ] {
        let out = loanflow(&args);
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Examples:"),
            "{args:?}"
        );
    }
}
