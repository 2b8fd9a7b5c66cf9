//! Packing samples into rows of `seq_len` tokens: global best-fit-decreasing on the lengths.
//!
//! Samples are taken longest first (ties by index); each goes to the open row with the least
//! room that still fits it, else to a new row. Open rows are kept in a `BTreeMap` from free
//! room to the rows with that room, so each placement is O(log seq_len) and the whole packing
//! O(n log n) in time and O(n) integers in memory. Samples longer than `seq_len` follow an
//! explicit [`Overlong`] policy, counted in [`PackStats`]. Rows full to `max_per_row` samples
//! are closed. Deterministic: the order depends only on the lengths and indices.
//!
//! Only indices are packed; tokens are gathered later (issue #6's shard writer).

use std::collections::BTreeMap;

use crate::error::{Result, SftError};

/// What happens to a sample longer than `seq_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlong {
    /// Leave it out (counted).
    Drop,
    /// Keep its first `seq_len` tokens.
    TruncateRight,
    /// Keep its last `seq_len` tokens.
    TruncateLeft,
    /// Cut it into pieces of at most `seq_len` tokens, packed like samples.
    Split,
}

/// One piece of a packed row: tokens `start..start + len` of sample `sample`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Index of the sample in the input.
    pub sample: u32,
    /// First token of the sample in this piece.
    pub start: u32,
    /// Tokens in this piece.
    pub len: u32,
}

/// Counts of a packing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Samples given.
    pub samples: u64,
    /// Samples left out (`Overlong::Drop`, or empty).
    pub dropped: u64,
    /// Samples shortened by truncation.
    pub truncated: u64,
    /// Tokens lost to truncation or dropping.
    pub tokens_lost: u64,
    /// Tokens placed.
    pub tokens_packed: u64,
    /// Rows made.
    pub rows: u64,
}

impl PackStats {
    /// Real tokens / slots.
    #[must_use]
    pub fn efficiency(&self, seq_len: u32) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let slots = (self.rows * u64::from(seq_len)) as f64;
        #[allow(clippy::cast_precision_loss)]
        if slots > 0.0 {
            self.tokens_packed as f64 / slots
        } else {
            1.0
        }
    }
}

/// Rows as pieces: row `r` holds `pieces[offsets[r]..offsets[r + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packing {
    /// Row boundaries into `pieces`.
    pub offsets: Vec<u64>,
    /// The pieces, row after row.
    pub pieces: Vec<Piece>,
    /// Counts.
    pub stats: PackStats,
}

/// Pack samples of `lengths` tokens into rows of `seq_len`.
///
/// # Errors
/// [`SftError::Config`] when `seq_len` or `max_per_row` is 0.
pub fn pack_bfd(
    lengths: &[u32],
    seq_len: u32,
    overlong: Overlong,
    max_per_row: Option<u32>,
) -> Result<Packing> {
    if seq_len == 0 {
        return Err(SftError::Config("seq_len: expected > 0, got 0".into()));
    }
    if max_per_row == Some(0) {
        return Err(SftError::Config("max_per_row: expected > 0, got 0".into()));
    }
    let mut stats = PackStats {
        samples: lengths.len() as u64,
        ..PackStats::default()
    };
    let mut items: Vec<Piece> = Vec::with_capacity(lengths.len());
    for (i, &len) in lengths.iter().enumerate() {
        #[allow(clippy::cast_possible_truncation)]
        let sample = i as u32;
        cut(len, seq_len, overlong, &mut stats, |start, len| {
            items.push(Piece { sample, start, len });
        });
    }
    // Longest first; ties by (sample, start) so the result is a function of the input. Items
    // were made in (sample, start) order, so a stable counting sort by length gives exactly
    // that order in O(n + seq_len).
    let items = sort_longest_first(items, seq_len);
    let mut index = RoomIndex::new(seq_len);
    let mut row_room: Vec<u32> = Vec::new();
    let mut row_count: Vec<u32> = Vec::new();
    let mut row_of: Vec<u32> = Vec::with_capacity(items.len());
    for item in &items {
        let row = if let Some(row) = index.take_at_least(item.len) {
            row
        } else {
            #[allow(clippy::cast_possible_truncation)]
            let row = row_room.len() as u32;
            row_room.push(seq_len);
            row_count.push(0);
            row
        };
        let r = row as usize;
        row_room[r] -= item.len;
        row_count[r] += 1;
        row_of.push(row);
        let full = max_per_row.is_some_and(|m| row_count[r] >= m);
        if row_room[r] > 0 && !full {
            index.put(row_room[r], row);
        }
        stats.tokens_packed += u64::from(item.len);
    }
    stats.rows = row_room.len() as u64;
    // Group pieces by row, keeping placement order within a row (a counting sort on rows).
    let mut offsets = Vec::with_capacity(row_room.len() + 1);
    offsets.push(0u64);
    for &c in &row_count {
        offsets.push(offsets.last().copied().unwrap_or(0) + u64::from(c));
    }
    let mut fill: Vec<u64> = offsets[..offsets.len() - 1].to_vec();
    let mut pieces = vec![
        Piece {
            sample: 0,
            start: 0,
            len: 0
        };
        items.len()
    ];
    for (item, &row) in items.iter().zip(&row_of) {
        let f = &mut fill[row as usize];
        pieces[*f as usize] = *item;
        *f += 1;
    }
    Ok(Packing {
        offsets,
        pieces,
        stats,
    })
}

