//! The difference between two configurations over the same requests:
//! which requests change action, grouped by the detection that made the
//! difference and by label, with a few examples each.
//!
//! A request that got stricter (say allow → block) is put under each
//! detection the new configuration acted on and the old did not, and
//! grouped by its new action ("would newly block"); one that got looser,
//! under each detection the old acted on and the new does not, grouped by
//! its old action ("would no longer block"). When the detections are the
//! same on both sides (a threshold or a penalty changed), it goes under
//! `(score) ID+ID…`, the detections both sides acted on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::pipeline::Decision;
use crate::signal::Action;

/// How many examples a group keeps.
pub const EXAMPLES_PER_GROUP: usize = 3;

/// How a group starts when the same detections fired on both sides.
pub const SAME_DETECTIONS: &str = "(score)";

/// A request, as a diff example shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub capture: String,
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub method: String,
    pub target: String,
    pub client_ip: String,
    pub baseline_action: Action,
    pub action: Action,
    pub baseline_score: u8,
    pub score: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct GroupKey {
    detection: Arc<str>,
    change: Change,
    /// The new action (stricter) or the old one (looser).
    action: Action,
}

/// Which way a request's action moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Stricter,
    Looser,
}

#[derive(Debug, Default)]
struct Group {
    requests: u64,
    labels: BTreeMap<String, u64>,
    /// The other side's actions: where stricter requests came from, where
    /// looser ones went.
    others: BTreeMap<Action, u64>,
    examples: Vec<Example>,
}

/// Gathers the changed requests while both configurations replay.
#[derive(Debug, Default)]
pub struct DiffTally {
    changed: u64,
    stricter: u64,
    looser: u64,
    transitions: BTreeMap<(Action, Action), u64>,
    groups: HashMap<GroupKey, Group>,
}

impl DiffTally {
    /// Compare the decisions of the new and the baseline configuration on
    /// one request; `example` is called only when an example is wanted.
    pub fn add(
        &mut self,
        new: &Decision,
        baseline: &Decision,
        label: Option<&str>,
        example: impl FnOnce(u8, u8) -> Example,
    ) {
        let (to, from) = (new.action(), baseline.action());
        if to == from {
            return;
        }
        self.changed += 1;
        *self.transitions.entry((from, to)).or_default() += 1;
        let new_ids: BTreeSet<&str> = new.enforced_detections().collect();
        let old_ids: BTreeSet<&str> = baseline.enforced_detections().collect();
        let (change, action, other) = if to > from { (Change::Stricter, to, from) } else { (Change::Looser, from, to) };
        let responsible: Vec<&str> = match change {
            Change::Stricter => {
                self.stricter += 1;
                new_ids.difference(&old_ids).copied().collect()
            }
            Change::Looser => {
                self.looser += 1;
                old_ids.difference(&new_ids).copied().collect()
            }
        };
        let same;
        let responsible = if responsible.is_empty() {
            let shared: Vec<&str> = new_ids.intersection(&old_ids).copied().collect();
            same = if shared.is_empty() {
                format!("{SAME_DETECTIONS} none")
            } else {
                format!("{SAME_DETECTIONS} {}", shared.join("+"))
            };
            vec![same.as_str()]
        } else {
            responsible
        };
        let mut example = Some(example);
        let mut made: Option<Example> = None;
        for detection in responsible {
            let group = self.groups.entry(GroupKey { detection: Arc::from(detection), change, action }).or_default();
            group.requests += 1;
            *group.others.entry(other).or_default() += 1;
            *group.labels.entry(label.unwrap_or("(unlabeled)").to_string()).or_default() += 1;
            if group.examples.len() < EXAMPLES_PER_GROUP {
                if made.is_none()
                    && let Some(make) = example.take()
                {
                    let mut made_example = make(baseline.score(), new.score());
                    (made_example.baseline_action, made_example.action) = (from, to);
                    made = Some(made_example);
                }
                group.examples.extend(made.clone());
            }
        }
    }

