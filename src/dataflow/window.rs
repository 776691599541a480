//! The window stage: point-in-time window features on differential
//! dataflow, between clean and predict.
//!
//! ```text
//! clean ─► rows (tagged) ─────────────────────────────────────────────► assemble ─► rows
//!   └──► members ─(exchange by group)─► events ─► arrange ┐                 ▲
//!   history members ─(exchange by group)─┘  │ questions    │                 │
//!                                            └─────────► answer ◄─┘        │
//!   reports ─(broadcast)─► events, answer      answers ─(exchange by tag)─┘
//! ```
//! The clean stage tags each row (`core::window::Tags`) and gives its members to a side
//! output (`graph`), so no row carries a vector of members; a member's group
//! text and values, and an answer's features, are inline (`core::inline`,
//! `core::window::Fields`): nothing on this path allocates per
//! application, and what waits an epoch is read without chasing pointers.
//! Each application is an event of every group it belongs to and a
//! question to it. Events live in a differential arrangement keyed by group
//! (`arrange_by_key`), values sorted by event time; an event is retracted
//! once no question can reach it any more, so the arrangement holds what
//! the windows hold, not the stream's length. A question is answered by
//! reading the arrangement's trace from `t − W` up to `t` once the global
//! watermark passed `t` (`core::window` invariant 3); the questions one
//! watermark step releases are answered together, group by group, in one
//! pass over the trace ([`answer_step`]). The answer goes
//! out at the question's own epoch, whose capability is held until then:
//! an input offset is never committed before the features it fed.
//!
//! Invariants:
//! 1. **An answer read at watermark step `r` sees the updates of epochs
//!    `<= r` only.** Reports of epoch `r` cover the records of epochs
//!    `<= r`; an event of a later epoch cannot lie before a question the
//!    step answers (`core::window` invariant 2), and retractions of later
//!    epochs may already have removed what the step needs, so they are left
//!    out ([`answer`]).
//! 2. **A retraction stamped at epoch `e` uses only reports of epochs
//!    `< e`, and keeps two longest windows behind that watermark**, so
//!    every question answered at a step `>= e` still finds its window whole,
//!    and the events a sliding fold takes back out are still there to read
//!    ([`events`], [`answer_step`]).
//! 3. **A group lives on one worker, and only there is it numbered.**
//!    Members travel by their key's hash, straight into the operator that
//!    numbers their groups ([`events`]); the arrangement is built where
//!    they arrive, without another exchange ([`windows`]), so the numbers
//!    a worker's [`Groups`] gives (the arrangement's keys, for integer
//!    compares) never meet another worker's.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use differential_dataflow::batcher::{Batcher, Extract};
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::cursor::{Cursor, Navigable};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::trace::{Builder, TraceReader};
use differential_dataflow::Hashable;
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, InputCapability, Probe};
use timely::dataflow::ProbeHandle;
use timely::progress::frontier::{Antichain, AntichainRef};

use super::watermark::Marks;
use super::Batches;
use crate::core::features::FeatureRow;
use crate::core::inline::InlineText;
use crate::core::window::{
    Answer, Assembly, Clock, Fields, Fold, Grouping, Key, Member, Plan, Report, Time, TAG_BITS,
};
use crate::core::Epoch;
use crate::spec::Agg;

/// One update of the events collection.
type Update = ((GroupId, (Time, Fields)), Epoch, isize);

/// The arrangement's batcher: it keeps the updates as they come, and
/// forms a batch of the updates the frontier passed by putting them in
/// buckets by group, then sorting and consolidating each bucket, which is
/// about in time order already; the buckets, in group order, are the chain
/// the builder takes. (Differential's `MergeBatcher` merges each input
/// chunk into a ladder of chains, moving every update once per level; here
/// each epoch's updates arrive in a few containers and are all sealed at
/// the next frontier, so each update moves once into its bucket, is sorted
/// there, and once into the batch; the emptied buckets are kept for the
/// next batch, [`SortBatcher::spare`].)
#[derive(Default)]
struct SortBatcher {
    /// The containers as they came (each of one epoch, in practice), with
    /// the least and greatest epoch of their updates, taken as they come in,
    /// while they are in cache.
    pending: Vec<(Vec<Update>, Epoch, Epoch)>,
    frontier: Antichain<Epoch>,
    /// Each group's bucket in the batch being formed.
    slots: FxHashMap<GroupId, usize>,
    /// The buffers a bucket's runs are merged through ([`sort_runs`]).
    scratch: [Vec<Update>; 2],
    /// Emptied buckets, kept with their allocations for the next batch: a
    /// bucket that grew from nothing every batch moved its updates once per
    /// doubling, each time into memory not in cache (vectors regrown every
    /// epoch, these among them, were a tenth of a window run's cache
    /// misses: benches/README.md, "Window features"). At most one per
    /// group of a batch, each as large as its largest bucket so far.
    spare: Vec<Vec<Update>>,
}

/// The builder of the events arrangement's batches.
type EventsBuilder = ValBuilder<GroupId, (Time, Fields), Epoch, isize>;

impl Batcher<Vec<Update>> for SortBatcher {
    fn insert(&mut self, container: &mut Vec<Update>) {
        if let Some(first) = container.first() {
            let (least, most) = container
                .iter()
                .fold((first.1, first.1), |(l, m), u| (l.min(u.1), m.max(u.1)));
            self.pending.push((std::mem::take(container), least, most));
        }
    }
}

impl Extract for SortBatcher {
    type Time = Epoch;
    type Output = <EventsBuilder as Builder>::Output;

