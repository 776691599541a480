//! The window stage: point-in-time window features on differential
//! dataflow, between clean and predict.
//!
//! ```text
//! rows+members ─split─► rows ─────────────────────────────────► assemble ─► rows
//!                 └──► members ─(exchange by group)─┬─► events ─► arrange ┐   ▲
//!                                                    └─► answer ◄─(trace)─┘   │
//!   history members ─(exchange by group)─► events only                      │
//!   reports ─(broadcast)─► events, answer            answers ─(exchange by id)┘
//! ```
//! Each application is an event of every group it belongs to and a
//! question to it. Events live in a differential arrangement keyed by group
//! (`arrange_by_key`), values sorted by event time; an event is retracted
//! once no question can reach it any more, so the arrangement holds what
//! the windows hold, not the stream's length. A question is answered by
//! reading the arrangement's trace from `t − W` up to `t` once the global
//! watermark passed `t` (`core::window` invariant 3), and the answer goes
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
//!    ([`events`], [`fold`]).
//! 3. **A group lives on one worker, and only there is it numbered.**
//!    Members travel by their key's hash; the arrangement is built where
//!    they arrive, without another exchange ([`windows`]), so the numbers
//!    a worker's [`Groups`] gives (the arrangement's keys, for integer
//!    compares) never meet another worker's.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::cursor::{Cursor, CursorList, Navigable};
use differential_dataflow::trace::implementations::{ValBatcher, ValSpine};
use differential_dataflow::trace::TraceReader;
use differential_dataflow::Hashable;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Concat, Exchange as _, InputCapability};
use timely::progress::frontier::AntichainRef;

use super::watermark::Marks;
use super::Batches;
use crate::core::features::FeatureRow;
use crate::core::record::id_hash;
use crate::core::window::{Answer, Assembly, Clock, Fold, Key, Member, Plan, Report, Time, Values};
use crate::core::Epoch;
use crate::spec::Agg;

/// One update of the events collection.
type Update = ((GroupId, (Time, Values)), Epoch, isize);

/// A group as the arrangement keys it: the grouping's index and a number
/// this worker gave the group's text ([`Groups`]), so that sorting,
/// merging and seeking compare integers, never text.
type GroupId = (u32, u64);

/// The numbers this worker gave its groups, shared by the operators that
/// read and write its arrangement (worker-local: one thread). A number
/// stands for exactly one text, so distinct groups never meet; numbers are
/// never reused, and the map grows with the distinct groups a worker keeps
/// (state × grade here: a few hundred).
#[derive(Clone, Default)]
struct Groups(Rc<RefCell<HashMap<Key, u64>>>);

impl Groups {
    fn id(&self, key: &Key) -> GroupId {
        let mut ids = self.0.borrow_mut();
        let next = ids.len() as u64;
        let id = match ids.get(key) {
            Some(id) => *id,
            None => *ids.entry(key.clone()).or_insert(next),
        };
        (key.0, id)
    }
}

/// Fills in the window features of `rows` (each with its members), given
/// every worker's watermark `reports`; the members of `history` are events
/// only (a restarted or positioned run's records before its start, see
/// `watermark::Marks`).
pub fn windows<'s>(
    rows: Batches<'s, (FeatureRow, Vec<Member>)>,
    history: Batches<'s, Member>,
    reports: Batches<'s, Report>,
    plan: Arc<Plan>,
    marks: Marks,
) -> Batches<'s, FeatureRow> {
    let (rows, members) = split(rows);
    let members = members.exchange(|m: &Member| m.key.hashed());
    let history = history.exchange(|m: &Member| m.key.hashed());
    let reports = reports.broadcast();
    let groups = Groups::default();
    let updates = events(
        members.clone().concat(history),
        reports.clone(),
        &plan,
        groups.clone(),
    );
    // Not exchanged again: the updates are on the worker that keeps their
    // group already (members go by their key's hash), the one whose answer
    // operator reads them, and `GroupId`s are that worker's own numbers.
    let arranged = arrange_core::<_, _, ValBatcher<GroupId, (Time, Values), Epoch, isize>, _>(
        updates,
        Pipeline,
        "WindowEvents",
        ValBatcher::new,
    );
    let answers = answer(members, reports, arranged, plan, marks, groups);
    assemble(rows, answers)
}

