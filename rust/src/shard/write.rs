//! Writing shards: samples in, packed rows out, in bounded memory.
//!
//! Two methods:
//! - **`Bfd`** (global best-fit-decreasing, [`crate::pack::pack_bfd`]): samples are appended to a
//!   token store of two temporary files in the output folder (4 bytes per token each), with 12
//!   bytes per sample in memory (offset and length). `finish` packs the lengths, puts the rows
//!   in a seeded order (so each shard mixes long and short samples), cuts them into shards of
//!   about `shard_tokens` tokens and writes the shards in parallel, gathering tokens from the
//!   store with positioned reads. Memory: ~28 bytes per sample plus one shard buffer per thread.
//! - **`Window(w)`** (streaming best-fit, [`crate::pack::WindowPacker`]): samples wait in a
//!   window of `w` pieces; closed rows go straight into the current shard, written when full.
//!   Memory: the window's samples, the open rows and one shard buffer, whatever the stream's
//!   length.
//!
//! Same input, same config → byte-identical shards, for any thread count.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

use super::npy::{self, Dtype};
use super::{FileEntry, Manifest, PackingInfo, ShardEntry, FILES, FORMAT, IGNORE, VERSION};
use crate::error::{Result, SftError};
use crate::pack::{pack_bfd, Overlong, PackStats, StreamPiece, WindowPacker};
use crate::parallel;

/// `pread` of exactly `buf.len()` bytes at `offset` (no shared file position, so threads can
/// share the file).
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How rows are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackMethod {
    /// Global best-fit-decreasing over all samples.
    Bfd,
    /// Streaming best-fit over a window of this many pieces.
    Window(usize),
}

/// Options of a [`ShardWriter`].
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Output folder (created).
    pub out_dir: PathBuf,
    /// Row length in tokens.
    pub seq_len: u32,
    /// What to do with samples longer than `seq_len`.
    pub overlong: Overlong,
    /// Cap on samples per row.
    pub max_per_row: Option<u32>,
    /// Packing method.
    pub method: PackMethod,
    /// Target tokens per shard (a shard ends at the first row boundary past it).
    pub shard_tokens: u64,
    /// Seed of the row order within and across shards (`Bfd` only).
    pub seed: u64,
    /// Recorded in the manifest.
    pub tokenizer_hash: Option<String>,
    /// Recorded in the manifest.
    pub config_fingerprint: Option<String>,
    /// Replace a dataset already in `out_dir`.
    pub overwrite: bool,
}

/// A batch of samples: sample `i` is `tokens[ranges[i].0..ranges[i].1]` (and the same range
/// of `labels`; `None` = learn every token).
#[derive(Debug, Clone, Copy)]
pub struct SampleBatch<'a> {
    /// Flat token ids.
    pub tokens: &'a [u32],
    /// Flat labels, same layout as `tokens`.
    pub labels: Option<&'a [i32]>,
    /// Per sample (start, end) into `tokens`; (0, 0) for a null sample.
    pub ranges: &'a [(usize, usize)],
}

/// Rows gathered for one shard.
#[derive(Default)]
struct ShardBuf {
    tokens: Vec<u32>,
    labels: Vec<i32>,
    sample_offsets: Vec<u64>,
    row_offsets: Vec<u64>,
    sample_ids: Vec<u64>,
}

impl ShardBuf {
    fn new() -> Self {
        ShardBuf {
            sample_offsets: vec![0],
            row_offsets: vec![0],
            ..ShardBuf::default()
        }
    }

    fn push_piece(&mut self, sample: u64, tokens: &[u32], labels: &[i32]) {
        self.tokens.extend_from_slice(tokens);
        self.labels.extend_from_slice(labels);
        self.sample_offsets.push(self.tokens.len() as u64);
        self.sample_ids.push(sample);
    }

    fn end_row(&mut self) {
        self.row_offsets.push(self.sample_ids.len() as u64);
    }

    fn rows(&self) -> usize {
        self.row_offsets.len() - 1
    }
}

