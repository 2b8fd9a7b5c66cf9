//! Bindings for the shard writer and reader (`crate::shard`).

use std::path::PathBuf;

use polars::prelude::*;
use pyo3::prelude::*;
use pyo3::types::PyByteArray;
use pyo3_polars::{PyDataFrame, PySeries};

use super::convert::list_column;
use super::run_detached;
use crate::error::SftError;
use crate::pack::Overlong;
use crate::shard::{Le32, Le64, PackMethod, SampleBatch, ShardConfig, ShardSet, ShardWriter};

fn to_py(e: SftError) -> PyErr {
    super::errors::to_py(e)
}

pub(crate) fn overlong_of(name: &str) -> PyResult<Overlong> {
    match name {
        "drop" => Ok(Overlong::Drop),
        "truncate_right" => Ok(Overlong::TruncateRight),
        "truncate_left" => Ok(Overlong::TruncateLeft),
        "split" => Ok(Overlong::Split),
        other => Err(to_py(SftError::Config(format!(
            "overlong: expected drop, truncate_right, truncate_left or split; got {other:?}"
        )))),
    }
}

/// Writes packed shards (`sftfast._native.ShardWriter`).
#[pyclass(module = "sftfast._native", name = "ShardWriter")]
pub(crate) struct PyShardWriter {
    inner: Option<ShardWriter>,
}

#[pymethods]
impl PyShardWriter {
    #[new]
    #[pyo3(signature = (out_dir, *, seq_len, overlong="truncate_right", max_per_row=None,
        window=None, shard_tokens=16_777_216, seed=0, tokenizer_hash=None,
        config_fingerprint=None, overwrite=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        out_dir: PathBuf,
        seq_len: u32,
        overlong: &str,
        max_per_row: Option<u32>,
        window: Option<usize>,
        shard_tokens: u64,
        seed: u64,
        tokenizer_hash: Option<String>,
        config_fingerprint: Option<String>,
        overwrite: bool,
    ) -> PyResult<Self> {
        let cfg = ShardConfig {
            out_dir,
            seq_len,
            overlong: overlong_of(overlong)?,
            max_per_row,
            method: window.map_or(PackMethod::Bfd, PackMethod::Window),
            shard_tokens,
            seed,
            tokenizer_hash,
            config_fingerprint,
            overwrite,
        };
        Ok(PyShardWriter {
            inner: Some(ShardWriter::new(cfg).map_err(to_py)?),
        })
    }

    /// Add a batch: `input_ids` a list column of ids, `labels` (optional) the same shape.
    #[pyo3(signature = (input_ids, labels=None))]
    fn add(
        &mut self,
        py: Python<'_>,
        input_ids: PySeries,
        labels: Option<PySeries>,
    ) -> PyResult<()> {
        let w = self
            .inner
            .as_mut()
            .ok_or_else(|| to_py(SftError::Config("this ShardWriter has finished".into())))?;
        let (ids, labs) = (input_ids.0, labels.map(|l| l.0));
        crate::parallel::add_progress(ids.len());
        run_detached(py, move || {
            let t = list_column(&ids, &DataType::UInt32, "input_ids")?;
            let tokens = t
                .values
                .u32()
                .map_err(|e| SftError::Schema(e.to_string()))?;
            let tokens = tokens.rechunk();
            let tok = tokens
                .cont_slice()
                .map_err(|e| SftError::Schema(e.to_string()))?;
            let relocated: Option<Vec<i32>> = match &labs {
                None => None,
                Some(l) => {
                    let lc = list_column(l, &DataType::Int32, "labels")?;
                    let v = lc
                        .values
                        .i32()
                        .map_err(|e| SftError::Schema(e.to_string()))?;
                    let v = v.rechunk();
                    let vals = v
                        .cont_slice()
                        .map_err(|e| SftError::Schema(e.to_string()))?;
                    let mut out = vec![crate::shard::IGNORE; tok.len()];
                    for (i, (&(a, b), &(c, d))) in t.ranges.iter().zip(&lc.ranges).enumerate() {
                        if b - a != d - c {
                            return Err(SftError::Schema(format!(
                                "row {i} of the batch: labels has {} values, input_ids {}",
                                d - c,
                                b - a
                            )));
                        }
                        out[a..b].copy_from_slice(&vals[c..d]);
                    }
                    Some(out)
                }
            };
            w.add(SampleBatch {
                tokens: tok,
                labels: relocated.as_deref(),
                ranges: &t.ranges,
            })
        })
    }

    /// Write the remaining shards and the manifest; returns the manifest as JSON text.
    fn finish(&mut self, py: Python<'_>) -> PyResult<String> {
        let w = self
            .inner
            .take()
            .ok_or_else(|| to_py(SftError::Config("this ShardWriter has finished".into())))?;
        let m = run_detached(py, move || w.finish())?;
        serde_json::to_string(&m).map_err(|e| to_py(SftError::Shard(e.to_string())))
    }
}

