//! How to reach the cluster ([`KafkaConfig`]: brokers, `-X` properties,
//! timeouts), the set-up errors of reaching it ([`KafkaSetupError`]), topic
//! metadata and creation, and the client context every loanflow client uses
//! ([`Context`]: librdkafka's logs into `tracing`, its last error, the
//! definitive failures that end a set-up request at once, the sources' lag,
//! and the run's [`OutageClock`]).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset};

use super::reach::{LagBoard, Refusals};

/// Properties whose values are never logged or printed.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key.pem", "token", "sasl.jaas"]
        .iter()
        .any(|s| key.contains(s))
}

/// Why reaching the cluster, or a topic on it, failed before any data moved.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// A `-X` argument is not `key=value` with a non-empty key.
    #[error("bad -X `{0}`: write -X key=value (a librdkafka property)")]
    BadProperty(String),
    /// A `-X` property names a file (a CA, a key, a certificate) that does
    /// not exist.
    #[error("-X {property}: file {path} not found (give the path of an existing file)")]
    MissingFile {
        /// The property, e.g. `ssl.ca.location`.
        property: String,
        /// The path it gives.
        path: String,
    },
    /// Every bootstrap broker failed in a way waiting does not mend (a
    /// refused connection, an unknown host, a TLS or SASL failure): the
    /// request ended at once instead of at `--connect-timeout`.
    #[error("cannot reach Kafka at {brokers}: {why}")]
    Refused {
        /// The bootstrap servers tried.
        brokers: String,
        /// Each broker's failure, and what to check.
        why: String,
    },
    /// A metadata or topic-creation request failed, as when no broker
    /// answers within `--connect-timeout`.
    #[error("cannot reach Kafka at {brokers} within {timeout:?}{why} (check --brokers, that the broker runs, and the -X security settings)")]
    Unreachable {
        /// The bootstrap servers tried.
        brokers: String,
        /// How long the request was given (`--connect-timeout`).
        timeout: Duration,
        /// `: REASON`: librdkafka's last error, else the request's.
        why: String,
    },
    /// The topic does not exist and creating it was not asked for.
    #[error("topic `{topic}` does not exist on {brokers} (create it, or pass --partitions N to have loanflow create it)")]
    NoTopic {
        /// The missing topic.
        topic: String,
        /// The bootstrap servers asked.
        brokers: String,
    },
    /// A topic loanflow writes does not exist, and `--no-create-topics`
    /// forbids creating it.
    #[error("topic `{topic}` does not exist on {brokers} (create it, or drop --no-create-topics to have loanflow create it)")]
    NotCreated {
        /// The missing topic.
        topic: String,
        /// The bootstrap servers asked.
        brokers: String,
    },
    /// The broker refused to create the topic, or it did not show in the
    /// metadata within `--connect-timeout` after it was created.
    #[error("cannot create topic `{topic}`: {message}")]
    Create {
        /// The topic.
        topic: String,
        /// The broker's error code, or what went wrong.
        message: String,
    },
    /// A client could not be created or assigned, or a request of it failed.
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

/// How long one metadata request of a set-up waits before the client's
/// events are looked at (a refused connection ends the wait at once).
const METADATA_SLICE: Duration = Duration::from_millis(100);

/// How long a run waits out a broker outage unless told otherwise.
pub const DEFAULT_MAX_OUTAGE: Duration = Duration::from_secs(300);

/// How to reach the cluster: brokers, pass-through librdkafka properties.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` (`--brokers`).
    pub brokers: String,
    /// `-X key=value` properties, applied last (they win).
    pub properties: Vec<(String, String)>,
    /// How long a metadata, topic-creation or committed-offsets request may
    /// take (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// How long a run waits for an unreachable broker before it gives up
    /// (see `--max-outage`).
    pub max_outage: Duration,
    /// Whether [`Self::ensure_output_topic`] creates a missing topic (the
    /// default) or refuses it (`--no-create-topics`).
    pub create_topics: bool,
    /// The run's outage clock, shared by every client made from this
    /// configuration (and its clones).
    outage: Arc<OutageClock>,
    /// The lag its source consumers report (see [`Self::lag`]).
    lag: Arc<LagBoard>,
}

/// The `-X` properties that name a file librdkafka must read: checked up
/// front, so a missing one is named (librdkafka says only `BIO lib`).
const FILE_PROPERTIES: &[&str] = &[
    "ssl.ca.location",
    "ssl.key.location",
    "ssl.certificate.location",
    "ssl.crl.location",
    "ssl.keystore.location",
    "sasl.kerberos.keytab",
];

