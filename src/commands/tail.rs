//! `loanflow tail`: scored applications from a topic as they arrive, one
//! line each (the tutorial's stream reader).
//!
//! A topic that does not exist yet is waited for (said once on stderr, its
//! metadata polled; tail never creates it), then read from its first
//! offset: everything in a topic created after tail started is new to it.
//! `-n COUNT`, a signal (SIGINT/SIGTERM) and a closed stdout all end it
//! with success; only a set-up error (an unreachable broker, a bad flag)
//! fails it.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use rdkafka::message::Message;
use rdkafka::Offset;

use crate::cli::TailArgs;
use crate::io::kafka::{KafkaConfig, PartitionReader, START};
use crate::pipeline::Control;

/// How often a missing topic's metadata is asked for.
const TOPIC_POLL: Duration = Duration::from_millis(500);

/// Runs `loanflow tail` until `-n` messages, a signal, or a closed stdout.
pub fn execute(args: &TailArgs, control: &Control) -> Result<()> {
    let config = args.kafka.required()?;
    let Some((partitions, waited)) = wait_for_topic(&config, &args.topic, control)? else {
        return Ok(()); // stopped while waiting
    };
    let start = if args.from_beginning || waited {
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

/// The partition count of `topic`, and whether it had to be waited for;
/// `None` if a signal stopped the wait.
fn wait_for_topic(
    config: &KafkaConfig,
    topic: &str,
    control: &Control,
) -> Result<Option<(i32, bool)>> {
    let lookup = config.lookup()?;
    if let Some(partitions) = lookup.partitions(topic)? {
        return Ok(Some((partitions, false)));
    }
    eprintln!("loanflow: waiting for topic {topic} to be created (Ctrl-C stops)");
    loop {
        let next = Instant::now() + TOPIC_POLL;
        while Instant::now() < next {
            if control.stopped() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(partitions) = lookup.partitions(topic)? {
            tracing::info!(topic, partitions, "topic created");
            return Ok(Some((partitions, true)));
        }
    }
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
