//! Bindings for `crate::rebalance`: a plan object that holds the core plan between the passes
//! the Python side runs over the data.

use polars::prelude::*;
use pyo3::prelude::*;
use pyo3_polars::{PyDataFrame, PySeries};

use super::run_detached;
use crate::error::SftError;
use crate::rebalance::{Group, MethodParams, MethodSpec, Plan};

fn schema_err(e: PolarsError) -> SftError {
    SftError::Schema(e.to_string())
}

/// A mix plan between passes (`sftfast._native.RebalancePlan`).
#[pyclass(module = "sftfast._native", name = "RebalancePlan")]
pub(crate) struct PyRebalancePlan {
    plan: Plan,
    null_category: Option<String>,
}

/// Build a plan from the first pass: per (raw label, bucket) group, rows and units.
#[pyfunction]
#[pyo3(signature = (labels, buckets, rows, units, *, method, budget=None, max_epochs=4.0,
    temperature=None, cap=None, floor=None, weights=None, counts=None, null_category=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rebalance_plan(
    py: Python<'_>,
    labels: PySeries,
    buckets: PySeries,
    rows: PySeries,
    units: PySeries,
    method: String,
    budget: Option<u64>,
    max_epochs: f64,
    temperature: Option<f64>,
    cap: Option<u64>,
    floor: Option<u64>,
    weights: Option<Vec<(String, f64)>>,
    counts: Option<Vec<(String, u64)>>,
    null_category: Option<String>,
) -> PyResult<PyRebalancePlan> {
    let (labels, buckets, rows, units) = (labels.0, buckets.0, rows.0, units.0);
    let nc = null_category.clone();
    let plan = run_detached(py, move || {
        let (l, b) = (
            labels.str().map_err(schema_err)?,
            buckets.u32().map_err(schema_err)?,
        );
        let (r, u) = (
            rows.u64().map_err(schema_err)?,
            units.u64().map_err(schema_err)?,
        );
        let groups: Vec<Group> = l
            .iter()
            .zip(b.iter())
            .zip(r.iter().zip(u.iter()))
            .map(|((label, bucket), (rows, units))| Group {
                label: label.map(str::to_string),
                bucket: u16::try_from(bucket.unwrap_or(0)).unwrap_or(u16::MAX),
                rows: rows.unwrap_or(0),
                units: units.unwrap_or(0),
            })
            .collect();
        let params = MethodParams {
            temperature,
            cap,
            floor,
            weights,
            counts,
        };
        let spec = MethodSpec::from_parts(&method, params)?;
        Plan::new(&groups, nc.as_deref(), &spec, budget, max_epochs)
    })?;
    Ok(PyRebalancePlan {
        plan,
        null_category,
    })
}

#[pymethods]
impl PyRebalancePlan {
    /// One row per category: name, merged raw labels, before/target/after and the selection.
    fn table(&self) -> PyResult<PyDataFrame> {
        let cats = &self.plan.categories;
        let col_u64 = |name: &str, f: &dyn Fn(usize) -> Option<u64>| {
            Column::new(name.into(), (0..cats.len()).map(f).collect::<Vec<_>>())
        };
        let labels: Vec<Series> = cats
            .iter()
            .map(|c| Series::new("".into(), c.labels.clone()))
            .collect();
        let df = DataFrame::new(
            cats.len(),
            vec![
                Column::new(
                    "category".into(),
                    cats.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                ),
                Column::new("labels".into(), labels),
                col_u64("rows_before", &|i| Some(cats[i].rows)),
                col_u64("units_before", &|i| Some(cats[i].units)),
                col_u64("target", &|i| Some(cats[i].target)),
                col_u64("rows_after", &|i| cats[i].rows_after()),
                col_u64("units_after", &|i| cats[i].units_after()),
                col_u64("base_copies", &|i| Some(cats[i].cut.base)),
                col_u64("boundary", &|i| cats[i].cut.boundary.map(u64::from)),
                col_u64("threshold", &|i| cats[i].resolved.and_then(|r| r.threshold)),
            ],
        )
        .map_err(|e| super::errors::to_py(schema_err(e)))?;
        Ok(PyDataFrame(df))
    }

    /// The category index of each raw label (`None`: the row is dropped).
    fn category_of(&self, labels: Vec<Option<String>>) -> Vec<Option<u32>> {
        let nc = self.null_category.as_deref();
        labels
            .iter()
            .map(|l| {
                self.plan
                    .category_of(l.as_deref(), nc)
                    .and_then(|i| u32::try_from(i).ok())
            })
            .collect()
    }

    /// Rows and units of null-labelled rows that were dropped.
    fn null_dropped(&self) -> (u64, u64) {
        (self.plan.null_rows_dropped, self.plan.null_units_dropped)
    }

    /// Fix the selection from the boundary rows: category index, hash and units per row.
    fn resolve(
        &mut self,
        py: Python<'_>,
        categories: PySeries,
        hashes: PySeries,
        units: PySeries,
    ) -> PyResult<()> {
        let (c, h, u) = (categories.0, hashes.0, units.0);
        let plan = &mut self.plan;
        run_detached(py, move || {
            let (c, h, u) = (
                c.u32().map_err(schema_err)?,
                h.u64().map_err(schema_err)?,
                u.u64().map_err(schema_err)?,
            );
            let rows: Vec<(u32, u64, u64)> = c
                .iter()
                .zip(h.iter())
                .zip(u.iter())
                .filter_map(|((c, h), u)| Some((c?, h?, u.unwrap_or(0))))
                .collect();
            plan.resolve(&rows)
        })
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRebalancePlan>()?;
    m.add_function(wrap_pyfunction!(rebalance_plan, m)?)?;
    Ok(())
}
