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
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::Deserialize;
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
}

/// The part of a row the carried-column parser does not read.
#[derive(Deserialize)]
struct Tail<'a> {
    #[serde(borrow)]
    features: Option<BTreeMap<Cow<'a, str>, &'a RawValue>>,
    #[serde(borrow)]
    spec: Option<Cow<'a, str>>,
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
    fn features(&self, bytes: &[u8]) -> Result<Vec<f32>, Result<String, String>> {
        let tail: Tail =
            serde_json::from_slice(bytes).map_err(|e| Ok(format!("not a feature row: {e}")))?;
        let spec = tail.spec.ok_or_else(|| {
            Ok("not a feature row: no `spec` (was it written by `run --stages clean`?)".to_owned())
        })?;
        if spec != self.spec {
            return Err(Err(spec.into_owned()));
        }
        let map = tail
            .features
            .ok_or_else(|| Ok("not a feature row: no `features`".to_owned()))?;
        let mut out = vec![f32::NAN; self.width];
        let mut seen = vec![false; self.width];
        for (name, raw) in &map {
            let Some(&i) = self.position.get(name.as_ref()) else {
                return Err(Ok(format!("feature row: unknown feature `{name}`")));
            };
            out[i] = parse_feature(raw.get()).ok_or_else(|| {
                Ok(format!(
                    "feature row: feature `{name}` is {}, not a number",
                    raw.get()
                ))
            })?;
            seen[i] = true;
        }
        if let Some(i) = seen.iter().position(|s| !s) {
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
    }
}