/// Stable counting sort of pieces by length, longest first.
fn sort_longest_first(items: Vec<Piece>, seq_len: u32) -> Vec<Piece> {
    if items.len() < 4096 || seq_len > (1 << 24) {
        let mut v = items;
        v.sort_by_key(|p| std::cmp::Reverse(p.len));
        return v;
    }
    let mut count = vec![0usize; seq_len as usize + 2];
    for it in &items {
        // Bucket of length l is seq_len - l: longest first.
        count[(seq_len - it.len) as usize + 1] += 1;
    }
    for i in 1..count.len() {
        count[i] += count[i - 1];
    }
    let mut out = vec![
        Piece {
            sample: 0,
            start: 0,
            len: 0
        };
        items.len()
    ];
    for it in items {
        let slot = &mut count[(seq_len - it.len) as usize];
        out[*slot] = it;
        *slot += 1;
    }
    out
}

/// Open rows by free room: a stack of rows per room value (intrusive lists) and a two-level
/// bitset of non-empty rooms, so "the smallest room >= x" is a few word scans. Same last-in,
/// first-out choice among equal rooms as a `BTreeMap<room, Vec<row>>` would make.
struct RoomIndex {
    head: Vec<u32>,
    next: Vec<u32>,
    bits: Vec<u64>,
    summary: Vec<u64>,
}

const NONE: u32 = u32::MAX;

impl RoomIndex {
    fn new(seq_len: u32) -> Self {
        let n = seq_len as usize + 1;
        let words = n.div_ceil(64);
        RoomIndex {
            head: vec![NONE; n],
            next: Vec::new(),
            bits: vec![0; words],
            summary: vec![0; words.div_ceil(64)],
        }
    }

    fn put(&mut self, room: u32, row: u32) {
        let r = row as usize;
        if self.next.len() <= r {
            self.next.resize(r + 1, NONE);
        }
        let x = room as usize;
        self.next[r] = self.head[x];
        self.head[x] = row;
        self.bits[x / 64] |= 1 << (x % 64);
        self.summary[x / 4096] |= 1 << ((x / 64) % 64);
    }

    /// Remove and return a row whose room is the smallest >= `need`.
    fn take_at_least(&mut self, need: u32) -> Option<u32> {
        let x = self.find(need as usize)?;
        let row = self.head[x];
        self.head[x] = self.next[row as usize];
        if self.head[x] == NONE {
            self.bits[x / 64] &= !(1 << (x % 64));
            if self.bits[x / 64] == 0 {
                self.summary[x / 4096] &= !(1 << ((x / 64) % 64));
            }
        }
        Some(row)
    }

    fn find(&self, from: usize) -> Option<usize> {
        let mut w = from / 64;
        if w >= self.bits.len() {
            return None;
        }
        let here = self.bits[w] & (!0u64 << (from % 64));
        if here != 0 {
            return Some(w * 64 + here.trailing_zeros() as usize);
        }
        w += 1;
        // Next non-empty word via the summary.
        let mut s = w / 64;
        if s >= self.summary.len() {
            return None;
        }
        let mut m = if w % 64 == 0 {
            self.summary[s]
        } else {
            self.summary[s] & (!0u64 << (w % 64))
        };
        loop {
            if m != 0 {
                let word = s * 64 + m.trailing_zeros() as usize;
                return Some(word * 64 + self.bits[word].trailing_zeros() as usize);
            }
            s += 1;
            if s >= self.summary.len() {
                return None;
            }
            m = self.summary[s];
        }
    }
}

