//! Topics against a real broker: the topics loanflow writes are created when
//! missing (with the input's partition count, `--partitions N`, or 1 for a
//! file, said in one line each), `--no-create-topics` refuses instead, a
//! missing input topic stays an error; `tail` waits for a topic that does
//! not exist yet and ends with success on `-n` and on SIGINT.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::{
    assert_each_application_scored_once, expected_scores, ingest, loanflow, loanflow_command,
    stderr, Broker,
};

/// The `loanflow: created topic …` lines of a command's stderr.
fn created(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("loanflow: created topic"))
        .collect()
}

/// The `loanflow:` lines of a command's stderr (its own, not librdkafka's logs).
fn loanflow_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.starts_with("loanflow:")).collect()
}

/// A Kafka → Kafka run of the shipped applications to their end, plus `extra`.
fn run_to_end(broker: &Broker, input: &str, output: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run",
        "-w",
        "2",
        "--brokers",
        &broker.address,
        "--input-topic",
        input,
        "--output-topic",
        output,
        "--until-caught-up",
        "-q",
    ];
    args.extend_from_slice(extra);
    loanflow(&args)
}

#[test]
fn run_creates_its_missing_output_topics_with_the_input_partition_count() {
    let broker = Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "3");

    let out = run_to_end(&broker, "loans", "loans.scored", &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        created(&err),
        [
            "loanflow: created topic loans.scored (3 partitions)",
            "loanflow: created topic loans.scored.dead-letters (3 partitions)",
        ],
        "{err}"
    );
    assert_eq!(broker.partitions("loans.scored"), 3);
    assert_eq!(broker.partitions("loans.scored.dead-letters"), 3);
    assert_each_application_scored_once(&broker.read_all("loans.scored"));

    // They exist now: a second run (nothing left to read) creates nothing,
    // and neither does a strict one.
    let again = run_to_end(&broker, "loans", "loans.scored", &["--no-create-topics"]);
    let err = stderr(&again);
    assert!(again.status.success(), "{err}");
    assert!(created(&err).is_empty(), "{err}");
}

