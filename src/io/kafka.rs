//! Kafka edges: a source that reads a topic's partitions and a sink that
//! writes scored applications (and dead letters) to topics, at least once.
//!
//! # Partition ownership
//! Worker `w` of `W` (global index, so this holds across a cluster) owns
//! partition `p` iff `p % W == w`. Ownership is static: `assign()`, never
//! group rebalancing (consumer-group joins are slow on some brokers and a
//! rebalance would move partitions under a running epoch). Auto-commit and
//! auto offset store are off: offsets move only as described below.
//!
//! # Offsets as progress
//! Invariants, per worker:
//! 1. Every record the source emits at epoch `e` comes from an owned
//!    partition, and after closing `e` the source remembers `next[p]`, the
//!    offset after the last record of `p` read at or before `e`.
//! 2. The sink holds a capability for `e` until every message of `e` has
//!    been acknowledged by the broker; a delivery failure keeps it held
//!    forever (the run then stops with an error).
//! 3. So when the `done` probe (the sinks' output frontier, over all
//!    workers) has passed `e`, every output of every record read up to `e`
//!    is delivered, and committing `next` as of `e` loses nothing. A restart
//!    resumes from the committed offsets: records after them may be scored
//!    twice (at-least-once), never skipped.
//!
//! # Caught up
//! A partition is at its end when a fetch reports it there (librdkafka's
//! partition EOF, from the high watermark in the fetch response), never from
//! a ListOffsets query, which some brokers answer wrongly. For the same
//! reason a partition's beginning is offset 0 ([`START`]), never asked for.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::{ProbeHandle, Scope, Stream};

use crate::dataflow::predict::{OutputFormat, Scored};
use crate::dataflow::{Batches, Epoch};
use crate::io::exactly_once::OffsetLedger;
use crate::io::{Sink, Source, Stats, MAX_EPOCHS_AHEAD};
use crate::record::{now_ns, DeadLetter, Origin, RawRecord};
use crate::replay::{From, Until};

/// Properties whose values are never logged or printed.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key.pem", "token", "sasl.jaas"]
        .iter()
        .any(|s| key.contains(s))
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("bad -X `{0}`: write -X key=value (a librdkafka property)")]
    BadProperty(String),
    #[error("cannot reach Kafka at {brokers} within {timeout:?}{why} (check --brokers, that the broker runs, and the -X security settings)")]
    Unreachable {
        brokers: String,
        timeout: Duration,
        why: String,
    },
    #[error("topic `{topic}` does not exist on {brokers} (create it, or pass --partitions N to have loanflow create it)")]
    NoTopic { topic: String, brokers: String },
    #[error("cannot create topic `{topic}`: {message}")]
    Create { topic: String, message: String },
    #[error("Kafka client: {0}")]
    Client(String),
}

/// The start of a partition, for every reader that begins there: offset 0,
/// never [`Offset::Beginning`].
///
/// `Offset::Beginning` makes librdkafka ask the broker (ListOffsets,
/// earliest), and Tansu answers with the batch it *stored* first by wall
/// clock, not the lowest offset. When producers write a partition
/// concurrently a later batch can be stored first, and a reader starting
/// there silently skips every batch below it (measured: a 2-process cluster's
/// output read back as 9,665 of 9,857, partition 1 "beginning" at offset 192;
/// `scripts/BROKER_NOTES.md`, quirk 9). Offset 0 starts every partition whose
/// log was never truncated; where retention has removed it the fetch is out
/// of range and `auto.offset.reset=earliest`, which every such reader sets
/// ([`FROM_START`]), takes over.
pub const START: Offset = Offset::Offset(0);

/// The consumer property that goes with [`START`].
pub const FROM_START: (&str, &str) = ("auto.offset.reset", "earliest");

/// How long a run waits out a broker outage unless told otherwise.
pub const DEFAULT_MAX_OUTAGE: Duration = Duration::from_secs(300);

/// How to reach the cluster: brokers, pass-through librdkafka properties.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    /// `-X key=value` properties, applied last (they win).
    pub properties: Vec<(String, String)>,
    pub connect_timeout: Duration,
    /// How long a run waits for an unreachable broker before it gives up
    /// (see `--max-outage`).
    pub max_outage: Duration,
}

