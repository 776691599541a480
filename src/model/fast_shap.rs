//! Fast exact TreeSHAP: the same path-dependent Shapley values as `shap.rs`
//! (Lundberg et al., arXiv 1802.03888), in another order of operations, with
//! per-leaf tables computed once per forest (the idea of Fast TreeSHAP v2,
//! Yang, arXiv 2109.09847). What the reason codes of a run use.
//!
//! The algorithm. A tree's contributions are a sum over its leaves. Take a
//! leaf `l` of value `v` and the `k` distinct features on its path (a
//! feature split on twice is one feature: its two edges merged, as
//! XGBoost's unique path does). For each, `z_j` is the product of the cover
//! fractions of its edges (`cover(child) / cover(node)`, 1/2 below a node of
//! zero cover, `shap.rs`'s rule) and `o_j` is 1 if the row follows all of its
//! edges, else 0. The leaf adds to feature `j`
//!
//! ```text
//!   v (o_j - z_j) Σ_{S ⊆ U∖{j}} |S|! (k-1-|S|)! / k!  Π_{m∈S} o_m  Π_{m∉S, m≠j} z_m
//! ```
//!
//! Everything but the `o`s is fixed by the model, and the `o`s are bits: so
//! for every leaf and every one of its `2^k` "cold" patterns (which of its
//! features the row leaves), the `k` values can be computed once (in `f64`,
//! with elementary symmetric polynomials of the `z`s).
//!
//! Groups. Rather than one lookup per leaf, a subtree of at most
//! `GROUP_SPLITS` splits (7: three levels) is one *group*: its leaves'
//! tables, summed per feature in `f64` and stored as `f32`, indexed by the
//! cold pattern of the path to the group's root and the direction the row
//! takes at each split inside (`2^(k + splits)` patterns, at most
//! `2^GROUP_BITS`; the groups are the highest subtrees that fit). Explaining
//! a row is then, per tree: one pass over the splits above the groups in
//! node order, which sets each node's cold pattern from its parent's (the
//! cold child of a split on the path's `u`-th distinct feature gets bit
//! `u`); the directions of the splits inside groups; and per group one
//! table row, its values added into an `f64` total. The walk takes two
//! passes: the first finds every group's table row and asks the CPU to
//! fetch it (a run that explains its flagged rows explains about one in a
//! hundred, so the tables are mostly out of cache, and one row's table
//! rows, 800 for the example model, are independent loads); the second adds them up, tree after tree and group after group,
//! so the sums (and their `f64` order) are the one-pass walk's.
//!
//! Parity rules (tested in this module, `tests/explain.rs`):
//! 1. The contributions equal `shap.rs`'s exact ones (bit-identical to
//!    XGBoost 3.2.0) within `f32` rounding, not bit for bit: |diff| ≤ 1e-6 ×
//!    max(1, |exact|) per element (~8 ulps), measured max 1.4e-6 absolute
//!    on the real rows (at a value of -2.74), 53 % bit-identical. The
//!    difference is the exact walk's own `f32` rounding: tables kept in
//!    `f64` give the same max. Against XGBoost's `pred_contribs`, ≤ 1e-5
//!    (the issue's bound).
//! 2. The bias (last column) is the exact one, bit for bit: every tree's mean
//!    value summed in `f32` in tree order, then the base margin.
//! 3. Directions are the scorer's (`x < threshold` left, NaN the default
//!    direction); zero covers follow `shap.rs` (half the weight to each child;
//!    a zero fraction makes the leaf's terms zero, as the exact walk skips it).
//! 4. A tree deeper than [`MAX_DEPTH`], or whose tables would take the
//!    forest's past [`BUDGET`] values, has no tables: it is explained by the
//!    exact walk, into the same `f64` total.
//!
//! The tables are built on the first explanation or by
//! [`Forest::fast_tables`] (which a run with `[explain]` calls when it loads
//! its model, `pipeline::load`; a run without never pays for them), once per
//! forest, shared by every thread: for `models/lending_club.xgb.json` (100 trees of depth 6, 2,712
//! leaves) 988,256 values, 4 MB, built in ~15 ms.

use super::forest::Forest;
use super::shap::Explainer;

/// The deepest tree given tables: a leaf at depth `d` has up to `2^d * d`
/// values (10: 10,240 values, 40 kB).
pub const MAX_DEPTH: usize = 10;

