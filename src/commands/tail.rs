//! `loanflow tail`: scored applications from a topic as they arrive, one
//! line each (the tutorial's stream reader).

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use rdkafka::message::Message;
use rdkafka::Offset;

use crate::cli::TailArgs;
use crate::io::kafka::{PartitionReader, START};
use crate::pipeline::Control;

/// Runs `loanflow tail` until `-n` messages, a signal, or a closed stdout.
pub fn execute(args: &TailArgs, control: &Control) -> Result<()> {
    let config = args.kafka.required()?;
    let partitions = config.ensure_topic(&args.topic, None)?;
    let start = if args.from_beginning {
        START
    } else {
        Offset::End
    };
    // tail never commits, so it never moves the group.
    let mut reader = PartitionReader::open(
        &config,
        &args.topic,
        0..partitions,
        start,
        "loanflow.tail",
        &[],
    )?;
    let stdout = std::io::stdout();
    let mut seen = 0u64;
    while !control.stopped() && args.count.is_none_or(|n| seen < n) {
        let Some(message) = reader.poll(Duration::from_millis(100)) else {
            continue;
        };
        seen += 1;
        let payload = message.payload().unwrap_or_default();
        let line = if args.json {
            String::from_utf8_lossy(payload).into_owned()
        } else {
            describe(payload)
        };
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break; // the reader went away (e.g. `| head`)
        }
    }
    Ok(())
}

/// One line for a person: id, score, flag (or the raw value if it is not a scored application).
fn describe(payload: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(v) if v.get("score").is_some() => format!(
            "{:<16} score {:<12} {}",
            v["id"].as_str().unwrap_or("?"),
            v["score"],
            if v["flagged"].as_bool() == Some(true) {
                "FLAGGED"
            } else {
                "ok"
            }
        ),
        _ => String::from_utf8_lossy(payload).into_owned(),
    }
}
