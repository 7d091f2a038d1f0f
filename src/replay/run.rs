//! The replay engine: captured requests through the full pipeline, in
//! time order, on a manual clock set to each request's `ts`.
//!
//! Deterministic: a fixed request-id seed, fresh counters, no sleeping and
//! no network; two runs over the same captures make the same decisions.
//! Requests of several captures are interleaved by `ts` (ties go to the
//! capture named first); within one capture, line order is kept, and a
//! request whose `ts` is earlier than the clock runs at the clock's time
//! (the clock never goes back) and is counted as out of order.

use std::net::IpAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::headers::{HeaderBlock, HeaderBlocks};
use crate::capture::line::{HeadersRead, recycle_headers};
use crate::capture::read::{BadLine, CaptureLines, OnBadLine, open_capture};
use crate::capture::record::{Header, RecordRef, fill_body, parse_method, parse_target, parse_version};
use crate::clock::{ManualClock, Nanos, SharedClock};
use crate::config::{Config, Invalid};
use crate::error::Error;
use crate::fingerprint::Fingerprints;
use crate::lifecycle::{Arrival, Ending, Lifecycle, Reporters, Routed};
use crate::outcome::ResponseFacts;
use crate::pipeline::{Decision, Pipeline, PipelineBuilder};
use crate::request_id::RequestIds;
use crate::store::{CounterStore, LocalStore};
use crate::view::{Known, RequestView};

/// The request-id seed of every replay, so ids repeat between runs.
pub const REPLAY_SEED: u64 = 0x7e91_a7ed;

/// One configuration's pipeline on its own clock and counters.
#[derive(Debug)]
pub struct Engine {
    lifecycle: Lifecycle,
    clock: Arc<ManualClock>,
    /// Each request shape's route (see [`Prepared::shape`]): the same
    /// method and target find the same route, and normalizing the path and
    /// finding its route again cost ~450 instructions a request. Emptied
    /// when full.
    routes: std::sync::Mutex<hashbrown::HashMap<u64, Routed>>,
}

impl Engine {
    pub fn new(config: &Config) -> Result<Engine, Vec<Invalid>> {
        let clock = Arc::new(ManualClock::new(0));
        let shared: SharedClock = clock.clone();
        let store = Arc::new(CounterStore::Local(LocalStore::new(shared.clone())));
        // Distinct counts depend on the hashes of what they count: without a
        // configured key, a fixed one keeps replays identical between runs
        // (nothing a replay counts outlives it).
        let mut config = config.clone();
        if config.store.hash_key.is_empty() {
            config.store.hash_key = "palisade replay".into();
        }
        let pipeline = PipelineBuilder::new(&config).build(store, shared, RequestIds::new(REPLAY_SEED))?;
        // Replay writes no capture of its own.
        Ok(Engine { lifecycle: Lifecycle::new(pipeline, None), clock, routes: std::sync::Mutex::default() })
    }

