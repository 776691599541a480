//! Reason codes: a scored application's TreeSHAP contributions (one per
//! model feature, `crate::model`'s `contributions`) grouped back to the
//! *sources* a person reads — the input column an applicant filled in, or a
//! window feature — and the top few of them, with the value each source
//! had, in the output's JSON shape.
//!
//! Invariants:
//! 1. **Grouping**: a source's contribution is the `f32` sum, in feature
//!    order, of the contributions of every feature that reads it: a one-hot
//!    group's columns, an ordinal's one feature, a numeric's; a column read
//!    by several `[[features]]` entries sums them all. A window feature is
//!    its own source, named by the feature. Sources are in the order of the
//!    first feature of each; the bias is no source.
//! 2. **Values from the features**: a source's value is recovered from the
//!    encoded features, never from the raw record, so a predict stage reading
//!    feature rows from the middle topic writes the very reasons one
//!    dataflow writes: a numeric's number (an int column's as an integer), an
//!    ordinal's level (the first level, in `levels` then `map` order, mapped
//!    to that number), a one-hot group's value whose column is 1, a window
//!    feature's number. When the features cannot say — a missing value, an
//!    ordinal's `missing` level, a one-hot value outside the group's list
//!    (`unknown = "zeros"`, also the tutorial's dropped first level) — the
//!    value is `null`.
//! 3. **Order**: reasons are sorted toward the positive class — the largest
//!    contribution first (ties: source order) — and cut to `top`. They are the
//!    largest, not only the positive ones: when fewer than `top` sources push
//!    the score up, the rest have contributions ≤ 0, and the sign says so.
//!
//! JSON (one object per reason, in a `reasons` array, see
//! [`crate::core::scored`]): `{"column":"sub_grade","value":"G3",
//! "contribution":0.4128,"text":"Credit sub-grade"}`; `contribution` is in
//! log-odds (margin units), the `f32` in its shortest round-trip text.

use serde::{Deserialize, Serialize};

use super::record::write_json_str;
use crate::spec::{source_of, ColumnType, Explain, ExplainFor, Feature, Spec};

/// A source's value, as the features tell it (invariant 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ReasonValue {
    /// The features cannot tell it.
    Null,
    /// An int column's number.
    Int(i64),
    /// A float column's number, or a window feature's.
    Number(f32),
    /// The source's label at this index: an ordinal level or a one-hot value.
    Label(u32),
}

/// One source's part in a score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Index of the source in its [`Sources`].
    pub source: u32,
    /// The source's value.
    pub value: ReasonValue,
    /// Its contribution to the margin (log-odds for a logistic model).
    pub contribution: f32,
}

/// How one `[[features]]` entry reads its value back from the features.
#[derive(Debug, Clone)]
enum Decode {
    Number {
        slot: usize,
        int: bool,
    },
    Ordinal {
        slot: usize,
        levels: Vec<(f32, u32)>,
    },
    OneHot {
        first: usize,
        labels: Vec<u32>,
    },
}

/// A column (or window feature) reasons are reported under.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its name: the input column, or the window feature.
    pub name: String,
    /// What a person reads (`[explain.text]`, else the name).
    pub text: String,
    /// The model features that read it (indexes into a row).
    pub slots: Vec<usize>,
    /// Its values by label index (ordinal levels, one-hot values).
    pub labels: Vec<String>,
    decoders: Vec<Decode>,
    /// `{"column":NAME,"value":` written once.
    head: Vec<u8>,
    /// `,"text":TEXT}` written once.
    tail: Vec<u8>,
}

/// A spec's sources, and how many reasons go on which applications.
#[derive(Debug, Clone)]
pub struct Sources {
    sources: Vec<Source>,
    /// The row width the features come in.
    width: usize,
    /// Reasons per explained application.
    pub top: usize,
    /// Which applications are explained.
    pub rows: ExplainFor,
}

impl Sources {
    /// The sources of `spec` if it has `[explain]`.
    pub fn of(spec: &Spec) -> Option<Sources> {
        spec.explain.as_ref().map(|e| Sources::new(spec, e))
    }

