//! The predict stage's input when it runs as its own service
//! (`run --stages predict`): a feature row as the clean stage wrote it
//! ([`crate::core::features`]) back into a [`FeatureRow`]. A plain struct,
//! free of timely: the operator is [`graph::read_rows`](super::graph::read_rows).
//!
//! Invariants:
//! 1. A row written for another spec (its `spec` is not this spec's
//!    identity) is a [`RowRefusal::Foreign`] — a fault that stops the run
//!    before anything of it is written — never a dead letter or a score:
//!    its features may mean something else.
//! 2. Every feature is parsed from its JSON text as `f32` directly
//!    (features module, invariant 1): the predict stage scores the bits the
//!    clean stage computed.
//! 3. A row this spec cannot read otherwise (not JSON, a feature missing or
//!    unknown, a carried column of the wrong type) is a dead letter with the
//!    reason, like any malformed input.

use std::borrow::Cow;
use std::fmt;

use rustc_hash::FxHashMap;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::ingest::Parser;
use crate::core::features::{FeatureRow, FEATURES_KEY, SPEC_KEY};
use crate::core::record::{DeadLetter, RawRecord, Stage, Value};
use crate::spec::Spec;

/// Why a feature row is not scored.
#[derive(Debug)]
pub enum RowRefusal {
    /// Written for another spec (invariant 1): the run must stop.
    Foreign {
        /// The spec identity the row carries.
        found: String,
        /// This stage's spec identity.
        expected: String,
        /// Where the row was read.
        origin: String,
    },
    /// Not a row this spec can read (invariant 3).
    Dead(DeadLetter),
}

/// Reads feature rows of one spec.
pub struct RowReader {
    spec: String,
    /// Carried columns: id, event time, pass-through.
    carried: Parser,
    /// For each of the spec's pass-through columns, its slot in `carried`.
    passthrough: Vec<usize>,
    /// Feature name → position in the model's order.
    position: FxHashMap<String, usize>,
    width: usize,
    /// Which features the row being read had (reused row to row).
    seen: Vec<bool>,
}

/// What the features pass finds in a row: the `spec` text, and whether
/// there was a `features` object (read into the output as it goes).
#[derive(Default)]
struct Found<'a> {
    spec: Option<Cow<'a, str>>,
    features: bool,
    /// The first feature that is unknown or not a number: reported only
    /// once the row's spec is known to be this stage's (invariant 1).
    problem: Option<String>,
}

/// The first pass over a row: `spec`, and each feature straight into its
/// slot, in one walk (no map built per row); other keys are skipped.
struct TailSeed<'r> {
    position: &'r FxHashMap<String, usize>,
    out: &'r mut [f32],
    seen: &'r mut [bool],
}

