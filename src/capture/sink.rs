//! Capture mode of `palisade serve`: requests handed to a writer thread
//! through a bounded queue. A full queue drops the record and counts it;
//! a request never waits for the disk.
//!
//! The sink is compiled from `[capture]` with the rest of the
//! configuration (so `palisade check` reports its problems) without
//! touching the disk, so `check`, `replay` and `explain` accept a
//! production configuration anywhere; `serve` opens the file at start and
//! on reload ([`CaptureSink::open`]), and a sink never opened opens it at
//! the first request it captures. Writers are shared by file path across
//! reloads, so a reload never has two threads rotating one file.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::record::{CaptureRecord, encode_body, nanos_to_ts, version_name};
use super::redact::Redactor;
use super::write::{CaptureWriter, Rotation};
use crate::config::{CaptureConfig, Config, Invalid};
use crate::pipeline::Decision;
use crate::routes::Route;

/// Records waiting for the writer thread, at most.
const QUEUE_RECORDS: usize = 8 * 1024;

#[derive(Debug)]
pub struct CaptureSink {
    path: PathBuf,
    rotation: Rotation,
    /// Route names captured; empty is every route.
    routes: Vec<String>,
    sample: f64,
    redactor: Redactor,
    writer: OnceLock<Option<Arc<WriterHandle>>>,
}

/// Counters of one capture file's writer.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Records queued for writing.
    pub queued: AtomicU64,
    /// Records dropped because the queue was full (or the file could not
    /// be opened).
    pub dropped: AtomicU64,
    /// Records the writer failed to write.
    pub failed: AtomicU64,
}

#[derive(Debug)]
struct WriterHandle {
    sender: SyncSender<CaptureRecord>,
    stats: Arc<CaptureStats>,
}

/// A request on its way to the capture: built (and redacted) when the
/// decision is made, finished with the upstream's status.
#[derive(Debug)]
pub struct PendingCapture {
    record: CaptureRecord,
    writer: Arc<WriterHandle>,
}

impl CaptureSink {
    /// The sink `[capture]` asks for, `None` without the section.
    pub fn from_config(config: &Config) -> Result<Option<Arc<CaptureSink>>, Vec<Invalid>> {
        let Some(capture) = &config.capture else { return Ok(None) };
        let problems = check(config, capture);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Some(Arc::new(CaptureSink {
            path: config.resolve_path(capture.path.get_ref()),
            rotation: Rotation { max_file_bytes: capture.max_file_bytes, max_files: capture.max_files },
            routes: capture.routes.iter().map(|r| r.get_ref().clone()).collect(),
            sample: capture.sample,
            redactor: Redactor::new(
                capture.redact_fields.iter().map(String::as_str).chain(login_password_fields(config)),
                capture.redact_headers.iter().map(|h| h.get_ref().as_str()),
            ),
            writer: OnceLock::new(),
        })))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer's counters, once it has started.
    pub fn stats(&self) -> Option<Arc<CaptureStats>> {
        self.writer.get().and_then(|w| w.as_ref()).map(|w| w.stats.clone())
    }

    /// Start capturing a request, when its route is captured and the
    /// request is in the sample: the record is built and redacted now (the
    /// request's parts move on to the upstream), and finished by
    /// [`PendingCapture::finish`]. `body` is the inspected body, on routes
    /// that read it.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        &self,
        route: &Route,
        decision: &Decision,
        method: &http::Method,
        uri: &http::Uri,
        version: http::Version,
        headers: &http::HeaderMap,
        wire_names: Option<&[Box<str>]>,
        body: Option<&[u8]>,
        client_ip: IpAddr,
    ) -> Option<PendingCapture> {
        if !self.routes.is_empty() && !self.routes.iter().any(|r| **r == *route.name) {
            return None;
        }
        // A different draw than the decision log's sample of the same ids.
        let draw = decision.request_id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) as f64 / u64::MAX as f64;
        if self.sample < 1.0 && draw >= self.sample {
            return None;
        }
        let writer = self.writer()?;
        let mut record = CaptureRecord::new(
            nanos_to_ts(decision.at),
            client_ip,
            method.as_str(),
            uri.path_and_query().map_or("/", |pq| pq.as_str()),
            headers_in_wire_order(headers, wire_names),
        );
        record.version = Some(version_name(version).to_string());
        if let Some(body) = body {
            (record.body, record.body_b64) = encode_body(body);
        }
        self.redactor.redact_record(&mut record);
        Some(PendingCapture { record, writer })
    }

    /// Open the capture file (or join the writer already writing it).
    pub fn open(&self) -> std::io::Result<()> {
        let mut failure = None;
        let writer = self.writer.get_or_init(|| match shared_writer(&self.path, self.rotation) {
            Ok(writer) => Some(writer),
            Err(error) => {
                failure = Some(error);
                None
            }
        });
        match (writer, failure) {
            (Some(_), _) => Ok(()),
            (None, Some(error)) => Err(error),
            (None, None) => Err(std::io::Error::other("an earlier attempt to open it failed")),
        }
    }

    fn writer(&self) -> Option<Arc<WriterHandle>> {
        let writer = self.writer.get_or_init(|| match shared_writer(&self.path, self.rotation) {
            Ok(writer) => Some(writer),
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "cannot open the capture file; capturing nothing");
                None
            }
        });
        writer.clone()
    }
}