impl KafkaConfig {
    pub fn new(
        brokers: &str,
        properties: &[String],
        connect_timeout: Duration,
    ) -> Result<KafkaConfig, KafkaSetupError> {
        let properties = properties
            .iter()
            .map(|p| match p.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
                _ => Err(KafkaSetupError::BadProperty(p.clone())),
            })
            .collect::<Result<_, _>>()?;
        Ok(KafkaConfig {
            brokers: brokers.to_owned(),
            properties,
            connect_timeout,
            max_outage: DEFAULT_MAX_OUTAGE,
        })
    }

    /// The same, waiting at most `max_outage` for a broker that went away.
    pub fn with_max_outage(mut self, max_outage: Duration) -> KafkaConfig {
        self.max_outage = max_outage;
        self
    }

    /// A client configuration: our defaults, then `extra`, then the user's `-X`.
    pub fn client_config(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "loanflow")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in extra {
            config.set(*k, *v);
        }
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        tracing::debug!(config = %self.describe(extra), "kafka client");
        config
    }

    /// The configuration as text, secrets redacted.
    pub fn describe(&self, extra: &[(&str, &str)]) -> String {
        let mut parts = vec![format!("bootstrap.servers={}", self.brokers)];
        let all = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(self.properties.iter().cloned());
        for (k, v) in all {
            parts.push(if is_secret(&k) {
                format!("{k}=***")
            } else {
                format!("{k}={v}")
            });
        }
        parts.join(" ")
    }

    /// The partition count of `topic`, creating it with `create` partitions
    /// if it does not exist and that was asked for.
    pub fn ensure_topic(&self, topic: &str, create: Option<i32>) -> Result<i32, KafkaSetupError> {
        self.ensure_topic_with(topic, create, &[])
    }

    /// [`Self::ensure_topic`], creating the topic with these topic configs
    /// (`cleanup.policy=compact`, say).
    pub fn ensure_topic_with(
        &self,
        topic: &str,
        create: Option<i32>,
        configs: &[(&str, &str)],
    ) -> Result<i32, KafkaSetupError> {
        let consumer: BaseConsumer<Context> = self
            .client_config(&[])
            .create_with_context(Context::default())
            .map_err(|e| KafkaSetupError::Client(e.to_string()))?;
        match self.partitions(&consumer, topic)? {
            Some(n) => Ok(n),
            None => match create {
                None => Err(KafkaSetupError::NoTopic {
                    topic: topic.to_owned(),
                    brokers: self.brokers.clone(),
                }),
                Some(partitions) => {
                    self.create_topic(topic, partitions, configs)?;
                    let deadline = Instant::now() + self.connect_timeout;
                    loop {
                        if let Some(n) = self.partitions(&consumer, topic)? {
                            return Ok(n);
                        }
                        if Instant::now() > deadline {
                            return Err(KafkaSetupError::Create {
                                topic: topic.to_owned(),
                                message: "created, but it does not show in the metadata".into(),
                            });
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            },
        }
    }

    fn partitions(
        &self,
        consumer: &BaseConsumer<Context>,
        topic: &str,
    ) -> Result<Option<i32>, KafkaSetupError> {
        let metadata = consumer
            .fetch_metadata(Some(topic), self.connect_timeout)
            .map_err(|e| {
                // librdkafka queues the reason (a TLS handshake failure, say) as an
                // error event: serve the queue briefly so the context records it.
                for _ in 0..10 {
                    if consumer.context().last_error().is_some() {
                        break;
                    }
                    let _ = consumer.poll(Duration::from_millis(50));
                }
                self.unreachable(consumer.context(), e)
            })?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as i32))
    }

    fn unreachable(&self, context: &Context, e: KafkaError) -> KafkaSetupError {
        let why = context
            .last_error()
            .map(|r| format!(": {r}"))
            .unwrap_or_else(|| format!(": {e}"));
        KafkaSetupError::Unreachable {
            brokers: self.brokers.clone(),
            timeout: self.connect_timeout,
            why,
        }
    }

    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), KafkaSetupError> {
        let admin: AdminClient<Context> = self
            .client_config(&[])
            .create_with_context(Context::default())
            .map_err(|e| KafkaSetupError::Client(e.to_string()))?;
        let new = configs.iter().fold(
            NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
            |new, (k, v)| new.set(k, v),
        );
        let options = AdminOptions::new().operation_timeout(Some(self.connect_timeout));
        let results = futures_executor::block_on(admin.create_topics([&new], &options))
            .map_err(|e| self.unreachable(admin.inner().context(), e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(KafkaSetupError::Create {
                        topic: topic.to_owned(),
                        message: code.to_string(),
                    })
                }
            }
        }
        tracing::info!(topic, partitions, "created topic");
        Ok(())
    }
}

