//! Reading XGBoost's JSON model format (`Booster.save_model("m.json")`), both
//! the current layout (XGBoost 2.x/3.x) and the 1.4-era layout of the
//! tutorial's reference model, into a [`Forest`].
//!
//! Each node's cover (`sum_hessian`) is kept for TreeSHAP (`shap.rs`); a
//! model without it still scores, but cannot be explained.
//!
//! Whatever this loader cannot score exactly as XGBoost does — multiclass,
//! multi-target trees, categorical splits, DART, an objective it does not know
//! — is refused here, at load time, with an error naming it. It never returns
//! a model that would give a wrong number.

use serde::Deserialize;

use super::forest::{Forest, Objective, TreeBuilder};

/// Why an XGBoost JSON model was refused; the message says what.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not JSON, or not of XGBoost's model layout.
    #[error("not an XGBoost JSON model: {0}")]
    Json(String),
    /// A model loanflow cannot score exactly as XGBoost does (multiclass,
    /// categorical splits, DART, an unknown objective, …).
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The model contradicts itself (a child outside its tree, a split on a
    /// feature it lacks, a non-finite value, no trees, …).
    #[error("corrupt model: {0}")]
    Corrupt(String),
}

#[derive(Deserialize)]
struct Document {
    learner: Learner,
    #[serde(default)]
    version: Vec<u32>,
}

#[derive(Deserialize)]
struct Learner {
    #[serde(default)]
    feature_names: Vec<String>,
    gradient_booster: Booster,
    learner_model_param: ModelParam,
    objective: ObjectiveDoc,
}

#[derive(Deserialize)]
struct ModelParam {
    base_score: String,
    #[serde(default)]
    num_class: Option<String>,
    num_feature: String,
    #[serde(default)]
    num_target: Option<String>,
}

#[derive(Deserialize)]
struct ObjectiveDoc {
    name: String,
}

#[derive(Deserialize)]
struct Booster {
    name: String,
    #[serde(default)]
    model: Option<GbTree>,
}

#[derive(Deserialize)]
struct GbTree {
    trees: Vec<TreeDoc>,
    #[serde(default)]
    tree_info: Vec<i64>,
}

/// XGBoost wrote `default_left` as booleans in 1.x and as 0/1 integers later.
#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Int(i64),
}

impl Flag {
    fn is_set(&self) -> bool {
        match self {
            Flag::Bool(b) => *b,
            Flag::Int(i) => *i != 0,
        }
    }
}

#[derive(Deserialize)]
struct TreeDoc {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_conditions: Vec<f32>,
    split_indices: Vec<i64>,
    default_left: Vec<Flag>,
    #[serde(default)]
    split_type: Vec<i64>,
    #[serde(default)]
    categories_nodes: Vec<i64>,
    #[serde(default)]
    tree_param: Option<TreeParam>,
    /// Each node's cover (TreeSHAP's weights); both layouts write it.
    #[serde(default)]
    sum_hessian: Option<Vec<f32>>,
}

#[derive(Deserialize)]
struct TreeParam {
    #[serde(default)]
    size_leaf_vector: Option<String>,
}

/// The most features a model may read: the scorer packs a feature index into
/// 30 bits of a node (see `forest.rs`).
const MAX_FEATURES: usize = 1 << 30;

/// The deepest tree loaded. Every row walks each tree to its full depth, so a
/// degenerate chain thousands of levels deep would make each row cost as much
/// as the whole file; XGBoost's own trees are far shallower (its default
/// max_depth is 6, its GPU limit 30), even with `grow_policy = "lossguide"`.
const MAX_TREE_DEPTH: usize = 1024;

