//! Model monitoring per event-time window, as plain data: what one window
//! of scored applications and dead letters adds up to ([`Partial`]), and the
//! report a window ends as ([`WindowReport`], one JSON line): per group
//! (`all`, then each value of the spec's `[monitor] by` columns)
//! applications, flagged, flag rate, mean score and a fixed-bin score
//! histogram; the PSI of the score and of every model feature against the
//! training reference (`core::drift`), each with its level (ok, watch,
//! act); and the dead letters by stage and reason. The operators that drive
//! it are in `dataflow::monitor`.
//!
//! Invariants:
//! 1. **A window is `[start, start + W)` of event time**, tumbling, aligned
//!    to the Unix epoch: `start = t − t mod W` ([`Monitor::window_of`]).
//! 2. **Every count is an integer, and the score sum is fixed point** (each
//!    score rounded once to 10⁻¹² and summed as an integer,
//!    [`SCORE_SCALE`]): partials merge by addition in any order, on any
//!    worker count, to the same numbers; every float of a report (rates,
//!    means, PSI) is computed from them alone, in one fixed order, so the
//!    same input gives the same bytes.
//! 3. **Groups and dead-letter reasons are kept sorted** (`BTreeMap`): a
//!    report lists them in one order whatever order they came in.
//! 4. **A dead letter is counted at its `at` time** (`DeadLetter::at`: the
//!    record's own event time once it passed the event-time check, else
//!    the newest event time its partition had delivered before it), whose
//!    window is still open when the dead letter is counted.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::drift::{psi, Bins, Histogram, Reference, ACT, WATCH};
use super::record::{format_time, DeadLetter, Stage, Value};
use super::window::Time;
use crate::spec::{MonitorSpec, Spec};

/// The fixed-point scale of score sums: 10¹² (invariant 2).
pub const SCORE_SCALE: f64 = 1e12;

/// Rows counted together by the AVX2 bin count: their values and gathered
/// lanes stay in the first-level cache while every vector walks them.
const BLOCK_ROWS: usize = 64;

/// Why a monitor could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The spec has no `[monitor]`.
    #[error("--monitor needs a `[monitor]` section in {0} (the window and the columns to break down by; see dataflows/README.md)")]
    NoSection(String),
    /// The reference file could not be read.
    #[error(
        "cannot read the training reference {0}: {1} (models/train.py writes it beside the model)"
    )]
    Read(String, std::io::Error),
    /// The reference is not usable.
    #[error(transparent)]
    Drift(#[from] super::drift::DriftError),
    /// The reference does not describe the spec's features.
    #[error("the training reference {0} does not fit the spec: {1}")]
    Mismatch(String, String),
}

/// What a run's monitor needs: the spec's `[monitor]` and the reference.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// The window's length (ns).
    pub window: i64,
    /// Indexes into a scored application's pass-through values.
    by: Vec<usize>,
    /// Their names.
    by_names: Vec<String>,
    /// The score histogram's fixed bins (shares unused).
    score_bins: Bins,
    /// The training reference, features in model order.
    reference: Reference,
    /// Per feature: how many edges, and where its slots
    /// start in a [`Partial`]'s flat feature counts (one per bin, then
    /// missing).
    layout: Vec<(usize, usize)>,
    /// Slots of the flat feature counts.
    slots: usize,
    /// Per feature: its first edge (NaN without one, which no value
    /// reaches), in model order, padded with NaN to whole vectors (8 lanes
    /// of f32).
    first_edges: Vec<f32>,
    /// The features with two edges or more, those with the most edges
    /// first.
    multi: Vec<usize>,
    /// Per feature: its lane in `multi`, if it has one.
    lane_of: Vec<Option<usize>>,
    /// `multi` as gather indexes, padded with 0 to whole vectors (a padded
    /// lane's value meets only NaN edges, which it never reaches).
    multi_index: Vec<i32>,
    /// Their edges after the first, edge by edge: edge `k` of feature
    /// `multi[j]` is `grid[rows[k − 1].0 + j]`. Row `k − 1` holds the lanes
    /// of the features with more than `k` edges (the first ones of `multi`),
    /// padded with NaN to whole vectors: `rows[k − 1].1` lanes.
    grid: Vec<f32>,
    /// Per further edge: where its row starts in `grid`, and its lanes.
    rows: Vec<(usize, usize)>,
}

impl Monitor {
    /// The monitor of `spec`, with the reference read from its file.
    pub fn load(spec: &Spec) -> Result<Monitor, MonitorError> {
        let m = spec
            .monitor
            .as_ref()
            .ok_or_else(|| MonitorError::NoSection(spec.path.display().to_string()))?;
        let name = m.reference.display().to_string();
        let text = std::fs::read_to_string(&m.reference)
            .map_err(|e| MonitorError::Read(name.clone(), e))?;
        let reference = Reference::parse(&name, &text)?;
        Monitor::new(m, &spec.feature_names(), reference, &name)
    }

