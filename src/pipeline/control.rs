//! What the process hands a job: the stop flag its signal handlers set,
//! and how to halt the process at once.

use std::sync::atomic::{AtomicBool, Ordering};
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
    halt: Halt,
}

impl Control {
    /// A job stopped by `stop` (SIGINT/SIGTERM), halting through `halt`.
    pub fn new(stop: Arc<AtomicBool>, halt: Halt) -> Control {
        Control { stop, halt }
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
