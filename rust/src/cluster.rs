//! Union-find over candidate edges, then a keep/drop decision per row.
//!
//! The union keeps the smaller root, so every cluster's root is its smallest row and the
//! partition (and its ids) does not depend on the order of the edges. Path halving keeps finds
//! near O(1). Keep policies: `first` (the smallest row), `longest` (most bytes of text) or
//! `score` (highest score); ties go to the smaller row. Memory: 4 bytes per row.

use crate::error::{Result, SftError};

/// Disjoint sets over rows `0..n`.
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    /// `n` singletons.
    #[must_use]
    pub fn new(n: u32) -> Self {
        UnionFind {
            parent: (0..n).collect(),
        }
    }

    /// The root (smallest row) of `x`'s set.
    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }

    /// Join the sets of `a` and `b`.
    pub fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra < rb {
            self.parent[rb as usize] = ra;
        } else if rb < ra {
            self.parent[ra as usize] = rb;
        }
    }

    /// The root of every row.
    pub fn roots(&mut self) -> Vec<u32> {
        #[allow(clippy::cast_possible_truncation)]
        (0..self.parent.len() as u32)
            .map(|x| self.find(x))
            .collect()
    }
}

/// Which row of a cluster stays.
#[derive(Debug, Clone, PartialEq)]
pub enum Keep {
    /// The smallest row.
    First,
    /// The row with the most bytes (given per row).
    Longest(Vec<u64>),
    /// The row with the highest score (given per row; NaN never wins).
    Score(Vec<f64>),
}

/// For each row, the row kept for its cluster (itself when it is kept or alone).
///
/// # Errors
/// [`SftError::Schema`] when the per-row values have the wrong length.
pub fn representatives(roots: &[u32], keep: &Keep) -> Result<Vec<u32>> {
    let n = roots.len();
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(SftError::Schema(format!(
                "keep policy: expected one value per row ({n}), got {len}"
            )))
        }
    };
    let mut best: Vec<u32> = roots.to_vec();
    match keep {
        Keep::First => {}
        Keep::Longest(len) => {
            check(len.len())?;
            for (row, &root) in roots.iter().enumerate() {
                let b = &mut best[root as usize];
                if len[row] > len[*b as usize] {
                    #[allow(clippy::cast_possible_truncation)]
                    {
                        *b = row as u32;
                    }
                }
            }
        }
        Keep::Score(score) => {
            check(score.len())?;
            for (row, &root) in roots.iter().enumerate() {
                let b = &mut best[root as usize];
                let (s, cur) = (score[row], score[*b as usize]);
                if s > cur || (cur.is_nan() && !s.is_nan()) {
                    #[allow(clippy::cast_possible_truncation)]
                    {
                        *b = row as u32;
                    }
                }
            }
        }
    }
    Ok(roots.iter().map(|&r| best[r as usize]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_smallest_rows_whatever_the_edge_order() {
        let edges = [(5, 3), (3, 9), (1, 2), (9, 0)];
        let mut a = UnionFind::new(10);
        for &(x, y) in &edges {
            a.union(x, y);
        }
        let mut b = UnionFind::new(10);
        for &(x, y) in edges.iter().rev() {
            b.union(y, x);
        }
        assert_eq!(a.roots(), b.roots());
        assert_eq!(a.roots(), vec![0, 1, 1, 0, 4, 0, 6, 7, 8, 0]);
    }

    #[test]
    fn keep_policies() {
        let roots = vec![0, 0, 0, 3];
        assert_eq!(
            representatives(&roots, &Keep::First).unwrap(),
            vec![0, 0, 0, 3]
        );
        let longest = Keep::Longest(vec![5, 9, 9, 1]);
        assert_eq!(representatives(&roots, &longest).unwrap(), vec![1, 1, 1, 3]);
        let score = Keep::Score(vec![f64::NAN, 0.5, 2.0, 0.0]);
        assert_eq!(representatives(&roots, &score).unwrap(), vec![2, 2, 2, 3]);
        assert!(representatives(&roots, &Keep::Longest(vec![1])).is_err());
    }
}
