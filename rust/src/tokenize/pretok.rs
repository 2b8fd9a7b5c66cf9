//! Pre-tokenisation: split normalised text into the pieces that BPE merges within.
//!
//! The widely used split regexes (GPT-2's, cl100k's / Llama-3's and Qwen2's) are implemented as
//! hand-written scanners that reproduce the backtracking regex semantics exactly (leftmost
//! alternative wins, greedy quantifiers, `\s+(?!\S)` leaving the last space to the next word).
//! A regex engine spends most of its time in these few alternatives; a scanner reads each byte
//! once. Any other pattern runs through oniguruma (`SysRegex`), the engine the `tokenizers` wheel
//! uses, so semantics match there too. Character classes come from Unicode 16 general categories
//! (`\p{L}`, `\p{N}`) and Rust's White_Space (`\s`); the parity tests compare every piece
//! boundary effect (the token counts) with the reference implementation.
//!
//! Cost: O(bytes); no allocation (pieces are borrowed sub-slices).

use std::sync::OnceLock;

use tokenizers::utils::SysRegex;
use unicode_general_category::{get_general_category, GeneralCategory as G};

use crate::error::{Result, SftError};

/// The Qwen2 split regex (single digits).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The cl100k / Llama-3 split regex (digits in groups of up to three).
pub const CL100K_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The GPT-2 split regex (used by the `ByteLevel` pre-tokenizer with `use_regex: true`).
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

const OTHER: u8 = 0;
const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 3;

/// How text is cut into pieces.
pub enum Splitter {
    /// cl100k / Qwen family; `max_digits` is 3 (cl100k) or 1 (Qwen2).
    Cl100kLike {
        /// Longest run of `\p{N}` in one piece.
        max_digits: usize,
    },
    /// GPT-2 byte-level regex.
    Gpt2,
    /// Any other `Split` regex with `Isolated` behaviour, via oniguruma.
    Regex(SysRegex),
    /// No pre-tokeniser: the whole (normalised) text is one piece.
    Whole,
    /// No pre-tokeniser, but the vocabulary proves that no token holds `c` after another char
    /// (SentencePiece vocabularies with `▁`): merges cannot cross the point before a run of `c`
    /// that follows another char, so cutting there gives the same tokens as the whole text.
    BeforeRunOf(char),
    /// `Metaspace(split: true)`: a piece starts at every `c` (`MergedWithNext`), as the
    /// reference itself splits.
    BeforeEach(char),
}

impl std::fmt::Debug for Splitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Splitter::Cl100kLike { max_digits } => write!(f, "Cl100kLike({max_digits})"),
            Splitter::Gpt2 => write!(f, "Gpt2"),
            Splitter::Regex(_) => write!(f, "Regex"),
            Splitter::Whole => write!(f, "Whole"),
            Splitter::BeforeRunOf(c) => write!(f, "BeforeRunOf({c:?})"),
            Splitter::BeforeEach(c) => write!(f, "BeforeEach({c:?})"),
        }
    }
}

impl Splitter {
    /// The splitter for a `Split` pre-tokenizer's regex.
    ///
    /// # Errors
    /// [`SftError::Tokenizer`] when oniguruma rejects the pattern.
    pub fn for_pattern(pattern: &str) -> Result<Self> {
        if pattern == QWEN2_PATTERN {
            Ok(Splitter::Cl100kLike { max_digits: 1 })
        } else if pattern == CL100K_PATTERN {
            Ok(Splitter::Cl100kLike { max_digits: 3 })
        } else if pattern == GPT2_PATTERN {
            Ok(Splitter::Gpt2)
        } else {
            SysRegex::new(pattern)
                .map(Splitter::Regex)
                .map_err(|e| SftError::Tokenizer(format!("split regex {pattern:?}: {e}")))
        }
    }

    /// Call `f` on each piece of `text`, in order. Pieces are never empty and cover `text`.
    pub fn for_each_piece<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        if text.is_empty() {
            return;
        }
        match self {
            Splitter::Whole => f(text),
            Splitter::BeforeRunOf(c) => {
                let mut start = 0;
                let mut prev: Option<char> = None;
                for (i, ch) in text.char_indices() {
                    if ch == *c && prev.is_some_and(|p| p != *c) {
                        f(&text[start..i]);
                        start = i;
                    }
                    prev = Some(ch);
                }
                f(&text[start..]);
            }
            Splitter::BeforeEach(c) => {
                let mut start = 0;
                for (i, _) in text.match_indices(*c) {
                    if i > start {
                        f(&text[start..i]);
                        start = i;
                    }
                }
                f(&text[start..]);
            }
            Splitter::Cl100kLike { max_digits } => {
                let b = text.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    let end = cl100k_match(text, i, *max_digits);
                    f(&text[i..end]);
                    i = end;
                }
            }
            Splitter::Gpt2 => {
                let b = text.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    let end = gpt2_match(text, i);
                    f(&text[i..end]);
                    i = end;
                }
            }
            Splitter::Regex(re) => {
                let mut last = 0;
                for (s, e) in re.find_iter(text) {
                    if s > last {
                        f(&text[last..s]);
                    }
                    if e > s {
                        f(&text[s..e]);
                    }
                    last = e;
                }
                if last < text.len() {
                    f(&text[last..]);
                }
            }
        }
    }
}

