//! A capture's header blocks turned into `http` types once each.
//!
//! A capture repeats a few dozen header blocks over and over (the
//! million-request corpus has 69 distinct ones): each browser, script and
//! bot sends the same names and values request after request. Building a
//! request's `HeaderMap` (checking every byte, lowercasing names, hashing
//! them into the map) was two thirds of filling a request; a block is now
//! kept by the text of its `headers` array on the line and shared by every
//! request with the same text, and only a new block is built, from headers
//! that are themselves remembered one by one.

use std::sync::Arc;

use crate::capture::record::{Header, append_parsed, parse_header};
use crate::error::Error;
use crate::fingerprint::{Fingerprints, http_fingerprints};
use crate::view::HeaderNames;

/// A request's headers: the map the pipeline reads and the names as
/// recorded (case, order, repeats), for the HTTP fingerprint.
#[derive(Debug, Default)]
pub struct HeaderBlock {
    pub headers: http::HeaderMap,
    pub wire_names: Vec<Box<str>>,
}

impl HeaderBlock {
    pub fn new(headers: http::HeaderMap, wire_names: Vec<Box<str>>) -> Self {
        HeaderBlock { headers, wire_names }
    }

    /// The fingerprints a request view of this block gives (see
    /// [`crate::view::RequestView::header_names`]): over the wire names
    /// when `wire_names` (HTTP/1), else over the map's names. Replay finds
    /// them once per request shape (see `run`'s `Shapes`).
    pub fn fingerprints(&self, version: http::Version, method: &http::Method, wire_names: bool) -> Fingerprints {
        let names = HeaderNames::new(&self.headers, wire_names.then_some(&self.wire_names[..]));
        http_fingerprints(version, method, names)
    }
}

/// Most blocks kept, and most text they are kept by together: a capture of
/// unique blocks (a cookie or request id in every request) empties the
/// cache now and then instead of growing it.
const MAX_BLOCKS: usize = 1024;
const MAX_BLOCK_TEXT: usize = 8 * 1024 * 1024;

/// The header blocks (and single headers) of a capture seen so far.
#[derive(Debug, Clone, Default)]
pub struct HeaderBlocks {
    /// By the text of the `headers` array on the line: the same text is
    /// the same headers (two texts of the same headers, escaped otherwise,
    /// are two entries).
    by_text: hashbrown::HashMap<Box<str>, Arc<HeaderBlock>>,
    text_bytes: usize,
    headers: HeaderCache,
}

impl HeaderBlocks {
    /// The block kept for `text` (a line's `headers` array), if any.
    pub fn known(&self, text: &str) -> Option<Arc<HeaderBlock>> {
        self.by_text.get(text).cloned()
    }

    /// The block of a line's headers: the one kept for `text` (the line's
    /// `headers` array, when known) if there is one, else built (the same
    /// errors as building it afresh: a block that does not parse is never
    /// kept).
    pub fn block(&mut self, text: Option<&str>, headers: &[Header<'_>]) -> Result<Arc<HeaderBlock>, Error> {
        if let Some(kept) = text.and_then(|text| self.by_text.get(text)) {
            return Ok(kept.clone());
        }
        let mut map = http::HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            let (name, value) = self.headers.parse(name, value)?;
            append_parsed(&mut map, name, value)?;
        }
        let wire_names = headers.iter().map(|(name, _)| Box::from(&**name)).collect();
        let block = Arc::new(HeaderBlock::new(map, wire_names));
        if let Some(text) = text.filter(|text| text.len() <= MAX_BLOCK_TEXT) {
            if self.by_text.len() >= MAX_BLOCKS || self.text_bytes + text.len() > MAX_BLOCK_TEXT {
                self.by_text.clear();
                self.text_bytes = 0;
            }
            self.text_bytes += text.len();
            self.by_text.insert(Box::from(text), block.clone());
        }
        Ok(block)
    }
}

/// Recorded headers already turned into `http` types, by their text, for
/// building new blocks: a new block mostly differs from one seen in a
/// header or two (a cookie, a content length), and a clone shares the
/// bytes. Emptied when full, so captures of unique values (cookies,
/// request ids) keep it bounded.
#[derive(Debug, Clone, Default)]
struct HeaderCache {
    parsed: hashbrown::HashMap<HeaderText, (http::HeaderName, http::HeaderValue)>,
}

/// Most header lines a [`HeaderCache`] keeps.
const HEADER_CACHE_ENTRIES: usize = 4096;

