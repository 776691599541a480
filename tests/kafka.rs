//! Kafka edges against a real Kafka-API broker (Tansu, started per test by
//! scripts/broker on a free loopback port).

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    assert_each_application_scored_once, ingest, loanflow, loanflow_command, partition_counts,
    stderr, Broker,
};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

#[test]
fn topic_to_topic_scores_every_application_once_and_commits_its_offsets() {
    let broker = Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "4");

    // The ingested messages: JSON keyed by id, timestamped with applied_at.
    let input = broker.read_all("loans");
    assert_eq!(input.len(), 9857);
    let first = input
        .iter()
        .find(|r| r.key.as_deref() == Some("lc-000001"))
        .unwrap();
    assert_eq!(first.json()["applied_at"], "2016-01-01T00:11:02Z");
    assert_eq!(
        first.timestamp,
        Some(1_451_607_062_000),
        "message time = applied_at"
    );

    let out = loanflow(&[
        "run",
        "-w",
        "2",
        "--brokers",
        &broker.address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
        "--partitions",
        "4",
        "--until-caught-up",
        "--group",
        "g1",
    ]);
    assert!(out.status.success(), "run: {}", stderr(&out));

    let output = broker.read_all("scored");
    assert_each_application_scored_once(&output);
    // Each partition's committed offset is the number of records in it.
    assert_eq!(broker.committed("g1", "loans"), partition_counts(&input, 4));
    assert!(broker.read_all("scored.dead-letters").is_empty());
}

#[test]
fn bad_records_in_the_topic_go_to_the_dead_letter_topic_and_the_run_goes_on() {
    let broker = Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "2");
    let good = broker.read_all("loans")[0].value.clone();
    let good = String::from_utf8(good).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    let bad = [
        ("not json".to_owned(), "not valid JSON"),
        (
            good.replace("\"int_rate\":", "\"int_rate\":\"high\",\"x\":"),
            "`high` is not a finite number",
        ),
        (
            good.replace("\"funded_amnt\":", "\"funded_amnt\":true,\"x\":"),
            "expected an integer, found a boolean",
        ),
        (
            good.replace("\"sub_grade\":\"", "\"sub_grade\":\"Q"),
            "unknown level",
        ),
        (
            good.replace("\"id\":\"lc-", "\"idx\":\"lc-"),
            "column `id` is missing",
        ),
    ];
    for (payload, _) in &bad {
        producer
            .send(BaseRecord::<(), _>::to("loans").payload(payload.as_bytes()))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let out = loanflow(&[
        "run",
        "--brokers",
        &broker.address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
        "--dead-letter-topic",
        "rejects",
        "--partitions",
        "2",
        "--until-caught-up",
    ]);
    assert!(out.status.success(), "run: {}", stderr(&out));
    assert_eq!(broker.read_all("scored").len(), 9857);
    let dead = broker.read_all("rejects");
    assert_eq!(
        dead.len(),
        bad.len(),
        "{:?}",
        dead.iter().map(|d| d.json()).collect::<Vec<_>>()
    );
    for (payload, reason) in &bad {
        let d = dead
            .iter()
            .map(|d| (d, d.json()))
            .find(|(_, v)| v["raw"] == payload.as_str())
            .unwrap_or_else(|| panic!("no dead letter for {payload}"));
        assert!(d.1["reason"].as_str().unwrap().contains(reason), "{}", d.1);
        assert_eq!(d.1["topic"], "loans");
        assert!(d.1["offset"].is_i64() && d.1["partition"].is_i64());
        assert!(d
            .0
            .headers
            .iter()
            .any(|(k, v)| k == "loanflow.reason" && v.contains(reason)));
    }
}