fn bmp_table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0u32..0x1_0000)
            .map(|cp| char::from_u32(cp).map_or(OTHER, classify_slow))
            .collect()
    })
}

fn classify_slow(c: char) -> u8 {
    if c.is_whitespace() {
        return SPACE;
    }
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => LETTER,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => NUMBER,
        _ => OTHER,
    }
}

/// Class of the char starting at byte `i`, and its byte length.
#[inline(always)]
fn class_at(text: &str, i: usize) -> (u8, usize, char) {
    let b = text.as_bytes()[i];
    if b < 0x80 {
        let cls = match b {
            b'a'..=b'z' | b'A'..=b'Z' => LETTER,
            b'0'..=b'9' => NUMBER,
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => SPACE,
            _ => OTHER,
        };
        return (cls, 1, b as char);
    }
    class_at_non_ascii(text, i)
}

#[inline(never)]
fn class_at_non_ascii(text: &str, i: usize) -> (u8, usize, char) {
    // `i` is always a char boundary (we only advance by whole chars).
    let c = text[i..].chars().next().unwrap_or('\u{fffd}');
    let len = c.len_utf8();
    let cp = c as u32;
    let cls = if cp < 0x1_0000 {
        bmp_table()[cp as usize]
    } else {
        classify_slow(c)
    };
    (cls, len, c)
}

#[inline(always)]
fn at(text: &str, i: usize) -> Option<(u8, usize, char)> {
    (i < text.len()).then(|| class_at(text, i))
}

/// Length in bytes of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at `i`.
fn contraction(text: &str, i: usize, case_insensitive: bool) -> Option<usize> {
    let b = text.as_bytes();
    if b[i] != b'\'' {
        return None;
    }
    let rest = &text[i + 1..];
    let mut chars = rest.chars();
    let c1 = chars.next()?;
    let fold = |c: char| -> char {
        if !case_insensitive {
            return c;
        }
        match c {
            // Unicode simple case folding maps U+017F (long s) and U+212A (Kelvin) onto ASCII.
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            _ => c.to_ascii_lowercase(),
        }
    };
    let f1 = fold(c1);
    match f1 {
        's' | 't' | 'm' | 'd' => Some(1 + c1.len_utf8()),
        'r' | 'v' | 'l' => {
            let c2 = chars.next()?;
            let want = match f1 {
                'r' | 'v' => 'e',
                _ => 'l',
            };
            (fold(c2) == want).then(|| 1 + c1.len_utf8() + c2.len_utf8())
        }
        _ => None,
    }
}

/// End of the whitespace run starting at `i`, plus the end of its last `\r`/`\n` (if any) and
/// the start of its last char.
fn space_run(text: &str, i: usize) -> (usize, Option<usize>, usize) {
    let mut j = i;
    let mut last_nl = None;
    let mut last_start = i;
    while let Some((cls, len, c)) = at(text, j) {
        if cls != SPACE {
            break;
        }
        last_start = j;
        j += len;
        if c == '\n' || c == '\r' {
            last_nl = Some(j);
        }
    }
    (j, last_nl, last_start)
}

/// `\s+(?!\S)|\s+` at `i` (a whitespace char): the run minus its last char when a non-space
/// follows and the run is longer than one char.
fn trailing_space_rule(text: &str, i: usize, run_end: usize, last_start: usize) -> usize {
    if run_end == text.len() || last_start == i {
        run_end
    } else {
        last_start
    }
}

