//! Reading `tokenizer.json` into the fast path's plan, or the reason it cannot take one.
//!
//! The fast path covers BPE models (byte-level like GPT-2, cl100k, Llama-3 and Qwen2, or
//! SentencePiece-style with byte fallback like Llama-2 and Phi-3) whose normaliser is a sequence
//! of NFC/NFKC/NFD/NFKD, Lowercase, Prepend and string Replace, and whose pre-tokeniser is none,
//! `ByteLevel`, `Split(regex, Isolated)` followed by `ByteLevel`, or (with no normaliser)
//! `Metaspace` with `▁`, which is how transformers 5 rewrites Llama/Phi-3's Prepend/Replace
//! normaliser. Anything else (WordPiece, Unigram, exotic splits) is counted by the reference
//! `tokenizers` pipeline, so a count is always exact; [`FastPlan::build`] says why a tokenizer
//! is not fast.

use std::borrow::Cow;

use rustc_hash::FxHashMap;
use serde_json::Value;
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::bpe::{Bpe, Init};
use super::pretok::{Splitter, GPT2_PATTERN};

/// Whether NFC leaves `c` alone whatever its neighbours are: NFC quick-check Yes and canonical
/// combining class 0 (checked for every char of these ranges in `tests::nfc_inert_ranges`).
/// Covers Latin-1 and Latin Extended, CJK punctuation, CJK ideographs and fullwidth forms, so
/// most English and Chinese text skips the table-driven quick check.
#[inline]
pub(crate) fn nfc_inert(c: char) -> bool {
    matches!(c, '\0'..='\u{2FF}' | '\u{3000}'..='\u{3029}' | '\u{4E00}'..='\u{9FFF}' | '\u{FF01}'..='\u{FFEF}')
}

/// One normalisation step the fast path reproduces.
#[derive(Debug)]
pub enum NormStep {
    /// Unicode NFC.
    Nfc,
    /// Unicode NFKC.
    Nfkc,
    /// Unicode NFD.
    Nfd,
    /// Unicode NFKD.
    Nfkd,
    /// Lowercase (Unicode).
    Lowercase,
    /// Prepend a string to non-empty text.
    Prepend(String),
    /// Replace every occurrence of a string.
    Replace(String, String),
}

/// When a `Metaspace` pre-tokeniser prepends `▁` to a split (its `prepend_scheme`); it never
/// does when the split already starts with `▁` once spaces are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// Every split.
    Always,
    /// Only the split at byte 0 of the input (`offsets_original().0 == 0`).
    First,
    /// Never.
    Never,
}

/// A `Metaspace` pre-tokeniser with replacement `▁`: spaces become `▁`, then [`Prefix`], then
/// (with `split`) a piece starts at every `▁`.
#[derive(Debug, Clone, Copy)]
pub struct Metaspace {
    pub(crate) prefix: Prefix,
    pub(crate) split: bool,
}

impl Metaspace {
    fn parse(v: &Value) -> Result<Self, String> {
        if v.get("replacement").and_then(Value::as_str) != Some("\u{2581}") {
            return unsupported("Metaspace with a replacement other than ▁");
        }
        let prefix = match v.get("prepend_scheme").and_then(Value::as_str) {
            Some("always") => Prefix::Always,
            Some("first") => Prefix::First,
            Some("never") => Prefix::Never,
            other => return unsupported(format!("Metaspace prepend_scheme {other:?}")),
        };
        let split = v
            .get("split")
            .and_then(Value::as_bool)
            .ok_or("Metaspace without split")?;
        Ok(Metaspace { prefix, split })
    }

    /// Whether a `▁` goes before `split` (non-empty, spaces not yet replaced); `at_start`: the
    /// split starts at byte 0 of the input.
    pub(crate) fn prepends(self, split: &str, at_start: bool) -> bool {
        let allowed = match self.prefix {
            Prefix::Always => true,
            Prefix::First => at_start,
            Prefix::Never => false,
        };
        allowed && !split.is_empty() && !split.starts_with([' ', METASPACE])
    }

    /// The split as the pre-tokeniser hands it to the model (before `split`).
    fn apply(self, split: &str, at_start: bool) -> Cow<'_, str> {
        let prepend = self.prepends(split, at_start);
        if !prepend && !split.contains(' ') {
            return Cow::Borrowed(split);
        }
        let mut s = String::with_capacity(split.len() + 3 + 2 * split.matches(' ').count());
        if prepend {
            s.push(METASPACE);
        }
        for (i, part) in split.split(' ').enumerate() {
            if i > 0 {
                s.push(METASPACE);
            }
            s.push_str(part);
        }
        Cow::Owned(s)
    }
}

