//! The monitor: per event-time window, what `core::monitor` counts, emitted
//! once when the global watermark passes the window's end.
//!
//! ```text
//! rows ──predict+count──► scored                      (the run's outputs)
//!              │ windows touched (one per window per batch)
//!              ▼
//!  dead letters ──► close ◄── reports (broadcast)     per worker: partials
//!                     │ (window start, closing step, Counts)
//!                     ▼
//!          differential consolidate (exchange by window: partials added up)
//!                     │ (exchange to worker 0)
//!                     ▼
//!                  reports ──► window reports, in window order
//! ```
//! Counting happens in the predict operator itself ([`predict`]): it has
//! each batch's features and scores at hand, so the monitor costs no copy
//! of the stream, only the bin look-ups. The counts are sums (integers and a
//! fixed-point score sum, `core::monitor` invariant 2), which merge in any
//! order, so each worker keeps plain maps of partial sums for its open
//! windows, closed by the watermark machinery of the window features
//! (`dataflow::watermark`'s reports, `core::window::Clock`). The workers'
//! partials of a closed window are then one differential collection keyed
//! by window start whose differences are the counts themselves ([`Counts`],
//! a semigroup): differential's `consolidate` adds them up, as an
//! accumulable reduction does, one update per window per worker rather than
//! one per record.
//!
//! Invariants:
//! 1. **A window is closed once, at the first report step whose global
//!    watermark reaches its end**, on every worker alike: reports are applied
//!    in epoch order, once every input's frontier passed their epoch, and the
//!    windows are checked after each epoch's reports ([`close`]). By
//!    `core::window` invariant 2, every record (and every dead letter, by its
//!    `at` time) of a closed window arrived at an epoch at or before that
//!    step, so nothing is counted after its window closed.
//! 2. **A window holds the capability of the first epoch it counted** (when
//!    commits wait for the monitor: `--monitor`/`--monitor-topic` on a topic;
//!    otherwise only the next step to apply), and
//!    its report goes out at the closing step's epoch: the run's `done`
//!    probe waits for the monitor's output, so an input offset is committed
//!    only once the reports of the windows its records counted in are
//!    delivered (at-least-once runs; see `pipeline::worker` for exactly once).
//! 3. **An epoch's reports go out once every worker's partials of that epoch
//!    are consolidated** (the reports operator's frontier passed it), sorted
//!    by window start: the same bytes for any worker count.
//!
//! A dead letter without an `at` time (a malformed record before any record
//! of its partition with an event time) is counted in the first window this
//! worker closes after it: the one count whose window depends on timing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::difference::{IsZero, Semigroup};
use differential_dataflow::AsCollection;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;

use super::predict::Predictor;
use super::Batches;
use crate::core::features::FeatureRow;
use crate::core::monitor::{Monitor, OpenWindow, Partial, WindowReport};
use crate::core::record::{DeadLetter, Stage};
use crate::core::scored::Scored;
use crate::core::window::{Clock, Report, Time};
use crate::core::Epoch;

/// How many applications ahead of the one counted the predict operator
/// asks for the next ones' breakdown values (`Monitor::prefetch_values`).
const PREFETCH_AHEAD: usize = 16;

/// Dead letters by stage and reason.
type DeadCounts = BTreeMap<(Stage, String), u64>;

/// This worker's open windows, shared by the predict operator (which counts
/// into them) and [`close`] (worker-local: one thread).
#[derive(Clone, Default)]
pub struct Windows(Rc<RefCell<BTreeMap<Time, OpenWindow>>>);

