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
        if len == 0 {
            stats.dropped += 1;
        } else if len <= seq_len {
            items.push(Piece {
                sample,
                start: 0,
                len,
            });
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
                    items.push(Piece {
                        sample,
                        start,
                        len: seq_len,
                    });
                }
                Overlong::Split => {
                    let mut start = 0;
                    while start < len {
                        let l = seq_len.min(len - start);
                        items.push(Piece {
                            sample,
                            start,
                            len: l,
                        });
                        start += l;
                    }
                }
            }
        }
    }
    // Longest first; ties by (sample, start) so the result is a function of the input.
    items.sort_by(|a, b| {
        b.len
            .cmp(&a.len)
            .then(a.sample.cmp(&b.sample))
            .then(a.start.cmp(&b.start))
    });
    let mut rows: Vec<Vec<Piece>> = Vec::new();
    let mut open: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for item in items {
        let slot = open.range(item.len..).next().map(|(&room, _)| room);
        let row = match slot {
            Some(room) => {
                let ids = open.get_mut(&room).unwrap_or_else(|| unreachable!());
                let row = ids.pop().unwrap_or_else(|| unreachable!());
                if ids.is_empty() {
                    open.remove(&room);
                }
                let row_room = room - item.len;
                rows[row as usize].push(item);
                (row, row_room)
            }
            None => {
                #[allow(clippy::cast_possible_truncation)]
                let row = rows.len() as u32;
                rows.push(vec![item]);
                (row, seq_len - item.len)
            }
        };
        let (id, room) = row;
        let full = max_per_row.is_some_and(|m| rows[id as usize].len() as u32 >= m);
        if room > 0 && !full {
            open.entry(room).or_default().push(id);
        }
        stats.tokens_packed += u64::from(item.len);
    }
    stats.rows = rows.len() as u64;
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0);
    let mut pieces = Vec::with_capacity(rows.iter().map(Vec::len).sum());
    for r in rows {
        pieces.extend(r);
        offsets.push(pieces.len() as u64);
    }
    Ok(Packing {
        offsets,
        pieces,
        stats,
    })
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
}
