//! A feature row: what the clean stage hands the predict stage, and its one
//! JSON shape on the middle topic of a three-service deployment
//! (`run --stages clean` → `run --stages predict`).
//!
//! The shape, one JSON object per row (the message key is the id):
//!
//! ```json
//! {"id":"lc-000001","applied_at":"2016-01-01T00:11:02Z","sub_grade":"C4","funded_amnt":16100,
//!  "features":{"funded_amnt":16100,"int_rate":13.49,"sub_grade":12,…},
//!  "spec":"lending_club@sha256:0123456789ab"}
//! ```
//!
//! Invariants:
//! 1. **Exact**: every feature is the `f32` the clean stage computed, written in
//!    the shortest text that reads back to the same `f32` (`null` = missing);
//!    the predict stage parses that text as `f32` directly, never through `f64`,
//!    so a chain of services scores the very bits one dataflow scores (an
//!    infinite feature, which JSON has no number for, is `"inf"`/`"-inf"`).
//! 2. **Self-describing**: the id column, the event-time column and the spec's
//!    pass-through columns sit at the top level under their spec names, in
//!    the types the spec gives them (an application's output carries them on).
//! 3. **Named spec**: `spec` is the spec's [`identity`](crate::spec::Spec::identity)
//!    (name and SHA-256 of its text). A predict stage running another spec
//!    refuses the row as a fault, never as a score: features mean what one
//!    spec says they mean.

use serde::{Deserialize, Serialize};

use crate::core::record::{write_json_str, Origin, Value};
use crate::spec::{ColumnType, Spec};

/// A record ready for the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRow {
    /// The record's id.
    pub id: String,
    /// The record's event time (ns since the epoch), if it has one.
    pub event_time: Option<i64>,
    /// `num_features` values; NaN = missing.
    pub features: Vec<f32>,
    /// Values of the spec's `passthrough` columns, in that list's order.
    pub passthrough: Vec<Value>,
    /// Where the raw input came from.
    pub origin: Origin,
    /// When the source read it (see [`Record::read_at`](crate::core::record::Record::read_at)).
    pub read_at: i64,
}

/// The top-level key of the features object.
pub const FEATURES_KEY: &str = "features";

/// The top-level key of the spec identity.
pub const SPEC_KEY: &str = "spec";

/// How a feature row is written (invariants 1–3 of this module).
#[derive(Debug, Clone)]
pub struct RowFormat {
    spec: String,
    id: String,
    id_is_int: bool,
    event_time: Option<String>,
    /// Pass-through column names, `None` where the column is the id or the
    /// event-time column already written.
    passthrough: Vec<Option<String>>,
    /// Per feature, its key as written, escaped once: `"name":` (the first
    /// after `"features":{`, the others after a comma).
    feature_keys: Vec<Vec<u8>>,
}

impl RowFormat {
    /// The row format of `spec`.
    pub fn new(spec: &Spec) -> RowFormat {
        let event_time = spec.event_time.filter(|&e| e != spec.id);
        RowFormat {
            spec: spec.identity(),
            id: spec.columns[spec.id].name.clone(),
            id_is_int: spec.columns[spec.id].ty == ColumnType::Int,
            event_time: event_time.map(|e| spec.columns[e].name.clone()),
            passthrough: spec
                .passthrough
                .iter()
                .map(|&i| {
                    (i != spec.id && Some(i) != event_time).then(|| spec.columns[i].name.clone())
                })
                .collect(),
            feature_keys: spec
                .feature_names()
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mut key = Vec::new();
                    if i > 0 {
                        key.push(b',');
                    }
                    write_json_str(&mut key, name);
                    key.push(b':');
                    key
                })
                .collect(),
        }
    }

    /// The spec identity rows carry.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Appends `row` as one JSON object (no newline).
    pub fn write(&self, row: &FeatureRow, out: &mut Vec<u8>) {
        out.push(b'{');
        write_json_str(out, &self.id);
        out.push(b':');
        if self.id_is_int {
            out.extend_from_slice(row.id.as_bytes());
        } else {
            write_json_str(out, &row.id);
        }
        if let Some(name) = &self.event_time {
            out.push(b',');
            write_json_str(out, name);
            out.push(b':');
            match row.event_time {
                Some(t) => Value::Time(t).write_json(out),
                None => out.extend_from_slice(b"null"),
            }
        }
        for (name, value) in self.passthrough.iter().zip(&row.passthrough) {
            if let Some(name) = name {
                out.push(b',');
                write_json_str(out, name);
                out.push(b':');
                value.write_json(out);
            }
        }
        out.extend_from_slice(b",\"");
        out.extend_from_slice(FEATURES_KEY.as_bytes());
        out.extend_from_slice(b"\":{");
        let mut f32s = ryu::Buffer::new();
        for (key, &v) in self.feature_keys.iter().zip(&row.features) {
            out.extend_from_slice(key);
            if v.is_finite() {
                out.extend_from_slice(f32s.format_finite(v).as_bytes());
            } else if v.is_nan() {
                out.extend_from_slice(b"null");
            } else if v > 0.0 {
                out.extend_from_slice(b"\"inf\"");
            } else {
                out.extend_from_slice(b"\"-inf\"");
            }
        }
        out.extend_from_slice(b"},\"");
        out.extend_from_slice(SPEC_KEY.as_bytes());
        out.extend_from_slice(b"\":");
        write_json_str(out, &self.spec);
        out.push(b'}');
    }
}
