//! Bindings for near-dedup (a state object fed batch by batch) and the exact-dedup key plugin.

use polars::prelude::*;
use pyo3::prelude::*;
use pyo3_polars::{PyDataFrame, PySeries};

use super::convert::str_cells;
use super::run_detached;
use crate::cluster::Keep;
use crate::error::SftError;
use crate::near_dedup::{NearDedup, NearDedupConfig};
use crate::textnorm::NormOptions;

/// `finish`'s result: per-row frame, stats by name, rows per band.
type Finished = (PyDataFrame, Vec<(String, u64)>, Vec<usize>);

/// A near-dedup run between batches (`sftfast._native.NearDedup`).
#[pyclass(module = "sftfast._native", name = "NearDedup")]
pub(crate) struct PyNearDedup {
    inner: Option<NearDedup>,
}

#[pymethods]
impl PyNearDedup {
    #[new]
    #[pyo3(signature = (*, num_perm=128, ngram=5, threshold=0.8, seed=0, num_bands=None,
        verify_threshold=None, nfkc=true, lowercase=true, spill_dir=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        num_perm: usize,
        ngram: usize,
        threshold: f64,
        seed: u64,
        num_bands: Option<usize>,
        verify_threshold: Option<f64>,
        nfkc: bool,
        lowercase: bool,
        spill_dir: Option<std::path::PathBuf>,
    ) -> PyResult<Self> {
        let cfg = NearDedupConfig {
            num_perm,
            ngram,
            threshold,
            seed,
            num_bands,
            verify_threshold,
            norm: NormOptions {
                nfkc,
                lowercase,
                ..NormOptions::default()
            },
            spill_dir,
        };
        let inner = NearDedup::new(cfg).map_err(super::errors::to_py)?;
        Ok(PyNearDedup { inner: Some(inner) })
    }

    /// Sign a batch of texts (a String series).
    fn add(&mut self, py: Python<'_>, texts: PySeries) -> PyResult<()> {
        let state = self.state()?;
        let s = texts.0;
        run_detached(py, move || state.add(&str_cells(&s)?))
    }

    /// Rows added so far.
    fn __len__(&self) -> usize {
        self.inner.as_ref().map_or(0, NearDedup::len)
    }

    /// Cluster and decide: `keep` is "first", "longest" or "score" (with `scores`). Returns
    /// (frame of `cluster`, `representative` per row, stats as a dict, rows per band).
    #[pyo3(signature = (keep="first", scores=None))]
    fn finish(
        &mut self,
        py: Python<'_>,
        keep: &str,
        scores: Option<PySeries>,
    ) -> PyResult<Finished> {
        let policy = match (keep, scores) {
            ("first", None) => Keep::First,
            ("longest", None) => Keep::Longest(Vec::new()),
            ("score", Some(s)) => {
                let f = s.0.cast(&DataType::Float64).map_err(|e| schema(&e))?;
                let v = f.f64().map_err(|e| schema(&e))?;
                Keep::Score(v.iter().map(|x| x.unwrap_or(f64::NAN)).collect())
            }
            (other, _) => {
                return Err(super::errors::to_py(SftError::Config(format!(
                "keep: expected 'first', 'longest' or 'score' (with a score column), got {other:?}"
            ))))
            }
        };
        let mut state = self.inner.take().ok_or_else(|| {
            super::errors::to_py(SftError::Config("this NearDedup run has finished".into()))
        })?;
        let out = run_detached(py, move || state.finish(&policy))?;
        let n = out.cluster.len();
        let df = DataFrame::new(
            n,
            vec![
                Column::new("cluster".into(), out.cluster),
                Column::new("representative".into(), out.representative),
            ],
        )
        .map_err(|e| schema(&e))?;
        let s = &out.stats;
        let stats = vec![
            ("rows".to_string(), s.rows),
            ("rows_without_tokens".to_string(), s.rows_without_tokens),
            ("candidate_edges".to_string(), s.candidate_edges),
            ("edges_rejected".to_string(), s.edges_rejected),
            ("clusters".to_string(), s.clusters),
            ("duplicates".to_string(), s.duplicates),
            ("largest_bucket".to_string(), s.largest_bucket),
        ];
        Ok((PyDataFrame(df), stats, out.rows_per_band))
    }
}

fn schema(e: &PolarsError) -> PyErr {
    super::errors::to_py(SftError::Schema(e.to_string()))
}

impl PyNearDedup {
    fn state(&mut self) -> PyResult<&mut NearDedup> {
        self.inner.as_mut().ok_or_else(|| {
            super::errors::to_py(SftError::Config("this NearDedup run has finished".into()))
        })
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyNearDedup>()?;
    Ok(())
}
