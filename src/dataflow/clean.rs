//! The clean stage: a typed [`Record`] → a [`FeatureRow`] of `f32` model
//! features, exactly as the spec's `[[features]]` say (numeric pass-through,
//! ordinal mappings, one-hot groups), in the model's feature order.
//!
//! The spec is compiled once into a [`Cleaner`]: column indexes resolved,
//! level tables hashed. A value the spec cannot map (an unknown ordinal level,
//! or an unknown one-hot value where the spec says `unknown = "error"`) is a
//! [`CleanError`] naming the column and the value, and the record becomes a
//! dead letter.

use rustc_hash::FxHashMap as HashMap;

use crate::core::features::FeatureRow;
use crate::core::record::{DeadLetter, Record, Stage, Value};
use crate::spec::{Feature, Spec, Unknown};

/// Why a record's values cannot become features; names the column and value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CleanError {
    /// An ordinal column's level is in neither its table nor its `missing` list.
    #[error("column `{column}`: unknown level `{value}` (expected one of {expected})")]
    UnknownLevel {
        /// The feature's column.
        column: String,
        /// The level found.
        value: String,
        /// The accepted levels, sorted (cut after 12).
        expected: String,
    },
    /// A one-hot column's value is not listed, and the spec says `unknown = "error"`.
    #[error("column `{column}`: unknown value `{value}` (expected one of {expected})")]
    UnknownValue {
        /// The feature's column.
        column: String,
        /// The value found.
        value: String,
        /// The listed values, sorted (cut after 12).
        expected: String,
    },
    /// A value of a type the feature cannot use; a record typed by this
    /// spec's ingest never has one.
    #[error("column `{column}`: a {found} value where the spec needs {needed}")]
    WrongType {
        /// The feature's column.
        column: String,
        /// What the record held, e.g. "text".
        found: &'static str,
        /// What the feature needs, e.g. "a number".
        needed: &'static str,
    },
}

enum Op {
    Numeric {
        column: usize,
    },
    Ordinal {
        column: usize,
        table: HashMap<String, f32>,
        missing: Vec<String>,
    },
    OneHot {
        column: usize,
        position: HashMap<String, usize>,
        width: usize,
        unknown: Unknown,
    },
    /// A window feature: missing here, filled in by the window stage.
    Window,
}

/// The compiled clean stage of one spec.
pub struct Cleaner {
    ops: Vec<Op>,
    names: Vec<String>,
    num_features: usize,
    passthrough: Vec<usize>,
}

impl Cleaner {
    /// Compiles a validated spec's `[[features]]`.
    pub fn new(spec: &Spec) -> Cleaner {
        let column = |name: &str| {
            spec.column(name)
                .expect("spec validated its feature columns")
        };
        let ops = spec
            .features
            .iter()
            .map(|f| match f {
                Feature::Numeric { column: c, .. } => Op::Numeric { column: column(c) },
                Feature::Ordinal {
                    column: c, missing, ..
                } => Op::Ordinal {
                    column: column(c),
                    table: f
                        .ordinal_table()
                        .expect("ordinal feature")
                        .into_iter()
                        .map(|(k, v)| (k, v as f32))
                        .collect(),
                    missing: missing.clone(),
                },
                Feature::OneHot {
                    column: c,
                    values,
                    unknown,
                    ..
                } => Op::OneHot {
                    column: column(c),
                    position: values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (v.clone(), i))
                        .collect(),
                    width: values.len(),
                    unknown: *unknown,
                },
                Feature::Window { .. } => Op::Window,
            })
            .collect();
        let names = spec
            .features
            .iter()
            .map(|f| {
                f.column()
                    .map_or_else(|| f.names().remove(0), str::to_owned)
            })
            .collect();
        Cleaner {
            ops,
            names,
            num_features: spec.feature_names().len(),
            passthrough: spec.passthrough.clone(),
        }
    }

    /// How many features each row has (the spec's expanded feature names).
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// Appends the record's features to `out`.
    pub fn features_into(&self, values: &[Value], out: &mut Vec<f32>) -> Result<(), CleanError> {
        for (op, name) in self.ops.iter().zip(&self.names) {
            match op {
                Op::Numeric { column } => out.push(match &values[*column] {
                    Value::Int(i) => *i as f32,
                    Value::Float(f) => *f as f32,
                    Value::Null => f32::NAN,
                    other => return Err(wrong_type(name, other, "a number")),
                }),
                Op::Ordinal {
                    column,
                    table,
                    missing,
                } => out.push(match &values[*column] {
                    Value::Null => f32::NAN,
                    Value::Str(s) => match table.get(s.as_str()) {
                        Some(v) => *v,
                        None if missing.iter().any(|m| m == s) => f32::NAN,
                        None => {
                            return Err(CleanError::UnknownLevel {
                                column: name.clone(),
                                value: s.clone(),
                                expected: expected(table.keys().chain(missing.iter())),
                            })
                        }
                    },
                    other => return Err(wrong_type(name, other, "a text level")),
                }),
                Op::OneHot {
                    column,
                    position,
                    width,
                    unknown,
                } => {
                    let start = out.len();
                    out.resize(start + width, 0.0);
                    match &values[*column] {
                        Value::Null => {}
                        Value::Str(s) => match position.get(s.as_str()) {
                            Some(&i) => out[start + i] = 1.0,
                            None if *unknown == Unknown::Zeros => {}
                            None => {
                                return Err(CleanError::UnknownValue {
                                    column: name.clone(),
                                    value: s.clone(),
                                    expected: expected(position.keys()),
                                })
                            }
                        },
                        other => return Err(wrong_type(name, other, "a text value")),
                    }
                }
                Op::Window => out.push(f32::NAN),
            }
        }
        Ok(())
    }

    /// Cleans one record; a failure is a dead letter with the record's raw input.
    pub fn clean(&self, record: Record) -> Result<FeatureRow, DeadLetter> {
        let mut features = Vec::with_capacity(self.num_features);
        match self.features_into(&record.values, &mut features) {
            Ok(()) => Ok(FeatureRow {
                passthrough: self
                    .passthrough
                    .iter()
                    .map(|&i| record.values[i].clone())
                    .collect(),
                id: record.id,
                event_time: record.event_time,
                features,
                origin: record.origin,
                read_at: record.read_at,
            }),
            Err(e) => Err(DeadLetter {
                raw: record.raw,
                stage: Stage::Clean,
                reason: e.to_string(),
                origin: record.origin,
                at: record.event_time,
            }),
        }
    }
}