/// At most this many table values per forest (`f32`: 128 MiB); trees past it
/// are explained exactly.
pub const BUDGET: usize = 1 << 25;

/// A group takes a subtree of at most this many splits (module doc; 3
/// measured ~10 % slower on the real model, with smaller tables).
const GROUP_SPLITS: usize = 7;

/// A group's table has at most `2^GROUP_BITS` patterns.
const GROUP_BITS: usize = 11;

/// How table values are stored.
type Stored = f32;

/// The tables of one forest.
#[derive(Debug, Default)]
pub(super) struct FastShap {
    trees: Vec<FastTree>,
    /// The splits of the trees with tables, tree after tree.
    splits: Vec<Split>,
    /// The groups of the trees with tables (single-leaf trees have none).
    groups: Vec<Group>,
    /// Per group, the splits inside its subtree: (local node, shift).
    inner: Vec<(u32, u32)>,
    /// Per group, one row of `width` values per pattern.
    values: Vec<Stored>,
    /// Per group, its `width` features.
    features: Vec<u32>,
    /// The bias, as the exact algorithm sums it.
    bias: f32,
    /// The most nodes of one tree.
    widest: usize,
}

/// A tree's `(splits: first, first inside a group, end)` and `(groups:
/// first, end)` ranges.
type Ranges = ((u32, u32, u32), (u32, u32));

/// A leaf below a group's root, with its edges from it: (the split's
/// position among the group's, whether the edge goes right, the split's
/// distinct-feature index).
type LeafEdges = (usize, Vec<(usize, bool, usize)>);

#[derive(Debug, Clone, Copy)]
struct FastTree {
    root: u32,
    /// `Some((splits, groups))` ranges, or `None`: explained exactly. The
    /// splits range is `(first, first inside a group, end)`: the splits
    /// above the groups (in node order) need the cold patterns, those inside
    /// only their direction.
    ranges: Option<Ranges>,
}

/// A split: its node (global), its children (local to the tree), and the
/// index of its feature among its path's distinct features.
#[derive(Debug, Clone, Copy)]
struct Split {
    node: u32,
    left: u32,
    unique: u32,
}

/// A subtree explained by one lookup: its root (local to the tree), its
/// `inner` range, and its table.
#[derive(Debug, Clone, Copy)]
struct Group {
    node: u32,
    inner: (u32, u32),
    width: u32,
    values: u32,
    features: u32,
}

/// What the builder knows of a node of one tree (local index).
#[derive(Debug, Clone, Default)]
struct NodeInfo {
    /// The distinct features on the path to it, with their `z`.
    path: Vec<(u32, f32)>,
    /// A split's feature's index in `path` (of its children).
    unique: usize,
    /// How many splits its subtree has.
    splits: usize,
    /// A leaf's table (`2^k` patterns of `k` values).
    table: Vec<f64>,
}

impl FastShap {
    /// Builds the tables of `forest` (which must be explainable).
    pub(super) fn new(forest: &Forest) -> FastShap {
        let shap = forest.shap.as_ref().expect("an explainable forest");
        let mut fast = FastShap::default();
        let mut bias = 0.0f32;
        let weights = Weights::new(MAX_DEPTH);
        for (t, &(root, depth)) in forest.trees.iter().enumerate() {
            bias += shap.means[root as usize];
            let end = forest
                .trees
                .get(t + 1)
                .map_or(forest.nodes.len() as u32, |&(r, _)| r);
            fast.widest = fast.widest.max((end - root) as usize);
            let ranges = if depth as usize > MAX_DEPTH {
                None
            } else {
                fast.tree(forest, root, end, &weights)
            };
            fast.trees.push(FastTree { root, ranges });
        }
        fast.bias = bias + forest.base_margin;
        fast
    }