/// Rows (with how many answers each waits for) and members, apart.
fn split<'s>(
    rows: Batches<'s, (FeatureRow, Vec<Member>)>,
) -> (Batches<'s, (FeatureRow, usize)>, Batches<'s, Member>) {
    let mut builder = OperatorBuilder::new("WindowSplit".to_owned(), rows.scope());
    let mut input = builder.new_input(rows, Pipeline);
    let (out_rows, rows_stream) = builder.new_output();
    let (out_members, members_stream) = builder.new_output();
    let mut out_rows =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(FeatureRow, usize)>>>::from(out_rows);
    let mut out_members =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Member>>>::from(out_members);
    builder.build(move |_| {
        move |_| {
            let mut out_rows = out_rows.activate();
            let mut out_members = out_members.activate();
            input.for_each(|cap, batch| {
                let mut rows = out_rows.session(&cap);
                let mut members = out_members.session(&cap);
                for (row, m) in batch.drain(..) {
                    rows.give((row, m.len()));
                    members.give_iterator(m.into_iter());
                }
            });
        }
    });
    (rows_stream, members_stream)
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

/// The events collection: each member enters at its own epoch, and is
/// retracted once the watermark (from reports of earlier epochs only,
/// invariant 2) is more than two of its grouping's longest windows past it.
fn events<'s>(
    members: Batches<'s, Member>,
    reports: Batches<'s, Report>,
    plan: &Plan,
    groups: Groups,
) -> Batches<'s, Update> {
    let longest: Vec<i64> = plan.groupings.iter().map(|g| g.longest).collect();
    let workers = members.scope().peers();
    members.binary_frontier(
        reports,
        Pipeline,
        Pipeline,
        "WindowEvents",
        move |cap, _| {
            let mut retract_at = Some(cap);
            let mut clock = Clock::new(workers);
            let mut stash = Reports::default();
            // Members by when they may go: event time + the longest window.
            let mut expiry: BinaryHeap<Reverse<(Time, GroupId, Time, Values)>> = BinaryHeap::new();
            move |(members, members_frontier), (reports, reports_frontier), output| {
                members.for_each(|cap, batch| {
                    let Some(&epoch) = cap.least() else {
                        return;
                    };
                    let mut session = output.session(&cap);
                    for m in batch.drain(..) {
                        // Two windows: a sliding fold takes an event back out
                        // up to a window after its own window passed (`fold`).
                        let until = m
                            .time
                            .saturating_add(longest[m.key.0 as usize].saturating_mul(2));
                        let group = groups.id(&m.key);
                        expiry.push(Reverse((until, group, m.time, m.values.clone())));
                        session.give(((group, (m.time, m.values)), epoch, 1));
                    }
                });
                reports.for_each(|cap, batch| {
                    if let Some(&epoch) = cap.least() {
                        stash.stash(epoch, batch);
                    }
                });
                let frontier = [members_frontier.frontier(), reports_frontier.frontier()]
                    .iter()
                    .filter_map(|f| f.first().copied())
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
                let mut session = output.session(&*cap);
                while expiry.peek().is_some_and(|Reverse(e)| e.0 < watermark) {
                    let Reverse((_, key, time, values)) = expiry.pop().expect("peeked");
                    session.give(((key, (time, values)), f, -1));
                }
            }
        },
    )
}

/// Questions waiting for the watermark, in event-time order, with the
/// capabilities of their epochs.
#[derive(Default)]
struct Waiting {
    questions: BTreeMap<(Time, u64), (Member, Epoch)>,
    caps: BTreeMap<Epoch, (Capability<Epoch>, usize)>,
    seq: u64,
}

impl Waiting {
    fn push(&mut self, member: Member, cap: &InputCapability<Epoch>) {
        let Some(&epoch) = cap.least() else {
            return;
        };
        let held = self
            .caps
            .entry(epoch)
            .or_insert_with(|| (cap.retain_least(0).expect("a stamped message"), 0));
        held.1 += 1;
        self.seq += 1;
        self.questions
            .insert((member.time, self.seq), (member, epoch));
    }

