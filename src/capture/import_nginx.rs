//! Import from nginx access logs in the "combined" format:
//!
//! ```text
//! $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
//! ```
//!
//! Each line gives the client address, the time, the request line, the
//! status, and the `Referer` and `User-Agent` headers (a `-` is an absent
//! header); fields after the user agent (custom formats that append more)
//! are ignored. nginx writes bytes it escapes as `\xHH`; they are decoded.
//! A log has no other headers and no bodies, so rules that look at them
//! (header order, `Accept`, login usernames) see them missing: compare
//! replays of imported logs with each other rather than with full captures.
//! Lines that do not parse (a request line of `-` or garbage from a port
//! scan included) are reported with their number.

use std::net::IpAddr;

use super::import_har::Imported;
use super::record::CaptureRecord;
use super::time::{epoch_seconds, offset_seconds};
use super::{BadLine, OnBadLine};

use crate::error::Error;

/// Records from the lines of an access log.
pub fn import_nginx(text: &str, on_bad: OnBadLine) -> Imported {
    let mut imported = Imported::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(record) => imported.records.push(record),
            Err(reason) => {
                imported.bad.push(BadLine { line: index + 1, reason: reason.to_string() });
                if on_bad == OnBadLine::Stop {
                    break;
                }
            }
        }
    }
    imported
}

/// One combined-format line.
pub fn parse_line(line: &str) -> Result<CaptureRecord, Error> {
    let mut rest = line;
    let addr = take_until(&mut rest, ' ').ok_or(Error::malformed("no client address"))?;
    let client_ip: IpAddr = addr.parse().map_err(|_| Error::malformed(format!("{addr:?} is not an IP address")))?;
    take_until(&mut rest, ' ').ok_or(Error::malformed("no ident field"))?;
    let _user = take_until(&mut rest, ' ').ok_or(Error::malformed("no user field"))?;
    rest = rest.strip_prefix('[').ok_or(Error::malformed("no [time]"))?;
    let time = take_until(&mut rest, ']').ok_or(Error::malformed("unterminated [time]"))?;
    let ts = parse_time_local(time)
        .ok_or_else(|| Error::malformed(format!("time {time:?} is not like 10/Oct/2000:13:55:36 -0700")))?;
    rest = rest.trim_start();
    let request = quoted(&mut rest).ok_or(Error::malformed("no quoted request line"))?;
    rest = rest.trim_start();
    let status = match take_until(&mut rest, ' ') {
        Some(status) => status,
        None => std::mem::take(&mut rest),
    };
    let status: u16 = status.parse().map_err(|_| Error::malformed(format!("status {status:?} is not a number")))?;
    rest = rest.trim_start();
    let _bytes = take_until(&mut rest, ' ');
    rest = rest.trim_start();
    let referer = quoted(&mut rest);
    rest = rest.trim_start();
    let user_agent = quoted(&mut rest);

    let mut parts = request.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(Error::malformed(format!("request line {request:?} is not \"METHOD TARGET VERSION\"")));
    };
    let version = match parts.next() {
        Some("HTTP/1.0") => "HTTP/1.0",
        Some("HTTP/1.1") => "HTTP/1.1",
        Some("HTTP/2.0") | Some("HTTP/2") => "HTTP/2",
        Some(other) => return Err(Error::malformed(format!("request line {request:?}: unknown version {other:?}"))),
        None => return Err(Error::malformed(format!("request line {request:?} has no HTTP version"))),
    };
    if parts.next().is_some() {
        return Err(Error::malformed(format!("request line {request:?} has more than three parts")));
    }
    let mut headers = Vec::new();
    if let Some(user_agent) = user_agent.filter(|ua| ua != "-") {
        headers.push(("User-Agent".to_string(), user_agent));
    }
    if let Some(referer) = referer.filter(|r| r != "-") {
        headers.push(("Referer".to_string(), referer));
    }
    let mut record = CaptureRecord::new(ts, client_ip, method, target, headers);
    record.version = Some(version.to_string());
    record.status = Some(status).filter(|s| (100..600).contains(s));
    record.source = Some("nginx access log".into());
    record.to_request()?;
    Ok(record)
}