    fn extract<'a>(
        &'a mut self,
        upper: AntichainRef<'_, Epoch>,
    ) -> (Option<Self::Output>, AntichainRef<'a, Epoch>) {
        let later = |t: &Epoch| upper.less_equal(t);
        let mut buckets: Vec<(GroupId, Vec<Update>)> = Vec::new();
        let (slots, spare) = (&mut self.slots, &mut self.spare);
        slots.clear();
        let mut bucket = |u: Update| {
            let slot = *slots.entry((u.0).0).or_insert_with(|| {
                buckets.push(((u.0).0, spare.pop().unwrap_or_default()));
                buckets.len() - 1
            });
            buckets[slot].1.push(u);
        };
        let mut kept = Vec::new();
        self.frontier.clear();
        for (chunk, least, most) in std::mem::take(&mut self.pending) {
            if later(&least) {
                // Wholly later (a step's retractions, stamped at the new
                // frontier): kept as it is, not read.
                self.frontier.insert(least);
                kept.push((chunk, least, most));
            } else if !later(&most) {
                chunk.into_iter().for_each(&mut bucket);
            } else {
                let mut then = Vec::new();
                for u in chunk {
                    if later(&u.1) {
                        then.push(u);
                    } else {
                        bucket(u);
                    }
                }
                let least = then.iter().map(|u| u.1).min().unwrap_or(most);
                self.frontier.insert(least);
                kept.push((then, least, most));
            }
        }
        self.pending = kept;
        // By (group, event, epoch), as the builder wants them.
        buckets.sort_unstable_by_key(|(group, _)| *group);
        let (mut keys, mut vals, mut upds) = (0, 0, 0);
        for (_, updates) in buckets.iter_mut() {
            sort_runs(updates, &mut self.scratch);
            consolidate_sorted(updates);
            if !updates.is_empty() {
                keys += 1;
                upds += updates.len();
                vals += 1 + updates.windows(2).filter(|w| w[0].0 != w[1].0).count();
            }
        }
        let batch = if keys == 0 {
            None
        } else {
            // Differential's `Sealer` for this builder, but the buckets are
            // drained, not dropped, and kept (`spare`).
            let mut builder = EventsBuilder::with_capacity(keys, vals, upds);
            for (_, updates) in buckets.iter_mut() {
                if !updates.is_empty() {
                    builder.push(updates);
                }
            }
            builder.done()
        };
        for (_, mut updates) in buckets {
            updates.clear();
            self.spare.push(updates);
        }
        (batch, self.frontier.borrow())
    }
}

/// The order of updates in a group's part of a batch: by event, then epoch.
fn event_order(a: &Update, b: &Update) -> std::cmp::Ordering {
    (&(a.0).1, a.1).cmp(&(&(b.0).1, b.1))
}

/// Whether update `a` goes before `b` ([`event_order`]).
fn before(a: &Update, b: &Update) -> bool {
    event_order(a, b).is_lt()
}

/// Sorts a bucket's updates, which come as a few runs in order: each
/// container's updates of a group are in event-time order, or nearly (one
/// worker's stripe, or one hop's retractions), and a bucket takes from a
/// few containers. Up to [`MERGED_RUNS`] runs are merged, moving each
/// update about once per run; more are sorted.
fn sort_runs(updates: &mut Vec<Update>, scratch: &mut [Vec<Update>; 2]) {
    // Where each run after the first starts.
    let mut found = [0; MERGED_RUNS - 1];
    let mut n = 0;
    for i in 1..updates.len() {
        if before(&updates[i], &updates[i - 1]) {
            if n == found.len() {
                updates.sort_by(event_order);
                return;
            }
            found[n] = i;
            n += 1;
        }
    }
    if n == 0 {
        return;
    }
    // The runs after the first, merged from the back into `rest`; then the
    // first. The buffers are kept from bucket to bucket, so a merge writes
    // into memory used a moment ago, not into fresh pages.
    let [rest, out] = scratch;
    rest.clear();
    for &start in found[..n].iter().rev() {
        if rest.is_empty() {
            rest.extend(updates.drain(start..));
        } else {
            out.clear();
            merge_into(updates.drain(start..), rest.drain(..), out);
            std::mem::swap(rest, out);
        }
    }
    out.clear();
    merge_into(updates.drain(..), rest.drain(..), out);
    std::mem::swap(updates, out);
}

/// Two runs in order, merged into `out`.
fn merge_into(
    a: impl Iterator<Item = Update>,
    b: impl Iterator<Item = Update>,
    out: &mut Vec<Update>,
) {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    loop {
        let from_b = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => before(y, x),
            (Some(_), None) => {
                out.extend(a);
                return;
            }
            (None, _) => {
                out.extend(b);
                return;
            }
        };
        let next = if from_b { b.next() } else { a.next() };
        out.extend(next);
    }
}

/// Most runs [`sort_runs`] merges.
const MERGED_RUNS: usize = 4;

/// Sorts `items` by group, then by `order` within a group, for items that
/// come about in order within each group (events and questions arrive in
/// about event-time order, retractions hop by hop): a counting sort into
/// the groups (a few hundred), then each group's items by a stable sort,
/// which merges the runs it finds in linear time — rather than a general
/// sort, whose compares and moves dominated the window stage.
fn sort_grouped<T>(
    items: &mut Vec<T>,
    group: impl Fn(&T) -> GroupId,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) {
    if items.len() < 64 {
        items.sort_by(|a, b| group(a).cmp(&group(b)).then_with(|| order(a, b)));
        return;
    }
    let mut slots: FxHashMap<GroupId, usize> = FxHashMap::default();
    for item in items.iter() {
        *slots.entry(group(item)).or_insert(0) += 1;
    }
    let mut groups: Vec<(GroupId, usize)> = slots.iter().map(|(g, n)| (*g, *n)).collect();
    groups.sort_unstable();
    let mut buckets: Vec<Vec<T>> = Vec::with_capacity(groups.len());
    for (i, (g, n)) in groups.iter().enumerate() {
        slots.insert(*g, i);
        buckets.push(Vec::with_capacity(*n));
    }
    for item in items.drain(..) {
        buckets[slots[&group(&item)]].push(item);
    }
    for mut bucket in buckets {
        bucket.sort_by(&order);
        items.append(&mut bucket);
    }
}

