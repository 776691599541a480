//! The ingest stage: raw bytes from an edge → a typed [`Record`], following
//! the spec's `[columns]`. Anything that is not a well-formed record — bad
//! UTF-8, broken CSV quoting, a wrong field count, a value of the wrong type,
//! an oversized record — becomes a [`DeadLetter`] naming the column and value.
//!
//! One parser per worker, reused for every record: CSV lines are split with
//! `csv-core` (no per-record allocation for the split), JSON objects are read
//! straight into the spec's column slots.

use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::core::record::{
    parse_value, DeadLetter, Format, RawRecord, Record, Stage, Value, ValueError,
};
use crate::spec::{Column, ColumnType, Spec};

/// Default for `--max-record-bytes`: far above a loan application (~300 bytes
/// of CSV, ~700 of JSON), far below what would hurt memory.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 * 1024;

/// Problems with the input as a whole (not one record): reported before the
/// run starts, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The CSV header lacks a column the spec reads and requires.
    #[error("{source_name}: the CSV header has no column `{column}`, which dataflow `{spec}` reads (add it, or give the spec's column `missing = [\"\"]` to allow it to be absent)")]
    MissingColumn {
        /// The input's name, for the message (a path or a topic).
        source_name: String,
        /// The missing column.
        column: String,
        /// The dataflow spec's name.
        spec: String,
    },
    /// There is no header line (empty input), or it is not UTF-8 or not CSV.
    #[error("{source_name}: the CSV header is not valid: {message}")]
    Invalid {
        /// The input's name, for the message (a path or a topic).
        source_name: String,
        /// What is wrong with the header.
        message: String,
    },
}

/// Turns raw records into typed ones for one spec and input format.
pub struct Parser {
    columns: Vec<Column>,
    id: usize,
    event_time: Option<usize>,
    max_record_bytes: usize,
    format: FormatParser,
}

enum FormatParser {
    Csv {
        /// For each spec column, its field index in the CSV, or None if absent (nullable).
        field_of: Vec<Option<usize>>,
        fields: usize,
        reader: Box<csv_core::Reader>,
        buf: Vec<u8>,
        ends: Vec<usize>,
    },
    Json {
        slot_of: FxHashMap<String, usize>,
    },
}

