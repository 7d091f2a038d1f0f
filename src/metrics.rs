//! Metrics: counters by route, action and detection, and latency
//! percentiles from hdrhistogram, rendered as Prometheus text.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::signal::Action;

#[derive(Debug)]
pub struct LatencyHistogram {
    /// Nanoseconds, 1 ns to 60 s at 3 significant digits.
    inner: Mutex<Histogram<u64>>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        let histogram = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
        LatencyHistogram { inner: Mutex::new(histogram) }
    }
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let nanos = (elapsed.as_nanos() as u64).clamp(1, 60_000_000_000);
        if let Ok(mut histogram) = self.inner.lock() {
            histogram.saturating_record(nanos);
        }
    }

    /// Value at quantile `q` (0..=1), when anything was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let histogram = self.inner.lock().ok()?;
        (!histogram.is_empty()).then(|| Duration::from_nanos(histogram.value_at_quantile(q)))
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let Ok(histogram) = self.inner.lock() else { return };
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} summary");
        for q in [0.5, 0.9, 0.99, 0.999] {
            let seconds = if histogram.is_empty() { 0.0 } else { histogram.value_at_quantile(q) as f64 / 1e9 };
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {seconds}");
        }
        let sum = histogram.mean() * histogram.len() as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", histogram.len());
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(Arc<str>, Action), u64>>,
    detections: Mutex<HashMap<(Arc<str>, bool), u64>>,
    upstream_responses: Mutex<HashMap<(Arc<str>, u16), u64>>,
    upstream_errors: Mutex<HashMap<&'static str, u64>>,
    pub decision_latency: LatencyHistogram,
    pub upstream_latency: LatencyHistogram,
    pub decision_log_dropped: AtomicU64,
    pub rejected_requests: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

fn bump<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, u64>>, key: K) {
    if let Ok(mut map) = map.lock() {
        *map.entry(key).or_insert(0) += 1;
    }
}

impl Metrics {
    pub fn record_decision(&self, route: &Arc<str>, action: Action, signals: &[crate::signal::Signal]) {
        bump(&self.requests, (route.clone(), action));
        for signal in signals {
            bump(&self.detections, (signal.id.clone(), signal.shadow));
        }
    }

    /// An upstream answer, counted by status class (2xx, 4xx, …).
    pub fn record_upstream(&self, route: &Arc<str>, status: u16) {
        bump(&self.upstream_responses, (route.clone(), status / 100));
    }

    pub fn record_upstream_error(&self, kind: &'static str) {
        bump(&self.upstream_errors, kind);
    }

    pub fn requests(&self, route: &str, action: Action) -> u64 {
        let map = self.requests.lock().expect("metrics lock");
        map.iter().filter(|((r, a), _)| &**r == route && *a == action).map(|(_, n)| n).sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP palisade_requests_total Requests by route and enforced action.\n");
        out.push_str("# TYPE palisade_requests_total counter\n");
        let mut rows: Vec<_> =
            self.requests.lock().map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default();
        rows.sort();
        for ((route, action), count) in rows {
            let _ =
                writeln!(out, "palisade_requests_total{{route=\"{}\",action=\"{}\"}} {count}", escape(&route), action);
        }
        out.push_str(
            "# HELP palisade_detections_total Signals raised, by detection id; shadow=\"true\" for shadow rules.\n",
        );
        out.push_str("# TYPE palisade_detections_total counter\n");
        let mut rows: Vec<_> =
            self.detections.lock().map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default();
        rows.sort();
        for ((id, shadow), count) in rows {
            let _ =
                writeln!(out, "palisade_detections_total{{detection=\"{}\",shadow=\"{shadow}\"}} {count}", escape(&id));
        }
        out.push_str("# HELP palisade_upstream_responses_total Upstream responses by route and status class.\n");
        out.push_str("# TYPE palisade_upstream_responses_total counter\n");
        let mut rows: Vec<_> = self
            .upstream_responses
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        rows.sort();
        for ((route, class), count) in rows {
            let _ = writeln!(
                out,
                "palisade_upstream_responses_total{{route=\"{}\",status=\"{class}xx\"}} {count}",
                escape(&route)
            );
        }
        out.push_str("# HELP palisade_upstream_errors_total Requests the upstream did not answer, by reason.\n");
        out.push_str("# TYPE palisade_upstream_errors_total counter\n");
        let mut rows: Vec<_> =
            self.upstream_errors.lock().map(|m| m.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default();
        rows.sort();
        for (kind, count) in rows {
            let _ = writeln!(out, "palisade_upstream_errors_total{{reason=\"{kind}\"}} {count}");
        }
        self.decision_latency.render(
            &mut out,
            "palisade_decision_latency_seconds",
            "Time from request view to decision.",
        );
        self.upstream_latency.render(
            &mut out,
            "palisade_upstream_latency_seconds",
            "Time from forwarding to the upstream's response head.",
        );
        for (name, help, value) in [
            (
                "palisade_decision_log_dropped_total",
                "Decision log lines dropped because the writer fell behind.",
                &self.decision_log_dropped,
            ),
            (
                "palisade_rejected_requests_total",
                "Requests answered 4xx before the pipeline (bad or oversize).",
                &self.rejected_requests,
            ),
            ("palisade_config_reloads_total", "Successful configuration reloads.", &self.reloads_ok),
            (
                "palisade_config_reload_failures_total",
                "Reloads rejected; the running configuration was kept.",
                &self.reloads_failed,
            ),
        ] {
            let _ =
                writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
