//! Exact token counting with a model's own `tokenizer.json`.
//!
//! Two paths give the same numbers:
//! - the **reference** path is the `tokenizers` crate's `encode_fast` (what the Python
//!   `tokenizers` package runs);
//! - the **fast** path ([`spec::FastPlan`]) re-implements the common BPE pipelines without
//!   offsets or per-token strings: normalise, split with a hand-written scanner for the
//!   standard regexes, and merge each piece, with a per-thread cache of piece → count
//!   (pieces repeat: "the", " of", indentation).
//!
//! A row takes the fast path only when nothing in it could behave differently: when the raw or
//! normalised text contains the text of any added token (special tokens like `<|im_end|>`,
//! Phi-2's whitespace tokens), the row goes through the reference path. Tokenizers the fast
//! path does not cover always use the reference path. The parity tests check every row of the
//! shared data sets and generated text against the Python package.
//!
//! Batches run on sftfast's rayon pool; each row's count depends only on the row, so results are
//! the same for any thread count.

pub mod bpe;
mod encode;
pub mod pretok;
pub mod registry;
pub mod spec;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, MatchKind};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use tokenizers::{AddedToken, PostProcessor, Tokenizer};

use crate::error::{Result, SftError};
use crate::parallel;
use bpe::Scratch;
use spec::FastPlan;

/// Pieces longer than this are not cached.
const MAX_CACHED_PIECE: usize = 4096;
/// Entries per thread and map before the map is cleared.
const MAX_CACHE_ENTRIES: usize = 1 << 20;
/// Key bytes per thread in the map of pieces of 16 bytes or more before it is cleared: with the
/// entry overhead, at most ~64 MiB per thread. A CJK clause is one piece under the
/// cl100k/Qwen2 regexes; real SFT data repeats them (templates, system prompts, duplicates)
/// and every later pass over the same data (filter, then render) hits.
const MAX_CACHE_KEY_BYTES: usize = 32 << 20;
/// Rows per parallel task (also the granularity of Ctrl-C checks).
const CHUNK: usize = 256;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// A loaded tokenizer that counts tokens exactly.
pub struct Encoder {
    uid: u64,
    /// Content hash of the `tokenizer.json` (hex xxh3-128), the key plugins pass around.
    key: String,
    reference: Tokenizer,
    fast: Option<FastPlan>,
    fast_reason: Option<String>,
    /// Added tokens matched on raw text (`normalized: false`).
    added_raw: AddedSet,
    /// Added tokens matched on normalised text (`normalized: true`).
    added_norm: AddedSet,
    special_added: usize,
    max_added_bytes: usize,
    /// The fast encoder with offsets, built on first use (or why there is none).
    encode_plan: std::sync::OnceLock<std::result::Result<encode::EncodePlan, String>>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("key", &self.key)
            .field("fast", &self.fast.is_some())
            .field("fast_reason", &self.fast_reason)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Local {
    uid: u64,
    /// Merge count-cache misses through the encode cache (when the tokenizer has the fast
    /// encoder, so that a later encode of the same pieces finds them merged).
    fill_encode: bool,
    /// Pieces of up to 15 bytes, keyed exactly by their bytes and length packed in a `u128`
    /// (integer compare instead of `memcmp`; most pieces are this short).
    short: FxHashMap<u128, u32>,
    /// A small direct-mapped front for `short` that stays in the CPU's near caches: the
    /// frequent pieces (Zipf) hit here without probing the large map. Empty slots hold key 0,
    /// which no piece has (the length byte of a real key is at least 1).
    front: Vec<(u128, u32)>,
    /// Pieces of 16 to `MAX_CACHED_PIECE` bytes, keyed by their bytes.
    cache: FxHashMap<Box<[u8]>, u32>,
    cache_key_bytes: usize,
    scratch: Scratch,
}

impl Local {
    /// The cached count of `piece` (a piece of `split`), if any.
    fn peek(&mut self, split: &str, piece: &str) -> Option<usize> {
        let bytes = piece.as_bytes();
        if bytes.len() < 16 {
            let key = short_key_in(split, bytes);
            let slot = front_slot(key);
            if let Some(&(k, c)) = self.front.get(slot) {
                if k == key {
                    return Some(c as usize);
                }
            }
            let c = *self.short.get(&key)?;
            if let Some(f) = self.front.get_mut(slot) {
                *f = (key, c);
            }
            Some(c as usize)
        } else if bytes.len() <= MAX_CACHED_PIECE {
            self.cache.get(bytes).map(|&c| c as usize)
        } else {
            None
        }
    }

