//! Metrics: counters by route, action and detection, and latency
//! histograms recorded with hdrhistogram, rendered as Prometheus text.
//!
//! Every request records a few counters and two latencies, from every
//! worker thread at once. So each thread writes to its own shard (a lock
//! no other thread takes while it holds it, on memory no other thread
//! writes), and the shards are only summed when the metrics are read.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hashbrown::HashMap;
use hdrhistogram::Histogram;

use crate::signal::Action;

/// Shards per metric. Threads beyond this share shards, which stays
/// correct (each shard is locked) and only brings back some contention.
const SHARDS: usize = 16;

/// This thread's shard, handed out round robin as threads first record.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

/// One value per shard, each on its own cache lines so that threads
/// recording side by side do not invalidate each other's.
#[derive(Debug)]
struct Sharded<T>([CacheAligned<Mutex<T>>; SHARDS]);

#[derive(Debug, Default)]
#[repr(align(128))]
struct CacheAligned<T>(T);

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Sharded(std::array::from_fn(|_| CacheAligned::default()))
    }
}

impl<T> Sharded<T> {
    /// Change this thread's shard.
    fn with<R>(&self, change: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.0[shard_index()].0.lock().ok().map(|mut value| change(&mut value))
    }

    /// Every shard in turn, for reading.
    fn each(&self, mut read: impl FnMut(&T)) {
        for shard in &self.0 {
            if let Ok(value) = shard.0.lock() {
                read(&value);
            }
        }
    }
}

/// Counter maps, summed over shards when read.
type Counts<K> = Sharded<HashMap<K, u64>>;

fn bump<K: std::hash::Hash + Eq>(counts: &Counts<K>, key: K) {
    counts.with(|map| *map.entry(key).or_insert(0) += 1);
}

fn summed<K: std::hash::Hash + Eq + Clone>(counts: &Counts<K>) -> HashMap<K, u64> {
    let mut total = HashMap::new();
    counts.each(|map| {
        for (key, count) in map {
            *total.entry(key.clone()).or_insert(0) += count;
        }
    });
    total
}

#[derive(Debug)]
struct LatencyShard(Histogram<u64>);

impl Default for LatencyShard {
    fn default() -> Self {
        LatencyShard(new_histogram())
    }
}

/// Nanoseconds, 1 ns to 60 s at 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Histogram bucket upper bounds, in nanoseconds and as rendered (in
/// seconds): 1 µs to 10 s in 1–2.5–5 steps, one set for every latency so
/// dashboards can overlay them. Decisions take microseconds, upstream
/// answers and Redis round trips milliseconds.
const BUCKETS: [(u64, &str); 22] = [
    (1_000, "0.000001"),
    (2_500, "0.0000025"),
    (5_000, "0.000005"),
    (10_000, "0.00001"),
    (25_000, "0.000025"),
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    shards: Sharded<LatencyShard>,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let nanos = (elapsed.as_nanos() as u64).clamp(1, 60_000_000_000);
        self.shards.with(|shard| shard.0.saturating_record(nanos));
    }

    /// All shards in one histogram.
    fn merged(&self) -> Histogram<u64> {
        let mut merged = new_histogram();
        self.shards.each(|shard| {
            // Same bounds on every shard: adding cannot fail.
            let _ = merged.add(&shard.0);
        });
        merged
    }

    /// Value at quantile `q` (0..=1), when anything was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let histogram = self.merged();
        (!histogram.is_empty()).then(|| Duration::from_nanos(histogram.value_at_quantile(q)))
    }

    /// Prometheus histogram exposition: cumulative counts at the fixed
    /// [`BUCKETS`] bounds, so replicas' latencies add up in a query
    /// (`histogram_quantile` over `sum by (le)`), which a summary's
    /// per-replica quantiles cannot. The recording side stays the
    /// per-thread HDR shards; buckets are only counted here, on a scrape.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let histogram = self.merged();
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = [0u64; BUCKETS.len()];
        for value in histogram.iter_recorded() {
            // HDR values stand for a small range; its highest equivalent
            // value is what `le` compares against (an upper bound).
            let nanos = histogram.highest_equivalent(value.value_iterated_to());
            if let Some(first) = BUCKETS.iter().position(|(bound, _)| nanos <= *bound) {
                cumulative[first] += value.count_at_value();
            }
        }
        let mut running = 0;
        for ((_, label), count) in BUCKETS.iter().zip(cumulative) {
            running += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{label}\"}} {running}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", histogram.len());
        let sum = histogram.mean() * histogram.len() as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", histogram.len());
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Counts<(Arc<str>, Action)>,
    detections: Counts<(Arc<str>, bool)>,
    upstream_responses: Counts<(Arc<str>, u16)>,
    upstream_errors: Counts<&'static str>,
    /// Partner requests by partner and whether the quota refused them.
    partners: Counts<(Arc<str>, bool)>,
    pub decision_latency: LatencyHistogram,
    pub upstream_latency: LatencyHistogram,
    pub decision_log_dropped: AtomicU64,
    /// Decision log lines left out by the repeat and per-second caps.
    pub decision_log_suppressed: AtomicU64,
    pub rejected_requests: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Challenges served (interstitial pages and 429 challenges).
    pub challenges_issued: AtomicU64,
    /// Answers to the verify path that earned a clearance.
    pub challenges_solved: AtomicU64,
    /// Answers refused (wrong, forged, expired, reused, another client's).
    pub challenges_failed: AtomicU64,
    /// Login attempts that a valid clearance cookie vouched for.
    pub clearances_used: AtomicU64,
    /// Connections closed at accept: their address held its cap.
    pub connections_refused_client: AtomicU64,
    /// Connections answered 503 at accept: the process held its cap.
    pub connections_refused_capacity: AtomicU64,
    /// Connections closed early to make room near the cap.
    pub connections_shed: AtomicU64,
    /// Connections closed for sending no complete head in time.
    pub connections_head_timeout: AtomicU64,
    /// The shared store's numbers, when counters live in Redis.
    store: std::sync::OnceLock<Arc<StoreMetrics>>,
    /// The in-process store's size (with Redis: its fallback counters).
    local_store: std::sync::OnceLock<Arc<LocalStoreGauges>>,
}

