//! One capture line (format v1, see `replay/CAPTURE_FORMAT.md`) and the
//! request it describes.

use std::borrow::Cow;
use std::net::IpAddr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::clock::Nanos;
use crate::error::Error;

/// One request of a capture, as written and read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaptureRecord {
    pub ts: f64,
    pub client_ip: IpAddr,
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
    /// A stable name for the request, for expectation files (see
    /// `replay/README.md`); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
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
    /// A record with the required fields; everything optional left out.
    pub fn new(ts: f64, client_ip: IpAddr, method: &str, target: &str, headers: Vec<(String, String)>) -> Self {
        CaptureRecord {
            ts,
            client_ip,
            method: method.to_string(),
            target: target.to_string(),
            version: None,
            headers,
            body: None,
            body_b64: None,
            status: None,
            label: None,
            source: None,
            id: None,
        }
    }

    pub fn to_request(&self) -> Result<CapturedRequest, Error> {
        let method = parse_method(&self.method)?;
        let uri = parse_target(&self.target)?;
        let version = parse_version(self.version.as_deref())?;
        check_header_count(self.headers.len())?;
        let mut headers = http::HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            append_header(&mut headers, name, value)?;
        }
        Ok(CapturedRequest { method, uri, version, headers, body: self.body_bytes()? })
    }

    /// The body as bytes: `body` as UTF-8, or `body_b64` decoded.
    pub fn body_bytes(&self) -> Result<Option<Vec<u8>>, Error> {
        body_bytes(self.body.as_deref(), self.body_b64.as_deref())
    }

    /// The capture timestamp in nanoseconds since the epoch.
    pub fn ts_nanos(&self) -> Nanos {
        ts_to_nanos(self.ts)
    }

    /// Header names in wire order (as recorded), for the HTTP fingerprint.
    pub fn wire_names(&self) -> Vec<Box<str>> {
        self.headers.iter().map(|(name, _)| Box::from(name.as_str())).collect()
    }
}

/// A capture line read without copying its strings, for replay's hot loop.
/// Strings with JSON escapes are unescaped into owned text. Replay reads
/// lines in the shape palisade writes by hand (`capture::line`); serde
/// reads the rest, headers into owned text (a `Cow` in a `Vec` is always
/// owned with serde), which costs nothing that matters on such rare lines.
#[derive(Debug, Deserialize)]
pub struct RecordRef<'a> {
    pub ts: f64,
    pub client_ip: IpAddr,
    #[serde(borrow)]
    pub method: Cow<'a, str>,
    #[serde(borrow)]
    pub target: Cow<'a, str>,
    #[serde(default, borrow)]
    pub version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub headers: Vec<Header<'a>>,
    #[serde(default, borrow)]
    pub body: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub body_b64: Option<Cow<'a, str>>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default, borrow)]
    pub label: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub source: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
}

/// One header of a capture line: name and value.
pub type Header<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Latest capture time taken as it is: 2100-01-01. Later ones (the fuzzer
/// found `"ts":1.8e28`, which overflowed the conversion) are read as this,
/// which leaves the pipeline centuries of headroom for adding windows and
/// ban times to a request's time without overflowing.
pub const MAX_TS: f64 = 4_102_444_800.0;

/// Seconds since the epoch (fractional) to nanoseconds, to the microsecond
/// (a `f64` of today's epoch seconds holds no more); negative (and NaN) is
/// 0, past [`MAX_TS`] is `MAX_TS`.
pub fn ts_to_nanos(ts: f64) -> Nanos {
    // A NaN stays NaN through `clamp`, and `as` turns it into 0.
    (ts.clamp(0.0, MAX_TS) * 1e6).round() as Nanos * 1000
}

/// Nanoseconds since the epoch to capture seconds, kept to the microsecond
/// so the JSON number stays short.
pub fn nanos_to_ts(nanos: Nanos) -> f64 {
    (nanos / 1000) as f64 / 1e6
}

pub fn parse_method(method: &str) -> Result<http::Method, Error> {
    http::Method::from_bytes(method.as_bytes()).map_err(|e| Error::malformed(format!("method {method:?}: {e}")))
}

/// A request target: origin form (`/path?query`), or absolute form
/// (`http://host/path`), or `*`.
pub fn parse_target(target: &str) -> Result<http::Uri, Error> {
    target.parse::<http::Uri>().map_err(|e| Error::malformed(format!("target {target:?}: {e}")))
}

pub fn parse_version(version: Option<&str>) -> Result<http::Version, Error> {
    match version.unwrap_or("HTTP/1.1") {
        "HTTP/1.0" => Ok(http::Version::HTTP_10),
        "HTTP/1.1" => Ok(http::Version::HTTP_11),
        "HTTP/2" | "HTTP/2.0" => Ok(http::Version::HTTP_2),
        other => Err(Error::malformed(format!("version: unknown {other:?} (HTTP/1.0, HTTP/1.1 or HTTP/2)"))),
    }
}

/// The version's name in a capture.
pub fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 | http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 | http::Version::HTTP_3 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

/// Most header fields one record may carry. palisade itself takes at most
/// `limits.max_headers` (1000 at most) per request; a record with far more
/// is not a request anything sent, and `http::HeaderMap` panics past 32,768
/// distinct names (a line with ~25,000 once crashed replay, explain and
/// import). Such a record is a bad line.
pub const MAX_RECORD_HEADERS: usize = 10_000;

/// A bad-line reason when a record has more than [`MAX_RECORD_HEADERS`].
pub fn check_header_count(count: usize) -> Result<(), Error> {
    match count > MAX_RECORD_HEADERS {
        true => Err(Error::malformed(format!("{count} headers; a record may have at most {MAX_RECORD_HEADERS}"))),
        false => Ok(()),
    }
}

pub fn append_header(headers: &mut http::HeaderMap, name: &str, value: &str) -> Result<(), Error> {
    let (name, value) = parse_header(name, value)?;
    append_parsed(headers, name, value)
}

/// One recorded header as the `http` types, or why it is not a header.
pub fn parse_header(name: &str, value: &str) -> Result<(http::HeaderName, http::HeaderValue), Error> {
    let header =
        http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| Error::malformed(format!("header {name:?}: {e}")))?;
    let value =
        http::HeaderValue::from_str(value).map_err(|e| Error::malformed(format!("header {name:?} value: {e}")))?;
    Ok((header, value))
}

