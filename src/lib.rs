//! loanflow: real-time machine learning on streams. Loan applications flow
//! from an edge (a file or a Kafka topic) through a timely dataflow graph —
//! ingest → clean → predict — and leave scored by a native XGBoost scorer.
//!
//! Modules follow the record's path: [`io`] (edges), [`dataflow`] (the three
//! stages and the graph), [`spec`] (the declarative clean stage), [`model`]
//! (the scorer), [`record`] (what flows between them); [`cluster`] runs the
//! same on several processes; [`verify`] checks a Kafka run's outputs
//! against its input.

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod dataflow;
pub mod failpoints;
pub mod generate;
pub mod io;
pub mod model;
pub mod produce;
pub mod record;
pub mod replay;
pub mod run;
pub mod spec;
pub mod verify;
