//! Token ids with byte offsets, for rendering (chat templates map character spans to tokens).
//!
//! Offsets are byte ranges into the input text, exactly as the reference pipeline (the
//! `tokenizers` crate's `Tokenizer::encode`) reports them; the ids are its ids.
//!
//! **Fast path** (byte-level BPE: GPT-2, cl100k / Llama-3, Qwen2, Phi-2). It runs the counting
//! pipeline's steps and keeps positions: added tokens on raw text (leftmost-longest, with
//! `lstrip`/`rstrip`), the normaliser, added tokens on normalised text (by their normalised
//! content, like the reference's trie), the pre-tokeniser's pieces, and BPE per piece through
//! a per-thread cache of piece → ids (an arena of ids and two maps into it: short pieces keyed
//! by a packed `u128` behind a direct-mapped front, like the count caches; all cleared when it
//! outgrows [`MAX_ARENA_IDS`] ids or the count caches' entry and key-byte budgets). A model
//! token covers `token_bytes[id]` bytes of its piece (the length of its byte-level spelling, a
//! table built on first use), so offsets follow from the lengths. The reference maps every
//! byte of a char to the whole char, so a token that covers part of a multi-byte char gets the
//! char's full range: a token's offsets are (start of the char holding its first byte, end of
//! the char holding its last byte). With `ByteLevel(add_prefix_space)` the added space maps to
//! the first char of its split. An added token's offsets are its match, including the
//! whitespace `lstrip`/`rstrip` absorbed. A post-processor that adds tokens (templates) runs
//! through the crate on the fast ids and offsets (its tokens get `(0, 0)`).
//!
//! **Exactness.** A row takes the reference path whenever the fast path could differ: the
//! normaliser changes a split (offsets would need its alignments; our NFC step proves most text
//! unchanged, our NFKC/NFD/NFKD steps only ASCII), a `single_word` added token matches, or the
//! token lengths of a piece do not add up to the piece (a guard; never seen). Whole tokenizers
//! fall back when they are neither byte-level nor SentencePiece-style BPE, when a
//! post-processor trims offsets (it reads token
//! strings), when added tokens share a content, or when special tokens are split
//! (`encode_special_tokens`). [`Encoder::encode_fast_path_disabled_reason`] says why.
//!
//! **SentencePiece-style BPE** (Llama-2, Phi-3: `▁` for spaces, byte fallback) shares the
//! added-token steps and the piece cache, and maps offsets through its `▁` normalisation in
//! [`spbpe`] (both the file's Prepend/Replace normaliser and transformers' Metaspace rewrite).
//!
//! Cost: O(bytes) splitting and offsets, BPE only for pieces not in the cache; results depend
//! only on the row (the cache holds exact results), so they are the same for any thread count.

use std::borrow::Cow;
use std::cell::RefCell;

use rustc_hash::FxHashMap;
use serde_json::Value;
use tokenizers::{AddedToken, Encoding, PostProcessorWrapper};

use super::bpe::Scratch;
use super::spec::FastPlan;
use super::{
    short_key_in, AddedSet, Encoder, FRONT_SLOTS, MAX_CACHED_PIECE, MAX_CACHE_ENTRIES,
    MAX_CACHE_KEY_BYTES,
};
use crate::error::{Result, SftError};

/// Ids per thread in the piece cache's arena before the cache is cleared (32 MiB; with the
/// maps at their entry and key-byte limits, a thread's cache stays near 100 MiB at most).
const MAX_ARENA_IDS: usize = 8 << 20;

/// Token ids and their byte offsets.
pub type IdsOffsets = (Vec<u32>, Vec<(usize, usize)>);

#[path = "spbpe.rs"]
mod spbpe;

