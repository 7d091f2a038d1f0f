//! The card of a payment request: found in the body, reduced at once to
//! what may be kept (a keyed hash of the number, its BIN and its last four
//! digits), and the other facts the detectors count (the amount, the
//! logged-in account).
//!
//! The number is read from the request body, which lives only as long as
//! the request; nothing here keeps it: [`Card`] holds the hash, the BIN
//! and the last four, and its `Debug` shows nothing more. The expiry and
//! the CVV are never read at all.

use crate::config::PaymentConfig;
use crate::keyed_hash::KeyHasher;

/// Shortest and longest card numbers (ISO/IEC 7812: up to 19 digits;
/// no scheme issues fewer than 12).
const MIN_DIGITS: usize = 12;
const MAX_DIGITS: usize = 19;

/// What palisade keeps of a card number.
#[derive(Clone, PartialEq, Eq)]
pub struct Card {
    /// Keyed hash of the digits (16 hex characters): the card's counter id.
    pub hash: String,
    /// Keyed 64-bit item of the digits, for distinct-card sketches.
    pub item: u64,
    /// The first `bin_digits` digits: the issuer range.
    pub bin: String,
    /// Keyed hash of the BIN, for the BIN-concentration counters.
    pub bin_hash: String,
    pub last4: String,
    /// Whether the number passes the Luhn check (a typo usually does not).
    pub luhn: bool,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Card({}…{})", self.bin, self.last4)
    }
}

impl Card {
    /// The card of `number` (digits with any spaces or dashes), or `None`
    /// when it is not a card number's length or holds anything else.
    pub fn from_number(hasher: &KeyHasher, number: &str, bin_digits: u8) -> Option<Card> {
        let mut digits = [0u8; MAX_DIGITS];
        let mut len = 0;
        for byte in number.trim().bytes() {
            match byte {
                b'0'..=b'9' if len < MAX_DIGITS => {
                    digits[len] = byte;
                    len += 1;
                }
                b' ' | b'-' => {}
                _ => return None,
            }
        }
        if len < MIN_DIGITS {
            return None;
        }
        let digits = &digits[..len];
        let bin = &digits[..usize::from(bin_digits).min(len - 4)];
        let text = |bytes: &[u8]| bytes.iter().map(|&b| char::from(b)).collect::<String>();
        Some(Card {
            hash: hasher.hash("card", digits),
            item: hasher.item("card", digits),
            bin: text(bin),
            bin_hash: hasher.hash("bin", bin),
            last4: text(&digits[len - 4..]),
            luhn: luhn(digits),
        })
    }
}

/// The Luhn (mod 10) check of ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// A payment body, parsed once: JSON or a form.
enum Body<'a> {
    Json(serde_json::Value),
    Form(Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>),
}

