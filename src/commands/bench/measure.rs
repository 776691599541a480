//! The measuring itself: CPU time, latencies read back from stamped
//! outputs (files and topics), the scorer alone on the input's own features.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::message::Message;

use super::report::{Measured, Spread};
use crate::dataflow::clean::Cleaner;
use crate::dataflow::ingest::DEFAULT_MAX_RECORD_BYTES;
use crate::io::file::ParsedFile;
use crate::io::kafka::{KafkaConfig, PartitionReader};
use crate::model::Forest;
use crate::pipeline::load::Loaded;

/// Rows cleaned for the scorer-alone limit (then scored over and over).
const SCORER_SAMPLE_ROWS: usize = 16_384;

/// CPU time (user + system) of this process so far, all its threads (those
/// that ended included), from /proc/self/stat; `None` off Linux.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, in parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ: 100 on every Linux ABI /proc reports in.
    Some(Duration::from_millis(ticks * 10))
}

/// The `latency_ms` of every line of a stamped output file.
pub fn latencies(path: &Path) -> Result<Vec<f64>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    latencies_in(&data, &mut out);
    Ok(out)
}

/// Appends the `latency_ms` of every stamped output in `data` to `out`.
fn latencies_in(data: &[u8], out: &mut Vec<f64>) {
    let key = b"\"latency_ms\":";
    for at in memchr::memmem::find_iter(data, key) {
        let start = at + key.len();
        let end = data[start..]
            .iter()
            .position(|&b| b == b',' || b == b'}')
            .map_or(data.len(), |n| start + n);
        if let Some(v) = std::str::from_utf8(&data[start..end])
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
        {
            out.push(v);
        }
    }
}

/// The `latency_ms` of the stamped outputs in `topic`, read from the
/// beginning until every partition is at its end with `expected` read (or
/// a minute has passed).
pub fn topic_latencies(config: &KafkaConfig, topic: &str, expected: u64) -> Result<Vec<f64>> {
    let partitions = config.ensure_topic(topic, None)?;
    let mut reader = PartitionReader::from_start(config, topic, partitions, "loanflow.bench", &[])?;
    let mut read = 0u64;
    let mut out = Vec::with_capacity(expected as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (!reader.all_at_end() || read < expected) && Instant::now() < deadline {
        if let Some(m) = reader.poll(Duration::from_millis(100)) {
            read += 1;
            latencies_in(m.payload().unwrap_or_default(), &mut out);
        }
    }
    if read < expected {
        tracing::warn!("read {read} of {expected} outputs back from {topic} within a minute");
    }
    Ok(out)
}

/// Microseconds of this process's CPU per record since `before`.
pub fn cpu_per_record(before: Option<Duration>, records: u64) -> Option<f64> {
    let spent = process_cpu_time()?.checked_sub(before?)?;
    Some(spent.as_secs_f64() * 1e6 / records.max(1) as f64)
}

/// The median, if every value was measured.
pub fn median_opt(values: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = values.iter().flatten().copied().collect();
    (v.len() == values.len() && !v.is_empty()).then(|| Spread::of(&v).median)
}

/// `m`'s median records/s as a percentage of `limit`.
pub fn percent(m: &Measured, limit: f64) -> f64 {
    100.0 * m.records_per_s().median / limit.max(1e-9)
}

/// "s" unless `n` is 1.
pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The features of the input's first rows, as the pipeline's ingest and
/// clean stages make them (rows they refuse are left out).
pub fn sample_features(loaded: &Loaded, input: &Path) -> Result<Vec<f32>> {
    let mut file = ParsedFile::open(&loaded.spec, input, None, DEFAULT_MAX_RECORD_BYTES)?;
    let cleaner = Cleaner::new(&loaded.spec);
    let mut features = Vec::new();
    let mut rows = 0;
    for line in file.lines() {
        if rows == SCORER_SAMPLE_ROWS {
            break;
        }
        let Ok(record) = line.parsed else {
            continue;
        };
        let before = features.len();
        if cleaner
            .features_into(&record.values, &mut features)
            .is_err()
        {
            features.truncate(before);
            continue;
        }
        rows += 1;
    }
    if rows == 0 {
        bail!("no row of {} could be scored", input.display());
    }
    Ok(features)
}

/// Seconds `threads` threads take to score `rows` rows together (each
/// scoring its share by going over `features` again and again).
pub fn score_alone(forest: &Forest, features: &[f32], rows: u64, threads: usize) -> f64 {
    let width = forest.num_features();
    let sample = features.len() / width;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let share = rows / threads as u64 + u64::from((t as u64) < rows % threads as u64);
            scope.spawn(move || {
                let mut out = vec![0.0f32; sample];
                let mut left = share as usize;
                while left > 0 {
                    let n = left.min(sample);
                    forest.predict_batch(&features[..n * width], &mut out[..n]);
                    std::hint::black_box(&out);
                    left -= n;
                }
            });
        }
    });
    started.elapsed().as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_latencies_of_stamped_lines() {
        let dir = std::env::temp_dir().join(format!("loanflow-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"latency_ms\":1.5}\n{\"id\":\"b\",\"latency_ms\":null}\n{\"id\":\"c\",\"latency_ms\":12,\"x\":1}\n",
        )
        .unwrap();
        assert_eq!(latencies(&path).unwrap(), vec![1.5, 12.0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_own_cpu_time() {
        if cfg!(target_os = "linux") {
            assert!(process_cpu_time().is_some());
        }
    }
}
