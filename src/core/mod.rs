//! Plain data: what flows through a run and the rules on it, free of timely,
//! Kafka and the command line.
//!
//! Owns the records ([`record`]), the feature rows between the clean and
//! predict stages and their JSON shape ([`features`]), the scored output, what
//! a sink takes, and its one JSON shape ([`scored`]), the reason codes a
//! scored application may carry ([`reasons`]), where a stream starts and stops and the event-time window
//! ([`position`]), the pacing rule of replays and benchmarks ([`pace`]), the
//! names a run and `verify` must agree on ([`names`]) and the typed runtime
//! fault with its retry hint ([`fault`]), and the rules of window features
//! over event time: lateness, watermarks, groups and exact folds ([`window`]), short sequences kept inline rather than on the heap ([`inline`]), and drift against
//! the training data: reference histograms and the population stability index ([`drift`]), and the process's metrics that `--http` exposes ([`metrics`]). May import only [`crate::spec`] and
//! [`crate::model`].

pub mod drift;
pub mod fault;
pub mod features;
pub mod inline;
pub mod metrics;
pub mod monitor;
pub mod names;
pub mod pace;
pub mod position;
pub mod reasons;
pub mod record;
pub mod scored;
pub mod window;

/// The timely timestamp of every dataflow: an epoch chosen by the source
/// (the unit of progress, and of commits with Kafka).
pub type Epoch = u64;
