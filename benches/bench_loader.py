#!/usr/bin/env python3
"""Loader: real tokens per second delivered as ready padding-free batches, 0 workers.

sftfast (`sftfast.torch.loader`, flat layout) vs LitData (`StreamingDataset` +
`StreamingDataLoader`), MosaicML streaming (`StreamingDataset` over MDS + `StreamingDataLoader`)
and HF `datasets` (`load_from_disk` + `DataCollatorWithFlattening`), over the SAME packed rows.

Data (built once into `--data`, reused while its parameters match; not timed): `--samples`
samples with log-normal lengths (numpy seed 0, median 350, sigma 1.0, clipped to 1..8192, the
distribution of `shared/NOTES.md` "Packing and loading"), random token ids in [0, 151,000) and
labels −100 on a random prompt prefix (10-60% of each sample), written with
`sftfast.write_shards(..., seq_len=4096, overlong="truncate_right")` (global BFD). The packed
rows are then read back from the shards with numpy and exported, row for row, to:
  LitData   `litdata.optimize`: one item per packed row, {input_ids u32, labels i32,
            seq_lens i32} numpy arrays, 64 MB chunks, no compression.
  MosaicML  `MDSWriter`: one sample per packed row, the same three `ndarray` columns, 64 MB
            shards, no compression.
  HF        one dataset row per sample (the pieces stored in the shards, in row order:
            `input_ids`, `labels` list<int32>), `save_to_disk` (Arrow, memory-mapped on load).
            A batch is the samples of `--batch-size` packed rows, given to the DataLoader as a
            `batch_sampler` of index lists; `DataCollatorWithFlattening(
            return_flash_attn_kwargs=True)` concatenates them (its documented padding-free use).

Batches: `--batch-size` packed rows of `--seq-len` (8 x 4096). Each tool delivers the flat layout
that transformers' padding-free path takes: `input_ids`, `labels`, `position_ids` [1, T] int64
(labels −100 on each sample's first token), `cu_seq_lens_q/k` int32, `max_length_q/k`. sftfast
builds it in Rust; HF's collator builds it itself; for LitData and MosaicML a numpy collate_fn
(`collate_rows`: one `np.concatenate` per field straight to int64, positions from the row's
`seq_lens` with one `np.repeat`, `torch.from_numpy`) does it.

Order: shuffle on for every tool. sftfast: shards in a seeded order, rows shuffled in windows of
4,096 rows. LitData: `shuffle=True` (chunk order + in-chunk windows, its defaults). MosaicML:
`shuffle=True` (`py1e`, its default algorithm and block size). HF: a seeded permutation of the
packed rows in the batch sampler (random access into the memory-mapped Arrow table).

Timed (fresh process per tool and repeat, tools interleaved per repeat): from `iter(loader)` to
the end of one epoch (drop_last; `--max-batches` caps a run), the loop only counting the real
tokens of each ready batch. CPU-s = `time.process_time()` (all threads) plus the CPU of child
processes reaped in the region (DataLoader workers). "Setup" (reported apart) is the tool's
imports and the loader's construction (numpy and torch are imported before it). Medians of `--repeats`. The page cache holds the data (it was just written and
checked), so this is the warm-cache rate, as in training after the first epoch.

Extra rows (not in the issue's comparison): sftfast `layout="padded"` without and with the
[B, 1, L, L] block-diagonal mask (the mask variant is capped at `--mask-batches` batches: each
batch holds a 128 MiB mask), and sftfast with 1 and 2 DataLoader workers.

Check (once per tool before the timed runs, drop_last off, shuffle on): per sample of every
batch (cut at `cu_seq_lens`) its length, sum of ids, count and sum of learned labels, sorted and
hashed, must equal the same digest computed from the shard files; positions must restart at
each sample and its first label be −100. Equal digests = the same multiset of samples per epoch.

    python3 benches/bench_loader.py --repeats 3 --out benches/results/loader.md
    python3 benches/bench_loader.py --samples 20000 --repeats 1          # quick check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchutil import versions as _versions

if TYPE_CHECKING:
    import numpy as np

MEDIAN, SIGMA, MAX_LEN, VOCAB = 350, 1.0, 8192, 151_000
MAIN = ["sftfast", "litdata", "mosaicml", "hf"]
EXTRA = ["sftfast-padded", "sftfast-padded-mask", "sftfast-w1", "sftfast-w2"]
CHECKED = ["sftfast", "litdata", "mosaicml", "hf"]
NAMES = {
    "sftfast": "sftfast `loader(layout=\"flat\")`",
    "litdata": "LitData `StreamingDataset` + numpy collate",
    "mosaicml": "MosaicML `StreamingDataset` (MDS) + numpy collate",
    "hf": "HF `datasets` + `DataCollatorWithFlattening`",
    "sftfast-padded": "sftfast `layout=\"padded\"`, `attention_mask=False`",
    "sftfast-padded-mask": "sftfast `layout=\"padded\"`, `attention_mask=True`",
    "sftfast-w1": "sftfast flat, `num_workers=1`",
    "sftfast-w2": "sftfast flat, `num_workers=2`",
}
TARGETS = {"litdata": 1, "mosaicml": 5, "hf": 10}
SEED = 0


# ----------------------------------------------------------------------------- data
def sample_stats(ids, labels, cu) -> np.ndarray:
    """Per sample: length, sum of ids, learned-label count and sum (labels as delivered)."""
    import numpy as np

    ids = np.asarray(ids, dtype=np.int64).ravel()
    labels = np.asarray(labels, dtype=np.int64).ravel()
    cu = np.asarray(cu, dtype=np.int64)
    starts, lens = cu[:-1], np.diff(cu)
    assert len(ids) == len(labels) == cu[-1] and (lens > 0).all()
    learned = labels != -100
    return np.stack([lens, np.add.reduceat(ids, starts),
                     np.add.reduceat(learned.astype(np.int64), starts),
                     np.add.reduceat(np.where(learned, labels, 0), starts)], axis=1)


def digest(stats: np.ndarray) -> str:
    import numpy as np

    s = stats[np.lexsort(stats.T[::-1])]
    return hashlib.sha256(np.ascontiguousarray(s).tobytes()).hexdigest()[:16]


def data_params(args) -> dict:
    return {"samples": args.samples, "seq_len": args.seq_len, "seed": SEED, "version": 1}


def prepare(args) -> dict:
    """Build (or reuse) the shards and the three exports; returns the metadata."""
    import numpy as np

    data: Path = args.data
    meta_path = data / "meta.json"
    if meta_path.exists() and not args.rebuild:
        meta = json.loads(meta_path.read_text())
        if meta["params"] == data_params(args):
            return meta
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    meta: dict = {"params": data_params(args), "build_s": {}}

    # 1. samples and shards
    import polars as pl
    import pyarrow as pa
    import sftfast

    t = time.perf_counter()
    rng = np.random.default_rng(SEED)
    n = args.samples
    lengths = np.clip(rng.lognormal(np.log(MEDIAN), SIGMA, size=n), 1, MAX_LEN).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    ids = rng.integers(0, VOCAB, size=total, dtype=np.uint32)
    prompt = (lengths * rng.uniform(0.1, 0.6, size=n)).astype(np.int64)
    pos = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    labels = np.where(pos < np.repeat(prompt, lengths), -100, ids.astype(np.int32))
    del pos
    lab = labels.astype(np.int32, copy=False)
    del labels
    po = pa.array(offsets)
    df = pl.from_arrow(pa.table({
        "input_ids": pa.LargeListArray.from_arrays(po, pa.array(ids)),
        "labels": pa.LargeListArray.from_arrays(po, pa.array(lab))}), rechunk=False)
    del ids, lab
    m = sftfast.write_shards(df, data / "sftfast", seq_len=args.seq_len,
                             overlong="truncate_right")
    del df
    meta["build_s"]["generate + write_shards"] = time.perf_counter() - t
    meta.update(input_tokens=total, rows=m.rows, pieces=m.samples, tokens=m.tokens,
                loss_tokens=m.loss_tokens, efficiency=m.packing.efficiency,
                truncated=m.packing.truncated, tokens_lost=m.packing.tokens_lost,
                shards=len(m.shards),
                length_stats=f"median {np.median(lengths):.0f}, mean {lengths.mean():.0f}, "
                             f"p99 {np.percentile(lengths, 99):.0f}, max {lengths.max()}")

    # 2. the packed rows, read back with numpy (manifest order)
    shard_dirs = [data / "sftfast" / s.name for s in m.shards]
    all_ids, all_lab, piece_len, row_npieces = [], [], [], []
    for d in shard_dirs:
        so = np.load(d / "sample_offsets.npy").astype(np.int64)
        ro = np.load(d / "row_offsets.npy").astype(np.int64)
        all_ids.append(np.load(d / "input_ids.npy"))
        all_lab.append(np.load(d / "labels.npy"))
        piece_len.append(np.diff(so))
        row_npieces.append(np.diff(ro))
    ids = np.concatenate(all_ids)
    lab = np.concatenate(all_lab)
    plen = np.concatenate(piece_len)
    del all_ids, all_lab
    poff = np.zeros(len(plen) + 1, dtype=np.int64)
    np.cumsum(plen, out=poff[1:])
    roff = np.zeros(m.rows + 1, dtype=np.int64)
    np.cumsum(np.concatenate(row_npieces), out=roff[1:])
    np.save(data / "row_piece_offsets.npy", roff)
    # Ground truth: labels as every loader delivers them (first label of each sample −100).
    lab_masked = lab.astype(np.int64)
    lab_masked[poff[:-1]] = -100
    meta["digest"] = digest(sample_stats(ids, lab_masked, poff))
    del lab_masked

    # 3. HF datasets: one row per sample (piece)
    from datasets import Dataset, disable_progress_bars
    from datasets.table import InMemoryTable

    disable_progress_bars()
    t = time.perf_counter()
    assert poff[-1] < 2**31
    po32 = pa.array(poff.astype(np.int32))
    table = pa.table({"input_ids": pa.ListArray.from_arrays(po32, pa.array(ids.astype(np.int32))),
                      "labels": pa.ListArray.from_arrays(po32, pa.array(lab))})
    Dataset(InMemoryTable(table)).save_to_disk(str(data / "hf"))
    del table
    meta["build_s"]["hf save_to_disk"] = time.perf_counter() - t

    # 4. MosaicML MDS: one sample per packed row
    from streaming import MDSWriter

    t = time.perf_counter()
    cols = {"input_ids": "ndarray:uint32", "labels": "ndarray:int32", "seq_lens": "ndarray:int32"}
    with MDSWriter(out=str(data / "mds"), columns=cols, compression=None,
                   size_limit=1 << 26) as w:
        for r in range(m.rows):
            a, b = roff[r], roff[r + 1]
            x, y = poff[a], poff[b]
            w.write({"input_ids": ids[x:y], "labels": lab[x:y],
                     "seq_lens": plen[a:b].astype(np.int32)})
    meta["build_s"]["mds write"] = time.perf_counter() - t

    # 5. LitData: one item per packed row (its worker reads the shard files itself; the folder
    # goes by environment, as LitData treats path strings in `inputs` as files to fetch)
    import litdata

    t = time.perf_counter()
    os.environ["BENCH_LOADER_SHARDS"] = str(data / "sftfast")
    inputs = []
    for s in m.shards:
        for r0 in range(0, s.rows, 1024):
            inputs.append((s.name, r0, min(s.rows, r0 + 1024)))
    litdata.optimize(fn=litdata_rows, inputs=inputs, output_dir=str(data / "litdata"),
                     chunk_bytes="64MB", num_workers=1, verbose=False)
    meta["build_s"]["litdata optimize"] = time.perf_counter() - t
    meta["disk_mb"] = {k: sum(f.stat().st_size for f in (data / k).rglob("*") if f.is_file())
                       / 2**20 for k in ["sftfast", "litdata", "mds", "hf"]}
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


def litdata_rows(spec):
    import numpy as np

    name, r0, r1 = spec
    d = Path(os.environ["BENCH_LOADER_SHARDS"]) / name
    so = np.load(d / "sample_offsets.npy", mmap_mode="r")
    ro = np.load(d / "row_offsets.npy", mmap_mode="r")
    ids = np.load(d / "input_ids.npy", mmap_mode="r")
    lab = np.load(d / "labels.npy", mmap_mode="r")
    for r in range(r0, r1):
        a, b = int(ro[r]), int(ro[r + 1])
        x, y = int(so[a]), int(so[b])
        yield {"input_ids": np.array(ids[x:y]), "labels": np.array(lab[x:y]),
               "seq_lens": np.diff(np.asarray(so[a:b + 1], dtype=np.int64)).astype(np.int32)}


# ----------------------------------------------------------------------------- loaders
def collate_rows(items):
    """Packed rows {input_ids, labels, seq_lens} -> the flat padding-free batch (numpy)."""
    import numpy as np
    import torch

    ids = np.concatenate([it["input_ids"] for it in items], dtype=np.int64)
    labels = np.concatenate([it["labels"] for it in items], dtype=np.int64)
    lens = np.concatenate([it["seq_lens"] for it in items])
    cu = np.zeros(len(lens) + 1, dtype=np.int32)
    np.cumsum(lens, out=cu[1:])
    starts = cu[:-1]
    labels[starts] = -100
    pos = np.arange(len(ids), dtype=np.int64)
    pos -= np.repeat(starts.astype(np.int64), lens)
    cu_t = torch.from_numpy(cu)
    mx = int(lens.max())
    return {"input_ids": torch.from_numpy(ids).view(1, -1),
            "labels": torch.from_numpy(labels).view(1, -1),
            "position_ids": torch.from_numpy(pos).view(1, -1),
            "cu_seq_lens_q": cu_t, "cu_seq_lens_k": cu_t, "max_length_q": mx, "max_length_k": mx}


class RowBatchSampler:
    """Index lists of the samples of `batch_size` packed rows (HF), rows in a seeded order."""

    def __init__(self, row_offsets, batch_size: int, seed: int, drop_last: bool):
        self.ro, self.bs, self.seed, self.drop_last = row_offsets, batch_size, seed, drop_last
        self.rows = len(row_offsets) - 1

    def __len__(self) -> int:
        return self.rows // self.bs if self.drop_last else -(-self.rows // self.bs)

    def __iter__(self):
        import numpy as np

        order = np.random.default_rng(self.seed).permutation(self.rows)
        ro = self.ro
        for k in range(len(self)):
            rows = order[k * self.bs:(k + 1) * self.bs]
            yield np.concatenate([np.arange(ro[r], ro[r + 1]) for r in rows]).tolist()


def make_loader(tool: str, data: Path, bs: int, drop_last: bool):
    """(iterable of ready batches, fn batch -> real tokens)."""
    import numpy as np

    def flat(b):
        return b["input_ids"].shape[1]

    if tool.startswith("sftfast"):
        import sftfast.torch as st

        kw = {"batch_size": bs, "num_workers": 0, "seed": SEED, "shuffle": True,
              "drop_last": drop_last}
        if tool == "sftfast-padded":
            kw.update(layout="padded", attention_mask=False)
        elif tool == "sftfast-padded-mask":
            kw.update(layout="padded", attention_mask=True)
        elif tool.startswith("sftfast-w"):
            kw["num_workers"] = int(tool[-1])
        ld = st.loader(data / "sftfast", **kw)
        return ld, (lambda b: b.num_tokens)
    if tool == "litdata":
        import litdata

        ds = litdata.StreamingDataset(str(data / "litdata"), shuffle=True, seed=SEED)
        ld = litdata.StreamingDataLoader(ds, batch_size=bs, num_workers=0,
                                         collate_fn=collate_rows, drop_last=drop_last)
        return ld, flat
    if tool == "mosaicml":
        from streaming import StreamingDataLoader, StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
        ds = StreamingDataset(local=str(data / "mds"), shuffle=True, shuffle_seed=SEED,
                              batch_size=bs)
        ld = StreamingDataLoader(ds, batch_size=bs, num_workers=0, collate_fn=collate_rows,
                                 drop_last=drop_last)
        return ld, flat
    if tool == "hf":
        from datasets import disable_progress_bars, load_from_disk
        from torch.utils.data import DataLoader
        from transformers import DataCollatorWithFlattening

        disable_progress_bars()
        ds = load_from_disk(str(data / "hf"))
        sampler = RowBatchSampler(np.load(data / "row_piece_offsets.npy"), bs, SEED, drop_last)
        ld = DataLoader(ds, batch_sampler=sampler, num_workers=0,
                        collate_fn=DataCollatorWithFlattening(return_flash_attn_kwargs=True))
        return ld, flat
    raise ValueError(tool)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_timed(spec: dict) -> dict:
    import numpy  # noqa: F401  (common imports outside "setup")
    import torch  # noqa: F401

    data, bs, cap = Path(spec["data"]), spec["batch_size"], spec["max_batches"]
    c0, w0 = time.process_time(), time.perf_counter()
    ld, ntok = make_loader(spec["tool"], data, bs, drop_last=True)
    setup_cpu, setup_wall = time.process_time() - c0, time.perf_counter() - w0
    tokens = batches = 0
    first = None
    cc0 = children_cpu()
    c0, w0 = time.process_time(), time.perf_counter()
    for b in ld:
        tokens += ntok(b)
        batches += 1
        if first is None:
            first = time.perf_counter() - w0
        if cap and batches >= cap:
            break
    wall = time.perf_counter() - w0
    cpu = time.process_time() - c0 + children_cpu() - cc0
    return {"tokens": tokens, "batches": batches, "wall": wall, "cpu": cpu,
            "first_batch_s": first, "setup_wall": setup_wall, "setup_cpu": setup_cpu,
            "capped": bool(cap and batches >= cap)}


def run_check(spec: dict) -> dict:
    import numpy as np
    import torch

    data, bs = Path(spec["data"]), spec["batch_size"]
    ld, ntok = make_loader(spec["tool"], data, bs, drop_last=False)
    parts, tokens, batches = [], 0, 0
    for b in ld:
        ids, lab, pos = b["input_ids"], b["labels"], b["position_ids"]
        cu = b["cu_seq_lens_q"].numpy().astype(np.int64)
        for k in ("input_ids", "labels", "position_ids"):
            assert b[k].dtype == torch.int64 and b[k].dim() == 2 and b[k].shape[0] == 1, k
        lens = np.diff(cu)
        want = np.arange(cu[-1]) - np.repeat(cu[:-1], lens)
        assert (pos.numpy().ravel() == want).all(), "positions do not restart per sample"
        assert (lab.numpy().ravel()[cu[:-1]] == -100).all(), "first label of a sample not -100"
        assert b["max_length_q"] == int(lens.max())
        parts.append(sample_stats(ids.numpy(), lab.numpy(), cu))
        tokens += ntok(b)
        batches += 1
    stats = np.concatenate(parts)
    return {"digest": digest(stats), "samples": len(stats), "tokens": tokens, "batches": batches}


def worker(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    res = run_check(spec) if spec["check"] else run_timed(spec)
    print(json.dumps(res))


def measure(spec: dict, tmp: Path) -> dict:
    spec_file = tmp / "spec.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, __file__, "--worker", str(spec_file)]
    out_path, err_path = tmp / "worker.out", tmp / "worker.err"
    with open(out_path, "w") as fo, open(err_path, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe)
        _, status, ru = os.wait4(proc.pid, 0)
    if status != 0:
        return {"error": err_path.read_text()[-3000:], "cmd": shlex.join(cmd)}
    res = json.loads(out_path.read_text().strip().splitlines()[-1])
    res["process_cpu"] = ru.ru_utime + ru.ru_stime
    return res


def versions() -> str:
    return _versions(["sftfast", "torch", "litdata", "mosaicml-streaming", "datasets", "transformers",
              "numpy", "pyarrow"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=300_000)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tools", nargs="+", default=MAIN + EXTRA, choices=MAIN + EXTRA)
    ap.add_argument("--max-batches", type=int, default=0, help="cap every run (0: full epoch)")
    ap.add_argument("--mask-batches", type=int, default=50,
                    help="cap for sftfast-padded-mask (0: full epoch)")
    ap.add_argument("--no-check", action="store_true", help="skip the same-data check")
    ap.add_argument("--data", type=Path, default=Path("/tmp/bench_loader-data"))
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)

    t = time.perf_counter()
    meta = prepare(args)
    print(f"data ready in {time.perf_counter() - t:.1f} s: {json.dumps(meta)}", file=sys.stderr)
    tmp = args.data / "run"
    tmp.mkdir(exist_ok=True)
    def log(s):
        print(f"[{time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True)


    checks: dict[str, dict] = {}
    if not args.no_check:
        for tool in [t for t in CHECKED if t in args.tools]:
            r = measure({"tool": tool, "data": str(args.data), "batch_size": args.batch_size,
                         "check": True, "max_batches": 0}, tmp)
            checks[tool] = r
            log(f"check {tool}: {json.dumps(r)[:3000]}")
    results: dict[str, list[dict]] = {}
    errors: dict[str, str] = {t: r["error"] for t, r in checks.items() if "error" in r}
    for rep in range(args.repeats):
        for tool in args.tools:
            if tool in errors:
                continue
            cap = args.max_batches
            if tool == "sftfast-padded-mask" and args.mask_batches:
                cap = min(cap, args.mask_batches) if cap else args.mask_batches
            r = measure({"tool": tool, "data": str(args.data), "batch_size": args.batch_size,
                         "check": False, "max_batches": cap}, tmp)
            log(f"run {rep} {tool}: {json.dumps(r)[:3000]}")
            if "error" in r:
                errors[tool] = r["error"]
                continue
            results.setdefault(tool, []).append(r)

    def med(tool, key):
        return statistics.median(r[key] for r in results[tool])

    def rate(tool, per):  # median over runs of real tokens / s
        return statistics.median(r["tokens"] / r[per] for r in results[tool])

    lines = [f"Command: `python3 {shlex.join(sys.argv)}`", "",
             (f"Data: {args.samples:,} samples, log-normal lengths (median {MEDIAN}, sigma "
              f"{SIGMA}, clipped to 1..{MAX_LEN}: {meta['length_stats']}; "
              f"{meta['input_tokens']:,} tokens), random ids, labels −100 on a 10-60% prompt "
              f"prefix; `write_shards(seq_len={args.seq_len}, overlong=\"truncate_right\")`: "
              f"{meta['rows']:,} packed rows, {meta['pieces']:,} samples, {meta['tokens']:,} "
              f"tokens ({meta['tokens_lost']:,} lost to truncating {meta['truncated']:,} "
              f"samples), efficiency {100 * meta['efficiency']:.3f}%, {meta['shards']} shards. "
              f"The same rows exported to each peer (on disk, MB: "
              + ", ".join(f"{k} {v:,.0f}" for k, v in meta["disk_mb"].items())
              + "; build s, not timed: "
              + ", ".join(f"{k} {v:.0f}" for k, v in meta["build_s"].items()) + ")."),
             "",
             (f"Batch: {args.batch_size} packed rows of {args.seq_len} (the samples of those "
              f"rows, for HF), flat padding-free layout, 0 workers, shuffle on, drop_last, one "
              f"epoch per run unless capped. Medians of {args.repeats} fresh-process runs, tools "
              f"interleaved; tok/s = real (non-padding) tokens / s of the iteration (setup "
              f"apart); CPU-s include all threads (and reaped worker processes). "
              f"{versions()}; {os.cpu_count()} cores (shared: load average at the end "
              f"{os.getloadavg()[0]:.2f})."), "",
             ("| loader | batches | real tokens | wall s | CPU-s | M tok/s (wall) | M tok/s per "
              "CPU-s | sftfast × (wall) | sftfast × (CPU) | target | first batch s | setup s |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = "sftfast" if "sftfast" in results else None
    for tool in args.tools:
        if tool not in results:
            continue
        rs = results[tool]
        rw, rc = rate(tool, "wall"), rate(tool, "cpu")
        xw = xc = target = ""
        if base and tool in TARGETS:
            xw_v, xc_v = rate(base, "wall") / rw, rate(base, "cpu") / rc
            xw, xc = f"**{xw_v:.2f}**", f"{xc_v:.2f}"
            target = f"≥ {TARGETS[tool]} ({'met' if xw_v >= TARGETS[tool] else 'NOT met'})"
        cap = " (capped)" if rs[0]["capped"] else ""
        lines.append(
            f"| {NAMES[tool]} | {rs[0]['batches']:,}{cap} | {rs[0]['tokens']:,} "
            f"| {med(tool, 'wall'):.2f} | {med(tool, 'cpu'):.2f} | **{rw / 1e6:.1f}** "
            f"| {rc / 1e6:.1f} | {xw} | {xc} | {target} | {med(tool, 'first_batch_s'):.3f} "
            f"| {med(tool, 'setup_wall'):.2f} |")
    lines.append("")
    if checks:
        want = meta["digest"]
        parts = []
        for tool, r in checks.items():
            if "error" in r:
                parts.append(f"{tool}: FAILED (see errors)")
            else:
                ok = r["digest"] == want and r["samples"] == meta["pieces"] \
                    and r["tokens"] == meta["tokens"]
                parts.append(f"{tool} {r['digest']} ({r['samples']:,} samples, "
                             f"{r['tokens']:,} tokens, {r['batches']:,} batches) "
                             f"{'= shards' if ok else '≠ SHARDS'}")
        lines.append(f"Same data (one epoch each, drop_last off, shuffle on; digest of the "
                     f"sorted per-sample (length, sum of ids, learned labels, their sum); shard "
                     f"files: {want}): " + "; ".join(parts) + ". Positions restart and first "
                     "labels are −100 in every batch of every checked tool.")
    for tool, err in errors.items():
        lines += ["", f"{tool} failed:", "```", err.strip()[-1500:], "```"]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# Loader (issue #6): `benches/bench_loader.py`\n\n" + text)


if __name__ == "__main__":
    main()
