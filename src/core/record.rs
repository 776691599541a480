//! The data that flows between the stages: where a record came from
//! ([`Origin`]), its raw bytes ([`RawRecord`]), its typed form ([`Record`],
//! made of [`Value`]s) and the dead letters every stage may emit
//! ([`DeadLetter`]). Also the one place that turns raw text into a typed value
//! for a column, so CSV and JSON inputs agree on what a number or a time is.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::spec::{Column, ColumnType};

/// Where a record came from, so a person can find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A line of a file.
    File {
        /// The file's path, as the run was given it.
        path: Arc<str>,
        /// The line number: 1-based, counting a CSV header.
        line: u64,
    },
    /// A message of a Kafka partition.
    Kafka {
        /// The topic the message was read from.
        topic: Arc<str>,
        /// The partition within the topic.
        partition: i32,
        /// The message's offset within the partition.
        offset: i64,
    },
}

impl Origin {
    /// The Kafka partition the record was read from (files have one: 0).
    pub fn partition(&self) -> i32 {
        match self {
            Origin::File { .. } => 0,
            Origin::Kafka { partition, .. } => *partition,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{path}:{line}"),
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}@{offset}"),
        }
    }
}

/// The input format of raw records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// Comma-separated values with a header line, one record per line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// A record as an edge delivers it: bytes, and where they came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawRecord {
    /// The record as read: one line of a file (no line end) or one message's payload.
    pub bytes: Vec<u8>,
    /// Where the bytes came from.
    pub origin: Origin,
    /// When the source read it: wall clock, nanoseconds since the epoch (0: unknown).
    pub read_at: i64,
}

/// The wall clock now, nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A typed value of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// No value: the raw text was one of the column's `missing` values, or
    /// the column is absent from the input.
    Null,
    /// An `int` column's value.
    Int(i64),
    /// A `float` column's value; always finite.
    Float(f64),
    /// A `string` column's value, as read.
    Str(String),
    /// Nanoseconds since the Unix epoch, UTC.
    Time(i64),
}

impl Value {
    /// Writes the value as JSON: numbers as numbers, times as RFC 3339 text.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Value::Float(f) if f.is_finite() => {
                out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes())
            }
            Value::Float(_) => out.extend_from_slice(b"null"),
            Value::Str(s) => write_json_str(out, s),
            Value::Time(ns) => write_json_str(out, &format_time(*ns)),
        }
    }
}

/// Appends a typed record as one JSON object, `{"column": value, …}` in
/// spec order: what `loanflow ingest` produces and ingest reads back.
pub fn write_record_json(columns: &[Column], values: &[Value], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (column, value)) in columns.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, &column.name);
        out.push(b':');
        value.write_json(out);
    }
    out.push(b'}');
}

/// Appends `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly as JSON requires; writing into a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).expect("writing JSON into memory");
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC (`2016-01-01T00:03:12Z`,
/// with a fraction only when there is one).
pub fn format_time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Parses RFC 3339 text into nanoseconds since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()
}

/// Why a raw value could not become a typed one. Always names the column and
/// the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// The value is empty (or JSON `null`) and the column allows no missing value.
    #[error("column `{column}` is empty and has no missing values allowed")]
    Empty {
        /// The column's name.
        column: String,
    },
    /// An `int` column's value is not a 64-bit integer (a JSON number with a
    /// fraction included).
    #[error("column `{column}`: `{value}` is not an integer")]
    NotInt {
        /// The column's name.
        column: String,
        /// The offending text.
        value: String,
    },
    /// A `float` column's text is not a number, or not a finite one.
    #[error("column `{column}`: `{value}` is not a finite number")]
    NotNumber {
        /// The column's name.
        column: String,
        /// The offending text.
        value: String,
    },
    /// A `timestamp` column's text is not an RFC 3339 time.
    #[error("column `{column}`: `{value}` is not an RFC 3339 time (e.g. 2016-01-01T00:03:12Z)")]
    NotTime {
        /// The column's name.
        column: String,
        /// The offending text.
        value: String,
    },
    /// A JSON record has no key for a column that allows no missing value.
    #[error("column `{column}` is missing")]
    MissingColumn {
        /// The column's name.
        column: String,
    },
    /// A JSON value's type cannot hold the column's type (a boolean, an
    /// object or array, a number for a timestamp).
    #[error("column `{column}`: expected {expected}, found {found}")]
    WrongJsonType {
        /// The column's name.
        column: String,
        /// What the column takes, e.g. "an integer".
        expected: &'static str,
        /// What the input held, e.g. "a boolean".
        found: &'static str,
    },
}

