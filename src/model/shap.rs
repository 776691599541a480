//! Exact path-dependent TreeSHAP (Lundberg et al., "Consistent
//! Individualized Feature Attribution for Tree Ensembles", arXiv 1802.03888,
//! Algorithm 2): each feature's contribution to one row's margin, equal to
//! XGBoost 3.2.0's `Booster.predict(DMatrix, pred_contribs=True)`.
//!
//! Parity rules (XGBoost 3.2.0's CPU predictor, `treeshap.cc` and
//! `cpu_predictor.cc`; 3.3.0 replaced this algorithm by an approximation, so
//! the oracle is pinned to 3.2.0):
//! 1. Everything is `f32`, in XGBoost's order of operations: the path
//!    weights of `ExtendPath`, `UnwindPath` and `UnwoundPathSum` with their
//!    exact association (`a * b * c / d` is `((a * b) * c) / d`; the two
//!    functions that look alike group differently, and each is copied as it
//!    is), a leaf adding `w * (one - zero) * leaf` to its feature. Rust never
//!    fuses a multiply and an add, nor does XGBoost's x86-64 build.
//! 2. Each tree is explained into a zeroed per-tree vector, which is then
//!    added feature by feature to the row's total, tree after tree; the bias
//!    (last column) gets each tree's mean value (the root's, from
//!    `FillNodeMeanValues`: `(mean(l) * cover(l) + mean(r) * cover(r)) /
//!    cover`), and the base margin is added last.
//! 3. The path a row takes (the "hot" child) is the scorer's: `x < threshold`
//!    goes left, a missing value (NaN) follows the node's default direction.
//!    A node's cover is XGBoost's `sum_hessian` from the model file.
//! 4. Only the features a tree splits on are added from its vector: the
//!    others are exactly `+0.0` there, and adding `+0.0` to a total that
//!    starts at `+0.0` changes no bit.
//!
//! Zero covers (XGBoost divides by them and returns NaN; a trained tree with
//! `min_child_weight > 0` has none): a node of zero cover sends half its
//! weight to each child, and its mean value is its children's plain mean, so
//! the contributions still sum to the margin; a child reached with zero
//! weight (zero cover below a positive one) contributes exactly nothing and
//! is not visited. No division by zero happens.
//!
//! Efficiency: the contributions and the bias sum to the row's margin (up to
//! `f32` rounding: XGBoost's own sums differ from its margins by ~1e-6).
//!
//! This walk is `O(leaves × depth²)` per tree and row (~170 µs a row for the
//! real model). `fast_shap.rs` computes the same values from per-subtree
//! tables, ~20× faster, equal to these within `f32` rounding: what a run's
//! reasons use; `loanflow explain` and the parity tests use this one.

use super::forest::{Forest, ShapNodes};

/// One element of the unique path: a feature, the fractions of the
/// weight that flows down with it unknown (`zero`) and fixed (`one`), and the
/// permutation weight of paths with `i` ones (`pweight`, XGBoost's layout).
#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: i64,
    zero: f32,
    one: f32,
    pweight: f32,
}

/// Scratch space of the fast walk (`fast_shap.rs`), in [`Explainer`].
#[derive(Debug, Clone, Default)]
pub(super) struct FastScratch {
    pub(super) cold: Vec<u32>,
    pub(super) right: Vec<u32>,
    pub(super) total: Vec<f64>,
    pub(super) tree: Vec<f32>,
    /// Per group, where its table row for this row starts.
    pub(super) offsets: Vec<u32>,
}

/// Scratch space to explain rows with one forest, reused row after row.
#[derive(Debug, Clone, Default)]
pub struct Explainer {
    path: Vec<PathElement>,
    tree: Vec<f32>,
    /// [`ratios`] up to the deepest path seen.
    ratios: Vec<f32>,
    /// The fast walk's (`fast_shap.rs`).
    pub(super) fast: FastScratch,
}

impl Explainer {
    /// Scratch space for nothing yet; it grows to the forest it explains.
    pub fn new() -> Explainer {
        Explainer::default()
    }
}

impl Forest {
    /// The contributions of `row` (`num_features` values, NaN = missing) to
    /// its margin: `out` gets `num_features + 1` values, one per feature and
    /// the bias last (the base margin plus every tree's mean value), as
    /// XGBoost's `pred_contribs` (module doc). Panics if the forest is not
    /// [`explainable`](Forest::explainable) or a length is wrong.
    pub fn contributions(&self, row: &[f32], out: &mut [f32]) {
        self.contributions_with(&mut Explainer::new(), row, out)
    }

