//! `loanflow bench`: the pipeline measured in one sitting, next to its limits.
//!
//! For every worker count it runs the real pipeline (`run::run`, in process,
//! with `RunArgs` parsed from the same flags `loanflow run` takes, so the
//! defaults live in one place) `--repeat` times, file → file (and with
//! `--brokers`, Kafka → Kafka), and reports records/s (median, min, max),
//! MB/s, CPU time per record and the end-to-end latency per record (the
//! `latency_ms` of `--stamp`'ed outputs). The limits come from the same
//! input in the same sitting: a plain file copy, the scorer alone
//! (`Forest::predict_batch` on the input's own features, on as many threads
//! as workers), and with `--brokers` the raw Kafka passthrough.
//!
//! With `--rate`, every worker count is then run again paced at each offered
//! load (records/s, or a percentage of that worker count's median records/s
//! measured just before): the latency under load, and whether the p99 at
//! 50 % load meets `--p99-target-ms`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser as _;
use serde_json::{json, Value as Json};

use crate::cli::{BenchArgs, Cli, Command, GenerateArgs, PassthroughArgs, RunArgs};
use crate::dataflow::clean::Cleaner;
use crate::dataflow::ingest::{Parser, DEFAULT_MAX_RECORD_BYTES};
use crate::dataflow::pace::Pace;
use crate::io::file::{detect_format, FileInput};
use crate::record::{Origin, RawRecord};
use crate::replay::{Pacer, Speed, Window};

/// Rows cleaned for the scorer-alone limit (then scored over and over).
const SCORER_SAMPLE_ROWS: usize = 16_384;

/// Median, min and max of a few measurements.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        Spread {
            median: if v.len() % 2 == 1 {
                v[v.len() / 2]
            } else {
                (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
            },
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    fn to_json(self) -> Json {
        json!({"median": self.median, "min": self.min, "max": self.max})
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

impl Latency {
    /// Nearest-rank percentiles of `values` (sorted here).
    pub fn of(values: &mut [f64]) -> Option<Latency> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[i.clamp(1, values.len()) - 1]
        };
        Some(Latency {
            p50: rank(50.0),
            p99: rank(99.0),
            max: values[values.len() - 1],
            samples: values.len(),
        })
    }
}

/// One measured configuration (a pipeline) or limit.
#[derive(Debug, Clone)]
pub struct Measured {
    pub name: String,
    pub kind: &'static str,
    pub workers: usize,
    /// records/s of each repetition.
    pub runs: Vec<f64>,
    /// Input MB/s (none for the scorer, which reads no bytes).
    pub mb_per_s: Option<f64>,
    pub cpu_us_per_record: Option<f64>,
    pub latency: Option<Latency>,
    /// Offered load (records/s), with --rate.
    pub offered: Option<f64>,
    /// records/s as a percentage of the limits it is compared with.
    pub vs: Vec<(String, f64)>,
}

impl Measured {
    pub fn records_per_s(&self) -> Spread {
        Spread::of(&self.runs)
    }

    fn to_json(&self) -> Json {
        let mut o = json!({
            "name": self.name,
            "kind": self.kind,
            "workers": self.workers,
            "repeats": self.runs.len(),
            "runs": self.runs,
            "records_per_s": self.records_per_s().to_json(),
            "mb_per_s": self.mb_per_s,
            "cpu_us_per_record": self.cpu_us_per_record,
            "latency_ms": self.latency.map(|l| json!({
                "p50": l.p50, "p99": l.p99, "max": l.max, "samples": l.samples
            })),
        });
        if let Some(rate) = self.offered {
            o["offered_records_per_s"] = json!(rate);
        }
        if !self.vs.is_empty() {
            o["percent_of"] = self
                .vs
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        o
    }
}

/// One offered load of `--rate`: records per second, or a percentage of the
/// pipeline's max (its median records/s, unpaced, with as many workers, in
/// the same sitting).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    PerSecond(f64),
    PercentOfMax(f64),
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Rate, String> {
        let t = s.trim();
        let (number, percent) = match t.strip_suffix('%') {
            Some(n) => (n.trim_end(), true),
            None => (t, false),
        };
        let v: f64 = number.parse().map_err(|_| {
            format!("`{s}` is neither records/s (200000) nor a percentage of the max (50%)")
        })?;
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("`{s}`: an offered load must be positive"));
        }
        Ok(if percent {
            Rate::PercentOfMax(v)
        } else {
            Rate::PerSecond(v)
        })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::PerSecond(v) => write!(f, "{v}"),
            Rate::PercentOfMax(p) => write!(f, "{p}%"),
        }
    }
}

