//! The Kafka source: one worker's share of a topic's partitions, read in
//! epochs, its offsets committed once the outputs they cover are delivered
//! (the invariants are in [`super`]).
//!
//! The operator is thin: all the reading logic is [`Reader`], a state
//! struct whose [`Reader::step`] does one activation's work — commit what
//! was delivered, wait out an outage, drain, read a batch — given only what
//! the sinks have delivered. A unit test drives it against librdkafka's
//! mock cluster, no timely needed.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::Scope;

use super::config::{Context, KafkaConfig, START};
use crate::core::fault::Fault;
use crate::core::position::{From, Until};
use crate::core::record::{now_ns, Origin, RawRecord};
use crate::core::Epoch;
use crate::dataflow::watermark::Marks;
use crate::dataflow::Batches;
use crate::io::{Done, Feed, Progress, Reach, Source, Stats, MAX_EPOCHS_AHEAD};

/// (partition, next offset) pairs, sorted by partition.
pub type Offsets = Vec<(i32, i64)>;

/// The offsets snapshots of one worker's source, read by the same worker's
/// exactly-once sink ([`crate::io::exactly_once`], invariant 1).
/// Worker-local: timely workers are single threads.
#[derive(Clone, Default)]
pub struct OffsetLedger(Rc<RefCell<BTreeMap<Epoch, Offsets>>>);

impl OffsetLedger {
    /// The source closed `epoch` with these next offsets.
    pub fn record(&self, epoch: Epoch, offsets: Offsets) {
        self.0.borrow_mut().insert(epoch, offsets);
    }

    /// The newest snapshot of an epoch before `frontier` (`None`: every
    /// epoch), forgetting it and the older ones.
    pub fn take_before(&self, frontier: Option<Epoch>) -> Option<Offsets> {
        let mut ledger = self.0.borrow_mut();
        let rest = match frontier {
            Some(f) => ledger.split_off(&f),
            None => BTreeMap::new(),
        };
        let done = std::mem::replace(&mut *ledger, rest);
        done.into_values().next_back()
    }
}

/// One worker's part of a Kafka input topic.
pub struct KafkaSource {
    /// How to reach the cluster.
    pub config: Arc<KafkaConfig>,
    /// The topic read.
    pub topic: String,
    /// The consumer group whose committed offsets track progress.
    pub group: String,
    /// The topic's partition count.
    pub partitions: i32,
    /// Where each owned partition starts.
    pub from: From,
    /// Where each owned partition stops; `None`: run live until stopped.
    pub until: Option<Until>,
    /// Whether each partition is in event-time order (a topic `ingest` or
    /// `replay` wrote from an arrival-ordered file): then a partition stops at
    /// its first record at or after `until`. A cleaned topic is not (its rows
    /// are written as the workers finish them): each partition is read to its
    /// end and records at or after `until` are skipped, so none is missed.
    pub ordered: bool,
    /// Records per epoch, counters, the stop flag (on a stop the source
    /// finishes its open epochs and commits them, then stops).
    pub feed: Feed,
    /// With window features, what the source tells the window stage
    /// ([`Marks`]): where the owned partitions ended (a bounded read), so
    /// the watermark moves past them while the source still commits; where
    /// history stops (a run that starts past a partition's beginning reads
    /// from the beginning, so its windows are whole); and that it halted.
    /// A stop (a signal) cannot wait for applications waiting for a
    /// watermark only more reading moves: the source commits what was
    /// delivered and halts, and the next run reads the rest again.
    pub marks: Option<Marks>,
    /// Exactly-once: the offsets go to this worker's transactional sink
    /// (see [`crate::io::exactly_once`]) instead of being committed here.
    pub ledger: Option<OffsetLedger>,
    /// The origin of the ticks an idle source's epochs follow ([`TICK`]):
    /// one instant for every worker (`pipeline::worker::Shared::origin`,
    /// set once the processes of a cluster met). A worker whose own clock
    /// started later (its assignment took longer, its process was launched
    /// later) would tick behind the others, and a busy worker, whose epochs
    /// also keep up with its ticks, would then wait for that one's every
    /// epoch: a window run at `--batch 1` over tied event times read 40
    /// records/s (stop 36).
    pub origin: Instant,
}

impl Source for KafkaSource {
    fn build<'s>(
        self: Box<Self>,
        scope: Scope<'s, Epoch>,
        progress: Progress,
    ) -> Batches<'s, RawRecord> {
        let (index, peers) = (scope.index(), scope.peers());
        source(scope, "KafkaSource", move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut capability = Some(capability);
            let mut reader = Reader::new(*self, index, peers);
            reader.reach = progress.reach;
            let mut batch = Vec::new();
            move |output| {
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                let at = reader.epoch();
                let frontier = |p: &Done| p.with_frontier(|f| f.first().copied());
                let wake = reader.step(
                    frontier(&progress.delivered),
                    frontier(&progress.read),
                    &mut batch,
                );
                if !batch.is_empty() {
                    output.session(&cap).give_container(&mut batch);
                }
                match wake {
                    Wake::Finished => capability = None,
                    Wake::Now | Wake::After(_) if reader.epoch() > at => {
                        cap.downgrade(&reader.epoch());
                        activator.activate_after(wake.delay());
                    }
                    Wake::Now | Wake::After(_) => activator.activate_after(wake.delay()),
                }
            }
        })
    }
}

/// What one batch read so far.
struct Read {
    read_at: i64,
    count: usize,
    bytes: usize,
}

/// When the source's operator runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// At once: there may be more to read.
    Now,
    /// After this long: idle, backpressured or draining.
    After(Duration),
    /// Never: the source is done (its capability is dropped).
    Finished,
}

impl Wake {
    fn delay(self) -> Duration {
        match self {
            Wake::After(d) => d,
            Wake::Now | Wake::Finished => Duration::ZERO,
        }
    }
}

enum Phase {
    Reading,
    /// Reading stopped; waiting for every epoch up to this one to be delivered.
    Draining(Epoch),
}

