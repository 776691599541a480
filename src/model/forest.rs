//! A forest of binary decision trees stored flat, and scoring that matches
//! XGBoost bit for bit.
//!
//! Parity rules (XGBoost's CPU predictor): features and thresholds are `f32`;
//! `x < threshold` goes left; a missing value (NaN) follows the node's default
//! direction; the `f32` sum starts at the base margin and adds each tree's
//! leaf in tree order; the objective's transform (sigmoid) comes last.
//!
//! Speed: a naive walk is dominated by branch mispredictions. Here every node
//! keeps its two children next to each other (`right = left + 1`), so the
//! next node is computed arithmetically, and [`Forest::predict_batch`] walks a
//! block of rows through each tree level by level: the rows' walks are
//! independent, so the CPU overlaps their memory loads instead of waiting on
//! one unpredictable branch after another. Leaves point at themselves, so a
//! row that reaches a leaf early simply stays there until the tree's depth is
//! walked.

/// How the summed margin becomes the model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// `1 / (1 + exp(-margin))` (binary:logistic, reg:logistic).
    Logistic,
    /// The margin itself (reg:squarederror, binary:logitraw).
    Identity,
}

const DEFAULT_LEFT: u32 = 1 << 31;
const INTERNAL: u32 = 1 << 30;
const FEATURE_MASK: u32 = INTERNAL - 1;

/// One node, 16 bytes. For a leaf: `left` is the node itself, `value` the leaf value.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct Node {
    /// Feature index, with the DEFAULT_LEFT and INTERNAL flags in the top bits.
    feature: u32,
    threshold: f32,
    /// Absolute index of the left child; the right child is `left + 1`.
    pub(super) left: u32,
    pub(super) value: f32,
}

impl Node {
    /// Whether the node splits (else it is a leaf).
    #[inline]
    pub(super) fn is_split(&self) -> bool {
        self.feature & INTERNAL != 0
    }

    /// The feature a split reads.
    #[inline]
    pub(super) fn feature(&self) -> u32 {
        self.feature & FEATURE_MASK
    }

    /// The child a row with value `x` goes to (a split's; NaN = missing).
    #[inline]
    pub(super) fn next(&self, x: f32) -> u32 {
        let go_left = (x < self.threshold) | (x.is_nan() & (self.feature & DEFAULT_LEFT != 0));
        self.left + u32::from(!go_left)
    }
}

/// Rows walked through a tree together by [`Forest::predict_batch`].
const BLOCK: usize = 64;

/// A tree as its loader describes it, in the loader's node numbering.
#[derive(Debug, Default, Clone)]
pub struct TreeBuilder {
    nodes: Vec<BuilderNode>,
    covers: Option<Vec<f32>>,
}

#[derive(Debug, Clone)]
enum BuilderNode {
    Leaf(f32),
    Split {
        feature: u32,
        threshold: f32,
        default_left: bool,
        left: u32,
        right: u32,
    },
}

impl TreeBuilder {
    /// Appends a leaf with `value`.
    pub fn leaf(&mut self, value: f32) {
        self.nodes.push(BuilderNode::Leaf(value));
    }

    /// Appends a split on feature `feature`: `x < threshold` goes to node
    /// `left`, else to `right`; a missing value goes left if `default_left`.
    pub fn split(
        &mut self,
        feature: u32,
        threshold: f32,
        default_left: bool,
        left: u32,
        right: u32,
    ) {
        self.nodes.push(BuilderNode::Split {
            feature,
            threshold,
            default_left,
            left,
            right,
        });
    }

    /// Gives every node its cover (the training rows' hessian sum that
    /// reached it: XGBoost's `sum_hessian`), in node order. TreeSHAP needs
    /// them; a tree pushed without covers cannot be explained.
    pub fn covers(&mut self, covers: Vec<f32>) {
        self.covers = Some(covers);
    }

