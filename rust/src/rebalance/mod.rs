//! Category rebalancing: exact, deterministic mix plans over any number of rows.
//!
//! Three steps, each O(categories) in memory:
//!
//! 1. The caller aggregates its rows by (raw label, hash bucket) into rows and units (a
//!    streaming group-by in Polars): [`Plan::new`] normalises the labels (NFKC, trimmed),
//!    merges the variants, maps null labels to a named category or drops them (counted), and
//!    derives integer targets ([`plan::targets`]) and each category's [`select::Cut`].
//! 2. The caller hands back the rows of each category's boundary bucket (about 1/4096 of the
//!    category): [`Plan::resolve`] fixes the hash threshold and the exact after-counts.
//! 3. The caller keeps `copies = base + (hash ≤ threshold)` copies of every row.
//!
//! The hash is [`keyed_hash`]: xxh3-64 with the seed over the row's key columns, so the result
//! depends on the data, the parameters and the seed only.

pub mod plan;
pub mod select;

use std::collections::BTreeMap;

use unicode_normalization_alignments::UnicodeNormalization;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::{Result, SftError};
pub use plan::{Method, PlanSpec};
pub use select::{bucket_of, Cut, Histogram, Resolved, BUCKETS};

/// A category label as counted: Unicode NFKC, then trimmed (so `closed\u{a0}qa` and
/// ` closed qa` are both `closed qa`).
#[must_use]
pub fn normalize_label(label: &str) -> String {
    let nfkc: String = label.nfkc().map(|(c, _)| c).collect();
    nfkc.trim().to_string()
}

/// One key column of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyColumn<'a> {
    /// Strings or bytes (`None` = null).
    Bytes(Vec<Option<&'a [u8]>>),
    /// Integers (`None` = null).
    Int(Vec<Option<i64>>),
}

impl KeyColumn<'_> {
    fn len(&self) -> usize {
        match self {
            KeyColumn::Bytes(v) => v.len(),
            KeyColumn::Int(v) => v.len(),
        }
    }
}

/// The keyed hash of each row over its key columns: xxh3-64 with `seed` over, per column, a
/// null tag, or a tag and the integer's 8 bytes, or a tag, the length and the bytes (so
/// `("ab", "c")` and `("a", "bc")` differ). One-shot hashing of a small per-row buffer: for
/// short keys it is several times faster than the streaming hasher.
///
/// # Errors
/// [`SftError::Schema`] when the columns differ in length.
pub fn keyed_hash(columns: &[KeyColumn<'_>], seed: u64) -> Result<Vec<u64>> {
    let rows = columns.first().map_or(0, KeyColumn::len);
    if let Some(c) = columns.iter().find(|c| c.len() != rows) {
        return Err(SftError::Schema(format!(
            "key columns differ in length: {rows} and {}",
            c.len()
        )));
    }
    if let [KeyColumn::Int(v)] = columns {
        // The common case (an integer id): no buffer at all.
        return Ok(v
            .iter()
            .map(|x| match x {
                None => xxh3_64_with_seed(&[0], seed),
                Some(i) => {
                    let mut b = [2u8; 9];
                    b[1..].copy_from_slice(&i.to_le_bytes());
                    xxh3_64_with_seed(&b, seed)
                }
            })
            .collect());
    }
    let mut buf = Vec::with_capacity(64);
    Ok((0..rows)
        .map(|r| {
            buf.clear();
            for c in columns {
                match c {
                    KeyColumn::Bytes(v) => match v[r] {
                        None => buf.push(0),
                        Some(b) => {
                            buf.push(1);
                            buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
                            buf.extend_from_slice(b);
                        }
                    },
                    KeyColumn::Int(v) => match v[r] {
                        None => buf.push(0),
                        Some(i) => {
                            buf.push(2);
                            buf.extend_from_slice(&i.to_le_bytes());
                        }
                    },
                }
            }
            xxh3_64_with_seed(&buf, seed)
        })
        .collect())
}

/// One raw label's selection: (label, base copies, hash threshold, boundary bucket).
pub type SelectorEntry = (Option<String>, u32, Option<u64>, Option<u16>);

/// What the selection needs per raw label: built once per batch from the plan's lists.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    by_label: rustc_hash::FxHashMap<String, usize>,
    null: Option<usize>,
    base: Vec<u32>,
    threshold: Vec<Option<u64>>,
    boundary: Vec<Option<u16>>,
}

