//! The trainer: gradient-boosted trees (the default) and logistic
//! regression, in pure Rust, deterministic for a given seed.
//!
//! Rows are feature vectors with a label (1 = bot, 0 = person or partner)
//! and the source that produced them. The split is by source: a source
//! named by a `--test-source` pattern is held out whole, so no tool,
//! browser or app appears on both sides and the test measures how the
//! model does on traffic it has never seen.
//!
//! Trees are grown level by level on binned features (at most
//! [`MAX_BINS`] value bins per feature, chosen by quantile, plus one bin
//! for missing values): each split is the best second-order gain on the
//! logistic loss, with the missing bin tried on both sides. Everything is
//! single-threaded and iterates in a fixed order, so the same rows and
//! seed give the same model, byte for byte.

use std::collections::BTreeMap;

use super::features::{FEATURE_COUNT, FEATURES, FeatureVector};
use super::file::{FORMAT, FORMAT_VERSION, FeatureSchema, LinearFile, Link, Model, ModelFile, TrainingInfo, TreeFile};

/// Value bins per feature, not counting the missing bin.
pub const MAX_BINS: usize = 63;

/// Labelled feature vectors.
#[derive(Debug, Default, Clone)]
pub struct Dataset {
    pub x: Vec<FeatureVector>,
    /// 1.0 = bot, 0.0 = person or partner.
    pub y: Vec<f64>,
    /// Index into `sources`.
    pub source: Vec<usize>,
    pub sources: Vec<String>,
}

impl Dataset {
    pub fn push(&mut self, x: FeatureVector, bot: bool, source: &str) {
        let index = match self.sources.iter().position(|s| s == source) {
            Some(index) => index,
            None => {
                self.sources.push(source.to_string());
                self.sources.len() - 1
            }
        };
        self.x.push(x);
        self.y.push(if bot { 1.0 } else { 0.0 });
        self.source.push(index);
    }

    pub fn len(&self) -> usize {
        self.x.len()
    }

    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// Rows of the sources `held_out` says yes to, and the others.
    pub fn split_by_source(&self, held_out: impl Fn(&str) -> bool) -> (Dataset, Dataset) {
        let mut train = Dataset::default();
        let mut test = Dataset::default();
        for i in 0..self.len() {
            let source = &self.sources[self.source[i]];
            let side = if held_out(source) { &mut test } else { &mut train };
            side.push(self.x[i], self.y[i] > 0.5, source);
        }
        (train, test)
    }
}

/// Which learner, with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Learner {
    Trees(TreeParams),
    Logistic(LogisticParams),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeParams {
    pub trees: usize,
    pub depth: usize,
    pub learning_rate: f64,
    /// Least hessian (≈ rows × p(1−p)) on each side of a split.
    pub min_child_weight: f64,
    /// L2 regularization of leaf values.
    pub lambda: f64,
    /// Share of rows each tree sees.
    pub subsample: f64,
}

