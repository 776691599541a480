//! Window features over event time, as plain data and rules: which records
//! are late, how far the global watermark has come, what an application
//! contributes to each group, and how a window's values become features.
//! The operators that drive them are `dataflow::watermark` and
//! `dataflow::window`.
//!
//! Invariants (cited where they are upheld):
//! 1. **Late is a property of a partition's own order.** A record is late
//!    when its event time is below the newest event time its partition
//!    delivered before it, minus the spec's lateness ([`Lateness::admit`]).
//!    Nothing else (other partitions, arrival speed, workers) enters, so the
//!    same input gives the same dead letters.
//! 2. **Every record that is not late has an event time at or above every
//!    watermark reported before it.** A worker reports the minimum over its
//!    partitions of (newest − lateness), and an unseen partition reports
//!    nothing higher than `i64::MIN` ([`Lateness::watermark`]); the global
//!    watermark is the minimum over workers ([`Clock::watermark`]). In a
//!    live run a partition idle past `--idle-timeout` is left out, and an
//!    all-idle worker adopts the others' watermark
//!    ([`Lateness::idle_watermark`]); so a worker admits nothing below
//!    the highest watermark it reported ([`Lateness::admit`]'s floor), and
//!    2 holds there too.
//! 3. **An application is answered only once the global watermark reached
//!    its event time**: by 2, every event before it has arrived by then, and
//!    none arriving later lies before it. So its features are exactly the
//!    events of `[t − W, t)`, whatever the order they came in.
//! 4. **Arithmetic is exact and order-free**: values are summed as integers
//!    at the spec's fixed-point scale ([`fixed`]), and only the
//!    final division is floating point ([`Fold::finish`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::inline::{InlineText, InlineVec};
use super::record::{format_time, DeadLetter, Record, Stage, Value};
use crate::spec::{format_duration, Agg, Spec};

/// Event time in nanoseconds since the Unix epoch.
pub type Time = i64;

/// One worker's watermark report: (worker index, its watermark).
pub type Report = (usize, Time);

/// The late rule for the partitions one worker reads (invariant 1), and
/// this worker's watermark (invariant 2).
#[derive(Debug)]
pub struct Lateness {
    lateness: i64,
    /// The newest event time delivered, per partition this worker owns;
    /// `None` until the partition delivers its first record.
    /// Sorted by partition (a worker owns a few: a binary search per
    /// record is cheaper than a tree's).
    newest: Vec<(i32, Option<Time>)>,
    /// A live run's idle rule: after how long without a record a partition
    /// stops holding the watermark, and when each last delivered one.
    idle: Option<(Duration, BTreeMap<i32, Instant>)>,
    /// The highest watermark this worker reported: nothing below it may be
    /// admitted any more. Without idle partitions it never bites (every
    /// partition's newest − lateness is at or above it).
    floor: Time,
}

impl Lateness {
    /// The rule for a worker that reads `partitions` (a file's worker: `[0]`).
    pub fn new(lateness: i64, partitions: impl IntoIterator<Item = i32>) -> Lateness {
        Lateness {
            lateness,
            newest: {
                let mut newest: Vec<_> = partitions.into_iter().map(|p| (p, None)).collect();
                newest.sort_unstable_by_key(|(p, _)| *p);
                newest.dedup_by_key(|(p, _)| *p);
                newest
            },
            idle: None,
            floor: Time::MIN,
        }
    }

    /// With the idle rule of a live run: a partition that delivered nothing
    /// for `after` (counted from now for one that never did) stops holding
    /// the watermark ([`Lateness::idle_watermark`]).
    pub fn idle_after(mut self, after: Duration, now: Instant) -> Lateness {
        let seen = self.newest.iter().map(|(p, _)| (*p, now)).collect();
        self.idle = Some((after, seen));
        self
    }

