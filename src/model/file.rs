//! The model file (format version 1) and the compiled model.
//!
//! A model file is JSON:
//!
//! ```text
//! { "format": "palisade-model", "format_version": 1, "name": "...",
//!   "features": { "version": 1, "hash": "<16 hex>", "names": [...] },
//!   "link": "logistic" | "identity", "base_score": -1.2,
//!   "trees": [ { "feature": [...], "threshold": [...], "left": [...],
//!                "right": [...], "missing_left": [...], "value": [...] } ],
//!   "linear": { "mean": [...], "scale": [...], "weights": [...] },
//!   "training": { ... } }
//! ```
//!
//! A tree is a flat array of nodes; node 0 is the root. An internal node
//! sends a value `x` left when `x <= threshold` and right otherwise; a
//! missing value (`NaN`) goes left when `missing_left`, and when the
//! optional `missing_zero` is set for the node, zero counts as missing too
//! (LightGBM's `zero_as_missing`). A leaf has `feature` -1 and its output
//! in `value`; internal nodes carry the mean output below them in `value`,
//! which is what per-feature contributions are measured against. A child
//! always comes after its parent, so no file can make a loop.
//!
//! The raw score is `base_score` plus every tree's leaf plus, for a linear
//! model, `Σ weight × (x − mean) / scale` (missing counts as the mean); the
//! link turns it into a probability. The `features` block must hash to
//! the schema this palisade computes ([`super::features::schema_hash`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::features::{self, FEATURE_COUNT, FeatureVector, SCHEMA_VERSION};
use super::forest::{Forest, Leaves, NodeDef};

pub const FORMAT: &str = "palisade-model";
pub const FORMAT_VERSION: u32 = 1;

/// What went wrong with a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelErrorKind {
    /// The file could not be read.
    Read,
    /// Not JSON, or not a model file's JSON.
    Parse,
    /// Another format or format version.
    Format,
    /// Built for another feature schema.
    SchemaMismatch,
    /// Inconsistent contents (array lengths, child indices, features).
    Invalid,
    /// A LightGBM model that cannot be imported.
    Import,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    pub kind: ModelErrorKind,
    pub message: String,
}

