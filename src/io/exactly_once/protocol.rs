//! The exactly-once protocol as data: the headers every transactional
//! message carries, transaction ids, the progress record each transaction
//! writes, and the rule that tells committed transactions from aborted ones
//! ([`Committed`]). Shared by the sink that writes it
//! ([`super::sink`]) and `loanflow verify`, which reads it back.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Header every exactly-once message carries: its writer's incarnation
/// ([`new_incarnation`]).
pub const HEADER_INCARNATION: &str = "loanflow.incarnation";
/// Header every exactly-once message carries: its writer's worker index.
pub const HEADER_WORKER: &str = "loanflow.worker";
/// Header every exactly-once message carries: its transaction's number
/// ([`TxnId::epoch`]).
pub const HEADER_EPOCH: &str = "loanflow.epoch";

/// A fresh id for this process's writers: 16 hex digits.
pub fn new_incarnation() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One transaction: which writer (incarnation, worker) and its number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TxnId {
    /// The run that wrote it ([`new_incarnation`]), the same on every process.
    pub incarnation: String,
    /// The writing worker's global index.
    pub worker: usize,
    /// The transaction's number within its writer, from 0 (not a dataflow
    /// epoch).
    pub epoch: u64,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.incarnation, self.worker, self.epoch)
    }
}

/// Text that is not a transaction id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a transaction id (INCARNATION/WORKER/EPOCH): `{0}`")]
pub struct BadTxnId(String);

impl std::str::FromStr for TxnId {
    type Err = BadTxnId;
    fn from_str(s: &str) -> Result<TxnId, BadTxnId> {
        let bad = || BadTxnId(s.to_owned());
        let mut parts = s.split('/');
        let (Some(incarnation), Some(worker), Some(epoch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if incarnation.is_empty() {
            return Err(bad());
        }
        Ok(TxnId {
            incarnation: incarnation.to_owned(),
            worker: worker.parse().map_err(|_| bad())?,
            epoch: epoch.parse().map_err(|_| bad())?,
        })
    }
}

/// The key of a writer's progress records: `GROUP/INCARNATION/WORKER`.
pub fn progress_key(group: &str, txn: &TxnId) -> String {
    format!("{group}/{}/{}", txn.incarnation, txn.worker)
}

/// The progress record each transaction writes (JSON, keyed by its writer,
/// [`progress_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressRecord {
    /// The transaction, as [`TxnId`] text: `INCARNATION/WORKER/EPOCH`.
    pub txn: String,
    /// The name of the dataflow spec that ran.
    pub dataflow: String,
    /// The consumer group whose offsets the transaction commits.
    pub group: String,
    /// The topic those offsets are of.
    pub input_topic: String,
    /// How many workers the run had (`W` of the transactional id).
    pub workers: usize,
    /// Partition → the next offset to read: everything before it is covered.
    pub offsets: BTreeMap<i32, i64>,
    /// The group's committed offsets when this incarnation started.
    pub resumed_from: BTreeMap<i32, i64>,
    /// Scored applications the transaction wrote.
    pub outputs: u64,
    /// Dead letters the transaction wrote.
    pub dead_letters: u64,
}

/// The transactional.id of worker `worker` of `workers` (invariant 5).
pub fn transactional_id(group: &str, worker: usize, workers: usize) -> String {
    format!("{group}.tx.{workers}-{worker}")
}

/// Which transactions committed (the rule in [`crate::io::exactly_once`]),
/// from the progress records in the progress topic's order — all of them, or
/// what compaction left: the last one of each writer.
pub struct Committed {
    /// Per writer (incarnation, worker): the epoch of its last progress
    /// record and whether that transaction committed. Every earlier one of
    /// the writer did (an incarnation's transactions commit in order).
    last: HashMap<(String, usize), (u64, bool)>,
}

impl Committed {
    /// Judges `progress` (in the progress topic's order) against `now`, the
    /// group's committed offsets as they are now.
    pub fn new(progress: &[ProgressRecord], now: &BTreeMap<i32, i64>) -> Committed {
        // Incarnations in the order they ran, each with the committed
        // offsets it started from.
        let mut order: Vec<&str> = Vec::new();
        let mut resumed: HashMap<&str, &BTreeMap<i32, i64>> = HashMap::new();
        // Per writer: the epoch and record of its last progress record.
        let mut last: HashMap<(String, usize), (u64, &ProgressRecord)> = HashMap::new();
        for r in progress {
            let Ok(txn) = r.txn.parse::<TxnId>() else {
                continue;
            };
            if !resumed.contains_key(txn.incarnation.as_str()) {
                let incarnation = incarnation_of(&r.txn);
                order.push(incarnation);
                resumed.insert(incarnation, &r.resumed_from);
            }
            last.insert((txn.incarnation, txn.worker), (txn.epoch, r));
        }
        // What the offsets were when the next incarnation started (or now).
        let bound_after: HashMap<&str, &BTreeMap<i32, i64>> = order
            .iter()
            .enumerate()
            .map(|(i, inc)| (*inc, order.get(i + 1).map_or(now, |next| resumed[next])))
            .collect();
        let last = last
            .into_iter()
            .map(|(writer, (epoch, r))| {
                let bound = bound_after[writer.0.as_str()];
                let committed = r
                    .offsets
                    .iter()
                    .all(|(p, next)| bound.get(p).is_some_and(|b| next <= b));
                (writer, (epoch, committed))
            })
            .collect();
        Committed { last }
    }