/// Turns the raw text of `column` into its typed value.
pub fn parse_value(column: &Column, text: &str) -> Result<Value, ValueError> {
    if column.missing.iter().any(|m| m == text) {
        return Ok(Value::Null);
    }
    if text.is_empty() {
        return Err(ValueError::Empty {
            column: column.name.clone(),
        });
    }
    match column.ty {
        ColumnType::String => Ok(Value::Str(text.to_owned())),
        ColumnType::Int => text
            .parse()
            .map(Value::Int)
            .map_err(|_| ValueError::NotInt {
                column: column.name.clone(),
                value: text.to_owned(),
            }),
        ColumnType::Float => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Float(f)),
            _ => Err(ValueError::NotNumber {
                column: column.name.clone(),
                value: text.to_owned(),
            }),
        },
        ColumnType::Timestamp => {
            parse_time(text)
                .map(Value::Time)
                .ok_or_else(|| ValueError::NotTime {
                    column: column.name.clone(),
                    value: text.to_owned(),
                })
        }
    }
}

/// A typed record: one value per spec column, in spec order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The id column's value, as text.
    pub id: String,
    /// The spec's event-time column, nanoseconds since the epoch.
    pub event_time: Option<i64>,
    /// One value per spec column, indexed like
    /// [`Spec::columns`](crate::spec::Spec::columns).
    pub values: Vec<Value>,
    /// The raw input, kept so a later stage can still dead-letter it losslessly.
    pub raw: Vec<u8>,
    /// Where the raw input came from.
    pub origin: Origin,
    /// When the source read it (see [`RawRecord::read_at`]).
    pub read_at: i64,
}

/// The pipeline stage that refused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Raw bytes → a typed record.
    Ingest,
    /// A typed record → model features.
    Clean,
    /// Features → a score. The predict stage refuses no record, so nothing
    /// emits this yet.
    Predict,
    /// A window dataflow's event-time check: a record behind its partition's
    /// newest by more than the spec's lateness, or without an event time.
    Late,
}

/// A record that could not be scored: its raw bytes, the stage that refused
/// it, why, and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The record's raw input, byte for byte.
    pub raw: Vec<u8>,
    /// The stage that refused it.
    pub stage: Stage,
    /// Why, for a person (names the column and value when there is one).
    pub reason: String,
    /// Where the raw input came from.
    pub origin: Origin,
    /// The event time a monitor counts it at (`core::monitor`): the
    /// record's own for one refused after the event-time check, else the
    /// newest event time its partition had delivered before it; `None`
    /// where neither is known. Not written out.
    pub at: Option<i64>,
}

impl DeadLetter {
    /// The dead letter as one JSON object (no newline). The raw input is text
    /// when it is UTF-8, else base64 under `raw_base64`: lossless either way.
    pub fn to_json(&self) -> Vec<u8> {
        let mut obj = serde_json::Map::new();
        match std::str::from_utf8(&self.raw) {
            Ok(text) => obj.insert("raw".into(), text.into()),
            Err(_) => obj.insert(
                "raw_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(&self.raw)
                    .into(),
            ),
        };
        obj.insert(
            "stage".into(),
            serde_json::to_value(self.stage).expect("stage is plain"),
        );
        obj.insert("reason".into(), self.reason.clone().into());
        match &self.origin {
            Origin::File { path, line } => {
                obj.insert("file".into(), path.to_string().into());
                obj.insert("line".into(), (*line).into());
            }
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => {
                obj.insert("topic".into(), topic.to_string().into());
                obj.insert("partition".into(), (*partition).into());
                obj.insert("offset".into(), (*offset).into());
            }
        }
        serde_json::to_vec(&obj).expect("JSON of plain values")
    }
}

