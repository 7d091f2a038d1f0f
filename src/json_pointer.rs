//! One value of a JSON document, found by a JSON Pointer (RFC 6901) while
//! the document is parsed, without building it.
//!
//! A login body's username is one string in a small object. Parsing the
//! whole body into a `serde_json::Value` allocated a string for every key
//! and value and a map for every object, most of a login view's cost. Here
//! the parser walks the document with visitors that keep nothing but the
//! pointed-at value. The answer is the one `Value::pointer` gives on the
//! parsed document, to the byte:
//!
//! - every part of the document goes through the same `deserialize_any`
//!   the `Value` parse uses, so a document `Value` refuses (bad syntax,
//!   invalid UTF-8, a lone surrogate, a number out of range, nesting deeper
//!   than serde_json's limit, trailing characters) is refused here too;
//! - an object's key named twice counts its last value, as the `Value`
//!   map keeps the last insert;
//! - tokens are unescaped (`~1` → `/`, `~0` → `~`) and array indices read
//!   as `Value::pointer` reads them.
//!
//! A test compares both on generated documents and pointers.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The string, or the number's text, at `pointer` in the JSON document
/// `body`; `None` when the body is not valid JSON, the pointer is
/// malformed or names nothing, or the value there is of another type.
pub fn text_at(body: &[u8], pointer: &str) -> Option<String> {
    let rest = match pointer.strip_prefix('/') {
        Some(rest) => Some(rest),
        // The whole document.
        None if pointer.is_empty() => None,
        // Not a pointer: names nothing.
        None => return None,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let found = At { rest }.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    found
}

/// The text a login field takes from the value it names.
fn text_of(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The next reference token of `rest` (unescaped), and what follows it.
fn next_token(rest: &str) -> (Cow<'_, str>, Option<&str>) {
    let (token, after) = match rest.split_once('/') {
        Some((token, after)) => (token, Some(after)),
        None => (rest, None),
    };
    let token = if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    };
    (token, after)
}

/// An array index as `Value::pointer` reads one: digits without a sign or
/// a leading zero.
fn parse_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

// === impl At ===

/// The value at `rest` (the pointer past the tokens already followed;
/// `None`: this value itself) of the value being parsed.
struct At<'p> {
    rest: Option<&'p str>,
}

impl<'de> DeserializeSeed<'de> for At<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.rest {
            None => serde::Deserialize::deserialize(deserializer).map(text_of),
            Some(rest) => deserializer.deserialize_any(Within { token: next_token(rest) }),
        }
    }
}

/// Follows one token into an object or an array; any other value names
/// nothing below it and is only checked.
struct Within<'p> {
    token: (Cow<'p, str>, Option<&'p str>),
}

