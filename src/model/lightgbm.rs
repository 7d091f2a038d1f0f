//! An importer for LightGBM's text model format (`booster.save_model()`),
//! so an analyst can train in Python and run the result in palisade.
//!
//! Supported: binary classification (`objective=binary sigmoid:S`, or
//! `cross_entropy`) and regression (`objective=regression`, identity
//! link), numerical splits with any missing-value handling (None, Zero,
//! NaN). Refused with a clear error: categorical splits, linear trees,
//! multiclass and random-forest (`average_output`) models, and feature
//! names that palisade's feature table does not have. Train on columns
//! named exactly as the table names them (`palisade train --dump-features`
//! writes such a CSV).
//!
//! LightGBM decides a numerical split like this: a missing value becomes
//! 0 unless the missing type is NaN; then a value that is missing (NaN, or
//! zero with missing type Zero) goes to the default side, and any other
//! goes left when `x <= threshold`. palisade's nodes say the same with
//! `missing_left` and `missing_zero`.

use std::collections::HashMap;

use super::features;
use super::file::{
    FORMAT, FORMAT_VERSION, FeatureSchema, Link, ModelError, ModelErrorKind, ModelFile, TrainingInfo, TreeFile,
};

fn import_error(message: impl Into<String>) -> ModelError {
    ModelError::new(ModelErrorKind::Import, message)
}

/// One `Tree=N` block's fields.
struct TreeBlock<'a> {
    index: usize,
    fields: HashMap<&'a str, &'a str>,
}

impl<'a> TreeBlock<'a> {
    fn get(&self, key: &str) -> Result<&'a str, ModelError> {
        self.fields.get(key).copied().ok_or_else(|| import_error(format!("Tree={}: no `{key}=` line", self.index)))
    }

    fn numbers<T: std::str::FromStr>(&self, key: &str, expected: usize) -> Result<Vec<T>, ModelError> {
        if expected == 0 {
            return Ok(Vec::new());
        }
        let values: Result<Vec<T>, _> = self.get(key)?.split_whitespace().map(str::parse).collect();
        let values = values
            .map_err(|_| import_error(format!("Tree={}: `{key}` holds a value that is not a number", self.index)))?;
        if values.len() != expected {
            return Err(import_error(format!(
                "Tree={}: `{key}` has {} values, expected {expected}",
                self.index,
                values.len()
            )));
        }
        Ok(values)
    }
}

/// Import a LightGBM text model as a palisade model file named `name`.
pub fn import(text: &str, name: &str) -> Result<ModelFile, ModelError> {
    let mut header: HashMap<&str, &str> = HashMap::new();
    let mut trees: Vec<TreeBlock<'_>> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line == "end of trees" {
            break;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        if key == "Tree" {
            let index = value.parse().map_err(|_| import_error(format!("bad tree header `{line}`")))?;
            trees.push(TreeBlock { index, fields: HashMap::new() });
        } else if let Some(tree) = trees.last_mut() {
            tree.fields.insert(key, value);
        } else {
            header.insert(key, value);
        }
    }
    if header.get("num_class").is_some_and(|n| n.trim() != "1") {
        return Err(import_error("only models with num_class=1 (binary or regression) can be imported"));
    }
    if header.get("num_tree_per_iteration").is_some_and(|n| n.trim() != "1") {
        return Err(import_error("only models with one tree per iteration can be imported"));
    }
    if header.contains_key("average_output") {
        return Err(import_error("random-forest models (average_output) cannot be imported"));
    }
    let objective = header
        .get("objective")
        .copied()
        .ok_or_else(|| import_error("no `objective=` line: not a LightGBM text model"))?;
    let (link, scale) = objective_link(objective)?;
    let names: Vec<&str> = header
        .get("feature_names")
        .ok_or_else(|| import_error("no `feature_names=` line"))?
        .split_whitespace()
        .collect();
    let mut columns = Vec::with_capacity(names.len());
    let mut unknown = Vec::new();
    for name in &names {
        match features::index_of(name) {
            Some(index) => columns.push(index),
            None => unknown.push(*name),
        }
    }
    if !unknown.is_empty() {
        return Err(import_error(format!(
            "features not in palisade's feature table (schema v{}): {}; name the training columns as `palisade train --dump-features` does",
            features::SCHEMA_VERSION,
            unknown.join(", ")
        )));
    }
    if trees.is_empty() {
        return Err(import_error("the model has no trees"));
    }
    let mut converted = Vec::with_capacity(trees.len());
    for tree in &trees {
        converted.push(convert_tree(tree, &columns, scale)?);
    }
    Ok(ModelFile {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        name: name.into(),
        features: FeatureSchema::current(),
        link,
        base_score: 0.0,
        trees: converted,
        linear: None,
        training: TrainingInfo { trainer: format!("imported from LightGBM ({objective})"), ..TrainingInfo::default() },
    })
}

