//! What a replay found: requests by action, by detection id and by route,
//! and for labelled captures a confusion matrix per label with the
//! precision and recall of stopping bots and the false-positive rates of
//! people and partners. Rendered as a text table or as JSON whose bytes
//! depend only on the inputs (sorted keys, no timings).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::config::RouteMode;
use crate::pipeline::Decision;
use crate::signal::Action;

/// What happened to a request, as the confusion matrix counts it (`log`
/// counts as allowed: the request went through).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Allowed,
    Challenged,
    Limited,
    Blocked,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Allowed, Outcome::Challenged, Outcome::Limited, Outcome::Blocked];

    pub fn of(action: Action) -> Outcome {
        match action {
            Action::Allow | Action::Log => Outcome::Allowed,
            Action::Challenge => Outcome::Challenged,
            Action::RateLimit => Outcome::Limited,
            Action::Block => Outcome::Blocked,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Challenged => "challenged",
            Outcome::Limited => "limited",
            Outcome::Blocked => "blocked",
        }
    }

    /// Rate-limited or blocked: the request never reached the application.
    pub fn stopped(self) -> bool {
        matches!(self, Outcome::Limited | Outcome::Blocked)
    }
}

fn action_index(action: Action) -> usize {
    Action::ALL.iter().position(|a| *a == action).expect("every action is in Action::ALL")
}

/// Counts gathered while replaying; [`Tally::report`] turns them into a
/// [`Summary`].
#[derive(Debug, Default)]
pub struct Tally {
    requests: u64,
    out_of_order: u64,
    by_action: [u64; 5],
    by_detection: Counts<2>,
    by_route: Counts<5>,
    by_label: Counts<4>,
    unlabeled: [u64; 4],
    last_at: u64,
    /// Per model (configuration order): name, min_probability, counts.
    models: Vec<ModelTally>,
}

/// What one model said over a replay.
#[derive(Debug, Default)]
struct ModelTally {
    name: String,
    min_probability: f64,
    /// Label → (requests scored, flagged at min_probability, sum of probabilities).
    by_label: hashbrown::HashMap<Arc<str>, (u64, u64, f64)>,
    /// (probability, is a bot) of every labelled request, for ROC-AUC.
    scores: Vec<(f32, bool)>,
}

impl Tally {
    /// Report each model's results too (names and `min_probability` in
    /// configuration order).
    pub fn with_models(models: impl IntoIterator<Item = (String, f64)>) -> Tally {
        let models = models
            .into_iter()
            .map(|(name, min_probability)| ModelTally { name, min_probability, ..ModelTally::default() })
            .collect();
        Tally { models, ..Tally::default() }
    }

    fn add_models(&mut self, decision: &Decision, label: Option<&Arc<str>>) {
        let Some(report) = decision.model() else { return };
        for (tally, &probability) in self.models.iter_mut().zip(report.probabilities()) {
            let row = tally.by_label.entry_ref(label.map_or("(unlabeled)", |l| &**l)).or_default();
            row.0 += 1;
            row.1 += u64::from(probability >= tally.min_probability);
            row.2 += probability;
            if let Some(label) = label {
                tally.scores.push((probability as f32, &**label == "bot"));
            }
        }
    }

    pub fn add(&mut self, decision: &Decision, route: &Arc<str>, label: Option<&Arc<str>>, at: u64) {
        self.requests += 1;
        if at < self.last_at {
            self.out_of_order += 1;
        }
        self.last_at = self.last_at.max(at);
        let action = decision.action();
        self.by_action[action_index(action)] += 1;
        let monitored = decision.mode == RouteMode::Monitor;
        for signal in &decision.signals {
            self.by_detection.of(&signal.id)[usize::from(signal.shadow || monitored)] += 1;
        }
        self.by_route.of(route)[action_index(action)] += 1;
        self.add_models(decision, label);
        let outcome = Outcome::of(action) as usize;
        match label {
            Some(label) => self.by_label.of(label)[outcome] += 1,
            None => self.unlabeled[outcome] += 1,
        }
    }

