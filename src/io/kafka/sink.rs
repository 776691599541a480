//! The Kafka sink (at least once: scored applications keyed by id, dead
//! letters with their reason in headers) and what every loanflow producer
//! shares: its settings, its delivery tracking ([`SinkContext`]) and a
//! `send` that waits for room.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use super::config::{Context, KafkaConfig};
use crate::core::fault::Fault;
use crate::core::metrics::Tap;
use crate::core::record::{now_ns, DeadLetter, Stage};
use crate::core::scored::{Output, OutputFormat, Tally};
use crate::core::Epoch;
use crate::io::{Deads, Outputs, Sink, Stats, Written};

/// Counts unacknowledged messages per epoch from the producer's delivery reports.
#[derive(Default)]
pub struct DeliveryTracker {
    /// (topic-independent) epoch → messages sent but not yet acknowledged.
    pending: Mutex<BTreeMap<Epoch, u64>>,
    failure: Mutex<Option<Fault>>,
}

impl DeliveryTracker {
    /// One more message of `epoch` was handed to the producer.
    pub fn sent(&self, epoch: Epoch) {
        *self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(epoch)
            .or_default() += 1;
    }

    fn outstanding(&self, epoch: Epoch) -> u64 {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&epoch)
            .copied()
            .unwrap_or(0)
    }

    /// The first delivery that failed, if any.
    pub fn failure(&self) -> Option<Fault> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Messages sent and not yet acknowledged, over all epochs.
    pub fn outstanding_total(&self) -> u64 {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

/// The sink producer's context: logs like [`Context`], tracks deliveries.
pub struct SinkContext {
    client: Context,
    /// What the producer has sent and the broker not yet acknowledged.
    pub deliveries: DeliveryTracker,
}

impl SinkContext {
    /// A context over `client` (from [`KafkaConfig::context`]).
    pub fn new(client: Context) -> SinkContext {
        SinkContext {
            client,
            deliveries: DeliveryTracker::default(),
        }
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.client.log(level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason)
    }
}

impl ProducerContext for SinkContext {
    // The epoch itself (a usize: no allocation per message).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        let epoch = epoch as Epoch;
        match result {
            Ok(_) => {
                let mut pending = self
                    .deliveries
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if let Some(n) = pending.get_mut(&epoch) {
                    *n -= 1;
                    if *n == 0 {
                        pending.remove(&epoch);
                    }
                }
            }
            Err((e, message)) => {
                let mut failure = self
                    .deliveries
                    .failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                failure.get_or_insert_with(|| {
                    let hint = match e {
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                            " (the broker did not take it within --max-outage); nothing undelivered was committed: re-run to resume from the committed offsets"
                        }
                        _ => "; nothing undelivered was committed",
                    };
                    Fault::fatal(format!(
                        "a message to `{}` was not delivered: {e}{hint}",
                        message.topic()
                    ))
                });
            }
        }
    }
}

/// The producer settings of every loanflow sink (the user's -X still win).
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "5"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "1000000"),
    ("acks", "all"),
];

/// How much longer than `--max-outage` a message may wait for delivery.
const MESSAGE_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// Creates a producer for a sink.
pub fn producer(config: &KafkaConfig) -> Result<BaseProducer<SinkContext>, Fault> {
    // A message undelivered after the longest outage we wait out fails the
    // run. It may have been queued a while before the broker went away, so it
    // gets a margin beyond --max-outage: the outage clock (started when the
    // broker stops answering) decides when the run gives up, this is the
    // backstop for a broker that answers the consumer but takes no messages.
    let timeout = (config.max_outage + MESSAGE_TIMEOUT_MARGIN)
        .as_millis()
        .to_string();
    config
        .client_config(
            &[
                PRODUCER_DEFAULTS,
                &[("message.timeout.ms", timeout.as_str())],
            ]
            .concat(),
        )
        .create_with_context(SinkContext::new(config.context()))
        .map_err(|e| Fault::fatal(format!("cannot create a Kafka producer: {e}")))
}

/// Sends one message, waiting for room when librdkafka's queue is full.
pub fn send(
    producer: &BaseProducer<SinkContext>,
    mut record: BaseRecord<'_, [u8], [u8], usize>,
) -> Result<(), Fault> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(5));
                record = r;
            }
            Err((e, record)) => {
                return Err(Fault::fatal(format!(
                    "cannot send to `{}`: {e}",
                    record.topic
                )))
            }
        }
    }
}

/// Writes outputs to one topic (key = id, value = the JSON object of the
/// file sink), feature rows to the cleaned topic if there is one, and dead
/// letters to another.
pub struct KafkaSink {
    /// How to reach the cluster.
    pub config: Arc<KafkaConfig>,
    /// Where outputs go.
    pub topic: String,
    /// Where feature rows go when the run also scores them (`--cleaned-topic`);
    /// `None`: to `topic`.
    pub cleaned_topic: Option<String>,
    /// Where dead letters go.
    pub dead_letter_topic: String,
    /// How a scored application is written.
    pub format: OutputFormat,
    /// The run's counters and first fault.
    pub stats: Arc<Stats>,
}

