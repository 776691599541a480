//! How an idle worker waits: it keeps polling for a while, giving its core
//! to any other thread that wants it after every poll, before it parks.
//!
//! A worker of a run with several workers waits on its peers many times a
//! second (a window run's workers trade members, answers and watermark
//! reports every epoch), and most waits are short: on the VMs we measure on,
//! being parked and woken again costs more than the wait itself. Timely
//! polls for 10 µs before parking (its `idle_spin`); a worker here polls
//! for `--idle-spin` more (100 µs by default), and the window run at -w 2
//! got about 7 % faster (wall time 0.932 of polling off; benches/README.md,
//! "Window features", stop 38).
//!
//! Invariants (cited where they are upheld):
//! 1. **Polling never keeps a core from a thread that wants it.** Every
//!    idle poll is followed by `sched_yield`, so a runnable thread waiting
//!    for this core (another run's worker, timely's network threads in a
//!    cluster) runs first; polling takes only time nobody else asked for.
//!    Timely's own `idle_spin` does not yield, which is why it is left at
//!    its default.
//! 2. **A worker whose polls keep finding nothing soon stops polling.**
//!    Whether a wait ended in work before `--idle-spin` passed is kept as
//!    a running rate; below a quarter, the worker parks at once and polls
//!    only every sixteenth wait, to notice when waits get short again. A
//!    live topic with nothing to read (its source woken by a timer every few
//!    milliseconds) so costs about as little as before.
//! 3. **Only when to park is decided here, never what is computed.** Every
//!    step is timely's own `step_or_park`; a step is taken for work when it
//!    took several times as long as the quickest step seen (an idle step
//!    only polls the channels). Misjudging it moves a park, nothing else.

use std::time::{Duration, Instant};

use timely::worker::Worker;

/// Below this rate of waits that ended in work, a worker parks at once
/// (invariant 2).
const LEAST_RATE: f32 = 0.25;

/// How much of the rate each wait's outcome moves.
const RATE_WEIGHT: f32 = 0.125;

/// While polling is off, one wait in this many polls anyway.
const PROBE_EVERY: u32 = 16;

/// A step this many times as long as the quickest one did work.
const WORK_FACTOR: u32 = 4;

/// ... and at least this long.
const LEAST_WORK: Duration = Duration::from_micros(1);

/// What a worker does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Step again: the step did work.
    Step,
    /// Give up the core to whoever wants it, then poll again.
    Yield,
    /// Park until something happens (timely's `step_or_park`).
    Park,
}

/// One worker's waiting: when it polls and when it parks.
#[derive(Debug)]
pub struct Idle {
    /// How long a wait polls before parking; zero: timely's own wait only.
    spin: Duration,
    /// When the current wait began; `None`: not waiting, or parking at once.
    since: Option<Instant>,
    /// The quickest step seen: an idle step's cost on this machine.
    quickest: Duration,
    /// The running rate of waits that ended in work (invariant 2).
    rate: f32,
    /// Waits that parked at once since the last probe.
    skipped: u32,
}

impl Idle {
    /// Waits that poll for `spin` before parking.
    pub fn new(spin: Duration) -> Idle {
        Idle {
            spin,
            since: None,
            quickest: Duration::MAX,
            rate: 1.0,
            skipped: 0,
        }
    }

    /// Steps `worker` once, then polls, yields or parks (for at most `park`).
    pub fn turn(&mut self, worker: &mut Worker, park: Duration) {
        if self.spin.is_zero() {
            worker.step_or_park(Some(park));
            return;
        }
        let start = Instant::now();
        // A step that never parks: it takes what the channels brought.
        worker.step_or_park(Some(Duration::ZERO));
        let now = Instant::now();
        match self.after(now - start, now) {
            Next::Step => {}
            // Invariant 1: whoever wants the core has it first.
            Next::Yield => std::thread::yield_now(),
            Next::Park => {
                worker.step_or_park(Some(park));
            }
        }
    }

