//! The one error type of the core.
//!
//! Every message names the parameter (or row and column), what was expected and what was
//! received, so that a user can fix the input without reading the source. The Python layer maps
//! each variant to one exception class (`rust/src/python/errors.rs`).

use thiserror::Error;

/// Errors raised by the sftfast core.
#[derive(Debug, Error)]
pub enum SftError {
    /// An option has a value outside its domain (e.g. `min > max`).
    #[error("invalid config: {0}")]
    Config(String),
    /// Input data does not have the expected shape (missing column, wrong type, bad row).
    #[error("schema error: {0}")]
    Schema(String),
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// Reading or writing a file failed.
    #[error("io error: {context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A shard is missing, truncated or fails its checksum.
    #[error("shard error: {0}")]
    Shard(String),
    /// The user interrupted a long call (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

impl SftError {
    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SftError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias used across the core.
pub type Result<T, E = SftError> = std::result::Result<T, E>;
