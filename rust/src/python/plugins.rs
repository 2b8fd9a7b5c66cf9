//! Polars expression plugins (`pl.col(...).sft.*`). Each one extracts columns, calls the core
//! and builds the output column; Polars calls them without the GIL, per batch.

use polars::prelude::*;
use pyo3_polars::derive::polars_expr;
use serde::Deserialize;

use super::convert::{byte_cells, key_column, str_cells, to_polars};
use crate::length_filter::{length_filter, FieldBounds, LengthFilterConfig};
use crate::parallel;
use crate::tokenize::registry;

#[derive(Deserialize)]
struct TokenCountKwargs {
    tokenizer: String,
    path: Option<String>,
    add_special_tokens: bool,
}

#[polars_expr(output_type=UInt32)]
fn token_count(inputs: &[Series], kwargs: TokenCountKwargs) -> PolarsResult<Series> {
    let s = &inputs[0];
    let enc = registry::get(&kwargs.tokenizer, kwargs.path.as_deref()).map_err(to_polars)?;
    let cells = str_cells(s).map_err(to_polars)?;
    let counts = enc
        .count_batch(&cells, kwargs.add_special_tokens)
        .map_err(to_polars)?;
    parallel::add_progress(cells.len());
    Ok(UInt32Chunked::from_iter_options(s.name().clone(), counts.into_iter()).into_series())
}

#[derive(Deserialize)]
struct LengthReasonKwargs {
    tokenizer: String,
    path: Option<String>,
    /// (name, min, max) per input column, in order.
    fields: Vec<(String, Option<u32>, Option<u32>)>,
    max_total: Option<u32>,
    add_special_tokens: bool,
    drop_empty: bool,
}

#[polars_expr(output_type=String)]
fn length_reason(inputs: &[Series], kwargs: LengthReasonKwargs) -> PolarsResult<Series> {
    let enc = registry::get(&kwargs.tokenizer, kwargs.path.as_deref()).map_err(to_polars)?;
    let cfg = LengthFilterConfig {
        fields: kwargs
            .fields
            .into_iter()
            .map(|(name, min, max)| FieldBounds { name, min, max })
            .collect(),
        max_total: kwargs.max_total,
        add_special_tokens: kwargs.add_special_tokens,
        drop_empty: kwargs.drop_empty,
    };
    let columns = inputs
        .iter()
        .map(byte_cells)
        .collect::<Result<Vec<_>, _>>()
        .map_err(to_polars)?;
    let outcome = length_filter(&enc, &cfg, &columns).map_err(to_polars)?;
    parallel::add_progress(outcome.reasons.len());
    let labels = outcome.reasons.iter().map(|r| r.map(|r| r.label(&cfg)));
    Ok(StringChunked::from_iter_options("sft_drop_reason".into(), labels).into_series())
}

#[derive(Deserialize)]
struct KeyedHashKwargs {
    /// The u64 seed's bits as an i64 (plugin kwargs are pickled; pickle's ints here stop at i64).
    seed: i64,
}

fn seed_bits(seed: i64) -> u64 {
    u64::from_ne_bytes(seed.to_ne_bytes())
}

/// Key columns (strings, bytes or Int64) → their keyed hashes.
fn hashes(keys: &[Series], seed: i64) -> PolarsResult<Vec<u64>> {
    let columns = keys
        .iter()
        .map(key_column)
        .collect::<Result<Vec<_>, _>>()
        .map_err(to_polars)?;
    crate::rebalance::keyed_hash(&columns, seed_bits(seed)).map_err(to_polars)
}

/// The input column unchanged; its length goes to the progress counter. Streaming steps that
/// call no other sftfast kernel (reading files) tap a column with it for their progress bar.
#[polars_expr(output_type=Int64)]
fn progress_tap(inputs: &[Series]) -> PolarsResult<Series> {
    parallel::add_progress(inputs[0].len());
    inputs[0].cast(&DataType::Int64)
}

/// xxh3-64 keyed by `seed` over the row's key columns.
#[polars_expr(output_type=UInt64)]
fn keyed_hash(inputs: &[Series], kwargs: KeyedHashKwargs) -> PolarsResult<Series> {
    let h = hashes(inputs, kwargs.seed)?;
    Ok(UInt64Chunked::from_vec("sft_hash".into(), h).into_series())
}

/// The histogram bucket (top 12 bits) of the keyed hash.
#[polars_expr(output_type=UInt32)]
fn keyed_bucket(inputs: &[Series], kwargs: KeyedHashKwargs) -> PolarsResult<Series> {
    let h = hashes(inputs, kwargs.seed)?;
    let b = h
        .into_iter()
        .map(|x| u32::from(crate::rebalance::bucket_of(x)));
    Ok(UInt32Chunked::from_iter_values("sft_bucket".into(), b).into_series())
}

#[derive(Deserialize)]
struct SelectKwargs {
    seed: i64,
    /// Per raw label (`None` = null label): base copies, threshold bits, boundary bucket.
    labels: Vec<Option<String>>,
    base: Vec<u32>,
    threshold: Vec<Option<i64>>,
    boundary: Vec<Option<u16>>,
}