    /// The monitor of `m`, for a model whose features are `features`.
    pub fn new(
        m: &MonitorSpec,
        features: &[String],
        reference: Reference,
        name: &str,
    ) -> Result<Monitor, MonitorError> {
        let names: Vec<&str> = reference.features.iter().map(|f| f.name.as_str()).collect();
        if names != features.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(MonitorError::Mismatch(
                name.to_owned(),
                format!(
                    "it has {} features, the spec {} (or in another order): retrain with models/train.py",
                    names.len(),
                    features.len()
                ),
            ));
        }
        let bins = m.score_edges.len() + 1;
        let mut layout = Vec::with_capacity(reference.features.len());
        let mut slots = 0;
        for f in &reference.features {
            layout.push((f.bins.edges.len(), slots));
            slots += f.bins.edges.len() + 2;
        }
        let width = reference.features.len();
        let mut first_edges: Vec<f32> = reference
            .features
            .iter()
            .map(|f| f.bins.edges.first().copied().unwrap_or(f32::NAN))
            .collect();
        first_edges.resize(width.div_ceil(8) * 8, f32::NAN);
        let edges = |f: usize| reference.features[f].bins.edges.len();
        let mut multi: Vec<usize> = (0..width).filter(|&f| edges(f) >= 2).collect();
        // Most edges first (stable: model order among equals).
        multi.sort_by_key(|&f| std::cmp::Reverse(edges(f)));
        let mut lane_of = vec![None; width];
        for (j, &f) in multi.iter().enumerate() {
            lane_of[f] = Some(j);
        }
        let depth = multi.first().map_or(0, |&f| edges(f) - 1);
        let mut rows = Vec::with_capacity(depth);
        let mut grid = Vec::new();
        for k in 1..=depth {
            // Rows of whole vectors, padded with NaN edges.
            let reaching = multi.iter().take_while(|&&f| edges(f) > k).count();
            let lanes = reaching.div_ceil(8) * 8;
            rows.push((grid.len(), lanes));
            grid.extend((0..lanes).map(|j| match multi.get(j) {
                Some(&f) if j < reaching => reference.features[f].bins.edges[k],
                _ => f32::NAN,
            }));
        }
        let mut multi_index: Vec<i32> = multi.iter().map(|&f| f as i32).collect();
        multi_index.resize(multi.len().div_ceil(8) * 8, 0);
        Ok(Monitor {
            layout,
            slots,
            first_edges,
            multi_index,
            multi,
            lane_of,
            grid,
            rows,
            window: m.window,
            by: m.by.clone(),
            by_names: m.by_names.clone(),
            score_bins: Bins {
                edges: m.score_edges.clone(),
                proportions: vec![1.0 / bins as f64; bins],
                missing: 0.0,
            },
            reference,
        })
    }

    /// Starts loading what counting an application with `passthrough`
    /// reads first: its breakdown columns' values. The values were written
    /// when the record was cleaned, a whole epoch of records earlier, and
    /// are out of the nearer caches by the time it is counted; asked a few
    /// applications ahead, the loads overlap instead of waiting one by one.
    #[inline]
    pub fn prefetch_values(&self, passthrough: &[Value]) {
        for &k in &self.by {
            if k < passthrough.len() {
                prefetch(passthrough.as_ptr().wrapping_add(k));
            }
        }
    }

    /// [`Monitor::prefetch_values`]'s next step: the text of those values
    /// (a string's bytes live apart from the value).
    #[inline]
    pub fn prefetch_texts(&self, passthrough: &[Value]) {
        for &k in &self.by {
            if let Some(Value::Str(s)) = passthrough.get(k) {
                prefetch(s.as_ptr());
            }
        }
    }

    /// The start of the window `t` falls in (invariant 1).
    pub fn window_of(&self, t: Time) -> Time {
        t - t.rem_euclid(self.window)
    }

    /// An empty window starting at `start`.
    pub fn partial(&self, start: Time) -> Partial {
        Partial {
            start,
            groups: BTreeMap::new(),
            score: Histogram::new(&self.reference.score),
            features: vec![0; self.slots],
            dead: BTreeMap::new(),
        }
    }

    /// An empty open window starting at `start`, to count into.
    pub fn open(&self, start: Time) -> OpenWindow {
        let padded = self.first_edges.len();
        OpenWindow {
            start,
            slots: vec![Slots::default(); self.by.len()],
            groups: Vec::new(),
            score: Histogram::new(&self.reference.score),
            rows: 0,
            reached_first: vec![0; padded],
            missing: vec![0; padded],
            row: Vec::new(),
            gathered: vec![f32::NAN; BLOCK_ROWS * self.multi_index.len().max(self.multi.len())],
            reached: vec![0; self.grid.len()],
            dead: BTreeMap::new(),
        }
    }

    /// Writes the name of group `k` of an application with pass-through
    /// values `passthrough` into `name`: `all` (k = 0), then `column=value`
    /// per `by` column.
    fn group_name(&self, k: usize, passthrough: &[Value], name: &mut String) {
        name.clear();
        if k == 0 {
            name.push_str("all");
            return;
        }
        name.push_str(&self.by_names[k - 1]);
        name.push('=');
        match passthrough.get(self.by[k - 1]).unwrap_or(&Value::Null) {
            Value::Str(s) => name.push_str(s),
            v => name.push_str(&value_text(v)),
        }
    }

    /// A partial's feature counts as histograms, in model order.
    pub fn histograms(&self, p: &Partial) -> Vec<Histogram> {
        self.layout
            .iter()
            .map(|&(len, at)| Histogram {
                counts: p.features[at..at + len + 1].to_vec(),
                missing: p.features[at + len + 1],
            })
            .collect()
    }

    /// The report of a window's merged counts.
    pub fn report(&self, p: &Partial) -> WindowReport {
        let groups = p
            .groups
            .iter()
            .map(|(name, g)| GroupReport {
                group: name.clone(),
                applications: g.applications,
                flagged: g.flagged,
                flag_rate: ratio(g.flagged as f64, g.applications),
                mean_score: ratio(g.score_sum as f64 / SCORE_SCALE, g.applications),
                score_histogram: g.histogram.clone(),
            })
            .collect();
        let level = |v: Option<f64>| match v {
            None => Level::None,
            Some(v) if v >= ACT => Level::Act,
            Some(v) if v >= WATCH => Level::Watch,
            Some(_) => Level::Ok,
        };
        let mut psis = Vec::with_capacity(p.features.len() + 1);
        let score = psi(&self.reference.score, &p.score);
        psis.push(ColumnPsi {
            column: "score".to_owned(),
            psi: score,
            level: level(score),
        });
        for (f, h) in self.reference.features.iter().zip(self.histograms(p)) {
            let v = psi(&f.bins, &h);
            psis.push(ColumnPsi {
                column: f.name.clone(),
                psi: v,
                level: level(v),
            });
        }
        let dead_letters = p
            .dead
            .iter()
            .map(|((stage, reason), count)| DeadCount {
                stage: *stage,
                reason: reason.clone(),
                count: *count,
            })
            .collect();
        let end = p.start.saturating_add(self.window);
        WindowReport {
            window_start: format_time(p.start),
            window_end: format_time(end),
            window_start_ms: p.start.div_euclid(1_000_000),
            window_end_ms: end.div_euclid(1_000_000),
            groups,
            psi: psis,
            dead_letters,
        }
    }
}