#[test]
fn topics_written_from_a_file_get_one_partition_or_the_partitions_asked_for() {
    let broker = Broker::start();
    let address = broker.address.as_str();

    // run: a file into a topic.
    let out = loanflow(&[
        "run",
        "--brokers",
        address,
        "--output-topic",
        "fromfile",
        "-q",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        created(&err),
        [
            "loanflow: created topic fromfile (1 partition)",
            "loanflow: created topic fromfile.dead-letters (1 partition)",
        ],
        "{err}"
    );
    assert_eq!(broker.partitions("fromfile"), 1);
    assert_each_application_scored_once(&broker.read_all("fromfile"));

    let out = loanflow(&[
        "run",
        "--brokers",
        address,
        "--output-topic",
        "fromfile2",
        "--partitions",
        "2",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(broker.partitions("fromfile2"), 2);
    assert_eq!(broker.partitions("fromfile2.dead-letters"), 2);

    // ingest and replay --topic: the topic they write, 1 partition by default.
    let out = loanflow(&["ingest", "--brokers", address, "--topic", "raw", "-q"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        created(&err),
        ["loanflow: created topic raw (1 partition)"],
        "{err}"
    );
    assert_eq!(broker.partitions("raw"), 1);
    assert_eq!(broker.read_all("raw").len(), 9857);

    let out = loanflow(&[
        "replay",
        "data/lending_club.csv",
        "--brokers",
        address,
        "--topic",
        "replayed",
        "-q",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        created(&err),
        ["loanflow: created topic replayed (1 partition)"],
        "{err}"
    );
    assert_eq!(broker.read_all("replayed").len(), 9857);

    // passthrough: the copy gets the input's partition count.
    ingest(&broker, "loans", "data/lending_club.csv", "3");
    let out = loanflow(&[
        "passthrough",
        "--brokers",
        address,
        "--input-topic",
        "loans",
        "--output-topic",
        "copy",
        "-w",
        "2",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        created(&err),
        ["loanflow: created topic copy (3 partitions)"],
        "{err}"
    );
    assert_eq!(broker.partitions("copy"), 3);
    assert_eq!(broker.read_all("copy").len(), 9857);
}

#[test]
fn exactly_once_creates_its_progress_topic_with_one_compacted_partition() {
    let broker = Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "4");
    let out = run_to_end(&broker, "loans", "scored", &["--exactly-once"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        created(&err),
        [
            "loanflow: created topic scored (4 partitions)",
            "loanflow: created topic scored.dead-letters (4 partitions)",
            "loanflow: created topic scored.progress (1 partition, cleanup.policy=compact)",
        ],
        "{err}"
    );
    assert_eq!(broker.partitions("scored.progress"), 1);
    assert_each_application_scored_once(&broker.read_all("scored"));
}

#[test]
fn no_create_topics_refuses_a_missing_topic_in_one_line_and_writes_nothing() {
    let broker = Broker::start();
    let address = broker.address.as_str();
    ingest(&broker, "loans", "data/lending_club.csv", "2");

    let out = run_to_end(&broker, "loans", "loans.scored", &["--no-create-topics"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines = loanflow_lines(&err);
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("loanflow: error: topic `loans.scored` does not exist")
            && lines[0].contains("drop --no-create-topics"),
        "{err}"
    );
    assert_eq!(broker.partitions("loans.scored"), 0, "not created");
    assert_eq!(broker.partitions("loans.scored.dead-letters"), 0);

    // ingest into a missing topic: the same refusal, nothing sent.
    let out = loanflow(&[
        "ingest",
        "--brokers",
        address,
        "--topic",
        "raw",
        "--no-create-topics",
        "-q",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines = loanflow_lines(&err);
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].contains("topic `raw` does not exist") && lines[0].contains("--no-create-topics"),
        "{err}"
    );
    assert_eq!(broker.partitions("raw"), 0, "not created");

    // Strict and create-with-N contradict each other: a usage error.
    let out = loanflow(&[
        "run",
        "--brokers",
        address,
        "--input-topic",
        "loans",
        "--output-topic",
        "x",
        "--partitions",
        "2",
        "--no-create-topics",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--no-create-topics"));
}

#[test]
fn a_missing_input_topic_is_still_an_error_and_creates_nothing() {
    let broker = Broker::start();
    let out = run_to_end(&broker, "nosuch", "scored", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines = loanflow_lines(&err);
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].contains("topic `nosuch` does not exist") && lines[0].contains("--partitions N"),
        "{err}"
    );
    assert_eq!(broker.partitions("nosuch"), 0);
    assert_eq!(broker.partitions("scored"), 0, "no output topic either");

    // passthrough has nothing to copy.
    let out = loanflow(&[
        "passthrough",
        "--brokers",
        &broker.address,
        "--input-topic",
        "nosuch",
        "--output-topic",
        "copy",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("topic `nosuch` does not exist"), "{err}");
    assert_eq!(broker.partitions("copy"), 0);
}

/// A running loanflow whose stdout and stderr lines are collected as they come.
struct Spawned {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (send, receive) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

impl Spawned {
    fn new(args: &[&str]) -> Spawned {
        let mut child = loanflow_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start loanflow");
        let out = lines_of(child.stdout.take().unwrap());
        let err = lines_of(child.stderr.take().unwrap());
        Spawned {
            child,
            out,
            err,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    /// Waits (at most `bound`) for a stderr line `found` accepts.
    fn stderr_line(&mut self, found: impl Fn(&str) -> bool, bound: Duration) -> String {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if found(&line) {
                        return line;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    panic!("no such line on stderr ({e:?}): {:?}", self.stderr);
                }
            }
        }
    }

    /// Waits (at most `bound`) until stdout has at least `n` lines.
    fn stdout_lines(&mut self, n: usize, bound: Duration) {
        let deadline = Instant::now() + bound;
        while self.stdout.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(e) => {
                    let _ = self.child.kill();
                    panic!("{} of {n} lines on stdout ({e:?})", self.stdout.len());
                }
            }
        }
    }

    fn sigint(&self) {
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (at most `bound`) for the process to exit; its status and all
    /// its output.
    fn wait(mut self, bound: Duration) -> (ExitStatus, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + bound;
        let status = loop {
            // Keep the pipes drained, so the process never blocks on a write.
            self.stdout.extend(self.out.try_iter());
            self.stderr.extend(self.err.try_iter());
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("did not exit within {bound:?}: {:?}", self.stderr);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for (pipe, lines) in [(&self.out, &mut self.stdout), (&self.err, &mut self.stderr)] {
            loop {
                match pipe.recv_timeout(Duration::from_secs(5)) {
                    Ok(line) => lines.push(line),
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => panic!("a pipe stayed open"),
                }
            }
        }
        (status, self.stdout, self.stderr)
    }
}

/// The ids of `--json` tail lines, asserting each appears once.
fn unique_ids(lines: &[String]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(ids.insert(id), "printed twice: {line}");
    }
    ids
}

const WAITING: &str = "loanflow: waiting for topic scored to be created (Ctrl-C stops)";

#[test]
fn tail_waits_for_its_topic_then_prints_everything_written_to_it() {
    let broker = Broker::start();
    // Not --from-beginning: everything in a topic created after tail
    // started is new to it.
    let mut tail = Spawned::new(&[
        "tail",
        "--brokers",
        &broker.address,
        "--topic",
        "scored",
        "-n",
        "9857",
        "--json",
    ]);
    tail.stderr_line(|l| l == WAITING, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1)); // it polls at least once more
    assert_eq!(broker.partitions("scored"), 0, "tail never creates it");

    ingest(&broker, "loans", "data/lending_club.csv", "3");
    let out = run_to_end(&broker, "loans", "scored", &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // -n: it stops by itself, with success, after exactly that many.
    let (status, stdout, stderr) = tail.wait(Duration::from_secs(120));
    assert!(status.success(), "{status:?}: {stderr:?}");
    assert_eq!(stdout.len(), 9857);
    let expected: BTreeSet<String> = expected_scores().into_keys().collect();
    assert_eq!(unique_ids(&stdout), expected);
    assert_eq!(
        stderr
            .iter()
            .filter(|l| l.contains("waiting for topic"))
            .count(),
        1,
        "said once: {stderr:?}"
    );
}

#[test]
fn tail_from_the_beginning_prints_every_partition_and_stops_with_success() {
    let broker = Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "4");
    let out = run_to_end(&broker, "loans", "scored", &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // -n COUNT: exactly that many, exit 0.
    let out = loanflow(&[
        "tail",
        "--brokers",
        &broker.address,
        "--topic",
        "scored",
        "--from-beginning",
        "-n",
        "10",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10);

    // Every application of every partition, then SIGINT ends it with 0.
    let mut tail = Spawned::new(&[
        "tail",
        "--brokers",
        &broker.address,
        "--topic",
        "scored",
        "--from-beginning",
        "--json",
    ]);
    tail.stdout_lines(9857, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500)); // nothing more comes
    tail.sigint();
    let (status, stdout, stderr) = tail.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stderr:?}");
    let expected: BTreeSet<String> = expected_scores().into_keys().collect();
    assert_eq!(unique_ids(&stdout), expected);
    assert!(
        !stderr.iter().any(|l| l.contains("waiting for topic")),
        "the topic existed: {stderr:?}"
    );
}

#[test]
fn sigint_ends_a_tail_waiting_for_its_topic_with_success() {
    let broker = Broker::start();
    let mut tail = Spawned::new(&["tail", "--brokers", &broker.address, "--topic", "scored"]);
    tail.stderr_line(|l| l == WAITING, Duration::from_secs(30));
    tail.sigint();
    let (status, stdout, stderr) = tail.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stderr:?}");
    assert!(stdout.is_empty(), "{stdout:?}");
    assert_eq!(broker.partitions("scored"), 0, "tail never creates it");
}
