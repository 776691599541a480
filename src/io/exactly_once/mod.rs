//! Exactly-once Kafka → Kafka: one transactional producer per worker commits
//! each finished stretch of epochs — its outputs, its dead letters, a
//! progress record and the input offsets they cover — in one transaction.
//!
//! # Where offsets meet outputs
//! A transaction can only cover offsets and outputs of one producer, so both
//! must end up on the same worker. The source already reads partition `p` on
//! worker `p % W` (see [`crate::io::kafka`]); in this mode the scored
//! applications and dead letters are exchanged by their *input partition*
//! to that same worker before the sink. The offsets never leave the worker:
//! the source writes each closed epoch's offsets into the worker's
//! [`OffsetLedger`](crate::io::kafka::OffsetLedger), the sink reads them there.
//!
//! Invariants, per worker `w`:
//! 1. The source writes the offsets snapshot of epoch `e` (the offset after
//!    the last record of each owned partition read at or before `e`) into
//!    the ledger *before* its capability passes `e`.
//! 2. Every output (and dead letter) of a record read from `p` at epoch `e`
//!    reaches the sink of worker `p % W` at a time ≤ `e` (times only grow
//!    along the graph).
//! 3. So when the sink's input frontier has passed `e`, it holds every
//!    output of every record its ledger's snapshot `e` covers, and nothing
//!    of a later record: a transaction with exactly those outputs and that
//!    snapshot is all-or-nothing for the records it covers. Outputs of
//!    later epochs stay stashed for the next transaction.
//! 4. A transaction that fails to commit stops the run (the next start
//!    resumes from the last committed offsets); transactions of one
//!    incarnation therefore commit strictly in order, and the sink holds
//!    the capabilities of uncommitted epochs, so the `done` probe (and with
//!    it the source's drain) waits for the commit.
//! 5. `transactional.id` is `GROUP.tx.W-w` (worker `w` of `W`): a restarted
//!    worker's `init_transactions` fences its zombie and waits out whatever
//!    it left open. the pipeline's plan initialises every local worker's producer
//!    *before* it reads the committed offsets the run resumes from.
//!
//! # Telling aborted records apart
//! Some brokers (Tansu among them) deliver records of aborted transactions
//! even to `read_committed` readers; only the committed offsets are
//! trustworthy there. So every message carries headers naming its writer —
//! `loanflow.incarnation` (fresh per run, the same on every process of a
//! cluster), `loanflow.worker`, `loanflow.epoch` (the transaction's number
//! within the incarnation) — and every transaction writes, after its outputs,
//! a progress record to the progress topic (one partition, so in order;
//! compacted, keyed by writer `GROUP/INCARNATION/WORKER`): its id, the input
//! offsets it commits, and `resumed_from`, the committed offsets of every
//! partition as they were when this incarnation started (read after the
//! fencing, before any of its commits). A progress record may itself be an
//! aborted one, but what it states is true either way. Hence the rule
//! `loanflow verify` applies, which needs only each writer's last progress
//! record (what compaction keeps):
//! - that last transaction committed iff every offset it names is ≤ the
//!   committed offset of that partition when the next incarnation started
//!   (its `resumed_from`; for the last incarnation, the committed offsets
//!   now): each transaction moves the offset of every partition it has
//!   outputs from (invariant 3), so an uncommitted one names an offset past
//!   what was committed;
//! - every earlier transaction of that writer committed, since a writer
//!   begins a transaction only after the previous one committed (invariant 4);
//! - a transaction after it (its outputs written, its progress record not)
//!   was aborted, as is one of a writer with no progress record at all.
//!
//! # Layout
//! [`protocol`] (headers, transaction ids, progress records and the rule
//! above, shared with `verify`) and [`sink`] (the transactional producer
//! and sink), built on [`crate::io::kafka`]. May import [`crate::io`] and
//! [`crate::dataflow`] and below; never the pipeline or a command.

pub mod protocol;
pub mod sink;

pub use protocol::{Committed, ProgressRecord, TxnId};
pub use sink::{transactional_producer, TransactionalSink, TransactionalSinkConfig};
