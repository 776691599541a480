//! The watermark operator of a window dataflow: on the worker that read
//! them, records are checked against their partition's order (late ones
//! become dead letters, `core::window` invariant 1), and the worker reports
//! its watermark each time its input frontier moves.
//!
//! A report goes out at the last epoch it covers (`frontier − 1`), with the
//! watermark as that epoch's last record left it (records of later epochs
//! may already have been read, and must not count): a
//! window operator applies it only once its own frontier has passed that
//! epoch, when every record the report speaks for has arrived there too.
//! When the input ends (a file read; a bounded topic at its bound, which its
//! source says through [`Marks`] since it keeps reading to commit), the
//! worker reports `i64::MAX`: it holds nobody back any more. Records of
//! history (before a restarted or positioned run's start, [`Marks`]) are
//! checked like any other, so lateness is decided as the uninterrupted run
//! decided it, and go on as events only.
//!
//! Where no operator sits between them (every run but a paced replay), the
//! records are parsed here too ([`Reading::Parse`]): each record is read
//! once, while its bytes are in the cache, rather than parsed by the ingest
//! operator and read again here a whole epoch later. A record that cannot be
//! parsed is an ingest dead letter stamped with its partition's newest event
//! time (`DeadLetter::at`), as `graph::ingest_stamped` stamps it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Instant;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::scheduling::Activator;

use super::ingest::Parser;
use super::Batches;
use crate::core::metrics::StageCounters;
use crate::core::record::{DeadLetter, Origin, RawRecord, Record};
use crate::core::window::{Lateness, Report, Time};
use crate::core::Epoch;

/// What a topic source tells the window stage of its own worker (worker-
/// local: timely workers are single threads), and the window stage tells it
/// back:
/// - **ended**: the last epoch with records of the owned partitions, once a
///   bounded read reached its bound. A source that keeps its capability
///   after its last record (it still commits) says so here, which wakes the
///   watermark operator (no frontier moves to wake it).
/// - **history**: where each owned partition starts being answered. A run
///   that starts past a partition's beginning (committed offsets, `--from`)
///   reads the records before that start too, so the windows hold what they
///   would have held had the run never stopped; those records are events
///   only: no output, no dead letter ([`watermark`]).
/// - **others**: the global watermark of the *other* workers as this
///   worker's window stage last applied it, which an idle worker adopts
///   (`core::window::Lateness::idle_watermark`).
/// - **halted**: the source stopped reading and committed what was
///   delivered; the worker may leave without waiting for applications that
///   wait for a watermark nothing will move any more.
/// - **marks**: each owned partition's part in this worker's watermark, and
///   the watermark itself, as the watermark operator last left them, so
///   that a source whose outputs lag reads on only the partitions that
///   hold the watermark back ([`Marks::laggards`], [`Marks::leads`];
///   `io::kafka` invariant 5).
#[derive(Clone)]
pub struct Marks(Rc<MarksInner>);

struct MarksInner {
    last: Cell<Option<Epoch>>,
    wake: RefCell<Option<Activator>>,
    history: RefCell<HashMap<i32, Start>>,
    others: Cell<Time>,
    halted: Cell<bool>,
    marks: RefCell<Vec<(i32, Time)>>,
    mine: Cell<Time>,
}

/// Where a partition's answered records start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At this offset: records before it are history.
    At(i64),
    /// Not known yet (`--from time:`, found by reading): every record read
    /// until then is history.
    Pending,
}

impl Default for Marks {
    fn default() -> Marks {
        Marks(Rc::new(MarksInner {
            last: Cell::new(None),
            wake: RefCell::new(None),
            history: RefCell::new(HashMap::new()),
            others: Cell::new(Time::MIN),
            halted: Cell::new(false),
            marks: RefCell::new(Vec::new()),
            mine: Cell::new(Time::MIN),
        }))
    }
}

impl Marks {
    /// The partitions ended with the records of epoch `last`.
    pub fn end(&self, last: Epoch) {
        self.0.last.set(Some(last));
        if let Some(wake) = self.0.wake.borrow().as_ref() {
            wake.activate();
        }
    }

    fn ended(&self) -> Option<Epoch> {
        self.0.last.get()
    }

    /// Records of `partition` before `offset` are history.
    pub fn start_at(&self, partition: i32, offset: i64) {
        self.0
            .history
            .borrow_mut()
            .insert(partition, Start::At(offset));
    }

    /// Records of `partition` are history until [`Marks::start_at`] says
    /// where they stop being.
    pub fn start_pending(&self, partition: i32) {
        self.0
            .history
            .borrow_mut()
            .insert(partition, Start::Pending);
    }

    /// Where `partition`'s answered records start, if it has history and
    /// the start is known.
    pub fn start(&self, partition: i32) -> Option<i64> {
        match self.0.history.borrow().get(&partition) {
            Some(Start::At(at)) => Some(*at),
            _ => None,
        }
    }

    /// Whether `partition` has not found its start yet.
    pub fn pending(&self, partition: i32) -> bool {
        self.0.history.borrow().get(&partition) == Some(&Start::Pending)
    }