impl<'de> DeserializeSeed<'de> for TailSeed<'_> {
    type Value = Found<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TailSeed<'_> {
    type Value = Found<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a feature row (a JSON object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        let TailSeed {
            position,
            out,
            seen,
        } = self;
        let mut found = Found::default();
        while let Some(key) = map.next_key_seed(Text)? {
            match key.as_ref() {
                "spec" => found.spec = Some(map.next_value_seed(Text)?),
                "features" => {
                    found.features = true;
                    map.next_value_seed(FeaturesSeed {
                        position,
                        out: &mut *out,
                        seen: &mut *seen,
                        problem: &mut found.problem,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

struct FeaturesSeed<'r> {
    position: &'r FxHashMap<String, usize>,
    out: &'r mut [f32],
    seen: &'r mut [bool],
    problem: &'r mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for FeaturesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FeaturesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`features`: an object of feature name → number")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key_seed(Text)? {
            let raw: &RawValue = map.next_value()?;
            match self.position.get(name.as_ref()) {
                Some(&i) => match parse_feature(raw.get()) {
                    Some(v) => {
                        self.out[i] = v;
                        self.seen[i] = true;
                    }
                    None => {
                        self.problem.get_or_insert_with(|| {
                            format!("feature `{name}` is {}, not a number", raw.get())
                        });
                    }
                },
                None => {
                    self.problem
                        .get_or_insert_with(|| format!("unknown feature `{name}`"));
                }
            }
        }
        Ok(())
    }
}

/// A JSON string, borrowed when it has no escapes.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

impl RowReader {
    /// A reader of `spec`'s feature rows; records over `max_record_bytes` are dead letters.
    pub fn new(spec: &Spec, max_record_bytes: usize) -> RowReader {
        debug_assert_eq!((FEATURES_KEY, SPEC_KEY), ("features", "spec"));
        let mut carried = vec![spec.id];
        carried.extend(spec.event_time.filter(|&e| e != spec.id));
        for &p in &spec.passthrough {
            if !carried.contains(&p) {
                carried.push(p);
            }
        }
        let slot = |i: usize| carried.iter().position(|&c| c == i).expect("carried");
        let passthrough = spec.passthrough.iter().map(|&p| slot(p)).collect();
        let event_time = spec.event_time.map(slot);
        let columns = carried.iter().map(|&c| spec.columns[c].clone()).collect();
        let names = spec.feature_names();
        RowReader {
            spec: spec.identity(),
            carried: Parser::json_columns(columns, 0, event_time, max_record_bytes),
            passthrough,
            width: names.len(),
            seen: vec![false; names.len()],
            position: names.into_iter().enumerate().map(|(i, n)| (n, i)).collect(),
        }
    }

    /// Reads one row.
    pub fn read(&mut self, raw: RawRecord) -> Result<FeatureRow, RowRefusal> {
        let features = match self.features(&raw.bytes) {
            Ok(f) => f,
            Err(Err(found)) => {
                return Err(RowRefusal::Foreign {
                    found,
                    expected: self.spec.clone(),
                    origin: raw.origin.to_string(),
                })
            }
            Err(Ok(reason)) => return Err(RowRefusal::Dead(dead(raw, reason))),
        };
        let record = self.carried.parse(raw).map_err(|mut d| {
            d.stage = Stage::Predict;
            d.reason = format!("not a feature row: {}", d.reason);
            RowRefusal::Dead(d)
        })?;
        let mut values = record.values;
        let passthrough = self
            .passthrough
            .iter()
            .map(|&i| std::mem::replace(&mut values[i], Value::Null))
            .collect();
        Ok(FeatureRow {
            id: record.id,
            event_time: record.event_time,
            features,
            passthrough,
            origin: record.origin,
            read_at: record.read_at,
        })
    }

    /// The features in model order; `Err(Err(spec))`: written for another
    /// spec; `Err(Ok(reason))`: unreadable.
    fn features(&mut self, bytes: &[u8]) -> Result<Vec<f32>, Result<String, String>> {
        let mut out = vec![f32::NAN; self.width];
        self.seen.fill(false);
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let found = TailSeed {
            position: &self.position,
            out: &mut out,
            seen: &mut self.seen,
        }
        .deserialize(&mut de)
        .and_then(|found| de.end().map(|()| found))
        .map_err(|e| Ok(format!("not a feature row: {e}")))?;
        let spec = found.spec.ok_or_else(|| {
            Ok("not a feature row: no `spec` (was it written by `run --stages clean`?)".to_owned())
        })?;
        if spec != self.spec {
            return Err(Err(spec.into_owned()));
        }
        if !found.features {
            return Err(Ok("not a feature row: no `features`".to_owned()));
        }
        if let Some(problem) = found.problem {
            return Err(Ok(format!("feature row: {problem}")));
        }
        if let Some(i) = self.seen.iter().position(|s| !s) {
            let name = self
                .position
                .iter()
                .find(|(_, &p)| p == i)
                .map(|(n, _)| n.as_str());
            return Err(Ok(format!(
                "feature row: feature `{}` is missing",
                name.unwrap_or("?")
            )));
        }
        Ok(out)
    }
}

/// A feature's JSON text as the clean stage wrote it: a number, `null`
/// (missing), or `"inf"`/`"-inf"`.
fn parse_feature(text: &str) -> Option<f32> {
    match text {
        "null" => Some(f32::NAN),
        "\"inf\"" => Some(f32::INFINITY),
        "\"-inf\"" => Some(f32::NEG_INFINITY),
        _ if text.starts_with('"') => None,
        _ => text.parse().ok(),
    }
}

fn dead(raw: RawRecord, reason: String) -> DeadLetter {
    DeadLetter {
        raw: raw.bytes,
        stage: Stage::Predict,
        reason,
        origin: raw.origin,
        at: None,
    }
}
