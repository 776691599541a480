//! The pacing rule: when each record of a paced stream is due. One rule for
//! every paced stream — `loanflow replay` into a topic or into the
//! pipeline, `ingest --rate`, and the benchmark's offered loads ([`Rate`]).
//!
//! By event time (`--speed F`): a record with event time `t` is due at
//! `started + (t - origin) / F`, where `origin` is the event time replayed at
//! the start (given, or the first record's). By rate (`--rate N`): the n-th
//! record is due at `started + n / N`. Both are computed from the start, never
//! from the previous record, so the error never accumulates, and records due
//! together go out together.

use std::time::{Duration, Instant};

use crate::core::position::Speed;

/// Decides when each record of a paced stream is due.
#[derive(Debug, Clone)]
pub struct Pacer {
    speed: Speed,
    rate: Option<f64>,
    started: Instant,
    /// The event time (ns) replayed at `started`; the first record's if `None`.
    origin: Option<i64>,
    released: u64,
}

impl Pacer {
    /// Paces by `rate` (records per second) if given, else by `speed`, from
    /// now; the first record's event time is the origin.
    pub fn new(speed: Speed, rate: Option<f64>) -> Pacer {
        Pacer {
            speed,
            rate,
            started: Instant::now(),
            origin: None,
            released: 0,
        }
    }

    /// The same, with `origin` (ns) as the event time replayed at the start:
    /// workers that read different parts of a stream pace against one origin.
    pub fn with_origin(mut self, origin: i64) -> Pacer {
        self.origin = Some(origin);
        self
    }

    /// The same pacing, starting now with nothing released.
    pub fn restarted(&self) -> Pacer {
        Pacer {
            started: Instant::now(),
            released: 0,
            ..self.clone()
        }
    }

    /// When the pacing started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The records per second this pacer releases, if it paces by rate.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Whether records wait at all (not `--speed max` without a rate).
    pub fn is_paced(&self) -> bool {
        self.rate.is_some() || matches!(self.speed, Speed::Factor(_))
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
                let origin = *self.origin.get_or_insert(t);
                let event_secs = (t - origin).max(0) as f64 / 1e9;
                Some(self.started + Duration::from_secs_f64(event_secs / speed))
            }
        }
    }

    /// Sleeps until the next record is due.
    pub fn wait(&mut self, event: Option<i64>) {
        if let Some(due) = self.due(event) {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
}

/// One offered load of `bench --rate`: records per second, or a percentage
/// of the pipeline's max (its median records/s, unpaced, with as many
/// workers, in the same sitting).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// This many records per second.
    PerSecond(f64),
    /// This percentage of the max measured just before.
    PercentOfMax(f64),
}

/// A `--rate` value that is not a positive rate or percentage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RateError(String);

impl std::str::FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Rate, RateError> {
        let t = s.trim();
        let (number, percent) = match t.strip_suffix('%') {
            Some(n) => (n.trim_end(), true),
            None => (t, false),
        };
        let v: f64 = number.parse().map_err(|_| {
            RateError(format!(
                "`{s}` is neither records/s (200000) nor a percentage of the max (50%)"
            ))
        })?;
        if !(v.is_finite() && v > 0.0) {
            return Err(RateError(format!(
                "`{s}`: an offered load must be positive"
            )));
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn pacer_follows_event_time_without_drift() {
        let mut p = Pacer::new(Speed::Factor(3600.0), None);
        let start = p.started;
        assert_eq!(p.due(Some(5 * HOUR)), Some(start));
        assert_eq!(p.due(Some(6 * HOUR)), Some(start + Duration::from_secs(1)));
        assert_eq!(
            p.due(Some(7 * HOUR + HOUR / 2)),
            Some(start + Duration::from_millis(2500))
        );
        // A record from before the origin is due at once, never in the past.
        assert_eq!(p.due(Some(4 * HOUR)), Some(start));
        let mut max = Pacer::new(Speed::Max, None);
        assert_eq!(max.due(Some(HOUR)), None);
        assert!(!max.is_paced());
        let mut rate = Pacer::new(Speed::Max, Some(4.0));
        let start = rate.started;
        assert_eq!(rate.due(None), Some(start));
        assert_eq!(rate.due(None), Some(start + Duration::from_millis(250)));
        assert!(rate.is_paced());
    }

    #[test]
    fn a_given_origin_wins_over_the_first_record_and_restarts_keep_it() {
        let mut p = Pacer::new(Speed::Factor(3600.0), None).with_origin(2 * HOUR);
        let start = p.started();
        assert_eq!(p.due(Some(3 * HOUR)), Some(start + Duration::from_secs(1)));
        // Records without an event time are due at once when pacing by speed.
        assert_eq!(p.due(None), None);
        let mut again = p.restarted();
        assert_eq!(
            again.due(Some(4 * HOUR)),
            Some(again.started() + Duration::from_secs(2))
        );
        // A restart forgets what was released: a rate starts over.
        let mut rate = Pacer::new(Speed::Max, Some(2.0));
        rate.due(None);
        rate.due(None);
        let mut rate = rate.restarted();
        assert_eq!(rate.due(None), Some(rate.started()));
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
    }
}
