//! Exactly-once Kafka → Kafka: one transactional producer per worker commits
//! each finished stretch of epochs — its outputs, its dead letters, a
//! progress record and the input offsets they cover — in one transaction.
//!
//! # Where offsets meet outputs
//! A transaction can only cover offsets and outputs of one producer, so both
//! must end up on the same worker. The source already reads partition `p` on
//! worker `p % W` (see [`crate::io::kafka`]); in this mode the scored
//! applications and dead letters are exchanged by their *input partition*
//! to that same worker before the sink. The offsets never leave the worker:
//! the source writes each closed epoch's offsets into the worker's
//! [`OffsetLedger`], the sink reads them there.
//!
//! Invariants, per worker `w`:
//! 1. The source writes the offsets snapshot of epoch `e` (the offset after
//!    the last record of each owned partition read at or before `e`) into
//!    the ledger *before* its capability passes `e`.
//! 2. Every output (and dead letter) of a record read from `p` at epoch `e`
//!    reaches the sink of worker `p % W` at a time ≤ `e` (times only grow
//!    along the graph).
//! 3. So when the sink's input frontier has passed `e`, it holds every
//!    output of every record its ledger's snapshot `e` covers, and nothing
//!    of a later record: a transaction with exactly those outputs and that
//!    snapshot is all-or-nothing for the records it covers. Outputs of
//!    later epochs stay stashed for the next transaction.
//! 4. A transaction that fails to commit stops the run (the next start
//!    resumes from the last committed offsets); transactions of one
//!    incarnation therefore commit strictly in order, and the sink holds
//!    the capabilities of uncommitted epochs, so the `done` probe (and with
//!    it the source's drain) waits for the commit.
//! 5. `transactional.id` is `GROUP.tx.W-w` (worker `w` of `W`): a restarted
//!    worker's `init_transactions` fences its zombie and waits out whatever
//!    it left open. run.rs initialises every local worker's producer
//!    *before* it reads the committed offsets the run resumes from.
//!
//! # Telling aborted records apart
//! Some brokers (Tansu among them) deliver records of aborted transactions
//! even to `read_committed` readers; only the committed offsets are
//! trustworthy there. So every message carries headers naming its writer —
//! `loanflow.incarnation` (fresh per run, the same on every process of a
//! cluster), `loanflow.worker`, `loanflow.epoch` (the transaction's number
//! within the incarnation) — and every transaction writes, after its outputs,
//! a progress record to the progress topic (one partition, so in order;
//! compacted, keyed by writer `GROUP/INCARNATION/WORKER`): its id, the input
//! offsets it commits, and `resumed_from`, the committed offsets of every
//! partition as they were when this incarnation started (read after the
//! fencing, before any of its commits). A progress record may itself be an
//! aborted one, but what it states is true either way. Hence the rule
//! `loanflow verify` applies, which needs only each writer's last progress
//! record (what compaction keeps):
//! - that last transaction committed iff every offset it names is ≤ the
//!   committed offset of that partition when the next incarnation started
//!   (its `resumed_from`; for the last incarnation, the committed offsets
//!   now): each transaction moves the offset of every partition it has
//!   outputs from (invariant 3), so an uncommitted one names an offset past
//!   what was committed;
//! - every earlier transaction of that writer committed, since a writer
//!   begins a transaction only after the previous one committed (invariant 4);
//! - a transaction after it (its outputs written, its progress record not)
//!   was aborted, as is one of a writer with no progress record at all.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, Exchange};
use timely::dataflow::Stream;

use crate::dataflow::predict::{OutputFormat, Scored};
use crate::dataflow::{Batches, Epoch};
use crate::io::kafka::{
    dead_letter_message, send, Context, KafkaConfig, SinkContext, PRODUCER_DEFAULTS,
};
use crate::io::{Sink, Stats};
use crate::record::{now_ns, DeadLetter};

/// Header names every exactly-once message carries.
pub const HEADER_INCARNATION: &str = "loanflow.incarnation";
pub const HEADER_WORKER: &str = "loanflow.worker";
pub const HEADER_EPOCH: &str = "loanflow.epoch";

