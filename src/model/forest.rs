//! The trees laid out for speed: every tree padded to a complete binary
//! tree of the forest's depth, its nodes in flat arrays, walked without a
//! branch per node and several trees at a time.
//!
//! A tree walked node by node takes a data-dependent branch at every
//! split, and a mispredicted branch costs more than the rest of the
//! split together (the shipped model's 480 splits a request took ~840 ns
//! that way). Here a split is one load, one comparison and an index
//! update — `at = 2·at + 1 + (x > threshold)` — and trees are walked in
//! groups of [`GROUP`], level by level, so their chains of loads overlap.
//!
//! Missing values need no test per split: before walking, the feature
//! vector is copied into up to four variants (`NaN` → +∞ and `NaN` → −∞,
//! and, for LightGBM's `zero_as_missing`, the same with zeros too), and a
//! split reads the variant that sends a missing value the side it
//! learned: +∞ is above every finite threshold (right), −∞ below (left).
//! That holds only for finite thresholds, so a model with an infinite one
//! is not laid out here ([`Forest::build`] says `None`) and is walked node
//! by node instead.
//!
//! Padding copies a leaf reached early into the whole subtree below it,
//! so whichever way the filler splits go, the walk ends at that leaf's
//! value: the forest gives every tree the same leaf as the node walk, and
//! the raw score adds the leaves in tree order, so it is the same number
//! to the last bit.

use super::features::{FEATURE_COUNT, FeatureVector};

/// Deepest forest laid out here: a complete tree of depth 8 has 255
/// splits and 256 leaves (6 KiB); deeper trees are walked node by node.
pub const MAX_DEPTH: u32 = 8;

/// Trees walked together: enough independent chains of loads to keep the
/// core busy, few enough that their positions stay in registers.
const GROUP: usize = 8;

/// Padded trees may hold at most this many times the nodes of the
/// originals (a forest of a few deep, thin trees is walked node by node).
const MAX_GROWTH: usize = 8;

/// Most steps [`Forest::paths`] holds (16 bytes each: 16 MiB); a larger
/// forest (hundreds of trees of depth 8) keeps none, and its
/// contributions are walked node by node.
const MAX_PATH_STEPS: usize = 1 << 20;

/// One node of a tree as the model file describes it.
#[derive(Debug, Clone, Copy)]
pub enum NodeDef {
    Leaf {
        value: f64,
    },
    Split {
        feature: usize,
        threshold: f64,
        missing_left: bool,
        missing_zero: bool,
        /// Mean output below the split (what contributions are measured against).
        value: f64,
        left: u32,
        right: u32,
    },
}

/// Which copy of the feature vector a split reads (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `NaN` → +∞: missing goes right.
    High = 0,
    /// `NaN` → −∞: missing goes left.
    Low = 1,
    /// `NaN` and zero → +∞.
    ZeroHigh = 2,
    /// `NaN` and zero → −∞.
    ZeroLow = 3,
}

/// The padded trees, tree-major, each tree `stride` (`2^depth`) entries
/// long: tree `t`'s splits are `t·stride + i` for `i < stride − 1`, in
/// breadth-first order (the children of `i` are `2i+1` and `2i+2`; the
/// last entry is unused), and its leaves `t·stride + j`.
#[derive(Debug, Clone)]
pub struct Forest {
    depth: u32,
    trees: usize,
    /// Per split: `variant · FEATURE_COUNT + feature`, an index into the
    /// variants of the feature vector laid end to end. A byte, so that it
    /// needs no bounds check in an array of 256 (64 features at most: a
    /// larger table is walked node by node, and the shipped model's test
    /// says so).
    read: Vec<u8>,
    threshold: Vec<f64>,
    /// Per split: the mean output below it (the roots' are the bias of
    /// contributions).
    mean: Vec<f64>,
    leaf: Vec<f64>,
    /// Per leaf, tree-major, each tree `stride · depth` entries long: the
    /// steps of the path from the root down to that leaf, root first —
    /// each node's value minus its parent's ([`Step::delta`]) and the
    /// parent's feature — which a contribution walk adds up. A path is one
    /// run of memory (a cache line at depth 4), and subtracting once at
    /// load gives the very number the walk subtracted per request.
    paths: Vec<Step>,
    /// Whether any split treats zero as missing (the two variants that
    /// do are made only then).
    zero_missing: bool,
}

