//! Jobs: what the commands run. Above all a dataflow run ([`run()`]): load
//! and check everything it needs (spec, model, input, outputs) before any
//! worker starts — so set-up errors are one clear line — then execute the
//! dataflow on timely workers and return a [`Summary`]. Also the jobs that
//! need no dataflow: producing a file into a topic ([`produce`]), copying a
//! topic ([`copy`]), resampling a stream ([`generate`]), explaining one
//! application ([`explain`](mod@explain)).
//!
//! Owns [`load`] (spec + model), [`plan`] (source and sink, decided once),
//! [`run`](mod@run) (the run itself), [`control`] (what the process hands a job),
//! [`worker`] (one timely worker), [`idle`] (how an idle worker waits),
//! [`restart`] (starting again after a fault a restart helps), [`summary`],
//! [`cluster`] (a process of a timely cluster: membership, start-up check,
//! counts) and [`progress`] (bars, and the watcher that says when a live run
//! has caught up and measures how long a run was busy). May import
//! [`crate::cli`]'s argument types, the edges and below; never a command. Its modules import each other directly, never through this
//! module's re-exports (which are for the commands).
//!
//! With `--processes N` a run is one process of a timely cluster; see
//! [`cluster`] for what changes (a start-up check, per-process output files,
//! a cluster-wide summary from process 0).

pub mod backfill;
pub mod cluster;
pub mod control;
pub mod copy;
pub mod explain;
pub mod generate;
pub mod idle;
pub mod load;
pub mod plan;
pub mod produce;
pub mod progress;
pub mod restart;
pub mod run;
pub mod summary;
pub mod worker;

pub use control::{Control, Halt, Interrupted};
pub use restart::run_restarting;
pub use run::{run, run_paced, RunFault};
pub use summary::Summary;
