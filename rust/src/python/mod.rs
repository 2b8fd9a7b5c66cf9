//! The PyO3 layer: conversion and GIL release only. No algorithm lives here.

mod convert;
mod dedup;
mod errors;
mod functions;
mod pack;
mod plugins;
mod rebalance;
mod render;
mod shard;

use std::sync::mpsc;
use std::time::Duration;

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;

use crate::error::SftError;
use crate::parallel;

#[global_allocator]
static ALLOC: pyo3_polars::PolarsAllocator = pyo3_polars::PolarsAllocator::new();

/// Run `f` without the GIL. The calling thread keeps polling for Ctrl-C: on a signal it asks
/// the core to stop (`parallel::request_cancel`) and raises `KeyboardInterrupt`. This is the only
/// place the GIL is released, and the only place `SftError` becomes a Python exception.
pub(crate) fn run_detached<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> Result<T, SftError> + Send,
{
    parallel::reset_cancel();
    let mut interrupted = false;
    let outcome = py.detach(|| {
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let worker = s.spawn(move || {
                let r = f();
                let _ = tx.send(());
                r
            });
            loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if !interrupted && Python::attach(|py| py.check_signals()).is_err() {
                            interrupted = true;
                            parallel::request_cancel();
                        }
                    }
                }
            }
            worker.join()
        })
    });
    parallel::reset_cancel();
    match outcome {
        Err(_) => Err(PyRuntimeError::new_err(
            "sftfast internal error (a Rust panic): please report it with the input that caused it",
        )),
        Ok(_) if interrupted => Err(PyKeyboardInterrupt::new_err("interrupted")),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(errors::to_py(e)),
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    parallel::mark_main_process();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    functions::register(m)?;
    rebalance::register(m)?;
    dedup::register(m)?;
    pack::register(m)?;
    shard::register(m)?;
    Ok(())
}