/// Apply the overlong policy to one sample: call `emit(start, len)` for each piece kept.
fn cut(
    len: u32,
    seq_len: u32,
    overlong: Overlong,
    stats: &mut PackStats,
    mut emit: impl FnMut(u32, u32),
) {
    if len == 0 {
        stats.dropped += 1;
    } else if len <= seq_len {
        emit(0, len);
    } else {
        match overlong {
            Overlong::Drop => {
                stats.dropped += 1;
                stats.tokens_lost += u64::from(len);
            }
            Overlong::TruncateRight | Overlong::TruncateLeft => {
                stats.truncated += 1;
                stats.tokens_lost += u64::from(len - seq_len);
                let start = if overlong == Overlong::TruncateLeft {
                    len - seq_len
                } else {
                    0
                };
                emit(start, seq_len);
            }
            Overlong::Split => {
                let mut start = 0;
                while start < len {
                    let l = seq_len.min(len - start);
                    emit(start, l);
                    start += l;
                }
            }
        }
    }
}

/// A piece in the streaming packer: sample ids are u64 (an unbounded stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPiece {
    /// Index of the sample in the stream.
    pub sample: u64,
    /// First token of the sample in this piece.
    pub start: u32,
    /// Tokens in this piece.
    pub len: u32,
}

#[derive(Debug)]
struct OpenRow {
    id: u64,
    room: u32,
    pieces: Vec<StreamPiece>,
}

/// Best-fit over a bounded window, for streams too long to hold (issue #6).
///
/// Samples are buffered until `window` pieces wait; the window is then placed longest first,
/// each piece into the open row with the least room that fits it (else a new row), exactly as
/// [`pack_bfd`] does for the whole input. Afterwards full rows are closed and, of the rest, at
/// most `max_open` stay open for the next window (those with the most room; the others close).
/// Closed rows come out in the order they were opened. Memory: `window` pieces plus
/// `max_open` rows of pieces. Deterministic: a function of the lengths in stream order.
#[derive(Debug)]
pub struct WindowPacker {
    seq_len: u32,
    overlong: Overlong,
    max_per_row: Option<u32>,
    window: usize,
    max_open: usize,
    pending: Vec<StreamPiece>,
    open: Vec<OpenRow>,
    next_sample: u64,
    next_row: u64,
    stats: PackStats,
}

impl WindowPacker {
    /// A packer for rows of `seq_len`, placing `window` pieces at a time.
    ///
    /// # Errors
    /// [`SftError::Config`] when `seq_len`, `window` or `max_per_row` is 0.
    pub fn new(
        seq_len: u32,
        overlong: Overlong,
        max_per_row: Option<u32>,
        window: usize,
    ) -> Result<Self> {
        if seq_len == 0 || window == 0 || max_per_row == Some(0) {
            return Err(SftError::Config(format!(
                "streaming packer: seq_len, window and max_per_row must be > 0; got \
                 seq_len={seq_len}, window={window}, max_per_row={max_per_row:?}"
            )));
        }
        Ok(WindowPacker {
            seq_len,
            overlong,
            max_per_row,
            window,
            max_open: (window / 8).max(16),
            pending: Vec::with_capacity(window),
            open: Vec::new(),
            next_sample: 0,
            next_row: 0,
            stats: PackStats::default(),
        })
    }

    /// Add the next sample (its id is its position in the stream); closed rows are appended
    /// to `out`.
    pub fn push(&mut self, len: u32, out: &mut Vec<Vec<StreamPiece>>) {
        let sample = self.next_sample;
        self.next_sample += 1;
        self.stats.samples += 1;
        let pending = &mut self.pending;
        cut(
            len,
            self.seq_len,
            self.overlong,
            &mut self.stats,
            |start, len| {
                pending.push(StreamPiece { sample, start, len });
            },
        );
        if self.pending.len() >= self.window {
            self.place(out, false);
        }
    }

    /// Samples pushed so far: the id the next sample gets.
    #[must_use]
    pub fn samples_pushed(&self) -> u64 {
        self.next_sample
    }

    /// Place what is left and close every row; returns the counts.
    pub fn finish(mut self, out: &mut Vec<Vec<StreamPiece>>) -> PackStats {
        self.place(out, true);
        self.stats
    }

