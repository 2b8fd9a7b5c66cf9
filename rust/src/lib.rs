//! sftfast core: SFT data preparation in plain Rust.
//!
//! This crate holds every algorithm; `python/` (feature `python`) only converts values and
//! releases the GIL. `cargo test --no-default-features` builds and tests the core without Python.

pub mod demo;
pub mod error;
pub mod jsonl;
pub mod length_filter;
pub mod parallel;
pub mod tokenize;

#[cfg(feature = "python")]
mod python;

pub use error::{Result, SftError};
pub use tokenize::Encoder;