impl Selector {
    /// One entry per raw label (`None` = the null label): base copies, hash threshold for the
    /// extra copy, boundary bucket. Labels not listed select nothing.
    #[must_use]
    pub fn new(entries: Vec<SelectorEntry>) -> Self {
        let mut s = Selector::default();
        for (i, (label, base, thr, bnd)) in entries.into_iter().enumerate() {
            match label {
                Some(l) => {
                    s.by_label.insert(l, i);
                }
                None => s.null = Some(i),
            }
            s.base.push(base);
            s.threshold.push(thr);
            s.boundary.push(bnd);
        }
        s
    }

    fn entry(&self, label: Option<&str>) -> Option<usize> {
        match label {
            Some(l) => self.by_label.get(l).copied(),
            None => self.null,
        }
    }

    /// Copies of each row: `base + (hash ≤ threshold)`; 0 for an unknown label.
    #[must_use]
    pub fn copies(&self, labels: &[Option<&str>], hashes: &[u64]) -> Vec<u32> {
        labels
            .iter()
            .zip(hashes)
            .map(|(l, &h)| {
                self.entry(*l).map_or(0, |i| {
                    self.base[i] + u32::from(self.threshold[i].is_some_and(|t| h <= t))
                })
            })
            .collect()
    }

    /// The hash of each row in its label's boundary bucket, else `None`.
    #[must_use]
    pub fn boundary_hashes(&self, labels: &[Option<&str>], hashes: &[u64]) -> Vec<Option<u64>> {
        labels
            .iter()
            .zip(hashes)
            .map(|(l, &h)| {
                let i = self.entry(*l)?;
                (self.boundary[i]? == bucket_of(h)).then_some(h)
            })
            .collect()
    }
}

/// One category of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryPlan {
    /// The normalised label.
    pub name: String,
    /// The raw labels merged into it (sorted; a null label shows as `None`).
    pub labels: Vec<Option<String>>,
    /// Rows before.
    pub rows: u64,
    /// Units before.
    pub units: u64,
    /// Units asked for by the method.
    pub target: u64,
    /// The selection's first-pass part.
    pub cut: Cut,
    /// The final selection, once [`Plan::resolve`] has run.
    pub resolved: Option<Resolved>,
    hist: Histogram,
}

impl CategoryPlan {
    /// Rows after selection (`None` before [`Plan::resolve`]).
    #[must_use]
    pub fn rows_after(&self) -> Option<u64> {
        self.resolved.map(|r| r.base * self.rows + r.extra_rows)
    }

    /// Units after selection (`None` before [`Plan::resolve`]).
    #[must_use]
    pub fn units_after(&self) -> Option<u64> {
        self.resolved.map(|r| r.base * self.units + r.extra_units)
    }
}

/// One group of the first pass: rows with the same raw label and hash bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The raw label (`None` = null).
    pub label: Option<String>,
    /// The hash bucket ([`bucket_of`]).
    pub bucket: u16,
    /// Rows in the group.
    pub rows: u64,
    /// Units in the group.
    pub units: u64,
}

/// A mix plan: categories with targets and, once resolved, the exact selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Categories, sorted by name.
    pub categories: Vec<CategoryPlan>,
    /// Rows with a null label that were dropped (no `null_category` given).
    pub null_rows_dropped: u64,
    /// Units of those rows.
    pub null_units_dropped: u64,
}

/// Method parameters keyed by category name: resolved to the plan's category order.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodSpec {
    /// A method with no per-category values.
    Plain(Method),
    /// `weights`: one weight per category name (names are normalised like labels).
    Weights(Vec<(String, f64)>),
    /// `counts`: units per category name.
    Counts(Vec<(String, u64)>),
}

/// The parameters of [`MethodSpec::from_parts`] besides the method's name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodParams {
    /// `temperature` (method `temperature`).
    pub temperature: Option<f64>,
    /// `cap` (method `cap`).
    pub cap: Option<u64>,
    /// `floor` (method `cap`, optional).
    pub floor: Option<u64>,
    /// `weights` (method `weights`).
    pub weights: Option<Vec<(String, f64)>>,
    /// `counts` (method `counts`).
    pub counts: Option<Vec<(String, u64)>>,
}