    /// The sources of `spec`, with `explain`'s texts and counts (also for a
    /// spec without `[explain]`: `loanflow explain` takes the defaults).
    pub fn new(spec: &Spec, explain: &Explain) -> Sources {
        let mut sources: Vec<Source> = Vec::new();
        let mut slot = 0;
        for feature in &spec.features {
            let width = feature.names().len();
            let name = source_of(feature);
            let at = match sources.iter().position(|s| s.name == name) {
                Some(at) => at,
                None => {
                    let text = explain.text_of(name).to_owned();
                    let mut head = b"{\"column\":".to_vec();
                    write_json_str(&mut head, name);
                    head.extend_from_slice(b",\"value\":");
                    let mut tail = b",\"text\":".to_vec();
                    write_json_str(&mut tail, &text);
                    tail.push(b'}');
                    sources.push(Source {
                        name: name.to_owned(),
                        text,
                        slots: Vec::new(),
                        labels: Vec::new(),
                        decoders: Vec::new(),
                        head,
                        tail,
                    });
                    sources.len() - 1
                }
            };
            let source = &mut sources[at];
            source.slots.extend(slot..slot + width);
            let mut label = |text: &str| -> u32 {
                match source.labels.iter().position(|l| l == text) {
                    Some(i) => i as u32,
                    None => {
                        source.labels.push(text.to_owned());
                        (source.labels.len() - 1) as u32
                    }
                }
            };
            let decode = match feature {
                Feature::Numeric { column, .. } => Decode::Number {
                    slot,
                    int: spec
                        .column(column)
                        .is_some_and(|c| spec.columns[c].ty == ColumnType::Int),
                },
                Feature::Window { .. } => Decode::Number { slot, int: false },
                Feature::Ordinal { levels, map, .. } => {
                    let table = feature.ordinal_table().expect("an ordinal");
                    let levels = levels
                        .iter()
                        .chain(map.keys())
                        .map(|l| (table[l] as f32, label(l)))
                        .collect();
                    Decode::Ordinal { slot, levels }
                }
                Feature::OneHot { values, .. } => Decode::OneHot {
                    first: slot,
                    labels: values.iter().map(|v| label(v)).collect(),
                },
            };
            source.decoders.push(decode);
            slot += width;
        }
        Sources {
            sources,
            width: slot,
            top: explain.top,
            rows: explain.rows,
        }
    }

    /// Every source, in order.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Whether an application flagged so is explained.
    pub fn explains(&self, flagged: bool) -> bool {
        flagged || self.rows == ExplainFor::All
    }

    /// Every source's part in a row's score (invariants 1 and 2), in source
    /// order, appended to `out`: `features` is the row, `contributions` its
    /// contributions (one per feature, then the bias, which is left out).
    pub fn group(&self, features: &[f32], contributions: &[f32], out: &mut Vec<Reason>) {
        assert_eq!(features.len(), self.width, "row width");
        assert!(
            contributions.len() >= self.width,
            "one contribution per feature"
        );
        for (i, source) in self.sources.iter().enumerate() {
            let mut contribution = 0.0f32;
            for &s in &source.slots {
                contribution += contributions[s];
            }
            let value = source
                .decoders
                .iter()
                .map(|d| decode(d, features))
                .find(|v| *v != ReasonValue::Null)
                .unwrap_or(ReasonValue::Null);
            out.push(Reason {
                source: i as u32,
                value,
                contribution,
            });
        }
    }

    /// The top reasons of a row (invariant 3), into `out` (cleared first);
    /// `scratch` holds every source's on the way.
    pub fn top(
        &self,
        features: &[f32],
        contributions: &[f32],
        scratch: &mut Vec<Reason>,
        out: &mut Vec<Reason>,
    ) {
        scratch.clear();
        self.group(features, contributions, scratch);
        scratch.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
        out.clear();
        out.extend(scratch.iter().take(self.top));
    }

    /// The value of `reason` as a person reads it (`G3`, `16100`, `13.49`, `null`).
    pub fn value_text(&self, reason: &Reason) -> String {
        let mut out = Vec::new();
        match reason.value {
            ReasonValue::Label(l) => out.extend_from_slice(
                self.sources[reason.source as usize].labels[l as usize].as_bytes(),
            ),
            _ => self.write_value(reason, &mut out),
        }
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    fn write_value(&self, reason: &Reason, out: &mut Vec<u8>) {
        match reason.value {
            ReasonValue::Null => out.extend_from_slice(b"null"),
            ReasonValue::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
            ReasonValue::Number(x) => write_f32(x, out),
            ReasonValue::Label(l) => write_json_str(
                out,
                &self.sources[reason.source as usize].labels[l as usize],
            ),
        }
    }

    /// Appends `reasons` as a JSON array.
    pub fn write_json(&self, reasons: &[Reason], out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, reason) in reasons.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let source = &self.sources[reason.source as usize];
            out.extend_from_slice(&source.head);
            self.write_value(reason, out);
            out.extend_from_slice(b",\"contribution\":");
            write_f32(reason.contribution, out);
            out.extend_from_slice(&source.tail);
        }
        out.push(b']');
    }
}