impl Metrics {
    pub fn record_decision(&self, route: &Arc<str>, action: Action, signals: &[crate::signal::Signal]) {
        bump(&self.requests, (route.clone(), action));
        for signal in signals {
            bump(&self.detections, (signal.id.clone(), signal.shadow));
        }
    }

    /// An allowlisted partner's request (only partners' requests pay this).
    pub fn record_partner(&self, partner: &Arc<str>, quota_limited: bool) {
        bump(&self.partners, (partner.clone(), quota_limited));
    }

    /// Requests and quota refusals of one partner so far.
    pub fn partner_requests(&self, partner: &str) -> (u64, u64) {
        let mut counts = (0, 0);
        for ((name, limited), count) in summed(&self.partners) {
            if &*name == partner {
                counts.0 += count;
                if limited {
                    counts.1 += count;
                }
            }
        }
        counts
    }

    /// Requests so far by enforced action, over every route.
    pub fn requests_by_action(&self) -> Vec<(Action, u64)> {
        let mut by_action: HashMap<Action, u64> = HashMap::new();
        for ((_, action), count) in summed(&self.requests) {
            *by_action.entry(action).or_insert(0) += count;
        }
        let mut rows: Vec<_> = by_action.into_iter().collect();
        rows.sort();
        rows
    }

    /// Signals raised so far: id, shadow, count; largest first.
    pub fn detection_counts(&self) -> Vec<(Arc<str>, bool, u64)> {
        let mut rows: Vec<_> = summed(&self.detections).into_iter().map(|((id, shadow), n)| (id, shadow, n)).collect();
        rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        rows
    }

    /// The shared store's metrics, when counters live in Redis.
    pub fn store(&self) -> Option<&Arc<StoreMetrics>> {
        self.store.get()
    }

    /// An upstream answer, counted by status class (2xx, 4xx, …).
    pub fn record_upstream(&self, route: &Arc<str>, status: u16) {
        bump(&self.upstream_responses, (route.clone(), status / 100));
    }

    pub fn record_upstream_error(&self, kind: &'static str) {
        bump(&self.upstream_errors, kind);
    }

    /// Render the shared store's metrics with these.
    pub fn attach_store(&self, store: Arc<StoreMetrics>) {
        let _ = self.store.set(store);
    }

    /// Render the in-process store's size with these.
    pub fn attach_local_store(&self, gauges: Arc<LocalStoreGauges>) {
        let _ = self.local_store.set(gauges);
    }

