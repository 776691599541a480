//! `loanflow verify`: did a Kafka → Kafka run score every input exactly once?
//!
//! Reads everything (read_uncommitted: it judges aborts itself, since some
//! brokers deliver aborted records anyway), works out which transactions
//! committed from each writer's last progress record and the group's
//! committed offsets (the rule in [`crate::io::exactly_once`]), and counts
//! per input id its committed outputs and dead letters.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rdkafka::message::{Headers, Message};
use serde::Serialize;

use crate::cli::VerifyArgs;
use crate::core::names;
use crate::io::exactly_once::protocol::{
    Committed, ProgressRecord, TxnId, HEADER_EPOCH, HEADER_INCARNATION, HEADER_WORKER,
};
use crate::io::kafka::{committed_offsets, KafkaConfig, KafkaSetupError, PartitionReader};
use crate::spec::Spec;

/// What `verify` found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// Messages in the input topic.
    pub inputs: u64,
    /// Scored outputs that count (committed, or written without transactions).
    pub outputs: u64,
    /// Dead letters that count.
    pub dead_letters: u64,
    /// Messages of aborted transactions (outputs, dead letters), discarded.
    pub aborted: u64,
    /// Committed transactions that wrote outputs or dead letters.
    pub transactions: u64,
    /// Outputs and dead letters written without transaction headers.
    pub untracked: u64,
    /// Inputs with no committed output or dead letter.
    pub lost: u64,
    /// Committed outputs beyond one per input.
    pub duplicated: u64,
    /// Duplicates whose bytes differ from the first copy.
    pub differing_duplicates: u64,
    /// Aborted outputs whose bytes differ from the committed output of their id
    /// (re-scoring after a crash must give the identical message).
    pub aborted_differing: u64,
    /// Committed outputs whose id is not in the input.
    pub unexpected: u64,
    /// Up to 10 lost ids, for a person to look at.
    pub lost_examples: Vec<String>,
}

impl Report {
    /// Whether the run kept its promise (`exactly_once`: no duplicate at all).
    pub fn ok(&self, exactly_once: bool) -> bool {
        self.lost == 0
            && self.differing_duplicates == 0
            && self.aborted_differing == 0
            && self.unexpected == 0
            && !(exactly_once && self.duplicated > 0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "inputs:               {}", self.inputs)?;
        writeln!(f, "committed outputs:    {}", self.outputs)?;
        writeln!(f, "committed dead letters: {}", self.dead_letters)?;
        writeln!(
            f,
            "transactions:         {} committed; {} aborted records discarded",
            self.transactions, self.aborted
        )?;
        if self.untracked > 0 {
            writeln!(f, "untracked (at-least-once) records: {}", self.untracked)?;
        }
        writeln!(f, "lost:                 {}", self.lost)?;
        write!(
            f,
            "duplicated:           {} ({} differ from their first copy)",
            self.duplicated, self.differing_duplicates
        )?;
        if self.aborted_differing > 0 {
            write!(
                f,
                "\naborted records that differ from the committed one: {}",
                self.aborted_differing
            )?;
        }
        if self.unexpected > 0 {
            write!(f, "\nunexpected outputs:   {}", self.unexpected)?;
        }
        if !self.lost_examples.is_empty() {
            write!(
                f,
                "\nlost, e.g.:           {}",
                self.lost_examples.join(", ")
            )?;
        }
        Ok(())
    }
}

/// One message as read back.
struct Read {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    /// The writing transaction, from the headers (exactly-once writes).
    txn: Option<TxnId>,
}

/// Runs `loanflow verify`: prints the report, fails if it is not clean.
pub fn execute(args: &VerifyArgs) -> Result<()> {
    let report = verify(args)?;
    println!("{report}");
    if report.ok(args.exactly_once) {
        Ok(())
    } else {
        Err(anyhow!(
            "verify: the output does not match the input (see the counts above)"
        ))
    }
}

