//! The decision log: one JSON line per non-allow decision, plus a sample
//! of allowed requests.
//!
//! Lines are handed to a writer thread through a bounded queue so a slow
//! disk never slows a request; when the queue is full the line is dropped
//! and counted (`palisade_decision_log_dropped_total`). The log carries the
//! normalized path only (never the query string or the body), so neither
//! passwords nor tokens in URLs reach it.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use serde::Serialize;

use crate::config::{DecisionLogConfig, RouteMode};
use crate::identify::Identity;
use crate::metrics::Metrics;
use crate::outcome::LoginOutcome;
use crate::pipeline::Decision;
use crate::signal::{Action, Signal};

const QUEUE_LINES: usize = 16 * 1024;

/// Facts about a request that the decision itself does not hold.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    pub client: std::net::IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub profile: &'a str,
    pub upstream_status: Option<u16>,
    pub login_outcome: Option<LoginOutcome>,
    pub decision_time: Duration,
    pub upstream_time: Option<Duration>,
    /// JA4 of the connection's TLS ClientHello, when palisade terminated TLS.
    pub ja4: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: String,
    client: std::net::IpAddr,
    method: &'a str,
    path: &'a str,
    route: &'a str,
    profile: &'a str,
    mode: &'static str,
    fingerprint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    partner: Option<&'a str>,
    /// How the partner was proven: `mtls`, `signature`, `api_key`, `cidr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    partner_by: Option<&'static str>,
    /// The proof itself: the signature's key id, the certificate's
    /// fingerprint and subject (never an API key).
    #[serde(skip_serializing_if = "Option::is_none")]
    partner_proof: Option<&'a str>,
    score: u8,
    action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    would_score: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    would_action: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_s: Option<u64>,
    /// How a challenge was served by palisade itself (`page`, `status`);
    /// absent when it was only forwarded with the action header.
    #[serde(skip_serializing_if = "Option::is_none")]
    challenge: Option<&'static str>,
    detections: Vec<&'a str>,
    signals: &'a [Signal],
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login_outcome: Option<&'static str>,
    decision_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ja4: Option<&'a str>,
}

/// Render a decision as one JSON log line (no trailing newline).
pub fn render_line(decision: &Decision, facts: &RequestFacts<'_>) -> String {
    let (partner, partner_by, partner_proof) = match &decision.identity {
        Identity::Partner { partner, by, proof } => (Some(&*partner.name), Some(by.as_str()), proof.as_deref()),
        Identity::Anonymous => (None, None, None),
    };
    let line = Line {
        time: rfc3339_millis(decision.at),
        request_id: decision.request_id.to_string(),
        client: facts.client,
        method: facts.method,
        path: facts.path,
        route: facts.route,
        profile: facts.profile,
        mode: match decision.mode {
            RouteMode::Enforce => "enforce",
            RouteMode::Monitor => "monitor",
        },
        fingerprint: &decision.fingerprint,
        partner,
        partner_by,
        partner_proof,
        score: decision.score(),
        action: decision.action(),
        would_score: decision.verdict.would.map(|w| w.score),
        would_action: decision.verdict.would.map(|w| w.action),
        retry_after_s: decision.verdict.enforced.retry_after.map(retry_after_secs),
        challenge: decision.context.get::<crate::session::SessionOutcome>().and_then(|s| s.challenge.as_ref()).map(
            |c| match c {
                crate::session::ChallengeAnswer::Page { .. } => "page",
                crate::session::ChallengeAnswer::Status { .. } => "status",
            },
        ),
        detections: decision.enforced_detections().collect(),
        signals: &decision.signals,
        upstream_status: facts.upstream_status,
        login_outcome: facts.login_outcome.map(LoginOutcome::as_str),
        decision_us: facts.decision_time.as_nanos() as f64 / 1000.0,
        upstream_ms: facts.upstream_time.map(|t| t.as_micros() as f64 / 1000.0),
        ja4: facts.ja4,
    };
    serde_json::to_string(&line).expect("decision lines serialize")
}

/// Whole seconds to tell a client to wait, never 0.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[derive(Debug, Clone)]
pub struct DecisionLog {
    sender: Option<SyncSender<String>>,
    sample_allowed: f64,
    metrics: Arc<Metrics>,
}

impl DecisionLog {
    /// Open the log the configuration names and start its writer thread.
    pub fn open(config: &DecisionLogConfig, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let sink: Option<Box<dyn Write + Send>> = match config.path.as_str() {
            "off" | "" => None,
            "-" => Some(Box::new(std::io::stdout())),
            path => Some(Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)),
        };
        let sender = sink.map(|sink| {
            let (sender, receiver) = sync_channel(QUEUE_LINES);
            std::thread::Builder::new()
                .name("decision-log".into())
                .spawn(move || write_lines(receiver, sink))
                .expect("spawn decision log writer");
            sender
        });
        Ok(DecisionLog { sender, sample_allowed: config.sample_allowed.clamp(0.0, 1.0), metrics })
    }

    /// Whether this decision goes in the log: every non-allow decision, and
    /// a deterministic sample (by request id) of allowed ones.
    pub fn wants(&self, decision: &Decision) -> bool {
        if self.sender.is_none() {
            return false;
        }
        decision.action() != Action::Allow
            || (self.sample_allowed > 0.0 && (decision.request_id.0 as f64 / u64::MAX as f64) < self.sample_allowed)
    }

    pub fn write(&self, line: String) {
        let Some(sender) = &self.sender else { return };
        match sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.decision_log_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_lines(receiver: Receiver<String>, mut sink: Box<dyn Write + Send>) {
    while let Ok(line) = receiver.recv() {
        let _ = sink.write_all(line.as_bytes());
        let _ = sink.write_all(b"\n");
        // Drain what is queued before flushing, so bursts cost one flush.
        while let Ok(line) = receiver.try_recv() {
            let _ = sink.write_all(line.as_bytes());
            let _ = sink.write_all(b"\n");
        }
        let _ = sink.flush();
    }
}

/// `2026-11-29T02:40:13.123Z` from nanoseconds since the epoch.
pub fn rfc3339_millis(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let millis = (nanos / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, (rem / 60) % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(1_795_915_664_658_000_000), "2026-11-29T01:27:44.658Z");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(6)), 6);
        assert_eq!(retry_after_secs(Duration::from_millis(6001)), 7);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
