//! `loanflow bench`: the pipeline measured in one sitting, next to its limits.
//!
//! For every worker count it runs the real pipeline (`pipeline::run`, in process,
//! with `RunArgs` parsed from the same flags `loanflow run` takes, so the
//! defaults live in one place) `--repeat` times, file → file (and with
//! `--brokers`, Kafka → Kafka), and reports records/s (median, min, max),
//! MB/s, CPU time per record and the end-to-end latency per record (the
//! `latency_ms` of `--stamp`'ed outputs). The limits come from the same
//! input in the same sitting: a plain file copy, the scorer alone
//! (`Forest::predict_batch` on the input's own features, on as many threads
//! as workers), and with `--brokers` the raw Kafka passthrough.
//!
//! With `--against`, a second dataflow runs in the same sitting, each of its
//! runs right after one of `--dataflow`'s (file and Kafka alike), and the
//! report gives `--dataflow`'s records/s as a share of its own per worker
//! count, against `--share-target` ([`report::ShareCheck`]): alternating
//! runs meet the same machine, where a block of one after a block of the
//! other would meet whatever else the machine did meanwhile.
//!
//! With `--rate`, every worker count is then run again paced at each offered
//! load (records/s, or a percentage of that worker count's median records/s
//! measured just before): the latency under load, and whether the p99 at
//! 50 % load meets `--p99-target-ms`.
//!
//! Owns the sitting (this module), the measuring ([`measure`]: CPU time,
//! latencies read back, the scorer alone) and the report ([`report`]:
//! tables, JSON, the p99 check). Like every command it may import every
//! layer below, never another command: the jobs it measures are
//! [`crate::pipeline`]'s.

pub mod measure;
pub mod report;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser as _;

use crate::cli::{BenchArgs, Cli, Command, GenerateArgs, RunArgs};
use crate::core::pace::Pacer;
use crate::core::position::{Speed, Window};
use crate::dataflow::pace::Pace;
use crate::io::file::{detect_format, FileInput};
use crate::io::kafka::KafkaConfig;
use crate::pipeline::copy::{copy, Copy};
use crate::pipeline::load::{load, Loaded};
use crate::pipeline::produce::{produce_file, ProduceJob};
use crate::pipeline::{run, run_paced, Control, Summary};
use measure::{
    cpu_per_record, latencies, median_opt, percent, plural, process_cpu_time, sample_features,
    score_alone, topic_latencies,
};
use report::{against_kind, thousands, Latency, LoadPoint, Measured, Report, Spread};

/// Parses `loanflow <args…>` the way the command line would.
fn parse(args: &[String]) -> Result<Command> {
    let argv = std::iter::once("loanflow".to_owned()).chain(args.iter().cloned());
    Cli::try_parse_from(argv)
        .map(|cli| cli.command)
        .map_err(|e| anyhow!("internal flags {args:?}: {e}"))
}

fn run_args(args: &[String]) -> Result<RunArgs> {
    match parse(args)? {
        Command::Run(run) => Ok(run.resolved()),
        _ => unreachable!("parsed a `run` command line"),
    }
}

/// Which dataflow a run is of: `--dataflow` (with `--model`, if given), or
/// `--against` (with its own model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Of {
    Measured,
    Against,
}