    /// Whether `record` may go on: a record without an event time, or one
    /// behind its partition's newest by more than the lateness, is a dead
    /// letter saying so. So is one below a watermark this worker already
    /// reported, which only a partition back from idle can deliver.
    pub fn admit(&mut self, record: Record) -> Result<Record, DeadLetter> {
        match self.judge(&record) {
            None => Ok(record),
            Some(late) => Err(late.dead_letter(record)),
        }
    }

    /// [`Lateness::admit`]'s verdict on `record` without taking it: `None`
    /// if it goes on (and it counts as delivered), or why it is late.
    pub fn judge(&mut self, record: &Record) -> Option<Late> {
        let Some(t) = record.event_time else {
            let at = self.newest(record.origin.partition());
            return Some(Late {
                reason: "no event time: window features need one".to_owned(),
                at,
            });
        };
        let partition = record.origin.partition();
        let i = match self.newest.binary_search_by_key(&partition, |(p, _)| *p) {
            Ok(i) => i,
            Err(i) => {
                self.newest.insert(i, (partition, None));
                i
            }
        };
        let newest = &mut self.newest[i].1;
        match *newest {
            Some(n) if t < n.saturating_sub(self.lateness) => {
                let reason = format!(
                    "late: event time {} is {} behind the newest of partition {} ({}), more than the lateness of {}",
                    format_time(t),
                    format_duration(n - t),
                    partition,
                    format_time(n),
                    format_duration(self.lateness),
                );
                return Some(Late {
                    reason,
                    at: Some(n),
                });
            }
            _ if t < self.floor => {
                let reason = format!(
                    "late: event time {} is {} behind the watermark ({}), which moved on while partition {} was idle (--idle-timeout)",
                    format_time(t),
                    format_duration(self.floor - t),
                    format_time(self.floor),
                    partition,
                );
                let at = newest.map_or(self.floor, |n| n.max(self.floor));
                return Some(Late {
                    reason,
                    at: Some(at),
                });
            }
            Some(n) if n >= t => {}
            _ => *newest = Some(t),
        }
        if let Some((_, seen)) = &mut self.idle {
            seen.insert(partition, Instant::now());
        }
        None
    }

    /// The newest event time `partition` delivered (admitted), if any.
    pub fn newest(&self, partition: i32) -> Option<Time> {
        self.newest
            .binary_search_by_key(&partition, |(p, _)| *p)
            .ok()
            .and_then(|i| self.newest[i].1)
    }

    /// Each partition's part in this worker's watermark: its newest event
    /// time less the lateness (`i64::MIN` until it delivered a record), in
    /// partition order; [`Lateness::watermark`] is their minimum.
    pub fn marks(&self) -> impl Iterator<Item = (i32, Time)> + '_ {
        self.newest
            .iter()
            .map(|(p, n)| (*p, n.map_or(Time::MIN, |n| n.saturating_sub(self.lateness))))
    }

    /// This worker's watermark: no record it admits from now on is below it
    /// (invariant 2). `i64::MIN` while a partition has delivered nothing.
    pub fn watermark(&self) -> Time {
        self.marks().map(|(_, m)| m).min().unwrap_or(Time::MAX)
    }

    /// The watermark with idle partitions left out (a live run's idle
    /// rule; `i64::MIN` without one): the minimum over the partitions that
    /// delivered within the idle timeout; when every partition is idle,
    /// the newest time this worker saw, or `others` (the other workers'
    /// watermark), whichever is later — an idle worker holds nobody back.
    /// Only the wall clock decides what is idle, so this is the one part of
    /// a run that the same input may not repeat (the docs say so).
    pub fn idle_watermark(&self, now: Instant, others: Time) -> Time {
        let Some((after, seen)) = &self.idle else {
            return Time::MIN;
        };
        let active = self
            .newest
            .iter()
            .filter(|(p, _)| seen.get(p).is_some_and(|s| now.duration_since(*s) < *after));
        let mut any = false;
        let mut lowest = Time::MAX;
        for (_, n) in active {
            any = true;
            lowest = lowest.min(n.map_or(Time::MIN, |n| n.saturating_sub(self.lateness)));
        }
        if any {
            return lowest;
        }
        let newest = self
            .newest
            .iter()
            .filter_map(|(_, n)| *n)
            .max()
            .unwrap_or(Time::MIN);
        newest.max(others)
    }

    /// This worker reported `watermark`: records below it are late from now on.
    pub fn raise_floor(&mut self, watermark: Time) {
        self.floor = self.floor.max(watermark);
    }
}

