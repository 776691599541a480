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
//! source says through [`Ended`] since it keeps reading to commit), the
//! worker reports `i64::MAX`: it holds nobody back any more.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::scheduling::Activator;

use super::Batches;
use crate::core::record::{DeadLetter, Record};
use crate::core::window::{Lateness, Report, Time};
use crate::core::Epoch;

/// Where a source that keeps its capability after its last record (a
/// bounded topic read, which still commits) says its partitions ended: the
/// last epoch with records of them. Saying so wakes the watermark operator
/// (no frontier moves to wake it).
#[derive(Clone, Default)]
pub struct Ended(Rc<EndedInner>);

#[derive(Default)]
struct EndedInner {
    last: Cell<Option<Epoch>>,
    wake: RefCell<Option<Activator>>,
}

impl Ended {
    /// The partitions ended with the records of epoch `last`.
    pub fn set(&self, last: Epoch) {
        self.0.last.set(Some(last));
        if let Some(wake) = self.0.wake.borrow().as_ref() {
            wake.activate();
        }
    }

    fn get(&self) -> Option<Epoch> {
        self.0.last.get()
    }
}

/// Checks `records` with `lateness` (this worker's partitions); returns the
/// admitted records, the late ones, and this worker's reports. `ended`:
/// see [`Ended`].
pub fn watermark<'s>(
    records: Batches<'s, Record>,
    mut lateness: Lateness,
    ended: Ended,
) -> (
    Batches<'s, Record>,
    Batches<'s, DeadLetter>,
    Batches<'s, Report>,
) {
    let worker = records.scope().index();
    let mut builder = OperatorBuilder::new("Watermark".to_owned(), records.scope());
    ended.0.wake.replace(Some(
        records
            .scope()
            .activator_for(builder.operator_info().address),
    ));
    let mut input = builder.new_input(records, Pipeline);
    let (ok, ok_stream) = builder.new_output();
    let (dead, dead_stream) = builder.new_output();
    let (reports, report_stream) = builder.new_output();
    let mut ok = OutputBuilder::<_, CapacityContainerBuilder<Vec<Record>>>::from(ok);
    let mut dead = OutputBuilder::<_, CapacityContainerBuilder<Vec<DeadLetter>>>::from(dead);
    let mut reports = OutputBuilder::<_, CapacityContainerBuilder<Vec<Report>>>::from(reports);
    builder.build(move |mut capabilities| {
        // The reports' capability: at the first epoch not yet reported.
        let mut report_at = capabilities.pop();
        // The watermark as each epoch's last message left it: messages of
        // later epochs may be drained before the frontier passes an epoch,
        // and must not show in its report.
        let mut after: BTreeMap<Epoch, Time> = BTreeMap::new();
        let mut reported = lateness.watermark();
        let mut reported_through: Option<Epoch> = None;
        move |frontiers| {
            let mut ok = ok.activate();
            let mut dead = dead.activate();
            input.for_each(|cap, batch| {
                let Some(&epoch) = cap.least() else {
                    return;
                };
                let mut ok = ok.session(&cap);
                let mut dead = dead.session(&cap);
                for record in batch.drain(..) {
                    match lateness.admit(record) {
                        Ok(r) => ok.give(r),
                        Err(d) => dead.give(d),
                    }
                }
                after.insert(epoch, lateness.watermark());
            });
            let Some(cap) = report_at.as_mut() else {
                return;
            };
            let mut reports = reports.activate();
            let frontier = frontiers[0].frontier().first().copied();
            let frontier = match (frontier, ended.get()) {
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
                    after = later;
                    reports
                        .session(&cap.delayed(&covered))
                        .give((worker, reported));
                    // Held at the epoch just reported, not past it: an end
                    // said later (`Ended`) is reported there, where a
                    // window operator can still take it before the source
                    // lets go of its own capability.
                    cap.downgrade(&covered);
                    reported_through = Some(covered);
                }
                Some(_) => {}
            }
        }
    });
    (ok_stream, dead_stream, report_stream)
}