/// One worker's reading state: what it owns, how far it read, what it
/// committed. [`Reader::step`] is one activation of the source.
pub struct Reader {
    source: KafkaSource,
    topic: Arc<str>,
    /// `None` when it could not be created (the run's fault says why).
    consumer: Option<SourceConsumer>,
    owned: Vec<i32>,
    /// `next[p]`: the offset after the last record read from `p` (invariant 1).
    next: HashMap<i32, i64>,
    /// Partitions read to their bound: their end (EOF) or, with `--until
    /// time:`, their first record at or after that time.
    finished: HashSet<i32>,
    /// Offsets snapshots of closed epochs, not yet known delivered.
    snapshots: VecDeque<(Epoch, Offsets)>,
    /// The epoch records read now belong to.
    epoch: Epoch,
    phase: Phase,
    /// [`KafkaSource::origin`].
    origin: Instant,
    caught_up_since: Option<Instant>,
    /// The offsets of the newest delivered epoch, last committed.
    committed: Option<Offsets>,
    last_outage_log: Option<Instant>,
    last_probe: Option<Instant>,
    /// The read positions at the newest snapshot (a new epoch only when
    /// they move; the snapshot itself may hold a partition at its start).
    last_snapshot: Option<Offsets>,
    /// Workers in the run (all processes).
    peers: usize,
    /// Which partition queue a batch starts at (they take turns).
    turn: usize,
    /// How far past what it is paced by it reads ([`Progress::reach`]).
    reach: Reach,
    /// With window features: whether the outputs lag, entered at
    /// [`ALIGN_EPOCHS`] behind, left once within `MAX_EPOCHS_AHEAD`
    /// (invariant 5 of `super`).
    lagging: bool,
    /// Since when this worker reads nothing because it leads the others.
    held_since: Option<Instant>,
}

/// How many epochs a window run's outputs may lag before its source reads
/// only the partitions its watermark waits for (invariant 5 of `super`).
const ALIGN_EPOCHS: Epoch = 4 * MAX_EPOCHS_AHEAD;

/// How long a window run's worker that leads the other workers' watermark
/// reads nothing before it reads a batch anyway: a net under invariant 5
/// of `super`, should the watermarks it compares never meet.
const STALL: Duration = Duration::from_millis(100);

impl Reader {
    /// Worker `index` of `peers`: owns partition `p` iff `p % peers ==
    /// index`, assigned at the group's committed offsets (or `from`). A
    /// consumer that cannot be made or assigned is the run's fault.
    pub fn new(source: KafkaSource, index: usize, peers: usize) -> Reader {
        let owned: Vec<i32> = (0..source.partitions)
            .filter(|p| *p as usize % peers == index)
            .collect();
        // The process's caught-up count (the run's watcher reports it).
        Stats::add(&source.feed.stats.partitions, owned.len() as u64);
        let consumer = match assign(&source, &owned, source.marks.as_ref()) {
            Ok(c) => Some(c),
            Err(e) => {
                source.feed.stats.fail(Fault::fatal(format!(
                    "cannot read topic `{}`: {e}",
                    source.topic
                )));
                None
            }
        };
        Reader {
            topic: Arc::from(source.topic.as_str()),
            origin: source.origin,
            source,
            consumer,
            owned,
            next: HashMap::new(),
            finished: HashSet::new(),
            snapshots: VecDeque::new(),
            epoch: 0,
            reach: Reach::SINKS,
            phase: Phase::Reading,
            caught_up_since: None,
            committed: None,
            last_outage_log: None,
            last_probe: None,
            last_snapshot: None,
            peers,
            turn: 0,
            lagging: false,
            held_since: None,
        }
    }

    /// The epoch the next records belong to (the capability's time).
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The offsets last known delivered (and committed, unless exactly once).
    pub fn committed(&self) -> Option<&[(i32, i64)]> {
        self.committed.as_deref()
    }

    /// One activation. `done` is the sinks' frontier (`None`: every epoch
    /// delivered), `read` what reading is paced by (see
    /// [`crate::io::Progress`]); records read go to `out`, all at
    /// [`Reader::epoch`] as it was before the call.
    pub fn step(
        &mut self,
        done: Option<Epoch>,
        read: Option<Epoch>,
        out: &mut Vec<RawRecord>,
    ) -> Wake {
        let delivered = |e: Epoch| done.is_none_or(|f| f > e);
        let caught_up = |e: Epoch| read.is_none_or(|f| f > e);
        let Some(consumer) = self.consumer.take() else {
            return Wake::Finished;
        };
        let wake = self.step_with(&consumer, &delivered, &caught_up, out);
        self.consumer = Some(consumer);
        wake
    }