/// Everything the fast path needs.
#[derive(Debug)]
pub struct FastPlan {
    pub(crate) norm: Vec<NormStep>,
    /// A `Metaspace` pre-tokeniser (then `norm` is empty and the model is char-level).
    pub(crate) metaspace: Option<Metaspace>,
    pub(crate) splitter: Splitter,
    pub(crate) add_prefix_space: bool,
    pub(crate) bpe: Bpe,
    /// Byte-level vocabulary (every token covers ≥ 1 byte of normalised text).
    pub(crate) byte_level: bool,
    /// Longest token in bytes of normalised text (for the lower bound on counts).
    pub(crate) max_token_bytes: usize,
}

fn unsupported<T>(why: impl Into<String>) -> Result<T, String> {
    Err(why.into())
}

fn get_bool(v: &Value, k: &str, default: bool) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(default)
}

fn parse_norm(v: &Value, out: &mut Vec<NormStep>) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "Sequence" => {
            for n in v
                .get("normalizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                parse_norm(n, out)?;
            }
        }
        "NFC" => out.push(NormStep::Nfc),
        "NFKC" => out.push(NormStep::Nfkc),
        "NFD" => out.push(NormStep::Nfd),
        "NFKD" => out.push(NormStep::Nfkd),
        "Lowercase" => out.push(NormStep::Lowercase),
        "Prepend" => {
            let p = v
                .get("prepend")
                .and_then(Value::as_str)
                .ok_or("Prepend without text")?;
            out.push(NormStep::Prepend(p.to_string()));
        }
        "Replace" => {
            let Some(pat) = v.pointer("/pattern/String").and_then(Value::as_str) else {
                return unsupported("Replace normalizer with a regex pattern");
            };
            let content = v.get("content").and_then(Value::as_str).unwrap_or("");
            if pat.is_empty() {
                return unsupported("Replace normalizer with an empty pattern");
            }
            out.push(NormStep::Replace(pat.to_string(), content.to_string()));
        }
        other => return unsupported(format!("normalizer {other}")),
    }
    Ok(())
}

/// (splitter, byte-level, add_prefix_space) for a pre-tokenizer.
fn parse_pretok(v: &Value) -> Result<(Splitter, bool, bool), String> {
    if v.is_null() {
        return Ok((Splitter::Whole, false, false));
    }
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "ByteLevel" => {
            if !get_bool(v, "use_regex", true) {
                return Ok((Splitter::Whole, true, get_bool(v, "add_prefix_space", true)));
            }
            let splitter = Splitter::for_pattern(GPT2_PATTERN).map_err(|e| e.to_string())?;
            Ok((splitter, true, get_bool(v, "add_prefix_space", true)))
        }
        "Sequence" => {
            let list = v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or("empty Sequence")?;
            match list.as_slice() {
                [one] => parse_pretok(one),
                [split, bl]
                    if split.get("type").and_then(Value::as_str) == Some("Split")
                        && bl.get("type").and_then(Value::as_str) == Some("ByteLevel") =>
                {
                    if get_bool(bl, "use_regex", true) || get_bool(bl, "add_prefix_space", true) {
                        return unsupported("ByteLevel with regex or prefix space after Split");
                    }
                    let behavior = split.get("behavior").and_then(Value::as_str).unwrap_or("");
                    if behavior != "Isolated" || get_bool(split, "invert", false) {
                        return unsupported(format!("Split behavior {behavior}"));
                    }
                    let Some(pattern) = split.pointer("/pattern/Regex").and_then(Value::as_str)
                    else {
                        return unsupported("Split with a string pattern");
                    };
                    let splitter = Splitter::for_pattern(pattern).map_err(|e| e.to_string())?;
                    Ok((splitter, true, false))
                }
                _ => unsupported("pre-tokenizer sequence"),
            }
        }
        other => unsupported(format!("pre-tokenizer {other}")),
    }
}

const METASPACE: char = '\u{2581}';

