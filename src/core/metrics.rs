//! The process's metrics: what `--http` exposes on `/metrics` (Prometheus'
//! text format, through `prometheus-client`) and draws on the live page.
//!
//! Every layer that counts something imports this module (it sits in
//! `core`, below them all) and reaches the one [`Metrics`] through
//! [`installed`].
//!
//! # Invariants
//! 1. **Off costs one load.** The metrics exist only once [`install`] ran
//!    (a run with `--http` calls it before any worker starts); until then
//!    [`installed`] is `None` and every hook is a branch on it.
//! 2. **Per batch, not per record.** Counters move once per batch (a
//!    stage's activation, a sink's write); the only per-record work is a
//!    [`Tap`]'s: a latency bucket in a local array and, for a flagged
//!    application, a copy of its id into a local list of at most
//!    [`FEED_LEN`], both handed over once per activation.
//! 3. **Counters only grow, over the whole process**: a run started again
//!    after a fault ([`Metrics::restarted`]) keeps counting from where the
//!    last one stopped, as Prometheus expects of a counter.
//! 4. **Monitor values are gauges and short series**: the last value per
//!    group or column is the gauge; the last [`SERIES_LEN`] windows of each
//!    are kept, by window end, for the page.
//! 5. **The watermark is the global one**, as the window stage applies it
//!    (`core::window::Clock`, the minimum over every worker's report), and
//!    it only moves forward here too (each worker's window stage reports the
//!    same sequence, at its own pace), set before the answers it lets out:
//!    every application written has an event time at or below it. The lag
//!    is computed when scraped: the newest event time read by this process
//!    minus that watermark, so it grows while the watermark is held back,
//!    not only when it moves.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use rustc_hash::FxHashMap;

use super::record::{DeadLetter, Stage};
use super::scored::Output;

