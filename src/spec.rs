//! The dataflow spec: a TOML file (see `dataflows/README.md`) that says which
//! input columns are read with what type, how they become model features and
//! in which order, which column is the id, and which model scores them.
//!
//! This module owns loading and validating a spec. Everything that depends on
//! a particular dataflow lives in its TOML file, never in Rust code: the
//! ingest stage reads [`Spec::columns`], the clean stage compiles
//! [`Spec::features`], the predict stage loads [`Spec::model`]. May import
//! nothing else of the crate.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a spec could not be used. Each message names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file cannot be read.
    #[error("cannot read dataflow spec {path}: {source} (pass an existing file with --dataflow)")]
    Read {
        /// The spec file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not TOML, or not of a spec's shape (an unknown key, a
    /// missing field, a value of the wrong type).
    #[error("dataflow spec {path} is not valid TOML for a loanflow spec: {message}")]
    Parse {
        /// The spec file.
        path: PathBuf,
        /// The TOML parser's message, with the line and column when known.
        message: String,
    },
    /// The spec parses but breaks a rule (an unknown column, a feature on a
    /// column of the wrong type, a duplicate feature name, …).
    #[error("dataflow spec {path}: {message}")]
    Invalid {
        /// The spec file.
        path: PathBuf,
        /// What is wrong, and often how to fix it.
        message: String,
    },
}

/// The type an input column's raw text is parsed into at ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Text, kept as is.
    String,
    /// A 64-bit signed integer.
    Int,
    /// A finite 64-bit float.
    Float,
    /// RFC 3339, e.g. `2016-01-01T00:03:12Z`.
    Timestamp,
}

impl ColumnType {
    /// The type's name as a spec writes it (`"float"`).
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawColumn {
    Type(ColumnType),
    Full {
        #[serde(rename = "type")]
        ty: ColumnType,
        #[serde(default)]
        missing: Vec<String>,
    },
}

/// One input column: its name, type, and the raw values that mean "no value".
#[derive(Debug, Clone)]
pub struct Column {
    /// The name in the CSV header or the JSON object.
    pub name: String,
    /// The type its raw text is parsed into.
    pub ty: ColumnType,
    /// Raw texts that stand for a missing value. Empty: every value is required.
    pub missing: Vec<String>,
}

impl Column {
    /// Whether a column may hold no value (and so may be absent from the input).
    pub fn nullable(&self) -> bool {
        !self.missing.is_empty()
    }
}

/// What to do with a one-hot value that is not in the group's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// All zeros in the group (pandas `get_dummies` on unseen data).
    #[default]
    Zeros,
    /// The record is a dead letter.
    Error,
}

/// One `[[features]]` entry: how a column becomes one or more model features.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Feature {
    /// The column's number as the feature; a missing value stays missing.
    Numeric {
        /// The int or float column read.
        column: String,
        /// The feature's name; the column's if `None`.
        #[serde(default)]
        name: Option<String>,
    },
    /// A text level mapped to a number, by `levels` (position + `start`) or by `map`.
    Ordinal {
        /// The string column read.
        column: String,
        /// The feature's name; the column's if `None`.
        #[serde(default)]
        name: Option<String>,
        /// Levels in order: the i-th (0-based) maps to `start + i`.
        #[serde(default)]
        levels: Vec<String>,
        /// The number of the first of `levels`; 0 if `None`.
        #[serde(default)]
        start: Option<f64>,
        /// Levels mapped to numbers explicitly, alongside `levels`.
        #[serde(default)]
        map: BTreeMap<String, f64>,
        /// Levels that mean "no value": the feature is missing (NaN).
        #[serde(default)]
        missing: Vec<String>,
    },
    /// One feature per listed value, named `COLUMN__Value` (or `prefix` + value).
    OneHot {
        /// The string column read.
        column: String,
        /// The values that get a feature each, in feature order.
        values: Vec<String>,
        /// What feature names start with; `COLUMN__` if `None`.
        #[serde(default)]
        prefix: Option<String>,
        /// What a value not in `values` becomes.
        #[serde(default)]
        unknown: Unknown,
    },
    /// A point-in-time aggregate over the earlier applications of the same
    /// group: those with `t - window <= event time < t` (see [`Window`]).
    Window {
        /// The feature's name (required: a window has no single column).
        name: String,
        /// What is computed over the window.
        agg: Agg,
        /// The int or float column aggregated; `count` without one counts
        /// applications.
        #[serde(default)]
        column: Option<String>,
        /// The columns whose values form the group; empty: one global group.
        #[serde(default)]
        by: Vec<String>,
        /// The window's length, e.g. `"1h"`, `"24h"`, `"7d"`.
        window: String,
        /// Fixed point: a value is summed as `round(value × scale)` in
        /// integers, so sums never depend on order. Int columns: 1 by
        /// default; float columns must give one.
        #[serde(default)]
        scale: Option<i64>,
    },
}