fn wrong_type(column: &str, value: &Value, needed: &'static str) -> CleanError {
    CleanError::WrongType {
        column: column.to_owned(),
        found: match value {
            Value::Null => "missing",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "text",
            Value::Time(_) => "time",
        },
        needed,
    }
}

/// A short, sorted list of accepted values for an error message.
fn expected<'a>(values: impl Iterator<Item = &'a String>) -> String {
    let mut v: Vec<&str> = values.map(String::as_str).collect();
    v.sort_unstable();
    let n = v.len();
    if n > 12 {
        format!("{}, … ({n} values)", v[..12].join(", "))
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Origin;
    use std::path::{Path, PathBuf};

    fn lending_club() -> Spec {
        Spec::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dataflows/lending_club.toml"))
            .unwrap()
    }

    /// A record with every lending_club column set to a valid value, then `edits`.
    fn values(spec: &Spec, edits: &[(&str, Value)]) -> Vec<Value> {
        let mut v: Vec<Value> = spec
            .columns
            .iter()
            .map(|c| match c.name.as_str() {
                "id" => Value::Str("lc-1".into()),
                "applied_at" => Value::Time(0),
                "term" => Value::Str("term_36".into()),
                "sub_grade" => Value::Str("A1".into()),
                "addr_state" => Value::Str("CA".into()),
                "verification_status" => Value::Str("Verified".into()),
                "emp_length" => Value::Str("emp_5".into()),
                "Class" => Value::Null,
                "int_rate" | "annual_inc" | "revol_util" => Value::Float(1.5),
                _ => Value::Int(3),
            })
            .collect();
        for (name, value) in edits {
            v[spec.column(name).unwrap()] = value.clone();
        }
        v
    }

    fn feature(spec: &Spec, out: &[f32], name: &str) -> f32 {
        out[spec.feature_names().iter().position(|n| n == name).unwrap()]
    }

    fn run(spec: &Spec, edits: &[(&str, Value)]) -> Result<Vec<f32>, CleanError> {
        let mut out = Vec::new();
        Cleaner::new(spec)
            .features_into(&values(spec, edits), &mut out)
            .map(|_| out)
    }

    #[test]
    fn ordinal_mappings() {
        let spec = lending_club();
        for (level, want) in [("A1", 1.0), ("A5", 5.0), ("B1", 6.0), ("G5", 35.0)] {
            let out = run(&spec, &[("sub_grade", Value::Str(level.into()))]).unwrap();
            assert_eq!(feature(&spec, &out, "sub_grade"), want, "{level}");
        }
        for (level, want) in [
            ("emp_lt_1", 0.0),
            ("emp_1", 1.0),
            ("emp_9", 9.0),
            ("emp_ge_10", 10.0),
        ] {
            let out = run(&spec, &[("emp_length", Value::Str(level.into()))]).unwrap();
            assert_eq!(feature(&spec, &out, "emp_length"), want, "{level}");
        }
        let out = run(&spec, &[("emp_length", Value::Str("emp_unk".into()))]).unwrap();
        assert!(feature(&spec, &out, "emp_length").is_nan());
        for (level, want) in [("term_36", 36.0), ("term_60", 60.0)] {
            let out = run(&spec, &[("term", Value::Str(level.into()))]).unwrap();
            assert_eq!(feature(&spec, &out, "term"), want);
        }
    }

    #[test]
    fn unknown_ordinal_level_names_column_and_value() {
        let spec = lending_club();
        let err = run(&spec, &[("sub_grade", Value::Str("Z9".into()))]).unwrap_err();
        assert!(
            matches!(&err, CleanError::UnknownLevel { column, value, .. } if column == "sub_grade" && value == "Z9")
        );
        assert!(err
            .to_string()
            .starts_with("column `sub_grade`: unknown level `Z9` (expected one of A1, A2"));
    }

    #[test]
    fn one_hot_groups() {
        let spec = lending_club();
        let out = run(
            &spec,
            &[("verification_status", Value::Str("Source_Verified".into()))],
        )
        .unwrap();
        assert_eq!(
            feature(&spec, &out, "verification_status__Not_Verified"),
            0.0
        );
        assert_eq!(
            feature(&spec, &out, "verification_status__Source_Verified"),
            1.0
        );
        assert_eq!(feature(&spec, &out, "verification_status__Verified"), 0.0);
        let state_sum = |out: &[f32]| -> f32 {
            spec.feature_names()
                .iter()
                .zip(out)
                .filter(|(n, _)| n.starts_with("addr_state__"))
                .map(|(_, v)| v)
                .sum()
        };
        assert_eq!(state_sum(&out), 1.0);
        assert_eq!(feature(&spec, &out, "addr_state__CA"), 1.0);
        // Unknown value: zeros in its group, by default.
        let out = run(&spec, &[("addr_state", Value::Str("PR".into()))]).unwrap();
        assert_eq!(state_sum(&out), 0.0);
        assert_eq!(out.len(), spec.feature_names().len());
    }

    #[test]
    fn one_hot_unknown_can_be_an_error() {
        let text = r#"
name = "t"
model = "m.json"
id = "id"
[columns]
id = "string"
g = { type = "string", missing = [""] }
[[features]]
kind = "one_hot"
column = "g"
values = ["a", "b"]
unknown = "error"
"#;
        let spec = Spec::parse(Path::new("t.toml"), text).unwrap();
        let c = Cleaner::new(&spec);
        let mut out = Vec::new();
        let err = c
            .features_into(&[Value::Str("x".into()), Value::Str("c".into())], &mut out)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `g`: unknown value `c` (expected one of a, b)"
        );
        out.clear();
        c.features_into(&[Value::Str("x".into()), Value::Null], &mut out)
            .unwrap();
        assert_eq!(out, vec![0.0, 0.0]);
    }

    #[test]
    fn numeric_pass_through_and_missing() {
        let spec = lending_club();
        let out = run(
            &spec,
            &[
                ("int_rate", Value::Float(13.99)),
                ("funded_amnt", Value::Int(16100)),
            ],
        )
        .unwrap();
        assert_eq!(feature(&spec, &out, "int_rate"), 13.99f32);
        assert_eq!(feature(&spec, &out, "funded_amnt"), 16100.0);
        let out = run(&spec, &[("int_rate", Value::Null)]).unwrap();
        assert!(feature(&spec, &out, "int_rate").is_nan());
    }

    #[test]
    fn clean_failure_is_a_dead_letter_with_raw_input() {
        let spec = lending_club();
        let record = Record {
            read_at: 0,
            id: "lc-1".into(),
            event_time: None,
            values: values(&spec, &[("sub_grade", Value::Str("H1".into()))]),
            raw: b"raw bytes".to_vec(),
            origin: Origin::File {
                path: "f".into(),
                line: 3,
            },
        };
        let dl = Cleaner::new(&spec).clean(record).unwrap_err();
        assert_eq!(dl.stage, Stage::Clean);
        assert_eq!(dl.raw, b"raw bytes");
        assert!(dl.reason.contains("`H1`"));
    }
}
