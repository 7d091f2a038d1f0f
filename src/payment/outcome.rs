//! Was the payment approved? Read from the upstream's answer, as each
//! payment route's configuration says approval and decline look: a
//! status (`402`), a decline code in a JSON answer (`decline_code`, as
//! Stripe and most processors answer), a status field, a body marker.

use crate::config::PaymentConfig;
use crate::outcome::ResponseFacts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOutcome {
    Approved,
    Declined,
}

impl PaymentOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentOutcome::Approved => "approved",
            PaymentOutcome::Declined => "declined",
        }
    }
}

/// The outcome of a payment attempt, or `None` when the answer says
/// neither (a 5xx, a validation error without a decline code: the attempt
/// is counted neither way).
pub fn classify(config: &PaymentConfig, response: &ResponseFacts<'_>) -> Option<PaymentOutcome> {
    if config.decline_statuses.contains(&response.status) {
        return Some(PaymentOutcome::Declined);
    }
    if (200..500).contains(&response.status)
        && let Some(body) = response.body_prefix
        && body_says_declined(config, body)
    {
        return Some(PaymentOutcome::Declined);
    }
    let approved = if config.approve_statuses.is_empty() {
        (200..300).contains(&response.status)
    } else {
        config.approve_statuses.contains(&response.status)
    };
    approved.then_some(PaymentOutcome::Approved)
}

fn body_says_declined(config: &PaymentConfig, body: &[u8]) -> bool {
    if let Some(marker) = &config.decline_body_contains
        && !marker.is_empty()
        && body.windows(marker.len()).any(|w| w == marker.as_bytes())
    {
        return true;
    }
    if config.decline_json_pointers.is_empty() && config.status_json_pointer.is_none() {
        return false;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    let declined_code = config.decline_json_pointers.iter().any(|pointer| match value.pointer(pointer) {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(code)) => !code.is_empty(),
        Some(_) => true,
    });
    let declined_status = config.status_json_pointer.as_deref().and_then(|pointer| value.pointer(pointer)).is_some_and(
        |status| matches!(status, serde_json::Value::String(s) if config.decline_status_values.iter().any(|v| v.eq_ignore_ascii_case(s))),
    );
    declined_code || declined_status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: u16, body: &'static [u8]) -> ResponseFacts<'static> {
        ResponseFacts { status, headers: None, body_prefix: Some(body) }
    }

    #[test]
    fn statuses_decline_codes_status_fields_and_markers() {
        let config = PaymentConfig::default();
        assert_eq!(classify(&config, &facts(402, b"")), Some(PaymentOutcome::Declined));
        assert_eq!(
            classify(&config, &facts(200, br#"{"id":"ch_1","status":"succeeded"}"#)),
            Some(PaymentOutcome::Approved)
        );
        assert_eq!(classify(&config, &facts(200, br#"{"status":"declined"}"#)), Some(PaymentOutcome::Declined));
        assert_eq!(
            classify(&config, &facts(400, br#"{"error":{"type":"card_error","decline_code":"insufficient_funds"}}"#)),
            Some(PaymentOutcome::Declined)
        );
        assert_eq!(
            classify(&config, &facts(200, br#"{"decline_code":null,"status":"ok"}"#)),
            Some(PaymentOutcome::Approved)
        );
        assert_eq!(classify(&config, &facts(400, br#"{"error":"missing amount"}"#)), None);
        assert_eq!(classify(&config, &facts(503, b"")), None);
        let marker = PaymentConfig { decline_body_contains: Some("Card declined".into()), ..PaymentConfig::default() };
        assert_eq!(classify(&marker, &facts(200, b"<p>Card declined</p>")), Some(PaymentOutcome::Declined));
        assert_eq!(classify(&marker, &ResponseFacts::status(200)), Some(PaymentOutcome::Approved));
    }
}