    /// Whether the record read at `origin` is history: read to rebuild the
    /// windows, answered by an earlier run (or before the asked range).
    #[inline]
    pub fn is_history(&self, origin: &Origin) -> bool {
        let Origin::Kafka {
            partition, offset, ..
        } = origin
        else {
            return false;
        };
        match self.0.history.borrow().get(partition) {
            Some(Start::At(start)) => offset < start,
            Some(Start::Pending) => true,
            None => false,
        }
    }

    /// The window stage applied the other workers' watermark `t`.
    pub fn set_others(&self, t: Time) {
        self.0.others.set(t);
    }

    /// The other workers' watermark as this worker's window stage last
    /// applied it (`i64::MIN`: none applied yet).
    pub fn others(&self) -> Time {
        self.0.others.get()
    }

    /// Each owned partition's part in this worker's watermark now
    /// (`Lateness::marks`: by partition), and the watermark, as the
    /// watermark operator left them.
    pub fn publish(&self, marks: impl IntoIterator<Item = (i32, Time)>, mine: Time) {
        let mut held = self.0.marks.borrow_mut();
        held.clear();
        held.extend(marks);
        self.0.mine.set(mine);
    }

    /// Whether this worker's watermark leads the other workers' (as last
    /// applied here): then its reading cannot move the global watermark,
    /// which waits for another worker's partitions.
    pub fn leads(&self) -> bool {
        self.0.mine.get() > self.0.others.get()
    }

    /// Of the partitions `reading` (owned, not at their end), those with
    /// the lowest mark: the ones this worker's watermark waits for. A
    /// partition not judged yet counts as `i64::MIN` (it holds everything
    /// back until its first record). Empty if none is reading.
    pub fn laggards(&self, reading: &[i32]) -> Vec<i32> {
        let marks = self.0.marks.borrow();
        let mark = |p: i32| {
            marks
                .binary_search_by_key(&p, |(q, _)| *q)
                .map_or(Time::MIN, |i| marks[i].1)
        };
        let Some(lowest) = reading.iter().map(|p| mark(*p)).min() else {
            return Vec::new();
        };
        reading
            .iter()
            .copied()
            .filter(|p| mark(*p) == lowest)
            .collect()
    }

    /// The source stopped and committed: nothing more will be delivered.
    pub fn halt(&self) {
        self.0.halted.set(true);
    }

    /// Whether the source halted.
    pub fn halted(&self) -> bool {
        self.0.halted.get()
    }
}

/// What the watermark operator reads: records parsed already (a paced
/// replay's, past the pace operator), or raw ones it parses itself, as the
/// ingest stage would (counted as that stage's in the metrics).
pub enum Reading<'s> {
    /// Typed records, from the ingest (and pace) operators.
    Records(Batches<'s, Record>),
    /// Raw records, parsed here with the parser.
    Parse(Batches<'s, RawRecord>, Parser),
}

/// The watermark operator's outputs: admitted records, dead letters,
/// reports, admitted records of history.
pub type Judged<'s> = (
    Batches<'s, Record>,
    Batches<'s, DeadLetter>,
    Batches<'s, Report>,
    Batches<'s, Record>,
);

/// Checks the records `reading` gives with `lateness` (this worker's
/// partitions); returns the admitted records, the dead letters (late ones,
/// and with [`Reading::Parse`] the unreadable ones), this worker's reports,
/// and the admitted records of history (see [`Marks`]; a late or unreadable
/// record of history is dropped: the run that answered it dead-lettered it).
pub fn watermark<'s>(reading: Reading<'s>, lateness: Lateness, marks: Marks) -> Judged<'s> {
    match reading {
        Reading::Records(records) => judge(records, Ok, None, lateness, marks),
        Reading::Parse(raw, mut parser) => judge(
            raw,
            move |r| parser.parse(r),
            StageCounters::of("ingest"),
            lateness,
            marks,
        ),
    }
}