impl Rate {
    /// Records/s offered, given the pipeline's max.
    pub fn resolve(self, max: f64) -> f64 {
        match self {
            Rate::PerSecond(v) => v,
            Rate::PercentOfMax(p) => max * p / 100.0,
        }
    }
}

/// The offered load whose p99 is held against `--p99-target-ms`.
pub const TARGET_LOAD_PERCENT: f64 = 50.0;

/// The pipeline paced at one offered load.
#[derive(Debug, Clone)]
pub struct LoadPoint {
    /// As asked on the command line.
    pub rate: Rate,
    /// Records/s offered (split evenly over the workers).
    pub offered: f64,
    /// The unpaced median records/s of the same worker count (the max).
    pub max: f64,
    /// What the paced runs measured (records/s achieved, latency).
    pub measured: Measured,
}

impl LoadPoint {
    pub fn percent_of_max(&self) -> f64 {
        100.0 * self.offered / self.max.max(1e-9)
    }

    pub fn achieved_percent_of_offered(&self) -> f64 {
        100.0 * self.measured.records_per_s().median / self.offered.max(1e-9)
    }

    /// Whether this is the load the p99 target is about.
    pub fn is_target_load(&self) -> bool {
        self.rate == Rate::PercentOfMax(TARGET_LOAD_PERCENT)
    }

    fn to_json(&self) -> Json {
        let mut o = self.measured.to_json();
        o["rate"] = json!(self.rate.to_string());
        o["offered_records_per_s"] = json!(self.offered);
        o["offered_percent_of_max"] = json!(self.percent_of_max());
        o["max_records_per_s"] = json!(self.max);
        o["achieved_percent_of_offered"] = json!(self.achieved_percent_of_offered());
        o
    }
}

/// The p99 at 50 % load against the target, for one worker count.
#[derive(Debug, Clone, Copy)]
pub struct TargetCheck {
    pub workers: usize,
    pub offered: f64,
    pub p99_ms: f64,
    pub target_ms: f64,
}

impl TargetCheck {
    pub fn met(&self) -> bool {
        self.p99_ms <= self.target_ms
    }

    /// "p99 at 50 % load, -w 2 (340,000 records/s): 7.1 ms ≤ 20 ms target"
    pub fn line(&self) -> String {
        let target = format!("{}", self.target_ms);
        format!(
            "p99 at {} % load, -w {} ({} records/s): {:.1} ms {} {target} ms target{}",
            TARGET_LOAD_PERCENT,
            self.workers,
            thousands(self.offered),
            self.p99_ms,
            if self.met() { "≤" } else { ">" },
            if self.met() { "" } else { ": missed" },
        )
    }
}

/// Everything one `loanflow bench` measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub input: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub configurations: Vec<Measured>,
    pub limits: Vec<Measured>,
    /// The paced runs of `--rate`, by worker count then rate.
    pub load: Vec<LoadPoint>,
    pub p99_target_ms: f64,
}

impl Report {
    /// The p99 at 50 % load against `--p99-target-ms`, per worker count
    /// (none without `50%` in `--rate`).
    pub fn target_checks(&self) -> Vec<TargetCheck> {
        self.load
            .iter()
            .filter(|p| p.is_target_load())
            .filter_map(|p| {
                Some(TargetCheck {
                    workers: p.measured.workers,
                    offered: p.offered,
                    p99_ms: p.measured.latency?.p99,
                    target_ms: self.p99_target_ms,
                })
            })
            .collect()
    }