/// A recorded header's text, as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HeaderText {
    name: Box<str>,
    value: Box<str>,
}

/// A recorded header's text, borrowed for a lookup (hashes as
/// [`HeaderText`] does: the derived `Hash` of the same two strings).
#[derive(Hash)]
struct HeaderTextRef<'a> {
    name: &'a str,
    value: &'a str,
}

impl hashbrown::Equivalent<HeaderText> for HeaderTextRef<'_> {
    fn equivalent(&self, key: &HeaderText) -> bool {
        *key.name == *self.name && *key.value == *self.value
    }
}

impl HeaderCache {
    /// The header as `http` types; the same errors as parsing it afresh
    /// (a header that does not parse is never kept).
    fn parse(&mut self, name: &str, value: &str) -> Result<(http::HeaderName, http::HeaderValue), Error> {
        if let Some((name, value)) = self.parsed.get(&HeaderTextRef { name, value }) {
            return Ok((name.clone(), value.clone()));
        }
        let parsed = parse_header(name, value)?;
        if self.parsed.len() >= HEADER_CACHE_ENTRIES {
            self.parsed.clear();
        }
        self.parsed.insert(HeaderText { name: name.into(), value: value.into() }, parsed.clone());
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn line(headers: &[(&'static str, &'static str)]) -> Vec<Header<'static>> {
        headers.iter().map(|(n, v)| (Cow::Borrowed(*n), Cow::Borrowed(*v))).collect()
    }

    #[test]
    fn the_same_text_shares_a_block_and_other_text_does_not() {
        let mut blocks = HeaderBlocks::default();
        let headers = line(&[("Host", "a"), ("Accept", "*/*")]);
        let first = blocks.block(Some(r#"[["Host","a"],["Accept","*/*"]]"#), &headers).unwrap();
        let again = blocks.block(Some(r#"[["Host","a"],["Accept","*/*"]]"#), &headers).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let escaped = blocks.block(Some(r#"[["Host","a"],["Accept","*\/*"]]"#), &headers).unwrap();
        assert!(!Arc::ptr_eq(&first, &escaped));
        assert_eq!(escaped.headers, first.headers);
        let unknown = blocks.block(None, &headers).unwrap();
        assert!(!Arc::ptr_eq(&first, &unknown), "a block without its text is built");
        assert_eq!(unknown.headers, first.headers);
        let case = blocks.block(Some(r#"[["host","a"],["Accept","*/*"]]"#), &line(&[("host", "a"), ("Accept", "*/*")]));
        let case = case.unwrap();
        assert_eq!(case.headers, first.headers, "the same map, other wire names");
        assert_eq!((&*case.wire_names[0], &*first.wire_names[0]), ("host", "Host"));
        let repeated = line(&[("Accept", "*/*"), ("Accept", "text/html")]);
        let repeated = blocks.block(Some(r#"[["Accept","*/*"],["Accept","text/html"]]"#), &repeated).unwrap();
        assert_eq!(repeated.headers.get_all("accept").iter().count(), 2);
    }

    #[test]
    fn a_block_that_does_not_parse_is_an_error_every_time() {
        let mut blocks = HeaderBlocks::default();
        let (text, bad) = (Some(r#"[["Host","a"],["Bad Name","x"]]"#), line(&[("Host", "a"), ("Bad Name", "x")]));
        let first = blocks.block(text, &bad).unwrap_err().to_string();
        assert!(first.contains("Bad Name"), "{first}");
        assert_eq!(blocks.block(text, &bad).unwrap_err().to_string(), first);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut blocks = HeaderBlocks::default();
        for i in 0..MAX_BLOCKS * 2 {
            let cookie = format!("id={i}");
            let text = format!(r#"[["Cookie","{cookie}"]]"#);
            blocks.block(Some(&text), &[(Cow::Borrowed("Cookie"), Cow::Owned(cookie))]).unwrap();
            assert!(blocks.by_text.len() <= MAX_BLOCKS);
        }
        let huge = "x".repeat(MAX_BLOCK_TEXT);
        let text = format!(r#"[["X-Big","{huge}"]]"#);
        let block = blocks.block(Some(&text), &[(Cow::Borrowed("X-Big"), Cow::Owned(huge))]).unwrap();
        assert_eq!(block.headers.len(), 1);
        assert!(blocks.text_bytes <= MAX_BLOCK_TEXT);
    }
}