    pub fn pipeline(&self) -> &Pipeline {
        self.lifecycle.pipeline()
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Move this engine's clock to `at` (it never goes back).
    pub fn set_clock(&self, at: Nanos) {
        self.clock.set(at);
    }

    /// Decide one request at its time, then, when the request would have
    /// reached the upstream and the capture knows the status, observe it
    /// (as the proxy does once the upstream has answered): the lifecycle
    /// every front door runs, on the replay's clock and counters.
    pub fn run(&self, request: &Prepared) -> (Decision, Arc<str>) {
        self.clock.set(request.at);
        let routed = self.route(request);
        let body = request.body_for(routed.inspects_body());
        let known = Known { fingerprints: Some(request.fingerprints.clone()), shape: Some(request.shape) };
        let mut exchange =
            self.lifecycle.decide_now_knowing(routed, &request.arrival(), body, known, Reporters::default());
        let ending = match request.status {
            _ if exchange.stops_request() => Ending::Refused,
            Some(status) => Ending::Answered { response: ResponseFacts::status(status), upstream_time: None },
            None => Ending::Unanswered { upstream_time: None },
        };
        self.lifecycle.complete(&mut exchange, ending, Reporters::default());
        (exchange.decision, exchange.route.name.clone())
    }
}

impl Engine {
    /// [`Lifecycle::route`] of the request, found once per shape.
    fn route(&self, request: &Prepared) -> Routed {
        // Replay runs an engine on one thread: the lock is never contended,
        // and a poisoned one only costs the routing.
        let Ok(mut routes) = self.routes.lock() else { return self.lifecycle.route(&request.method, &request.uri) };
        if let Some(routed) = routes.get(&request.shape) {
            return routed.clone();
        }
        let routed = self.lifecycle.route(&request.method, &request.uri);
        if routes.len() >= MAX_SHAPES {
            routes.clear();
        }
        routes.insert(request.shape, routed.clone());
        routed
    }
}

/// A captured request, parsed into what the pipeline reads.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    /// The headers, shared with the other requests of the capture that
    /// sent the same block.
    block: Arc<HeaderBlock>,
    /// Whether the block's wire names are the request's (HTTP/1).
    has_wire_names: bool,
    pub body: Option<Vec<u8>>,
    pub client_ip: IpAddr,
    pub at: Nanos,
    pub status: Option<u16>,
    /// The request's shape (see [`Known::shape`]): the same number for
    /// every request of the capture with this method, version, target and
    /// header block.
    pub shape: u64,
    /// The request's HTTP fingerprints, found once per shape.
    fingerprints: Fingerprints,
    blocks: HeaderBlocks,
    targets: Targets,
    /// The number of the current target in `targets`.
    target: u64,
    shapes: Shapes,
}

impl Default for Prepared {
    fn default() -> Self {
        Prepared {
            method: http::Method::GET,
            uri: http::Uri::from_static("/"),
            version: http::Version::HTTP_11,
            block: Arc::default(),
            has_wire_names: false,
            body: None,
            client_ip: IpAddr::from([0, 0, 0, 0]),
            at: 0,
            status: None,
            shape: 0,
            fingerprints: Fingerprints::default(),
            blocks: HeaderBlocks::default(),
            targets: Targets::default(),
            target: 0,
            shapes: Shapes::default(),
        }
    }
}

impl Prepared {
    pub fn headers(&self) -> &http::HeaderMap {
        &self.block.headers
    }

    /// Header names as recorded (case, order, repeats), for HTTP/1.
    pub fn wire_names(&self) -> Option<&[Box<str>]> {
        self.has_wire_names.then_some(&self.block.wire_names[..])
    }

