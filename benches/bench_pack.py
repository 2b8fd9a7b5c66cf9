#!/usr/bin/env python3
"""Packing: sftfast.pack_lengths (global best-fit-decreasing) vs TRL `pack_dataset(strategy="bfd")`.

Same input: `--samples` lengths drawn once (numpy, seed 0) from a log-normal with median 350 and
sigma 1.0, clipped to 1..8192 (the distribution of `shared/NOTES.md`, "Packing and loading").
Same policy for samples longer than `seq_len`: TRL's `bfd` keeps each sample's first `seq_length`
tokens (`pc.list_slice(column, 0, seq_length)` in `trl.data_utils._pack_bfd`) and drops the rest,
so sftfast runs with `overlong="truncate_right"`; both therefore keep the same tokens, and the
efficiency (real tokens / (rows x seq_len)) differs only by the number of rows.

Each (tool, seq_len, repeat) runs in its own fresh subprocess. The input is built in that
subprocess before the timed region: for TRL an in-memory `datasets.Dataset` with one
`input_ids` column (list<int32>, as `datasets` stores tokenizer output), made zero-copy from one
`np.arange` of all tokens sliced by the offsets (`pa.ListArray.from_arrays`), so every token
value is unique and the output can be checked token by token; for sftfast a `pl.Series` of the
lengths. Timed: only the call, CPU-seconds from `time.process_time` (all threads) and wall from
`perf_counter`. Peak RSS is the process high-water mark over the call (reset with
`/proc/self/clear_refs` just before it); "extra" is that peak minus the RSS before the call.

What each side does in its timed region:
  TRL      `pack_dataset(ds, seq_length, strategy="bfd")`, its documented usage: `Dataset.map`
           with `batched=True` (default batch of 1,000 rows), BFD *per batch*, and the gather of
           the packed token lists into a new Arrow table (kept in memory, as the input is).
  sftfast  `pack_lengths(lengths, seq_len=..., overlong="truncate_right")`: the plan only
           (row, sample, start, len), over the whole lengths column; tokens are gathered later.
  sftfast-write
           plan + gather + write: `write_shards(df, out, seq_len=..., labels=None,
           overlong="truncate_right")` end to end, on a polars DataFrame with one `input_ids`
           List(UInt32) column (the same `np.arange` tokens, zero-copy through Arrow): the
           samples go to the writer's temporary token store, are packed (global BFD), gathered
           into rows and written as `.npy` shards with checksums and a manifest, each file
           fsync'ed, into a fresh folder under `--tmp` (local disk), removed after the run
           outside the timed region. It writes more than TRL's in-memory table: ids *and*
           labels (labels=None stores every token as learned), offsets, sample ids.

Checks (first repeat of each seq_len, outside the timed region): every sample of length > 0 is
in exactly one row, with exactly its first min(len, seq_len) tokens, no row is longer than
seq_len, and both tools keep the same number of tokens.

    python3 benches/bench_pack.py --repeats 3 --out benches/results/pack.md   # 1M samples
    python3 benches/bench_pack.py --samples 100000 --repeats 1                # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchutil import reset_peak_rss
from _benchutil import versions as _versions

TOOLS = ["trl", "sftfast", "sftfast-write"]
NAMES = {"trl": "TRL `bfd`", "sftfast": "sftfast `pack_lengths` (plan)",
         "sftfast-write": "sftfast `write_shards` (plan + gather + write)"}
SEQ_LENS = [2048, 4096, 8192]
MEDIAN, SIGMA, MAX_LEN = 350, 1.0, 8192


def make_lengths(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(MEDIAN), SIGMA, size=n), 1, MAX_LEN).astype(np.int64)


# ----------------------------------------------------------------------------- memory
def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    """Run fn(); its result, CPU-s, wall-s, peak RSS and extra RSS over the call."""
    import gc

    gc.collect()
    before = rss_mb()
    reset_ok = reset_peak_rss()
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    peak = peak_rss_mb()
    return out, {"cpu": cpu, "wall": wall, "rss_before_mb": before, "peak_rss_mb": peak,
                 "extra_rss_mb": peak - before if reset_ok else float("nan"),
                 "peak_reset": reset_ok}


# ----------------------------------------------------------------------------- workers
def run_trl(lengths, seq_len: int, verify: bool, batch_size: int | None) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import Dataset, disable_progress_bars
    from datasets.table import InMemoryTable
    from trl import pack_dataset

    disable_progress_bars()
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    assert offsets[-1] < 2**31, "token ids are int32 positions"
    tokens = pa.array(np.arange(offsets[-1], dtype=np.int32))
    col = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), tokens)
    ds = Dataset(InMemoryTable(pa.table({"input_ids": col})))
    del col, tokens
    map_kwargs = {"batch_size": batch_size} if batch_size else None
    packed, res = timed(lambda: pack_dataset(ds, seq_len, strategy="bfd", map_kwargs=map_kwargs))
    table = packed.data.table
    res["in_memory"] = not packed.cache_files
    row_len = pc.list_value_length(table["input_ids"])
    res["rows"] = len(table)
    res["tokens_packed"] = int(pc.sum(row_len).as_py())
    res["max_row_len"] = int(pc.max(row_len).as_py())
    res["max_per_row"] = int(pc.max(pc.list_value_length(table["seq_lengths"])).as_py())
    kept = np.minimum(lengths, seq_len)
    res["tokens_lost"] = int((lengths - kept).sum())
    res["truncated"] = int((lengths > seq_len).sum())
    if verify:
        # Token values are global positions: a piece is a run v0, v0+1, ... that must start at
        # its sample's offset and be exactly min(len, seq_len) long; each sample once.
        seen = np.zeros(len(lengths), dtype=np.int64)
        for batch in table.to_batches():
            vals = batch.column("input_ids").flatten().to_numpy()
            plen = batch.column("seq_lengths").flatten().to_numpy().astype(np.int64)
            if len(plen) == 0:
                continue
            pstart = np.zeros(len(plen), dtype=np.int64)
            np.cumsum(plen[:-1], out=pstart[1:])
            assert pstart[-1] + plen[-1] == len(vals)
            v0 = vals[pstart].astype(np.int64)
            sid = np.searchsorted(offsets, v0, side="right") - 1
            assert (offsets[sid] == v0).all(), "TRL: a piece does not start at a sample start"
            assert (plen == kept[sid]).all(), "TRL: a piece is not min(len, seq_len) long"
            run = np.arange(len(vals), dtype=np.int64) - np.repeat(pstart, plen)
            assert (vals == np.repeat(v0, plen) + run).all(), "TRL: tokens not contiguous"
            np.add.at(seen, sid, 1)
        assert (seen[lengths > 0] == 1).all() and (seen[lengths == 0] == 0).all(), \
            "TRL: a sample is missing or packed twice"
        assert res["tokens_packed"] == int(kept.sum())
        assert res["max_row_len"] <= seq_len
        res["verified"] = True
    return res


def run_sftfast(lengths, seq_len: int, verify: bool) -> dict:
    import numpy as np
    import polars as pl
    import sftfast

    s = pl.Series("len", lengths)
    plan, res = timed(lambda: sftfast.pack_lengths(s, seq_len=seq_len, overlong="truncate_right"))
    st = plan.stats
    res.update(rows=st.rows, tokens_packed=st.tokens_packed, tokens_lost=st.tokens_lost,
               truncated=st.truncated, dropped=st.dropped, efficiency_reported=st.efficiency)
    per_row = plan.pieces.group_by("row").agg(pl.len().alias("k"), pl.col("len").sum().alias("t"))
    res["max_per_row"] = int(per_row["k"].max())
    res["max_row_len"] = int(per_row["t"].max())
    if verify:
        p = plan.pieces
        kept = np.minimum(lengths, seq_len)
        sample = p["sample"].to_numpy().astype(np.int64)
        seen = np.bincount(sample, minlength=len(lengths))
        assert (seen[lengths > 0] == 1).all() and (seen[lengths == 0] == 0).all(), \
            "sftfast: a sample is missing or packed twice"
        assert (p["start"] == 0).all(), "sftfast: truncate_right piece not at the start"
        assert (p["len"].to_numpy() == kept[sample]).all(), "sftfast: piece length"
        assert per_row.height == st.rows and p["row"].max() == st.rows - 1
        assert res["max_row_len"] <= seq_len
        assert st.tokens_packed == int(kept.sum()) == int(p["len"].sum())
        assert st.tokens_lost == int((lengths - kept).sum())
        res["verified"] = True
    return res


def run_sftfast_write(lengths, seq_len: int, verify: bool, tmp: str) -> dict:
    import shutil

    import numpy as np
    import polars as pl
    import pyarrow as pa
    import sftfast

    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = pa.array(np.arange(offsets[-1], dtype=np.uint32))
    col = pa.LargeListArray.from_arrays(pa.array(offsets), tokens)
    df = pl.from_arrow(pa.table({"input_ids": col}), rechunk=False)
    del col, tokens
    assert df.schema["input_ids"] == pl.List(pl.UInt32)
    out = Path(tempfile.mkdtemp(prefix="bench_pack-shards-", dir=tmp))
    try:
        m, res = timed(lambda: sftfast.write_shards(
            df, out / "ds", seq_len=seq_len, labels=None, overlong="truncate_right"))
        pk = m.packing
        res.update(rows=m.rows, tokens_packed=m.tokens, tokens_lost=pk.tokens_lost,
                   truncated=pk.truncated, dropped=pk.dropped, efficiency_reported=pk.efficiency,
                   shards=len(m.shards),
                   bytes_written=sum(f["bytes"] for s in m.shards for f in s.files.values()))
        kept = np.minimum(lengths, seq_len)
        max_per_row = max_row_len = 0
        seen = np.zeros(len(lengths), dtype=np.int64)
        for sh in m.shards:
            d = out / "ds" / sh.name
            so = np.load(d / "sample_offsets.npy", mmap_mode="r").astype(np.int64)
            ro = np.load(d / "row_offsets.npy", mmap_mode="r").astype(np.int64)
            row_tok = so[ro[1:]] - so[ro[:-1]]
            max_row_len = max(max_row_len, int(row_tok.max()))
            max_per_row = max(max_per_row, int(np.diff(ro).max()))
            if verify:
                # Same check as TRL's: token values are global positions.
                vals = np.load(d / "input_ids.npy", mmap_mode="r").astype(np.int64)
                sid = np.load(d / "sample_ids.npy").astype(np.int64)
                plen, pstart = np.diff(so), so[:-1]
                v0 = vals[pstart]
                assert (offsets[sid] == v0).all(), "write_shards: piece not at a sample start"
                assert (plen == kept[sid]).all(), "write_shards: piece not min(len, seq_len)"
                run = np.arange(len(vals), dtype=np.int64) - np.repeat(pstart, plen)
                assert (vals == np.repeat(v0, plen) + run).all(), "write_shards: not contiguous"
                lab = np.load(d / "labels.npy", mmap_mode="r")
                assert (lab.astype(np.int64) == vals).all(), "labels=None: labels != input_ids"
                np.add.at(seen, sid, 1)
        res.update(max_per_row=max_per_row, max_row_len=max_row_len)
        if verify:
            assert (seen[lengths > 0] == 1).all() and (seen[lengths == 0] == 0).all(), \
                "write_shards: a sample is missing or packed twice"
            assert m.tokens == int(kept.sum()) and max_row_len <= seq_len
            res["verified"] = True
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return res


def worker(spec_file: str) -> None:
    import numpy as np

    spec = json.loads(Path(spec_file).read_text())
    lengths = np.load(spec["lengths"])
    if spec["tool"] == "trl":
        res = run_trl(lengths, spec["seq_len"], spec["verify"], spec["trl_batch_size"])
    elif spec["tool"] == "sftfast-write":
        res = run_sftfast_write(lengths, spec["seq_len"], spec["verify"], spec["tmp"])
    else:
        res = run_sftfast(lengths, spec["seq_len"], spec["verify"])
    res["efficiency"] = res["tokens_packed"] / (res["rows"] * spec["seq_len"])
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
        sys.exit(f"worker failed: {shlex.join(cmd)}\n{err_path.read_text()[-3000:]}")
    res = json.loads(out_path.read_text().strip().splitlines()[-1])
    res.update(process_cpu=ru.ru_utime + ru.ru_stime, process_peak_rss_mb=ru.ru_maxrss / 1024)
    return res


def versions() -> str:
    return _versions(["sftfast", "trl", "datasets", "pyarrow", "polars", "numpy"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=SEQ_LENS)
    ap.add_argument("--tools", nargs="+", default=TOOLS, choices=TOOLS)
    ap.add_argument("--trl-batch-size", type=int, default=None,
                    help="map_kwargs batch_size for TRL (default: TRL's/datasets' 1,000)")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()),
                    help="local-disk folder for write_shards' output (removed after each run)")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    import numpy as np

    lengths = make_lengths(args.samples)
    dist = (f"{args.samples:,} samples, log-normal (median {MEDIAN}, sigma {SIGMA}) clipped to "
            f"1..{MAX_LEN}: median {np.median(lengths):.0f}, mean {lengths.mean():.0f}, "
            f"p99 {np.percentile(lengths, 99):.0f}, max {lengths.max()}, "
            f"{lengths.sum():,} tokens")
    print(dist, file=sys.stderr)
    results: dict[tuple[int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_pack-") as d:
        tmp = Path(d)
        np.save(tmp / "lengths.npy", lengths)
        for rep in range(args.repeats):
            for seq_len in args.seq_lens:
                for tool in args.tools:
                    spec = {"tool": tool, "seq_len": seq_len, "lengths": str(tmp / "lengths.npy"),
                            "verify": rep == 0, "trl_batch_size": args.trl_batch_size,
                            "tmp": str(args.tmp)}
                    r = measure(spec, tmp)
                    results.setdefault((seq_len, tool), []).append(r)
                    print(f"[{time.strftime('%H:%M:%S')}] run {rep} {tool} @{seq_len}: "
                          f"{json.dumps(r)}", file=sys.stderr, flush=True)
    # Both tools keep the same tokens under the same policy.
    for seq_len in args.seq_lens:
        kept = {t: results[(seq_len, t)][0]["tokens_packed"] for t in args.tools
                if (seq_len, t) in results}
        assert len(set(kept.values())) <= 1, f"tokens kept differ at {seq_len}: {kept}"

    lines = [f"Command: `python3 {shlex.join(sys.argv)}`", "",
             (f"{dist}. Overlong samples: TRL `bfd` truncates (keeps the first seq_len tokens); "
              f"sftfast `overlong=\"truncate_right\"`, the same. Medians of {args.repeats} "
              f"fresh-process run(s) per cell; CPU-s and wall s are the call only; peak RSS is "
              f"the process high-water mark over the call, extra = peak − RSS before the call "
              f"(TRL's process holds its {lengths.sum() * 4 / 2**20:,.0f} MB int32 input "
              f"table). {versions()}; {os.cpu_count()} cores; load average at the end "
              f"{os.getloadavg()[0]:.2f}."), "",
             ("| seq_len | tool | rows | efficiency | tokens packed | tokens lost (samples "
              "truncated) | max samples/row | CPU-s | wall s | peak RSS MB | extra RSS MB "
              "| × TRL per CPU-s |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for seq_len in args.seq_lens:
        for tool in args.tools:
            rs = results.get((seq_len, tool))
            if not rs:
                continue
            cpu = statistics.median(r["cpu"] for r in rs)
            wall = statistics.median(r["wall"] for r in rs)
            peak = statistics.median(r["peak_rss_mb"] for r in rs)
            extra = statistics.median(r["extra_rss_mb"] for r in rs)
            r0 = rs[0]
            ratio = ""
            if tool != "trl" and (seq_len, "trl") in results:
                trl_cpu = statistics.median(r["cpu"] for r in results[(seq_len, "trl")])
                x = trl_cpu / cpu
                ratio = f"**{x:,.0f}**" if x >= 10 else f"**{x:.2f}**"
            name = NAMES[tool]
            eff = f"{100 * r0['efficiency']:.3f}%"
            eff = f"**{eff}**" if tool != "trl" else eff
            lines.append(
                f"| {seq_len} | {name} | {r0['rows']:,} | {eff} "
                f"| {r0['tokens_packed']:,} | {r0['tokens_lost']:,} ({r0['truncated']:,}) "
                f"| {r0['max_per_row']} | {cpu:.3f} | {wall:.3f} | {peak:,.0f} | {extra:,.0f} "
                f"| {ratio} |")
    verified = all(rs[0].get("verified") for rs in results.values())
    in_memory = all(r.get("in_memory", True) for rs in results.values() for r in rs)
    lines += ["", ("Checked on the first repeat of each cell: every sample in exactly one row "
                   "with exactly its first min(len, seq_len) tokens (TRL and `write_shards`: "
                   "token by token, from the output table / the `.npy` files), no row over "
                   "seq_len, same tokens kept by every tool: "
                   f"{'passed' if verified else 'NOT RUN'}. TRL output kept in memory (no cache "
                   f"file): {in_memory}.")]
    writes = [(s, results[(s, "sftfast-write")]) for s in args.seq_lens
              if (s, "sftfast-write") in results]
    if writes:
        lines += ["", "`write_shards` output per run (fsync'ed to local disk under "
                  f"`{args.tmp}`, plus its temporary token store of 8 bytes per input token): "
                  + "; ".join(f"@{s}: {rs[0]['shards']} shards, "
                              f"{rs[0]['bytes_written'] / 2**30:.2f} GiB, median "
                              f"{rs[0]['bytes_written'] / 2**20 / statistics.median(r['wall'] for r in rs):,.0f}"
                              " MiB/s of wall"
                              for s, rs in writes) + "."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# Packing (issue #6): `benches/bench_pack.py`\n\n" + text)


if __name__ == "__main__":
    main()