impl KafkaConfig {
    /// Parses the `-X key=value` `properties`; waits out outages for
    /// [`DEFAULT_MAX_OUTAGE`], on an outage clock of its own.
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
            .collect::<Result<Vec<(String, String)>, _>>()?;
        for (property, path) in &properties {
            // `ssl.ca.location=probe` asks librdkafka to find the system's CAs.
            let names_file = FILE_PROPERTIES.contains(&property.as_str()) && path != "probe";
            if names_file && !path.is_empty() && !Path::new(path).exists() {
                return Err(KafkaSetupError::MissingFile {
                    property: property.clone(),
                    path: path.clone(),
                });
            }
        }
        Ok(KafkaConfig {
            brokers: brokers.to_owned(),
            properties,
            connect_timeout,
            max_outage: DEFAULT_MAX_OUTAGE,
            create_topics: true,
            outage: Arc::default(),
            lag: Arc::default(),
        })
    }

    /// The same, waiting at most `max_outage` for a broker that went away.
    pub fn with_max_outage(mut self, max_outage: Duration) -> KafkaConfig {
        self.max_outage = max_outage;
        self
    }

    /// The same, creating the missing topics it writes (`true`, the default)
    /// or refusing them (`false`: `--no-create-topics`); see
    /// [`Self::ensure_output_topic`].
    pub fn with_create_topics(mut self, create_topics: bool) -> KafkaConfig {
        self.create_topics = create_topics;
        self
    }

    /// A client context on this run's outage clock.
    pub fn context(&self) -> Context {
        Context {
            last_error: Mutex::default(),
            outage: Arc::clone(&self.outage),
            refusals: Refusals::new(&self.brokers),
            lag: Arc::clone(&self.lag),
        }
    }

    /// How many records the source consumers made from this configuration
    /// are behind the end of `topic` (summed over the partitions they read),
    /// from their statistics; `None` before the first report.
    pub fn lag(&self, topic: &str) -> Option<u64> {
        self.lag.total(topic)
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
    /// if it does not exist and that was asked for (silently: a command
    /// that creates topics uses [`Self::ensure_input_topic`] or
    /// [`Self::ensure_output_topic`], which say what they created).
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
        let missing = || self.no_topic(topic);
        let ensured = self.ensure(topic, create.map(|n| (n, configs)), missing)?;
        Ok(ensured.partitions)
    }

    /// A topic a command reads (`run --input-topic`): an error naming
    /// `--partitions` if it is missing, unless `create` (`--partitions N`)
    /// asks for it to be created with that many partitions. The caller says
    /// what was created ([`EnsuredTopic::notice`]).
    pub fn ensure_input_topic(
        &self,
        topic: &str,
        create: Option<i32>,
    ) -> Result<EnsuredTopic, KafkaSetupError> {
        self.ensure(topic, create.map(|n| (n, &[][..])), || self.no_topic(topic))
    }

    /// A topic a command writes (outputs, dead letters, progress records,
    /// `ingest`'s topic): used as it is if it exists (its partition count is
    /// never changed); if it is missing, created with `partitions`
    /// partitions and these topic `configs` (`cleanup.policy=compact`, say),
    /// unless [`Self::create_topics`] is off (`--no-create-topics`): then
    /// [`KafkaSetupError::NotCreated`], naming the flag. Prints nothing: the
    /// caller says what was created, in one line ([`EnsuredTopic::notice`]).
    /// Two processes creating the same topic at once is no error; only the
    /// one whose request created it reports it created.
    pub fn ensure_output_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<EnsuredTopic, KafkaSetupError> {
        let create = self.create_topics.then_some((partitions, configs));
        self.ensure(topic, create, || KafkaSetupError::NotCreated {
            topic: topic.to_owned(),
            brokers: self.brokers.clone(),
        })
    }

    /// A client for looking topics up repeatedly (`tail` waiting for its
    /// topic to be created), over one connection.
    pub fn lookup(&self) -> Result<TopicLookup<'_>, KafkaSetupError> {
        let consumer: BaseConsumer<Context> = self
            .client_config(&[])
            .create_with_context(self.context())
            .map_err(|e| KafkaSetupError::Client(e.to_string()))?;
        Ok(TopicLookup {
            config: self,
            consumer,
        })
    }

    fn no_topic(&self, topic: &str) -> KafkaSetupError {
        KafkaSetupError::NoTopic {
            topic: topic.to_owned(),
            brokers: self.brokers.clone(),
        }
    }

    /// `topic` as it is, or created with `create` (partitions, configs) if
    /// it is missing; `missing()` if it is missing and `create` is `None`.
    fn ensure(
        &self,
        topic: &str,
        create: Option<(i32, &[(&str, &str)])>,
        missing: impl FnOnce() -> KafkaSetupError,
    ) -> Result<EnsuredTopic, KafkaSetupError> {
        let lookup = self.lookup()?;
        if let Some(partitions) = lookup.partitions(topic)? {
            return Ok(EnsuredTopic {
                name: topic.to_owned(),
                partitions,
                created: None,
            });
        }
        let Some((partitions, configs)) = create else {
            return Err(missing());
        };
        let created = self.create_topic(topic, partitions, configs)?;
        let deadline = Instant::now() + self.connect_timeout;
        loop {
            if let Some(partitions) = lookup.partitions(topic)? {
                return Ok(EnsuredTopic {
                    name: topic.to_owned(),
                    partitions,
                    created: created
                        .then(|| configs.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                });
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

    /// `topic`'s partition count (`None`: it does not exist), asked in
    /// short slices until `--connect-timeout`. Between slices the client's
    /// events are served, so a refused connection, an unknown host or a TLS
    /// failure of every bootstrap broker ends the wait at once
    /// ([`Context::give_up`]).
    fn partitions(
        &self,
        consumer: &BaseConsumer<Context>,
        topic: &str,
    ) -> Result<Option<i32>, KafkaSetupError> {
        let deadline = Instant::now() + self.connect_timeout;
        let metadata = loop {
            let asked = Instant::now();
            let slice = deadline
                .saturating_duration_since(asked)
                .clamp(Duration::from_millis(1), METADATA_SLICE);
            let e = match consumer.fetch_metadata(Some(topic), slice) {
                Ok(metadata) => break metadata,
                Err(e) => e,
            };
            // librdkafka queues the reasons (a refused connection, a TLS
            // handshake failure) as events: serve them so the context sees them.
            for _ in 0..32 {
                let _ = consumer.poll(Duration::ZERO);
            }
            if let Some(why) = consumer.context().give_up() {
                return Err(KafkaSetupError::Refused {
                    brokers: self.brokers.clone(),
                    why,
                });
            }
            if Instant::now() >= deadline {
                for _ in 0..10 {
                    if consumer.context().last_error().is_some() {
                        break;
                    }
                    let _ = consumer.poll(Duration::from_millis(50));
                }
                return Err(self.unreachable(consumer.context(), e));
            }
            // An answer that came back at once (no broker yet): do not spin.
            if let Some(rest) = slice.checked_sub(asked.elapsed()) {
                std::thread::sleep(rest.min(Duration::from_millis(20)));
            }
        };
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

    /// Creates `topic`: `true` if this request created it, `false` if it
    /// already existed (another process was first).
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<bool, KafkaSetupError> {
        let admin: AdminClient<Context> = self
            .client_config(&[])
            .create_with_context(self.context())
            .map_err(|e| KafkaSetupError::Client(e.to_string()))?;
        let new = configs.iter().fold(
            NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
            |new, (k, v)| new.set(k, v),
        );
        let options = AdminOptions::new().operation_timeout(Some(self.connect_timeout));
        let results = futures_executor::block_on(admin.create_topics([&new], &options))
            .map_err(|e| self.unreachable(admin.inner().context(), e))?;
        let mut created = false;
        for result in results {
            match result {
                Ok(_) => created = true,
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(KafkaSetupError::Create {
                        topic: topic.to_owned(),
                        message: code.to_string(),
                    })
                }
            }
        }
        if created {
            tracing::debug!(topic, partitions, "created topic");
        }
        Ok(created)
    }
}

/// A topic made sure of by [`KafkaConfig::ensure_input_topic`] or
/// [`KafkaConfig::ensure_output_topic`]: it exists, with `partitions`
/// partitions, and `created` says whether this call created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredTopic {
    /// The topic.
    pub name: String,
    /// Its partition count, as the metadata gives it.
    pub partitions: i32,
    /// `Some(configs)` (as `key=value`) if this call created the topic;
    /// `None` if it existed.
    pub created: Option<Vec<String>>,
}

impl EnsuredTopic {
    /// What the caller tells the user, in one line, if this call created the
    /// topic: `created topic loans.scored (4 partitions)`, with the topic
    /// configs it was given after the count.
    pub fn notice(&self) -> Option<String> {
        let configs = self.created.as_ref()?;
        let plural = if self.partitions == 1 { "" } else { "s" };
        let mut details = vec![format!("{} partition{plural}", self.partitions)];
        details.extend(configs.iter().cloned());
        Some(format!(
            "created topic {} ({})",
            self.name,
            details.join(", ")
        ))
    }
}

/// One metadata client for repeated look-ups of topics ([`KafkaConfig::lookup`]).
pub struct TopicLookup<'a> {
    config: &'a KafkaConfig,
    consumer: BaseConsumer<Context>,
}

impl TopicLookup<'_> {
    /// The partition count of `topic`, `None` if it does not exist; an
    /// error if no broker answers within `--connect-timeout`. Never creates
    /// the topic (the client does not allow auto-creation).
    pub fn partitions(&self, topic: &str) -> Result<Option<i32>, KafkaSetupError> {
        self.config.partitions(&self.consumer, topic)
    }
}

