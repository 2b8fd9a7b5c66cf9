//! Ids with byte offsets for SentencePiece-style BPE (Llama-2, Phi-3): a char-level vocabulary
//! with `▁` for spaces and `<0xHH>` byte fallback, under either layout of the same model:
//!
//! - the file's own: normaliser `Prepend("▁")` + `Replace(" ", "▁")`, no pre-tokeniser (the
//!   `▁` goes before every text split between added tokens);
//! - transformers 5's rewrite: no normaliser, `Metaspace(▁, prepend_scheme, split)` (with
//!   `"first"`, the `▁` goes only before the split at byte 0 of the input, and never before a
//!   split that starts with a space or `▁`).
//!
//! **Algorithm.** Per text split (after added tokens, as in the byte-level path): build its
//! normalised text (optional `▁`, then each space as `▁`), cut it into words with the plan's
//! splitter, merge each word by rank through the per-thread piece cache, and map each token
//! back to the original bytes.
//!
//! **Why the words are independent.** With no pre-tokeniser the reference merges the whole
//! split as one word. [`super::super::spec`] cuts before each run of `▁` that follows another
//! char only when the vocabulary proves that no token holds `▁` after another char: a merge
//! across such a cut would create such a token (every merge result is checked to be in the
//! vocabulary), and since merges only ever join adjacent symbols, merging the words apart gives
//! the same symbols as merging them together. A pending unknown token cannot cross the cut
//! either, since `▁` (a vocabulary char) flushes it. `ignore_merges` looks the whole word up,
//! so the splitter keeps splits whole then; `Metaspace(split: true)` cuts where the reference
//! does.
//!
//! **Offsets** are those of the `tokenizers` crate: a token covering normalised bytes `[a, b)`
//! reports (start of the original char behind byte `a`, end of the char behind byte `b - 1`).
//! A `▁` that replaced a space is behind that space (1 byte); the prepended `▁` shares the
//! alignment of the split's first char (`NormalizedString::prepend`); any other char is behind
//! itself, so a byte-fallback token `<0xE4>` gets the whole char it is part of. Token lengths in
//! normalised bytes come from [`super::super::bpe::Bpe::char_lengths`]; a word whose token
//! lengths do not add up to the word (an unknown token, an `ignore_merges` hit on a token
//! spelled differently) sends the row to the reference path.
//!
//! Cost: O(bytes) per split plus BPE for words not in the cache (O(n log n) each).

use super::{char_end, EncLocal, EncodePlan, Out};
use crate::tokenize::spec::{FastPlan, Metaspace, NormStep};

const METASPACE: char = '\u{2581}';

/// Where a split's leading `▁` comes from.
#[derive(Debug, Clone, Copy)]
pub(super) enum SpMode {
    /// Normaliser `Prepend("▁")` and `Replace(" ", "▁")`: before every split.
    Prepend,
    /// Normaliser `Replace(" ", "▁")` alone: never.
    ReplaceOnly,
    /// No normaliser; a `Metaspace` pre-tokeniser decides.
    Metaspace(Metaspace),
}

impl SpMode {
    /// The mode of a char-level plan, or why it has none.
    pub(super) fn of(plan: &FastPlan) -> Result<Self, String> {
        if let Some(m) = plan.metaspace {
            // `FastPlan::build` accepts a Metaspace only with no normaliser.
            return Ok(SpMode::Metaspace(m));
        }
        let prepend = |s: &NormStep| matches!(s, NormStep::Prepend(p) if p == "\u{2581}");
        let replace =
            |s: &NormStep| matches!(s, NormStep::Replace(a, b) if a == " " && b == "\u{2581}");
        match plan.norm.as_slice() {
            // Either order gives the same text and alignments.
            [a, b] if (prepend(a) && replace(b)) || (replace(a) && prepend(b)) => {
                Ok(SpMode::Prepend)
            }
            [a] if replace(a) => Ok(SpMode::ReplaceOnly),
            _ => Err(
                "a char-level BPE without the Prepend(▁)/Replace(' ', ▁) normaliser or Metaspace"
                    .into(),
            ),
        }
    }