    pub fn report(&self) -> Summary {
        let actions = |counts: &[u64; 5]| -> BTreeMap<&'static str, u64> {
            Action::ALL.iter().zip(counts).map(|(a, n)| (a.as_str(), *n)).collect()
        };
        let mut labels: BTreeMap<String, LabelRow> =
            self.by_label.iter().map(|(label, counts)| (label.to_string(), LabelRow::new(counts))).collect();
        if self.unlabeled.iter().any(|n| *n > 0) && !labels.is_empty() {
            labels.insert("(unlabeled)".into(), LabelRow::new(&self.unlabeled));
        }
        let rates = Rates::from_labels(&labels);
        Summary {
            requests: self.requests,
            out_of_order: self.out_of_order,
            by_action: actions(&self.by_action),
            by_detection: self
                .by_detection
                .iter()
                .map(|(id, [enforced, shadow])| (id.to_string(), DetectionRow { enforced: *enforced, shadow: *shadow }))
                .collect(),
            by_route: self.by_route.iter().map(|(route, counts)| (route.to_string(), actions(counts))).collect(),
            labels,
            rates,
            models: self.models.iter().map(ModelTally::row).collect(),
        }
    }
}

/// Slots of [`Counts`]' cache of recently counted names.
const RECENT: usize = 64;

/// Counts per name (detection id, route, label), zeros the first time a
/// name is seen. The names come as `Arc<str>`s the configuration made once
/// (a rule's id, a route's name), so the same few `Arc`s come again and
/// again: a small cache keyed by the `Arc`'s address finds a name's counts
/// without hashing its text, which was ~570 instructions per replayed
/// request. The cache holds a clone of each `Arc` it remembers, so that
/// address cannot be freed and reused for other text while it is there; a
/// name not in the cache (or a different `Arc` of the same text) is looked
/// up by its text, which is copied only the first time.
#[derive(Debug)]
struct Counts<const N: usize> {
    // hashbrown's default hasher: std's SipHash of every name was most of
    // tallying a request. The report sorts them anyway.
    by_name: hashbrown::HashMap<Arc<str>, usize>,
    counts: Vec<[u64; N]>,
    recent: Box<[Option<Remembered>]>,
}

/// A name [`Counts`] remembers by its `Arc`, and where its counts are.
type Remembered = (Arc<str>, usize);

impl<const N: usize> Default for Counts<N> {
    fn default() -> Self {
        Counts {
            by_name: hashbrown::HashMap::default(),
            counts: Vec::new(),
            recent: vec![None; RECENT].into_boxed_slice(),
        }
    }
}

impl<const N: usize> Counts<N> {
    /// The counts kept under `name`.
    fn of(&mut self, name: &Arc<str>) -> &mut [u64; N] {
        // An `Arc`'s allocation is at least 8-aligned: the low bits say nothing.
        let slot = (Arc::as_ptr(name).cast::<u8>() as usize >> 3) % RECENT;
        let index = match &self.recent[slot] {
            Some((held, index)) if Arc::ptr_eq(held, name) => *index,
            _ => {
                let next = self.counts.len();
                let index = *self.by_name.entry_ref(&**name).or_insert(next);
                if index == next {
                    self.counts.push([0; N]);
                }
                self.recent[slot] = Some((name.clone(), index));
                index
            }
        };
        &mut self.counts[index]
    }

    /// Each name with its counts, in no particular order.
    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &[u64; N])> {
        self.by_name.iter().map(|(name, &index)| (name, &self.counts[index]))
    }
}

impl ModelTally {
    fn row(&self) -> ModelRow {
        let p: Vec<f64> = self.scores.iter().map(|(p, _)| f64::from(*p)).collect();
        let y: Vec<f64> = self.scores.iter().map(|(_, bot)| if *bot { 1.0 } else { 0.0 }).collect();
        let auc = crate::model::train::roc_auc(&p, &y);
        ModelRow {
            name: self.name.clone(),
            min_probability: self.min_probability,
            roc_auc: (!auc.is_nan()).then(|| round6(auc)),
            by_label: self
                .by_label
                .iter()
                .map(|(label, (requests, flagged, sum))| {
                    let row = ModelLabelRow {
                        requests: *requests,
                        flagged: *flagged,
                        mean_probability: round6(sum / (*requests).max(1) as f64),
                    };
                    (label.to_string(), row)
                })
                .collect(),
        }
    }
}