    /// Adds the tree of nodes `root..end`'s splits, groups and tables; `None`
    /// (and nothing added) if its tables would pass the budget.
    fn tree(&mut self, forest: &Forest, root: u32, end: u32, weights: &Weights) -> Option<Ranges> {
        let shap = forest.shap.as_ref().expect("an explainable forest");
        let nodes = &forest.nodes[root as usize..end as usize];
        let covers = &shap.covers[root as usize..end as usize];
        let mut info = vec![NodeInfo::default(); nodes.len()];
        let splits_at = self.splits.len();
        // Parents come before children (breadth first).
        for i in 0..nodes.len() {
            let n = nodes[i];
            if !n.is_split() {
                let z: Vec<f64> = info[i].path.iter().map(|&(_, z)| f64::from(z)).collect();
                info[i].table = leaf_table(f64::from(n.value), &z, weights);
                continue;
            }
            let feature = n.feature();
            let path = &info[i].path;
            let unique = path
                .iter()
                .position(|&(f, _)| f == feature)
                .unwrap_or(path.len());
            info[i].unique = unique;
            let left = (n.left - root) as usize;
            self.splits.push(Split {
                node: root + i as u32,
                left: left as u32,
                unique: unique as u32,
            });
            let w = covers[i];
            for child in [left, left + 1] {
                let fraction = if w > 0.0 { covers[child] / w } else { 0.5 };
                let mut path = info[i].path.clone();
                match path.get_mut(unique) {
                    // The exact walk's `hot_zero * incoming_zero`.
                    Some((_, z)) => *z *= fraction,
                    None => path.push((feature, fraction)),
                }
                info[child].path = path;
            }
        }
        for i in (0..nodes.len()).rev() {
            if nodes[i].is_split() {
                let left = (nodes[i].left - root) as usize;
                info[i].splits = 1 + info[left].splits + info[left + 1].splits;
            }
        }
        let (groups_at, inner_at) = (self.groups.len(), self.inner.len());
        let (values_at, features_at) = (self.values.len(), self.features.len());
        let mut todo = vec![0usize];
        let mut outer = Vec::new();
        while let Some(i) = todo.pop() {
            let k = info[i].path.len();
            if info[i].splits > GROUP_SPLITS || k + info[i].splits > GROUP_BITS {
                let left = (nodes[i].left - root) as usize;
                todo.extend([left + 1, left]);
                outer.push(root + i as u32);
                continue;
            }
            if !self.group(nodes, root, &info, i) {
                self.splits.truncate(splits_at);
                self.groups.truncate(groups_at);
                self.inner.truncate(inner_at);
                self.values.truncate(values_at);
                self.features.truncate(features_at);
                return None;
            }
        }
        // Splits above the groups first, parents before children (node
        // order: the forest lays trees out breadth first), then the others.
        self.splits[splits_at..].sort_by_key(|s| (!outer.contains(&s.node), s.node));
        let inner_from = splits_at + outer.len();
        Some((
            (
                splits_at as u32,
                inner_from as u32,
                self.splits.len() as u32,
            ),
            (groups_at as u32, self.groups.len() as u32),
        ))
    }

    /// Adds the group of the subtree at `at` (local); false if its table
    /// would pass the budget.
    fn group(
        &mut self,
        nodes: &[super::forest::Node],
        root: u32,
        info: &[NodeInfo],
        at: usize,
    ) -> bool {
        let k = info[at].path.len();
        // The subtree's splits, breadth first, and its leaves with their
        // edges from `at`: (split's position, went right, unique index).
        let mut inner = Vec::new();
        let mut leaves: Vec<LeafEdges> = Vec::new();
        let mut queue = std::collections::VecDeque::from([(at, Vec::new())]);
        while let Some((i, edges)) = queue.pop_front() {
            let n = nodes[i];
            if !n.is_split() {
                leaves.push((i, edges));
                continue;
            }
            let pos = inner.len();
            inner.push(i);
            let left = (n.left - root) as usize;
            for (child, right) in [(left, false), (left + 1, true)] {
                let mut e: Vec<(usize, bool, usize)> = edges.clone();
                e.push((pos, right, info[i].unique));
                queue.push_back((child, e));
            }
        }
        let mut features: Vec<u32> = info[at].path.iter().map(|&(f, _)| f).collect();
        let mut maps = Vec::new();
        for (leaf, _) in &leaves {
            let map: Vec<usize> = info[*leaf]
                .path
                .iter()
                .map(|&(f, _)| match features.iter().position(|&g| g == f) {
                    Some(p) => p,
                    None => {
                        features.push(f);
                        features.len() - 1
                    }
                })
                .collect();
            maps.push(map);
        }
        let width = features.len();
        if width == 0 {
            return true; // a single-leaf tree
        }
        let patterns = 1usize << (k + inner.len());
        if self.values.len() + patterns * width > BUDGET {
            return false;
        }
        self.groups.push(Group {
            node: at as u32,
            inner: (
                self.inner.len() as u32,
                (self.inner.len() + inner.len()) as u32,
            ),
            width: width as u32,
            values: self.values.len() as u32,
            features: self.features.len() as u32,
        });
        self.inner.extend(
            inner
                .iter()
                .enumerate()
                .map(|(p, &i)| (i as u32, (k + p) as u32)),
        );
        self.features.extend(&features);
        let mut row = vec![0.0f64; width];
        for pattern in 0..patterns {
            let (cold, right) = (pattern & ((1 << k) - 1), pattern >> k);
            row.fill(0.0);
            for ((leaf, edges), map) in leaves.iter().zip(&maps) {
                let mut c = cold;
                for &(pos, went_right, unique) in edges {
                    if (right >> pos) & 1 != usize::from(went_right) {
                        c |= 1 << unique;
                    }
                }
                let lk = map.len();
                for (j, &v) in info[*leaf].table[c * lk..][..lk].iter().enumerate() {
                    row[map[j]] += v;
                }
            }
            self.values.extend(row.iter().map(|&v| v as Stored));
        }
        true
    }
}

