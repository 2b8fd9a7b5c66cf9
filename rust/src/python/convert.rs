//! Polars/Python values → core inputs.

use polars::prelude::*;

use crate::error::SftError;

/// Borrow a String or Binary series as optional byte slices (`None` = null).
///
/// # Errors
/// [`SftError::Schema`] naming the column and its type when it holds neither text nor bytes.
pub(crate) fn byte_cells(s: &Series) -> Result<Vec<Option<&[u8]>>, SftError> {
    match s.dtype() {
        DataType::String => Ok(s
            .str()
            .map_err(|e| SftError::Schema(e.to_string()))?
            .iter()
            .map(|v| v.map(str::as_bytes))
            .collect()),
        DataType::Binary => Ok(s
            .binary()
            .map_err(|e| SftError::Schema(e.to_string()))?
            .iter()
            .collect()),
        other => Err(SftError::Schema(format!(
            "column {:?}: expected a string column, got {other}",
            s.name().as_str()
        ))),
    }
}

/// Borrow a String series as optional `&str`.
///
/// # Errors
/// [`SftError::Schema`] naming the column and its type when it is not a string column.
pub(crate) fn str_cells(s: &Series) -> Result<Vec<Option<&str>>, SftError> {
    match s.dtype() {
        DataType::String => Ok(s
            .str()
            .map_err(|e| SftError::Schema(e.to_string()))?
            .iter()
            .collect()),
        other => Err(SftError::Schema(format!(
            "column {:?}: expected a string column, got {other}",
            s.name().as_str()
        ))),
    }
}

/// A key column for `rebalance::keyed_hash`: strings or bytes as bytes, Int64 as integers.
///
/// # Errors
/// [`SftError::Schema`] naming the column for any other type (the Python side casts first).
pub(crate) fn key_column(s: &Series) -> Result<crate::rebalance::KeyColumn<'_>, SftError> {
    if s.dtype() == &DataType::Int64 {
        let v = s.i64().map_err(|e| SftError::Schema(e.to_string()))?;
        return Ok(crate::rebalance::KeyColumn::Int(v.iter().collect()));
    }
    byte_cells(s).map(crate::rebalance::KeyColumn::Bytes)
}

/// Core error → Polars error (for plugins), keeping the message.
pub(crate) fn to_polars(e: SftError) -> PolarsError {
    PolarsError::ComputeError(e.to_string().into())
}
