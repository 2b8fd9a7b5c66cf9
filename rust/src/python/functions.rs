//! `#[pyfunction]` wrappers: extract, run detached, convert.

use std::path::PathBuf;

use polars::prelude::*;
use pyo3::prelude::*;
use pyo3_polars::{PyDataFrame, PySeries};

use super::convert::str_cells;
use super::run_detached;
use crate::tokenize::registry;
use crate::{demo, parallel};

/// Load a tokenizer from JSON text; returns `(key, fast_path_disabled_reason)`.
#[pyfunction]
fn load_tokenizer_json(py: Python<'_>, json: String) -> PyResult<(String, Option<String>)> {
    run_detached(py, move || {
        let enc = registry::load_json(&json)?;
        Ok((
            enc.key().to_string(),
            enc.fast_path_disabled_reason().map(str::to_string),
        ))
    })
}

/// Load a tokenizer from a `tokenizer.json` path or model directory.
#[pyfunction]
fn load_tokenizer_path(py: Python<'_>, path: PathBuf) -> PyResult<(String, Option<String>)> {
    run_detached(py, move || {
        let enc = registry::load_path(&path)?;
        Ok((
            enc.key().to_string(),
            enc.fast_path_disabled_reason().map(str::to_string),
        ))
    })
}

/// Why `encode_offsets` (rendering) always uses the reference pipeline for the tokenizer
/// registered under `key` (`None`: it has a fast path).
#[pyfunction]
#[pyo3(signature = (key, *, path=None))]
fn encode_fast_path_reason(
    py: Python<'_>,
    key: &str,
    path: Option<String>,
) -> PyResult<Option<String>> {
    run_detached(py, || {
        let enc = registry::get(key, path.as_deref())?;
        Ok(enc.encode_fast_path_disabled_reason().map(str::to_string))
    })
}

/// Exact token counts of a String series (UInt32, nulls stay null).
#[pyfunction]
#[pyo3(signature = (key, texts, *, add_special_tokens=false, path=None))]
fn count_tokens(
    py: Python<'_>,
    key: &str,
    texts: PySeries,
    add_special_tokens: bool,
    path: Option<String>,
) -> PyResult<PySeries> {
    let s = texts.0;
    let counts = run_detached(py, || {
        let enc = registry::get(key, path.as_deref())?;
        let cells = str_cells(&s)?;
        enc.count_batch(&cells, add_special_tokens)
    })?;
    Ok(PySeries(
        UInt32Chunked::from_iter_options(s.name().clone(), counts.into_iter()).into_series(),
    ))
}

/// Token counts with the reference pipeline (for parity checks and benchmarks).
#[pyfunction]
#[pyo3(signature = (key, texts, *, add_special_tokens=false))]
fn count_tokens_reference(
    py: Python<'_>,
    key: &str,
    texts: PySeries,
    add_special_tokens: bool,
) -> PyResult<PySeries> {
    let s = texts.0;
    let counts = run_detached(py, || {
        let enc = registry::get(key, None)?;
        str_cells(&s)?
            .into_iter()
            .map(|t| {
                t.map(|t| enc.count_reference(t, add_special_tokens).map(|n| n as u32))
                    .transpose()
            })
            .collect::<crate::Result<Vec<Option<u32>>>>()
    })?;
    Ok(PySeries(
        UInt32Chunked::from_iter_options(s.name().clone(), counts.into_iter()).into_series(),
    ))
}

/// Set sftfast's thread count (0 = default).
#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    parallel::set_num_threads(n).map_err(super::errors::to_py)
}

/// sftfast's current thread count.
#[pyfunction]
fn get_num_threads() -> usize {
    parallel::num_threads()
}

/// Rows processed so far in this process (for progress bars).
#[pyfunction]
fn progress_rows() -> usize {
    parallel::progress()
}