impl ModelError {
    pub fn new(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        ModelError { kind, message: message.into() }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ModelError {}

/// How the raw score becomes a probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// `1 / (1 + e^-raw)`.
    Logistic,
    /// The raw score is the probability (clamped to 0..=1).
    Identity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSchema {
    pub version: u32,
    pub hash: String,
    pub names: Vec<String>,
}

impl FeatureSchema {
    /// The schema this palisade computes.
    pub fn current() -> Self {
        FeatureSchema {
            version: SCHEMA_VERSION,
            hash: features::schema_hash(),
            names: features::names().map(String::from).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeFile {
    pub feature: Vec<i32>,
    pub threshold: Vec<f64>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    pub missing_left: Vec<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_zero: Vec<bool>,
    pub value: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearFile {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
}

/// How a model was made, for people reading the file; inference ignores it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingInfo {
    /// What made the model: `palisade train ...` or `lightgbm import`.
    pub trainer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub train_sources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub test_sources: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rows: BTreeMap<String, u64>,
    /// Held-out metrics (precision, recall, ROC-AUC, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Features by importance (total gain or |weight|), most important first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_features: Vec<(String, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub format: String,
    pub format_version: u32,
    pub name: String,
    pub features: FeatureSchema,
    pub link: Link,
    pub base_score: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trees: Vec<TreeFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear: Option<LinearFile>,
    #[serde(default)]
    pub training: TrainingInfo,
}

impl ModelFile {
    /// Read and parse a model file (no checks beyond the JSON's shape).
    pub fn read(path: &Path) -> Result<ModelFile, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::new(ModelErrorKind::Read, format!("cannot read model {}: {e}", path.display())))?;
        ModelFile::parse(&text).map_err(|e| ModelError::new(e.kind, format!("model {}: {}", path.display(), e.message)))
    }

    pub fn parse(text: &str) -> Result<ModelFile, ModelError> {
        serde_json::from_str(text).map_err(|e| {
            ModelError::new(ModelErrorKind::Parse, format!("not a palisade model file (line {}): {e}", e.line()))
        })
    }

    /// The file as written: pretty JSON with a final newline, the same
    /// bytes for the same model.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Check the file against this palisade and build the evaluator.
    pub fn compile(&self) -> Result<Model, ModelError> {
        if self.format != FORMAT || self.format_version != FORMAT_VERSION {
            return Err(ModelError::new(
                ModelErrorKind::Format,
                format!(
                    "format \"{}\" version {} is not {FORMAT} version {FORMAT_VERSION}",
                    self.format, self.format_version
                ),
            ));
        }
        check_schema(&self.features)?;
        let mut nodes = Vec::new();
        let mut roots = Vec::with_capacity(self.trees.len());
        for (index, tree) in self.trees.iter().enumerate() {
            roots.push(u32::try_from(nodes.len()).map_err(|_| invalid(index, "too many nodes"))?);
            compile_tree(tree, &mut nodes).map_err(|error| invalid(index, &error.message))?;
        }
        let linear = match &self.linear {
            None => None,
            Some(linear) => Some(compile_linear(linear)?),
        };
        if !self.base_score.is_finite() {
            return Err(ModelError::new(ModelErrorKind::Invalid, "base_score is not a finite number"));
        }
        let forest = Forest::build(&roots, |id| nodes[id as usize].def());
        Ok(Model {
            name: self.name.clone(),
            link: self.link,
            base_score: self.base_score,
            nodes,
            roots,
            forest,
            linear,
        })
    }
}

/// A problem inside one tree; [`invalid`] adds which tree.
fn tree_problem(message: impl Into<String>) -> ModelError {
    ModelError::new(ModelErrorKind::Invalid, message)
}

fn invalid(tree: usize, message: &str) -> ModelError {
    ModelError::new(ModelErrorKind::Invalid, format!("tree {tree}: {message}"))
}

/// A model is usable only with the very feature table it was trained on.
fn check_schema(schema: &FeatureSchema) -> Result<(), ModelError> {
    let recorded = features::hash_of(schema.version, schema.names.iter().map(String::as_str));
    if recorded != schema.hash {
        return Err(ModelError::new(
            ModelErrorKind::SchemaMismatch,
            format!(
                "the feature names in the file hash to {recorded}, not to the recorded hash {}: the file was edited",
                schema.hash
            ),
        ));
    }
    let current = features::schema_hash();
    if schema.hash != current {
        let first_difference = schema
            .names
            .iter()
            .map(String::as_str)
            .zip(features::names())
            .position(|(theirs, ours)| theirs != ours)
            .map(|at| format!("; first difference at feature {at}"))
            .unwrap_or_default();
        return Err(ModelError::new(
            ModelErrorKind::SchemaMismatch,
            format!(
                "built for feature schema v{} (hash {}, {} features), but this palisade computes v{SCHEMA_VERSION} \
                 (hash {current}, {FEATURE_COUNT} features){first_difference}: retrain it with `palisade train`",
                schema.version,
                schema.hash,
                schema.names.len()
            ),
        ));
    }
    Ok(())
}

/// Node flags.
const MISSING_LEFT: u8 = 1;
const MISSING_ZERO: u8 = 2;
const LEAF: u16 = u16::MAX;

/// One node, 32 bytes; children are absolute indices in the model's node array.
#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f64,
    value: f64,
    left: u32,
    right: u32,
    feature: u16,
    flags: u8,
}

impl Node {
    /// The node as the forest layout reads it.
    fn def(&self) -> NodeDef {
        if self.feature == LEAF {
            NodeDef::Leaf { value: self.value }
        } else {
            NodeDef::Split {
                feature: usize::from(self.feature),
                threshold: self.threshold,
                missing_left: self.flags & MISSING_LEFT != 0,
                missing_zero: self.flags & MISSING_ZERO != 0,
                value: self.value,
                left: self.left,
                right: self.right,
            }
        }
    }

    /// Where a split sends `x`: the next node's index.
    #[inline]
    fn next(&self, x: &FeatureVector) -> u32 {
        let value = x[self.feature as usize];
        let missing = value.is_nan() || (self.flags & MISSING_ZERO != 0 && value == 0.0);
        let go_left = if missing { self.flags & MISSING_LEFT != 0 } else { value <= self.threshold };
        if go_left { self.left } else { self.right }
    }
}

fn compile_tree(tree: &TreeFile, nodes: &mut Vec<Node>) -> Result<(), ModelError> {
    let len = tree.feature.len();
    if len == 0 {
        return Err(tree_problem("no nodes"));
    }
    let same = [tree.threshold.len(), tree.left.len(), tree.right.len(), tree.missing_left.len(), tree.value.len()];
    if same.iter().any(|&n| n != len) || !(tree.missing_zero.is_empty() || tree.missing_zero.len() == len) {
        return Err(tree_problem(format!("node arrays differ in length ({len} features)")));
    }
    let offset = u32::try_from(nodes.len()).map_err(|_| tree_problem("too many nodes"))?;
    for i in 0..len {
        let feature = tree.feature[i];
        if !tree.value[i].is_finite() {
            return Err(tree_problem(format!("node {i}: value is not finite")));
        }
        if feature < 0 {
            nodes.push(Node { threshold: 0.0, value: tree.value[i], left: 0, right: 0, feature: LEAF, flags: 0 });
            continue;
        }
        let feature = usize::try_from(feature).unwrap_or(usize::MAX);
        if feature >= FEATURE_COUNT {
            return Err(tree_problem(format!("node {i}: feature {feature} does not exist ({FEATURE_COUNT} features)")));
        }
        let (left, right) = (tree.left[i] as usize, tree.right[i] as usize);
        if left <= i || right <= i || left >= len || right >= len {
            return Err(tree_problem(format!("node {i}: children {left} and {right} must come after it and exist")));
        }
        if tree.threshold[i].is_nan() {
            return Err(tree_problem(format!("node {i}: threshold is NaN")));
        }
        let mut flags = 0;
        if tree.missing_left[i] {
            flags |= MISSING_LEFT;
        }
        if tree.missing_zero.get(i).copied().unwrap_or(false) {
            flags |= MISSING_ZERO;
        }
        nodes.push(Node {
            threshold: tree.threshold[i],
            value: tree.value[i],
            left: offset + left as u32,
            right: offset + right as u32,
            feature: feature as u16,
            flags,
        });
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Linear {
    mean: Box<[f64; FEATURE_COUNT]>,
    scale: Box<[f64; FEATURE_COUNT]>,
    weights: Box<[f64; FEATURE_COUNT]>,
}

impl Linear {
    /// One feature's term of the raw score; a missing value counts as the mean.
    #[inline]
    fn term(&self, feature: usize, value: f64) -> f64 {
        if value.is_nan() { 0.0 } else { self.weights[feature] * (value - self.mean[feature]) / self.scale[feature] }
    }
}

fn compile_linear(linear: &LinearFile) -> Result<Linear, ModelError> {
    let array = |values: &[f64], what: &str| -> Result<Box<[f64; FEATURE_COUNT]>, ModelError> {
        let fixed: [f64; FEATURE_COUNT] = values.try_into().map_err(|_| {
            ModelError::new(
                ModelErrorKind::Invalid,
                format!("linear.{what} has {} values, not {FEATURE_COUNT}", values.len()),
            )
        })?;
        if fixed.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::new(
                ModelErrorKind::Invalid,
                format!("linear.{what} holds a value that is not finite"),
            ));
        }
        Ok(Box::new(fixed))
    };
    let scale = array(&linear.scale, "scale")?;
    if scale.iter().any(|s| *s <= 0.0) {
        return Err(ModelError::new(ModelErrorKind::Invalid, "linear.scale values must be positive"));
    }
    Ok(Linear { mean: array(&linear.mean, "mean")?, scale, weights: array(&linear.weights, "weights")? })
}

// === impl Model ===

/// A compiled model: flat node arrays, evaluated without allocating.
#[derive(Debug, Clone)]
pub struct Model {
    name: String,
    link: Link,
    base_score: f64,
    nodes: Vec<Node>,
    roots: Vec<u32>,
    /// The same trees laid out for speed, when they fit the layout (at
    /// most [`super::forest::MAX_DEPTH`] deep, finite thresholds); the
    /// nodes are walked one by one otherwise.
    forest: Option<Forest>,
    linear: Option<Linear>,
}

/// One feature's share of a prediction (raw-score units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    pub feature: usize,
    pub value: f64,
}

impl Model {
    /// Read, check and compile a model file.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        ModelFile::read(path)?
            .compile()
            .map_err(|e| ModelError::new(e.kind, format!("model {}: {}", path.display(), e.message)))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tree_count(&self) -> usize {
        self.roots.len()
    }

