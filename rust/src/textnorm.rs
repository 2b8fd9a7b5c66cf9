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

/// Chars NFKC leaves alone whatever surrounds them (NFKC quick-check Yes, canonical combining
/// class 0, not a composition target): ASCII, CJK ideographs, hangul syllables, kana and the
/// common CJK punctuation (checked char by char in `tests::nfkc_fast_path_is_exact`).
#[inline]
fn nfkc_inert(c: char) -> bool {
    matches!(c,
        '\0'..='\u{7F}' | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}'
        | '\u{3041}'..='\u{3096}' | '\u{30A1}'..='\u{30FA}' | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}' | '\u{AC00}'..='\u{D7A3}')
}

/// NFKC of full-width ASCII forms (U+FF01..U+FF5E) and the ideographic space, else `None`.
#[inline]
fn nfkc_fullwidth(c: char) -> Option<char> {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0),
        '\u{3000}' => Some(' '),
        _ => None,
    }
}

/// `text` after NFKC when asked (borrowed when nothing changes). Typical English and Chinese
/// text (ASCII, ideographs, CJK and full-width punctuation) takes a one-pass fast path that
/// skips ASCII bytes and copies unchanged spans whole; any other char sends the whole text
/// through the full algorithm.
fn nfkc(text: &str, opts: NormOptions) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if !opts.nfkc || text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    // `text[copied..i]` is unchanged and not yet in `out`.
    let (mut i, mut copied) = (0usize, 0usize);
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            i += 1;
            continue;
        }
        if is_han_lead(b) {
            i += 3;
            continue;
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        let w = c.len_utf8();
        if nfkc_inert(c) {
            i += w;
            continue;
        }
        let Some(m) = nfkc_fullwidth(c) else {
            return Cow::Owned(text.nfkc().map(|(c, _)| c).collect());
        };
        let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
        o.push_str(&text[copied..i]);
        o.push(m);
        i += w;
        copied = i;
    }
    match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(text),
    }
}

