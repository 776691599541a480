//! Crash tests: a Kafka → Kafka run SIGKILLed at random moments and
//! restarted each time, then run to the end; `loanflow verify` must find
//! every input exactly once among the committed records (`--exactly-once`),
//! or at least once with every duplicate byte-identical (the default).
//!
//! CI runs the short form. The full form of issue 7:
//! `LOANFLOW_CRASH_RECORDS=1000000 LOANFLOW_CRASH_KILLS=10 cargo test --release --test crash -- --nocapture`

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ingest_generated, kafka_run_args, loanflow, loanflow_command, stderr, Broker};
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Generates and ingests the stream, kills `kills` live runs at random
/// moments, finishes with `--until-caught-up`, returns verify's report.
fn crash_and_verify(exactly_once: bool, seed: u64) -> Value {
    let records = env_or("LOANFLOW_CRASH_RECORDS", 40_000);
    let kills = env_or("LOANFLOW_CRASH_KILLS", 3);
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    ingest_generated(&broker, "loans", records, seed, dir.path());
    let mut args = kafka_run_args(&broker, &[]);
    if exactly_once {
        args.push("--exactly-once");
    }
    // Kill moments: each run is killed once it has committed a random further
    // share of the stream (so every kill lands mid-stream, whatever the
    // machine's speed), plus a random few milliseconds (so it lands anywhere
    // in the commit cycle).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let share = 0.8 / kills.max(1) as f64;
    let group = "loanflow.lending_club";
    for kill in 0..kills {
        let before: i64 = broker
            .committed(group, "loans")
            .iter()
            .filter(|o| **o > 0)
            .sum();
        let target = before + (records as f64 * rng.gen_range(share / 4.0..share)) as i64;
        let mut child = loanflow_command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reached = broker.wait_for_commits(group, "loans", |o| {
            o.iter().filter(|o| **o > 0).sum::<i64>() >= target
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..50)));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let after: i64 = broker
            .committed(group, "loans")
            .iter()
            .filter(|o| **o > 0)
            .sum();
        eprintln!(
            "kill {}: SIGKILL at {after} of {records} committed (aimed past {target}, reached: {reached}, was running: {running})",
            kill + 1
        );
    }
    let mut until = args.clone();
    until.push("--until-caught-up");
    let started = Instant::now();
    let out = loanflow(&until);
    assert!(out.status.success(), "final run: {}", stderr(&out));
    eprintln!("final run took {:?}", started.elapsed());

    let report = dir.path().join("verify.json");
    let mut extra = vec!["--json", report.to_str().unwrap()];
    if exactly_once {
        extra.push("--exactly-once");
    }
    common::verify(&broker, &extra);
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["inputs"], records, "{report}");
    report
}

#[test]
fn exactly_once_survives_sigkills_with_nothing_lost_or_doubled() {
    let report = crash_and_verify(true, 11);
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert_eq!(report["unexpected"], 0, "{report}");
    // Every committed record was written in a transaction.
    assert_eq!(report["untracked"], 0, "{report}");
    assert!(report["transactions"].as_u64().unwrap() > 0, "{report}");
    // Aborted copies (delivered by this broker anyway) equal the committed ones.
    assert_eq!(report["aborted_differing"], 0, "{report}");
}

#[test]
fn at_least_once_survives_sigkills_with_identical_duplicates_only() {
    let report = crash_and_verify(false, 12);
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["differing_duplicates"], 0, "{report}");
    assert_eq!(report["unexpected"], 0, "{report}");
    assert_eq!(
        report["aborted"], 0,
        "no transactions in this mode: {report}"
    );
}
