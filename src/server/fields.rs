//! Request members in memory bounded by the body's size, whatever its shape.
//!
//! Parsing a body into a `serde_json::Value` costs about 20 times its size when it holds
//! many tiny members or array items (each one a map entry or a 32-byte `Value`). The
//! handlers only read a few known scalar members, so only those are kept: other members are
//! checked for syntax and skipped, and arrays and objects are skipped too, leaving an empty
//! one behind so the handler still answers "must be a string" for it.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Every member any handler reads.
pub const KNOWN: &[&str] = &[
    "name",
    "parentId",
    "title",
    "description",
    "altText",
    "sortOrder",
    "isFavorite",
    "isPrivate",
    "folderId",
    "fileName",
    "mimeType",
];

/// The known member named `key`, if it is one.
pub fn known(key: &str) -> Option<&'static str> {
    KNOWN.iter().copied().find(|k| *k == key)
}

/// A JSON body: an object's known members, or "not an object".
pub enum Body {
    Object(Map<String, Value>),
    NotObject,
}

/// Parses a whole body: known members kept (the last of duplicates wins), others checked
/// and dropped.
pub fn parse_body(bytes: &[u8]) -> serde_json::Result<Body> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let body = de.deserialize_any(TopVisitor)?;
    de.end()?;
    Ok(body)
}

/// Parses one member's value: a scalar as it is, an array or object as an empty one.
pub fn parse_value(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = ShallowSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Checks a value's syntax without building it.
pub fn check_value(bytes: &[u8]) -> serde_json::Result<()> {
    serde_json::from_slice::<IgnoredAny>(bytes).map(|_| ())
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Some(k) => {
                    let v = map.next_value_seed(ShallowSeed)?;
                    out.insert(k.to_string(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Body::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Body::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Body, E> {
        Ok(Body::NotObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Body, E> {
        Ok(Body::NotObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Body, E> {
        Ok(Body::NotObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Body, E> {
        Ok(Body::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Body, E> {
        Ok(Body::NotObject)
    }
    fn visit_unit<E>(self) -> Result<Body, E> {
        Ok(Body::NotObject)
    }
}

/// A member name, matched against [`KNOWN`] without allocating.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(known(v))
    }
}

struct ShallowSeed;

impl<'de> DeserializeSeed<'de> for ShallowSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ShallowSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Object(Map::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_known_scalars_and_skips_the_rest() {
        let body = br#"{"title":"a\u00e9","x":[1,{"y":2}],"sortOrder":-3,"isFavorite":true,
            "description":null,"folderId":["not","a","string"],"altText":{"k":1},"title":"b"}"#;
        let Body::Object(m) = parse_body(body).unwrap() else {
            panic!("an object")
        };
        assert_eq!(m["title"], "b", "the last duplicate wins");
        assert_eq!(m["sortOrder"], -3);
        assert_eq!(m["isFavorite"], true);
        assert_eq!(m["description"], Value::Null);
        assert_eq!(m["folderId"], Value::Array(vec![]));
        assert_eq!(m["altText"], Value::Object(Map::new()));
        assert!(!m.contains_key("x"));
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn syntax_errors_and_non_objects() {
        for bad in [&b"{"[..], b"{\"a\":}", b"{\"a\":1}x", b"[1,", b""] {
            assert!(parse_body(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        for other in [&b"[1,2]"[..], b"3", b"\"s\"", b"null", b"true"] {
            assert!(matches!(parse_body(other).unwrap(), Body::NotObject));
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        // Skipped without recursion (serde_json keeps one byte per level).
        assert!(matches!(
            parse_body(deep.as_bytes()).unwrap(),
            Body::NotObject
        ));
        assert_eq!(parse_value(b" \"x\" ").unwrap(), "x");
        assert!(check_value(b"[1,{\"a\":[]}]").is_ok());
        assert!(check_value(b"[1,").is_err());
    }
}