    /// The next question at or before `watermark`.
    fn pop_through(&mut self, watermark: Time) -> Option<(Member, Epoch)> {
        let (&(time, _), _) = self.questions.first_key_value()?;
        if time > watermark {
            return None;
        }
        self.questions.pop_first().map(|(_, q)| q)
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
type Events = TraceAgent<ValSpine<GroupId, (Time, Values), Epoch, isize>>;

/// Answers each member's question once the watermark passed its event
/// time, from the arrangement's trace (invariant 1), at its own epoch.
fn answer<'s>(
    members: Batches<'s, Member>,
    reports: Batches<'s, Report>,
    arranged: Arranged<'s, Events>,
    plan: Arc<Plan>,
    marks: Marks,
    groups: Groups,
) -> Batches<'s, Answer> {
    let me = members.scope().index();
    let workers = members.scope().peers();
    let mut trace = arranged.trace;
    let mut builder = OperatorBuilder::new("WindowAnswer".to_owned(), members.scope());
    let mut members_in = builder.new_input(members, Pipeline);
    let mut reports_in = builder.new_input(reports, Pipeline);
    let mut batches_in = builder.new_input(arranged.stream, Pipeline);
    let (out, answers) = builder.new_output();
    let mut out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Answer>>>::from(out);
    builder.build(move |_| {
        let mut clock = Clock::new(workers);
        let metrics = crate::core::metrics::installed();
        let mut stash = Reports::default();
        let mut waiting = Waiting::default();
        let mut sliding = Sliding::default();
        let mut answered: BTreeMap<Epoch, Vec<Answer>> = BTreeMap::new();
        move |frontiers| {
            members_in.for_each(|cap, batch| {
                for m in batch.drain(..) {
                    waiting.push(m, &cap);
                }
            });
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
                while let Some((member, epoch)) = waiting.pop_through(watermark) {
                    let batches = read.get_or_insert_with(|| {
                        let mut batches = Vec::new();
                        trace.map_spans(|span| batches.extend(span.inner.clone()));
                        batches
                    });
                    let group = groups.id(&member.key);
                    let (mut cursor, storage) = group_cursor(batches, &group);
                    let features = fold(
                        &mut cursor,
                        &storage,
                        &plan,
                        &mut sliding,
                        group,
                        &member,
                        step,
                    );
                    answered.entry(epoch).or_default().push(Answer {
                        id: member.id,
                        features,
                    });
                }
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

/// A cursor over the batches that hold `key`, at `key`. (Only those:
/// `CursorList::seek_val` moves every cursor it holds, and a batch cursor
/// past its last key must not be moved.)
fn group_cursor<B>(batches: &[B], key: &GroupId) -> (CursorList<B::Cursor>, Vec<B>)
where
    B: Navigable<Cursor: for<'a> Cursor<Storage = B, Key<'a> = &'a GroupId>> + Clone,
{
    let mut cursors = Vec::new();
    let mut holding = Vec::new();
    for batch in batches {
        let mut cursor = batch.cursor();
        cursor.seek_key(batch, key);
        if cursor.get_key(batch) == Some(key) {
            cursors.push(cursor);
            holding.push(batch.clone());
        }
    }
    (CursorList::new(cursors, &holding), holding)
}

/// Each group's windows as its last question left them: that question's
/// event time and one running fold per part.
#[derive(Default)]
struct Sliding {
    groups: HashMap<GroupId, (Time, Vec<Fold>)>,
}

impl Sliding {
    /// Forgets the groups whose last question is so old that no window of
    /// a later one can overlap it (they are computed afresh if asked again).
    fn forget_before(&mut self, watermark: Time, plan: &Plan) {
        self.groups.retain(|key, (at, _)| {
            at.saturating_add(plan.groupings[key.0 as usize].longest) > watermark
        });
    }
}

/// Events of the group under `cursor` with `from <= time < to`, each with
/// its count as of epoch `step` (invariant 1), to `f`.
fn scan<C>(
    cursor: &mut C,
    storage: &C::Storage,
    from: Time,
    to: Time,
    step: Epoch,
    mut f: impl FnMut(Time, &Values, i64),
) where
    C: for<'a> Cursor<
        Key<'a> = &'a GroupId,
        Val<'a> = &'a (Time, Values),
        TimeGat<'a> = &'a Epoch,
        DiffGat<'a> = &'a isize,
    >,
{
    if from >= to {
        return;
    }
    cursor.rewind_vals(storage);
    cursor.seek_val(storage, &(from, Vec::new()));
    while let Some((time, values)) = cursor.get_val(storage) {
        if *time >= to {
            break;
        }
        let mut times = 0isize;
        cursor.map_times(storage, |epoch, diff| {
            if *epoch <= step {
                times += *diff;
            }
        });
        if times != 0 {
            f(*time, values, times as i64);
        }
        cursor.step_val(storage);
    }
}

/// The member's window features, at step `step` (invariant 1).
///
/// Counts and sums slide: from the group's previous question at `prev`,
/// the events of `[prev, t)` come in and those of `[prev − W, t − W)` go
/// out, so each event is read about twice per part whatever the window's
/// length. That needs the events that go out to still be there: they are
/// retracted only two longest windows behind the watermark (invariant 2).
/// A group asked after a gap longer than a window, and `min` / `max`
/// (which cannot take an event back out), read their whole window.
fn fold<C>(
    cursor: &mut C,
    storage: &C::Storage,
    plan: &Plan,
    sliding: &mut Sliding,
    group: GroupId,
    member: &Member,
    step: Epoch,
) -> Vec<(u32, f32)>
where
    C: for<'a> Cursor<
        Key<'a> = &'a GroupId,
        Val<'a> = &'a (Time, Values),
        TimeGat<'a> = &'a Epoch,
        DiffGat<'a> = &'a isize,
    >,
{
    let grouping = plan.grouping(&member.key);
    debug_assert_eq!(group.0, member.key.0);
    let t = member.time;
    let found = cursor.get_key(storage) == Some(&group);
    let (prev, folds) = sliding
        .groups
        .entry(group)
        .or_insert_with(|| (Time::MIN, vec![Fold::default(); grouping.parts.len()]));
    for (i, (part, _)) in grouping.parts.iter().enumerate() {
        let from = t.saturating_sub(part.length);
        let fresh = matches!(part.agg, Agg::Min | Agg::Max) || *prev <= from;
        let fold = &mut folds[i];
        if !found {
            *fold = Fold::default();
        } else if fresh {
            *fold = Fold::default();
            scan(cursor, storage, from, t, step, |_, v, n| fold.add(v[i], n));
        } else {
            let gone_from = prev.saturating_sub(part.length);
            scan(cursor, storage, gone_from, from, step, |_, v, n| {
                fold.add(v[i], -n)
            });
            scan(cursor, storage, *prev, t, step, |_, v, n| fold.add(v[i], n));
        }
    }
    *prev = t;
    grouping
        .parts
        .iter()
        .zip(folds.iter())
        .map(|((part, _), f)| (part.slot as u32, f.finish(part)))
        .collect()
}

/// Rows joined with their answers, by id, at the row's own epoch.
fn assemble<'s>(
    rows: Batches<'s, (FeatureRow, usize)>,
    answers: Batches<'s, Answer>,
) -> Batches<'s, FeatureRow> {
    let by_id = Exchange::new(|a: &Answer| id_hash(&a.id));
    rows.binary(answers, Pipeline, by_id, "WindowAssemble", |_, _| {
        let mut assembly = Assembly::default();
        move |rows, answers, output| {
            rows.for_each(|cap, batch| {
                let mut session = output.session(&cap);
                for (row, n) in batch.drain(..) {
                    if let Some(row) = assembly.row(row.id.clone(), row, n) {
                        session.give(row);
                    }
                }
            });
            answers.for_each(|cap, batch| {
                let mut session = output.session(&cap);
                for a in batch.drain(..) {
                    let done = assembly.answer(&a.id, |row: &mut FeatureRow| {
                        for (slot, value) in &a.features {
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