fn cl100k_match(text: &str, i: usize, max_digits: usize) -> usize {
    // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if let Some(n) = contraction(text, i, true) {
        return i + n;
    }
    let (cls, len, c) = class_at(text, i);
    // 2. [^\r\n\p{L}\p{N}]?\p{L}+
    let letters_from = if cls == LETTER {
        Some(i)
    } else if cls != NUMBER && c != '\r' && c != '\n' {
        match at(text, i + len) {
            Some((LETTER, _, _)) => Some(i + len),
            _ => None,
        }
    } else {
        None
    };
    if let Some(mut j) = letters_from {
        while let Some((LETTER, l, _)) = at(text, j) {
            j += l;
        }
        return j;
    }
    // 3. \p{N}{1,max}
    if cls == NUMBER {
        let mut j = i + len;
        let mut n = 1;
        while n < max_digits {
            match at(text, j) {
                Some((NUMBER, l, _)) => {
                    j += l;
                    n += 1;
                }
                _ => break,
            }
        }
        return j;
    }
    // 4. ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let punct_from = if cls == OTHER {
        Some(i)
    } else if c == ' ' && matches!(at(text, i + 1), Some((OTHER, _, _))) {
        Some(i + 1)
    } else {
        None
    };
    if let Some(mut j) = punct_from {
        while let Some((OTHER, l, _)) = at(text, j) {
            j += l;
        }
        while j < text.len() && matches!(text.as_bytes()[j], b'\r' | b'\n') {
            j += 1;
        }
        return j;
    }
    // Here `c` is whitespace. 5. \s*[\r\n]+  6. \s+(?!\S)  7. \s+
    let (run_end, last_nl, last_start) = space_run(text, i);
    if let Some(e) = last_nl {
        return e;
    }
    trailing_space_rule(text, i, run_end, last_start)
}

fn gpt2_match(text: &str, i: usize) -> usize {
    if let Some(n) = contraction(text, i, false) {
        return i + n;
    }
    let (cls, len, c) = class_at(text, i);
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
    let (run_cls, from) = if c == ' ' {
        match at(text, i + 1) {
            Some((k, _, _)) if k != SPACE => (k, i + 1),
            _ => (SPACE, i),
        }
    } else {
        (cls, i)
    };
    if run_cls != SPACE {
        let mut j = from;
        while let Some((k, l, _)) = at(text, j) {
            if k != run_cls {
                break;
            }
            j += l;
        }
        return j;
    }
    let _ = len;
    let (run_end, _, last_start) = space_run(text, i);
    trailing_space_rule(text, i, run_end, last_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &Splitter, t: &str) -> Vec<String> {
        let mut v = Vec::new();
        s.for_each_piece(t, |p| v.push(p.to_string()));
        v
    }

    fn regex_pieces(pattern: &str, t: &str) -> Vec<String> {
        let re = Splitter::Regex(SysRegex::new(pattern).unwrap());
        pieces(&re, t)
    }

    const SAMPLES: &[&str] = &[
        "Hello world, it's 12345 o'clock!\n\n  indented   code\r\n\tx = y[0] + 1;  ",
        "I'LL go; we'Re here 'd 've 'ſ 'K",
        "中文测试，你好世界！123四五六 mixed English和中文\n\n",
        "   leading spaces and trailing   ",
        "a\u{a0}b\u{3000}c\u{2028}d \u{85}e",
        "emoji 🎉🎉 and ｆｕｌｌｗｉｄｔｈ １２３",
        "def f(x):\n    return x**2  # comment\n\n\n",
        "'",
        " ",
        "\n",
        "x  \n  y",
        "¹²³ Ⅻ ⅷ 𝟙𝟚",
    ];

    #[test]
    fn scanners_match_oniguruma_on_samples() {
        for t in SAMPLES {
            assert_eq!(
                pieces(&Splitter::Cl100kLike { max_digits: 3 }, t),
                regex_pieces(CL100K_PATTERN, t),
                "cl100k on {t:?}"
            );
            assert_eq!(
                pieces(&Splitter::Cl100kLike { max_digits: 1 }, t),
                regex_pieces(QWEN2_PATTERN, t),
                "qwen on {t:?}"
            );
            assert_eq!(
                pieces(&Splitter::Gpt2, t),
                regex_pieces(GPT2_PATTERN, t),
                "gpt2 on {t:?}"
            );
        }
    }

    #[test]
    fn scanners_match_oniguruma_on_random_text() {
        // A deterministic generator over an alphabet rich in class boundaries.
        let alphabet: Vec<char> =
            "aZ0 9'sStTrReEvVlLmMdD \t\n\r\n  .,;!?-_()中文字，。１ⅷ\u{a0}\u{3000}é\u{301}🎉ſ"
                .chars()
                .collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut t = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = (state % 40) as usize;
            for _ in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                t.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            assert_eq!(
                pieces(&Splitter::Cl100kLike { max_digits: 3 }, &t),
                regex_pieces(CL100K_PATTERN, &t),
                "cl100k on {t:?}"
            );
            assert_eq!(
                pieces(&Splitter::Cl100kLike { max_digits: 1 }, &t),
                regex_pieces(QWEN2_PATTERN, &t),
                "qwen on {t:?}"
            );
            assert_eq!(
                pieces(&Splitter::Gpt2, &t),
                regex_pieces(GPT2_PATTERN, &t),
                "gpt2 on {t:?}"
            );
        }
    }
}
