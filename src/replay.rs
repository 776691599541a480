//! Replaying history: where a replay starts and stops (`--from`, `--until`),
//! and how fast it goes (`--speed`, `--rate`).
//!
//! Pacing follows the records' own event time: with `--speed 3600` one hour
//! of history passes per second of wall time. The [`Pacer`] computes when
//! each record is due from the first record's event time and the wall clock
//! at the start, so the error never accumulates and no record waits on its
//! own (a batch of records due together goes out together).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, Result};

use crate::cli::ReplayArgs;
use crate::dataflow::ingest::{Parser, DEFAULT_MAX_RECORD_BYTES};
use crate::dataflow::pace::Pace;
use crate::io::file::{detect_format, FileInput};
use crate::produce::{produce_file, ProduceJob};
use crate::record::{format_time, parse_time, Origin, RawRecord};
use crate::spec::Spec;

/// Where a Kafka source starts reading each owned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The group's committed offset, else the beginning (a live pipeline's default).
    Committed,
    Earliest,
    Latest,
    /// This offset in every partition.
    Offset(i64),
    /// The first record at or after this time (nanoseconds since the epoch).
    /// Offsets-for-times only gives a starting hint; records before the time
    /// are skipped by their timestamp, so a broker that answers 0 (Tansu) is
    /// merely slower, never wrong.
    Time(i64),
}

