//! Replay pacing inside the dataflow: holds each typed record until its event
//! time is due (`--speed`) and drops records outside the event-time window
//! (`--from`/`--until`). Sits between ingest and clean when a file is
//! replayed straight into the pipeline; a plain run has no such operator.
//!
//! Every worker paces against the same origin (the window's start, or the
//! first event time of the input), so workers reading different parts of a
//! file release their records when the replayed history reaches them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::dataflow::{Batches, Epoch};
use crate::record::{now_ns, Record};
use crate::replay::{Speed, Window};

/// How a replay is paced.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub speed: Speed,
    /// Records per second per worker, instead of event time.
    pub rate: Option<f64>,
    pub window: Window,
    /// The event time (ns) that is replayed at the start.
    pub origin: i64,
}

impl Pace {
    /// When a record with event time `t` is due, relative to `start`.
    fn due(&self, start: Instant, t: Option<i64>, index: u64) -> Instant {
        if let Some(rate) = self.rate {
            return start + Duration::from_secs_f64(index as f64 / rate);
        }
        match (self.speed, t) {
            (Speed::Factor(speed), Some(t)) => {
                start + Duration::from_secs_f64((t - self.origin).max(0) as f64 / 1e9 / speed)
            }
            _ => start,
        }
    }
}

/// Paces `records`; records without an event time pass at once when the
/// window is open-ended, and are dropped when it is bounded.
pub fn pace<'s>(records: Batches<'s, Record>, pace: Pace) -> Batches<'s, Record> {
    let scope = records.scope();
    records.unary(Pipeline, "Pace", move |_, info| {
        let activator = scope.activator_for(info.address);
        let start = Instant::now();
        let mut index = 0u64;
        // Held records by due time, each with the capability of its epoch.
        let mut held: BTreeMap<(Instant, u64), (Capability<Epoch>, Record)> = BTreeMap::new();
        move |input, output| {
            input.for_each(|cap, batch| {
                let Some(cap) = cap.retain_least(output.output_index()) else {
                    return;
                };
                for record in batch.drain(..) {
                    let inside = match record.event_time {
                        Some(t) => pace.window.contains(t),
                        None => pace.window == Window::default(),
                    };
                    if inside {
                        held.insert(
                            (pace.due(start, record.event_time, index), index),
                            (cap.clone(), record),
                        );
                        index += 1;
                    }
                }
            });
            let now = Instant::now();
            // Everything due goes out together, one batch per epoch (a
            // session per record would cap a paced run near 100k records/s).
            let mut due_now: Option<(Capability<Epoch>, Vec<Record>)> = None;
            while let Some(entry) = held.first_entry() {
                if entry.key().0 > now {
                    activator.activate_after(entry.key().0 - now);
                    break;
                }
                let (due, _) = *entry.key();
                let (cap, mut record) = entry.remove();
                if pace.rate.is_some() || matches!(pace.speed, Speed::Factor(_)) {
                    // A paced record arrives when it is due: its latency
                    // (`--stamp`) counts from then, not from the read-ahead.
                    let late = now.saturating_duration_since(due).as_nanos() as i64;
                    record.read_at = record.read_at.max(now_ns() - late);
                }
                match &mut due_now {
                    Some((c, batch)) if c.time() == cap.time() => batch.push(record),
                    _ => {
                        if let Some((c, mut batch)) = due_now.take() {
                            output.session(&c).give_container(&mut batch);
                        }
                        due_now = Some((cap, vec![record]));
                    }
                }
            }
            if let Some((c, mut batch)) = due_now {
                output.session(&c).give_container(&mut batch);
            }
        }
    })
}