    /// Checks that the nodes form one tree rooted at node 0: every node reached
    /// exactly once, so no cycles and nothing shared. Returns the depth.
    pub fn check(&self) -> Result<usize, TreeError> {
        let n = self.nodes.len();
        if n == 0 {
            return Err(TreeError("no nodes".into()));
        }
        let mut seen = vec![false; n];
        let mut stack = vec![(0u32, 0usize)];
        let mut depth = 0;
        let mut count = 0;
        while let Some((i, d)) = stack.pop() {
            let i = i as usize;
            if i >= n || seen[i] {
                return Err(TreeError(format!(
                    "node {i} is reached twice or does not exist"
                )));
            }
            seen[i] = true;
            count += 1;
            depth = depth.max(d);
            if let BuilderNode::Split { left, right, .. } = self.nodes[i] {
                stack.push((left, d + 1));
                stack.push((right, d + 1));
            }
        }
        if count != n {
            return Err(TreeError(format!(
                "{} of its {n} nodes are not reachable from the root",
                n - count
            )));
        }
        if let Some(covers) = &self.covers {
            if covers.len() != n {
                return Err(TreeError(format!("{} covers for {n} nodes", covers.len())));
            }
            if let Some(i) = covers.iter().position(|c| !(c.is_finite() && *c >= 0.0)) {
                return Err(TreeError(format!(
                    "node {i} has cover {}, not a finite number >= 0",
                    covers[i]
                )));
            }
        }
        Ok(depth)
    }
}

/// Why a tree's nodes do not form one tree rooted at node 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TreeError(String);

/// A scoring-ready forest.
#[derive(Debug, Clone)]
pub struct Forest {
    pub(super) nodes: Vec<Node>,
    /// Per tree: index of its root in `nodes` and its depth.
    pub(super) trees: Vec<(u32, u32)>,
    pub(super) num_features: usize,
    pub(super) base_margin: f32,
    objective: Objective,
    /// What TreeSHAP needs besides the nodes; `None` once a tree without
    /// covers was pushed.
    pub(super) shap: Option<ShapNodes>,
    /// The fast walk's tables (`fast_shap.rs`'s `FastShap`), built on first
    /// use (or by `fast_tables`); reset by [`Forest::push`]. Typed `Any` so that this module, below
    /// `fast_shap.rs`, does not name it.
    pub(super) fast: std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

/// Per node (indexed like `Forest::nodes`): its cover and its mean value
/// (XGBoost's `FillNodeMeanValues`); per tree: the distinct features it
/// splits on, in first-use order. See `shap.rs` for how they are used.
#[derive(Debug, Clone, Default)]
pub(super) struct ShapNodes {
    pub(super) covers: Vec<f32>,
    pub(super) means: Vec<f32>,
    pub(super) tree_features: Vec<Vec<u32>>,
}

impl Forest {
    /// An empty forest over rows of `num_features` values, whose sum starts at
    /// `base_margin` and ends transformed by `objective`.
    pub fn new(num_features: usize, base_margin: f32, objective: Objective) -> Forest {
        Forest {
            nodes: Vec::new(),
            trees: Vec::new(),
            num_features,
            base_margin,
            objective,
            shap: Some(ShapNodes::default()),
            fast: std::sync::OnceLock::new(),
        }
    }

    /// Appends a checked tree, laying its nodes out breadth first with each
    /// node's children side by side.
    pub fn push(&mut self, tree: TreeBuilder) {
        let depth = tree.check().expect("push takes checked trees") as u32;
        assert!(self.num_features > 0, "a forest needs at least one feature");
        for node in &tree.nodes {
            if let BuilderNode::Split { feature, .. } = node {
                assert!(
                    (*feature as usize) < self.num_features,
                    "split on feature {feature} of {}",
                    self.num_features
                );
            }
        }
        self.fast = std::sync::OnceLock::new();
        let root = self.nodes.len() as u32;
        // Breadth-first: position in `order` is the new index (relative to root).
        let mut order: Vec<u32> = vec![0];
        let mut new_index = vec![0u32; tree.nodes.len()];
        let mut head = 0;
        while head < order.len() {
            let old = order[head] as usize;
            new_index[old] = head as u32;
            if let BuilderNode::Split { left, right, .. } = tree.nodes[old] {
                order.push(left);
                order.push(right);
            }
            head += 1;
        }
        for (pos, &old) in order.iter().enumerate() {
            let node = match tree.nodes[old as usize] {
                BuilderNode::Leaf(value) => Node {
                    feature: 0,
                    threshold: 0.0,
                    left: root + pos as u32,
                    value,
                },
                BuilderNode::Split {
                    feature,
                    threshold,
                    default_left,
                    left,
                    right,
                } => {
                    debug_assert_eq!(new_index[right as usize], new_index[left as usize] + 1);
                    Node {
                        feature: feature | INTERNAL | if default_left { DEFAULT_LEFT } else { 0 },
                        threshold,
                        left: root + new_index[left as usize],
                        value: 0.0,
                    }
                }
            };
            self.nodes.push(node);
        }
        self.trees.push((root, depth));
        let shap = match (self.shap.take(), &tree.covers) {
            (Some(shap), Some(covers)) => Some(shap_nodes(shap, &tree, covers, &order)),
            _ => None,
        };
        self.shap = shap;
    }