/// What a window feature computes over the values in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    /// How many applications (with `column`: how many with a value).
    Count,
    /// The sum of the values; 0 for an empty window.
    Sum,
    /// The mean of the values; missing for an empty window.
    Mean,
    /// The smallest value; missing for an empty window.
    Min,
    /// The largest value; missing for an empty window.
    Max,
}

/// A window feature, compiled: indexes resolved, durations in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The feature's name.
    pub name: String,
    /// Its place in the model's feature vector.
    pub slot: usize,
    /// What is computed.
    pub agg: Agg,
    /// Index into the spec's columns of the aggregated column, if any.
    pub column: Option<usize>,
    /// Indexes into the spec's columns of the group's columns.
    pub by: Vec<usize>,
    /// The window's length (ns): events with `t - length <= time < t` count.
    pub length: i64,
    /// The fixed-point scale values are summed at.
    pub scale: i64,
}

/// Parses a duration such as `"90s"`, `"15m"`, `"1h"`, `"7d"` or `"0s"`
/// (a whole number and one unit of ms, s, m, h, d) into nanoseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let n: i64 = number.parse().ok()?;
    let unit_ns: i64 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit_ns)
}

/// A duration in the largest unit that divides it (`"1h"`, `"90s"`).
pub fn format_duration(ns: i64) -> String {
    for (unit, size) in [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
    ] {
        if ns % size == 0 && (ns != 0 || unit == "s") {
            return format!("{}{unit}", ns / size);
        }
    }
    format!("{ns}ns")
}

impl Feature {
    /// Whether this feature can read `col`: a numeric one a number, an
    /// ordinal or one-hot one a string, with levels or values given.
    fn check_column(
        &self,
        col: &Column,
        invalid: &dyn Fn(String) -> SpecError,
    ) -> Result<(), SpecError> {
        let (kind, needs_string) = match self {
            Feature::Numeric { .. } | Feature::Window { .. } => ("numeric", false),
            Feature::Ordinal { .. } => ("ordinal", true),
            Feature::OneHot { .. } => ("one_hot", true),
        };
        let fits = if needs_string {
            col.ty == ColumnType::String
        } else {
            matches!(col.ty, ColumnType::Int | ColumnType::Float)
        };
        if !fits {
            return Err(invalid(format!(
                "{kind} feature on column `{}` needs {}, not {}",
                col.name,
                if needs_string {
                    "a string column"
                } else {
                    "an int or float column"
                },
                col.ty.name()
            )));
        }
        let problem = match self {
            Feature::Numeric { .. } | Feature::Window { .. } => None,
            Feature::Ordinal {
                levels, map, start, ..
            } => {
                let mut level_set = HashSet::new();
                if levels.is_empty() && map.is_empty() {
                    Some(" has neither `levels` nor `map`".to_owned())
                } else if start.is_some() && levels.is_empty() {
                    Some(": `start` applies to `levels`, which is empty".to_owned())
                } else {
                    levels
                        .iter()
                        .chain(map.keys())
                        .find(|level| !level_set.insert(*level))
                        .map(|level| format!(" lists level `{level}` twice"))
                }
            }
            Feature::OneHot { values, .. } => {
                values.is_empty().then(|| " has no `values`".to_owned())
            }
        };
        match problem {
            None => Ok(()),
            Some(p) => Err(invalid(format!(
                "{kind} feature on column `{}`{p}",
                col.name
            ))),
        }
    }

