//! Near-duplicate removal over a stream of text batches: MinHash → LSH bands → union-find →
//! keep policy.
//!
//! [`NearDedup::add`] signs each batch in parallel ([`crate::minhash`]) and keeps, per row, only
//! its band keys (8 bytes per band), its text length (8 bytes) and, when candidates are
//! verified, its signature (4 bytes per permutation). [`NearDedup::finish`] then takes the
//! bands one at a time: sort (key, row) pairs, join each bucket as a star to its smallest row
//! ([`crate::lsh`]), optionally dropping edges whose estimated Jaccard is under the verify
//! threshold, and union-find the rest ([`crate::cluster`]). With 128 permutations and the
//! default 16 bands at threshold 0.8 that is ~140 bytes per row while reading, then
//! 48 bytes per row for the two bands sorted at a time (keys plus sorted (key, row) pairs):
//! 10M rows ≈ 1.9 GB. Rows are numbered in the order
//! they are added, signatures depend only on the text and the seed, and the union keeps the
//! smallest row as root, so the result is the same for any thread count or batch size.

use rayon::prelude::*;

use crate::cluster::{representatives, Keep, UnionFind};
use crate::error::{Result, SftError};
use crate::lsh;
use crate::minhash::{estimate_jaccard, MinHasher, Scratch};
use crate::parallel;
use crate::textnorm::NormOptions;

/// Parameters of a near-dedup run.
#[derive(Debug, Clone, PartialEq)]
pub struct NearDedupConfig {
    /// Permutations per signature.
    pub num_perm: usize,
    /// Tokens per shingle.
    pub ngram: usize,
    /// Jaccard similarity from which documents are duplicates.
    pub threshold: f64,
    /// Permutation seed.
    pub seed: u64,
    /// Bands (`None`: chosen from the threshold, every slot used).
    pub num_bands: Option<usize>,
    /// Keep candidate edges only when the signatures' estimated Jaccard reaches this.
    pub verify_threshold: Option<f64>,
    /// Normalisation before tokens are taken.
    pub norm: NormOptions,
    /// Keep band keys in files under this folder instead of memory (one file per band, read
    /// back one band at a time by [`NearDedup::finish`]).
    pub spill_dir: Option<std::path::PathBuf>,
}

