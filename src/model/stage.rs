//! The `model` stage: features for every scored request, each configured
//! model's probability, and the signal `model.<name>` that turns a
//! probability into a score contribution.
//!
//! A probability below the model's `min_probability` says nothing; above
//! it, the penalty grows linearly to `max_penalty` at probability 1, and
//! at `block_at_probability` the model demands a block. A model in shadow
//! mode raises the same signal marked shadow: it is logged with the
//! `would_action` it would have caused and never acted on. Models are
//! loaded and their feature schema checked when the configuration is
//! compiled, so `palisade check` and a reload refuse a model built for
//! other features.

use std::cell::RefCell;
use std::sync::Arc;

use super::features::{FEATURES, FeatureExtractor, FeatureKeys, FeatureVector};
use super::file::Model;
use super::forest::Leaves;
use crate::config::{Config, Invalid, ModelMode};
use crate::credential::{KeyHasher, LoginAttempt};
use crate::detect::{RequestContext, Stage};
use crate::session::SessionFacts;
use crate::signal::{Action, Evidence, Signal};
use crate::store::{CounterPlan, CounterReadings};
use crate::view::RequestView;

/// At most this many models run at once (their probabilities are kept
/// inline in each decision).
pub const MAX_MODELS: usize = 4;

/// Features shown in a model signal's evidence.
const EVIDENCE_FEATURES: usize = 3;

thread_local! {
    /// Where the walk of the model being scored ended, for its signal's
    /// contributions: one per thread rather than a 2 KiB array zeroed per
    /// request (each model's walk overwrites it before it is read).
    static KEPT_LEAVES: RefCell<Leaves> = RefCell::new(Leaves::default());
}

/// Cheap to clone: the pipeline keeps one for reports next to the one in
/// its stage list.
#[derive(Debug, Clone)]
pub struct ModelStage {
    extractor: FeatureExtractor,
    models: Arc<[ConfiguredModel]>,
    /// The models' names, shared by every report.
    names: Arc<[Arc<str>]>,
    /// `[decision_log] model_features`: log every request's features.
    log_features: bool,
}

/// A model as configured.
#[derive(Debug)]
pub struct ConfiguredModel {
    pub name: Arc<str>,
    pub id: Arc<str>,
    pub model: Model,
    pub mode: ModelMode,
    pub min_probability: f64,
    pub max_penalty: u8,
    pub block_at_probability: Option<f64>,
}

/// What the stage computed for one request: its features and each
/// model's probability (in configuration order).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelReport {
    pub features: FeatureVector,
    pub probabilities: [f64; MAX_MODELS],
    /// The models' names, in the order of `probabilities`.
    pub names: Arc<[Arc<str>]>,
    /// Whether the decision log shows the features.
    pub log_features: bool,
}