/// Sums the diffs of equal updates, adjacent in `updates` (sorted), and
/// drops those that sum to zero: differential's consolidation without its
/// sort.
fn consolidate_sorted(updates: &mut Vec<Update>) {
    let mut kept = 0;
    for i in 0..updates.len() {
        if kept > 0 && updates[kept - 1].0 == updates[i].0 && updates[kept - 1].1 == updates[i].1 {
            updates[kept - 1].2 += updates[i].2;
        } else {
            if kept > 0 && updates[kept - 1].2 == 0 {
                kept -= 1;
            }
            if kept != i {
                updates.swap(kept, i);
            }
            kept += 1;
        }
    }
    if kept > 0 && updates[kept - 1].2 == 0 {
        kept -= 1;
    }
    updates.truncate(kept);
}

/// A group as the arrangement keys it: the grouping's index (high bits)
/// and a number (fewer than 2^48 per worker)
/// this worker gave the group's text ([`Groups`]), so that sorting,
/// merging and seeking compare integers, never text.
type GroupId = u64;

/// The grouping's index in a [`GroupId`]'s high bits; the number below.
const GROUP_BITS: u32 = 48;

/// The index of the grouping of `group`.
fn grouping_of(group: GroupId) -> usize {
    (group >> GROUP_BITS) as usize
}

/// The numbers this worker gave its groups (the events operator is the
/// one that numbers, for its updates and questions alike). A number
/// stands for exactly one text, so distinct groups never meet; numbers are
/// never reused, and the map grows with the distinct groups a worker keeps
/// (state × grade here: a few hundred).
#[derive(Default)]
struct Groups {
    /// By grouping and the key's hash (`Key`'s own, computed once where the
    /// member was made): the texts with that hash, and their numbers.
    by_hash: FxHashMap<(u32, u64), Vec<(InlineText, u64)>>,
    next: u64,
}

impl Groups {
    fn id(&mut self, key: &Key) -> GroupId {
        let texts = self.by_hash.entry((key.0, key.1)).or_default();
        let id = match texts.iter().find(|(text, _)| *text == key.2) {
            Some((_, id)) => *id,
            None => {
                let id = self.next;
                self.next += 1;
                texts.push((key.2.clone(), id));
                id
            }
        };
        (u64::from(key.0) << GROUP_BITS) | (id & ((1 << GROUP_BITS) - 1))
    }
}

/// Fills in the window features of `rows` (each tagged, with how many
/// answers it waits for, by `core::window::Tags`) from `members` (each with its row's
/// tag), given every worker's watermark `reports`; the members of `history`
/// are events only (a restarted or positioned run's records before its
/// start, see `watermark::Marks`). `intake` probes what the stage took in:
/// the arrangement's batches, whose frontier passes an epoch a step or two
/// after it was read, whatever the watermark (the events operator holds
/// its retractions' capability at its inputs' frontier, and the
/// arrangement seals at its own): what a source may pace itself by
/// without waiting on the answers, which wait for more reading.
pub fn windows<'s>(
    rows: Batches<'s, (FeatureRow, u64, usize)>,
    members: Batches<'s, Member>,
    history: Batches<'s, Member>,
    reports: Batches<'s, Report>,
    plan: Arc<Plan>,
    marks: Marks,
    intake: ProbeHandle<Epoch>,
) -> Batches<'s, FeatureRow> {
    let reports = reports.broadcast();
    let (updates, questions) = events(members, history, reports.clone(), &plan);
    // Not exchanged again: the updates are on the worker that keeps their
    // group already (members go by their key's hash), the one whose answer
    // operator reads them, and `GroupId`s are that worker's own numbers.
    let arranged =
        arrange_core::<_, _, SortBatcher, _>(updates, Pipeline, "WindowEvents", |_, _| {
            SortBatcher::default()
        });
    arranged.stream.clone().probe_with(&intake);
    let answers = answer(questions, reports, arranged, plan, marks);
    assemble(rows, answers)
}

/// Reports by the epoch they cover, applied to a clock as frontiers pass.
#[derive(Default)]
struct Reports {
    by_epoch: BTreeMap<Epoch, Vec<Report>>,
}

impl Reports {
    fn stash(&mut self, epoch: Epoch, batch: &mut Vec<Report>) {
        self.by_epoch.entry(epoch).or_default().append(batch);
    }

    /// The next epoch below `frontier` with reports, taken out with them.
    fn next_before(&mut self, frontier: Option<Epoch>) -> Option<(Epoch, Vec<Report>)> {
        let (&epoch, _) = self.by_epoch.first_key_value()?;
        if frontier.is_some_and(|f| epoch >= f) {
            return None;
        }
        self.by_epoch.remove(&epoch).map(|r| (epoch, r))
    }
}

/// Events to retract: (group, event time, values).
type Expiring = Vec<(GroupId, Time, Fields)>;

/// Events waiting to be retracted, by hop of their expiry (event time +
/// two of their grouping's longest windows): a hop goes out whole once the
/// watermark passed its end, so an event is retracted at most a hop later
/// than it could be, and the hops cost an entry each, not a heap step per
/// event. Each grouping's hops are kept in order in a ring of their own
/// (its events expire at one offset from their time): events come in
/// about time order, so a push finds its hop at the back, or where the
/// grouping's last push went (with several workers, members come a batch of
/// one worker's stripe at a time, and stripes are far apart in event time),
/// or by bisection; expired hops leave from the front — each event is
/// moved in once and out once.
struct Expiry {
    hop: i64,
    /// By grouping: (hop, its events), in hop order.
    rings: Vec<VecDeque<(i64, Expiring)>>,
    /// By grouping: where in its ring the last push went (a hint only: it
    /// is checked before it is used, so a stale one costs a bisection).
    last: Vec<usize>,
    /// Expired hops' vectors, kept with their allocations for new hops (a
    /// hop grown from nothing moved its events once per doubling, into
    /// memory not in cache: see [`SortBatcher::spare`]).
    spare: Vec<Expiring>,
}