    fn place(&mut self, out: &mut Vec<Vec<StreamPiece>>, close_all: bool) {
        let mut items = std::mem::take(&mut self.pending);
        items.sort_by(|a, b| {
            b.len
                .cmp(&a.len)
                .then(a.sample.cmp(&b.sample))
                .then(a.start.cmp(&b.start))
        });
        let mut rows = std::mem::take(&mut self.open);
        let mut by_room: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        // Push in reverse so `pop` takes the oldest row among equal rooms.
        for (i, r) in rows.iter().enumerate().rev() {
            by_room.entry(r.room).or_default().push(i);
        }
        for item in items.drain(..) {
            let slot = by_room.range(item.len..).next().map(|(&room, _)| room);
            let idx = if let Some(room) = slot {
                let ids = by_room.get_mut(&room).unwrap_or_else(|| unreachable!());
                let idx = ids.pop().unwrap_or_else(|| unreachable!());
                if ids.is_empty() {
                    by_room.remove(&room);
                }
                idx
            } else {
                rows.push(OpenRow {
                    id: self.next_row,
                    room: self.seq_len,
                    pieces: Vec::new(),
                });
                self.next_row += 1;
                rows.len() - 1
            };
            let row = &mut rows[idx];
            row.room -= item.len;
            row.pieces.push(item);
            self.stats.tokens_packed += u64::from(item.len);
            #[allow(clippy::cast_possible_truncation)]
            let full = self
                .max_per_row
                .is_some_and(|m| row.pieces.len() as u32 >= m);
            if row.room > 0 && !full {
                by_room.entry(row.room).or_default().push(idx);
            }
        }
        self.pending = items;
        let max_open = if close_all { 0 } else { self.max_open };
        let cap = self.max_per_row;
        #[allow(clippy::cast_possible_truncation)]
        let (mut keep, mut close): (Vec<OpenRow>, Vec<OpenRow>) = rows
            .into_iter()
            .partition(|r| r.room > 0 && cap.is_none_or(|m| (r.pieces.len() as u32) < m));
        if keep.len() > max_open {
            // Keep the rows with the most room (ties: oldest); close the fullest.
            keep.sort_by(|a, b| b.room.cmp(&a.room).then(a.id.cmp(&b.id)));
            close.extend(keep.drain(max_open..));
        }
        keep.sort_by_key(|r| r.id);
        close.sort_by_key(|r| r.id);
        self.stats.rows += close.len() as u64;
        out.extend(close.into_iter().map(|r| r.pieces));
        self.open = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log-normal-ish lengths (median ~350, tail to 8k) from a fixed LCG.
    fn lengths(n: usize) -> Vec<u32> {
        let mut s = 12_345u64;
        (0..n)
            .map(|_| {
                let mut z = 0.0;
                for _ in 0..12 {
                    s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    #[allow(clippy::cast_precision_loss)]
                    {
                        z += (s >> 11) as f64 / (1u64 << 53) as f64;
                    }
                }
                let x = (350f64.ln() + 0.8 * (z - 6.0)).exp();
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                {
                    x.clamp(1.0, 8192.0) as u32
                }
            })
            .collect()
    }

    fn check(p: &Packing, lengths: &[u32], seq_len: u32) {
        let mut seen = vec![0u64; lengths.len()];
        for w in p.offsets.windows(2) {
            let row = &p.pieces[w[0] as usize..w[1] as usize];
            assert!(row.iter().map(|x| x.len).sum::<u32>() <= seq_len);
            for x in row {
                seen[x.sample as usize] += u64::from(x.len);
                assert!(x.start + x.len <= lengths[x.sample as usize]);
            }
        }
        let placed: u64 = seen.iter().sum();
        assert_eq!(placed, p.stats.tokens_packed);
    }

    #[test]
    fn bfd_is_efficient_on_a_realistic_distribution() {
        let l = lengths(100_000);
        for seq_len in [2048, 4096, 8192] {
            let p = pack_bfd(&l, seq_len, Overlong::TruncateRight, None).unwrap();
            check(&p, &l, seq_len);
            let e = p.stats.efficiency(seq_len);
            assert!(e > 0.999, "{seq_len}: {e}");
            assert_eq!(
                p,
                pack_bfd(&l, seq_len, Overlong::TruncateRight, None).unwrap()
            );
        }
    }

    #[test]
    fn overlong_policies_and_caps() {
        let l = [10, 3, 25, 0, 7];
        let drop = pack_bfd(&l, 10, Overlong::Drop, None).unwrap();
        assert_eq!((drop.stats.dropped, drop.stats.tokens_lost), (2, 25));
        let right = pack_bfd(&l, 10, Overlong::TruncateRight, None).unwrap();
        assert_eq!((right.stats.truncated, right.stats.tokens_lost), (1, 15));
        let left = pack_bfd(&l, 10, Overlong::TruncateLeft, None).unwrap();
        assert!(left.pieces.iter().any(|p| p.sample == 2 && p.start == 15));
        let split = pack_bfd(&l, 10, Overlong::Split, None).unwrap();
        check(&split, &l, 10);
        assert_eq!(split.stats.tokens_packed, 45);
        let capped = pack_bfd(&[1; 10], 100, Overlong::Drop, Some(3)).unwrap();
        assert_eq!(capped.stats.rows, 4);
        assert!(pack_bfd(&l, 0, Overlong::Drop, None).is_err());
    }

    #[test]
    fn window_packer_is_efficient_and_complete() {
        let l = lengths(100_000);
        for seq_len in [2048, 8192] {
            let mut p = WindowPacker::new(seq_len, Overlong::TruncateRight, None, 10_000).unwrap();
            let mut rows = Vec::new();
            for &x in &l {
                p.push(x, &mut rows);
            }
            let stats = p.finish(&mut rows);
            assert_eq!(stats.rows, rows.len() as u64);
            let mut seen = vec![0u32; l.len()];
            for r in &rows {
                assert!(r.iter().map(|x| x.len).sum::<u32>() <= seq_len);
                for x in r {
                    seen[usize::try_from(x.sample).unwrap()] += x.len;
                }
            }
            for (i, &x) in l.iter().enumerate() {
                assert_eq!(seen[i], x.min(seq_len));
            }
            let e = stats.efficiency(seq_len);
            assert!(e > 0.998, "{seq_len}: {e}");
        }
        let mut p = WindowPacker::new(10, Overlong::Split, Some(2), 3).unwrap();
        let mut rows = Vec::new();
        for x in [25, 1, 1, 1, 0, 4] {
            p.push(x, &mut rows);
        }
        let st = p.finish(&mut rows);
        assert_eq!((st.samples, st.dropped, st.tokens_packed), (6, 1, 32));
        assert!(rows.iter().all(|r| r.len() <= 2));
        assert!(WindowPacker::new(10, Overlong::Drop, None, 0).is_err());
    }

    /// The BTreeMap formulation the fast index replaced: same choices, same output.
    fn reference(lengths: &[u32], seq_len: u32, cap: Option<u32>) -> Vec<Vec<u32>> {
        let mut items: Vec<(u32, u32)> = lengths
            .iter()
            .enumerate()
            .filter(|(_, &l)| l > 0)
            .map(|(i, &l)| (u32::try_from(i).unwrap(), l.min(seq_len)))
            .collect();
        items.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut rows: Vec<Vec<u32>> = Vec::new();
        let mut room: Vec<u32> = Vec::new();
        let mut open: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (s, l) in items {
            let slot = open.range(l..).next().map(|(&r, _)| r);
            let row = if let Some(r) = slot {
                let ids = open.get_mut(&r).unwrap();
                let row = ids.pop().unwrap();
                if ids.is_empty() {
                    open.remove(&r);
                }
                row
            } else {
                rows.push(Vec::new());
                room.push(seq_len);
                u32::try_from(rows.len() - 1).unwrap()
            };
            let r = row as usize;
            rows[r].push(s);
            room[r] -= l;
            let full = cap.is_some_and(|m| rows[r].len() >= m as usize);
            if room[r] > 0 && !full {
                open.entry(room[r]).or_default().push(row);
            }
        }
        rows
    }

    #[test]
    fn fast_index_matches_the_btreemap_reference() {
        for (n, seq_len, cap) in [
            (50_000, 2048, None),
            (30_000, 8192, Some(8)),
            (3000, 300, None),
            (100, 5000, None),
        ] {
            let l = lengths(n);
            let p = pack_bfd(&l, seq_len, Overlong::TruncateRight, cap).unwrap();
            let got: Vec<Vec<u32>> = p
                .offsets
                .windows(2)
                .map(|w| {
                    p.pieces[w[0] as usize..w[1] as usize]
                        .iter()
                        .map(|x| x.sample)
                        .collect()
                })
                .collect();
            assert_eq!(got, reference(&l, seq_len, cap), "{n} {seq_len}");
        }
    }
}
