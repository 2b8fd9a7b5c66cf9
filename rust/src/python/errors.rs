//! `SftError` → the exception classes of `sftfast.exceptions`, in one match.

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::PyErr;

use crate::error::SftError;

pyo3::import_exception!(sftfast.exceptions, ConfigError);
pyo3::import_exception!(sftfast.exceptions, SchemaError);
pyo3::import_exception!(sftfast.exceptions, TokenizerError);
pyo3::import_exception!(sftfast.exceptions, FileError);
pyo3::import_exception!(sftfast.exceptions, ShardError);

/// Map a core error to its Python exception.
pub(crate) fn to_py(e: SftError) -> PyErr {
    let msg = e.to_string();
    match e {
        SftError::Config(_) => ConfigError::new_err(msg),
        SftError::Schema(_) => SchemaError::new_err(msg),
        SftError::Tokenizer(_) => TokenizerError::new_err(msg),
        SftError::Io { .. } => FileError::new_err(msg),
        SftError::Shard(_) => ShardError::new_err(msg),
        SftError::Interrupted => PyKeyboardInterrupt::new_err(msg),
    }
}