    /// The leaf a tree sends `x` to, walking node by node.
    #[inline]
    fn leaf(&self, root: u32, x: &FeatureVector) -> &Node {
        let mut node = &self.nodes[root as usize];
        while node.feature != LEAF {
            node = &self.nodes[node.next(x) as usize];
        }
        node
    }

    /// The raw score (before the link).
    pub fn raw(&self, x: &FeatureVector) -> f64 {
        self.raw_keeping(x, None)
    }

    /// The raw score, keeping the leaves the trees sent `x` to in `leaves`
    /// when given (always set: emptied when the trees are walked node by
    /// node).
    fn raw_keeping(&self, x: &FeatureVector, leaves: Option<&mut Leaves>) -> f64 {
        let mut raw = self.base_score;
        match (&self.forest, leaves) {
            (Some(forest), Some(leaves)) => forest.add_leaves_kept(x, &mut raw, leaves),
            (Some(forest), None) => forest.add_leaves(x, &mut raw),
            (None, leaves) => {
                if let Some(leaves) = leaves {
                    leaves.forget();
                }
                self.add_leaves_by_nodes(x, &mut raw)
            }
        }
        if let Some(linear) = &self.linear {
            raw += (0..FEATURE_COUNT).map(|i| linear.term(i, x[i])).sum::<f64>();
        }
        raw
    }

