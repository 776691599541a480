//! `loanflow features`: the training set, made by the dataflow itself. The
//! clean stage runs as `run --stages clean` does (window features and
//! watermarks included) with the label carried through, into a file of
//! feature rows; those are then sorted by event time and id and written as
//! CSV. So training reads every feature from the one implementation that
//! serves it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::run::{run, with_label_through};
use super::{Control, Summary};
use crate::cli::FeaturesArgs;
use crate::core::features::FeatureRow;
use crate::core::record::{format_time, Origin, RawRecord, Value};
use crate::dataflow::rows::{RowReader, RowRefusal};
use crate::spec::Spec;

/// What a backfill wrote.
pub struct Backfill {
    /// The clean run's summary (records read, dead letters, time).
    pub run: Summary,
    /// Rows written to the CSV.
    pub rows: u64,
    /// The CSV.
    pub path: PathBuf,
}

/// Makes the backfill `args` describe.
pub fn backfill(args: &FeaturesArgs, control: &Control) -> Result<Backfill> {
    let rows_path = sibling(&args.output, ".rows.jsonl");
    let run_args = args.run_args(rows_path.clone());
    let summary = run(&run_args, control)?;
    if summary.unfinished {
        return Ok(Backfill {
            run: summary,
            rows: 0,
            path: args.output.clone(),
        });
    }
    let spec = with_label_through(&Spec::load(&args.pipeline.dataflow)?);
    let mut rows = read_rows(&spec, &rows_path)?;
    std::fs::remove_file(&rows_path).ok();
    rows.sort_by(|a, b| (a.event_time, &a.id).cmp(&(b.event_time, &b.id)));
    let written = write_csv(&spec, &rows, &args.output)?;
    Ok(Backfill {
        run: summary,
        rows: written,
        path: args.output.clone(),
    })
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The feature rows a clean run wrote to `path`, in file order.
pub fn read_rows(spec: &Spec, path: &Path) -> Result<Vec<FeatureRow>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = RowReader::new(spec, usize::MAX);
    let origin: Arc<str> = Arc::from(path.display().to_string());
    let mut rows = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let raw = RawRecord {
            bytes: line.into_bytes(),
            origin: Origin::File {
                path: Arc::clone(&origin),
                line: n as u64 + 1,
            },
            read_at: 0,
        };
        match reader.read(raw) {
            Ok(row) => rows.push(row),
            Err(RowRefusal::Dead(d)) => anyhow::bail!("{}: {}", d.origin, d.reason),
            Err(RowRefusal::Foreign { found, .. }) => {
                anyhow::bail!("{} holds rows of spec {found}", path.display())
            }
        }
    }
    Ok(rows)
}

/// Writes the CSV: id, event time, label, then the features in model order.
fn write_csv(spec: &Spec, rows: &[FeatureRow], path: &Path) -> Result<u64> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = csv::Writer::from_writer(std::io::BufWriter::new(file));
    let mut header = vec![spec.columns[spec.id].name.clone()];
    header.extend(spec.event_time.map(|e| spec.columns[e].name.clone()));
    let label = spec.label.as_ref().and_then(|l| {
        let column = spec.column(&l.column)?;
        let at = spec.passthrough.iter().position(|&p| p == column)?;
        header.push(l.column.clone());
        Some((at, l.positive.clone()))
    });
    header.extend(spec.feature_names());
    out.write_record(&header)?;
    let mut record: Vec<String> = Vec::with_capacity(header.len());
    for row in rows {
        record.clear();
        record.push(row.id.clone());
        if spec.event_time.is_some() {
            record.push(row.event_time.map(format_time).unwrap_or_default());
        }
        if let Some((at, positive)) = &label {
            record.push(match &row.passthrough[*at] {
                Value::Null => String::new(),
                Value::Str(s) if s == positive => "1".to_owned(),
                Value::Int(n) if n.to_string() == *positive => "1".to_owned(),
                _ => "0".to_owned(),
            });
        }
        record.extend(row.features.iter().map(|f| {
            if f.is_nan() {
                String::new()
            } else {
                f.to_string()
            }
        }));
        out.write_record(&record)?;
    }
    let mut inner = out
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error()))?;
    inner
        .flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(rows.len() as u64)
}