/// What the fast encoder needs besides the [`FastPlan`]; built on the first call.
pub(super) struct EncodePlan {
    /// Bytes of (normalised) text each model token covers, by id; 0 for ids BPE never emits.
    token_bytes: Vec<u32>,
    /// SentencePiece-style BPE: how its `▁` are placed (`None`: byte-level).
    sp: Option<spbpe::SpMode>,
    /// Added tokens matched on raw text, and the id of each pattern.
    added_raw: AddedSet,
    raw_ids: Vec<u32>,
    /// Added tokens matched on normalised text, and the id of each pattern.
    added_norm: AddedSet,
    norm_ids: Vec<u32>,
    /// Whether the post-processor can change ids or offsets (run it through the crate).
    post_process: bool,
    /// The post-processor is a template whose single-sequence form is sequence A once plus
    /// special tokens: without special tokens it leaves ids and offsets alone
    /// (`TemplateProcessing::apply_template` drops its special pieces then), so it is skipped.
    specials_only: bool,
}

impl EncodePlan {
    fn build(enc: &Encoder) -> std::result::Result<Self, String> {
        let plan = enc.fast.as_ref().ok_or("the counting fast path is off")?;
        let sp = if plan.byte_level {
            None
        } else {
            Some(spbpe::SpMode::of(plan)?)
        };
        let reference = &enc.reference;
        if reference.get_encode_special_tokens() {
            return Err("special tokens are split (encode_special_tokens)".into());
        }
        let specials_only = match reference.get_post_processor() {
            Some(p @ PostProcessorWrapper::Template(_)) => {
                let v = serde_json::to_value(p).map_err(|e| e.to_string())?;
                let single = v.get("single").and_then(Value::as_array);
                let seqs: Vec<&Value> = single
                    .into_iter()
                    .flatten()
                    .filter_map(|piece| piece.get("Sequence"))
                    .collect();
                matches!(seqs.as_slice(), [s] if s.get("id").and_then(Value::as_str) == Some("A"))
            }
            _ => false,
        };
        let post_process = match reference.get_post_processor() {
            None => false,
            Some(PostProcessorWrapper::ByteLevel(b)) if !b.trim_offsets => false,
            Some(p) => {
                let json = serde_json::to_string(p).map_err(|e| e.to_string())?;
                if json.contains("\"trim_offsets\":true") {
                    return Err("the post-processor trims offsets".into());
                }
                true
            }
        };
        // Token byte lengths from the merges (no copy of the 100k+ vocabulary strings); if the
        // ids are not contiguous, from the vocabulary's byte-level spellings (one char per byte).
        // Tokens outside the byte alphabet are never produced from bytes, and the per-piece
        // length check guards the rest.
        let size = reference.get_vocab_size(false);
        let token_bytes = match plan.bpe.byte_lengths(size) {
            Some(t) => t,
            None if sp.is_some() => plan
                .bpe
                .char_lengths(size)
                .ok_or("a token id has two different lengths")?,
            None => {
                let vocab = reference.get_vocab(false);
                let size = vocab.values().max().map_or(0, |&m| m as usize + 1);
                let mut token_bytes = vec![0u32; size];
                for (token, &id) in &vocab {
                    token_bytes[id as usize] = u32::try_from(token.chars().count()).unwrap_or(0);
                }
                token_bytes
            }
        };
        // Normalised tokens match their normalised content, as the reference's trie (built
        // after the normaliser when loading) does.
        let mut raw: Vec<(u32, AddedToken)> = Vec::new();
        let mut norm: Vec<(u32, AddedToken)> = Vec::new();
        for (id, mut t) in reference.get_added_tokens_decoder() {
            if t.normalized {
                t.content = plan.normalize(&t.content).into_owned();
                norm.push((id, t));
            } else {
                raw.push((id, t));
            }
        }
        let set = |v: &mut Vec<(u32, AddedToken)>| {
            v.retain(|(_, t)| !t.content.is_empty());
            v.sort_by(|a, b| a.1.content.cmp(&b.1.content));
            if v.windows(2).any(|w| w[0].1.content == w[1].1.content) {
                return Err("added tokens share a content".to_string());
            }
            let ids: Vec<u32> = v.iter().map(|(id, _)| *id).collect();
            let set = AddedSet::new(v.iter().map(|(_, t)| t), false).map_err(|e| e.to_string())?;
            Ok((set, ids))
        };
        let (added_raw, raw_ids) = set(&mut raw)?;
        let (added_norm, norm_ids) = set(&mut norm)?;
        if sp.is_some_and(spbpe::SpMode::normalizes) && !norm_ids.is_empty() {
            return Err("normalized added tokens under a ▁ normaliser".into());
        }
        Ok(EncodePlan {
            token_bytes,
            sp,
            added_raw,
            raw_ids,
            added_norm,
            norm_ids,
            post_process,
            specials_only,
        })
    }
}