    /// Every tree's leaf added to `raw` in tree order, node by node (the
    /// layout [`Forest`] must agree with).
    fn add_leaves_by_nodes(&self, x: &FeatureVector, raw: &mut f64) {
        for &root in &self.roots {
            *raw += self.leaf(root, x).value;
        }
    }

    /// The probability that the request is automated.
    pub fn probability(&self, x: &FeatureVector) -> f64 {
        self.link_of(self.raw(x))
    }

    /// [`Model::probability`], keeping in `leaves` where the walk ended, so
    /// that [`Model::top_contributions_along`] for the same `x` reads the
    /// paths instead of walking every tree again (a model signal wants
    /// both).
    pub fn probability_keeping(&self, x: &FeatureVector, leaves: &mut Leaves) -> f64 {
        self.link_of(self.raw_keeping(x, Some(leaves)))
    }

    pub fn link_of(&self, raw: f64) -> f64 {
        match self.link {
            Link::Logistic => 1.0 / (1.0 + (-raw).exp()),
            Link::Identity => raw.clamp(0.0, 1.0),
        }
    }

    /// Each feature's contribution to the raw score: along each tree's
    /// path, the change of the node value a split made goes to the split's
    /// feature; for a linear model, weight × standardized value. The
    /// contributions plus the returned bias add up to the raw score.
    pub fn contributions(&self, x: &FeatureVector, out: &mut [f64; FEATURE_COUNT]) -> f64 {
        self.contributions_kept(x, None, out)
    }

    /// [`Model::contributions`], along `leaves` when they hold this
    /// model's walk of `x` ([`Model::probability_keeping`]).
    fn contributions_kept(&self, x: &FeatureVector, leaves: Option<&Leaves>, out: &mut [f64; FEATURE_COUNT]) -> f64 {
        self.contributions_summing(x, leaves, out, true)
    }

