//! Which rows meet a category's target: every row `base` times, plus one more copy for the rows
//! with the smallest keyed hashes until the remainder is met.
//!
//! Rows are ordered by `h = xxh3_64(seed, key)`. A category of `n` units with target `t` gets
//! `base = ⌊t / n⌋` copies of every row and one extra copy of the shortest hash-ordered prefix
//! whose units come nearest the remainder `t − base·n` (exact for `unit = rows`; within one row
//! for tokens). Each row thus appears `⌊e⌋` or `⌈e⌉` times (`e = t / n`), never more.
//!
//! Finding the prefix without holding the rows: the first pass keeps, per category, a histogram
//! of rows and units over the top [`BUCKET_BITS`] bits of `h` (4096 buckets, 64 KiB); the
//! prefix ends in the first bucket where the cumulative units reach the remainder (the
//! boundary). A second pass reads only the rows of that bucket (about `n / 4096` of them) and
//! [`resolve`] picks the cut among them. The selection is then one comparison per row,
//! `h ≤ threshold`, so it depends on the seed and the keys only: not on file order, partitions
//! or threads.

/// Hash bits that index the histogram.
pub const BUCKET_BITS: u32 = 12;
/// Buckets per category histogram.
pub const BUCKETS: usize = 1 << BUCKET_BITS;

/// The histogram bucket of a keyed hash.
#[inline]
#[must_use]
pub fn bucket_of(hash: u64) -> u16 {
    #[allow(clippy::cast_possible_truncation)]
    {
        (hash >> (64 - BUCKET_BITS)) as u16
    }
}

/// Rows and units per hash bucket of one category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Rows per bucket.
    pub rows: Vec<u64>,
    /// Units per bucket.
    pub units: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            rows: vec![0; BUCKETS],
            units: vec![0; BUCKETS],
        }
    }
}

impl Histogram {
    /// Add `rows` rows holding `units` units to `bucket`.
    pub fn add(&mut self, bucket: u16, rows: u64, units: u64) {
        self.rows[usize::from(bucket)] += rows;
        self.units[usize::from(bucket)] += units;
    }

    /// Total rows.
    #[must_use]
    pub fn total_rows(&self) -> u64 {
        self.rows.iter().sum()
    }

    /// Total units.
    #[must_use]
    pub fn total_units(&self) -> u64 {
        self.units.iter().sum()
    }
}

/// The first-pass part of a selection: copies for all rows and where the extra copies stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cut {
    /// Copies of every row.
    pub base: u64,
    /// Units to take once more, in hash order.
    pub remainder: u64,
    /// The bucket where the extra prefix ends (`None` when `remainder == 0`).
    pub boundary: Option<u16>,
    /// Rows in the buckets before the boundary (all of them get the extra copy).
    pub before_rows: u64,
    /// Units in the buckets before the boundary.
    pub before_units: u64,
}

/// The cut for `target` units of a category with histogram `hist`. A category with no units
/// gets nothing (a target for it can only be 0 when it comes from [`super::plan::targets`]).
#[must_use]
pub fn cut(hist: &Histogram, target: u64) -> Cut {
    let n = hist.total_units();
    if n == 0 {
        return Cut::default();
    }
    let base = target / n;
    let remainder = target - base * n;
    if remainder == 0 {
        return Cut {
            base,
            ..Cut::default()
        };
    }
    let (mut rows, mut units) = (0u64, 0u64);
    for b in 0..BUCKETS {
        if units + hist.units[b] >= remainder {
            #[allow(clippy::cast_possible_truncation)]
            return Cut {
                base,
                remainder,
                boundary: Some(b as u16),
                before_rows: rows,
                before_units: units,
            };
        }
        rows += hist.rows[b];
        units += hist.units[b];
    }
    unreachable!("remainder < total units, so some bucket reaches it")
}

/// The final selection of one category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resolved {
    /// Copies of every row.
    pub base: u64,
    /// Rows whose hash is at most this get one more copy (`None`: none do).
    pub threshold: Option<u64>,
    /// Rows that get the extra copy.
    pub extra_rows: u64,
    /// Units of those rows.
    pub extra_units: u64,
}