/// Why a record is late ([`Lateness::judge`]), and the newest event time
/// its partition had delivered (the dead letter's `at`).
#[derive(Debug, Clone, PartialEq)]
pub struct Late {
    /// What the dead letter says.
    pub reason: String,
    /// Its `at`.
    pub at: Option<Time>,
}

impl Late {
    /// `record` as the dead letter this verdict makes it.
    pub fn dead_letter(self, record: Record) -> DeadLetter {
        DeadLetter {
            raw: record.raw,
            stage: Stage::Late,
            reason: self.reason,
            origin: record.origin,
            at: self.at,
        }
    }
}

/// The global watermark as the reports of every worker arrive, applied in
/// epoch order (invariant 2): `i64::MIN` until every worker reported.
#[derive(Debug)]
pub struct Clock {
    latest: Vec<Time>,
}

impl Clock {
    /// A clock over `workers` workers' reports.
    pub fn new(workers: usize) -> Clock {
        Clock {
            latest: vec![Time::MIN; workers],
        }
    }

    /// Takes one report (a worker's watermark never goes back).
    pub fn report(&mut self, (worker, watermark): Report) {
        let latest = &mut self.latest[worker];
        *latest = (*latest).max(watermark);
    }

    /// The global watermark: the minimum over workers.
    pub fn watermark(&self) -> Time {
        self.latest.iter().copied().min().unwrap_or(Time::MAX)
    }

    /// The minimum over the workers other than `me` (`i64::MIN` if there
    /// are none): what an idle worker may adopt.
    pub fn others(&self, me: usize) -> Time {
        self.latest
            .iter()
            .enumerate()
            .filter(|(w, _)| *w != me)
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(Time::MIN)
    }
}

/// One window feature of a grouping, as the fold needs it.
#[derive(Debug, Clone)]
pub struct Part {
    /// The feature's place in the row.
    pub slot: usize,
    /// What is computed.
    pub agg: Agg,
    /// The window's length (ns).
    pub length: i64,
    /// The fixed-point scale of its values.
    pub scale: i64,
    /// Whether it counts applications (no column): every event counts.
    pub counts_events: bool,
}

/// The window features that share one `by`: one arrangement key space.
#[derive(Debug, Clone)]
pub struct Grouping {
    /// Indexes into the spec's columns of the group's columns.
    pub by: Vec<usize>,
    /// The features, each with its field (index into `fields`; `None`
    /// for a count of applications).
    pub parts: Vec<(Part, Option<usize>)>,
    /// The distinct (column, scale) pairs the features read: an event's
    /// [`Fields`], one per field, so features of the same column share one.
    pub fields: Vec<(usize, i64)>,
    /// The longest window: what an application's answer reads back.
    pub longest: i64,
}

/// Every window feature of a spec, grouped by `by`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The groupings, in order of first appearance.
    pub groupings: Vec<Grouping>,
    /// The spec's lateness (ns).
    pub lateness: i64,
}

/// A group's key: the grouping's index, a hash of its values' text, and
/// that text, inline (`core::inline`: a state or a grade costs no
/// allocation, and comparing it reads no other memory). The text keeps
/// distinct groups apart whatever the hash.
pub type Key = (u32, u64, InlineText);

/// FNV-1a, 64 bits: the same on every process and platform.
fn key_hash(text: &[u8]) -> u64 {
    text.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An application's values for one grouping: one per field (a column at
/// a scale, [`Grouping::fields`]), fixed point; `None` where the column has
/// no value. Sixteen bytes: up to one field inline (the common case: a
/// count, or a count and a sum of one column), more in a box. Every event of
/// a grouping has the grouping's number of fields, so values of one group
/// compare field by field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Fields {
    /// No field or one: its value, [`Fields::NONE`] for none.
    One(i64),
    /// Two or more.
    Many(Box<Vec<Option<i64>>>),
}