/// The built-in demo rows as a DataFrame.
#[pyfunction]
#[pyo3(signature = (n, *, seed=0))]
fn demo_rows(py: Python<'_>, n: usize, seed: u64) -> PyResult<PyDataFrame> {
    let rows = run_detached(py, move || Ok(demo::demo_rows(n, seed)))?;
    let df = DataFrame::new(
        rows.len(),
        vec![
            Column::new("id".into(), rows.iter().map(|r| r.id).collect::<Vec<_>>()),
            Column::new(
                "category".into(),
                rows.iter().map(|r| r.category).collect::<Vec<_>>(),
            ),
            Column::new(
                "lang".into(),
                rows.iter().map(|r| r.lang).collect::<Vec<_>>(),
            ),
            Column::new(
                "question".into(),
                rows.iter().map(|r| r.question.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "answer".into(),
                rows.iter().map(|r| r.answer.as_deref()).collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    Ok(PyDataFrame(df))
}

/// Train the demo tokenizer on a String series; returns `tokenizer.json` text.
#[pyfunction]
#[pyo3(signature = (texts, *, vocab_size=2000))]
fn train_demo_tokenizer(py: Python<'_>, texts: PySeries, vocab_size: usize) -> PyResult<String> {
    let s = texts.0;
    run_detached(py, || {
        let owned: Vec<String> = str_cells(&s)?
            .into_iter()
            .flatten()
            .map(str::to_string)
            .collect();
        demo::train_tokenizer(&owned, vocab_size)
    })
}

/// The built-in chat templates by name (Jinja source with `{% generation %}` blocks).
#[pyfunction]
fn builtin_templates() -> Vec<(&'static str, &'static str)> {
    crate::render::BUILTIN.to_vec()
}

/// Compile a chat template (raises `ConfigError` with the line when it does not compile);
/// returns whether it has `{% generation %}` blocks.
#[pyfunction]
fn check_template(source: &str) -> PyResult<bool> {
    crate::render::ChatTemplate::new(source, "", "")
        .map(|t| t.has_generation())
        .map_err(super::errors::to_py)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(check_template, m)?)?;
    m.add_function(wrap_pyfunction!(builtin_templates, m)?)?;
    m.add_function(wrap_pyfunction!(load_tokenizer_json, m)?)?;
    m.add_function(wrap_pyfunction!(load_tokenizer_path, m)?)?;
    m.add_function(wrap_pyfunction!(encode_fast_path_reason, m)?)?;
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(count_tokens_reference, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(progress_rows, m)?)?;
    m.add_function(wrap_pyfunction!(demo_rows, m)?)?;
    m.add_function(wrap_pyfunction!(train_demo_tokenizer, m)?)?;
    m.add_function(wrap_pyfunction!(count_lines, m)?)?;
    m.add_function(wrap_pyfunction!(scan_jsonl, m)?)?;
    m.add_function(wrap_pyfunction!(jsonl_frames, m)?)?;
    Ok(())
}

/// One pass over a JSON Lines file: `(bad (line, reason), blank lines, non-object lines, line
/// count, schema)`; the object lines go to `good_out` if given. The schema (of the object lines,
/// see `crate::jsontype`) is nested tuples (`("str",)`, `("list", inner)`, `("struct", [(name,
/// type), ...])`, also `null`, `bool`, `i64`, `f64`), or `None` where Polars should infer it.
#[pyfunction]
#[pyo3(signature = (path, good_out=None))]
#[allow(clippy::type_complexity)]
pub(crate) fn scan_jsonl<'py>(
    py: Python<'py>,
    path: PathBuf,
    good_out: Option<PathBuf>,
) -> PyResult<(
    Vec<(usize, String)>,
    Vec<usize>,
    Vec<usize>,
    usize,
    Option<Bound<'py, PyAny>>,
)> {
    let s = run_detached(py, move || {
        crate::jsonl::scan_jsonl(&path, good_out.as_deref(), true)
    })?;
    let bad = s.bad.into_iter().map(|b| (b.line, b.reason)).collect();
    let schema = if s.schema.is_plain() {
        Some(jtype_to_py(py, &s.schema)?)
    } else {
        None
    };
    Ok((bad, s.blank, s.not_object, s.lines, schema))
}

fn jtype_to_py<'py>(py: Python<'py>, t: &crate::jsontype::JType) -> PyResult<Bound<'py, PyAny>> {
    use crate::jsontype::JType;
    let leaf = |name: &str| (name,).into_pyobject(py).map(Bound::into_any);
    match t {
        JType::Null => leaf("null"),
        JType::Bool => leaf("bool"),
        JType::Int => leaf("i64"),
        JType::Float => leaf("f64"),
        JType::Str => leaf("str"),
        JType::List(inner) => ("list", jtype_to_py(py, inner)?)
            .into_pyobject(py)
            .map(Bound::into_any),
        JType::Struct(fields) => {
            let v = fields
                .iter()
                .map(|(n, t)| Ok((n.as_str(), jtype_to_py(py, t)?)))
                .collect::<PyResult<Vec<_>>>()?;
            ("struct", v).into_pyobject(py).map(Bound::into_any)
        }
        JType::Mixed => Err(pyo3::exceptions::PyValueError::new_err(
            "a mixed JSON type has no Polars type",
        )),
    }
}

fn jtype_from_py(t: &Bound<'_, PyAny>) -> PyResult<crate::jsontype::JType> {
    use crate::jsontype::JType;
    let kind: String = t.get_item(0)?.extract()?;
    Ok(match kind.as_str() {
        "null" => JType::Null,
        "bool" => JType::Bool,
        "i64" => JType::Int,
        "f64" => JType::Float,
        "str" => JType::Str,
        "list" => JType::List(Box::new(jtype_from_py(&t.get_item(1)?)?)),
        "struct" => JType::Struct(
            t.get_item(1)?
                .try_iter()?
                .map(|f| {
                    let f = f?;
                    Ok((f.get_item(0)?.extract()?, jtype_from_py(&f.get_item(1)?)?))
                })
                .collect::<PyResult<_>>()?,
        ),
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "schema: unknown JSON type {other:?}"
            )))
        }
    })
}

