//! The exactly-once sink: one transactional producer per worker commits
//! each finished stretch of epochs — outputs, dead letters, a progress
//! record and the input offsets they cover — in one transaction (the
//! invariants are in [`super`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, Exchange};

use super::protocol::{
    progress_key, transactional_id, ProgressRecord, TxnId, HEADER_EPOCH, HEADER_INCARNATION,
    HEADER_WORKER,
};
use crate::core::fault::Fault;
use crate::core::metrics::{self, Tap};
use crate::core::record::{now_ns, DeadLetter};
use crate::core::scored::{Output, OutputFormat, Tally};
use crate::core::Epoch;
use crate::io::kafka::{
    dead_letter_message, output_record, send, topic_of, KafkaConfig, OffsetLedger, SinkContext,
    PRODUCER_DEFAULTS,
};
use crate::io::{Deads, Outputs, Sink, Stats, Written};

/// Whether a fresh start recovers from this error of a transaction call: a
/// transaction error librdkafka does not call fatal leaves the transaction
/// to be aborted, and a fresh start (whose fencing aborts it) redoes it; a
/// fatal one (fenced by a newer instance, a bound exceeded) does not.
fn restartable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if !t.is_fatal())
}

/// A worker's transactional producer, its zombie fenced (invariant 5).
pub fn transactional_producer(
    config: &KafkaConfig,
    group: &str,
    worker: usize,
    workers: usize,
) -> Result<BaseProducer<SinkContext>, Fault> {
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
        .create_with_context(SinkContext::new(config.context()))
        .map_err(|e| Fault::fatal(format!("cannot create a transactional producer: {e}")))?;
    producer
        .init_transactions(config.connect_timeout.max(Duration::from_secs(30)))
        .map_err(|e| {
            Fault::fatal(format!(
                "cannot start transactions as `{txn_id}` (does the broker support them?): {e}"
            ))
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
    cleaned_topic: Option<String>,
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
    /// The group's committed offsets when this incarnation started, read
    /// after the fencing (invariant 5).
    pub resumed_from: Arc<BTreeMap<i32, i64>>,
    /// How to reach the cluster.
    pub config: &'a Arc<KafkaConfig>,
    /// Where outputs go.
    pub topic: &'a str,
    /// Where feature rows go when the run also scores them (`--cleaned-topic`).
    pub cleaned_topic: Option<&'a str>,
    /// Where dead letters go.
    pub dead_letter_topic: &'a str,
    /// Where progress records go (one partition, compacted).
    pub progress_topic: &'a str,
    /// The topic read, whose offsets the transactions commit.
    pub input_topic: &'a str,
    /// The dataflow spec's name, for the progress records.
    pub dataflow: &'a str,
    /// The consumer group whose offsets the transactions commit.
    pub group: &'a str,
    /// This run's id ([`new_incarnation`](super::protocol::new_incarnation)),
    /// the same on every process.
    pub incarnation: &'a str,
    /// This worker's global index.
    pub worker: usize,
    /// Workers in the run, over every process.
    pub workers: usize,
    /// The ledger this worker's source writes its offsets into.
    pub ledger: OffsetLedger,
    /// How a scored application is written.
    pub format: OutputFormat,
    /// The run's counters and first fault.
    pub stats: Arc<Stats>,
}

impl TransactionalSink {
    /// A sink writing through `c.producer`.
    pub fn new(c: TransactionalSinkConfig<'_>) -> Result<TransactionalSink, Fault> {
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
                .map_err(|e| Fault::fatal(format!("cannot create a Kafka consumer: {e}")))?;
            consumer
                .group_metadata()
                .ok_or_else(|| Fault::fatal(format!("no group metadata for group `{}`", c.group)))?
        };
        tracing::info!(worker = c.worker, incarnation = c.incarnation, resumed_from = ?c.resumed_from, "transactions ready");
        if let Some(m) = metrics::installed() {
            m.transactions_ready();
        }
        Ok(TransactionalSink {
            producer: c.producer,
            group_metadata,
            config: Arc::clone(c.config),
            topic: c.topic.to_owned(),
            cleaned_topic: c.cleaned_topic.map(str::to_owned),
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
        outputs: Vec<Output>,
        dead: Vec<DeadLetter>,
        offsets: &[(i32, i64)],
    ) -> Result<Tally, Fault> {
        let producer = &self.producer;
        let message = |what: &str, e: &dyn fmt::Display| {
            format!("transaction {txn} failed to {what}: {e} (nothing of it is committed; a restart resumes after the last committed transaction)")
        };
        let fail = |what: &str, e: &dyn fmt::Display| Fault::fatal(message(what, e));
        let txn_fail = |what: &str, e: &KafkaError| {
            if restartable(e) {
                Fault::restartable(message(what, e))
            } else {
                Fault::fatal(message(what, e))
            }
        };
        let t0 = std::time::Instant::now();
        producer
            .begin_transaction()
            .map_err(|e| txn_fail("begin", &e))?;
        let epoch = txn.epoch.to_string();
        let now = now_ns();
        let mut value = Vec::with_capacity(1024);
        let mut tally = Tally::default();
        let mut tap = Tap::new();
        // What `verify` counts: the messages of the output topic.
        let mut n = 0;
        for s in &outputs {
            value.clear();
            self.format.write(s, now, &mut value);
            tally.count(s);
            tap.see(s, now);
            let topic = topic_of(s, &self.topic, self.cleaned_topic.as_deref());
            n += u64::from(topic == self.topic);
            let record = output_record(topic, s, &value, 0).headers(self.headers(&epoch));
            send(producer, record)?;
        }
        tally.dead_letters = dead.len() as u64;
        let n_dead = tally.dead_letters;
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
                Err(Fault::restartable(message(
                    "add its offsets",
                    &"abortable error (failpoint)",
                )))
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
        if let Some(m) = metrics::installed() {
            m.transaction(true);
            for &(p, o) in offsets {
                m.set_committed_offset(&self.input_topic, p, o);
            }
        }
        tap.flush();
        tracing::debug!(%txn, produced = ?t1, offsets_sent = ?t2, flushed = ?t3, committed = ?t0.elapsed(), n, "transaction timing");
        if let Some(failure) = producer.context().deliveries.failure() {
            return Err(failure);
        }
        Ok(tally)
    }
}

/// Waits until every message is acknowledged. (rdkafka's own `flush`
/// polls in whole 100 ms steps, which would cap a worker at ten
/// transactions a second.)
fn flush(producer: &BaseProducer<SinkContext>, timeout: Duration) -> Result<(), Fault> {
    let deadline = std::time::Instant::now() + timeout;
    // A zero-timeout flush sends what lingers right away.
    let _ = producer.flush(Duration::ZERO);
    while producer.in_flight_count() > 0 {
        if std::time::Instant::now() > deadline {
            return Err(Fault::fatal(format!(
                "{} messages still unacknowledged after {timeout:?}",
                producer.in_flight_count()
            )));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Outputs of one epoch waiting for their transaction.
#[derive(Default)]
struct Stash {
    scored: Vec<Output>,
    dead: Vec<DeadLetter>,
}

impl Sink for TransactionalSink {
    fn build<'s>(self: Box<Self>, scored: Outputs<'s>, dead: Deads<'s>) -> Written<'s> {
        let mut this = *self;
        // To the worker that read the record's partition (invariant 2).
        let scored = scored.exchange(|s: &Output| s.origin().partition() as u64);
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
                    if this.stats.failed() {
                        // The run failed (a foreign cleaned row, say): commit
                        // nothing more, not even an empty transaction.
                        held_forever = caps;
                        return;
                    }
                    match this.commit(&txn, scored_out, dead_out, &offsets) {
                        Ok(tally) => {
                            seq += 1;
                            this.stats.outputs(tally);
                            tracing::debug!(%txn, ?tally, ?offsets, "committed");
                            drop(caps); // invariant 4: released only once committed
                        }
                        Err(e) => {
                            // Aborted here, or by the next start's fencing.
                            if let Some(m) = metrics::installed() {
                                m.transaction(false);
                            }
                            this.stats.fail(e);
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
}