/// How many expired hops' vectors [`Expiry`] keeps.
const MAX_SPARE_HOPS: usize = 64;

impl Expiry {
    /// Hops of a sixteenth of the shortest grouping's longest window.
    fn new(longest: &[i64]) -> Expiry {
        let shortest = longest.iter().copied().min().unwrap_or(1);
        Expiry {
            hop: (shortest / 16).max(1),
            rings: longest.iter().map(|_| VecDeque::new()).collect(),
            last: vec![0; longest.len()],
            spare: Vec::new(),
        }
    }

    fn push(&mut self, until: Time, event: (GroupId, Time, Fields)) {
        let hop = until.div_euclid(self.hop);
        let grouping = grouping_of(event.0);
        let ring = &mut self.rings[grouping];
        let last = &mut self.last[grouping];
        if let Some((h, events)) = ring.get_mut(*last) {
            if *h == hop {
                events.push(event);
                return;
            }
        }
        // After the last hop not after this one: at the back, in time
        // order; found by bisection otherwise.
        let at = match ring.back() {
            Some((last, _)) if *last <= hop => ring.len(),
            _ => ring.partition_point(|(h, _)| *h <= hop),
        };
        if at > 0 && ring[at - 1].0 == hop {
            ring[at - 1].1.push(event);
            *last = at - 1;
        } else {
            let mut events = self.spare.pop().unwrap_or_default();
            events.push(event);
            ring.insert(at, (hop, events));
            *last = at;
        }
    }

    /// The events of every hop that ends before `watermark`: each expired
    /// (its expiry is below the watermark).
    fn pop_before(&mut self, watermark: Time, mut f: impl FnMut((GroupId, Time, Fields))) {
        for ring in &mut self.rings {
            while let Some((hop, _)) = ring.front() {
                let last = hop.saturating_mul(self.hop).saturating_add(self.hop - 1);
                if last >= watermark {
                    break;
                }
                if let Some((_, mut events)) = ring.pop_front() {
                    events.drain(..).for_each(&mut f);
                    if self.spare.len() < MAX_SPARE_HOPS {
                        self.spare.push(events);
                    }
                }
            }
        }
    }
}

/// The events collection and the questions: each member enters the
/// collection at its own epoch, and is retracted once the watermark (from
/// reports of earlier epochs only, invariant 2) is more than two of its
/// grouping's longest windows past it (a hop later at most, [`Expiry`]);
/// each member but history's asks its question at its own epoch.
fn events<'s>(
    members: Batches<'s, Member>,
    history: Batches<'s, Member>,
    reports: Batches<'s, Report>,
    plan: &Plan,
) -> (Batches<'s, Update>, Batches<'s, Question>) {
    let longest: Vec<i64> = plan.groupings.iter().map(|g| g.longest).collect();
    let workers = members.scope().peers();
    let mut builder = OperatorBuilder::new("WindowEvents".to_owned(), members.scope());
    // Members travel by their key's hash to the worker that keeps their
    // group (invariant 3), straight into this operator's inputs.
    let by_group = || Exchange::new(|m: &Member| m.key.hashed());
    let mut members_in = builder.new_input(members, by_group());
    let mut history_in = builder.new_input(history, by_group());
    let mut reports_in = builder.new_input(reports, Pipeline);
    let (updates_out, updates) = builder.new_output();
    let (questions_out, questions) = builder.new_output();
    let mut updates_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Update>>>::from(updates_out);
    let mut questions_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Question>>>::from(questions_out);
    builder.build(move |mut caps| {
        caps.truncate(1); // questions go at their members' epochs
        let mut retract_at = caps.pop();
        let mut clock = Clock::new(workers);
        let mut stash = Reports::default();
        let mut expiry = Expiry::new(&longest);
        let mut groups = Groups::default();
        move |frontiers| {
            let mut updates = updates_out.activate();
            let mut questions = questions_out.activate();
            let mut event = |m: Member, epoch: Epoch, out: &mut Vec<Update>| {
                // Two windows: a sliding fold takes an event back out up to
                // a window after its own window passed (`answer_step`).
                let until = m
                    .time
                    .saturating_add(longest[m.key.0 as usize].saturating_mul(2));
                let group = groups.id(&m.key);
                let fields = m.values;
                expiry.push(until, (group, m.time, fields.clone()));
                out.push(((group, (m.time, fields)), epoch, 1));
                (group, m.time, m.tag)
            };
            let mut batch_out = Vec::new();
            members_in.for_each(|cap, batch| {
                let Some(&epoch) = cap.least() else {
                    return;
                };
                let mut asked = questions.session(&cap);
                // Sized once: `give_container` takes the vector away, and
                // one grown push by push moves every update once per
                // doubling, into memory not in cache ([`SortBatcher::spare`]).
                batch_out.reserve(batch.len());
                for m in batch.drain(..) {
                    let (group, time, tag) = event(m, epoch, &mut batch_out);
                    asked.give(Question {
                        group,
                        time,
                        tag,
                        epoch,
                    });
                }
                updates.session(&cap).give_container(&mut batch_out);
            });
            history_in.for_each(|cap, batch| {
                let Some(&epoch) = cap.least() else {
                    return;
                };
                batch_out.reserve(batch.len());
                for m in batch.drain(..) {
                    event(m, epoch, &mut batch_out);
                }
                updates.session(&cap).give_container(&mut batch_out);
            });
            reports_in.for_each(|cap, batch| {
                if let Some(&epoch) = cap.least() {
                    stash.stash(epoch, batch);
                }
            });
            let frontier = frontiers
                .iter()
                .filter_map(|f| f.frontier().first().copied())
                .min();
            let Some(cap) = retract_at.as_mut() else {
                return;
            };
            let Some(f) = frontier else {
                retract_at = None; // nothing more will be asked
                return;
            };
            if f <= *cap.time() {
                return;
            }
            while let Some((_, batch)) = stash.next_before(Some(f)) {
                batch.into_iter().for_each(|r| clock.report(r));
            }
            cap.downgrade(&f);
            let watermark = clock.watermark();
            let mut session = updates.session(&*cap);
            expiry.pop_before(watermark, |(key, time, fields)| {
                session.give(((key, (time, fields)), f, -1));
            });
        }
    });
    (updates, questions)
}

