//! Bindings for `crate::pack`.

use polars::prelude::*;
use pyo3::prelude::*;
use pyo3_polars::{PyDataFrame, PySeries};

use super::run_detached;
use crate::error::SftError;
use crate::pack::pack_bfd;

/// Pack a column of lengths; returns (pieces frame: row, sample, start, len; stats by name).
#[pyfunction]
#[pyo3(signature = (lengths, *, seq_len, overlong="truncate_right", max_per_row=None))]
fn pack_lengths(
    py: Python<'_>,
    lengths: PySeries,
    seq_len: u32,
    overlong: &str,
    max_per_row: Option<u32>,
) -> PyResult<(PyDataFrame, Vec<(String, u64)>)> {
    let policy = super::shard::overlong_of(overlong)?;
    let s = lengths.0;
    let packing = run_detached(py, move || {
        let c = s
            .cast(&DataType::UInt32)
            .map_err(|e| SftError::Schema(format!("lengths: {e}")))?;
        let v: Vec<u32> = c
            .u32()
            .map_err(|e| SftError::Schema(e.to_string()))?
            .iter()
            .map(|x| x.unwrap_or(0))
            .collect();
        pack_bfd(&v, seq_len, policy, max_per_row)
    })?;
    let mut row = Vec::with_capacity(packing.pieces.len());
    for (r, w) in packing.offsets.windows(2).enumerate() {
        #[allow(clippy::cast_possible_truncation)]
        row.extend(std::iter::repeat_n(r as u32, (w[1] - w[0]) as usize));
    }
    let p = &packing.pieces;
    let df = DataFrame::new(
        p.len(),
        vec![
            Column::new("row".into(), row),
            Column::new(
                "sample".into(),
                p.iter().map(|x| x.sample).collect::<Vec<_>>(),
            ),
            Column::new(
                "start".into(),
                p.iter().map(|x| x.start).collect::<Vec<_>>(),
            ),
            Column::new("len".into(), p.iter().map(|x| x.len).collect::<Vec<_>>()),
        ],
    )
    .map_err(|e| super::errors::to_py(SftError::Schema(e.to_string())))?;
    let st = &packing.stats;
    let stats = vec![
        ("samples".to_string(), st.samples),
        ("dropped".to_string(), st.dropped),
        ("truncated".to_string(), st.truncated),
        ("tokens_lost".to_string(), st.tokens_lost),
        ("tokens_packed".to_string(), st.tokens_packed),
        ("rows".to_string(), st.rows),
    ];
    Ok((PyDataFrame(df), stats))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pack_lengths, m)?)?;
    Ok(())
}
