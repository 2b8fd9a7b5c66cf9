//! Byte-pair merging, the same algorithm as the `tokenizers` crate's `BPE` model.
//!
//! A word starts as one symbol per byte (byte-level vocabularies) or per char (SentencePiece-style
//! vocabularies with byte fallback and unknown-token fusing). Merges are applied in rank order,
//! leftmost first among equal ranks, through a binary heap of candidate pairs over a linked list
//! of symbols, exactly as `tokenizers::models::bpe::Word::merge_all` does (including its check
//! that skips stale heap entries). Cost: O(n log n) for a word of n initial symbols.
//!
//! We re-implement it (≈150 lines) rather than call `Model::tokenize`, because that allocates a
//! `String` per output token and takes a shared lock on its cache, which dominates the cost of
//! counting; the tests compare both on every fixture.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// Vocabulary and merges in id space.
#[derive(Debug)]
pub struct Bpe {
    /// (left id, right id) → (rank, merged id).
    merges: FxHashMap<u64, (u32, u32)>,
    /// The same for pairs of ids below 256 (every initial pair of a byte-level word), indexed
    /// `a << 8 | b`; rank `u32::MAX` = no merge. An array read instead of a hash probe.
    small: Box<[(u32, u32)]>,
    init: Init,
    /// With `ignore_merges`: whole-word vocabulary keyed by the word's raw bytes (byte-level
    /// keys decoded from GPT-2's byte → char spelling).
    ignore_merges_vocab: Option<FxHashMap<Box<[u8]>, u32>>,
}

/// How a word becomes its initial symbols.
#[derive(Debug)]
pub enum Init {
    /// Byte-level: every byte has a vocabulary id (the 256 mapped chars of GPT-2's alphabet).
    Bytes(Box<[u32; 256]>),
    /// Char-level: a vocabulary of single chars, optional byte fallback (`<0xHH>` ids), an
    /// optional unknown token and whether consecutive unknowns fuse into one.
    Chars {
        /// Single-char vocabulary entries.
        chars: FxHashMap<char, u32>,
        /// `<0xHH>` ids when the model has `byte_fallback` and all 256 exist.
        byte_fallback: Option<Box<[u32; 256]>>,
        /// The unknown token id, if any.
        unk: Option<u32>,
        /// Fuse consecutive unknown chars.
        fuse_unk: bool,
    },
}

/// Words of at most this many initial symbols use the scan path.
const SCAN_MAX: usize = 48;

#[inline]
fn key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

impl Bpe {
    /// (rank, merged id) of the pair, or `None`.
    #[inline]
    fn merge_of(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        if a < 256 && b < 256 {
            let v = self.small[((a << 8) | b) as usize];
            return (v.0 != u32::MAX).then_some(v);
        }
        self.merges.get(&key(a, b)).copied()
    }

    /// Every merge as `(rank, left, right, merged)`, in rank order.
    fn merges_by_rank(&self) -> Vec<(u32, u32, u32, u32)> {
        let mut merges: Vec<(u32, u32, u32, u32)> = self
            .merges
            .iter()
            .map(|(&k, &(rank, merged))| (rank, (k >> 32) as u32, k as u32, merged))
            .collect();
        merges.sort_unstable();
        merges
    }

    /// Build from merges given as id pairs in rank order (later duplicates win, like the
    /// reference, which collects them into a map).
    pub fn new(
        merges: impl IntoIterator<Item = (u32, u32, u32)>,
        init: Init,
        ignore_merges_vocab: Option<FxHashMap<Box<[u8]>, u32>>,
    ) -> Self {
        let mut map = FxHashMap::default();
        for (rank, (a, b, new_id)) in merges.into_iter().enumerate() {
            #[allow(clippy::cast_possible_truncation)]
            map.insert(key(a, b), (rank as u32, new_id));
        }
        let mut small = vec![(u32::MAX, 0u32); 1 << 16].into_boxed_slice();
        for (&k, &v) in &map {
            let (a, b) = (k >> 32, k & 0xffff_ffff);
            if a < 256 && b < 256 {
                #[allow(clippy::cast_possible_truncation)]
                {
                    small[((a << 8) | b) as usize] = v;
                }
            }
        }
        Bpe {
            merges: map,
            small,
            init,
            ignore_merges_vocab,
        }
    }

