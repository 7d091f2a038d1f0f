//! The decision log: one JSON line per non-allow decision, plus a sample
//! of allowed requests.
//!
//! Lines are handed to a writer thread through a bounded queue so a slow
//! disk never slows a request; when the queue is full the line is dropped
//! and counted (`palisade_decision_log_dropped_total`). The log carries the
//! normalized path only (never the query string or the body), so neither
//! passwords nor tokens in URLs reach it.
//!
//! A blocked flood once wrote ~700 MB in two minutes. So the log is
//! bounded three ways: repeats of one client, action and first detection
//! are capped per minute (the next line written for them carries how many
//! were left out, `suppressed`), all lines per second are capped (the rest
//! counted in `palisade_decision_log_suppressed_total`), and a log file is
//! rotated by size, keeping a configured number of old files.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::capture::write::{CaptureWriter, Rotation};
use crate::config::{DecisionLogConfig, RouteMode};
use crate::identify::Identity;
use crate::metrics::Metrics;
use crate::model::features::{FEATURES, FeatureVector};
use crate::model::stage::ModelReport;
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
    /// Lines like this one (same client, action and first detection) left
    /// out since the last one written.
    pub suppressed: u64,
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
    /// Each model's probability, when models ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<ModelProbabilities<'a>>,
    /// The model features, with `[decision_log] model_features`.
    #[serde(skip_serializing_if = "Option::is_none")]
    features: Option<FeatureMap<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    suppressed: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// `{"name": probability, ...}` in configuration order.
struct ModelProbabilities<'a>(&'a ModelReport);

impl Serialize for ModelProbabilities<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.names.len()))?;
        for (name, p) in self.0.names.iter().zip(self.0.probabilities()) {
            map.serialize_entry(&**name, &((p * 1e6).round() / 1e6))?;
        }
        map.end()
    }
}

/// `{"feature": value or null, ...}` in feature-table order.
struct FeatureMap<'a>(&'a FeatureVector);

impl Serialize for FeatureMap<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(FEATURES.len()))?;
        for (def, value) in FEATURES.iter().zip(self.0) {
            map.serialize_entry(def.name, &(!value.is_nan()).then_some(*value))?;
        }
        map.end()
    }
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
        model: decision.model().filter(|m| !m.names.is_empty()).map(ModelProbabilities),
        features: decision.model().filter(|m| m.log_features).map(|m| FeatureMap(&m.features)),
        suppressed: facts.suppressed,
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
    budget: Arc<Mutex<LineBudget>>,
}

/// Where lines go: standard output, or a file rotated by size.
enum Sink {
    Stdout(std::io::Stdout),
    File(CaptureWriter),
}

impl DecisionLog {
    /// Open the log the configuration names and start its writer thread.
    pub fn open(config: &DecisionLogConfig, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let rotation = Rotation { max_file_bytes: config.max_file_bytes, max_files: config.max_files };
        let sink = match config.path.as_str() {
            "off" | "" => None,
            "-" => Some(Sink::Stdout(std::io::stdout())),
            path => Some(Sink::File(CaptureWriter::open(std::path::Path::new(path), rotation)?)),
        };
        let sender = sink.map(|sink| {
            let (sender, receiver) = sync_channel(QUEUE_LINES);
            std::thread::Builder::new()
                .name("decision-log".into())
                .spawn(move || write_lines(receiver, sink))
                .expect("spawn decision log writer");
            sender
        });
        let budget = LineBudget::new(config.max_repeats_per_minute, config.max_lines_per_second);
        Ok(DecisionLog {
            sender,
            sample_allowed: config.sample_allowed.clamp(0.0, 1.0),
            metrics,
            budget: Arc::new(Mutex::new(budget)),
        })
    }

    /// Whether this decision from `client` is written: [`Self::wants`] it,
    /// and the line budgets have room. `Some(n)`: write it, saying `n`
    /// like it were left out before it.
    pub fn admit(&self, decision: &Decision, client: IpAddr) -> Option<u64> {
        if !self.wants(decision) {
            return None;
        }
        let detection = decision.enforced_detections().next().unwrap_or("");
        let key = (client, decision.action(), hash_str(detection));
        let seconds = decision.at / 1_000_000_000;
        let admitted = self.budget.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).admit(key, seconds);
        if admitted.is_none() {
            self.metrics.decision_log_suppressed.fetch_add(1, Ordering::Relaxed);
        }
        admitted
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

impl Sink {
    fn write_line(&mut self, mut line: String) {
        line.push('\n');
        let _ = match self {
            Sink::Stdout(out) => out.write_all(line.as_bytes()),
            // One write per line, rotating first when the file is full.
            Sink::File(file) => file.write_line(line.as_bytes()),
        };
    }

