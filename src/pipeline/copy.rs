//! Copying a topic to another with no processing: the raw consume →
//! produce limit of a broker (`loanflow passthrough`, and the benchmark's
//! Kafka limit). A signal stops the copy: what was read is still delivered.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};

use super::plan::announce;
use crate::io::kafka::{self, KafkaConfig, PartitionReader, START};

/// What `loanflow passthrough` did.
#[derive(Debug, Clone)]
pub struct PassthroughSummary {
    /// Messages copied.
    pub messages: u64,
    /// Bytes of their values.
    pub bytes: u64,
    /// From the start to the last acknowledgement.
    pub elapsed: Duration,
    /// Threads.
    pub workers: usize,
    /// Stopped by a signal before every partition's end.
    pub interrupted: bool,
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
        )?;
        if self.interrupted {
            write!(
                f,
                "\n  (stopped by a signal before the end of the input topic; every message read was delivered)"
            )?;
        }
        Ok(())
    }
}

/// A topic to copy: every partition of `input` from the beginning to its
/// end, into `output`, on `workers` threads that own disjoint partitions
/// (partition `p` on thread `p % workers`, as a run's workers own them).
pub struct Copy<'a> {
    /// How to reach the cluster.
    pub config: &'a Arc<KafkaConfig>,
    /// The topic read.
    pub input: &'a str,
    /// The topic written.
    pub output: &'a str,
    /// Partitions of the output if it is missing and loanflow creates it
    /// (default: the input's count).
    pub partitions: Option<i32>,
    /// Threads.
    pub workers: usize,
    /// Set on SIGINT/SIGTERM: stop reading, deliver what was read.
    pub stop: Arc<AtomicBool>,
}

/// Consume → produce with no processing, every partition to its end.
pub fn copy(job: &Copy<'_>) -> Result<PassthroughSummary> {
    let partitions = job.config.lookup()?.partitions(job.input)?.ok_or_else(|| {
        anyhow!(
            "topic `{}` does not exist on {}: nothing to copy",
            job.input,
            job.config.brokers
        )
    })?;
    announce(&job.config.ensure_output_topic(
        job.output,
        job.partitions.unwrap_or(partitions),
        &[],
    )?);
    let workers = job.workers;
    let started = Instant::now();
    let results: Vec<Result<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| scope.spawn(move || copy_partitions(job, partitions, w)))
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
        interrupted: job.stop.load(Ordering::Relaxed),
    })
}

/// Thread `index`'s share of [`copy`].
fn copy_partitions(job: &Copy<'_>, partitions: i32, index: usize) -> Result<(u64, u64)> {
    let owned: Vec<i32> = (0..partitions)
        .filter(|p| *p as usize % job.workers == index)
        .collect();
    if owned.is_empty() {
        return Ok((0, 0));
    }
    let mut reader = PartitionReader::open(
        job.config,
        job.input,
        owned,
        START,
        "loanflow.passthrough",
        &[],
    )?;
    let producer = kafka::producer(job.config)?;
    let (mut messages, mut bytes) = (0u64, 0u64);
    while !reader.all_at_end() && !job.stop.load(Ordering::Relaxed) {
        let Some(m) = reader.poll(Duration::from_millis(100)) else {
            continue;
        };
        let payload = m.payload().unwrap_or_default();
        let mut record = BaseRecord::with_opaque_to(job.output, 0).payload(payload);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        kafka::send(&producer, record)?;
        producer.context().deliveries.sent(0);
        producer.poll(Duration::ZERO);
        messages += 1;
        bytes += payload.len() as u64;
    }
    producer.flush(Duration::from_secs(60))?;
    if let Some(failure) = producer.context().deliveries.failure() {
        return Err(failure.into());
    }
    Ok((messages, bytes))
}
