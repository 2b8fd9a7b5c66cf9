//! Reading shards: open and check a dataset, order its rows per epoch, collate batches.
//!
//! Files are memory-mapped; a batch copies only its rows. The epoch order is a pure function
//! of (seed, epoch): shards in a keyed-hash order, then rows shuffled within consecutive
//! windows of `window` rows (a bounded buffer, good locality). Collation builds either the
//! padding-free layout (one `[1, T]` row, positions restarting per sample, `cu_seq_lens`) or
//! fixed `[B, L]` rows with a block-diagonal causal mask. In both, each sample's first label
//! and every stored −100 are −100: the model shifts labels by one, and the first token of a
//! sample must not be predicted from the previous sample.

use std::fs::File;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::npy::{self, Dtype};
use super::{Manifest, FILES, FORMAT, IGNORE, VERSION};
use crate::error::{Result, SftError};

/// One memory-mapped `.npy` file.
struct Mapped {
    map: Option<memmap2::Mmap>,
    start: usize,
    len: usize,
}

impl Mapped {
    fn open(path: &Path, dtype: Dtype) -> Result<Self> {
        let f =
            File::open(path).map_err(|e| SftError::io(format!("opening {}", path.display()), e))?;
        let size = f
            .metadata()
            .map_err(|e| SftError::io(format!("reading {}", path.display()), e))?
            .len();
        if size == 0 {
            return Err(SftError::Shard(format!("{}: empty file", path.display())));
        }
        // SAFETY: shards are immutable once renamed into place; a dataset being rewritten has
        // no manifest, so it is not opened.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&f) }
            .map_err(|e| SftError::io(format!("mapping {}", path.display()), e))?;
        let (len, start) = npy::parse(&map, dtype, &path.display().to_string())?;
        Ok(Mapped {
            map: Some(map),
            start,
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().map_or(&[], |m| &m[self.start..])
    }

    fn u64_at(&self, i: usize) -> u64 {
        let b = &self.bytes()[i * 8..i * 8 + 8];
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    fn u32_range(&self, a: usize, b: usize) -> impl Iterator<Item = u32> + '_ {
        self.bytes()[a * 4..b * 4]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    #[allow(clippy::cast_possible_wrap)]
    fn i32_range(&self, a: usize, b: usize) -> impl Iterator<Item = i32> + '_ {
        self.u32_range(a, b).map(|x| x as i32)
    }
}

struct Shard {
    input_ids: Mapped,
    labels: Mapped,
    sample_offsets: Mapped,
    row_offsets: Mapped,
    sample_ids: Mapped,
}

/// An opened dataset.
pub struct ShardSet {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// Global id of each shard's first row, plus the total.
    row_start: Vec<u64>,
}

/// A padding-free batch: all rows concatenated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlatBatch {
    /// Token ids, `[T]`.
    pub input_ids: Vec<i64>,
    /// Labels, −100 on each sample's first token and where not learned.
    pub labels: Vec<i64>,
    /// Positions restarting at 0 per sample.
    pub position_ids: Vec<i64>,
    /// Sample boundaries, `[samples + 1]`.
    pub cu_seq_lens: Vec<i32>,
    /// Longest sample.
    pub max_length: u32,
    /// Samples (pieces) in the batch.
    pub samples: u64,
    /// Labels that are not −100.
    pub loss_tokens: u64,
}

/// A batch of fixed-length rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaddedBatch {
    /// `[B, L]` token ids, `pad_id` after the row's tokens.
    pub input_ids: Vec<i64>,
    /// `[B, L]` labels (−100 on padding, first tokens and unlearned tokens).
    pub labels: Vec<i64>,
    /// `[B, L]` positions restarting per sample (padding continues from 0).
    pub position_ids: Vec<i64>,
    /// `[B, L, L]` 1 = may attend (same sample, not in the future); padding attends to itself.
    pub attention_mask: Option<Vec<u8>>,
    /// Samples in the batch.
    pub samples: u64,
    /// Real (non-padding) tokens.
    pub tokens: u64,
    /// Labels that are not −100.
    pub loss_tokens: u64,
}