/// A fresh id for this process's writers: 16 hex digits.
pub fn new_incarnation() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One transaction: which writer (incarnation, worker) and its number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TxnId {
    pub incarnation: String,
    pub worker: usize,
    pub epoch: u64,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.incarnation, self.worker, self.epoch)
    }
}

impl std::str::FromStr for TxnId {
    type Err = String;
    fn from_str(s: &str) -> Result<TxnId, String> {
        let bad = || format!("not a transaction id (INCARNATION/WORKER/EPOCH): `{s}`");
        let mut parts = s.split('/');
        let (Some(incarnation), Some(worker), Some(epoch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if incarnation.is_empty() {
            return Err(bad());
        }
        Ok(TxnId {
            incarnation: incarnation.to_owned(),
            worker: worker.parse().map_err(|_| bad())?,
            epoch: epoch.parse().map_err(|_| bad())?,
        })
    }
}

/// Why a transaction failed, and whether a fresh start redoes it: a
/// transaction the broker made us abort (it went away mid-transaction) is
/// restartable; a fatal one (fenced by a newer instance, a bound exceeded)
/// is not.
struct CommitError {
    message: String,
    restartable: bool,
}

/// Whether a fresh start recovers from this error of a transaction call: a
/// transaction error librdkafka does not call fatal leaves the transaction
/// to be aborted, and a fresh start (whose fencing aborts it) redoes it.
fn restartable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if !t.is_fatal())
}

impl From<String> for CommitError {
    fn from(message: String) -> CommitError {
        CommitError {
            message,
            restartable: false,
        }
    }
}

/// The key of a writer's progress records: `GROUP/INCARNATION/WORKER`.
pub fn progress_key(group: &str, txn: &TxnId) -> String {
    format!("{group}/{}/{}", txn.incarnation, txn.worker)
}

/// The progress record each transaction writes (JSON, keyed by its writer,
/// [`progress_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressRecord {
    pub txn: String,
    pub dataflow: String,
    pub group: String,
    pub input_topic: String,
    pub workers: usize,
    /// Partition → the next offset to read: everything before it is covered.
    pub offsets: BTreeMap<i32, i64>,
    /// The group's committed offsets when this incarnation started.
    pub resumed_from: BTreeMap<i32, i64>,
    pub outputs: u64,
    pub dead_letters: u64,
}

/// The offsets snapshots of one worker's source, read by the same worker's
/// sink (invariant 1). Worker-local: timely workers are single threads.
#[derive(Clone, Default)]
pub struct OffsetLedger(Rc<RefCell<BTreeMap<Epoch, Offsets>>>);

/// (partition, next offset) pairs, sorted by partition.
pub type Offsets = Vec<(i32, i64)>;

impl OffsetLedger {
    /// The source closed `epoch` with these next offsets.
    pub fn record(&self, epoch: Epoch, offsets: Vec<(i32, i64)>) {
        self.0.borrow_mut().insert(epoch, offsets);
    }

    /// The newest snapshot of an epoch before `frontier` (`None`: every
    /// epoch), forgetting it and the older ones.
    pub fn take_before(&self, frontier: Option<Epoch>) -> Option<Vec<(i32, i64)>> {
        let mut ledger = self.0.borrow_mut();
        let rest = match frontier {
            Some(f) => ledger.split_off(&f),
            None => BTreeMap::new(),
        };
        let done = std::mem::replace(&mut *ledger, rest);
        done.into_values().next_back()
    }
}

/// The transactional.id of worker `worker` of `workers` (invariant 5).
pub fn transactional_id(group: &str, worker: usize, workers: usize) -> String {
    format!("{group}.tx.{workers}-{worker}")
}

