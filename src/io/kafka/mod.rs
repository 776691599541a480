//! Kafka edges: a source that reads a topic's partitions and a sink that
//! writes scored applications (and dead letters) to topics, at least once.
//!
//! # Partition ownership
//! Worker `w` of `W` (global index, so this holds across a cluster) owns
//! partition `p` iff `p % W == w`. Ownership is static: `assign()`, never
//! group rebalancing (consumer-group joins are slow on some brokers and a
//! rebalance would move partitions under a running epoch). Auto-commit and
//! auto offset store are off: offsets move only as described below.
//!
//! # Offsets as progress
//! Invariants, per worker:
//! 1. Every record the source emits at epoch `e` comes from an owned
//!    partition, and after closing `e` the source remembers `next[p]`, the
//!    offset after the last record of `p` read at or before `e`.
//! 2. The sink holds a capability for `e` until every message of `e` has
//!    been acknowledged by the broker; a delivery failure keeps it held
//!    forever (the run then stops with an error).
//! 3. So when the `done` probe (the sinks' output frontier, over all
//!    workers) has passed `e`, every output of every record read up to `e`
//!    is delivered, and committing `next` as of `e` loses nothing. A restart
//!    resumes from the committed offsets: records after them may be scored
//!    twice (at-least-once), never skipped.
//! 4. With window features a run that starts past a partition's beginning
//!    reads it from offset 0 as history (events only, see
//!    `dataflow::watermark::Marks`), and an offsets snapshot never holds a
//!    partition below its start ([`source`]'s `close_epoch`): reading
//!    history moves nothing that is committed, so 3 holds unchanged.
//! 5. **A window run's backlog is bounded, not by the stream.** Its source
//!    is paced by what the window stage took in (pacing it by
//!    delivery could stop the very partition the watermark waits for), so
//!    rows of partitions read ahead of the slowest one would wait for the
//!    watermark in a backlog that grows with the stream. Each owned
//!    partition has its own queue ([`source`]'s `SourceConsumer`), so the
//!    source chooses what it reads: an equal share of every partition per
//!    batch; and while the outputs are more than `ALIGN_EPOCHS` epochs
//!    behind (until they are back within `MAX_EPOCHS_AHEAD`), only the
//!    partitions this worker's watermark waits for (the lowest mark,
//!    `Marks::laggards`), and nothing at all while this worker's watermark
//!    leads the other workers' (`Marks::leads`): the worker holding the
//!    global watermark never leads, so it always reads. A partition not
//!    polled is fetched no further than librdkafka's prefetch. A worker
//!    that read nothing for `STALL` (100 ms) because it leads reads a batch
//!    anyway: a net, should the watermarks it compares never meet. This
//!    paces reading only: what is read, and so 1 and 3, and every output,
//!    are unchanged.
//!
//! # Caught up
//! A partition is at its end when a fetch reports it there (librdkafka's
//! partition EOF, from the high watermark in the fetch response), never from
//! a ListOffsets query, which some brokers answer wrongly. For the same
//! reason a partition's beginning is offset 0 ([`START`]), never asked for.
//!
//! # Layout
//! [`config`] (reaching the cluster, topics, the client context and the
//! run's outage clock), [`reach`] (what librdkafka's events say about
//! reaching the brokers: failures that end a set-up request at once, the
//! sources' lag), [`source`] (the source, as a state struct the
//! operator steps), [`sink`] (the at-least-once sink and what every
//! producer shares), [`readers`] (whole-topic readers outside a dataflow).
//! [`crate::io::exactly_once`] builds on these; nothing here imports it.
//! May import [`crate::io`]'s edge traits and [`Stats`](crate::io::Stats),
//! and [`crate::dataflow`] and below; never the pipeline or a command.

pub mod config;
pub mod reach;
pub mod readers;
pub mod sink;
pub mod source;

pub use config::{
    Context, KafkaConfig, KafkaSetupError, OutageClock, DEFAULT_MAX_OUTAGE, FROM_START, START,
};
pub use readers::{committed_offsets, PartitionReader};
pub use sink::{
    dead_letter_message, output_record, producer, send, topic_of, DeliveryTracker, KafkaSink,
    SinkContext, PRODUCER_DEFAULTS,
};
pub use source::{KafkaSource, OffsetLedger, Offsets};
