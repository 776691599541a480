//! What the process hands a job: the stop flag its signal handlers set
//! (and which signal set it), and how to halt the process at once.
//!
//! Every command handles SIGINT/SIGTERM alike: it stops reading, delivers
//! what it read, prints its summary, then exits. A job that has an end (a
//! file run, a bounded replay, `ingest`, `generate`, `passthrough`) and was
//! stopped before it returns [`Interrupted`] after its summary, and the
//! process exits 130 (SIGINT) or 143 (SIGTERM); its file outputs stay
//! `.partial`. A live topic run is a service, and a signal is how it ends:
//! it commits what it delivered and exits 0.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// How a job stops the process at once: prints `message`, exits with
/// `code`. Given by the binary (only `main` exits the process); a cluster
/// process needs it when its peers cannot go on without it.
pub type Halt = fn(code: i32, message: &str) -> !;

/// What the process hands a job: the flag its signal handlers set, and how
/// to halt the process.
#[derive(Clone)]
pub struct Control {
    stop: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
    halt: Halt,
}

impl Control {
    /// A job stopped by `stop` (SIGINT/SIGTERM), halting through `halt`.
    pub fn new(stop: Arc<AtomicBool>, halt: Halt) -> Control {
        Control {
            stop,
            signal: Arc::default(),
            halt,
        }
    }

    /// The same, told which signal stopped it by `signal` (its number, set
    /// by the handler before `stop`; 0: none yet).
    pub fn with_signal(mut self, signal: Arc<AtomicUsize>) -> Control {
        self.signal = signal;
        self
    }

    /// The signal that stopped the job, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self.signal.load(Ordering::Relaxed) {
            0 if self.stopped() => Some(SIGINT),
            0 => None,
            n => Some(n as i32),
        }
    }

    /// What a job with an end returns, after its summary, when a signal
    /// stopped it before that end.
    pub fn interrupted(&self) -> Interrupted {
        Interrupted {
            signal: self.signal().unwrap_or(SIGINT),
        }
    }

    /// The stop flag, for the sources to watch.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Whether the process was asked to stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Stops the process at once.
    pub fn halt(&self, code: i32, message: &str) -> ! {
        (self.halt)(code, message)
    }
}

/// SIGINT's number (POSIX).
pub const SIGINT: i32 = 2;

/// SIGTERM's number (POSIX).
pub const SIGTERM: i32 = 15;

/// A job with an end, stopped by a signal before it. Its summary (printed
/// before) says what was done; the process exits [`Interrupted::exit_code`]
/// and prints nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped by {} before the end", signal_name(self.signal))]
pub struct Interrupted {
    /// The signal's number.
    pub signal: i32,
}

impl Interrupted {
    /// 128 + the signal's number, as a shell reports a process the signal
    /// ended: 130 for SIGINT, 143 for SIGTERM.
    pub fn exit_code(&self) -> i32 {
        128 + self.signal
    }
}

/// `SIGINT`, `SIGTERM`, or `signal N`.
pub fn signal_name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".into(),
        SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halt(_: i32, _: &str) -> ! {
        unreachable!("not halted in these tests")
    }

    #[test]
    fn the_signal_that_stopped_a_job_decides_its_exit_code() {
        let (stop, signal) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let control = Control::new(Arc::clone(&stop), halt).with_signal(Arc::clone(&signal));
        assert_eq!(control.signal(), None);
        signal.store(SIGTERM as usize, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(control.signal(), Some(SIGTERM));
        assert_eq!(control.interrupted().exit_code(), 143);
        assert_eq!(
            control.interrupted().to_string(),
            "stopped by SIGTERM before the end"
        );
        assert_eq!(Interrupted { signal: SIGINT }.exit_code(), 130);
    }
}