impl Default for TreeParams {
    fn default() -> Self {
        TreeParams { trees: 120, depth: 4, learning_rate: 0.15, min_child_weight: 2.0, lambda: 1.0, subsample: 0.8 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticParams {
    pub iterations: usize,
    pub learning_rate: f64,
    pub l2: f64,
}

impl Default for LogisticParams {
    fn default() -> Self {
        LogisticParams { iterations: 400, learning_rate: 0.5, l2: 0.001 }
    }
}

/// A small deterministic generator (SplitMix64) for row subsampling.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sigmoid(raw: f64) -> f64 {
    1.0 / (1.0 + (-raw).exp())
}

/// Train a model on `data`.
pub fn train(data: &Dataset, learner: Learner, seed: u64, name: &str) -> ModelFile {
    let positives = data.y.iter().sum::<f64>();
    let rate = ((positives + 0.5) / (data.len() as f64 + 1.0)).clamp(1e-6, 1.0 - 1e-6);
    let base_score = (rate / (1.0 - rate)).ln();
    let mut file = ModelFile {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        name: name.into(),
        features: FeatureSchema::current(),
        link: Link::Logistic,
        base_score,
        trees: Vec::new(),
        linear: None,
        training: TrainingInfo { seed: Some(seed), ..TrainingInfo::default() },
    };
    let importance = match learner {
        Learner::Trees(params) => {
            let (trees, gain) = boost(data, &params, base_score, seed);
            file.trees = trees;
            file.training.params = BTreeMap::from([
                ("trees".to_string(), params.trees as f64),
                ("depth".to_string(), params.depth as f64),
                ("learning_rate".to_string(), params.learning_rate),
                ("min_child_weight".to_string(), params.min_child_weight),
                ("lambda".to_string(), params.lambda),
                ("subsample".to_string(), params.subsample),
            ]);
            gain
        }
        Learner::Logistic(params) => {
            let (linear, bias) = logistic(data, &params, base_score);
            file.base_score = bias;
            let weights = linear.weights.iter().map(|w| w.abs()).collect::<Vec<_>>();
            file.linear = Some(linear);
            file.training.params = BTreeMap::from([
                ("iterations".to_string(), params.iterations as f64),
                ("learning_rate".to_string(), params.learning_rate),
                ("l2".to_string(), params.l2),
            ]);
            weights
        }
    };
    let mut ranked: Vec<(String, f64)> = importance
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0.0)
        .map(|(i, v)| (FEATURES[i].name.to_string(), round6(*v)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(15);
    file.training.top_features = ranked;
    file
}

fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

// === impl boosting ===

/// Per-feature cut points: a value `x` falls in bin `1 + #cuts < x`; bin 0
/// holds missing values.
struct Bins {
    cuts: Vec<Vec<f64>>,
    /// Row-major bin indices, `FEATURE_COUNT` per row.
    binned: Vec<u8>,
}

fn make_bins(data: &Dataset) -> Bins {
    let mut cuts = Vec::with_capacity(FEATURE_COUNT);
    for feature in 0..FEATURE_COUNT {
        let mut values: Vec<f64> = data.x.iter().map(|x| x[feature]).filter(|v| !v.is_nan()).collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        let feature_cuts: Vec<f64> = if values.len() <= MAX_BINS + 1 {
            values.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect()
        } else {
            // Quantiles of the distinct values, cut halfway to the next one.
            let mut chosen = Vec::with_capacity(MAX_BINS);
            for k in 1..=MAX_BINS {
                let at = k * (values.len() - 1) / (MAX_BINS + 1);
                let cut = (values[at] + values[at + 1]) / 2.0;
                if chosen.last() != Some(&cut) {
                    chosen.push(cut);
                }
            }
            chosen
        };
        cuts.push(feature_cuts);
    }
    let mut binned = Vec::with_capacity(data.len() * FEATURE_COUNT);
    for x in &data.x {
        for (feature, cuts) in cuts.iter().enumerate() {
            let value = x[feature];
            let bin = if value.is_nan() { 0 } else { 1 + cuts.partition_point(|c| *c < value) };
            binned.push(bin as u8);
        }
    }
    Bins { cuts, binned }
}

/// Gradient and hessian sums of one bin.
#[derive(Clone, Copy, Default)]
struct Sums {
    g: f64,
    h: f64,
}

struct Split {
    feature: usize,
    /// Bins 1..=bin go left.
    bin: usize,
    missing_left: bool,
    gain: f64,
}

fn score(g: f64, h: f64, lambda: f64) -> f64 {
    g * g / (h + lambda)
}

fn best_split(bins: &Bins, rows: &[u32], grad: &[f64], hess: &[f64], params: &TreeParams) -> Option<Split> {
    let mut best: Option<Split> = None;
    let mut histogram = [Sums::default(); MAX_BINS + 2];
    let (total_g, total_h) = rows.iter().fold((0.0, 0.0), |(g, h), &r| (g + grad[r as usize], h + hess[r as usize]));
    let parent = score(total_g, total_h, params.lambda);
    for feature in 0..FEATURE_COUNT {
        let cut_count = bins.cuts[feature].len();
        if cut_count == 0 {
            continue;
        }
        histogram[..cut_count + 2].fill(Sums::default());
        for &row in rows {
            let bin = bins.binned[row as usize * FEATURE_COUNT + feature] as usize;
            histogram[bin].g += grad[row as usize];
            histogram[bin].h += hess[row as usize];
        }
        let missing = histogram[0];
        let (mut left_g, mut left_h) = (0.0, 0.0);
        for (bin, sums) in histogram.iter().enumerate().take(cut_count + 1).skip(1) {
            left_g += sums.g;
            left_h += sums.h;
            for missing_left in [false, true] {
                let (lg, lh) = if missing_left { (left_g + missing.g, left_h + missing.h) } else { (left_g, left_h) };
                let (rg, rh) = (total_g - lg, total_h - lh);
                if lh < params.min_child_weight || rh < params.min_child_weight {
                    continue;
                }
                let gain = score(lg, lh, params.lambda) + score(rg, rh, params.lambda) - parent;
                if gain > 1e-9 && best.as_ref().is_none_or(|b| gain > b.gain) {
                    best = Some(Split { feature, bin, missing_left, gain });
                }
            }
        }
    }
    best
}

/// Grow one tree on `rows`; returns it and adds split gains to `importance`.
fn grow(
    bins: &Bins,
    rows: Vec<u32>,
    grad: &[f64],
    hess: &[f64],
    params: &TreeParams,
    importance: &mut [f64; FEATURE_COUNT],
) -> TreeFile {
    let mut tree = TreeFile::default();
    // (node index, its rows, its depth), grown depth-first so children
    // always come after their parent.
    let mut stack: Vec<(usize, Vec<u32>, usize)> = Vec::new();
    push_leaf(&mut tree, &rows, grad, hess, params);
    stack.push((0, rows, 0));
    while let Some((node, rows, depth)) = stack.pop() {
        if depth >= params.depth {
            continue;
        }
        let Some(split) = best_split(bins, &rows, grad, hess, params) else { continue };
        importance[split.feature] += split.gain;
        let goes_left = |row: u32| {
            let bin = bins.binned[row as usize * FEATURE_COUNT + split.feature] as usize;
            if bin == 0 { split.missing_left } else { bin <= split.bin }
        };
        let (left_rows, right_rows): (Vec<u32>, Vec<u32>) = rows.iter().partition(|&&r| goes_left(r));
        tree.feature[node] = split.feature as i32;
        tree.threshold[node] = bins.cuts[split.feature][split.bin - 1];
        tree.missing_left[node] = split.missing_left;
        let left = tree.feature.len();
        push_leaf(&mut tree, &left_rows, grad, hess, params);
        let right = tree.feature.len();
        push_leaf(&mut tree, &right_rows, grad, hess, params);
        tree.left[node] = left as u32;
        tree.right[node] = right as u32;
        stack.push((right, right_rows, depth + 1));
        stack.push((left, left_rows, depth + 1));
    }
    tree
}

/// A leaf (until it is split) with the Newton step of its rows.
fn push_leaf(tree: &mut TreeFile, rows: &[u32], grad: &[f64], hess: &[f64], params: &TreeParams) {
    let (g, h) = rows.iter().fold((0.0, 0.0), |(g, h), &r| (g + grad[r as usize], h + hess[r as usize]));
    tree.feature.push(-1);
    tree.threshold.push(0.0);
    tree.left.push(0);
    tree.right.push(0);
    tree.missing_left.push(false);
    tree.value.push(-g / (h + params.lambda) * params.learning_rate);
}

fn boost(data: &Dataset, params: &TreeParams, base_score: f64, seed: u64) -> (Vec<TreeFile>, Vec<f64>) {
    let bins = make_bins(data);
    let n = data.len();
    let mut raw = vec![base_score; n];
    let mut grad = vec![0.0; n];
    let mut hess = vec![0.0; n];
    let mut importance = [0.0; FEATURE_COUNT];
    let mut random = SplitMix64::new(seed);
    let mut trees = Vec::with_capacity(params.trees);
    for _ in 0..params.trees {
        for i in 0..n {
            let p = sigmoid(raw[i]);
            grad[i] = p - data.y[i];
            hess[i] = (p * (1.0 - p)).max(1e-12);
        }
        let rows: Vec<u32> = (0..n as u32).filter(|_| random.next_f64() < params.subsample).collect();
        let tree = grow(&bins, rows, &grad, &hess, params, &mut importance);
        let compiled = ModelFile {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            name: String::new(),
            features: FeatureSchema::current(),
            link: Link::Logistic,
            base_score: 0.0,
            trees: vec![tree.clone()],
            linear: None,
            training: TrainingInfo::default(),
        }
        .compile();
        if let Ok(one) = compiled {
            for (raw, x) in raw.iter_mut().zip(&data.x) {
                *raw += one.raw(x);
            }
        }
        trees.push(tree);
    }
    (trees, importance.to_vec())
}

// === impl logistic regression ===

fn logistic(data: &Dataset, params: &LogisticParams, base_score: f64) -> (LinearFile, f64) {
    let n = data.len().max(1) as f64;
    let mut mean = vec![0.0; FEATURE_COUNT];
    let mut scale = vec![1.0; FEATURE_COUNT];
    for f in 0..FEATURE_COUNT {
        let values: Vec<f64> = data.x.iter().map(|x| x[f]).filter(|v| !v.is_nan()).collect();
        if values.is_empty() {
            continue;
        }
        let m = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / values.len() as f64;
        mean[f] = m;
        scale[f] = if var.sqrt() > 1e-9 { var.sqrt() } else { 1.0 };
    }
    let z: Vec<[f64; FEATURE_COUNT]> = data
        .x
        .iter()
        .map(|x| {
            let mut row = [0.0; FEATURE_COUNT];
            for f in 0..FEATURE_COUNT {
                if !x[f].is_nan() {
                    row[f] = (x[f] - mean[f]) / scale[f];
                }
            }
            row
        })
        .collect();
    let mut weights = [0.0; FEATURE_COUNT];
    let mut bias = base_score;
    for _ in 0..params.iterations {
        let mut grad_w = [0.0; FEATURE_COUNT];
        let mut grad_b = 0.0;
        for (row, y) in z.iter().zip(&data.y) {
            let raw = bias + row.iter().zip(&weights).map(|(a, b)| a * b).sum::<f64>();
            let error = sigmoid(raw) - y;
            grad_b += error;
            for f in 0..FEATURE_COUNT {
                grad_w[f] += error * row[f];
            }
        }
        bias -= params.learning_rate * grad_b / n;
        for f in 0..FEATURE_COUNT {
            weights[f] -= params.learning_rate * (grad_w[f] / n + params.l2 * weights[f]);
        }
    }
    (LinearFile { mean, scale, weights: weights.to_vec() }, bias)
}

// === impl evaluation ===

/// Held-out metrics of probabilities `p` against labels `y`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub rows: usize,
    pub bots: usize,
    pub precision: f64,
    pub recall: f64,
    pub false_positive_rate: f64,
    pub roc_auc: f64,
    /// Recall with the threshold set where at most 0.1 % of the negatives score above it.
    pub recall_at_fpr_0_1pct: f64,
    pub threshold_at_fpr_0_1pct: f64,
    pub brier: f64,
    /// Expected calibration error over ten probability bins.
    pub calibration_error: f64,
    /// (mean predicted, observed bot share, rows) per probability decile.
    pub calibration: Vec<(f64, f64, usize)>,
}

pub fn evaluate(p: &[f64], y: &[f64], threshold: f64) -> Metrics {
    let rows = p.len();
    let bots = y.iter().filter(|v| **v > 0.5).count();
    let negatives = rows - bots;
    let predicted = |t: f64| p.iter().zip(y).filter(move |(p, _)| **p >= t);
    let true_positive = predicted(threshold).filter(|(_, y)| **y > 0.5).count();
    let false_positive = predicted(threshold).filter(|(_, y)| **y <= 0.5).count();
    let ratio = |a: usize, b: usize| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
    let mut negative_scores: Vec<f64> = p.iter().zip(y).filter(|(_, y)| **y <= 0.5).map(|(p, _)| *p).collect();
    negative_scores.sort_by(|a, b| b.total_cmp(a));
    // The strictest threshold that lets at most 0.1 % of negatives above it.
    let allowed = negatives / 1000;
    let threshold_low_fpr = negative_scores.get(allowed).copied().unwrap_or(0.0);
    let recall_low_fpr = ratio(p.iter().zip(y).filter(|(p, y)| **y > 0.5 && **p > threshold_low_fpr).count(), bots);
    let mut calibration = Vec::new();
    let mut calibration_error = 0.0;
    for decile in 0..10 {
        let (low, high) = (decile as f64 / 10.0, (decile + 1) as f64 / 10.0);
        let members: Vec<(f64, f64)> = p
            .iter()
            .zip(y)
            .filter(|(p, _)| **p >= low && (**p < high || (decile == 9 && **p <= 1.0)))
            .map(|(p, y)| (*p, *y))
            .collect();
        if members.is_empty() {
            continue;
        }
        let mean_p = members.iter().map(|m| m.0).sum::<f64>() / members.len() as f64;
        let observed = members.iter().map(|m| m.1).sum::<f64>() / members.len() as f64;
        calibration_error += (mean_p - observed).abs() * members.len() as f64 / rows as f64;
        calibration.push((mean_p, observed, members.len()));
    }
    Metrics {
        rows,
        bots,
        precision: ratio(true_positive, true_positive + false_positive),
        recall: ratio(true_positive, bots),
        false_positive_rate: ratio(false_positive, negatives),
        roc_auc: roc_auc(p, y),
        recall_at_fpr_0_1pct: recall_low_fpr,
        threshold_at_fpr_0_1pct: threshold_low_fpr,
        brier: p.iter().zip(y).map(|(p, y)| (p - y) * (p - y)).sum::<f64>() / rows.max(1) as f64,
        calibration_error,
        calibration,
    }
}

/// Area under the ROC curve by ranks (ties share their mean rank).
pub fn roc_auc(p: &[f64], y: &[f64]) -> f64 {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && p[order[j + 1]] == p[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if y[k] > 0.5 {
                rank_sum += mean_rank;
            }
        }
        i = j + 1;
    }
    let positives = y.iter().filter(|v| **v > 0.5).count() as f64;
    let negatives = p.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// Probabilities of a compiled model over a dataset.
pub fn predict(model: &Model, data: &Dataset) -> Vec<f64> {
    data.x.iter().map(|x| model.probability(x)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::features::{Feature, MISSING};

    /// Bots send few headers and no Accept-Language; people the opposite.
    /// Missing header counts are bots too.
    fn toy(seed: u64, rows: usize) -> Dataset {
        let mut random = SplitMix64::new(seed);
        let mut data = Dataset::default();
        for i in 0..rows {
            let bot = i % 3 == 0;
            let mut x = MISSING;
            x[Feature::HeaderCount as usize] =
                if bot { 2.0 + (random.next_f64() * 4.0).floor() } else { 7.0 + (random.next_f64() * 8.0).floor() };
            if bot && i % 5 == 0 {
                x[Feature::HeaderCount as usize] = f64::NAN;
            }
            x[Feature::HasAcceptLanguage as usize] = if bot == (random.next_f64() < 0.9) { 0.0 } else { 1.0 };
            x[Feature::UaLength as usize] = (random.next_f64() * 100.0).floor();
            data.push(x, bot, if bot { "tool" } else { "browser" });
        }
        data
    }

    #[test]
    fn trees_learn_a_separable_rule_and_send_missing_values_the_right_way() {
        let data = toy(1, 600);
        let file = train(&data, Learner::Trees(TreeParams { trees: 30, ..TreeParams::default() }), 7, "toy");
        let model = file.compile().unwrap();
        let metrics = evaluate(&predict(&model, &toy(2, 300)), &toy(2, 300).y, 0.5);
        assert!(metrics.roc_auc > 0.99, "{metrics:?}");
        assert!(metrics.recall > 0.95 && metrics.precision > 0.95, "{metrics:?}");
        let mut missing = MISSING;
        missing[Feature::HasAcceptLanguage as usize] = 0.0;
        assert!(model.probability(&missing) > 0.5, "a missing header count was seen on bots only");
        assert_eq!(file.training.top_features[0].0, "header_count");
    }

    #[test]
    fn the_same_rows_and_seed_give_the_same_bytes() {
        let data = toy(3, 400);
        let learner = Learner::Trees(TreeParams { trees: 10, ..TreeParams::default() });
        assert_eq!(train(&data, learner, 5, "a").to_json(), train(&data, learner, 5, "a").to_json());
        assert_ne!(train(&data, learner, 5, "a").to_json(), train(&data, learner, 6, "a").to_json());
    }

    #[test]
    fn logistic_regression_learns_the_same_rule() {
        let data = toy(4, 600);
        let file = train(&data, Learner::Logistic(LogisticParams::default()), 0, "lr");
        let model = file.compile().unwrap();
        let test = toy(5, 300);
        let metrics = evaluate(&predict(&model, &test), &test.y, 0.5);
        assert!(metrics.roc_auc > 0.97, "{metrics:?}");
    }

    #[test]
    fn auc_and_low_fpr_recall_by_hand() {
        let p = [0.1, 0.4, 0.35, 0.8];
        let y = [0.0, 0.0, 1.0, 1.0];
        assert!((roc_auc(&p, &y) - 0.75).abs() < 1e-12);
        let metrics = evaluate(&p, &y, 0.5);
        assert_eq!(metrics.threshold_at_fpr_0_1pct, 0.4);
        assert_eq!(metrics.recall_at_fpr_0_1pct, 0.5);
        assert_eq!((metrics.precision, metrics.recall), (1.0, 0.5));
    }

    #[test]
    fn split_by_source_keeps_a_source_on_one_side() {
        let data = toy(6, 90);
        let (train, test) = data.split_by_source(|s| s == "tool");
        assert!(train.sources.iter().all(|s| s != "tool"));
        assert!(test.sources.iter().all(|s| s == "tool"));
        assert_eq!(train.len() + test.len(), 90);
    }
}
