//! Replay pacing inside the dataflow: holds each typed record until its event
//! time is due (`--speed`) and drops records outside the event-time window
//! (`--from`/`--until`). Sits between ingest and clean when a file is
//! replayed straight into the pipeline; a plain run has no such operator.
//!
//! Every worker paces against the same origin (the window's start, or the
//! first event time of the input), so workers reading different parts of a
//! file release their records when the replayed history reaches them.

use std::collections::BTreeMap;
use std::time::Instant;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::core::features::FeatureRow;
use crate::core::pace::Pacer;
use crate::core::position::Window;
use crate::core::record::{now_ns, Record};
use crate::core::Epoch;
use crate::dataflow::Batches;

/// How a replay is paced: the rule (with the origin every worker shares)
/// and the event-time window.
#[derive(Debug, Clone)]
pub struct Pace {
    /// When each record is due ([`crate::core::pace`]); its origin is set.
    pub pacer: Pacer,
    /// Records outside it are dropped.
    pub window: Window,
}

/// What the pace operator paces: typed records (a run, a clean stage) or
/// feature rows (a predict stage replayed on its own).
pub trait Paced: 'static {
    /// The event time (ns since the epoch), if there is one.
    fn event_time(&self) -> Option<i64>;
    /// When the source read it; moved to when it was due (for `--stamp`).
    fn read_at(&mut self) -> &mut i64;
}

impl Paced for Record {
    fn event_time(&self) -> Option<i64> {
        self.event_time
    }
    fn read_at(&mut self) -> &mut i64 {
        &mut self.read_at
    }
}

impl Paced for FeatureRow {
    fn event_time(&self) -> Option<i64> {
        self.event_time
    }
    fn read_at(&mut self) -> &mut i64 {
        &mut self.read_at
    }
}

/// Paces `records`; records without an event time pass at once when the
/// window is open-ended, and are dropped when it is bounded.
pub fn pace<'s, R: Paced>(records: Batches<'s, R>, pace: Pace) -> Batches<'s, R> {
    let scope = records.scope();
    records.unary(Pipeline, "Pace", move |_, info| {
        let activator = scope.activator_for(info.address);
        let mut pacer = pace.pacer.restarted();
        let start = pacer.started();
        // Ties in due time keep the order records arrived in.
        let mut index = 0u64;
        // Held records by due time, each with the capability of its epoch.
        let mut held: BTreeMap<(Instant, u64), (Capability<Epoch>, R)> = BTreeMap::new();
        move |input, output| {
            input.for_each(|cap, batch| {
                let Some(cap) = cap.retain_least(output.output_index()) else {
                    return;
                };
                for record in batch.drain(..) {
                    let inside = match record.event_time() {
                        Some(t) => pace.window.contains(t),
                        None => pace.window == Window::default(),
                    };
                    if inside {
                        let due = pacer.due(record.event_time()).unwrap_or(start);
                        held.insert((due, index), (cap.clone(), record));
                        index += 1;
                    }
                }
            });
            let now = Instant::now();
            // Everything due goes out together, one batch per epoch (a
            // session per record would cap a paced run near 100k records/s).
            let mut due_now: Option<(Capability<Epoch>, Vec<R>)> = None;
            while let Some(entry) = held.first_entry() {
                if entry.key().0 > now {
                    activator.activate_after(entry.key().0 - now);
                    break;
                }
                let (due, _) = *entry.key();
                let (cap, mut record) = entry.remove();
                if pacer.is_paced() {
                    // A paced record arrives when it is due: its latency
                    // (`--stamp`) counts from then, not from the read-ahead.
                    let late = now.saturating_duration_since(due).as_nanos() as i64;
                    let read_at = record.read_at();
                    *read_at = (*read_at).max(now_ns() - late);
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
