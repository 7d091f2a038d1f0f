//! Per-client quota on OAuth token endpoints: the `client_id` of a token
//! request (form body, or the user part of HTTP Basic as RFC 6749 §2.3.1
//! sends confidential clients' credentials) gets a GCRA limit of its own,
//! so one client's burst is answered 429 while other clients pass.
//!
//! A `client_id` is public: it is counted, never trusted. It reaches the
//! store only as a keyed hash, and the secret next to it is never read.

use std::sync::Arc;

use base64::Engine as _;

use super::{RequestContext, Stage};
use crate::keyed_hash::KeyHasher;
use crate::signal::{Evidence, Signal};
use crate::store::{CounterPlan, CounterReadings, GcraReading};
use crate::view::RequestView;

pub const DETECTION_ID: &str = "oauth.client_quota";

#[derive(Debug)]
pub struct OAuthClientQuota {
    id: Arc<str>,
    hasher: KeyHasher,
}

impl OAuthClientQuota {
    pub fn new(hasher: KeyHasher) -> Self {
        OAuthClientQuota { id: Arc::from(DETECTION_ID), hasher }
    }

    fn counter_key(&self, view: &RequestView<'_>) -> Option<String> {
        let client = client_id(view)?;
        Some(format!("oc:{}:{}", view.route.name, self.hasher.hash("oauth_client", client.as_bytes())))
    }
}

/// The request's `client_id`: HTTP Basic first (the form then must not
/// repeat it, RFC 6749 §2.3.1), else the form body's field.
pub fn client_id(view: &RequestView<'_>) -> Option<String> {
    if let Some(value) = view.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let id = text.split_once(':').map_or(text.as_str(), |(id, _secret)| id);
        // The id is form-encoded inside Basic (RFC 6749 §2.3.1).
        let id: String = form_urlencoded::parse(format!("i={id}").as_bytes()).next()?.1.into_owned();
        return (!id.is_empty()).then_some(id);
    }
    let body = view.body?;
    crate::form::field(body, "client_id")
}

impl Stage for OAuthClientQuota {
    fn name(&self) -> &'static str {
        "oauth_client"
    }

    fn plan(&self, view: &RequestView<'_>, _context: &mut RequestContext, plan: &mut CounterPlan) {
        if let (Some(limit), Some(key)) = (view.route.client_quota, self.counter_key(view)) {
            plan.gcra(key.into(), limit);
        }
    }

    fn detect(
        &self,
        view: &RequestView<'_>,
        _context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        let (Some(limit), Some(key)) = (view.route.client_quota, self.counter_key(view)) else { return };
        if let Some(GcraReading::Limited { retry_after }) = readings.gcra(&key) {
            signals.push(Signal::rate_limited(
                self.id.clone(),
                0,
                retry_after,
                [
                    Evidence::number("quota_requests", f64::from(limit.requests), None),
                    Evidence::number("quota_period_s", limit.period_secs as f64, None),
                ],
            ));
        }
    }
}