/// Routes librdkafka's logs to `tracing` and remembers its last error, so a
/// timeout can say why (a TLS handshake failure, say) instead of just "timed out".
#[derive(Default)]
pub struct Context {
    last_error: Mutex<Option<String>>,
}

/// Since when no broker has been reachable, for the whole process: whichever
/// client notices first (the sink's producer, while the backpressured source
/// is not polling), any answer ends it.
static DOWN_SINCE: Mutex<Option<Instant>> = Mutex::new(None);

impl Context {
    /// How long the brokers have been unreachable, if they are.
    pub fn outage(&self) -> Option<Duration> {
        DOWN_SINCE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|since| since.elapsed())
    }

    /// Starts the outage clock if `error` says no broker can be reached
    /// (consumers get these from `poll`, other clients through [`ClientContext::error`]).
    pub fn note(&self, error: &KafkaError) {
        use RDKafkaErrorCode::{AllBrokersDown, BrokerTransportFailure};
        if matches!(
            error,
            KafkaError::Global(AllBrokersDown | BrokerTransportFailure)
                | KafkaError::MessageConsumption(AllBrokersDown | BrokerTransportFailure)
        ) {
            let mut down = DOWN_SINCE.lock().unwrap_or_else(|e| e.into_inner());
            if down.is_none() {
                tracing::debug!("outage clock started: {error}");
                *down = Some(Instant::now());
            }
        }
    }

    /// A broker answered: any outage is over.
    pub fn broker_answered(&self) {
        let mut down = DOWN_SINCE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = down.take() {
            tracing::info!(after = ?since.elapsed(), "the broker is reachable again");
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{fac}: {message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac}: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Partition EOF is an event (we asked for it), not an error.
        if matches!(error, KafkaError::PartitionEOF(_))
            || matches!(&error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF))
        {
            return;
        }
        self.note(&error);
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
    }
}

impl ConsumerContext for Context {}

/// One worker's part of a Kafka input topic.
pub struct KafkaSource {
    pub config: Arc<KafkaConfig>,
    pub topic: String,
    pub group: String,
    pub partitions: i32,
    /// Where each owned partition starts.
    pub from: From,
    /// Where each owned partition stops; `None`: run live until stopped.
    pub until: Option<Until>,
    /// Most records per epoch.
    pub batch: usize,
    pub stats: Arc<Stats>,
    /// Set on SIGINT/SIGTERM: finish the open epochs, commit, stop.
    pub stop: Arc<AtomicBool>,
    /// Exactly-once: the offsets go to this worker's transactional sink
    /// (see [`crate::io::exactly_once`]) instead of being committed here.
    pub ledger: Option<OffsetLedger>,
}

enum Phase {
    Reading,
    /// Reading stopped; waiting for every epoch up to this one to be delivered.
    Draining(Epoch),
}