/// One step of a path: the change of the node value a split made, and the
/// split's feature (the contribution it goes to).
#[derive(Debug, Clone, Copy, Default)]
struct Step {
    delta: f64,
    feature: u8,
}

/// `$body` with `$stride` a constant: the stride (`2^depth` leaves) of a
/// forest of depth `$depth`, so that walks unroll and positions masked to
/// a tree's stride need no bounds checks (deeper than 8 is never laid out).
macro_rules! by_stride {
    ($depth:expr, $stride:ident => $body:expr) => {
        match $depth {
            0 => {
                const $stride: usize = 1;
                $body
            }
            1 => {
                const $stride: usize = 2;
                $body
            }
            2 => {
                const $stride: usize = 4;
                $body
            }
            3 => {
                const $stride: usize = 8;
                $body
            }
            4 => {
                const $stride: usize = 16;
                $body
            }
            5 => {
                const $stride: usize = 32;
                $body
            }
            6 => {
                const $stride: usize = 64;
                $body
            }
            7 => {
                const $stride: usize = 128;
                $body
            }
            _ => {
                const $stride: usize = 256;
                $body
            }
        }
    };
}

/// The feature vector's variants laid end to end (and unused entries up
/// to 256, what a byte indexes).
type Variants = [f64; 256];

/// Most trees whose leaves [`Leaves`] keeps (a larger forest's
/// contributions walk the trees again).
pub const MAX_KEPT_LEAVES: usize = 1024;

/// The leaf each tree sent one feature vector to (its breadth-first
/// position), kept by inference so that the contributions of the same
/// vector read the paths without walking the trees a second time. Inline,
/// so keeping them allocates nothing.
#[derive(Debug, Clone)]
pub struct Leaves {
    at: [u16; MAX_KEPT_LEAVES],
    /// Trees kept; 0 when nothing was (see [`Leaves::of`]).
    len: usize,
}

impl Default for Leaves {
    fn default() -> Self {
        Leaves { at: [0; MAX_KEPT_LEAVES], len: 0 }
    }
}

impl Leaves {
    /// Keep nothing (a model walked node by node).
    pub fn forget(&mut self) {
        self.len = 0;
    }

    /// The kept leaves, when they are those of a forest of `trees` trees.
    fn of(&self, trees: usize) -> Option<&[u16]> {
        (self.len == trees && trees > 0).then(|| &self.at[..trees])
    }
}

impl Forest {
    /// Lay out the trees rooted at `roots`, reading nodes through `node`;
    /// `None` when the trees are too deep or a threshold is not finite,
    /// and the caller walks them node by node.
    pub fn build(roots: &[u32], node: impl Fn(u32) -> NodeDef) -> Option<Forest> {
        if 4 * FEATURE_COUNT > 256 {
            return None;
        }
        let mut depth = 0;
        let mut original = 0usize;
        for &root in roots {
            let (tree_depth, nodes) = measure(&node, root, 0)?;
            depth = depth.max(tree_depth);
            original += nodes;
        }
        let stride = 1usize << depth;
        if roots.len().saturating_mul(2 * stride) > original.saturating_mul(MAX_GROWTH).max(1 << 12) {
            return None;
        }
        let mut forest = Forest {
            depth,
            trees: roots.len(),
            read: vec![0; roots.len() * stride],
            threshold: vec![0.0; roots.len() * stride],
            mean: vec![0.0; roots.len() * stride],
            leaf: vec![0.0; roots.len() * stride],
            paths: Vec::new(),
            zero_missing: false,
        };
        for (tree, &root) in roots.iter().enumerate() {
            forest.place(&node, root, tree, 0, 0)?;
        }
        forest.place_paths();
        Some(forest)
    }

    /// The value of the node at breadth-first position `at` of `tree`
    /// (a split's mean, or a leaf's output).
    fn value_at(&self, tree: usize, at: usize) -> f64 {
        let stride = 1usize << self.depth;
        if at < stride - 1 { self.mean[tree * stride + at] } else { self.leaf[tree * stride + at + 1 - stride] }
    }