impl Fields {
    /// The inline value that stands for `None` ([`fixed`] never gives it).
    pub const NONE: i64 = i64::MIN;

    /// Below every value of a grouping's events: where a seek starts.
    pub const LEAST: Fields = Fields::One(Fields::NONE);

    /// The values of `fields` (each `None` or from [`fixed`]).
    pub fn of(mut fields: impl ExactSizeIterator<Item = Option<i64>>) -> Fields {
        match fields.len() {
            0 => Fields::LEAST,
            1 => Fields::One(fields.next().flatten().unwrap_or(Fields::NONE)),
            _ => Fields::Many(Box::new(fields.collect())),
        }
    }

    /// The value of field `i`.
    pub fn get(&self, i: usize) -> Option<i64> {
        match self {
            Fields::One(v) => (i == 0 && *v != Fields::NONE).then_some(*v),
            Fields::Many(values) => values.get(i).copied().flatten(),
        }
    }
}

/// An application's part in one group: an event of it, and a question to
/// it, travelling to the worker that keeps the group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// The group.
    pub key: Key,
    /// The application's event time.
    pub time: Time,
    /// Where the answer goes back to: the window stage tags each
    /// application with its worker's index (above [`TAG_BITS`]) and a
    /// number there, one more per application (0 until then).
    pub tag: u64,
    /// Its values, one per field of the grouping.
    pub values: Fields,
}

/// The window features of one application from one grouping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    /// The application's tag ([`Member::tag`]).
    pub tag: u64,
    /// (slot, value) for each part of the grouping (inline up to six).
    pub features: InlineVec<(u32, f32), 6>,
}

impl Plan {
    /// The window features of `spec`; `None` for a stateless spec.
    pub fn of(spec: &Spec) -> Option<Plan> {
        if spec.windows.is_empty() {
            return None;
        }
        let mut groupings: Vec<Grouping> = Vec::new();
        for w in &spec.windows {
            let part = Part {
                slot: w.slot,
                agg: w.agg,
                length: w.length,
                scale: w.scale,
                counts_events: w.column.is_none(),
            };
            let g = match groupings.iter().position(|g| g.by == w.by) {
                Some(g) => g,
                None => {
                    groupings.push(Grouping {
                        by: w.by.clone(),
                        parts: Vec::new(),
                        fields: Vec::new(),
                        longest: w.length,
                    });
                    groupings.len() - 1
                }
            };
            let g = &mut groupings[g];
            g.longest = g.longest.max(w.length);
            let field = w.column.map(|c| {
                let field = (c, w.scale);
                g.fields
                    .iter()
                    .position(|f| *f == field)
                    .unwrap_or_else(|| {
                        g.fields.push(field);
                        g.fields.len() - 1
                    })
            });
            g.parts.push((part, field));
        }
        Some(Plan {
            groupings,
            lateness: spec.lateness,
        })
    }

    /// The application's members, one per grouping where every `by` column
    /// has a value (elsewhere its features stay missing), each to `out`.
    pub fn members_into(&self, time: Time, values: &[Value], mut out: impl FnMut(Member)) {
        let mut joined = String::new();
        'grouping: for (g, grouping) in self.groupings.iter().enumerate() {
            let key = match grouping.by.as_slice() {
                [column] => match &values[*column] {
                    Value::Str(s) => InlineText::of(s),
                    Value::Int(n) => InlineText::of(itoa::Buffer::new().format(*n)),
                    _ => continue 'grouping,
                },
                by => {
                    // Several columns: their texts joined by the unit separator.
                    joined.clear();
                    for (i, &column) in by.iter().enumerate() {
                        if i > 0 {
                            joined.push('\u{1f}');
                        }
                        match &values[column] {
                            Value::Str(s) => joined.push_str(s),
                            Value::Int(n) => joined.push_str(itoa::Buffer::new().format(*n)),
                            _ => continue 'grouping,
                        }
                    }
                    InlineText::of(&joined)
                }
            };
            out(Member {
                key: (g as u32, key_hash(&key), key),
                time,
                tag: 0,
                values: Fields::of(
                    grouping
                        .fields
                        .iter()
                        .map(|&(column, scale)| fixed(&values[column], scale)),
                ),
            });
        }
    }

    /// [`Plan::members_into`], collected.
    pub fn members(&self, time: Time, values: &[Value]) -> Vec<Member> {
        let mut members = Vec::with_capacity(self.groupings.len());
        self.members_into(time, values, |m| members.push(m));
        members
    }

    /// The grouping of `key`.
    pub fn grouping(&self, key: &Key) -> &Grouping {
        &self.groupings[key.0 as usize]
    }
}

