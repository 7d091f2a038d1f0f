//! Shared by `benches/pipeline.rs` and `examples/decision_latency.rs`: the
//! requests of `replay/captures/*.jsonl`, a pipeline built from the default
//! configuration on a manual clock, and one decision (route + view +
//! evaluate) exactly as `listen::handler` runs it, minus the network.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade::capture::{CapturedRequest, read_capture};
use palisade::clock::{ManualClock, SharedClock};
use palisade::config::Config;
use palisade::lifecycle::{Arrival, Lifecycle, Reporters};
use palisade::pipeline::{Decision, PipelineBuilder};
use palisade::request_id::RequestIds;
use palisade::signal::Action;
use palisade::store::{CounterStore, LocalStore};

/// How far the manual clock moves per request of the capture mix: 100 ms,
/// i.e. the mix is replayed at 10 requests/s, one pass of 300 requests in
/// 30 s. Slow enough that the per-client login limit (10 per minute) only
/// trips for clients that repeat login POSTs from one address (the partner
/// script, which the default configuration does not allowlist, and one of
/// curl's addresses) instead of for every login POST after the burst; the
/// benches print the resulting share of each action, since which action
/// wins also depends on the default rule set.
pub const MIX_STEP: Duration = Duration::from_millis(100);

/// One captured request, ready to feed the pipeline.
#[derive(Debug)]
pub struct Captured {
    /// The capture file it came from.
    pub file: String,
    pub client_ip: IpAddr,
    pub request: CapturedRequest,
    /// Header names as sent (wire order and case), which the listen stage
    /// records for HTTP/1 requests and the view fingerprints.
    pub wire_names: Option<Vec<Box<str>>>,
}

fn captures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("replay").join("captures")
}

/// Every request of every `replay/captures/*.jsonl`, files in name order,
/// requests in file order. Panics on anything unreadable: a bench over a
/// silently shrunken capture would measure the wrong thing.
pub fn load_all() -> Vec<Captured> {
    let dir = captures_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no captures in {}", dir.display());
    let mut all = Vec::new();
    for path in files {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        let (records, bad) = read_capture(std::io::BufReader::new(file));
        assert!(bad.is_empty(), "{}: unreadable lines: {bad:?}", path.display());
        let name = path.file_name().expect("file name").to_string_lossy().into_owned();
        for (index, record) in records.iter().enumerate() {
            let request = record.to_request().unwrap_or_else(|e| panic!("{name}: record {}: {e}", index + 1));
            let wire_names = matches!(request.version, http::Version::HTTP_10 | http::Version::HTTP_11)
                .then(|| record.headers.iter().map(|(name, _)| Box::from(name.as_str())).collect());
            all.push(Captured { file: name.clone(), client_ip: record.client_ip, request, wire_names });
        }
    }
    all
}

/// The capture mix in a fixed pseudo-random order (the same every run), so
/// consecutive requests come from different clients and routes as they
/// would at a busy front door, instead of one tool's run after another.
pub fn shuffled(mut requests: Vec<Captured>) -> Vec<Captured> {
    let mut state: u64 = 0x5eed_0f9a_115a_de01;
    for i in (1..requests.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        requests.swap(i, (state % (i as u64 + 1)) as usize);
    }
    requests
}

/// The first request of `file` for which `pick` holds.
pub fn pick<'a>(all: &'a [Captured], file: &str, wanted: impl Fn(&Captured) -> bool) -> &'a Captured {
    all.iter()
        .find(|c| c.file.starts_with(file) && wanted(c))
        .unwrap_or_else(|| panic!("no matching request in {file}*"))
}

/// A clean browser request: Chromium's `GET /` (default route, no limit).
pub fn clean_browser(all: &[Captured]) -> &Captured {
    pick(all, "chromium", |c| c.request.method == http::Method::GET && c.request.uri.path() == "/")
}

/// A blocked attack: sqlmap's `GET /item?id=...` with the longest query
/// (UNION/XSS/xp_cmdshell payload), blocked by the `ua.attack_tool` rule.
pub fn sqlmap_attack(all: &[Captured]) -> &Captured {
    all.iter()
        .filter(|c| c.file.starts_with("sqlmap"))
        .max_by_key(|c| c.request.uri.query().map_or(0, str::len))
        .expect("a sqlmap request")
}

/// The lifecycle of `Config::default()` on a local store and a manual clock.
pub fn default_pipeline() -> (Lifecycle, Arc<ManualClock>) {
    let config = Config::default();
    let clock = Arc::new(ManualClock::new(1_795_915_654_000_000_000));
    let shared: SharedClock = clock.clone();
    let store = Arc::new(CounterStore::Local(LocalStore::new(shared.clone())));
    let pipeline = PipelineBuilder::new(&config)
        .build(store, shared, RequestIds::new(1))
        .unwrap_or_else(|problems| panic!("default config rejected: {problems:?}"));
    (Lifecycle::new(pipeline, None), clock)
}

/// One decision, as every front door makes it: route on the URI's path,
/// the body only on routes that inspect it (always present there, as the
/// proxy reads it before deciding), then the lifecycle's decide step.
#[inline]
pub fn decide(lifecycle: &Lifecycle, captured: &Captured) -> Decision {
    let request = &captured.request;
    let routed = lifecycle.route(&request.method, &request.uri);
    let body = routed.inspects_body().then(|| request.body.as_deref().unwrap_or(&[]));
    lifecycle.decide_now(routed, &arrival(captured), body, Reporters::default()).decision
}

/// The request as the proxy hands it to the lifecycle (no JA4: the
/// captures were made over plain HTTP).
#[inline]
pub fn arrival(captured: &Captured) -> Arrival<'_> {
    let request = &captured.request;
    Arrival {
        method: &request.method,
        uri: &request.uri,
        version: request.version,
        headers: &request.headers,
        client_ip: captured.client_ip,
        ja4: None,
        wire_names: captured.wire_names.as_deref(),
        client_cert: None,
    }
}

/// Share of each action over `decisions` decisions of the mix at
/// [`MIX_STEP`], on a fresh pipeline, as "allow 55.0%, ...".
pub fn mix_actions(mix: &[Captured], decisions: usize) -> String {
    let (pipeline, clock) = default_pipeline();
    let mut counts = [0usize; Action::ALL.len()];
    for captured in mix.iter().cycle().take(decisions) {
        clock.advance(MIX_STEP);
        let action = decide(&pipeline, captured).action();
        counts[Action::ALL.iter().position(|a| *a == action).expect("known action")] += 1;
    }
    Action::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(action, n)| format!("{action} {:.1}%", 100.0 * n as f64 / decisions as f64))
        .collect::<Vec<_>>()
        .join(", ")
}