    fn step_with(
        &mut self,
        consumer: &SourceConsumer,
        delivered: &dyn Fn(Epoch) -> bool,
        read: &dyn Fn(Epoch) -> bool,
        out: &mut Vec<RawRecord>,
    ) -> Wake {
        if self.owned.is_empty() {
            // More workers than partitions: this one never has data, and
            // must not hold the others' epochs back.
            return Wake::Finished;
        }
        self.commit_delivered(consumer, delivered);
        // Checked before anything waits on the sinks: while the broker is
        // away they cannot deliver, so backpressure and draining would
        // otherwise wait without bound.
        if let Some(outage) = consumer.context().outage() {
            if !self.wait_out(consumer, outage) {
                return Wake::Finished;
            }
        }
        if let Phase::Draining(last) = self.phase {
            if !delivered(last) {
                if self.source.marks.is_some() {
                    // Window features: other workers' epochs may be ahead,
                    // and their end is reported at their own last epoch,
                    // which a window operator takes only once every
                    // worker's frontier passed it. Empty epochs move ours.
                    self.epoch += 1;
                }
                return Wake::After(Duration::from_millis(1));
            }
            // Everything read is delivered: commit it for sure
            // (synchronously: the process may exit next).
            if let (Some(offsets), None) = (&self.committed, &self.source.ledger) {
                commit(
                    consumer,
                    &self.topic,
                    offsets,
                    true,
                    &self.source.feed.stats,
                );
            }
            return Wake::Finished;
        }
        if self.stopping() {
            if self.epoch == 0 {
                return Wake::Finished; // nothing was read: nothing to commit
            }
            if let Some(marks) = &self.source.marks {
                if self.source.feed.stopping() {
                    // Stopped (not at the bound): applications waiting for
                    // the watermark will not be answered. What was
                    // delivered is committed (synchronously: the process
                    // exits next), and the worker may leave; the capability
                    // stays, or the watermark would pass what was never read.
                    if let (Some(offsets), None) = (&self.committed, &self.source.ledger) {
                        commit(
                            consumer,
                            &self.topic,
                            offsets,
                            true,
                            &self.source.feed.stats,
                        );
                    }
                    marks.halt();
                    return Wake::After(Duration::from_secs(1));
                }
                marks.end(self.epoch - 1);
            }
            self.phase = Phase::Draining(self.epoch - 1);
            return Wake::Now;
        }
        let behind = self.epoch.saturating_sub(self.reach.epochs);
        if behind > 0 && !read(behind - 1) {
            // Backpressure: what reading is paced by is behind; look again
            // shortly.
            return Wake::After(self.reach.recheck);
        }
        // Held (no partition to read, invariant 5 of `super`), the epoch
        // follows the clock, as an idle one does: this worker's reports,
        // and the others' watermark it waits for, move on.
        let only = match self.source.marks.clone() {
            Some(marks) => self.align(&marks, delivered),
            None => None,
        };
        self.read_batch(consumer, only.as_deref(), out);
        self.close_epoch()
    }

    /// Invariant 5 of `super`: which partitions a window run reads now.
    /// `None`: all of them; `Some(ps)`: only `ps`, the ones this worker's
    /// watermark waits for, while the outputs lag, and none while, besides,
    /// this worker's watermark leads the other workers' (for at most
    /// [`STALL`] at a time).
    fn align(&mut self, marks: &Marks, delivered: &dyn Fn(Epoch) -> bool) -> Option<Vec<i32>> {
        let far = self.epoch.saturating_sub(ALIGN_EPOCHS);
        let near = self.epoch.saturating_sub(MAX_EPOCHS_AHEAD);
        if far > 0 && !delivered(far - 1) {
            self.lagging = true;
        } else if near == 0 || delivered(near - 1) {
            self.lagging = false;
        }
        let reading: Vec<i32> = self
            .owned
            .iter()
            .copied()
            .filter(|p| !self.finished.contains(p))
            .collect();
        let laggards = marks.laggards(&reading);
        if !self.lagging || laggards.is_empty() {
            self.held_since = None;
            return None;
        }
        if self.peers > 1 && marks.leads() {
            let since = *self.held_since.get_or_insert_with(Instant::now);
            if since.elapsed() < STALL {
                return Some(Vec::new());
            }
        }
        self.held_since = None;
        Some(laggards)
    }

    /// Commits the newest snapshot whose epoch every sink has delivered
    /// (invariant 3); in exactly-once mode the sink commits, with the outputs.
    fn commit_delivered(&mut self, consumer: &SourceConsumer, delivered: &dyn Fn(Epoch) -> bool) {
        let mut ready = None;
        while self.snapshots.front().is_some_and(|(e, _)| delivered(*e)) {
            ready = self.snapshots.pop_front();
        }
        if let Some((e, offsets)) = ready {
            if self.source.ledger.is_none() {
                commit(
                    consumer,
                    &self.topic,
                    &offsets,
                    false,
                    &self.source.feed.stats,
                );
                tracing::debug!(epoch = e, ?offsets, "committed");
            }
            self.committed = Some(offsets);
        }
    }

    /// Whether reading ends now: a signal, a fault, or every partition at
    /// its bound and still so after a grace period (an end-of-partition
    /// seen while the broker was still appending is followed by more).
    fn stopping(&mut self) -> bool {
        let all_finished = self.source.until.is_some() && self.finished.len() == self.owned.len();
        let caught_up = match (all_finished, self.caught_up_since) {
            (false, _) => {
                self.caught_up_since = None;
                false
            }
            (true, None) => {
                self.caught_up_since = Some(Instant::now());
                false
            }
            (true, Some(since)) => since.elapsed() >= CAUGHT_UP_GRACE,
        };
        self.source.feed.stopping() || caught_up
    }

