//! Where a stream starts and stops: a Kafka source's start ([`From`]) and
//! bound ([`Until`]), a replay's event-time [`Window`] and its [`Speed`] —
//! the values of `--from`, `--until` and `--speed`, parsed once here.

use crate::core::record::{format_time, parse_time};
use std::fmt;
use std::str::FromStr;

/// Where a Kafka source starts reading each owned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The group's committed offset, else the beginning (a live pipeline's default).
    Committed,
    /// The partition's first offset still on the broker.
    Earliest,
    /// The partition's end: only records produced from now on.
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
    /// The first record at or after this time (nanoseconds since the epoch),
    /// or the end, whichever comes first.
    Time(i64),
}

/// A `--from`, `--until` or `--speed` value that does not parse: the text,
/// and what was expected instead.
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
    /// The first event time inside (ns since the epoch); `None`: no lower bound.
    pub from: Option<i64>,
    /// The first event time past the end (ns since the epoch); `None`: no upper bound.
    pub until: Option<i64>,
}

impl Window {
    /// Whether event time `t` (ns since the epoch) lies inside the window.
    pub fn contains(&self, t: i64) -> bool {
        self.from.is_none_or(|f| t >= f) && self.until.is_none_or(|u| t < u)
    }
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
}