/// Parses an XGBoost JSON model into a forest, checking everything a wrong
/// score could come from.
pub fn parse(bytes: &[u8]) -> Result<(Forest, Vec<String>), LoadError> {
    let doc: Document =
        serde_json::from_slice(bytes).map_err(|e| LoadError::Json(e.to_string()))?;
    let learner = doc.learner;
    let params = &learner.learner_model_param;

    let num_class: u32 = parse_param(params.num_class.as_deref().unwrap_or("0"), "num_class")?;
    if num_class > 1 {
        return Err(LoadError::Unsupported(format!(
            "multiclass model ({num_class} classes); loanflow scores binary and regression models"
        )));
    }
    let num_target: u32 = parse_param(params.num_target.as_deref().unwrap_or("1"), "num_target")?;
    if num_target > 1 {
        return Err(LoadError::Unsupported(format!(
            "multi-target model ({num_target} targets)"
        )));
    }
    let num_feature: usize = parse_param(&params.num_feature, "num_feature")?;
    if num_feature == 0 {
        return Err(LoadError::Corrupt(
            "num_feature is 0: a model reads at least one feature".into(),
        ));
    }
    if num_feature > MAX_FEATURES {
        return Err(LoadError::Unsupported(format!(
            "{num_feature} features (loanflow scores dense rows of at most {MAX_FEATURES})"
        )));
    }
    if !learner.feature_names.is_empty() && learner.feature_names.len() != num_feature {
        return Err(LoadError::Corrupt(format!(
            "{} feature names for {num_feature} features",
            learner.feature_names.len()
        )));
    }

    let objective = match learner.objective.name.as_str() {
        "binary:logistic" | "reg:logistic" => Objective::Logistic,
        "reg:squarederror" | "reg:linear" => Objective::Identity,
        "binary:logitraw" => Objective::Identity,
        other => {
            return Err(LoadError::Unsupported(format!(
                "objective `{other}` (supported: binary:logistic, reg:logistic, binary:logitraw, reg:squarederror)"
            )))
        }
    };
    let base_score = parse_base_score(&params.base_score)?;
    let base_margin = match (objective, learner.objective.name.as_str()) {
        (Objective::Logistic, _) => {
            if !(base_score > 0.0 && base_score < 1.0) {
                return Err(LoadError::Corrupt(format!(
                    "base_score {base_score} is not a probability in (0, 1)"
                )));
            }
            // XGBoost's ProbToMargin for logistic objectives, in f32 as it does.
            -(1.0f32 / base_score - 1.0f32).ln()
        }
        _ => base_score,
    };

    if learner.gradient_booster.name != "gbtree" {
        return Err(LoadError::Unsupported(format!(
            "booster `{}` (only gbtree; DART's dropout weights and linear boosters are not scored)",
            learner.gradient_booster.name
        )));
    }
    let gbtree = learner
        .gradient_booster
        .model
        .ok_or_else(|| LoadError::Corrupt("gbtree without a model".into()))?;
    if gbtree.tree_info.iter().any(|&g| g != 0) {
        return Err(LoadError::Unsupported(
            "trees for more than one output group".into(),
        ));
    }
    if gbtree.trees.is_empty() {
        return Err(LoadError::Corrupt("no trees".into()));
    }

    let mut forest = Forest::new(num_feature, base_margin, objective);
    for (t, tree) in gbtree.trees.iter().enumerate() {
        forest.push(build_tree(t, tree, num_feature)?);
    }
    let _ = doc.version;
    Ok((forest, learner.feature_names))
}

fn parse_param<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, LoadError> {
    text.trim()
        .parse()
        .map_err(|_| LoadError::Corrupt(format!("{what} `{text}` is not a number")))
}

/// `base_score` is `"5E-1"` in 1.x and `"[5.2450035E-2]"` (a vector of one) in 3.x.
fn parse_base_score(text: &str) -> Result<f32, LoadError> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    if inner.contains(',') {
        return Err(LoadError::Unsupported(format!(
            "a base_score per target ({text})"
        )));
    }
    let v: f32 = parse_param(inner, "base_score")?;
    if !v.is_finite() {
        return Err(LoadError::Corrupt(format!(
            "base_score `{text}` is not finite"
        )));
    }
    Ok(v)
}