impl ModelReport {
    pub fn probabilities(&self) -> &[f64] {
        &self.probabilities[..self.names.len().min(MAX_MODELS)]
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl ModelStage {
    /// The stage, when the configuration has models (or asks for features
    /// alone); every problem with a model is reported with its key.
    pub fn from_config(config: &Config, hasher: KeyHasher) -> Result<Option<ModelStage>, Vec<Invalid>> {
        if config.models.is_empty() && !config.collect_features {
            return Ok(None);
        }
        let mut problems = Vec::new();
        let mut models = Vec::new();
        if config.models.len() > MAX_MODELS {
            problems.push(Invalid::new(0..0, "model", format!("at most {MAX_MODELS} models can run at once")));
        }
        let mut enforcing: Vec<&str> = Vec::new();
        for (index, entry) in config.models.iter().enumerate() {
            let key = |field: &str| format!("model[{index}].{field}");
            let name = entry.name.get_ref();
            if !valid_name(name) {
                problems.push(Invalid::new(
                    entry.name.span(),
                    key("name"),
                    "a model name is lowercase letters, digits, `_` and `-` (it becomes the detection id model.<name>)",
                ));
            }
            if config.models[..index].iter().any(|other| other.name.get_ref() == name) {
                problems.push(Invalid::new(entry.name.span(), key("name"), format!("a second model named `{name}`")));
            }
            if entry.mode == ModelMode::Enforce {
                enforcing.push(name);
            }
            if !(0.0..1.0).contains(&entry.min_probability) {
                problems.push(Invalid::new(0..0, key("min_probability"), "must be at least 0 and less than 1"));
            }
            if let Some(block) = entry.block_at_probability
                && !(entry.min_probability..=1.0).contains(&block)
            {
                problems.push(Invalid::new(0..0, key("block_at_probability"), "must be between min_probability and 1"));
            }
            let path = config.resolve_path(entry.path.get_ref());
            match Model::load(&path) {
                Ok(model) => models.push(ConfiguredModel {
                    name: Arc::from(name.as_str()),
                    id: Arc::from(format!("model.{name}")),
                    model,
                    mode: entry.mode,
                    min_probability: entry.min_probability,
                    max_penalty: entry.max_penalty,
                    block_at_probability: entry.block_at_probability,
                }),
                Err(error) => problems.push(Invalid::new(entry.path.span(), key("path"), error.message)),
            }
        }
        if enforcing.len() > 1 {
            problems.push(Invalid::new(
                0..0,
                "model",
                format!("only one model may enforce; {} do ({})", enforcing.len(), enforcing.join(", ")),
            ));
        }
        if problems.is_empty() {
            let names = models.iter().map(|m| m.name.clone()).collect();
            let log_features = config.decision_log.model_features;
            let models = models.into();
            Ok(Some(ModelStage { extractor: FeatureExtractor::new(hasher), models, names, log_features }))
        } else {
            Err(problems)
        }
    }

    pub fn models(&self) -> &[ConfiguredModel] {
        &self.models
    }

    /// Features, probabilities, and a signal per model whose probability
    /// reaches its `min_probability`.
    fn score(
        &self,
        view: &RequestView<'_>,
        keys: &FeatureKeys,
        readings: &CounterReadings,
        login: Option<&LoginAttempt>,
        session: Option<f64>,
        signals: &mut Vec<Signal>,
    ) -> ModelReport {
        let features = self.extractor.compute(view, keys, readings, login, session);
        let mut report = ModelReport {
            features,
            probabilities: [0.0; MAX_MODELS],
            names: self.names.clone(),
            log_features: self.log_features,
        };
        let mut score_all = |leaves: &mut Leaves| {
            for (slot, configured) in report.probabilities.iter_mut().zip(self.models.iter()) {
                let probability = configured.model.probability_keeping(&report.features, leaves);
                *slot = probability;
                if let Some(signal) = configured.signal(probability, &report.features, leaves) {
                    signals.push(signal);
                }
            }
        };
        let scored = KEPT_LEAVES.try_with(|leaves| leaves.try_borrow_mut().map(|mut leaves| score_all(&mut leaves)));
        if !matches!(scored, Ok(Ok(()))) {
            // The thread is ending: a walk of its own.
            score_all(&mut Leaves::default());
        }
        report
    }
}

// === impl Stage ===

impl Stage for ModelStage {
    fn name(&self) -> &'static str {
        "model"
    }

    /// The counters the features need; their keys wait in the context.
    fn plan(&self, view: &RequestView<'_>, context: &mut RequestContext, plan: &mut CounterPlan) {
        // The session stage ran first (it is earlier in the stage list) and
        // classified the request already.
        let kind = context.get::<SessionFacts>().map(|facts| facts.kind);
        let keys = self.extractor.plan(view, kind, plan);
        context.insert(keys);
    }

    /// The report (features and probabilities) goes into the context,
    /// where the decision log, replay and explain read it.
    fn detect(
        &self,
        view: &RequestView<'_>,
        context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        let Some(keys) = context.get::<FeatureKeys>() else { return };
        // The session stage ran first (it is earlier in the stage list) and
        // left what it read of the cookies in the context.
        let session = context.get::<SessionFacts>().map(|facts| {
            if facts.vouched() {
                1.0
            } else if facts.refused() {
                2.0
            } else {
                0.0
            }
        });
        let report = self.score(view, keys, readings, crate::credential::login_attempt(context), session, signals);
        context.insert(report);
    }
}

impl ConfiguredModel {
    /// Points off the score at `probability`.
    pub fn penalty(&self, probability: f64) -> u8 {
        if probability < self.min_probability {
            return 0;
        }
        let share = (probability - self.min_probability) / (1.0 - self.min_probability);
        (share.clamp(0.0, 1.0) * f64::from(self.max_penalty)).round() as u8
    }

    /// The signal of `probability`; `leaves` are where the model's walk of
    /// `features` ended ([`Model::probability_keeping`]).
    fn signal(&self, probability: f64, features: &FeatureVector, leaves: &Leaves) -> Option<Signal> {
        if probability < self.min_probability {
            return None;
        }
        let mut signal = Signal::new(self.id.clone(), self.penalty(probability));
        // The probability and the top features: one allocation of the
        // right size, where pushing grew the list from nothing.
        signal.evidence.reserve_exact(1 + EVIDENCE_FEATURES);
        signal.shadow = self.mode == ModelMode::Shadow;
        if self.block_at_probability.is_some_and(|block| probability >= block) {
            signal.action = Some(Action::Block);
        }
        let rounded = (probability * 1000.0).round() / 1000.0;
        signal.evidence.push(Evidence::number("probability", rounded, Some(self.min_probability)));
        for contribution in self.model.top_contributions_along(features, leaves, EVIDENCE_FEATURES) {
            let value = features[contribution.feature];
            let value = if value.is_nan() { f64::NAN } else { (value * 1000.0).round() / 1000.0 };
            signal.evidence.push(Evidence::number(FEATURES[contribution.feature].name, value, None));
        }
        Some(signal)
    }
}
