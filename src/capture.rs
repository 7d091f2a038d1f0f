//! Capture files (format v1, see `replay/CAPTURE_FORMAT.md`): one JSON
//! request per line. This module reads them and turns a record into the
//! parts of an HTTP request, so benches, tests and replay feed the
//! pipeline the same requests the proxy saw.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaptureRecord {
    pub ts: f64,
    pub client_ip: std::net::IpAddr,
    pub method: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A capture line that could not be read.
#[derive(Debug)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Read every record; bad lines are returned separately, never dropped silently.
pub fn read_capture(reader: impl BufRead) -> (Vec<CaptureRecord>, Vec<BadLine>) {
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line_number = index + 1;
        match line {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => match serde_json::from_str::<CaptureRecord>(&text) {
                Ok(record) => records.push(record),
                Err(error) => bad.push(BadLine { line: line_number, reason: error.to_string() }),
            },
            Err(error) => bad.push(BadLine { line: line_number, reason: error.to_string() }),
        }
    }
    (records, bad)
}

/// The request a record describes, as the parts the pipeline reads.
#[derive(Debug)]
pub struct CapturedRequest {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Option<Vec<u8>>,
}

impl CaptureRecord {
    pub fn to_request(&self) -> Result<CapturedRequest, String> {
        let method = http::Method::from_bytes(self.method.as_bytes()).map_err(|e| format!("method: {e}"))?;
        let uri: http::Uri = self.target.parse().map_err(|e| format!("target: {e}"))?;
        let version = match self.version.as_deref().unwrap_or("HTTP/1.1") {
            "HTTP/1.0" => http::Version::HTTP_10,
            "HTTP/1.1" => http::Version::HTTP_11,
            "HTTP/2" | "HTTP/2.0" => http::Version::HTTP_2,
            other => return Err(format!("version: unknown {other:?}")),
        };
        let mut headers = http::HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name:?}: {e}"))?;
            let value = http::HeaderValue::from_str(value).map_err(|e| format!("header value: {e}"))?;
            headers.append(name, value);
        }
        Ok(CapturedRequest { method, uri, version, headers, body: self.body.as_ref().map(|b| b.clone().into_bytes()) })
    }

    /// The capture timestamp in nanoseconds since the epoch.
    pub fn ts_nanos(&self) -> u64 {
        (self.ts.max(0.0) * 1e9) as u64
    }
}