/// Asks the CPU to bring `values` (one table row, up to two cache lines)
/// into cache; a hint, no effect on results.
#[inline(always)]
fn prefetch(values: &[Stored]) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(first), Some(last)) = (values.first(), values.last()) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch reads nothing the program sees and never
        // faults; the pointers are to elements of a live slice.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>((first as *const Stored).cast());
            _mm_prefetch::<_MM_HINT_T0>((last as *const Stored).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// `|S|! (k-1-|S|)! / k!` for every `k` up to a maximum: `k`'s at
/// `k * (k - 1) / 2`.
struct Weights(Vec<f64>);

impl Weights {
    fn new(max: usize) -> Weights {
        let fact: Vec<f64> = (0..=max)
            .scan(1.0f64, |f, i| {
                if i > 0 {
                    *f *= i as f64;
                }
                Some(*f)
            })
            .collect();
        let mut w = Vec::new();
        for k in 0..=max {
            w.extend((0..k).map(|s| fact[s] * fact[k - 1 - s] / fact[k]));
        }
        Weights(w)
    }

    fn of(&self, k: usize) -> &[f64] {
        &self.0[k * k.saturating_sub(1) / 2..][..k]
    }
}

/// A leaf's table: for each cold pattern `c` (bit `j` set: the row leaves
/// feature `j`'s path), the `k` contributions (module doc).
fn leaf_table(v: f64, z: &[f64], weights: &Weights) -> Vec<f64> {
    let k = z.len();
    let w = weights.of(k);
    let mut out = Vec::with_capacity(k << k);
    let mut e = vec![0.0f64; k + 1];
    for cold in 0..1usize << k {
        for j in 0..k {
            // The features the row follows (besides j), and those it leaves.
            let mut outside = 1.0f64;
            e.fill(0.0);
            e[0] = 1.0;
            let mut a = 0;
            for (m, &zm) in z.iter().enumerate() {
                if m == j {
                    continue;
                }
                if cold & (1 << m) != 0 {
                    outside *= zm;
                } else {
                    a += 1;
                    for t in (1..=a).rev() {
                        e[t] += e[t - 1] * zm;
                    }
                }
            }
            // Σ over S ⊆ A: w(|S|) Π_{A∖S} z = Σ_t e_t(A) w(a - t).
            let sum: f64 = (0..=a).map(|t| e[t] * w[a - t]).sum();
            let o = if cold & (1 << j) == 0 { 1.0 } else { 0.0 };
            out.push(v * (o - z[j]) * outside * sum);
        }
    }
    out
}

impl Forest {
    /// The tables, built on the first call.
    fn fast_shap(&self) -> &FastShap {
        self.fast
            .get_or_init(|| std::sync::Arc::new(FastShap::new(self)))
            .downcast_ref()
            .expect("only FastShap is stored")
    }

    /// The contributions of `row`, as [`Forest::contributions`], computed
    /// with per-subtree tables (`fast_shap.rs`): equal to the exact ones
    /// within `f32` rounding (≤ 1e-6 × max(1, |value|) per element), the
    /// bias bit for bit; ~20× faster. The tables are built on the first call
    /// (or by [`Forest::fast_tables`]). Panics if the forest is not
    /// [`explainable`](Forest::explainable) or a length is wrong.
    pub fn fast_contributions_with(&self, scratch: &mut Explainer, row: &[f32], out: &mut [f32]) {
        let n = self.num_features;
        assert_eq!(row.len(), n, "row width");
        assert_eq!(
            out.len(),
            n + 1,
            "one contribution per feature and the bias"
        );
        let fast = self.fast_shap();
        let mut s = std::mem::take(&mut scratch.fast);
        s.cold.resize(fast.widest, 0);
        s.right.resize(fast.widest, 0);
        s.offsets.resize(fast.groups.len(), 0);
        s.total.clear();
        s.total.resize(n, 0.0);
        // First every group's table row, fetched ahead (a run explains one
        // row in many: the tables are mostly out of cache, and the rows of
        // one explanation are independent loads)...
        for tree in &fast.trees {
            let Some(((s0, sm, s1), (g0, g1))) = tree.ranges else {
                continue;
            };
            let (cold, dirs) = (&mut s.cold, &mut s.right);
            cold[0] = 0;
            for split in &fast.splits[sm as usize..s1 as usize] {
                let node = self.nodes[split.node as usize];
                let right = node.next(row[node.feature() as usize]) != node.left;
                dirs[(split.node - tree.root) as usize] = u32::from(right);
            }
            for split in &fast.splits[s0 as usize..sm as usize] {
                let node = self.nodes[split.node as usize];
                let local = (split.node - tree.root) as usize;
                let c = cold[local];
                let right = node.next(row[node.feature() as usize]) != node.left;
                let bit = 1u32 << split.unique;
                let l = split.left as usize;
                cold[l] = c | if right { bit } else { 0 };
                cold[l + 1] = c | if right { 0 } else { bit };
            }
            let groups = &fast.groups[g0 as usize..g1 as usize];
            for (group, offset) in groups.iter().zip(&mut s.offsets[g0 as usize..g1 as usize]) {
                let mut pattern = cold[group.node as usize];
                for &(node, shift) in &fast.inner[group.inner.0 as usize..group.inner.1 as usize] {
                    pattern |= dirs[node as usize] << shift;
                }
                *offset = group.values + pattern * group.width;
                let values = &fast.values[*offset as usize..][..group.width as usize];
                prefetch(values);
            }
        }
        // ... then the sums, tree after tree, group after group.
        for (t, tree) in fast.trees.iter().enumerate() {
            let Some((_, (g0, g1))) = tree.ranges else {
                s.tree.resize(n, 0.0);
                self.exact_tree(scratch, row, t, &mut s.tree);
                for &f in &self.shap.as_ref().expect("explainable").tree_features[t] {
                    s.total[f as usize] += f64::from(s.tree[f as usize]);
                }
                continue;
            };
            let groups = &fast.groups[g0 as usize..g1 as usize];
            for (group, &offset) in groups.iter().zip(&s.offsets[g0 as usize..g1 as usize]) {
                let width = group.width as usize;
                let values = &fast.values[offset as usize..][..width];
                let features = &fast.features[group.features as usize..][..width];
                for (&f, &v) in features.iter().zip(values) {
                    s.total[f as usize] += f64::from(v);
                }
            }
        }
        for (o, &t) in out.iter_mut().zip(&s.total) {
            *o = t as f32;
        }
        out[n] = fast.bias;
        scratch.fast = s;
    }

    /// How many trees the fast walk explains from tables (the others: the
    /// exact walk, [`MAX_DEPTH`], [`BUDGET`]) and how many values the tables
    /// hold; builds them (a run with `[explain]` calls it at load, so its
    /// first explained record does not wait for them).
    pub fn fast_tables(&self) -> (usize, usize) {
        let fast = self.fast_shap();
        (
            fast.trees.iter().filter(|t| t.ranges.is_some()).count(),
            fast.values.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::forest::{Objective, TreeBuilder};
    use super::*;

    fn exact(f: &Forest, row: &[f32]) -> Vec<f32> {
        let mut out = vec![f32::NAN; f.num_features() + 1];
        f.contributions(row, &mut out);
        out
    }

    fn fast(f: &Forest, row: &[f32]) -> Vec<f32> {
        let mut out = vec![f32::NAN; f.num_features() + 1];
        f.fast_contributions_with(&mut Explainer::new(), row, &mut out);
        out
    }

    /// Fast and exact agree within `tol` per element, the bias bit for bit.
    fn assert_close(f: &Forest, row: &[f32], tol: f32) {
        let (e, g) = (exact(f, row), fast(f, row));
        let n = f.num_features();
        assert_eq!(e[n].to_bits(), g[n].to_bits(), "bias");
        for (a, b) in e.iter().zip(&g) {
            assert!((a - b).abs() <= tol, "{row:?}: exact {e:?}, fast {g:?}");
        }
    }

    /// x0 < 1 ? (x1 < 2 ? 10 : 20) : 30; missing x0 right, missing x1 left.
    fn small(covers: [f32; 5]) -> Forest {
        let mut t = TreeBuilder::default();
        t.split(0, 1.0, false, 1, 2);
        t.split(1, 2.0, true, 3, 4);
        t.leaf(30.0);
        t.leaf(10.0);
        t.leaf(20.0);
        t.covers(covers.to_vec());
        let mut f = Forest::new(3, 0.25, Objective::Identity);
        f.push(t);
        f
    }

    #[test]
    fn equals_the_shapley_values_of_a_small_tree() {
        // Brute force (coalitions of {x0, x1}, path-dependent expectations)
        // for covers 10 = 6 (4 + 2) + 4: E = (10*4 + 20*2 + 30*4) / 10 = 20.
        let f = small([10.0, 6.0, 4.0, 4.0, 2.0]);
        // Row (0, 0): v({}) = 20, v({0}) = 40/3, v({1}) = 18, v({0,1}) = 10.
        let want = [
            0.5 * ((40.0 / 3.0 - 20.0) + (10.0 - 18.0)),
            0.5 * ((18.0 - 20.0) + (10.0 - 40.0 / 3.0)),
            0.0,
            20.25,
        ];
        let got = fast(&f, &[0.0, 0.0, 7.0]);
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        for row in [
            [0.0, 0.0, 5.0],
            [0.0, 3.0, 5.0],
            [2.0, 0.0, 5.0],
            [f32::NAN, 3.0, 5.0],
            [0.5, f32::NAN, f32::NAN],
        ] {
            assert_close(&f, &row, 1e-6);
        }
    }

    #[test]
    fn missing_values_follow_the_default_direction() {
        let f = small([10.0, 6.0, 4.0, 4.0, 2.0]);
        assert_eq!(fast(&f, &[f32::NAN, 0.0, 0.0]), fast(&f, &[5.0, 0.0, 0.0]));
        assert_eq!(fast(&f, &[0.0, f32::NAN, 0.0]), fast(&f, &[0.0, 0.0, 0.0]));
        assert_ne!(fast(&f, &[f32::NAN, 0.0, 0.0]), fast(&f, &[0.0, 0.0, 0.0]));
    }

    #[test]
    fn zero_covers_equal_the_exact_rule() {
        for covers in [
            [0.0; 5],
            [10.0, 10.0, 0.0, 0.0, 10.0],
            [10.0, 0.0, 10.0, 0.0, 0.0],
        ] {
            let f = small(covers);
            for row in [[0.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3.0, f32::NAN, 0.0]] {
                let got = fast(&f, &row);
                assert!(got.iter().all(|c| c.is_finite()), "{covers:?}: {got:?}");
                assert_close(&f, &row, 1e-5);
            }
        }
    }

    #[test]
    fn a_feature_split_twice_on_one_path_is_one_feature() {
        // x0 < 1 ? (x0 < 0 ? 1 : 2) : 3, and x1 under it: x0 < 0 ? (x1 < 5 ? 1 : 4) : 2
        let mut t = TreeBuilder::default();
        t.split(0, 1.0, true, 1, 2);
        t.split(0, 0.0, true, 3, 4);
        t.leaf(3.0);
        t.split(1, 5.0, false, 5, 6);
        t.leaf(2.0);
        t.leaf(1.0);
        t.leaf(4.0);
        t.covers(vec![8.0, 5.0, 3.0, 2.0, 3.0, 1.5, 0.5]);
        let mut f = Forest::new(2, 0.0, Objective::Identity);
        f.push(t);
        for x0 in [-1.0, 0.5, 2.0, f32::NAN] {
            for x1 in [0.0, 6.0, f32::NAN] {
                assert_close(&f, &[x0, x1], 1e-6);
            }
        }
        // The deepest leaf's path has 2 distinct features, not 3.
        let fast = f.fast_shap();
        assert!(fast.groups.iter().all(|g| g.width <= 2));
    }

    #[test]
    fn a_single_leaf_tree_is_all_bias() {
        let mut stump = TreeBuilder::default();
        stump.leaf(0.5);
        stump.covers(vec![3.0]);
        let mut f = Forest::new(2, -1.0, Objective::Logistic);
        f.push(stump);
        assert_eq!(fast(&f, &[1.0, f32::NAN]), vec![0.0, 0.0, -0.5]);
        assert_eq!(f.fast_tables(), (1, 0));
    }

    /// A random tree of `depth` over `features` features (some repeated on a
    /// path), random thresholds, defaults and covers (some zero).
    fn random_tree(seed: &mut u64, depth: usize, features: u32, zeros: bool) -> TreeBuilder {
        let mut next = move || {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*seed >> 33) as u32
        };
        let mut t = TreeBuilder::default();
        let mut covers = Vec::new();
        // Nodes in creation order; children appended after their parent.
        let mut todo = vec![(0usize, 0usize, 100.0f32)];
        let mut made = 1;
        #[allow(clippy::type_complexity)]
        let mut nodes: Vec<Option<(u32, f32, bool, u32, u32, f32)>> = vec![None];
        let mut values = vec![0.0f32];
        covers.push(100.0);
        while let Some((i, d, cover)) = todo.pop() {
            covers[i] = cover;
            if d < depth && (d < 2 || next() % 4 != 0) {
                let (l, r) = (made, made + 1);
                made += 2;
                nodes.extend([None, None]);
                values.extend([0.0, 0.0]);
                covers.extend([0.0, 0.0]);
                let mut share = (next() % 101) as f32 / 100.0;
                if !zeros && (share == 0.0 || share == 1.0) {
                    share = 0.5;
                }
                let lc = cover * share;
                let rc = if zeros && next() % 7 == 0 {
                    0.0
                } else {
                    cover - lc
                };
                let threshold = (next() % 10) as f32;
                nodes[i] = Some((
                    next() % features,
                    threshold,
                    next() % 2 == 0,
                    l as u32,
                    r as u32,
                    0.0,
                ));
                todo.push((l, d + 1, lc));
                todo.push((r, d + 1, rc));
            } else {
                values[i] = (next() % 2001) as f32 / 1000.0 - 1.0;
            }
        }
        for (i, node) in nodes.iter().enumerate() {
            match node {
                Some((f, th, dl, l, r, _)) => t.split(*f, *th, *dl, *l, *r),
                None => t.leaf(values[i]),
            }
        }
        t.covers(covers);
        t
    }

    #[test]
    fn random_forests_with_repeats_missing_values_and_zero_covers_equal_the_exact_walk() {
        let mut seed = 17u64;
        for (depth, features, zeros) in [(3, 2, false), (6, 4, false), (6, 10, true), (8, 5, true)]
        {
            let mut f = Forest::new(features as usize, 0.5, Objective::Logistic);
            for _ in 0..20 {
                f.push(random_tree(&mut seed, depth, features, zeros));
            }
            let mut rng = seed;
            for _ in 0..200 {
                let row: Vec<f32> = (0..features)
                    .map(|_| {
                        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                        match (rng >> 40) % 12 {
                            11 => f32::NAN,
                            v => v as f32 - 0.5,
                        }
                    })
                    .collect();
                assert_close(&f, &row, 2e-5);
            }
        }
    }

    #[test]
    fn trees_past_the_depth_limit_are_explained_exactly() {
        let mut seed = 5u64;
        let mut f = Forest::new(6, 0.0, Objective::Identity);
        f.push(random_tree(&mut seed, 4, 6, false));
        // A chain one deeper than the limit: split i at node 2i, its left
        // leaf at 2i + 1, its right child the next split.
        let d = MAX_DEPTH + 1;
        let mut chain = TreeBuilder::default();
        let mut covers = Vec::new();
        for i in 0..d {
            chain.split(
                (i % 6) as u32,
                i as f32,
                i % 2 == 0,
                2 * i as u32 + 1,
                2 * i as u32 + 2,
            );
            covers.push((d - i) as f32 + 1.0);
            chain.leaf(i as f32 / 10.0);
            covers.push(1.0);
        }
        chain.leaf(-1.0);
        covers.push(1.0);
        chain.covers(covers);
        f.push(chain);
        assert_eq!(f.fast_tables().0, 1, "the deep tree has no tables");
        for x in [-1.0, 0.5, 3.0, 20.0, f32::NAN] {
            assert_close(&f, &[x, 1.0, x, 2.0, f32::NAN, 4.0], 1e-5);
        }
    }
}