    /// The request as a front door would hand it to the lifecycle (no
    /// JA4: captures do not record the TLS handshake).
    pub fn arrival(&self) -> Arrival<'_> {
        Arrival {
            method: &self.method,
            uri: &self.uri,
            version: self.version,
            headers: &self.block.headers,
            client_ip: self.client_ip,
            ja4: None,
            wire_names: self.wire_names(),
            client_cert: None,
        }
    }

    /// The body as the proxy reads it: only on routes that inspect it, and
    /// always present there (empty when the capture has none).
    pub fn body_for(&self, inspected: bool) -> Option<&[u8]> {
        inspected.then(|| self.body.as_deref().unwrap_or(&[]))
    }

    /// Route the request and build its view as the lifecycle does, then
    /// run `f` on the view (explain runs stages one by one on it).
    pub fn with_view<T>(&self, lifecycle: &Lifecycle, f: impl FnOnce(&RequestView<'_>) -> T) -> T {
        let routed = lifecycle.route(&self.method, &self.uri);
        let arrival = self.arrival();
        let view = lifecycle.view(&routed, &arrival, self.body_for(routed.inspects_body()));
        f(&view)
    }

    /// Fill from a capture line, reusing this request's buffers.
    pub fn fill(&mut self, record: &RecordRef<'_>) -> Result<(), Error> {
        self.fill_with(record, HeadersRead::Unknown)
    }

    /// [`Prepared::fill`], with how the line's `headers` array was read
    /// ([`RecordRef::parse_known`] asked [`Prepared::known_block`]): a
    /// block found by its text is taken as it is, and a text read is kept
    /// with the block built from it.
    pub fn fill_with(
        &mut self,
        record: &RecordRef<'_>,
        headers: HeadersRead<'_, Arc<HeaderBlock>>,
    ) -> Result<(), Error> {
        self.method = parse_method(&record.method)?;
        // Half of a capture's requests have the target of the request
        // before: parsing it again (a copy into new `Bytes`, a scan) is not
        // needed then.
        if !same_target(&self.uri, &record.target) {
            (self.uri, self.target) = self.targets.parse(&record.target)?;
        }
        self.version = parse_version(record.version.as_deref())?;
        self.block = match headers {
            // Built from this very text before, so within the count too.
            HeadersRead::Known(_, block) => block,
            read => {
                crate::capture::record::check_header_count(record.headers.len())?;
                self.blocks.block(read.text(), &record.headers)?
            }
        };
        // The proxy records wire names on HTTP/1 only.
        self.has_wire_names = matches!(self.version, http::Version::HTTP_10 | http::Version::HTTP_11);
        fill_body(&mut self.body, record.body.as_deref(), record.body_b64.as_deref())?;
        self.client_ip = record.client_ip;
        self.at = crate::capture::record::ts_to_nanos(record.ts);
        self.status = record.status;
        (self.shape, self.fingerprints) =
            self.shapes.of(&self.block, self.target, self.version, &self.method, self.has_wire_names);
        Ok(())
    }
}

impl Prepared {
    /// The header block kept for a `headers` array's text, if any (for
    /// [`RecordRef::parse_known`]).
    pub fn known_block(&self, text: &str) -> Option<Arc<HeaderBlock>> {
        self.blocks.known(text)
    }
}

/// Targets parsed before, by their text. A capture's targets repeat (the
/// million-request corpus has 82 in all, a login endpoint for half its
/// requests), and parsing one (a copy into new `Bytes`, a scan of every
/// byte) was half of filling a request; a clone shares the bytes. Emptied
/// when full, so captures of unique targets keep it bounded.
#[derive(Debug, Clone, Default)]
struct Targets {
    /// Each target's URI and number (numbers are never given twice, so
    /// that a target's number names its text even after an emptying).
    parsed: hashbrown::HashMap<Box<str>, (http::Uri, u64)>,
    numbered: u64,
}

/// Most targets a [`Targets`] keeps.
const MAX_TARGETS: usize = 4096;

impl Targets {
    /// The target as a URI; the same error as parsing it afresh (a target
    /// that does not parse is never kept).
    fn parse(&mut self, target: &str) -> Result<(http::Uri, u64), Error> {
        if let Some(parsed) = self.parsed.get(target) {
            return Ok(parsed.clone());
        }
        let uri = parse_target(target)?;
        if self.parsed.len() >= MAX_TARGETS {
            self.parsed.clear();
        }
        self.numbered += 1;
        self.parsed.insert(Box::from(target), (uri.clone(), self.numbered));
        Ok((uri, self.numbered))
    }
}

/// The shapes (see [`Known::shape`]) of a capture's requests, by header
/// block, target number, version and method. A shape's number is unique in
/// the process (two captures, or two engines, never share one), and a block
/// is held while its shapes are kept, so that its address names it. Emptied
/// when full, like the other caches here.
#[derive(Debug, Clone, Default)]
struct Shapes {
    numbers: hashbrown::HashMap<ShapeKey, (Arc<HeaderBlock>, u64, Fingerprints)>,
}

/// A shape's block (by address), target number, version and method.
type ShapeKey = (usize, u64, http::Version, http::Method);

/// Most shapes a [`Shapes`] keeps.
const MAX_SHAPES: usize = 16 * 1024;