    /// The input column this entry reads (a window: its aggregated column,
    /// if any).
    pub fn column(&self) -> Option<&str> {
        match self {
            Feature::Numeric { column, .. }
            | Feature::Ordinal { column, .. }
            | Feature::OneHot { column, .. } => Some(column),
            Feature::Window { column, .. } => column.as_deref(),
        }
    }

    /// The model feature names this entry expands to, in order.
    pub fn names(&self) -> Vec<String> {
        match self {
            Feature::Numeric { column, name } | Feature::Ordinal { column, name, .. } => {
                vec![name.clone().unwrap_or_else(|| column.clone())]
            }
            Feature::OneHot {
                column,
                values,
                prefix,
                ..
            } => {
                let prefix = prefix.clone().unwrap_or_else(|| format!("{column}__"));
                values.iter().map(|v| format!("{prefix}{v}")).collect()
            }
            Feature::Window { name, .. } => vec![name.clone()],
        }
    }

    /// The ordinal mapping as one table, whichever way the spec wrote it.
    pub fn ordinal_table(&self) -> Option<HashMap<String, f64>> {
        match self {
            Feature::Ordinal {
                levels, start, map, ..
            } => {
                let start = start.unwrap_or(0.0);
                let mut table: HashMap<String, f64> = levels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l.clone(), start + i as f64))
                    .collect();
                table.extend(map.iter().map(|(k, v)| (k.clone(), *v)));
                Some(table)
            }
            _ => None,
        }
    }
}

/// The training label: the column holding the outcome and its positive
/// value. For training only; serving never reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// The label column.
    pub column: String,
    /// The raw value that means the positive class (e.g. `"bad"`).
    pub positive: String,
}

/// Which scored applications carry reasons (`[explain] for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExplainFor {
    /// Only the flagged ones (`score >= threshold`): adverse-action notices.
    #[default]
    Flagged,
    /// Every one.
    All,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExplain {
    #[serde(default = "default_top")]
    top: usize,
    #[serde(default, rename = "for")]
    rows: ExplainFor,
    #[serde(default)]
    text: toml::Table,
}

fn default_top() -> usize {
    4
}

/// The `[explain]` table: reason codes on scored applications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explain {
    /// How many reasons each explained application carries (default 4).
    pub top: usize,
    /// Which applications carry them (default: the flagged ones).
    pub rows: ExplainFor,
    /// Per source (an input column a feature reads, or a window feature's
    /// name): the text a person reads. A source without one is named by
    /// itself.
    pub text: HashMap<String, String>,
}