impl MethodSpec {
    /// The method named `name` with its parameters; a parameter the method does not use is an
    /// error (it would silently do nothing).
    ///
    /// # Errors
    /// [`SftError::Config`] for an unknown method, a missing parameter or an unused one.
    pub fn from_parts(name: &str, p: MethodParams) -> Result<MethodSpec> {
        let used: &[&str] = match name {
            "proportional" | "unimax" => &[],
            "cap" => &["cap", "floor"],
            "temperature" => &["temperature"],
            "weights" => &["weights"],
            "counts" => &["counts"],
            other => {
                return Err(SftError::Config(format!(
                    "method: expected one of proportional, cap, temperature, unimax, weights, \
                     counts; got {other:?}"
                )))
            }
        };
        let given = [
            ("temperature", p.temperature.is_some()),
            ("cap", p.cap.is_some()),
            ("floor", p.floor.is_some()),
            ("weights", p.weights.is_some()),
            ("counts", p.counts.is_some()),
        ];
        if let Some((unused, _)) = given.iter().find(|(k, set)| *set && !used.contains(k)) {
            return Err(SftError::Config(format!(
                "{unused}: not used by method {name:?} (it takes {used:?})"
            )));
        }
        let missing = |what: &str| SftError::Config(format!("method {name:?} needs {what}=..."));
        Ok(match name {
            "proportional" => MethodSpec::Plain(Method::Proportional),
            "unimax" => MethodSpec::Plain(Method::Unimax),
            "cap" => MethodSpec::Plain(Method::Cap {
                cap: p.cap.ok_or_else(|| missing("cap"))?,
                floor: p.floor,
            }),
            "temperature" => MethodSpec::Plain(Method::Temperature(
                p.temperature.ok_or_else(|| missing("temperature"))?,
            )),
            "weights" => MethodSpec::Weights(p.weights.ok_or_else(|| missing("weights"))?),
            _ => MethodSpec::Counts(p.counts.ok_or_else(|| missing("counts"))?),
        })
    }
}

impl Plan {
    /// Build a plan from first-pass groups.
    ///
    /// # Errors
    /// [`SftError::Config`] for an invalid method parameter, a weight or count for an unknown
    /// category, a category with no weight or count, or an unreachable budget.
    pub fn new(
        groups: &[Group],
        null_category: Option<&str>,
        method: &MethodSpec,
        budget: Option<u64>,
        max_epochs: f64,
    ) -> Result<Plan> {
        let null_name = null_category.map(normalize_label);
        let mut by_name: BTreeMap<String, CategoryPlan> = BTreeMap::new();
        let (mut null_rows, mut null_units) = (0, 0);
        for g in groups {
            if usize::from(g.bucket) >= BUCKETS {
                return Err(SftError::Schema(format!(
                    "bucket {} out of range 0..{BUCKETS}",
                    g.bucket
                )));
            }
            let name = match (&g.label, &null_name) {
                (Some(l), _) => normalize_label(l),
                (None, Some(n)) => n.clone(),
                (None, None) => {
                    null_rows += g.rows;
                    null_units += g.units;
                    continue;
                }
            };
            let cat = by_name.entry(name.clone()).or_insert_with(|| CategoryPlan {
                name,
                labels: Vec::new(),
                rows: 0,
                units: 0,
                target: 0,
                cut: Cut::default(),
                resolved: None,
                hist: Histogram::default(),
            });
            if !cat.labels.contains(&g.label) {
                cat.labels.push(g.label.clone());
            }
            cat.rows += g.rows;
            cat.units += g.units;
            cat.hist.add(g.bucket, g.rows, g.units);
        }
        let mut categories: Vec<CategoryPlan> = by_name.into_values().collect();
        for c in &mut categories {
            c.labels.sort();
        }
        let names: Vec<String> = categories.iter().map(|c| c.name.clone()).collect();
        let sizes: Vec<u64> = categories.iter().map(|c| c.units).collect();
        let method = match method {
            MethodSpec::Plain(m) => m.clone(),
            MethodSpec::Weights(w) => Method::Weights(per_category(w, &names, "weights")?),
            MethodSpec::Counts(c) => Method::Counts(per_category(c, &names, "counts")?),
        };
        let spec = PlanSpec {
            method,
            budget,
            max_epochs,
        };
        let targets = plan::targets(&sizes, &names, &spec)?;
        for (c, t) in categories.iter_mut().zip(targets) {
            c.target = t;
            c.cut = select::cut(&c.hist, t);
        }
        Ok(Plan {
            categories,
            null_rows_dropped: null_rows,
            null_units_dropped: null_units,
        })
    }

    /// The category index of a raw label (`None` = dropped).
    #[must_use]
    pub fn category_of(&self, label: Option<&str>, null_category: Option<&str>) -> Option<usize> {
        let name = match label {
            Some(l) => normalize_label(l),
            None => normalize_label(null_category?),
        };
        self.categories
            .binary_search_by(|c| c.name.as_str().cmp(name.as_str()))
            .ok()
    }

