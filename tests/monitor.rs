//! The model monitor (`run --monitor`): every window it emits is recomputed
//! here by a brute-force loop over the run's own scored output, the
//! features `loanflow features` computes, and the dead letters, and must
//! match (counts exactly, PSI and means to 1e-9) for -w 1 and -w 2, file and
//! Kafka; a generated stream that shifts at a known date is caught; and
//! `loanflow monitor FILE` prints the table with the drift rows marked.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use common::{ingest, kafka_run_args, lines, loanflow, root, stderr, Broker};
use serde_json::Value;

const WEEK_NS: i64 = 7 * 86_400_000_000_000;
/// A window start (a Thursday, as windows align to the Unix epoch).
const SHIFT: &str = "2016-06-16T00:00:00Z";

fn ns(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

/// A generated stream of `rows` that shifts at [`SHIFT`], in `dir`.
fn drifting(dir: &Path, rows: u64) -> String {
    let path = dir.join("drift.csv");
    let out = loanflow(&[
        "generate",
        "--rows",
        &rows.to_string(),
        "--seed",
        "11",
        "--shift-at",
        SHIFT,
        "--output",
        path.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success(), "generate: {}", stderr(&out));
    path.to_str().unwrap().to_owned()
}

/// One histogram of the reference.
struct RefBins {
    edges: Vec<f32>,
    proportions: Vec<f64>,
    missing: f64,
}

fn ref_bins(v: &Value) -> RefBins {
    RefBins {
        edges: v["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_f64().unwrap() as f32)
            .collect(),
        proportions: v["proportions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_f64().unwrap())
            .collect(),
        missing: v["missing"].as_f64().unwrap(),
    }
}

/// PSI by hand: shares floored at 1e-4 on both sides.
fn psi_by_hand(bins: &RefBins, values: &[f32]) -> f64 {
    let mut counts = vec![0u64; bins.edges.len() + 1];
    let mut missing = 0u64;
    for v in values {
        if v.is_nan() {
            missing += 1;
        } else {
            counts[bins.edges.iter().filter(|e| **e <= *v).count()] += 1;
        }
    }
    let n = values.len() as f64;
    let term = |c: u64, e: f64| {
        let a = (c as f64 / n).max(1e-4);
        let e = e.max(1e-4);
        (a - e) * (a / e).ln()
    };
    counts
        .iter()
        .zip(&bins.proportions)
        .map(|(c, e)| term(*c, *e))
        .sum::<f64>()
        + term(missing, bins.missing)
}

/// Every model feature of every application of `input`, by id, from
/// `loanflow features` (the clean stage's exact f32 values).
fn features_of(input: &str, dir: &Path) -> (Vec<String>, HashMap<String, Vec<f32>>) {
    let out_path = dir.join("features.csv");
    let out = loanflow(&[
        "features",
        "--input",
        input,
        "--output",
        out_path.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success(), "features: {}", stderr(&out));
    let mut reader = csv::Reader::from_path(&out_path).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    // id, event time, label, then the features.
    let names = header[3..].to_vec();
    let mut rows = HashMap::new();
    for r in reader.records() {
        let r = r.unwrap();
        rows.insert(r[0].to_owned(), common::backfill_features(&r));
    }
    (names, rows)
}

/// One window as the brute force sees it.
#[derive(Default)]
struct Window {
    groups: BTreeMap<String, (u64, u64, f64, Vec<u64>)>,
    scores: Vec<f32>,
    features: Vec<Vec<f32>>,
    dead: BTreeMap<(String, String), u64>,
}

/// The windows recomputed from the scored outputs (JSON objects), the
/// features by id and the dead letters with their windows' times.
fn brute_force(
    scored: &[Value],
    features: &HashMap<String, Vec<f32>>,
    dead: &[(i64, String, String)],
) -> BTreeMap<i64, Window> {
    let edges: Vec<f32> = (1..10).map(|i| i as f32 / 10.0).collect();
    let mut windows: BTreeMap<i64, Window> = BTreeMap::new();
    for s in scored {
        let t = ns(s["applied_at"].as_str().unwrap());
        let w = windows.entry(t - t.rem_euclid(WEEK_NS)).or_default();
        let score = s["score"].as_f64().unwrap() as f32;
        let flagged = s["flagged"].as_bool().unwrap();
        for g in [
            "all".to_owned(),
            format!("sub_grade={}", s["sub_grade"].as_str().unwrap()),
        ] {
            let e = w.groups.entry(g).or_insert((0, 0, 0.0, vec![0; 10]));
            e.0 += 1;
            e.1 += u64::from(flagged);
            e.2 += f64::from(score);
            e.3[edges.iter().filter(|x| **x <= score).count()] += 1;
        }
        w.scores.push(score);
        let f = &features[s["id"].as_str().unwrap()];
        if w.features.is_empty() {
            w.features = vec![Vec::new(); f.len()];
        }
        for (i, v) in f.iter().enumerate() {
            w.features[i].push(*v);
        }
    }
    for (t, stage, reason) in dead {
        let w = windows.entry(t - t.rem_euclid(WEEK_NS)).or_default();
        *w.dead.entry((stage.clone(), reason.clone())).or_insert(0) += 1;
    }
    windows
}

/// Asserts the monitor's `reports` are the brute force's `windows`.
fn assert_matches(reports: &[Value], windows: &BTreeMap<i64, Window>, names: &[String]) {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/lending_club.reference.json")).unwrap(),
    )
    .unwrap();
    let score_bins = ref_bins(&reference["score"]);
    let feature_bins: Vec<(String, RefBins)> = reference["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), ref_bins(f)))
        .collect();
    assert_eq!(
        feature_bins
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>(),
        names
    );
    assert_eq!(reports.len(), windows.len(), "one report per window");
    for (r, (start, w)) in reports.iter().zip(windows) {
        assert_eq!(r["window_start_ms"].as_i64().unwrap(), start / 1_000_000);
        assert_eq!(
            r["window_end_ms"].as_i64().unwrap(),
            (start + WEEK_NS) / 1_000_000
        );
        let groups = r["groups"].as_array().unwrap();
        assert_eq!(groups.len(), w.groups.len(), "{}", r["window_start"]);
        for g in groups {
            let (n, flagged, sum, hist) = &w.groups[g["group"].as_str().unwrap()];
            assert_eq!(g["applications"].as_u64().unwrap(), *n);
            assert_eq!(g["flagged"].as_u64().unwrap(), *flagged);
            assert_eq!(
                g["flag_rate"].as_f64().unwrap(),
                *flagged as f64 / *n as f64
            );
            assert!((g["mean_score"].as_f64().unwrap() - sum / *n as f64).abs() < 1e-9);
            let h: Vec<u64> = g["score_histogram"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(&h, hist);
        }
        let psi = r["psi"].as_array().unwrap();
        assert_eq!(psi.len(), names.len() + 1);
        if w.scores.is_empty() {
            assert!(psi.iter().all(|c| c["psi"].is_null()));
        } else {
            assert_eq!(psi[0]["column"], "score");
            let by_hand = psi_by_hand(&score_bins, &w.scores);
            assert!((psi[0]["psi"].as_f64().unwrap() - by_hand).abs() < 1e-9);
            for (i, (name, bins)) in feature_bins.iter().enumerate() {
                assert_eq!(psi[i + 1]["column"].as_str().unwrap(), name);
                let by_hand = psi_by_hand(bins, &w.features[i]);
                let got = psi[i + 1]["psi"].as_f64().unwrap();
                assert!((got - by_hand).abs() < 1e-9, "{name}: {got} vs {by_hand}");
                let level = match by_hand {
                    p if p >= 0.25 => "act",
                    p if p >= 0.1 => "watch",
                    _ => "ok",
                };
                assert_eq!(psi[i + 1]["level"], level, "{name}");
            }
        }
        let dead: BTreeMap<(String, String), u64> = r["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    (
                        d["stage"].as_str().unwrap().to_owned(),
                        d["reason"].as_str().unwrap().to_owned(),
                    ),
                    d["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(dead, w.dead, "{}", r["window_start"]);
    }
}

fn json_lines(path: &Path) -> Vec<Value> {
    lines(path)
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

/// The input with three records spoiled: a sub_grade no spec level has (a
/// clean dead letter, counted at its own event time) and a line with too
/// few fields (an ingest dead letter, counted at the newest event time
/// read before it), mid-window, away from any window's edge.
fn spoiled(input: &str, dir: &Path) -> (String, BTreeMap<u64, (i64, String)>) {
    let text = std::fs::read_to_string(input).unwrap();
    let mut out = String::new();
    let mut newest = i64::MIN;
    let mut dead = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let mut line = line.to_owned();
        let number = i as u64 + 1;
        if i > 0 {
            let mut fields: Vec<&str> = line.split(',').collect();
            let t = ns(fields[1]);
            if i == 3001 || i == 10001 {
                assert_eq!(fields.len(), 25, "no quoted commas in the generated rows");
                fields[5] = "Z9"; // sub_grade
                line = fields.join(",");
                dead.insert(number, (t, "clean".to_owned()));
            } else if i == 7001 {
                line = "broken,line".to_owned();
                dead.insert(number, (newest, "ingest".to_owned()));
            }
            if i != 7001 {
                newest = newest.max(t);
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    let path = dir.join("spoiled.csv");
    std::fs::write(&path, out).unwrap();
    (path.to_str().unwrap().to_owned(), dead)
}

#[test]
fn windows_equal_a_brute_force_recount_on_files_for_one_and_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let clean_input = drifting(dir.path(), 12_000);
    let (input, spoilt) = spoiled(&clean_input, dir.path());
    let (names, features) = features_of(&clean_input, dir.path());
    let mut first: Option<Vec<u8>> = None;
    for workers in ["1", "2"] {
        let scored = dir.path().join(format!("scored{workers}.jsonl"));
        let dead = dir.path().join(format!("dead{workers}.jsonl"));
        let monitor = dir.path().join(format!("monitor{workers}.jsonl"));
        let out = loanflow(&[
            "run",
            "-q",
            "-w",
            workers,
            "--batch",
            "700",
            "--input",
            &input,
            "--output",
            scored.to_str().unwrap(),
            "--dead-letters",
            dead.to_str().unwrap(),
            "--monitor",
            monitor.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "run: {}", stderr(&out));
        // The dead letters' reasons, from the run's own dead-letter file.
        let dead_letters = json_lines(&dead);
        assert_eq!(dead_letters.len(), spoilt.len());
        let dead_at: Vec<(i64, String, String)> = dead_letters
            .iter()
            .map(|d| {
                let (t, stage) = &spoilt[&d["line"].as_u64().unwrap()];
                assert_eq!(d["stage"].as_str().unwrap(), stage);
                (*t, stage.clone(), d["reason"].as_str().unwrap().to_owned())
            })
            .collect();
        let windows = brute_force(&json_lines(&scored), &features, &dead_at);
        assert_matches(&json_lines(&monitor), &windows, &names);
        let bytes = std::fs::read(&monitor).unwrap();
        match &first {
            None => first = Some(bytes),
            Some(f) => assert!(f == &bytes, "-w 1 and -w 2 wrote different monitors"),
        }
    }
}

#[test]
fn windows_equal_a_brute_force_recount_on_kafka_and_the_file_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = drifting(dir.path(), 8_000);
    let (names, features) = features_of(&input, dir.path());
    let file_monitor = dir.path().join("file.jsonl");
    let out = loanflow(&[
        "run",
        "-q",
        "--input",
        &input,
        "--output",
        dir.path().join("scored.jsonl").to_str().unwrap(),
        "--monitor",
        file_monitor.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "run: {}", stderr(&out));

    let broker = Broker::start();
    ingest(&broker, "loans", &input, "4");
    let monitor = dir.path().join("kafka.jsonl");
    let mut args = kafka_run_args(&broker, &["--until-caught-up", "--group", "g1"]);
    let monitor_arg = monitor.to_str().unwrap().to_owned();
    args.extend_from_slice(&[
        "--monitor",
        &monitor_arg,
        "--monitor-topic",
        "loans.monitor",
    ]);
    let out = loanflow(&args);
    assert!(out.status.success(), "run: {}", stderr(&out));
    let scored: Vec<Value> = broker.read_all("scored").iter().map(|r| r.json()).collect();
    assert_eq!(scored.len(), 8_000);
    let windows = brute_force(&scored, &features, &[]);
    assert_matches(&json_lines(&monitor), &windows, &names);
    // 4 partitions on 2 workers, in event-time order per partition: the
    // same bytes as one worker reading the file.
    assert_eq!(
        std::fs::read(&monitor).unwrap(),
        std::fs::read(&file_monitor).unwrap()
    );
    // The topic: one message per window, keyed by its start, the same lines.
    let topic = broker.read_all("loans.monitor");
    let file_lines: Vec<String> = lines(&monitor).collect();
    assert_eq!(topic.len(), file_lines.len());
    for (m, line) in topic.iter().zip(&file_lines) {
        assert_eq!(String::from_utf8_lossy(&m.value), *line);
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            m.key.as_deref(),
            Some(v["window_start_ms"].to_string().as_str())
        );
    }
    // `loanflow monitor` reads the topic back as the file.
    let from_topic = loanflow(&[
        "monitor",
        "--brokers",
        &broker.address,
        "--monitor-topic",
        "loans.monitor",
    ]);
    assert!(from_topic.status.success(), "{}", stderr(&from_topic));
    let from_file = loanflow(&["monitor", monitor.to_str().unwrap()]);
    assert_eq!(from_topic.stdout, from_file.stdout);
}

#[test]
fn a_shift_in_the_mix_is_caught_and_the_table_marks_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = drifting(dir.path(), 20_000);
    let monitor = dir.path().join("monitor.jsonl");
    let out = loanflow(&[
        "run",
        "-q",
        "-w",
        "2",
        "--input",
        &input,
        "--output",
        dir.path().join("scored.jsonl").to_str().unwrap(),
        "--monitor",
        monitor.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "run: {}", stderr(&out));
    let shift = ns(SHIFT) / 1_000_000;
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for r in json_lines(&monitor) {
        let all = &r["groups"][0];
        assert_eq!(all["group"], "all");
        // Whole weeks only: the first and last are cut by the stream's ends.
        if all["applications"].as_u64().unwrap() < 500 {
            continue;
        }
        let psi = |c: &str| {
            r["psi"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["column"] == c)
                .unwrap()["psi"]
                .as_f64()
                .unwrap()
        };
        let rate = all["flag_rate"].as_f64().unwrap();
        if r["window_start_ms"].as_i64().unwrap() >= shift {
            assert!(psi("score") > 0.25, "{r}");
            assert!(psi("int_rate") > 0.25, "{r}");
            after.push(rate);
        } else {
            assert!(psi("score") < 0.1, "{r}");
            assert!(psi("int_rate") < 0.1, "{r}");
            before.push(rate);
        }
    }
    assert!(
        before.len() >= 8 && after.len() >= 8,
        "{before:?} {after:?}"
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&after) > 1.5 * mean(&before),
        "flag rate before {} after {}",
        mean(&before),
        mean(&after)
    );

    // A cluster of 2 processes × 2 workers and a replay write the same bytes.
    let bytes = std::fs::read(&monitor).unwrap();
    let cluster = dir.path().join("cluster.jsonl");
    let out = loanflow(&[
        "cluster",
        "--processes",
        "2",
        "--workers",
        "2",
        "-q",
        "--input",
        &input,
        "--output",
        dir.path().join("cluster/scored.jsonl").to_str().unwrap(),
        "--monitor",
        cluster.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "cluster: {}", stderr(&out));
    assert!(std::fs::read(&cluster).unwrap() == bytes, "cluster differs");
    let replay = dir.path().join("replay.jsonl");
    let out = loanflow(&[
        "replay",
        &input,
        "--speed",
        "max",
        "-q",
        "--output",
        dir.path().join("replayed.jsonl").to_str().unwrap(),
        "--monitor",
        replay.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "replay: {}", stderr(&out));
    assert!(std::fs::read(&replay).unwrap() == bytes, "replay differs");

    let table = loanflow(&["monitor", monitor.to_str().unwrap()]);
    assert!(table.status.success(), "{}", stderr(&table));
    let table = String::from_utf8(table.stdout).unwrap();
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert!(table.starts_with("window (UTC)"), "{table}");
    let marked = |day: &str| {
        rows.iter()
            .find(|r| r.starts_with(day))
            .unwrap_or_else(|| panic!("no row {day}:\n{table}"))
            .ends_with(" ACT")
    };
    assert!(marked("2016-06-16"), "{table}");
    assert!(marked("2016-07-21"), "{table}");
    assert!(!marked("2016-05-19"), "{table}");
    assert!(!table.contains('\x1b'), "no colour off a terminal");
}

#[test]
fn a_spec_without_monitor_or_a_missing_reference_is_one_line() {
    let out = loanflow(&[
        "run",
        "-q",
        "--dataflow",
        "dataflows/lending_club_velocity.toml",
        "--monitor",
        "/tmp/never.jsonl",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("[monitor]") && err.lines().count() == 1,
        "{err}"
    );
    let out = loanflow(&["monitor", "README.md"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a window report"),
        "{}",
        stderr(&out)
    );
}