    pub fn to_json(&self) -> Json {
        json!({
            "input": self.input.display().to_string(),
            "rows": self.rows,
            "bytes": self.bytes,
            "machine": {
                "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
                "cpu": cpu_model(),
            },
            "configurations": self.configurations.iter().map(Measured::to_json).collect::<Vec<_>>(),
            "limits": self.limits.iter().map(Measured::to_json).collect::<Vec<_>>(),
            "load": self.load.iter().map(LoadPoint::to_json).collect::<Vec<_>>(),
            "p99_target": {
                "target_ms": self.p99_target_ms,
                "load_percent_of_max": TARGET_LOAD_PERCENT,
                "results": self.target_checks().iter().map(|c| json!({
                    "workers": c.workers,
                    "offered_records_per_s": c.offered,
                    "p99_ms": c.p99_ms,
                    "met": c.met(),
                })).collect::<Vec<_>>(),
            },
        })
    }

    /// The results in markdown: one table of the configurations, then the
    /// limits; with `--rate`, a second table of the latency under load and
    /// the p99 at 50 % load against its target.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| configuration | records/s (median) | min | max | MB/s | CPU µs/record | latency p50 ms | p99 ms | max ms | vs limits |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for m in self.configurations.iter().chain(&self.limits) {
            let s = m.records_per_s();
            let opt = |v: Option<f64>, digits: usize| {
                v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
            };
            let vs = if m.vs.is_empty() {
                "—".to_owned()
            } else {
                m.vs.iter()
                    .map(|(k, v)| format!("{v:.0} % of {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                m.name,
                thousands(s.median),
                thousands(s.min),
                thousands(s.max),
                opt(m.mb_per_s, 1),
                opt(m.cpu_us_per_record, 2),
                opt(m.latency.map(|l| l.p50), 1),
                opt(m.latency.map(|l| l.p99), 1),
                opt(m.latency.map(|l| l.max), 1),
                vs
            );
        }
        if !self.load.is_empty() {
            t.push_str(&self.load_table());
        }
        t
    }

    /// The latency-under-load table (preceded by a blank line and a caption)
    /// and the p99 verdicts.
    fn load_table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "Latency under load (file → file, input paced at the offered rate; latency from each record's due time):"
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "| configuration | offered | offered records/s | % of max | achieved records/s (median) | % of offered | latency p50 ms | p99 ms | max ms |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for p in &self.load {
            let l = p.measured.latency;
            let ms = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.1}"));
            let _ = writeln!(
                t,
                "| file → file, -w {} | {} | {} | {:.0} | {} | {:.0} | {} | {} | {} |",
                p.measured.workers,
                p.rate,
                thousands(p.offered),
                p.percent_of_max(),
                thousands(p.measured.records_per_s().median),
                p.achieved_percent_of_offered(),
                ms(l.map(|l| l.p50)),
                ms(l.map(|l| l.p99)),
                ms(l.map(|l| l.max)),
            );
        }
        let checks = self.target_checks();
        let _ = writeln!(t);
        if checks.is_empty() {
            let _ = writeln!(
                t,
                "p99 at {TARGET_LOAD_PERCENT} % load: not measured (add {TARGET_LOAD_PERCENT}% to --rate)"
            );
        }
        for c in checks {
            let _ = writeln!(t, "- {}", c.line());
        }
        t
    }
}