impl Explain {
    /// The text of `source`: the spec's, else the source's own name.
    pub fn text_of<'a>(&'a self, source: &'a str) -> &'a str {
        self.text.get(source).map_or(source, String::as_str)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    description: String,
    model: PathBuf,
    #[serde(default = "default_threshold")]
    threshold: f64,
    id: String,
    #[serde(default)]
    event_time: Option<String>,
    #[serde(default)]
    label: Option<Label>,
    #[serde(default)]
    passthrough: Vec<String>,
    columns: toml::Table,
    features: Vec<Feature>,
    #[serde(default)]
    lateness: Option<String>,
    #[serde(default)]
    explain: Option<RawExplain>,
    #[serde(default)]
    monitor: Option<RawMonitor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    window: String,
    #[serde(default)]
    by: Vec<String>,
    #[serde(default)]
    score_bins: Option<Vec<f32>>,
    #[serde(default)]
    reference: Option<PathBuf>,
}

/// The spec's `[monitor]`: what `run --monitor` aggregates per event-time
/// window (see `core::monitor`).
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSpec {
    /// The tumbling window's length (ns).
    pub window: i64,
    /// The columns to break the counts down by: indexes into the spec's
    /// `passthrough` (the monitor reads them from the scored output).
    pub by: Vec<usize>,
    /// Their names, in the same order.
    pub by_names: Vec<String>,
    /// The inner edges of the score histogram's fixed bins (ascending;
    /// default: 0.1, 0.2, …, 0.9: ten equal bins on [0, 1]).
    pub score_edges: Vec<f32>,
    /// The training reference (`reference`, relative to the spec's folder;
    /// default: `NAME.reference.json` beside the model, for `NAME.xgb.json`).
    pub reference: PathBuf,
}

fn default_threshold() -> f64 {
    0.5
}

/// A loaded, validated dataflow spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Where the spec was read from.
    pub path: PathBuf,
    /// Names the dataflow (its consumer group, logs).
    pub name: String,
    /// Free text for people; empty if the spec gives none.
    pub description: String,
    /// The model file, resolved relative to the spec's folder.
    pub model: PathBuf,
    /// `flagged = score >= threshold`.
    pub threshold: f64,
    /// Input columns in the order the spec lists them.
    pub columns: Vec<Column>,
    /// Index into `columns` of the id column.
    pub id: usize,
    /// Index into `columns` of the event-time column, if any.
    pub event_time: Option<usize>,
    /// The training label, if the spec names one.
    pub label: Option<Label>,
    /// Indexes into `columns` copied to every output record.
    pub passthrough: Vec<usize>,
    /// The `[[features]]` entries, in the order the model expects.
    pub features: Vec<Feature>,
    /// SHA-256 (hex) of the spec's text: what a cleaned row names its spec by.
    pub sha256: String,
    /// The window features, compiled, in feature order (empty: a stateless
    /// dataflow, which keeps the stateless path).
    pub windows: Vec<Window>,
    /// How far (ns) a record may be behind the newest event time of its
    /// partition before it is late (`lateness`, default 0).
    pub lateness: i64,
    /// Reason codes on scored applications, if the spec asks for them.
    pub explain: Option<Explain>,
    /// What `run --monitor` aggregates, if the spec says.
    pub monitor: Option<MonitorSpec>,
}