impl ShardSet {
    /// Open the dataset in `dir`; with `verify`, check every file's xxh3 against the manifest.
    ///
    /// # Errors
    /// [`SftError::Shard`] when the manifest is missing or of another format/version, or a
    /// shard does not match it (size, counts, offsets, checksum); [`SftError::Io`] on I/O.
    pub fn open(dir: &Path, verify: bool) -> Result<Self> {
        let mpath = dir.join("manifest.json");
        let text = std::fs::read_to_string(&mpath).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SftError::Shard(format!(
                    "{}: no manifest.json: not a finished sftfast dataset",
                    dir.display()
                ))
            } else {
                SftError::io(format!("reading {}", mpath.display()), e)
            }
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| SftError::Shard(format!("{}: {e}", mpath.display())))?;
        if manifest.format != FORMAT || manifest.version != VERSION {
            return Err(SftError::Shard(format!(
                "{}: expected format {FORMAT} version {VERSION}, got {} version {}",
                mpath.display(),
                manifest.format,
                manifest.version
            )));
        }
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut row_start = vec![0u64];
        for entry in &manifest.shards {
            let sdir = dir.join(&entry.name);
            for (fname, _) in FILES {
                let p = sdir.join(fname);
                let want = entry.files.get(fname).ok_or_else(|| {
                    SftError::Shard(format!("{}: manifest lists no {fname}", entry.name))
                })?;
                let size = std::fs::metadata(&p)
                    .map_err(|e| SftError::io(format!("reading {}", p.display()), e))?
                    .len();
                if size != want.bytes {
                    return Err(SftError::Shard(format!(
                        "{}: expected {} bytes, found {size} (truncated or replaced)",
                        p.display(),
                        want.bytes
                    )));
                }
                if verify {
                    let data = std::fs::read(&p)
                        .map_err(|e| SftError::io(format!("reading {}", p.display()), e))?;
                    let got = format!("{:016x}", xxh3_64(&data));
                    if got != want.xxh3_64 {
                        return Err(SftError::Shard(format!(
                            "{}: checksum {got} does not match the manifest's {}",
                            p.display(),
                            want.xxh3_64
                        )));
                    }
                }
            }
            let open = |i: usize| Mapped::open(&sdir.join(FILES[i].0), FILES[i].1);
            let s = Shard {
                input_ids: open(0)?,
                labels: open(1)?,
                sample_offsets: open(2)?,
                row_offsets: open(3)?,
                sample_ids: open(4)?,
            };
            let bad = |why: String| SftError::Shard(format!("{}: {why}", entry.name));
            let (t, n, r) = (
                entry.tokens as usize,
                entry.samples as usize,
                entry.rows as usize,
            );
            if s.input_ids.len != t || s.labels.len != t {
                return Err(bad(format!("expected {t} tokens and labels")));
            }
            if s.sample_offsets.len != n + 1 || s.sample_ids.len != n || s.row_offsets.len != r + 1
            {
                return Err(bad("offset arrays do not match the counts".into()));
            }
            if s.sample_offsets.u64_at(n) != t as u64 || s.row_offsets.u64_at(r) != n as u64 {
                return Err(bad("last offsets do not match the counts".into()));
            }
            for i in 0..r {
                if s.row_offsets.u64_at(i) > s.row_offsets.u64_at(i + 1) {
                    return Err(bad(format!("row_offsets decrease at {i}")));
                }
            }
            for i in 0..n {
                let (a, b) = (s.sample_offsets.u64_at(i), s.sample_offsets.u64_at(i + 1));
                if a > b || b - a > u64::from(manifest.seq_len) {
                    return Err(bad(format!("sample {i} has bad offsets {a}..{b}")));
                }
            }
            for i in 0..r {
                let a = s.sample_offsets.u64_at(s.row_offsets.u64_at(i) as usize);
                let b = s
                    .sample_offsets
                    .u64_at(s.row_offsets.u64_at(i + 1) as usize);
                if b - a > u64::from(manifest.seq_len) {
                    return Err(bad(format!("row {i} holds {} tokens > seq_len", b - a)));
                }
            }
            row_start.push(row_start.last().copied().unwrap_or(0) + entry.rows);
            shards.push(s);
        }
        Ok(ShardSet {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            row_start,
        })
    }

    /// The manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The dataset folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Packed rows in all shards.
    #[must_use]
    pub fn num_rows(&self) -> u64 {
        self.row_start.last().copied().unwrap_or(0)
    }

    /// Global row ids of one epoch, in reading order (see the module notes).
    #[must_use]
    pub fn epoch_order(&self, seed: u64, epoch: u64, shuffle: bool, window: usize) -> Vec<u64> {
        let n = self.shards.len();
        let mut shard_order: Vec<usize> = (0..n).collect();
        let key = |a: u64, b: u64, s: u64| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&a.to_le_bytes());
            k[8..].copy_from_slice(&b.to_le_bytes());
            xxh3_64_with_seed(&k, s)
        };
        if shuffle {
            shard_order.sort_by_cached_key(|&s| (key(epoch, s as u64, seed ^ 0x5348_4152_4453), s));
        }
        let mut order = Vec::with_capacity(usize::try_from(self.num_rows()).unwrap_or(0));
        for s in shard_order {
            order.extend(self.row_start[s]..self.row_start[s + 1]);
        }
        if shuffle {
            for chunk in order.chunks_mut(window.max(1)) {
                chunk.sort_by_cached_key(|&r| (key(epoch, r, seed), r));
            }
        }
        order
    }

    fn locate(&self, row: u64) -> Result<(&Shard, usize)> {
        if row >= self.num_rows() {
            return Err(SftError::Config(format!(
                "row {row} out of range: the dataset has {} rows",
                self.num_rows()
            )));
        }
        let s = self.row_start.partition_point(|&x| x <= row) - 1;
        Ok((
            &self.shards[s],
            usize::try_from(row - self.row_start[s]).unwrap_or(0),
        ))
    }

    /// Pieces of a global row: (token range, input row id) per piece.
    ///
    /// # Errors
    /// [`SftError::Config`] when `row` is out of range.
    pub fn row_pieces(&self, row: u64) -> Result<Vec<(usize, usize, u64)>> {
        let (s, r) = self.locate(row)?;
        let (a, b) = (
            s.row_offsets.u64_at(r) as usize,
            s.row_offsets.u64_at(r + 1) as usize,
        );
        Ok((a..b)
            .map(|i| {
                (
                    s.sample_offsets.u64_at(i) as usize,
                    s.sample_offsets.u64_at(i + 1) as usize,
                    s.sample_ids.u64_at(i),
                )
            })
            .collect())
    }

    /// The stored tokens and labels of a global row (labels as written, not masked).
    ///
    /// # Errors
    /// [`SftError::Config`] when `row` is out of range.
    pub fn row_tokens(&self, row: u64) -> Result<(Vec<u32>, Vec<i32>)> {
        let (s, r) = self.locate(row)?;
        let (a, b) = (
            s.row_offsets.u64_at(r) as usize,
            s.row_offsets.u64_at(r + 1) as usize,
        );
        let (x, y) = (
            s.sample_offsets.u64_at(a) as usize,
            s.sample_offsets.u64_at(b) as usize,
        );
        Ok((
            s.input_ids.u32_range(x, y).collect(),
            s.labels.i32_range(x, y).collect(),
        ))
    }

    /// Visit each piece of `rows` in order: (shard, token start, token end).
    fn pieces<'a>(
        &'a self,
        rows: &'a [u64],
    ) -> impl Iterator<Item = Result<(usize, &'a Shard, usize, usize)>> + 'a {
        rows.iter().enumerate().flat_map(move |(k, &row)| {
            let v: Vec<Result<(usize, &Shard, usize, usize)>> = match self.locate(row) {
                Err(e) => vec![Err(e)],
                Ok((s, r)) => {
                    let (a, b) = (
                        s.row_offsets.u64_at(r) as usize,
                        s.row_offsets.u64_at(r + 1) as usize,
                    );
                    (a..b)
                        .map(|i| {
                            Ok((
                                k,
                                s,
                                s.sample_offsets.u64_at(i) as usize,
                                s.sample_offsets.u64_at(i + 1) as usize,
                            ))
                        })
                        .collect()
                }
            };
            v.into_iter()
        })
    }

    /// Tokens and samples (pieces) in `rows`: the sizes of a flat batch.
    ///
    /// # Errors
    /// [`SftError::Config`] when a row id is out of range.
    pub fn flat_size(&self, rows: &[u64]) -> Result<(usize, usize)> {
        let (mut t, mut n) = (0, 0);
        for &row in rows {
            let (s, r) = self.locate(row)?;
            let (a, b) = (
                s.row_offsets.u64_at(r) as usize,
                s.row_offsets.u64_at(r + 1) as usize,
            );
            t += (s.sample_offsets.u64_at(b) - s.sample_offsets.u64_at(a)) as usize;
            n += b - a;
        }
        Ok((t, n))
    }

    /// Write the padding-free batch of `rows` into sinks sized by [`ShardSet::flat_size`]
    /// (`cu` holds samples + 1 values); returns (longest sample, learned labels).
    ///
    /// # Errors
    /// [`SftError::Config`] when a row id is out of range.
    pub fn collate_flat_into(
        &self,
        rows: &[u64],
        ids: &mut impl Sink,
        labels: &mut impl Sink,
        pos: &mut impl Sink,
        cu: &mut impl Sink,
    ) -> Result<(u32, u64)> {
        let (mut at, mut k, mut max_len, mut loss) = (0usize, 0usize, 0usize, 0u64);
        cu.put(0, 0);
        for p in self.pieces(rows) {
            let (_, s, a, b) = p?;
            loss += put_piece(s, a, b, at, ids, labels, pos);
            at += b - a;
            k += 1;
            cu.put(k, at as i64);
            max_len = max_len.max(b - a);
        }
        #[allow(clippy::cast_possible_truncation)]
        Ok((max_len as u32, loss))
    }

    /// The padding-free batch of `rows`.
    ///
    /// # Errors
    /// [`SftError::Config`] when a row id is out of range.
    pub fn collate_flat(&self, rows: &[u64]) -> Result<FlatBatch> {
        let (t, n) = self.flat_size(rows)?;
        let mut out = FlatBatch {
            input_ids: vec![0; t],
            labels: vec![0; t],
            position_ids: vec![0; t],
            samples: n as u64,
            ..FlatBatch::default()
        };
        let mut cu = vec![0i64; n + 1];
        let (max_length, loss) = self.collate_flat_into(
            rows,
            &mut out.input_ids,
            &mut out.labels,
            &mut out.position_ids,
            &mut cu,
        )?;
        #[allow(clippy::cast_possible_truncation)]
        {
            out.cu_seq_lens = cu.into_iter().map(|x| x as i32).collect();
        }
        out.max_length = max_length;
        out.loss_tokens = loss;
        Ok(out)
    }

    /// Write fixed `[B, seq_len]` rows into sinks of `B * seq_len` values (every slot is
    /// written) and, with `mask` (`B * L * L` zeroed bytes), the block-diagonal causal mask;
    /// returns (samples, real tokens, learned labels).
    ///
    /// # Errors
    /// [`SftError::Config`] when a row id is out of range or `mask` has the wrong size.
    pub fn collate_padded_into(
        &self,
        rows: &[u64],
        pad_id: i64,
        ids: &mut impl Sink,
        labels: &mut impl Sink,
        pos: &mut impl Sink,
        mut mask: Option<&mut [u8]>,
    ) -> Result<(u64, u64, u64)> {
        let l = self.manifest.seq_len as usize;
        let ig = i64::from(IGNORE);
        if let Some(m) = mask.as_deref() {
            if m.len() != rows.len() * l * l {
                return Err(SftError::Config(format!(
                    "mask: expected {} bytes, got {}",
                    rows.len() * l * l,
                    m.len()
                )));
            }
        }
        let mut fill = vec![0usize; rows.len()];
        let (mut samples, mut loss) = (0u64, 0u64);
        for p in self.pieces(rows) {
            let (k, s, a, e) = p?;
            loss += put_piece(s, a, e, k * l + fill[k], ids, labels, pos);
            if let Some(m) = mask.as_deref_mut() {
                let base = k * l * l;
                for q in fill[k]..fill[k] + (e - a) {
                    m[base + q * l + fill[k]..=base + q * l + q].fill(1);
                }
            }
            fill[k] += e - a;
            samples += 1;
        }
        let mut tokens = 0u64;
        for (k, &f) in fill.iter().enumerate() {
            tokens += f as u64;
            for (i, q) in (f..l).enumerate() {
                ids.put(k * l + q, pad_id);
                labels.put(k * l + q, ig);
                pos.put(k * l + q, i as i64);
                if let Some(m) = mask.as_deref_mut() {
                    m[k * l * l + q * l + q] = 1;
                }
            }
        }
        Ok((samples, tokens, loss))
    }

    /// Fixed `[B, seq_len]` rows of `rows`; with `mask`, the `[B, L, L]` block-diagonal mask.
    ///
    /// # Errors
    /// [`SftError::Config`] when a row id is out of range.
    pub fn collate_padded(&self, rows: &[u64], pad_id: i64, mask: bool) -> Result<PaddedBatch> {
        let l = self.manifest.seq_len as usize;
        let n = rows.len() * l;
        let mut out = PaddedBatch {
            input_ids: vec![0; n],
            labels: vec![0; n],
            position_ids: vec![0; n],
            attention_mask: mask.then(|| vec![0u8; n * l]),
            ..PaddedBatch::default()
        };
        let (samples, tokens, loss) = self.collate_padded_into(
            rows,
            pad_id,
            &mut out.input_ids,
            &mut out.labels,
            &mut out.position_ids,
            out.attention_mask.as_deref_mut(),
        )?;
        out.samples = samples;
        out.tokens = tokens;
        out.loss_tokens = loss;
        Ok(out)
    }
}