/// A question waiting for the watermark: the application's event time in
/// its group, where its answer goes, and the epoch it is answered at.
#[derive(Clone)]
struct Question {
    group: GroupId,
    time: Time,
    tag: u64,
    epoch: Epoch,
}

/// Questions waiting for the watermark, with the capabilities of their
/// epochs.
///
/// Kept as they came, a chunk per message with its earliest and latest
/// event time, so that a watermark step touches only the chunks it
/// releases from (a message's rows are close in event time: most chunks
/// go whole), not every waiting question: a scan of them all was a
/// sixteenth of a window run's cache misses (benches/README.md, "Window
/// features").
struct Waiting {
    chunks: Vec<Chunk>,
    /// The earliest event time among the chunks (`Time::MAX` if none).
    earliest: Time,
    /// Emptied chunks' vectors, kept with their allocations.
    spare: Vec<Vec<Question>>,
    caps: BTreeMap<Epoch, (Capability<Epoch>, usize)>,
}

/// How many emptied chunks' vectors [`Waiting`] keeps (a burst of many
/// waiting messages does not keep its memory).
const MAX_SPARE_CHUNKS: usize = 16;

/// Questions of one message, with the bounds of their event times.
struct Chunk {
    questions: Vec<Question>,
    earliest: Time,
    latest: Time,
}

impl Default for Waiting {
    fn default() -> Waiting {
        Waiting {
            chunks: Vec::new(),
            earliest: Time::MAX,
            spare: Vec::new(),
            caps: BTreeMap::new(),
        }
    }
}

impl Waiting {
    /// Questions of one message (each asked at its member's epoch, the
    /// message's own), with the capability of their epoch held: one map
    /// look-up per run of one epoch (the whole message, in practice).
    fn push(&mut self, questions: &mut Vec<Question>, cap: &InputCapability<Epoch>) {
        if questions.is_empty() {
            return;
        }
        let mut i = 0;
        while i < questions.len() {
            let epoch = questions[i].epoch;
            let n = questions[i..]
                .iter()
                .take_while(|q| q.epoch == epoch)
                .count();
            let held = self
                .caps
                .entry(epoch)
                .or_insert_with(|| (cap.retain_least(0).expect("a stamped message"), 0));
            held.1 += n;
            i += n;
        }
        let (earliest, latest) = questions
            .iter()
            .fold((Time::MAX, Time::MIN), |(lo, hi), q| {
                (lo.min(q.time), hi.max(q.time))
            });
        self.earliest = self.earliest.min(earliest);
        // The message's vector is kept; the input gets a spare one back.
        let mut taken = self.spare.pop().unwrap_or_default();
        std::mem::swap(&mut taken, questions);
        self.chunks.push(Chunk {
            questions: taken,
            earliest,
            latest,
        });
    }

    /// Moves the questions at or before `watermark` to `ready`.
    fn take_through(&mut self, watermark: Time, ready: &mut Vec<Question>) {
        if self.earliest > watermark {
            return;
        }
        let mut earliest = Time::MAX;
        let mut c = 0;
        while c < self.chunks.len() {
            let chunk = &mut self.chunks[c];
            if chunk.latest <= watermark {
                ready.append(&mut chunk.questions);
                let gone = self.chunks.swap_remove(c);
                if self.spare.len() < MAX_SPARE_CHUNKS {
                    self.spare.push(gone.questions);
                }
                continue;
            }
            if chunk.earliest <= watermark {
                let mut rest = Time::MAX;
                let mut i = 0;
                while i < chunk.questions.len() {
                    if chunk.questions[i].time <= watermark {
                        ready.push(chunk.questions.swap_remove(i));
                    } else {
                        rest = rest.min(chunk.questions[i].time);
                        i += 1;
                    }
                }
                chunk.earliest = rest;
            }
            earliest = earliest.min(chunk.earliest);
            c += 1;
        }
        self.earliest = earliest;
    }

    /// `n` questions of `epoch` are answered.
    fn release(&mut self, epoch: Epoch, n: usize) {
        if let Some(held) = self.caps.get_mut(&epoch) {
            held.1 -= n;
            if held.1 == 0 {
                self.caps.remove(&epoch);
            }
        }
    }
}

/// The arrangement of events: by group, values sorted by event time.
type Events = TraceAgent<ValSpine<GroupId, (Time, Fields), Epoch, isize>>;