/// A part of a split, as byte ranges: an added token (pattern, start, end), or text.
pub(super) enum Span {
    Added(usize, usize, usize),
    Text(usize, usize),
}

impl AddedSet {
    /// [`AddedSet::split`] with positions, like `AddedVocabulary::find_matches`; `false` when
    /// the row needs the reference path.
    pub(super) fn split_spans(&self, text: &str, f: &mut dyn FnMut(Span)) -> bool {
        let Some(matcher) = &self.matcher else {
            f(Span::Text(0, text.len()));
            return true;
        };
        let mut offset = 0;
        for (pattern, m_start, m_end) in matcher.find_iter(text) {
            let (lstrip, rstrip, single_word) = self.flags[pattern];
            if self.fallback_on_match || single_word {
                return false;
            }
            let mut start = m_start;
            let mut stop = m_end;
            if lstrip {
                let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
                start = trimmed.max(offset);
            }
            if rstrip {
                stop = text.len() - text[stop..].trim_start_matches(char::is_whitespace).len();
            }
            if offset < start {
                f(Span::Text(offset, start));
            }
            f(Span::Added(pattern, start, stop));
            offset = stop;
        }
        if offset < text.len() {
            f(Span::Text(offset, text.len()));
        }
        true
    }
}

/// Per-thread piece → ids cache: ids live in `arena`, the maps hold (start, len) into it.
#[derive(Default)]
struct EncLocal {
    uid: u64,
    /// Direct-mapped front for `short` (the frequent pieces hit here without probing the large
    /// map); empty slots hold key 0, which no piece has.
    front: Vec<(u128, (u32, u32))>,
    short: FxHashMap<u128, (u32, u32)>,
    long: FxHashMap<Box<[u8]>, (u32, u32)>,
    long_key_bytes: usize,
    arena: Vec<u32>,
    /// Ids of a piece too long to cache.
    tmp: Vec<u32>,
    /// A SentencePiece split's normalised text.
    norm: String,
    scratch: Scratch,
}

thread_local! {
    static ENC_LOCAL: RefCell<EncLocal> = RefCell::new(EncLocal::default());
}

impl EncLocal {
    fn clear(&mut self) {
        self.front.clear();
        self.short.clear();
        self.long.clear();
        self.long_key_bytes = 0;
        self.arena.clear();
    }

    /// Make room for `ids` more ids and one more entry of `key_bytes` (clearing the cache when
    /// it is full).
    fn room(&mut self, ids: usize, key_bytes: usize) {
        if self.arena.len() + ids > MAX_ARENA_IDS
            || self.short.len() >= MAX_CACHE_ENTRIES
            || self.long.len() >= MAX_CACHE_ENTRIES
            || self.long_key_bytes + key_bytes > MAX_CACHE_KEY_BYTES
        {
            self.clear();
        }
    }

    /// Whether `ids` more ids of a piece of `len` bytes fit without clearing.
    fn has_room(&self, ids: usize, len: usize) -> bool {
        let key_bytes = if len < 16 { 0 } else { len };
        self.arena.len() + ids <= MAX_ARENA_IDS
            && self.short.len() < MAX_CACHE_ENTRIES
            && self.long.len() < MAX_CACHE_ENTRIES
            && self.long_key_bytes + key_bytes <= MAX_CACHE_KEY_BYTES
    }