fn ratio(x: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| x / n as f64)
}

/// A pass-through value as a group's text.
fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Int(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => s.clone(),
        Value::Time(t) => format_time(*t),
    }
}

/// A hint to the CPU to load the cache line at `p` (no effect elsewhere).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints; it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `x` rounded half away from zero, as `f64::round` does, as an integer.
/// Below 2^52 in magnitude it truncates and corrects by the fraction (exact
/// there: both parts are representable), which saves the `round` call per
/// application; beyond, through `round` (and i128 past i64).
fn fixed_point(x: f64) -> i128 {
    const EXACT: f64 = 4_503_599_627_370_496.0; // 2^52
    if x.abs() < EXACT {
        let t = x as i64;
        let frac = x - t as f64;
        i128::from(t + i64::from(frac >= 0.5) - i64::from(frac <= -0.5))
    } else {
        let r = x.round();
        if r.abs() < 9.0e18 {
            i128::from(r as i64)
        } else {
            r as i128
        }
    }
}

/// One breakdown column's groups in an open window: group value → index
/// in `OpenWindow::groups`. Values of up to 7 bytes (grades, states, most
/// codes) are keyed packed into one integer, so the lookup per application
/// hashes a word and compares no bytes; longer ones by their text.
#[derive(Debug, Clone, Default)]
struct Slots {
    short: FxHashMap<u64, usize>,
    long: FxHashMap<String, usize>,
}

impl Slots {
    /// `text`'s bytes and length in one word, if it has at most 7 bytes.
    #[inline]
    fn packed(text: &str) -> Option<u64> {
        let b = text.as_bytes();
        (b.len() <= 7).then(|| {
            let mut k = (b.len() as u64) << 56;
            for (i, &c) in b.iter().enumerate() {
                k |= u64::from(c) << (8 * i);
            }
            k
        })
    }

    #[inline]
    fn get(&self, text: &str) -> Option<usize> {
        match Slots::packed(text) {
            Some(k) => self.short.get(&k).copied(),
            None => self.long.get(text).copied(),
        }
    }

    fn insert(&mut self, text: &str, i: usize) {
        match Slots::packed(text) {
            Some(k) => self.short.insert(k, i),
            None => self.long.insert(text.to_owned(), i),
        };
    }
}

/// One group's counts in one window.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupCounts {
    /// Applications scored.
    pub applications: u64,
    /// Of those, flagged.
    pub flagged: u64,
    /// Their scores' sum at [`SCORE_SCALE`].
    pub score_sum: i128,
    /// Per fixed score bin.
    pub histogram: Vec<u64>,
}

/// What one window adds up to on one worker, or merged (invariant 2).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Partial {
    /// The window's start.
    pub start: Time,
    /// Per group.
    pub groups: BTreeMap<String, GroupCounts>,
    /// The scores in the reference's score bins.
    pub score: Histogram,
    /// Every feature in the reference's bins, in model order, flat (see
    /// [`Monitor::histograms`]).
    pub features: Vec<u64>,
    /// Dead letters by stage and reason.
    pub dead: BTreeMap<(Stage, String), u64>,
}