/// Answers each member's question once the watermark passed its event
/// time, from the arrangement's trace (invariant 1), at its own epoch.
/// The questions a watermark step releases are answered together
/// ([`answer_step`]).
fn answer<'s>(
    questions: Batches<'s, Question>,
    reports: Batches<'s, Report>,
    arranged: Arranged<'s, Events>,
    plan: Arc<Plan>,
    marks: Marks,
) -> Batches<'s, Answer> {
    let me = questions.scope().index();
    let workers = questions.scope().peers();
    let mut trace = arranged.trace;
    let mut builder = OperatorBuilder::new("WindowAnswer".to_owned(), questions.scope());
    let mut questions_in = builder.new_input(questions, Pipeline);
    let mut reports_in = builder.new_input(reports, Pipeline);
    let mut batches_in = builder.new_input(arranged.stream, Pipeline);
    let (out, answers) = builder.new_output();
    let mut out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Answer>>>::from(out);
    builder.build(move |_| {
        let mut clock = Clock::new(workers);
        let metrics = crate::core::metrics::installed();
        let mut stash = Reports::default();
        let mut waiting = Waiting::default();
        let mut sliding = Sliding::new(&plan);
        let mut scratch = Scratch::default();
        let mut ready = Vec::new();
        let mut answered: BTreeMap<Epoch, Vec<Answer>> = BTreeMap::new();
        // Questions per epoch of a step (a few epochs: a scan beats a map).
        let mut asked: Vec<(Epoch, usize)> = Vec::new();
        move |frontiers| {
            questions_in.for_each(|cap, batch| waiting.push(batch, &cap));
            reports_in.for_each(|cap, batch| {
                if let Some(&epoch) = cap.least() {
                    stash.stash(epoch, batch);
                }
            });
            batches_in.for_each(|_, _| {});
            let frontier = frontiers
                .iter()
                .filter_map(|f| f.frontier().first().copied())
                .min();
            let mut out = out.activate();
            let mut read = None;
            while let Some((step, batch)) = stash.next_before(frontier) {
                batch.into_iter().for_each(|r| clock.report(r));
                let watermark = clock.watermark();
                if let Some(m) = metrics {
                    // The global watermark as applied here, before any answer
                    // it lets out (core::metrics invariant 5).
                    m.set_watermark(watermark);
                }
                waiting.take_through(watermark, &mut ready);
                if ready.is_empty() {
                    continue;
                }
                let batches = read.get_or_insert_with(|| {
                    let mut batches = Vec::new();
                    trace.map_spans(|span| batches.extend(span.inner.clone()));
                    batches
                });
                // Each epoch's answers sized once, to its questions of
                // this step (they are given away; see `SortBatcher::spare`).
                for q in &ready {
                    match asked.iter_mut().find(|(e, _)| *e == q.epoch) {
                        Some((_, n)) => *n += 1,
                        None => asked.push((q.epoch, 1)),
                    }
                }
                for (epoch, n) in asked.drain(..) {
                    answered.entry(epoch).or_default().reserve(n);
                }
                answer_step(
                    &mut ready,
                    batches,
                    &plan,
                    &mut sliding,
                    step,
                    &mut scratch,
                    |epoch, answer| answered.entry(epoch).or_default().push(answer),
                );
                ready.clear();
            }
            // One message per epoch, not per answer.
            for (epoch, mut batch) in std::mem::take(&mut answered) {
                let n = batch.len();
                out.session(&waiting.caps[&epoch].0)
                    .give_container(&mut batch);
                waiting.release(epoch, n);
            }
            marks.set_others(clock.others(me));
            sliding.forget_before(clock.watermark(), &plan);
            let compact_to: &[Epoch] = match &frontier {
                Some(f) => std::slice::from_ref(f),
                None => &[],
            };
            trace.set_logical_compaction(AntichainRef::new(compact_to));
            trace.set_physical_compaction(AntichainRef::new(compact_to));
        }
    });
    answers
}

/// Each group's windows as its last question left them: that question's
/// event time and the folds of each of its grouping's [`Windows`] (counts
/// and sums; a window of `min` or `max` parts is read whole each time, and
/// what it keeps is not used).
struct Sliding {
    /// Each grouping's distinct windows.
    windows: Vec<Windows>,
    groups: FxHashMap<GroupId, (Time, Vec<Fold>)>,
}

impl Sliding {
    fn new(plan: &Plan) -> Sliding {
        Sliding {
            windows: plan.groupings.iter().map(Windows::of).collect(),
            groups: FxHashMap::default(),
        }
    }

    /// Forgets the groups whose last question is so old that no window of
    /// a later one can overlap it (they are computed afresh if asked again).
    fn forget_before(&mut self, watermark: Time, plan: &Plan) {
        self.groups.retain(|key, (at, _)| {
            at.saturating_add(plan.groupings[grouping_of(*key)].longest) > watermark
        });
    }
}

/// An event of one group as a step read it: its event time, its count as
/// of the step (invariant 1), and its values.
#[derive(Clone)]
struct Read {
    time: Time,
    n: i64,
    fields: Fields,
}

/// The distinct windows of a grouping's parts: parts of one length share
/// one walk over the reads and one fold per field (a count reads the
/// events any fold counts), so a group's count and sum over a day move
/// their window's bounds once, not once each. `min` and `max` parts (folded
/// whole, [`answer_step`]) walk apart from those that slide.
struct Windows {
    /// (length, folded whole) of each distinct window.
    windows: Vec<(i64, bool)>,
    /// The window of each part, in the grouping's order.
    of_part: Vec<usize>,
    /// Folds per window: one per field (one for a grouping of counts only).
    folds: usize,
}

impl Windows {
    fn of(grouping: &Grouping) -> Windows {
        let mut windows = Vec::new();
        let of_part = grouping
            .parts
            .iter()
            .map(|(part, _)| {
                let window = (part.length, matches!(part.agg, Agg::Min | Agg::Max));
                windows
                    .iter()
                    .position(|w| *w == window)
                    .unwrap_or_else(|| {
                        windows.push(window);
                        windows.len() - 1
                    })
            })
            .collect();
        Windows {
            windows,
            of_part,
            folds: grouping.fields.len().max(1),
        }
    }
}

/// One window's walk over a group's reads: its folds are of the events
/// between `lo` (the first read at or after the window's start) and `hi`
/// (the first at or after the question).
#[derive(Clone, Copy)]
struct Walk {
    lo: usize,
    hi: usize,
}

/// A step's buffers, kept to reuse their allocations.
#[derive(Default)]
struct Scratch {
    reads: Vec<Read>,
    spans: Vec<(Time, Time)>,
    walks: Vec<Walk>,
    /// `Windows::folds` per walk, walk after walk.
    folds: Vec<Fold>,
}

/// Adds `times` copies of the event `r` to the folds of one window (one
/// per field, or one without a value for a grouping of counts only).
fn add_to(folds: &mut [Fold], r: &Read, times: i64) {
    for (f, fold) in folds.iter_mut().enumerate() {
        fold.add(r.fields.get(f), times);
    }
}