/// Where a bounded replay stops in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The partition's end as a fetch reports it (partition EOF).
    End,
    /// The first record at or after this time, or the end, whichever comes first.
    Time(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}`: {1}")]
pub struct ParseError(String, &'static str);

fn time_of(text: &str, raw: &str) -> Result<i64, ParseError> {
    parse_time(text).ok_or_else(|| {
        ParseError(
            raw.to_owned(),
            "not an RFC 3339 time (e.g. time:2016-02-01T00:00:00Z)",
        )
    })
}

impl FromStr for From {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<From, ParseError> {
        match s {
            "committed" => Ok(From::Committed),
            "earliest" | "beginning" => Ok(From::Earliest),
            "latest" | "end" => Ok(From::Latest),
            _ => match s.split_once(':') {
                Some(("offset", n)) => n
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(From::Offset)
                    .ok_or_else(|| {
                        ParseError(s.to_owned(), "offset:N needs a non-negative integer")
                    }),
                Some(("time", t)) => time_of(t, s).map(From::Time),
                _ => Err(ParseError(
                    s.to_owned(),
                    "expected earliest, latest, committed, offset:N or time:RFC3339",
                )),
            },
        }
    }
}

impl FromStr for Until {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Until, ParseError> {
        match s {
            "end" => Ok(Until::End),
            _ => match s.split_once(':') {
                Some(("time", t)) => time_of(t, s).map(Until::Time),
                _ => Err(ParseError(s.to_owned(), "expected end or time:RFC3339")),
            },
        }
    }
}

impl fmt::Display for Until {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Until::End => f.write_str("end"),
            Until::Time(t) => write!(f, "time:{}", format_time(*t)),
        }
    }
}

/// How fast a replay goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as it can.
    Max,
    /// This many seconds of event time per second of wall time.
    Factor(f64),
}

impl FromStr for Speed {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Speed, ParseError> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(ParseError(
                s.to_owned(),
                "expected max or a positive number (3600 = an hour per second)",
            )),
        }
    }
}

/// An event-time window: `from` inclusive, `until` exclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<i64>,
    pub until: Option<i64>,
}

impl Window {
    pub fn contains(&self, t: i64) -> bool {
        self.from.is_none_or(|f| t >= f) && self.until.is_none_or(|u| t < u)
    }
}

/// Decides when each record of a replay is due.
#[derive(Debug)]
pub struct Pacer {
    speed: Speed,
    rate: Option<f64>,
    started: Instant,
    first_event: Option<i64>,
    released: u64,
}

impl Pacer {
    pub fn new(speed: Speed, rate: Option<f64>) -> Pacer {
        Pacer {
            speed,
            rate,
            started: Instant::now(),
            first_event: None,
            released: 0,
        }
    }

    /// The same pacing, starting now.
    pub fn restarted(&self) -> Pacer {
        Pacer::new(self.speed, self.rate)
    }

    /// When the next record, with event time `event` (ns), is due; `None`
    /// means now. Counts the record as released.
    pub fn due(&mut self, event: Option<i64>) -> Option<Instant> {
        let n = self.released;
        self.released += 1;
        if let Some(rate) = self.rate {
            return Some(self.started + Duration::from_secs_f64(n as f64 / rate));
        }
        match (self.speed, event) {
            (Speed::Max, _) | (_, None) => None,
            (Speed::Factor(speed), Some(t)) => {
                let first = *self.first_event.get_or_insert(t);
                let event_secs = (t - first).max(0) as f64 / 1e9;
                Some(self.started + Duration::from_secs_f64(event_secs / speed))
            }
        }
    }

    /// Sleeps until the record is due.
    pub fn wait(&mut self, event: Option<i64>) {
        if let Some(due) = self.due(event) {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
}

/// What `loanflow replay` did: a produce into a topic, or a pipeline run.
pub enum Replayed {
    Topic(crate::produce::IngestSummary),
    Pipeline(crate::run::Summary),
}

impl fmt::Display for Replayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replayed::Topic(s) => s.fmt(f),
            Replayed::Pipeline(s) => s.fmt(f),
        }
    }
}

/// `loanflow replay FILE`.
pub fn replay(args: &ReplayArgs, stop: Arc<AtomicBool>) -> Result<Replayed> {
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(anyhow!(
                "--rate must be a positive number of records per second"
            ));
        }
    }
    let window = Window {
        from: match args.run.from {
            From::Time(t) => Some(t),
            From::Committed | From::Earliest => None,
            other => {
                return Err(anyhow!(
                    "a file replay starts at time:RFC3339 (or earliest), not {other:?}"
                ))
            }
        },
        until: match args.run.until {
            Some(Until::Time(t)) => Some(t),
            Some(Until::End) | None => None,
        },
    };
    let speed = if args.rate.is_some() {
        Speed::Max
    } else {
        args.speed
    };
    if let Some(topic) = &args.topic {
        let job = ProduceJob {
            pipeline: &args.run.pipeline,
            kafka: &args.run.kafka,
            topic,
            input: &args.file,
            format: args.run.format,
            quiet: args.run.quiet,
            pacer: Pacer::new(speed, args.rate),
            window,
        };
        return produce_file(&job, stop).map(Replayed::Topic);
    }
    // Straight into the pipeline: every worker paces against the same origin.
    let origin = match window.from {
        Some(t) => t,
        None => first_event_time(args)?.unwrap_or(0),
    };
    let mut run = args.run.clone();
    run.input = args.file.clone();
    run.from = From::Committed;
    run.until = None;
    let pace = Pace {
        speed,
        rate: args.rate,
        window,
        origin,
    };
    crate::run::run_paced(&run, Some(pace), stop).map(Replayed::Pipeline)
}

/// The event time of the file's first valid record.
fn first_event_time(args: &ReplayArgs) -> Result<Option<i64>> {
    let spec = Spec::load(&args.run.pipeline.dataflow)?;
    let format = detect_format(&args.file, args.run.format)?;
    let input = FileInput::open(&args.file, format)?;
    let name = args.file.display().to_string();
    let mut parser = Parser::new(
        &spec,
        format,
        input.header(),
        &name,
        DEFAULT_MAX_RECORD_BYTES,
    )?;
    let path: Arc<str> = Arc::from(name.as_str());
    let first = input.lines(input.records()).find_map(|(line, bytes)| {
        parser
            .parse(RawRecord {
                read_at: 0,
                bytes: bytes.to_vec(),
                origin: Origin::File {
                    path: Arc::clone(&path),
                    line,
                },
            })
            .ok()
            .and_then(|r| r.event_time)
    });
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_positions() {
        assert_eq!("earliest".parse(), Ok(From::Earliest));
        assert_eq!("committed".parse(), Ok(From::Committed));
        assert_eq!("offset:42".parse(), Ok(From::Offset(42)));
        assert_eq!(
            "time:2016-02-01T00:00:00Z".parse(),
            Ok(From::Time(1_454_284_800_000_000_000))
        );
        assert!("offset:-1".parse::<From>().is_err());
        assert!("time:yesterday"
            .parse::<From>()
            .unwrap_err()
            .to_string()
            .contains("RFC 3339"));
        assert!("sometime".parse::<From>().is_err());
        assert_eq!("end".parse(), Ok(Until::End));
        assert_eq!(
            "time:1970-01-01T00:00:01Z".parse(),
            Ok(Until::Time(1_000_000_000))
        );
        assert!("latest".parse::<Until>().is_err());
        assert_eq!("max".parse(), Ok(Speed::Max));
        assert_eq!("3600".parse(), Ok(Speed::Factor(3600.0)));
        assert!(
            "0".parse::<Speed>().is_err()
                && "-1".parse::<Speed>().is_err()
                && "fast".parse::<Speed>().is_err()
        );
    }

    #[test]
    fn window_is_half_open() {
        let w = Window {
            from: Some(10),
            until: Some(20),
        };
        assert!(!w.contains(9) && w.contains(10) && w.contains(19) && !w.contains(20));
        assert!(Window::default().contains(i64::MIN));
    }

    #[test]
    fn pacer_follows_event_time_without_drift() {
        let mut p = Pacer::new(Speed::Factor(3600.0), None);
        let start = p.started;
        let hour = 3_600_000_000_000;
        assert_eq!(p.due(Some(5 * hour)), Some(start));
        assert_eq!(p.due(Some(6 * hour)), Some(start + Duration::from_secs(1)));
        assert_eq!(
            p.due(Some(7 * hour + hour / 2)),
            Some(start + Duration::from_millis(2500))
        );
        let mut max = Pacer::new(Speed::Max, None);
        assert_eq!(max.due(Some(hour)), None);
        let mut rate = Pacer::new(Speed::Max, Some(4.0));
        let start = rate.started;
        assert_eq!(rate.due(None), Some(start));
        assert_eq!(rate.due(None), Some(start + Duration::from_millis(250)));
    }
}
