//! Import from HAR 1.2 (the "Save all as HAR" of browser devtools): one
//! capture record per `log.entries[]`, in `startedDateTime` order.
//!
//! Taken from each entry: `request.method`, `request.url` (its path and
//! query become the target), `request.httpVersion`, `request.headers` (in
//! order; HTTP/2 pseudo-headers such as `:authority` are left out),
//! `request.postData.text` (or `postData.params` as a form), the
//! `startedDateTime` and `response.status` (0, a request that got no
//! answer, is left out). A HAR does not know the client's address
//! (`serverIPAddress` is the server's), so every record gets the one given
//! (`--client-ip`, by default [`HAR_CLIENT_IP`], a documentation address).
//! HTTP/3 entries are recorded as `HTTP/2` (the capture format's closest).

use std::net::IpAddr;

use serde_json::Value;

use super::record::CaptureRecord;
use super::time::parse_rfc3339;

use crate::error::Error;

/// The client address HAR records get unless told otherwise (TEST-NET-1,
/// RFC 5737).
pub const HAR_CLIENT_IP: &str = "192.0.2.1";

/// What an import made: records, and the entries it could not use (by
/// 1-based entry number).
#[derive(Debug, Default)]
pub struct Imported {
    pub records: Vec<CaptureRecord>,
    pub bad: Vec<super::BadLine>,
}

/// Records from a HAR document. Entries that cannot be used are reported
/// with their number in `log.entries` (1-based) and skipped.
pub fn import_har(text: &str, client_ip: IpAddr) -> Result<Imported, Error> {
    let document: Value =
        serde_json::from_str(text).map_err(|e| Error::malformed(format!("not a HAR file (JSON: {e})")))?;
    let entries = document
        .pointer("/log/entries")
        .and_then(Value::as_array)
        .ok_or(Error::malformed("not a HAR file: no log.entries array"))?;
    let creator = ["/log/browser", "/log/creator"].iter().find_map(|pointer| {
        let tool = document.pointer(pointer)?;
        let name = tool.get("name")?.as_str()?;
        Some(format!("{name} {}", tool.get("version").and_then(Value::as_str).unwrap_or("")).trim().to_string())
    });
    let mut imported = Imported::default();
    for (index, entry) in entries.iter().enumerate() {
        match entry_record(entry, client_ip) {
            Ok(mut record) => {
                record.source = Some(match &creator {
                    Some(tool) => format!("HAR import ({tool})"),
                    None => "HAR import".into(),
                });
                imported.records.push(record);
            }
            Err(reason) => imported.bad.push(super::BadLine { line: index + 1, reason: format!("entry: {reason}") }),
        }
    }
    imported.records.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    Ok(imported)
}

fn entry_record(entry: &Value, client_ip: IpAddr) -> Result<CaptureRecord, Error> {
    let text = |value: &Value, pointer: &str| value.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    let started = text(entry, "/startedDateTime").ok_or(Error::malformed("no startedDateTime"))?;
    let ts = parse_rfc3339(&started)
        .ok_or_else(|| Error::malformed(format!("startedDateTime {started:?} is not an ISO 8601 time")))?;
    let request = entry.get("request").ok_or(Error::malformed("no request"))?;
    let method = text(request, "/method").ok_or(Error::malformed("no request.method"))?;
    let url = text(request, "/url").ok_or(Error::malformed("no request.url"))?;
    let uri: http::Uri = url.parse().map_err(|e| Error::malformed(format!("request.url {url:?}: {e}")))?;
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string();
    let mut headers = Vec::new();
    for header in request.get("headers").and_then(Value::as_array).into_iter().flatten() {
        let (Some(name), Some(value)) = (text(header, "/name"), text(header, "/value")) else {
            return Err(Error::malformed("a header without name or value"));
        };
        if !name.starts_with(':') {
            headers.push((name, value));
        }
    }
    let version = match text(request, "/httpVersion").unwrap_or_default().to_ascii_lowercase().as_str() {
        "http/1.0" => "HTTP/1.0",
        "http/2" | "http/2.0" | "h2" | "h2c" | "http/3" | "http/3.0" | "h3" => "HTTP/2",
        _ => "HTTP/1.1",
    };
    let mut record = CaptureRecord::new(ts, client_ip, &method, &target, headers);
    record.version = Some(version.to_string());
    if let Some(post) = request.get("postData") {
        record.body = match (text(post, "/text"), post.get("params").and_then(Value::as_array)) {
            (Some(body), _) => Some(body),
            (None, Some(params)) => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for param in params {
                    form.append_pair(
                        &text(param, "/name").unwrap_or_default(),
                        &text(param, "/value").unwrap_or_default(),
                    );
                }
                Some(form.finish())
            }
            (None, None) => None,
        };
        let has_type = record.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if let (false, Some(mime)) = (has_type, text(post, "/mimeType").filter(|m| !m.is_empty())) {
            record.headers.push(("Content-Type".into(), mime));
        }
    }
    record.status =
        entry.pointer("/response/status").and_then(Value::as_u64).filter(|s| (100..600).contains(s)).map(|s| s as u16);
    record.to_request().map_err(|e| Error::malformed(format!("request: {e}")))?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_records_in_time_order() {
        let har = r#"{"log":{"version":"1.2","creator":{"name":"WebInspector","version":"537.36"},"entries":[
          {"startedDateTime":"2026-11-29T01:27:45.000Z","request":{"method":"POST","url":"https://shop.example/login?next=%2F","httpVersion":"http/2.0",
            "headers":[{"name":":authority","value":"shop.example"},{"name":"user-agent","value":"Mozilla/5.0"},{"name":"content-type","value":"application/x-www-form-urlencoded"}],
            "postData":{"mimeType":"application/x-www-form-urlencoded","text":"username=alice&password=pw"}},"response":{"status":401},"serverIPAddress":"198.51.100.9"},
          {"startedDateTime":"2026-11-29T02:27:44.000+01:00","request":{"method":"GET","url":"https://shop.example/","httpVersion":"HTTP/1.1","headers":[{"name":"Host","value":"shop.example"}]},"response":{"status":0}},
          {"startedDateTime":"never","request":{"method":"GET","url":"/"}}
        ]}}"#;
        let imported = import_har(har, HAR_CLIENT_IP.parse().unwrap()).unwrap();
        assert_eq!(imported.bad.len(), 1);
        assert_eq!(imported.bad[0].line, 3);
        let [first, second] = &imported.records[..] else { panic!("{:?}", imported.records) };
        assert_eq!((first.method.as_str(), first.target.as_str(), first.ts), ("GET", "/", 1_795_915_664.0));
        assert_eq!(first.status, None);
        assert_eq!(second.target, "/login?next=%2F");
        assert_eq!(second.version.as_deref(), Some("HTTP/2"));
        assert_eq!(second.headers[0], ("user-agent".to_string(), "Mozilla/5.0".to_string()));
        assert_eq!(second.body.as_deref(), Some("username=alice&password=pw"));
        assert_eq!(second.status, Some(401));
        assert_eq!(second.client_ip.to_string(), "192.0.2.1");
        assert_eq!(second.source.as_deref(), Some("HAR import (WebInspector 537.36)"));
    }
}