/// Write one piece (tokens `a..b` of shard `s`) at `at`: ids, positions from 0, labels with
/// the first one −100. Returns the learned labels.
fn put_piece(
    s: &Shard,
    a: usize,
    b: usize,
    at: usize,
    ids: &mut impl Sink,
    labels: &mut impl Sink,
    pos: &mut impl Sink,
) -> u64 {
    let ig = i64::from(IGNORE);
    let mut loss = 0;
    for (i, v) in s.input_ids.u32_range(a, b).enumerate() {
        ids.put(at + i, i64::from(v));
        pos.put(at + i, i as i64);
    }
    for (i, v) in s.labels.i32_range(a, b).enumerate() {
        let v = if i == 0 { ig } else { i64::from(v) };
        loss += u64::from(v != ig);
        labels.put(at + i, v);
    }
    loss
}

/// Where collation writes values: a `Vec<i64>` or little-endian bytes (a Python buffer).
pub trait Sink {
    /// Set element `i`.
    fn put(&mut self, i: usize, v: i64);
}

impl Sink for Vec<i64> {
    fn put(&mut self, i: usize, v: i64) {
        self[i] = v;
    }
}

/// Little-endian i64 elements in a byte buffer.
pub struct Le64<'a>(pub &'a mut [u8]);

impl Sink for Le64<'_> {
    fn put(&mut self, i: usize, v: i64) {
        self.0[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
}

/// Little-endian i32 elements in a byte buffer (values are cut to 32 bits).
pub struct Le32<'a>(pub &'a mut [u8]);

impl Sink for Le32<'_> {
    #[allow(clippy::cast_possible_truncation)]
    fn put(&mut self, i: usize, v: i64) {
        self.0[i * 4..i * 4 + 4].copy_from_slice(&(v as i32).to_le_bytes());
    }
}