/// Routes librdkafka's logs to `tracing` (shown only under `RUST_LOG`: the
/// binary filters target `librdkafka` out by default) and remembers its last
/// error, so a timeout can say why (a TLS handshake failure, say) instead of
/// just "timed out", and whether every bootstrap broker failed for good
/// ([`Context::give_up`]). Keeps the lag its consumer's statistics report.
pub struct Context {
    last_error: Mutex<Option<String>>,
    outage: Arc<OutageClock>,
    refusals: Refusals,
    lag: Arc<LagBoard>,
}

/// Since when no broker has been reachable, for one run: whichever of its
/// clients notices first (the sink's producer, while the backpressured
/// source is not polling), any answer ends it. Owned by the run's
/// [`KafkaConfig`], so pipelines sharing a process (`loanflow bench`) keep
/// their own clocks.
#[derive(Debug, Default)]
pub struct OutageClock(Mutex<Option<Instant>>);

impl OutageClock {
    fn down_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Context {
    /// How long the brokers have been unreachable, if they are.
    pub fn outage(&self) -> Option<Duration> {
        self.outage.down_since().map(|since| since.elapsed())
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
            let mut down = self.outage.down_since();
            if down.is_none() {
                tracing::debug!("outage clock started: {error}");
                *down = Some(Instant::now());
            }
        }
    }

