//! Packed token shards: the on-disk format, its writer and its reader (issue #6).
//!
//! # Format (version 1)
//! A dataset is a folder with `manifest.json` and one sub-folder per shard (`shard-00000`, …).
//! A shard holds five `.npy` files (NumPy 1.0, little-endian, 1-D, 64-byte aligned data), so
//! `numpy.load(f, mmap_mode="r")` reads each without sftfast:
//!
//! | file | dtype | length | meaning |
//! |---|---|---|---|
//! | `input_ids.npy` | `<u4` | T | token ids, row after row, sample after sample |
//! | `labels.npy` | `<i4` | T | the token to learn at each position, −100 where not learned |
//! | `sample_offsets.npy` | `<u8` | S + 1 | sample (piece) `i` is `input_ids[o[i]:o[i+1]]` |
//! | `row_offsets.npy` | `<u8` | R + 1 | packed row `r` is samples `o[r]:o[r+1]` |
//! | `sample_ids.npy` | `<u8` | S | the input row each piece came from |
//!
//! Labels are stored as given (not shifted, first tokens not masked); the loader masks each
//! sample's first label at collation, as transformers' padding-free collator does.
//! `manifest.json` lists every shard with its counts and, per file, its size and xxh3-64; it
//! also records `seq_len`, the packing method and counts, the tokenizer hash and a config
//! fingerprint given by the caller.
//!
//! # Atomicity
//! A shard is written into `shard-NNNNN.tmp-<pid>`, each file synced, then renamed into place;
//! the manifest is written last the same way. A dataset is the manifest: a folder without one
//! (a crash mid-write) does not open, and a shard is only read if the manifest lists it with
//! matching sizes (and checksums with `verify`).

mod npy;
mod read;
mod write;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use npy::Dtype;
pub use read::{FlatBatch, Le32, Le64, PaddedBatch, ShardSet, Sink};
pub use write::{PackMethod, SampleBatch, ShardConfig, ShardWriter};

/// The `format` field of every manifest.
pub const FORMAT: &str = "sftfast-shards";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// The label that means "not learned".
pub const IGNORE: i32 = -100;

/// The files of a shard, in a fixed order, with their dtypes.
pub const FILES: [(&str, Dtype); 5] = [
    ("input_ids.npy", Dtype::U32),
    ("labels.npy", Dtype::I32),
    ("sample_offsets.npy", Dtype::U64),
    ("row_offsets.npy", Dtype::U64),
    ("sample_ids.npy", Dtype::U64),
];

/// Size and checksum of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Bytes on disk.
    pub bytes: u64,
    /// xxh3-64 of the whole file, hex.
    pub xxh3_64: String,
}

/// One shard in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Folder name under the dataset.
    pub name: String,
    /// Packed rows.
    pub rows: u64,
    /// Samples (pieces).
    pub samples: u64,
    /// Tokens.
    pub tokens: u64,
    /// Files by name.
    pub files: BTreeMap<String, FileEntry>,
}

