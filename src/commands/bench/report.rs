//! What a sitting measured, and how it is shown: the markdown tables, the
//! JSON for plots, the p99 target check.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Value as Json};

use crate::core::pace::Rate;

/// Median, min and max of a few measurements.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    /// The middle value (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of the finite `values` (all zero if there are none).
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
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest.
    pub max: f64,
    /// How many latencies were measured.
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
    /// Its row label in the table.
    pub name: String,
    /// Its kind in the JSON: `file`, `file_paced`, `kafka`, `file_copy`,
    /// `scorer` or `kafka_passthrough`.
    pub kind: &'static str,
    /// Worker threads (threads, for a limit).
    pub workers: usize,
    /// records/s of each repetition.
    pub runs: Vec<f64>,
    /// Input MB/s (none for the scorer, which reads no bytes).
    pub mb_per_s: Option<f64>,
    /// Median CPU time of the process per record, in microseconds (none
    /// where it cannot be read, off Linux).
    pub cpu_us_per_record: Option<f64>,
    /// Latency per record, pooled over the repetitions (none for the limits,
    /// or if none was read).
    pub latency: Option<Latency>,
    /// Offered load (records/s), with --rate.
    pub offered: Option<f64>,
    /// records/s as a percentage of the limits it is compared with.
    pub vs: Vec<(String, f64)>,
}

impl Measured {
    /// A limit: no latency, no offered load, compared with nothing.
    pub fn limit(
        name: String,
        kind: &'static str,
        workers: usize,
        runs: Vec<f64>,
        mb_per_s: Option<f64>,
        cpu_us_per_record: Option<f64>,
    ) -> Measured {
        Measured {
            name,
            kind,
            workers,
            runs,
            mb_per_s,
            cpu_us_per_record,
            latency: None,
            offered: None,
            vs: Vec::new(),
        }
    }

    /// Median, min and max records/s over the repetitions.
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
    /// The offered load as a percentage of the max.
    pub fn percent_of_max(&self) -> f64 {
        100.0 * self.offered / self.max.max(1e-9)
    }

    /// The median records/s achieved as a percentage of the offered load.
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
    /// Worker threads.
    pub workers: usize,
    /// Records/s offered.
    pub offered: f64,
    /// The p99 latency measured, in milliseconds.
    pub p99_ms: f64,
    /// `--p99-target-ms`.
    pub target_ms: f64,
}

impl TargetCheck {
    /// Whether the p99 is within the target.
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

/// The measured dataflow's records/s as a share of `--against`'s, for one
/// path and worker count, against `--share-target`.
#[derive(Debug, Clone)]
pub struct ShareCheck {
    /// "file → file" or "Kafka → Kafka".
    pub path: &'static str,
    /// Worker threads.
    pub workers: usize,
    /// The measured dataflow's median records/s.
    pub rate: f64,
    /// `--against`'s median records/s, same path and worker count.
    pub against_rate: f64,
    /// `--against`'s name.
    pub against: String,
    /// `--share-target`, in percent.
    pub target: f64,
}

impl ShareCheck {
    /// `rate` as a percentage of `against_rate`.
    pub fn share(&self) -> f64 {
        100.0 * self.rate / self.against_rate.max(1e-9)
    }

    /// Whether the share is at least the target.
    pub fn met(&self) -> bool {
        self.share() >= self.target
    }

    /// "file → file, -w 1: 46.2 % of lending_club's records/s (201,000 against 435,000) < 50 % target: missed"
    pub fn line(&self) -> String {
        format!(
            "{}, -w {}: {:.1} % of {}'s records/s ({} against {}) {} {} % target{}",
            self.path,
            self.workers,
            self.share(),
            self.against,
            thousands(self.rate),
            thousands(self.against_rate),
            if self.met() { "≥" } else { "<" },
            self.target,
            if self.met() { "" } else { ": missed" },
        )
    }
}

/// Everything one `loanflow bench` measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The file every run read (generated, or `--input`).
    pub input: PathBuf,
    /// Its records.
    pub rows: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// The pipeline, unpaced: file → file per worker count, then Kafka → Kafka.
    pub configurations: Vec<Measured>,
    /// The limits: file copy, the scorer alone, Kafka passthrough.
    pub limits: Vec<Measured>,
    /// The paced runs of `--rate`, by worker count then rate.
    pub load: Vec<LoadPoint>,
    /// `--p99-target-ms`.
    pub p99_target_ms: f64,
    /// With `--against`: its name, and `--share-target`.
    pub against: Option<(String, f64)>,
}

/// The kind of a configuration of `--against`'s, run beside one of `kind`.
pub fn against_kind(kind: &'static str) -> &'static str {
    match kind {
        "file" => "file_against",
        "kafka" => "kafka_against",
        _ => "other_against",
    }
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

    /// With `--against`: each path and worker count's share of its
    /// records/s (file → file, then Kafka → Kafka).
    pub fn share_checks(&self) -> Vec<ShareCheck> {
        let Some((against, target)) = &self.against else {
            return Vec::new();
        };
        let mut checks = Vec::new();
        for (kind, path) in [("file", "file → file"), ("kafka", "Kafka → Kafka")] {
            for m in self.configurations.iter().filter(|m| m.kind == kind) {
                let base = self
                    .configurations
                    .iter()
                    .find(|b| b.kind == against_kind(kind) && b.workers == m.workers);
                if let Some(base) = base {
                    checks.push(ShareCheck {
                        path,
                        workers: m.workers,
                        rate: m.records_per_s().median,
                        against_rate: base.records_per_s().median,
                        against: against.clone(),
                        target: *target,
                    });
                }
            }
        }
        checks
    }

    /// Everything, as `--json` writes it (with the machine's cores and CPU).
    pub fn to_json(&self) -> Json {
        let mut o = self.json_without_shares();
        if let Some((against, target)) = &self.against {
            o["share_target"] = json!({
                "against": against,
                "target_percent": target,
                "results": self.share_checks().iter().map(|c| json!({
                    "path": c.path,
                    "workers": c.workers,
                    "records_per_s": c.rate,
                    "against_records_per_s": c.against_rate,
                    "percent": c.share(),
                    "met": c.met(),
                })).collect::<Vec<_>>(),
            });
        }
        o
    }

    fn json_without_shares(&self) -> Json {
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
        let shares = self.share_checks();
        if !shares.is_empty() {
            let _ = writeln!(t);
            for c in shares {
                let _ = writeln!(t, "- {}", c.line());
            }
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
pub fn thousands(v: f64) -> String {
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
    fn target_check_lines_say_met_or_missed() {
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
    fn share_check_lines_say_met_or_missed() {
        let check = ShareCheck {
            path: "file → file",
            workers: 1,
            rate: 201_000.0,
            against_rate: 435_000.0,
            against: "lending_club".to_owned(),
            target: 50.0,
        };
        assert!(!check.met());
        assert_eq!(
            check.line(),
            "file → file, -w 1: 46.2 % of lending_club's records/s (201,000 against 435,000) < 50 % target: missed"
        );
        let met = ShareCheck {
            rate: 217_500.0,
            ..check
        };
        assert!(met.met(), "exactly the target is met");
        assert!(met.line().contains("50.0 % of lending_club's records/s"));
        assert!(met.line().ends_with("≥ 50 % target"));
    }

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
    }
}