    /// The front-cache slot of a short key.
    #[inline]
    fn slot(key: u128) -> usize {
        #[allow(clippy::cast_possible_truncation)]
        let h = ((key as u64) ^ ((key >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 52) as usize & (FRONT_SLOTS - 1)
    }

    /// The cached ids of `piece` (a piece of `hay`) as a range of the arena.
    fn lookup(&mut self, hay: &str, piece: &str) -> Option<(u32, u32)> {
        let bytes = piece.as_bytes();
        if bytes.len() < 16 {
            let key = short_key_in(hay, bytes);
            let slot = Self::slot(key);
            if let Some(&(k, r)) = self.front.get(slot) {
                if k == key {
                    return Some(r);
                }
            }
            let r = *self.short.get(&key)?;
            if let Some(f) = self.front.get_mut(slot) {
                *f = (key, r);
            }
            Some(r)
        } else if bytes.len() <= MAX_CACHED_PIECE {
            self.long.get(bytes).copied()
        } else {
            None
        }
    }

    /// Store `ids` as the ids of `piece` (a piece of `hay`; not cached when too long).
    fn insert(&mut self, hay: &str, piece: &str, ids: &[u32]) {
        let bytes = piece.as_bytes();
        if bytes.len() > MAX_CACHED_PIECE {
            return;
        }
        let key_bytes = if bytes.len() < 16 { 0 } else { bytes.len() };
        self.room(ids.len(), key_bytes);
        let start = self.arena.len();
        self.arena.extend_from_slice(ids);
        #[allow(clippy::cast_possible_truncation)]
        let r = (start as u32, ids.len() as u32);
        if bytes.len() < 16 {
            let key = short_key_in(hay, bytes);
            self.short.insert(key, r);
            if self.front.is_empty() {
                self.front = vec![(0, (0, 0)); FRONT_SLOTS];
            }
            self.front[Self::slot(key)] = (key, r);
        } else {
            self.long_key_bytes += bytes.len();
            self.long.insert(bytes.into(), r);
        }
    }

    /// The ids of `piece` (a piece of `hay`), from the cache or merged and stored. A piece
    /// not in the cache is merged by its parts (`Bpe::for_each_part`), each from the cache or
    /// merged and stored, and then stored whole too.
    fn ids_of(&mut self, plan: &FastPlan, hay: &str, piece: &str) -> &[u32] {
        if let Some((s, l)) = self.lookup(hay, piece) {
            return &self.arena[s as usize..(s + l) as usize];
        }
        let mut ids = std::mem::take(&mut self.tmp);
        ids.clear();
        let mut parts = 0usize;
        plan.bpe.for_each_part(piece, |part| {
            parts += 1;
            if parts > 1 || part.len() < piece.len() {
                match self.lookup(hay, part) {
                    Some((s, l)) => {
                        ids.extend_from_slice(&self.arena[s as usize..(s + l) as usize])
                    }
                    None => {
                        let from = ids.len();
                        plan.bpe.encode(part, &mut ids, &mut self.scratch);
                        let part_ids = ids[from..].to_vec();
                        self.insert(hay, part, &part_ids);
                    }
                }
            } else {
                plan.bpe.encode(part, &mut ids, &mut self.scratch);
            }
        });
        // A piece made of cut parts is kept whole only when short and while there is room:
        // long ones are mostly unique (a Chinese clause), and clearing would drop the parts.
        if parts == 1 || (piece.len() < 16 && self.has_room(ids.len(), piece.len())) {
            self.insert(hay, piece, &ids);
        }
        self.tmp = ids;
        &self.tmp
    }
}

/// The token count of `piece` (a piece of `hay`) merged through the encode cache of tokenizer
/// `uid`, which this fills: a length filter's counting leaves the pieces merged for a render of
/// the same texts later in the process (the count caches hold counts, not ids). Same result as
/// `plan.bpe.count(piece)`. The cost: counting also holds the encode cache (bounded by
/// [`MAX_ARENA_IDS`] and the entry limits, ~100 MiB per thread at most).
pub(super) fn count_through_encode_cache(
    uid: u64,
    plan: &FastPlan,
    hay: &str,
    piece: &str,
) -> usize {
    ENC_LOCAL.with(|cell| {
        let mut local = cell.borrow_mut();
        if local.uid != uid {
            local.clear();
            local.uid = uid;
        }
        local.ids_of(plan, hay, piece).len()
    })
}

/// Start of the char that holds byte `i` of `text`.
#[inline]
fn char_start(text: &[u8], mut i: usize) -> usize {
    while i > 0 && text.get(i).is_some_and(|&b| b & 0xC0 == 0x80) {
        i -= 1;
    }
    i
}

/// End of the char that holds byte `i` of `text`.
#[inline]
fn char_end(text: &[u8], i: usize) -> usize {
    let mut e = i + 1;
    while text.get(e).is_some_and(|&b| b & 0xC0 == 0x80) {
        e += 1;
    }
    e
}

/// Output buffers and the row's text.
struct Out<'a> {
    text: &'a [u8],
    ids: Vec<u32>,
    offsets: Vec<(usize, usize)>,
}

impl EncodePlan {
    /// The fast pipeline over one row; `false` when it needs the reference path.
    fn encode_row(&self, plan: &FastPlan, text: &str, local: &mut EncLocal, out: &mut Out) -> bool {
        let mut ok = true;
        let split_ok = self.added_raw.split_spans(text, &mut |span| {
            if !ok {
                return;
            }
            match span {
                Span::Added(p, s, e) => {
                    out.ids.push(self.raw_ids[p]);
                    out.offsets.push((s, e));
                }
                Span::Text(s, e) => {
                    let seg = &text[s..e];
                    // A ▁ normaliser is mapped by `encode_sp_split` itself.
                    if self.sp.is_none() && matches!(plan.normalize(seg), Cow::Owned(_)) {
                        ok = false;
                        return;
                    }
                    let mut inner = true;
                    let split_ok = self.added_norm.split_spans(seg, &mut |span2| {
                        if !inner {
                            return;
                        }
                        match span2 {
                            Span::Added(p, s2, e2) => {
                                out.ids.push(self.norm_ids[p]);
                                out.offsets.push((s + s2, s + e2));
                            }
                            Span::Text(s2, e2) => {
                                inner = self.encode_split(plan, text, s + s2, s + e2, local, out);
                            }
                        }
                    });
                    ok = split_ok && inner;
                }
            }
        });
        split_ok && ok
    }