/// The predict stage, counting every scored application into its window;
/// besides the scored stream, the starts of the windows each batch touched.
pub fn predict<'s>(
    rows: Batches<'s, FeatureRow>,
    mut predictor: Predictor,
    monitor: Arc<Monitor>,
    windows: Windows,
) -> (Batches<'s, Scored>, Batches<'s, Time>) {
    let mut builder = OperatorBuilder::new("PredictMonitored".to_owned(), rows.scope());
    let mut input = builder.new_input(rows, Pipeline);
    let (out, scored_stream) = builder.new_output();
    let (touched, touched_stream) = builder.new_output();
    let mut out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Scored>>>::from(out);
    let mut touched = OutputBuilder::<_, CapacityContainerBuilder<Vec<Time>>>::from(touched);
    builder.build(move |_| {
        let mut scored = Vec::new();
        let mut starts = Vec::new();
        let mut name = String::new();
        move |_| {
            let mut out = out.activate();
            let mut touched = touched.activate();
            input.for_each(|cap, batch| {
                predictor.score_batch(batch.drain(..), &mut scored);
                let features = predictor.last_features();
                let width = features.len() / scored.len().max(1);
                let mut open = windows.0.borrow_mut();
                // Runs of consecutive rows in one window: each run finds its
                // window once, and its features are counted together,
                // feature by feature.
                let mut from = 0;
                while from < scored.len() {
                    // Admitted past the event-time check: every row has one.
                    let Some(t) = scored[from].event_time else {
                        from += 1;
                        continue;
                    };
                    let start = monitor.window_of(t);
                    let within = start..=start.saturating_add(monitor.window - 1);
                    let end = from
                        + scored[from..]
                            .iter()
                            .position(|s| s.event_time.is_none_or(|t| !within.contains(&t)))
                            .unwrap_or(scored.len() - from);
                    if !starts.contains(&start) {
                        starts.push(start);
                    }
                    let window = open.entry(start).or_insert_with(|| monitor.open(start));
                    let run = &scored[from..end];
                    for (i, s) in run.iter().enumerate() {
                        // Two steps ahead: a value, then (once it is in) its text.
                        if let Some(ahead) = run.get(i + PREFETCH_AHEAD) {
                            monitor.prefetch_values(&ahead.passthrough);
                        }
                        if let Some(ahead) = run.get(i + PREFETCH_AHEAD / 2) {
                            monitor.prefetch_texts(&ahead.passthrough);
                        }
                        window.add_application(
                            &monitor,
                            s.score,
                            s.flagged,
                            &s.passthrough,
                            &mut name,
                        );
                    }
                    window.add_features(&monitor, &features[from * width..end * width], width);
                    from = end;
                }
                drop(open);
                touched.session(&cap).give_container(&mut starts);
                starts.clear();
                out.session(&cap).give_container(&mut scored);
            });
        }
    });
    (scored_stream, touched_stream)
}

/// Closes this worker's windows as the watermark passes them (invariant 1),
/// counting the dead letters in, and emits each closed window's partial at
/// the closing step (invariant 2).
pub fn close<'s>(
    touched: Batches<'s, Time>,
    dead: Batches<'s, DeadLetter>,
    reports: Batches<'s, Report>,
    monitor: Arc<Monitor>,
    windows: Windows,
    hold_first: bool,
) -> Batches<'s, Partial> {
    let workers = touched.scope().peers();
    let reports = reports.broadcast();
    let mut builder = OperatorBuilder::new("MonitorClose".to_owned(), touched.scope());
    let mut touched_in = builder.new_input(touched, Pipeline);
    let mut dead_in = builder.new_input(dead, Pipeline);
    let mut reports_in = builder.new_input(reports, Pipeline);
    let (out, partials) = builder.new_output();
    let mut out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Partial>>>::from(out);
    builder.build(move |_| {
        let mut clock = Clock::new(workers);
        let mut stash: BTreeMap<Epoch, Vec<Report>> = BTreeMap::new();
        // Per open window, the capability of the first epoch it counted.
        let mut held: BTreeMap<Time, Capability<Epoch>> = BTreeMap::new();
        // Dead letters without an `at` time, and the epoch of the first.
        let mut unplaced: Option<(Capability<Epoch>, DeadCounts)> = None;
        let hold = |held: &mut BTreeMap<Time, Capability<Epoch>>, start, cap: Capability<Epoch>| {
            match held.get(&start) {
                Some(h) if h.time() <= cap.time() => {}
                _ => {
                    held.insert(start, cap);
                }
            }
        };
        move |frontiers| {
            touched_in.for_each(|cap, batch| {
                for start in batch.drain(..) {
                    if let Some(c) = cap.retain_least(0) {
                        hold(&mut held, start, c);
                    }
                }
            });
            dead_in.for_each(|cap, batch| {
                let mut open = windows.0.borrow_mut();
                for d in batch.drain(..) {
                    let Some(c) = cap.retain_least(0) else {
                        continue;
                    };
                    match d.at {
                        Some(t) => {
                            let start = monitor.window_of(t);
                            open.entry(start)
                                .or_insert_with(|| monitor.open(start))
                                .add_dead(&d);
                            hold(&mut held, start, c);
                        }
                        None => {
                            let (_, counts) = unplaced.get_or_insert_with(|| (c, BTreeMap::new()));
                            *counts.entry((d.stage, d.reason)).or_insert(0) += 1;
                        }
                    }
                }
            });
            reports_in.for_each(|cap, batch| {
                if let Some(&epoch) = cap.least() {
                    stash.entry(epoch).or_default().append(batch);
                }
            });
            let frontier = frontiers
                .iter()
                .filter_map(|f| f.frontier().first().copied())
                .min();
            let mut out = out.activate();
            while let Some((&step, _)) = stash.first_key_value() {
                if frontier.is_some_and(|f| step >= f) {
                    break;
                }
                let batch = stash.remove(&step).unwrap_or_default();
                batch.into_iter().for_each(|r| clock.report(r));
                let watermark = clock.watermark();
                let mut open = windows.0.borrow_mut();
                let closing: Vec<Time> = held
                    .keys()
                    .copied()
                    .take_while(|s| s.saturating_add(monitor.window) <= watermark)
                    .collect();
                for start in closing {
                    let cap = held.remove(&start).expect("held");
                    let mut p = open
                        .remove(&start)
                        .map(|w| w.into_partial(&monitor))
                        .unwrap_or_else(|| monitor.partial(start));
                    if let Some((_, counts)) = unplaced.take() {
                        for (k, n) in counts {
                            *p.dead.entry(k).or_insert(0) += n;
                        }
                    }
                    let at = step.max(*cap.time());
                    out.session(&cap.delayed(&at)).give(p);
                }
            }
            match frontier {
                None => {
                    // Every input ended; a window still open was never closed
                    // by the watermark (a stopped run): it is not reported.
                    held.clear();
                    unplaced = None;
                }
                Some(f) if !hold_first => {
                    // No commit waits for these windows (invariant 2 does not
                    // apply): hold them only at the next step to apply, so
                    // one worker's window far ahead in event time (a file's
                    // second half at -w 2) does not hold back every report
                    // before it. Every step left is at or after `f`, so a
                    // window still goes out at its closing step.
                    for cap in held.values_mut() {
                        if *cap.time() < f {
                            cap.downgrade(&f);
                        }
                    }
                    if let Some((cap, _)) = unplaced.as_mut() {
                        if *cap.time() < f {
                            cap.downgrade(&f);
                        }
                    }
                }
                Some(_) => {}
            }
        }
    });
    partials
}

