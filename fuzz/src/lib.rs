//! The fuzz targets' bodies, one function per target, each taking the raw
//! input and never panicking on anything a client, a capture file, a HAR
//! export, an access log or a configuration can hold. The binaries in
//! `src/bin/` hand AFL++'s inputs to them; a panic, an abort or a hang is
//! a finding.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::OnceLock;

use palisade::capture::record::RecordRef;
use palisade::config::Config;
use palisade::replay::run::{Engine, Prepared};

/// One replay engine with the default configuration, built once per
/// process: building it per input would be all the fuzzer measured.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| match Engine::new(&Config::default()) {
        Ok(engine) => engine,
        Err(problems) => panic!("the default configuration compiles: {problems:?}"),
    })
}

/// The request-head path: the wire-head recorder fed the bytes in two
/// pieces (split where the first byte says, so chunking is explored too),
/// then the head parsed as hyper would and decided by the whole pipeline
/// (normalization, view, detectors, signatures, decision).
pub fn request_head(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else { return };
    let split = usize::from(split).min(data.len());
    let heads = palisade::listen::WireHeads::default();
    let mut recorder = palisade::listen::HeadRecorder::new(heads.clone(), 16 * 1024, 100);
    recorder.feed(&data[..split]);
    recorder.feed(&data[split..]);

    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut request = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = request.parse(data) else { return };
    let (Some(method), Some(target)) = (request.method, request.path) else { return };
    let headers: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        request.headers.iter().map(|h| (Cow::Borrowed(h.name), String::from_utf8_lossy(h.value))).collect();
    let mut map = http::HeaderMap::new();
    for header in request.headers.iter() {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(header.name.as_bytes()), http::HeaderValue::from_bytes(header.value))
        {
            map.append(name, value);
        }
    }
    let _ = heads.take_matching(&map);
    let version = if request.version == Some(0) { "HTTP/1.0" } else { "HTTP/1.1" };
    let record = RecordRef {
        ts: 1_795_000_000.0,
        client_ip: IpAddr::from([192, 0, 2, 1]),
        method: Cow::Borrowed(method),
        target: Cow::Borrowed(target),
        version: Some(Cow::Borrowed(version)),
        headers,
        body: None,
        body_b64: None,
        status: None,
        label: None,
        source: None,
        id: None,
    };
    decide(&record);
}

/// Run one record through the pipeline, as replay does.
fn decide(record: &RecordRef<'_>) {
    let mut prepared = Prepared::default();
    if prepared.fill(record).is_ok() {
        let engine = engine();
        engine.set_clock(prepared.at);
        let _ = engine.run(&prepared);
    }
}

/// Capture lines: read as `replay` reads them (line cap, UTF-8, JSON),
/// turned into requests and decided.
pub fn capture_lines(data: &[u8]) {
    let mut lines = palisade::capture::CaptureLines::with_max_line(data, 64 * 1024);
    while let Some(next) = lines.next_line() {
        let Ok((_, text)) = next else { continue };
        if let Ok(record) = serde_json::from_str::<RecordRef<'_>>(text) {
            decide(&record);
        }
        if let Ok(record) = serde_json::from_str::<palisade::capture::CaptureRecord>(text) {
            let _ = record.to_request();
        }
    }
}

/// A HAR document imported, and each record turned into a request.
pub fn import_har(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(imported) = palisade::capture::import_har::import_har(text, IpAddr::from([192, 0, 2, 1])) {
        for record in &imported.records {
            let _ = record.to_request();
        }
    }
}

/// An nginx/Apache combined access log imported, each record a request.
pub fn import_nginx(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let imported = palisade::capture::import_nginx::import_nginx(&text, palisade::capture::OnBadLine::Skip);
    for record in &imported.records {
        let _ = record.to_request();
    }
}

/// A configuration file checked as `palisade check` does (structure, then
/// every stage compiled). Inputs naming device or kernel files are left
/// out: reading those is the disk's behaviour, not the loader's (and
/// `breach.path = "/dev/zero"` reads for ever by design of the device).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if ["/dev", "/proc", "/sys"].iter().any(|device| text.contains(device)) {
        return;
    }
    // The structure first, with lines for every problem; then every
    // stage's compiler, as `check` runs them. The shipped rule set is left
    // out of the second step: compiling it costs a hundred times the rest
    // (8 inputs a second instead of hundreds) and the `signatures` target
    // covers the rule compiler.
    let Ok(mut config) = palisade::config::parse_str(text, "fuzz.toml") else { return };
    let _ = palisade::config::ranges::check(&config);
    config.signatures.builtin = false;
    let _ = palisade::app::App::check(&config);
}

/// A signature rule file compiled, and a fixed request scanned with it.
pub fn signatures(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = palisade::signatures::RuleSource { name: "fuzz.toml".into(), text: text.into() };
    let Ok(set) = palisade::signatures::SignatureSet::from_sources(&[source], &[], &[]) else { return };
    let record = RecordRef {
        ts: 1_795_000_000.0,
        client_ip: IpAddr::from([192, 0, 2, 1]),
        method: Cow::Borrowed("POST"),
        target: Cow::Borrowed("/login?next=%2Fhome&q=%27%20or%201%3D1"),
        version: None,
        headers: vec![
            (Cow::Borrowed("Host"), Cow::Borrowed("shop.example")),
            (Cow::Borrowed("User-Agent"), Cow::Borrowed("sqlmap/1.7.2#stable (https://sqlmap.org)")),
            (Cow::Borrowed("Content-Type"), Cow::Borrowed("application/x-www-form-urlencoded")),
        ],
        body: Some(Cow::Borrowed("username=alice&password=hunter2")),
        body_b64: None,
        status: None,
        label: None,
        source: None,
        id: None,
    };
    let mut prepared = Prepared::default();
    if prepared.fill(&record).is_ok() {
        let mut signals = Vec::new();
        prepared.with_view(engine().lifecycle(), |view| set.scan(view, &mut signals));
    }
}
