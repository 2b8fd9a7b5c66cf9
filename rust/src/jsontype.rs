//! The column types of JSON Lines, inferred in the same pass that validates them, so that the
//! reader can hand Polars a schema and parse each block once (no inference pass over every
//! block, no temporary files to unify the blocks' schemas).
//!
//! The rules are Polars' for the shapes it infers unambiguously: `null` adds nothing; a number
//! is `Int64` if it fits, a float `Float64`, and ints and floats together are `Float64`; a
//! string is `String`; an array is a `List` of its elements' type; an object is a `Struct` of
//! its fields in order of first appearance (the top-level object gives the columns). Any other
//! mix at one place (a string and a number, an object and an array, an int beyond `i64`, a key
//! twice in one object) is [`JType::Mixed`], as is an object that never has a field, and the
//! caller lets Polars infer instead. A visitor walks each line without building values.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// An inferred type.
#[derive(Debug, Clone, PartialEq)]
pub enum JType {
    /// Only nulls (or nothing) seen so far.
    Null,
    /// `true` / `false`.
    Bool,
    /// Integers that fit `i64`.
    Int,
    /// Floats (or floats and ints).
    Float,
    /// Strings.
    Str,
    /// Arrays, of the inner type.
    List(Box<JType>),
    /// Objects: fields in order of first appearance.
    Struct(Vec<(String, JType)>),
    /// Not one Polars type without coercion rules we do not mirror.
    Mixed,
}

impl JType {
    /// `self` widened by `other` (the types of later lines), in place.
    pub fn merge(&mut self, other: JType) {
        let cur = std::mem::replace(self, JType::Mixed);
        *self = match (cur, other) {
            (JType::Mixed, _) | (_, JType::Mixed) => JType::Mixed,
            (JType::Null, t) | (t, JType::Null) => t,
            (JType::Int, JType::Float) | (JType::Float, JType::Int) => JType::Float,
            (JType::List(mut a), JType::List(b)) => {
                a.merge(*b);
                JType::List(a)
            }
            (JType::Struct(mut a), JType::Struct(b)) => {
                for (name, t) in b {
                    match a.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, slot)) => slot.merge(t),
                        None => a.push((name, t)),
                    }
                }
                JType::Struct(a)
            }
            (a, b) if a == b => a,
            _ => JType::Mixed,
        };
    }

    /// Whether Polars can be given this type as it is (no `Mixed` and no empty struct inside).
    #[must_use]
    pub fn is_plain(&self) -> bool {
        match self {
            JType::Mixed => false,
            JType::List(t) => t.is_plain(),
            JType::Struct(f) => !f.is_empty() && f.iter().all(|(_, t)| t.is_plain()),
            _ => true,
        }
    }

    /// Widen `self` with a leaf type.
    fn leaf(&mut self, t: JType) {
        match (&*self, &t) {
            (a, b) if a == b => {}
            (JType::Null, _) => *self = t,
            (JType::Int, JType::Float) => *self = JType::Float,
            (JType::Float, JType::Int) => {}
            _ => *self = JType::Mixed,
        }
    }
}

/// Widens the type it holds with one JSON value.
pub struct Infer<'a>(pub &'a mut JType);

impl<'de> DeserializeSeed<'de> for Infer<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Infer<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.0.leaf(JType::Bool);
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.0.leaf(JType::Int);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.leaf(if i64::try_from(v).is_ok() {
            JType::Int
        } else {
            JType::Mixed
        });
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.0.leaf(JType::Float);
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.0.leaf(JType::Str);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if matches!(self.0, JType::Null) {
            *self.0 = JType::List(Box::new(JType::Null));
        }
        match self.0 {
            JType::List(inner) => while seq.next_element_seed(Infer(inner))?.is_some() {},
            other => {
                *other = JType::Mixed;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if matches!(self.0, JType::Null) {
            *self.0 = JType::Struct(Vec::new());
        }
        let JType::Struct(fields) = self.0 else {
            *self.0 = JType::Mixed;
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            return Ok(());
        };
        // Fields seen in this object (a key twice is not something we mirror).
        let mut seen: Vec<usize> = Vec::new();
        let mut twice = false;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let i = match fields.iter().position(|(n, _)| n.as_str() == key) {
                Some(i) => i,
                None => {
                    fields.push((key.into_owned(), JType::Null));
                    fields.len() - 1
                }
            };
            if seen.contains(&i) {
                twice = true;
            }
            seen.push(i);
            map.next_value_seed(Infer(&mut fields[i].1))?;
        }
        if twice {
            *self.0 = JType::Mixed;
        }
        Ok(())
    }
}

/// An object key, borrowed from the line unless it has escapes.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The type of one line (a JSON value), widening `t`; the parse error, if any.
///
/// # Errors
/// serde_json's error when the line is not one JSON value.
pub fn infer_line(line: &[u8], t: &mut JType) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(line);
    Infer(t).deserialize(&mut de)?;
    de.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(lines: &[&str]) -> JType {
        let mut t = JType::Null;
        for l in lines {
            infer_line(l.as_bytes(), &mut t).unwrap();
        }
        t
    }

    fn st(fields: &[(&str, JType)]) -> JType {
        JType::Struct(
            fields
                .iter()
                .map(|(n, t)| ((*n).to_string(), t.clone()))
                .collect(),
        )
    }

    #[test]
    fn fields_in_first_seen_order_with_polars_widening() {
        let t = infer(&[
            r#"{"b": 1, "m": [{"role": "user", "content": "x"}]}"#,
            r#"{"a": null, "b": 2.5, "m": [], "c": true}"#,
            r#"{"m": [{"content": "y", "name": "z"}], "a": "s"}"#,
        ]);
        let msg = st(&[
            ("role", JType::Str),
            ("content", JType::Str),
            ("name", JType::Str),
        ]);
        assert_eq!(
            t,
            st(&[
                ("b", JType::Float),
                ("m", JType::List(Box::new(msg))),
                ("a", JType::Str),
                ("c", JType::Bool),
            ])
        );
        assert!(t.is_plain());
        // Line order is what counts, so merging chunks in order gives the same type.
        let mut split = infer(&[r#"{"b": 1, "m": [{"role": "user", "content": "x"}]}"#]);
        split.merge(infer(&[
            r#"{"a": null, "b": 2.5, "m": [], "c": true}"#,
            r#"{"m": [{"content": "y", "name": "z"}], "a": "s"}"#,
        ]));
        assert_eq!(split, t);
    }

    #[test]
    fn mixes_polars_would_coerce_are_mixed() {
        for lines in [
            &[r#"{"a": 1}"#, r#"{"a": "1"}"#][..],
            &[r#"{"a": [1]}"#, r#"{"a": {"b": 1}}"#],
            &[r#"{"a": 18446744073709551615}"#],
            &[r#"{"a": 1, "a": 2}"#],
            &[r#"{"a": true}"#, r#"{"a": 0}"#],
        ] {
            assert!(!infer(lines).is_plain(), "{lines:?}");
        }
        assert!(!infer(&[r#"{"a": {}}"#]).is_plain());
        assert!(infer(&[r#"{"a": {}}"#, r#"{"a": {"b": 1}}"#]).is_plain());
        let mut t = JType::Null;
        assert!(infer_line(b"{\"a\": 1} x", &mut t).is_err());
    }
}