/// A window being counted on one worker: what its [`Partial`] will hold,
/// in a form that is cheap to count into — groups found by hash, and each
/// feature's bins as counts of rows at or above each edge, one branch-free
/// compare per edge over contiguous lanes. [`OpenWindow::into_partial`]
/// turns it into the partial a bin-by-bin count would have made (the same
/// integers: invariant 2).
#[derive(Debug, Clone)]
pub struct OpenWindow {
    start: Time,
    /// Per `by` column: a value's text → its group's index in `groups`.
    slots: Vec<Slots>,
    /// `all` first (once any application is counted), then groups as met.
    groups: Vec<(String, GroupCounts)>,
    score: Histogram,
    /// Feature rows counted.
    rows: u64,
    /// Per feature: rows whose value is at or above its first edge (32-bit
    /// lanes, eight to a vector; see `add_features` for their overflow).
    reached_first: Vec<u32>,
    /// Per feature: rows where it is missing (NaN).
    missing: Vec<u32>,
    /// The last rows of a run, each padded with NaN like
    /// `Monitor::first_edges` (the AVX2 count's scratch: it compares whole
    /// vectors).
    row: Vec<f32>,
    /// Rows' values of the multi-edge features, in `Monitor::multi`'s
    /// order (scratch: a block of rows for the AVX2 count, one row for the
    /// portable one).
    gathered: Vec<f32>,
    /// Like `reached_first`, for the further edges (`Monitor::grid` layout).
    reached: Vec<u32>,
    dead: BTreeMap<(Stage, String), u64>,
}

impl OpenWindow {
    /// Counts one scored application with its model features (`name`: a
    /// buffer for group names, reused across calls).
    pub fn add_scored(
        &mut self,
        m: &Monitor,
        score: f32,
        flagged: bool,
        passthrough: &[Value],
        features: &[f32],
        name: &mut String,
    ) {
        self.add_application(m, score, flagged, passthrough, name);
        self.add_features(m, features, features.len());
    }

    /// Counts one scored application's score and groups (its features go
    /// to [`OpenWindow::add_features`]).
    pub fn add_application(
        &mut self,
        m: &Monitor,
        score: f32,
        flagged: bool,
        passthrough: &[Value],
        name: &mut String,
    ) {
        let fixed = fixed_point(f64::from(score) * SCORE_SCALE);
        let bin = m.score_bins.edges.partition_point(|e| *e <= score);
        let bins = m.score_bins.edges.len() + 1;
        let new_group = |name: String| {
            (
                name,
                GroupCounts {
                    histogram: vec![0; bins],
                    ..GroupCounts::default()
                },
            )
        };
        if self.groups.is_empty() {
            self.groups.push(new_group("all".to_owned()));
        }
        let count = |g: &mut GroupCounts| {
            g.applications += 1;
            g.flagged += u64::from(flagged);
            g.score_sum += fixed;
            g.histogram[bin] += 1;
        };
        count(&mut self.groups[0].1);
        for (k, slots) in self.slots.iter_mut().enumerate() {
            let value = passthrough.get(m.by[k]).unwrap_or(&Value::Null);
            let text = match value {
                Value::Str(s) => s.as_str(),
                v => {
                    name.clear();
                    name.push_str(&value_text(v));
                    name.as_str()
                }
            };
            // Allocates only for a group's first application.
            let i = match slots.get(text) {
                Some(i) => i,
                None => {
                    let mut full = String::new();
                    m.group_name(k + 1, passthrough, &mut full);
                    self.groups.push(new_group(full));
                    slots.insert(text, self.groups.len() - 1);
                    self.groups.len() - 1
                }
            };
            count(&mut self.groups[i].1);
        }
        self.score.add(&m.reference.score, score);
    }