    /// Fill [`Forest::paths`] from the placed splits and leaves.
    fn place_paths(&mut self) {
        let stride = 1usize << self.depth;
        let levels = self.depth as usize;
        let steps = self.trees * stride * levels;
        if steps > MAX_PATH_STEPS {
            return;
        }
        self.paths = vec![Step::default(); steps];
        for tree in 0..self.trees {
            for leaf in 0..stride {
                // Counting positions from 1, a node's children are 2n and
                // 2n + 1: the node `k` levels below the root on the way to
                // the leaf is `n >> (levels − k)`.
                let node = stride + leaf;
                for level in 1..=levels {
                    let at = (node >> (levels - level)) - 1;
                    let parent = (at - 1) / 2;
                    let feature = self.read[tree * stride + parent] % FEATURE_COUNT as u8;
                    let delta = self.value_at(tree, at) - self.value_at(tree, parent);
                    self.paths[(tree * stride + leaf) * levels + level - 1] = Step { delta, feature };
                }
            }
        }
    }

    /// Put node `id` (and what is below it) at position `at` of `tree`,
    /// `level` splits below the root.
    fn place(&mut self, node: &impl Fn(u32) -> NodeDef, id: u32, tree: usize, at: usize, level: u32) -> Option<()> {
        let stride = 1usize << self.depth;
        if level == self.depth {
            // A leaf position: the walk ends here.
            let NodeDef::Leaf { value } = node(id) else { return None };
            self.leaf[tree * stride + at + 1 - stride] = value;
            return Some(());
        }
        let slot = tree * stride + at;
        match node(id) {
            NodeDef::Leaf { value } => {
                // A filler split: both sides lead to this leaf again.
                self.read[slot] = 0;
                self.threshold[slot] = 0.0;
                self.mean[slot] = value;
                self.place(node, id, tree, 2 * at + 1, level + 1)?;
                self.place(node, id, tree, 2 * at + 2, level + 1)
            }
            NodeDef::Split { feature, threshold, missing_left, missing_zero, value, left, right } => {
                let variant = match (missing_zero, missing_left) {
                    (false, false) => Variant::High,
                    (false, true) => Variant::Low,
                    (true, false) => Variant::ZeroHigh,
                    (true, true) => Variant::ZeroLow,
                };
                self.zero_missing |= missing_zero;
                self.read[slot] = u8::try_from(variant as usize * FEATURE_COUNT + feature).ok()?;
                self.threshold[slot] = threshold;
                self.mean[slot] = value;
                self.place(node, left, tree, 2 * at + 1, level + 1)?;
                self.place(node, right, tree, 2 * at + 2, level + 1)
            }
        }
    }

    /// The copies of `x` the splits read.
    #[inline]
    fn variants(&self, x: &FeatureVector) -> Variants {
        let mut out = [0.0; 256];
        let (high, rest) = out.split_at_mut(FEATURE_COUNT);
        let (low, rest) = rest.split_at_mut(FEATURE_COUNT);
        for ((high, low), &value) in high.iter_mut().zip(low.iter_mut()).zip(x) {
            let missing = value.is_nan();
            *high = if missing { f64::INFINITY } else { value };
            *low = if missing { f64::NEG_INFINITY } else { value };
        }
        if self.zero_missing {
            let (high, rest) = rest.split_at_mut(FEATURE_COUNT);
            let low = &mut rest[..FEATURE_COUNT];
            for ((high, low), &value) in high.iter_mut().zip(low.iter_mut()).zip(x) {
                let missing = value.is_nan() || value == 0.0;
                *high = if missing { f64::INFINITY } else { value };
                *low = if missing { f64::NEG_INFINITY } else { value };
            }
        }
        out
    }

    /// Add every tree's leaf for `x` to `raw`, in tree order.
    pub fn add_leaves(&self, x: &FeatureVector, raw: &mut f64) {
        self.add_leaves_keeping::<false>(x, raw, &mut [])
    }

    /// [`Self::add_leaves`], keeping each tree's leaf in `leaves` for
    /// [`Self::contributions_along`] (nothing is kept when the forest has
    /// more than [`MAX_KEPT_LEAVES`] trees).
    pub fn add_leaves_kept(&self, x: &FeatureVector, raw: &mut f64, leaves: &mut Leaves) {
        if self.trees > MAX_KEPT_LEAVES {
            leaves.len = 0;
            return self.add_leaves(x, raw);
        }
        self.add_leaves_keeping::<true>(x, raw, &mut leaves.at[..self.trees]);
        leaves.len = self.trees;
    }

