//! Text normalisation for deduplication: tokens for shingling, and normalised keys for exact
//! dedup.
//!
//! Tokens (the same scheme as the reference shingling of `../shared/bench/dedup/common.py`):
//! Unicode NFKC, lowercase, then every CJK ideograph, kana or hangul syllable is a token of its
//! own and every other run of letters and digits is a word; punctuation, symbols and whitespace
//! only separate. Mixed text is split per character class, so `GPU加速` gives `gpu`, `加`, `速`.
//! ASCII text skips NFKC (it is already NFKC) and lowercases in place. Cost: one pass over the
//! text, plus one allocation for NFKC of non-ASCII text. Deterministic.

use unicode_general_category::{get_general_category, GeneralCategory};
use unicode_normalization_alignments::UnicodeNormalization;
use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed};

/// Which foldings apply before tokens or exact keys are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormOptions {
    /// Unicode NFKC (folds full-width forms, ligatures, no-break spaces).
    pub nfkc: bool,
    /// Lowercase.
    pub lowercase: bool,
    /// Exact keys: collapse whitespace runs to one space and trim.
    pub fold_whitespace: bool,
    /// Exact keys: drop punctuation (Unicode `P*`).
    pub fold_punctuation: bool,
}

impl Default for NormOptions {
    fn default() -> Self {
        NormOptions {
            nfkc: true,
            lowercase: true,
            fold_whitespace: true,
            fold_punctuation: true,
        }
    }
}

/// CJK ideographs, kana and hangul syllables: one token per char.
#[inline]
#[must_use]
pub fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30FF}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}' | '\u{AC00}'..='\u{D7AF}')
}

/// `text` after NFKC when asked (borrowed when nothing changes).
fn nfkc(text: &str, opts: NormOptions) -> std::borrow::Cow<'_, str> {
    if opts.nfkc && !text.is_ascii() {
        std::borrow::Cow::Owned(text.nfkc().map(|(c, _)| c).collect())
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The xxh3 hash of each token of `text`, appended to `out`; `word` is scratch.
pub fn token_hashes(text: &str, opts: NormOptions, word: &mut String, out: &mut Vec<u64>) {
    let text = nfkc(text, opts);
    word.clear();
    let flush = |word: &mut String, out: &mut Vec<u64>| {
        if !word.is_empty() {
            out.push(xxh3_64_with_seed(word.as_bytes(), 0));
            word.clear();
        }
    };
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_alphanumeric() {
                word.push(if opts.lowercase { c.to_ascii_lowercase() } else { c });
            } else {
                flush(word, out);
            }
        } else if is_cjk(c) {
            flush(word, out);
            let mut buf = [0u8; 4];
            out.push(xxh3_64_with_seed(c.encode_utf8(&mut buf).as_bytes(), 0));
        } else if c.is_alphanumeric() {
            if opts.lowercase {
                word.extend(c.to_lowercase());
            } else {
                word.push(c);
            }
        } else {
            flush(word, out);
        }
    }
    flush(word, out);
}

/// The text as exact dedup compares it (NFKC, lowercase, whitespace and punctuation folding,
/// each as `opts` says).
#[must_use]
pub fn normalize_exact(text: &str, opts: NormOptions) -> String {
    let text = nfkc(text, opts);
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if opts.fold_punctuation && is_punctuation(c) {
            continue;
        }
        if opts.fold_whitespace && c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        if opts.lowercase {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    matches!(
        get_general_category(c),
        GeneralCategory::ConnectorPunctuation
            | GeneralCategory::DashPunctuation
            | GeneralCategory::OpenPunctuation
            | GeneralCategory::ClosePunctuation
            | GeneralCategory::InitialPunctuation
            | GeneralCategory::FinalPunctuation
            | GeneralCategory::OtherPunctuation
    )
}

/// The exact-dedup key of a row's values (`None` = null): xxh3-128 over the normalised values,
/// each prefixed with a tag and its length; `bits = 64` keeps the low half.
#[must_use]
pub fn exact_key(values: &[Option<&str>], opts: NormOptions, buf: &mut Vec<u8>) -> u128 {
    buf.clear();
    for v in values {
        match v {
            None => buf.push(0),
            Some(s) => {
                let n = normalize_exact(s, opts);
                buf.push(1);
                buf.extend_from_slice(&(n.len() as u64).to_le_bytes());
                buf.extend_from_slice(n.as_bytes());
            }
        }
    }
    xxh3_128_with_seed(buf, 0)
}

/// [`exact_key`] of every row of `columns` (`columns[c][row]`), in parallel.
///
/// # Errors
/// [`crate::SftError::Config`] when the thread pool cannot start.
pub fn exact_keys(
    columns: &[Vec<Option<&str>>],
    rows: usize,
    opts: NormOptions,
) -> crate::Result<Vec<u128>> {
    use rayon::prelude::*;
    let run = || {
        (0..rows)
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(buf, vals): &mut (Vec<u8>, Vec<Option<&str>>), r| {
                    vals.clear();
                    vals.extend(columns.iter().map(|c| c[r]));
                    exact_key(vals, opts, buf)
                },
            )
            .collect()
    };
    crate::parallel::install(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> usize {
        let mut out = Vec::new();
        token_hashes(text, NormOptions::default(), &mut String::new(), &mut out);
        out.len()
    }

    #[test]
    fn tokens_split_words_and_cjk_chars() {
        assert_eq!(tokens("Hello, world!"), 2);
        assert_eq!(tokens("GPU加速 is fast"), 5);
        assert_eq!(tokens("ＦＵＬＬ width"), 2);
        assert_eq!(tokens("   ...  "), 0);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let o = NormOptions::default();
        token_hashes("Ｈｅｌｌｏ WORLD", o, &mut String::new(), &mut a);
        token_hashes("hello, world", o, &mut String::new(), &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn exact_normalisation_folds_each_thing_on_request() {
        let all = NormOptions::default();
        assert_eq!(normalize_exact("  Hello,\u{a0} WORLD!! ", all), "hello world");
        let keep_punct = NormOptions {
            fold_punctuation: false,
            ..all
        };
        assert_eq!(normalize_exact("Hi,  there", keep_punct), "hi, there");
        let none = NormOptions {
            nfkc: false,
            lowercase: false,
            fold_whitespace: false,
            fold_punctuation: false,
        };
        assert_eq!(normalize_exact("A  b", none), "A  b");
        let mut buf = Vec::new();
        assert_eq!(
            exact_key(&[Some("Hi!"), None], all, &mut buf),
            exact_key(&[Some("hi"), None], all, &mut buf)
        );
        assert_ne!(
            exact_key(&[Some("ab"), Some("c")], all, &mut buf),
            exact_key(&[Some("a"), Some("bc")], all, &mut buf)
        );
    }
}