    /// [`Forest::contributions`] with reusable scratch space.
    pub fn contributions_with(&self, scratch: &mut Explainer, row: &[f32], out: &mut [f32]) {
        let shap = self
            .shap
            .as_ref()
            .expect("contributions need a forest with node covers (Forest::explainable)");
        let n = self.num_features;
        assert_eq!(row.len(), n, "row width");
        assert_eq!(
            out.len(),
            n + 1,
            "one contribution per feature and the bias"
        );
        scratch.reserve(self);
        scratch.tree.resize(n, 0.0);
        out.fill(0.0);
        let walk = Walk {
            forest: self,
            shap,
            row,
            ratios: &scratch.ratios,
        };
        for (t, &(root, _)) in self.trees.iter().enumerate() {
            let features = &shap.tree_features[t];
            for &f in features {
                scratch.tree[f as usize] = 0.0;
            }
            let tree = &mut scratch.tree;
            walk.tree_shap(tree, &mut scratch.path, root, 0, 0, 1.0, 1.0, -1);
            for &f in features {
                out[f as usize] += scratch.tree[f as usize];
            }
            out[n] += shap.means[root as usize];
        }
        out[n] += self.base_margin;
    }

    /// Tree `t`'s contributions (the exact walk) into `tree`, which holds
    /// `num_features` values: its features' are overwritten (the others are
    /// left as they are: zero for this tree).
    pub(super) fn exact_tree(
        &self,
        scratch: &mut Explainer,
        row: &[f32],
        t: usize,
        tree: &mut [f32],
    ) {
        let shap = self.shap.as_ref().expect("an explainable forest");
        scratch.reserve(self);
        for &f in &shap.tree_features[t] {
            tree[f as usize] = 0.0;
        }
        let walk = Walk {
            forest: self,
            shap,
            row,
            ratios: &scratch.ratios,
        };
        walk.tree_shap(tree, &mut scratch.path, self.trees[t].0, 0, 0, 1.0, 1.0, -1);
    }
}

impl Explainer {
    /// Grows the path and ratios to `forest`'s depth.
    fn reserve(&mut self, forest: &Forest) {
        let max_depth = forest.max_depth() + 2;
        let need = max_depth * (max_depth + 1) / 2;
        if self.path.len() < need {
            self.path.resize(need, PathElement::default());
            self.ratios = ratios(max_depth);
        }
    }
}

/// One row's walk through the forest.
struct Walk<'a> {
    forest: &'a Forest,
    shap: &'a ShapNodes,
    row: &'a [f32],
    ratios: &'a [f32],
}

impl Walk<'_> {
    /// XGBoost's `TreeShap` (without conditioning): the path of the parent
    /// starts at `parent_at` in `path` and has `depth + 1` elements in use;
    /// this node's starts right after it.
    #[allow(clippy::too_many_arguments)]
    fn tree_shap(
        &self,
        phi: &mut [f32],
        path: &mut [PathElement],
        node: u32,
        mut depth: usize,
        parent_at: usize,
        parent_zero: f32,
        parent_one: f32,
        parent_feature: i64,
    ) {
        let at = parent_at + depth + 1;
        path.copy_within(parent_at..at, at);
        extend_path(
            &mut path[at..],
            depth,
            parent_zero,
            parent_one,
            parent_feature,
        );
        let n = self.forest.nodes[node as usize];
        if !n.is_split() {
            let path = &path[at..=at + depth];
            let start = depth * depth.saturating_sub(1) / 2;
            let ratios = &self.ratios[start..start + depth];
            for (i, el) in path.iter().enumerate().skip(1) {
                let w = unwound_path_sum(path, ratios, depth, i);
                phi[el.feature as usize] += w * (el.one - el.zero) * n.value;
            }
            return;
        }
        let split = n.feature();
        let hot = n.next(self.row[split as usize]);
        let cold = if hot == n.left { n.left + 1 } else { n.left };
        let covers = &self.shap.covers;
        let w = covers[node as usize];
        let (hot_zero, cold_zero) = if w > 0.0 {
            (covers[hot as usize] / w, covers[cold as usize] / w)
        } else {
            (0.5, 0.5)
        };
        let mut incoming_zero = 1.0f32;
        let mut incoming_one = 1.0f32;
        // Split on this feature before: undo it, to redo it here.
        if let Some(k) = (0..=depth).find(|&k| path[at + k].feature == i64::from(split)) {
            incoming_zero = path[at + k].zero;
            incoming_one = path[at + k].one;
            unwind_path(&mut path[at..], depth, k);
            depth -= 1;
        }
        let hot_fraction = hot_zero * incoming_zero;
        if hot_fraction != 0.0 || incoming_one != 0.0 {
            self.tree_shap(
                phi,
                path,
                hot,
                depth + 1,
                at,
                hot_fraction,
                incoming_one,
                i64::from(split),
            );
        }
        let cold_fraction = cold_zero * incoming_zero;
        if cold_fraction != 0.0 {
            self.tree_shap(
                phi,
                path,
                cold,
                depth + 1,
                at,
                cold_fraction,
                0.0,
                i64::from(split),
            );
        }
    }
}

