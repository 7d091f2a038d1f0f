//! A capture's header blocks turned into `http` types once each.
//!
//! A capture repeats a few dozen header blocks over and over (the
//! million-request corpus has 69 distinct ones): each browser, script and
//! bot sends the same names and values request after request. Building a
//! request's `HeaderMap` (checking every byte, lowercasing names, hashing
//! them into the map) was two thirds of filling a request; a block seen
//! before is now shared instead, and only a new block is built, from
//! headers that are themselves remembered one by one.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::capture::record::{Header, append_parsed, parse_header};
use crate::error::Error;

/// A request's headers: the map the pipeline reads and the names as
/// recorded (case, order, repeats), for the HTTP fingerprint.
#[derive(Debug, Default)]
pub struct HeaderBlock {
    pub headers: http::HeaderMap,
    pub wire_names: Vec<Box<str>>,
    /// The recorded values, by place (with `wire_names`, the block's text).
    values: Vec<Box<str>>,
}

impl HeaderBlock {
    fn text(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.wire_names.iter().zip(&self.values).map(|(name, value)| (&**name, &**value))
    }

    /// Bytes of recorded text the block holds (what bounds the cache).
    fn text_bytes(&self) -> usize {
        self.text().map(|(name, value)| name.len() + value.len()).sum()
    }
}

/// The hash of a block's text, the same for a kept block and for a line's
/// headers ([`BlockText`]), so that one finds the other.
fn hash_text<'a, H: Hasher>(text: impl ExactSizeIterator<Item = (&'a str, &'a str)>, state: &mut H) {
    state.write_usize(text.len());
    for (name, value) in text {
        name.hash(state);
        value.hash(state);
    }
}

/// A kept block, hashed and compared by its text.
#[derive(Debug, Clone)]
struct Kept(Arc<HeaderBlock>);

impl Hash for Kept {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_text(self.0.text(), state);
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.0.text().eq(other.0.text())
    }
}

impl Eq for Kept {}

/// A line's headers, to look a kept block up by.
struct BlockText<'l, 'a>(&'l [Header<'a>]);

impl BlockText<'_, '_> {
    fn text(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(name, value)| (&**name, &**value))
    }
}

impl Hash for BlockText<'_, '_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_text(self.text(), state);
    }
}

impl hashbrown::Equivalent<Kept> for BlockText<'_, '_> {
    fn equivalent(&self, key: &Kept) -> bool {
        self.text().eq(key.0.text())
    }
}

/// Most blocks kept, and most recorded text they hold together: a capture
/// of unique blocks (a cookie or request id in every request) empties the
/// cache now and then instead of growing it.
const MAX_BLOCKS: usize = 1024;
const MAX_BLOCK_BYTES: usize = 8 * 1024 * 1024;

/// The header blocks (and single headers) of a capture seen so far.
#[derive(Debug, Clone, Default)]
pub struct HeaderBlocks {
    blocks: hashbrown::HashSet<Kept>,
    block_bytes: usize,
    headers: HeaderCache,
}

impl HeaderBlocks {
    /// The block of a line's headers: the one kept when the same text was
    /// seen before, else built (the same errors as building it afresh: a
    /// block that does not parse is never kept).
    pub fn block(&mut self, headers: &[Header<'_>]) -> Result<Arc<HeaderBlock>, Error> {
        if let Some(kept) = self.blocks.get(&BlockText(headers)) {
            return Ok(kept.0.clone());
        }
        let mut map = http::HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            let (name, value) = self.headers.parse(name, value)?;
            append_parsed(&mut map, name, value)?;
        }
        let block = Arc::new(HeaderBlock {
            headers: map,
            wire_names: headers.iter().map(|(name, _)| Box::from(&**name)).collect(),
            values: headers.iter().map(|(_, value)| Box::from(&**value)).collect(),
        });
        let bytes = block.text_bytes();
        if self.blocks.len() >= MAX_BLOCKS || self.block_bytes + bytes > MAX_BLOCK_BYTES {
            self.blocks.clear();
            self.block_bytes = 0;
        }
        if bytes <= MAX_BLOCK_BYTES {
            self.block_bytes += bytes;
            self.blocks.insert(Kept(block.clone()));
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
        let first = blocks.block(&line(&[("Host", "a"), ("Accept", "*/*")])).unwrap();
        let owned: Vec<Header<'_>> =
            vec![(Cow::Owned("Host".into()), Cow::Owned("a".into())), line(&[("Accept", "*/*")])[0].clone()];
        assert!(Arc::ptr_eq(&first, &blocks.block(&owned).unwrap()), "unescaped text is the same text");
        let longer = blocks.block(&line(&[("Host", "a"), ("Accept", "*/*"), ("Accept", "*/*")])).unwrap();
        assert!(!Arc::ptr_eq(&first, &longer));
        assert_eq!(longer.headers.get_all("accept").iter().count(), 2);
        let case = blocks.block(&line(&[("host", "a"), ("Accept", "*/*")])).unwrap();
        assert!(!Arc::ptr_eq(&first, &case));
        assert_eq!(case.headers, first.headers, "the same map, other wire names");
        assert_eq!(&*case.wire_names[0], "host");
        // The same characters split between name and value otherwise.
        let split = blocks.block(&line(&[("Hos", "ta"), ("Accept", "*/*")])).unwrap();
        assert!(!Arc::ptr_eq(&first, &split));
        assert!(split.headers.contains_key("hos"));
    }

    #[test]
    fn a_block_that_does_not_parse_is_an_error_every_time() {
        let mut blocks = HeaderBlocks::default();
        let bad = line(&[("Host", "a"), ("Bad Name", "x")]);
        let first = blocks.block(&bad).unwrap_err().to_string();
        assert!(first.contains("Bad Name"), "{first}");
        assert_eq!(blocks.block(&bad).unwrap_err().to_string(), first);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut blocks = HeaderBlocks::default();
        for i in 0..MAX_BLOCKS * 2 {
            let cookie = format!("id={i}");
            blocks.block(&[(Cow::Borrowed("Cookie"), Cow::Owned(cookie))]).unwrap();
            assert!(blocks.blocks.len() <= MAX_BLOCKS);
        }
        let huge = "x".repeat(MAX_BLOCK_BYTES + 1);
        let block = blocks.block(&[(Cow::Borrowed("X-Big"), Cow::Owned(huge))]).unwrap();
        assert_eq!(block.headers.len(), 1);
        assert!(blocks.block_bytes <= MAX_BLOCK_BYTES);
    }
}