impl<'de> Visitor<'de> for Within<'_> {
    type Value = Option<String>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (token, after) = &self.token;
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(token))? {
            if matches {
                found = map.next_value_seed(At { rest: *after })?;
            } else {
                map.next_value_seed(Skip)?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (token, after) = &self.token;
        let wanted = parse_index(token);
        let mut found = None;
        let mut index = 0usize;
        loop {
            if Some(index) == wanted {
                match seq.next_element_seed(At { rest: *after })? {
                    Some(value) => found = value,
                    None => break,
                }
            } else if seq.next_element_seed(Skip)?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(found)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

// === impl KeyIs ===

/// Whether an object's key is the token (keys are parsed, and checked, as
/// the `Value` parse does).
struct KeyIs<'t, 'p>(&'t Cow<'p, str>);

impl<'de> DeserializeSeed<'de> for KeyIs<'_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_, '_> {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == &**self.0)
    }
}

// === impl Skip ===

/// Any value, parsed (so checked) and dropped.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the route table did before: the whole document as a `Value`.
    fn by_value(body: &[u8], pointer: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        text_of(value.pointer(pointer)?.clone())
    }

    fn both(body: &str, pointer: &str) -> Option<String> {
        let found = text_at(body.as_bytes(), pointer);
        assert_eq!(found, by_value(body.as_bytes(), pointer), "{pointer:?} in {body:?}");
        found
    }

    #[test]
    fn finds_strings_and_numbers_as_value_pointer_does() {
        assert_eq!(both(r#"{"username":"alice","password":"x"}"#, "/username").as_deref(), Some("alice"));
        assert_eq!(both(r#"{"user":{"email":"a@b.c"}}"#, "/user/email").as_deref(), Some("a@b.c"));
        assert_eq!(both(r#"{"id":12345678901234567890}"#, "/id").as_deref(), Some("12345678901234567890"));
        assert_eq!(both(r#"{"id":-3}"#, "/id").as_deref(), Some("-3"));
        assert_eq!(both(r#"{"id":1.5e3}"#, "/id").as_deref(), Some("1500.0"));
        assert_eq!(both(r#"{"a":["x","y"]}"#, "/a/1").as_deref(), Some("y"));
        assert_eq!(both(r#"{"a/b":{"~":"t"}}"#, "/a~1b/~0").as_deref(), Some("t"));
        assert_eq!(both(r#"{"u":"\u00e9\ud83d\ude00"}"#, "/u").as_deref(), Some("é😀"));
        assert_eq!(both(r#""whole""#, "").as_deref(), Some("whole"));
    }

    #[test]
    fn the_last_of_a_repeated_key_counts() {
        assert_eq!(both(r#"{"u":"first","u":"second"}"#, "/u").as_deref(), Some("second"));
        assert_eq!(both(r#"{"u":{"n":"x"},"u":{"m":"y"}}"#, "/u/n"), None);
        assert_eq!(both(r#"{"u":"x","u":[1]}"#, "/u"), None);
    }

    #[test]
    fn names_nothing_where_value_pointer_names_nothing() {
        for (body, pointer) in [
            (r#"{"u":true}"#, "/u"),
            (r#"{"u":null}"#, "/u"),
            (r#"{"u":{"v":1}}"#, "/u"),
            (r#"{"u":"x"}"#, "/v"),
            (r#"{"u":"x"}"#, "/u/v"),
            (r#"{"u":"x"}"#, "u"),
            (r#"["a","b"]"#, "/01"),
            (r#"["a","b"]"#, "/+1"),
            (r#"["a","b"]"#, "/2"),
            (r#"["a","b"]"#, "/-"),
            (r#"{"u":"x"}"#, ""),
        ] {
            assert_eq!(both(body, pointer), None, "{pointer:?} in {body:?}");
        }
    }

    #[test]
    fn refuses_what_the_value_parse_refuses() {
        for body in [
            r#"{"u":"x""#,
            r#"{"u":"x"} trailing"#,
            r#"{"u":"x","n":1e400}"#,
            r#"{"u":"x","s":"\ud800"}"#,
            r#"{"u":"x",}"#,
            r#"{"u":"x","v":[1,2,]}"#,
        ] {
            assert_eq!(both(body, "/u"), None, "{body:?}");
        }
        let deep = format!(r#"{{"u":"x","d":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(both(&deep, "/u"), None);
        let invalid_utf8 = b"{\"u\":\"x\",\"s\":\"\xff\"}";
        assert_eq!(text_at(invalid_utf8, "/u"), None);
        assert_eq!(by_value(invalid_utf8, "/u"), None);
    }

    /// A small JSON document, as text, with keys from a few names so that
    /// pointers hit, miss and repeat.
    fn document() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            "[a-z~/é]{0,4}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|f| f.to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
            Just("1e400".to_string()),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((prop::sample::select(vec!["u", "v", "a/b", "~", "0", "1"]), inner), 0..4)
                    .prop_map(|entries| {
                        let entries: Vec<String> = entries
                            .into_iter()
                            .map(|(key, value)| format!("{}:{value}", serde_json::to_string(key).unwrap()))
                            .collect();
                        format!("{{{}}}", entries.join(","))
                    }),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_value_pointer(
            body in document(),
            tokens in prop::collection::vec(prop::sample::select(vec!["u", "v", "a~1b", "~0", "0", "1", "01", ""]), 0..4),
        ) {
            let pointer: String = tokens.iter().map(|token| format!("/{token}")).collect();
            prop_assert_eq!(text_at(body.as_bytes(), &pointer), by_value(body.as_bytes(), &pointer));
        }
    }
}