impl PendingCapture {
    /// Queue the record with the upstream's status (`None` when palisade
    /// answered itself or the upstream failed).
    pub fn finish(mut self, status: Option<u16>) {
        self.record.status = status;
        match self.writer.sender.try_send(self.record) {
            Ok(()) => {
                self.writer.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let dropped = self.writer.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped == 1 || dropped.is_multiple_of(10_000) {
                    tracing::warn!(dropped, "capture queue full: requests dropped from the capture");
                }
            }
        }
    }
}

/// Header pairs in the order the client sent them: the recorded wire
/// names (original case, repeats) take their values in turn from the
/// parsed headers; without wire names (HTTP/2), the parsed order.
fn headers_in_wire_order(headers: &http::HeaderMap, wire_names: Option<&[Box<str>]>) -> Vec<(String, String)> {
    let text = |value: &http::HeaderValue| String::from_utf8_lossy(value.as_bytes()).into_owned();
    let Some(names) = wire_names else {
        return headers.iter().map(|(name, value)| (name.as_str().to_string(), text(value))).collect();
    };
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut pairs = Vec::with_capacity(names.len());
    for name in names {
        let lower = name.to_ascii_lowercase();
        let index = taken.entry(lower.clone()).or_insert(0);
        if let Some(value) = headers.get_all(lower.as_str()).iter().nth(*index) {
            pairs.push((name.to_string(), text(value)));
        }
        *index += 1;
    }
    pairs
}

/// The password fields the login routes name (`password_field`, and the
/// last part of `password_json_pointer`): always redacted, whatever
/// `redact_fields` says.
fn login_password_fields(config: &Config) -> impl Iterator<Item = &str> {
    config.routes.iter().filter_map(|route| route.login.as_ref()).flat_map(|login| {
        let pointer = login.password_json_pointer.as_ref().and_then(|p| p.get_ref().rsplit('/').next());
        login.password_field.as_deref().into_iter().chain(pointer).filter(|name| !name.is_empty())
    })
}

fn check(config: &Config, capture: &CaptureConfig) -> Vec<Invalid> {
    let mut problems = Vec::new();
    if capture.path.get_ref().trim().is_empty() {
        problems.push(Invalid::new(capture.path.span(), "capture.path", "a file path is needed"));
    }
    if !(0.0..=1.0).contains(&capture.sample) {
        problems.push(Invalid::new(0..0, "capture.sample", "a fraction between 0.0 and 1.0"));
    }
    if capture.max_file_bytes != 0 && capture.max_file_bytes < 4096 {
        problems.push(Invalid::new(0..0, "capture.max_file_bytes", "0 (never rotate) or at least 4096"));
    }
    let known: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).chain(["default"]).collect();
    for (index, route) in capture.routes.iter().enumerate() {
        if !known.contains(&route.get_ref().as_str()) {
            problems.push(Invalid::new(
                route.span(),
                format!("capture.routes[{index}]"),
                format!("no route is named {:?} (routes: {})", route.get_ref(), known.join(", ")),
            ));
        }
    }
    for (index, header) in capture.redact_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(header.get_ref().as_bytes()).is_err() {
            problems.push(Invalid::new(
                header.span(),
                format!("capture.redact_headers[{index}]"),
                "not a valid header name",
            ));
        }
    }
    problems
}

type Registry = Mutex<HashMap<PathBuf, Weak<WriterHandle>>>;

