//! Replaying history: into a topic paced by event time, bounded replays from
//! Kafka by event time, and file replays straight into the pipeline.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{loanflow, root, sorted_lines, stderr, Broker};

const FEB: &str = "time:2016-02-01T00:00:00Z";
const MAR: &str = "time:2016-03-01T00:00:00Z";

/// Ids of the shipped applications whose applied_at is in [from, until).
fn ids_between(from: &str, until: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("data/lending_club.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut fields = l.split(',');
            let (id, at) = (fields.next().unwrap(), fields.next().unwrap());
            (at >= from && at < until).then(|| id.to_owned())
        })
        .collect()
}

fn ids_of(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn bounded_replay_from_kafka_is_exact_deterministic_and_leaves_the_live_group_alone() {
    let broker = Broker::start();
    let out = loanflow(&[
        "replay",
        "data/lending_club.csv",
        "--brokers",
        &broker.address,
        "--topic",
        "loans",
        "--partitions",
        "4",
        "--speed",
        "max",
        "-q",
    ]);
    assert!(
        out.status.success(),
        "replay into a topic: {}",
        stderr(&out)
    );
    assert_eq!(broker.read_all("loans").len(), 9857);

    // A live pipeline has read half of history and committed its offsets.
    let out = loanflow(&[
        "run",
        "--brokers",
        &broker.address,
        "--input-topic",
        "loans",
        "--output-topic",
        "live",
        "--partitions",
        "4",
        "--group",
        "live",
        "--until",
        MAR,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let live = broker.committed("live", "loans");
    assert!(live.iter().all(|&o| o > 0));

    let dir = tempfile::tempdir().unwrap();
    let want = ids_between("2016-02-01T00:00:00Z", "2016-03-01T00:00:00Z");
    let mut outputs = Vec::new();
    for workers in ["1", "2"] {
        let output = dir.path().join(format!("feb-{workers}.jsonl"));
        let out = loanflow(&[
            "run",
            "-w",
            workers,
            "--brokers",
            &broker.address,
            "--input-topic",
            "loans",
            "--from",
            FEB,
            "--until",
            MAR,
            "--output",
            output.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "bounded replay -w {workers}: {}",
            stderr(&out)
        );
        let lines = sorted_lines(&output);
        assert_eq!(
            ids_of(&lines),
            want,
            "exactly February's applications (-w {workers})"
        );
        assert_eq!(lines.len(), want.len(), "each once");
        outputs.push(lines);
    }
    assert_eq!(
        outputs[0], outputs[1],
        "byte-identical after sorting, -w 1 vs -w 2"
    );
    assert_eq!(
        broker.committed("live", "loans"),
        live,
        "the live group's offsets did not move"
    );
}

#[test]
fn from_before_the_first_record_is_everything_and_after_the_last_is_nothing() {
    let broker = Broker::start();
    let out = loanflow(&[
        "ingest",
        "--brokers",
        &broker.address,
        "--topic",
        "loans",
        "--partitions",
        "2",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    for (from, expected) in [
        ("time:2015-01-01T00:00:00Z", 9857),
        ("time:2017-01-01T00:00:00Z", 0),
    ] {
        let output = dir.path().join("out.jsonl");
        let started = Instant::now();
        let out = loanflow(&[
            "run",
            "--brokers",
            &broker.address,
            "--input-topic",
            "loans",
            "--from",
            from,
            "--until",
            "end",
            "--output",
            output.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "--from {from}: {}", stderr(&out));
        assert!(started.elapsed() < Duration::from_secs(60), "no hang");
        assert_eq!(sorted_lines(&output).len(), expected, "--from {from}");
    }
}

#[test]
fn file_replay_into_the_pipeline_is_paced_by_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("slice.jsonl");
    // Two days of history at one day per second: about two seconds.
    let (from, until) = ("2016-02-10T00:00:00Z", "2016-02-12T00:00:00Z");
    let started = Instant::now();
    let out = loanflow(&[
        "replay",
        "data/lending_club.csv",
        "--speed",
        "86400",
        "--from",
        &format!("time:{from}"),
        "--until",
        &format!("time:{until}"),
        "--output",
        output.to_str().unwrap(),
        "-q",
    ]);
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ids_of(&sorted_lines(&output)), ids_between(from, until));
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
        "two days at 86400× took {elapsed:?}"
    );
    // At max speed the same slice is not held back.
    let started = Instant::now();
    let out = loanflow(&[
        "replay",
        "data/lending_club.csv",
        "--speed",
        "max",
        "--from",
        &format!("time:{from}"),
        "--until",
        &format!("time:{until}"),
        "--output",
        output.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "max speed took {:?}",
        started.elapsed()
    );
}

#[test]
fn stamped_outputs_carry_event_time_and_latency_and_differ_only_in_latency() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for workers in ["1", "2"] {
        let output = dir.path().join(format!("stamped-{workers}.jsonl"));
        let out = loanflow(&[
            "replay",
            "data/lending_club.csv",
            "--speed",
            "max",
            "--stamp",
            "-w",
            workers,
            "--output",
            output.to_str().unwrap(),
            "-q",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let mut without_latency = Vec::new();
        for line in sorted_lines(&output) {
            let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["event_time"], v["applied_at"], "{line}");
            let latency = v["latency_ms"]
                .as_f64()
                .unwrap_or_else(|| panic!("no latency: {line}"));
            assert!((0.0..60_000.0).contains(&latency), "{line}");
            v.as_object_mut().unwrap().remove("latency_ms");
            without_latency.push(v.to_string());
        }
        assert_eq!(without_latency.len(), 9857);
        runs.push(without_latency);
    }
    assert_eq!(runs[0], runs[1], "identical but for the wall-clock field");
}