impl Shapes {
    /// The shape of a request with this block, target, version and
    /// method, and its fingerprints (over the block's wire names when
    /// `wire_names`, which the version decides).
    fn of(
        &mut self,
        block: &Arc<HeaderBlock>,
        target: u64,
        version: http::Version,
        method: &http::Method,
        wire_names: bool,
    ) -> (u64, Fingerprints) {
        static NUMBERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let key = (Arc::as_ptr(block) as usize, target, version, method.clone());
        if let Some((_, shape, fingerprints)) = self.numbers.get(&key) {
            return (*shape, fingerprints.clone());
        }
        if self.numbers.len() >= MAX_SHAPES {
            self.numbers.clear();
        }
        let shape = NUMBERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fingerprints = block.fingerprints(version, method, wire_names);
        self.numbers.insert(key, (block.clone(), shape, fingerprints.clone()));
        (shape, fingerprints)
    }
}

/// Whether `uri` is what parsing `target` gives: an origin-form (or `*`)
/// target that is the parsed path and query. A fragment, which the parse
/// drops, makes them differ, and the target is parsed again.
fn same_target(uri: &http::Uri, target: &str) -> bool {
    uri.scheme().is_none()
        && uri.authority().is_none()
        && uri.path_and_query().is_some_and(|path_and_query| path_and_query.as_str() == target)
}

/// Where a request came from, and what the capture says about it.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Index of the capture in the list given.
    pub capture: usize,
    pub line: usize,
    pub label: Option<Arc<str>>,
    /// What produced the request (`source` in the capture).
    pub source: Option<Arc<str>>,
    pub id: Option<Box<str>>,
}

/// A capture being read: its name, lines, bad lines, and its next request.
struct Source {
    lines: CaptureLines<Box<dyn std::io::BufRead + Send>>,
    head: Prepared,
    meta: Meta,
    /// The last line's header list, emptied, for the next line's.
    spare_headers: Vec<Header<'static>>,
    has_head: bool,
    bad: Vec<BadLine>,
    stopped: bool,
}

/// What became of one capture.
#[derive(Debug, Clone)]
pub struct CaptureSummary {
    /// The name given on the command line.
    pub name: String,
    /// The file name without folders (what expectation files use).
    pub file_name: String,
    pub requests: u64,
    pub bad: Vec<BadLine>,
    /// The line the reader stopped at (`--on-bad-line stop`).
    pub stopped_at: Option<usize>,
}

/// The captures of a replay, read together in time order.
pub struct Inputs {
    sources: Vec<Source>,
    summaries: Vec<CaptureSummary>,
    on_bad: OnBadLine,
    labels: Vec<Arc<str>>,
    /// Bytes read from the files so far (for a progress bar).
    pub read_bytes: Arc<AtomicU64>,
    /// Total size of the files.
    pub total_bytes: u64,
}

impl Inputs {
    pub fn open(paths: &[PathBuf], on_bad: OnBadLine) -> Result<Inputs, Error> {
        let read_bytes = Arc::new(AtomicU64::new(0));
        let mut sources = Vec::new();
        let mut summaries = Vec::new();
        let mut total_bytes = 0;
        for (index, path) in paths.iter().enumerate() {
            let reader = open_capture(path, Some(read_bytes.clone()))
                .map_err(|e| Error::read(format!("cannot read capture {}: {e}", path.display())))?;
            total_bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            sources.push(Source {
                lines: CaptureLines::new(reader),
                head: Prepared::default(),
                meta: Meta { capture: index, ..Meta::default() },
                spare_headers: Vec::new(),
                has_head: false,
                bad: Vec::new(),
                stopped: false,
            });
            summaries.push(CaptureSummary {
                name: path.display().to_string(),
                file_name: file_name(path),
                requests: 0,
                bad: Vec::new(),
                stopped_at: None,
            });
        }
        let mut inputs = Inputs { sources, summaries, on_bad, labels: Vec::new(), read_bytes, total_bytes };
        for index in 0..inputs.sources.len() {
            inputs.advance(index);
        }
        Ok(inputs)
    }