    /// Counts the model features of consecutive applications: `rows` holds
    /// them row after row, `width` each.
    pub fn add_features(&mut self, m: &Monitor, rows: &[f32], width: usize) {
        if width == 0 || width != m.layout.len() {
            return;
        }
        // The 32-bit lanes count at most u32::MAX rows (4 × 10⁹ applications
        // in one window on one worker): refuse rather than wrap.
        let n = (rows.len() / width) as u64;
        assert!(
            self.rows + n <= u64::from(u32::MAX),
            "more than {} applications in one monitor window on one worker",
            u32::MAX
        );
        self.rows += n;
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { self.count_rows_avx2(m, rows, width) };
            }
        }
        self.count_rows(m, rows, width)
    }

    /// [`OpenWindow::count_rows`] with AVX2 intrinsics: the same counts as
    /// the portable loop (a unit test compares both with `Histogram::add`).
    ///
    /// Rows are counted in blocks of up to [`BLOCK_ROWS`], lanes outside:
    /// each vector of 8 lanes walks the block's rows keeping its counts in a
    /// register, and adds them to the window's once per block, so a row
    /// costs one load, compare and subtract per vector, no stores. A block
    /// is read straight from `rows` (its lanes past `width` read the next
    /// row's values, whose counts are never read: `into_partial`), except
    /// the last rows, too near the end for a whole padded vector, which are
    /// copied to a padded scratch first.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn count_rows_avx2(&mut self, m: &Monitor, rows: &[f32], width: usize) {
        let padded = m.first_edges.len();
        let lanes_multi = m.multi_index.len();
        // Every bound the blocks rely on, checked once per call rather than
        // per row and vector: the loops then walk raw pointers, in whole
        // vectors of 8 lanes.
        assert!(padded % 8 == 0 && padded >= width && width > 0);
        assert!(self.reached_first.len() == padded && self.missing.len() == padded);
        assert!(lanes_multi % 8 == 0);
        assert!(m.multi_index.iter().all(|&f| (f as usize) < width));
        assert!(m.rows.iter().all(|&(at, lanes)| {
            lanes % 8 == 0
                && lanes <= lanes_multi
                && at + lanes <= m.grid.len()
                && at + lanes <= self.reached.len()
        }));
        if self.gathered.len() < BLOCK_ROWS * lanes_multi {
            self.gathered.resize(BLOCK_ROWS * lanes_multi, f32::NAN);
        }
        let n = rows.len() / width;
        // Rows whose padded vectors end within `rows`.
        let direct = match rows.len().checked_sub(padded) {
            Some(room) => n.min(room / width + 1),
            None => 0,
        };
        let mut r = 0;
        while r < direct {
            let len = BLOCK_ROWS.min(direct - r);
            // SAFETY: rows r .. r + len each have `padded` f32s readable from
            // their start (r + len <= direct); the block's bounds below.
            unsafe { self.count_block(m, rows.as_ptr().add(r * width), width, len) };
            r += len;
        }
        if direct < n {
            let tail = n - direct;
            self.row.clear();
            self.row.resize(tail * padded, f32::NAN);
            for (t, row) in rows[direct * width..].chunks_exact(width).enumerate() {
                self.row[t * padded..t * padded + width].copy_from_slice(row);
            }
            // SAFETY: `tail` rows of `padded` f32s each; tail * width <
            // padded <= width + 7, so tail <= 7 < BLOCK_ROWS.
            unsafe { self.count_block(m, self.row.as_ptr(), padded, tail) };
        }
    }

    /// Counts `n` rows (at most [`BLOCK_ROWS`]) at `values`, `stride` f32s
    /// apart (see [`OpenWindow::count_rows_avx2`]).
    ///
    /// # Safety
    /// AVX2; each of the `n` rows has `first_edges.len()` readable f32s from
    /// its start; the bounds asserted by `count_rows_avx2` hold.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn count_block(&mut self, m: &Monitor, values: *const f32, stride: usize, n: usize) {
        use std::arch::x86_64::{
            __m256i, _mm256_castps_si256, _mm256_cmp_ps, _mm256_i32gather_ps, _mm256_loadu_ps,
            _mm256_loadu_si256, _mm256_setzero_si256, _mm256_storeu_ps, _mm256_storeu_si256,
            _mm256_sub_epi32, _CMP_GE_OQ, _CMP_UNORD_Q,
        };
        /// Adds the 8 lanes of `sum` to the 8 counts at `at`.
        ///
        /// # Safety
        /// AVX2; `at .. at + 8` is within one slice of `u32`.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn add_to(at: *mut u32, sum: __m256i) {
            use std::arch::x86_64::_mm256_add_epi32;
            // SAFETY: the caller's bounds; unaligned load and store.
            unsafe {
                let at = at.cast::<__m256i>();
                _mm256_storeu_si256(at, _mm256_add_epi32(_mm256_loadu_si256(at), sum));
            }
        }
        debug_assert!(n <= BLOCK_ROWS);
        let padded = m.first_edges.len();
        let lanes_multi = m.multi_index.len();
        // Each lane's first edge and its missing values. A compare's true
        // lane is all ones (-1), so subtracting it counts one.
        let mut i = 0;
        while i < padded {
            // SAFETY: i + 8 <= padded: within `first_edges`, `reached_first`,
            // `missing` (asserted) and each row's readable f32s (the caller).
            unsafe {
                let e = _mm256_loadu_ps(m.first_edges.as_ptr().add(i));
                let (mut reached, mut missing) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                let mut at = values.add(i);
                for _ in 0..n {
                    let v = _mm256_loadu_ps(at);
                    let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(v, e);
                    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
                    reached = _mm256_sub_epi32(reached, _mm256_castps_si256(ge));
                    missing = _mm256_sub_epi32(missing, _mm256_castps_si256(nan));
                    at = at.add(stride);
                }
                add_to(self.reached_first.as_mut_ptr().add(i), reached);
                add_to(self.missing.as_mut_ptr().add(i), missing);
            }
            i += 8;
        }
        if lanes_multi == 0 {
            return;
        }
        // The multi-edge features of each row, gathered side by side.
        let gathered = self.gathered.as_mut_ptr();
        for r in 0..n {
            let mut j = 0;
            while j < lanes_multi {
                // SAFETY: every index is below width, within the row
                // (asserted); r * lanes_multi + j + 8 <= BLOCK_ROWS *
                // lanes_multi <= gathered.len() (resized by the caller).
                unsafe {
                    let idx = _mm256_loadu_si256(m.multi_index.as_ptr().add(j).cast::<__m256i>());
                    let v = _mm256_i32gather_ps::<4>(values.add(r * stride), idx);
                    _mm256_storeu_ps(gathered.add(r * lanes_multi + j), v);
                }
                j += 8;
            }
        }
        // Their further edges, a vector of lanes at a time over the block.
        for &(at, lanes) in &m.rows {
            let mut i = 0;
            while i < lanes {
                // SAFETY: i + 8 <= lanes <= lanes_multi, and at + lanes is
                // within `grid` and `reached` (asserted); the gathered rows
                // are n * lanes_multi f32s (filled just above).
                unsafe {
                    let e = _mm256_loadu_ps(m.grid.as_ptr().add(at + i));
                    let mut reached = _mm256_setzero_si256();
                    let mut g = gathered.add(i).cast_const();
                    for _ in 0..n {
                        let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_loadu_ps(g), e);
                        reached = _mm256_sub_epi32(reached, _mm256_castps_si256(ge));
                        g = g.add(lanes_multi);
                    }
                    add_to(self.reached.as_mut_ptr().add(at + i), reached);
                }
                i += 8;
            }
        }
    }

    /// The portable count: per row, each feature's lane against its first
    /// edge, its missing flag, and the further edges of the multi-edge ones.
    fn count_rows(&mut self, m: &Monitor, rows: &[f32], width: usize) {
        for row in rows.chunks_exact(width) {
            // The padded lanes past `width` are left alone (`into_partial`
            // never reads their counts).
            reach(&mut self.reached_first, row, &m.first_edges);
            for (n, v) in self.missing.iter_mut().zip(row) {
                *n += u32::from(v.is_nan());
            }
            for (g, &f) in self.gathered.iter_mut().zip(&m.multi) {
                *g = row[f];
            }
            for &(at, lanes) in &m.rows {
                reach(
                    &mut self.reached[at..at + lanes],
                    &self.gathered[..lanes],
                    &m.grid[at..at + lanes],
                );
            }
        }
    }

    /// Counts one dead letter.
    pub fn add_dead(&mut self, d: &DeadLetter) {
        *self.dead.entry((d.stage, d.reason.clone())).or_insert(0) += 1;
    }

    /// The partial this window counted: bin `i` of a feature holds the rows
    /// that reached edge `i − 1` but not edge `i` (`Histogram::add`'s bin:
    /// how many edges are at or below the value).
    pub fn into_partial(self, m: &Monitor) -> Partial {
        let mut features = vec![0; m.slots];
        for (f, &(len, at)) in m.layout.iter().enumerate() {
            let j = m.lane_of[f].unwrap_or(0);
            let reached = |k: usize| -> u64 {
                u64::from(match k {
                    k if k >= len => 0,
                    0 => self.reached_first[f],
                    // A feature with more than k edges has a lane in row k − 1.
                    k => self.reached[m.rows[k - 1].0 + j],
                })
            };
            let present = self.rows - u64::from(self.missing[f]);
            features[at] = present - reached(0);
            for i in 1..=len {
                features[at + i] = reached(i - 1) - reached(i);
            }
            features[at + len + 1] = u64::from(self.missing[f]);
        }
        Partial {
            start: self.start,
            groups: self.groups.into_iter().collect(),
            score: self.score,
            features,
            dead: self.dead,
        }
    }
}