    /// Cache `c` as the count of a piece made of cut parts (a piece of `split`) while there is
    /// room: clearing for such a piece would drop its parts.
    fn store(&mut self, split: &str, piece: &str, c: usize) {
        let bytes = piece.as_bytes();
        let c = u32::try_from(c).unwrap_or(u32::MAX);
        if bytes.len() < 16 {
            if self.short.len() < MAX_CACHE_ENTRIES {
                self.short.insert(short_key_in(split, bytes), c);
            }
        } else if bytes.len() <= MAX_CACHED_PIECE
            && self.cache.len() < MAX_CACHE_ENTRIES
            && self.cache_key_bytes + bytes.len() <= MAX_CACHE_KEY_BYTES
        {
            self.cache_key_bytes += bytes.len();
            self.cache.insert(bytes.into(), c);
        }
    }

    fn clear(&mut self) {
        self.short.clear();
        self.front.clear();
        self.cache.clear();
        self.cache_key_bytes = 0;
    }

    /// The count of a piece of 16 bytes or more, from the cache or counted and stored.
    fn long_count(&mut self, bytes: &[u8], count: impl FnOnce(&mut Scratch) -> usize) -> usize {
        if let Some(&c) = self.cache.get(bytes) {
            return c as usize;
        }
        let c = count(&mut self.scratch);
        if self.cache.len() >= MAX_CACHE_ENTRIES
            || self.cache_key_bytes + bytes.len() > MAX_CACHE_KEY_BYTES
        {
            self.cache.clear();
            self.cache_key_bytes = 0;
        }
        self.cache_key_bytes += bytes.len();
        self.cache
            .insert(bytes.into(), u32::try_from(c).unwrap_or(u32::MAX));
        c
    }
}

/// The exact `u128` key of a piece of at most 15 bytes.
#[inline]
fn short_key(bytes: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    buf[..bytes.len()].copy_from_slice(bytes);
    #[allow(clippy::cast_possible_truncation)]
    {
        buf[15] = bytes.len() as u8;
    }
    u128::from_le_bytes(buf)
}

/// [`short_key`] without a variable-length copy when `bytes` lies inside `text` with 16 bytes
/// to spare: one 16-byte load, masked. (A piece outside `text`'s memory cannot pass the range
/// check, and inside it the bytes at that address are the piece's.)
#[inline]
fn short_key_in(text: &str, bytes: &[u8]) -> u128 {
    let off = (bytes.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    match off
        .checked_add(16)
        .and_then(|end| text.as_bytes().get(off..end))
    {
        Some(chunk) => {
            let mut buf = [0u8; 16];
            buf.copy_from_slice(chunk);
            let len = bytes.len();
            let mask = (1u128 << (8 * len)) - 1;
            (u128::from_le_bytes(buf) & mask) | ((len as u128) << 120)
        }
        None => short_key(bytes),
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Slots of the direct-mapped front cache (a power of two; 32 bytes a slot).
const FRONT_SLOTS: usize = 1 << 12;

/// The front-cache slot of a short key.
#[inline]
fn front_slot(key: u128) -> usize {
    #[allow(clippy::cast_possible_truncation)]
    let h = ((key as u64) ^ ((key >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 52) as usize & (FRONT_SLOTS - 1)
}

/// The count of a piece of at most 15 bytes: the front cache, then the map, else `count()`
/// stored in both (the map is cleared when full).
fn cached_short(local: &mut Local, key: u128, count: impl FnOnce(&mut Scratch) -> usize) -> usize {
    if local.front.is_empty() {
        local.front = vec![(0, 0); FRONT_SLOTS];
    }
    let slot = front_slot(key);
    let entry = local.front[slot];
    if entry.0 == key {
        return entry.1 as usize;
    }
    let c = if let Some(&c) = local.short.get(&key) {
        c
    } else {
        let c = u32::try_from(count(&mut local.scratch)).unwrap_or(u32::MAX);
        if local.short.len() >= MAX_CACHE_ENTRIES {
            local.short.clear();
        }
        local.short.insert(key, c);
        c
    };
    local.front[slot] = (key, c);
    c as usize
}

fn count_pieces(plan: &FastPlan, split: &str, at_start: bool, local: &mut Local) -> usize {
    let mut n = 0usize;
    let (uid, fill) = (local.uid, local.fill_encode);
    // The count of one piece or part, from the caches or merged (through the encode cache
    // when there is one, see `count_through_encode_cache`) and stored.
    let count_one = |local: &mut Local, piece: &str| -> usize {
        let merge = |scratch: &mut Scratch| {
            if fill {
                encode::count_through_encode_cache(uid, plan, split, piece)
            } else {
                plan.bpe.count(piece, scratch)
            }
        };
        let bytes = piece.as_bytes();
        if bytes.len() < 16 {
            cached_short(local, short_key_in(split, bytes), merge)
        } else if bytes.len() <= MAX_CACHED_PIECE {
            local.long_count(bytes, merge)
        } else {
            plan.bpe.count(piece, &mut local.scratch)
        }
    };
    plan.for_each_piece(split, at_start, |whole| {
        if whole.len() == 1 && plan.byte_level {
            n += 1;
            return;
        }
        // A piece not in the caches is counted by its parts (see `Bpe::for_each_part`), each
        // cached, and then cached whole too.
        if let Some(c) = local.peek(split, whole) {
            n += c;
            return;
        }
        let mut total = 0usize;
        let mut cut = false;
        plan.bpe.for_each_part(whole, |part| {
            cut |= part.len() < whole.len();
            total += if cut {
                count_one(local, part)
            } else {
                count_one(local, whole)
            };
        });
        // Unique long pieces are not kept whole (they would push their parts out).
        if cut && whole.len() < 16 {
            local.store(split, whole, total);
        }
        n += total;
    });
    n
}

/// Leftmost-longest search for added tokens. Few patterns (the usual case) go to the SIMD
/// "Teddy" searcher, which checks a fingerprint of the first bytes; an automaton with a
/// start-byte prefilter stops at every space when patterns start with one (Phi-2's runs of
/// spaces), which made the search a tenth of the counting time.
enum Matcher {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
}

impl Matcher {
    fn new(tokens: &[&AddedToken]) -> Result<Self> {
        let patterns = || tokens.iter().map(|t| t.content.as_str());
        let packed = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostLongest)
            .builder()
            .extend(patterns())
            .build();
        if let Some(searcher) = packed {
            return Ok(Matcher::Packed(searcher));
        }
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns())
            .map(Matcher::Automaton)
            .map_err(|e| SftError::Tokenizer(format!("cannot index added tokens: {e}")))
    }

    /// Matches as (pattern index, start, end), leftmost-longest, non-overlapping.
    fn find_iter<'a>(
        &'a self,
        text: &'a str,
    ) -> Box<dyn Iterator<Item = (usize, usize, usize)> + 'a> {
        match self {
            Matcher::Packed(s) => Box::new(
                s.find_iter(text)
                    .map(|m| (m.pattern().as_usize(), m.start(), m.end())),
            ),
            Matcher::Automaton(ac) => Box::new(
                ac.find_iter(text)
                    .map(|m| (m.pattern().as_usize(), m.start(), m.end())),
            ),
        }
    }
}

/// A part of a split: an added token, or text between added tokens.
enum Seg<'a> {
    Added,
    Text(&'a str),
}

/// Added tokens of one kind (raw or normalised), matched leftmost-longest like
/// `tokenizers::AddedVocabulary::find_matches`, with its `lstrip`/`rstrip` whitespace rules.
struct AddedSet {
    matcher: Option<Matcher>,
    /// Per pattern: (lstrip, rstrip, single_word).
    flags: Vec<(bool, bool, bool)>,
    /// Any match sends the row to the reference path.
    fallback_on_match: bool,
}

impl AddedSet {
    fn new<'a>(
        tokens: impl Iterator<Item = &'a AddedToken>,
        fallback_on_match: bool,
    ) -> Result<Self> {
        let tokens: Vec<&AddedToken> = tokens.filter(|t| !t.content.is_empty()).collect();
        let flags = tokens
            .iter()
            .map(|t| (t.lstrip, t.rstrip, t.single_word))
            .collect();
        let matcher = if tokens.is_empty() {
            None
        } else {
            Some(Matcher::new(&tokens)?)
        };
        Ok(AddedSet {
            matcher,
            flags,
            fallback_on_match,
        })
    }

    /// Feed the segments of `text` to `f`; `false` when the row needs the reference path.
    fn split<'t>(&self, text: &'t str, f: &mut dyn FnMut(Seg<'t>)) -> bool {
        self.split_spans(text, &mut |span| match span {
            encode::Span::Text(a, b) => f(Seg::Text(&text[a..b])),
            encode::Span::Added(..) => f(Seg::Added),
        })
    }
}

/// The text of `path` (a `tokenizer.json`) or of `path/tokenizer.json` (a model directory).
///
/// # Errors
/// [`SftError::Io`] naming the file.
pub fn read_tokenizer_json(path: &std::path::Path) -> Result<String> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    std::fs::read_to_string(&file)
        .map_err(|e| SftError::io(format!("reading tokenizer {}", file.display()), e))
}

