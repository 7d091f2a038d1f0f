//! The headers that tell the application what palisade decided: score,
//! enforced detections, request id, action and partner. Every front door
//! sets the same ones (the proxy on the forwarded request, the sidecar on
//! its answer, the tower layer on the request it passes in).

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
        for name in self.all() {
            headers.remove(name);
        }
        strip_underscore_aliases(headers, &self.all().map(HeaderName::as_str));
        headers.insert(self.score.clone(), HeaderValue::from(u16::from(decision.score())));
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
    fn request_id_value_is_its_display() {
        for id in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let text = crate::request_id::RequestId(id).to_string();
            assert_eq!(request_id_value(id), HeaderValue::from_str(&text).unwrap());
        }
    }
}