/// The worker-independent hash records are exchanged by: FxHash has no
/// per-process random keys, so every process of a cluster agrees.
pub fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    id.hash(&mut h);
    // timely routes by the low bits: finish with splitmix64's avalanche so
    // ids that differ in one character still spread evenly.
    let mut z = h.finish();
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColumnType, missing: &[&str]) -> Column {
        Column {
            name: "c".into(),
            ty,
            missing: missing.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn parses_each_type() {
        assert_eq!(
            parse_value(&col(ColumnType::Int, &[]), "-12"),
            Ok(Value::Int(-12))
        );
        assert_eq!(
            parse_value(&col(ColumnType::Float, &[]), "13.99"),
            Ok(Value::Float(13.99))
        );
        assert_eq!(
            parse_value(&col(ColumnType::String, &[]), "C4"),
            Ok(Value::Str("C4".into()))
        );
        assert_eq!(
            parse_value(&col(ColumnType::Timestamp, &[]), "2016-01-01T00:00:01Z"),
            Ok(Value::Time(1_451_606_401_000_000_000))
        );
    }

    #[test]
    fn missing_values_become_null_only_when_listed() {
        assert_eq!(
            parse_value(&col(ColumnType::Float, &["", "NA"]), "NA"),
            Ok(Value::Null)
        );
        assert_eq!(
            parse_value(&col(ColumnType::Float, &[""]), ""),
            Ok(Value::Null)
        );
        assert_eq!(
            parse_value(&col(ColumnType::Float, &[]), ""),
            Err(ValueError::Empty { column: "c".into() })
        );
    }

    #[test]
    fn bad_values_name_column_and_value() {
        let e = parse_value(&col(ColumnType::Int, &[]), "12.5").unwrap_err();
        assert_eq!(e.to_string(), "column `c`: `12.5` is not an integer");
        let e = parse_value(&col(ColumnType::Float, &[]), "abc").unwrap_err();
        assert_eq!(e.to_string(), "column `c`: `abc` is not a finite number");
        let e = parse_value(&col(ColumnType::Float, &[]), "inf").unwrap_err();
        assert!(matches!(e, ValueError::NotNumber { .. }));
        let e = parse_value(&col(ColumnType::Timestamp, &[]), "yesterday").unwrap_err();
        assert!(e
            .to_string()
            .contains("`yesterday` is not an RFC 3339 time"));
    }

    #[test]
    fn time_round_trips_through_text() {
        let ns = parse_time("2016-03-31T23:59:59Z").unwrap();
        assert_eq!(format_time(ns), "2016-03-31T23:59:59Z");
    }

    #[test]
    fn dead_letter_keeps_non_utf8_bytes_as_base64() {
        let dl = DeadLetter {
            raw: vec![0xff, 0xfe, b'a'],
            stage: Stage::Ingest,
            reason: "not UTF-8".into(),
            origin: Origin::File {
                path: "in.csv".into(),
                line: 7,
            },
            at: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&dl.to_json()).unwrap();
        assert_eq!(v["raw_base64"], "//5h");
        assert_eq!(v["line"], 7);
        assert_eq!(v["stage"], "ingest");
    }

    #[test]
    fn ids_spread_evenly_over_workers() {
        for workers in [2u64, 3, 4, 8] {
            let mut counts = vec![0u32; workers as usize];
            for n in 0..40_000 {
                counts[(id_hash(&format!("lc-{n:06}")) % workers) as usize] += 1;
            }
            let even = 40_000 / workers as u32;
            assert!(
                counts.iter().all(|&c| c.abs_diff(even) < even / 20),
                "{workers}: {counts:?}"
            );
        }
    }
}