    /// Read the next good request of one capture into its head.
    fn advance(&mut self, index: usize) {
        let source = &mut self.sources[index];
        source.has_head = false;
        while !source.stopped {
            let Some(next) = source.lines.next_line() else { break };
            let problem = match next {
                Ok((line, text)) => {
                    match RecordRef::parse_known(text, std::mem::take(&mut source.spare_headers), |headers| {
                        source.head.known_block(headers)
                    }) {
                        Ok((record, headers)) => {
                            let filled = source.head.fill_with(&record, headers);
                            if filled.is_ok() {
                                source.meta.line = line;
                                source.meta.label = record.label.as_deref().map(|l| intern(&mut self.labels, l));
                                source.meta.source = record.source.as_deref().map(|s| intern(&mut self.labels, s));
                                source.meta.id = record.id.as_deref().map(Box::from);
                            }
                            source.spare_headers = recycle_headers(record.headers);
                            match filled {
                                Ok(()) => {
                                    source.has_head = true;
                                    return;
                                }
                                Err(reason) => BadLine { line, reason: reason.to_string() },
                            }
                        }
                        Err(error) => BadLine { line, reason: error.to_string() },
                    }
                }
                Err(bad) => bad,
            };
            let line = problem.line;
            source.bad.push(problem);
            if self.on_bad == OnBadLine::Stop {
                source.stopped = true;
                self.summaries[index].stopped_at = Some(line);
            }
        }
    }

    /// Call `f` with every request in time order.
    pub fn for_each(&mut self, mut f: impl FnMut(&Prepared, &Meta)) {
        self.for_each_until(|request, meta| {
            f(request, meta);
            ControlFlow::Continue(())
        });
    }

    /// Like [`Inputs::for_each`], until `f` says to stop.
    pub fn for_each_until(&mut self, mut f: impl FnMut(&Prepared, &Meta) -> ControlFlow<()>) {
        loop {
            let mut next: Option<usize> = None;
            for (index, source) in self.sources.iter().enumerate() {
                if source.has_head && next.is_none_or(|best| source.head.at < self.sources[best].head.at) {
                    next = Some(index);
                }
            }
            let Some(index) = next else { break };
            let source = &self.sources[index];
            let flow = f(&source.head, &source.meta);
            self.summaries[index].requests += 1;
            if flow.is_break() {
                break;
            }
            self.advance(index);
        }
        for (summary, source) in self.summaries.iter_mut().zip(&mut self.sources) {
            summary.bad = std::mem::take(&mut source.bad);
        }
    }

    pub fn summaries(&self) -> &[CaptureSummary] {
        &self.summaries
    }

    /// Whether the reader stopped at a bad line (`--on-bad-line stop`) in
    /// any capture.
    pub fn stopped(&self) -> bool {
        self.summaries.iter().any(|s| s.stopped_at.is_some())
    }
}

/// The same `Arc` for the same label, so labels cost no allocation per
/// request.
fn intern(labels: &mut Vec<Arc<str>>, label: &str) -> Arc<str> {
    match labels.iter().find(|l| ***l == *label) {
        Some(found) => found.clone(),
        None => {
            let new: Arc<str> = Arc::from(label);
            labels.push(new.clone());
            new
        }
    }
}

pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(target: &str, headers: &str, body: &str) -> String {
        format!(
            r#"{{"ts":1.5,"client_ip":"192.0.2.1","method":"POST","target":{},"headers":[{headers}]{body}}}"#,
            serde_json::to_string(target).unwrap()
        )
    }

    #[test]
    fn each_fill_is_what_a_fresh_request_gets() {
        let lines = [
            line("/a?b=1", r#"["Host","a"],["Accept","*/*"]"#, r#","body":"x=1""#),
            line("/a?b=1", r#"["Host","a"],["Accept","*/*"]"#, ""),
            line("/a#frag", r#"["Host","a"]"#, r#","body_b64":"YQ==""#),
            line("/a", r#"["host","a"]"#, r#","body":"""#),
            line("http://h.example/a", r#"["Host","a"],["Accept","*/*"]"#, r#","body":"longer body""#),
            line("/a", r#"["Host","a"],["Accept","*/*"],["Accept","text/html"]"#, ""),
            line("*", "", ""),
            line("h.example:443", "", ""),
            line("/a", r#"["Host","a"],["Accept","*/*"]"#, ""),
        ];
        let mut reused = Prepared::default();
        for text in &lines {
            let record = RecordRef::parse(text).unwrap();
            reused.fill(&record).unwrap();
            let mut fresh = Prepared::default();
            fresh.fill(&record).unwrap();
            assert_eq!(reused.uri, fresh.uri, "{text}");
            assert_eq!(reused.uri.to_string(), parse_target(&record.target).unwrap().to_string());
            assert_eq!(reused.headers(), fresh.headers(), "{text}");
            assert_eq!(reused.wire_names(), fresh.wire_names(), "{text}");
            assert_eq!(reused.body, fresh.body, "{text}");
        }
        assert_eq!(reused.headers().get_all("accept").iter().count(), 1);
    }

    #[test]
    fn requests_read_from_a_capture_are_what_a_fresh_fill_gets() {
        let block = r#"["Host","a"],["Accept","*/*"]"#;
        let mut lines = vec![
            line("/a", block, ""),
            line("/b", block, r#","body":"x""#),
            line("/c", r#"["Host","a"],["Bad Name","*/*"]"#, ""),
            line("/c", r#"["Host","a"],["Bad Name","*/*"]"#, ""),
            line("/d", r#"["Host","a"],["X","]]"]"#, ""),
            line("/d", r#"["Host","a"],["X","]]"]"#, ""),
            line("/e", block, r#","extra":1"#),
            line("/f", block, ""),
        ];
        lines.push(lines[0].replace("\"POST\"", "\"GET\",\"version\":\"HTTP/2\""));
        lines.push(lines[0].clone());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let mut inputs = Inputs::open(std::slice::from_ref(&path), OnBadLine::Skip).unwrap();
        let (mut read, mut blocks) = (Vec::new(), Vec::new());
        inputs.for_each(|request, meta| {
            blocks.push(Arc::as_ptr(&request.block) as usize);
            let fields = (request.uri.clone(), request.headers().clone(), request.wire_names().map(<[_]>::to_vec));
            read.push((meta.line, fields, request.body.clone()));
        });
        let mut expected = Vec::new();
        for (number, text) in lines.iter().enumerate() {
            let mut fresh = Prepared::default();
            if fresh.fill(&RecordRef::parse(text).unwrap()).is_ok() {
                let fields = (fresh.uri.clone(), fresh.headers().clone(), fresh.wire_names().map(<[_]>::to_vec));
                expected.push((number + 1, fields, fresh.body.clone()));
            }
        }
        assert_eq!(read, expected);
        let bad = &inputs.summaries()[0].bad;
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(bad[0].reason, bad[1].reason);
        // Lines 1, 2, 8 and 10 share a text: found by it, not read again.
        assert!([1, 5, 7].iter().all(|at| blocks[*at] == blocks[0]), "{blocks:?}");
        assert_ne!(blocks[4], blocks[0], "the line serde_json read has a block of its own");
    }

    #[test]
    fn a_blocks_fingerprints_are_the_ones_a_view_computes() {
        let engine = Engine::new(&Config::default()).unwrap();
        let mut request = Prepared::default();
        let blocks = [r#"["Host","a"],["User-Agent","x"],["Accept","*/*"]"#, r#"["host","a"],["accept","*/*"]"#, ""];
        let mut seen = std::collections::HashSet::new();
        // Twice over: the second time from what the blocks kept.
        for _ in 0..2 {
            for block in blocks {
                for (method, version) in
                    [("GET", "HTTP/1.1"), ("POST", "HTTP/1.1"), ("GET", "HTTP/2"), ("GET", "HTTP/1.0")]
                {
                    let text =
                        line("/a", block, "").replace("\"POST\"", &format!("\"{method}\",\"version\":\"{version}\""));
                    request.fill(&RecordRef::parse(&text).unwrap()).unwrap();
                    let kept = request.fingerprints.clone();
                    let computed = request.with_view(engine.lifecycle(), |view| {
                        (view.shared_fingerprint().clone(), Arc::<str>::from(view.counter_fingerprint()))
                    });
                    assert_eq!((kept.as_sent.clone(), kept.folded.clone()), computed, "{text}");
                    seen.insert(kept.as_sent);
                }
            }
        }
        assert!(seen.len() >= 8, "{seen:?}");
    }

    #[test]
    fn requests_share_a_shape_when_method_version_target_and_headers_are_the_same() {
        let blocks = [r#"["Host","a"],["User-Agent","x"]"#, r#"["host","a"],["user-agent","x"]"#];
        let mut lines = Vec::new();
        for block in blocks {
            for target in ["/a?b=1", "/a", "/b"] {
                for (method, version) in [("GET", "HTTP/1.1"), ("POST", "HTTP/1.1"), ("GET", "HTTP/2")] {
                    let text = line(target, block, r#","body":"x""#)
                        .replace("\"POST\"", &format!("\"{method}\",\"version\":\"{version}\""));
                    lines.push(((block, target, method, version), text));
                }
            }
        }
        let mut request = Prepared::default();
        type What<'a> = (&'a str, &'a str, &'a str, &'a str);
        let mut shapes: Vec<(u64, What<'_>)> = Vec::new();
        let mut next = crate::test_support::xorshift(0x5aa9e);
        for _ in 0..500 {
            let (what, text) = &lines[(next() % lines.len() as u64) as usize];
            // As `Inputs` reads a line: a block is kept by its text.
            let (record, read) =
                RecordRef::parse_known(text, Vec::new(), |headers| request.known_block(headers)).unwrap();
            request.fill_with(&record, read).unwrap();
            for (shape, other) in &shapes {
                assert_eq!(*shape == request.shape, other == what, "{text}");
            }
            shapes.push((request.shape, *what));
        }
        let mut other = Prepared::default();
        other.fill(&RecordRef::parse(&lines[0].1).unwrap()).unwrap();
        assert!(shapes.iter().all(|(shape, _)| *shape != other.shape), "another capture's shapes are its own");
    }

    #[test]
    fn kept_targets_are_the_parsed_ones_and_stay_bounded() {
        let mut targets = Targets::default();
        for target in ["/a?b=1", "/a#frag", "http://h.example/a", "*", "h.example:443", "/a?b=1", "/a#frag"] {
            let (kept, _) = targets.parse(target).unwrap();
            assert_eq!(
                (&kept, kept.to_string()),
                (&parse_target(target).unwrap(), parse_target(target).unwrap().to_string())
            );
        }
        let bad = targets.parse("/a b").unwrap_err().to_string();
        assert_eq!(targets.parse("/a b").unwrap_err().to_string(), bad);
        assert_eq!(bad, parse_target("/a b").unwrap_err().to_string());
        for i in 0..MAX_TARGETS * 2 {
            targets.parse(&format!("/{i}")).unwrap();
            assert!(targets.parsed.len() <= MAX_TARGETS);
        }
    }

    #[test]
    fn a_bad_line_leaves_the_next_one_whole() {
        let mut request = Prepared::default();
        let good = line("/a", r#"["Host","a"],["Accept","*/*"]"#, "");
        let bad = line("/b", r#"["Host","a"],["Bad Name","*/*"]"#, "");
        request.fill(&RecordRef::parse(&good).unwrap()).unwrap();
        assert!(request.fill(&RecordRef::parse(&bad).unwrap()).is_err());
        request.fill(&RecordRef::parse(&good).unwrap()).unwrap();
        assert_eq!(request.uri, "/a");
        assert_eq!(request.headers().len(), 2);
        assert!(request.fill(&RecordRef::parse(&bad).unwrap()).is_err());
        let both = line("/a", "", r#","body":"x","body_b64":"YQ==""#);
        assert!(request.fill(&RecordRef::parse(&both).unwrap()).is_err());
    }
}