impl Sink for KafkaSink {
    fn build<'s>(self: Box<Self>, scored: Outputs<'s>, dead: Deads<'s>) -> Written<'s> {
        let this = *self;
        let scope = scored.scope();
        scored.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
            dead,
            Pipeline,
            Pipeline,
            "KafkaSink",
            move |_, info| {
                let activator = scope.activator_for(info.address);
                let producer = producer(&this.config).map_err(|e| this.stats.fail(e)).ok();
                // Capabilities of epochs with messages in flight (invariant 2).
                let mut held: BTreeMap<Epoch, Capability<Epoch>> = BTreeMap::new();
                let mut value = Vec::with_capacity(1024);
                let mut tap = Tap::new();
                move |(scored, scored_frontier), (dead, dead_frontier), output| {
                    let Some(producer) = producer.as_ref() else {
                        scored.for_each(|_, _| {});
                        dead.for_each(|_, _| {});
                        return;
                    };
                    let mut tally = Tally::default();
                    let now = now_ns();
                    scored.for_each(|cap, batch| {
                        let Some(&epoch) = cap.least() else { return };
                        held.entry(epoch).or_insert_with(|| {
                            cap.retain_least(output.output_index()).expect("a time")
                        });
                        for s in batch.drain(..) {
                            value.clear();
                            this.format.write(&s, now, &mut value);
                            let topic = topic_of(&s, &this.topic, this.cleaned_topic.as_deref());
                            let record = output_record(topic, &s, &value, epoch as usize);
                            match send(producer, record) {
                                Ok(()) => producer.context().deliveries.sent(epoch),
                                Err(e) => this.stats.fail(e),
                            }
                            tally.count(&s);
                            tap.see(&s, now);
                        }
                    });
                    dead.for_each(|cap, batch| {
                        let Some(&epoch) = cap.least() else { return };
                        held.entry(epoch).or_insert_with(|| {
                            cap.retain_least(output.output_index()).expect("a time")
                        });
                        for d in batch.drain(..) {
                            let (key, json, headers) = dead_letter_message(&d, OwnedHeaders::new());
                            let record = BaseRecord::with_opaque_to(
                                this.dead_letter_topic.as_str(),
                                epoch as usize,
                            )
                            .key(key.as_bytes())
                            .payload(json.as_slice())
                            .headers(headers);
                            match send(producer, record) {
                                Ok(()) => producer.context().deliveries.sent(epoch),
                                Err(e) => this.stats.fail(e),
                            }
                            tally.dead_letters += 1;
                        }
                    });
                    this.stats.outputs(tally);
                    tap.flush();
                    // Serve delivery reports, then release every finished epoch.
                    producer.poll(Duration::ZERO);
                    let deliveries = &producer.context().deliveries;
                    if let Some(failure) = deliveries.failure() {
                        this.stats.fail(failure);
                        return; // keep every capability: nothing more gets committed
                    }
                    held.retain(|epoch, _| {
                        scored_frontier.less_equal(epoch)
                            || dead_frontier.less_equal(epoch)
                            || deliveries.outstanding(*epoch) > 0
                    });
                    if !held.is_empty() {
                        // Delivery reports arrive only through poll: look again shortly.
                        activator.activate_after(Duration::from_millis(1));
                    }
                }
            },
        )
    }
}

/// The topic `output` goes to: a feature row to the cleaned topic if the
/// run has one besides its output topic, everything else to `topic`.
pub fn topic_of<'a>(output: &Output, topic: &'a str, cleaned_topic: Option<&'a str>) -> &'a str {
    match (output, cleaned_topic) {
        (Output::Cleaned(_), Some(cleaned)) => cleaned,
        _ => topic,
    }
}

/// An output as a Kafka message: keyed by id; a feature row is stamped with
/// its event time (ms), so `--from/--until time:` bound a predict stage as
/// they bound a run on ingested applications.
pub fn output_record<'a, C>(
    topic: &'a str,
    output: &'a Output,
    value: &'a [u8],
    opaque: C,
) -> BaseRecord<'a, [u8], [u8], C>
where
    C: rdkafka::util::IntoOpaque,
{
    let record = BaseRecord::with_opaque_to(topic, opaque)
        .key(output.id().as_bytes())
        .payload(value);
    match (output, output.event_time()) {
        (Output::Cleaned(_), Some(t)) => record.timestamp(t.div_euclid(1_000_000)),
        _ => record,
    }
}

/// A dead letter as a Kafka message: key (its origin), value (its JSON) and
/// `headers` plus its stage, reason and origin as headers.
pub fn dead_letter_message(
    d: &DeadLetter,
    headers: OwnedHeaders,
) -> (String, Vec<u8>, OwnedHeaders) {
    let key = d.origin.to_string();
    let headers = headers
        .insert(Header {
            key: "loanflow.stage",
            value: Some(stage_name(d)),
        })
        .insert(Header {
            key: "loanflow.reason",
            value: Some(d.reason.as_str()),
        })
        .insert(Header {
            key: "loanflow.origin",
            value: Some(key.as_str()),
        });
    (key, d.to_json(), headers)
}

fn stage_name(d: &DeadLetter) -> &'static str {
    match d.stage {
        Stage::Ingest => "ingest",
        Stage::Clean => "clean",
        Stage::Predict => "predict",
        Stage::Late => "late",
    }
}
