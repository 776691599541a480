//! The graph: ingest → exchange by id → clean → predict, each stage's plain
//! struct wired into an operator.

use std::hash::{Hash, Hasher};

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Concat;

use super::clean::{Cleaner, FeatureRow};
use super::fallible::fallible;
use super::ingest::Parser;
use super::pace::Pace;
use super::predict::Predictor;
use super::Batches;
use crate::core::record::{DeadLetter, RawRecord, Record};
use crate::core::scored::Scored;

/// Builds the three stages on `raw`, returning scored applications and dead letters.
pub fn build<'s>(
    raw: Batches<'s, RawRecord>,
    pace: Option<Pace>,
    parser: Parser,
    cleaner: Cleaner,
    predictor: Predictor,
) -> (Batches<'s, Scored>, Batches<'s, DeadLetter>) {
    let (records, ingest_dead) = ingest(raw, parser);
    let records = match pace {
        Some(p) => super::pace::pace(records, p),
        None => records,
    };
    let (rows, clean_dead) = clean(records, cleaner);
    let scored = predict(rows, predictor);
    (scored, ingest_dead.concat(clean_dead))
}

/// Ingest runs where the bytes were read (no exchange: the id is not known yet).
pub fn ingest<'s>(
    raw: Batches<'s, RawRecord>,
    mut parser: Parser,
) -> (Batches<'s, Record>, Batches<'s, DeadLetter>) {
    fallible(raw, Pipeline, "Ingest", move |r| parser.parse(r))
}

/// Clean runs on the worker that owns the record's id, so later stateful
/// features see every record of an id in one place.
pub fn clean<'s>(
    records: Batches<'s, Record>,
    cleaner: Cleaner,
) -> (Batches<'s, FeatureRow>, Batches<'s, DeadLetter>) {
    let by_id = Exchange::new(|r: &Record| id_hash(&r.id));
    fallible(records, by_id, "Clean", move |r| cleaner.clean(r))
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
