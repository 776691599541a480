//! Crash tests: a Kafka → Kafka run SIGKILLed at random moments and
//! restarted each time, then run to the end; `loanflow verify` must find
//! every input exactly once among the committed records (`--exactly-once`),
//! or at least once with every duplicate byte-identical (the default).
//!
//! The input arrives while the runs are killed (`loanflow ingest --rate`,
//! spread over 8 s, or 2 s per kill if longer): a live stream, so no run can finish before its
//! kill and every kill lands mid-stream (asserted); each restarted run is
//! killed while it catches up on what arrived while it was down.
//!
//! CI runs the short form. The full form of issue 7:
//! `LOANFLOW_CRASH_RECORDS=1000000 LOANFLOW_CRASH_KILLS=10 cargo test --profile release-thin --test crash -- --nocapture`
//! (`LOANFLOW_CRASH_RATE` sets the input's records/s).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{generate, kafka_run_args, loanflow, loanflow_command, stderr, Broker};
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// The dataflow with window features.
const VELOCITY: &str = "dataflows/lending_club_velocity.toml";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Generates the stream and ingests it live, kills `kills` runs at random
/// moments meanwhile, finishes with `--until-caught-up`, returns verify's
/// report.
fn crash_and_verify(exactly_once: bool, seed: u64) -> Value {
    crash_and_verify_dataflow(exactly_once, seed, None)
}

/// [`crash_and_verify`] with another dataflow (`None`: the default).
fn crash_and_verify_dataflow(exactly_once: bool, seed: u64, dataflow: Option<&str>) -> Value {
    let records = env_or("LOANFLOW_CRASH_RECORDS", 40_000);
    let kills = env_or("LOANFLOW_CRASH_KILLS", 3);
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(records, seed, dir.path());
    // The topic first (4 partitions): this broker creates a topic it is
    // merely asked about, with its own default partition count.
    common::ingest(&broker, "loans", "tests/fixtures/empty.jsonl", "4");
    // Long enough for every kill cycle (a pause, then part of the backlog).
    // A window run restarts slower (it reads its history first) and then
    // catches up in bursts (answers wait for the watermark), so its input
    // comes over twice as long: the third kill must still find some to come.
    let seconds = 8.max(2 * kills) * if dataflow.is_some() { 2 } else { 1 };
    let rate = env_or("LOANFLOW_CRASH_RATE", (records / seconds).max(1)).to_string();
    let ingest = loanflow_command(&[
        "ingest",
        "--brokers",
        &broker.address,
        "--topic",
        "loans",
        "--input",
        stream.to_str().unwrap(),
        "--partitions",
        "4",
        "--rate",
        &rate,
        "-q",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut args = kafka_run_args(&broker, &[]);
    if let Some(dataflow) = dataflow {
        args.extend(["--dataflow", dataflow]);
    }
    if exactly_once {
        args.push("--exactly-once");
    }
    // Kill moments. The input arrives at `rate` while runs are killed and
    // restarted after a pause, as a supervisor would: each run starts with a
    // backlog and is killed once it has committed a random part of it (so
    // mid catch-up, when outputs are in flight), plus a few milliseconds (so
    // anywhere in the commit cycle).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let group = match dataflow {
        Some(path) => format!(
            "loanflow.{}",
            std::path::Path::new(path)
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
        ),
        None => "loanflow.lending_club".to_owned(),
    };
    let watcher = broker.commit_watcher(&group, "loans");
    let started = Instant::now();
    let rate_per_s: f64 = rate.parse().unwrap();
    for kill in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..600)));
        let before = watcher.total();
        let arrived = ((started.elapsed().as_secs_f64() * rate_per_s) as i64).min(records as i64);
        let backlog = (arrived - before).max(1);
        let target = before + (backlog as f64 * rng.gen_range(0.2..0.8)) as i64;
        let log = dir.path().join(format!("run-{kill}.log"));
        let mut child = loanflow_command(&args)
            .env("RUST_LOG", "loanflow=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let reached = watcher.wait_for(target);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..5)));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let after = watcher.total();
        eprintln!(
            "kill {}: SIGKILL at {after} of {records} committed (started at {before} with about {backlog} waiting, aimed past {target}, reached: {reached}, was running: {running})",
            kill + 1
        );
        if !(reached && running && after < records as i64) {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "kill {} did not land mid-stream: {after} of {records} committed, aimed past {target}, reached: {reached}, running: {running}; the run's log ends:\n{}",
                kill + 1,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    let ingested = ingest.wait_with_output().unwrap();
    assert!(ingested.status.success(), "ingest: {}", stderr(&ingested));
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
    if let Some(dataflow) = dataflow {
        extra.extend(["--dataflow", dataflow]);
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

/// The same with window features (issue 15): every restart first reads the
/// history before its committed offsets, so its windows are whole; nothing
/// is lost or doubled.
#[test]
fn exactly_once_window_run_survives_sigkills_with_nothing_lost_or_doubled() {
    let report = crash_and_verify_dataflow(true, 13, Some(VELOCITY));
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert_eq!(report["unexpected"], 0, "{report}");
    assert_eq!(report["untracked"], 0, "{report}");
    assert!(report["transactions"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["aborted_differing"], 0, "{report}");
}

/// At least once with window features: the windows a restart rebuilds are
/// the ones the killed run had, so every duplicate is byte-identical.
#[test]
fn at_least_once_window_run_survives_sigkills_with_identical_duplicates_only() {
    let report = crash_and_verify_dataflow(false, 14, Some(VELOCITY));
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["differing_duplicates"], 0, "{report}");
    assert_eq!(report["unexpected"], 0, "{report}");
}
