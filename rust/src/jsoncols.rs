//! JSON Lines straight into typed columns, with the schema [`crate::jsontype`] inferred.
//!
//! The reader's scan has already validated every line and inferred one type for all of them,
//! so each block of lines is parsed once more, with serde_json and no intermediate values,
//! into plain column buffers (values, offsets, validity) that the Python layer hands to Polars
//! as Arrow arrays. What Polars' own NDJSON reader would give for the same schema is the
//! reference (a missing field or `null` is a null, an int in a float column is widened); it
//! parses each block once more into values before building its columns, which is the cost this
//! saves. Blank lines are skipped, as Polars does; a line that does not fit the schema (only
//! possible when it is not the schema of these lines) is an error naming the line.
//!
//! Written here rather than taken from a library: serde_json is the parser already used for the
//! scan, and the column buffers are the few Arrow layouts Polars needs, without depending on
//! Polars in the core.

use std::fmt;

use rayon::prelude::*;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{Result, SftError};
use crate::jsontype::{JType, Key};
use crate::parallel;

/// One column being built; the layouts of Arrow (offsets and validity per value).
#[derive(Debug, Clone, PartialEq)]
pub enum Col {
    /// A column of nulls only (its type was never seen).
    Null(usize),
    /// Booleans.
    Bool {
        /// Values (false under a null).
        values: Vec<bool>,
        /// Validity.
        valid: Vec<bool>,
    },
    /// 64-bit integers.
    Int {
        /// Values (0 under a null).
        values: Vec<i64>,
        /// Validity.
        valid: Vec<bool>,
    },
    /// 64-bit floats (ints in the column are widened).
    Float {
        /// Values (0 under a null).
        values: Vec<f64>,
        /// Validity.
        valid: Vec<bool>,
    },
    /// Strings: value `i` is `data[offsets[i]..offsets[i + 1]]`.
    Str {
        /// `len + 1` offsets into `data`.
        offsets: Vec<usize>,
        /// The strings, one after the other.
        data: String,
        /// Validity.
        valid: Vec<bool>,
    },
    /// Lists: value `i` is `child[offsets[i]..offsets[i + 1]]`.
    List {
        /// `len + 1` offsets into `child`.
        offsets: Vec<i64>,
        /// Validity.
        valid: Vec<bool>,
        /// The elements of all the lists.
        child: Box<Col>,
    },
    /// Structs: one child per field, each as long as the struct.
    Struct {
        /// Fields in schema order.
        fields: Vec<(String, Col)>,
        /// Validity.
        valid: Vec<bool>,
        /// `seen[i] == valid.len() + 1` when field `i` was given in the object being read.
        seen: Vec<usize>,
    },
}

impl Col {
    /// An empty column of type `t` (`Mixed` has no column: `None`).
    #[must_use]
    pub fn new(t: &JType) -> Option<Col> {
        Some(match t {
            JType::Null => Col::Null(0),
            JType::Bool => Col::Bool {
                values: Vec::new(),
                valid: Vec::new(),
            },
            JType::Int => Col::Int {
                values: Vec::new(),
                valid: Vec::new(),
            },
            JType::Float => Col::Float {
                values: Vec::new(),
                valid: Vec::new(),
            },
            JType::Str => Col::Str {
                offsets: vec![0],
                data: String::new(),
                valid: Vec::new(),
            },
            JType::List(inner) => Col::List {
                offsets: vec![0],
                valid: Vec::new(),
                child: Box::new(Col::new(inner)?),
            },
            JType::Struct(fields) => Col::Struct {
                fields: fields
                    .iter()
                    .map(|(n, t)| Some((n.clone(), Col::new(t)?)))
                    .collect::<Option<_>>()?,
                valid: Vec::new(),
                seen: vec![0; fields.len()],
            },
            JType::Mixed => return None,
        })
    }

    /// Number of values.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Col::Null(n) => *n,
            Col::Bool { valid, .. }
            | Col::Int { valid, .. }
            | Col::Float { valid, .. }
            | Col::Str { valid, .. }
            | Col::List { valid, .. }
            | Col::Struct { valid, .. } => valid.len(),
        }
    }

    /// Whether the column has no values.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push_null(&mut self) {
        match self {
            Col::Null(n) => *n += 1,
            Col::Bool { values, valid } => {
                values.push(false);
                valid.push(false);
            }
            Col::Int { values, valid } => {
                values.push(0);
                valid.push(false);
            }
            Col::Float { values, valid } => {
                values.push(0.0);
                valid.push(false);
            }
            Col::Str {
                offsets,
                data,
                valid,
            } => {
                offsets.push(data.len());
                valid.push(false);
            }
            Col::List {
                offsets,
                valid,
                child,
            } => {
                #[allow(clippy::cast_possible_wrap)]
                offsets.push(child.len() as i64);
                valid.push(false);
            }
            Col::Struct { fields, valid, .. } => {
                fields.iter_mut().for_each(|(_, c)| c.push_null());
                valid.push(false);
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Col::Null(_) => "null",
            Col::Bool { .. } => "bool",
            Col::Int { .. } => "i64",
            Col::Float { .. } => "f64",
            Col::Str { .. } => "str",
            Col::List { .. } => "list",
            Col::Struct { .. } => "struct",
        }
    }

    fn mismatch<E: de::Error>(&self, got: &str) -> E {
        E::custom(format_args!(
            "{got} in a column of type {} (not the schema of these lines)",
            self.kind()
        ))
    }
}