impl Parser {
    /// A parser for CSV with the given header line, or for JSON Lines (`header` unused).
    pub fn new(
        spec: &Spec,
        format: Format,
        header: Option<&[u8]>,
        source_name: &str,
        max_record_bytes: usize,
    ) -> Result<Parser, HeaderError> {
        let format = match format {
            Format::Jsonl => FormatParser::Json {
                slot_of: spec
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name.clone(), i))
                    .collect(),
            },
            Format::Csv => {
                let invalid = |message: String| HeaderError::Invalid {
                    source_name: source_name.to_owned(),
                    message,
                };
                let header = header.ok_or_else(|| invalid("the input is empty".into()))?;
                let header = std::str::from_utf8(header).map_err(|e| invalid(e.to_string()))?;
                let mut names = Vec::new();
                split_csv(&mut csv_core::Reader::new(), header.as_bytes(), &mut |f| {
                    names.push(String::from_utf8_lossy(f).trim().to_owned())
                });
                let mut field_of = Vec::with_capacity(spec.columns.len());
                for column in &spec.columns {
                    let pos = names.iter().position(|n| *n == column.name);
                    if pos.is_none() && !column.nullable() {
                        return Err(HeaderError::MissingColumn {
                            source_name: source_name.to_owned(),
                            column: column.name.clone(),
                            spec: spec.name.clone(),
                        });
                    }
                    field_of.push(pos);
                }
                FormatParser::Csv {
                    field_of,
                    fields: names.len(),
                    reader: Box::new(csv_core::Reader::new()),
                    buf: Vec::new(),
                    ends: Vec::new(),
                }
            }
        };
        Ok(Parser {
            columns: spec.columns.clone(),
            id: spec.id,
            event_time: spec.event_time,
            max_record_bytes,
            format,
        })
    }

    /// A JSON Lines parser over `columns` (a selection of a spec's, with the
    /// id and event-time column at `id` and `event_time`): how the predict
    /// stage reads the columns a feature row carries.
    pub fn json_columns(
        columns: Vec<Column>,
        id: usize,
        event_time: Option<usize>,
        max_record_bytes: usize,
    ) -> Parser {
        Parser {
            format: FormatParser::Json {
                slot_of: columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name.clone(), i))
                    .collect(),
            },
            columns,
            id,
            event_time,
            max_record_bytes,
        }
    }

    /// Parses one raw record; a failure is a dead letter carrying the raw bytes.
    pub fn parse(&mut self, raw: RawRecord) -> Result<Record, DeadLetter> {
        match self.parse_values(&raw.bytes) {
            Ok(values) => {
                let id = match &values[self.id] {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => {
                        return Err(dead(
                            raw,
                            format!("id column has no usable value ({other:?})"),
                        ))
                    }
                };
                let event_time = self.event_time.and_then(|i| match values[i] {
                    Value::Time(t) => Some(t),
                    _ => None,
                });
                Ok(Record {
                    id,
                    event_time,
                    values,
                    raw: raw.bytes,
                    origin: raw.origin,
                    read_at: raw.read_at,
                })
            }
            Err(Refusal(reason)) => Err(dead(raw, reason)),
        }
    }

    fn parse_values(&mut self, bytes: &[u8]) -> Result<Vec<Value>, Refusal> {
        if bytes.len() > self.max_record_bytes {
            return Err(Refusal(format!(
                "record is {} bytes, over the limit of {} (raise --max-record-bytes if it is genuine)",
                bytes.len(),
                self.max_record_bytes
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format!("not UTF-8 (invalid byte at offset {})", e.valid_up_to()))?;
        if text.trim().is_empty() {
            return Err(Refusal::from("empty record"));
        }
        let columns = &self.columns;
        match &mut self.format {
            FormatParser::Csv {
                field_of,
                fields,
                reader,
                buf,
                ends,
            } => {
                ends.clear();
                let quotes = memchr::memchr_iter(b'"', text.as_bytes()).count();
                let fields_text: &str = if quotes == 0 {
                    // Fast path, most lines: no quoting, fields are the text between commas.
                    ends.extend(memchr::memchr_iter(b',', text.as_bytes()));
                    ends.push(text.len());
                    text
                } else {
                    if quotes % 2 == 1 {
                        return Err(Refusal::from("broken CSV quoting: a quote is not closed"));
                    }
                    // Unquote with csv-core into `buf`; each end is then a field's end.
                    buf.clear();
                    split_csv(reader, text.as_bytes(), &mut |f| {
                        buf.extend_from_slice(f);
                        ends.push(buf.len());
                    });
                    std::str::from_utf8(buf).map_err(|e| e.to_string())?
                };
                if ends.len() != *fields {
                    return Err(Refusal(format!(
                        "expected {} fields (as in the header), found {}",
                        fields,
                        ends.len()
                    )));
                }
                // In the fast path each end is a comma, so a field starts one byte later.
                let skip = usize::from(quotes == 0);
                let mut values = Vec::with_capacity(columns.len());
                for (column, field) in columns.iter().zip(field_of.iter()) {
                    let value = match *field {
                        Some(f) => {
                            let start = if f == 0 { 0 } else { ends[f - 1] + skip };
                            // Split at ASCII bytes, so these are char boundaries.
                            parse_value(column, &fields_text[start..ends[f]])
                                .map_err(|e| e.to_string())?
                        }
                        None => Value::Null,
                    };
                    values.push(value);
                }
                Ok(values)
            }
            FormatParser::Json { slot_of } => {
                let mut slots: Vec<Option<Value>> = vec![None; columns.len()];
                let mut de = serde_json::Deserializer::from_str(text);
                JsonRecord {
                    columns,
                    slot_of,
                    slots: &mut slots,
                }
                .deserialize(&mut de)
                .map_err(|e| json_reason(&e))?;
                de.end()
                    .map_err(|e| format!("not a single JSON object: {e}"))?;
                columns
                    .iter()
                    .zip(slots)
                    .map(|(column, slot)| match slot {
                        Some(v) => Ok(v),
                        None if column.nullable() => Ok(Value::Null),
                        None => Err(ValueError::MissingColumn {
                            column: column.name.clone(),
                        }
                        .to_string()
                        .into()),
                    })
                    .collect()
            }
        }
    }
}

/// Why ingest refuses one record: the reason its dead letter carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal(String);

impl From<String> for Refusal {
    fn from(reason: String) -> Refusal {
        Refusal(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Refusal {
        Refusal(reason.to_owned())
    }
}

fn dead(raw: RawRecord, reason: String) -> DeadLetter {
    DeadLetter {
        at: None,
        raw: raw.bytes,
        stage: Stage::Ingest,
        reason,
        origin: raw.origin,
    }
}

/// Splits one CSV record into fields with csv-core, calling `field` for each.
fn split_csv(reader: &mut csv_core::Reader, mut input: &[u8], field: &mut dyn FnMut(&[u8])) {
    use csv_core::ReadFieldResult;
    let mut out = [0u8; 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let (result, read, written) = reader.read_field(input, &mut out);
        input = &input[read..];
        match result {
            ReadFieldResult::OutputFull => pending.extend_from_slice(&out[..written]),
            ReadFieldResult::Field { record_end } => {
                if pending.is_empty() {
                    field(&out[..written]);
                } else {
                    pending.extend_from_slice(&out[..written]);
                    field(&pending);
                    pending.clear();
                }
                if record_end {
                    break;
                }
            }
            ReadFieldResult::InputEmpty => {
                // Signal the end of input so the last field is terminated.
                pending.extend_from_slice(&out[..written]);
            }
            ReadFieldResult::End => break,
        }
    }
    reader.reset();
}

/// A JSON scalar as found in the input, before the column's type is applied.
enum Scalar<'a> {
    Null,
    Bool,
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Nested,
}

fn typed(column: &Column, scalar: Scalar<'_>) -> Result<Value, ValueError> {
    let wrong = |found: &'static str| ValueError::WrongJsonType {
        column: column.name.clone(),
        expected: match column.ty {
            ColumnType::String => "a string",
            ColumnType::Int => "an integer",
            ColumnType::Float => "a number",
            ColumnType::Timestamp => "an RFC 3339 time string",
        },
        found,
    };
    match (scalar, column.ty) {
        (Scalar::Null, _) if column.nullable() => Ok(Value::Null),
        (Scalar::Null, _) => Err(ValueError::Empty {
            column: column.name.clone(),
        }),
        (Scalar::Str(s), _) => parse_value(column, &s),
        (Scalar::Int(i), ColumnType::Int) => Ok(Value::Int(i)),
        (Scalar::Int(i), ColumnType::Float) => Ok(Value::Float(i as f64)),
        (Scalar::Int(i), ColumnType::String) => Ok(Value::Str(i.to_string())),
        (Scalar::Float(f), ColumnType::Float) => Ok(Value::Float(f)),
        (Scalar::Float(f), ColumnType::Int) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Ok(Value::Int(f as i64))
        }
        (Scalar::Float(f), ColumnType::Int) => Err(ValueError::NotInt {
            column: column.name.clone(),
            value: f.to_string(),
        }),
        (Scalar::Float(f), ColumnType::String) => Ok(Value::Str(f.to_string())),
        (Scalar::Int(_) | Scalar::Float(_), ColumnType::Timestamp) => Err(wrong("a number")),
        (Scalar::Bool, _) => Err(wrong("a boolean")),
        (Scalar::Nested, _) => Err(wrong("an object or array")),
    }
}

/// Reads a JSON object straight into the spec's column slots.
struct JsonRecord<'s> {
    columns: &'s [Column],
    slot_of: &'s FxHashMap<String, usize>,
    slots: &'s mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for JsonRecord<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for JsonRecord<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with one field per column")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.slot_of.get(key.as_ref()) {
                Some(&slot) => {
                    let scalar: ScalarOf = map.next_value()?;
                    let value = typed(&self.columns[slot], scalar.0).map_err(A::Error::custom)?;
                    if self.slots[slot].replace(value).is_some() {
                        return Err(A::Error::custom(format!("field `{key}` appears twice")));
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct ScalarOf<'a>(Scalar<'a>);

impl<'de> serde::Deserialize<'de> for ScalarOf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ScalarOf<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(ScalarOf(Scalar::Null))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ScalarOf(Scalar::Bool))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ScalarOf(Scalar::Int(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(|v| ScalarOf(Scalar::Int(v)))
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ScalarOf(Scalar::Float(v)))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(ScalarOf(Scalar::Str(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ScalarOf(Scalar::Str(Cow::Owned(v.to_owned()))))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ScalarOf(Scalar::Nested))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ScalarOf(Scalar::Nested))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON error as a reason a person can act on (without serde's position
/// noise for our own typed errors).
fn json_reason(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            let text = e.to_string();
            match text.rfind(" at line ") {
                Some(i) => text[..i].to_owned(),
                None => text,
            }
        }
        Category::Syntax | Category::Eof => format!("not valid JSON: {e}"),
        Category::Io => format!("unreadable JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Origin;
    use std::path::Path;

    const SPEC: &str = r#"
name = "t"
model = "m.json"
id = "id"
event_time = "at"
columns = { id = "string", at = "timestamp", x = "float", n = "int", g = { type = "string", missing = [""] } }
features = [{ kind = "numeric", column = "x" }]
"#;

    /// Each input is a dead letter of the ingest stage, with the input as
    /// its raw bytes and a reason containing the expected text.
    fn assert_refused(p: &mut Parser, cases: &[(&[u8], &str)]) {
        for &(input, reason) in cases {
            let dl = p.parse(raw(input)).unwrap_err();
            assert!(
                dl.reason.contains(reason),
                "{:?}: {}",
                String::from_utf8_lossy(input),
                dl.reason
            );
            assert_eq!(dl.raw, input);
            assert_eq!(dl.stage, Stage::Ingest);
        }
    }

    fn spec() -> Spec {
        Spec::parse(Path::new("t.toml"), SPEC).unwrap()
    }

    fn raw(s: &[u8]) -> RawRecord {
        RawRecord {
            read_at: 0,
            bytes: s.to_vec(),
            origin: Origin::File {
                path: "in".into(),
                line: 2,
            },
        }
    }

    fn csv() -> Parser {
        Parser::new(&spec(), Format::Csv, Some(b"id,x,n,g,at"), "in", 1000).unwrap()
    }

    #[test]
    fn csv_record_in_any_column_order() {
        let r = csv().parse(raw(b"a1,1.5,7,,2016-01-01T00:00:00Z")).unwrap();
        assert_eq!(r.id, "a1");
        assert_eq!(r.event_time, Some(1_451_606_400_000_000_000));
        assert_eq!(
            r.values,
            vec![
                Value::Str("a1".into()),
                Value::Time(1_451_606_400_000_000_000),
                Value::Float(1.5),
                Value::Int(7),
                Value::Null
            ]
        );
    }

    #[test]
    fn csv_quoted_fields() {
        let r = csv()
            .parse(raw(b"\"a,1\",\"2\",3,\"x \"\"y\"\"\",2016-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(r.id, "a,1");
        assert_eq!(r.values[4], Value::Str("x \"y\"".into()));
    }

    #[test]
    fn csv_bad_records_are_dead_letters_with_reasons() {
        let mut p = csv();
        let cases: &[(&[u8], &str)] = &[
            (b"a1,1.5,7,,", "column `at` is empty"),
            (
                b"a1,abc,7,,2016-01-01T00:00:00Z",
                "column `x`: `abc` is not a finite number",
            ),
            (
                b"a1,1.5,7.5,,2016-01-01T00:00:00Z",
                "column `n`: `7.5` is not an integer",
            ),
            (b"a1,1.5,7", "expected 5 fields (as in the header), found 3"),
            (b"\"a1,1.5,7,,2016-01-01T00:00:00Z", "quote is not closed"),
            (b"", "empty record"),
            (b"a1,\xff,7,,x", "not UTF-8"),
        ];
        assert_refused(&mut p, cases);
    }

    #[test]
    fn oversized_record_is_refused() {
        let mut p = csv();
        let big = vec![b'x'; 1001];
        assert!(p
            .parse(raw(&big))
            .unwrap_err()
            .reason
            .contains("over the limit of 1000"));
    }

    #[test]
    fn csv_header_must_have_required_columns() {
        let err = Parser::new(&spec(), Format::Csv, Some(b"id,x,at"), "in.csv", 1000)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no column `n`"), "{err}");
        // Nullable columns may be absent.
        let mut p = Parser::new(&spec(), Format::Csv, Some(b"id,x,n,at"), "in.csv", 1000).unwrap();
        assert_eq!(
            p.parse(raw(b"a,1,2,2016-01-01T00:00:00Z")).unwrap().values[4],
            Value::Null
        );
    }

    #[test]
    fn json_records() {
        let mut p = Parser::new(&spec(), Format::Jsonl, None, "in", 1000).unwrap();
        let r = p
            .parse(raw(
                br#"{"id":"a1","x":2,"n":3.0,"at":"2016-01-01T00:00:00Z","extra":[1]}"#,
            ))
            .unwrap();
        assert_eq!(r.values[2], Value::Float(2.0));
        assert_eq!(r.values[3], Value::Int(3));
        assert_eq!(r.values[4], Value::Null);
        let r = p
            .parse(raw(
                br#"{"id":"a\"1","x":"2.5","n":"3","g":null,"at":"2016-01-01T00:00:00Z"}"#,
            ))
            .unwrap();
        assert_eq!(r.id, "a\"1");
        assert_eq!(r.values[2], Value::Float(2.5));

        let cases: &[(&[u8], &str)] = &[
            (br#"{"id":"a","x":1,"n":1}"#, "column `at` is missing"),
            (
                br#"{"id":"a","x":true,"n":1,"at":"2016-01-01T00:00:00Z"}"#,
                "column `x`: expected a number, found a boolean",
            ),
            (
                br#"{"id":"a","x":1,"n":1.5,"at":"2016-01-01T00:00:00Z"}"#,
                "`1.5` is not an integer",
            ),
            (
                br#"{"id":"a","x":null,"n":1,"at":"2016-01-01T00:00:00Z"}"#,
                "column `x` is empty",
            ),
            (br#"{"id":"a""#, "not valid JSON"),
            (br#"[1,2]"#, "a JSON object"),
            (
                br#"{"id":"a","x":1,"n":1,"at":"2016-01-01T00:00:00Z"} {}"#,
                "not a single JSON object",
            ),
            (
                br#"{"id":"a","id":"b","x":1,"n":1,"at":"2016-01-01T00:00:00Z"}"#,
                "appears twice",
            ),
        ];
        assert_refused(&mut p, cases);
    }
}
