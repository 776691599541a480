//! Runtime faults: what stopped a running dataflow, and whether starting it
//! again from what is committed can help ([`RetryHint`], after Arroyo's).
//!
//! Set-up errors (a bad flag, a missing file, an unreachable broker at the
//! start) are not faults: they stop a run before any worker starts and have
//! their own typed errors where they arise. A fault happens while the
//! workers run; the first one a run records decides how it ends.

use std::fmt;

/// Whether a fresh start of the dataflow can recover from a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// The fault stands: a new start would meet it again (a fenced
    /// producer, a file that cannot be written, an outage longer than
    /// `--max-outage`). The run exits non-zero with the fault's message.
    Never,
    /// Nothing half-done survives the fault, and a fresh start from what is
    /// committed redoes the rest: an exactly-once transaction the broker
    /// made us abort. `loanflow run` restarts in process (within
    /// `--max-outage`); a process of a cluster never restarts alone.
    Restart,
}

/// A runtime fault: one line for a person, and whether a restart helps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    message: String,
    hint: RetryHint,
}

impl Fault {
    /// A fault a restart does not help.
    pub fn fatal(message: impl Into<String>) -> Fault {
        Fault {
            message: message.into(),
            hint: RetryHint::Never,
        }
    }

    /// A fault a fresh start from the last commit recovers from.
    pub fn restartable(message: impl Into<String>) -> Fault {
        Fault {
            message: message.into(),
            hint: RetryHint::Restart,
        }
    }

    /// Whether a restart can help.
    pub fn hint(&self) -> RetryHint {
        self.hint
    }

    /// The same fault, never restarted (a cluster process, say).
    pub fn never_retried(self) -> Fault {
        Fault {
            hint: RetryHint::Never,
            ..self
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fault {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_says_whether_a_restart_helps_and_forgets_it_when_told() {
        let f = Fault::restartable("transaction a/0/1 aborted");
        assert_eq!(f.to_string(), "transaction a/0/1 aborted");
        assert_eq!(f.hint(), RetryHint::Restart);
        assert_eq!(f.never_retried().hint(), RetryHint::Never);
        assert_eq!(Fault::fatal("fenced").hint(), RetryHint::Never);
    }
}