impl KafkaSource {
    fn consumer(&self) -> Result<BaseConsumer<Context>, KafkaError> {
        self.config
            .client_config(&[
                ("group.id", &self.group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                (
                    "auto.offset.reset",
                    match self.from {
                        From::Latest => "latest",
                        _ => "earliest",
                    },
                ),
            ])
            .create_with_context(Context::default())
    }
}

impl Source for KafkaSource {
    fn build<'s>(
        self: Box<Self>,
        scope: Scope<'s, Epoch>,
        done: ProbeHandle<Epoch>,
    ) -> Batches<'s, RawRecord> {
        let (index, peers) = (scope.index(), scope.peers());
        let owned: Vec<i32> = (0..self.partitions)
            .filter(|p| *p as usize % peers == index)
            .collect();
        source(scope, "KafkaSource", move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut capability = Some(capability);
            let this = *self;
            let topic: Arc<str> = Arc::from(this.topic.as_str());
            let consumer = match assign(&this, &owned) {
                Ok(c) => Some(SourceConsumer(Some(c))),
                Err(e) => {
                    this.stats
                        .fail(format!("cannot read topic `{}`: {e}", this.topic));
                    None
                }
            };
            // next[p]: the offset after the last record read from p (invariant 1).
            let mut next: HashMap<i32, i64> = HashMap::new();
            // Partitions read to their bound: their end (EOF) or, with
            // `--until time:`, their first record at or after that time.
            let mut finished: HashSet<i32> = HashSet::new();
            let skip_before = match this.from {
                From::Time(t) => Some(t),
                _ => None,
            };
            let stop_at = match this.until {
                Some(Until::Time(t)) => Some(t),
                _ => None,
            };
            let mut snapshots: VecDeque<(Epoch, Vec<(i32, i64)>)> = VecDeque::new();
            let mut epoch: Epoch = 0;
            let mut phase = Phase::Reading;
            let origin = Instant::now();
            let mut caught_up_since: Option<Instant> = None;
            // The offsets of the newest delivered epoch, last committed.
            let mut committed: Option<Vec<(i32, i64)>> = None;
            let mut last_outage_log: Option<Instant> = None;
            let mut last_probe: Option<Instant> = None;
            // The newest offsets snapshot taken (a new epoch only when they move).
            let mut last_snapshot: Option<Vec<(i32, i64)>> = None;
            move |output| {
                let (Some(cap), Some(consumer)) = (capability.as_mut(), consumer.as_ref()) else {
                    capability = None;
                    return;
                };
                if owned.is_empty() {
                    // More workers than partitions: this one never has data,
                    // and must not hold the others' epochs back.
                    capability = None;
                    return;
                }
                // Commit the newest snapshot whose epoch every sink has delivered (invariant 3).
                let mut ready = None;
                while snapshots.front().is_some_and(|(e, _)| !done.less_equal(e)) {
                    ready = snapshots.pop_front();
                }
                if let Some((e, offsets)) = ready {
                    // In exactly-once mode the sink commits (with the outputs).
                    if this.ledger.is_none() {
                        commit(consumer, &topic, &offsets, false, &this.stats);
                        tracing::debug!(epoch = e, ?offsets, "committed");
                    }
                    committed = Some(offsets);
                }
                // Checked before anything waits on the sinks: while the broker
                // is away they cannot deliver, so backpressure and draining
                // would otherwise wait without bound.
                if let Some(outage) = consumer.context().outage() {
                    if !wait_out(
                        consumer,
                        &this,
                        outage,
                        &mut last_outage_log,
                        &mut last_probe,
                    ) {
                        capability = None;
                        return;
                    }
                }
                if let Phase::Draining(last) = phase {
                    if done.less_equal(&last) {
                        activator.activate_after(Duration::from_millis(1));
                    } else {
                        // Everything read is delivered: commit it for sure
                        // (synchronously: the process may exit next).
                        if let (Some(offsets), None) = (&committed, &this.ledger) {
                            commit(consumer, &topic, offsets, true, &this.stats);
                        }
                        capability = None;
                    }
                    return;
                }
                // Every partition at its bound, and still so after a grace
                // period: an end-of-partition seen while the broker was still
                // appending (a batch in flight) is followed by more records.
                let all_finished = this.until.is_some() && finished.len() == owned.len();
                let caught_up = match (all_finished, caught_up_since) {
                    (false, _) => {
                        caught_up_since = None;
                        false
                    }
                    (true, None) => {
                        caught_up_since = Some(Instant::now());
                        false
                    }
                    (true, Some(since)) => since.elapsed() >= CAUGHT_UP_GRACE,
                };
                let stopping =
                    this.stop.load(Ordering::Relaxed) || this.stats.failed() || caught_up;
                if stopping {
                    if epoch == 0 {
                        capability = None; // nothing was read: nothing to commit
                    } else {
                        phase = Phase::Draining(epoch - 1);
                        activator.activate();
                    }
                    return;
                }
                if done.less_than(&epoch.saturating_sub(MAX_EPOCHS_AHEAD)) {
                    activator.activate_after(Duration::from_millis(1));
                    return;
                }
                let mut count = 0;
                let mut bytes = 0;
                let read_at = now_ns();
                {
                    let mut session = output.session(&cap);
                    while count < this.batch {
                        match consumer.poll(Duration::ZERO) {
                            None => break,
                            Some(Ok(message)) => {
                                let partition = message.partition();
                                if stop_at.is_some() && finished.contains(&partition) {
                                    continue; // fetched before the pause took hold
                                }
                                let time = message
                                    .timestamp()
                                    .to_millis()
                                    .map(|ms| ms.saturating_mul(1_000_000));
                                if let (Some(t), Some(until)) = (time, stop_at) {
                                    if t >= until {
                                        // This partition's bound: not read, not committed past.
                                        finished.insert(partition);
                                        pause(consumer, &this.topic, partition);
                                        continue;
                                    }
                                }
                                finished.remove(&partition);
                                next.insert(partition, message.offset() + 1);
                                if let (Some(t), Some(from)) = (time, skip_before) {
                                    if t < from {
                                        Stats::add(&this.stats.skipped, 1);
                                        continue;
                                    }
                                }
                                let payload = message.payload().unwrap_or_default();
                                bytes += payload.len();
                                count += 1;
                                session.give(RawRecord {
                                    read_at,
                                    bytes: payload.to_vec(),
                                    origin: Origin::Kafka {
                                        topic: Arc::clone(&topic),
                                        partition,
                                        offset: message.offset(),
                                    },
                                });
                            }
                            Some(Err(KafkaError::PartitionEOF(partition))) => {
                                finished.insert(partition);
                            }
                            Some(Err(e)) => {
                                consumer.context().note(&e);
                                tracing::warn!(topic = %this.topic, "consumer: {e} (retrying)");
                                break;
                            }
                        }
                    }
                }
                Stats::add(&this.stats.records_in, count as u64);
                Stats::add(&this.stats.bytes_in, bytes as u64);
                if next_changed(&next, last_snapshot.as_deref()) {
                    let mut offsets: Vec<(i32, i64)> = next.iter().map(|(p, o)| (*p, *o)).collect();
                    offsets.sort_unstable();
                    last_snapshot = Some(offsets.clone());
                    if let Some(ledger) = &this.ledger {
                        // Invariant 1 of exactly_once: recorded before the capability moves on.
                        ledger.record(epoch, offsets.clone());
                    }
                    snapshots.push_back((epoch, offsets));
                    epoch = (epoch + 1).max(tick(origin));
                    cap.downgrade(&epoch);
                    activator.activate();
                } else {
                    // Idle: nothing fetched. Let the epoch follow the clock, so
                    // an idle partition never holds back the epochs (and the
                    // commits, and the backpressure) of busy workers; look
                    // again soon, and serve commits meanwhile.
                    if tick(origin) > epoch {
                        epoch = tick(origin);
                        cap.downgrade(&epoch);
                    }
                    activator.activate_after(Duration::from_millis(2));
                }
            }
        })
    }
}

