//! `loanflow verify`: did a Kafka → Kafka run score every input exactly once?
//!
//! Reads everything (read_uncommitted: it judges aborts itself, since some
//! brokers deliver aborted records anyway), works out which transactions
//! committed from each writer's last progress record and the group's
//! committed offsets (the rule in [`crate::io::exactly_once`]), and counts
//! per input id its committed outputs and dead letters.

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
    committed_offsets, ProgressRecord, TxnId, HEADER_EPOCH, HEADER_INCARNATION, HEADER_WORKER,
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
    let committed = Committed::new(&progress, &now);
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
    report.transactions = transactions.len() as u64;
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

/// Which transactions committed (the rule in [`crate::io::exactly_once`]),
/// from the progress records in the progress topic's order — all of them, or
/// what compaction left: the last one of each writer.
pub struct Committed {
    /// Per writer (incarnation, worker): the epoch of its last progress
    /// record and whether that transaction committed. Every earlier one of
    /// the writer did (an incarnation's transactions commit in order).
    last: HashMap<(String, usize), (u64, bool)>,
}

impl Committed {
    pub fn new(progress: &[ProgressRecord], now: &BTreeMap<i32, i64>) -> Committed {
        // Incarnations in the order they ran, each with the committed
        // offsets it started from.
        let mut order: Vec<&str> = Vec::new();
        let mut resumed: HashMap<&str, &BTreeMap<i32, i64>> = HashMap::new();
        // Per writer: the epoch and record of its last progress record.
        let mut last: HashMap<(String, usize), (u64, &ProgressRecord)> = HashMap::new();
        for r in progress {
            let Ok(txn) = r.txn.parse::<TxnId>() else {
                continue;
            };
            if !resumed.contains_key(txn.incarnation.as_str()) {
                let incarnation = incarnation_of(&r.txn);
                order.push(incarnation);
                resumed.insert(incarnation, &r.resumed_from);
            }
            last.insert((txn.incarnation, txn.worker), (txn.epoch, r));
        }
        // What the offsets were when the next incarnation started (or now).
        let bound_after: HashMap<&str, &BTreeMap<i32, i64>> = order
            .iter()
            .enumerate()
            .map(|(i, inc)| (*inc, order.get(i + 1).map_or(now, |next| resumed[next])))
            .collect();
        let last = last
            .into_iter()
            .map(|(writer, (epoch, r))| {
                let bound = bound_after[writer.0.as_str()];
                let committed = r
                    .offsets
                    .iter()
                    .all(|(p, next)| bound.get(p).is_some_and(|b| next <= b));
                (writer, (epoch, committed))
            })
            .collect();
        Committed { last }
    }

    /// Whether transaction `txn` committed. One after its writer's last
    /// progress record, or of a writer without any, never wrote its progress
    /// record: it was aborted.
    pub fn contains(&self, txn: &TxnId) -> bool {
        match self.last.get(&(txn.incarnation.clone(), txn.worker)) {
            Some(&(last, committed)) => txn.epoch < last || (txn.epoch == last && committed),
            None => false,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(txn: &str, offsets: &[(i32, i64)], resumed_from: &[(i32, i64)]) -> ProgressRecord {
        ProgressRecord {
            txn: txn.to_owned(),
            dataflow: "d".into(),
            group: "g".into(),
            input_topic: "in".into(),
            workers: 2,
            offsets: offsets.iter().copied().collect(),
            resumed_from: resumed_from.iter().copied().collect(),
            outputs: 1,
            dead_letters: 0,
        }
    }

    fn txn(s: &str) -> TxnId {
        s.parse().unwrap()
    }

    /// Two incarnations of two workers. Incarnation `a` crashed: worker 0's
    /// last transaction (a/0/7) committed, worker 1's (a/1/9) did not, and
    /// a/1/11 wrote outputs but no progress record. Incarnation `b` resumed
    /// from {0: 30, 1: 20} and its last transactions are not yet committed
    /// past {0: 40, 1: 25}.
    fn history() -> Vec<ProgressRecord> {
        let a = [(0, 0), (1, 0)];
        let b = [(0, 30), (1, 20)];
        vec![
            record("a/0/3", &[(0, 10)], &a),
            record("a/1/4", &[(1, 20)], &a),
            record("a/0/7", &[(0, 30)], &a),
            record("a/1/9", &[(1, 35)], &a),
            record("b/0/2", &[(0, 40)], &b),
            record("b/1/2", &[(1, 25)], &b),
            record("b/1/5", &[(1, 50)], &b),
        ]
    }

    fn judge(progress: &[ProgressRecord]) -> Vec<bool> {
        let now = [(0, 40), (1, 25)].into_iter().collect();
        let committed = Committed::new(progress, &now);
        [
            "a/0/3", "a/0/7", "a/0/8", "a/1/4", "a/1/9", "a/1/11", "b/0/2", "b/1/2", "b/1/5",
            "c/0/1",
        ]
        .iter()
        .map(|t| committed.contains(&txn(t)))
        .collect()
    }

    #[test]
    fn each_writers_last_progress_record_decides() {
        assert_eq!(
            judge(&history()),
            [true, true, false, true, false, false, true, true, false, false]
        );
    }

    #[test]
    fn a_compacted_progress_topic_gives_the_same_answers() {
        // What compaction by writer key leaves: each writer's last record, in order.
        let all = history();
        let compacted: Vec<ProgressRecord> = all
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                let writer = |r: &ProgressRecord| {
                    let t = txn(&r.txn);
                    (t.incarnation, t.worker)
                };
                !all[i + 1..].iter().any(|later| writer(later) == writer(r))
            })
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(compacted.len(), 4);
        assert_eq!(judge(&compacted), judge(&all));
    }
}