impl Spec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        Spec::parse(path, &text)
    }

    /// Parses and validates spec text; `path` names it in errors and anchors
    /// the relative model path.
    pub fn parse(path: &Path, text: &str) -> Result<Spec, SpecError> {
        let raw = parse_toml(path, text)?;
        let invalid = |message: String| SpecError::Invalid {
            path: path.to_owned(),
            message,
        };
        let columns = parse_columns(raw.columns, &invalid)?;
        let find = |name: &str, what: &str| column_index(&columns, name, what, &invalid);
        let id = find(&raw.id, "`id`")?;
        if columns[id].nullable() {
            return Err(invalid(format!(
                "the id column `{}` must not allow missing values",
                raw.id
            )));
        }
        let event_time = match &raw.event_time {
            Some(name) => {
                let i = find(name, "`event_time`")?;
                if columns[i].ty != ColumnType::Timestamp {
                    return Err(invalid(format!(
                        "`event_time` column `{name}` must have type timestamp, not {}",
                        columns[i].ty.name()
                    )));
                }
                Some(i)
            }
            None => None,
        };
        if let Some(label) = &raw.label {
            find(&label.column, "`label`")?;
        }
        let passthrough = raw
            .passthrough
            .iter()
            .map(|name| find(name, "`passthrough`"))
            .collect::<Result<Vec<_>, _>>()?;
        for reserved in ["id", "score", "flagged", "model"] {
            if raw.passthrough.iter().any(|p| p == reserved) && columns[id].name != reserved {
                return Err(invalid(format!(
                    "`passthrough` column `{reserved}` clashes with an output field of the same name"
                )));
            }
        }
        // Thresholds outside [0, 1] make sense for regression models, so only
        // a non-number is refused.
        if !raw.threshold.is_finite() {
            return Err(invalid("`threshold` must be a finite number".into()));
        }
        check_features(&raw.features, &columns, &invalid)?;
        let windows = compile_windows(&raw.features, &columns, event_time, &invalid)?;
        let lateness = match &raw.lateness {
            None => 0,
            Some(text) => parse_duration(text).ok_or_else(|| {
                invalid(format!(
                    "`lateness = \"{text}\"` is not a duration (write e.g. \"0s\", \"30s\", \"5m\")"
                ))
            })?,
        };
        let explain = raw
            .explain
            .map(|e| check_explain(e, &raw.features, &invalid))
            .transpose()?;
        let base = path.parent().unwrap_or(Path::new("."));
        let monitor = raw
            .monitor
            .map(|m| {
                check_monitor(
                    m,
                    &raw.passthrough,
                    event_time,
                    &base.join(&raw.model),
                    base,
                    &invalid,
                )
            })
            .transpose()?;
        Ok(Spec {
            path: path.to_owned(),
            name: raw.name,
            description: raw.description,
            model: base.join(raw.model),
            threshold: raw.threshold,
            columns,
            id,
            event_time,
            label: raw.label,
            passthrough,
            features: raw.features,
            sha256: format!(
                "{:x}",
                <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())
            ),
            windows,
            lateness,
            explain,
            monitor,
        })
    }

    /// `name@sha256:first-12-hex`: names exactly which spec made a feature row.
    pub fn identity(&self) -> String {
        format!("{}@sha256:{}", self.name, &self.sha256[..12])
    }

    /// The model's feature names in order, as the spec expands them.
    pub fn feature_names(&self) -> Vec<String> {
        self.features.iter().flat_map(Feature::names).collect()
    }

    /// The index into `columns` of the column called `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// Checks `[monitor]` (`model`: the model path, resolved).
