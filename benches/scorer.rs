//! Scorer and clean-stage throughput on the real data and the real model.
//!
//!     cargo bench --bench scorer
//!
//! Compare with XGBoost's own `inplace_predict` and `pred_contribs` (one
//! thread) on the same rows:
//!     .venv-models/bin/python models/bench_xgboost.py

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use loanflow::core::record::{Format, Origin, RawRecord, Record};
use loanflow::dataflow::clean::Cleaner;
use loanflow::dataflow::ingest::Parser;
use loanflow::model::{Explainer, Model};
use loanflow::spec::Spec;

fn load() -> (Spec, Model, Vec<RawRecord>, Vec<Record>, Vec<f32>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let spec = Spec::load(&root.join("dataflows/lending_club.toml")).unwrap();
    let model = Model::load(&spec.model).unwrap();
    let data = std::fs::read(root.join("data/lending_club.csv")).unwrap();
    let mut lines = data.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header = lines.next().unwrap();
    let mut parser = Parser::new(&spec, Format::Csv, Some(header), "bench", 1 << 16).unwrap();
    let raw: Vec<RawRecord> = lines
        .enumerate()
        .map(|(i, l)| RawRecord {
            read_at: 0,
            bytes: l.to_vec(),
            origin: Origin::File {
                path: "bench".into(),
                line: i as u64 + 2,
            },
        })
        .collect();
    let records: Vec<Record> = raw
        .iter()
        .map(|r| parser.parse(r.clone()).unwrap())
        .collect();
    let cleaner = Cleaner::new(&spec);
    let mut features = Vec::new();
    for r in &records {
        cleaner.features_into(&r.values, &mut features).unwrap();
    }
    (spec, model, raw, records, features)
}

fn scorer(c: &mut Criterion) {
    let (spec, model, raw, records, features) = load();
    let forest = &model.forest;
    let width = forest.num_features();
    let rows = features.len() / width;
    let mut out = vec![0.0f32; rows];

    let mut group = c.benchmark_group("scorer");
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("batch (9,857 rows)", |b| {
        b.iter(|| forest.predict_batch(&features, &mut out))
    });
    group.bench_function("one row at a time (9,857 rows)", |b| {
        b.iter(|| {
            for (row, o) in features.chunks_exact(width).zip(out.iter_mut()) {
                *o = forest.predict_row(row);
            }
        })
    });
    group.finish();

    // TreeSHAP contributions (reason codes), one thread, every row.
    let mut group = c.benchmark_group("explain");
    group.throughput(Throughput::Elements(rows as u64));
    let mut scratch = Explainer::new();
    let mut contributions = vec![0.0f32; width + 1];
    group.bench_function("contributions (9,857 rows)", |b| {
        b.iter(|| {
            for row in features.chunks_exact(width) {
                forest.contributions_with(&mut scratch, row, &mut contributions);
            }
        })
    });
    // The fast walk (per-leaf tables, built before timing).
    forest.fast_tables();
    group.bench_function("fast contributions (9,857 rows)", |b| {
        b.iter(|| {
            for row in features.chunks_exact(width) {
                forest.fast_contributions_with(&mut scratch, row, &mut contributions);
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("stages");
    group.throughput(Throughput::Elements(rows as u64));
    let cleaner = Cleaner::new(&spec);
    let mut buf = Vec::with_capacity(features.len());
    group.bench_function("clean (record → features)", |b| {
        b.iter(|| {
            buf.clear();
            for r in &records {
                cleaner.features_into(&r.values, &mut buf).unwrap();
            }
        })
    });
    let header = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/lending_club.csv"),
    )
    .unwrap();
    let header = header.lines().next().unwrap().as_bytes().to_vec();
    let mut parser = Parser::new(&spec, Format::Csv, Some(&header), "bench", 1 << 16).unwrap();
    group.bench_function("ingest (CSV line → record)", |b| {
        b.iter_batched(
            || raw.clone(),
            |raw| {
                for r in raw {
                    std::hint::black_box(parser.parse(r).unwrap());
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, scorer);
criterion_main!(benches);
