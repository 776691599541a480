//! A scored application, what a sink takes ([`Output`]: a scored
//! application or, from a clean stage, a feature row) and the one JSON shape
//! every sink writes each in (file and Kafka alike), so two edges never
//! disagree on an output's bytes.
//!
//! A spec with `[explain]` adds `reasons` (see [`super::reasons`]) to the
//! applications it explains, after the pass-through columns; every other
//! output is byte for byte what it is without `[explain]`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::features::{FeatureRow, RowFormat};
use super::reasons::{Reason, Sources};
use super::record::{write_json_str, Origin, Value};
use crate::spec::Spec;

/// What a sink writes besides dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// A scored application (the predict stage's output).
    Scored(Scored),
    /// A feature row (the clean stage's output, for the middle topic).
    Cleaned(FeatureRow),
}

impl Output {
    /// The application's id: the message key.
    pub fn id(&self) -> &str {
        match self {
            Output::Scored(s) => &s.id,
            Output::Cleaned(r) => &r.id,
        }
    }

    /// Where the application was read.
    pub fn origin(&self) -> &Origin {
        match self {
            Output::Scored(s) => &s.origin,
            Output::Cleaned(r) => &r.origin,
        }
    }

    /// Its event time (ns since the epoch), if it has one.
    pub fn event_time(&self) -> Option<i64> {
        match self {
            Output::Scored(s) => s.event_time,
            Output::Cleaned(r) => r.event_time,
        }
    }
}

/// What a sink counts of the outputs it delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Scored applications.
    pub scored: u64,
    /// Of those, flagged.
    pub flagged: u64,
    /// Feature rows.
    pub cleaned: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

impl Tally {
    /// Counts one output.
    pub fn count(&mut self, output: &Output) {
        match output {
            Output::Scored(s) => {
                self.scored += 1;
                self.flagged += u64::from(s.flagged);
            }
            Output::Cleaned(_) => self.cleaned += 1,
        }
    }
}

/// A scored application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The application's id (the spec's id column).
    pub id: String,
    /// The model's output (a probability for logistic models), exactly as XGBoost computes it.
    pub score: f32,
    /// `score >= threshold`.
    pub flagged: bool,
    /// The application's event time (ns since the epoch), if it has one.
    pub event_time: Option<i64>,
    /// Values of the spec's `passthrough` columns, in that list's order.
    pub passthrough: Vec<Value>,
    /// When the source read the application (ns since the epoch).
    pub read_at: i64,
    /// Where the application was read: an exactly-once sink routes by its
    /// input partition (see `io::exactly_once`).
    pub origin: Origin,
    /// Its reason codes, if the spec's `[explain]` covers it (top first).
    pub reasons: Option<Vec<Reason>>,
}

/// How a scored application is written: one JSON object, the same for the
/// file and the Kafka sink. Fields: `id`, `score`, `flagged`, `model`, the
/// spec's pass-through columns, then `reasons` where an application has them.
#[derive(Debug, Clone)]
pub struct OutputFormat {
    rows: RowFormat,
    model_id: String,
    passthrough: Vec<String>,
    sources: Option<Arc<Sources>>,
    /// Also write `event_time` and `latency_ms` (read → written, wall clock).
    stamp: bool,
}

impl OutputFormat {
    /// The format of `spec`'s outputs scored by the model `model_id`; unstamped.
    pub fn new(spec: &Spec, model_id: &str) -> OutputFormat {
        OutputFormat {
            rows: RowFormat::new(spec),
            model_id: model_id.to_owned(),
            passthrough: spec
                .passthrough
                .iter()
                .map(|&i| spec.columns[i].name.clone())
                .collect(),
            sources: Sources::of(spec).map(Arc::new),
            stamp: false,
        }
    }

    /// Stamps every output with its event time and its latency.
    pub fn stamped(mut self, stamp: bool) -> OutputFormat {
        self.stamp = stamp;
        self
    }

    /// Appends `output` as one JSON object (no newline); `now` (ns since the
    /// epoch) is when it is written, for a scored application's `latency_ms`.
    pub fn write(&self, output: &Output, now: i64, out: &mut Vec<u8>) {
        match output {
            Output::Scored(s) => self.write_scored(s, now, out),
            Output::Cleaned(r) => self.rows.write(r, out),
        }
    }

    /// Appends `scored` as one JSON object (no newline).
    pub fn write_scored(&self, scored: &Scored, now: i64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        write_json_str(out, &scored.id);
        out.extend_from_slice(b",\"score\":");
        if scored.score.is_finite() {
            out.extend_from_slice(ryu::Buffer::new().format_finite(scored.score).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(if scored.flagged {
            b",\"flagged\":true,\"model\":"
        } else {
            b",\"flagged\":false,\"model\":"
        });
        write_json_str(out, &self.model_id);
        for (name, value) in self.passthrough.iter().zip(&scored.passthrough) {
            out.push(b',');
            write_json_str(out, name);
            out.push(b':');
            value.write_json(out);
        }
        if let (Some(reasons), Some(sources)) = (&scored.reasons, &self.sources) {
            out.extend_from_slice(b",\"reasons\":");
            sources.write_json(reasons, out);
        }
        if self.stamp {
            out.extend_from_slice(b",\"event_time\":");
            match scored.event_time {
                Some(t) => Value::Time(t).write_json(out),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"latency_ms\":");
            if scored.read_at > 0 {
                let ms = ((now - scored.read_at) as f64 / 1e3).round() / 1e3;
                out.extend_from_slice(ryu::Buffer::new().format_finite(ms).as_bytes());
            } else {
                out.extend_from_slice(b"null");
            }
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn output_is_one_json_object_with_passthrough() {
        let spec = Spec::load(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dataflows/lending_club.toml"),
        )
        .unwrap();
        let format = OutputFormat::new(&spec, "m@sha256:abc");
        let scored = Scored {
            read_at: 0,
            origin: Origin::File {
                path: "t.csv".into(),
                line: 2,
            },
            id: "lc-\"1".into(),
            score: 0.125,
            flagged: false,
            event_time: None,
            passthrough: vec![
                Value::Time(1_451_606_400_000_000_000),
                Value::Str("C4".into()),
                Value::Int(16100),
            ],
            reasons: None,
        };
        let mut out = Vec::new();
        format.write_scored(&scored, 0, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "lc-\"1");
        assert_eq!(v["score"], 0.125);
        assert_eq!(v["flagged"], false);
        assert_eq!(v["model"], "m@sha256:abc");
        assert_eq!(v["applied_at"], "2016-01-01T00:00:00Z");
        assert_eq!(v["sub_grade"], "C4");
        assert_eq!(v["funded_amnt"], 16100);
    }
}