/// Write `values` (already little-endian encoded by `put`) as a `.npy` file; returns its entry.
fn write_npy<T: Copy>(
    path: &Path,
    dtype: Dtype,
    values: &[T],
    put: impl Fn(T, &mut Vec<u8>),
) -> Result<FileEntry> {
    let ctx = |e| SftError::io(format!("writing {}", path.display()), e);
    let file = File::create(path).map_err(ctx)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Xxh3::new();
    let head = npy::header(dtype, values.len());
    hasher.update(&head);
    w.write_all(&head).map_err(ctx)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for chunk in values.chunks(1 << 14) {
        buf.clear();
        for &v in chunk {
            put(v, &mut buf);
        }
        hasher.update(&buf);
        w.write_all(&buf).map_err(ctx)?;
    }
    let file = w.into_inner().map_err(|e| ctx(e.into_error()))?;
    file.sync_all().map_err(ctx)?;
    Ok(FileEntry {
        bytes: (head.len() + values.len() * dtype.size()) as u64,
        xxh3_64: format!("{:016x}", hasher.digest()),
    })
}

/// Write one shard into `dir/name` atomically (a temporary folder renamed into place).
fn write_shard(dir: &Path, name: &str, b: &ShardBuf) -> Result<ShardEntry> {
    let tmp = dir.join(format!("{name}.tmp-{}", std::process::id()));
    let fin = dir.join(name);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| SftError::io(format!("creating {}", tmp.display()), e))?;
    let mut files = std::collections::BTreeMap::new();
    for (fname, dtype) in FILES {
        let p = tmp.join(fname);
        let entry = match fname {
            "input_ids.npy" => write_npy(&p, dtype, &b.tokens, |v, o| o.extend(v.to_le_bytes()))?,
            "labels.npy" => write_npy(&p, dtype, &b.labels, |v, o| o.extend(v.to_le_bytes()))?,
            "sample_offsets.npy" => write_npy(&p, dtype, &b.sample_offsets, |v, o| {
                o.extend(v.to_le_bytes())
            })?,
            "row_offsets.npy" => {
                write_npy(&p, dtype, &b.row_offsets, |v, o| o.extend(v.to_le_bytes()))?
            }
            _ => write_npy(&p, dtype, &b.sample_ids, |v, o| o.extend(v.to_le_bytes()))?,
        };
        files.insert(fname.to_string(), entry);
    }
    if fin.exists() {
        fs::remove_dir_all(&fin)
            .map_err(|e| SftError::io(format!("replacing {}", fin.display()), e))?;
    }
    fs::rename(&tmp, &fin).map_err(|e| SftError::io(format!("renaming {}", tmp.display()), e))?;
    Ok(ShardEntry {
        name: name.to_string(),
        rows: b.rows() as u64,
        samples: b.sample_ids.len() as u64,
        tokens: b.tokens.len() as u64,
        files,
    })
}

fn shard_name(i: usize) -> String {
    format!("shard-{i:05}")
}

/// Token store for `Bfd`: two append-only files, read back with positioned reads at the end.
struct Store {
    dir: PathBuf,
    tokens: BufWriter<File>,
    labels: BufWriter<File>,
    starts: Vec<u64>,
    lengths: Vec<u32>,
    next: u64,
}

