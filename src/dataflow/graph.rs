//! The graph: ingest → (exchange by id) → clean → predict, each stage's plain
//! struct wired into an operator; or one part of it, when the stages run
//! as separate services (`--stages clean`, `--stages predict`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::Concat;
use timely::dataflow::ProbeHandle;

use super::clean::Cleaner;
use super::fallible::{fallible, fallible_with_side, Refused};
use super::ingest::Parser;
use super::pace::Pace;
use super::predict::Predictor;
use super::rows::{RowReader, RowRefusal};
use super::watermark::{watermark, Marks, Reading};
use super::Batches;
use crate::core::fault::Fault;
use crate::core::features::FeatureRow;
use crate::core::metrics::StageCounters;
use crate::core::monitor::{Monitor, WindowReport};
use crate::core::record::{id_hash, DeadLetter, RawRecord, Record};
use crate::core::scored::{Output, Scored};
use crate::core::window::{Lateness, Member, Plan, Report, Tags};
use crate::core::Epoch;

/// Which stages one run has: all three in one dataflow (the default), or
/// one service of the tutorial's chain, meeting the other at the cleaned topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stages {
    /// ingest → clean → predict.
    #[default]
    All,
    /// ingest → clean: feature rows out.
    Clean,
    /// Feature rows in → predict.
    Predict,
}

/// Where a record is cleaned, and so where its row is scored.
///
/// Nothing a record becomes depends on the worker it is cleaned on (rows,
/// scores and window features are functions of the records alone), so
/// this decides only where the work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// On the worker that read it: the source gives every worker of every
    /// process an even share already (a file's stripes), so moving records
    /// would only cost — a copy between threads, or TCP in a cluster.
    AsRead,
    /// On the worker its id hashes to: a topic's partitions may be fewer
    /// than the workers, or carry uneven traffic.
    ById,
}

/// The stages of a run and the plain struct of each.
pub enum Graph {
    /// ingest → clean → predict; with `cleaned`, the feature rows are
    /// outputs too (the middle topic of a one-process run).
    All {
        /// Raw bytes → typed records.
        parser: Parser,
        /// Typed records → features.
        cleaner: Cleaner,
        /// Features → scores.
        predictor: Predictor,
        /// Also emit every feature row.
        cleaned: bool,
        /// The window features, if the spec has any (or the watermarks
        /// alone, for the monitor).
        windows: Option<Windowing>,
        /// With `run --monitor`: the monitor, which needs `windows`.
        monitor: Option<Arc<Monitor>>,
        /// Where records are cleaned.
        spread: Spread,
        /// Whether commits wait for the monitor's windows
        /// (`dataflow::monitor` invariant 2).
        monitor_holds: bool,
    },
    /// ingest → clean: every feature row is an output.
    Clean {
        /// Raw bytes → typed records.
        parser: Parser,
        /// Typed records → features.
        cleaner: Cleaner,
        /// The window features, if the spec has any.
        windows: Option<Windowing>,
        /// Where records are cleaned.
        spread: Spread,
    },
    /// Feature rows (as the clean stage wrote them) → scores.
    Predict {
        /// Raw bytes → feature rows.
        rows: RowReader,
        /// Features → scores.
        predictor: Predictor,
        /// Called with the fault that stops the run (a row of another spec).
        fail: Box<dyn Fn(Fault)>,
    },
}

/// What a dataflow with window features needs besides its stages.
pub struct Windowing {
    /// The window features, grouped (`None`: no window features, only the
    /// watermarks the monitor needs).
    pub plan: Option<Arc<Plan>>,
    /// The spec's lateness (ns).
    pub lateness: i64,
    /// The partitions this worker reads (a file's worker: its stripes, `[0]`).
    pub partitions: Vec<i32>,
    /// With window features, what the window stage took in (its
    /// arrangement's batches, `window::windows`): the source paces itself
    /// by this, not by what was delivered, because applications wait for
    /// the watermark — which only more reading moves. Unprobed for the
    /// monitor alone, whose source paces itself by the sinks.
    pub read: ProbeHandle<Epoch>,
    /// What the topic source and the window stage of this worker tell
    /// each other: the end of a bounded read, where history stops, the
    /// others' watermark, a halt.
    pub marks: Marks,
    /// A live topic run's `--idle-timeout` (`None`: a bounded read or a
    /// file, where every partition ends and nothing is idle).
    pub idle: Option<Duration>,
}

/// What [`build`] gives: the outputs, the dead letters and, with a
/// monitor, its window reports (on worker 0).
pub type Built<'s> = (
    Batches<'s, Output>,
    Batches<'s, DeadLetter>,
    Option<Batches<'s, WindowReport>>,
);