/// A value at a fixed-point scale: `round(value × scale)`, half away from
/// zero (invariant 4); `None` for a missing value or one out of range
/// (beyond ±9.0e18, and `i64::MIN`, which [`Fields`] keeps for `None`).
pub fn fixed(value: &Value, scale: i64) -> Option<i64> {
    match value {
        Value::Int(n) => n.checked_mul(scale).filter(|v| *v != Fields::NONE),
        Value::Float(x) => {
            let scaled = (x * scale as f64).round();
            (scaled.is_finite() && scaled.abs() < 9.0e18).then_some(scaled as i64)
        }
        _ => None,
    }
}

/// The running aggregate of one part over the events of a window.
#[derive(Debug, Clone, Copy)]
pub struct Fold {
    events: i64,
    values: i64,
    sum: i128,
    min: i64,
    max: i64,
}

impl Default for Fold {
    fn default() -> Fold {
        Fold {
            events: 0,
            values: 0,
            sum: 0,
            min: i64::MAX,
            max: i64::MIN,
        }
    }
}

impl Fold {
    /// Adds `times` copies of an event with `value`; a negative `times`
    /// takes them back out (counts and sums only: min and max cannot).
    pub fn add(&mut self, value: Option<i64>, times: i64) {
        self.events += times;
        if let Some(v) = value {
            self.values += times;
            self.sum += i128::from(v) * i128::from(times);
            if times > 0 {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
        }
    }

    /// The feature: counts and sums of an empty window are 0, its mean, min
    /// and max missing; one division at the end (invariant 4).
    pub fn finish(&self, part: &Part) -> f32 {
        let scale = part.scale as f64;
        let n = if part.counts_events {
            self.events
        } else {
            self.values
        };
        // The sum as the nearest f64, as `i128 as f64` rounds it; through
        // i64 where it fits (the same nearest value, without the slow
        // 128-bit conversion).
        let sum = match i64::try_from(self.sum) {
            Ok(sum) => sum as f64,
            Err(_) => wide(self.sum),
        };
        match part.agg {
            Agg::Count => n as f32,
            Agg::Sum => (sum / scale) as f32,
            _ if self.values == 0 => f32::NAN,
            Agg::Mean => (sum / (self.values as f64 * scale)) as f32,
            Agg::Min => (self.min as f64 / scale) as f32,
            Agg::Max => (self.max as f64 / scale) as f32,
        }
    }
}

/// The bits of a tag ([`Member::tag`]) below its worker's index.
pub const TAG_BITS: u32 = 40;

/// A tag's number: the bits below its worker's index (they wrap round).
const TAG_NUMBER: u64 = (1 << TAG_BITS) - 1;

/// The tags of one worker's applications, in the order it reads them: the
/// worker's index above [`TAG_BITS`] and a number below, one more for each
/// application (wrapping round). Answers find their row's worker by it, and
/// the row among those waiting there by the number ([`Assembly`] relies on
/// the numbers coming in order).
pub struct Tags {
    me: u64,
    next: u64,
}

impl Tags {
    /// The tags of worker `index`.
    pub fn new(index: usize) -> Tags {
        Tags {
            me: (index as u64) << TAG_BITS,
            next: 0,
        }
    }