/// The group's committed offsets of `partitions` (partitions it never
/// committed are left out).
pub fn committed_offsets(
    config: &KafkaConfig,
    group: &str,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> Result<BTreeMap<i32, i64>, String> {
    let consumer: BaseConsumer<Context> = config
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .create_with_context(Context::default())
        .map_err(|e| format!("cannot create a Kafka consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, config.connect_timeout)
        .map_err(|e| format!("cannot read the committed offsets of group `{group}`: {e}"))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// A worker's transactional producer, its zombie fenced (invariant 5).
pub fn transactional_producer(
    config: &KafkaConfig,
    group: &str,
    worker: usize,
    workers: usize,
) -> Result<BaseProducer<SinkContext>, String> {
    let txn_id = transactional_id(group, worker, workers);
    let txn_timeout = (config.max_outage + Duration::from_secs(60)).as_millis();
    let producer: BaseProducer<SinkContext> = config
        .client_config(
            &[
                PRODUCER_DEFAULTS,
                &[
                    ("transactional.id", txn_id.as_str()),
                    ("transaction.timeout.ms", &txn_timeout.to_string()),
                ],
            ]
            .concat(),
        )
        .create_with_context(SinkContext::default())
        .map_err(|e| format!("cannot create a transactional producer: {e}"))?;
    producer
        .init_transactions(config.connect_timeout.max(Duration::from_secs(30)))
        .map_err(|e| {
            format!("cannot start transactions as `{txn_id}` (does the broker support them?): {e}")
        })?;
    Ok(producer)
}

/// One worker's transactional sink, ready to build (its producer has
/// already fenced the previous incarnation).
pub struct TransactionalSink {
    producer: BaseProducer<SinkContext>,
    /// The group's metadata, which `send_offsets_to_transaction` needs.
    group_metadata: ConsumerGroupMetadata,
    config: Arc<KafkaConfig>,
    topic: String,
    dead_letter_topic: String,
    progress_topic: String,
    input_topic: String,
    dataflow: String,
    group: String,
    incarnation: String,
    worker: usize,
    /// `worker` as text, for the header of every message.
    worker_header: String,
    workers: usize,
    /// The committed offsets when this incarnation started.
    resumed_from: Arc<BTreeMap<i32, i64>>,
    ledger: OffsetLedger,
    format: OutputFormat,
    stats: Arc<Stats>,
}

/// Everything a [`TransactionalSink`] is made from.
pub struct TransactionalSinkConfig<'a> {
    /// From [`transactional_producer`].
    pub producer: BaseProducer<SinkContext>,
    pub resumed_from: Arc<BTreeMap<i32, i64>>,
    pub config: &'a Arc<KafkaConfig>,
    pub topic: &'a str,
    pub dead_letter_topic: &'a str,
    pub progress_topic: &'a str,
    pub input_topic: &'a str,
    pub dataflow: &'a str,
    pub group: &'a str,
    pub incarnation: &'a str,
    pub worker: usize,
    pub workers: usize,
    pub ledger: OffsetLedger,
    pub format: OutputFormat,
    pub stats: Arc<Stats>,
}

impl TransactionalSink {
    /// A sink writing through `c.producer`.
    pub fn new(c: TransactionalSinkConfig<'_>) -> Result<TransactionalSink, String> {
        // Only a group consumer gives the metadata; it is dropped right away,
        // while the broker is up: dropping one waits, without a bound, until
        // it has closed, which a broker that went away (or one that keeps
        // closing connections, BROKER_NOTES quirk 13) never lets happen, and
        // the run would hang on its way out.
        let group_metadata = {
            let consumer: BaseConsumer = c
                .config
                .client_config(&[("group.id", c.group), ("enable.auto.commit", "false")])
                .create()
                .map_err(|e| format!("cannot create a Kafka consumer: {e}"))?;
            consumer
                .group_metadata()
                .ok_or_else(|| format!("no group metadata for group `{}`", c.group))?
        };
        tracing::info!(worker = c.worker, incarnation = c.incarnation, resumed_from = ?c.resumed_from, "transactions ready");
        Ok(TransactionalSink {
            producer: c.producer,
            group_metadata,
            config: Arc::clone(c.config),
            topic: c.topic.to_owned(),
            dead_letter_topic: c.dead_letter_topic.to_owned(),
            progress_topic: c.progress_topic.to_owned(),
            input_topic: c.input_topic.to_owned(),
            dataflow: c.dataflow.to_owned(),
            group: c.group.to_owned(),
            incarnation: c.incarnation.to_owned(),
            worker: c.worker,
            worker_header: c.worker.to_string(),
            workers: c.workers,
            resumed_from: c.resumed_from,
            ledger: c.ledger,
            format: c.format,
            stats: c.stats,
        })
    }

    fn headers(&self, epoch: &str) -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: HEADER_INCARNATION,
                value: Some(self.incarnation.as_str()),
            })
            .insert(Header {
                key: HEADER_WORKER,
                value: Some(self.worker_header.as_str()),
            })
            .insert(Header {
                key: HEADER_EPOCH,
                value: Some(epoch),
            })
    }

    /// One transaction: the stashed outputs, a progress record and the
    /// offsets, all or nothing (invariant 3). Returns what it wrote.
    fn commit(
        &mut self,
        txn: &TxnId,
        scored: Vec<Scored>,
        dead: Vec<DeadLetter>,
        offsets: &[(i32, i64)],
    ) -> Result<(u64, u64, u64), CommitError> {
        let producer = &self.producer;
        let fail = |what: &str, e: &dyn fmt::Display| {
            format!("transaction {txn} failed to {what}: {e} (nothing of it is committed; a restart resumes after the last committed transaction)")
        };
        let txn_fail = |what: &str, e: &KafkaError| CommitError {
            message: fail(what, e),
            restartable: restartable(e),
        };
        let t0 = std::time::Instant::now();
        producer
            .begin_transaction()
            .map_err(|e| txn_fail("begin", &e))?;
        let epoch = txn.epoch.to_string();
        let now = now_ns();
        let mut value = Vec::with_capacity(1024);
        let (n, n_dead) = (scored.len() as u64, dead.len() as u64);
        let mut flagged = 0;
        for s in &scored {
            value.clear();
            self.format.write(s, now, &mut value);
            flagged += s.flagged as u64;
            let record = BaseRecord::with_opaque_to(self.topic.as_str(), 0)
                .key(s.id.as_bytes())
                .payload(value.as_slice())
                .headers(self.headers(&epoch));
            send(producer, record)?;
        }
        for d in &dead {
            let (key, json, headers) = dead_letter_message(d, self.headers(&epoch));
            let record = BaseRecord::with_opaque_to(self.dead_letter_topic.as_str(), 0)
                .key(key.as_bytes())
                .payload(json.as_slice())
                .headers(headers);
            send(producer, record)?;
        }
        let txn_text = txn.to_string();
        let progress = ProgressRecord {
            txn: txn_text.clone(),
            dataflow: self.dataflow.clone(),
            group: self.group.clone(),
            input_topic: self.input_topic.clone(),
            workers: self.workers,
            offsets: offsets.iter().copied().collect(),
            resumed_from: (*self.resumed_from).clone(),
            outputs: n,
            dead_letters: n_dead,
        };
        let json = serde_json::to_vec(&progress).expect("plain data");
        // Keyed by writer: compaction keeps each writer's last record, all
        // the rule needs.
        let key = progress_key(&self.group, txn);
        let record = BaseRecord::with_opaque_to(self.progress_topic.as_str(), 0)
            .key(key.as_bytes())
            .payload(json.as_slice())
            .headers(self.headers(&epoch));
        send(producer, record)?;
        let t1 = t0.elapsed();
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for &(p, o) in offsets {
                tpl.add_partition_offset(&self.input_topic, p, Offset::Offset(o))
                    .map_err(|e| fail("list its offsets", &e))?;
            }
            // Its outputs and progress record delivered first: the case
            // where `verify` must tell from the offsets that it was aborted.
            fail::fail_point!("txn-add-offsets", |_| {
                let _ = flush(producer, self.config.max_outage);
                Err(CommitError {
                    message: fail("add its offsets", &"abortable error (failpoint)"),
                    restartable: true,
                })
            });
            producer
                .send_offsets_to_transaction(
                    &tpl,
                    &self.group_metadata,
                    self.config.connect_timeout,
                )
                .map_err(|e| txn_fail("add its offsets", &e))?;
        }
        let t2 = t0.elapsed();
        flush(producer, self.config.max_outage).map_err(|e| fail("deliver its messages", &e))?;
        let t3 = t0.elapsed();
        if let Err(e) = producer.commit_transaction(self.config.max_outage) {
            let _ = producer.abort_transaction(self.config.connect_timeout);
            return Err(txn_fail("commit", &e));
        }
        tracing::debug!(%txn, produced = ?t1, offsets_sent = ?t2, flushed = ?t3, committed = ?t0.elapsed(), n, "transaction timing");
        if let Some(failure) = producer.context().deliveries.failure() {
            return Err(failure.into());
        }
        Ok((n, flagged, n_dead))
    }
}

