//! Token ids with byte offsets, for rendering (chat templates map character spans to tokens).
//!
//! This version goes through the reference pipeline (the `tokenizers` crate), so it is exact
//! for every tokenizer. Offsets are byte ranges into the input text, as the crate reports them.

use super::Encoder;
use crate::error::{Result, SftError};

impl Encoder {
    /// Token ids of `text` and each token's byte range in `text`.
    ///
    /// # Errors
    /// [`SftError::Tokenizer`] when the tokenizer fails on this text.
    pub fn encode_offsets(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<(Vec<u32>, Vec<(usize, usize)>)> {
        let enc = self
            .reference
            .encode(text, add_special_tokens)
            .map_err(|e| SftError::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }
}
