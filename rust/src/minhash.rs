//! MinHash signatures: shingles → `num_perm` seeded minimums.
//!
//! A document's tokens ([`crate::textnorm::token_hashes`]) form word/character n-gram shingles
//! (`ngram` consecutive tokens, hashed by a rotate-xor-multiply chain and a 64-bit finaliser);
//! a document with fewer than `ngram` tokens has one shingle of all of them, one with no tokens
//! has none (and is never a near-duplicate). Permutation `k` is the multiply-add-shift hash
//! `h_k(x) = (a_k·x + b_k) >> 32` on 64-bit lanes (Dietzfelbinger), `a_k` odd, both drawn from
//! `seed` by splitmix64; the signature keeps `min_x h_k(x)` as a `u32`. The inner loop runs
//! over the `num_perm` lanes with no branches, so it vectorises: on x86-64 a copy compiled for
//! AVX-512 (64-bit multiplies in 8 lanes) or AVX2 is picked at run time. Cost per document:
//! O(tokens · ngram + shingles · num_perm). Same seed → same signatures on any machine.

use crate::error::{Result, SftError};
use crate::textnorm::{token_hashes, NormOptions};

/// Signature value of a permutation no shingle reached (an empty document).
pub const EMPTY: u32 = u32::MAX;

/// Seeded permutations and the shingling parameters.
#[derive(Debug, Clone)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
    ngram: usize,
    norm: NormOptions,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// Per-thread buffers.
#[derive(Debug, Default)]
pub struct Scratch {
    tokens: Vec<u64>,
    shingles: Vec<u64>,
    word: String,
}

#[inline(always)]
fn update_all(a: &[u64], b: &[u64], shingles: &[u64], sig: &mut [u32]) {
    let n = sig.len();
    let (a, b) = (&a[..n], &b[..n]);
    for &x in shingles {
        for k in 0..n {
            #[allow(clippy::cast_possible_truncation)]
            let v = (a[k].wrapping_mul(x).wrapping_add(b[k]) >> 32) as u32;
            sig[k] = sig[k].min(v);
        }
    }
}

// `unsafe` only because `#[target_feature]` functions must be `unsafe` before Rust 1.86 (our
// MSRV is 1.82); the body is the safe loop above, compiled for wider vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl")]
#[allow(unsafe_code)]
unsafe fn update_avx512(a: &[u64], b: &[u64], shingles: &[u64], sig: &mut [u32]) {
    update_all(a, b, shingles, sig);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn update_avx2(a: &[u64], b: &[u64], shingles: &[u64], sig: &mut [u32]) {
    update_all(a, b, shingles, sig);
}

#[allow(unsafe_code)]
fn update(a: &[u64], b: &[u64], shingles: &[u64], sig: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { update_avx512(a, b, shingles, sig) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { update_avx2(a, b, shingles, sig) };
        }
    }
    update_all(a, b, shingles, sig);
}

impl MinHasher {
    /// `num_perm` permutations from `seed`, shingles of `ngram` tokens.
    ///
    /// # Errors
    /// [`SftError::Config`] when `num_perm` or `ngram` is 0.
    pub fn new(num_perm: usize, ngram: usize, seed: u64, norm: NormOptions) -> Result<Self> {
        if num_perm == 0 || num_perm > 1024 {
            return Err(SftError::Config(format!(
                "num_perm: expected 1..=1024, got {num_perm}"
            )));
        }
        if ngram == 0 || ngram > 32 {
            return Err(SftError::Config(format!(
                "ngram: expected 1..=32, got {ngram}"
            )));
        }
        let mut state = seed ^ 0x5F73_6674_6661_7374; // "_sftfast"
        let a = (0..num_perm).map(|_| splitmix64(&mut state) | 1).collect();
        let b = (0..num_perm).map(|_| splitmix64(&mut state)).collect();
        Ok(MinHasher { a, b, ngram, norm })
    }

    /// Permutations per signature.
    #[must_use]
    pub fn num_perm(&self) -> usize {
        self.a.len()
    }

