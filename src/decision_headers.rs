//! The headers that tell the application what palisade decided: score,
//! enforced detections, request id, action and partner. Every front door
//! sets the same ones (the proxy on the forwarded request, the sidecar on
//! its answer, the tower layer on the request it passes in).

use std::sync::{Mutex, PoisonError};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::identify::Identity;
use crate::pipeline::Decision;

/// Names of the headers that tell the application the decision.
#[derive(Debug, Clone)]
pub struct DecisionHeaders {
    pub score: HeaderName,
    pub detections: HeaderName,
    pub request_id: HeaderName,
    pub action: HeaderName,
    pub partner: HeaderName,
}

impl Default for DecisionHeaders {
    /// The documented defaults (`[headers]`).
    fn default() -> Self {
        DecisionHeaders {
            score: HeaderName::from_static("x-palisade-score"),
            detections: HeaderName::from_static("x-palisade-detections"),
            request_id: HeaderName::from_static("x-palisade-request-id"),
            action: HeaderName::from_static("x-palisade-action"),
            partner: HeaderName::from_static("x-palisade-partner"),
        }
    }
}

impl DecisionHeaders {
    pub fn all(&self) -> [&HeaderName; 5] {
        [&self.score, &self.detections, &self.request_id, &self.action, &self.partner]
    }

    /// Replace whatever the client sent under these names with the decision.
    pub fn insert(&self, headers: &mut HeaderMap, decision: &Decision) {
        // Most requests carry none of these names and no underscore in any
        // name: one pass over the names finds that, instead of five hashed
        // removals of absent names and a pass for underscores.
        let lengths = self.lengths();
        let claimed = headers.keys().any(|key| self.may_be_claimed_by(key, lengths));
        self.insert_claimed(headers, decision, claimed);
    }

    /// [`Self::insert`] for a caller that has looked at the names already:
    /// `claimed` says whether any has an underscore or is one of these
    /// ([`Self::is_one`]). When it does not, there is nothing to remove.
    pub fn insert_claimed(&self, headers: &mut HeaderMap, decision: &Decision, claimed: bool) {
        if claimed {
            for name in self.all() {
                headers.remove(name);
            }
            strip_underscore_aliases(headers, &self.all().map(HeaderName::as_str));
        }
        headers.insert(self.score.clone(), score_value(decision.score()));
        if let Some(value) = detections_value(decision) {
            headers.insert(self.detections.clone(), value);
        }
        headers.insert(self.request_id.clone(), request_id_value(decision.request_id.0));
        headers.insert(self.action.clone(), HeaderValue::from_static(decision.action().as_str()));
        if let Identity::Partner { partner, .. } = &decision.identity
            && let Ok(value) = HeaderValue::from_str(&partner.name)
        {
            headers.insert(self.partner.clone(), value);
        }
    }
}

/// The same name, backed by a `'static` string. A name parsed from the
/// configuration holds a reference-counted buffer, and [`DecisionHeaders::insert`]
/// clones four names into every forwarded request (and the request drops
/// them): with more than one worker, each clone and drop moved that
/// counter's cache line between cores. A static name clones as a pointer.
/// Each distinct name is leaked once for the life of the process (a reload
/// with the same names reuses it), so what is kept is bounded by the
/// names ever configured.
pub fn interned(name: HeaderName) -> HeaderName {
    static INTERNED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    // A poisoned lock is still usable: the list only grows by whole entries.
    let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    let text = match interned.iter().find(|text| **text == name.as_str()) {
        Some(text) => *text,
        None => {
            let leaked: &'static str = Box::leak(name.as_str().to_owned().into_boxed_str());
            interned.push(leaked);
            leaked
        }
    };
    // Cannot panic: the text is a parsed name's, lower case and valid.
    HeaderName::from_static(text)
}

impl DecisionHeaders {
    /// The lengths of these names, as [`length_bit`]s, for [`Self::is_one`].
    pub fn lengths(&self) -> u64 {
        self.all().iter().fold(0, |lengths, name| lengths | length_bit(name.as_str().len()))
    }