/// The xxh3 hash of each token of `text`, appended to `out`; `word` is scratch. A run of
/// ASCII letters and digits that is a whole word is hashed where it lies (lowercased into
/// `word` only when it has capitals).
pub fn token_hashes(text: &str, opts: NormOptions, word: &mut String, out: &mut Vec<u64>) {
    let text = nfkc(text, opts);
    let bytes = text.as_bytes();
    word.clear();
    let flush = |word: &mut String, out: &mut Vec<u64>| {
        if !word.is_empty() {
            out.push(xxh3_64_with_seed(word.as_bytes(), 0));
            word.clear();
        }
    };
    let push_ascii = |word: &mut String, run: &str| {
        if opts.lowercase {
            word.extend(run.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        } else {
            word.push_str(run);
        }
    };
    let mut i = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if !b.is_ascii_alphanumeric() {
                flush(word, out);
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let run = &text[start..i];
            let ends_word = bytes.get(i).is_none_or(|&n| n < 0x80);
            if word.is_empty()
                && ends_word
                && !(opts.lowercase && run.bytes().any(|b| b.is_ascii_uppercase()))
            {
                out.push(xxh3_64_with_seed(run.as_bytes(), 0));
            } else {
                push_ascii(word, run);
                if ends_word {
                    flush(word, out);
                }
            }
            continue;
        }
        if is_han_lead(b) {
            // A U+5000..U+9FFF ideograph: a token of its own (as `is_cjk` below).
            flush(word, out);
            out.push(xxh3_64_with_seed(&bytes[i..i + 3], 0));
            i += 3;
            continue;
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        i += c.len_utf8();
        if is_cjk(c) {
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
    let mut out = Vec::with_capacity(text.len());
    normalize_exact_into(text, opts, &ExactStops::new(opts), &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The ASCII bytes that end a run copied as it is by [`normalize_exact_into`]: whitespace and
/// punctuation when folded, and every non-ASCII byte.
pub struct ExactStops([bool; 256]);

impl ExactStops {
    /// The table for `opts`.
    #[must_use]
    pub fn new(opts: NormOptions) -> Self {
        let mut t = [false; 256];
        for (b, stop) in t.iter_mut().enumerate() {
            #[allow(clippy::cast_possible_truncation)]
            let b = b as u8;
            *stop = b >= 0x80
                || (opts.fold_whitespace && is_ascii_space(b))
                || (opts.fold_punctuation && b.is_ascii_punctuation());
        }
        ExactStops(t)
    }
}

/// A UTF-8 lead byte `E5..=E9`: a char of U+5000..=U+9FFF, all CJK unified ideographs (3 bytes;
/// NFKC-inert, no case, letters).
#[inline]
fn is_han_lead(b: u8) -> bool {
    (0xE5..=0xE9).contains(&b)
}

/// `char::is_whitespace` on ASCII: tab to carriage return, and space.
#[inline]
fn is_ascii_space(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | b' ')
}

/// [`normalize_exact`] appended to `out` (valid UTF-8); `stops` is `ExactStops::new(opts)`.
/// ASCII text is copied in runs (a single space between kept bytes included) up to the next
/// other whitespace (or punctuation, when folded) and lowercased in place; CJK chars skip the lowercase tables (they have no case).
pub fn normalize_exact_into(text: &str, opts: NormOptions, stops: &ExactStops, out: &mut Vec<u8>) {
    let text = nfkc(text, opts);
    let bytes = text.as_bytes();
    let start = out.len();
    let mut pending_space = false;
    let mut i = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if opts.fold_whitespace && is_ascii_space(b) {
                pending_space = out.len() > start;
                i += 1;
                continue;
            }
            if opts.fold_punctuation && b.is_ascii_punctuation() {
                i += 1;
                continue;
            }
            let from = i;
            i += 1;
            // A single space between two kept bytes stays as it is: part of the run.
            while i < bytes.len() {
                if !stops.0[usize::from(bytes[i])] {
                    i += 1;
                } else if bytes[i] == b' '
                    && bytes.get(i + 1).is_some_and(|&n| !stops.0[usize::from(n)])
                {
                    i += 2;
                } else {
                    break;
                }
            }
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            let at = out.len();
            out.extend_from_slice(&bytes[from..i]);
            if opts.lowercase {
                out[at..].make_ascii_lowercase();
            }
            continue;
        }
        if is_han_lead(b) {
            // A run of U+5000..U+9FFF ideographs: no case, not space nor punctuation.
            let from = i;
            i += 3;
            while i < bytes.len() && is_han_lead(bytes[i]) {
                i += 3;
            }
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.extend_from_slice(&bytes[from..i]);
            continue;
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        let w = c.len_utf8();
        let raw = &bytes[i..i + w];
        i += w;
        if opts.fold_punctuation && is_punctuation(c) {
            continue;
        }
        if opts.fold_whitespace && c.is_whitespace() {
            pending_space = out.len() > start;
            continue;
        }
        if pending_space {
            out.push(b' ');
            pending_space = false;
        }
        if opts.lowercase && !is_cjk(c) {
            let mut buf = [0u8; 4];
            for l in c.to_lowercase() {
                out.extend_from_slice(l.encode_utf8(&mut buf).as_bytes());
            }
        } else {
            out.extend_from_slice(raw);
        }
    }
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
    exact_key_with(values, opts, &ExactStops::new(opts), buf)
}

/// [`exact_key`] with the stop table built once.
#[must_use]
pub fn exact_key_with(
    values: &[Option<&str>],
    opts: NormOptions,
    stops: &ExactStops,
    buf: &mut Vec<u8>,
) -> u128 {
    buf.clear();
    for v in values {
        match v {
            None => buf.push(0),
            Some(s) => {
                buf.push(1);
                let at = buf.len();
                buf.extend_from_slice(&[0u8; 8]);
                normalize_exact_into(s, opts, stops, buf);
                let n = (buf.len() - at - 8) as u64;
                buf[at..at + 8].copy_from_slice(&n.to_le_bytes());
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
    let stops = ExactStops::new(opts);
    let run = || {
        (0..rows)
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(buf, vals): &mut (Vec<u8>, Vec<Option<&str>>), r| {
                    vals.clear();
                    vals.extend(columns.iter().map(|c| c[r]));
                    exact_key_with(vals, opts, &stops, buf)
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
    fn nfkc_fast_path_is_exact() {
        use unicode_normalization_alignments::char::canonical_combining_class;
        let full = |t: &str| t.nfkc().map(|(c, _)| c).collect::<String>();
        for c in (0u32..0x11_0000).filter_map(char::from_u32) {
            if nfkc_inert(c) {
                assert_eq!(canonical_combining_class(c), 0, "{c:?}");
                assert_eq!(full(&c.to_string()), c.to_string(), "{c:?}");
                // Not the first half of a composition with any following mark.
                for m in ['\u{301}', '\u{308}', '\u{3099}', '\u{309A}', '\u{1161}'] {
                    let s = format!("{c}{m}");
                    if full(&s) != s {
                        assert!(!nfkc_inert(m), "{c:?}+{m:?}");
                    }
                }
            }
            if let Some(m) = nfkc_fullwidth(c) {
                assert_eq!(full(&c.to_string()), m.to_string(), "{c:?}");
            }
            let mut buf = [0u8; 4];
            if is_han_lead(c.encode_utf8(&mut buf).as_bytes()[0]) {
                assert!(c.len_utf8() == 3 && nfkc_inert(c) && is_cjk(c), "{c:?}");
                assert!(!c.is_whitespace() && !is_punctuation(c), "{c:?}");
                assert!(c.to_lowercase().eq([c]), "{c:?}");
            }
        }
        let o = NormOptions::default();
        for t in [
            "你好，世界！ＡＢＣ１２３",
            "ｶﾀｶﾅ and ﬁ",
            "e\u{301}",
            "가\u{1161}",
            "plain",
        ] {
            assert_eq!(nfkc(t, o), full(t), "{t:?}");
        }
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

    /// The char-by-char forms the fast paths replace (references for the test below).
    fn tokens_reference(text: &str, opts: NormOptions) -> Vec<u64> {
        let text = nfkc(text, opts);
        let (mut word, mut out) = (String::new(), Vec::new());
        let flush = |word: &mut String, out: &mut Vec<u64>| {
            if !word.is_empty() {
                out.push(xxh3_64_with_seed(word.as_bytes(), 0));
                word.clear();
            }
        };
        for c in text.chars() {
            if c.is_ascii() && !c.is_ascii_alphanumeric() {
                flush(&mut word, &mut out);
            } else if is_cjk(c) {
                flush(&mut word, &mut out);
                out.push(xxh3_64_with_seed(c.to_string().as_bytes(), 0));
            } else if c.is_alphanumeric() {
                if opts.lowercase {
                    word.extend(c.to_lowercase());
                } else {
                    word.push(c);
                }
            } else {
                flush(&mut word, &mut out);
            }
        }
        flush(&mut word, &mut out);
        out
    }

    fn exact_reference(text: &str, opts: NormOptions) -> String {
        let text = nfkc(text, opts);
        let mut out = String::new();
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

    #[test]
    fn fast_paths_match_char_by_char_forms() {
        let all: Vec<char> =
            "aZ9 _.,!\t\n\u{b}\u{c}\u{1c}\u{85}\u{a0}ÉßİΣ中文。，Ｈ１\u{3000}ｶ\u{301}e-"
                .chars()
                .collect();
        // Without the chars that need the full NFKC: the fast path's own mappings.
        let common: Vec<char> = "aZ9 ,.!\n中文。，Ｈ１\u{3000}".chars().collect();
        let mut state = 3u64;
        let mut text = String::new();
        for round in 0..20_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            text.clear();
            let alphabet = if round % 2 == 0 { &all } else { &common };
            let len = (state >> 58) as usize;
            let mut x = state;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let opts = NormOptions {
                nfkc: round % 4 < 3,
                lowercase: round % 3 != 0,
                fold_whitespace: round % 5 != 0,
                fold_punctuation: round % 7 != 0,
            };
            if opts.nfkc {
                let full: String = text.nfkc().map(|(c, _)| c).collect();
                assert_eq!(nfkc(&text, opts), full, "{text:?}");
            }
            let mut got = Vec::new();
            token_hashes(&text, opts, &mut String::new(), &mut got);
            assert_eq!(got, tokens_reference(&text, opts), "{text:?} {opts:?}");
            assert_eq!(
                normalize_exact(&text, opts),
                exact_reference(&text, opts),
                "{text:?}"
            );
        }
    }

    #[test]
    fn exact_normalisation_folds_each_thing_on_request() {
        let all = NormOptions::default();
        assert_eq!(
            normalize_exact("  Hello,\u{a0} WORLD!! ", all),
            "hello world"
        );
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