impl<'a> Body<'a> {
    fn parse(content_type: Option<&str>, body: &'a [u8]) -> Option<Body<'a>> {
        let json = content_type.is_some_and(|t| t.to_ascii_lowercase().contains("json"))
            || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if json {
            serde_json::from_slice(body).ok().map(Body::Json)
        } else {
            Some(Body::Form(form_urlencoded::parse(body).collect()))
        }
    }

    /// The first of the fields (form) or pointers (JSON) that is present,
    /// as text (a JSON number too).
    fn first(&self, fields: &[String], pointers: &[String]) -> Option<String> {
        match self {
            Body::Json(value) => pointers.iter().find_map(|pointer| match value.pointer(pointer)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            Body::Form(pairs) => fields
                .iter()
                .find_map(|field| pairs.iter().find(|(name, _)| name == field).map(|(_, value)| value.to_string())),
        }
    }
}

/// What the payment stage reads from one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaymentFacts {
    pub card: Option<Card>,
    pub amount: Option<f64>,
    /// Keyed hash and sketch item of the logged-in account.
    pub account: Option<(String, u64)>,
}

impl PaymentFacts {
    /// Read the card, the amount and the account of a payment request.
    pub fn read(
        config: &PaymentConfig,
        hasher: &KeyHasher,
        headers: &http::HeaderMap,
        body: Option<&[u8]>,
    ) -> PaymentFacts {
        let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let parsed = body.filter(|b| !b.is_empty()).and_then(|body| Body::parse(content_type, body));
        let (card, amount) = match &parsed {
            Some(body) => {
                // The number lives in this `String` only until the hash is taken.
                let card = body
                    .first(&config.card_fields, &config.card_json_pointers)
                    .and_then(|number| Card::from_number(hasher, &number, config.bin_digits));
                let amount = body
                    .first(&config.amount_fields, &config.amount_json_pointers)
                    .and_then(|text| text.trim().parse::<f64>().ok())
                    .filter(|amount| amount.is_finite());
                (card, amount)
            }
            None => (None, None),
        };
        let account = account_id(config, headers)
            .map(|id| (hasher.hash("account", id.as_bytes()), hasher.item("account", id.as_bytes())));
        PaymentFacts { card, amount, account }
    }
}

/// The logged-in user id, from the configured header or cookie.
fn account_id<'h>(config: &PaymentConfig, headers: &'h http::HeaderMap) -> Option<&'h str> {
    if let Some(name) = &config.account_header
        && let Some(value) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()).map(str::trim)
        && !value.is_empty()
    {
        return Some(value);
    }
    let name = config.account_cookie.as_deref()?;
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> KeyHasher {
        let mut config = crate::config::Config::default();
        config.store.hash_key = "k".into();
        KeyHasher::from_config(&config)
    }

    #[test]
    fn luhn_accepts_test_cards_and_rejects_typos() {
        assert!(luhn(b"4242424242424242"));
        assert!(luhn(b"5555555555554444"));
        assert!(luhn(b"378282246310005"));
        assert!(!luhn(b"4242424242424241"));
    }

    #[test]
    fn a_card_keeps_its_bin_last_four_and_hash_only() {
        let hasher = hasher();
        let card = Card::from_number(&hasher, "4242 4242-4242 4242", 6).unwrap();
        assert_eq!((card.bin.as_str(), card.last4.as_str(), card.luhn), ("424242", "4242", true));
        assert_eq!(card, Card::from_number(&hasher, "4242424242424242", 6).unwrap());
        assert_ne!(card.hash, Card::from_number(&hasher, "4000056655665556", 6).unwrap().hash);
        let shown = format!("{card:?}");
        assert!(!shown.contains("4242424242424242") && !shown.contains(&card.hash), "{shown}");
        assert_eq!(Card::from_number(&hasher, "4242", 6), None);
        assert_eq!(Card::from_number(&hasher, "4242x24242424242", 6), None);
        assert_eq!(Card::from_number(&hasher, "40000566556655561234", 6), None, "20 digits");
    }

    #[test]
    fn checkout_and_add_payment_method_shapes() {
        let hasher = hasher();
        let config = PaymentConfig { account_header: Some("x-user-id".into()), ..PaymentConfig::default() };
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        headers.insert("x-user-id", "u-17".parse().unwrap());
        let form = PaymentFacts::read(
            &config,
            &hasher,
            &headers,
            Some(b"amount=0.50&card%5Bnumber%5D=4000000000000002&card%5Bcvc%5D=123&card%5Bexp_month%5D=12"),
        );
        let card = form.card.as_ref().unwrap();
        assert_eq!((card.bin.as_str(), card.last4.as_str()), ("400000", "0002"));
        assert_eq!(form.amount, Some(0.5));
        assert_eq!(form.account.as_ref().map(|a| a.0.clone()), Some(hasher.hash("account", b"u-17")));
        headers.insert("content-type", "application/json".parse().unwrap());
        let add_method = PaymentFacts::read(
            &config,
            &hasher,
            &headers,
            Some(br#"{"payment_method":{"type":"card","card":{"number":"4000000000000002","cvc":"123"}}}"#),
        );
        assert_eq!(add_method.card, form.card);
        assert_eq!(add_method.amount, None);
        let checkout = PaymentFacts::read(
            &config,
            &hasher,
            &headers,
            Some(br#"{"amount":1999,"card":{"number":4000000000000002}}"#),
        );
        assert_eq!((checkout.card, checkout.amount), (form.card, Some(1999.0)));
    }

    #[test]
    fn the_account_may_come_from_a_cookie() {
        let config = PaymentConfig { account_cookie: Some("uid".into()), ..PaymentConfig::default() };
        let mut headers = http::HeaderMap::new();
        headers.insert("cookie", "theme=dark; uid=alice".parse().unwrap());
        assert_eq!(account_id(&config, &headers), Some("alice"));
        headers.insert("cookie", "theme=dark".parse().unwrap());
        assert_eq!(account_id(&config, &headers), None);
    }
}
