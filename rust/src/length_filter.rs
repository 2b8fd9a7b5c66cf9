//! Token-length filter: decide per row whether each field and the total fit their bounds.
//!
//! For each row, fields are checked in the order given; the first failure is the row's reason:
//! `null:<field>`, `invalid_utf8:<field>`, `empty:<field>` (only whitespace), `too_short:<field>`,
//! `too_long:<field>`, then `too_long:total`. Kept rows have no reason.
//!
//! Tokenising is skipped when byte-length bounds already decide the row
//! ([`Encoder::count_bounds`]: for byte-level BPE a row of n bytes has between n / longest-token
//! and n tokens), so a 10 MB row against `max_total = 4096` costs a length check; otherwise the
//! count is exact. Rows are independent, so the result is the same for any thread count.

use rayon::prelude::*;

use crate::error::{Result, SftError};
use crate::parallel;
use crate::tokenize::Encoder;

/// Bounds for one field (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldBounds {
    /// Column name (used in reasons).
    pub name: String,
    /// Fewest tokens allowed.
    pub min: Option<u32>,
    /// Most tokens allowed.
    pub max: Option<u32>,
}

/// Options of [`length_filter`].
#[derive(Debug, Clone)]
pub struct LengthFilterConfig {
    /// Per-field bounds, in check order.
    pub fields: Vec<FieldBounds>,
    /// Most tokens for all fields together.
    pub max_total: Option<u32>,
    /// Count the post-processor's special tokens (BOS/EOS) in each field.
    pub add_special_tokens: bool,
    /// Drop rows where a field is empty or only whitespace.
    pub drop_empty: bool,
}