    /// Pieces of the split `text[start..end]` (normalisation is the identity here).
    fn encode_split(
        &self,
        plan: &FastPlan,
        text: &str,
        start: usize,
        end: usize,
        local: &mut EncLocal,
        out: &mut Out,
    ) -> bool {
        if let Some(mode) = self.sp {
            return self.encode_sp_split(mode, plan, start, end, local, out);
        }
        let split = &text[start..end];
        let mut ok = true;
        if plan.add_prefix_space && !split.is_empty() && !split.starts_with(' ') {
            // The added space shares the alignment of the split's first char.
            let hay = format!(" {split}");
            plan.splitter.for_each_piece(&hay, |piece| {
                let q = piece.as_ptr() as usize - hay.as_ptr() as usize;
                ok &= self.emit(
                    plan,
                    &hay,
                    piece,
                    q,
                    |q| start + q.saturating_sub(1),
                    local,
                    out,
                );
            });
        } else {
            plan.splitter.for_each_piece(split, |piece| {
                let q = piece.as_ptr() as usize - split.as_ptr() as usize;
                ok &= self.emit(plan, split, piece, q, |q| start + q, local, out);
            });
        }
        ok
    }

    /// Ids and offsets of one piece at byte `q0` of `hay`; `map` takes a byte of `hay` to
    /// its byte in the row.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn emit(
        &self,
        plan: &FastPlan,
        hay: &str,
        piece: &str,
        q0: usize,
        map: impl Fn(usize) -> usize,
        local: &mut EncLocal,
        out: &mut Out,
    ) -> bool {
        let ids = local.ids_of(plan, hay, piece);
        let mut q = q0;
        for &id in ids {
            let len = self.token_bytes.get(id as usize).copied().unwrap_or(0) as usize;
            if len == 0 {
                return false;
            }
            let (first, last) = (map(q), map(q + len - 1));
            out.offsets
                .push((char_start(out.text, first), char_end(out.text, last)));
            q += len;
        }
        out.ids.extend_from_slice(ids);
        q == q0 + piece.len()
    }
}

