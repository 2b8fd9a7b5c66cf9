//! Byte-pair merging, the same algorithm as the `tokenizers` crate's `BPE` model.
//!
//! A word starts as one symbol per byte (byte-level vocabularies; a multi-byte char whose bytes
//! nothing can touch before they merge into its token starts as that token, see
//! [`Bpe::whole_chars`]) or per char (SentencePiece-style vocabularies with byte fallback and
//! unknown-token fusing). Merges are applied in rank order,
//! leftmost first among equal ranks, through a binary heap of candidate pairs over a linked list
//! of symbols, exactly as `tokenizers::models::bpe::Word::merge_all` does (including its check
//! that skips stale heap entries). Cost: O(n log n) for a word of n initial symbols.
//!
//! We re-implement it (≈150 lines) rather than call `Model::tokenize`, because that allocates a
//! `String` per output token and takes a shared lock on its cache, which dominates the cost of
//! counting; the tests compare both on every fixture.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap, FxHashSet};

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
    /// Byte-level only: multi-byte chars that start as their own token instead of their bytes,
    /// with the same result (see [`Bpe::whole_chars`]).
    whole_chars: FxHashMap<char, WholeChar>,
    /// Byte-level only: pairs of multi-byte chars `(c1, c2)`, as `key(c1, c2)`, that some merge
    /// joins across their boundary (see [`Bpe::for_each_part`]). Empty: no cuts.
    joins: FxHashSet<u64>,
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

/// A char that may start as its token `id`, unless the byte before it is in `prev` or the byte
/// after it in `next` (256-bit sets).
#[derive(Debug, Clone)]
struct WholeChar {
    id: u32,
    prev: [u64; 4],
    next: [u64; 4],
}

impl WholeChar {
    fn new(id: u32) -> Self {
        WholeChar {
            id,
            prev: [0; 4],
            next: [0; 4],
        }
    }

    /// Add byte `b` to `set` (`None`: an unknown byte, so all of them).
    fn forbid(set: &mut [u64; 4], b: Option<u8>) {
        match b {
            Some(b) => set[usize::from(b >> 6)] |= 1 << (b & 63),
            None => *set = [u64::MAX; 4],
        }
    }

    /// Whether the char may start as its token between bytes `prev` and `next` (`None`: the
    /// word's edge).
    #[inline]
    fn allowed(&self, prev: Option<u8>, next: Option<u8>) -> bool {
        let hit = |set: &[u64; 4], b: Option<u8>| {
            b.is_some_and(|b| set[usize::from(b >> 6)] >> (b & 63) & 1 == 1)
        };
        !hit(&self.prev, prev) && !hit(&self.next, next)
    }
}

/// The first 4 bytes of `a ++ b`, given the first 4 bytes and the length of each.
fn head(a: [u8; 4], la: usize, b: [u8; 4], lb: usize) -> [u8; 4] {
    let (na, nb) = (la.min(4), lb.min(4));
    let mut v = [0u8; 8];
    v[..na].copy_from_slice(&a[..na]);
    v[na..na + nb].copy_from_slice(&b[..nb]);
    [v[0], v[1], v[2], v[3]]
}

/// The last 4 bytes of `a ++ b` (right-aligned), given the last 4 bytes and the length of each.
fn tail(a: [u8; 4], la: usize, b: [u8; 4], lb: usize) -> [u8; 4] {
    let (na, nb) = (la.min(4), lb.min(4));
    let mut v = [0u8; 8];
    v[8 - nb..].copy_from_slice(&b[4 - nb..]);
    v[8 - nb - na..8 - nb].copy_from_slice(&a[4 - na..]);
    [v[4], v[5], v[6], v[7]]
}

/// The whole char that bytes `head` (the first of `len` bytes) start with, if any.
fn first_char(head: &[u8; 4], len: usize) -> Option<char> {
    let n = len.min(4);
    let w = match head[0] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    (w <= n)
        .then(|| std::str::from_utf8(&head[..w]).ok())
        .flatten()
        .and_then(|s| s.chars().next())
}