/// Adds one to each lane of `n` whose value in `v` is at or above its edge
/// in `e` (`v >= e` is false for a NaN value and for a NaN edge: a missing
/// value reaches no edge, a padded edge is never reached).
fn reach(n: &mut [u32], v: &[f32], e: &[f32]) {
    for ((n, v), e) in n.iter_mut().zip(v).zip(e) {
        *n += u32::from(*v >= *e);
    }
}

impl Partial {
    /// Whether nothing at all is counted (the zero of [`Partial::merge`]).
    pub fn is_empty(&self) -> bool {
        self.groups.values().all(|g| g.applications == 0)
            && self.score.counts.iter().all(|&n| n == 0)
            && self.score.missing == 0
            && self.features.iter().all(|&n| n == 0)
            && self.dead.values().all(|&n| n == 0)
    }

    /// Adds another partial of the same window (invariant 2).
    pub fn merge(&mut self, other: &Partial) {
        for (name, g) in &other.groups {
            match self.groups.get_mut(name) {
                None => {
                    self.groups.insert(name.clone(), g.clone());
                }
                Some(mine) => {
                    mine.applications += g.applications;
                    mine.flagged += g.flagged;
                    mine.score_sum += g.score_sum;
                    for (a, b) in mine.histogram.iter_mut().zip(&g.histogram) {
                        *a += b;
                    }
                }
            }
        }
        self.score.merge(&other.score);
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            *a += b;
        }
        for (k, n) in &other.dead {
            match self.dead.get_mut(k) {
                Some(mine) => *mine += n,
                None => {
                    self.dead.insert(k.clone(), *n);
                }
            }
        }
    }
}

/// How far a PSI is from the training data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Below 0.1.
    Ok,
    /// 0.1 or more: watch.
    Watch,
    /// 0.25 or more: act.
    Act,
    /// No values in the window.
    None,
}

/// One group of a window report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// `all`, or `column=value`.
    pub group: String,
    /// Applications scored.
    pub applications: u64,
    /// Of those, flagged.
    pub flagged: u64,
    /// flagged / applications (`null` without applications).
    pub flag_rate: Option<f64>,
    /// The mean score.
    pub mean_score: Option<f64>,
    /// Applications per fixed score bin (`[monitor] score_bins`).
    pub score_histogram: Vec<u64>,
}

/// The PSI of one column (the score, or a model feature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnPsi {
    /// `score` or the feature's name.
    pub column: String,
    /// Against the training reference (`null` without values).
    pub psi: Option<f64>,
    /// ok / watch / act (`none` without values).
    pub level: Level,
}

/// Dead letters of one stage and reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadCount {
    /// The stage that refused them.
    pub stage: Stage,
    /// Why.
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// One window's report: one JSON line of `run --monitor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    /// The window's start, RFC 3339.
    pub window_start: String,
    /// Its end (exclusive), RFC 3339.
    pub window_end: String,
    /// Its start, ms since the Unix epoch.
    pub window_start_ms: i64,
    /// Its end, ms since the Unix epoch.
    pub window_end_ms: i64,
    /// `all` first, then the `by` groups sorted.
    pub groups: Vec<GroupReport>,
    /// The score's, then every model feature's, in model order.
    pub psi: Vec<ColumnPsi>,
    /// By stage and reason, sorted.
    pub dead_letters: Vec<DeadCount>,
}