/// 1234567.8 → "1,234,568".
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

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
fn topic_latencies(
    config: &crate::io::kafka::KafkaConfig,
    topic: &str,
    expected: u64,
) -> Result<Vec<f64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message;
    use rdkafka::TopicPartitionList;

    let partitions = config.ensure_topic(topic, None)?;
    let consumer: BaseConsumer<crate::io::kafka::Context> = config
        // assign() needs a group id; nothing is committed.
        .client_config(&[
            ("enable.partition.eof", "true"),
            ("group.id", "loanflow.bench"),
            ("enable.auto.commit", "false"),
            crate::io::kafka::FROM_START,
        ])
        .create_with_context(crate::io::kafka::Context::default())
        .map_err(|e| anyhow!("cannot create a Kafka consumer: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, crate::io::kafka::START)?;
    }
    consumer.assign(&assignment)?;
    let mut at_end = std::collections::HashSet::new();
    let mut read = 0u64;
    let mut out = Vec::with_capacity(expected as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (at_end.len() < partitions as usize || read < expected) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => tracing::warn!("bench consumer: {e} (retrying)"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                read += 1;
                latencies_in(m.payload().unwrap_or_default(), &mut out);
            }
        }
    }
    if read < expected {
        tracing::warn!("read {read} of {expected} outputs back from {topic} within a minute");
    }
    Ok(out)
}

/// Parses `loanflow <args…>` the way the command line would.
fn parse(args: &[String]) -> Result<Command> {
    let argv = std::iter::once("loanflow".to_owned()).chain(args.iter().cloned());
    Cli::try_parse_from(argv)
        .map(|cli| cli.command)
        .map_err(|e| anyhow!("internal flags {args:?}: {e}"))
}

fn run_args(args: &[String]) -> Result<RunArgs> {
    match parse(args)? {
        Command::Run(run) => Ok(run),
        _ => unreachable!("parsed a `run` command line"),
    }
}

/// The flags every run and limit shares: the spec/model, and the brokers.
fn common_flags(args: &BenchArgs, kafka: bool) -> Vec<String> {
    let mut f = vec![
        "--dataflow".to_owned(),
        args.pipeline.dataflow.display().to_string(),
    ];
    if let Some(model) = &args.pipeline.model {
        f.extend(["--model".to_owned(), model.display().to_string()]);
    }
    if kafka {
        if let Some(brokers) = &args.kafka.brokers {
            f.extend(["--brokers".to_owned(), brokers.clone()]);
        }
        for p in &args.kafka.properties {
            f.extend(["-X".to_owned(), p.clone()]);
        }
        f.extend([
            "--connect-timeout".to_owned(),
            args.kafka.connect_timeout.to_string(),
        ]);
    }
    f
}

/// Progress on stderr, one line per run.
struct Progress {
    quiet: bool,
}

impl Progress {
    fn line(&self, msg: std::fmt::Arguments<'_>) {
        if !self.quiet {
            eprintln!("bench: {msg}");
        }
    }
}