/// One model's results: how often it reached `min_probability` per label.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    pub name: String,
    pub min_probability: f64,
    /// Bots against people and partners, by probability.
    pub roc_auc: Option<f64>,
    pub by_label: BTreeMap<String, ModelLabelRow>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ModelLabelRow {
    pub requests: u64,
    /// Requests at or above `min_probability`.
    pub flagged: u64,
    pub mean_probability: f64,
}

/// Everything a replay of one configuration found.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub requests: u64,
    /// Requests whose `ts` was earlier than one already replayed (run at
    /// the later time).
    pub out_of_order: u64,
    pub by_action: BTreeMap<&'static str, u64>,
    pub by_detection: BTreeMap<String, DetectionRow>,
    pub by_route: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Confusion matrix: label → outcome counts (empty without labels).
    pub labels: BTreeMap<String, LabelRow>,
    pub rates: Rates,
    /// Each configured model's results (empty without models).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelRow>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct DetectionRow {
    /// Requests the detection was acted on for.
    pub enforced: u64,
    /// Requests it fired on in shadow mode or on a monitor-mode route.
    pub shadow: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LabelRow {
    pub requests: u64,
    pub allowed: u64,
    pub challenged: u64,
    pub limited: u64,
    pub blocked: u64,
}

impl LabelRow {
    fn new(counts: &[u64; 4]) -> Self {
        LabelRow {
            requests: counts.iter().sum(),
            allowed: counts[Outcome::Allowed as usize],
            challenged: counts[Outcome::Challenged as usize],
            limited: counts[Outcome::Limited as usize],
            blocked: counts[Outcome::Blocked as usize],
        }
    }

    pub fn stopped(&self) -> u64 {
        self.limited + self.blocked
    }

    fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Allowed => self.allowed,
            Outcome::Challenged => self.challenged,
            Outcome::Limited => self.limited,
            Outcome::Blocked => self.blocked,
        }
    }
}

/// Quality of "stopped" (rate-limited or blocked) against the labels.
/// `None` when the labels needed are not in the captures.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rates {
    /// Stopped bots / all stopped requests labelled human, bot or partner.
    pub bot_precision: Option<f64>,
    /// Stopped bots / all bots.
    pub bot_recall: Option<f64>,
    /// Stopped people / all people.
    pub human_false_positive_rate: Option<f64>,
    /// Stopped partner requests / all partner requests.
    pub partner_false_positive_rate: Option<f64>,
}

impl Rates {
    fn from_labels(labels: &BTreeMap<String, LabelRow>) -> Rates {
        let row = |name: &str| labels.get(name).copied().unwrap_or_default();
        let (bot, human, partner) = (row("bot"), row("human"), row("partner"));
        let ratio = |part: u64, whole: u64| (whole > 0).then(|| round6(part as f64 / whole as f64));
        Rates {
            bot_precision: ratio(bot.stopped(), bot.stopped() + human.stopped() + partner.stopped()),
            bot_recall: ratio(bot.stopped(), bot.requests),
            human_false_positive_rate: ratio(human.stopped(), human.requests),
            partner_false_positive_rate: ratio(partner.stopped(), partner.requests),
        }
    }
}

/// Six decimals: enough to compare, and the same digits on every run.
pub fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

fn rate_text(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{:.1}%", v * 100.0))
}

