//! Broker outages: a run waits out a broker that goes away and comes back
//! (SQLite-backed Tansu, so the data survives the restart) and loses
//! nothing; `--max-outage` bounds the wait, after which the run exits
//! non-zero with one line; a transaction the broker makes the run abort
//! restarts it in process (a failpoint stands in for the outage).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ingest_generated, kafka_run_args, loanflow_command, stderr, verify, Broker};

/// One at a time: a stopped broker's port is free, and a broker another
/// test starts meanwhile could take it and answer for the dead one.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn committed_total(broker: &Broker) -> i64 {
    broker
        .committed("loanflow.lending_club", "loans")
        .iter()
        .filter(|o| **o > 0)
        .sum()
}

/// SIGTERM to `run`, then its output (SIGKILL if it has not exited 20 s later).
fn stop_gracefully(mut run: std::process::Child) -> std::process::Output {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status();
    let asked = Instant::now();
    while run.try_wait().unwrap().is_none() && asked.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = run.kill();
    run.wait_with_output().unwrap()
}

/// The broker is killed mid-stream and restarted 3 s later on the same port
/// and file; the live run waits, resumes, and every input gets scored.
fn broker_restart_mid_stream(exactly_once: bool) {
    let _serial = serial();
    let broker = Broker::start_sqlite();
    let dir = tempfile::tempdir().unwrap();
    ingest_generated(&broker, "loans", 60000, 21, dir.path());
    let mut extra = vec!["--max-outage", "60"];
    if exactly_once {
        extra.push("--exactly-once");
    }
    let mut run = loanflow_command(&kafka_run_args(&broker, &extra))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        broker.wait_for_commits("loanflow.lending_club", "loans", |o| {
            o.iter().filter(|o| **o > 0).sum::<i64>() > 0
        }),
        "no progress before the outage"
    );
    broker.stop(false); // SIGKILL: a crash, not a clean shutdown
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run must wait for the broker"
    );
    broker.restart_sqlite();
    let resumed = Instant::now();
    while committed_total(&broker) < 60000 {
        if resumed.elapsed() > Duration::from_secs(90) {
            let committed = committed_total(&broker);
            let out = stop_gracefully(run);
            panic!(
                "the run did not finish the stream after the broker came back (committed {committed} of 60000); after SIGTERM it exited ({}): {}",
                out.status,
                stderr(&out)
            );
        }
        if run.try_wait().unwrap().is_some() {
            let out = run.wait_with_output().unwrap();
            panic!(
                "the run exited ({}) at {} of 60000 committed: {}",
                out.status,
                committed_total(&broker),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let finished = resumed.elapsed();
    let out = stop_gracefully(run);
    let err = stderr(&out);
    // Shown with --nocapture or when an assertion below fails.
    eprintln!("{err}\nthe run committed the whole stream {finished:?} after the broker came back");
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("waiting for the broker"),
        "the wait is logged: {err}"
    );
    if err.contains("starting again from the last committed transaction") {
        eprintln!(
            "the outage aborted a transaction; the run started again from the last committed one"
        );
    }
    let extra: &[&str] = if exactly_once {
        &["--exactly-once"]
    } else {
        &[]
    };
    let report = verify(&broker, extra);
    assert!(report.contains("inputs:               60000"), "{report}");
    assert!(report.contains("lost:                 0\n"), "{report}");
    if exactly_once {
        assert!(report.contains("duplicated:           0 "), "{report}");
    }
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing() {
    broker_restart_mid_stream(false);
}

/// Not run by default: Tansu's SQLite engine can break a producer's
/// transactions when it is killed mid-transaction (BROKER_NOTES quirk 13);
/// the run then aborts one after another and gives up after --max-outage.
/// It passes whenever the broker keeps its transactions whole:
/// `cargo test --profile release-thin --test outage -- --ignored`.
#[test]
#[ignore = "Tansu's SQLite engine can break transactions across a restart (BROKER_NOTES quirk 13)"]
fn a_broker_restart_mid_stream_loses_and_doubles_nothing_exactly_once() {
    broker_restart_mid_stream(true);
}

#[test]
fn max_outage_bounds_the_wait_with_one_line() {
    let _serial = serial();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    ingest_generated(&broker, "loans", 200000, 21, dir.path());
    let mut run = loanflow_command(&kafka_run_args(&broker, &["--max-outage", "2"]))
        .env("RUST_LOG", "loanflow=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        broker.wait_for_commits("loanflow.lending_club", "loans", |o| {
            o.iter().filter(|o| **o > 0).sum::<i64>() > 0
        }),
        "no progress before the outage"
    );
    // The clock starts before the broker is stopped: the run's outage
    // clock starts when it sees the broker gone, which is after this.
    let stopped = Instant::now();
    broker.stop(false);
    while run.try_wait().unwrap().is_none() {
        if stopped.elapsed() > Duration::from_secs(30) {
            run.kill().unwrap();
            let out = run.wait_with_output().unwrap();
            panic!(
                "the run did not give up after --max-outage 2:\n{}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = stopped.elapsed();
    let out = run.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(err.contains("waiting for the broker"), "{err}");
    assert!(
        last.starts_with("loanflow: error: ")
            && (last.contains("--max-outage") || last.contains("not delivered")),
        "{err}"
    );
    assert!(took >= Duration::from_secs(2), "gave up after {took:?}");
    eprintln!("gave up {took:?} after the broker died: {last}");
}

/// An outage that hits a transaction while its offsets are being added
/// makes librdkafka abort it (a red CI once showed `failed to add its
/// offsets: … Local: Timed out`): a window a broker kill hits only now and
/// then. The `txn-add-offsets` failpoint fails a transaction there twice
/// (the 4th pass, and the 4th after it) with the same restartable error, on
/// the real broker; each time the run starts again in process from the last
/// committed transaction (the open one is aborted by the fencing), and
/// `verify` finds every input exactly once among the committed records, the
/// failed transactions' outputs discarded.
#[cfg(feature = "failpoints")] // arms LOANFLOW_FAILPOINTS (scripts/test builds with it)
#[test]
fn an_aborted_transaction_restarts_the_run_in_process_exactly_once() {
    let _serial = serial();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    ingest_generated(&broker, "loans", 20000, 22, dir.path());
    let out = loanflow_command(&kafka_run_args(
        &broker,
        &["--exactly-once", "--until-caught-up"],
    ))
    .env(
        "LOANFLOW_FAILPOINTS",
        "txn-add-offsets=3*off->1*return->3*off->1*return->off",
    )
    .stdout(Stdio::null())
    .output()
    .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let restarts: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("starting again from the last committed transaction"))
        .collect();
    assert_eq!(restarts.len(), 2, "two restarts: {err}");
    for restart in restarts {
        assert!(
            restart.contains("failed to add its offsets: abortable error (failpoint)"),
            "{err}"
        );
    }
    assert!(
        err.contains("(started again 2 times after an aborted transaction"),
        "the summary says so: {err}"
    );
    let report = verify(&broker, &["--exactly-once"]);
    assert!(report.contains("inputs:               20000"), "{report}");
    assert!(report.contains("lost:                 0\n"), "{report}");
    assert!(report.contains("duplicated:           0 "), "{report}");
    let aborted: u64 = report
        .split("transactions:")
        .nth(1)
        .and_then(|l| l.split("; ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no aborted count: {report}"));
    assert!(
        aborted > 0,
        "the failed transactions' outputs were written, then discarded: {report}"
    );
}