    /// [`Model::contributions_kept`]; without `with_bias`, the returned
    /// bias may leave out the trees' roots (along kept leaves, which then
    /// skip adding every tree's root one after another): for callers that rank
    /// `out` alone ([`Model::top_contributions_along`], on every request a
    /// model signals).
    fn contributions_summing(
        &self,
        x: &FeatureVector,
        leaves: Option<&Leaves>,
        out: &mut [f64; FEATURE_COUNT],
        with_bias: bool,
    ) -> f64 {
        out.fill(0.0);
        let mut bias = self.base_score;
        match &self.forest {
            Some(forest) if forest.has_paths() => {
                if !leaves.is_some_and(|leaves| forest.contributions_along(leaves, with_bias.then_some(&mut bias), out))
                {
                    forest.contributions(x, &mut bias, out)
                }
            }
            _ => self.contributions_by_nodes(x, &mut bias, out),
        }
        if let Some(linear) = &self.linear {
            for (i, slot) in out.iter_mut().enumerate() {
                *slot += linear.term(i, x[i]);
            }
        }
        bias
    }

    fn contributions_by_nodes(&self, x: &FeatureVector, bias: &mut f64, out: &mut [f64; FEATURE_COUNT]) {
        for &root in &self.roots {
            let mut node = &self.nodes[root as usize];
            *bias += node.value;
            while node.feature != LEAF {
                let next = &self.nodes[node.next(x) as usize];
                out[node.feature as usize] += next.value - node.value;
                node = next;
            }
        }
    }

    /// The `n` features (at most [`MAX_TOP`]) that moved this prediction
    /// most, largest first.
    pub fn top_contributions(&self, x: &FeatureVector, n: usize) -> TopContributions {
        self.top_contributions_kept(x, None, n)
    }

    /// [`Model::top_contributions`] of the `x` that
    /// [`Model::probability_keeping`] kept `leaves` for.
    pub fn top_contributions_along(&self, x: &FeatureVector, leaves: &Leaves, n: usize) -> TopContributions {
        self.top_contributions_kept(x, Some(leaves), n)
    }

    fn top_contributions_kept(&self, x: &FeatureVector, leaves: Option<&Leaves>, n: usize) -> TopContributions {
        let mut all = [0.0; FEATURE_COUNT];
        self.contributions_summing(x, leaves, &mut all, false);
        // Larger |value| first, then the lower feature: a total order, so
        // keeping the best `n` while reading them once gives what sorting
        // all of them would, without sorting (it runs on every request a
        // model signals), and in a fixed array, without allocating.
        let before = |a: &Contribution, b: &Contribution| {
            b.value.abs().total_cmp(&a.value.abs()).then(a.feature.cmp(&b.feature)).is_lt()
        };
        let n = n.min(MAX_TOP);
        let mut top = TopContributions { ranked: [Contribution { feature: 0, value: 0.0 }; MAX_TOP], len: 0 };
        for (feature, &value) in all.iter().enumerate() {
            if value == 0.0 {
                continue;
            }
            let candidate = Contribution { feature, value };
            // Most candidates rank below all `n` kept: one comparison, with
            // the last, turns them away.
            if n == 0 || (top.len == n && !before(&candidate, &top.ranked[n - 1])) {
                continue;
            }
            let kept = &top.ranked[..top.len];
            let at = kept.iter().position(|kept| before(&candidate, kept)).unwrap_or(kept.len());
            // Insert at `at` (below `n`: the last kept one ranks after the
            // candidate, or fewer than `n` are kept); with `n` kept, the
            // last one falls off. Moved one by one: a call to copy a few
            // entries cost more than the copy.
            let len = (top.len + 1).min(n);
            for slot in (at + 1..len).rev() {
                top.ranked[slot] = top.ranked[slot - 1];
            }
            top.ranked[at] = candidate;
            top.len = len;
        }
        top
    }
}

/// Most features [`Model::top_contributions`] ranks.
pub const MAX_TOP: usize = 8;

/// The features that moved a prediction most, largest first (at most
/// [`MAX_TOP`], kept inline).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopContributions {
    ranked: [Contribution; MAX_TOP],
    len: usize,
}

