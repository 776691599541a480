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
//!    at the spec's fixed-point scale ([`Values::fixed`]), and only the
//!    final division is floating point ([`Fold::finish`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

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

    /// This worker's watermark: no record it admits from now on is below it
    /// (invariant 2). `i64::MIN` while a partition has delivered nothing.
    pub fn watermark(&self) -> Time {
        self.newest
            .iter()
            .map(|(_, n)| n.map_or(Time::MIN, |n| n.saturating_sub(self.lateness)))
            .min()
            .unwrap_or(Time::MAX)
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
    /// [`Values`], one per field, so features of the same column share one.
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
/// that text. Ordered in that order, so the arrangement's key comparisons
/// (seeks, merges) compare two integers and reach the text only when the
/// hashes tie — in practice, for the same group. The text keeps distinct
/// groups apart whatever the hash.
pub type Key = (u32, u64, String);

/// FNV-1a, 64 bits: the same on every process and platform.
fn key_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An application's values for one grouping: one per field (a column at
/// a scale, [`Grouping::fields`]), fixed point; `None` where the column has
/// no value.
pub type Values = Vec<Option<i64>>;

/// An application's part in one group: an event of it, and a question to
/// it, travelling to the worker that keeps the group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// The group.
    pub key: Key,
    /// The application's event time.
    pub time: Time,
    /// Where the answer goes back to: the window stage tags each
    /// application with its worker and a number there (0 until then).
    pub tag: u64,
    /// Its values, one per field of the grouping.
    pub values: Values,
}

/// The window features of one application from one grouping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    /// The application's tag ([`Member::tag`]).
    pub tag: u64,
    /// (slot, value) for each part of the grouping.
    pub features: Vec<(u32, f32)>,
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
    /// has a value (elsewhere its features stay missing).
    pub fn members(&self, time: Time, values: &[Value]) -> Vec<Member> {
        let mut members = Vec::with_capacity(self.groupings.len());
        'grouping: for (g, grouping) in self.groupings.iter().enumerate() {
            let mut key = String::new();
            for (i, &column) in grouping.by.iter().enumerate() {
                if i > 0 {
                    key.push('\u{1f}');
                }
                match &values[column] {
                    Value::Str(s) => key.push_str(s),
                    Value::Int(n) => key.push_str(itoa::Buffer::new().format(*n)),
                    _ => continue 'grouping,
                }
            }
            members.push(Member {
                key: (g as u32, key_hash(&key), key),
                time,
                tag: 0,
                values: grouping
                    .fields
                    .iter()
                    .map(|&(column, scale)| fixed(&values[column], scale))
                    .collect(),
            });
        }
        members
    }

    /// The grouping of `key`.
    pub fn grouping(&self, key: &Key) -> &Grouping {
        &self.groupings[key.0 as usize]
    }
}

/// A value at a fixed-point scale: `round(value × scale)`, half away from
/// zero (invariant 4); `None` for a missing value or one out of range.
pub fn fixed(value: &Value, scale: i64) -> Option<i64> {
    match value {
        Value::Int(n) => n.checked_mul(scale),
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
        match part.agg {
            Agg::Count => n as f32,
            Agg::Sum => (self.sum as f64 / scale) as f32,
            _ if self.values == 0 => f32::NAN,
            Agg::Mean => (self.sum as f64 / (self.values as f64 * scale)) as f32,
            Agg::Min => (self.min as f64 / scale) as f32,
            Agg::Max => (self.max as f64 / scale) as f32,
        }
    }
}

/// Rows waiting for their window features, by tag: the row, and how many
/// groupings are still to answer.
#[derive(Debug)]
pub struct Assembly<R> {
    waiting: FxHashMap<u64, (R, usize)>,
}

impl<R> Default for Assembly<R> {
    fn default() -> Assembly<R> {
        Assembly {
            waiting: FxHashMap::default(),
        }
    }
}

impl<R> Assembly<R> {
    /// A row that waits for `answers` answers (none: it is complete now).
    pub fn row(&mut self, tag: u64, row: R, answers: usize) -> Option<R> {
        if answers == 0 {
            return Some(row);
        }
        self.waiting.insert(tag, (row, answers));
        None
    }

    /// An answer for `tag`: `fill` writes it into the row; the row once its
    /// last answer came.
    pub fn answer(&mut self, tag: u64, fill: impl FnOnce(&mut R)) -> Option<R> {
        let (row, left) = self.waiting.get_mut(&tag)?;
        fill(row);
        *left -= 1;
        if *left == 0 {
            self.waiting.remove(&tag).map(|(row, _)| row)
        } else {
            None
        }
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
}