/// The flags every run and limit shares: the spec/model, and the brokers.
fn common_flags(args: &BenchArgs, kafka: bool, of: Of) -> Vec<String> {
    let dataflow = match (of, &args.against) {
        (Of::Against, Some(against)) => against,
        _ => &args.pipeline.dataflow,
    };
    let mut f = vec!["--dataflow".to_owned(), dataflow.display().to_string()];
    if let (Of::Measured, Some(model)) = (of, &args.pipeline.model) {
        f.extend(["--model".to_owned(), model.display().to_string()]);
    }
    if kafka {
        if let Some(brokers) = &args.kafka.connect.brokers {
            f.extend(["--brokers".to_owned(), brokers.clone()]);
        }
        for p in &args.kafka.connect.properties {
            f.extend(["-X".to_owned(), p.clone()]);
        }
        f.extend([
            "--connect-timeout".to_owned(),
            args.kafka.connect.connect_timeout.as_secs_f64().to_string(),
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
fn input_file(args: &BenchArgs, progress: &Progress, control: &Control) -> Result<PathBuf> {
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
    // generate reads the spec only (it takes no --model).
    let mut flags = vec![
        "generate".to_owned(),
        "--dataflow".to_owned(),
        args.pipeline.dataflow.display().to_string(),
    ];
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
    if crate::pipeline::generate::generate(&generate, &control.stop_flag())?.interrupted {
        // Stopped by a signal: exit as every command does (130/143).
        return Err(control.interrupted().into());
    }
    std::fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
    Ok(path)
}

/// Runs `loanflow bench`: the table on stdout, `--json` written.
pub fn execute(args: &BenchArgs, control: &Control) -> Result<()> {
    let report = bench(args, control)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `loanflow bench`: every measurement of one sitting, as a report. The
/// limits first, then the pipeline file → file after a warm-up run, then
/// paced at each offered load, then Kafka → Kafka.
pub fn bench(args: &BenchArgs, control: &Control) -> Result<Report> {
    let sitting = Sitting::open(args, control)?;
    let copy = sitting.copy_limit()?;
    let copy_rate = copy.records_per_s().median;
    let mut limits = vec![copy];
    let scorers = sitting.scorer_limits()?;
    let scorer_rate: HashMap<usize, f64> = scorers
        .iter()
        .map(|m| (m.workers, m.records_per_s().median))
        .collect();
    limits.extend(scorers);
    sitting.warm_up()?;
    let mut configurations = sitting.file_runs(copy_rate, &scorer_rate)?;
    // The unpaced runs are the max the percentages of --rate are taken of.
    let max_rate: HashMap<usize, f64> = configurations
        .iter()
        .map(|m| (m.workers, m.records_per_s().median))
        .collect();
    let load = sitting.load_runs(&max_rate)?;
    if args.kafka.connect.brokers.is_some() {
        sitting.kafka(&mut configurations, &mut limits)?;
    }
    Ok(Report {
        input: sitting.input,
        rows: sitting.rows,
        bytes: sitting.bytes,
        configurations,
        limits,
        load,
        p99_target_ms: args.p99_target_ms,
        against: sitting.against.clone().map(|a| (a, args.share_target)),
    })
}

/// One configuration timed by [`Sitting::measure_each`]: what it is called
/// and a run of it.
struct Timed<'f> {
    name: String,
    kind: &'static str,
    workers: usize,
    once: Box<dyn FnMut() -> Result<(Summary, Vec<f64>)> + 'f>,
}

/// One sitting: the input, where runs write, and what every run shares.
struct Sitting<'a> {
    args: &'a BenchArgs,
    control: &'a Control,
    progress: Progress,
    loaded: Loaded,
    input: PathBuf,
    rows: u64,
    bytes: u64,
    output: PathBuf,
    dead: PathBuf,
    workers: Vec<usize>,
    repeat: usize,
    /// `--against`'s name (its spec's), once its spec and model loaded.
    against: Option<String>,
}

impl<'a> Sitting<'a> {
    /// Checks the spec and model, then generates (or takes) the input.
    fn open(args: &'a BenchArgs, control: &'a Control) -> Result<Sitting<'a>> {
        if args.workers.is_empty() {
            bail!("--workers needs at least one worker count");
        }
        let progress = Progress { quiet: args.quiet };
        // Fail on a bad spec or model before generating anything.
        let loaded = load(
            &args.pipeline.dataflow,
            args.pipeline.model.as_deref(),
            true,
        )?;
        let against = match &args.against {
            Some(path) if !path.is_file() => bail!(
                "--against {}: no such dataflow spec (pass one, e.g. dataflows/lending_club.toml)",
                path.display()
            ),
            Some(path) => Some(load(path, None, true)?.spec.name.clone()),
            None => None,
        };
        let input = input_file(args, &progress, control)?;
        let format = detect_format(&input, None)?;
        let file = FileInput::open(&input, format)?;
        let rows = file.lines(file.records()).count() as u64;
        let bytes = std::fs::metadata(&input)?.len();
        if rows == 0 {
            bail!("{} has no records to benchmark", input.display());
        }
        std::fs::create_dir_all(&args.dir)
            .with_context(|| format!("cannot create {}", args.dir.display()))?;
        // Each worker count once, in the order given (`--workers 1,2,1` is 1,2).
        let mut workers: Vec<usize> = Vec::new();
        for w in args.workers.iter().map(|&w| w as usize) {
            if !workers.contains(&w) {
                workers.push(w);
            }
        }
        Ok(Sitting {
            args,
            control,
            progress,
            loaded,
            input,
            rows,
            bytes,
            output: args.dir.join("out.jsonl"),
            dead: args.dir.join("dead_letters.jsonl"),
            workers,
            repeat: args.repeat as usize,
            against,
        })
    }

    /// The first limit: a plain copy of the input (read + write).
    fn copy_limit(&self) -> Result<Measured> {
        let (rows, repeat) = (self.rows, self.repeat);
        let mut runs = Vec::new();
        let mut mbs = Vec::new();
        let mut cpu = Vec::new();
        for r in 1..=repeat {
            let cpu0 = process_cpu_time();
            let t = Instant::now();
            let data = std::fs::read(&self.input)?;
            std::fs::write(&self.output, &data)
                .with_context(|| format!("cannot write {}", self.output.display()))?;
            let secs = t.elapsed().as_secs_f64().max(1e-9);
            cpu.push(cpu_per_record(cpu0, rows));
            runs.push(rows as f64 / secs);
            mbs.push(self.bytes as f64 / 1e6 / secs);
            self.progress.line(format_args!(
                "file copy, run {r}/{repeat}: {:.0} records/s",
                rows as f64 / secs
            ));
        }
        Ok(Measured::limit(
            "limit: file copy (read + write, no processing)".to_owned(),
            "file_copy",
            1,
            runs,
            Some(Spread::of(&mbs).median),
            median_opt(&cpu),
        ))
    }

    /// The scorer alone on 1…W threads, on the input's own features.
    fn scorer_limits(&self) -> Result<Vec<Measured>> {
        let (rows, repeat) = (self.rows, self.repeat);
        let features = sample_features(&self.loaded, &self.input)?;
        let mut limits = Vec::new();
        for &w in &self.workers {
            let mut runs = Vec::new();
            let mut cpu = Vec::new();
            for r in 1..=repeat {
                let cpu0 = process_cpu_time();
                let secs = score_alone(&self.loaded.model.forest, &features, rows, w);
                cpu.push(cpu_per_record(cpu0, rows));
                runs.push(rows as f64 / secs);
                self.progress.line(format_args!(
                    "scorer alone, {w} thread{}, run {r}/{repeat}: {:.0} records/s",
                    plural(w),
                    rows as f64 / secs
                ));
            }
            limits.push(Measured::limit(
                format!("limit: scorer alone, {w} thread{}", plural(w)),
                "scorer",
                w,
                runs,
                None,
                median_opt(&cpu),
            ));
        }
        Ok(limits)
    }

    /// One unmeasured run: the first run of a process pays for page-ins
    /// and allocator growth the others do not.
    fn warm_up(&self) -> Result<()> {
        let s = run(
            &self.file_run_args(self.workers[0], false, Of::Measured)?,
            self.control,
        )?;
        self.progress.line(format_args!(
            "warm-up run (not counted): {:.0} records/s",
            s.records_per_second()
        ));
        Ok(())
    }

    /// The pipeline, file → file, unpaced, for each worker count (and
    /// `--against`'s beside it, run for run).
    fn file_runs(
        &self,
        copy_rate: f64,
        scorer_rate: &HashMap<usize, f64>,
    ) -> Result<Vec<Measured>> {
        let mut configurations = Vec::new();
        for &w in &self.workers {
            let mut timed = Vec::new();
            for of in self.dataflows() {
                let run = self.file_run_args(w, true, of)?;
                timed.push(Timed {
                    name: self.named(format!("file → file, -w {w}"), of),
                    kind: self.kind("file", of),
                    workers: w,
                    once: Box::new(move || {
                        let summary = run_paced(&run, None, self.control)?;
                        Ok((summary, latencies(&self.output)?))
                    }),
                });
            }
            let mut measured = self.measure_each(timed)?.into_iter();
            let mut m = measured.next().expect("the measured dataflow's runs");
            m.vs = vec![
                ("file copy".to_owned(), percent(&m, copy_rate)),
                (
                    format!("scorer ({w} thread{})", plural(w)),
                    percent(&m, scorer_rate[&w]),
                ),
            ];
            self.compare(m, measured, &mut configurations);
        }
        Ok(configurations)
    }

    /// The dataflows each configuration runs: `--dataflow`, then `--against`.
    fn dataflows(&self) -> Vec<Of> {
        match self.against {
            Some(_) => vec![Of::Measured, Of::Against],
            None => vec![Of::Measured],
        }
    }

    /// A configuration's name: `--against`'s runs say whose they are.
    fn named(&self, name: String, of: Of) -> String {
        match (of, &self.against) {
            (Of::Against, Some(against)) => format!("{name}, {against} (--against)"),
            _ => name,
        }
    }

    /// A configuration's kind: `--against`'s runs have their own.
    fn kind(&self, kind: &'static str, of: Of) -> &'static str {
        match of {
            Of::Measured => kind,
            Of::Against => against_kind(kind),
        }
    }

    /// Adds `m` to `configurations`, and after it `--against`'s run of the
    /// same configuration, if any, with `m`'s share of it among `m`'s
    /// comparisons.
    fn compare(
        &self,
        mut m: Measured,
        mut against: impl Iterator<Item = Measured>,
        configurations: &mut Vec<Measured>,
    ) {
        let base = against.next();
        if let (Some(base), Some(name)) = (&base, &self.against) {
            m.vs.push((name.clone(), percent(&m, base.records_per_s().median)));
        }
        configurations.push(m);
        configurations.extend(base);
    }

    /// The same pipeline paced at each offered load of `--rate`.
    fn load_runs(&self, max_rate: &HashMap<usize, f64>) -> Result<Vec<LoadPoint>> {
        let mut load = Vec::new();
        for &w in &self.workers {
            let run = self.file_run_args(w, true, Of::Measured)?;
            let max = max_rate[&w];
            for &rate in &self.args.rate {
                let offered = rate.resolve(max);
                let pace = Pace {
                    pacer: Pacer::new(Speed::Max, Some(offered / w as f64)),
                    window: Window::default(),
                };
                let name = format!(
                    "file → file, -w {w}, offered {} records/s ({:.0} % of max)",
                    thousands(offered),
                    100.0 * offered / max.max(1e-9)
                );
                let mut m = self.measure(&name, "file_paced", w, || {
                    let summary = run_paced(&run, Some(pace.clone()), self.control)?;
                    Ok((summary, latencies(&self.output)?))
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
        Ok(load)
    }

    /// `loanflow run` file → file of dataflow `of` with `w` workers
    /// (outputs stamped, to measure latency, if `stamp`).
    fn file_run_args(&self, w: usize, stamp: bool, of: Of) -> Result<RunArgs> {
        let mut flags = vec!["run".to_owned()];
        flags.extend(common_flags(self.args, false, of));
        flags.extend([
            "--input".to_owned(),
            self.input.display().to_string(),
            "--output".to_owned(),
            self.output.display().to_string(),
            "--dead-letters".to_owned(),
            self.dead.display().to_string(),
            "-w".to_owned(),
            w.to_string(),
            "--quiet".to_owned(),
        ]);
        if stamp {
            flags.push("--stamp".to_owned());
        }
        run_args(&flags)
    }

    /// Kafka → Kafka next to the raw passthrough: the input is ingested once
    /// into a fresh topic, then every repetition reads it with a fresh group
    /// into a fresh output topic, to its end.
    fn kafka(&self, configurations: &mut Vec<Measured>, limits: &mut Vec<Measured>) -> Result<()> {
        let args = self.args;
        let progress = &self.progress;
        let partitions = args.kafka.partitions.unwrap_or(4);
        let tag = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let topic = format!("loanflow-bench-{tag}");
        let mut kafka_args = args.kafka.clone();
        kafka_args.partitions = Some(partitions);
        let config = kafka_args
            .config()?
            .ok_or_else(|| anyhow!("--brokers is required for the Kafka runs"))?;
        progress.line(format_args!(
            "ingesting {} into topic {topic} ({partitions} partitions)",
            self.input.display()
        ));
        let ingested = produce_file(
            &ProduceJob {
                spec: &self.loaded.spec,
                config: &config,
                partitions: Some(partitions),
                topic: &topic,
                input: &self.input,
                format: None,
                quiet: true,
                pacer: Pacer::new(Speed::Max, None),
                window: Window::default(),
            },
            self.control,
        )?;
        progress.line(format_args!("{ingested}"));
        for &w in &self.workers {
            let pass = self.kafka_passthrough(&config, &topic, partitions, w)?;
            let pass_rate = pass.records_per_s().median;
            limits.push(pass);

            let mut timed = Vec::new();
            for of in self.dataflows() {
                let (topic, config) = (&topic, &config);
                // Each run reads with a group of its own into a topic of its own.
                let tag = match of {
                    Of::Measured => "scored",
                    Of::Against => "against",
                };
                let mut r = 0;
                timed.push(Timed {
                    name: self.named(format!("Kafka → Kafka, -w {w}"), of),
                    kind: self.kind("kafka", of),
                    workers: w,
                    once: Box::new(move || {
                        r += 1;
                        let scored = format!("{topic}.{tag}-{w}-{r}");
                        let mut flags = vec!["run".to_owned()];
                        flags.extend(common_flags(args, true, of));
                        flags.extend([
                            "--input-topic".to_owned(),
                            topic.clone(),
                            "--output-topic".to_owned(),
                            scored.clone(),
                            "--partitions".to_owned(),
                            partitions.to_string(),
                            "--group".to_owned(),
                            format!("{topic}.group-{tag}-{w}-{r}"),
                            "--until".to_owned(),
                            "end".to_owned(),
                            "--from".to_owned(),
                            "earliest".to_owned(),
                            "-w".to_owned(),
                            w.to_string(),
                            "--stamp".to_owned(),
                            "--quiet".to_owned(),
                        ]);
                        let summary = run(&run_args(&flags)?, self.control)?;
                        // Outside the timed run: the outputs read back for their latency.
                        let latencies = topic_latencies(config, &scored, summary.scored)?;
                        Ok((summary, latencies))
                    }),
                });
            }
            let mut measured = self.measure_each(timed)?.into_iter();
            let mut m = measured.next().expect("the measured dataflow's runs");
            m.vs = vec![("Kafka passthrough".to_owned(), percent(&m, pass_rate))];
            self.compare(m, measured, configurations);
        }
        Ok(())
    }

    /// The broker's limit: `topic` copied with no processing on `w` threads.
    fn kafka_passthrough(
        &self,
        config: &Arc<KafkaConfig>,
        topic: &str,
        partitions: i32,
        w: usize,
    ) -> Result<Measured> {
        let repeat = self.repeat;
        let mut runs = Vec::new();
        let mut mbs = Vec::new();
        let mut cpu = Vec::new();
        for r in 1..=repeat {
            let output = format!("{topic}.copy-{w}-{r}");
            let cpu0 = process_cpu_time();
            let s = copy(&Copy {
                config,
                input: topic,
                output: &output,
                partitions: Some(partitions),
                workers: w,
                stop: self.control.stop_flag(),
            })?;
            if s.interrupted {
                return Err(self.control.interrupted().into());
            }
            let secs = s.elapsed.as_secs_f64().max(1e-9);
            cpu.push(cpu_per_record(cpu0, s.messages));
            runs.push(s.messages as f64 / secs);
            mbs.push(s.bytes as f64 / 1e6 / secs);
            self.progress.line(format_args!(
                "Kafka passthrough, {w} thread{}, run {r}/{repeat}: {:.0} messages/s",
                plural(w),
                s.messages as f64 / secs
            ));
        }
        Ok(Measured::limit(
            format!(
                "limit: Kafka passthrough (consume → produce), {w} thread{}",
                plural(w)
            ),
            "kafka_passthrough",
            w,
            runs,
            Some(Spread::of(&mbs).median),
            median_opt(&cpu),
        ))
    }

    /// Runs `once` `--repeat` times and gathers what the runs measured.
    fn measure(
        &self,
        name: &str,
        kind: &'static str,
        workers: usize,
        once: impl FnMut() -> Result<(Summary, Vec<f64>)>,
    ) -> Result<Measured> {
        let timed = Timed {
            name: name.to_owned(),
            kind,
            workers,
            once: Box::new(once),
        };
        let mut measured = self.measure_each(vec![timed])?;
        Ok(measured.pop().expect("one configuration measured"))
    }

    /// Runs each configuration `--repeat` times, round after round (in
    /// each round one run of each, in order), and gathers what each one's
    /// runs measured.
    fn measure_each(&self, mut timed: Vec<Timed<'_>>) -> Result<Vec<Measured>> {
        let repeat = self.repeat;
        let mut measured: Vec<Measured> = timed
            .iter()
            .map(|t| Measured {
                name: t.name.clone(),
                kind: t.kind,
                workers: t.workers,
                runs: Vec::new(),
                mb_per_s: None,
                cpu_us_per_record: None,
                latency: None,
                offered: None,
                vs: Vec::new(),
            })
            .collect();
        let mut mbs = vec![Vec::new(); timed.len()];
        let mut cpu = vec![Vec::new(); timed.len()];
        let mut lat = vec![Vec::new(); timed.len()];
        for r in 1..=repeat {
            for (i, t) in timed.iter_mut().enumerate() {
                if self.control.stopped() {
                    return Err(self.control.interrupted().into());
                }
                let cpu0 = process_cpu_time();
                let (summary, latencies) = (t.once)()?;
                if summary.interrupted {
                    return Err(self.control.interrupted().into());
                }
                let secs = summary.elapsed.as_secs_f64().max(1e-9);
                cpu[i].push(cpu_per_record(cpu0, summary.records_in));
                measured[i].runs.push(summary.records_per_second());
                mbs[i].push(summary.bytes_in as f64 / 1e6 / secs);
                let run_latency = Latency::of(&mut latencies.clone());
                self.progress.line(format_args!(
                    "{}, run {r}/{repeat}: {:.0} records/s{}",
                    t.name,
                    summary.records_per_second(),
                    run_latency.map_or_else(String::new, |l| format!(
                        ", latency p50 {:.1} ms, p99 {:.1} ms",
                        l.p50, l.p99
                    ))
                ));
                lat[i].extend(latencies);
            }
        }
        for (i, m) in measured.iter_mut().enumerate() {
            m.mb_per_s = Some(Spread::of(&mbs[i]).median);
            m.cpu_us_per_record = median_opt(&cpu[i]);
            m.latency = Latency::of(&mut lat[i]);
        }
        Ok(measured)
    }
}
