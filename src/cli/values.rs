//! Value parsers for flags: each turns text into a checked value once, so
//! no command checks a number again.

use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};

use crate::core::record::Format;
use crate::dataflow::graph::Stages;

/// A flag value that is not a positive, finite number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a positive number")]
pub struct NotPositive(String);

/// A positive, finite number (`--rate`, `--p99-target-ms`).
pub fn positive(text: &str) -> Result<f64, NotPositive> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(NotPositive(text.to_owned())),
    }
}

/// A positive number of seconds (`--connect-timeout`, `--max-outage`,
/// `--cluster-timeout`), fractions allowed.
pub fn seconds(text: &str) -> Result<Duration, NotPositive> {
    positive(text)
        .and_then(|s| Duration::try_from_secs_f64(s).map_err(|_| NotPositive(text.to_owned())))
}

/// A flag value that is not an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 3339 time (e.g. 2016-06-15T00:00:00Z)")]
pub struct NotTime(String);

/// An RFC 3339 time, as ns since the Unix epoch (`generate --shift-at`).
pub fn rfc3339(text: &str) -> Result<i64, NotTime> {
    crate::core::record::parse_time(text).ok_or_else(|| NotTime(text.to_owned()))
}

/// `--format`: `csv` or `jsonl`, listed as such in `--help`.
pub fn format() -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new(["csv", "jsonl"]).map(|s| match s.as_str() {
        "csv" => Format::Csv,
        _ => Format::Jsonl,
    })
}

/// `--stages`: `all`, `clean` or `predict`, listed as such in `--help`.
pub fn stages() -> impl TypedValueParser<Value = Stages> {
    PossibleValuesParser::new(["all", "clean", "predict"]).map(|s| match s.as_str() {
        "clean" => Stages::Clean,
        "predict" => Stages::Predict,
        _ => Stages::All,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_numbers_and_seconds_refuse_the_rest() {
        assert_eq!(positive("2.5"), Ok(2.5));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "inf", "NaN", "", "x", "1e400"] {
            assert!(positive(bad).is_err(), "{bad}");
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(
            positive("-1").unwrap_err().to_string(),
            "`-1` is not a positive number"
        );
    }
}