    /// The walk, keeping the leaves in `kept` when `KEEP` (a constant, so
    /// that inference alone pays nothing for it).
    fn add_leaves_keeping<const KEEP: bool>(&self, x: &FeatureVector, raw: &mut f64, kept: &mut [u16]) {
        by_stride!(self.depth, STRIDE => self.add_leaves_strided::<STRIDE, KEEP>(x, raw, kept))
    }

    /// [`Self::add_leaves`] for trees of `STRIDE` leaves (`2^depth`).
    fn add_leaves_strided<const STRIDE: usize, const KEEP: bool>(
        &self,
        x: &FeatureVector,
        raw: &mut f64,
        kept: &mut [u16],
    ) {
        let values = self.variants(x);
        let mut first = 0;
        while first + GROUP <= self.trees {
            self.add_group::<GROUP, STRIDE, KEEP>(&values, first, raw, kept);
            first += GROUP;
        }
        while first < self.trees {
            self.add_group::<1, STRIDE, KEEP>(&values, first, raw, kept);
            first += 1;
        }
    }

    /// Walk trees `first..first + N` level by level, then add their leaves.
    #[inline(always)]
    fn add_group<const N: usize, const STRIDE: usize, const KEEP: bool>(
        &self,
        values: &Variants,
        first: usize,
        raw: &mut f64,
        kept: &mut [u16],
    ) {
        // The walk of `leaves_of`, written out again: calling it from here
        // made inference a third slower in the bench (p50 350 → 460 ns),
        // with fewer instructions.
        let mask = STRIDE - 1;
        let range = first * STRIDE..(first + N) * STRIDE;
        let (read, threshold, leaf) = (&self.read[range.clone()], &self.threshold[range.clone()], &self.leaf[range]);
        let mut at = [0usize; N];
        for _ in 0..STRIDE.trailing_zeros() {
            for (tree, at) in at.iter_mut().enumerate() {
                let slot = tree * STRIDE + (*at & mask);
                let right = values[usize::from(read[slot])] > threshold[slot];
                *at = 2 * *at + 1 + usize::from(right);
            }
        }
        for (tree, at) in at.iter().enumerate() {
            // The last level's positions run from STRIDE - 1 to 2·STRIDE - 2.
            *raw += leaf[tree * STRIDE + ((*at + 1) & mask)];
        }
        if KEEP && let Some(kept) = kept.get_mut(first..first + N) {
            // Positions are below 2·STRIDE ≤ 512: they fit.
            for (kept, &at) in kept.iter_mut().zip(&at) {
                *kept = at as u16;
            }
        }
    }

    /// The breadth-first positions of the leaves trees `first..first + N`
    /// send `values` to, walked level by level.
    #[inline(always)]
    fn leaves_of<const N: usize, const STRIDE: usize>(&self, values: &Variants, first: usize) -> [usize; N] {
        let mask = STRIDE - 1;
        let range = first * STRIDE..(first + N) * STRIDE;
        let (read, threshold) = (&self.read[range.clone()], &self.threshold[range]);
        let mut at = [0usize; N];
        for _ in 0..STRIDE.trailing_zeros() {
            for (tree, at) in at.iter_mut().enumerate() {
                let slot = tree * STRIDE + (*at & mask);
                let right = values[usize::from(read[slot])] > threshold[slot];
                *at = 2 * *at + 1 + usize::from(right);
            }
        }
        at
    }

    /// Each feature's share of the trees' output (see
    /// [`super::Model::contributions`]); returns the roots' values summed
    /// onto `bias`. Filler splits change nothing: both sides hold the value
    /// they hold.
    ///
    /// The leaves are found as inference finds them (eight trees at a
    /// time, no branch per split); a leaf's position names its whole path
    /// in a complete tree, so the steps are then read along it. They are
    /// added tree by tree, root first — the order of the node walk — so
    /// every sum is the same to the last bit.
    pub fn contributions(&self, x: &FeatureVector, bias: &mut f64, out: &mut [f64; FEATURE_COUNT]) {
        debug_assert!(self.has_paths(), "contributions of a forest that keeps no paths");
        by_stride!(self.depth, STRIDE => self.contributions_strided::<STRIDE>(x, bias, out))
    }

    /// Whether the paths contributions read are kept (else the caller
    /// walks the trees node by node).
    pub fn has_paths(&self) -> bool {
        self.depth == 0 || !self.paths.is_empty()
    }