/// Append a valid value.
fn put<T, E>(values: &mut Vec<T>, valid: &mut Vec<bool>, v: T) -> std::result::Result<(), E> {
    values.push(v);
    valid.push(true);
    Ok(())
}

/// Appends one JSON value to the column it holds.
struct Fill<'a>(&'a mut Col);

impl<'de> DeserializeSeed<'de> for Fill<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fill<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<(), E> {
        match self.0 {
            Col::Bool { values, valid } => put(values, valid, v),
            c => Err(c.mismatch("a boolean")),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<(), E> {
        match self.0 {
            Col::Int { values, valid } => put(values, valid, v),
            #[allow(clippy::cast_precision_loss)]
            Col::Float { values, valid } => put(values, valid, v as f64),
            c => Err(c.mismatch("an integer")),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(self.0.mismatch("an integer beyond i64")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<(), E> {
        match self.0 {
            Col::Float { values, valid } => put(values, valid, v),
            c => Err(c.mismatch("a float")),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<(), E> {
        match self.0 {
            Col::Str {
                offsets,
                data,
                valid,
            } => {
                data.push_str(v);
                offsets.push(data.len());
                valid.push(true);
                Ok(())
            }
            c => Err(c.mismatch("a string")),
        }
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        self.0.push_null();
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<(), E> {
        self.0.push_null();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        match self.0 {
            Col::List {
                offsets,
                valid,
                child,
            } => {
                while seq.next_element_seed(Fill(child))?.is_some() {}
                #[allow(clippy::cast_possible_wrap)]
                offsets.push(child.len() as i64);
                valid.push(true);
                Ok(())
            }
            c => Err(c.mismatch("an array")),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let Col::Struct {
            fields,
            valid,
            seen,
        } = self.0
        else {
            return Err(self.0.mismatch("an object"));
        };
        let stamp = valid.len() + 1;
        let mut next = 0; // keys usually come in schema order: try the next field first
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let at = if fields.get(next).is_some_and(|(n, _)| *n == key) {
                Some(next)
            } else {
                fields.iter().position(|(n, _)| *n == key)
            };
            match at {
                Some(i) => {
                    if seen[i] == stamp {
                        return Err(de::Error::custom(format_args!(
                            "key {key:?} twice in one object"
                        )));
                    }
                    seen[i] = stamp;
                    map.next_value_seed(Fill(&mut fields[i].1))?;
                    next = i + 1;
                }
                // A field left out of the columns asked for.
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        for ((_, c), s) in fields.iter_mut().zip(seen.iter()) {
            if *s != stamp {
                c.push_null();
            }
        }
        valid.push(true);
        Ok(())
    }
}

/// The columns of `t` (a struct: the type of the object lines) to build, in schema order:
/// all of them, or those named in `only` (unknown names are ignored).
///
/// # Errors
/// [`SftError::Schema`] when `t` is not a struct or is not plain (see [`JType::is_plain`]).
pub fn columns_of(t: &JType, only: Option<&[String]>) -> Result<JType> {
    let JType::Struct(fields) = t else {
        return Err(SftError::Schema("JSON Lines rows: expected objects".into()));
    };
    if !t.is_plain() {
        return Err(SftError::Schema(
            "JSON Lines rows: no single column type without coercion".into(),
        ));
    }
    Ok(JType::Struct(
        fields
            .iter()
            .filter(|(n, _)| only.is_none_or(|o| o.iter().any(|x| x == n)))
            .cloned()
            .collect(),
    ))
}

/// Parse the object lines of `block` (blank lines skipped) into columns of `t` (from
/// [`columns_of`]; fields of the lines not in `t` are skipped), in frames of at most
/// `rows_per_frame` rows, built in parallel; each frame is its row count and the fields of
/// `t` in order.
///
/// # Errors
/// [`SftError::Schema`] naming the line of the block (1-based) that is not JSON or does not
/// fit `t`.
pub fn parse_block(
    block: &[u8],
    t: &JType,
    rows_per_frame: usize,
) -> Result<Vec<(usize, Vec<Col>)>> {
    let empty = Col::new(t).ok_or_else(|| SftError::Schema("a type without columns".into()))?;
    if !matches!(empty, Col::Struct { .. }) {
        return Err(SftError::Schema("JSON Lines rows: expected objects".into()));
    }
    // (line number, line) of the non-blank lines.
    let mut lines: Vec<(usize, &[u8])> = Vec::new();
    let mut start = 0;
    for (n, end) in memchr::memchr_iter(b'\n', block)
        .chain((block.last() != Some(&b'\n')).then_some(block.len()))
        .enumerate()
    {
        let line = &block[start..end];
        start = end + 1;
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push((n + 1, line));
        }
    }
    let build = |chunk: &[(usize, &[u8])]| -> Result<(usize, Vec<Col>)> {
        let mut top = empty.clone();
        for &(n, line) in chunk {
            let mut de = serde_json::Deserializer::from_slice(line);
            Fill(&mut top)
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .map_err(|e| SftError::Schema(format!("line {n} of the block: {e}")))?;
        }
        match top {
            Col::Struct { fields, valid, .. } => {
                Ok((valid.len(), fields.into_iter().map(|(_, c)| c).collect()))
            }
            _ => unreachable!("checked above"),
        }
    };
    let rows = rows_per_frame.max(1);
    if lines.len() <= rows {
        return Ok(vec![build(&lines)?]);
    }
    parallel::install(|| lines.par_chunks(rows).map(build).collect())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsontype::infer_line;

    fn infer(text: &str) -> JType {
        let mut t = JType::Null;
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            infer_line(l.as_bytes(), &mut t).unwrap();
        }
        t
    }

    fn strs(c: &Col) -> Vec<Option<&str>> {
        let Col::Str {
            offsets,
            data,
            valid,
        } = c
        else {
            panic!("not strings: {c:?}")
        };
        (0..valid.len())
            .map(|i| valid[i].then(|| &data[offsets[i]..offsets[i + 1]]))
            .collect()
    }

    #[test]
    fn nested_columns_with_nulls_and_widening() {
        let text = concat!(
            "{\"m\": [{\"role\": \"user\", \"content\": \"a\\n\\u00e9\"}], \"x\": 1}\n",
            "\n",
            "  {\"x\": 2.5, \"m\": [], \"c\": \"k\"}\r\n",
            "{\"m\": null, \"c\": null}\n",
            "{\"m\": [null, {\"content\": \"中文\"}], \"x\": null}"
        );
        let t = columns_of(&infer(text), None).unwrap();
        let frames = parse_block(text.as_bytes(), &t, 100).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 4);
        let cols = &frames[0].1;
        let Col::List {
            offsets,
            valid,
            child,
        } = &cols[0]
        else {
            panic!()
        };
        assert_eq!(offsets, &[0, 1, 1, 1, 3]);
        assert_eq!(valid, &[true, true, false, true]);
        let Col::Struct { fields, valid, .. } = &**child else {
            panic!()
        };
        assert_eq!(valid, &[true, false, true]);
        assert_eq!(strs(&fields[0].1), [Some("user"), None, None]);
        assert_eq!(strs(&fields[1].1), [Some("a\né"), None, Some("中文")]);
        assert_eq!(
            cols[1],
            Col::Float {
                values: vec![1.0, 2.5, 0.0, 0.0],
                valid: vec![true, true, false, false]
            }
        );
        assert_eq!(strs(&cols[2]), [None, Some("k"), None, None]);
        // Only some columns, in frames of 3 rows: the same values.
        let only = ["c".to_string()];
        let t2 = columns_of(&infer(text), Some(&only)).unwrap();
        let frames = parse_block(text.as_bytes(), &t2, 3).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(strs(&frames[0].1[0]), [None, Some("k"), None]);
        assert_eq!(strs(&frames[1].1[0]), [None]);
        // No columns: the row counts still.
        let none = columns_of(&infer(text), Some(&[])).unwrap();
        let frames = parse_block(text.as_bytes(), &none, 3).unwrap();
        assert_eq!(
            frames.iter().map(|f| (f.0, f.1.len())).collect::<Vec<_>>(),
            [(3, 0), (1, 0)]
        );
    }

    #[test]
    fn lines_that_do_not_fit_are_errors_naming_the_line() {
        let t = columns_of(&infer("{\"a\": 1}"), None).unwrap();
        for (text, line) in [
            ("{\"a\": 1}\n{\"a\": \"x\"}", 2),
            ("\n{\"a\": 1, \"a\": 2}", 2),
            ("{\"a\": 1} x", 1),
            ("{\"a\": 1}\n\n\n{\"a\": 1.5}\n", 4),
        ] {
            let e = parse_block(text.as_bytes(), &t, 10)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("line {line} of the block")), "{e}");
        }
        assert!(columns_of(&JType::Int, None).is_err());
        assert!(columns_of(&infer("{\"a\": 1}\n{\"a\": \"x\"}"), None).is_err());
    }
}
