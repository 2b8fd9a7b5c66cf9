//! sftfast core: SFT data preparation in plain Rust.
//!
//! This crate holds every algorithm; `python/` (feature `python`) only converts values and
//! releases the GIL. `cargo test --no-default-features` builds and tests the core without Python.

// Tests may unwrap: a panic there is a failed test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cluster;
pub mod demo;
pub mod error;
pub mod jsoncols;
pub mod jsonl;
pub mod jsontype;
pub mod length_filter;
pub mod lsh;
pub mod minhash;
pub mod near_dedup;
pub mod pack;
pub mod parallel;
pub mod rebalance;
pub mod render;
pub mod shard;
pub mod textnorm;
pub mod tokenize;

#[cfg(feature = "python")]
mod python;

pub use error::{Result, SftError};
pub use tokenize::Encoder;