    /// The next application's tag.
    pub fn next_tag(&mut self) -> u64 {
        let tag = self.me | self.next;
        self.next = (self.next + 1) & TAG_NUMBER;
        tag
    }
}

/// `sum` as the nearest f64, out of line: inlined, the compiler sees that
/// both ways give the same value and keeps only this, the slow one.
#[inline(never)]
fn wide(sum: i128) -> f64 {
    sum as f64
}

/// Rows waiting for their window features, by tag: the row, and how many
/// groupings are still to answer. The rows of one worker come in the order
/// of their tags, one apart ([`Tags`]), so they wait in a
/// ring indexed by tag, not a map: no hashing, no rehash moving rows, and
/// a row is moved in once and out once.
#[derive(Debug)]
pub struct Assembly<R> {
    /// The tag of the ring's first slot.
    first: u64,
    /// From `first` on: a waiting row, or `None` for one done (or that
    /// waited for nothing); the front is always a waiting row.
    ring: VecDeque<Option<(R, usize)>>,
}

impl<R> Default for Assembly<R> {
    fn default() -> Assembly<R> {
        Assembly {
            first: 0,
            ring: VecDeque::new(),
        }
    }
}

impl<R> Assembly<R> {
    /// A row that waits for `answers` answers (none: it is complete now).
    /// Rows come in tag order, one apart.
    pub fn row(&mut self, tag: u64, row: R, answers: usize) -> Option<R> {
        if self.ring.is_empty() {
            if answers == 0 {
                return Some(row);
            }
            self.first = tag;
        }
        let at = tag.wrapping_sub(self.first) & TAG_NUMBER;
        assert_eq!(
            at,
            self.ring.len() as u64,
            "window rows come in tag order, one apart"
        );
        if answers == 0 {
            self.ring.push_back(None);
            return Some(row);
        }
        self.ring.push_back(Some((row, answers)));
        None
    }

    /// An answer for `tag`: `fill` writes it into the row; the row once its
    /// last answer came.
    pub fn answer(&mut self, tag: u64, fill: impl FnOnce(&mut R)) -> Option<R> {
        let at = usize::try_from(tag.wrapping_sub(self.first) & TAG_NUMBER).ok()?;
        let (row, left) = self.ring.get_mut(at)?.as_mut()?;
        fill(row);
        *left -= 1;
        if *left > 0 {
            return None;
        }
        let done = self.ring[at].take().map(|(row, _)| row);
        while let Some(None) = self.ring.front() {
            self.ring.pop_front();
            self.first = self.first.wrapping_add(1);
        }
        done
    }

    /// How many rows wait.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.ring.iter().filter(|r| r.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::record::Origin;

    fn record(partition: i32, t: Time) -> Record {
        Record {
            id: format!("r{t}"),
            event_time: Some(t),
            values: Vec::new(),
            raw: Vec::new(),
            origin: Origin::Kafka {
                topic: Arc::from("loans"),
                partition,
                offset: 0,
            },
            read_at: 0,
        }
    }

    #[test]
    fn late_follows_each_partitions_own_order() {
        let mut l = Lateness::new(10, [0, 1]);
        assert_eq!(l.watermark(), Time::MIN, "partition 1 has not spoken");
        assert!(l.admit(record(0, 100)).is_ok());
        assert!(l.admit(record(0, 90)).is_ok(), "within the lateness");
        let dead = l.admit(record(0, 89)).unwrap_err();
        assert_eq!(dead.stage, Stage::Late);
        assert!(dead.reason.contains("partition 0"), "{}", dead.reason);
        assert!(l.admit(record(1, 5)).is_ok(), "another partition's order");
        assert_eq!(l.watermark(), -5);
        assert!(l.admit(record(1, 200)).is_ok());
        assert_eq!(l.watermark(), 90);
    }

