//! A short property run over the fuzz targets' inputs (see `fuzz/`), so the
//! normal suite catches a panic on hostile input even when nobody runs
//! AFL++: random bytes, and random edits of real inputs, into the capture
//! reader and the replay pipeline, the HAR and access-log importers, the
//! configuration loader and the signature compiler. No coverage guidance
//! here; that is what `fuzz/` is for.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::OnceLock;

use palisade::capture::record::RecordRef;
use palisade::replay::run::{Engine, Prepared};
use proptest::prelude::*;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(&palisade::config::Config::default()).expect("defaults compile"))
}

fn decide(record: &RecordRef<'_>) {
    let mut prepared = Prepared::default();
    if prepared.fill(record).is_ok() {
        engine().set_clock(prepared.at);
        let _ = engine().run(&prepared);
    }
}

const CAPTURE_LINE: &str = r#"{"ts":1795915664.5,"client_ip":"192.0.2.1","method":"POST","target":"/login?next=%2F","headers":[["Host","a"],["User-Agent","python-requests/2.34.2"],["Content-Type","application/x-www-form-urlencoded"]],"body":"username=alice&password=x","status":401}"#;

/// A real input with a few bytes changed: closer to valid than random
/// bytes, so the parsers get past their first check.
fn mutated(seed: &'static str) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8).prop_map(move |edits| {
        let mut bytes = seed.as_bytes().to_vec();
        for (at, byte) in edits {
            let index = at.index(bytes.len());
            bytes[index] = byte;
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn capture_lines_never_panic(data in prop_oneof![mutated(CAPTURE_LINE), proptest::collection::vec(any::<u8>(), 0..512)]) {
        let mut lines = palisade::capture::CaptureLines::with_max_line(&data[..], 4096);
        while let Some(next) = lines.next_line() {
            if let Ok((_, text)) = next
                && let Ok(record) = serde_json::from_str::<RecordRef<'_>>(text)
            {
                decide(&record);
            }
        }
    }

    #[test]
    fn request_heads_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), split in any::<prop::sample::Index>()) {
        let heads = palisade::listen::WireHeads::default();
        let mut recorder = palisade::listen::HeadRecorder::new(heads, 16 * 1024, 100);
        let split = split.index(data.len() + 1);
        recorder.feed(&data[..split]);
        recorder.feed(&data[split..]);
        let record = RecordRef {
            ts: 1.0,
            client_ip: IpAddr::from([192, 0, 2, 1]),
            method: Cow::Borrowed("GET"),
            target: String::from_utf8_lossy(&data),
            version: None,
            headers: vec![(Cow::Borrowed("x-fuzz"), String::from_utf8_lossy(&data))],
            body: None,
            body_b64: None,
            status: None,
            label: None,
            source: None,
            id: None,
        };
        decide(&record);
    }

    #[test]
    fn importers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&data);
        let _ = palisade::capture::import_nginx::import_nginx(&text, palisade::capture::OnBadLine::Skip);
        let _ = palisade::capture::import_har::import_har(&text, IpAddr::from([192, 0, 2, 1]));
        let har = format!(r#"{{"log":{{"entries":[{{"startedDateTime":"2026-11-29T01:40:00Z","request":{{"method":"GET","url":"https://a{text:?}","headers":[]}},"response":{{"status":200}}}}]}}}}"#);
        if let Ok(imported) = palisade::capture::import_har::import_har(&har, IpAddr::from([192, 0, 2, 1])) {
            for record in &imported.records {
                let _ = record.to_request();
            }
        }
    }

    #[test]
    fn configurations_and_rule_files_never_panic(data in prop_oneof![
        mutated("[limits]\nmax_headers = 100\n[timeouts]\nidle_ms = 60000\n[[route]]\nname = \"a\"\nprofile = \"login\"\npath = \"/a\"\n"),
        mutated("[[rule]]\nid = \"x.y\"\nfield = \"header:user-agent\"\ncontains = \"curl\"\nscore = 5\n"),
    ]) {
        let Ok(text) = std::str::from_utf8(&data) else { return Ok(()) };
        let _ = palisade::app::parse_str(text, "fuzz.toml");
        let source = palisade::signatures::RuleSource { name: "fuzz.toml".into(), text: text.into() };
        let _ = palisade::signatures::SignatureSet::from_sources(&[source], &[], &[]);
    }
}