/// A source's consumer, closed when dropped unless the broker is unreachable.
///
/// Closing a consumer waits for the answers to its requests in flight (an
/// asynchronous offset commit, say); a broker that is gone never sends them,
/// and a run giving up after `--max-outage` would then hang on its way out
/// (librdkafka times the request out only after `socket.timeout.ms`, 60 s).
/// Such a consumer is left unclosed instead: the process is about to exit,
/// and nothing is committed that the outputs do not cover (the commits in
/// flight name delivered offsets only).
struct SourceConsumer(Option<BaseConsumer<Context>>);

impl std::ops::Deref for SourceConsumer {
    type Target = BaseConsumer<Context>;

    fn deref(&self) -> &BaseConsumer<Context> {
        self.0.as_ref().expect("taken only when dropped")
    }
}

impl Drop for SourceConsumer {
    fn drop(&mut self) {
        let consumer = self.0.take();
        if let Some(outage) = consumer.as_ref().and_then(|c| c.context().outage()) {
            tracing::debug!(
                ?outage,
                "the broker is unreachable: not closing the consumer"
            );
            std::mem::forget(consumer);
        }
    }
}

/// While no broker answers: logs what the run waits for (every 5 s), asks
/// the broker for a partition's watermarks about once a second (an idle topic sends nothing
/// that would show it is back) and fails the run after `--max-outage`.
/// Returns whether reading may go on.
fn wait_out(
    consumer: &BaseConsumer<Context>,
    source: &KafkaSource,
    outage: Duration,
    last_log: &mut Option<Instant>,
    last_probe: &mut Option<Instant>,
) -> bool {
    let max = source.config.max_outage;
    if outage > max {
        source.stats.fail(format!(
            "the broker at {} has been unreachable for {} s, longer than --max-outage {} s; nothing undelivered was committed: start it again and re-run (the run resumes from the committed offsets)",
            source.config.brokers,
            outage.as_secs(),
            max.as_secs()
        ));
        return false;
    }
    if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
        *last_log = Some(Instant::now());
        tracing::warn!(
            "waiting for the broker at {}: unreachable for {} s (gives up after --max-outage {} s)",
            source.config.brokers,
            outage.as_secs(),
            max.as_secs()
        );
    }
    // A real round trip (metadata may be answered from librdkafka's cache);
    // only whether the broker answers counts, never the (unreliable) values.
    if last_probe.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        *last_probe = Some(Instant::now());
        let probe = consumer.fetch_watermarks(&source.topic, 0, Duration::from_millis(300));
        tracing::debug!(?probe, "outage probe");
        if probe.is_ok() {
            consumer.context().broker_answered();
        }
    }
    true
}