/// Builds `graph` on `raw`, returning its outputs and dead letters; `pace`
/// holds each record (a predict stage: each row) until it is due.
pub fn build<'s>(raw: Batches<'s, RawRecord>, pace: Option<Pace>, graph: Graph) -> Built<'s> {
    match graph {
        Graph::All {
            parser,
            cleaner,
            predictor,
            cleaned,
            windows,
            monitor,
            monitor_holds,
            spread,
        } => {
            let (rows, dead, reports) =
                ingest_and_clean(raw, pace, parser, cleaner, windows, spread);
            let cleaned = cleaned.then(|| rows.clone().map(Output::Cleaned));
            let (scored, reports_out) = match (monitor, reports) {
                (Some(m), Some(reports)) => {
                    let open = super::monitor::Windows::default();
                    let (scored, touched) =
                        super::monitor::predict(rows, predictor, Arc::clone(&m), open.clone());
                    let partials = super::monitor::close(
                        touched,
                        dead.clone(),
                        reports,
                        Arc::clone(&m),
                        open,
                        monitor_holds,
                    );
                    (scored, Some(super::monitor::merge(partials, m)))
                }
                _ => (predict(rows, predictor), None),
            };
            let scored = scored.map(Output::Scored);
            match cleaned {
                Some(rows) => (scored.concat(rows), dead, reports_out),
                None => (scored, dead, reports_out),
            }
        }
        Graph::Clean {
            parser,
            cleaner,
            windows,
            spread,
        } => {
            let (rows, dead, _) = ingest_and_clean(raw, pace, parser, cleaner, windows, spread);
            (rows.map(Output::Cleaned), dead, None)
        }
        Graph::Predict {
            rows,
            predictor,
            fail,
        } => {
            let (rows, dead) = read_rows(raw, rows, fail);
            let rows = match pace {
                Some(p) => super::pace::pace(rows, p),
                None => rows,
            };
            (predict(rows, predictor).map(Output::Scored), dead, None)
        }
    }
}

/// Rows, dead letters and (with watermarks) every worker's reports. With
/// watermarks, the watermark operator parses the records itself unless a
/// replay paces them in between (then [`ingest_stamped`] does); either way
/// each ingest dead letter is stamped with its partition's newest event time
/// (`DeadLetter::at`, for the monitor).
type Cleaned<'s> = (
    Batches<'s, FeatureRow>,
    Batches<'s, DeadLetter>,
    Option<Batches<'s, Report>>,
);

fn ingest_and_clean<'s>(
    raw: Batches<'s, RawRecord>,
    pace: Option<Pace>,
    parser: Parser,
    cleaner: Cleaner,
    windows: Option<Windowing>,
    spread: Spread,
) -> Cleaned<'s> {
    let Some(w) = windows else {
        let (records, ingest_dead) = ingest(raw, parser);
        let records = match pace {
            Some(p) => super::pace::pace(records, p),
            None => records,
        };
        let (rows, clean_dead) = clean(records, cleaner, spread);
        return (rows, ingest_dead.concat(clean_dead), None);
    };
    let mut lateness = Lateness::new(w.lateness, w.partitions);
    if let Some(after) = w.idle {
        lateness = lateness.idle_after(after, Instant::now());
    }
    // Unpaced, the watermark operator parses the records itself (one pass
    // over each, see `dataflow::watermark`); a replay paces typed records
    // between the two.
    let (reading, ingest_dead) = match pace {
        None => (Reading::Parse(raw, parser), None),
        Some(p) => {
            let (records, ingest_dead) = ingest_stamped(raw, parser);
            // A record of history that cannot be read was dead-lettered by
            // the run that answered it.
            let marks = w.marks.clone();
            let ingest_dead = ingest_dead.filter(move |d| !marks.is_history(&d.origin));
            let records = super::pace::pace(records, p);
            (Reading::Records(records), Some(ingest_dead))
        }
    };
    let (records, dead, reports, history) = watermark(reading, lateness, w.marks.clone());
    let dead = match ingest_dead {
        Some(ingest_dead) => ingest_dead.concat(dead),
        None => dead,
    };
    let Some(plan) = w.plan else {
        // Watermarks for the monitor only: history rebuilds no window.
        let (rows, clean_dead) = clean(records, cleaner, spread);
        return (rows, dead.concat(clean_dead), Some(reports));
    };
    let members_of = Arc::clone(&plan);
    let history = history.flat_map(move |r| {
        // Admitted by the watermark operator: every record has an event time.
        members_of.members(r.event_time.unwrap_or(i64::MIN), &r.values)
    });
    let (rows, members, clean_dead) =
        clean_with_members(records, cleaner, Arc::clone(&plan), spread);
    let rows = super::window::windows(
        rows,
        members,
        history,
        reports.clone(),
        plan,
        w.marks,
        w.read,
    );
    (rows, dead.concat(clean_dead), Some(reports))
}

