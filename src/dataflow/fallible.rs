//! The operator of a stage that may refuse records: each record becomes an
//! output (`Ok`) or a dead letter (`Err`), in one pass.

use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;

use super::Batches;
use crate::core::record::DeadLetter;
use crate::core::Epoch;

/// An operator that maps each record to `Ok` (passed on) or `Err` (a dead
/// letter), with input routed by `pact`.
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
    L: FnMut(I) -> Result<O, DeadLetter> + 'static,
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
    builder.build(move |_| {
        move |_frontiers| {
            let mut ok = ok.activate();
            let mut dead = dead.activate();
            input.for_each(|cap, batch| {
                let mut ok = ok.session(&cap);
                let mut dead = dead.session(&cap);
                for item in batch.drain(..) {
                    match logic(item) {
                        Ok(o) => ok.give(o),
                        Err(d) => dead.give(d),
                    }
                }
            });
        }
    });
    (ok_stream, dead_stream)
}
