//! Locality-sensitive hashing over MinHash signatures: bands → bucket keys → candidate edges.
//!
//! A signature of `num_perm` values is cut into bands of consecutive rows; two documents are
//! candidates when all rows of some band agree, which happens with probability
//! `P(s) = 1 − Π_j (1 − s^{r_j})` at Jaccard `s`. [`choose_bands`] picks the rows per band that
//! minimise `w_fp · ∫₀ᵗ P + w_fn · ∫ₜ¹ (1 − P)` around the threshold `t`, using every
//! permutation slot (`b = ⌊num_perm / r⌋` bands of `r` rows, the leftover slots spread one each
//! over the first bands). A band's key is xxh3-64 of its values seeded by the band index.
//!
//! Buckets become edges without quadratic blow-up: per band, the (key, row) pairs are sorted
//! and each row of a run is joined to the run's first (smallest) row — a star, `size − 1` edges
//! however large the bucket. Cost per band: O(n log n) for the sort; memory: 16 bytes per row
//! for the (key, row) pairs of the band being processed.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Rows per band for `num_perm` permutations at Jaccard `threshold`.
#[must_use]
pub fn choose_bands(num_perm: usize, threshold: f64, fp_weight: f64, fn_weight: f64) -> Vec<usize> {
    let mut best: Option<(f64, Vec<usize>)> = None;
    for r in 1..=num_perm {
        let b = num_perm / r;
        let left = num_perm - b * r;
        if left > b {
            continue;
        }
        let rows: Vec<usize> = (0..b).map(|j| if j < left { r + 1 } else { r }).collect();
        let p = |s: f64| {
            1.0 - rows
                .iter()
                .map(|&k| 1.0 - s.powi(i32::try_from(k).unwrap_or(i32::MAX)))
                .product::<f64>()
        };
        let cost = fp_weight * integrate(&p, 0.0, threshold)
            + fn_weight * integrate(&|s| 1.0 - p(s), threshold, 1.0);
        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
            best = Some((cost, rows));
        }
    }
    best.map(|(_, r)| r).unwrap_or_default()
}

/// Probability that two documents at Jaccard `s` share a bucket.
#[must_use]
pub fn candidate_probability(rows: &[usize], s: f64) -> f64 {
    1.0 - rows
        .iter()
        .map(|&k| 1.0 - s.powi(i32::try_from(k).unwrap_or(i32::MAX)))
        .product::<f64>()
}

fn integrate(f: &dyn Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let steps = 200;
    #[allow(clippy::cast_precision_loss)]
    let h = (b - a) / steps as f64;
    #[allow(clippy::cast_precision_loss)]
    let sum: f64 = (0..steps).map(|i| f(a + (i as f64 + 0.5) * h)).sum();
    sum * h
}

/// The band keys of one signature, appended to `out`.
pub fn band_keys(sig: &[u32], rows: &[usize], out: &mut Vec<u64>) {
    let mut start = 0;
    let mut buf = [0u8; 4 * 64];
    for (j, &r) in rows.iter().enumerate() {
        let band = &sig[start..start + r];
        let bytes = &mut buf[..4 * r.min(64)];
        if r <= 64 {
            for (chunk, v) in bytes.chunks_exact_mut(4).zip(band) {
                chunk.copy_from_slice(&v.to_le_bytes());
            }
            out.push(xxh3_64_with_seed(bytes, j as u64));
        } else {
            let v: Vec<u8> = band.iter().flat_map(|x| x.to_le_bytes()).collect();
            out.push(xxh3_64_with_seed(&v, j as u64));
        }
        start += r;
    }
}

/// Star edges of one band: `(first row of the bucket, other row)`, from `(key, row)` pairs
/// (sorted here). Also returns the largest bucket size.
pub fn band_edges(pairs: &mut [(u64, u32)], mut edge: impl FnMut(u32, u32)) -> usize {
    pairs.sort_unstable();
    let mut largest = 0;
    let mut i = 0;
    while i < pairs.len() {
        let (key, first) = pairs[i];
        let mut j = i + 1;
        while j < pairs.len() && pairs[j].0 == key {
            edge(first, pairs[j].1);
            j += 1;
        }
        largest = largest.max(j - i);
        i = j;
    }
    largest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_use_every_slot_and_sit_near_the_threshold() {
        for (perm, t) in [(128, 0.8), (128, 0.5), (256, 0.9), (64, 0.7)] {
            let rows = choose_bands(perm, t, 0.5, 0.5);
            assert_eq!(rows.iter().sum::<usize>(), perm);
            assert!(candidate_probability(&rows, t) > 0.3, "{perm} {t} {rows:?}");
            assert!(
                candidate_probability(&rows, t - 0.3) < 0.2,
                "{perm} {t} {rows:?}"
            );
        }
    }

    #[test]
    fn a_giant_bucket_gives_linear_edges() {
        let mut pairs: Vec<(u64, u32)> = (0..100_000u32).map(|i| (7, 99_999 - i)).collect();
        pairs.push((3, 5));
        let mut edges = 0usize;
        let largest = band_edges(&mut pairs, |a, _| {
            assert_eq!(a, 0);
            edges += 1;
        });
        assert_eq!((edges, largest), (99_999, 100_000));
    }
}