/// XGBoost's `ExtendPath`: appends element `depth` and updates the weights.
fn extend_path(path: &mut [PathElement], depth: usize, zero: f32, one: f32, feature: i64) {
    // One bounds check here, none in the loop.
    let path = &mut path[..=depth];
    path[depth] = PathElement {
        feature,
        zero,
        one,
        pweight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let d1 = (depth + 1) as f32;
    for i in (0..depth).rev() {
        path[i + 1].pweight += one * path[i].pweight * (i + 1) as f32 / d1;
        path[i].pweight = zero * path[i].pweight * (depth - i) as f32 / d1;
    }
}

/// XGBoost's `UnwindPath`: removes element `index`, restoring the weights.
fn unwind_path(path: &mut [PathElement], depth: usize, index: usize) {
    let path = &mut path[..=depth];
    let one = path[index].one;
    let zero = path[index].zero;
    let mut next_one_portion = path[depth].pweight;
    let d1 = (depth + 1) as f32;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = path[i].pweight;
            path[i].pweight = next_one_portion * d1 / ((i + 1) as f32 * one);
            next_one_portion = tmp - path[i].pweight * zero * (depth - i) as f32 / d1;
        } else {
            // zero != 0 here: a path element of zero weight is never made
            // (`tree_shap` does not visit such a child).
            path[i].pweight = (path[i].pweight * d1) / (zero * (depth - i) as f32);
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

/// XGBoost's `UnwoundPathSum`: the total permutation weight were element
/// `index` unwound.
/// `ratios[i]` must be `(depth - i) as f32 / (depth + 1) as f32` (the very
/// `f32` XGBoost computes in the loop; [`ratios`] makes them once).
fn unwound_path_sum(path: &[PathElement], ratios: &[f32], depth: usize, index: usize) -> f32 {
    let path = &path[..=depth];
    let ratios = &ratios[..depth];
    let one = path[index].one;
    let zero = path[index].zero;
    let mut next_one_portion = path[depth].pweight;
    let mut total = 0.0f32;
    let d1 = (depth + 1) as f32;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = next_one_portion * d1 / ((i + 1) as f32 * one);
            total += tmp;
            next_one_portion = path[i].pweight - tmp * zero * ratios[i];
        } else if zero != 0.0 {
            total += (path[i].pweight / zero) / ratios[i];
        }
    }
    total
}