/// Which events of a group's questions `first ..= last` (in event-time
/// order) a step reads, per window into `spans` (merged, sorted): a window
/// that slides on from the group's last question at `prev` reads what
/// comes in, `[prev, last)`, and what goes out, `[prev − W, last − W)`;
/// any other reads `[first − W, last)`. Whether each window slides.
fn spans_of(
    windows: &Windows,
    state: Option<Time>,
    first: Time,
    last: Time,
    spans: &mut Vec<(Time, Time)>,
    slides: &mut Vec<bool>,
) {
    spans.clear();
    slides.clear();
    for &(w, whole) in &windows.windows {
        let slide = !whole
            && state.is_some_and(|prev| {
                prev > first.saturating_sub(w) && last.saturating_sub(prev) < w
            });
        match state {
            Some(prev) if slide => {
                spans.push((prev.saturating_sub(w), last.saturating_sub(w)));
                spans.push((prev, last));
            }
            _ => spans.push((first.saturating_sub(w), last)),
        }
        slides.push(slide);
    }
    spans.retain(|(from, to)| from < to);
    spans.sort_unstable();
    let mut merged = 0;
    for i in 0..spans.len() {
        if merged > 0 && spans[i].0 <= spans[merged - 1].1 {
            spans[merged - 1].1 = spans[merged - 1].1.max(spans[i].1);
        } else {
            spans[merged] = spans[i];
            merged += 1;
        }
    }
    spans.truncate(merged);
}

/// Answers the questions a watermark step released, as of epoch `step`
/// (invariant 1), each to `emit` with its epoch.
///
/// The questions go by group and event time, so each batch of the trace
/// is sought once per group, not once per question and part: the step
/// reads the events of the group's spans ([`spans_of`]) from every batch,
/// consolidates them across batches, and each part walks them with two
/// pointers (the window's start and end only move forward). Counts and
/// sums slide: from the group's previous question, the events of
/// `[prev, t)` come in and those of `[prev − W, t − W)` go out (each
/// event read about twice per part whatever the window's length); that
/// needs the events that go out to still be there: they are retracted
/// only two longest windows behind the watermark (invariant 2). `min` and
/// `max` (which cannot take an event back out) fold their whole window.
/// The folds are exact integers, so which way a window is reached does
/// not change a bit of its features (`core::window` invariant 4).
fn answer_step<B>(
    ready: &mut Vec<Question>,
    batches: &[B],
    plan: &Plan,
    sliding: &mut Sliding,
    step: Epoch,
    scratch: &mut Scratch,
    mut emit: impl FnMut(Epoch, Answer),
) where
    B: Navigable<
        Cursor: for<'a> Cursor<
            Storage = B,
            Key<'a> = &'a GroupId,
            Val<'a> = &'a (Time, Fields),
            TimeGat<'a> = &'a Epoch,
            DiffGat<'a> = &'a isize,
        >,
    >,
{
    sort_grouped(ready, |q: &Question| q.group, |a, b| a.time.cmp(&b.time));
    let mut cursors: Vec<_> = batches.iter().map(|b| b.cursor()).collect();
    let mut slides = Vec::new();
    let mut start = 0;
    while start < ready.len() {
        let group = ready[start].group;
        let end = start + ready[start..].partition_point(|q| q.group == group);
        let run = &mut ready[start..end];
        start = end;
        let grouping = &plan.groupings[grouping_of(group)];
        let windows = &sliding.windows[grouping_of(group)];
        let (first, last) = (run[0].time, run[run.len() - 1].time);
        let state = sliding.groups.get(&group).map(|(prev, _)| *prev);
        spans_of(windows, state, first, last, &mut scratch.spans, &mut slides);

        // Read the spans from every batch that holds the group.
        let Scratch {
            reads,
            spans,
            walks,
            folds,
        } = scratch;
        reads.clear();
        let mut found = 0;
        for (cursor, batch) in cursors.iter_mut().zip(batches) {
            cursor.seek_key(batch, &group);
            if cursor.get_key(batch) != Some(&group) {
                continue;
            }
            found += 1;
            for &(from, to) in spans.iter() {
                cursor.seek_val(batch, &(from, Fields::LEAST));
                while let Some((time, fields)) = cursor.get_val(batch) {
                    if *time >= to {
                        break;
                    }
                    let mut n = 0isize;
                    cursor.map_times(batch, |epoch, diff| {
                        if *epoch <= step {
                            n += *diff;
                        }
                    });
                    if n != 0 {
                        reads.push(Read {
                            time: *time,
                            n: n as i64,
                            fields: fields.clone(),
                        });
                    }
                    cursor.step_val(batch);
                }
            }
        }
        if found > 1 {
            // One count per event, as one cursor over every batch gives it
            // (`min` / `max` must not see an event and its retraction).
            // Each batch's reads are in order already: a stable sort merges
            // those runs rather than sorting afresh.
            reads.sort_by(|a, b| (a.time, &a.fields).cmp(&(b.time, &b.fields)));
            let mut kept = 0;
            for i in 0..reads.len() {
                if kept > 0
                    && reads[kept - 1].time == reads[i].time
                    && reads[kept - 1].fields == reads[i].fields
                {
                    reads[kept - 1].n += reads[i].n;
                } else {
                    if kept != i {
                        reads.swap(kept, i);
                    }
                    kept += 1;
                }
            }
            reads.truncate(kept);
            reads.retain(|r| r.n != 0);
        }

        // Where each window's walk starts: on from the group's last
        // question, or afresh (a group no batch holds has empty windows).
        let at = |x: Time| reads.partition_point(|r| r.time < x);
        let nf = windows.folds;
        walks.clear();
        folds.clear();
        let saved = sliding.groups.get(&group).map(|(_, f)| f);
        for (i, &(length, _)) in windows.windows.iter().enumerate() {
            match (state, saved) {
                (Some(prev), Some(saved)) if slides[i] && found > 0 => {
                    walks.push(Walk {
                        lo: at(prev.saturating_sub(length)),
                        hi: at(prev),
                    });
                    folds.extend_from_slice(&saved[i * nf..(i + 1) * nf]);
                }
                _ => {
                    let lo = at(first.saturating_sub(length));
                    walks.push(Walk { lo, hi: lo });
                    folds.extend(std::iter::repeat_n(Fold::default(), nf));
                }
            }
        }

        for q in run.iter_mut() {
            let t = q.time;
            for (i, (&(length, whole), walk)) in
                windows.windows.iter().zip(walks.iter_mut()).enumerate()
            {
                let folds = &mut folds[i * nf..(i + 1) * nf];
                let from = t.saturating_sub(length);
                if whole {
                    while walk.hi < reads.len() && reads[walk.hi].time < t {
                        walk.hi += 1;
                    }
                    while walk.lo < reads.len() && reads[walk.lo].time < from {
                        walk.lo += 1;
                    }
                    folds.fill(Fold::default());
                    for r in &reads[walk.lo..walk.hi] {
                        add_to(folds, r, r.n);
                    }
                } else {
                    while walk.hi < reads.len() && reads[walk.hi].time < t {
                        add_to(folds, &reads[walk.hi], reads[walk.hi].n);
                        walk.hi += 1;
                    }
                    while walk.lo < reads.len() && reads[walk.lo].time < from {
                        add_to(folds, &reads[walk.lo], -reads[walk.lo].n);
                        walk.lo += 1;
                    }
                }
            }
            let features = grouping
                .parts
                .iter()
                .zip(&windows.of_part)
                .map(|((part, field), &w)| {
                    let fold = &folds[w * nf + field.unwrap_or(0)];
                    (part.slot as u32, fold.finish(part))
                })
                .collect();
            emit(
                q.epoch,
                Answer {
                    tag: q.tag,
                    features,
                },
            );
        }
        let (at, saved) = sliding.groups.entry(group).or_default();
        *at = last;
        saved.clear();
        saved.extend_from_slice(folds);
    }
}