/// The whole char that bytes ending with `tail` (right-aligned, `len` bytes in all) end with.
fn last_char(tail: &[u8; 4], len: usize) -> Option<char> {
    let bytes = &tail[4 - len.min(4)..];
    let j = bytes.iter().rposition(|&b| b & 0xC0 != 0x80)?;
    std::str::from_utf8(&bytes[j..])
        .ok()
        .and_then(|s| s.chars().next())
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

    /// [`Bpe::merges_by_rank`] and the size of the id space they and the byte `table` use.
    fn merges_and_size(&self, table: &[u32; 256]) -> (Vec<(u32, u32, u32, u32)>, usize) {
        let merges = self.merges_by_rank();
        let size = merges
            .iter()
            .map(|m| m.1.max(m.2).max(m.3))
            .chain(table.iter().copied())
            .max()
            .map_or(0, |m| m as usize + 1);
        (merges, size)
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
        let mut bpe = Bpe {
            merges: map,
            small,
            init,
            ignore_merges_vocab,
            whole_chars: FxHashMap::default(),
            joins: FxHashSet::default(),
        };
        bpe.whole_chars = bpe.whole_chars();
        if bpe.ignore_merges_vocab.is_none() {
            bpe.joins = bpe.joins();
        }
        bpe
    }

    /// The pairs of multi-byte chars that a merge can join: `(c1, c2)` for each merge whose
    /// left token's bytes end with the whole char `c1` and whose right token's start with the
    /// whole char `c2`. Tracks the first and last 4 bytes of every token, in rank order.
    fn joins(&self) -> FxHashSet<u64> {
        let mut out = FxHashSet::default();
        let Init::Bytes(table) = &self.init else {
            return out;
        };
        if self.whole_chars.is_empty() {
            return out;
        }
        let (merges, size) = self.merges_and_size(table);
        // (first 4 bytes, last 4 bytes, length) of each token; length 0 = unknown.
        let mut ends = vec![([0u8; 4], [0u8; 4], 0usize); size];
        for (b, &id) in table.iter().enumerate() {
            #[allow(clippy::cast_possible_truncation)]
            let b = b as u8;
            ends[id as usize] = ([b, 0, 0, 0], [0, 0, 0, b], 1);
        }
        for &(_, a, b, m) in &merges {
            let (ea, eb) = (ends[a as usize], ends[b as usize]);
            if ea.2 == 0 || eb.2 == 0 {
                continue;
            }
            if let (Some(c1), Some(c2)) = (last_char(&ea.1, ea.2), first_char(&eb.0, eb.2)) {
                if c1.len_utf8() > 1 && c2.len_utf8() > 1 {
                    out.insert(key(c1 as u32, c2 as u32));
                }
            }
            if ends[m as usize].2 == 0 {
                ends[m as usize] = (
                    head(ea.0, ea.2, eb.0, eb.2),
                    tail(ea.1, ea.2, eb.1, eb.2),
                    ea.2 + eb.2,
                );
            }
        }
        out
    }

    /// Calls `f` with consecutive parts of `word` that merge independently: BPE of `word` is
    /// the BPE of its parts, joined. A cut goes between two multi-byte chars that both start as
    /// their tokens ([`Bpe::whole_chars`]) and that no merge joins ([`Bpe::joins`]): every
    /// symbol is then a run of whole chars, and a symbol across the boundary could only come
    /// from a merge of a left part ending with `c1` and a right part starting with `c2`. Merges
    /// on either side never meet, and each side merges alone exactly as within the word (its
    /// edge chars still start whole: nothing lies beyond them). A Chinese piece (a run of Han
    /// chars up to punctuation) is mostly unique, its parts (words) are not: they hit the
    /// caches. `word` itself when no cut applies.
    #[inline]
    pub fn for_each_part(&self, word: &str, mut f: impl FnMut(&str)) {
        if self.joins.is_empty() || word.len() < 4 || word.is_ascii() {
            f(word);
            return;
        }
        let b = word.as_bytes();
        let (mut start, mut i) = (0usize, 0usize);
        let mut prev: Option<char> = None;
        for c in word.chars() {
            let w = c.len_utf8();
            let whole = w > 1
                && self.whole_chars.get(&c).is_some_and(|wc| {
                    wc.allowed(i.checked_sub(1).map(|j| b[j]), b.get(i + w).copied())
                });
            if whole {
                if let Some(p) = prev {
                    if !self.joins.contains(&key(p as u32, c as u32)) {
                        f(&word[start..i]);
                        start = i;
                    }
                }
                prev = Some(c);
            } else {
                prev = None;
            }
            i += w;
        }
        f(&word[start..]);
    }

    /// The multi-byte chars whose bytes may be replaced by their token before merging, with
    /// the same result, and the neighbouring bytes that forbid it. Merged alone, the char's
    /// bytes become one token `t`, the last merge at rank `R`. In a word, the symbol left of the
    /// char always ends with the byte just before it, and the one to its right starts with the
    /// byte just after it. If no merge below `R` joins a symbol ending in that previous byte to
    /// the first symbol of one of the char's partial states (or to `t`), nor the last symbol of
    /// one (or `t`) to a symbol starting with the next byte, nothing touches the char's bytes
    /// before they are `t` (merges apply in global rank order), so starting from `t` changes
    /// nothing. A CJK char is 3 bytes and 2 merges: starting from its token cuts a Chinese
    /// piece's symbols and merges by about two thirds. Empty for char-level models.
    fn whole_chars(&self) -> FxHashMap<char, WholeChar> {
        let mut out = FxHashMap::default();
        let Init::Bytes(table) = &self.init else {
            return out;
        };
        let (merges, size) = self.merges_and_size(table);
        // Bytes of every token of at most 4 bytes (len 0: unknown or longer), and the first and
        // last byte of every token (in rank order: a part is made before a merge uses it).
        let mut bytes = vec![([0u8; 4], 0u8); size];
        let mut ends: Vec<Option<(u8, u8)>> = vec![None; size];
        for (b, &id) in table.iter().enumerate() {
            #[allow(clippy::cast_possible_truncation)]
            {
                bytes[id as usize] = ([b as u8, 0, 0, 0], 1);
                ends[id as usize] = Some((b as u8, b as u8));
            }
        }
        for &(_, a, b, m) in &merges {
            let (a, b, m) = (a as usize, b as usize, m as usize);
            if ends[m].is_none() {
                if let (Some((f, _)), Some((_, l))) = (ends[a], ends[b]) {
                    ends[m] = Some((f, l));
                }
            }
            let ((ba, la), (bb, lb)) = (bytes[a], bytes[b]);
            if bytes[m].1 == 0 && la > 0 && lb > 0 && la + lb <= 4 {
                let mut v = ba;
                v[la as usize..(la + lb) as usize].copy_from_slice(&bb[..lb as usize]);
                bytes[m] = (v, la + lb);
            }
        }
        // Each single-char token: merge its bytes alone, noting the symbols at each end.
        struct Cand {
            c: char,
            t: u32,
            rank: u32,
            firsts: Vec<u32>,
            lasts: Vec<u32>,
        }
        let mut cands: Vec<Cand> = Vec::new();
        let mut syms: Vec<u32> = Vec::with_capacity(4);
        for &(v, len) in &bytes {
            if len < 2 {
                continue;
            }
            let Ok(s) = std::str::from_utf8(&v[..len as usize]) else {
                continue;
            };
            let mut chars = s.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                continue;
            };
            syms.clear();
            syms.extend(s.bytes().map(|b| table[b as usize]));
            let (mut firsts, mut lasts) = (vec![syms[0]], vec![syms[syms.len() - 1]]);
            let mut rank = 0u32;
            loop {
                let best = syms
                    .windows(2)
                    .enumerate()
                    .filter_map(|(i, w)| self.merge_of(w[0], w[1]).map(|(r, id)| (r, i, id)))
                    .min();
                let Some((r, i, id)) = best else { break };
                syms[i] = id;
                syms.remove(i + 1);
                rank = r;
                firsts.push(syms[0]);
                lasts.push(syms[syms.len() - 1]);
            }
            if syms.len() == 1 && !out.contains_key(&c) {
                out.insert(c, WholeChar::new(syms[0]));
                cands.push(Cand {
                    c,
                    t: syms[0],
                    rank,
                    firsts,
                    lasts,
                });
            }
        }
        // Forbidden neighbour bytes, from every merge that could join a neighbour in time.
        let mut by_first: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
        let mut by_last: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
        for (i, cand) in cands.iter().enumerate() {
            for &f in &cand.firsts {
                by_first.entry(f).or_default().push(i);
            }
            for &l in &cand.lasts {
                by_last.entry(l).or_default().push(i);
            }
        }
        for &(rank, a, b, _) in &merges {
            if let Some(list) = by_first.get(&b) {
                let prev = ends[a as usize].map(|e| e.1);
                for &i in list {
                    if rank < cands[i].rank {
                        if let Some(w) = out.get_mut(&cands[i].c) {
                            WholeChar::forbid(&mut w.prev, prev);
                        }
                    }
                }
            }
            if let Some(list) = by_last.get(&a) {
                let next = ends[b as usize].map(|e| e.0);
                for &i in list {
                    if rank < cands[i].rank {
                        if let Some(w) = out.get_mut(&cands[i].c) {
                            WholeChar::forbid(&mut w.next, next);
                        }
                    }
                }
            }
        }
        debug_assert!(cands.iter().all(|c| out[&c.c].id == c.t));
        out
    }

    /// Initial symbols of `word` appended to `out`.
    fn initial(&self, word: &str, out: &mut Vec<u32>) {
        match &self.init {
            Init::Bytes(table) if self.whole_chars.is_empty() || word.is_ascii() => {
                out.extend(word.bytes().map(|b| table[b as usize]));
            }
            Init::Bytes(table) => {
                let b = word.as_bytes();
                let mut i = 0usize;
                for c in word.chars() {
                    let w = c.len_utf8();
                    let whole = if w == 1 {
                        None
                    } else {
                        self.whole_chars.get(&c).filter(|wc| {
                            wc.allowed(i.checked_sub(1).map(|j| b[j]), b.get(i + w).copied())
                        })
                    };
                    match whole {
                        Some(wc) => out.push(wc.id),
                        None => out.extend(b[i..i + w].iter().map(|&x| table[x as usize])),
                    }
                    i += w;
                }
            }
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

    /// Whole-char starts change nothing: a char next to a byte that could join part of it (or
    /// its token, before it is complete) keeps its bytes.
    #[test]
    fn whole_chars_are_exact_and_skip_unsafe_chars() {
        let mut init = Box::new([0u32; 256]);
        for (b, slot) in init.iter_mut().enumerate() {
            *slot = u32::try_from(b).unwrap();
        }
        let (zh, wen, e_acute, a) = (
            "中".as_bytes(),
            "文".as_bytes(),
            "é".as_bytes(),
            u32::from(b'a'),
        );
        let b = |x: u8| u32::from(x);
        let merges = vec![
            (b(zh[0]), b(zh[1]), 300),  // 中: bytes 0-1
            (300, b(zh[2]), 301),       // 中 complete at rank 1
            (b(zh[2]), b(wen[0]), 302), // a cross-char pair, below 文's completion
            (b(wen[0]), b(wen[1]), 303),
            (303, b(wen[2]), 304), // 文 complete at rank 4: unsafe
            (310, a, 311),         // uses é's token before é exists
            (b(e_acute[0]), b(e_acute[1]), 310), // é complete at rank 6: unsafe
            (301, 304, 312),       // 中文
            (301, a, 313),
        ];
        let bpe = Bpe::new(merges, Init::Bytes(init), None);
        let whole = |c: char| bpe.whole_chars.get(&c).unwrap();
        assert_eq!(whole('中').id, 301);
        assert!(whole('中').allowed(Some(b'a'), Some(wen[0])));
        // 文 after a byte that can absorb its first byte (the pair at rank 2) keeps its bytes.
        assert_eq!(whole('文').id, 304);
        assert!(!whole('文').allowed(Some(zh[2]), None));
        assert!(whole('文').allowed(Some(b'a'), None));
        // é's token merges with a following `a` before é is complete.
        assert!(!whole('é').allowed(None, Some(b'a')));
        assert!(whole('é').allowed(None, Some(b' ')));
        let mut plain = Bpe::new(Vec::new(), Init::Bytes(Box::new([0u32; 256])), None);
        plain.merges = bpe.merges.clone();
        plain.small = bpe.small.clone();
        plain.init = Init::Bytes(match &bpe.init {
            Init::Bytes(t) => t.clone(),
            Init::Chars { .. } => unreachable!(),
        });
        assert!(plain.whole_chars.is_empty());
        let (mut s1, mut s2) = (Scratch::default(), Scratch::default());
        for word in random_words("中文éa b", 11, 3000) {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            bpe.encode(&word, &mut x, &mut s1);
            plain.encode(&word, &mut y, &mut s2);
            assert_eq!(x, y, "{word}");
        }
    }

    /// `n` seeded words of 1 to 92 chars of `alphabet`.
    fn random_words(alphabet: &str, seed: u64, n: usize) -> impl Iterator<Item = String> {
        let alphabet: Vec<char> = alphabet.chars().collect();
        let mut state = seed;
        (0..n).map(move |_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 59) as usize + 1 + (state >> 57 & 3) as usize * 20;
            (0..len)
                .map(|i| alphabet[((state >> (i % 50)) as usize) % alphabet.len()])
                .collect()
        })
    }

    fn ignore_parts(bpe: &Bpe, w: &str) -> Vec<String> {
        let mut v = Vec::new();
        bpe.for_each_part(w, |p| v.push(p.to_string()));
        v
    }

    /// Parts merge as the whole word: cuts fall only between whole-started chars that no
    /// merge joins, including merges whose parts end or start mid-char.
    #[test]
    fn parts_merge_like_the_word() {
        let mut init = Box::new([0u32; 256]);
        for (b, slot) in init.iter_mut().enumerate() {
            *slot = u32::try_from(b).unwrap();
        }
        let bytes = |c: char| c.to_string().into_bytes();
        let (zh, wen, zi, hao) = (bytes('中'), bytes('文'), bytes('字'), bytes('好'));
        let b = |x: u8| u32::from(x);
        let merges = vec![
            (b(zh[0]), b(zh[1]), 300),
            (300, b(zh[2]), 301), // 中
            (b(wen[0]), b(wen[1]), 302),
            (302, b(wen[2]), 303), // 文
            (b(zi[0]), b(zi[1]), 304),
            (304, b(zi[2]), 305), // 字
            (b(hao[0]), b(hao[1]), 306),
            (306, b(hao[2]), 307), // 好
            (301, 303, 308),       // 中文: joins 中|文
            (308, 305, 309),       // 中文字: joins 文|字 (left part ends with 文)
            (305, b(hao[0]), 310), // 字 + a partial 好: no whole-char join
            (307, b(b'a'), 311),   // 好a
        ];
        let bpe = Bpe::new(merges.clone(), Init::Bytes(init.clone()), None);
        let join = |a: char, b: char| bpe.joins.contains(&key(a as u32, b as u32));
        assert!(join('中', '文') && join('文', '字'));
        assert!(!join('字', '好') && !join('好', '中') && !join('文', '中'));
        let parts = |w: &str| {
            let mut v = Vec::new();
            bpe.for_each_part(w, |p| v.push(p.to_string()));
            v
        };
        assert_eq!(parts("中文字好中"), ["中文字", "好", "中"]);
        assert_eq!(parts("abc"), ["abc"]);
        let mut s1 = Scratch::default();
        let mut cut = 0;
        for word in random_words("中文字好a ", 5, 3000) {
            let (mut whole, mut joined) = (Vec::new(), Vec::new());
            bpe.encode(&word, &mut whole, &mut s1);
            let ps = parts(&word);
            assert_eq!(ps.concat(), word);
            cut += ps.len() - 1;
            for p in &ps {
                bpe.encode(p, &mut joined, &mut s1);
            }
            assert_eq!(whole, joined, "{word}: {ps:?}");
        }
        assert!(cut > 1000, "{cut}");
        // `ignore_merges` looks whole words up: never cut.
        let ignore = Bpe::new(merges, Init::Bytes(init), Some(FxHashMap::default()));
        assert!(!ignore.whole_chars.is_empty() && ignore.joins.is_empty());
        assert_eq!(ignore_parts(&ignore, "中文字好中"), ["中文字好中"]);
    }

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