    /// Whether transaction `txn` committed. One after its writer's last
    /// progress record, or of a writer without any, never wrote its progress
    /// record: it was aborted.
    pub fn contains(&self, txn: &TxnId) -> bool {
        match self.last.get(&(txn.incarnation.clone(), txn.worker)) {
            Some(&(last, committed)) => txn.epoch < last || (txn.epoch == last && committed),
            None => false,
        }
    }
}

fn incarnation_of(txn: &str) -> &str {
    txn.split('/').next().unwrap_or(txn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_round_trip_and_reject_garbage() {
        let id = TxnId {
            incarnation: "00ff".into(),
            worker: 3,
            epoch: 42,
        };
        assert_eq!(id.to_string(), "00ff/3/42");
        assert_eq!("00ff/3/42".parse::<TxnId>().unwrap(), id);
        for bad in ["", "a/b/c", "x/1", "x/1/2/3", "/1/2", "x/-1/2"] {
            assert!(bad.parse::<TxnId>().is_err(), "{bad}");
        }
    }

    fn record(txn: &str, offsets: &[(i32, i64)], resumed_from: &[(i32, i64)]) -> ProgressRecord {
        ProgressRecord {
            txn: txn.to_owned(),
            dataflow: "d".into(),
            group: "g".into(),
            input_topic: "in".into(),
            workers: 2,
            offsets: offsets.iter().copied().collect(),
            resumed_from: resumed_from.iter().copied().collect(),
            outputs: 1,
            dead_letters: 0,
        }
    }

    fn txn(s: &str) -> TxnId {
        s.parse().unwrap()
    }

    /// Two incarnations of two workers. Incarnation `a` crashed: worker 0's
    /// last transaction (a/0/7) committed, worker 1's (a/1/9) did not, and
    /// a/1/11 wrote outputs but no progress record. Incarnation `b` resumed
    /// from {0: 30, 1: 20} and its last transactions are not yet committed
    /// past {0: 40, 1: 25}.
    fn history() -> Vec<ProgressRecord> {
        let a = [(0, 0), (1, 0)];
        let b = [(0, 30), (1, 20)];
        vec![
            record("a/0/3", &[(0, 10)], &a),
            record("a/1/4", &[(1, 20)], &a),
            record("a/0/7", &[(0, 30)], &a),
            record("a/1/9", &[(1, 35)], &a),
            record("b/0/2", &[(0, 40)], &b),
            record("b/1/2", &[(1, 25)], &b),
            record("b/1/5", &[(1, 50)], &b),
        ]
    }

    fn judge(progress: &[ProgressRecord]) -> Vec<bool> {
        let now = [(0, 40), (1, 25)].into_iter().collect();
        let committed = Committed::new(progress, &now);
        [
            "a/0/3", "a/0/7", "a/0/8", "a/1/4", "a/1/9", "a/1/11", "b/0/2", "b/1/2", "b/1/5",
            "c/0/1",
        ]
        .iter()
        .map(|t| committed.contains(&txn(t)))
        .collect()
    }

    #[test]
    fn each_writers_last_progress_record_decides() {
        assert_eq!(
            judge(&history()),
            [true, true, false, true, false, false, true, true, false, false]
        );
    }

    #[test]
    fn a_compacted_progress_topic_gives_the_same_answers() {
        // What compaction by writer key leaves: each writer's last record, in order.
        let all = history();
        let compacted: Vec<ProgressRecord> = all
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                let writer = |r: &ProgressRecord| {
                    let t = txn(&r.txn);
                    (t.incarnation, t.worker)
                };
                !all[i + 1..].iter().any(|later| writer(later) == writer(r))
            })
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(compacted.len(), 4);
        assert_eq!(judge(&compacted), judge(&all));
    }
}