impl WindowReport {
    /// `(group, flag rate)` for every group with applications.
    pub fn flag_rates(&self) -> impl Iterator<Item = (&str, f64)> {
        self.groups
            .iter()
            .filter_map(|g| g.flag_rate.map(|r| (g.group.as_str(), r)))
    }

    /// `(column, psi)` for every column with values.
    pub fn psis(&self) -> impl Iterator<Item = (&str, f64)> {
        self.psi
            .iter()
            .filter_map(|c| c.psi.map(|p| (c.column.as_str(), p)))
    }

    /// The column with the highest PSI, if any.
    pub fn worst(&self) -> Option<&ColumnPsi> {
        self.psi.iter().filter(|c| c.psi.is_some()).max_by(|a, b| {
            a.psi
                .partial_cmp(&b.psi)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    }

    /// The report as one JSON line (with its newline).
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a report serializes");
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::drift::FeatureBins;
    use crate::core::record::Origin;

    /// The fast rounding is `f64::round` itself: halves away from zero,
    /// both signs, every f32 score at the scale, and past 2^52 and i64.
    #[test]
    fn fixed_point_rounds_as_round_does() {
        let mut xs = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999999999999994,
            -2.5000001,
        ];
        xs.extend([4.5e15, -4.5e15, 9.1e18, -9.1e18, 1e30, 2f64.powi(52) + 1.0]);
        let mut bits = 0x3f00_0000u32;
        for _ in 0..200_000 {
            // Scores spread over [0, 1] and beyond, as the scale makes them.
            bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let f = f32::from_bits(bits % 0x4000_0000);
            xs.push(f64::from(f) * SCORE_SCALE);
            xs.push(-f64::from(f) * SCORE_SCALE);
        }
        for x in xs {
            assert_eq!(fixed_point(x), x.round() as i128, "{x}");
        }
    }

    /// Packed keys tell apart every text the map could confuse.
    #[test]
    fn slots_keep_short_and_long_values_apart() {
        let texts = [
            "",
            "A",
            "A\0",
            "\0A",
            "B3",
            "3B",
            "CA",
            "CAL",
            "1234567",
            "12345678",
            "123456789",
        ];
        let mut slots = Slots::default();
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(slots.get(t), None, "{t:?}");
            slots.insert(t, i);
        }
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(slots.get(t), Some(i), "{t:?}");
        }
        assert_eq!((slots.short.len(), slots.long.len()), (9, 2));
    }

    fn monitor() -> Monitor {
        let bins = |edges: Vec<f32>| {
            let n = edges.len() + 1;
            Bins {
                edges,
                proportions: vec![1.0 / n as f64; n],
                missing: 0.0,
            }
        };
        let reference = Reference {
            model: "m".into(),
            model_sha256: "x".into(),
            rows: 4,
            score: bins(vec![0.25, 0.5, 0.75]),
            features: vec![FeatureBins {
                name: "f".into(),
                bins: bins(vec![1.0]),
            }],
        };
        let spec = MonitorSpec {
            window: 3_600_000_000_000,
            by: vec![0],
            by_names: vec!["grade".into()],
            score_edges: vec![0.5],
            reference: "r.json".into(),
        };
        Monitor::new(&spec, &["f".into()], reference, "r.json").unwrap()
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let m = monitor();
        let h = 3_600_000_000_000;
        assert_eq!(m.window_of(0), 0);
        assert_eq!(m.window_of(h - 1), 0);
        assert_eq!(m.window_of(h), h);
        assert_eq!(m.window_of(-1), -h);
    }

    #[test]
    fn a_window_counts_groups_scores_features_and_dead_letters() {
        let m = monitor();
        let mut p = m.open(0);
        let a = [Value::Str("A1".into())];
        let b = [Value::Str("B2".into())];
        p.add_scored(&m, 0.1, false, &a, &[0.0], &mut String::new());
        p.add_scored(&m, 0.9, true, &a, &[2.0], &mut String::new());
        p.add_scored(&m, 0.6, true, &b, &[f32::NAN], &mut String::new());
        p.add_dead(&DeadLetter {
            raw: vec![],
            stage: Stage::Ingest,
            reason: "bad".into(),
            origin: Origin::File {
                path: "x".into(),
                line: 1,
            },
            at: Some(5),
        });
        let p = p.into_partial(&m);
        let r = m.report(&p);
        assert_eq!(r.window_start, "1970-01-01T00:00:00Z");
        assert_eq!(r.window_end_ms, 3_600_000);
        let names: Vec<&str> = r.groups.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(names, ["all", "grade=A1", "grade=B2"]);
        assert_eq!(r.groups[0].applications, 3);
        assert_eq!(r.groups[0].flagged, 2);
        assert_eq!(r.groups[0].score_histogram, vec![1, 2]);
        assert!(
            (r.groups[0].mean_score.unwrap()
                - (0.1f32 as f64 + 0.9f32 as f64 + 0.6f32 as f64) / 3.0)
                .abs()
                < 1e-12
        );
        assert_eq!(r.flag_rates().nth(1), Some(("grade=A1", 0.5)));
        let h = &m.histograms(&p)[0];
        assert_eq!(h.counts, vec![1, 1]);
        assert_eq!(h.missing, 1);
        assert_eq!(r.psi[0].column, "score");
        assert_eq!(r.psi.len(), 2);
        assert_eq!(r.dead_letters[0].count, 1);
        let line = String::from_utf8(r.to_line()).unwrap();
        let back: WindowReport = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn merged_partials_equal_one_pass_in_any_order() {
        let m = monitor();
        let rows: Vec<(f32, f32)> = (0..500)
            .map(|i| ((i % 97) as f32 / 97.0, (i % 3) as f32))
            .collect();
        let mut one = m.open(0);
        for (s, f) in &rows {
            one.add_scored(
                &m,
                *s,
                *s >= 0.5,
                &[Value::Int(i64::from(*f as i32))],
                &[*f],
                &mut String::new(),
            );
        }
        let (mut x, mut y) = (m.open(0), m.open(0));
        for (i, (s, f)) in rows.iter().enumerate().rev() {
            let p = if i % 3 == 0 { &mut x } else { &mut y };
            p.add_scored(
                &m,
                *s,
                *s >= 0.5,
                &[Value::Int(i64::from(*f as i32))],
                &[*f],
                &mut String::new(),
            );
        }
        let (x, mut y, one) = (x.into_partial(&m), y.into_partial(&m), one.into_partial(&m));
        y.merge(&x);
        assert_eq!(y, one);
        assert_eq!(m.report(&y).to_line(), m.report(&one).to_line());
    }

    #[test]
    fn levels_follow_the_thresholds() {
        let m = monitor();
        let mut p = m.open(0);
        // Every score in the lowest reference bin: far from uniform.
        for _ in 0..100 {
            p.add_scored(&m, 0.01, false, &[Value::Null], &[0.0], &mut String::new());
        }
        let r = m.report(&p.into_partial(&m));
        assert_eq!(r.psi[0].level, Level::Act);
        assert_eq!(r.worst().unwrap().column, "score");
        assert_eq!(r.groups[1].group, "grade=null");
        let empty = m.report(&m.partial(0));
        assert_eq!(empty.psi[0].level, Level::None);
        assert_eq!(empty.psis().count(), 0);
    }

    #[test]
    fn an_open_window_bins_every_value_as_histogram_add_does() {
        // Features with no edge, one, and several (with a repeated edge; more
        // than one vector of them, and not in order of how many edges);
        // values on the edges, between them, beyond them, infinite, NaN.
        let bins = |edges: Vec<f32>| Bins {
            proportions: vec![1.0 / (edges.len() + 1) as f64; edges.len() + 1],
            edges,
            missing: 0.0,
        };
        let patterns = [
            vec![],
            vec![0.5],
            vec![1.0, 3.0],
            vec![-1.0, 0.0, 0.0, 2.5, 7.0],
        ];
        // 11 features: more than one vector; 3: a row shorter than one, so
        // the last rows of a run go through the padded scratch. The rows go
        // in runs of several lengths, more than one block of rows among them.
        for width in [11, 3] {
            check_bins(&patterns, width, bins);
        }
    }

    fn check_bins(patterns: &[Vec<f32>], width: usize, bins: impl Fn(Vec<f32>) -> Bins) {
        let edges: Vec<Vec<f32>> = (0..width)
            .map(|f: usize| {
                let shift = (f / patterns.len()) as f32 * 0.5;
                patterns[f % patterns.len()]
                    .iter()
                    .map(|e| e + shift)
                    .collect()
            })
            .collect();
        let reference = Reference {
            model: "m".into(),
            model_sha256: "x".into(),
            rows: 4,
            score: bins(vec![0.5]),
            features: edges
                .iter()
                .enumerate()
                .map(|(i, e)| FeatureBins {
                    name: format!("f{i}"),
                    bins: bins(e.clone()),
                })
                .collect(),
        };
        let names: Vec<String> = (0..edges.len()).map(|i| format!("f{i}")).collect();
        let spec = MonitorSpec {
            window: 3_600_000_000_000,
            by: vec![],
            by_names: vec![],
            score_edges: vec![0.5],
            reference: "r.json".into(),
        };
        let m = Monitor::new(&spec, &names, reference, "r.json").unwrap();
        let values = [
            f32::NEG_INFINITY,
            -2.0,
            -1.0,
            -0.5,
            0.0,
            0.25,
            0.5,
            1.0,
            2.5,
            3.0,
            6.9,
            7.0,
            8.0,
            f32::INFINITY,
            f32::NAN,
        ];
        let mut open = m.open(0);
        let mut rows = Vec::new();
        let n = 150;
        for i in 0..n {
            for f in 0..edges.len() {
                rows.push(values[(i + 3 * f + i / values.len()) % values.len()]);
            }
        }
        let mut from = 0;
        for run in [1, 70, 64, 15] {
            let w = edges.len();
            open.add_features(&m, &rows[from * w..(from + run) * w], w);
            from += run;
        }
        assert_eq!(from, n);
        let p = open.into_partial(&m);
        // The portable count gives the same (`add_features` took the AVX2
        // one where the CPU has it).
        let mut portable = m.open(0);
        portable.rows = n as u64;
        portable.count_rows(&m, &rows, edges.len());
        assert_eq!(portable.into_partial(&m), p);
        for (f, got) in m.histograms(&p).into_iter().enumerate() {
            let mut want = Histogram::new(&m.reference.features[f].bins);
            for row in rows.chunks_exact(edges.len()) {
                want.add(&m.reference.features[f].bins, row[f]);
            }
            assert_eq!(got, want, "feature {f}");
        }
    }
}