impl Summary {
    /// The summary as text tables.
    pub fn render_text(&self, out: &mut String) {
        let _ = writeln!(out, "requests: {}", self.requests);
        if self.out_of_order > 0 {
            let _ = writeln!(out, "out of order: {} (run at the later time)", self.out_of_order);
        }
        let _ = writeln!(out, "\nby action");
        for action in Action::ALL {
            let n = self.by_action.get(action.as_str()).copied().unwrap_or(0);
            let _ = writeln!(out, "  {:<12} {:>10}  {:>6}", action.as_str(), n, percent(n, self.requests));
        }
        let _ = writeln!(out, "\nby detection id (requests)");
        if self.by_detection.is_empty() {
            let _ = writeln!(out, "  (none)");
        } else {
            let width = self.by_detection.keys().map(String::len).max().unwrap_or(0).max(12);
            let _ = writeln!(out, "  {:<width$} {:>10} {:>10}", "id", "enforced", "shadow");
            let mut rows: Vec<_> = self.by_detection.iter().collect();
            rows.sort_by(|a, b| (b.1.enforced + b.1.shadow).cmp(&(a.1.enforced + a.1.shadow)).then(a.0.cmp(b.0)));
            for (id, row) in rows {
                let _ = writeln!(out, "  {id:<width$} {:>10} {:>10}", row.enforced, row.shadow);
            }
        }
        let _ = writeln!(out, "\nby route");
        let width = self.by_route.keys().map(String::len).max().unwrap_or(0).max(8);
        let _ = write!(out, "  {:<width$}", "route");
        for action in Action::ALL {
            let _ = write!(out, " {:>10}", action.as_str());
        }
        let _ = writeln!(out);
        for (route, counts) in &self.by_route {
            let _ = write!(out, "  {route:<width$}");
            for action in Action::ALL {
                let _ = write!(out, " {:>10}", counts.get(action.as_str()).copied().unwrap_or(0));
            }
            let _ = writeln!(out);
        }
        for model in &self.models {
            let auc = model.roc_auc.map_or_else(|| "n/a".to_string(), |a| format!("{a:.4}"));
            let _ = writeln!(
                out,
                "\nmodel {} (ROC-AUC {auc}; flagged = probability >= {})",
                model.name, model.min_probability
            );
            let _ =
                writeln!(out, "  {:<12} {:>10} {:>10} {:>8} {:>10}", "label", "requests", "flagged", "share", "mean p");
            for (label, row) in &model.by_label {
                let _ = writeln!(
                    out,
                    "  {label:<12} {:>10} {:>10} {:>8} {:>10.3}",
                    row.requests,
                    row.flagged,
                    percent(row.flagged, row.requests),
                    row.mean_probability
                );
            }
        }
        if self.labels.is_empty() {
            let _ = writeln!(out, "\n(no labels in the captures: no confusion matrix)");
            return;
        }
        let _ = writeln!(out, "\nconfusion matrix (log counts as allowed; stopped = limited or blocked)");
        let width = self.labels.keys().map(String::len).max().unwrap_or(0).max(8);
        let _ = write!(out, "  {:<width$} {:>10}", "label", "requests");
        for outcome in Outcome::ALL {
            let _ = write!(out, " {:>10}", outcome.as_str());
        }
        let _ = writeln!(out);
        for (label, row) in &self.labels {
            let _ = write!(out, "  {label:<width$} {:>10}", row.requests);
            for outcome in Outcome::ALL {
                let _ = write!(out, " {:>10}", row.get(outcome));
            }
            let _ = writeln!(out);
        }
        let r = &self.rates;
        let _ = writeln!(out);
        let _ = writeln!(out, "  bot precision (stopped)      {}", rate_text(r.bot_precision));
        let _ = writeln!(out, "  bot recall (stopped)         {}", rate_text(r.bot_recall));
        let _ = writeln!(out, "  human false-positive rate    {}", rate_text(r.human_false_positive_rate));
        let _ = writeln!(out, "  partner false-positive rate  {}", rate_text(r.partner_false_positive_rate));
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "-".into() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts are per text: the same `Arc` found through the cache, another
    /// `Arc` of the same text through the map, and more names than the
    /// cache has slots (each evicting others) all end up in one row per
    /// text.
    #[test]
    fn counts_are_kept_per_name_whichever_arc_carries_it() {
        let mut counts = Counts::<2>::default();
        let names: Vec<Arc<str>> = (0..RECENT * 3).map(|i| Arc::from(format!("rule.{i}"))).collect();
        for round in 0..3 {
            for (i, name) in names.iter().enumerate() {
                counts.of(name)[round % 2] += 1;
                // The same text in an `Arc` of its own.
                counts.of(&Arc::from(format!("rule.{i}")))[1] += 10;
            }
        }
        let rows: BTreeMap<String, [u64; 2]> = counts.iter().map(|(name, row)| (name.to_string(), *row)).collect();
        assert_eq!(rows.len(), names.len());
        for name in &names {
            assert_eq!(rows[&**name], [2, 31], "{name}");
        }
    }
}