/// An `f32` in its shortest round-trip text; a non-finite one as the
/// feature rows write it (`null`, `"inf"`, `"-inf"`).
fn write_f32(x: f32, out: &mut Vec<u8>) {
    if x.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
    } else if x.is_nan() {
        out.extend_from_slice(b"null");
    } else if x > 0.0 {
        out.extend_from_slice(b"\"inf\"");
    } else {
        out.extend_from_slice(b"\"-inf\"");
    }
}

/// Largest magnitude below which every integer is an exact `f32`/`f64`.
const EXACT_INT: f32 = 9_007_199_254_740_992.0;

fn decode(decode: &Decode, features: &[f32]) -> ReasonValue {
    match decode {
        Decode::Number { slot, int } => {
            let x = features[*slot];
            if x.is_nan() {
                ReasonValue::Null
            } else if *int && x.fract() == 0.0 && x.abs() < EXACT_INT {
                ReasonValue::Int(x as i64)
            } else {
                ReasonValue::Number(x)
            }
        }
        Decode::Ordinal { slot, levels } => {
            let x = features[*slot];
            levels
                .iter()
                .find(|(n, _)| *n == x)
                .map_or(ReasonValue::Null, |&(_, l)| ReasonValue::Label(l))
        }
        Decode::OneHot { first, labels } => labels
            .iter()
            .enumerate()
            .find(|(i, _)| features[first + i] == 1.0)
            .map_or(ReasonValue::Null, |(_, &l)| ReasonValue::Label(l)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SPEC: &str = r#"
name = "t"
model = "m.json"
id = "id"
[columns]
id = "string"
n = "int"
x = "float"
g = { type = "string", missing = [""] }
o = "string"
[[features]]
kind = "numeric"
column = "n"
[[features]]
kind = "one_hot"
column = "g"
values = ["a", "b", "c"]
[[features]]
kind = "ordinal"
column = "o"
levels = ["lo", "hi"]
map = { top = 5 }
missing = ["?"]
[[features]]
kind = "numeric"
column = "x"
[[features]]
kind = "numeric"
column = "n"
name = "n_again"
[explain]
top = 3
[explain.text]
g = "The group"
"#;

    fn sources() -> Sources {
        Sources::of(&Spec::parse(Path::new("t.toml"), SPEC).unwrap()).unwrap()
    }

    #[test]
    fn groups_one_hot_columns_and_repeated_columns_under_their_source() {
        let s = sources();
        let names: Vec<&str> = s.sources().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["n", "g", "o", "x"]);
        assert_eq!(s.sources()[0].slots, [0, 6]);
        assert_eq!(s.sources()[1].slots, [1, 2, 3]);
        let features = [3.0, 0.0, 1.0, 0.0, 5.0, 1.5, 3.0];
        let contributions = [0.5, 0.25, -1.0, 0.125, 2.0, -0.5, 0.25, 9.0];
        let mut out = Vec::new();
        s.group(&features, &contributions, &mut out);
        assert_eq!(out[0].contribution, 0.5 + 0.25);
        assert_eq!(out[0].value, ReasonValue::Int(3));
        assert_eq!(out[1].contribution, 0.25 - 1.0 + 0.125);
        assert_eq!(s.value_text(&out[1]), "b");
        assert_eq!(s.value_text(&out[2]), "top");
        assert_eq!(s.value_text(&out[3]), "1.5");
        let mut scratch = Vec::new();
        let mut top = Vec::new();
        s.top(&features, &contributions, &mut scratch, &mut top);
        let order: Vec<u32> = top.iter().map(|r| r.source).collect();
        assert_eq!(order, [2, 0, 3], "largest first, cut to top = 3");
        let mut json = Vec::new();
        s.write_json(&top[..1], &mut json);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"[{"column":"o","value":"top","contribution":2.0,"text":"o"}]"#
        );
    }

    #[test]
    fn values_the_features_cannot_tell_are_null() {
        let s = sources();
        // Missing n and x, group value outside the list, ordinal's missing level.
        let features = [f32::NAN, 0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN];
        let mut out = Vec::new();
        s.group(&features, &[0.0; 8], &mut out);
        assert!(out.iter().all(|r| r.value == ReasonValue::Null), "{out:?}");
        let mut json = Vec::new();
        s.write_json(&out[1..2], &mut json);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"[{"column":"g","value":null,"contribution":0.0,"text":"The group"}]"#
        );
    }
}