    /// Reads up to a batch of records into `out`, moving `next` (invariant
    /// 1): from every owned partition's queue in turn, an equal share each
    /// while they have records, or only from `only`'s.
    fn read_batch(
        &mut self,
        consumer: &SourceConsumer,
        only: Option<&[i32]>,
        out: &mut Vec<RawRecord>,
    ) {
        let batch = self.source.feed.batch;
        let mut read = Read {
            read_at: now_ns(),
            count: 0,
            bytes: 0,
        };
        // Callbacks (statistics, errors) are served from the main queue,
        // which has no messages (each partition has its own, `assign`);
        // one that came there would be read as any other, in its order.
        while let Some(polled) = consumer.poll(Duration::ZERO) {
            if !self.take(consumer, polled, &mut read, out) {
                break;
            }
        }
        let queues = &consumer.queues;
        let mut open: Vec<usize> = (0..queues.len())
            .map(|i| (i + self.turn) % queues.len())
            .filter(|i| only.is_none_or(|ps| ps.contains(&queues[*i].0)))
            .collect();
        self.turn = self.turn.wrapping_add(1);
        let share = (batch / open.len().max(1)).max(1);
        'batch: while !open.is_empty() {
            let mut i = 0;
            while i < open.len() {
                let queue = &queues[open[i]].1;
                let mut taken = 0;
                let mut more = true;
                while taken < share {
                    if read.count >= batch {
                        break 'batch;
                    }
                    let Some(polled) = queue.poll(Duration::ZERO) else {
                        more = false;
                        break;
                    };
                    taken += 1;
                    if !self.take(consumer, polled, &mut read, out) {
                        more = false;
                        break;
                    }
                }
                if more {
                    i += 1;
                } else {
                    open.swap_remove(i);
                }
            }
        }
        self.source.feed.stats.read(read.count, read.bytes as u64);
    }

    /// Takes one polled message or event into `out` (or not, as the
    /// bounds say). Whether its queue may be polled on.
    fn take(
        &mut self,
        consumer: &BaseConsumer<Context>,
        polled: KafkaResult<BorrowedMessage<'_>>,
        read: &mut Read,
        out: &mut Vec<RawRecord>,
    ) -> bool {
        let skip_before = match self.source.from {
            From::Time(t) => Some(t),
            _ => None,
        };
        let stop_at = match self.source.until {
            Some(Until::Time(t)) => Some(t),
            _ => None,
        };
        match polled {
            Ok(message) => {
                let partition = message.partition();
                if stop_at.is_some() && self.finished.contains(&partition) {
                    return true; // fetched before the pause took hold
                }
                let time = message
                    .timestamp()
                    .to_millis()
                    .map(|ms| ms.saturating_mul(1_000_000));
                if let (Some(t), Some(until)) = (time, stop_at) {
                    if t >= until && !self.source.ordered {
                        self.next.insert(partition, message.offset() + 1);
                        Stats::add(&self.source.feed.stats.skipped, 1);
                        return true;
                    }
                    if t >= until {
                        // This partition's bound: not read, not committed past.
                        if self.finished.insert(partition) {
                            at_end(&self.source.feed.stats, true);
                        }
                        pause(consumer, &self.source.topic, partition);
                        return true;
                    }
                }
                if self.finished.remove(&partition) {
                    at_end(&self.source.feed.stats, false);
                }
                self.next.insert(partition, message.offset() + 1);
                if let (Some(t), Some(from)) = (time, skip_before) {
                    // With window features, the records before the
                    // first one at or after `--from` are history (read,
                    // not answered); after it, earlier ones are skipped.
                    let history = self.source.marks.as_ref().filter(|m| m.pending(partition));
                    match history {
                        Some(marks) if t >= from => marks.start_at(partition, message.offset()),
                        Some(_) => {}
                        None if t < from => {
                            Stats::add(&self.source.feed.stats.skipped, 1);
                            return true;
                        }
                        None => {}
                    }
                }
                let payload = message.payload().unwrap_or_default();
                read.bytes += payload.len();
                read.count += 1;
                let origin = Origin::Kafka {
                    topic: Arc::clone(&self.topic),
                    partition,
                    offset: message.offset(),
                };
                if self
                    .source
                    .marks
                    .as_ref()
                    .is_some_and(|m| m.is_history(&origin))
                {
                    Stats::add(&self.source.feed.stats.history, 1);
                }
                out.push(RawRecord {
                    read_at: read.read_at,
                    bytes: payload.to_vec(),
                    origin,
                });
                true
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                if self.finished.insert(partition) {
                    at_end(&self.source.feed.stats, true);
                }
                false
            }
            Err(e) => {
                consumer.context().note(&e);
                tracing::warn!(topic = %self.source.topic, "consumer: {e} (retrying)");
                false
            }
        }
    }

    /// Closes the epoch if the offsets moved (a snapshot, for the ledger
    /// too), else lets an idle epoch follow the clock.
    fn close_epoch(&mut self) -> Wake {
        if next_changed(&self.next, self.last_snapshot.as_deref()) {
            let mut offsets: Offsets = self.next.iter().map(|(p, o)| (*p, *o)).collect();
            offsets.sort_unstable();
            self.last_snapshot = Some(offsets.clone());
            // Invariant 4 of `super`: a partition still reading its history
            // keeps its start, never committed below where the run began (that
            // would read the answered records again, and make `verify`
            // take committed transactions for aborted ones).
            if let Some(marks) = &self.source.marks {
                for (p, o) in &mut offsets {
                    if let Some(start) = marks.start(*p) {
                        *o = (*o).max(start);
                    }
                }
            }
            if let Some(ledger) = &self.source.ledger {
                // Invariant 1 of exactly_once: recorded before the capability moves on.
                ledger.record(self.epoch, offsets.clone());
            }
            self.snapshots.push_back((self.epoch, offsets));
            self.epoch = (self.epoch + 1).max(tick(self.origin));
            Wake::Now
        } else {
            // Idle: nothing fetched. Let the epoch follow the clock, so an
            // idle partition never holds back the epochs (and the commits,
            // and the backpressure) of busy workers; look again soon, and
            // serve commits meanwhile.
            self.epoch = self.epoch.max(tick(self.origin));
            Wake::After(Duration::from_millis(2))
        }
    }

    /// While no broker answers: logs what the run waits for (every 5 s),
    /// asks the broker for a partition's watermarks about once a second (an
    /// idle topic sends nothing that would show it is back) and fails the
    /// run after `--max-outage`. Returns whether reading may go on.
    fn wait_out(&mut self, consumer: &BaseConsumer<Context>, outage: Duration) -> bool {
        let config = &self.source.config;
        let max = config.max_outage;
        if outage > max {
            self.source.feed.stats.fail(Fault::fatal(format!(
                "the broker at {} has been unreachable for {} s, longer than --max-outage {} s; nothing undelivered was committed: start it again and re-run (the run resumes from the committed offsets)",
                config.brokers,
                outage.as_secs(),
                max.as_secs()
            )));
            return false;
        }
        if self
            .last_outage_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            self.last_outage_log = Some(Instant::now());
            tracing::warn!(
                "waiting for the broker at {}: unreachable for {} s (gives up after --max-outage {} s)",
                config.brokers,
                outage.as_secs(),
                max.as_secs()
            );
        }
        // A real round trip (metadata may be answered from librdkafka's cache);
        // only whether the broker answers counts, never the (unreliable) values.
        if self
            .last_probe
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last_probe = Some(Instant::now());
            let probe =
                consumer.fetch_watermarks(&self.source.topic, 0, Duration::from_millis(300));
            tracing::debug!(?probe, "outage probe");
            if probe.is_ok() {
                consumer.context().broker_answered();
            }
        }
        true
    }
}