/// A window's partial as a differential difference: adding two is
/// [`Partial::merge`] (sums of integers, in any order: `core::monitor`
/// invariant 2), the zero is a partial that counts nothing. Shared: the
/// arrangement copies its differences as it builds and merges batches,
/// and a partial is a few kilobytes; an addition copies only a shared one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Counts(pub Arc<Partial>);

impl IsZero for Counts {
    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
}

impl Semigroup for Counts {
    fn plus_equals(&mut self, rhs: &Counts) {
        Arc::make_mut(&mut self.0).merge(&rhs.0);
    }
}

/// Merges every worker's partials and emits each closing step's window
/// reports on worker 0, in window order, once all are in (invariant 3).
///
/// The partials are a differential collection keyed by window start whose
/// differences are the [`Counts`] themselves: differential's `consolidate`
/// exchanges them by window and adds up every worker's partial of a window
/// at its closing step, the way an accumulable reduction does — one update
/// per window per worker, never one per record (the counting itself stays in
/// the predict operator). Its trace keeps one consolidated partial per
/// window reported (about 1 KB each: a year of hourly windows is 9 MB).
pub fn merge<'s>(
    partials: Batches<'s, Partial>,
    monitor: Arc<Monitor>,
) -> Batches<'s, WindowReport> {
    let updates = partials.unary::<CapacityContainerBuilder<Vec<(Time, Epoch, Counts)>>, _, _, _>(
        Pipeline,
        "MonitorCounts",
        |_, _| {
            |input, output| {
                input.for_each(|cap, batch| {
                    let Some(&at) = cap.least() else { return };
                    output
                        .session(&cap)
                        .give_iterator(batch.drain(..).map(|p| (p.start, at, Counts(Arc::new(p)))));
                });
            }
        },
    );
    let merged = updates.as_collection().consolidate().inner;
    merged.unary_frontier(
        Exchange::new(|_: &(Time, Epoch, Counts)| 0),
        "MonitorReports",
        move |_, _| {
            let mut pending: BTreeMap<Epoch, (Capability<Epoch>, BTreeMap<Time, Partial>)> =
                BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, batch| {
                    let Some(held) = cap.retain_least(0) else {
                        return;
                    };
                    // A collection's message may carry updates of several
                    // times at or after its own: each goes by its own.
                    for (start, epoch, Counts(p)) in batch.drain(..) {
                        let entry = pending
                            .entry(epoch)
                            .or_insert_with(|| (held.delayed(&epoch), BTreeMap::new()));
                        // Consolidated: one per window and closing step.
                        match entry.1.get_mut(&start) {
                            Some(mine) => mine.merge(&p),
                            None => {
                                entry.1.insert(start, Arc::unwrap_or_clone(p));
                            }
                        }
                    }
                });
                while let Some((&epoch, _)) = pending.first_key_value() {
                    if frontier.less_equal(&epoch) {
                        break;
                    }
                    let (cap, windows) = pending.remove(&epoch).expect("present");
                    let mut session = output.session(&cap);
                    for p in windows.values() {
                        session.give(monitor.report(p));
                    }
                }
            }
        },
    )
}
