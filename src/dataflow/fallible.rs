//! The operator of a stage that may refuse records: each record becomes an
//! output (`Ok`) or a dead letter, in one pass — or, for a record the run
//! must not go past, stops the stage: its epoch is held for good, so
//! nothing of that epoch or after it is delivered or committed.

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
    let mut builder = OperatorBuilder::new(name.to_owned(), input.scope());
    let mut input = builder.new_input(input, pact);
    let (ok, ok_stream) = builder.new_output();
    let (dead, dead_stream) = builder.new_output();
    let mut ok = OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<O>>>::from(ok);
    let mut dead =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<DeadLetter>>>::from(
            dead,
        );
    let counters = StageCounters::of(&name.to_lowercase());
    builder.build(move |_| {
        // After a `Stop`: the epoch's capability, never released.
        let mut stopped: Option<Capability<Epoch>> = None;
        move |_frontiers| {
            let mut ok = ok.activate();
            let mut dead = dead.activate();
            input.for_each(|cap, batch| {
                if stopped.is_some() {
                    return; // read nothing more
                }
                let mut ok = ok.session(&cap);
                let mut dead = dead.session(&cap);
                let (n_in, mut n_out) = (batch.len(), 0);
                for item in batch.drain(..) {
                    match logic(item) {
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
                            return;
                        }
                    }
                }
                if let Some(c) = &counters {
                    c.moved(n_in, n_out);
                }
            });
        }
    });
    (ok_stream, dead_stream)
}