    /// Initial symbols of `word` appended to `out`.
    fn initial(&self, word: &str, out: &mut Vec<u32>) {
        match &self.init {
            Init::Bytes(table) => out.extend(word.bytes().map(|b| table[b as usize])),
            Init::Chars {
                chars,
                byte_fallback,
                unk,
                fuse_unk,
            } => {
                // Mirrors `BPE::merge_word`: a pending unknown is flushed only when a known char
                // follows (byte-fallback symbols do not flush it), so unknowns separated by
                // byte-fallback bytes still fuse.
                let mut pending_unk = false;
                for c in word.chars() {
                    if let Some(&id) = chars.get(&c) {
                        if pending_unk {
                            out.push(unk.unwrap_or(0));
                            pending_unk = false;
                        }
                        out.push(id);
                    } else if let Some(fb) = byte_fallback {
                        let mut buf = [0u8; 4];
                        for b in c.encode_utf8(&mut buf).bytes() {
                            out.push(fb[b as usize]);
                        }
                    } else if let Some(u) = unk {
                        if pending_unk && !fuse_unk {
                            out.push(*u);
                        }
                        pending_unk = true;
                    }
                }
                if pending_unk {
                    out.push(unk.unwrap_or(0));
                }
            }
        }
    }

    /// Merge `word` into token ids, appended to `out`.
    pub fn encode(&self, word: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        if word.is_empty() {
            return;
        }
        if let Some(vocab) = &self.ignore_merges_vocab {
            if let Some(&id) = vocab.get(word.as_bytes()) {
                out.push(id);
                return;
            }
        }
        let syms = &mut scratch.syms;
        syms.clear();
        self.initial(word, syms);
        let n = syms.len();
        if n < 2 {
            out.extend_from_slice(syms);
            return;
        }
        if n <= SCAN_MAX && !scratch.force_heap {
            self.merge_scan(syms, &mut scratch.ranks, &mut scratch.ids);
            out.extend_from_slice(syms);
            return;
        }
        // Linked list over positions; a merged-away symbol gets `len == 0` (here: id u32::MAX).
        let prev = &mut scratch.prev;
        let next = &mut scratch.next;
        prev.clear();
        next.clear();
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        for i in 0..n {
            prev.push(i as i32 - 1);
            next.push(if i + 1 < n { (i + 1) as i32 } else { -1 });
        }
        let heap = &mut scratch.heap;
        heap.clear();
        #[allow(clippy::cast_possible_truncation)]
        for i in 0..n - 1 {
            if let Some((rank, _)) = self.merge_of(syms[i], syms[i + 1]) {
                heap.push(Reverse(u64::from(rank) << 32 | i as u64));
            }
        }
        const DEAD: u32 = u32::MAX;
        while let Some(Reverse(entry)) = heap.pop() {
            #[allow(clippy::cast_possible_truncation)]
            let (rank, pos) = ((entry >> 32) as u32, (entry & 0xffff_ffff) as usize);
            if syms[pos] == DEAD || next[pos] < 0 {
                continue;
            }
            #[allow(clippy::cast_sign_loss)]
            let right = next[pos] as usize;
            // A stale entry: the pair at `pos` changed since it was pushed. The same rank means
            // the same pair (ranks are unique per pair), as in the reference's `new_id` check.
            let new_id = match self.merge_of(syms[pos], syms[right]) {
                Some((r, id)) if r == rank => id,
                _ => continue,
            };
            syms[pos] = new_id;
            syms[right] = DEAD;
            next[pos] = next[right];
            if next[right] >= 0 {
                #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                {
                    prev[next[right] as usize] = pos as i32;
                }
            }
            #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
            {
                if prev[pos] >= 0 {
                    let p = prev[pos] as usize;
                    if let Some((r, _)) = self.merge_of(syms[p], new_id) {
                        heap.push(Reverse(u64::from(r) << 32 | p as u64));
                    }
                }
                if next[pos] >= 0 {
                    let nx = next[pos] as usize;
                    if let Some((r, _)) = self.merge_of(new_id, syms[nx]) {
                        heap.push(Reverse(u64::from(r) << 32 | pos as u64));
                    }
                }
            }
        }
        out.extend(syms.iter().copied().filter(|&s| s != DEAD));
    }

    /// Short words: repeatedly merge the leftmost lowest-rank pair, keeping the rank of each
    /// adjacent pair in an array (one scan per merge). Same result as the heap; for a few dozen
    /// symbols the scan is cheaper than heap traffic.
    fn merge_scan(&self, syms: &mut Vec<u32>, ranks: &mut Vec<u32>, ids: &mut Vec<u32>) {
        // `ranks[i]` / `ids[i]`: rank and result of merging `syms[i]` with `syms[i + 1]`
        // (u32::MAX = no merge). Ranks live in their own array so the min scan vectorises.
        let lookup = |a: u32, b: u32| self.merge_of(a, b).unwrap_or((u32::MAX, 0));
        ranks.clear();
        ids.clear();
        for w in syms.windows(2) {
            let (r, id) = lookup(w[0], w[1]);
            ranks.push(r);
            ids.push(id);
        }
        loop {
            // Leftmost minimum: `min` then `position` (both branch-free over u32).
            let best = ranks.iter().copied().min().unwrap_or(u32::MAX);
            if best == u32::MAX {
                return;
            }
            let at = ranks.iter().position(|&r| r == best).unwrap_or(0);
            syms[at] = ids[at];
            syms.remove(at + 1);
            ranks.remove(at);
            ids.remove(at);
            if at > 0 {
                (ranks[at - 1], ids[at - 1]) = lookup(syms[at - 1], syms[at]);
            }
            if at < ranks.len() {
                (ranks[at], ids[at]) = lookup(syms[at], syms[at + 1]);
            }
        }
    }

    /// Merge with the heap path only (reference for the scan path in tests).
    #[cfg(test)]
    pub(crate) fn encode_heap_only(&self, word: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        let saved = scratch.force_heap;
        scratch.force_heap = true;
        self.encode(word, out, scratch);
        scratch.force_heap = saved;
    }

    /// For a byte-level model: the byte length of every token the merges can produce (`size`
    /// entries; 0 for ids no byte sequence produces). Each of the 256 byte ids is 1 byte and a
    /// merged id is as long as its two parts, filled in rank order (a part always has a lower
    /// rank than the merge using it). `None` for char-level models.
    pub(crate) fn byte_lengths(&self, size: usize) -> Option<Vec<u32>> {
        let Init::Bytes(bytes) = &self.init else {
            return None;
        };
        let mut len = vec![0u32; size];
        for &id in bytes.iter() {
            *len.get_mut(id as usize)? = 1;
        }
        let merges = self.merges_by_rank();
        for (_, a, b, merged) in merges {
            let l = len.get(a as usize)? + len.get(b as usize)?;
            let slot = len.get_mut(merged as usize)?;
            if *slot == 0 {
                *slot = l;
            }
        }
        Some(len)
    }

    /// For a char-level model: the bytes of word text each token covers (`size` entries; 0 for
    /// ids no word produces), or `None` when some id has two different lengths. A vocabulary
    /// char covers its UTF-8 length, a byte-fallback token 1 byte, a merged id its two parts:
    /// filled to a fixpoint (a merge may use an id that a higher-ranked merge produces), so
    /// the length of every id BPE can emit is known exactly. Without byte fallback the unknown
    /// token covers a variable number of chars: it and every id merged from it get 0, so a word
    /// that emits one fails the caller's length check. `ignore_merges` lookups return one id
    /// for the whole word, which the caller also checks against the word's length.
    pub(crate) fn char_lengths(&self, size: usize) -> Option<Vec<u32>> {
        const VARIABLE: u32 = u32::MAX;
        let Init::Chars {
            chars,
            byte_fallback,
            unk,
            ..
        } = &self.init
        else {
            return None;
        };
        let mut len = vec![0u32; size];
        // `Some(changed)`, `None` on a conflict; `VARIABLE` wins over any length.
        let set = |len: &mut [u32], id: u32, l: u32| -> Option<bool> {
            let slot = len.get_mut(id as usize)?;
            if *slot == l || *slot == VARIABLE {
                Some(false)
            } else if *slot == 0 || l == VARIABLE {
                *slot = l;
                Some(true)
            } else {
                None
            }
        };
        if let (None, Some(u)) = (byte_fallback, unk) {
            set(&mut len, *u, VARIABLE)?;
        }
        for (c, &id) in chars {
            #[allow(clippy::cast_possible_truncation)]
            set(&mut len, id, c.len_utf8() as u32)?;
        }
        for &id in byte_fallback.iter().flat_map(|t| t.iter()) {
            set(&mut len, id, 1)?;
        }
        // In rank order, so a well-formed file settles in one pass (and one to confirm).
        let merges = self.merges_by_rank();
        loop {
            let mut changed = false;
            for &(_, a, b, merged) in &merges {
                let (la, lb) = (*len.get(a as usize)?, *len.get(b as usize)?);
                if la == VARIABLE || lb == VARIABLE {
                    changed |= set(&mut len, merged, VARIABLE)?;
                } else if la > 0 && lb > 0 {
                    changed |= set(&mut len, merged, la + lb)?;
                }
            }
            if !changed {
                for l in &mut len {
                    if *l == VARIABLE {
                        *l = 0;
                    }
                }
                return Some(len);
            }
        }
    }

    /// Number of tokens `word` merges into.
    pub fn count(&self, word: &str, scratch: &mut Scratch) -> usize {
        let mut out = std::mem::take(&mut scratch.out);
        out.clear();
        self.encode(word, &mut out, scratch);
        let n = out.len();
        scratch.out = out;
        n
    }
}