/// Content key of a `tokenizer.json`.
pub fn content_key(json: &str) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(json.as_bytes()))
}

impl Encoder {
    /// Load from the text of a `tokenizer.json`. Padding and truncation are cleared.
    ///
    /// # Errors
    /// [`SftError::Tokenizer`] when the JSON is not a valid tokenizer.
    pub fn from_json(json: &str) -> Result<Self> {
        let mut reference = Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| SftError::Tokenizer(format!("cannot load tokenizer.json: {e}")))?;
        reference
            .with_truncation(None)
            .map_err(|e| SftError::Tokenizer(format!("cannot clear truncation: {e}")))?;
        reference.with_padding(None);
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| SftError::Tokenizer(format!("tokenizer.json is not JSON: {e}")))?;
        let (fast, fast_reason) = match FastPlan::build(&value) {
            Ok(plan) => (Some(plan), None),
            Err(why) => (None, Some(why)),
        };
        let mut tokens: Vec<AddedToken> =
            reference.get_added_tokens_decoder().into_values().collect();
        tokens.sort_by(|a, b| a.content.cmp(&b.content));
        let max_added_bytes = tokens.iter().map(|t| t.content.len()).max().unwrap_or(0);
        // With a normaliser, `normalized: true` tokens match their normalised form; we do not
        // re-derive it and send such rows to the reference path instead.
        let has_norm = fast.as_ref().is_some_and(|p| !p.norm.is_empty());
        let added_raw = AddedSet::new(tokens.iter().filter(|t| !t.normalized), false)?;
        let added_norm = AddedSet::new(tokens.iter().filter(|t| t.normalized), has_norm)?;
        let special_added = reference
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        Ok(Encoder {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            key: content_key(json),
            reference,
            fast,
            fast_reason,
            added_raw,
            added_norm,
            special_added,
            max_added_bytes,
            encode_plan: std::sync::OnceLock::new(),
        })
    }

    /// Load from a `tokenizer.json` file or a model directory that contains one.
    ///
    /// # Errors
    /// [`SftError::Io`] when the file cannot be read, [`SftError::Tokenizer`] when it is invalid.
    pub fn from_path(path: &std::path::Path) -> Result<Self> {
        Self::from_json(&read_tokenizer_json(path)?)
    }

    /// The contents of the added tokens marked `special`, longest first.
    #[must_use]
    pub fn special_tokens(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .reference
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special)
            .map(|t| t.content)
            .collect();
        v.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        v
    }

    /// The content key (hex xxh3-128 of the JSON).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Why the fast path is off for this tokenizer (`None` when it is on).
    pub fn fast_path_disabled_reason(&self) -> Option<&str> {
        self.fast_reason.as_deref()
    }

    /// Count with the reference pipeline (`tokenizers`' `encode_fast`).
    ///
    /// # Errors
    /// [`SftError::Tokenizer`] when the tokenizer fails on this text.
    pub fn count_reference(&self, text: &str, add_special_tokens: bool) -> Result<usize> {
        self.reference
            .encode_fast(text, add_special_tokens)
            .map(|e| e.len())
            .map_err(|e| SftError::Tokenizer(e.to_string()))
    }

    /// Token ids with the reference pipeline.
    ///
    /// # Errors
    /// [`SftError::Tokenizer`] when the tokenizer fails on this text.
    pub fn encode_reference(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.reference
            .encode_fast(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| SftError::Tokenizer(e.to_string()))
    }

    /// Exact number of tokens in `text`.
    ///
    /// # Errors
    /// [`SftError::Tokenizer`] when the reference pipeline fails on this text.
    pub fn count(&self, text: &str, add_special_tokens: bool) -> Result<usize> {
        let Some(plan) = &self.fast else {
            return self.count_reference(text, add_special_tokens);
        };
        if text.is_empty() {
            return self.count_reference(text, add_special_tokens);
        }
        let special = if add_special_tokens {
            self.special_added
        } else {
            0
        };
        let fast = LOCAL.with(|cell| {
            let mut local = cell.borrow_mut();
            let local = &mut *local;
            if local.uid != self.uid {
                local.uid = self.uid;
                local.clear();
                local.fill_encode = self.encode_plan_ready();
            }
            self.count_fast(plan, text, local)
        });
        match fast {
            Some(n) => Ok(n + special),
            None => self.count_reference(text, add_special_tokens),
        }
    }

    /// The fast pipeline: added tokens on raw text, normalise each remaining split, added tokens
    /// on normalised text, then pieces. `None` when a row needs the reference path.
    fn count_fast(&self, plan: &FastPlan, text: &str, local: &mut Local) -> Option<usize> {
        let mut n = 0usize;
        let mut ok = true;
        self.added_raw
            .split(text, &mut |seg| match seg {
                Seg::Added => n += 1,
                Seg::Text(t) => {
                    let norm = plan.normalize(t);
                    ok &= self.added_norm.split(&norm, &mut |seg2| match seg2 {
                        Seg::Added => n += 1,
                        // At byte 0 of the input only if it points there (the normaliser of a
                        // `Metaspace` plan is empty, so `norm` borrows `text`).
                        Seg::Text(t2) => {
                            n += count_pieces(plan, t2, t2.as_ptr() == text.as_ptr(), local);
                        }
                    });
                }
            })
            .then_some(())?;
        ok.then_some(n)
    }

    /// Bounds `(lower, upper)` on the token count of `text` that hold without tokenising, or
    /// `None` when no bound is proven for this tokenizer and text.
    ///
    /// Proven for byte-level BPE on text the normaliser leaves alone (no normaliser, or ASCII
    /// text under NFC/NFKC): every token covers between 1 and `max_token_bytes` bytes, added
    /// tokens included.
    pub fn count_bounds(&self, text: &str) -> Option<(usize, usize)> {
        let plan = self.fast.as_ref()?;
        // Tokens that absorb neighbouring whitespace (lstrip/rstrip) can cover more bytes than
        // their text, which would break the lower bound.
        let strips = self
            .added_raw
            .flags
            .iter()
            .chain(&self.added_norm.flags)
            .any(|f| f.0 || f.1);
        if !plan.byte_level || plan.add_prefix_space || strips {
            return None;
        }
        let identity = plan
            .norm
            .iter()
            .all(|s| matches!(s, spec::NormStep::Nfc | spec::NormStep::Nfkc) && text.is_ascii());
        if !identity {
            return None;
        }
        let n = text.len();
        let per_token = plan.max_token_bytes.max(self.max_added_bytes).max(1);
        Some((n.div_ceil(per_token), n))
    }

    /// Count every row in parallel; `None` rows stay `None`.
    ///
    /// # Errors
    /// The first row (in row order) the tokenizer fails on, as [`SftError::Tokenizer`] naming
    /// the row, or [`SftError::Interrupted`].
    pub fn count_batch(
        &self,
        texts: &[Option<&str>],
        add_special_tokens: bool,
    ) -> Result<Vec<Option<u32>>> {
        let mut out = vec![None; texts.len()];
        parallel::install(|| {
            out.par_chunks_mut(CHUNK)
                .zip(texts.par_chunks(CHUNK))
                .enumerate()
                .try_for_each(|(ci, (dst, src))| -> Result<()> {
                    parallel::check_cancel()?;
                    for (i, (d, t)) in dst.iter_mut().zip(src).enumerate() {
                        if let Some(t) = t {
                            let n = self.count(t, add_special_tokens).map_err(|e| {
                                SftError::Tokenizer(format!("row {}: {e}", ci * CHUNK + i))
                            })?;
                            *d = Some(u32::try_from(n).unwrap_or(u32::MAX));
                        }
                    }
                    Ok(())
                })
        })??;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