/// The text up to `stop` (not included); `rest` moves past it.
fn take_until<'a>(rest: &mut &'a str, stop: char) -> Option<&'a str> {
    let (head, tail) = rest.split_once(stop)?;
    *rest = tail;
    Some(head)
}

/// A `"…"` field, with nginx's `\xHH` and `\"` escapes decoded.
fn quoted(rest: &mut &str) -> Option<String> {
    let body = rest.strip_prefix('"')?;
    let bytes = body.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                *rest = &body[i + 1..];
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            b'\\' if bytes.get(i + 1) == Some(&b'x') && i + 3 < bytes.len() => {
                // On bytes, not `&body[..]`: after `\x` may come the middle of
                // a multi-byte character, where slicing the str panicked
                // (found by the fuzzer, import_nginx).
                match hex_byte(bytes[i + 2], bytes[i + 3]) {
                    Some(byte) => {
                        out.push(byte);
                        i += 4;
                    }
                    None => {
                        out.push(b'\\');
                        i += 1;
                    }
                }
            }
            b'\\' if matches!(bytes.get(i + 1), Some(b'"' | b'\\')) => {
                out.push(bytes[i + 1]);
                i += 2;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    None
}

/// Two hex digits as the byte they spell.
fn hex_byte(high: u8, low: u8) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

/// `10/Oct/2000:13:55:36 -0700` as epoch seconds.
fn parse_time_local(text: &str) -> Option<f64> {
    let (stamp, offset) = text.split_once(' ')?;
    let mut parts = stamp.split([':', '/']);
    let day: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| *m == month)? as u32
        + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let hour: u32 = parts.next()?.parse().ok()?;
    let minute: u32 = parts.next()?.parse().ok()?;
    let second: u32 = parts.next()?.parse().ok()?;
    if day == 0 || day > 31 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some((epoch_seconds(year, month, day, hour, minute, second)? - offset_seconds(offset)?) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_lines_become_records() {
        let line = r#"203.0.113.7 - - [29/Nov/2026:02:27:44 +0100] "POST /login?x=1 HTTP/1.1" 401 23 "https://shop.example/" "Mozilla/5.0 (\x22quoted\x22)" "extra""#;
        let record = parse_line(line).unwrap();
        assert_eq!(record.client_ip.to_string(), "203.0.113.7");
        assert_eq!(record.ts, 1_795_915_664.0);
        assert_eq!((record.method.as_str(), record.target.as_str()), ("POST", "/login?x=1"));
        assert_eq!(record.status, Some(401));
        assert_eq!(
            record.headers,
            [
                ("User-Agent".to_string(), "Mozilla/5.0 (\"quoted\")".to_string()),
                ("Referer".to_string(), "https://shop.example/".to_string())
            ]
        );
    }

    #[test]
    fn an_escape_before_a_multibyte_character_is_kept_as_text() {
        // Found by the fuzzer: `\x` then the middle of `é` panicked.
        let line = "203.0.113.7 - - [29/Nov/2026:02:27:44 +0100] \"GET / HTTP/1.1\" 200 1 \"-\" \"a\\x\u{e9}b\\x4\"";
        let record = parse_line(line).unwrap();
        assert_eq!(record.headers[0].1, "a\\x\u{e9}b\\x4");
        // A year far out of range is a bad line, not an overflow.
        assert!(
            parse_line("203.0.113.7 - - [29/Nov/99999999999999999:02:27:44 +0100] \"GET / HTTP/1.1\" 200 1").is_err()
        );
    }

    #[test]
    fn bad_lines_are_numbered() {
        let log = "2001:db8::1 - bob [29/Nov/2026:01:27:44 +0000] \"GET / HTTP/2.0\" 200 5 \"-\" \"-\"\n\
                   198.51.100.1 - - [29/Nov/2026:01:27:44 +0000] \"-\" 400 0 \"-\" \"-\"\n\
                   garbage\n\
                   198.51.100.1 - - [29/Nov/2026:01:27:45 +0000] \"\\x16\\x03\\x01\" 400 0 \"-\" \"-\"\n";
        let imported = import_nginx(log, OnBadLine::Skip);
        assert_eq!(imported.records.len(), 1);
        assert!(imported.records[0].headers.is_empty());
        assert_eq!(imported.bad.iter().map(|b| b.line).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(import_nginx(log, OnBadLine::Stop).bad.len(), 1);
    }
}
