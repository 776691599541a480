//! The graph: ingest → (exchange by id) → clean → predict, as timely operators.
//!
//! ```text
//! raw ──ingest──► records ──(from a topic: exchange by hash(id))──clean──► rows ──predict──► scored
//!        │                                                            │
//!        └──────────────────────► dead letters ◄──────────────────────┘
//! ```
//! A file's records are cleaned where they were read: its stripes share
//! the work out evenly already; a topic's are spread by id, since its
//! partitions may be fewer than the workers ([`graph::Spread`]).
//! The stages never know which edge they run on: they take a stream of
//! [`RawRecord`](crate::core::record::RawRecord)s and give back streams of
//! [`Scored`](crate::core::scored::Scored) and
//! [`DeadLetter`](crate::core::record::DeadLetter).
//! Time is a `u64` epoch chosen by the source ([`Epoch`]). With event time
//! (window features, the monitor), ingest happens in the [`watermark`]
//! operator, which parses each record and judges its lateness in one pass.
//!
//! Operators only: each stage's logic is a plain struct free of timely
//! ([`ingest::Parser`], [`clean::Cleaner`], [`predict::Predictor`]), and this
//! module's [`graph`] wires them into operators, one idea per operator
//! ([`fallible`], [`pace`]). May import
//! [`crate::core`], [`crate::spec`] and [`crate::model`]; never an edge.

pub mod clean;
pub mod fallible;
pub mod graph;
pub mod ingest;
pub mod monitor;
pub mod pace;
pub mod predict;
pub mod rows;
pub mod watermark;
pub mod window;

use timely::dataflow::Stream;

use crate::core::Epoch;

/// A stream of `D` batches at epoch times.
pub type Batches<'s, D> = Stream<'s, Epoch, Vec<D>>;