fn selector(kw: &SelectKwargs) -> crate::rebalance::Selector {
    crate::rebalance::Selector::new(
        kw.labels
            .iter()
            .zip(&kw.base)
            .zip(kw.threshold.iter().zip(&kw.boundary))
            .map(|((l, &b), (t, &bnd))| (l.clone(), b, t.map(seed_bits), bnd))
            .collect(),
    )
}

/// Copies of each row (`inputs[0]` = the label column, the rest = key columns).
#[polars_expr(output_type=UInt32)]
fn rebalance_copies(inputs: &[Series], kwargs: SelectKwargs) -> PolarsResult<Series> {
    let labels = str_cells(&inputs[0]).map_err(to_polars)?;
    let h = hashes(&inputs[1..], kwargs.seed)?;
    let c = selector(&kwargs).copies(&labels, &h);
    Ok(UInt32Chunked::from_vec("sft_copies".into(), c).into_series())
}

/// The keyed hash of rows in their label's boundary bucket, else null.
#[polars_expr(output_type=UInt64)]
fn rebalance_boundary(inputs: &[Series], kwargs: SelectKwargs) -> PolarsResult<Series> {
    let labels = str_cells(&inputs[0]).map_err(to_polars)?;
    let h = hashes(&inputs[1..], kwargs.seed)?;
    let b = selector(&kwargs).boundary_hashes(&labels, &h);
    Ok(UInt64Chunked::from_iter_options("sft_hash".into(), b.into_iter()).into_series())
}

#[derive(Deserialize)]
struct ExactKeyKwargs {
    nfkc: bool,
    lowercase: bool,
    fold_whitespace: bool,
    fold_punctuation: bool,
    /// 64 or 128.
    bits: u32,
}

/// The exact-dedup key of each row over its text columns: UInt64 (`bits = 64`) or a 16-byte
/// Binary (`bits = 128`).
#[polars_expr(output_type_func_with_kwargs=exact_key_type)]
fn exact_key(inputs: &[Series], kwargs: ExactKeyKwargs) -> PolarsResult<Series> {
    let opts = crate::textnorm::NormOptions {
        nfkc: kwargs.nfkc,
        lowercase: kwargs.lowercase,
        fold_whitespace: kwargs.fold_whitespace,
        fold_punctuation: kwargs.fold_punctuation,
    };
    let cols = inputs
        .iter()
        .map(str_cells)
        .collect::<Result<Vec<_>, _>>()
        .map_err(to_polars)?;
    let n = cols.first().map_or(0, Vec::len);
    let keys = crate::textnorm::exact_keys(&cols, n, opts).map_err(to_polars)?;
    parallel::add_progress(n);
    if kwargs.bits == 64 {
        #[allow(clippy::cast_possible_truncation)]
        let v: Vec<u64> = keys.iter().map(|&k| k as u64).collect();
        Ok(UInt64Chunked::from_vec("sft_exact_key".into(), v).into_series())
    } else {
        let bytes: Vec<[u8; 16]> = keys.iter().map(|k| k.to_le_bytes()).collect();
        Ok(
            BinaryChunked::from_iter_values("sft_exact_key".into(), bytes.iter().map(|b| &b[..]))
                .into_series(),
        )
    }
}

fn exact_key_type(_: &[Field], kwargs: ExactKeyKwargs) -> PolarsResult<Field> {
    let dtype = if kwargs.bits == 64 {
        DataType::UInt64
    } else {
        DataType::Binary
    };
    Ok(Field::new("sft_exact_key".into(), dtype))
}

#[derive(Deserialize)]
struct MinhashKwargs {
    num_perm: usize,
    ngram: usize,
    seed: i64,
    nfkc: bool,
    lowercase: bool,
}

/// The MinHash signature of each text as a list of `num_perm` UInt32 (null text → null).
#[polars_expr(output_type_func=minhash_type)]
fn minhash(inputs: &[Series], kwargs: MinhashKwargs) -> PolarsResult<Series> {
    let texts = str_cells(&inputs[0]).map_err(to_polars)?;
    let norm = crate::textnorm::NormOptions {
        nfkc: kwargs.nfkc,
        lowercase: kwargs.lowercase,
        ..crate::textnorm::NormOptions::default()
    };
    let hasher =
        crate::minhash::MinHasher::new(kwargs.num_perm, kwargs.ngram, seed_bits(kwargs.seed), norm)
            .map_err(to_polars)?;
    let sigs = crate::minhash::signatures(&hasher, &texts).map_err(to_polars)?;
    let mut b = ListPrimitiveChunkedBuilder::<UInt32Type>::new(
        inputs[0].name().clone(),
        texts.len(),
        texts.len() * kwargs.num_perm,
        DataType::UInt32,
    );
    for (t, sig) in texts.iter().zip(sigs.chunks_exact(kwargs.num_perm.max(1))) {
        if t.is_some() {
            b.append_slice(sig);
        } else {
            b.append_null();
        }
    }
    Ok(b.finish().into_series())
}

fn minhash_type(fields: &[Field]) -> PolarsResult<Field> {
    Ok(Field::new(
        fields[0].name().clone(),
        DataType::List(Box::new(DataType::UInt32)),
    ))
}