impl LengthFilterConfig {
    /// Check the bounds.
    ///
    /// # Errors
    /// [`SftError::Config`] naming the field whose `min` exceeds its `max`, or no fields.
    pub fn validate(&self) -> Result<()> {
        if self.fields.is_empty() {
            return Err(SftError::Config(
                "fields: expected at least one column, got none".into(),
            ));
        }
        for f in &self.fields {
            if let (Some(lo), Some(hi)) = (f.min, f.max) {
                if lo > hi {
                    return Err(SftError::Config(format!(
                        "fields[{:?}]: min ({lo}) must be <= max ({hi})",
                        f.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Why a row was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The field is null.
    Null(usize),
    /// The field's bytes are not UTF-8.
    InvalidUtf8(usize),
    /// The field is empty or whitespace.
    Empty(usize),
    /// The field has fewer tokens than its `min`.
    TooShort(usize),
    /// The field has more tokens than its `max`.
    TooLong(usize),
    /// All fields together exceed `max_total`.
    TotalTooLong,
}

impl Reason {
    /// The reason as written in outputs, e.g. `too_long:answer`.
    pub fn label(&self, cfg: &LengthFilterConfig) -> String {
        let name = |i: &usize| {
            cfg.fields
                .get(*i)
                .map_or("?", |f| f.name.as_str())
                .to_string()
        };
        match self {
            Reason::Null(i) => format!("null:{}", name(i)),
            Reason::InvalidUtf8(i) => format!("invalid_utf8:{}", name(i)),
            Reason::Empty(i) => format!("empty:{}", name(i)),
            Reason::TooShort(i) => format!("too_short:{}", name(i)),
            Reason::TooLong(i) => format!("too_long:{}", name(i)),
            Reason::TotalTooLong => "too_long:total".to_string(),
        }
    }
}

/// The verdicts of [`length_filter`].
#[derive(Debug, Default)]
pub struct FilterOutcome {
    /// Per row: `None` = keep.
    pub reasons: Vec<Option<Reason>>,
    /// Rows decided by byte-length bounds alone (no tokenisation).
    pub decided_by_bounds: usize,
}

fn check_row(
    enc: &Encoder,
    cfg: &LengthFilterConfig,
    cells: &[Option<&[u8]>],
) -> Result<(Option<Reason>, bool)> {
    let mut texts = Vec::with_capacity(cells.len());
    for (i, cell) in cells.iter().enumerate() {
        let Some(bytes) = cell else {
            return Ok((Some(Reason::Null(i)), true));
        };
        let Ok(t) = std::str::from_utf8(bytes) else {
            return Ok((Some(Reason::InvalidUtf8(i)), true));
        };
        if cfg.drop_empty && t.trim().is_empty() {
            return Ok((Some(Reason::Empty(i)), true));
        }
        texts.push(t);
    }
    // Pass 1: byte bounds. A field is "settled" when its bounds prove it inside its own limits.
    let special = if cfg.add_special_tokens { 1 } else { 0 };
    let mut lo_total = 0usize;
    let mut hi_total = Some(0usize);
    let mut all_settled = true;
    for (i, (t, f)) in texts.iter().zip(&cfg.fields).enumerate() {
        match enc.count_bounds(t).filter(|_| special == 0) {
            Some((lo, hi)) => {
                if f.max.is_some_and(|m| lo > m as usize) {
                    return Ok((Some(Reason::TooLong(i)), true));
                }
                let settled = f.max.is_none_or(|m| hi <= m as usize)
                    && f.min.is_none_or(|m| lo >= m as usize);
                all_settled &= settled;
                lo_total += lo;
                hi_total = hi_total.map(|h| h + hi);
            }
            None => {
                all_settled = false;
                hi_total = None;
            }
        }
    }
    if let Some(mt) = cfg.max_total {
        if all_settled && lo_total > mt as usize {
            return Ok((Some(Reason::TotalTooLong), true));
        }
    }
    if all_settled
        && cfg
            .max_total
            .is_none_or(|mt| hi_total.is_some_and(|h| h <= mt as usize))
    {
        return Ok((None, true));
    }
    // Pass 2: exact counts.
    let mut total = 0usize;
    for (i, (t, f)) in texts.iter().zip(&cfg.fields).enumerate() {
        let n = enc.count(t, cfg.add_special_tokens)?;
        if f.min.is_some_and(|m| n < m as usize) {
            return Ok((Some(Reason::TooShort(i)), false));
        }
        if f.max.is_some_and(|m| n > m as usize) {
            return Ok((Some(Reason::TooLong(i)), false));
        }
        total += n;
    }
    if cfg.max_total.is_some_and(|mt| total > mt as usize) {
        return Ok((Some(Reason::TotalTooLong), false));
    }
    Ok((None, false))
}

/// Decide every row. `columns[f][row]` is field `f` of `row` (`None` = null).
///
/// # Errors
/// [`SftError::Config`] for invalid bounds or columns of unequal length, [`SftError::Tokenizer`]
/// naming the row when the tokenizer fails, [`SftError::Interrupted`] on Ctrl-C.
pub fn length_filter(
    enc: &Encoder,
    cfg: &LengthFilterConfig,
    columns: &[Vec<Option<&[u8]>>],
) -> Result<FilterOutcome> {
    cfg.validate()?;
    if columns.len() != cfg.fields.len() {
        return Err(SftError::Config(format!(
            "fields: {} bounds given for {} columns",
            cfg.fields.len(),
            columns.len()
        )));
    }
    let n = columns.first().map_or(0, Vec::len);
    if let Some((i, c)) = columns.iter().enumerate().find(|(_, c)| c.len() != n) {
        return Err(SftError::Schema(format!(
            "column {:?} has {} rows, expected {n}",
            cfg.fields[i].name,
            c.len()
        )));
    }
    let results: Vec<(Option<Reason>, bool)> = parallel::install(|| {
        (0..n)
            .into_par_iter()
            .with_min_len(256)
            .map(|row| {
                if row % 256 == 0 {
                    parallel::check_cancel()?;
                }
                let cells: Vec<Option<&[u8]>> = columns.iter().map(|c| c[row]).collect();
                check_row(enc, cfg, &cells)
                    .map_err(|e| SftError::Tokenizer(format!("row {row}: {e}")))
            })
            .collect::<Result<Vec<_>>>()
    })??;
    let decided_by_bounds = results.iter().filter(|r| r.1).count();
    Ok(FilterOutcome {
        reasons: results.into_iter().map(|r| r.0).collect(),
        decided_by_bounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc() -> Encoder {
        // Byte-level BPE with no merges: one token per byte; no fast-path special cases needed.
        let mut vocab = serde_json::Map::new();
        let mut n = 0u32;
        for b in 0..=255u8 {
            let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
            let c = if printable {
                char::from(b)
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            };
            vocab.insert(c.to_string(), serde_json::json!(b));
        }
        let j = serde_json::json!({"version": "1.0", "added_tokens": [], "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true,
                              "trim_offsets": false},
            "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "vocab": vocab, "merges": []}});
        Encoder::from_json(&j.to_string()).unwrap()
    }

    fn cfg(max_total: Option<u32>) -> LengthFilterConfig {
        LengthFilterConfig {
            fields: vec![
                FieldBounds {
                    name: "q".into(),
                    min: Some(2),
                    max: Some(10),
                },
                FieldBounds {
                    name: "a".into(),
                    min: None,
                    max: Some(20),
                },
            ],
            max_total,
            add_special_tokens: false,
            drop_empty: true,
        }
    }

    #[test]
    fn reasons_in_field_order() {
        let e = enc();
        let c = cfg(Some(25));
        let q: Vec<Option<&[u8]>> = vec![
            Some(b"hello"),
            None,
            Some(b"x"),
            Some(b"far too long here"),
            Some(b"  "),
            Some(b"fine"),
            Some(&[0xff, 0xfe]),
            Some(b"ten chars!"),
        ];
        let a: Vec<Option<&[u8]>> = vec![
            Some(b"world"),
            Some(b"a"),
            Some(b"a"),
            Some(b"a"),
            Some(b"a"),
            None,
            Some(b"a"),
            Some(b"twenty chars exactly"),
        ];
        let out = length_filter(&e, &c, &[q, a]).unwrap();
        let labels: Vec<Option<String>> =
            out.reasons.iter().map(|r| r.map(|r| r.label(&c))).collect();
        assert_eq!(
            labels,
            vec![
                None,
                Some("null:q".into()),
                Some("too_short:q".into()),
                Some("too_long:q".into()),
                Some("empty:q".into()),
                Some("null:a".into()),
                Some("invalid_utf8:q".into()),
                Some("too_long:total".into()),
            ]
        );
    }

    #[test]
    fn byte_bounds_agree_with_exact_counts() {
        let e = enc();
        let c = LengthFilterConfig {
            max_total: Some(12),
            ..cfg(None)
        };
        let big = "y".repeat(10_000_000);
        let q: Vec<Option<&[u8]>> = vec![Some(b"abc"), Some(big.as_bytes())];
        let a: Vec<Option<&[u8]>> = vec![Some(b"abc"), Some(b"b")];
        let out = length_filter(&e, &c, &[q, a]).unwrap();
        assert_eq!(out.reasons, vec![None, Some(Reason::TooLong(0))]);
        assert_eq!(out.decided_by_bounds, 2);
    }

    #[test]
    fn min_above_max_is_a_config_error() {
        let mut c = cfg(None);
        c.fields[0].min = Some(50);
        assert!(matches!(c.validate(), Err(SftError::Config(m)) if m.contains("\"q\"")));
    }
}
