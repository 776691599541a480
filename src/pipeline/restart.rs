//! Starting a run again after a fault a restart can help: `loanflow run
//! --exactly-once` rides out a broker outage that aborts a transaction.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::control::Control;
use super::run::{run, RunFault};
use super::summary::Summary;
use crate::cli::RunArgs;
use crate::core::fault::RetryHint;

/// [`run`], started again from the last committed transaction after a
/// [`RunFault`] whose fault a restart can help ([`RetryHint::Restart`]), as a
/// supervisor would restart the process (same fencing, a new incarnation, so
/// the exactly-once rule holds unchanged): `loanflow run --exactly-once`
/// rides out a broker outage that hits a transaction. Restarts (and the
/// errors of a restart that cannot reach the broker yet) stop once an outage
/// has lasted `--max-outage`; an outage ends only with a run that commits and
/// keeps going that long. A cluster process never restarts alone (its
/// launcher stops the cluster).
pub fn run_restarting(args: &RunArgs, control: &Control) -> Result<Summary> {
    let mut restarts = Restarts::new(args.kafka.max_outage);
    loop {
        let started = Instant::now();
        let result = run(args, control);
        let Err(e) = &result else {
            return result.map(|summary| Summary {
                restarts: restarts.count,
                ..summary
            });
        };
        if control.stopped() {
            return result;
        }
        match restarts.next(e, started.elapsed(), Instant::now()) {
            Next::Exit => return result,
            Next::GiveUp => {
                let max_outage = restarts.max_outage;
                return result.map_err(|e| {
                    e.context(format!(
                        "gave up after restarting for {max_outage:?} (--max-outage)"
                    ))
                });
            }
            Next::Restart => {
                tracing::warn!("{e:#}; starting again from the last committed transaction");
                let down = Instant::now();
                std::thread::sleep(Duration::from_secs(1));
                if let Some(m) = crate::core::metrics::installed() {
                    m.restarted(down.elapsed().as_secs_f64());
                }
            }
        }
    }
}

/// What [`run_restarting`] does after a failed run.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Restart,
    /// Not a failure a restart recovers from: the run's error stands.
    Exit,
    /// The outage has lasted `--max-outage`.
    GiveUp,
}

/// The outage clock of [`run_restarting`]. An outage starts at a
/// [`RunFault`] whose fault a restart can help ([`RetryHint::Restart`]); while it lasts, the restarts' own errors (the
/// broker is still away) are waited out too, up to `max_outage`. It ends
/// with a run that commits and keeps going for at least `max_outage` (its
/// failure, if any, starts a new one): a run that rides out one outage an
/// hour has the whole `--max-outage` for each. A run that commits a little
/// and fails again soon does not end it: a broker that acknowledges commits
/// but keeps aborting transactions (Tansu's SQLite engine after a restart,
/// BROKER_NOTES quirk 13) would otherwise be retried for ever.
struct Restarts {
    max_outage: Duration,
    outage: Option<Instant>,
    /// Restarts so far.
    count: u32,
}

impl Restarts {
    fn new(max_outage: Duration) -> Restarts {
        Restarts {
            max_outage,
            outage: None,
            count: 0,
        }
    }

    /// What to do after `failure`, seen at `now`, of a run that lasted `ran`.
    fn next(&mut self, failure: &anyhow::Error, ran: Duration, now: Instant) -> Next {
        let restartable = failure
            .downcast_ref::<RunFault>()
            .filter(|f| f.fault.hint() == RetryHint::Restart);
        if restartable.is_some_and(|r| r.committed) && ran >= self.max_outage {
            self.outage = None;
        }
        if restartable.is_none() && self.outage.is_none() {
            return Next::Exit;
        }
        let since = *self.outage.get_or_insert(now);
        if now.duration_since(since) >= self.max_outage {
            return Next::GiveUp;
        }
        self.count += 1;
        Next::Restart
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fault::Fault;

    use anyhow::anyhow;

    fn aborted(committed: bool) -> anyhow::Error {
        RunFault {
            fault: Fault::restartable("transaction aborted"),
            committed,
        }
        .into()
    }

    #[test]
    fn a_fault_a_restart_cannot_help_stands() {
        let fenced = RunFault {
            fault: Fault::fatal("fenced"),
            committed: true,
        };
        let mut r = Restarts::new(s(10));
        assert_eq!(r.next(&fenced.into(), s(60), Instant::now()), Next::Exit);
    }

    const fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// A failure for [`Restarts::next`]: aborted (having committed or
    /// not), or any other error.
    enum F {
        Aborted { committed: bool },
        Other,
    }

    /// Feeds `steps` (failure, seconds the run lasted, seconds since t0,
    /// expected decision) to a fresh clock of `max_outage` seconds.
    fn decide(max_outage: u64, steps: &[(F, u64, u64, Next)]) {
        let t0 = Instant::now();
        let mut r = Restarts::new(s(max_outage));
        for (i, (failure, ran, at, expected)) in steps.iter().enumerate() {
            let failure = match failure {
                F::Aborted { committed } => aborted(*committed),
                F::Other => anyhow!("unreachable"),
            };
            assert_eq!(
                &r.next(&failure, s(*ran), t0 + s(*at)),
                expected,
                "step {i}"
            );
        }
    }

    #[test]
    fn restarts_within_an_outage_and_gives_up_after_max_outage() {
        let aborted = F::Aborted { committed: false };
        decide(
            10,
            &[
                // Not restartable, no outage going on: the error stands.
                (F::Other, 1, 0, Next::Exit),
                (aborted, 60, 0, Next::Restart),
                // The restarts' own errors (broker still away) are waited out...
                (F::Other, 0, 5, Next::Restart),
                // ...for --max-outage from the first failure.
                (F::Other, 0, 10, Next::GiveUp),
            ],
        );
    }

    #[test]
    fn a_run_that_kept_committing_starts_a_new_outage() {
        decide(
            10,
            &[
                (F::Aborted { committed: false }, 60, 0, Next::Restart),
                // The restarted run committed for an hour, then failed again: a
                // new outage with the whole --max-outage, not the first one's clock.
                (F::Aborted { committed: true }, 3600, 3601, Next::Restart),
                (F::Other, 1, 3610, Next::Restart),
                (F::Other, 1, 3611, Next::GiveUp),
            ],
        );
    }

    #[test]
    fn runs_that_fail_soon_after_committing_do_not_end_the_outage() {
        let t0 = Instant::now();
        // Each restart commits a transaction or two, then the broker aborts
        // one again (BROKER_NOTES quirk 13): one outage, given up on.
        let mut r = Restarts::new(s(10));
        assert_eq!(r.next(&aborted(true), s(60), t0), Next::Restart);
        assert_eq!(r.next(&aborted(true), s(5), t0 + s(6)), Next::Restart);
        assert_eq!(r.next(&aborted(true), s(5), t0 + s(12)), Next::GiveUp);
        // One that committed nothing goes on with the outage it is in,
        // however long it took to fail.
        let mut r = Restarts::new(s(10));
        assert_eq!(r.next(&aborted(false), s(1), t0), Next::Restart);
        assert_eq!(r.next(&aborted(false), s(30), t0 + s(31)), Next::GiveUp);
    }
}