    /// What follows a step that took `took`, ending at `now`.
    fn after(&mut self, took: Duration, now: Instant) -> Next {
        self.quickest = self.quickest.min(took);
        // Invariant 3: an idle step only polls.
        let work = took > LEAST_WORK.max(self.quickest.saturating_mul(WORK_FACTOR));
        if work {
            if self.since.take().is_some() {
                self.outcome(true);
            }
            return Next::Step;
        }
        match self.since {
            None => {
                if !self.polling() {
                    return Next::Park;
                }
                self.since = Some(now);
                Next::Yield
            }
            Some(since) if now.saturating_duration_since(since) < self.spin => Next::Yield,
            Some(_) => {
                self.since = None;
                self.outcome(false);
                Next::Park
            }
        }
    }

    /// Whether a wait that begins now polls (invariant 2).
    fn polling(&mut self) -> bool {
        if self.rate >= LEAST_RATE {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= PROBE_EVERY {
            self.skipped = 0;
            return true;
        }
        false
    }

    /// A polling wait ended: in work, or in a park.
    fn outcome(&mut self, found: bool) {
        let x = if found { 1.0 } else { 0.0 };
        self.rate += RATE_WEIGHT * (x - self.rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_nanos(200);
    const WORK: Duration = Duration::from_micros(20);

    /// Idle steps of 200 ns from `at`, until the first that is not a yield.
    fn wait(idle: &mut Idle, at: &mut Instant) -> (Next, u32) {
        let mut yields = 0;
        loop {
            *at += IDLE;
            match idle.after(IDLE, *at) {
                Next::Yield => yields += 1,
                other => return (other, yields),
            }
        }
    }

    #[test]
    fn work_is_stepped_and_a_short_wait_polls_then_ends_in_work() {
        let mut idle = Idle::new(Duration::from_micros(100));
        let mut at = Instant::now();
        assert_eq!(
            idle.after(IDLE, at),
            Next::Yield,
            "the first idle step polls"
        );
        at += WORK;
        assert_eq!(idle.after(WORK, at), Next::Step, "work is stepped");
        assert_eq!(idle.rate, 1.0, "a wait that ended in work");
        for _ in 0..3 {
            at += WORK;
            assert_eq!(idle.after(WORK, at), Next::Step);
        }
    }

    #[test]
    fn a_wait_parks_once_the_spin_passed() {
        let spin = Duration::from_micros(100);
        let mut idle = Idle::new(spin);
        let mut at = Instant::now();
        let (next, yields) = wait(&mut idle, &mut at);
        assert_eq!(next, Next::Park);
        // 100 µs of 200 ns steps: the first starts the wait.
        assert_eq!(yields, 500);
        assert!(idle.rate < 1.0, "a wait that ended in a park");
    }

    #[test]
    fn waits_that_keep_missing_park_at_once_but_probe_and_come_back() {
        let mut idle = Idle::new(Duration::from_micros(100));
        let mut at = Instant::now();
        let mut misses = 0;
        while idle.rate >= LEAST_RATE {
            assert_eq!(wait(&mut idle, &mut at).0, Next::Park);
            misses += 1;
        }
        // (7/8)^n < 1/4 from the eleventh miss on.
        assert_eq!(misses, 11);
        // Polling is off: waits park at once, but every sixteenth polls.
        let mut at_once = 0;
        loop {
            at += IDLE;
            match idle.after(IDLE, at) {
                Next::Park => at_once += 1,
                Next::Yield => break,
                Next::Step => unreachable!("an idle step"),
            }
        }
        assert_eq!(at_once, PROBE_EVERY - 1);
        // The probe ends in work: the rate is back above a quarter, and the
        // next wait polls.
        at += WORK;
        assert_eq!(idle.after(WORK, at), Next::Step);
        assert!(idle.rate >= LEAST_RATE, "{}", idle.rate);
        at += IDLE;
        assert_eq!(idle.after(IDLE, at), Next::Yield, "polling again");
    }

    #[test]
    fn the_measure_of_work_follows_the_quickest_step() {
        let mut idle = Idle::new(Duration::from_micros(100));
        let at = Instant::now();
        // On a slow machine an idle step takes 3 µs: still idle, since the
        // quickest is 3 µs too (a fixed threshold would call it work and
        // never park).
        let slow = Duration::from_micros(3);
        assert_eq!(idle.after(slow, at), Next::Yield);
        assert_eq!(idle.after(slow, at + slow), Next::Yield);
        assert_eq!(idle.after(slow * 5, at + slow * 7), Next::Step);
    }
}
