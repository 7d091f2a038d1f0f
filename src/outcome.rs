//! Did the login work? Read from the upstream's answer, as each login
//! route's configuration says success and failure look.

use crate::routes::LoginSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Success,
    Failure,
}

impl LoginOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginOutcome::Success => "success",
            LoginOutcome::Failure => "failure",
        }
    }
}

/// How much of a response body is read to look for a failure marker.
pub const BODY_PREFIX_LIMIT: usize = 64 * 1024;

/// The parts of the upstream's answer an outcome is read from.
#[derive(Debug, Clone, Copy)]
pub struct ResponseFacts<'a> {
    pub status: u16,
    pub headers: Option<&'a http::HeaderMap>,
    /// The start of the body, when the route asks for a body marker.
    pub body_prefix: Option<&'a [u8]>,
}

impl<'a> ResponseFacts<'a> {
    pub fn status(status: u16) -> Self {
        ResponseFacts { status, headers: None, body_prefix: None }
    }
}

/// The outcome of a login attempt, or `None` when the answer says neither
/// (a 5xx, a 404: the attempt is not counted either way).
pub fn classify(spec: &LoginSpec, response: &ResponseFacts<'_>) -> Option<LoginOutcome> {
    if spec.failure_statuses.contains(&response.status) {
        return Some(LoginOutcome::Failure);
    }
    let header_says_failure = match (&spec.failure_header, response.headers) {
        (Some(name), Some(headers)) => headers.contains_key(name),
        _ => false,
    };
    let body_says_failure = match (&spec.failure_body_contains, response.body_prefix) {
        (Some(marker), Some(body)) => !marker.is_empty() && body.windows(marker.len()).any(|w| w == marker.as_bytes()),
        _ => false,
    };
    let success = if spec.success_statuses.is_empty() {
        (200..400).contains(&response.status)
    } else {
        spec.success_statuses.contains(&response.status)
    };
    match (header_says_failure || body_says_failure, success) {
        // A 4xx carrying the failure marker is a failure too (OAuth answers
        // a wrong password with 400 and `"error":"invalid_grant"`).
        (true, _) if (200..500).contains(&response.status) => Some(LoginOutcome::Failure),
        (_, true) => Some(LoginOutcome::Success),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LoginSpec {
        LoginSpec {
            username_field: None,
            username_json_pointer: None,
            password_field: None,
            password_json_pointer: None,
            failure_statuses: vec![401, 403],
            success_statuses: vec![],
            failure_header: Some(http::HeaderName::from_static("x-login-failed")),
            failure_body_contains: Some("Invalid credentials".into()),
        }
    }

    #[test]
    fn statuses_headers_and_body_markers() {
        let spec = spec();
        assert_eq!(classify(&spec, &ResponseFacts::status(401)), Some(LoginOutcome::Failure));
        assert_eq!(classify(&spec, &ResponseFacts::status(302)), Some(LoginOutcome::Success));
        assert_eq!(classify(&spec, &ResponseFacts::status(503)), None);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-login-failed", "1".parse().unwrap());
        let with_header = ResponseFacts { status: 200, headers: Some(&headers), body_prefix: None };
        assert_eq!(classify(&spec, &with_header), Some(LoginOutcome::Failure));
        let body = ResponseFacts { status: 200, headers: None, body_prefix: Some(b"<p>Invalid credentials</p>") };
        assert_eq!(classify(&spec, &body), Some(LoginOutcome::Failure));
        let ok = ResponseFacts { status: 200, headers: None, body_prefix: Some(b"<p>Welcome</p>") };
        assert_eq!(classify(&spec, &ok), Some(LoginOutcome::Success));
    }
}