    /// Write the signature of `text` into `sig` (length `num_perm`); returns the number of
    /// shingles, repeats included (0: the document has no tokens and `sig` is all [`EMPTY`]).
    pub fn signature(&self, text: &str, scratch: &mut Scratch, sig: &mut [u32]) -> usize {
        sig.fill(EMPTY);
        scratch.tokens.clear();
        token_hashes(text, self.norm, &mut scratch.word, &mut scratch.tokens);
        let t = &scratch.tokens;
        let sh = &mut scratch.shingles;
        sh.clear();
        let n = self.ngram.min(t.len());
        if n == 0 {
            return 0;
        }
        for w in t.windows(n) {
            let mut h = 0x243F_6A88_85A3_08D3u64;
            for &x in w {
                h = (h.rotate_left(23) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
            sh.push(fmix64(h));
        }
        // No dedup of repeated shingles: `min` ignores repeats, and sorting cost more than the
        // updates it saved (measured on the dedup bench corpus).
        update(&self.a, &self.b, sh, sig);
        sh.len()
    }
}

/// Signatures of many texts (row-major, `num_perm` values per text; null → all [`EMPTY`]),
/// computed in parallel.
///
/// # Errors
/// [`SftError::Interrupted`] on Ctrl-C.
pub fn signatures(hasher: &MinHasher, texts: &[Option<&str>]) -> Result<Vec<u32>> {
    use rayon::prelude::*;
    let np = hasher.num_perm();
    let mut out = vec![EMPTY; texts.len() * np];
    crate::parallel::install(|| {
        out.par_chunks_mut(np * 256)
            .zip(texts.par_chunks(256))
            .try_for_each_init(Scratch::default, |scratch, (dst, src)| -> Result<()> {
                crate::parallel::check_cancel()?;
                for (sig, t) in dst.chunks_exact_mut(np).zip(src) {
                    if let Some(t) = t {
                        hasher.signature(t, scratch, sig);
                    }
                }
                Ok(())
            })
    })??;
    Ok(out)
}

/// The share of equal positions of two signatures: the MinHash estimate of their Jaccard
/// similarity.
#[must_use]
pub fn estimate_jaccard(a: &[u32], b: &[u32]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    #[allow(clippy::cast_precision_loss)]
    {
        same as f64 / a.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(m: &MinHasher, text: &str) -> Vec<u32> {
        let mut s = vec![0; m.num_perm()];
        m.signature(text, &mut Scratch::default(), &mut s);
        s
    }

    #[test]
    fn vectorised_paths_equal_the_plain_loop() {
        let m = MinHasher::new(128, 5, 1, NormOptions::default()).unwrap();
        let shingles: Vec<u64> = (0..300u64).map(|i| fmix64(i + 1)).collect();
        let mut plain = vec![EMPTY; 128];
        update_all(&m.a, &m.b, &shingles, &mut plain);
        let mut best = vec![EMPTY; 128];
        update(&m.a, &m.b, &shingles, &mut best);
        assert_eq!(plain, best);
    }

    #[test]
    fn estimates_track_exact_jaccard() {
        let m = MinHasher::new(256, 1, 7, NormOptions::default()).unwrap();
        let words: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
        // Two sets of 300 words sharing 200: Jaccard 200 / 400 = 0.5.
        let a = words[..300].join(" ");
        let b = words[100..].join(" ");
        let j = estimate_jaccard(&sig(&m, &a), &sig(&m, &b));
        assert!((j - 0.5).abs() < 0.1, "{j}");
        assert_eq!(estimate_jaccard(&sig(&m, &a), &sig(&m, &a)), 1.0);
    }

    #[test]
    fn short_and_empty_documents() {
        let m = MinHasher::new(16, 5, 0, NormOptions::default()).unwrap();
        let mut s = vec![0; 16];
        assert_eq!(m.signature("  !! ", &mut Scratch::default(), &mut s), 0);
        assert!(s.iter().all(|&v| v == EMPTY));
        assert_eq!(m.signature("two words", &mut Scratch::default(), &mut s), 1);
        assert_eq!(sig(&m, "Two, WORDS!"), sig(&m, "two words"));
        assert_ne!(sig(&m, "two words"), sig(&m, "words two"));
        assert!(MinHasher::new(0, 5, 0, NormOptions::default()).is_err());
    }
}