/// [`watermark`], over inputs that `read` turns into records (`ingest`:
/// the ingest stage's counters, when it reads raw records).
fn judge<'s, I: 'static>(
    records: Batches<'s, I>,
    mut read: impl FnMut(I) -> Result<Record, DeadLetter> + 'static,
    ingest: Option<StageCounters>,
    mut lateness: Lateness,
    marks: Marks,
) -> Judged<'s> {
    let worker = records.scope().index();
    let mut builder = OperatorBuilder::new("Watermark".to_owned(), records.scope());
    marks.0.wake.replace(Some(
        records
            .scope()
            .activator_for(builder.operator_info().address),
    ));
    let mut input = builder.new_input(records, Pipeline);
    let (ok, ok_stream) = builder.new_output();
    let (dead, dead_stream) = builder.new_output();
    let (reports, report_stream) = builder.new_output();
    let (history, history_stream) = builder.new_output();
    let mut ok = OutputBuilder::<_, CapacityContainerBuilder<Vec<Record>>>::from(ok);
    let mut dead = OutputBuilder::<_, CapacityContainerBuilder<Vec<DeadLetter>>>::from(dead);
    let mut reports = OutputBuilder::<_, CapacityContainerBuilder<Vec<Report>>>::from(reports);
    let mut history = OutputBuilder::<_, CapacityContainerBuilder<Vec<Record>>>::from(history);
    builder.build(move |mut capabilities| {
        // The reports' capability (output 2: ok, dead, reports, history):
        // at the first epoch not yet reported. The others' initial
        // capabilities are dropped here; their messages go out at their
        // input's capabilities.
        let mut report_at = Some(capabilities.swap_remove(2));
        // The watermark as each epoch's last message left it: messages of
        // later epochs may be drained before the frontier passes an epoch,
        // and must not show in its report.
        let mut after: BTreeMap<Epoch, Time> = BTreeMap::new();
        let mut reported = lateness.watermark();
        let mut reported_through: Option<Epoch> = None;
        move |frontiers| {
            let mut ok = ok.activate();
            let mut dead = dead.activate();
            let mut history = history.activate();
            input.for_each(|cap, batch| {
                let Some(&epoch) = cap.least() else {
                    return;
                };
                let mut dead = dead.session(&cap);
                let metrics = crate::core::metrics::installed();
                let mut give_dead = |d: DeadLetter| {
                    if let Some(m) = metrics {
                        m.dead_letters(std::slice::from_ref(&d));
                    }
                    dead.give(d);
                };
                // Each record read and judged once, in order. The admitted
                // ones go on in one container per input message (given one
                // by one they would be cut into timely's small default
                // containers, and every operator downstream, the scorer's
                // batches most, would pay per message).
                let n_in = batch.len();
                let mut admitted = Vec::with_capacity(n_in);
                let mut past_start = Vec::new();
                let mut parsed = 0;
                // The newest event time read, for the metrics.
                let mut newest = None;
                for item in batch.drain(..) {
                    let record = match read(item) {
                        Ok(record) => record,
                        Err(mut d) => {
                            if !marks.is_history(&d.origin) {
                                d.at = lateness.newest(d.origin.partition());
                                give_dead(d);
                            }
                            continue;
                        }
                    };
                    parsed += 1;
                    newest = newest.max(record.event_time);
                    let past = marks.is_history(&record.origin);
                    match (lateness.judge(&record), past) {
                        (None, false) => admitted.push(record),
                        (None, true) => past_start.push(record),
                        (Some(_), true) => {}
                        (Some(late), false) => give_dead(late.dead_letter(record)),
                    }
                }
                if let Some(c) = &ingest {
                    c.moved(n_in, parsed);
                }
                if let (Some(m), Some(t)) = (metrics, newest) {
                    m.event_read(t);
                }
                if !admitted.is_empty() {
                    ok.session(&cap).give_container(&mut admitted);
                }
                if !past_start.is_empty() {
                    history.session(&cap).give_container(&mut past_start);
                }
                let watermark = lateness.watermark();
                after.insert(epoch, watermark);
                marks.publish(lateness.marks(), watermark);
            });
            let Some(cap) = report_at.as_mut() else {
                return;
            };
            let mut reports = reports.activate();
            let frontier = frontiers[0].frontier().first().copied();
            let frontier = match (frontier, marks.ended()) {
                // Every record of the ended partitions is in: as good as the end.
                (Some(f), Some(last)) if f > last => None,
                (f, _) => f,
            };
            match frontier {
                None => {
                    // The input ended: every partition is at its end. Said
                    // at the last epoch read, which it covers.
                    let last = after.last_key_value().map_or(*cap.time(), |(e, _)| *e);
                    reports
                        .session(&cap.delayed(&last.max(*cap.time())))
                        .give((worker, Time::MAX));
                    report_at = None;
                }
                Some(f) if reported_through.is_none_or(|r| f - 1 > r) && f > 0 => {
                    let covered: Epoch = f - 1;
                    let later = after.split_off(&f);
                    if let Some((_, w)) = after.pop_last() {
                        reported = w;
                    }
                    if later.is_empty() {
                        // Nothing of a later epoch is read yet, so the
                        // partitions are as `covered` left them: an idle one
                        // may stop holding the watermark (a live run only;
                        // the one place the wall clock enters).
                        reported =
                            reported.max(lateness.idle_watermark(Instant::now(), marks.others()));
                    }
                    after = later;
                    // Invariant 2 of `core::window` for what this worker
                    // admits from now on, idle partitions or not.
                    lateness.raise_floor(reported);
                    reports
                        .session(&cap.delayed(&covered))
                        .give((worker, reported));
                    // Held at the epoch just reported, not past it: an end
                    // said later (`Marks::end`) is reported there, where a
                    // window operator can still take it before the source
                    // lets go of its own capability.
                    cap.downgrade(&covered);
                    reported_through = Some(covered);
                }
                Some(_) => {}
            }
        }
    });
    (ok_stream, dead_stream, report_stream, history_stream)
}