/// Pick the cut inside the boundary bucket from its rows `(hash, units)` (any order).
///
/// Among the prefixes of the hash-sorted rows that end in the boundary bucket (or at its
/// start), the one whose units come nearest the remainder (ties: the shorter). Rows with equal
/// hashes (equal keys) are taken or left together, so the threshold describes the selection
/// exactly. With `unit = rows` the remainder is met exactly (barring equal keys).
#[must_use]
pub fn resolve(cut: &Cut, boundary_rows: &mut [(u64, u64)]) -> Resolved {
    let Some(boundary) = cut.boundary else {
        return Resolved {
            base: cut.base,
            ..Resolved::default()
        };
    };
    boundary_rows.sort_unstable();
    let need = cut.remainder - cut.before_units;
    let (mut best_len, mut best_units, mut best_dist) = (0usize, 0u64, need);
    let (mut taken, mut i) = (0u64, 0usize);
    while i < boundary_rows.len() {
        let h = boundary_rows[i].0;
        while i < boundary_rows.len() && boundary_rows[i].0 == h {
            taken += boundary_rows[i].1;
            i += 1;
        }
        let dist = taken.abs_diff(need);
        if dist < best_dist {
            (best_len, best_units, best_dist) = (i, taken, dist);
        }
        if taken >= need {
            break;
        }
    }
    let threshold = if best_len > 0 {
        Some(boundary_rows[best_len - 1].0)
    } else if boundary > 0 {
        Some((u64::from(boundary) << (64 - BUCKET_BITS)) - 1)
    } else {
        None
    };
    Resolved {
        base: cut.base,
        threshold,
        extra_rows: cut.before_rows + best_len as u64,
        extra_units: cut.before_units + best_units,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: sort all rows by hash and walk the prefixes directly. The prefix ends at or
    /// after the start of the boundary bucket (the bucket of the first row where the cumulative
    /// units reach the remainder), nearest in units, ties to the shorter.
    fn brute(rows: &[(u64, u64)], target: u64) -> (u64, u64, u64) {
        let n: u64 = rows.iter().map(|r| r.1).sum();
        if n == 0 {
            return (0, 0, 0);
        }
        let base = target / n;
        let need = target - base * n;
        if need == 0 {
            return (base, 0, 0);
        }
        let mut sorted = rows.to_vec();
        sorted.sort_unstable();
        let mut cum = 0;
        let reach = sorted
            .iter()
            .position(|r| {
                cum += r.1;
                cum >= need
            })
            .unwrap();
        let b = bucket_of(sorted[reach].0);
        let start = sorted.iter().position(|r| bucket_of(r.0) == b).unwrap();
        let mut taken: u64 = sorted[..start].iter().map(|r| r.1).sum();
        let (mut best, mut best_units, mut best_dist) = (start, taken, taken.abs_diff(need));
        let mut i = start;
        while i < sorted.len() {
            let h = sorted[i].0;
            while i < sorted.len() && sorted[i].0 == h {
                taken += sorted[i].1;
                i += 1;
            }
            if taken.abs_diff(need) < best_dist {
                (best, best_units, best_dist) = (i, taken, taken.abs_diff(need));
            }
            if taken >= need {
                break;
            }
        }
        (base, best as u64, best_units)
    }

    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let x = *state;
        x ^ (x >> 29)
    }

    #[test]
    fn two_pass_equals_brute_force() {
        let mut s = 7u64;
        for case in 0..300u64 {
            let n = (lcg(&mut s) % 3000) as usize + 1;
            let rows: Vec<(u64, u64)> = (0..n)
                .map(|_| {
                    let h = if case % 3 == 0 {
                        lcg(&mut s) % (1 << 62) // crowd the low buckets
                    } else {
                        lcg(&mut s)
                    };
                    (h, if case % 2 == 0 { 1 } else { lcg(&mut s) % 500 })
                })
                .collect();
            let total: u64 = rows.iter().map(|r| r.1).sum();
            let target = lcg(&mut s) % (total * 3 + 1);
            let mut hist = Histogram::default();
            for &(h, u) in &rows {
                hist.add(bucket_of(h), 1, u);
            }
            let c = cut(&hist, target);
            let mut boundary: Vec<(u64, u64)> = rows
                .iter()
                .copied()
                .filter(|&(h, _)| Some(bucket_of(h)) == c.boundary)
                .collect();
            let r = resolve(&c, &mut boundary);
            let (base, extra_rows, extra_units) = brute(&rows, target);
            assert_eq!(
                (r.base, r.extra_rows, r.extra_units),
                (base, extra_rows, extra_units)
            );
            // The threshold selects exactly those rows.
            let picked = rows
                .iter()
                .filter(|&&(h, _)| r.threshold.is_some_and(|t| h <= t))
                .count() as u64;
            assert_eq!(picked, r.extra_rows, "case {case}");
            if case % 2 == 0 {
                assert_eq!(r.base * total + r.extra_units, target, "rows are exact");
            }
        }
    }

    #[test]
    fn ties_move_together() {
        let rows = [(5u64, 1u64), (5, 1), (9, 1), (9, 1)];
        let mut hist = Histogram::default();
        for &(h, u) in &rows {
            hist.add(bucket_of(h), 1, u);
        }
        let c = cut(&hist, 3);
        let r = resolve(&c, &mut rows.to_vec());
        // 2 or 4 rows can be taken; both are 1 away from 3; the shorter wins.
        assert_eq!((r.extra_rows, r.threshold), (2, Some(5)));
    }
}