    #[test]
    fn idle_partitions_stop_holding_the_watermark_and_the_floor_keeps_it_true() {
        let timeout = Duration::from_secs(10);
        let now = Instant::now();
        let fresh = Lateness::new(0, [0, 1]).idle_after(timeout, now);
        assert_eq!(fresh.idle_watermark(now, 7), Time::MIN, "nobody idle yet");
        // Started 20 s ago: partition 1 has said nothing since, 0 speaks now.
        let start = now
            .checked_sub(Duration::from_secs(20))
            .expect("a clock 20 s old");
        let mut l = Lateness::new(0, [0, 1]).idle_after(timeout, start);
        assert!(l.admit(record(0, 100)).is_ok());
        assert_eq!(l.watermark(), Time::MIN, "without the idle rule 1 holds");
        assert_eq!(
            l.idle_watermark(Instant::now(), 7),
            100,
            "only partition 0 counts"
        );
        // Every partition idle: the newest seen, or the others' watermark.
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(l.idle_watermark(far, 7), 100);
        assert_eq!(l.idle_watermark(far, 500), 500);
        // Once that is reported, a partition back from idle below it is late.
        l.raise_floor(500);
        let dead = l.admit(record(1, 400)).unwrap_err();
        assert!(dead.reason.contains("idle"), "{}", dead.reason);
        assert!(l.admit(record(1, 500)).is_ok());
        // Without the idle rule there is no idle watermark, and the floor
        // never bites: it is never above a partition's newest − lateness.
        let plain = Lateness::new(0, [0]);
        assert_eq!(plain.idle_watermark(far, 500), Time::MIN);
    }

    #[test]
    fn the_clock_tells_a_worker_the_others_watermark() {
        let mut c = Clock::new(3);
        c.report((0, 50));
        c.report((1, 70));
        c.report((2, 60));
        assert_eq!(c.others(0), 60);
        assert_eq!(c.others(1), 50);
        assert_eq!(
            Clock::new(1).others(0),
            Time::MIN,
            "no others: nothing to adopt"
        );
    }

    #[test]
    fn the_clock_waits_for_every_worker() {
        let mut c = Clock::new(2);
        c.report((0, 50));
        assert_eq!(c.watermark(), Time::MIN);
        c.report((1, 70));
        assert_eq!(c.watermark(), 50);
        c.report((0, 40));
        assert_eq!(c.watermark(), 50, "a report never goes back");
    }

    #[test]
    fn folds_are_exact_and_empty_windows_say_so() {
        let part = |agg, counts_events| Part {
            slot: 0,
            agg,
            length: 1,
            scale: 100,
            counts_events,
        };
        let mut f = Fold::default();
        assert_eq!(f.finish(&part(Agg::Count, true)), 0.0);
        assert_eq!(f.finish(&part(Agg::Sum, false)), 0.0);
        assert!(f.finish(&part(Agg::Mean, false)).is_nan());
        f.add(fixed(&Value::Float(0.1), 100), 1);
        f.add(fixed(&Value::Float(0.2), 100), 2);
        f.add(None, 1);
        assert_eq!(f.finish(&part(Agg::Count, true)), 4.0);
        assert_eq!(f.finish(&part(Agg::Count, false)), 3.0);
        assert_eq!(f.finish(&part(Agg::Sum, false)), 0.5);
        assert_eq!(f.finish(&part(Agg::Mean, false)), (50.0f64 / 300.0) as f32);
        assert_eq!(f.finish(&part(Agg::Min, false)), 0.1);
        assert_eq!(f.finish(&part(Agg::Max, false)), 0.2);
        assert_eq!(fixed(&Value::Float(-0.125), 100), Some(-13));
    }