/// What `loanflow verify` finds.
pub fn verify(args: &VerifyArgs) -> Result<Report> {
    let config = args.kafka.config()?.ok_or_else(|| {
        anyhow!("verify reads Kafka: give --brokers HOST:PORT (or set LOANFLOW_BROKERS)")
    })?;
    let spec = Spec::load(&args.dataflow)?;
    let topics = Topics::read(&config, args, &spec)?;
    let report = judge(&topics, &args.input_topic);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report)
}

/// Everything a run left: its input, outputs, dead letters, progress
/// records, and the group's committed offsets now.
struct Topics {
    inputs: Vec<Read>,
    outputs: Vec<Read>,
    dead: Vec<Read>,
    /// In the progress topic's order (one partition): incarnations in the order they ran.
    progress: Vec<ProgressRecord>,
    committed_now: std::collections::BTreeMap<i32, i64>,
}

impl Topics {
    /// Reads every topic of the run `args` names (default names from `spec`).
    fn read(config: &KafkaConfig, args: &VerifyArgs, spec: &Spec) -> Result<Topics> {
        let group = args
            .group
            .clone()
            .unwrap_or_else(|| names::group(&spec.name));
        let dead_topic = args
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| names::dead_letter_topic(&args.output_topic));
        let progress_topic = args
            .progress_topic
            .clone()
            .unwrap_or_else(|| names::progress_topic(&args.output_topic));
        let input_partitions = config.ensure_topic(&args.input_topic, None)?;
        Ok(Topics {
            inputs: read_topic(config, &args.input_topic)?,
            outputs: read_topic(config, &args.output_topic)?,
            dead: read_optional(config, &dead_topic)?,
            progress: read_optional(config, &progress_topic)?
                .into_iter()
                .filter_map(|m| serde_json::from_slice::<ProgressRecord>(&m.value).ok())
                .collect(),
            committed_now: committed_offsets(
                config,
                &group,
                &args.input_topic,
                0..input_partitions,
            )?,
        })
    }
}

/// Counts, per input id of `input_topic`, its committed outputs and dead
/// letters (the rule in [`Committed`] decides what is committed).
fn judge(topics: &Topics, input_topic: &str) -> Report {
    let mut report = Report {
        inputs: topics.inputs.len() as u64,
        ..Report::default()
    };
    let committed = Committed::new(&topics.progress, &topics.committed_now);
    let mut transactions: HashSet<TxnId> = HashSet::new();
    let mut aborted_outputs: Vec<&Read> = Vec::new();
    let mut counts = |m: &Read, report: &mut Report| -> bool {
        match &m.txn {
            None => {
                report.untracked += 1;
                true
            }
            Some(t) if committed.contains(t) => {
                transactions.insert(t.clone());
                true
            }
            Some(_) => {
                report.aborted += 1;
                false
            }
        }
    };
    let mut ids = Ids::of(&topics.inputs, input_topic);
    for m in &topics.outputs {
        if counts(m, &mut report) {
            report.outputs += 1;
            ids.seen(m.key.clone().unwrap_or_default(), &m.value, &mut report);
        } else {
            aborted_outputs.push(m);
        }
    }
    for m in &topics.dead {
        if counts(m, &mut report) {
            report.dead_letters += 1;
            // A dead letter's key is its origin: map it back to the input's id.
            let key = String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned();
            match ids.by_origin.get(&key) {
                Some(id) => ids.seen(id.clone(), &m.value, &mut report),
                None => report.unexpected += 1,
            }
        }
    }
    report.transactions = transactions.len() as u64;
    report.aborted_differing = aborted_outputs
        .iter()
        .filter(|m| {
            m.key
                .as_ref()
                .and_then(|k| ids.got.get(k))
                .is_some_and(|(_, first)| *first != m.value)
        })
        .count() as u64;
    ids.tally(&mut report);
    report
}

