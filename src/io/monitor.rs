//! Where the monitor's window reports go: a JSON Lines file (`--monitor`)
//! or a topic (`--monitor-topic`, keyed by the window's start in ms), or both.
//! Written by one worker (worker 0 of process 0, which merges the windows),
//! synchronously: a report is on disk (flushed) or acknowledged by the
//! broker before [`MonitorSink::write`] returns, so the operator that calls
//! it releases the report's epoch only once it is delivered.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::kafka::sink::{producer, send, SinkContext};
use super::kafka::KafkaConfig;
use crate::core::fault::Fault;
use crate::core::monitor::WindowReport;

/// The monitor's outputs.
#[derive(Default)]
pub struct MonitorSink {
    file: Option<(PathBuf, Mutex<std::fs::File>)>,
    topic: Option<(String, BaseProducer<SinkContext>, Arc<KafkaConfig>)>,
}

impl MonitorSink {
    /// Writes to `path` too (created or truncated now).
    pub fn with_file(mut self, path: &Path) -> Result<MonitorSink, Fault> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Fault::fatal(format!("cannot create {}: {e}", dir.display())))?;
        }
        let file = std::fs::File::create(path)
            .map_err(|e| Fault::fatal(format!("cannot create {}: {e}", path.display())))?;
        self.file = Some((path.to_owned(), Mutex::new(file)));
        Ok(self)
    }

    /// Sends to `topic` too (which the caller made sure exists).
    pub fn with_topic(
        mut self,
        config: &Arc<KafkaConfig>,
        topic: &str,
    ) -> Result<MonitorSink, Fault> {
        self.topic = Some((topic.to_owned(), producer(config)?, Arc::clone(config)));
        Ok(self)
    }

    /// Whether there is anywhere to write.
    pub fn is_some(&self) -> bool {
        self.file.is_some() || self.topic.is_some()
    }

    /// Writes `reports` and waits until they are delivered.
    pub fn write(&self, reports: &[WindowReport]) -> Result<(), Fault> {
        if reports.is_empty() || (self.file.is_none() && self.topic.is_none()) {
            // Nothing to write (the monitor feeds only `--http`'s gauges).
            return Ok(());
        }
        let lines: Vec<Vec<u8>> = reports.iter().map(WindowReport::to_line).collect();
        if let Some((path, file)) = &self.file {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            for line in &lines {
                f.write_all(line)
                    .map_err(|e| Fault::fatal(format!("cannot write {}: {e}", path.display())))?;
            }
            f.flush()
                .map_err(|e| Fault::fatal(format!("cannot write {}: {e}", path.display())))?;
        }
        if let Some((topic, producer, config)) = &self.topic {
            for (report, line) in reports.iter().zip(&lines) {
                let key = report.window_start_ms.to_string();
                let value = &line[..line.len() - 1];
                let record = BaseRecord::with_opaque_to(topic, 0usize)
                    .key(key.as_bytes())
                    .payload(value)
                    .timestamp(report.window_start_ms);
                send(producer, record)?;
                producer.context().deliveries.sent(0);
            }
            producer
                .flush(config.max_outage)
                .map_err(|e| Fault::fatal(format!("cannot deliver to `{topic}`: {e}")))?;
            if let Some(f) = producer.context().deliveries.failure() {
                return Err(f);
            }
        }
        Ok(())
    }
}
