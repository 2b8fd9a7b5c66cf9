//! Process-wide tokenizer registry: load once, look up by content key.
//!
//! Rebuilding a 151k-vocabulary tokenizer takes about a second, so each distinct
//! `tokenizer.json` is loaded once per process and shared (`Arc`). Polars plugins receive only
//! the key (and the file path, to reload in a process that has not seen it yet).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::{content_key, read_tokenizer_json, Encoder};
use crate::error::{Result, SftError};

static REGISTRY: Mutex<Option<HashMap<String, Arc<Encoder>>>> = Mutex::new(None);

fn with_map<R>(f: impl FnOnce(&mut HashMap<String, Arc<Encoder>>) -> R) -> R {
    let mut guard = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

/// Load (or reuse) the tokenizer with this JSON text.
///
/// # Errors
/// [`SftError::Tokenizer`] when the JSON is invalid.
pub fn load_json(json: &str) -> Result<Arc<Encoder>> {
    let key = content_key(json);
    if let Some(e) = with_map(|m| m.get(&key).cloned()) {
        return Ok(e);
    }
    let enc = Arc::new(Encoder::from_json(json)?);
    Ok(with_map(|m| Arc::clone(m.entry(key).or_insert(enc))))
}

/// Load (or reuse) the tokenizer in a `tokenizer.json` file or model directory.
///
/// # Errors
/// [`SftError::Io`] when the file cannot be read, [`SftError::Tokenizer`] when it is invalid.
pub fn load_path(path: &Path) -> Result<Arc<Encoder>> {
    load_json(&read_tokenizer_json(path)?)
}

/// The tokenizer registered under `key`, else the one at `path` (loaded now).
///
/// # Errors
/// [`SftError::Tokenizer`] when the key is unknown and no path is given.
pub fn get(key: &str, path: Option<&str>) -> Result<Arc<Encoder>> {
    if let Some(e) = with_map(|m| m.get(key).cloned()) {
        return Ok(e);
    }
    match path {
        Some(p) => load_path(Path::new(p)),
        None => Err(SftError::Tokenizer(format!(
            "tokenizer {key} is not loaded in this process and has no file path; \
             load it with sftfast.load_tokenizer(...) first"
        ))),
    }
}