#[test]
fn a_stopped_run_resumes_from_its_committed_offsets_and_loses_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.csv");
    let out = loanflow(&[
        "generate",
        "--rows",
        "60000",
        "--seed",
        "3",
        "--output",
        stream.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    ingest(&broker, "loans", stream.to_str().unwrap(), "4");
    let input = broker.read_all("loans");
    assert_eq!(input.len(), 60000);

    // First run: live (no --until-caught-up), stopped by SIGTERM mid-stream.
    let args = [
        "run",
        "-w",
        "2",
        "--batch",
        "200",
        "--brokers",
        &broker.address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
        "--partitions",
        "4",
        "--group",
        "restart",
    ];
    let child = loanflow_command(&args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        broker.wait_for_commits("restart", "loans", |o| o.iter().any(|&o| o > 0)),
        "no progress committed"
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "graceful stop exits 0: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first_committed: i64 = broker.committed("restart", "loans").iter().sum();
    let first_outputs = broker.read_all("scored").len();
    assert!(
        first_committed as usize <= first_outputs,
        "never commit what was not delivered"
    );

    // Second run: resumes from the committed offsets, reads to the end.
    let mut until = args.to_vec();
    until.push("--until-caught-up");
    let out = loanflow(&until);
    assert!(out.status.success(), "{}", stderr(&out));

    let outputs = broker.read_all("scored");
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    let mut twice = 0;
    for r in &outputs {
        let id = r.key.clone().unwrap();
        if let Some(previous) = seen.insert(id, r.value.clone()) {
            assert_eq!(
                previous, r.value,
                "a re-scored application is byte-identical"
            );
            twice += 1;
        }
    }
    for r in &input {
        assert!(
            seen.contains_key(r.key.as_ref().unwrap()),
            "lost {:?}",
            r.key
        );
    }
    assert_eq!(
        broker.committed("restart", "loans"),
        partition_counts(&input, 4)
    );
    eprintln!(
        "restart: first run committed {first_committed} of 60000 and wrote {first_outputs}; \
         {twice} applications were scored twice"
    );
}

#[test]
fn unreachable_broker_is_one_clear_line_within_the_connect_timeout() {
    let started = Instant::now();
    let out = loanflow(&[
        "run",
        "--brokers",
        "127.0.0.1:9",
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
        "--connect-timeout",
        "2",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("loanflow: error:"))
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:9"), "{err}");
}

/// Quirk: the broker answers ListOffsets(latest) with the base offset of the
/// last batch, not the high watermark. `--until-caught-up` must not depend on
/// it: it ends at the partition EOF that fetch reports.
#[test]
fn caught_up_comes_from_fetch_not_from_watermark_queries() {
    let broker = Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "1");
    let consumer = broker.consumer(&[]);
    use rdkafka::consumer::Consumer;
    let (_, high) = consumer
        .fetch_watermarks("loans", 0, Duration::from_secs(10))
        .unwrap();
    eprintln!("ListOffsets(latest) says {high}; the partition holds 9857");
    let out = loanflow(&[
        "run",
        "--brokers",
        &broker.address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
        "--partitions",
        "1",
        "--until-caught-up",
        "--group",
        "q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(broker.read_all("scored").len(), 9857);
    assert_eq!(broker.committed("q", "loans"), vec![9857]);
}

/// Live mode with more workers than partitions, and partitions that go
/// idle: idle workers must not hold back the epochs (and so the commits) of
/// the busy ones.
#[test]
fn live_run_commits_with_idle_workers_and_more_workers_than_partitions() {
    let broker = Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "1");
    let args = [
        "run",
        "-w",
        "3",
        "--batch",
        "500",
        "--brokers",
        &broker.address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
        "--partitions",
        "1",
        "--group",
        "live",
    ];
    let child = loanflow_command(&args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !broker.wait_for_commits("live", "loans", |o| o == [9857]) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        panic!(
            "the live run never committed the whole partition: {:?}",
            broker.committed("live", "loans")
        );
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_each_application_scored_once(&broker.read_all("scored"));
}

/// Reads `child`'s stderr lines on a thread, so a test can wait for one.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits up to `bound` for a line starting with `prefix`; every line seen
/// goes to `seen`.
fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    prefix: &str,
    bound: Duration,
    seen: &mut Vec<String>,
) -> bool {
    let deadline = Instant::now() + bound;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.starts_with(prefix);
                seen.push(line);
                if found {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// A live run that has read everything says so — with how many partitions
/// and records, and that Ctrl-C stops it — and says it again once new
/// records were read; SIGINT then ends it with exit 0 and a summary whose
/// records/s count the busy time, not the waiting.
#[test]
fn a_caught_up_live_run_says_it_waits_and_that_ctrl_c_stops_it() {
    let broker = Broker::start_prebuilt();
    ingest(&broker, "loans", "data/lending_club.csv", "4");
    let mut command = loanflow_command(&[
        "run",
        "-w",
        "2",
        "--brokers",
        &broker.address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
    ]);
    command
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let waiting = "loanflow: caught up on loans (4 partitions, 9857 records); \
                   waiting for more — Ctrl-C stops";
    let said = wait_for_line(&lines, waiting, Duration::from_secs(60), &mut seen);
    if !said {
        let _ = child.kill();
    }
    assert!(said, "no caught-up line: {seen:#?}");

    // New records: read, then the line again (at most one per 10 s).
    ingest(&broker, "loans", "data/lending_club.csv", "4");
    let again = "loanflow: caught up on loans (4 partitions, 19714 records); \
                 waiting for more — Ctrl-C stops";
    let said = wait_for_line(&lines, again, Duration::from_secs(60), &mut seen);
    if !said {
        let _ = child.kill();
    }
    assert!(said, "no second caught-up line: {seen:#?}");

    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    seen.extend(lines.iter());
    let err = seen.join("\n");
    assert!(
        out.status.success(),
        "a live run stopped by SIGINT exits 0: {err}"
    );
    assert!(out.stdout.is_empty(), "stdout stays empty");
    let summary = seen
        .iter()
        .find(|l| l.starts_with("loanflow: 19714 records in"))
        .unwrap_or_else(|| panic!("no summary: {err}"));
    // More than 10 s waited between the two catch-ups: not counted as busy.
    assert!(summary.contains(" s (busy "), "{summary}");
    assert!(
        err.contains("(stopped by SIGINT: everything read was delivered)"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI escapes on a pipe: {err:?}"
    );
    assert_eq!(broker.read_all("scored").len(), 2 * 9857);
}