fn check_monitor(
    raw: RawMonitor,
    passthrough: &[String],
    event_time: Option<usize>,
    model: &Path,
    base: &Path,
    invalid: &dyn Fn(String) -> SpecError,
) -> Result<MonitorSpec, SpecError> {
    if event_time.is_none() {
        return Err(invalid(
            "`[monitor]` needs `event_time`: its windows are over event time".into(),
        ));
    }
    let window = parse_duration(&raw.window)
        .filter(|w| *w > 0)
        .ok_or_else(|| {
            invalid(format!(
                "`[monitor] window = \"{}\"` is not a positive duration (write e.g. \"1h\", \"15m\")",
                raw.window
            ))
        })?;
    let by = raw
        .by
        .iter()
        .map(|name| {
            passthrough.iter().position(|p| p == name).ok_or_else(|| {
                invalid(format!(
                    "`[monitor] by` column `{name}` must be in `passthrough` (the monitor reads it from the scored output)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let score_edges = match raw.score_bins {
        None => (1..10).map(|i| i as f32 / 10.0).collect(),
        Some(edges) => {
            if edges.is_empty()
                || edges.iter().any(|e| !e.is_finite())
                || edges.windows(2).any(|w| w[0] >= w[1])
            {
                return Err(invalid(
                    "`[monitor] score_bins` must be finite bin edges in ascending order, e.g. [0.1, 0.5, 0.9]".into(),
                ));
            }
            edges
        }
    };
    let reference = match raw.reference {
        Some(r) => base.join(r),
        None => {
            let file = model.file_name().and_then(|f| f.to_str()).unwrap_or("");
            let stem = file
                .strip_suffix(".xgb.json")
                .or_else(|| file.strip_suffix(".json"))
                .unwrap_or(file);
            model.with_file_name(format!("{stem}.reference.json"))
        }
    };
    Ok(MonitorSpec {
        window,
        by,
        by_names: raw.by,
        score_edges,
        reference,
    })
}

/// The spec's TOML, or a parse error with its line and column.
fn parse_toml(path: &Path, text: &str) -> Result<RawSpec, SpecError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let at = e.span().map(|s| {
            let before = &text[..s.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" (line {line}, column {column})")
        });
        SpecError::Parse {
            path: path.to_owned(),
            message: e.message().trim().replace('\n', "; ") + &at.unwrap_or_default(),
        }
    })
}

/// The `[columns]` table, in file order (toml's `preserve_order`).
fn parse_columns(
    table: toml::Table,
    invalid: &dyn Fn(String) -> SpecError,
) -> Result<Vec<Column>, SpecError> {
    let mut columns = Vec::with_capacity(table.len());
    for (name, value) in table {
        let raw_col: RawColumn = value.try_into().map_err(|e: toml::de::Error| {
            invalid(format!(
                "column `{name}`: {} (write `{name} = \"float\"` or `{name} = {{ type = \"float\", missing = [\"\"] }}`; types: string, int, float, timestamp)",
                e.message()
            ))
        })?;
        let (ty, missing) = match raw_col {
            RawColumn::Type(ty) => (ty, Vec::new()),
            RawColumn::Full { ty, missing } => (ty, missing),
        };
        columns.push(Column { name, ty, missing });
    }
    Ok(columns)
}

/// The index of the column `name`, which `what` names.
fn column_index(
    columns: &[Column],
    name: &str,
    what: &str,
    invalid: &dyn Fn(String) -> SpecError,
) -> Result<usize, SpecError> {
    columns.iter().position(|c| c.name == name).ok_or_else(|| {
        invalid(format!(
            "{what} names column `{name}`, which is not in [columns]"
        ))
    })
}

/// Every feature fits its column, and no feature name appears twice.
fn check_features(
    features: &[Feature],
    columns: &[Column],
    invalid: &dyn Fn(String) -> SpecError,
) -> Result<(), SpecError> {
    if features.is_empty() {
        return Err(invalid(
            "no [[features]]: the model needs at least one".into(),
        ));
    }
    let mut seen = HashSet::new();
    for feature in features {
        if let Some(column) = feature.column() {
            let col = &columns[column_index(columns, column, "a feature", invalid)?];
            feature.check_column(col, invalid)?;
        }
        for name in feature.names() {
            if !seen.insert(name.clone()) {
                return Err(invalid(format!("feature `{name}` appears twice")));
            }
        }
    }
    Ok(())
}

/// The name a feature's contributions are reported under: its input column,
/// or a window feature's own name.
pub fn source_of(feature: &Feature) -> &str {
    match feature {
        Feature::Window { name, .. } => name,
        other => other.column().expect("a stateless feature reads a column"),
    }
}

/// `[explain]`, checked: `top` at least 1, every `text` key a source (a
/// column some feature reads, or a window feature's name) and a string.
fn check_explain(
    raw: RawExplain,
    features: &[Feature],
    invalid: &dyn Fn(String) -> SpecError,
) -> Result<Explain, SpecError> {
    if raw.top == 0 {
        return Err(invalid(
            "`[explain] top = 0`: give at least 1 reason (the norm is 4)".into(),
        ));
    }
    let sources: Vec<&str> = features.iter().map(source_of).collect();
    let mut text = HashMap::new();
    for (key, value) in raw.text {
        if !sources.contains(&key.as_str()) {
            return Err(invalid(format!(
                "`[explain.text]` names `{key}`, which no feature reads (name an input column of [[features]] or a window feature)"
            )));
        }
        let toml::Value::String(value) = value else {
            return Err(invalid(format!("`[explain.text] {key}` must be a string")));
        };
        text.insert(key, value);
    }
    Ok(Explain {
        top: raw.top,
        rows: raw.rows,
        text,
    })
}

/// The window features, checked and compiled: a duration, a column that
/// fits the aggregation, group columns that exist, and an event time.
fn compile_windows(
    features: &[Feature],
    columns: &[Column],
    event_time: Option<usize>,
    invalid: &dyn Fn(String) -> SpecError,
) -> Result<Vec<Window>, SpecError> {
    let mut windows = Vec::new();
    let mut slot = 0;
    for feature in features {
        let width = feature.names().len();
        if let Feature::Window {
            name,
            agg,
            column,
            by,
            window,
            scale,
        } = feature
        {
            let what = format!("window feature `{name}`");
            if event_time.is_none() {
                return Err(invalid(format!(
                    "{what} needs `event_time`: windows are over event time"
                )));
            }
            let length = parse_duration(window).filter(|&ns| ns > 0).ok_or_else(|| {
                invalid(format!(
                    "{what}: `window = \"{window}\"` is not a positive duration (write e.g. \"1h\", \"24h\", \"7d\"; units ms, s, m, h, d)"
                ))
            })?;
            let column = match column {
                Some(c) => Some(column_index(columns, c, &what, invalid)?),
                None if *agg == Agg::Count => None,
                None => {
                    return Err(invalid(format!(
                        "{what}: `agg = \"{}\"` needs a `column` to aggregate",
                        format!("{agg:?}").to_lowercase()
                    )))
                }
            };
            let scale = match (column.map(|c| columns[c].ty), scale) {
                (_, Some(s)) if *s <= 0 => {
                    return Err(invalid(format!("{what}: `scale` must be positive")))
                }
                (_, Some(s)) => *s,
                (Some(ColumnType::Float), None) if *agg != Agg::Count => {
                    return Err(invalid(format!(
                        "{what}: float column `{}` needs a `scale` (values are summed as integers, e.g. scale = 100 for cents)",
                        columns[column.expect("typed")].name
                    )))
                }
                _ => 1,
            };
            let by = by
                .iter()
                .map(|b| {
                    let i = column_index(columns, b, &what, invalid)?;
                    match columns[i].ty {
                        ColumnType::String | ColumnType::Int => Ok(i),
                        other => Err(invalid(format!(
                            "{what}: `by` column `{b}` is {}; group by string or int columns",
                            other.name()
                        ))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            windows.push(Window {
                name: name.clone(),
                slot,
                agg: *agg,
                column,
                by,
                length,
                scale,
            });
        }
        slot += width;
    }
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(Path::new("dataflows/t.toml"), text)
    }

    const BASE: &str = r#"
name = "t"
model = "m.json"
id = "id"
[columns]
id = "string"
x = "float"
g = { type = "string", missing = [""] }
[[features]]
kind = "numeric"
column = "x"
[[features]]
kind = "one_hot"
column = "g"
values = ["a", "b"]
"#;

    #[test]
    fn expands_feature_names_and_resolves_model() {
        let spec = parse(BASE).unwrap();
        assert_eq!(spec.feature_names(), vec!["x", "g__a", "g__b"]);
        assert_eq!(spec.model, Path::new("dataflows/m.json"));
        assert_eq!(
            spec.columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["id", "x", "g"]
        );
        assert!(spec.columns[2].nullable());
    }

    #[test]
    fn rejects_feature_on_unknown_column() {
        let text = BASE.replace("column = \"x\"", "column = \"nope\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("`nope`") && err.contains("not in [columns]"),
            "{err}"
        );
    }

    #[test]
    fn rejects_numeric_feature_on_string_column() {
        let text = BASE.replace("x = \"float\"", "x = \"string\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("numeric feature on column `x`"), "{err}");
    }

    #[test]
    fn rejects_unknown_type_and_unknown_kind() {
        let err = parse(&BASE.replace("x = \"float\"", "x = \"decimal\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("column `x`"), "{err}");
        let err = parse(&BASE.replace("kind = \"numeric\"", "kind = \"bucket\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bucket"), "{err}");
    }

    #[test]
    fn rejects_bad_toml_with_position() {
        let err = parse("name = ").unwrap_err().to_string();
        assert!(err.contains("not valid TOML"), "{err}");
    }

    #[test]
    fn rejects_duplicate_feature_names() {
        let text = format!("{BASE}\n[[features]]\nkind = \"numeric\"\ncolumn = \"x\"\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("feature `x` appears twice"), "{err}");
    }

    #[test]
    fn ordinal_table_merges_levels_and_map() {
        let text = format!(
            "{BASE}\n[[features]]\nkind = \"ordinal\"\ncolumn = \"g\"\nname = \"g_ord\"\nlevels = [\"a\", \"b\"]\nstart = 1\nmap = {{ z = 9 }}\n"
        );
        let spec = parse(&text).unwrap();
        let table = spec.features[2].ordinal_table().unwrap();
        assert_eq!(table["a"], 1.0);
        assert_eq!(table["b"], 2.0);
        assert_eq!(table["z"], 9.0);
    }

    #[test]
    fn missing_spec_file_is_a_clear_error() {
        let err = Spec::load(Path::new("/nonexistent/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read dataflow spec /nonexistent/x.toml"),
            "{err}"
        );
    }

    #[test]
    fn explain_table_defaults_and_checks() {
        let spec = parse(&format!("{BASE}\n[explain]\n")).unwrap();
        let explain = spec.explain.unwrap();
        assert_eq!((explain.top, explain.rows), (4, ExplainFor::Flagged));
        assert_eq!(explain.text_of("g"), "g");
        let spec = parse(&format!(
            "{BASE}\n[explain]\ntop = 2\nfor = \"all\"\n[explain.text]\ng = \"The g\"\n"
        ))
        .unwrap();
        let explain = spec.explain.unwrap();
        assert_eq!((explain.top, explain.rows), (2, ExplainFor::All));
        assert_eq!(explain.text_of("g"), "The g");
        assert!(parse(BASE).unwrap().explain.is_none());
        for (bad, says) in [
            ("top = 0", "top = 0"),
            ("for = \"some\"", "some"),
            ("[explain.text]\nid = \"x\"", "`id`, which no feature reads"),
            ("[explain.text]\nx = 3", "must be a string"),
            ("color = 1", "color"),
        ] {
            let err = parse(&format!("{BASE}\n[explain]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn monitor_section_is_checked_and_defaults_beside_the_model() {
        let timed = BASE
            .replace(
                "id = \"id\"\n",
                "id = \"id\"\nevent_time = \"t\"\npassthrough = [\"g\"]\n",
            )
            .replace("x = \"float\"", "x = \"float\"\nt = \"timestamp\"");
        let with = |monitor: &str| format!("{timed}\n[monitor]\n{monitor}\n");
        let m = parse(&with("window = \"1h\"\nby = [\"g\"]"))
            .unwrap()
            .monitor
            .unwrap();
        assert_eq!(m.window, 3_600_000_000_000);
        assert_eq!(m.by, vec![0]);
        assert_eq!(m.score_edges.len(), 9);
        assert_eq!(m.reference, Path::new("dataflows/m.reference.json"));
        let err = |text: &str| parse(text).unwrap_err().to_string();
        let e = err(&format!("{BASE}\n[monitor]\nwindow = \"1h\"\n"));
        assert!(e.contains("needs `event_time`"), "{e}");
        let e = err(&with("window = \"1h\"\nby = [\"x\"]"));
        assert!(e.contains("`x` must be in `passthrough`"), "{e}");
        let e = err(&with("window = \"soon\""));
        assert!(e.contains("not a positive duration"), "{e}");
        let e = err(&with("window = \"1h\"\nscore_bins = [0.5, 0.2]"));
        assert!(e.contains("ascending"), "{e}");
        let e = err(&with("window = \"1h\"\nbins = 3"));
        assert!(e.contains("bins"), "{e}");
    }

    #[test]
    fn shipped_specs_load() {
        for name in ["lending_club", "quix_fraud", "lending_club_explain"] {
            let path =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("dataflows/{name}.toml"));
            let spec = Spec::load(&path).unwrap();
            assert_eq!(spec.name, name);
        }
    }
}