/// Rows joined with their answers, by tag, at the row's own epoch.
fn assemble<'s>(
    rows: Batches<'s, (FeatureRow, u64, usize)>,
    answers: Batches<'s, Answer>,
) -> Batches<'s, FeatureRow> {
    let to_row = Exchange::new(|a: &Answer| a.tag >> TAG_BITS);
    rows.binary(answers, Pipeline, to_row, "WindowAssemble", |_, _| {
        let mut assembly = Assembly::default();
        move |rows, answers, output| {
            rows.for_each(|cap, batch| {
                let mut session = output.session(&cap);
                for (row, tag, n) in batch.drain(..) {
                    if let Some(row) = assembly.row(tag, row, n) {
                        session.give(row);
                    }
                }
            });
            answers.for_each(|cap, batch| {
                let mut session = output.session(&cap);
                for a in batch.drain(..) {
                    let done = assembly.answer(a.tag, |row: &mut FeatureRow| {
                        for (slot, value) in a.features.iter() {
                            row.features[*slot as usize] = *value;
                        }
                    });
                    if let Some(row) = done {
                        session.give(row);
                    }
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (tests only).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % below
        }
    }

    fn update(rng: &mut Lcg) -> Update {
        // Few distinct times and values, so equal events meet.
        let time = rng.next(40) as i64;
        let fields = Fields::One(rng.next(3) as i64);
        ((7, (time, fields)), rng.next(4), 1)
    }

    #[test]
    fn sort_runs_orders_as_a_sort_for_any_number_of_runs() {
        let mut rng = Lcg(15);
        // Kept from case to case, as the batcher keeps them.
        let mut scratch = [Vec::new(), Vec::new()];
        for runs in [1, 2, 3, MERGED_RUNS, MERGED_RUNS + 1, 9] {
            for _ in 0..50 {
                let mut updates = Vec::new();
                for _ in 0..runs {
                    let mut run: Vec<Update> =
                        (0..rng.next(30)).map(|_| update(&mut rng)).collect();
                    run.sort_by(event_order);
                    updates.extend(run);
                }
                let mut expected = updates.clone();
                expected.sort_by(event_order);
                sort_runs(&mut updates, &mut scratch);
                assert_eq!(updates, expected, "{runs} runs");
            }
        }
    }

    #[test]
    fn expiry_gives_each_event_once_after_its_hop_ends_whatever_the_push_order() {
        // Grouping 0's longest window 1,600: hops of 100.
        let mut expiry = Expiry::new(&[1_600]);
        assert_eq!(expiry.hop, 100);
        // Two far-apart stripes of events, interleaved a few at a time, as
        // two workers' members come.
        let mut rng = Lcg(27);
        let mut pushed = Vec::new();
        let (mut a, mut b) = (0i64, 50_000i64);
        for round in 0..200 {
            for _ in 0..rng.next(5) + 1 {
                let stripe = if round % 2 == 0 { &mut a } else { &mut b };
                *stripe += rng.next(40) as i64;
                let until = *stripe;
                expiry.push(until, (0, until, Fields::One(until)));
                pushed.push(until);
            }
        }
        let mut popped: Vec<i64> = Vec::new();
        for watermark in (0..=60_000).step_by(777) {
            expiry.pop_before(watermark, |(group, time, fields)| {
                assert_eq!((group, Fields::One(time)), (0, fields));
                // Out once its hop's end is below the watermark; never
                // more than a hop late.
                assert!(
                    time.div_euclid(100) * 100 + 99 < watermark,
                    "{time} at {watermark}"
                );
                popped.push(time);
            });
            assert!(popped.iter().all(|t| *t < watermark));
        }
        expiry.pop_before(i64::MAX, |(_, time, _)| popped.push(time));
        pushed.sort_unstable();
        popped.sort_unstable();
        assert_eq!(popped, pushed, "every event exactly once");
        // The rings stayed in hop order while pushes jumped between stripes.
        assert!(expiry.rings[0].is_empty());
    }
}