/// The link of an objective, and the factor leaf values are scaled by so
/// that palisade's logistic link gives LightGBM's probability.
fn objective_link(objective: &str) -> Result<(Link, f64), ModelError> {
    let mut parts = objective.split_whitespace();
    match parts.next() {
        Some("binary") => {
            let sigmoid = parts
                .find_map(|p| p.strip_prefix("sigmoid:"))
                .map_or(Ok(1.0), str::parse::<f64>)
                .map_err(|_| import_error(format!("bad sigmoid in `objective={objective}`")))?;
            Ok((Link::Logistic, sigmoid))
        }
        Some("cross_entropy" | "xentropy") => Ok((Link::Logistic, 1.0)),
        Some("regression" | "regression_l2" | "l2") => Ok((Link::Identity, 1.0)),
        _ => {
            Err(import_error(format!("objective `{objective}` is not supported (binary, cross_entropy or regression)")))
        }
    }
}

/// A LightGBM child reference: an internal node, or (negative) `!leaf`.
#[derive(Clone, Copy)]
enum Child {
    Internal(usize),
    Leaf(usize),
}

fn child(value: i64) -> Child {
    if value >= 0 { Child::Internal(value as usize) } else { Child::Leaf((!value) as usize) }
}

fn convert_tree(block: &TreeBlock<'_>, columns: &[usize], scale: f64) -> Result<TreeFile, ModelError> {
    let leaves: usize = block
        .get("num_leaves")?
        .trim()
        .parse()
        .map_err(|_| import_error(format!("Tree={}: bad num_leaves", block.index)))?;
    if block.fields.get("num_cat").is_some_and(|n| n.trim() != "0") {
        return Err(import_error(format!("Tree={}: categorical splits cannot be imported", block.index)));
    }
    if block.fields.get("is_linear").is_some_and(|n| n.trim() != "0") {
        return Err(import_error(format!("Tree={}: linear trees cannot be imported", block.index)));
    }
    let leaf_value: Vec<f64> = block.numbers("leaf_value", leaves)?;
    let internal = leaves.saturating_sub(1);
    let split_feature: Vec<usize> = block.numbers("split_feature", internal)?;
    let threshold: Vec<f64> = block.numbers("threshold", internal)?;
    let decision_type: Vec<u32> = block.numbers("decision_type", internal)?;
    let left_child: Vec<i64> = block.numbers("left_child", internal)?;
    let right_child: Vec<i64> = block.numbers("right_child", internal)?;
    let internal_value: Vec<f64> = if block.fields.contains_key("internal_value") {
        block.numbers("internal_value", internal)?
    } else {
        vec![0.0; internal]
    };
    let mut tree = TreeFile::default();
    let root = if leaves <= 1 { Child::Leaf(0) } else { Child::Internal(0) };
    // Depth-first, parents before children; an explicit stack of
    // (LightGBM node, slot in the parent to fill with our index).
    let mut stack: Vec<(Child, Option<(usize, bool)>)> = vec![(root, None)];
    let mut visited = 0usize;
    while let Some((node, parent)) = stack.pop() {
        visited += 1;
        if visited > 2 * leaves {
            return Err(import_error(format!("Tree={}: children do not form a tree", block.index)));
        }
        let ours = tree.feature.len() as u32;
        if let Some((parent, is_left)) = parent {
            if is_left { tree.left[parent] = ours } else { tree.right[parent] = ours }
        }
        match node {
            Child::Leaf(leaf) => {
                let value = *leaf_value
                    .get(leaf)
                    .ok_or_else(|| import_error(format!("Tree={}: leaf {leaf} does not exist", block.index)))?;
                push_node(&mut tree, -1, 0.0, false, false, value * scale);
            }
            Child::Internal(i) => {
                if i >= internal {
                    return Err(import_error(format!("Tree={}: node {i} does not exist", block.index)));
                }
                let kind = decision_type[i];
                if kind & 1 != 0 {
                    return Err(import_error(format!("Tree={}: categorical splits cannot be imported", block.index)));
                }
                let column = *columns.get(split_feature[i]).ok_or_else(|| {
                    import_error(format!(
                        "Tree={}: split feature {} is not in feature_names",
                        block.index, split_feature[i]
                    ))
                })?;
                let default_left = kind & 2 != 0;
                let (missing_left, missing_zero) = match (kind >> 2) & 3 {
                    // None: a missing value is compared as 0.
                    0 => (0.0 <= threshold[i], false),
                    1 => (default_left, true),
                    _ => (default_left, false),
                };
                let here = tree.feature.len();
                push_node(
                    &mut tree,
                    column as i32,
                    threshold[i],
                    missing_left,
                    missing_zero,
                    internal_value[i] * scale,
                );
                // Right is pushed first so that left is converted first.
                stack.push((child(right_child[i]), Some((here, false))));
                stack.push((child(left_child[i]), Some((here, true))));
            }
        }
    }
    if !tree.missing_zero.iter().any(|z| *z) {
        tree.missing_zero.clear();
    }
    Ok(tree)
}

