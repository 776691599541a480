//! `loanflow monitor`: the model monitor's window reports (`run --monitor`)
//! as a table for a terminal, drift rows marked: `ACT` (worst PSI at or
//! above 0.25) and `watch` (0.1), in red and yellow when stdout is a
//! terminal.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rdkafka::message::Message;

use crate::cli::MonitorArgs;
use crate::core::monitor::{Level, WindowReport};
use crate::io::kafka::PartitionReader;
use crate::pipeline::Control;

/// Runs `loanflow monitor`.
pub fn execute(args: &MonitorArgs, control: &Control) -> Result<()> {
    let reports = match (&args.file, &args.monitor_topic) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str(l).map_err(|e| {
                        anyhow!(
                            "{} line {}: not a window report of run --monitor ({e})",
                            file.display(),
                            i + 1
                        )
                    })
                })
                .collect::<Result<Vec<WindowReport>>>()?
        }
        (None, Some(topic)) => read_topic(args, topic, control)?,
        (None, None) => return Err(anyhow!("give a FILE or --monitor-topic")),
    };
    let colour = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) just ends the table.
    let _ = write!(out, "{}", table(&reports, args.groups, colour));
    Ok(())
}

/// Every message of `topic`, each partition from offset 0 to its end.
fn read_topic(args: &MonitorArgs, topic: &str, control: &Control) -> Result<Vec<WindowReport>> {
    let config = args.kafka.required()?;
    let partitions = config
        .lookup()?
        .partitions(topic)?
        .ok_or_else(|| anyhow!("topic {topic} does not exist (run --monitor-topic creates it)"))?;
    let mut reader =
        PartitionReader::from_start(&config, topic, partitions, "loanflow.monitor", &[])?;
    let mut reports = Vec::new();
    while !reader.all_at_end() && !control.stopped() {
        if let Some(m) = reader.poll(Duration::from_millis(100)) {
            let r: WindowReport = serde_json::from_slice(m.payload().unwrap_or_default())
                .map_err(|e| anyhow!("{topic}: a message that is not a window report ({e})"))?;
            reports.push(r);
        }
    }
    reports.sort_by_key(|r| r.window_start_ms);
    reports.dedup_by_key(|r| r.window_start_ms);
    Ok(reports)
}

/// The table: one row per window (`groups` groups per row), drift marked.
pub fn table(reports: &[WindowReport], groups: usize, colour: bool) -> String {
    let mut s = format!(
        "{:<20} {:>8} {:>7} {:>7}  {:<40} {}\n",
        "window (UTC)", "apps", "flagged", "rate", "highest flag rates", "worst PSI"
    );
    for r in reports {
        let all = r.groups.iter().find(|g| g.group == "all");
        let (apps, flagged, rate) =
            all.map_or((0, 0, None), |g| (g.applications, g.flagged, g.flag_rate));
        let mut by: Vec<(&str, f64)> = r.flag_rates().filter(|(g, _)| *g != "all").collect();
        by.sort_by(|a, b| {
            b.1.partial_cmp(&a.1)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.0.cmp(b.0))
        });
        let by: Vec<String> = by
            .iter()
            .take(groups)
            .map(|(g, rate)| {
                format!(
                    "{} {:.1}%",
                    g.split_once('=').map_or(*g, |(_, v)| v),
                    rate * 100.0
                )
            })
            .collect();
        let (worst, mark) = match r.worst() {
            Some(c) => (
                format!("{} {:.3}", c.column, c.psi.unwrap_or(0.0)),
                match c.level {
                    Level::Act => "ACT",
                    Level::Watch => "watch",
                    _ => "",
                },
            ),
            None => ("-".to_owned(), ""),
        };
        let start = r
            .window_start
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_owned();
        let line = format!(
            "{:<20} {:>8} {:>7} {:>7}  {:<40} {} {}",
            start,
            apps,
            flagged,
            rate.map_or("-".to_owned(), |r| format!("{:.2}%", r * 100.0)),
            by.join(", "),
            worst,
            mark
        );
        let line = line.trim_end();
        match (colour, mark) {
            (true, "ACT") => s.push_str(&format!("\x1b[31m{line}\x1b[0m\n")),
            (true, "watch") => s.push_str(&format!("\x1b[33m{line}\x1b[0m\n")),
            _ => {
                s.push_str(line);
                s.push('\n');
            }
        }
    }
    s
}