    /// Whether `key` is one of these names. `lengths` is [`Self::lengths`]:
    /// only a name of one of those lengths is compared with the five.
    /// Inlined: it runs for every name of every request, and most names
    /// are told apart by their length alone.
    #[inline]
    pub fn is_one(&self, key: &HeaderName, lengths: u64) -> bool {
        lengths & length_bit(key.as_str().len()) != 0 && self.all().contains(&key)
    }

    /// Whether a client's header `key` makes [`DecisionHeaders::insert`]
    /// remove what the client sent: one of these names, or a name with an
    /// underscore (which may spell one).
    #[inline]
    fn may_be_claimed_by(&self, key: &HeaderName, lengths: u64) -> bool {
        has_underscore(key.as_str().as_bytes()) || self.is_one(key, lengths)
    }
}

/// A length as one bit of a word (63 for every length from 63 on).
#[inline]
fn length_bit(length: usize) -> u64 {
    1 << length.min(63)
}

/// Whether a header name has an `_`, eight bytes at a time: most names are
/// a word or two long, and this runs for every name of every request.
#[inline]
pub fn has_underscore(name: &[u8]) -> bool {
    use crate::words::{ONES, short_word, word};
    // A byte of `word ^ "________"` is zero where the name has `_`; the
    // expression is nonzero exactly when some byte is zero.
    let any_underscore = |word: u64| {
        let x = word ^ (u64::from(b'_') * ONES);
        x.wrapping_sub(ONES) & !x & (0x80 * ONES) != 0
    };
    if name.len() < 8 {
        // Zeros after the name are not `_`.
        return any_underscore(short_word(name));
    }
    let mut words = name.chunks_exact(8);
    // The bytes after the last whole word are in the name's last eight.
    words.any(|chunk| any_underscore(word(chunk)))
        || (!words.remainder().is_empty() && any_underscore(word(&name[name.len() - 8..])))
}

/// `0` to `255`, three digits each (`000001002…255`): a score's text is
/// the end of its three.
const SCORE_DIGITS: [u8; 768] = {
    let mut digits = [0u8; 768];
    let mut score = 0;
    while score < 256 {
        digits[3 * score] = b'0' + (score / 100) as u8;
        digits[3 * score + 1] = b'0' + (score / 10 % 10) as u8;
        digits[3 * score + 2] = b'0' + (score % 10) as u8;
        score += 1;
    }
    digits
};

/// [`SCORE_DIGITS`] as text (digits are UTF-8; checked when compiled).
static SCORE_TEXT: &str = match std::str::from_utf8(&SCORE_DIGITS) {
    Ok(text) => text,
    Err(_) => panic!("digits are UTF-8"),
};

/// A score as a header value, in decimal as `HeaderValue::from(u16)`
/// writes it, pointing into [`SCORE_TEXT`]: no allocation, where the
/// conversion from a number allocates its text for every request.
fn score_value(score: u8) -> HeaderValue {
    let digits = match score {
        100.. => 3,
        10.. => 2,
        _ => 1,
    };
    let end = 3 * usize::from(score) + 3;
    HeaderValue::from_static(&SCORE_TEXT[end - digits..end])
}

/// Remove headers that spell one of `names` with `_` for `-` (`X_Palisade_Score`).
/// CGI, WSGI and Rack turn both spellings into the same variable
/// (`HTTP_X_PALISADE_SCORE`), so a client's underscore copy would reach the
/// application beside palisade's own value and may be read first.
pub fn strip_underscore_aliases(headers: &mut HeaderMap, names: &[&str]) {
    // Header names are lower case in a HeaderMap; most requests have no
    // underscore in any name and pay one scan.
    if !headers.keys().any(|key| key.as_str().contains('_')) {
        return;
    }
    let aliases: Vec<HeaderName> = headers
        .keys()
        .filter(|key| key.as_str().contains('_'))
        .filter(|key| {
            let key = key.as_str().as_bytes();
            names.iter().any(|name| {
                let name = name.as_bytes();
                name.len() == key.len() && name.iter().zip(key).all(|(n, k)| n == k || (*n == b'-' && *k == b'_'))
            })
        })
        .cloned()
        .collect();
    for alias in aliases {
        headers.remove(alias);
    }
}