/// Whether `▁` is a token and no token holds `▁` after another char (`^▁*[^▁]*$`), which makes
/// the point before a `▁` run a boundary no merge can cross.
fn metaspace_safe(vocab: &FxHashMap<&str, u32>) -> bool {
    let mut buf = [0u8; 4];
    vocab.contains_key(&*METASPACE.encode_utf8(&mut buf))
        && vocab
            .keys()
            .all(|k| !k.trim_start_matches(METASPACE).contains(METASPACE))
}

/// The inverse of GPT-2's byte → printable-char table.
fn byte_level_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
            c
        };
    }
    table
}

impl FastPlan {
    /// Build the plan from a parsed `tokenizer.json`, or say why the fast path does not apply.
    ///
    /// # Errors
    /// A human-readable reason (the tokenizer then uses the reference pipeline).
    pub fn build(json: &Value) -> Result<Self, String> {
        let model = json.get("model").ok_or("no model")?;
        if model.get("type").and_then(Value::as_str) != Some("BPE") {
            return unsupported(format!(
                "model {}",
                model.get("type").and_then(Value::as_str).unwrap_or("?")
            ));
        }
        if model
            .get("dropout")
            .and_then(Value::as_f64)
            .is_some_and(|d| d != 0.0)
        {
            return unsupported("BPE dropout");
        }
        for k in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if model
                .get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                return unsupported(format!("BPE {k}"));
            }
        }
        let mut norm = Vec::new();
        parse_norm(json.get("normalizer").unwrap_or(&Value::Null), &mut norm)?;
        let pre = json.get("pre_tokenizer").unwrap_or(&Value::Null);
        let (metaspace, (splitter, byte_level, add_prefix_space)) =
            if pre.get("type").and_then(Value::as_str) == Some("Metaspace") {
                if !norm.is_empty() {
                    // The prefix rule reads original offsets, which a normaliser would shift.
                    return unsupported("Metaspace after a normalizer");
                }
                (
                    Some(Metaspace::parse(pre)?),
                    (Splitter::Whole, false, false),
                )
            } else {
                (None, parse_pretok(pre)?)
            };

        let vocab_v = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or("BPE without vocab")?;
        let mut vocab: FxHashMap<&str, u32> = FxHashMap::default();
        for (k, v) in vocab_v {
            let id = v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or("bad vocab id")?;
            vocab.insert(k.as_str(), id);
        }
        let merges_v = model
            .get("merges")
            .and_then(Value::as_array)
            .ok_or("BPE without merges")?;
        let mut merges = Vec::with_capacity(merges_v.len());
        for m in merges_v {
            let (a, b): (&str, &str) = match m {
                Value::String(s) => {
                    let parts: Vec<&str> = s.split(' ').collect();
                    if parts.len() != 2 {
                        return unsupported(format!("merge {s:?}"));
                    }
                    (parts[0], parts[1])
                }
                Value::Array(p) if p.len() == 2 => (
                    p[0].as_str().ok_or("bad merge")?,
                    p[1].as_str().ok_or("bad merge")?,
                ),
                _ => return unsupported("bad merge entry"),
            };
            let ia = *vocab
                .get(a)
                .ok_or_else(|| format!("merge token {a:?} not in vocab"))?;
            let ib = *vocab
                .get(b)
                .ok_or_else(|| format!("merge token {b:?} not in vocab"))?;
            let joined = format!("{a}{b}");
            let inew = *vocab
                .get(joined.as_str())
                .ok_or_else(|| format!("merge {joined:?} not in vocab"))?;
            merges.push((ia, ib, inew));
        }
        let unk = match model.get("unk_token").and_then(Value::as_str) {
            Some(u) => Some(*vocab.get(u).ok_or("unk_token not in vocab")?),
            None => None,
        };
        let (init, max_token_bytes) = if byte_level {
            let chars = byte_level_chars();
            let mut table = Box::new([0u32; 256]);
            for (b, c) in chars.iter().enumerate() {
                let mut buf = [0u8; 4];
                table[b] = *vocab
                    .get(&*c.encode_utf8(&mut buf))
                    .ok_or("byte-level vocabulary lacks a byte symbol")?;
            }
            let max_bytes = vocab.keys().map(|k| k.chars().count()).max().unwrap_or(1);
            (Init::Bytes(table), max_bytes)
        } else {
            let mut chars = FxHashMap::default();
            for (k, &id) in &vocab {
                let mut it = k.chars();
                if let (Some(c), None) = (it.next(), it.next()) {
                    chars.insert(c, id);
                }
            }
            let byte_fallback = if get_bool(model, "byte_fallback", false) {
                let mut table = Box::new([0u32; 256]);
                for (b, slot) in table.iter_mut().enumerate() {
                    *slot = *vocab
                        .get(format!("<0x{b:02X}>").as_str())
                        .ok_or("byte_fallback without all 256 byte tokens")?;
                }
                Some(table)
            } else {
                None
            };
            let max_bytes = vocab.keys().map(|k| k.len()).max().unwrap_or(1);
            let fuse_unk = get_bool(model, "fuse_unk", false);
            (
                Init::Chars {
                    chars,
                    byte_fallback,
                    unk,
                    fuse_unk,
                },
                max_bytes,
            )
        };
        let ignore = if get_bool(model, "ignore_merges", false) {
            let decode: FxHashMap<char, u8> = byte_level_chars()
                .iter()
                .enumerate()
                .map(|(b, c)| (*c, u8::try_from(b).unwrap_or(0)))
                .collect();
            let mut map: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
            for (k, &id) in &vocab {
                if byte_level {
                    // Keys that are not in the byte alphabet can never match a piece.
                    let raw: Option<Vec<u8>> = k.chars().map(|c| decode.get(&c).copied()).collect();
                    if let Some(raw) = raw {
                        map.insert(raw.into(), id);
                    }
                } else {
                    map.insert(k.as_bytes().into(), id);
                }
            }
            Some(map)
        } else {
            None
        };
        // `ignore_merges` looks the whole piece up in the vocabulary, so pieces must stay whole.
        let whole_lookup = ignore.is_some();
        let bpe = Bpe::new(merges, init, ignore);
        let splitter = match splitter {
            _ if metaspace.is_some_and(|m| m.split) => Splitter::BeforeEach(METASPACE),
            Splitter::Whole if !byte_level && !whole_lookup && metaspace_safe(&vocab) => {
                Splitter::BeforeRunOf(METASPACE)
            }
            other => other,
        };
        Ok(FastPlan {
            norm,
            metaspace,
            splitter,
            add_prefix_space,
            bpe,
            byte_level,
            max_token_bytes,
        })
    }

    /// Apply the normaliser.
    pub fn normalize<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut s = Cow::Borrowed(text);
        for step in &self.norm {
            match step {
                NormStep::Nfc => {
                    if s.is_ascii()
                        || s.chars().all(nfc_inert)
                        || is_nfc_quick(s.chars()) == IsNormalized::Yes
                    {
                        continue;
                    }
                    s = Cow::Owned(s.nfc().map(|(c, _)| c).collect());
                }
                NormStep::Nfkc => {
                    if !s.is_ascii() {
                        s = Cow::Owned(s.nfkc().map(|(c, _)| c).collect());
                    }
                }
                NormStep::Nfd => {
                    if !s.is_ascii() {
                        s = Cow::Owned(s.nfd().map(|(c, _)| c).collect());
                    }
                }
                NormStep::Nfkd => {
                    if !s.is_ascii() {
                        s = Cow::Owned(s.nfkd().map(|(c, _)| c).collect());
                    }
                }
                NormStep::Lowercase => {
                    // Per char, like `NormalizedString::lowercase` (no final-sigma rule).
                    if s.chars().any(|c| c.is_uppercase()) {
                        s = Cow::Owned(s.chars().flat_map(char::to_lowercase).collect());
                    }
                }
                NormStep::Prepend(p) => {
                    if !s.is_empty() {
                        s = Cow::Owned(format!("{p}{s}"));
                    }
                }
                NormStep::Replace(pat, content) => {
                    if s.contains(pat.as_str()) {
                        s = Cow::Owned(s.replace(pat.as_str(), content));
                    }
                }
            }
        }
        s
    }

    /// Call `f` on each piece of one normalised split (adding the `ByteLevel` prefix space, or
    /// applying `Metaspace`); `at_start`: the split starts at byte 0 of the input.
    pub fn for_each_piece(&self, split: &str, at_start: bool, f: impl FnMut(&str)) {
        if let Some(m) = self.metaspace {
            self.splitter.for_each_piece(&m.apply(split, at_start), f);
        } else if self.add_prefix_space && !split.is_empty() && !split.starts_with(' ') {
            self.splitter.for_each_piece(&format!(" {split}"), f);
        } else {
            self.splitter.for_each_piece(split, f);
        }
    }
}