/// Append a parsed header to the map.
pub fn append_parsed(
    headers: &mut http::HeaderMap,
    name: http::HeaderName,
    value: http::HeaderValue,
) -> Result<(), Error> {
    // `append` panics when the map cannot grow; `try_append` says so.
    headers.try_append(name, value).map_err(|_| Error::malformed("too many distinct header names"))?;
    Ok(())
}

pub fn body_bytes(body: Option<&str>, body_b64: Option<&str>) -> Result<Option<Vec<u8>>, Error> {
    let mut bytes = None;
    fill_body(&mut bytes, body, body_b64)?;
    Ok(bytes)
}

/// [`body_bytes`] into `buffer`, reusing the allocation it holds (replay
/// fills one request after another); unchanged on an error.
pub fn fill_body(buffer: &mut Option<Vec<u8>>, body: Option<&str>, body_b64: Option<&str>) -> Result<(), Error> {
    match (body, body_b64) {
        (Some(_), Some(_)) => return Err(Error::malformed("both `body` and `body_b64`")),
        (Some(text), None) => {
            let bytes = buffer.get_or_insert_default();
            bytes.clear();
            bytes.extend_from_slice(text.as_bytes());
        }
        (None, Some(encoded)) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| Error::malformed(format!("body_b64: {e}")))?;
            *buffer = Some(decoded);
        }
        (None, None) => *buffer = None,
    }
    Ok(())
}

/// `body` when the bytes are UTF-8, else `body_b64`.
pub fn encode_body(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(bytes))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_thousands_of_distinct_headers_is_refused_not_a_panic() {
        let headers = (0..25_000).map(|i| (format!("x-h{i}"), "v".to_string())).collect();
        let record = CaptureRecord::new(1.0, "192.0.2.1".parse().unwrap(), "GET", "/", headers);
        let error = record.to_request().unwrap_err();
        assert!(error.to_string().contains("25000 headers"), "{error}");
        let mut map = http::HeaderMap::new();
        let failed = (0..40_000).map(|i| append_header(&mut map, &format!("x-h{i}"), "v")).find(Result::is_err);
        assert!(failed.is_some(), "the map's own limit is an error too");
    }

    #[test]
    fn timestamps_far_out_of_range_saturate() {
        assert_eq!(ts_to_nanos(1.7955e28), ts_to_nanos(MAX_TS));
        assert_eq!(ts_to_nanos(f64::NAN), 0);
        assert_eq!(ts_to_nanos(-5.0), 0);
    }

    #[test]
    fn timestamps_round_trip_to_the_microsecond() {
        let nanos = 1_795_915_664_658_123_456;
        let ts = nanos_to_ts(nanos);
        assert_eq!(serde_json::to_string(&ts).unwrap(), "1795915664.658123");
        assert_eq!(ts_to_nanos(ts), 1_795_915_664_658_123_000);
    }

    #[test]
    fn binary_bodies_use_base64() {
        let (text, b64) = encode_body(&[0xff, 0x00, b'a']);
        assert_eq!(text, None);
        assert_eq!(body_bytes(None, b64.as_deref()).unwrap(), Some(vec![0xff, 0x00, b'a']));
        assert!(body_bytes(Some("a"), Some("YQ==")).is_err());
    }

    #[test]
    fn the_borrowed_reader_takes_the_same_lines() {
        let line = r#"{"ts":1.5,"client_ip":"192.0.2.1","method":"POST","target":"/login","headers":[["Host","a"],["X-Q","say \"hi\""]],"body":"a=1","label":"bot","extra":true}"#;
        let record: RecordRef<'_> = serde_json::from_str(line).unwrap();
        assert!(matches!(record.method, Cow::Borrowed("POST")));
        assert_eq!(record.headers[1].1, "say \"hi\"");
        assert_eq!(record.label.as_deref(), Some("bot"));
        let owned: CaptureRecord = serde_json::from_str(line).unwrap();
        assert_eq!(owned.to_request().unwrap().body.as_deref(), Some(&b"a=1"[..]));
    }
}