/// Reusable buffers for [`Bpe::encode`] (one per thread).
#[derive(Default, Debug)]
pub struct Scratch {
    syms: Vec<u32>,
    prev: Vec<i32>,
    next: Vec<i32>,
    heap: BinaryHeap<Reverse<u64>>,
    ranks: Vec<u32>,
    ids: Vec<u32>,
    out: Vec<u32>,
    force_heap: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_and_heap_paths_agree() {
        // Bytes a..e with merges that overlap and tie, so order matters.
        let mut init = Box::new([0u32; 256]);
        for (b, slot) in init.iter_mut().enumerate() {
            *slot = u32::try_from(b).unwrap();
        }
        let (a, b, c) = (u32::from(b'a'), u32::from(b'b'), u32::from(b'c'));
        let merges = vec![
            (a, a, 300),
            (a, b, 301),
            (300, b, 302),
            (b, c, 303),
            (302, 303, 304),
            (300, 300, 305),
        ];
        let bpe = Bpe::new(merges, Init::Bytes(init), None);
        let mut s1 = Scratch::default();
        let mut state = 7u64;
        for _ in 0..2000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 60) as usize + (state >> 58 & 3) as usize * 10;
            let word: String = (0..len)
                .map(|i| ['a', 'b', 'c', 'a'][((state >> (i % 60)) & 3) as usize])
                .collect();
            let (mut x, mut y) = (Vec::new(), Vec::new());
            bpe.encode(&word, &mut x, &mut s1);
            bpe.encode_heap_only(&word, &mut y, &mut s1);
            assert_eq!(x, y, "{word}");
        }
    }
}