/// A source's consumer with a queue per owned partition, closed when
/// dropped unless the broker is unreachable.
///
/// A queue per partition lets the reader choose which partitions it reads
/// (invariant 5 of `super`): librdkafka prefetches each partition into its
/// own queue, up to `queued.min.messages` or `queued.max.messages.kbytes`
/// of it, and fetches a partition whose queue is not polled no further.
///
/// Closing a consumer waits for the answers to its requests in flight (an
/// asynchronous offset commit, say); a broker that is gone never sends them,
/// and a run giving up after `--max-outage` would then hang on its way out
/// (librdkafka times the request out only after `socket.timeout.ms`, 60 s).
/// Such a consumer is left unclosed instead: the process is about to exit,
/// and nothing is committed that the outputs do not cover (the commits in
/// flight name delivered offsets only).
struct SourceConsumer {
    consumer: Option<Arc<BaseConsumer<Context>>>,
    /// (partition, its queue), in partition order. They share the consumer,
    /// which closes when the last of them is dropped.
    queues: Vec<(i32, PartitionQueue<Context>)>,
}

impl std::ops::Deref for SourceConsumer {
    type Target = BaseConsumer<Context>;

    fn deref(&self) -> &BaseConsumer<Context> {
        self.consumer.as_ref().expect("taken only when dropped")
    }
}

impl Drop for SourceConsumer {
    fn drop(&mut self) {
        let consumer = self.consumer.take();
        if let Some(outage) = consumer.as_ref().and_then(|c| c.context().outage()) {
            tracing::debug!(
                ?outage,
                "the broker is unreachable: not closing the consumer"
            );
            std::mem::forget(consumer);
        }
    }
}

