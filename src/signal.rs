//! Signals, actions and the decision: the vocabulary shared by detectors,
//! the decide stage and everything that reports on them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// What palisade does with a request, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Log,
    /// Placeholder until challenges exist: the request is forwarded with the
    /// action header set to `challenge`, so the application can step up.
    Challenge,
    RateLimit,
    Block,
}

impl Action {
    pub const ALL: [Action; 5] = [Action::Allow, Action::Log, Action::Challenge, Action::RateLimit, Action::Block];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Log => "log",
            Action::Challenge => "challenge",
            Action::RateLimit => "rate_limit",
            Action::Block => "block",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// Whether the request is answered by palisade instead of forwarded.
    pub fn stops_request(self) -> bool {
        matches!(self, Action::RateLimit | Action::Block)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A measured value behind a signal, so a decision can be explained.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EvidenceValue {
    Number(f64),
    Text(Arc<str>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub name: &'static str,
    pub value: EvidenceValue,
    /// The threshold the value crossed, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

impl Evidence {
    pub fn number(name: &'static str, value: f64, threshold: Option<f64>) -> Self {
        Evidence { name, value: EvidenceValue::Number(value), threshold }
    }

    pub fn text(name: &'static str, value: impl Into<Arc<str>>) -> Self {
        Evidence { name, value: EvidenceValue::Text(value.into()), threshold: None }
    }
}

/// One detector finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    /// Stable detection id, e.g. `ua.attack_tool`.
    pub id: Arc<str>,
    /// Points taken off the score.
    pub penalty: u8,
    /// An action the finding demands regardless of the score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Shadow signals are logged but change neither score nor action.
    pub shadow: bool,
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    pub evidence: Vec<Evidence>,
}

impl Signal {
    pub fn new(id: Arc<str>, penalty: u8) -> Self {
        Signal { id, penalty, action: None, shadow: false, retry_after: None, evidence: Vec::new() }
    }

    /// A limit that refused the request (a route's rate limit, a partner's
    /// or an OAuth client's quota, an ASN's limit): `429` with
    /// `Retry-After`, the limit's own evidence, then `retry_after_ms`.
    pub fn rate_limited(
        id: Arc<str>,
        penalty: u8,
        retry_after: Duration,
        evidence: impl IntoIterator<Item = Evidence>,
    ) -> Self {
        let mut signal = Signal::new(id, penalty);
        signal.action = Some(Action::RateLimit);
        signal.retry_after = Some(retry_after);
        signal.evidence.extend(evidence);
        signal.evidence.push(Evidence::number("retry_after_ms", retry_after.as_millis() as f64, None));
        signal
    }
}