    pub fn report(&self) -> Diff {
        let mut groups: Vec<DiffGroup> = self
            .groups
            .iter()
            .map(|(key, group)| DiffGroup {
                detection: key.detection.to_string(),
                change: key.change,
                action: key.action,
                requests: group.requests,
                others: group.others.iter().map(|(a, n)| (a.as_str(), *n)).collect(),
                labels: group.labels.clone(),
                summary: sentence(key, group),
                examples: group.examples.clone(),
            })
            .collect();
        groups.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| (&a.detection, a.change, a.action).cmp(&(&b.detection, b.change, b.action)))
        });
        Diff {
            changed: self.changed,
            stricter: self.stricter,
            looser: self.looser,
            transitions: self
                .transitions
                .iter()
                .map(|((from, to), n)| Transition { from: *from, to: *to, requests: *n })
                .collect(),
            groups,
        }
    }
}

/// "rule ua.attack_tool would newly block 12 requests (were allow 9, log 3),
/// labeled: 3 human, 9 bot".
fn sentence(key: &GroupKey, group: &Group) -> String {
    let subject = match key.detection.strip_prefix(SAME_DETECTIONS) {
        Some(" none") => "with no detection either side, the new thresholds".to_string(),
        Some(shared) => format!("with the same detections ({}), the new score or thresholds", shared.trim()),
        None => format!("rule {}", key.detection),
    };
    let n = group.requests;
    let requests = if n == 1 { "request" } else { "requests" };
    let others: Vec<String> = group.others.iter().map(|(action, count)| format!("{action} {count}")).collect();
    let mut text = match key.change {
        Change::Stricter => format!("{subject} would newly {} {n} {requests} (were {})", key.action, others.join(", ")),
        Change::Looser => {
            format!("{subject} would no longer {} {n} {requests} (now {})", key.action, others.join(", "))
        }
    };
    let labeled: Vec<String> = group
        .labels
        .iter()
        .filter(|(label, _)| label.as_str() != "(unlabeled)")
        .map(|(label, count)| format!("{count} {label}"))
        .collect();
    if !labeled.is_empty() {
        let _ = write!(text, ", labeled: {}", labeled.join(", "));
    }
    text
}

/// The requests that change action between the baseline and the new
/// configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub changed: u64,
    /// Requests whose action got more severe.
    pub stricter: u64,
    /// Requests whose action got less severe.
    pub looser: u64,
    pub transitions: Vec<Transition>,
    pub groups: Vec<DiffGroup>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub from: Action,
    pub to: Action,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffGroup {
    pub detection: String,
    pub change: Change,
    /// The new action (stricter) or the old one (looser).
    pub action: Action,
    pub requests: u64,
    /// The other side's actions, with their counts.
    pub others: BTreeMap<&'static str, u64>,
    pub labels: BTreeMap<String, u64>,
    pub summary: String,
    pub examples: Vec<Example>,
}

impl Diff {
    pub fn render_text(&self, out: &mut String) {
        let _ = writeln!(out, "\nchanges against the baseline");
        if self.changed == 0 {
            let _ = writeln!(out, "  no request changes action");
            return;
        }
        let _ = writeln!(
            out,
            "  {} requests change action: {} stricter, {} looser",
            self.changed, self.stricter, self.looser
        );
        for t in &self.transitions {
            let _ = writeln!(out, "    {:>10} -> {:<10} {:>8}", t.from.as_str(), t.to.as_str(), t.requests);
        }
        for group in &self.groups {
            let _ = writeln!(out, "\n  {}", group.summary);
            for e in &group.examples {
                let label = e.label.as_deref().map(|l| format!(" [{l}]")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "    {}:{}{label} {} {} {}: {} -> {}, score {} -> {}",
                    e.capture,
                    e.line,
                    e.client_ip,
                    e.method,
                    truncate(&e.target, 80),
                    e.baseline_action,
                    e.action,
                    e.baseline_score,
                    e.score
                );
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}