/// Waits until every message is acknowledged. (rdkafka's own `flush`
/// polls in whole 100 ms steps, which would cap a worker at ten
/// transactions a second.)
fn flush(producer: &BaseProducer<SinkContext>, timeout: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    // A zero-timeout flush sends what lingers right away.
    let _ = producer.flush(Duration::ZERO);
    while producer.in_flight_count() > 0 {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{} messages still unacknowledged after {timeout:?}",
                producer.in_flight_count()
            ));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Outputs of one epoch waiting for their transaction.
#[derive(Default)]
struct Stash {
    scored: Vec<Scored>,
    dead: Vec<DeadLetter>,
}

impl Sink for TransactionalSink {
    fn build<'s>(
        self: Box<Self>,
        scored: Batches<'s, Scored>,
        dead: Batches<'s, DeadLetter>,
    ) -> Stream<'s, Epoch, Vec<()>> {
        let mut this = *self;
        // To the worker that read the record's partition (invariant 2).
        let scored = scored.exchange(|s: &Scored| s.origin.partition() as u64);
        let dead = dead.exchange(|d: &DeadLetter| d.origin.partition() as u64);
        scored.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
            dead,
            Pipeline,
            Pipeline,
            "TransactionalSink",
            move |_, _| {
                let mut stash: BTreeMap<Epoch, (Capability<Epoch>, Stash)> = BTreeMap::new();
                let mut seq: u64 = 0;
                // After a failed commit: the epochs it covered, never released.
                let mut held_forever: Vec<Capability<Epoch>> = Vec::new();
                move |(scored, scored_frontier), (dead, dead_frontier), output| {
                    scored.for_each(|cap, batch| {
                        let Some(&epoch) = cap.least() else { return };
                        let entry = stash.entry(epoch).or_insert_with(|| {
                            let cap = cap.retain_least(output.output_index()).expect("a time");
                            (cap, Stash::default())
                        });
                        entry.1.scored.append(batch);
                    });
                    dead.for_each(|cap, batch| {
                        let Some(&epoch) = cap.least() else { return };
                        let entry = stash.entry(epoch).or_insert_with(|| {
                            let cap = cap.retain_least(output.output_index()).expect("a time");
                            (cap, Stash::default())
                        });
                        entry.1.dead.append(batch);
                    });
                    if !held_forever.is_empty() {
                        return; // hold every capability: nothing more is committed
                    }
                    // Epochs are totally ordered: each frontier is one time or none.
                    let frontier = [scored_frontier.frontier(), dead_frontier.frontier()]
                        .iter()
                        .filter_map(|f| f.first().copied())
                        .min();
                    let offsets = this.ledger.take_before(frontier);
                    let ready: Vec<Epoch> = stash
                        .keys()
                        .copied()
                        .take_while(|e| frontier.is_none_or(|f| *e < f))
                        .collect();
                    if ready.is_empty() && offsets.is_none() {
                        return;
                    }
                    let (mut scored_out, mut dead_out) = (Vec::new(), Vec::new());
                    let mut caps = Vec::with_capacity(ready.len());
                    for e in ready {
                        let (cap, s) = stash.remove(&e).expect("listed");
                        scored_out.extend(s.scored);
                        dead_out.extend(s.dead);
                        caps.push(cap);
                    }
                    // The source records a snapshot only when its offsets moved.
                    let offsets = offsets.unwrap_or_default();
                    if scored_out.is_empty() && dead_out.is_empty() && offsets.is_empty() {
                        return;
                    }
                    let txn = TxnId {
                        incarnation: this.incarnation.clone(),
                        worker: this.worker,
                        epoch: seq,
                    };
                    match this.commit(&txn, scored_out, dead_out, &offsets) {
                        Ok((n, flagged, n_dead)) => {
                            seq += 1;
                            this.stats.outputs(n, flagged, n_dead);
                            tracing::debug!(%txn, outputs = n, ?offsets, "committed");
                            drop(caps); // invariant 4: released only once committed
                        }
                        Err(e) => {
                            this.stats.fail_with(e.message, e.restartable);
                            held_forever = caps;
                        }
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// librdkafka's own verdicts on AddOffsetsToTxn errors, from its mock
    /// cluster (a fast stand-in: only the error matters here):
    /// GROUP_AUTHORIZATION_FAILED leaves the transaction to be aborted,
    /// INVALID_PRODUCER_EPOCH is fatal.
    #[test]
    fn an_abortable_transaction_error_is_restartable_a_fatal_one_is_not() {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::mocking::MockCluster;
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        use rdkafka::ClientConfig;

        let add_offsets = |injected: RDKafkaRespErr| -> KafkaError {
            let mock = MockCluster::new(1).unwrap();
            mock.create_topic("in", 1, 1).unwrap();
            mock.create_topic("out", 1, 1).unwrap();
            let config = |extra: &[(&str, &str)]| {
                let mut c = ClientConfig::new();
                c.set("bootstrap.servers", mock.bootstrap_servers());
                for (k, v) in extra {
                    c.set(*k, *v);
                }
                c
            };
            let producer: BaseProducer = config(&[("transactional.id", "t")]).create().unwrap();
            let consumer: BaseConsumer = config(&[("group.id", "g")]).create().unwrap();
            let timeout = Duration::from_secs(10);
            producer.init_transactions(timeout).unwrap();
            producer.begin_transaction().unwrap();
            producer
                .send(BaseRecord::<[u8], [u8]>::to("out").payload(b"x".as_slice()))
                .unwrap();
            mock.request_errors(RDKafkaApiKey::AddOffsetsToTxn, &[injected]);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("in", 0, Offset::Offset(1))
                .unwrap();
            let group = consumer.group_metadata().unwrap();
            producer
                .send_offsets_to_transaction(&tpl, &group, timeout)
                .unwrap_err()
        };
        let abortable = add_offsets(RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED);
        assert!(
            matches!(&abortable, KafkaError::Transaction(t) if t.txn_requires_abort()),
            "{abortable:?}"
        );
        assert!(restartable(&abortable), "{abortable:?}");
        let fatal = add_offsets(RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH);
        assert!(
            matches!(&fatal, KafkaError::Transaction(t) if t.is_fatal()),
            "{fatal:?}"
        );
        assert!(!restartable(&fatal), "{fatal:?}");
    }

    #[test]
    fn transaction_ids_round_trip_and_reject_garbage() {
        let id = TxnId {
            incarnation: "00ff".into(),
            worker: 3,
            epoch: 42,
        };
        assert_eq!(id.to_string(), "00ff/3/42");
        assert_eq!("00ff/3/42".parse::<TxnId>().unwrap(), id);
        for bad in ["", "a/b/c", "x/1", "x/1/2/3", "/1/2", "x/-1/2"] {
            assert!(bad.parse::<TxnId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ledger_gives_the_newest_snapshot_before_the_frontier() {
        let ledger = OffsetLedger::default();
        ledger.record(1, vec![(0, 10)]);
        ledger.record(2, vec![(0, 20)]);
        ledger.record(5, vec![(0, 50)]);
        assert_eq!(ledger.take_before(Some(1)), None);
        assert_eq!(ledger.take_before(Some(3)), Some(vec![(0, 20)]));
        assert_eq!(ledger.take_before(Some(3)), None);
        assert_eq!(ledger.take_before(None), Some(vec![(0, 50)]));
    }
}