/// Reads a shard dataset (`sftfast._native.ShardReader`).
#[pyclass(module = "sftfast._native", name = "ShardReader", frozen)]
pub(crate) struct PyShardReader {
    set: ShardSet,
}

fn bytes_of<T: Copy>(py: Python<'_>, v: &[T], put: impl Fn(T, &mut Vec<u8>)) -> Py<PyByteArray> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(v));
    for &x in v {
        put(x, &mut out);
    }
    PyByteArray::new(py, &out).unbind()
}

/// A zero-filled bytearray of `n` bytes.
fn zeroed(py: Python<'_>, n: usize) -> Py<PyByteArray> {
    PyByteArray::new_with(py, n, |_| Ok(())).map_or_else(
        |_| PyByteArray::new(py, &vec![0; n]).unbind(),
        Bound::unbind,
    )
}

fn rows_of(rows: &[u8]) -> Vec<u64> {
    rows.chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// `collate_flat`'s result: ids, labels, positions, cu_seq_lens, max length, samples, loss tokens.
type Flat = (
    Py<PyByteArray>,
    Py<PyByteArray>,
    Py<PyByteArray>,
    Py<PyByteArray>,
    u32,
    u64,
    u64,
);
/// `collate_padded`'s result: ids, labels, positions, mask, samples, tokens, loss tokens.
type Padded = (
    Py<PyByteArray>,
    Py<PyByteArray>,
    Py<PyByteArray>,
    Option<Py<PyByteArray>>,
    u64,
    u64,
    u64,
);

#[pymethods]
impl PyShardReader {
    #[new]
    #[pyo3(signature = (path, *, verify=false))]
    fn new(py: Python<'_>, path: PathBuf, verify: bool) -> PyResult<Self> {
        let set = run_detached(py, move || ShardSet::open(&path, verify))?;
        Ok(PyShardReader { set })
    }

    /// Packed rows in the dataset.
    #[getter]
    fn num_rows(&self) -> u64 {
        self.set.num_rows()
    }

    /// The manifest as JSON text.
    fn manifest_json(&self) -> PyResult<String> {
        serde_json::to_string(self.set.manifest())
            .map_err(|e| to_py(SftError::Shard(e.to_string())))
    }

    /// Global row ids of an epoch as little-endian u64 bytes.
    fn epoch_order(
        &self,
        py: Python<'_>,
        seed: u64,
        epoch: u64,
        shuffle: bool,
        window: usize,
    ) -> Py<PyByteArray> {
        let order = self.set.epoch_order(seed, epoch, shuffle, window);
        bytes_of(py, &order, |x, o| o.extend(x.to_le_bytes()))
    }

    /// The padding-free batch of `rows` (little-endian u64 row ids).
    fn collate_flat(&self, py: Python<'_>, rows: &[u8]) -> PyResult<Flat> {
        // Microseconds of copying: not worth a GIL release. Written straight into the
        // bytearrays that become the tensors (one copy from the memory map).
        let rows = rows_of(rows);
        let (t, n) = self.set.flat_size(&rows).map_err(to_py)?;
        let [ids, labels, pos] = [0; 3].map(|_| zeroed(py, t * 8));
        let cu = zeroed(py, (n + 1) * 4);
        // SAFETY: the four bytearrays were just made here and no Python code has seen them;
        // the GIL is held, so nothing else can resize or read them while we write.
        #[allow(unsafe_code)]
        let (max_len, loss) = unsafe {
            self.set.collate_flat_into(
                &rows,
                &mut Le64(ids.bind(py).as_bytes_mut()),
                &mut Le64(labels.bind(py).as_bytes_mut()),
                &mut Le64(pos.bind(py).as_bytes_mut()),
                &mut Le32(cu.bind(py).as_bytes_mut()),
            )
        }
        .map_err(to_py)?;
        Ok((ids, labels, pos, cu, max_len, n as u64, loss))
    }

    /// Fixed-length rows of `rows`, with the block-diagonal mask when `mask`.
    fn collate_padded(
        &self,
        py: Python<'_>,
        rows: &[u8],
        pad_id: i64,
        mask: bool,
    ) -> PyResult<Padded> {
        let rows = rows_of(rows);
        let l = self.set.manifest().seq_len as usize;
        let n = rows.len() * l;
        let [ids, labels, pos] = [0; 3].map(|_| zeroed(py, n * 8));
        let m = mask.then(|| zeroed(py, n * l));
        // SAFETY: as in `collate_flat`: fresh bytearrays, GIL held.
        #[allow(unsafe_code)]
        let (samples, tokens, loss) = unsafe {
            self.set.collate_padded_into(
                &rows,
                pad_id,
                &mut Le64(ids.bind(py).as_bytes_mut()),
                &mut Le64(labels.bind(py).as_bytes_mut()),
                &mut Le64(pos.bind(py).as_bytes_mut()),
                m.as_ref().map(|m| m.bind(py).as_bytes_mut()),
            )
        }
        .map_err(to_py)?;
        Ok((ids, labels, pos, m, samples, tokens, loss))
    }

    /// Rows `start..end` as a frame: one packed row per line (`input_ids`, `labels`,
    /// `seq_lens`, `sample_ids`), for the Parquet export.
    fn rows_frame(&self, py: Python<'_>, start: u64, end: u64) -> PyResult<PyDataFrame> {
        let set = &self.set;
        let df = run_detached(py, move || {
            let n = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
            let mut ids = ListPrimitiveChunkedBuilder::<UInt32Type>::new(
                "input_ids".into(),
                n,
                n * 1024,
                DataType::UInt32,
            );
            let mut labels = ListPrimitiveChunkedBuilder::<Int32Type>::new(
                "labels".into(),
                n,
                n * 1024,
                DataType::Int32,
            );
            let mut lens = ListPrimitiveChunkedBuilder::<UInt32Type>::new(
                "seq_lens".into(),
                n,
                n * 8,
                DataType::UInt32,
            );
            let mut sids = ListPrimitiveChunkedBuilder::<UInt64Type>::new(
                "sample_ids".into(),
                n,
                n * 8,
                DataType::UInt64,
            );
            for row in start..end {
                let (t, l) = set.row_tokens(row)?;
                ids.append_slice(&t);
                labels.append_slice(&l);
                let pieces = set.row_pieces(row)?;
                #[allow(clippy::cast_possible_truncation)]
                let ls: Vec<u32> = pieces.iter().map(|p| (p.1 - p.0) as u32).collect();
                lens.append_slice(&ls);
                let s: Vec<u64> = pieces.iter().map(|p| p.2).collect();
                sids.append_slice(&s);
            }
            DataFrame::new(
                n,
                vec![
                    ids.finish().into_column(),
                    labels.finish().into_column(),
                    lens.finish().into_column(),
                    sids.finish().into_column(),
                ],
            )
            .map_err(|e| SftError::Schema(e.to_string()))
        })?;
        Ok(PyDataFrame(df))
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyShardWriter>()?;
    m.add_class::<PyShardReader>()?;
    Ok(())
}