/// Creates this worker's consumer and assigns its partitions at the group's
/// committed offsets (or the start position where there is none).
fn assign(source: &KafkaSource, owned: &[i32]) -> Result<BaseConsumer<Context>, String> {
    let consumer = source.consumer().map_err(|e| e.to_string())?;
    if owned.is_empty() {
        return Ok(consumer);
    }
    let mut wanted = TopicPartitionList::new();
    for &p in owned {
        wanted.add_partition(&source.topic, p);
    }
    let committed = consumer
        .committed_offsets(wanted, source.config.connect_timeout)
        .map_err(|e| {
            format!(
                "cannot read the committed offsets of group `{}`: {e}",
                source.group
            )
        })?;
    // Offsets-for-times is only a hint (some brokers answer 0 for every
    // time): records before the time are skipped by their timestamp anyway.
    let hints = match source.from {
        From::Time(t) => {
            let mut tpl = TopicPartitionList::new();
            for &p in owned {
                tpl.add_partition_offset(&source.topic, p, Offset::Offset(t.div_euclid(1_000_000)))
                    .map_err(|e| e.to_string())?;
            }
            consumer
                .offsets_for_times(tpl, source.config.connect_timeout)
                .map_err(|e| format!("cannot look up offsets by time: {e}"))
                .ok()
        }
        _ => None,
    };
    let mut assignment = TopicPartitionList::new();
    for &p in owned {
        let committed = committed
            .find_partition(&source.topic, p)
            .map(|e| e.offset())
            .filter(|o| matches!(o, Offset::Offset(n) if *n >= 0));
        let offset = match source.from {
            From::Committed => committed.unwrap_or(START),
            From::Earliest => START,
            From::Latest => Offset::End,
            From::Offset(n) => Offset::Offset(n),
            From::Time(_) => hints
                .as_ref()
                .and_then(|h| h.find_partition(&source.topic, p))
                .map(|e| e.offset())
                .filter(|o| matches!(o, Offset::Offset(n) if *n >= 0) || *o == Offset::End)
                .unwrap_or(START),
        };
        tracing::info!(topic = %source.topic, partition = p, ?offset, group = %source.group, "assigned");
        assignment
            .add_partition_offset(&source.topic, p, offset)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    Ok(consumer)
}

/// How long every owned partition must stay at its end before a bounded run
/// ends.
const CAUGHT_UP_GRACE: Duration = Duration::from_millis(100);

/// Epochs advance at least once per this long, busy or idle.
const TICK: Duration = Duration::from_millis(2);

/// The clock's epoch: how many ticks since the source started.
fn tick(origin: Instant) -> Epoch {
    (origin.elapsed().as_nanos() / TICK.as_nanos()) as Epoch
}

/// Whether `next` moved since the last snapshot (skipped records move it too).
fn next_changed(next: &HashMap<i32, i64>, last: Option<&[(i32, i64)]>) -> bool {
    match last {
        None => !next.is_empty(),
        Some(last) => last.len() != next.len() || last.iter().any(|(p, o)| next.get(p) != Some(o)),
    }
}

/// Stops fetching a partition that reached its bound.
fn pause(consumer: &BaseConsumer<Context>, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = consumer.pause(&tpl) {
        tracing::warn!(topic, partition, "cannot pause a finished partition: {e}");
    }
}

fn commit(
    consumer: &BaseConsumer<Context>,
    topic: &str,
    offsets: &[(i32, i64)],
    sync: bool,
    stats: &Stats,
) {
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, p, Offset::Offset(o)) {
            stats.fail(format!("cannot commit offset {o} of {topic}/{p}: {e}"));
            return;
        }
    }
    let mode = if sync {
        CommitMode::Sync
    } else {
        CommitMode::Async
    };
    if let Err(e) = consumer.commit(&tpl, mode) {
        // A failed commit loses nothing (the records are re-read after a
        // restart), so only the final one is an error.
        if sync {
            stats.fail(format!("cannot commit offsets of `{topic}`: {e}"));
        } else {
            tracing::warn!(
                topic,
                "offset commit failed (will retry with the next epoch): {e}"
            );
        }
    }
}

