//! The graph: ingest → exchange by id → clean → predict, each stage's plain
//! struct wired into an operator; or one part of it, when the stages run
//! as separate services (`--stages clean`, `--stages predict`).

use std::hash::{Hash, Hasher};

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concat;

use super::clean::Cleaner;
use super::fallible::{fallible, Refused};
use super::ingest::Parser;
use super::pace::Pace;
use super::predict::Predictor;
use super::rows::{RowReader, RowRefusal};
use super::Batches;
use crate::core::fault::Fault;
use crate::core::features::FeatureRow;
use crate::core::record::{DeadLetter, RawRecord, Record};
use crate::core::scored::{Output, Scored};

/// Which stages one run has: all three in one dataflow (the default), or
/// one service of the tutorial's chain, meeting the other at the cleaned topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stages {
    /// ingest → clean → predict.
    #[default]
    All,
    /// ingest → clean: feature rows out.
    Clean,
    /// Feature rows in → predict.
    Predict,
}

/// The stages of a run and the plain struct of each.
pub enum Graph {
    /// ingest → clean → predict; with `cleaned`, the feature rows are
    /// outputs too (the middle topic of a one-process run).
    All {
        /// Raw bytes → typed records.
        parser: Parser,
        /// Typed records → features.
        cleaner: Cleaner,
        /// Features → scores.
        predictor: Predictor,
        /// Also emit every feature row.
        cleaned: bool,
    },
    /// ingest → clean: every feature row is an output.
    Clean {
        /// Raw bytes → typed records.
        parser: Parser,
        /// Typed records → features.
        cleaner: Cleaner,
    },
    /// Feature rows (as the clean stage wrote them) → scores.
    Predict {
        /// Raw bytes → feature rows.
        rows: RowReader,
        /// Features → scores.
        predictor: Predictor,
        /// Called with the fault that stops the run (a row of another spec).
        fail: Box<dyn Fn(Fault)>,
    },
}

/// Builds `graph` on `raw`, returning its outputs and dead letters; `pace`
/// holds each record (a predict stage: each row) until it is due.
pub fn build<'s>(
    raw: Batches<'s, RawRecord>,
    pace: Option<Pace>,
    graph: Graph,
) -> (Batches<'s, Output>, Batches<'s, DeadLetter>) {
    match graph {
        Graph::All {
            parser,
            cleaner,
            predictor,
            cleaned,
        } => {
            let (rows, dead) = ingest_and_clean(raw, pace, parser, cleaner);
            let cleaned = cleaned.then(|| rows.clone().map(Output::Cleaned));
            let scored = predict(rows, predictor).map(Output::Scored);
            match cleaned {
                Some(rows) => (scored.concat(rows), dead),
                None => (scored, dead),
            }
        }
        Graph::Clean { parser, cleaner } => {
            let (rows, dead) = ingest_and_clean(raw, pace, parser, cleaner);
            (rows.map(Output::Cleaned), dead)
        }
        Graph::Predict {
            rows,
            predictor,
            fail,
        } => {
            let (rows, dead) = read_rows(raw, rows, fail);
            let rows = match pace {
                Some(p) => super::pace::pace(rows, p),
                None => rows,
            };
            (predict(rows, predictor).map(Output::Scored), dead)
        }
    }
}

fn ingest_and_clean<'s>(
    raw: Batches<'s, RawRecord>,
    pace: Option<Pace>,
    parser: Parser,
    cleaner: Cleaner,
) -> (Batches<'s, FeatureRow>, Batches<'s, DeadLetter>) {
    let (records, ingest_dead) = ingest(raw, parser);
    let records = match pace {
        Some(p) => super::pace::pace(records, p),
        None => records,
    };
    let (rows, clean_dead) = clean(records, cleaner);
    (rows, ingest_dead.concat(clean_dead))
}

/// A predict stage's input: rows read where they were read (a cleaned topic
/// is keyed by id already). A row of another spec stops the run: `fail` is
/// told, and the stage stops ([`Refused::Stop`]), so nothing of it or after
/// it is delivered or committed (rows module, invariant 1).
pub fn read_rows<'s>(
    raw: Batches<'s, RawRecord>,
    mut reader: RowReader,
    fail: Box<dyn Fn(Fault)>,
) -> (Batches<'s, FeatureRow>, Batches<'s, DeadLetter>) {
    fallible(raw, Pipeline, "ReadRows", move |raw| {
        match reader.read(raw) {
            Ok(row) => Ok(row),
            Err(RowRefusal::Dead(d)) => Err(Refused::Dead(d)),
            Err(RowRefusal::Foreign {
                found,
                expected,
                origin,
            }) => {
                fail(Fault::fatal(format!(
                "{origin} is a feature row of spec {found}, but this predict stage runs spec {expected}: \
                 point it at the cleaned topic its own spec's clean stage writes"
            )));
                Err(Refused::Stop)
            }
        }
    })
}

/// Ingest runs where the bytes were read (no exchange: the id is not known yet).
pub fn ingest<'s>(
    raw: Batches<'s, RawRecord>,
    mut parser: Parser,
) -> (Batches<'s, Record>, Batches<'s, DeadLetter>) {
    fallible(raw, Pipeline, "Ingest", move |r| Ok(parser.parse(r)?))
}

/// Clean runs on the worker that owns the record's id, so later stateful
/// features see every record of an id in one place.
pub fn clean<'s>(
    records: Batches<'s, Record>,
    cleaner: Cleaner,
) -> (Batches<'s, FeatureRow>, Batches<'s, DeadLetter>) {
    let by_id = Exchange::new(|r: &Record| id_hash(&r.id));
    fallible(records, by_id, "Clean", move |r| Ok(cleaner.clean(r)?))
}

/// Predict scores whole batches (timely's containers) at once.
pub fn predict<'s>(rows: Batches<'s, FeatureRow>, mut predictor: Predictor) -> Batches<'s, Scored> {
    rows.unary(Pipeline, "Predict", move |_, _| {
        let mut scored = Vec::new();
        move |input, output| {
            input.for_each(|cap, batch| {
                predictor.score_batch(batch.drain(..), &mut scored);
                output.session(&cap).give_container(&mut scored);
            });
        }
    })
}

/// The worker-independent hash records are exchanged by: FxHash has no
/// per-process random keys, so every process of a cluster agrees.
pub fn id_hash(id: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    id.hash(&mut h);
    // timely routes by the low bits: finish with splitmix64's avalanche so
    // ids that differ in one character still spread evenly.
    let mut z = h.finish();
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_spread_evenly_over_workers() {
        for workers in [2u64, 3, 4, 8] {
            let mut counts = vec![0u32; workers as usize];
            for n in 0..40_000 {
                counts[(super::id_hash(&format!("lc-{n:06}")) % workers) as usize] += 1;
            }
            let even = 40_000 / workers as u32;
            assert!(
                counts.iter().all(|&c| c.abs_diff(even) < even / 20),
                "{workers}: {counts:?}"
            );
        }
    }
}