    /// Whether every tree carries its node covers, so the forest can be
    /// explained ([`Forest::contributions`]).
    pub fn explainable(&self) -> bool {
        self.shap.is_some()
    }

    /// The margin of one row: the sum before the objective's transform.
    pub fn margin_row(&self, row: &[f32]) -> f32 {
        assert_eq!(row.len(), self.num_features, "row width");
        let mut sum = self.base_margin;
        for &(root, depth) in &self.trees {
            let mut idx = root;
            for _ in 0..depth {
                idx = self.step(idx, row);
            }
            sum += self.nodes[idx as usize].value;
        }
        sum
    }

    /// How many values each row has.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// How the summed margin becomes the output.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// How many trees the forest holds.
    pub fn num_trees(&self) -> usize {
        self.trees.len()
    }

    /// The depth of the deepest tree, in edges (0: only single leaves).
    pub fn max_depth(&self) -> usize {
        self.trees
            .iter()
            .map(|&(_, d)| d as usize)
            .max()
            .unwrap_or(0)
    }

    /// The next node for `row` from node `idx`; a leaf returns itself.
    #[inline(always)]
    fn step(&self, idx: u32, row: &[f32]) -> u32 {
        debug_assert!((idx as usize) < self.nodes.len() && row.len() == self.num_features);
        // SAFETY: `idx` is a node index: a tree root or a `left`/`left + 1`
        // written by `push`, which only links to nodes of the same tree. The
        // feature index was checked against `num_features` when the tree was
        // pushed (leaves use feature 0, and num_features >= 1), and every
        // caller passes rows of exactly `num_features` values.
        let node = unsafe { *self.nodes.get_unchecked(idx as usize) };
        let x = unsafe { *row.get_unchecked((node.feature & FEATURE_MASK) as usize) };
        let default_left = node.feature & DEFAULT_LEFT != 0;
        let go_left = (x < node.threshold) | (x.is_nan() & default_left);
        let internal = (node.feature & INTERNAL) >> 30;
        node.left + ((!go_left) as u32 & internal)
    }

    #[inline]
    fn transform(&self, margin: f32) -> f32 {
        match self.objective {
            Objective::Logistic => 1.0 / (1.0 + (-margin).exp()),
            Objective::Identity => margin,
        }
    }

    /// Scores one row (`num_features` values, NaN = missing).
    pub fn predict_row(&self, row: &[f32]) -> f32 {
        self.transform(self.margin_row(row))
    }

    /// Scores `out.len()` rows stored row-major in `rows`.
    pub fn predict_batch(&self, rows: &[f32], out: &mut [f32]) {
        let width = self.num_features;
        assert_eq!(
            rows.len(),
            out.len() * width,
            "rows must hold out.len() rows of num_features"
        );
        for (block_rows, block_out) in rows.chunks(BLOCK * width).zip(out.chunks_mut(BLOCK)) {
            self.predict_block(block_rows, block_out);
        }
    }

    fn predict_block(&self, rows: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { self.predict_block_avx2(rows, out) };
            }
        }
        self.predict_block_generic(rows, out)
    }

    /// The same walk compiled for AVX2, so the level loop can use gathers.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn predict_block_avx2(&self, rows: &[f32], out: &mut [f32]) {
        self.predict_block_generic(rows, out)
    }

    #[inline(always)]
    fn predict_block_generic(&self, rows: &[f32], out: &mut [f32]) {
        let width = self.num_features;
        let n = out.len();
        let mut idx = [0u32; BLOCK];
        out.fill(self.base_margin);
        for &(root, depth) in &self.trees {
            idx[..n].fill(root);
            for _ in 0..depth {
                for (i, row) in idx[..n].iter_mut().zip(rows.chunks_exact(width)) {
                    *i = self.step(*i, row);
                }
            }
            for (o, &i) in out.iter_mut().zip(&idx[..n]) {
                *o += self.nodes[i as usize].value;
            }
        }
        for o in out.iter_mut() {
            *o = self.transform(*o);
        }
    }

    /// Scores the rows of a matrix (rows × num_features).
    pub fn predict(&self, x: ndarray::ArrayView2<f32>) -> ndarray::Array1<f32> {
        assert_eq!(x.ncols(), self.num_features, "matrix width");
        let x = x.as_standard_layout();
        let mut out = ndarray::Array1::zeros(x.nrows());
        self.predict_batch(
            x.as_slice().expect("standard layout is contiguous"),
            out.as_slice_mut().expect("fresh array is contiguous"),
        );
        out
    }
}