    pub fn requests(&self, route: &str, action: Action) -> u64 {
        summed(&self.requests).iter().filter(|((r, a), _)| &**r == route && *a == action).map(|(_, n)| n).sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP palisade_requests_total Requests by route and enforced action.\n");
        out.push_str("# TYPE palisade_requests_total counter\n");
        let mut rows: Vec<_> = summed(&self.requests).into_iter().collect();
        rows.sort();
        for ((route, action), count) in rows {
            let _ =
                writeln!(out, "palisade_requests_total{{route=\"{}\",action=\"{}\"}} {count}", escape(&route), action);
        }
        out.push_str(
            "# HELP palisade_detections_total Signals raised, by detection id; shadow=\"true\" for shadow rules.\n",
        );
        out.push_str("# TYPE palisade_detections_total counter\n");
        let mut rows: Vec<_> = summed(&self.detections).into_iter().collect();
        rows.sort();
        for ((id, shadow), count) in rows {
            let _ =
                writeln!(out, "palisade_detections_total{{detection=\"{}\",shadow=\"{shadow}\"}} {count}", escape(&id));
        }
        out.push_str(
            "# HELP palisade_partner_requests_total Allowlisted partners' requests; quota_limited=\"true\" when refused by the quota.\n",
        );
        out.push_str("# TYPE palisade_partner_requests_total counter\n");
        let mut rows: Vec<_> = summed(&self.partners).into_iter().collect();
        rows.sort();
        for ((partner, limited), count) in rows {
            let _ = writeln!(
                out,
                "palisade_partner_requests_total{{partner=\"{}\",quota_limited=\"{limited}\"}} {count}",
                escape(&partner)
            );
        }
        out.push_str("# HELP palisade_upstream_responses_total Upstream responses by route and status class.\n");
        out.push_str("# TYPE palisade_upstream_responses_total counter\n");
        let mut rows: Vec<_> = summed(&self.upstream_responses).into_iter().collect();
        rows.sort();
        for ((route, class), count) in rows {
            let _ = writeln!(
                out,
                "palisade_upstream_responses_total{{route=\"{}\",status=\"{class}xx\"}} {count}",
                escape(&route)
            );
        }
        render_by_kind(
            &mut out,
            "palisade_upstream_errors_total",
            "Requests the upstream did not answer, by reason.",
            "reason",
            &self.upstream_errors,
        );
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
                "palisade_decision_log_suppressed_total",
                "Decision log lines left out by decision_log.max_repeats_per_minute or max_lines_per_second.",
                &self.decision_log_suppressed,
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
            ("palisade_challenges_issued_total", "Proof-of-work challenges served.", &self.challenges_issued),
            ("palisade_challenges_solved_total", "Challenge answers that earned a clearance.", &self.challenges_solved),
            (
                "palisade_challenges_failed_total",
                "Challenge answers refused (wrong, forged, expired, reused or another client's).",
                &self.challenges_failed,
            ),
            (
                "palisade_clearances_used_total",
                "Login attempts vouched for by a clearance cookie.",
                &self.clearances_used,
            ),
            (
                "palisade_connections_refused_client_total",
                "Connections closed at accept because their address held limits.max_connections_per_client.",
                &self.connections_refused_client,
            ),
            (
                "palisade_connections_refused_capacity_total",
                "Connections answered 503 at accept because limits.max_connections were open.",
                &self.connections_refused_capacity,
            ),
            (
                "palisade_connections_shed_total",
                "Idle or silent connections closed early to make room near limits.max_connections.",
                &self.connections_shed,
            ),
            (
                "palisade_connections_head_timeout_total",
                "Connections closed for sending no complete request head within timeouts.header_read_ms.",
                &self.connections_head_timeout,
            ),
        ] {
            render_counter(&mut out, name, help, value);
        }
        if let Some(store) = self.store.get() {
            store.render(&mut out);
        }
        if let Some(local) = self.local_store.get() {
            local.render(&mut out);
        }
        out
    }
}

/// The in-process store's size, kept by the store (updated as keys come
/// and go, bytes on its maintenance timer) and read here.
#[derive(Debug, Default)]
pub struct LocalStoreGauges {
    pub keys: AtomicU64,
    pub bytes: AtomicU64,
    pub budget_bytes: AtomicU64,
    pub evicted: AtomicU64,
}

impl LocalStoreGauges {
    fn render(&self, out: &mut String) {
        for (name, help, kind, value) in [
            ("palisade_store_keys", "Keys held by the in-process counter store.", "gauge", &self.keys),
            (
                "palisade_store_bytes",
                "Bytes held by the in-process counter store (its own accounting).",
                "gauge",
                &self.bytes,
            ),
            (
                "palisade_store_budget_bytes",
                "The in-process store's budget ([store] max_memory_mb).",
                "gauge",
                &self.budget_bytes,
            ),
            (
                "palisade_store_evicted_total",
                "Keys evicted from the in-process store to stay in its budget.",
                "counter",
                &self.evicted,
            ),
        ] {
            let _ =
                writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", value.load(Ordering::Relaxed));
        }
    }
}

/// The Redis store's health: round trips, errors, and time spent counting
/// locally because Redis was unavailable.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    pub roundtrip: LatencyHistogram,
    errors: Counts<&'static str>,
    /// Requests decided on local counters because Redis was unavailable.
    pub fallback_requests: AtomicU64,
    /// Requests answered from a remembered denial, without a Redis call.
    pub cached_denials: AtomicU64,
    /// Background writes not sent (queue full, Redis down, a failed call).
    pub writes_dropped: AtomicU64,
    /// Whether Redis is up, and fallback time so far.
    health: Mutex<StoreHealth>,
}