    /// [`Self::contributions`] along the leaves inference kept for the
    /// same vector ([`Self::add_leaves_kept`]), the roots' values summed
    /// onto `bias` when one is given; `false`, with nothing added, when
    /// `leaves` holds no walk of this forest.
    pub fn contributions_along(&self, leaves: &Leaves, bias: Option<&mut f64>, out: &mut [f64; FEATURE_COUNT]) -> bool {
        let Some(leaves) = leaves.of(self.trees).filter(|_| self.has_paths()) else { return false };
        by_stride!(self.depth, STRIDE => self.contributions_kept::<STRIDE>(leaves, bias, out));
        true
    }

    /// The roots' values summed onto `bias`, in tree order.
    fn add_bias<const STRIDE: usize>(&self, bias: &mut f64) {
        for tree in 0..self.trees {
            *bias += if STRIDE == 1 { self.leaf[tree] } else { self.mean[tree * STRIDE] };
        }
    }

    /// [`Self::contributions`] for trees of `STRIDE` leaves (`2^depth`).
    fn contributions_strided<const STRIDE: usize>(
        &self,
        x: &FeatureVector,
        bias: &mut f64,
        out: &mut [f64; FEATURE_COUNT],
    ) {
        self.add_bias::<STRIDE>(bias);
        if STRIDE == 1 {
            return;
        }
        let values = self.variants(x);
        let mut sums = [0.0; 256];
        let mut first = 0;
        while first + GROUP <= self.trees {
            let leaves = self.leaves_of::<GROUP, STRIDE>(&values, first);
            self.add_steps::<STRIDE>(first, &leaves.map(|at| at as u16), &mut sums);
            first += GROUP;
        }
        while first < self.trees {
            let [leaf] = self.leaves_of::<1, STRIDE>(&values, first);
            self.add_steps::<STRIDE>(first, &[leaf as u16], &mut sums);
            first += 1;
        }
        out.copy_from_slice(&sums[..FEATURE_COUNT]);
    }

    /// [`Self::contributions_along`] for trees of `STRIDE` leaves.
    fn contributions_kept<const STRIDE: usize>(
        &self,
        leaves: &[u16],
        bias: Option<&mut f64>,
        out: &mut [f64; FEATURE_COUNT],
    ) {
        if let Some(bias) = bias {
            self.add_bias::<STRIDE>(bias);
        }
        if STRIDE > 1 {
            let mut sums = [0.0; 256];
            self.add_steps::<STRIDE>(0, leaves, &mut sums);
            out.copy_from_slice(&sums[..FEATURE_COUNT]);
        }
    }

    /// Add the paths of the trees from `first` on, which reached `leaves`
    /// (breadth-first positions), to `sums`, tree by tree, root first.
    /// `sums` is indexed by a step's feature byte, so adding needs no
    /// bounds check; its first [`FEATURE_COUNT`] entries are the
    /// contributions (each starts at +0.0 as the caller's zeroed ones do,
    /// so copying them over gives the same bits).
    #[inline(always)]
    fn add_steps<const STRIDE: usize>(&self, first: usize, leaves: &[u16], sums: &mut [f64; 256]) {
        let levels = STRIDE.trailing_zeros() as usize;
        let trees = self.paths.get(first * STRIDE * levels..).unwrap_or_default();
        for (tree, &leaf) in trees.chunks_exact(STRIDE * levels).zip(leaves) {
            // The last level's positions run from STRIDE − 1 to 2·STRIDE − 2.
            let leaf = (usize::from(leaf) + 1) & (STRIDE - 1);
            for step in &tree[leaf * levels..(leaf + 1) * levels] {
                sums[usize::from(step.feature)] += step.delta;
            }
        }
    }
}

/// Depth and node count of the tree below `id`; `None` when it is deeper
/// than [`MAX_DEPTH`] or a threshold is not finite.
fn measure(node: &impl Fn(u32) -> NodeDef, id: u32, level: u32) -> Option<(u32, usize)> {
    match node(id) {
        NodeDef::Leaf { .. } => Some((0, 1)),
        NodeDef::Split { threshold, left, right, .. } => {
            if level >= MAX_DEPTH || !threshold.is_finite() {
                return None;
            }
            let (left_depth, left_nodes) = measure(node, left, level + 1)?;
            let (right_depth, right_nodes) = measure(node, right, level + 1)?;
            Some((1 + left_depth.max(right_depth), 1 + left_nodes + right_nodes))
        }
    }
}