/// Per input id: how many inputs carry it, and the committed outputs (and
/// dead letters) seen for it, with the first one's bytes.
struct Ids {
    expected: HashMap<Vec<u8>, u64>,
    /// An input's origin (`topic/partition@offset`) → its id.
    by_origin: HashMap<String, Vec<u8>>,
    got: HashMap<Vec<u8>, (u64, Vec<u8>)>,
}

impl Ids {
    fn of(inputs: &[Read], topic: &str) -> Ids {
        let mut expected: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut by_origin = HashMap::new();
        for m in inputs {
            let id = m
                .key
                .clone()
                .unwrap_or_else(|| origin(topic, m).into_bytes());
            *expected.entry(id.clone()).or_default() += 1;
            by_origin.insert(origin(topic, m), id);
        }
        Ids {
            expected,
            by_origin,
            got: HashMap::new(),
        }
    }

    /// A committed output (or dead letter) of input `id`.
    fn seen(&mut self, id: Vec<u8>, value: &[u8], report: &mut Report) {
        if !self.expected.contains_key(&id) {
            report.unexpected += 1;
            return;
        }
        let entry = self.got.entry(id).or_insert_with(|| (0, value.to_vec()));
        entry.0 += 1;
        if entry.0 > 1 && entry.1 != value {
            report.differing_duplicates += 1;
        }
    }

    /// Lost and duplicated counts, with a few lost ids as examples.
    fn tally(&self, report: &mut Report) {
        for (id, n) in &self.expected {
            let have = self.got.get(id).map_or(0, |(k, _)| *k);
            if have < *n {
                report.lost += n - have;
                if report.lost_examples.len() < 10 {
                    report
                        .lost_examples
                        .push(String::from_utf8_lossy(id).into_owned());
                }
            } else {
                report.duplicated += have - n;
            }
        }
        report.lost_examples.sort();
    }
}

fn origin(topic: &str, m: &Read) -> String {
    format!("{topic}/{}@{}", m.partition, m.offset)
}

/// A topic that may not exist (no dead letters, no exactly-once run yet).
fn read_optional(config: &KafkaConfig, topic: &str) -> Result<Vec<Read>> {
    match config.ensure_topic(topic, None) {
        Err(KafkaSetupError::NoTopic { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
        Ok(_) => read_topic(config, topic),
    }
}

/// Every message of every partition of `topic`, read to each partition's
/// end (partition EOF: never a ListOffsets answer).
fn read_topic(config: &KafkaConfig, topic: &str) -> Result<Vec<Read>> {
    let partitions = config.ensure_topic(topic, None)?;
    let mut reader = PartitionReader::from_start(
        config,
        topic,
        partitions,
        "loanflow.verify",
        &[("isolation.level", "read_uncommitted")],
    )?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    loop {
        if let Some(m) = reader.poll(Duration::from_millis(50)) {
            last = Instant::now();
            {
                let header = |name: &str| {
                    m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                let txn = match (
                    header(HEADER_INCARNATION),
                    header(HEADER_WORKER),
                    header(HEADER_EPOCH),
                ) {
                    // Malformed headers name no transaction that committed.
                    (Some(i), Some(w), Some(e)) => {
                        Some(format!("{i}/{w}/{e}").parse().unwrap_or_else(|_| TxnId {
                            incarnation: format!("malformed:{i}/{w}/{e}"),
                            worker: usize::MAX,
                            epoch: u64::MAX,
                        }))
                    }
                    _ => None,
                };
                out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    txn,
                });
            }
        }
        let quiet = last.elapsed();
        if (reader.all_at_end() && quiet >= Duration::from_millis(300))
            || quiet >= config.connect_timeout
        {
            if !reader.all_at_end() {
                tracing::warn!(
                    topic,
                    "stopped reading after {quiet:?} without news; not every partition reported its end"
                );
            }
            return Ok(out);
        }
    }
}