    fn flush(&mut self) {
        if let Sink::Stdout(out) = self {
            let _ = out.flush();
        }
    }
}

fn write_lines(receiver: Receiver<String>, mut sink: Sink) {
    while let Ok(line) = receiver.recv() {
        sink.write_line(line);
        // Drain what is queued before flushing, so bursts cost one flush.
        while let Ok(line) = receiver.try_recv() {
            sink.write_line(line);
        }
        sink.flush();
    }
}

/// Which lines count as repeats of each other: client, action, and a hash
/// of the first enforced detection (hashed so the key needs no allocation).
type RepeatKey = (IpAddr, Action, u64);

fn hash_str(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Most repeat keys remembered. An address-rotating flood makes a new key
/// per request; past this the oldest windows are forgotten (and the
/// per-second cap still holds), so the budget's memory stays bounded.
const MAX_REPEAT_KEYS: usize = 65_536;

/// The per-minute and per-second line caps.
#[derive(Debug)]
struct LineBudget {
    per_minute: u32,
    per_second: u32,
    /// Per key: the minute counted, lines written in it, lines left out
    /// since the last one written.
    repeats: HashMap<RepeatKey, (u64, u32, u64)>,
    second: u64,
    lines_this_second: u32,
}

impl LineBudget {
    fn new(per_minute: u32, per_second: u32) -> Self {
        LineBudget { per_minute, per_second, repeats: HashMap::new(), second: 0, lines_this_second: 0 }
    }

    /// `Some(left out before)` when a line for `key` at `seconds` fits.
    fn admit(&mut self, key: RepeatKey, seconds: u64) -> Option<u64> {
        if self.per_second > 0 {
            if seconds != self.second {
                self.second = seconds;
                self.lines_this_second = 0;
            }
            if self.lines_this_second >= self.per_second {
                return None;
            }
        }
        let mut left_out = 0;
        if self.per_minute > 0 {
            let minute = seconds / 60;
            if self.repeats.len() >= MAX_REPEAT_KEYS && !self.repeats.contains_key(&key) {
                self.repeats.retain(|_, (counted, _, _)| *counted == minute);
                if self.repeats.len() >= MAX_REPEAT_KEYS {
                    self.repeats.clear();
                }
            }
            let (counted, written, suppressed) = self.repeats.entry(key).or_insert((minute, 0, 0));
            if *counted != minute {
                (*counted, *written) = (minute, 0);
            }
            if *written >= self.per_minute {
                *suppressed += 1;
                return None;
            }
            *written += 1;
            left_out = std::mem::take(suppressed);
        }
        self.lines_this_second += 1;
        Some(left_out)
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
    fn repeats_are_capped_per_minute_and_counted_on_the_next_line() {
        let mut budget = LineBudget::new(3, 0);
        let key = ("192.0.2.1".parse().unwrap(), Action::Block, hash_str("cred.banned"));
        let other = ("192.0.2.2".parse().unwrap(), Action::Block, hash_str("cred.banned"));
        let first_minute: Vec<_> = (0..10).map(|_| budget.admit(key, 60)).collect();
        assert_eq!(first_minute, [Some(0), Some(0), Some(0), None, None, None, None, None, None, None]);
        assert_eq!(budget.admit(other, 61), Some(0), "another client has its own budget");
        assert_eq!(budget.admit(key, 120), Some(7), "the next minute's first line says what was left out");
        assert_eq!(budget.admit(key, 121), Some(0));
    }

    #[test]
    fn all_lines_are_capped_per_second_and_keys_stay_bounded() {
        let mut budget = LineBudget::new(5, 100);
        let admitted = (0..1000u32)
            .filter(|i| budget.admit((IpAddr::from(i.to_be_bytes()), Action::Block, 0), 7).is_some())
            .count();
        assert_eq!(admitted, 100);
        for i in 0..(MAX_REPEAT_KEYS as u32 + 10) {
            budget.admit((IpAddr::from(i.to_be_bytes()), Action::Block, 0), 1000 + u64::from(i) * 60);
        }
        assert!(budget.repeats.len() <= MAX_REPEAT_KEYS);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(6)), 6);
        assert_eq!(retry_after_secs(Duration::from_millis(6001)), 7);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