    /// A broker answered: any outage is over.
    pub fn broker_answered(&self) {
        if let Some(since) = self.outage.down_since().take() {
            tracing::info!(after = ?since.elapsed(), "the broker is reachable again");
        }
    }

    /// `Some(why)` once every bootstrap broker has failed in a way waiting
    /// does not mend (refused, unknown host, TLS, SASL): a set-up request
    /// stops waiting then. Only the events served so far count (poll first).
    pub fn give_up(&self) -> Option<String> {
        self.refusals.give_up()
    }

    /// The reason librdkafka gave for its last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" {
            self.refusals.note(message);
        }
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
        self.refusals.note(reason);
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
    }

    fn stats(&self, statistics: Statistics) {
        self.lag.record(&statistics);
    }
}

impl ConsumerContext for Context {}

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

    #[test]
    fn each_configuration_keeps_its_own_outage_clock() {
        let a = KafkaConfig::new("a:1", &[], Duration::from_secs(1)).unwrap();
        let b = KafkaConfig::new("b:1", &[], Duration::from_secs(1)).unwrap();
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        a.context().note(&down);
        // Every client of `a` (and of its clones) sees the outage; `b`'s do not.
        assert!(a.context().outage().is_some());
        assert!(a.clone().context().outage().is_some());
        assert!(b.context().outage().is_none());
        a.context().broker_answered();
        assert!(a.context().outage().is_none());
    }

    #[test]
    fn only_a_created_topic_has_a_notice() {
        let topic = |partitions, created: Option<&[&str]>| EnsuredTopic {
            name: "t".into(),
            partitions,
            created: created.map(|c| c.iter().map(|s| s.to_string()).collect()),
        };
        assert_eq!(topic(4, None).notice(), None);
        assert_eq!(
            topic(1, Some(&[])).notice().as_deref(),
            Some("created topic t (1 partition)")
        );
        assert_eq!(
            topic(4, Some(&["cleanup.policy=compact"]))
                .notice()
                .as_deref(),
            Some("created topic t (4 partitions, cleanup.policy=compact)")
        );
        let config = KafkaConfig::new("b:1", &[], Duration::from_secs(1)).unwrap();
        assert!(config.create_topics, "created by default");
        assert!(!config.with_create_topics(false).create_topics);
    }
}