impl Default for NearDedupConfig {
    fn default() -> Self {
        NearDedupConfig {
            num_perm: 128,
            ngram: 5,
            threshold: 0.8,
            seed: 0,
            num_bands: None,
            verify_threshold: None,
            norm: NormOptions::default(),
            spill_dir: None,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Rows seen.
    pub rows: u64,
    /// Rows with no tokens (null, empty, punctuation only): never near-duplicates.
    pub rows_without_tokens: u64,
    /// Candidate edges (star edges over all bands, before verification).
    pub candidate_edges: u64,
    /// Edges dropped by verification.
    pub edges_rejected: u64,
    /// Clusters of two or more rows.
    pub clusters: u64,
    /// Rows marked duplicate (all but one per cluster).
    pub duplicates: u64,
    /// The largest bucket of any band.
    pub largest_bucket: u64,
}

/// Per row: its cluster (smallest row), the row kept for it, and the stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupOutcome {
    /// Cluster id of each row: the smallest row of its cluster.
    pub cluster: Vec<u32>,
    /// The row kept for each row's cluster (the row itself when kept).
    pub representative: Vec<u32>,
    /// Counts.
    pub stats: DedupStats,
    /// Rows per band used.
    pub rows_per_band: Vec<usize>,
}

impl Drop for NearDedup {
    fn drop(&mut self) {
        self.spill.clear();
        if let Some(dir) = &self.spill_root {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A spilled band's keys (and the file removed).
fn read_band(path: &std::path::Path) -> Result<Vec<u64>> {
    let bytes =
        std::fs::read(path).map_err(|e| SftError::io(format!("reading {}", path.display()), e))?;
    let _ = std::fs::remove_file(path);
    if bytes.len() % 8 != 0 {
        return Err(SftError::Io {
            context: format!("reading {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated band file"),
        });
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

/// A near-dedup run: add batches, then finish.
#[derive(Debug)]
pub struct NearDedup {
    cfg: NearDedupConfig,
    hasher: MinHasher,
    rows_per_band: Vec<usize>,
    /// Per band: the key of every row (unused for rows without tokens), in memory...
    bands: Vec<Vec<u64>>,
    /// ...or appended to one file per band,
    spill: Vec<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)>,
    /// in this run's own folder (removed when the run is dropped).
    spill_root: Option<std::path::PathBuf>,
    has_tokens: Vec<bool>,
    lengths: Vec<u64>,
    sigs: Option<Vec<u32>>,
}

const CHUNK: usize = 512;

/// Weights of the false-positive and false-negative areas when bands are chosen. Recall first:
/// with equal weights the S-curve is centred on the threshold, so a pair exactly at it is found
/// about half the time (datasketch's 9 × 13 at 0.8: 0.45); these weights give 16 × 8 for 128
/// permutations at 0.8 (0.95 at the threshold, 0.06 at Jaccard 0.5). Candidates far below the
/// threshold are rare in SFT data, and `verify_threshold` removes them when they are not.
const FP_WEIGHT: f64 = 0.05;
const FN_WEIGHT: f64 = 0.95;

impl NearDedup {
    /// A new run.
    ///
    /// # Errors
    /// [`SftError::Config`] for a parameter out of range (naming it).
    pub fn new(cfg: NearDedupConfig) -> Result<Self> {
        if !(cfg.threshold > 0.0 && cfg.threshold < 1.0) {
            return Err(SftError::Config(format!(
                "threshold: expected a number in (0, 1), got {}",
                cfg.threshold
            )));
        }
        if let Some(v) = cfg.verify_threshold {
            if !(0.0..=1.0).contains(&v) {
                return Err(SftError::Config(format!(
                    "verify_threshold: expected a number in [0, 1], got {v}"
                )));
            }
        }
        let hasher = MinHasher::new(cfg.num_perm, cfg.ngram, cfg.seed, cfg.norm)?;
        let rows_per_band = match cfg.num_bands {
            None => lsh::choose_bands(cfg.num_perm, cfg.threshold, FP_WEIGHT, FN_WEIGHT),
            Some(b) if b >= 1 && b <= cfg.num_perm => {
                let r = cfg.num_perm / b;
                let left = cfg.num_perm - b * r;
                (0..b).map(|j| if j < left { r + 1 } else { r }).collect()
            }
            Some(b) => {
                return Err(SftError::Config(format!(
                    "num_bands: expected 1..={}, got {b}",
                    cfg.num_perm
                )))
            }
        };
        let mut spill = Vec::new();
        let mut spill_root = None;
        if let Some(parent) = &cfg.spill_dir {
            // A folder of this run's own, so that runs sharing `spill_dir` never collide.
            static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = parent.join(format!("sftfast-dedup-{}-{run}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(|e| SftError::io(format!("creating {}", dir.display()), e))?;
            spill_root = Some(dir.clone());
            for j in 0..rows_per_band.len() {
                let path = dir.join(format!("sftfast-band-{j:03}.u64"));
                let f = std::fs::File::create(&path)
                    .map_err(|e| SftError::io(format!("creating {}", path.display()), e))?;
                spill.push((path, std::io::BufWriter::with_capacity(1 << 20, f)));
            }
        }
        Ok(NearDedup {
            bands: vec![Vec::new(); rows_per_band.len()],
            spill,
            spill_root,
            sigs: cfg.verify_threshold.map(|_| Vec::new()),
            cfg,
            hasher,
            rows_per_band,
            has_tokens: Vec::new(),
            lengths: Vec::new(),
        })
    }

    /// Rows added so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.has_tokens.len()
    }

    /// Whether no row was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.has_tokens.is_empty()
    }

    /// Sign a batch of texts (`None` = null) and keep their band keys.
    ///
    /// # Errors
    /// [`SftError::Config`] past 2^32 − 1 rows; [`SftError::Interrupted`] on Ctrl-C.
    pub fn add(&mut self, texts: &[Option<&str>]) -> Result<()> {
        if self.len() + texts.len() > u32::MAX as usize {
            return Err(SftError::Config(
                "near_dedup: at most 4,294,967,295 rows per run".into(),
            ));
        }
        let nb = self.rows_per_band.len();
        let np = self.hasher.num_perm();
        let keep_sigs = self.sigs.is_some();
        // Per chunk: band keys (row-major), has-tokens flags, signatures if kept.
        type Chunk = (Vec<u64>, Vec<bool>, Vec<u32>);
        let chunks: Vec<Chunk> = parallel::install(|| {
            texts
                .par_chunks(CHUNK)
                .map_init(Scratch::default, |scratch, part| -> Result<Chunk> {
                    parallel::check_cancel()?;
                    let mut keys = Vec::with_capacity(part.len() * nb);
                    let mut flags = Vec::with_capacity(part.len());
                    let mut sigs = Vec::with_capacity(if keep_sigs { part.len() * np } else { 0 });
                    let mut sig = vec![0u32; np];
                    for t in part {
                        let shingles = t.map_or(0, |t| self.hasher.signature(t, scratch, &mut sig));
                        if t.is_none() {
                            sig.fill(crate::minhash::EMPTY);
                        }
                        flags.push(shingles > 0);
                        lsh::band_keys(&sig, &self.rows_per_band, &mut keys);
                        if keep_sigs {
                            sigs.extend_from_slice(&sig);
                        }
                    }
                    Ok((keys, flags, sigs))
                })
                .collect::<Result<Vec<_>>>()
        })??;
        for (keys, flags, sigs) in chunks {
            if self.spill.is_empty() {
                for row in keys.chunks_exact(nb) {
                    for (band, &k) in self.bands.iter_mut().zip(row) {
                        band.push(k);
                    }
                }
            } else {
                use std::io::Write;
                for row in keys.chunks_exact(nb) {
                    for ((path, w), &k) in self.spill.iter_mut().zip(row) {
                        w.write_all(&k.to_le_bytes())
                            .map_err(|e| SftError::io(format!("writing {}", path.display()), e))?;
                    }
                }
            }
            self.has_tokens.extend_from_slice(&flags);
            if let Some(all) = &mut self.sigs {
                all.extend_from_slice(&sigs);
            }
        }
        self.lengths
            .extend(texts.iter().map(|t| t.map_or(0, |t| t.len() as u64)));
        parallel::add_progress(texts.len());
        Ok(())
    }

    /// The text lengths in bytes (for the `longest` keep policy).
    #[must_use]
    pub fn lengths(&self) -> &[u64] {
        &self.lengths
    }

    /// Cluster the rows added and decide which stay.
    ///
    /// # Errors
    /// [`SftError::Schema`] when a keep policy's per-row values have the wrong length;
    /// [`SftError::Interrupted`] on Ctrl-C.
    pub fn finish(&mut self, keep: &Keep) -> Result<DedupOutcome> {
        #[allow(clippy::cast_possible_truncation)]
        let n = self.len() as u32;
        let mut uf = UnionFind::new(n);
        let mut stats = DedupStats {
            rows: u64::from(n),
            rows_without_tokens: self.has_tokens.iter().filter(|&&h| !h).count() as u64,
            ..DedupStats::default()
        };
        let np = self.hasher.num_perm();
        let verify = self.cfg.verify_threshold;
        let mut bands = std::mem::take(&mut self.bands);
        let spilled: Vec<std::path::PathBuf> = std::mem::take(&mut self.spill)
            .into_iter()
            .map(|(path, w)| {
                w.into_inner().map_err(|e| {
                    SftError::io(format!("writing {}", path.display()), e.into_error())
                })?;
                Ok(path)
            })
            .collect::<Result<_>>()?;
        // Sort the bands in parallel (two at a time bounds the extra memory), union in order.
        let nbands = self.rows_per_band.len();
        for first in (0..nbands).step_by(2) {
            parallel::check_cancel()?;
            let pair: Vec<Vec<u64>> = (first..nbands.min(first + 2))
                .map(|j| match spilled.get(j) {
                    Some(path) => read_band(path),
                    None => Ok(std::mem::take(&mut bands[j])),
                })
                .collect::<Result<_>>()?;
            if let Some(bad) = pair.iter().find(|b| b.len() != self.has_tokens.len()) {
                return Err(SftError::Shard(format!(
                    "near_dedup: a band holds {} keys for {} rows (an earlier add failed part way)",
                    bad.len(),
                    self.has_tokens.len()
                )));
            }
            let mut sorted: Vec<Vec<(u64, u32)>> = parallel::install(|| {
                pair.par_iter()
                    .map(|keys| {
                        #[allow(clippy::cast_possible_truncation)]
                        let mut v: Vec<(u64, u32)> = keys
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| self.has_tokens[*i])
                            .map(|(i, &k)| (k, i as u32))
                            .collect();
                        v.sort_unstable();
                        v
                    })
                    .collect()
            })?;
            for pairs in &mut sorted {
                let largest = lsh::band_edges(pairs, |a, b| {
                    stats.candidate_edges += 1;
                    if let (Some(t), Some(sigs)) = (verify, &self.sigs) {
                        let (a_, b_) = (a as usize * np, b as usize * np);
                        if estimate_jaccard(&sigs[a_..a_ + np], &sigs[b_..b_ + np]) < t {
                            stats.edges_rejected += 1;
                            return;
                        }
                    }
                    uf.union(a, b);
                });
                stats.largest_bucket = stats.largest_bucket.max(largest as u64);
            }
        }
        let roots = uf.roots();
        let keep = match keep {
            Keep::Longest(v) if v.is_empty() => Keep::Longest(self.lengths.clone()),
            other => other.clone(),
        };
        let representative = representatives(&roots, &keep)?;
        let mut sizes = vec![0u32; roots.len()];
        for &r in &roots {
            sizes[r as usize] += 1;
        }
        stats.clusters = sizes.iter().filter(|&&s| s >= 2).count() as u64;
        stats.duplicates = representative
            .iter()
            .enumerate()
            .filter(|(i, &r)| r as usize != *i)
            .count() as u64;
        Ok(DedupOutcome {
            cluster: roots,
            representative,
            stats,
            rows_per_band: self.rows_per_band.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(texts: &[Option<&str>], cfg: NearDedupConfig, batch: usize) -> DedupOutcome {
        let mut d = NearDedup::new(cfg).unwrap();
        for part in texts.chunks(batch) {
            d.add(part).unwrap();
        }
        d.finish(&Keep::First).unwrap()
    }

    fn doc(seed: usize, words: usize) -> String {
        (0..words)
            .map(|i| format!("w{}", (i * 7919 + seed * 104_729) % 5003))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn finds_exact_and_near_duplicates_in_english_and_chinese() {
        let a = doc(1, 200);
        let a_edit = format!("{a} extra"); // Jaccard ≈ 196/201
        let b = doc(2, 200);
        let zh = "今天天气很好，我们一起去公园散步吧。公园里有很多人在跑步和打太极拳，孩子们在草地上放风筝。";
        let zh_edit = format!("{zh}真开心");
        let texts: Vec<Option<&str>> = vec![
            Some(&a),
            Some(&b),
            Some(&a_edit),
            Some(zh),
            None,
            Some(""),
            Some(&zh_edit),
            Some(&a),
        ];
        let out = run(&texts, NearDedupConfig::default(), 3);
        assert_eq!(out.cluster, vec![0, 1, 0, 3, 4, 5, 3, 0]);
        assert_eq!(out.stats.duplicates, 3);
        assert_eq!(out.stats.clusters, 2);
        assert_eq!(out.stats.rows_without_tokens, 2);
        // Same result for one batch, other thread counts, and with verification.
        assert_eq!(
            run(&texts, NearDedupConfig::default(), 100).cluster,
            out.cluster
        );
        let verified = NearDedupConfig {
            verify_threshold: Some(0.7),
            ..NearDedupConfig::default()
        };
        assert_eq!(run(&texts, verified, 2).cluster, out.cluster);
        let dir = std::env::temp_dir().join(format!("sftfast-spill-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spilled = NearDedupConfig {
            spill_dir: Some(dir.clone()),
            ..NearDedupConfig::default()
        };
        assert_eq!(run(&texts, spilled, 3).cluster, out.cluster);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "band files removed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn giant_bucket_is_linear() {
        let same = "the very same short text again and again";
        let texts: Vec<Option<&str>> = vec![Some(same); 50_000];
        let out = run(&texts, NearDedupConfig::default(), 10_000);
        assert_eq!(out.stats.clusters, 1);
        assert_eq!(out.stats.duplicates, 49_999);
        assert_eq!(out.stats.largest_bucket, 50_000);
        assert!(out.stats.candidate_edges <= 50_000 * 20);
    }

    #[test]
    fn bad_parameters() {
        let bad = NearDedupConfig {
            threshold: 1.5,
            ..NearDedupConfig::default()
        };
        assert!(NearDedup::new(bad)
            .unwrap_err()
            .to_string()
            .contains("threshold"));
        let bad = NearDedupConfig {
            num_bands: Some(1000),
            ..NearDedupConfig::default()
        };
        assert!(NearDedup::new(bad)
            .unwrap_err()
            .to_string()
            .contains("num_bands"));
    }
}