    /// Whether this mode's normaliser changes text (so added tokens matched on normalised text
    /// would need its alignments).
    pub(super) fn normalizes(self) -> bool {
        !matches!(self, SpMode::Metaspace(_))
    }

    fn prepends(self, split: &str, at_start: bool) -> bool {
        match self {
            SpMode::Prepend => !split.is_empty(),
            SpMode::ReplaceOnly => false,
            SpMode::Metaspace(m) => m.prepends(split, at_start),
        }
    }
}

/// Walks the original chars behind a split's normalised bytes (monotonically).
struct Walk<'t> {
    text: &'t [u8],
    /// End of the split in `text`.
    end: usize,
    /// Original range of the current char and the end of its normalised bytes.
    cur: (usize, usize),
    norm_end: usize,
    /// The next original char to consume.
    next: usize,
}

impl<'t> Walk<'t> {
    fn new(text: &'t [u8], start: usize, end: usize, prefix: bool) -> Self {
        if prefix {
            // The prepended `▁` (3 bytes) is behind the split's first char, still to consume.
            Walk {
                text,
                end,
                cur: (start, char_end(text, start)),
                norm_end: 3,
                next: start,
            }
        } else {
            Walk {
                text,
                end,
                cur: (start, start),
                norm_end: 0,
                next: start,
            }
        }
    }

    /// Original range of the char behind normalised byte `x` (not below the previous `x`);
    /// `None` past the split.
    #[inline]
    fn at(&mut self, x: usize) -> Option<(usize, usize)> {
        while x >= self.norm_end {
            let p = self.next;
            if p >= self.end {
                return None;
            }
            let b = *self.text.get(p)?;
            let e = char_end(self.text, p);
            self.norm_end += if b == b' ' { 3 } else { e - p };
            self.cur = (p, e);
            self.next = e;
        }
        Some(self.cur)
    }
}

impl EncodePlan {
    /// Ids and offsets of the text split `text[start..end]` (no added tokens inside);
    /// `false` when the row needs the reference path.
    pub(super) fn encode_sp_split(
        &self,
        mode: SpMode,
        plan: &FastPlan,
        start: usize,
        end: usize,
        local: &mut EncLocal,
        out: &mut Out,
    ) -> bool {
        let Some(split) = out
            .text
            .get(start..end)
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            return false;
        };
        if split.is_empty() {
            return true;
        }
        let prefix = mode.prepends(split, start == 0);
        let mut norm = std::mem::take(&mut local.norm);
        norm.clear();
        if prefix {
            norm.push(METASPACE);
        }
        let mut last = 0;
        for (i, _) in split.match_indices(' ') {
            norm.push_str(&split[last..i]);
            norm.push(METASPACE);
            last = i + 1;
        }
        norm.push_str(&split[last..]);

        let mut walk = Walk::new(out.text, start, end, prefix);
        let mut q = 0usize;
        let mut ok = true;
        plan.splitter.for_each_piece(&norm, |word| {
            if !ok {
                return;
            }
            let ids = local.ids_of(plan, &norm, word);
            let word_end = q + word.len();
            for &id in ids {
                let len = self.token_bytes.get(id as usize).copied().unwrap_or(0) as usize;
                let first = walk.at(q);
                let last = walk.at(q + len.max(1) - 1);
                match (len, first, last) {
                    (1.., Some((s, _)), Some((_, e))) => out.offsets.push((s, e)),
                    _ => {
                        ok = false;
                        return;
                    }
                }
                q += len;
            }
            out.ids.extend_from_slice(ids);
            ok = q == word_end;
        });
        local.norm = norm;
        ok
    }
}

#[cfg(test)]
#[path = "spbpe_tests.rs"]
mod tests;