impl Encoder {
    /// Whether the fast encoder (and so its piece cache) is available, building it if needed.
    pub(super) fn encode_plan_ready(&self) -> bool {
        self.encode_plan().is_ok()
    }

    fn encode_plan(&self) -> std::result::Result<&EncodePlan, &str> {
        self.encode_plan
            .get_or_init(|| EncodePlan::build(self))
            .as_ref()
            .map_err(String::as_str)
    }

    /// Why [`Encoder::encode_offsets`] always uses the reference pipeline for this tokenizer
    /// (`None` when it has a fast path).
    pub fn encode_fast_path_disabled_reason(&self) -> Option<&str> {
        self.encode_plan().err()
    }

    /// Token ids of `text` and each token's byte range in `text`, identical to the reference
    /// pipeline's (`tokenizers`' `encode`); special tokens the post-processor adds get `(0, 0)`.
    ///
    /// # Errors
    /// [`SftError::Tokenizer`] when the tokenizer fails on this text.
    pub fn encode_offsets(&self, text: &str, add_special_tokens: bool) -> Result<IdsOffsets> {
        let Some(((ids, offsets), post_process)) = self.encode_fast(text) else {
            return self.encode_offsets_reference(text, add_special_tokens);
        };
        let specials_only = self.encode_plan().is_ok_and(|p| p.specials_only);
        if !post_process || (specials_only && !add_special_tokens) {
            return Ok((ids, offsets));
        }
        let enc: Encoding = ids
            .into_iter()
            .zip(offsets)
            .map(|(id, o)| (id, String::new(), o, None, 0))
            .collect();
        let enc = self
            .reference
            .post_process(enc, None, add_special_tokens)
            .map_err(|e| SftError::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Ids, offsets and whether the post-processor must still run, from the fast path; `None`
    /// when this row or tokenizer needs the reference path.
    fn encode_fast(&self, text: &str) -> Option<(IdsOffsets, bool)> {
        let plan = self.fast.as_ref()?;
        let ep = self.encode_plan().ok()?;
        if text.is_empty() {
            return None;
        }
        let mut out = Out {
            text: text.as_bytes(),
            ids: Vec::with_capacity(text.len() / 3 + 4),
            offsets: Vec::with_capacity(text.len() / 3 + 4),
        };
        let ok = ENC_LOCAL.with(|cell| {
            let mut local = cell.borrow_mut();
            if local.uid != self.uid {
                local.clear();
                local.uid = self.uid;
            }
            ep.encode_row(plan, text, &mut local, &mut out)
        });
        ok.then_some(((out.ids, out.offsets), ep.post_process))
    }

    /// [`Encoder::encode_offsets`] through the reference pipeline only.
    ///
    /// # Errors
    /// [`SftError::Tokenizer`] when the tokenizer fails on this text.
    pub fn encode_offsets_reference(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<IdsOffsets> {
        let enc = self
            .reference
            .encode(text, add_special_tokens)
            .map_err(|e| SftError::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