fn push_node(tree: &mut TreeFile, feature: i32, threshold: f64, missing_left: bool, missing_zero: bool, value: f64) {
    tree.feature.push(feature);
    tree.threshold.push(threshold);
    tree.left.push(0);
    tree.right.push(0);
    tree.missing_left.push(missing_left);
    tree.missing_zero.push(missing_zero);
    tree.value.push(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::features::{Feature, MISSING};

    /// Two trees as LightGBM writes them: tree 0 splits on header_count
    /// (NaN missing type, default left) and then on ip_requests_10s (None
    /// missing type); tree 1 splits on sec_fetch_headers with missing type
    /// Zero, default right. sigmoid:2 doubles the raw score.
    const MODEL: &str = "tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=2
objective=binary sigmoid:2
feature_names=header_count ip_requests_10s sec_fetch_headers
feature_infos=[1:20] [1:500] [0:4]
tree_sizes=400 300

Tree=0
num_leaves=3
num_cat=0
split_feature=0 1
split_gain=10 5
threshold=4.5000000000000009 20.000000000000004
decision_type=10 2
left_child=1 -1
right_child=-3 -2
leaf_value=0.40000000000000002 0.10000000000000001 -0.29999999999999999
leaf_weight=10 10 10
leaf_count=10 10 10
internal_value=0 0.25
internal_weight=30 20
internal_count=30 20
is_linear=0
shrinkage=1


Tree=1
num_leaves=2
num_cat=0
split_feature=2
split_gain=3
threshold=1.5
decision_type=4
left_child=-1
right_child=-2
leaf_value=0.20000000000000001 -0.5
leaf_weight=1 1
leaf_count=1 1
internal_value=-0.15
internal_weight=2
internal_count=2
is_linear=0
shrinkage=0.1


end of trees

feature_importances:
header_count=1
";

    /// The same two trees, walked by hand.
    fn by_hand(header_count: f64, ip_requests_10s: f64, sec_fetch: f64) -> f64 {
        // Tree 0, node 0: header_count, decision_type 10 = default left (2)
        // + missing type NaN (8).
        let tree0: f64 = if header_count.is_nan() || header_count <= 4.500_000_000_000_001 {
            // Node 1: ip_requests_10s, decision_type 2: missing type None,
            // so NaN is compared as 0.
            let requests = if ip_requests_10s.is_nan() { 0.0 } else { ip_requests_10s };
            if requests <= 20.000_000_000_000_004 { 0.4 } else { 0.1 }
        } else {
            -0.3
        };
        // Tree 1: sec_fetch_headers, decision_type 4: missing type Zero,
        // default right: NaN and 0 go right.
        let tree1 = if sec_fetch.is_nan() || sec_fetch == 0.0 {
            -0.5
        } else if sec_fetch <= 1.5 {
            0.2
        } else {
            -0.5
        };
        1.0 / (1.0 + (-2.0 * (tree0 + tree1)).exp())
    }

    #[test]
    fn imported_trees_give_the_probabilities_of_the_trees_walked_by_hand() {
        let model = import(MODEL, "lgb").unwrap().compile().unwrap();
        assert_eq!(model.tree_count(), 2);
        let values = [f64::NAN, 0.0, 1.0, 1.5, 2.0, 4.0, 4.5, 5.0, 20.0, 21.0, 300.0];
        let mut checked = 0;
        for &a in &values {
            for &b in &values {
                for &c in &values {
                    let mut x = MISSING;
                    x[Feature::HeaderCount as usize] = a;
                    x[Feature::IpRequests10s as usize] = b;
                    x[Feature::SecFetchHeaders as usize] = c;
                    let (ours, theirs) = (model.probability(&x), by_hand(a, b, c));
                    assert!((ours - theirs).abs() < 1e-12, "x=({a},{b},{c}): {ours} vs {theirs}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 1331);
    }

    #[test]
    fn the_imported_model_survives_a_round_trip_through_the_file_format() {
        let file = import(MODEL, "lgb").unwrap();
        let again = ModelFile::parse(&file.to_json()).unwrap();
        assert_eq!(again, file);
    }

    #[test]
    fn unsupported_models_are_refused_with_the_reason() {
        let unknown = MODEL.replace("feature_names=header_count", "feature_names=colour");
        let error = import(&unknown, "x").unwrap_err();
        assert_eq!(error.kind, ModelErrorKind::Import);
        assert!(error.message.contains("colour"), "{}", error.message);
        let categorical = MODEL.replace("decision_type=10 2", "decision_type=1 2");
        assert!(import(&categorical, "x").unwrap_err().message.contains("categorical"));
        let multiclass = MODEL.replace("num_class=1", "num_class=3");
        assert!(import(&multiclass, "x").unwrap_err().message.contains("num_class"));
        assert!(import("hello", "x").is_err());
    }
}
