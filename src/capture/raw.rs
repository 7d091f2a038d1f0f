//! A raw HTTP/1.x request (as typed, or as `curl --trace` shows it) turned
//! into a capture record, for `palisade explain -`.

use std::net::IpAddr;

use super::record::{CaptureRecord, encode_body};

use crate::error::Error;

/// Parse a request head and the body after it (cut to `Content-Length`
/// when there is one). Lines may end in CRLF or LF.
pub fn parse_raw_request(bytes: &[u8], client_ip: IpAddr, ts: f64) -> Result<CaptureRecord, Error> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return Err(Error::malformed("incomplete request head (it ends with an empty line)"));
        }
        Err(error) => return Err(Error::malformed(format!("not an HTTP/1 request: {error}"))),
    };
    let method = request.method.ok_or(Error::malformed("no method"))?;
    let target = request.path.ok_or(Error::malformed("no request target"))?;
    let version = if request.version == Some(0) { "HTTP/1.0" } else { "HTTP/1.1" };
    let mut pairs = Vec::new();
    let mut content_length = None;
    for header in request.headers.iter() {
        let value = String::from_utf8_lossy(header.value).into_owned();
        if header.name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse::<usize>().ok();
        }
        pairs.push((header.name.to_string(), value));
    }
    let mut record = CaptureRecord::new(ts, client_ip, method, target, pairs);
    record.version = Some(version.to_string());
    let mut body = &bytes[head_len..];
    if let Some(length) = content_length {
        body = &body[..length.min(body.len())];
    }
    if !body.is_empty() {
        (record.body, record.body_b64) = encode_body(body);
    }
    record.to_request()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lf_only_requests_and_cuts_the_body() {
        let raw = b"POST /login HTTP/1.1\nHost: a\nUser-Agent: curl/8\nContent-Length: 14\n\nusername=bob&xtra";
        let record = parse_raw_request(raw, "192.0.2.1".parse().unwrap(), 5.0).unwrap();
        assert_eq!((record.method.as_str(), record.target.as_str()), ("POST", "/login"));
        assert_eq!(record.headers.len(), 3);
        assert_eq!(record.body.as_deref(), Some("username=bob&x"));
        assert!(parse_raw_request(b"GET / HTTP/1.1\r\nHost: a\r\n", "192.0.2.1".parse().unwrap(), 0.0).is_err());
    }
}
