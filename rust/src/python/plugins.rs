//! Polars expression plugins (`pl.col(...).sft.*`). Each one extracts columns, calls the core
//! and builds the output column; Polars calls them without the GIL, per batch.

use polars::prelude::*;
use pyo3_polars::derive::polars_expr;
use serde::Deserialize;

use super::convert::{byte_cells, str_cells, to_polars};
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

/// xxh3-64 keyed by `seed` over the row's key columns (strings or bytes).
#[polars_expr(output_type=UInt64)]
fn keyed_hash(inputs: &[Series], kwargs: KeyedHashKwargs) -> PolarsResult<Series> {
    let columns = inputs
        .iter()
        .map(byte_cells)
        .collect::<Result<Vec<_>, _>>()
        .map_err(to_polars)?;
    let hashes =
        crate::rebalance::keyed_hash(&columns, u64::from_ne_bytes(kwargs.seed.to_ne_bytes()))
            .map_err(to_polars)?;
    Ok(UInt64Chunked::from_vec("sft_hash".into(), hashes).into_series())
}