/// The writer of `path`: the running one if any sink still holds it, else
/// a new thread.
fn shared_writer(path: &Path, rotation: Rotation) -> std::io::Result<Arc<WriterHandle>> {
    static WRITERS: OnceLock<Registry> = OnceLock::new();
    let mut writers = WRITERS.get_or_init(Registry::default).lock().unwrap_or_else(|e| e.into_inner());
    writers.retain(|_, writer| writer.strong_count() > 0);
    if let Some(writer) = writers.get(path).and_then(Weak::upgrade) {
        return Ok(writer);
    }
    let writer = CaptureWriter::open(path, rotation)?;
    let (sender, receiver) = sync_channel(QUEUE_RECORDS);
    let stats = Arc::new(CaptureStats::default());
    let thread_stats = stats.clone();
    std::thread::Builder::new().name("capture".into()).spawn(move || write_records(receiver, writer, &thread_stats))?;
    let handle = Arc::new(WriterHandle { sender, stats });
    writers.insert(path.to_path_buf(), Arc::downgrade(&handle));
    Ok(handle)
}

fn write_records(receiver: Receiver<CaptureRecord>, mut writer: CaptureWriter, stats: &CaptureStats) {
    let mut reported = false;
    while let Ok(record) = receiver.recv() {
        if let Err(error) = writer.write_record(&record) {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            if !reported {
                tracing::error!(path = %writer.path().display(), %error, "cannot write to the capture file");
                reported = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order_case_and_repeats_are_kept() {
        let mut headers = http::HeaderMap::new();
        headers.append("host", "a".parse().unwrap());
        headers.append("accept", "1".parse().unwrap());
        headers.append("x-b", "2".parse().unwrap());
        headers.append("accept", "3".parse().unwrap());
        let names: Vec<Box<str>> = ["Accept", "Host", "X-B", "accept"].into_iter().map(Box::from).collect();
        let pairs = headers_in_wire_order(&headers, Some(&names));
        let expected = [("Accept", "1"), ("Host", "a"), ("X-B", "2"), ("accept", "3")];
        assert_eq!(pairs, expected.map(|(n, v)| (n.to_string(), v.to_string())));
    }

    #[test]
    fn checking_touches_no_disk_and_opening_reports_a_bad_path() {
        let text = "[capture]\npath = \"/nonexistent-dir/c.jsonl\"\n";
        let config = crate::app::parse_str(text, "c.toml").expect("a path elsewhere is fine to check and replay");
        let sink = CaptureSink::from_config(&config).unwrap().unwrap();
        assert!(sink.open().is_err());
        assert!(sink.open().is_err(), "and stays failed");
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[capture]\npath = {:?}\n", dir.path().join("c.jsonl").display().to_string());
        let config = crate::app::parse_str(&text, "c.toml").unwrap();
        let (first, second) =
            (CaptureSink::from_config(&config).unwrap().unwrap(), CaptureSink::from_config(&config).unwrap().unwrap());
        first.open().unwrap();
        second.open().unwrap();
        assert!(Arc::ptr_eq(&first.writer().unwrap(), &second.writer().unwrap()), "one writer per file");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (sender, receiver) = sync_channel(1);
        let writer = Arc::new(WriterHandle { sender, stats: Arc::default() });
        let record = CaptureRecord::new(1.0, "192.0.2.1".parse().unwrap(), "GET", "/", Vec::new());
        for _ in 0..3 {
            PendingCapture { record: record.clone(), writer: writer.clone() }.finish(Some(200));
        }
        assert_eq!(writer.stats.queued.load(Ordering::Relaxed), 1);
        assert_eq!(writer.stats.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(receiver.try_recv().unwrap().status, Some(200));
    }

    #[test]
    fn login_password_fields_are_always_redacted() {
        let text = "[capture]\nredact_fields = []\n[[route]]\nname = \"login\"\nprofile = \"login\"\npath = \"/login\"\n\
                    [route.login]\npassword_field = \"secret_word\"\npassword_json_pointer = \"/auth/pw\"\n";
        let config = crate::app::parse_str(text, "c.toml").unwrap();
        let sink = CaptureSink::from_config(&config).unwrap().unwrap();
        assert!(sink.redactor.is_secret("secret_word") && sink.redactor.is_secret("pw"));
        assert!(!sink.redactor.is_secret("password"), "redact_fields = [] replaced the default list");
    }

    #[test]
    fn configuration_problems_are_reported() {
        let text = "[capture]\npath = \"\"\nroutes = [\"nope\"]\nsample = 2.0\n";
        let error = crate::app::parse_str(text, "c.toml").unwrap_err().to_string();
        assert!(error.contains("capture.path"), "{error}");
        assert!(error.contains("capture.routes[0]: no route is named \"nope\""), "{error}");
        assert!(error.contains("capture.sample"), "{error}");
    }
}
