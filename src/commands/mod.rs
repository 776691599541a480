//! The subcommands, one module each: turn a command's checked arguments into
//! a job of [`crate::pipeline`] (or a read of [`crate::io`]), and print what
//! a person reads at the end. May import every layer below; `main` calls
//! them. A command never imports another command.

pub mod bench;
pub mod cluster;
pub mod explain;
pub mod features;
pub mod generate;
pub mod ingest;
pub mod monitor;
pub mod passthrough;
pub mod replay;
pub mod run;
pub mod tail;
pub mod verify;