    /// Fix the exact selection from the boundary rows `(category index, hash, units)`: the
    /// rows whose hash falls in their category's boundary bucket (others are ignored).
    ///
    /// # Errors
    /// [`SftError::Schema`] for a category index out of range.
    pub fn resolve(&mut self, boundary_rows: &[(u32, u64, u64)]) -> Result<()> {
        let mut per: Vec<Vec<(u64, u64)>> = vec![Vec::new(); self.categories.len()];
        for &(c, h, u) in boundary_rows {
            let cat = self.categories.get(c as usize).ok_or_else(|| {
                SftError::Schema(format!(
                    "category index {c} out of range ({} categories)",
                    self.categories.len()
                ))
            })?;
            if cat.cut.boundary == Some(bucket_of(h)) {
                per[c as usize].push((h, u));
            }
        }
        for (cat, rows) in self.categories.iter_mut().zip(&mut per) {
            cat.resolved = Some(select::resolve(&cat.cut, rows));
        }
        Ok(())
    }
}

/// Values keyed by category name → one per category in `names` order.
fn per_category<T: Copy>(values: &[(String, T)], names: &[String], what: &str) -> Result<Vec<T>> {
    let mut out: Vec<Option<T>> = vec![None; names.len()];
    for (k, v) in values {
        let key = normalize_label(k);
        let i = names.binary_search(&key).map_err(|_| {
            SftError::Config(format!(
                "{what}: no category {k:?} in the data; categories are {names:?}"
            ))
        })?;
        out[i] = Some(*v);
    }
    let missing: Vec<&String> = names
        .iter()
        .zip(&out)
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| n)
        .collect();
    if !missing.is_empty() {
        return Err(SftError::Config(format!(
            "{what}: no value for categories {missing:?} (give one for every category, 0 to drop one)"
        )));
    }
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_merge_under_nfkc_and_trim() {
        assert_eq!(normalize_label("closed\u{a0}qa"), "closed qa");
        assert_eq!(normalize_label("  ＣＯＤＥ "), "CODE");
        let g = |label: Option<&str>, bucket, rows| Group {
            label: label.map(str::to_string),
            bucket,
            rows,
            units: rows,
        };
        let groups = [
            g(Some("closed qa"), 0, 3),
            g(Some("closed\u{a0}qa"), 9, 2),
            g(Some("code"), 1, 5),
            g(None, 4, 7),
        ];
        let m = MethodSpec::Plain(Method::Proportional);
        let p = Plan::new(&groups, None, &m, None, 1.0).unwrap();
        assert_eq!(p.categories.len(), 2);
        assert_eq!(p.categories[0].name, "closed qa");
        assert_eq!(p.categories[0].rows, 5);
        assert_eq!(p.categories[0].labels.len(), 2);
        assert_eq!(p.null_rows_dropped, 7);
        let p = Plan::new(&groups, Some("code"), &m, None, 1.0).unwrap();
        assert_eq!(p.categories[1].rows, 12);
        assert_eq!(p.category_of(None, Some("code")), Some(1));
        assert_eq!(p.category_of(Some(" closed qa"), None), Some(0));
    }

    #[test]
    fn keyed_hash_is_stable_and_separates_columns() {
        let a = KeyColumn::Bytes(vec![Some(b"ab"), Some(b"a"), None]);
        let b = KeyColumn::Bytes(vec![Some(b"c"), Some(b"bc"), Some(b"")]);
        let h = keyed_hash(&[a.clone(), b.clone()], 0).unwrap();
        assert_ne!(h[0], h[1]);
        assert_eq!(h, keyed_hash(&[a.clone(), b], 0).unwrap());
        assert_ne!(h, keyed_hash(&[a], 0).unwrap());
        // The one-int-column fast path equals the general path's encoding.
        let ints = KeyColumn::Int(vec![Some(-1), None, Some(7)]);
        let one = keyed_hash(std::slice::from_ref(&ints), 3).unwrap();
        let two = keyed_hash(&[ints.clone(), KeyColumn::Int(vec![None; 3])], 3).unwrap();
        assert_eq!(one.len(), 3);
        assert_ne!(one, two);
        let mut buf = vec![2u8];
        buf.extend_from_slice(&(-1i64).to_le_bytes());
        assert_eq!(one[0], xxh3_64_with_seed(&buf, 3));
        assert_eq!(one[1], xxh3_64_with_seed(&[0], 3));
    }

    #[test]
    fn weights_need_every_category() {
        let groups = [Group {
            label: Some("a".into()),
            bucket: 0,
            rows: 1,
            units: 1,
        }];
        let e = Plan::new(
            &groups,
            None,
            &MethodSpec::Weights(vec![("b".into(), 1.0)]),
            None,
            1.0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no category \"b\""), "{e}");
    }
}