    #[test]
    fn fields_keep_one_value_inline_and_none_apart() {
        assert_eq!(size_of::<Fields>(), 16);
        let none = Fields::of(std::iter::once(None));
        let zero = Fields::of(std::iter::once(Some(0)));
        assert_eq!((none.get(0), zero.get(0)), (None, Some(0)));
        assert_eq!(Fields::of(std::iter::empty()).get(0), None);
        let two = Fields::of([Some(3), None].into_iter());
        assert_eq!((two.get(0), two.get(1), two.get(2)), (Some(3), None, None));
        // A seek from `LEAST` finds every value of a grouping's events.
        for f in [
            &none,
            &zero,
            &two,
            &Fields::of(std::iter::once(Some(i64::MIN + 1))),
        ] {
            assert!(Fields::LEAST <= *f);
        }
        // The one integer kept for `None` is out of range, as overflow is.
        assert_eq!(fixed(&Value::Int(i64::MIN), 1), None);
        assert_eq!(fixed(&Value::Int(i64::MIN + 1), 1), Some(i64::MIN + 1));
        assert_eq!(fixed(&Value::Int(i64::MAX), 2), None);
    }

    #[test]
    fn sums_convert_as_their_exact_integer_does() {
        let part = |agg| Part {
            slot: 0,
            agg,
            length: 1,
            scale: 1,
            counts_events: false,
        };
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut cases: Vec<(i64, i64)> = (0..100_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Every magnitude, both signs.
                let v = (x >> (i % 64)) as i64;
                (if i % 2 == 0 { v } else { -v }, 1 + (i % 3))
            })
            .collect();
        cases.extend([
            (i64::MAX, 2),
            (i64::MIN, 2),
            (i64::MAX, 1),
            (i64::MIN, 1),
            (1 << 53, 1),
        ]);
        cases.push(((1 << 53) + 1, 1));
        for (v, times) in cases {
            let mut f = Fold::default();
            f.add(Some(v), times);
            let exact = i128::from(v) * i128::from(times);
            assert_eq!(
                f.finish(&part(Agg::Sum)),
                (exact as f64) as f32,
                "{v} × {times}"
            );
            let mean = (exact as f64 / times as f64) as f32;
            assert_eq!(f.finish(&part(Agg::Mean)), mean, "{v} × {times}");
        }
    }

    #[test]
    fn rows_leave_the_assembly_once_answered_in_any_order() {
        let mut a: Assembly<Vec<u32>> = Assembly::default();
        // Tags of worker 3, starting just below the number's wrap.
        let tag = |i: u64| (3 << TAG_BITS) | ((TAG_NUMBER - 1 + i) & TAG_NUMBER);
        let waits = [2, 0, 1, 3, 0, 1];
        for (i, &n) in waits.iter().enumerate() {
            let done = a.row(tag(i as u64), vec![], n);
            assert_eq!(done.is_some(), n == 0);
        }
        assert_eq!(a.waiting(), 4);
        let mut out = Vec::new();
        // Answers in an order other than the rows'.
        for i in [3, 5, 0, 3, 2, 0, 3] {
            if let Some(row) = a.answer(tag(i), |r: &mut Vec<u32>| r.push(i as u32)) {
                out.push(row);
            }
        }
        assert_eq!(out, vec![vec![5], vec![2], vec![0, 0], vec![3, 3, 3]]);
        assert_eq!(a.waiting(), 0);
        // An answer for no waiting row is no row.
        assert!(a.answer(tag(1), |_| {}).is_none());
        // A worker's tags, as the clean stage gives them, go in order.
        let mut tags = Tags::new(2);
        let mut b: Assembly<u64> = Assembly::default();
        let given: Vec<u64> = (0..5).map(|_| tags.next_tag()).collect();
        assert!(given.iter().all(|t| t >> TAG_BITS == 2));
        for &t in &given {
            assert!(b.row(t, t, 1).is_none());
        }
        let back: Vec<u64> = given
            .iter()
            .rev()
            .filter_map(|&t| b.answer(t, |_| {}))
            .collect();
        assert_eq!(back, given.iter().rev().copied().collect::<Vec<_>>());
        // Empty again, a new row starts the ring afresh.
        assert!(a.row(tag(40), vec![], 1).is_none());
        assert_eq!(a.answer(tag(40), |r| r.push(9)), Some(vec![9]));
    }
}
