//! Producing a file's records into a topic, paced, within an event-time
//! window: the job behind `loanflow ingest` (the tutorial's ingest service)
//! and `loanflow replay --topic`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use rdkafka::producer::{BaseRecord, Producer};

use super::control::Control;
use super::plan::announce;
use super::progress::progress_bar;
use crate::core::pace::Pacer;
use crate::core::position::Window;
use crate::core::record::{format_time, write_record_json, Format};
use crate::io::file::ParsedFile;
use crate::io::kafka::{self, KafkaConfig};
use crate::spec::Spec;

/// What `loanflow ingest` did.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    /// The topic produced to.
    pub topic: String,
    /// Valid records sent.
    pub records: u64,
    /// Lines that were not valid records, sent as they are.
    pub raw: u64,
    /// Records outside the replay's event-time window.
    pub skipped: u64,
    /// From the first message to the last acknowledgement.
    pub elapsed: Duration,
    /// Stopped by SIGINT/SIGTERM before the input ended.
    pub interrupted: bool,
}

impl fmt::Display for IngestSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.records + self.raw;
        write!(
            f,
            "loanflow: {total} messages acknowledged by topic {} in {:.3} s — {:.0} messages/s",
            self.topic,
            self.elapsed.as_secs_f64(),
            total as f64 / self.elapsed.as_secs_f64().max(1e-9)
        )?;
        if self.raw > 0 {
            write!(f, "\n  {} of them were not valid records and were sent as they are (the pipeline will dead-letter them)", self.raw)?;
        }
        if self.skipped > 0 {
            write!(
                f,
                "\n  {} records outside --from/--until were passed over",
                self.skipped
            )?;
        }
        if self.interrupted {
            write!(f, "\n  (stopped by a signal before the end of the input)")?;
        }
        Ok(())
    }
}

/// What to produce where, and how fast.
pub struct ProduceJob<'a> {
    /// The spec the records are read with.
    pub spec: &'a Spec,
    /// How to reach the cluster.
    pub config: &'a Arc<KafkaConfig>,
    /// Partitions of the topic if it is missing and loanflow creates it
    /// (default 1, Kafka's own default; see [`KafkaConfig::ensure_output_topic`]).
    pub partitions: Option<i32>,
    /// The topic produced to.
    pub topic: &'a str,
    /// The file read.
    pub input: &'a Path,
    /// Its format (default: from the extension).
    pub format: Option<Format>,
    /// No progress bar.
    pub quiet: bool,
    /// When each record is due.
    pub pacer: Pacer,
    /// Records outside it (by event time) are passed over.
    pub window: Window,
}

/// Produces a file's records into a topic: each valid record as a JSON
/// object keyed by its id, with its event time as the message timestamp; a
/// line that is not a valid record as it is (no key), for the pipeline to
/// dead-letter. Fails if any message is not acknowledged.
pub fn produce_file(job: &ProduceJob<'_>, control: &Control) -> Result<IngestSummary> {
    let spec = job.spec;
    let config = job.config;
    let mut file = ParsedFile::open(
        spec,
        job.input,
        job.format,
        crate::dataflow::ingest::DEFAULT_MAX_RECORD_BYTES,
    )?;
    announce(&config.ensure_output_topic(job.topic, job.partitions.unwrap_or(1), &[])?);
    let producer = kafka::producer(config)?;
    let progress = progress_bar(file.data_len(), job.quiet);
    let name = file.name().to_owned();
    let mut pacer = job.pacer.restarted();
    let topic = job.topic;

    let started = Instant::now();
    let (mut records, mut raw, mut skipped) = (0u64, 0u64, 0u64);
    let mut json = Vec::with_capacity(1024);
    for line in file.lines() {
        if control.stopped() {
            break;
        }
        if let Some(bar) = &progress {
            bar.inc(line.bytes.len() as u64 + 1);
        }
        let event_time = line.parsed.as_ref().ok().and_then(|r| r.event_time);
        if let Some(t) = event_time {
            if !job.window.contains(t) {
                skipped += 1;
                continue;
            }
            if let Some(bar) = &progress {
                bar.set_message(format_time(t));
            }
        }
        // Paced: wait for the record's time, but never past a signal
        // (a replay at --speed 1 may wait minutes between records).
        if let Some(due) = pacer.due(event_time) {
            while let Some(left) = due.checked_duration_since(Instant::now()) {
                if control.stopped() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(50)));
            }
            if control.stopped() {
                break;
            }
        }
        let message = match &line.parsed {
            Ok(record) => {
                json.clear();
                write_record_json(&spec.columns, &record.values, &mut json);
                let mut message = BaseRecord::with_opaque_to(topic, 0)
                    .key(record.id.as_bytes())
                    .payload(json.as_slice());
                if let Some(ns) = record.event_time {
                    message = message.timestamp(ns.div_euclid(1_000_000));
                }
                records += 1;
                message
            }
            Err(dead) => {
                tracing::warn!("{name}:{}: {} (sent as it is)", line.line, dead.reason);
                raw += 1;
                BaseRecord::with_opaque_to(topic, 0).payload(line.bytes)
            }
        };
        kafka::send(&producer, message)?;
        producer.context().deliveries.sent(0);
        producer.poll(Duration::ZERO);
        if let Some(failure) = producer.context().deliveries.failure() {
            return Err(failure.into());
        }
    }
    let flush_timeout = config.connect_timeout.max(Duration::from_secs(30));
    producer
        .flush(flush_timeout)
        .with_context(|| format!("not every message was acknowledged within {flush_timeout:?}"))?;
    if let Some(failure) = producer.context().deliveries.failure() {
        return Err(failure.into());
    }
    let outstanding = producer.context().deliveries.outstanding_total();
    if outstanding > 0 {
        return Err(anyhow!(
            "{outstanding} messages were not acknowledged by the broker"
        ));
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(IngestSummary {
        topic: topic.to_owned(),
        records,
        raw,
        skipped,
        elapsed: started.elapsed(),
        interrupted: control.stopped(),
    })
}