impl std::ops::Deref for TopContributions {
    type Target = [Contribution];

    fn deref(&self) -> &[Contribution] {
        &self.ranked[..self.len]
    }
}

impl IntoIterator for TopContributions {
    type Item = Contribution;
    type IntoIter = std::iter::Take<std::array::IntoIter<Contribution, MAX_TOP>>;

    fn into_iter(self) -> Self::IntoIter {
        self.ranked.into_iter().take(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::features::{Feature, MISSING};

    /// One split on `header_count` (<= 3 left) with NaN going right.
    pub(crate) fn stump() -> ModelFile {
        ModelFile {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            name: "stump".into(),
            features: FeatureSchema::current(),
            link: Link::Logistic,
            base_score: 0.5,
            trees: vec![TreeFile {
                feature: vec![Feature::HeaderCount as i32, -1, -1],
                threshold: vec![3.0, 0.0, 0.0],
                left: vec![1, 0, 0],
                right: vec![2, 0, 0],
                missing_left: vec![false, false, false],
                missing_zero: Vec::new(),
                value: vec![0.0, 2.0, -1.0],
            }],
            linear: None,
            training: TrainingInfo::default(),
        }
    }

    #[test]
    fn a_tree_is_walked_by_threshold_and_missing_side() {
        let model = stump().compile().unwrap();
        let mut x = MISSING;
        x[Feature::HeaderCount as usize] = 2.0;
        assert_eq!(model.raw(&x), 2.5);
        x[Feature::HeaderCount as usize] = 3.0;
        assert_eq!(model.raw(&x), 2.5, "equal to the threshold goes left");
        x[Feature::HeaderCount as usize] = 9.0;
        assert_eq!(model.raw(&x), -0.5);
        x[Feature::HeaderCount as usize] = f64::NAN;
        assert_eq!(model.raw(&x), -0.5);
        assert!((model.probability(&x) - 1.0 / (1.0 + 0.5f64.exp())).abs() < 1e-12);
        let mut contributions = [0.0; FEATURE_COUNT];
        let bias = model.contributions(&x, &mut contributions);
        assert_eq!(bias + contributions.iter().sum::<f64>(), model.raw(&x));
    }

    /// Feature vectors that probe every side of every split of `model`:
    /// each value its split's threshold, just above or below it, zero,
    /// minus zero, missing, infinite or arbitrary.
    fn probing_vectors(model: &Model, count: usize) -> Vec<FeatureVector> {
        let thresholds: Vec<(usize, f64)> = model
            .nodes
            .iter()
            .filter(|node| node.feature != LEAF)
            .map(|node| (node.feature as usize, node.threshold))
            .collect();
        let mut next = crate::test_support::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut vectors = Vec::new();
        for _ in 0..count {
            let mut x = MISSING;
            for (feature, value) in x.iter_mut().enumerate() {
                let near = thresholds.iter().filter(|(f, _)| *f == feature).map(|(_, t)| *t).nth((next() % 4) as usize);
                let near = near.unwrap_or(1.0);
                *value = match next() % 10 {
                    0 => f64::NAN,
                    1 => 0.0,
                    2 => -0.0,
                    3 => near,
                    4 => near.next_up(),
                    5 => near.next_down(),
                    6 => f64::INFINITY,
                    7 => f64::NEG_INFINITY,
                    _ => (next() % 2000) as f64 / 100.0 - 5.0,
                };
            }
            vectors.push(x);
        }
        vectors
    }

    /// The forest layout and the node walk give the same raw score and the
    /// same contributions, to the last bit.
    fn assert_layouts_agree(model: &Model, count: usize) {
        assert!(model.forest.is_some(), "{} is laid out as a forest", model.name);
        for x in probing_vectors(model, count) {
            let mut by_nodes = model.base_score;
            model.add_leaves_by_nodes(&x, &mut by_nodes);
            let mut by_forest = model.base_score;
            model.forest.as_ref().unwrap().add_leaves(&x, &mut by_forest);
            assert_eq!(by_forest.to_bits(), by_nodes.to_bits(), "{x:?}");

            let (mut nodes_bias, mut nodes_out) = (model.base_score, [0.0; FEATURE_COUNT]);
            model.contributions_by_nodes(&x, &mut nodes_bias, &mut nodes_out);
            let (mut forest_bias, mut forest_out) = (model.base_score, [0.0; FEATURE_COUNT]);
            model.forest.as_ref().unwrap().contributions(&x, &mut forest_bias, &mut forest_out);
            assert_eq!(forest_bias.to_bits(), nodes_bias.to_bits());
            assert_eq!(forest_out.map(f64::to_bits), nodes_out.map(f64::to_bits), "{x:?}");
        }
    }

    /// The top contributions are the first `n` of all nonzero ones sorted
    /// by |value|, ties to the lower feature, on the shipped model.
    #[test]
    fn top_contributions_are_the_sorted_contributions_cut_to_n() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/palisade-gbdt-v2.json");
        let model = Model::load(&path).unwrap();
        let mut ranked_some = false;
        for x in probing_vectors(&model, 500) {
            let mut all = [0.0; FEATURE_COUNT];
            model.contributions(&x, &mut all);
            let mut sorted: Vec<Contribution> = all
                .iter()
                .enumerate()
                .filter(|(_, value)| **value != 0.0)
                .map(|(feature, &value)| Contribution { feature, value })
                .collect();
            sorted.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()).then(a.feature.cmp(&b.feature)));
            for n in 0..=MAX_TOP + 1 {
                let top = model.top_contributions(&x, n);
                let expected = &sorted[..n.min(MAX_TOP).min(sorted.len())];
                assert_eq!(&*top, expected, "n = {n}");
                assert_eq!(top.into_iter().collect::<Vec<_>>(), expected);
                ranked_some |= expected.len() == MAX_TOP;
            }
        }
        assert!(ranked_some, "some vectors have at least MAX_TOP contributions");
    }

    #[test]
    fn contributions_along_kept_leaves_are_those_of_a_fresh_walk() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/palisade-gbdt-v2.json");
        let model = Model::load(&path).unwrap();
        let other = stump().compile().unwrap();
        let mut leaves = Leaves::default();
        for x in probing_vectors(&model, 500) {
            let kept = model.probability_keeping(&x, &mut leaves);
            assert_eq!(kept.to_bits(), model.probability(&x).to_bits());
            assert_eq!(model.top_contributions_along(&x, &leaves, MAX_TOP), model.top_contributions(&x, MAX_TOP));
            let (mut along, mut fresh) = ([0.0; FEATURE_COUNT], [0.0; FEATURE_COUNT]);
            let bias = model.contributions_kept(&x, Some(&leaves), &mut along);
            assert_eq!(bias.to_bits(), model.contributions(&x, &mut fresh).to_bits());
            assert_eq!(along.map(f64::to_bits), fresh.map(f64::to_bits));
            // Leaves kept by another model are not read as this one's.
            other.probability_keeping(&x, &mut leaves);
            assert_eq!(model.top_contributions_along(&x, &leaves, MAX_TOP), model.top_contributions(&x, MAX_TOP));
        }
    }

    #[test]
    fn the_shipped_model_is_laid_out_as_a_forest_that_agrees_with_the_node_walk() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/palisade-gbdt-v2.json");
        let model = Model::load(&path).unwrap();
        assert_layouts_agree(&model, 3000);
    }

    /// Uneven depths, every missing side and zero-as-missing, a tree that
    /// is a single leaf.
    #[test]
    fn uneven_trees_and_every_missing_rule_agree_with_the_node_walk() {
        let mut file = stump();
        let f = |feature: Feature| feature as i32;
        file.trees.push(TreeFile {
            feature: vec![
                f(Feature::IpRequests10s),
                f(Feature::HasCookie),
                -1,
                f(Feature::SecFetchHeaders),
                -1,
                -1,
                -1,
            ],
            threshold: vec![5.0, 0.5, 0.0, 2.0, 0.0, 0.0, 0.0],
            left: vec![1, 3, 0, 5, 0, 0, 0],
            right: vec![2, 4, 0, 6, 0, 0, 0],
            missing_left: vec![true, false, false, true, false, false, false],
            missing_zero: vec![false, true, false, true, false, false, false],
            value: vec![0.1, 0.2, -0.7, 0.3, 0.05, 1.5, -0.25],
        });
        file.trees.push(TreeFile {
            feature: vec![-1],
            threshold: vec![0.0],
            left: vec![0],
            right: vec![0],
            missing_left: vec![false],
            missing_zero: Vec::new(),
            value: vec![0.125],
        });
        let model = file.compile().unwrap();
        assert_layouts_agree(&model, 3000);
        // Nine trees more make a group of eight and a rest.
        for _ in 0..9 {
            file.trees.push(file.trees[1].clone());
        }
        assert_layouts_agree(&file.compile().unwrap(), 500);
    }

    #[test]
    fn infinite_thresholds_and_deep_trees_are_walked_node_by_node() {
        let mut file = stump();
        file.trees[0].threshold[0] = f64::INFINITY;
        let model = file.compile().unwrap();
        assert!(model.forest.is_none());
        let mut x = MISSING;
        x[Feature::HeaderCount as usize] = 1e300;
        assert_eq!(model.raw(&x), 2.5);

        // A chain of ten splits.
        let mut deep = TreeFile::default();
        for i in 0..10u32 {
            deep.feature.push(Feature::HeaderCount as i32);
            deep.threshold.push(f64::from(i));
            deep.left.push(2 * i + 1);
            deep.right.push(2 * i + 2);
            deep.missing_left.push(false);
            deep.value.push(0.0);
            deep.feature.push(-1);
            deep.threshold.push(0.0);
            deep.left.push(0);
            deep.right.push(0);
            deep.missing_left.push(false);
            deep.value.push(f64::from(i));
        }
        deep.feature.push(-1);
        deep.threshold.push(0.0);
        deep.left.push(0);
        deep.right.push(0);
        deep.missing_left.push(false);
        deep.value.push(100.0);
        let mut file = stump();
        file.trees = vec![deep];
        file.base_score = 0.0;
        let model = file.compile().unwrap();
        assert!(model.forest.is_none());
        x[Feature::HeaderCount as usize] = 4.5;
        assert_eq!(model.raw(&x), 5.0);
        x[Feature::HeaderCount as usize] = 50.0;
        assert_eq!(model.raw(&x), 100.0);
    }

    #[test]
    fn the_file_round_trips_byte_for_byte() {
        let file = stump();
        let text = file.to_json();
        let again = ModelFile::parse(&text).unwrap();
        assert_eq!(again, file);
        assert_eq!(again.to_json(), text);
    }

    #[test]
    fn another_feature_schema_is_refused_with_a_clear_message() {
        let mut file = stump();
        file.features.names[2] = "header_total".into();
        let error = file.compile().unwrap_err();
        assert_eq!(error.kind, ModelErrorKind::SchemaMismatch);
        assert!(error.message.contains("edited"), "{}", error.message);
        file.features.hash =
            crate::model::features::hash_of(SCHEMA_VERSION, file.features.names.iter().map(String::as_str));
        let error = file.compile().unwrap_err();
        assert_eq!(error.kind, ModelErrorKind::SchemaMismatch);
        assert!(error.message.contains("first difference at feature 2"), "{}", error.message);
        assert!(error.message.contains("palisade train"), "{}", error.message);
    }

    #[test]
    fn loops_and_bad_indices_are_refused() {
        let mut file = stump();
        file.trees[0].left[0] = 0;
        assert_eq!(file.compile().unwrap_err().kind, ModelErrorKind::Invalid);
        let mut file = stump();
        file.trees[0].feature[0] = FEATURE_COUNT as i32;
        assert_eq!(file.compile().unwrap_err().kind, ModelErrorKind::Invalid);
        let mut file = stump();
        file.trees[0].value.pop();
        assert_eq!(file.compile().unwrap_err().kind, ModelErrorKind::Invalid);
    }
}