/// Clean, giving each application's part in every window group to a side
/// output, tagged with its row's tag ([`Tags`]); a refused record gives
/// none.
#[allow(clippy::type_complexity)]
fn clean_with_members<'s>(
    records: Batches<'s, Record>,
    cleaner: Cleaner,
    plan: Arc<Plan>,
    spread: Spread,
) -> (
    Batches<'s, (FeatureRow, u64, usize)>,
    Batches<'s, Member>,
    Batches<'s, DeadLetter>,
) {
    let mut tags = Tags::new(records.scope().index());
    let logic = move |r: Record, members: &mut Vec<Member>| {
        // Admitted by the watermark operator: every record has an event time.
        let time = r.event_time.unwrap_or(i64::MIN);
        let before = members.len();
        plan.members_into(time, &r.values, |m| members.push(m));
        match cleaner.clean(r) {
            Ok(row) => {
                let tag = tags.next_tag();
                members[before..].iter_mut().for_each(|m| m.tag = tag);
                Ok((row, tag, members.len() - before))
            }
            Err(dead) => {
                members.truncate(before);
                Err(dead.into())
            }
        }
    };
    match spread {
        Spread::AsRead => fallible_with_side(records, Pipeline, "Clean", logic),
        Spread::ById => fallible_with_side(records, by_id(), "Clean", logic),
    }
}

/// A predict stage's input: rows read where they were read (a cleaned topic
/// is keyed by id already). A row of another spec stops the run: `fail` is
/// told, and the stage stops ([`Refused::Stop`]), so nothing of it or after
/// it is delivered or committed (rows module, invariant 1).
pub fn read_rows<'s>(
    raw: Batches<'s, RawRecord>,
    mut reader: RowReader,
    fail: Box<dyn Fn(Fault)>,
) -> (Batches<'s, FeatureRow>, Batches<'s, DeadLetter>) {
    fallible(raw, Pipeline, "ReadRows", move |raw| {
        match reader.read(raw) {
            Ok(row) => Ok(row),
            Err(RowRefusal::Dead(d)) => Err(Refused::Dead(d)),
            Err(RowRefusal::Foreign {
                found,
                expected,
                origin,
            }) => {
                fail(Fault::fatal(format!(
                "{origin} is a feature row of spec {found}, but this predict stage runs spec {expected}: \
                 point it at the cleaned topic its own spec's clean stage writes"
            )));
                Err(Refused::Stop)
            }
        }
    })
}

/// Ingest runs where the bytes were read (no exchange: the id is not known yet).
pub fn ingest<'s>(
    raw: Batches<'s, RawRecord>,
    mut parser: Parser,
) -> (Batches<'s, Record>, Batches<'s, DeadLetter>) {
    fallible(raw, Pipeline, "Ingest", move |r| Ok(parser.parse(r)?))
}

/// [`ingest`], each dead letter stamped with the newest event time its
/// partition delivered before it, in read order (`DeadLetter::at`).
pub fn ingest_stamped<'s>(
    raw: Batches<'s, RawRecord>,
    mut parser: Parser,
) -> (Batches<'s, Record>, Batches<'s, DeadLetter>) {
    let mut newest: FxHashMap<i32, i64> = FxHashMap::default();
    fallible(raw, Pipeline, "Ingest", move |r| {
        let partition = r.origin.partition();
        match parser.parse(r) {
            Ok(record) => {
                if let Some(t) = record.event_time {
                    let n = newest.entry(partition).or_insert(t);
                    *n = (*n).max(t);
                }
                Ok(record)
            }
            Err(mut d) => {
                d.at = newest.get(&partition).copied();
                Err(d.into())
            }
        }
    })
}

/// Clean, where `spread` says.
pub fn clean<'s>(
    records: Batches<'s, Record>,
    cleaner: Cleaner,
    spread: Spread,
) -> (Batches<'s, FeatureRow>, Batches<'s, DeadLetter>) {
    let logic = move |r| Ok(cleaner.clean(r)?);
    match spread {
        Spread::AsRead => fallible(records, Pipeline, "Clean", logic),
        Spread::ById => fallible(records, by_id(), "Clean", logic),
    }
}

/// Records to the worker their id hashes to ([`Spread::ById`]).
fn by_id() -> Exchange<Record, impl FnMut(&Record) -> u64 + 'static> {
    Exchange::new(|r: &Record| id_hash(&r.id))
}

/// Predict scores whole batches (timely's containers) at once.
pub fn predict<'s>(rows: Batches<'s, FeatureRow>, mut predictor: Predictor) -> Batches<'s, Scored> {
    let counters = StageCounters::of("predict");
    rows.unary(Pipeline, "Predict", move |_, _| {
        let mut scored = Vec::new();
        move |input, output| {
            input.for_each(|cap, batch| {
                if let Some(c) = &counters {
                    c.moved(batch.len(), batch.len());
                }
                predictor.score_batch(batch.drain(..), &mut scored);
                output.session(&cap).give_container(&mut scored);
            });
        }
    })
}
