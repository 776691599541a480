//! `loanflow ingest` (file → topic, the tutorial's ingest service) and
//! `loanflow tail` (topic → terminal, the tutorial's stream reader).

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use std::path::Path;

use crate::cli::{IngestArgs, KafkaArgs, PassthroughArgs, PipelineArgs, TailArgs};
use crate::dataflow::ingest::{Parser, DEFAULT_MAX_RECORD_BYTES};
use crate::io::file::{detect_format, FileInput};
use crate::io::kafka::{self, Context, KafkaConfig};
use crate::record::{format_time, Format};
use crate::record::{write_record_json, Origin, RawRecord};
use crate::replay::{Pacer, Speed, Window};
use crate::run::{kafka_config, progress_bar};
use crate::spec::Spec;

fn required(args: &KafkaArgs) -> Result<Arc<KafkaConfig>> {
    kafka_config(args)?.ok_or_else(|| anyhow!("--brokers is required (or set LOANFLOW_BROKERS)"))
}

/// What `loanflow ingest` did.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    pub topic: String,
    pub records: u64,
    /// Lines that were not valid records, sent as they are.
    pub raw: u64,
    /// Records outside the replay's event-time window.
    pub skipped: u64,
    pub elapsed: Duration,
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

pub fn ingest(args: &IngestArgs, stop: Arc<AtomicBool>) -> Result<IngestSummary> {
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(anyhow!(
                "--rate must be a positive number of records per second"
            ));
        }
    }
    produce_file(
        &ProduceJob {
            pipeline: &args.pipeline,
            kafka: &args.kafka,
            topic: &args.topic,
            input: &args.input,
            format: args.format,
            quiet: args.quiet,
            pacer: Pacer::new(Speed::Max, args.rate),
            window: Window::default(),
        },
        stop,
    )
}

/// What to produce where, and how fast: `loanflow ingest` and `loanflow replay --topic`.
pub struct ProduceJob<'a> {
    pub pipeline: &'a PipelineArgs,
    pub kafka: &'a KafkaArgs,
    pub topic: &'a str,
    pub input: &'a Path,
    pub format: Option<Format>,
    pub quiet: bool,
    pub pacer: Pacer,
    /// Records outside it (by event time) are passed over.
    pub window: Window,
}

/// Produces a file's records into a topic, paced, within an event-time window.
pub fn produce_file(job: &ProduceJob<'_>, stop: Arc<AtomicBool>) -> Result<IngestSummary> {
    let spec = Spec::load(&job.pipeline.dataflow)?;
    let config = required(job.kafka)?;
    let format = detect_format(job.input, job.format)?;
    let input = FileInput::open(job.input, format)?;
    let name = job.input.display().to_string();
    let mut parser = Parser::new(
        &spec,
        format,
        input.header(),
        &name,
        DEFAULT_MAX_RECORD_BYTES,
    )?;
    config.ensure_topic(job.topic, job.kafka.partitions)?;
    let producer = kafka::producer(&config).map_err(|e| anyhow!(e))?;
    let progress = progress_bar(input.data_len(), job.quiet);
    let path: Arc<str> = Arc::from(name.as_str());
    let mut pacer = job.pacer.restarted();
    let topic = job.topic;

    let started = Instant::now();
    let (mut records, mut raw, mut skipped) = (0u64, 0u64, 0u64);
    let mut json = Vec::with_capacity(1024);
    for (line, bytes) in input.lines(input.records()) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(bar) = &progress {
            bar.inc(bytes.len() as u64 + 1);
        }
        let parsed = parser.parse(RawRecord {
            read_at: 0,
            bytes: bytes.to_vec(),
            origin: Origin::File {
                path: Arc::clone(&path),
                line,
            },
        });
        let event_time = parsed.as_ref().ok().and_then(|r| r.event_time);
        if let Some(t) = event_time {
            if !job.window.contains(t) {
                skipped += 1;
                continue;
            }
            if let Some(bar) = &progress {
                bar.set_message(format_time(t));
            }
        }
        pacer.wait(event_time);
        let record = match &parsed {
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
                tracing::warn!("{}:{line}: {} (sent as it is)", name, dead.reason);
                raw += 1;
                BaseRecord::with_opaque_to(topic, 0).payload(bytes)
            }
        };
        kafka::send(&producer, record).map_err(|e| anyhow!(e))?;
        producer.context().deliveries.sent(0);
        producer.poll(Duration::ZERO);
        if let Some(failure) = producer.context().deliveries.failure() {
            return Err(anyhow!(failure));
        }
    }
    let flush_timeout = config.connect_timeout.max(Duration::from_secs(30));
    producer
        .flush(flush_timeout)
        .with_context(|| format!("not every message was acknowledged within {flush_timeout:?}"))?;
    if let Some(failure) = producer.context().deliveries.failure() {
        return Err(anyhow!(failure));
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
        interrupted: stop.load(Ordering::Relaxed),
    })
}