/// How the rows were packed, with the counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackingInfo {
    /// `bfd` or `window`.
    pub method: String,
    /// Window size for `window`.
    pub window: Option<usize>,
    /// Overlong policy name.
    pub overlong: String,
    /// Samples-per-row cap.
    pub max_per_row: Option<u32>,
    /// Samples given.
    pub input_samples: u64,
    /// Samples left out (empty, or overlong with `drop`).
    pub dropped: u64,
    /// Samples truncated.
    pub truncated: u64,
    /// Tokens lost to truncation or dropping.
    pub tokens_lost: u64,
    /// Real tokens / slots.
    pub efficiency: f64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// Row length in tokens.
    pub seq_len: u32,
    /// Packed rows in all shards.
    pub rows: u64,
    /// Samples (pieces) in all shards.
    pub samples: u64,
    /// Tokens in all shards.
    pub tokens: u64,
    /// Tokens whose label is not −100.
    pub loss_tokens: u64,
    /// Packing method and counts.
    pub packing: PackingInfo,
    /// Hash of the tokenizer the ids come from, if given.
    pub tokenizer_hash: Option<String>,
    /// Fingerprint of the configuration that made the data, if given.
    pub config_fingerprint: Option<String>,
    /// Writer name and version.
    pub created_by: String,
    /// The shards, in order.
    pub shards: Vec<ShardEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::Overlong;

    fn samples(n: usize) -> (Vec<u32>, Vec<i32>, Vec<(usize, usize)>) {
        let (mut t, mut l, mut r) = (Vec::new(), Vec::new(), Vec::new());
        let mut s = 7u64;
        for i in 0..n {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let len = (s >> 33) as usize % 40;
            let a = t.len();
            for j in 0..len {
                #[allow(clippy::cast_possible_truncation)]
                t.push((i * 1000 + j) as u32);
                #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
                l.push(if j % 3 == 0 {
                    IGNORE
                } else {
                    (i * 1000 + j) as i32
                });
            }
            r.push((a, t.len()));
        }
        (t, l, r)
    }

    fn cfg(dir: &std::path::Path, method: PackMethod, overlong: Overlong) -> ShardConfig {
        ShardConfig {
            out_dir: dir.to_path_buf(),
            seq_len: 32,
            overlong,
            max_per_row: None,
            method,
            shard_tokens: 500,
            seed: 1,
            tokenizer_hash: Some("tok".into()),
            config_fingerprint: None,
            overwrite: false,
        }
    }

    fn write(dir: &std::path::Path, method: PackMethod, overlong: Overlong) -> Manifest {
        let (t, l, r) = samples(300);
        let mut w = ShardWriter::new(cfg(dir, method, overlong)).unwrap();
        for part in r.chunks(70) {
            w.add(SampleBatch {
                tokens: &t,
                labels: Some(&l),
                ranges: part,
            })
            .unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trip_every_token_once() {
        for (k, method) in [PackMethod::Bfd, PackMethod::Window(16)]
            .into_iter()
            .enumerate()
        {
            for overlong in [Overlong::Split, Overlong::TruncateLeft] {
                let dir = std::env::temp_dir()
                    .join(format!("sft-shard-{}-{k}-{overlong:?}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let m = write(&dir, method, overlong);
                assert!(m.shards.len() > 1);
                let set = ShardSet::open(&dir, true).unwrap();
                let (t, l, r) = samples(300);
                let mut got: Vec<Vec<(usize, u32, i32)>> = vec![Vec::new(); r.len()];
                for row in 0..set.num_rows() {
                    let flat = set.collate_flat(&[row]).unwrap();
                    assert!(flat.input_ids.len() <= 32);
                    for (pi, (a, b, id)) in set.row_pieces(row).unwrap().into_iter().enumerate() {
                        let base = a - set.row_pieces(row).unwrap()[0].0;
                        let off = flat.cu_seq_lens[pi] as usize;
                        assert_eq!(off, base);
                        for j in 0..b - a {
                            #[allow(clippy::cast_possible_truncation)]
                            got[id as usize].push((j, flat.input_ids[off + j] as u32, l[0]));
                        }
                    }
                }
                for (i, &(a, b)) in r.iter().enumerate() {
                    let toks: Vec<u32> = got[i].iter().map(|x| x.1).collect();
                    let mut toks_sorted = toks.clone();
                    toks_sorted.sort_unstable();
                    let want = &t[a..b];
                    if overlong == Overlong::Split || b - a <= 32 {
                        assert_eq!(toks_sorted, want, "sample {i}");
                    } else {
                        assert_eq!(toks_sorted, &want[want.len() - 32..]);
                    }
                }
                // Same input → same bytes.
                let dir2 = dir.with_extension("again");
                let _ = std::fs::remove_dir_all(&dir2);
                let m2 = write(&dir2, method, overlong);
                assert_eq!(
                    m.shards.iter().map(|s| &s.files).collect::<Vec<_>>(),
                    m2.shards.iter().map(|s| &s.files).collect::<Vec<_>>()
                );
                let _ = std::fs::remove_dir_all(&dir2);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    #[test]
    fn collate_layouts_mask_first_tokens_and_cross_sample_attention() {
        let dir = std::env::temp_dir().join(format!("sft-shard-col-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(&dir, PackMethod::Bfd, Overlong::Split);
        let set = ShardSet::open(&dir, false).unwrap();
        let rows = [0u64, 3, 5];
        let flat = set.collate_flat(&rows).unwrap();
        let pad = set.collate_padded(&rows, 0, true).unwrap();
        assert_eq!(pad.tokens as usize, flat.input_ids.len());
        assert_eq!(pad.loss_tokens, flat.loss_tokens);
        assert_eq!(pad.samples, flat.samples);
        for w in flat.cu_seq_lens.windows(2) {
            assert_eq!(flat.labels[w[0] as usize], -100);
            assert_eq!(flat.position_ids[w[0] as usize], 0);
        }
        let m = pad.attention_mask.unwrap();
        let l = 32;
        for k in 0..rows.len() {
            for q in 0..l {
                for kv in 0..l {
                    let allowed = m[k * l * l + q * l + kv] == 1;
                    let same = pad.position_ids[k * l + q] - pad.position_ids[k * l + kv]
                        == i64::try_from(q).unwrap() - i64::try_from(kv).unwrap();
                    if allowed {
                        assert!(kv <= q && same);
                    }
                }
                assert_eq!(m[k * l * l + q * l + q], 1);
            }
        }
        // Corruption is caught.
        let f = dir.join("shard-00000").join("labels.npy");
        let mut bytes = std::fs::read(&f).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&f, &bytes).unwrap();
        assert!(ShardSet::open(&dir, true).is_err());
        std::fs::remove_file(dir.join("manifest.json")).unwrap();
        assert!(ShardSet::open(&dir, false).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn epoch_order_is_a_permutation_and_depends_on_epoch() {
        let dir = std::env::temp_dir().join(format!("sft-shard-ord-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(&dir, PackMethod::Window(16), Overlong::Split);
        let set = ShardSet::open(&dir, false).unwrap();
        let a = set.epoch_order(3, 0, true, 8);
        let b = set.epoch_order(3, 1, true, 8);
        assert_ne!(a, b);
        assert_eq!(a, set.epoch_order(3, 0, true, 8));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..set.num_rows()).collect::<Vec<_>>());
        assert_eq!(set.epoch_order(3, 0, false, 8), s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