/// A source's consumer for `owned` partitions: no auto-commit, no auto
/// offset store (offsets move only as the invariants say), partition EOF
/// reported, and librdkafka's prefetch budget for one consumer queue (100,000
/// messages, 64 MiB) shared by the partitions' own queues, which it would
/// otherwise give each in full (`-X` overrides either).
fn consumer(source: &KafkaSource, owned: usize) -> Result<BaseConsumer<Context>, KafkaError> {
    let messages = (100_000 / owned.max(1)).max(1_000).to_string();
    let kbytes = (65_536 / owned.max(1)).max(1_024).to_string();
    source
        .config
        .client_config(&[
            ("queued.min.messages", &messages),
            ("queued.max.messages.kbytes", &kbytes),
            ("group.id", &source.group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            // Per-partition fetch positions and high watermarks, for the
            // lag the run shows (`Context` keeps them; nothing is queried).
            ("statistics.interval.ms", "1000"),
            (
                "auto.offset.reset",
                match source.from {
                    From::Latest => "latest",
                    _ => "earliest",
                },
            ),
        ])
        .create_with_context(source.config.context())
}

/// Why a source could not start reading.
#[derive(Debug, thiserror::Error)]
enum AssignError {
    #[error("{0}")]
    Client(#[from] KafkaError),
    #[error("cannot read the committed offsets of group `{group}`: {source}")]
    Committed { group: String, source: KafkaError },
    #[error("cannot give partition {partition} of `{topic}` its own queue")]
    Queue { topic: String, partition: i32 },
}

/// Creates this worker's consumer and assigns its partitions at the group's
/// committed offsets (or the start position where there is none), each
/// into its own queue: split before the assignment starts fetching, so
/// that no message of it reaches the main queue (librdkafka keeps a queue
/// the application split off from then on, `RD_KAFKA_Q_F_FWD_APP`). With
/// window features (`marks`), a partition whose start is past its beginning
/// is assigned at its beginning instead, and `marks` learns where history
/// stops: the windows are rebuilt from every retained record before the
/// start (what a restart costs: reading the partition from its earliest
/// retained offset, without emitting).
fn assign(
    source: &KafkaSource,
    owned: &[i32],
    marks: Option<&Marks>,
) -> Result<SourceConsumer, AssignError> {
    let consumer = Arc::new(consumer(source, owned.len())?);
    let mut queues = Vec::with_capacity(owned.len());
    for &p in owned {
        let queue = consumer
            .split_partition_queue(&source.topic, p)
            .ok_or_else(|| AssignError::Queue {
                topic: source.topic.clone(),
                partition: p,
            })?;
        queues.push((p, queue));
    }
    let consumer = SourceConsumer {
        consumer: Some(consumer),
        queues,
    };
    if owned.is_empty() {
        return Ok(consumer);
    }
    let mut wanted = TopicPartitionList::new();
    for &p in owned {
        wanted.add_partition(&source.topic, p);
    }
    let committed = consumer
        .committed_offsets(wanted, source.config.connect_timeout)
        .map_err(|e| AssignError::Committed {
            group: source.group.clone(),
            source: e,
        })?;
    // Offsets-for-times is a hint (some brokers answer 0 for every time):
    // records before the time are skipped by their timestamp anyway. A
    // positive answer is trusted, as Kafka's is exact (every record before
    // it is older); scripts/BROKER_NOTES.md quirk 4 has a broker where not.
    let hints = match source.from {
        From::Time(t) => {
            let mut tpl = TopicPartitionList::new();
            for &p in owned {
                tpl.add_partition_offset(
                    &source.topic,
                    p,
                    Offset::Offset(t.div_euclid(1_000_000)),
                )?;
            }
            consumer
                .offsets_for_times(tpl, source.config.connect_timeout)
                .inspect_err(|e| tracing::info!("cannot look up offsets by time: {e}"))
                .ok()
        }
        _ => None,
    };
    let mut assignment = TopicPartitionList::new();
    for &p in owned {
        let committed = committed
            .find_partition(&source.topic, p)
            .map(|e| e.offset())
            .filter(|o| matches!(o, Offset::Offset(n) if *n >= 0));
        let offset = match source.from {
            From::Committed => committed.unwrap_or(START),
            From::Earliest => START,
            From::Latest => Offset::End,
            From::Offset(n) => Offset::Offset(n),
            From::Time(_) => hints
                .as_ref()
                .and_then(|h| h.find_partition(&source.topic, p))
                .map(|e| e.offset())
                .filter(|o| matches!(o, Offset::Offset(n) if *n >= 0) || *o == Offset::End)
                .unwrap_or(START),
        };
        let offset = match marks {
            Some(marks) => history(source, &consumer, marks, p, offset),
            None => offset,
        };
        tracing::info!(topic = %source.topic, partition = p, ?offset, group = %source.group, "assigned");
        assignment.add_partition_offset(&source.topic, p, offset)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Where a window run reads partition `p` that would start at `start`:
/// at offset 0 (not the broker's "earliest", scripts/BROKER_NOTES.md quirk
/// 9; records gone by retention are passed over by `auto.offset.reset`),
/// with `marks` told where history stops. `--from latest` needs the
/// partition's end, which is looked up (and, where that fails, the windows
/// start empty, said in the log).
fn history(
    source: &KafkaSource,
    consumer: &BaseConsumer<Context>,
    marks: &Marks,
    p: i32,
    start: Offset,
) -> Offset {
    let at = match (source.from, start) {
        (From::Time(_), _) => {
            marks.start_pending(p);
            None
        }
        (_, Offset::End) => {
            match consumer.fetch_watermarks(&source.topic, p, source.config.connect_timeout) {
                Ok((_, high)) => Some(high),
                Err(e) => {
                    tracing::warn!(topic = %source.topic, partition = p,
                        "cannot look up the partition's end ({e}): its window features start empty");
                    return start;
                }
            }
        }
        (_, Offset::Offset(n)) => Some(n),
        _ => return start,
    };
    if let Some(at) = at {
        if at <= 0 {
            return start; // nothing before the start: no history
        }
        marks.start_at(p, at);
    }
    tracing::info!(topic = %source.topic, partition = p, until = ?at,
        "reading history from offset 0 to rebuild the windows");
    START
}

/// How long every owned partition must stay at its end before a bounded run
/// ends.
const CAUGHT_UP_GRACE: Duration = Duration::from_millis(100);

/// Epochs advance at least once per this long, busy or idle, counted from
/// one origin for every worker ([`KafkaSource::origin`]).
const TICK: Duration = Duration::from_millis(2);

/// The clock's epoch: how many ticks since `origin` ([`KafkaSource::origin`]).
fn tick(origin: Instant) -> Epoch {
    (origin.elapsed().as_nanos() / TICK.as_nanos()) as Epoch
}

/// Whether `next` moved since the last snapshot (skipped records move it too).
fn next_changed(next: &HashMap<i32, i64>, last: Option<&[(i32, i64)]>) -> bool {
    match last {
        None => !next.is_empty(),
        Some(last) => last.len() != next.len() || last.iter().any(|(p, o)| next.get(p) != Some(o)),
    }
}

/// Counts a partition of the process as at its end (or no longer).
fn at_end(stats: &Stats, yes: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    if yes {
        stats.partitions_at_end.fetch_add(1, Relaxed);
    } else {
        stats.partitions_at_end.fetch_sub(1, Relaxed);
    }
}

/// Stops fetching a partition that reached its bound.
fn pause(consumer: &BaseConsumer<Context>, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = consumer.pause(&tpl) {
        tracing::warn!(topic, partition, "cannot pause a finished partition: {e}");
    }
}

/// Commits `offsets` of `topic` for the group. A failed asynchronous commit
/// loses nothing (the records are re-read after a restart), so only a
/// failed final (synchronous) one is the run's fault.
fn commit(
    consumer: &BaseConsumer<Context>,
    topic: &str,
    offsets: &[(i32, i64)],
    sync: bool,
    stats: &Stats,
) {
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, p, Offset::Offset(o)) {
            stats.fail(Fault::fatal(format!(
                "cannot commit offset {o} of {topic}/{p}: {e}"
            )));
            return;
        }
    }
    let mode = if sync {
        CommitMode::Sync
    } else {
        CommitMode::Async
    };
    if let Some(m) = crate::core::metrics::installed() {
        for &(p, o) in offsets {
            m.set_committed_offset(topic, p, o);
        }
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        if sync {
            stats.fail(Fault::fatal(format!(
                "cannot commit offsets of `{topic}`: {e}"
            )));
        } else {
            tracing::warn!(
                topic,
                "offset commit failed (will retry with the next epoch): {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;

    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::ClientConfig;

    use super::*;
    use crate::io::kafka::readers::committed_offsets;

    const RECORDS: usize = 60;

    /// A mock cluster (a fast stand-in for unit tests; the Tansu tests are
    /// the proof) with RECORDS messages over three partitions of `in`.
    fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("in", 3, 1).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .unwrap();
        for n in 0..RECORDS {
            let payload = format!("{{\"n\":{n}}}");
            producer
                .send(
                    BaseRecord::<[u8], [u8]>::to("in")
                        .partition((n % 3) as i32)
                        .payload(payload.as_bytes()),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        mock
    }

    fn config(
        mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    ) -> Arc<KafkaConfig> {
        Arc::new(KafkaConfig::new(&mock.bootstrap_servers(), &[], Duration::from_secs(10)).unwrap())
    }

    fn source(config: &Arc<KafkaConfig>, stats: &Arc<Stats>) -> KafkaSource {
        KafkaSource {
            config: Arc::clone(config),
            topic: "in".into(),
            group: "g".into(),
            partitions: 3,
            from: From::Committed,
            until: Some(Until::End),
            ordered: true,
            feed: Feed {
                batch: 7,
                stats: Arc::clone(stats),
                stop: Arc::new(AtomicBool::new(false)),
            },
            marks: None,
            ledger: None,
            origin: Instant::now(),
        }
    }

    /// Steps until the reader finishes, the sinks delivering each epoch as
    /// soon as it closes; returns what it read.
    fn drive(reader: &mut Reader) -> Vec<RawRecord> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut read = Vec::new();
        loop {
            assert!(Instant::now() < deadline, "the reader never finished");
            let done = Some(reader.epoch());
            match reader.step(done, done, &mut read) {
                Wake::Finished => return read,
                Wake::Now => {}
                Wake::After(d) => std::thread::sleep(d),
            }
        }
    }

    #[test]
    fn a_reader_reads_every_record_once_and_commits_what_was_delivered() {
        let mock = cluster();
        let config = config(&mock);
        let stats = Arc::new(Stats::default());
        let mut reader = Reader::new(source(&config, &stats), 0, 1);
        let read = drive(&mut reader);
        assert!(stats.failure().is_none(), "{:?}", stats.failure());
        let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for r in &read {
            let Origin::Kafka {
                partition, offset, ..
            } = r.origin
            else {
                panic!("a Kafka origin")
            };
            per_partition.entry(partition).or_default().push(offset);
        }
        // Every record once, in offset order within its partition.
        assert_eq!(read.len(), RECORDS);
        for offsets in per_partition.values() {
            assert_eq!(*offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
        }
        // What the reader committed is what the group now has: the end of
        // every partition, everything read being delivered.
        let expected: Vec<(i32, i64)> = (0..3).map(|p| (p, (RECORDS / 3) as i64)).collect();
        assert_eq!(reader.committed(), Some(expected.as_slice()));
        let group = committed_offsets(&config, "g", "in", 0..3).unwrap();
        assert_eq!(group.into_iter().collect::<Vec<_>>(), expected);
        assert_eq!(Stats::get(&stats.records_in), RECORDS as u64);

        // A second reader of the same group resumes there: nothing to read.
        let mut again = Reader::new(source(&config, &stats), 0, 1);
        assert!(drive(&mut again).is_empty());
    }

    /// A mock cluster with `per` messages in each of `partitions`
    /// partitions of `in`.
    fn even_cluster(
        partitions: i32,
        per: usize,
    ) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("in", partitions, 1).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .unwrap();
        for n in 0..partitions as usize * per {
            producer
                .send(
                    BaseRecord::<[u8], [u8]>::to("in")
                        .partition((n % partitions as usize) as i32)
                        .payload(b"{}"),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        mock
    }

    /// Idle epochs follow one clock for every worker of a process: a
    /// worker that starts reading later ticks with the others, not behind
    /// them (`KafkaSource::origin`).
    #[test]
    fn idle_workers_started_apart_tick_together() {
        let mock = cluster();
        mock.create_topic("quiet", 2, 1).unwrap();
        let stats = Arc::new(Stats::default());
        let quiet = || KafkaSource {
            topic: "quiet".into(),
            partitions: 2,
            until: None,
            ..source(&config(&mock), &stats)
        };
        let origin = Instant::now();
        let mut first = Reader::new(KafkaSource { origin, ..quiet() }, 0, 2);
        std::thread::sleep(TICK * 20);
        let mut later = Reader::new(KafkaSource { origin, ..quiet() }, 1, 2);
        let mut read = Vec::new();
        let stepping = Instant::now();
        for reader in [&mut first, &mut later] {
            assert!(matches!(reader.step(None, None, &mut read), Wake::After(_)));
        }
        // Ticks that passed between the two steps (a loaded machine): one
        // clock puts them that far apart at most; two, 20 ticks less.
        let between = (stepping.elapsed().as_nanos() / TICK.as_nanos()) as Epoch + 1;
        assert!(read.is_empty(), "nothing to read");
        let (a, b) = (first.epoch(), later.epoch());
        assert!(a >= 20 && b >= 20, "idle epochs follow the clock: {a}, {b}");
        assert!(
            a.abs_diff(b) <= between,
            "one clock: worker 0 at {a}, worker 1 at {b}, {between} ticks apart at most"
        );
    }

    /// Worker 0 of `peers`, reading `partitions` partitions of `mock`'s `in`
    /// for a window run whose watermark operator speaks through `marks`.
    fn window_reader(
        mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        stats: &Arc<Stats>,
        marks: &Marks,
        partitions: i32,
        peers: usize,
    ) -> Reader {
        let source = KafkaSource {
            partitions,
            marks: Some(marks.clone()),
            ..source(&config(mock), stats)
        };
        Reader::new(source, 0, peers)
    }

    /// How many of `read` came from partition `p`.
    fn from_partition(read: &[RawRecord], p: i32) -> usize {
        read.iter()
            .filter(|r| matches!(r.origin, Origin::Kafka { partition, .. } if partition == p))
            .count()
    }

    /// Steps with the outputs delivered as far as `done` until `until` holds.
    fn step_until(
        reader: &mut Reader,
        done: Option<Epoch>,
        read: &mut Vec<RawRecord>,
        until: impl Fn(&[RawRecord]) -> bool,
        what: &str,
    ) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !until(read) {
            assert!(Instant::now() < deadline, "{what}");
            if let Wake::After(d) = reader.step(done, Some(reader.epoch()), read) {
                std::thread::sleep(d);
            }
        }
    }

    /// The offsets read of each partition: every record once, in order.
    fn assert_each_once_in_order(read: &[RawRecord], partitions: &[i32], per: usize) {
        for &p in partitions {
            let offsets: Vec<i64> = read
                .iter()
                .filter_map(|r| match r.origin {
                    Origin::Kafka {
                        partition, offset, ..
                    } if partition == p => Some(offset),
                    _ => None,
                })
                .collect();
            assert_eq!(
                offsets,
                (0..per as i64).collect::<Vec<_>>(),
                "partition {p}: every record once, in order"
            );
        }
    }

    /// Partitions are read evenly, from a queue each: a batch takes an
    /// equal share of every partition that has records.
    #[test]
    fn a_reader_reads_its_partitions_evenly() {
        const PER: usize = 300;
        let mock = even_cluster(3, PER);
        let config = config(&mock);
        let stats = Arc::new(Stats::default());
        let mut reader = Reader::new(source(&config, &stats), 0, 1);
        let mut read = Vec::new();
        let done = Some(u64::MAX);
        step_until(
            &mut reader,
            done,
            &mut read,
            |r| r.len() >= 3 * PER / 2,
            "half was never read",
        );
        let counts: Vec<usize> = (0..3).map(|p| from_partition(&read, p)).collect();
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // Each batch of 7 takes 2 of each partition (and one more of the
        // first's); a partition whose fetch came late catches up next batch.
        assert!(hi - lo <= 60, "uneven: {counts:?}");
        read.extend(drive(&mut reader));
        assert_each_once_in_order(&read, &[0, 1, 2], PER);
    }

    /// A window run's reader whose outputs lag reads only the partition its
    /// watermark waits for (invariant 5 of `super`), and once they caught
    /// up every partition again: every record once, in order.
    #[test]
    fn a_window_reader_whose_outputs_lag_reads_only_the_slowest_partition() {
        const PER: usize = 400;
        let mock = even_cluster(3, PER);
        let stats = Arc::new(Stats::default());
        let marks = Marks::default();
        // Partition 1 is the slowest in event time: the watermark waits for it.
        marks.publish([(0, 100), (1, 50), (2, 200)], 50);
        let mut reader = window_reader(&mock, &stats, &marks, 3, 1);
        let mut read = Vec::new();
        // Nothing is delivered: after ALIGN_EPOCHS epochs the outputs lag,
        // and only partition 1 is read on, to its end.
        let what = "partition 1 was not read to its end";
        step_until(
            &mut reader,
            Some(0),
            &mut read,
            |r| from_partition(r, 1) == PER,
            what,
        );
        for p in [0, 2] {
            let n = from_partition(&read, p);
            assert!(
                n < PER / 2,
                "partition {p} led the watermark, yet {n} of its records were read"
            );
        }
        // At its end it holds nothing back: 0 is the slowest now.
        let two = from_partition(&read, 2);
        step_until(
            &mut reader,
            Some(0),
            &mut read,
            |r| from_partition(r, 0) == PER,
            "partition 0",
        );
        assert_eq!(
            from_partition(&read, 2),
            two,
            "partition 2 led, yet was read"
        );
        // The outputs catch up: every partition is read again.
        read.extend(drive(&mut reader));
        assert!(stats.failure().is_none(), "{:?}", stats.failure());
        assert_each_once_in_order(&read, &[0, 1, 2], PER);
    }

    /// A window run's worker whose watermark leads the other workers' reads
    /// nothing while its outputs lag (invariant 5 of `super`), a batch per
    /// STALL at most, and reads on once the others caught up.
    #[test]
    fn a_window_reader_that_leads_the_other_workers_waits_for_them() {
        const PER: usize = 400;
        let mock = even_cluster(2, PER);
        let stats = Arc::new(Stats::default());
        let marks = Marks::default();
        marks.publish([(0, 100)], 100);
        marks.set_others(10);
        // Worker 0 of 2: partition 0 is its own.
        let mut reader = window_reader(&mock, &stats, &marks, 2, 2);
        let mut read = Vec::new();
        // Lagging once ALIGN_EPOCHS epochs are open and none delivered.
        let deadline = Instant::now() + Duration::from_secs(30);
        while reader.epoch() <= ALIGN_EPOCHS + 1 {
            assert!(Instant::now() < deadline);
            if let Wake::After(d) = reader.step(Some(0), Some(reader.epoch()), &mut read) {
                std::thread::sleep(d);
            }
        }
        let before = read.len();
        let epoch = reader.epoch();
        let started = Instant::now();
        while started.elapsed() < STALL / 2 {
            reader.step(Some(0), Some(reader.epoch()), &mut read);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            read.len(),
            before,
            "read while another worker held the watermark"
        );
        assert!(
            reader.epoch() > epoch,
            "a held reader's epochs must follow the clock"
        );
        // After STALL it reads a batch anyway, then waits again.
        let what = "a held reader never read after STALL";
        step_until(&mut reader, Some(0), &mut read, |r| r.len() > before, what);
        assert!(read.len() - before <= 7, "more than a batch per STALL");
        // The others caught up: it reads on.
        marks.set_others(1_000);
        step_until(
            &mut reader,
            Some(0),
            &mut read,
            |r| r.len() >= PER,
            "never read on",
        );
        read.extend(drive(&mut reader));
        assert_each_once_in_order(&read, &[0], PER);
        assert_eq!(
            from_partition(&read, 1),
            0,
            "partition 1 is the other worker's"
        );
    }

    #[test]
    fn a_reader_stops_reading_while_the_sinks_are_behind() {
        let mock = cluster();
        let config = config(&mock);
        let stats = Arc::new(Stats::default());
        let mut reader = Reader::new(source(&config, &stats), 0, 1);
        let mut read = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while read.is_empty() {
            assert!(Instant::now() < deadline, "nothing read");
            if let Wake::After(d) =
                reader.step(Some(reader.epoch()), Some(reader.epoch()), &mut read)
            {
                std::thread::sleep(d);
            }
        }
        // From now on the sinks deliver nothing: the source may run at most
        // MAX_EPOCHS_AHEAD epochs ahead, then it waits, reading nothing.
        let frozen = reader.epoch();
        let mut waits = 0;
        while waits < 20 {
            assert!(Instant::now() < deadline, "never held back");
            match reader.step(Some(frozen), Some(frozen), &mut read) {
                Wake::After(d) if d == Duration::from_millis(1) => waits += 1,
                Wake::After(d) => std::thread::sleep(d),
                other => assert_ne!(other, Wake::Finished),
            }
        }
        assert!(reader.epoch() <= frozen + MAX_EPOCHS_AHEAD + 1);
        let held = read.len();
        assert!(
            held < RECORDS,
            "read everything although the sinks were behind"
        );
        for _ in 0..20 {
            reader.step(Some(frozen), Some(frozen), &mut read);
        }
        assert_eq!(read.len(), held, "read on although the sinks were behind");
    }
}
