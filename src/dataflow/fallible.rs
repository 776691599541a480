//! The operator of a stage that may refuse records: each record becomes an
//! output (`Ok`) or a dead letter, in one pass — or, for a record the run
//! must not go past, stops the stage: its epoch is held for good, so
//! nothing of that epoch or after it is delivered or committed.

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;

use super::Batches;
use crate::core::metrics::{self, StageCounters};
use crate::core::record::DeadLetter;
use crate::core::Epoch;

/// Why a stage does not pass a record on.
#[derive(Debug)]
pub enum Refused {
    /// The record is a dead letter; the stream goes on.
    Dead(DeadLetter),
    /// The run must stop here (the stage has reported why): this epoch and
    /// every later one stay open for good, and nothing more is read.
    Stop,
}

impl From<DeadLetter> for Refused {
    fn from(d: DeadLetter) -> Refused {
        Refused::Dead(d)
    }
}

/// An operator that maps each record to `Ok` (passed on) or a [`Refused`],
/// with input routed by `pact`.
pub fn fallible<'s, I, O, P, L>(
    input: Batches<'s, I>,
    pact: P,
    name: &str,
    mut logic: L,
) -> (Batches<'s, O>, Batches<'s, DeadLetter>)
where
    I: 'static,
    O: 'static,
    P: ParallelizationContract<Epoch, Vec<I>>,
    L: FnMut(I) -> Result<O, Refused> + 'static,
{
    let (ok, _, dead) =
        fallible_with_side(input, pact, name, move |item, _: &mut Vec<()>| logic(item));
    (ok, dead)
}

/// [`fallible`], where each record may also give items to a side output
/// (pushed to the `Vec` it is handed, at the record's epoch); what a
/// refused record pushed is the caller's to take back.
pub fn fallible_with_side<'s, I, O, S, P, L>(
    input: Batches<'s, I>,
    pact: P,
    name: &str,
    mut logic: L,
) -> (Batches<'s, O>, Batches<'s, S>, Batches<'s, DeadLetter>)
where
    I: 'static,
    O: 'static,
    S: 'static,
    P: ParallelizationContract<Epoch, Vec<I>>,
    L: FnMut(I, &mut Vec<S>) -> Result<O, Refused> + 'static,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), input.scope());
    let mut input = builder.new_input(input, pact);
    let (ok, ok_stream) = builder.new_output();
    let (side, side_stream) = builder.new_output();
    let (dead, dead_stream) = builder.new_output();
    let mut ok = OutputBuilder::<_, CapacityContainerBuilder<Vec<O>>>::from(ok);
    let mut side = OutputBuilder::<_, CapacityContainerBuilder<Vec<S>>>::from(side);
    let mut dead = OutputBuilder::<_, CapacityContainerBuilder<Vec<DeadLetter>>>::from(dead);
    let counters = StageCounters::of(&name.to_lowercase());
    builder.build(move |_| {
        // After a `Stop`: the epoch's capability, never released.
        let mut stopped: Option<Capability<Epoch>> = None;
        let mut given = Vec::new();
        // What the last batch gave to the side output: `give_container`
        // takes `given` away, and one grown push by push from nothing moves
        // every item once per doubling, into memory not in cache.
        let mut last_given = 0;
        move |_frontiers| {
            let mut ok = ok.activate();
            let mut side = side.activate();
            let mut dead = dead.activate();
            input.for_each(|cap, batch| {
                if stopped.is_some() {
                    return; // read nothing more
                }
                let mut ok = ok.session(&cap);
                let mut dead = dead.session(&cap);
                let (n_in, mut n_out) = (batch.len(), 0);
                given.reserve(last_given);
                for item in batch.drain(..) {
                    match logic(item, &mut given) {
                        Ok(o) => {
                            n_out += 1;
                            ok.give(o);
                        }
                        Err(Refused::Dead(d)) => {
                            if let Some(m) = metrics::installed() {
                                m.dead_letters(std::slice::from_ref(&d));
                            }
                            dead.give(d);
                        }
                        Err(Refused::Stop) => {
                            stopped = cap.retain_least(0);
                            break;
                        }
                    }
                }
                last_given = given.len();
                if !given.is_empty() {
                    side.session(&cap).give_container(&mut given);
                }
                if stopped.is_some() {
                    return;
                }
                if let Some(c) = &counters {
                    c.moved(n_in, n_out);
                }
            });
        }
    });
    (ok_stream, side_stream, dead_stream)
}