/// Counts unacknowledged messages per epoch from the producer's delivery reports.
#[derive(Default)]
pub struct DeliveryTracker {
    /// (topic-independent) epoch → messages sent but not yet acknowledged.
    pending: Mutex<BTreeMap<Epoch, u64>>,
    failure: Mutex<Option<String>>,
}

impl DeliveryTracker {
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

    pub fn failure(&self) -> Option<String> {
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
#[derive(Default)]
pub struct SinkContext {
    client: Context,
    pub deliveries: DeliveryTracker,
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
                    format!("a message to `{}` was not delivered: {e}{hint}", message.topic())
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
pub fn producer(config: &KafkaConfig) -> Result<BaseProducer<SinkContext>, String> {
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
        .create_with_context(SinkContext::default())
        .map_err(|e| format!("cannot create a Kafka producer: {e}"))
}

/// Sends one message, waiting for room when librdkafka's queue is full.
pub fn send(
    producer: &BaseProducer<SinkContext>,
    mut record: BaseRecord<'_, [u8], [u8], usize>,
) -> Result<(), String> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(5));
                record = r;
            }
            Err((e, record)) => return Err(format!("cannot send to `{}`: {e}", record.topic)),
        }
    }
}

/// Writes scored applications to one topic (key = id, value = the JSON
/// object of the file sink) and dead letters to another.
pub struct KafkaSink {
    pub config: Arc<KafkaConfig>,
    pub topic: String,
    pub dead_letter_topic: String,
    pub format: OutputFormat,
    pub stats: Arc<Stats>,
}

impl Sink for KafkaSink {
    fn build<'s>(
        self: Box<Self>,
        scored: Batches<'s, Scored>,
        dead: Batches<'s, DeadLetter>,
    ) -> Stream<'s, Epoch, Vec<()>> {
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
                move |(scored, scored_frontier), (dead, dead_frontier), output| {
                    let Some(producer) = producer.as_ref() else {
                        scored.for_each(|_, _| {});
                        dead.for_each(|_, _| {});
                        return;
                    };
                    let (mut n, mut flagged, mut n_dead) = (0u64, 0u64, 0u64);
                    let now = now_ns();
                    scored.for_each(|cap, batch| {
                        let Some(&epoch) = cap.least() else { return };
                        held.entry(epoch).or_insert_with(|| {
                            cap.retain_least(output.output_index()).expect("a time")
                        });
                        for s in batch.drain(..) {
                            value.clear();
                            this.format.write(&s, now, &mut value);
                            let record =
                                BaseRecord::with_opaque_to(this.topic.as_str(), epoch as usize)
                                    .key(s.id.as_bytes())
                                    .payload(value.as_slice());
                            match send(producer, record) {
                                Ok(()) => producer.context().deliveries.sent(epoch),
                                Err(e) => this.stats.fail(e),
                            }
                            n += 1;
                            flagged += s.flagged as u64;
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
                            n_dead += 1;
                        }
                    });
                    this.stats.outputs(n, flagged, n_dead);
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
        crate::record::Stage::Ingest => "ingest",
        crate::record::Stage::Clean => "clean",
        crate::record::Stage::Predict => "predict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_secrets_are_redacted() {
        let c = KafkaConfig::new(
            "b:9092",
            &[
                "security.protocol=SASL_SSL".into(),
                "sasl.password=hunter2".into(),
                "a=b=c".into(),
            ],
            Duration::from_secs(1),
        )
        .unwrap();
        let text = c.describe(&[]);
        assert!(text.contains("security.protocol=SASL_SSL"));
        assert!(text.contains("sasl.password=***") && !text.contains("hunter2"));
        assert!(text.contains("a=b=c"));
        assert!(KafkaConfig::new("b", &["nope".into()], Duration::from_secs(1)).is_err());
        assert!(KafkaConfig::new("b", &["=v".into()], Duration::from_secs(1)).is_err());
    }
}
