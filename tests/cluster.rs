//! Cluster mode end to end: `loanflow cluster` (N local processes on
//! loopback) and `loanflow run --processes N --process I --hostfile FILE`,
//! on files and against a real Kafka-API broker (Tansu, per test).

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_each_application_scored_once, ingest, lines, loanflow, loanflow_command,
    partition_counts, predictions, stderr, Broker,
};

/// The names in a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn cluster_of_2x2_scores_exactly_what_one_worker_does() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single.jsonl");
    let out = loanflow(&[
        "run",
        "-w",
        "1",
        "-q",
        "--output",
        single.to_str().unwrap(),
        "--dead-letters",
        dir.path().join("single-dead.jsonl").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let output = dir.path().join("cluster.jsonl");
    let dead = dir.path().join("cluster-dead.jsonl");
    // A part left by an earlier, larger cluster must not read as this run's.
    std::fs::create_dir_all(dir.path().join("cluster.jsonl.d")).unwrap();
    std::fs::write(dir.path().join("cluster.jsonl.d/part-00002.jsonl"), "{}\n").unwrap();
    let out = loanflow(&[
        "cluster",
        "--processes",
        "2",
        "--workers",
        "2",
        "-q",
        "--output",
        output.to_str().unwrap(),
        "--dead-letters",
        dead.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // Process 0 prints the cluster's summary; process 1 a line of its own.
    assert!(
        err.contains("[p0] loanflow: 9857 records in")
            && err.contains("on 4 workers (2 processes × 2)"),
        "{err}"
    );
    assert!(err.contains("[p0]   scored              9857"), "{err}");
    assert!(err.contains("[p1] loanflow: process 1 of 2:"), "{err}");

    let parts = dir.path().join("cluster.jsonl.d");
    assert_eq!(names(&parts), ["part-00000.jsonl", "part-00001.jsonl"]);
    assert!(!dead.exists() && !dir.path().join("cluster-dead.jsonl.d").exists());
    let mut cluster = Vec::new();
    for name in names(&parts) {
        let part: Vec<String> = lines(&parts.join(name)).collect();
        assert!(!part.is_empty(), "every process scores a share");
        cluster.extend(part);
    }
    let cluster = predictions(cluster.into_iter());
    let single = predictions(lines(&single));
    assert_eq!(cluster.len(), 9857);
    assert_eq!(cluster, single, "same predictions, byte for byte");
}

#[test]
fn processes_with_different_models_refuse_to_start_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The same model with one more byte: same scores, another SHA-256.
    let other = dir.path().join("other.xgb.json");
    let mut model = std::fs::read(common::root().join("models/lending_club.xgb.json")).unwrap();
    model.push(b'\n');
    std::fs::write(&other, model).unwrap();
    let hostfile = dir.path().join("hosts");
    let ports: Vec<u16> = {
        let listeners: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect()
    };
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .unwrap();
    let output = dir.path().join("out/p.jsonl");
    let spawn = |process: &str, model: Option<&Path>| -> Child {
        let mut args = vec![
            "run".to_owned(),
            "-q".into(),
            "--processes".into(),
            "2".into(),
            "--process".into(),
            process.into(),
            "--hostfile".into(),
            hostfile.to_str().unwrap().into(),
            "--output".into(),
            output.to_str().unwrap().into(),
            "--cluster-timeout".into(),
            "30".into(),
        ];
        if let Some(model) = model {
            args.extend(["--model".into(), model.to_str().unwrap().into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        loanflow_command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let p0 = spawn("0", None);
    let p1 = spawn("1", Some(&other));
    for (i, child) in [p0, p1].into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "process {i} must fail: {err}");
        assert!(
            err.contains("loanflow: error: the processes do not run the same model")
                && err.contains("process 0 has lending_club.xgb@sha256:d959c0ba7545")
                && err.contains("process 1 has other.xgb@sha256:"),
            "process {i}: {err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with("loanflow:")).count(),
            1,
            "one line: {err}"
        );
    }
    assert!(
        !dir.path().join("out/p.jsonl.d").exists(),
        "no output at all"
    );
}

#[test]
fn run_with_processes_needs_its_index_and_a_hostfile() {
    let out = loanflow(&["run", "--processes", "2"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs --process I"),
        "{}",
        stderr(&out)
    );
    let out = loanflow(&["run", "--processes", "2", "--process", "2"]);
    assert!(stderr(&out).contains("out of range"), "{}", stderr(&out));
    let out = loanflow(&["run", "--processes", "2", "--process", "1"]);
    assert!(
        stderr(&out).contains("needs --hostfile"),
        "{}",
        stderr(&out)
    );
    let out = loanflow(&["cluster", "-w", "2"]);
    assert!(
        stderr(&out).contains("give --processes N"),
        "{}",
        stderr(&out)
    );
}

/// The pid of process `index` among the children of launcher `launcher`.
fn child_process(launcher: u32, index: usize) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{launcher}/task")).ok()?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let needle = format!("\0--process\0{index}\0");
            if cmdline
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                return pid.parse().ok();
            }
        }
    }
    None
}

fn sigkill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for `child` at most `bound`; returns its output and how long it took.
fn wait_bounded(mut child: Child, bound: Duration) -> (std::process::Output, Duration) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > bound {
            let _ = child.kill();
            panic!("did not exit within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[test]
fn a_killed_process_stops_the_cluster_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.csv");
    let out = loanflow(&[
        "generate",
        "--rows",
        "1000000",
        "--seed",
        "5",
        "--output",
        stream.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let output = dir.path().join("p.jsonl");
    let launcher = loanflow_command(&[
        "cluster",
        "--processes",
        "2",
        "-w",
        "1",
        "-q",
        "--batch",
        "256",
        "--input",
        stream.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let p1 = loop {
        if let Some(pid) = child_process(launcher.id(), 1) {
            break pid;
        }
        assert!(Instant::now() < deadline, "process 1 never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    // Killed once it has written some of its output, so surely mid-run: a
    // file's records are cleaned where they were read, so the processes
    // no longer wait on each other's records, and a fixed delay could let
    // the whole run finish first.
    let part = dir
        .path()
        .join("p.jsonl.d")
        .join("part-00001.jsonl.partial");
    while std::fs::metadata(&part).map_or(true, |m| m.len() == 0) {
        assert!(Instant::now() < deadline, "process 1 never wrote");
        std::thread::sleep(Duration::from_millis(5));
    }
    sigkill(p1);
    let (out, took) = wait_bounded(launcher, Duration::from_secs(15));
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .contains("loanflow: error: process 1 of 2 died (killed by signal 9)"),
        "{err}"
    );
    eprintln!("the launcher exited {took:?} after process 1 was killed");
    // A failed run never leaves a file that looks complete.
    let parts = dir.path().join("p.jsonl.d");
    if parts.exists() {
        assert!(
            names(&parts).iter().all(|n| n.ends_with(".partial")),
            "{:?}",
            names(&parts)
        );
    }
}

// ---------------------------------------------------------------------------
// Kafka → Kafka

#[test]
fn kafka_cluster_of_2x2_scores_every_application_once_and_commits_its_offsets() {
    let broker = Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "4");
    let input = broker.read_all("loans");
    assert_eq!(input.len(), 9857);

    let out = loanflow(&[
        "cluster",
        "--processes",
        "2",
        "--workers",
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
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("[p0] loanflow: 9857 records in"), "{err}");
    assert!(err.contains("on 4 workers (2 processes × 2)"), "{err}");

    let output = broker.read_all("scored");
    assert_each_application_scored_once(&output);
    assert_eq!(broker.committed("g1", "loans"), partition_counts(&input, 4));
    assert!(broker.read_all("scored.dead-letters").is_empty());
}

#[test]
fn kafka_cluster_with_a_killed_process_resumes_from_committed_offsets() {
    killed_kafka_cluster_resumes(false);
}

#[test]
fn exactly_once_cluster_with_a_killed_process_loses_and_doubles_nothing() {
    killed_kafka_cluster_resumes(true);
}

/// `loanflow cluster` of 2 processes × 1 worker, `--batch 200`, from topic
/// `loans` to `scored` (4 partitions) on `broker`, plus `extra`.
fn kafka_cluster_args<'a>(broker: &'a Broker, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "cluster",
        "--processes",
        "2",
        "-w",
        "1",
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
    ];
    args.extend_from_slice(extra);
    args
}

/// 2 processes read a live topic; one is SIGKILLed; the re-launched
/// cluster covers every input (with `exactly_once`, `loanflow verify` finds
/// each exactly once among the committed records).
fn killed_kafka_cluster_resumes(exactly_once: bool) {
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
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    ingest(&broker, "loans", stream.to_str().unwrap(), "4");
    let input = broker.read_all("loans");
    assert_eq!(input.len(), 60000);

    // Live (no --until-caught-up): 2 processes, each owning 2 partitions.
    let mut args = kafka_cluster_args(&broker, &["--group", "killed"]);
    if exactly_once {
        args.push("--exactly-once");
    }
    let launcher = loanflow_command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        broker.wait_for_commits("killed", "loans", |o| o.iter().any(|&o| o > 0)),
        "no progress committed"
    );
    let p1 = child_process(launcher.id(), 1).expect("process 1 runs");
    sigkill(p1);
    let (out, took) = wait_bounded(launcher, Duration::from_secs(15));
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("loanflow: error: process 1 of 2 died (killed by signal 9)"),
        "{err}"
    );
    let first_committed: i64 = broker.committed("killed", "loans").iter().sum();
    // Every output stored, committed or not: with --exactly-once the killed
    // process's open transaction holds back what read_committed readers see
    // (its last stable offset) until the re-launch fences it.
    let first_outputs = broker
        .read_all_with("scored", &[("isolation.level", "read_uncommitted")])
        .len();
    assert!(
        first_committed as usize <= first_outputs,
        "never commit what was not delivered"
    );
    let mut until = args.to_vec();
    until.push("--until-caught-up");
    if exactly_once {
        let out = loanflow(&until);
        assert!(out.status.success(), "{}", stderr(&out));
        let report = common::verify(&broker, &["--group", "killed", "--exactly-once"]);
        assert!(report.contains("inputs:               60000"), "{report}");
        assert!(report.contains("lost:                 0\n"), "{report}");
        assert!(report.contains("duplicated:           0 "), "{report}");
        return;
    }

    // The re-run resumes from the committed offsets and reads to the end.
    let out = loanflow(&until);
    assert!(out.status.success(), "{}", stderr(&out));

    let outputs = broker.read_all("scored");
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    for r in &outputs {
        let id = r.key.clone().unwrap();
        if let Some(previous) = seen.insert(id, r.value.clone()) {
            assert_eq!(previous, r.value, "a re-scored application is identical");
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
        broker.committed("killed", "loans"),
        partition_counts(&input, 4)
    );
    eprintln!(
        "killed after {first_committed} of 60000 were committed ({first_outputs} written); \
         the launcher exited {took:?} after the kill; {} outputs in all",
        outputs.len()
    );
}

#[test]
fn sigterm_to_the_launcher_stops_every_process_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.csv");
    let out = loanflow(&[
        "generate",
        "--rows",
        "1000000",
        "--seed",
        "5",
        "--output",
        stream.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let output = dir.path().join("p.jsonl");
    let launcher = loanflow_command(&[
        "cluster",
        "--processes",
        "2",
        "-w",
        "1",
        "-q",
        "--input",
        stream.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &launcher.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (out, _) = wait_bounded(launcher, Duration::from_secs(30));
    let err = stderr(&out);
    let parts = dir.path().join("p.jsonl.d");
    let parts_written = names(&parts);
    let written: usize = parts_written
        .iter()
        .map(|n| lines(&parts.join(n)).count())
        .sum();
    if err.contains("(stopped by SIGTERM before the end of the input") {
        // Stopped mid-file: every process delivered what it read, left its
        // part unfinished, and the cluster exits as one process does: 143.
        assert_eq!(out.status.code(), Some(143), "{err}");
        assert!(written < 1_000_000, "{err}");
        assert!(
            parts_written.iter().all(|n| n.ends_with(".jsonl.partial")),
            "a stopped run publishes no part: {parts_written:?}"
        );
    } else {
        // The signal came after the end of the input: a finished run.
        assert!(out.status.success(), "{err}");
        assert!(
            parts_written.iter().all(|n| n.ends_with(".jsonl")),
            "{parts_written:?}"
        );
    }
    assert!(
        err.contains(&format!("[p0]   scored        {written:>10}")),
        "everything read is written: {written} lines; {err}"
    );
}

/// A cluster process whose transaction the broker aborts (the
/// `txn-add-offsets` failpoint, see tests/outage.rs) does not start again
/// alone, as a single process does: its peers' dataflow went down with its
/// own. The cluster exits naming the failure; re-launched, it finishes, and
/// `verify` finds every input exactly once among the committed records.
#[cfg(feature = "failpoints")] // arms LOANFLOW_FAILPOINTS (scripts/test builds with it)
#[test]
fn exactly_once_cluster_with_an_aborted_transaction_exits_and_resumes() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    common::ingest_generated(&broker, "loans", 20000, 4, dir.path());
    let args = kafka_cluster_args(&broker, &["--exactly-once", "--until-caught-up"]);
    let launcher = loanflow_command(&args)
        .env(
            "LOANFLOW_FAILPOINTS",
            "txn-add-offsets=3*off->1*return->off",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, _) = wait_bounded(launcher, Duration::from_secs(60));
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("failed to add its offsets: abortable error (failpoint)"),
        "{err}"
    );
    assert!(!err.contains("starting again"), "{err}");
    let out = loanflow(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = common::verify(&broker, &["--exactly-once"]);
    assert!(report.contains("inputs:               20000"), "{report}");
    assert!(report.contains("lost:                 0\n"), "{report}");
    assert!(report.contains("duplicated:           0 "), "{report}");
}