pub fn tail(args: &TailArgs, stop: Arc<AtomicBool>) -> Result<()> {
    let config = required(&args.kafka)?;
    let partitions = config.ensure_topic(&args.topic, None)?;
    let consumer: BaseConsumer<Context> = config
        // assign() needs a group id; tail never commits, so it never moves the group.
        .client_config(&[
            ("enable.partition.eof", "false"),
            ("group.id", "loanflow.tail"),
            ("enable.auto.commit", "false"),
            kafka::FROM_START,
        ])
        .create_with_context(Context::default())
        .map_err(|e| anyhow!("cannot create a Kafka consumer: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    let start = if args.from_beginning {
        kafka::START
    } else {
        Offset::End
    };
    for p in 0..partitions {
        assignment.add_partition_offset(&args.topic, p, start)?;
    }
    consumer.assign(&assignment)?;
    let stdout = std::io::stdout();
    let mut seen = 0u64;
    while !stop.load(Ordering::Relaxed) && args.count.is_none_or(|n| seen < n) {
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) => {
                tracing::warn!("consumer: {e} (retrying)");
                continue;
            }
            Some(Ok(m)) => m,
        };
        seen += 1;
        let payload = message.payload().unwrap_or_default();
        let line = if args.json {
            String::from_utf8_lossy(payload).into_owned()
        } else {
            describe(payload)
        };
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break; // the reader went away (e.g. `| head`)
        }
    }
    Ok(())
}

/// One line for a person: id, score, flag (or the raw value if it is not a scored application).
fn describe(payload: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(v) if v.get("score").is_some() => format!(
            "{:<16} score {:<12} {}",
            v["id"].as_str().unwrap_or("?"),
            v["score"],
            if v["flagged"].as_bool() == Some(true) {
                "FLAGGED"
            } else {
                "ok"
            }
        ),
        _ => String::from_utf8_lossy(payload).into_owned(),
    }
}

/// What `loanflow passthrough` did.
#[derive(Debug, Clone)]
pub struct PassthroughSummary {
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub workers: usize,
}

impl fmt::Display for PassthroughSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "loanflow: passthrough copied {} messages in {:.3} s — {:.0} messages/s, {:.1} MB/s on {} thread{}",
            self.messages,
            secs,
            self.messages as f64 / secs,
            self.bytes as f64 / 1e6 / secs,
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        )
    }
}

/// Consume → produce with no processing, every partition to its end.
pub fn passthrough(args: &PassthroughArgs) -> Result<PassthroughSummary> {
    let config = required(&args.kafka)?;
    let partitions = config.ensure_topic(&args.input_topic, None)?;
    config.ensure_topic(&args.output_topic, args.kafka.partitions)?;
    let workers = args.workers as usize;
    let started = Instant::now();
    let results: Vec<Result<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let config = Arc::clone(&config);
                scope.spawn(move || copy_partitions(&config, args, partitions, w, workers))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a passthrough thread panicked")))
            })
            .collect()
    });
    let (mut messages, mut bytes) = (0, 0);
    for r in results {
        let (m, b) = r?;
        messages += m;
        bytes += b;
    }
    Ok(PassthroughSummary {
        messages,
        bytes,
        elapsed: started.elapsed(),
        workers,
    })
}

fn copy_partitions(
    config: &KafkaConfig,
    args: &PassthroughArgs,
    partitions: i32,
    index: usize,
    workers: usize,
) -> Result<(u64, u64)> {
    let owned: Vec<i32> = (0..partitions)
        .filter(|p| *p as usize % workers == index)
        .collect();
    if owned.is_empty() {
        return Ok((0, 0));
    }
    let consumer: BaseConsumer<Context> = config
        .client_config(&[
            ("group.id", "loanflow.passthrough"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            kafka::FROM_START,
        ])
        .create_with_context(Context::default())?;
    let mut assignment = TopicPartitionList::new();
    for &p in &owned {
        assignment.add_partition_offset(&args.input_topic, p, kafka::START)?;
    }
    consumer.assign(&assignment)?;
    let producer = kafka::producer(config).map_err(|e| anyhow!(e))?;
    let mut at_end = std::collections::HashSet::new();
    let (mut messages, mut bytes) = (0u64, 0u64);
    while at_end.len() < owned.len() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => tracing::warn!("consumer: {e} (retrying)"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let payload = m.payload().unwrap_or_default();
                let mut record =
                    BaseRecord::with_opaque_to(args.output_topic.as_str(), 0).payload(payload);
                if let Some(key) = m.key() {
                    record = record.key(key);
                }
                kafka::send(&producer, record).map_err(|e| anyhow!(e))?;
                producer.context().deliveries.sent(0);
                producer.poll(Duration::ZERO);
                messages += 1;
                bytes += payload.len() as u64;
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    if let Some(failure) = producer.context().deliveries.failure() {
        return Err(anyhow!(failure));
    }
    Ok((messages, bytes))
}
