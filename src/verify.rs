//! `loanflow verify`: did a Kafka → Kafka run score every input exactly once?
//!
//! Reads everything (read_uncommitted: it judges aborts itself, since some
//! brokers deliver aborted records anyway), works out which transactions
//! committed from the chains of progress records that start at the group's
//! committed offsets (see [`crate::io::exactly_once`]), and counts per input
//! id its committed outputs and dead letters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::TopicPartitionList;
use serde::Serialize;

use crate::cli::VerifyArgs;
use crate::io::exactly_once::{
    committed_offsets, ProgressRecord, HEADER_EPOCH, HEADER_INCARNATION, HEADER_WORKER,
};
use crate::io::kafka::{self, Context, KafkaConfig, KafkaSetupError};
use crate::run::kafka_config;
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
    /// Transactions found committed (on a chain from the committed offsets).
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
    txn: Option<String>,
}

/// Runs `loanflow verify`.
pub fn verify(args: &VerifyArgs) -> Result<Report> {
    let config = kafka_config(&args.kafka)?.ok_or_else(|| {
        anyhow!("verify reads Kafka: give --brokers HOST:PORT (or set LOANFLOW_BROKERS)")
    })?;
    let spec = Spec::load(&args.dataflow)?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("loanflow.{}", spec.name));
    let dead_topic = args
        .dead_letter_topic
        .clone()
        .unwrap_or_else(|| format!("{}.dead-letters", args.output_topic));
    let progress_topic = args
        .progress_topic
        .clone()
        .unwrap_or_else(|| format!("{}.progress", args.output_topic));

    let input_partitions = config.ensure_topic(&args.input_topic, None)?;
    let inputs = read_topic(&config, &args.input_topic)?;
    let outputs = read_topic(&config, &args.output_topic)?;
    let dead = read_optional(&config, &dead_topic)?;
    // In the progress topic's order (one partition): incarnations in the order they ran.
    let progress: Vec<ProgressRecord> = read_optional(&config, &progress_topic)?
        .into_iter()
        .filter_map(|m| serde_json::from_slice::<ProgressRecord>(&m.value).ok())
        .collect();
    let now = committed_offsets(&config, &group, &args.input_topic, 0..input_partitions)
        .map_err(|e| anyhow!(e))?;

    let mut report = Report {
        inputs: inputs.len() as u64,
        ..Report::default()
    };
    let committed = committed_transactions(&progress, &now);
    report.transactions = committed.len() as u64;
    let mut aborted_outputs: Vec<&Read> = Vec::new();
    let counts = |m: &Read, report: &mut Report| -> bool {
        match &m.txn {
            None => {
                report.untracked += 1;
                true
            }
            Some(t) if committed.contains(t) => true,
            Some(_) => {
                report.aborted += 1;
                false
            }
        }
    };

    // Per input id: how many inputs carry it, and the committed outputs.
    let mut expected: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut by_origin: HashMap<String, Vec<u8>> = HashMap::new();
    for m in &inputs {
        let id = m
            .key
            .clone()
            .unwrap_or_else(|| origin(&args.input_topic, m).into_bytes());
        *expected.entry(id.clone()).or_default() += 1;
        by_origin.insert(origin(&args.input_topic, m), id);
    }
    let mut got: HashMap<Vec<u8>, (u64, Vec<u8>)> = HashMap::new();
    let mut differing = 0u64;
    let mut seen = |id: Vec<u8>, value: &[u8], report: &mut Report| {
        if !expected.contains_key(&id) {
            report.unexpected += 1;
            return;
        }
        let entry = got.entry(id).or_insert_with(|| (0, value.to_vec()));
        entry.0 += 1;
        if entry.0 > 1 && entry.1 != value {
            differing += 1;
        }
    };
    for m in &outputs {
        if counts(m, &mut report) {
            report.outputs += 1;
            seen(m.key.clone().unwrap_or_default(), &m.value, &mut report);
        } else {
            aborted_outputs.push(m);
        }
    }
    for m in &dead {
        if counts(m, &mut report) {
            report.dead_letters += 1;
            // A dead letter's key is its origin: map it back to the input's id.
            let key = String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned();
            match by_origin.get(&key) {
                Some(id) => seen(id.clone(), &m.value, &mut report),
                None => report.unexpected += 1,
            }
        }
    }
    report.differing_duplicates = differing;
    report.aborted_differing = aborted_outputs
        .iter()
        .filter(|m| {
            m.key
                .as_ref()
                .and_then(|k| got.get(k))
                .is_some_and(|(_, first)| *first != m.value)
        })
        .count() as u64;
    for (id, n) in &expected {
        let have = got.get(id).map_or(0, |(k, _)| *k);
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
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report)
}

/// The transactions that committed (see the rule in
/// [`crate::io::exactly_once`]): those of incarnation `I` whose every offset
/// is ≤ the committed offset when the next incarnation started, or now.
pub fn committed_transactions(
    progress: &[ProgressRecord],
    now: &BTreeMap<i32, i64>,
) -> HashSet<String> {
    let mut order: Vec<&str> = Vec::new();
    let mut resumed: HashMap<&str, &BTreeMap<i32, i64>> = HashMap::new();
    for r in progress {
        let incarnation = incarnation_of(&r.txn);
        if !resumed.contains_key(incarnation) {
            order.push(incarnation);
            resumed.insert(incarnation, &r.resumed_from);
        }
    }
    let bound_after: HashMap<&str, &BTreeMap<i32, i64>> = order
        .iter()
        .enumerate()
        .map(|(i, inc)| (*inc, order.get(i + 1).map_or(now, |next| resumed[next])))
        .collect();
    progress
        .iter()
        .filter(|r| {
            let bound = bound_after[incarnation_of(&r.txn)];
            r.offsets
                .iter()
                .all(|(p, next)| bound.get(p).is_some_and(|b| next <= b))
        })
        .map(|r| r.txn.clone())
        .collect()
}

fn incarnation_of(txn: &str) -> &str {
    txn.split('/').next().unwrap_or(txn)
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
    let consumer: BaseConsumer<Context> = config
        .client_config(&[
            ("group.id", "loanflow.verify"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("isolation.level", "read_uncommitted"),
            kafka::FROM_START,
        ])
        .create_with_context(Context::default())
        .map_err(|e| anyhow!("cannot create a Kafka consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, kafka::START)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut last = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                last = Instant::now();
                at_end.remove(&m.partition());
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
                    (Some(i), Some(w), Some(e)) => Some(format!("{i}/{w}/{e}")),
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
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => tracing::warn!(topic, "reading: {e}"),
            None => {}
        }
        let quiet = last.elapsed();
        if (at_end.len() == partitions as usize && quiet >= Duration::from_millis(300))
            || quiet >= config.connect_timeout
        {
            if at_end.len() < partitions as usize {
                tracing::warn!(
                    topic,
                    "stopped reading after {quiet:?} without news; not every partition reported its end"
                );
            }
            return Ok(out);
        }
    }
}
