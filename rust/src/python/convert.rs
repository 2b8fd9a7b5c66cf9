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

/// A list column's flat values and per-row (start, end) ranges into them; null rows → (0, 0).
pub(crate) struct ListColumn {
    /// The flat values (keeps the buffer alive).
    pub values: Series,
    /// Per row range into `values`.
    pub ranges: Vec<(usize, usize)>,
}

/// Cast a list column to `List(inner)` (strictly: out-of-range values are an error) and take
/// its flat values and row ranges.
///
/// # Errors
/// [`SftError::Schema`] naming `what` when the column is not a list of integers in range, or
/// holds null values inside a list.
pub(crate) fn list_column(
    s: &Series,
    inner: &DataType,
    what: &str,
) -> Result<ListColumn, SftError> {
    let bad = |why: String| SftError::Schema(format!("column {what:?}: {why}"));
    if !matches!(s.dtype(), DataType::List(_)) {
        return Err(bad(format!(
            "expected a list of token ids, got {}",
            s.dtype()
        )));
    }
    let cast = s
        .strict_cast(&DataType::List(Box::new(inner.clone())))
        .map_err(|e| bad(format!("expected integers that fit {inner}: {e}")))?;
    let ca = cast.list().map_err(|e| bad(e.to_string()))?.rechunk();
    let arr = ca.downcast_as_array();
    let offsets = arr.offsets().as_slice();
    let validity = arr.validity();
    let ranges = (0..arr.len())
        .map(|i| {
            if validity.is_some_and(|v| !v.get_bit(i)) {
                (0, 0)
            } else {
                #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                (offsets[i] as usize, offsets[i + 1] as usize)
            }
        })
        .collect();
    let values = ca.get_inner();
    if values.null_count() > 0 {
        return Err(bad("a list holds null values".into()));
    }
    Ok(ListColumn { values, ranges })
}