impl Store {
    fn new(out: &Path) -> Result<Self> {
        let dir = out.join(format!(".sftfast-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .map_err(|e| SftError::io(format!("creating {}", dir.display()), e))?;
        let open = |n: &str| -> Result<BufWriter<File>> {
            let p = dir.join(n);
            File::create(&p)
                .map(|f| BufWriter::with_capacity(1 << 20, f))
                .map_err(|e| SftError::io(format!("creating {}", p.display()), e))
        };
        Ok(Store {
            tokens: open("tokens.bin")?,
            labels: open("labels.bin")?,
            dir,
            starts: Vec::new(),
            lengths: Vec::new(),
            next: 0,
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A sample held by the streaming writer until its last piece is placed.
struct Held {
    tokens: Vec<u32>,
    labels: Vec<i32>,
    pieces_left: u32,
}

enum State {
    Bfd(Store),
    Window {
        packer: Box<WindowPacker>,
        held: FxHashMap<u64, Held>,
        closed: Vec<Vec<StreamPiece>>,
        buf: ShardBuf,
    },
}

/// Writes samples into packed shards (see the module notes).
pub struct ShardWriter {
    cfg: ShardConfig,
    state: State,
    shards: Vec<ShardEntry>,
    loss_tokens: u64,
}

fn overlong_name(o: Overlong) -> &'static str {
    match o {
        Overlong::Drop => "drop",
        Overlong::TruncateRight => "truncate_right",
        Overlong::TruncateLeft => "truncate_left",
        Overlong::Split => "split",
    }
}

impl ShardWriter {
    /// Start a dataset in `cfg.out_dir`.
    ///
    /// # Errors
    /// [`SftError::Config`] for a zero `seq_len`/`shard_tokens`/window or when the folder
    /// already holds a dataset and `overwrite` is false; [`SftError::Io`] when it cannot be
    /// created.
    pub fn new(cfg: ShardConfig) -> Result<Self> {
        if cfg.seq_len == 0 || cfg.shard_tokens == 0 || cfg.max_per_row == Some(0) {
            return Err(SftError::Config(format!(
                "seq_len, shard_tokens and max_per_row must be > 0; got {}, {}, {:?}",
                cfg.seq_len, cfg.shard_tokens, cfg.max_per_row
            )));
        }
        let out = &cfg.out_dir;
        let manifest = out.join("manifest.json");
        if manifest.exists() {
            if !cfg.overwrite {
                return Err(SftError::Config(format!(
                    "out: {} already holds a dataset (manifest.json); pass overwrite=True to \
                     replace it",
                    out.display()
                )));
            }
            // The old manifest goes first: a crash from here on leaves no valid dataset.
            fs::remove_file(&manifest)
                .map_err(|e| SftError::io(format!("removing {}", manifest.display()), e))?;
        }
        fs::create_dir_all(out)
            .map_err(|e| SftError::io(format!("creating {}", out.display()), e))?;
        if let Ok(entries) = fs::read_dir(out) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("shard-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let state = match cfg.method {
            PackMethod::Bfd => State::Bfd(Store::new(out)?),
            PackMethod::Window(w) => State::Window {
                packer: Box::new(WindowPacker::new(
                    cfg.seq_len,
                    cfg.overlong,
                    cfg.max_per_row,
                    w,
                )?),
                held: FxHashMap::default(),
                closed: Vec::new(),
                buf: ShardBuf::new(),
            },
        };
        Ok(ShardWriter {
            cfg,
            state,
            shards: Vec::new(),
            loss_tokens: 0,
        })
    }

    /// Add a batch of samples.
    ///
    /// # Errors
    /// [`SftError::Schema`] when a range is outside the arrays, or labels are shorter than the
    /// tokens; [`SftError::Io`] when the store or a shard cannot be written.
    pub fn add(&mut self, batch: SampleBatch<'_>) -> Result<()> {
        if let Some(l) = batch.labels {
            if l.len() != batch.tokens.len() {
                return Err(SftError::Schema(format!(
                    "labels: expected one label per token ({} tokens), got {}",
                    batch.tokens.len(),
                    l.len()
                )));
            }
        }
        for (i, &(a, b)) in batch.ranges.iter().enumerate() {
            if a > b || b > batch.tokens.len() || b - a > u32::MAX as usize {
                return Err(SftError::Schema(format!(
                    "row {i} of the batch: token range {a}..{b} outside the column"
                )));
            }
        }
        let seq_len = self.cfg.seq_len;
        let overlong = self.cfg.overlong;
        let dir = self.cfg.out_dir.clone();
        let shard_tokens = self.cfg.shard_tokens;
        match &mut self.state {
            State::Bfd(store) => {
                for &(a, b) in batch.ranges {
                    let toks = &batch.tokens[a..b];
                    let ctx = |e| SftError::io("writing the token store", e);
                    let mut bytes = Vec::with_capacity(toks.len() * 4);
                    toks.iter().for_each(|t| bytes.extend(t.to_le_bytes()));
                    store.tokens.write_all(&bytes).map_err(ctx)?;
                    bytes.clear();
                    match batch.labels {
                        Some(l) => l[a..b].iter().for_each(|t| bytes.extend(t.to_le_bytes())),
                        #[allow(clippy::cast_possible_wrap)]
                        None => toks
                            .iter()
                            .for_each(|&t| bytes.extend((t as i32).to_le_bytes())),
                    }
                    store.labels.write_all(&bytes).map_err(ctx)?;
                    store.starts.push(store.next);
                    #[allow(clippy::cast_possible_truncation)]
                    store.lengths.push((b - a) as u32);
                    store.next += (b - a) as u64;
                }
            }
            State::Window {
                packer,
                held,
                closed,
                buf,
            } => {
                for &(a, b) in batch.ranges {
                    #[allow(clippy::cast_possible_truncation)]
                    let len = (b - a) as u32;
                    let pieces = match (len, overlong) {
                        (0, _) => 0,
                        (l, _) if l <= seq_len => 1,
                        (_, Overlong::Drop) => 0,
                        (l, Overlong::Split) => l.div_ceil(seq_len),
                        _ => 1,
                    };
                    let id = packer.samples_pushed();
                    if pieces > 0 {
                        let toks = batch.tokens[a..b].to_vec();
                        #[allow(clippy::cast_possible_wrap)]
                        let labels = match batch.labels {
                            Some(l) => l[a..b].to_vec(),
                            None => toks.iter().map(|&t| t as i32).collect(),
                        };
                        held.insert(
                            id,
                            Held {
                                tokens: toks,
                                labels,
                                pieces_left: pieces,
                            },
                        );
                    }
                    packer.push(len, closed);
                    Self::drain_closed(
                        closed,
                        held,
                        buf,
                        &mut self.shards,
                        &mut self.loss_tokens,
                        &dir,
                        shard_tokens,
                    )?;
                }
            }
        }
        parallel::check_cancel()
    }

    fn drain_closed(
        closed: &mut Vec<Vec<StreamPiece>>,
        held: &mut FxHashMap<u64, Held>,
        buf: &mut ShardBuf,
        shards: &mut Vec<ShardEntry>,
        loss_tokens: &mut u64,
        dir: &Path,
        shard_tokens: u64,
    ) -> Result<()> {
        for row in closed.drain(..) {
            for p in row {
                let h = held.get_mut(&p.sample).ok_or_else(|| {
                    SftError::Shard(format!("internal: sample {} not held", p.sample))
                })?;
                let (a, b) = (p.start as usize, (p.start + p.len) as usize);
                buf.push_piece(p.sample, &h.tokens[a..b], &h.labels[a..b]);
                h.pieces_left -= 1;
                if h.pieces_left == 0 {
                    held.remove(&p.sample);
                }
            }
            buf.end_row();
            if buf.tokens.len() as u64 >= shard_tokens {
                let full = std::mem::replace(buf, ShardBuf::new());
                *loss_tokens += full.labels.iter().filter(|&&l| l != IGNORE).count() as u64;
                shards.push(write_shard(dir, &shard_name(shards.len()), &full)?);
            }
        }
        Ok(())
    }

    /// Pack what is left, write the remaining shards and the manifest; returns the manifest.
    ///
    /// # Errors
    /// [`SftError::Io`] when a file cannot be written; [`SftError::Interrupted`] on Ctrl-C.
    pub fn finish(mut self) -> Result<Manifest> {
        let cfg = self.cfg.clone();
        let state = std::mem::replace(
            &mut self.state,
            State::Window {
                packer: Box::new(WindowPacker::new(1, Overlong::Drop, None, 1)?),
                held: FxHashMap::default(),
                closed: Vec::new(),
                buf: ShardBuf::new(),
            },
        );
        let (stats, window) = match state {
            State::Bfd(store) => (self.finish_bfd(store)?, None),
            State::Window {
                packer,
                mut held,
                mut closed,
                mut buf,
            } => {
                let stats = packer.finish(&mut closed);
                Self::drain_closed(
                    &mut closed,
                    &mut held,
                    &mut buf,
                    &mut self.shards,
                    &mut self.loss_tokens,
                    &cfg.out_dir,
                    cfg.shard_tokens,
                )?;
                if buf.rows() > 0 {
                    self.loss_tokens += buf.labels.iter().filter(|&&l| l != IGNORE).count() as u64;
                    let name = shard_name(self.shards.len());
                    self.shards.push(write_shard(&cfg.out_dir, &name, &buf)?);
                }
                let w = match cfg.method {
                    PackMethod::Window(w) => Some(w),
                    PackMethod::Bfd => None,
                };
                (stats, w)
            }
        };
        let manifest = Manifest {
            format: FORMAT.to_string(),
            version: VERSION,
            seq_len: cfg.seq_len,
            rows: self.shards.iter().map(|s| s.rows).sum(),
            samples: self.shards.iter().map(|s| s.samples).sum(),
            tokens: self.shards.iter().map(|s| s.tokens).sum(),
            loss_tokens: self.loss_tokens,
            packing: PackingInfo {
                method: if window.is_some() { "window" } else { "bfd" }.to_string(),
                window,
                overlong: overlong_name(cfg.overlong).to_string(),
                max_per_row: cfg.max_per_row,
                input_samples: stats.samples,
                dropped: stats.dropped,
                truncated: stats.truncated,
                tokens_lost: stats.tokens_lost,
                efficiency: stats.efficiency(cfg.seq_len),
            },
            tokenizer_hash: cfg.tokenizer_hash.clone(),
            config_fingerprint: cfg.config_fingerprint.clone(),
            created_by: format!("sftfast {}", env!("CARGO_PKG_VERSION")),
            shards: std::mem::take(&mut self.shards),
        };
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| SftError::Shard(format!("manifest: {e}")))?;
        let path = cfg.out_dir.join("manifest.json");
        let tmp = cfg
            .out_dir
            .join(format!("manifest.json.tmp-{}", std::process::id()));
        let ctx = |e| SftError::io(format!("writing {}", path.display()), e);
        {
            let mut f = File::create(&tmp).map_err(ctx)?;
            f.write_all(text.as_bytes()).map_err(ctx)?;
            f.sync_all().map_err(ctx)?;
        }
        fs::rename(&tmp, &path).map_err(ctx)?;
        Ok(manifest)
    }

    fn finish_bfd(&mut self, mut store: Store) -> Result<PackStats> {
        let ctx = |e| SftError::io("flushing the token store", e);
        store.tokens.flush().map_err(ctx)?;
        store.labels.flush().map_err(ctx)?;
        let cfg = &self.cfg;
        let packing = pack_bfd(&store.lengths, cfg.seq_len, cfg.overlong, cfg.max_per_row)?;
        // Positioned reads, not a memory map: the rows are gathered in a seeded order from
        // all over the store, and mapped pages would count towards the process's resident
        // memory (a store of 10⁹ tokens is 8 GB); the page cache does the caching.
        let open = |n: &str| -> Result<File> {
            let p = store.dir.join(n);
            File::open(&p).map_err(|e| SftError::io(format!("opening {}", p.display()), e))
        };
        let tok_file = open("tokens.bin")?;
        let lab_file = open("labels.bin")?;
        // Rows in a seeded order, so that every shard mixes rows of long and short samples.
        let nrows = packing.offsets.len() - 1;
        let mut order: Vec<usize> = (0..nrows).collect();
        let seed = cfg.seed;
        order.sort_by_cached_key(|&r| (xxh3_64_with_seed(&(r as u64).to_le_bytes(), seed), r));
        // Cut into shards at row boundaries.
        let mut cuts = vec![0usize];
        let mut acc = 0u64;
        for (i, &r) in order.iter().enumerate() {
            let (a, b) = (packing.offsets[r] as usize, packing.offsets[r + 1] as usize);
            acc += packing.pieces[a..b]
                .iter()
                .map(|p| u64::from(p.len))
                .sum::<u64>();
            if acc >= cfg.shard_tokens {
                cuts.push(i + 1);
                acc = 0;
            }
        }
        if *cuts.last().unwrap_or(&0) != nrows {
            cuts.push(nrows);
        }
        let read_u32 = |file: &File, at: u64, n: u32, bytes: &mut Vec<u8>, out: &mut Vec<u32>| {
            bytes.resize(n as usize * 4, 0);
            read_exact_at(file, bytes, at * 4)
                .map_err(|e| SftError::io("reading the token store", e))?;
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            Ok::<(), SftError>(())
        };
        let dir = cfg.out_dir.clone();
        let jobs: Vec<(usize, &[usize])> = cuts
            .windows(2)
            .enumerate()
            .map(|(i, w)| (i, &order[w[0]..w[1]]))
            .collect();
        let results: Vec<Result<(ShardEntry, u64)>> = parallel::install(|| {
            jobs.par_iter()
                .map(|&(i, rows)| {
                    parallel::check_cancel()?;
                    let mut buf = ShardBuf::new();
                    let mut t = Vec::new();
                    let mut l = Vec::new();
                    let mut bytes = Vec::new();
                    let mut lu = Vec::new();
                    for &r in rows {
                        let (a, b) = (packing.offsets[r] as usize, packing.offsets[r + 1] as usize);
                        for p in &packing.pieces[a..b] {
                            let at = store.starts[p.sample as usize] + u64::from(p.start);
                            t.clear();
                            l.clear();
                            read_u32(&tok_file, at, p.len, &mut bytes, &mut t)?;
                            lu.clear();
                            read_u32(&lab_file, at, p.len, &mut bytes, &mut lu)?;
                            #[allow(clippy::cast_possible_wrap)]
                            l.extend(lu.iter().map(|&x| x as i32));
                            buf.push_piece(u64::from(p.sample), &t, &l);
                        }
                        buf.end_row();
                    }
                    let loss = buf.labels.iter().filter(|&&x| x != IGNORE).count() as u64;
                    Ok((write_shard(&dir, &shard_name(i), &buf)?, loss))
                })
                .collect()
        })?;
        for r in results {
            let (entry, loss) = r?;
            self.loss_tokens += loss;
            self.shards.push(entry);
        }
        Ok(packing.stats)
    }
}