/// Upper bounds (seconds) of the read → write latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// [`LATENCY_BUCKETS`] in nanoseconds (a sink compares integers).
const LATENCY_BUCKETS_NS: [u64; LATENCY_BUCKETS.len()] = {
    let mut ns = [0u64; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// How many flagged applications the live feed keeps.
pub const FEED_LEN: usize = 50;

/// How many windows of each monitor series the page is given.
pub const SERIES_LEN: usize = 500;

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics, made on the first call (invariant 1).
pub fn install() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// The process's metrics if a run installed them.
#[inline]
pub fn installed() -> Option<&'static Metrics> {
    METRICS.get()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLabels {
    stage: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ColumnLabels {
    column: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// A histogram whose buckets are plain atomics, so a sink merges a whole
/// activation's latencies with one add per bucket (prometheus-client's own
/// histogram takes one observation at a time).
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Per bucket of [`LATENCY_BUCKETS`], then one for the rest (+Inf): not cumulative.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    fn new() -> LatencyHistogram {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// The counts per bucket (not cumulative, the last one +Inf), and the total.
    pub fn snapshot(&self) -> ([u64; LATENCY_BUCKETS.len() + 1], u64) {
        (
            std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            self.count.load(Ordering::Relaxed),
        )
    }
}

/// The `q` quantile (seconds) of bucket counts `counts` (not cumulative,
/// the last one +Inf), interpolated linearly within its bucket; `None`
/// with no observation.
pub fn quantile(counts: &[u64; LATENCY_BUCKETS.len() + 1], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && (below + c) as f64 >= rank {
            let lo = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let Some(&hi) = LATENCY_BUCKETS.get(i) else {
                return Some(lo); // in +Inf: the last finite bound is all we know
            };
            let within = ((rank - below as f64) / c as f64).clamp(0.0, 1.0);
            return Some(lo + (hi - lo) * within);
        }
        below += c;
    }
    LATENCY_BUCKETS.last().copied()
}

/// The registry's handle on the one [`LatencyHistogram`].
#[derive(Debug, Clone)]
struct LatencyMetric(std::sync::Arc<LatencyHistogram>);

impl EncodeMetric for LatencyMetric {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (counts, count) = self.0.snapshot();
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts)
            .collect();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The event times behind the watermark gauges (invariant 5).
#[derive(Debug)]
struct EventClock {
    newest: AtomicI64,
    watermark: AtomicI64,
}

impl EventClock {
    fn read(&self) -> Option<(i64, i64)> {
        let newest = self.newest.load(Ordering::Relaxed);
        let watermark = self.watermark.load(Ordering::Relaxed);
        (newest != i64::MIN && watermark != i64::MIN)
            .then(|| (watermark, newest.saturating_sub(watermark).max(0)))
    }
}

#[derive(Debug, Clone, Copy)]
enum EventClockValue {
    Lag,
    Watermark,
}

/// A gauge of the [`EventClock`], read when scraped; no sample until the
/// watermark is known.
#[derive(Debug, Clone)]
struct EventClockMetric(std::sync::Arc<EventClock>, EventClockValue);

impl EncodeMetric for EventClockMetric {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let Some((watermark, lag)) = self.0.read() else {
            return Ok(());
        };
        let ns = match self.1 {
            EventClockValue::Lag => lag,
            EventClockValue::Watermark => watermark,
        };
        encoder.encode_gauge(&(ns as f64 / 1e9))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// A flagged application in the live feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Flagged {
    /// Its id.
    pub id: String,
    /// Its score.
    pub score: f32,
    /// Its event time (ns since the epoch), if it has one.
    pub event_time: Option<i64>,
    /// When the sink wrote it (ns since the epoch).
    pub written_at: i64,
}

/// One monitor series: (window end in ms since the epoch, value), in window
/// order, the last [`SERIES_LEN`] windows.
pub type Series = VecDeque<(i64, f64)>;

/// Everything `/metrics` exposes, as cheap handles (see the module's invariants).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    records_in: Family<StageLabels, Counter>,
    records_out: Family<StageLabels, Counter>,
    delivered: Family<KindLabels, Counter>,
    dead_letters: Family<DeadLabels, Counter>,
    latency: std::sync::Arc<LatencyHistogram>,
    batch_size: Histogram,
    consumer_lag: Family<PartitionLabels, Gauge>,
    committed_offset: Family<PartitionLabels, Gauge>,
    transactions: Family<OutcomeLabels, Counter>,
    restarts: Counter,
    outage: FloatCounter,
    workers_running: Gauge,
    flag_rate: Family<GroupLabels, FloatGauge>,
    psi: Family<ColumnLabels, FloatGauge>,
    /// The monitor's series, with their gauges' handles.
    board: Mutex<Board>,
    feed: Mutex<VecDeque<Flagged>>,
    /// Monotonic count of what was pushed to the feed (the page's cursor).
    feed_pushed: AtomicU64,
    /// Newest event time read (ns), and the global watermark (ns), both
    /// `i64::MIN` until known (invariant 5).
    event_clock: std::sync::Arc<EventClock>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("loanflow");
        let m = Metrics {
            records_in: Family::default(),
            records_out: Family::default(),
            delivered: Family::default(),
            dead_letters: Family::default(),
            latency: std::sync::Arc::new(LatencyHistogram::new()),
            batch_size: Histogram::new([1.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0]),
            consumer_lag: Family::default(),
            committed_offset: Family::default(),
            transactions: Family::default(),
            restarts: Counter::default(),
            outage: FloatCounter::default(),
            workers_running: Gauge::default(),
            flag_rate: Family::default(),
            psi: Family::default(),
            board: Mutex::default(),
            feed: Mutex::new(VecDeque::with_capacity(FEED_LEN)),
            feed_pushed: AtomicU64::new(0),
            event_clock: std::sync::Arc::new(EventClock {
                newest: AtomicI64::new(i64::MIN),
                watermark: AtomicI64::new(i64::MIN),
            }),
            registry: Registry::default(),
        };
        registry.register(
            "records_in",
            "Records into each stage (source: read from the input)",
            m.records_in.clone(),
        );
        registry.register(
            "records_out",
            "Records out of each stage, dead letters not counted (sink: delivered)",
            m.records_out.clone(),
        );
        registry.register(
            "outputs",
            "Outputs delivered by the sinks, by kind (scored, flagged, cleaned, dead_letter); committed ones with exactly once",
            m.delivered.clone(),
        );
        registry.register(
            "dead_letters",
            "Dead letters made, by stage and reason (its values blanked)",
            m.dead_letters.clone(),
        );
        registry.register_with_unit(
            "latency",
            "From the source reading an application to the sink writing it",
            Unit::Seconds,
            LatencyMetric(m.latency.clone()),
        );
        registry.register(
            "batch_size",
            "Records per batch a source hands to the dataflow",
            m.batch_size.clone(),
        );
        registry.register(
            "consumer_lag",
            "Records behind the partition's end, from the consumer's statistics",
            m.consumer_lag.clone(),
        );
        registry.register(
            "committed_offset",
            "The next offset to read, as last committed for the group",
            m.committed_offset.clone(),
        );
        registry.register(
            "transactions",
            "Kafka transactions, by outcome (committed, aborted)",
            m.transactions.clone(),
        );
        registry.register(
            "restarts",
            "Runs started again after a fault a restart helps",
            m.restarts.clone(),
        );
        registry.register_with_unit(
            "outage",
            "Time spent between a failed run and its restart",
            Unit::Seconds,
            m.outage.clone(),
        );
        registry.register_with_unit(
            "watermark_lag",
            "Newest event time read minus the global watermark (window dataflows)",
            Unit::Seconds,
            EventClockMetric(m.event_clock.clone(), EventClockValue::Lag),
        );
        registry.register_with_unit(
            "watermark",
            "The global watermark: event time, since the Unix epoch (window dataflows)",
            Unit::Seconds,
            EventClockMetric(m.event_clock.clone(), EventClockValue::Watermark),
        );
        registry.register(
            "workers_running",
            "Worker threads of this process now running",
            m.workers_running.clone(),
        );
        registry.register(
            "monitor_flag_rate",
            "The monitor's flag rate per group, in its newest window",
            m.flag_rate.clone(),
        );
        registry.register(
            "monitor_psi",
            "The monitor's population stability index per column, in its newest window",
            m.psi.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The exposition, in the OpenMetrics text format (which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// The exposition in Prometheus' older text format (0.0.4), for a
    /// scraper that does not ask for OpenMetrics (`promtool`, `curl`): the
    /// same samples, a counter's family named with its `_total`, no `# UNIT`
    /// nor `# EOF`.
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }

    /// A stage's counters, to keep and move once per batch.
    pub fn stage(&self, stage: &str) -> StageCounters {
        let labels = StageLabels {
            stage: stage.to_owned(),
        };
        StageCounters {
            input: self.records_in.get_or_create(&labels).clone(),
            output: self.records_out.get_or_create(&labels).clone(),
        }
    }

    /// A source handed a batch of `n` records to the dataflow.
    pub fn source_batch(&self, n: usize) {
        if n > 0 {
            self.batch_size.observe(n as f64);
            self.stage("source").moved(n, n);
        }
    }

    /// A sink delivered these (at least once: written and acknowledged;
    /// exactly once: committed).
    pub fn delivered(&self, scored: u64, flagged: u64, cleaned: u64, dead_letters: u64) {
        for (kind, n) in [
            ("scored", scored),
            ("flagged", flagged),
            ("cleaned", cleaned),
            ("dead_letter", dead_letters),
        ] {
            if n > 0 {
                let labels = KindLabels {
                    kind: kind.to_owned(),
                };
                self.delivered.get_or_create(&labels).inc_by(n);
            }
        }
        let out = scored + cleaned;
        if out > 0 {
            self.stage("sink").moved(out as usize, out as usize);
        }
    }

    /// Dead letters a stage made, counted by stage and reason.
    pub fn dead_letters(&self, dead: &[DeadLetter]) {
        let mut by: BTreeMap<(&str, String), u64> = BTreeMap::new();
        for d in dead {
            *by.entry((stage_name(d.stage), reason_kind(&d.reason)))
                .or_default() += 1;
        }
        for ((stage, reason), n) in by {
            let labels = DeadLabels {
                stage: stage.to_owned(),
                reason,
            };
            self.dead_letters.get_or_create(&labels).inc_by(n);
        }
    }

    /// A partition's lag (records behind its end).
    pub fn set_consumer_lag(&self, topic: &str, partition: i32, lag: u64) {
        self.consumer_lag
            .get_or_create(&partition_labels(topic, partition))
            .set(lag.min(i64::MAX as u64) as i64);
    }

    /// A partition's committed offset.
    pub fn set_committed_offset(&self, topic: &str, partition: i32, offset: i64) {
        self.committed_offset
            .get_or_create(&partition_labels(topic, partition))
            .set(offset);
    }

    /// An exactly-once sink is ready: both outcomes of its transactions
    /// are exposed from now on, at 0 until one ends so.
    pub fn transactions_ready(&self) {
        for outcome in ["committed", "aborted"] {
            let _ = self.transactions.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
    }

    /// Kafka transactions ended so far with this outcome.
    pub fn transactions(&self, committed: bool) -> u64 {
        let outcome = if committed { "committed" } else { "aborted" };
        self.transactions
            .get(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .map_or(0, |c| c.get())
    }

    /// A Kafka transaction ended: committed or aborted.
    pub fn transaction(&self, committed: bool) {
        let outcome = if committed { "committed" } else { "aborted" };
        self.transactions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A run is started again after `outage_seconds` down.
    pub fn restarted(&self, outage_seconds: f64) {
        self.restarts.inc();
        self.outage.inc_by(outage_seconds.max(0.0));
    }

    /// A record with event time `event_time` (ns) was read; cheap: one atomic max.
    #[inline]
    pub fn event_read(&self, event_time: i64) {
        self.event_clock
            .newest
            .fetch_max(event_time, Ordering::Relaxed);
    }

    /// The window stage applied the global watermark `watermark` (ns):
    /// kept if it is later than the one known (invariant 5); `i64::MIN`
    /// (not every worker reported yet) and `i64::MAX` (every input ended)
    /// are no event time and leave it be.
    pub fn set_watermark(&self, watermark: i64) {
        if watermark != i64::MIN && watermark != i64::MAX {
            self.event_clock
                .watermark
                .fetch_max(watermark, Ordering::Relaxed);
        }
    }

    /// The global watermark (ns) and the lag behind the newest event time
    /// read (ns), once both are known.
    pub fn watermark(&self) -> Option<(i64, i64)> {
        self.event_clock.read()
    }

    /// A worker started (`+1`) or ended (`-1`).
    pub fn worker_running(&self, delta: i64) {
        self.workers_running.inc_by(delta);
    }

    /// How many workers run now (`/healthz` answers 200 while any does).
    pub fn workers_running(&self) -> i64 {
        self.workers_running.get()
    }

    /// The latency histogram (the page derives p50/p99 from it).
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// Outputs delivered so far of `kind` (`scored`, `flagged`, `cleaned`, `dead_letter`).
    pub fn delivered_count(&self, kind: &str) -> u64 {
        self.delivered
            .get(&KindLabels {
                kind: kind.to_owned(),
            })
            .map_or(0, |c| c.get())
    }

    /// The monitor's hook: one window's flag rates by group and PSI by
    /// column, ending at `window_end_ms`, as gauges (the last window set
    /// wins) and as the page's series. One lock per window; a gauge's
    /// handle and its series are found by name, allocating only for a
    /// name's first window.
    pub fn set_window<'a>(
        &self,
        window_end_ms: i64,
        flag_rates: impl IntoIterator<Item = (&'a str, f64)>,
        psis: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        let Board { flag, psi } = &mut *board;
        for (group, rate) in flag_rates {
            keep(flag, group, window_end_ms, rate, || {
                self.flag_rate
                    .get_or_create(&GroupLabels {
                        group: group.to_owned(),
                    })
                    .clone()
            });
        }
        for (column, value) in psis {
            keep(psi, column, window_end_ms, value, || {
                self.psi
                    .get_or_create(&ColumnLabels {
                        column: column.to_owned(),
                    })
                    .clone()
            });
        }
    }

    /// The flag-rate series by group.
    pub fn flag_series(&self) -> BTreeMap<String, Series> {
        let board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        series_of(&board.flag)
    }

    /// The PSI series by column.
    pub fn psi_series(&self) -> BTreeMap<String, Series> {
        let board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        series_of(&board.psi)
    }

    /// The live feed, newest first, and how many flagged applications the
    /// sinks ever saw (the feed keeps the last [`FEED_LEN`]).
    pub fn feed(&self) -> (Vec<Flagged>, u64) {
        let feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        (
            feed.iter().rev().cloned().collect(),
            self.feed_pushed.load(Ordering::Relaxed),
        )
    }

    /// The latest flagged applications of a tap (`seen`: how many it saw,
    /// kept or not) into the feed.
    fn push_feed(&self, flagged: &mut VecDeque<Flagged>, seen: u64) {
        if flagged.is_empty() {
            return;
        }
        let mut feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        self.feed_pushed.fetch_add(seen, Ordering::Relaxed);
        for f in flagged.drain(..) {
            if feed.len() == FEED_LEN {
                feed.pop_front();
            }
            feed.push_back(f);
        }
    }
}

/// OpenMetrics text as Prometheus' 0.0.4 text format (see
/// [`Metrics::encode_text`]).
pub fn openmetrics_to_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + 64);
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The monitor's gauges and series, by group (flag rates) and column (PSI).
#[derive(Debug, Default)]
struct Board {
    flag: FxHashMap<String, (FloatGauge, Series)>,
    psi: FxHashMap<String, (FloatGauge, Series)>,
}

/// Sets `key`'s gauge (made by `gauge` the first time) and keeps the value
/// in its series, the last [`SERIES_LEN`] windows.
fn keep(
    board: &mut FxHashMap<String, (FloatGauge, Series)>,
    key: &str,
    at: i64,
    value: f64,
    gauge: impl FnOnce() -> FloatGauge,
) {
    let (g, s) = match board.get_mut(key) {
        Some(entry) => entry,
        None => board
            .entry(key.to_owned())
            .or_insert_with(|| (gauge(), Series::new())),
    };
    g.set(value);
    // Windows close in order: a new one goes at the back.
    match s.back() {
        Some(&(last, _)) if last >= at => match s.binary_search_by_key(&at, |(t, _)| *t) {
            Ok(i) => s[i].1 = value,
            Err(i) => s.insert(i, (at, value)),
        },
        _ => s.push_back((at, value)),
    }
    while s.len() > SERIES_LEN {
        s.pop_front();
    }
}

fn series_of(board: &FxHashMap<String, (FloatGauge, Series)>) -> BTreeMap<String, Series> {
    board
        .iter()
        .map(|(k, (_, s))| (k.clone(), s.clone()))
        .collect()
}

fn partition_labels(topic: &str, partition: i32) -> PartitionLabels {
    PartitionLabels {
        topic: topic.to_owned(),
        partition: partition.to_string(),
    }
}

/// The stage's name as a label.
pub fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Ingest => "ingest",
        Stage::Clean => "clean",
        Stage::Predict => "predict",
        Stage::Late => "late",
    }
}

/// A dead letter's reason with its values blanked, so the label has few
/// values: the first backquoted name (the column) is kept, later backquoted
/// values become `…`, digits become `N`, and a parenthesised tail (the
/// expected levels) is dropped.
pub fn reason_kind(reason: &str) -> String {
    let head = reason.split(" (").next().unwrap_or(reason);
    let mut out = String::with_capacity(head.len());
    let mut quoted = 0;
    let mut inside = false;
    let mut last_digit = false;
    for c in head.chars() {
        if c == '`' {
            if !inside {
                quoted += 1;
                if quoted > 1 {
                    out.push('…');
                }
            }
            inside = !inside;
            last_digit = false;
            continue;
        }
        if inside && quoted > 1 {
            continue;
        }
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('N');
            }
            last_digit = true;
            continue;
        }
        last_digit = false;
        out.push(c);
    }
    let mut out: String = out.trim().chars().take(80).collect();
    if out.is_empty() {
        let _ = write!(out, "unknown");
    }
    out
}

/// A stage's two counters (records in, records out), kept by an operator
/// and moved once per batch.
#[derive(Debug, Clone)]
pub struct StageCounters {
    input: Counter,
    output: Counter,
}

impl StageCounters {
    /// The counters of `stage`, if the metrics are installed.
    pub fn of(stage: &str) -> Option<StageCounters> {
        installed().map(|m| m.stage(stage))
    }

    /// One batch: `n_in` records in, `n_out` passed on.
    #[inline]
    pub fn moved(&self, n_in: usize, n_out: usize) {
        if n_in > 0 {
            self.input.inc_by(n_in as u64);
        }
        if n_out > 0 {
            self.output.inc_by(n_out as u64);
        }
    }
}

/// A sink's per-activation view of what it writes: latencies into local
/// buckets, flagged applications into a short local list; [`Tap::flush`]
/// hands both over (invariant 2). A no-op without metrics.
#[derive(Debug)]
pub struct Tap {
    metrics: Option<&'static Metrics>,
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum_ns: u64,
    count: u64,
    /// The last [`FEED_LEN`] flagged applications seen, and how many were.
    flagged: VecDeque<Flagged>,
    flagged_seen: u64,
    /// The last latency seen (ns) and its bucket.
    last: Option<(u64, usize)>,
}

impl Default for Tap {
    fn default() -> Tap {
        Tap::new()
    }
}

impl Tap {
    /// A tap on the installed metrics (a no-op if there are none).
    pub fn new() -> Tap {
        Tap {
            metrics: installed(),
            buckets: [0; LATENCY_BUCKETS.len() + 1],
            sum_ns: 0,
            count: 0,
            flagged: VecDeque::with_capacity(FEED_LEN),
            flagged_seen: 0,
            last: None,
        }
    }

    /// Whether anything is listening.
    #[inline]
    pub fn on(&self) -> bool {
        self.metrics.is_some()
    }

    /// The sink writes `output` at `now` (ns since the epoch).
    #[inline]
    pub fn see(&mut self, output: &Output, now: i64) {
        if self.metrics.is_none() {
            return;
        }
        if let Output::Scored(s) = output {
            self.latency(s.read_at, now);
            if s.flagged {
                self.flagged_seen += 1;
                if self.flagged.len() == FEED_LEN {
                    self.flagged.pop_front();
                }
                self.flagged.push_back(Flagged {
                    id: s.id.clone(),
                    score: s.score,
                    event_time: s.event_time,
                    written_at: now,
                });
            }
        }
    }

    #[inline]
    fn latency(&mut self, read_at: i64, now: i64) {
        if read_at <= 0 {
            return; // not stamped by a source (a test's record)
        }
        let ns = now.saturating_sub(read_at).max(0) as u64;
        // A source stamps a whole batch with one time, so its records
        // arrive here in runs of one latency: its bucket is found once.
        let i = match self.last {
            Some((n, i)) if n == ns => i,
            _ => {
                let i = LATENCY_BUCKETS_NS.partition_point(|&b| b < ns);
                self.last = Some((ns, i));
                i
            }
        };
        self.buckets[i] += 1;
        self.sum_ns += ns;
        self.count += 1;
    }

    /// Hands this activation's latencies and flagged applications over.
    pub fn flush(&mut self) {
        let Some(m) = self.metrics else { return };
        if self.count > 0 {
            for (i, n) in self.buckets.iter_mut().enumerate() {
                if *n > 0 {
                    m.latency.buckets[i].fetch_add(*n, Ordering::Relaxed);
                    *n = 0;
                }
            }
            m.latency.sum_ns.fetch_add(self.sum_ns, Ordering::Relaxed);
            m.latency.count.fetch_add(self.count, Ordering::Relaxed);
            self.sum_ns = 0;
            self.count = 0;
        }
        m.push_feed(&mut self.flagged, self.flagged_seen);
        self.flagged_seen = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_keep_the_column_and_blank_the_values() {
        assert_eq!(
            reason_kind("column `sub_grade`: unknown level `Z9` (expected one of A1, A2)"),
            "column sub_grade: unknown level …"
        );
        assert_eq!(
            reason_kind("wrong field count: 12 where the header has 45"),
            "wrong field count: N where the header has N"
        );
        assert_eq!(reason_kind(""), "unknown");
    }

    #[test]
    fn the_text_format_names_counter_families_with_their_total() {
        let open = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total 3\n\
                    # HELP x_lag_seconds Lag.\n# TYPE x_lag_seconds gauge\n# UNIT x_lag_seconds seconds\n\
                    x_lag_seconds 1.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(open),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total 3\n\
             # HELP x_lag_seconds Lag.\n# TYPE x_lag_seconds gauge\nx_lag_seconds 1.5\n"
        );
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let mut counts = [0u64; LATENCY_BUCKETS.len() + 1];
        assert_eq!(quantile(&counts, 0.5), None);
        counts[1] = 100; // (0.0005, 0.001]
        let p50 = quantile(&counts, 0.5).unwrap();
        assert!((p50 - 0.00075).abs() < 1e-12, "{p50}");
        counts[LATENCY_BUCKETS.len()] = 100; // beyond the last bound
        assert_eq!(quantile(&counts, 0.99), Some(60.0));
    }

    /// The monitor's hooks, called directly: gauges in the exposition and
    /// series for the page (the global metrics are shared by this test
    /// binary's tests, so each test uses its own names).
    #[test]
    fn the_monitor_hooks_set_gauges_and_keep_series() {
        let m = install();
        m.set_window(1_000, [("hook_A1", 0.25)], []);
        m.set_window(2_000, [("hook_A1", 0.5)], [("hook_int_rate", 0.3)]);
        let text = m.encode();
        assert!(
            text.contains("loanflow_monitor_flag_rate{group=\"hook_A1\"} 0.5"),
            "{text}"
        );
        assert!(
            text.contains("loanflow_monitor_psi{column=\"hook_int_rate\"} 0.3"),
            "{text}"
        );
        let flags = m.flag_series();
        assert_eq!(
            flags["hook_A1"].iter().collect::<Vec<_>>(),
            vec![&(1_000, 0.25), &(2_000, 0.5)]
        );
        for end in 0..(SERIES_LEN as i64 + 10) {
            m.set_window(end, [], [("hook_long", 0.01)]);
        }
        let long = &m.psi_series()["hook_long"];
        assert_eq!(long.len(), SERIES_LEN);
        assert_eq!(long.front().map(|(k, _)| *k), Some(10));
    }

    /// The watermark gauges: nothing until the watermark is known, then
    /// the latest global watermark and the newest event time read minus it,
    /// as of the scrape (the only test here that moves them).
    #[test]
    fn the_watermark_gauges_follow_the_latest_global_watermark() {
        let m = install();
        m.event_read(5_000_000_000);
        m.set_watermark(i64::MIN); // not every worker reported
        assert_eq!(m.watermark(), None);
        assert!(!m.encode().contains("\nloanflow_watermark_seconds "));
        m.set_watermark(2_000_000_000);
        assert_eq!(m.watermark(), Some((2_000_000_000, 3_000_000_000)));
        m.set_watermark(1_000_000_000); // another worker's stage, behind
        m.set_watermark(i64::MAX); // every input ended
        assert_eq!(m.watermark(), Some((2_000_000_000, 3_000_000_000)));
        m.event_read(9_500_000_000); // read later, the watermark held back
        let text = m.encode();
        assert!(
            text.contains("\nloanflow_watermark_seconds 2.0\n"),
            "{text}"
        );
        assert!(
            text.contains("\nloanflow_watermark_lag_seconds 7.5\n"),
            "{text}"
        );
    }

    #[test]
    fn a_tap_hands_over_latencies_and_the_newest_flagged() {
        use crate::core::record::Origin;
        use crate::core::scored::Scored;
        let m = install();
        let (before, count_before) = m.latency().snapshot();
        let (_, pushed_before) = m.feed();
        let mut tap = Tap::new();
        let now = 10_000_000_000;
        // One run of 30 ms between runs of 2 ms: each finds its own bucket.
        let slow = [3, 4];
        for i in 0..(FEED_LEN + 5) {
            tap.see(
                &Output::Scored(Scored {
                    id: format!("tap-{i}"),
                    score: 0.9,
                    flagged: true,
                    event_time: None,
                    passthrough: vec![],
                    read_at: now
                        - if slow.contains(&i) {
                            30_000_000
                        } else {
                            2_000_000
                        },
                    origin: Origin::File {
                        path: "t".into(),
                        line: 1,
                    },
                    reasons: None,
                }),
                now,
            );
        }
        tap.flush();
        let (after, count_after) = m.latency().snapshot();
        assert_eq!(count_after - count_before, (FEED_LEN + 5) as u64);
        let i = LATENCY_BUCKETS.partition_point(|&b| b < 0.002);
        assert_eq!(after[i] - before[i], (FEED_LEN + 3) as u64);
        let j = LATENCY_BUCKETS.partition_point(|&b| b < 0.03);
        assert_ne!(i, j);
        assert_eq!(after[j] - before[j], 2);
        let (feed, pushed) = m.feed();
        // Every one seen is counted; the tap kept the newest FEED_LEN.
        assert_eq!(pushed - pushed_before, (FEED_LEN + 5) as u64);
        assert_eq!(feed.len(), FEED_LEN);
        assert_eq!(feed[0].id, format!("tap-{}", FEED_LEN + 4));
    }
}