/// The enforced detections, comma-separated; most requests have none, and
/// those get a static empty value instead of an allocated one.
fn detections_value(decision: &Decision) -> Option<HeaderValue> {
    let mut detections = decision.enforced_detections();
    let Some(first) = detections.next() else {
        return Some(HeaderValue::from_static(""));
    };
    let mut joined = String::from(first);
    for detection in detections {
        joined.push(',');
        joined.push_str(detection);
    }
    HeaderValue::from_str(&joined).ok()
}

/// A request id as 16 hex digits (as [`crate::request_id::RequestId`]
/// displays it), written without a formatter or an intermediate string.
pub fn request_id_value(id: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&digits).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_equal_the_parsed_ones_and_are_kept_once() {
        for text in ["X-Palisade-Score", "x-palisade-score", "x-app-decision", "Via", "host", "x_under_score"] {
            let parsed = HeaderName::from_bytes(text.as_bytes()).unwrap();
            let interned = interned(parsed.clone());
            assert_eq!(interned, parsed, "{text}");
            assert_eq!(interned.as_str(), parsed.as_str(), "{text}");
        }
        // The same text again is the same leaked string, not another one.
        let first = interned(HeaderName::from_static("x-interned-once"));
        let second = interned(HeaderName::from_bytes(b"X-Interned-Once").unwrap());
        assert!(std::ptr::eq(first.as_str(), second.as_str()));
    }

    #[test]
    fn underscore_spellings_of_the_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("x_palisade_score", HeaderValue::from_static("99"));
        headers.insert("x-palisade_action", HeaderValue::from_static("allow"));
        headers.insert("x_other_header", HeaderValue::from_static("kept"));
        let names = DecisionHeaders::default();
        strip_underscore_aliases(&mut headers, &names.all().map(HeaderName::as_str));
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x_other_header"));
    }

    #[test]
    fn score_values_are_the_decimal_numbers() {
        for score in 0..=u8::MAX {
            assert_eq!(score_value(score), HeaderValue::from(u16::from(score)), "{score}");
        }
    }

    #[test]
    fn client_names_that_may_claim_a_decision_header() {
        let names = DecisionHeaders::default();
        let lengths = names.lengths();
        for claimed in ["x-palisade-score", "x-palisade-partner", "x_palisade_score", "a_b", "_"] {
            assert!(names.may_be_claimed_by(&HeaderName::from_static(claimed), lengths), "{claimed}");
        }
        for other in ["host", "x-palisade-scores", "x-palisade", "sec-ch-ua-platform", "x-palisade-score-"] {
            assert!(!names.may_be_claimed_by(&HeaderName::from_static(other), lengths), "{other}");
        }
        // Configured names of any length, standard ones among them.
        let long = "x-".repeat(40) + "score";
        let odd = DecisionHeaders {
            score: HeaderName::from_bytes(long.as_bytes()).unwrap(),
            detections: http::header::VIA,
            request_id: HeaderName::from_static("r"),
            action: HeaderName::from_static("x-palisade-action"),
            partner: HeaderName::from_static("x-palisade-partner"),
        };
        let lengths = odd.lengths();
        for claimed in [&long[..], "via", "r"] {
            assert!(odd.may_be_claimed_by(&HeaderName::from_bytes(claimed.as_bytes()).unwrap(), lengths), "{claimed}");
        }
        let other = "x-".repeat(41) + "score";
        for other in [&other[..], "vib", "s", "x-palisade-score"] {
            assert!(!odd.may_be_claimed_by(&HeaderName::from_bytes(other.as_bytes()).unwrap(), lengths), "{other}");
        }
    }

    proptest::proptest! {
        #[test]
        fn underscores_are_found_as_contains_finds_them(name in "[a-z0-9_-]{0,40}") {
            proptest::prop_assert_eq!(has_underscore(name.as_bytes()), name.contains('_'));
        }
    }

    #[test]
    fn request_id_value_is_its_display() {
        for id in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let text = crate::request_id::RequestId(id).to_string();
            assert_eq!(request_id_value(id), HeaderValue::from_str(&text).unwrap());
        }
    }
}