/// `shap` extended by one tree's covers, mean values and features;
/// `order[new] = old` maps the forest's layout to the builder's numbering.
fn shap_nodes(mut shap: ShapNodes, tree: &TreeBuilder, covers: &[f32], order: &[u32]) -> ShapNodes {
    let mut means = vec![0.0f32; tree.nodes.len()];
    mean_value(tree, covers, 0, &mut means);
    let mut features = Vec::new();
    for &old in order {
        let old = old as usize;
        shap.covers.push(covers[old]);
        shap.means.push(means[old]);
        if let BuilderNode::Split { feature, .. } = tree.nodes[old] {
            if !features.contains(&feature) {
                features.push(feature);
            }
        }
    }
    shap.tree_features.push(features);
    shap
}

/// XGBoost's `FillNodeMeanValues`, in its `f32` order: a leaf's value, else
/// `(mean(left) * cover(left) + mean(right) * cover(right)) / cover(node)`.
/// A node of zero cover takes its children's plain mean, `(mean(left) +
/// mean(right)) * 0.5`: the weights `shap.rs` gives its children then.
fn mean_value(tree: &TreeBuilder, covers: &[f32], i: usize, means: &mut [f32]) -> f32 {
    let m = match tree.nodes[i] {
        BuilderNode::Leaf(value) => value,
        BuilderNode::Split { left, right, .. } => {
            let (l, r) = (left as usize, right as usize);
            let ml = mean_value(tree, covers, l, means);
            let mr = mean_value(tree, covers, r, means);
            if covers[i] > 0.0 {
                let mut m = ml * covers[l];
                m += mr * covers[r];
                m / covers[i]
            } else {
                (ml + mr) * 0.5
            }
        }
    };
    means[i] = m;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x0 < 1 ? (x1 < 2 ? 10 : 20) : 30, missing x0 goes right, missing x1 left.
    fn forest() -> Forest {
        let mut t = TreeBuilder::default();
        t.split(0, 1.0, false, 1, 2);
        t.split(1, 2.0, true, 3, 4);
        t.leaf(30.0);
        t.leaf(10.0);
        t.leaf(20.0);
        let mut f = Forest::new(2, 0.25, Objective::Identity);
        f.push(t);
        let mut stump = TreeBuilder::default();
        stump.leaf(0.5);
        f.push(stump);
        f
    }

    #[test]
    fn walks_like_xgboost() {
        let f = forest();
        assert_eq!(f.predict_row(&[0.0, 0.0]), 0.25 + 10.0 + 0.5);
        assert_eq!(f.predict_row(&[0.0, 2.0]), 0.25 + 20.0 + 0.5); // equal goes right
        assert_eq!(f.predict_row(&[1.0, 0.0]), 0.25 + 30.0 + 0.5);
        assert_eq!(f.predict_row(&[f32::NAN, 0.0]), 0.25 + 30.0 + 0.5);
        assert_eq!(f.predict_row(&[0.0, f32::NAN]), 0.25 + 10.0 + 0.5);
        assert_eq!(f.max_depth(), 2);
    }

    #[test]
    fn batch_equals_row_by_row_across_block_edges() {
        let f = forest();
        let rows: Vec<[f32; 2]> = (0..150)
            .map(|i| match i % 5 {
                0 => [0.0, 0.0],
                1 => [0.5, 3.0],
                2 => [2.0, 0.0],
                3 => [f32::NAN, f32::NAN],
                _ => [0.9, f32::NAN],
            })
            .collect();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let mut out = vec![0.0; rows.len()];
        f.predict_batch(&flat, &mut out);
        for (row, got) in rows.iter().zip(&out) {
            assert_eq!(*got, f.predict_row(row));
        }
        let matrix = ndarray::Array2::from_shape_vec((150, 2), flat).unwrap();
        assert_eq!(f.predict(matrix.view()).to_vec(), out);
    }

    #[test]
    fn check_refuses_cycles_and_orphans() {
        let mut t = TreeBuilder::default();
        t.split(0, 1.0, false, 0, 1);
        t.leaf(1.0);
        assert!(t.check().is_err());
        let mut t = TreeBuilder::default();
        t.leaf(1.0);
        t.leaf(2.0);
        assert!(t.check().is_err());
    }
}