#[derive(Debug, Default)]
struct StoreHealth {
    up: bool,
    down_since: Option<std::time::Instant>,
    down_before: Duration,
}

impl StoreMetrics {
    pub fn record_error(&self, kind: &'static str) {
        bump(&self.errors, kind);
    }

    /// Failed Redis calls so far, every kind.
    pub fn errors_total(&self) -> u64 {
        summed(&self.errors).values().sum()
    }

    pub fn set_up(&self, up: bool) {
        let Ok(mut health) = self.health.lock() else { return };
        match (up, health.down_since) {
            (true, Some(since)) => {
                health.down_before += since.elapsed();
                health.down_since = None;
            }
            (false, None) => health.down_since = Some(std::time::Instant::now()),
            _ => {}
        }
        health.up = up;
    }

    /// Whether Redis is up, and seconds spent in fallback so far.
    pub fn health(&self) -> (bool, f64) {
        match self.health.lock() {
            Ok(health) => {
                let down = health.down_before + health.down_since.map(|s| s.elapsed()).unwrap_or_default();
                (health.up, down.as_secs_f64())
            }
            Err(_) => (false, 0.0),
        }
    }

    fn render(&self, out: &mut String) {
        let (up, down_seconds) = self.health();
        let _ = writeln!(
            out,
            "# HELP palisade_store_redis_up Whether counters are shared through Redis (0: local fallback).\n\
             # TYPE palisade_store_redis_up gauge\npalisade_store_redis_up {}",
            u8::from(up)
        );
        let _ = writeln!(
            out,
            "# HELP palisade_store_fallback_seconds_total Time spent counting locally because Redis was unavailable.\n\
             # TYPE palisade_store_fallback_seconds_total counter\npalisade_store_fallback_seconds_total {down_seconds:.3}"
        );
        render_by_kind(out, "palisade_store_redis_errors_total", "Failed Redis calls, by kind.", "kind", &self.errors);
        for (name, help, value) in [
            (
                "palisade_store_fallback_requests_total",
                "Requests decided on local counters because Redis was unavailable.",
                &self.fallback_requests,
            ),
            (
                "palisade_store_cached_denials_total",
                "Requests answered from a remembered ban or limit, without a Redis call.",
                &self.cached_denials,
            ),
            (
                "palisade_store_writes_dropped_total",
                "Background counter writes not sent to Redis (queue full, Redis down, a failed call).",
                &self.writes_dropped,
            ),
        ] {
            render_counter(out, name, help, value);
        }
        self.roundtrip.render(out, "palisade_store_redis_roundtrip_seconds", "Redis round trips (one per request).");
    }
}

/// A counter without labels, with its help line.
fn render_counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
}

/// A counter with one label whose values are fixed names (`reason`, `kind`).
fn render_by_kind(out: &mut String, name: &str, help: &str, label: &str, counts: &Counts<&'static str>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    let mut rows: Vec<_> = summed(counts).into_iter().collect();
    rows.sort();
    for (kind, count) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{kind}\"}} {count}");
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_from_many_threads_add_up() {
        let metrics = Arc::new(Metrics::default());
        let route: Arc<str> = Arc::from("default");
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                let (metrics, route) = (metrics.clone(), route.clone());
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        metrics.record_decision(&route, Action::Allow, &[]);
                        metrics.record_upstream(&route, 200);
                        metrics.decision_latency.record(Duration::from_micros(3));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let total = 10 * (SHARDS as u64 + 3);
        assert_eq!(metrics.requests("default", Action::Allow), total);
        let text = metrics.render();
        assert!(
            text.contains(&format!("palisade_upstream_responses_total{{route=\"default\",status=\"2xx\"}} {total}"))
        );
        assert!(text.contains(&format!("palisade_decision_latency_seconds_count {total}")), "{text}");
        assert!(text.contains("# TYPE palisade_decision_latency_seconds histogram"), "{text}");
        assert!(text.contains("palisade_decision_latency_seconds_bucket{le=\"0.0000025\"} 0\n"), "{text}");
        assert!(
            text.contains(&format!("palisade_decision_latency_seconds_bucket{{le=\"0.000005\"}} {total}\n")),
            "{text}"
        );
        assert!(text.contains(&format!("palisade_decision_latency_seconds_bucket{{le=\"+Inf\"}} {total}\n")), "{text}");
        // Three significant digits: the median is 3 µs to within 0.1 %.
        let median = metrics.decision_latency.quantile(0.5).unwrap();
        assert!(median.abs_diff(Duration::from_micros(3)) <= Duration::from_nanos(3), "{median:?}");
    }
}