/// `(depth - i) / (depth + 1)` in `f32` for every depth up to `max` and
/// `i < depth`: depth `d`'s start at `d * (d - 1) / 2`.
fn ratios(max: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(max * (max + 1) / 2);
    for depth in 0..=max {
        let d1 = (depth + 1) as f32;
        out.extend((0..depth).map(|i| (depth - i) as f32 / d1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::forest::{Objective, TreeBuilder};
    use super::*;

    /// x0 < 1 ? (x1 < 2 ? 10 : 20) : 30 with covers 10 = 6 (4 + 2) + 4;
    /// missing x0 goes right, missing x1 left.
    fn tree(covers: [f32; 5]) -> TreeBuilder {
        let mut t = TreeBuilder::default();
        t.split(0, 1.0, false, 1, 2);
        t.split(1, 2.0, true, 3, 4);
        t.leaf(30.0);
        t.leaf(10.0);
        t.leaf(20.0);
        t.covers(covers.to_vec());
        t
    }

    fn forest(covers: [f32; 5]) -> Forest {
        let mut f = Forest::new(3, 0.25, Objective::Identity);
        f.push(tree(covers));
        f
    }

    fn explain(f: &Forest, row: &[f32]) -> Vec<f32> {
        let mut out = vec![f32::NAN; f.num_features() + 1];
        f.contributions(row, &mut out);
        out
    }

    /// Exact Shapley values by enumerating coalitions, in f64, with the
    /// path-dependent expectation (a feature out of the coalition follows
    /// both children weighted by cover).
    fn brute_force(covers: [f32; 5], row: &[f32]) -> Vec<f64> {
        let c: Vec<f64> = covers.iter().map(|&c| f64::from(c)).collect();
        let value = |set: u32| -> f64 {
            let inner = |s: u32| {
                if s & 2 != 0 {
                    let x1 = row[1];
                    if x1 < 2.0 || x1.is_nan() {
                        10.0
                    } else {
                        20.0
                    }
                } else {
                    (10.0 * c[3] + 20.0 * c[4]) / c[1]
                }
            };
            if set & 1 != 0 {
                if row[0] < 1.0 {
                    inner(set)
                } else {
                    30.0
                }
            } else {
                (inner(set) * c[1] + 30.0 * c[2]) / c[0]
            }
        };
        let mut phi = vec![0.0; 4];
        for (i, p) in phi.iter_mut().enumerate().take(2) {
            let bit = 1 << i;
            let other = 3 ^ bit;
            for s in [0, other] {
                *p += 0.5 * (value(s | bit) - value(s));
            }
        }
        phi[3] = value(0) + 0.25;
        phi
    }

    #[test]
    fn equals_brute_force_shapley_values_and_sums_to_the_margin() {
        let covers = [10.0, 6.0, 4.0, 4.0, 2.0];
        let f = forest(covers);
        for row in [
            [0.0, 0.0, 5.0],
            [0.0, 3.0, 5.0],
            [2.0, 0.0, 5.0],
            [f32::NAN, 3.0, 5.0],
            [0.5, f32::NAN, f32::NAN],
        ] {
            let got = explain(&f, &row);
            let want = brute_force(covers, &row);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (f64::from(*g) - w).abs() < 1e-5,
                    "{row:?}: {got:?} vs {want:?}"
                );
            }
            assert_eq!(got[2], 0.0, "an unused feature contributes nothing");
            let sum: f32 = got.iter().sum();
            assert!((sum - f.margin_row(&row)).abs() < 1e-5, "{row:?}");
        }
    }

    #[test]
    fn missing_values_follow_the_default_direction() {
        let f = forest([10.0, 6.0, 4.0, 4.0, 2.0]);
        // Missing x0 goes right, as x0 = 5 does; missing x1 goes left, as x1 = 0.
        assert_eq!(
            explain(&f, &[f32::NAN, 0.0, 0.0]),
            explain(&f, &[5.0, 0.0, 0.0])
        );
        assert_eq!(
            explain(&f, &[0.0, f32::NAN, 0.0]),
            explain(&f, &[0.0, 0.0, 0.0])
        );
    }

    #[test]
    fn a_single_leaf_tree_is_all_bias() {
        let mut stump = TreeBuilder::default();
        stump.leaf(0.5);
        stump.covers(vec![3.0]);
        let mut f = Forest::new(2, -1.0, Objective::Logistic);
        f.push(stump);
        assert_eq!(explain(&f, &[1.0, f32::NAN]), vec![0.0, 0.0, -0.5]);
    }

    #[test]
    fn zero_covers_divide_nothing_by_zero_and_still_sum_to_the_margin() {
        // The whole tree of zero cover: every split halves the weight.
        for covers in [
            [0.0; 5],
            [10.0, 10.0, 0.0, 0.0, 10.0],
            [10.0, 0.0, 10.0, 0.0, 0.0],
        ] {
            let f = forest(covers);
            for row in [[0.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3.0, f32::NAN, 0.0]] {
                let got = explain(&f, &row);
                assert!(
                    got.iter().all(|c| c.is_finite()),
                    "{covers:?} {row:?}: {got:?}"
                );
                let sum: f32 = got.iter().sum();
                assert!(
                    (sum - f.margin_row(&row)).abs() < 1e-4,
                    "{covers:?} {row:?}: {got:?} sums to {sum}"
                );
            }
        }
        // All zero: the children's plain mean, (15 + 30) / 2, is the bias.
        let got = explain(&forest([0.0; 5]), &[0.0, 0.0, 0.0]);
        assert_eq!(got[3], 0.25 + 22.5);
    }

    #[test]
    fn a_feature_split_twice_on_one_path_is_unwound() {
        // x0 < 1 ? (x0 < 0 ? 1 : 2) : 3
        let mut t = TreeBuilder::default();
        t.split(0, 1.0, true, 1, 2);
        t.split(0, 0.0, true, 3, 4);
        t.leaf(3.0);
        t.leaf(1.0);
        t.leaf(2.0);
        t.covers(vec![8.0, 5.0, 3.0, 1.0, 4.0]);
        let mut f = Forest::new(1, 0.0, Objective::Identity);
        f.push(t);
        for x in [-1.0, 0.5, 2.0] {
            let got = explain(&f, &[x]);
            let mean = (1.0 * 1.0 + 2.0 * 4.0 + 3.0 * 3.0) / 8.0;
            assert!((got[1] - mean).abs() < 1e-6);
            // One feature: it carries all of f(x) - E[f].
            assert!(
                (got[0] - (f.margin_row(&[x]) - mean)).abs() < 1e-6,
                "{x}: {got:?}"
            );
        }
    }

    #[test]
    fn a_forest_without_covers_is_not_explainable() {
        let mut t = TreeBuilder::default();
        t.leaf(1.0);
        let mut f = Forest::new(1, 0.0, Objective::Identity);
        f.push(t);
        assert!(!f.explainable());
        assert!(forest([1.0; 5]).explainable());
    }
}
