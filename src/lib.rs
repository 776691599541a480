//! loanflow: real-time machine learning on streams. Loan applications flow
//! from an edge (a file or a Kafka topic) through a timely dataflow graph —
//! ingest → clean → predict — and leave scored by a native XGBoost scorer.
//!
//! # Layers
//! The modules form layers; each imports only the layers below it (and,
//! within a layer, never in a cycle). `scripts/check_layers` (run by
//! `scripts/test`) reads every `crate::`, `super::` and child path in
//! `src/` against this list and fails on an upward import or a cycle, so
//! this list is the architecture, checked. Bottom to top:
//!
//! ```text
//! layer spec model     the dataflow spec (TOML) and the XGBoost scorer
//! layer core           plain data: records, scored output, positions, pacing, names, faults
//! layer dataflow       timely operators: ingest → clean → predict (and pace)
//! layer io             edges: files, Kafka (config, source, sink, readers), exactly once
//! layer cli            argument types, parsed into checked values and configuration
//! layer pipeline       jobs: a dataflow run (load, plan, worker, restart, summary), produce, copy, generate
//! layer commands       one module per subcommand
//! ```
//!
//! The binary (`main.rs`) sits on top: it parses the flags, installs the
//! signal handlers and the panic hook, runs a command and is the only code
//! that exits the process.
//!
//! Module docs state their invariants and cite, by intra-doc link, the
//! private items that uphold them: the docs are for the people who change
//! this code (`cargo doc --document-private-items`). `scripts/test` builds
//! them with warnings denied, so a citation that no longer resolves fails.

// The citations above name private items on purpose.
#![allow(rustdoc::private_intra_doc_links)]

pub mod cli;
pub mod commands;
pub mod core;
pub mod dataflow;
pub mod io;
pub mod model;
pub mod pipeline;
pub mod spec;