/// A built column as an Arrow array of the layout Polars reads (`Utf8View`, `LargeList`).
fn col_to_arrow(c: crate::jsoncols::Col) -> PolarsResult<Box<dyn polars_arrow::array::Array>> {
    use crate::jsoncols::Col;
    use polars_arrow::array::{
        BooleanArray, ListArray, MutableBinaryViewArray, NullArray, PrimitiveArray, StructArray,
    };
    use polars_arrow::bitmap::Bitmap;
    use polars_arrow::datatypes::{ArrowDataType, Field};
    use polars_arrow::offset::OffsetsBuffer;

    let validity = |v: &[bool]| -> Option<Bitmap> {
        (!v.iter().all(|&b| b)).then(|| v.iter().copied().collect())
    };
    Ok(match c {
        Col::Null(n) => Box::new(NullArray::new(ArrowDataType::Null, n)),
        Col::Bool { values, valid } => Box::new(BooleanArray::new(
            ArrowDataType::Boolean,
            values.into_iter().collect(),
            validity(&valid),
        )),
        Col::Int { values, valid } => {
            Box::new(PrimitiveArray::from_vec(values).with_validity(validity(&valid)))
        }
        Col::Float { values, valid } => {
            Box::new(PrimitiveArray::from_vec(values).with_validity(validity(&valid)))
        }
        Col::Str {
            offsets,
            data,
            valid,
        } => {
            let mut a = MutableBinaryViewArray::<str>::with_capacity(valid.len());
            for (i, &ok) in valid.iter().enumerate() {
                if ok {
                    a.push_value(&data[offsets[i]..offsets[i + 1]]);
                } else {
                    a.push_null();
                }
            }
            Box::new(a.freeze())
        }
        Col::List {
            offsets,
            valid,
            child,
        } => {
            let child = col_to_arrow(*child)?;
            let dtype = ArrowDataType::LargeList(Box::new(Field::new(
                "item".into(),
                child.dtype().clone(),
                true,
            )));
            Box::new(ListArray::<i64>::try_new(
                dtype,
                OffsetsBuffer::try_from(offsets)?,
                child,
                validity(&valid),
            )?)
        }
        Col::Struct { fields, valid, .. } => {
            let mut dtypes = Vec::with_capacity(fields.len());
            let mut arrays = Vec::with_capacity(fields.len());
            for (name, c) in fields {
                let a = col_to_arrow(c)?;
                dtypes.push(Field::new(name.into(), a.dtype().clone(), true));
                arrays.push(a);
            }
            Box::new(StructArray::try_new(
                ArrowDataType::Struct(dtypes),
                valid.len(),
                arrays,
                validity(&valid),
            )?)
        }
    })
}

/// The object lines of a block of JSON Lines (blank lines skipped) as DataFrames of at most
/// `rows` rows, with the schema from `scan_jsonl` (only the `columns` named, if given), parsed
/// once into Arrow arrays (`crate::jsoncols`).
#[pyfunction]
#[pyo3(signature = (block, schema, columns=None, rows=65_536))]
pub(crate) fn jsonl_frames(
    py: Python<'_>,
    block: &[u8],
    schema: &Bound<'_, PyAny>,
    columns: Option<Vec<String>>,
    rows: usize,
) -> PyResult<Vec<PyDataFrame>> {
    let t = crate::jsoncols::columns_of(&jtype_from_py(schema)?, columns.as_deref())
        .map_err(super::errors::to_py)?;
    let crate::jsontype::JType::Struct(fields) = &t else {
        unreachable!("columns_of gives a struct")
    };
    let names: Vec<String> = fields.iter().map(|(n, _)| n.clone()).collect();
    let frames = run_detached(py, move || {
        let to_err = |e: PolarsError| crate::error::SftError::Schema(e.to_string());
        crate::jsoncols::parse_block(block, &t, rows)?
            .into_iter()
            .map(|(height, cols)| {
                let columns = names
                    .iter()
                    .zip(cols)
                    .map(|(n, c)| {
                        let s =
                            Series::from_arrow(n.as_str().into(), col_to_arrow(c).map_err(to_err)?)
                                .map_err(to_err)?;
                        Ok(s.into_column())
                    })
                    .collect::<crate::error::Result<Vec<_>>>()?;
                DataFrame::new(height, columns).map_err(to_err)
            })
            .collect::<crate::error::Result<Vec<_>>>()
    })?;
    Ok(frames.into_iter().map(PyDataFrame).collect())
}

/// Number of lines in a file.
#[pyfunction]
pub(crate) fn count_lines(py: Python<'_>, path: PathBuf) -> PyResult<usize> {
    run_detached(py, move || crate::jsonl::count_lines(&path))
}