fn build_tree(t: usize, tree: &TreeDoc, num_feature: usize) -> Result<TreeBuilder, LoadError> {
    let n = tree.left_children.len();
    let corrupt = |what: String| LoadError::Corrupt(format!("tree {t}: {what}"));
    if n == 0 {
        return Err(corrupt("no nodes".into()));
    }
    if [
        tree.right_children.len(),
        tree.split_conditions.len(),
        tree.split_indices.len(),
        tree.default_left.len(),
    ]
    .iter()
    .any(|&len| len != n)
    {
        return Err(corrupt("node arrays of different lengths".into()));
    }
    if tree.split_type.iter().any(|&s| s != 0) || !tree.categories_nodes.is_empty() {
        return Err(LoadError::Unsupported(format!(
            "tree {t} has categorical splits; train with one-hot features (the spec's one_hot) instead"
        )));
    }
    if let Some(size) = tree
        .tree_param
        .as_ref()
        .and_then(|p| p.size_leaf_vector.as_deref())
    {
        if !matches!(size.trim(), "0" | "1") {
            return Err(LoadError::Unsupported(format!(
                "tree {t} has vector leaves"
            )));
        }
    }
    let mut builder = TreeBuilder::default();
    for i in 0..n {
        let (l, r) = (tree.left_children[i], tree.right_children[i]);
        let value = tree.split_conditions[i];
        if l == -1 && r == -1 {
            if !value.is_finite() {
                return Err(corrupt(format!("leaf {i} has a non-finite value")));
            }
            builder.leaf(value);
            continue;
        }
        let in_range = |c: i64| c > 0 && (c as usize) < n && c as usize != i;
        if !in_range(l) || !in_range(r) {
            return Err(corrupt(format!(
                "node {i} has children {l}, {r} outside the tree"
            )));
        }
        let feature = tree.split_indices[i];
        if feature < 0 || feature as usize >= num_feature {
            return Err(corrupt(format!(
                "node {i} splits on feature {feature}, but the model has {num_feature}"
            )));
        }
        if !value.is_finite() {
            return Err(corrupt(format!("node {i} has a non-finite threshold")));
        }
        builder.split(
            feature as u32,
            value,
            tree.default_left[i].is_set(),
            l as u32,
            r as u32,
        );
    }
    if let Some(covers) = &tree.sum_hessian {
        builder.covers(covers.clone());
    }
    let depth = builder.check().map_err(|e| corrupt(e.to_string()))?;
    if depth > MAX_TREE_DEPTH {
        return Err(LoadError::Unsupported(format!(
            "tree {t} is {depth} levels deep (loanflow scores trees up to {MAX_TREE_DEPTH} levels)"
        )));
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(objective: &str, extra_tree: &str) -> String {
        format!(
            r#"{{"learner":{{"feature_names":["a","b"],
              "gradient_booster":{{"name":"gbtree","model":{{"tree_info":[0],"trees":[{{
                "left_children":[1,-1,-1],"right_children":[2,-1,-1],
                "split_conditions":[0.5,-1.0,2.0],"split_indices":[1,0,0],
                "default_left":[1,0,0]{extra_tree}}}]}}}},
              "learner_model_param":{{"base_score":"[5E-1]","num_class":"0","num_feature":"2"}},
              "objective":{{"name":"{objective}"}}}},"version":[3,2,0]}}"#
        )
    }

    #[test]
    fn loads_a_minimal_model_and_scores_both_branches_and_missing() {
        let (forest, names) = parse(model("reg:squarederror", "").as_bytes()).unwrap();
        assert_eq!(names, ["a", "b"]);
        // base 0.5 (identity) + leaf
        assert_eq!(forest.predict_row(&[0.0, 0.1]), 0.5 - 1.0);
        assert_eq!(forest.predict_row(&[0.0, 0.5]), 0.5 + 2.0);
        assert_eq!(forest.predict_row(&[0.0, f32::NAN]), 0.5 - 1.0);
    }

    #[test]
    fn logistic_applies_base_margin_and_sigmoid() {
        let (forest, _) = parse(model("binary:logistic", "").as_bytes()).unwrap();
        let p = forest.predict_row(&[0.0, 1.0]);
        assert_eq!(p, 1.0 / (1.0 + (-2.0f32).exp()));
    }

    #[test]
    fn refuses_what_it_cannot_score() {
        let e = parse(model("multi:softprob", "").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("objective `multi:softprob`"), "{e}");
        let e = parse(model("binary:logistic", r#","split_type":[1,0,0]"#).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("categorical splits"), "{e}");
        let dart =
            model("binary:logistic", "").replace("\"gbtree\",\"model\"", "\"dart\",\"model\"");
        let e = parse(dart.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("booster `dart`"), "{e}");
        let multi =
            model("binary:logistic", "").replace("\"num_class\":\"0\"", "\"num_class\":\"3\"");
        let e = parse(multi.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("multiclass"), "{e}");
    }

    #[test]
    fn refuses_corrupt_trees() {
        let bad_feature = model("binary:logistic", "")
            .replace("\"split_indices\":[1,0,0]", "\"split_indices\":[7,0,0]");
        let e = parse(bad_feature.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("feature 7"), "{e}");
        let cycle = model("binary:logistic", "")
            .replace("\"left_children\":[1,-1,-1]", "\"left_children\":[2,-1,-1]");
        assert!(parse(cycle.as_bytes()).is_err());
        assert!(parse(b"{\"learner\":1}").is_err());
        assert!(parse(b"\xff\xfe").is_err());
    }

    #[test]
    fn covers_make_a_model_explainable_and_bad_ones_are_refused() {
        let (forest, _) = parse(model("binary:logistic", "").as_bytes()).unwrap();
        assert!(!forest.explainable());
        let with = model("binary:logistic", r#","sum_hessian":[4.0,3.0,1.0]"#);
        let (forest, _) = parse(with.as_bytes()).unwrap();
        assert!(forest.explainable());
        for bad in ["[4.0,3.0]", "[4.0,-3.0,1.0]"] {
            let text = model("binary:logistic", &format!(r#","sum_hessian":{bad}"#));
            let e = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("cover"), "{e}");
        }
    }

    #[test]
    fn base_score_formats() {
        assert_eq!(parse_base_score("5E-1").unwrap(), 0.5);
        assert_eq!(parse_base_score("[5.2450035E-2]").unwrap(), 5.2450035E-2);
        assert!(parse_base_score("[1,2]").is_err());
        assert!(parse_base_score("x").is_err());
    }
}
