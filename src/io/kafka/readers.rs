//! Readers that take every partition they are given from a start offset,
//! outside any dataflow: `tail`, `passthrough`, `verify` and the benchmark's
//! read-back. One consumer shape for all of them: statically assigned (a
//! group id only because librdkafka's assign needs one; nothing is ever
//! committed), partition EOF reported, a partition's beginning read from
//! offset 0 ([`START`]).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::config::{Context, KafkaConfig, KafkaSetupError, FROM_START, START};

/// A consumer assigned a set of partitions of one topic, which knows which
/// of them it has read to their end.
pub struct PartitionReader {
    consumer: BaseConsumer<Context>,
    topic: String,
    partitions: usize,
    /// Partitions whose last fetch reported their end (and nothing since).
    at_end: HashSet<i32>,
}

impl PartitionReader {
    /// Reads `partitions` of `topic` from `start` ([`START`] for the
    /// beginning, [`Offset::End`] for new messages only), as consumer group
    /// `group`, with `extra` client properties (the user's `-X` still win).
    pub fn open(
        config: &KafkaConfig,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
        start: Offset,
        group: &str,
        extra: &[(&str, &str)],
    ) -> Result<PartitionReader, KafkaSetupError> {
        let settings = [
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            FROM_START,
        ];
        let consumer: BaseConsumer<Context> = config
            .client_config(&[&settings[..], extra].concat())
            .create_with_context(config.context())
            .map_err(|e| KafkaSetupError::Client(format!("cannot create a Kafka consumer: {e}")))?;
        let mut assignment = TopicPartitionList::new();
        for p in partitions {
            assignment
                .add_partition_offset(topic, p, start)
                .map_err(|e| KafkaSetupError::Client(e.to_string()))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| KafkaSetupError::Client(format!("cannot assign `{topic}`: {e}")))?;
        Ok(PartitionReader {
            consumer,
            topic: topic.to_owned(),
            partitions: assignment.count(),
            at_end: HashSet::new(),
        })
    }

    /// Every partition of `topic` from the beginning ([`START`]).
    pub fn from_start(
        config: &KafkaConfig,
        topic: &str,
        partitions: i32,
        group: &str,
        extra: &[(&str, &str)],
    ) -> Result<PartitionReader, KafkaSetupError> {
        PartitionReader::open(config, topic, 0..partitions, START, group, extra)
    }

    /// The next message within `timeout`, if any. A partition's end is
    /// noted (see [`Self::all_at_end`]), other errors are logged and
    /// retried (librdkafka reconnects by itself).
    pub fn poll(&mut self, timeout: Duration) -> Option<BorrowedMessage<'_>> {
        match self.consumer.poll(timeout) {
            None => None,
            Some(Ok(m)) => {
                self.at_end.remove(&m.partition());
                Some(m)
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                self.at_end.insert(p);
                None
            }
            Some(Err(e)) => {
                tracing::warn!(topic = %self.topic, "consumer: {e} (retrying)");
                None
            }
        }
    }

    /// Whether every assigned partition's last fetch reported its end.
    pub fn all_at_end(&self) -> bool {
        self.at_end.len() >= self.partitions
    }
}

/// The group's committed offsets of `partitions` (partitions it never
/// committed are left out).
pub fn committed_offsets(
    config: &KafkaConfig,
    group: &str,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> Result<BTreeMap<i32, i64>, KafkaSetupError> {
    let consumer: BaseConsumer<Context> = config
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .create_with_context(config.context())
        .map_err(|e| KafkaSetupError::Client(format!("cannot create a Kafka consumer: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, config.connect_timeout)
        .map_err(|e| {
            KafkaSetupError::Client(format!(
                "cannot read the committed offsets of group `{group}`: {e}"
            ))
        })?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}
