//! Fault injection for tests: `LOANFLOW_FAILPOINTS="NAME=ACTIONS;…"` arms
//! named failpoints (the `fail` crate's actions, e.g.
//! `txn-add-offsets=3*off->1*return->off`: the 4th pass fails, no other).
//! Unset, every failpoint is off and costs one lookup in an empty map.
//!
//! A failpoint stands where a broker failure lands that is too narrow to
//! time from a test:
//! - `txn-add-offsets` (exactly-once sink): a transaction fails to add its
//!   input offsets with an error librdkafka calls abortable, as it does when
//!   the broker goes away in that step. Its outputs and progress record are
//!   delivered first (the case where `verify` must tell from the committed
//!   offsets that it was aborted); the transaction stays open until the
//!   restart's fencing aborts it.
//!
//! Failpoints exist only in a build with the `failpoints` cargo feature
//! (`scripts/test` builds the tests with it); a release build has none, and
//! arming one there is an error rather than a test that tests nothing.

/// Why `LOANFLOW_FAILPOINTS` could not be armed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ENV}: {0}")]
pub struct FailpointError(String);

type Result<T> = std::result::Result<T, FailpointError>;

fn error(message: impl Into<String>) -> FailpointError {
    FailpointError(message.into())
}

/// The environment variable that arms failpoints.
pub const ENV: &str = "LOANFLOW_FAILPOINTS";

/// Every failpoint loanflow has (arming another name is an error: a typo
/// would otherwise test nothing).
pub const KNOWN: &[&str] = &["txn-add-offsets"];

/// Arms the failpoints `LOANFLOW_FAILPOINTS` names (none when it is unset).
pub fn setup() -> Result<()> {
    match std::env::var_os(ENV) {
        Some(_) if !cfg!(feature = "failpoints") => Err(error(
            "this loanflow is built without failpoints (build it with `--features failpoints`)",
        )),
        Some(value) => arm(value),
        None => Ok(()),
    }
}

/// Arms the failpoints a `LOANFLOW_FAILPOINTS` value names.
fn arm(value: std::ffi::OsString) -> Result<()> {
    let value = value.into_string().map_err(|_| error("not UTF-8"))?;
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, actions) = entry
            .split_once('=')
            .map(|(n, a)| (n.trim(), a.trim()))
            .ok_or_else(|| error(format!("`{entry}` is not NAME=ACTIONS")))?;
        if !KNOWN.contains(&name) {
            return Err(error(format!(
                "no failpoint `{name}` (there are: {})",
                KNOWN.join(", ")
            )));
        }
        fail::cfg(name, actions).map_err(|e| error(format!("failpoint `{name}`: {e}")))?;
        tracing::warn!(failpoint = name, actions, "failpoint armed ({ENV})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the failpoint registry is per process.
    #[cfg(feature = "failpoints")]
    #[test]
    fn arms_known_failpoints_and_rejects_the_rest() {
        let armed = |value: &str| arm(value.into()).map_err(|e| e.to_string());
        let e = armed("txn-add-offset=return").unwrap_err();
        assert!(e.contains("no failpoint `txn-add-offset`"), "{e}");
        let e = armed("txn-add-offsets").unwrap_err();
        assert!(e.contains("is not NAME=ACTIONS"), "{e}");
        let e = armed("txn-add-offsets=sometimes").unwrap_err();
        assert!(e.contains("failpoint `txn-add-offsets`"), "{e}");
        armed(" txn-add-offsets = 1*off->1*return ; ").unwrap();
        let passes: Vec<bool> = (0..3)
            .map(|_| fail::eval("txn-add-offsets", |_| ()).is_none())
            .collect();
        assert_eq!(passes, [true, false, true]);
        fail::remove("txn-add-offsets");
    }

    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn a_build_without_failpoints_refuses_to_arm_them() {
        std::env::set_var(ENV, "txn-add-offsets=return");
        let e = setup().unwrap_err().to_string();
        std::env::remove_var(ENV);
        assert!(e.contains("built without failpoints"), "{e}");
    }
}