/// Generates the stream (cached by rows and seed under --dir) or takes --input.
fn input_file(args: &BenchArgs, progress: &Progress) -> Result<PathBuf> {
    if let Some(input) = &args.input {
        return Ok(input.clone());
    }
    let path = args
        .dir
        .join(format!("stream-{}-seed{}.csv", args.rows, args.seed));
    if path.is_file() {
        progress.line(format_args!("reusing {}", path.display()));
        return Ok(path);
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let partial = args.dir.join(format!(
        "stream-{}-seed{}.partial.csv",
        args.rows, args.seed
    ));
    progress.line(format_args!(
        "generating {} applications (seed {}) into {}",
        args.rows,
        args.seed,
        path.display()
    ));
    let mut flags = vec!["generate".to_owned()];
    flags.extend(common_flags(args, false));
    flags.extend([
        "--rows".to_owned(),
        args.rows.to_string(),
        "--seed".to_owned(),
        args.seed.to_string(),
        "--output".to_owned(),
        partial.display().to_string(),
        "--quiet".to_owned(),
    ]);
    let generate: GenerateArgs = match parse(&flags)? {
        Command::Generate(g) => g,
        _ => unreachable!("parsed a `generate` command line"),
    };
    crate::generate::generate(&generate)?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
    Ok(path)
}

/// `loanflow bench`.
pub fn bench(args: &BenchArgs, stop: Arc<AtomicBool>) -> Result<Report> {
    if args.workers.is_empty() {
        bail!("--workers needs at least one worker count");
    }
    if !(args.p99_target_ms.is_finite() && args.p99_target_ms > 0.0) {
        bail!("--p99-target-ms must be a positive number of milliseconds");
    }
    let progress = Progress { quiet: args.quiet };
    // Fail on a bad spec or model before generating anything.
    let loaded = crate::run::load(&args.pipeline)?;
    let input = input_file(args, &progress)?;
    let format = detect_format(&input, None)?;
    let file = FileInput::open(&input, format)?;
    let rows = file.lines(file.records()).count() as u64;
    let bytes = std::fs::metadata(&input)?.len();
    if rows == 0 {
        bail!("{} has no records to benchmark", input.display());
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let output = args.dir.join("out.jsonl");
    let dead = args.dir.join("dead_letters.jsonl");
    let repeat = args.repeat as usize;
    let mut workers: Vec<usize> = args.workers.iter().map(|&w| w as usize).collect();
    workers.dedup();

    // The limits first: a plain copy, the scorer alone on 1…W threads.
    let mut limits = Vec::new();
    let copy = {
        let mut runs = Vec::new();
        let mut mbs = Vec::new();
        let mut cpu = Vec::new();
        for r in 1..=repeat {
            let cpu0 = process_cpu_time();
            let t = Instant::now();
            let data = std::fs::read(&input)?;
            std::fs::write(&output, &data)
                .with_context(|| format!("cannot write {}", output.display()))?;
            let secs = t.elapsed().as_secs_f64().max(1e-9);
            cpu.push(cpu_per_record(cpu0, rows));
            runs.push(rows as f64 / secs);
            mbs.push(bytes as f64 / 1e6 / secs);
            progress.line(format_args!(
                "file copy, run {r}/{repeat}: {:.0} records/s",
                rows as f64 / secs
            ));
        }
        Measured {
            name: "limit: file copy (read + write, no processing)".to_owned(),
            kind: "file_copy",
            workers: 1,
            runs,
            mb_per_s: Some(Spread::of(&mbs).median),
            cpu_us_per_record: median_opt(&cpu),
            latency: None,
            offered: None,
            vs: Vec::new(),
        }
    };
    let copy_rate = copy.records_per_s().median;
    limits.push(copy);

    let features = sample_features(&loaded, &file, format, &input)?;
    let mut scorer_rate = std::collections::HashMap::new();
    for &w in &workers {
        let mut runs = Vec::new();
        let mut cpu = Vec::new();
        for r in 1..=repeat {
            let cpu0 = process_cpu_time();
            let secs = score_alone(&loaded.model.forest, &features, rows, w);
            cpu.push(cpu_per_record(cpu0, rows));
            runs.push(rows as f64 / secs);
            progress.line(format_args!(
                "scorer alone, {w} thread{}, run {r}/{repeat}: {:.0} records/s",
                plural(w),
                rows as f64 / secs
            ));
        }
        let m = Measured {
            name: format!("limit: scorer alone, {w} thread{}", plural(w)),
            kind: "scorer",
            workers: w,
            runs,
            mb_per_s: None,
            cpu_us_per_record: median_opt(&cpu),
            latency: None,
            offered: None,
            vs: Vec::new(),
        };
        scorer_rate.insert(w, m.records_per_s().median);
        limits.push(m);
    }

    // The pipeline, file → file, after one unmeasured run: the first run of a process pays for page-ins and
    // allocator growth the others do not.
    {
        let mut flags = vec!["run".to_owned()];
        flags.extend(common_flags(args, false));
        flags.extend([
            "--input".to_owned(),
            input.display().to_string(),
            "--output".to_owned(),
            output.display().to_string(),
            "--dead-letters".to_owned(),
            dead.display().to_string(),
            "-w".to_owned(),
            workers[0].to_string(),
            "--quiet".to_owned(),
        ]);
        let s = crate::run::run(&run_args(&flags)?, Arc::clone(&stop))?;
        progress.line(format_args!(
            "warm-up run (not counted): {:.0} records/s",
            s.records_per_second()
        ));
    }
    let mut configurations = Vec::new();
    // The unpaced runs first: they are the max the percentages of --rate
    // are taken of.
    let mut max_rate = std::collections::HashMap::new();
    for &w in &workers {
        let run = file_run_args(args, &input, &output, &dead, w)?;
        let name = format!("file → file, -w {w}");
        let mut m = measure_runs(&name, "file", w, repeat, &progress, &stop, || {
            let summary = crate::run::run_paced(&run, None, Arc::clone(&stop))?;
            Ok((summary, latencies(&output)?))
        })?;
        m.vs = vec![
            ("file copy".to_owned(), percent(&m, copy_rate)),
            (
                format!("scorer ({w} thread{})", plural(w)),
                percent(&m, scorer_rate[&w]),
            ),
        ];
        max_rate.insert(w, m.records_per_s().median);
        configurations.push(m);
    }

    // Then the same pipeline paced at each offered load.
    let mut load = Vec::new();
    for &w in &workers {
        let run = file_run_args(args, &input, &output, &dead, w)?;
        let max = max_rate[&w];
        for &rate in &args.rate {
            let offered = rate.resolve(max);
            let pace = Pace {
                speed: Speed::Max,
                rate: Some(offered / w as f64),
                window: Window::default(),
                origin: 0,
            };
            let name = format!(
                "file → file, -w {w}, offered {} records/s ({:.0} % of max)",
                thousands(offered),
                100.0 * offered / max.max(1e-9)
            );
            let mut m = measure_runs(&name, "file_paced", w, repeat, &progress, &stop, || {
                let summary = crate::run::run_paced(&run, Some(pace), Arc::clone(&stop))?;
                Ok((summary, latencies(&output)?))
            })?;
            m.offered = Some(offered);
            load.push(LoadPoint {
                rate,
                offered,
                max,
                measured: m,
            });
        }
    }

    if args.kafka.brokers.is_some() {
        kafka(
            args,
            &input,
            &workers,
            &progress,
            &stop,
            &mut configurations,
            &mut limits,
        )?;
    }
    Ok(Report {
        input,
        rows,
        bytes,
        configurations,
        limits,
        load,
        p99_target_ms: args.p99_target_ms,
    })
}

/// `loanflow run` file → file with `w` workers, every output stamped.
fn file_run_args(
    args: &BenchArgs,
    input: &Path,
    output: &Path,
    dead: &Path,
    w: usize,
) -> Result<RunArgs> {
    let mut flags = vec!["run".to_owned()];
    flags.extend(common_flags(args, false));
    flags.extend([
        "--input".to_owned(),
        input.display().to_string(),
        "--output".to_owned(),
        output.display().to_string(),
        "--dead-letters".to_owned(),
        dead.display().to_string(),
        "-w".to_owned(),
        w.to_string(),
        "--stamp".to_owned(),
        "--quiet".to_owned(),
    ]);
    run_args(&flags)
}

/// Kafka → Kafka next to the raw passthrough: the input is ingested once
/// into a fresh topic, then every repetition reads it with a fresh group
/// into a fresh output topic, to its end.
fn kafka(
    args: &BenchArgs,
    input: &Path,
    workers: &[usize],
    progress: &Progress,
    stop: &Arc<AtomicBool>,
    configurations: &mut Vec<Measured>,
    limits: &mut Vec<Measured>,
) -> Result<()> {
    let partitions = args.kafka.partitions.unwrap_or(4);
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let topic = format!("loanflow-bench-{tag}");
    let mut kafka_args = args.kafka.clone();
    kafka_args.partitions = Some(partitions);
    let config = crate::run::kafka_config(&kafka_args)?
        .ok_or_else(|| anyhow!("--brokers is required for the Kafka runs"))?;
    progress.line(format_args!(
        "ingesting {} into topic {topic} ({partitions} partitions)",
        input.display()
    ));
    let ingested = crate::produce::produce_file(
        &crate::produce::ProduceJob {
            pipeline: &args.pipeline,
            kafka: &kafka_args,
            topic: &topic,
            input,
            format: None,
            quiet: true,
            pacer: Pacer::new(Speed::Max, None),
            window: Window::default(),
        },
        Arc::clone(stop),
    )?;
    progress.line(format_args!("{ingested}"));
    let repeat = args.repeat as usize;
    for &w in workers {
        let mut runs = Vec::new();
        let mut mbs = Vec::new();
        let mut cpu = Vec::new();
        for r in 1..=repeat {
            let pass = PassthroughArgs {
                kafka: kafka_args.clone(),
                input_topic: topic.clone(),
                output_topic: format!("{topic}.copy-{w}-{r}"),
                workers: w as u16,
            };
            let cpu0 = process_cpu_time();
            let s = crate::produce::passthrough(&pass)?;
            let secs = s.elapsed.as_secs_f64().max(1e-9);
            cpu.push(cpu_per_record(cpu0, s.messages));
            runs.push(s.messages as f64 / secs);
            mbs.push(s.bytes as f64 / 1e6 / secs);
            progress.line(format_args!(
                "Kafka passthrough, {w} thread{}, run {r}/{repeat}: {:.0} messages/s",
                plural(w),
                s.messages as f64 / secs
            ));
        }
        let pass = Measured {
            name: format!(
                "limit: Kafka passthrough (consume → produce), {w} thread{}",
                plural(w)
            ),
            kind: "kafka_passthrough",
            workers: w,
            runs,
            mb_per_s: Some(Spread::of(&mbs).median),
            cpu_us_per_record: median_opt(&cpu),
            latency: None,
            offered: None,
            vs: Vec::new(),
        };
        let pass_rate = pass.records_per_s().median;
        limits.push(pass);

        let mut r = 0;
        let mut m = measure_runs(
            &format!("Kafka → Kafka, -w {w}"),
            "kafka",
            w,
            repeat,
            progress,
            stop,
            || {
                r += 1;
                let mut flags = vec!["run".to_owned()];
                flags.extend(common_flags(args, true));
                flags.extend([
                    "--input-topic".to_owned(),
                    topic.clone(),
                    "--output-topic".to_owned(),
                    format!("{topic}.scored-{w}-{r}"),
                    "--partitions".to_owned(),
                    partitions.to_string(),
                    "--group".to_owned(),
                    format!("{topic}.group-{w}-{r}"),
                    "--until".to_owned(),
                    "end".to_owned(),
                    "--from".to_owned(),
                    "earliest".to_owned(),
                    "-w".to_owned(),
                    w.to_string(),
                    "--stamp".to_owned(),
                    "--quiet".to_owned(),
                ]);
                let run = run_args(&flags)?;
                let summary = crate::run::run(&run, Arc::clone(stop))?;
                // Outside the timed run: the outputs read back for their latency.
                let scored = format!("{topic}.scored-{w}-{r}");
                let latencies = topic_latencies(&config, &scored, summary.scored)?;
                Ok((summary, latencies))
            },
        )?;
        m.vs = vec![("Kafka passthrough".to_owned(), percent(&m, pass_rate))];
        configurations.push(m);
    }
    Ok(())
}

/// Runs `once` `repeat` times and gathers what the runs measured.
fn measure_runs(
    name: &str,
    kind: &'static str,
    workers: usize,
    repeat: usize,
    progress: &Progress,
    stop: &Arc<AtomicBool>,
    mut once: impl FnMut() -> Result<(crate::run::Summary, Vec<f64>)>,
) -> Result<Measured> {
    let mut runs = Vec::new();
    let mut mbs = Vec::new();
    let mut cpu = Vec::new();
    let mut lat = Vec::new();
    for r in 1..=repeat {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let cpu0 = process_cpu_time();
        let (summary, latencies) = once()?;
        if summary.interrupted {
            bail!("interrupted");
        }
        let secs = summary.elapsed.as_secs_f64().max(1e-9);
        cpu.push(cpu_per_record(cpu0, summary.records_in));
        runs.push(summary.records_per_second());
        mbs.push(summary.bytes_in as f64 / 1e6 / secs);
        let run_latency = Latency::of(&mut latencies.clone());
        progress.line(format_args!(
            "{name}, run {r}/{repeat}: {:.0} records/s{}",
            summary.records_per_second(),
            run_latency.map_or_else(String::new, |l| format!(
                ", latency p50 {:.1} ms, p99 {:.1} ms",
                l.p50, l.p99
            ))
        ));
        lat.extend(latencies);
    }
    Ok(Measured {
        name: name.to_owned(),
        kind,
        workers,
        runs,
        mb_per_s: Some(Spread::of(&mbs).median),
        cpu_us_per_record: median_opt(&cpu),
        latency: Latency::of(&mut lat),
        offered: None,
        vs: Vec::new(),
    })
}

fn cpu_per_record(before: Option<Duration>, records: u64) -> Option<f64> {
    let spent = process_cpu_time()?.checked_sub(before?)?;
    Some(spent.as_secs_f64() * 1e6 / records.max(1) as f64)
}

fn median_opt(values: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = values.iter().flatten().copied().collect();
    (v.len() == values.len() && !v.is_empty()).then(|| Spread::of(&v).median)
}

fn percent(m: &Measured, limit: f64) -> f64 {
    100.0 * m.records_per_s().median / limit.max(1e-9)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The features of the input's first rows, as the pipeline's ingest and
/// clean stages make them (rows they refuse are left out).
fn sample_features(
    loaded: &crate::run::Loaded,
    file: &FileInput,
    format: crate::record::Format,
    input: &Path,
) -> Result<Vec<f32>> {
    let name = input.display().to_string();
    let mut parser = Parser::new(
        &loaded.spec,
        format,
        file.header(),
        &name,
        DEFAULT_MAX_RECORD_BYTES,
    )?;
    let cleaner = Cleaner::new(&loaded.spec);
    let path: Arc<str> = Arc::from(name.as_str());
    let mut features = Vec::new();
    let mut rows = 0;
    for (line, bytes) in file.lines(file.records()) {
        if rows == SCORER_SAMPLE_ROWS {
            break;
        }
        let raw = RawRecord {
            read_at: 0,
            bytes: bytes.to_vec(),
            origin: Origin::File {
                path: Arc::clone(&path),
                line,
            },
        };
        let Ok(record) = parser.parse(raw) else {
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
fn score_alone(forest: &crate::model::Forest, features: &[f32], rows: u64, threads: usize) -> f64 {
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
    fn spreads_and_percentiles() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[1.0, 2.0, 3.0, 4.0]).median, 2.5);
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(&mut v).unwrap();
        assert_eq!((l.p50, l.p99, l.max), (50.0, 99.0, 100.0));
        assert!(Latency::of(&mut []).is_none());
    }

    #[test]
    fn parses_rates_and_resolves_percentages() {
        assert_eq!("200000".parse(), Ok(Rate::PerSecond(200_000.0)));
        assert_eq!(" 50% ".parse(), Ok(Rate::PercentOfMax(50.0)));
        assert_eq!("12.5 %".parse(), Ok(Rate::PercentOfMax(12.5)));
        for bad in ["", "%", "0", "0%", "-5", "x%", "inf", "NaN%"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!(Rate::PercentOfMax(25.0).resolve(400_000.0), 100_000.0);
        assert_eq!(Rate::PerSecond(1000.0).resolve(400_000.0), 1000.0);
        assert_eq!(Rate::PercentOfMax(50.0).to_string(), "50%");
        assert_eq!(Rate::PerSecond(200_000.0).to_string(), "200000");
        let check = TargetCheck {
            workers: 2,
            offered: 340_000.0,
            p99_ms: 7.14,
            target_ms: 20.0,
        };
        assert_eq!(
            check.line(),
            "p99 at 50 % load, -w 2 (340,000 records/s): 7.1 ms ≤ 20 ms target"
        );
        let missed = TargetCheck {
            p99_ms: 25.0,
            ..check
        };
        assert!(!missed.met());
        assert!(missed.line().ends_with("25.0 ms > 20 ms target: missed"));
    }

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
    }

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
